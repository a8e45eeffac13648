/* ident_file (pg_ident.conf): plain lines, regular expressions with \1, the keyword all, quoting,
 * file order within a map, and each load error with its exact "FILE:LINE: ident:" text, all of
 * them reported in one load. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth/ident.h"

static int load(const char *text, struct ident **id, char **errs)
{
	size_t errlen;
	FILE *ef = open_memstream(errs, &errlen);
	assert_non_null(ef);
	int n = ident_load_buffer("i.conf", text, strlen(text), ef, id);
	fclose(ef);
	return n;
}

static struct ident *load_ok(const char *text)
{
	struct ident *id = NULL;
	char *errs = NULL;
	int n = load(text, &id, &errs);
	if (n != 0)
		fprintf(stderr, "unexpected errors:\n%s", errs);
	assert_int_equal(n, 0);
	assert_string_equal(errs, "");
	free(errs);
	assert_non_null(id);
	return id;
}

/* The line that admits system as user in map, 0 for none. */
static int admits(const struct ident *id, const char *map, const char *system, const char *user)
{
	int line = -1;
	if (!ident_match(id, map, system, user, &line))
		return 0;
	return line;
}

static void test_plain_lines(void **state)
{
	(void)state;
	struct ident *id = load_ok("# comment\n"
				   "\n"
				   "web   root    tusk_trust\n"
				   "web   alice   bob   # trailing comment\n"
				   "other root    postgres\n"
				   "\"my map\" \"Carol Q\" \"all\"\n");
	assert_int_equal(ident_count(id), 4);
	assert_true(ident_has_map(id, "web"));
	assert_true(ident_has_map(id, "other"));
	assert_true(ident_has_map(id, "my map"));
	assert_false(ident_has_map(id, "Web"));
	assert_int_equal(admits(id, "web", "root", "tusk_trust"), 3);
	assert_int_equal(admits(id, "web", "alice", "bob"), 4);
	/* Each line maps one way only, and maps do not leak into each other. */
	assert_int_equal(admits(id, "web", "bob", "alice"), 0);
	assert_int_equal(admits(id, "web", "root", "postgres"), 0);
	assert_int_equal(admits(id, "other", "root", "postgres"), 5);
	assert_int_equal(admits(id, "nope", "root", "tusk_trust"), 0);
	/* Case matters, as in PostgreSQL. */
	assert_int_equal(admits(id, "web", "Root", "tusk_trust"), 0);
	/* A quoted "all" is a user name, not the keyword. */
	assert_int_equal(admits(id, "my map", "Carol Q", "all"), 6);
	assert_int_equal(admits(id, "my map", "Carol Q", "carol"), 0);
	ident_free(id);
}

static void test_keyword_all(void **state)
{
	(void)state;
	struct ident *id = load_ok("m admin all\n"
				   "m /^ops-.*$ all\n");
	assert_int_equal(admits(id, "m", "admin", "anyone"), 1);
	assert_int_equal(admits(id, "m", "ops-1", "postgres"), 2);
	assert_int_equal(admits(id, "m", "dev", "postgres"), 0);
	ident_free(id);
}

static void test_regex(void **state)
{
	(void)state;
	struct ident *id = load_ok("m /^(.*)@example\\.com$ \\1\n"
				   "m /^db-([a-z]+)$ app_\\1_rw\n"
				   "m /^svc$ fixed\n"
				   "m \"/^quoted (x)$\" \\1\n"
				   "m /^(a)|(b)$ \\1\n"
				   "m /^b$ b_user\n");
	assert_int_equal(admits(id, "m", "alice@example.com", "alice"), 1);
	assert_int_equal(admits(id, "m", "alice@example.com", "bob"), 0);
	assert_int_equal(admits(id, "m", "alice@example.org", "alice"), 0);
	/* Text around \1 stays. */
	assert_int_equal(admits(id, "m", "db-sales", "app_sales_rw"), 2);
	assert_int_equal(admits(id, "m", "db-sales", "app_sales"), 0);
	assert_int_equal(admits(id, "m", "db-sales", "sales"), 0);
	/* Without \1 the database user is compared as written. */
	assert_int_equal(admits(id, "m", "svc", "fixed"), 3);
	/* A quoted token starting with '/' is a regular expression too (PostgreSQL's rule). */
	assert_int_equal(admits(id, "m", "quoted x", "x"), 4);
	assert_int_equal(admits(id, "m", "a", "a"), 5);
	/* The capture took no part in the match: PostgreSQL's error, which ends the search
	 * before line 6 could admit b. */
	assert_int_equal(admits(id, "m", "b", "b_user"), 0);
	ident_free(id);
}

