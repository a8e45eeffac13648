/* Unit tests for the statement classifier: every kind through the statement that produces it
 * (which also checks each protobuf field number classify.c reads), statement offsets in
 * multi-statement texts, literals and comments that hide keywords, parse errors, the length
 * and depth limits, and that the lexical pre-check never says no where the parser says yes. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "router/classify.h"

/* One statement and what it must classify as. name NULL: don't check; flags are checked. */
struct single {
	const char *sql;
	enum classify_kind kind;
	const char *name;
	unsigned flags;
};

static const struct single singles[] = {
	/* SET and its spellings */
	{"SET search_path TO a, b", CLASSIFY_SET, "search_path", 0},
	{"set Search_Path = 'x'", CLASSIFY_SET, "search_path", 0},
	{"SET \"Search_Path\" = x", CLASSIFY_SET, "search_path", 0},
	{"SET SESSION statement_timeout = 5", CLASSIFY_SET, "statement_timeout", 0},
	{"sEt sEsSiOn work_mem tO '1MB'", CLASSIFY_SET, "work_mem", 0},
	{"SET myapp.user_id = 42", CLASSIFY_SET, "myapp.user_id", 0},
	{"SET TIME ZONE 'UTC'", CLASSIFY_SET, "timezone", 0},
	{"SET NAMES 'utf8'", CLASSIFY_SET, "client_encoding", 0},
	{"SET SCHEMA 'x'", CLASSIFY_SET, "search_path", 0},
	{"SET XML OPTION DOCUMENT", CLASSIFY_SET, "xmloption", 0},
	{"SET work_mem FROM CURRENT", CLASSIFY_SET, "work_mem", CLASSIFY_F_FROM_CURRENT},
	{"SET LOCAL statement_timeout = 5", CLASSIFY_SET_LOCAL, "statement_timeout", 0},
	{"set local Work_Mem to default", CLASSIFY_SET_LOCAL, "work_mem", 0},
	{"SET LOCAL ROLE bob", CLASSIFY_SET_LOCAL, "role", 0},
	/* RESET, and SET ... TO DEFAULT which is the same thing */
	{"RESET work_mem", CLASSIFY_RESET, "work_mem", 0},
	{"SET x.y = DEFAULT", CLASSIFY_RESET, "x.y", 0},
	{"SET TIME ZONE LOCAL", CLASSIFY_RESET, "timezone", 0},
	{"SET NAMES", CLASSIFY_RESET, "client_encoding", 0},
	{"reset TIME ZONE", CLASSIFY_RESET, "timezone", 0},
	{"RESET ALL", CLASSIFY_RESET_ALL, "", 0},
	/* roles */
	{"SET ROLE admin", CLASSIFY_SESSION_AUTH, "role", 0},
	{"SET ROLE NONE", CLASSIFY_SESSION_AUTH, "role", 0},
	{"SET role = DEFAULT", CLASSIFY_SESSION_AUTH, "role", 0},
	{"RESET ROLE", CLASSIFY_SESSION_AUTH, "role", 0},
	{"SET SESSION AUTHORIZATION 'u'", CLASSIFY_SESSION_AUTH, "session_authorization", 0},
	{"SET SESSION AUTHORIZATION DEFAULT", CLASSIFY_SESSION_AUTH, "session_authorization", 0},
	{"RESET SESSION AUTHORIZATION", CLASSIFY_SESSION_AUTH, "session_authorization", 0},
	/* DISCARD */
	{"DISCARD ALL", CLASSIFY_DISCARD_ALL, "", 0},
	{"discard plans", CLASSIFY_DISCARD_OTHER, "plans", 0},
	{"DISCARD SEQUENCES", CLASSIFY_DISCARD_OTHER, "sequences", 0},
	{"DISCARD TEMP", CLASSIFY_DISCARD_OTHER, "temp", 0},
	{"DISCARD TEMPORARY", CLASSIFY_DISCARD_OTHER, "temp", 0},
	/* SQL-level prepared statements */
	{"PREPARE p(int) AS SELECT $1", CLASSIFY_PREPARE, "p", 0},
	{"PREPARE \"My Stmt\" AS SELECT 1", CLASSIFY_PREPARE, "My Stmt", 0},
	{"prepare Q1 as insert into t values (1)", CLASSIFY_PREPARE, "q1", 0},
	{"EXECUTE p(1)", CLASSIFY_EXECUTE, "p", 0},
	{"EXPLAIN EXECUTE p", CLASSIFY_EXECUTE, "p", 0},
	{"EXPLAIN (ANALYZE, BUFFERS) EXECUTE p(2)", CLASSIFY_EXECUTE, "p", 0},
	{"CREATE TABLE t AS EXECUTE p", CLASSIFY_EXECUTE, "p", 0},
	{"DEALLOCATE p", CLASSIFY_DEALLOCATE, "p", 0},
	{"DEALLOCATE PREPARE p", CLASSIFY_DEALLOCATE, "p", 0},
	{"DEALLOCATE ALL", CLASSIFY_DEALLOCATE_ALL, "", 0},
	{"deallocate prepare all", CLASSIFY_DEALLOCATE_ALL, "", 0},
	/* LISTEN */
	{"LISTEN chan", CLASSIFY_LISTEN, "chan", 0},
	{"LISTEN \"Chan\"", CLASSIFY_LISTEN, "Chan", 0},
	{"UNLISTEN chan", CLASSIFY_UNLISTEN, "chan", 0},
	{"UNLISTEN *", CLASSIFY_UNLISTEN_ALL, "", 0},
	/* cursors */
	{"DECLARE c CURSOR WITH HOLD FOR SELECT 1", CLASSIFY_HOLD_CURSOR, "c", 0},
	{"DECLARE c BINARY INSENSITIVE NO SCROLL CURSOR WITH HOLD FOR SELECT 1", CLASSIFY_HOLD_CURSOR, "c", 0},
	{"CLOSE c", CLASSIFY_CLOSE, "c", 0},
	{"CLOSE ALL", CLASSIFY_CLOSE_ALL, "", 0},
	/* temporary objects */
	{"CREATE TEMP TABLE t (a int)", CLASSIFY_TEMP_OBJECT, "t", 0},
	{"CREATE TEMPORARY TABLE IF NOT EXISTS t (a int)", CLASSIFY_TEMP_OBJECT, "t", 0},
	{"create local temp table t (a int)", CLASSIFY_TEMP_OBJECT, "t", 0},
	{"CREATE GLOBAL TEMPORARY TABLE t (a int)", CLASSIFY_TEMP_OBJECT, "t", 0},
	{"CREATE /* why not */ TEMP TABLE t (a int)", CLASSIFY_TEMP_OBJECT, "t", 0},
	{"CREATE TEMP TABLE t (a int) ON COMMIT DROP", CLASSIFY_TEMP_OBJECT, "t", CLASSIFY_F_ON_COMMIT_DROP},
	{"CREATE TEMP TABLE t (a int) ON COMMIT DELETE ROWS", CLASSIFY_TEMP_OBJECT, "t", 0},
	{"CREATE TEMP VIEW v AS SELECT 1", CLASSIFY_TEMP_OBJECT, "v", 0},
	{"CREATE OR REPLACE TEMP VIEW v AS SELECT 1", CLASSIFY_TEMP_OBJECT, "v", 0},
	{"CREATE TEMP RECURSIVE VIEW v (n) AS SELECT 1", CLASSIFY_TEMP_OBJECT, "v", 0},
	{"CREATE TEMP SEQUENCE s", CLASSIFY_TEMP_OBJECT, "s", 0},
	{"CREATE TABLE pg_temp.x (a int)", CLASSIFY_TEMP_OBJECT, "x", 0},
	{"CREATE TABLE \"pg_temp\".x (a int)", CLASSIFY_TEMP_OBJECT, "x", 0},
	{"CREATE VIEW pg_temp.v AS SELECT 1", CLASSIFY_TEMP_OBJECT, "v", 0},
	{"CREATE TEMP TABLE t AS SELECT 1", CLASSIFY_TEMP_OBJECT, "t", 0},
	{"CREATE TEMP TABLE t ON COMMIT DROP AS SELECT 1", CLASSIFY_TEMP_OBJECT, "t", CLASSIFY_F_ON_COMMIT_DROP},
	{"SELECT 1 INTO TEMP t", CLASSIFY_TEMP_OBJECT, "t", 0},
	{"SELECT 1 INTO TEMPORARY TABLE t", CLASSIFY_TEMP_OBJECT, "t", 0},
	{"SELECT 1 INTO pg_temp.t", CLASSIFY_TEMP_OBJECT, "t", 0},
	{"WITH w AS (SELECT 1 AS a) SELECT a INTO LOCAL TEMP t FROM w", CLASSIFY_TEMP_OBJECT, "t", 0},
	{"SELECT 1 AS a INTO TEMP t UNION SELECT 2 UNION SELECT 3", CLASSIFY_TEMP_OBJECT, "t", 0},
	{"EXPLAIN ANALYZE CREATE TEMP TABLE t AS SELECT 1", CLASSIFY_TEMP_OBJECT, "t", 0},
	{"EXPLAIN ANALYZE SELECT 1 INTO TEMP t", CLASSIFY_TEMP_OBJECT, "t", 0},
	{"CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'select 1'", CLASSIFY_TEMP_OBJECT, "f", 0},
	{"CREATE TYPE pg_temp.ty AS (a int)", CLASSIFY_TEMP_OBJECT, "", 0},
	{"CREATE INDEX ON pg_temp_3.t (a)", CLASSIFY_TEMP_OBJECT, "", 0},
	/* LOAD */
	{"LOAD 'auto_explain'", CLASSIFY_LOAD, "auto_explain", 0},
	/* transaction control */
	{"BEGIN", CLASSIFY_BEGIN, "", 0},
	{"begin work", CLASSIFY_BEGIN, "", 0},
	{"BEGIN ISOLATION LEVEL SERIALIZABLE", CLASSIFY_BEGIN, "", 0},
	{"START TRANSACTION READ ONLY", CLASSIFY_BEGIN, "", 0},
	{"COMMIT", CLASSIFY_COMMIT, "", 0},
	{"END", CLASSIFY_COMMIT, "", 0},
	{"COMMIT AND CHAIN", CLASSIFY_COMMIT, "", CLASSIFY_F_CHAIN},
	{"PREPARE TRANSACTION 'gx'", CLASSIFY_COMMIT, "gx", CLASSIFY_F_TWO_PHASE},
	{"ROLLBACK", CLASSIFY_ROLLBACK, "", 0},
	{"ABORT", CLASSIFY_ROLLBACK, "", 0},
	{"ROLLBACK AND CHAIN", CLASSIFY_ROLLBACK, "", CLASSIFY_F_CHAIN},
	{"SAVEPOINT s1", CLASSIFY_SAVEPOINT, "s1", 0},
	{"RELEASE s1", CLASSIFY_RELEASE, "s1", 0},
	{"RELEASE SAVEPOINT s1", CLASSIFY_RELEASE, "s1", 0},
	{"ROLLBACK TO s1", CLASSIFY_ROLLBACK_TO, "s1", 0},
	{"ROLLBACK TO SAVEPOINT s1", CLASSIFY_ROLLBACK_TO, "s1", 0},
	/* no session state */
	{"SELECT 1", CLASSIFY_OTHER, NULL, 0},
	{"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", CLASSIFY_OTHER, NULL, 0},
	{"SET TRANSACTION SNAPSHOT '00000003-0000001B-1'", CLASSIFY_OTHER, NULL, 0},
	{"SET transaction_isolation = 'serializable'", CLASSIFY_OTHER, NULL, 0},
	{"RESET TRANSACTION ISOLATION LEVEL", CLASSIFY_OTHER, NULL, 0},
	{"SET CONSTRAINTS ALL DEFERRED", CLASSIFY_OTHER, NULL, 0},
	{"COMMIT PREPARED 'gx'", CLASSIFY_OTHER, NULL, 0},
	{"ROLLBACK PREPARED 'gx'", CLASSIFY_OTHER, NULL, 0},
	{"DECLARE c CURSOR FOR SELECT 1", CLASSIFY_OTHER, NULL, 0},
	{"DECLARE c SCROLL CURSOR WITHOUT HOLD FOR SELECT 1", CLASSIFY_OTHER, NULL, 0},
	{"UPDATE t SET a = 1", CLASSIFY_OTHER, NULL, 0},
	{"ALTER TABLE t SET SCHEMA s", CLASSIFY_OTHER, NULL, 0},
	{"ALTER ROLE bob SET work_mem = '1MB'", CLASSIFY_OTHER, NULL, 0},
	{"ALTER DATABASE d RESET ALL", CLASSIFY_OTHER, NULL, 0},
	{"INSERT INTO t VALUES ('SET x = 1')", CLASSIFY_OTHER, NULL, 0},
	{"SHOW work_mem", CLASSIFY_OTHER, NULL, 0},
	{"NOTIFY chan, 'x'", CLASSIFY_OTHER, NULL, 0},
	{"CREATE TABLE t (a int)", CLASSIFY_OTHER, NULL, 0},
	{"CREATE TABLE t (temp int)", CLASSIFY_OTHER, NULL, 0},
	{"CREATE UNLOGGED TABLE t (a int)", CLASSIFY_OTHER, NULL, 0},
	{"SELECT temp FROM weather", CLASSIFY_OTHER, NULL, 0},
	{"SELECT * FROM pg_temp.t", CLASSIFY_OTHER, NULL, 0},
	{"EXPLAIN CREATE TEMP TABLE t AS SELECT 1", CLASSIFY_OTHER, NULL, 0},
	{"EXPLAIN SELECT 1 INTO TEMP t", CLASSIFY_OTHER, NULL, 0},
	{"SELECT 1 INTO t", CLASSIFY_OTHER, NULL, 0},
	{"CREATE TABLE t2 AS SELECT 1", CLASSIFY_OTHER, NULL, 0},
	{"GRANT EXECUTE ON FUNCTION f() TO bob", CLASSIFY_OTHER, NULL, 0},
	{"CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'", CLASSIFY_OTHER, NULL, 0},
	{"DO $$ BEGIN SET work_mem = '1MB'; END $$", CLASSIFY_OTHER, NULL, 0},
	{"select 'SET x = 1'", CLASSIFY_OTHER, NULL, 0},
	{"select $$; SET x = 1; $$", CLASSIFY_OTHER, NULL, 0},
	{"select $a$ $$ ; SET x = 1; $ $a$", CLASSIFY_OTHER, NULL, 0},
	{"select E'\\'; SET x = 1; --'", CLASSIFY_OTHER, NULL, 0},
	{"select \"SET x = 1; \"", CLASSIFY_OTHER, NULL, 0},
	{"select 1 -- ; SET x = 1", CLASSIFY_OTHER, NULL, 0},
	{"select 1 /* ; SET x = 1; */", CLASSIFY_OTHER, NULL, 0},
	{"select 1 /* /* */ ; SET x = 1; */", CLASSIFY_OTHER, NULL, 0},
	{"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END", CLASSIFY_OTHER, NULL, 0},
	{"CREATE RULE r AS ON INSERT TO t DO ALSO (NOTIFY c; NOTIFY d)", CLASSIFY_OTHER, NULL, 0},
};

