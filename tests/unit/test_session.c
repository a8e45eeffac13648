/* Unit tests for frontend/session.c: a client's settings as tusk recreates them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <errno.h>

#include <cmocka.h>

#include "frontend/session.h"

struct fake_server {
	const char *names[4];
	const char *values[4];
};

static const char *lookup(const void *server, const char *name)
{
	const struct fake_server *s = server;
	for (int i = 0; i < 4 && s->names[i]; i++)
		if (strcmp(s->names[i], name) == 0)
			return s->values[i];
	return NULL;
}

static void test_params_set_get_and_fingerprint(void **state)
{
	(void)state;
	struct session_state a = { 0 }, b = { 0 };
	assert_int_equal(session_param_set(&a, "TimeZone", "UTC"), 0);
	assert_int_equal(session_param_set(&a, "DateStyle", "ISO, MDY"), 0);
	assert_string_equal(session_param_get(&a, "timezone"), "UTC"); /* names are case-insensitive */
	/* Same settings in another order: same fingerprint. */
	assert_int_equal(session_param_set(&b, "DateStyle", "ISO, MDY"), 0);
	assert_int_equal(session_param_set(&b, "TimeZone", "UTC"), 0);
	assert_true(a.params_hash == b.params_hash);
	assert_int_equal(session_param_set(&b, "TimeZone", "Asia/Tokyo"), 0);
	assert_false(a.params_hash == b.params_hash);
	assert_string_equal(session_param_get(&b, "TimeZone"), "Asia/Tokyo");
	/* Read-only parameters never count. */
	uint64_t before = b.params_hash;
	assert_int_equal(session_param_set(&b, "server_version", "15.18"), 0);
	assert_true(b.params_hash == before);
	session_free(&a);
	session_free(&b);
}

static void test_pending_commit_and_discard(void **state)
{
	(void)state;
	struct session_state st = { 0 };
	const char *set1 = "SET search_path TO a, public";
	assert_int_equal(session_pending_set(&st, "search_path", set1, strlen(set1)), 0);
	session_discard(&st); /* the transaction rolled back */
	assert_int_equal(st.carry_len, 0);
	assert_true(st.carry_hash == 0);

	assert_int_equal(session_pending_set(&st, "search_path", set1, strlen(set1)), 0);
	assert_int_equal(session_pending_set(&st, "work_mem", "SET work_mem = '8MB'", 20), 0);
	session_commit(&st);
	assert_true(st.carry_hash != 0);
	uint64_t two = st.carry_hash;

	assert_int_equal(session_pending_reset(&st, "work_mem"), 0);
	session_commit(&st);
	assert_true(st.carry_hash != two);

	assert_int_equal(session_pending_reset_all(&st), 0);
	session_commit(&st);
	assert_int_equal(st.carry_len, 0);
	assert_true(st.carry_hash == 0);
	session_free(&st);
}

static int count_restored(void *arg, const char *name, const char *value)
{
	char *seen = arg;
	strcat(seen, name);
	strcat(seen, "=");
	strcat(seen, value);
	strcat(seen, ";");
	return 0;
}

/* What a client's startup packet leaves before session_startup_keep: application_name app0
 * (reported) and work_mem carried as the statement wm. */
static void login_settings(struct session_state *st, const char *wm)
{
	assert_int_equal(session_param_set(st, "application_name", "app0"), 0);
	assert_int_equal(session_pending_set(st, "work_mem", wm, strlen(wm)), 0);
	session_commit(st);
}

/* RESET goes back to the startup's values (session_commit_to_startup), carried or reported,
 * and says the server no longer matches (resync, once); a name the startup did not set is
 * forgotten as before; session_commit keeps the old behaviour. */
