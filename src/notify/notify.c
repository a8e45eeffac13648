/* LISTEN/NOTIFY without pinning (notify.h). Three parts:
 *  - the client's side (relay hooks, on the client's worker): a whole simple-protocol Query
 *    that is one LISTEN / UNLISTEN / UNLISTEN * is answered here, never sent to a pooled
 *    server; outside a transaction it takes effect at once (the answer waits until the
 *    listener has LISTENed to a new channel), inside one it is kept and applied when the
 *    ReadyForQuery 'I' of a commit passes (commit_wait), dropped after a ROLLBACK;
 *  - the hub (one per pool): the channel union with reference counts, under its lock, and
 *    the listener connection on its home worker (a pool-less server logged in as the pool's
 *    servers are, server_connect_login) that runs LISTEN / UNLISTEN for the union's changes
 *    and reads NotificationResponses;
 *  - the fan-out: each notification is posted to every worker, which appends it to its
 *    subscribed clients' write buffers between transactions (queued, bounded, while a client
 *    is in one or does not read). A client that listens never moves between workers. */
#include "notify/notify.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/client_int.h"
#include "frontend/relay_hooks.h"
#include "net/evio.h"
#include "net/tls.h"
#include "pool/pool.h"
#include "pool/prepared.h"
#include "pool/server.h"
#include "pool/services.h"
#include "proto/proto.h"
#include "router/classify.h"
#include "runtime/runtime.h"
#include "util/buf.h"
#include "util/grow.h"
#include "util/log.h"
#include "worker/worker.h"

#define NOTIFY_NAME_MAX 64                 /* NAMEDATALEN: a channel is an identifier */
#define NOTIFY_CLIENT_CHANNELS_MAX 1024     /* per client */
#define NOTIFY_PENDING_MAX 64              /* LISTEN/UNLISTEN inside one transaction */
#define NOTIFY_MARKS_MAX 16                /* savepoints followed inside one transaction */
/* Own NOTIFYs: (server pid, channel, payload) of the NOTIFYs clients sent, so that the
 * notification carries the sender's BackendKeyData pid; at most NOTIFY_SENT_MAX per hub (the
 * oldest goes), NOTIFY_SENT_TTL seconds each, NOTIFY_SENT_TX per client transaction. */
#define NOTIFY_SENT_MAX 256
#define NOTIFY_SENT_TTL 30.0
#define NOTIFY_SENT_TX 16
#define NOTIFY_PAYLOAD_MAX 8000            /* PostgreSQL's bound on a payload (bytes, NUL included) */
/* Bytes queued for a client beyond what its socket took: over NOTIFY_QUEUE_MAX, a client
 * whose socket took nothing for NOTIFY_STALL_MAX seconds is closed (it does not read); one
 * that reads, only slower than a burst arrives, is closed past NOTIFY_QUEUE_HARD. */
#define NOTIFY_QUEUE_MAX (1u << 20)
#define NOTIFY_QUEUE_HARD (32u << 20)
#define NOTIFY_STALL_MAX 2.0
#define NOTIFY_MSG_MAX (16u * 1024)        /* a NotificationResponse: 8000-byte payload + name */
#define NOTIFY_LISTENER_BUF (64u * 1024)
#define NOTIFY_SYNC_SQL_MAX (16u * 1024)   /* LISTEN/UNLISTEN statements sent in one Query */
/* pg_listening_channels()'s answer: beyond it (some 250 channels) the query goes to a server */
#define NOTIFY_CHANNELS_ANSWER_MAX (16u * 1024)
#define NOTIFY_ANSWER_MAX 512            /* tusk's answer to one request, ReadyForQuery aside */
#define NOTIFY_BACKOFF_MIN 0.25
#define NOTIFY_BACKOFF_MAX 10.0

enum hub_state {
	HUB_NONE,       /* no listener yet */
	HUB_CONNECTING, /* the first connect: a LISTEN's answer waits for it */
	HUB_UP,
	HUB_DOWN,       /* lost or failed: reconnecting with backoff; answers do not wait */
};

struct hub_chan {
	char name[NOTIFY_NAME_MAX];
	int refs;          /* clients listening (committed) */
	bool live;         /* the listener has LISTENed to it */
	bool inflight;     /* a LISTEN/UNLISTEN for it is on its way */
	bool want;         /* what that statement makes live */
};

struct notify_hub {
	struct notify_hub *next;
	struct runtime *rt;
	struct pool *pool;
	int home;                  /* index of the worker the listener runs on */
	pthread_mutex_t lock;      /* protects chans/nchans/cap, gen_req, sync_posted, cred, state
	                            * as other workers read it, clients */
	struct hub_chan *chans;
	int nchans, cap;
	uint64_t gen_req;          /* bumped by a subscription that must wait for its LISTEN */
	_Atomic uint64_t gen_done; /* every subscription up to it is live (or the listener failed) */
	bool sync_posted;
	_Atomic int state;         /* enum hub_state; written on the home worker */
	struct server_cred cred;   /* passthrough: a client's credentials for the listener's login */
	bool have_cred;
	int clients;
	_Atomic uint64_t relayed, reconnects;
	/* NOTIFYs of clients not yet seen back: its own lock (the sender's worker adds, the home
	 * worker matches); one allocation, at the first */
	pthread_mutex_t sent_lock;
	struct notify_sent *sent;
	_Atomic int nsent;
	uint64_t sent_seq;
	/* home worker only */
	struct server *s;
	struct tp_backend_addr be; /* the backend s was opened to (services_primary_addr) */
	ev_timer timer;            /* reconnect */
	bool timer_init;
	double backoff;
	bool inflight;             /* a Query of LISTEN/UNLISTENs (or a fence) is on its way */
	uint64_t sent_gen;         /* the generation its answer acknowledges */
	bool ever_up;
	bool missed_pending;       /* reconnected: tell the clients once every channel is live */
};

struct notify_registry {
	pthread_mutex_t lock; /* protects hubs and nhubs */
	atomic_bool any;      /* a hub was ever made (read without the lock: the requests of pools
	                       * nobody listens on skip every notify test at one load) */
	struct notify_hub *hubs;
	int nhubs;
	_Atomic uint64_t closed_unread; /* clients closed for not reading (53400) */
};

/* One argument of pg_notify(): a parameter $n, or a constant (into out, len). */
struct notify_arg {
	int param; /* 0: a constant */
	size_t len;
};

/* A NOTIFY a client sent on a server (notify_sql), until its notification comes back. */
struct notify_sent {
	uint64_t seq;              /* 0: a free slot */
	uint64_t hash;             /* of channel and payload */
	uint32_t server_pid;       /* the notifying backend */
	uint32_t client_pid;       /* the sender's BackendKeyData pid */
	double at;                 /* when it was sent (monotonic) */
};

/* One queued change of a transaction. */
struct notify_op {
	uint8_t kind; /* CLASSIFY_LISTEN, _UNLISTEN, _UNLISTEN_ALL */
	char name[NOTIFY_NAME_MAX];
};

/* A channel of a client: notifications reach it once the listener's stream has passed the
 * point its LISTEN took effect (gen acknowledged; 0: active). */
struct nc_chan {
	char name[NOTIFY_NAME_MAX];
	uint64_t gen;
};

struct notify_client {
	struct client *c;
	struct notify_hub *hub;
	struct notify_client *prev, *next; /* its worker's list */
	struct nc_chan *chans;
	int nchans, cap;
	struct notify_op pending[NOTIFY_PENDING_MAX];
	int npending;
	/* the transaction's savepoints made while it listened: pending[0, at) came before name */
	struct notify_mark {
		char name[NOTIFY_NAME_MAX];
		int at;
	} marks[NOTIFY_MARKS_MAX];
	int nmarks;
	bool marks_lost;           /* more savepoints than marks[]: ROLLBACK TO keeps everything */
	/* the NOTIFYs of the transaction (their hub entries' seq, channel-and-payload hashes) */
	uint64_t sent_seq[NOTIFY_SENT_TX], sent_hash[NOTIFY_SENT_TX];
	int nsent;
	/* the unnamed statement is a pg_notify() with parameters: its arguments (tmpl_ok) */
	bool tmpl_ok;
	struct notify_arg tmpl_ca, tmpl_pa;
	char tmpl_chan[NOTIFY_NAME_MAX];
	char tmpl_payload[256];
	/* bytes for the client not yet in its wbuf: whole messages, [qhead, qlen) */
	uint8_t *q;
	size_t qhead, qlen, qcap;
	double stalled_since;      /* loop time the queue last moved (or began) */
	uint64_t wait_gen;
	bool waiting;              /* an answer waits for the listener (wait_gen) */
	bool waiting_commit;       /* ... a commit's ReadyForQuery (else an idle LISTEN's answer) */
	uint8_t owed[NOTIFY_ANSWER_MAX]; /* the idle LISTEN's answer before its ReadyForQuery */
	size_t owed_len;
};

struct notify_worker {
	struct notify_client *clients;
};

/* A NotificationResponse shared by every worker's fan-out. */
struct notify_note {
	_Atomic int refs;
	size_t len;
	size_t chan_off;
	uint8_t msg[];
};

static int notify_slot(void)
{
	return notify_worker_hooks.slot;
}

static struct notify_worker *nw_of(const struct worker *w)
{
	return worker_slot(w, notify_slot());
}

/* ---- the registry ---- */

struct notify_registry *notify_registry_new(void)
{
	struct notify_registry *r = calloc(1, sizeof *r);
	if (r) {
		pthread_mutex_init(&r->lock, NULL);
		atomic_init(&r->any, false);
	}
	return r;
}

void notify_registry_free(struct notify_registry *r)
{
	if (!r)
		return;
	while (r->hubs) {
		struct notify_hub *h = r->hubs;
		r->hubs = h->next;
		pthread_mutex_destroy(&h->lock);
		pthread_mutex_destroy(&h->sent_lock);
		memset(&h->cred, 0, sizeof h->cred);
		free(h->chans);
		free(h->sent);
		free(h);
	}
	pthread_mutex_destroy(&r->lock);
	free(r);
}

/* The pool's hub; a new one when it has none and make (NULL: none, or no memory). */
static struct notify_hub *hub_of(struct runtime *rt, const struct pool *pool, bool make)
{
	struct notify_registry *r = rt->notify;
	struct notify_hub *h;
	pthread_mutex_lock(&r->lock);
	for (h = r->hubs; h; h = h->next)
		if (h->pool == pool)
			break;
	if (!h && make && (h = calloc(1, sizeof *h)) != NULL) {
		h->rt = rt;
		h->pool = (struct pool *)pool;
		h->home = r->nhubs % rt->nworkers;
		pthread_mutex_init(&h->lock, NULL);
		pthread_mutex_init(&h->sent_lock, NULL);
		atomic_init(&h->state, HUB_NONE);
		h->next = r->hubs;
		r->hubs = h;
		r->nhubs++;
		atomic_store_explicit(&r->any, true, memory_order_release);
	}
	pthread_mutex_unlock(&r->lock);
	return h;
}

