/* SingleFlight: identical cacheable reads in flight at once run once. The first request with a
 * key leads (its query goes to a server as usual, and the relay feeds its reply here); the
 * others wait for the leader's bytes. A flight is shared by every worker (one table under one
 * lock); waiters are answered on their own worker (the caller posts them), never through
 * another worker's socket. Errors are never shared: a leader that fails, leaves, is cancelled
 * or overflows max_result releases its waiters to run their own query. */
#ifndef TUSK_FLIGHT_FLIGHT_H
#define TUSK_FLIGHT_FLIGHT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "flight/inval.h"

struct worker;

/* One reply, immutable once published: RowDescription, DataRow and CommandComplete messages,
 * exactly as the server sent them (no ReadyForQuery: each client gets its own). */
struct flight_result {
	atomic_int refs;
	/* With L2: a digest of the Redis versions its leader read before its query was sent
	 * (serve.c); a waiter is served only when the versions it read itself are the same. */
	bool l2set;
	uint64_t l2sig[2];
	size_t len, cap;
	uint8_t bytes[];
};

void flight_result_get(struct flight_result *r);
void flight_result_put(struct flight_result *r);

/* A waiting request. Reference-counted: the flight's list, the client, and a delivery message
 * each hold one. */
struct flight_waiter {
	atomic_int refs;
	struct worker *worker;        /* read-only: the waiting client's */
	void *client;                 /* touched only on worker's thread; NULL once the client let go */
	struct flight_result *result; /* set under the table lock at the end; NULL: run your own */
	struct flight_waiter *next;   /* private, under the table lock */
	struct flight *flight;        /* private, under the table lock: valid while listed */
	bool listed;                  /* private, under the table lock */
};

void flight_waiter_put(struct flight_waiter *w);

struct flight; /* opaque: a query in flight */

#define FLIGHT_BUCKETS 1024

struct flight_table {
	pthread_mutex_t lock; /* guards buckets, every flight's waiter list and the waiters' result */
	struct flight *buckets[FLIGHT_BUCKETS];
};

__attribute__((warn_unused_result))
int flight_table_init(struct flight_table *t);
void flight_table_destroy(struct flight_table *t);

enum flight_role { FLIGHT_ROLE_LEAD, FLIGHT_ROLE_WAIT, FLIGHT_ROLE_ALONE };

/* A request with this key. No flight: one is created and the caller leads (*lead). A flight
 * started with the same versions: the caller waits (*wait, the caller's reference). A flight
 * started before a write to these tables committed, or no memory: ALONE (run it yourself). */
enum flight_role flight_join(struct flight_table *t, const uint8_t *key, size_t key_len, uint64_t hash,
			     const struct flight_versions *v, size_t max_result, struct worker *worker, void *client,
			     struct flight **lead, struct flight_waiter **wait);

/* Leader: reply bytes as the relay passes them on, in order. Returns 0 (more to come), 1 (the
 * reply ended with ReadyForQuery 'I' and holds only shareable messages: call flight_end(ok)),
 * or -1 (not shareable: an error, a notice, too big ...: call flight_end(failed)). */
int flight_feed(struct flight *f, const uint8_t *p, size_t n);
/* Leader, before the first flight_feed: the request is an extended-protocol one (ext.h). Its
 * reply's ParseComplete and BindComplete are dropped (each client gets its own framing) and a
 * ParameterDescription (Describe 'S') is kept with the rows. */
void flight_set_extended(struct flight *f);
const struct flight_versions *flight_versions_of(const struct flight *f);
/* Leader: the digest of the Redis versions its lookup read (flight_result.l2sig). */
void flight_set_l2sig(struct flight *f, const uint64_t sig[2]);
const uint8_t *flight_key_of(const struct flight *f, size_t *len, uint64_t *hash);
/* After flight_feed returned 1: the complete result (the flight's reference). */
struct flight_result *flight_result_of(const struct flight *f);

/* Leader: the flight is over. It leaves the table (if the table still points at it), each
 * waiter gets the result (ok) or none, and post(waiter, arg) is called for each with the
 * lock released; post takes over the list's reference. Returns the result with a reference
 * for the caller when ok (to keep in L1), else NULL. f is freed. */
struct flight_result *flight_end(struct flight_table *t, struct flight *f, bool ok,
				 void (*post)(struct flight_waiter *w, void *arg), void *arg);

/* Waiter, on its worker: stop waiting. True when it was still listed (no result will be
 * posted); false when the flight already ended (a delivery is on its way: it finds
 * w->client NULL and drops it). The caller still holds, and must put, its own reference. */
bool flight_leave(struct flight_table *t, struct flight_waiter *w);

#endif
