/* Unit tests for the wire codec: startup packets (every kind, every truncation, every way to be
 * malformed), typed headers, the bounds-checked reader, the server-message parsers, and each
 * builder read back through the parsers. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto/proto.h"
#include "util/buf.h"

/* A byte-string literal with embedded NULs, without the compiler's implicit final NUL. */
#define LIT(s) (const uint8_t *)(s), (sizeof(s) - 1)

static void be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* Untyped packet: length word covering everything, code word, body. Returns total length. */
static size_t mk_untyped(uint8_t *out, uint32_t code, const uint8_t *body, size_t blen)
{
	be32(out, (uint32_t)(8 + blen));
	be32(out + 4, code);
	if (blen)
		memcpy(out + 8, body, blen);
	return 8 + blen;
}

static size_t mk_typed(uint8_t *out, uint8_t type, const uint8_t *body, size_t blen)
{
	out[0] = type;
	be32(out + 1, (uint32_t)(4 + blen));
	if (blen)
		memcpy(out + 5, body, blen);
	return 5 + blen;
}

static bool within(const void *p, const uint8_t *base, size_t len)
{
	const uint8_t *q = p;
	return q >= base && q < base + len;
}

/* ---- startup: the good cases ---- */

static void test_startup_message(void **state)
{
	(void)state;
	uint8_t pkt[128];
	struct proto_startup st;
	size_t n = mk_untyped(pkt, PROTO_VERSION_3,
			      LIT("user\0alice\0database\0shop\0application_name\0psql\0\0"));

	assert_int_equal(proto_parse_startup(pkt, n, &st), (ssize_t)n);
	assert_int_equal(st.kind, PROTO_STARTUP_MESSAGE);
	assert_int_equal(st.version, PROTO_VERSION_3);
	assert_int_equal(st.nparams, 3);
	assert_string_equal(st.params[0].name, "user");
	assert_string_equal(st.params[0].value, "alice");
	assert_string_equal(st.params[1].name, "database");
	assert_string_equal(st.params[1].value, "shop");
	assert_string_equal(st.params[2].name, "application_name");
	assert_string_equal(st.params[2].value, "psql");
	assert_ptr_equal(st.user, st.params[0].value);
	assert_ptr_equal(st.database, st.params[1].value);
	/* Pointers are into the packet, not copies. */
	assert_true(within(st.user, pkt, n));
	assert_true(within(st.params[2].name, pkt, n));
}

static void test_startup_minor_version_and_extra_bytes(void **state)
{
	(void)state;
	uint8_t pkt[128];
	struct proto_startup st;
	size_t n = mk_untyped(pkt, PROTO_VERSION_3 | 2, LIT("user\0bob\0\0"));
	/* A pipelined next packet after this one must not be consumed. */
	memcpy(pkt + n, "\0\0\0\x08", 4);

	assert_int_equal(proto_parse_startup(pkt, n + 4, &st), (ssize_t)n);
	assert_int_equal(st.kind, PROTO_STARTUP_MESSAGE);
	assert_int_equal(st.version, PROTO_VERSION_3 | 2);
	assert_int_equal(st.nparams, 1);
	assert_string_equal(st.user, "bob");
	assert_null(st.database);
}

static void test_startup_empty_database_is_absent(void **state)
{
	(void)state;
	uint8_t pkt[64];
	struct proto_startup st;
	size_t n = mk_untyped(pkt, PROTO_VERSION_3, LIT("database\0\0user\0bob\0options\0\0\0"));

	assert_int_equal(proto_parse_startup(pkt, n, &st), (ssize_t)n);
	assert_null(st.database);
	assert_string_equal(st.user, "bob");
	/* An empty value is a value: the pair is kept. */
	assert_int_equal(st.nparams, 3);
	assert_string_equal(st.params[2].name, "options");
	assert_string_equal(st.params[2].value, "");
}

static void test_startup_ssl_gssenc_cancel(void **state)
{
	(void)state;
	uint8_t pkt[32];
	struct proto_startup st;
	size_t n;

	n = mk_untyped(pkt, PROTO_CODE_SSL, NULL, 0);
	assert_int_equal(proto_parse_startup(pkt, n, &st), 8);
	assert_int_equal(st.kind, PROTO_STARTUP_SSL);
	assert_int_equal(st.version, PROTO_CODE_SSL);

	n = mk_untyped(pkt, PROTO_CODE_GSSENC, NULL, 0);
	assert_int_equal(proto_parse_startup(pkt, n, &st), 8);
	assert_int_equal(st.kind, PROTO_STARTUP_GSSENC);
	assert_int_equal(st.version, PROTO_CODE_GSSENC);

	n = mk_untyped(pkt, PROTO_CODE_CANCEL, LIT("\x00\x00\x30\x39\xde\xad\xbe\xef"));
	assert_int_equal(proto_parse_startup(pkt, n, &st), 16);
	assert_int_equal(st.kind, PROTO_STARTUP_CANCEL);
	assert_int_equal(st.version, PROTO_CODE_CANCEL);
	assert_int_equal(st.cancel_pid, 12345);
	assert_int_equal(st.cancel_key, 0xdeadbeefu);
}

static void test_startup_request_wrong_size(void **state)
{
	(void)state;
	uint8_t pkt[32];
	struct proto_startup st;
	size_t n;

	n = mk_untyped(pkt, PROTO_CODE_SSL, LIT("\0\0\0\0"));
	assert_int_equal(proto_parse_startup(pkt, n, &st), PROTO_EMALFORMED);
	n = mk_untyped(pkt, PROTO_CODE_GSSENC, LIT("\0"));
	assert_int_equal(proto_parse_startup(pkt, n, &st), PROTO_EMALFORMED);
	n = mk_untyped(pkt, PROTO_CODE_CANCEL, LIT("\0\0\0\1\0\0\0"));
	assert_int_equal(proto_parse_startup(pkt, n, &st), PROTO_EMALFORMED);
	n = mk_untyped(pkt, PROTO_CODE_CANCEL, LIT("\0\0\0\1\0\0\0\2\0"));
	assert_int_equal(proto_parse_startup(pkt, n, &st), PROTO_EMALFORMED);
}