void notify_foreach(struct runtime *rt, notify_row_fn fn, void *arg)
{
	struct notify_registry *r = rt->notify;
	if (!r)
		return;
	pthread_mutex_lock(&r->lock);
	for (struct notify_hub *h = r->hubs; h; h = h->next) {
		struct notify_listener_row row = { 0 };
		snprintf(row.database, sizeof row.database, "%s", pool_database(h->pool));
		snprintf(row.user, sizeof row.user, "%s", pool_user(h->pool));
		pthread_mutex_lock(&h->lock);
		for (int i = 0; i < h->nchans; i++)
			row.channels += h->chans[i].refs > 0;
		row.clients = h->clients;
		pthread_mutex_unlock(&h->lock);
		row.relayed = atomic_load(&h->relayed);
		row.reconnects = atomic_load(&h->reconnects);
		row.connected = atomic_load(&h->state) == HUB_UP;
		fn(&row, arg);
	}
	pthread_mutex_unlock(&r->lock);
}

/* ---- observability and RECONNECT (notify.h) ---- */

int notify_client_channels(const struct client *c, char *out, size_t cap)
{
	const struct notify_client *nc = c->notify;
	size_t at = 0;
	if (cap)
		out[0] = '\0';
	if (!nc)
		return 0;
	for (int i = 0; i < nc->nchans && cap > 4; i++) {
		size_t n = strlen(nc->chans[i].name) + (i > 0);
		if (at + n >= cap - 4) {
			snprintf(out + at, cap - at, "%s...", i > 0 ? "," : "");
			break;
		}
		at += (size_t)snprintf(out + at, cap - at, "%s%s", i > 0 ? "," : "", nc->chans[i].name);
	}
	return nc->nchans;
}

uint64_t notify_closed_unread(struct runtime *rt)
{
	return rt->notify ? atomic_load(&rt->notify->closed_unread) : 0;
}

static void hub_down(struct notify_hub *h, const char *reason);

static void on_reconnect_msg(struct worker *w, struct worker_msg *m)
{
	struct notify_hub *h = m->arg;
	if (w->stopping || !h->s || atomic_load(&h->state) != HUB_UP)
		return; /* connecting, or reconnecting already */
	struct server *s = h->s;
	server_close(s, "RECONNECT from the admin console");
	hub_down(h, "RECONNECT from the admin console");
}

static void post(struct worker *w, worker_fn *fn, void *arg, void *arg2);

void notify_reconnect(struct runtime *rt, const char *database)
{
	struct notify_registry *r = rt->notify;
	if (!r)
		return;
	pthread_mutex_lock(&r->lock);
	for (struct notify_hub *h = r->hubs; h; h = h->next)
		if (!database || !database[0] || strcmp(database, pool_database(h->pool)) == 0)
			post(rt->workers[h->home], on_reconnect_msg, h, NULL);
	pthread_mutex_unlock(&r->lock);
}

/* ---- cross-worker messages ---- */

static void post(struct worker *w, worker_fn *fn, void *arg, void *arg2)
{
	struct worker_msg *m = worker_msg_new();
	if (!m)
		return;
	m->fn = fn;
	m->arg = arg;
	m->arg2 = arg2;
	worker_post(w, m);
}

static void on_sync_msg(struct worker *w, struct worker_msg *m);
static void on_ack_msg(struct worker *w, struct worker_msg *m);
static void on_missed_msg(struct worker *w, struct worker_msg *m);

/* Under h->lock: have the home worker look at the channel union. */
static void hub_want_sync_locked(struct notify_hub *h)
{
	if (h->sync_posted)
		return;
	h->sync_posted = true;
	post(h->rt->workers[h->home], on_sync_msg, h, NULL);
}

static void post_all(struct notify_hub *h, worker_fn *fn)
{
	for (int i = 0; i < h->rt->nworkers; i++)
		post(h->rt->workers[i], fn, h, NULL);
}

/* ---- the channel union ---- */

static struct hub_chan *chan_find(struct notify_hub *h, const char *name)
{
	for (int i = 0; i < h->nchans; i++)
		if (strcmp(h->chans[i].name, name) == 0)
			return &h->chans[i];
	return NULL;
}

/* A client starts listening to name: *wait when its answer (and the channel's notifications)
 * wait for the listener's acknowledgement of *gen. */
static int hub_ref(struct notify_hub *h, const char *name, uint64_t *gen, bool *wait)
{
	int rc = 0;
	*wait = false;
	pthread_mutex_lock(&h->lock);
	struct hub_chan *ch = chan_find(h, name);
	if (!ch) {
		if (h->nchans == h->cap) {
			int cap = h->cap ? 2 * h->cap : 16;
			struct hub_chan *n = realloc(h->chans, (size_t)cap * sizeof *n);
			if (!n) {
				rc = -ENOMEM;
				goto out;
			}
			h->chans = n;
			h->cap = cap;
		}
		ch = &h->chans[h->nchans++];
		memset(ch, 0, sizeof *ch);
		snprintf(ch->name, sizeof ch->name, "%s", name);
	}
	if (ch->refs++ == 0)
		hub_want_sync_locked(h);
	/* The LISTEN takes effect where the listener's stream passes the next round trip (a
	 * fence even for a live channel): what was committed before arrives before it. */
	int st = atomic_load(&h->state);
	if (st == HUB_NONE || st == HUB_CONNECTING || st == HUB_UP) {
		*gen = ++h->gen_req;
		*wait = true;
		hub_want_sync_locked(h);
	}
out:
	pthread_mutex_unlock(&h->lock);
	return rc;
}

static void hub_unref(struct notify_hub *h, const char *name)
{
	pthread_mutex_lock(&h->lock);
	struct hub_chan *ch = chan_find(h, name);
	if (ch && ch->refs > 0 && --ch->refs == 0)
		hub_want_sync_locked(h);
	pthread_mutex_unlock(&h->lock);
}

/* ---- the client's channels and its queue ---- */

static int client_chan_index(const struct notify_client *nc, const char *name)
{
	for (int i = 0; i < nc->nchans; i++)
		if (strcmp(nc->chans[i].name, name) == 0)
			return i;
	return -1;
}

static struct notify_client *nc_get(struct client *c)
{
	if (c->notify)
		return c->notify;
	struct notify_hub *h = hub_of(c->worker->rt, c->pool, true);
	if (!h)
		return NULL;
	struct notify_client *nc = calloc(1, sizeof *nc);
	if (!nc)
		return NULL;
	nc->c = c;
	nc->hub = h;
	struct notify_worker *nw = nw_of(c->worker);
	nc->next = nw->clients;
	if (nw->clients)
		nw->clients->prev = nc;
	nw->clients = nc;
	c->notify = nc;
	relay_hooks_wake(c, &notify_relay_hooks, true);
	if (c->cred && !pool_rule(c->pool)->server_password) {
		pthread_mutex_lock(&h->lock);
		if (!h->have_cred) {
			h->cred = *c->cred;
			h->have_cred = true;
		}
		pthread_mutex_unlock(&h->lock);
	}
	return nc;
}

static void sent_done(struct notify_client *nc, bool rolled_back);

static void nc_free(struct notify_client *nc)
{
	struct client *c = nc->c;
	struct notify_worker *nw = nw_of(c->worker);
	sent_done(nc, true); /* left inside its transaction: the server rolls it back */
	if (nc->nchans > 0) {
		pthread_mutex_lock(&nc->hub->lock);
		nc->hub->clients--;
		pthread_mutex_unlock(&nc->hub->lock);
	}
	for (int i = 0; i < nc->nchans; i++)
		hub_unref(nc->hub, nc->chans[i].name);
	if (nc->prev)
		nc->prev->next = nc->next;
	else
		nw->clients = nc->next;
	if (nc->next)
		nc->next->prev = nc->prev;
	free(nc->chans);
	free(nc->q);
	c->notify = NULL;
	relay_hooks_wake(c, &notify_relay_hooks, false);
	c->tx_undo_watch = false;
	free(nc);
}

/* Subscribe (committed). 0, or -ENOSPC / -ENOMEM. *wait: the answer waits for *gen. */
static int client_listen(struct notify_client *nc, const char *name, uint64_t *gen, bool *wait)
{
	*wait = false;
	if (client_chan_index(nc, name) >= 0)
		return 0;
	if (nc->nchans == NOTIFY_CLIENT_CHANNELS_MAX)
		return -ENOSPC;
	if (nc->nchans == nc->cap) {
		int cap = nc->cap ? 2 * nc->cap : 4;
		void *n = realloc(nc->chans, (size_t)cap * sizeof *nc->chans);
		if (!n)
			return -ENOMEM;
		nc->chans = n;
		nc->cap = cap;
	}
	int rc = hub_ref(nc->hub, name, gen, wait);
	if (rc < 0)
		return rc;
	if (nc->nchans == 0) {
		pthread_mutex_lock(&nc->hub->lock);
		nc->hub->clients++;
		pthread_mutex_unlock(&nc->hub->lock);
	}
	struct nc_chan *ch = &nc->chans[nc->nchans++];
	snprintf(ch->name, sizeof ch->name, "%s", name);
	ch->gen = *wait ? *gen : 0;
	return 0;
}

static void client_unlisten(struct notify_client *nc, const char *name)
{
	int i = name ? client_chan_index(nc, name) : -1;
	if (name && i < 0)
		return;
	int from = name ? i : 0, to = name ? i + 1 : nc->nchans;
	for (int k = from; k < to; k++)
		hub_unref(nc->hub, nc->chans[k].name);
	if (name) {
		memmove(&nc->chans[i], &nc->chans[i + 1], (size_t)(nc->nchans - i - 1) * sizeof *nc->chans);
		nc->nchans--;
	} else {
		nc->nchans = 0;
	}
	if (nc->nchans == 0 && to > from) {
		pthread_mutex_lock(&nc->hub->lock);
		nc->hub->clients--;
		pthread_mutex_unlock(&nc->hub->lock);
	}
}

/* Apply one change: 0, or what client_listen failed with. */
static int apply_op(struct notify_client *nc, int kind, const char *name, uint64_t *gen, bool *wait)
{
	*wait = false;
	if (kind == CLASSIFY_LISTEN)
		return client_listen(nc, name, gen, wait);
	client_unlisten(nc, kind == CLASSIFY_UNLISTEN ? name : NULL);
	return 0;
}

/* Bytes may go to c's wbuf now: idle between transactions, nothing relayed half-way. */
static bool deliverable(const struct client *c)
{
	return c->state == CLIENT_IDLE && !c->server && c->s2c_scanned == 0 && c->s2c_remaining == 0;
}

static size_t msg_len_at(const uint8_t *p)
{
	return 1 + (((size_t)p[1] << 24) | ((size_t)p[2] << 16) | ((size_t)p[3] << 8) | (size_t)p[4]);
}

