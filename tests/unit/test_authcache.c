/* Unit tests for auth/authcache.c: hits, "no such user" entries, expiry, replacement, keys
 * that differ in one part only, the size bound, and use from several threads at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "auth/authcache.h"

static void test_hit_miss_and_expiry(void **state)
{
	char out[AUTHCACHE_SECRET_MAX];
	struct authcache *ac = authcache_new(10);
	(void)state;

	assert_non_null(ac);
	assert_int_equal(authcache_get(ac, "main", "db", "alice", 0.0, out), AUTHCACHE_MISS);
	assert_int_equal(authcache_put(ac, "main", "db", "alice", "md5abc", 10.0), 0);
	assert_int_equal(authcache_put(ac, "main", "db", "ghost", NULL, 10.0), 0);
	assert_int_equal(authcache_get(ac, "main", "db", "alice", 9.9, out), AUTHCACHE_SECRET);
	assert_string_equal(out, "md5abc");
	assert_int_equal(authcache_get(ac, "main", "db", "ghost", 9.9, out), AUTHCACHE_NO_USER);
	/* every part of the key counts */
	assert_int_equal(authcache_get(ac, "main", "db2", "alice", 1.0, out), AUTHCACHE_MISS);
	assert_int_equal(authcache_get(ac, "other", "db", "alice", 1.0, out), AUTHCACHE_MISS);
	assert_int_equal(authcache_get(ac, "main", "db", "Alice", 1.0, out), AUTHCACHE_MISS);
	/* replaced, not added */
	assert_int_equal(authcache_put(ac, "main", "db", "alice", "plain", 20.0), 0);
	assert_int_equal(authcache_count(ac), 2);
	assert_int_equal(authcache_get(ac, "main", "db", "alice", 15.0, out), AUTHCACHE_SECRET);
	assert_string_equal(out, "plain");
	/* a user that appears becomes a secret */
	assert_int_equal(authcache_put(ac, "main", "db", "ghost", "now-here", 20.0), 0);
	assert_int_equal(authcache_get(ac, "main", "db", "ghost", 15.0, out), AUTHCACHE_SECRET);
	/* expiry is exclusive and drops the entry */
	assert_int_equal(authcache_get(ac, "main", "db", "alice", 20.0, out), AUTHCACHE_MISS);
	assert_int_equal(authcache_count(ac), 1);
	authcache_free(ac);
}

static void test_limits(void **state)
{
	char out[AUTHCACHE_SECRET_MAX], big[AUTHCACHE_SECRET_MAX + 1], name[AUTHCACHE_NAME_MAX + 1];
	struct authcache *ac = authcache_new(100);
	(void)state;

	memset(big, 'x', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	assert_int_equal(authcache_put(ac, "main", "db", "u", big, 1.0), -EMSGSIZE);
	big[AUTHCACHE_SECRET_MAX - 1] = '\0'; /* the longest that fits */
	assert_int_equal(authcache_put(ac, "main", "db", "u", big, 1.0), 0);
	assert_int_equal(authcache_get(ac, "main", "db", "u", 0.0, out), AUTHCACHE_SECRET);
	assert_string_equal(out, big);
	memset(name, 'n', sizeof name - 1);
	name[sizeof name - 1] = '\0';
	assert_int_equal(authcache_put(ac, "main", name, "u", "s", 1.0), -ENAMETOOLONG);
	assert_int_equal(authcache_put(ac, "main", "db", name, "s", 1.0), -ENAMETOOLONG);

	/* never more than the bound, and the newest entry is always there */
	for (int i = 0; i < 1000; i++) {
		char user[32];
		snprintf(user, sizeof user, "user%d", i);
		assert_int_equal(authcache_put(ac, "main", "db", user, "s", 100.0), 0);
		assert_true(authcache_count(ac) <= 100);
		assert_int_equal(authcache_get(ac, "main", "db", user, 0.0, out), AUTHCACHE_SECRET);
	}
	assert_int_equal(authcache_count(ac), 100);
	authcache_free(ac);
}

struct job {
	struct authcache *ac;
	int id;
	int bad;
};

static void *hammer(void *arg)
{
	struct job *j = arg;
	char user[32], secret[32], out[AUTHCACHE_SECRET_MAX];
	for (int i = 0; i < 20000; i++) {
		snprintf(user, sizeof user, "u%d", i % 300);
		snprintf(secret, sizeof secret, "s%d", i % 300);
		if (i % 3 == 0 && authcache_put(j->ac, "main", "db", user, secret, 1e9) < 0)
			j->bad++;
		/* whatever is found must be the one secret that user ever gets */
		if (authcache_get(j->ac, "main", "db", user, 0.0, out) == AUTHCACHE_SECRET && strcmp(out, secret) != 0)
			j->bad++;
	}
	return NULL;
}

static void test_threads(void **state)
{
	struct authcache *ac = authcache_new(200); /* smaller than the key set: evictions race too */
	pthread_t t[4];
	struct job jobs[4];
	(void)state;

	for (int i = 0; i < 4; i++) {
		jobs[i] = (struct job){ ac, i, 0 };
		assert_int_equal(pthread_create(&t[i], NULL, hammer, &jobs[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(jobs[i].bad, 0);
	}
	assert_true(authcache_count(ac) <= 200);
	authcache_free(ac);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hit_miss_and_expiry),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_threads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
