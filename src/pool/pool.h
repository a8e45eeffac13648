/* Shared server pools, one per (database, user), used by every worker. A pool counts its
 * servers (connecting, in use, idle), parks idle ones detached from any event loop, and
 * queues waiting clients in strict FIFO order. Hand-over between threads happens only
 * here: a server released on one worker is either parked or posted to the inbox of the
 * worker whose client waits longest. */
#ifndef TUSK_POOL_POOL_H
#define TUSK_POOL_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

struct prep_refs;
struct runtime;
struct server;
struct stats_pool;
struct worker;

/* Embedded in whoever waits (a client). The pool links it; the owner reads nothing but
 * uses the pointer to find itself again when the worker message arrives. */
struct pool_waiter {
	struct pool_waiter *next; /* private to pool */
	struct worker *worker;    /* set by the owner: where to post the answer */
	uint64_t owner;           /* set by the owner: its serial, to find the server it used last */
	bool queued;              /* private to pool; under the pool lock */
	uint8_t passed_over;      /* private to pool: times a waiter of another thread was served first */
	double queued_at;         /* private to pool: CLOCK_MONOTONIC_COARSE seconds when queued */
};

struct pool; /* opaque */

struct pool_registry *pool_registry_new(void);
/* Close every parked server and free every pool. No worker may run any more. */
void pool_registry_free(struct pool_registry *reg);

/* Main thread, after a reload published next: each pool follows the rule of next that
 * matches its (database, user) when that rule opens the same kind of server (service,
 * server login, mode), so new limits apply at once; otherwise the pool is retired (no new
 * clients, its clients finish, its servers close when released). */
void pool_registry_reload(struct pool_registry *reg, const struct tusk_config *next);

/* Find or create the pool for (database, user) under rule; a pool found dormant works
 * again. NULL on allocation failure, or when POOL_MAX_POOLS pools exist already
 * (pool_registry_full tells which). */
struct pool *pool_get(struct runtime *rt, const struct config_pool_rule *rule, const char *database,
		      const char *user);
/* No new pool can be made: the bound on pools (not retired by a reload) is reached. */
bool pool_registry_full(struct runtime *rt);

const struct config_pool_rule *pool_rule(const struct pool *p);
const char *pool_database(const struct pool *p);
const char *pool_user(const struct pool *p);

/* The pool's counters (stats/stats.h): live as long as the pool, i.e. the process. */
struct stats_pool *pool_stats(const struct pool *p);
/* How many client names of this pool refer to each prepared statement (pool/prepared.h):
 * lives as long as the pool; shared by every worker, locked inside. */
struct prep_refs *pool_prep_refs(const struct pool *p);

/* Gauges read under the pool lock, for stats readers on any thread. */
struct pool_gauges {
	int slots;   /* servers connecting, in use or idle, plus grants in flight */
	int idle;    /* parked servers */
	int waiters; /* clients queued */
	bool down;   /* connects are backed off: the backend failed twice or more in a row */
	bool paused; /* console PAUSE (pool_pause) */
};
void pool_snapshot(struct pool *p, struct pool_gauges *out);
/* cb for every pool, from the calling thread, no lock held during cb. Pools are never
 * unlinked, so the walk is safe against concurrent pool_get (new pools may be missed). */
void pool_foreach(struct runtime *rt, void (*cb)(struct pool *p, void *arg), void *arg);

enum pool_claim_result {
	POOL_CLAIM_SERVER,  /* *out is a parked server that passed the liveness check */
	POOL_CLAIM_CONNECT, /* a slot is reserved: open a new server connection */
	POOL_CLAIM_QUEUED,  /* w is queued; a WORKER_MSG_SERVER or _GRANT will come */
	POOL_CLAIM_DOWN,    /* the backend keeps refusing connections: fail now (pool_down_reason) */
};
/* Preference among idle servers: the one w->owner used last (its session already matches:
 * no SETs), then one last used on w->worker, then the most recently used. now is the
 * caller's loop time. */
enum pool_claim_result pool_claim(struct pool *p, struct pool_waiter *w, double now, struct server **out);

