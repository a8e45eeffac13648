/* Unit tests for kv/call: what the virtual kv database takes as a call, what it refuses and
 * with which SQLSTATE, and the decoders of bound values (text[] literals, binary params). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "kv/call.h"

static struct kv_call call;
static char state[6], err[300];

static int parse(const char *sql)
{
	state[0] = err[0] = '\0';
	return kv_call_parse(sql, &call, state, err, sizeof err);
}

static const char *text_of(const struct kv_arg *a)
{
	return a->kind == KV_ARG_CONST ? call.text + a->off : NULL;
}

static void test_target_form(void **st)
{
	(void)st;
	assert_int_equal(parse("SELECT kv.put('default', 'k''1', '{\"a\": 1}'::jsonb, interval '1 hour')"), 0);
	assert_int_equal(call.op, KV_OP_PUT);
	assert_false(call.from);
	assert_string_equal(call.column, "put");
	assert_int_equal(call.nargs, 4);
	assert_string_equal(text_of(&call.args[0]), "default");
	assert_string_equal(text_of(&call.args[1]), "k'1");
	assert_string_equal(text_of(&call.args[2]), "{\"a\": 1}");
	assert_string_equal(text_of(&call.args[3]), "1 hour");
	assert_int_equal(call.nparams, 0);

	assert_int_equal(parse("select KV.GET($1, $2) as v -- comment"), 0);
	assert_int_equal(call.op, KV_OP_GET);
	assert_string_equal(call.column, "v");
	assert_int_equal(call.args[0].kind, KV_ARG_PARAM);
	assert_int_equal(call.args[1].param, 2);
	assert_int_equal(call.nparams, 2);

	assert_int_equal(parse("select kv.patch('n', 42, NULL)"), 0);
	assert_string_equal(text_of(&call.args[1]), "42");
	assert_int_equal(call.args[2].kind, KV_ARG_NULL);
	assert_int_equal(parse("select kv.delete('n', 0)"), 0);
	assert_string_equal(text_of(&call.args[1]), "0"); /* proto3 leaves the zero out */
	assert_int_equal(parse("select kv.get('n', '')"), 0);
	assert_string_equal(text_of(&call.args[1]), "");
}

static void test_from_form_and_arrays(void **st)
{
	(void)st;
	assert_int_equal(parse("select * from kv.get_many('default', ARRAY['a', $2, NULL])"), 0);
	assert_int_equal(call.op, KV_OP_GET_MANY);
	assert_true(call.from);
	assert_int_equal(call.args[1].kind, KV_ARG_ARRAY);
	assert_int_equal(call.args[1].n, 3);
	assert_string_equal(call.text + call.elems[call.args[1].first].off, "a");
	assert_int_equal(call.elems[call.args[1].first + 1].param, 2);
	assert_int_equal(call.elems[call.args[1].first + 2].kind, KV_ARG_NULL);
	assert_int_equal(parse("SELECT * FROM kv.get_many($1, $2::text[])"), 0);
	assert_int_equal(call.args[1].kind, KV_ARG_PARAM);
}

