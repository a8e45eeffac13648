/* Worker threads: each runs one libev loop and owns every connection it serves. Other
 * threads talk to a worker only through its inbox (worker_post), which wakes the loop
 * with an ev_async; every message is a function and its argument. The worker names no
 * module: the tenants that keep connections on it (clients, servers, the cache's Redis
 * link, the console's kill count) register hooks and per-worker slots (worker_hooks). */
#ifndef TUSK_WORKER_WORKER_H
#define TUSK_WORKER_WORKER_H

#include <ev.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct net_addr;
struct runtime;
struct worker;
struct worker_msg;

/* What a message does: run on the worker's thread as fn(w, m), its argument in m->arg (and
 * more in the payload words, if the poster needs them); or, with fn NULL, call(arg) (the pool
 * core's posts, whose functions take their argument only: no hop through a wrapper). The
 * message is the function's until it returns, then recycled: keep nothing of it. A message
 * is dispatched in every case, also while the worker stops and in worker_free's last drain
 * (w->stopping tells). */
typedef void worker_fn(struct worker *w, struct worker_msg *m);

struct worker_msg {
	worker_fn *fn;
	void (*call)(void *arg); /* when fn is NULL */
	void *arg;
	/* More words for fn, named by whoever posts it (the worker reads none of them). */
	void *arg2;
	int num;
	uint32_t u32[3];
	struct worker_msg *next;
};

/* Tenants: a module that keeps connections or state on every worker registers its hooks
 * once, before the first worker is made (worker_register), and gets a slot: size bytes of
 * its own per worker, zeroed, at worker_slot(w, hooks->slot), an array index. Every hook may
 * be NULL. Hooks run on the worker's thread unless said otherwise; init and stop in the
 * order of registration, drain and tick too, free in the reverse order (a tenant registered
 * later, lower, lets go of what it holds before the ones above it are freed). The one place
 * that registers them all: daemon's start (runtime.c start(), "worker tenants"). */
struct worker_hooks {
	const char *name;
	size_t size;
	/* worker_new, on the creating thread, the loop made: 0 or a negative errno (then
	 * worker_new fails; the tenants inited before get their free). */
	int (*init)(struct worker *w);
	/* Housekeeping, every second: the number of blocks it gave back to the heap (the worker
	 * returns whole free pages to the system after a tick that freed some). */
	unsigned (*tick)(struct worker *w, double now);
	/* Draining (SIGTERM, online restart): at its start and every 50 ms after, close what is
	 * outside a transaction. */
	void (*drain)(struct worker *w, const char *reason);
	/* The worker stops (its loop ends after this): close every connection. */
	void (*stop)(struct worker *w, const char *reason);
	/* worker_free, after the last inbox drain, the loop still there (any thread, the
	 * worker's own no longer runs): close what is left and free the slot's contents. */
	void (*free)(struct worker *w);
	/* A connection accepted on a listener named listener ("host:port" as configured, or
	 * "unix:PATH") is the tenant's from now on; one tenant at most has it. */
	void (*accept)(struct worker *w, int fd, const struct net_addr *peer, const char *listener);
	int slot; /* set by worker_register */
};

#define WORKER_SLOTS 8

/* Before the first worker_new (main thread): register h (kept, not copied) and set
 * h->slot. Registering the same h again does nothing. Aborts past WORKER_SLOTS tenants,
 * or for a new tenant once workers exist: both are mistakes of the program. */
void worker_register(struct worker_hooks *h);

#define WORKER_LISTEN_KEY_MAX 300 /* "host:port" as configured, or "unix:PATH" */

struct worker {
	int index;            /* read-only */
	struct runtime *rt;   /* read-only */
	struct ev_loop *loop; /* read-only; used only on this worker's thread */
	void *slot[WORKER_SLOTS]; /* each tenant's own (worker_slot) */
	bool stopping;          /* read-only outside worker.c: no new work, close instead of pooling */
	bool draining;          /* read-only outside worker.c: listeners closed, clients leave at
				 * their next transaction boundary */
	/* Any thread: this worker's thread CPU over its last tick, in thousandths of a core;
	 * -1 while it takes no clients from other workers (draining, stopping). */
	_Atomic int load;
	/* The balance (worker_balance_target): the connections linked here that may move to
	 * another worker (kept by the tenant that moves them), and how many more may leave
	 * before the next tick. */
	unsigned nclients;
	unsigned moves_left;
	/* private */
	void *priv;
};