static bool is_session_kind(enum classify_kind k)
{
	switch (k) {
	case CLASSIFY_OTHER:
	case CLASSIFY_BEGIN:
	case CLASSIFY_COMMIT:
	case CLASSIFY_ROLLBACK:
	case CLASSIFY_SAVEPOINT:
	case CLASSIFY_RELEASE:
	case CLASSIFY_ROLLBACK_TO:
	case CLASSIFY_UNKNOWN:
		return false;
	default:
		return true;
	}
}

/* classify_sql on an exact-size heap copy without a NUL, so a sanitizer build sees any read
 * past the end; also checks the oracle and the pre-check agree with it. */
static int classify_exact(const char *sql, size_t len, struct classify_result *out)
{
	char *copy = malloc(len ? len : 1);
	struct classify_result ex;
	int rc, rc_ex;

	assert_non_null(copy);
	memcpy(copy, sql, len);
	rc = classify_sql(copy, len, out);
	rc_ex = classify_sql_exhaustive(copy, len, &ex);
	assert_int_equal(rc, rc_ex);
	assert_int_equal(out->nstmts, ex.nstmts);
	assert_int_equal(out->parse_error, ex.parse_error);
	assert_int_equal(out->nsession, ex.nsession);
	for (int i = 0; i < out->nsession; i++) {
		assert_int_equal(out->stmts[i].kind, ex.stmts[i].kind);
		assert_int_equal(out->stmts[i].index, ex.stmts[i].index);
		assert_int_equal(out->stmts[i].offset, ex.stmts[i].offset);
		assert_int_equal(out->stmts[i].length, ex.stmts[i].length);
		assert_int_equal(out->stmts[i].flags, ex.stmts[i].flags);
		assert_string_equal(out->stmts[i].name, ex.stmts[i].name);
		if (is_session_kind(out->stmts[i].kind) && !classify_maybe_session(copy, len))
			fail_msg("maybe_session false for %s in: %.*s", classify_kind_name(out->stmts[i].kind),
			         (int)len, sql);
	}
	free(copy);
	return rc;
}

