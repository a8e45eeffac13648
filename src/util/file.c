/* Whole-file reads (see file.h). */
#include "util/file.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int util_read_file(const char *path, size_t max, bool wipe, char **data, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t n = 0, cap = 0;
	int rc = 0;

	*data = NULL;
	*len = 0;
	if (!f)
		return -errno;
	for (;;) {
		if (n == cap) {
			if (cap >= max) {
				rc = -EFBIG;
				break;
			}
			size_t ncap = cap ? cap * 2 : 4096;
			char *nb = malloc(ncap);
			if (!nb) {
				rc = -ENOMEM;
				break;
			}
			if (buf) {
				memcpy(nb, buf, n);
				if (wipe)
					explicit_bzero(buf, cap);
				free(buf);
			}
			buf = nb;
			cap = ncap;
		}
		size_t got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (got == 0)
			break;
	}
	if (rc == 0 && ferror(f))
		rc = -(errno ? errno : EIO);
	fclose(f);
	if (rc < 0) {
		if (buf && wipe)
			explicit_bzero(buf, cap);
		free(buf);
		return rc;
	}
	*data = buf;
	*len = n;
	return 0;
}

void util_file_report(struct util_file_report *r, const char *fmt, ...)
{
	va_list ap;

	r->nerr++;
	if (!r->errout)
		return;
	if (r->line > 0)
		fprintf(r->errout, "%s:%d: %s: ", r->name, r->line, r->what);
	else
		fprintf(r->errout, "%s: %s: ", r->name, r->what);
	va_start(ap, fmt);
	vfprintf(r->errout, fmt, ap);
	va_end(ap);
	fputc('\n', r->errout);
}

int util_load_file(const char *path, size_t max, bool wipe, struct util_file_report *r, char **data, size_t *len)
{
	int rc = util_read_file(path, max, wipe, data, len);

	if (rc == -EFBIG)
		util_file_report(r, "file larger than %zu bytes", max);
	else if (rc < 0)
		util_file_report(r, "cannot open: %s", strerror(-rc));
	return rc < 0 ? r->nerr : 0;
}

bool util_next_line(const char *data, size_t len, size_t *pos, struct util_file_report *r, const char **line,
		    size_t *n)
{
	if (*pos >= len)
		return false;
	const char *s = data + *pos;
	const char *nl = memchr(s, '\n', len - *pos);
	*line = s;
	*n = nl ? (size_t)(nl - s) : len - *pos;
	*pos += *n + (nl ? 1 : 0);
	r->line++;
	return true;
}

bool util_is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}
