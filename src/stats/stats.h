/* Process-wide counters for SHOW STATS / SHOW POOLS (console) and /metrics. Workers count on
 * the hot path with relaxed atomics in a block per pool, a shard per worker thread (no lock, no
 * allocation, no cache line shared between workers, and no locked instruction in a shard only
 * its worker writes); readers on
 * any thread sum them when asked. Counters only grow; gauges come from the pools themselves
 * (pool_snapshot) and from per-state client counts kept here. */
#ifndef TUSK_STATS_STATS_H
#define TUSK_STATS_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Histogram upper bounds in seconds (le=...), ascending; a last bucket above them is +Inf. */
#define STATS_NBUCKETS 14
extern const double stats_bucket_bounds[STATS_NBUCKETS];

/* SQLSTATE classes: the two first characters, each 0-9 or A-Z; one more slot, "other", for
 * anything else (a missing or malformed code). */
#define STATS_NCLASSES (36 * 36 + 1)
#define STATS_CLASS_OTHER (36 * 36)

/* Client connection states, as counted (frontend maps its own states onto these). */
enum stats_client_state {
	STATS_CLIENT_STARTUP, /* reading the startup packet */
	STATS_CLIENT_AUTH,    /* authenticating */
	STATS_CLIENT_WAITING, /* needs a server: queued, connecting or preparing it */
	STATS_CLIENT_ACTIVE,  /* a server is linked */
	STATS_CLIENT_IDLE,    /* transaction/statement pooling: between transactions, no server */
	STATS_CLIENT_CLOSING, /* flushing a last message */
	STATS_CLIENT_NSTATES,
};
/* "startup", "auth", "waiting", "active", "idle", "closing". */
const char *stats_client_state_name(enum stats_client_state s);

struct stats;      /* process-wide block, one in struct runtime (opaque) */
struct stats_pool; /* counters of one pool, owned by that pool (opaque) */

/* Shards of each block (stats.c): set once before the blocks are made, to the number of
 * worker threads (one shard each, capped at STATS_SHARDS_MAX - 1 and then shared, and one for
 * all other threads); a thread finds its own by runtime_worker_index. Blocks made before have
 * one shard. */
#define STATS_SHARDS_MAX 16
void stats_set_shards(int nworkers);

/* Allocation at startup / pool creation only. NULL on allocation failure. */
struct stats *stats_new(void);
void stats_free(struct stats *st);
struct stats_pool *stats_pool_new(void);
void stats_pool_free(struct stats_pool *sp);

/* ---- hot path: any worker, lock-free, no allocation ---- */

/* A query (a Query message or a Sync-terminated extended batch) was answered by its
 * ReadyForQuery after seconds. */
void stats_count_query(struct stats_pool *sp, double seconds);
/* A transaction ended (ReadyForQuery 'I') after seconds since its first request. */
void stats_count_xact(struct stats_pool *sp, double seconds);
/* A client waited seconds for a server (CLIENT_WAITING until it got one or left). */
void stats_count_wait(struct stats_pool *sp, double seconds);
/* stats_count_wait(sp, 0), cheaper: a claim answered at once. */
void stats_count_no_wait(struct stats_pool *sp);
/* Bytes the relay wrote to servers for clients (as relayed or rewritten), and bytes written
 * to clients (relayed replies and tusk's own messages). */
void stats_add_received(struct stats_pool *sp, uint64_t n);
void stats_add_sent(struct stats_pool *sp, uint64_t n);
/* Server connections of the pool in TCP connect or login (+1 at connect, -1 when done). */
void stats_server_connecting(struct stats_pool *sp, int delta);
/* An ErrorResponse reached a client, from a server or from tusk; sqlstate may be NULL or
 * not NUL-terminated past its first two characters. */
void stats_count_error(struct stats *st, const char *sqlstate);
/* A client left state `from` (in pool from_pool; from < 0: it was not counted yet) for `to`
 * (in pool to_pool; to < 0: it is gone). Either pool may be NULL (no pool chosen yet). */
