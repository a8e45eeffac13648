/* The adaptive active-server bound (src/pool/adaptive.c) against model throughput curves. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "pool/adaptive.h"

/* A window of 1 s at bound n on a curve tps(n). */
/* reached: demand at or above the bound all through the window. */
static struct adaptive_window win(double tps, bool reached)
{
	struct adaptive_window w = { .seconds = 1.0, .xacts = (uint64_t)tps, .xact_seconds = tps * 0.001,
				     .reached = reached };
	return w;
}

/* Throughput that rises to a knee at 6 servers in use and falls after it (contention). */
static double knee6(int n)
{
	return n <= 6 ? 1000.0 * n : 6000.0 - 100.0 * (n - 6);
}

/* Flat: every bound from 1 up gives the same throughput. */
static double flat(int n)
{
	(void)n;
	return 5000.0;
}

/* Linear: more servers always pay. */
static double linear(int n)
{
	return 400.0 * n;
}

static int run(struct adaptive *a, double (*curve)(int), int lo, int hi, int windows, int *min_seen,
	       int *max_seen)
{
	int n = hi;
	*min_seen = hi;
	*max_seen = 0;
	for (int i = 0; i < windows; i++) {
		struct adaptive_window w = win(curve(n), true);
		n = adaptive_step(a, &w, lo, hi);
		assert_true(n >= lo && n <= hi);
		if (i >= windows / 2) {
			*min_seen = n < *min_seen ? n : *min_seen;
			*max_seen = n > *max_seen ? n : *max_seen;
		}
	}
	return n;
}

static void test_finds_the_knee(void **state)
{
	(void)state;
	struct adaptive a = { 0 };
	int lo, hi;
	run(&a, knee6, 1, 32, 200, &lo, &hi);
	/* In its second half it stays within a step or two of the knee. */
	assert_true(lo >= 4);
	assert_true(hi <= 9);
}

static void test_flat_curve_shrinks_to_the_floor(void **state)
{
	(void)state;
	struct adaptive a = { 0 };
	int lo, hi;
	run(&a, flat, 3, 32, 200, &lo, &hi);
	assert_int_equal(lo, 3);
	assert_true(hi <= 4);
}

static void test_linear_curve_stays_near_size(void **state)
{
	(void)state;
	struct adaptive a = { 0 };
	int lo, hi;
	run(&a, linear, 1, 20, 200, &lo, &hi);
	assert_true(lo >= 17);
	assert_int_equal(hi, 20);
}

static void test_unsaturated_windows_hold(void **state)
{
	(void)state;
	struct adaptive a = { 0 };
	struct adaptive_window w = win(1000, true);
	int n = adaptive_step(&a, &w, 2, 20);
	assert_int_equal(n, 18); /* the first window that reached it probes down from size */
	/* Demand well below the bound: it holds, whatever the throughput. */
	for (int i = 0; i < 10; i++) {
		w = win(1000 + 100 * i, false);
		assert_int_equal(adaptive_step(&a, &w, 2, 20), 18);
	}
	assert_false(a.have_prev);
	/* Reached again: the first window after a pause probes, upwards from below size. */
	w = win(1000, true);
	assert_int_equal(adaptive_step(&a, &w, 2, 20), 20);
	w = win(1000, false);
	/* A size made smaller by a reload bounds it at once, saturated or not. */
	assert_int_equal(adaptive_step(&a, &w, 2, 10), 10);
	/* So does a floor above it. */
	a.limit = 1;
	assert_int_equal(adaptive_step(&a, &w, 2, 10), 2);
}

static void test_nothing_ends_opens_to_size(void **state)
{
	(void)state;
	struct adaptive a = { 0 };
	int lo, hi;
	run(&a, flat, 2, 20, 100, &lo, &hi);
	assert_true(a.limit <= 3);
	/* Clients wait and no transaction ends (pinned servers, long transactions). */
	struct adaptive_window w = { .seconds = 1.0, .xacts = 0, .reached = true };
	assert_int_equal(adaptive_step(&a, &w, 2, 20), 20);
	assert_int_equal(a.dir, 0);
}

static void test_noise_within_eps_keeps_shrinking(void **state)
{
	(void)state;
	struct adaptive a = { 0 };
	/* +-4% alternating noise on a flat curve: still walks down. */
	int n = 20;
	for (int i = 0; i < 60; i++) {
		struct adaptive_window w = win(5000 * (i % 2 ? 1.02 : 0.98), true);
		n = adaptive_step(&a, &w, 2, 20);
	}
	assert_true(n <= 3);
	/* Degenerate bounds. */
	struct adaptive b = { 0 };
	struct adaptive_window w = win(100, true);
	assert_int_equal(adaptive_step(&b, &w, 1, 1), 1);
	assert_int_equal(adaptive_step(&b, &w, 1, 1), 1);
	assert_int_equal(adaptive_step(&b, &w, 0, 0), 1);
}

static void test_steps(void **state)
{
	(void)state;
	/* An eighth of the bound, doubling per move in one direction up to 8x, at most half. */
	assert_int_equal(adaptive_step_size(64, 0), 8);
	assert_int_equal(adaptive_step_size(64, 1), 16);
	assert_int_equal(adaptive_step_size(64, 2), 32);
	assert_int_equal(adaptive_step_size(64, 9), 32);
	assert_int_equal(adaptive_step_size(8, 0), 1);
	assert_int_equal(adaptive_step_size(8, 3), 4);
	assert_int_equal(adaptive_step_size(1, 3), 1);
	assert_int_equal(adaptive_near(32), 4);
	assert_int_equal(adaptive_near(3), 1);
	/* From 64 down a flat curve, the floor of 4 is reached within 8 windows. */
	struct adaptive a = { 0 };
	int n = 64, windows = 0;
	while (n > 4 && windows < 100) {
		struct adaptive_window w = win(5000, true);
		n = adaptive_step(&a, &w, 4, 64);
		windows++;
	}
	assert_int_equal(n, 4);
	assert_true(windows <= 8);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_finds_the_knee),
		cmocka_unit_test(test_flat_curve_shrinks_to_the_floor),
		cmocka_unit_test(test_linear_curve_stays_near_size),
		cmocka_unit_test(test_unsaturated_windows_hold),
		cmocka_unit_test(test_nothing_ends_opens_to_size),
		cmocka_unit_test(test_noise_within_eps_keeps_shrinking),
		cmocka_unit_test(test_steps),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
