/* Reading the kv catalog: what the init and push commands and the replication threads act on. */
#include "kv/catalog.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "kv/hash.h"

/* A bounded decimal from a result cell. */
static int cell_int(PGresult *res, int row, int col, int64_t lo, int64_t hi, int64_t *out)
{
	const char *s = PQgetvalue(res, row, col);
	char *end;

	if (PQgetisnull(res, row, col) || !*s)
		return -EPROTO;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || *end || v < lo || v > hi)
		return -EPROTO;
	*out = v;
	return 0;
}

int kv_catalog_read(PGconn *conn, struct kv_catalog *out, char err[KV_ERR_MAX])
{
	PGresult *res;
	int64_t v;

	memset(out, 0, sizeof *out);
	res = kv_conn_exec(conn, "SELECT version, nshards, kv_catalog.export()::text FROM kv_catalog.meta", 0, NULL, err);
	if (!res)
		return -EIO;
	if (PQntuples(res) != 1 || cell_int(res, 0, 0, 0, INT64_MAX, &out->version) < 0 ||
	    cell_int(res, 0, 1, 1, KV_MAX_SHARDS, &v) < 0) {
		snprintf(err, KV_ERR_MAX, "kv_catalog.meta: expected one row with version and nshards");
		PQclear(res);
		return -EPROTO;
	}
	out->nshards = (int)v;
	out->doc = strdup(PQgetvalue(res, 0, 2));
	PQclear(res);
	if (!out->doc)
		goto err_nomem;

	res = kv_conn_exec(conn, "SELECT id, zone, host, port FROM kv_catalog.instances ORDER BY id", 0, NULL, err);
	if (!res)
		goto err_free;
	int n = PQntuples(res);
	if (n > 0) {
		out->instances = calloc((size_t)n, sizeof *out->instances);
		if (!out->instances) {
			PQclear(res);
			goto err_nomem;
		}
	}
	for (int i = 0; i < n; i++) {
		struct kv_instance *in = &out->instances[i];
		int64_t id, port;
		if (cell_int(res, i, 0, 1, 1000000, &id) < 0 || cell_int(res, i, 3, 1, 65535, &port) < 0 ||
		    strlen(PQgetvalue(res, i, 1)) >= sizeof in->zone || strlen(PQgetvalue(res, i, 2)) >= sizeof in->host) {
			snprintf(err, KV_ERR_MAX, "kv_catalog.instances: row %d is out of bounds", i + 1);
			PQclear(res);
			kv_catalog_free(out);
			return -EPROTO;
		}
		in->id = (int)id;
		in->port = (int)port;
		snprintf(in->zone, sizeof in->zone, "%s", PQgetvalue(res, i, 1));
		snprintf(in->host, sizeof in->host, "%s", PQgetvalue(res, i, 2));
		out->ninstances++;
	}
	PQclear(res);

	/* The namespaces and their policies from the document itself, parsed by the server as a
	 * shard's kv.import_catalog parses it: what every shard at this version holds. */
	const char *params[] = { out->doc };
	res = kv_conn_exec(conn,
			   "SELECT n ->> 'ns', p ->> 'default_ttl', p ->> 'max_ttl' "
			   "FROM jsonb_array_elements(coalesce($1::jsonb -> 'namespaces', '[]')) n "
			   "LEFT JOIN jsonb_array_elements(coalesce($1::jsonb -> 'expiry_policies', '[]')) p "
			   "ON p ->> 'name' = n ->> 'policy' ORDER BY n ->> 'ns' COLLATE \"C\"",
			   1, params, err);
	if (!res)
		goto err_free;
	n = PQntuples(res);
	if (n > 0 && !(out->ns = calloc((size_t)n, sizeof *out->ns))) {
		PQclear(res);
		goto err_nomem;
	}
	for (int i = 0; i < n; i++) {
		if (PQgetisnull(res, i, 0))
			continue; /* the catalog's primary key: never */
		struct kv_ns_policy *p = &out->ns[out->nns++];
		if (!(p->ns = strdup(PQgetvalue(res, i, 0))) ||
		    (!PQgetisnull(res, i, 1) && !(p->default_ttl = strdup(PQgetvalue(res, i, 1)))) ||
		    (!PQgetisnull(res, i, 2) && !(p->max_ttl = strdup(PQgetvalue(res, i, 2))))) {
			PQclear(res);
			goto err_nomem;
		}
	}
	PQclear(res);
	return 0;

err_nomem:
	snprintf(err, KV_ERR_MAX, "out of memory");
	kv_catalog_free(out);
	return -ENOMEM;
err_free:
	kv_catalog_free(out);
	return -EIO;
}

void kv_catalog_free(struct kv_catalog *cat)
{
	for (int i = 0; i < cat->nns; i++) {
		free(cat->ns[i].ns);
		free(cat->ns[i].default_ttl);
		free(cat->ns[i].max_ttl);
	}
	free(cat->ns);
	free(cat->instances);
	free(cat->doc);
	memset(cat, 0, sizeof *cat);
}

int kv_catalog_copy_ns(const struct kv_catalog *from, struct kv_catalog *to)
{
	memset(to, 0, sizeof *to);
	to->version = from->version;
	if (!from->nns)
		return 0;
	if (!(to->ns = calloc((size_t)from->nns, sizeof *to->ns)))
		return -ENOMEM;
	to->nns = from->nns;
	for (int i = 0; i < from->nns; i++) {
		const struct kv_ns_policy *f = &from->ns[i];
		struct kv_ns_policy *t = &to->ns[i];
		if (!(t->ns = strdup(f->ns)) || (f->default_ttl && !(t->default_ttl = strdup(f->default_ttl))) ||
		    (f->max_ttl && !(t->max_ttl = strdup(f->max_ttl)))) {
			kv_catalog_free(to);
			return -ENOMEM;
		}
	}
	return 0;
}

int kv_catalog_endpoint(const struct tusk_config *cfg, const char *user, const char *password,
			struct kv_endpoint *out, char err[KV_ERR_MAX])
{
	const struct config_kv *kv = &cfg->kv;

	if (!kv->zone || !kv->service) {
		snprintf(err, KV_ERR_MAX, "%s: kv.zone and kv.service must both be set", cfg->path);
		return -EINVAL;
	}
	for (int i = 0; i < cfg->nservices; i++) {
		const struct config_service *s = &cfg->services[i];
		if (strcmp(s->name, kv->service) != 0)
			continue;
		if (s->nhosts < 1) {
			/* The catalog is read with libpq, once, before any resolver runs. */
			snprintf(err, KV_ERR_MAX, "%s: kv.service \"%s\" must list hosts: (dns: and srv: are not "
				 "supported for the kv catalog)", cfg->path, kv->service);
			return -EINVAL;
		}
		/* Its first host: a kv zone's service is that zone's one primary. */
		*out = (struct kv_endpoint){ .host = s->hosts[0].host, .port = s->hosts[0].port,
					     .dbname = kv->catalog_database, .user = user, .password = password };
		return 0;
	}
	snprintf(err, KV_ERR_MAX, "%s: kv.service: no service named \"%s\"", cfg->path, kv->service);
	return -EINVAL;
}
