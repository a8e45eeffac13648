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

/* The protocol: what a kind of connection must provide. All run on the slot's thread. */
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
};

/* Filled in by the pool; the program allocates it zeroed (embedded in whatever waits) and
 * must not touch it while it is claimed. */
struct tp_claim;
/* slot != NULL: served (err 0). slot NULL: err is -ETIMEDOUT (the deadline passed),
 * -EHOSTUNREACH (every backend is dead: tp_pool_last_error says why), -ECANCELED (the
 * pool stopped). Runs on the claim's thread, with no lock held. */
typedef void (*tp_claim_fn)(struct tp_claim *c, struct tp_slot *slot, int err);
struct tp_claim {
	/* set by the program before tp_claim */
	tp_claim_fn done;
	void *arg;
	/* private */
	struct tp_claim *next;
	struct tp_pool *pool;
	struct tp_slot *slot;
	double start, deadline;
	int thread;
	int err;
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
/* The claimer gives up (on its thread). true: it was queued and is out, done will not
 * run. false: a slot is already on its way: done will run, take the slot and release it. */
bool tp_claim_cancel(struct tp_claim *c);

/* The claimer is done with slot (on the slot's thread). reusable: the connection is clean
 * and may serve another claim; false closes it (TP_CLOSE_BROKEN). */
void tp_release(struct tp_slot *slot, bool reusable);

/* Connector callbacks, on the slot's thread. err 0: connected. reason: why not (logs,
 * tp_pool_last_error). */
void tp_connect_done(struct tp_slot *slot, int err, const char *reason);
void tp_check_done(struct tp_slot *slot, bool ok);

/* Housekeeping for thread, at least every few hundred milliseconds (on thread): expires
 * claims at their deadline, closes idle slots past idle_timeout or lifetime, starts health
 * checks, retries connects for waiting claims when a backoff ends. */
void tp_pool_tick(struct tp_pool *p, int thread);

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

/* Gauges (any thread, under the pool's lock). */
struct tp_stats {
	int slots, idle, busy, connecting, checking, waiting;
	int backends, backends_up;
	uint64_t claims, served, timeouts, connects, connect_failures, handovers;
};
void tp_pool_stats(struct tp_pool *p, struct tp_stats *out);
/* Backend i (0..backends-1) of the current set: its address and state. false past the end. */
bool tp_pool_backend(struct tp_pool *p, int i, struct tp_backend_addr *addr, enum tp_backend_state *state,
		     int *slots);
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
