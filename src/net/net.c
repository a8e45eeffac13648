/* Socket plumbing (see net.h). */
#include "net/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pwd.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"

int net_resolve(const char *host, int port, bool passive, struct net_addr *out)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC };
	struct addrinfo *res = NULL;
	char portstr[16];

	if (port <= 0 || port > 65535)
		return -EINVAL;
	snprintf(portstr, sizeof portstr, "%d", port);
	if (passive)
		hints.ai_flags |= AI_PASSIVE;
	const char *node = (host && strcmp(host, "*") != 0 && host[0]) ? host : NULL;
	int rc = getaddrinfo(node, portstr, &hints, &res);
	if (rc != 0 || !res)
		return -EINVAL;
	memcpy(&out->sa, res->ai_addr, res->ai_addrlen);
	out->len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

int net_addr_numeric(const char *host, int port, struct net_addr *out)
{
	if (port <= 0 || port > 65535)
		return -EINVAL;
	memset(out, 0, sizeof *out);
	struct sockaddr_in *v4 = (struct sockaddr_in *)&out->sa;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&out->sa;
	if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		v4->sin_port = htons((uint16_t)port);
		out->len = sizeof *v4;
		return 0;
	}
	if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons((uint16_t)port);
		out->len = sizeof *v6;
		return 0;
	}
	return -EINVAL;
}

