/* The shard of a key: a stable hash of (namespace, key). The same function exists in SQL
 * (kv.hash, kv.shard_of in src/kv/schema.c) so operators can check where a key lives; the
 * values are pinned by tests/unit/test_kv_hash.c and must never change once data exists. */
#ifndef TUSK_KV_HASH_H
#define TUSK_KV_HASH_H

#include <stddef.h>
#include <stdint.h>

#define KV_MAX_SHARDS 4096

/* XXH32 (seed 0) of the bytes ns, one 0x00 byte, key. NUL cannot occur inside a PostgreSQL
 * text value, so the separator makes ("a", "bc") and ("ab", "c") different inputs. */
uint32_t kv_hash(const char *ns, size_t ns_len, const char *key, size_t key_len);

/* kv_hash mod nshards, or -EINVAL unless nshards is in 1..KV_MAX_SHARDS. */
int kv_shard_of(const char *ns, size_t ns_len, const char *key, size_t key_len, int nshards);

#endif
