/* Unit tests for kv/resp: the RESP2 request parser (multi-bulk, inline, pieces, the bounds of
 * resp.h), the reply writers and the JSON string codec of values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <float.h>
#include <math.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv/resp.h"

static enum resp_rc parse(const char *buf, size_t len, struct resp_arg *args, int cap, int *n, size_t *used)
{
	const char *err = NULL;
	enum resp_rc rc = resp_parse(buf, len, args, cap, n, used, &err);
	assert_true(rc != RESP_ERROR || err != NULL);
	return rc;
}

static void test_multibulk_and_pieces(void **state)
{
	static const char req[] = "*3\r\n$3\r\nsEt\r\n$1\r\nk\r\n$5\r\nhe\r\nl\r\n*1\r\n$4\r\nPING\r\n";
	struct resp_arg a[4];
	int n;
	size_t used;
	(void)state;
	/* every prefix of the first command asks for more, never errs */
	for (size_t i = 0; i < 31; i++)
		assert_int_equal(parse(req, i, a, 4, &n, &used), RESP_MORE);
	assert_int_equal(parse(req, sizeof req - 1, a, 4, &n, &used), RESP_COMMAND);
	assert_int_equal(n, 3);
	assert_int_equal(used, 31);
	assert_true(resp_is(req, &a[0], "SET"));
	assert_int_equal(a[2].len, 5);
	assert_memory_equal(req + a[2].off, "he\r\nl", 5); /* binary safe */
	assert_int_equal(parse(req + used, sizeof req - 1 - used, a, 4, &n, &used), RESP_COMMAND);
	assert_true(resp_is(req + 31, &a[0], "PING"));
	/* more arguments than the array holds: grow and parse again */
	assert_int_equal(parse(req, sizeof req - 1, a, 2, &n, &used), RESP_GROW);
	assert_int_equal(n, 3);
}

static void test_inline(void **state)
{
	static const char req[] = "  GET   key\t1 \r\n\r\nPING\n";
	struct resp_arg a[4];
	int n;
	size_t used;
	(void)state;
	assert_int_equal(parse(req, 10, a, 4, &n, &used), RESP_MORE);
	assert_int_equal(parse(req, sizeof req - 1, a, 4, &n, &used), RESP_COMMAND);
	assert_int_equal(n, 3);
	assert_true(resp_is(req, &a[0], "GET"));
	assert_memory_equal(req + a[2].off, "1", 1);
	assert_int_equal(parse(req + used, 2, a, 4, &n, &used), RESP_COMMAND);
	assert_int_equal(n, 0); /* an empty line: nothing */
}

