/* Unit tests for config/: duration and size parsing, loading a full file and the defaults,
 * every kind of error with its exact "FILE:LINE: KEY:" prefix, pool rule matching, the reload
 * check, and the shipped tusk.yaml.example. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config/config.h"

struct result {
	char path[64];
	struct tusk_config *cfg;
	char *errs; /* everything config_load wrote */
	int n;
};

static void load_path(struct result *r, const char *path)
{
	size_t size;
	FILE *f = open_memstream(&r->errs, &size);

	assert_non_null(f);
	r->n = config_load(path, f, &r->cfg);
	fclose(f);
	if (r->n == 0)
		assert_non_null(r->cfg);
	else
		assert_null(r->cfg);
}

static void load_text(struct result *r, const char *yaml)
{
	size_t len = strlen(yaml);
	int fd;

	strcpy(r->path, "/tmp/tusk_test_config_XXXXXX.yaml");
	fd = mkstemps(r->path, 5);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, yaml, len), (ssize_t)len);
	close(fd);
	load_path(r, r->path);
	unlink(r->path);
}

static void release(struct result *r)
{
	config_free(r->cfg);
	free(r->errs);
}

/* text is "LINE: KEY: message" without the file name. */
static void check_error(const struct result *r, const char *text)
{
	char want[1024];

	snprintf(want, sizeof(want), "%s:%s\n", r->path, text);
	if (!strstr(r->errs, want)) {
		print_error("expected the line\n  %sin\n%s", want, r->errs);
		fail();
	}
}

static void one_error(const char *yaml, const char *text)
{
	struct result r;

	load_text(&r, yaml);
	if (r.n != 1)
		print_error("expected 1 error, got %d:\n%s", r.n, r.errs);
	assert_int_equal(r.n, 1);
	check_error(&r, text);
	release(&r);
}

/* Five lines that load cleanly; error cases add lines from 6 on. */
#define BASE                       \
	"services:\n"              \
	"  main:\n"                \
	"    hosts: [\"db:5432\"]\n" \
	"pools:\n"                 \
	"  - server_database: app\n"

/* ---- Durations and sizes ---- */

static void test_duration_valid(void **state)
{
	static const struct {
		const char *text;
		uint64_t ms;
	} cases[] = {
		{ "0", 0 },
		{ "000", 0 },
		{ "250ms", 250 },
		{ "30s", 30000 },
		{ "5m", 300000 },
		{ "1h", 3600000 },
		{ "2d", 172800000 },
		{ "007s", 7000 },
		{ "18446744073709551615ms", UINT64_MAX },
		{ "213503982334d", 213503982334ULL * 86400000ULL },
	};
	(void)state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t v = 1;
		assert_int_equal(config_parse_duration_ms(cases[i].text, &v), 0);
		assert_int_equal(v, cases[i].ms);
	}
}

static void test_duration_invalid(void **state)
{
	static const char *const cases[] = {
		"", "s", "ms", "-1", "+5", "1.5s", "10 s", " 10s", "10s ", "10S", "10sec", "0x10", "1ms2", "1e3", "1_000",
		"99999999999999999999999x",
	};
	(void)state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t v = 42;
		assert_int_equal(config_parse_duration_ms(cases[i], &v), -EINVAL);
		assert_int_equal(v, 42);
	}
}

/* A bare number is seconds in PgBouncer and was milliseconds in tusk: "server_lifetime: 3600"
 * copied from a pgbouncer.ini gave 3.6 s. Now refused, naming what to write. */
static void test_duration_bare_number_refused(void **state)
{
	static const char *const cases[] = { "1", "250", "3600", "007", "18446744073709551616" };
	(void)state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t v = 42;
		assert_int_equal(config_parse_duration_ms(cases[i], &v), -EDOM);
		assert_int_equal(v, 42);
	}
	one_error(BASE "server_lifetime: 3600\n",
		  "6: server_lifetime: \"3600\" has no unit: write 3600s or 1h (seconds, PgBouncer's meaning) or 3600ms");
	one_error(BASE "server_idle_timeout: 90\n",
		  "6: server_idle_timeout: \"90\" has no unit: write 90s (seconds, PgBouncer's meaning) or 90ms");
	one_error(BASE "    cache_ttl: '600'\n",
		  "6: pools[0].cache_ttl: \"600\" has no unit: write 600s or 10m (seconds, PgBouncer's meaning) or 600ms");
	one_error(BASE "redis:\n  host: r\n  timeout: 100\n",
		  "8: redis.timeout: \"100\" has no unit: write 100s (seconds, PgBouncer's meaning) or 100ms");
}

/* pool_defaults states mode, size, min_size and client_auth once; a rule that omits
 * client_auth takes the default's, never trust behind the operator's back. */
static void test_pool_defaults_inherited(void **state)
{
	struct result r;
	(void)state;

	load_text(&r, "services:\n  main:\n    hosts: [\"db:5432\"]\n"
		      "pool_defaults:\n  mode: transaction\n  size: 7\n  min_size: 2\n  client_auth: scram-sha-256\n"
		      "pools:\n  - database: a\n  - database: b\n    client_auth: md5\n    size: 3\n    min_size: 0\n"
		      "  - database: c\n    mode: session\n");
	assert_int_equal(r.n, 0);
	assert_int_equal(r.cfg->pools[0].mode, POOL_MODE_TRANSACTION);
	assert_int_equal(r.cfg->pools[0].size, 7);
	assert_int_equal(r.cfg->pools[0].min_size, 2);
	assert_int_equal(r.cfg->pools[0].client_auth, CONFIG_AUTH_SCRAM);
	assert_int_equal(r.cfg->pools[1].client_auth, CONFIG_AUTH_MD5);
	assert_int_equal(r.cfg->pools[1].size, 3);
	assert_int_equal(r.cfg->pools[1].mode, POOL_MODE_TRANSACTION);
	assert_int_equal(r.cfg->pools[2].mode, POOL_MODE_SESSION);
	assert_int_equal(r.cfg->pools[2].client_auth, CONFIG_AUTH_SCRAM);
	release(&r);

	/* Without pool_defaults, the rule keys' own defaults as before. */
	load_text(&r, BASE);
	assert_int_equal(r.n, 0);
	assert_int_equal(r.cfg->pools[0].mode, POOL_MODE_SESSION);
	assert_int_equal(r.cfg->pools[0].size, 20);
	assert_int_equal(r.cfg->pools[0].client_auth, CONFIG_AUTH_TRUST);
	release(&r);

	one_error(BASE "pool_defaults:\n  server_user: x\n", "7: pool_defaults.server_user: unknown key");
	one_error(BASE "pool_defaults:\n  size: 0\n", "7: pool_defaults.size: \"0\" is out of range (1 to 10000)");
}

/* active_limit: off by default; adaptive only for transaction and statement pools, never with
 * read-write-split, and a floor no larger than size. */
static void test_active_limit(void **state)
{
	struct result r;
	(void)state;

	load_text(&r, BASE);
	assert_int_equal(r.n, 0);
	assert_int_equal(r.cfg->pools[0].active_limit, CONFIG_ACTIVE_LIMIT_OFF);
	assert_int_equal(r.cfg->pools[0].active_limit_min, 2);
	release(&r);
	load_text(&r, BASE "    mode: transaction\n    active_limit: adaptive\n    active_limit_min: 4\n");
	assert_int_equal(r.n, 0);
	assert_int_equal(r.cfg->pools[0].active_limit, CONFIG_ACTIVE_LIMIT_ADAPTIVE);
	assert_int_equal(r.cfg->pools[0].active_limit_min, 4);
	release(&r);
	/* pool_defaults carries it. */
	load_text(&r, "services:\n  main:\n    hosts: [\"db:5432\"]\n"
		      "pool_defaults:\n  mode: statement\n  active_limit: adaptive\n"
		      "pools:\n  - database: a\n  - database: b\n    active_limit: off\n");
	assert_int_equal(r.n, 0);
	assert_int_equal(r.cfg->pools[0].active_limit, CONFIG_ACTIVE_LIMIT_ADAPTIVE);
	assert_int_equal(r.cfg->pools[1].active_limit, CONFIG_ACTIVE_LIMIT_OFF);
	release(&r);
	one_error(BASE "    active_limit: adaptive\n",
		  "5: pools[0].active_limit: adaptive needs mode: transaction or statement (found session)");
	one_error(BASE "    mode: transaction\n    active_limit: adaptive\n    active_limit_min: 30\n",
		  "5: pools[0].active_limit_min: 30 is larger than size (20)");
	one_error(BASE "    mode: transaction\n    active_limit: adaptive\n    target_session_attrs: read-write-split\n",
		  "5: pools[0].active_limit: adaptive is not available with target_session_attrs: read-write-split");
	one_error(BASE "    active_limit: 3\n", "6: pools[0].active_limit: expected one of off, adaptive, found \"3\"");
	one_error(BASE "    active_limit_min: 0\n", "6: pools[0].active_limit_min: \"0\" is out of range (1 to 10000)");
}

/* query_timeout and client_idle_timeout (PgBouncer's names): top-level, with a unit, and per
 * rule, where a rule's own value wins (0 too: off for that rule) and an absent one inherits. */
static void test_query_and_client_idle_timeouts(void **state)
{
	struct result r;
	(void)state;

	load_text(&r, "services:\n  main:\n    hosts: [\"db:5432\"]\n"
		      "query_timeout: 30s\nclient_idle_timeout: 10m\n"
		      "pools:\n  - database: a\n    query_timeout: 0\n    client_idle_timeout: 500ms\n"
		      "  - database: b\n");
	assert_int_equal(r.n, 0);
	assert_int_equal(r.cfg->query_timeout_ms, 30000);
	assert_int_equal(r.cfg->client_idle_timeout_ms, 600000);
	assert_int_equal(config_query_timeout(r.cfg, &r.cfg->pools[0]), 0);
	assert_int_equal(config_client_idle_timeout(r.cfg, &r.cfg->pools[0]), 500);
	assert_int_equal(config_query_timeout(r.cfg, &r.cfg->pools[1]), 30000);
	assert_int_equal(config_client_idle_timeout(r.cfg, &r.cfg->pools[1]), 600000);
	release(&r);

	/* Off by default. */
	load_text(&r, BASE);
	assert_int_equal(r.n, 0);
	assert_int_equal(config_query_timeout(r.cfg, &r.cfg->pools[0]), 0);
	assert_int_equal(config_client_idle_timeout(r.cfg, &r.cfg->pools[0]), 0);
	release(&r);

	one_error(BASE "query_timeout: 30\n",
		  "6: query_timeout: \"30\" has no unit: write 30s (seconds, PgBouncer's meaning) or 30ms");
	one_error(BASE "    client_idle_timeout: 31d\n", "6: pools[0].client_idle_timeout: \"31d\" is out of range (0 to 30d)");
}

