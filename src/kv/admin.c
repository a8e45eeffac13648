/* tusk kv init | push | shard: set up this zone's kv databases, push the catalog to every
 * instance, and tell which shard a key lives on. Plain blocking libpq; runs before and
 * instead of the pooler, never inside it. */
#include "kv/admin.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "kv/catalog.h"
#include "kv/conn.h"
#include "kv/hash.h"
#include "kv/schema.h"

#define APP_NAME "tusk kv"

static void usage(FILE *out)
{
	fprintf(out, "Usage: tusk kv init -c FILE    create this zone's catalog and shard databases, schema and roles\n"
		     "       tusk kv push -c FILE    push the catalog's newest version to every instance\n"
		     "       tusk kv shard NSHARDS NAMESPACE KEY...\n"
		     "                               print the shard of each key (and its hash), a line a key\n");
}

static int ensure_roles(PGconn *pg, const struct config_kv *kv, char err[KV_ERR_MAX])
{
	static const char *const scripts[] = { kv_schema_roles_sql, NULL };
	const struct {
		const char *role, *password;
	} pw[] = { { "kv_replicator", kv->replicator_password }, { "kv_client", kv->client_password },
		 { "kv_router", kv->router_password } };

	if (kv_conn_run_scripts(pg, scripts, err) < 0)
		return -EIO;
	for (size_t i = 0; i < sizeof pw / sizeof pw[0]; i++) {
		char sql[1400];
		if (!pw[i].password)
			continue;
		/* ALTER ROLE takes no parameters: the password is quoted by libpq. */
		char *lit = PQescapeLiteral(pg, pw[i].password, strlen(pw[i].password));
		if (!lit) {
			snprintf(err, KV_ERR_MAX, "cannot quote the %s password", pw[i].role);
			return -ENOMEM;
		}
		snprintf(sql, sizeof sql, "ALTER ROLE %s PASSWORD %s", pw[i].role, lit);
		PQfreemem(lit);
		if (kv_conn_run(pg, sql, 0, NULL, err) < 0)
			return -EIO;
	}
	return 0;
}

static int ensure_database(PGconn *pg, const char *name, char err[KV_ERR_MAX])
{
	const char *params[] = { name };
	PGresult *res = kv_conn_exec(pg, "SELECT 1 FROM pg_database WHERE datname = $1", 1, params, err);
	if (!res)
		return -EIO;
	int exists = PQntuples(res) > 0;
	PQclear(res);
	if (exists)
		return 0;
	char *ident = PQescapeIdentifier(pg, name, strlen(name));
	if (!ident) {
		snprintf(err, KV_ERR_MAX, "cannot quote database name %s", name);
		return -ENOMEM;
	}
	char sql[256];
	snprintf(sql, sizeof sql, "CREATE DATABASE %s OWNER kv_owner", ident);
	PQfreemem(ident);
	int rc = kv_conn_run(pg, sql, 0, NULL, err);
	/* Another init created it between our look and our CREATE: that is what we wanted. */
	if (rc < 0 && strncmp(err, "42P04", 5) == 0)
		rc = 0;
	return rc;
}

static int import_doc(PGconn *conn, const char *func, const char *doc, bool *applied, char err[KV_ERR_MAX])
{
	char sql[128];
	const char *params[] = { doc };

	snprintf(sql, sizeof sql, "SELECT %s($1::jsonb)", func);
	PGresult *res = kv_conn_exec(conn, sql, 1, params, err);
	if (!res)
		return -EIO;
	*applied = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	return 0;
}

/* The catalog database of one instance: created, schema applied, doc imported. */
static int init_catalog_db(const struct kv_endpoint *inst, const char *catalog_db, const char *doc,
			   char err[KV_ERR_MAX])
{
	static const char *const scripts[] = { kv_schema_catalog_sql, kv_schema_hash_sql, NULL };
	struct kv_endpoint ep = *inst;
	bool applied;

	ep.dbname = catalog_db;
	PGconn *c = kv_conn_open(&ep, APP_NAME, err);
	if (!c)
		return -EIO;
	int rc = kv_conn_run_scripts(c, scripts, err);
	if (rc == 0 && doc)
		rc = import_doc(c, "kv_catalog.import", doc, &applied, err);
	PQfinish(c);
	return rc;
}

