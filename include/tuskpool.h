/* libtuskpool: a protocol-free connection pool. A resolver says which backends exist; the
 * pool keeps slots (connections) to them, opened and checked by a connector the program
 * gives, and serves claims in strict FIFO order, each with one absolute deadline. The
 * program also gives the host: its clock, a way to run a function on one of its threads'
 * event loops, counters and logs. The pool knows no event loop, no protocol and no socket.
 *
 * Threads: the program has nthreads threads, numbered 0..nthreads-1, each with its own
 * loop. A slot belongs to one thread at a time; idle slots wait on the thread that released
 * them, and move to another thread only by the one hand-over path (detach on the owner,
 * attach on the claimer; both through the connector's ops, run on the right threads via
 * host.post). Every tp_* call below names the thread it is made on, except where it says
 * "any thread". */
#ifndef TUSKPOOL_H
#define TUSKPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TUSKPOOL_VERSION "0.1.0"
#define TP_NAME_MAX 256

#if defined(__GNUC__)
#define TP_MUST_CHECK __attribute__((warn_unused_result))
#else
#define TP_MUST_CHECK
#endif

struct tp_pool;
struct tp_slot;

/* A backend as the resolver names it. Identity is (name, port): the same pair in two
 * updates is the same backend, with its state and slots kept. */
struct tp_backend_addr {
	char name[TP_NAME_MAX]; /* host name or address, for the connector and the logs */
	uint16_t port;
	/* The choice of a backend for a new connect (not part of the identity; an update may
	 * change them): only backends of the lowest priority among those up are used, and among
	 * them new connects go where slots / weight is least. Weight 0 is a share of almost
	 * nothing (RFC 2782); all weights 0 (the zeroed default) spread evenly. */
	uint16_t priority;
	uint32_t weight;
};

enum tp_backend_state {
	TP_BACKEND_UP,       /* connects allowed */
	TP_BACKEND_BACKOFF,  /* a connect failed: no new connect before its retry time */
	TP_BACKEND_DEAD,     /* circuit open: breaker_failures in a row; one probe at max backoff */
	TP_BACKEND_DRAINING, /* removed by the resolver: no new slots, the rest close when released */
};

enum tp_close_reason {
	TP_CLOSE_BROKEN,   /* the program said the connection is unusable */
	TP_CLOSE_IDLE,     /* idle longer than idle_timeout */
	TP_CLOSE_LIFETIME, /* older than its lifetime */
	TP_CLOSE_HEALTH,   /* failed a health check */
	TP_CLOSE_REMOVED,  /* its backend was removed by the resolver */
	TP_CLOSE_STOPPED,  /* the pool is stopping */
	TP_CLOSE_CONNECT,  /* the connect failed */
	TP_CLOSE_RECONNECT, /* connected before tp_pool_reconnect */
	TP_CLOSE_RETIRED,  /* the pool was retired (tp_pool_retire) */
	TP_CLOSE_DORMANT,  /* the pool went dormant (tp_pool_sleep, or min_slots connects kept failing) */
	TP_CLOSE_GROUP,    /* making room under a tp_group limit for another pool's claim */
	TP_CLOSE_SHRUNK,   /* above max_slots after tp_pool_resize */
	TP_CLOSE__COUNT
};

/* Counters the pool reports through host.count (value: seconds for waits and connects). */
enum tp_event {
	TP_EV_CLAIM_WAIT,     /* a claim was served; value = seconds it waited */
	TP_EV_CLAIM_TIMEOUT,  /* a claim reached its deadline */
	TP_EV_CLAIM_FAILED,   /* a claim failed fast: every backend is dead */
	TP_EV_CONNECT_OK,     /* value = seconds the connect took */
	TP_EV_CONNECT_FAILED, /* value = seconds the connect took */
	TP_EV_HANDOVER,       /* an idle slot moved between threads */
	TP_EV_CLOSED,         /* a slot closed; value = enum tp_close_reason */
};

enum tp_log_level { TP_LOG_DEBUG, TP_LOG_INFO, TP_LOG_WARN };

/* What the program embedding the pool provides. Every op may be called with the pool's lock
 * NOT held: they may call back into tp_* functions. */