/* max_db_client_connections / max_user_client_connections (PgBouncer 1.24): top-level, and
 * per rule, where a rule's own value wins (0 too: no limit there) and an absent one inherits. */
static void test_client_connection_limits(void **state)
{
	struct result r;
	(void)state;

	load_text(&r, "services:\n  main:\n    hosts: [\"db:5432\"]\n"
		      "max_db_client_connections: 50\nmax_user_client_connections: 20\n"
		      "pools:\n  - database: a\n    max_db_client_connections: 0\n    max_user_client_connections: 5\n"
		      "  - database: b\n");
	assert_int_equal(r.n, 0);
	static const int want[2][2] = { { 0, 5 }, { 50, 20 } }; /* per rule: db, user */
	for (int i = 0; i < 2; i++) {
		assert_int_equal(config_max_db_client_connections(r.cfg, &r.cfg->pools[i]), want[i][0]);
		assert_int_equal(config_max_user_client_connections(r.cfg, &r.cfg->pools[i]), want[i][1]);
	}
	release(&r);

	load_text(&r, BASE); /* no limit by default */
	assert_int_equal(r.n, 0);
	assert_int_equal(r.cfg->max_db_client_connections + r.cfg->max_user_client_connections, 0);
	assert_int_equal(config_max_user_client_connections(r.cfg, &r.cfg->pools[0]), 0);
	release(&r);

	one_error(BASE "    max_user_client_connections: -1\n",
		  "6: pools[0].max_user_client_connections: \"-1\" is out of range (0 to 1000000)");
}

/* query_wait_notify (PgBouncer 1.25): PgBouncer's default, 5 s; a duration with its unit. */
static void test_query_wait_notify(void **state)
{
	struct result r;
	(void)state;

	load_text(&r, BASE);
	assert_int_equal(r.n, 0);
	assert_int_equal(r.cfg->query_wait_notify_ms, 5000);
	release(&r);
	one_error(BASE "query_wait_notify: 5\n",
		  "6: query_wait_notify: \"5\" has no unit: write 5s (seconds, PgBouncer's meaning) or 5ms");
}

/* The console's SET: reloadable scalar keys only, each value read as the file reads it. */
static void test_config_set(void **state)
{
	struct result r;
	char err[256];
	(void)state;

	load_text(&r, BASE);
	assert_int_equal(r.n, 0);
	assert_int_equal(config_set(r.cfg, "query_timeout", "1500ms", err, sizeof err), 0);
	assert_int_equal(r.cfg->query_timeout_ms, 1500);
	assert_int_equal(config_set(r.cfg, "log_connections", "false", err, sizeof err), 0);
	assert_int_equal(r.cfg->log_connections, 0);
	assert_int_equal(config_set(r.cfg, "max_client_connections", "77", err, sizeof err), 0);
	assert_int_equal(r.cfg->max_client_connections, 77);
	assert_int_equal(config_set(r.cfg, "nosuch", "1", err, sizeof err), -ENOENT);
	assert_int_equal(config_set(r.cfg, "workers", "4", err, sizeof err), -EPERM);
	assert_non_null(strstr(err, "only a restart"));
	assert_int_equal(config_set(r.cfg, "auth_file", "/x", err, sizeof err), -EPERM);
	assert_int_equal(config_set(r.cfg, "pools", "x", err, sizeof err), -EPERM);
	assert_int_equal(config_set(r.cfg, "query_timeout", "30", err, sizeof err), -EINVAL);
	assert_non_null(strstr(err, "has no unit"));
	assert_int_equal(config_set(r.cfg, "query_timeout", "2d", err, sizeof err), -EINVAL);
	assert_int_equal(r.cfg->query_timeout_ms, 1500); /* a refused value leaves the field */
	release(&r);
}

/* A PgBouncer key copied into tusk.yaml is told what tusk calls it. */
static void test_pgbouncer_names_explained(void **state)
{
	(void)state;
	one_error(BASE "default_pool_size: 20\n",
		  "6: default_pool_size: unknown key: PgBouncer's default_pool_size is pool_defaults.size (or pools[].size) in tusk");
	one_error(BASE "max_client_conn: 100\n",
		  "6: max_client_conn: unknown key: PgBouncer's max_client_conn is max_client_connections in tusk");
	one_error(BASE "ignore_startup_parameters: extra_float_digits\n",
		  "6: ignore_startup_parameters: unknown key: PgBouncer's ignore_startup_parameters is not needed in tusk: "
		  "tusk passes every startup parameter on (extra_float_digits, search_path, ...)");
	one_error(BASE "dns_nxdomain_ttl: 15\n",
		  "6: dns_nxdomain_ttl: unknown key: PgBouncer's dns_nxdomain_ttl is services.NAME.dns_nxdomain_ttl in tusk");
	one_error(BASE "server_tls13_ciphers: TLS_AES_128_GCM_SHA256\n",
		  "6: server_tls13_ciphers: unknown key: PgBouncer's server_tls13_ciphers is services.NAME.tls13_ciphers in "
		  "tusk; PgBouncer 1.25; empty: OpenSSL's suites");
	one_error(BASE "auth_ident_file: /etc/pgbouncer/ident.conf\n",
		  "6: auth_ident_file: unknown key: PgBouncer's auth_ident_file is ident_file in tusk");
	one_error(BASE "    pool_size: 5\n",
		  "6: pools[0].pool_size: unknown key: PgBouncer's pool_size is pools[].size in tusk");
	one_error(BASE "auth_ldap_options: ldapserver=h ldapprefix=uid=\n",
		  "6: auth_ldap_options: unknown key: PgBouncer's auth_ldap_options is ldap_options (or pools[].ldap_options) in tusk");
}

/* client_auth: ldap and its ldap_options (PgBouncer's auth_ldap_options): checked at load as an
 * hba_file line's options, a rule's own over the top-level one, needed without hba_file. */
static void test_ldap_options_key(void **state)
{
	struct result r;
	(void)state;

	load_text(&r, BASE "    user: alice\n    client_auth: ldap\n"
			   "  - user: bob\n    client_auth: ldap\n    ldap_options: ldapserver=b ldapprefix=uid=\n"
			   "ldap_options: 'ldapurl=\"ldap://h/dc=x?uid?sub\"'\n");
	assert_int_equal(r.n, 0);
	assert_int_equal(r.cfg->pools[0].client_auth, CONFIG_AUTH_LDAP);
	assert_string_equal(config_ldap_options(r.cfg, &r.cfg->pools[0]), "ldapurl=\"ldap://h/dc=x?uid?sub\"");
	assert_string_equal(config_ldap_options(r.cfg, &r.cfg->pools[1]), "ldapserver=b ldapprefix=uid=");
	release(&r);

	one_error(BASE "ldap_options: ldapserver=h\n",
		  "6: ldap_options: authentication method \"ldap\" requires argument \"ldapbasedn\", \"ldapprefix\", or "
		  "\"ldapsuffix\" to be set, found something else");
	one_error(BASE "    ldap_options: ldapserver=h ldapprefix=x ldapbasedn=y\n",
		  "6: pools[0].ldap_options: cannot use ldapbasedn, ldapbinddn, ldapbindpasswd, ldapsearchattribute, "
		  "ldapsearchfilter, or ldapurl together with ldapprefix, found something else");
	one_error(BASE "    client_auth: ldap\n", "5: pools[0].client_auth: ldap needs ldap_options (at the top level or in the rule)");
	one_error(BASE "pool_defaults:\n  client_auth: ldap\n",
		  "5: pools[0].client_auth: ldap needs ldap_options (at the top level or in the rule)");
	one_error(BASE "admin:\n  client_auth: ldap\n",
		  "1: admin.client_auth: ldap is not available for the admin console here: use an hba_file ldap line for "
		  "database tusk/pgbouncer");
	/* hba_file decides: its ldap lines carry their own options. */
	load_text(&r, BASE "    client_auth: ldap\nhba_file: /etc/tusk/hba.conf\n");
	assert_int_equal(r.n, 0);
	release(&r);
}

static void test_pidfile_key(void **state)
{
	struct result r;
	(void)state;

	load_text(&r, BASE "pidfile: /run/tusk/tusk.pid\n");
	assert_int_equal(r.n, 0);
	assert_string_equal(r.cfg->pidfile, "/run/tusk/tusk.pid");
	release(&r);
}

/* admin.http on a listen entry's port would share it (SO_REUSEPORT): refused at load. */
static void test_admin_http_port_of_its_own(void **state)
{
	struct result r;
	(void)state;

	one_error(BASE "listen:\n  - {host: 127.0.0.1, port: 6432}\n  - {host: 127.0.0.1, port: 6433}\n"
		       "admin:\n  http: \"127.0.0.1:6433\"\n",
		  "1: admin.http: port 6433 is also listen entry 1's: give the HTTP server a port of its own");
	load_text(&r, BASE "listen:\n  - {host: 127.0.0.1, port: 6432}\nadmin:\n  http: \"127.0.0.1:9127\"\n");
	assert_int_equal(r.n, 0);
	release(&r);
}

static void test_duration_overflow(void **state)
{
	uint64_t v = 42;
	(void)state;

	assert_int_equal(config_parse_duration_ms("18446744073709551616ms", &v), -ERANGE);
	assert_int_equal(config_parse_duration_ms("99999999999999999999999ms", &v), -ERANGE);
	assert_int_equal(config_parse_duration_ms("18446744073709551615s", &v), -ERANGE);
	assert_int_equal(config_parse_duration_ms("213503982335d", &v), -ERANGE);
	assert_int_equal(v, 42);
}

