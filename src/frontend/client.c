/* Client connections (see client.h). States: STARTUP (reading the startup packet),
 * WAITING (for a server: queued, connecting, or applying the client's session to it),
 * ACTIVE (relaying, see relay.c), IDLE (transaction/statement pooling: between
 * transactions, no server) and CLOSING (flushing a last error before close).
 * client_set_state is the one place that changes state and the timers that go with it. */
#include "frontend/client.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <openssl/rand.h>

#include "frontend/authquery.h"
#include "frontend/client_int.h"
#include "frontend/client_kind.h"
#include "frontend/replication.h"
#include "frontend/vdb.h"
#include "net/evio.h"
#include "net/handshake.h"
#include "pool/prepared.h"
#include "router/classify.h"
#include "pool/pool.h"
#include "pool/server.h"
#include "proto/proto.h"
#include "runtime/runtime.h"
#include "stats/stats.h"
#include "util/log.h"
#include "worker/worker.h"

#define CLIENT_WBUF_SIZE (32 * 1024)
#define CLIENT_CLOSE_LINGER 5.0 /* seconds to flush a final error before giving up */

static void client_io_cb(struct ev_loop *loop, ev_io *io, int revents);
static void client_timer_cb(struct ev_loop *loop, ev_timer *t, int revents);
static void start_claim(struct client *c);

static const struct tusk_config *cfg_of(const struct client *c) { return c->worker->rt->cfg; }

/* ---- session kinds (client_kind.h) ---- */

static void pooled_startup(struct client *c);
static void pooled_begin(struct client *c);
static bool pooled_writable(struct client *c);

static const struct client_kind pooled_kind = {
	.name = "pooled",
	.startup = pooled_startup,
	.begin = pooled_begin,
	.input = client_need_server,
	.writable = pooled_writable,
};

#define CLIENT_KINDS_MAX 8
/* Written at startup only, before any worker thread exists (client_kind_register). */
static const struct client_kind *kinds[CLIENT_KINDS_MAX];
static int nkinds;
static const struct client_move_hook *move_hook;

void client_kind_register(const struct client_kind *k)
{
	for (int i = 0; i < nkinds; i++)
		if (kinds[i] == k)
			return;
	if (nkinds == CLIENT_KINDS_MAX) {
		log_error(NULL, NULL, "too many session kinds: %s not registered", k->name);
		return;
	}
	kinds[nkinds++] = k;
}

const struct client_kind *client_kind_of(const struct tusk_config *cfg, const char *database)
{
	for (int i = 0; i < nkinds; i++) {
		if (kinds[i]->enabled && !kinds[i]->enabled(cfg))
			continue;
		for (const char *const *db = kinds[i]->databases; *db; db++)
			if (strcmp(*db, database) == 0)
				return kinds[i];
	}
	return &pooled_kind;
}

#define CLIENT_PROTOCOLS_MAX 4
static client_protocol_accept_fn protocol_accept[CLIENT_PROTOCOLS_MAX];

void client_protocol_register(int protocol, client_protocol_accept_fn accept)
{
	if (protocol > 0 && protocol < CLIENT_PROTOCOLS_MAX)
		protocol_accept[protocol] = accept;
}

void client_set_move_hook(const struct client_move_hook *h)
{
	move_hook = h;
}

_Static_assert(EV_READ == TLS_WANT_READ && EV_WRITE == TLS_WANT_WRITE, "tls_link_events speaks libev's bits");

/* The TLS mode of the listener the client came in on (disable for Unix sockets, and for a
 * listener a reload removed between accept and lookup). */
static int listen_tls_mode(const struct client *c)
{
	return c->listen && c->listen_tls ? c->listen->tls : CONFIG_TLS_DISABLE;
}

static const char *state_name(enum client_state s)
{
	switch (s) {
	case CLIENT_STARTUP: return "startup";
	case CLIENT_AUTH: return "auth";
	case CLIENT_IDLE: return "idle";
	case CLIENT_WAITING: return "waiting";
	case CLIENT_ACTIVE: return "active";
	case CLIENT_CLOSING: return "closing";
	}
	return "?";
}

/* ---- stats ---- */
static enum stats_client_state stats_state_of(enum client_state s)
{
	switch (s) {
	case CLIENT_STARTUP: return STATS_CLIENT_STARTUP;
	case CLIENT_AUTH: return STATS_CLIENT_AUTH;
	case CLIENT_WAITING: return STATS_CLIENT_WAITING;
	case CLIENT_ACTIVE: return STATS_CLIENT_ACTIVE;
	case CLIENT_IDLE: return STATS_CLIENT_IDLE;
	case CLIENT_CLOSING: return STATS_CLIENT_CLOSING;
	}
	return STATS_CLIENT_CLOSING;
}

/* Count c in state `to` (-1: gone) instead of where it was counted, and time its waits for
 * a server: a wait ends when the client leaves CLIENT_WAITING, served or not. */
static void count_client(struct client *c, int to)
{
	struct stats_pool *sp = c->pool ? pool_stats(c->pool) : NULL;
	int from = c->stats_state - 1;

	if (c->wait_quiet) {
		/* A wait that ended before it was announced (client_need_server): none at all. */
		c->wait_quiet = false;
		if (c->stats_pool)
			stats_count_no_wait(c->stats_pool);
	}
	if (from == STATS_CLIENT_WAITING && to != STATS_CLIENT_WAITING && c->wait_start > 0 && c->stats_pool) {
		stats_count_wait(c->stats_pool, ev_now(c->worker->loop) - c->wait_start);
		c->wait_start = 0;
	}
	if (to == STATS_CLIENT_WAITING && from != STATS_CLIENT_WAITING)
		c->wait_start = ev_now(c->worker->loop);
	if (sp && sp == c->stats_pool)
		stats_client_step(c->worker->rt->stats, sp, from, to);
	else
		stats_client_move(c->worker->rt->stats, c->stats_pool, from, sp, to);
	c->stats_pool = sp;
	c->stats_state = (uint8_t)(to + 1); /* to: -1 .. STATS_CLIENT_NSTATES - 1 */
}
/* stats: a whole ErrorResponse (header included) from a server is on its way to c. */
void client_count_error(struct client *c, const uint8_t *msg, size_t len)
{
	struct proto_error_fields f = { 0 };
	if (len < PROTO_HDR_LEN || proto_parse_error(msg + PROTO_HDR_LEN, len - PROTO_HDR_LEN, &f) < 0)
		f.sqlstate = NULL;
	stats_count_error(c->worker->rt->stats, f.sqlstate);
}
/* ---- end stats ---- */

static void arm_timer(struct client *c, double seconds)
{
	/* A timer neither running nor fired-and-pending has nothing to stop: the test inline is
	 * cheaper than libev's call (twice per transaction). */
	if (ev_is_active(&c->timer) || ev_is_pending(&c->timer))
		ev_timer_stop(c->worker->loop, &c->timer);
	if (seconds > 0) {
		ev_timer_set(&c->timer, seconds, 0.);
		ev_timer_start(c->worker->loop, &c->timer);
	}
}

/* CLIENT_WAITING's timer: query_wait_notify's NOTICE first when it comes before
 * pool_wait_timeout (notify_wait arms the rest), else the deadline. */
static void arm_wait_timer(struct client *c)
{
	const struct tusk_config *cfg = cfg_of(c);
	c->wait_notice_armed = cfg->query_wait_notify_ms > 0 && cfg->query_wait_notify_ms < cfg->pool_wait_timeout_ms;
	arm_timer(c, (double)(c->wait_notice_armed ? cfg->query_wait_notify_ms : cfg->pool_wait_timeout_ms) / 1000.0);
}

void client_set_state(struct client *c, enum client_state to)
{
	client_set_state_no_io(c, to);
	client_update_io(c);
}

void client_set_state_no_io(struct client *c, enum client_state to)
{
	const struct tusk_config *cfg = cfg_of(c);
	log_debug(c->id, c->ctx, "%s -> %s", state_name(c->state), state_name(to));
	c->state = to;
	c->active_at = ev_now(c->worker->loop);
	count_client(c, (int)stats_state_of(to));
	switch (to) {
	case CLIENT_STARTUP:
		arm_timer(c, (double)cfg->client_login_timeout_ms / 1000.0);
		break;
	case CLIENT_AUTH:
		break; /* the login timer started at accept keeps running */
	case CLIENT_WAITING:
		/* The wait deadline is absolute from the moment the client asked for a server. */
		arm_wait_timer(c);
		break;
	case CLIENT_ACTIVE:
	case CLIENT_IDLE:
		arm_timer(c, 0);
		break;
	case CLIENT_CLOSING:
		arm_timer(c, CLIENT_CLOSE_LINGER);
		break;
	}
}

/* Buffer blocks per worker kept for the next client that has bytes in flight: enough for
 * the clients of a busy pool to find one without malloc; beyond that they are freed. */
#define CLIENT_FREE_BUFS 64

static size_t client_rbuf_size(const struct runtime *rt)
{
	return rt->cfg->buffer_size > PROTO_STARTUP_MAX ? rt->cfg->buffer_size : 2 * PROTO_STARTUP_MAX;
}

/* A client's place in a pool queue: the waiter the pool holds a pointer to, and who it is
 * for. Only clients that wait for a server need one, and only while they wait. */
struct client_wait {
	struct pool_waiter w;
	struct client *c;
	struct client_wait *next; /* on the worker's free list */
};

/* Free places kept per worker: a claim that is answered at once (an idle server) takes and
 * gives back one without malloc, and so do the queued clients of a busy pool in turn. */
#define CLIENT_FREE_WAITS 64
/* TLS handshake steps a worker runs per loop iteration (fe->hs): a step that signs (the
 * first of a full handshake) costs a millisecond or more of CPU, during which no relayed
 * client of the worker is served. */
#define CLIENT_HANDSHAKES_PER_TURN 1

static void on_pool_answer(struct pool_waiter *wt, struct server *s, int err, const char *reason,
			   const uint8_t *errmsg, size_t errlen);

/* c's place for a claim (c->wait), from the worker's free list or the heap; NULL when out
 * of memory. */
static struct client_wait *get_wait(struct client *c)
{
	struct worker *w = c->worker;
	struct client_wait *cw = c->wait;
	if (!cw) {
		struct frontend_worker *fe = fe_of(w);
		cw = fe->waits;
		if (cw) {
			fe->waits = cw->next;
			fe->nwaits--;
		} else if (!(cw = malloc(sizeof *cw))) {
			return NULL;
		}
	}
	memset(cw, 0, sizeof *cw);
	cw->c = c;
	cw->w.worker = w;
	cw->w.owner = c->serial;
	cw->w.answer = on_pool_answer;
	c->wait = cw;
	return cw;
}

/* The pool is done with c's place: back to the worker. */
static void put_wait(struct client *c)
{
	struct client_wait *cw = c->wait;
	struct frontend_worker *fe = fe_of(c->worker);
	if (!cw)
		return;
	c->wait = NULL;
	if (fe->nwaits >= CLIENT_FREE_WAITS) {
		free(cw);
		return;
	}
	cw->next = fe->waits;
	fe->waits = cw;
	fe->nwaits++;
}

/* ---- the frontend's tenancy on each worker (worker.h, worker_hooks) ---- */

static void hs_prepare_cb(struct ev_loop *loop, ev_prepare *p, int revents);
static void reap_cb(struct ev_loop *loop, ev_prepare *p, int revents);
static void hs_idle_cb(struct ev_loop *loop, ev_idle *i, int revents)
{
	(void)loop;
	(void)i;
	(void)revents; /* only there so that the loop polls without sleeping (hs_prepare_cb) */
}

static int frontend_worker_init(struct worker *w)
{
	struct frontend_worker *fe = fe_of(w);
	buf_pool_init(&fe->rbufs, client_rbuf_size(w->rt), CLIENT_FREE_BUFS);
	buf_pool_init(&fe->wbufs, CLIENT_WBUF_SIZE, CLIENT_FREE_BUFS);
	ev_prepare_init(&fe->hs_prepare, hs_prepare_cb);
	fe->hs_prepare.data = w;
	ev_idle_init(&fe->hs_idle, hs_idle_cb);
	ev_prepare_init(&fe->reap_prepare, reap_cb);
	fe->reap_prepare.data = w;
	return 0;
}

static void client_check_timeouts(struct worker *w, double now);

