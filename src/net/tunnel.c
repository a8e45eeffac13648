/* The TLS tunnel (tunnel.h): its thread, its listening Unix socket, and per connection a
 * TCP + TLS leg and two bounded buffers. */
#include "net/tunnel.h"

#include <errno.h>
#include <ev.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "net/net.h"
#include "net/tls.h"
#include "util/log.h"

/* Each direction's buffer: a TLS record's worth and more; a connection's memory is fixed. */
#define TUNNEL_BUF (32 * 1024)
#define LOG_EVERY 10.0

enum tunnel_state {
	TUNNEL_CONNECTING, /* TCP connect in progress; the local side is not read */
	TUNNEL_HANDSHAKE,  /* TLS handshake in progress; the local side is not read */
	TUNNEL_OPEN,       /* bytes flow both ways */
};

struct tunnel_conn {
	struct tunnel *t;
	struct tunnel_conn *prev, *next;
	enum tunnel_state state;
	int lfd;  /* the local client (Unix) */
	int sfd;  /* the server (TCP) */
	ev_io lio, sio;
	ev_timer timer; /* connect + handshake bound */
	struct tls_link link;
	bool server_eof; /* the server closed: deliver what is buffered, then close */
	/* up: local -> server; down: server -> local. [off, len) is still to write; reads append
	 * at len, so a blocked TLS write is retried with the same or more bytes, never fewer. */
	size_t up_off, up_len, down_off, down_len;
	uint8_t up[TUNNEL_BUF];
	uint8_t down[TUNNEL_BUF];
};

struct tunnel {
	char *name, *host;
	int port;
	struct tls_ctx *ctx;
	double timeout;
	int max_conns;
	char dir[96]; /* TMPDIR (at most 64 bytes) + "/tusk-tunnel-XXXXXX" */
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int listen_fd;
	struct ev_loop *loop;
	ev_io accept_w;
	ev_async stop_w;
	pthread_t thread;
	bool started;
	/* tunnel thread only */
	struct tunnel_conn *conns;
	int nconns;
	double last_log;
	unsigned lost_logs;
};

/* A failure worth a line; at most one every LOG_EVERY per tunnel (a Redis with a wrong
 * certificate is retried by every worker with backoff). */
static void tunnel_warn(struct tunnel *t, const char *what, const char *detail)
{
	double now = ev_now(t->loop);

	if (t->last_log && now - t->last_log < LOG_EVERY) {
		t->lost_logs++;
		return;
	}
	log_warn(NULL, NULL, "%s: TLS tunnel to %s:%d: %s%s%s; connection closed (%u more not logged)", t->name,
		 t->host, t->port, what, detail && *detail ? ": " : "", detail ? detail : "", t->lost_logs);
	t->last_log = now;
	t->lost_logs = 0;
}

static void close_conn(struct tunnel_conn *c)
{
	struct tunnel *t = c->t;

	ev_io_stop(t->loop, &c->lio);
	ev_io_stop(t->loop, &c->sio);
	ev_timer_stop(t->loop, &c->timer);
	tls_link_close(&c->link);
	if (c->sfd >= 0)
		close(c->sfd);
	close(c->lfd);
	if (c->prev)
		c->prev->next = c->next;
	else
		t->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	t->nconns--;
	free(c);
}

static void set_events(struct ev_loop *loop, ev_io *w, int events)
{
	if ((w->events & (EV_READ | EV_WRITE)) == events && (ev_is_active(w) || !events))
		return;
	ev_io_stop(loop, w);
	ev_io_set(w, w->fd, events);
	if (events)
		ev_io_start(loop, w);
}

/* Move what can move, both ways, until nothing does; then wait for what is missing.
 * 0: keep the connection; < 0: close it (-ECONNRESET: an end closed, not a failure). */
