/* libFuzzer target for the wire codec: the input is parsed once as a startup-phase packet and
 * once as a stream of typed server messages. Besides crashes, it checks what the parsers
 * promise: results in range, pointers inside the input, and that what a builder writes from a
 * parsed message reads back the same. Every parser sees an exact-size heap copy of its bytes,
 * so ASan flags a read even one byte past the range it was given. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto.h"
#include "util/buf.h"

/* Largest typed message the harness accepts: big enough for any input libFuzzer makes here. */
#define FUZZ_MAX_MSG (1u << 16)

static void check(int ok)
{
	if (!ok)
		abort();
}

static uint8_t *dup_exact(const uint8_t *p, size_t n)
{
	uint8_t *q = malloc(n ? n : 1);
	check(q != NULL);
	if (n)
		memcpy(q, p, n);
	return q;
}

static int inside(const void *p, const uint8_t *base, size_t len)
{
	const uint8_t *q = p;
	return q >= base && q < base + len && memchr(q, 0, (size_t)(base + len - q)) != NULL;
}

static struct buf *scratch(void)
{
	static struct buf b;
	static int ready;
	if (!ready) {
		check(buf_init(&b, 2 * PROTO_STARTUP_MAX) == 0);
		ready = 1;
	}
	buf_reset(&b);
	return &b;
}

static void fuzz_startup(const uint8_t *data, size_t size)
{
	static struct proto_startup st;
	ssize_t n = proto_parse_startup(data, size, &st);
	if (n <= 0)
		return;
	check(n >= 8 && (size_t)n <= size && (size_t)n <= PROTO_STARTUP_MAX);

	/* The packet alone must parse the same, and every shorter prefix must ask for more. */
	uint8_t *pkt = dup_exact(data, (size_t)n);
	check(proto_parse_startup(pkt, (size_t)n, &st) == n);
	for (size_t i = 0; i < (size_t)n && i < 16; i++)
		check(proto_parse_startup(pkt, i, &st) == 0);
	check(proto_parse_startup(pkt, (size_t)n - 1, &st) == 0);
	proto_parse_startup(pkt, (size_t)n, &st);

	if (st.kind == PROTO_STARTUP_MESSAGE) {
		check(st.nparams >= 1 && st.nparams <= PROTO_STARTUP_MAX_PARAMS);
		check(st.user != NULL && st.user[0] != '\0' && inside(st.user, pkt, (size_t)n));
		check(st.database == NULL || inside(st.database, pkt, (size_t)n));
		for (int i = 0; i < st.nparams; i++)
			check(inside(st.params[i].name, pkt, (size_t)n) && inside(st.params[i].value, pkt, (size_t)n));

		/* Rebuilt from its pairs, the packet is the same size and yields the same pairs. */
		struct buf *b = scratch();
		check(proto_put_startup(b, st.params, st.nparams) == 0);
		check(buf_len(b) == (size_t)n);
		static struct proto_startup again;
		check(proto_parse_startup(buf_head(b), buf_len(b), &again) == n);
		check(again.nparams == st.nparams);
		for (int i = 0; i < st.nparams; i++) {
			check(strcmp(again.params[i].name, st.params[i].name) == 0);
			check(strcmp(again.params[i].value, st.params[i].value) == 0);
		}
	} else if (st.kind == PROTO_STARTUP_CANCEL) {
		struct buf *b = scratch();
		check(proto_put_cancel_request(b, st.cancel_pid, st.cancel_key) == 0);
		check(buf_len(b) == 16 && memcmp(buf_head(b), pkt, 16) == 0);
	} else {
		check(n == 8);
	}
	free(pkt);
}

/* Reference for proto_sasl_has_mechanism on a list parse_auth accepted (so it is terminated):
 * compare name by name up to the empty one. */
static bool list_has(const uint8_t *data, size_t len, const char *mech)
{
	size_t off = 0;
	while (off < len && data[off] != 0) {
		const char *name = (const char *)data + off;
		if (strcmp(name, mech) == 0)
			return true;
		off += strlen(name) + 1;
	}
	return false;
}

