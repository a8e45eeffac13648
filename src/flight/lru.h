/* The L1 store: kept results by whole key, in LRU order within a byte bound (cache_memory,
 * process-wide), each with the table versions its query saw before it was sent and an
 * expiry (cache_ttl). A lookup serves an entry only while it has not expired and its versions
 * are current; otherwise the entry goes. One lock for all workers. */
#ifndef TUSK_FLIGHT_LRU_H
#define TUSK_FLIGHT_LRU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "flight/flight.h"
#include "flight/inval.h"

struct flight_lru;

/* What a lookup found (for the counters). */
enum flight_lru_outcome { FLIGHT_LRU_MISS, FLIGHT_LRU_HIT, FLIGHT_LRU_STALE, FLIGHT_LRU_EXPIRED };

struct flight_lru *flight_lru_new(size_t memory);
void flight_lru_free(struct flight_lru *l);

/* A referenced result (put it when done) or NULL. now: seconds on any monotonic clock. */
struct flight_result *flight_lru_get(struct flight_lru *l, struct flight_inval *iv, const uint8_t *key,
				     size_t key_len, uint64_t hash, double now, enum flight_lru_outcome *outcome);
/* Keep r (a reference is taken) under key until expires, unless it alone exceeds the bound.
 * Evicts from the cold end to make room; returns how many it evicted. */
int flight_lru_put(struct flight_lru *l, const uint8_t *key, size_t key_len, uint64_t hash,
		   const struct flight_versions *v, const char *database, struct flight_result *r, double expires);
/* Drop every entry of database (NULL: all). Returns how many went. */
int flight_lru_flush(struct flight_lru *l, const char *database);
void flight_lru_usage(struct flight_lru *l, size_t *entries, size_t *bytes);

#endif