static void test_size_valid(void **state)
{
	static const struct {
		const char *text;
		uint64_t bytes;
	} cases[] = {
		{ "0", 0 },
		{ "512", 512 },
		{ "512B", 512 },
		{ "1k", 1024 },
		{ "1K", 1024 },
		{ "64kB", 65536 },
		{ "64KB", 65536 },
		{ "16M", 16 << 20 },
		{ "16MB", 16 << 20 },
		{ "1G", 1 << 30 },
		{ "1GB", 1 << 30 },
		{ "17179869183GB", 17179869183ULL << 30 },
	};
	(void)state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t v = 1;
		assert_int_equal(config_parse_size(cases[i].text, &v), 0);
		assert_int_equal(v, cases[i].bytes);
	}
}

static void test_size_invalid(void **state)
{
	static const char *const cases[] = {
		"", "kB", "-1", "1.5MB", "1 MB", "1mb", "1kb", "1Mb", "1TB", "1GiB", "0x100", " 1k", "1k ",
	};
	(void)state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t v = 42;
		assert_int_equal(config_parse_size(cases[i], &v), -EINVAL);
		assert_int_equal(v, 42);
	}
}

static void test_size_overflow(void **state)
{
	uint64_t v = 42;
	(void)state;

	assert_int_equal(config_parse_size("17179869184GB", &v), -ERANGE);
	assert_int_equal(config_parse_size("18014398509481984kB", &v), -ERANGE);
	assert_int_equal(config_parse_size("99999999999999999999", &v), -ERANGE);
	assert_int_equal(v, 42);
}

/* ---- Loading ---- */

static void test_full_config(void **state)
{
	static const char yaml[] =
		"listen:\n"                                    /* 1 */
		"  - host: 0.0.0.0\n"                          /* 2 */
		"    port: 7000\n"                             /* 3 */
		"  - host: \"::1\"\n"                          /* 4 */
		"workers: 3\n"                                 /* 5 */
		"log:\n"                                       /* 6 */
		"  level: debug\n"                             /* 7 */
		"  format: json\n"                             /* 8 */
		"  target: file:/var/log/tusk.log\n"           /* 9 */
		"services:\n"                                  /* 10 */
		"  primary:\n"                                 /* 11 */
		"    hosts: [\"db1.example:5433\", db2, \"[fd00::1]:6000\", \"[::1]\"]\n"
		"  replica:\n"                                 /* 13 */
		"    hosts:\n"                                 /* 14 */
		"      - 10.0.0.9:5432\n"                      /* 15 */
		"pools:\n"                                     /* 16 */
		"  - database: app\n"                          /* 17 */
		"    user: alice\n"                            /* 18 */
		"    service: replica\n"                       /* 19 */
		"    mode: transaction\n"                      /* 20 */
		"    size: 7\n"                                /* 21 */
		"    server_user: app_rw\n"                    /* 22 */
		"    server_password: \"s3:cret\"\n"           /* 23 */
		"    server_database: app_prod\n"              /* 24 */
		"  - database: \"*\"\n"                        /* 25 */
		"    service: primary\n"                       /* 26 */
		"    mode: statement\n"                        /* 27 */
		"pool_wait_timeout: 250ms\n"
		"server_connect_timeout: 2s\n"
		"server_reset_timeout: 1m\n"
		"client_login_timeout: 1h\n"
		"server_idle_timeout: 0\n"
		"pool_idle_timeout: 90s\n"
		"server_reset_query: \"\"\n"
		"max_message_size: 1MB\n"
		"buffer_size: 16kB\n"
		"max_client_connections: 42\n";
	struct result r;
	const struct tusk_config *c;
	(void)state;

	load_text(&r, yaml);
	assert_string_equal(r.errs, "");
	assert_int_equal(r.n, 0);
	c = r.cfg;
	assert_string_equal(c->path, r.path);

	assert_int_equal(c->nlisten, 2);
	assert_string_equal(c->listen[0].host, "0.0.0.0");
	assert_int_equal(c->listen[0].port, 7000);
	assert_string_equal(c->listen[1].host, "::1");
	assert_int_equal(c->listen[1].port, 6432);

	assert_int_equal(c->workers, 3);
	assert_int_equal(c->log.level, LOG_DEBUG);
	assert_int_equal(c->log.format, LOG_FORMAT_JSON);
	assert_string_equal(c->log.target, "file:/var/log/tusk.log");

	assert_int_equal(c->nservices, 2);
	assert_string_equal(c->services[0].name, "primary");
	assert_int_equal(c->services[0].nhosts, 4);
	assert_string_equal(c->services[0].hosts[0].host, "db1.example");
	assert_int_equal(c->services[0].hosts[0].port, 5433);
	assert_string_equal(c->services[0].hosts[1].host, "db2");
	assert_int_equal(c->services[0].hosts[1].port, 5432);
	assert_string_equal(c->services[0].hosts[2].host, "fd00::1");
	assert_int_equal(c->services[0].hosts[2].port, 6000);
	assert_string_equal(c->services[0].hosts[3].host, "::1");
	assert_int_equal(c->services[0].hosts[3].port, 5432);
	assert_string_equal(c->services[1].name, "replica");
	assert_int_equal(c->services[1].nhosts, 1);
	assert_string_equal(c->services[1].hosts[0].host, "10.0.0.9");
	assert_int_equal(c->services[1].hosts[0].port, 5432);

	assert_int_equal(c->npools, 2);
	assert_string_equal(c->pools[0].database, "app");
	assert_string_equal(c->pools[0].user, "alice");
	assert_string_equal(c->pools[0].service_name, "replica");
	assert_ptr_equal(c->pools[0].service, &c->services[1]);
	assert_int_equal(c->pools[0].mode, POOL_MODE_TRANSACTION);
	assert_int_equal(c->pools[0].size, 7);
	assert_string_equal(c->pools[0].server_user, "app_rw");
	assert_string_equal(c->pools[0].server_password, "s3:cret");
	assert_string_equal(c->pools[0].server_database, "app_prod");
	assert_int_equal(c->pools[0].line, 17);
	assert_string_equal(c->pools[1].database, "*");
	assert_string_equal(c->pools[1].user, "*");
	assert_string_equal(c->pools[1].service_name, "primary");
	assert_ptr_equal(c->pools[1].service, &c->services[0]);
	assert_int_equal(c->pools[1].mode, POOL_MODE_STATEMENT);
	assert_int_equal(c->pools[1].size, 20);
	assert_null(c->pools[1].server_user);
	assert_null(c->pools[1].server_password);
	assert_null(c->pools[1].server_database);
	assert_int_equal(c->pools[1].line, 25);

	assert_int_equal(c->pool_wait_timeout_ms, 250);
	assert_int_equal(c->server_connect_timeout_ms, 2000);
	assert_int_equal(c->server_reset_timeout_ms, 60000);
	assert_int_equal(c->client_login_timeout_ms, 3600000);
	assert_int_equal(c->server_idle_timeout_ms, 0);
	assert_int_equal(c->pool_idle_timeout_ms, 90000);
	assert_string_equal(c->server_reset_query, "");
	assert_int_equal(c->max_message_size, 1 << 20);
	assert_int_equal(c->buffer_size, 16 << 10);
	assert_int_equal(c->max_client_connections, 42);
	release(&r);
}

static void test_defaults(void **state)
{
	struct result r;
	const struct tusk_config *c;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	(void)state;

	load_text(&r, "services:\n  only:\n    hosts: [db]\npools:\n  - {}\n");
	assert_string_equal(r.errs, "");
	c = r.cfg;

	assert_int_equal(c->nlisten, 1);
	assert_string_equal(c->listen[0].host, "127.0.0.1");
	assert_int_equal(c->listen[0].port, 6432);
	assert_int_equal(c->workers, cpus < 1 ? 1 : cpus > 256 ? 256 : cpus);
	assert_int_equal(c->log.level, LOG_INFO);
	assert_int_equal(c->log.format, LOG_FORMAT_TEXT);
	assert_string_equal(c->log.target, "stderr");

	/* A rule with neither database nor user matches everything, on the only service. */
	assert_int_equal(c->npools, 1);
	assert_string_equal(c->pools[0].database, "*");
	assert_string_equal(c->pools[0].user, "*");
	assert_string_equal(c->pools[0].service_name, "only");
	assert_ptr_equal(c->pools[0].service, &c->services[0]);
	assert_int_equal(c->pools[0].mode, POOL_MODE_SESSION);
	assert_int_equal(c->pools[0].size, 20);
	assert_null(c->pools[0].server_user);
	assert_null(c->pools[0].server_password);
	assert_null(c->pools[0].server_database);
	assert_int_equal(c->pools[0].line, 5);

	assert_int_equal(c->pool_wait_timeout_ms, 30000);
	assert_int_equal(c->server_connect_timeout_ms, 5000);
	assert_int_equal(c->server_reset_timeout_ms, 5000);
	assert_int_equal(c->client_login_timeout_ms, 15000);
	assert_int_equal(c->server_idle_timeout_ms, 600000);
	assert_int_equal(c->pool_idle_timeout_ms, 3600000);
	assert_string_equal(c->server_reset_query, "DISCARD ALL");
	assert_int_equal(c->max_message_size, 64 << 20);
	assert_int_equal(c->buffer_size, 64 << 10);
	assert_int_equal(c->max_client_connections, 10000);
	release(&r);
}

static void test_workers_auto_and_nulls(void **state)
{
	struct result r;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	(void)state;

	/* A key set to null is the same as leaving it out. */
	load_text(&r, BASE "    server_user: ~\n    service:\nworkers: auto\nserver_reset_query:\nlog:\n");
	assert_string_equal(r.errs, "");
	assert_int_equal(r.cfg->workers, cpus < 1 ? 1 : cpus > 256 ? 256 : cpus);
	assert_null(r.cfg->pools[0].server_user);
	assert_string_equal(r.cfg->pools[0].service_name, "main");
	assert_string_equal(r.cfg->server_reset_query, "DISCARD ALL");
	assert_string_equal(r.cfg->log.target, "stderr");
	release(&r);
}

/* ---- Errors ---- */

