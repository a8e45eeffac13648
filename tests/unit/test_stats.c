/* Unit tests for stats: histogram bucketing at and around the bounds, SQLSTATE class
 * accounting, client state moves, and exact counts under concurrent increments. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <string.h>

#include "runtime/runtime.h"
#include "stats/stats.h"

static void test_bucket_bounds_ascending(void **state)
{
	(void)state;
	for (int i = 1; i < STATS_NBUCKETS; i++)
		assert_true(stats_bucket_bounds[i] > stats_bucket_bounds[i - 1]);
	assert_true(stats_bucket_bounds[0] == 0.0005);
	assert_true(stats_bucket_bounds[STATS_NBUCKETS - 1] == 10.0);
}

static void test_bucket_index(void **state)
{
	(void)state;
	/* le is inclusive, as in Prometheus: a value equal to a bound is in that bucket. */
	assert_int_equal(stats_bucket_index(0.0), 0);
	assert_int_equal(stats_bucket_index(-1.0), 0);
	assert_int_equal(stats_bucket_index(0.0005), 0);
	assert_int_equal(stats_bucket_index(0.00051), 1);
	assert_int_equal(stats_bucket_index(0.001), 1);
	assert_int_equal(stats_bucket_index(0.3), 9); /* (0.25, 0.5] */
	assert_int_equal(stats_bucket_index(1.0), 10);
	assert_int_equal(stats_bucket_index(10.0), STATS_NBUCKETS - 1);
	assert_int_equal(stats_bucket_index(10.0001), STATS_NBUCKETS);
	assert_int_equal(stats_bucket_index(1e9), STATS_NBUCKETS);
	for (int i = 0; i < STATS_NBUCKETS; i++)
		assert_int_equal(stats_bucket_index(stats_bucket_bounds[i]), i);
}

/* SHOW WAITS and tusk top read p50/p99 from the buckets: the upper bound of the bucket the
 * rank falls in. */
static void test_quantile(void **state)
{
	uint64_t b[STATS_NBUCKETS + 1] = { 0 };
	(void)state;
	assert_true(stats_quantile(b, 0.5) == 0);
	b[0] = 50; /* <= 0.5 ms */
	b[4] = 49; /* (5 ms, 10 ms] */
	b[STATS_NBUCKETS] = 1; /* > 10 s */
	assert_true(stats_quantile(b, 0.50) == stats_bucket_bounds[0]);
	assert_true(stats_quantile(b, 0.51) == stats_bucket_bounds[4]);
	assert_true(stats_quantile(b, 0.99) == stats_bucket_bounds[4]);
	assert_true(stats_quantile(b, 1.0) == stats_bucket_bounds[STATS_NBUCKETS - 1]);
}

static void test_histogram_counts(void **state)
{
	struct stats_pool *sp = stats_pool_new();
	struct stats_counters c;
	(void)state;

	assert_non_null(sp);
	stats_count_query(sp, 0.0001);
	stats_count_query(sp, 0.0001);
	stats_count_query(sp, 0.2);
	stats_count_query(sp, 60.0);
	stats_count_wait(sp, 0.003);
	stats_count_xact(sp, 1.5);
	stats_add_received(sp, 100);
	stats_add_sent(sp, 250);
	stats_add_sent(sp, 0);
	stats_pool_read(sp, &c);
	assert_int_equal(c.query_count, 4);
	assert_int_equal(c.query_buckets[0], 2);
	assert_int_equal(c.query_buckets[stats_bucket_index(0.2)], 1);
	assert_int_equal(c.query_buckets[STATS_NBUCKETS], 1);
	uint64_t sum = 0;
	for (int i = 0; i <= STATS_NBUCKETS; i++)
		sum += c.query_buckets[i];
	assert_int_equal(sum, c.query_count);
	assert_int_equal(c.query_us, 100 + 100 + 200000 + 60000000);
	assert_int_equal(c.wait_count, 1);
	assert_int_equal(c.wait_buckets[stats_bucket_index(0.003)], 1);
	assert_int_equal(c.wait_us, 3000);
	assert_int_equal(c.xact_count, 1);
	assert_int_equal(c.xact_us, 1500000);
	assert_int_equal(c.bytes_received, 100);
	assert_int_equal(c.bytes_sent, 250);
	stats_pool_free(sp);
}

