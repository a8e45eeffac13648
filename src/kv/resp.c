/* RESP2 requests and replies (resp.h). */
#include "kv/resp.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool resp_to_ll(const char *p, size_t n, long long *out)
{
	size_t i = 0;
	bool neg = false;
	unsigned long long v = 0;

	if (n == 0 || n > 20)
		return false;
	if (p[0] == '-') {
		neg = true;
		i = 1;
		if (n == 1)
			return false;
	}
	if (p[i] == '0' && n > i + 1)
		return false;
	for (; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		unsigned d = (unsigned)(p[i] - '0');
		if (v > (9223372036854775808ULL - d) / 10)
			return false;
		v = v * 10 + d;
	}
	if (!neg && v > 9223372036854775807ULL)
		return false;
	if (neg && v == 0 && n > 1)
		return false; /* "-0" */
	*out = neg ? (v == 9223372036854775808ULL ? (-9223372036854775807LL - 1) : -(long long)v) : (long long)v;
	return true;
}

/* The "*N" or "$N" line at pos (buf[pos] is the type byte): 1 with *val and *next (past its
 * CRLF), 0 when incomplete, -1 malformed. */
static int header(const char *buf, size_t len, size_t pos, long long *val, size_t *next)
{
	size_t start = pos + 1, lim = len;

	if (lim > start + RESP_MAX_HEADER + 1)
		lim = start + RESP_MAX_HEADER + 1;
	const char *cr = memchr(buf + start, '\r', lim > start ? lim - start : 0);
	if (!cr)
		return len >= start + RESP_MAX_HEADER + 1 ? -1 : 0;
	size_t at = (size_t)(cr - buf);
	if (at + 1 >= len)
		return 0;
	if (buf[at + 1] != '\n' || !resp_to_ll(buf + start, at - start, val))
		return -1;
	*next = at + 2;
	return 1;
}

static enum resp_rc inline_command(const char *buf, size_t len, struct resp_arg *args, int cap, int *nargs,
				   size_t *used, const char **err)
{
	size_t lim = len < RESP_MAX_INLINE ? len : RESP_MAX_INLINE;
	const char *nl = memchr(buf, '\n', lim);

	if (!nl) {
		if (len >= RESP_MAX_INLINE) {
			*err = "Protocol error: too big inline request";
			return RESP_ERROR;
		}
		return RESP_MORE;
	}
	size_t end = (size_t)(nl - buf);
	size_t stop = end > 0 && buf[end - 1] == '\r' ? end - 1 : end;
	int n = 0;
	for (size_t i = 0; i < stop;) {
		while (i < stop && (buf[i] == ' ' || buf[i] == '\t'))
			i++;
		if (i == stop)
			break;
		size_t s = i;
		while (i < stop && buf[i] != ' ' && buf[i] != '\t')
			i++;
		if (n < cap)
			args[n] = (struct resp_arg){ (uint32_t)s, (uint32_t)(i - s) };
		n++;
	}
	*nargs = n;
	if (n > cap)
		return RESP_GROW;
	*used = end + 1;
	return RESP_COMMAND;
}

enum resp_rc resp_parse(const char *buf, size_t len, struct resp_arg *args, int cap, int *nargs, size_t *used,
			const char **err)
{
	long long n, blen;
	size_t pos;
	int rc;

	*nargs = 0;
	if (len == 0)
		return RESP_MORE;
	if (buf[0] != '*')
		return inline_command(buf, len, args, cap, nargs, used, err);
	rc = header(buf, len, 0, &n, &pos);
	if (rc <= 0) {
		*err = "Protocol error: invalid multibulk length";
		return rc < 0 ? RESP_ERROR : RESP_MORE;
	}
	if (n > RESP_MAX_ARGS) {
		*err = "Protocol error: invalid multibulk length";
		return RESP_ERROR;
	}
	if (n <= 0) { /* "*0" and "*-1": nothing to do, as Redis */
		*used = pos;
		return RESP_COMMAND;
	}
	if (n > cap) {
		*nargs = (int)n;
		return RESP_GROW;
	}
	for (long long i = 0; i < n; i++) {
		if (pos >= len)
			return RESP_MORE;
		if (buf[pos] != '$') {
			*err = "Protocol error: expected '$'";
			return RESP_ERROR;
		}
		rc = header(buf, len, pos, &blen, &pos);
		if (rc == 0)
			return RESP_MORE;
		if (rc < 0 || blen < 0 || blen > (long long)RESP_MAX_BULK) {
			*err = "Protocol error: invalid bulk length";
			return RESP_ERROR;
		}
		if (len - pos < (size_t)blen + 2)
			return RESP_MORE;
		if (buf[pos + (size_t)blen] != '\r' || buf[pos + (size_t)blen + 1] != '\n') {
			*err = "Protocol error: bulk string not followed by CRLF";
			return RESP_ERROR;
		}
		if (pos > UINT32_MAX - (size_t)blen) {
			*err = "Protocol error: request too large";
			return RESP_ERROR;
		}
		args[i] = (struct resp_arg){ (uint32_t)pos, (uint32_t)blen };
		pos += (size_t)blen + 2;
	}
	*nargs = (int)n;
	*used = pos;
	return RESP_COMMAND;
}