struct tp_host_ops {
	/* Monotonic seconds. Called on any thread. */
	double (*now)(void *host);
	/* Run fn(arg) soon on thread's loop (from any thread; never inline). */
	void (*post)(void *host, int thread, void (*fn)(void *arg), void *arg);
	/* Optional (NULL: not counted). */
	void (*count)(void *host, enum tp_event ev, double value);
	/* Optional (NULL: not logged). msg is one line, no newline. */
	void (*log)(void *host, enum tp_log_level level, const char *msg);
};

/* The protocol: what a kind of connection must provide. All run on the slot's thread.
 * Fill it with designated initializers: new optional ops are added at the end. */
struct tp_connector_ops {
	/* Start connecting slot to be. Later (or before returning) call tp_connect_done on the
	 * same thread. The connector keeps its state with tp_slot_set_conn. */
	void (*connect)(void *ctx, struct tp_slot *slot, const struct tp_backend_addr *be);
	/* Optional: is the idle connection still good? Call tp_check_done, as for connect. NULL:
	 * idle slots are never checked. */
	void (*check)(void *ctx, struct tp_slot *slot);
	/* Close and free the connection (also one whose connect is still in progress: it must
	 * then not call tp_connect_done). The slot is gone after this returns. */
	void (*close)(void *ctx, struct tp_slot *slot, enum tp_close_reason why);
	/* Optional: take the connection off this thread's loop / put it on the calling
	 * thread's loop (the hand-over of an idle slot between threads). */
	void (*detach)(void *ctx, struct tp_slot *slot);
	void (*attach)(void *ctx, struct tp_slot *slot, int thread);
	/* Optional: a released, connected or checked slot went onto its thread's idle list
	 * (e.g. watch the idle connection for a close). Not called for a slot that goes
	 * straight to a claim, so that a busy pool's hand-off costs nothing here. */
	void (*park)(void *ctx, struct tp_slot *slot);
};

struct tp_config {
	const char *name;        /* for logs and probes */
	int nthreads;            /* >= 1 */
	int max_slots;           /* hard maximum of slots (connecting, in use, idle, checking) */
	int max_per_backend;     /* hard maximum per backend; 0 = max_slots */
	double idle_timeout;     /* seconds; 0 = never */
	double lifetime;         /* seconds, -0..+10% jitter per slot; 0 = forever */
	double check_after;      /* an idle slot is health-checked after this long idle; 0 = never */
	double backoff_first;    /* seconds, the cap of the first retry's full jitter */
	double backoff_max;      /* seconds */
	int breaker_failures;    /* consecutive connect failures that make a backend DEAD */
	uint32_t seed;           /* jitter; 0 = from the clock */
	/* Optional policy (all zero: none of it). */
	int backoff_after;       /* consecutive connect failures tolerated before a backend backs off
				  * (one failure may be a restart that just finished); 0 = 1 */
	bool fail_fast;          /* a claim that would need a new connect fails at once (-EHOSTUNREACH)
				  * while every backend is backing off or dead, instead of waiting for
				  * the backoff to end (no idle slot, room under max_slots) */
	/* Bound connects: each connect is opened for one claim, which leaves the queue and gets
	 * that slot (and no other); the connector learns whose connect it is with tp_slot_claim
	 * (e.g. to log in with the claimer's own credentials), and a failed connect fails that
	 * claim with the connector's error (see tp_connect_done). false: a connect serves
	 * whichever claim heads the queue when it is done. */
	bool bind_connects;
	int min_slots;           /* slots kept open without claims, opened one per tick by home_thread;
				  * after a failure the next waits backoff_first doubling up to
				  * backoff_max, +-25% */
	int home_thread;         /* the thread whose tp_pool_tick opens min_slots connects */
	int dormant_after;       /* min_slots connects failing this many times in a row while nothing
				  * is claimed put the pool to sleep (tp_pool_sleep); 0 = never */
	double full_hold;        /* seconds a cap learned from a -EUSERS connect is kept; 0 = 60 */
	/* A slot released on a thread may go to a claim of the same thread ahead of the head of
	 * the queue (saving a hand-over), at most pass_over_max times per head claim and only
	 * to a claim made no more than pass_over_age seconds after the head's; only the first 16
	 * queued claims are looked at. 0: strict FIFO. */
	int pass_over_max;
	double pass_over_age;
	/* Reserve (PgBouncer's reserve_pool_size/_timeout): once the head of the queue has waited
	 * reserve_after seconds, up to reserve_slots slots above max_slots may connect for the
	 * queue (never above a -EUSERS cap); a slot above max_slots closes when released with no
	 * claim waiting. Looked at whenever the queue is worked, so at least every tp_pool_tick.
	 * 0 slots: no reserve. */
	int reserve_slots;
	double reserve_after;
};

