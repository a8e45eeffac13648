/* Shard placement: XXH32 of (ns, 0x00, key), streamed so no buffer is needed for long keys. */
#include "kv/hash.h"

#include <errno.h>
#define XXH_STATIC_LINKING_ONLY /* XXH32_state_t on the stack */
#include <xxhash.h>

uint32_t kv_hash(const char *ns, size_t ns_len, const char *key, size_t key_len)
{
	XXH32_state_t st;
	static const char sep = '\0';

	/* XXH32_reset/update cannot fail on a valid state. */
	(void)XXH32_reset(&st, 0);
	(void)XXH32_update(&st, ns, ns_len);
	(void)XXH32_update(&st, &sep, 1);
	(void)XXH32_update(&st, key, key_len);
	return XXH32_digest(&st);
}

int kv_shard_of(const char *ns, size_t ns_len, const char *key, size_t key_len, int nshards)
{
	if (nshards < 1 || nshards > KV_MAX_SHARDS)
		return -EINVAL;
	return (int)(kv_hash(ns, ns_len, key, key_len) % (uint32_t)nshards);
}
