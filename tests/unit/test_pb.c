/* Unit tests for util/pb, the protobuf wire reader under kv/call.c and router/classify.c:
 * each wire type, a message read field by field to its end, and malformed or truncated bytes
 * refused without reading past the range. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "util/pb.h"

static struct pb of(const uint8_t *p, size_t n)
{
	return (struct pb){ p, p + n };
}

static void test_fields_of_every_wire_type(void **state)
{
	(void)state;
	const uint8_t msg[] = {
		0x08, 0x96, 0x01,                         /* 1: varint 150 */
		0x12, 0x03, 'a', 'b', 'c',                /* 2: bytes "abc" */
		0x19, 1, 2, 3, 4, 5, 6, 7, 8,             /* 3: fixed64 */
		0x25, 1, 2, 3, 4,                         /* 4: fixed32 */
		0xa8, 0x1f, 0xff, 0xff, 0xff, 0xff, 0x0f, /* 501: varint 2^32 - 1 */
	};
	struct pb b = of(msg, sizeof msg), sub;
	uint32_t f;
	enum pb_wire w;
	uint64_t v;

	assert_true(pb_next(&b, &f, &w, &v, &sub));
	assert_int_equal(f, 1);
	assert_int_equal(w, PB_VARINT);
	assert_int_equal(v, 150);
	assert_ptr_equal(sub.p, sub.end);

	assert_true(pb_next(&b, &f, &w, &v, &sub));
	assert_int_equal(f, 2);
	assert_int_equal(w, PB_BYTES);
	assert_int_equal(v, 0);
	assert_int_equal(sub.end - sub.p, 3);
	assert_memory_equal(sub.p, "abc", 3);

	assert_true(pb_next(&b, &f, &w, &v, &sub));
	assert_int_equal(f, 3);
	assert_int_equal(w, PB_FIXED64);
	assert_true(pb_next(&b, &f, &w, &v, &sub));
	assert_int_equal(f, 4);
	assert_int_equal(w, PB_FIXED32);

	assert_true(pb_next(&b, &f, &w, &v, &sub));
	assert_int_equal(f, 501);
	assert_int_equal(v, UINT32_MAX);

	assert_ptr_equal(b.p, b.end);
	assert_false(pb_next(&b, &f, &w, &v, &sub)); /* the end */
}

/* Each one is refused, and the reader stops at the end of its range. */
static void test_malformed(void **state)
{
	(void)state;
	static const struct {
		uint8_t bytes[12];
		size_t n;
	} cases[] = {
		{ { 0x00, 0x01 }, 2 },             /* field number 0 */
		{ { 0x08 }, 1 },                   /* varint missing */
		{ { 0x08, 0x80, 0x80 }, 3 },       /* varint truncated */
		{ { 0x12, 0x05, 'a', 'b' }, 4 },   /* bytes longer than the message */
		{ { 0x12 }, 1 },                   /* length missing */
		{ { 0x19, 1, 2, 3 }, 4 },          /* fixed64 truncated */
		{ { 0x25, 1, 2 }, 3 },             /* fixed32 truncated */
		{ { 0x0b, 0x0c }, 2 },             /* a group (wire types 3 and 4) */
		{ { 0x0e, 0x00 }, 2 },             /* wire type 6 */
		{ { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01 }, 11 }, /* key over 64 bits */
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		/* A copy of exactly n bytes: ASan sees any read past the range. */
		uint8_t *p = malloc(cases[i].n);
		assert_non_null(p);
		memcpy(p, cases[i].bytes, cases[i].n);
		struct pb b = of(p, cases[i].n), sub;
		uint32_t f;
		enum pb_wire w;
		uint64_t v = 99;
		assert_false(pb_next(&b, &f, &w, &v, &sub));
		assert_ptr_equal(b.p, b.end);
		assert_int_equal(v, 0);
		assert_ptr_equal(sub.p, sub.end);
		free(p);
	}
}

/* A length-delimited payload is a message of its own: read inside it without leaving it. */
static void test_nested(void **state)
{
	(void)state;
	const uint8_t msg[] = { 0x0a, 0x04, 0x08, 0x07, 0x10, 0x2a, 0x18, 0x01 };
	struct pb b = of(msg, sizeof msg), sub, inner;
	uint32_t f;
	enum pb_wire w;
	uint64_t v, sum = 0;

	assert_true(pb_next(&b, &f, &w, &v, &sub));
	assert_int_equal(f, 1);
	while (sub.p < sub.end) {
		assert_true(pb_next(&sub, &f, &w, &v, &inner));
		sum += v;
	}
	assert_int_equal(sum, 7 + 42);
	assert_ptr_equal(sub.end, msg + 6);
	assert_true(pb_next(&b, &f, &w, &v, &sub));
	assert_int_equal(f, 3);
	assert_int_equal(v, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fields_of_every_wire_type),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_nested),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
