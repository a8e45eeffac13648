/* The test_decoding line parser of cache_invalidation: logical (flight/logical.h): which
 * table each change names, as the cache's version counters key them (the name without its
 * schema, unquoted), and that anything else is not taken for a table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "flight/logical.h"

static void expect_table(const char *line, const char *want)
{
	char out[64];

	assert_true(flight_logical_table(line, out, sizeof(out)));
	assert_string_equal(out, want);
}

static void expect_none(const char *line)
{
	char out[64];

	assert_false(flight_logical_table(line, out, sizeof(out)));
}

static void test_changes(void **state)
{
	(void)state;
	expect_table("table public.items: INSERT: id[integer]:1 name[text]:'a'", "items");
	expect_table("table public.items: UPDATE: id[integer]:1 name[text]:'b'", "items");
	expect_table("table public.items: DELETE: id[integer]:1", "items");
	expect_table("table s1.t: TRUNCATE: (no-flags)", "t");
	/* quoted: mixed case, a dot, a colon, a doubled quote inside */
	expect_table("table public.\"Mixed Case\": INSERT: x[integer]:1", "Mixed Case");
	expect_table("table \"a.b\".\"c:d\": INSERT: x[integer]:1", "c:d");
	expect_table("table public.\"say \"\"hi\"\"\": DELETE: (no-tuple-data)", "say \"hi\"");
}

static void test_not_changes(void **state)
{
	(void)state;
	expect_none("BEGIN");
	expect_none("COMMIT");
	expect_none("message: transactional: 1 prefix: p, sz: 1 content:x");
	expect_none("table ");
	expect_none("table public.items");           /* no colon: not the format */
	expect_none("table public.\"unterminated: x");
	expect_none("table public.: INSERT:");        /* an empty part */
	expect_none("tables public.items: INSERT:");
}

static void test_bounds(void **state)
{
	char small[7]; /* "public" and its NUL */
	(void)state;
	/* A name longer than the buffer is refused, never cut (a cut name would bump another). */
	assert_false(flight_logical_table("table public.long_name: INSERT: x", small, sizeof(small)));
	assert_true(flight_logical_table("table public.abc: INSERT: x", small, sizeof(small)));
	assert_string_equal(small, "abc");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_changes),
		cmocka_unit_test(test_not_changes),
		cmocka_unit_test(test_bounds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