static void test_the_calls_beyond_get_and_put(void **st)
{
	(void)st;
	assert_int_equal(parse("select kv.put_if_version('d', 'k', '1', 17, '1 hour')"), 0);
	assert_int_equal(call.op, KV_OP_PUT_IF_VERSION);
	assert_int_equal(call.nargs, 5);
	assert_int_equal(kv_call_arg_type(call.op, 3), KV_OID_INT8);
	assert_int_equal(kv_call_result_type(call.op), KV_OID_INT8);
	assert_int_equal(parse("select kv.get_meta($1, $2)"), 0);
	assert_int_equal(kv_call_result_type(call.op), KV_OID_JSONB);
	/* read: Redis's GET (the value, else the counter), one key */
	assert_int_equal(parse("select kv.read('d', $1)"), 0);
	assert_int_equal(call.op, KV_OP_READ);
	assert_int_equal(kv_call_result_type(call.op), KV_OID_JSONB);
	assert_false(kv_op_keyless(call.op));
	assert_int_equal(parse("select kv.read('d')"), -EINVAL);
	assert_string_equal(state, "42883");
	/* read_many: rows, its keys split by shard */
	assert_int_equal(parse("select * from kv.read_many('d', ARRAY['a', $1])"), 0);
	assert_int_equal(call.op, KV_OP_READ_MANY);
	assert_true(kv_op_rows(call.op) && kv_op_keyless(call.op) && kv_op_array_arg(call.op, 1));
	/* read_meta: Redis's TTL (a value's meta, else a counter's) */
	assert_int_equal(parse("select kv.read_meta('d', 'k')"), 0);
	assert_int_equal(call.op, KV_OP_READ_META);
	assert_int_equal(kv_call_result_type(call.op), KV_OID_JSONB);
	/* The one-key calls behind Redis's commands: each parsed (in every form given), of its op
	 * and result type, neither keyless nor rows, and refused with too few arguments. */
	static const struct {
		const char *ok, *also, *few;
		enum kv_op op;
		int result;
	} one_key[] = {
		/* swap: GETSET and GETDEL (NULL value), the old value back */
		{ "select kv.swap('d', 'k', '1')", "select kv.swap('d', 'k', NULL, '1 minute')", "select kv.swap('d', 'k')",
		  KV_OP_SWAP, KV_OID_JSONB },
		/* persist: PERSIST, the new version or NULL */
		{ "select kv.persist('d', 'k')", NULL, "select kv.persist('d')", KV_OP_PERSIST, KV_OID_INT8 },
		/* expire: EXPIRE with a condition, the new version or NULL; four arguments */
		{ "select kv.expire('d', 'k', '10 seconds', 'gt')", NULL, "select kv.expire('d', 'k', '10 seconds')",
		  KV_OP_EXPIRE, KV_OID_INT8 },
		/* getex: GETEX, the value as read; two to four arguments */
		{ "select kv.getex('d', 'k')", "select kv.getex('d', 'k', NULL, 'persist')", "select kv.getex('d')",
		  KV_OP_GETEX, KV_OID_JSONB },
		/* set: SET with GET and NX or XX, or KEEPTTL, the old value; three to five arguments */
		{ "select kv.set('d', 'k', '1', NULL, 'nx keepttl')", "select kv.set('d', 'k', '1')",
		  "select kv.set('d', 'k')", KV_OP_SET, KV_OID_JSONB },
		/* append: APPEND, the new value; three arguments */
		{ "select kv.append('d', 'k', 'tail')", NULL, "select kv.append('d', 'k')", KV_OP_APPEND, KV_OID_JSONB },
	};
	for (size_t i = 0; i < sizeof one_key / sizeof one_key[0]; i++) {
		assert_int_equal(parse(one_key[i].ok), 0);
		assert_int_equal(call.op, one_key[i].op);
		assert_int_equal(kv_call_result_type(call.op), one_key[i].result);
		assert_false(kv_op_keyless(call.op) || kv_op_rows(call.op));
		if (one_key[i].also)
			assert_int_equal(parse(one_key[i].also), 0);
		assert_int_equal(parse(one_key[i].few), -EINVAL);
		assert_string_equal(state, "42883");
	}
	/* put_many: two arrays, each its own elements */
	assert_int_equal(parse("select kv.put_many('d', ARRAY['a', 'b'], ARRAY['1', $1])"), 0);
	assert_int_equal(call.op, KV_OP_PUT_MANY);
	assert_int_equal(call.args[1].n, 2);
	assert_int_equal(call.args[2].n, 2);
	assert_string_equal(call.text + call.elems[call.args[2].first].off, "1");
	assert_int_equal(call.elems[call.args[2].first + 1].param, 1);
	assert_true(kv_op_keyless(call.op));
	/* scan returns rows: FROM form only */
	assert_int_equal(parse("select * from kv.scan('d', 'p/', NULL, 10)"), 0);
	assert_true(call.from);
	assert_int_equal(kv_call_arg_type(KV_OP_SCAN, 3), KV_OID_INT4);
	assert_int_equal(parse("select kv.scan('d', 'p/', NULL, 10)"), -EINVAL);
	assert_string_equal(state, "0A000");
	assert_int_equal(parse("select * from kv.count('d', 'p/')"), -EINVAL);
	assert_string_equal(state, "0A000");
	/* an ARRAY only where the call takes a text[] */
	assert_int_equal(parse("select kv.incr('d', ARRAY['k'], 1)"), -EINVAL);
	assert_string_equal(state, "42883");
	assert_int_equal(parse("select kv.touch('d')"), -EINVAL);
	assert_string_equal(state, "42883");
	assert_non_null(strstr(err, "kv.touch takes 2 or 3 arguments"));
}

/* What the kv database answers with one value of its own: a constant (pools' health checks),
 * version(), current_schema(), current_database(), SHOW of a setting its greeting reports. */
static void test_values(void **st)
{
	static const struct {
		const char *sql;
		int fn;
		uint32_t type;
		const char *value, *column;
	} ok[] = {
		{ "SELECT 1", KV_VALUE_CONST, KV_OID_INT4, "1", "?column?" },
		{ "select 0", KV_VALUE_CONST, KV_OID_INT4, "0", "?column?" },
		{ "select -5 as n", KV_VALUE_CONST, KV_OID_INT4, "-5", "n" },
		{ "select 'ok'", KV_VALUE_CONST, KV_OID_TEXT, "ok", "?column?" },
		{ "select ''", KV_VALUE_CONST, KV_OID_TEXT, "", "?column?" },
		{ "select true AS \"Up\"", KV_VALUE_CONST, KV_OID_BOOL, "t", "Up" },
		{ "select false", KV_VALUE_CONST, KV_OID_BOOL, "f", "?column?" },
		{ "select pg_catalog.version()", KV_VALUE_VERSION, KV_OID_TEXT, "", "version" },
		{ "select current_schema()", KV_VALUE_CURRENT_SCHEMA, KV_OID_TEXT, "", "current_schema" },
		{ "select current_database() as db", KV_VALUE_CURRENT_DATABASE, KV_OID_TEXT, "", "db" },
		{ "show standard_conforming_strings", KV_VALUE_SETTING, KV_OID_TEXT, "on", "standard_conforming_strings" },
		{ "SHOW datestyle", KV_VALUE_SETTING, KV_OID_TEXT, "ISO, MDY", "DateStyle" },
		{ "show server_version", KV_VALUE_SETTING, KV_OID_TEXT, "15.0 (tusk " TUSK_VERSION " kv)", "server_version" },
		{ "SHOW SERVER_VERSION_NUM", KV_VALUE_SETTING, KV_OID_TEXT, "150000", "server_version_num" },
	};
	(void)st;
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
		if (parse(ok[i].sql) != 0 || call.local != KV_LOCAL_VALUE || call.value_fn != ok[i].fn ||
		    call.value_type != ok[i].type || strcmp(call.value, ok[i].value) != 0 ||
		    strcmp(call.column, ok[i].column) != 0 || call.nargs != 0)
			fail_msg("%s: %s / %d %d %u [%s] [%s]", ok[i].sql, err, call.local, call.value_fn, call.value_type,
				 call.value, call.column);
	char long_text[100];
	snprintf(long_text, sizeof long_text, "select '%070d'", 0);
	assert_int_equal(parse(long_text), -EINVAL);
	assert_string_equal(state, "0A000");
	assert_int_equal(parse("select kv.get('a', 'b')"), 0);
	assert_int_equal(call.local, KV_LOCAL_NONE);
	assert_string_equal(call.value, "");
}

