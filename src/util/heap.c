/* The heap's counters (heap.h). */
#include "util/heap.h"

#include <string.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HEAP_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define HEAP_ASAN 1
#endif

#if defined(HEAP_ASAN)
/* The sanitizer runtime's (sanitizer/allocator_interface.h, which gcc does not ship). */
size_t __sanitizer_get_current_allocated_bytes(void);
size_t __sanitizer_get_free_bytes(void);
size_t __sanitizer_get_heap_size(void);
#elif defined(__GLIBC__)
#include <malloc.h>
#endif

bool heap_usage(struct heap_usage *out)
{
	memset(out, 0, sizeof *out);
#if defined(HEAP_ASAN)
	out->used = __sanitizer_get_current_allocated_bytes();
	out->free = __sanitizer_get_free_bytes();
	out->total = __sanitizer_get_heap_size();
	return true;
#elif defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
	struct mallinfo2 m = mallinfo2();
	out->used = m.uordblks + m.hblkhd;
	out->free = m.fordblks;
	out->total = m.arena + m.hblkhd;
	return true;
#else
	return false;
#endif
}
