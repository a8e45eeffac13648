/* The tokenizer of PostgreSQL's authentication files (pg_hba.conf, pg_ident.conf), shared by
 * hba.c and ident.c: whitespace-separated fields, each a comma list of tokens, double quotes
 * ("" inside quotes for one quote) and # comments. Internal to src/auth/. */
#ifndef TUSK_AUTH_CONFTOK_H
#define TUSK_AUTH_CONFTOK_H

#include <stdbool.h>
#include <stddef.h>

#include "util/file.h"

/* One token of a line after unquoting; field counts whitespace-separated fields from 0, and
 * the items of a comma list share their field. */
struct conftok_tok {
	const char *text;
	bool quoted;
	int field;
};

struct conftok_field {
	int first; /* index of its first token */
	int n;
};

/* One tokenized line; reused from line to line (zero it first, conftok_line_free at the end). */
struct conftok_line {
	struct conftok_tok *toks;
	struct conftok_field *fields;
	int ntoks;
	int nfields;
	int cap;
	char *scratch; /* unquoted token texts, NUL-separated */
};

/* Split one line (no '\n') into l. 0 (no tokens: a blank or comment line), -ENOMEM, or
 * -EINVAL after reporting through c. */
__attribute__((warn_unused_result))
int conftok_split(struct util_file_report *c, const char *s, size_t len, struct conftok_line *l);

void conftok_line_free(struct conftok_line *l);

/* Called for each line with tokens: 0 (taken), -EINVAL (reported through c; the parse goes on to
 * report every bad line) or -ENOMEM (the parse stops). */
typedef int conftok_line_fn(void *arg, struct util_file_report *c, const struct conftok_line *l);

/* Each line of data through fn. c->nerr (0: every line taken); out of memory is reported as one
 * more error. Bytes need not be NUL-terminated; a NUL byte inside a line is an error. */
int conftok_parse(struct util_file_report *c, const char *data, size_t len, conftok_line_fn *fn, void *arg);

/* conftok_parse over the file at path, at most max bytes (more, or unreadable: one error). */
int conftok_parse_file(struct util_file_report *c, const char *path, size_t max, conftok_line_fn *fn, void *arg);

/* t is the unquoted keyword kw (a quoted "all" is a name, not the keyword). */
bool conftok_is(const struct conftok_tok *t, const char *kw);

#endif