bool resp_is(const char *buf, const struct resp_arg *a, const char *name)
{
	size_t n = strlen(name);
	if (a->len != n)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = buf[a->off + i];
		if (c >= 'a' && c <= 'z')
			c = (char)(c - 'a' + 'A');
		if (c != name[i])
			return false;
	}
	return true;
}

/* ---- replies ---- */

static bool put(struct resp_out *o, const void *p, size_t n)
{
	if (o->cap - o->len < n)
		return false;
	memcpy(o->p + o->len, p, n);
	o->len += n;
	return true;
}

static bool line(struct resp_out *o, char type, long long v)
{
	char b[32];
	int n = snprintf(b, sizeof b, "%c%lld\r\n", type, v);
	return put(o, b, (size_t)n);
}

bool resp_out_simple(struct resp_out *o, const char *s)
{
	size_t n = strlen(s);
	if (o->cap - o->len < n + 3)
		return false;
	return put(o, "+", 1) && put(o, s, n) && put(o, "\r\n", 2);
}

bool resp_out_error(struct resp_out *o, const char *s)
{
	size_t n = strlen(s), start = o->len;
	if (o->cap - o->len < n + 3)
		return false;
	put(o, "-", 1);
	put(o, s, n);
	for (size_t i = start + 1; i < o->len; i++)
		if (o->p[i] == '\r' || o->p[i] == '\n')
			o->p[i] = ' ';
	return put(o, "\r\n", 2);
}

bool resp_out_int(struct resp_out *o, long long v)
{
	return line(o, ':', v);
}

bool resp_out_bulk(struct resp_out *o, const char *p, size_t n)
{
	size_t start = o->len;
	if (o->cap - o->len < n + 32)
		return false;
	if (!line(o, '$', (long long)n) || !put(o, p, n) || !put(o, "\r\n", 2)) {
		o->len = start;
		return false;
	}
	return true;
}

bool resp_out_value(struct resp_out *o, const char *v, size_t n)
{
	enum { HDR = 24 }; /* a bulk header at most: "$" + 20 digits + CRLF */
	if (o->cap - o->len < RESP_VALUE_ROOM(n))
		return false;
	/* Unquoted HDR bytes past the end (k <= n), then moved back behind its header; a value
	 * that is not one JSON string goes as its JSON text. */
	char *at = o->p + o->len;
	long k = resp_json_unquote(v, n, at + HDR);
	if (k < 0)
		return resp_out_bulk(o, v, n);
	char hdr[HDR];
	int h = snprintf(hdr, sizeof hdr, "$%ld\r\n", k);
	memmove(at + h, at + HDR, (size_t)k);
	memcpy(at, hdr, (size_t)h);
	memcpy(at + h + k, "\r\n", 2);
	o->len += (size_t)h + (size_t)k + 2;
	return true;
}

bool resp_out_nil(struct resp_out *o)
{
	return put(o, "$-1\r\n", 5);
}

bool resp_out_array(struct resp_out *o, long long n)
{
	return line(o, '*', n);
}

bool resp_out_null3(struct resp_out *o)
{
	return put(o, "_\r\n", 3);
}

bool resp_out_map3(struct resp_out *o, long long n)
{
	return line(o, '%', n);
}

/* ---- values: Redis strings as JSON strings ---- */

long resp_json_quote(const char *p, size_t n, char *out, size_t cap)
{
	static const char hex[] = "0123456789abcdef";
	size_t k = 0;

	if (cap < 2)
		return -1;
	out[k++] = '"';
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		char esc = 0;
		if (c == 0)
			return -1;
		switch (c) {
		case '"': esc = '"'; break;
		case '\\': esc = '\\'; break;
		case '\n': esc = 'n'; break;
		case '\r': esc = 'r'; break;
		case '\t': esc = 't'; break;
		case '\b': esc = 'b'; break;
		case '\f': esc = 'f'; break;
		default: break;
		}
		if (esc) {
			if (cap - k < 3)
				return -1;
			out[k++] = '\\';
			out[k++] = esc;
		} else if (c < 0x20) {
			if (cap - k < 7)
				return -1;
			memcpy(out + k, "\\u00", 4);
			out[k + 4] = hex[c >> 4];
			out[k + 5] = hex[c & 15];
			k += 6;
		} else {
			if (cap - k < 2)
				return -1;
			out[k++] = (char)c;
		}
	}
	if (cap - k < 1)
		return -1;
	out[k++] = '"';
	return (long)k;
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