static void check_single(const struct single *c)
{
	struct classify_result r;
	size_t len = strlen(c->sql);

	assert_int_equal(classify_exact(c->sql, len, &r), 0);
	if (r.parse_error)
		fail_msg("parse error: %s", c->sql);
	assert_int_equal(r.nstmts, 1);
	if (c->kind == CLASSIFY_OTHER) {
		if (r.nsession != 0)
			fail_msg("%s: got %s, want other", c->sql, classify_kind_name(r.stmts[0].kind));
		return;
	}
	if (r.nsession != 1)
		fail_msg("%s: %d entries, want 1 %s", c->sql, r.nsession, classify_kind_name(c->kind));
	if (r.stmts[0].kind != c->kind)
		fail_msg("%s: got %s, want %s", c->sql, classify_kind_name(r.stmts[0].kind), classify_kind_name(c->kind));
	if (c->name && strcmp(r.stmts[0].name, c->name) != 0)
		fail_msg("%s: name \"%s\", want \"%s\"", c->sql, r.stmts[0].name, c->name);
	if (r.stmts[0].flags != c->flags)
		fail_msg("%s: flags %#x, want %#x", c->sql, r.stmts[0].flags, c->flags);
	assert_int_equal(r.stmts[0].index, 0);
	assert_int_equal(r.stmts[0].offset, 0);
	assert_int_equal(r.stmts[0].length, len);
}

