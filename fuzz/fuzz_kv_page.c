/* libFuzzer target for the decoder of pulled kv pages (src/kv/page.c). The input is split at
 * NUL bytes into the page row's texts: count, rows, position xid, position ns, position key,
 * then the pass's cursor and xmin; a field of exactly "\x01" stands for SQL NULL, the first
 * byte is the batch. Besides crashes, it checks that an accepted page has a count within the
 * batch and, when rows were announced, a position inside [cursor, xmin). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv/page.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned long long xid(const char *s)
{
	return s ? strtoull(s, NULL, 10) : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	long batch = data[0];
	/* An exact-size copy with a NUL after each field, so ASan sees any overread. */
	char *copy = malloc(size);
	if (!copy)
		return 0;
	memcpy(copy, data + 1, size - 1);
	copy[size - 1] = '\0';
	const char *f[7] = { 0 };
	size_t at = 0;
	for (int i = 0; i < 7 && at < size; i++) {
		f[i] = copy + at;
		at += strlen(copy + at) + 1;
		if (strcmp(f[i], "\x01") == 0)
			f[i] = NULL;
	}
	struct kv_page_in in = { .count = f[0], .rows = f[1], .pos_w = f[2], .pos_ns = f[3], .pos_key = f[4],
				 .cursor_w = f[5], .xmin = f[6], .batch = batch };
	char err[128];
	long n = -1;
	if (kv_page_decode(&in, &n, err, sizeof err) == 0) {
		if (n < 0 || n > batch)
			abort();
		if (n > 0 && (!in.pos_w || xid(in.pos_w) < xid(in.cursor_w) || xid(in.pos_w) >= xid(in.xmin)))
			abort();
	}
	free(copy);
	return 0;
}