/* Housekeeping tick: query_timeout and client_idle_timeout, then free the buffer blocks no
 * client needed since the last one. */
static unsigned frontend_worker_tick(struct worker *w, double now)
{
	struct frontend_worker *fe = fe_of(w);
	client_check_timeouts(w, now);
	return buf_pool_trim(&fe->rbufs) + buf_pool_trim(&fe->wbufs);
}

static void free_client(struct client *c);

static void frontend_worker_free(struct worker *w)
{
	struct frontend_worker *fe = fe_of(w);
	ev_prepare_stop(w->loop, &fe->reap_prepare);
	reap_cb(w->loop, &fe->reap_prepare, 0); /* closed in the loop's last turn */
	/* The loop is over and the inbox settled (hand-overs back, pool answers delivered): a
	 * husk left waits for a read-your-writes fetch whose server was closed at the stop
	 * without ending it, and nothing will ever end it now. */
	for (struct client *c = fe->husks, *next; c; c = next) {
		next = c->next;
		if (!c->queued && !c->tls_away) {
			log_info(c->id, c->ctx, "freed at exit: closed while a read-your-writes fetch ran, which never ended");
			free_client(c);
		}
	}
	cancel_close_all(w);
	while (fe->waits) {
		struct client_wait *cw = fe->waits;
		fe->waits = cw->next;
		free(cw);
	}
	fe->nwaits = 0;
	ev_prepare_stop(w->loop, &fe->hs_prepare);
	ev_idle_stop(w->loop, &fe->hs_idle);
	free(fe->hs);
	fe->hs = NULL;
	fe->hs_head = fe->hs_len = fe->hs_cap = 0;
	buf_pool_destroy(&fe->rbufs);
	buf_pool_destroy(&fe->wbufs);
}

static void client_close_all(struct worker *w, const char *reason);
static void client_close_quiescent(struct worker *w, const char *reason);

struct worker_hooks frontend_worker_hooks = {
	.name = "frontend",
	.size = sizeof(struct frontend_worker),
	.init = frontend_worker_init,
	.tick = frontend_worker_tick,
	.drain = client_close_quiescent,
	.stop = client_close_all,
	.free = frontend_worker_free,
	.accept = client_accept,
};

/* An idle client holds no buffer (most clients of a pooler are idle): between
 * transactions, with nothing half read or half written, both blocks go back to the
 * worker. Clients of a resident kind (the admin console, the kv database) keep theirs: their
 * answers are written into wbuf by their virtual database (a kv answer arrives from a router
 * thread while the client looks idle), not by the relay that attaches blocks. */
static void release_bufs_if_idle(struct client *c)
{
	if (c->state != CLIENT_IDLE || c->kind->resident || !buf_empty(&c->rbuf) || !buf_empty(&c->wbuf) ||
	    c->c2s_scanned || c->c2s_remaining || c->s2c_scanned || c->s2c_remaining)
		return;
	buf_detach(&c->rbuf, &fe_of(c->worker)->rbufs);
	buf_detach(&c->wbuf, &fe_of(c->worker)->wbufs);
}

/* Before anything reads into or writes to the client's buffers outside the idle state. */
__attribute__((warn_unused_result)) static int attach_bufs(struct client *c)
{
	if (buf_attach(&c->rbuf, &fe_of(c->worker)->rbufs) < 0 || buf_attach(&c->wbuf, &fe_of(c->worker)->wbufs) < 0)
		return -ENOMEM;
	return 0;
}

void client_update_io(struct client *c)
{
	bool rd = false, wr;
	int want;

	release_bufs_if_idle(c);
	switch (c->state) {
	case CLIENT_STARTUP:
	case CLIENT_AUTH:
	case CLIENT_WAITING:
	case CLIENT_ACTIVE:
	case CLIENT_IDLE:
		/* detached (idle): a block is taken when bytes arrive */
		rd = !buf_attached(&c->rbuf) || buf_len(&c->rbuf) < c->rbuf.cap;
		break;
	case CLIENT_CLOSING:
		rd = true; /* drained and dropped, see client_flush */
		break;
	}
	wr = !buf_empty(&c->wbuf) || c->s2c_scanned > 0;
	if (c->tls_handshaking) /* resting while its step is queued (hs_enqueue) or away */
		want = c->tls_queued || c->tls_away ? 0 : c->tls.rd_want ? c->tls.rd_want : EV_READ;
	else
		want = tls_link_events(&c->tls, rd, wr);
	evio_watch(c->worker->loop, &c->io, c->fd, want);
	/* Records OpenSSL already holds wake no poll: go and read them now there is room. Fed
	 * after the watcher is (re)armed: stopping it would drop the event. */
	if (rd && c->tls.buffered && !c->tls_handshaking)
		ev_feed_event(c->worker->loop, &c->io, EV_READ);
}

static void link_client(struct worker *w, struct client *c)
{
	struct frontend_worker *fe = fe_of(w);
	c->prev = NULL;
	c->next = fe->clients;
	if (fe->clients)
		fe->clients->prev = c;
	fe->clients = c;
	w->nclients++;
}

static void unlink_client(struct client *c)
{
	struct worker *w = c->worker;
	if (c->prev)
		c->prev->next = c->next;
	else if (fe_of(w)->clients == c)
		fe_of(w)->clients = c->next;
	else
		return; /* not linked */
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	w->nclients--;
}

/* A client's ctx before the first one is made, or when memory ran out making it. */
static char unknown_ctx[] = "-/-@?";
static char no_name[] = ""; /* database and user before the startup packet */

/* c is closed but kept until an answer on its way arrives (client_close). */
static void keep_husk(struct client *c)
{
	struct frontend_worker *fe = fe_of(c->worker);
	c->dead = true;
	/* unlink_client took it off fe->clients: prev and next link the husks now */
	c->prev = NULL;
	c->next = fe->husks;
	if (fe->husks)
		fe->husks->prev = c;
	fe->husks = c;
}

static void free_client(struct client *c)
{
	struct frontend_worker *fe = fe_of(c->worker);
	/* a closed client's watchers were stopped; anything that started one again since (it
	 * should not) must not outlive it */
	ev_io_stop(c->worker->loop, &c->io);
	ev_timer_stop(c->worker->loop, &c->timer);
	if (c->dead) {
		if (c->prev)
			c->prev->next = c->next;
		else
			fe->husks = c->next;
		if (c->next)
			c->next->prev = c->prev;
	}
	buf_detach(&c->rbuf, &fe->rbufs);
	buf_detach(&c->wbuf, &fe->wbufs);
	session_free(&c->session);
	if (c->ctx != unknown_ctx)
		free(c->ctx);
	free(c->big);
	prep_client_free(c->prep);
	repl_free(c);
	client_auth_free(c);
	free(c->wait); /* a husk's, only if its answer never came (shutdown) */
	free(c);
}

/* The one teardown. The server, if any, goes back to the pool through a reset or is
 * closed; a client still waiting in a pool queue whose answer is already on its way is
 * kept as a "dead" husk until that answer arrives and can be given back. */
void client_close(struct client *c, const char *reason)
{
	struct worker *w = c->worker;

	if (c->dead)
		return; /* closed already, in this turn of the loop (its memory waits for reap_cb) */
	if (c->greeted && cfg_of(c)->log_disconnections)
		log_info(c->id, c->ctx, "logout after %.3fs: %s", ev_now(w->loop) - c->login_at, reason);
	else if (c->state == CLIENT_ACTIVE || c->server)
		log_info(c->id, c->ctx, "closing client connection: %s", reason);
	else
		log_debug(c->id, c->ctx, "closing client connection: %s", reason);
	ev_io_stop(w->loop, &c->io);
	ev_timer_stop(w->loop, &c->timer);
	if (c->tls_queued) {
		struct frontend_worker *fe = fe_of(w);
		for (unsigned i = fe->hs_head; i < fe->hs_len; i++)
			if (fe->hs[i] == c)
				fe->hs[i] = NULL;
		c->tls_queued = false;
	}
	relay_hooks_closed(c);
	if (c->server) {
		struct server *s = c->server;
		c->server = NULL;
		relay_release_server(c, s);
	}
	if (c->fd >= 0 && !c->tls_away) { /* away: the handshake thread's until hs_back */
		tls_link_close(&c->tls);
		close(c->fd);
		c->fd = -1;
	}
	cancel_forget(c);
	if (c->kind->closed)
		c->kind->closed(c);
	c->vdb = NULL; /* it went with the kind's session */
	unlink_client(c);
	atomic_fetch_sub_explicit(&w->rt->nclients, 1, memory_order_relaxed);
	if (c->pool_counted) {
		c->pool_counted = false;
		pool_client_leave(c->pool);
	}
	count_client(c, -1);
	fe_of(w)->gone++;
	keep_husk(c);
	if (c->tls_away)
		return; /* hs_back closes and frees it */
	if (c->queued && !client_leave_queue(c))
		return; /* on_pool_answer frees it */
	if (c->ryw_pending)
		return; /* the fetch's end frees it (client_husk_done) */
	/* Freed before the loop polls again, not here: a caller up the stack may still read c
	 * (c->dead tells it closed). */
	struct frontend_worker *fe = fe_of(w);
	c->reap_next = fe->reap;
	fe->reap = c;
	ev_prepare_start(w->loop, &fe->reap_prepare);
}

/* Before the loop polls again: the clients closed in this turn with nothing in flight. */
static void reap_cb(struct ev_loop *loop, ev_prepare *p, int revents)
{
	struct frontend_worker *fe = fe_of((struct worker *)p->data);
	(void)revents;
	while (fe->reap) {
		struct client *c = fe->reap;
		fe->reap = c->reap_next;
		free_client(c);
	}
	ev_prepare_stop(loop, p);
}

bool client_leave_queue(struct client *c)
{
	if (!pool_leave_queue(c->pool, &c->wait->w))
		return false;
	c->queued = false;
	put_wait(c);
	return true;
}

/* The length of the request at the head of c's input, whole: a Query, or an extended-protocol
 * batch (Parse, Bind, Describe, Execute, Close, Flush) through its Sync. 0 when it is not
 * all there yet, or holds anything else (COPY data, a FunctionCall). */
static size_t whole_request_len(const struct client *c)
{
	const uint8_t *p = buf_head(&c->rbuf);
	size_t avail = buf_len(&c->rbuf), off = 0;

	while (off < avail) {
		struct proto_hdr h;
		if (proto_read_hdr(p + off, avail - off, cfg_of(c)->max_message_size, &h) <= 0 ||
		    avail - off < (size_t)h.len + 1)
			return 0;
		off += (size_t)h.len + 1;
		switch (h.type) {
		case 'Q':
			return off == (size_t)h.len + 1 ? off : 0; /* a Query inside a batch: no */
		case 'S':
			return off;
		case 'P': case 'B': case 'D': case 'E': case 'C': case 'H':
			break;
		default:
			return 0;
		}
	}
	return 0;
}

int client_put_cancelled(struct client *c, const uint8_t *pre, size_t npre)
{
	char msg[128];

	snprintf(msg, sizeof msg, "tusk %s: canceling statement due to user request", c->id);
	buf_compact(&c->wbuf);
	if ((npre && buf_append(&c->wbuf, pre, npre) < 0) ||
	    proto_put_error(&c->wbuf, "ERROR", "57014", msg, NULL, NULL) < 0 || proto_put_ready(&c->wbuf, 'I') < 0)
		return -1;
	return 0;
}

bool client_cancel_wait(struct client *c)
{
	/* Queued for a server, its request not begun anywhere: PostgreSQL, asked to cancel a
	 * query waiting for a lock, ends it with 57014; so does tusk for one waiting for a
	 * server. The whole request is dropped, as a cancel that lands on its first message
	 * would (a Parse in it made no statement): the error, then ReadyForQuery; what the
	 * client sent after it is served next. Not yet all there: ignored, as before. */
	if (!c->queued || c->server || c->dead || !c->greeted || c->state != CLIENT_WAITING || c->c2s_scanned > 0 ||
	    c->c2s_remaining > 0 || c->s2c_scanned > 0 || c->s2c_remaining > 0 ||
	    !relay_hooks_quiet(c) /* a feature holds something of it: the cache's flight it leads */)
		return false;
	size_t len = whole_request_len(c);
	if (len == 0 || !client_leave_queue(c)) /* (the pool's answer is on its way: it runs) */
		return false;
	buf_consume(&c->rbuf, len);
	log_info(c->id, c->ctx, "client asked to cancel its query while waiting for a server: cancelled");
	if (client_put_cancelled(c, NULL, 0) < 0) {
		client_close(c, "no room for the cancel's error");
		return true;
	}
	client_go_idle(c);
	return true;
}