/* Every proper prefix of a valid packet asks for more, never errs, never claims a packet. */
static void assert_prefixes_need_more(const uint8_t *pkt, size_t n)
{
	struct proto_startup st;
	for (size_t i = 0; i < n; i++) {
		/* Exact-size copy so reading past the prefix would be caught under ASan. */
		uint8_t *copy = malloc(i ? i : 1);
		assert_non_null(copy);
		memcpy(copy, pkt, i);
		assert_int_equal(proto_parse_startup(copy, i, &st), 0);
		free(copy);
	}
	assert_int_equal(proto_parse_startup(pkt, n, &st), (ssize_t)n);
}

static void test_startup_need_more_every_prefix(void **state)
{
	(void)state;
	uint8_t pkt[128];
	size_t n;

	n = mk_untyped(pkt, PROTO_VERSION_3, LIT("user\0alice\0database\0shop\0\0"));
	assert_prefixes_need_more(pkt, n);
	n = mk_untyped(pkt, PROTO_CODE_SSL, NULL, 0);
	assert_prefixes_need_more(pkt, n);
	n = mk_untyped(pkt, PROTO_CODE_GSSENC, NULL, 0);
	assert_prefixes_need_more(pkt, n);
	n = mk_untyped(pkt, PROTO_CODE_CANCEL, LIT("\0\0\0\1\0\0\0\2"));
	assert_prefixes_need_more(pkt, n);
}

/* ---- startup: lengths ---- */

static void test_startup_length_out_of_range(void **state)
{
	(void)state;
	uint8_t word[4];
	struct proto_startup st;

	/* Only the length word is present: the verdict must not wait for the rest. */
	for (uint32_t len = 0; len < 8; len++) {
		be32(word, len);
		assert_int_equal(proto_parse_startup(word, 4, &st), PROTO_ETOOSHORT);
	}
	be32(word, PROTO_STARTUP_MAX + 1);
	assert_int_equal(proto_parse_startup(word, 4, &st), PROTO_ETOOLONG);
	be32(word, 0x7fffffffu);
	assert_int_equal(proto_parse_startup(word, 4, &st), PROTO_ETOOLONG);
	be32(word, 0xffffffffu);
	assert_int_equal(proto_parse_startup(word, 4, &st), PROTO_ETOOLONG);

	/* The largest allowed length is only waited for. */
	be32(word, PROTO_STARTUP_MAX);
	assert_int_equal(proto_parse_startup(word, 4, &st), 0);
	be32(word, 8);
	assert_int_equal(proto_parse_startup(word, 4, &st), 0);
	assert_int_equal(proto_parse_startup(word, 3, &st), 0);
}

static void test_startup_exactly_max_length(void **state)
{
	(void)state;
	static uint8_t pkt[PROTO_STARTUP_MAX + 1];
	struct proto_startup st;
	/* 8 header + "user\0u\0" + "big\0" + value + "\0" + final "\0" == max */
	size_t vlen = PROTO_STARTUP_MAX - 8 - 7 - 4 - 1 - 1;
	uint8_t *p = pkt + 8;

	memcpy(p, "user\0u\0big\0", 11);
	p += 11;
	memset(p, 'x', vlen);
	p += vlen;
	*p++ = 0;
	*p++ = 0;
	be32(pkt, (uint32_t)(p - pkt));
	be32(pkt + 4, PROTO_VERSION_3);
	assert_int_equal(p - pkt, PROTO_STARTUP_MAX);
	assert_int_equal(proto_parse_startup(pkt, PROTO_STARTUP_MAX, &st), PROTO_STARTUP_MAX);
	assert_int_equal(strlen(st.params[1].value), vlen);
}

/* ---- startup: malformed ---- */

static void test_startup_bad_version(void **state)
{
	(void)state;
	uint8_t pkt[64];
	struct proto_startup st;
	static const uint32_t bad[] = {
		0x00020000u, /* protocol 2.0 */
		0x00040000u, /* 4.0 */
		0x00000003u, /* 0.3: minor/major swapped */
		80877101u,   /* a request code next to the real ones */
		80877105u,
		0xffffffffu,
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		size_t n = mk_untyped(pkt, bad[i], LIT("user\0alice\0\0"));
		assert_int_equal(proto_parse_startup(pkt, n, &st), PROTO_EVERSION);
	}
}

static void test_startup_missing_user(void **state)
{
	(void)state;
	uint8_t pkt[64];
	struct proto_startup st;
	size_t n;

	n = mk_untyped(pkt, PROTO_VERSION_3, LIT("database\0shop\0\0"));
	assert_int_equal(proto_parse_startup(pkt, n, &st), PROTO_EMALFORMED);
	n = mk_untyped(pkt, PROTO_VERSION_3, LIT("user\0\0database\0shop\0\0"));
	assert_int_equal(proto_parse_startup(pkt, n, &st), PROTO_EMALFORMED);
	/* Names are case-sensitive on the server too. */
	n = mk_untyped(pkt, PROTO_VERSION_3, LIT("USER\0alice\0\0"));
	assert_int_equal(proto_parse_startup(pkt, n, &st), PROTO_EMALFORMED);
	/* Only the terminator. */
	n = mk_untyped(pkt, PROTO_VERSION_3, LIT("\0"));
	assert_int_equal(proto_parse_startup(pkt, n, &st), PROTO_EMALFORMED);
}