static void test_error_missing_file(void **state)
{
	struct result r;
	(void)state;

	strcpy(r.path, "/nonexistent/tusk.yaml");
	load_path(&r, r.path);
	assert_int_equal(r.n, 1);
	assert_string_equal(r.errs, "/nonexistent/tusk.yaml:0: -: cannot open: No such file or directory\n");
	release(&r);
}

static void test_error_syntax(void **state)
{
	(void)state;
	one_error(BASE "workers: [1, 2\n", "7: -: did not find expected ',' or ']' (while parsing a flow sequence at line 6)");
	one_error(BASE "  bad indent: 1\n", "6: -: did not find expected '-' indicator (while parsing a block collection at line 5)");
	one_error(BASE "x: \xff\n", "6: -: invalid leading UTF-8 octet at byte 76");
}

/* Deep nesting is refused at the first level too deep (FILE:LINE), in block and flow style,
 * and fast: a 1 MB file of "[" is turned down without libyaml scanning all of it. */
static void test_error_too_deep(void **state)
{
	(void)state;
	char yaml[8192];
	size_t n = (size_t)snprintf(yaml, sizeof yaml, "%s", BASE "x: ");
	for (int i = 0; i < 65; i++)
		yaml[n++] = '[';
	for (int i = 0; i < 65; i++)
		yaml[n++] = ']';
	memcpy(yaml + n, "\n", 2);
	one_error(yaml, "6: -: nested deeper than 64 levels");

	/* 64 levels in all (the top mapping is one) are fine: the only error is the unknown key. */
	n = (size_t)snprintf(yaml, sizeof yaml, "%s", BASE "zqzq: ");
	for (int i = 0; i < 63; i++)
		yaml[n++] = '[';
	for (int i = 0; i < 63; i++)
		yaml[n++] = ']';
	memcpy(yaml + n, "\n", 2);
	one_error(yaml, "6: zqzq: unknown key");

	/* block style: one mapping per line, indented */
	n = (size_t)snprintf(yaml, sizeof yaml, "%s", BASE "x:\n");
	for (int i = 1; i <= 70; i++)
		n += (size_t)snprintf(yaml + n, sizeof yaml - n, "%*sk%d:\n", i, "", i);
	one_error(yaml, "70: -: nested deeper than 64 levels"); /* k63 opens level 65 */

	size_t big = 1u << 20;
	char *deep = malloc(big + 1);
	assert_non_null(deep);
	n = (size_t)snprintf(deep, big, "%s", BASE "x: ");
	memset(deep + n, '[', big - n);
	deep[big] = '\0';
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	one_error(deep, "6: -: nested deeper than 64 levels");
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double took = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	assert_true(took < 0.5);
	free(deep);
}

static void test_error_shape(void **state)
{
	(void)state;
	one_error("- a\n- b\n", "1: -: expected a mapping of keys at the top level, found a sequence");
	one_error(BASE "---\nworkers: 1\n", "7: -: only one YAML document is allowed");
	one_error(BASE "? [a]\n: 1\n", "6: -: keys must be strings");
}

static void test_error_unknown_key(void **state)
{
	(void)state;
	one_error(BASE "bogus: 1\n", "6: bogus: unknown key");
	one_error(BASE "pool_wait_timout: 5s\n", "6: pool_wait_timout: unknown key (did you mean \"pool_wait_timeout\"?)");
	one_error(BASE "    sise: 3\n", "6: pools[0].sise: unknown key (did you mean \"size\"?)");
	one_error(BASE "log:\n  colour: true\n", "7: log.colour: unknown key");
	one_error(BASE "listen:\n  - host: a\n    ssl: on\n", "8: listen[0].ssl: unknown key");
	one_error(BASE "listen:\n  - host: a\n    tls: on\n",
		  "8: listen[0].tls: expected one of disable, allow, require, verify-ca, verify-full, found \"on\"");
	one_error(BASE "listen:\n  - host: a\n    tls: require\n", "7: listen[0]: tls require needs tls_cert_file and tls_key_file");
	one_error(BASE "listen:\n  - host: a\n    tls: verify-ca\n    tls_cert_file: c\n    tls_key_file: k\n",
		  "7: listen[0]: tls verify-ca needs tls_ca_file to check client certificates");
	one_error("services:\n  main:\n    hosts: [db]\n    tls: allow\npools: [{}]\n",
		  "4: services.main.tls: expected one of disable, prefer, require, verify-ca, verify-full, found \"allow\"");
	one_error("services:\n  main:\n    hosts: [db]\n    tls_key_file: k\npools: [{}]\n",
		  "2: services.main: tls_cert_file and tls_key_file go together");
	one_error(BASE "    port: 1\n", "6: pools[0].port: unknown key: PgBouncer's port is services.NAME.hosts (host:port) in tusk");
	one_error("services:\n  main:\n    hosts: [db]\n    weight: 2\npools: [{}]\n",
		  "4: services.main.weight: unknown key");
}

static void test_error_duplicate_key(void **state)
{
	(void)state;
	one_error(BASE "workers: 1\nworkers: 2\n", "7: workers: duplicate key (first at line 6)");
	one_error(BASE "    server_database: b\n", "6: pools[0].server_database: duplicate key (first at line 5)");
	one_error("services:\n  a:\n    hosts: [x]\n  a:\n    hosts: [y]\npools: [{}]\n",
		  "4: services.a: duplicate key (first at line 2)");
	one_error(BASE "listen:\n  - host: a\n  - host: a\n    port: 6432\n", "8: listen[1]: same address as listen[0]");
}

static void test_error_wrong_type(void **state)
{
	(void)state;
	one_error(BASE "workers: [1]\n", "6: workers: expected an integer or \"auto\", found a sequence");
	one_error(BASE "workers: many\n", "6: workers: expected an integer or \"auto\", found \"many\"");
	one_error(BASE "    size: abc\n", "6: pools[0].size: expected an integer, found \"abc\"");
	one_error(BASE "    size: 2.5\n", "6: pools[0].size: expected an integer, found \"2.5\"");
	one_error(BASE "    mode: {a: 1}\n", "6: pools[0].mode: expected one of session, transaction, statement, found a mapping");
	one_error(BASE "    mode: pipelined\n",
		  "6: pools[0].mode: expected one of session, transaction, statement, found \"pipelined\"");
	one_error(BASE "pool_wait_timeout: soon\n",
		  "6: pool_wait_timeout: expected a duration such as 250ms, 30s, 5m, 1h or 2d, found \"soon\"");
	one_error(BASE "buffer_size: 1.5MB\n",
		  "6: buffer_size: expected a size such as 512, 64kB, 16MB or 1GB, found \"1.5MB\"");
	one_error(BASE "server_reset_query: [a]\n", "6: server_reset_query: expected a string, found a sequence");
	one_error(BASE "log: stderr\n", "6: log: expected a mapping, found \"stderr\"");
	one_error(BASE "listen: 127.0.0.1:6432\n", "6: listen: expected a sequence of {host, port}, found \"127.0.0.1:6432\"");
	one_error(BASE "listen:\n  - 127.0.0.1\n", "7: listen[0]: expected a mapping, found \"127.0.0.1\"");
	one_error("services: [a]\npools: [{}]\n", "1: services: expected a mapping of service names, found a sequence");
	one_error("services:\n  main: db:5432\npools: [{}]\n", "2: services.main: expected a mapping, found \"db:5432\"");
	one_error("services:\n  main:\n    hosts: db\npools: [{}]\n",
		  "3: services.main.hosts: expected a sequence of \"host:port\" or {host, port, weight}, found \"db\"");
	one_error("services:\n  main:\n    hosts: [[db]]\npools: [{}]\n",
		  "3: services.main.hosts[0]: expected \"host:port\" or {host, port, weight}, found a sequence");
	one_error("services:\n  main:\n    hosts: [db]\npools:\n  main: {}\n",
		  "5: pools: expected a sequence of pool rules, found a mapping");
	one_error("services:\n  main:\n    hosts: [db]\npools:\n  - main\n", "5: pools[0]: expected a mapping, found \"main\"");
}

static void test_error_out_of_range(void **state)
{
	(void)state;
	one_error(BASE "workers: 0\n", "6: workers: \"0\" is out of range (1 to 256)");
	one_error(BASE "workers: 257\n", "6: workers: \"257\" is out of range (1 to 256)");
	one_error(BASE "workers: -1\n", "6: workers: \"-1\" is out of range (1 to 256)");
	one_error(BASE "    size: 0\n", "6: pools[0].size: \"0\" is out of range (1 to 10000)");
	one_error(BASE "    size: 99999999999999999999\n",
		  "6: pools[0].size: \"99999999999999999999\" is out of range (1 to 10000)");
	one_error(BASE "max_client_connections: 0\n", "6: max_client_connections: \"0\" is out of range (1 to 1000000)");
	one_error(BASE "pool_wait_timeout: 0\n", "6: pool_wait_timeout: \"0\" is out of range (1ms to 1d)");
	one_error(BASE "server_connect_timeout: 2d\n", "6: server_connect_timeout: \"2d\" is out of range (1ms to 1d)");
	one_error(BASE "server_idle_timeout: 31d\n", "6: server_idle_timeout: \"31d\" is out of range (0 to 30d)");
	one_error(BASE "client_login_timeout: 99999999999999999999s\n",
		  "6: client_login_timeout: \"99999999999999999999s\" is out of range (1ms to 1d)");
	one_error(BASE "buffer_size: 1kB\n", "6: buffer_size: \"1kB\" is out of range (4kB to 16MB)");
	one_error(BASE "buffer_size: 17MB\n", "6: buffer_size: \"17MB\" is out of range (4kB to 16MB)");
	one_error(BASE "max_message_size: 2GB\n", "6: max_message_size: \"2GB\" is out of range (8kB to 1GB)");
	one_error(BASE "max_message_size: 17179869184GB\n",
		  "6: max_message_size: \"17179869184GB\" is out of range (8kB to 1GB)");
	one_error(BASE "    database: \"\"\n", "6: pools[0].database: must be 1 to 63 bytes long, found 0");
	one_error(BASE "    user: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
		  "6: pools[0].user: must be 1 to 63 bytes long, found 64");
	one_error(BASE "    server_user: \"a\\0b\"\n", "6: pools[0].server_user: must not contain NUL bytes");
}

