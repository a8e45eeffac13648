/* pg_ident.conf: lines tokenized as hba_file's (conftok.c), checked, and kept in file order,
 * since a map's lines are tried one after the other. Owns the entries, their names and their
 * compiled regular expressions. */
#include "auth/ident.h"
#include "auth/conftok.h"
#include "util/file.h"
#include "util/grow.h"

#include <errno.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#define IDENT_FILE_MAX (64u << 20) /* as hba_file's: a bigger file is a mistake */

struct ident_entry {
	int line;
	char *map;
	char *system;  /* as written; for a regular expression, without its leading '/' */
	char *user;    /* NULL for the keyword all */
	bool is_regex;
	/* is_regex only. Workers run regexec on it at once: POSIX makes regexec thread-safe on a
	 * compiled pattern (glibc takes the pattern's own lock). */
	regex_t re;
};

struct ident {
	struct ident_entry *v;
	int n;
	size_t cap; /* bytes of v (grow_bytes) */
};

static void free_entry(struct ident_entry *e)
{
	free(e->map);
	free(e->system);
	free(e->user);
	if (e->is_regex)
		regfree(&e->re);
}

void ident_free(struct ident *id)
{
	if (!id)
		return;
	for (int i = 0; i < id->n; i++)
		free_entry(&id->v[i]);
	free(id->v);
	free(id);
}

/* The single token of field f, or NULL after reporting. */
static const struct conftok_tok *single(struct util_file_report *c, const struct conftok_line *l, int f,
					const char *what)
{
	const struct conftok_tok *t = &l->toks[l->fields[f].first];
	if (l->fields[f].n > 1) {
		util_file_report(c, "the %s must be a single value, not a list", what);
		return NULL;
	}
	if (t->text[0] == '\0') {
		util_file_report(c, "empty %s", what);
		return NULL;
	}
	if (!t->quoted && t->text[0] == '@') {
		util_file_report(c, "file inclusion \"%s\" is not supported (write the lines inline)", t->text);
		return NULL;
	}
	return t;
}

/* One tokenized, non-empty line into e. 0, -ENOMEM, or -EINVAL after reporting. */
static int parse_entry(struct util_file_report *c, const struct conftok_line *l, struct ident_entry *e)
{
	static const char *const what[] = { "map name", "system user name", "database user name" };
	const struct conftok_tok *t[3];

	memset(e, 0, sizeof(*e));
	e->line = c->line;
	if (l->nfields < 3) {
		util_file_report(c, "end of line before the %s", what[l->nfields]);
		return -EINVAL;
	}
	if (l->nfields > 3) {
		util_file_report(c, "unexpected field \"%s\" after the database user name",
				 l->toks[l->fields[3].first].text);
		return -EINVAL;
	}
	for (int f = 0; f < 3; f++)
		if (!(t[f] = single(c, l, f, what[f])))
			return -EINVAL;
	if (!t[2]->quoted && t[2]->text[0] == '+') {
		util_file_report(c, "group membership \"%s\" is not supported (write the user names)", t[2]->text);
		return -EINVAL;
	}
	if (!t[2]->quoted && t[2]->text[0] == '/') {
		/* PostgreSQL 16 reads it as a regular expression, 15 as a name: say which. */
		util_file_report(c, "a regular expression as database user name (\"%s\") is not supported (quote it for a name)",
				 t[2]->text);
		return -EINVAL;
	}
	e->is_regex = t[1]->text[0] == '/';
	if (e->is_regex) {
		int rc = regcomp(&e->re, t[1]->text + 1, REG_EXTENDED);
		if (rc != 0) {
			char msg[256];
			regerror(rc, &e->re, msg, sizeof msg);
			util_file_report(c, "invalid regular expression \"%s\": %s", t[1]->text + 1, msg);
			e->is_regex = false; /* regcomp leaves nothing to free on failure */
			return -EINVAL;
		}
		if (strstr(t[2]->text, "\\1") && e->re.re_nsub < 1) {
			/* PostgreSQL finds this at login; it is a mistake in the file. */
			util_file_report(c, "regular expression \"%s\" has no parenthesized capture for the \\1 in \"%s\"",
					 t[1]->text + 1, t[2]->text);
			regfree(&e->re);
			e->is_regex = false;
			return -EINVAL;
		}
	}
	e->map = strdup(t[0]->text);
	e->system = strdup(t[1]->text + (e->is_regex ? 1 : 0));
	if (!conftok_is(t[2], "all"))
		e->user = strdup(t[2]->text);
	if (!e->map || !e->system || (!e->user && !conftok_is(t[2], "all"))) {
		free_entry(e);
		return -ENOMEM;
	}
	return 0;
}

