/* libFuzzer target for the statement classifier. Besides crashes (libpg_query included), it
 * checks what the classifier promises: entries in range and in order; the lexical filter drops
 * nothing the exhaustive parse finds (so classify_sql equals classify_sql_exhaustive, and
 * classify_maybe_session is true whenever a session statement is there, and its SELECT shortcut
 * answers what its full lexical pass does); and each entry's text,
 * classified alone, is one statement that classifies the same. The input is an exact-size heap
 * copy without a NUL, so ASan flags a read even one byte past it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "router/classify.h"

static void check(int ok)
{
	if (!ok)
		abort();
}

static bool is_session_kind(enum classify_kind k)
{
	return k != CLASSIFY_OTHER && k != CLASSIFY_UNKNOWN && (k < CLASSIFY_BEGIN || k > CLASSIFY_ROLLBACK_TO);
}

static bool same_entry(const struct classify_stmt *a, const struct classify_stmt *b)
{
	return a->kind == b->kind && a->flags == b->flags && strcmp(a->name, b->name) == 0;
}

/* Entries of r for statement index, from *at on; returns how many. */
static int entries_of(const struct classify_result *r, int index, int at)
{
	int n = 0;
	while (at + n < r->nsession && r->stmts[at + n].index == index)
		n++;
	return n;
}

static void check_shape(const struct classify_result *r, size_t textlen)
{
	check(r->nstmts >= 0 && r->nsession >= 0 && r->nsession <= CLASSIFY_MAX_STMTS);
	check(!r->truncated || r->nsession == CLASSIFY_MAX_STMTS);
	if (r->parse_error)
		check(r->nstmts == 0 && r->nsession == 0);
	for (int i = 0; i < r->nsession; i++) {
		const struct classify_stmt *st = &r->stmts[i];
		check(st->kind > CLASSIFY_OTHER && st->kind <= CLASSIFY_UNKNOWN);
		check(st->index >= 0 && st->index < r->nstmts);
		check(i == 0 || st->index >= r->stmts[i - 1].index);
		check(st->length > 0 && st->offset <= textlen && st->length <= textlen - st->offset);
		check(memchr(st->name, '\0', sizeof st->name) != NULL);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct classify_result r, ex, alone;
	char *sql = malloc(size ? size : 1);
	size_t textlen;
	bool maybe;

	check(sql != NULL);
	if (size)
		memcpy(sql, data, size);
	textlen = strnlen(sql, size);
	maybe = classify_maybe_session(sql, size);
	/* The SELECT shortcut answers what the full lexical pass answers. */
	check(maybe == classify_maybe_session_opts(sql, size, CLASSIFY_O_NO_SHORTCUT));

	check(classify_sql(sql, size, &r) == 0);
	check(classify_sql_exhaustive(sql, size, &ex) == 0);
	check_shape(&r, textlen);
	check_shape(&ex, textlen);
	check(r.nstmts == ex.nstmts && r.parse_error == ex.parse_error);
	/* Calls: the pre-check never lets one through that the tree would report. */
	check(r.calls == ex.calls && r.nset_configs == ex.nset_configs);
	if (r.calls || r.nset_configs)
		check(maybe);

	/* Walk both by statement: what the filtered run found, the exhaustive one found the same;
	 * what it skipped, the exhaustive one found nothing in, or could not classify at all. */
	for (int i = 0, j = 0; i < r.nsession || j < ex.nsession;) {
		int index = i < r.nsession ? r.stmts[i].index : r.nstmts;
		if (j < ex.nsession && ex.stmts[j].index < index)
			index = ex.stmts[j].index;
		int nr = entries_of(&r, index, i), nx = entries_of(&ex, index, j);
		bool cut = (r.truncated && i + nr == r.nsession) || (ex.truncated && j + nx == ex.nsession);
		if (nr > 0 && !cut) {
			check(nr == nx);
			for (int k = 0; k < nr; k++) {
				check(same_entry(&r.stmts[i + k], &ex.stmts[j + k]));
				check(r.stmts[i + k].offset == ex.stmts[j + k].offset);
				check(r.stmts[i + k].length == ex.stmts[j + k].length);
			}
		} else if (nr == 0) {
			for (int k = 0; k < nx; k++)
				check(ex.stmts[j + k].kind == CLASSIFY_UNKNOWN);
		}
		for (int k = 0; k < nx; k++)
			if (is_session_kind(ex.stmts[j + k].kind))
				check(maybe);
		i += nr;
		j += nx;
	}

	/* Each statement's text on its own: one statement, classified the same. */
	for (int i = 0; i < r.nsession;) {
		const struct classify_stmt *st = &r.stmts[i];
		int n = entries_of(&r, st->index, i);
		if (r.truncated && i + n == r.nsession)
			break;
		check(classify_sql(sql + st->offset, st->length, &alone) == 0);
		check(!alone.parse_error && alone.nstmts == 1 && alone.nsession == n);
		for (int k = 0; k < n; k++) {
			check(same_entry(&alone.stmts[k], &r.stmts[i + k]));
			check(alone.stmts[k].offset == 0 && alone.stmts[k].length == st->length);
		}
		i += n;
	}

	/* standard_conforming_strings = off: the filter still drops nothing the parser finds. */
	bool maybe_bs = classify_maybe_session_opts(sql, size, CLASSIFY_O_BACKSLASH_QUOTES);
	check(maybe_bs == classify_maybe_session_opts(sql, size, CLASSIFY_O_BACKSLASH_QUOTES | CLASSIFY_O_NO_SHORTCUT));
	check(classify_sql_opts(sql, size, CLASSIFY_O_BACKSLASH_QUOTES, &r) == 0);
	check(classify_sql_exhaustive_opts(sql, size, CLASSIFY_O_BACKSLASH_QUOTES, &ex) == 0);
	check_shape(&r, textlen);
	check(r.nstmts == ex.nstmts && r.parse_error == ex.parse_error);
	check(r.calls == ex.calls && r.nset_configs == ex.nset_configs);
	if (r.calls || r.nset_configs)
		check(maybe_bs);
	for (int j = 0; j < ex.nsession; j++)
		if (is_session_kind(ex.stmts[j].kind))
			check(maybe_bs);

	free(sql);
	return 0;
}
