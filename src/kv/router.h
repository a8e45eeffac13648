/* The executor of routed kv calls (docs/kv.md, "Routing"): the calls that src/kv/front.c and
 * resp_front.c parsed on the workers go to the shard of their key (kv_shard_of). A one-key
 * call runs on its worker's own loop, on that worker's non-blocking, pipelined libpq
 * connection to the shard (shard_loop.c); the calls of several shards (get_many, put_many,
 * delete_many, scan, count), and every call until the catalog has been read, run on a few
 * threads with blocking libpq, handed over through a mutex-guarded queue. Either way the
 * end is reported through job->done: on the worker's thread (job->local) or a router's. */
#ifndef TUSK_KV_ROUTER_H
#define TUSK_KV_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kv/call.h"
#include "kv/conn.h"

struct tusk_config;
struct kv_router;
struct worker;

#define KV_ROUTER_THREADS 4

/* A transaction of one shard's calls (the Redis listener's MULTI/EXEC, docs/kv.md): its jobs,
 * submitted one after another by one worker, run on a shard connection that is its own until
 * its end job (kv_job.txn_end) answers, in BEGIN ... COMMIT, each call under a savepoint so
 * that a call that fails is undone alone and the next ones run, as Redis's EXEC goes on past
 * an error (unless no_savepoints). Zeroed by the submitter before its first job; shard_loop.c keeps the rest. */
struct kv_txn {
	int shard;      /* in: the shard of every key its calls name */
	bool snapshot;  /* in: REPEATABLE READ (every call reads one snapshot), else READ COMMITTED */
	const char *begin; /* in: the statement it begins with, when not NULL (snapshot unused); the
			    * submitter keeps it until the end */
	bool no_savepoints; /* in: its calls run without a savepoint each: a call that fails aborts
			     * the whole (the kv database's transactions, as PostgreSQL's); each
			     * savepoint of a write is a subtransaction with an xid of its own */
	const char *const *savepoints; /* in: savepoints made right after its BEGIN, by name (the kv
					* database's client's, made before its first call; each must
					* succeed, else the transaction is doomed); the submitter keeps them */
	int nsavepoints;
	/* private: shard_loop.c */
	void *lc;       /* the connection it holds; NULL before its first call and after its end */
	bool begun;     /* BEGIN sent on lc */
	bool aborted;   /* a call failed: its savepoint is rolled back before the next step */
	bool doomed;    /* a step of tusk's own failed: the rest fails, its end rolls back */
	bool broken;    /* its connection closed: nothing of it was committed; the rest fails */
	bool ending;    /* its end (COMMIT) was sent: a loss now may or may not have committed */
	bool timeouts;  /* a call of it set timeouts on its shard: every later call sets its own (or resets them) */
};

/* kv_job.txn_end: its end, or (KV_TXN_STEP) one statement of its own on its connection, the
 * text in args[0] (a client's SAVEPOINT, RELEASE, ROLLBACK TO: the job's result, its error the
 * client's; the transaction goes on). */
enum { KV_TXN_COMMIT = 1, KV_TXN_ROLLBACK = 2, KV_TXN_STEP = 3 };

/* On the submitter's worker, with no job of t in flight: t is going away without its end (its
 * owner is freed); the connection it holds, if any, is closed (the server rolls it back). */
void kv_txn_abandon(struct kv_txn *t);