void client_husk_done(struct client *c)
{
	if (!c->queued && !c->ryw_pending)
		free_client(c);
}

/* Append an ErrorResponse whose message names the client, then close once it is flushed. */
void client_fail(struct client *c, const char *sqlstate, const char *fmt, ...)
{
	char text[512], message[600];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	snprintf(message, sizeof message, "tusk %s: %s", c->id, text);
	log_info(c->id, c->ctx, "closing client connection: %s (%s)", text, sqlstate);
	if (c->tls_handshaking) { /* mid-handshake (here or on another thread): no way to say it */
		client_close(c, text);
		return;
	}
	if (c->server) {
		struct server *s = c->server;
		c->server = NULL;
		relay_release_server(c, s);
	}
	/* A half-relayed server message cannot be followed by one of ours: just close. An idle
	 * client gets a write buffer back for its error (without one, it just goes). */
	if (c->s2c_remaining == 0 && c->s2c_scanned == 0 && buf_attach(&c->wbuf, &fe_of(c->worker)->wbufs) == 0) {
		(void)proto_put_error(&c->wbuf, "FATAL", sqlstate, message, NULL, NULL);
		stats_count_error(c->worker->rt->stats, sqlstate);
	}
	c->s2c_scanned = 0;
	client_set_state(c, CLIENT_CLOSING);
	client_flush(c);
}

/* Write tusk's own bytes. 0, or -1 when the client is gone (not closed here). */
int client_write_wbuf(struct client *c)
{
	while (!buf_empty(&c->wbuf)) {
		ssize_t n = tls_link_write(c->fd, &c->tls, buf_head(&c->wbuf), buf_len(&c->wbuf));
		if (n > 0) {
			buf_consume(&c->wbuf, (size_t)n);
			if (c->pool) /* stats */
				stats_add_sent(pool_stats(c->pool), (uint64_t)n);
			continue;
		}
		if (n == -EAGAIN)
			return 0;
		return -1;
	}
	return 0;
}

/* Flush in CLOSING. Closing a socket that still has unread input makes the kernel send a
 * RST, and the client may then lose the error we just wrote; so once the error is out we
 * half-close, and drop whatever the client still sends until it closes its side (or the
 * linger timer fires). */
void client_flush(struct client *c)
{
	if (client_write_wbuf(c) < 0) {
		client_close(c, "client went away");
		return;
	}
	if (buf_empty(&c->wbuf) && !c->shut_wr) {
		c->shut_wr = true;
		/* On TLS: close_notify, then whatever the client still sends is dropped unread. */
		tls_link_close(&c->tls);
		if (shutdown(c->fd, SHUT_WR) < 0) {
			client_close(c, "closed after error");
			return;
		}
	}
	client_update_io(c);
}

static void drain_closing(struct client *c)
{
	uint8_t scratch[4096];
	for (int i = 0; i < 16; i++) {
		ssize_t n = tls_link_read(c->fd, &c->tls, scratch, sizeof scratch);
		if (n > 0)
			continue;
		if (n == -EAGAIN)
			return;
		client_close(c, "closed after error");
		return;
	}
}

void client_peer(const struct client *c, struct net_addr *out)
{
	memset(out, 0, sizeof *out);
	switch (c->peer.sa.sa_family) {
	case AF_INET: out->len = sizeof c->peer.in; break;
	case AF_INET6: out->len = sizeof c->peer.in6; break;
	default: out->len = sizeof c->peer.sa.sa_family; break;
	}
	memcpy(&out->sa, &c->peer, out->len);
}

/* Sized to fit, with the database and user names after it: fixed arrays would be most of
 * what an idle client costs. NULL database: not known yet ("-/-@addr"). 0 or -ENOMEM (the
 * previous context and names stay). */
static int format_ctx(struct client *c, const char *database, const char *user)
{
	char addr[NET_ADDR_STR_MAX], buf[192];
	struct net_addr peer;
	client_peer(c, &peer);
	net_addr_str(&peer, addr, sizeof addr);
	if (database)
		log_ctx_format(buf, sizeof buf, database, user, addr);
	else
		snprintf(buf, sizeof buf, "-/-@%s", addr);
	size_t cl = strlen(buf) + 1, dl = database ? strlen(database) + 1 : 0, ul = database ? strlen(user) + 1 : 0;
	char *p = malloc(cl + dl + ul);
	if (!p)
		return -ENOMEM;
	memcpy(p, buf, cl);
	if (database) {
		memcpy(p + cl, database, dl);
		memcpy(p + cl + dl, user, ul);
		c->database = p + cl;
		c->user = p + cl + dl;
	}
	if (c->ctx != unknown_ctx)
		free(c->ctx);
	c->ctx = p;
	return 0;
}

void client_accept(struct worker *w, int fd, const struct net_addr *peer, const char *listener)
{
	struct runtime *rt = w->rt;

	if (peer->sa.ss_family != AF_UNIX) {
		struct tls_ctx *tls;
		const struct config_listen *l = runtime_find_listen(rt, listener, &tls);
		if (l && l->protocol != CONFIG_LISTEN_POSTGRES) {
			if (l->protocol < CLIENT_PROTOCOLS_MAX && protocol_accept[l->protocol])
				protocol_accept[l->protocol](w, fd, peer, l, tls);
			else
				close(fd);
			return;
		}
	}
	int now = atomic_fetch_add_explicit(&rt->nclients, 1, memory_order_relaxed);
	struct client *c = calloc(1, sizeof *c);

	if (!c)
		goto err_close_fd;
	if (buf_attach(&c->rbuf, &fe_of(w)->rbufs) < 0 || buf_attach(&c->wbuf, &fe_of(w)->wbufs) < 0)
		goto err_free_client;
	id_make(c->id, 'c');
	c->serial = atomic_fetch_add_explicit(&rt->next_client_serial, 1, memory_order_relaxed) + 1;
	c->worker = w;
	c->kind = &pooled_kind; /* until its startup packet names a registered kind */
	c->fd = fd;
	/* net_accept filled at most what the family needs: a Unix peer's path is not kept */
	memcpy(&c->peer, &peer->sa, peer->len < sizeof c->peer ? peer->len : sizeof c->peer);
	c->database = c->user = no_name;
	c->listen = peer->sa.ss_family == AF_UNIX ? NULL : runtime_find_listen(rt, listener, &c->listen_tls);
	c->connect_time = ev_now(w->loop);
	c->ctx = unknown_ctx;
	(void)format_ctx(c, NULL, NULL); /* on failure unknown_ctx stays */
	ev_init(&c->io, client_io_cb);
	c->io.data = c;
	ev_init(&c->timer, client_timer_cb);
	c->timer.data = c;
	link_client(w, c);
	log_debug(c->id, c->ctx, "accepted");
	c->state = CLIENT_STARTUP;
	client_set_state(c, CLIENT_STARTUP);
	if (now >= rt->cfg->max_client_connections) {
		client_fail(c, "53300", "too many client connections (max_client_connections is %d)",
			    rt->cfg->max_client_connections);
		return;
	}
	return;

err_free_client:
	buf_detach(&c->rbuf, &fe_of(w)->rbufs);
	buf_detach(&c->wbuf, &fe_of(w)->wbufs);
	free(c);
err_close_fd:
	atomic_fetch_sub_explicit(&rt->nclients, 1, memory_order_relaxed);
	log_error(NULL, NULL, "out of memory accepting a client");
	close(fd);
}

/* ---- startup ---- */

static bool valid_guc_name(const char *s)
{
	if (!*s || strlen(s) >= 64)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_' ||
		      *s == '.'))
			return false;
	return true;
}

/* Keep one parameter for the SETs that apply it on every server the client gets. A second
 * DateStyle combines with the first as the server combines them. */
static int add_param(struct client *c, const char *name, const char *value)
{
	const char *prev = session_param_get(&c->session, name);
	char merged[64];
	if (prev && strcasecmp(name, "DateStyle") == 0 && session_datestyle_merge(prev, value, merged, sizeof merged))
		value = merged;
	return session_param_set(&c->session, name, value) < 0 ? -1 : 0;
}

/* "-c name=value" and "--name=value" from the startup "options" parameter, with backslash
 * escapes for spaces as libpq documents. Returns 0, or -1 for anything else. */
static int add_options(struct client *c, const char *opts)
{
	char tok[1024];
	bool want_c_value = false;

	while (*opts) {
		while (*opts == ' ' || *opts == '\t')
			opts++;
		if (!*opts)
			break;
		size_t n = 0;
		while (*opts && *opts != ' ' && *opts != '\t') {
			if (*opts == '\\' && opts[1])
				opts++;
			if (n + 1 >= sizeof tok)
				return -1;
			tok[n++] = *opts++;
		}
		tok[n] = '\0';
		const char *assign = NULL;
		if (want_c_value) {
			assign = tok;
			want_c_value = false;
		} else if (strcmp(tok, "-c") == 0) {
			want_c_value = true;
			continue;
		} else if (strncmp(tok, "-c", 2) == 0) {
			assign = tok + 2;
		} else if (strncmp(tok, "--", 2) == 0) {
			assign = tok + 2;
		} else {
			return -1;
		}
		char *eq = strchr(assign, '=');
		if (!eq)
			return -1;
		*eq = '\0';
		for (char *p = (char *)assign; *p; p++)
			if (*p == '-')
				*p = '_';
		if (!valid_guc_name(assign) || add_param(c, assign, eq + 1) < 0)
			return -1;
	}
	return want_c_value ? -1 : 0;
}

/* application_name_add_host (PgBouncer's): "NAME - ADDR:PORT" ("app" when none was given),
 * so that pg_stat_activity and the server's logs tell where a query came from. */
static int add_host_to_app_name(struct client *c)
{
	const char *app = session_param_get(&c->session, "application_name");
	struct net_addr peer;
	char addr[NET_ADDR_STR_MAX], name[512];
	client_peer(c, &peer);
	net_addr_str(&peer, addr, sizeof addr);
	snprintf(name, sizeof name, "%s - %s", app && app[0] ? app : "app", addr);
	return add_param(c, "application_name", name) < 0 ? -ENOMEM : 0;
}

static int keep_startup(struct client *c, const struct proto_startup *st)
{
	const char *database = st->database && st->database[0] ? st->database : st->user;
	int rc;
	if (strlen(st->user) >= CONFIG_NAME_MAX || strlen(database) >= CONFIG_NAME_MAX)
		return -ENAMETOOLONG;
	if (format_ctx(c, database, st->user) < 0)
		return -ENOMEM;
	/* PostgreSQL applies "options" first, then the other parameters in the packet's order,
	 * each over what came before (pgjdbc's DateStyle=ISO over an options -c DateStyle). */
	for (int i = 0; i < st->nparams; i++)
		if (strcmp(st->params[i].name, "options") == 0 && add_options(c, st->params[i].value) < 0)
			return -EINVAL;
	for (int i = 0; i < st->nparams; i++) {
		const char *name = st->params[i].name, *value = st->params[i].value;
		if (strcmp(name, "user") == 0 || strcmp(name, "database") == 0 || strncmp(name, "_pq_.", 5) == 0 ||
		    strcmp(name, "options") == 0)
			continue;
		if (strcmp(name, "replication") == 0) {
			int mode = repl_mode_of(value);
			if (mode < 0)
				return -EPROTONOSUPPORT;
			if (mode == REPL_NONE)
				repl_free(c); /* the last of several counts, as in PostgreSQL */
			else if ((rc = repl_keep_startup(c, st, (enum repl_mode)mode)) < 0)
				return rc;
			continue;
		}
		if (!valid_guc_name(name) || add_param(c, name, value) < 0)
			return -EINVAL;
	}
	if (cfg_of(c)->application_name_add_host && !c->repl)
		return add_host_to_app_name(c);
	return 0;
}

/* The connection and its TLS session go to cancel_forward, which ends them once the owner
 * of the key has decided; the client closes without them. */