static void test_reset_to_startup(void **state)
{
	(void)state;
	struct session_state st = { 0 };
	const char *wm = "SELECT set_config(E'work_mem', E'3MB', false)";
	login_settings(&st, wm);
	assert_int_equal(session_startup_keep(&st, "application_name\0"), 0);
	uint64_t start = st.carry_hash;
	assert_true(session_resync_take(&st) == start);

	/* SETs, then RESET of each: the startup's values again */
	const char *wm2 = "SET work_mem = '17MB'", *sp = "SET search_path = a";
	assert_int_equal(session_pending_set(&st, "work_mem", wm2, strlen(wm2)), 0);
	assert_int_equal(session_pending_set(&st, "search_path", sp, strlen(sp)), 0);
	session_commit_to_startup(&st);
	assert_string_equal(session_carried(&st, "work_mem"), wm2);
	assert_false(st.resync);
	assert_int_equal(session_param_set(&st, "application_name", "changed"), 0); /* a ParameterStatus */
	assert_int_equal(session_pending_reset(&st, "work_mem"), 0);
	assert_int_equal(session_pending_reset(&st, "application_name"), 0);
	assert_int_equal(session_pending_reset(&st, "search_path"), 0);
	char seen[256] = "";
	assert_int_equal(session_restores_each(&st, count_restored, seen), 0);
	assert_string_equal(seen, "application_name=app0;");
	session_commit_to_startup(&st);
	assert_string_equal(session_carried(&st, "work_mem"), wm);
	assert_null(session_carried(&st, "search_path")); /* not a startup one: the default */
	assert_string_equal(session_param_get(&st, "application_name"), "app0");
	assert_true(st.carry_hash == start);
	assert_true(session_resync_take(&st) == SESSION_CARRY_UNKNOWN); /* once */
	assert_true(session_resync_take(&st) == start);

	/* RESET ALL: every startup value; plain session_commit forgets them (session pooling) */
	assert_int_equal(session_pending_set(&st, "work_mem", wm2, strlen(wm2)), 0);
	session_commit_to_startup(&st);
	assert_int_equal(session_pending_reset_all(&st), 0);
	session_commit_to_startup(&st);
	assert_string_equal(session_carried(&st, "work_mem"), wm);
	assert_true(st.carry_hash == start && st.resync);
	assert_int_equal(session_pending_reset_all(&st), 0);
	session_commit(&st);
	assert_int_equal(st.carry_len, 0);
	session_free(&st);
}

/* Inside a transaction (session_restore_owed/take): the startup values RESETs went back from,
 * as SQL once, with the reported ones told; a SET after the RESET owes nothing; a later RESET
 * owes again; ROLLBACK TO a savepoint before the take owes it again; the commit still goes to
 * the startup values. */
static void test_restore_in_transaction(void **state)
{
	(void)state;
	struct session_state st = { 0 };
	const char *wm = "SELECT set_config(E'work_mem', E'3MB', false)";
	char sql[512], seen[256] = "";
	login_settings(&st, wm);
	assert_false(session_restore_owed(&st)); /* before the startup is kept: nothing to go back to */
	assert_int_equal(session_startup_keep(&st, "application_name\0"), 0);
	assert_false(session_restore_owed(&st));

	/* RESET of a name the startup did not give: nothing owed */
	assert_int_equal(session_pending_reset(&st, "search_path"), 0);
	assert_false(session_restore_owed(&st));
	/* RESET ALL: both, once */
	assert_int_equal(session_pending_reset_all(&st), 0);
	assert_true(session_restore_owed(&st));
	assert_int_equal(session_restore_take(&st, sql, sizeof sql, count_restored, seen), 0);
	static const char both[] = "SELECT set_config(E'work_mem', E'3MB', false)\0"
				   "SELECT set_config(E'application_name', E'app0', false)\0"; /* and the list's end */
	assert_memory_equal(sql, both, sizeof both);
	assert_string_equal(seen, "application_name=app0;");
	assert_false(session_restore_owed(&st));
	/* a RESET then a SET of the same name owes nothing; another RESET owes again */
	assert_int_equal(session_pending_savepoint(&st, "s"), 0);
	const char *wm2 = "SET work_mem = '17MB'";
	assert_int_equal(session_pending_reset(&st, "work_mem"), 0);
	assert_int_equal(session_pending_set(&st, "work_mem", wm2, strlen(wm2)), 0);
	assert_false(session_restore_owed(&st));
	assert_int_equal(session_pending_reset(&st, "work_mem"), 0);
	assert_true(session_restore_owed(&st));
	assert_int_equal(session_restore_take(&st, sql, sizeof sql, NULL, NULL), 0);
	static const char one[] = "SELECT set_config(E'work_mem', E'3MB', false)\0";
	assert_memory_equal(sql, one, sizeof one);
	assert_false(session_restore_owed(&st));
	/* rolled back to the savepoint: the RESET ALL before it stays put back */
	session_pending_rollback_to(&st, "s");
	assert_false(session_restore_owed(&st));
	/* too small a buffer: nothing written, nothing told, not tried again */
	assert_int_equal(session_pending_reset(&st, "application_name"), 0);
	seen[0] = '\0';
	assert_int_equal(session_restore_take(&st, sql, 8, count_restored, seen), -ENOSPC);
	assert_string_equal(sql, "");
	assert_string_equal(seen, "");
	assert_false(session_restore_owed(&st));
	/* the commit: the startup values, as before */
	session_commit_to_startup(&st);
	assert_string_equal(session_carried(&st, "work_mem"), wm);
	assert_string_equal(session_param_get(&st, "application_name"), "app0");
	assert_false(session_restore_owed(&st));
	session_free(&st);
}