static int init_shard_db(const struct kv_endpoint *inst, int origin, int shard, int nshards, const char *doc,
			 char err[KV_ERR_MAX])
{
	static const char *const scripts[] = { kv_schema_hash_sql, kv_schema_shard_sql, NULL };
	char dbname[64], o[16], s[16], n[16];
	struct kv_endpoint ep = *inst;
	bool applied;

	snprintf(dbname, sizeof dbname, KV_SHARD_DB_PREFIX "%d", shard);
	ep.dbname = dbname;
	PGconn *c = kv_conn_open(&ep, APP_NAME, err);
	if (!c)
		return -EIO;
	int rc = kv_conn_run_scripts(c, scripts, err);
	if (rc < 0)
		goto out;
	/* A database's identity never changes: its origin is in every row it wrote. */
	snprintf(o, sizeof o, "%d", origin);
	snprintf(s, sizeof s, "%d", shard);
	snprintf(n, sizeof n, "%d", nshards);
	const char *params[] = { o, s, n };
	PGresult *res = kv_conn_exec(c,
				     "WITH ins AS (INSERT INTO kv.identity (origin, shard, nshards) VALUES ($1, $2, $3) "
				     "ON CONFLICT (one) DO NOTHING RETURNING origin, shard, nshards) "
				     "SELECT origin, shard, nshards FROM ins UNION ALL "
				     "SELECT origin, shard, nshards FROM kv.identity",
				     3, params, err);
	if (!res) {
		rc = -EIO;
		goto out;
	}
	if (PQntuples(res) < 1 || strcmp(PQgetvalue(res, 0, 0), o) != 0 || strcmp(PQgetvalue(res, 0, 1), s) != 0 ||
	    strcmp(PQgetvalue(res, 0, 2), n) != 0) {
		snprintf(err, KV_ERR_MAX,
			 "%s already belongs to origin %s, shard %s of %s; the catalog says origin %s, shard %s of %s "
			 "(changing an instance id or the shard count is not supported)",
			 dbname, PQntuples(res) ? PQgetvalue(res, 0, 0) : "?", PQntuples(res) ? PQgetvalue(res, 0, 1) : "?",
			 PQntuples(res) ? PQgetvalue(res, 0, 2) : "?", o, s, n);
		PQclear(res);
		rc = -EINVAL;
		goto out;
	}
	PQclear(res);
	rc = import_doc(c, "kv.import_catalog", doc, &applied, err);
out:
	PQfinish(c);
	return rc;
}

static int load_config(const char *path, struct tusk_config **cfg)
{
	int nerr = config_load(path, stderr, cfg);
	if (nerr > 0) {
		fprintf(stderr, "%s: %d error%s\n", path, nerr, nerr == 1 ? "" : "s");
		return -EINVAL;
	}
	return 0;
}