static void test_first_line_of_the_map_wins(void **state)
{
	(void)state;
	struct ident *id = load_ok("m /^(.*)$ \\1\n"
				   "m root postgres\n");
	assert_int_equal(admits(id, "m", "root", "root"), 1);
	assert_int_equal(admits(id, "m", "root", "postgres"), 2);
	ident_free(id);
}

static void expect_one_error(const char *line, const char *message)
{
	char text[512], want[512];
	struct ident *id = NULL;
	char *errs = NULL;
	/* A good line first, so the bad one is line 2. */
	snprintf(text, sizeof text, "m root root\n%s\n", line);
	snprintf(want, sizeof want, "i.conf:2: ident: %s\n", message);
	assert_int_equal(load(text, &id, &errs), 1);
	assert_null(id);
	assert_string_equal(errs, want);
	free(errs);
}

static void test_each_error(void **state)
{
	(void)state;
	expect_one_error("m", "end of line before the system user name");
	expect_one_error("m root", "end of line before the database user name");
	expect_one_error("m root bob extra", "unexpected field \"extra\" after the database user name");
	expect_one_error("m,n root bob", "the map name must be a single value, not a list");
	expect_one_error("m root,alice bob", "the system user name must be a single value, not a list");
	expect_one_error("m root bob,carol", "the database user name must be a single value, not a list");
	expect_one_error("m \"\" bob", "empty system user name");
	expect_one_error("m root +admins", "group membership \"+admins\" is not supported (write the user names)");
	expect_one_error("m root /^b.*$",
			 "a regular expression as database user name (\"/^b.*$\") is not supported (quote it for a name)");
	expect_one_error("m root @users", "file inclusion \"@users\" is not supported (write the lines inline)");
	expect_one_error("m /^.*$ \\1", "regular expression \"^.*$\" has no parenthesized capture for the \\1 in \"\\1\"");
	expect_one_error("m \"unterminated bob", "unterminated quoted string");

	/* An invalid regular expression names it; regerror's wording is the C library's. */
	struct ident *id = NULL;
	char *errs = NULL;
	assert_int_equal(load("m /(unclosed bob\n", &id, &errs), 1);
	assert_null(id);
	assert_non_null(strstr(errs, "i.conf:1: ident: invalid regular expression \"(unclosed\": "));
	free(errs);
}

/* Patterns glibc's matcher could take minutes or gigabytes on, refused at load; their
 * harmless neighbours load. */
static void test_costly_patterns(void **state)
{
	(void)state;
	const char *backref = ": back-references (\\1 to \\9) are not supported: they can take exponential time";
	const char *counts = ": it is too large once what its counts and '+' repeat is copied (over 10000 elements)";
	char want[512];
	static const char *const refused_backref[] = { "(a|aa)*\\1*$", "(x)\\9", "[a-z](b)\\1[\\]" };
	for (size_t i = 0; i < sizeof(refused_backref) / sizeof(refused_backref[0]); i++) {
		char line[128];
		snprintf(line, sizeof line, "m \"/%s\" \\1", refused_backref[i]);
		snprintf(want, sizeof want, "regular expression \"%s\"%s", refused_backref[i], backref);
		expect_one_error(line, want);
	}
	/* Stacked quantifiers: the fuzzer found a hundred '+' (regcomp ran out of 2 GB) and
	 * "@********++++++++++***" (over 10 s). */
	char stacked[128] = "x";
	memset(stacked + 1, '+', 100);
	stacked[101] = '\0';
	const char *stack = ": a quantifier right after a quantifier (\"a**\", \"a+*\", PostgreSQL's non-greedy \"a*?\") is not supported";
	const char *const refused_stacked[] = { stacked, "^(.*)@********++++++++++***$", "a*?", "(a)+*", "a{2}?", "b?{3}" };
	for (size_t i = 0; i < sizeof(refused_stacked) / sizeof(refused_stacked[0]); i++) {
		char line[300];
		snprintf(line, sizeof line, "m \"/%s\" bob", refused_stacked[i]);
		snprintf(want, sizeof want, "regular expression \"%s\"%s", refused_stacked[i], stack);
		expect_one_error(line, want);
	}
	/* Nested ones multiply. */
	char nested[256] = "x";
	for (int i = 0; i < 14; i++) {
		char tmp[256];
		assert_true(snprintf(tmp, sizeof tmp, "(%s+)", nested) < (int)sizeof tmp); /* 3 + 3 x 14 bytes */
		strcpy(nested, tmp);
	}
	const char *const refused_counts[] = { "((a{200}){200}){200}", "(a{100}){100}", "a{10001}", "(a{2,}){5000}",
					       "(a{0,9999}){0,2}", nested, "x(y|z{9000}|w{2000})" };
	for (size_t i = 0; i < sizeof(refused_counts) / sizeof(refused_counts[0]); i++) {
		char line[300];
		snprintf(line, sizeof line, "m \"/%s\" bob", refused_counts[i]);
		snprintf(want, sizeof want, "regular expression \"%s\"%s", refused_counts[i], counts);
		expect_one_error(line, want);
	}
	/* Empty alternatives and groups: the fuzzer's "(||||.|||.Z)*$" never ended on "w". */
	const char *empty = ": an empty alternative or group (\"(|a)\", \"a||b\", \"a|\", \"()\") is not supported: "
			    "glibc's matcher may never end on one (write \"(a)?\")";
	const char *const refused_empty[] = { "(||||.|||.Z)*$", "(|a)", "a||b", "a|", "()", "|a", "x(a|)" };
	for (size_t i = 0; i < sizeof(refused_empty) / sizeof(refused_empty[0]); i++) {
		char line[300];
		snprintf(line, sizeof line, "m \"/%s\" bob", refused_empty[i]);
		snprintf(want, sizeof want, "regular expression \"%s\"%s", refused_empty[i], empty);
		expect_one_error(line, want);
	}
	struct ident *alts = load_ok("m \"/^(^|,)(a|[|])$\" bob\nm \"/^x|y$\" carol\n");
	assert_int_equal(admits(alts, "m", ",|", "bob"), 1);
	assert_int_equal(admits(alts, "m", "y", "carol"), 2);
	ident_free(alts);
	/* Not back-references: an escaped backslash before a digit, a digit inside brackets
	 * (a bracket expression's backslash is a member), ']' first in a bracket and a class name;
	 * counts that stay within the bound, and braces that are no count. */
	struct ident *id = load_ok("m /^a\\\\1$ bob\n"
				   "m /^[\\1]x$ carol\n"
				   "m /^[]\\1]{3}$ dave\n"
				   "m /^[[:digit:]\\]{2}(y)$ \\1\n"
				   "m /^(a{99}){99}$ erin\n"
				   "m \"/^(x{10,11}|y){1,700}z+$\" gina\n"
				   "m /^x{0}z$ frank\n");
	assert_int_equal(admits(id, "m", "a\\1", "bob"), 1);
	assert_int_equal(admits(id, "m", "\\x", "carol"), 2);
	assert_int_equal(admits(id, "m", "]\\1", "dave"), 3);
	assert_int_equal(admits(id, "m", "4\\y", "y"), 4);
	assert_int_equal(admits(id, "m", "z", "frank"), 7);
	assert_int_equal(admits(id, "m", "yxxxxxxxxxxzz", "gina"), 6);
	ident_free(id);
}