static int pump(struct tunnel_conn *c)
{
	bool progress;

	do {
		progress = false;
		if (!c->server_eof && c->down_len < TUNNEL_BUF) {
			ssize_t n = tls_link_read(c->sfd, &c->link, c->down + c->down_len, TUNNEL_BUF - c->down_len);
			if (n > 0) {
				c->down_len += (size_t)n;
				progress = true;
			} else if (n == 0) {
				c->server_eof = true;
			} else if (n != -EAGAIN) {
				return (int)n;
			}
		}
		if (c->down_off < c->down_len) {
			ssize_t n = write(c->lfd, c->down + c->down_off, c->down_len - c->down_off);
			if (n > 0) {
				c->down_off += (size_t)n;
				progress = true;
			} else if (n < 0 && errno != EAGAIN && errno != EINTR) {
				return -ECONNRESET; /* the local client left */
			}
			if (c->down_off == c->down_len)
				c->down_off = c->down_len = 0;
		}
		if (c->server_eof && c->down_len == 0)
			return -ECONNRESET;
		if (c->up_len < TUNNEL_BUF) {
			ssize_t n = read(c->lfd, c->up + c->up_len, TUNNEL_BUF - c->up_len);
			if (n > 0) {
				c->up_len += (size_t)n;
				progress = true;
			} else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
				return -ECONNRESET; /* the local client left: nothing it sent matters now */
			}
		}
		if (c->up_off < c->up_len) {
			ssize_t n = tls_link_write(c->sfd, &c->link, c->up + c->up_off, c->up_len - c->up_off);
			if (n > 0) {
				c->up_off += (size_t)n;
				progress = true;
			} else if (n != -EAGAIN) {
				return (int)n;
			}
			if (c->up_off == c->up_len)
				c->up_off = c->up_len = 0;
		}
	} while (progress);
	set_events(c->t->loop, &c->lio,
		   (c->up_len < TUNNEL_BUF ? EV_READ : 0) | (c->down_off < c->down_len ? EV_WRITE : 0));
	set_events(c->t->loop, &c->sio,
		   tls_link_events(&c->link, !c->server_eof && c->down_len < TUNNEL_BUF, c->up_off < c->up_len));
	return 0;
}

static void pump_or_close(struct tunnel_conn *c)
{
	int rc = pump(c);

	if (rc == 0)
		return;
	if (rc != -ECONNRESET)
		tunnel_warn(c->t, "I/O failed", c->link.conn ? tls_conn_error(c->link.conn) : strerror(-rc));
	close_conn(c);
}

static void fail(struct tunnel_conn *c, const char *what, const char *detail)
{
	tunnel_warn(c->t, what, detail);
	close_conn(c);
}

static void handshake(struct tunnel_conn *c)
{
	int want = 0;
	int rc = tls_handshake(c->link.conn, &want);

	if (rc == -EAGAIN) {
		set_events(c->t->loop, &c->sio, want);
		return;
	}
	if (rc < 0) {
		fail(c, "TLS handshake failed", tls_conn_error(c->link.conn));
		return;
	}
	ev_timer_stop(c->t->loop, &c->timer);
	c->state = TUNNEL_OPEN;
	log_debug(NULL, NULL, "%s: TLS tunnel to %s:%d: open (%s, %s)", c->t->name, c->t->host, c->t->port,
		  tls_version(c->link.conn), tls_cipher(c->link.conn));
	pump_or_close(c);
}

static void server_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct tunnel_conn *c = w->data;
	(void)loop;
	(void)revents;

	switch (c->state) {
	case TUNNEL_CONNECTING: {
		int rc = net_connect_result(c->sfd);
		if (rc < 0) {
			fail(c, "connect failed", strerror(-rc));
			return;
		}
		c->link.conn = tls_conn_new(c->t->ctx, c->sfd, false, c->t->host);
		if (!c->link.conn) {
			fail(c, "cannot start TLS", "out of memory");
			return;
		}
		c->state = TUNNEL_HANDSHAKE;
		handshake(c);
		return;
	}
	case TUNNEL_HANDSHAKE:
		handshake(c);
		return;
	case TUNNEL_OPEN:
		pump_or_close(c);
		return;
	}
}

static void local_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	(void)revents;
	pump_or_close(w->data);
}

static void timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct tunnel_conn *c = w->data;
	(void)loop;
	(void)revents;

	fail(c, c->state == TUNNEL_CONNECTING ? "connect timed out" : "TLS handshake timed out", NULL);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct tunnel *t = w->data;
	struct net_addr addr;
	(void)revents;

	for (;;) {
		int lfd = accept4(t->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (lfd < 0)
			return; /* EAGAIN, or a failure the next readiness retries */
		if (t->nconns >= t->max_conns) {
			tunnel_warn(t, "too many connections", NULL);
			close(lfd);
			continue;
		}
		struct tunnel_conn *c = malloc(sizeof(*c));
		if (!c) {
			tunnel_warn(t, "no memory for a connection", NULL);
			close(lfd);
			continue;
		}
		memset(c, 0, offsetof(struct tunnel_conn, up));
		c->t = t;
		c->lfd = lfd;
		c->sfd = -1;
		c->next = t->conns;
		if (t->conns)
			t->conns->prev = c;
		t->conns = c;
		t->nconns++;
		ev_io_init(&c->lio, local_cb, lfd, EV_READ);
		c->lio.data = c;
		ev_timer_init(&c->timer, timeout_cb, t->timeout, 0.);
		c->timer.data = c;
		/* Resolved at each connect, as hiredis does for a plain TCP Redis: a name that
		 * moves is followed. Blocking, but only this thread waits. */
		int rc = net_resolve(t->host, t->port, false, &addr);
		if (rc < 0) {
			ev_io_init(&c->sio, server_cb, -1, 0);
			fail(c, "cannot resolve the host", NULL);
			continue;
		}
		rc = net_connect(&addr);
		c->sfd = rc;
		ev_io_init(&c->sio, server_cb, rc, EV_WRITE);
		c->sio.data = c;
		if (rc < 0) {
			c->sfd = -1;
			fail(c, "connect failed", strerror(-rc));
			continue;
		}
		c->state = TUNNEL_CONNECTING;
		ev_io_start(loop, &c->sio);
		ev_timer_start(loop, &c->timer);
	}
}