static void on_cancel_request(struct client *c, const struct proto_startup *st)
{
	struct worker *w = c->worker;
	uint32_t pid = st->cancel_pid, key = st->cancel_key;
	int fd = c->fd;
	struct tls_conn *tls = c->tls.conn;

	ev_io_stop(w->loop, &c->io);
	c->fd = -1;
	c->tls = (struct tls_link){ 0 };
	client_close(c, "cancel request handled"); /* frees c, and st with it */
	cancel_forward(w, pid, key, fd, tls);
}

/* A client asking for a newer 3.x minor or for protocol options ("_pq_.*") hears, as from
 * PostgreSQL, that tusk speaks 3.0 and knows none of them; the session goes on in 3.0 (the
 * client decides whether that is enough). 0, or -1 when the client was failed. */
static int negotiate_version(struct client *c, const struct proto_startup *st)
{
	const char *unknown[PROTO_STARTUP_MAX_PARAMS];
	int n = 0;

	for (int i = 0; i < st->nparams; i++)
		if (strncmp(st->params[i].name, "_pq_.", 5) == 0)
			unknown[n++] = st->params[i].name;
	if ((st->version & 0xffff) == 0 && n == 0)
		return 0;
	log_debug(c->id, c->ctx, "client asked for protocol 3.%u with %d protocol option(s): offering 3.0",
		  st->version & 0xffff, n);
	if (proto_put_negotiate_version(&c->wbuf, 0, unknown, n) < 0) {
		client_fail(c, "54000", "NegotiateProtocolVersion too large for the client buffer");
		return -1;
	}
	return 0;
}

static void on_startup(struct client *c, const struct proto_startup *st)
{
	int rc = keep_startup(c, st);

	if (rc == -ENOMEM) {
		client_fail(c, "53200", "out of memory");
		return;
	}
	if (rc == -EPROTONOSUPPORT) {
		client_fail(c, "22023", "invalid value for parameter \"replication\" (false, 0, true, 1 or database)");
		return;
	}
	if (rc == -ENAMETOOLONG) {
		client_fail(c, "08P01", "user or database name too long");
		return;
	}
	if (rc < 0) {
		client_fail(c, "08P01", "invalid startup parameters (unsupported options or parameter name)");
		return;
	}
	if (negotiate_version(c, st) < 0)
		return;
	if (listen_tls_mode(c) >= CONFIG_TLS_REQUIRE && !c->tls.conn) {
		client_fail(c, "28000", "TLS is required on this listener (connect with sslmode=require)");
		return;
	}
	if (listen_tls_mode(c) == CONFIG_TLS_VERIFY_FULL) {
		char cn[CONFIG_NAME_MAX];
		if (!tls_peer_cn(c->tls.conn, cn, sizeof cn) || strcmp(cn, c->user) != 0) {
			client_fail(c, "28000", "certificate authentication failed for user \"%s\": the client certificate's CN does not match", c->user);
			return;
		}
	}
	/* Chosen once: a virtual database (the admin console, kv) answers the client itself; a
	 * replication connection gets a server of its own. */
	c->kind = client_kind_of(cfg_of(c), c->database);
	if (c->repl) {
		if (c->kind != &pooled_kind) {
			client_fail(c, "08P01", "database \"%s\" (%s) takes no replication connections", c->database,
				    c->kind->name);
			return;
		}
		c->kind = &repl_kind;
	}
	if (client_auth_wait_name(c))
		return; /* its host name first (hba_file): the lookup's answer calls the kind's startup */
	c->kind->startup(c);
}

/* max_db_client_connections / max_user_client_connections (PgBouncer's), counted from here
 * to client_close, before authentication as in PgBouncer; the limit is that of c's rule.
 * 0, or -1 when c was failed: 53300, PostgreSQL's code for "too many connections for
 * database/role" (PgBouncer sends its catch-all 08P01). */
static int count_in_pool(struct client *c, const struct config_pool_rule *rule)
{
	const struct tusk_config *cfg = cfg_of(c);
	int db_max = config_max_db_client_connections(cfg, rule), user_max = config_max_user_client_connections(cfg, rule);
	int count;
	switch (pool_client_enter(c->pool, db_max, user_max, &count)) {
	case POOL_CLIENT_IN:
		c->pool_counted = true;
		return 0;
	case POOL_CLIENT_DB_FULL:
		client_fail(c, "53300", "too many client connections for database \"%s\" (%d; max_db_client_connections is %d)",
			    c->database, count, db_max);
		return -1;
	case POOL_CLIENT_USER_FULL:
		client_fail(c, "53300", "too many client connections for user \"%s\" (%d; max_user_client_connections is %d)",
			    c->user, count, user_max);
		return -1;
	}
	return 0;
}

const struct config_pool_rule *client_take_rule(struct client *c)
{
	const struct config_pool_rule *rule = config_match_pool(cfg_of(c), c->database, c->user);
	if (!rule) {
		client_fail(c, "28000", "no pool rule matches database \"%s\" and user \"%s\"", c->database, c->user);
		return NULL;
	}
	c->pool = pool_get(c->worker->rt, rule, c->database, c->user);
	if (!c->pool && pool_registry_full(c->worker->rt)) {
		client_fail(c, "53300", "too many pools: no new pool for database \"%s\" and user \"%s\"", c->database, c->user);
		return NULL;
	}
	if (!c->pool) {
		client_fail(c, "53200", "out of memory");
		return NULL;
	}
	if (rule->blocked) {
		client_fail(c, "28000", "user \"%s\" is blocked for database \"%s\"", c->user, c->database);
		return NULL;
	}
	if (pool_database_disabled(c->worker->rt, c->database)) {
		client_fail(c, "55000", "database \"%s\" is not currently accepting connections (DISABLE)", c->database);
		return NULL;
	}
	if (count_in_pool(c, rule) < 0)
		return NULL;
	return rule;
}

/* The pooled kind's startup: the pool rule, its pool, and the rule's authentication. */
static void pooled_startup(struct client *c)
{
	const struct config_pool_rule *rule = client_take_rule(c);
	if (!rule)
		return;
	relay_hooks_refresh(c); /* the pool rule's features */
	c->mode = rule->mode;
	c->prep_on = c->mode != POOL_MODE_SESSION && cfg_of(c)->max_prepared_statements > 0;
	if (client_auth_begin(c, rule->client_auth, pool_rule(c->pool), c->database))
		client_after_auth(c);
}

void client_after_auth(struct client *c)
{
	if (client_auth_cert_name_ok(c))
		c->kind->begin(c);
}

/* wbuf written while idle: the rest of a cached answer larger than it, and then what the
 * client sent behind that answer. */
static bool pooled_writable(struct client *c)
{
	if (relay_hooks_writable(c)) {
		client_update_io(c);
		client_need_server(c); /* what the client sent behind a cached answer */
		return true;
	}
	client_update_io(c);
	return false;
}

int client_mint_cancel_key(struct client *c)
{
	/* The key the client will cancel with; random so that it cannot be guessed. */
	if (RAND_bytes((unsigned char *)&c->cancel_pid, sizeof c->cancel_pid) != 1 ||
	    RAND_bytes((unsigned char *)&c->cancel_key, sizeof c->cancel_key) != 1) {
		client_fail(c, "58000", "could not generate a cancel key");
		return -1;
	}
	c->cancel_pid &= 0x7fffffff; /* some drivers treat the pid as a signed int */
	if (cancel_register(c) < 0) {
		client_fail(c, "53200", "out of memory");
		return -1;
	}
	return 0;
}

/* The pooled kind, authenticated: mint the cancel key and look for a server. */
static void pooled_begin(struct client *c)
{
	if (client_mint_cancel_key(c) < 0)
		return;
	log_debug(c->id, c->ctx, "startup done, asking pool for a server");
	client_set_state(c, CLIENT_WAITING);
	start_claim(c);
}

static void read_startup_phase(struct client *c);
static void tls_settled(struct client *c, int rc);

static bool hs_hand_over(struct client *c);

/* A step of the handshake on the worker: all of it without handshake threads; with them, a
 * resumption (a ticket that opened: no signature, cheaper here than the hand-over and back) and
 * the ClientHello of a full handshake, whose signature and the rest go to a thread (start_tls). */
static void tls_step(struct client *c)
{
	int want = 0;
	int rc = tls_handshake(c->tls.conn, &want);

	if (rc == -EAGAIN) {
		c->tls.rd_want = (uint8_t)want;
		client_update_io(c);
		return;
	}
	if (rc == -EINPROGRESS) { /* a full handshake: on a thread, or here if none takes it */
		if (!hs_hand_over(c))
			tls_step(c);
		return;
	}
	if (rc == 0)
		worker_tls_note_kept(c->worker, c->tls.conn);
	tls_settled(c, rc);
}

/* When startup must be over: client_login_timeout from accept. */
static double login_deadline(const struct client *c)
{
	return c->connect_time + (double)cfg_of(c)->client_login_timeout_ms / 1000.0;
}

/* Back on the worker from the handshake thread (hs_hand_over): fd and tls.conn are the
 * worker's again. A client closed meanwhile was kept as a husk for this moment. */
static void hs_back(struct worker *w, struct worker_msg *m)
{
	struct client *c = m->arg;

	c->tls_away = false;
	if (c->dead) {
		tls_link_close(&c->tls);
		close(c->fd);
		c->fd = -1;
		free_client(c);
		return;
	}
	if (m->num == -ETIMEDOUT) {
		log_info(c->id, c->ctx, "TLS handshake not done within client_login_timeout");
		client_close(c, "TLS handshake timed out");
		return;
	}
	double left = login_deadline(c) - ev_now(w->loop);
	arm_timer(c, left > 0.001 ? left : 0.001); /* the rest of the login's time */
	tls_settled(c, m->num);
}

/* Hand the rest of a full handshake (its ClientHello read) to a handshake thread (rt->tls_hs),
 * so that no signature or key exchange runs on this worker, which relays for the clients
 * already logged in. false: there is none, or no memory: the worker runs it. The login
 * deadline is the thread's while it has the handshake (one clock, one log line). */
static bool hs_hand_over(struct client *c)
{
	struct worker *w = c->worker;
	if (!worker_tls_hand_over(w, c->tls.conn, c->fd, login_deadline(c), hs_back, c))
		return false;
	evio_watch(w->loop, &c->io, c->fd, 0);
	ev_timer_stop(w->loop, &c->timer);
	c->tls_away = true;
	return true;
}

/* Handshake done (rc 0): log what was agreed; bytes of the startup packet may have come with
 * it. Or failed (rc < 0). */
static void tls_settled(struct client *c, int rc)
{
	if (rc < 0) {
		log_info(c->id, c->ctx, "TLS handshake failed: %s", tls_conn_error(c->tls.conn));
		client_close(c, "TLS handshake failed");
		return;
	}
	c->tls_handshaking = false;
	c->tls.rd_want = 0;
	log_debug(c->id, c->ctx, "TLS established: %s %s", tls_version(c->tls.conn), tls_cipher(c->tls.conn));
	c->tls.buffered = true; /* application data may have come with the last flight */
	read_startup_phase(c);
}

/* The handshake's next step is ready (its socket is): queue it, to run after the loop
 * iteration's other events (hs_prepare_cb); the client's watcher rests meanwhile. */
static void hs_enqueue(struct client *c)
{
	struct worker *w = c->worker;
	struct frontend_worker *fe = fe_of(w);

	if (c->tls_queued)
		return;
	if (fe->hs_len == fe->hs_cap && fe->hs_head > 0) {
		memmove(fe->hs, fe->hs + fe->hs_head, (fe->hs_len - fe->hs_head) * sizeof *fe->hs);
		fe->hs_len -= fe->hs_head;
		fe->hs_head = 0;
	}
	if (fe->hs_len == fe->hs_cap) {
		unsigned cap = fe->hs_cap ? 2 * fe->hs_cap : 16;
		struct client **hs = realloc(fe->hs, cap * sizeof *hs);
		if (!hs) {
			tls_step(c); /* no room to wait: now, as before */
			return;
		}
		fe->hs = hs;
		fe->hs_cap = cap;
	}
	fe->hs[fe->hs_len++] = c;
	c->tls_queued = true;
	evio_watch(w->loop, &c->io, c->fd, 0);
	ev_prepare_start(w->loop, &fe->hs_prepare);
	ev_idle_start(w->loop, &fe->hs_idle);
}