static void test_error_listen(void **state)
{
	(void)state;
	one_error(BASE "listen:\n  - host: a\n    port: 0\n", "8: listen[0].port: \"0\" is out of range (1 to 65535)");
	one_error(BASE "listen:\n  - host: a\n    port: 65536\n", "8: listen[0].port: \"65536\" is out of range (1 to 65535)");
	one_error(BASE "listen:\n  - port: 6000\n", "7: listen[0].host: required key is missing");
	one_error(BASE "listen: []\n", "6: listen: list at least one address");
}

static void test_error_host_port(void **state)
{
	static const struct {
		const char *host;
		const char *message;
	} cases[] = {
		{ "db:abc", "port must be a number, found \"db:abc\"" },
		{ "db:", "port must be a number, found \"db:\"" },
		{ "db:-1", "port must be a number, found \"db:-1\"" },
		{ "db:0", "port must be between 1 and 65535, found \"db:0\"" },
		{ "db:65536", "port must be between 1 and 65535, found \"db:65536\"" },
		{ ":5432", "empty host, found \":5432\"" },
		{ "::1", "put IPv6 addresses in brackets, as in [::1]:5432, found \"::1\"" },
		{ "[::1", "missing ] after an IPv6 address, found \"[::1\"" },
		{ "[::1]5432", "expected :PORT after ], found \"[::1]5432\"" },
		{ "[]:5432", "empty host, found \"[]:5432\"" },
		{ "", "empty host, found \"\"" },
	};
	(void)state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char yaml[256], want[256];
		snprintf(yaml, sizeof(yaml), "services:\n  main:\n    hosts:\n      - ok\n      - \"%s\"\npools: [{}]\n",
			 cases[i].host);
		snprintf(want, sizeof(want), "5: services.main.hosts[1]: %s", cases[i].message);
		one_error(yaml, want);
	}
	one_error("services:\n  main:\n    hosts: []\npools: [{}]\n", "3: services.main.hosts: list at least one host");
	one_error("services:\n  main: {}\npools: [{}]\n",
		  "2: services.main.hosts: required key is missing (or give dns: NAME, or srv: _postgresql._tcp.NAME)");
}

/* The three sources of backends and their keys (docs/backends.md). */
static void test_service_discovery(void **state)
{
	const char *yaml = "services:\n"
			   "  a:\n"
			   "    hosts: [\"db1:5433\", {host: db2, port: 6000, weight: 3}, {host: \"::1\"}]\n"
			   "    max_per_host: 4\n"
			   "  b:\n"
			   "    dns: db.example\n"
			   "    port: 6543\n"
			   "    nameservers: [\"127.0.0.1:5353\", \"10.0.0.2\", \"[::1]:53\", \"[fd00::2]\"]\n"
			   "    dns_min_ttl: 250ms\n"
			   "    dns_max_ttl: 1m\n"
			   "  c:\n"
			   "    srv: _postgresql._tcp.db.example\n"
			   "pools:\n"
			   "  - {database: w, service: a, mode: transaction, target_session_attrs: read-write-split, read_your_writes: false}\n"
			   "  - {database: x, service: b, target_session_attrs: prefer-standby}\n"
			   "  - {database: y, service: c}\n";
	struct result r;
	const struct tusk_config *c;
	(void)state;

	load_text(&r, yaml);
	assert_string_equal(r.errs, "");
	c = r.cfg;
	assert_int_equal(c->services[0].discovery, CONFIG_DISCOVERY_HOSTS);
	assert_int_equal(c->services[0].nhosts, 3);
	assert_int_equal(c->services[0].hosts[0].port, 5433);
	assert_int_equal(c->services[0].hosts[0].weight, 1);
	assert_string_equal(c->services[0].hosts[1].host, "db2");
	assert_int_equal(c->services[0].hosts[1].port, 6000);
	assert_int_equal(c->services[0].hosts[1].weight, 3);
	assert_string_equal(c->services[0].hosts[2].host, "::1");
	assert_int_equal(c->services[0].hosts[2].port, 5432);
	assert_int_equal(c->services[0].max_per_host, 4);
	assert_int_equal(c->services[0].dns_min_ttl_ms, 5000);
	assert_int_equal(c->services[0].dns_max_ttl_ms, 300000);
	assert_int_equal(c->services[0].nnameservers, 0);

	assert_int_equal(c->services[1].discovery, CONFIG_DISCOVERY_DNS);
	assert_string_equal(c->services[1].dns, "db.example");
	assert_int_equal(c->services[1].port, 6543);
	assert_int_equal(c->services[1].nhosts, 0);
	assert_int_equal(c->services[1].nnameservers, 4);
	assert_string_equal(c->services[1].nameservers[0].host, "127.0.0.1");
	assert_int_equal(c->services[1].nameservers[0].port, 5353);
	assert_int_equal(c->services[1].nameservers[1].port, 53);
	assert_string_equal(c->services[1].nameservers[2].host, "::1");
	assert_int_equal(c->services[1].nameservers[2].port, 53);
	assert_string_equal(c->services[1].nameservers[3].host, "fd00::2");
	assert_int_equal(c->services[1].nameservers[3].port, 53);
	assert_int_equal(c->services[1].dns_min_ttl_ms, 250);
	assert_int_equal(c->services[1].dns_max_ttl_ms, 60000);

	assert_int_equal(c->services[2].discovery, CONFIG_DISCOVERY_SRV);
	assert_string_equal(c->services[2].srv, "_postgresql._tcp.db.example");

	assert_int_equal(c->pools[0].target_session_attrs, CONFIG_TARGET_READ_WRITE_SPLIT);
	assert_int_equal(c->pools[0].read_your_writes, 0);
	assert_int_equal(c->pools[1].target_session_attrs, CONFIG_TARGET_PREFER_STANDBY);
	assert_int_equal(c->pools[2].target_session_attrs, CONFIG_TARGET_ANY);
	assert_int_equal(c->pools[2].read_your_writes, 1);
	assert_string_equal(config_target_name(CONFIG_TARGET_READ_WRITE_SPLIT), "read-write-split");
	assert_string_equal(config_target_name(CONFIG_TARGET_PREFER_STANDBY), "prefer-standby");
	release(&r);
}

static void test_error_service_discovery(void **state)
{
	(void)state;
	one_error("services:\n  main:\n    hosts: [db]\n    dns: db.example\npools: [{}]\n",
		  "2: services.main: give exactly one of hosts, dns and srv (found hosts dns )");
	one_error("services:\n  main:\n    srv: _postgresql._tcp.x\n    port: 5433\npools: [{}]\n",
		  "4: services.main.port: only with dns: SRV records carry their own ports");
	one_error("services:\n  main:\n    hosts: [db]\n    port: 5433\npools: [{}]\n",
		  "4: services.main.port: only with dns: give each host its port, as in db1:5433");
	one_error("services:\n  main:\n    dns: db.example\n    load_balance_hosts: disable\npools: [{}]\n",
		  "2: services.main.load_balance_hosts: disable orders a hosts list; a name's addresses have no order");
	one_error("services:\n  main:\n    hosts: [db]\n    load_balance_hosts: random\npools: [{}]\n",
		  "4: services.main.load_balance_hosts: expected one of round-robin, disable, found \"random\"");
	one_error("services:\n  main:\n    srv: db.example\npools: [{}]\n",
		  "3: services.main.srv: expected _SERVICE._tcp.NAME, as in _postgresql._tcp.db.example, found \"db.example\"");
	one_error("services:\n  main:\n    srv: _pg._udp.db\npools: [{}]\n",
		  "3: services.main.srv: expected _SERVICE._tcp.NAME, as in _postgresql._tcp.db.example, found \"_pg._udp.db\"");
	one_error("services:\n  main:\n    dns: db..example\npools: [{}]\n",
		  "3: services.main.dns: empty label in DNS name, found \"db..example\"");
	one_error("services:\n  main:\n    dns: \"db example\"\npools: [{}]\n",
		  "3: services.main.dns: a DNS name has only letters, digits, '-', '_' and '.', found \"db example\"");
	one_error("services:\n  main:\n    dns: db\n    nameservers: [ns1.example]\npools: [{}]\n",
		  "4: services.main.nameservers[0]: a nameserver must be a numeric IPv4 or IPv6 address, found \"ns1.example\"");
	one_error("services:\n  main:\n    dns: db\n    nameservers: []\npools: [{}]\n",
		  "4: services.main.nameservers: list at least one nameserver, or leave the key out for the system's");
	one_error("services:\n  main:\n    dns: db\n    dns_min_ttl: 10m\n    dns_max_ttl: 1m\npools: [{}]\n",
		  "2: services.main.dns_min_ttl: 600000ms is larger than dns_max_ttl (60000ms)");
	one_error("services:\n  main:\n    hosts: [{host: db, weight: 70000}]\npools: [{}]\n",
		  "3: services.main.hosts[0].weight: \"70000\" is out of range (0 to 65535)");
	one_error("services:\n  main:\n    hosts: [{port: 5433}]\npools: [{}]\n",
		  "3: services.main.hosts[0].host: required key is missing");
	one_error("services:\n  main:\n    hosts: [{host: db, wieght: 2}]\npools: [{}]\n",
		  "3: services.main.hosts[0].wieght: unknown key (did you mean \"weight\"?)");
	one_error("services:\n  main:\n    hosts: [db]\npools: [{target_session_attrs: read-write-split}]\n",
		  "4: pools[0].target_session_attrs: read-write-split needs mode: transaction (found session)");
	one_error("services:\n  main:\n    hosts: [db]\npools: [{target_session_attrs: standby, read_your_writes: true}]\n",
		  "4: pools[0].read_your_writes: only with target_session_attrs: read-write-split");
	one_error("services:\n  main:\n    hosts: [db]\npools: [{target_session_attrs: replica}]\n",
		  "4: pools[0].target_session_attrs: expected one of any, read-write, primary, read-only, standby, prefer-standby, read-write-split, found \"replica\"");
}

