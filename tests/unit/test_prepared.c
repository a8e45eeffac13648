/* Unit tests for pool/prepared: statement identity and server-side names, the client name map
 * (limits, 42P05 semantics, growth and deletion), the server LRU set against a reference model,
 * and the Parse/Bind/Describe/Close readers and rewriters byte for byte against hand-built
 * messages, including Bind heads split at every byte and every way to be malformed. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pool/prepared.h"
#include "proto/proto.h"
#include "util/buf.h"

#define MAX_LEN (1u << 20)

static uint8_t *put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
	return p + 4;
}

static uint8_t *put_str(uint8_t *p, const char *s)
{
	size_t n = strlen(s) + 1;
	memcpy(p, s, n);
	return p + n;
}

/* Fills in the length word of a message built at msg whose end is at p; returns its size. */
static size_t seal(uint8_t *msg, const uint8_t *p)
{
	size_t n = (size_t)(p - msg);
	put_be32(msg + 1, (uint32_t)(n - 1));
	return n;
}

static size_t mk_parse(uint8_t *out, const char *name, const char *query, uint16_t n, const uint32_t *oids)
{
	uint8_t *p = out;
	*p++ = 'P';
	p += 4;
	p = put_str(p, name);
	p = put_str(p, query);
	*p++ = (uint8_t)(n >> 8);
	*p++ = (uint8_t)n;
	for (uint16_t i = 0; i < n; i++)
		p = put_be32(p, oids[i]);
	return seal(out, p);
}

/* Bind with one text parameter, no formats, no result formats. */
static size_t mk_bind(uint8_t *out, const char *portal, const char *stmt, const char *param)
{
	uint8_t *p = out;
	*p++ = 'B';
	p += 4;
	p = put_str(p, portal);
	p = put_str(p, stmt);
	*p++ = 0, *p++ = 0;       /* no parameter formats */
	*p++ = 0, *p++ = 1;       /* one parameter */
	p = put_be32(p, (uint32_t)strlen(param));
	memcpy(p, param, strlen(param));
	p += strlen(param);
	*p++ = 0, *p++ = 0;       /* no result formats */
	return seal(out, p);
}

static size_t mk_target(uint8_t *out, uint8_t type, uint8_t kind, const char *name)
{
	uint8_t *p = out;
	*p++ = type;
	p += 4;
	*p++ = kind;
	p = put_str(p, name);
	return seal(out, p);
}

static void name_of_len(char *out, size_t n, char c)
{
	memset(out, c, n);
	out[n] = '\0';
}

static struct prep_hash identity_of(const char *query, uint16_t n, const uint32_t *oids)
{
	uint8_t msg[256];
	struct prep_parse pp;
	size_t len = mk_parse(msg, "s", query, n, oids);
	assert_int_equal(prep_read_parse(msg, len, MAX_LEN, &pp), (ssize_t)len);
	struct prep_hash h;
	assert_int_equal(prep_identity(pp.rest, pp.rest_len, &h), 0);
	return h;
}

/* ---- identity ---- */

static void test_identity(void **state)
{
	(void)state;
	uint32_t int4 = 23, int8 = 20, unspec = 0;
	struct prep_hash a = identity_of("SELECT $1", 1, &int4);
	struct prep_hash b = identity_of("SELECT $1", 1, &int4);
	struct prep_hash c = identity_of("SELECT $1", 1, &int8);
	struct prep_hash d = identity_of("SELECT $1", 1, &unspec);
	struct prep_hash e = identity_of("SELECT $1", 0, NULL);
	struct prep_hash f = identity_of("SELECT $1 ", 1, &int4);
	assert_true(prep_hash_equal(a, b));
	assert_false(prep_hash_equal(a, c));
	assert_false(prep_hash_equal(a, d));
	assert_false(prep_hash_equal(a, e));
	assert_false(prep_hash_equal(a, f));

	/* The naming scheme is pinned: "tusk_" + the first 16 bytes of SHA-256 in hex. */
	char name[PREP_SERVER_NAME_SIZE];
	prep_server_name(identity_of("SELECT 1", 0, NULL), name);
	assert_string_equal(name, "tusk_b1042ee1ac35ef0dad64d6c4f86f40b3");
	prep_server_name(a, name);
	assert_string_equal(name, "tusk_74d920206644c6c5b4c3fa51671842cd");
	assert_int_equal(strlen(name), PREP_SERVER_NAME_SIZE - 1);
	assert_true(strlen(name) <= PREP_NAME_MAX);
}

/* ---- Parse ---- */

static void test_read_parse(void **state)
{
	(void)state;
	uint8_t msg[128];
	uint32_t oids[2] = { 23, 25 };
	size_t len = mk_parse(msg, "S_1", "SELECT $1, $2", 2, oids);
	msg[len] = 'S'; /* the next message's first byte must not matter */
	struct prep_parse pp;

	assert_int_equal(prep_read_parse(msg, len + 1, MAX_LEN, &pp), (ssize_t)len);
	assert_string_equal(pp.name, "S_1");
	assert_int_equal(pp.name_len, 3);
	assert_string_equal(pp.query, "SELECT $1, $2");
	assert_int_equal(pp.nparams, 2);
	assert_ptr_equal(pp.rest, msg + 5 + 4);
	assert_int_equal(pp.rest_len, len - 5 - 4);

	for (size_t i = 0; i < len; i++)
		assert_int_equal(prep_read_parse(msg, i, MAX_LEN, &pp), 0);

	/* Unnamed is read fine (the caller passes it through). */
	len = mk_parse(msg, "", "SELECT 1", 0, NULL);
	assert_int_equal(prep_read_parse(msg, len, MAX_LEN, &pp), (ssize_t)len);
	assert_int_equal(pp.name_len, 0);
	assert_ptr_equal(pp.rest, msg + 6);

	/* A name of exactly PREP_NAME_MAX bytes is fine; one more is not. */
	char name[80];
	name_of_len(name, PREP_NAME_MAX, 'n');
	len = mk_parse(msg, name, "SELECT 1", 0, NULL);
	assert_int_equal(prep_read_parse(msg, len, MAX_LEN, &pp), (ssize_t)len);
	assert_int_equal(pp.name_len, PREP_NAME_MAX);
	name_of_len(name, PREP_NAME_MAX + 1, 'n');
	len = mk_parse(msg, name, "SELECT 1", 0, NULL);
	assert_int_equal(prep_read_parse(msg, len, MAX_LEN, &pp), PROTO_EMALFORMED);
}

