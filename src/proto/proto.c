/* PostgreSQL v3 wire codec (see proto.h). Everything here reads bytes a peer chose, so every
 * length is checked against what is present and against a limit before it is used, and no
 * pointer is formed outside the range the caller handed in. Builders compute the exact size
 * of a message first and write nothing unless all of it fits. */
#include "proto/proto.h"

#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

const char *proto_strerror(int err)
{
	switch (err) {
	case PROTO_ETOOSHORT:
		return "message length below its minimum";
	case PROTO_ETOOLONG:
		return "message length above the allowed maximum";
	case PROTO_EVERSION:
		return "unsupported protocol version or request code";
	case PROTO_EMALFORMED:
		return "malformed message";
	default:
		return "unknown protocol error";
	}
}

/* The wire is big-endian regardless of the host; byte-wise access also avoids unaligned loads. */
static uint32_t load_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}


/* ---- reader ---- */

/* A NULL body of length 0 is legal for the caller, but pointer arithmetic and memchr on NULL
 * are not: give the reader a real (empty) object to point at instead. */
static const uint8_t empty_body[1];

void proto_reader_init(struct proto_reader *r, const void *body, size_t len)
{
	r->p = body ? body : empty_body;
	r->len = body ? len : 0;
	r->off = 0;
	r->err = false;
}

/* Once a read has failed, later reads fail too: a caller checking err at the end must never
 * see values read from a position the failed read did not advance past. */
static bool reader_has(struct proto_reader *r, size_t n)
{
	if (r->err || n > r->len - r->off) {
		r->err = true;
		return false;
	}
	return true;
}

uint8_t proto_get_u8(struct proto_reader *r)
{
	if (!reader_has(r, 1))
		return 0;
	return r->p[r->off++];
}

uint16_t proto_get_u16(struct proto_reader *r)
{
	if (!reader_has(r, 2))
		return 0;
	uint16_t v = (uint16_t)(r->p[r->off] << 8 | r->p[r->off + 1]);
	r->off += 2;
	return v;
}

uint32_t proto_get_u32(struct proto_reader *r)
{
	if (!reader_has(r, 4))
		return 0;
	uint32_t v = load_be32(r->p + r->off);
	r->off += 4;
	return v;
}

uint64_t proto_get_u64(struct proto_reader *r)
{
	if (!reader_has(r, 8))
		return 0;
	uint64_t v = (uint64_t)load_be32(r->p + r->off) << 32 | load_be32(r->p + r->off + 4);
	r->off += 8;
	return v;
}

const char *proto_get_cstr_n(struct proto_reader *r, size_t *len)
{
	*len = 0;
	if (r->err)
		return NULL;
	const uint8_t *s = r->p + r->off;
	const uint8_t *nul = memchr(s, 0, r->len - r->off);
	if (!nul) {
		r->err = true;
		return NULL;
	}
	*len = (size_t)(nul - s);
	r->off += *len + 1;
	return (const char *)s;
}

const char *proto_get_cstr(struct proto_reader *r)
{
	size_t len;
	return proto_get_cstr_n(r, &len);
}

const uint8_t *proto_get_bytes(struct proto_reader *r, size_t n)
{
	if (!reader_has(r, n))
		return NULL;
	const uint8_t *s = r->p + r->off;
	r->off += n;
	return s;
}

/* ---- startup phase ---- */

static bool is_param(const char *name, const char *want)
{
	return strcmp(name, want) == 0;
}

/* Body of a StartupMessage: name/value pairs, then one NUL that must be the packet's last byte
 * (PostgreSQL rejects trailing bytes too, and tusk must not accept what the server would not). */
