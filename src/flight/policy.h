/* What the cache does for one pool rule: the rule's cache keys, each falling back to the
 * top-level value when the rule leaves it out. Pure; reads only the configuration. */
#ifndef TUSK_FLIGHT_POLICY_H
#define TUSK_FLIGHT_POLICY_H

#include <stdint.h>

#include "config/config.h"
#include "flight/decide.h"

struct flight_policy {
	enum config_cache mode;  /* OFF, COALESCE or ON (never INHERIT) */
	uint64_t ttl_ms;
	uint32_t max_result;
	uint64_t coalesce_wait_ms;
	struct flight_table_policy tables;
};

/* rule may be NULL (the top-level values). Session and statement pooling resolve to OFF. */
void flight_policy_resolve(const struct tusk_config *cfg, const struct config_pool_rule *rule,
			   struct flight_policy *out);

#endif
