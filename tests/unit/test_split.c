/* read-write-split's decision (split/split.h, and flight_read_only under it): which opening
 * texts provably read nothing but may run on a standby, and that everything else goes to the
 * primary. Each case says why. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "flight/decide.h"
#include "split/split.h"

struct split_case {
	const char *sql;
	enum router_split want;
	const char *why;
};

static const struct split_case cases[] = {
	/* Plain reads. */
	{ "select 1", ROUTER_SPLIT_STANDBY, "constant" },
	{ "SELECT id, name FROM items WHERE id = $1", ROUTER_SPLIT_STANDBY, "parameterised read" },
	{ "  -- comment\n select * from public.items i join kv on kv.k = i.name order by 1 limit 5", ROUTER_SPLIT_STANDBY,
	  "join, order, limit, comment before" },
	{ "select count(*), max(id), lower(name) from items group by 3 having count(*) > 1", ROUTER_SPLIT_STANDBY,
	  "stable aggregates and functions" },
	{ "select row_number() over (partition by name order by id) from items", ROUTER_SPLIT_STANDBY, "window function" },
	{ "select now(), current_date, current_timestamp, 'now'::timestamptz", ROUTER_SPLIT_STANDBY,
	  "clock reads are stable within a transaction" },
	{ "select extract(year from now()), substring('abc' from 2), trim(' x ')", ROUTER_SPLIT_STANDBY,
	  "SQL-syntax built-ins (pg_catalog.extract ...)" },
	{ "select pg_catalog.lower('A')", ROUTER_SPLIT_STANDBY, "pg_catalog-qualified built-in" },
	{ "select * from pg_catalog.pg_class where relname = 'items'", ROUTER_SPLIT_STANDBY, "catalogs read fine on a standby" },
	{ "select * from generate_series(1, 10) g", ROUTER_SPLIT_STANDBY, "set-returning built-in in FROM" },
	{ "with t as (select * from items) select * from t", ROUTER_SPLIT_STANDBY, "read-only CTE" },
	{ "select * from items where id in (select id from kv) union all select * from items", ROUTER_SPLIT_STANDBY,
	  "subquery and UNION" },
	{ "values (1), (2)", ROUTER_SPLIT_STANDBY, "VALUES" },
	{ "table items", ROUTER_SPLIT_STANDBY, "TABLE" },
	{ "select case when id > 1 then 'a' else coalesce(name, 'b') end from items", ROUTER_SPLIT_STANDBY,
	  "CASE, COALESCE" },
	{ "select * from t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12, t13, t14, t15, t16, t17, t18",
	  ROUTER_SPLIT_STANDBY, "more tables than the cache tracks" },

	/* BEGIN READ ONLY. */
	{ "BEGIN READ ONLY", ROUTER_SPLIT_STANDBY, "BEGIN READ ONLY" },
	{ "start transaction read only", ROUTER_SPLIT_STANDBY, "START TRANSACTION READ ONLY" },
	{ "begin isolation level repeatable read, read only", ROUTER_SPLIT_STANDBY, "with an isolation level" },
	{ "begin transaction read write, read only", ROUTER_SPLIT_STANDBY, "last mode wins: read only" },
	{ "/* c */ begin read only", ROUTER_SPLIT_STANDBY, "comment before" },
	{ "begin read only, read write", ROUTER_SPLIT_PRIMARY, "last mode wins: read write" },
	{ "begin", ROUTER_SPLIT_PRIMARY, "plain BEGIN: what follows is unknown" },
	{ "begin isolation level serializable", ROUTER_SPLIT_PRIMARY, "BEGIN without READ ONLY" },
	{ "begin read only isolation level serializable", ROUTER_SPLIT_PRIMARY,
	  "serializable: a standby refuses it (cannot use serializable mode in a hot standby)" },
	{ "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE", ROUTER_SPLIT_PRIMARY,
	  "serializable deferrable too" },
	{ "begin isolation level serializable, isolation level repeatable read, read only", ROUTER_SPLIT_STANDBY,
	  "the last isolation level wins" },
	{ "begin read only; insert into items values (1, 'x')", ROUTER_SPLIT_PRIMARY, "several statements" },
	{ "begin read only; commit; insert into items values (1, 'x')", ROUTER_SPLIT_PRIMARY,
	  "a write after the read-only transaction" },
	{ "commit", ROUTER_SPLIT_PRIMARY, "not a BEGIN" },
	{ "start", ROUTER_SPLIT_PRIMARY, "parse error" },

	/* Writes and what may write. */
	{ "insert into items values (1, 'x')", ROUTER_SPLIT_PRIMARY, "INSERT" },
	{ "update items set name = 'y'", ROUTER_SPLIT_PRIMARY, "UPDATE" },
	{ "delete from items", ROUTER_SPLIT_PRIMARY, "DELETE" },
	{ "with d as (delete from items returning *) select * from d", ROUTER_SPLIT_PRIMARY, "writable CTE" },
	{ "with x as (select 1), d as (update items set name = 'z' returning id) select * from x", ROUTER_SPLIT_PRIMARY,
	  "writable CTE second" },
	{ "select * from items for update", ROUTER_SPLIT_PRIMARY, "FOR UPDATE" },
	{ "select * from items for share skip locked", ROUTER_SPLIT_PRIMARY, "FOR SHARE" },
	{ "select * from (select * from items for no key update) s", ROUTER_SPLIT_PRIMARY, "FOR ... UPDATE in a subquery" },
	{ "select * into newtable from items", ROUTER_SPLIT_PRIMARY, "SELECT INTO creates a table" },
	{ "select nextval('s')", ROUTER_SPLIT_PRIMARY, "nextval writes" },
	{ "select setval('s', 1)", ROUTER_SPLIT_PRIMARY, "setval writes" },
	{ "select random()", ROUTER_SPLIT_PRIMARY, "volatile" },
	{ "select clock_timestamp()", ROUTER_SPLIT_PRIMARY, "volatile clock" },
	{ "select pg_sleep(1)", ROUTER_SPLIT_PRIMARY, "volatile" },
	{ "select txid_current()", ROUTER_SPLIT_PRIMARY, "assigns a transaction id: fails on a standby" },
	{ "select pg_current_wal_lsn()", ROUTER_SPLIT_PRIMARY, "errors on a standby" },
	{ "select my_function(id) from items", ROUTER_SPLIT_PRIMARY, "user function: may write" },
	{ "select public.lower(name) from items", ROUTER_SPLIT_PRIMARY, "a schema's own lower" },
	{ "select * from my_srf()", ROUTER_SPLIT_PRIMARY, "user set-returning function in FROM" },
	{ "select pg_advisory_lock(1)", ROUTER_SPLIT_PRIMARY, "session lock" },
	{ "select set_config('a.b', 'c', false)", ROUTER_SPLIT_PRIMARY, "changes the session" },
	{ "select * from pg_temp.t", ROUTER_SPLIT_PRIMARY, "temporary tables live on the primary" },
	{ "select * from items tablesample system (10)", ROUTER_SPLIT_PRIMARY, "TABLESAMPLE: not a known node" },
	{ "select 1; select 2", ROUTER_SPLIT_PRIMARY, "several statements" },
	{ "select 1; insert into items values (2, 'b')", ROUTER_SPLIT_PRIMARY, "a write after a read" },
	{ "explain select 1", ROUTER_SPLIT_PRIMARY, "EXPLAIN (could be ANALYZE of a write)" },
	{ "show search_path", ROUTER_SPLIT_PRIMARY, "not a SELECT" },
	{ "set search_path = a", ROUTER_SPLIT_PRIMARY, "SET" },
	{ "copy items to stdout", ROUTER_SPLIT_PRIMARY, "COPY" },
	{ "lock table items", ROUTER_SPLIT_PRIMARY, "LOCK" },
	{ "call p()", ROUTER_SPLIT_PRIMARY, "CALL" },
	{ "do $$ begin end $$", ROUTER_SPLIT_PRIMARY, "DO" },
	{ "selec 1", ROUTER_SPLIT_PRIMARY, "parse error" },
	{ "", ROUTER_SPLIT_PRIMARY, "empty" },
};

