/* Every message type a client may send, with an empty, a short and a maximal body, through the
 * readers tusk runs on it: proto_read_hdr and proto_client_type_valid for all of them, then
 * proto_check_query_body (Query), prep_read_parse (Parse), prep_read_bind_head (Bind),
 * prep_read_target (Describe, Close) and the bounds-checked reader that auth.c uses on
 * PasswordMessage / SASL responses. Each message sits in an exact-size heap block, so ASan
 * catches a read even one byte past it. Also the NegotiateProtocolVersion builder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pool/prepared.h"
#include "proto/proto.h"

#define MAX_LEN 8192u /* the length-word limit the readers are given */

static const uint8_t CLIENT_TYPES[] = { 'Q', 'P', 'B', 'E', 'D', 'C', 'H', 'S', 'F', 'X', 'd', 'c', 'f' };

/* type, length word, body: an exact-size copy the caller frees. */
static uint8_t *make(uint8_t type, const void *body, size_t len, size_t *total)
{
	*total = 5 + len;
	uint8_t *m = malloc(*total);
	assert_non_null(m);
	m[0] = type;
	uint32_t l = (uint32_t)len + 4;
	m[1] = (uint8_t)(l >> 24);
	m[2] = (uint8_t)(l >> 16);
	m[3] = (uint8_t)(l >> 8);
	m[4] = (uint8_t)l;
	if (len)
		memcpy(m + 5, body, len);
	return m;
}

/* A body of len bytes: fill everywhere, with NULs at the given offsets (-1 ends the list). */
static uint8_t *body_of(size_t len, int fill, ...)
{
	uint8_t *b = malloc(len ? len : 1);
	assert_non_null(b);
	memset(b, fill, len);
	va_list ap;
	va_start(ap, fill);
	for (long at; (at = va_arg(ap, long)) >= 0;)
		b[at] = 0;
	va_end(ap);
	return b;
}

static void test_types_after_login(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof CLIENT_TYPES; i++)
		assert_true(proto_client_type_valid(CLIENT_TYPES[i]));
	int valid = 0;
	for (int t = 0; t < 256; t++)
		valid += proto_client_type_valid((uint8_t)t);
	assert_int_equal(valid, (int)sizeof CLIENT_TYPES);
	/* Authentication only, and server-to-client types. */
	assert_false(proto_client_type_valid('p'));
	assert_false(proto_client_type_valid('Z'));
	assert_false(proto_client_type_valid('R'));
	assert_false(proto_client_type_valid(0));
}

/* Every type: the header reader with an empty body, a short one, exactly the limit and one
 * byte over it, and a length word below its own size. */
static void test_header_every_type(void **state)
{
	(void)state;
	uint8_t all[sizeof CLIENT_TYPES + 1];
	memcpy(all, CLIENT_TYPES, sizeof CLIENT_TYPES);
	all[sizeof CLIENT_TYPES] = 'p';
	for (size_t i = 0; i < sizeof all; i++) {
		struct proto_hdr h;
		size_t total;
		uint8_t *m = make(all[i], NULL, 0, &total);
		assert_int_equal(proto_read_hdr(m, total, MAX_LEN, &h), PROTO_HDR_LEN);
		assert_int_equal(h.type, all[i]);
		assert_int_equal(h.len, 4);
		for (size_t k = 0; k < PROTO_HDR_LEN; k++)
			assert_int_equal(proto_read_hdr(m, k, MAX_LEN, &h), 0);
		free(m);

		m = make(all[i], "ab", 2, &total);
		assert_int_equal(proto_read_hdr(m, total, MAX_LEN, &h), PROTO_HDR_LEN);
		assert_int_equal(h.len, 6);
		free(m);

		uint8_t *b = body_of(MAX_LEN - 4, 'x', -1L);
		m = make(all[i], b, MAX_LEN - 4, &total);
		assert_int_equal(proto_read_hdr(m, total, MAX_LEN, &h), PROTO_HDR_LEN);
		assert_int_equal(h.len, MAX_LEN);
		free(m);
		free(b);

		uint8_t over[5] = { all[i], 0, 0, (uint8_t)((MAX_LEN + 1) >> 8), (uint8_t)(MAX_LEN + 1) };
		assert_int_equal(proto_read_hdr(over, sizeof over, MAX_LEN, &h), PROTO_ETOOLONG);
		uint8_t under[5] = { all[i], 0, 0, 0, 3 };
		assert_int_equal(proto_read_hdr(under, sizeof under, MAX_LEN, &h), PROTO_ETOOSHORT);
	}
}

