/* tests/tools/fail_malloc.c: an LD_PRELOAD shim under which malloc() of FAIL_MALLOC_FROM bytes
 * or more, and less than FAIL_MALLOC_TO (when set), returns NULL (ENOMEM), for tests of what
 * tusk does when one allocation of a size it makes at a known moment fails (test_oom_pin.py;
 * the window spares tusk's start, whose log ring is larger). Everything else goes to glibc
 * (__libc_*); calloc and realloc are not touched. glibc only; not for sanitizer builds (ASan
 * owns malloc).
 * Build: cc -O2 -shared -fPIC -o fail_malloc.so tests/tools/fail_malloc.c */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>

extern void *__libc_malloc(size_t);

/* Read at load, before tusk's threads start: no getenv inside malloc. from 0: never fail. */
static size_t fail_from, fail_to = (size_t)-1;

__attribute__((constructor)) static void fail_malloc_init(void)
{
	const char *v = getenv("FAIL_MALLOC_FROM");
	fail_from = v ? strtoull(v, NULL, 10) : 0;
	v = getenv("FAIL_MALLOC_TO");
	if (v)
		fail_to = strtoull(v, NULL, 10);
}

void *malloc(size_t n)
{
	if (fail_from && n >= fail_from && n < fail_to) {
		errno = ENOMEM;
		return NULL;
	}
	return __libc_malloc(n);
}
