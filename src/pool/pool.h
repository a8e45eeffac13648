/* Shared server pools, one per (database, user), used by every worker. A pool counts its
 * servers (connecting, in use, idle), parks idle ones detached from any event loop, and
 * queues waiting clients in strict FIFO order. Hand-over between threads happens only
 * here: a server released on one worker is either parked or posted to the inbox of the
 * worker whose client waits longest. */
#ifndef TUSK_POOL_POOL_H
#define TUSK_POOL_POOL_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"

struct runtime;
struct server;
struct worker;

/* Embedded in whoever waits (a client). The pool links it; the owner reads nothing but
 * uses the pointer to find itself again when the worker message arrives. */
struct pool_waiter {
	struct pool_waiter *next; /* private to pool */
	struct worker *worker;    /* set by the owner: where to post the answer */
	bool queued;              /* private to pool; under the pool lock */
};

struct pool; /* opaque */

struct pool_registry *pool_registry_new(void);
/* Close every parked server and free every pool. No worker may run any more. */
void pool_registry_free(struct pool_registry *reg);

/* Find or create the pool for (database, user) under rule. NULL on allocation failure. */
struct pool *pool_get(struct runtime *rt, const struct config_pool_rule *rule, const char *database,
		      const char *user);

const struct config_pool_rule *pool_rule(const struct pool *p);
const char *pool_database(const struct pool *p);
const char *pool_user(const struct pool *p);

enum pool_claim_result {
	POOL_CLAIM_SERVER,  /* *out is a parked server that passed the liveness check */
	POOL_CLAIM_CONNECT, /* a slot is reserved: open a new server connection */
	POOL_CLAIM_QUEUED,  /* w is queued; a WORKER_MSG_SERVER or _GRANT will come */
};
enum pool_claim_result pool_claim(struct pool *p, struct pool_waiter *w, struct server **out);

/* A clean, idle, detached server goes back: to the longest waiter or to the idle list. */
void pool_put_idle(struct pool *p, struct server *s);
/* A slot is gone (its server closed, its connect failed, or a grant was not used): the
 * longest waiter, if any, gets the slot as a grant. */
void pool_drop_slot(struct pool *p);
/* Leave the queue. true: w was still queued and is now out. false: a server or grant for w
 * is already on its way to w->worker and must be taken (and given back) there. */
bool pool_leave_queue(struct pool *p, struct pool_waiter *w);

/* Close parked servers idle for longer than the configured timeout, in pools whose index
 * maps to this worker, so expiry spreads over the workers. */
void pool_expire_idle(struct runtime *rt, int worker_index, int nworkers, double now);

#endif