static void test_startup_missing_terminator(void **state)
{
	(void)state;
	uint8_t pkt[64];
	struct proto_startup st;
	size_t n;

	/* Pairs complete, final NUL missing. */
	n = mk_untyped(pkt, PROTO_VERSION_3, LIT("user\0alice\0"));
	assert_int_equal(proto_parse_startup(pkt, n, &st), PROTO_EMALFORMED);
	/* Empty body. */
	n = mk_untyped(pkt, PROTO_VERSION_3, NULL, 0);
	assert_int_equal(proto_parse_startup(pkt, n, &st), PROTO_EMALFORMED);
	/* Value runs to the end of the packet without its NUL. */
	n = mk_untyped(pkt, PROTO_VERSION_3, LIT("user\0alice"));
	assert_int_equal(proto_parse_startup(pkt, n, &st), PROTO_EMALFORMED);
	/* Bytes after the terminator. */
	n = mk_untyped(pkt, PROTO_VERSION_3, LIT("user\0alice\0\0x"));
	assert_int_equal(proto_parse_startup(pkt, n, &st), PROTO_EMALFORMED);
	n = mk_untyped(pkt, PROTO_VERSION_3, LIT("user\0alice\0\0\0"));
	assert_int_equal(proto_parse_startup(pkt, n, &st), PROTO_EMALFORMED);
}

static void test_startup_name_without_value(void **state)
{
	(void)state;
	uint8_t pkt[64];
	struct proto_startup st;
	size_t n;

	n = mk_untyped(pkt, PROTO_VERSION_3, LIT("user\0alice\0database\0"));
	assert_int_equal(proto_parse_startup(pkt, n, &st), PROTO_EMALFORMED);
	n = mk_untyped(pkt, PROTO_VERSION_3, LIT("user\0alice\0database"));
	assert_int_equal(proto_parse_startup(pkt, n, &st), PROTO_EMALFORMED);
	/* Odd pair count: "database"'s value would be the terminator. */
	n = mk_untyped(pkt, PROTO_VERSION_3, LIT("user\0alice\0database\0\0"));
	assert_int_equal(proto_parse_startup(pkt, n, &st), PROTO_EMALFORMED);
}

static void test_startup_duplicate_user_or_database(void **state)
{
	(void)state;
	uint8_t pkt[64];
	struct proto_startup st;
	size_t n;

	n = mk_untyped(pkt, PROTO_VERSION_3, LIT("user\0alice\0user\0postgres\0\0"));
	assert_int_equal(proto_parse_startup(pkt, n, &st), PROTO_EMALFORMED);
	n = mk_untyped(pkt, PROTO_VERSION_3, LIT("user\0a\0database\0x\0database\0y\0\0"));
	assert_int_equal(proto_parse_startup(pkt, n, &st), PROTO_EMALFORMED);
}

/* count pairs: "user"=u plus count-1 pairs "pNN"="v". */
static size_t mk_many_params(uint8_t *pkt, int count)
{
	uint8_t *p = pkt + 8;
	memcpy(p, "user\0u\0", 7);
	p += 7;
	for (int i = 1; i < count; i++)
		p += (size_t)sprintf((char *)p, "p%02d", i) + 1 + (size_t)sprintf((char *)p + 4, "v") + 1;
	*p++ = 0;
	be32(pkt, (uint32_t)(p - pkt));
	be32(pkt + 4, PROTO_VERSION_3);
	return (size_t)(p - pkt);
}

static void test_startup_too_many_params(void **state)
{
	(void)state;
	uint8_t pkt[1024];
	struct proto_startup st;
	size_t n;

	n = mk_many_params(pkt, PROTO_STARTUP_MAX_PARAMS);
	assert_int_equal(proto_parse_startup(pkt, n, &st), (ssize_t)n);
	assert_int_equal(st.nparams, PROTO_STARTUP_MAX_PARAMS);
	assert_string_equal(st.params[PROTO_STARTUP_MAX_PARAMS - 1].name, "p63");
	assert_string_equal(st.params[PROTO_STARTUP_MAX_PARAMS - 1].value, "v");

	n = mk_many_params(pkt, PROTO_STARTUP_MAX_PARAMS + 1);
	assert_int_equal(proto_parse_startup(pkt, n, &st), PROTO_EMALFORMED);
}

/* ---- typed headers ---- */

static void test_read_hdr(void **state)
{
	(void)state;
	uint8_t m[16];
	struct proto_hdr h = { 0 };

	mk_typed(m, 'Z', LIT("I"));
	for (size_t i = 0; i < PROTO_HDR_LEN; i++)
		assert_int_equal(proto_read_hdr(m, i, 1024, &h), 0);
	assert_int_equal(proto_read_hdr(m, 5, 1024, &h), PROTO_HDR_LEN);
	assert_int_equal(h.type, 'Z');
	assert_int_equal(h.len, 5);
	/* The body need not be present; extra bytes are not looked at. */
	assert_int_equal(proto_read_hdr(m, 6, 1024, &h), PROTO_HDR_LEN);

	/* Smallest legal length: a message with no body. */
	mk_typed(m, 'X', NULL, 0);
	assert_int_equal(proto_read_hdr(m, 5, 1024, &h), PROTO_HDR_LEN);
	assert_int_equal(h.len, 4);

	for (uint32_t len = 0; len < 4; len++) {
		m[0] = 'Q';
		be32(m + 1, len);
		assert_int_equal(proto_read_hdr(m, 5, 1024, &h), PROTO_ETOOSHORT);
	}
	be32(m + 1, 1024);
	assert_int_equal(proto_read_hdr(m, 5, 1024, &h), PROTO_HDR_LEN);
	assert_int_equal(h.len, 1024);
	be32(m + 1, 1025);
	h.len = 0;
	assert_int_equal(proto_read_hdr(m, 5, 1024, &h), PROTO_ETOOLONG);
	assert_int_equal(h.len, 1025); /* for the error text (vdb.c's max_message_size) */
	be32(m + 1, 0x80000000u);
	assert_int_equal(proto_read_hdr(m, 5, 1024, &h), PROTO_ETOOLONG);
	be32(m + 1, 0xffffffffu);
	assert_int_equal(proto_read_hdr(m, 5, UINT32_MAX, &h), PROTO_HDR_LEN);
	assert_int_equal(h.len, 0xffffffffu);
}

/* ---- reader ---- */

