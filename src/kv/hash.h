/* The shard of a key: a stable hash of (namespace, key). It is PostgreSQL's built-in
 * hashtextextended(ns || ':' || key, 0), which every shard database evaluates at C speed to
 * refuse keys of other shards (kv.hash, kv.shard_of in src/kv/schema.c), reproduced here for
 * the router; the values are pinned by tests/unit/test_kv_hash.c and checked against the
 * server by tests/integration/test_kv_api.py (test_hash_of_tusk_equals_the_shard_databases,
 * test_a_key_lands_on_one_shard_whichever_path_wrote_it). They must never change once data
 * exists. */
#ifndef TUSK_KV_HASH_H
#define TUSK_KV_HASH_H

#include <stddef.h>
#include <stdint.h>

#define KV_MAX_SHARDS 4096

/* hashtextextended(ns || ':' || key, 0) as PostgreSQL computes it on a little-endian server.
 * A namespace cannot contain ':' (the catalog's check), so ("a", "b:c") and ("a:b", "c") cannot
 * both be valid: the separator keeps the split between namespace and key. */
int64_t kv_hash(const char *ns, size_t ns_len, const char *key, size_t key_len);

/* (kv_hash & INT64_MAX) mod nshards, or -EINVAL unless nshards is in 1..KV_MAX_SHARDS. */
int kv_shard_of(const char *ns, size_t ns_len, const char *key, size_t key_len, int nshards);

/* The shard of a hash kv_hash returned: kv_shard_of without hashing again. */
int kv_shard_of_hash(int64_t hash, int nshards);

/* kv_shard_of in SQL, of three SQL expressions (text, text, int): the one text of the shard's
 * formula that every statement checking a key's shard is written with (kv.shard_of and the
 * functions of src/kv/schema.c, the router's fast statements). */
#define KV_SHARD_SQL(ns, key, nshards)                                                             \
	"((pg_catalog.hashtextextended(" ns " || ':' || " key ", 0) & 9223372036854775807) % " nshards \
	")::int"

#endif
