/* Resolution of the cache keys of a pool rule against the top-level defaults (policy.h). */
#include "flight/policy.h"

#include <string.h>

void flight_policy_resolve(const struct tusk_config *cfg, const struct config_pool_rule *rule,
			   struct flight_policy *out)
{
	memset(out, 0, sizeof(*out));
	out->mode = rule && rule->cache != CONFIG_CACHE_INHERIT ? (enum config_cache)rule->cache
								: (enum config_cache)cfg->cache;
	if (out->mode == CONFIG_CACHE_INHERIT || (rule && rule->mode == POOL_MODE_STATEMENT))
		out->mode = CONFIG_CACHE_OFF;
	out->ttl_ms = rule && rule->cache_ttl_ms ? rule->cache_ttl_ms : cfg->cache_ttl_ms;
	out->max_result = rule && rule->cache_max_result ? rule->cache_max_result : cfg->cache_max_result;
	out->coalesce_wait_ms = rule && rule->cache_coalesce_wait_ms ? rule->cache_coalesce_wait_ms
								     : cfg->cache_coalesce_wait_ms;
	if (rule && rule->ncache_tables) {
		out->tables.allow = rule->cache_tables;
		out->tables.nallow = rule->ncache_tables;
	} else {
		out->tables.allow = cfg->cache_tables;
		out->tables.nallow = cfg->ncache_tables;
	}
	if (rule && rule->ncache_exclude_tables) {
		out->tables.exclude = rule->cache_exclude_tables;
		out->tables.nexclude = rule->ncache_exclude_tables;
	} else {
		out->tables.exclude = cfg->cache_exclude_tables;
		out->tables.nexclude = cfg->ncache_exclude_tables;
	}
}