/* Filled in by the pool; the program allocates it zeroed (embedded in whatever waits) and
 * must not touch it while it is claimed. */
struct tp_claim;
struct tp_connect_result;
/* slot != NULL: served (err 0). slot NULL: err is -ETIMEDOUT (the deadline passed),
 * -EHOSTUNREACH (every backend is dead: tp_pool_last_error says why), -ECANCELED (the
 * pool stopped). Runs on the claim's thread, with no lock held. */
typedef void (*tp_claim_fn)(struct tp_claim *c, struct tp_slot *slot, int err);
struct tp_claim {
	/* set by the program before tp_claim */
	tp_claim_fn done;
	void *arg;
	/* Preference among idle slots (0: none): a slot last claimed with the same key is taken
	 * before any other of the claimer's thread (e.g. the session it left there matches). Then
	 * the most recently released slot of the claimer's thread, then one of another thread. */
	uint64_t key;
	/* Set by the core for done: the connect report this answer comes from, when done runs
	 * inside tp_connect_report (or tp_connect_done) on the claim's thread: for the claim the
	 * connect was opened for, or another claim of that thread the report answers (the new
	 * slot handed to it). NULL when the answer comes any other way (a hand-over, a post, a
	 * timeout). Valid only during done: it and what it points to are the connector's. */
	const struct tp_connect_result *connect;
	/* private */
	struct tp_claim *next;
	struct tp_pool *pool;
	struct tp_slot *slot;
	double start, deadline;
	int thread;
	int err;
	int passed_over;
	bool queued;
};

/* A new pool. NULL on a bad config (errno EINVAL) or allocation failure. No backend
 * exists until tp_pool_set_backends. */
struct tp_pool *tp_pool_new(const struct tp_config *cfg, const struct tp_host_ops *host, void *host_ctx,
			    const struct tp_connector_ops *conn, void *conn_ctx);

/* The resolver's answer (any thread): backends in list and not in the pool are added;
 * backends of the pool missing from list are drained (their idle slots close, the rest
 * close when released; the backend is forgotten when it has none). n == 0 is ignored:
 * an empty answer never empties the pool (keep the last good set). 0 or -ENOMEM, -EINVAL. */
TP_MUST_CHECK int tp_pool_set_backends(struct tp_pool *p, const struct tp_backend_addr *list, int n);

/* Claim a slot on thread, before deadline (absolute, host clock). 0: served now, *out is
 * the slot. -EINPROGRESS: queued; c->done runs later on thread (exactly once). Other
 * negative: failed now (-EHOSTUNREACH, -ECANCELED, -EINVAL; -EBUSY: c is still queued). */
TP_MUST_CHECK int tp_claim(struct tp_pool *p, struct tp_claim *c, int thread, double deadline,
			   struct tp_slot **out);
/* tp_claim with the host clock's time now, read by the caller (which needed it anyway, to
 * make the deadline): the pool does not ask host->now again. */
TP_MUST_CHECK int tp_claim_at(struct tp_pool *p, struct tp_claim *c, int thread, double now, double deadline,
			      struct tp_slot **out);
/* The claimer gives up (on its thread). true: it was queued and is out, done will not
 * run. false: a slot is already on its way: done will run, take the slot and release it. */
bool tp_claim_cancel(struct tp_claim *c);

/* The claimer is done with slot (on the slot's thread). reusable: the connection is clean
 * and may serve another claim; false closes it (TP_CLOSE_BROKEN). */
void tp_release(struct tp_slot *slot, bool reusable);

/* Connector callbacks, on the slot's thread. err 0: connected. reason: why not (logs,
 * tp_pool_last_error). Two errors are not the backend's failure and never back off:
 *  -EUSERS: the backend is up but has no room for another connection: the pool is capped at
 *           the slots it has now (this one excluded) for full_hold seconds after the last such
 *           answer; claims wait for those slots (a bound claim goes back to the head of the
 *           queue). While capped with no slot at all and claims waiting, one connect a
 *           tp_pool_tick of home_thread tries whether room came back.
 *  -EPERM:  this login was refused (credentials, a database that does not exist).
 *  -ESTALE: the backend is not one this pool wants after all (e.g. its role changed under
 *           a primary-only pool), and the host takes it out of the set (tp_pool_set_backends).
 *           The backend gets no connect for backoff_first (no failure counted), and a bound
 *           claim goes back to the head of the queue to wait, within its deadline, for a
 *           backend of the new set (or for this one again), rather than failing fast. While
 *           such a hold lasts, claims do not fail fast (fail_fast) and a bound claim whose
 *           connect failed elsewhere waits too: the set is changing (a failover).
 * With bind_connects, any other error fails the bound claim with err once no other backend
 * may be connected to now or is held after -ESTALE. */
