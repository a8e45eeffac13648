/* The kv router's list of the instance's addresses (kv/router_int.h, kv_csv_has): an address
 * getaddrinfo repeats (once per protocol) is dropped, and only that one: 127.0.0.1 is not a
 * repeat of 127.0.0.10, which a substring test took it for, leaving a worker's connect one
 * address short. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "kv/router_int.h"

static void test_whole_entries_only(void **state)
{
	(void)state;
	assert_false(kv_csv_has("", "127.0.0.1"));
	assert_true(kv_csv_has("127.0.0.1", "127.0.0.1"));
	assert_false(kv_csv_has("127.0.0.10", "127.0.0.1"));
	assert_false(kv_csv_has("127.0.0.1", "127.0.0.10"));
	assert_false(kv_csv_has("10.0.0.12,127.0.0.10", "0.0.1"));
	assert_true(kv_csv_has("10.0.0.12,127.0.0.10", "127.0.0.10"));
	assert_true(kv_csv_has("10.0.0.12,127.0.0.10", "10.0.0.12"));
	assert_false(kv_csv_has("10.0.0.12,127.0.0.10", "10.0.0.1"));
	assert_true(kv_csv_has("::1,127.0.0.1", "::1"));
	assert_false(kv_csv_has("::10,127.0.0.1", "::1"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_whole_entries_only),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