static void test_error_services_and_pools(void **state)
{
	(void)state;
	one_error("pools: [{}]\n", "1: services: required key is missing");
	one_error("services:\n  main:\n    hosts: [db]\n", "1: pools: required key is missing");
	one_error("services: {}\npools: [{}]\n", "1: services: define at least one service");
	one_error("services:\n  main:\n    hosts: [db]\npools: []\n", "4: pools: list at least one pool rule");
	one_error("services:\n  main:\n    hosts: [db]\npools: ~\n", "4: pools: expected a sequence of pool rules, found nothing");
	one_error(BASE "    service: nope\n", "6: pools[0].service: unknown service \"nope\"");
	one_error(BASE "    service: mian\n", "6: pools[0].service: unknown service \"mian\" (did you mean \"main\"?)");
	one_error("services:\n  a:\n    hosts: [x]\n  b:\n    hosts: [y]\npools:\n  - user: bob\n",
		  "7: pools[0].service: required when more than one service is defined");
	/* The rule may come before the services it names. */
	{
		struct result r;
		load_text(&r, "pools:\n  - service: main\nservices:\n  main:\n    hosts: [db]\n");
		assert_string_equal(r.errs, "");
		assert_ptr_equal(r.cfg->pools[0].service, &r.cfg->services[0]);
		release(&r);
	}
	one_error(BASE "  - database: app\n", "6: pools[1]: never matches: pools[0] (line 5) comes first and matches it all");
	one_error("services:\n  " "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:\n    hosts: [db]\npools: [{}]\n",
		  "2: services.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa: "
		  "service names must be 1 to 63 bytes, without NUL");
}

static void test_error_log(void **state)
{
	(void)state;
	one_error(BASE "log:\n  level: verbose\n",
		  "7: log.level: expected one of error, warn, info, debug, found \"verbose\"");
	one_error(BASE "log:\n  format: xml\n", "7: log.format: expected one of text, json, found \"xml\"");
	one_error(BASE "log:\n  target: stdout\n", "7: log.target: expected stderr, syslog or file:PATH, found \"stdout\"");
	one_error(BASE "log:\n  target: \"file:\"\n",
		  "7: log.target: file: needs a path, as in file:/var/log/tusk.log, found \"file:\"");
}

static void test_admin_http(void **state)
{
	struct result r;
	char host[64];
	int port = 0;
	(void)state;

	load_text(&r, BASE);
	assert_int_equal(r.n, 0);
	assert_null(r.cfg->admin.http); /* absent: no HTTP endpoint */
	release(&r);
	load_text(&r, BASE "admin:\n  http: 127.0.0.1:6490\n");
	assert_int_equal(r.n, 0);
	assert_string_equal(r.cfg->admin.http, "127.0.0.1:6490");
	release(&r);
	one_error(BASE "admin:\n  http: 6490\n",
		  "7: admin.http: expected HOST:PORT, as in 127.0.0.1:6490 or [::1]:6490, found \"6490\"");
	one_error(BASE "admin:\n  http: \"localhost:0\"\n",
		  "7: admin.http: expected HOST:PORT, as in 127.0.0.1:6490 or [::1]:6490, found \"localhost:0\"");

	assert_int_equal(config_split_host_port("[::1]:9127", host, sizeof host, &port), 0);
	assert_string_equal(host, "::1");
	assert_int_equal(port, 9127);
	assert_int_equal(config_split_host_port("localhost:80", host, sizeof host, &port), 0);
	assert_string_equal(host, "localhost");
	assert_int_equal(port, 80);
	assert_int_equal(config_split_host_port("::1:80", host, sizeof host, &port), -EINVAL);
	assert_int_equal(config_split_host_port(":80", host, sizeof host, &port), -EINVAL);
	assert_int_equal(config_split_host_port("h:65536", host, sizeof host, &port), -EINVAL);
	assert_int_equal(config_split_host_port("h:12x", host, sizeof host, &port), -EINVAL);
	assert_int_equal(config_split_host_port("[]:80", host, sizeof host, &port), -EINVAL);
}

static void test_error_secret_not_echoed(void **state)
{
	struct result r;
	char yaml[2048];
	(void)state;

	snprintf(yaml, sizeof(yaml), BASE "    server_password: %01100d\n", 7);
	load_text(&r, yaml);
	assert_int_equal(r.n, 1);
	check_error(&r, "6: pools[0].server_password: must be 0 to 1024 bytes long, found 1100");
	assert_null(strstr(r.errs, "00007"));
	release(&r);
}

/* All errors are reported, sorted by line, however the loader happened to find them. */
static void test_many_errors(void **state)
{
	static const char yaml[] =
		"pools:\n"                  /* 1 */
		"  - service: nope\n"       /* 2: unknown service, found after services */
		"    size: 0\n"             /* 3 */
		"workers: lots\n"           /* 4 */
		"services:\n"               /* 5 */
		"  main:\n"                 /* 6 */
		"    hosts: [\"db:99999\"]\n" /* 7 */
		"log:\n"                    /* 8 */
		"  level: loud\n"           /* 9 */
		"bogus: 1\n"                /* 10 */
		"bogus: 2\n";               /* 11: unknown and duplicate */
	struct result r;
	const char *p;
	(void)state;

	load_text(&r, yaml);
	assert_int_equal(r.n, 7);
	check_error(&r, "2: pools[0].service: unknown service \"nope\"");
	check_error(&r, "3: pools[0].size: \"0\" is out of range (1 to 10000)");
	check_error(&r, "4: workers: expected an integer or \"auto\", found \"lots\"");
	check_error(&r, "7: services.main.hosts[0]: port must be between 1 and 65535, found \"db:99999\"");
	check_error(&r, "9: log.level: expected one of error, warn, info, debug, found \"loud\"");
	check_error(&r, "10: bogus: unknown key");
	check_error(&r, "11: bogus: duplicate key (first at line 10)");
	/* Sorted: each line's number is not smaller than the one before. */
	p = r.errs;
	for (int last = 0; *p;) {
		int line = atoi(p + strlen(r.path) + 1);
		assert_true(line >= last);
		last = line;
		p = strchr(p, '\n') + 1;
	}
	release(&r);
}

static void test_empty_file(void **state)
{
	struct result r;
	(void)state;

	load_text(&r, "");
	assert_int_equal(r.n, 2);
	check_error(&r, "1: services: required key is missing");
	check_error(&r, "1: pools: required key is missing");
	release(&r);
}

/* ---- Using a configuration ---- */

static void test_match_pool(void **state)
{
	static const char yaml[] =
		"services:\n  main:\n    hosts: [db]\n"
		"pools:\n"
		"  - {database: app, user: alice, size: 1}\n"
		"  - {database: app, size: 2}\n"
		"  - {user: bob, size: 3}\n"
		"  - {database: other, user: bob, size: 9}\n"
		"  - {size: 4}\n";
	struct result r;
	const struct tusk_config *c;
	(void)state;

	/* {other, bob} can never match behind {*, bob}: an error. Without it, check matching. */
	load_text(&r, yaml);
	assert_int_equal(r.n, 1);
	check_error(&r, "8: pools[3]: never matches: pools[2] (line 7) comes first and matches it all");
	release(&r);

	load_text(&r, "services:\n  main:\n    hosts: [db]\n"
		      "pools:\n"
		      "  - {database: app, user: alice, size: 1}\n"
		      "  - {database: app, size: 2}\n"
		      "  - {user: bob, size: 3}\n"
		      "  - {size: 4}\n");
	assert_string_equal(r.errs, "");
	c = r.cfg;
	assert_int_equal(config_match_pool(c, "app", "alice")->size, 1);
	assert_int_equal(config_match_pool(c, "app", "bob")->size, 2); /* first match wins over {*, bob} */
	assert_int_equal(config_match_pool(c, "app", "carol")->size, 2);
	assert_int_equal(config_match_pool(c, "other", "bob")->size, 3);
	assert_int_equal(config_match_pool(c, "other", "alice")->size, 4);
	assert_int_equal(config_match_pool(c, "*", "x")->size, 4);
	assert_int_equal(config_match_pool(c, "application", "alice")->size, 4); /* no prefix matching */
	release(&r);

	load_text(&r, "services:\n  main:\n    hosts: [db]\npools:\n  - {database: app}\n");
	assert_string_equal(r.errs, "");
	assert_non_null(config_match_pool(r.cfg, "app", "anyone"));
	assert_null(config_match_pool(r.cfg, "other", "anyone"));
	release(&r);
}

static void test_pool_mode_name(void **state)
{
	(void)state;
	assert_string_equal(config_pool_mode_name(POOL_MODE_SESSION), "session");
	assert_string_equal(config_pool_mode_name(POOL_MODE_TRANSACTION), "transaction");
	assert_string_equal(config_pool_mode_name(POOL_MODE_STATEMENT), "statement");
	assert_string_equal(config_pool_mode_name((enum pool_mode)99), "unknown");
}

static void collect_key(void *arg, const char *key, const char *value, const char *def, bool reloadable)
{
	FILE *f = arg;
	fprintf(f, "%s=%s|%s|%d\n", key, value, def, reloadable);
}

/* admin: user lists, client_auth and its default, errors, and SHOW CONFIG's description. */
static void test_admin(void **state)
{
	static const char base[] = "services:\n  main:\n    hosts: [db1]\npools:\n  - database: app\n";
	struct result r;
	char yaml[512], *out = NULL;
	size_t size;
	FILE *f;

	(void)state;
	load_text(&r, base);
	assert_int_equal(r.n, 0);
	assert_int_equal(r.cfg->admin.nusers, 0);
	assert_int_equal(r.cfg->admin.nstats_users, 0);
	assert_int_equal(r.cfg->admin.client_auth, CONFIG_AUTH_SCRAM);
	release(&r);

	snprintf(yaml, sizeof yaml, "%sadmin:\n  users: [root, ops]\n  stats_users: [mon]\n  client_auth: md5\n", base);
	load_text(&r, yaml);
	assert_int_equal(r.n, 0);
	assert_int_equal(r.cfg->admin.nusers, 2);
	assert_string_equal(r.cfg->admin.users[1], "ops");
	assert_true(config_name_listed(r.cfg->admin.users, r.cfg->admin.nusers, "root"));
	assert_false(config_name_listed(r.cfg->admin.users, r.cfg->admin.nusers, "mon"));
	assert_true(config_name_listed(r.cfg->admin.stats_users, r.cfg->admin.nstats_users, "mon"));
	assert_int_equal(r.cfg->admin.client_auth, CONFIG_AUTH_MD5);
	f = open_memstream(&out, &size);
	assert_non_null(f);
	config_describe(r.cfg, collect_key, f);
	fclose(f);
	assert_non_null(strstr(out, "admin.users=root,ops||1\n"));
	assert_non_null(strstr(out, "admin.client_auth=md5|scram-sha-256|1\n"));
	assert_non_null(strstr(out, "pool_wait_timeout=30000ms|30s|1\n"));
	assert_non_null(strstr(out, "buffer_size=65536|64kB|0\n"));
	assert_non_null(strstr(out, "listen=127.0.0.1:6432||1\n"));
	free(out);
	release(&r);

	snprintf(yaml, sizeof yaml, "%sadmin:\n  users: root\n", base);
	one_error(yaml, "7: admin.users: expected a sequence of user names, found \"root\"");
	snprintf(yaml, sizeof yaml, "%sadmin:\n  stats_users: [\"\"]\n", base);
	one_error(yaml, "7: admin.stats_users[0]: must be 1 to 63 bytes long without NUL bytes");
}

