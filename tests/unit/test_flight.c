/* Unit tests for src/flight/: the cache configuration (top-level defaults, per-rule overrides,
 * --check errors), the cacheability decision (what is cached, each bypass reason, table lists)
 * and the key (every field changes it, parameter order does not, whole keys compared). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "flight/decide.h"
#include "flight/ext.h"
#include "flight/flight.h"
#include "flight/key.h"
#include "flight/l2.h"
#include "flight/lru.h"
#include "flight/policy.h"

/* ---- configuration ---------------------------------------------------------------------- */

static int load_text(const char *yaml, struct tusk_config **cfg, char **errs)
{
	char path[64] = "/tmp/tusk_test_flight_XXXXXX.yaml";
	size_t size, len = strlen(yaml);
	int fd = mkstemps(path, 5), n;
	FILE *f;

	assert_true(fd >= 0);
	assert_int_equal(write(fd, yaml, len), (ssize_t)len);
	close(fd);
	f = open_memstream(errs, &size);
	assert_non_null(f);
	n = config_load(path, f, cfg);
	fclose(f);
	unlink(path);
	return n;
}

#define BASE "services:\n  main:\n    hosts: [\"127.0.0.1:5432\"]\n"

static void test_config_defaults_off(void **state)
{
	struct tusk_config *cfg;
	struct flight_policy p;
	char *errs;

	(void)state;
	if (load_text(BASE "pools:\n  - mode: transaction\n", &cfg, &errs) != 0)
		fail_msg("%s", errs);
	assert_int_equal(cfg->cache, CONFIG_CACHE_OFF);
	assert_int_equal(cfg->cache_ttl_ms, 10000);
	assert_int_equal(cfg->cache_max_result, 1u << 20);
	assert_int_equal(cfg->cache_memory, 64u << 20);
	assert_int_equal(cfg->cache_coalesce_wait_ms, 5000);
	flight_policy_resolve(cfg, &cfg->pools[0], &p);
	assert_int_equal(p.mode, CONFIG_CACHE_OFF);
	config_free(cfg);
	free(errs);
}

static void test_config_rule_inherits_and_overrides(void **state)
{
	struct tusk_config *cfg;
	struct flight_policy p;
	char *errs;

	(void)state;
	assert_int_equal(load_text(BASE "cache: coalesce\ncache_ttl: 30s\ncache_tables: [public.t, u]\n"
				   "cache_exclude_tables: [secret]\n"
				   "pools:\n"
				   "  - database: a\n    mode: transaction\n    cache: on\n    cache_ttl: 2s\n"
				   "    cache_max_result: 64kB\n    cache_coalesce_wait: 250ms\n    cache_tables: [x.y]\n"
				   "  - database: b\n    mode: transaction\n"
				   "  - database: c\n    mode: statement\n" /* statement mode: never cached */
				   "  - database: d\n", /* session mode: cached (serve.c judges its clients) */
				   &cfg, &errs),
			 0);
	flight_policy_resolve(cfg, &cfg->pools[0], &p);
	assert_int_equal(p.mode, CONFIG_CACHE_ON);
	assert_int_equal(p.ttl_ms, 2000);
	assert_int_equal(p.max_result, 64u << 10);
	assert_int_equal(p.coalesce_wait_ms, 250);
	assert_int_equal(p.tables.nallow, 1);
	assert_string_equal(p.tables.allow[0], "x.y");
	assert_int_equal(p.tables.nexclude, 1); /* inherited */
	flight_policy_resolve(cfg, &cfg->pools[1], &p);
	assert_int_equal(p.mode, CONFIG_CACHE_COALESCE);
	assert_int_equal(p.ttl_ms, 30000);
	assert_int_equal(p.tables.nallow, 2);
	assert_string_equal(p.tables.allow[1], "u");
	flight_policy_resolve(cfg, &cfg->pools[2], &p);
	assert_int_equal(p.mode, CONFIG_CACHE_OFF);
	flight_policy_resolve(cfg, &cfg->pools[3], &p);
	assert_int_equal(p.mode, CONFIG_CACHE_COALESCE);
	config_free(cfg);
	free(errs);
}

static void test_config_errors(void **state)
{
	struct tusk_config *cfg;
	char *errs;
	int n;

	(void)state;
	n = load_text(BASE "cache: maybe\ncache_max_result: 10\ncache_tables: [\"a.b.c\", \"\", \"x y\"]\n"
			   "pools:\n  - database: s\n    mode: statement\n    cache: on\n  - database: t\n    mode: transaction\n"
			   "    cache_ttl: 0\n",
		      &cfg, &errs);
	assert_null(cfg);
	assert_int_equal(n, 7);
	assert_non_null(strstr(errs, ":4: cache: expected one of off, coalesce, on, found \"maybe\""));
	assert_non_null(strstr(errs, ":5: cache_max_result: \"10\" is out of range"));
	assert_non_null(strstr(errs, ":6: cache_tables[0]: must be table or schema.table"));
	assert_non_null(strstr(errs, ":6: cache_tables[1]: must be table or schema.table"));
	assert_non_null(strstr(errs, ":6: cache_tables[2]: must be table or schema.table"));
	assert_non_null(strstr(errs, ":8: pools[0].cache: needs mode: transaction or session (found statement)"));
	assert_non_null(strstr(errs, ":13: pools[1].cache_ttl: \"0\" is out of range"));
	free(errs);
}

/* ---- the decision ----------------------------------------------------------------------- */

static enum flight_verdict decide(const char *sql, const struct flight_table_policy *p, struct flight_decision *d)
{
	flight_decide(sql, strlen(sql), p, d);
	return d->verdict;
}