/* Move whole queued messages into wbuf and write (never closes the client). */
static bool flush_queue(struct notify_client *nc)
{
	struct client *c = nc->c;
	if (nc->qhead == nc->qlen || !deliverable(c))
		return true;
	if (buf_attach(&c->wbuf, &fe_of(c->worker)->wbufs) < 0)
		return true;
	size_t was = nc->qhead;
	/* Until the socket stops taking bytes: with wbuf left empty no write event would come
	 * back for the rest of the queue. */
	do {
		buf_compact(&c->wbuf);
		while (nc->qhead < nc->qlen) {
			size_t n = msg_len_at(nc->q + nc->qhead);
			if (buf_room(&c->wbuf) < n)
				break;
			memcpy(buf_tail(&c->wbuf), nc->q + nc->qhead, n);
			buf_produce(&c->wbuf, n);
			nc->qhead += n;
		}
		if (client_write_wbuf(c) < 0)
			break; /* seen again, and the client closed, by its own write event */
	} while (buf_empty(&c->wbuf) && nc->qhead < nc->qlen);
	if (nc->qhead != was)
		nc->stalled_since = ev_now(c->worker->loop);
	if (nc->qhead == nc->qlen) {
		nc->qhead = nc->qlen = 0;
	} else if (nc->qhead > nc->qcap / 2) {
		memmove(nc->q, nc->q + nc->qhead, nc->qlen - nc->qhead);
		nc->qlen -= nc->qhead;
		nc->qhead = 0;
	}
	client_update_io(c);
	return true;
}

static bool queue_stalled(const struct notify_client *nc, size_t queued, double now)
{
	return queued > NOTIFY_QUEUE_MAX && now - nc->stalled_since > NOTIFY_STALL_MAX;
}

static void fail_stalled(struct notify_client *nc)
{
	atomic_fetch_add(&nc->hub->rt->notify->closed_unread, 1);
	client_fail(nc->c, "53400",
		    "more than %u bytes of notifications queued for this client and none read for %.0f s: it does not read them",
		    NOTIFY_QUEUE_MAX, NOTIFY_STALL_MAX);
}

/* One whole message (a NotificationResponse, or tusk's NoticeResponse) for the client. */
static void deliver(struct notify_client *nc, const uint8_t *msg, size_t len)
{
	struct client *c = nc->c;
	if (c->state == CLIENT_CLOSING)
		return;
	size_t queued = nc->qlen - nc->qhead;
	if (queued == 0)
		nc->stalled_since = ev_now(c->worker->loop);
	if (queued + len > NOTIFY_QUEUE_HARD) {
		atomic_fetch_add(&nc->hub->rt->notify->closed_unread, 1);
		client_fail(c, "53400", "more than %u bytes of notifications queued for this client: it reads too slowly",
			    NOTIFY_QUEUE_HARD);
		return;
	}
	if (queue_stalled(nc, queued + len, ev_now(c->worker->loop))) {
		fail_stalled(nc);
		return;
	}
	uint8_t *n = grow_bytes(nc->q, &nc->qcap, nc->qlen + len, 4096);
	if (!n) {
		client_fail(c, "53200", "out of memory for notifications");
		return;
	}
	nc->q = n;
	memcpy(nc->q + nc->qlen, msg, len);
	nc->qlen += len;
	(void)flush_queue(nc);
}

/* ---- the hooks: answering LISTEN / UNLISTEN ---- */

/* The first word of sql is LISTEN or UNLISTEN (the cheap test before a parse). */
static bool starts_listen(const char *sql, size_t len)
{
	size_t i = 0;
	while (i < len && (sql[i] == ' ' || sql[i] == '\t' || sql[i] == '\n' || sql[i] == '\r'))
		i++;
	if (i < len && (sql[i] == 'u' || sql[i] == 'U')) {
		if (len - i < 2 || (sql[i + 1] != 'n' && sql[i + 1] != 'N'))
			return false;
		i += 2;
	}
	if (len - i < 6 || (sql[i] | 0x20) != 'l' || strncasecmp(sql + i, "listen", 6) != 0)
		return false;
	i += 6;
	return i == len || !((sql[i] >= 'a' && sql[i] <= 'z') || (sql[i] >= 'A' && sql[i] <= 'Z') ||
			     (sql[i] >= '0' && sql[i] <= '9') || sql[i] == '_' || (unsigned char)sql[i] >= 0x80);
}

/* Whether s[0, n) holds w (lower case, at least 2 bytes) in any case: the cheap test before a
 * parse. A byte loop: glibc's strcasestr sets up its two-way search at every call, which cost
 * more than the short texts it scanned on every request (docs/performance.md, "CPU per
 * transaction"). */
static bool has_ci(const char *s, size_t n, const char *w)
{
	size_t wn = strlen(w);
	for (size_t i = 0; i + wn <= n; i++)
		if ((s[i] | 0x20) == w[0] && (s[i + 1] | 0x20) == w[1] && strncasecmp(s + i, w, wn) == 0)
			return true;
	return false;
}

/* Whether s[0, n) holds "pg_listening_channels" in any case: memchr finds its first '_' (few
 * texts have many), then the rest is compared. Asked of every short Query. */
static bool has_listening_channels(const char *s, size_t n)
{
	static const char w[] = "pg_listening_channels";
	const size_t wn = sizeof w - 1;
	for (const char *u = s + 2; u < s + n && (u = memchr(u, '_', (size_t)(s + n - u))) != NULL; u++)
		if ((size_t)(s + n - (u - 2)) >= wn && strncasecmp(u - 2, w, wn) == 0)
			return true;
	return false;
}

/* Whether any pool has a hub (someone LISTENed through tusk since it started). */
static bool any_hub(const struct client *c)
{
	return atomic_load_explicit(&c->worker->rt->notify->any, memory_order_acquire);
}

/* One request at the head of rbuf that tusk answers itself. */
struct notify_req {
	size_t total;                          /* its bytes at the head of rbuf */
	int nops;
	struct notify_op ops[CLASSIFY_MAX_STMTS];
	bool channels;                         /* SELECT pg_listening_channels() */
	char col[NOTIFY_NAME_MAX];             /* ... its column's name */
	bool add_named;                        /* a named Parse to record in c->prep */
	struct prep_parse pp;                  /* ... pointing into rbuf */
	struct buf ans;                        /* the answer before its ReadyForQuery */
	uint8_t mem[NOTIFY_ANSWER_MAX];
};

enum notify_match { MATCH_NO, MATCH_PARTIAL, MATCH_YES };

static bool put_msg(struct buf *b, uint8_t type, const void *p, size_t n)
{
	struct proto_part part = { p, n };
	return proto_put_parts(b, type, 0, &part, n ? 1 : 0) == 0;
}

static const char *tag_of(int kind)
{
	return kind == CLASSIFY_LISTEN ? "LISTEN" : "UNLISTEN";
}

/* Whether sql is only LISTEN / UNLISTEN / UNLISTEN * statements (exactly one when one, the
 * extended protocol's case): appends them to q->ops, and (not one) their CommandCompletes to
 * q->ans. */
static bool listen_stmts(const struct client *c, const char *sql, size_t len, bool one, struct notify_req *q)
{
	struct classify_result r;
	if (!starts_listen(sql, len))
		return false;
	if (classify_sql_opts(sql, len, c->backslash_quotes ? CLASSIFY_O_BACKSLASH_QUOTES : 0, &r) < 0 ||
	    r.parse_error || r.truncated || r.nstmts < 1 || r.nstmts != r.nsession || r.calls ||
	    (one && r.nstmts != 1) || r.nstmts > CLASSIFY_MAX_STMTS)
		return false;
	for (int i = 0; i < r.nsession; i++) {
		const struct classify_stmt *st = &r.stmts[i];
		if (st->kind != CLASSIFY_LISTEN && st->kind != CLASSIFY_UNLISTEN && st->kind != CLASSIFY_UNLISTEN_ALL)
			return false;
		if ((st->flags & CLASSIFY_F_NAME_TRUNCATED) || (st->kind != CLASSIFY_UNLISTEN_ALL && !st->name[0]))
			return false;
	}
	for (int i = 0; i < r.nsession; i++) {
		struct notify_op *op = &q->ops[q->nops++];
		op->kind = (uint8_t)r.stmts[i].kind;
		snprintf(op->name, sizeof op->name, "%s", r.stmts[i].name);
		if (!one && proto_put_command_complete(&q->ans, tag_of(op->kind)) < 0)
			return false;
	}
	return true;
}

struct lex {
	const char *p, *end;
	bool backslash; /* standard_conforming_strings off: a backslash escapes in '...' */
};

static void lex_space(struct lex *l)
{
	while (l->p < l->end && (*l->p == ' ' || *l->p == '\t' || *l->p == '\n' || *l->p == '\r' || *l->p == '\f'))
		l->p++;
}

static bool lex_ident_char(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
	       ch == '$' || (unsigned char)ch >= 0x80;
}

/* The keyword word (lower case) and no identifier character after it. */
static bool lex_word(struct lex *l, const char *word)
{
	size_t n = strlen(word);
	lex_space(l);
	if ((size_t)(l->end - l->p) < n || strncasecmp(l->p, word, n) != 0 ||
	    (l->p + n < l->end && lex_ident_char(l->p[n])))
		return false;
	l->p += n;
	return true;
}

static bool lex_char(struct lex *l, char ch)
{
	lex_space(l);
	if (l->p == l->end || *l->p != ch)
		return false;
	l->p++;
	return true;
}

/* A token between quote characters q (q doubled for itself), into out: its length, -1 when
 * it is not one (or too long, or holds a backslash that would escape). */
static ssize_t lex_quoted(struct lex *l, char q, bool backslash, char *out, size_t cap)
{
	size_t n = 0;
	lex_space(l);
	if (l->p == l->end || *l->p != q)
		return -1;
	for (l->p++;; l->p++) {
		if (l->p == l->end || (backslash && *l->p == '\\'))
			return -1;
		if (*l->p == q) {
			if (l->p + 1 < l->end && l->p[1] == q)
				l->p++;
			else
				break;
		}
		if (n + 1 >= cap)
			return -1;
		out[n++] = *l->p;
	}
	l->p++;
	out[n] = '\0';
	return (ssize_t)n;
}

/* An identifier, as PostgreSQL folds it (unquoted: lower-cased ASCII), into out. */
static bool lex_ident(struct lex *l, char *out, size_t cap)
{
	size_t n = 0;
	lex_space(l);
	if (l->p < l->end && *l->p == '"')
		return lex_quoted(l, '"', false, out, cap) > 0;
	if (l->p == l->end || (*l->p >= '0' && *l->p <= '9') || *l->p == '$' || !lex_ident_char(*l->p))
		return false;
	for (; l->p < l->end && lex_ident_char(*l->p); l->p++) {
		if (n + 1 >= cap)
			return false;
		out[n++] = (char)(*l->p >= 'A' && *l->p <= 'Z' ? *l->p + 32 : *l->p);
	}
	out[n] = '\0';
	return true;
}