/* Before the loop polls again: the oldest queued handshake steps, CLIENT_HANDSHAKES_PER_TURN
 * of them; every event of the iteration (relayed clients' bytes) went first. */
static void hs_prepare_cb(struct ev_loop *loop, ev_prepare *p, int revents)
{
	struct worker *w = p->data;
	struct frontend_worker *fe = fe_of(w);
	(void)revents;

	for (int done = 0; done < CLIENT_HANDSHAKES_PER_TURN && fe->hs_head < fe->hs_len;) {
		struct client *c = fe->hs[fe->hs_head++];
		if (!c)
			continue; /* closed while queued */
		c->tls_queued = false;
		tls_step(c);
		done++;
	}
	if (fe->hs_head == fe->hs_len) {
		fe->hs_head = fe->hs_len = 0;
		ev_prepare_stop(loop, &fe->hs_prepare);
		ev_idle_stop(loop, &fe->hs_idle);
	}
}

/* After an SSLRequest ('S' answered) or a first byte that opens a TLS handshake (direct TLS,
 * PostgreSQL 17's sslnegotiation=direct). */
static void start_tls(struct client *c, bool direct)
{
	struct tls_ctx *ctx = c->listen_tls;

	if (c->tls.conn || c->greeted) {
		client_fail(c, "08P01", "SSLRequest received on an encrypted connection");
		return;
	}
	if (!direct) {
		/* An SSLRequest: anything the client sent after it would be plaintext that an
		 * attacker could have injected before the handshake (CVE-2021-23214). */
		if (!buf_empty(&c->rbuf)) {
			client_fail(c, "08P01", "received unencrypted data after SSL request");
			return;
		}
		static const char yes = 'S';
		if (write(c->fd, &yes, 1) != 1) {
			client_close(c, "write to client failed");
			return;
		}
	}
	c->tls_probed = true;
	c->tls.conn = tls_conn_new(ctx, c->fd, true, NULL);
	if (!c->tls.conn) {
		client_fail(c, "53200", "out of memory starting TLS");
		return;
	}
	c->tls_handshaking = true;
	/* With handshake threads, the worker reads the ClientHello and keeps only a resumption (a
	 * ticket that opened); a full handshake stops before it signs and goes to a thread
	 * (tls_step), also when its ticket did not open, so that no client can push a signature
	 * onto the worker. The worker never blocks on the hello: a client that sends part of one
	 * waits on the loop, under its login timer. */
	worker_tls_defer_full(c->worker, c->tls.conn);
	hs_enqueue(c);
}

/* A Terminate where the startup packet belongs (node-postgres's connect(); end()): the
 * client is leaving, and PostgreSQL and PgBouncer let it go without a word (0x58 as a
 * startup length's high byte is no packet either). 1 when rbuf starts with one, 0 when it
 * may still, -1 when it does not. */
static int terminate_before_startup(const struct client *c)
{
	static const uint8_t terminate[PROTO_HDR_LEN] = { 'X', 0, 0, 0, 4 };
	size_t n = buf_len(&c->rbuf) < PROTO_HDR_LEN ? buf_len(&c->rbuf) : PROTO_HDR_LEN;
	if (n == 0 || memcmp(buf_head(&c->rbuf), terminate, n) != 0)
		return -1;
	return n == PROTO_HDR_LEN ? 1 : 0;
}

static void handle_startup_input(struct client *c)
{
	if (client_auth_name_pending(c))
		return; /* the startup packet is read: what follows waits for the host name */
	for (;;) {
		struct proto_startup st;
		int term = terminate_before_startup(c);
		if (term >= 0) {
			if (term > 0)
				client_close(c, "client sent Terminate before the startup packet");
			return;
		}
		ssize_t n = proto_parse_startup(buf_head(&c->rbuf), buf_len(&c->rbuf), &st);
		if (n == 0)
			return;
		if (n < 0) {
			client_fail(c, "08P01", "invalid startup packet: %s", proto_strerror((int)n));
			return;
		}
		switch (st.kind) {
		case PROTO_STARTUP_SSL:
			buf_consume(&c->rbuf, (size_t)n);
			if (listen_tls_mode(c) != CONFIG_TLS_DISABLE) {
				start_tls(c, false);
				return;
			}
			/* no TLS here: 'N' as for GSSAPI */
			__attribute__((fallthrough));
		case PROTO_STARTUP_GSSENC:
			/* No encryption: 'N' tells the client to go on in plaintext (or give up). */
			if (st.kind == PROTO_STARTUP_GSSENC)
				buf_consume(&c->rbuf, (size_t)n);
			if (buf_append(&c->wbuf, "N", 1) < 0 || client_write_wbuf(c) < 0) {
				client_close(c, "write failed");
				return;
			}
			continue;
		case PROTO_STARTUP_CANCEL:
			on_cancel_request(c, &st);
			return;
		case PROTO_STARTUP_MESSAGE:
			/* Consume first: on_startup may link a server at once and start relaying
			 * whatever follows in rbuf. st still points at the bytes, which stay put
			 * until the next read. */
			buf_consume(&c->rbuf, (size_t)n);
			on_startup(c, &st);
			return;
		}
	}
}

/* ---- getting a server ---- */

static void start_claim(struct client *c);

static const char *lookup_server_param(const void *server, const char *name)
{
	return server_param(server, name);
}

/* After the first server took the client's startup parameters: the ones it reports are
 * tracked from now on through ParameterStatus; the ones it does not report (search_path,
 * work_mem, ...) become carried SETs like any the client issues later. */
static int settle_startup_session(struct client *c, struct server *s)
{
	struct session_state *st = &c->session;
	struct session_state fresh = { 0 };
	size_t it = 0, nlen = 0;
	const char *name, *value;
	char names[4096]; /* the reported ones the startup packet gave, "name\0" each */
	int rc = 0;

	while (rc == 0 && session_param_next(st, &it, &name, &value)) {
		/* As the server spells it: a RESET tells the client the startup value under that
		 * name, which drivers look up as the server reports it ("TimeZone"). */
		const char *reported = server_param_name(s, name);
		if (reported) {
			size_t l = strlen(reported) + 1;
			if (nlen + l < sizeof names) { /* past it: RESET goes to the server's default */
				memcpy(names + nlen, reported, l);
				nlen += l;
			}
			continue;
		}
		if (strcasecmp(name, "search_path") == 0 && strcasestr(value, "pg_catalog") && c->mode != POOL_MODE_SESSION) {
			/* It may put a schema of the client's before the built-ins (see relay.c). */
			c->pinned = true;
			log_info(c->id, c->ctx, "pinned to server %s for the session: startup search_path names pg_catalog",
				 s->id);
		}
		char stmt[2048];
		size_t pos = 0;
		/* set_config, as session_build_sync uses: it parses values like startup does. */
		strcpy(stmt, "SELECT set_config(");
		pos = strlen(stmt);
		if (session_put_literal(stmt, sizeof stmt, &pos, name) < 0 || pos + 2 >= sizeof stmt)
			return -E2BIG;
		memcpy(stmt + pos, ", ", 3);
		pos += 2;
		if (session_put_literal(stmt, sizeof stmt, &pos, value) < 0 || pos + 8 >= sizeof stmt)
			return -E2BIG;
		memcpy(stmt + pos, ", false)", 9);
		pos += 8;
		rc = session_pending_set(st, name, stmt, pos);
	}
	if (rc < 0)
		return rc;
	session_commit(st);
	/* The client's view of reported parameters is now exactly the server's. */
	for (int i = 0; i < s->nparams && rc == 0; i++)
		if (!session_param_read_only(s->params[i].name))
			rc = session_param_set(&fresh, s->params[i].name, s->params[i].value);
	if (rc < 0) {
		session_free(&fresh);
		return rc;
	}
	session_params_take(st, &fresh);
	names[nlen] = '\0';
	rc = session_startup_keep(st, names);
	s->carry_hash = st->carry_hash;
	return rc;
}

int client_put_greeting(struct client *c, const struct server *s)
{
	struct buf *b = &c->wbuf;
	bool ok = proto_put_auth_ok(b) == 0;
	for (int i = 0; ok && i < s->nparams; i++)
		ok = proto_put_parameter_status(b, s->params[i].name, s->params[i].value) == 0;
	ok = ok && proto_put_backend_key(b, c->cancel_pid, c->cancel_key) == 0;
	ok = ok && proto_put_ready(b, 'I') == 0;
	if (!ok) {
		client_fail(c, "54000", "startup reply too large for the client buffer");
		return -1;
	}
	return 0;
}

/* The greeting (client_put_greeting). Then a session-pooled client keeps the server; the
 * others give it back until they ask again. */
static void greet(struct client *c, struct server *s)
{
	if (client_put_greeting(c, s) < 0)
		return;
	if (settle_startup_session(c, s) < 0) {
		client_fail(c, "54000", "startup parameters too large");
		return;
	}
	session_params_share(&c->session, &fe_of(c->worker)->params);
	c->greeted = true;
	c->login_at = ev_now(c->worker->loop);
	for (int i = 0; i < s->nparams; i++)
		relay_note_param(c, s->params[i].name, s->params[i].value);
	if (cfg_of(c)->log_connections)
		log_info(c->id, c->ctx, "login: %s mode, server %s", config_pool_mode_name(c->mode), s->id);
	log_debug(c->id, c->ctx, "logged in");
	if (c->mode == POOL_MODE_SESSION || c->pinned) {
		relay_start(c, s);
		return;
	}
	c->server = NULL;
	s->last_owner = c->serial;
	s->idle_since = ev_now(c->worker->loop);
	pool_put_idle(s->pool, s);
	client_go_idle(c);
}

static void use_server(struct client *c, struct server *s);
static void use_server_now(struct client *c, struct server *s);
static void claim(struct client *c);
static void claim_primary(struct client *c);

/* An ErrorResponse ('E', length, fields) at login: its severities S and V read FATAL. */
static void login_error_fatal(uint8_t *msg, size_t len)
{
	for (size_t i = 5; i < len && msg[i]; i++) {
		uint8_t field = msg[i++];
		size_t end = i;
		while (end < len && msg[end])
			end++;
		if ((field == 'S' || field == 'V') && end - i == 5 && memcmp(msg + i, "ERROR", 5) == 0)
			memcpy(msg + i, "FATAL", 5);
		i = end;
	}
}

static void on_session_applied(struct server *s, void *arg, int err, const char *reason, const uint8_t *errmsg,
			       size_t errlen)
{
	struct client *c = arg;
	if (err == 0) {
		c->server = s;
		if (!c->greeted)
			greet(c, s);
		else
			relay_start(c, s);
		return;
	}
	c->server = NULL;
	if (s->ok_after_error && errmsg) {
		/* The server rejected a parameter: the client sees the server's own error, as it
		 * would have at login (there FATAL, as PostgreSQL says it: the set_config's ERROR
		 * has the same length). The implicit transaction rolled the SETs back: s is clean. */
		uint8_t fatal[1024];
		if (!c->greeted && errlen <= sizeof fatal) {
			memcpy(fatal, errmsg, errlen);
			login_error_fatal(fatal, errlen);
			errmsg = fatal;
			log_info(c->id, c->ctx, "login refused: the server rejected a startup parameter");
		}
		if (buf_append(&c->wbuf, errmsg, errlen) < 0)
			log_warn(c->id, c->ctx, "server error too large to pass on");
		else
			client_count_error(c, errmsg, errlen);
		relay_release_server(c, s);
		client_set_state(c, CLIENT_CLOSING);
		client_flush(c);
		return;
	}
	if (s->ok_after_error)
		relay_release_server(c, s);
	client_fail(c, "08006", "server connection failed: %s", reason ? reason : "unknown error");
}

static void on_reset_all(struct server *s, void *arg, int err, const char *reason, const uint8_t *errmsg,
			 size_t errlen)
{
	struct client *c = arg;
	if (err == 0 && s->tx_status != 'I') {
		c->server = NULL;
		server_close(s, "connect_query left the server inside a transaction");
		client_fail(c, "08006", "server connection failed: connect_query left it inside a transaction");
		return;
	}
	if (err == 0) {
		s->carry_hash = 0;
		if (!c->greeted && s->params_hash != s->login_params_hash) {
			/* RESET ALL restores every reported setting tusk can set; one that did not
			 * come back would be another client's, so this server greets nobody. */
			char sid[ID_LEN];
			memcpy(sid, s->id, ID_LEN); /* server_close frees s */
			c->server = NULL;
			server_close(s, "reported parameters still differ from the login's after RESET ALL");
			client_fail(c, "08006", "server %s could not be brought back to the database's defaults", sid);
			return;
		}
		use_server_now(c, s);
		return;
	}
	on_session_applied(s, arg, err, reason, errmsg, errlen);
}

