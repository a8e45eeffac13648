/* Unit tests for util/id: the format, and uniqueness across threads making ids at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "util/id.h"

#define NTHREADS 4
#define PER_THREAD 25000 /* 100k ids in all */

static uint32_t ids[NTHREADS * PER_THREAD];

static uint32_t check_format(const char id[ID_LEN], char kind)
{
	uint32_t v = 0;

	assert_int_equal(strlen(id), ID_LEN - 1);
	assert_int_equal(id[0], kind);
	for (int i = 1; i < ID_LEN - 1; i++) {
		char c = id[i];
		assert_true((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
		v = v << 4 | (uint32_t)(c <= '9' ? c - '0' : c - 'a' + 10);
	}
	return v;
}

static void *make_ids(void *arg)
{
	uint32_t *out = arg;
	char id[ID_LEN];

	for (int i = 0; i < PER_THREAD; i++) {
		id_make(id, i % 2 ? 's' : 'c');
		out[i] = (uint32_t)strtoul(id + 1, NULL, 16);
	}
	return NULL;
}

static int compare_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static void test_format(void **state)
{
	char id[ID_LEN];
	(void)state;

	memset(id, 'x', sizeof(id));
	id_make(id, 'c');
	check_format(id, 'c');
	id_make(id, 's');
	check_format(id, 's');
}

static void test_unique_across_threads(void **state)
{
	pthread_t threads[NTHREADS];
	size_t n = sizeof(ids) / sizeof(ids[0]);
	(void)state;

	for (int t = 0; t < NTHREADS; t++)
		assert_int_equal(pthread_create(&threads[t], NULL, make_ids, &ids[t * PER_THREAD]), 0);
	for (int t = 0; t < NTHREADS; t++)
		assert_int_equal(pthread_join(threads[t], NULL), 0);
	qsort(ids, n, sizeof(ids[0]), compare_u32);
	for (size_t i = 1; i < n; i++)
		assert_true(ids[i] != ids[i - 1]);
}

/* Consecutive ids should not look consecutive: most of their 8 digits differ. */
static void test_not_sequential(void **state)
{
	char a[ID_LEN], b[ID_LEN];
	int same = 0;
	(void)state;

	for (int round = 0; round < 100; round++) {
		id_make(a, 'c');
		id_make(b, 'c');
		for (int i = 1; i < ID_LEN - 1; i++)
			same += a[i] == b[i];
	}
	/* Random pairs share 1/16 of digits: 50 of 800 on average. */
	assert_true(same < 150);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_format),
		cmocka_unit_test(test_unique_across_threads),
		cmocka_unit_test(test_not_sequential),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
