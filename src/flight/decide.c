/* The cacheability decision (decide.h). libpg_query parses the text into its JSON tree, which
 * this file walks: every node type must be on a short list of inert ones (no call, no lock, no
 * write, no INTO), every relation is checked against the catalogs and the rule's table lists.
 * An allow list rather than a deny list: a node type this code has not thought about is a
 * bypass, never a wrong row. */
#include "flight/decide.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <pg_query.h>

#define WALK_MAX_DEPTH 400 /* JSON nesting; deeper trees are not cached (and not expected) */

/* Parse-tree nodes that compute nothing beyond built-in operators and casts on their inputs.
 * FuncCall, SQLValueFunction, LockingClause, IntoClause, RangeFunction, RangeTableSample,
 * RangeTableFunc, XmlExpr and every statement type but SelectStmt are absent on purpose. */
static const char *const inert_nodes[] = {
	"A_ArrayExpr", "A_Const",    "A_Expr",      "A_Indices",  "A_Indirection", "A_Star",
	"BitString",   "BoolExpr",   "Boolean",     "BooleanTest", "CaseExpr",     "CaseWhen",
	"CoalesceExpr", "CollateClause", "ColumnRef", "CommonTableExpr", "Float", "GroupingSet",
	"Integer",     "JoinExpr",   "List",        "MinMaxExpr", "NullTest",      "ParamRef",
	"RangeSubselect", "RangeVar", "ResTarget",  "RowExpr",    "SelectStmt",    "SortBy",
	"String",      "SubLink",    "TypeCast",    "TypeName",   "WithClause",
};

/* Literals the date/time input functions turn into the current time when the query runs. */
static const char *const time_words[] = { "now", "today", "tomorrow", "yesterday" };

struct walk {
	const char *end;
	enum flight_verdict verdict;
	struct flight_decision *out;
	const struct flight_table_policy *policy;
	int nstmts;
	char ctes[FLIGHT_MAX_TABLES][FLIGHT_NAME_MAX];
	int nctes;
};

static void fail(struct walk *w, enum flight_verdict v)
{
	if (w->verdict == FLIGHT_OK)
		w->verdict = v;
}

static bool is_inert(const char *name, size_t n)
{
	for (size_t i = 0; i < sizeof(inert_nodes) / sizeof(inert_nodes[0]); i++)
		if (strlen(inert_nodes[i]) == n && memcmp(inert_nodes[i], name, n) == 0)
			return true;
	return false;
}

/* A JSON string at p (at the opening quote): its unescaped bytes into out (NUL-terminated,
 * cut at cap - 1 with *cut set), returns the byte after the closing quote, or NULL. */
static const char *read_string(const char *p, const char *end, char *out, size_t cap, bool *cut)
{
	size_t n = 0;

	*cut = false;
	if (p >= end || *p != '"')
		return NULL;
	for (p++; p < end && *p != '"'; p++) {
		char ch = *p;
		if (ch == '\\') {
			if (++p >= end)
				return NULL;
			ch = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p == 'u' ? '?' : *p;
			if (*p == 'u') /* a \uXXXX escape: only control characters come out this way */
				p += p + 4 < end ? 4 : 0;
		}
		if (n + 1 < cap)
			out[n++] = ch;
		else
			*cut = true;
	}
	if (cap)
		out[n] = '\0';
	return p < end ? p + 1 : NULL;
}

static const char *skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r'))
		p++;
	return p;
}

static bool is_time_word(const char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	for (size_t i = 0; i < sizeof(time_words) / sizeof(time_words[0]); i++) {
		size_t k = strlen(time_words[i]);
		if (strncasecmp(s, time_words[i], k) == 0) {
			const char *t = s + k;
			while (*t == ' ' || *t == '\t')
				t++;
			if (*t == '\0')
				return true;
		}
	}
	return false;
}

static bool listed(char *const *names, int n, const struct flight_table *t)
{
	for (int i = 0; i < n; i++) {
		const char *dot = strchr(names[i], '.');
		if (!dot) {
			if (strcmp(names[i], t->name) == 0)
				return true;
		} else if (strcmp(dot + 1, t->name) == 0 &&
			   (!t->schema[0] || ((size_t)(dot - names[i]) == strlen(t->schema) &&
					      memcmp(names[i], t->schema, strlen(t->schema)) == 0))) {
			return true;
		}
	}
	return false;
}

