/* The L1 store (lru.h): a chained hash table over a doubly linked LRU list. */
#include "flight/lru.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "flight/key.h"

/* Buckets: from 4096, doubled when the entries outnumber them twice (cache_memory of small
 * results holds hundreds of thousands: fixed buckets made every lookup walk a long chain). */
#define LRU_BUCKETS_MIN 4096
#define LRU_BUCKETS_MAX (1u << 22)

struct entry {
	struct entry *chain;       /* bucket */
	struct entry *prev, *next; /* LRU: head is the most recent */
	uint64_t hash;
	uint8_t *key;
	size_t key_len;
	struct flight_versions versions;
	char database[CONFIG_NAME_MAX];
	struct flight_result *result;
	double expires;
	size_t size; /* counted against the bound */
};

struct flight_lru {
	pthread_mutex_t lock; /* guards everything below */
	struct entry **buckets;
	size_t nbuckets;
	struct entry *head, *tail;
	size_t bytes, entries, memory;
};

struct flight_lru *flight_lru_new(size_t memory)
{
	struct flight_lru *l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	l->nbuckets = LRU_BUCKETS_MIN;
	l->buckets = calloc(l->nbuckets, sizeof(*l->buckets));
	if (!l->buckets || pthread_mutex_init(&l->lock, NULL) != 0) {
		free(l->buckets);
		free(l);
		return NULL;
	}
	l->memory = memory;
	return l;
}

static void unlink_lru(struct flight_lru *l, struct entry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		l->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		l->tail = e->prev;
	e->prev = e->next = NULL;
}

static void push_head(struct flight_lru *l, struct entry *e)
{
	e->prev = NULL;
	e->next = l->head;
	if (l->head)
		l->head->prev = e;
	l->head = e;
	if (!l->tail)
		l->tail = e;
}

static void drop(struct flight_lru *l, struct entry *e)
{
	struct entry **pp = &l->buckets[e->hash % l->nbuckets];
	while (*pp != e)
		pp = &(*pp)->chain;
	*pp = e->chain;
	unlink_lru(l, e);
	l->bytes -= e->size;
	l->entries--;
	flight_result_put(e->result);
	free(e->key);
	free(e);
}

void flight_lru_free(struct flight_lru *l)
{
	if (!l)
		return;
	while (l->head)
		drop(l, l->head);
	pthread_mutex_destroy(&l->lock);
	free(l->buckets);
	free(l);
}

/* Under the lock: twice the buckets, every entry moved to its new chain. */
static void grow(struct flight_lru *l)
{
	size_t n = l->nbuckets * 2;
	struct entry **b = calloc(n, sizeof(*b));

	if (!b)
		return;
	for (size_t i = 0; i < l->nbuckets; i++)
		for (struct entry *e = l->buckets[i], *next; e; e = next) {
			next = e->chain;
			e->chain = b[e->hash % n];
			b[e->hash % n] = e;
		}
	free(l->buckets);
	l->buckets = b;
	l->nbuckets = n;
}

static struct entry *find(struct flight_lru *l, const uint8_t *key, size_t key_len, uint64_t hash)
{
	for (struct entry *e = l->buckets[hash % l->nbuckets]; e; e = e->chain)
		if (e->hash == hash && flight_key_equal(e->key, e->key_len, key, key_len))
			return e;
	return NULL;
}

struct flight_result *flight_lru_get(struct flight_lru *l, struct flight_inval *iv, const uint8_t *key,
				     size_t key_len, uint64_t hash, double now, enum flight_lru_outcome *outcome)
{
	struct flight_result *r = NULL;

	*outcome = FLIGHT_LRU_MISS;
	pthread_mutex_lock(&l->lock);
	struct entry *e = find(l, key, key_len, hash);
	if (e) {
		if (now >= e->expires) {
			*outcome = FLIGHT_LRU_EXPIRED;
			drop(l, e);
		} else if (!flight_inval_current(iv, &e->versions)) {
			*outcome = FLIGHT_LRU_STALE;
			drop(l, e);
		} else {
			*outcome = FLIGHT_LRU_HIT;
			unlink_lru(l, e);
			push_head(l, e);
			r = e->result;
			flight_result_get(r);
		}
	}
	pthread_mutex_unlock(&l->lock);
	return r;
}

int flight_lru_put(struct flight_lru *l, const uint8_t *key, size_t key_len, uint64_t hash,
		   const struct flight_versions *v, const char *database, struct flight_result *r, double expires)
{
	/* What the entry really holds on to: the result's whole buffer, not just its bytes. */
	size_t size = sizeof(struct entry) + key_len + sizeof(*r) + r->cap;
	int evicted = 0;

	if (size > l->memory)
		return 0;
	struct entry *e = calloc(1, sizeof(*e));
	uint8_t *k = malloc(key_len);
	if (!e || !k) {
		free(e);
		free(k);
		return 0;
	}
	memcpy(k, key, key_len);
	*e = (struct entry){ .hash = hash, .key = k, .key_len = key_len, .versions = *v, .result = r,
			     .expires = expires, .size = size };
	snprintf(e->database, sizeof(e->database), "%s", database);
	flight_result_get(r);
	pthread_mutex_lock(&l->lock);
	struct entry *old = find(l, key, key_len, hash);
	if (old)
		drop(l, old);
	while (l->tail && l->bytes + size > l->memory) {
		drop(l, l->tail);
		evicted++;
	}
	if (l->entries >= 2 * l->nbuckets && l->nbuckets < LRU_BUCKETS_MAX)
		grow(l); /* no memory: the chains stay longer */
	e->chain = l->buckets[hash % l->nbuckets];
	l->buckets[hash % l->nbuckets] = e;
	push_head(l, e);
	l->bytes += size;
	l->entries++;
	pthread_mutex_unlock(&l->lock);
	return evicted;
}

int flight_lru_flush(struct flight_lru *l, const char *database)
{
	int n = 0;

	pthread_mutex_lock(&l->lock);
	for (struct entry *e = l->head; e;) {
		struct entry *next = e->next;
		if (!database || strcmp(e->database, database) == 0) {
			drop(l, e);
			n++;
		}
		e = next;
	}
	pthread_mutex_unlock(&l->lock);
	return n;
}

void flight_lru_usage(struct flight_lru *l, size_t *entries, size_t *bytes)
{
	pthread_mutex_lock(&l->lock);
	*entries = l->entries;
	*bytes = l->bytes;
	pthread_mutex_unlock(&l->lock);
}
