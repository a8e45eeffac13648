/* Unit tests for the kv section of the configuration: off by default, defaults, secrets kept
 * out of messages, restart-only, and the catalog endpoint resolved from the named service. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "kv/catalog.h"

#define BASE                                                                                                        \
	"services:\n  local:\n    hosts: [\"10.0.0.7:5433\"]\n"                                                      \
	"pools:\n  - {database: \"*\", user: \"*\", service: local}\n"

struct result {
	char path[64];
	struct tusk_config *cfg;
	char *errs;
	int n;
};

static void load_text(struct result *r, const char *yaml)
{
	size_t len = strlen(yaml), size;
	int fd;

	strcpy(r->path, "/tmp/tusk_test_kv_config_XXXXXX.yaml");
	fd = mkstemps(r->path, 5);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, yaml, len), (ssize_t)len);
	close(fd);
	FILE *f = open_memstream(&r->errs, &size);
	assert_non_null(f);
	r->n = config_load(r->path, f, &r->cfg);
	fclose(f);
	unlink(r->path);
}

static void release(struct result *r)
{
	config_free(r->cfg);
	free(r->errs);
}

static void test_off_without_a_section(void **state)
{
	struct result r;
	(void)state;
	load_text(&r, BASE);
	assert_int_equal(r.n, 0);
	assert_null(r.cfg->kv.zone);
	/* Defaults still apply, so a section with only a zone is complete. */
	assert_string_equal(r.cfg->kv.catalog_database, "kv_catalog");
	assert_string_equal(r.cfg->kv.user, "postgres");
	assert_null(r.cfg->kv.password);
	release(&r);
}

static void test_catalog_endpoint_from_the_service(void **state)
{
	struct result r;
	struct kv_endpoint ep;
	char err[KV_ERR_MAX];
	(void)state;

	load_text(&r, BASE "kv:\n  zone: eu1\n  service: local\n  replicator_password: \"r-secret\"\n"
			   "  router_password: \"rt-secret\"\n");
	assert_int_equal(r.n, 0);
	assert_string_equal(r.cfg->kv.zone, "eu1");
	assert_string_equal(r.cfg->kv.replicator_password, "r-secret");
	assert_string_equal(r.cfg->kv.router_password, "rt-secret");
	assert_null(r.cfg->kv.client_password);
	assert_int_equal(kv_catalog_endpoint(r.cfg, "kv_replicator", "pw", &ep, err), 0);
	assert_string_equal(ep.host, "10.0.0.7");
	assert_int_equal(ep.port, 5433);
	assert_string_equal(ep.dbname, "kv_catalog");
	assert_string_equal(ep.user, "kv_replicator");
	release(&r);

	load_text(&r, BASE "kv:\n  zone: eu1\n  service: elsewhere\n");
	assert_int_equal(r.n, 0);
	assert_true(kv_catalog_endpoint(r.cfg, "u", NULL, &ep, err) < 0);
	assert_non_null(strstr(err, "kv.service: no service named \"elsewhere\""));
	release(&r);

	load_text(&r, BASE "kv:\n  zone: eu1\n");
	assert_int_equal(r.n, 0);
	assert_true(kv_catalog_endpoint(r.cfg, "u", NULL, &ep, err) < 0);
	assert_non_null(strstr(err, "kv.zone and kv.service must both be set"));
	release(&r);
}

static void test_errors_name_the_key_and_hide_secrets(void **state)
{
	struct result r;
	(void)state;

	load_text(&r, BASE "kv:\n  zone: \"\"\n  password: [\"hunter2\"]\n  zones: x\n");
	assert_int_equal(r.n, 3);
	assert_non_null(strstr(r.errs, ":7: kv.zone:"));
	assert_non_null(strstr(r.errs, ":8: kv.password:"));
	assert_non_null(strstr(r.errs, ":9: kv.zones:"));
	assert_null(strstr(r.errs, "hunter2"));
	release(&r);
}

static void test_restart_only(void **state)
{
	struct result a, b;
	(void)state;

	load_text(&a, BASE "kv:\n  zone: eu1\n  service: local\n");
	load_text(&b, BASE "kv:\n  zone: us1\n  service: local\n");
	assert_int_equal(a.n + b.n, 0);
	assert_int_equal(config_check_reload(a.cfg, b.cfg, NULL), 1);
	assert_int_equal(config_keep_fixed(a.cfg, b.cfg), 0);
	assert_string_equal(b.cfg->kv.zone, "eu1");
	release(&a);
	release(&b);
}