static void add_table(struct walk *w, const struct flight_table *t)
{
	struct flight_decision *o = w->out;

	if (strcmp(t->schema, "pg_catalog") == 0 || strcmp(t->schema, "information_schema") == 0 ||
	    strcmp(t->schema, "pg_toast") == 0 || (!t->schema[0] && strncmp(t->name, "pg_", 3) == 0)) {
		fail(w, FLIGHT_CATALOG);
		return;
	}
	if (strncmp(t->schema, "pg_temp", 7) == 0) {
		fail(w, FLIGHT_TEMP);
		return;
	}
	for (int i = 0; i < o->ntables; i++)
		if (strcmp(o->tables[i].schema, t->schema) == 0 && strcmp(o->tables[i].name, t->name) == 0)
			return;
	if (o->ntables == FLIGHT_MAX_TABLES) {
		fail(w, FLIGHT_TOO_BIG);
		return;
	}
	o->tables[o->ntables++] = *t;
}

static const char *walk_value(struct walk *w, const char *p, int depth, bool rangevar);

/* An object's members. rangevar: this is the body of a RangeVar, whose name fields are read. */
static const char *walk_object(struct walk *w, const char *p, int depth, bool rangevar)
{
	struct flight_table t = { "", "" };
	bool named = false;

	p = skip_ws(p + 1, w->end);
	if (p < w->end && *p == '}')
		return p + 1;
	for (;;) {
		char key[64];
		bool cut;

		p = read_string(skip_ws(p, w->end), w->end, key, sizeof(key), &cut);
		if (!p)
			return NULL;
		p = skip_ws(p, w->end);
		if (p >= w->end || *p != ':')
			return NULL;
		p = skip_ws(p + 1, w->end);
		if (key[0] >= 'A' && key[0] <= 'Z' && (cut || !is_inert(key, strlen(key)))) {
			fail(w, strcmp(key, "LockingClause") == 0 ? FLIGHT_LOCKING
				: strcmp(key, "FuncCall") == 0 || strcmp(key, "SQLValueFunction") == 0 ||
						strcmp(key, "RangeFunction") == 0 || strcmp(key, "RangeTableSample") == 0 ||
						strcmp(key, "RangeTableFunc") == 0 || strcmp(key, "XmlExpr") == 0
					? FLIGHT_CALL
					: FLIGHT_UNKNOWN_NODE);
		}
		if (strcmp(key, "intoClause") == 0)
			fail(w, FLIGHT_NOT_SELECT); /* SELECT INTO creates a table */
		if ((rangevar && (strcmp(key, "relname") == 0 || strcmp(key, "schemaname") == 0 ||
				  strcmp(key, "catalogname") == 0)) ||
		    strcmp(key, "ctename") == 0 || (strcmp(key, "sval") == 0 && p < w->end && *p == '"')) {
			char val[FLIGHT_NAME_MAX * 2];
			p = read_string(p, w->end, val, sizeof(val), &cut);
			if (!p)
				return NULL;
			if (strcmp(key, "sval") == 0) {
				if (!cut && is_time_word(val))
					fail(w, FLIGHT_TIME_LITERAL);
			} else if (cut || strlen(val) >= FLIGHT_NAME_MAX) {
				fail(w, FLIGHT_TOO_BIG);
			} else if (strcmp(key, "relname") == 0) {
				memcpy(t.name, val, strlen(val) + 1);
				named = true;
			} else if (strcmp(key, "schemaname") == 0) {
				memcpy(t.schema, val, strlen(val) + 1);
			} else if (strcmp(key, "ctename") == 0) {
				if (w->nctes < FLIGHT_MAX_TABLES)
					memcpy(w->ctes[w->nctes++], val, strlen(val) + 1);
				else
					fail(w, FLIGHT_TOO_BIG);
			}
			/* catalogname: a database-qualified name; PostgreSQL accepts only its own. */
		} else {
			p = walk_value(w, p, depth + 1, strcmp(key, "RangeVar") == 0);
			if (!p)
				return NULL;
		}
		p = skip_ws(p, w->end);
		if (p < w->end && *p == ',') {
			p++;
			continue;
		}
		if (p < w->end && *p == '}')
			break;
		return NULL;
	}
	if (rangevar) {
		if (named)
			add_table(w, &t);
		else
			fail(w, FLIGHT_UNKNOWN_NODE);
	}
	return p + 1;
}

