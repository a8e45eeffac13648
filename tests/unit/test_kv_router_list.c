/* The kv router's list of the instance's addresses (kv/router_int.h, kv_csv_has): an address
 * getaddrinfo repeats (once per protocol) is dropped, and only that one: 127.0.0.1 is not a
 * repeat of 127.0.0.10, which a substring test took it for, leaving a worker's connect one
 * address short. And kv_random_offer, which picks random_key's answer among the shards'. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

/* Each of three offered keys is kept about a third of the time; the copy is the key's bytes. */
static void test_random_offer_keeps_each_alike(void **state)
{
	(void)state;
	int kept[3] = { 0 };
	static const char *const keys[] = { "a", "bb", "ccc" };
	srand(7);
	for (int round = 0; round < 3000; round++) {
		char *pick = NULL;
		int len = -1, seen = 0;
		for (int i = 0; i < 3; i++)
			assert_true(kv_random_offer(&pick, &len, &seen, keys[i], (int)strlen(keys[i])));
		assert_int_equal(seen, 3);
		assert_non_null(pick);
		assert_int_equal(len, (int)strlen(pick));
		kept[len - 1]++;
		assert_string_equal(pick, keys[len - 1]);
		free(pick);
	}
	for (int i = 0; i < 3; i++)
		assert_in_range(kept[i], 850, 1150); /* 1000 each, +-5.8 standard deviations (and seeded) */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_whole_entries_only),
		cmocka_unit_test(test_random_offer_keeps_each_alike),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
