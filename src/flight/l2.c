/* The result cache's L2 on Redis (l2.h). */
#include "flight/l2.h"

#include <errno.h>
#include <ev.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-function"
#include <hiredis/adapters/libev.h>
#pragma GCC diagnostic pop

#include "flight/cache.h"
#include "net/tunnel.h"
#include "proto/proto.h"
#include "runtime/runtime.h"
#include "util/log.h"
#include "worker/worker.h"

#define MAGIC "TK\x02\x01" /* the value's format; bump with FLIGHT_KEY_VERSION's layout */
#define MAGIC_LEN 4
#define BACKOFF_MIN 0.1
#define BACKOFF_MAX 5.0
#define LOG_EVERY 10.0
#define HEX_ID 33

struct flight_l2 {
	struct worker *w;
	struct flight_counters *k;
	const struct config_redis *cfg;
	redisAsyncContext *ac; /* NULL: none; a connect may be in progress */
	bool connected;
	double backoff;
	ev_timer retry;   /* the next connect */
	ev_timer connect; /* a connect's bound */
	double last_log;
	unsigned lost_logs;
	/* INCRs sent and answered (or ended with their connection), and the clients waiting for
	 * theirs, oldest first (flight_l2_wait); hold bounds the oldest's wait by redis.timeout */
	uint64_t incr_sent, incr_done;
	struct flight_l2_waiter *wait_head, *wait_tail;
	ev_timer hold;
};

struct flight_l2_req {
	struct flight_l2 *l2;
	ev_timer timer;
	flight_l2_done_fn *done; /* NULL: cancelled */
	void *arg;
	bool failed;
	struct flight_l2_versions v;
	size_t klen;
	uint8_t key[];
};

bool flight_l2_configured(const struct tusk_config *cfg)
{
	return cfg->redis.host || cfg->redis.unix_path;
}

uint64_t flight_l2_table_id(const char *database, const char *table)
{
	/* Even: a table's; odd: a database's (one namespace of counters, "v:"). */
	return XXH3_64bits_withSeed(table, strlen(table), XXH3_64bits(database, strlen(database))) & ~1ull;
}

uint64_t flight_l2_db_id(const char *database)
{
	return XXH3_64bits(database, strlen(database)) | 1ull;
}

static void l2_error(struct flight_l2 *l, const char *what, const char *detail)
{
	double now = ev_now(l->w->loop);

	atomic_fetch_add_explicit(&l->k->l2_errors, 1, memory_order_relaxed);
	if (l->last_log && now - l->last_log < LOG_EVERY) {
		l->lost_logs++;
		return;
	}
	log_warn(NULL, NULL, "cache L2 (Redis): %s%s%s; a miss (%u more not logged)", what, detail ? ": " : "",
		 detail ? detail : "", l->lost_logs);
	l->last_log = now;
	l->lost_logs = 0;
}

static void start_connect(struct flight_l2 *l);
static void hold_cb(struct ev_loop *loop, ev_timer *t, int revents);

static void schedule_retry(struct flight_l2 *l)
{
	if (l->w->stopping || ev_is_active(&l->retry))
		return;
	ev_timer_set(&l->retry, l->backoff, 0.);
	ev_timer_start(l->w->loop, &l->retry);
	l->backoff = l->backoff * 2 < BACKOFF_MAX ? l->backoff * 2 : BACKOFF_MAX;
}

static void retry_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	(void)loop;
	(void)revents;
	start_connect(t->data);
}

/* Drop the connection now (outside hiredis callbacks): pending commands end with no reply. */
static void drop(struct flight_l2 *l)
{
	redisAsyncContext *ac = l->ac;

	ev_timer_stop(l->w->loop, &l->connect);
	if (!ac)
		return;
	/* ac->data stays: the INCRs' callbacks (called now, with no reply) count as answered.
	 * The other callbacks tell a let-go context by l->ac != ac. */
	l->ac = NULL;
	l->connected = false;
	redisAsyncFree(ac);
	schedule_retry(l);
}