/* s is idle and attached to our loop: an attach hook may take it first (read-your-writes
 * asks a standby how far it replayed), else use_server_now. */
static void use_server(struct client *c, struct server *s)
{
	if (relay_hooks_attach(c, s))
		return; /* client_attach_resume follows */
	use_server_now(c, s);
}

void client_resync(struct client *c, struct server *s, const char *list)
{
	c->server = s;
	/* Not a Query: the client's unnamed statement, which it may bind again, stays. */
	server_run_statements(s, list, (double)cfg_of(c)->server_connect_timeout_ms / 1000.0, on_session_applied, c);
}

void client_attach_resume(struct client *c, struct server *s)
{
	if (s)
		use_server_now(c, s);
	else
		claim_primary(c);
}

/* Make s look like the client's session (SETs for what differs), then greet or relay. A
 * server still carrying another client's unreported settings is wiped with RESET ALL first. */
static void use_server_now(struct client *c, struct server *s)
{
	char sets[16384];
	double timeout = (double)cfg_of(c)->server_connect_timeout_ms / 1000.0;

	c->server = s;
	/* A client that logs in starts from the database's defaults plus its own startup
	 * parameters, never from what the server's last client left it with (that client's
	 * SETs, and reported parameters it changed in any way): the greeting tells the new
	 * client the server's values, and it would adopt them. */
	if ((s->carry_hash != 0 && s->carry_hash != c->session.carry_hash) ||
	    (!c->greeted && s->params_hash != s->login_params_hash)) {
		const char *q[2] = { "RESET ALL", server_connect_query(s) };
		server_run_queries(s, q, q[1] ? 2 : 1, timeout, on_reset_all, c);
		return;
	}
	if (s->params_hash == c->session.params_hash && s->carry_hash == c->session.carry_hash) {
		/* Same settings (typically: the server this client used last). */
		on_session_applied(s, c, 0, NULL, NULL, 0);
		return;
	}
	if (session_build_sync(&c->session, s, lookup_server_param, s->carry_hash, sets, sizeof sets) < 0) {
		client_fail(c, "54000", "session parameters too long");
		return;
	}
	if (!sets[0]) {
		on_session_applied(s, c, 0, NULL, NULL, 0);
		return;
	}
	/* After this the server carries exactly the client's settings. */
	s->carry_hash = c->session.carry_hash;
	const char *q[1] = { sets };
	server_run_queries(s, q, 1, timeout, on_session_applied, c);
}

/* Between transactions, a client whose worker should hand it to another
 * (worker_balance_target) moves there. Only one with nothing in flight: no claim, no bytes
 * in its buffers (both are back with the worker) or in OpenSSL's, nothing of the cache's or
 * of read-your-writes pending, logged in. A client of a transaction pool has no server then;
 * a session client takes its server along, both idle in no transaction, nothing owed either
 * way, no timer and no cancel of tusk's running for it (session_server_movable). Then nothing
 * on this worker refers to either once their watchers are stopped and they are unlinked,
 * and the other worker takes them up as they are (client_arrive). */
static void shut_client(struct worker *w, struct client *c, const char *reason);
static void client_arrive(struct worker *w, struct worker_msg *m);

/* A session client between transactions on its server s (linked, logged in): s idle in no
 * transaction with nothing owed either way, nothing of the client's read and unsent. What
 * client_maybe_move, client_is_idle and outside_transaction each start from. */
static bool session_settled(const struct client *c, const struct server *s)
{
	return s->state == SERVER_ACTIVE && s->tx_status == 'I' && !s->ext_open && s->expect_count == 0 &&
	       s->pending_rfq == 0 && buf_empty(&s->rbuf) && buf_empty(&c->rbuf) && c->c2s_scanned == 0 &&
	       c->c2s_remaining == 0 && c->s2c_scanned == 0 && c->s2c_remaining == 0;
}

/* What a move adds: nothing in the write buffers or OpenSSL, no skip, flush, cancel or timer
 * of tusk's for either, no event of s pending on this loop. */
static bool session_server_movable(const struct client *c, const struct server *s)
{
	return c->state == CLIENT_ACTIVE && s->owner == c && session_settled(c, s) && !s->flush_awaited &&
	       !s->skipping && s->pending_skip == 0 && buf_empty(&s->wbuf) && !s->tls.buffered && !s->tls_away &&
	       !s->cancels && !s->park_after_cancel && !ev_is_active(&s->timer) && !ev_is_pending(&s->timer) &&
	       !ev_is_pending(&s->io) && buf_empty(&c->wbuf) && !ev_is_active(&c->timer) && !ev_is_pending(&c->timer);
}

void client_maybe_move(struct client *c)
{
	struct worker *w = c->worker;
	struct server *s = c->mode == POOL_MODE_SESSION ? c->server : NULL;
	if (s ? c->state != CLIENT_ACTIVE : c->state != CLIENT_IDLE || c->mode == POOL_MODE_SESSION || c->server)
		return;
	if (!c->greeted || c->kind->resident || c->queued || c->wait || c->dead || c->ryw_pending || c->pinned || c->big ||
	    c->copy_in || c->release_pending || c->auth || c->tls.buffered || c->tls_handshaking)
		return;
	/* The rule first: mostly it says stay, and the rest need not be asked. */
	struct worker *to = worker_balance_target(w);
	if (!to || (s ? !session_server_movable(c, s) : buf_attached(&c->rbuf) || buf_attached(&c->wbuf)) ||
	    !relay_hooks_quiet(c))
		return;
	struct worker_msg *m = worker_msg_new();
	if (!m)
		return;
	if (session_params_unshare(&c->session) < 0) {
		free(m);
		return;
	}
	log_debug(c->id, c->ctx, "moves to worker %d%s%s", to->index, s ? " with server " : "", s ? s->id : "");
	ev_io_stop(w->loop, &c->io);
	ev_timer_stop(w->loop, &c->timer);
	if (s) {
		/* empty: back to this worker's blocks; the other worker lends its own */
		buf_detach(&c->rbuf, &fe_of(w)->rbufs);
		buf_detach(&c->wbuf, &fe_of(w)->wbufs);
		server_detach(s);
	}
	unlink_client(c);
	worker_balance_moved(w);
	m->fn = client_arrive;
	m->arg = c;
	m->u32[0] = move_hook ? move_hook->mark(w) : 0;
	/* From here c (and s) are to's: this thread must not touch them again. */
	fe_of(w)->gone++;
	cancel_move(c, to);
	worker_post(to, m);
}

/* The message of client_maybe_move on the worker c moved to (arg: c, u32[0]: its old worker's mark
 * from the move hook, the kills it had seen): c (and its server, in a session pool) take up
 * their place on w's loop; closed at once if w is stopping, or if it missed a KILL naming it
 * on the way. */
static void client_arrive(struct worker *w, struct worker_msg *m)
{
	struct client *c = m->arg;
	struct server *s = c->mode == POOL_MODE_SESSION ? c->server : NULL;
	link_client(w, c);
	if (s) {
		/* first: closing c below releases s on this loop */
		relay_adopt(c, s);
		if (attach_bufs(c) < 0) {
			client_close(c, "out of memory for the client's buffers");
			return;
		}
	}
	if (move_hook && move_hook->arrive(w, c, m->u32[0]))
		return;
	if (w->stopping) {
		shut_client(w, c, "tusk is shutting down");
		return;
	}
	session_params_share(&c->session, &fe_of(w)->params);
	if (s)
		relay_watch(c, s);
	else
		client_update_io(c);
}

void client_go_idle(struct client *c)
{
	/* Write first: a watcher switched to EV_WRITE and back costs libev two failed
	 * EPOLL_CTL_ADDs and two MODs. */
	if (client_write_wbuf(c) < 0) {
		client_close(c, "write to client failed");
		return;
	}
	client_set_state(c, CLIENT_IDLE);
	c->cancel_deferred = false; /* its request was answered without running (cancel.c) */
	c->cancel_again = 0;
	/* Between transactions: what a hook held for the client (notifications) goes out now;
	 * the hook writes whole messages and never closes the client. */
	if (c->s2c_scanned == 0 && c->s2c_remaining == 0 && !c->server)
		relay_hooks_idle(c);
	if (!buf_empty(&c->rbuf))
		client_need_server(c);
	else if (c->worker->rt->nworkers > 1)
		client_maybe_move(c);
}

/* Parses answered at once at most (more go to a server: named_before reads all before each). */
#define LOCAL_PARSES_MAX 64

/* Whether the Parse at off names a statement that an earlier Parse of rbuf[0, off) names (read
 * whole by only_parses_then_sync). */
static bool named_before(struct client *c, size_t off, const char *name)
{
	const uint8_t *p = buf_head(&c->rbuf);
	for (size_t at = 0; at < off;) {
		struct proto_hdr h = { 0 };
		(void)proto_read_hdr(p + at, off - at, cfg_of(c)->max_message_size, &h);
		if (strcmp((const char *)p + at + PROTO_HDR_LEN, name) == 0)
			return true;
		at += (size_t)h.len + 1;
	}
	return false;
}

/* Whether rbuf holds, whole, only named Parse messages and then a Sync (libpq's PQprepare,
 * pgbench -M prepared, drivers preparing ahead), each of a name the client does not use yet
 * (PostgreSQL answers a taken one with 42P05: the relay does, parse_taken). *len gets the
 * bytes they span. */
static bool only_parses_then_sync(struct client *c, size_t *len, int *count)
{
	const uint8_t *p = buf_head(&c->rbuf);
	size_t avail = buf_len(&c->rbuf), off = 0;
	int nparse = 0;

	while (off < avail) {
		struct proto_hdr h;
		if (proto_read_hdr(p + off, avail - off, cfg_of(c)->max_message_size, &h) <= 0)
			return false;
		size_t total = (size_t)h.len + 1;
		if (avail - off < total)
			return false;
		if (h.type == 'S') {
			*len = off + total;
			*count = nparse;
			return nparse > 0;
		}
		struct prep_parse pp;
		struct classify_result r;
		/* A named statement only: its name's first byte is the cheap test (an unnamed Parse,
		 * the extended protocol's commonest, cost a whole read here). */
		if (h.type != 'P' || total <= PROTO_HDR_LEN || p[off + PROTO_HDR_LEN] == 0 ||
		    prep_read_parse(p + off, total, cfg_of(c)->max_message_size, &pp) <= 0 || pp.name_len == 0 ||
		    prep_client_find(c->prep, pp.name) || nparse >= LOCAL_PARSES_MAX ||
		    (nparse > 0 && named_before(c, off, pp.name)))
			return false;
		/* Only statements the parser accepts and that change no session state (the
		 * server would answer these with ParseComplete too); transaction control is fine. */
		if (classify_sql(pp.query, pp.query_len, &r) < 0 || r.parse_error || r.truncated)
			return false;
		for (int i = 0; i < r.nsession; i++) {
			enum classify_kind k = r.stmts[i].kind;
			if (k != CLASSIFY_BEGIN && k != CLASSIFY_COMMIT && k != CLASSIFY_ROLLBACK && k != CLASSIFY_SAVEPOINT &&
			    k != CLASSIFY_RELEASE && k != CLASSIFY_ROLLBACK_TO)
				return false;
		}
		nparse++;
		off += total;
	}
	return false;
}

/* Outside a transaction, "prepare these" needs no server: the statements are recorded and
 * prepared on whichever server first runs them (before their Bind or Describe), and the
 * client gets ParseComplete and ReadyForQuery at once. Besides saving a round trip and a
 * server per prepare, this keeps a client that prepares while its siblings on the same
 * thread hold every server in a transaction (pgbench -M prepared) from deadlocking the
 * pool. The cost: a statement that is valid SQL but names a missing table fails at its
 * first execution rather than at prepare time. */