struct kv_job {
	/* in: set by the submitter, read by the router (NUL-terminated; NULL = SQL NULL) */
	struct worker *worker;         /* the submitter's, on whose thread kv_router_submit runs; NULL: a router thread runs it */
	enum kv_op op;
	const char *args[KV_CALL_MAX_ARGS]; /* the scalar arguments as texts, by position (NULL: SQL NULL or an array) */
	const char *ns, *key;          /* args[0]; args[1] unless the op has no key */
	int nkeys;                     /* get_many, put_many, delete_many */
	const char *const *keys;       /* none NULL */
	int nvalues;                   /* put_many: the JSON texts, one per key */
	const char *const *values;
	/* the caller's statement_timeout and lock_timeout in ms (enum kv_timeout; 0: the shard
	 * connection's own), set on the shard for the call (router_int.h, kv_timeouts_sql) */
	uint32_t timeout_ms[KV_TIMEOUT_COUNT];
	/* out: complete when done runs */
	bool failed;
	bool ours;                     /* tusk's own error (08006, 57P03 ...), not the shard's */
	char sqlstate[6];
	char message[KV_ERR_MAX];
	char detail[KV_ERR_MAX];
	char hint[256];
	uint8_t *rows;                 /* DataRow messages, ready to send; kept for reuse */
	size_t rows_len, rows_cap;
	uint64_t nrows;
	bool local;                    /* done runs on job->worker's own thread (post with worker_post_local) */
	/* delivery */
	void (*done)(struct kv_job *job); /* on a router thread, or the worker's (local) */
	void *arg;
	/* private: the router's queue, or a worker's shard connection */
	struct kv_job *next;
	bool timeouts_prepared;        /* its timeouts' statement prepared on the connection with it */
	uint8_t stage;                 /* which result of the pipeline comes next */
	bool retried;                  /* a read already sent again on a new connection */
	/* Its prepare or its statement was not there (a get's kv.live missing: shard_loop.c):
	 * nothing ran, so it is sent again after its Sync (again), once (resent). */
	bool again, resent;
	/* A put whose fast statement (kv_router) wrote nothing: its second leg, kv.put, runs. */
	bool put_slow;
	double sent;                   /* the worker loop's time it was sent */
	void *fan;                     /* shard_loop.c: the call of several shards this one is a part of */
	/* in: a call of a transaction (NULL: none; runs only on the worker's loop), or (txn_end:
	 * KV_TXN_COMMIT or KV_TXN_ROLLBACK, no call) its end, which releases its connection, or
	 * (KV_TXN_STEP) a statement of its own */
	struct kv_txn *txn;
	uint8_t txn_end;
	uint32_t pre;                  /* shard_loop.c: results of a transaction's steps owed first (its savepoints: up to 65,536) */
	bool cancel_asked;             /* shard_loop.c: its client sent a CancelRequest for it */
	uint8_t stray_resends;         /* shard_loop.c: sent again after another client's cancel hit it */
};

/* Make job the end of t (KV_TXN_COMMIT or KV_TXN_ROLLBACK), or a step (KV_TXN_STEP; the
 * caller sets args[0] after): no call, no key, an op of the worker's loop (kv_router_submit
 * needs one; it is not run). */
void kv_job_txn_end(struct kv_job *job, struct kv_txn *t, uint8_t end);

/* Calls of a transaction can run (the catalog is read and the instance resolved): until then
 * kv_router_submit answers them 57P03. */
bool kv_router_loop_ready(struct kv_router *r);
/* The shard count calls are routed by (kv_shard_of); 0 until kv_router_loop_ready. */
int kv_router_nshards(struct kv_router *r);

/* Start the router when cfg has a kv section (*out = NULL otherwise); the catalog is read on
 * the first call (and again a second after a failed read). 0 or -ENOMEM. */
__attribute__((warn_unused_result))
int kv_router_start(const struct tusk_config *cfg, struct kv_router **out);
/* Run job (on job->worker's thread when it has one); done runs once it is answered, perhaps
 * before this returns (an error found at once, a stopped router). */
void kv_router_submit(struct kv_router *r, struct kv_job *job);
/* On job->worker's thread, while job is in flight: its client sent a CancelRequest. A call
 * not sent yet (queued for a router thread, or waiting on the worker's loop) is answered
 * 57014 at once; one on a shard connection gets a cancel once it is the oldest call in flight
 * there, and that connection takes no new call until the shard has taken the cancel and the
 * call is answered (a call of another client pipelined behind it that the signal hits is sent
 * again: shard_loop.c); one running on a router thread runs on. What was done, for the log. */
const char *kv_router_cancel(struct kv_router *r, struct kv_job *job);
/* On w's thread, when w stops (its kv tenant's stop hook): answer w's calls in flight on
 * shard connections 57P01 and close those connections. */
void kv_router_worker_stop(struct kv_router *r, struct worker *w);
/* Finish the calls running, answer the queued ones and every later submit with 57P01, and
 * join the threads. The router stays valid (for late submits) until kv_router_free. */
void kv_router_stop(struct kv_router *r);
void kv_router_free(struct kv_router *r);
/* A newer catalog was read (router: a struct kv_router, or NULL; the replicator's supervisor
 * calls it, kv_replicate_start's on_catalog): when it moves the zone's instance (another
 * instance, host or port), calls go there from now on; connections to the old one close once
 * they have answered their calls. A changed shard count is logged, not followed. */
struct kv_catalog;
void kv_router_follow(void *router, const struct kv_catalog *cat);
/* Release what a job's output holds. */
void kv_job_free(struct kv_job *job);

#endif