static int cmd_init(const struct tusk_config *cfg)
{
	const struct config_kv *kv = &cfg->kv;
	struct kv_endpoint ep;
	struct kv_catalog cat;
	char err[KV_ERR_MAX];
	int failed = 0;

	if (kv_catalog_endpoint(cfg, kv->user, kv->password, &ep, err) < 0)
		goto err_print;
	/* The catalog instance first: the catalog says which instances are this zone's. */
	struct kv_endpoint pg = ep;
	pg.dbname = "postgres";
	PGconn *c = kv_conn_open(&pg, APP_NAME, err);
	if (!c)
		goto err_print;
	if (ensure_roles(c, kv, err) < 0 || ensure_database(c, kv->catalog_database, err) < 0) {
		PQfinish(c);
		goto err_print;
	}
	PQfinish(c);
	if (init_catalog_db(&pg, kv->catalog_database, NULL, err) < 0)
		goto err_print;
	c = kv_conn_open(&ep, APP_NAME, err);
	if (!c)
		goto err_print;
	int rc = kv_catalog_read(c, &cat, err);
	PQfinish(c);
	if (rc < 0)
		goto err_print;
	if (cat.version == 0) {
		printf("kv init: catalog %s on %s:%d is ready and empty: fill kv_catalog.zones, instances, namespaces "
		       "(and expiry_policies), SELECT kv_catalog.bump(), then run tusk kv init again\n",
		       kv->catalog_database, ep.host, ep.port);
		kv_catalog_free(&cat);
		return 0;
	}
	int mine = 0;
	for (int i = 0; i < cat.ninstances; i++) {
		const struct kv_instance *in = &cat.instances[i];
		if (strcmp(in->zone, kv->zone) != 0)
			continue;
		mine++;
		struct kv_endpoint ipg = { .host = in->host, .port = in->port, .dbname = "postgres", .user = kv->user,
					   .password = kv->password };
		PGconn *ic = kv_conn_open(&ipg, APP_NAME, err);
		if (!ic || ensure_roles(ic, kv, err) < 0 || ensure_database(ic, kv->catalog_database, err) < 0)
			goto inst_failed;
		for (int s = 0; s < cat.nshards; s++) {
			char dbname[64];
			snprintf(dbname, sizeof dbname, KV_SHARD_DB_PREFIX "%d", s);
			if (ensure_database(ic, dbname, err) < 0)
				goto inst_failed;
		}
		PQfinish(ic);
		ic = NULL;
		if (init_catalog_db(&ipg, kv->catalog_database, cat.doc, err) < 0)
			goto inst_failed;
		for (int s = 0; s < cat.nshards; s++)
			if (init_shard_db(&ipg, in->id, s, cat.nshards, cat.doc, err) < 0)
				goto inst_failed;
		printf("kv init: instance %d (zone %s, %s:%d): catalog version %lld and %d shard database%s ready\n", in->id,
		       in->zone, in->host, in->port, (long long)cat.version, cat.nshards, cat.nshards == 1 ? "" : "s");
		continue;
inst_failed:
		if (ic)
			PQfinish(ic);
		fprintf(stderr, "kv init: instance %d (zone %s, %s:%d): %s\n", in->id, in->zone, in->host, in->port, err);
		failed++;
	}
	if (mine == 0) {
		fprintf(stderr, "kv init: the catalog (version %lld) has no instance in zone %s\n", (long long)cat.version,
			kv->zone);
		failed++;
	}
	kv_catalog_free(&cat);
	return failed ? 1 : 0;

err_print:
	fprintf(stderr, "kv init: %s\n", err);
	return 1;
}

/* present[s]: kv_shard_<s> exists on the instance conn is connected to. */
static int find_shard_dbs(PGconn *conn, bool *present, int nshards, char err[KV_ERR_MAX])
{
	PGresult *res = kv_conn_exec(conn,
				     "SELECT substr(datname, length('" KV_SHARD_DB_PREFIX "') + 1)::int FROM pg_database "
				     "WHERE datname ~ '^" KV_SHARD_DB_PREFIX "[0-9]{1,4}$'",
				     0, NULL, err);
	if (!res)
		return -EIO;
	for (int i = 0; i < PQntuples(res); i++) {
		int s = atoi(PQgetvalue(res, i, 0));
		if (s >= 0 && s < nshards)
			present[s] = true;
	}
	PQclear(res);
	return 0;
}