static void test_read_parse_malformed(void **state)
{
	(void)state;
	uint8_t msg[128];
	struct prep_parse pp;
	uint32_t oid = 23;
	size_t len;

	/* Name without NUL: the body is "abc". */
	memcpy(msg, "P\0\0\0\x07" "abc", 8);
	assert_int_equal(prep_read_parse(msg, 8, MAX_LEN, &pp), PROTO_EMALFORMED);
	/* Query without NUL. */
	memcpy(msg, "P\0\0\0\x09" "s\0SEL", 10);
	assert_int_equal(prep_read_parse(msg, 10, MAX_LEN, &pp), PROTO_EMALFORMED);
	/* No parameter count. */
	memcpy(msg, "P\0\0\0\x08" "s\0q\0", 9);
	assert_int_equal(prep_read_parse(msg, 9, MAX_LEN, &pp), PROTO_EMALFORMED);
	/* Count says one OID, the body ends after two of its bytes. */
	len = mk_parse(msg, "s", "q", 1, &oid);
	put_be32(msg + 1, (uint32_t)(len - 1 - 2));
	assert_int_equal(prep_read_parse(msg, len - 2, MAX_LEN, &pp), PROTO_EMALFORMED);
	/* Trailing bytes after the OIDs. */
	len = mk_parse(msg, "s", "q", 1, &oid);
	msg[len] = 0;
	put_be32(msg + 1, (uint32_t)len);
	assert_int_equal(prep_read_parse(msg, len + 1, MAX_LEN, &pp), PROTO_EMALFORMED);
	/* Wrong type, seen from the first byte. */
	len = mk_parse(msg, "s", "q", 0, NULL);
	msg[0] = 'B';
	assert_int_equal(prep_read_parse(msg, 1, MAX_LEN, &pp), PROTO_EMALFORMED);
	assert_int_equal(prep_read_parse(msg, len, MAX_LEN, &pp), PROTO_EMALFORMED);
	/* Length words out of range are rejected from the header alone. */
	memcpy(msg, "P\0\0\0\x03", 5);
	assert_int_equal(prep_read_parse(msg, 5, MAX_LEN, &pp), PROTO_ETOOSHORT);
	memcpy(msg, "P\0\0\x10\x01", 5);
	assert_int_equal(prep_read_parse(msg, 5, 4096, &pp), PROTO_ETOOLONG);
	/* An empty body has no name at all. */
	memcpy(msg, "P\0\0\0\x04", 5);
	assert_int_equal(prep_read_parse(msg, 5, MAX_LEN, &pp), PROTO_EMALFORMED);
}

static void test_put_parse(void **state)
{
	(void)state;
	uint8_t msg[256], want[256];
	uint32_t oids[3] = { 23, 0, 1043 };
	size_t len = mk_parse(msg, "my_stmt", "INSERT INTO t VALUES ($1, $2, $3)", 3, oids);
	struct prep_parse pp;
	assert_int_equal(prep_read_parse(msg, len, MAX_LEN, &pp), (ssize_t)len);
	char server_name[PREP_SERVER_NAME_SIZE];
	struct prep_hash h;
	assert_int_equal(prep_identity(pp.rest, pp.rest_len, &h), 0);
	prep_server_name(h, server_name);

	struct buf b;
	assert_int_equal(buf_init(&b, 512), 0);
	assert_int_equal(prep_put_parse(&b, server_name, pp.rest, pp.rest_len), 0);
	size_t wlen = mk_parse(want, server_name, "INSERT INTO t VALUES ($1, $2, $3)", 3, oids);
	assert_int_equal(buf_len(&b), wlen);
	assert_memory_equal(buf_head(&b), want, wlen);

	/* And it reads back as the same statement. */
	struct prep_parse again;
	assert_int_equal(prep_read_parse(buf_head(&b), buf_len(&b), MAX_LEN, &again), (ssize_t)wlen);
	assert_string_equal(again.name, server_name);
	assert_int_equal(again.rest_len, pp.rest_len);
	assert_memory_equal(again.rest, pp.rest, pp.rest_len);
	buf_free(&b);
}

/* ---- Bind ---- */

/* Rewrites a Bind the way the relay does: head from the builder, the rest forwarded as is. */
static void rewrite_bind(const uint8_t *msg, size_t len, const char *server_name, struct buf *out)
{
	struct prep_bind_head h;
	ssize_t head = prep_read_bind_head(msg, len, MAX_LEN, &h);
	assert_true(head > 0);
	assert_int_equal(prep_put_bind_head(out, &h, server_name), 0);
	assert_int_equal(buf_append(out, msg + head, len - (size_t)head), 0);
}

static void test_bind_rewrite(void **state)
{
	(void)state;
	uint8_t msg[256], want[256];
	struct buf b;
	assert_int_equal(buf_init(&b, 512), 0);
	const char *server_name = "tusk_b1042ee1ac35ef0dad64d6c4f86f40b3";

	struct {
		const char *portal, *stmt;
	} cases[] = { { "", "S_1" }, { "C_7", "a" }, { "", "stmt_with_a_long_name_that_is_longer_than_ours_x" } };
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len = mk_bind(msg, cases[i].portal, cases[i].stmt, "42");
		struct prep_bind_head h;
		size_t head = 5 + strlen(cases[i].portal) + 1 + strlen(cases[i].stmt) + 1;
		assert_int_equal(prep_read_bind_head(msg, len, MAX_LEN, &h), (ssize_t)head);
		assert_int_equal(h.len, len - 1);
		assert_string_equal(h.portal, cases[i].portal);
		assert_string_equal(h.stmt, cases[i].stmt);
		assert_int_equal(h.stmt_len, strlen(cases[i].stmt));

		buf_reset(&b);
		rewrite_bind(msg, len, server_name, &b);
		size_t wlen = mk_bind(want, cases[i].portal, server_name, "42");
		assert_int_equal(buf_len(&b), wlen);
		assert_memory_equal(buf_head(&b), want, wlen);
	}
	buf_free(&b);
}

/* Names arriving in pieces: every prefix shorter than the head asks for more; the relay's
 * streaming (feed whatever arrived, rewrite the head once complete, forward the rest) yields
 * the same bytes for every chunk size. */
