/* PostgreSQL's authentication-file tokenizer (see conftok.h). */
#include "auth/conftok.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int push_tok(struct conftok_line *l, const char *text, bool quoted, int field)
{
	if (l->ntoks == l->cap) {
		int cap = l->cap ? l->cap * 2 : 16;
		struct conftok_tok *t = realloc(l->toks, (size_t)cap * sizeof(*t));
		if (!t)
			return -ENOMEM;
		l->toks = t;
		struct conftok_field *f = realloc(l->fields, (size_t)cap * sizeof(*f));
		if (!f)
			return -ENOMEM;
		l->fields = f;
		l->cap = cap;
	}
	l->toks[l->ntoks] = (struct conftok_tok){ .text = text, .quoted = quoted, .field = field };
	if (field == l->nfields) {
		l->fields[l->nfields++] = (struct conftok_field){ .first = l->ntoks, .n = 0 };
	}
	l->fields[field].n++;
	l->ntoks++;
	return 0;
}

int conftok_split(struct util_file_report *c, const char *s, size_t len, struct conftok_line *l)
{
	size_t i = 0;
	char *w;
	int field = -1;

	l->ntoks = 0;
	l->nfields = 0;
	free(l->scratch);
	/* Unquoting never lengthens a token; each token adds one NUL and there are at most len+1. */
	l->scratch = malloc(2 * len + 2);
	if (!l->scratch)
		return -ENOMEM;
	w = l->scratch;
	if (memchr(s, '\0', len)) {
		util_file_report(c, "NUL byte in line");
		return -EINVAL;
	}
	for (;;) {
		while (i < len && util_is_blank(s[i]))
			i++;
		if (i == len || s[i] == '#')
			return 0;
		field++;
		for (;;) {
			char *start = w;
			bool quoted = false, in_quote = false;
			while (i < len) {
				char ch = s[i];
				if (in_quote) {
					if (ch == '"') {
						if (i + 1 < len && s[i + 1] == '"') {
							*w++ = '"';
							i += 2;
							continue;
						}
						in_quote = false;
					} else {
						*w++ = ch;
					}
					i++;
					continue;
				}
				if (ch == ',' || ch == '#' || util_is_blank(ch))
					break;
				if (ch == '"')
					in_quote = quoted = true;
				else
					*w++ = ch;
				i++;
			}
			if (in_quote) {
				util_file_report(c, "unterminated quoted string");
				return -EINVAL;
			}
			*w++ = '\0';
			if (w - 1 == start && !quoted) {
				util_file_report(c, "empty element in a comma-separated list");
				return -EINVAL;
			}
			int rc = push_tok(l, start, quoted, field);
			if (rc < 0)
				return rc;
			if (i < len && s[i] == ',') {
				i++;
				while (i < len && util_is_blank(s[i]))
					i++;
				if (i == len || s[i] == '#') {
					util_file_report(c, "list ends with a comma");
					return -EINVAL;
				}
				continue;
			}
			break;
		}
	}
}

bool conftok_is(const struct conftok_tok *t, const char *kw)
{
	return !t->quoted && strcmp(t->text, kw) == 0;
}

void conftok_line_free(struct conftok_line *l)
{
	free(l->toks);
	free(l->fields);
	free(l->scratch);
	*l = (struct conftok_line){ 0 };
}

int conftok_parse(struct util_file_report *c, const char *data, size_t len, conftok_line_fn *fn, void *arg)
{
	struct conftok_line l = { 0 };
	size_t pos = 0, n;
	const char *s;
	int rc = 0;

	while (rc != -ENOMEM && util_next_line(data, len, &pos, c, &s, &n)) {
		rc = conftok_split(c, s, n, &l);
		if (rc == 0 && l.ntoks > 0)
			rc = fn(arg, c, &l);
	}
	conftok_line_free(&l);
	if (rc == -ENOMEM) {
		c->line = 0;
		util_file_report(c, "out of memory");
	}
	return c->nerr;
}

int conftok_parse_file(struct util_file_report *c, const char *path, size_t max, conftok_line_fn *fn, void *arg)
{
	char *data;
	size_t len;

	if (util_load_file(path, max, false, c, &data, &len) > 0)
		return c->nerr;
	conftok_parse(c, data, len, fn, arg);
	free(data);
	return c->nerr;
}
