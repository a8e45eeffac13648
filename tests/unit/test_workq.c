/* util/workq.h: every submitted item ends exactly once (worked, or cancelled at the stop), the
 * queue's bound, threads added as items come (never more than the bound), and a stop that gives
 * up on an item still working: it ends dropped later, on its own thread, which frees the queue. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "util/workq.h"

struct item {
	struct workq_item it;
	int sleep_ms;
	atomic_bool *release; /* work waits until it is set (NULL: no wait) */
};

static atomic_int working, done, cancelled, dropped, max_index;

static void work(void *ctx, int index, struct workq_item *wi)
{
	struct item *i = (struct item *)wi;
	(void)ctx;
	atomic_fetch_add(&working, 1);
	if (index > atomic_load(&max_index))
		atomic_store(&max_index, index);
	while (i->release && !atomic_load(i->release))
		usleep(1000);
	if (i->sleep_ms)
		usleep((useconds_t)i->sleep_ms * 1000);
}

static void end(void *ctx, struct workq_item *wi, enum workq_end how)
{
	(void)ctx;
	atomic_fetch_add(how == WORKQ_DONE ? &done : how == WORKQ_CANCELLED ? &cancelled : &dropped, 1);
	free(wi);
}

static struct item *item(int sleep_ms, atomic_bool *release)
{
	struct item *i = calloc(1, sizeof *i);
	assert_non_null(i);
	i->sleep_ms = sleep_ms;
	i->release = release;
	return i;
}

static void reset(void)
{
	atomic_store(&working, 0);
	atomic_store(&done, 0);
	atomic_store(&cancelled, 0);
	atomic_store(&dropped, 0);
	atomic_store(&max_index, 0);
}

static void wait_for(atomic_int *n, int want)
{
	for (int k = 0; k < 5000 && atomic_load(n) < want; k++)
		usleep(1000);
	assert_int_equal(atomic_load(n), want);
}

static void test_each_item_ends_once(void **state)
{
	(void)state;
	reset();
	struct workq *q;
	struct workq_def d = { .name = "t-workq", .max_threads = 2, .queue_max = 100, .work = work, .end = end };
	assert_int_equal(workq_new(&d, &q), 0);
	for (int i = 0; i < 20; i++) {
		struct item *it = item(1, NULL);
		assert_int_equal(workq_submit(q, &it->it), 0);
	}
	wait_for(&done, 20);
	assert_int_equal(workq_pending(q), 0);
	assert_true(atomic_load(&max_index) <= 1); /* two threads at most */
	assert_true(workq_stop(q, -1));
}

static void test_bound_and_cancel(void **state)
{
	(void)state;
	reset();
	atomic_bool release = false;
	struct workq *q;
	struct workq_def d = { .name = "t-workq", .max_threads = 1, .queue_max = 1, .work = work, .end = end };
	assert_int_equal(workq_new(&d, &q), 0);
	struct item *a = item(0, &release), *b = item(0, NULL), *c = item(0, NULL);
	assert_int_equal(workq_submit(q, &a->it), 0);
	wait_for(&working, 1); /* a holds the one thread */
	assert_int_equal(workq_submit(q, &b->it), 0);
	assert_int_equal(workq_submit(q, &c->it), -EAGAIN); /* one waiting at most */
	/* refused, the _or_wipe form frees it (a leak here fails the ASan run) */
	assert_int_equal(workq_submit_or_wipe(q, &c->it, c, sizeof *c), -EAGAIN);
	assert_int_equal(workq_pending(q), 2);
	atomic_store(&release, true);
	assert_true(workq_stop(q, -1)); /* b never started: cancelled; a ran to its end */
	assert_int_equal(atomic_load(&done), 1);
	assert_int_equal(atomic_load(&cancelled), 1);
}

static void test_stop_gives_up_on_a_long_item(void **state)
{
	(void)state;
	reset();
	struct workq *q;
	struct workq_def d = { .name = "t-workq", .max_threads = 2, .queue_max = 4, .work = work, .end = end };
	assert_int_equal(workq_new(&d, &q), 0);
	struct item *a = item(300, NULL), *b = item(1, NULL);
	assert_int_equal(workq_submit(q, &a->it), 0);
	assert_int_equal(workq_submit(q, &b->it), 0);
	wait_for(&done, 1); /* b */
	assert_false(workq_stop(q, 50));
	assert_int_equal(atomic_load(&dropped), 0);
	wait_for(&dropped, 1); /* a, later, on its own thread, which then frees q */
	assert_int_equal(atomic_load(&done), 1);
	usleep(50 * 1000); /* the last thread out frees q (LSan would report it otherwise) */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_each_item_ends_once),
		cmocka_unit_test(test_bound_and_cancel),
		cmocka_unit_test(test_stop_gives_up_on_a_long_item),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
