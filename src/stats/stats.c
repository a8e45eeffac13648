/* Counters (see stats.h). Every counter is a relaxed atomic: each is a monotonic number that
 * orders no other memory, so a reader only ever sees a value some time between two events.
 * Each block (a pool's, the process's client gauges) is split in shards, one cache line block
 * per worker thread and one for every other thread, so that two workers relaying the same pool
 * do not bounce its counters' cache lines between cores at every query; readers sum the
 * shards. A worker's own shard (when every worker has one: at most STATS_SHARDS_MAX - 1
 * workers) has one writer, its worker, so it is updated with a plain load and store (relaxed
 * atomics, no lock prefix; a transaction makes some 18 updates: as locked adds they took ~40 ns
 * on the 2-core AMD EPYC this was measured on, as plain moves ~8 ns, although they are two more
 * instructions each); the shared shard (threads that are no worker's, or workers past the cap)
 * keeps the locked add. A gauge's shard may go below zero (a client counted in on one worker and out on
 * another); only the sum means anything. Gauges of servers and queues come from pool.c under
 * each pool's own lock. */
#include "stats/stats.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "runtime/runtime.h"

const double stats_bucket_bounds[STATS_NBUCKETS] = {
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
};

struct pool_shard {
	_Alignas(64) atomic_uint_fast64_t xact_count, query_count, wait_count;
	atomic_uint_fast64_t xact_us, query_us, wait_us;
	atomic_uint_fast64_t bytes_received, bytes_sent;
	atomic_uint_fast64_t wait_buckets[STATS_NBUCKETS + 1];
	atomic_uint_fast64_t query_buckets[STATS_NBUCKETS + 1];
	atomic_int clients[STATS_CLIENT_NSTATES];
	atomic_int sv_connecting;
};

struct stats_pool {
	int n;
	struct pool_shard s[];
};

struct client_shard {
	_Alignas(64) atomic_int clients[STATS_CLIENT_NSTATES];
};

struct stats {
	_Alignas(64) atomic_uint_fast64_t errors[STATS_NCLASSES];
	int n;
	struct client_shard s[];
};

static int nshards = 1; /* of the blocks made from now on (stats_set_shards) */
/* Every worker has a shard of its own in the blocks made with nshards (no worker index wraps):
 * its writes need no lock prefix. Set with nshards, before any worker runs. */
static bool exclusive;

void stats_set_shards(int nworkers)
{
	nshards = nworkers < 1 ? 1 : nworkers + 1 > STATS_SHARDS_MAX ? STATS_SHARDS_MAX : nworkers + 1;
	exclusive = nworkers >= 1 && nworkers + 1 <= STATS_SHARDS_MAX;
}

/* This thread's shard of a block of n: 0 for threads that are no worker's, 1 + the worker's
 * index for a worker's (runtime_worker_index), shared when there are more workers than
 * shards; found once per thread (a division), 0 in a block made with fewer shards. tl_owned:
 * the thread's shard is its alone (a worker's, and every worker has one; stats_set_shards is
 * called once per process, before the first worker and the first block). */
static _Thread_local int tl_shard = -1;
static _Thread_local bool tl_owned;

static inline int shard_of(int n)
{
	int k = tl_shard;
	if (k < 0) {
		int w = runtime_worker_index;
		k = tl_shard = w < 0 || nshards < 2 ? 0 : 1 + w % (nshards - 1);
		tl_owned = k > 0 && exclusive;
	}
	return k < n ? k : 0;
}

const char *stats_client_state_name(enum stats_client_state s)
{
	switch (s) {
	case STATS_CLIENT_STARTUP: return "startup";
	case STATS_CLIENT_AUTH: return "auth";
	case STATS_CLIENT_WAITING: return "waiting";
	case STATS_CLIENT_ACTIVE: return "active";
	case STATS_CLIENT_IDLE: return "idle";
	case STATS_CLIENT_CLOSING: return "closing";
	case STATS_CLIENT_NSTATES: break;
	}
	return "?";
}

