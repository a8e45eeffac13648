/* read-your-writes' reading of a pg_lsn's text (split/route.h): what PostgreSQL
 * prints ("X/Y", each 1 to 8 hex digits) becomes (X << 32) | Y, so that positions compare as
 * numbers; anything else is 0 (unknown: the client's reads stay on the primary). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "split/route.h"

static uint64_t lsn(const char *s)
{
	return split_parse_lsn(s, strlen(s));
}

static void test_parse_lsn(void **state)
{
	(void)state;
	assert_true(lsn("0/0") == 0);
	assert_true(lsn("0/3000060") == 0x3000060u);
	assert_true(lsn("16/B374D848") == ((uint64_t)0x16 << 32 | 0xB374D848u));
	assert_true(lsn("ffffffff/ffffffff") == UINT64_MAX);
	/* Ordered as WAL positions: the high part first. */
	assert_true(lsn("1/0") > lsn("0/FFFFFFFF"));
	/* Not an LSN: unknown. */
	assert_true(lsn("") == 0);
	assert_true(lsn("/1") == 0);
	assert_true(lsn("1/") == 0);
	assert_true(lsn("12") == 0);
	assert_true(lsn("1/2/3") == 0);
	assert_true(lsn("g/1") == 0);
	assert_true(lsn("123456789/1") == 0); /* 9 digits */
	assert_true(lsn("1/123456789") == 0);
	assert_true(lsn(" 1/2") == 0);
	/* Only the bytes given are read (a DataRow's column is not NUL-terminated). */
	assert_true(split_parse_lsn("1/2345", 3) == ((uint64_t)1 << 32 | 2));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_lsn),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
