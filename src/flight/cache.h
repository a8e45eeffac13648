/* The process-wide cache state (one per runtime): version counters, the SingleFlight table,
 * the L1 store and the counters SHOW CACHE and /metrics read. Every part has its own
 * synchronisation (inval.h: atomics; flight.h, lru.h: one mutex each; counters: relaxed
 * atomics that order nothing else). */
#ifndef TUSK_FLIGHT_CACHE_H
#define TUSK_FLIGHT_CACHE_H

#include <stdatomic.h>
#include <stdint.h>

#include "config/config.h"
#include "flight/decide.h"
#include "flight/flight.h"
#include "flight/inval.h"
#include "flight/lru.h"
#include "flight/volatility.h"

enum flight_bypass_state {
	FLIGHT_BYPASS_PIPELINED, /* more than one whole Query waiting, or not a Query */
	FLIGHT_BYPASS_SESSION,   /* pinned, inside a transaction, SETs pending, or SQL read differently */
	FLIGHT_BYPASS_STATE_COUNT
};

struct flight_counters {
	_Atomic uint64_t hits;             /* served from L1 */
	_Atomic uint64_t misses;           /* cacheable, led a query to a server */
	_Atomic uint64_t joins;            /* waited on another client's identical query */
	_Atomic uint64_t join_served;      /* ... and got its result */
	_Atomic uint64_t waiter_fallbacks; /* ... and ran its own (leader failed, deadline, no room) */
	_Atomic uint64_t waiter_cancels;   /* ... and was cancelled (57014) */
	_Atomic uint64_t leader_failures;  /* a led reply was not shareable (error, too big, left) */
	_Atomic uint64_t stores;           /* results kept in L1 */
	_Atomic uint64_t store_races;      /* not kept: a write committed while the query ran */
	_Atomic uint64_t invalidations;    /* entries found stale (their tables were written) */
	_Atomic uint64_t expirations;      /* entries found past cache_ttl */
	_Atomic uint64_t evictions;        /* entries pushed out by cache_memory */
	_Atomic uint64_t flushes;          /* entries dropped by CACHE FLUSH */
	_Atomic uint64_t table_bumps;      /* table versions bumped by writes through tusk */
	_Atomic uint64_t db_bumps;         /* database versions bumped (DDL, unknown writes) */
	_Atomic uint64_t l2_hits;          /* served from Redis */
	_Atomic uint64_t l2_misses;        /* looked up in Redis, not there or stale */
	_Atomic uint64_t l2_errors;        /* Redis down, slow, refusing or answering nonsense: a miss */
	_Atomic uint64_t l2_stores;        /* results sent to Redis */
	_Atomic uint64_t l2_commit_waits;  /* commits whose ReadyForQuery waited for Redis's INCRs */
	_Atomic uint64_t logical_changes;  /* table changes read by logical decoding (logical.h) */
	_Atomic uint64_t logical_errors;   /* a database could not be followed (connect, slot, read) */
	_Atomic uint64_t bypass[FLIGHT_VERDICT_COUNT];
	_Atomic uint64_t bypass_state[FLIGHT_BYPASS_STATE_COUNT];
};

struct flight_cache {
	struct flight_inval inval;
	struct flight_table flights;
	struct flight_lru *lru;
	struct flight_vol *vol; /* which functions are immutable, per database (its own lock and thread) */
	struct flight_logical *logical; /* cache_invalidation: logical; else NULL */
	struct flight_counters counters;
	/* L2 INCRs sent and not yet answered, per version slot (tables, then databases): a
	 * lookup for slots with one pending does not use Redis (it might not have counted the
	 * write yet). */
	_Atomic uint32_t l2_pending[FLIGHT_INVAL_SLOTS + FLIGHT_INVAL_DB_SLOTS];
};

/* memory: cache_memory, logical_poll: seconds between polls of logical decoding, 0 = not
 * used (both read at start). NULL when out of memory. */
struct flight_cache *flight_cache_new(size_t memory, double logical_poll);
void flight_cache_free(struct flight_cache *fc);

/* Whether any rule of cfg (or its default) caches: then every write through tusk is tracked. */
bool flight_cache_tracking(const struct tusk_config *cfg);

const char *flight_bypass_state_name(enum flight_bypass_state s);

/* Every counter and gauge, for SHOW CACHE and /metrics: name (hits, misses, ..., entries,
 * bytes, bypasses), reason (for bypasses, else NULL), value, and whether it is a gauge. */
typedef void flight_report_fn(void *arg, const char *name, const char *reason, uint64_t value, bool gauge);
void flight_cache_report(struct flight_cache *fc, flight_report_fn *fn, void *arg);

/* CACHE FLUSH: drop the kept results of database (NULL: all) and make flights in progress
 * not keep theirs. Returns how many entries went. */
int flight_cache_flush(struct flight_cache *fc, const char *database);

#endif