/* Zeroed memory is a valid zero for these lock-free atomic types (C17 atomic_init is only
 * needed for types that may carry a lock, which none of these do on our targets). */
static void *zalloc_aligned(size_t size)
{
	size = (size + 63) & ~(size_t)63;
	void *p = aligned_alloc(64, size);
	if (p)
		memset(p, 0, size);
	return p;
}

struct stats *stats_new(void)
{
	struct stats *st = zalloc_aligned(sizeof(struct stats) + (size_t)nshards * sizeof(struct client_shard));
	if (st)
		st->n = nshards;
	return st;
}
void stats_free(struct stats *st) { free(st); }
struct stats_pool *stats_pool_new(void)
{
	struct stats_pool *sp = zalloc_aligned(sizeof(struct stats_pool) + (size_t)nshards * sizeof(struct pool_shard));
	if (sp)
		sp->n = nshards;
	return sp;
}
void stats_pool_free(struct stats_pool *sp) { free(sp); }

/* n more on counter a of a shard; owned: only this thread writes the shard (tl_owned), so a
 * relaxed load and store (plain moves, no lock prefix) are exact, and readers still see whole
 * values. */
#define ADD(a, n, owned)                                                                             \
	((owned) ? atomic_store_explicit((a), atomic_load_explicit((a), memory_order_relaxed) + (n),   \
					 memory_order_relaxed)                                          \
		 : (void)atomic_fetch_add_explicit((a), (n), memory_order_relaxed))

static inline void add(atomic_uint_fast64_t *a, uint64_t n, bool owned) { ADD(a, n, owned); }
static inline void add_int(atomic_int *a, int n, bool owned) { ADD(a, n, owned); }

/* This thread's shard of pool block sp, and whether it is this thread's alone. */
static inline struct pool_shard *mine(struct stats_pool *sp, bool *owned)
{
	int k = shard_of(sp->n);
	*owned = k > 0 && tl_owned;
	return &sp->s[k];
}

static uint64_t load(const atomic_uint_fast64_t *a)
{
	/* C17 atomic_load takes a non-const pointer in some libcs' prototypes. */
	return atomic_load_explicit((atomic_uint_fast64_t *)a, memory_order_relaxed);
}

static uint64_t micros(double seconds)
{
	return seconds > 0 ? (uint64_t)(seconds * 1e6 + 0.5) : 0;
}

int stats_bucket_index(double seconds)
{
	/* Linear: 14 compares on the hot path beat a branchy binary search on this size. */
	for (int i = 0; i < STATS_NBUCKETS; i++)
		if (seconds <= stats_bucket_bounds[i])
			return i;
	return STATS_NBUCKETS;
}

double stats_quantile(const uint64_t buckets[STATS_NBUCKETS + 1], double q)
{
	uint64_t total = 0, seen = 0;
	for (int i = 0; i <= STATS_NBUCKETS; i++)
		total += buckets[i];
	if (total == 0)
		return 0;
	/* The rank of the quantile, at least 1: the smallest bucket holding that many. */
	double rank = q * (double)total;
	for (int i = 0; i < STATS_NBUCKETS; i++) {
		seen += buckets[i];
		if ((double)seen >= rank)
			return stats_bucket_bounds[i];
	}
	return stats_bucket_bounds[STATS_NBUCKETS - 1];
}

void stats_count_query(struct stats_pool *sp, double seconds)
{
	bool o;
	struct pool_shard *h = mine(sp, &o);
	add(&h->query_count, 1, o);
	add(&h->query_us, micros(seconds), o);
	add(&h->query_buckets[stats_bucket_index(seconds)], 1, o);
}

void stats_count_xact(struct stats_pool *sp, double seconds)
{
	bool o;
	struct pool_shard *h = mine(sp, &o);
	add(&h->xact_count, 1, o);
	add(&h->xact_us, micros(seconds), o);
}

