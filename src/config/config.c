/* Configuration loading: reads the YAML file with libyaml's document API, checks every key
 * against the tables below and builds one immutable struct tusk_config. Owns every message
 * about a bad configuration; all errors are collected, sorted by line and printed at once. */
#include "config/config.h"
#include "config/ldap_options.h"
#include "config/pgbouncer_names.h"

#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <yaml.h>

#define PATH_LEN 512 /* dotted key paths in messages; longer ones are cut */
#define MS_PER_DAY (24ULL * 3600 * 1000)

/* Enum fields are written through an int pointer. */
_Static_assert(sizeof(enum log_level) == sizeof(int), "enum log_level is int-sized");
_Static_assert(sizeof(enum log_format) == sizeof(int), "enum log_format is int-sized");
_Static_assert(sizeof(enum pool_mode) == sizeof(int), "enum pool_mode is int-sized");

struct loader;

enum key_type {
	KEY_INT,      /* int; bounds on the value */
	KEY_CPUS,     /* int, or "auto" for the online CPUs clamped to the bounds */
	KEY_DURATION, /* uint64_t milliseconds; bounds in milliseconds */
	KEY_SIZE,     /* uint32_t bytes; bounds in bytes (max at most UINT32_MAX) */
	KEY_ENUM,     /* int-sized enum spelled as one of .names */
	KEY_STRING,   /* char *, malloc'd; bounds on the length; no default and not required: NULL */
	KEY_CHARS,    /* char[max + 1] in the struct; bounds on the length */
	KEY_MAPPING,  /* nested struct at .offset, keys in .sub */
	KEY_CUSTOM,   /* .parse does everything; it gets the enclosing struct, not a field */
};

struct enum_name {
	const char *name;
	int value;
};

struct key_table;

/* node is NULL when the key is absent (never for required keys): apply the default. */
typedef void key_parse_fn(struct loader *ld, const yaml_node_t *node, int line, const char *path,
			  char *base);

/* One configuration key. A new key is one row in one of the tables below: the loader, the
 * defaults, config_free and config_check_reload all work from these rows. */
struct key_def {
	const char *name;
	enum key_type type;
	size_t offset;     /* of the field in the enclosing struct (not KEY_CUSTOM) */
	uint64_t min, max; /* value bounds, or length bounds for strings */
	const char *def;   /* default, parsed exactly as if it came from the file */
	bool required;
	bool reloadable;   /* may differ between the running generation and a reloaded one */
	bool secret;       /* never echo the value in a message */
	unsigned auto_div; /* KEY_CPUS: "auto" is the online CPUs divided by it, rounded up (0: all) */
	const struct enum_name *names;         /* KEY_ENUM; ends with a NULL name */
	const char *(*check)(const char *val); /* strings: NULL or what is wrong */
	const struct key_table *sub;           /* KEY_MAPPING */
	key_parse_fn *parse;                   /* KEY_CUSTOM */
	void (*release)(char *base);           /* KEY_CUSTOM: free what .parse allocated */
	bool (*equal)(const char *a, const char *b); /* KEY_CUSTOM and not reloadable */
};

struct key_table {
	const struct key_def *keys;
	size_t n;
};

struct config_error {
	int line;
	size_t seq; /* keeps errors on one line in the order they were found */
	char *text; /* "KEY: message" */
};

struct loader {
	const char *path;
	yaml_document_t doc;
	struct tusk_config *cfg;
	struct config_error *errs;
	size_t nerrs, cap;
	size_t nlost; /* errors found but not recorded for lack of memory; still counted */
};

static void report(struct loader *ld, int line, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void report(struct loader *ld, int line, const char *key, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);

	if (ld->nerrs == ld->cap) {
		size_t cap = ld->cap ? ld->cap * 2 : 16;
		struct config_error *errs = realloc(ld->errs, cap * sizeof(*errs));
		if (!errs) {
			ld->nlost++;
			return;
		}
		ld->errs = errs;
		ld->cap = cap;
	}
	char *text;
	if (asprintf(&text, "%s: %s", key, msg) < 0) {
		ld->nlost++;
		return;
	}
	ld->errs[ld->nerrs] = (struct config_error){ .line = line, .seq = ld->nerrs, .text = text };
	ld->nerrs++;
}

static int compare_errors(const void *a, const void *b)
{
	const struct config_error *x = a, *y = b;

	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static size_t print_errors(struct loader *ld, FILE *errout)
{
	if (ld->nerrs)
		qsort(ld->errs, ld->nerrs, sizeof(*ld->errs), compare_errors);
	for (size_t i = 0; i < ld->nerrs; i++) {
		if (errout)
			fprintf(errout, "%s:%d: %s\n", ld->path, ld->errs[i].line, ld->errs[i].text);
		free(ld->errs[i].text);
	}
	if (ld->nlost && errout)
		fprintf(errout, "%s:0: -: out of memory; %zu more errors not shown\n", ld->path, ld->nlost);
	free(ld->errs);
	return ld->nerrs + ld->nlost;
}

/* ---- Scalars ---------------------------------------------------------------------------- */

/* Decimal digits only: no sign, space or base prefix. *end is left after the digits. A number
 * too large is -ERANGE, but only once the caller knows the rest of the text is valid. */
static int parse_digits(const char *s, uint64_t *out, const char **end)
{
	const char *p = s;
	uint64_t v = 0;
	bool overflow = false;

	for (; *p >= '0' && *p <= '9'; p++) {
		unsigned d = (unsigned)(*p - '0');
		if (v > (UINT64_MAX - d) / 10)
			overflow = true;
		else
			v = v * 10 + d;
	}
	if (p == s)
		return -EINVAL;
	*out = v;
	*end = p;
	return overflow ? -ERANGE : 0;
}

struct unit {
	const char *name;
	uint64_t factor;
};

static int parse_with_units(const char *s, const struct unit *units, uint64_t *out)
{
	const char *rest;
	uint64_t v;
	int r = parse_digits(s, &v, &rest);

	if (r == -EINVAL)
		return r;
	for (const struct unit *u = units; u->name; u++) {
		if (strcmp(rest, u->name) != 0)
			continue;
		if (r < 0)
			return r;
		if (v > UINT64_MAX / u->factor)
			return -ERANGE;
		*out = v * u->factor;
		return 0;
	}
	return -EINVAL;
}

/* No "" entry: a bare number has no unit (config_parse_duration_ms). */
static const struct unit duration_units[] = {
	{ "ms", 1 },         { "s", 1000 },          { "m", 60 * 1000 },
	{ "h", 3600 * 1000 }, { "d", MS_PER_DAY }, { NULL, 0 },
};

static const struct unit size_units[] = {
	{ "", 1 },          { "B", 1 },          { "k", 1ULL << 10 },  { "K", 1ULL << 10 },
	{ "kB", 1ULL << 10 }, { "KB", 1ULL << 10 }, { "M", 1ULL << 20 }, { "MB", 1ULL << 20 },
	{ "G", 1ULL << 30 },  { "GB", 1ULL << 30 }, { NULL, 0 },
};

/* Whether s is digits only (what YAML gives for "server_lifetime: 3600"). */
static bool all_digits(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

int config_parse_duration_ms(const char *s, uint64_t *out)
{
	if (all_digits(s)) {
		/* PgBouncer reads a bare number as seconds, tusk used to read milliseconds: neither
		 * is assumed. Only zero, the same in every unit, is accepted without one. */
		if (strspn(s, "0") != strlen(s))
			return -EDOM;
		*out = 0;
		return 0;
	}
	return parse_with_units(s, duration_units, out);
}

int config_parse_size(const char *s, uint64_t *out)
{
	return parse_with_units(s, size_units, out);
}

/* An optional '-' and digits. Negative values are returned as such for the range check. */
static int parse_int(const char *s, int64_t *out)
{
	bool neg = *s == '-';
	const char *rest;
	uint64_t v;
	int r = parse_digits(s + neg, &v, &rest);

	if (r == -EINVAL || *rest)
		return -EINVAL;
	if (r < 0 || v > INT64_MAX)
		return -ERANGE;
	*out = neg ? -(int64_t)v : (int64_t)v;
	return 0;
}

/* Largest unit that divides v exactly, so that bounds read as the user would write them. */
static const char *format_units(char *buf, size_t n, uint64_t v, const struct unit *units)
{
	const struct unit *best = NULL;

	for (const struct unit *u = units; u->name; u++)
		if (u->name[0] && v % u->factor == 0 && (!best || u->factor > best->factor))
			best = u;
	if (!best || v == 0)
		snprintf(buf, n, "%llu", (unsigned long long)v);
	else
		snprintf(buf, n, "%llu%s", (unsigned long long)(v / best->factor), best->name);
	return buf;
}

static const struct unit size_names[] = {
	{ "B", 1 }, { "kB", 1ULL << 10 }, { "MB", 1ULL << 20 }, { "GB", 1ULL << 30 }, { NULL, 0 },
};

/* A value for a message: quoted, control bytes escaped, long values cut. */
static const char *quote(char *buf, size_t n, const char *s)
{
	size_t o = 0;

	buf[o++] = '"';
	for (; *s && o + 8 < n; s++) {
		unsigned char c = (unsigned char)*s;
		if (c < 0x20 || c == 0x7f || c == '"' || c == '\\')
			o += (size_t)snprintf(buf + o, n - o, c == '"' || c == '\\' ? "\\%c" : "\\x%02x", c);
		else
			buf[o++] = (char)c;
	}
	if (*s) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o++] = '"';
	buf[o] = '\0';
	return buf;
}

/* ---- Nodes ------------------------------------------------------------------------------ */

static int node_line(const yaml_node_t *node)
{
	return (int)node->start_mark.line + 1;
}

static const char *scalar_text(const yaml_node_t *node)
{
	return (const char *)node->data.scalar.value;
}

/* "~", "null", "" and friends, unquoted: YAML's null. */
static bool is_null(const yaml_node_t *node)
{
	static const char *const nulls[] = { "", "~", "null", "Null", "NULL" };

	if (node->type != YAML_SCALAR_NODE || node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	for (size_t i = 0; i < sizeof(nulls) / sizeof(nulls[0]); i++)
		if (strcmp(scalar_text(node), nulls[i]) == 0)
			return true;
	return false;
}

static const char *describe_node(char *buf, size_t n, const yaml_node_t *node)
{
	if (node->type == YAML_MAPPING_NODE)
		return "a mapping";
	if (node->type == YAML_SEQUENCE_NODE)
		return "a sequence";
	if (is_null(node))
		return "nothing";
	return quote(buf, n, scalar_text(node));
}

static void report_type(struct loader *ld, const yaml_node_t *node, const char *path, const char *expected)
{
	char buf[128];

	report(ld, node_line(node), path, "expected %s, found %s", expected, describe_node(buf, sizeof(buf), node));
}

static const yaml_node_t *get_node(struct loader *ld, int index)
{
	return yaml_document_get_node(&ld->doc, index);
}

static bool key_is(const yaml_node_t *key, const char *name)
{
	return key && key->type == YAML_SCALAR_NODE && strcmp(scalar_text(key), name) == 0;
}

/* Value of the first pair whose key is name, or NULL. */
static const yaml_node_t *find_value(struct loader *ld, const yaml_node_t *map, const char *name)
{
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++)
		if (key_is(get_node(ld, p->key), name))
			return get_node(ld, p->value);
	return NULL;
}

/* Whether a pair before p has the same key: the duplicate is reported once, by check_keys. */
static bool is_repeat(struct loader *ld, const yaml_node_t *map, const yaml_node_pair_t *p)
{
	const yaml_node_t *key = get_node(ld, p->key);

	for (const yaml_node_pair_t *q = map->data.mapping.pairs.start; q < p; q++)
		if (key_is(get_node(ld, q->key), scalar_text(key)))
			return true;
	return false;
}

/* Dotted key paths; cut at PATH_LEN, which only shortens a message. */
static void append_path(char out[PATH_LEN], size_t *len, const char *s)
{
	size_t n = strlen(s);

	if (n > PATH_LEN - 1 - *len)
		n = PATH_LEN - 1 - *len;
	memcpy(out + *len, s, n);
	*len += n;
	out[*len] = '\0';
}

static void join_key(char out[PATH_LEN], const char *path, const char *key)
{
	size_t len = 0;

	out[0] = '\0';
	append_path(out, &len, path);
	if (*path)
		append_path(out, &len, ".");
	append_path(out, &len, key);
}

static void join_index(char out[PATH_LEN], const char *path, size_t i)
{
	char index[32];
	size_t len = 0;

	snprintf(index, sizeof(index), "[%zu]", i);
	out[0] = '\0';
	append_path(out, &len, path);
	append_path(out, &len, index);
}

/* Keys must be strings and appear once per mapping. */
static void check_keys(struct loader *ld, const yaml_node_t *map, const char *path)
{
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
		const yaml_node_t *key = get_node(ld, p->key);
		char sub[PATH_LEN];

		if (key->type != YAML_SCALAR_NODE || is_null(key)) {
			report(ld, node_line(key), *path ? path : "-", "keys must be strings");
			continue;
		}
		for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < p; q++) {
			const yaml_node_t *prev = get_node(ld, q->key);
			if (key_is(prev, scalar_text(key))) {
				join_key(sub, path, scalar_text(key));
				report(ld, node_line(key), sub, "duplicate key (first at line %d)", node_line(prev));
				break;
			}
		}
	}
}

/* ---- Values from key tables ------------------------------------------------------------- */

static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), row[64];

	if (lb >= sizeof(row) / sizeof(row[0]) || la >= 64)
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t best = diag + (a[i - 1] != b[j - 1]);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

static const struct key_def *lookup_key(const struct key_table *t, const char *name)
{
	for (size_t i = 0; i < t->n; i++)
		if (strcmp(t->keys[i].name, name) == 0)
			return &t->keys[i];
	return NULL;
}

static void report_unknown(struct loader *ld, const yaml_node_t *key, const char *path, const struct key_table *t)
{
	const char *best = NULL;
	size_t best_d = 3; /* suggest only near misses */
	char sub[PATH_LEN];

	for (size_t i = 0; i < t->n; i++) {
		size_t d = edit_distance(scalar_text(key), t->keys[i].name);
		if (d < best_d) {
			best = t->keys[i].name;
			best_d = d;
		}
	}
	join_key(sub, path, scalar_text(key));
	const struct pgb_name *pgb = pgb_name_find(scalar_text(key));
	if (pgb && pgb->fate == PGB_RENAMED)
		report(ld, node_line(key), sub, "unknown key: PgBouncer's %s is %s in tusk%s%s", pgb->name, pgb->tusk,
		       pgb->note ? "; " : "", pgb->note ? pgb->note : "");
	else if (pgb && pgb->fate == PGB_NOT_NEEDED)
		report(ld, node_line(key), sub, "unknown key: PgBouncer's %s is not needed in tusk: %s", pgb->name, pgb->note);
	else if (pgb && pgb->fate == PGB_MISSING)
		report(ld, node_line(key), sub, "unknown key: PgBouncer's %s has no tusk equivalent (%s)", pgb->name, pgb->note);
	else if (best)
		report(ld, node_line(key), sub, "unknown key (did you mean \"%s\"?)", best);
	else
		report(ld, node_line(key), sub, "unknown key");
}

static void describe_expected(char *buf, size_t n, const struct key_def *d)
{
	size_t o;

	switch (d->type) {
	case KEY_INT:
		snprintf(buf, n, "an integer");
		return;
	case KEY_CPUS:
		snprintf(buf, n, "an integer or \"auto\"");
		return;
	case KEY_DURATION:
		snprintf(buf, n, "a duration such as 250ms, 30s, 5m, 1h or 2d");
		return;
	case KEY_SIZE:
		snprintf(buf, n, "a size such as 512, 64kB, 16MB or 1GB");
		return;
	case KEY_ENUM:
		o = (size_t)snprintf(buf, n, "one of");
		for (const struct enum_name *e = d->names; e->name && o < n; e++)
			o += (size_t)snprintf(buf + o, n - o, "%s %s", e == d->names ? "" : ",", e->name);
		return;
	case KEY_STRING:
	case KEY_CHARS:
		snprintf(buf, n, "a string");
		return;
	case KEY_MAPPING:
	case KEY_CUSTOM:
		snprintf(buf, n, "a mapping");
		return;
	}
}

