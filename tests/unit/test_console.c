/* Unit tests for console/: command parsing (keywords, arguments, quoting, one statement per
 * query, errors) and the column lists the SHOW commands describe. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "console/console_int.h"

static struct console_cmd parse_ok(const char *text)
{
	struct console_cmd cmd;
	char err[200] = "";
	int rc = console_parse(text, strlen(text), &cmd, err, sizeof err);
	if (rc != 0)
		print_error("%s: %s\n", text, err);
	assert_int_equal(rc, 0);
	return cmd;
}

static void parse_bad(const char *text, const char *want)
{
	struct console_cmd cmd;
	char err[200] = "";
	assert_int_equal(console_parse(text, strlen(text), &cmd, err, sizeof err), -EINVAL);
	if (!strstr(err, want))
		print_error("%s: got \"%s\", want \"%s\"\n", text, err, want);
	assert_non_null(strstr(err, want));
}

static void test_commands(void **state)
{
	(void)state;
	assert_int_equal(parse_ok("SHOW POOLS").kind, CONSOLE_CMD_SHOW_POOLS);
	assert_int_equal(parse_ok("  show   clients ; ").kind, CONSOLE_CMD_SHOW_CLIENTS);
	assert_int_equal(parse_ok("Show Servers").kind, CONSOLE_CMD_SHOW_SERVERS);
	assert_int_equal(parse_ok("SHOW STATS").kind, CONSOLE_CMD_SHOW_STATS);
	assert_int_equal(parse_ok("SHOW DATABASES").kind, CONSOLE_CMD_SHOW_DATABASES);
	assert_int_equal(parse_ok("SHOW CONFIG").kind, CONSOLE_CMD_SHOW_CONFIG);
	assert_int_equal(parse_ok("SHOW LISTS").kind, CONSOLE_CMD_SHOW_LISTS);
	assert_int_equal(parse_ok("SHOW VERSION").kind, CONSOLE_CMD_SHOW_VERSION);
	assert_int_equal(parse_ok("show waits").kind, CONSOLE_CMD_SHOW_WAITS);
	assert_int_equal(parse_ok("SHOW HELP").kind, CONSOLE_CMD_SHOW_HELP);
	/* PgBouncer's, which scripts use (issue 26). */
	assert_int_equal(parse_ok("SHOW STATS_TOTALS").kind, CONSOLE_CMD_SHOW_STATS_TOTALS);
	assert_int_equal(parse_ok("show stats_averages").kind, CONSOLE_CMD_SHOW_STATS_AVERAGES);
	assert_int_equal(parse_ok("SHOW TOTALS").kind, CONSOLE_CMD_SHOW_TOTALS);
	assert_int_equal(parse_ok("SHOW USERS").kind, CONSOLE_CMD_SHOW_USERS);
	assert_int_equal(parse_ok("show cache").kind, CONSOLE_CMD_SHOW_CACHE);
	assert_int_equal(parse_ok("CACHE FLUSH").kind, CONSOLE_CMD_CACHE_FLUSH);
	assert_string_equal(parse_ok("CACHE FLUSH").arg, "");
	assert_string_equal(parse_ok("cache flush appdb;").arg, "appdb");
	parse_bad("CACHE", "CACHE needs FLUSH [database]");
	parse_bad("CACHE CLEAR x", "CACHE needs FLUSH [database]");
	assert_int_equal(parse_ok("RELOAD").kind, CONSOLE_CMD_RELOAD);
	assert_int_equal(parse_ok("shutdown").kind, CONSOLE_CMD_SHUTDOWN);
	assert_int_equal(parse_ok("SHUTDOWN WAIT_FOR_CLIENTS").kind, CONSOLE_CMD_SHUTDOWN_WAIT);
	assert_int_equal(parse_ok("").kind, CONSOLE_CMD_EMPTY);
	assert_int_equal(parse_ok(" ; ").kind, CONSOLE_CMD_EMPTY);

	struct console_cmd c = parse_ok("PAUSE");
	assert_int_equal(c.kind, CONSOLE_CMD_PAUSE);
	assert_string_equal(c.arg, "");
	c = parse_ok("pause app_db");
	assert_string_equal(c.arg, "app_db");
	c = parse_ok("RESUME \"My DB;x\"");
	assert_int_equal(c.kind, CONSOLE_CMD_RESUME);
	assert_string_equal(c.arg, "My DB;x");
	c = parse_ok("KILL app-db.2");
	assert_int_equal(c.kind, CONSOLE_CMD_KILL);
	assert_string_equal(c.arg, "app-db.2");
	c = parse_ok("KILL_CLIENT c0123abcd;");
	assert_int_equal(c.kind, CONSOLE_CMD_KILL_CLIENT);
	assert_string_equal(c.arg, "c0123abcd");
	c = parse_ok("RECONNECT");
	assert_int_equal(c.kind, CONSOLE_CMD_RECONNECT);
}

static void test_errors(void **state)
{
	(void)state;
	parse_bad("SELECT 1", "unknown command \"SELECT\"");
	parse_bad("SHOW", "SHOW needs an item");
	parse_bad("SHOW FOO", "unknown SHOW item \"FOO\"");
	parse_bad("SHOW POOLS; SHOW CLIENTS", "one command per query");
	parse_bad("KILL", "KILL needs an argument (a database name)");
	parse_bad("KILL_CLIENT", "a client id");
	parse_bad("PAUSE a b", "unexpected text after PAUSE");
	parse_bad("RELOAD now", "unexpected text after RELOAD");
	parse_bad("SHUTDOWN NOW", "unexpected text after SHUTDOWN");
	parse_bad("PAUSE; SHOW POOLS", "one command per query");
	parse_bad("KILL_CLIENT c1 ; RELOAD", "one command per query");
	parse_bad("PAUSE \"unterminated", "syntax error");
	parse_bad("$$", "syntax error");
	char longname[200];
	memset(longname, 'x', sizeof longname - 1);
	longname[sizeof longname - 1] = '\0';
	char text[220];
	snprintf(text, sizeof text, "PAUSE %s", longname);
	parse_bad(text, "syntax error");
}

static void test_columns(void **state)
{
	(void)state;
	struct console_columns p = console_columns_of(CONSOLE_CMD_SHOW_POOLS);
	assert_true(p.n >= 16);
	assert_string_equal(p.cols[0].name, "database");
	assert_string_equal(p.cols[15].name, "pool_mode");
	assert_int_equal(p.cols[2].type_oid, CONSOLE_INT8);
	assert_int_equal(p.cols[0].type_oid, CONSOLE_TEXT);
	struct console_columns s = console_columns_of(CONSOLE_CMD_SHOW_STATS);
	assert_int_equal(s.n, 15);
	assert_string_equal(s.cols[14].name, "avg_wait_time");
	assert_int_equal(console_columns_of(CONSOLE_CMD_SHOW_HELP).n, 0);
	assert_int_equal(console_columns_of(CONSOLE_CMD_PAUSE).n, 0);
	assert_int_equal(console_columns_of(CONSOLE_CMD_SHOW_CLIENTS).n, console_columns_of(CONSOLE_CMD_SHOW_SERVERS).n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_commands),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_columns),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
