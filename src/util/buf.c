/* Fixed-capacity byte buffers (see buf.h). */
#include "util/buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int buf_init(struct buf *b, size_t cap)
{
	b->data = malloc(cap);
	if (!b->data)
		return -ENOMEM;
	b->cap = cap;
	b->start = b->end = 0;
	return 0;
}

void buf_free(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->cap = b->start = b->end = 0;
}

void buf_consume(struct buf *b, size_t n)
{
	b->start += n;
	if (b->start >= b->end)
		b->start = b->end = 0;
}

void buf_produce(struct buf *b, size_t n)
{
	b->end += n;
}

void buf_cut(struct buf *b, size_t off, size_t n)
{
	uint8_t *at = b->data + b->start + off;
	memmove(at, at + n, b->end - b->start - off - n);
	b->end -= n;
}

void buf_compact(struct buf *b)
{
	if (b->start == 0)
		return;
	size_t n = b->end - b->start;
	memmove(b->data, b->data + b->start, n);
	b->start = 0;
	b->end = n;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
	if (buf_room(b) < n) {
		buf_compact(b);
		if (buf_room(b) < n)
			return -ENOSPC;
	}
	memcpy(b->data + b->end, p, n);
	b->end += n;
	return 0;
}

void buf_pool_init(struct buf_pool *p, size_t size, unsigned max)
{
	p->free = NULL;
	p->size = size < sizeof(void *) ? sizeof(void *) : size;
	p->nfree = 0;
	p->low = 0;
#ifdef TUSK_DEBUG_ALLOC
	(void)max;
	p->max = 0;
#else
	p->max = max;
#endif
}

void buf_pool_destroy(struct buf_pool *p)
{
	while (p->free) {
		void *next;
		memcpy(&next, p->free, sizeof next);
		free(p->free);
		p->free = next;
	}
	p->nfree = 0;
}

unsigned buf_pool_trim(struct buf_pool *p)
{
	unsigned n = p->low < p->nfree ? p->low : p->nfree;
	/* Keep the head (the most recently used, likeliest cached); free the rest. */
	void **link = &p->free;
	for (unsigned keep = p->nfree - n; keep > 0; keep--)
		link = (void **)*link;
	void *blk = *link;
	*link = NULL;
	for (unsigned i = 0; i < n; i++) {
		void *next;
		memcpy(&next, blk, sizeof next);
		free(blk);
		blk = next;
	}
	p->nfree -= n;
	p->low = p->nfree;
	return n;
}

int buf_attach(struct buf *b, struct buf_pool *p)
{
	if (b->data)
		return 0;
	uint8_t *blk = p->free;
	if (blk) {
		memcpy(&p->free, blk, sizeof p->free);
		p->nfree--;
		if (p->nfree < p->low)
			p->low = p->nfree;
	} else if (!(blk = malloc(p->size))) {
		return -ENOMEM;
	}
	b->data = blk;
	b->cap = p->size;
	b->start = b->end = 0;
	return 0;
}

void buf_detach(struct buf *b, struct buf_pool *p)
{
	if (!b->data)
		return;
	if (b->cap == p->size && p->nfree < p->max) {
		memcpy(b->data, &p->free, sizeof p->free);
		p->free = b->data;
		p->nfree++;
	} else {
		free(b->data);
	}
	b->data = NULL;
	b->cap = b->start = b->end = 0;
}
