/* bench/malloc_count.c: an LD_PRELOAD counter of heap calls (malloc, calloc, realloc, free,
 * posix_memalign, aligned_alloc) for measuring allocations per transaction from outside the
 * process. A thread rewrites "$MALLOC_COUNT_OUT" (atomically, by rename) every 50 ms with
 * the totals "allocations frees"; readers take the difference of two readings.
 * glibc only (it forwards to __libc_*). Not for sanitizer builds: ASan owns malloc.
 * Build: cc -O2 -shared -fPIC -o malloc_count.so bench/malloc_count.c -lpthread */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

/* Relaxed: only totals matter, read by one thread some time later. */
static unsigned long n_alloc, n_free;

static void count(unsigned long *n) { __atomic_add_fetch(n, 1, __ATOMIC_RELAXED); }

void *malloc(size_t n) { count(&n_alloc); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { count(&n_alloc); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { count(&n_alloc); return __libc_realloc(p, n); }
void *aligned_alloc(size_t a, size_t n) { count(&n_alloc); return __libc_memalign(a, n); }
int posix_memalign(void **out, size_t a, size_t n)
{
	count(&n_alloc);
	void *p = __libc_memalign(a, n);
	if (!p)
		return 12; /* ENOMEM */
	*out = p;
	return 0;
}
void free(void *p)
{
	if (p)
		count(&n_free);
	__libc_free(p);
}

static void *writer(void *arg)
{
	const char *out = arg;
	char tmp[4096];
	snprintf(tmp, sizeof tmp, "%s.tmp", out);
	for (;;) {
		usleep(50000);
		/* open/write, not stdio: fopen would allocate, and be counted. */
		char line[64];
		int len = snprintf(line, sizeof line, "%lu %lu\n", __atomic_load_n(&n_alloc, __ATOMIC_RELAXED),
				   __atomic_load_n(&n_free, __ATOMIC_RELAXED));
		int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd < 0)
			continue;
		ssize_t w = write(fd, line, (size_t)len);
		close(fd);
		if (w == len)
			rename(tmp, out);
	}
	return NULL;
}

__attribute__((constructor)) static void start(void)
{
	const char *out = getenv("MALLOC_COUNT_OUT");
	pthread_t t;
	sigset_t all, old;
	if (!out || !*out)
		return;
	/* Signals stay with the program's own threads (tusk sigwaits for them in one). */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	pthread_create(&t, NULL, writer, (void *)out);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}