/* asyncpg's queries of a type (set_type_codec) and psycopg's (TypeInfo.fetch), as they write
 * them, known whatever their layout; a query of pg_type that is not one of them is refused. */
static void test_type_queries(void **st)
{
	static const struct {
		const char *sql;
		int query, nparams;
	} known[] = {
		{ "SELECT\n    t.oid,\n    t.typelem     AS elemtype,\n    t.typtype     AS kind\nFROM\n"
		  "    pg_catalog.pg_type AS t\nWHERE\n    t.oid = $1\n",
		  KV_TYPE_BY_OID, 1 },
		{ "SELECT t.oid, t.typelem AS elemtype, t.typtype AS kind FROM pg_catalog.pg_type AS t "
		  "INNER JOIN pg_catalog.pg_namespace ns ON (ns.oid = t.typnamespace) "
		  "WHERE t.typname = $1 AND ns.nspname = $2",
		  KV_TYPE_BY_NAME, 2 },
		{ "SELECT\n    typname AS name, oid, typarray AS array_oid,\n    oid::regtype::text AS regtype, "
		  "typdelim AS delimiter\nFROM pg_type t\nWHERE t.oid = $1::regtype\nORDER BY t.oid\n",
		  KV_TYPE_BY_REGTYPE, 1 },
	};
	(void)st;
	for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
		if (parse(known[i].sql) != 0 || call.local != KV_LOCAL_TYPE_INFO || call.type_query != known[i].query ||
		    call.nparams != known[i].nparams || call.nargs != 0)
			fail_msg("%zu: %s / %d %d %d", i, err, call.local, call.type_query, call.nparams);
	static const char *const refused[] = {
		"SELECT t.oid, t.typelem AS elemtype, t.typtype AS kind, t.typname FROM pg_catalog.pg_type AS t WHERE t.oid = $1",
		"SELECT t.oid FROM pg_catalog.pg_type AS t WHERE t.oid = $1",
		"SELECT t.oid, t.typelem AS elemtype, t.typtype AS kind FROM pg_catalog.pg_type AS t WHERE t.oid > $1",
		"SELECT * FROM pg_type",
	};
	for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
		if (parse(refused[i]) != -EINVAL || strcmp(state, "0A000") != 0)
			fail_msg("%s: %d %s", refused[i], call.local, state);
	assert_int_equal(parse("select kv.get($1, $2)"), 0);
	assert_int_equal(call.local, KV_LOCAL_NONE);
}

static void test_refusals(void **st)
{
	static const struct {
		const char *sql, *state;
	} cases[] = {
		{ "select 1.5", "0A000" },
		{ "select 1, 2", "0A000" },
		{ "select null", "0A000" },
		{ "select 1 from t", "0A000" },
		{ "select 1 where false", "0A000" },
		{ "select version(1)", "0A000" },
		{ "select public.version()", "0A000" },
		{ "select * from version()", "0A000" },
		{ "declare c cursor for select 1", "0A000" },
		{ "show search_path", "0A000" },
		{ "set search_path = x", "0A000" },
		{ "set local application_name = 'x'", "0A000" },
		{ "set application_name to default", "0A000" },
		{ "set extra_float_digits = 1, 2", "0A000" },
		{ "listen x", "0A000" },
		{ "select pg_advisory_unlock_all(1)", "0A000" },
		{ "select * from pg_advisory_unlock_all()", "0A000" },
		{ "select public.pg_advisory_unlock_all()", "0A000" },
		{ "set extra_float_digits", "42601" },
		{ "insert into kv.data values (1)", "0A000" },
		{ "select kv.get('a', 'b'), kv.get('a', 'c')", "0A000" },
		{ "select kv.get('a', 'b') from t", "0A000" },
		{ "select kv.get('a', 'b') where true", "0A000" },
		{ "select kv.get('a', 'b') limit 1", "0A000" },
		{ "select kv.get('a', 'b') union select kv.get('a', 'c')", "0A000" },
		{ "with x as (select 1) select kv.get('a', 'b')", "0A000" },
		{ "select kv.get('a', upper('b'))", "0A000" },
		{ "select kv.get('a', (select 'b'))", "0A000" },
		{ "select kv.get(ns => 'a', key => 'b')", "0A000" },
		{ "select public.get('a', 'b')", "0A000" },
		{ "select get('a', 'b')", "0A000" },
		{ "select x.kv.get('a', 'b')", "0A000" },
		{ "select kv.get('a')", "42883" },
		{ "select kv.put('a', 'b')", "42883" },
		{ "select kv.put('a', 'b', '1', '1h', 5)", "42883" },
		{ "select kv.drop('a', 'b')", "42883" },
		{ "select kv.get('a', ARRAY['b'])", "42883" },
		{ "select kv.get_many('a', ARRAY['b'])", "0A000" },
		{ "select * from kv.get('a', 'b')", "0A000" },
		{ "select * from kv.get_many('a', ARRAY['b']) as t", "0A000" },
		{ "select * from kv.get_many('a', ARRAY[ARRAY['b']])", "42883" }, /* nested: not keys */
		{ "select kv.get($0, 'b')", "42P02" },
		{ "select kv.get($65, 'b')", "42P02" },
		{ "selec kv.get('a', 'b')", "42601" },
	};
	(void)st;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		int rc = parse(cases[i].sql);
		if (rc != -EINVAL || strcmp(state, cases[i].state) != 0)
			fail_msg("%s: rc %d state %s (want %s): %s", cases[i].sql, rc, state, cases[i].state, err);
		assert_true(err[0] != '\0');
	}
}

