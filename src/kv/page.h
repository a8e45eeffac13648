/* The decoder of a page pulled from a peer (src/kv/replicate.c): the page query's one row of
 * texts (row count, rows as a JSON array, the keyset position of the last row) is hostile
 * input, checked here before anything of it is trusted: the count against the batch, the JSON
 * against the count, the position against the cursor, the snapshot and the last row. Rows
 * themselves are checked again, column by column, by kv._check_pulled in SQL. Pure (fuzzed:
 * fuzz/fuzz_kv_page.c). */
#ifndef TUSK_KV_PAGE_H
#define TUSK_KV_PAGE_H

#include <stddef.h>

/* JSON nesting accepted inside a value: more than PostgreSQL's parser takes at any
 * max_stack_depth an 8 MB stack allows (a deeper value could not be stored); a multiple of 64.
 * Its bit stack is 16 KB of the caller's (a link thread's) stack. */
#define KV_PAGE_MAX_DEPTH (1 << 17)

struct kv_page_in {
	/* the page row, as libpq gives it: NUL-terminated texts, NULL for SQL NULL */
	const char *count, *rows, *pos_w, *pos_ns, *pos_key;
	/* what the pass asked for */
	const char *cursor_w; /* rows come at or after this xid (decimal) */
	const char *xmin;     /* ... and below the snapshot's xmin (decimal) */
	long batch;           /* at most this many */
};

/* 0 with *n the row count, or -EPROTO with the reason in err. */
__attribute__((warn_unused_result))
int kv_page_decode(const struct kv_page_in *in, long *n, char *err, size_t errcap);

#endif