/* The tenant's slot on w (h->slot of its hooks). */
static inline void *worker_slot(const struct worker *w, int slot)
{
	return w->slot[slot];
}

/* Create worker index with its loop and start its thread. Listeners come as messages
 * (worker_post_listen), at start as at reload. */
__attribute__((warn_unused_result))
int worker_start(struct runtime *rt, int index, struct worker **out);
/* Test seam (unit tests, fuzzers): the same worker without its thread; the caller runs
 * w->loop (ev_run) on its own thread. worker_stop, worker_join and worker_free work on it. */
__attribute__((warn_unused_result))
int worker_new(struct runtime *rt, int index, struct worker **out);
/* Thread-safe: hand listening socket fd (named key) to w, or ask w to close the listener
 * named key (all: NULL), or to drain (SIGTERM / online restart: close every listener, then
 * the tenants' drain hooks close each client as soon as it is outside a transaction). 0 or
 * -ENOMEM (then fd is still the caller's). */
__attribute__((warn_unused_result))
int worker_post_listen(struct worker *w, int fd, const char *key);
__attribute__((warn_unused_result))
int worker_post_unlisten(struct worker *w, const char *key);
__attribute__((warn_unused_result))
int worker_post_drain(struct worker *w);
/* Any thread: a zeroed message, recycled from the ones this worker thread dispatched when it
 * can (no allocation on the hot path), else calloc'd; NULL when out of memory. Post it, or
 * free() it. */
struct worker_msg *worker_msg_new(void);

/* On w's thread: hand the TLS handshake of conn on fd (either side: a client's, or tusk's own
 * to a server) to the handshake threads (tls_handshake_threads, net/handshake.h), to finish by
 * deadline (ev_time's clock). When it is over, back(w, m) runs on w with m->arg = arg and
 * m->num the result (0 done, -ETIMEDOUT past the deadline, -ECANCELED at stop, another
 * negative errno: failed). Until then fd and conn are the threads': the caller stops its
 * watchers and must not close either. false: no handshake threads, or no memory; nothing was
 * handed over. */
struct tls_conn;
bool worker_tls_hand_over(struct worker *w, struct tls_conn *conn, int fd, double deadline,
			  void (*back)(struct worker *w, struct worker_msg *m), void *arg);
/* Before a client's server-side handshake starts on w: when there are handshake threads
 * (tls_handshake_threads > 0), let it stop before a full handshake signs (tls_conn_defer_full),
 * to be handed over (worker_tls_hand_over); a resumption finishes on w. */
void worker_tls_defer_full(struct worker *w, struct tls_conn *conn);
/* On w's thread: a client's TLS handshake finished on w; when there are handshake threads, it
 * is counted for tusk_tls_worker_handshakes_total, resumed or full (a hand-over that failed). */
void worker_tls_note_kept(struct worker *w, const struct tls_conn *conn);
/* Thread-safe: queue msg (owned by the worker from now on) and wake the loop. */
void worker_post(struct worker *w, struct worker_msg *msg);
/* Only on w's own thread: the same, for a message to itself (no lock, no system call). */
void worker_post_local(struct worker *w, struct worker_msg *msg);
/* On w's thread, for a client of w between transactions (nothing in flight; a session
 * client's server goes with it): the worker it should move to, or NULL to stay. The rule
 * (docs/ARCHITECTURE.md, "Workers"): while all workers together use less than half a core,
 * clients gather on worker 0, so one loop does the work of a light load (every extra loop
 * that wakes costs CPU); a worker using most of a core hands a share of its clients per tick
 * to one using less than half as much (at most moves_left a tick). Only asks: a client that
 * does move is counted by worker_balance_moved. */
struct worker *worker_balance_target(struct worker *w);
/* On w's thread: a client left w for the worker worker_balance_target named; one fewer may
 * leave before the next tick (gathering is not rationed: it asks no ration). */
void worker_balance_moved(struct worker *w);
/* Thread-safe: ask the worker to close its listeners and connections and end its loop. */
void worker_stop(struct worker *w);
/* Wait for the thread to end. */
void worker_join(struct worker *w);
/* After every worker is joined: settle messages still in the inbox (the pool core's run,
 * answers to clients' claims give their servers back) and free the worker. */
void worker_free(struct worker *w);
#endif