static void test_cases(void **state)
{
	int bad = 0;
	(void)state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		enum router_split got = router_split_decide(cases[i].sql, strlen(cases[i].sql));
		if (got != cases[i].want) {
			print_error("%s: got %s, want %s (%s)\n", cases[i].sql, router_split_name(got),
				    router_split_name(cases[i].want), cases[i].why);
			bad++;
		}
	}
	assert_int_equal(bad, 0);
}

/* The text ends at its length or its first NUL, as for the server. */
static void test_bounds(void **state)
{
	static const char with_nul[] = "select 1\0; insert into items values (1, 'x')";
	char big[FLIGHT_MAX_SQL + 64];
	(void)state;

	assert_int_equal(router_split_decide(with_nul, sizeof(with_nul) - 1), ROUTER_SPLIT_STANDBY);
	assert_int_equal(router_split_decide("select 1; delete from items", 8), ROUTER_SPLIT_STANDBY);
	assert_int_equal(router_split_decide("begin read only", 5), ROUTER_SPLIT_PRIMARY); /* "begin" */
	/* Too long to judge: the primary. */
	memset(big, ' ', sizeof(big));
	memcpy(big, "select 1", 8);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(router_split_decide(big, sizeof(big) - 1), ROUTER_SPLIT_PRIMARY);
}

/* flight_read_only must not change the cache's own verdicts: the walk is shared. */
static void test_cache_unchanged(void **state)
{
	struct flight_decision d;
	(void)state;

	flight_decide("select count(*) from items", 26, NULL, &d);
	assert_int_equal(d.verdict, FLIGHT_CALL);
	flight_decide("select * from pg_class", 22, NULL, &d);
	assert_int_equal(d.verdict, FLIGHT_CATALOG);
	flight_decide("select 'now'::timestamptz", 25, NULL, &d);
	assert_int_equal(d.verdict, FLIGHT_TIME_LITERAL);
	flight_decide("select id from items where id = 1", 33, NULL, &d);
	assert_int_equal(d.verdict, FLIGHT_OK);
	assert_int_equal(d.ntables, 1);
	assert_true(flight_read_only("select count(*) from items", 26));
	assert_true(flight_read_only("select * from pg_class", 22));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cases),
		cmocka_unit_test(test_bounds),
		cmocka_unit_test(test_cache_unchanged),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