static void test_reader_values(void **state)
{
	(void)state;
	static const uint8_t body[] = { 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
					'h', 'i', 0, 0xaa, 0xbb };
	struct proto_reader r;

	proto_reader_init(&r, body, sizeof(body));
	assert_int_equal(proto_remaining(&r), sizeof(body));
	assert_int_equal(proto_get_u8(&r), 0x01);
	assert_int_equal(proto_get_u16(&r), 0x0203);
	assert_int_equal(proto_get_u32(&r), 0x04050607u);
	assert_string_equal(proto_get_cstr(&r), "hi");
	const uint8_t *raw = proto_get_bytes(&r, 2);
	assert_ptr_equal(raw, body + 10);
	assert_int_equal(proto_remaining(&r), 0);
	assert_non_null(proto_get_bytes(&r, 0));
	assert_false(r.err);
}

/* The readers added for the hand-decoded sites (issue 23 item 4): u64, a string with its
 * length, the position. */
static void test_reader_u64_cstr_n_pos(void **state)
{
	(void)state;
	static const uint8_t body[] = { 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 'a', 'b', 'c', 0, 0x09 };
	struct proto_reader r;
	size_t n = 99;

	proto_reader_init(&r, body, sizeof(body));
	assert_ptr_equal(proto_reader_pos(&r), body);
	assert_true(proto_get_u64(&r) == 0x0102030405060708ull);
	assert_ptr_equal(proto_reader_pos(&r), body + 8);
	assert_string_equal(proto_get_cstr_n(&r, &n), "abc");
	assert_int_equal(n, 3);
	assert_ptr_equal(proto_reader_pos(&r), body + 12);
	assert_int_equal(proto_get_u8(&r), 0x09);
	assert_false(r.err);
	/* Past the end: 0, err, and no length. */
	assert_true(proto_get_u64(&r) == 0);
	assert_true(r.err);
	proto_reader_init(&r, body, 7);
	assert_true(proto_get_u64(&r) == 0);
	assert_true(r.err);
	proto_reader_init(&r, body + 8, 3); /* "abc" without its NUL */
	n = 99;
	assert_null(proto_get_cstr_n(&r, &n));
	assert_int_equal(n, 0);
	assert_true(r.err);
}

static void test_reader_bounds(void **state)
{
	(void)state;
	static const uint8_t body[] = { 0x01, 0x02, 0x03 };
	struct proto_reader r;

	proto_reader_init(&r, body, sizeof(body));
	assert_int_equal(proto_get_u32(&r), 0);
	assert_true(r.err);
	/* Sticky: a later read that would fit still fails, so values after an error are all zero. */
	assert_int_equal(proto_get_u8(&r), 0);
	assert_int_equal(proto_remaining(&r), 3);

	proto_reader_init(&r, body, sizeof(body));
	assert_int_equal(proto_get_u16(&r), 0x0102);
	assert_int_equal(proto_get_u16(&r), 0);
	assert_true(r.err);

	proto_reader_init(&r, body, sizeof(body));
	assert_null(proto_get_cstr(&r));
	assert_true(r.err);

	proto_reader_init(&r, body, sizeof(body));
	assert_null(proto_get_bytes(&r, 4));
	assert_true(r.err);
	assert_null(proto_get_bytes(&r, 0));

	proto_reader_init(&r, body, sizeof(body));
	assert_non_null(proto_get_bytes(&r, 3));
	assert_int_equal(proto_get_u8(&r), 0);
	assert_true(r.err);

	/* A huge n must not wrap the bounds check. */
	proto_reader_init(&r, body, sizeof(body));
	proto_get_u8(&r);
	assert_null(proto_get_bytes(&r, SIZE_MAX));
	assert_true(r.err);

	/* The reader only sees len bytes even when more follow in memory. */
	static const uint8_t s[] = { 'a', 'b', 0 };
	proto_reader_init(&r, s, 2);
	assert_null(proto_get_cstr(&r));
	assert_true(r.err);

	proto_reader_init(&r, NULL, 0);
	assert_int_equal(proto_remaining(&r), 0);
	assert_null(proto_get_cstr(&r));
	assert_true(r.err);
}

/* ---- server messages ---- */

static void test_parse_error(void **state)
{
	(void)state;
	struct proto_error_fields f;

	assert_int_equal(proto_parse_error(LIT("SFEHLER\0VERROR\0C42P01\0Mrelation \"x\" does not exist\0"
					       "P15\0Dsome detail\0Hsome hint\0Fparse.c\0\0"), &f), 0);
	assert_string_equal(f.severity, "FEHLER");
	assert_string_equal(f.sqlstate, "42P01");
	assert_string_equal(f.message, "relation \"x\" does not exist");
	assert_string_equal(f.detail, "some detail");
	assert_string_equal(f.hint, "some hint");

	/* 'V' stands in when 'S' is absent; absent fields are NULL. */
	assert_int_equal(proto_parse_error(LIT("VFATAL\0C28P01\0Mbad password\0\0"), &f), 0);
	assert_string_equal(f.severity, "FATAL");
	assert_string_equal(f.sqlstate, "28P01");
	assert_null(f.detail);
	assert_null(f.hint);

	assert_int_equal(proto_parse_error(LIT("\0"), &f), 0);
	assert_null(f.severity);
	assert_null(f.sqlstate);
	assert_null(f.message);
}

static void test_parse_error_malformed(void **state)
{
	(void)state;
	struct proto_error_fields f;

	assert_int_equal(proto_parse_error(NULL, 0, &f), PROTO_EMALFORMED);
	assert_int_equal(proto_parse_error(LIT("SERROR\0"), &f), PROTO_EMALFORMED);
	assert_int_equal(proto_parse_error(LIT("SERROR\0Mno nul"), &f), PROTO_EMALFORMED);
	assert_int_equal(proto_parse_error(LIT("SERROR\0M"), &f), PROTO_EMALFORMED);
	assert_int_equal(proto_parse_error(LIT("SERROR\0\0junk"), &f), PROTO_EMALFORMED);
}

