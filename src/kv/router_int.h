/* What the router's two executors share (router.c: the threads with blocking libpq;
 * shard_loop.c: one-key calls on the worker's own loop with non-blocking libpq): the
 * router's state, the statement of each op, and the job's output helpers. Internal to
 * src/kv/router.c and src/kv/shard_loop.c. */
#ifndef TUSK_KV_ROUTER_INT_H
#define TUSK_KV_ROUTER_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "kv/catalog.h"
#include "kv/router.h"
#include "pq/pq.h"

/* A shard connection's prepared mask: one bit per statement it prepared (an op's, the slow
 * puts' KV_SLOT_*), and KV_PREPARED_GET_FALLBACK. (It was 32 bits, which the ops filled.) */
typedef uint64_t kv_prepared_t;
#define KV_PREPARED_BIT(slot) ((kv_prepared_t)1 << (slot))

struct kv_loop;
struct kv_route;

struct kv_exec {
	struct kv_router *r;
	pthread_t thread;
	bool started;
	PGconn **conns; /* per shard, opened on first use; this thread's own */
	kv_prepared_t *prepared; /* per shard: bit op set once that connection prepared op's statement */
	const struct kv_route **routes; /* per shard: the route that connection was opened for */
	const struct kv_route *route_seen; /* the newest route when this thread last looked */
	int nconns;
};

#define KV_HOSTADDR_MAX 4 /* addresses of the instance's host tried by a worker's connect */

/* Whether the comma-separated list holds item as a whole entry (route_new's dedupe). */
bool kv_csv_has(const char *list, const char *item);

/* Where this zone's calls go: the catalog's instance for the zone, its host's addresses
 * resolved beforehand (a connect on a worker's loop must not wait for DNS). Published whole
 * (kv_router.route, release) and never changed or freed before kv_router_free: a newer catalog
 * that moves the zone's instance publishes a newer route (kv_router_follow), and every shard
 * connection remembers the route it was opened for, so one opened for an older route takes
 * no new call, is closed once it has answered its calls, and the next call connects anew. */
struct kv_route {
	int instance_id;
	char host[256];
	int port;
	/* hostaddr and hosts hold the host's addresses (or host is a Unix socket): the calls
	 * may run on the workers' loops. false when the host did not resolve: every call then
	 * goes to the router's threads, which resolve at each connect. */
	bool resolved;
	char hostaddr[KV_HOSTADDR_MAX * 48]; /* numeric addresses, comma-separated ("" for a Unix socket) */
	char hosts[KV_HOSTADDR_MAX * 257];   /* host repeated once per address, as libpq pairs them */
	struct kv_route *older;              /* freed with the router */
};

/* The fast path of a put (kv.router_password set; docs/kv.md, "Ninth step"): the namespaces of
 * the newest catalog tusk read, each with its policy's bounds, as the shards at that catalog
 * version hold them. Published whole (kv_router.nstab, release), never changed, freed with
 * the router (a newer catalog publishes a newer one). */
struct kv_nstab {
	int64_t version;
	char version_text[24];
	int n;
	struct kv_ns_policy *ns; /* sorted bytewise */
	struct kv_nstab *older;
};

struct workq;

struct kv_router {
	pthread_mutex_t mu;  /* protects the queue, stop, and sleeps on cv */
	pthread_cond_t cv;
	struct kv_job *head, *tail;
	bool stop;
	/* stop's copy for the workers' one-key calls, which take no lock: set (under mu) before
	 * the queue is answered; a call submitted after it is answered 57P01 on its worker */
	atomic_bool stopping;
	struct kv_exec exec[KV_ROUTER_THREADS];
	/* the catalog's part routing needs, under cat_mu (read once it answers) */
	pthread_mutex_t cat_mu;
	int nshards;         /* 0: not read yet; then fixed (a restart changes it) */
	double cat_tried;    /* CLOCK_MONOTONIC of the last failed read */
	char cat_err[KV_ERR_MAX];
	/* NULL until the catalog is read; then the newest route, read without the lock
	 * (kv_route_now) and replaced under cat_mu */
	_Atomic(struct kv_route *) route;
	atomic_bool get_fallback_noted; /* kv_get_fall_back logged */
	/* per worker (by index), made by that worker at its first call and touched only on its
	 * thread until kv_router_free */
	struct kv_loop **loops;
	int nloops;
	double call_timeout; /* seconds a worker waits for a shard's answer (then the connection is dropped) */
	double idle_close;   /* seconds a worker's extra shard connection stays open without a call */
	double cancel_delay; /* tests: seconds a cancel's thread waits before it sends it */
	/* set at start, read-only */
	char zone[64];
	char catalog_host[256];
	int catalog_port;
	char catalog_db[CONFIG_NAME_MAX];
	char *replicator_password; /* the catalog is read as kv_replicator, like replication does */
	char *client_password;     /* the shards are called as kv_client: the API functions only */
	/* set: they are called as kv_router instead (kv_client's rights and a put's fast path) */
	char *router_password;
	_Atomic(struct kv_nstab *) nstab; /* NULL until the catalog is read (router_password only) */
	/* clients' CancelRequests for their calls on a worker's loop (shard_loop.c): libpq's
	 * PQcancel blocks, so it runs on these threads; NULL: cancels are not sent */
	struct workq *cancel_q;
};