static void connect_timeout_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct flight_l2 *l = t->data;
	(void)loop;
	(void)revents;
	l2_error(l, "connect timed out", NULL);
	drop(l);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
	struct flight_l2 *l = ac->data;

	if (!l || l->ac != ac)
		return;
	ev_timer_stop(l->w->loop, &l->connect);
	if (status != REDIS_OK) {
		/* hiredis frees ac after this callback */
		l2_error(l, "connect failed", ac->errstr);
		l->ac = NULL;
		l->connected = false;
		schedule_retry(l);
		return;
	}
	/* The backoff starts again only at a real answer (req_end): a Redis stopped with
	 * SIGSTOP still accepts connections, and must not be retried at the shortest interval. */
	l->connected = true;
	log_info(NULL, NULL, "cache L2 (Redis): connected");
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
	struct flight_l2 *l = ac->data;

	if (!l || l->ac != ac)
		return; /* drop() let go of it */
	if (status != REDIS_OK)
		l2_error(l, "connection lost", ac->errstr);
	l->ac = NULL;
	l->connected = false;
	schedule_retry(l);
}

/* AUTH and SELECT: an error leaves the connection unusable. */
static void on_setup(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct flight_l2 *l = ac->data;
	redisReply *r = reply;
	(void)privdata;

	if (!l || l->ac != ac || !r || r->type != REDIS_REPLY_ERROR)
		return;
	l2_error(l, "AUTH or SELECT refused", r->str);
	redisAsyncDisconnect(ac);
}

static void start_connect(struct flight_l2 *l)
{
	const struct config_redis *cfg = l->cfg;
	redisAsyncContext *ac;

	if (l->ac || l->w->stopping)
		return;
	/* With redis.tls, hiredis (0.14, no TLS) talks plaintext to the process's TLS tunnel
	 * (net/tunnel.h); a failed handshake reaches it as the server closing the connection. */
	if (cfg->tls != CONFIG_STLS_DISABLE && !l->w->rt->redis_tunnel) {
		l2_error(l, "connect failed", "redis.tls is set but no TLS tunnel runs");
		schedule_retry(l);
		return;
	}
	ac = l->w->rt->redis_tunnel ? redisAsyncConnectUnix(tunnel_path(l->w->rt->redis_tunnel))
	     : cfg->unix_path	    ? redisAsyncConnectUnix(cfg->unix_path)
				    : redisAsyncConnect(cfg->host, cfg->port ? cfg->port : 6379);
	if (!ac || ac->err) {
		l2_error(l, "connect failed", ac ? ac->errstr : "out of memory");
		if (ac)
			redisAsyncFree(ac);
		schedule_retry(l);
		return;
	}
	ac->data = l;
	if (redisLibevAttach(l->w->loop, ac) != REDIS_OK) {
		redisAsyncFree(ac);
		schedule_retry(l);
		return;
	}
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	l->ac = ac;
	/* Queued now, sent first once connected. */
	if (cfg->password) {
		const char *argv[] = { "AUTH", cfg->password };
		(void)redisAsyncCommandArgv(ac, on_setup, NULL, 2, argv, NULL);
	}
	if (cfg->db) {
		char db[16];
		snprintf(db, sizeof(db), "%d", cfg->db);
		const char *argv[] = { "SELECT", db };
		(void)redisAsyncCommandArgv(ac, on_setup, NULL, 2, argv, NULL);
	}
	ev_timer_set(&l->connect, (double)cfg->timeout_ms / 1000.0, 0.);
	ev_timer_start(l->w->loop, &l->connect);
}

/* The cache's slot on each worker (flight_l2_worker_hooks): its L2 connection, or NULL. */
static struct flight_l2 **l2_slot(const struct worker *w)
{
	return worker_slot(w, flight_l2_worker_hooks.slot);
}

/* The worker's L2, made on first use. NULL: not configured or no memory. */
static struct flight_l2 *l2_of(struct worker *w, struct flight_counters *k)
{
	struct flight_l2 *l = *l2_slot(w);

