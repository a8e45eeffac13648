/* The L1 store (lru.h): a chained hash table over a doubly linked LRU list. */
#include "flight/lru.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "config/config.h"
#include "flight/key.h"

/* Buckets: from 4096, doubled when the entries outnumber them twice (cache_memory of small
 * results holds hundreds of thousands: fixed buckets made every lookup walk a long chain). */
#define LRU_BUCKETS_MIN 4096
#define LRU_BUCKETS_MAX (1u << 22)

/* An entry and its key are one block, carved from slabs the store maps itself (SLAB_BYTES at a
 * time, faulted in by the one mmap). From malloc, they grew a worker thread's glibc arena,
 * which grows a page at a time (an mprotect and a page fault per 4 kB: one per four misses):
 * while cache_memory filled, a miss cost twice the CPU of the same query with the cache off
 * (docs/performance.md). A freed block goes on the free list of its size class (SLAB_GRAIN
 * steps up to SLAB_CLASSES of them); larger blocks, and blocks once the slabs reach
 * cache_memory + one slab, come from malloc. */
#define SLAB_BYTES (1u << 20)
#define SLAB_HEAD 64 /* a slab's first bytes: the link to the next one */
#define SLAB_GRAIN 256
#define SLAB_CLASSES 16

struct entry {
	struct entry *chain;       /* bucket */
	struct entry *prev, *next; /* LRU: head is the most recent */
	uint64_t hash;
	uint8_t *key;              /* right after the entry, in its block */
	size_t key_len;
	unsigned cls;              /* size class of its slab block (blocks of cls * SLAB_GRAIN); 0: malloc */
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
	void *free_blocks[SLAB_CLASSES]; /* per class: each free block's first word links the next */
	void *slabs;                     /* the mapped slabs, linked through their heads */
	uint8_t *bump, *bump_end;        /* what the newest slab has not handed out yet */
	size_t slab_bytes;
};

static unsigned class_of(size_t need)
{
	size_t cls = (need + SLAB_GRAIN - 1) / SLAB_GRAIN;
	return cls <= SLAB_CLASSES ? (unsigned)cls : 0;
}

/* Under the lock: a block for an entry and its key of need bytes, its class in *cls. */
static struct entry *entry_alloc(struct flight_lru *l, size_t need, unsigned *cls)
{
	*cls = class_of(need);
	if (*cls) {
		void **fl = &l->free_blocks[*cls - 1];
		size_t bsize = (size_t)*cls * SLAB_GRAIN;
		if (*fl) {
			void *b = *fl;
			memcpy(fl, b, sizeof(void *));
			return b;
		}
		if ((size_t)(l->bump_end - l->bump) < bsize && l->slab_bytes < l->memory + SLAB_BYTES) {
			uint8_t *m = mmap(NULL, SLAB_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
					  -1, 0);
			if (m != MAP_FAILED) {
				memcpy(m, &l->slabs, sizeof(void *));
				l->slabs = m;
				l->slab_bytes += SLAB_BYTES;
				l->bump = m + SLAB_HEAD;
				l->bump_end = m + SLAB_BYTES;
			}
		}
		if ((size_t)(l->bump_end - l->bump) >= bsize) {
			void *b = l->bump;
			l->bump += bsize;
			return b;
		}
	}
	*cls = 0;
	return malloc(need);
}

static void entry_free(struct flight_lru *l, struct entry *e)
{
	if (e->cls) {
		void **fl = &l->free_blocks[e->cls - 1];
		memcpy(e, fl, sizeof(void *));
		*fl = e;
	} else {
		free(e);
	}
}

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
	entry_free(l, e);
}

void flight_lru_free(struct flight_lru *l)
{
	if (!l)
		return;
	while (l->head)
		drop(l, l->head);
	while (l->slabs) {
		void *next;
		memcpy(&next, l->slabs, sizeof(void *));
		munmap(l->slabs, SLAB_BYTES);
		l->slabs = next;
	}
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
	/* What the entry really holds on to: its whole block and the result's whole buffer. */
	size_t need = sizeof(struct entry) + key_len;
	size_t size = (class_of(need) ? class_of(need) * SLAB_GRAIN : need) + sizeof(*r) + r->cap;
	int evicted = 0;
	unsigned cls;

	if (size > l->memory)
		return 0;
	pthread_mutex_lock(&l->lock);
	struct entry *e = entry_alloc(l, need, &cls);
	if (!e) {
		pthread_mutex_unlock(&l->lock);
		return 0;
	}
	*e = (struct entry){ .hash = hash, .key = (uint8_t *)(e + 1), .key_len = key_len, .cls = cls,
			     .versions = *v, .result = r, .expires = expires, .size = size };
	memcpy(e->key, key, key_len);
	snprintf(e->database, sizeof(e->database), "%s", database);
	flight_result_get(r);
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
