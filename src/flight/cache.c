/* The process-wide cache state (cache.h). */
#include "flight/cache.h"

#include "flight/logical.h"

#include <stddef.h>
#include <stdlib.h>

struct flight_cache *flight_cache_new(size_t memory, double logical_poll)
{
	struct flight_cache *fc = calloc(1, sizeof(*fc));

	if (!fc)
		return NULL;
	fc->lru = flight_lru_new(memory);
	fc->vol = flight_vol_new();
	if (logical_poll > 0)
		fc->logical = flight_logical_new(&fc->inval, &fc->counters, logical_poll);
	if (!fc->lru || !fc->vol || (logical_poll > 0 && !fc->logical) || flight_table_init(&fc->flights) < 0) {
		flight_logical_free(fc->logical);
		flight_vol_free(fc->vol);
		flight_lru_free(fc->lru);
		free(fc);
		return NULL;
	}
	return fc;
}

void flight_cache_free(struct flight_cache *fc)
{
	if (!fc)
		return;
	flight_logical_free(fc->logical);
	flight_vol_free(fc->vol);
	flight_table_destroy(&fc->flights);
	flight_lru_free(fc->lru);
	free(fc);
}

bool flight_cache_tracking(const struct tusk_config *cfg)
{
	if (cfg->cache > CONFIG_CACHE_OFF)
		return true;
	for (int i = 0; i < cfg->npools; i++)
		if (cfg->pools[i].cache > CONFIG_CACHE_OFF)
			return true;
	return false;
}

void flight_cache_report(struct flight_cache *fc, flight_report_fn *fn, void *arg)
{
	struct flight_counters *k = &fc->counters;
	size_t entries, bytes;
	static const struct {
		const char *name;
		size_t off;
	} counters[] = {
#define C(f) { #f, offsetof(struct flight_counters, f) }
		C(hits), C(misses), C(joins), C(join_served), C(waiter_fallbacks), C(waiter_cancels),
		C(leader_failures), C(stores), C(store_races), C(invalidations), C(expirations), C(evictions),
		C(flushes), C(table_bumps), C(db_bumps), C(l2_hits), C(l2_misses), C(l2_errors), C(l2_stores),
		C(l2_commit_waits), C(logical_changes), C(logical_errors),
#undef C
	};

	flight_lru_usage(fc->lru, &entries, &bytes);
	fn(arg, "entries", NULL, entries, true);
	fn(arg, "bytes", NULL, bytes, true);
	for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++)
		fn(arg, counters[i].name, NULL,
		   atomic_load_explicit((_Atomic uint64_t *)((char *)k + counters[i].off), memory_order_relaxed), false);
	for (int v = 1; v < FLIGHT_VERDICT_COUNT; v++)
		fn(arg, "bypasses", flight_verdict_name((enum flight_verdict)v),
		   atomic_load_explicit(&k->bypass[v], memory_order_relaxed), false);
	for (int s = 0; s < FLIGHT_BYPASS_STATE_COUNT; s++)
		fn(arg, "bypasses", flight_bypass_state_name((enum flight_bypass_state)s),
		   atomic_load_explicit(&k->bypass_state[s], memory_order_relaxed), false);
}

int flight_cache_flush(struct flight_cache *fc, const char *database)
{
	/* The volatility answers go too (a way to make tusk read them again at once). */
	if (database) {
		flight_inval_bump_db(&fc->inval, flight_inval_db_slot(database));
		flight_inval_bump_ddl(&fc->inval, flight_inval_db_slot(database));
	} else {
		for (uint16_t i = 0; i < FLIGHT_INVAL_DB_SLOTS; i++) {
			flight_inval_bump_db(&fc->inval, i);
			flight_inval_bump_ddl(&fc->inval, i);
		}
	}
	int n = flight_lru_flush(fc->lru, database);
	atomic_fetch_add_explicit(&fc->counters.flushes, (uint64_t)n, memory_order_relaxed);
	return n;
}

const char *flight_bypass_state_name(enum flight_bypass_state s)
{
	return s == FLIGHT_BYPASS_PIPELINED ? "pipelined" : s == FLIGHT_BYPASS_SESSION ? "session_state" : "?";
}