static ssize_t parse_startup_params(const uint8_t *body, size_t len, struct proto_startup *out)
{
	struct proto_reader r;
	proto_reader_init(&r, body, len);

	for (;;) {
		if (proto_remaining(&r) == 0)
			return PROTO_EMALFORMED; /* no terminator */
		if (r.p[r.off] == 0) {
			if (proto_remaining(&r) != 1)
				return PROTO_EMALFORMED; /* bytes after the terminator */
			break;
		}
		if (out->nparams == PROTO_STARTUP_MAX_PARAMS)
			return PROTO_EMALFORMED;
		const char *name = proto_get_cstr(&r);
		const char *value = proto_get_cstr(&r);
		if (r.err)
			return PROTO_EMALFORMED; /* name without value, or unterminated string */

		/* A second "user" or "database" would let tusk authenticate and route by one value
		 * while a server that sees all pairs (last one wins there) uses the other. */
		if (is_param(name, "user")) {
			if (out->user)
				return PROTO_EMALFORMED;
			out->user = value;
		} else if (is_param(name, "database")) {
			if (out->database)
				return PROTO_EMALFORMED;
			out->database = value;
		}
		out->params[out->nparams].name = name;
		out->params[out->nparams].value = value;
		out->nparams++;
	}

	/* PostgreSQL treats an empty user as missing and an empty database as absent. */
	if (!out->user || out->user[0] == '\0')
		return PROTO_EMALFORMED;
	if (out->database && out->database[0] == '\0')
		out->database = NULL;
	return 0;
}

ssize_t proto_parse_startup(const uint8_t *buf, size_t len, struct proto_startup *out)
{
	/* The length word alone decides whether to keep reading: a client announcing a huge or
	 * impossible packet is rejected before tusk buffers any of it. */
	if (len < 4)
		return 0;
	uint32_t plen = load_be32(buf);
	if (plen < 8)
		return PROTO_ETOOSHORT;
	if (plen > PROTO_STARTUP_MAX)
		return PROTO_ETOOLONG;
	if (len < plen)
		return 0;

	uint32_t code = load_be32(buf + 4);
	out->version = code;
	out->nparams = 0;
	out->user = NULL;
	out->database = NULL;
	out->cancel_pid = 0;
	out->cancel_key = 0;

	switch (code) {
	case PROTO_CODE_SSL:
	case PROTO_CODE_GSSENC:
		if (plen != 8)
			return PROTO_EMALFORMED;
		out->kind = code == PROTO_CODE_SSL ? PROTO_STARTUP_SSL : PROTO_STARTUP_GSSENC;
		return (ssize_t)plen;
	case PROTO_CODE_CANCEL:
		if (plen != 16)
			return PROTO_EMALFORMED;
		out->kind = PROTO_STARTUP_CANCEL;
		out->cancel_pid = load_be32(buf + 8);
		out->cancel_key = load_be32(buf + 12);
		return (ssize_t)plen;
	default:
		break;
	}

	/* Minor versions only add optional features the server negotiates down, so any 3.x is a
	 * protocol-3 client; 2.0 and the request codes above are the only other things seen. */
	if (code >> 16 != PROTO_VERSION_3 >> 16)
		return PROTO_EVERSION;
	out->kind = PROTO_STARTUP_MESSAGE;
	ssize_t rc = parse_startup_params(buf + 8, plen - 8, out);
	if (rc < 0)
		return rc;
	return (ssize_t)plen;
}

/* ---- typed messages ---- */

int proto_check_query_body(const uint8_t *body, size_t len)
{
	const uint8_t *nul = len ? memchr(body, 0, len) : NULL;
	if (!nul)
		return PROTO_EMALFORMED;
	return nul == body + len - 1 ? 0 : PROTO_ETOOLONG;
}

int proto_parse_error(const uint8_t *body, size_t len, struct proto_error_fields *out)
{
	struct proto_reader r;
	const char *severity_v = NULL;
	const char *severity_s = NULL;

	proto_reader_init(&r, body, len);
	memset(out, 0, sizeof(*out));
	for (;;) {
		uint8_t code = proto_get_u8(&r);
		if (r.err)
			return PROTO_EMALFORMED; /* no terminating zero byte */
		if (code == 0)
			break;
		const char *value = proto_get_cstr(&r);
		if (r.err)
			return PROTO_EMALFORMED;
		switch (code) {
		case 'S': severity_s = value; break;
		case 'V': severity_v = value; break;
		case 'C': out->sqlstate = value; break;
		case 'M': out->message = value; break;
		case 'D': out->detail = value; break;
		case 'H': out->hint = value; break;
		default: break; /* other fields are for the client, tusk relays them untouched */
		}
	}
	if (proto_remaining(&r) != 0)
		return PROTO_EMALFORMED;
	out->severity = severity_s ? severity_s : severity_v;
	return 0;
}

