/* The relay: while a client holds a server, bytes move between the two sockets straight
 * out of each side's read buffer, without re-encoding. A scanner walks message headers in
 * both directions so tusk knows the protocol position: it counts requests that owe a
 * ReadyForQuery (Query, Sync, FunctionCall), reads the transaction status from each
 * ReadyForQuery, records ParameterStatus, and keeps the client's Terminate from reaching a
 * server that will be reused. Bodies are never copied. A side whose peer cannot take more
 * stops being read, so memory stays bounded whatever the result size. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "frontend/client_int.h"
#include "pool/pool.h"
#include "pool/server.h"
#include "proto/proto.h"
#include "runtime/runtime.h"
#include "util/log.h"
#include "worker/worker.h"

#define RELAY_INSPECT_MAX 8192 /* largest ParameterStatus we look into; bigger ones just pass */

enum scan_result {
	SCAN_OK,        /* scanned as far as the bytes allow */
	SCAN_TERMINATE, /* the client's Terminate sits at the head */
	SCAN_BAD,       /* protocol violation */
};

static void relay_server_cb(struct ev_loop *loop, ev_io *io, int revents);

static void server_update_io(struct client *c, struct server *s)
{
	int want = 0;
	if (buf_len(&s->rbuf) < s->rbuf.cap)
		want |= EV_READ;
	if (c->c2s_scanned > 0)
		want |= EV_WRITE;
	if (ev_is_active(&s->io) && (s->io.events & (EV_READ | EV_WRITE)) == want)
		return;
	ev_io_stop(c->worker->loop, &s->io);
	if (want) {
		ev_io_set(&s->io, s->fd, want);
		ev_io_start(c->worker->loop, &s->io);
	}
}

/* Client to server: count what owes a ReadyForQuery, stop at Terminate. */
static enum scan_result scan_client(struct client *c, struct server *s, uint32_t max)
{
	struct buf *b = &c->rbuf;

	while (c->c2s_scanned < buf_len(b)) {
		size_t avail = buf_len(b) - c->c2s_scanned;
		if (c->c2s_remaining > 0) {
			size_t k = avail < c->c2s_remaining ? avail : c->c2s_remaining;
			c->c2s_scanned += k;
			c->c2s_remaining -= (uint32_t)k;
			continue;
		}
		struct proto_hdr h;
		ssize_t r = proto_read_hdr(buf_head(b) + c->c2s_scanned, avail, max, &h);
		if (r == 0)
			break;
		if (r < 0)
			return SCAN_BAD;
		if (h.type == 'X')
			return c->c2s_scanned == 0 ? SCAN_TERMINATE : SCAN_OK;
		if (h.type == 'Q' || h.type == 'S' || h.type == 'F')
			s->pending_rfq++;
		size_t total = (size_t)h.len + 1;
		size_t k = avail < total ? avail : total;
		c->c2s_scanned += k;
		c->c2s_remaining = (uint32_t)(total - k);
	}
	return SCAN_OK;
}

/* Server to client: note transaction status and parameters on the way past. */
static enum scan_result scan_server(struct client *c, struct server *s, uint32_t max)
{
	struct buf *b = &s->rbuf;

	while (c->s2c_scanned < buf_len(b)) {
		size_t avail = buf_len(b) - c->s2c_scanned;
		if (c->s2c_remaining > 0) {
			size_t k = avail < c->s2c_remaining ? avail : c->s2c_remaining;
			c->s2c_scanned += k;
			c->s2c_remaining -= (uint32_t)k;
			continue;
		}
		const uint8_t *m = buf_head(b) + c->s2c_scanned;
		struct proto_hdr h;
		ssize_t r = proto_read_hdr(m, avail, max, &h);
		if (r == 0)
			break;
		if (r < 0)
			return SCAN_BAD;
		size_t total = (size_t)h.len + 1;
		bool inspect = h.type == 'Z' || (h.type == 'S' && total <= RELAY_INSPECT_MAX);
		if (inspect) {
			if (avail < total)
				break; /* wait for the whole (small) message */
			if (h.type == 'Z') {
				if (h.len != 5)
					return SCAN_BAD;
				s->tx_status = m[PROTO_HDR_LEN];
				if (s->pending_rfq > 0)
					s->pending_rfq--;
			} else {
				const char *name, *value;
				if (proto_parse_parameter_status(m + PROTO_HDR_LEN, total - PROTO_HDR_LEN, &name, &value) == 0)
					server_set_param(s, name, value);
			}
		}
		size_t k = avail < total ? avail : total;
		c->s2c_scanned += k;
		c->s2c_remaining = (uint32_t)(total - k);
	}
	return SCAN_OK;
}