/* The SETs drivers send as they connect: no call, answered SET (kv/front.c). */
static void test_driver_sets(void **st)
{
	static const char *const sets[] = { "SET extra_float_digits = 3", "set application_name to 'it''s me';",
					    "SET SESSION extra_float_digits TO -1",
					    "/* c */ SET application_name = \"PostgreSQL JDBC Driver\"" };
	(void)st;
	for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) {
		if (parse(sets[i]) != 0 || call.local != KV_LOCAL_DRIVER_SET)
			fail_msg("%s: %s %s", sets[i], state, err);
	}
	assert_int_equal(parse("select kv.get('a', 'b')"), 0);
	assert_int_equal(call.local, KV_LOCAL_NONE);
}

/* No statement at all: PostgreSQL's empty query (pgjdbc's isValid() prepares one). */
static void test_empty_query(void **st)
{
	static const char *const empties[] = { "", " ", ";", " ; ;\n", "-- c\n", "/* c */", "/* a /* nested */ b */ ;" };
	(void)st;
	for (size_t i = 0; i < sizeof empties / sizeof empties[0]; i++) {
		if (parse(empties[i]) != 0 || call.local != KV_LOCAL_EMPTY || call.nparams != 0)
			fail_msg("\"%s\": %s %s", empties[i], state, err);
	}
	assert_int_equal(parse("/* c */ select kv.get('a', 'b')"), 0);
	assert_int_equal(call.local, KV_LOCAL_NONE);
}

/* Transaction control: BEGIN's options rewritten into the shard's BEGIN; savepoints by name
 * (as the parser folds it); AND CHAIN and two-phase commit refused (kv/front.c answers the rest). */
static void test_transaction_statements(void **st)
{
	static const struct {
		const char *sql;
		int local;
		bool start;
		const char *begin;
	} ok[] = {
		{ "BEGIN", KV_LOCAL_BEGIN, false, "BEGIN" },
		{ "begin transaction;", KV_LOCAL_BEGIN, false, "BEGIN" },
		{ "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", KV_LOCAL_BEGIN, true,
		  "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" },
		{ "BEGIN ISOLATION LEVEL SERIALIZABLE READ WRITE NOT DEFERRABLE", KV_LOCAL_BEGIN, false,
		  "BEGIN ISOLATION LEVEL SERIALIZABLE READ WRITE NOT DEFERRABLE" },
		{ "begin isolation level read committed deferrable", KV_LOCAL_BEGIN, false,
		  "BEGIN ISOLATION LEVEL READ COMMITTED DEFERRABLE" },
		/* a later option wins, as in PostgreSQL */
		{ "BEGIN ISOLATION LEVEL SERIALIZABLE, ISOLATION LEVEL READ UNCOMMITTED, READ ONLY, READ WRITE",
		  KV_LOCAL_BEGIN, false, "BEGIN ISOLATION LEVEL READ UNCOMMITTED READ WRITE" },
		{ "COMMIT", KV_LOCAL_COMMIT, false, "" },
		{ "end work", KV_LOCAL_COMMIT, false, "" },
		{ "ROLLBACK", KV_LOCAL_ROLLBACK, false, "" },
		{ "abort", KV_LOCAL_ROLLBACK, false, "" },
	};
	static const char *const refused[] = { "COMMIT AND CHAIN", "PREPARE TRANSACTION 'x'", "COMMIT PREPARED 'x'" };
	static const struct {
		const char *sql;
		int local;
		const char *name;
	} savepoints[] = {
		{ "SAVEPOINT a", KV_LOCAL_SAVEPOINT, "a" },
		{ "savepoint \"_pg3_1\"", KV_LOCAL_SAVEPOINT, "_pg3_1" },
		{ "SAVEPOINT Mixed", KV_LOCAL_SAVEPOINT, "mixed" },
		{ "SAVEPOINT \"Mi\"\"x\"", KV_LOCAL_SAVEPOINT, "Mi\"x" },
		{ "RELEASE a", KV_LOCAL_RELEASE, "a" },
		{ "release savepoint \"b c\"", KV_LOCAL_RELEASE, "b c" },
		{ "ROLLBACK TO a", KV_LOCAL_ROLLBACK_TO, "a" },
		{ "rollback work to savepoint x1", KV_LOCAL_ROLLBACK_TO, "x1" },
	};
	(void)st;
	char begin[KV_CALL_BEGIN_MAX];
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		int rc = parse(ok[i].sql);
		kv_txn_begin_text(&call.chars, begin);
		if (rc != 0 || call.local != ok[i].local || call.txn_start != ok[i].start ||
		    (ok[i].local == KV_LOCAL_BEGIN && strcmp(begin, ok[i].begin) != 0))
			fail_msg("%s: %d %s / %d %d [%s]", ok[i].sql, rc, err, call.local, call.txn_start, begin);
	}
	for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
		if (parse(refused[i]) != -EINVAL || strcmp(state, "0A000") != 0)
			fail_msg("%s: %s %s", refused[i], state, err);
	for (size_t i = 0; i < sizeof savepoints / sizeof savepoints[0]; i++)
		if (parse(savepoints[i].sql) != 0 || call.local != savepoints[i].local ||
		    strcmp(call.name, savepoints[i].name) != 0)
			fail_msg("%s: %s / %d [%s]", savepoints[i].sql, err, call.local, call.name);
	char sql[KV_SAVEPOINT_SQL_MAX], name[64];
	kv_savepoint_sql(sql, "ROLLBACK TO SAVEPOINT", "Mi\"x");
	assert_string_equal(sql, "ROLLBACK TO SAVEPOINT \"Mi\"\"x\"");
	memset(name, '"', 63);
	name[63] = '\0';
	kv_savepoint_sql(sql, "ROLLBACK TO SAVEPOINT", name); /* the longest: every byte doubled */
	assert_int_equal(strlen(sql), sizeof "ROLLBACK TO SAVEPOINT \"\"" - 1 + 126);
	assert_int_equal(parse("select kv.get('a', 'b')"), 0);
	assert_int_equal(call.local, KV_LOCAL_NONE);
	assert_string_equal(call.name, "");
}

