/* The executor of routed kv calls (docs/kv.md, "Routing"): a few threads, each with its own
 * libpq connections (as kv_client) to the shard databases of this zone's instance, run the
 * calls that src/kv/front.c parsed on the workers. A call goes to the shard of its key
 * (kv_shard_of); get_many is split by shard and its rows merged in key order. Blocking libpq,
 * never on a worker's loop: a job is handed over through a mutex-guarded queue and its end
 * reported through job->done, on the router's thread. */
#ifndef TUSK_KV_ROUTER_H
#define TUSK_KV_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kv/call.h"
#include "kv/conn.h"

struct tusk_config;
struct kv_router;

#define KV_ROUTER_THREADS 4

struct kv_job {
	/* in: set by the submitter, read by the router (NUL-terminated; NULL = SQL NULL) */
	enum kv_op op;
	const char *args[KV_CALL_MAX_ARGS]; /* the scalar arguments as texts, by position (NULL: SQL NULL or an array) */
	const char *ns, *key;          /* args[0]; args[1] unless the op has no key */
	int nkeys;                     /* get_many, put_many, delete_many */
	const char *const *keys;       /* none NULL */
	int nvalues;                   /* put_many: the JSON texts, one per key */
	const char *const *values;
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
	/* delivery */
	void (*done)(struct kv_job *job); /* on a router thread (or the submitter's, when stopped) */
	void *arg;
	struct kv_job *next;           /* private: the queue */
};

/* Start the router when cfg has a kv section (*out = NULL otherwise); the catalog is read on
 * the first call (and again a second after a failed read). 0 or -ENOMEM. */
__attribute__((warn_unused_result))
int kv_router_start(const struct tusk_config *cfg, struct kv_router **out);
/* Queue job; done runs once it is answered. */
void kv_router_submit(struct kv_router *r, struct kv_job *job);
/* Finish the calls running, answer the queued ones and every later submit with 57P01, and
 * join the threads. The router stays valid (for late submits) until kv_router_free. */
void kv_router_stop(struct kv_router *r);
void kv_router_free(struct kv_router *r);
/* Release what a job's output holds. */
void kv_job_free(struct kv_job *job);

#endif
