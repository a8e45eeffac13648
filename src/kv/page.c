/* Checking a pulled page before it is applied (page.h). A peer that sends more rows than it
 * says, or a position that is not its last row's or lies outside the pass's range, would move
 * the link's watermark past rows never applied: such a page fails the pass instead. The JSON
 * reader is strict (RFC 8259 values), bounded and allocation-free; a value's nesting is a bit
 * stack, not recursion. */
#include "kv/page.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

struct json {
	const char *p, *end;
};

static void skip_ws(struct json *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static bool hex4(struct json *j, unsigned *v)
{
	if (j->end - j->p < 4)
		return false;
	*v = 0;
	for (int i = 0; i < 4; i++) {
		int h = hexval(j->p[i]);
		if (h < 0)
			return false;
		*v = *v << 4 | (unsigned)h;
	}
	j->p += 4;
	return true;
}

/* A string at j->p ('"' included). With want, compares its decoded bytes to want[0, wlen)
 * and sets *equal. */
static bool parse_string(struct json *j, const char *want, size_t wlen, bool *equal)
{
	size_t at = 0;
	bool eq = true;

	if (j->p >= j->end || *j->p != '"')
		return false;
	j->p++;
	for (;;) {
		unsigned char out[4];
		size_t nout;
		if (j->p >= j->end)
			return false;
		unsigned char c = (unsigned char)*j->p++;
		if (c == '"')
			break;
		if (c < 0x20)
			return false;
		if (c != '\\') {
			out[0] = c;
			nout = 1;
		} else {
			if (j->p >= j->end)
				return false;
			char e = *j->p++;
			unsigned cp;
			switch (e) {
			case '"': case '\\': case '/': out[0] = (unsigned char)e; nout = 1; break;
			case 'b': out[0] = '\b'; nout = 1; break;
			case 'f': out[0] = '\f'; nout = 1; break;
			case 'n': out[0] = '\n'; nout = 1; break;
			case 'r': out[0] = '\r'; nout = 1; break;
			case 't': out[0] = '\t'; nout = 1; break;
			case 'u':
				if (!hex4(j, &cp))
					return false;
				if (cp >= 0xd800 && cp <= 0xdbff) {
					unsigned lo;
					if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u')
						return false;
					j->p += 2;
					if (!hex4(j, &lo) || lo < 0xdc00 || lo > 0xdfff)
						return false;
					cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				} else if (cp >= 0xdc00 && cp <= 0xdfff) {
					return false;
				}
				if (cp == 0)
					return false; /* no NUL in a PostgreSQL text */
				if (cp < 0x80) {
					out[0] = (unsigned char)cp;
					nout = 1;
				} else if (cp < 0x800) {
					out[0] = (unsigned char)(0xc0 | cp >> 6);
					out[1] = (unsigned char)(0x80 | (cp & 0x3f));
					nout = 2;
				} else if (cp < 0x10000) {
					out[0] = (unsigned char)(0xe0 | cp >> 12);
					out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
					out[2] = (unsigned char)(0x80 | (cp & 0x3f));
					nout = 3;
				} else {
					out[0] = (unsigned char)(0xf0 | cp >> 18);
					out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
					out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
					out[3] = (unsigned char)(0x80 | (cp & 0x3f));
					nout = 4;
				}
				break;
			default:
				return false;
			}
		}
		if (want && eq) {
			if (at + nout > wlen || memcmp(want + at, out, nout) != 0)
				eq = false;
			at += nout;
		}
	}
	if (equal)
		*equal = eq && at == wlen;
	return true;
}

static bool parse_number(struct json *j)
{
	const char *s = j->p;
	if (j->p < j->end && *j->p == '-')
		j->p++;
	if (j->p >= j->end)
		return false;
	if (*j->p == '0')
		j->p++;
	else if (*j->p >= '1' && *j->p <= '9')
		while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
			j->p++;
	else
		return false;
	if (j->p < j->end && *j->p == '.') {
		j->p++;
		if (j->p >= j->end || *j->p < '0' || *j->p > '9')
			return false;
		while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
			j->p++;
	}
	if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
		j->p++;
		if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
			j->p++;
		if (j->p >= j->end || *j->p < '0' || *j->p > '9')
			return false;
		while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
			j->p++;
	}
	return j->p > s;
}