static void test_query(void **state)
{
	(void)state;
	/* empty: no terminator at all (the crash of issue 9) */
	assert_int_equal(proto_check_query_body((const uint8_t *)"", 0), PROTO_EMALFORMED);
	/* short */
	uint8_t *b = body_of(1, 'x', 0L, -1L);
	assert_int_equal(proto_check_query_body(b, 1), 0); /* "" : the empty query */
	free(b);
	b = body_of(3, 'x', -1L);
	assert_int_equal(proto_check_query_body(b, 3), PROTO_EMALFORMED);
	free(b);
	b = body_of(3, 'x', 1L, -1L);
	assert_int_equal(proto_check_query_body(b, 3), PROTO_ETOOLONG); /* "x\0x": bytes after the text */
	free(b);
	b = body_of(3, 'x', 1L, 2L, -1L);
	assert_int_equal(proto_check_query_body(b, 3), PROTO_ETOOLONG);
	free(b);
	/* maximal */
	size_t n = MAX_LEN - 4;
	b = body_of(n, 's', (long)n - 1, -1L);
	assert_int_equal(proto_check_query_body(b, n), 0);
	free(b);
	b = body_of(n, 's', -1L);
	assert_int_equal(proto_check_query_body(b, n), PROTO_EMALFORMED);
	free(b);
}

static void test_parse(void **state)
{
	(void)state;
	struct prep_parse p;
	size_t total;
	/* empty */
	uint8_t *m = make('P', NULL, 0, &total);
	assert_int_equal(prep_read_parse(m, total, MAX_LEN, &p), PROTO_EMALFORMED);
	free(m);
	/* short: name only; name and query but no count; the smallest valid one */
	m = make('P', "s", 2, &total);
	assert_int_equal(prep_read_parse(m, total, MAX_LEN, &p), PROTO_EMALFORMED);
	free(m);
	m = make('P', "\0q\0", 3, &total);
	assert_int_equal(prep_read_parse(m, total, MAX_LEN, &p), PROTO_EMALFORMED);
	free(m);
	m = make('P', "\0\0\0\0", 4, &total);
	assert_int_equal(prep_read_parse(m, total, MAX_LEN, &p), (ssize_t)total);
	assert_int_equal(p.name_len, 0);
	assert_string_equal(p.query, "");
	free(m);
	/* maximal: a 63-byte name and a query filling the rest */
	size_t n = MAX_LEN - 4;
	uint8_t *b = body_of(n, 'q', (long)PREP_NAME_MAX, (long)n - 3, (long)n - 2, (long)n - 1, -1L);
	memset(b, 'n', PREP_NAME_MAX);
	m = make('P', b, n, &total);
	assert_int_equal(prep_read_parse(m, total, MAX_LEN, &p), (ssize_t)total);
	assert_int_equal(p.name_len, PREP_NAME_MAX);
	assert_int_equal(strlen(p.query), n - PREP_NAME_MAX - 4);
	free(m);
	/* the same with a 64-byte name: refused */
	b[PREP_NAME_MAX] = 'n';
	b[PREP_NAME_MAX + 1] = 0;
	m = make('P', b, n, &total);
	assert_int_equal(prep_read_parse(m, total, MAX_LEN, &p), PROTO_EMALFORMED);
	free(m);
	/* one byte over a limit */
	m = make('P', b, n, &total);
	assert_int_equal(prep_read_parse(m, total, MAX_LEN - 1, &p), PROTO_ETOOLONG);
	free(m);
	free(b);
}

