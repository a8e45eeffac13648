/* Connection ids (see id.h): a process-wide counter, seeded at random so that ids from two
 * runs rarely collide in one log, passed through a 32-bit bijection so that neighbours differ
 * in every digit. Bijective, so the ids are unique until the counter wraps at 2^32. */
#include "util/id.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* Only uniqueness matters, which fetch_add gives at any ordering; the seed is published to
 * every thread by pthread_once. */
static _Atomic uint32_t id_counter;
static pthread_once_t id_seed_once = PTHREAD_ONCE_INIT;

static void seed_counter(void)
{
	uint32_t seed;

	if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed)) {
		/* Early boot or a seccomp jail: any start will do, it only spreads runs apart. */
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		seed = (uint32_t)ts.tv_nsec ^ (uint32_t)ts.tv_sec ^ ((uint32_t)getpid() << 16);
	}
	atomic_store_explicit(&id_counter, seed, memory_order_relaxed);
}

/* Xorshifts and odd multiplications mod 2^32 are each invertible, so this is a bijection
 * (the "lowbias32" constants, chosen for good avalanche). */
static uint32_t mix32(uint32_t x)
{
	x ^= x >> 16;
	x *= 0x7feb352dU;
	x ^= x >> 15;
	x *= 0x846ca68bU;
	x ^= x >> 16;
	return x;
}

void id_make(char out[ID_LEN], char kind)
{
	static const char hex[] = "0123456789abcdef";
	uint32_t v;

	pthread_once(&id_seed_once, seed_counter);
	v = mix32(atomic_fetch_add_explicit(&id_counter, 1, memory_order_relaxed));
	out[0] = kind;
	for (int i = 8; i >= 1; i--) {
		out[i] = hex[v & 0xf];
		v >>= 4;
	}
	out[9] = '\0';
}