void stats_count_wait(struct stats_pool *sp, double seconds)
{
	bool o;
	struct pool_shard *h = mine(sp, &o);
	uint64_t us = micros(seconds);
	add(&h->wait_count, 1, o);
	if (us) /* most waits are none (a claim answered at once) */
		add(&h->wait_us, us, o);
	add(&h->wait_buckets[stats_bucket_index(seconds)], 1, o);
}

void stats_count_no_wait(struct stats_pool *sp)
{
	bool o;
	struct pool_shard *h = mine(sp, &o);
	add(&h->wait_count, 1, o);
	add(&h->wait_buckets[0], 1, o); /* 0 s: the first bucket, nothing to the total */
}

void stats_add_received(struct stats_pool *sp, uint64_t n)
{
	if (n) {
		bool o;
		struct pool_shard *h = mine(sp, &o);
		add(&h->bytes_received, n, o);
	}
}

void stats_add_sent(struct stats_pool *sp, uint64_t n)
{
	if (n) {
		bool o;
		struct pool_shard *h = mine(sp, &o);
		add(&h->bytes_sent, n, o);
	}
}

void stats_server_connecting(struct stats_pool *sp, int delta)
{
	bool o;
	struct pool_shard *h = mine(sp, &o);
	add_int(&h->sv_connecting, delta, o);
}

static int class_digit(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'A' && ch <= 'Z')
		return ch - 'A' + 10;
	return -1;
}

int stats_class_index(const char *sqlstate)
{
	if (!sqlstate)
		return STATS_CLASS_OTHER;
	int hi = class_digit(sqlstate[0]);
	if (hi < 0)
		return STATS_CLASS_OTHER;
	int lo = class_digit(sqlstate[1]);
	if (lo < 0)
		return STATS_CLASS_OTHER;
	return hi * 36 + lo;
}