static int add_entry(void *arg, struct util_file_report *c, const struct conftok_line *l)
{
	struct ident *id = arg;
	struct ident_entry *v = grow_bytes(id->v, &id->cap, (size_t)(id->n + 1) * sizeof(*v), 16 * sizeof(*v));
	if (!v)
		return -ENOMEM;
	id->v = v;
	int rc = parse_entry(c, l, &id->v[id->n]);
	if (rc == 0)
		id->n++;
	return rc;
}

/* The file at path, or else data. */
static int load(struct util_file_report *c, const char *path, const char *data, size_t len, struct ident **out)
{
	struct ident *id = calloc(1, sizeof(*id));
	if (!id) {
		util_file_report(c, "out of memory");
		return c->nerr;
	}
	if (path)
		conftok_parse_file(c, path, IDENT_FILE_MAX, add_entry, id);
	else
		conftok_parse(c, data, len, add_entry, id);
	if (c->nerr) {
		ident_free(id);
		return c->nerr;
	}
	*out = id;
	return 0;
}

int ident_load_buffer(const char *name, const char *data, size_t len, FILE *errout, struct ident **out)
{
	struct util_file_report c = { .name = name, .what = "ident", .errout = errout };
	return load(&c, NULL, data, len, out);
}

int ident_load(const char *path, FILE *errout, struct ident **out)
{
	struct util_file_report c = { .name = path, .what = "ident", .errout = errout };
	return load(&c, path, NULL, 0, out);
}

bool ident_has_map(const struct ident *id, const char *map)
{
	for (int i = 0; id && i < id->n; i++)
		if (strcmp(id->v[i].map, map) == 0)
			return true;
	return false;
}

/* e's DATABASE-USERNAME with its first "\1" replaced by the capture m, as PostgreSQL does,
 * equal to user; false also when the capture took no part in the match (*stop). */
static bool substituted_is(const struct ident_entry *e, const char *system_user, const regmatch_t *m,
			   const char *user, bool *stop)
{
	const char *bs = strstr(e->user, "\\1");
	if (!bs)
		return strcmp(e->user, user) == 0;
	if (m->rm_so < 0) {
		*stop = true;
		return false;
	}
	size_t pre = (size_t)(bs - e->user), cap = (size_t)(m->rm_eo - m->rm_so), ulen = strlen(user);
	const char *post = bs + 2;
	return ulen == pre + cap + strlen(post) && memcmp(user, e->user, pre) == 0 &&
	       memcmp(user + pre, system_user + m->rm_so, cap) == 0 && strcmp(user + pre + cap, post) == 0;
}

bool ident_match(const struct ident *id, const char *map, const char *system_user, const char *user, int *line)
{
	for (int i = 0; id && i < id->n; i++) {
		const struct ident_entry *e = &id->v[i];
		bool stop = false, ok;
		if (strcmp(e->map, map) != 0)
			continue;
		if (e->is_regex) {
			regmatch_t m[2];
			if (regexec(&e->re, system_user, 2, m, 0) != 0)
				continue;
			ok = !e->user || substituted_is(e, system_user, &m[1], user, &stop);
		} else {
			ok = strcmp(e->system, system_user) == 0 && (!e->user || strcmp(e->user, user) == 0);
		}
		if (stop)
			return false;
		if (ok) {
			*line = e->line;
			return true;
		}
	}
	return false;
}

int ident_count(const struct ident *id)
{
	return id->n;
}