int proto_parse_parameter_status(const uint8_t *body, size_t len, const char **name, const char **value)
{
	struct proto_reader r;
	proto_reader_init(&r, body, len);
	const char *n = proto_get_cstr(&r);
	const char *v = proto_get_cstr(&r);
	if (r.err || proto_remaining(&r) != 0 || n[0] == '\0')
		return PROTO_EMALFORMED;
	*name = n;
	*value = v;
	return 0;
}

int proto_parse_backend_key(const uint8_t *body, size_t len, uint32_t *pid, uint32_t *key)
{
	/* Protocol 3.0 keys are exactly 4 bytes; tusk asks servers for 3.0 (proto_put_startup). */
	if (len != 8)
		return PROTO_EMALFORMED;
	*pid = load_be32(body);
	*key = load_be32(body + 4);
	return 0;
}

/* A well-formed list is one or more NUL-terminated names followed by an empty name that ends
 * the body exactly. Returns false for anything else. */
static bool sasl_list_valid(const uint8_t *data, size_t len)
{
	struct proto_reader r;
	proto_reader_init(&r, data, len);
	size_t count = 0;
	for (;;) {
		const char *mech = proto_get_cstr(&r);
		if (r.err)
			return false;
		if (mech[0] == '\0')
			break;
		count++;
	}
	return count > 0 && proto_remaining(&r) == 0;
}

int proto_parse_auth(const uint8_t *body, size_t len, struct proto_auth *out)
{
	if (len < 4)
		return PROTO_EMALFORMED;
	uint32_t code = load_be32(body);
	size_t data_len = len - 4;

	/* Check the fixed sizes of the requests tusk acts on, so callers can trust data_len;
	 * other codes pass through and are refused by whoever decides which methods are allowed. */
	switch (code) {
	case PROTO_AUTH_OK:
	case PROTO_AUTH_CLEARTEXT:
		if (data_len != 0)
			return PROTO_EMALFORMED;
		break;
	case PROTO_AUTH_MD5:
		if (data_len != 4)
			return PROTO_EMALFORMED;
		break;
	case PROTO_AUTH_SASL:
		if (!sasl_list_valid(body + 4, data_len))
			return PROTO_EMALFORMED;
		break;
	default:
		break;
	}
	out->code = code;
	out->data = body + 4;
	out->data_len = data_len;
	return 0;
}

bool proto_sasl_has_mechanism(const uint8_t *data, size_t len, const char *mech)
{
	struct proto_reader r;
	proto_reader_init(&r, data, len);
	for (;;) {
		const char *m = proto_get_cstr(&r);
		if (r.err || m[0] == '\0')
			return false;
		if (strcmp(m, mech) == 0)
			return true;
	}
}

/* ---- builders ---- */

/* The wire's length words are signed 32-bit: a message whose length cannot be written is
 * treated like one that does not fit, since no buffer of tusk's could hold it anyway. */
#define PROTO_BUILD_MAX ((size_t)INT32_MAX)

/* Room for exactly n bytes at the tail, or NULL with b untouched. Compacting only once the
 * message is known to fit keeps "unchanged on failure" true for start/end as well. */
static uint8_t *reserve(struct buf *b, size_t n)
{
	if (n > PROTO_BUILD_MAX || n > b->cap - buf_len(b))
		return NULL;
	if (n > buf_room(b))
		buf_compact(b);
	return buf_tail(b);
}

static uint8_t *put_u8(uint8_t *p, uint8_t v)
{
	*p = v;
	return p + 1;
}

static uint8_t *put_mem(uint8_t *p, const void *src, size_t n)
{
	if (n)
		memcpy(p, src, n);
	return p + n;
}

static uint8_t *put_cstr(uint8_t *p, const char *s)
{
	return put_mem(p, s, strlen(s) + 1);
}

/* Opens a typed message of total size n (type byte included); returns where the body goes. */
static uint8_t *begin_typed(struct buf *b, uint8_t type, size_t n)
{
	uint8_t *p = reserve(b, n);
	if (!p)
		return NULL;
	p = put_u8(p, type);
	return proto_store_be32(p, (uint32_t)(n - 1));
}

/* Commits the n bytes a builder wrote; p is where its writing ended, which must be n bytes
 * past the tail or the size computation and the writes disagree. */