static void test_parse_parameter_status(void **state)
{
	(void)state;
	const char *name = NULL;
	const char *value = NULL;

	assert_int_equal(proto_parse_parameter_status(LIT("TimeZone\0Europe/Paris\0"), &name, &value), 0);
	assert_string_equal(name, "TimeZone");
	assert_string_equal(value, "Europe/Paris");
	assert_int_equal(proto_parse_parameter_status(LIT("application_name\0\0"), &name, &value), 0);
	assert_string_equal(value, "");

	assert_int_equal(proto_parse_parameter_status(NULL, 0, &name, &value), PROTO_EMALFORMED);
	assert_int_equal(proto_parse_parameter_status(LIT("TimeZone\0"), &name, &value), PROTO_EMALFORMED);
	assert_int_equal(proto_parse_parameter_status(LIT("TimeZone\0UTC"), &name, &value), PROTO_EMALFORMED);
	assert_int_equal(proto_parse_parameter_status(LIT("TimeZone\0UTC\0x"), &name, &value), PROTO_EMALFORMED);
	assert_int_equal(proto_parse_parameter_status(LIT("\0UTC\0"), &name, &value), PROTO_EMALFORMED);
}

static void test_parse_backend_key(void **state)
{
	(void)state;
	uint32_t pid = 0, key = 0;

	assert_int_equal(proto_parse_backend_key(LIT("\x00\x01\x02\x03\xff\xfe\xfd\xfc"), &pid, &key), 0);
	assert_int_equal(pid, 0x00010203u);
	assert_int_equal(key, 0xfffefdfcu);

	assert_int_equal(proto_parse_backend_key(NULL, 0, &pid, &key), PROTO_EMALFORMED);
	assert_int_equal(proto_parse_backend_key(LIT("\0\0\0\1\0\0\0"), &pid, &key), PROTO_EMALFORMED);
	assert_int_equal(proto_parse_backend_key(LIT("\0\0\0\1\0\0\0\2\0"), &pid, &key), PROTO_EMALFORMED);
}

static void test_parse_auth(void **state)
{
	(void)state;
	struct proto_auth a;
	static const uint8_t md5[] = { 0, 0, 0, 5, 0x11, 0x22, 0x33, 0x44 };
	static const uint8_t sasl[] = "\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0";

	assert_int_equal(proto_parse_auth(LIT("\0\0\0\0"), &a), 0);
	assert_int_equal(a.code, PROTO_AUTH_OK);
	assert_int_equal(a.data_len, 0);

	assert_int_equal(proto_parse_auth(LIT("\0\0\0\3"), &a), 0);
	assert_int_equal(a.code, PROTO_AUTH_CLEARTEXT);

	assert_int_equal(proto_parse_auth(md5, sizeof(md5), &a), 0);
	assert_int_equal(a.code, PROTO_AUTH_MD5);
	assert_int_equal(a.data_len, 4);
	assert_memory_equal(a.data, md5 + 4, 4);

	assert_int_equal(proto_parse_auth(sasl, sizeof(sasl), &a), 0);
	assert_int_equal(a.code, PROTO_AUTH_SASL);
	assert_ptr_equal(a.data, sasl + 4);
	assert_int_equal(a.data_len, sizeof(sasl) - 4);
	assert_true(proto_sasl_has_mechanism(a.data, a.data_len, "SCRAM-SHA-256"));

	assert_int_equal(proto_parse_auth(LIT("\0\0\0\x0br=abc,s=salt,i=4096"), &a), 0);
	assert_int_equal(a.code, PROTO_AUTH_SASL_CONTINUE);
	assert_memory_equal(a.data, "r=abc,s=salt,i=4096", a.data_len);
	assert_int_equal(proto_parse_auth(LIT("\0\0\0\x0cv=sig"), &a), 0);
	assert_int_equal(a.code, PROTO_AUTH_SASL_FINAL);
	assert_int_equal(a.data_len, 5);

	/* Codes tusk does not act on are passed through for the caller to refuse. */
	assert_int_equal(proto_parse_auth(LIT("\0\0\0\x07"), &a), 0);
	assert_int_equal(a.code, 7);
}

static void test_parse_auth_malformed(void **state)
{
	(void)state;
	struct proto_auth a;

	assert_int_equal(proto_parse_auth(NULL, 0, &a), PROTO_EMALFORMED);
	assert_int_equal(proto_parse_auth(LIT("\0\0\0"), &a), PROTO_EMALFORMED);
	assert_int_equal(proto_parse_auth(LIT("\0\0\0\0x"), &a), PROTO_EMALFORMED);
	assert_int_equal(proto_parse_auth(LIT("\0\0\0\3x"), &a), PROTO_EMALFORMED);
	assert_int_equal(proto_parse_auth(LIT("\0\0\0\5\1\2\3"), &a), PROTO_EMALFORMED);
	assert_int_equal(proto_parse_auth(LIT("\0\0\0\5\1\2\3\4\5"), &a), PROTO_EMALFORMED);
	/* SASL: no list, no terminating empty name, nothing but the terminator, trailing bytes. */
	assert_int_equal(proto_parse_auth(LIT("\0\0\0\x0a"), &a), PROTO_EMALFORMED);
	assert_int_equal(proto_parse_auth(LIT("\0\0\0\x0aSCRAM-SHA-256\0"), &a), PROTO_EMALFORMED);
	assert_int_equal(proto_parse_auth(LIT("\0\0\0\x0aSCRAM-SHA-256"), &a), PROTO_EMALFORMED);
	assert_int_equal(proto_parse_auth(LIT("\0\0\0\x0a\0"), &a), PROTO_EMALFORMED);
	assert_int_equal(proto_parse_auth(LIT("\0\0\0\x0aSCRAM-SHA-256\0\0x"), &a), PROTO_EMALFORMED);
}