/* The Redis listener: a listen entry's protocol, off by default, needing the kv section. */
static void test_redis_listen_entries(void **state)
{
	struct result r;
	(void)state;
	load_text(&r, BASE "listen:\n  - {host: 127.0.0.1, port: 6432}\n"
			   "  - {host: 127.0.0.1, port: 6390, protocol: redis, kv_namespace: sessions}\n"
			   "kv: {zone: eu1, service: local}\n");
	assert_int_equal(r.n, 0);
	assert_int_equal(r.cfg->listen[0].protocol, CONFIG_LISTEN_POSTGRES);
	assert_null(r.cfg->listen[0].kv_namespace);
	assert_int_equal(r.cfg->listen[1].protocol, CONFIG_LISTEN_REDIS);
	assert_string_equal(r.cfg->listen[1].kv_namespace, "sessions");
	release(&r);
	load_text(&r, BASE "listen:\n  - {host: 127.0.0.1, port: 6390, protocol: redis}\n");
	assert_int_equal(r.n, 1);
	assert_non_null(strstr(r.errs, "needs the kv section"));
	release(&r);
	/* TLS: the same keys as a PostgreSQL listener's (the files are read when tusk starts). */
	load_text(&r, BASE "listen:\n  - {host: 127.0.0.1, port: 6390, protocol: redis, tls: require, "
			   "tls_cert_file: /c, tls_key_file: /k}\nkv: {zone: eu1, service: local}\n");
	assert_int_equal(r.n, 0);
	assert_int_equal(r.cfg->listen[0].tls, CONFIG_TLS_REQUIRE);
	release(&r);
	load_text(&r, BASE "listen:\n  - {host: 127.0.0.1, port: 6390, protocol: redis, tls: require}\n"
			   "kv: {zone: eu1, service: local}\n");
	assert_int_equal(r.n, 1);
	assert_non_null(strstr(r.errs, "needs tls_cert_file"));
	release(&r);
	load_text(&r, BASE "listen:\n  - {host: 127.0.0.1, port: 6390, protocol: resp}\n");
	assert_true(r.n >= 1);
	release(&r);
}

/* SELECT n of a redis listener: kv_databases maps each index to a namespace. */
static void test_redis_kv_databases(void **state)
{
	struct result r;
	(void)state;
	load_text(&r, BASE "listen:\n  - {host: 127.0.0.1, port: 6390, protocol: redis, "
			   "kv_databases: {0: default, 1: sessions, 15: last}}\nkv: {zone: eu1, service: local}\n");
	assert_int_equal(r.n, 0);
	assert_string_equal(r.cfg->listen[0].kv_databases[0], "default");
	assert_string_equal(r.cfg->listen[0].kv_databases[1], "sessions");
	assert_string_equal(r.cfg->listen[0].kv_databases[15], "last");
	assert_null(r.cfg->listen[0].kv_databases[2]);
	assert_null(r.cfg->listen[0].kv_namespace);
	release(&r);
	/* Database 0 from kv_namespace, the others from kv_databases. */
	load_text(&r, BASE "listen:\n  - {host: 127.0.0.1, port: 6390, protocol: redis, kv_namespace: a, "
			   "kv_databases: {3: c}}\nkv: {zone: eu1, service: local}\n");
	assert_int_equal(r.n, 0);
	assert_string_equal(r.cfg->listen[0].kv_namespace, "a");
	assert_null(r.cfg->listen[0].kv_databases[0]);
	assert_string_equal(r.cfg->listen[0].kv_databases[3], "c");
	release(&r);
	/* Every mistake reported, each with its key. */
	load_text(&r, BASE "listen:\n  - {host: 127.0.0.1, port: 6390, protocol: redis, kv_namespace: a, "
			   "kv_databases: {0: b, 16: x, -1: y, z: w, 01: v, 2: [q]}}\n"
			   "  - {host: 127.0.0.1, port: 6391, kv_databases: {1: s}}\n"
			   "  - {host: 127.0.0.1, port: 6392, protocol: redis, kv_databases: [a, b]}\n"
			   "kv: {zone: eu1, service: local}\n");
	assert_int_equal(r.n, 8);
	assert_non_null(strstr(r.errs, "found \"16\""));
	assert_non_null(strstr(r.errs, "found \"-1\""));
	assert_non_null(strstr(r.errs, "found \"z\""));
	assert_non_null(strstr(r.errs, "found \"01\""));
	assert_non_null(strstr(r.errs, "listen[0].kv_databases.2"));
	assert_non_null(strstr(r.errs, "both name database 0"));
	assert_non_null(strstr(r.errs, "are for protocol redis"));
	assert_non_null(strstr(r.errs, "listen[2].kv_databases"));
	release(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_off_without_a_section),
		cmocka_unit_test(test_catalog_endpoint_from_the_service),
		cmocka_unit_test(test_errors_name_the_key_and_hide_secrets),
		cmocka_unit_test(test_restart_only),
		cmocka_unit_test(test_redis_listen_entries),
		cmocka_unit_test(test_redis_kv_databases),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
