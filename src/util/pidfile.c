/* The pid file: see pidfile.h. */
#include "util/pidfile.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The pid in path, or 0 when there is none readable. */
static int read_pid(const char *path)
{
	char text[32];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;
	long v;
	char *end;

	if (fd < 0)
		return 0;
	n = read(fd, text, sizeof text - 1);
	close(fd);
	if (n <= 0)
		return 0;
	text[n] = '\0';
	v = strtol(text, &end, 10);
	if (end == text || v <= 0 || v > INT_MAX)
		return 0;
	return (int)v;
}

int pidfile_write(const char *path, bool replace, int *other)
{
	char tmp[4200], text[32];
	int pid = read_pid(path), fd, len;

	*other = 0;
	if (!replace && pid > 0 && pid != (int)getpid() && (kill(pid, 0) == 0 || errno == EPERM)) {
		*other = pid;
		return -EEXIST;
	}
	if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	len = snprintf(text, sizeof text, "%d\n", (int)getpid());
	if (write(fd, text, (size_t)len) != len || fsync(fd) < 0) {
		int e = errno ? errno : EIO;
		close(fd);
		(void)unlink(tmp);
		return -e;
	}
	close(fd);
	if (rename(tmp, path) < 0) {
		int e = errno;
		(void)unlink(tmp);
		return -e;
	}
	return 0;
}

void pidfile_remove(const char *path)
{
	if (read_pid(path) == (int)getpid())
		(void)unlink(path);
}