static bool literal(struct json *j, const char *w)
{
	size_t n = strlen(w);
	if ((size_t)(j->end - j->p) < n || memcmp(j->p, w, n) != 0)
		return false;
	j->p += n;
	return true;
}

/* A member's name and its ':' at j->p (blanks before and after skipped). */
static bool member_name(struct json *j)
{
	skip_ws(j);
	if (!parse_string(j, NULL, 0, NULL))
		return false;
	skip_ws(j);
	if (j->p >= j->end || *j->p != ':')
		return false;
	j->p++;
	return true;
}

/* A value at j->p, without recursion: the kinds of the containers open (1: object) are a bit
 * stack, so a value nests as deep as PostgreSQL's own parser lets a jsonb be (~15,000 levels
 * at its default max_stack_depth of 2 MB, over 50,000 at 7.5 MB), up to KV_PAGE_MAX_DEPTH.
 * A row the check refused would stop its link for good: the pass fails at every retry. */
static bool parse_value(struct json *j)
{
	uint64_t kinds[KV_PAGE_MAX_DEPTH / 64];
	size_t depth = 0;

	for (;;) {
		/* A value: a scalar, or a container opened (and, if empty, closed). */
		bool done;
		skip_ws(j);
		if (j->p >= j->end)
			return false;
		char c = *j->p;
		if (c == '{' || c == '[') {
			bool obj = c == '{';
			if (depth >= KV_PAGE_MAX_DEPTH)
				return false;
			j->p++;
			skip_ws(j);
			if (j->p < j->end && *j->p == (obj ? '}' : ']')) {
				j->p++;
				done = true;
			} else {
				if (obj)
					kinds[depth / 64] |= (uint64_t)1 << (depth % 64);
				else
					kinds[depth / 64] &= ~((uint64_t)1 << (depth % 64));
				depth++;
				if (obj && !member_name(j))
					return false;
				done = false; /* its first member's or element's value next */
			}
		} else {
			bool ok;
			switch (c) {
			case '"': ok = parse_string(j, NULL, 0, NULL); break;
			case 't': ok = literal(j, "true"); break;
			case 'f': ok = literal(j, "false"); break;
			case 'n': ok = literal(j, "null"); break;
			default: ok = parse_number(j); break;
			}
			if (!ok)
				return false;
			done = true;
		}
		/* After a whole value: close containers until one takes a next member or element. */
		while (done) {
			if (depth == 0)
				return true;
			bool obj = kinds[(depth - 1) / 64] >> ((depth - 1) % 64) & 1;
			skip_ws(j);
			if (j->p < j->end && *j->p == ',') {
				j->p++;
				if (obj && !member_name(j))
					return false;
				done = false;
			} else if (j->p < j->end && *j->p == (obj ? '}' : ']')) {
				j->p++;
				depth--;
			} else {
				return false;
			}
		}
	}
}

/* Members of a row object the page check looks at. */
struct row_keys {
	const char *ns, *key; /* the position to compare with; NULL: not the last row */
	size_t ns_len, key_len;
	int seen_ns, seen_key;
	bool ns_eq, key_eq;
};

/* A row: an object at j->p whose "ns" and "key" members must be strings, once each. */
static bool parse_row(struct json *j, struct row_keys *rk)
{
	j->p++; /* '{' */
	skip_ws(j);
	if (j->p < j->end && *j->p == '}') {
		j->p++;
		return true;
	}
	for (;;) {
		bool is_ns = false, is_key = false;
		skip_ws(j);
		const char *name = j->p;
		if (!parse_string(j, "ns", 2, &is_ns))
			return false;
		if (!is_ns) {
			j->p = name;
			if (!parse_string(j, "key", 3, &is_key))
				return false;
		}
		skip_ws(j);
		if (j->p >= j->end || *j->p != ':')
			return false;
		j->p++;
		skip_ws(j);
		if (is_ns || is_key) {
			bool eq = false;
			if (!parse_string(j, is_ns ? rk->ns : rk->key, is_ns ? rk->ns_len : rk->key_len, &eq))
				return false; /* also a member that is not a string */
			if (is_ns) {
				rk->seen_ns++;
				rk->ns_eq = eq;
			} else {
				rk->seen_key++;
				rk->key_eq = eq;
			}
		} else if (!parse_value(j)) {
			return false;
		}
		skip_ws(j);
		if (j->p < j->end && *j->p == ',') {
			j->p++;
			continue;
		}
		if (j->p < j->end && *j->p == '}') {
			j->p++;
			return true;
		}
		return false;
	}
}