static void test_quoted_names_are_names(void **state)
{
	(void)state;
	struct ident *id = load_ok("m root \"+admins\"\n"
				   "m root \"/x\"\n");
	assert_int_equal(admits(id, "m", "root", "+admins"), 1);
	assert_int_equal(admits(id, "m", "root", "/x"), 2);
	ident_free(id);
}

static void test_all_errors_reported(void **state)
{
	(void)state;
	struct ident *id = NULL;
	char *errs = NULL;
	assert_int_equal(load("m root root\n"
			      "m root\n"
			      "# fine\n"
			      "m root +g\n"
			      "n a b\n"
			      "m a b c\n",
			      &id, &errs),
			 3);
	assert_null(id);
	assert_string_equal(errs, "i.conf:2: ident: end of line before the database user name\n"
				  "i.conf:4: ident: group membership \"+g\" is not supported (write the user names)\n"
				  "i.conf:6: ident: unexpected field \"c\" after the database user name\n");
	free(errs);
}

static void test_load_file(void **state)
{
	(void)state;
	char path[] = "/tmp/tusk-test-ident-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	static const char good[] = "m root tusk_trust\n";
	assert_int_equal(write(fd, good, sizeof(good) - 1), (ssize_t)(sizeof(good) - 1));
	close(fd);

	struct ident *id = NULL;
	assert_int_equal(ident_load(path, NULL, &id), 0);
	assert_int_equal(admits(id, "m", "root", "tusk_trust"), 1);
	ident_free(id);

	unlink(path);
	char *errs = NULL, want[256];
	size_t errlen;
	FILE *ef = open_memstream(&errs, &errlen);
	id = NULL;
	assert_int_equal(ident_load(path, ef, &id), 1);
	fclose(ef);
	assert_null(id);
	snprintf(want, sizeof want, "%s: ident: cannot open: No such file or directory\n", path);
	assert_string_equal(errs, want);
	free(errs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_lines),
		cmocka_unit_test(test_keyword_all),
		cmocka_unit_test(test_regex),
		cmocka_unit_test(test_costly_patterns),
		cmocka_unit_test(test_first_line_of_the_map_wins),
		cmocka_unit_test(test_each_error),
		cmocka_unit_test(test_quoted_names_are_names),
		cmocka_unit_test(test_all_errors_reported),
		cmocka_unit_test(test_load_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