static void test_class_index(void **state)
{
	char name[6];
	(void)state;

	assert_int_equal(stats_class_index("00000"), 0);
	assert_int_equal(stats_class_index("42P01"), 4 * 36 + 2);
	assert_int_equal(stats_class_index("42601"), stats_class_index("42P01"));
	assert_int_equal(stats_class_index("ZZ999"), 36 * 36 - 1);
	assert_int_equal(stats_class_index("XX000"), 33 * 36 + 33);
	assert_int_equal(stats_class_index(NULL), STATS_CLASS_OTHER);
	assert_int_equal(stats_class_index(""), STATS_CLASS_OTHER);
	assert_int_equal(stats_class_index("4"), STATS_CLASS_OTHER);
	assert_int_equal(stats_class_index("4a000"), STATS_CLASS_OTHER); /* lower case is not SQLSTATE */
	assert_int_equal(stats_class_index("-1"), STATS_CLASS_OTHER);

	stats_class_name(stats_class_index("42P01"), name);
	assert_string_equal(name, "42");
	stats_class_name(stats_class_index("08006"), name);
	assert_string_equal(name, "08");
	stats_class_name(stats_class_index("XX000"), name);
	assert_string_equal(name, "XX");
	stats_class_name(STATS_CLASS_OTHER, name);
	assert_string_equal(name, "other");
	/* Every slot round-trips through its name. */
	for (int i = 0; i < STATS_CLASS_OTHER; i++) {
		stats_class_name(i, name);
		assert_int_equal(stats_class_index(name), i);
	}
}

static void test_error_accounting(void **state)
{
	struct stats *st = stats_new();
	struct stats_global g;
	(void)state;

	assert_non_null(st);
	stats_count_error(st, "42P01");
	stats_count_error(st, "42601");
	stats_count_error(st, "28P01");
	stats_count_error(st, "bogus");
	stats_count_error(st, NULL);
	stats_read_global(st, &g);
	assert_int_equal(g.errors[stats_class_index("42")], 2);
	assert_int_equal(g.errors[stats_class_index("28")], 1);
	assert_int_equal(g.errors[STATS_CLASS_OTHER], 2);
	uint64_t total = 0;
	for (int i = 0; i < STATS_NCLASSES; i++)
		total += g.errors[i];
	assert_int_equal(total, 5);
	stats_free(st);
}

static void test_client_moves(void **state)
{
	struct stats *st = stats_new();
	struct stats_pool *a = stats_pool_new(), *b = stats_pool_new();
	struct stats_global g;
	(void)state;

	/* Accepted (no pool yet), authenticated, waiting in a, then active, then gone. */
	stats_client_move(st, NULL, -1, NULL, STATS_CLIENT_STARTUP);
	stats_client_move(st, NULL, -1, NULL, STATS_CLIENT_STARTUP);
	stats_client_move(st, NULL, STATS_CLIENT_STARTUP, a, STATS_CLIENT_WAITING);
	stats_client_move(st, a, STATS_CLIENT_WAITING, a, STATS_CLIENT_ACTIVE);
	stats_client_move(st, NULL, STATS_CLIENT_STARTUP, b, STATS_CLIENT_IDLE);
	stats_read_global(st, &g);
	assert_int_equal(g.clients[STATS_CLIENT_STARTUP], 0);
	assert_int_equal(g.clients[STATS_CLIENT_WAITING], 0);
	assert_int_equal(g.clients[STATS_CLIENT_ACTIVE], 1);
	assert_int_equal(g.clients[STATS_CLIENT_IDLE], 1);
	stats_client_move(st, a, STATS_CLIENT_ACTIVE, NULL, -1);
	stats_client_move(st, b, STATS_CLIENT_IDLE, NULL, -1);
	stats_read_global(st, &g);
	for (int i = 0; i < STATS_CLIENT_NSTATES; i++)
		assert_int_equal(g.clients[i], 0);
	assert_string_equal(stats_client_state_name(STATS_CLIENT_WAITING), "waiting");
	assert_string_equal(stats_client_state_name(STATS_CLIENT_CLOSING), "closing");
	stats_pool_free(a);
	stats_pool_free(b);
	stats_free(st);
}

#define NTHREADS 4
#define PER_THREAD 300000

static void *hammer(void *arg)
{
	struct stats_pool *sp = arg;
	for (int i = 0; i < PER_THREAD; i++) {
		stats_count_query(sp, (i % 3) * 0.002);
		stats_add_received(sp, 3);
	}
	return NULL;
}

/* Relaxed atomics lose nothing: the totals are exact once the writers are joined. */
static void test_concurrent_exact(void **state)
{
	struct stats_pool *sp = stats_pool_new();
	pthread_t t[NTHREADS];
	struct stats_counters c;
	(void)state;

	for (int i = 0; i < NTHREADS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, hammer, sp), 0);
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(t[i], NULL);
	stats_pool_read(sp, &c);
	assert_int_equal(c.query_count, (uint64_t)NTHREADS * PER_THREAD);
	assert_int_equal(c.bytes_received, (uint64_t)NTHREADS * PER_THREAD * 3);
	uint64_t sum = 0;
	for (int i = 0; i <= STATS_NBUCKETS; i++)
		sum += c.query_buckets[i];
	assert_int_equal(sum, c.query_count);
	stats_pool_free(sp);
}