static const char *walk_value(struct walk *w, const char *p, int depth, bool rangevar)
{
	if (depth > WALK_MAX_DEPTH) {
		fail(w, FLIGHT_TOO_BIG);
		return NULL;
	}
	p = skip_ws(p, w->end);
	if (p >= w->end)
		return NULL;
	if (*p == '{')
		return walk_object(w, p, depth, rangevar);
	if (rangevar)
		return NULL; /* a RangeVar is always an object */
	if (*p == '[') {
		p = skip_ws(p + 1, w->end);
		if (p < w->end && *p == ']')
			return p + 1;
		for (;;) {
			p = walk_value(w, p, depth + 1, false);
			if (!p)
				return NULL;
			p = skip_ws(p, w->end);
			if (p < w->end && *p == ',') {
				p++;
				continue;
			}
			return p < w->end && *p == ']' ? p + 1 : NULL;
		}
	}
	if (*p == '"') {
		bool cut;
		return read_string(p, w->end, NULL, 0, &cut);
	}
	while (p < w->end && *p != ',' && *p != '}' && *p != ']')
		p++; /* number, true, false, null */
	return p;
}

/* Relations named like a CTE of the statement may be the CTE: their versions are still
 * tracked (a stray bump costs a miss), but the table lists do not judge them. */
static bool is_cte(const struct walk *w, const struct flight_table *t)
{
	if (t->schema[0])
		return false;
	for (int i = 0; i < w->nctes; i++)
		if (strcmp(w->ctes[i], t->name) == 0)
			return true;
	return false;
}

void flight_decide(const char *sql, size_t len, const struct flight_table_policy *policy,
		   struct flight_decision *out)
{
	struct walk w = { .out = out, .policy = policy };
	char *text;
	const char *p, *stmt;

	memset(out, 0, sizeof(*out));
	len = strnlen(sql, len);
	if (len > FLIGHT_MAX_SQL) {
		out->verdict = FLIGHT_TOO_BIG;
		return;
	}
	text = malloc(len + 1);
	if (!text) {
		out->verdict = FLIGHT_UNKNOWN_NODE;
		return;
	}
	memcpy(text, sql, len);
	text[len] = '\0';
	PgQueryParseResult r = pg_query_parse(text);
	free(text);
	if (r.error || !r.parse_tree) {
		out->verdict = FLIGHT_NOT_SELECT;
		goto out;
	}
	w.end = r.parse_tree + strlen(r.parse_tree);
	/* {"version":N,"stmts":[{"stmt":{"SelectStmt":{...}}}]}: exactly one statement, a SELECT. */
	stmt = strstr(r.parse_tree, "\"stmts\":[{\"stmt\":{\"SelectStmt\":");
	if (!stmt || strstr(stmt + strlen("\"stmts\":[{"), "{\"stmt\":") != NULL) {
		out->verdict = FLIGHT_NOT_SELECT;
		goto out;
	}
	p = walk_value(&w, stmt + strlen("\"stmts\":"), 0, false);
	if (!p && w.verdict == FLIGHT_OK)
		w.verdict = FLIGHT_UNKNOWN_NODE;
	for (int i = 0; i < out->ntables && w.verdict == FLIGHT_OK; i++) {
		const struct flight_table *t = &out->tables[i];
		if (is_cte(&w, t))
			continue;
		if ((policy && policy->nallow > 0 && !listed(policy->allow, policy->nallow, t)) ||
		    (policy && listed(policy->exclude, policy->nexclude, t)))
			w.verdict = FLIGHT_TABLE_POLICY;
	}
	out->verdict = w.verdict;
out:
	if (out->verdict != FLIGHT_OK)
		out->ntables = 0;
	pg_query_free_parse_result(r);
}

const char *flight_verdict_name(enum flight_verdict v)
{
	static const char *const names[FLIGHT_VERDICT_COUNT] = {
		[FLIGHT_OK] = "ok",
		[FLIGHT_NOT_SELECT] = "not_select",
		[FLIGHT_LOCKING] = "locking",
		[FLIGHT_CALL] = "function_call",
		[FLIGHT_TIME_LITERAL] = "time_literal",
		[FLIGHT_CATALOG] = "catalog",
		[FLIGHT_TEMP] = "temp",
		[FLIGHT_TABLE_POLICY] = "table_policy",
		[FLIGHT_TOO_BIG] = "too_big",
		[FLIGHT_UNKNOWN_NODE] = "unknown_node",
	};
	return (unsigned)v < FLIGHT_VERDICT_COUNT ? names[v] : "?";
}