static void test_sasl_has_mechanism(void **state)
{
	(void)state;
	static const uint8_t list[] = "SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0"; /* + implicit NUL */

	assert_true(proto_sasl_has_mechanism(list, sizeof(list), "SCRAM-SHA-256"));
	assert_true(proto_sasl_has_mechanism(list, sizeof(list), "SCRAM-SHA-256-PLUS"));
	assert_false(proto_sasl_has_mechanism(list, sizeof(list), "SCRAM-SHA"));
	assert_false(proto_sasl_has_mechanism(list, sizeof(list), "SCRAM-SHA-256-PLUS-X"));
	assert_false(proto_sasl_has_mechanism(list, sizeof(list), ""));
	/* Names after the empty terminator are not part of the list. */
	assert_false(proto_sasl_has_mechanism(LIT("A\0\0SCRAM-SHA-256\0\0"), "SCRAM-SHA-256"));
	/* A name cut off by the end of the body is not a name. */
	assert_false(proto_sasl_has_mechanism(list, 14, "SCRAM-SHA-256"));
	assert_false(proto_sasl_has_mechanism(LIT("SCRAM-SHA-256"), "SCRAM-SHA-256"));
	assert_false(proto_sasl_has_mechanism(NULL, 0, "SCRAM-SHA-256"));
	/* Without the terminator, complete names still count. */
	assert_true(proto_sasl_has_mechanism(LIT("SCRAM-SHA-256\0"), "SCRAM-SHA-256"));
}

static void test_strerror(void **state)
{
	(void)state;
	const int errs[] = { PROTO_ETOOSHORT, PROTO_ETOOLONG, PROTO_EVERSION, PROTO_EMALFORMED };
	for (size_t i = 0; i < 4; i++) {
		assert_non_null(proto_strerror(errs[i]));
		for (size_t j = 0; j < i; j++)
			assert_string_not_equal(proto_strerror(errs[i]), proto_strerror(errs[j]));
		assert_string_not_equal(proto_strerror(errs[i]), proto_strerror(-99));
	}
	assert_non_null(proto_strerror(0));
}

/* ---- builders, read back through the parsers ---- */

struct built {
	struct buf b;
	struct proto_hdr h;
	const uint8_t *body;
	size_t body_len;
};

/* Reads exactly one typed message that fills the buffer. */
static void read_one(struct built *m, uint8_t type)
{
	assert_int_equal(proto_read_hdr(buf_head(&m->b), buf_len(&m->b), 1 << 20, &m->h), PROTO_HDR_LEN);
	assert_int_equal(m->h.type, type);
	assert_int_equal(m->h.len + 1, buf_len(&m->b));
	m->body = buf_head(&m->b) + PROTO_HDR_LEN;
	m->body_len = m->h.len - 4;
}

static int setup_built(void **state)
{
	struct built *m = calloc(1, sizeof(*m));
	if (!m || buf_init(&m->b, 16384) != 0)
		return -1;
	*state = m;
	return 0;
}

static int teardown_built(void **state)
{
	struct built *m = *state;
	buf_free(&m->b);
	free(m);
	return 0;
}

static void test_build_error_and_notice(void **state)
{
	struct built *m = *state;
	struct proto_error_fields f;

	assert_int_equal(proto_put_error(&m->b, "FATAL", "53300", "too many clients", "pool full", "retry"), 0);
	read_one(m, 'E');
	assert_int_equal(proto_parse_error(m->body, m->body_len, &f), 0);
	assert_string_equal(f.severity, "FATAL");
	assert_string_equal(f.sqlstate, "53300");
	assert_string_equal(f.message, "too many clients");
	assert_string_equal(f.detail, "pool full");
	assert_string_equal(f.hint, "retry");
	/* Both severity fields carry the same text. */
	struct proto_reader r;
	proto_reader_init(&r, m->body, m->body_len);
	assert_int_equal(proto_get_u8(&r), 'S');
	assert_string_equal(proto_get_cstr(&r), "FATAL");
	assert_int_equal(proto_get_u8(&r), 'V');
	assert_string_equal(proto_get_cstr(&r), "FATAL");
	assert_false(r.err);

	buf_reset(&m->b);
	assert_int_equal(proto_put_notice(&m->b, "WARNING", "01000", "careful", NULL, NULL), 0);
	read_one(m, 'N');
	assert_int_equal(proto_parse_error(m->body, m->body_len, &f), 0);
	assert_string_equal(f.severity, "WARNING");
	assert_string_equal(f.sqlstate, "01000");
	assert_string_equal(f.message, "careful");
	assert_null(f.detail);
	assert_null(f.hint);

	buf_reset(&m->b);
	assert_int_equal(proto_put_error(&m->b, "ERROR", "08P01", "x", NULL, "h"), 0);
	read_one(m, 'E');
	assert_int_equal(proto_parse_error(m->body, m->body_len, &f), 0);
	assert_null(f.detail);
	assert_string_equal(f.hint, "h");
}

static void test_build_parameter_status(void **state)
{
	struct built *m = *state;
	const char *name, *value;

	assert_int_equal(proto_put_parameter_status(&m->b, "client_encoding", "UTF8"), 0);
	read_one(m, 'S');
	assert_int_equal(proto_parse_parameter_status(m->body, m->body_len, &name, &value), 0);
	assert_string_equal(name, "client_encoding");
	assert_string_equal(value, "UTF8");
}

static void test_build_backend_key(void **state)
{
	struct built *m = *state;
	uint32_t pid, key;

	assert_int_equal(proto_put_backend_key(&m->b, 0x80000001u, 0xcafebabeu), 0);
	read_one(m, 'K');
	assert_int_equal(proto_parse_backend_key(m->body, m->body_len, &pid, &key), 0);
	assert_int_equal(pid, 0x80000001u);
	assert_int_equal(key, 0xcafebabeu);
}

static void test_build_ready_and_auth_ok(void **state)
{
	struct built *m = *state;
	struct proto_auth a;

	assert_int_equal(proto_put_ready(&m->b, 'T'), 0);
	read_one(m, 'Z');
	assert_int_equal(m->body_len, 1);
	assert_int_equal(m->body[0], 'T');

	buf_reset(&m->b);
	assert_int_equal(proto_put_auth_ok(&m->b), 0);
	read_one(m, 'R');
	assert_int_equal(proto_parse_auth(m->body, m->body_len, &a), 0);
	assert_int_equal(a.code, PROTO_AUTH_OK);
	assert_int_equal(a.data_len, 0);
}