static void test_decide_cached(void **state)
{
	struct flight_decision d;
	static const char *const ok[] = {
		"SELECT a, b FROM t WHERE id = 1",
		"select * from public.t join u using (id) order by 1 limit 5",
		"SELECT x FROM t WHERE x IN (SELECT y FROM u) AND z IS NULL",
		"WITH c AS (SELECT a FROM t) SELECT * FROM c",
		"SELECT 1",
		"SELECT a::text, CASE WHEN a > 1 THEN 'x' ELSE 'y' END, COALESCE(b, 0) FROM t",
		"SELECT * FROM t WHERE a = $1",
		"(SELECT a FROM t) UNION ALL (SELECT a FROM u);",
		"SELECT 'now is the time' FROM t",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		if (decide(ok[i], NULL, &d) != FLIGHT_OK)
			fail_msg("%s: %s", ok[i], flight_verdict_name(d.verdict));
	}
	assert_int_equal(decide("select * from public.t join u using (id) join T on true", NULL, &d), FLIGHT_OK);
	assert_int_equal(d.ntables, 3);
	assert_string_equal(d.tables[0].schema, "public");
	assert_string_equal(d.tables[0].name, "t");
	assert_string_equal(d.tables[1].schema, "");
	assert_string_equal(d.tables[1].name, "u");
	assert_string_equal(d.tables[2].name, "t"); /* unqualified t is another table than public.t */
	assert_int_equal(decide("SELECT a FROM t, t, t", NULL, &d), FLIGHT_OK);
	assert_int_equal(d.ntables, 1);
}

static void test_decide_bypass(void **state)
{
	struct flight_decision d;
	static const struct {
		const char *sql;
		enum flight_verdict want;
	} cases[] = {
		{ "INSERT INTO t VALUES (1)", FLIGHT_NOT_SELECT },
		{ "UPDATE t SET a = 1", FLIGHT_NOT_SELECT },
		{ "SELECT 1; SELECT 2", FLIGHT_NOT_SELECT },
		{ "SELEC 1", FLIGHT_NOT_SELECT },
		{ "", FLIGHT_NOT_SELECT },
		{ "BEGIN", FLIGHT_NOT_SELECT },
		{ "SET search_path = x", FLIGHT_NOT_SELECT },
		{ "EXPLAIN ANALYZE SELECT * FROM t", FLIGHT_NOT_SELECT },
		{ "SELECT * INTO x FROM t", FLIGHT_NOT_SELECT },
		{ "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", FLIGHT_UNKNOWN_NODE },
		{ "SELECT * FROM t FOR UPDATE", FLIGHT_LOCKING },
		{ "SELECT * FROM (SELECT * FROM t FOR SHARE) s", FLIGHT_LOCKING },
		{ "SELECT now()", FLIGHT_CALL },
		{ "SELECT count(*) FROM t", FLIGHT_CALL },
		{ "SELECT random() FROM t", FLIGHT_CALL },
		{ "SELECT nextval('s')", FLIGHT_CALL },
		{ "SELECT CURRENT_TIMESTAMP FROM t", FLIGHT_CALL },
		{ "SELECT current_user", FLIGHT_CALL },
		{ "SELECT * FROM generate_series(1, 3)", FLIGHT_CALL },
		{ "SELECT * FROM t TABLESAMPLE SYSTEM (10)", FLIGHT_CALL },
		{ "SELECT * FROM t WHERE ts > 'now'", FLIGHT_TIME_LITERAL },
		{ "SELECT 'today'::date", FLIGHT_TIME_LITERAL },
		{ "SELECT timestamp ' Tomorrow '", FLIGHT_TIME_LITERAL },
		{ "SELECT * FROM pg_class", FLIGHT_CATALOG },
		{ "SELECT * FROM pg_catalog.pg_roles", FLIGHT_CATALOG },
		{ "SELECT * FROM information_schema.tables", FLIGHT_CATALOG },
		{ "SELECT * FROM pg_temp.t", FLIGHT_TEMP },
		{ "SELECT * FROM pg_temp_3.t", FLIGHT_TEMP },
		{ "SELECT a FROM t WHERE b = (SELECT max(b) FROM t)", FLIGHT_CALL },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (decide(cases[i].sql, NULL, &d) != cases[i].want)
			fail_msg("%s: got %s, want %s", cases[i].sql, flight_verdict_name(d.verdict),
				 flight_verdict_name(cases[i].want));
		if (d.nfuncs == 0) /* else only calls stand in the way: tables are kept for them */
			assert_int_equal(d.ntables, 0);
	}
}

/* Calls are left to the catalog (volatility.h): the decision lists them, and only them. */
static void test_decide_calls(void **state)
{
	struct flight_decision d;
	static const struct {
		const char *sql;
		int nfuncs;
		const char *f0, *f1; /* "schema.name" or "name" */
	} cases[] = {
		{ "SELECT count(*) FROM t", 1, "count", NULL },
		{ "SELECT abs(a), pg_catalog.lower(b), abs(c) FROM t", 2, "abs", "pg_catalog.lower" },
		{ "SELECT now()", 1, "now", NULL },
		{ "SELECT a FROM t WHERE b = (SELECT max(b) FROM u)", 1, "max", NULL },
		{ "SELECT row_number() OVER (ORDER BY a) FROM t", 1, "row_number", NULL },
		{ "SELECT \"Odd]Name\"(a) FROM t", 1, "Odd]Name", NULL },
		/* what no lookup can clear: no list */
		{ "SELECT CURRENT_TIMESTAMP, abs(a) FROM t", 0, NULL, NULL },
		{ "SELECT abs(a) FROM t FOR UPDATE", 0, NULL, NULL },
		{ "SELECT abs(a) FROM pg_class", 0, NULL, NULL },
		{ "SELECT db.s.f(a) FROM t", 0, NULL, NULL },
	};
	char name[2 * FLIGHT_NAME_MAX + 2];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		flight_decide(cases[i].sql, strlen(cases[i].sql), NULL, &d);
		if (d.nfuncs != cases[i].nfuncs)
			fail_msg("%s: %d functions, want %d", cases[i].sql, d.nfuncs, cases[i].nfuncs);
		assert_int_equal(d.verdict, cases[i].nfuncs || strstr(cases[i].sql, "CURRENT") ||
						    strstr(cases[i].sql, "db.s") ? FLIGHT_CALL : d.verdict);
		const char *want[2] = { cases[i].f0, cases[i].f1 };
		for (int k = 0; k < d.nfuncs; k++) {
			snprintf(name, sizeof(name), "%s%s%s", d.funcs[k].schema, d.funcs[k].schema[0] ? "." : "",
				 d.funcs[k].name);
			assert_string_equal(name, want[k]);
		}
		if (d.nfuncs > 0) {
			assert_int_equal(d.verdict, FLIGHT_CALL);
			assert_true(d.ntables >= 1 || strcmp(cases[i].sql, "SELECT now()") == 0);
		}
	}
}

