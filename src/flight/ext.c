/* Reading the cache's extended-protocol requests (ext.h). Every length and count comes from
 * the network: each is checked against the bytes that are really there before it is used. */
#include "flight/ext.h"

#include <string.h>
#include <strings.h>

#include "proto/proto.h"

#define NAME_MAX_LEN 63 /* NAMEDATALEN - 1, as prepared.h */

struct msg {
	uint8_t type;
	struct proto_reader r; /* its body */
};

/* The next whole message at *p, or false when the bytes end inside it. */
static bool next(const uint8_t **p, const uint8_t *end, struct msg *out)
{
	struct proto_hdr h;
	size_t avail = (size_t)(end - *p);
	if (proto_read_hdr(*p, avail, UINT32_MAX, &h) <= 0 || avail - 1 < h.len)
		return false;
	out->type = h.type;
	proto_reader_init(&out->r, *p + PROTO_HDR_LEN, h.len - 4);
	*p += 1 + (size_t)h.len;
	return true;
}

bool flight_ext_parse_body(const uint8_t *rest, size_t len, const char **query, size_t *query_len,
			   const uint8_t **types, uint16_t *ntypes)
{
	struct proto_reader r;

	proto_reader_init(&r, rest, len);
	*query = proto_get_cstr_n(&r, query_len);
	*ntypes = proto_get_u16(&r);
	if (r.err || proto_remaining(&r) != (size_t)*ntypes * 4)
		return false;
	*types = proto_reader_pos(&r);
	return true;
}

/* Format codes: a count (in *count), then that many of 0 (text) or 1 (binary). */
static bool formats(struct proto_reader *r, size_t *count)
{
	*count = proto_get_u16(r);
	for (size_t i = 0; i < *count && !r->err; i++)
		if (proto_get_u16(r) > 1)
			return false;
	return !r->err;
}

static bool bind_rest(struct proto_reader r)
{
	size_t nfmt, nres;
	if (!formats(&r, &nfmt))
		return false;
	size_t n = proto_get_u16(&r);
	if (r.err)
		return false;
	/* As PostgreSQL: no codes, one for all, or one per parameter. */
	if (nfmt > 1 && nfmt != n)
		return false;
	for (size_t i = 0; i < n; i++) {
		uint32_t len = proto_get_u32(&r);
		if (r.err)
			return false;
		if (len == UINT32_MAX)
			continue; /* NULL */
		if (len > INT32_MAX || !proto_get_bytes(&r, len))
			return false;
	}
	return formats(&r, &nres) && proto_remaining(&r) == 0;
}

bool flight_ext_read(const uint8_t *m, size_t avail, struct flight_ext *out)
{
	const uint8_t *p = m, *end = m + avail;
	struct msg x;
	const char *s;
	size_t n;

	memset(out, 0, sizeof(*out));
	if (!next(&p, end, &x))
		return false;
	if (x.type == 'P') {
		out->stmt = proto_get_cstr_n(&x.r, &out->stmt_len);
		if (x.r.err || out->stmt_len > NAME_MAX_LEN)
			return false;
		out->parse_rest = proto_reader_pos(&x.r);
		out->parse_rest_len = proto_remaining(&x.r);
		if (!flight_ext_parse_body(out->parse_rest, out->parse_rest_len, &out->query, &out->query_len,
					   &out->types, &out->ntypes))
			return false;
		out->has_parse = true;
		if (!next(&p, end, &x))
			return false;
	}
	if (x.type != 'B')
		return false;
	(void)proto_get_cstr_n(&x.r, &n); /* the portal: the unnamed one only */
	if (x.r.err || n != 0)
		return false;
	s = proto_get_cstr_n(&x.r, &n);
	if (x.r.err || n > NAME_MAX_LEN)
		return false;
	if (out->has_parse && (n != out->stmt_len || memcmp(s, out->stmt, n) != 0))
		return false; /* binds another statement than the one just parsed */
	out->stmt = s;
	out->stmt_len = n;
	if (!bind_rest(x.r))
		return false;
	out->bind = proto_reader_pos(&x.r);
	out->bind_len = proto_remaining(&x.r);
	if (!next(&p, end, &x))
		return false;
	if (x.type == 'D') {
		uint8_t kind = proto_get_u8(&x.r);
		s = proto_get_cstr_n(&x.r, &n);
		if (x.r.err || proto_remaining(&x.r) != 0)
			return false;
		if (kind == 'P' ? n != 0 : (kind != 'S' || n != out->stmt_len || memcmp(s, out->stmt, n) != 0))
			return false;
		out->describe = kind;
		if (!next(&p, end, &x))
			return false;
	}
	if (x.type != 'E')
		return false;
	/* The unnamed portal, and no row limit (a suspended portal is not a whole result). */
	(void)proto_get_cstr_n(&x.r, &n);
	uint32_t max_rows = proto_get_u32(&x.r);
	if (x.r.err || n != 0 || proto_remaining(&x.r) != 0 || max_rows != 0)
		return false;
	if (!next(&p, end, &x) || x.type != 'S' || proto_remaining(&x.r) != 0 || p != end)
		return false;
	out->len = avail;
	return true;
}

static bool has_time_word(const uint8_t *v, size_t n)
{
	static const char *const words[] = { "now", "today", "tomorrow", "yesterday" };

	for (size_t i = 0; i < n; i++)
		for (size_t w = 0; w < sizeof(words) / sizeof(words[0]); w++) {
			size_t k = strlen(words[w]);
			if (n - i >= k && strncasecmp((const char *)v + i, words[w], k) == 0)
				return true;
		}
	return false;
}

bool flight_ext_time_words(const struct flight_ext *x)
{
	/* The Bind was checked whole by flight_ext_read: counts and lengths are within it. */
	struct proto_reader r, fr;
	proto_reader_init(&r, x->bind, x->bind_len);
	size_t nfmt = proto_get_u16(&r);
	proto_reader_init(&fr, proto_get_bytes(&r, nfmt * 2), nfmt * 2);
	size_t n = proto_get_u16(&r);
	/* No codes: all text; one: it applies to every parameter; else one each. */
	uint16_t f = nfmt == 0 ? 0 : proto_get_u16(&fr);
	for (size_t i = 0; i < n && !r.err; i++) {
		if (i > 0 && nfmt > 1)
			f = proto_get_u16(&fr);
		uint32_t len = proto_get_u32(&r);
		if (len == UINT32_MAX)
			continue;
		const uint8_t *v = proto_get_bytes(&r, len);
		if (v && f == 0 && has_time_word(v, len))
			return true;
	}
	return false;
}
