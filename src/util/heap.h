/* What the process's heap holds, from the allocator itself: glibc's counters (mallinfo2, every
 * arena and the mmapped blocks), or a sanitizer's when it owns malloc. For SHOW MEM's "heap"
 * row, and through it for tests that judge memory per connection exactly (RSS moves with
 * page layout and whatever a busy machine leaves resident). */
#ifndef TUSK_UTIL_HEAP_H
#define TUSK_UTIL_HEAP_H

#include <stdbool.h>
#include <stddef.h>

struct heap_usage {
	size_t used;  /* bytes in blocks handed out and not freed */
	size_t free;  /* bytes the allocator holds unused (free blocks, top of its arenas) */
	size_t total; /* bytes the allocator got from the system */
};

/* false when the allocator tells nothing (the fields are then zero). Walks every arena under
 * its lock: for an operator's command, not a hot path. */
bool heap_usage(struct heap_usage *out);

#endif
