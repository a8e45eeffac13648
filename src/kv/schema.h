/* The SQL of the key-value store (src/kv/schema.c): roles, the shard hash, the catalog and the
 * shard schema with the API functions. Each script is idempotent; run it inside a transaction
 * (the scripts use SET LOCAL ROLE), in the database named in its comment. */
#ifndef TUSK_KV_SCHEMA_H
#define TUSK_KV_SCHEMA_H

extern const char kv_schema_roles_sql[];
extern const char kv_schema_hash_sql[];
extern const char kv_schema_catalog_sql[];
extern const char kv_schema_shard_sql[];

/* A key's form, as every statement that takes keys checks it (the API's functions, the router's
 * fast statements): 1 to 1024 bytes, without the byte 0x1F (it separates a counter's per-zone
 * parts). KV_KEY_OK_SQL(k), of an SQL text expression, is true of a well-formed key and false of
 * NULL; KV_KEY_BAD_SQL(k) is its negation (true of NULL). kv._check raises the reasons. */
#define KV_KEY_OK_SQL(k) "(" k " IS NOT NULL AND octet_length(" k ") <= 1024 AND " k " <> '' AND strpos(" k ", chr(31)) = 0)"
#define KV_KEY_BAD_SQL(k) "(" k " IS NULL OR octet_length(" k ") > 1024 OR " k " = '' OR strpos(" k ", chr(31)) > 0)"

/* A live value: the kv.data row (columns prefixed a, "d." or "") holds a value that has not
 * expired. An SQL predicate; the view kv.live spells it with qualified operators. */
#define KV_LIVE_SQL(a) "(" a "value IS NOT NULL AND (" a "expires_at IS NULL OR " a "expires_at > now()))"

/* The advisory locks that order kv.incr against the writes that replace or remove a counter
 * (docs/kv.md, "Counters"): kv.incr holds its namespace's and its key's shared; kv.put,
 * kv.delete, kv.swap and kv.put_if_absent hold the key's exclusive, taken before any other
 * statement, and kv.put_many and kv.delete_many each key's (kv._lock_keys), or the namespace's
 * when a batch has more than 64 keys (the lock table is bounded). kv.expire holds the key's
 * exclusive from its test of the expiry to its write, and kv.touch and kv.persist take it before
 * they change a counter's. Transaction-scoped, of SQL text expressions. */
#define KV_LOCK_KEY_SQL(ns, k) "hashtext(" ns "), hashtext(" k ")"
#define KV_LOCK_NS_SQL(ns) "hashtext(" ns ")::bigint"

/* A counter's rows (its parts, their baselines, its expiry rows: keys of the form k 0x1F ...),
 * as SQL predicates on the kv.data row whose columns are prefixed a ("c." or ""), of namespace
 * ns and counter key k (SQL expressions): KV_COUNTER_ROWS_SQL by the primary key's range;
 * KV_COUNTER_BASE_SQL by the partial index data_counter_bases, on KV_COUNTER_BASE_EXPR (the key
 * before its first 0x1F), which the one-statement puts probe (the range cost them more). */
#define KV_COUNTER_ROWS_SQL(a, ns, k) "(" a "ns = " ns " AND " a "key > " k " || chr(31) AND " a "key < " k " || chr(32))"
#define KV_COUNTER_BASE_EXPR(a) "left(" a "key, strpos(" a "key, chr(31)) - 1)"
#define KV_COUNTER_BASE_SQL(a, ns, k) \
	"(" a "ns = " ns " AND strpos(" a "key, chr(31)) > 0 AND " KV_COUNTER_BASE_EXPR(a) " = " k ")"

/* Databases: one catalog per instance, one per shard ("kv_shard_<n>"). */
#define KV_SHARD_DB_PREFIX "kv_shard_"

#endif