/* Read once into b. >0 bytes, 0 EOF, -EAGAIN nothing now or no room, other <0 error. */
static ssize_t read_some(int fd, struct buf *b)
{
	if (buf_room(b) == 0)
		buf_compact(b);
	if (buf_room(b) == 0)
		return -EAGAIN;
	for (;;) {
		ssize_t n = read(fd, buf_tail(b), buf_room(b));
		if (n > 0) {
			buf_produce(b, (size_t)n);
			return n;
		}
		if (n == 0)
			return 0;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return -EAGAIN;
		return -errno;
	}
}

/* Write the scanned prefix of b to fd. 0 (maybe partial), or <0 on a dead peer. */
static int write_scanned(int fd, struct buf *b, size_t *scanned)
{
	while (*scanned > 0) {
		ssize_t n = write(fd, buf_head(b), *scanned);
		if (n > 0) {
			buf_consume(b, (size_t)n);
			*scanned -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		return -EPIPE;
	}
	return 0;
}

static void server_lost(struct client *c, struct server *s, const char *reason)
{
	char sid[ID_LEN];
	memcpy(sid, s->id, ID_LEN);
	/* Whatever the server said last (often its own FATAL) goes out first. */
	(void)scan_server(c, s, c->worker->rt->cfg->max_message_size);
	(void)write_scanned(c->fd, &s->rbuf, &c->s2c_scanned);
	log_debug(c->id, c->ctx, "server %s lost with %zu bytes unsent, %u of a message outstanding", sid,
		  c->s2c_scanned, c->s2c_remaining);
	c->server = NULL;
	s->owner = NULL;
	cancel_set_target(c, NULL);
	server_close(s, reason);
	client_fail(c, "08006", "server connection %s %s", sid, reason);
}

/* Move client bytes to the server. Returns false when c was closed. */
static bool pump_c2s(struct client *c, struct server *s)
{
	switch (scan_client(c, s, c->worker->rt->cfg->max_message_size)) {
	case SCAN_BAD:
		client_fail(c, "08P01", "invalid message from client (bad length)");
		return false;
	case SCAN_TERMINATE:
		buf_consume(&c->rbuf, PROTO_HDR_LEN);
		client_close(c, "client terminated the session");
		return false;
	case SCAN_OK:
		break;
	}
	if (write_scanned(s->fd, &c->rbuf, &c->c2s_scanned) < 0) {
		server_lost(c, s, "closed while writing to it");
		return false;
	}
	/* A Terminate right after forwarded bytes is now at the head. */
	if (c->c2s_scanned == 0 && c->c2s_remaining == 0 && buf_len(&c->rbuf) >= PROTO_HDR_LEN &&
	    buf_head(&c->rbuf)[0] == 'X')
		return pump_c2s(c, s);
	return true;
}

/* Move server bytes (after tusk's own) to the client. Returns false when c was closed. */
static bool pump_s2c(struct client *c, struct server *s)
{
	if (client_write_wbuf(c) < 0) {
		client_close(c, "write to client failed");
		return false;
	}
	if (!buf_empty(&c->wbuf))
		return true;
	if (scan_server(c, s, c->worker->rt->cfg->max_message_size) == SCAN_BAD) {
		server_lost(c, s, "sent an invalid message");
		return false;
	}
	if (write_scanned(c->fd, &s->rbuf, &c->s2c_scanned) < 0) {
		client_close(c, "write to client failed");
		return false;
	}
	return true;
}

static void update_both(struct client *c, struct server *s)
{
	client_update_io(c);
	server_update_io(c, s);
}

void relay_client_event(struct client *c, int revents)
{
	struct server *s = c->server;

	if (revents & EV_WRITE) {
		if (!pump_s2c(c, s))
			return;
	}
	if (revents & EV_READ) {
		ssize_t n = read_some(c->fd, &c->rbuf);
		if (n == 0) {
			client_close(c, "client closed the connection");
			return;
		}
		if (n < 0 && n != -EAGAIN) {
			client_close(c, "read from client failed");
			return;
		}
		if (!pump_c2s(c, s))
			return;
	}
	update_both(c, s);
}

static void relay_server_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct server *s = io->data;
	struct client *c = s->owner;
	(void)loop;

	if (revents & EV_WRITE) {
		if (!pump_c2s(c, s))
			return;
	}
	if (revents & EV_READ) {
		ssize_t n = read_some(s->fd, &s->rbuf);
		if (n == 0) {
			server_lost(c, s, "closed the connection unexpectedly");
			return;
		}
		if (n < 0 && n != -EAGAIN) {
			server_lost(c, s, "failed while reading from it");
			return;
		}
		if (!pump_s2c(c, s))
			return;
	}
	update_both(c, s);
}