static void report_range(struct loader *ld, int line, const char *path, const struct key_def *d, const char *text,
			 const struct unit *units)
{
	char lo[32], hi[32], q[128];

	if (units) {
		format_units(lo, sizeof(lo), d->min, units);
		format_units(hi, sizeof(hi), d->max, units);
	} else {
		snprintf(lo, sizeof(lo), "%llu", (unsigned long long)d->min);
		snprintf(hi, sizeof(hi), "%llu", (unsigned long long)d->max);
	}
	report(ld, line, path, "%s is out of range (%s to %s)", quote(q, sizeof(q), text), lo, hi);
}

static void report_bad(struct loader *ld, int line, const char *path, const struct key_def *d, const char *text)
{
	char want[160], q[128];

	describe_expected(want, sizeof(want), d);
	report(ld, line, path, "expected %s, found %s", want, d->secret ? "something else" : quote(q, sizeof(q), text));
}

/* "server_lifetime: 3600" copied from a pgbouncer.ini: say what to write instead. */
static void report_bare_duration(struct loader *ld, int line, const char *path, const char *text)
{
	char q[128], secs[32], best[32];
	uint64_t v;
	const char *rest;

	if (parse_digits(text, &v, &rest) < 0 || v > UINT64_MAX / 1000) {
		report(ld, line, path, "%s has no unit: write it with one (ms, s, m, h or d)", quote(q, sizeof(q), text));
		return;
	}
	snprintf(secs, sizeof(secs), "%llus", (unsigned long long)v);
	format_units(best, sizeof(best), v * 1000, duration_units);
	if (strcmp(secs, best) == 0)
		report(ld, line, path, "%s has no unit: write %s (seconds, PgBouncer's meaning) or %llums",
		       quote(q, sizeof(q), text), secs, (unsigned long long)v);
	else
		report(ld, line, path, "%s has no unit: write %s or %s (seconds, PgBouncer's meaning) or %llums",
		       quote(q, sizeof(q), text), secs, best, (unsigned long long)v);
}

static int online_cpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n < 1 ? 1 : n > INT32_MAX ? INT32_MAX : (int)n;
}

/* Text is a scalar from the file or a default from a table: both go through here. */
static void parse_text(struct loader *ld, const struct key_def *d, const char *text, size_t len, int line,
		       const char *path, char *base)
{
	void *dst = base + d->offset;
	uint64_t u;
	int64_t v;
	int r;

	if (strlen(text) != len) {
		report(ld, line, path, "must not contain NUL bytes");
		return;
	}
	switch (d->type) {
	case KEY_CPUS:
		if (strcmp(text, "auto") == 0) {
			int n = online_cpus();
			if (d->auto_div > 1)
				n = (n + (int)d->auto_div - 1) / (int)d->auto_div;
			*(int *)dst = n < (int)d->min ? (int)d->min : n > (int)d->max ? (int)d->max : n;
			return;
		}
		/* fall through */
	case KEY_INT:
		r = parse_int(text, &v);
		if (r == -EINVAL)
			report_bad(ld, line, path, d, text);
		else if (r < 0 || v < 0 || (uint64_t)v < d->min || (uint64_t)v > d->max)
			report_range(ld, line, path, d, text, NULL);
		else
			*(int *)dst = (int)v;
		return;
	case KEY_DURATION:
	case KEY_SIZE:
		r = d->type == KEY_DURATION ? config_parse_duration_ms(text, &u) : config_parse_size(text, &u);
		if (r == -EDOM)
			report_bare_duration(ld, line, path, text);
		else if (r == -EINVAL)
			report_bad(ld, line, path, d, text);
		else if (r < 0 || u < d->min || u > d->max)
			report_range(ld, line, path, d, text, d->type == KEY_DURATION ? duration_units : size_names);
		else if (d->type == KEY_DURATION)
			*(uint64_t *)dst = u;
		else
			*(uint32_t *)dst = (uint32_t)u;
		return;
	case KEY_ENUM:
		for (const struct enum_name *e = d->names; e->name; e++) {
			if (strcmp(e->name, text) == 0) {
				*(int *)dst = e->value;
				return;
			}
		}
		report_bad(ld, line, path, d, text);
		return;
	case KEY_STRING:
	case KEY_CHARS: {
		const char *problem = d->check ? d->check(text) : NULL;
		char q[128];

		if (len < d->min || len > d->max) {
			report(ld, line, path, "must be %llu to %llu bytes long, found %zu", (unsigned long long)d->min,
			       (unsigned long long)d->max, len);
		} else if (problem) {
			report(ld, line, path, "%s, found %s", problem, d->secret ? "something else" : quote(q, sizeof(q), text));
		} else if (d->type == KEY_CHARS) {
			memcpy(dst, text, len + 1);
		} else {
			char *copy = strdup(text);
			if (!copy) {
				report(ld, line, path, "out of memory");
				return;
			}
			free(*(char **)dst);
			*(char **)dst = copy;
		}
		return;
	}
	case KEY_MAPPING:
	case KEY_CUSTOM:
		break;
	}
}

static void parse_mapping(struct loader *ld, const yaml_node_t *node, int line, const char *path,
			  const struct key_table *t, char *base);

static void parse_value(struct loader *ld, const struct key_def *d, const yaml_node_t *node, int line,
			const char *path, char *base)
{
	char want[160];

	/* A key set to null ("key:" with nothing after it, "~") is the same as leaving it out,
	 * so that a section whose keys are all commented out takes the defaults. */
	if (node && is_null(node) && !d->required)
		node = NULL;
	if (d->type == KEY_MAPPING) {
		parse_mapping(ld, node, line, path, d->sub, base + d->offset);
		return;
	}
	if (d->type == KEY_CUSTOM) {
		d->parse(ld, node, line, path, base);
		return;
	}
	if (!node) {
		if (d->def)
			parse_text(ld, d, d->def, strlen(d->def), line, path, base);
		return;
	}
	if (node->type != YAML_SCALAR_NODE || is_null(node)) {
		describe_expected(want, sizeof(want), d);
		report_type(ld, node, path, want);
		return;
	}
	parse_text(ld, d, scalar_text(node), node->data.scalar.length, node_line(node), path, base);
}

/* node NULL: the mapping is absent, so every key takes its default. line: where to report
 * missing required keys when node is NULL. */
static void parse_mapping(struct loader *ld, const yaml_node_t *node, int line, const char *path,
			  const struct key_table *t, char *base)
{
	bool quiet = false; /* the mapping itself is wrong: do not also report its missing keys */

	if (node && node->type != YAML_MAPPING_NODE) {
		report_type(ld, node, *path ? path : "-", "a mapping");
		node = NULL;
		quiet = true;
	}
	if (node) {
		line = node_line(node);
		check_keys(ld, node, path);
		for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top; p++) {
			const yaml_node_t *key = get_node(ld, p->key);
			if (key->type == YAML_SCALAR_NODE && !is_null(key) && !lookup_key(t, scalar_text(key)) &&
			    !is_repeat(ld, node, p))
				report_unknown(ld, key, path, t);
		}
	}
	/* In table order, not file order: a key may depend on one declared above it (pools on
	 * services). Messages are sorted by line before they are printed. */
	for (size_t i = 0; i < t->n; i++) {
		const struct key_def *d = &t->keys[i];
		const yaml_node_t *value = node ? find_value(ld, node, d->name) : NULL;
		char sub[PATH_LEN];

		join_key(sub, path, d->name);
		if (!value && d->required) {
			if (!quiet)
				report(ld, line, sub, "required key is missing");
			continue;
		}
		parse_value(ld, d, value, line, sub, base);
	}
}

/* ---- Sections with their own shape ------------------------------------------------------ */

static const char *check_log_target(const char *val)
{
	if (strcmp(val, "stderr") == 0 || strcmp(val, "syslog") == 0)
		return NULL;
	if (strncmp(val, "file:", 5) == 0)
		return val[5] ? NULL : "file: needs a path, as in file:/var/log/tusk.log";
	return "expected stderr, syslog or file:PATH";
}

static const char *check_octal_mode(const char *val)
{
	if (strlen(val) > 4 || strspn(val, "01234567") != strlen(val) || strtoul(val, NULL, 8) > 0777)
		return "expected an octal file mode such as 0770 (0 to 0777)";
	return NULL;
}

int config_tls_protocols(const char *val)
{
	static const struct {
		const char *name;
		int bits;
	} words[] = {
		{ "tlsv1.0", 1 }, { "tlsv1.1", 2 }, { "tlsv1.2", 4 }, { "tlsv1.3", 8 },
		{ "secure", 12 }, { "default", 12 }, { "all", 15 }, { "tlsv1", 15 }, { "legacy", 15 },
	};
	int set = 0;
	bool first = true;

	for (const char *p = val;; first = false) {
		size_t n = strcspn(p, ",:");
		const char *w = p;
		size_t wn = n;
		bool negate;
		int bits = -1;

		while (wn > 0 && (*w == ' ' || *w == '\t'))
			w++, wn--;
		while (wn > 0 && (w[wn - 1] == ' ' || w[wn - 1] == '\t'))
			wn--;
		negate = wn > 0 && *w == '!';
		if (negate)
			w++, wn--;
		for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
			if (strlen(words[i].name) == wn && strncasecmp(words[i].name, w, wn) == 0)
				bits = words[i].bits;
		if (bits < 0)
			return -1;
		/* As PgBouncer: a list that starts by taking away starts from all. */
		if (negate && first)
			set = 15;
		set = negate ? set & ~bits : set | bits;
		if (p[n] == '\0')
			break;
		p += n + 1;
	}
	return set == 0 ? -1 : set;
}

static const char *check_tls_protocols(const char *val)
{
	if (config_tls_protocols(val) < 0)
		return "expected TLS versions tlsv1.0, tlsv1.1, tlsv1.2, tlsv1.3 or secure (1.2 and 1.3), all, legacy "
		       "(all), separated by commas, each may be negated with ! (and at least one left)";
	return NULL;
}

unsigned config_unix_socket_mode(const struct tusk_config *cfg)
{
	return (unsigned)strtoul(cfg->unix_socket_mode, NULL, 8);
}

/* A group name, or a gid in digits as PgBouncer takes it (not looked up). */
static int find_group(const char *name, unsigned *gid)
{
	struct group gr, *found = NULL;
	char buf[16384];
	if (strspn(name, "0123456789") == strlen(name) && strlen(name) < 10) {
		*gid = (unsigned)strtoul(name, NULL, 10);
		return 0;
	}
	if (getgrnam_r(name, &gr, buf, sizeof buf, &found) != 0 || !found)
		return -ENOENT;
	*gid = (unsigned)found->gr_gid;
	return 0;
}

static const char *check_group(const char *val)
{
	unsigned gid;
	return find_group(val, &gid) == 0 ? NULL : "no such group on this host";
}

int config_unix_socket_group(const struct tusk_config *cfg, unsigned *gid)
{
	*gid = (unsigned)-1;
	return cfg->unix_socket_group ? find_group(cfg->unix_socket_group, gid) : 0;
}

static const char *check_syslog_facility(const char *val)
{
	return log_syslog_facility(val) < 0 ? "expected auth, authpriv, daemon, user or local0 to local7" : NULL;
}

int config_split_host_port(const char *s, char *host, size_t cap, int *port)
{
	const char *colon = strrchr(s, ':');
	const char *h = s;
	size_t hlen;
	char *end;

	if (!colon || colon == s)
		return -EINVAL;
	hlen = (size_t)(colon - s);
	if (s[0] == '[') {
		if (hlen < 3 || s[hlen - 1] != ']')
			return -EINVAL;
		h = s + 1;
		hlen -= 2;
	} else if (memchr(s, ':', hlen)) {
		return -EINVAL; /* a bare IPv6 address needs brackets */
	}
	if (hlen == 0 || hlen >= cap)
		return -EINVAL;
	errno = 0;
	long p = strtol(colon + 1, &end, 10);
	if (errno || end == colon + 1 || *end || p < 1 || p > 65535)
		return -EINVAL;
	memcpy(host, h, hlen);
	host[hlen] = 0;
	*port = (int)p;
	return 0;
}

static const char *check_host_port(const char *val)
{
	char host[CONFIG_HOST_MAX];
	int port;
	if (config_split_host_port(val, host, sizeof host, &port) < 0)
		return "expected HOST:PORT, as in 127.0.0.1:6490 or [::1]:6490";
	return NULL;
}

static const struct enum_name log_level_names[] = {
	{ "error", LOG_ERROR }, { "warn", LOG_WARN }, { "info", LOG_INFO }, { "debug", LOG_DEBUG }, { NULL, 0 },
};

static const struct enum_name log_format_names[] = {
	{ "text", LOG_FORMAT_TEXT }, { "json", LOG_FORMAT_JSON }, { NULL, 0 },
};

static const struct enum_name client_auth_names[] = {
	{ "trust", CONFIG_AUTH_TRUST },
	{ "reject", CONFIG_AUTH_REJECT },
	{ "password", CONFIG_AUTH_PASSWORD },
	{ "md5", CONFIG_AUTH_MD5 },
	{ "scram-sha-256", CONFIG_AUTH_SCRAM },
	{ "cert", CONFIG_AUTH_CERT },
	{ "peer", CONFIG_AUTH_PEER },
	{ "ldap", CONFIG_AUTH_LDAP },
	{ "pam", CONFIG_AUTH_PAM },
	{ NULL, 0 },
};

static const struct enum_name load_balance_names[] = {
	{ "round-robin", CONFIG_LOAD_BALANCE_ROUND_ROBIN }, { "disable", CONFIG_LOAD_BALANCE_DISABLE }, { NULL, 0 },
};

static const struct enum_name yes_no_names[] = {
	{ "false", 0 }, { "true", 1 }, { "no", 0 }, { "yes", 1 }, { "off", 0 }, { "on", 1 }, { NULL, 0 },
};

static const struct enum_name pool_mode_names[] = {
	{ "session", POOL_MODE_SESSION },
	{ "transaction", POOL_MODE_TRANSACTION },
	{ "statement", POOL_MODE_STATEMENT },
	{ NULL, 0 },
};

#define LOG_FIELD(f) (offsetof(struct tusk_config, log.f) - offsetof(struct tusk_config, log))

/* The logger can change its level at run time, but not its output. */
static const struct key_def log_keys[] = {
	{ .name = "level", .type = KEY_ENUM, .offset = LOG_FIELD(level), .names = log_level_names, .def = "info",
	  .reloadable = true },
	{ .name = "format", .type = KEY_ENUM, .offset = LOG_FIELD(format), .names = log_format_names, .def = "text" },
	{ .name = "target", .type = KEY_STRING, .offset = LOG_FIELD(target), .min = 1, .max = 4096,
	  .check = check_log_target, .def = "stderr" },
	/* openlog(3) is called once, at start. */
	{ .name = "syslog_ident", .type = KEY_STRING, .offset = LOG_FIELD(syslog_ident), .min = 1, .max = 63,
	  .def = "tusk" },
	{ .name = "syslog_facility", .type = KEY_STRING, .offset = LOG_FIELD(syslog_facility), .min = 1, .max = 16,
	  .check = check_syslog_facility, .def = "daemon" },
};
static const struct key_table log_table = { log_keys, sizeof(log_keys) / sizeof(log_keys[0]) };

static const struct enum_name tls_listen_names[] = {
	{ "disable", CONFIG_TLS_DISABLE }, { "allow", CONFIG_TLS_ALLOW }, { "require", CONFIG_TLS_REQUIRE },
	{ "verify-ca", CONFIG_TLS_VERIFY_CA }, { "verify-full", CONFIG_TLS_VERIFY_FULL }, { NULL, 0 },
};