struct cold {
	const char *sql;
	struct flight_decision d;
};

static void *decide_cold_thread(void *arg)
{
	struct cold *c = arg;
	flight_decide(c->sql, strlen(c->sql), NULL, &c->d);
	return NULL;
}

/* The decision of sql by a parse: on a thread of its own, whose memo is empty. */
static void decide_cold(const char *sql, struct flight_decision *d)
{
	pthread_t t;
	struct cold c = { .sql = sql };
	assert_int_equal(pthread_create(&t, NULL, decide_cold_thread, &c), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	*d = c.d;
}

/* The decision memo (texts of one shape share a decision) never answers a text otherwise
 * than its own parse would: each probe, decided after a text of its shape (or a look-alike),
 * gets what a fresh thread parsing it gets. */
static void test_decide_memo(void **state)
{
	static const struct {
		const char *warm, *probe;
		enum flight_verdict want;
	} cases[] = {
		{ "SELECT a FROM t WHERE id = 1", "SELECT a FROM t WHERE id = 22", FLIGHT_OK },
		{ "SELECT a FROM t WHERE id = 1.5", "SELECT a FROM t WHERE id = .5e-3", FLIGHT_OK },
		{ "SELECT a FROM t WHERE ts > 'x'", "SELECT a FROM t WHERE ts > 'now'", FLIGHT_TIME_LITERAL },
		{ "SELECT a FROM t WHERE ts > 'y'", "SELECT a FROM t WHERE ts > ' Tomorrow '", FLIGHT_TIME_LITERAL },
		{ "SELECT a FROM t WHERE b = 'x'", "SELECT a FROM t WHERE b = E'x'", FLIGHT_OK },
		{ "SELECT a FROM t WHERE b = 'it''s' AND c = 'z'", "SELECT a FROM t WHERE b = 'it' AND c = 'z'", FLIGHT_OK },
		{ "SELECT a FROM t WHERE b = $1", "SELECT a FROM t WHERE b = $2", FLIGHT_OK },
		{ "SELECT a FROM t -- 'x\n WHERE b = 1", "SELECT a FROM t -- 'y\n WHERE b = 2", FLIGHT_OK },
		{ "SELECT a FROM t WHERE b = 'x' FOR UPDATE", "SELECT a FROM t WHERE b = 'y' FOR UPDATE", FLIGHT_LOCKING },
		{ "SELECT a FROM t WHERE b = 'x'; SELECT 1", "SELECT a FROM t WHERE b = 'y'; SELECT 2", FLIGHT_NOT_SELECT },
		{ "SELECT count(*) FROM t WHERE b = 1", "SELECT count(*) FROM t WHERE b = 2", FLIGHT_CALL },
		{ "SELECT a FROM \"T\" WHERE b = 1", "SELECT a FROM \"t\" WHERE b = 1", FLIGHT_OK },
		{ "SELECT a FROM pg_class WHERE b = 1", "SELECT a FROM pg_class WHERE b = 3", FLIGHT_CATALOG },
		{ "SELECT $$x$$ FROM t", "SELECT $$now$$ FROM t", FLIGHT_TIME_LITERAL },
		{ "SELECT a FROM t /* 'x */ WHERE b = 1", "SELECT a FROM t /* 'y */ WHERE b = 1", FLIGHT_OK },
	};
	struct flight_decision warm, probe, cold;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		flight_decide(cases[i].warm, strlen(cases[i].warm), NULL, &warm);
		flight_decide(cases[i].probe, strlen(cases[i].probe), NULL, &probe);
		decide_cold(cases[i].probe, &cold);
		if (probe.verdict != cases[i].want || cold.verdict != cases[i].want)
			fail_msg("%s after %s: got %s, a parse %s, want %s", cases[i].probe, cases[i].warm,
				 flight_verdict_name(probe.verdict), flight_verdict_name(cold.verdict),
				 flight_verdict_name(cases[i].want));
		assert_int_equal(probe.ntables, cold.ntables);
		assert_int_equal(probe.nfuncs, cold.nfuncs);
		for (int k = 0; k < probe.ntables; k++) {
			assert_string_equal(probe.tables[k].schema, cold.tables[k].schema);
			assert_string_equal(probe.tables[k].name, cold.tables[k].name);
		}
		for (int k = 0; k < probe.nfuncs; k++)
			assert_string_equal(probe.funcs[k].name, cold.funcs[k].name);
	}
}

static void test_decide_limits(void **state)
{
	struct flight_decision d;
	char *big = malloc(FLIGHT_MAX_SQL + 64);
	size_t n;

	(void)state;
	assert_non_null(big);
	n = (size_t)sprintf(big, "SELECT 1");
	while (n < FLIGHT_MAX_SQL)
		n += (size_t)sprintf(big + n, "+1");
	assert_int_equal(decide(big, NULL, &d), FLIGHT_TOO_BIG);
	/* A NUL ends the text, as for the server: what follows is not looked at. */
	memcpy(big, "SELECT a FROM t\0; DELETE FROM t", 32);
	flight_decide(big, 32, NULL, &d);
	assert_int_equal(d.verdict, FLIGHT_OK);
	free(big);
	char many[512];
	n = (size_t)sprintf(many, "SELECT * FROM t1");
	for (int i = 2; i <= FLIGHT_MAX_TABLES; i++)
		n += (size_t)sprintf(many + n, ", t%d", i);
	assert_int_equal(decide(many, NULL, &d), FLIGHT_OK);
	sprintf(many + n, ", t%d", FLIGHT_MAX_TABLES + 1);
	assert_int_equal(decide(many, NULL, &d), FLIGHT_TOO_BIG);
}