	if (l || w->stopping || !flight_l2_configured(w->rt->cfg))
		return l;
	l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	l->w = w;
	l->k = k;
	/* redis: is not reloadable: the first generation's section stays valid until exit. */
	l->cfg = &w->rt->cfg->redis;
	l->backoff = BACKOFF_MIN;
	ev_timer_init(&l->retry, retry_cb, 0., 0.);
	l->retry.data = l;
	ev_timer_init(&l->connect, connect_timeout_cb, 0., 0.);
	l->connect.data = l;
	ev_timer_init(&l->hold, hold_cb, 0., 0.);
	l->hold.data = l;
	*l2_slot(w) = l;
	start_connect(l);
	return l;
}

static void hex_id(char *out, const char *prefix, const char *tag, uint64_t id)
{
	snprintf(out, 256 + HEX_ID, "%s%s%016llx", prefix, tag, (unsigned long long)id);
}

static void entry_name(char *out, const char *prefix, const uint8_t *key, size_t klen)
{
	XXH128_hash_t h = XXH3_128bits(key, klen);
	snprintf(out, 256 + HEX_ID, "%se1:%016llx%016llx", prefix, (unsigned long long)h.high64,
		 (unsigned long long)h.low64);
}

static void req_end(struct flight_l2_req *r, const uint8_t *bytes, size_t len)
{
	struct flight_l2 *l = r->l2;

	ev_timer_stop(l->w->loop, &r->timer);
	if (!r->failed)
		l->backoff = BACKOFF_MIN;
	if (r->done) {
		struct flight_l2_answer a = { .bytes = bytes, .len = len, .error = r->failed, .versions = &r->v };
		if (bytes)
			atomic_fetch_add_explicit(&l->k->l2_hits, 1, memory_order_relaxed);
		else if (!r->failed)
			atomic_fetch_add_explicit(&l->k->l2_misses, 1, memory_order_relaxed);
		r->done(r->arg, &a);
	}
	free(r);
}

static void on_versions(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct flight_l2_req *r = privdata;
	redisReply *rep = reply;
	(void)ac;

	if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != (size_t)r->v.n) {
		if (!r->failed)
			l2_error(r->l2, rep ? "unexpected MGET reply" : "no reply (timeout or disconnect)",
				 rep && rep->type == REDIS_REPLY_ERROR ? rep->str : NULL);
		r->failed = true;
		return;
	}
	for (int i = 0; i < r->v.n; i++) {
		redisReply *e = rep->element[i];
		char *end;
		if (e->type == REDIS_REPLY_NIL) {
			r->v.v[i] = 0;
		} else if (e->type == REDIS_REPLY_STRING) {
			errno = 0;
			r->v.v[i] = strtoull(e->str, &end, 10);
			if (errno || *end || end == e->str)
				r->failed = true;
		} else {
			r->failed = true;
		}
	}
	if (r->failed)
		l2_error(r->l2, "a version counter is not a number", NULL);
}

static void wr32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void wr64(uint8_t *p, uint64_t v)
{
	wr32(p, (uint32_t)(v >> 32));
	wr32(p + 4, (uint32_t)v);
}

long flight_l2_encode(const uint8_t *key, size_t klen, const struct flight_l2_versions *v, const uint8_t *bytes,
		      size_t len, uint8_t *out, size_t cap)
{
	size_t head = MAGIC_LEN + 4 + klen + 4 + (size_t)v->n * 16;

	if (v->n < 0 || v->n > FLIGHT_L2_MAX_VERSIONS || klen > UINT32_MAX || head + len > cap)
		return -E2BIG;
	memcpy(out, MAGIC, MAGIC_LEN);
	wr32(out + MAGIC_LEN, (uint32_t)klen);
	memcpy(out + MAGIC_LEN + 4, key, klen);
	uint8_t *q = out + MAGIC_LEN + 4 + klen;
	wr32(q, (uint32_t)v->n);
	q += 4;
	for (int i = 0; i < v->n; i++, q += 16) {
		wr64(q, v->id[i]);
		wr64(q + 8, v->v[i]);
	}
	memcpy(out + head, bytes, len);
	return (long)(head + len);
}