static void test_every_kind(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof singles / sizeof singles[0]; i++)
		check_single(&singles[i]);
}

static void test_every_kind_is_covered(void **state)
{
	(void)state;
	for (int k = CLASSIFY_OTHER; k <= CLASSIFY_UNKNOWN; k++) {
		bool seen = k == CLASSIFY_UNKNOWN; /* test_depth_limit */
		for (size_t i = 0; i < sizeof singles / sizeof singles[0]; i++)
			seen |= (int)singles[i].kind == k;
		if (!seen)
			fail_msg("no test for %s", classify_kind_name((enum classify_kind)k));
		assert_string_not_equal(classify_kind_name((enum classify_kind)k), "?");
	}
}

/* Statements start where a statement can start: whatever is said inside literals, comments,
 * or in the middle of another statement does not count. */
static void test_maybe_session(void **state)
{
	(void)state;
	static const char *yes[] = {
		"SET x = 1", "  set x = 1", "RESET x", "DISCARD ALL", "PREPARE p AS SELECT 1",
		"EXECUTE p", "DEALLOCATE p", "LISTEN c", "UNLISTEN c", "DECLARE c CURSOR FOR SELECT 1",
		"LOAD 'x'", "CLOSE c", "select 1; SeT x = 1", "select 1;set x = 1", "/* c */ SET x = 1",
		"-- c\nSET x = 1", "/* a /* b */ c */SET x = 1", "EXPLAIN EXECUTE p",
		"CREATE TEMP TABLE t ()", "create temporary table t ()", "CREATE OR REPLACE TEMP VIEW v AS SELECT 1",
		"create local temp table t ()", "CREATE GLOBAL TEMPORARY TABLE t ()", "SELECT 1 INTO TEMP t",
		"CREATE /* x */ TEMP TABLE t ()", "CREATE TABLE pg_temp.t ()", "CREATE TABLE PG_TEMP.t ()",
		"CREATE TABLE \"pg_temp\".t ()", "create table pg_temp_3.t ()", "CREATE TABLE U&\"\\0070g_temp\".t ()",
		"select 'a\\'; SET x = 1; --'", /* standard_conforming_strings = on: 'a\' ends */
		"select e'x'; set x = 1", "select 1e'x'; set x = 1", "select $1; set x = 1",
		"select a$b$; set x = 1", "select $a; set x = 1",
	};
	static const char *no[] = {
		"", "   ", "SELECT 1", "UPDATE t SET a = 1", "ALTER TABLE t RESET fillfactor",
		"select 'SET x = 1'", "select 'it''s; SET x = 1'", "select E'\\'; SET x = 1; --'",
		"select $$; SET x = 1; $$", "select $tag$ $$; SET x = 1; $x$ $tag$", "select \"; SET x = 1\"",
		"select 1 -- ; SET x = 1", "select 1 /* ; SET x = 1 */", "select 1 /* /* */ ; SET x = 1 */",
		"SELECT temp FROM weather", "INSERT INTO weather (temp) VALUES (1)", "select settings from t",
		"select reset_at from t", "select x as set_x", "select b'1'; ", "select U&'\\0041'",
		"CREATE TABLE t (temp int)", "select n'set'", "select x'1f'",
	};

	for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
		if (!classify_maybe_session(yes[i], strlen(yes[i])))
			fail_msg("maybe_session false: %s", yes[i]);
	for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
		if (classify_maybe_session(no[i], strlen(no[i])))
			fail_msg("maybe_session true: %s", no[i]);
	assert_false(classify_maybe_session(NULL, 0));
	/* The length bounds the scan: the SET past it is not seen. */
	assert_false(classify_maybe_session("select 1; SET x = 1", 9));
}

/* Each statement's text is exactly sql[offset, offset + length). */
static void expect_text(const char *sql, const struct classify_stmt *st, const char *text)
{
	size_t n = strlen(text);
	if (st->length != n || memcmp(sql + st->offset, text, n) != 0)
		fail_msg("text \"%.*s\", want \"%s\"", (int)st->length, sql + st->offset, text);
}