/* A plain string constant '...' ('' for a quote), into out. */
static bool lex_string(struct lex *l, char *out, size_t cap, size_t *len)
{
	ssize_t n = lex_quoted(l, '\'', l->backslash, out, cap);
	*len = n < 0 ? 0 : (size_t)n;
	return n >= 0;
}

/* SELECT [pg_catalog.]pg_listening_channels() [AS alias] or SELECT * FROM
 * [pg_catalog.]pg_listening_channels() (any case and spacing, one trailing semicolon): its
 * column name into col. */
static bool channels_query(const struct client *c, const char *sql, size_t len, char *col)
{
	struct lex l = { sql, sql + len, c->backslash_quotes };
	bool star;
	snprintf(col, NOTIFY_NAME_MAX, "pg_listening_channels");
	if (!lex_word(&l, "select"))
		return false;
	star = lex_char(&l, '*');
	if (star && !lex_word(&l, "from"))
		return false;
	const char *at = l.p;
	if (!(lex_word(&l, "pg_catalog") && lex_char(&l, '.')))
		l.p = at;
	if (!lex_word(&l, "pg_listening_channels") || !lex_char(&l, '(') || !lex_char(&l, ')'))
		return false;
	if (!star && lex_word(&l, "as") && !lex_ident(&l, col, NOTIFY_NAME_MAX))
		return false;
	(void)lex_char(&l, ';');
	lex_space(&l);
	return l.p == l.end;
}

/* The bytes of answer_channels' answer for c. */
static size_t channels_answer_len(const struct client *c)
{
	const struct notify_client *nc = c->notify;
	size_t need = 64 + NOTIFY_NAME_MAX + 6;
	for (int i = 0; nc && i < nc->nchans; i++)
		need += 11 + strlen(nc->chans[i].name);
	return need;
}

/* Whether a Query at p may be one tusk answers: its text starts with LISTEN or UNLISTEN
 * (after blanks: the first letter tells), or the client has committed channels and may ask
 * pg_listening_channels() (without any, a pooled server's answer is the same empty set:
 * a LISTEN that reaches a server pins the client to it). Most requests stop here, at a few
 * instructions instead of a header read, two memchr and a strncasecmp (~180 per request).
 * p may hold less than the message, or more (the next one): a guess, never a verdict. */
static bool query_may_match(const struct client *c, const uint8_t *p, size_t avail)
{
	if (c->notify && c->notify->nchans > 0)
		return true;
	for (size_t i = PROTO_HDR_LEN; i < avail; i++) {
		uint8_t ch = p[i];
		if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r')
			continue;
		ch |= 0x20;
		return ch == 'l' || ch == 'u';
	}
	return true; /* blanks so far: the full test waits for the rest */
}

/* A whole simple Query of LISTEN/UNLISTENs, or of pg_listening_channels(). */
static enum notify_match match_query(const struct client *c, const uint8_t *p, size_t avail, struct notify_req *q)
{
	struct proto_hdr h;
	const char *sql;
	size_t len;
	if (!query_may_match(c, p, avail))
		return MATCH_NO;
	if (proto_read_hdr(p, avail, c->worker->rt->cfg->max_message_size, &h) <= 0)
		return MATCH_NO;
	size_t total = (size_t)h.len + 1;
	if (total > avail || total > NOTIFY_SYNC_SQL_MAX ||
	    !relay_sql_of('Q', (const char *)p + PROTO_HDR_LEN, total - PROTO_HDR_LEN, &sql, &len))
		return MATCH_NO;
	q->total = total;
	if (listen_stmts(c, sql, len, false, q))
		return MATCH_YES;
	if (len < 256 && has_listening_channels(sql, len) && channels_query(c, sql, len, q->col) &&
	    channels_answer_len(c) <= NOTIFY_CHANNELS_ANSWER_MAX) {
		q->channels = true;
		return MATCH_YES;
	}
	return MATCH_NO;
}

/* The text of c's named statement name when it is one LISTEN/UNLISTEN without parameters. */
static bool named_listen(const struct client *c, const char *name, struct notify_req *q)
{
	if (!c->prep_on || !c->prep)
		return false;
	const struct prep_stmt *e = prep_client_find(c->prep, name);
	if (!e)
		return false;
	const char *text = (const char *)e->body;
	size_t tlen = strnlen(text, e->body_len);
	if (tlen + 3 > e->body_len || e->body[tlen + 1] != 0 || e->body[tlen + 2] != 0)
		return false; /* declares parameter types */
	return listen_stmts(c, text, tlen, true, q);
}

/* An extended-protocol batch up to its Sync that is one LISTEN/UNLISTEN: Parse [Describe S]
 * Bind [Describe P] Execute Sync of the statement parsed, or Bind [Describe P] Execute Sync of
 * a named statement the client prepared as one. Unnamed portal, no parameters. PARTIAL: what
 * is there so far fits, and the Sync has not arrived. */
static enum notify_match match_ext(const struct client *c, const uint8_t *p, size_t avail, struct notify_req *q)
{
	uint32_t max = c->worker->rt->cfg->max_message_size;
	size_t off = 0;
	bool parsed = false, bound = false, executed = false;
	const char *stmt = "";
	for (;;) {
		struct proto_hdr h;
		if (off == avail)
			return MATCH_PARTIAL;
		ssize_t rc = proto_read_hdr(p + off, avail - off, max, &h);
		if (rc < 0)
			return MATCH_NO;
		size_t total = rc == 0 ? 0 : (size_t)h.len + 1;
		if (rc == 0 || avail - off < total)
			return off > 0 && total <= NOTIFY_SYNC_SQL_MAX ? MATCH_PARTIAL : MATCH_NO;
		if (total > NOTIFY_SYNC_SQL_MAX)
			return MATCH_NO;
		const uint8_t *m = p + off;
		struct proto_reader r;
		proto_reader_init(&r, m + PROTO_HDR_LEN, total - PROTO_HDR_LEN);
		bool ok = true;
		switch (h.type) {
		case 'P': {
			/* The cheap test first, on the text after the statement's name: most Parses
			 * are not a LISTEN, and reading one whole cost more than the rest of this. */
			const uint8_t *body = m + PROTO_HDR_LEN, *end = m + total;
			const uint8_t *nul = memchr(body, 0, (size_t)(end - body));
			if (!nul || !starts_listen((const char *)nul + 1, (size_t)(end - nul - 1)))
				return MATCH_NO;
			if (parsed || bound || prep_read_parse(m, total, max, &q->pp) <= 0 || q->pp.nparams != 0 ||
			    !listen_stmts(c, q->pp.query, q->pp.query_len, true, q))
				return MATCH_NO;
			if (q->pp.name[0]) {
				if (!c->prep_on || prep_client_find(c->prep, q->pp.name))
					return MATCH_NO;
				q->add_named = true;
			}
			stmt = q->pp.name;
			parsed = true;
			ok = put_msg(&q->ans, '1', NULL, 0);
			break;
		}
		case 'D': {
			uint8_t kind = proto_get_u8(&r);
			const char *name = proto_get_cstr(&r);
			if (r.err || !name || proto_remaining(&r))
				return MATCH_NO;
			if (kind == 'S' && parsed && !bound && strcmp(name, stmt) == 0) {
				static const uint8_t no_params[2] = { 0, 0 };
				ok = put_msg(&q->ans, 't', no_params, sizeof no_params) && put_msg(&q->ans, 'n', NULL, 0);
			} else if (kind == 'P' && bound && !executed && name[0] == '\0') {
				ok = put_msg(&q->ans, 'n', NULL, 0);
			} else {
				return MATCH_NO;
			}
			break;
		}
		case 'B': {
			/* The cheap test first: an unnamed portal and no parameters, which most Binds
			 * have (the whole read below cost ~200 instructions per prepared transaction). */
			const uint8_t *body = m + PROTO_HDR_LEN, *end = m + total, *x;
			if (body == end || body[0] != 0 || !(x = memchr(body + 1, 0, (size_t)(end - body - 1))))
				return MATCH_NO;
			x++; /* the format codes' count */
			if (end - x < 2)
				return MATCH_NO;
			size_t fmts = 2u * ((size_t)x[0] << 8 | x[1]);
			if ((size_t)(end - x) < 2 + fmts + 2 || x[2 + fmts] != 0 || x[3 + fmts] != 0)
				return MATCH_NO;
			const char *portal = proto_get_cstr(&r), *name = proto_get_cstr(&r);
			uint16_t nf = proto_get_u16(&r);
			(void)proto_get_bytes(&r, 2u * nf);
			uint16_t np = proto_get_u16(&r);
			uint16_t nr = proto_get_u16(&r);
			(void)proto_get_bytes(&r, 2u * nr);
			if (bound || r.err || !portal || !name || portal[0] || np != 0 || proto_remaining(&r))
				return MATCH_NO;
			if (parsed ? strcmp(name, stmt) != 0 : !name[0] || !named_listen(c, name, q))
				return MATCH_NO;
			bound = true;
			ok = put_msg(&q->ans, '2', NULL, 0);
			break;
		}
		case 'E': {
			const char *portal = proto_get_cstr(&r);
			(void)proto_get_u32(&r);
			if (!bound || executed || r.err || !portal || portal[0] || proto_remaining(&r))
				return MATCH_NO;
			executed = true;
			ok = proto_put_command_complete(&q->ans, tag_of(q->ops[0].kind)) == 0;
			break;
		}
		case 'S':
			if (!executed)
				return MATCH_NO;
			q->total = off + total;
			return MATCH_YES;
		default:
			return MATCH_NO;
		}
		if (!ok)
			return MATCH_NO;
		off += total;
	}
}

/* Whether the head of c's rbuf is a request tusk answers (q filled when YES). */
static enum notify_match match_head(struct client *c, struct notify_req *q)
{
	const uint8_t *p = buf_head(&c->rbuf);
	size_t avail = buf_len(&c->rbuf);
	q->total = 0;
	q->nops = 0;
	q->channels = false;
	q->add_named = false;
	q->ans = (struct buf){ .data = q->mem, .cap = sizeof q->mem };
	if (c->state == CLIENT_CLOSING || avail < PROTO_HDR_LEN)
		return MATCH_NO;
	if (p[0] == 'Q')
		return match_query(c, p, avail, q);
	if (p[0] != 'P' && p[0] != 'B')
		return MATCH_NO;
	enum notify_match m = match_ext(c, p, avail, q);
	/* Waiting for the rest of a batch needs room for it in rbuf. */
	if (m == MATCH_PARTIAL && c->rbuf.cap - buf_len(&c->rbuf) < 1024)
		return MATCH_NO;
	return m;
}

/* ans (whole messages) and ReadyForQuery status into wbuf; false when there is no room. */
static bool answer(struct client *c, const uint8_t *ans, size_t len, uint8_t status)
{
	if (buf_attach(&c->wbuf, &fe_of(c->worker)->wbufs) < 0)
		return false;
	buf_compact(&c->wbuf);
	if (buf_room(&c->wbuf) < len + 6)
		return false;
	memcpy(buf_tail(&c->wbuf), ans, len);
	buf_produce(&c->wbuf, len);
	return proto_put_ready(&c->wbuf, status) == 0;
}