static const struct enum_name tls_service_names[] = {
	{ "disable", CONFIG_STLS_DISABLE }, { "prefer", CONFIG_STLS_PREFER }, { "require", CONFIG_STLS_REQUIRE },
	{ "verify-ca", CONFIG_STLS_VERIFY_CA }, { "verify-full", CONFIG_STLS_VERIFY_FULL }, { NULL, 0 },
};

static const struct enum_name listen_protocol_names[] = {
	{ "postgres", CONFIG_LISTEN_POSTGRES }, { "redis", CONFIG_LISTEN_REDIS }, { NULL, 0 },
};

/* kv_databases: {0: default, 1: sessions}: the namespace of each SELECT index. */
static void parse_kv_databases(struct loader *ld, const yaml_node_t *node, int line, const char *path, char *base)
{
	struct config_listen *l = (struct config_listen *)base;
	char sub[PATH_LEN], q[128];

	(void)line;
	if (!node)
		return;
	if (node->type != YAML_MAPPING_NODE) {
		report_type(ld, node, path, "a mapping of database index to kv namespace, e.g. {0: default, 1: sessions}");
		return;
	}
	for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top; p++) {
		const yaml_node_t *k = get_node(ld, p->key), *v = get_node(ld, p->value);
		const char *kt = k->type == YAML_SCALAR_NODE ? scalar_text(k) : "";
		char *end;
		long idx = strtol(kt, &end, 10);
		if (!*kt || *end || idx < 0 || idx >= CONFIG_KV_DATABASES || (kt[0] == '0' && kt[1])) {
			report(ld, node_line(k), path, "a database index is 0..%d, found %s", CONFIG_KV_DATABASES - 1,
			       quote(q, sizeof q, kt));
			continue;
		}
		join_key(sub, path, kt);
		if (l->kv_databases[idx]) {
			report(ld, node_line(k), sub, "database %ld is mapped twice", idx);
			continue;
		}
		if (v->type != YAML_SCALAR_NODE || is_null(v)) {
			report_type(ld, v, sub, "a kv namespace");
			continue;
		}
		size_t n = v->data.scalar.length;
		if (n < 1 || n > 63 || memchr(scalar_text(v), '\0', n)) {
			report(ld, node_line(v), sub, "a kv namespace is 1 to 63 bytes");
			continue;
		}
		l->kv_databases[idx] = strdup(scalar_text(v));
		if (!l->kv_databases[idx])
			report(ld, node_line(v), sub, "out of memory");
	}
}

static void release_kv_databases(char *base)
{
	struct config_listen *l = (struct config_listen *)base;
	for (int i = 0; i < CONFIG_KV_DATABASES; i++) {
		free(l->kv_databases[i]);
		l->kv_databases[i] = NULL;
	}
}

#define LISTEN_FIELD(f) offsetof(struct config_listen, f)
static const struct key_def listen_keys[] = {
	{ .name = "host", .type = KEY_CHARS, .offset = offsetof(struct config_listen, host), .min = 1,
	  .max = CONFIG_HOST_MAX - 1, .required = true },
	{ .name = "port", .type = KEY_INT, .offset = offsetof(struct config_listen, port), .min = 1, .max = 65535,
	  .def = "6432" },
	{ .name = "tls", .type = KEY_ENUM, .offset = LISTEN_FIELD(tls), .names = tls_listen_names, .def = "disable" },
	{ .name = "tls_cert_file", .type = KEY_STRING, .offset = LISTEN_FIELD(tls_cert_file), .min = 1, .max = 4096 },
	{ .name = "tls_key_file", .type = KEY_STRING, .offset = LISTEN_FIELD(tls_key_file), .min = 1, .max = 4096 },
	{ .name = "tls_ca_file", .type = KEY_STRING, .offset = LISTEN_FIELD(tls_ca_file), .min = 1, .max = 4096 },
	{ .name = "tls_ciphers", .type = KEY_STRING, .offset = LISTEN_FIELD(tls_ciphers), .min = 1, .max = 4096 },
	{ .name = "tls13_ciphers", .type = KEY_STRING, .offset = LISTEN_FIELD(tls13_ciphers), .min = 1, .max = 4096 },
	{ .name = "tls_protocols", .type = KEY_STRING, .offset = LISTEN_FIELD(tls_protocols), .min = 1, .max = 256,
	  .check = check_tls_protocols, .def = "secure" },
	{ .name = "tls_ecdhcurve", .type = KEY_STRING, .offset = LISTEN_FIELD(tls_ecdhcurve), .min = 1, .max = 1024 },
	{ .name = "tls_session_tickets", .type = KEY_ENUM, .offset = LISTEN_FIELD(tls_session_tickets),
	  .names = yes_no_names, .def = "true" },
	{ .name = "protocol", .type = KEY_ENUM, .offset = LISTEN_FIELD(protocol), .names = listen_protocol_names,
	  .def = "postgres" },
	{ .name = "kv_namespace", .type = KEY_STRING, .offset = LISTEN_FIELD(kv_namespace), .min = 1, .max = 63 },
	{ .name = "kv_databases", .type = KEY_CUSTOM, .parse = parse_kv_databases, .release = release_kv_databases },
};
static const struct key_table listen_table = { listen_keys, sizeof(listen_keys) / sizeof(listen_keys[0]) };

static void parse_listen(struct loader *ld, const yaml_node_t *node, int line, const char *path, char *base)
{
	struct tusk_config *cfg = (struct tusk_config *)base;
	size_t n;

	if (!node) {
		cfg->listen = calloc(1, sizeof(*cfg->listen));
		if (!cfg->listen) {
			report(ld, line, path, "out of memory");
			return;
		}
		strcpy(cfg->listen[0].host, "127.0.0.1");
		cfg->listen[0].port = 6432;
		cfg->nlisten = 1;
		return;
	}
	if (node->type != YAML_SEQUENCE_NODE) {
		report_type(ld, node, path, "a sequence of {host, port}");
		return;
	}
	n = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
	if (n == 0) {
		report(ld, node_line(node), path, "list at least one address");
		return;
	}
	cfg->listen = calloc(n, sizeof(*cfg->listen));
	if (!cfg->listen) {
		report(ld, node_line(node), path, "out of memory");
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const yaml_node_t *item = get_node(ld, node->data.sequence.items.start[i]);
		struct config_listen *l = &cfg->listen[cfg->nlisten++];
		char sub[PATH_LEN];

		join_index(sub, path, i);
		parse_mapping(ld, item, node_line(item), sub, &listen_table, (char *)l);
		if (l->tls != CONFIG_TLS_DISABLE && (!l->tls_cert_file || !l->tls_key_file))
			report(ld, node_line(item), sub, "tls %s needs tls_cert_file and tls_key_file",
			       tls_listen_names[l->tls].name);
		if ((l->tls == CONFIG_TLS_VERIFY_CA || l->tls == CONFIG_TLS_VERIFY_FULL) && !l->tls_ca_file)
			report(ld, node_line(item), sub, "tls %s needs tls_ca_file to check client certificates",
			       tls_listen_names[l->tls].name);
		bool dbs = false;
		for (int d = 0; d < CONFIG_KV_DATABASES; d++)
			dbs = dbs || l->kv_databases[d];
		if ((l->kv_namespace || dbs) && l->protocol != CONFIG_LISTEN_REDIS)
			report(ld, node_line(item), sub, "kv_namespace and kv_databases are for protocol redis");
		if (l->kv_namespace && l->kv_databases[0])
			report(ld, node_line(item), sub, "kv_namespace and kv_databases' 0 both name database 0: give one");
		for (size_t j = 0; j < i; j++) {
			if (l->host[0] && l->port && strcmp(cfg->listen[j].host, l->host) == 0 &&
			    cfg->listen[j].port == l->port) {
				report(ld, node_line(item), sub, "same address as %s[%zu]", path, j);
				break;
			}
		}
	}
}

static void free_fields(const struct key_table *t, char *base);

static void release_listen(char *base)
{
	struct tusk_config *cfg = (struct tusk_config *)base;

	for (int i = 0; i < cfg->nlisten; i++)
		free_fields(&listen_table, (char *)&cfg->listen[i]);
	free(cfg->listen);
	cfg->listen = NULL;
	cfg->nlisten = 0;
}

/* "host:port", "host" (port 5432), "[v6]:port" or "[v6]". NULL or what is wrong. */
static const char *parse_host_port(const char *s, struct config_host *h)
{
	const char *host = s, *port = NULL;
	size_t hostlen;

	if (*s == '[') {
		const char *close = strchr(s, ']');
		if (!close)
			return "missing ] after an IPv6 address";
		host = s + 1;
		hostlen = (size_t)(close - host);
		if (close[1] == ':')
			port = close + 2;
		else if (close[1])
			return "expected :PORT after ]";
	} else {
		const char *colon = strchr(s, ':');
		if (colon && strchr(colon + 1, ':'))
			return "put IPv6 addresses in brackets, as in [::1]:5432";
		hostlen = colon ? (size_t)(colon - s) : strlen(s);
		if (colon)
			port = colon + 1;
	}
	if (hostlen == 0)
		return "empty host";
	if (hostlen >= sizeof(h->host))
		return "host name too long";
	memcpy(h->host, host, hostlen);
	h->host[hostlen] = '\0';
	h->port = 5432;
	if (port) {
		int64_t v;
		int r = parse_int(port, &v);
		if (r == -EINVAL || *port == '-')
			return "port must be a number";
		if (r < 0 || v < 1 || v > 65535)
			return "port must be between 1 and 65535";
		h->port = (int)v;
	}
	return NULL;
}

#define HOST_FIELD(f) offsetof(struct config_host, f)
/* The mapping form of a host, {host, port, weight}: a port or weight of its own. */
static const struct key_def host_keys[] = {
	{ .name = "host", .type = KEY_CHARS, .offset = HOST_FIELD(host), .min = 1, .max = CONFIG_HOST_MAX - 1,
	  .required = true, .reloadable = true },
	{ .name = "port", .type = KEY_INT, .offset = HOST_FIELD(port), .min = 1, .max = 65535, .def = "5432",
	  .reloadable = true },
	{ .name = "weight", .type = KEY_INT, .offset = HOST_FIELD(weight), .min = 0, .max = 65535, .def = "1",
	  .reloadable = true },
};
static const struct key_table host_table = { host_keys, sizeof(host_keys) / sizeof(host_keys[0]) };

static void parse_hosts(struct loader *ld, const yaml_node_t *node, int line, const char *path, char *base)
{
	struct config_service *svc = (struct config_service *)base;
	size_t n;

	(void)line;
	if (!node)
		return; /* dns or srv instead: parse_services checks that exactly one is there */
	if (node->type != YAML_SEQUENCE_NODE) {
		report_type(ld, node, path, "a sequence of \"host:port\" or {host, port, weight}");
		return;
	}
	n = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
	if (n == 0) {
		report(ld, node_line(node), path, "list at least one host");
		return;
	}
	svc->hosts = calloc(n, sizeof(*svc->hosts));
	if (!svc->hosts) {
		report(ld, node_line(node), path, "out of memory");
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const yaml_node_t *item = get_node(ld, node->data.sequence.items.start[i]);
		struct config_host *h = &svc->hosts[svc->nhosts];
		const char *problem;
		char sub[PATH_LEN], q[128];

		join_index(sub, path, i);
		if (item->type == YAML_MAPPING_NODE) {
			size_t before = ld->nerrs + ld->nlost;
			parse_mapping(ld, item, node_line(item), sub, &host_table, (char *)h);
			if (ld->nerrs + ld->nlost == before)
				svc->nhosts++;
			continue;
		}
		if (item->type != YAML_SCALAR_NODE || is_null(item)) {
			report_type(ld, item, sub, "\"host:port\" or {host, port, weight}");
			continue;
		}
		problem = parse_host_port(scalar_text(item), h);
		if (problem) {
			report(ld, node_line(item), sub, "%s, found %s", problem, quote(q, sizeof(q), scalar_text(item)));
		} else {
			h->weight = 1;
			svc->nhosts++;
		}
	}
}

static void release_hosts(char *base)
{
	struct config_service *svc = (struct config_service *)base;

	free(svc->hosts);
	svc->hosts = NULL;
	svc->nhosts = 0;
}

/* Nameservers are addresses, never names: resolving the resolver's own servers would need a
 * resolver. "ADDR", "ADDR:PORT", "[V6]" or "[V6]:PORT"; port 53 by default. */
static void parse_nameservers(struct loader *ld, const yaml_node_t *node, int line, const char *path, char *base)
{
	struct config_service *svc = (struct config_service *)base;
	size_t n;

	(void)line;
	if (!node)
		return;
	if (node->type != YAML_SEQUENCE_NODE) {
		report_type(ld, node, path, "a sequence of \"address:port\"");
		return;
	}
	n = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
	if (n == 0) {
		report(ld, node_line(node), path, "list at least one nameserver, or leave the key out for the system's");
		return;
	}
	if (n > 16) {
		report(ld, node_line(node), path, "at most 16 nameservers, found %zu", n);
		return;
	}
	svc->nameservers = calloc(n, sizeof(*svc->nameservers));
	if (!svc->nameservers) {
		report(ld, node_line(node), path, "out of memory");
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const yaml_node_t *item = get_node(ld, node->data.sequence.items.start[i]);
		struct config_host *h = &svc->nameservers[svc->nnameservers];
		unsigned char addr[sizeof(struct in6_addr)];
		const char *problem;
		char sub[PATH_LEN], q[128];

		join_index(sub, path, i);
		if (item->type != YAML_SCALAR_NODE || is_null(item)) {
			report_type(ld, item, sub, "\"address:port\"");
			continue;
		}
		problem = parse_host_port(scalar_text(item), h);
		if (!problem && inet_pton(AF_INET, h->host, addr) != 1 && inet_pton(AF_INET6, h->host, addr) != 1)
			problem = "a nameserver must be a numeric IPv4 or IPv6 address";
		if (problem) {
			report(ld, node_line(item), sub, "%s, found %s", problem, quote(q, sizeof(q), scalar_text(item)));
			continue;
		}
		const char *text = scalar_text(item);
		if (text[0] == '[' ? !strstr(text, "]:") : !strchr(text, ':'))
			h->port = 53; /* parse_host_port's default is PostgreSQL's */
		h->weight = 1;
		svc->nnameservers++;
	}
}

static void release_nameservers(char *base)
{
	struct config_service *svc = (struct config_service *)base;

	free(svc->nameservers);
	svc->nameservers = NULL;
	svc->nnameservers = 0;
}

/* A DNS name: 1..253 bytes of letters, digits, '-', '_' and '.', no empty label. */
static const char *check_dns_name(const char *val)
{
	size_t label = 0;

	if (strlen(val) > 253)
		return "a DNS name is at most 253 bytes";
	for (const char *c = val; *c; c++) {
		if (*c == '.') {
			if (label == 0)
				return "empty label in DNS name";
			label = 0;
			continue;
		}
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '-' ||
		      *c == '_'))
			return "a DNS name has only letters, digits, '-', '_' and '.'";
		if (++label > 63)
			return "a DNS label is at most 63 bytes";
	}
	return NULL;
}

static const char *check_srv_name(const char *val)
{
	const char *problem = check_dns_name(val);
	const char *dot;

	if (problem)
		return problem;
	/* RFC 2782: _Service._Proto.Name; PostgreSQL speaks TCP only. */
	dot = strchr(val, '.');
	if (val[0] != '_' || !dot || strncmp(dot, "._tcp.", 6) != 0 || !dot[6])
		return "expected _SERVICE._tcp.NAME, as in _postgresql._tcp.db.example";
	return NULL;
}