static void test_multi_statement(void **state)
{
	(void)state;
	struct classify_result r;
	const char *sql = "SET a=1; SELECT 1; SET LOCAL b=2";

	assert_int_equal(classify_exact(sql, strlen(sql), &r), 0);
	assert_int_equal(r.nstmts, 3);
	assert_int_equal(r.nsession, 2);
	assert_false(r.truncated);
	assert_int_equal(r.stmts[0].kind, CLASSIFY_SET);
	assert_string_equal(r.stmts[0].name, "a");
	assert_int_equal(r.stmts[0].index, 0);
	expect_text(sql, &r.stmts[0], "SET a=1");
	assert_int_equal(r.stmts[1].kind, CLASSIFY_SET_LOCAL);
	assert_string_equal(r.stmts[1].name, "b");
	assert_int_equal(r.stmts[1].index, 2);
	expect_text(sql, &r.stmts[1], "SET LOCAL b=2");

	/* Whitespace and comments around a statement are not part of it; those inside are. */
	sql = "  /* c */ SET a = 1 ;\n-- x\n\tRESET b;;; BEGIN; LISTEN \"x;y\";select ';SET c=1'; COMMIT -- end";
	assert_int_equal(classify_exact(sql, strlen(sql), &r), 0);
	assert_int_equal(r.nstmts, 6);
	assert_int_equal(r.nsession, 5);
	expect_text(sql, &r.stmts[0], "SET a = 1");
	expect_text(sql, &r.stmts[1], "RESET b");
	assert_int_equal(r.stmts[1].index, 1);
	expect_text(sql, &r.stmts[2], "BEGIN");
	assert_int_equal(r.stmts[2].kind, CLASSIFY_BEGIN);
	expect_text(sql, &r.stmts[3], "LISTEN \"x;y\"");
	assert_string_equal(r.stmts[3].name, "x;y");
	assert_int_equal(r.stmts[3].index, 3);
	expect_text(sql, &r.stmts[4], "COMMIT");
	assert_int_equal(r.stmts[4].index, 5);

	/* A trailing "--" comment stays out, so texts joined with ';' replay as they should. */
	sql = "SET a = /* x */ 1 -- note\n; SET b = $$--$$ -- note";
	assert_int_equal(classify_exact(sql, strlen(sql), &r), 0);
	assert_int_equal(r.nsession, 2);
	expect_text(sql, &r.stmts[0], "SET a = /* x */ 1");
	expect_text(sql, &r.stmts[1], "SET b = $$--$$");
	sql = "SET a = -- why\r1 /* a /* nested */ comment */  ";
	assert_int_equal(classify_exact(sql, strlen(sql), &r), 0);
	expect_text(sql, &r.stmts[0], "SET a = -- why\r1");

	/* SET SESSION CHARACTERISTICS: one entry per default it sets, same statement text. */
	sql = "select 1; SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE";
	assert_int_equal(classify_exact(sql, strlen(sql), &r), 0);
	assert_int_equal(r.nstmts, 2);
	assert_int_equal(r.nsession, 3);
	assert_string_equal(r.stmts[0].name, "default_transaction_isolation");
	assert_string_equal(r.stmts[1].name, "default_transaction_read_only");
	assert_string_equal(r.stmts[2].name, "default_transaction_deferrable");
	for (int i = 0; i < 3; i++) {
		assert_int_equal(r.stmts[i].kind, CLASSIFY_SET);
		assert_int_equal(r.stmts[i].index, 1);
		expect_text(sql, &r.stmts[i], sql + 10);
	}
	sql = "SET LOCAL SESSION CHARACTERISTICS AS TRANSACTION READ WRITE";
	assert_int_equal(classify_exact(sql, strlen(sql), &r), 0);
	assert_int_equal(r.nsession, 1);
	assert_int_equal(r.stmts[0].kind, CLASSIFY_SET_LOCAL);
	assert_string_equal(r.stmts[0].name, "default_transaction_read_only");

	/* standard_conforming_strings = on: a backslash does not escape in a plain literal. */
	sql = "select 'a\\'; SET x = 1; --'";
	assert_int_equal(classify_exact(sql, strlen(sql), &r), 0);
	assert_int_equal(r.nstmts, 2);
	assert_int_equal(r.nsession, 1);
	expect_text(sql, &r.stmts[0], "SET x = 1");
}

static void test_truncated(void **state)
{
	(void)state;
	struct classify_result r;
	char sql[1024] = "";

	for (int i = 0; i < 20; i++)
		snprintf(sql + strlen(sql), sizeof sql - strlen(sql), "SET v%d = %d; ", i, i);
	assert_int_equal(classify_exact(sql, strlen(sql), &r), 0);
	assert_int_equal(r.nstmts, 20);
	assert_int_equal(r.nsession, CLASSIFY_MAX_STMTS);
	assert_true(r.truncated);
	assert_string_equal(r.stmts[15].name, "v15");
	assert_int_equal(r.stmts[15].index, 15);
}

static void test_parse_errors(void **state)
{
	(void)state;
	static const char *bad[] = {
		"SELEC 1", "SET x = 1; SELEC 1", "SET CATALOG 'x'", "select 'unterminated", "SET x =",
		"select $$ unterminated", "select 1 /* unterminated", "select \"unterminated",
	};
	struct classify_result r;

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_int_equal(classify_exact(bad[i], strlen(bad[i]), &r), 0);
		if (!r.parse_error)
			fail_msg("no parse error: %s", bad[i]);
		assert_int_equal(r.nstmts, 0);
		assert_int_equal(r.nsession, 0);
	}
}

static void test_empty(void **state)
{
	(void)state;
	static const char *empty[] = {"", "   \n", "-- nothing", "/* nothing */", ";", " ; ;"};
	struct classify_result r;

	for (size_t i = 0; i < sizeof empty / sizeof empty[0]; i++) {
		assert_int_equal(classify_exact(empty[i], strlen(empty[i]), &r), 0);
		assert_false(r.parse_error);
		assert_int_equal(r.nstmts, 0);
		assert_int_equal(r.nsession, 0);
	}
	assert_int_equal(classify_sql(NULL, 0, &r), 0);
	assert_int_equal(r.nstmts, 0);
}

/* The text ends at the first NUL byte, as it does for the server. */
static void test_nul_ends_text(void **state)
{
	(void)state;
	static const char sql[] = "SET a = 1\0; SET b = 2";
	struct classify_result r;

	assert_int_equal(classify_exact(sql, sizeof sql - 1, &r), 0);
	assert_int_equal(r.nstmts, 1);
	assert_int_equal(r.nsession, 1);
	assert_string_equal(r.stmts[0].name, "a");
	assert_int_equal(r.stmts[0].length, 9);
}

static void test_length_limit(void **state)
{
	(void)state;
	size_t n = CLASSIFY_MAX_LEN + 1;
	char *sql = malloc(n);
	struct classify_result r;

	assert_non_null(sql);
	/* A SET, then a block comment padding the text to exactly the limit: classified. */
	memset(sql, ' ', n);
	memcpy(sql, "SET a = 1; /*", 13);
	memcpy(sql + CLASSIFY_MAX_LEN - 2, "*/", 2);
	assert_int_equal(classify_sql(sql, CLASSIFY_MAX_LEN, &r), 0);
	assert_int_equal(r.nstmts, 1);
	assert_int_equal(r.nsession, 1);
	assert_true(classify_maybe_session(sql, CLASSIFY_MAX_LEN));
	/* One byte more is not, and leaves no entries behind. */
	r.nsession = 5;
	assert_int_equal(classify_sql(sql, n, &r), -E2BIG);
	assert_int_equal(r.nstmts, 0);
	assert_int_equal(r.nsession, 0);
	/* A NUL within the limit makes the text short enough. */
	sql[20] = '\0';
	assert_int_equal(classify_sql(sql, n, &r), 0);
	free(sql);
}

static char *repeat(const char *head, const char *unit, size_t times, const char *tail)
{
	size_t hl = strlen(head), ul = strlen(unit), tl = strlen(tail);
	char *s = malloc(hl + ul * times + tl + 1), *p;

	assert_non_null(s);
	memcpy(s, head, hl);
	p = s + hl;
	for (size_t i = 0; i < times; i++, p += ul)
		memcpy(p, unit, ul);
	memcpy(p, tail, tl + 1);
	return s;
}