/* pg_listening_channels(): the client's committed channels (as PostgreSQL, whose list changes
 * at commit), in the order it listened to them. */
static bool answer_channels(struct client *c, const char *col, uint8_t status)
{
	const struct notify_client *nc = c->notify;
	int n = nc ? nc->nchans : 0;
	size_t need = channels_answer_len(c);
	if (buf_attach(&c->wbuf, &fe_of(c->worker)->wbufs) < 0)
		return false;
	buf_compact(&c->wbuf);
	if (buf_room(&c->wbuf) < need)
		return false;
	/* one column: no table, type text (OID 25), length -1, modifier -1, text format */
	uint8_t field[18] = { 0, 1 };
	static const uint8_t desc[18] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 25, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0 };
	struct proto_part rd[3] = { { field, 2 }, { col, strlen(col) + 1 }, { desc, sizeof desc } };
	if (proto_put_parts(&c->wbuf, 'T', 0, rd, 3) < 0)
		return false;
	for (int i = 0; i < n; i++) {
		uint32_t len = (uint32_t)strlen(nc->chans[i].name);
		uint8_t head[6] = { 0, 1, (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len };
		struct proto_part dr[2] = { { head, sizeof head }, { nc->chans[i].name, len } };
		if (proto_put_parts(&c->wbuf, 'D', 0, dr, 2) < 0)
			return false;
	}
	char tag[32];
	snprintf(tag, sizeof tag, "SELECT %d", n);
	return proto_put_command_complete(&c->wbuf, tag) == 0 && proto_put_ready(&c->wbuf, status) == 0;
}

/* Write what was answered; a failed write is seen again, and the client closed, by its own
 * write event (never closed here, inside the caller's path). */
static void write_out(struct client *c)
{
	(void)client_write_wbuf(c);
	client_update_io(c);
}

static void fail_op(struct client *c, int rc)
{
	if (rc == -ENOSPC)
		client_fail(c, "54000", "too many LISTEN channels on this connection (at most %d)",
			    NOTIFY_CLIENT_CHANNELS_MAX);
	else
		client_fail(c, "53200", "out of memory for LISTEN");
}

/* c's LISTEN state, made at its first LISTEN, and the named statement of q recorded; NULL
 * when there was no memory (the client is failed). */
static struct notify_client *take_req(struct client *c, struct notify_req *q)
{
	struct notify_client *nc = nc_get(c);
	if (!nc) {
		client_fail(c, "53200", "out of memory for LISTEN");
		return NULL;
	}
	if (q->add_named) {
		const struct prep_stmt *e;
		int rc = relay_prep_add(c, &q->pp, &e);
		if (rc < 0) {
			client_fail(c, rc == -EDQUOT ? "53400" : "53200", "%s",
				    rc == -EDQUOT ? "too many prepared statements on this connection"
						  : "out of memory for prepared statements");
			return NULL;
		}
	}
	return nc;
}

/* Whether the head of a client's rbuf without LISTEN state may be a request tusk answers:
 * false only where match_head would say MATCH_NO, for the requests most clients send (a Query
 * not starting with LISTEN/UNLISTEN, a Parse of another text, anything but a Bind), before
 * notify_request_at sets up its ~1.7 kB of request (about 60 instructions per request). */
static bool request_may_match(const struct client *c)
{
	const uint8_t *p = buf_head(&c->rbuf);
	size_t avail = buf_len(&c->rbuf);
	if (c->state == CLIENT_CLOSING)
		return true; /* notify_request_at's answer depends on it */
	if (avail < PROTO_HDR_LEN)
		return false;
	if (p[0] == 'Q')
		return query_may_match(c, p, avail);
	if (p[0] == 'P') {
		/* match_ext's first test: a whole Parse whose text (after the name) starts with
		 * LISTEN or UNLISTEN; a Parse not whole yet is MATCH_NO there as well. */
		struct proto_hdr h;
		if (proto_read_hdr(p, avail, c->worker->rt->cfg->max_message_size, &h) <= 0)
			return false;
		size_t total = (size_t)h.len + 1;
		if (total > avail || total > NOTIFY_SYNC_SQL_MAX)
			return false;
		const uint8_t *body = p + PROTO_HDR_LEN, *end = p + total;
		const uint8_t *nul = memchr(body, 0, (size_t)(end - body));
		return nul && starts_listen((const char *)nul + 1, (size_t)(end - nul - 1));
	}
	return p[0] == 'B';
}

static bool notify_request_at(struct client *c);

/* An idle client's requests: answer the LISTEN/UNLISTENs (and pg_listening_channels()) at
 * the head of rbuf. True when nothing is left for a server (or the client waits for the
 * listener, or for the rest of a batch). */
static bool notify_request(struct client *c, const struct server *s)
{
	if (s)
		return false;
	if (!c->notify && !request_may_match(c))
		return false;
	return notify_request_at(c);
}

static __attribute__((noinline)) bool notify_request_at(struct client *c)
{
	if (c->notify && c->notify->waiting)
		return true; /* the answer owed comes first */
	struct notify_req q;
	bool answered = false;
	enum notify_match m;
	while ((m = match_head(c, &q)) == MATCH_YES) {
		if (q.channels) {
			if (!answer_channels(c, q.col, 'I')) {
				client_fail(c, "53200", "no room to answer pg_listening_channels()");
				return true;
			}
			buf_consume(&c->rbuf, q.total);
			answered = true;
			continue;
		}
		struct notify_client *nc = take_req(c, &q);
		if (!nc)
			return true;
		uint64_t wait_gen = 0;
		bool wait_any = false;
		for (int i = 0; i < q.nops; i++) {
			uint64_t gen = 0;
			bool wait = false;
			int rc = apply_op(nc, q.ops[i].kind, q.ops[i].name, &gen, &wait);
			if (rc < 0) {
				fail_op(c, rc);
				return true;
			}
			if (wait) {
				wait_any = true;
				wait_gen = gen;
			}
		}
		buf_consume(&c->rbuf, q.total);
		/* the listener may have answered already */
		if (wait_any && atomic_load(&nc->hub->gen_done) < wait_gen) {
			nc->waiting = true;
			nc->waiting_commit = false;
			nc->wait_gen = wait_gen;
			memcpy(nc->owed, buf_head(&q.ans), buf_len(&q.ans));
			nc->owed_len = buf_len(&q.ans);
			if (answered)
				write_out(c);
			return true;
		}
		if (!answer(c, buf_head(&q.ans), buf_len(&q.ans), 'I')) {
			client_fail(c, "53200", "no room to answer LISTEN");
			return true;
		}
		answered = true;
	}
	if (answered)
		write_out(c);
	if (m == MATCH_PARTIAL)
		return true; /* the rest of the batch comes with the next read */
	if (!answered)
		return c->state == CLIENT_CLOSING;
	return buf_empty(&c->rbuf);
}

/* Inside a transaction: answer LISTEN/UNLISTEN, keep the change until the commit. */
static bool notify_linked(struct client *c, struct server *s)
{
	struct notify_req q;
	bool answered = false;
	while (match_head(c, &q) == MATCH_YES) {
		bool ok;
		if (s->tx_status == 'E') {
			ok = buf_attach(&c->wbuf, &fe_of(c->worker)->wbufs) == 0 && buf_room(&c->wbuf) >= 200 &&
			     proto_put_error(&c->wbuf, "ERROR", "25P02",
					     "current transaction is aborted, commands ignored until end of transaction block",
					     NULL, NULL) == 0 &&
			     proto_put_ready(&c->wbuf, 'E') == 0;
		} else if (q.channels) {
			ok = answer_channels(c, q.col, 'T');
		} else {
			struct notify_client *nc = take_req(c, &q);
			if (!nc)
				return false;
			if (nc->npending + q.nops > NOTIFY_PENDING_MAX) {
				client_fail(c, "54000", "too many LISTEN/UNLISTEN in one transaction (at most %d)",
					    NOTIFY_PENDING_MAX);
				return false;
			}
			for (int i = 0; i < q.nops; i++)
				nc->pending[nc->npending++] = q.ops[i];
			c->tx_undo_watch = true;
			ok = answer(c, buf_head(&q.ans), buf_len(&q.ans), 'T');
		}
		if (!ok) {
			client_fail(c, "53200", "no room to answer LISTEN");
			return false;
		}
		buf_consume(&c->rbuf, q.total);
		answered = true;
	}
	if (answered)
		(void)client_write_wbuf(c);
	return true;
}

/* ---- own NOTIFYs: the sender's pid ---- */

static uint64_t note_hash(const char *chan, size_t clen, const char *payload, size_t plen)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < clen; i++)
		h = (h ^ (uint8_t)chan[i]) * 1099511628211ull;
	h = (h ^ 0xffu) * 1099511628211ull; /* a byte no channel holds: "a" + "bc" is not "ab" + "c" */
	for (size_t i = 0; i < plen; i++)
		h = (h ^ (uint8_t)payload[i]) * 1099511628211ull;
	return h;
}

static bool lex_arg(struct lex *l, char *out, size_t cap, struct notify_arg *a)
{
	lex_space(l);
	a->param = 0;
	a->len = 0;
	if (l->p < l->end && *l->p == '$') {
		for (l->p++; l->p < l->end && *l->p >= '0' && *l->p <= '9' && a->param < 1000; l->p++)
			a->param = a->param * 10 + (*l->p - '0');
		return a->param >= 1 && a->param < 1000;
	}
	return lex_string(l, out, cap, &a->len);
}

/* The text is exactly one `NOTIFY channel [, 'payload']` or `SELECT [pg_catalog.]pg_notify(
 * arg, arg)` where each arg is a constant or (pg_notify) a parameter $n (a trailing semicolon
 * allowed): the channel and payload, constants into chan and payload. */
static bool read_notify(const struct client *c, const char *sql, size_t len, char *chan, struct notify_arg *ca,
			char *payload, struct notify_arg *pa)
{
	struct lex l = { sql, sql + len, c->backslash_quotes };
	*ca = (struct notify_arg){ 0 };
	*pa = (struct notify_arg){ 0 };
	payload[0] = '\0';
	if (lex_word(&l, "notify")) {
		if (!lex_ident(&l, chan, NOTIFY_NAME_MAX))
			return false;
		ca->len = strlen(chan);
		if (lex_char(&l, ',') && !lex_string(&l, payload, NOTIFY_PAYLOAD_MAX, &pa->len))
			return false;
	} else {
		l.p = sql;
		if (!lex_word(&l, "select"))
			return false;
		const char *at = l.p;
		if (!(lex_word(&l, "pg_catalog") && lex_char(&l, '.')))
			l.p = at;
		if (!lex_word(&l, "pg_notify") || !lex_char(&l, '(') || !lex_arg(&l, chan, NOTIFY_NAME_MAX, ca) ||
		    (!ca->param && ca->len == 0) || !lex_char(&l, ',') ||
		    !lex_arg(&l, payload, NOTIFY_PAYLOAD_MAX, pa) || !lex_char(&l, ')'))
			return false;
	}
	(void)lex_char(&l, ';');
	lex_space(&l);
	return l.p == l.end;
}

