/* The SQL of the key-value store (src/kv/schema.c): roles, the shard hash, the catalog and the
 * shard schema with the API functions. Each script is idempotent; run it inside a transaction
 * (the scripts use SET LOCAL ROLE), in the database named in its comment. */
#ifndef TUSK_KV_SCHEMA_H
#define TUSK_KV_SCHEMA_H

extern const char kv_schema_roles_sql[];
extern const char kv_schema_hash_sql[];
extern const char kv_schema_catalog_sql[];
extern const char kv_schema_shard_sql[];

/* Databases: one catalog per instance, one per shard ("kv_shard_<n>"). */
#define KV_SHARD_DB_PREFIX "kv_shard_"

#endif
