/* The process-wide cache state (cache.h). */
#include "flight/cache.h"

#include <stdlib.h>

struct flight_cache *flight_cache_new(size_t memory)
{
	struct flight_cache *fc = calloc(1, sizeof(*fc));

	if (!fc)
		return NULL;
	fc->lru = flight_lru_new(memory);
	if (!fc->lru || flight_table_init(&fc->flights) < 0) {
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

const char *flight_bypass_state_name(enum flight_bypass_state s)
{
	return s == FLIGHT_BYPASS_PIPELINED ? "pipelined" : s == FLIGHT_BYPASS_SESSION ? "session_state" : "?";
}