static long hex4(const char *s)
{
	long v = 0;
	for (int i = 0; i < 4; i++) {
		int h = hexval(s[i]);
		if (h < 0)
			return -1;
		v = v * 16 + h;
	}
	return v;
}

static size_t utf8(unsigned long cp, char *out)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xC0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xE0 | (cp >> 12));
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		out[2] = (char)(0x80 | (cp & 0x3F));
		return 3;
	}
	out[0] = (char)(0xF0 | (cp >> 18));
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
	out[3] = (char)(0x80 | (cp & 0x3F));
	return 4;
}

long resp_json_unquote(const char *s, size_t n, char *out)
{
	size_t k = 0;

	if (n < 2 || s[0] != '"' || s[n - 1] != '"')
		return -1;
	for (size_t i = 1; i < n - 1; i++) {
		char c = s[i];
		if (c == '"')
			return -1;
		if (c != '\\') {
			out[k++] = c;
			continue;
		}
		if (++i >= n - 1)
			return -1;
		switch (s[i]) {
		case '"': out[k++] = '"'; break;
		case '\\': out[k++] = '\\'; break;
		case '/': out[k++] = '/'; break;
		case 'b': out[k++] = '\b'; break;
		case 'f': out[k++] = '\f'; break;
		case 'n': out[k++] = '\n'; break;
		case 'r': out[k++] = '\r'; break;
		case 't': out[k++] = '\t'; break;
		case 'u': {
			/* \uXXXX is 6 bytes and yields at most 3; a surrogate pair is 12 and yields 4 */
			if (n - 1 - i < 5)
				return -1;
			long cp = hex4(s + i + 1);
			if (cp < 0)
				return -1;
			i += 4;
			if (cp >= 0xD800 && cp <= 0xDBFF) {
				if (n - 1 - i < 7 || s[i + 1] != '\\' || s[i + 2] != 'u')
					return -1;
				long lo = hex4(s + i + 3);
				if (lo < 0xDC00 || lo > 0xDFFF)
					return -1;
				cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
				i += 6;
			} else if (cp >= 0xDC00 && cp <= 0xDFFF) {
				return -1;
			}
			k += utf8((unsigned long)cp, out + k);
			break;
		}
		default:
			return -1;
		}
	}
	return (long)k;
}

static const char *json_space(const char *s, const char *end)
{
	while (s < end && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r'))
		s++;
	return s;
}

long resp_json_first_key(const char *s, size_t n, char *out, size_t cap)
{
	const char *end = s + n, *q;

	s = json_space(s, end);
	if (s == end || *s++ != '{')
		return -1;
	s = json_space(s, end);
	if (s == end || *s != '"')
		return -1;
	for (q = s + 1; q < end && *q != '"'; q++)
		if (*q == '\\' && q + 1 < end)
			q++;
	if (q >= end || (size_t)(q + 1 - s) > cap) /* the key is at most its text's length */
		return -1;
	return resp_json_unquote(s, (size_t)(q + 1 - s), out);
}

bool resp_to_ld(const char *p, size_t n, long double *out)
{
	char buf[RESP_LD_MAX];
	char *end;
	if (n == 0 || n >= sizeof buf || memchr(p, '\0', n))
		return false;
	memcpy(buf, p, n);
	buf[n] = '\0';
	errno = 0;
	long double v = strtold(buf, &end);
	if (isspace((unsigned char)buf[0]) || *end != '\0' ||
	    (errno == ERANGE && (v == HUGE_VALL || v == -HUGE_VALL || fpclassify(v) == FP_ZERO)) || isnan(v))
		return false;
	*out = v;
	return true;
}

size_t resp_ld_human(long double v, char buf[RESP_LD_MAX])
{
	if (!isfinite(v))
		return 0;
	int k = snprintf(buf, RESP_LD_MAX, "%.17Lf", v);
	if (k <= 0 || k >= RESP_LD_MAX)
		return 0;
	size_t l = (size_t)k;
	if (memchr(buf, '.', l)) {
		while (buf[l - 1] == '0')
			l--;
		if (buf[l - 1] == '.')
			l--;
	}
	if (l == 2 && buf[0] == '-' && buf[1] == '0') {
		buf[0] = '0';
		l = 1;
	}
	buf[l] = '\0';
	return l;
}