/* The role tusk's shard connections log in as, and its password (NULL: none). */
static inline const char *kv_shard_user(const struct kv_router *r)
{
	return r->router_password ? "kv_router" : "kv_client";
}
static inline const char *kv_shard_password(const struct kv_router *r)
{
	return r->router_password ? r->router_password : r->client_password;
}
/* The options of a shard connection (bounded statements; kv_router's resolves names in
 * pg_catalog only: its fast path writes kv.data with a top-level statement). */
static inline const char *kv_shard_options(const struct kv_router *r)
{
	return r->router_password ? "-c statement_timeout=60s -c lock_timeout=30s -c search_path=pg_catalog"
				  : "-c statement_timeout=60s -c lock_timeout=30s";
}

/* The newest route (NULL before the catalog was read): any thread, no lock. */
static inline const struct kv_route *kv_route_now(struct kv_router *r)
{
	return atomic_load_explicit(&r->route, memory_order_acquire);
}

extern const char *const kv_op_sql[];
extern const int kv_op_nparams[];
#define KV_OP_COUNT_ALL 31 /* entries of kv_op_sql */
/* kv_op_sql[KV_OP_GET] reads the view kv.live and calls kv.get only when it has no row;
 * kv_op_sql[KV_OP_READ] the same with kv.read. A shard database whose schema predates them
 * (tusk kv init not run again since) fails that statement's prepare: the connection then sets
 * this bit of its prepared mask and runs the fallbacks instead, until it is closed:
 * kv_get_fallback_sql ("SELECT kv.get($1, $2)"), kv_read_fallback_sql (kv.get, else
 * kv.counter when not 0, in one statement), kv_read_many_fallback_sql (kv.get_many: the
 * values only) and kv_read_meta_fallback_sql (kv.get_meta). */
#define KV_PREPARED_GET_FALLBACK KV_PREPARED_BIT(63)
extern const char kv_get_fallback_sql[];
extern const char kv_read_fallback_sql[];
extern const char kv_read_many_fallback_sql[];
extern const char kv_read_meta_fallback_sql[];
/* op has a fallback statement for shards whose schema predates its own. */
static inline bool kv_op_falls_back(enum kv_op op)
{
	return op == KV_OP_GET || op == KV_OP_READ || op == KV_OP_READ_MANY || op == KV_OP_READ_META ||
	       op == KV_OP_WATCH_TAG;
}
/* The statement op runs on a connection whose prepared mask is prepared. */
static inline const char *kv_op_statement(enum kv_op op, kv_prepared_t prepared)
{
	if (!(prepared & KV_PREPARED_GET_FALLBACK))
		return kv_op_sql[op];
	return op == KV_OP_GET ? kv_get_fallback_sql : op == KV_OP_READ ? kv_read_fallback_sql
		: op == KV_OP_READ_MANY ? kv_read_many_fallback_sql
		: op == KV_OP_READ_META || op == KV_OP_WATCH_TAG ? kv_read_meta_fallback_sql : kv_op_sql[op];
}
#define KV_STMT_MAX_PARAMS 7
/* Under kv_router a put is kv_put_fast_sql, an INSERT that returns the new version, or no row
 * when one of its checks failed; then the put runs kv.put (kv_op_sql[KV_OP_PUT]) as a second
 * statement (job->put_slow), which raises kv.put's error or writes. That statement is prepared
 * under this bit of a connection's prepared mask (the ops' are 0..KV_OP_COUNT_ALL-1). */
#define KV_SLOT_PUT_SLOW 62
/* The same for put_many (kv_put_many_fast_sql, then kv.put_many), on a worker's loop, for a
 * shard's part of at most KV_PUT_MANY_FAST_MAX keys (above, the fast statement gained nothing
 * over kv.put_many: 2,600 keys of one shard 52 ms either way; docs/kv.md, "Twelfth step"). */
#define KV_SLOT_PUT_MANY_SLOW 61
#define KV_PUT_MANY_FAST_MAX 1000
/* A call of a session with timeouts (kv_job.timeout_ms) runs after kv_timeouts_sql, prepared
 * under this bit ("tusk_kv_60"), in the call's own transaction (before its Sync, or the
 * client's): set_config(..., true), which that transaction's end undoes, so the connection's
 * other calls (other clients') run under theirs. kv_job_timeouts: its two parameters, the
 * statement_timeout and lock_timeout in ms as text, or NULL for the connection's own (RESET:
 * 60 s and 30 s, kv/conn.c); false when the job has none to set. statement_timeout is set below
 * 60 s only, so that tusk's wait for a call (65 s) stays above it. */