/* SET TRANSACTION, SET SESSION CHARACTERISTICS, the six settings' SET / RESET / SHOW. */
static void test_transaction_settings(void **st)
{
	static const struct {
		const char *sql;
		int local;
		struct kv_txn_chars chars;
		bool warn, reset;
	} ok[] = {
		{ "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", KV_LOCAL_SET, { KV_ISO_SERIALIZABLE, -1, -1 }, true, false },
		{ "set transaction read only, not deferrable", KV_LOCAL_SET, { -1, 1, 0 }, true, false },
		{ "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ", KV_LOCAL_DEFAULT,
		  { KV_ISO_REPEATABLE_READ, -1, -1 }, false, false },
		{ "SET transaction_isolation = 'read committed'", KV_LOCAL_SET, { KV_ISO_READ_COMMITTED, -1, -1 }, false,
		  false },
		{ "SET default_transaction_isolation TO 'Serializable'", KV_LOCAL_DEFAULT, { KV_ISO_SERIALIZABLE, -1, -1 },
		  false, false },
		{ "SET SESSION default_transaction_read_only = on", KV_LOCAL_DEFAULT, { -1, 1, -1 }, false, false },
		{ "set default_transaction_read_only = 'of'", KV_LOCAL_DEFAULT, { -1, 0, -1 }, false, false },
		{ "set default_transaction_deferrable = 1", KV_LOCAL_DEFAULT, { -1, -1, 1 }, false, false },
		{ "set default_transaction_deferrable to 'Y'", KV_LOCAL_DEFAULT, { -1, -1, 1 }, false, false },
		{ "SET default_transaction_read_only TO DEFAULT", KV_LOCAL_DEFAULT, { -1, KV_CHAR_RESET, -1 }, false,
		  false },
		{ "RESET default_transaction_isolation", KV_LOCAL_DEFAULT, { KV_CHAR_RESET, -1, -1 }, false, true },
	};
	static const struct {
		const char *sql, *state;
	} refused[] = {
		{ "SET default_transaction_read_only = 'x'", "22023" },
		{ "SET default_transaction_read_only = 'o'", "22023" },
		{ "SET default_transaction_isolation = 'bogus'", "22023" },
		{ "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, SNAPSHOT 'x'", "42601" },
		{ "SET TRANSACTION SNAPSHOT '0000-1'", "0A000" },
		{ "SET LOCAL default_transaction_read_only = on", "0A000" },
		{ "RESET transaction_isolation", "0A000" },
		{ "SET default_transaction_isolation = 'serializable', 'read committed'", "0A000" },
		{ "SET search_path = x", "0A000" },
		{ "SHOW search_path", "0A000" },
		{ "SHOW ALL", "0A000" },
	};
	(void)st;
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		int rc = parse(ok[i].sql);
		if (rc != 0 || call.local != ok[i].local || call.chars.iso != ok[i].chars.iso ||
		    call.chars.read_only != ok[i].chars.read_only || call.chars.deferrable != ok[i].chars.deferrable ||
		    call.txn_warn != ok[i].warn || call.reset != ok[i].reset)
			fail_msg("%s: %d %s / %d {%d %d %d} %d %d", ok[i].sql, rc, err, call.local, call.chars.iso,
				 call.chars.read_only, call.chars.deferrable, call.txn_warn, call.reset);
	}
	for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
		if (parse(refused[i].sql) != -EINVAL || strcmp(state, refused[i].state) != 0)
			fail_msg("%s: %s %s", refused[i].sql, state, err);
	assert_int_equal(parse("SET default_transaction_read_only = 'x'"), -EINVAL);
	assert_string_equal(err, "parameter \"default_transaction_read_only\" requires a Boolean value");
	assert_int_equal(parse("SET default_transaction_isolation = 'bogus'"), -EINVAL);
	assert_string_equal(err, "invalid value for parameter \"default_transaction_isolation\": \"bogus\"");
	static const struct {
		const char *sql;
		enum kv_show show;
	} shows[] = {
		{ "SHOW TRANSACTION ISOLATION LEVEL", KV_SHOW_ISOLATION },
		{ "show transaction_read_only", KV_SHOW_READ_ONLY },
		{ "SHOW \"Transaction_Deferrable\"", KV_SHOW_DEFERRABLE },
		{ "SHOW default_transaction_isolation", KV_SHOW_DEFAULT_ISOLATION },
		{ "SHOW default_transaction_read_only", KV_SHOW_DEFAULT_READ_ONLY },
		{ "show default_transaction_deferrable;", KV_SHOW_DEFAULT_DEFERRABLE },
	};
	for (size_t i = 0; i < sizeof shows / sizeof shows[0]; i++)
		if (parse(shows[i].sql) != 0 || call.local != KV_LOCAL_SHOW || call.show != shows[i].show)
			fail_msg("%s: %s / %d %d", shows[i].sql, err, call.local, call.show);
	assert_string_equal(kv_show_name(KV_SHOW_DEFAULT_READ_ONLY), "default_transaction_read_only");
	assert_string_equal(kv_txn_char_text(KV_SHOW_ISOLATION, KV_CHAR_UNSET), "read committed");
	assert_string_equal(kv_txn_char_text(KV_SHOW_DEFAULT_ISOLATION, KV_ISO_REPEATABLE_READ), "repeatable read");
	assert_string_equal(kv_txn_char_text(KV_SHOW_READ_ONLY, 1), "on");
	assert_string_equal(kv_txn_char_text(KV_SHOW_DEFERRABLE, KV_CHAR_UNSET), "off");
	static const struct {
		const char *sql, *name;
	} deallocs[] = { { "DEALLOCATE ALL", "" }, { "deallocate prepare all", "" }, { "DEALLOCATE _pg3_0", "_pg3_0" },
			 { "deallocate prepare \"Ab\"", "Ab" } };
	for (size_t i = 0; i < sizeof deallocs / sizeof deallocs[0]; i++)
		if (parse(deallocs[i].sql) != 0 || call.local != KV_LOCAL_DEALLOCATE || strcmp(call.column, deallocs[i].name))
			fail_msg("%s: %s / %d [%s]", deallocs[i].sql, err, call.local, call.column);
	/* the driver SETs still answered without a trace */
	assert_int_equal(parse("SET extra_float_digits = 3"), 0);
	assert_int_equal(call.local, KV_LOCAL_DRIVER_SET);
}