static int cmd_push(const struct tusk_config *cfg)
{
	const struct config_kv *kv = &cfg->kv;
	struct kv_endpoint ep;
	struct kv_catalog cat;
	char err[KV_ERR_MAX];
	int failed = 0;

	if (kv_catalog_endpoint(cfg, kv->user, kv->password, &ep, err) < 0)
		goto err_print;
	PGconn *c = kv_conn_open(&ep, APP_NAME, err);
	if (!c)
		goto err_print;
	int rc = kv_catalog_read(c, &cat, err);
	PQfinish(c);
	if (rc < 0)
		goto err_print;
	if (cat.version == 0) {
		fprintf(stderr, "kv push: the catalog on %s:%d is empty (version 0); nothing to push\n", ep.host, ep.port);
		kv_catalog_free(&cat);
		return 1;
	}
	/* Every instance, every zone: one that is down is reported and the rest still get it. */
	for (int i = 0; i < cat.ninstances; i++) {
		const struct kv_instance *in = &cat.instances[i];
		struct kv_endpoint ic = { .host = in->host, .port = in->port, .dbname = kv->catalog_database,
					  .user = kv->user, .password = kv->password };
		char dbname[64];
		bool applied;
		int napplied = 0, nignored = 0;

		int nmissing = 0;
		bool *present = calloc((size_t)cat.nshards, sizeof *present);
		if (!present) {
			fprintf(stderr, "kv push: out of memory\n");
			failed++;
			break;
		}
		for (int s = -1; s < cat.nshards; s++) {
			if (s >= 0) {
				if (!present[s]) {
					nmissing++;
					continue;
				}
				snprintf(dbname, sizeof dbname, KV_SHARD_DB_PREFIX "%d", s);
				ic.dbname = dbname;
			}
			PGconn *t = kv_conn_open(&ic, APP_NAME, err);
			if (!t)
				goto target_failed;
			rc = import_doc(t, s < 0 ? "kv_catalog.import" : "kv.import_catalog", cat.doc, &applied, err);
			/* Shard databases not created yet get the catalog from the zone's own init,
			 * which reads it from the catalog database just pushed to. */
			if (rc == 0 && s < 0)
				rc = find_shard_dbs(t, present, cat.nshards, err);
			PQfinish(t);
			if (rc < 0)
				goto target_failed;
			if (applied)
				napplied++;
			else
				nignored++;
			continue;
target_failed:
			fprintf(stderr, "kv push: instance %d (zone %s) %s: %s\n", in->id, in->zone, ic.dbname, err);
			failed++;
			/* Without its catalog database nothing is known of its shards. */
			if (s < 0)
				break;
		}
		free(present);
		if (napplied + nignored == 0)
			continue;
		printf("kv push: instance %d (zone %s, %s:%d): version %lld applied by %d database%s, %d already had it "
		       "or newer, %d shard database%s not created yet (tusk kv init in zone %s)\n",
		       in->id, in->zone, in->host, in->port, (long long)cat.version, napplied, napplied == 1 ? "" : "s",
		       nignored, nmissing, nmissing == 1 ? "" : "s", in->zone);
	}
	kv_catalog_free(&cat);
	return failed ? 1 : 0;

err_print:
	fprintf(stderr, "kv push: %s\n", err);
	return 1;
}

static int cmd_shard(int argc, char **argv)
{
	char *end;
	long n;

	if (argc < 4) {
		usage(stderr);
		return 2;
	}
	errno = 0;
	n = strtol(argv[1], &end, 10);
	if (errno || *end || n < 1 || n > KV_MAX_SHARDS) {
		fprintf(stderr, "tusk kv shard: NSHARDS must be 1..%d\n", KV_MAX_SHARDS);
		return 2;
	}
	size_t nl = strlen(argv[2]);
	for (int i = 3; i < argc; i++) { /* a line a key, in the order given */
		int64_t h = kv_hash(argv[2], nl, argv[i], strlen(argv[i]));
		printf("%d %" PRId64 "\n", kv_shard_of_hash(h, (int)n), h);
	}
	return 0;
}

int kv_admin_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = "tusk.yaml";
	int opt;

	if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	const char *cmd = argv[1];
	if (strcmp(cmd, "shard") == 0)
		return cmd_shard(argc - 1, argv + 1);
	if (strcmp(cmd, "init") != 0 && strcmp(cmd, "push") != 0) {
		fprintf(stderr, "tusk kv: unknown command \"%s\"\n", cmd);
		usage(stderr);
		return 2;
	}
	optind = 1;
	while ((opt = getopt_long(argc - 1, argv + 1, "c:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'c': path = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc - 1) {
		usage(stderr);
		return 2;
	}
	struct tusk_config *cfg = NULL;
	if (load_config(path, &cfg) < 0)
		return 1;
	int rc;
	if (!cfg->kv.zone) {
		fprintf(stderr, "%s: no kv section with a zone; tusk kv %s has nothing to do\n", path, cmd);
		rc = 1;
	} else {
		rc = strcmp(cmd, "init") == 0 ? cmd_init(cfg) : cmd_push(cfg);
	}
	config_free(cfg);
	return rc;
}
