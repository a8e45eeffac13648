/* Unit tests for kv/page: a pulled page is taken only when its count, its JSON rows and its
 * keyset position agree with each other and with the pass's range. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "kv/page.h"

static const char rows2[] =
	"[{\"ns\": \"default\", \"key\": \"a\", \"value\": {\"x\": [1, 2.5e3, null, true]}, \"ver_ts\": 1, \"origin\": 2},"
	" {\"origin\": 2, \"key\": \"b\\u00e9\\\"\", \"ns\": \"default\", \"value\": null, \"expires_at\": null}]";

static int decode(const char *count, const char *rows, const char *w, const char *ns, const char *key, long *n)
{
	char err[200];
	struct kv_page_in in = { .count = count, .rows = rows, .pos_w = w, .pos_ns = ns, .pos_key = key,
				 .cursor_w = "100", .xmin = "200", .batch = 2 };
	return kv_page_decode(&in, n, err, sizeof err);
}

static void test_good_pages(void **state)
{
	long n = -1;
	(void)state;
	assert_int_equal(decode("2", rows2, "150", "default", "b\xc3\xa9\"", &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(decode("0", "[]", NULL, NULL, NULL, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(decode("2", rows2, "100", "default", "b\xc3\xa9\"", &n), 0); /* at the cursor */
}

static void test_bad_pages(void **state)
{
	long n;
	(void)state;
	/* count against the batch and the rows */
	assert_int_equal(decode("3", rows2, "150", "default", "b\xc3\xa9\"", &n), -EPROTO);
	assert_int_equal(decode("1", rows2, "150", "default", "b\xc3\xa9\"", &n), -EPROTO);
	assert_int_equal(decode("-1", "[]", NULL, NULL, NULL, &n), -EPROTO);
	assert_int_equal(decode(NULL, "[]", NULL, NULL, NULL, &n), -EPROTO);
	assert_int_equal(decode("0", NULL, NULL, NULL, NULL, &n), -EPROTO);
	/* the position: the last row's, inside [cursor, xmin) */
	assert_int_equal(decode("2", rows2, "150", "default", "a", &n), -EPROTO);
	assert_int_equal(decode("2", rows2, "200", "default", "b\xc3\xa9\"", &n), -EPROTO);
	assert_int_equal(decode("2", rows2, "99", "default", "b\xc3\xa9\"", &n), -EPROTO);
	assert_int_equal(decode("2", rows2, NULL, "default", "b\xc3\xa9\"", &n), -EPROTO);
	assert_int_equal(decode("2", rows2, "99999999999999999999999", "default", "b\xc3\xa9\"", &n), -EPROTO);
	/* the JSON */
	static const char *bad[] = {
		"", "{}", "[", "[{\"ns\": \"d\", \"key\": \"k\"}", "[{\"ns\": \"d\", \"key\": \"k\"}] x",
		"[{\"ns\": \"d\"}]", "[{\"ns\": \"d\", \"key\": 1}]", "[{\"ns\": \"d\", \"key\": \"k\", \"key\": \"k\"}]",
		"[{\"ns\": \"d\", \"key\": \"k\\u0000\"}]", "[{\"ns\": \"d\", \"key\": \"k\\ud800\"}]", "[1]",
		"[{\"ns\": \"d\", \"key\": \"k\", \"v\": 01}]", "[{\"ns\": \"d\", \"key\": \"k\", \"v\": [1,]}]",
		"[{\"ns\": \"d\", \"key\": \"k\", \"v\": tru}]", "[{\"ns\": \"d\", \"key\": \"k\x01\"}]",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		if (decode("1", bad[i], "150", "d", "k", &n) != -EPROTO)
			fail_msg("accepted %s", bad[i]);
	/* unterminated nesting */
	char deep[400];
	size_t o = (size_t)snprintf(deep, sizeof deep, "[{\"ns\": \"d\", \"key\": \"k\", \"v\": ");
	for (int i = 0; i < 100; i++)
		deep[o++] = '[';
	deep[o] = '\0';
	assert_int_equal(decode("1", deep, "150", "d", "k", &n), -EPROTO);
	/* containers closed by the other kind's bracket, members without a name or colon */
	static const char *mixed[] = {
		"[{\"ns\": \"d\", \"key\": \"k\", \"v\": [1}]}]", "[{\"ns\": \"d\", \"key\": \"k\", \"v\": {\"a\": 1]}]",
		"[{\"ns\": \"d\", \"key\": \"k\", \"v\": {\"a\": [{\"b\": 2]}]}}]", "[{\"ns\": \"d\", \"key\": \"k\", \"v\": {1: 2}}]",
		"[{\"ns\": \"d\", \"key\": \"k\", \"v\": {\"a\" 2}}]", "[{\"ns\": \"d\", \"key\": \"k\", \"v\": {\"a\": 1,}}]",
		"[{\"ns\": \"d\", \"key\": \"k\", \"v\": {\"a\": }}]", "[{\"ns\": \"d\", \"key\": \"k\", \"v\": [[1] [2]]}]",
	};
	for (size_t i = 0; i < sizeof mixed / sizeof mixed[0]; i++)
		if (decode("1", mixed[i], "150", "d", "k", &n) != -EPROTO)
			fail_msg("accepted %s", mixed[i]);
}

/* A value nested n deep: [{"a": [{"a": ... 1 ...}]}], alternating kinds, then the row's end. */
static char *nested(size_t n)
{
	static const char head[] = "[{\"ns\": \"d\", \"key\": \"k\", \"v\": ";
	char *s = test_malloc(sizeof head + n * 6 + 16);
	size_t o = (size_t)sprintf(s, "%s", head);
	for (size_t i = 0; i < n; i++)
		o += (size_t)sprintf(s + o, "%s", i % 2 ? "{\"a\": " : "[");
	o += (size_t)sprintf(s + o, "1");
	for (size_t i = n; i-- > 0;)
		s[o++] = i % 2 ? '}' : ']';
	sprintf(s + o, ", \"x\": 2}]");
	return s;
}

static void test_deep_values(void **state)
{
	long n = -1;
	(void)state;
	/* As deep as PostgreSQL stores a jsonb, and deeper: a row the check refused would stop its
	 * link for good (the pass fails at every retry). */
	size_t depths[] = { 1, 63, 64, 65, 129, 20000, KV_PAGE_MAX_DEPTH };
	for (size_t i = 0; i < sizeof depths / sizeof depths[0]; i++) {
		char *s = nested(depths[i]);
		if (decode("1", s, "150", "d", "k", &n) != 0 || n != 1)
			fail_msg("refused a value nested %zu deep", depths[i]);
		test_free(s);
	}
	/* ... and bounded. */
	char *s = nested(KV_PAGE_MAX_DEPTH + 1);
	assert_int_equal(decode("1", s, "150", "d", "k", &n), -EPROTO);
	test_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_pages),
		cmocka_unit_test(test_bad_pages),
		cmocka_unit_test(test_deep_values),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