/* What a pool sends to reset a session (asyncpg's), answered here; a Query of several
 * statements split where PostgreSQL splits it. */
static void test_session_resets_and_split(void **st)
{
	static const struct {
		const char *sql;
		int local;
		const char *column;
	} ok[] = {
		{ "SELECT pg_advisory_unlock_all()", KV_LOCAL_UNLOCK_ALL, "pg_advisory_unlock_all" },
		{ "select pg_catalog.pg_advisory_unlock_all() as u", KV_LOCAL_UNLOCK_ALL, "u" },
		{ "CLOSE ALL", KV_LOCAL_CLOSE, "" },
		{ "close c1", KV_LOCAL_CLOSE, "c1" },
		{ "UNLISTEN *", KV_LOCAL_UNLISTEN, "" },
		{ "unlisten ch", KV_LOCAL_UNLISTEN, "" },
		{ "RESET ALL", KV_LOCAL_RESET_ALL, "" },
		{ "DISCARD ALL", KV_LOCAL_DISCARD, "DISCARD ALL" },
		{ "discard plans", KV_LOCAL_DISCARD, "DISCARD PLANS" },
		{ "DISCARD TEMPORARY", KV_LOCAL_DISCARD, "DISCARD TEMP" },
		{ "discard sequences", KV_LOCAL_DISCARD, "DISCARD SEQUENCES" },
	};
	(void)st;
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
		if (parse(ok[i].sql) != 0 || call.local != ok[i].local ||
		    strcmp(call.local == KV_LOCAL_CLOSE ? call.name : call.column, ok[i].column) != 0)
			fail_msg("%s: %s / %d [%s]", ok[i].sql, err, call.local, call.column);
	assert_int_equal(parse("DISCARD ALL"), 0);
	assert_true(call.discard_all);
	assert_int_equal(parse("DISCARD PLANS"), 0);
	assert_false(call.discard_all);

	/* several statements: -E2BIG, and kv_call_split finds each */
	const char *q = "SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;";
	assert_int_equal(parse(q), -E2BIG);
	assert_string_equal(state, "0A000");
	struct kv_span sp[KV_CALL_MAX_STMTS];
	assert_int_equal(kv_call_split(q, sp, KV_CALL_MAX_STMTS, state, err, sizeof err), 4);
	static const char *const want[] = { "SELECT pg_advisory_unlock_all()", "CLOSE ALL", "UNLISTEN *", "RESET ALL" };
	for (int i = 0; i < 4; i++) { /* each from just after the last one's ';' */
		const char *at = q + sp[i].off + (i > 0);
		if (sp[i].len != strlen(want[i]) + (i > 0) || memcmp(at, want[i], strlen(want[i])) != 0)
			fail_msg("statement %d: [%.*s]", i, (int)sp[i].len, q + sp[i].off);
	}
	/* a ';' in a string or a comment does not split; empty statements are none; the last
	 * without its ';' runs to the end */
	const char *q2 = "select kv.put('a', 'b;c', '1') ;; /* ; */ select kv.get('a', 'x')";
	assert_int_equal(kv_call_split(q2, sp, KV_CALL_MAX_STMTS, state, err, sizeof err), 2);
	assert_true(sp[0].off == 0 && sp[0].len == strlen("select kv.put('a', 'b;c', '1') "));
	assert_string_equal(q2 + sp[1].off, " /* ; */ select kv.get('a', 'x')");
	assert_int_equal(kv_call_split("select 1; select 2; select 3", sp, 2, state, err, sizeof err), -EINVAL);
	assert_string_equal(state, "54000");
	assert_int_equal(kv_call_split("select 1; selec 2", sp, 2, state, err, sizeof err), -EINVAL);
	assert_string_equal(state, "42601");
}