static void test_check_reload(void **state)
{
	struct result a, b;
	char *out;
	size_t size;
	FILE *f;
	(void)state;

	load_text(&a, BASE "workers: 2\n");
	load_text(&b, BASE "    mode: transaction\nworkers: 2\npool_wait_timeout: 1s\nlog:\n  level: debug\n");
	assert_int_equal(a.n + b.n, 0);
	assert_int_equal(config_check_reload(a.cfg, b.cfg, NULL), 0);
	release(&b);

	load_text(&b, BASE "workers: 3\nlisten:\n  - host: \"*\"\nbuffer_size: 8kB\nlog:\n  format: json\n");
	assert_int_equal(b.n, 0);
	f = open_memstream(&out, &size);
	assert_int_equal(config_check_reload(a.cfg, b.cfg, f), 3);
	fclose(f);
	/* listen is reloadable: workers open and close listeners themselves. */
	assert_null(strstr(out, "listen: cannot be changed"));
	assert_non_null(strstr(out, ":0: workers: cannot be changed by a reload"));
	assert_non_null(strstr(out, ":0: log.format: cannot be changed by a reload"));
	assert_non_null(strstr(out, ":0: buffer_size: cannot be changed by a reload"));
	free(out);
	/* config_keep_fixed: the running values of restart-only keys win, the rest is new. */
	assert_int_equal(config_keep_fixed(a.cfg, b.cfg), 0);
	assert_int_equal(config_check_reload(a.cfg, b.cfg, NULL), 0);
	assert_int_equal(b.cfg->workers, 2);
	assert_int_equal(b.cfg->log.format, LOG_FORMAT_TEXT);
	assert_string_equal(b.cfg->listen[0].host, "*");
	release(&b);
	release(&a);
}

/* The listener and socket keys PgBouncer has: defaults, values, and what is refused. */
static void test_socket_keys(void **state)
{
	struct result r;
	unsigned gid;
	(void)state;

	load_text(&r, BASE);
	assert_int_equal(r.n, 0);
	assert_int_equal(config_unix_socket_mode(r.cfg), 0777);
	assert_int_equal(config_unix_socket_group(r.cfg, &gid), 0);
	assert_int_equal(gid, (unsigned)-1);
	assert_int_equal(r.cfg->tcp_defer_accept_ms, 0);
	assert_int_equal(r.cfg->tcp_socket_buffer, 0);
	assert_int_equal(r.cfg->listen_backlog, 1024);
	assert_string_equal(r.cfg->log.syslog_ident, "tusk");
	assert_string_equal(r.cfg->log.syslog_facility, "daemon");
	release(&r);
	load_text(&r, BASE "tcp_defer_accept: 45s\ntcp_socket_buffer: 64kB\nlisten_backlog: 128\n");
	assert_int_equal(r.n, 0);
	assert_int_equal(r.cfg->tcp_defer_accept_ms, 45000);
	assert_int_equal(r.cfg->tcp_socket_buffer, 65536);
	assert_int_equal(r.cfg->listen_backlog, 128);
	release(&r);

	load_text(&r, BASE "unix_socket_mode: 0660\nunix_socket_group: root\n");
	assert_int_equal(r.n, 0);
	assert_int_equal(config_unix_socket_mode(r.cfg), 0660);
	assert_int_equal(config_unix_socket_group(r.cfg, &gid), 0);
	assert_int_equal(gid, 0);
	release(&r);
	load_text(&r, BASE "unix_socket_mode: \"700\"\nunix_socket_group: 4242\n"); /* a gid is not looked up */
	assert_int_equal(r.n, 0);
	assert_int_equal(config_unix_socket_mode(r.cfg), 0700);
	assert_int_equal(config_unix_socket_group(r.cfg, &gid), 0);
	assert_int_equal(gid, 4242);
	release(&r);

	one_error(BASE "unix_socket_mode: 0999\n",
		  "6: unix_socket_mode: expected an octal file mode such as 0770 (0 to 0777), found \"0999\"");
	one_error(BASE "unix_socket_mode: 1777\n",
		  "6: unix_socket_mode: expected an octal file mode such as 0770 (0 to 0777), found \"1777\"");
	one_error(BASE "unix_socket_mode: rw-rw----\n",
		  "6: unix_socket_mode: expected an octal file mode such as 0770 (0 to 0777), found \"rw-rw----\"");
	one_error(BASE "log:\n  syslog_facility: kern\n",
		  "7: log.syslog_facility: expected auth, authpriv, daemon, user or local0 to local7, found \"kern\"");
	one_error(BASE "listen_backlog: 0\n", "6: listen_backlog: \"0\" is out of range (1 to 65535)");
	one_error(BASE "tcp_defer_accept: 2h\n", "6: tcp_defer_accept: \"2h\" is out of range (0 to 1h)");
	one_error(BASE "unix_socket_group: tusk_no_such_group\n",
		  "6: unix_socket_group: no such group on this host, found \"tusk_no_such_group\"");
}

/* auth_user / auth_query / auth_cache_ttl: defaults, per-rule overrides, and the $1 rule. */
static void test_auth_query_keys(void **state)
{
	struct result r;
	(void)state;

	load_text(&r, "services:\n  main:\n    hosts: [db]\npools:\n  - user: app\n    auth_user: lookup\n"
		      "    auth_query: \"SELECT u, p FROM f($1)\"\n  - {}\n");
	assert_string_equal(r.errs, "");
	assert_null(r.cfg->auth_user);
	assert_string_equal(r.cfg->auth_query, "SELECT usename, passwd FROM pg_shadow WHERE usename=$1");
	assert_int_equal(r.cfg->auth_cache_ttl_ms, 60000);
	assert_string_equal(config_auth_user(r.cfg, &r.cfg->pools[0]), "lookup");
	assert_string_equal(config_auth_query(r.cfg, &r.cfg->pools[0]), "SELECT u, p FROM f($1)");
	assert_null(config_auth_user(r.cfg, &r.cfg->pools[1])); /* off for this rule */
	assert_ptr_equal(config_auth_query(r.cfg, &r.cfg->pools[1]), r.cfg->auth_query);
	release(&r);

	load_text(&r, BASE "auth_user: pgbouncer\nauth_cache_ttl: 0\nauth_query: \"SELECT $$x$$, $1\"\n");
	assert_string_equal(r.errs, "");
	assert_string_equal(config_auth_user(r.cfg, &r.cfg->pools[0]), "pgbouncer");
	assert_int_equal(r.cfg->auth_cache_ttl_ms, 0);
	release(&r);

	one_error(BASE "auth_query: \"SELECT usename, passwd FROM pg_shadow\"\n",
		  "6: auth_query: must use $1 for the user name (and no other parameter), found "
		  "\"SELECT usename, passwd FROM pg_shadow\"");
	one_error(BASE "auth_query: \"SELECT $1, $2\"\n",
		  "6: auth_query: must use $1 for the user name (and no other parameter), found \"SELECT $1, $2\"");
	one_error(BASE "auth_query: \"SELECT $10\"\n",
		  "6: auth_query: must use $1 for the user name (and no other parameter), found \"SELECT $10\"");
	one_error(BASE "    auth_query: \"\"\n", "6: pools[0].auth_query: must be 1 to 4096 bytes long, found 0");
	one_error(BASE "    auth_user: \"\"\n", "6: pools[0].auth_user: must be 1 to 63 bytes long, found 0");
	one_error(BASE "auth_cache_ttl: 2d\n", "6: auth_cache_ttl: \"2d\" is out of range (0 to 1d)");
}

/* The example shipped at the top of the tree must load as it is. */
static void test_example_loads(void **state)
{
	char path[4096];
	const char *data = getenv("TUSK_TEST_DATA");
	struct result r;
	(void)state;

	/* __FILE__ is absolute under CMake; TUSK_TEST_DATA (tests/unit/data) is the fallback. */
	const char *tests = strstr(__FILE__, "/tests/unit/");
	if (tests) {
		snprintf(path, sizeof(path), "%.*s/tusk.yaml.example", (int)(tests - __FILE__), __FILE__);
	} else {
		assert_non_null(data);
		snprintf(path, sizeof(path), "%s/../../../tusk.yaml.example", data);
	}
	strcpy(r.path, "example");
	load_path(&r, path);
	assert_string_equal(r.errs, "");
	assert_int_equal(r.n, 0);
	assert_int_equal(r.cfg->nservices, 1);
	assert_int_equal(r.cfg->npools, 1);
	release(&r);
}

/* redis.tls: a service's modes without prefer, on/off as aliases, the files, and what goes
 * together (the files' contents are checked by --check: daemon_load_redis_tls). */