/* The hub to record c's NOTIFYs in: none when nobody listens through tusk on its pool. */
static struct notify_hub *sent_hub(struct client *c)
{
	struct notify_hub *h = c->notify ? c->notify->hub : hub_of(c->worker->rt, c->pool, false);
	return h && atomic_load(&h->state) != HUB_NONE && c->server ? h : NULL;
}

/* c's transaction sends channel and payload from its server: remember it (once per channel
 * and payload per transaction, as PostgreSQL folds). */
static void sent_record(struct client *c, struct notify_hub *h, const char *chan, size_t clen, const char *payload,
			size_t plen)
{
	uint64_t hash = note_hash(chan, clen, payload, plen);
	struct notify_client *nc = nc_get(c);
	if (!nc || nc->nsent == NOTIFY_SENT_TX)
		return;
	for (int i = 0; i < nc->nsent; i++)
		if (nc->sent_hash[i] == hash)
			return; /* folded into the first by PostgreSQL */
	pthread_mutex_lock(&h->sent_lock);
	if (!h->sent)
		h->sent = calloc(NOTIFY_SENT_MAX, sizeof *h->sent);
	if (h->sent) {
		/* a free slot, else the oldest */
		struct notify_sent *e = &h->sent[0];
		for (int i = 0; i < NOTIFY_SENT_MAX && e->seq; i++)
			if (!h->sent[i].seq || h->sent[i].seq < e->seq)
				e = &h->sent[i];
		if (!e->seq)
			atomic_fetch_add(&h->nsent, 1);
		*e = (struct notify_sent){ .seq = ++h->sent_seq, .hash = hash, .server_pid = c->server->backend_pid,
					   .client_pid = c->cancel_pid, .at = ev_now(c->worker->loop) };
		nc->sent_seq[nc->nsent] = e->seq;
		nc->sent_hash[nc->nsent++] = hash;
	}
	pthread_mutex_unlock(&h->sent_lock);
}

/* c sends sql (a Query's, or a Parse's) to its server: a NOTIFY of constants is recorded now;
 * a pg_notify() with parameters, at each Bind (notify_bind): its form is kept for the unnamed
 * statement (a named one's text comes with its Bind). */
static __attribute__((noinline)) void sent_note(struct client *c, const char *sql, size_t len)
{
	char chan[NOTIFY_NAME_MAX];
	char payload[NOTIFY_PAYLOAD_MAX];
	struct notify_arg ca, pa;
	struct notify_hub *h;
	/* notify_sql cleared the unnamed statement's form and tested any_hub and "notify" */
	if (!(h = sent_hub(c)) || !read_notify(c, sql, len, chan, &ca, payload, &pa))
		return; /* nobody listens through tusk, or not one NOTIFY tusk can read */
	if (!ca.param && !pa.param) {
		sent_record(c, h, chan, ca.len, payload, pa.len);
		return;
	}
	struct notify_client *nc = nc_get(c);
	if (!nc || ca.len >= sizeof nc->tmpl_chan || pa.len >= sizeof nc->tmpl_payload)
		return;
	memcpy(nc->tmpl_chan, chan, ca.len + 1);
	memcpy(nc->tmpl_payload, payload, pa.len + 1);
	nc->tmpl_ca = ca;
	nc->tmpl_pa = pa;
	nc->tmpl_ok = true;
}

/* The Parse just seen named a statement: its form is read again from its text at each Bind. */
static void notify_parsed(struct client *c, const char *name, const uint8_t *rest, size_t rest_len)
{
	(void)rest;
	(void)rest_len;
	if (c->notify && (!name || name[0]))
		c->notify->tmpl_ok = false;
}

/* Parameter n (1-based) of a whole Bind body: its bytes (text, or binary: for text the same
 * bytes), NULL for SQL NULL. False when malformed or missing. */
static bool bind_param(const uint8_t *body, size_t len, int n, const char **val, size_t *vlen)
{
	struct proto_reader r;
	proto_reader_init(&r, body, len);
	(void)proto_get_cstr(&r);
	(void)proto_get_cstr(&r);
	uint16_t nf = proto_get_u16(&r);
	(void)proto_get_bytes(&r, 2u * nf);
	uint16_t np = proto_get_u16(&r);
	if (r.err || n > np)
		return false;
	for (int i = 1; i <= n; i++) {
		int32_t l = (int32_t)proto_get_u32(&r);
		const uint8_t *v = l > 0 ? proto_get_bytes(&r, (size_t)l) : NULL;
		if (r.err || l < -1 || (l > 0 && !v))
			return false;
		if (i == n) {
			*val = (const char *)v;
			*vlen = l > 0 ? (size_t)l : 0;
			if (l == 0)
				*val = "";
		}
	}
	return true;
}

/* One argument's bytes: the constant, or the Bind's parameter (NULL as ''). */
static bool arg_value(const uint8_t *body, size_t len, const struct notify_arg *a, const char *cst, const char **v,
		      size_t *vlen)
{
	if (!a->param) {
		*v = cst;
		*vlen = a->len;
		return true;
	}
	if (!bind_param(body, len, a->param, v, vlen))
		return false;
	if (!*v)
		*v = "";
	return true;
}

static void bind_note(struct client *c, const uint8_t *m, bool unnamed, const char *text, size_t tlen);

/* A Bind runs a pg_notify() with parameters: record it with their values. The tests inline,
 * the work (a frame of 8 kB) apart. */
static bool notify_bind(struct client *c, const uint8_t *m, size_t avail, bool unnamed, const char *text, size_t tlen)
{
	if (avail < PROTO_HDR_LEN || msg_len_at(m) > avail || (unnamed && !(c->notify && c->notify->tmpl_ok)))
		return true;
	if (!unnamed && (!text || tlen > NOTIFY_PAYLOAD_MAX + 256 || !any_hub(c) || !has_ci(text, tlen, "notify")))
		return true;
	bind_note(c, m, unnamed, text, tlen);
	return true;
}

static __attribute__((noinline)) void bind_note(struct client *c, const uint8_t *m, bool unnamed, const char *text,
						size_t tlen)
{
	char chan[NOTIFY_NAME_MAX];
	char payload[NOTIFY_PAYLOAD_MAX];
	struct notify_arg ca, pa;
	struct notify_hub *h;
	const char *cv, *pv;
	size_t cl, pl;
	if (!(h = sent_hub(c)))
		return;
	if (unnamed) {
		struct notify_client *nc = c->notify;
		memcpy(chan, nc->tmpl_chan, sizeof nc->tmpl_chan);
		memcpy(payload, nc->tmpl_payload, sizeof nc->tmpl_payload);
		ca = nc->tmpl_ca;
		pa = nc->tmpl_pa;
	} else if (!read_notify(c, text, tlen, chan, &ca, payload, &pa) || (!ca.param && !pa.param)) {
		return; /* not one, or of constants: recorded at its Parse */
	}
	const uint8_t *body = m + PROTO_HDR_LEN;
	size_t blen = msg_len_at(m) - PROTO_HDR_LEN;
	if (arg_value(body, blen, &ca, chan, &cv, &cl) && cl > 0 && cl < NOTIFY_NAME_MAX && !memchr(cv, 0, cl) &&
	    arg_value(body, blen, &pa, payload, &pv, &pl) && pl < NOTIFY_PAYLOAD_MAX && !memchr(pv, 0, pl))
		sent_record(c, h, cv, cl, pv, pl);
}

/* c's transaction ended: its NOTIFYs stay to be matched (a commit) or go (a rollback). */
static void sent_done(struct notify_client *nc, bool rolled_back)
{
	struct notify_hub *h = nc->hub;
	if (nc->nsent == 0)
		return;
	if (rolled_back) {
		pthread_mutex_lock(&h->sent_lock);
		for (int k = 0; k < nc->nsent; k++)
			for (int i = 0; h->sent && i < NOTIFY_SENT_MAX; i++)
				if (h->sent[i].seq == nc->sent_seq[k]) {
					h->sent[i].seq = 0;
					atomic_fetch_sub(&h->nsent, 1);
				}
		pthread_mutex_unlock(&h->sent_lock);
	}
	nc->nsent = 0;
}

/* The listener got a notification from server_pid: the client pid of the earliest NOTIFY sent
 * there with that channel and payload (taken), or 0 (a trigger's, another program's). */
static uint32_t sent_match(struct notify_hub *h, uint32_t server_pid, uint64_t hash, double now)
{
	uint32_t pid = 0;
	if (atomic_load(&h->nsent) == 0)
		return 0;
	pthread_mutex_lock(&h->sent_lock);
	struct notify_sent *best = NULL;
	for (int i = 0; h->sent && i < NOTIFY_SENT_MAX; i++) {
		struct notify_sent *e = &h->sent[i];
		if (!e->seq)
			continue;
		if (now - e->at > NOTIFY_SENT_TTL) {
			e->seq = 0;
			atomic_fetch_sub(&h->nsent, 1);
			continue;
		}
		if (e->server_pid == server_pid && e->hash == hash && (!best || e->seq < best->seq))
			best = e;
	}
	if (best) {
		pid = best->client_pid;
		best->seq = 0;
		atomic_fetch_sub(&h->nsent, 1);
	}
	pthread_mutex_unlock(&h->sent_lock);
	return pid;
}

/* c's transaction is over: its changes were applied or dropped. */
static void tx_done(struct notify_client *nc)
{
	nc->npending = 0;
	nc->nmarks = 0;
	nc->marks_lost = false;
	nc->c->tx_undo_watch = false;
}

/* The ReadyForQuery 'I' ending c's transaction: apply its changes (a commit) or drop them;
 * hold the ReadyForQuery until the listener has LISTENed to a new channel. */
static bool notify_commit_wait(struct client *c, bool last)
{
	struct notify_client *nc = c->notify;
	(void)last;
	if (!nc)
		return false;
	if (nc->waiting)
		return nc->waiting_commit && atomic_load(&nc->hub->gen_done) < nc->wait_gen;
	if (nc->npending == 0)
		return false;
	bool wait_any = false;
	uint64_t wait_gen = 0;
	if (!c->tx_failed) {
		for (int i = 0; i < nc->npending; i++) {
			uint64_t gen = 0;
			bool wait = false;
			if (apply_op(nc, nc->pending[i].kind, nc->pending[i].name, &gen, &wait) < 0)
				continue; /* over the bound: the change is lost (logged) */
			if (wait) {
				wait_any = true;
				wait_gen = gen;
			}
		}
	}
	tx_done(nc);
	if (wait_any && atomic_load(&nc->hub->gen_done) < wait_gen) {
		nc->waiting = true;
		nc->waiting_commit = true;
		nc->wait_gen = wait_gen;
		return true;
	}
	return false;
}