/* DECLARE of a call, FETCH and MOVE forward (psycopg's named cursors). */
static void test_cursors(void **st)
{
	(void)st;
	assert_int_equal(parse("DECLARE \"c 1\" NO SCROLL CURSOR WITH HOLD FOR select * from kv.scan($1, $2, NULL, 10)"), 0);
	assert_int_equal(call.local, KV_LOCAL_DECLARE);
	assert_string_equal(call.name, "c 1");
	assert_true(call.hold && call.from && call.op == KV_OP_SCAN && call.nargs == 4 && call.nparams == 2);
	assert_int_equal(call.scroll, -1);
	assert_int_equal(parse("declare c cursor without hold for select kv.get('a', 'b') as v"), 0);
	assert_true(call.local == KV_LOCAL_DECLARE && !call.hold && call.op == KV_OP_GET);
	assert_string_equal(call.column, "v");
	assert_int_equal(call.scroll, 0);
	assert_int_equal(parse("DECLARE c SCROLL CURSOR FOR select * from kv.get_many('a', ARRAY['b'])"), 0);
	assert_true(call.local == KV_LOCAL_DECLARE && call.scroll == 1 && call.from);
	assert_int_equal(parse("DECLARE c INSENSITIVE CURSOR FOR select kv.get('a', 'b')"), 0);
	assert_true(call.local == KV_LOCAL_DECLARE && call.scroll == 0);
	static const struct {
		const char *sql;
		int dir;
		int64_t count;
		bool move;
	} fetches[] = {
		{ "FETCH FORWARD 5 FROM c", KV_FETCH_FORWARD, 5, false },
		{ "fetch next in c", KV_FETCH_FORWARD, 1, false },
		{ "FETCH c", KV_FETCH_FORWARD, 1, false },
		{ "FETCH ALL FROM c", KV_FETCH_FORWARD, KV_FETCH_ALL, false },
		{ "FETCH 100 c", KV_FETCH_FORWARD, 100, false },
		{ "MOVE 3 FROM c", KV_FETCH_FORWARD, 3, true },
		{ "move forward all in c", KV_FETCH_FORWARD, KV_FETCH_ALL, true },
		{ "FETCH -2 FROM c", KV_FETCH_FORWARD, -2, false },
		{ "FETCH FORWARD 0 FROM c", KV_FETCH_FORWARD, 0, false },
		{ "FETCH BACKWARD 1 FROM c", KV_FETCH_BACKWARD, 1, false },
		{ "FETCH BACKWARD ALL FROM c", KV_FETCH_BACKWARD, KV_FETCH_ALL, false },
		{ "FETCH PRIOR FROM c", KV_FETCH_BACKWARD, 1, false },
		{ "FETCH FIRST FROM c", KV_FETCH_ABSOLUTE, 1, false },
		{ "FETCH LAST FROM c", KV_FETCH_ABSOLUTE, -1, false },
		{ "FETCH ABSOLUTE 3 FROM c", KV_FETCH_ABSOLUTE, 3, false },
		{ "MOVE RELATIVE -1 FROM c", KV_FETCH_RELATIVE, -1, true },
		{ "MOVE ABSOLUTE 0 IN c", KV_FETCH_ABSOLUTE, 0, true },
	};
	for (size_t i = 0; i < sizeof fetches / sizeof fetches[0]; i++)
		if (parse(fetches[i].sql) != 0 || call.local != KV_LOCAL_FETCH || call.fetch_dir != fetches[i].dir ||
		    call.fetch_count != fetches[i].count || call.is_move != fetches[i].move || strcmp(call.name, "c") != 0)
			fail_msg("%s: %s / %d %d %lld %d [%s]", fetches[i].sql, err, call.local, call.fetch_dir,
				 (long long)call.fetch_count, call.is_move, call.name);
	static const char *const refused[] = {
		"DECLARE c BINARY CURSOR FOR select kv.get('a', 'b')", "DECLARE c CURSOR FOR select 1",
		"DECLARE c CURSOR FOR select pg_advisory_unlock_all()",
	};
	for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
		if (parse(refused[i]) != -EINVAL || strcmp(state, "0A000") != 0)
			fail_msg("%s: %s %s", refused[i], state, err);
}