/* Session pooling's named statements that RESET (session_named_reset_*): kept by exact name,
 * each run makes its RESET pending, replaced or dropped by name, all gone at once. */
static void test_named_resets(void **state)
{
	(void)state;
	struct session_state st = { 0 };
	const char *wm = "SELECT set_config(E'work_mem', E'3MB', false)";
	assert_int_equal(session_pending_set(&st, "work_mem", wm, strlen(wm)), 0);
	session_commit(&st);
	assert_int_equal(session_startup_keep(&st, ""), 0);
	assert_false(session_named_resets(&st));
	assert_int_equal(session_named_reset_put(&st, "S1", "work_mem"), 0);
	assert_int_equal(session_named_reset_put(&st, "all", NULL), 0);
	assert_int_equal(session_named_reset_put(&st, "discard", SESSION_NAMED_DISCARD_ALL), 0);
	assert_true(session_named_resets(&st));

	/* names are exact: "s1" is another statement */
	assert_int_equal(session_named_reset_run(&st, "s1"), 0);
	assert_int_equal(st.pending_len, 0);
	const char *wm2 = "SET work_mem = '17MB'";
	assert_int_equal(session_pending_set(&st, "work_mem", wm2, strlen(wm2)), 0);
	session_commit(&st);
	assert_int_equal(session_named_reset_run(&st, "S1"), 1);
	session_commit_to_startup(&st);
	assert_string_equal(session_carried(&st, "work_mem"), wm);
	assert_int_equal(session_named_reset_run(&st, "all"), 1);
	assert_true(st.pending_len > 0);
	session_discard(&st); /* its transaction failed */

	/* replaced by another statement under the name, dropped, and DISCARD ALL drops them all */
	assert_int_equal(session_named_reset_put(&st, "S1", "search_path"), 0);
	session_named_reset_drop(&st, "all");
	assert_int_equal(session_named_reset_run(&st, "all"), 0);
	assert_int_equal(session_named_reset_run(&st, "discard"), 1);
	session_discard(&st);
	assert_false(session_named_resets(&st));
	assert_int_equal(session_named_reset_run(&st, "S1"), 0);

	/* bounded */
	char name[32];
	int rc = 0;
	for (int i = 0; i < 100000 && rc == 0; i++) {
		snprintf(name, sizeof name, "stmt_%d", i);
		rc = session_named_reset_put(&st, name, "work_mem");
	}
	assert_int_equal(rc, -E2BIG);
	session_named_reset_clear(&st);
	assert_false(session_named_resets(&st));
	session_free(&st);
}

/* Savepoints: ROLLBACK TO drops what followed the savepoint's last mark (all when it has
 * none), RELEASE drops marks only; a SET known otherwise ('V') after a RESET keeps the RESET
 * from going back to the startup value. */