/* A grant arrived or a slot is reserved: may it be used to connect now? false (and the slot
 * released) while the backend is backed off. */
bool pool_may_connect(struct pool *p, double now);

/* Connect outcomes drive the backoff: from the second consecutive failure to reach the
 * server (refused, timed out, shutting down), new connects back off exponentially with
 * jitter, 0.25 s up to 10 s, and claims fail fast meanwhile; a login that succeeds clears it. */
void pool_connect_failed(struct pool *p, double now, const char *reason);
void pool_connect_succeeded(struct pool *p);
/* A login was refused with 53300 (the role's CONNECTION LIMIT or max_connections): the
 * backend is up but full. No backoff; the pool is capped at the servers it has now (the
 * refused one excluded) for a minute after the last such refusal, so that claims queue for
 * those servers instead of trying logins the backend refuses. One login a tick still tries
 * for room when the pool has no server at all and clients wait. */
void pool_connect_busy(struct pool *p, double now, const char *reason);
/* The connect a claim made was refused with 53300: w goes back to the head of the queue and
 * waits for a server as if the pool had been full (its pool_wait_timeout runs on). Call
 * before the refused server is closed (its pool_drop_slot then keeps the slot from w). */
void pool_wait_first(struct pool *p, struct pool_waiter *w);
/* Why the pool is backed off, and for how long still (seconds), for the client's error. */
void pool_down_reason(struct pool *p, double now, char *out, size_t cap);

/* A clean, idle server attached to the calling worker goes back: to the longest waiter
 * (detached and posted), or parked on this worker's loop in its idle list. */
void pool_put_idle(struct pool *p, struct server *s);
/* On worker self, asked by another worker's claim: hand one of self's parked servers to
 * the longest waiter of p, if both still exist. */
void pool_on_steal(struct worker *self, struct pool *p);
/* A parked server is being closed: take it off its idle list. */
void pool_forget_idle(struct server *s);
/* A slot is gone (its server closed, its connect failed, or a grant was not used): the
 * longest waiter, if any, gets the slot as a grant. */
void pool_drop_slot(struct pool *p);
/* Leave the queue. true: w was still queued and is now out. false: a server or grant for w
 * is already on its way to w->worker and must be taken (and given back) there. */
bool pool_leave_queue(struct pool *p, struct pool_waiter *w);

/* A server logged in with credentials a client's authentication revealed (passthrough):
 * keep them so that min_size servers can be opened without a client (PgBouncer does the
 * same with the secrets it learns). */
struct server_cred;
void pool_remember_cred(struct pool *p, const struct server_cred *cred);

/* Housekeeping on worker w: close the servers parked on it that were idle longer than
 * server_idle_timeout or are past their lifetime, or whose pool is retired or dormant; and,
 * for the pools whose index maps to w (so it spreads over the workers), open servers up to
 * min_size (backed off after a failure, 0.25 s doubling to 10 s; after POOL_DORMANT_AFTER
 * failures in a row with no client the pool goes dormant and stops), and give a queued
 * client a grant when room appeared that no release will announce (a 53300 cap expired). */
void pool_maintain(struct worker *w, double now);

/* The admin console (src/console/). Pools are never freed while workers run, so the list
 * can be walked from any thread: pool_first, then pool_next until NULL. */
struct pool *pool_first(struct runtime *rt);
struct pool *pool_next(const struct pool *p);

/* PAUSE: the pools of database ("": all) queue claims and hand nothing to waiters until
 * pool_resume_database, also pools created meanwhile; servers released meanwhile are parked.
 * The caller waits for slots == idle (pool_snapshot). 0 or -ENOMEM. */
__attribute__((warn_unused_result)) int pool_pause_database(struct runtime *rt, const char *database);
/* RESUME: the queue is served again (parked servers through their owners, room as grants). */
void pool_resume_database(struct runtime *rt, const char *database);

/* RECONNECT: servers connected before this are closed when released, not parked (the
 * caller closes the parked ones on their workers). */
void pool_reconnect(struct pool *p);
/* The generation a new server records (server.pool_gen). */
unsigned pool_generation(const struct pool *p);

#endif