/* Issue 21: a computed text cast to a time type may be 'now' when the query runs. */
static void test_decide_computed_time_cast_is_a_time_literal(void **state)
{
	struct flight_decision d;
	(void)state;
	assert_int_equal(decide("SELECT count(*) FROM t WHERE at > ('n' || 'ow')::timestamptz", NULL, &d),
			 FLIGHT_TIME_LITERAL);
	assert_int_equal(decide("SELECT w::date FROM t", NULL, &d), FLIGHT_TIME_LITERAL);
	assert_int_equal(decide("SELECT CAST(w AS timestamp with time zone) FROM t", NULL, &d), FLIGHT_TIME_LITERAL);
	assert_int_equal(decide("SELECT (SELECT w FROM k)::time FROM t", NULL, &d), FLIGHT_TIME_LITERAL);
	assert_int_equal(decide("SELECT '2020-01-01'::text::timestamp FROM t", NULL, &d), FLIGHT_TIME_LITERAL);
	/* A plain literal is judged by its text; other types' casts are inert. */
	assert_int_equal(decide("SELECT id FROM t WHERE at > '2020-01-01'::timestamptz", NULL, &d), FLIGHT_OK);
	assert_int_equal(decide("SELECT id::text, w::int FROM t", NULL, &d), FLIGHT_OK);
	assert_int_equal(decide("SELECT id FROM t WHERE $2::timestamptz > at", NULL, &d), FLIGHT_OK);
	assert_int_equal(decide("SELECT 1 FROM t WHERE d = 'now'::date", NULL, &d), FLIGHT_TIME_LITERAL);
}

static void test_decide_table_lists(void **state)
{
	struct flight_decision d;
	char *allow[] = { "public.t", "u" };
	char *exclude[] = { "secret", "x.hidden" };
	struct flight_table_policy p = { allow, 2, exclude, 2 };
	struct flight_table_policy only_exclude = { NULL, 0, exclude, 2 };

	(void)state;
	assert_int_equal(decide("SELECT * FROM t", &p, &d), FLIGHT_OK);
	assert_int_equal(decide("SELECT * FROM public.t", &p, &d), FLIGHT_OK);
	assert_int_equal(decide("SELECT * FROM other.t", &p, &d), FLIGHT_TABLE_POLICY);
	assert_int_equal(decide("SELECT * FROM other.u JOIN t ON true", &p, &d), FLIGHT_OK);
	assert_int_equal(decide("SELECT * FROM v", &p, &d), FLIGHT_TABLE_POLICY);
	assert_int_equal(decide("WITH v AS (SELECT * FROM u) SELECT * FROM v", &p, &d), FLIGHT_OK);
	assert_int_equal(decide("SELECT * FROM v", &only_exclude, &d), FLIGHT_OK);
	assert_int_equal(decide("SELECT * FROM s.secret", &only_exclude, &d), FLIGHT_TABLE_POLICY);
	assert_int_equal(decide("SELECT * FROM hidden", &only_exclude, &d), FLIGHT_TABLE_POLICY);
	assert_int_equal(decide("SELECT * FROM y.hidden", &only_exclude, &d), FLIGHT_OK);
}

/* ---- writes ------------------------------------------------------------------------------ */