static void test_savepoints_and_sets_after_a_reset(void **state)
{
	(void)state;
	struct session_state st = { 0 };
	const char *wm = "SELECT set_config(E'work_mem', E'3MB', false)";
	const char *w5 = "SET work_mem = '5MB'", *w6 = "SET work_mem = '6MB'", *sp = "SET search_path = a";
	login_settings(&st, wm);
	assert_int_equal(session_startup_keep(&st, "application_name\0"), 0);
	(void)session_resync_take(&st);

	/* SAVEPOINT s (nothing pending: no mark); SET; ROLLBACK TO s: nothing left */
	assert_int_equal(session_pending_savepoint(&st, "s"), 0);
	assert_int_equal(st.pending_len, 0);
	assert_int_equal(session_pending_set(&st, "work_mem", w5, strlen(w5)), 0);
	session_pending_rollback_to(&st, "s");
	assert_int_equal(st.pending_len, 0);

	/* SET 5; SAVEPOINT s; SET 6; SAVEPOINT t; SET path; ROLLBACK TO s: 5 only, s stays */
	assert_int_equal(session_pending_set(&st, "work_mem", w5, strlen(w5)), 0);
	assert_int_equal(session_pending_savepoint(&st, "s"), 0);
	assert_int_equal(session_pending_set(&st, "work_mem", w6, strlen(w6)), 0);
	assert_int_equal(session_pending_savepoint(&st, "t"), 0);
	assert_int_equal(session_pending_set(&st, "search_path", sp, strlen(sp)), 0);
	session_pending_rollback_to(&st, "s");
	assert_int_equal(session_pending_set(&st, "search_path", sp, strlen(sp)), 0);
	session_pending_rollback_to(&st, "s"); /* again: the savepoint s is still there */
	session_commit(&st);
	assert_string_equal(session_carried(&st, "work_mem"), w5);
	assert_null(session_carried(&st, "search_path"));

	/* SAVEPOINT s; SET 6; RELEASE s; ROLLBACK TO s would fail on the server; RELEASE keeps 6 */
	assert_int_equal(session_pending_set(&st, "search_path", sp, strlen(sp)), 0);
	assert_int_equal(session_pending_savepoint(&st, "s"), 0);
	assert_int_equal(session_pending_set(&st, "work_mem", w6, strlen(w6)), 0);
	session_pending_release(&st, "s");
	session_commit(&st);
	assert_string_equal(session_carried(&st, "work_mem"), w6);
	assert_string_equal(session_carried(&st, "search_path"), sp);

	/* RESET ALL, then application_name SET (its value came as ParameterStatus): the commit
	 * takes work_mem back to its startup value, not application_name */
	assert_int_equal(session_pending_reset_all(&st), 0);
	assert_int_equal(session_pending_set_seen(&st, "application_name"), 0);
	assert_int_equal(session_param_set(&st, "application_name", "later"), 0);
	char seen[256] = "";
	assert_int_equal(session_restores_each(&st, count_restored, seen), 0);
	assert_string_equal(seen, "");
	session_commit_to_startup(&st);
	assert_string_equal(session_param_get(&st, "application_name"), "later");
	assert_string_equal(session_carried(&st, "work_mem"), wm);
	assert_null(session_carried(&st, "search_path"));

	/* nothing pending: a SET known otherwise records nothing */
	assert_int_equal(session_pending_set_seen(&st, "application_name"), 0);
	assert_int_equal(st.pending_len, 0);
	session_free(&st);
}

static void test_build_sync(void **state)
{
	(void)state;
	struct session_state st = { 0 };
	struct fake_server srv = { { "TimeZone", "DateStyle", "is_superuser", NULL }, { "UTC", "ISO, MDY", "on", NULL } };
	char out[512];

	assert_int_equal(session_param_set(&st, "TimeZone", "UTC"), 0);
	assert_int_equal(session_param_set(&st, "DateStyle", "ISO, MDY"), 0);
	assert_int_equal(session_build_sync(&st, &srv, lookup, 0, out, sizeof out), 0);
	assert_string_equal(out, ""); /* nothing differs */

	assert_int_equal(session_param_set(&st, "TimeZone", "it's\\x"), 0);
	assert_int_equal(session_build_sync(&st, &srv, lookup, 0, out, sizeof out), 0);
	/* Quotes and backslashes doubled inside E'' literals: no way out of the literal. */
	assert_string_equal(out, "SELECT set_config(E'TimeZone', E'it''s\\\\x', false);");

	const char *set = "SET search_path TO a";
	assert_int_equal(session_pending_set(&st, "search_path", set, strlen(set)), 0);
	session_commit(&st);
	assert_int_equal(session_build_sync(&st, &srv, lookup, 0, out, sizeof out), 0);
	assert_non_null(strstr(out, ";SET search_path TO a;"));
	/* A server already carrying exactly these SETs gets none of them again. */
	assert_int_equal(session_build_sync(&st, &srv, lookup, st.carry_hash, out, sizeof out), 0);
	assert_null(strstr(out, "search_path"));
	/* Too small an output buffer is an error, not a truncated statement. */
	assert_int_equal(session_build_sync(&st, &srv, lookup, 0, out, 16), -ENOSPC);
	session_free(&st);
}

