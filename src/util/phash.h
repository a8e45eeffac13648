/* Order-independent fingerprint of a set of parameters: the sum of one hash per
 * (case-folded name, value) pair. A client's session and a server compute it the same way,
 * so equal sums mean (with overwhelming probability) equal settings and no SET is needed;
 * a change updates the sum in O(1) by taking one pair out and putting another in. */
#ifndef TUSK_UTIL_PHASH_H
#define TUSK_UTIL_PHASH_H

#include <ctype.h>
#include <stdint.h>
#include <string.h>
#include <xxhash.h>

static inline uint64_t phash_pair(const char *name, const char *value)
{
	char buf[64];
	size_t n = 0;
	for (; *name && n < sizeof buf; name++)
		buf[n++] = (char)tolower((unsigned char)*name);
	/* The name's hash seeds the value's: the pair, not either part, is what counts. */
	return XXH3_64bits_withSeed(value, strlen(value), XXH3_64bits(buf, n));
}

#endif
