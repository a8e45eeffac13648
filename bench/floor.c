/* bench/floor.c: the least a proxy between pgbench and PostgreSQL can spend per transaction.
 *
 * One thread, one epoll set, a PostgreSQL connection per client made at its login, and then
 * nothing but read() from one side and write() of the same bytes to the other: no pooling,
 * no parsing, no authentication, no bookkeeping. What it costs per pgbench -S transaction
 * (bench/floor.sh reads its CPU time beside PgBouncer's and tusk's) is the kernel's price
 * of one epoll wake-up share and two reads and two writes over loopback: the floor under
 * any pooler that moves bytes through sockets. Not a pooler; never run it for anything else.
 *
 * Usage: floor LISTEN_PORT PG_PORT DBNAME   (the startup packet's database becomes DBNAME;
 * an SSLRequest or GSSENCRequest is answered 'N'). Build: cc -O2 -o floor bench/floor.c */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF 65536
#define STARTUP_MAX 10000

struct end {
	int fd;
	struct end *peer;
	size_t pending, off; /* bytes of buf not yet written to peer */
	char buf[BUF];
};

static int epfd;

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static int read_full(int fd, void *p, size_t n)
{
	for (size_t got = 0; got < n;) {
		ssize_t r = read(fd, (char *)p + got, n - got);
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

static int write_full(int fd, const void *p, size_t n)
{
	for (size_t done = 0; done < n;) {
		ssize_t r = write(fd, (const char *)p + done, n - done);
		if (r <= 0)
			return -1;
		done += (size_t)r;
	}
	return 0;
}

/* The client's startup packet with its database replaced, written to a new PostgreSQL
 * connection; that connection's descriptor, or -1. Blocking: a bench's logins only. */
static int login(int cfd, int pg_port, const char *db)
{
	unsigned char hdr[8], body[STARTUP_MAX], out[STARTUP_MAX + 64];
	uint32_t len, code;
	for (;;) {
		if (read_full(cfd, hdr, 8) < 0)
			return -1;
		len = ntohl(*(uint32_t *)hdr);
		code = ntohl(*(uint32_t *)(hdr + 4));
		if (len == 8 && (code == 80877103 || code == 80877104)) {
			if (write_full(cfd, "N", 1) < 0)
				return -1;
			continue;
		}
		break;
	}
	if (len < 8 || len - 8 > STARTUP_MAX || read_full(cfd, body, len - 8) < 0)
		return -1;
	size_t n = 8, i = 0, blen = len - 8;
	while (i < blen && body[i]) {
		const char *k = (const char *)body + i, *v = k + strlen(k) + 1;
		if ((size_t)(v - (const char *)body) >= blen)
			return -1;
		if (!strcmp(k, "database"))
			v = db;
		size_t kl = strlen(k) + 1, vl = strlen(v) + 1;
		if (n + kl + vl + 1 > sizeof out)
			return -1;
		memcpy(out + n, k, kl);
		memcpy(out + n + kl, v, vl);
		n += kl + vl;
		i += kl + strlen((const char *)body + i + kl) + 1;
	}
	out[n++] = 0;
	*(uint32_t *)out = htonl((uint32_t)n);
	*(uint32_t *)(out + 4) = htonl(code);
	int sfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)pg_port) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (sfd < 0 || connect(sfd, (struct sockaddr *)&a, sizeof a) < 0 || write_full(sfd, out, n) < 0) {
		if (sfd >= 0)
			close(sfd);
		return -1;
	}
	return sfd;
}

static void watch(struct end *e, uint32_t events, int op)
{
	struct epoll_event ev = { .events = events, .data.ptr = e };
	if (epoll_ctl(epfd, op, e->fd, &ev) < 0)
		die("epoll_ctl");
}

/* Closed pairs are freed after the batch of events: a later event of the batch may be
 * the peer's. */
static struct end *dead[512];
static int ndead;

static void close_pair(struct end *e)
{
	if (e->fd < 0)
		return;
	close(e->fd);
	close(e->peer->fd);
	e->fd = e->peer->fd = -1;
	if (ndead < 512) {
		dead[ndead++] = e;
	} /* else leaked: a bench's end only */
}

/* e's bytes go to its peer; a write the peer's socket cannot take whole waits for EPOLLOUT
 * while e stops reading (never more than one buffer in flight per direction). */
static int flush(struct end *e)
{
	while (e->pending) {
		ssize_t w = write(e->peer->fd, e->buf + e->off, e->pending);
		if (w < 0 && errno == EAGAIN) {
			watch(e, 0, EPOLL_CTL_MOD);
			watch(e->peer, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
			return 0;
		}
		if (w <= 0)
			return -1;
		e->off += (size_t)w;
		e->pending -= (size_t)w;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: floor LISTEN_PORT PG_PORT DBNAME\n");
		return 2;
	}
	int pg_port = atoi(argv[2]), one = 1;
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1])) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 1024) < 0)
		die("listen");
	if ((epfd = epoll_create1(0)) < 0)
		die("epoll_create1");
	struct epoll_event lev = { .events = EPOLLIN, .data.ptr = NULL };
	epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev);
	struct epoll_event evs[256];
	for (;;) {
		int n = epoll_wait(epfd, evs, 256, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("epoll_wait");
		for (int i = 0; i < n; i++) {
			struct end *e = evs[i].data.ptr;
			if (e && e->fd < 0)
				continue;
			if (!e) {
				int cfd = accept(lfd, NULL, NULL);
				if (cfd < 0)
					continue;
				int sfd = login(cfd, pg_port, argv[3]);
				if (sfd < 0) {
					close(cfd);
					continue;
				}
				struct end *c = calloc(1, sizeof *c), *s = calloc(1, sizeof *s);
				if (!c || !s)
					die("calloc");
				c->fd = cfd;
				s->fd = sfd;
				c->peer = s;
				s->peer = c;
				fcntl(cfd, F_SETFL, O_NONBLOCK);
				fcntl(sfd, F_SETFL, O_NONBLOCK);
				setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
				setsockopt(sfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
				watch(c, EPOLLIN, EPOLL_CTL_ADD);
				watch(s, EPOLLIN, EPOLL_CTL_ADD);
				continue;
			}
			if (evs[i].events & EPOLLOUT) {
				/* e's peer blocked on writing into e: finish that, then both read again */
				struct end *from = e->peer;
				if (flush(from) < 0) {
					close_pair(e);
					continue;
				}
				if (!from->pending) {
					watch(e, EPOLLIN, EPOLL_CTL_MOD);
					watch(from, EPOLLIN, EPOLL_CTL_MOD);
				}
				continue;
			}
			ssize_t r = read(e->fd, e->buf, BUF);
			if (r < 0 && errno == EAGAIN)
				continue;
			if (r <= 0) {
				close_pair(e);
				continue;
			}
			e->off = 0;
			e->pending = (size_t)r;
			if (flush(e) < 0)
				close_pair(e);
		}
		for (; ndead > 0; ndead--) {
			free(dead[ndead - 1]->peer);
			free(dead[ndead - 1]);
		}
	}
}