/* Sharded blocks (a shard per worker thread): counts from workers (each the one writer of
 * its shard, counting without a lock prefix) and from non-worker threads (sharing shard 0)
 * all sum exactly; a client counted in on one worker and out on another leaves every gauge at
 * 0, and a reader never sees a gauge below 0. With more workers than shards (test_shared_shards)
 * workers share shards and still count exactly. */
struct shard_arg {
	struct stats *st;
	struct stats_pool *sp;
	int worker;
	int in, out; /* clients counted into / out of STATS_CLIENT_IDLE here */
	int rounds;  /* of PER_THREAD counts */
};

/* When set, every shard_hammer starts counting together (the shared shards' writers overlap). */
static pthread_barrier_t *start_line;

static void *shard_hammer(void *arg)
{
	struct shard_arg *a = arg;
	runtime_worker_index = a->worker;
	if (start_line)
		pthread_barrier_wait(start_line);
	for (int i = 0; i < PER_THREAD * a->rounds; i++) {
		stats_count_query(a->sp, 0.001);
		stats_count_xact(a->sp, 0.001);
		stats_add_sent(a->sp, 2);
	}
	for (int i = 0; i < a->in; i++)
		stats_client_move(a->st, NULL, -1, a->sp, STATS_CLIENT_IDLE);
	for (int i = 0; i < a->out; i++)
		stats_client_move(a->st, a->sp, STATS_CLIENT_IDLE, NULL, -1);
	return NULL;
}

/* Blocks made for nworkers workers (stats_set_shards first, as daemon_start does). */
static void sharded_new(int nworkers, struct stats **st, struct stats_pool **sp)
{
	stats_set_shards(nworkers);
	*st = stats_new();
	*sp = stats_pool_new();
	assert_non_null(*st);
	assert_non_null(*sp);
}

static void sharded_free(struct stats *st, struct stats_pool *sp)
{
	stats_pool_free(sp);
	stats_free(st);
	stats_set_shards(0);
}

static void test_sharded_sums(void **state)
{
	(void)state;
	struct stats *st;
	struct stats_pool *sp;
	sharded_new(4, &st, &sp);
	/* workers 0..3 (a shard each) and two non-workers (-1, sharing shard 0) at once */
	struct shard_arg args[] = {
		{ st, sp, 0, 10, 0, 1 }, { st, sp, 1, 0, 4, 1 }, { st, sp, 2, 3, 0, 1 }, { st, sp, 3, 0, 0, 1 },
		{ st, sp, -1, 0, 6, 1 }, { st, sp, -1, 1, 0, 1 },
	};
	enum { N = sizeof args / sizeof args[0] };
	pthread_t t[N];
	for (int i = 0; i < N; i++)
		assert_int_equal(pthread_create(&t[i], NULL, shard_hammer, &args[i]), 0);
	for (int i = 0; i < N; i++)
		pthread_join(t[i], NULL);
	struct stats_counters c;
	stats_pool_read(sp, &c);
	assert_int_equal(c.query_count, (uint64_t)N * PER_THREAD);
	assert_int_equal(c.xact_count, (uint64_t)N * PER_THREAD);
	assert_int_equal(c.bytes_sent, (uint64_t)N * PER_THREAD * 2);
	/* 14 in, 10 out, each on whichever thread it happened */
	struct stats_pool_snapshot snap = { 0 };
	stats_pool_snapshot_read(sp, &snap);
	assert_int_equal(snap.clients[STATS_CLIENT_IDLE], 4);
	assert_int_equal(stats_pool_clients(sp), 4);
	struct stats_global g;
	stats_read_global(st, &g);
	assert_int_equal(g.clients[STATS_CLIENT_IDLE], 4);
	/* the other 4 leave on a thread that never counted them in: all back to 0 */
	struct shard_arg last = { st, sp, 3, 0, 4, 1 };
	pthread_t t2;
	assert_int_equal(pthread_create(&t2, NULL, shard_hammer, &last), 0);
	pthread_join(t2, NULL);
	stats_pool_snapshot_read(sp, &snap);
	assert_int_equal(snap.clients[STATS_CLIENT_IDLE], 0);
	stats_read_global(st, &g);
	for (int i = 0; i < STATS_CLIENT_NSTATES; i++)
		assert_int_equal(g.clients[i], 0);
	/* a gauge whose shards sum below 0 (a move seen half-done) reads 0 */
	stats_client_move(st, sp, STATS_CLIENT_ACTIVE, NULL, -1);
	stats_pool_snapshot_read(sp, &snap);
	assert_int_equal(snap.clients[STATS_CLIENT_ACTIVE], 0);
	sharded_free(st, sp);
}