static void test_bind(void **state)
{
	(void)state;
	struct prep_bind_head bh;
	size_t total;
	/* empty: no portal name at all */
	uint8_t *m = make('B', NULL, 0, &total);
	assert_int_equal(prep_read_bind_head(m, total, MAX_LEN, &bh), PROTO_EMALFORMED);
	free(m);
	/* short: portal only, then both names (the rest of a Bind is streamed, never read) */
	m = make('B', "", 1, &total);
	assert_int_equal(prep_read_bind_head(m, total, MAX_LEN, &bh), PROTO_EMALFORMED);
	free(m);
	m = make('B', "\0s\0", 3, &total);
	assert_int_equal(prep_read_bind_head(m, total, MAX_LEN, &bh), 8);
	assert_string_equal(bh.stmt, "s");
	assert_int_equal(bh.portal_len, 0);
	free(m);
	/* maximal: two 63-byte names and parameters filling the rest */
	size_t n = MAX_LEN - 4;
	uint8_t *b = body_of(n, 'v', (long)PREP_NAME_MAX, 2L * PREP_NAME_MAX + 1, -1L);
	memset(b, 'p', PREP_NAME_MAX);
	memset(b + PREP_NAME_MAX + 1, 's', PREP_NAME_MAX);
	m = make('B', b, n, &total);
	assert_int_equal(prep_read_bind_head(m, total, MAX_LEN, &bh), 5 + 2 * (PREP_NAME_MAX + 1));
	assert_int_equal(bh.portal_len, PREP_NAME_MAX);
	assert_int_equal(bh.stmt_len, PREP_NAME_MAX);
	assert_int_equal(bh.len, MAX_LEN);
	/* only the head need be present */
	assert_int_equal(prep_read_bind_head(m, 5 + 2 * (PREP_NAME_MAX + 1), MAX_LEN, &bh), 5 + 2 * (PREP_NAME_MAX + 1));
	free(m);
	/* a 64-byte statement name */
	b[2 * PREP_NAME_MAX + 1] = 's';
	m = make('B', b, n, &total);
	assert_int_equal(prep_read_bind_head(m, total, MAX_LEN, &bh), PROTO_EMALFORMED);
	free(m);
	free(b);
}

static void test_describe_and_close(void **state)
{
	(void)state;
	static const uint8_t types[] = { 'D', 'C' };
	for (size_t i = 0; i < sizeof types; i++) {
		struct prep_target t;
		size_t total;
		/* empty: no kind byte */
		uint8_t *m = make(types[i], NULL, 0, &total);
		assert_int_equal(prep_read_target(m, total, &t), PROTO_EMALFORMED);
		free(m);
		/* short: a kind without a name's NUL, a bad kind, the unnamed portal */
		m = make(types[i], "S", 1, &total);
		assert_int_equal(prep_read_target(m, total, &t), PROTO_EMALFORMED);
		free(m);
		m = make(types[i], "X", 2, &total);
		assert_int_equal(prep_read_target(m, total, &t), PROTO_EMALFORMED);
		free(m);
		m = make(types[i], "P", 2, &total);
		assert_int_equal(prep_read_target(m, total, &t), (ssize_t)total);
		assert_int_equal(t.kind, 'P');
		assert_int_equal(t.name_len, 0);
		free(m);
		/* maximal: a 63-byte name; then 64 bytes, and trailing bytes */
		uint8_t *b = body_of(1 + PREP_NAME_MAX + 2, 'n', (long)PREP_NAME_MAX + 1, -1L);
		b[0] = 'S';
		m = make(types[i], b, 1 + PREP_NAME_MAX + 1, &total);
		assert_int_equal(prep_read_target(m, total, &t), (ssize_t)total);
		assert_int_equal(t.name_len, PREP_NAME_MAX);
		free(m);
		uint8_t *long_name = body_of(1 + PREP_NAME_MAX + 2, 'n', (long)PREP_NAME_MAX + 2, -1L);
		long_name[0] = 'S';
		m = make(types[i], long_name, 1 + PREP_NAME_MAX + 2, &total);
		assert_int_equal(prep_read_target(m, total, &t), PROTO_EMALFORMED);
		free(m);
		free(long_name);
		uint8_t trailing[4] = { 'S', 'a', 0, 'z' };
		m = make(types[i], trailing, sizeof trailing, &total);
		assert_int_equal(prep_read_target(m, total, &t), PROTO_EMALFORMED);
		free(m);
		free(b);
	}
}