#define SVC_FIELD(f) offsetof(struct config_service, f)
static const struct key_def service_keys[] = {
	{ .name = "hosts", .type = KEY_CUSTOM, .reloadable = true, .parse = parse_hosts, .release = release_hosts },
	{ .name = "dns", .type = KEY_CHARS, .offset = SVC_FIELD(dns), .min = 1, .max = CONFIG_HOST_MAX - 1,
	  .check = check_dns_name, .reloadable = true },
	{ .name = "port", .type = KEY_INT, .offset = SVC_FIELD(port), .min = 1, .max = 65535, .def = "5432",
	  .reloadable = true },
	{ .name = "srv", .type = KEY_CHARS, .offset = SVC_FIELD(srv), .min = 1, .max = CONFIG_HOST_MAX - 1,
	  .check = check_srv_name, .reloadable = true },
	{ .name = "nameservers", .type = KEY_CUSTOM, .reloadable = true, .parse = parse_nameservers,
	  .release = release_nameservers },
	{ .name = "dns_min_ttl", .type = KEY_DURATION, .offset = SVC_FIELD(dns_min_ttl_ms), .min = 100,
	  .max = MS_PER_DAY, .def = "5s", .reloadable = true },
	{ .name = "dns_max_ttl", .type = KEY_DURATION, .offset = SVC_FIELD(dns_max_ttl_ms), .min = 100,
	  .max = MS_PER_DAY, .def = "5m", .reloadable = true },
	/* Absent (0): dns_max_ttl. */
	{ .name = "dns_nxdomain_ttl", .type = KEY_DURATION, .offset = SVC_FIELD(dns_nxdomain_ttl_ms), .min = 100,
	  .max = MS_PER_DAY, .reloadable = true },
	{ .name = "load_balance_hosts", .type = KEY_ENUM, .offset = SVC_FIELD(load_balance_hosts),
	  .names = load_balance_names, .def = "round-robin", .reloadable = true },
	{ .name = "max_per_host", .type = KEY_INT, .offset = SVC_FIELD(max_per_host), .min = 0, .max = 10000,
	  .def = "0", .reloadable = true },
	{ .name = "tls", .type = KEY_ENUM, .offset = offsetof(struct config_service, tls), .names = tls_service_names,
	  .def = "disable", .reloadable = true },
	{ .name = "tls_ca_file", .type = KEY_STRING, .offset = offsetof(struct config_service, tls_ca_file), .min = 1,
	  .max = 4096, .reloadable = true },
	{ .name = "tls_cert_file", .type = KEY_STRING, .offset = offsetof(struct config_service, tls_cert_file), .min = 1,
	  .max = 4096, .reloadable = true },
	{ .name = "tls_key_file", .type = KEY_STRING, .offset = offsetof(struct config_service, tls_key_file), .min = 1,
	  .max = 4096, .reloadable = true },
	{ .name = "tls_protocols", .type = KEY_STRING, .offset = SVC_FIELD(tls_protocols), .min = 1, .max = 256,
	  .check = check_tls_protocols, .def = "secure", .reloadable = true },
	{ .name = "tls_ciphers", .type = KEY_STRING, .offset = SVC_FIELD(tls_ciphers), .min = 1, .max = 4096,
	  .reloadable = true },
	{ .name = "tls13_ciphers", .type = KEY_STRING, .offset = SVC_FIELD(tls13_ciphers), .min = 1, .max = 4096,
	  .reloadable = true },
};
static const struct key_table service_table = { service_keys, sizeof(service_keys) / sizeof(service_keys[0]) };

/* Exactly one source of backends; keys that belong to another source are mistakes. */
static void check_discovery(struct loader *ld, const yaml_node_t *map, int line, const char *path,
			    struct config_service *svc)
{
	const yaml_node_t *hosts = NULL, *dns = NULL, *srv = NULL, *port = NULL;
	int given;
	char sub[PATH_LEN];

	if (!map || map->type != YAML_MAPPING_NODE)
		return; /* reported by parse_mapping */
	hosts = find_value(ld, map, "hosts");
	dns = find_value(ld, map, "dns");
	srv = find_value(ld, map, "srv");
	port = find_value(ld, map, "port");
	given = !!hosts + !!dns + !!srv;
	if (given == 0) {
		join_key(sub, path, "hosts");
		report(ld, line, sub, "required key is missing (or give dns: NAME, or srv: _postgresql._tcp.NAME)");
		return;
	}
	if (given > 1) {
		report(ld, line, path, "give exactly one of hosts, dns and srv (found %s%s%s)", hosts ? "hosts " : "",
		       dns ? "dns " : "", srv ? "srv" : "");
		return;
	}
	svc->discovery = dns ? CONFIG_DISCOVERY_DNS : srv ? CONFIG_DISCOVERY_SRV : CONFIG_DISCOVERY_HOSTS;
	if (port && !dns) {
		join_key(sub, path, "port");
		report(ld, node_line(port), sub, "only with dns: %s", srv ? "SRV records carry their own ports"
									  : "give each host its port, as in db1:5433");
	}
	if (svc->load_balance_hosts == CONFIG_LOAD_BALANCE_DISABLE && !hosts) {
		join_key(sub, path, "load_balance_hosts");
		report(ld, line, sub, "disable orders a hosts list; %s", srv ? "SRV records order by their priority"
									: "a name's addresses have no order");
	}
	if (svc->dns_min_ttl_ms > svc->dns_max_ttl_ms) {
		join_key(sub, path, "dns_min_ttl");
		report(ld, line, sub, "%llums is larger than dns_max_ttl (%llums)",
		       (unsigned long long)svc->dns_min_ttl_ms, (unsigned long long)svc->dns_max_ttl_ms);
	}
}

static void parse_services(struct loader *ld, const yaml_node_t *node, int line, const char *path, char *base)
{
	struct tusk_config *cfg = (struct tusk_config *)base;
	size_t n;

	(void)line; /* required: node is never NULL */
	if (node->type != YAML_MAPPING_NODE) {
		report_type(ld, node, path, "a mapping of service names");
		return;
	}
	n = (size_t)(node->data.mapping.pairs.top - node->data.mapping.pairs.start);
	if (n == 0) {
		report(ld, node_line(node), path, "define at least one service");
		return;
	}
	cfg->services = calloc(n, sizeof(*cfg->services));
	if (!cfg->services) {
		report(ld, node_line(node), path, "out of memory");
		return;
	}
	check_keys(ld, node, path);
	for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top; p++) {
		const yaml_node_t *key = get_node(ld, p->key);
		struct config_service *svc;
		char sub[PATH_LEN];
		size_t len;

		if (key->type != YAML_SCALAR_NODE || is_null(key) || is_repeat(ld, node, p))
			continue; /* reported by check_keys */
		join_key(sub, path, scalar_text(key));
		len = key->data.scalar.length;
		if (len == 0 || len >= CONFIG_NAME_MAX || strlen(scalar_text(key)) != len) {
			report(ld, node_line(key), sub, "service names must be 1 to %d bytes, without NUL",
			       CONFIG_NAME_MAX - 1);
			continue;
		}
		svc = &cfg->services[cfg->nservices++];
		memcpy(svc->name, scalar_text(key), len + 1);
		parse_mapping(ld, get_node(ld, p->value), node_line(key), sub, &service_table, (char *)svc);
		check_discovery(ld, get_node(ld, p->value), node_line(key), sub, svc);
		if (!svc->tls_cert_file != !svc->tls_key_file)
			report(ld, node_line(key), sub, "tls_cert_file and tls_key_file go together");
	}
}


static void release_services(char *base)
{
	struct tusk_config *cfg = (struct tusk_config *)base;

	for (int i = 0; i < cfg->nservices; i++)
		free_fields(&service_table, (char *)&cfg->services[i]);
	free(cfg->services);
	cfg->services = NULL;
	cfg->nservices = 0;
}

#define RULE_FIELD(f) offsetof(struct config_pool_rule, f)

/* The user name is always bound as $1 (extended protocol), never pasted into the text;
 * a query with no $1, or with $2 and up, could not be run with that one parameter. */
static const char *check_auth_query(const char *val)
{
	bool has_1 = false;
	for (const char *q = val; (q = strchr(q, '$')) != NULL;) {
		q++;
		if (*q < '0' || *q > '9')
			continue; /* $$ or $tag$ quoting */
		long n = 0;
		while (*q >= '0' && *q <= '9' && n < 1000)
			n = n * 10 + (*q++ - '0');
		if (n != 1)
			return "must use $1 for the user name (and no other parameter)";
		has_1 = true;
	}
	return has_1 ? NULL : "must use $1 for the user name (and no other parameter)";
}

/* client_auth: ldap's options, checked as hba_file's ldap lines are (config/ldap_options.h). */
static const char *check_ldap_options(const char *val)
{
	static _Thread_local char msg[256];
	struct config_ldap o;
	int rc = config_ldap_parse(val, &o, msg, sizeof msg);
	explicit_bzero(&o, sizeof o); /* ldapbindpasswd */
	return rc < 0 ? msg : NULL;
}

/* client_auth: pam's service: a file name of /etc/pam.d, which libpam reads as such (a '/'
 * would name another directory's file). */
static const char *check_pam_service(const char *val)
{
	return strchr(val, '/') ? "must be a file name of /etc/pam.d (no '/')" : NULL;
}

#define AUTH_QUERY_DEFAULT "SELECT usename, passwd FROM pg_shadow WHERE usename=$1"

/* ---- the result cache: keys shared by the top level and the pool rules ----------------- */

/* libpq's names, so that users need not learn new ones; read-write-split is tusk's own. */
static const struct enum_name target_names[] = {
	{ "any", CONFIG_TARGET_ANY },
	{ "read-write", CONFIG_TARGET_READ_WRITE },
	{ "primary", CONFIG_TARGET_PRIMARY },
	{ "read-only", CONFIG_TARGET_READ_ONLY },
	{ "standby", CONFIG_TARGET_STANDBY },
	{ "prefer-standby", CONFIG_TARGET_PREFER_STANDBY },
	{ "read-write-split", CONFIG_TARGET_READ_WRITE_SPLIT },
	{ NULL, 0 },
};

static const struct enum_name cache_inval_names[] = {
	{ "tusk", CONFIG_CACHE_INVAL_TUSK }, { "logical", CONFIG_CACHE_INVAL_LOGICAL }, { NULL, 0 },
};

static const struct enum_name active_limit_names[] = {
	{ "off", CONFIG_ACTIVE_LIMIT_OFF }, { "adaptive", CONFIG_ACTIVE_LIMIT_ADAPTIVE }, { NULL, 0 },
};

static const struct enum_name cache_names[] = {
	{ "off", CONFIG_CACHE_OFF }, { "coalesce", CONFIG_CACHE_COALESCE }, { "on", CONFIG_CACHE_ON }, { NULL, 0 },
};

/* "table" or "schema.table": each part 1..63 bytes, no quote, NUL or space, so that it can be
 * compared with the parser's normalised names byte for byte. */
static const char *check_table_name(const char *name, size_t len)
{
	const char *dot = memchr(name, '.', len);
	size_t a = dot ? (size_t)(dot - name) : len, b = dot ? len - a - 1 : 1;

	if (strlen(name) != len || strpbrk(name, "\" \t"))
		return "must be table or schema.table, without quotes or spaces";
	if (a == 0 || b == 0 || a >= CONFIG_NAME_MAX || b >= CONFIG_NAME_MAX || (dot && memchr(dot + 1, '.', b)))
		return "must be table or schema.table, each part 1 to 63 bytes";
	return NULL;
}

static void parse_table_list(struct loader *ld, const yaml_node_t *node, const char *path, char ***names, int *n)
{
	size_t count;

	if (!node)
		return;
	if (node->type != YAML_SEQUENCE_NODE) {
		report_type(ld, node, path, "a sequence of table names");
		return;
	}
	count = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
	if (count == 0)
		return;
	*names = calloc(count, sizeof(**names));
	if (!*names) {
		report(ld, node_line(node), path, "out of memory");
		return;
	}
	for (size_t i = 0; i < count; i++) {
		const yaml_node_t *item = get_node(ld, node->data.sequence.items.start[i]);
		const char *problem;
		char sub[PATH_LEN], q[128];

		join_index(sub, path, i);
		if (item->type != YAML_SCALAR_NODE || is_null(item)) {
			report_type(ld, item, sub, "a table name");
			continue;
		}
		problem = check_table_name(scalar_text(item), item->data.scalar.length);
		if (problem) {
			report(ld, node_line(item), sub, "%s, found %s", problem, quote(q, sizeof(q), scalar_text(item)));
			continue;
		}
		(*names)[*n] = strdup(scalar_text(item));
		if (!(*names)[*n]) {
			report(ld, node_line(item), sub, "out of memory");
			continue;
		}
		(*n)++;
	}
}

static void free_table_list(char ***names, int *n)
{
	for (int i = 0; i < *n; i++)
		free((*names)[i]);
	free(*names);
	*names = NULL;
	*n = 0;
}

static void parse_rule_cache_tables(struct loader *ld, const yaml_node_t *node, int line, const char *path, char *base)
{
	struct config_pool_rule *r = (struct config_pool_rule *)base;
	(void)line;
	parse_table_list(ld, node, path, &r->cache_tables, &r->ncache_tables);
}

static void parse_rule_cache_exclude(struct loader *ld, const yaml_node_t *node, int line, const char *path, char *base)
{
	struct config_pool_rule *r = (struct config_pool_rule *)base;
	(void)line;
	parse_table_list(ld, node, path, &r->cache_exclude_tables, &r->ncache_exclude_tables);
}

static void release_rule_cache_tables(char *base)
{
	struct config_pool_rule *r = (struct config_pool_rule *)base;
	free_table_list(&r->cache_tables, &r->ncache_tables);
}

static void release_rule_cache_exclude(char *base)
{
	struct config_pool_rule *r = (struct config_pool_rule *)base;
	free_table_list(&r->cache_exclude_tables, &r->ncache_exclude_tables);
}

static void parse_top_cache_tables(struct loader *ld, const yaml_node_t *node, int line, const char *path, char *base)
{
	struct tusk_config *c = (struct tusk_config *)base;
	(void)line;
	parse_table_list(ld, node, path, &c->cache_tables, &c->ncache_tables);
}

static void parse_top_cache_exclude(struct loader *ld, const yaml_node_t *node, int line, const char *path, char *base)
{
	struct tusk_config *c = (struct tusk_config *)base;
	(void)line;
	parse_table_list(ld, node, path, &c->cache_exclude_tables, &c->ncache_exclude_tables);
}

static void release_top_cache_tables(char *base)
{
	struct tusk_config *c = (struct tusk_config *)base;
	free_table_list(&c->cache_tables, &c->ncache_tables);
}

static void release_top_cache_exclude(char *base)
{
	struct tusk_config *c = (struct tusk_config *)base;
	free_table_list(&c->cache_exclude_tables, &c->ncache_exclude_tables);
}

/* The rule keys pool_defaults also takes (ints and enums: inherit_pool_defaults copies them
 * by offset). A rule that omits client_auth gets pool_defaults.client_auth, never trust behind
 * the operator's back. */
#define POOL_DEFAULTABLE_KEYS                                                                                       \
	{ .name = "mode", .type = KEY_ENUM, .offset = RULE_FIELD(mode), .names = pool_mode_names, .def = "session", \
	  .reloadable = true }, \
	{ .name = "size", .type = KEY_INT, .offset = RULE_FIELD(size), .min = 1, .max = 10000, .def = "20", \
	  .reloadable = true }, \
	{ .name = "min_size", .type = KEY_INT, .offset = RULE_FIELD(min_size), .min = 0, .max = 10000, .def = "0", \
	  .reloadable = true }, \
	{ .name = "active_limit", .type = KEY_ENUM, .offset = RULE_FIELD(active_limit), .names = active_limit_names, \
	  .def = "off", .reloadable = true }, \
	{ .name = "active_limit_min", .type = KEY_INT, .offset = RULE_FIELD(active_limit_min), .min = 1, \
	  .max = 10000, .def = "2", .reloadable = true }, \
	{ .name = "client_auth", .type = KEY_ENUM, .offset = RULE_FIELD(client_auth), .names = client_auth_names, \
	  .def = "trust", .reloadable = true }, \
	{ .name = "max_db_connections", .type = KEY_INT, .offset = RULE_FIELD(max_db_connections), .min = 0, \
	  .max = 100000, .def = "0", .reloadable = true }, \
	{ .name = "max_user_connections", .type = KEY_INT, .offset = RULE_FIELD(max_user_connections), .min = 0, \
	  .max = 100000, .def = "0", .reloadable = true }, \
	{ .name = "target_session_attrs", .type = KEY_ENUM, .offset = RULE_FIELD(target_session_attrs), \
	  .names = target_names, .def = "any", .reloadable = true }, \
	{ .name = "cache", .type = KEY_ENUM, .offset = RULE_FIELD(cache), .names = cache_names, .reloadable = true },