static int finish(struct buf *b, const uint8_t *p, size_t n)
{
	assert(p == buf_tail(b) + n);
	(void)p;
	buf_produce(b, n);
	return 0;
}

static size_t cstr_size(const char *s)
{
	return strlen(s) + 1;
}

static int put_error_or_notice(struct buf *b, uint8_t type, const char *severity, const char *sqlstate,
			       const char *message, const char *detail, const char *hint)
{
	/* 'S' is the localized severity, 'V' the fixed one clients parse; tusk only speaks English. */
	size_t n = PROTO_HDR_LEN + 2 * (1 + cstr_size(severity)) + 1 + cstr_size(sqlstate)
		   + 1 + cstr_size(message) + 1;
	if (detail)
		n += 1 + cstr_size(detail);
	if (hint)
		n += 1 + cstr_size(hint);

	uint8_t *p = begin_typed(b, type, n);
	if (!p)
		return -ENOSPC;
	p = put_cstr(put_u8(p, 'S'), severity);
	p = put_cstr(put_u8(p, 'V'), severity);
	p = put_cstr(put_u8(p, 'C'), sqlstate);
	p = put_cstr(put_u8(p, 'M'), message);
	if (detail)
		p = put_cstr(put_u8(p, 'D'), detail);
	if (hint)
		p = put_cstr(put_u8(p, 'H'), hint);
	p = put_u8(p, 0);
	return finish(b, p, n);
}

int proto_put_error(struct buf *b, const char *severity, const char *sqlstate,
		    const char *message, const char *detail, const char *hint)
{
	return put_error_or_notice(b, 'E', severity, sqlstate, message, detail, hint);
}

int proto_put_notice(struct buf *b, const char *severity, const char *sqlstate,
		     const char *message, const char *detail, const char *hint)
{
	return put_error_or_notice(b, 'N', severity, sqlstate, message, detail, hint);
}

int proto_put_parameter_status(struct buf *b, const char *name, const char *value)
{
	size_t n = PROTO_HDR_LEN + cstr_size(name) + cstr_size(value);
	uint8_t *p = begin_typed(b, 'S', n);
	if (!p)
		return -ENOSPC;
	p = put_cstr(p, name);
	p = put_cstr(p, value);
	return finish(b, p, n);
}

int proto_put_negotiate_version(struct buf *b, uint32_t minor, const char *const *options, int noptions)
{
	size_t n = PROTO_HDR_LEN + 8;
	for (int i = 0; i < noptions; i++)
		n += cstr_size(options[i]);
	uint8_t *p = begin_typed(b, 'v', n);
	if (!p)
		return -ENOSPC;
	p = proto_store_be32(p, minor);
	p = proto_store_be32(p, (uint32_t)noptions);
	for (int i = 0; i < noptions; i++)
		p = put_cstr(p, options[i]);
	return finish(b, p, n);
}

int proto_put_backend_key(struct buf *b, uint32_t pid, uint32_t key)
{
	size_t n = PROTO_HDR_LEN + 8;
	uint8_t *p = begin_typed(b, 'K', n);
	if (!p)
		return -ENOSPC;
	p = proto_store_be32(p, pid);
	p = proto_store_be32(p, key);
	return finish(b, p, n);
}

int proto_put_ready(struct buf *b, uint8_t status)
{
	size_t n = PROTO_HDR_LEN + 1;
	uint8_t *p = begin_typed(b, 'Z', n);
	if (!p)
		return -ENOSPC;
	p = put_u8(p, status);
	return finish(b, p, n);
}

int proto_put_auth_ok(struct buf *b)
{
	size_t n = PROTO_HDR_LEN + 4;
	uint8_t *p = begin_typed(b, 'R', n);
	if (!p)
		return -ENOSPC;
	p = proto_store_be32(p, PROTO_AUTH_OK);
	return finish(b, p, n);
}

int proto_put_parts(struct buf *b, uint8_t type, size_t declared_len, const struct proto_part *parts, int nparts)
{
	size_t body = 0;
	for (int i = 0; i < nparts; i++)
		body += parts[i].n;
	size_t len = declared_len ? declared_len : 4 + body;
	if (len > PROTO_BUILD_MAX || len < 4 + body)
		return -EMSGSIZE;
	size_t n = PROTO_HDR_LEN + body;
	uint8_t *p = reserve(b, n);
	if (!p)
		return -ENOSPC;
	p = proto_store_be32(put_u8(p, type), (uint32_t)len);
	for (int i = 0; i < nparts; i++)
		p = put_mem(p, parts[i].p, parts[i].n);
	buf_produce(b, n);
	return 0;
}