static bool answer_parses_locally(struct client *c)
{
	size_t len = 0;
	int count = 0;

	/* Its first message is a Parse, or it is not that (the test inline: asked per request). */
	if (!c->prep_on || buf_len(&c->rbuf) == 0 || buf_head(&c->rbuf)[0] != 'P' ||
	    !only_parses_then_sync(c, &len, &count))
		return false;
	/* All replies or none: ParseComplete is 5 bytes, ReadyForQuery 6. */
	buf_compact(&c->wbuf);
	if (buf_room(&c->wbuf) < (size_t)count * 5 + 6)
		return false;
	const uint8_t *p = buf_head(&c->rbuf);
	size_t off = 0;
	while (off < len) {
		struct proto_hdr h = { 0 }; /* read whole by only_parses_then_sync */
		(void)proto_read_hdr(p + off, len - off, cfg_of(c)->max_message_size, &h);
		size_t total = (size_t)h.len + 1;
		if (h.type == 'P') {
			struct prep_parse pp;
			const struct prep_stmt *e;
			(void)prep_read_parse(p + off, total, cfg_of(c)->max_message_size, &pp);
			int rc = relay_prep_add(c, &pp, &e); /* a name not taken (only_parses_then_sync) */
			if (rc < 0) {
				client_fail(c, rc == -EDQUOT ? "53400" : "53200", "%s",
					    rc == -EDQUOT ? "too many prepared statements on this connection"
							  : "out of memory for prepared statements");
				return true;
			}
			if (prep_put_parse_complete(&c->wbuf) < 0)
				break; /* cannot happen: room checked above */
		} else if (proto_put_ready(&c->wbuf, 'I') < 0) {
			break;
		}
		off += total;
	}
	buf_consume(&c->rbuf, len);
	log_debug(c->id, c->ctx, "answered a prepare without a server");
	if (client_write_wbuf(c) < 0) {
		client_close(c, "write to client failed");
		return true;
	}
	client_update_io(c);
	return true;
}

void client_need_server(struct client *c)
{
	/* A message no server would take needs none either: refused here, before a claim. */
	struct proto_hdr h;
	if (relay_check_client_hdr(c, buf_head(&c->rbuf), buf_len(&c->rbuf), &h) < 0)
		return;
	/* A Terminate needs no server. */
	if (buf_len(&c->rbuf) >= PROTO_HDR_LEN && buf_head(&c->rbuf)[0] == 'X') {
		client_close(c, "client terminated the session");
		return;
	}
	/* A cancel that came for this request before it was read (cancel.c) goes to a server
	 * with it; answered here, it is moot. */
	bool cancel = c->cancel_deferred;
	c->cancel_deferred = false;
	if (c->state == CLIENT_IDLE && answer_parses_locally(c)) {
		if (c->state == CLIENT_IDLE && !buf_empty(&c->rbuf)) {
			c->cancel_deferred = cancel;
			client_need_server(c);
		}
		return;
	}
	RELAY_HOOKS_SYNC(c);
	if (c->state == CLIENT_IDLE && relay_hooks_request(c, NULL))
		return; /* answered from the cache, or waiting on an identical query */
	c->cancel_deferred = cancel;
	/* Most claims find an idle server and make the client active at once: "waiting" is
	 * entered quietly (not counted, timed or polled) and announced only if the claim is
	 * still pending when it returns (queued, connecting, the server being prepared). Any
	 * state change meanwhile ends the quiet wait (count_client). A close may free c, and a
	 * request answered without a server may leave it idle and moved to another worker: the
	 * worker's count of clients gone tells, and c is not read again then. */
	struct frontend_worker *fe = fe_of(c->worker);
	uint64_t gone = fe->gone;
	log_debug(c->id, c->ctx, "%s -> waiting", state_name(c->state));
	c->state = CLIENT_WAITING;
	c->active_at = ev_now(c->worker->loop);
	c->wait_quiet = true;
	start_claim(c);
	if (fe->gone == gone && c->wait_quiet && c->state == CLIENT_WAITING) {
		c->wait_quiet = false;
		count_client(c, STATS_CLIENT_WAITING);
		arm_wait_timer(c);
		client_update_io(c);
	}
}

/* pool_wait_timeout ran out. A pool that holds no server because every connect failed (all
 * its backends of the wrong role, say) says what they answered, not that it is at size. */
static void fail_wait_timeout(struct client *c)
{
	char why[256];
	double secs = (double)cfg_of(c)->pool_wait_timeout_ms / 1000.0;
	if (pool_wait_reason(c->pool, why, sizeof why))
		client_fail(c, "08006", "timed out after %.1fs waiting for a server connection: none could be made (%s)",
			    secs, why);
	else
		client_fail(c, "53300", "timed out after %.1fs waiting for a server connection (pool %s/%s is at size %d)",
			    secs, pool_database(c->pool), pool_user(c->pool), pool_rule(c->pool)->size);
}

/* The pool's answer to a claim that was queued (pool.h, pool_answer_fn), on c's worker. */
static void on_pool_answer(struct pool_waiter *wt, struct server *s, int err, const char *reason,
			   const uint8_t *errmsg, size_t errlen)
{
	struct client *c = ((struct client_wait *)wt)->c;
	struct worker *w = c->worker;
	c->queued = false;
	put_wait(c); /* the pool is done with it */
	if (c->dead || w->stopping) {
		/* The client left while this was on its way: give it back untouched (or, when
		 * shutting down, close it). */
		if (s && !w->stopping)
			pool_put_idle(c->pool, s);
		else if (s)
			server_close(s, "tusk is shutting down");
		if (c->dead && !c->ryw_pending)
			free_client(c);
		return;
	}
	if (s) {
		log_debug(c->id, c->ctx, "got server %s", s->id);
		use_server(c, s);
		return;
	}
	if (c->standby && err != -ETIMEDOUT && err != -ECANCELED) {
		/* read-write-split: no standby could take it (all down, or none turned out to be
		 * one): the primary serves reads too. */
		log_debug(c->id, c->ctx, "no standby for a read (%s): the primary serves it", reason ? reason : "down");
		claim_primary(c);
		return;
	}
	if (err == -EHOSTUNREACH) {
		char why[256];
		pool_down_reason(c->pool, ev_now(w->loop), why, sizeof why);
		client_fail(c, "08006", "server for %s/%s is not accepting connections: %s", pool_database(c->pool),
			    pool_user(c->pool), why);
		return;
	}
	if (err == -ETIMEDOUT) {
		fail_wait_timeout(c);
		return;
	}
	if (err == -ECANCELED) {
		client_fail(c, "57P01", "tusk is shutting down");
		return;
	}
	if (errmsg && errlen > 0 && errmsg[0] == 'E') {
		/* Forward the server's own refusal (e.g. 28P01, 3D000): it says it best. */
		if (buf_append(&c->wbuf, errmsg, errlen) == 0) {
			client_count_error(c, errmsg, errlen);
			log_info(c->id, c->ctx, "closing client connection: %s", reason);
			client_set_state(c, CLIENT_CLOSING);
			client_flush(c);
			return;
		}
	}
	client_fail(c, "08006", "%s", reason ? reason : "could not connect to server");
}

static void claim_primary(struct client *c)
{
	c->standby = false;
	claim(c);
}

static void start_claim(struct client *c)
{
	c->standby = false;
	relay_hooks_claim(c); /* read-write-split: which side (c->standby) */
	claim(c);
}

static void claim(struct client *c)
{
	struct server *s = NULL;
	struct client_wait *cw = get_wait(c);
	if (!cw) {
		client_fail(c, "53200", "out of memory");
		return;
	}
	cw->w.cred = c->cred;
	cw->w.standby = c->standby;
	enum pool_claim_result r = pool_claim(c->pool, &cw->w, ev_now(c->worker->loop), &s);
	if (r != POOL_CLAIM_QUEUED)
		put_wait(c); /* answered at once: the pool keeps no pointer to it */
	switch (r) {
	case POOL_CLAIM_DOWN: {
		if (c->standby) {
			claim_primary(c); /* every standby is down: the primary serves reads too */
			break;
		}
		char why[256];
		pool_down_reason(c->pool, ev_now(c->worker->loop), why, sizeof why);
		client_fail(c, "08006", "server for %s/%s is not accepting connections: %s", pool_database(c->pool),
			    pool_user(c->pool), why);
		break;
	}
	case POOL_CLAIM_SERVER:
		server_unpark(s);
		log_debug(c->id, c->ctx, "reusing idle server %s", s->id);
		use_server(c, s);
		break;
	case POOL_CLAIM_QUEUED:
		c->queued = true;
		log_debug(c->id, c->ctx, "waiting for a server");
		break;
	}
}

/* ---- events ---- */

static void read_startup_phase(struct client *c)
{
	if (buf_room(&c->rbuf) == 0)
		buf_compact(&c->rbuf);
	if (buf_room(&c->rbuf) == 0) {
		/* Only possible while waiting for a server: the client talks out of turn. */
		client_update_io(c);
		return;
	}
	if (c->state == CLIENT_STARTUP && !c->tls_probed && !c->tls.conn && buf_empty(&c->rbuf) &&
	    listen_tls_mode(c) != CONFIG_TLS_DISABLE) {
		/* Direct TLS starts with a handshake record (0x16) where a startup packet would
		 * start with its length's high byte (0 for any valid one). */
		uint8_t first;
		ssize_t p = recv(c->fd, &first, 1, MSG_PEEK);
		if (p == 1 && first == 0x16) {
			start_tls(c, true);
			return;
		}
		if (p == 1)
			c->tls_probed = true;
	}
	ssize_t n = tls_link_read(c->fd, &c->tls, buf_tail(&c->rbuf), buf_room(&c->rbuf));
	if (n == 0) {
		client_close(c, c->state == CLIENT_STARTUP ? "client closed the connection during startup"
				: c->state == CLIENT_IDLE          ? "client closed the connection"
								   : "client closed the connection while waiting");
		return;
	}
	if (n < 0) {
		if (n == -EAGAIN) {
			client_update_io(c);
			return;
		}
		client_close(c, "read from client failed");
		return;
	}
	buf_produce(&c->rbuf, (size_t)n);
	if (c->state == CLIENT_STARTUP)
		handle_startup_input(c);
	else if (c->state == CLIENT_AUTH) {
		if (client_auth_input(c) == 1)
			client_after_auth(c);
	} else if (c->state == CLIENT_IDLE) {
		c->active_at = ev_now(c->worker->loop); /* a request the cache may answer in place */
		c->kind->input(c);
	} else
		client_update_io(c);
}

static void client_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct client *c = io->data;
	(void)loop;

	if (attach_bufs(c) < 0) {
		client_close(c, "out of memory for the client's buffers");
		return;
	}
	if (c->tls_handshaking) {
		hs_enqueue(c);
		return;
	}
	/* For every state, relay included: see tls_link_crossed. */
	if (tls_link_crossed(&c->tls))
		revents |= EV_READ | EV_WRITE;
	switch (c->state) {
	case CLIENT_STARTUP:
	case CLIENT_AUTH:
	case CLIENT_WAITING:
	case CLIENT_IDLE:
		if (revents & EV_WRITE) {
			if (client_write_wbuf(c) < 0) {
				client_close(c, "write to client failed");
				return;
			}
			/* Only once logged in: a kv session exists from startup on, and what the
			 * client sent before its password must not be read as requests. */
			if (c->state == CLIENT_IDLE) {
				if (c->kind->writable(c))
					return;
			} else
				client_update_io(c);
		}
		if (revents & EV_READ)
			read_startup_phase(c);
		break;
	case CLIENT_ACTIVE:
		relay_client_event(c, revents);
		break;
	case CLIENT_CLOSING:
		if (revents & EV_WRITE) {
			client_flush(c);
			return;
		}
		drain_closing(c);
		break;
	}
}

/* query_wait_notify (PgBouncer 1.25): a logged-in client still waiting for a server hears
 * once, in PgBouncer's NOTICE, that it is queued, and waits on until pool_wait_timeout. A
 * client still logging in is told nothing (no message may precede AuthenticationOk). */