/* Redis is as hostile as any network input: every length is bounded by the value's. */
bool flight_l2_decode(const uint8_t *p, size_t len, const uint8_t *key, size_t klen,
		      const struct flight_l2_versions *now, const uint8_t **bytes, size_t *blen)
{
	struct proto_reader r;

	proto_reader_init(&r, p, len);
	const uint8_t *magic = proto_get_bytes(&r, MAGIC_LEN);
	uint32_t n = proto_get_u32(&r);
	if (r.err || memcmp(magic, MAGIC, MAGIC_LEN) != 0 || n != klen)
		return false;
	const uint8_t *k = proto_get_bytes(&r, klen);
	if (r.err || memcmp(k, key, klen) != 0)
		return false;
	n = proto_get_u32(&r);
	if (r.err || n != (uint32_t)now->n)
		return false;
	for (int i = 0; i < now->n; i++) {
		uint64_t id = proto_get_u64(&r), v = proto_get_u64(&r);
		if (r.err || id != now->id[i] || v != now->v[i])
			return false; /* written since, or another key's entry under a colliding name */
	}
	*bytes = proto_reader_pos(&r);
	*blen = proto_remaining(&r);
	return true;
}

/* The entry, checked: its whole key and every version equal; else a miss. */
static void on_entry(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct flight_l2_req *r = privdata;
	redisReply *rep = reply;
	const uint8_t *bytes;
	size_t blen;
	(void)ac;

	if (!rep || (rep->type != REDIS_REPLY_STRING && rep->type != REDIS_REPLY_NIL)) {
		if (!r->failed)
			l2_error(r->l2, rep ? "unexpected GET reply" : "no reply (timeout or disconnect)",
				 rep && rep->type == REDIS_REPLY_ERROR ? rep->str : NULL);
		r->failed = true;
	}
	if (!r->failed && rep->type == REDIS_REPLY_STRING &&
	    flight_l2_decode((const uint8_t *)rep->str, rep->len, r->key, r->klen, &r->v, &bytes, &blen))
		req_end(r, bytes, blen);
	else
		req_end(r, NULL, 0);
}

static void req_timeout_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct flight_l2_req *r = t->data;
	struct flight_l2 *l = r->l2;
	(void)loop;
	(void)revents;
	/* A server that does not answer within the bound answers nothing more on this
	 * connection: drop it (every pending request ends, r included) and make another. */
	l2_error(l, "timed out", NULL);
	r->failed = true; /* counted once */
	drop(l);
}

int flight_l2_get(struct worker *w, struct flight_counters *k, const uint8_t *key, size_t klen,
		  const char *database, const struct flight_decision *d, flight_l2_done_fn *done, void *arg,
		  struct flight_l2_req **out)
{
	struct flight_l2 *l = l2_of(w, k);
	char names[FLIGHT_L2_MAX_VERSIONS][256 + HEX_ID];
	char entry[256 + HEX_ID];
	const char *argv[FLIGHT_L2_MAX_VERSIONS + 1];