static const struct key_def pool_keys[] = {
	POOL_DEFAULTABLE_KEYS
	{ .name = "database", .type = KEY_CHARS, .offset = RULE_FIELD(database), .min = 1,
	  .max = CONFIG_NAME_MAX - 1, .def = "*", .reloadable = true },
	{ .name = "user", .type = KEY_CHARS, .offset = RULE_FIELD(user), .min = 1, .max = CONFIG_NAME_MAX - 1,
	  .def = "*", .reloadable = true },
	/* Left empty when omitted; parse_pools then picks the only service. */
	{ .name = "service", .type = KEY_CHARS, .offset = RULE_FIELD(service_name), .min = 1,
	  .max = CONFIG_NAME_MAX - 1, .reloadable = true },
	{ .name = "blocked", .type = KEY_ENUM, .offset = RULE_FIELD(blocked), .names = yes_no_names, .def = "false",
	  .reloadable = true },
	{ .name = "server_user", .type = KEY_STRING, .offset = RULE_FIELD(server_user), .min = 1,
	  .max = CONFIG_NAME_MAX - 1, .reloadable = true },
	{ .name = "server_password", .type = KEY_STRING, .offset = RULE_FIELD(server_password), .min = 0,
	  .max = 1024, .reloadable = true, .secret = true },
	{ .name = "server_database", .type = KEY_STRING, .offset = RULE_FIELD(server_database), .min = 1,
	  .max = CONFIG_NAME_MAX - 1, .reloadable = true },
	/* Override the top-level auth_user / auth_query / auth_dbname for this rule; NULL: inherit. */
	{ .name = "auth_user", .type = KEY_STRING, .offset = RULE_FIELD(auth_user), .min = 1,
	  .max = CONFIG_NAME_MAX - 1, .reloadable = true },
	{ .name = "auth_dbname", .type = KEY_STRING, .offset = RULE_FIELD(auth_dbname), .min = 1,
	  .max = CONFIG_NAME_MAX - 1, .reloadable = true },
	{ .name = "auth_query", .type = KEY_STRING, .offset = RULE_FIELD(auth_query), .min = 1, .max = 4096,
	  .check = check_auth_query, .reloadable = true },
	{ .name = "ldap_options", .type = KEY_STRING, .offset = RULE_FIELD(ldap_options), .min = 1, .max = 4096,
	  .check = check_ldap_options, .reloadable = true, .secret = true },
	{ .name = "pam_service", .type = KEY_STRING, .offset = RULE_FIELD(pam_service), .min = 1, .max = 127,
	  .check = check_pam_service, .reloadable = true },
	/* No defaults: absent (0 / NULL) means the top-level value. */
	{ .name = "cache_ttl", .type = KEY_DURATION, .offset = RULE_FIELD(cache_ttl_ms), .min = 1, .max = MS_PER_DAY,
	  .reloadable = true },
	{ .name = "cache_max_result", .type = KEY_SIZE, .offset = RULE_FIELD(cache_max_result), .min = 1 << 10,
	  .max = 256u << 20, .reloadable = true },
	{ .name = "cache_coalesce_wait", .type = KEY_DURATION, .offset = RULE_FIELD(cache_coalesce_wait_ms), .min = 1,
	  .max = MS_PER_DAY, .reloadable = true },
	{ .name = "cache_tables", .type = KEY_CUSTOM, .reloadable = true, .parse = parse_rule_cache_tables,
	  .release = release_rule_cache_tables },
	{ .name = "cache_exclude_tables", .type = KEY_CUSTOM, .reloadable = true, .parse = parse_rule_cache_exclude,
	  .release = release_rule_cache_exclude },
	{ .name = "read_your_writes", .type = KEY_ENUM, .offset = RULE_FIELD(read_your_writes), .names = yes_no_names,
	  .def = "true", .reloadable = true },
	/* Absent: CONFIG_TIMEOUT_INHERIT (parse_pools), the top-level value; present, 0 = off. */
	{ .name = "query_timeout", .type = KEY_DURATION, .offset = RULE_FIELD(query_timeout_ms), .min = 0,
	  .max = MS_PER_DAY, .reloadable = true },
	{ .name = "client_idle_timeout", .type = KEY_DURATION, .offset = RULE_FIELD(client_idle_timeout_ms), .min = 0,
	  .max = 30 * MS_PER_DAY, .reloadable = true },
	{ .name = "transaction_timeout", .type = KEY_DURATION, .offset = RULE_FIELD(transaction_timeout_ms), .min = 0,
	  .max = MS_PER_DAY, .reloadable = true },
	{ .name = "idle_transaction_timeout", .type = KEY_DURATION, .offset = RULE_FIELD(idle_transaction_timeout_ms),
	  .min = 0, .max = MS_PER_DAY, .reloadable = true },
	{ .name = "server_lifetime", .type = KEY_DURATION, .offset = RULE_FIELD(server_lifetime_ms), .min = 0,
	  .max = 30 * MS_PER_DAY, .reloadable = true },
	/* Absent: -1 (parse_pools), the top-level value. */
	{ .name = "reserve_pool_size", .type = KEY_INT, .offset = RULE_FIELD(reserve_pool_size), .min = 0,
	  .max = 10000, .reloadable = true },
	/* Absent: -1 (parse_pools), the top-level value; present, 0 = no limit. */
	{ .name = "max_db_client_connections", .type = KEY_INT, .offset = RULE_FIELD(max_db_client_connections),
	  .min = 0, .max = 1000000, .reloadable = true },
	{ .name = "max_user_client_connections", .type = KEY_INT, .offset = RULE_FIELD(max_user_client_connections),
	  .min = 0, .max = 1000000, .reloadable = true },
	/* A change retires the rule's pools (pool.c, same_servers): new servers get the new ones. */
	{ .name = "connect_query", .type = KEY_STRING, .offset = RULE_FIELD(connect_query), .min = 1, .max = 4096,
	  .reloadable = true },
	{ .name = "client_encoding", .type = KEY_STRING, .offset = RULE_FIELD(client_encoding), .min = 1,
	  .max = CONFIG_NAME_MAX - 1, .reloadable = true },
	{ .name = "datestyle", .type = KEY_STRING, .offset = RULE_FIELD(datestyle), .min = 1,
	  .max = CONFIG_NAME_MAX - 1, .reloadable = true },
	{ .name = "timezone", .type = KEY_STRING, .offset = RULE_FIELD(timezone), .min = 1,
	  .max = CONFIG_NAME_MAX - 1, .reloadable = true },
	{ .name = "application_name", .type = KEY_STRING, .offset = RULE_FIELD(application_name), .min = 1,
	  .max = CONFIG_NAME_MAX - 1, .reloadable = true },
};
static const struct key_table pool_table = { pool_keys, sizeof(pool_keys) / sizeof(pool_keys[0]) };

static const struct key_def pool_default_keys[] = { POOL_DEFAULTABLE_KEYS };
static const struct key_table pool_default_table = { pool_default_keys,
						     sizeof(pool_default_keys) / sizeof(pool_default_keys[0]) };

static void inherit_pool_defaults(struct loader *ld, const yaml_node_t *item, struct config_pool_rule *rule)
{
	for (size_t i = 0; i < pool_default_table.n; i++) {
		const struct key_def *d = &pool_default_keys[i];
		const yaml_node_t *v = item->type == YAML_MAPPING_NODE ? find_value(ld, item, d->name) : NULL;

		if (!v || is_null(v))
			memcpy((char *)rule + d->offset, (const char *)&ld->cfg->pool_defaults + d->offset, sizeof(int));
	}
}

static void resolve_service(struct loader *ld, const yaml_node_t *item, const char *path,
			    struct config_pool_rule *rule)
{
	struct tusk_config *cfg = ld->cfg;
	const yaml_node_t *value;
	char sub[PATH_LEN], q[128];

	if (cfg->nservices == 0)
		return; /* services are missing or broken, which is reported already */
	join_key(sub, path, "service");
	if (!rule->service_name[0]) {
		if (cfg->nservices == 1) {
			memcpy(rule->service_name, cfg->services[0].name, sizeof(rule->service_name));
			rule->service = &cfg->services[0];
		} else {
			report(ld, rule->line, sub, "required when more than one service is defined");
		}
		return;
	}
	for (int i = 0; i < cfg->nservices; i++) {
		if (strcmp(cfg->services[i].name, rule->service_name) == 0) {
			rule->service = &cfg->services[i];
			return;
		}
	}
	value = item->type == YAML_MAPPING_NODE ? find_value(ld, item, "service") : NULL;
	const char *near = NULL;
	for (int i = 0; i < cfg->nservices && !near; i++)
		if (edit_distance(cfg->services[i].name, rule->service_name) < 3)
			near = cfg->services[i].name;
	report(ld, value ? node_line(value) : rule->line, sub, "unknown service %s%s%s%s",
	       quote(q, sizeof(q), rule->service_name), near ? " (did you mean \"" : "", near ? near : "",
	       near ? "\"?)" : "");
}

/* Whether every (database, user) that b matches is matched by a first. */
static bool rule_covers(const struct config_pool_rule *a, const struct config_pool_rule *b)
{
	return (strcmp(a->database, "*") == 0 || strcmp(a->database, b->database) == 0) &&
	       (strcmp(a->user, "*") == 0 || strcmp(a->user, b->user) == 0);
}

static void parse_pools(struct loader *ld, const yaml_node_t *node, int line, const char *path, char *base)
{
	struct tusk_config *cfg = (struct tusk_config *)base;
	bool *clean;
	size_t n;

	(void)line; /* required: node is never NULL */
	if (node->type != YAML_SEQUENCE_NODE) {
		report_type(ld, node, path, "a sequence of pool rules");
		return;
	}
	n = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
	if (n == 0) {
		report(ld, node_line(node), path, "list at least one pool rule");
		return;
	}
	cfg->pools = calloc(n, sizeof(*cfg->pools));
	clean = calloc(n, sizeof(*clean));
	if (!cfg->pools || !clean) {
		free(clean);
		report(ld, node_line(node), path, "out of memory");
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const yaml_node_t *item = get_node(ld, node->data.sequence.items.start[i]);
		struct config_pool_rule *rule = &cfg->pools[cfg->npools++];
		size_t before = ld->nerrs + ld->nlost;
		char sub[PATH_LEN];

		join_index(sub, path, i);
		rule->line = node_line(item);
		parse_mapping(ld, item, rule->line, sub, &pool_table, (char *)rule);
		inherit_pool_defaults(ld, item, rule);
		if (item->type != YAML_MAPPING_NODE || !find_value(ld, item, "query_timeout"))
			rule->query_timeout_ms = CONFIG_TIMEOUT_INHERIT;
		if (item->type != YAML_MAPPING_NODE || !find_value(ld, item, "client_idle_timeout"))
			rule->client_idle_timeout_ms = CONFIG_TIMEOUT_INHERIT;
		if (item->type != YAML_MAPPING_NODE || !find_value(ld, item, "transaction_timeout"))
			rule->transaction_timeout_ms = CONFIG_TIMEOUT_INHERIT;
		if (item->type != YAML_MAPPING_NODE || !find_value(ld, item, "idle_transaction_timeout"))
			rule->idle_transaction_timeout_ms = CONFIG_TIMEOUT_INHERIT;
		if (item->type != YAML_MAPPING_NODE || !find_value(ld, item, "server_lifetime"))
			rule->server_lifetime_ms = CONFIG_TIMEOUT_INHERIT;
		if (item->type != YAML_MAPPING_NODE || !find_value(ld, item, "reserve_pool_size"))
			rule->reserve_pool_size = -1;
		if (item->type != YAML_MAPPING_NODE || !find_value(ld, item, "max_db_client_connections"))
			rule->max_db_client_connections = -1;
		if (item->type != YAML_MAPPING_NODE || !find_value(ld, item, "max_user_client_connections"))
			rule->max_user_client_connections = -1;
		resolve_service(ld, item, sub, rule);
		/* Statement pooling is not cached (docs/cache.md). */
		if (rule->cache > CONFIG_CACHE_OFF && rule->mode == POOL_MODE_STATEMENT) {
			char key[PATH_LEN];
			join_key(key, sub, "cache");
			report(ld, rule->line, key, "needs mode: transaction or session (found %s)",
			       config_pool_mode_name(rule->mode));
		}
		/* The split decides per transaction; a session-mode client keeps one server. */
		if (rule->target_session_attrs == CONFIG_TARGET_READ_WRITE_SPLIT && rule->mode != POOL_MODE_TRANSACTION) {
			char key[PATH_LEN];
			join_key(key, sub, "target_session_attrs");
			report(ld, rule->line, key, "read-write-split needs mode: transaction (found %s)",
			       config_pool_mode_name(rule->mode));
		}
		if (rule->target_session_attrs != CONFIG_TARGET_READ_WRITE_SPLIT && item->type == YAML_MAPPING_NODE &&
		    find_value(ld, item, "read_your_writes")) {
			char key[PATH_LEN];
			join_key(key, sub, "read_your_writes");
			report(ld, node_line(find_value(ld, item, "read_your_writes")), key,
			       "only with target_session_attrs: read-write-split");
		}
		if (rule->active_limit == CONFIG_ACTIVE_LIMIT_ADAPTIVE && rule->mode == POOL_MODE_SESSION) {
			/* A session holds its server between transactions: a bound on servers in use
			 * would hold whole sessions back, not transactions. */
			char key[PATH_LEN];
			join_key(key, sub, "active_limit");
			report(ld, rule->line, key, "adaptive needs mode: transaction or statement (found session)");
		}
		if (rule->active_limit == CONFIG_ACTIVE_LIMIT_ADAPTIVE &&
		    rule->target_session_attrs == CONFIG_TARGET_READ_WRITE_SPLIT) {
			char key[PATH_LEN];
			join_key(key, sub, "active_limit");
			report(ld, rule->line, key, "adaptive is not available with target_session_attrs: read-write-split");
		}
		if (rule->active_limit == CONFIG_ACTIVE_LIMIT_ADAPTIVE && rule->active_limit_min > rule->size) {
			char key[PATH_LEN];
			join_key(key, sub, "active_limit_min");
			report(ld, rule->line, key, "%d is larger than size (%d)", rule->active_limit_min, rule->size);
		}
		if (rule->min_size > rule->size) {
			char key[PATH_LEN];
			join_key(key, sub, "min_size");
			report(ld, rule->line, key, "%d is larger than size (%d)", rule->min_size, rule->size);
		}
		clean[i] = ld->nerrs + ld->nlost == before;
	}
	/* A rule behind one that matches all it would is dead: almost surely a mistake in order. */
	for (size_t j = 1; j < n; j++) {
		for (size_t i = 0; i < j && clean[j]; i++) {
			if (clean[i] && rule_covers(&cfg->pools[i], &cfg->pools[j])) {
				char sub[PATH_LEN];
				join_index(sub, path, j);
				report(ld, cfg->pools[j].line, sub, "never matches: %s[%zu] (line %d) comes first and matches it all",
				       path, i, cfg->pools[i].line);
				break;
			}
		}
	}
	free(clean);
}

static void release_pools(char *base)
{
	struct tusk_config *cfg = (struct tusk_config *)base;

	for (int i = 0; i < cfg->npools; i++)
		free_fields(&pool_table, (char *)&cfg->pools[i]);
	free(cfg->pools);
	cfg->pools = NULL;
	cfg->npools = 0;
}