static void test_bind_head_split(void **state)
{
	(void)state;
	uint8_t msg[512], want[512];
	char portal[PREP_NAME_MAX + 1], stmt[PREP_NAME_MAX + 1];
	name_of_len(portal, PREP_NAME_MAX, 'p');
	name_of_len(stmt, PREP_NAME_MAX, 's');
	size_t len = mk_bind(msg, portal, stmt, "a parameter value");
	size_t head = 5 + 2 * (PREP_NAME_MAX + 1);
	struct prep_bind_head h;

	for (size_t i = 0; i < head; i++)
		assert_int_equal(prep_read_bind_head(msg, i, MAX_LEN, &h), 0);
	assert_int_equal(prep_read_bind_head(msg, head, MAX_LEN, &h), (ssize_t)head);

	const char *server_name = "tusk_0123456789abcdef0123456789abcdef";
	size_t wlen = mk_bind(want, portal, server_name, "a parameter value");
	struct buf in, out;
	assert_int_equal(buf_init(&in, 512), 0);
	assert_int_equal(buf_init(&out, 512), 0);
	for (size_t chunk = 1; chunk <= len; chunk++) {
		buf_reset(&in);
		buf_reset(&out);
		size_t fed = 0, left = 0; /* left: bytes of the message still to forward unchanged */
		bool rewritten = false;
		while (fed < len || !buf_empty(&in)) {
			size_t n = len - fed < chunk ? len - fed : chunk;
			assert_int_equal(buf_append(&in, msg + fed, n), 0);
			fed += n;
			if (!rewritten) {
				ssize_t r = prep_read_bind_head(buf_head(&in), buf_len(&in), MAX_LEN, &h);
				assert_true(r >= 0);
				if (r == 0)
					continue;
				assert_int_equal(prep_put_bind_head(&out, &h, server_name), 0);
				buf_consume(&in, (size_t)r);
				left = len - (size_t)r;
				rewritten = true;
			}
			size_t m = buf_len(&in) < left ? buf_len(&in) : left;
			assert_int_equal(buf_append(&out, buf_head(&in), m), 0);
			buf_consume(&in, m);
			left -= m;
		}
		assert_true(rewritten);
		assert_int_equal(left, 0);
		assert_int_equal(buf_len(&out), wlen);
		assert_memory_equal(buf_head(&out), want, wlen);
	}
	buf_free(&in);
	buf_free(&out);
}

static void test_bind_head_malformed(void **state)
{
	(void)state;
	uint8_t msg[512];
	struct prep_bind_head h;
	char longname[PREP_NAME_MAX + 2];
	name_of_len(longname, PREP_NAME_MAX + 1, 'x');

	/* A portal name over the limit is rejected once its 64th byte is in, not waited for. */
	size_t len = mk_bind(msg, longname, "s", "v");
	assert_int_equal(prep_read_bind_head(msg, 5 + PREP_NAME_MAX, MAX_LEN, &h), 0);
	assert_int_equal(prep_read_bind_head(msg, 5 + PREP_NAME_MAX + 1, MAX_LEN, &h), PROTO_EMALFORMED);
	assert_int_equal(prep_read_bind_head(msg, len, MAX_LEN, &h), PROTO_EMALFORMED);
	/* Same for the statement name. */
	len = mk_bind(msg, "", longname, "v");
	assert_int_equal(prep_read_bind_head(msg, 6 + PREP_NAME_MAX, MAX_LEN, &h), 0);
	assert_int_equal(prep_read_bind_head(msg, 6 + PREP_NAME_MAX + 1, MAX_LEN, &h), PROTO_EMALFORMED);

	/* Length word ending inside a name: the NUL that follows belongs to the next message. */
	memcpy(msg, "B\0\0\0\x06" "ab" "\0s\0", 10);
	assert_int_equal(prep_read_bind_head(msg, 10, MAX_LEN, &h), PROTO_EMALFORMED);
	assert_int_equal(prep_read_bind_head(msg, 6, MAX_LEN, &h), 0);
	/* Length word ending after the portal, before the statement name's NUL. */
	memcpy(msg, "B\0\0\0\x07" "\0ab" "\0\0", 10);
	assert_int_equal(prep_read_bind_head(msg, 10, MAX_LEN, &h), PROTO_EMALFORMED);
	/* Empty body. */
	memcpy(msg, "B\0\0\0\x04", 5);
	assert_int_equal(prep_read_bind_head(msg, 5, MAX_LEN, &h), PROTO_EMALFORMED);
	/* Names exactly filling the message are fine here (the server judges the rest). */
	memcpy(msg, "B\0\0\0\x07" "\0s\0", 8);
	assert_int_equal(prep_read_bind_head(msg, 8, MAX_LEN, &h), 8);
	/* Length words out of range, wrong type. */
	memcpy(msg, "B\0\0\0\x02", 5);
	assert_int_equal(prep_read_bind_head(msg, 5, MAX_LEN, &h), PROTO_ETOOSHORT);
	memcpy(msg, "B\x7f\0\0\0", 5);
	assert_int_equal(prep_read_bind_head(msg, 5, MAX_LEN, &h), PROTO_ETOOLONG);
	memcpy(msg, "E\0\0\0\x07" "\0s\0", 8);
	assert_int_equal(prep_read_bind_head(msg, 1, MAX_LEN, &h), PROTO_EMALFORMED);

	/* A rewritten length word that cannot be written. */
	struct prep_bind_head big = { .len = INT32_MAX, .portal = "", .portal_len = 0, .stmt = "s", .stmt_len = 1 };
	struct buf b;
	assert_int_equal(buf_init(&b, 128), 0);
	assert_int_equal(prep_put_bind_head(&b, &big, "tusk_x"), -EMSGSIZE);
	assert_int_equal(buf_len(&b), 0);
	buf_free(&b);
}

/* ---- Describe and Close ---- */

