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

/* Workers run a map's regular expressions at login, on the CN of a client's certificate or a
 * peer's user name, with glibc's matcher, which takes exponential time on back-references
 * ("(a|aa)*\1*\1*\1*(b|\1)*$" ran past a minute on 51 characters), and whose regcomp copies what a
 * count or a '+' repeats, so that nested or stacked ones multiply ("((((a{200}){200}){200}){200})"
 * took 5 s and gigabytes to fail, "x+++...+" with a hundred '+' ran out of 2 GB; the fuzzer's
 * "@********++++++++++***" took over 10 s), and which never ends on some empty alternatives under
 * a quantifier (the fuzzer's "(||||.|||.Z)*" on "w"). So a pattern is refused with a
 * back-reference (\1 to \9 outside a bracket expression), with stacked quantifiers (PostgreSQL
 * refuses most of them too), with an empty alternative or group ("(|a)", "a||b", "a|", "()"),
 * or when its size after those copies, estimated from above, passes IDENT_REGEX_SIZE_MAX. NULL when
 * the pattern is fine, else why not; regcomp judges its syntax afterwards (and builds what it read
 * before an error, so a pattern it refuses is estimated too). */
#define IDENT_REGEX_SIZE_MAX 10000ul
#define IDENT_REGEX_DEPTH_MAX 64

static unsigned long size_cap(unsigned long v)
{
	return v > IDENT_REGEX_SIZE_MAX ? IDENT_REGEX_SIZE_MAX + 1 : v;
}

/* p at a bracket expression's '[': the byte after its ']', or NULL when it is not closed. A ']'
 * first (after an optional '^') is a member, and so is everything inside [: :], [. .], [= =]. */
static const char *skip_bracket(const char *p)
{
	p++;
	if (*p == '^')
		p++;
	if (*p == ']')
		p++;
	while (*p && *p != ']') {
		if (*p == '[' && (p[1] == ':' || p[1] == '.' || p[1] == '=')) {
			const char *end = strchr(p + 2, p[1]);
			while (end && end[1] != ']')
				end = strchr(end + 1, p[1]);
			if (!end)
				return NULL;
			p = end + 2;
		} else {
			p++;
		}
	}
	return *p ? p + 1 : NULL;
}

/* p at a '{' and a digit: the count's largest number of copies ({m,} counts as m + 1), and *end
 * after the '}' (or wherever the digits stopped: regcomp refuses what is not a count). */
static unsigned long count_copies(const char *p, const char **end)
{
	unsigned long m = 0, n;
	const char *q = p + 1;
	while (*q >= '0' && *q <= '9')
		m = size_cap(m * 10 + (unsigned long)(*q++ - '0'));
	n = m;
	if (*q == ',') {
		q++;
		if (*q >= '0' && *q <= '9') {
			n = 0;
			while (*q >= '0' && *q <= '9')
				n = size_cap(n * 10 + (unsigned long)(*q++ - '0'));
		} else {
			n = m + 1;
		}
	}
	if (*q == '}')
		q++;
	*end = q;
	n = n > m ? n : m;
	return n ? n : 1;
}

static const char *regex_too_costly(const char *re)
{
	/* Per open group: the sizes of its finished alternatives and of the one under way. The last
	 * atom's size (with its quantifiers so far) is held apart until the next atom, since a
	 * quantifier multiplies only it. */
	struct {
		unsigned long alts, seq;
	} g[IDENT_REGEX_DEPTH_MAX + 1] = { { 0, 0 } };
	int d = 0;
	unsigned long last = 0, total = 0;
	bool quantified = false; /* the last atom has a quantifier already */
	bool empty = true, bar = false; /* no atom yet in this alternative; it began at a '|' */
	static const char empty_alt[] = "an empty alternative or group (\"(|a)\", \"a||b\", \"a|\", \"()\") is not "
					"supported: glibc's matcher may never end on one (write \"(a)?\")";
	for (const char *p = re; *p;) {
		unsigned long atom = 1;
		if (!strchr("*?+{", *p))
			quantified = false;
		switch (*p) {
		case '\\':
			if (p[1] >= '1' && p[1] <= '9')
				return "back-references (\\1 to \\9) are not supported: they can take exponential time";
			p += p[1] ? 2 : 1;
			break;
		case '[':
			/* Unclosed, it is the pattern's last atom: regcomp reads up to it before refusing. */
			if (!(p = skip_bracket(p)))
				p = "";
			break;
		case '(':
			g[d].seq = size_cap(g[d].seq + last);
			last = 0;
			if (++d > IDENT_REGEX_DEPTH_MAX)
				return "its groups nest more than 64 deep";
			g[d].alts = g[d].seq = 0;
			empty = true;
			bar = false;
			p++;
			continue;
		case ')':
			if (d > 0 && empty)
				return empty_alt;
			if (d > 0) {
				atom = size_cap(g[d].alts + g[d].seq + last + 1);
				last = 0;
				d--;
			}
			p++;
			break;
		case '|':
			if (empty)
				return empty_alt;
			g[d].alts = size_cap(g[d].alts + g[d].seq + last);
			g[d].seq = last = 0;
			empty = bar = true;
			p++;
			continue;
		case '*':
		case '?':
		case '+':
		case '{':
			if (*p == '{' && !(p[1] >= '0' && p[1] <= '9')) {
				p++;
				break;
			}
			if (quantified)
				return "a quantifier right after a quantifier (\"a**\", \"a+*\", PostgreSQL's non-greedy \"a*?\") is not supported";
			quantified = true;
			if (*p == '{')
				last = size_cap(last * count_copies(p, &p));
			else
				last = size_cap(*p++ == '+' ? last * 2 : last + 1);
			continue;
		default:
			p++;
			break;
		}
		g[d].seq = size_cap(g[d].seq + last);
		last = atom;
		empty = false;
	}
	if (empty && bar)
		return empty_alt;
	for (; d >= 0; d--)
		total = size_cap(total + g[d].alts + g[d].seq);
	total = size_cap(total + last);
	if (total > IDENT_REGEX_SIZE_MAX)
		return "it is too large once what its counts and '+' repeat is copied (over 10000 elements)";
	return NULL;
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
		const char *costly = regex_too_costly(t[1]->text + 1);
		if (costly) {
			util_file_report(c, "regular expression \"%s\": %s", t[1]->text + 1, costly);
			e->is_regex = false;
			return -EINVAL;
		}
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