void stats_class_name(int index, char out[6])
{
	static const char digits[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
	if (index < 0 || index >= STATS_CLASS_OTHER) {
		memcpy(out, "other", 6);
		return;
	}
	out[0] = digits[index / 36];
	out[1] = digits[index % 36];
	out[2] = 0;
}

void stats_count_error(struct stats *st, const char *sqlstate)
{
	add(&st->errors[stats_class_index(sqlstate)], 1, false); /* one block for every thread */
}

/* The gauge of state i in this thread's shard of pool block sp, and whether it is owned. */
static inline atomic_int *pool_gauge_of(struct stats_pool *sp, int i, bool *owned)
{
	return &mine(sp, owned)->clients[i];
}

void stats_client_move(struct stats *st, struct stats_pool *from_pool, int from, struct stats_pool *to_pool, int to)
{
	int k = shard_of(st->n);
	bool o = k > 0 && tl_owned, po;
	atomic_int *g = st->s[k].clients;
	if (from >= 0 && from < STATS_CLIENT_NSTATES) {
		add_int(&g[from], -1, o);
		if (from_pool) {
			atomic_int *a = pool_gauge_of(from_pool, from, &po);
			add_int(a, -1, po);
		}
	}
	if (to >= 0 && to < STATS_CLIENT_NSTATES) {
		add_int(&g[to], 1, o);
		if (to_pool) {
			atomic_int *a = pool_gauge_of(to_pool, to, &po);
			add_int(a, 1, po);
		}
	}
}

void stats_client_step(struct stats *st, struct stats_pool *sp, int from, int to)
{
	int k = shard_of(st->n), kp = shard_of(sp->n);
	if (k > 0 && k == kp && tl_owned && from >= 0 && from < STATS_CLIENT_NSTATES && to >= 0 &&
	    to < STATS_CLIENT_NSTATES) {
		/* the common case: both this worker's own shards, plain moves */
		add_int(&st->s[k].clients[from], -1, true);
		add_int(&st->s[k].clients[to], 1, true);
		add_int(&sp->s[k].clients[from], -1, true);
		add_int(&sp->s[k].clients[to], 1, true);
		return;
	}
	stats_client_move(st, sp, from, sp, to);
}

/* ---- readers ---- */

void stats_pool_read(const struct stats_pool *sp, struct stats_counters *out)
{
	memset(out, 0, sizeof *out);
	/* The loads are not one atomic snapshot: a histogram's count may be an event apart
	 * from the sum of its buckets, so exporters take _count from the buckets. */
	for (int k = 0; k < sp->n; k++) {
		const struct pool_shard *h = &sp->s[k];
		for (int i = 0; i <= STATS_NBUCKETS; i++) {
			out->wait_buckets[i] += load(&h->wait_buckets[i]);
			out->query_buckets[i] += load(&h->query_buckets[i]);
		}
		out->xact_count += load(&h->xact_count);
		out->query_count += load(&h->query_count);
		out->wait_count += load(&h->wait_count);
		out->xact_us += load(&h->xact_us);
		out->query_us += load(&h->query_us);
		out->wait_us += load(&h->wait_us);
		out->bytes_received += load(&h->bytes_received);
		out->bytes_sent += load(&h->bytes_sent);
	}
}

/* A gauge: the sum of its shards (each may be negative), never below 0 (a move seen
 * half-done could show -1 for an instant). */
static int sum_int(const atomic_int *first, size_t stride, int n)
{
	int v = 0;
	for (int k = 0; k < n; k++)
		v += atomic_load_explicit((atomic_int *)((const char *)first + (size_t)k * stride), memory_order_relaxed);
	return v > 0 ? v : 0;
}

static int pool_gauge(const struct stats_pool *sp, const atomic_int *field0)
{
	return sum_int(field0, sizeof(struct pool_shard), sp->n);
}

int stats_pool_clients(const struct stats_pool *sp)
{
	int n = 0;
	for (int i = 0; i < STATS_CLIENT_NSTATES; i++)
		n += pool_gauge(sp, &sp->s[0].clients[i]);
	return n;
}

void stats_read_global(const struct stats *st, struct stats_global *out)
{
	for (int i = 0; i < STATS_CLIENT_NSTATES; i++)
		out->clients[i] = sum_int(&st->s[0].clients[i], sizeof(struct client_shard), st->n);
	for (int i = 0; i < STATS_NCLASSES; i++)
		out->errors[i] = load(&st->errors[i]);
}

void stats_pool_snapshot_read(const struct stats_pool *sp, struct stats_pool_snapshot *out)
{
	stats_pool_read(sp, &out->c);
	for (int i = 0; i < STATS_CLIENT_NSTATES; i++)
		out->clients[i] = pool_gauge(sp, &sp->s[0].clients[i]);
	out->sv_connecting = pool_gauge(sp, &sp->s[0].sv_connecting);
}

static void add_counters(struct stats_counters *sum, const struct stats_counters *x)
{
	sum->xact_count += x->xact_count;
	sum->query_count += x->query_count;
	sum->wait_count += x->wait_count;
	sum->xact_us += x->xact_us;
	sum->query_us += x->query_us;
	sum->wait_us += x->wait_us;
	sum->bytes_received += x->bytes_received;
	sum->bytes_sent += x->bytes_sent;
	for (int i = 0; i <= STATS_NBUCKETS; i++) {
		sum->wait_buckets[i] += x->wait_buckets[i];
		sum->query_buckets[i] += x->query_buckets[i];
	}
}

void stats_snapshot_add(struct stats_pool_snapshot *sum, const struct stats_pool_snapshot *snap)
{
	add_counters(&sum->c, &snap->c);
	sum->size += snap->size;
	for (int i = 0; i < STATS_CLIENT_NSTATES; i++)
		sum->clients[i] += snap->clients[i];
	sum->sv_active += snap->sv_active;
	sum->sv_idle += snap->sv_idle;
	sum->sv_connecting += snap->sv_connecting;
	sum->waiters += snap->waiters;
	sum->active_limit += snap->active_limit;
	sum->down = sum->down || snap->down;
}
