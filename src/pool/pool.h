/* Shared server pools, one per (database, user), used by every worker. Each owns a pool
 * of the core (include/tuskpool.h), which counts its servers, queues waiting clients in FIFO
 * order with their deadline, backs off, parks idle servers per worker and hands them between
 * threads by its one path; this module is the daemon's policy over it (sizes, database and
 * user limits, pause, reconnect, reload, dormant pools) and plugs server.c in as the core's
 * PostgreSQL connector. */
#ifndef TUSK_POOL_POOL_H
#define TUSK_POOL_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "tuskpool.h"

struct prep_refs;
struct runtime;
struct server;
struct stats_pool;
struct stats_pool_snapshot;
struct worker;

struct server_cred;

/* The pool's answer to a claim that was queued, on the waiter's worker: s (attached to that
 * worker, unparked) with err 0, or NULL and err: -ETIMEDOUT (the core's deadline, a little
 * after pool_wait_timeout), -EHOSTUNREACH (the backend is backed off: pool_down_reason),
 * -ECANCELED (shutting down), or the failure of the connect opened for this waiter, with
 * reason and the server's ErrorResponse (errmsg, type byte included) when it sent one. */
struct pool_waiter;
typedef void (*pool_answer_fn)(struct pool_waiter *w, struct server *s, int err, const char *reason,
			       const uint8_t *errmsg, size_t errlen);

/* Embedded in whoever waits (a client). */
struct pool_waiter {
	struct tp_claim claim;            /* private to pool.c */
	struct worker *worker;            /* set by the owner: where the answer runs */
	uint64_t owner;                   /* set by the owner: its serial, to find the server it used last */
	const struct server_cred *cred;   /* set by the owner: what a connect for it logs in with */
	pool_answer_fn answer;            /* set by the owner */
	bool standby;                     /* set by the owner: read-write-split's standby side (pool_is_split) */
	bool connecting;                  /* private to pool.c: a server is being opened for it */
	double queued_at;                 /* private to pool.c: when it claimed (probes) */
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

/* max_db_client_connections / max_user_client_connections: a client of p counts in p's
 * database and in p's user (every pool of that name, on every worker) unless that would
 * make more than db_max (user_max; 0: no limit); *count is the clients already there in the
 * group that was full. An entered client leaves by pool_client_leave, once. */
enum pool_client_entry { POOL_CLIENT_IN, POOL_CLIENT_DB_FULL, POOL_CLIENT_USER_FULL };
enum pool_client_entry pool_client_enter(struct pool *p, int db_max, int user_max, int *count);
void pool_client_leave(struct pool *p);
/* The clients counted in the database (is_user: the user) name, on every worker. */
int pool_name_clients(struct runtime *rt, const char *name, bool is_user);

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
	int slots;   /* servers connecting, in use, idle or on their way to a client */
	int idle;    /* parked servers */
	int waiters; /* clients queued */
	bool down;   /* connects are backed off: the backend failed twice or more in a row */
	bool paused; /* console PAUSE (pool_pause) */
	int stale;   /* servers connected before the last RECONNECT, not closed yet (WAIT_CLOSE) */
	int active_max; /* active_limit: adaptive's bound now; 0: none */
};
void pool_snapshot(struct pool *p, struct pool_gauges *out);
/* cb for every pool, from the calling thread, no lock held during cb. Pools are never
 * unlinked, so the walk is safe against concurrent pool_get (new pools may be missed). */
void pool_foreach(struct runtime *rt, void (*cb)(struct pool *p, void *arg), void *arg);
/* The readers of SHOW POOLS/STATS and /metrics: one pool's names, counters (its stats block)
 * and gauges; pool_foreach_snapshot calls cb with it once per pool, in no particular order,
 * taking and dropping each pool's lock for the gauges only (cb runs with no lock held);
 * pool_totals sums every pool (database, user, mode NULL; size summed). */
void pool_stats_snapshot(struct pool *p, struct stats_pool_snapshot *out);
void pool_foreach_snapshot(struct runtime *rt, void (*cb)(const struct stats_pool_snapshot *snap, void *arg),
			   void *arg);
void pool_totals(struct runtime *rt, struct stats_pool_snapshot *out);

enum pool_claim_result {
	POOL_CLAIM_SERVER,  /* *out is a parked server of this worker (server_unpark it) */
	POOL_CLAIM_QUEUED,  /* w waits; w->answer runs later on w->worker (a server or an error) */
	POOL_CLAIM_DOWN,    /* the backend keeps refusing connections: fail now (pool_down_reason) */
};
/* Preference among idle servers: the one w->owner used last (its session already matches:
 * no SETs), then one parked on w->worker, then the most recently used. A waiter for which
 * the pool opens a server gets that server, logged in with w->cred (passthrough). */
enum pool_claim_result pool_claim(struct pool *p, struct pool_waiter *w, double now, struct server **out);
/* target_session_attrs: read-write-split: the pool has a standby side, which a waiter with
 * standby set claims from (its servers are standbys; everything else is on the primary side). */
