/* libFuzzer target for the cache's extended-protocol request reader (src/flight/ext.c), which
 * reads a client's hostile bytes. Besides crashes (the input is an exact-size heap copy, so
 * ASan sees any read past it), it checks what ext.h promises: a request taken spans the whole
 * input, its pointers lie inside it, its names are NUL-terminated where it says, its Describe
 * is 0, 'S' or 'P', and a Parse's types end its body; reading its parameters for time words
 * stays inside it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "flight/ext.h"

static void check(int ok)
{
	if (!ok)
		abort();
}

static int inside(const void *p, size_t n, const uint8_t *base, size_t size)
{
	const uint8_t *q = p;
	return q >= base && q <= base + size && n <= (size_t)(base + size - q);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *m = malloc(size ? size : 1);
	struct flight_ext x;

	if (!m)
		return 0;
	memcpy(m, data, size);
	if (flight_ext_read(m, size, &x)) {
		check(x.len == size);
		check(inside(x.stmt, x.stmt_len + 1, m, size) && x.stmt[x.stmt_len] == 0);
		check(inside(x.bind, x.bind_len, m, size));
		check(x.describe == 0 || x.describe == 'S' || x.describe == 'P');
		(void)flight_ext_time_words(&x); /* trusts the Bind flight_ext_read checked */
		if (x.has_parse) {
			check(inside(x.query, x.query_len + 1, m, size) && x.query[x.query_len] == 0);
			check(inside(x.parse_rest, x.parse_rest_len, m, size));
			check(inside(x.types, (size_t)x.ntypes * 4, m, size));
			check(x.types + (size_t)x.ntypes * 4 == x.parse_rest + x.parse_rest_len);
		}
	}
	free(m);
	return 0;
}
