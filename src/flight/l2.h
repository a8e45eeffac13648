/* The result cache's L2: Redis, shared by several tusk processes (docs/cache.md).
 *
 * Each worker has its own hiredis async connection on its own libev loop (made on first use,
 * on the worker's thread): a lookup's answer comes back on the thread of the client that
 * asked, so no cross-thread path is needed, and no worker ever blocks. Every command is
 * bounded by redis.timeout; a timeout drops the connection (its pending lookups end as
 * misses) and it is made again with backoff. An error of any kind is a miss, counted in
 * l2_errors and logged at most once every 10 s per worker; never an error to a client.
 *
 * Redis keys (prefix + ...): "e1:" + 128-bit hash of the whole key -> an entry, with a TTL;
 * "v:" + 64-bit hash of (database, table) (even) or of database (odd) -> version counters, bumped (INCR) by a write that commits through any tusk. An entry holds the whole
 * key (compared on read) and the versions its query saw before it was sent; it is served
 * only while they equal the counters read with it. */
#ifndef TUSK_FLIGHT_L2_H
#define TUSK_FLIGHT_L2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "flight/decide.h"

struct worker;
struct worker_hooks;
struct worker_msg;
struct flight_counters;

#define FLIGHT_L2_MAX_VERSIONS (FLIGHT_MAX_TABLES + 1) /* the tables', then the database's */

struct flight_l2_versions {
	int n;
	uint64_t id[FLIGHT_L2_MAX_VERSIONS];
	uint64_t v[FLIGHT_L2_MAX_VERSIONS];
};

/* What a lookup found. bytes (the result, not yet checked as messages) is valid only during
 * the callback; NULL: a miss (error counted already when error). */
struct flight_l2_answer {
	const uint8_t *bytes;
	size_t len;
	bool error;
	const struct flight_l2_versions *versions; /* as read now: what a fill stores */
};

typedef void flight_l2_done_fn(void *arg, const struct flight_l2_answer *a);

struct flight_l2_req;

bool flight_l2_configured(const struct tusk_config *cfg);

uint64_t flight_l2_table_id(const char *database, const char *table);
uint64_t flight_l2_db_id(const char *database);

/* On w's thread: look key up, with the version counters of d's tables in database. 0: done
 * will be called exactly once, later, on w's thread (unless cancelled), *out is the request;
 * -errno: not connected or no memory (counted as an l2 error; a miss, now). */
__attribute__((warn_unused_result))
int flight_l2_get(struct worker *w, struct flight_counters *k, const uint8_t *key, size_t klen,
		  const char *database, const struct flight_decision *d, flight_l2_done_fn *done, void *arg,
		  struct flight_l2_req **out);
/* The asker let go: done is never called. */
void flight_l2_cancel(struct flight_l2_req *r);
/* Keep a result with the versions a lookup read, for ttl_ms. Fire and forget. */
void flight_l2_put(struct worker *w, struct flight_counters *k, const uint8_t *key, size_t klen,
		   const struct flight_l2_versions *v, const uint8_t *bytes, size_t len, uint64_t ttl_ms);
/* A write is sent or committed: INCR these counters. Each pending[i] counts the INCR until
 * Redis answers it (or the connection ends). Lost while Redis is unreachable (logged and
 * counted; the TTL is the backstop, docs/cache.md). */
void flight_l2_bump(struct worker *w, struct flight_counters *k, const uint64_t *ids, _Atomic uint32_t *const *pending,
		    int n);
/* A client whose write committed waits here, its ReadyForQuery held, until Redis has
 * answered every INCR this worker sent so far: until then another tusk could still serve what
 * the write changed to whoever the client tells of the commit (docs/cache.md). */
struct flight_l2_waiter {
	struct flight_l2_waiter *next, *prev;
	struct flight_l2 *l2; /* NULL: not waiting */
	uint64_t ticket;      /* the INCRs sent when it began waiting */
	double since;
	void (*fn)(void *arg); /* called once, on the worker's thread, when answered or given up */
	void *arg;
};
/* true: wt waits (fn comes later); false: nothing of this worker's is unanswered. */
bool flight_l2_wait(struct worker *w, struct flight_l2_waiter *wt, void (*fn)(void *arg), void *arg);
/* Stop waiting (fn is not called); nothing when wt does not wait. */
void flight_l2_unwait(struct flight_l2_waiter *wt);
/* An entry's value: format, whole key, versions (id, value), reply bytes. Pure. encode:
 * length written or -E2BIG (more than cap). decode: true when the value is well formed, holds
 * exactly key and exactly the versions of now (ids and values, in order): *bytes (inside p)
 * and *blen are the reply, not yet checked as messages. */
__attribute__((warn_unused_result))
long flight_l2_encode(const uint8_t *key, size_t klen, const struct flight_l2_versions *v, const uint8_t *bytes,
		      size_t len, uint8_t *out, size_t cap);
__attribute__((warn_unused_result))
bool flight_l2_decode(const uint8_t *p, size_t len, const uint8_t *key, size_t klen,
		      const struct flight_l2_versions *now, const uint8_t **bytes, size_t *blen);
/* A worker message: connect now. */
void flight_l2_start(struct worker *w, struct worker_msg *m);
/* The cache's tenancy on every worker (worker.h): its Redis connection, made on first use
 * (or by flight_l2_start), dropped when the worker stops (pending lookups end as misses). */
extern struct worker_hooks flight_l2_worker_hooks;

#endif