static void test_targets(void **state)
{
	(void)state;
	uint8_t msg[128], want[128];
	struct prep_target t;
	const char *server_name = "tusk_0123456789abcdef0123456789abcdef";
	struct buf b;
	assert_int_equal(buf_init(&b, 256), 0);

	size_t len = mk_target(msg, 'D', 'S', "S_1");
	for (size_t i = 0; i < len; i++)
		assert_int_equal(prep_read_target(msg, i, &t), 0);
	assert_int_equal(prep_read_target(msg, len + 0, &t), (ssize_t)len);
	assert_int_equal(t.type, 'D');
	assert_int_equal(t.kind, 'S');
	assert_string_equal(t.name, "S_1");
	assert_int_equal(t.name_len, 3);
	assert_int_equal(prep_put_describe_statement(&b, server_name), 0);
	size_t wlen = mk_target(want, 'D', 'S', server_name);
	assert_int_equal(buf_len(&b), wlen);
	assert_memory_equal(buf_head(&b), want, wlen);

	len = mk_target(msg, 'C', 'S', "S_1");
	assert_int_equal(prep_read_target(msg, len, &t), (ssize_t)len);
	assert_int_equal(t.type, 'C');
	buf_reset(&b);
	assert_int_equal(prep_put_close_statement(&b, server_name), 0);
	wlen = mk_target(want, 'C', 'S', server_name);
	assert_int_equal(buf_len(&b), wlen);
	assert_memory_equal(buf_head(&b), want, wlen);

	/* Portals and unnamed targets read fine; the caller passes them through. */
	len = mk_target(msg, 'D', 'P', "");
	assert_int_equal(prep_read_target(msg, len, &t), (ssize_t)len);
	assert_int_equal(t.kind, 'P');
	assert_int_equal(t.name_len, 0);
	char name[PREP_NAME_MAX + 2];
	name_of_len(name, PREP_NAME_MAX, 'c');
	len = mk_target(msg, 'C', 'P', name);
	assert_int_equal(prep_read_target(msg, len, &t), (ssize_t)len);

	/* Malformed: name over the limit (seen from the header), bad kind, no NUL, trailing bytes,
	 * no room for kind and NUL, another message type. */
	name_of_len(name, PREP_NAME_MAX + 1, 'c');
	mk_target(msg, 'D', 'S', name);
	assert_int_equal(prep_read_target(msg, 5, &t), PROTO_EMALFORMED);
	len = mk_target(msg, 'D', 'X', "s");
	assert_int_equal(prep_read_target(msg, len, &t), PROTO_EMALFORMED);
	memcpy(msg, "D\0\0\0\x07" "Sab", 8);
	assert_int_equal(prep_read_target(msg, 8, &t), PROTO_EMALFORMED);
	memcpy(msg, "C\0\0\0\x08" "Sa\0b", 9);
	assert_int_equal(prep_read_target(msg, 9, &t), PROTO_EMALFORMED);
	memcpy(msg, "C\0\0\0\x05" "S", 6);
	assert_int_equal(prep_read_target(msg, 6, &t), PROTO_EMALFORMED);
	memcpy(msg, "C\0\0\0\x03", 5);
	assert_int_equal(prep_read_target(msg, 5, &t), PROTO_ETOOSHORT);
	memcpy(msg, "B\0\0\0\x06" "S\0", 7);
	assert_int_equal(prep_read_target(msg, 7, &t), PROTO_EMALFORMED);

	/* The two answers tusk gives itself. */
	buf_reset(&b);
	assert_int_equal(prep_put_parse_complete(&b), 0);
	assert_int_equal(prep_put_close_complete(&b), 0);
	assert_int_equal(buf_len(&b), 10);
	assert_memory_equal(buf_head(&b), "1\0\0\0\x04" "3\0\0\0\x04", 10);
	buf_free(&b);
}

/* ---- -ENOSPC leaves the buffer as it was ---- */

static void test_enospc_unchanged(void **state)
{
	(void)state;
	uint8_t msg[128];
	struct prep_parse pp;
	size_t plen = mk_parse(msg, "s", "SELECT 1", 0, NULL);
	assert_int_equal(prep_read_parse(msg, plen, MAX_LEN, &pp), (ssize_t)plen);
	struct prep_bind_head bh = { .len = 40, .portal = "", .portal_len = 0, .stmt = "s", .stmt_len = 1 };
	const char *sn = "tusk_0123456789abcdef0123456789abcdef";

	/* Sizes each builder needs. */
	size_t need[6] = {
		5 + strlen(sn) + 1 + pp.rest_len, /* Parse */
		5 + 1 + strlen(sn) + 1,           /* Bind head */
		5 + 1 + strlen(sn) + 1,           /* Describe */
		5 + 1 + strlen(sn) + 1,           /* Close */
		5, 5,                             /* ParseComplete, CloseComplete */
	};
	for (int which = 0; which < 6; which++) {
		for (size_t room = 0; room <= need[which]; room++) {
			/* 4 bytes of other data after k consumed ones: compaction could make room, but
			 * only when the whole message fits may it happen. */
			size_t k = room < 3 ? room : 3;
			struct buf b;
			assert_int_equal(buf_init(&b, 4 + room), 0);
			assert_int_equal(buf_append(&b, &"abcdefg"[3 - k], 4 + k), 0);
			buf_consume(&b, k);
			size_t start = b.start, end = b.end;
			int rc = 0;
			switch (which) {
			case 0: rc = prep_put_parse(&b, sn, pp.rest, pp.rest_len); break;
			case 1: rc = prep_put_bind_head(&b, &bh, sn); break;
			case 2: rc = prep_put_describe_statement(&b, sn); break;
			case 3: rc = prep_put_close_statement(&b, sn); break;
			case 4: rc = prep_put_parse_complete(&b); break;
			default: rc = prep_put_close_complete(&b); break;
			}
			if (room < need[which]) {
				assert_int_equal(rc, -ENOSPC);
				assert_int_equal(b.start, start);
				assert_int_equal(b.end, end);
				assert_memory_equal(buf_head(&b), "defg", 4);
			} else {
				assert_int_equal(rc, 0);
				assert_int_equal(buf_len(&b), 4 + need[which]);
				assert_memory_equal(buf_head(&b), "defg", 4);
			}
			buf_free(&b);
		}
	}
}

/* ---- client map ---- */

static const struct prep_stmt *add(struct prep_client *c, const char *name, const char *query, int want)
{
	uint8_t msg[256];
	struct prep_parse pp;
	size_t len = mk_parse(msg, name, query, 0, NULL);
	assert_int_equal(prep_read_parse(msg, len, MAX_LEN, &pp), (ssize_t)len);
	const struct prep_stmt *e = NULL;
	assert_int_equal(prep_client_add(c, &pp, &e), want);
	if (want == 0) {
		assert_non_null(e);
		assert_string_equal(e->name, name);
		assert_int_equal(e->body_len, pp.rest_len);
		assert_memory_equal(e->body, pp.rest, pp.rest_len); /* a copy: msg is gone after this */
		assert_ptr_not_equal(e->body, pp.rest);
	}
	return e;
}

/* Clients get their map on the first named Parse: until then NULL is read as an empty map
 * by every lookup Bind, Describe, Close, DEALLOCATE, DISCARD, the cache and SHOW make. */
static void test_client_null_map(void **state)
{
	(void)state;
	struct prep_hash gone = { 0 };
	assert_null(prep_client_find(NULL, "S_1"));
	assert_null(prep_client_find(NULL, ""));
	assert_int_equal(prep_client_remove(NULL, "S_1"), -ENOENT);
	assert_int_equal(prep_client_drop(NULL, "S_1", &gone), -ENOENT);
	prep_client_clear(NULL);
	assert_int_equal(prep_client_count(NULL), 0);
	prep_client_set_context(NULL, 42);
	prep_client_free(NULL);
}