/* A decimal xid8 (what ::text gives): 1 to 20 digits, no sign, fits 64 bits. */
static bool parse_xid(const char *s, uint64_t *v)
{
	size_t n = s ? strlen(s) : 0;
	uint64_t x = 0;

	if (n == 0 || n > 20)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		unsigned d = (unsigned)(s[i] - '0');
		if (x > (UINT64_MAX - d) / 10)
			return false;
		x = x * 10 + d;
	}
	*v = x;
	return true;
}

#define FAIL(...)                                           \
	do {                                                \
		snprintf(err, errcap, __VA_ARGS__);         \
		return -EPROTO;                             \
	} while (0)

int kv_page_decode(const struct kv_page_in *in, long *n, char *err, size_t errcap)
{
	uint64_t count, pos = 0, from, below;

	if (!parse_xid(in->count, &count) || count > (uint64_t)in->batch)
		FAIL("bad row count (at most %ld asked)", in->batch);
	if (!in->rows)
		FAIL("no rows");
	if (!parse_xid(in->cursor_w, &from) || !parse_xid(in->xmin, &below))
		FAIL("bad cursor or snapshot");
	if (count > 0) {
		if (!parse_xid(in->pos_w, &pos) || !in->pos_ns || !in->pos_key)
			FAIL("no position after %llu rows", (unsigned long long)count);
		/* Rows come from [cursor, xmin): a position outside would move W past unread rows. */
		if (pos < from || pos >= below)
			FAIL("position %llu outside the pass's range [%llu, %llu)", (unsigned long long)pos,
			     (unsigned long long)from, (unsigned long long)below);
	}
	struct json j = { in->rows, in->rows + strlen(in->rows) };
	struct row_keys last = { 0 };
	uint64_t seen = 0;
	skip_ws(&j);
	if (j.p >= j.end || *j.p != '[')
		FAIL("rows are not a JSON array");
	j.p++;
	skip_ws(&j);
	if (j.p < j.end && *j.p == ']') {
		j.p++;
	} else {
		for (;;) {
			skip_ws(&j);
			if (j.p >= j.end || *j.p != '{' || seen >= count)
				FAIL("row %llu is not a JSON object, or more rows than the %llu announced",
				     (unsigned long long)seen + 1, (unsigned long long)count);
			struct row_keys rk = { .ns = in->pos_ns, .key = in->pos_key,
					       .ns_len = in->pos_ns ? strlen(in->pos_ns) : 0,
					       .key_len = in->pos_key ? strlen(in->pos_key) : 0 };
			if (!parse_row(&j, &rk))
				FAIL("row %llu is malformed JSON", (unsigned long long)seen + 1);
			if (rk.seen_ns != 1 || rk.seen_key != 1)
				FAIL("row %llu lacks a single string ns and key", (unsigned long long)seen + 1);
			last = rk;
			seen++;
			skip_ws(&j);
			if (j.p < j.end && *j.p == ',') {
				j.p++;
				continue;
			}
			if (j.p < j.end && *j.p == ']') {
				j.p++;
				break;
			}
			FAIL("rows are malformed JSON");
		}
	}
	skip_ws(&j);
	if (j.p != j.end)
		FAIL("bytes after the rows");
	if (seen != count)
		FAIL("%llu rows announced, %llu sent", (unsigned long long)count, (unsigned long long)seen);
	if (count > 0 && (!in->pos_ns || !last.ns_eq || !last.key_eq))
		FAIL("the position is not the last row's");
	*n = (long)count;
	return 0;
}