/* A deep expression in a statement that needs no tree costs nothing; in one that does, it is
 * UNKNOWN rather than a stack overflow in libpg_query. */
static void test_depth_limit(void **state)
{
	(void)state;
	struct classify_result r;
	char *sql = repeat("SET a = 1; SELECT 1", "+1", 200000, "; RESET b");

	assert_int_equal(classify_sql(sql, strlen(sql), &r), 0);
	assert_int_equal(r.nstmts, 3);
	assert_int_equal(r.nsession, 2);
	assert_int_equal(r.stmts[0].kind, CLASSIFY_SET);
	assert_int_equal(r.stmts[1].kind, CLASSIFY_RESET);
	assert_int_equal(r.stmts[1].index, 2);
	assert_int_equal(classify_sql_exhaustive(sql, strlen(sql), &r), 0);
	assert_int_equal(r.nsession, 3);
	assert_int_equal(r.stmts[1].kind, CLASSIFY_UNKNOWN);
	assert_int_equal(r.stmts[1].index, 1);
	free(sql);

	sql = repeat("PREPARE p AS SELECT 1", "+1", CLASSIFY_MAX_TOKENS + 1, "");
	assert_int_equal(classify_sql(sql, strlen(sql), &r), 0);
	assert_int_equal(r.nsession, 1);
	assert_int_equal(r.stmts[0].kind, CLASSIFY_UNKNOWN);
	assert_int_equal(r.stmts[0].length, strlen(sql));
	free(sql);

	/* Just under the bound is parsed for real. */
	sql = repeat("PREPARE p AS SELECT 1", "+1", CLASSIFY_MAX_TOKENS - 10, "");
	assert_int_equal(classify_sql(sql, strlen(sql), &r), 0);
	assert_int_equal(r.nsession, 1);
	assert_int_equal(r.stmts[0].kind, CLASSIFY_PREPARE);
	free(sql);

	/* Nested brackets run into the grammar's own stack limit: a parse error, no crash. */
	sql = repeat("SET a = 1; SELECT ", "(", 100000, "1");
	assert_int_equal(classify_sql(sql, strlen(sql), &r), 0);
	assert_true(r.parse_error);
	free(sql);
}

static void test_long_names(void **state)
{
	(void)state;
	struct classify_result r;
	char sql[512], want[CLASSIFY_NAME_MAX];
	char part[64];

	/* Identifiers are cut to 63 bytes by the parser; a dotted GUC name can still be longer. */
	memset(part, 'a', 63);
	part[63] = '\0';
	snprintf(sql, sizeof sql, "SET %s.%s = 1", part, part);
	assert_int_equal(classify_exact(sql, strlen(sql), &r), 0);
	assert_int_equal(r.nsession, 1);
	assert_int_equal(r.stmts[0].flags, CLASSIFY_F_NAME_TRUNCATED);
	memcpy(want, sql + 4, CLASSIFY_NAME_MAX - 1);
	want[CLASSIFY_NAME_MAX - 1] = '\0';
	assert_string_equal(r.stmts[0].name, want);
	assert_int_equal(strlen(r.stmts[0].name), CLASSIFY_NAME_MAX - 1);

	snprintf(sql, sizeof sql, "PREPARE %s%s AS SELECT 1", part, part);
	assert_int_equal(classify_exact(sql, strlen(sql), &r), 0);
	assert_int_equal(r.stmts[0].flags, 0);
	assert_string_equal(r.stmts[0].name, part);
}

static void test_valid_guc_name(void **state)
{
	(void)state;
	static const char *good[] = {"work_mem", "search_path", "TimeZone", "a.b", "myapp.user_id",
	                             "a.b.c", "_x", "x$1", "a1.b2", "\xc3\xa9t\xc3\xa9"};
	static const char *bad[] = {"", ".", "a.", ".a", "a..b", "1a", "a.1b", "a b", "a-b", "a;b",
	                            "$a", "a.$b", "\"a\""};
	char long_name[CLASSIFY_NAME_MAX + 1];

	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
		if (!classify_is_valid_guc_name(good[i]))
			fail_msg("not valid: %s", good[i]);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		if (classify_is_valid_guc_name(bad[i]))
			fail_msg("valid: %s", bad[i]);
	assert_false(classify_is_valid_guc_name(NULL));
	memset(long_name, 'a', CLASSIFY_NAME_MAX - 1);
	long_name[CLASSIFY_NAME_MAX - 1] = '\0';
	assert_true(classify_is_valid_guc_name(long_name));
	long_name[CLASSIFY_NAME_MAX - 1] = 'a';
	long_name[CLASSIFY_NAME_MAX] = '\0';
	assert_false(classify_is_valid_guc_name(long_name));
}

/* libpg_query keeps its state in thread-local memory contexts: workers may classify at once. */
static void *classify_loop(void *arg)
{
	(void)arg;
	for (int i = 0; i < 300; i++) {
		const struct single *c = &singles[(size_t)i % (sizeof singles / sizeof singles[0])];
		struct classify_result r;
		if (classify_sql(c->sql, strlen(c->sql), &r) != 0 || r.nstmts != 1)
			return (void *)1;
		if (c->kind == CLASSIFY_OTHER ? r.nsession != 0 : (r.nsession != 1 || r.stmts[0].kind != c->kind))
			return (void *)1;
		struct classify_result bad;
		if (classify_sql("SET x = 1; SELEC", 16, &bad) != 0 || !bad.parse_error)
			return (void *)1;
	}
	return NULL;
}