/* PasswordMessage and SASL responses ('p', authentication only): auth.c reads them with the
 * bounds-checked reader (a string, or a mechanism, a length and that many bytes). */
static void test_password_and_sasl(void **state)
{
	(void)state;
	struct proto_reader r;
	/* empty */
	proto_reader_init(&r, NULL, 0);
	assert_null(proto_get_cstr(&r));
	assert_true(r.err);
	/* short: a mechanism without the length; a length larger than what follows */
	uint8_t *b = body_of(6, 'M', 5L, -1L);
	proto_reader_init(&r, b, 6);
	assert_non_null(proto_get_cstr(&r));
	(void)proto_get_u32(&r);
	assert_true(r.err);
	free(b);
	uint8_t sasl[] = { 'M', 0, 0, 0, 0, 9, 'a', 'b' };
	proto_reader_init(&r, sasl, sizeof sasl);
	assert_string_equal(proto_get_cstr(&r), "M");
	assert_int_equal(proto_get_u32(&r), 9);
	assert_null(proto_get_bytes(&r, 9));
	assert_true(r.err);
	/* maximal (auth.c accepts 8192): a password filling the body */
	size_t n = 8192 - 4;
	b = body_of(n, 'p', (long)n - 1, -1L);
	proto_reader_init(&r, b, n);
	const char *pw = proto_get_cstr(&r);
	assert_non_null(pw);
	assert_int_equal(strlen(pw), n - 1);
	assert_int_equal(proto_remaining(&r), 0);
	free(b);
	b = body_of(n, 'p', -1L);
	proto_reader_init(&r, b, n);
	assert_null(proto_get_cstr(&r));
	free(b);
}

static void test_negotiate_version(void **state)
{
	(void)state;
	uint8_t store[128];
	struct buf b = { .data = store, .cap = sizeof store };
	const char *opts[] = { "_pq_.a", "_pq_.bc" };
	assert_int_equal(proto_put_negotiate_version(&b, 0, opts, 2), 0);
	static const uint8_t want[] = { 'v', 0, 0, 0, 27, 0, 0, 0, 0, 0, 0, 0, 2, '_', 'p', 'q', '_', '.', 'a', 0,
					'_', 'p', 'q', '_', '.', 'b', 'c', 0 };
	assert_int_equal(buf_len(&b), sizeof want);
	assert_memory_equal(buf_head(&b), want, sizeof want);
	/* no options */
	struct buf e = { .data = store, .cap = sizeof store };
	assert_int_equal(proto_put_negotiate_version(&e, 0, NULL, 0), 0);
	assert_int_equal(buf_len(&e), 13);
	/* too small: nothing written */
	struct buf small = { .data = store, .cap = 12 };
	assert_int_equal(proto_put_negotiate_version(&small, 0, NULL, 0), -ENOSPC);
	assert_int_equal(buf_len(&small), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_types_after_login),
		cmocka_unit_test(test_header_every_type),
		cmocka_unit_test(test_query),
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_bind),
		cmocka_unit_test(test_describe_and_close),
		cmocka_unit_test(test_password_and_sasl),
		cmocka_unit_test(test_negotiate_version),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