/* ---- admin: the console ----------------------------------------------------------------- */

/* A sequence of user names into *names / *n (absent: an empty list). */
static void parse_name_list(struct loader *ld, const yaml_node_t *node, const char *path, char ***names, int *n)
{
	size_t count;

	if (!node)
		return;
	if (node->type != YAML_SEQUENCE_NODE) {
		report_type(ld, node, path, "a sequence of user names");
		return;
	}
	count = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
	if (count == 0)
		return;
	*names = calloc(count, sizeof(**names));
	if (!*names) {
		report(ld, node_line(node), path, "out of memory");
		return;
	}
	for (size_t i = 0; i < count; i++) {
		const yaml_node_t *item = get_node(ld, node->data.sequence.items.start[i]);
		char sub[PATH_LEN];

		join_index(sub, path, i);
		if (item->type != YAML_SCALAR_NODE || is_null(item)) {
			report_type(ld, item, sub, "a user name");
			continue;
		}
		const char *name = scalar_text(item);
		size_t len = item->data.scalar.length;
		if (len == 0 || len >= CONFIG_NAME_MAX || strlen(name) != len) {
			report(ld, node_line(item), sub, "must be 1 to %d bytes long without NUL bytes", CONFIG_NAME_MAX - 1);
			continue;
		}
		(*names)[*n] = strdup(name);
		if (!(*names)[*n]) {
			report(ld, node_line(item), sub, "out of memory");
			continue;
		}
		(*n)++;
	}
}

static void free_name_list(char ***names, int *n)
{
	for (int i = 0; i < *n; i++)
		free((*names)[i]);
	free(*names);
	*names = NULL;
	*n = 0;
}

static void parse_admin_users(struct loader *ld, const yaml_node_t *node, int line, const char *path, char *base)
{
	struct config_admin *a = (struct config_admin *)base;
	(void)line;
	parse_name_list(ld, node, path, &a->users, &a->nusers);
}

static void parse_admin_stats_users(struct loader *ld, const yaml_node_t *node, int line, const char *path,
				    char *base)
{
	struct config_admin *a = (struct config_admin *)base;
	(void)line;
	parse_name_list(ld, node, path, &a->stats_users, &a->nstats_users);
}

static void release_admin_users(char *base)
{
	struct config_admin *a = (struct config_admin *)base;
	free_name_list(&a->users, &a->nusers);
}

static void release_admin_stats_users(char *base)
{
	struct config_admin *a = (struct config_admin *)base;
	free_name_list(&a->stats_users, &a->nstats_users);
}

#define ADMIN_FIELD(f) offsetof(struct config_admin, f)

static const struct key_def admin_keys[] = {
	{ .name = "users", .type = KEY_CUSTOM, .reloadable = true, .parse = parse_admin_users,
	  .release = release_admin_users },
	{ .name = "stats_users", .type = KEY_CUSTOM, .reloadable = true, .parse = parse_admin_stats_users,
	  .release = release_admin_stats_users },
	{ .name = "client_auth", .type = KEY_ENUM, .offset = ADMIN_FIELD(client_auth), .names = client_auth_names,
	  .def = "scram-sha-256", .reloadable = true },
	/* The HTTP endpoint is bound once at start. */
	{ .name = "http", .type = KEY_STRING, .offset = ADMIN_FIELD(http), .min = 3, .max = CONFIG_HOST_MAX + 8,
	  .check = check_host_port },
};
static const struct key_table admin_table = { admin_keys, sizeof(admin_keys) / sizeof(admin_keys[0]) };

/* ---- kv: the key-value store ------------------------------------------------------------ */

#define KV_FIELD(f) offsetof(struct config_kv, f)

static const struct key_def kv_keys[] = {
	{ .name = "zone", .type = KEY_STRING, .offset = KV_FIELD(zone), .min = 1, .max = 63 },
	{ .name = "service", .type = KEY_STRING, .offset = KV_FIELD(service), .min = 1, .max = CONFIG_NAME_MAX - 1 },
	{ .name = "catalog_database", .type = KEY_STRING, .offset = KV_FIELD(catalog_database), .min = 1,
	  .max = CONFIG_NAME_MAX - 1, .def = "kv_catalog" },
	{ .name = "user", .type = KEY_STRING, .offset = KV_FIELD(user), .min = 1, .max = CONFIG_NAME_MAX - 1,
	  .def = "postgres" },
	{ .name = "password", .type = KEY_STRING, .offset = KV_FIELD(password), .min = 1, .max = 1024, .secret = true },
	{ .name = "replicator_password", .type = KEY_STRING, .offset = KV_FIELD(replicator_password), .min = 1,
	  .max = 1024, .secret = true },
	{ .name = "client_password", .type = KEY_STRING, .offset = KV_FIELD(client_password), .min = 1, .max = 1024,
	  .secret = true },
	{ .name = "router_password", .type = KEY_STRING, .offset = KV_FIELD(router_password), .min = 1, .max = 1024,
	  .secret = true },
	{ .name = "gc_grace", .type = KEY_DURATION, .offset = KV_FIELD(gc_grace_ms), .min = 0, .max = 365 * MS_PER_DAY,
	  .def = "1h" },
	{ .name = "gc_interval", .type = KEY_DURATION, .offset = KV_FIELD(gc_interval_ms), .min = 10,
	  .max = MS_PER_DAY, .def = "10s" },
	{ .name = "gc_batch", .type = KEY_INT, .offset = KV_FIELD(gc_batch), .min = 1, .max = 100000, .def = "1000" },
	{ .name = "gc_pause", .type = KEY_DURATION, .offset = KV_FIELD(gc_pause_ms), .min = 0, .max = 60000,
	  .def = "100ms" },
	{ .name = "anti_entropy_interval", .type = KEY_DURATION, .offset = KV_FIELD(anti_entropy_interval_ms), .min = 0,
	  .max = MS_PER_DAY, .def = "60s" },
	{ .name = "pull_interval", .type = KEY_DURATION, .offset = KV_FIELD(pull_interval_ms), .min = 1, .max = 10000,
	  .def = "50ms" },
	{ .name = "link_statement_timeout", .type = KEY_DURATION, .offset = KV_FIELD(link_statement_timeout_ms),
	  .min = 10, .max = MS_PER_DAY, .def = "60s" },
};
static const struct key_table kv_table = { kv_keys, sizeof(kv_keys) / sizeof(kv_keys[0]) };

/* ---- redis: the result cache's L2 ------------------------------------------------------- */

#define REDIS_FIELD(f) offsetof(struct config_redis, f)

/* A service's modes without prefer (Redis has no in-band TLS negotiation to fall back from);
 * on/true/yes mean the safe one. */
static const struct enum_name redis_tls_names[] = {
	{ "disable", CONFIG_STLS_DISABLE }, { "require", CONFIG_STLS_REQUIRE }, { "verify-ca", CONFIG_STLS_VERIFY_CA },
	{ "verify-full", CONFIG_STLS_VERIFY_FULL }, { "off", CONFIG_STLS_DISABLE }, { "false", CONFIG_STLS_DISABLE },
	{ "no", CONFIG_STLS_DISABLE }, { "on", CONFIG_STLS_VERIFY_FULL }, { "true", CONFIG_STLS_VERIFY_FULL },
	{ "yes", CONFIG_STLS_VERIFY_FULL }, { NULL, 0 },
};

static const struct key_def redis_keys[] = {
	{ .name = "host", .type = KEY_STRING, .offset = REDIS_FIELD(host), .min = 1, .max = 255 },
	{ .name = "port", .type = KEY_INT, .offset = REDIS_FIELD(port), .min = 1, .max = 65535 },
	{ .name = "unix", .type = KEY_STRING, .offset = REDIS_FIELD(unix_path), .min = 1, .max = 100 },
	{ .name = "password", .type = KEY_STRING, .offset = REDIS_FIELD(password), .min = 1, .max = 1024,
	  .secret = true },
	{ .name = "tls", .type = KEY_ENUM, .offset = REDIS_FIELD(tls), .names = redis_tls_names, .def = "disable" },
	{ .name = "tls_ca_file", .type = KEY_STRING, .offset = REDIS_FIELD(tls_ca_file), .min = 1, .max = 4096 },
	{ .name = "tls_cert_file", .type = KEY_STRING, .offset = REDIS_FIELD(tls_cert_file), .min = 1, .max = 4096 },
	{ .name = "tls_key_file", .type = KEY_STRING, .offset = REDIS_FIELD(tls_key_file), .min = 1, .max = 4096 },
	{ .name = "db", .type = KEY_INT, .offset = REDIS_FIELD(db), .min = 0, .max = 1000000, .def = "0" },
	{ .name = "prefix", .type = KEY_STRING, .offset = REDIS_FIELD(prefix), .min = 1, .max = 200, .def = "tusk:" },
	{ .name = "timeout", .type = KEY_DURATION, .offset = REDIS_FIELD(timeout_ms), .min = 1, .max = 60000,
	  .def = "100ms" },
};
static const struct key_table redis_table = { redis_keys, sizeof(redis_keys) / sizeof(redis_keys[0]) };

/* The redis keys that depend on each other. */
/* client_auth: ldap needs its options, unless hba_file decides instead (then each ldap line
 * carries its own); the console's admin.client_auth has no place for them: hba_file only. */
static void check_ldap(struct loader *ld)
{
	const struct tusk_config *cfg = ld->cfg;
	if (cfg->admin.client_auth == CONFIG_AUTH_LDAP)
		report(ld, 1, "admin.client_auth", "ldap is not available for the admin console here: use an hba_file "
						   "ldap line for database tusk/pgbouncer");
	if (cfg->hba_file)
		return;
	for (int i = 0; i < cfg->npools; i++) {
		const struct config_pool_rule *r = &cfg->pools[i];
		if (r->client_auth == CONFIG_AUTH_LDAP && !config_ldap_options(cfg, r)) {
			char sub[PATH_LEN];
			snprintf(sub, sizeof sub, "pools[%d].client_auth", i);
			report(ld, r->line, sub, "ldap needs ldap_options (at the top level or in the rule)");
		}
	}
}

static void check_redis(struct loader *ld, const yaml_node_t *root)
{
	const struct config_redis *r = &ld->cfg->redis;
	/* The errors point at the redis: section itself, not at the top of the file. */
	const yaml_node_t *sec = root && root->type == YAML_MAPPING_NODE ? find_value(ld, root, "redis") : NULL;
	int line = sec ? node_line(sec) : root ? node_line(root) : 0;

	if (r->host && r->unix_path)
		report(ld, line, "redis", "host and unix: give one of them");
	if (r->unix_path && r->port)
		report(ld, line, "redis.port", "a port with unix: give host and port, or unix");
	if (!r->host && !r->unix_path && r->port)
		report(ld, line, "redis.port", "a port without host");
	if (r->tls != CONFIG_STLS_DISABLE && r->unix_path)
		report(ld, line, "redis.tls", "TLS goes to host and port, not to a unix socket");
	if (r->tls != CONFIG_STLS_DISABLE && !r->host && !r->unix_path)
		report(ld, line, "redis.tls", "TLS without host");
	if (r->tls == CONFIG_STLS_DISABLE && (r->tls_ca_file || r->tls_cert_file || r->tls_key_file))
		report(ld, line, "redis.tls", "tls_ca_file, tls_cert_file or tls_key_file without tls");
	if (!r->tls_cert_file != !r->tls_key_file)
		report(ld, line, "redis.tls_cert_file", "tls_cert_file and tls_key_file go together");
	/* With redis:, results live in Redis under versions every tusk shares; the decoder bumps
	 * only this process's. */
	if ((r->host || r->unix_path) && ld->cfg->cache_invalidation == CONFIG_CACHE_INVAL_LOGICAL)
		report(ld, line, "cache_invalidation",
		       "logical is not supported with redis: yet (it would bump only this tusk's versions, not Redis's)");
}

/* ---- The top level ---------------------------------------------------------------------- */

#define TOP_FIELD(f) offsetof(struct tusk_config, f)

/* Order matters where a key refers to another: services before pools. Timeouts are capped so
 * that no timer arithmetic can overflow; 0 is allowed only where it means "never". */