/* Identical parameter sets are one copy; a change copies first and leaves the others alone;
 * the last reference frees the set. */
static void test_params_shared_copy_on_write(void **state)
{
	(void)state;
	struct session_share sh = { 0 };
	struct session_state a = { 0 }, b = { 0 }, c = { 0 };

	assert_int_equal(session_param_set(&a, "TimeZone", "UTC"), 0);
	assert_int_equal(session_param_set(&a, "DateStyle", "ISO, MDY"), 0);
	assert_int_equal(session_param_set(&b, "TimeZone", "UTC"), 0);
	assert_int_equal(session_param_set(&b, "DateStyle", "ISO, MDY"), 0);
	assert_int_equal(session_param_set(&c, "TimeZone", "Europe/Paris"), 0);
	uint64_t hash_b = b.params_hash;
	session_params_share(&a, &sh);
	session_params_share(&b, &sh);
	session_params_share(&c, &sh);
	assert_ptr_equal(a.params, b.params);
	assert_ptr_not_equal(a.params, c.params);
	assert_int_equal(session_share_count(&sh), 2);
	session_params_share(&a, &sh); /* already shared: no second reference */

	/* a's SET is a's alone */
	assert_int_equal(session_param_set(&a, "TimeZone", "Asia/Tokyo"), 0);
	assert_ptr_not_equal(a.params, b.params);
	assert_string_equal(session_param_get(&a, "TimeZone"), "Asia/Tokyo");
	assert_string_equal(session_param_get(&b, "TimeZone"), "UTC");
	assert_string_equal(session_param_get(&a, "DateStyle"), "ISO, MDY");
	assert_true(b.params_hash == hash_b);
	assert_true(a.params_hash != hash_b);
	/* the same value again changes nothing, shared or not */
	assert_int_equal(session_param_set(&b, "TimeZone", "UTC"), 0);
	assert_int_equal(session_share_count(&sh), 2);

	session_free(&b); /* last reference to the UTC set */
	assert_int_equal(session_share_count(&sh), 1);
	session_free(&c);
	assert_int_equal(session_share_count(&sh), 0);
	session_free(&a);
}

/* A second DateStyle over a first, as PostgreSQL's check_datestyle combines them. */
static void test_datestyle_merge(void **state)
{
	(void)state;
	static const char *cases[][3] = {
		{ "German", "ISO", "ISO, DMY" },         /* GERMAN alone means DMY */
		{ "SQL, DMY", "ISO", "ISO, DMY" },
		{ "ISO, MDY", "YMD", "ISO, YMD" },
		{ "YMD", "Postgres", "Postgres, YMD" },
		{ "ISO, YMD", "German", "German, DMY" }, /* ... even over an order set before */
		{ "ISO, YMD", "German, MDY", "German, MDY" },
		{ "Postgres,US", "euro", "Postgres, DMY" },
		{ "ISO", "sql", "SQL" },
	};
	char out[64];
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		assert_true(session_datestyle_merge(cases[i][0], cases[i][1], out, sizeof out));
		assert_string_equal(out, cases[i][2]);
	}
	/* Words the rule does not know: the caller applies the new value as it is. */
	assert_false(session_datestyle_merge("ISO", "DEFAULT", out, sizeof out));
	assert_false(session_datestyle_merge("ISOO", "MDY", out, sizeof out));
	assert_false(session_datestyle_merge("ISO", "", out, sizeof out));
	assert_false(session_datestyle_merge("ISO", "MDY", out, 4));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_params_set_get_and_fingerprint),
		cmocka_unit_test(test_pending_commit_and_discard),
		cmocka_unit_test(test_reset_to_startup),
		cmocka_unit_test(test_named_resets),
		cmocka_unit_test(test_restore_in_transaction),
		cmocka_unit_test(test_savepoints_and_sets_after_a_reset),
		cmocka_unit_test(test_build_sync),
		cmocka_unit_test(test_params_shared_copy_on_write),
		cmocka_unit_test(test_datestyle_merge),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
