/* Unit tests for kv/hash: the shard of a key must never change once data is placed by it, so
 * the values are pinned here. They are PostgreSQL 15's hashtextextended(ns || ':' || key, 0),
 * read from a server (test_kv_api.py checks many more keys against the shards). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "kv/hash.h"

static int64_t h(const char *ns, const char *key)
{
	return kv_hash(ns, strlen(ns), key, strlen(key));
}

static void test_pinned_values_are_postgres_hashtextextended(void **state)
{
	(void)state;
	assert_true(h("default", "hello") == -7188145543129412712LL);
	assert_true(h("", "") == -1399978235591729567LL);
	assert_true(h("n", "ключ-ü-€") == -598429664454326339LL);
	/* Several 12-byte blocks of lookup3 and a tail. */
	assert_true(h("default", "a key long enough for several 12-byte blocks of lookup3 .....") ==
		    6805434821427005137LL);
	/* The separator keeps the split between namespace and key in the hash. */
	assert_true(h("a", "bc") == -8853100306820822906LL);
	assert_true(h("ab", "c") == 4622791947777584LL);
	assert_true(h("a", "b:c") == 4867801583370912094LL);
}

static void test_shard_of(void **state)
{
	(void)state;
	assert_int_equal(kv_shard_of("default", 7, "hello", 5, 4), (int)((-7188145543129412712LL & INT64_MAX) % 4));
	assert_int_equal(kv_shard_of("default", 7, "hello", 5, 1), 0);
	assert_int_equal(kv_shard_of("default", 7, "hello", 5, 0), -EINVAL);
	assert_int_equal(kv_shard_of("default", 7, "hello", 5, KV_MAX_SHARDS + 1), -EINVAL);
	assert_int_equal(kv_shard_of_hash(-7188145543129412712LL, 4), kv_shard_of("default", 7, "hello", 5, 4));
	assert_int_equal(kv_shard_of_hash(INT64_MIN, 3), 0); /* the sign bit dropped: 0 mod 3 */
	assert_int_equal(kv_shard_of_hash(1, 0), -EINVAL);
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
		cmocka_unit_test(test_pinned_values_are_postgres_hashtextextended),
		cmocka_unit_test(test_shard_of),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
