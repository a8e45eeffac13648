/* Worker threads: each runs one libev loop and owns every connection it serves. Other
 * threads talk to a worker only through its inbox (worker_post), which wakes the loop
 * with an ev_async. */
#ifndef TUSK_WORKER_WORKER_H
#define TUSK_WORKER_WORKER_H

#include <ev.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "frontend/session.h"
#include "util/buf.h"

struct runtime;
struct worker;
struct server;
struct cancel_conn;
struct authq_conn;
struct pool_waiter;
struct pool;
struct client;
struct server;

enum worker_msg_kind {
	WORKER_MSG_SERVER, /* the pool's answer to a waiting client's claim (pool_on_message) */
	WORKER_MSG_POOL,   /* the pool core runs fn(arg) on this worker (its host post) */
	WORKER_MSG_CANCEL, /* a CancelRequest for a client of this worker */
	WORKER_MSG_LISTEN,   /* start accepting on fd, a listening socket now owned by the worker */
	WORKER_MSG_UNLISTEN, /* stop accepting on the listener named key (all: key "") and close it */
	WORKER_MSG_DRAIN,    /* SIGTERM / online restart: close every listener, then each client
			      * as soon as it is outside a transaction */
	WORKER_MSG_CALL,   /* run call(w, arg) on this worker (the admin console's broadcasts) */
	WORKER_MSG_CLIENT, /* arg: an idle client moving to this worker (frontend/client.c) */
};

#define WORKER_LISTEN_KEY_MAX 300 /* "host:port" as configured, or "unix:PATH" */

struct worker_msg {
	enum worker_msg_kind kind;
	struct pool_waiter *waiter;
	struct server *server; /* WORKER_MSG_SERVER: attached to this worker, or NULL (err) */
	int err;               /* WORKER_MSG_SERVER: 0, or why the claim failed */
	void (*fn)(void *arg); /* WORKER_MSG_POOL */
	uint32_t cancel_pid, cancel_key; /* WORKER_MSG_CANCEL: the key the client sent */
	int fd;                          /* WORKER_MSG_LISTEN */
	char key[WORKER_LISTEN_KEY_MAX]; /* WORKER_MSG_LISTEN, _UNLISTEN */
	void (*call)(struct worker *w, void *arg); /* WORKER_MSG_CALL; also runs while stopping */
	uint32_t kills_seen; /* WORKER_MSG_CLIENT: console_kills_seen of the worker it left */
	void *arg;
	struct worker_msg *next;
};

struct worker {
	int index;            /* read-only */
	struct runtime *rt;   /* read-only */
	struct ev_loop *loop; /* read-only; used only on this worker's thread */
	struct client *clients; /* private to frontend/: clients served here */
	struct server *servers; /* private to pool/server.c: servers attached to this loop */
	struct cancel_conn *cancel_conns; /* private to frontend/cancel.c: cancels being sent */
	struct authq_conn *authq; /* private to frontend/authquery.c: auth_query connections */
	/* private to frontend/client.c: client read/write buffer blocks, taken while bytes are
	 * in flight and given back when the client goes idle with both drained */
	struct buf_pool client_rbufs, client_wbufs;
	/* private to frontend/client.c: places in a pool queue (struct client_wait) no client
	 * holds, kept for the next claim (at most CLIENT_FREE_WAITS) */
	struct client_wait *client_waits;
	unsigned client_nwaits;
	/* private to frontend/: the reported-parameter sets its clients share (session.h) */
	struct session_share client_params;
	struct flight_l2 *l2;     /* private to flight/l2.c: this worker's Redis connection */
	bool stopping;          /* read-only outside worker.c: no new work, close instead of pooling */
	bool draining;          /* read-only outside worker.c: listeners closed, clients leave at
				 * their next transaction boundary */
	/* Any thread: this worker's thread CPU over its last tick, in thousandths of a core;
	 * -1 while it takes no clients from other workers (draining, stopping). */
	_Atomic int load;
	/* private to frontend/client.c: clients linked here, and how many more may leave for
	 * another worker before the next tick (worker_balance_target) */
	unsigned nclients;
	unsigned moves_left;
	uint32_t kills_seen; /* private to console/: the last KILL / KILL_CLIENT run here (console.h) */
	/* private */
	void *priv;
};

/* Create worker index with its loop and start its thread. Listeners come as messages
 * (worker_post_listen), at start as at reload. */
__attribute__((warn_unused_result))
int worker_start(struct runtime *rt, int index, struct worker **out);
/* Test seam (unit tests, fuzzers): the same worker without its thread; the caller runs
 * w->loop (ev_run) on its own thread. worker_stop, worker_join and worker_free work on it. */
__attribute__((warn_unused_result))
int worker_new(struct runtime *rt, int index, struct worker **out);
/* Thread-safe: hand listening socket fd (named key) to w, or ask w to close the listener
 * named key, or to drain (see WORKER_MSG_DRAIN). 0 or -ENOMEM (then fd is still the
 * caller's). */
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
/* Thread-safe: queue msg (owned by the worker from now on) and wake the loop. */
void worker_post(struct worker *w, struct worker_msg *msg);
/* Only on w's own thread: the same, for a message to itself (no lock, no system call). */
void worker_post_local(struct worker *w, struct worker_msg *msg);
/* On w's thread, for an idle client of w between transactions (no server, nothing in
 * flight): the worker it should move to, or NULL to stay. The rule (docs/ARCHITECTURE.md,
 * "Workers"): while all workers together use less than half a core, clients gather on worker
 * 0, so one loop does the work of a light load (every extra loop that wakes costs CPU); a
 * worker using most of a core hands a share of its clients per tick to one using less than
 * half as much. Counts a move against moves_left. */
struct worker *worker_balance_target(struct worker *w);
/* Thread-safe: ask the worker to close its listeners and connections and end its loop. */
void worker_stop(struct worker *w);
/* Wait for the thread to end. */
void worker_join(struct worker *w);
/* After every worker is joined: settle messages still in the inbox (the pool core's run,
 * answers to clients' claims give their servers back) and free the worker. */
void worker_free(struct worker *w);
/* Abandon cancel requests still being sent (shutdown), and forget the ones for a server
 * being freed (defined in frontend/cancel.c). */
void cancel_close_all(struct worker *w);
void cancel_detach_server(struct server *s);
/* Close the servers still attached to w's loop (shutdown; defined in pool/server.c). */
void server_close_all(struct worker *w, const char *reason);

#endif