static void test_client_map(void **state)
{
	(void)state;
	struct prep_client *c = prep_client_new(1000, 1 << 20);
	assert_non_null(c);
	assert_null(prep_client_find(c, "S_1"));
	assert_int_equal(prep_client_remove(c, "S_1"), -ENOENT);

	const struct prep_stmt *a = add(c, "S_1", "SELECT 1", 0);
	const struct prep_stmt *b = add(c, "S_2", "SELECT 1", 0);
	const struct prep_stmt *d = add(c, "S_3", "SELECT 2", 0);
	assert_int_equal(prep_client_count(c), 3);
	/* Two names for one query share the server-side statement. */
	assert_true(prep_hash_equal(a->hash, b->hash));
	assert_string_equal(a->server_name, b->server_name);
	assert_string_equal(a->server_name, "tusk_b1042ee1ac35ef0dad64d6c4f86f40b3");
	assert_false(prep_hash_equal(a->hash, d->hash));
	assert_ptr_equal(prep_client_find(c, "S_1"), a);
	assert_ptr_equal(prep_client_find(c, "S_3"), d);

	/* Re-Parse of a held name is PostgreSQL's 42P05, even for the same query; nothing changes. */
	add(c, "S_1", "SELECT 1", -EEXIST);
	add(c, "S_1", "SELECT 42", -EEXIST);
	assert_ptr_equal(prep_client_find(c, "S_1"), a);
	assert_int_equal(prep_client_count(c), 3);
	/* The unnamed statement is never tracked. */
	add(c, "", "SELECT 1", -EINVAL);
	assert_null(prep_client_find(c, ""));
	char longname[PREP_NAME_MAX + 2];
	name_of_len(longname, PREP_NAME_MAX + 1, 'z');
	assert_null(prep_client_find(c, longname));

	/* Close removes the name, which can then be Parsed again with a new query. */
	assert_int_equal(prep_client_remove(c, "S_1"), 0);
	assert_null(prep_client_find(c, "S_1"));
	assert_int_equal(prep_client_remove(c, "S_1"), -ENOENT);
	assert_ptr_equal(prep_client_find(c, "S_2"), b);
	a = add(c, "S_1", "SELECT 42", 0);
	assert_false(prep_hash_equal(a->hash, b->hash));

	prep_client_clear(c);
	assert_int_equal(prep_client_count(c), 0);
	assert_null(prep_client_find(c, "S_1"));
	assert_null(prep_client_find(c, "S_2"));
	add(c, "S_2", "SELECT 1", 0);
	prep_client_free(c);
	prep_client_free(NULL);
}

static void test_client_limits(void **state)
{
	(void)state;
	char name[32];
	struct prep_client *c = prep_client_new(3, 1 << 20);
	assert_non_null(c);
	add(c, "a", "SELECT 1", 0);
	add(c, "b", "SELECT 1", 0);
	add(c, "c", "SELECT 1", 0);
	add(c, "d", "SELECT 1", -EDQUOT);
	add(c, "a", "SELECT 1", -EEXIST); /* "exists" wins over "full": it is what PostgreSQL says */
	assert_int_equal(prep_client_remove(c, "b"), 0);
	add(c, "d", "SELECT 1", 0);
	prep_client_free(c);

	/* The byte budget counts each entry's struct and body. */
	size_t body = strlen("SELECT 1") + 1 + 2;
	size_t one = sizeof(struct prep_stmt) + body;
	c = prep_client_new(1000, 2 * one);
	add(c, "a", "SELECT 1", 0);
	add(c, "b", "SELECT 1", 0);
	add(c, "c", "SELECT 1", -EDQUOT);
	add(c, "c", "", -EDQUOT);
	prep_client_clear(c);
	add(c, "c", "SELECT 1", 0);
	prep_client_free(c);

	c = prep_client_new(0, 1 << 20);
	add(c, "a", "SELECT 1", -EDQUOT);
	prep_client_free(c);

	/* Many names: growth, then deletions in the middle of probe runs keep every other name
	 * findable (backward-shift deletion). */
	c = prep_client_new(1000, (size_t)1 << 30);
	const struct prep_stmt *e[1000];
	for (int i = 0; i < 1000; i++) {
		snprintf(name, sizeof name, "S_%d", i);
		e[i] = add(c, name, "SELECT 1", 0);
	}
	add(c, "S_1000", "SELECT 1", -EDQUOT);
	for (int i = 0; i < 1000; i += 3) {
		snprintf(name, sizeof name, "S_%d", i);
		assert_int_equal(prep_client_remove(c, name), 0);
	}
	for (int i = 0; i < 1000; i++) {
		snprintf(name, sizeof name, "S_%d", i);
		if (i % 3 == 0)
			assert_null(prep_client_find(c, name));
		else
			assert_ptr_equal(prep_client_find(c, name), e[i]);
	}
	assert_int_equal(prep_client_count(c), 1000 - 334);
	prep_client_free(c);
}

/* ---- server LRU ---- */

static struct prep_hash H(uint64_t n)
{
	/* Small lo values on purpose: they share home slots and exercise the probing. */
	return (struct prep_hash){ .hi = n * 0x9e3779b97f4a7c15u, .lo = n % 5 };
}

static void test_server_lru(void **state)
{
	(void)state;
	assert_null(prep_server_new(0));
	struct prep_server *s = prep_server_new(3);
	assert_non_null(s);
	struct prep_hash ev = { 0, 0 };

	assert_false(prep_server_has(s, H(1)));
	assert_false(prep_server_add(s, H(1), &ev));
	assert_false(prep_server_add(s, H(2), &ev));
	assert_false(prep_server_add(s, H(3), &ev));
	assert_int_equal(prep_server_count(s), 3);
	/* Full: the least recently added goes. */
	assert_true(prep_server_add(s, H(4), &ev));
	assert_true(prep_hash_equal(ev, H(1)));
	assert_false(prep_server_has(s, H(1)));
	/* has() bumps: 2 becomes most recent, so 3 is next out. */
	assert_true(prep_server_has(s, H(2)));
	assert_true(prep_server_add(s, H(5), &ev));
	assert_true(prep_hash_equal(ev, H(3)));
	/* Adding a held hash bumps, evicts nothing: now 4 is the oldest. */
	assert_false(prep_server_add(s, H(2), &ev));
	assert_int_equal(prep_server_count(s), 3);
	assert_true(prep_server_add(s, H(6), &ev));
	assert_true(prep_hash_equal(ev, H(4)));
	/* Left: 5, 2, 6 (oldest first). forget frees a slot without evicting. */
	prep_server_forget(s, H(2));
	prep_server_forget(s, H(2));
	assert_int_equal(prep_server_count(s), 2);
	assert_false(prep_server_has(s, H(2)));
	assert_false(prep_server_add(s, H(7), &ev));
	assert_true(prep_server_add(s, H(8), &ev));
	assert_true(prep_hash_equal(ev, H(5)));
	assert_true(prep_server_has(s, H(6)) && prep_server_has(s, H(7)) && prep_server_has(s, H(8)));

	prep_server_forget_all(s);
	assert_int_equal(prep_server_count(s), 0);
	assert_false(prep_server_has(s, H(6)));
	assert_false(prep_server_add(s, H(6), &ev));
	assert_true(prep_server_has(s, H(6)));
	prep_server_free(s);
	prep_server_free(NULL);
}

