/* The Redis protocol (RESP2, and RESP3's null and map for HELLO 3) of the kv's Redis listener (docs/kv.md, "The Redis protocol"):
 * the request parser (multi-bulk arrays of bulk strings, and inline commands) and the reply
 * writers. Pure: no I/O, no allocation by the parser; every input hostile, every length
 * bounded (fuzzed: fuzz/fuzz_kv_resp.c). */
#ifndef TUSK_KV_RESP_H
#define TUSK_KV_RESP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RESP_MAX_BULK (1u << 20)       /* longest argument (a kv value is at most 1 MB) */
#define RESP_MAX_ARGS 20001            /* an MSET of 10000 keys (kv's batch bound) */
#define RESP_MAX_INLINE (64u << 10)    /* longest inline command line */
#define RESP_MAX_HEADER 32             /* longest "*N" / "$N" line, CRLF excluded */

/* One argument: bytes [off, off + len) of the buffer parsed. */
struct resp_arg {
	uint32_t off, len;
};

enum resp_rc {
	RESP_ERROR = -1, /* a protocol error (err set): reply it and close, as Redis does */
	RESP_MORE = 0,   /* the command is not complete: read more and parse again from the start */
	RESP_COMMAND = 1,/* a command: *nargs arguments (0: an empty one, to be skipped), *used bytes */
	RESP_GROW = 2,   /* the command has *nargs arguments, more than cap: grow args, parse again */
};

/* Parse the first command of buf[0, len). args holds cap entries. Inline arguments are split
 * at blanks (no quoting). */
__attribute__((warn_unused_result))
enum resp_rc resp_parse(const char *buf, size_t len, struct resp_arg *args, int cap, int *nargs, size_t *used,
			const char **err);

/* Reply writers: append to out (*len bytes used of cap); false when it does not fit (nothing
 * written then). */
struct resp_out {
	char *p;
	size_t len, cap;
};
bool resp_out_simple(struct resp_out *o, const char *s);               /* +s */
bool resp_out_error(struct resp_out *o, const char *s);                /* -s (CR and LF replaced) */
bool resp_out_int(struct resp_out *o, long long v);                    /* :v */
bool resp_out_bulk(struct resp_out *o, const char *p, size_t n);       /* $n p */
/* A kv value (the JSON text v[0, n)) as a Redis string: a JSON string unquoted (in place in
 * o's free space: no copy elsewhere), any other text as is. RESP_VALUE_ROOM(n) free bytes
 * always suffice. */
#define RESP_VALUE_ROOM(n) ((n) + 32)
bool resp_out_value(struct resp_out *o, const char *v, size_t n);      /* $k unquoted(v) */
bool resp_out_nil(struct resp_out *o);                                 /* $-1 */
bool resp_out_array(struct resp_out *o, long long n);                  /* *n (-1: nil array) */
/* RESP3 (after HELLO 3): its null and its map header (n pairs follow). */
bool resp_out_null3(struct resp_out *o);                               /* _ */
bool resp_out_map3(struct resp_out *o, long long n);                   /* %n */

/* The exact, case-insensitive command name test. */
bool resp_is(const char *buf, const struct resp_arg *a, const char *name);

/* A signed 64-bit decimal as Redis reads it (no blanks, no '+', no leading zeros but "0"). */
bool resp_to_ll(const char *p, size_t n, long long *out);

/* A float as Redis reads one (its string2ld: strtold in the C locale, the whole of p[0, n),
 * no leading blank, not NaN, no overflow nor underflow to 0, shorter than RESP_LD_MAX). */
#define RESP_LD_MAX 5120 /* Redis's MAX_LONG_DOUBLE_CHARS */
bool resp_to_ld(const char *p, size_t n, long double *out);
/* v as Redis's INCRBYFLOAT writes it (ld2string's LD_STR_HUMAN: "%.17Lf", trailing zeros and
 * point cut, "-0" as "0") into buf (RESP_LD_MAX bytes): its length; 0 when v is not finite. */
size_t resp_ld_human(long double v, char buf[RESP_LD_MAX]);

/* JSON text of the string p[0, n) ("..." with escapes) into out (at most cap bytes): its
 * length, or -1 when it does not fit or p has a NUL byte (jsonb refuses \u0000). */
long resp_json_quote(const char *p, size_t n, char *out, size_t cap);
/* The string a JSON string text denotes (s[0, n), quotes included), into out (at least n
 * bytes): its length, or -1 when s is not one JSON string. */
long resp_json_unquote(const char *s, size_t n, char *out);
/* The first key of the JSON object text s[0, n) (spaces before it allowed; what follows the key
 * is not read) into out (cap bytes; the key's text, quotes included, must fit): its length, or
 * -1 when s does not start an object with a key, the key is no JSON string, or it does not fit. */
long resp_json_first_key(const char *s, size_t n, char *out, size_t cap);

#endif