static void test_hostile_bounds(void **state)
{
	struct resp_arg a[4];
	int n;
	size_t used;
	char *big;
	(void)state;
	static const char *const bad[] = {
		"*99999999\r\n", "*1\r\n$1048577\r\n", "*1\r\n$-5\r\n", "*1\r\n$9999999999999999999999\r\n",
		"*1\r\n+x\r\n", "*1\r\n$1\r\nab\r\n", "*abc\r\n", "*1\r\n$01\r\n",
		"*000000000000000000000000000000000000000000001\r\n",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_int_equal(parse(bad[i], strlen(bad[i]), a, 4, &n, &used), RESP_ERROR);
	/* a header line without its CRLF stays bounded */
	assert_int_equal(parse("*1\r\n$11111", 10, a, 4, &n, &used), RESP_MORE);
	/* an inline line past the bound */
	big = malloc(RESP_MAX_INLINE + 1);
	assert_non_null(big);
	memset(big, 'a', RESP_MAX_INLINE + 1);
	assert_int_equal(parse(big, RESP_MAX_INLINE + 1, a, 4, &n, &used), RESP_ERROR);
	free(big);
	assert_int_equal(parse("*0\r\n", 4, a, 4, &n, &used), RESP_COMMAND);
	assert_int_equal(n, 0);
	assert_int_equal(used, 4);
}

/* Redis's string2ld and INCRBYFLOAT's output (the forms the differential test compares too). */
static void test_long_doubles(void **state)
{
	long double v;
	char buf[RESP_LD_MAX];
	(void)state;
	assert_true(resp_to_ld("10.5", 4, &v) && resp_to_ld("0x10", 4, &v) && v == 16);
	assert_true(resp_to_ld("inf", 3, &v) && isinf(v));
	assert_false(resp_to_ld("nan", 3, &v));
	assert_false(resp_to_ld(" 1", 2, &v));
	assert_false(resp_to_ld("1 ", 2, &v));
	assert_false(resp_to_ld("", 0, &v));
	assert_false(resp_to_ld("1e5000", 6, &v));  /* overflow */
	assert_false(resp_to_ld("1e-5000", 7, &v)); /* underflow to 0 */
	assert_false(resp_to_ld("1\0", 2, &v));
	char big[RESP_LD_MAX + 1];
	memset(big, '0', sizeof big);
	big[0] = '1';
	big[1] = '.'; /* 1.000...: a float of RESP_LD_MAX - 1 bytes, but not of RESP_LD_MAX */
	assert_false(resp_to_ld(big, RESP_LD_MAX, &v));
	assert_true(resp_to_ld(big, RESP_LD_MAX - 1, &v) && v == 1);
	assert_int_equal(resp_ld_human(10.5L + 0.1L, buf), 4);
	assert_string_equal(buf, "10.6");
	(void)resp_ld_human(1e15L + 0.1L, buf);
	assert_string_equal(buf, "1000000000000000.0999755859375");
	(void)resp_ld_human(-0.0L, buf);
	assert_string_equal(buf, "0");
	(void)resp_ld_human(5200.0L, buf);
	assert_string_equal(buf, "5200");
	assert_int_equal(resp_ld_human(1.0L / 0.0L, buf), 0);
	assert_true(resp_ld_human(LDBL_MAX, buf) > 4900);
}

static void test_numbers_and_replies(void **state)
{
	long long v;
	char buf[64];
	struct resp_out o = { buf, 0, sizeof buf };
	(void)state;
	assert_true(resp_to_ll("-9223372036854775808", 20, &v) && v == (-9223372036854775807LL - 1));
	assert_false(resp_to_ll("9223372036854775808", 19, &v));
	assert_false(resp_to_ll("+1", 2, &v));
	assert_false(resp_to_ll("-0", 2, &v));
	assert_false(resp_to_ll("", 0, &v));
	assert_true(resp_out_bulk(&o, "ab", 2) && resp_out_nil(&o) && resp_out_int(&o, -3) &&
		    resp_out_error(&o, "ERR a\r\nb") && resp_out_array(&o, 2));
	assert_int_equal(o.len, strlen("$2\r\nab\r\n$-1\r\n:-3\r\n-ERR a  b\r\n*2\r\n"));
	assert_memory_equal(buf, "$2\r\nab\r\n$-1\r\n:-3\r\n-ERR a  b\r\n*2\r\n", o.len);
	o.len = 60;
	assert_false(resp_out_bulk(&o, "abc", 3)); /* does not fit: nothing written */
	assert_int_equal(o.len, 60);
}

static void test_json_values(void **state)
{
	static const char s[] = "a\"b\\c\n\x01\xc3\xa9";
	char q[64], u[64];
	(void)state;
	long k = resp_json_quote(s, sizeof s - 1, q, sizeof q);
	assert_true(k > 0);
	assert_memory_equal(q, "\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\"", (size_t)k);
	assert_int_equal(resp_json_unquote(q, (size_t)k, u), sizeof s - 1);
	assert_memory_equal(u, s, sizeof s - 1);
	assert_int_equal(resp_json_quote("a\0b", 3, q, sizeof q), -1); /* jsonb has no NUL */
	assert_int_equal(resp_json_quote("abc", 3, q, 4), -1);
	assert_int_equal(resp_json_unquote("\"\\ud83d\\ude00\"", 14, u), 4);
	assert_memory_equal(u, "\xf0\x9f\x98\x80", 4);
	assert_int_equal(resp_json_unquote("\"\\ud83d\"", 8, u), -1);
	assert_int_equal(resp_json_unquote("{\"a\": 1}", 8, u), -1);
	assert_int_equal(resp_json_unquote("\"a\"b\"", 5, u), -1);
}

/* kv.msetnx's route: the first key of a JSON object, unquoted; what follows it is not read. */
static void test_json_first_key(void **state)
{
	char k[16];
	(void)state;
#define FIRST(s, cap) resp_json_first_key(s, sizeof(s) - 1, k, cap)
	assert_int_equal(FIRST(" \n{ \t\"a\\\"b\": 1, \"z\": 2}", sizeof k), 3);
	assert_memory_equal(k, "a\"b", 3);
	assert_int_equal(FIRST("{\"\\u00e9\":", sizeof k), 2); /* the rest unread */
	assert_memory_equal(k, "\xc3\xa9", 2);
	assert_int_equal(FIRST("{\"\": 1}", sizeof k), 0);
	assert_int_equal(FIRST("{\"abcd\": 1}", 6), 4);  /* the text "abcd" fits 6 bytes */
	assert_int_equal(FIRST("{\"abcde\": 1}", 6), -1); /* its 7 do not */
	assert_int_equal(FIRST("[\"a\"]", sizeof k), -1);
	assert_int_equal(FIRST("{}", sizeof k), -1);
	assert_int_equal(FIRST("{ 1: 2}", sizeof k), -1);
	assert_int_equal(FIRST("{\"ab", sizeof k), -1);   /* unterminated */
	assert_int_equal(FIRST("{\"ab\\", sizeof k), -1); /* ends in an escape */
	assert_int_equal(FIRST("{\"a\\q\"", sizeof k), -1); /* no JSON escape */
	assert_int_equal(FIRST("   ", sizeof k), -1);
	assert_int_equal(resp_json_first_key("{\"a\"}", 3, k, sizeof k), -1); /* n bounds the read */
#undef FIRST
}

/* A value as Redis reads it: a JSON string unquoted in place behind its header, any other
 * JSON text (or a malformed string) as is, nothing written when it does not fit. */
static void test_value_replies(void **state)
{
	char buf[128];
	struct resp_out o = { buf, 0, sizeof buf };
	(void)state;
	static const char quoted[] = "\"a\\nb\\u00e9\""; /* the JSON text "a\nb\u00e9" */
	assert_true(resp_out_value(&o, quoted, sizeof quoted - 1));
	assert_true(resp_out_value(&o, "{\"n\": 1}", 8));
	assert_true(resp_out_value(&o, "\"\"", 2));
	assert_true(resp_out_value(&o, "\"a\"b\"", 5)); /* not one JSON string: as is */
	assert_true(resp_out_value(&o, "7", 1));
	static const char want[] = "$5\r\na\nb\xc3\xa9\r\n$8\r\n{\"n\": 1}\r\n$0\r\n\r\n$5\r\n\"a\"b\"\r\n$1\r\n7\r\n";
	assert_int_equal(o.len, sizeof want - 1);
	assert_memory_equal(buf, want, o.len);
	/* Room: RESP_VALUE_ROOM(n) suffices, less is refused untouched. */
	char small[RESP_VALUE_ROOM(4)];
	struct resp_out s = { small, 1, sizeof small };
	assert_false(resp_out_value(&s, "\"ab\"", 4));
	assert_int_equal(s.len, 1);
	s.len = 0;
	assert_true(resp_out_value(&s, "\"ab\"", 4));
	assert_int_equal(s.len, 8);
	assert_memory_equal(small, "$2\r\nab\r\n", 8);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_multibulk_and_pieces), cmocka_unit_test(test_inline),
		cmocka_unit_test(test_hostile_bounds), cmocka_unit_test(test_numbers_and_replies),
		cmocka_unit_test(test_long_doubles),
		cmocka_unit_test(test_json_values), cmocka_unit_test(test_json_first_key), cmocka_unit_test(test_value_replies),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