/* A statement that went stale stays on the server (it holds the name) but is not "had":
 * the relay must close it before preparing it again. Adding it back makes it fresh. */
static void test_server_stale(void **state)
{
	(void)state;
	struct prep_server *s = prep_server_new(3);
	struct prep_hash ev;
	assert_false(prep_server_add(s, H(1), &ev));
	assert_false(prep_server_add(s, H(2), &ev));
	prep_server_mark_stale(s, H(9)); /* not held: nothing */
	assert_false(prep_server_holds(s, H(9)));
	assert_false(prep_server_stale(s, H(9)));

	prep_server_mark_stale(s, H(1));
	assert_false(prep_server_has(s, H(1)));
	assert_true(prep_server_holds(s, H(1)));
	assert_true(prep_server_stale(s, H(1)));
	assert_int_equal(prep_server_count(s), 2); /* still on the server */
	assert_true(prep_server_has(s, H(2)));
	assert_false(prep_server_stale(s, H(2)));

	/* Prepared again (after its Close): fresh, most recently used, nothing evicted. */
	assert_false(prep_server_add(s, H(1), &ev));
	assert_true(prep_server_has(s, H(1)));
	assert_false(prep_server_stale(s, H(1)));
	assert_int_equal(prep_server_count(s), 2);

	/* A stale statement is evicted like any other, and a slot reused for a new hash is not
	 * stale. */
	prep_server_mark_stale(s, H(2));
	assert_false(prep_server_add(s, H(3), &ev));
	assert_true(prep_server_add(s, H(4), &ev));
	assert_true(prep_hash_equal(ev, H(2)));
	assert_false(prep_server_holds(s, H(2)));
	assert_true(prep_server_has(s, H(4)));
	assert_false(prep_server_stale(s, H(4)));
	prep_server_mark_stale(s, H(3));
	prep_server_forget(s, H(3));
	assert_false(prep_server_holds(s, H(3)));
	assert_false(prep_server_add(s, H(3), &ev));
	assert_true(prep_server_has(s, H(3)));
	prep_server_free(s);
}

/* What statements describe: RowDescriptions hash alike whatever their table OIDs, column
 * numbers and formats (a Describe of the portal and of the statement), and differ in a name,
 * a type or a modifier; malformed ones are unknown (0). A server's copy forgets what it
 * described when prepared again; a client entry learns what it was told, by name hash and
 * statement. */
static size_t rowdesc(uint8_t *b, const char *name, uint32_t table, uint32_t type, int32_t typmod, uint16_t fmt)
{
	size_t n = 0, l = strlen(name) + 1;
	b[n++] = 0;
	b[n++] = 1;
	memcpy(b + n, name, l);
	n += l;
	uint8_t f[18] = { (uint8_t)(table >> 24), (uint8_t)(table >> 16), (uint8_t)(table >> 8), (uint8_t)table, 0, 2,
			  (uint8_t)(type >> 24), (uint8_t)(type >> 16), (uint8_t)(type >> 8), (uint8_t)type, 0, 4,
			  (uint8_t)((uint32_t)typmod >> 24), (uint8_t)((uint32_t)typmod >> 16),
			  (uint8_t)((uint32_t)typmod >> 8), (uint8_t)typmod, (uint8_t)(fmt >> 8), (uint8_t)fmt };
	memcpy(b + n, f, sizeof f);
	return n + sizeof f;
}

static void test_descriptions(void **state)
{
	(void)state;
	uint8_t b[64];
	size_t n = rowdesc(b, "a", 16384, 23, -1, 0);
	uint64_t base = prep_desc_rows(b, n);
	assert_true(base != 0);
	assert_true(prep_desc_rows(b, rowdesc(b, "a", 99999, 23, -1, 1)) == base);
	assert_true(prep_desc_rows(b, rowdesc(b, "a", 16384, 20, -1, 0)) != base);
	assert_true(prep_desc_rows(b, rowdesc(b, "b", 16384, 23, -1, 0)) != base);
	assert_true(prep_desc_rows(b, rowdesc(b, "a", 16384, 23, 8, 0)) != base);
	n = rowdesc(b, "a", 16384, 23, -1, 0);
	assert_true(prep_desc_rows(b, n - 1) == 0);
	assert_true(prep_desc_rows(b, 1) == 0);
	b[n] = 0;
	assert_true(prep_desc_rows(b, n + 1) == 0);
	assert_true(prep_desc_rows(NULL, 0) != 0 && prep_desc_rows(NULL, 0) != base);

	const uint8_t p1[] = { 0, 1, 0, 0, 0, 23 }, p2[] = { 0, 1, 0, 0, 0, 20 };
	assert_true(prep_desc_params(p1, sizeof p1) != 0);
	assert_true(prep_desc_params(p1, sizeof p1) != prep_desc_params(p2, sizeof p2));
	assert_true(prep_desc_params(p1, sizeof p1 - 1) == 0);

	struct prep_desc told = { 5, 7 };
	assert_false(prep_desc_differs(told, (struct prep_desc){ 5, 7 }));
	assert_false(prep_desc_differs(told, (struct prep_desc){ 0, 7 }));
	assert_false(prep_desc_differs((struct prep_desc){ 0, 0 }, (struct prep_desc){ 1, 2 }));
	assert_true(prep_desc_differs(told, (struct prep_desc){ 5, 8 }));
	assert_true(prep_desc_differs(told, (struct prep_desc){ 6, 0 }));

	struct prep_server *s = prep_server_new(2);
	struct prep_hash ev;
	assert_false(prep_server_add(s, H(1), &ev));
	prep_server_set_desc(s, H(1), (struct prep_desc){ 0, 7 });
	prep_server_set_desc(s, H(1), (struct prep_desc){ 5, 0 });
	prep_server_set_desc(s, H(9), (struct prep_desc){ 5, 5 }); /* not held: nothing */
	assert_true(prep_server_desc(s, H(1)).params == 5 && prep_server_desc(s, H(1)).rows == 7);
	assert_true(prep_server_desc(s, H(9)).params == 0);
	assert_false(prep_server_add(s, H(1), &ev)); /* prepared again */
	assert_true(prep_server_desc(s, H(1)).params == 0 && prep_server_desc(s, H(1)).rows == 0);
	prep_server_free(s);

	struct prep_client *c = prep_client_new(10, 1 << 20);
	const struct prep_stmt *a = add(c, "S_1", "SELECT 1", 0);
	assert_false(prep_stmt_told(a));
	assert_false(a->placed);
	prep_client_tell(c, a->name_hash, H(3), (struct prep_desc){ 1, 1 }); /* another statement */
	assert_false(prep_stmt_told(a));
	prep_client_tell(c, a->name_hash, a->hash, (struct prep_desc){ 0, 9 });
	assert_true(prep_stmt_told(a) && a->told.rows == 9 && a->told.params == 0);
	prep_stmt_set_placed(a);
	assert_true(a->placed);
	/* Parsed again under the name: told nothing, placed nowhere. */
	assert_int_equal(prep_client_remove(c, "S_1"), 0);
	a = add(c, "S_1", "SELECT 1", 0);
	assert_false(prep_stmt_told(a));
	assert_false(a->placed);
	prep_client_free(c);
}