void tp_connect_done(struct tp_slot *slot, int err, const char *reason);
/* tp_connect_done with the connector's own detail of the outcome (e.g. the server's error
 * message), handed to the claims the report answers on this thread (tp_claim.connect).
 * The core neither reads nor keeps detail. */
struct tp_connect_result {
	int err;            /* as tp_connect_done's */
	const char *reason; /* as tp_connect_done's; NULL: none */
	const void *detail; /* the connector's, or NULL */
	size_t detail_len;
};
void tp_connect_report(struct tp_slot *slot, const struct tp_connect_result *r);
void tp_check_done(struct tp_slot *slot, bool ok);
/* The connector saw an idle slot's connection die (its peer closed or spoke while idle; on
 * the slot's thread): it is taken off the idle list and closed (TP_CLOSE_HEALTH): true.
 * false: the slot is not idle (it was handed to a claim meanwhile: its claimer finds out). */
bool tp_idle_broken(struct tp_slot *slot);

/* Housekeeping for thread, at least every few hundred milliseconds (on thread): expires
 * claims at their deadline, closes idle slots past idle_timeout or lifetime, starts health
 * checks, retries connects for waiting claims when a backoff ends. */
void tp_pool_tick(struct tp_pool *p, int thread);
/* Work the queue now, from any thread: a host that knows a held or backed-off backend may be
 * tried again (its own timer, a changed role) need not wait for the next tp_pool_tick. */
void tp_pool_kick(struct tp_pool *p);

/* Policy switches (any thread). */
/* Claims queue, nothing is handed out, released slots are parked, no connect starts for
 * claims (deadlines still run) until tp_pool_resume. */
void tp_pool_pause(struct tp_pool *p);
void tp_pool_resume(struct tp_pool *p);
/* Slots connected before this close when released, idle ones at once (on their threads). */
void tp_pool_reconnect(struct tp_pool *p);
/* The pool is on its way out: claims are still served, but released slots close unless a
 * claim waits, idle ones close, no min_slots connect. Not undone. */
void tp_pool_retire(struct tp_pool *p);
/* Nobody uses it: idle slots close and min_slots connects stop until the next tp_claim. */
void tp_pool_sleep(struct tp_pool *p);
/* New limits (a configuration reload): room above the old max serves waiters now; slots
 * above the new max close, idle ones first. -EINVAL if max_slots < 1 or min_slots < 0. */
TP_MUST_CHECK int tp_pool_resize(struct tp_pool *p, int max_slots, int min_slots);
/* At most active_max slots in use at once (in use, handed over or connecting for a claim;
 * 0: no bound but max_slots): claims beyond it queue even while slots are idle, and a
 * released slot goes to the queue only below it. Idle slots stay open. Lowering it takes
 * effect as slots are released; raising it serves waiters now (any thread). -EINVAL if < 0. */
TP_MUST_CHECK int tp_pool_set_active_max(struct tp_pool *p, int active_max);
/* The claimer of busy slot s says whether it rests: holds it while nothing runs on it (a
 * transaction left open, a pinned session between statements), or uses it again. A resting
 * slot stays its claimer's but does not count against active_max, so a bound cannot keep
 * waiters out while PostgreSQL idles; resting opens room for a waiter at once (any thread: the
 * claimer's). Released or closed, a slot rests no more. */
void tp_slot_rest(struct tp_slot *s, bool resting);
/* The most slots in use (as active_max counts them) at once since the last call, which starts
 * the next count from those in use now (any thread): whether a bound was reached. */
int tp_pool_take_active_peak(struct tp_pool *p);
/* New idle_timeout and lifetime (seconds, 0 = never; a reload): idle slots are judged by
 * them from the next tp_pool_tick, a slot's lifetime is drawn when it connects. */