static const struct key_def top_keys[] = {
	/* Reloadable: each worker opens and closes its own listeners (daemon_reload). */
	{ .name = "listen", .type = KEY_CUSTOM, .parse = parse_listen, .release = release_listen,
	  .reloadable = true },
	{ .name = "workers", .type = KEY_CPUS, .offset = TOP_FIELD(workers), .min = 1, .max = 256, .def = "auto" },
	{ .name = "tls_handshake_threads", .type = KEY_CPUS, .offset = TOP_FIELD(tls_handshake_threads), .min = 0,
	  .max = 256, .def = "auto", .auto_div = 2 },
	{ .name = "log", .type = KEY_MAPPING, .offset = TOP_FIELD(log), .sub = &log_table, .reloadable = true },
	{ .name = "services", .type = KEY_CUSTOM, .required = true, .reloadable = true, .parse = parse_services,
	  .release = release_services },
	{ .name = "pool_defaults", .type = KEY_MAPPING, .offset = TOP_FIELD(pool_defaults), .sub = &pool_default_table,
	  .reloadable = true },
	{ .name = "pools", .type = KEY_CUSTOM, .required = true, .reloadable = true, .parse = parse_pools,
	  .release = release_pools },
	{ .name = "pool_wait_timeout", .type = KEY_DURATION, .offset = TOP_FIELD(pool_wait_timeout_ms), .min = 1,
	  .max = MS_PER_DAY, .def = "30s", .reloadable = true },
	{ .name = "query_wait_notify", .type = KEY_DURATION, .offset = TOP_FIELD(query_wait_notify_ms), .min = 0,
	  .max = MS_PER_DAY, .def = "5s", .reloadable = true },
	{ .name = "server_connect_timeout", .type = KEY_DURATION, .offset = TOP_FIELD(server_connect_timeout_ms),
	  .min = 1, .max = MS_PER_DAY, .def = "5s", .reloadable = true },
	{ .name = "server_reset_timeout", .type = KEY_DURATION, .offset = TOP_FIELD(server_reset_timeout_ms),
	  .min = 1, .max = MS_PER_DAY, .def = "5s", .reloadable = true },
	{ .name = "client_login_timeout", .type = KEY_DURATION, .offset = TOP_FIELD(client_login_timeout_ms),
	  .min = 1, .max = MS_PER_DAY, .def = "15s", .reloadable = true },
	{ .name = "server_idle_timeout", .type = KEY_DURATION, .offset = TOP_FIELD(server_idle_timeout_ms),
	  .min = 0, .max = 30 * MS_PER_DAY, .def = "10m", .reloadable = true },
	{ .name = "pool_idle_timeout", .type = KEY_DURATION, .offset = TOP_FIELD(pool_idle_timeout_ms),
	  .min = 0, .max = 30 * MS_PER_DAY, .def = "1h", .reloadable = true },
	{ .name = "auth_file", .type = KEY_STRING, .offset = TOP_FIELD(auth_file), .min = 1, .max = 4096,
	  .reloadable = true },
	{ .name = "hba_file", .type = KEY_STRING, .offset = TOP_FIELD(hba_file), .min = 1, .max = 4096,
	  .reloadable = true },
	{ .name = "ident_file", .type = KEY_STRING, .offset = TOP_FIELD(ident_file), .min = 1, .max = 4096,
	  .reloadable = true },
	{ .name = "auth_user", .type = KEY_STRING, .offset = TOP_FIELD(auth_user), .min = 1,
	  .max = CONFIG_NAME_MAX - 1, .reloadable = true },
	{ .name = "auth_dbname", .type = KEY_STRING, .offset = TOP_FIELD(auth_dbname), .min = 1,
	  .max = CONFIG_NAME_MAX - 1, .reloadable = true },
	{ .name = "auth_query", .type = KEY_STRING, .offset = TOP_FIELD(auth_query), .min = 1, .max = 4096,
	  .check = check_auth_query, .def = AUTH_QUERY_DEFAULT, .reloadable = true },
	/* client_auth: ldap's (PgBouncer's auth_ldap_options); a rule's own ldap_options wins. */
	{ .name = "ldap_options", .type = KEY_STRING, .offset = TOP_FIELD(ldap_options), .min = 1, .max = 4096,
	  .check = check_ldap_options, .reloadable = true, .secret = true },
	/* client_auth: pam's service (/etc/pam.d/<it>); a rule's own pam_service wins. PgBouncer's
	 * is fixed, "pgbouncer" (the importer writes that). */
	{ .name = "pam_service", .type = KEY_STRING, .offset = TOP_FIELD(pam_service), .min = 1, .max = 127,
	  .check = check_pam_service, .def = "tusk", .reloadable = true },
	/* PBKDF2 rounds of the SCRAM exchange with a plaintext auth_file secret (PgBouncer's key;
	 * PostgreSQL's default), SCRAM_ITER_MAX at most. */
	{ .name = "scram_iterations", .type = KEY_INT, .offset = TOP_FIELD(scram_iterations), .min = 1,
	  .max = 10000000, .def = "4096", .reloadable = true },
	{ .name = "auth_cache_ttl", .type = KEY_DURATION, .offset = TOP_FIELD(auth_cache_ttl_ms), .min = 0,
	  .max = MS_PER_DAY, .def = "60s", .reloadable = true },
	{ .name = "unix_socket_dir", .type = KEY_STRING, .offset = TOP_FIELD(unix_socket_dir), .min = 1, .max = 90 },
	/* Set on the socket files as they are opened (at start, and at a takeover on the ones inherited). */
	{ .name = "unix_socket_mode", .type = KEY_STRING, .offset = TOP_FIELD(unix_socket_mode), .min = 1, .max = 16,
	  .check = check_octal_mode, .def = "0777" },
	{ .name = "unix_socket_group", .type = KEY_STRING, .offset = TOP_FIELD(unix_socket_group), .min = 1,
	  .max = 255, .check = check_group },
	{ .name = "server_lifetime", .type = KEY_DURATION, .offset = TOP_FIELD(server_lifetime_ms), .min = 0,
	  .max = 30 * MS_PER_DAY, .def = "1h", .reloadable = true },
	{ .name = "server_check_delay", .type = KEY_DURATION, .offset = TOP_FIELD(server_check_delay_ms), .min = 0,
	  .max = MS_PER_DAY, .def = "30s", .reloadable = true },
	{ .name = "idle_transaction_timeout", .type = KEY_DURATION, .offset = TOP_FIELD(idle_transaction_timeout_ms),
	  .min = 0, .max = MS_PER_DAY, .def = "0", .reloadable = true },
	{ .name = "query_timeout", .type = KEY_DURATION, .offset = TOP_FIELD(query_timeout_ms), .min = 0,
	  .max = MS_PER_DAY, .def = "0", .reloadable = true },
	{ .name = "transaction_timeout", .type = KEY_DURATION, .offset = TOP_FIELD(transaction_timeout_ms), .min = 0,
	  .max = MS_PER_DAY, .def = "0", .reloadable = true },
	{ .name = "client_idle_timeout", .type = KEY_DURATION, .offset = TOP_FIELD(client_idle_timeout_ms),
	  .min = 0, .max = 30 * MS_PER_DAY, .def = "0", .reloadable = true },
	{ .name = "max_prepared_statements", .type = KEY_INT, .offset = TOP_FIELD(max_prepared_statements),
	  .min = 0, .max = 100000, .def = "200", .reloadable = true },
	{ .name = "reserve_pool_size", .type = KEY_INT, .offset = TOP_FIELD(reserve_pool_size), .min = 0,
	  .max = 10000, .def = "0", .reloadable = true },
	{ .name = "reserve_pool_timeout", .type = KEY_DURATION, .offset = TOP_FIELD(reserve_pool_timeout_ms), .min = 0,
	  .max = MS_PER_DAY, .def = "5s", .reloadable = true },
	{ .name = "server_check_query", .type = KEY_STRING, .offset = TOP_FIELD(server_check_query), .min = 0,
	  .max = 4096, .def = "SELECT 1", .reloadable = true },
	{ .name = "server_reset_query", .type = KEY_STRING, .offset = TOP_FIELD(server_reset_query), .min = 0,
	  .max = 4096, .def = "DISCARD ALL", .reloadable = true },
	{ .name = "server_reset_query_always", .type = KEY_ENUM, .offset = TOP_FIELD(server_reset_query_always),
	  .names = yes_no_names, .def = "false", .reloadable = true },
	{ .name = "application_name_add_host", .type = KEY_ENUM, .offset = TOP_FIELD(application_name_add_host),
	  .names = yes_no_names, .def = "false", .reloadable = true },
	{ .name = "disable_pqexec", .type = KEY_ENUM, .offset = TOP_FIELD(disable_pqexec), .names = yes_no_names,
	  .def = "false", .reloadable = true },
	{ .name = "server_fast_close", .type = KEY_ENUM, .offset = TOP_FIELD(server_fast_close), .names = yes_no_names,
	  .def = "false", .reloadable = true },
	{ .name = "max_message_size", .type = KEY_SIZE, .offset = TOP_FIELD(max_message_size), .min = 8 << 10,
	  .max = 1 << 30, .def = "64MB", .reloadable = true },
	/* Buffers come from per-size pools set up at start. */
	{ .name = "buffer_size", .type = KEY_SIZE, .offset = TOP_FIELD(buffer_size), .min = 4 << 10,
	  .max = 16 << 20, .def = "64kB" },
	{ .name = "max_client_connections", .type = KEY_INT, .offset = TOP_FIELD(max_client_connections), .min = 1,
	  .max = 1000000, .def = "10000", .reloadable = true },
	{ .name = "max_db_client_connections", .type = KEY_INT, .offset = TOP_FIELD(max_db_client_connections),
	  .min = 0, .max = 1000000, .def = "0", .reloadable = true },
	{ .name = "max_user_client_connections", .type = KEY_INT, .offset = TOP_FIELD(max_user_client_connections),
	  .min = 0, .max = 1000000, .def = "0", .reloadable = true },
	{ .name = "shutdown_timeout", .type = KEY_DURATION, .offset = TOP_FIELD(shutdown_timeout_ms), .min = 0,
	  .max = MS_PER_DAY, .def = "30s", .reloadable = true },
	{ .name = "worker_balance", .type = KEY_ENUM, .offset = TOP_FIELD(worker_balance), .names = yes_no_names,
	  .def = "true", .reloadable = true },
	/* Read at each connect and accept: a reload reaches new connections. */
	{ .name = "tcp_keepalive", .type = KEY_ENUM, .offset = TOP_FIELD(tcp_keepalive), .names = yes_no_names,
	  .def = "true", .reloadable = true },
	{ .name = "tcp_keepidle", .type = KEY_DURATION, .offset = TOP_FIELD(tcp_keepidle_ms), .min = 0,
	  .max = 32767 * 1000ull, .def = "0", .reloadable = true },
	{ .name = "tcp_keepintvl", .type = KEY_DURATION, .offset = TOP_FIELD(tcp_keepintvl_ms), .min = 0,
	  .max = 32767 * 1000ull, .def = "0", .reloadable = true },
	{ .name = "tcp_keepcnt", .type = KEY_INT, .offset = TOP_FIELD(tcp_keepcnt), .min = 0, .max = 127, .def = "0",
	  .reloadable = true },
	{ .name = "tcp_user_timeout", .type = KEY_DURATION, .offset = TOP_FIELD(tcp_user_timeout_ms), .min = 0,
	  .max = MS_PER_DAY, .def = "0", .reloadable = true },
	{ .name = "tcp_socket_buffer", .type = KEY_SIZE, .offset = TOP_FIELD(tcp_socket_buffer), .min = 0,
	  .max = 1u << 30, .def = "0", .reloadable = true },
	/* Set on every listener at start and again at each reload (daemon.c's tune_listeners). */
	{ .name = "listen_backlog", .type = KEY_INT, .offset = TOP_FIELD(listen_backlog), .min = 1, .max = 65535,
	  .def = "1024", .reloadable = true },
	{ .name = "tcp_defer_accept", .type = KEY_DURATION, .offset = TOP_FIELD(tcp_defer_accept_ms), .min = 0,
	  .max = 3600 * 1000ull, .def = "0", .reloadable = true },
	{ .name = "log_connections", .type = KEY_ENUM, .offset = TOP_FIELD(log_connections), .names = yes_no_names,
	  .def = "true", .reloadable = true },
	{ .name = "log_disconnections", .type = KEY_ENUM, .offset = TOP_FIELD(log_disconnections),
	  .names = yes_no_names, .def = "true", .reloadable = true },
	{ .name = "stats_period", .type = KEY_DURATION, .offset = TOP_FIELD(stats_period_ms), .min = 0,
	  .max = MS_PER_DAY, .def = "60s", .reloadable = true },
	/* Written at start, removed at stop (util/pidfile.h). */
	{ .name = "pidfile", .type = KEY_STRING, .offset = TOP_FIELD(pidfile), .min = 1, .max = 4000 },
	/* The socket an online restart takes the listeners over through; bound at start. */
	{ .name = "takeover_socket", .type = KEY_STRING, .offset = TOP_FIELD(takeover_socket), .min = 1, .max = 100 },
	{ .name = "cache", .type = KEY_ENUM, .offset = TOP_FIELD(cache), .names = cache_names, .def = "off",
	  .reloadable = true },
	{ .name = "cache_ttl", .type = KEY_DURATION, .offset = TOP_FIELD(cache_ttl_ms), .min = 1, .max = MS_PER_DAY,
	  .def = "10s", .reloadable = true },
	{ .name = "cache_max_result", .type = KEY_SIZE, .offset = TOP_FIELD(cache_max_result), .min = 1 << 10,
	  .max = 256u << 20, .def = "1MB", .reloadable = true },
	/* The L1 store is sized at start. */
	{ .name = "cache_memory", .type = KEY_SIZE, .offset = TOP_FIELD(cache_memory), .min = 0, .max = 1u << 30,
	  .def = "64MB" },
	{ .name = "cache_coalesce_wait", .type = KEY_DURATION, .offset = TOP_FIELD(cache_coalesce_wait_ms), .min = 1,
	  .max = MS_PER_DAY, .def = "5s", .reloadable = true },
	/* The decoding thread starts with the cache (src/flight/logical.c). */
	{ .name = "cache_invalidation", .type = KEY_ENUM, .offset = TOP_FIELD(cache_invalidation),
	  .names = cache_inval_names, .def = "tusk" },
	{ .name = "cache_logical_poll", .type = KEY_DURATION, .offset = TOP_FIELD(cache_logical_poll_ms), .min = 10,
	  .max = 60000, .def = "200ms" },
	{ .name = "cache_logical_user", .type = KEY_STRING, .offset = TOP_FIELD(cache_logical_user), .min = 1,
	  .max = 63 },
	{ .name = "cache_logical_password", .type = KEY_STRING, .offset = TOP_FIELD(cache_logical_password),
	  .min = 1, .max = 1024, .secret = true },
	{ .name = "cache_tables", .type = KEY_CUSTOM, .reloadable = true, .parse = parse_top_cache_tables,
	  .release = release_top_cache_tables },
	{ .name = "cache_exclude_tables", .type = KEY_CUSTOM, .reloadable = true, .parse = parse_top_cache_exclude,
	  .release = release_top_cache_exclude },
	{ .name = "admin", .type = KEY_MAPPING, .offset = TOP_FIELD(admin), .sub = &admin_table, .reloadable = true },
	/* Replication reads it at start (src/kv/replicate.c). */
	{ .name = "kv", .type = KEY_MAPPING, .offset = TOP_FIELD(kv), .sub = &kv_table },
	/* The workers connect at start (src/flight/l2.c). */
	{ .name = "redis", .type = KEY_MAPPING, .offset = TOP_FIELD(redis), .sub = &redis_table },
};
static const struct key_table top_table = { top_keys, sizeof(top_keys) / sizeof(top_keys[0]) };

static void free_fields(const struct key_table *t, char *base)
{
	for (size_t i = 0; i < t->n; i++) {
		const struct key_def *d = &t->keys[i];
		if (d->type == KEY_STRING) {
			free(*(char **)(base + d->offset));
			*(char **)(base + d->offset) = NULL;
		} else if (d->type == KEY_MAPPING) {
			free_fields(d->sub, base + d->offset);
		} else if (d->type == KEY_CUSTOM && d->release) {
			d->release(base);
		}
	}
}

void config_free(struct tusk_config *cfg)
{
	if (!cfg)
		return;
	free_fields(&top_table, (char *)cfg);
	free(cfg->path);
	free(cfg);
}

static int read_whole_file(const char *path, char **data, size_t *len)
{
	FILE *f = fopen(path, "rb");
	size_t cap = 0, n = 0;
	char *buf = NULL;
	int err = 0;

	if (!f)
		return -errno;
	for (;;) {
		if (n == cap) {
			char *bigger = realloc(buf, cap ? cap * 2 : 8192);
			if (!bigger) {
				err = -ENOMEM;
				break;
			}
			buf = bigger;
			cap = cap ? cap * 2 : 8192;
		}
		size_t got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (got == 0) {
			if (ferror(f))
				err = errno ? -errno : -EIO;
			break;
		}
	}
	fclose(f);
	if (err) {
		free(buf);
		return err;
	}
	*data = buf;
	*len = n;
	return 0;
}

static void report_yaml_error(struct loader *ld, const yaml_parser_t *parser, const char *data, size_t len)
{
	int line = (int)parser->problem_mark.line + 1;
	const char *problem = parser->problem ? parser->problem : "malformed YAML";

	if (parser->error == YAML_MEMORY_ERROR) {
		report(ld, 0, "-", "out of memory");
	} else if (parser->error == YAML_READER_ERROR) {
		/* The reader (bytes that are not UTF-8) has no mark, and decodes ahead of the scanner,
		 * so count the lines up to the offset it reports. */
		int reader_line = 1;
		for (size_t i = 0; i < parser->problem_offset && i < len; i++)
			reader_line += data[i] == '\n';
		report(ld, reader_line, "-", "%s at byte %zu", problem, parser->problem_offset);
	} else if (parser->context) {
		report(ld, line, "-", "%s (%s at line %d)", problem, parser->context,
		       (int)parser->context_mark.line + 1);
	} else {
		report(ld, line, "-", "%s", problem);
	}
}

/* Deepest nesting of collections accepted; tusk's own schema needs 4. */
#define CONFIG_YAML_DEPTH_MAX 64

/* Walks the events (the streaming half of libyaml, no tree built) and refuses the file at the
 * first collection nested deeper than CONFIG_YAML_DEPTH_MAX. libyaml has no bound of its own:
 * its scanner rechecks every open simple key per token and its loader recurses per level, so
 * a file of a few MB of "[[[[" kept it busy for minutes. Stopping at the first level too deep
 * means it never sees more than that many open collections. Syntax errors are left to the
 * loader, which reports them the usual way. False when the file was refused. */
static bool depth_ok(struct loader *ld, const char *data, size_t len)
{
	yaml_parser_t parser;
	yaml_event_t ev;
	int depth = 0;
	bool ok = true, done = false;

	if (!yaml_parser_initialize(&parser))
		return true; /* the loader reports it */
	yaml_parser_set_input_string(&parser, (const unsigned char *)data, len);
	while (!done && yaml_parser_parse(&parser, &ev)) {
		switch (ev.type) {
		case YAML_SEQUENCE_START_EVENT:
		case YAML_MAPPING_START_EVENT:
			if (++depth > CONFIG_YAML_DEPTH_MAX) {
				report(ld, (int)ev.start_mark.line + 1, "-", "nested deeper than %d levels",
				       CONFIG_YAML_DEPTH_MAX);
				ok = false;
				done = true;
			}
			break;
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT:
			depth--;
			break;
		case YAML_STREAM_END_EVENT:
			done = true;
			break;
		default:
			break;
		}
		yaml_event_delete(&ev);
	}
	yaml_parser_delete(&parser);
	return ok;
}