void relay_start(struct client *c, struct server *s)
{
	ev_io_stop(c->worker->loop, &s->io);
	ev_timer_stop(c->worker->loop, &s->timer);
	ev_set_cb(&s->io, relay_server_cb);
	s->io.data = s;
	s->owner = c;
	s->state = SERVER_ACTIVE;
	s->pending_rfq = 0;
	c->server = s;
	c->c2s_scanned = c->s2c_scanned = 0;
	c->c2s_remaining = c->s2c_remaining = 0;
	cancel_set_target(c, s);
	log_debug(c->id, c->ctx, "linked to server %s", s->id);
	client_set_state(c, CLIENT_ACTIVE);
	/* Greeting first; the client may also have pipelined bytes after its startup. */
	if (!pump_s2c(c, s))
		return;
	if (!buf_empty(&c->rbuf) && !pump_c2s(c, s))
		return;
	update_both(c, s);
}

static void on_reset_done(struct server *s, void *arg, int err, const char *reason, const uint8_t *errmsg,
			  size_t errlen)
{
	(void)arg;
	(void)errmsg;
	(void)errlen;
	if (err < 0) {
		if (s->ok_after_error)
			server_close(s, "reset query failed");
		/* else server.c closes it, having logged reason */
		(void)reason;
		return;
	}
	if (s->tx_status != 'I') {
		server_close(s, "still in a transaction after reset");
		return;
	}
	s->idle_since = ev_now(s->worker->loop);
	server_detach(s);
	pool_put_idle(s->pool, s);
}

void relay_release_server(struct client *c, struct server *s)
{
	struct worker *w = c->worker;
	const struct tusk_config *cfg = w->rt->cfg;
	bool was_active = s->state == SERVER_ACTIVE;

	s->owner = NULL;
	cancel_set_target(c, NULL);
	if (w->stopping) {
		server_close(s, "shutting down");
		return;
	}
	if (s->state != SERVER_ACTIVE && s->state != SERVER_IDLE) {
		/* Still logging in or applying parameters: simplest to give the slot back. */
		server_close(s, "client left before the server was ready");
		return;
	}
	/* Clean means: every request answered, no message half-way in either direction. */
	bool clean = s->pending_rfq == 0 && (!was_active || (c->s2c_remaining == 0 && c->c2s_remaining == 0 &&
							      c->c2s_scanned == 0));
	if (!clean) {
		server_close(s, "client left in the middle of a request");
		return;
	}
	/* Bytes left unread from a clean server are asynchronous chatter (notices,
	 * notifications) meant for the client that left. */
	buf_reset(&s->rbuf);
	server_attach(s, w);

	const char *queries[2];
	int n = 0;
	if (s->tx_status != 'I')
		queries[n++] = "ROLLBACK";
	if (cfg->server_reset_query && cfg->server_reset_query[0])
		queries[n++] = cfg->server_reset_query;
	if (n == 0) {
		s->state = SERVER_IDLE;
		on_reset_done(s, NULL, 0, NULL, NULL, 0);
		return;
	}
	server_run_queries(s, queries, n, (double)cfg->server_reset_timeout_ms / 1000.0, on_reset_done, NULL);
}
