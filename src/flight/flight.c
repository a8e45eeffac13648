/* SingleFlight table (flight.h). A finished flight leaves the table only if the table still
 * points at it (Go's singleflight lesson): a flight abandoned by a waiter that went on alone
 * must not take a newer flight of the same key with it. */
#include "flight/flight.h"

#include <stdlib.h>
#include <string.h>

#include "flight/key.h"
#include "proto/proto.h"

#define FLIGHT_RESULT_START 512

struct flight {
	struct flight *next; /* bucket chain, under the lock */
	uint64_t hash;
	uint8_t *key;
	size_t key_len;
	struct flight_versions versions;
	struct flight_waiter *waiters; /* under the lock */
	/* leader only, on its worker */
	struct flight_result *buf;
	size_t max, parsed;
	bool done, failed;
	bool extended; /* flight_set_extended */
};

void flight_result_get(struct flight_result *r)
{
	atomic_fetch_add(&r->refs, 1);
}

void flight_result_put(struct flight_result *r)
{
	if (r && atomic_fetch_sub(&r->refs, 1) == 1)
		free(r);
}

void flight_waiter_put(struct flight_waiter *w)
{
	if (w && atomic_fetch_sub(&w->refs, 1) == 1) {
		flight_result_put(w->result);
		free(w);
	}
}

int flight_table_init(struct flight_table *t)
{
	memset(t->buckets, 0, sizeof(t->buckets));
	return -pthread_mutex_init(&t->lock, NULL);
}

void flight_table_destroy(struct flight_table *t)
{
	/* Workers are gone, and every client ended its flight when it closed. */
	pthread_mutex_destroy(&t->lock);
}

static struct flight **find(struct flight_table *t, const uint8_t *key, size_t key_len, uint64_t hash)
{
	struct flight **pp = &t->buckets[hash % FLIGHT_BUCKETS];
	for (; *pp; pp = &(*pp)->next)
		if ((*pp)->hash == hash && flight_key_equal((*pp)->key, (*pp)->key_len, key, key_len))
			return pp;
	return pp;
}

enum flight_role flight_join(struct flight_table *t, const uint8_t *key, size_t key_len, uint64_t hash,
			     const struct flight_versions *v, size_t max_result, struct worker *worker, void *client,
			     struct flight **lead, struct flight_waiter **wait)
{
	enum flight_role role = FLIGHT_ROLE_ALONE;

	*lead = NULL;
	*wait = NULL;
	pthread_mutex_lock(&t->lock);
	struct flight **pp = find(t, key, key_len, hash);
	if (*pp) {
		/* A flight that began before a write to these tables committed may have read the
		 * old rows: no joining it. */
		if (flight_versions_equal(&(*pp)->versions, v)) {
			struct flight_waiter *w = calloc(1, sizeof(*w));
			if (w) {
				atomic_init(&w->refs, 2); /* the list's and the caller's */
				w->worker = worker;
				w->client = client;
				w->listed = true;
				w->flight = *pp;
				w->next = (*pp)->waiters;
				(*pp)->waiters = w;
				*wait = w;
				role = FLIGHT_ROLE_WAIT;
			}
		}
	} else {
		struct flight *f = calloc(1, sizeof(*f));
		uint8_t *k = malloc(key_len);
		/* Most replies a cache takes are a few hundred bytes (RowDescription, a few DataRows,
		 * CommandComplete); the buffer doubles for more. Starting larger and shrinking at the
		 * end left a hole behind every kept result, and the heap grew by pages per miss. */
		struct flight_result *r = malloc(sizeof(*r) + FLIGHT_RESULT_START);
		if (f && k && r) {
			memcpy(k, key, key_len);
			atomic_init(&r->refs, 1);
			r->l2set = false;
			r->len = 0;
			r->cap = FLIGHT_RESULT_START;
			*f = (struct flight){ .hash = hash, .key = k, .key_len = key_len, .versions = *v, .buf = r,
					      .max = max_result };
			*pp = f;
			*lead = f;
			role = FLIGHT_ROLE_LEAD;
		} else {
			free(f);
			free(k);
			free(r);
		}
	}
	pthread_mutex_unlock(&t->lock);
	return role;
}

void flight_set_extended(struct flight *f)
{
	f->extended = true;
}

const struct flight_versions *flight_versions_of(const struct flight *f)
{
	return &f->versions;
}

const uint8_t *flight_key_of(const struct flight *f, size_t *len, uint64_t *hash)
{
	*len = f->key_len;
	*hash = f->hash;
	return f->key;
}

struct flight_result *flight_result_of(const struct flight *f)
{
	return f->buf;
}

