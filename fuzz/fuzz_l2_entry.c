/* libFuzzer target for an L2 entry read back from Redis (src/flight/l2.c), which is network
 * input like any other. Besides crashes, it checks what l2.h promises: a decoded reply lies
 * inside the value, and only a value holding exactly the key and the versions decodes; and
 * that whatever bytes a fill stores (the input as a reply) decode back to themselves. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "flight/l2.h"

static void check(int ok)
{
	if (!ok)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t key[] = "Q\0fuzz key";
	struct flight_l2_versions v = { .n = 2, .id = { 42, 43 }, .v = { 1, 0 } };
	const uint8_t *bytes;
	size_t blen;
	uint8_t *copy = malloc(size ? size : 1);

	if (!copy)
		return 0;
	memcpy(copy, data, size);
	if (flight_l2_decode(copy, size, key, sizeof(key), &v, &bytes, &blen)) {
		check(bytes >= copy && bytes + blen == copy + size);
		check(size >= sizeof(key) && memcmp(copy + 8, key, sizeof(key)) == 0);
	}
	free(copy);

	size_t cap = size + sizeof(key) + 64;
	uint8_t *val = malloc(cap);
	if (!val)
		return 0;
	long n = flight_l2_encode(key, sizeof(key), &v, data, size, val, cap);
	check(n > 0 && (size_t)n <= cap);
	check(flight_l2_decode(val, (size_t)n, key, sizeof(key), &v, &bytes, &blen));
	check(blen == size && (size == 0 || memcmp(bytes, data, size) == 0));
	v.v[1] = 1; /* a write since: never served */
	check(!flight_l2_decode(val, (size_t)n, key, sizeof(key), &v, &bytes, &blen));
	free(val);
	return 0;
}