static void load_document(struct loader *ld, const char *data, size_t len)
{
	yaml_parser_t parser;
	yaml_document_t extra;
	const yaml_node_t *root;

	if (!depth_ok(ld, data, len))
		return;
	if (!yaml_parser_initialize(&parser)) {
		report(ld, 0, "-", "out of memory");
		return;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)data, len);
	if (!yaml_parser_load(&parser, &ld->doc)) {
		report_yaml_error(ld, &parser, data, len);
		yaml_parser_delete(&parser);
		return;
	}

	root = yaml_document_get_root_node(&ld->doc);
	if (!root)
		parse_mapping(ld, NULL, 1, "", &top_table, (char *)ld->cfg); /* empty file */
	else if (root->type != YAML_MAPPING_NODE)
		report_type(ld, root, "-", "a mapping of keys at the top level");
	else
		parse_mapping(ld, root, 1, "", &top_table, (char *)ld->cfg);
	check_redis(ld, root);
	check_ldap(ld);
	for (int i = 0; i < ld->cfg->nlisten; i++)
		if (ld->cfg->listen[i].protocol == CONFIG_LISTEN_REDIS && !ld->cfg->kv.zone)
			report(ld, 1, "listen", "entry %d has protocol redis: it needs the kv section (kv.zone)", i);
	/* Every listener binds with SO_REUSEPORT: admin.http on a listen entry's port would share
	 * it, and the kernel would hand some PostgreSQL clients to the HTTP server (they wait for
	 * an answer it never sends). */
	char hhost[CONFIG_HOST_MAX];
	int hport;
	if (ld->cfg->admin.http &&
	    config_split_host_port(ld->cfg->admin.http, hhost, sizeof hhost, &hport) == 0)
		for (int i = 0; i < ld->cfg->nlisten; i++)
			if (ld->cfg->listen[i].port == hport)
				report(ld, 1, "admin.http", "port %d is also listen entry %d's: give the HTTP server a port "
							   "of its own",
				       hport, i);

	if (!yaml_parser_load(&parser, &extra)) {
		report_yaml_error(ld, &parser, data, len);
	} else {
		const yaml_node_t *next = yaml_document_get_root_node(&extra);
		if (next)
			report(ld, node_line(next), "-", "only one YAML document is allowed");
		yaml_document_delete(&extra);
	}
	yaml_document_delete(&ld->doc);
	yaml_parser_delete(&parser);
}

int config_load(const char *path, FILE *errout, struct tusk_config **out)
{
	struct loader ld = { .path = path };
	char *data = NULL;
	size_t len = 0;
	int r;

	*out = NULL;
	r = read_whole_file(path, &data, &len);
	if (r < 0) {
		report(&ld, 0, "-", "cannot open: %s", strerror(-r));
		return (int)print_errors(&ld, errout);
	}
	ld.cfg = calloc(1, sizeof(*ld.cfg));
	if (ld.cfg)
		ld.cfg->path = strdup(path);
	if (!ld.cfg || !ld.cfg->path)
		report(&ld, 0, "-", "out of memory");
	else
		load_document(&ld, data, len);
	free(data);

	r = (int)print_errors(&ld, errout);
	if (r > 0) {
		config_free(ld.cfg);
		return r;
	}
	*out = ld.cfg;
	return 0;
}

static bool field_equal(const struct key_def *d, const char *a, const char *b)
{
	a += d->offset;
	b += d->offset;
	switch (d->type) {
	case KEY_INT:
	case KEY_CPUS:
	case KEY_ENUM:
		return *(const int *)a == *(const int *)b;
	case KEY_DURATION:
		return *(const uint64_t *)a == *(const uint64_t *)b;
	case KEY_SIZE:
		return *(const uint32_t *)a == *(const uint32_t *)b;
	case KEY_STRING: {
		const char *x = *(char *const *)a, *y = *(char *const *)b;
		return x == y || (x && y && strcmp(x, y) == 0);
	}
	case KEY_CHARS:
		return strcmp(a, b) == 0;
	case KEY_MAPPING:
	case KEY_CUSTOM:
		break;
	}
	return true;
}

static int diff_fixed(const struct key_table *t, const char *path, const char *cur, const char *next,
		      const char *file, FILE *errout)
{
	int n = 0;

	for (size_t i = 0; i < t->n; i++) {
		const struct key_def *d = &t->keys[i];
		char sub[PATH_LEN];
		bool same;

		join_key(sub, path, d->name);
		if (d->type == KEY_MAPPING) {
			n += diff_fixed(d->sub, sub, cur + d->offset, next + d->offset, file, errout);
			continue;
		}
		if (d->reloadable)
			continue;
		same = d->type == KEY_CUSTOM ? d->equal(cur, next) : field_equal(d, cur, next);
		if (!same) {
			if (errout)
				fprintf(errout, "%s:0: %s: cannot be changed by a reload; restart tusk to apply it\n", file,
					sub);
			n++;
		}
	}
	return n;
}

int config_check_reload(const struct tusk_config *cur, const struct tusk_config *next, FILE *errout)
{
	return diff_fixed(&top_table, "", (const char *)cur, (const char *)next, next->path, errout);
}

/* Copy the restart-only fields of t from cur into next (strings duplicated). 0 or -ENOMEM. */
static int keep_fixed(const struct key_table *t, const char *cur, char *next)
{
	for (size_t i = 0; i < t->n; i++) {
		const struct key_def *d = &t->keys[i];
		if (d->type == KEY_MAPPING) {
			if (keep_fixed(d->sub, cur + d->offset, next + d->offset) < 0)
				return -ENOMEM;
			continue;
		}
		if (d->reloadable || d->type == KEY_CUSTOM)
			continue;
		switch (d->type) {
		case KEY_STRING: {
			const char *v = *(char *const *)(cur + d->offset);
			char *copy = v ? strdup(v) : NULL;
			if (v && !copy)
				return -ENOMEM;
			free(*(char **)(next + d->offset));
			*(char **)(next + d->offset) = copy;
			break;
		}
		case KEY_INT:
		case KEY_CPUS:
		case KEY_ENUM:
			memcpy(next + d->offset, cur + d->offset, sizeof(int));
			break;
		case KEY_DURATION:
			memcpy(next + d->offset, cur + d->offset, sizeof(uint64_t));
			break;
		case KEY_SIZE:
			memcpy(next + d->offset, cur + d->offset, sizeof(uint32_t));
			break;
		case KEY_CHARS:
			memcpy(next + d->offset, cur + d->offset, (size_t)d->max + 1);
			break;
		case KEY_MAPPING:
		case KEY_CUSTOM:
			break;
		}
	}
	return 0;
}

int config_keep_fixed(const struct tusk_config *cur, struct tusk_config *next)
{
	return keep_fixed(&top_table, (const char *)cur, (char *)next);
}

int config_set(struct tusk_config *cfg, const char *key, const char *value, char *err, size_t errcap)
{
	const struct key_def *d = lookup_key(&top_table, key);
	struct loader ld = { .path = "SET", .cfg = cfg };
	int rc = 0;

	if (!d) {
		snprintf(err, errcap, "%s: unknown key", key);
		return -ENOENT;
	}
	if (!d->reloadable || (d->type != KEY_INT && d->type != KEY_DURATION && d->type != KEY_SIZE &&
			       d->type != KEY_ENUM)) {
		snprintf(err, errcap, "%s: cannot be changed by SET (%s)", key,
			 d->reloadable ? "edit the file and RELOAD" : "only a restart changes it");
		return -EPERM;
	}
	parse_text(&ld, d, value, strlen(value), 0, key, (char *)cfg);
	if (ld.nerrs + ld.nlost > 0) {
		snprintf(err, errcap, "%s", ld.nerrs ? ld.errs[0].text : "out of memory");
		rc = -EINVAL;
	}
	for (size_t i = 0; i < ld.nerrs; i++)
		free(ld.errs[i].text);
	free(ld.errs);
	return rc;
}

const struct config_pool_rule *config_match_pool(const struct tusk_config *cfg, const char *database,
						 const char *user)
{
	for (int i = 0; i < cfg->npools; i++) {
		const struct config_pool_rule *r = &cfg->pools[i];
		if ((strcmp(r->database, "*") == 0 || strcmp(r->database, database) == 0) &&
		    (strcmp(r->user, "*") == 0 || strcmp(r->user, user) == 0))
			return r;
	}
	return NULL;
}

const char *config_target_name(enum config_target t)
{
	for (const struct enum_name *n = target_names; n->name; n++)
		if (n->value == (int)t)
			return n->name;
	return "?";
}

const char *config_pool_mode_name(enum pool_mode mode)
{
	for (const struct enum_name *e = pool_mode_names; e->name; e++)
		if (e->value == (int)mode)
			return e->name;
	return "unknown";
}

const char *config_auth_user(const struct tusk_config *cfg, const struct config_pool_rule *rule)
{
	return rule->auth_user ? rule->auth_user : cfg->auth_user;
}

const char *config_auth_query(const struct tusk_config *cfg, const struct config_pool_rule *rule)
{
	return rule->auth_query ? rule->auth_query : cfg->auth_query;
}

const char *config_ldap_options(const struct tusk_config *cfg, const struct config_pool_rule *rule)
{
	return rule->ldap_options ? rule->ldap_options : cfg->ldap_options;
}

const char *config_pam_service(const struct tusk_config *cfg, const struct config_pool_rule *rule)
{
	return rule && rule->pam_service ? rule->pam_service : cfg->pam_service;
}

const char *config_auth_dbname(const struct tusk_config *cfg, const struct config_pool_rule *rule)
{
	return rule->auth_dbname ? rule->auth_dbname : cfg->auth_dbname;
}

uint64_t config_query_timeout(const struct tusk_config *cfg, const struct config_pool_rule *rule)
{
	return rule && rule->query_timeout_ms != CONFIG_TIMEOUT_INHERIT ? rule->query_timeout_ms : cfg->query_timeout_ms;
}

uint64_t config_transaction_timeout(const struct tusk_config *cfg, const struct config_pool_rule *rule)
{
	return rule && rule->transaction_timeout_ms != CONFIG_TIMEOUT_INHERIT ? rule->transaction_timeout_ms
									     : cfg->transaction_timeout_ms;
}

int config_reserve_pool_size(const struct tusk_config *cfg, const struct config_pool_rule *rule)
{
	return rule && rule->reserve_pool_size >= 0 ? rule->reserve_pool_size : cfg->reserve_pool_size;
}

int config_max_db_client_connections(const struct tusk_config *cfg, const struct config_pool_rule *rule)
{
	return rule && rule->max_db_client_connections >= 0 ? rule->max_db_client_connections
							    : cfg->max_db_client_connections;
}

int config_max_user_client_connections(const struct tusk_config *cfg, const struct config_pool_rule *rule)
{
	return rule && rule->max_user_client_connections >= 0 ? rule->max_user_client_connections
							      : cfg->max_user_client_connections;
}

uint64_t config_client_idle_timeout(const struct tusk_config *cfg, const struct config_pool_rule *rule)
{
	return rule && rule->client_idle_timeout_ms != CONFIG_TIMEOUT_INHERIT ? rule->client_idle_timeout_ms
									       : cfg->client_idle_timeout_ms;
}

uint64_t config_idle_transaction_timeout(const struct tusk_config *cfg, const struct config_pool_rule *rule)
{
	return rule && rule->idle_transaction_timeout_ms != CONFIG_TIMEOUT_INHERIT ? rule->idle_transaction_timeout_ms
										    : cfg->idle_transaction_timeout_ms;
}

uint64_t config_server_lifetime(const struct tusk_config *cfg, const struct config_pool_rule *rule)
{
	return rule && rule->server_lifetime_ms != CONFIG_TIMEOUT_INHERIT ? rule->server_lifetime_ms
									   : cfg->server_lifetime_ms;
}

bool config_name_listed(char *const *names, int n, const char *user)
{
	for (int i = 0; i < n; i++)
		if (strcmp(names[i], user) == 0)
			return true;
	return false;
}

static void join_names(char *out, size_t cap, char *const *names, int n)
{
	size_t o = 0;

	out[0] = '\0';
	for (int i = 0; i < n && o < cap; i++)
		o += (size_t)snprintf(out + o, cap - o, "%s%s", i ? "," : "", names[i]);
}

/* The value of a KEY_CUSTOM key, summarised. */
static void describe_custom(const struct tusk_config *cfg, const char *path, char *out, size_t cap)
{
	size_t o = 0;

	out[0] = '\0';
	if (strcmp(path, "listen") == 0) {
		for (int i = 0; i < cfg->nlisten && o < cap; i++)
			o += (size_t)snprintf(out + o, cap - o, "%s%s:%d", i ? "," : "", cfg->listen[i].host,
					      cfg->listen[i].port);
	} else if (strcmp(path, "services") == 0) {
		for (int i = 0; i < cfg->nservices && o < cap; i++)
			o += (size_t)snprintf(out + o, cap - o, "%s%s", i ? "," : "", cfg->services[i].name);
	} else if (strcmp(path, "pools") == 0) {
		snprintf(out, cap, "%d rules", cfg->npools);
	} else if (strcmp(path, "admin.users") == 0) {
		join_names(out, cap, cfg->admin.users, cfg->admin.nusers);
	} else if (strcmp(path, "admin.stats_users") == 0) {
		join_names(out, cap, cfg->admin.stats_users, cfg->admin.nstats_users);
	} else if (strcmp(path, "cache_tables") == 0) {
		join_names(out, cap, cfg->cache_tables, cfg->ncache_tables);
	} else if (strcmp(path, "cache_exclude_tables") == 0) {
		join_names(out, cap, cfg->cache_exclude_tables, cfg->ncache_exclude_tables);
	}
}

static void describe_value(const struct key_def *d, const char *base, char *out, size_t cap)
{
	const void *src = base + d->offset;

	out[0] = '\0';
	switch (d->type) {
	case KEY_INT:
	case KEY_CPUS:
		snprintf(out, cap, "%d", *(const int *)src);
		return;
	case KEY_DURATION:
		snprintf(out, cap, "%llums", (unsigned long long)*(const uint64_t *)src);
		return;
	case KEY_SIZE:
		snprintf(out, cap, "%u", *(const uint32_t *)src);
		return;
	case KEY_ENUM:
		for (const struct enum_name *e = d->names; e->name; e++)
			if (e->value == *(const int *)src) {
				snprintf(out, cap, "%s", e->name);
				return;
			}
		return;
	case KEY_STRING: {
		const char *v = *(char *const *)src;
		snprintf(out, cap, "%s", v ? (d->secret ? "********" : v) : "");
		return;
	}
	case KEY_CHARS:
		snprintf(out, cap, "%s", (const char *)src);
		return;
	case KEY_MAPPING:
	case KEY_CUSTOM:
		return;
	}
}

static void describe_table(const struct tusk_config *cfg, const struct key_table *t, const char *path,
			   const char *base, config_key_fn *fn, void *arg)
{
	for (size_t i = 0; i < t->n; i++) {
		const struct key_def *d = &t->keys[i];
		char sub[PATH_LEN], value[1024];

		join_key(sub, path, d->name);
		if (d->type == KEY_MAPPING) {
			describe_table(cfg, d->sub, sub, base + d->offset, fn, arg);
			continue;
		}
		if (d->type == KEY_CUSTOM)
			describe_custom(cfg, sub, value, sizeof value);
		else
			describe_value(d, base, value, sizeof value);
		fn(arg, sub, value, d->def ? d->def : "", d->reloadable);
	}
}

void config_describe(const struct tusk_config *cfg, config_key_fn *fn, void *arg)
{
	describe_table(cfg, &top_table, "", (const char *)cfg, fn, arg);
}
