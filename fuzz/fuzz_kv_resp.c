/* libFuzzer target for what a client of the kv's Redis listener controls (src/kv/resp.c): the
 * RESP2 request parser (multi-bulk and inline), parsing command after command as the listener
 * does, with a small argument array grown on RESP_GROW; and the JSON string codec values go
 * through (and the first key of a JSON object, kv.msetnx's route). Besides crashes and leaks it checks the invariants the listener relies on:
 * arguments inside the bytes consumed, progress on every command, the bounds of resp.h. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kv/resp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
	if (!ok)
		abort();
}

static void codec(const char *p, size_t n)
{
	size_t cap = 6 * n + 2;
	char *q = malloc(cap), *u = malloc(cap);
	check(q && u);
	long k = resp_json_quote(p, n, q, cap);
	if (k >= 0) {
		check(memchr(p, '\0', n) == NULL);
		long m = resp_json_unquote(q, (size_t)k, u);
		check(m == (long)n && memcmp(u, p, n) == 0); /* round trip */
	} else {
		check(memchr(p, '\0', n) != NULL);
	}
	long m = resp_json_unquote(p, n, u); /* hostile JSON text */
	check(m <= (long)n);
	m = resp_json_first_key(p, n, u, n); /* hostile JSON object (kv.msetnx's route) */
	check(m <= (long)n);
	if (k >= 0) { /* {"p"} names p first */
		char *o = malloc((size_t)k + 2);
		check(o != NULL);
		o[0] = '{';
		memcpy(o + 1, q, (size_t)k);
		o[k + 1] = '}';
		m = resp_json_first_key(o, (size_t)k + 2, u, cap);
		check(m == (long)n && memcmp(u, p, n) == 0);
		free(o);
	}
	free(q);
	free(u);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 0 && data[0] == 0xFF) {
		codec((const char *)data + 1, size - 1);
		return 0;
	}
	int cap = 4;
	struct resp_arg *args = malloc((size_t)cap * sizeof *args);
	const char *buf = (const char *)data;
	size_t len = size;

	check(args != NULL);
	while (len > 0) {
		int n = -1;
		size_t used = 0;
		const char *err = NULL;
		enum resp_rc rc = resp_parse(buf, len, args, cap, &n, &used, &err);
		if (rc == RESP_GROW) {
			check(n > cap && n <= RESP_MAX_ARGS);
			struct resp_arg *a = realloc(args, (size_t)n * sizeof *a);
			check(a != NULL);
			args = a;
			cap = n;
			continue;
		}
		if (rc == RESP_ERROR) {
			check(err != NULL);
			break;
		}
		if (rc == RESP_MORE)
			break;
		check(rc == RESP_COMMAND && used > 0 && used <= len && n >= 0 && n <= cap);
		for (int i = 0; i < n; i++) {
			check((size_t)args[i].off + args[i].len <= used);
			check(args[i].len <= RESP_MAX_BULK);
			(void)resp_is(buf, &args[i], "GET");
			long long v;
			(void)resp_to_ll(buf + args[i].off, args[i].len, &v);
		}
		buf += used;
		len -= used;
	}
	free(args);
	return 0;
}