int proto_put_auth_request(struct buf *b, uint32_t code, const void *data, size_t len)
{
	if (len > PROTO_STARTUP_MAX)
		return -ENOSPC;
	size_t n = PROTO_HDR_LEN + 4 + len;
	uint8_t *p = begin_typed(b, 'R', n);
	if (!p)
		return -ENOSPC;
	p = proto_store_be32(p, code);
	p = put_mem(p, data, len);
	return finish(b, p, n);
}

int proto_put_startup(struct buf *b, const struct proto_param *params, int nparams)
{
	size_t n = 8 + 1;
	for (int i = 0; i < nparams; i++)
		n += cstr_size(params[i].name) + cstr_size(params[i].value);
	/* Never build what tusk's own parser (and so, near enough, a server) would reject. */
	if (n > PROTO_STARTUP_MAX)
		return -ENOSPC;

	uint8_t *p = reserve(b, n);
	if (!p)
		return -ENOSPC;
	p = proto_store_be32(p, (uint32_t)n);
	p = proto_store_be32(p, PROTO_VERSION_3);
	for (int i = 0; i < nparams; i++) {
		p = put_cstr(p, params[i].name);
		p = put_cstr(p, params[i].value);
	}
	p = put_u8(p, 0);
	return finish(b, p, n);
}

int proto_put_cancel_request(struct buf *b, uint32_t pid, uint32_t key)
{
	size_t n = 16;
	uint8_t *p = reserve(b, n);
	if (!p)
		return -ENOSPC;
	p = proto_store_be32(p, (uint32_t)n);
	p = proto_store_be32(p, PROTO_CODE_CANCEL);
	p = proto_store_be32(p, pid);
	p = proto_store_be32(p, key);
	return finish(b, p, n);
}

int proto_put_query(struct buf *b, const char *sql)
{
	size_t n = PROTO_HDR_LEN + cstr_size(sql);
	uint8_t *p = begin_typed(b, 'Q', n);
	if (!p)
		return -ENOSPC;
	p = put_cstr(p, sql);
	return finish(b, p, n);
}

int proto_put_command_complete(struct buf *b, const char *tag)
{
	size_t n = PROTO_HDR_LEN + cstr_size(tag);
	uint8_t *p = begin_typed(b, 'C', n);
	if (!p)
		return -ENOSPC;
	p = put_cstr(p, tag);
	return finish(b, p, n);
}

int proto_put_terminate(struct buf *b)
{
	size_t n = PROTO_HDR_LEN;
	uint8_t *p = begin_typed(b, 'X', n);
	if (!p)
		return -ENOSPC;
	return finish(b, p, n);
}

int proto_put_password(struct buf *b, const char *password)
{
	size_t n = PROTO_HDR_LEN + cstr_size(password);
	uint8_t *p = begin_typed(b, 'p', n);
	if (!p)
		return -ENOSPC;
	p = put_cstr(p, password);
	return finish(b, p, n);
}

int proto_put_sasl_initial(struct buf *b, const char *mechanism, const void *data, size_t len)
{
	if (len > PROTO_BUILD_MAX)
		return -ENOSPC;
	size_t n = PROTO_HDR_LEN + cstr_size(mechanism) + 4 + len;
	uint8_t *p = begin_typed(b, 'p', n);
	if (!p)
		return -ENOSPC;
	p = put_cstr(p, mechanism);
	p = proto_store_be32(p, (uint32_t)len);
	p = put_mem(p, data, len);
	return finish(b, p, n);
}

int proto_put_sasl_response(struct buf *b, const void *data, size_t len)
{
	if (len > PROTO_BUILD_MAX)
		return -ENOSPC;
	size_t n = PROTO_HDR_LEN + len;
	uint8_t *p = begin_typed(b, 'p', n);
	if (!p)
		return -ENOSPC;
	p = put_mem(p, data, len);
	return finish(b, p, n);
}