static void test_build_startup(void **state)
{
	struct built *m = *state;
	struct proto_startup st;
	const struct proto_param params[] = {
		{ "user", "alice" }, { "database", "shop" }, { "client_encoding", "UTF8" },
	};

	assert_int_equal(proto_put_startup(&m->b, params, 3), 0);
	assert_int_equal(proto_parse_startup(buf_head(&m->b), buf_len(&m->b), &st), (ssize_t)buf_len(&m->b));
	assert_int_equal(st.kind, PROTO_STARTUP_MESSAGE);
	assert_int_equal(st.version, PROTO_VERSION_3);
	assert_int_equal(st.nparams, 3);
	for (int i = 0; i < 3; i++) {
		assert_string_equal(st.params[i].name, params[i].name);
		assert_string_equal(st.params[i].value, params[i].value);
	}
	assert_string_equal(st.user, "alice");
	assert_string_equal(st.database, "shop");
}

static void test_build_startup_too_big(void **state)
{
	struct built *m = *state;
	static char big[PROTO_STARTUP_MAX];
	struct proto_param params[] = { { "user", "u" }, { "options", big } };

	/* 8 + "user\0u\0" + "options\0" + value + NUL + terminator: find the largest that fits. */
	size_t fixed = 8 + 7 + 8 + 1 + 1;
	memset(big, 'o', PROTO_STARTUP_MAX - fixed);
	big[PROTO_STARTUP_MAX - fixed] = '\0';
	assert_int_equal(proto_put_startup(&m->b, params, 2), 0);
	assert_int_equal(buf_len(&m->b), PROTO_STARTUP_MAX);

	buf_reset(&m->b);
	big[PROTO_STARTUP_MAX - fixed] = 'o';
	big[PROTO_STARTUP_MAX - fixed + 1] = '\0';
	assert_int_equal(proto_put_startup(&m->b, params, 2), -ENOSPC);
	assert_int_equal(buf_len(&m->b), 0);
}

static void test_build_cancel_request(void **state)
{
	struct built *m = *state;
	struct proto_startup st;

	assert_int_equal(proto_put_cancel_request(&m->b, 4242, 0x01020304u), 0);
	assert_int_equal(buf_len(&m->b), 16);
	assert_int_equal(proto_parse_startup(buf_head(&m->b), buf_len(&m->b), &st), 16);
	assert_int_equal(st.kind, PROTO_STARTUP_CANCEL);
	assert_int_equal(st.cancel_pid, 4242);
	assert_int_equal(st.cancel_key, 0x01020304u);
}

static void test_build_query_terminate_password(void **state)
{
	struct built *m = *state;
	struct proto_reader r;

	assert_int_equal(proto_put_query(&m->b, "DISCARD ALL"), 0);
	read_one(m, 'Q');
	proto_reader_init(&r, m->body, m->body_len);
	assert_string_equal(proto_get_cstr(&r), "DISCARD ALL");
	assert_int_equal(proto_remaining(&r), 0);

	buf_reset(&m->b);
	assert_int_equal(proto_put_terminate(&m->b), 0);
	read_one(m, 'X');
	assert_int_equal(m->h.len, 4);

	buf_reset(&m->b);
	assert_int_equal(proto_put_password(&m->b, "md5a3556571e93b0d20722ba62be61e8c2d"), 0);
	read_one(m, 'p');
	proto_reader_init(&r, m->body, m->body_len);
	assert_string_equal(proto_get_cstr(&r), "md5a3556571e93b0d20722ba62be61e8c2d");
	assert_int_equal(proto_remaining(&r), 0);
	assert_false(r.err);
}

static void test_build_sasl(void **state)
{
	struct built *m = *state;
	struct proto_reader r;
	static const char first[] = "n,,n=,r=fyko+d2lbbFgONRv9qkxdawL";

	assert_int_equal(proto_put_sasl_initial(&m->b, "SCRAM-SHA-256", first, strlen(first)), 0);
	read_one(m, 'p');
	proto_reader_init(&r, m->body, m->body_len);
	assert_string_equal(proto_get_cstr(&r), "SCRAM-SHA-256");
	assert_int_equal(proto_get_u32(&r), strlen(first));
	assert_memory_equal(proto_get_bytes(&r, strlen(first)), first, strlen(first));
	assert_int_equal(proto_remaining(&r), 0);
	assert_false(r.err);

	buf_reset(&m->b);
	assert_int_equal(proto_put_sasl_response(&m->b, "c=biws,r=x,p=y", 14), 0);
	read_one(m, 'p');
	assert_int_equal(m->body_len, 14);
	assert_memory_equal(m->body, "c=biws,r=x,p=y", 14);

	buf_reset(&m->b);
	assert_int_equal(proto_put_sasl_response(&m->b, NULL, 0), 0);
	read_one(m, 'p');
	assert_int_equal(m->h.len, 4);
}

static void test_build_appends(void **state)
{
	struct built *m = *state;
	struct proto_hdr h = { 0 };
	const uint8_t *p;
	size_t left;

	/* Builders append whole messages one after another, as a reply is assembled. */
	assert_int_equal(proto_put_auth_ok(&m->b), 0);
	assert_int_equal(proto_put_parameter_status(&m->b, "server_version", "16.2"), 0);
	assert_int_equal(proto_put_backend_key(&m->b, 1, 2), 0);
	assert_int_equal(proto_put_ready(&m->b, 'I'), 0);
	static const uint8_t types[] = { 'R', 'S', 'K', 'Z' };
	p = buf_head(&m->b);
	left = buf_len(&m->b);
	for (size_t i = 0; i < sizeof(types); i++) {
		assert_int_equal(proto_read_hdr(p, left, 1024, &h), PROTO_HDR_LEN);
		assert_int_equal(h.type, types[i]);
		assert_true(h.len + 1 <= left);
		p += h.len + 1;
		left -= h.len + 1;
	}
	assert_int_equal(left, 0);
}

/* ---- -ENOSPC ---- */

static const struct proto_param startup_params[] = { { "user", "alice" }, { "database", "shop" } };
static const uint8_t sasl_data[] = "n,,n=,r=nonce";