/* More workers than shards: 20 workers in blocks of 16 shards, so worker 15 shares shard 1
 * with worker 0 (and 16 shard 2 with 1); every count lands, concurrently, exactly (a plain
 * load and store there would lose some: the threads start together and overlap). */
static void test_shared_shards(void **state)
{
	(void)state;
	struct stats *st;
	struct stats_pool *sp;
	sharded_new(20, &st, &sp);
	enum { ROUNDS = 10 };
	struct shard_arg args[] = {
		{ st, sp, 0, 5, 0, ROUNDS }, { st, sp, 15, 0, 2, ROUNDS }, { st, sp, 1, 7, 0, ROUNDS }, { st, sp, 16, 0, 3, ROUNDS },
	};
	enum { N = sizeof args / sizeof args[0] };
	pthread_t t[N];
	pthread_barrier_t b;
	assert_int_equal(pthread_barrier_init(&b, NULL, N), 0);
	start_line = &b;
	for (int i = 0; i < N; i++)
		assert_int_equal(pthread_create(&t[i], NULL, shard_hammer, &args[i]), 0);
	for (int i = 0; i < N; i++)
		pthread_join(t[i], NULL);
	start_line = NULL;
	pthread_barrier_destroy(&b);
	struct stats_counters c;
	stats_pool_read(sp, &c);
	assert_int_equal(c.query_count, (uint64_t)N * ROUNDS * PER_THREAD);
	assert_int_equal(c.xact_us, (uint64_t)N * ROUNDS * PER_THREAD * 1000);
	assert_int_equal(c.bytes_sent, (uint64_t)N * ROUNDS * PER_THREAD * 2);
	struct stats_global g;
	stats_read_global(st, &g);
	assert_int_equal(g.clients[STATS_CLIENT_IDLE], 7);
	assert_int_equal(stats_pool_clients(sp), 7);
	sharded_free(st, sp);
}

/* stats_client_step and stats_count_no_wait count what stats_client_move and
 * stats_count_wait(sp, 0) count, on a worker's own shard (plain moves) and on a non-worker's. */
struct step_arg {
	struct stats *st;
	struct stats_pool *sp;
	int worker;
};

static void *stepper(void *arg)
{
	struct step_arg *a = arg;
	runtime_worker_index = a->worker;
	stats_client_move(a->st, NULL, -1, a->sp, STATS_CLIENT_IDLE);
	for (int i = 0; i < 1000; i++) {
		stats_count_no_wait(a->sp);
		stats_client_step(a->st, a->sp, STATS_CLIENT_IDLE, STATS_CLIENT_ACTIVE);
		stats_client_step(a->st, a->sp, STATS_CLIENT_ACTIVE, STATS_CLIENT_IDLE);
	}
	stats_client_step(a->st, a->sp, STATS_CLIENT_IDLE, STATS_CLIENT_WAITING);
	stats_client_step(a->st, a->sp, -1, STATS_CLIENT_ACTIVE); /* not counted before: counted in */
	return NULL;
}

static void test_client_step(void **state)
{
	(void)state;
	struct stats *st;
	struct stats_pool *sp;
	sharded_new(2, &st, &sp);
	struct step_arg args[] = { { st, sp, 0 }, { st, sp, 1 }, { st, sp, -1 } };
	for (int i = 0; i < 3; i++) {
		pthread_t t;
		assert_int_equal(pthread_create(&t, NULL, stepper, &args[i]), 0);
		pthread_join(t, NULL);
	}
	struct stats_pool_snapshot snap = { 0 };
	stats_pool_snapshot_read(sp, &snap);
	struct stats_global g;
	stats_read_global(st, &g);
	for (int i = 0; i < STATS_CLIENT_NSTATES; i++) {
		int want = i == STATS_CLIENT_WAITING || i == STATS_CLIENT_ACTIVE ? 3 : 0;
		assert_int_equal(snap.clients[i], want);
		assert_int_equal(g.clients[i], want);
	}
	assert_int_equal(snap.c.wait_count, 3000);
	assert_int_equal(snap.c.wait_us, 0);
	assert_int_equal(snap.c.wait_buckets[0], 3000);
	sharded_free(st, sp);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bucket_bounds_ascending),
		cmocka_unit_test(test_bucket_index),
		cmocka_unit_test(test_histogram_counts),
		cmocka_unit_test(test_quantile),
		cmocka_unit_test(test_class_index),
		cmocka_unit_test(test_error_accounting),
		cmocka_unit_test(test_client_moves),
		cmocka_unit_test(test_concurrent_exact),
		cmocka_unit_test(test_sharded_sums),
		cmocka_unit_test(test_shared_shards),
		cmocka_unit_test(test_client_step),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