int net_listen(const struct net_addr *addr, int backlog)
{
	int one = 1;
	int fd = socket(addr->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
		goto err_close_fd;
	if (addr->sa.ss_family == AF_INET6)
		(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
	if (bind(fd, (const struct sockaddr *)&addr->sa, addr->len) < 0)
		goto err_close_fd;
	if (listen(fd, backlog) < 0)
		goto err_close_fd;
	return fd;

err_close_fd : {
	int e = errno;
	close(fd);
	return -e;
}
}

int net_set_backlog(int fd, int backlog)
{
	return listen(fd, backlog) < 0 ? -errno : 0;
}

int net_defer_accept(int fd, int seconds)
{
	return setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &seconds, sizeof seconds) < 0 ? -errno : 0;
}

int net_unix_addr(const char *path, struct sockaddr_un *sun)
{
	*sun = (struct sockaddr_un){ .sun_family = AF_UNIX };
	size_t n = strlen(path);
	if (n >= sizeof sun->sun_path)
		return -ENAMETOOLONG;
	memcpy(sun->sun_path, path, n + 1);
	return 0;
}

int net_unix_own(const char *path, unsigned mode, unsigned gid)
{
	if (gid != (unsigned)-1 && chown(path, (uid_t)-1, (gid_t)gid) < 0)
		return -errno;
	return chmod(path, (mode_t)mode) < 0 ? -errno : 0;
}

int net_listen_unix(const char *path, int backlog, unsigned mode, unsigned gid)
{
	struct sockaddr_un sun;
	if (net_unix_addr(path, &sun) < 0)
		return -ENAMETOOLONG;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	(void)unlink(path);
	/* Mode and group before listen: no client connects through the umask's mode. */
	int rc = bind(fd, (const struct sockaddr *)&sun, sizeof sun) < 0 ? -errno : net_unix_own(path, mode, gid);
	if (rc == 0 && listen(fd, backlog) < 0)
		rc = -errno;
	if (rc < 0) {
		close(fd);
		return rc;
	}
	return fd;
}

int net_listen_probe(const struct net_addr *addr)
{
	int one = 1, rc = 0;
	int fd = socket(addr->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
		rc = -errno;
	if (rc == 0 && addr->sa.ss_family == AF_INET6)
		(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
	if (rc == 0 && bind(fd, (const struct sockaddr *)&addr->sa, addr->len) < 0)
		rc = -errno;
	close(fd);
	return rc;
}

int net_unix_probe(const char *path)
{
	struct sockaddr_un sun;
	if (net_unix_addr(path, &sun) < 0)
		return -ENAMETOOLONG;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* Blocking: a listener answers a Unix connect at once (or refuses when its queue is
	 * full: EAGAIN, which means someone listens too). */
	int rc = connect(fd, (const struct sockaddr *)&sun, sizeof sun) == 0 || errno == EAGAIN ? -EADDRINUSE : 0;
	close(fd);
	return rc;
}

static void set_buffers(int fd, int buffer)
{
	if (buffer > 0) {
		(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer, sizeof buffer);
		(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
	}
}

int net_connect(const struct net_addr *addr)
{
	return net_connect_buffered(addr, 0);
}

int net_connect_buffered(const struct net_addr *addr, int buffer)
{
	int fd = socket(addr->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	set_buffers(fd, buffer);
	if (connect(fd, (const struct sockaddr *)&addr->sa, addr->len) < 0 && errno != EINPROGRESS) {
		int e = errno;
		close(fd);
		return -e;
	}
	net_tune(fd);
	net_tune_outgoing(fd);
	return fd;
}

int net_connect_result(int fd)
{
	int err = 0;
	socklen_t len = sizeof err;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		return -errno;
	return -err;
}

int net_accept(int lfd, struct net_addr *peer)
{
	peer->len = sizeof peer->sa;
	int fd = accept4(lfd, (struct sockaddr *)&peer->sa, &peer->len, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (peer->sa.ss_family != AF_UNIX)
		net_tune(fd);
	return fd;
}

void net_tune(int fd)
{
	int one = 1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	(void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
}

static int whole_seconds(uint64_t ms)
{
	return ms ? (int)((ms + 999) / 1000) : 0;
}

void net_tcp_opts_of(const struct tusk_config *cfg, bool outgoing, struct net_tcp_opts *k)
{
	k->on = cfg->tcp_keepalive != 0;
	k->idle_s = whole_seconds(cfg->tcp_keepidle_ms);
	k->intvl_s = whole_seconds(cfg->tcp_keepintvl_ms);
	k->cnt = cfg->tcp_keepcnt;
	k->user_timeout_ms = (unsigned)cfg->tcp_user_timeout_ms;
	k->buffer = (int)cfg->tcp_socket_buffer; /* at most 1GB (config.c) */
	if (outgoing) { /* tusk's own defaults (net_tune_outgoing) where the file says nothing */
		k->idle_s = k->idle_s ? k->idle_s : NET_KEEPIDLE_S;
		k->intvl_s = k->intvl_s ? k->intvl_s : NET_KEEPINTVL_S;
		k->cnt = k->cnt ? k->cnt : NET_KEEPCNT;
		k->user_timeout_ms = k->user_timeout_ms ? k->user_timeout_ms : NET_USER_TIMEOUT_MS;
	}
}

void net_tcp_opts_apply(int fd, const struct net_tcp_opts *k)
{
	int on = k->on ? 1 : 0;
	(void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
	if (k->on && k->idle_s > 0)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &k->idle_s, sizeof k->idle_s);
	if (k->on && k->intvl_s > 0)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &k->intvl_s, sizeof k->intvl_s);
	if (k->on && k->cnt > 0)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &k->cnt, sizeof k->cnt);
	if (k->user_timeout_ms > 0)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &k->user_timeout_ms, sizeof k->user_timeout_ms);
	set_buffers(fd, k->buffer);
}

void net_tune_outgoing(int fd)
{
	/* The kernel's keepalive default waits two hours before the first probe: an idle server
	 * whose host vanished would look alive all that time. Probes after 30 s idle, three
	 * unanswered 10 s apart: dead within about a minute. */
	int idle = NET_KEEPIDLE_S, intvl = NET_KEEPINTVL_S, cnt = NET_KEEPCNT;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
	/* Bytes sent and not acknowledged for 30 s (a black-holed host in mid-query) fail the
	 * connection instead of the default of about 15 minutes of retransmissions. A slow
	 * server still acknowledges what it was sent, so a long query is not cut. */
	unsigned int user_timeout_ms = NET_USER_TIMEOUT_MS;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms);
}

int net_addr_host_port(const struct net_addr *addr, char *host, size_t cap)
{
	if (addr->sa.ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)&addr->sa;
		inet_ntop(AF_INET, &in->sin_addr, host, (socklen_t)cap);
		return ntohs(in->sin_port);
	}
	if (addr->sa.ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&addr->sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, (socklen_t)cap);
		return ntohs(in6->sin6_port);
	}
	return -1;
}

void net_addr_str(const struct net_addr *addr, char *out, size_t cap)
{
	char host[INET6_ADDRSTRLEN] = "?";
	int port = net_addr_host_port(addr, host, sizeof host);

	if (port < 0)
		snprintf(out, cap, "unix");
	else
		snprintf(out, cap, addr->sa.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", host, port);
}

bool net_idle_alive(int fd)
{
	char c;
	ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

int net_peer_user(int fd, char *out, size_t cap)
{
	struct ucred cred;
	socklen_t len = sizeof cred;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return -errno;
	if (len != sizeof cred)
		return -EINVAL;
	struct passwd pw, *found = NULL;
	char buf[4096];
	int rc = getpwuid_r(cred.uid, &pw, buf, sizeof buf, &found);
	if (rc != 0)
		return -rc;
	if (!found)
		return -ENOENT;
	if (strlen(pw.pw_name) >= cap)
		return -ENAMETOOLONG;
	memcpy(out, pw.pw_name, strlen(pw.pw_name) + 1);
	return 0;
}

int net_send_fd(int conn, const void *buf, size_t len, int fd, int flags)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (fd >= 0) {
		memset(&u, 0, sizeof u);
		mh.msg_control = u.buf;
		mh.msg_controllen = sizeof u.buf;
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof fd);
	}
	return sendmsg(conn, &mh, flags | MSG_NOSIGNAL) < 0 ? -errno : 0;
}

int net_recv_fd(int conn, char *buf, size_t cap, int *fd)
{
	struct iovec iov = { .iov_base = buf, .iov_len = cap - 1 };
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf };
	ssize_t n;

	*fd = -1;
	do
		n = recvmsg(conn, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len == CMSG_LEN(sizeof(int)))
			memcpy(fd, CMSG_DATA(c), sizeof *fd);
	if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
		if (*fd >= 0)
			close(*fd);
		*fd = -1;
		return -EMSGSIZE;
	}
	return (int)n;
}