/* Calls: what the pre-check lets through without a parse, and what the tree says. */
static void test_calls(void **state)
{
	(void)state;
	static const struct {
		const char *sql;
		bool maybe;      /* classify_maybe_session */
		unsigned calls;  /* classify_result.calls */
		const char *set; /* the one set_config name recorded, or NULL */
	} cases[] = {
		{ "SELECT count(*), now(), lower(x), pg_catalog.upper(y) FROM t", false, 0, NULL },
		{ "INSERT INTO t (a, b) VALUES (1, 2)", false, 0, NULL },
		{ "CREATE TABLE t (a numeric(10, 2), b varchar(3))", false, 0, NULL },
		{ "SELECT x FROM generate_series(1, 3) AS g(x) WHERE x IN (1, 2) AND EXISTS (SELECT 1)", false, 0, NULL },
		{ "SELECT 'myfunc(1)', $$f(1)$$ -- g(1)\n", false, 0, NULL },
		{ "SELECT pg_advisory_xact_lock(1)", false, 0, NULL },
		{ "SELECT myfunc(1)", true, CLASSIFY_CALL_RESET, NULL },
		{ "SELECT x FROM t WHERE y = public.lower(x)", true, CLASSIFY_CALL_RESET, NULL },
		{ "SELECT f /* c */ (1)", true, CLASSIFY_CALL_RESET, NULL },
		{ "SELECT * FROM my_srf(2) AS t(x)", true, CLASSIFY_CALL_RESET, NULL },
		{ "DO $$BEGIN PERFORM 1; END$$", true, CLASSIFY_CALL_RESET, NULL },
		{ "select 1; call p()", true, CLASSIFY_CALL_RESET, NULL },
		{ "SELECT \"lower\"('A')", true, 0, NULL },
		{ "SELECT count(*) OVER (PARTITION BY a) FROM t", true, 0, NULL },
		{ "SELECT extract(year FROM now()), substring('abc' FROM 2), trim(' x ')", false, 0, NULL },
		{ "SELECT pg_advisory_lock(1)", true, CLASSIFY_CALL_PIN, NULL },
		{ "SELECT pg_try_advisory_lock_shared(1, 2)", true, CLASSIFY_CALL_PIN, NULL },
		{ "SELECT setseed(0.5)", true, CLASSIFY_CALL_PIN, NULL },
		/* Unlocks only give locks up (asyncpg's Pool release): nothing to pin or reset. */
		{ "SELECT pg_advisory_unlock_all()", false, 0, NULL },
		{ "SELECT pg_advisory_unlock(81), pg_catalog.pg_advisory_unlock_shared(1, 2)", false, 0, NULL },
		{ "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;", true, 0, NULL },
		{ "SELECT dblink_connect('c', 'dbname=x')", true, CLASSIFY_CALL_PIN, NULL },
		{ "SELECT set_config('Work_Mem', '1MB', false)", true, 0, "work_mem" },
		{ "SELECT pg_catalog.set_config('a.b', 'x', 'f')", true, 0, "a.b" },
		{ "SELECT set_config('a.b', $1, true)", true, 0, NULL },
		{ "SELECT set_config($1, 'x', false)", true, CLASSIFY_CALL_PIN, NULL },
		{ "SELECT public.set_config('a.b', 'x', true)", true, CLASSIFY_CALL_RESET, NULL },
	};
	struct classify_result r;

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const char *sql = cases[i].sql;
		if (classify_maybe_session(sql, strlen(sql)) != cases[i].maybe)
			fail_msg("maybe_session is %d: %s", !cases[i].maybe, sql);
		assert_int_equal(classify_sql(sql, strlen(sql), &r), 0);
		if (r.calls != cases[i].calls)
			fail_msg("calls 0x%x, want 0x%x: %s", r.calls, cases[i].calls, sql);
		assert_int_equal(r.nset_configs, cases[i].set ? 1 : 0);
		if (cases[i].set)
			assert_string_equal(r.set_configs[0], cases[i].set);
		/* The exhaustive oracle reads every statement's calls: it must agree. */
		struct classify_result ex;
		assert_int_equal(classify_sql_exhaustive(sql, strlen(sql), &ex), 0);
		if (ex.calls != r.calls || ex.nset_configs != r.nset_configs)
			fail_msg("exhaustive disagrees: %s", sql);
	}
	/* More set_config names than fit: pinned rather than forgotten. */
	char many[2048] = "SELECT set_config('a.a0','1',false)";
	for (int i = 1; i <= CLASSIFY_MAX_SET_CONFIGS; i++)
		snprintf(many + strlen(many), sizeof many - strlen(many), ", set_config('a.a%d','1',false)", i);
	assert_int_equal(classify_sql(many, strlen(many), &r), 0);
	assert_true(r.calls & CLASSIFY_CALL_PIN);
	assert_int_equal(r.nset_configs, CLASSIFY_MAX_SET_CONFIGS);
}

/* standard_conforming_strings = off: the lexer and the parser read '...' as the server does. */
static void test_backslash_quotes(void **state)
{
	(void)state;
	struct classify_result r;
	const char *hidden_when_off = "select 'a\\'; SET x = 1; --'";   /* on: SET runs; off: one string */
	const char *hidden_when_on = "select 'x\\' ' ; SET y = 2; -- '"; /* on: two strings; off: SET runs */

	assert_true(classify_maybe_session_opts(hidden_when_off, strlen(hidden_when_off), 0));
	assert_false(classify_maybe_session_opts(hidden_when_off, strlen(hidden_when_off), CLASSIFY_O_BACKSLASH_QUOTES));
	assert_int_equal(classify_sql_opts(hidden_when_off, strlen(hidden_when_off), CLASSIFY_O_BACKSLASH_QUOTES, &r), 0);
	assert_false(r.parse_error);
	assert_int_equal(r.nstmts, 1);
	assert_int_equal(r.nsession, 0);

	assert_false(classify_maybe_session_opts(hidden_when_on, strlen(hidden_when_on), 0));
	assert_true(classify_maybe_session_opts(hidden_when_on, strlen(hidden_when_on), CLASSIFY_O_BACKSLASH_QUOTES));
	assert_int_equal(classify_sql_opts(hidden_when_on, strlen(hidden_when_on), CLASSIFY_O_BACKSLASH_QUOTES, &r), 0);
	assert_false(r.parse_error);
	assert_int_equal(r.nsession, 1);
	assert_int_equal(r.stmts[0].kind, CLASSIFY_SET);
	assert_string_equal(r.stmts[0].name, "y");
	/* The option is per call: the thread's parser is back to on afterwards. */
	assert_int_equal(classify_sql(hidden_when_on, strlen(hidden_when_on), &r), 0);
	assert_int_equal(r.nsession, 0);
	assert_int_equal(classify_sql_exhaustive_opts(hidden_when_on, strlen(hidden_when_on), CLASSIFY_O_BACKSLASH_QUOTES, &r), 0);
	assert_int_equal(r.nsession, 1);
}