#define KV_SLOT_TIMEOUTS 60
extern const char kv_timeouts_sql[];
bool kv_job_timeouts(const struct kv_job *job, char text[KV_TIMEOUT_COUNT][12], const char *params[KV_TIMEOUT_COUNT]);
/* The prepared mask's bit of job's statement on a connection of r, which names it too
 * ("tusk_kv_<slot>"): its op, or KV_SLOT_PUT_SLOW. */
int kv_stmt_slot(const struct kv_router *r, const struct kv_job *job);
/* The statement job runs on a connection of r whose prepared mask is prepared, and its
 * parameter count (a put on the fast path: kv_put_fast_sql, 7). */
const char *kv_stmt(const struct kv_router *r, const struct kv_job *job, kv_prepared_t prepared, int *nparams);
/* res, the answer of job's statement, is the fast path's "wrote nothing" (no row, a count of 0,
 * or kv._stale's error KV003): job->put_slow is set and true returned, and the put is run again
 * with kv.put or kv.put_many (its error or its write). */
bool kv_put_fast_missed(const struct kv_router *r, struct kv_job *job, const PGresult *res);
/* job's parameters for that statement: job->args, or for a put on the fast path those and the
 * namespace's default_ttl, max_ttl and the catalog version they are of (NULL when tusk's
 * catalog has no such namespace: the statement then writes nothing and calls kv.put, which
 * raises), in params (KV_STMT_MAX_PARAMS entries). */
const char *const *kv_stmt_params(struct kv_router *r, struct kv_job *job, const char **params);

/* A failed prepare (res) of op on a connection of shard whose prepared mask is *prepared:
 * when it was the prepare of a statement with a fallback (kv_op_falls_back), switch that
 * connection to the fallbacks (set the bit, clear op's, log once per router) and return true. */
bool kv_get_fall_back(struct kv_router *r, int shard, enum kv_op op, kv_prepared_t *prepared, const PGresult *res);

__attribute__((format(printf, 3, 4)))
void kv_job_fail(struct kv_job *job, const char *sqlstate, const char *fmt, ...);
/* The shard's own error, forwarded as PostgreSQL sent it. */
void kv_job_fail_result(struct kv_job *job, const PGresult *res, PGconn *conn);
/* Clear the job's output before a run. */
void kv_job_reset(struct kv_job *job);
/* The message of PostgreSQL's 57014 for a client's cancel. */
#define KV_CANCELED_MESSAGE "canceling statement due to user request"
/* job answered as a statement its client cancelled: no rows, PostgreSQL's own 57014. */
void kv_job_canceled(struct kv_job *job);
/* Every row (of one or two columns) of res appended to the job's rows (or the job failed). */
void kv_job_add_rows(struct kv_job *job, const PGresult *res);
/* The answers of a call of several shards, merged (router.c's threads, shard_loop.c's fan). */
struct kv_pair {
	char *key, *value; /* value NULL: SQL NULL */
	int klen, vlen;
};
/* The indexes (into idx) of the keys whose shard_of is shard; how many. */
int kv_keys_of_shard(const int *shard_of, int nkeys, int shard, int *idx);
/* A text[] literal of arr[idx[0..n)], every element quoted (malloc'd; NULL: no memory). */
char *kv_array_literal(const char *const *arr, const int *idx, int n);
/* Sort the pairs by key (bytewise, as the shards order them) and send the first max. */
void kv_send_pairs(struct kv_job *job, struct kv_pair *pairs, size_t npairs, size_t max);
void kv_send_count(struct kv_job *job, long long sum);
/* One row of one text column, v[0, n) (NULL: SQL NULL). */
void kv_send_value(struct kv_job *job, const char *v, int n);
/* kv.random_key's answers of several shards: each one not NULL (v[0, n)) offered in turn to
 * *pick, which keeps each of the *seen offered so far with the same chance (a reservoir of
 * one; malloc'd, NULL: none yet). false: no memory. */
bool kv_random_offer(char **pick, int *pick_len, int *seen, const char *v, int n);
/* A one-row one-column answer of shard into the job (or the job failed). */
void kv_job_single(struct kv_job *job, const PGresult *res, int shard);

/* shard_loop.c: run job (a one-key call, routing known) on its worker's loop; its done runs
 * on that worker's thread (job->local set). */
void kv_loop_submit(struct kv_router *r, struct kv_job *job);
/* The worker w stops: answer its calls in flight 57P01, close its shard connections. */
void kv_loop_stop(struct kv_router *r, struct kv_loop *l);
void kv_loop_free(struct kv_loop *l);
/* The threads that send cancels (r->cancel_q): started with the router (-ENOMEM), and
 * stopped before the workers are (kv_router_stop). */
int kv_loop_cancels_start(struct kv_router *r);
void kv_loop_cancels_stop(struct kv_router *r);
/* On w's thread: a client's CancelRequest for its call (of w's loop) in flight; what was
 * done about it, for the log. */
const char *kv_loop_cancel(struct kv_router *r, struct worker *w, const struct kv_job *call);

#endif