static int build_error(struct buf *b) { return proto_put_error(b, "ERROR", "XX000", "m", "d", "h"); }
static int build_notice(struct buf *b) { return proto_put_notice(b, "NOTICE", "00000", "m", NULL, NULL); }
static int build_param(struct buf *b) { return proto_put_parameter_status(b, "TimeZone", "UTC"); }
static int build_key(struct buf *b) { return proto_put_backend_key(b, 1, 2); }
static int build_ready(struct buf *b) { return proto_put_ready(b, 'I'); }
static int build_auth_ok(struct buf *b) { return proto_put_auth_ok(b); }
static int build_startup(struct buf *b) { return proto_put_startup(b, startup_params, 2); }
static int build_cancel(struct buf *b) { return proto_put_cancel_request(b, 1, 2); }
static int build_query(struct buf *b) { return proto_put_query(b, "SELECT 1"); }
static int build_terminate(struct buf *b) { return proto_put_terminate(b); }
static int build_password(struct buf *b) { return proto_put_password(b, "secret"); }
static int build_sasl_initial(struct buf *b)
{
	return proto_put_sasl_initial(b, "SCRAM-SHA-256", sasl_data, sizeof(sasl_data) - 1);
}
static int build_sasl_response(struct buf *b) { return proto_put_sasl_response(b, sasl_data, sizeof(sasl_data) - 1); }

static int (*const builders[])(struct buf *) = {
	build_error, build_notice, build_param, build_key, build_ready, build_auth_ok, build_startup,
	build_cancel, build_query, build_terminate, build_password, build_sasl_initial, build_sasl_response,
};

static void test_build_enospc_leaves_buffer_unchanged(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(builders) / sizeof(builders[0]); i++) {
		struct buf b;
		uint8_t expect[512];

		/* The message's size, and its bytes, from an empty roomy buffer. */
		assert_int_equal(buf_init(&b, 512), 0);
		assert_int_equal(builders[i](&b), 0);
		size_t n = buf_len(&b);
		memcpy(expect, buf_head(&b), n);
		buf_free(&b);

		/* Free space one short of n, split between head and tail: compacting would not help. */
		assert_int_equal(buf_init(&b, n + 3), 0);
		memset(b.data, 0xa5, b.cap);
		assert_int_equal(buf_append(&b, "012345", 6), 0);
		buf_consume(&b, 2);
		uint8_t before[512];
		memcpy(before, b.data, b.cap);
		size_t start = b.start, end = b.end;

		assert_int_equal(builders[i](&b), -ENOSPC);
		assert_int_equal(b.start, start);
		assert_int_equal(b.end, end);
		assert_memory_equal(b.data, before, b.cap);

		/* One byte more consumed: it now fits, but only after compaction. */
		buf_consume(&b, 1);
		assert_true(buf_room(&b) < n);
		assert_int_equal(builders[i](&b), 0);
		assert_int_equal(buf_len(&b), 3 + n);
		assert_memory_equal(buf_head(&b), "345", 3);
		assert_memory_equal(buf_head(&b) + 3, expect, n);
		assert_int_equal(buf_room(&b), 0);
		buf_free(&b);

		/* Even an empty buffer one byte too small is left alone. */
		assert_int_equal(buf_init(&b, n - 1), 0);
		assert_int_equal(builders[i](&b), -ENOSPC);
		assert_true(buf_empty(&b));
		buf_free(&b);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_startup_message),
		cmocka_unit_test(test_startup_minor_version_and_extra_bytes),
		cmocka_unit_test(test_startup_empty_database_is_absent),
		cmocka_unit_test(test_startup_ssl_gssenc_cancel),
		cmocka_unit_test(test_startup_request_wrong_size),
		cmocka_unit_test(test_startup_need_more_every_prefix),
		cmocka_unit_test(test_startup_length_out_of_range),
		cmocka_unit_test(test_startup_exactly_max_length),
		cmocka_unit_test(test_startup_bad_version),
		cmocka_unit_test(test_startup_missing_user),
		cmocka_unit_test(test_startup_missing_terminator),
		cmocka_unit_test(test_startup_name_without_value),
		cmocka_unit_test(test_startup_duplicate_user_or_database),
		cmocka_unit_test(test_startup_too_many_params),
		cmocka_unit_test(test_read_hdr),
		cmocka_unit_test(test_reader_values),
		cmocka_unit_test(test_reader_u64_cstr_n_pos),
		cmocka_unit_test(test_reader_bounds),
		cmocka_unit_test(test_parse_error),
		cmocka_unit_test(test_parse_error_malformed),
		cmocka_unit_test(test_parse_parameter_status),
		cmocka_unit_test(test_parse_backend_key),
		cmocka_unit_test(test_parse_auth),
		cmocka_unit_test(test_parse_auth_malformed),
		cmocka_unit_test(test_sasl_has_mechanism),
		cmocka_unit_test(test_strerror),
		cmocka_unit_test_setup_teardown(test_build_error_and_notice, setup_built, teardown_built),
		cmocka_unit_test_setup_teardown(test_build_parameter_status, setup_built, teardown_built),
		cmocka_unit_test_setup_teardown(test_build_backend_key, setup_built, teardown_built),
		cmocka_unit_test_setup_teardown(test_build_ready_and_auth_ok, setup_built, teardown_built),
		cmocka_unit_test_setup_teardown(test_build_startup, setup_built, teardown_built),
		cmocka_unit_test_setup_teardown(test_build_startup_too_big, setup_built, teardown_built),
		cmocka_unit_test_setup_teardown(test_build_cancel_request, setup_built, teardown_built),
		cmocka_unit_test_setup_teardown(test_build_query_terminate_password, setup_built, teardown_built),
		cmocka_unit_test_setup_teardown(test_build_sasl, setup_built, teardown_built),
		cmocka_unit_test_setup_teardown(test_build_appends, setup_built, teardown_built),
		cmocka_unit_test(test_build_enospc_leaves_buffer_unchanged),
	};
	return cmocka_run_group_tests_name("proto", tests, NULL, NULL);
}
