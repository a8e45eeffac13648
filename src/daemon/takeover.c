/* Online restart (see takeover.h): passing listening sockets with SCM_RIGHTS, as HAProxy,
 * nginx and Envoy do. Plain SO_REUSEPORT would not do: connections queued in the old
 * process's accept backlog are reset when it closes its listeners. */
#include "daemon/takeover.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon/daemon.h"
#include "net/net.h"
#include "util/log.h"

#define TAKEOVER_TIMEOUT_MS 10000 /* a peer that stalls this long is given up on */
#define TAKEOVER_MAX 4096         /* listeners received at most */

static int wait_fd(int fd, short events)
{
	struct pollfd p = { .fd = fd, .events = events };
	int n;
	do
		n = poll(&p, 1, TAKEOVER_TIMEOUT_MS);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n == 0 ? -ETIMEDOUT : 0;
}

/* One message, with fd attached when fd >= 0. */
static int send_msg(int conn, const char *text, int fd)
{
	int rc = wait_fd(conn, POLLOUT);
	return rc < 0 ? rc : net_send_fd(conn, text, strlen(text), fd, 0);
}

/* One message into text (NUL-terminated); *fd gets an attached descriptor or -1. Returns
 * the length, 0 at end of stream, or a negative errno. */
static int recv_msg(int conn, char *text, size_t cap, int *fd)
{
	*fd = -1;
	int rc = wait_fd(conn, POLLIN);
	return rc < 0 ? rc : net_recv_fd(conn, text, cap, fd);
}