	if (!l)
		return -ENOMEM;
	if (!l->connected || !l->ac) {
		l2_error(l, "not connected", NULL);
		return -ENOTCONN;
	}
	struct flight_l2_req *r = calloc(1, sizeof(*r) + klen);
	if (!r)
		return -ENOMEM;
	r->l2 = l;
	r->done = done;
	r->arg = arg;
	r->klen = klen;
	memcpy(r->key, key, klen);
	argv[0] = "MGET";
	for (int i = 0; i < d->ntables; i++) {
		r->v.id[i] = flight_l2_table_id(database, d->tables[i].name);
		hex_id(names[i], l->cfg->prefix, "v:", r->v.id[i]);
		argv[i + 1] = names[i];
	}
	r->v.id[d->ntables] = flight_l2_db_id(database);
	hex_id(names[d->ntables], l->cfg->prefix, "v:", r->v.id[d->ntables]);
	argv[d->ntables + 1] = names[d->ntables];
	r->v.n = d->ntables + 1;
	entry_name(entry, l->cfg->prefix, key, klen);
	const char *get[] = { "GET", entry };
	if (redisAsyncCommandArgv(l->ac, on_versions, r, r->v.n + 1, argv, NULL) != REDIS_OK) {
		free(r);
		l2_error(l, "cannot send", NULL);
		return -EIO;
	}
	if (redisAsyncCommandArgv(l->ac, on_entry, r, 2, get, NULL) != REDIS_OK) {
		/* MGET is queued with r: let its answer end it as a failure. */
		r->failed = true;
		r->done = NULL;
		l2_error(l, "cannot send", NULL);
		return -EIO;
	}
	ev_timer_init(&r->timer, req_timeout_cb, (double)l->cfg->timeout_ms / 1000.0, 0.);
	r->timer.data = r;
	ev_timer_start(w->loop, &r->timer);
	*out = r;
	return 0;
}

void flight_l2_cancel(struct flight_l2_req *r)
{
	r->done = NULL;
}

void flight_l2_put(struct worker *w, struct flight_counters *k, const uint8_t *key, size_t klen,
		   const struct flight_l2_versions *v, const uint8_t *bytes, size_t len, uint64_t ttl_ms)
{
	struct flight_l2 *l = l2_of(w, k);
	char entry[256 + HEX_ID], ttl[24];

	if (!l || !l->connected || !l->ac)
		return;
	size_t cap = MAGIC_LEN + 8 + klen + (size_t)v->n * 16 + len;
	uint8_t *val = malloc(cap);
	if (!val) {
		l2_error(l, "no memory for a store", NULL);
		return;
	}
	long vlen = flight_l2_encode(key, klen, v, bytes, len, val, cap);
	if (vlen < 0) {
		free(val);
		return;
	}
	entry_name(entry, l->cfg->prefix, key, klen);
	snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)ttl_ms);
	const char *argv[] = { "SET", entry, (const char *)val, "PX", ttl };
	size_t argl[] = { 3, strlen(entry), (size_t)vlen, 2, strlen(ttl) };
	if (redisAsyncCommandArgv(l->ac, NULL, NULL, 5, argv, argl) != REDIS_OK)
		l2_error(l, "cannot send a store", NULL);
	else
		atomic_fetch_add_explicit(&k->l2_stores, 1, memory_order_relaxed);
	free(val); /* hiredis copied it into its output buffer */
}

static void hold_arm(struct flight_l2 *l)
{
	ev_timer_stop(l->w->loop, &l->hold);
	if (!l->wait_head)
		return;
	double left = l->wait_head->since + (double)l->cfg->timeout_ms / 1000.0 - ev_now(l->w->loop);
	ev_timer_set(&l->hold, left > 0 ? left : 0., 0.);
	ev_timer_start(l->w->loop, &l->hold);
}

static void wait_unlink(struct flight_l2_waiter *wt)
{
	struct flight_l2 *l = wt->l2;

	if (wt->prev)
		wt->prev->next = wt->next;
	else
		l->wait_head = wt->next;
	if (wt->next)
		wt->next->prev = wt->prev;
	else
		l->wait_tail = wt->prev;
	wt->next = wt->prev = NULL;
	wt->l2 = NULL;
}

/* Every waiter whose INCRs are answered goes on. One at a time from the head: a waiter's fn
 * may end other waits (its client closes) or begin new ones (at the tail). */
static void wake(struct flight_l2 *l)
{
	while (l->wait_head && l->wait_head->ticket <= l->incr_done) {
		struct flight_l2_waiter *wt = l->wait_head;
		wait_unlink(wt);
		wt->fn(wt->arg);
	}
	hold_arm(l);
}

