/* worker_balance_target (worker.h): where an idle client between transactions goes, from the
 * workers' loads. Workers here are bare structs: the rule reads only their index, load,
 * draining/stopping flags and move allowance, and the runtime's config and worker table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "runtime/runtime.h"
#include "worker/worker.h"

#define N 3

struct fixture {
	struct tusk_config cfg;
	struct runtime rt;
	struct worker w[N];
	struct worker *table[N];
};

static struct fixture *setup(int nworkers, const int *loads)
{
	struct fixture *f = calloc(1, sizeof *f);
	assert_non_null(f);
	f->cfg.worker_balance = 1;
	f->rt.cfg = &f->cfg;
	f->rt.nworkers = nworkers;
	f->rt.workers = f->table;
	for (int i = 0; i < nworkers; i++) {
		f->w[i].index = i;
		f->w[i].rt = &f->rt;
		atomic_store(&f->w[i].load, loads[i]);
		f->w[i].moves_left = 2;
		f->table[i] = &f->w[i];
	}
	return f;
}

static void test_one_worker_never_moves(void **state)
{
	(void)state;
	struct fixture *f = setup(1, (int[]){ 900 });
	assert_null(worker_balance_target(&f->w[0]));
	free(f);
}

static void test_a_light_load_gathers_on_worker_0(void **state)
{
	(void)state;
	/* 0.45 of a core in all: every client of workers 1 and 2 goes to worker 0, unrationed. */
	struct fixture *f = setup(3, (int[]){ 100, 200, 150 });
	for (int i = 0; i < 5; i++) {
		assert_ptr_equal(worker_balance_target(&f->w[1]), &f->w[0]);
		assert_ptr_equal(worker_balance_target(&f->w[2]), &f->w[0]);
	}
	assert_null(worker_balance_target(&f->w[0]));
	/* Worker 0 draining (load -1) takes nobody, and the others keep their clients. */
	atomic_store(&f->w[0].load, -1);
	assert_null(worker_balance_target(&f->w[1]));
	free(f);
}

static void test_between_the_thresholds_nobody_moves(void **state)
{
	(void)state;
	/* 0.7 of a core in all, no worker above 0.75: the kernel's spread stays. */
	struct fixture *f = setup(2, (int[]){ 400, 300 });
	assert_null(worker_balance_target(&f->w[0]));
	assert_null(worker_balance_target(&f->w[1]));
	free(f);
}

static void test_a_busy_worker_hands_out_a_rationed_share(void **state)
{
	(void)state;
	/* Worker 0 at 0.9 of a core, worker 2 at 0.1 (less than half of 0.9): clients of worker
	 * 0 go to the least busy one, as many as its allowance for this tick. */
	struct fixture *f = setup(3, (int[]){ 900, 500, 100 });
	/* Asking is free: only a client that does move counts against the allowance. */
	assert_ptr_equal(worker_balance_target(&f->w[0]), &f->w[2]);
	assert_ptr_equal(worker_balance_target(&f->w[0]), &f->w[2]);
	assert_int_equal(f->w[0].moves_left, 2);
	for (int i = 0; i < 2; i++) {
		assert_ptr_equal(worker_balance_target(&f->w[0]), &f->w[2]);
		worker_balance_moved(&f->w[0]);
	}
	assert_null(worker_balance_target(&f->w[0]));
	assert_int_equal(f->w[0].moves_left, 0);
	worker_balance_moved(&f->w[0]); /* never below 0 */
	assert_int_equal(f->w[0].moves_left, 0);
	/* Worker 1 (0.5) is not above 0.75: it keeps its clients. */
	assert_null(worker_balance_target(&f->w[1]));
	free(f);
}

static void test_no_move_to_a_worker_nearly_as_busy(void **state)
{
	(void)state;
	struct fixture *f = setup(2, (int[]){ 900, 460 });
	assert_null(worker_balance_target(&f->w[0]));
	free(f);
}

static void test_off_draining_and_the_test_seam(void **state)
{
	(void)state;
	struct fixture *f = setup(2, (int[]){ 10, 10 });
	f->cfg.worker_balance = 0;
	assert_null(worker_balance_target(&f->w[1]));
	f->cfg.worker_balance = 1;
	f->w[1].draining = true;
	assert_null(worker_balance_target(&f->w[1]));
	f->w[1].draining = false;
	/* pingpong: always the next worker, whatever the loads */
	f->rt.balance_test = true;
	assert_ptr_equal(worker_balance_target(&f->w[0]), &f->w[1]);
	assert_ptr_equal(worker_balance_target(&f->w[1]), &f->w[0]);
	atomic_store(&f->w[0].load, -1);
	assert_null(worker_balance_target(&f->w[1]));
	free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_one_worker_never_moves),
		cmocka_unit_test(test_a_light_load_gathers_on_worker_0),
		cmocka_unit_test(test_between_the_thresholds_nobody_moves),
		cmocka_unit_test(test_a_busy_worker_hands_out_a_rationed_share),
		cmocka_unit_test(test_no_move_to_a_worker_nearly_as_busy),
		cmocka_unit_test(test_off_draining_and_the_test_seam),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