static void notify_ready(struct client *c, bool last)
{
	struct notify_client *nc = c->notify;
	(void)last;
	if (!nc)
		return;
	sent_done(nc, c->tx_failed);
	if (c->tx_failed)
		tx_done(nc); /* rolled back */
	else if (nc->npending == 0)
		nc->nmarks = 0;
}

/* Savepoints: a ROLLBACK TO drops the LISTEN/UNLISTENs made after its savepoint, a RELEASE
 * forgets the savepoints from its own on (their changes stay). Only a listening client's
 * texts are read (sql ends with a NUL); one that made its first LISTEN after the savepoint had
 * nothing before. */
static __attribute__((noinline)) void note_savepoints(struct notify_client *nc, const char *sql, size_t len)
{
	struct client *c = nc->c;
	struct classify_result r;
	if (!(has_ci(sql, len, "savepoint") || has_ci(sql, len, "rollback") || has_ci(sql, len, "release")))
		return;
	if (classify_sql_opts(sql, len, c->backslash_quotes ? CLASSIFY_O_BACKSLASH_QUOTES : 0, &r) < 0 || r.parse_error)
		return;
	for (int i = 0; i < r.nsession; i++) {
		const struct classify_stmt *st = &r.stmts[i];
		int k = nc->nmarks - 1;
		if (st->kind != CLASSIFY_SAVEPOINT && st->kind != CLASSIFY_RELEASE && st->kind != CLASSIFY_ROLLBACK_TO)
			continue;
		if (st->kind == CLASSIFY_SAVEPOINT) {
			if (nc->nmarks == NOTIFY_MARKS_MAX) {
				nc->marks_lost = true;
				continue;
			}
			snprintf(nc->marks[nc->nmarks].name, NOTIFY_NAME_MAX, "%s", st->name);
			nc->marks[nc->nmarks++].at = nc->npending;
			continue;
		}
		while (k >= 0 && strcmp(nc->marks[k].name, st->name) != 0)
			k--;
		if (st->kind == CLASSIFY_RELEASE) {
			nc->nmarks = k >= 0 ? k : nc->nmarks;
		} else if (k >= 0) {
			nc->npending = nc->marks[k].at; /* the savepoint itself stays */
			nc->nmarks = k + 1;
		} else if (!nc->marks_lost) {
			nc->npending = 0; /* made before this client listened in the transaction */
		}
	}
}

/* Every Query's and Parse's text: NOTIFYs sent (once someone listens through tusk), and a
 * listening client's savepoints. The tests inline, the work (frames of kilobytes) apart. */
static void notify_sql(struct client *c, const char *sql, size_t len)
{
	if (c->notify)
		c->notify->tmpl_ok = false;
	if (len <= NOTIFY_PAYLOAD_MAX + 256 && any_hub(c) && has_ci(sql, len, "notify"))
		sent_note(c, sql, len);
	struct notify_client *nc = c->notify; /* sent_note may have made it */
	if (nc && len <= NOTIFY_SYNC_SQL_MAX)
		note_savepoints(nc, sql, len);
}

static void notify_idle(struct client *c)
{
	struct notify_client *nc = c->notify;
	if (!nc)
		return;
	if (nc->qhead < nc->qlen) {
		(void)flush_queue(nc);
		return;
	}
	if (nc->nchans == 0 && nc->npending == 0 && nc->nsent == 0 && !nc->waiting)
		nc_free(nc);
}

static bool notify_writable(struct client *c)
{
	if (c->notify)
		(void)flush_queue(c->notify);
	return false;
}

static bool notify_quiet(const struct client *c)
{
	return c->notify == NULL; /* a listening client stays on its worker */
}

static void notify_closed(struct client *c)
{
	if (c->notify)
		nc_free(c->notify);
}

static bool notify_wants(const struct tusk_config *cfg, const struct config_pool_rule *rule)
{
	(void)cfg;
	return rule && rule->mode != POOL_MODE_SESSION;
}

const struct relay_hooks notify_relay_hooks = {
	.name = "notify",
	/* nothing to do for a client without LISTEN state (c->notify; nc_get wakes, nc_free
	 * puts to sleep): the relay skips these for it */
	.dormant = RH_WRITABLE | RH_QUIET | RH_CLOSED | RH_PARSED | RH_COMMIT_WAIT | RH_READY | RH_IDLE,
	.wants = notify_wants,
	.request = notify_request,
	.writable = notify_writable,
	.quiet = notify_quiet,
	.closed = notify_closed,
	.commit_wait = notify_commit_wait,
	.ready = notify_ready,
	.sql = notify_sql,
	.parsed = notify_parsed,
	.bind = notify_bind,
	.linked = notify_linked,
	.idle = notify_idle,
};

/* ---- the fan-out, on each worker ---- */

static void resume(struct notify_client *nc)
{
	struct client *c = nc->c;
	nc->waiting = false;
	if (nc->waiting_commit) {
		relay_resume(c);
		return;
	}
	if (c->state == CLIENT_CLOSING)
		return;
	if (!answer(c, nc->owed, nc->owed_len, 'I')) {
		client_fail(c, "53200", "no room to answer LISTEN");
		return;
	}
	write_out(c);
	if (c->state == CLIENT_IDLE && !buf_empty(&c->rbuf))
		client_need_server(c);
}

/* The listener's stream passed gen (in the message: acks and notifications come in the
 * stream's order through each inbox). */
static void on_ack_msg(struct worker *w, struct worker_msg *m)
{
	struct notify_hub *h = m->arg;
	uint64_t done = (uint64_t)m->u32[0] << 32 | m->u32[1];
	struct notify_client *nc = nw_of(w)->clients, *next;
	for (; nc; nc = next) {
		next = nc->next;
		if (nc->hub != h)
			continue;
		for (int i = 0; i < nc->nchans; i++)
			if (nc->chans[i].gen <= done)
				nc->chans[i].gen = 0;
		if (nc->waiting && nc->wait_gen <= done)
			resume(nc);
	}
}

static void post_ack(struct notify_hub *h, uint64_t gen)
{
	atomic_store(&h->gen_done, gen);
	for (int i = 0; i < h->rt->nworkers; i++) {
		struct worker_msg *m = worker_msg_new();
		if (!m)
			continue;
		m->fn = on_ack_msg;
		m->arg = h;
		m->u32[0] = (uint32_t)(gen >> 32);
		m->u32[1] = (uint32_t)gen;
		worker_post(h->rt->workers[i], m);
	}
}

static void on_note_msg(struct worker *w, struct worker_msg *m)
{
	struct notify_hub *h = m->arg;
	struct notify_note *n = m->arg2;
	const char *chan = (const char *)n->msg + n->chan_off;
	struct notify_client *nc = nw_of(w)->clients, *next;
	for (; nc; nc = next) {
		next = nc->next;
		int i = nc->hub == h ? client_chan_index(nc, chan) : -1;
		if (i >= 0 && nc->chans[i].gen == 0)
			deliver(nc, n->msg, n->len);
	}
	if (atomic_fetch_sub(&n->refs, 1) == 1)
		free(n);
}

static void on_missed_msg(struct worker *w, struct worker_msg *m)
{
	struct notify_hub *h = m->arg;
	uint8_t mem[512];
	struct buf b = { .data = mem, .cap = sizeof mem };
	if (proto_put_notice(&b, "WARNING", "01000",
			     "tusk: the LISTEN connection was lost and made again; notifications may have been missed",
			     NULL, NULL) < 0)
		return;
	struct notify_client *nc = nw_of(w)->clients, *next;
	for (; nc; nc = next) {
		next = nc->next;
		if (nc->hub == h && nc->nchans > 0)
			deliver(nc, buf_head(&b), buf_len(&b));
	}
}

/* ---- the listener, on the hub's home worker ---- */

static void hub_connect(struct notify_hub *h);

static void hub_release_waiters(struct notify_hub *h)
{
	pthread_mutex_lock(&h->lock);
	uint64_t gen = h->gen_req;
	pthread_mutex_unlock(&h->lock);
	post_ack(h, gen);
}

static void reconnect_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	(void)loop;
	(void)revents;
	hub_connect(t->data);
}

static void hub_down(struct notify_hub *h, const char *reason)
{
	struct worker *w = h->rt->workers[h->home];
	log_warn("notify", pool_database(h->pool), "LISTEN connection for %s/%s lost: %s; reconnecting",
		 pool_database(h->pool), pool_user(h->pool), reason);
	h->s = NULL;
	h->inflight = false;
	atomic_store(&h->state, HUB_DOWN);
	pthread_mutex_lock(&h->lock);
	int k = 0;
	for (int i = 0; i < h->nchans; i++) {
		h->chans[i].live = false;
		h->chans[i].inflight = false;
		if (h->chans[i].refs > 0)
			h->chans[k++] = h->chans[i];
	}
	h->nchans = k;
	pthread_mutex_unlock(&h->lock);
	hub_release_waiters(h);
	if (w->stopping)
		return;
	h->backoff = h->backoff > 0 ? h->backoff * 2 : NOTIFY_BACKOFF_MIN;
	if (h->backoff > NOTIFY_BACKOFF_MAX)
		h->backoff = NOTIFY_BACKOFF_MAX;
	if (!h->timer_init) {
		ev_timer_init(&h->timer, reconnect_cb, 0, 0);
		h->timer.data = h;
		h->timer_init = true;
	}
	ev_timer_stop(w->loop, &h->timer);
	ev_timer_set(&h->timer, h->backoff, 0);
	ev_timer_start(w->loop, &h->timer);
}

static int flush_server(struct server *s)
{
	while (!buf_empty(&s->wbuf)) {
		ssize_t n = tls_link_write(s->fd, &s->tls, buf_head(&s->wbuf), buf_len(&s->wbuf));
		if (n > 0) {
			buf_consume(&s->wbuf, (size_t)n);
			continue;
		}
		return n == -EAGAIN ? 0 : -1;
	}
	return 0;
}

static void watch(struct notify_hub *h)
{
	struct server *s = h->s;
	evio_watch(s->worker->loop, &s->io, s->fd, tls_link_events(&s->tls, true, !buf_empty(&s->wbuf)));
	if (s->tls.buffered)
		ev_feed_event(s->worker->loop, &s->io, EV_READ);
}

/* Append `VERB "name"` with the name quoted as PostgreSQL quotes an identifier. */
static size_t put_stmt(char *out, size_t at, size_t cap, const char *verb, const char *name)
{
	size_t need = strlen(verb) + 2 * strlen(name) + 5;
	if (at + need >= cap)
		return 0;
	at += (size_t)snprintf(out + at, cap - at, "%s \"", verb);
	for (const char *p = name; *p; p++) {
		if (*p == '"')
			out[at++] = '"';
		out[at++] = *p;
	}
	out[at++] = '"';
	out[at++] = ';';
	out[at] = '\0';
	return at;
}

/* Send the LISTEN/UNLISTENs the union needs, or an empty query as a fence when only new
 * subscribers wait; when its ReadyForQuery comes (hub_synced), every subscription up to the
 * generation sent is live. */
