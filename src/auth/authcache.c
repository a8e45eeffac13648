/* The auth_query cache (see authcache.h): a chained hash table of fixed bucket count under
 * one mutex. Lookups are short (a hash, a few string compares, one copy), so one lock is
 * enough; it is never held across I/O. */
#include "auth/authcache.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct ac_entry {
	struct ac_entry *next;
	uint64_t hash;
	double expires;
	bool no_user;
	char service[AUTHCACHE_NAME_MAX];
	char database[AUTHCACHE_NAME_MAX];
	char user[AUTHCACHE_NAME_MAX];
	char secret[AUTHCACHE_SECRET_MAX];
};

struct authcache {
	pthread_mutex_t lock; /* protects buckets, count and rng: the whole table */
	struct ac_entry **buckets;
	size_t nbuckets; /* a power of two */
	size_t count, max;
	uint64_t rng;    /* xorshift state for picking victims */
};

static uint64_t hash_key(const char *service, const char *database, const char *user)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a over the three names, NUL-separated */
	const char *parts[3] = { service, database, user };
	for (int i = 0; i < 3; i++) {
		for (const char *p = parts[i]; *p; p++)
			h = (h ^ (uint8_t)*p) * 1099511628211ull;
		h = (h ^ 0xff) * 1099511628211ull;
	}
	return h;
}

struct authcache *authcache_new(size_t max_entries)
{
	struct authcache *ac = calloc(1, sizeof *ac);
	if (!ac)
		return NULL;
	ac->max = max_entries ? max_entries : 1;
	ac->nbuckets = 64;
	while (ac->nbuckets < ac->max)
		ac->nbuckets *= 2;
	ac->buckets = calloc(ac->nbuckets, sizeof *ac->buckets);
	if (!ac->buckets) {
		free(ac);
		return NULL;
	}
	ac->rng = 0x9e3779b97f4a7c15ull;
	pthread_mutex_init(&ac->lock, NULL);
	return ac;
}

static void free_entry(struct ac_entry *e)
{
	explicit_bzero(e, sizeof *e);
	free(e);
}

void authcache_free(struct authcache *ac)
{
	if (!ac)
		return;
	for (size_t i = 0; i < ac->nbuckets; i++) {
		while (ac->buckets[i]) {
			struct ac_entry *e = ac->buckets[i];
			ac->buckets[i] = e->next;
			free_entry(e);
		}
	}
	free(ac->buckets);
	pthread_mutex_destroy(&ac->lock);
	free(ac);
}

/* The link that points at the entry for the key, or at the NULL ending its chain. Under lock. */
static struct ac_entry **find(struct authcache *ac, uint64_t h, const char *service, const char *database,
			      const char *user)
{
	struct ac_entry **pp = &ac->buckets[h & (ac->nbuckets - 1)];
	for (; *pp; pp = &(*pp)->next) {
		struct ac_entry *e = *pp;
		if (e->hash == h && strcmp(e->user, user) == 0 && strcmp(e->database, database) == 0 &&
		    strcmp(e->service, service) == 0)
			break;
	}
	return pp;
}

enum authcache_result authcache_get(struct authcache *ac, const char *service, const char *database,
				    const char *user, double now, char out[AUTHCACHE_SECRET_MAX])
{
	uint64_t h = hash_key(service, database, user);
	enum authcache_result r = AUTHCACHE_MISS;

	pthread_mutex_lock(&ac->lock);
	struct ac_entry **pp = find(ac, h, service, database, user);
	struct ac_entry *e = *pp;
	if (e && e->expires <= now) {
		*pp = e->next;
		ac->count--;
		free_entry(e);
	} else if (e && e->no_user) {
		r = AUTHCACHE_NO_USER;
	} else if (e) {
		memcpy(out, e->secret, strlen(e->secret) + 1);
		r = AUTHCACHE_SECRET;
	}
	pthread_mutex_unlock(&ac->lock);
	return r;
}

/* Make room for one entry: drop the first entry of a randomly probed bucket. Under lock. */
static void evict_one(struct authcache *ac)
{
	ac->rng ^= ac->rng << 13;
	ac->rng ^= ac->rng >> 7;
	ac->rng ^= ac->rng << 17;
	size_t b = (size_t)ac->rng & (ac->nbuckets - 1);
	/* Walk forward from the random bucket to the first non-empty one. */
	for (size_t i = 0; i < ac->nbuckets; i++) {
		struct ac_entry **pp = &ac->buckets[(b + i) & (ac->nbuckets - 1)];
		if (*pp) {
			struct ac_entry *e = *pp;
			*pp = e->next;
			ac->count--;
			free_entry(e);
			return;
		}
	}
}

int authcache_put(struct authcache *ac, const char *service, const char *database, const char *user,
		  const char *secret, double expires)
{
	if (strlen(service) >= AUTHCACHE_NAME_MAX || strlen(database) >= AUTHCACHE_NAME_MAX ||
	    strlen(user) >= AUTHCACHE_NAME_MAX)
		return -ENAMETOOLONG;
	if (secret && strlen(secret) >= AUTHCACHE_SECRET_MAX)
		return -EMSGSIZE;
	uint64_t h = hash_key(service, database, user);

	pthread_mutex_lock(&ac->lock);
	struct ac_entry **pp = find(ac, h, service, database, user);
	struct ac_entry *e = *pp;
	if (!e) {
		if (ac->count >= ac->max) {
			evict_one(ac);
			pp = find(ac, h, service, database, user); /* the chain may have changed */
		}
		e = calloc(1, sizeof *e);
		if (!e) {
			pthread_mutex_unlock(&ac->lock);
			return -ENOMEM;
		}
		e->hash = h;
		memcpy(e->service, service, strlen(service) + 1);
		memcpy(e->database, database, strlen(database) + 1);
		memcpy(e->user, user, strlen(user) + 1);
		*pp = e;
		ac->count++;
	}
	explicit_bzero(e->secret, sizeof e->secret);
	e->no_user = secret == NULL;
	if (secret)
		memcpy(e->secret, secret, strlen(secret) + 1);
	e->expires = expires;
	pthread_mutex_unlock(&ac->lock);
	return 0;
}

size_t authcache_count(struct authcache *ac)
{
	pthread_mutex_lock(&ac->lock);
	size_t n = ac->count;
	pthread_mutex_unlock(&ac->lock);
	return n;
}