int takeover_listen(const char *path)
{
	struct sockaddr_un sun;
	int rc = net_unix_addr(path, &sun);
	if (rc < 0)
		return rc;
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* Someone answering there is a running tusk: never steal its socket file. Non-blocking:
	 * a listener whose backlog is full (EAGAIN) is one answering there too, and must not
	 * hold this thread. */
	if (connect(fd, (const struct sockaddr *)&sun, sizeof sun) == 0 || errno == EAGAIN) {
		close(fd);
		return -EADDRINUSE;
	}
	close(fd);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	(void)unlink(path);
	if (bind(fd, (const struct sockaddr *)&sun, sizeof sun) < 0 || chmod(path, 0600) < 0 || listen(fd, 4) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	return fd;
}

int takeover_serve(struct runtime *rt, int *listen_fd, int *successor)
{
	char msg[512];
	int fd, rc;
	/* Non-blocking (every exchange here polls first): after the hand-over the main thread
	 * reads the cancels on it and the workers answer on it, none of which may block. */
	int conn = accept4(*listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (conn < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED ? 0 : -errno;

	rc = recv_msg(conn, msg, sizeof msg, &fd);
	if (fd >= 0)
		close(fd);
	if (rc <= 0 || strcmp(msg, "TAKEOVER") != 0 || rt->draining) {
		log_warn(NULL, NULL, "takeover: unexpected request%s; ignored", rt->draining ? " while draining" : "");
		rc = rc < 0 ? rc : 0;
		goto out;
	}
	log_info(NULL, NULL, "takeover: a new process asks for the listeners; sending %d", rt->nlisteners);
	/* Stop accepting now: from here connections wait in the shared backlogs for the new
	 * process, instead of landing here and being drained a moment later. */
	daemon_pause_accepting(rt, true);
	for (int i = 0; i < rt->nlisteners; i++) {
		snprintf(msg, sizeof msg, "L %s", rt->listeners[i].key);
		rc = send_msg(conn, msg, rt->listeners[i].fd);
		if (rc < 0)
			goto out;
	}
	snprintf(msg, sizeof msg, "END %d", (int)getpid());
	rc = send_msg(conn, msg, -1);
	if (rc < 0)
		goto out;
	/* The new process starts its workers now; it may take a while (and may fail). */
	for (;;) {
		struct pollfd p = { .fd = conn, .events = POLLIN };
		if (poll(&p, 1, 60000) == 0) {
			rc = -ETIMEDOUT;
			goto out;
		}
		rc = recv_msg(conn, msg, sizeof msg, &fd);
		if (fd >= 0)
			close(fd);
		if (rc != -ETIMEDOUT)
			break;
	}
	if (rc <= 0 || strcmp(msg, "DRAIN") != 0) {
		log_warn(NULL, NULL, "takeover: the new process went away before taking over; accepting again");
		rc = rc < 0 ? rc : 0;
		goto out;
	}
	rt->handed_over = true;
	daemon_drain(rt);
	/* Closed before the OK: the new process binds its own takeover socket on the same
	 * path as soon as it reads the OK, and finds nobody answering there. */
	close(*listen_fd);
	*listen_fd = -1;
	rc = send_msg(conn, "OK", -1);
	log_info(NULL, NULL, "takeover: listeners handed over; draining");
	*successor = conn; /* for the cancels of our clients that reach the new process */
	return 1;
out:
	daemon_pause_accepting(rt, false);
	close(conn);
	return rc;
}

int takeover_fetch(const char *path, int *conn, struct runtime_inherited **out, int *n, int *old_pid)
{
	struct sockaddr_un sun;
	struct runtime_inherited *inh = NULL;
	char msg[512];
	int count = 0, fd, rc;

	*out = NULL;
	*n = 0;
	rc = net_unix_addr(path, &sun);
	if (rc < 0)
		return rc;
	*conn = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (*conn < 0)
		return -errno;
	if (connect(*conn, (const struct sockaddr *)&sun, sizeof sun) < 0) {
		rc = -errno;
		log_error(NULL, NULL, "takeover: cannot connect to %s: %s", path, strerror(-rc));
		goto err;
	}
	rc = send_msg(*conn, "TAKEOVER", -1);
	if (rc < 0)
		goto err_io;
	for (;;) {
		rc = recv_msg(*conn, msg, sizeof msg, &fd);
		if (rc <= 0) {
			rc = rc ? rc : -ECONNRESET;
			goto err_io;
		}
		if (strncmp(msg, "END ", 4) == 0 && fd < 0) {
			*old_pid = atoi(msg + 4);
			break;
		}
		if (strncmp(msg, "L ", 2) != 0 || fd < 0 || count == TAKEOVER_MAX) {
			if (fd >= 0)
				close(fd);
			rc = -EPROTO;
			goto err_io;
		}
		if (count % 16 == 0) {
			struct runtime_inherited *more = realloc(inh, (size_t)(count + 16) * sizeof *inh);
			if (!more) {
				close(fd);
				rc = -ENOMEM;
				goto err_io;
			}
			inh = more;
		}
		snprintf(inh[count].key, sizeof inh[count].key, "%.*s", (int)sizeof inh[count].key - 1, msg + 2);
		inh[count++].fd = fd;
	}
	log_info(NULL, NULL, "takeover: received %d listener%s from pid %d", count, count == 1 ? "" : "s", *old_pid);
	*out = inh;
	*n = count;
	return 0;

err_io:
	log_error(NULL, NULL, "takeover: exchange with %s failed: %s", path, strerror(-rc));
	for (int i = 0; i < count; i++)
		close(inh[i].fd);
	free(inh);
err:
	close(*conn);
	*conn = -1;
	return rc;
}

int takeover_finish(int conn)
{
	char msg[64];
	int fd;
	int rc = send_msg(conn, "DRAIN", -1);
	if (rc == 0) {
		rc = recv_msg(conn, msg, sizeof msg, &fd);
		if (fd >= 0)
			close(fd);
		rc = rc > 0 && strcmp(msg, "OK") == 0 ? 0 : rc < 0 ? rc : -EPROTO;
	}
	if (rc == 0 && fcntl(conn, F_SETFL, fcntl(conn, F_GETFL) | O_NONBLOCK) < 0) /* see takeover_serve */
		rc = -errno;
	if (rc < 0) {
		log_error(NULL, NULL, "takeover: the old process did not confirm draining: %s", strerror(-rc));
		close(conn);
	}
	return rc;
}