static void test_text_array(void **st)
{
	struct kv_elem e[8];
	char scratch[64];
	const char *s = " { a , \"b c\" ,NULL, \"NULL\", d\\,e ,\"q\\\"x\" } ";
	(void)st;
	int n = kv_text_array_parse(s, strlen(s), scratch, e, 8);
	assert_int_equal(n, 6);
	assert_true(e[0].len == 1 && memcmp(e[0].p, "a", 1) == 0);
	assert_true(e[1].len == 3 && memcmp(e[1].p, "b c", 3) == 0);
	assert_null(e[2].p);
	assert_true(e[3].len == 4 && memcmp(e[3].p, "NULL", 4) == 0);
	assert_true(e[4].len == 3 && memcmp(e[4].p, "d,e", 3) == 0);
	assert_true(e[5].len == 3 && memcmp(e[5].p, "q\"x", 3) == 0);
	assert_int_equal(kv_text_array_parse("{}", 2, scratch, e, 8), 0);
	assert_int_equal(kv_text_array_parse("{a,b,c}", 7, scratch, e, 2), -E2BIG);
	static const char *bad[] = { "", "a", "{", "{a", "{a,}", "{,a}", "{{a}}", "{\"a}", "[1:1]={a}", "{a} x", "{a\"b}" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		if (kv_text_array_parse(bad[i], strlen(bad[i]), scratch, e, 8) != -EINVAL)
			fail_msg("accepted %s", bad[i]);
}

static void test_binary_values(void **st)
{
	struct kv_elem e[4];
	char out[128];
	(void)st;
	/* text[] {"ab", NULL} */
	const uint8_t arr[] = { 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 25, 0, 0, 0, 2, 0, 0, 0, 1,
				0, 0, 0, 2, 'a', 'b', 0xff, 0xff, 0xff, 0xff };
	assert_int_equal(kv_binary_array_parse(arr, sizeof arr, e, 4), 2);
	assert_true(e[0].len == 2 && memcmp(e[0].p, "ab", 2) == 0);
	assert_null(e[1].p);
	assert_int_equal(kv_binary_array_parse(arr, sizeof arr - 1, e, 4), -EINVAL);
	assert_int_equal(kv_binary_array_parse(arr, sizeof arr, e, 1), -E2BIG);
	const uint8_t empty[] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 25 };
	assert_int_equal(kv_binary_array_parse(empty, sizeof empty, e, 4), 0);

	const uint8_t jsonb[] = { 1, '{', '}' };
	assert_int_equal(kv_binary_scalar_text(KV_OID_JSONB, jsonb, 3, out, sizeof out), 2);
	assert_memory_equal(out, "{}", 2);
	/* int8 -2, int4 7: a version or a counter's delta, a scan's limit */
	const uint8_t i8[] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe }, i4[] = { 0, 0, 0, 7 };
	assert_int_equal(kv_binary_scalar_text(KV_OID_INT8, i8, 8, out, sizeof out), 2);
	assert_memory_equal(out, "-2", 2);
	assert_int_equal(kv_binary_scalar_text(KV_OID_INT4, i4, 4, out, sizeof out), 1);
	assert_int_equal(kv_binary_scalar_text(KV_OID_INT8, i4, 4, out, sizeof out), -EINVAL);
	const uint8_t jsonb_v2[] = { 2, '{', '}' };
	assert_int_equal(kv_binary_scalar_text(KV_OID_JSONB, jsonb_v2, 3, out, sizeof out), -EINVAL);
	/* interval: 1.5 s, 2 days, 3 months */
	const uint8_t iv[] = { 0, 0, 0, 0, 0, 0x16, 0xe3, 0x60, 0, 0, 0, 2, 0, 0, 0, 3 };
	long n = kv_binary_scalar_text(KV_OID_INTERVAL, iv, sizeof iv, out, sizeof out);
	assert_true(n > 0);
	out[n] = '\0';
	assert_string_equal(out, "3 mons 2 days 1500000 microseconds");
	const uint8_t nul[] = { 'a', 0, 'b' };
	assert_int_equal(kv_binary_scalar_text(KV_OID_TEXT, nul, 3, out, sizeof out), -EINVAL);
	assert_int_equal(kv_binary_scalar_text(23 /* int4 */, nul, 3, out, sizeof out), -EINVAL);
	/* bool: kv.rename's nx; one byte, 0 or 1 */
	const uint8_t t1[] = { 1 }, f0[] = { 0 }, two[] = { 2 };
	assert_int_equal(kv_binary_scalar_text(KV_OID_BOOL, t1, 1, out, sizeof out), 4);
	assert_memory_equal(out, "true", 4);
	assert_int_equal(kv_binary_scalar_text(KV_OID_BOOL, f0, 1, out, sizeof out), 5);
	assert_memory_equal(out, "false", 5);
	assert_int_equal(kv_binary_scalar_text(KV_OID_BOOL, two, 1, out, sizeof out), -EINVAL);
	assert_int_equal(kv_binary_scalar_text(KV_OID_BOOL, i4, 4, out, sizeof out), -EINVAL);
	assert_int_equal(kv_binary_scalar_text(KV_OID_BOOL, t1, 1, out, 3), -E2BIG);
}

static int teardown(void **st)
{
	(void)st;
	kv_call_free(&call);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_target_form),
		cmocka_unit_test(test_from_form_and_arrays),
		cmocka_unit_test(test_driver_sets),
		cmocka_unit_test(test_empty_query),
		cmocka_unit_test(test_transaction_statements),
		cmocka_unit_test(test_transaction_settings),
		cmocka_unit_test(test_session_resets_and_split),
		cmocka_unit_test(test_cursors),
		cmocka_unit_test(test_the_calls_beyond_get_and_put),
		cmocka_unit_test(test_values),
		cmocka_unit_test(test_type_queries),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_text_array),
		cmocka_unit_test(test_binary_values),
	};
	return cmocka_run_group_tests(tests, NULL, teardown);
}