bool pool_is_split(const struct pool *p);
/* read-write-split: whether the standby side serves this pool's sessions, as learned by
 * split/route.c (a default_transaction_isolation of serializable, set for the role, the
 * database or the standby, makes a standby refuse every transaction). What was learned is
 * forgotten after POOL_STANDBY_RECHECK_S (an ALTER ROLE ... SET reaches new sessions). */
enum pool_standby_use { POOL_STANDBY_UNKNOWN, POOL_STANDBY_SERVES, POOL_STANDBY_REFUSES };
#define POOL_STANDBY_RECHECK_S 60.0
enum pool_standby_use pool_standby_use(const struct pool *p, double now);
void pool_set_standby_use(struct pool *p, enum pool_standby_use use, double now);

/* Backend i of the pool's current set (SHOW SERVICES): address, state, servers, last connect
 * error. false past the end. */
bool pool_backend(struct pool *p, int i, struct tp_backend_addr *addr, enum tp_backend_state *state, int *slots,
		  char *err, size_t errcap);
/* server.c: a server reported a parameter (at login or later); in_hot_standby tells the
 * service its backend's role. */
void pool_server_param(struct server *s, const char *name, const char *value);

/* Retired by a reload (its clients finish; no new client finds it). */
bool pool_retired(const struct pool *p);
/* s, in use, is to be closed when released: RECONNECT or KILL, a reload that retired its
 * pool, its backend gone (server_fast_close closes it sooner). */
bool pool_server_must_close(const struct server *s);

/* Why the pool's backend is backed off, for the client's error. */
void pool_down_reason(struct pool *p, double now, char *out, size_t cap);
/* A claim timed out while the pool held no server at all: true, and the connects' errors
 * (pool_down_reason) in out, when there were any (e.g. every backend has the wrong role for
 * target_session_attrs). */
bool pool_wait_reason(struct pool *p, char *out, size_t cap);

/* A clean, idle server attached to the calling worker goes back: to a waiter, or parked on
 * this worker's loop (watched for reads), or closed when the pool keeps no more of it. */
void pool_put_idle(struct pool *p, struct server *s);
/* relay.c: s's client holds it with nothing running on it (a transaction left open, a pinned
 * session between statements: resting), or uses it again. With active_limit: adaptive a
 * resting server does not count against the bound (tp_slot_rest), so the bound keeps no
 * waiter out while PostgreSQL idles. Callers test s->resting first: a call is for a change. */
void pool_server_rest(struct server *s, bool resting);
/* s, in use, came to the worker it is attached to now with its client (a session client
 * moving between workers): the pool core's slot is that worker's from now on. On that worker. */
void pool_server_moved(struct server *s);
/* server_close of a pool server: its slot goes back to the core, whatever state it is in
 * (connecting, parked, in use). */
void pool_close_server(struct server *s, const char *reason);
/* Leave the queue. true: w was still queued and is now out. false: an answer for w is on
 * its way (a server, or a connect opened for it) and must be taken (and given back) then. */
bool pool_leave_queue(struct pool *p, struct pool_waiter *w);

/* A server logged in with credentials a client's authentication revealed (passthrough):
 * keep them so that min_size servers can be opened without a client (PgBouncer does the
 * same with the secrets it learns). */
void pool_remember_cred(struct pool *p, const struct server_cred *cred);

/* Housekeeping on worker w (its tick): the core's expiry of claims past their deadline and
 * of idle servers (server_idle_timeout above min_size, server_lifetime, RECONNECT, reload),
 * min_size connects (by the pool's home worker, one a tick, backed off; after
 * POOL_DORMANT_AFTER failures in a row with no client the pool goes dormant), the one login
 * a tick that tries for room after a 53300; and pool_idle_timeout for wildcard pools. */
void pool_maintain(struct worker *w, double now);

/* The admin console (src/console/). Pools are never freed while workers run, so the list
 * can be walked from any thread: pool_first, then pool_next until NULL. */
struct pool *pool_first(struct runtime *rt);
struct pool *pool_next(const struct pool *p);

/* PAUSE: the pools of database ("": all) queue claims and hand nothing to waiters until
 * pool_resume_database, also pools created meanwhile; servers released meanwhile are parked.
 * The caller waits for slots == idle (pool_snapshot). 0 or -ENOMEM. */
__attribute__((warn_unused_result)) int pool_pause_database(struct runtime *rt, const char *database);
/* Whether a PAUSE of every database (pool_pause_database with "") holds (SHOW STATE). */
bool pool_paused_all(struct runtime *rt);
/* RESUME: the queue is served again (parked servers, then new connects for the rest). */
void pool_resume_database(struct runtime *rt, const char *database);
/* Console DISABLE / ENABLE: new logins to database (one name, never "") are refused while it
 * is disabled; clients already in are untouched. 0 or -ENOMEM. */
__attribute__((warn_unused_result)) int pool_disable_database(struct runtime *rt, const char *database, bool disabled);
bool pool_database_disabled(struct runtime *rt, const char *database);

/* RECONNECT: servers connected before this are closed when released, not parked (the
 * caller closes the parked ones on their workers). */
void pool_reconnect(struct pool *p);
/* The generation a new server records (server.pool_gen). */
unsigned pool_generation(const struct pool *p);

#endif
