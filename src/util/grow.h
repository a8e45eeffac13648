/* Growing a heap array by doubling: the one loop the buffers that take what arrives (the kv
 * router's rows, the Redis listener's output and values, the kv session's values, a virtual
 * database's output, a listener's notification queue) share. */
#ifndef TUSK_UTIL_GROW_H
#define TUSK_UTIL_GROW_H

#include <stdint.h>
#include <stdlib.h>

/* p (malloc'd, *cap bytes; NULL and 0 at first) grown to hold at least need bytes: the
 * capacity doubles from *cap (first when 0) until it does. Returns the array (p itself when
 * it already holds need) with *cap updated, or NULL (out of memory, or need too large to
 * reach by doubling) with p and *cap unchanged. */
static inline void *grow_bytes(void *p, size_t *cap, size_t need, size_t first)
{
	if (need <= *cap)
		return p;
	if (need > SIZE_MAX / 2)
		return NULL;
	size_t n = *cap ? *cap : first;
	while (n < need)
		n *= 2;
	void *q = realloc(p, n);
	if (q)
		*cap = n;
	return q;
}

#endif