/* Client names counted per pool: the last drop of a statement's name says so, whichever
 * client held it; clear and free release every name. */
/* A Close whose outcome is not known yet: forgotten at once (the name is free, the pool's count
 * released), kept in order; done frees it, skipped puts it back as it was (and counts it again)
 * unless its Parse failed meanwhile or the name names another statement by then. */
static void test_close_outcomes(void **state)
{
	(void)state;
	struct prep_refs *r = prep_refs_new();
	struct prep_client *c = prep_client_new(1000, 1 << 20);
	assert_non_null(r);
	prep_client_share(c, r);
	const struct prep_stmt *a = add(c, "a", "SELECT 1", 0);
	struct prep_hash ha = a->hash;
	uint64_t na = a->name_hash;
	add(c, "b", "SELECT 2", 0);
	add(c, "d", "SELECT 4", 0);
	struct prep_hash gone;

	/* skipped: back, with the pool's count */
	assert_int_equal(prep_client_close(c, "a", &gone), 1);
	assert_true(prep_hash_equal(gone, ha));
	assert_null(prep_client_find(c, "a"));
	assert_int_equal(prep_refs_count(r, ha), 0);
	assert_string_equal(prep_client_name_of(c, na, ha), "a"); /* for the 42P05's words */
	assert_int_equal(prep_client_close(c, "b", &gone), 1);
	assert_int_equal(prep_client_count(c), 1);
	prep_client_close_skipped(c); /* "a": the oldest */
	assert_non_null(prep_client_find(c, "a"));
	assert_true(prep_hash_equal(prep_client_find(c, "a")->hash, ha));
	assert_int_equal(prep_refs_count(r, ha), 1);
	prep_client_close_done(c); /* "b" */
	assert_null(prep_client_find(c, "b"));
	assert_int_equal(prep_client_count(c), 2);

	/* skipped, but the name was parsed again meanwhile: the newer statement keeps it */
	assert_int_equal(prep_client_close(c, "a", &gone), 1);
	const struct prep_stmt *a2 = add(c, "a", "SELECT 11", 0);
	prep_client_close_skipped(c);
	assert_ptr_equal(prep_client_find(c, "a"), a2);

	/* a failed Parse: its name is forgotten; closed meanwhile, it is not put back */
	prep_client_forget_parse(c, a2->name_hash, a2->hash);
	assert_null(prep_client_find(c, "a"));
	const struct prep_stmt *e = add(c, "e", "SELECT 5", 0);
	struct prep_hash he = e->hash;
	uint64_t ne = e->name_hash;
	assert_int_equal(prep_client_close(c, "e", &gone), 1);
	prep_client_forget_parse(c, ne, he);
	prep_client_close_skipped(c);
	assert_null(prep_client_find(c, "e"));
	assert_int_equal(prep_refs_count(r, he), 0);
	/* another statement's identity forgets nothing */
	prep_client_forget_parse(c, ne, ha);
	assert_non_null(prep_client_find(c, "d"));

	/* outcomes to come when the map goes: freed with it */
	assert_int_equal(prep_client_close(c, "d", &gone), 1);
	prep_client_close_done(c);
	prep_client_close_skipped(c); /* nothing waits: nothing happens */
	assert_int_equal(prep_client_count(c), 0);
	add(c, "f", "SELECT 6", 0);
	assert_int_equal(prep_client_close(c, "f", &gone), 1);
	prep_client_free(c);
	prep_refs_free(r);
}

static void test_refs(void **state)
{
	(void)state;
	struct prep_refs *r = prep_refs_new();
	assert_non_null(r);
	struct prep_client *a = prep_client_new(1000, 1 << 20), *b = prep_client_new(1000, 1 << 20);
	prep_client_share(a, r);
	prep_client_share(b, r);
	const struct prep_stmt *e1 = add(a, "x", "SELECT 1", 0);
	struct prep_hash h1 = e1->hash;
	add(a, "y", "SELECT 1", 0);
	add(b, "x", "SELECT 1", 0);
	struct prep_hash h2 = add(b, "z", "SELECT 2", 0)->hash;
	assert_int_equal(prep_refs_count(r, h1), 3);
	assert_int_equal(prep_refs_count(r, h2), 1);

	struct prep_hash gone = { 0, 0 };
	assert_int_equal(prep_client_drop(a, "x", &gone), 0);
	assert_true(prep_hash_equal(gone, h1));
	assert_int_equal(prep_client_remove(a, "y"), 0);
	assert_int_equal(prep_refs_count(r, h1), 1);
	assert_int_equal(prep_client_drop(a, "x", &gone), -ENOENT);
	assert_int_equal(prep_client_drop(b, "x", &gone), 1);
	assert_true(prep_hash_equal(gone, h1));
	assert_int_equal(prep_refs_count(r, h1), 0);

	/* Many statements: the table grows, deletions keep the rest findable. */
	char name[32], sql[32];
	for (int i = 0; i < 500; i++) {
		snprintf(name, sizeof name, "n%d", i);
		snprintf(sql, sizeof sql, "SELECT %d", i % 250);
		add(a, name, sql, 0);
	}
	assert_int_equal(prep_refs_count(r, h2), 3); /* b's z, a's n2 and n252 */
	for (int i = 0; i < 250; i++) {
		snprintf(name, sizeof name, "n%d", i);
		assert_int_equal(prep_client_drop(a, name, &gone), 0); /* n(i + 250) still names it */
	}
	for (int i = 250; i < 500; i++) {
		snprintf(name, sizeof name, "n%d", i);
		assert_int_equal(prep_client_drop(a, name, &gone), i == 252 ? 0 : 1);
	}
	assert_int_equal(prep_refs_count(r, h2), 1);
	add(a, "again", "SELECT 2", 0);
	assert_int_equal(prep_refs_count(r, h2), 2);
	prep_client_clear(a);
	assert_int_equal(prep_refs_count(r, h2), 1);
	prep_client_free(b);
	assert_int_equal(prep_refs_count(r, h2), 0);

	/* A map without refs counts nothing: a drop is never the last. */
	struct prep_client *c = prep_client_new(10, 1 << 20);
	add(c, "x", "SELECT 1", 0);
	assert_int_equal(prep_client_drop(c, "x", &gone), 0);
	assert_int_equal(prep_refs_count(r, h1), 0);
	prep_client_free(c);
	prep_client_free(a);
	prep_refs_free(r);
	prep_refs_free(NULL);
}

