/* Reading the cache's extended-protocol requests (ext.h). Every length and count comes from
 * the network: each is checked against the bytes that are really there before it is used. */
#include "flight/ext.h"

#include <string.h>
#include <strings.h>

#define NAME_MAX_LEN 63 /* NAMEDATALEN - 1, as prepared.h */

struct msg {
	uint8_t type;
	const uint8_t *body, *end;
};

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint16_t be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

/* The next whole message at *p, or false when the bytes end inside it. */
static bool next(const uint8_t **p, const uint8_t *end, struct msg *out)
{
	if (end - *p < 5)
		return false;
	uint32_t len = be32(*p + 1);
	if (len < 4 || (size_t)(end - *p) - 1 < len)
		return false;
	out->type = (*p)[0];
	out->body = *p + 5;
	out->end = *p + 1 + len;
	*p = out->end;
	return true;
}

static bool cstr(const uint8_t **b, const uint8_t *end, const char **s, size_t *n)
{
	const uint8_t *z = *b < end ? memchr(*b, 0, (size_t)(end - *b)) : NULL;
	if (!z)
		return false;
	*s = (const char *)*b;
	*n = (size_t)(z - *b);
	*b = z + 1;
	return true;
}

bool flight_ext_parse_body(const uint8_t *rest, size_t len, const char **query, size_t *query_len,
			   const uint8_t **types, uint16_t *ntypes)
{
	const uint8_t *b = rest, *end = rest + len;

	if (!cstr(&b, end, query, query_len) || end - b < 2)
		return false;
	*ntypes = be16(b);
	b += 2;
	if ((size_t)(end - b) != (size_t)*ntypes * 4)
		return false;
	*types = b;
	return true;
}

/* Format codes: a count, then that many of 0 (text) or 1 (binary). */
static bool formats(const uint8_t **b, const uint8_t *end)
{
	if (end - *b < 2)
		return false;
	size_t n = be16(*b);
	*b += 2;
	if ((size_t)(end - *b) < n * 2)
		return false;
	for (size_t i = 0; i < n; i++)
		if (be16(*b + i * 2) > 1)
			return false;
	*b += n * 2;
	return true;
}

static bool bind_rest(const uint8_t *b, const uint8_t *end)
{
	size_t nfmt = end - b >= 2 ? be16(b) : 0;
	if (!formats(&b, end) || end - b < 2)
		return false;
	size_t n = be16(b);
	b += 2;
	/* As PostgreSQL: no codes, one for all, or one per parameter. */
	if (nfmt > 1 && nfmt != n)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (end - b < 4)
			return false;
		uint32_t len = be32(b);
		b += 4;
		if (len == UINT32_MAX)
			continue; /* NULL */
		if (len > INT32_MAX || (size_t)(end - b) < len)
			return false;
		b += len;
	}
	return formats(&b, end) && b == end;
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
		const uint8_t *b = x.body;
		if (!cstr(&b, x.end, &out->stmt, &out->stmt_len) || out->stmt_len > NAME_MAX_LEN)
			return false;
		out->parse_rest = b;
		out->parse_rest_len = (size_t)(x.end - b);
		if (!flight_ext_parse_body(b, out->parse_rest_len, &out->query, &out->query_len, &out->types,
					   &out->ntypes))
			return false;
		out->has_parse = true;
		if (!next(&p, end, &x))
			return false;
	}
	if (x.type != 'B')
		return false;
	const uint8_t *b = x.body;
	if (!cstr(&b, x.end, &s, &n) || n != 0 || !cstr(&b, x.end, &s, &n) || n > NAME_MAX_LEN)
		return false;
	if (out->has_parse && (n != out->stmt_len || memcmp(s, out->stmt, n) != 0))
		return false; /* binds another statement than the one just parsed */
	out->stmt = s;
	out->stmt_len = n;
	if (!bind_rest(b, x.end))
		return false;
	out->bind = b;
	out->bind_len = (size_t)(x.end - b);
	if (!next(&p, end, &x))
		return false;
	if (x.type == 'D') {
		b = x.body;
		if (x.end - b < 1)
			return false;
		uint8_t kind = *b++;
		if (!cstr(&b, x.end, &s, &n) || b != x.end)
			return false;
		if (kind == 'P' ? n != 0 : (kind != 'S' || n != out->stmt_len || memcmp(s, out->stmt, n) != 0))
			return false;
		out->describe = kind;
		if (!next(&p, end, &x))
			return false;
	}
	if (x.type != 'E')
		return false;
	b = x.body;
	/* The unnamed portal, and no row limit (a suspended portal is not a whole result). */
	if (!cstr(&b, x.end, &s, &n) || n != 0 || x.end - b != 4 || be32(b) != 0)
		return false;
	if (!next(&p, end, &x) || x.type != 'S' || x.body != x.end || p != end)
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
	const uint8_t *b = x->bind;
	size_t nfmt = be16(b);
	const uint8_t *fmt = b + 2;
	b += 2 + nfmt * 2;
	size_t n = be16(b);
	b += 2;
	for (size_t i = 0; i < n; i++) {
		uint32_t len = be32(b);
		b += 4;
		if (len == UINT32_MAX)
			continue;
		/* No codes: all text; one: it applies to every parameter; else one each. */
		uint16_t f = nfmt == 0 ? 0 : be16(fmt + 2 * (nfmt == 1 ? 0 : i));
		if (f == 0 && has_time_word(b, len))
			return true;
		b += len;
	}
	return false;
}