int flight_feed(struct flight *f, const uint8_t *p, size_t n)
{
	if (f->failed)
		return -1;
	if (f->done)
		return n ? (f->failed = true, -1) : 1;
	if (n > f->max || f->buf->len > f->max - n) {
		f->failed = true;
		return -1;
	}
	if (f->buf->len + n > f->buf->cap) {
		size_t cap = f->buf->cap;
		while (cap < f->buf->len + n)
			cap *= 2;
		struct flight_result *r = realloc(f->buf, sizeof(*r) + cap);
		if (!r) {
			f->failed = true;
			return -1;
		}
		r->cap = cap;
		f->buf = r;
	}
	memcpy(f->buf->bytes + f->buf->len, p, n);
	f->buf->len += n;
	/* Whole messages from parsed on: only RowDescription, DataRow and CommandComplete, then
	 * one ReadyForQuery 'I' as the very last bytes. */
	while (f->buf->len - f->parsed >= 5) {
		const uint8_t *m = f->buf->bytes + f->parsed;
		struct proto_hdr h;
		if (proto_read_hdr(m, f->buf->len - f->parsed, UINT32_MAX, &h) < 0) { /* a length below 4 */
			f->failed = true;
			return -1;
		}
		uint32_t len = h.len;
		if (f->buf->len - f->parsed < (size_t)len + 1)
			break;
		if (m[0] == 'Z') {
			if (len != 5 || m[5] != 'I' || f->parsed + 6 != f->buf->len) {
				f->failed = true;
				return -1;
			}
			f->buf->len = f->parsed; /* each client gets its own ReadyForQuery */
			f->done = true;
			/* A kept result lives until L1 drops it, counted at its capacity: give back
			 * what the reply did not use. No one else holds it yet. A copy, not a
			 * realloc: shrunk in place, each kept result left a hole behind it too small
			 * for the next flight's buffer, and the worker's heap grew by that buffer
			 * on every miss (issue 28); freed whole, the next flight reuses it. */
			if (f->buf->cap > f->buf->len + 64) {
				struct flight_result *r = malloc(sizeof(*r) + f->buf->len);
				if (r) {
					memcpy(r, f->buf, sizeof(*r) + f->buf->len);
					r->cap = r->len;
					free(f->buf);
					f->buf = r;
				}
			}
			return 1;
		}
		if (f->extended && (m[0] == '1' || m[0] == '2')) {
			/* The leader's own framing: each client gets the one its sequence asks for. */
			if (len != 4) {
				f->failed = true;
				return -1;
			}
			memmove(f->buf->bytes + f->parsed, m + 5, f->buf->len - f->parsed - 5);
			f->buf->len -= 5;
			continue;
		}
		if (m[0] != 'T' && m[0] != 'D' && m[0] != 'C' && !(f->extended && m[0] == 't')) {
			f->failed = true;
			return -1;
		}
		f->parsed += (size_t)len + 1;
	}
	return 0;
}

struct flight_result *flight_end(struct flight_table *t, struct flight *f, bool ok,
				 void (*post)(struct flight_waiter *w, void *arg), void *arg)
{
	struct flight_result *r = ok && f->done && !f->failed ? f->buf : NULL;
	struct flight_waiter *list;

	if (!r)
		flight_result_put(f->buf);
	pthread_mutex_lock(&t->lock);
	struct flight **pp = &t->buckets[f->hash % FLIGHT_BUCKETS];
	while (*pp && *pp != f)
		pp = &(*pp)->next;
	if (*pp)
		*pp = f->next;
	list = f->waiters;
	for (struct flight_waiter *w = list; w; w = w->next) {
		w->listed = false;
		w->flight = NULL;
		if (r) {
			flight_result_get(r);
			w->result = r;
		}
	}
	f->waiters = NULL;
	pthread_mutex_unlock(&t->lock);
	while (list) {
		struct flight_waiter *next = list->next;
		list->next = NULL;
		if (post)
			post(list, arg);
		else
			flight_waiter_put(list);
		list = next;
	}
	free(f->key);
	free(f);
	return r; /* the leader's own reference */
}

bool flight_leave(struct flight_table *t, struct flight_waiter *w)
{
	bool was = false;

	pthread_mutex_lock(&t->lock);
	if (w->listed) {
		for (struct flight_waiter **pp = &w->flight->waiters; *pp; pp = &(*pp)->next) {
			if (*pp == w) {
				*pp = w->next;
				was = true;
				break;
			}
		}
		w->listed = false;
		w->flight = NULL;
	}
	pthread_mutex_unlock(&t->lock);
	if (was)
		flight_waiter_put(w); /* the list's reference */
	return was;
}

void flight_set_l2sig(struct flight *f, const uint64_t sig[2])
{
	f->buf->l2sig[0] = sig[0];
	f->buf->l2sig[1] = sig[1];
	f->buf->l2set = true;
}