static void hub_sync(struct notify_hub *h)
{
	struct server *s = h->s;
	if (!s || atomic_load(&h->state) != HUB_UP || h->inflight)
		return;
	char *sql = malloc(NOTIFY_SYNC_SQL_MAX);
	if (!sql)
		return;
	size_t at = 0;
	bool complete = true;
	sql[0] = '\0';
	pthread_mutex_lock(&h->lock);
	int k = 0;
	for (int i = 0; i < h->nchans; i++) {
		struct hub_chan *ch = &h->chans[i];
		bool want = ch->refs > 0;
		if (want != ch->live) {
			size_t n = put_stmt(sql, at, NOTIFY_SYNC_SQL_MAX, want ? "LISTEN" : "UNLISTEN", ch->name);
			if (n) {
				at = n;
				ch->inflight = true;
				ch->want = want;
			} else {
				complete = false;
			}
		}
		if (ch->refs > 0 || ch->live || ch->inflight)
			h->chans[k++] = *ch;
	}
	h->nchans = k;
	uint64_t gen = h->gen_req;
	pthread_mutex_unlock(&h->lock);
	if (at == 0 && gen <= atomic_load(&h->gen_done)) {
		free(sql);
		if (h->missed_pending) {
			h->missed_pending = false;
			post_all(h, on_missed_msg);
		}
		return;
	}
	int rc = proto_put_query(&s->wbuf, sql); /* "": a fence, answered EmptyQueryResponse */
	free(sql);
	if (rc < 0 || flush_server(s) < 0) {
		server_close(s, "write to the LISTEN connection failed");
		hub_down(h, "write failed");
		return;
	}
	h->inflight = true;
	h->sent_gen = complete ? gen : atomic_load(&h->gen_done);
	watch(h);
}

/* The listener's Query is answered: what it asked is live (or not) now. */
static void hub_synced(struct notify_hub *h)
{
	pthread_mutex_lock(&h->lock);
	for (int i = 0; i < h->nchans; i++) {
		struct hub_chan *ch = &h->chans[i];
		if (ch->inflight) {
			ch->live = ch->want;
			ch->inflight = false;
		}
	}
	pthread_mutex_unlock(&h->lock);
	h->inflight = false;
	if (h->sent_gen > atomic_load(&h->gen_done))
		post_ack(h, h->sent_gen);
	hub_sync(h);
}

static void fan_out(struct notify_hub *h, const uint8_t *m, size_t total)
{
	struct proto_reader r;
	proto_reader_init(&r, m + PROTO_HDR_LEN, total - PROTO_HDR_LEN);
	uint32_t pid = proto_get_u32(&r); /* the notifying backend's */
	size_t clen, plen;
	const char *chan = proto_get_cstr_n(&r, &clen);
	const char *payload = proto_get_cstr_n(&r, &plen);
	if (r.err || !chan || !payload)
		return;
	atomic_fetch_add(&h->relayed, 1);
	struct notify_note *n = malloc(sizeof *n + total);
	if (!n)
		return;
	memcpy(n->msg, m, total);
	/* A client's own NOTIFY carries its BackendKeyData pid (the others': a pid not theirs). */
	uint32_t own = sent_match(h, pid, note_hash(chan, clen, payload, plen), ev_now(h->rt->workers[h->home]->loop));
	if (own) {
		uint8_t *w = n->msg + PROTO_HDR_LEN;
		w[0] = (uint8_t)(own >> 24);
		w[1] = (uint8_t)(own >> 16);
		w[2] = (uint8_t)(own >> 8);
		w[3] = (uint8_t)own;
	}
	n->len = total;
	n->chan_off = (size_t)((const uint8_t *)chan - m);
	atomic_init(&n->refs, h->rt->nworkers);
	for (int i = 0; i < h->rt->nworkers; i++) {
		struct worker_msg *wm = worker_msg_new();
		if (!wm) {
			if (atomic_fetch_sub(&n->refs, 1) == 1)
				free(n);
			continue;
		}
		wm->fn = on_note_msg;
		wm->arg = h;
		wm->arg2 = n;
		worker_post(h->rt->workers[i], wm);
	}
}

static void listener_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct notify_hub *h = io->data;
	struct server *s = h->s;
	(void)loop;
	if (!s)
		return;
	if (tls_link_crossed(&s->tls))
		revents |= EV_READ | EV_WRITE;
	if ((revents & EV_WRITE) && flush_server(s) < 0) {
		server_close(s, "write to the LISTEN connection failed");
		hub_down(h, "write failed");
		return;
	}
	if (revents & EV_READ) {
		if (buf_room(&s->rbuf) == 0)
			buf_compact(&s->rbuf);
		ssize_t n = tls_link_read(s->fd, &s->tls, buf_tail(&s->rbuf), buf_room(&s->rbuf));
		if (n == 0 || (n < 0 && n != -EAGAIN)) {
			server_close(s, "the LISTEN connection closed");
			hub_down(h, n == 0 ? "the server closed the connection" : "read failed");
			return;
		}
		if (n > 0)
			buf_produce(&s->rbuf, (size_t)n);
		for (;;) {
			struct proto_hdr hd;
			const uint8_t *p = buf_head(&s->rbuf);
			size_t avail = buf_len(&s->rbuf);
			ssize_t rc = proto_read_hdr(p, avail, NOTIFY_MSG_MAX, &hd);
			if (rc < 0) {
				server_close(s, "bad message on the LISTEN connection");
				hub_down(h, "bad message");
				return;
			}
			if (rc == 0 || avail < (size_t)hd.len + 1)
				break;
			size_t total = (size_t)hd.len + 1;
			switch (hd.type) {
			case 'A':
				fan_out(h, p, total);
				break;
			case 'Z':
				buf_consume(&s->rbuf, total);
				if (h->inflight)
					hub_synced(h);
				if (!h->s)
					return;
				continue;
			case 'E': {
				struct proto_error_fields f;
				char why[160] = "an error";
				if (proto_parse_error(p + PROTO_HDR_LEN, total - PROTO_HDR_LEN, &f) == 0 && f.message)
					snprintf(why, sizeof why, "%s (%s)", f.message, f.sqlstate ? f.sqlstate : "?");
				server_close(s, "the server sent an error on the LISTEN connection");
				hub_down(h, why);
				return;
			}
			default: /* CommandComplete, ParameterStatus, NoticeResponse */
				break;
			}
			buf_consume(&s->rbuf, total);
		}
	}
	watch(h);
}

static void on_login(struct server *s, void *arg, int err, const char *reason, const uint8_t *errmsg, size_t errlen)
{
	struct notify_hub *h = arg;
	(void)errmsg;
	(void)errlen;
	if (err < 0) {
		hub_down(h, reason); /* s is closed by the connector */
		return;
	}
	const char *hs = server_param(s, "in_hot_standby");
	if (hs && strcmp(hs, "on") == 0) {
		/* Not the primary (yet to be learned, or a failover turned it): say so, so that the
		 * next connect goes elsewhere. */
		services_note_role(h->rt->services, pool_rule(h->pool)->service, &h->be, SERVICES_ROLE_STANDBY);
		h->s = NULL;
		server_close(s, "the LISTEN connection reached a standby");
		hub_connect(h); /* another backend, or hub_down when no primary is known */
		return;
	}
	struct ev_loop *loop = s->worker->loop;
	ev_io_stop(loop, &s->io);
	ev_io_init(&s->io, listener_cb, s->fd, EV_READ);
	s->io.data = h;
	ev_io_start(loop, &s->io);
	h->backoff = 0;
	if (h->ever_up) {
		h->missed_pending = true;
		atomic_fetch_add(&h->reconnects, 1);
	}
	h->ever_up = true;
	atomic_store(&h->state, HUB_UP);
	log_info(s->id, s->ctx, "LISTEN connection for %s/%s up", pool_database(h->pool), pool_user(h->pool));
	hub_sync(h);
}

static void hub_connect(struct notify_hub *h)
{
	struct worker *w = h->rt->workers[h->home];
	const struct config_pool_rule *rule = pool_rule(h->pool);
	struct net_addr addr;
	if (w->stopping || h->s)
		return;
	if (atomic_load(&h->state) == HUB_NONE)
		atomic_store(&h->state, HUB_CONNECTING);
	/* NOTIFYs happen only on the primary: a standby refuses LISTEN, and its connection would
	 * hear nothing. */
	if (services_primary_addr(h->rt->services, rule->service, &addr, &h->be) < 0) {
		hub_down(h, "no primary known for the service yet");
		return;
	}
	struct server_cred cred;
	bool have = false;
	pthread_mutex_lock(&h->lock);
	if (h->have_cred) {
		cred = h->cred;
		have = true;
	}
	pthread_mutex_unlock(&h->lock);
	struct server_login login = {
		.service = rule->service,
		.addr = &addr,
		.user = rule->server_user ? rule->server_user : pool_user(h->pool),
		.database = rule->server_database ? rule->server_database : pool_database(h->pool),
		.cred = have ? &cred : NULL,
		.password = rule->server_password,
		.rbuf_size = NOTIFY_LISTENER_BUF,
	};
	h->s = server_connect_login(w, &login, on_login, h);
	memset(&cred, 0, sizeof cred);
	if (!h->s)
		hub_down(h, "out of memory");
}

static void on_sync_msg(struct worker *w, struct worker_msg *m)
{
	struct notify_hub *h = m->arg;
	pthread_mutex_lock(&h->lock);
	h->sync_posted = false;
	pthread_mutex_unlock(&h->lock);
	if (w->stopping)
		return;
	int st = atomic_load(&h->state);
	if (st == HUB_NONE)
		hub_connect(h);
	else if (st == HUB_UP)
		hub_sync(h);
}

/* ---- the worker tenant ---- */

static void notify_stop(struct worker *w, const char *reason)
{
	struct notify_registry *r = w->rt->notify;
	if (!r)
		return;
	pthread_mutex_lock(&r->lock);
	for (struct notify_hub *h = r->hubs; h; h = h->next) {
		if (h->rt->workers[h->home] != w)
			continue;
		if (h->timer_init)
			ev_timer_stop(w->loop, &h->timer);
		if (h->s) {
			struct server *s = h->s;
			h->s = NULL;
			server_close(s, reason);
		}
		atomic_store(&h->state, HUB_DOWN);
	}
	pthread_mutex_unlock(&r->lock);
}

/* Every second: close the listening clients that stopped reading (the flood may be over). */
static unsigned notify_tick(struct worker *w, double now)
{
	struct notify_client *nc = nw_of(w)->clients, *next;
	for (; nc; nc = next) {
		next = nc->next;
		if (nc->c->state != CLIENT_CLOSING && queue_stalled(nc, nc->qlen - nc->qhead, now))
			fail_stalled(nc);
	}
	return 0;
}

struct worker_hooks notify_worker_hooks = {
	.name = "notify",
	.size = sizeof(struct notify_worker),
	.tick = notify_tick,
	.stop = notify_stop,
};
