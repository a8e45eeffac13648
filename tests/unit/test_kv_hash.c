/* Unit tests for kv/hash: the shard of a key must never change once data is placed by it, so
 * the values are pinned here (the SQL twin, kv.hash, is checked against tusk in test_kv.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <xxhash.h>

#include "kv/hash.h"

static uint32_t h(const char *ns, const char *key)
{
	return kv_hash(ns, strlen(ns), key, strlen(key));
}

static void test_pinned_values(void **state)
{
	(void)state;
	assert_int_equal(h("", ""), 3479547966u);
	assert_int_equal(h("default", "hello"), 1920648209u);
	assert_int_equal(h("n", "ключ-ü-€"), 2577563609u);
	/* Longer than 16 bytes: XXH32's four-lane stripes. */
	assert_int_equal(h("default", "a key long enough for the 16-byte stripes of xxh32 ....."), 2157936938u);
}

static void test_is_xxh32_of_ns_nul_key(void **state)
{
	(void)state;
	assert_int_equal(h("a", "bc"), XXH32("a\0bc", 4, 0));
	assert_int_equal(h("", ""), XXH32("\0", 1, 0));
	/* The separator keeps the split between namespace and key in the hash. */
	assert_int_equal(h("a", "bc"), 1818042363u);
	assert_int_equal(h("ab", "c"), 414124948u);
}

static void test_shard_of(void **state)
{
	(void)state;
	assert_int_equal(kv_shard_of("default", 7, "hello", 5, 4), 1920648209u % 4);
	assert_int_equal(kv_shard_of("default", 7, "hello", 5, 1), 0);
	assert_int_equal(kv_shard_of("default", 7, "hello", 5, 0), -EINVAL);
	assert_int_equal(kv_shard_of("default", 7, "hello", 5, KV_MAX_SHARDS + 1), -EINVAL);
	/* Every shard gets keys: the hash spreads. */
	int count[8] = { 0 };
	char key[16];
	for (int i = 0; i < 8000; i++) {
		int n = snprintf(key, sizeof key, "k%d", i);
		count[kv_shard_of("default", 7, key, (size_t)n, 8)]++;
	}
	for (int s = 0; s < 8; s++)
		assert_in_range(count[s], 850, 1150);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pinned_values),
		cmocka_unit_test(test_is_xxh32_of_ns_nul_key),
		cmocka_unit_test(test_shard_of),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