/* Random operations against a plain array kept in LRU order (index 0 = least recent). */
static void test_server_lru_model(void **state)
{
	(void)state;
	enum { CAP = 17, KEYS = 60, OPS = 200000 };
	struct prep_server *s = prep_server_new(CAP);
	assert_non_null(s);
	uint64_t model[CAP];
	int n = 0;
	uint64_t seed = 12345;
	for (int op = 0; op < OPS; op++) {
		seed = seed * 6364136223846793005u + 1442695040888963407u;
		uint64_t k = (seed >> 33) % KEYS;
		int kind = (int)((seed >> 20) % 16);
		int at = -1;
		for (int i = 0; i < n; i++)
			if (model[i] == k)
				at = i;
		if (kind < 6) { /* has */
			assert_int_equal(prep_server_has(s, H(k)), at >= 0);
			if (at >= 0) {
				memmove(model + at, model + at + 1, (size_t)(n - at - 1) * sizeof *model);
				model[n - 1] = k;
			}
		} else if (kind < 14) { /* add */
			struct prep_hash ev;
			bool evicted = prep_server_add(s, H(k), &ev);
			if (at >= 0) {
				assert_false(evicted);
				memmove(model + at, model + at + 1, (size_t)(n - at - 1) * sizeof *model);
				model[n - 1] = k;
			} else if (n == CAP) {
				assert_true(evicted);
				assert_true(prep_hash_equal(ev, H(model[0])));
				memmove(model, model + 1, (size_t)(n - 1) * sizeof *model);
				model[n - 1] = k;
			} else {
				assert_false(evicted);
				model[n++] = k;
			}
		} else if (kind < 15) { /* forget */
			prep_server_forget(s, H(k));
			if (at >= 0) {
				memmove(model + at, model + at + 1, (size_t)(n - at - 1) * sizeof *model);
				n--;
			}
		} else if ((seed >> 40) % 64 == 0) {
			prep_server_forget_all(s);
			n = 0;
		}
		assert_int_equal(prep_server_count(s), n);
	}
	prep_server_free(s);
}

/* DEALLOCATE of a protocol-prepared name (pool/prepared.c, moved out of relay.c's scan): tusk
 * answers it from the client's map; anything else goes on to the server. */
static void test_local_deallocate(void **state)
{
	(void)state;
	struct prep_refs *refs = prep_refs_new();
	struct prep_client *c = prep_client_new(1000, 1 << 20);
	struct prep_server *s = prep_server_new(100);
	struct prep_hash evicted;
	assert_non_null(refs);
	assert_non_null(c);
	assert_non_null(s);
	prep_client_share(c, refs);
	const struct prep_stmt *a = add(c, "s_1", "SELECT 1", 0);
	struct prep_hash h = a->hash;
	(void)prep_server_add(s, h, &evicted);
	add(c, "s_2", "SELECT 2", 0);
#define DEALLOC(pc, ps, q) prep_local_deallocate(pc, ps, q, strlen(q))
	/* Not a lone DEALLOCATE, or a name tusk does not hold: the server answers. */
	assert_null(DEALLOC(c, s, "SELECT 1"));
	assert_null(DEALLOC(c, s, "DEALLOCATE s_1; SELECT 1"));
	assert_null(DEALLOC(c, s, "DEALLOCATE unknown"));
	assert_null(DEALLOC(NULL, NULL, "DEALLOCATE s_1"));
	assert_non_null(prep_client_find(c, "s_1"));
	/* Unquoted, the name folds to lower case as PostgreSQL's does; the last name of its
	 * text in the pool: the server's copy goes stale. */
	assert_string_equal(DEALLOC(c, s, "  deallocate S_1"), "DEALLOCATE");
	assert_null(prep_client_find(c, "s_1"));
	assert_true(prep_server_stale(s, h));
	assert_string_equal(DEALLOC(c, NULL, "DEALLOCATE ALL"), "DEALLOCATE ALL");
	assert_int_equal(prep_client_count(c), 0);
	assert_string_equal(DEALLOC(NULL, NULL, "DEALLOCATE ALL"), "DEALLOCATE ALL"); /* no map yet */
#undef DEALLOC
	prep_server_free(s);
	prep_client_free(c);
	prep_refs_free(refs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_identity),
		cmocka_unit_test(test_read_parse),
		cmocka_unit_test(test_read_parse_malformed),
		cmocka_unit_test(test_put_parse),
		cmocka_unit_test(test_bind_rewrite),
		cmocka_unit_test(test_bind_head_split),
		cmocka_unit_test(test_bind_head_malformed),
		cmocka_unit_test(test_targets),
		cmocka_unit_test(test_enospc_unchanged),
		cmocka_unit_test(test_client_map),
		cmocka_unit_test(test_client_null_map),
		cmocka_unit_test(test_client_limits),
		cmocka_unit_test(test_server_lru),
		cmocka_unit_test(test_server_lru_model),
		cmocka_unit_test(test_server_stale),
		cmocka_unit_test(test_refs),
		cmocka_unit_test(test_close_outcomes),
		cmocka_unit_test(test_descriptions),
		cmocka_unit_test(test_local_deallocate),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