static void stop_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	struct tunnel *t = w->data;
	(void)revents;

	while (t->conns)
		close_conn(t->conns);
	ev_io_stop(loop, &t->accept_w);
	ev_break(loop, EVBREAK_ALL);
}

static void *run(void *arg)
{
	struct tunnel *t = arg;

	ev_run(t->loop, 0);
	return NULL;
}

static void free_tunnel(struct tunnel *t)
{
	if (t->listen_fd >= 0)
		close(t->listen_fd);
	if (t->path[0])
		(void)unlink(t->path);
	if (t->dir[0])
		(void)rmdir(t->dir);
	if (t->loop)
		ev_loop_destroy(t->loop);
	tls_ctx_free(t->ctx);
	free(t->name);
	free(t->host);
	free(t);
}

int tunnel_start(const struct tunnel_opts *o, struct tunnel **out)
{
	struct tunnel *t = calloc(1, sizeof(*t));
	const char *tmp = getenv("TMPDIR");
	int rc;

	*out = NULL;
	if (!t) {
		tls_ctx_free(o->ctx);
		return -ENOMEM;
	}
	t->ctx = o->ctx;
	t->listen_fd = -1;
	t->port = o->port;
	t->timeout = o->timeout;
	t->max_conns = o->max_conns;
	t->name = strdup(o->name);
	t->host = strdup(o->host);
	t->loop = ev_loop_new(EVFLAG_AUTO);
	if (!t->name || !t->host || !t->loop) {
		rc = -ENOMEM;
		goto err;
	}
	/* The socket path must fit sun_path: a long TMPDIR falls back to /tmp. */
	if (!tmp || !*tmp || strlen(tmp) > 64)
		tmp = "/tmp";
	snprintf(t->dir, sizeof(t->dir), "%s/tusk-tunnel-XXXXXX", tmp);
	if (!mkdtemp(t->dir)) {
		rc = -errno;
		t->dir[0] = '\0';
		log_error(NULL, NULL, "%s: TLS tunnel: cannot make a directory in %s: %s", o->name, tmp, strerror(-rc));
		goto err;
	}
	snprintf(t->path, sizeof(t->path), "%s/s", t->dir);
	/* The directory's 0700 is what guards the socket. */
	rc = net_listen_unix(t->path, 64, 0777, (unsigned)-1);
	if (rc < 0) {
		log_error(NULL, NULL, "%s: TLS tunnel: cannot listen on %s: %s", o->name, t->path, strerror(-rc));
		t->path[0] = '\0';
		goto err;
	}
	t->listen_fd = rc;
	ev_io_init(&t->accept_w, accept_cb, t->listen_fd, EV_READ);
	t->accept_w.data = t;
	ev_io_start(t->loop, &t->accept_w);
	ev_async_init(&t->stop_w, stop_cb);
	t->stop_w.data = t;
	ev_async_start(t->loop, &t->stop_w);
	rc = -pthread_create(&t->thread, NULL, run, t);
	if (rc < 0) {
		log_error(NULL, NULL, "%s: TLS tunnel: cannot start its thread: %s", o->name, strerror(-rc));
		goto err;
	}
	t->started = true;
	log_info(NULL, NULL, "%s: TLS tunnel to %s:%d on %s", t->name, t->host, t->port, t->path);
	*out = t;
	return 0;
err:
	free_tunnel(t);
	return rc;
}

const char *tunnel_path(const struct tunnel *t)
{
	return t->path;
}

void tunnel_stop(struct tunnel *t)
{
	if (!t)
		return;
	if (t->started) {
		ev_async_send(t->loop, &t->stop_w);
		pthread_join(t->thread, NULL);
	}
	free_tunnel(t);
}