static void test_redis_tls(void **state)
{
	struct result r;
	(void)state;

	load_text(&r, BASE "redis:\n  host: r.example\n");
	assert_int_equal(r.n, 0);
	assert_int_equal(r.cfg->redis.tls, CONFIG_STLS_DISABLE);
	release(&r);
	load_text(&r, BASE "redis:\n  host: r.example\n  tls: verify-ca\n  tls_ca_file: /etc/ca.crt\n"
			   "  tls_cert_file: /etc/c.crt\n  tls_key_file: /etc/c.key\n");
	assert_int_equal(r.n, 0);
	assert_int_equal(r.cfg->redis.tls, CONFIG_STLS_VERIFY_CA);
	assert_string_equal(r.cfg->redis.tls_ca_file, "/etc/ca.crt");
	assert_string_equal(r.cfg->redis.tls_cert_file, "/etc/c.crt");
	assert_string_equal(r.cfg->redis.tls_key_file, "/etc/c.key");
	release(&r);
	static const struct {
		const char *word;
		int mode;
	} words[] = {
		{ "on", CONFIG_STLS_VERIFY_FULL },   { "true", CONFIG_STLS_VERIFY_FULL }, { "verify-full", CONFIG_STLS_VERIFY_FULL },
		{ "require", CONFIG_STLS_REQUIRE }, { "off", CONFIG_STLS_DISABLE },      { "disable", CONFIG_STLS_DISABLE },
	};
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
		char yaml[256];
		snprintf(yaml, sizeof(yaml), BASE "redis:\n  host: r.example\n  tls: %s\n", words[i].word);
		load_text(&r, yaml);
		assert_int_equal(r.n, 0);
		assert_int_equal(r.cfg->redis.tls, words[i].mode);
		release(&r);
	}
	one_error(BASE "redis:\n  host: r.example\n  tls: prefer\n", "8: redis.tls: expected one of disable, require, verify-ca, verify-full, off, false, no, on, true, yes, found \"prefer\"");
	one_error(BASE "redis:\n  unix: /tmp/r.sock\n  tls: require\n",
		  "7: redis.tls: TLS goes to host and port, not to a unix socket");
	one_error(BASE "redis:\n  host: r.example\n  tls_ca_file: /etc/ca.crt\n",
		  "7: redis.tls: tls_ca_file, tls_cert_file or tls_key_file without tls");
	one_error(BASE "redis:\n  host: r.example\n  tls: on\n  tls_key_file: /etc/c.key\n",
		  "7: redis.tls_cert_file: tls_cert_file and tls_key_file go together");
}

/* tls_protocols (PgBouncer's syntax, on listeners and services), the TLS 1.3 suites, the
 * curves and the services' ciphers: defaults and malformed values (the cipher and curve names
 * themselves are OpenSSL's to judge: test_tls.c). */
static void test_tls_options(void **state)
{
	struct result r;
	(void)state;

	assert_int_equal(config_tls_protocols("secure"), 12);
	assert_int_equal(config_tls_protocols("tlsv1.3"), 8);
	assert_int_equal(config_tls_protocols("TLSv1.2, tlsv1.3"), 12);
	assert_int_equal(config_tls_protocols("tlsv1.0:tlsv1.3"), 9);
	assert_int_equal(config_tls_protocols("all"), 15);
	assert_int_equal(config_tls_protocols("legacy"), 15);
	assert_int_equal(config_tls_protocols("!tlsv1.0,!tlsv1.1"), 12); /* negation first starts from all */
	assert_int_equal(config_tls_protocols("all,!tlsv1.3"), 7);
	assert_int_equal(config_tls_protocols("tlsv1.4"), -1);
	assert_int_equal(config_tls_protocols("tlsv1.2,"), -1);
	assert_int_equal(config_tls_protocols("!all"), -1);
	assert_int_equal(config_tls_protocols(""), -1);

	load_text(&r, BASE "listen:\n  - host: a\n");
	assert_int_equal(r.n, 0);
	assert_string_equal(r.cfg->listen[0].tls_protocols, "secure");
	assert_null(r.cfg->listen[0].tls13_ciphers);
	assert_null(r.cfg->listen[0].tls_ecdhcurve);
	assert_string_equal(r.cfg->services[0].tls_protocols, "secure");
	assert_null(r.cfg->services[0].tls_ciphers);
	assert_null(r.cfg->services[0].tls13_ciphers);
	release(&r);
	load_text(&r, "services:\n  main:\n    hosts: [db]\n    tls: require\n    tls_protocols: tlsv1.2\n"
		      "    tls_ciphers: ECDHE-RSA-AES128-GCM-SHA256\n    tls13_ciphers: TLS_AES_128_GCM_SHA256\n"
		      "pools: [{}]\nlisten:\n  - host: a\n    tls_protocols: tlsv1.3\n"
		      "    tls13_ciphers: TLS_CHACHA20_POLY1305_SHA256\n    tls_ecdhcurve: P-384\n");
	assert_string_equal(r.errs, "");
	assert_string_equal(r.cfg->services[0].tls_protocols, "tlsv1.2");
	assert_string_equal(r.cfg->services[0].tls_ciphers, "ECDHE-RSA-AES128-GCM-SHA256");
	assert_string_equal(r.cfg->services[0].tls13_ciphers, "TLS_AES_128_GCM_SHA256");
	assert_string_equal(r.cfg->listen[0].tls_protocols, "tlsv1.3");
	assert_string_equal(r.cfg->listen[0].tls13_ciphers, "TLS_CHACHA20_POLY1305_SHA256");
	assert_string_equal(r.cfg->listen[0].tls_ecdhcurve, "P-384");
	release(&r);

	one_error(BASE "listen:\n  - host: a\n    tls_protocols: tlsv1.4\n",
		  "8: listen[0].tls_protocols: expected TLS versions tlsv1.0, tlsv1.1, tlsv1.2, tlsv1.3 or secure (1.2 "
		  "and 1.3), all, legacy (all), separated by commas, each may be negated with ! (and at least one left), "
		  "found \"tlsv1.4\"");
	one_error("services:\n  main:\n    hosts: [db]\n    tls_protocols: \"!all\"\npools: [{}]\n",
		  "4: services.main.tls_protocols: expected TLS versions tlsv1.0, tlsv1.1, tlsv1.2, tlsv1.3 or secure (1.2 "
		  "and 1.3), all, legacy (all), separated by commas, each may be negated with ! (and at least one left), "
		  "found \"!all\"");
	one_error("services:\n  main:\n    hosts: [db]\n    tls13_ciphers: \"\"\npools: [{}]\n",
		  "4: services.main.tls13_ciphers: must be 1 to 4096 bytes long, found 0");
}

/* client_auth: pam and its pam_service: default tusk, the top-level one, a rule's own over it;
 * a name with '/' refused (libpam reads /etc/pam.d/<name>). */
static void test_pam_service_key(void **state)
{
	struct result r;
	(void)state;

	load_text(&r, BASE "    user: alice\n    client_auth: pam\n"
			   "  - user: bob\n    client_auth: pam\n    pam_service: bobs\n");
	assert_int_equal(r.n, 0);
	assert_int_equal(r.cfg->pools[0].client_auth, CONFIG_AUTH_PAM);
	assert_string_equal(config_pam_service(r.cfg, &r.cfg->pools[0]), "tusk");
	assert_string_equal(config_pam_service(r.cfg, &r.cfg->pools[1]), "bobs");
	assert_string_equal(config_pam_service(r.cfg, NULL), "tusk");
	release(&r);
	load_text(&r, BASE "    client_auth: pam\npam_service: pgbouncer\nadmin:\n  client_auth: pam\n");
	assert_int_equal(r.n, 0);
	assert_string_equal(config_pam_service(r.cfg, &r.cfg->pools[0]), "pgbouncer");
	assert_int_equal(r.cfg->admin.client_auth, CONFIG_AUTH_PAM);
	release(&r);
	one_error(BASE "pam_service: ../etc/x\n", "6: pam_service: must be a file name of /etc/pam.d (no '/'), found \"../etc/x\"");
	one_error(BASE "    pam_service: \"\"\n", "6: pools[0].pam_service: must be 1 to 127 bytes long, found 0");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_duration_valid),
		cmocka_unit_test(test_duration_invalid),
		cmocka_unit_test(test_duration_overflow),
		cmocka_unit_test(test_duration_bare_number_refused),
		cmocka_unit_test(test_pool_defaults_inherited),
		cmocka_unit_test(test_active_limit),
		cmocka_unit_test(test_pgbouncer_names_explained),
		cmocka_unit_test(test_ldap_options_key),
		cmocka_unit_test(test_pam_service_key),
		cmocka_unit_test(test_client_connection_limits),
		cmocka_unit_test(test_query_wait_notify),
		cmocka_unit_test(test_query_and_client_idle_timeouts),
		cmocka_unit_test(test_config_set),
		cmocka_unit_test(test_pidfile_key),
		cmocka_unit_test(test_admin_http_port_of_its_own),
		cmocka_unit_test(test_size_valid),
		cmocka_unit_test(test_size_invalid),
		cmocka_unit_test(test_size_overflow),
		cmocka_unit_test(test_full_config),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_workers_auto_and_nulls),
		cmocka_unit_test(test_error_missing_file),
		cmocka_unit_test(test_error_syntax),
		cmocka_unit_test(test_error_too_deep),
		cmocka_unit_test(test_error_shape),
		cmocka_unit_test(test_error_unknown_key),
		cmocka_unit_test(test_error_duplicate_key),
		cmocka_unit_test(test_error_wrong_type),
		cmocka_unit_test(test_error_out_of_range),
		cmocka_unit_test(test_error_listen),
		cmocka_unit_test(test_error_host_port),
		cmocka_unit_test(test_error_services_and_pools),
		cmocka_unit_test(test_service_discovery),
		cmocka_unit_test(test_error_service_discovery),
		cmocka_unit_test(test_error_log),
		cmocka_unit_test(test_admin_http),
		cmocka_unit_test(test_error_secret_not_echoed),
		cmocka_unit_test(test_many_errors),
		cmocka_unit_test(test_empty_file),
		cmocka_unit_test(test_match_pool),
		cmocka_unit_test(test_pool_mode_name),
		cmocka_unit_test(test_check_reload),
		cmocka_unit_test(test_auth_query_keys),
		cmocka_unit_test(test_socket_keys),
		cmocka_unit_test(test_admin),
		cmocka_unit_test(test_example_loads),
		cmocka_unit_test(test_redis_tls),
		cmocka_unit_test(test_tls_options),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