/* The message's own bytes (type, length, body) rebuilt by a builder must match exactly. */
static void check_rebuilt(const struct buf *b, const uint8_t *msg, size_t msg_len)
{
	check(buf_len(b) == msg_len && memcmp(buf_head(b), msg, msg_len) == 0);
}

static void fuzz_body(const uint8_t *msg, uint8_t type, const uint8_t *body, size_t len)
{
	switch (type) {
	case 'E':
	case 'N': {
		struct proto_error_fields f;
		if (proto_parse_error(body, len, &f) != 0)
			return;
		const char *fields[] = { f.severity, f.sqlstate, f.message, f.detail, f.hint };
		for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
			check(fields[i] == NULL || inside(fields[i], body, len));
		if (f.severity && f.sqlstate && f.message) {
			struct proto_error_fields g;
			struct buf *b = scratch();
			if (proto_put_error(b, f.severity, f.sqlstate, f.message, f.detail, f.hint) != 0)
				return;
			check(proto_parse_error(buf_head(b) + PROTO_HDR_LEN, buf_len(b) - PROTO_HDR_LEN, &g) == 0);
			check(strcmp(g.severity, f.severity) == 0 && strcmp(g.message, f.message) == 0);
			check((g.detail == NULL) == (f.detail == NULL) && (g.hint == NULL) == (f.hint == NULL));
		}
		break;
	}
	case 'S': {
		const char *name, *value;
		if (proto_parse_parameter_status(body, len, &name, &value) != 0)
			return;
		check(inside(name, body, len) && inside(value, body, len));
		struct buf *b = scratch();
		check(proto_put_parameter_status(b, name, value) == 0);
		check_rebuilt(b, msg, PROTO_HDR_LEN + len);
		break;
	}
	case 'K': {
		uint32_t pid, key;
		if (proto_parse_backend_key(body, len, &pid, &key) != 0)
			return;
		struct buf *b = scratch();
		check(proto_put_backend_key(b, pid, key) == 0);
		check_rebuilt(b, msg, PROTO_HDR_LEN + len);
		break;
	}
	case 'R': {
		struct proto_auth a;
		if (proto_parse_auth(body, len, &a) != 0)
			return;
		check(a.data == body + 4 && a.data_len == len - 4);
		if (a.code == PROTO_AUTH_SASL) {
			check(proto_sasl_has_mechanism(a.data, a.data_len, "SCRAM-SHA-256")
			      == list_has(a.data, a.data_len, "SCRAM-SHA-256"));
			check(!proto_sasl_has_mechanism(a.data, a.data_len, ""));
		}
		if (a.code == PROTO_AUTH_OK) {
			struct buf *b = scratch();
			check(proto_put_auth_ok(b) == 0);
			check_rebuilt(b, msg, PROTO_HDR_LEN + len);
		}
		break;
	}
	default: {
		/* Any other message: walk it with the reader, which must stop at the end, never past. */
		struct proto_reader r;
		proto_reader_init(&r, body, len);
		while (!r.err) {
			uint8_t op = proto_get_u8(&r);
			switch (op % 5) {
			case 0: proto_get_u16(&r); break;
			case 1: proto_get_u32(&r); break;
			case 2: {
				const char *str = proto_get_cstr(&r);
				check((str == NULL) == r.err);
				break;
			}
			case 3: proto_get_bytes(&r, op >> 3); break;
			default: break;
			}
			check(r.off <= r.len);
		}
		break;
	}
	}
}

static void fuzz_typed(const uint8_t *data, size_t size)
{
	size_t off = 0;
	while (off < size) {
		struct proto_hdr h;
		ssize_t n = proto_read_hdr(data + off, size - off, FUZZ_MAX_MSG, &h);
		if (n <= 0)
			return;
		check(n == PROTO_HDR_LEN && h.len >= 4 && h.len <= FUZZ_MAX_MSG);
		size_t body_len = h.len - 4;
		if (body_len > size - off - PROTO_HDR_LEN)
			return;
		uint8_t *msg = dup_exact(data + off, PROTO_HDR_LEN + body_len);
		fuzz_body(msg, h.type, msg + PROTO_HDR_LEN, body_len);
		free(msg);
		off += PROTO_HDR_LEN + body_len;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_startup(data, size);
	fuzz_typed(data, size);
	return 0;
}