static void hold_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct flight_l2 *l = t->data;
	(void)loop;
	(void)revents;
	/* As a lookup's timeout: a Redis that does not answer within the bound answers nothing
	 * more on this connection. Its INCRs end with it (counted answered in on_incr); the
	 * write's invalidation may be lost, as when Redis is unreachable, and the TTL is the
	 * backstop. The clients go on rather than wait for a Redis that may never answer. */
	l2_error(l, "a write's invalidation was not answered in time", NULL);
	drop(l);
	if (l->incr_done < l->incr_sent)
		l->incr_done = l->incr_sent;
	wake(l);
}

static void on_incr(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct flight_l2 *l = ac->data;
	(void)reply;
	atomic_fetch_sub((_Atomic uint32_t *)privdata, 1);
	if (!l)
		return; /* l2_close: nobody waits any more */
	l->incr_done++;
	if (l->wait_head && l->wait_head->ticket <= l->incr_done)
		wake(l);
}

bool flight_l2_wait(struct worker *w, struct flight_l2_waiter *wt, void (*fn)(void *arg), void *arg)
{
	struct flight_l2 *l = *l2_slot(w);

	if (wt->l2)
		return true;
	if (!l || l->incr_done >= l->incr_sent)
		return false;
	wt->l2 = l;
	wt->ticket = l->incr_sent;
	wt->since = ev_now(w->loop);
	wt->fn = fn;
	wt->arg = arg;
	wt->next = NULL;
	wt->prev = l->wait_tail;
	if (l->wait_tail)
		l->wait_tail->next = wt;
	else
		l->wait_head = wt;
	l->wait_tail = wt;
	if (!ev_is_active(&l->hold))
		hold_arm(l);
	return true;
}

void flight_l2_unwait(struct flight_l2_waiter *wt)
{
	struct flight_l2 *l = wt->l2;
	bool head;

	if (!l)
		return;
	head = l->wait_head == wt;
	wait_unlink(wt);
	if (head)
		hold_arm(l);
}

void flight_l2_bump(struct worker *w, struct flight_counters *k, const uint64_t *ids, _Atomic uint32_t *const *pending,
		    int n)
{
	struct flight_l2 *l = l2_of(w, k);
	char name[256 + HEX_ID];

	if (!l || n == 0)
		return;
	if (!l->connected || !l->ac) {
		l2_error(l, "a write's invalidation is lost (not connected)", NULL);
		return;
	}
	for (int i = 0; i < n; i++) {
		hex_id(name, l->cfg->prefix, "v:", ids[i]);
		const char *argv[] = { "INCR", name };
		atomic_fetch_add(pending[i], 1);
		if (redisAsyncCommandArgv(l->ac, on_incr, (void *)pending[i], 2, argv, NULL) != REDIS_OK) {
			atomic_fetch_sub(pending[i], 1);
			l2_error(l, "cannot send an invalidation", NULL);
		} else {
			l->incr_sent++;
		}
	}
}

void flight_l2_start(struct worker *w, struct worker_msg *m)
{
	(void)m;
	(void)l2_of(w, &w->rt->flight->counters);
}

/* On w's thread, at its end (or in worker_free): drop the connection (pending lookups end
 * as misses). */
static void l2_close(struct worker *w)
{
	struct flight_l2 *l = *l2_slot(w);

	if (!l)
		return;
	ev_timer_stop(w->loop, &l->retry);
	ev_timer_stop(w->loop, &l->connect);
	ev_timer_stop(w->loop, &l->hold);
	/* The worker ends: its clients are closed or about to be, and never go on. */
	while (l->wait_head)
		wait_unlink(l->wait_head);
	if (l->ac) {
		redisAsyncContext *ac = l->ac;
		l->ac = NULL;
		ac->data = NULL;
		redisAsyncFree(ac);
	}
	*l2_slot(w) = NULL;
	free(l);
}

static void l2_stop(struct worker *w, const char *reason)
{
	(void)reason;
	l2_close(w);
}

struct worker_hooks flight_l2_worker_hooks = {
	.name = "cache L2",
	.size = sizeof(struct flight_l2 *),
	.stop = l2_stop,
	.free = l2_close,
};