static void notify_wait(struct client *c)
{
	const struct tusk_config *cfg = cfg_of(c);
	double waited = (double)cfg->query_wait_notify_ms / 1000.0;
	double left = (double)cfg->pool_wait_timeout_ms / 1000.0 - waited;
	c->wait_notice_armed = false;
	arm_timer(c, left > 0 ? left : 0.001); /* a reload may have shortened pool_wait_timeout */
	if (!c->greeted || c->s2c_scanned || c->s2c_remaining || buf_attach(&c->wbuf, &fe_of(c->worker)->wbufs) < 0)
		return;
	char detail[256];
	snprintf(detail, sizeof detail, "tusk %s: waited %.1fs for a server of pool %s/%s (size %d); pool_wait_timeout is %.1fs",
		 c->id, waited, pool_database(c->pool), pool_user(c->pool), pool_rule(c->pool)->size,
		 (double)cfg->pool_wait_timeout_ms / 1000.0);
	if (proto_put_notice(&c->wbuf, "NOTICE", "00000", "No server connection available in postgres backend, client being queued",
			     detail, NULL) < 0)
		return;
	log_debug(c->id, c->ctx, "waited %.1fs for a server: notice sent (query_wait_notify)", waited);
	client_update_io(c);
}

static void client_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct client *c = t->data;
	(void)loop;
	(void)revents;

	switch (c->state) {
	case CLIENT_STARTUP:
	case CLIENT_AUTH:
		if (client_auth_timed_out(c))
			break;
		client_fail(c, "08P01", "client did not finish startup within client_login_timeout");
		break;
	case CLIENT_WAITING:
		if (c->wait_notice_armed) {
			notify_wait(c);
			break;
		}
		/* One deadline covers queueing, connecting and preparing the server. */
		if (c->queued && client_leave_queue(c)) {
			fail_wait_timeout(c);
		} else if (c->queued && c->wait->w.connecting) {
			/* A server is being opened for it: it joins the pool when done (the client's
			 * husk gives it back); the client is told now. */
			client_fail(c, "53300", "timed out after %.1fs getting a server connection ready (pool %s/%s)",
				    (double)cfg_of(c)->pool_wait_timeout_ms / 1000.0, pool_database(c->pool),
				    pool_user(c->pool));
		} else if (!c->queued && c->server) {
			/* Still connecting or being prepared: the server finishes on its own and
			 * joins the pool; the client is told now. */
			server_orphan(c->server);
			c->server = NULL;
			client_fail(c, "53300", "timed out after %.1fs getting a server connection ready (pool %s/%s)",
				    (double)cfg_of(c)->pool_wait_timeout_ms / 1000.0, pool_database(c->pool),
				    pool_user(c->pool));
		}
		/* Otherwise (queued, but a server is already on its way) the answer is due now. */
		break;
	case CLIENT_ACTIVE:
		/* Armed only while the client sits inside an open transaction with nothing owed. */
		client_fail(c, "25P03", "terminating connection due to idle-in-transaction timeout (idle_transaction_timeout)");
		break;
	case CLIENT_IDLE:
		relay_hooks_timer(c); /* a cache waiter's deadline */
		break;
	case CLIENT_CLOSING:
		client_close(c, "timed out flushing the last error");
		break;
	}
}

/* ---- query_timeout and client_idle_timeout ----
 * Checked on the worker's housekeeping tick (once a second), as PgBouncer's janitor does:
 * nothing on the relay's path but the timestamps it keeps anyway (query_start, active_at),
 * and a timeout fires between its value and a second later. */

/* Logged in, outside any transaction, nothing asked and nothing owed: what
 * client_idle_timeout counts. Pooled clients only (the console's and kv's are tusk's own). */
static bool client_is_idle(const struct client *c)
{
	if (c->kind != &pooled_kind || !c->greeted || !buf_empty(&c->rbuf) || c->copy_in || c->big ||
	    c->c2s_remaining || c->s2c_remaining)
		return false;
	if (c->state == CLIENT_IDLE)
		return !c->server && !c->queued && !c->wait && !c->ryw_pending && relay_hooks_quiet(c);
	if (c->state != CLIENT_ACTIVE || !c->server)
		return false;
	/* Session pooling (or a pinned client): the server stays linked between transactions. */
	return session_settled(c, c->server);
}

/* c's server is closed under it (a timeout, server_fast_close), before c is failed: sid gets
 * its id for the client's message. */
static void close_clients_server(struct client *c, const char *reason, char sid[ID_LEN])
{
	struct server *s = c->server;
	memcpy(sid, s->id, ID_LEN); /* server_close frees s */
	c->server = NULL;
	s->owner = NULL;
	server_close(s, reason);
}

/* A query of c has run for query_timeout: ask its server to cancel it (PostgreSQL answers the
 * client 57014 and the session goes on); still running a query_timeout later (a server or
 * network that does not answer, PgBouncer's case for the key), the client is closed and its
 * server with it. */
static void query_timed_out(struct client *c, uint64_t ms, double now)
{
	struct server *s = c->server;
	if (c->query_cancel_for != c->query_start) {
		c->query_cancel_for = c->query_start;
		log_warn(c->id, c->ctx, "query running for %.1fs on server %s: cancelling it (query_timeout %.1fs)",
			 now - c->query_start, s->id, (double)ms / 1000.0);
		cancel_send_for(c->worker, s, 0);
	} else if ((now - c->query_start) * 1000.0 >= 2.0 * (double)ms) {
		/* Closed, not drained for reuse: a server that ignored one cancel may ignore the
		 * next, and one that wakes later must not serve another client (PgBouncer, too,
		 * disconnects the server on query_timeout). */
		char sid[ID_LEN];
		close_clients_server(c, "its query outlived query_timeout and the cancel sent for it", sid);
		client_fail(c, "57014", "canceling statement due to query_timeout: server %s did not end it %.1fs after its cancel",
			    sid, (double)ms / 1000.0);
	}
}

/* server_fast_close (PgBouncer's): a session (or pinned client) whose server is to be closed
 * (RECONNECT, a reload that retired its pool, its backend gone) loses it, and the client its
 * connection, as soon as it is idle outside a transaction, not at the session's end. */
static void fast_close(struct client *c)
{
	char sid[ID_LEN];
	close_clients_server(c, "closed at once for its client's idle session (server_fast_close)", sid);
	client_fail(c, "57P01", "terminating connection: server %s was to be closed (RECONNECT, a reload or a removed "
		    "backend) and server_fast_close is on", sid);
}

/* transaction_timeout (PgBouncer 1.25's, PostgreSQL 17's): a transaction, or a statement
 * outside one, that has run this long ends its client's connection, and its server's, as
 * PostgreSQL's own timeout does (25P04); a query still running is cancelled first. */
static void transaction_timed_out(struct client *c, uint64_t ms, double now)
{
	struct server *s = c->server;
	log_warn(c->id, c->ctx, "transaction open for %.1fs on server %s: closing it (transaction_timeout %.1fs)",
		 now - c->xact_start, s->id, (double)ms / 1000.0);
	char sid[ID_LEN];
	if (s->pending_rfq > 0)
		cancel_send_for(c->worker, s, 0); /* else its backend would run on, locks and all */
	close_clients_server(c, "its client's transaction outlived transaction_timeout", sid);
	client_fail(c, "25P04", "terminating connection due to transaction timeout (transaction_timeout)");
}

/* A rule's own timeout that is on (not absent, not 0). */
static bool rule_sets(uint64_t ms)
{
	return ms && ms != CONFIG_TIMEOUT_INHERIT;
}

static void client_check_timeouts(struct worker *w, double now)
{
	const struct tusk_config *cfg = w->rt->cfg;
	struct client *next;

	/* Each is off unless the top level or a rule sets it. */
	bool any = cfg->query_timeout_ms || cfg->client_idle_timeout_ms || cfg->transaction_timeout_ms ||
		   cfg->server_fast_close;
	for (int i = 0; i < cfg->npools && !any; i++) {
		const struct config_pool_rule *r = &cfg->pools[i];
		any = rule_sets(r->query_timeout_ms) || rule_sets(r->client_idle_timeout_ms) ||
		      rule_sets(r->transaction_timeout_ms);
	}
	if (!any || w->stopping)
		return;
	/* client_fail may free c, never another client (a released server's next claimer is
	 * answered through the loop, not from inside this call). */
	for (struct client *c = fe_of(w)->clients; c; c = next) {
		next = c->next;
		if (!c->pool || c->state == CLIENT_CLOSING)
			continue;
		const struct config_pool_rule *rule = pool_rule(c->pool);
		uint64_t qt = config_query_timeout(cfg, rule), it = config_client_idle_timeout(cfg, rule);
		uint64_t tt = config_transaction_timeout(cfg, rule);
		if (tt && c->state == CLIENT_ACTIVE && c->server && c->xact_start > 0 &&
		    (now - c->xact_start) * 1000.0 >= (double)tt) {
			transaction_timed_out(c, tt, now);
		} else if (qt && c->state == CLIENT_ACTIVE && c->server && c->server->state == SERVER_ACTIVE && c->query_start > 0 &&
		    (now - c->query_start) * 1000.0 >= (double)qt) {
			query_timed_out(c, qt, now);
		} else if (it && (now - c->active_at) * 1000.0 >= (double)it && client_is_idle(c)) {
			log_info(c->id, c->ctx, "closing client idle for %.1fs (client_idle_timeout %.1fs)", now - c->active_at,
				 (double)it / 1000.0);
			client_fail(c, "57P05", "terminating connection due to idle-session timeout (client_idle_timeout)");
		} else if (cfg->server_fast_close && c->server && client_is_idle(c) && pool_server_must_close(c->server)) {
			fast_close(c);
		}
	}
}

/* Shutdown: c, the head of w's list, gets reason in an ErrorResponse, unless it is closing
 * already, and goes now: shutdown does not wait for slow readers. client_fail may have freed
 * c (its error went out at once): whether c is still w's head tells, without reading c. */
static void shut_client(struct worker *w, struct client *c, const char *reason)
{
	if (c->state != CLIENT_CLOSING)
		client_fail(c, "57P01", "%s", reason);
	if (fe_of(w)->clients == c)
		client_close(c, reason);
}

/* Shutdown: close every client of w, each with reason in an ErrorResponse, then w's
 * auth_query connections. */
static void client_close_all(struct worker *w, const char *reason)
{
	struct frontend_worker *fe = fe_of(w);
	while (fe->clients)
		shut_client(w, fe->clients, reason);
	/* Their auth_query requests are cancelled now: the connections can go. */
	authquery_close_all(w);
}

/* ---- draining (SIGTERM, online restart) ---- */

#define CLIENT_DRAIN_GRACE 0.5 /* seconds after login before a draining worker closes an idle client */
#define CLIENT_DRAIN_LOGIN_GRACE 2.0 /* seconds after accept before it closes one still logging in */

/* Outside a transaction: closing now loses the client nothing it began. */
static bool outside_transaction(const struct client *c)
{
	/* A client still logging in, or greeted a moment ago, is about to send its request
	 * (the client of an online restart accepted just before the hand-over): let it run.
	 * One that is still not logged in well after it connected (it sends nothing, or waits
	 * for an auth_query answer) has begun nothing either: it goes. */
	double now = ev_now(c->worker->loop);
	if (!c->greeted)
		return (c->state == CLIENT_STARTUP || c->state == CLIENT_AUTH) && now - c->connect_time >= CLIENT_DRAIN_LOGIN_GRACE;
	if (now - c->login_at < CLIENT_DRAIN_GRACE)
		return false;
	switch (c->state) {
	case CLIENT_STARTUP:
	case CLIENT_AUTH:
	case CLIENT_WAITING:
		return false;
	case CLIENT_IDLE:
		return true;
	case CLIENT_ACTIVE: {
		const struct server *s = c->server;
		/* Transaction mode releases the server at the transaction's end: ACTIVE is inside. */
		return c->mode == POOL_MODE_SESSION && s && session_settled(c, s) && !c->copy_in && !c->release_pending;
	}
	case CLIENT_CLOSING:
		return false;
	}
	return false;
}

/* Draining (SIGTERM, online restart): close with 57P01 every client of w that is outside a
 * transaction (idle between transactions, or in session mode with its server idle and
 * nothing in flight) and logged in for more than a moment. Clients inside a transaction,
 * or still logging in, are left to finish. */
static void client_close_quiescent(struct worker *w, const char *reason)
{
	struct client *c = fe_of(w)->clients;
	while (c) {
		struct client *next = c->next;
		if (outside_transaction(c))
			client_fail(c, "57P01", "%s", reason);
		else if (c->state == CLIENT_CLOSING && c->shut_wr && buf_empty(&c->wbuf))
			/* Its error and our FIN are out: do not hold the exit for the linger. */
			client_close(c, reason);
		c = next;
	}
}