static void test_classify_write(void **state)
{
	struct flight_write w;
	static const struct {
		const char *sql;
		bool flush;
		const char *tables; /* names joined with ',' */
	} cases[] = {
		{ "SELECT a FROM t", false, "" },
		{ "SELECT count(*), now() FROM t", false, "" },
		{ "SELECT pg_catalog.lower(a) FROM t", false, "" },
		{ "BEGIN; SET search_path = x; SHOW work_mem; COMMIT", false, "" },
		{ "", false, "" },
		{ "INSERT INTO s.t (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET a = excluded.a", false, "t" },
		{ "UPDATE t SET a = 1 FROM u WHERE u.x = t.x", false, "t,u" },
		{ "DELETE FROM t USING u; INSERT INTO v SELECT * FROM w", false, "t,u,v,w" },
		{ "WITH d AS (DELETE FROM t RETURNING *) INSERT INTO u SELECT * FROM d", false, "u,d,t" },
		{ "SELECT * FROM t FOR UPDATE", false, "" },
		{ "INSERT INTO t VALUES (my_func())", true, "" },
		{ "SELECT public.count(a) FROM t", true, "" },
		{ "SELECT query_to_xml('delete from t', true, true, '')", true, "" },
		{ "CREATE TABLE x (a int)", true, "" },
		{ "ALTER TABLE t ADD b int", true, "" },
		{ "GRANT SELECT ON t TO bob", true, "" },
		{ "TRUNCATE t", true, "" },
		{ "COPY t FROM STDIN", true, "" },
		{ "DO $$ BEGIN DELETE FROM t; END $$", true, "" },
		{ "CALL p()", true, "" },
		{ "SELECT * INTO x FROM t", true, "" },
		{ "COMMIT PREPARED 'x'", true, "" },
		{ "SELECT a AS \"TRANS_STMT_COMMIT_PREPARED\" FROM t", false, "" }, /* fuzz_flight found it */
		{ "not sql at all", true, "" },
		{ "CREATE OR REPLACE VIEW v AS SELECT 1", true, "" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char got[256] = "";
		size_t o = 0;
		flight_classify_write(cases[i].sql, strlen(cases[i].sql), &w);
		for (int k = 0; k < w.ntables; k++)
			o += (size_t)snprintf(got + o, sizeof(got) - o, "%s%s", k ? "," : "", w.tables[k].name);
		if (w.flush_db != cases[i].flush || (!w.flush_db && strcmp(got, cases[i].tables) != 0))
			fail_msg("%s: flush %d tables \"%s\"", cases[i].sql, w.flush_db, got);
	}
}

/* ---- the key ---------------------------------------------------------------------------- */

static struct flight_param params[] = { { "TimeZone", "UTC" }, { "DateStyle", "ISO, MDY" },
					{ "application_name", "one" } };

static struct flight_key_input base_input(void)
{
	return (struct flight_key_input){
		.service = "main", .server_user = "", .server_db = "db", .database = "db", .user = "alice",
		.role = "alice", .params = params, .nparams = 3, .carry = "search_path\0SET search_path = a\0",
		.carry_len = 32, .protocol = FLIGHT_PROTO_SIMPLE, .query = "SELECT * FROM t", .query_len = 15,
	};
}

static long build(const struct flight_key_input *in, uint8_t *out)
{
	long n = flight_key_build(in, out, FLIGHT_KEY_MAX);
	assert_true(n > 0);
	return n;
}

static void test_key_fields(void **state)
{
	static uint8_t a[FLIGHT_KEY_MAX], b[FLIGHT_KEY_MAX];
	struct flight_key_input in = base_input(), m;
	struct flight_param other_tz[] = { { "TimeZone", "Europe/Paris" }, { "DateStyle", "ISO, MDY" } };
	struct flight_param swapped[] = { { "DateStyle", "ISO, MDY" }, { "application_name", "two" },
					  { "TimeZone", "UTC" } };
	uint8_t bind1[] = { 0, 0, 0, 1, 0, 0, 0, 1, '1', 0, 0 }, bind2[] = { 0, 0, 0, 1, 0, 0, 0, 1, '2', 0, 0 };
	uint32_t t1 = 23, t2 = 20;
	long na = build(&in, a), nb;

	(void)state;
	/* The same input, and the parameters in another order with another application_name: equal. */
	m = in;
	m.params = swapped;
	nb = build(&m, b);
	assert_true(flight_key_equal(a, (size_t)na, b, (size_t)nb));
	assert_int_equal(flight_key_hash(a, (size_t)na), flight_key_hash(b, (size_t)nb));

#define DIFFERS(change)                                                                  \
	do {                                                                             \
		m = in;                                                                  \
		change;                                                                  \
		nb = build(&m, b);                                                       \
		if (flight_key_equal(a, (size_t)na, b, (size_t)nb))                      \
			fail_msg("key did not change with %s", #change);                 \
	} while (0)
	DIFFERS(m.service = "other");
	DIFFERS(m.server_user = "pooler");
	DIFFERS(m.server_db = "db2");
	DIFFERS(m.database = "db2");
	DIFFERS(m.user = "bob");
	DIFFERS(m.role = "admin");
	DIFFERS(m.policy_tag = 42);
	DIFFERS((m.params = other_tz, m.nparams = 2));
	DIFFERS(m.nparams = 1);
	DIFFERS(m.carry_len = 0);
	DIFFERS(m.carry = "search_path\0SET search_path = b\0");
	DIFFERS(m.protocol = FLIGHT_PROTO_EXTENDED);
	DIFFERS(m.query = "SELECT * FROM T");
	DIFFERS(m.query_len = 14);
	DIFFERS((m.bind = bind1, m.bind_len = sizeof(bind1)));
	DIFFERS((m.param_types = &t1, m.nparam_types = 1));
	DIFFERS(m.describe = 'P');
	DIFFERS((m.stmt_id = (const uint8_t *)"0123456789abcdef", m.stmt_id_len = 16));
	/* Fields cannot run into each other: "ab" + "" differs from "a" + "b". */
	DIFFERS((m.database = "dba", m.user = "lice"));

	in.bind = bind1;
	in.bind_len = sizeof(bind1);
	in.param_types = &t1;
	in.nparam_types = 1;
	na = build(&in, a);
	DIFFERS(m.bind = bind2);
	DIFFERS(m.param_types = &t2);
	DIFFERS(m.describe = 'S');
#undef DIFFERS
}

static void test_key_limits(void **state)
{
	static uint8_t out[FLIGHT_KEY_MAX];
	struct flight_key_input in = base_input();
	char *q = malloc(FLIGHT_KEY_MAX);

	(void)state;
	assert_non_null(q);
	memset(q, 'x', FLIGHT_KEY_MAX);
	in.query = q;
	in.query_len = FLIGHT_KEY_MAX;
	assert_int_equal(flight_key_build(&in, out, sizeof(out)), -E2BIG);
	in.query_len = 10;
	assert_int_equal(flight_key_build(&in, out, 40), -E2BIG);
	in.nparams = 300;
	assert_int_equal(flight_key_build(&in, out, sizeof(out)), -EINVAL);
	free(q);
	assert_false(flight_key_equal((const uint8_t *)"ab", 2, (const uint8_t *)"abc", 3));
}

/* ---- extended-protocol requests (ext.h) and their replies ------------------------------ */

struct wire {
	uint8_t b[512];
	size_t n;
};

static void msg(struct wire *w, char type, const void *body, size_t len)
{
	assert_true(w->n + 5 + len <= sizeof(w->b));
	w->b[w->n] = (uint8_t)type;
	w->b[w->n + 1] = 0;
	w->b[w->n + 2] = 0;
	w->b[w->n + 3] = (uint8_t)((len + 4) >> 8);
	w->b[w->n + 4] = (uint8_t)(len + 4);
	memcpy(w->b + w->n + 5, body, len);
	w->n += 5 + len;
}

#define MSG(w, type, lit) msg(w, type, lit, sizeof(lit) - 1)
/* Parse "s" or "", "select $1", one parameter of type int4 */
#define PARSE_NAMED "s\0select $1\0\0\1\0\0\0\x17"
#define PARSE_UNNAMED "\0select $1\0\0\1\0\0\0\x17"
/* Bind of portal "" to "s" or "": no parameter formats, one value "42", one result format 1 */
#define BIND_NAMED "\0s\0\0\0\0\1\0\0\0\x02" "42\0\1\0\1"
#define BIND_UNNAMED "\0\0\0\0\0\1\0\0\0\x02" "42\0\1\0\1"
#define EXEC0 "\0\0\0\0\0"

static void test_ext_read_plain_shapes(void **state)
{
	struct wire w = { .n = 0 };
	struct flight_ext x;

	(void)state;
	MSG(&w, 'P', PARSE_UNNAMED);
	MSG(&w, 'B', BIND_UNNAMED);
	MSG(&w, 'D', "P\0");
	MSG(&w, 'E', EXEC0);
	MSG(&w, 'S', "");
	assert_true(flight_ext_read(w.b, w.n, &x));
	assert_int_equal(x.len, w.n);
	assert_true(x.has_parse);
	assert_int_equal(x.stmt_len, 0);
	assert_int_equal(x.query_len, 9);
	assert_memory_equal(x.query, "select $1", 9);
	assert_int_equal(x.ntypes, 1);
	assert_int_equal(x.types[3], 23);
	assert_int_equal(x.describe, 'P');
	assert_int_equal(x.bind_len, sizeof(BIND_UNNAMED) - 1 - 2);
	/* One byte short, or one more message: not a request. */
	assert_false(flight_ext_read(w.b, w.n - 1, &x));
	MSG(&w, 'S', "");
	assert_false(flight_ext_read(w.b, w.n, &x));

	/* A named statement's Bind, Describe 'S' of it, Execute, Sync; and Bind Execute Sync. */
	w.n = 0;
	MSG(&w, 'B', BIND_NAMED);
	MSG(&w, 'D', "Ss\0");
	MSG(&w, 'E', EXEC0);
	MSG(&w, 'S', "");
	assert_true(flight_ext_read(w.b, w.n, &x));
	assert_false(x.has_parse);
	assert_int_equal(x.stmt_len, 1);
	assert_int_equal(x.describe, 'S');
	w.n = 0;
	MSG(&w, 'B', BIND_NAMED);
	MSG(&w, 'E', EXEC0);
	MSG(&w, 'S', "");
	assert_true(flight_ext_read(w.b, w.n, &x));
	assert_int_equal(x.describe, 0);
}

static void test_ext_read_refuses_other_shapes(void **state)
{
	struct wire w;
	struct flight_ext x;

	(void)state;
#define REFUSED(...)                                                   \
	do {                                                           \
		w.n = 0;                                               \
		__VA_ARGS__;                                           \
		if (flight_ext_read(w.b, w.n, &x))                     \
			fail_msg("taken: %s", #__VA_ARGS__);           \
	} while (0)
	/* A row limit (PortalSuspended), two Executes, a Flush, no Sync, Describe before Bind. */
	REFUSED(MSG(&w, 'B', BIND_NAMED); MSG(&w, 'E', "\0\0\0\0\1"); MSG(&w, 'S', ""));
	REFUSED(MSG(&w, 'B', BIND_NAMED); MSG(&w, 'E', EXEC0); MSG(&w, 'E', EXEC0); MSG(&w, 'S', ""));
	REFUSED(MSG(&w, 'B', BIND_NAMED); MSG(&w, 'E', EXEC0); MSG(&w, 'H', ""); MSG(&w, 'S', ""));
	REFUSED(MSG(&w, 'B', BIND_NAMED); MSG(&w, 'E', EXEC0));
	REFUSED(MSG(&w, 'P', PARSE_NAMED); MSG(&w, 'D', "Ss\0"); MSG(&w, 'B', BIND_NAMED); MSG(&w, 'E', EXEC0);
		MSG(&w, 'S', ""));
	/* Parse of one statement, Bind of another; a named portal; Describe of another name. */
	REFUSED(MSG(&w, 'P', PARSE_NAMED); MSG(&w, 'B', BIND_UNNAMED); MSG(&w, 'E', EXEC0); MSG(&w, 'S', ""));
	REFUSED(MSG(&w, 'B', "p\0s\0\0\0\0\0\0\0"); MSG(&w, 'E', "p\0\0\0\0\0"); MSG(&w, 'S', ""));
	REFUSED(MSG(&w, 'B', BIND_NAMED); MSG(&w, 'D', "St\0"); MSG(&w, 'E', EXEC0); MSG(&w, 'S', ""));
	REFUSED(MSG(&w, 'B', BIND_NAMED); MSG(&w, 'C', "Ss\0"); MSG(&w, 'E', EXEC0); MSG(&w, 'S', ""));
	/* Hostile Binds: a value longer than the message, a format code 2, bytes after the end. */
	REFUSED(MSG(&w, 'B', "\0s\0\0\0\0\1\0\0\0\x09" "42\0\0"); MSG(&w, 'E', EXEC0); MSG(&w, 'S', ""));
	REFUSED(MSG(&w, 'B', "\0s\0\0\1\0\2\0\0\0\0"); MSG(&w, 'E', EXEC0); MSG(&w, 'S', ""));
	REFUSED(MSG(&w, 'B', "\0s\0\0\0\0\0\0\0\0"); MSG(&w, 'E', EXEC0); MSG(&w, 'S', ""));
	/* Two format codes for one parameter. */
	REFUSED(MSG(&w, 'B', "\0s\0\0\2\0\0\0\0\0\1\0\0\0\0\0\0"); MSG(&w, 'E', EXEC0); MSG(&w, 'S', ""));
	/* A Parse whose OIDs do not end it; a Sync with a body. */
	REFUSED(MSG(&w, 'P', "\0select 1\0\0\2\0\0\0\x17"); MSG(&w, 'B', BIND_UNNAMED); MSG(&w, 'E', EXEC0);
		MSG(&w, 'S', ""));
	REFUSED(MSG(&w, 'B', BIND_NAMED); MSG(&w, 'E', EXEC0); MSG(&w, 'S', "x"));
#undef REFUSED
}

/* Text parameters that read the clock when they are converted ('now'::timestamptz) are found
 * whatever their case, binary ones are not text, and other values pass. */
static void test_ext_time_words(void **state)
{
	struct wire w;
	struct flight_ext x;
	static const char *const values[] = { "now", "  Today", "x tomorrow", "YESTERDAY", "2020-01-01", "snow" };
	static const bool timed[] = { true, true, true, true, false, true };

	(void)state;
	for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
		for (int binary = 0; binary < 2; binary++) {
			/* portal "", statement "s", one format code, one value (its length last) */
			uint8_t body[64] = { 0, 's', 0, 0, 1, 0, (uint8_t)binary, 0, 1, 0, 0, 0, 0 };
			size_t vl = strlen(values[i]), n = 13;
			body[n - 1] = (uint8_t)vl;
			memcpy(body + n, values[i], vl);
			n += vl;
			body[n++] = 0;
			body[n++] = 0;
			w.n = 0;
			msg(&w, 'B', body, n);
			MSG(&w, 'E', EXEC0);
			MSG(&w, 'S', "");
			assert_true(flight_ext_read(w.b, w.n, &x));
			assert_int_equal(flight_ext_time_words(&x), timed[i] && !binary);
		}
	}
}

/* An extended leader's reply: its ParseComplete and BindComplete are not kept, a
 * ParameterDescription is; a simple one refuses both. */
static void test_feed_extended_reply(void **state)
{
	struct flight_table t;
	struct flight_versions v = { 0 };
	struct flight *lead = NULL;
	struct flight_waiter *wait = NULL;
	static const uint8_t reply[] = { '1', 0, 0, 0, 4, '2', 0, 0, 0, 4, 't', 0, 0, 0, 6, 0, 0,
					 'C', 0, 0, 0, 5, 0, 'Z', 0, 0, 0, 5, 'I' };
	static const uint8_t kept[] = { 't', 0, 0, 0, 6, 0, 0, 'C', 0, 0, 0, 5, 0 };

	(void)state;
	assert_int_equal(flight_table_init(&t), 0);
	assert_int_equal(flight_join(&t, (const uint8_t *)"k", 1, 1, &v, 1 << 20, NULL, NULL, &lead, &wait),
			 FLIGHT_ROLE_LEAD);
	flight_set_extended(lead);
	for (size_t i = 0; i < sizeof(reply) - 1; i++) /* a byte at a time: messages cut anywhere */
		assert_int_equal(flight_feed(lead, reply + i, 1), 0);
	assert_int_equal(flight_feed(lead, reply + sizeof(reply) - 1, 1), 1);
	const struct flight_result *r = flight_result_of(lead);
	assert_int_equal(r->len, sizeof(kept));
	assert_memory_equal(r->bytes, kept, sizeof(kept));
	flight_result_put(flight_end(&t, lead, true, NULL, NULL));

	assert_int_equal(flight_join(&t, (const uint8_t *)"k", 1, 1, &v, 1 << 20, NULL, NULL, &lead, &wait),
			 FLIGHT_ROLE_LEAD);
	assert_int_equal(flight_feed(lead, reply, sizeof(reply)), -1);
	flight_result_put(flight_end(&t, lead, false, NULL, NULL));
	flight_table_destroy(&t);
}

/* ---- L1 store ---------------------------------------------------------------------------- */

static struct flight_result *lru_result(uint8_t fill)
{
	struct flight_result *r = malloc(sizeof(*r) + 16);
	assert_non_null(r);
	atomic_init(&r->refs, 1);
	r->l2set = false;
	r->len = r->cap = 16;
	memset(r->bytes, fill, 16);
	return r;
}

static size_t lru_key(uint8_t *key, int i, size_t len)
{
	memset(key, 'k', len);
	memcpy(key, &i, sizeof(i));
	return len;
}

/* Issue 28: with the cache on, a miss cost twice the CPU of the same query uncached while
 * cache_memory filled, because every kept entry and key came from malloc, which on a worker
 * thread grows its glibc arena a page at a time (an mprotect and a page fault per four
 * misses). Entries now come from the store's own slabs: filling it must not grow the malloc
 * heap by an entry's size per put. (ASan's allocator is not glibc's: there mallinfo2 sees
 * nothing, and the rest of the test still checks the store.) */
static void test_lru_fill_does_not_grow_the_malloc_heap(void **state)
{
	enum { N = 2000 };
	static uint8_t key[6000];
	static struct flight_result *rs[N];
	struct flight_inval *iv = calloc(1, sizeof(*iv));
	struct flight_versions v = { 0 };
	struct flight_lru *l = flight_lru_new(64u << 20);
	enum flight_lru_outcome out;

	(void)state;
	assert_non_null(iv);
	assert_non_null(l);
	for (int i = 0; i < N; i++)
		rs[i] = lru_result((uint8_t)i);
	struct mallinfo2 before = mallinfo2();
	for (int i = 0; i < N; i++) {
		size_t klen = lru_key(key, i, 500); /* a key the size pgbench's make: text and settings */
		assert_int_equal(flight_lru_put(l, key, klen, (uint64_t)i, &v, "db", rs[i], 1e9), 0);
	}
	struct mallinfo2 after = mallinfo2();
	/* The old code: N * (entry + key), about 2 MB. The slabs are mmapped. */
	assert_true(after.uordblks < before.uordblks + (size_t)N * 64);
	for (int i = 0; i < N; i++)
		flight_result_put(rs[i]); /* the store holds its own reference */

	/* Every entry reads back whole, large keys (from malloc) and small alike. */
	struct flight_result *big = lru_result(0xbb);
	assert_int_equal(flight_lru_put(l, key, lru_key(key, -1, sizeof(key)), 7, &v, "db", big, 1e9), 0);
	flight_result_put(big);
	for (int i = -1; i < N; i++) {
		size_t klen = lru_key(key, i, i < 0 ? sizeof(key) : 500);
		struct flight_result *r = flight_lru_get(l, iv, key, klen, i < 0 ? 7 : (uint64_t)i, 0, &out);
		assert_int_equal(out, FLIGHT_LRU_HIT);
		assert_non_null(r);
		assert_int_equal(r->bytes[0], i < 0 ? 0xbb : (uint8_t)i);
		flight_result_put(r);
	}
	size_t entries, bytes;
	flight_lru_usage(l, &entries, &bytes);
	assert_int_equal(entries, N + 1);
	assert_int_equal(flight_lru_flush(l, NULL), N + 1);
	flight_lru_free(l);

	/* A small bound: evictions make room, freed blocks are used again, the bound holds. */
	l = flight_lru_new(64u << 10);
	assert_non_null(l);
	int evicted = 0;
	for (int i = 0; i < N; i++) {
		struct flight_result *r = lru_result((uint8_t)i);
		evicted += flight_lru_put(l, key, lru_key(key, i, 100 + (size_t)(i % 7) * 300), (uint64_t)i, &v, "db", r, 1e9);
		flight_result_put(r);
		flight_lru_usage(l, &entries, &bytes);
		assert_true(bytes <= 64u << 10);
	}
	assert_true(evicted > N / 2);
	struct flight_result *r = flight_lru_get(l, iv, key, lru_key(key, N - 1, 100 + (size_t)((N - 1) % 7) * 300),
						 N - 1, 0, &out);
	assert_int_equal(out, FLIGHT_LRU_HIT);
	flight_result_put(r);
	flight_lru_free(l);
	free(iv);
}

/* ---- L2 entries and redis: --------------------------------------------------------------- */

static void test_l2_entry_roundtrip_and_hostile_values(void **state)
{
	(void)state;
	const uint8_t key[] = "the whole key";
	const uint8_t reply[] = "T....D....C....";
	struct flight_l2_versions v = { .n = 2, .id = { flight_l2_table_id("db", "t"), flight_l2_db_id("db") },
					.v = { 7, 3 } };
	uint8_t buf[256];
	const uint8_t *bytes;
	size_t blen;

	assert_true((flight_l2_table_id("db", "t") & 1) == 0 && (flight_l2_db_id("db") & 1) == 1);
	assert_true(flight_l2_table_id("db", "t") != flight_l2_table_id("db2", "t"));
	long n = flight_l2_encode(key, sizeof(key), &v, reply, sizeof(reply), buf, sizeof(buf));
	assert_true(n > 0);
	assert_true(flight_l2_decode(buf, (size_t)n, key, sizeof(key), &v, &bytes, &blen));
	assert_int_equal(blen, sizeof(reply));
	assert_memory_equal(bytes, reply, sizeof(reply));
	/* Another key under the same name (a hash collision): a miss. */
	const uint8_t other[] = "the whole kez";
	assert_false(flight_l2_decode(buf, (size_t)n, other, sizeof(other), &v, &bytes, &blen));
	/* A version moved (a write through any tusk), or another table set: a miss. */
	struct flight_l2_versions moved = v;
	moved.v[0] = 8;
	assert_false(flight_l2_decode(buf, (size_t)n, key, sizeof(key), &moved, &bytes, &blen));
	moved = v;
	moved.n = 1;
	assert_false(flight_l2_decode(buf, (size_t)n, key, sizeof(key), &moved, &bytes, &blen));
	/* Every truncation is refused or yields a shorter reply, never a read past the end. */
	for (long cut = 0; cut < n - (long)sizeof(reply); cut++)
		assert_false(flight_l2_decode(buf, (size_t)cut, key, sizeof(key), &v, &bytes, &blen));
	/* A wrong format version, and a key length field that lies. */
	buf[3] ^= 1;
	assert_false(flight_l2_decode(buf, (size_t)n, key, sizeof(key), &v, &bytes, &blen));
	buf[3] ^= 1;
	buf[4] = 0xff;
	assert_false(flight_l2_decode(buf, (size_t)n, key, sizeof(key), &v, &bytes, &blen));
	/* No room: refused, nothing written past cap. */
	assert_int_equal(flight_l2_encode(key, sizeof(key), &v, reply, sizeof(reply), buf, 10), -E2BIG);
}

static void test_config_redis(void **state)
{
	struct tusk_config *cfg;
	char *errs;
	(void)state;
	const char *base = "services:\n  db:\n    hosts: ['127.0.0.1:5432']\npools:\n  - {service: db}\n";
	char yaml[512];

	assert_int_equal(load_text(base, &cfg, &errs), 0);
	assert_false(flight_l2_configured(cfg));
	config_free(cfg);
	free(errs);
	snprintf(yaml, sizeof(yaml), "%sredis: {host: r1, password: pw}\n", base);
	assert_int_equal(load_text(yaml, &cfg, &errs), 0);
	assert_true(flight_l2_configured(cfg));
	assert_string_equal(cfg->redis.prefix, "tusk:");
	assert_int_equal(cfg->redis.timeout_ms, 100);
	assert_int_equal(cfg->redis.port, 0);
	assert_int_equal(cfg->redis.db, 0);
	assert_int_equal(cfg->redis.tls, 0);
	config_free(cfg);
	free(errs);
	snprintf(yaml, sizeof(yaml), "%sredis: {host: r1, unix: /tmp/s, tls: on}\n", base);
	assert_int_equal(load_text(yaml, &cfg, &errs), 2);
	assert_non_null(strstr(errs, "host and unix"));
	assert_non_null(strstr(errs, "not to a unix socket")); /* TLS goes to host:port (the tunnel) */
	free(errs);
	/* cache_invalidation: tusk by default; logical with its poll; logical with redis refused. */
	assert_int_equal(load_text(base, &cfg, &errs), 0);
	assert_int_equal(cfg->cache_invalidation, CONFIG_CACHE_INVAL_TUSK);
	assert_int_equal(cfg->cache_logical_poll_ms, 200);
	config_free(cfg);
	free(errs);
	snprintf(yaml, sizeof(yaml), "%scache_invalidation: logical\ncache_logical_poll: 50ms\n", base);
	assert_int_equal(load_text(yaml, &cfg, &errs), 0);
	assert_int_equal(cfg->cache_invalidation, CONFIG_CACHE_INVAL_LOGICAL);
	assert_int_equal(cfg->cache_logical_poll_ms, 50);
	config_free(cfg);
	free(errs);
	snprintf(yaml, sizeof(yaml), "%scache_invalidation: logical\nredis: {host: r1}\n", base);
	assert_int_equal(load_text(yaml, &cfg, &errs), 1);
	assert_non_null(strstr(errs, "not supported with redis"));
	free(errs);
	snprintf(yaml, sizeof(yaml), "%scache_invalidation: wal\n", base);
	assert_int_equal(load_text(yaml, &cfg, &errs), 1);
	free(errs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_config_defaults_off),
		cmocka_unit_test(test_ext_read_plain_shapes),
		cmocka_unit_test(test_ext_read_refuses_other_shapes),
		cmocka_unit_test(test_ext_time_words),
		cmocka_unit_test(test_feed_extended_reply),
		cmocka_unit_test(test_lru_fill_does_not_grow_the_malloc_heap),
		cmocka_unit_test(test_config_rule_inherits_and_overrides),
		cmocka_unit_test(test_config_errors),
		cmocka_unit_test(test_decide_cached),
		cmocka_unit_test(test_decide_bypass),
		cmocka_unit_test(test_decide_calls),
		cmocka_unit_test(test_decide_memo),
		cmocka_unit_test(test_decide_limits),
		cmocka_unit_test(test_decide_computed_time_cast_is_a_time_literal),
		cmocka_unit_test(test_decide_table_lists),
		cmocka_unit_test(test_classify_write),
		cmocka_unit_test(test_key_fields),
		cmocka_unit_test(test_key_limits),
		cmocka_unit_test(test_l2_entry_roundtrip_and_hostile_values),
		cmocka_unit_test(test_config_redis),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