static void test_threads(void **state)
{
	(void)state;
	pthread_t t[4];
	void *ret;

	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, classify_loop, NULL), 0);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(t[i], &ret), 0);
		assert_null(ret);
	}
}

/* The SELECT shortcut of classify_maybe_session answers what the full lexical pass answers:
 * over texts made to sit on its edges, and over 200,000 random soups of the tokens that
 * matter to it (both settings of standard_conforming_strings). */
static void test_select_shortcut_agrees(void **state)
{
	(void)state;
	static const char *const texts[] = {
		"SELECT abalance FROM pgbench_accounts WHERE aid = 1;",
		"select 1", "SELECT", "select;", "select 1 ;  ;\n", "  \t\fSELECT * FROM t",
		"selectx 1", "select_1", "select$1", "SELECT 1; SET x = 1", "SELECT 1; select 2",
		"SELECT 1 INTO TEMP t", "SELECT * INTO temporary t FROM x", "SELECT pg_temp.f", "select x from pg_temp.t",
		"SELECT 1 -- ; set x\n", "SELECT '; set x'", "SELECT e'\\'; set x = 1; --'", "SELECT 1 /* ; */",
		"SELECT execute FROM t", "SELECT x AS executed", "SELECT \"a\" FROM t", "SELECT $$a$$",
		"SELECT a FROM t WHERE b = $1", "SELECT $1$x$", "SELECT $12, $3;", "SELECT $1$$; set x = 1; $$",
		"SELECT $a$; set x; $a$", "SELECT x$1", "SELECT $", "SELECT 1 $", "SELECT $1 $2$",
		"SELECT f(1)", "SELECT count(*) FROM t", "SELECT U&\"pg_temp\"", "SELECT 1 FOR UPDATE",
		"SELECT a, b FROM t WHERE c = 'temp'", "sElEcT 1", "SELECT\n1", "SELECT 1;;;",
		"SELECT 1;\nEXECUTE p", "SELECT 1 \\; SET x", "/* c */ SELECT 1", "-- c\nSELECT 1",
		"SELECT a FROM set", "SELECT reset FROM discard", "SELECT 1 WHERE listen = 2",
	};
	for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
		const char *t = texts[i];
		for (unsigned bs = 0; bs <= CLASSIFY_O_BACKSLASH_QUOTES; bs++)
			if (classify_maybe_session_opts(t, strlen(t), bs) !=
			    classify_maybe_session_opts(t, strlen(t), bs | CLASSIFY_O_NO_SHORTCUT))
				fail_msg("shortcut disagrees (opts %u): %s", bs, t);
	}
	/* Each byte that stops it, at every place in and across the 16-byte blocks it reads. */
	static const char *const stops[] = {
		"(", "\"", "$", "$1", "$12;", "; set x = 1", ";", "temp", "TEMP", "teMP", "execute", "eXecute", "pg_temp",
		"tem", "exec", "xecute", "$$", "e'", "\x08", "\x1b",
		/* parameters whose digits run into the next block, or end at a stop byte */
		"$1(", "$1;x", "$1$2", "$1 temp", "$12345678901234567890(", "$12345678901234567890 execute",
		"$123456789012345678901234567890;", "$1 p x ; ",
	};
	char long_text[128];
	for (size_t k = 0; k < sizeof stops / sizeof stops[0]; k++)
		for (int before = 0; before <= 40; before++)
			for (int after = 0; after <= 20; after += 4) {
				int n = snprintf(long_text, sizeof long_text, "SELECT %.*s%s%.*s", before,
						 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", stops[k], after, "bbbbbbbbbbbbbbbbbbbb");
				for (unsigned bs = 0; bs <= CLASSIFY_O_BACKSLASH_QUOTES; bs++)
					if (classify_maybe_session_opts(long_text, (size_t)n, bs) !=
					    classify_maybe_session_opts(long_text, (size_t)n, bs | CLASSIFY_O_NO_SHORTCUT))
						fail_msg("shortcut disagrees (opts %u): %s", bs, long_text);
			}
	static const char *const toks[] = {
		"select", "SELECT", " ", "\t", "\n", ";", "(", ")", "\"", "'", "$", "$$", "e'", "U&", "--", "/*", "*/",
		"temp", "TEMP", "pg_temp", "execute", "EXECUTE", "set", "do", "call", "create", "into", "x", "1",
		"\\", ".", "pg_catalog", "f", "lower", "*", "e", "t", "E", "T", "exec", "te", "$1", "$2$", "$a$", "0", "$9x",
	};
	enum { NT = sizeof toks / sizeof toks[0] };
	unsigned seed = 12345;
	char buf[256];
	for (int round = 0; round < 200000; round++) {
		size_t len = 0;
		int ntok = 1 + (int)((seed = seed * 1103515245u + 12345u) >> 16) % 12;
		if (round % 2 == 0) { /* most of the soups start with SELECT, where the shortcut works */
			memcpy(buf, "select ", 7);
			len = 7;
		}
		for (int k = 0; k < ntok; k++) {
			const char *tk = toks[((seed = seed * 1103515245u + 12345u) >> 16) % NT];
			size_t tl = strlen(tk);
			if (len + tl >= sizeof buf)
				break;
			memcpy(buf + len, tk, tl);
			len += tl;
		}
		for (unsigned bs = 0; bs <= CLASSIFY_O_BACKSLASH_QUOTES; bs++)
			if (classify_maybe_session_opts(buf, len, bs) !=
			    classify_maybe_session_opts(buf, len, bs | CLASSIFY_O_NO_SHORTCUT)) {
				buf[len] = 0;
				fail_msg("shortcut disagrees (opts %u): %s", bs, buf);
			}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_kind),
		cmocka_unit_test(test_every_kind_is_covered),
		cmocka_unit_test(test_maybe_session),
		cmocka_unit_test(test_select_shortcut_agrees),
		cmocka_unit_test(test_calls),
		cmocka_unit_test(test_backslash_quotes),
		cmocka_unit_test(test_multi_statement),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_nul_ends_text),
		cmocka_unit_test(test_length_limit),
		cmocka_unit_test(test_depth_limit),
		cmocka_unit_test(test_long_names),
		cmocka_unit_test(test_valid_guc_name),
		cmocka_unit_test(test_threads),
	};
	return cmocka_run_group_tests_name("classify", tests, NULL, NULL);
}
