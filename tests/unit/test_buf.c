/* Unit tests for util/buf's pool: a detached buffer holds nothing, an attached one gets a
 * whole block, released blocks are reused up to the bound and freed beyond it. And
 * util/grow.h's doubling. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "util/buf.h"
#include "util/grow.h"

static void test_detached_holds_nothing(void **state)
{
	(void)state;
	struct buf b = { 0 };
	assert_false(buf_attached(&b));
	assert_true(buf_empty(&b));
	assert_int_equal(buf_room(&b), 0);
	/* nothing can be written into a detached buffer */
	assert_int_equal(buf_append(&b, "x", 1), -ENOSPC);
}

static void test_attach_use_detach(void **state)
{
	(void)state;
	struct buf_pool p;
	struct buf b = { 0 };
	buf_pool_init(&p, 4096, 4);
	assert_int_equal(buf_attach(&b, &p), 0);
	assert_true(buf_attached(&b));
	assert_int_equal(b.cap, 4096);
	assert_int_equal(buf_room(&b), 4096);
	assert_int_equal(buf_append(&b, "hello", 5), 0);
	/* attaching an attached buffer keeps its block and its bytes */
	uint8_t *data = b.data;
	assert_int_equal(buf_attach(&b, &p), 0);
	assert_ptr_equal(b.data, data);
	assert_int_equal(buf_len(&b), 5);
	buf_detach(&b, &p);
	assert_false(buf_attached(&b));
	assert_int_equal(b.cap, 0);
	assert_int_equal(buf_len(&b), 0);
	/* detaching twice is harmless */
	buf_detach(&b, &p);
	buf_pool_destroy(&p);
}

static void test_reuse_and_bound(void **state)
{
	(void)state;
	struct buf_pool p;
	struct buf b[6] = { { 0 } };
	uint8_t *first[6];
	buf_pool_init(&p, 1024, 4);
	for (int i = 0; i < 6; i++) {
		assert_int_equal(buf_attach(&b[i], &p), 0);
		first[i] = b[i].data;
	}
	assert_int_equal(p.nfree, 0);
	for (int i = 0; i < 6; i++)
		buf_detach(&b[i], &p);
#ifdef TUSK_DEBUG_ALLOC
	assert_int_equal(p.nfree, 0); /* every block goes back to malloc for ASan */
#else
	assert_int_equal(p.nfree, 4); /* two went back to malloc */
	/* the free list is last in, first out: the most recently released block comes back */
	assert_int_equal(buf_attach(&b[0], &p), 0);
	assert_ptr_equal(b[0].data, first[3]);
	assert_int_equal(p.nfree, 3);
	assert_int_equal(b[0].start, 0);
	assert_int_equal(b[0].end, 0);
	buf_detach(&b[0], &p);
#endif
	buf_pool_destroy(&p);
	assert_int_equal(p.nfree, 0);
}

/* Trimming frees only the blocks that stayed free since the last trim, and keeps the most
 * recently used ones. */
static void test_trim_low_water(void **state)
{
	(void)state;
	struct buf_pool p;
	struct buf b[4] = { { 0 } };
	buf_pool_init(&p, 1024, 8);
	for (int i = 0; i < 4; i++)
		assert_int_equal(buf_attach(&b[i], &p), 0);
	for (int i = 0; i < 4; i++)
		buf_detach(&b[i], &p);
#ifdef TUSK_DEBUG_ALLOC
	assert_int_equal(buf_pool_trim(&p), 0);
#else
	uint8_t *newest = p.free;
	assert_int_equal(p.nfree, 4);
	/* the first trim only starts watching: none of the four is known to be unneeded */
	assert_int_equal(buf_pool_trim(&p), 0);
	assert_int_equal(p.nfree, 4);
	/* one block was in use for a while: three stayed free throughout */
	assert_int_equal(buf_attach(&b[0], &p), 0);
	assert_ptr_equal(b[0].data, newest);
	buf_detach(&b[0], &p);
	assert_int_equal(buf_pool_trim(&p), 3);
	assert_int_equal(p.nfree, 1);
	assert_ptr_equal(p.free, newest); /* the most recently used one stays */
	/* untouched since: the last goes too */
	assert_int_equal(buf_pool_trim(&p), 1);
	assert_int_equal(p.nfree, 0);
	assert_null(p.free);
	assert_int_equal(buf_pool_trim(&p), 0);
	/* the list works as before afterwards */
	assert_int_equal(buf_attach(&b[1], &p), 0);
	buf_detach(&b[1], &p);
	assert_int_equal(p.nfree, 1);
#endif
	buf_pool_destroy(&p);
}

/* grow_bytes: first size, doubling to the need, contents kept, unchanged when it holds
 * the need already, and a need no doubling reaches refused with nothing changed. */
static void test_grow_bytes(void **state)
{
	(void)state;
	size_t cap = 0;
	char *p = grow_bytes(NULL, &cap, 10, 64);
	assert_non_null(p);
	assert_int_equal(cap, 64);
	memcpy(p, "abc", 3);
	assert_ptr_equal(grow_bytes(p, &cap, 64, 64), p);
	assert_int_equal(cap, 64);
	p = grow_bytes(p, &cap, 300, 64);
	assert_non_null(p);
	assert_int_equal(cap, 512);
	assert_memory_equal(p, "abc", 3);
	assert_null(grow_bytes(p, &cap, SIZE_MAX / 2 + 1, 64));
	assert_int_equal(cap, 512);
	free(p);
}

/* buf_cut: the bytes after the cut close up behind it, counted from the head (not offset 0
 * of the block), and what was consumed before stays consumed. */
static void test_cut(void **state)
{
	(void)state;
	struct buf_pool p;
	struct buf b = { 0 };
	buf_pool_init(&p, 64, 1);
	assert_int_equal(buf_attach(&b, &p), 0);
	assert_int_equal(buf_append(&b, "xxabcdefgh", 10), 0);
	buf_consume(&b, 2);
	buf_cut(&b, 2, 3); /* "cde" */
	assert_int_equal(buf_len(&b), 5);
	assert_memory_equal(buf_head(&b), "abfgh", 5);
	buf_cut(&b, 3, 2); /* the tail: nothing after it moves */
	assert_int_equal(buf_len(&b), 3);
	assert_memory_equal(buf_head(&b), "abf", 3);
	buf_cut(&b, 0, 0);
	assert_memory_equal(buf_head(&b), "abf", 3);
	assert_int_equal(buf_append(&b, "z", 1), 0);
	assert_memory_equal(buf_head(&b), "abfz", 4);
	buf_detach(&b, &p);
	buf_pool_destroy(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_detached_holds_nothing),
		cmocka_unit_test(test_attach_use_detach),
		cmocka_unit_test(test_reuse_and_bound),
		cmocka_unit_test(test_trim_low_water),
		cmocka_unit_test(test_grow_bytes),
		cmocka_unit_test(test_cut),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