void stats_client_move(struct stats *st, struct stats_pool *from_pool, int from, struct stats_pool *to_pool,
		       int to);
/* stats_client_move(st, sp, from, sp, to), cheaper: a client of pool sp (not NULL) changes
 * state (twice per transaction in transaction pooling). */
void stats_client_step(struct stats *st, struct stats_pool *sp, int from, int to);

/* ---- pure helpers (unit-tested) ---- */

/* The bucket of a duration: the first i with seconds <= stats_bucket_bounds[i], or
 * STATS_NBUCKETS (+Inf). */
int stats_bucket_index(double seconds);
/* The q-quantile (0 < q <= 1) of a histogram of per-bucket counts (STATS_NBUCKETS + 1, as in
 * stats_counters), read as the upper bound of the bucket it falls in, in seconds; the +Inf
 * bucket reads as the last bound. 0 for an empty histogram. */
double stats_quantile(const uint64_t buckets[STATS_NBUCKETS + 1], double q);
/* The class slot of a SQLSTATE ("42P01" -> slot of "42"), STATS_CLASS_OTHER if malformed. */
int stats_class_index(const char *sqlstate);
/* The class of a slot as text: two characters, or "other". out must hold 6 bytes. */
void stats_class_name(int index, char out[6]);

/* ---- readers: any thread, no lock on the hot path; each counter is read atomically, the
 * set is "consistent enough" (a counter may be one event ahead of another) ---- */

struct stats_counters {
	uint64_t xact_count, query_count, wait_count;
	uint64_t xact_us, query_us, wait_us; /* totals in microseconds */
	uint64_t bytes_received, bytes_sent;
	/* Per bucket, NOT cumulative: [i] counts durations in (bound[i-1], bound[i]], the last
	 * one above every bound. Their sum is wait_count / query_count. */
	uint64_t wait_buckets[STATS_NBUCKETS + 1];
	uint64_t query_buckets[STATS_NBUCKETS + 1];
};

struct stats_pool_snapshot {
	const char *database, *user; /* live as long as the process (pools are never freed) */
	const char *mode;            /* "session", "transaction", "statement" */
	int size;                    /* configured pool size */
	struct stats_counters c;
	int clients[STATS_CLIENT_NSTATES]; /* clients of this pool per state */
	int sv_active;                     /* servers linked to a client or running tusk's own queries */
	int sv_idle;                       /* parked, ready for a client */
	int sv_connecting;                 /* TCP connect or login in progress */
	int waiters;                       /* clients queued for a server */
	int active_limit;                  /* servers in use at once at most: the adaptive bound, else size */
	bool down;                         /* connects are backed off (backend unreachable) */
};

struct stats_global {
	int clients[STATS_CLIENT_NSTATES]; /* all clients per state, with or without a pool */
	uint64_t errors[STATS_NCLASSES];   /* ErrorResponses sent to clients per SQLSTATE class */
};

/* The counters, clients per state and servers connecting of one pool block into out (the
 * rest of a snapshot, names and gauges, is the pool's: pool_foreach_snapshot in pool/pool.h;
 * stats/ does not know pools). */
void stats_pool_snapshot_read(const struct stats_pool *sp, struct stats_pool_snapshot *out);
/* Adds snap's counters and gauges to sum (size summed, down if any is down). */
void stats_snapshot_add(struct stats_pool_snapshot *sum, const struct stats_pool_snapshot *snap);
void stats_read_global(const struct stats *st, struct stats_global *out);
/* Counters of one pool block (used by pool.c for its snapshot). */
void stats_pool_read(const struct stats_pool *sp, struct stats_counters *out);
/* Clients of one pool block, in every state (pool.c: does a pool still have clients?). */
int stats_pool_clients(const struct stats_pool *sp);

#endif
