/* Byte buffers: a fixed-capacity window of bytes [start, end) inside data[0, cap).
 * Used for socket reads, relayed bytes and messages tusk builds itself. Capacity is
 * fixed at creation: nothing on the relay path grows a buffer. A buffer may also be
 * detached (no data, capacity 0) and take its block from a buf_pool only while bytes are
 * in flight, so that an idle connection holds none. */
#ifndef TUSK_UTIL_BUF_H
#define TUSK_UTIL_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

struct buf {
	uint8_t *data; /* private */
	size_t cap;    /* read-only */
	size_t start;  /* read-only: first unconsumed byte */
	size_t end;    /* read-only: one past the last byte */
};

/* 0 or -ENOMEM. */
__attribute__((warn_unused_result)) int buf_init(struct buf *b, size_t cap);
void buf_free(struct buf *b);

static inline size_t buf_len(const struct buf *b) { return b->end - b->start; }
static inline const uint8_t *buf_head(const struct buf *b) { return b->data + b->start; }
static inline uint8_t *buf_head_mut(struct buf *b) { return b->data + b->start; }
static inline uint8_t *buf_tail(struct buf *b) { return b->data + b->end; }
static inline size_t buf_room(const struct buf *b) { return b->cap - b->end; }
static inline bool buf_empty(const struct buf *b) { return b->start == b->end; }
static inline void buf_reset(struct buf *b) { b->start = b->end = 0; }

static inline bool buf_attached(const struct buf *b) { return b->data != NULL; }

/* A free list of same-size blocks for buffers that come and go (a client's, while it has
 * bytes in flight). One per worker: not thread-safe. At most `max` free blocks are kept,
 * the rest go back to malloc; with TUSK_DEBUG_ALLOC every block does (AddressSanitizer
 * then sees each use after release). */
struct buf_pool {
	void *free;      /* private: free blocks, linked through their first bytes */
	size_t size;     /* read-only: bytes per block */
	unsigned nfree;  /* read-only: blocks on the free list */
	unsigned max;    /* read-only: bound on nfree */
	unsigned low;    /* private: the fewest free blocks since the last buf_pool_trim */
};

void buf_pool_init(struct buf_pool *p, size_t size, unsigned max);
/* Frees the free list; blocks still attached to buffers are theirs to give back first. */
void buf_pool_destroy(struct buf_pool *p);
/* Free the blocks that stayed on the list since the last call (its low-water mark): a burst
 * of logins fills the list, and its blocks' touched pages would stay resident while every
 * client idles. Call it periodically. Returns the blocks freed. */
unsigned buf_pool_trim(struct buf_pool *p);
/* Give a detached b a block of p (an attached one keeps its own): 0 or -ENOMEM. */
__attribute__((warn_unused_result)) int buf_attach(struct buf *b, struct buf_pool *p);
/* Give b's block back to p, dropping what it holds; b is detached. No-op when detached. */
void buf_detach(struct buf *b, struct buf_pool *p);

/* Mark n bytes at the head consumed; an emptied buffer rewinds to offset 0. */
void buf_consume(struct buf *b, size_t n);
/* Mark n bytes written at the tail (after a read() into buf_tail()). */
void buf_produce(struct buf *b, size_t n);
/* Remove n of the unconsumed bytes at offset off from the head, moving the ones after them
 * back (off + n <= buf_len). */
void buf_cut(struct buf *b, size_t off, size_t n);
/* Move unconsumed bytes to offset 0 so the whole free room is at the tail. */
void buf_compact(struct buf *b);
/* Append n bytes; 0 or -ENOSPC (nothing appended). */
__attribute__((warn_unused_result)) int buf_append(struct buf *b, const void *p, size_t n);

#endif
