/* A few threads of their own for blocking work that must stay off the workers' loops (LDAP and
 * PAM checks, auth/ldapauth.c and auth/pamauth.c): a bounded FIFO of items under one lock, up to
 * max_threads threads started as items come (none before the first), each working one item at a
 * time. The caller embeds a struct workq_item in its own item and owns it again when its end
 * callback runs, which happens exactly once per submitted item. */
#ifndef TUSK_UTIL_WORKQ_H
#define TUSK_UTIL_WORKQ_H

#include <stdbool.h>
#include <stddef.h>

#define WORKQ_THREADS_MAX 8

struct workq;
struct workq_item {
	struct workq_item *next; /* the queue's */
};

enum workq_end {
	WORKQ_DONE,      /* worked: answer the submitter */
	WORKQ_CANCELLED, /* never started, the queue stopping: answer that */
	WORKQ_DROPPED,   /* worked, but the queue was given up meanwhile (workq_stop): answer no one */
};

/* On a queue thread, outside the lock: the blocking part. index (0 .. max_threads - 1) says
 * which thread, for state of the caller's own per thread. */
typedef void workq_work_fn(void *ctx, int index, struct workq_item *it);
/* Exactly once per submitted item, under the queue's lock (so an answer cannot cross the
 * queue being given up): quick, and never calls back into the queue. Frees the item. */
typedef void workq_end_fn(void *ctx, struct workq_item *it, enum workq_end how);

struct workq_def {
	const char *name; /* the threads' name (pthread_setname_np: 15 bytes at most) */
	int max_threads;  /* 1 .. WORKQ_THREADS_MAX */
	unsigned queue_max; /* items waiting (not yet taken by a thread) at most */
	workq_work_fn *work;
	workq_end_fn *end;
	void *ctx;
};

/* 0 or -ENOMEM. */
__attribute__((warn_unused_result))
int workq_new(const struct workq_def *d, struct workq **out);
/* Any thread: queue it (a thread more when every one is busy, up to the bound). 0 (its end
 * runs later on a queue thread, or at workq_stop; never before this returns), -EAGAIN (the
 * queue is full), -ENOMEM (no thread could start), -ESHUTDOWN (stopping); then the item is
 * still the caller's. */
__attribute__((warn_unused_result))
int workq_submit(struct workq *q, struct workq_item *it);
/* workq_submit of an item that holds a secret (a password): the item is the whole heap block
 * at block (size bytes), which is wiped and freed here when the queue refuses it. The same
 * return values; on refusal the caller owns nothing. */
__attribute__((warn_unused_result))
int workq_submit_or_wipe(struct workq *q, struct workq_item *it, void *block, size_t size);
/* Items submitted whose end has not run (any thread). */
unsigned workq_pending(struct workq *q);
/* Stop: the queued items end WORKQ_CANCELLED (here, on the calling thread); the running ones
 * are waited for, as long as they take (wait_ms < 0) or wait_ms at most. true when all ended
 * (the threads joined, q freed); false when one still runs after wait_ms: q is then given up to
 * its threads (detached; what still runs ends WORKQ_DROPPED, and the last thread out frees
 * q). NULL: nothing, true. */
bool workq_stop(struct workq *q, int wait_ms);

#endif
