/* The kv catalog as tusk reads it from a catalog database (schema kv_catalog, src/kv/schema.c):
 * its version, the shard count and the instances with their zones. */
#ifndef TUSK_KV_CATALOG_H
#define TUSK_KV_CATALOG_H

#include "pq/pq.h"
#include <stdint.h>

#include "kv/conn.h"

struct kv_instance {
	int id; /* the origin of writes made on this instance */
	char zone[64];
	char host[256];
	int port;
};

/* A namespace and its expiry policy's bounds as the catalog document (doc) gives them: the texts
 * a shard's kv.import_catalog casts to interval (NULL: none). */
struct kv_ns_policy {
	char *ns;
	char *default_ttl;
	char *max_ttl;
};

struct kv_catalog {
	int64_t version; /* 0: never filled */
	int nshards;
	int ninstances;
	struct kv_instance *instances;
	int nns;
	struct kv_ns_policy *ns; /* doc's namespaces, by name (bytewise) */
	char *doc; /* kv_catalog.export(), what tusk kv push sends */
};

/* Read the catalog through conn (a catalog database). 0, or -EIO / -EPROTO / -ENOMEM with err. */
__attribute__((warn_unused_result))
int kv_catalog_read(PGconn *conn, struct kv_catalog *out, char err[KV_ERR_MAX]);
void kv_catalog_free(struct kv_catalog *cat);
/* to: from's version and a copy of its namespaces, nothing else. 0, or -ENOMEM with to empty. */
__attribute__((warn_unused_result))
int kv_catalog_copy_ns(const struct kv_catalog *from, struct kv_catalog *to);

/* The catalog endpoint of cfg's kv section (its service's first host), user/password given. */
struct tusk_config;
__attribute__((warn_unused_result))
int kv_catalog_endpoint(const struct tusk_config *cfg, const char *user, const char *password,
			struct kv_endpoint *out, char err[KV_ERR_MAX]);

#endif