void tp_pool_set_expiry(struct tp_pool *p, double idle_timeout, double lifetime);
/* New check_after (seconds, 0 = never; a reload): idle slots are judged by it from the next
 * tp_pool_tick. */
void tp_pool_set_check_after(struct tp_pool *p, double check_after);
/* New reserve_slots and reserve_after (a reload). */
void tp_pool_set_reserve(struct tp_pool *p, int reserve_slots, double reserve_after);

/* A limit several pools count their slots against (e.g. all pools of one database). A pool
 * whose claim is held back only by a group closes an idle slot of another pool of the group
 * to make room, and a slot released in a pool with no claim of its own closes instead of
 * parking while another pool of the group is held back. A pool joins at most TP_GROUPS_MAX
 * groups, before its first claim; the group must outlive its pools. */
#define TP_GROUPS_MAX 2
struct tp_group;
struct tp_group *tp_group_new(int limit); /* limit 0: unlimited; NULL on allocation failure */
void tp_group_set_limit(struct tp_group *g, int limit);
int tp_group_count(const struct tp_group *g);
void tp_group_free(struct tp_group *g);
TP_MUST_CHECK int tp_pool_join(struct tp_pool *p, struct tp_group *g);

/* Stop (any thread): every queued claim fails with -ECANCELED (on its thread, via post),
 * idle slots close (on their threads), released and connected slots close from now on.
 * tp_pool_destroy frees it once no slot is left (-EBUSY until then). */
void tp_pool_stop(struct tp_pool *p);
TP_MUST_CHECK int tp_pool_destroy(struct tp_pool *p);

/* The connection data of a slot (the connector's). */
void *tp_slot_conn(const struct tp_slot *slot);
void tp_slot_set_conn(struct tp_slot *slot, void *conn);
const struct tp_backend_addr *tp_slot_backend(const struct tp_slot *slot);
int tp_slot_thread(const struct tp_slot *slot);
/* The owner of a busy slot took its connection to thread's loop (the program moved the
 * client using it between threads, connection and all): from now on the slot is thread's,
 * and released there. Called on thread, before the slot is used there; the old thread no
 * longer touches it. */
void tp_slot_moved(struct tp_slot *slot, int thread);
/* The pool the slot belongs to (a program with several pools per connector context tells
 * them apart by it). */
struct tp_pool *tp_slot_pool(const struct tp_slot *slot);
/* bind_connects: the claim a connecting slot is for; NULL for a min_slots connect (and
 * once the slot is connected). */
struct tp_claim *tp_slot_claim(const struct tp_slot *slot);
/* A connected slot that its release will close rather than keep: its pool was reconnected
 * (tp_pool_reconnect) or retired, or its backend removed (any thread). */
bool tp_slot_must_close(const struct tp_slot *slot);

/* Gauges (any thread, under the pool's lock). */
struct tp_stats {
	int slots, idle, busy, connecting, checking, waiting;
	int resting; /* of busy, resting (tp_slot_rest) */
	int stale; /* of slots, connected before the last tp_pool_reconnect, not closed yet */
	int backends, backends_up;
	uint64_t claims, served, timeouts, connects, connect_failures, handovers;
	uint64_t reserve_connects; /* connects above max_slots started for the reserve */
	int max_slots, min_slots;
	int active_max; /* tp_pool_set_active_max; 0: none */
	int cap;       /* slots allowed by the backend after -EUSERS; -1: no cap */
	bool paused, retired, dormant;
	bool down;     /* no backend may be connected to now (all backing off or dead) */
};
void tp_pool_stats(struct tp_pool *p, struct tp_stats *out);
/* Backend i (0..backends-1) of the current set: its address and state. false past the end. */
bool tp_pool_backend(struct tp_pool *p, int i, struct tp_backend_addr *addr, enum tp_backend_state *state,
		     int *slots);
/* Backend i's last connect error ("" after a success). false past the end. */
bool tp_pool_backend_error(struct tp_pool *p, int i, char *out, size_t cap);
/* Why claims may fail: each backend that is backing off or dead, with its last connect error
 * ("a:5432 dead: connection refused; b:5432 backoff: ..."); else the last connect error of
 * the pool ("" if none). */
void tp_pool_last_error(struct tp_pool *p, char *out, size_t cap);

const char *tp_backend_state_name(enum tp_backend_state s);
const char *tp_close_reason_name(enum tp_close_reason r);

#ifdef __cplusplus
}
#endif
#endif
