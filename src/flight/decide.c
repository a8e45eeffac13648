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

/* Extra nodes a statement may hold and still write no more than the tables it names. */
static const char *const write_nodes[] = {
	"DeleteStmt", "IndexElem", "InferClause", "InsertStmt", "LockingClause", "MergeStmt", "MergeWhenClause",
	"MultiAssignRef", "OnConflictClause", "SetToDefault", "TransactionStmt", "UpdateStmt", "VariableSetStmt",
	"VariableShowStmt",
};

/* Built-in functions that write no table (for invalidation only: several are volatile, and
 * none makes a statement cacheable). Unqualified or pg_catalog. only. */
static const char *const nowrite_functions[] = {
	"abs", "array_agg", "array_length", "avg", "bool_and", "bool_or", "btrim", "ceil", "char_length",
	"clock_timestamp", "concat", "concat_ws", "count", "current_setting", "date_part", "date_trunc",
	"dense_rank", "every", "extract", "first_value", "floor", "format", "generate_series", "greatest",
	"jsonb_agg", "jsonb_build_object", "json_agg", "json_build_object", "lag", "last_value", "lead",
	"least", "left", "length", "lower", "lpad", "ltrim", "max", "md5", "min", "now", "nullif", "pg_sleep",
	"position", "random", "rank", "regexp_replace", "replace", "right", "round", "row_number", "rpad",
	"rtrim", "split_part", "statement_timestamp", "string_agg", "strpos", "substr", "substring", "sum",
	"timeofday", "to_char", "to_date", "to_number", "to_timestamp", "transaction_timestamp", "trim", "trunc",
	"unnest", "upper", "version",
};

/* flight_read_only: nodes that call only what their funcname says (judged against
 * readonly_functions) or a built-in that reads the clock or the session (CURRENT_DATE ...). */
static const char *const readonly_nodes[] = { "FuncCall", "RangeFunction", "SQLValueFunction" };

/* Built-ins that are immutable or stable and write nothing: a statement calling them may run
 * on a standby. Volatile ones (random, nextval, clock_timestamp, pg_sleep ...) and anything
 * not listed keep a statement on the primary. Unqualified or pg_catalog. only. */
static const char *const readonly_functions[] = {
	"abs", "array_agg", "array_length", "avg", "bool_and", "bool_or", "btrim", "ceil", "char_length",
	"concat", "concat_ws", "count", "current_setting", "date_part", "date_trunc", "dense_rank",
	"every", "extract", "first_value", "floor", "format", "generate_series", "greatest", "jsonb_agg",
	"jsonb_build_object", "json_agg", "json_build_object", "lag", "last_value", "lead", "least", "left",
	"length", "lower", "lpad", "ltrim", "max", "md5", "min", "now", "nullif", "position", "rank",
	"regexp_replace", "replace", "right", "round", "row_number", "rpad", "rtrim", "split_part",
	"statement_timestamp", "string_agg", "strpos", "substr", "substring", "sum", "to_char", "to_date",
	"to_number", "to_timestamp", "transaction_timestamp", "trim", "trunc", "unnest", "upper", "version",
};

struct walk {
	bool write;      /* flight_classify_write: judge writes, not cacheability */
	bool readonly;   /* flight_read_only: judge "runs on a standby", not cacheability */
	bool unsafe;     /* write mode: may have written what it does not name; readonly mode:
	                  * calls a function not in readonly_functions */
	bool writes;     /* write mode: holds INSERT, UPDATE, DELETE or MERGE */
	const char *end;
	enum flight_verdict verdict;
	struct flight_decision *out;
	const struct flight_table_policy *policy;
	int nstmts;
	char ctes[FLIGHT_MAX_TABLES][FLIGHT_NAME_MAX];
	int nctes;
};

static const char *read_string(const char *p, const char *end, char *out, size_t cap, bool *cut);

static void fail(struct walk *w, enum flight_verdict v)
{
	if (w->verdict == FLIGHT_OK)
		w->verdict = v;
}

static bool in_names(const char *const *list, size_t count, const char *name, size_t n)
{
	for (size_t i = 0; i < count; i++)
		if (strlen(list[i]) == n && memcmp(list[i], name, n) == 0)
			return true;
	return false;
}

static bool is_inert(const char *name, size_t n)
{
	return in_names(inert_nodes, sizeof(inert_nodes) / sizeof(inert_nodes[0]), name, n);
}

/* Write mode: a funcname list, [{"String":{"sval":"f"}}] or with a schema before it. */
static const char *judge_funcname(struct walk *w, const char *p)
{
	char parts[2][FLIGHT_NAME_MAX];
	int n = 0;
	const char *q = p, *end = w->end;
	char key[16];
	bool cut;

	/* The svals in order, read by scanning for "sval": the list holds only String nodes. */
	const char *close = memchr(p, ']', (size_t)(end - p));
	if (!close)
		return NULL;
	while ((q = memmem(q, (size_t)(close - q), "\"sval\":", 7)) != NULL) {
		q += 7;
		if (n == 2) {
			n = 3;
			break;
		}
		q = read_string(q, end, parts[n], sizeof(parts[n]), &cut);
		if (!q || cut)
			return NULL;
		n++;
		(void)key;
	}
	if (n == 0 || n > 2 || (n == 2 && strcmp(parts[0], "pg_catalog") != 0) ||
	    (w->readonly ? !in_names(readonly_functions, sizeof(readonly_functions) / sizeof(readonly_functions[0]),
				     parts[n - 1], strlen(parts[n - 1]))
			 : !in_names(nowrite_functions, sizeof(nowrite_functions) / sizeof(nowrite_functions[0]),
				     parts[n - 1], strlen(parts[n - 1]))))
		w->unsafe = true;
	return close + 1;
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

static bool listed(char *const *names, int n, const struct flight_relation *t)
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

static void add_table(struct walk *w, const struct flight_relation *t)
{
	struct flight_decision *o = w->out;

	if (w->write) {
		for (int i = 0; i < o->ntables; i++)
			if (strcmp(o->tables[i].name, t->name) == 0)
				return;
		if (o->ntables == FLIGHT_MAX_TABLES)
			w->unsafe = true;
		else
			o->tables[o->ntables++] = *t;
		return;
	}
	if (w->readonly) {
		/* Catalogs and any number of tables read fine on a standby; temporary tables
		 * exist only in the session that made them, on the primary. */
		if (strncmp(t->schema, "pg_temp", 7) == 0)
			fail(w, FLIGHT_TEMP);
		return;
	}

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

static bool key_is_node_ok(const char *key, bool cut)
{
	return !cut && (is_inert(key, strlen(key)) ||
			in_names(write_nodes, sizeof(write_nodes) / sizeof(write_nodes[0]), key, strlen(key)));
}

/* An object's members. rangevar: this is the body of a RangeVar, whose name fields are read. */
static const char *walk_object(struct walk *w, const char *p, int depth, bool rangevar)
{
	struct flight_relation t = { "", "" };
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
		if (w->write) {
			if (key[0] >= 'A' && key[0] <= 'Z' && key_is_node_ok(key, cut) == false &&
			    strcmp(key, "FuncCall") != 0)
				w->unsafe = true;
			if (strcmp(key, "intoClause") == 0)
				w->unsafe = true;
			if (strcmp(key, "InsertStmt") == 0 || strcmp(key, "UpdateStmt") == 0 ||
			    strcmp(key, "DeleteStmt") == 0 || strcmp(key, "MergeStmt") == 0)
				w->writes = true;
			if (strcmp(key, "funcname") == 0) {
				p = judge_funcname(w, p);
				if (!p)
					return NULL;
				goto next;
			}
		} else if (w->readonly && strcmp(key, "funcname") == 0) {
			p = judge_funcname(w, p);
			if (!p)
				return NULL;
			goto next;
		} else if (key[0] >= 'A' && key[0] <= 'Z' && (cut || !is_inert(key, strlen(key))) &&
			   !(w->readonly && !cut &&
			     in_names(readonly_nodes, sizeof(readonly_nodes) / sizeof(readonly_nodes[0]), key, strlen(key)))) {
			fail(w, strcmp(key, "LockingClause") == 0 ? FLIGHT_LOCKING
				: strcmp(key, "FuncCall") == 0 || strcmp(key, "SQLValueFunction") == 0 ||
						strcmp(key, "RangeFunction") == 0 || strcmp(key, "RangeTableSample") == 0 ||
						strcmp(key, "RangeTableFunc") == 0 || strcmp(key, "XmlExpr") == 0
					? FLIGHT_CALL
					: FLIGHT_UNKNOWN_NODE);
		}
		if (strcmp(key, "intoClause") == 0 && !w->write)
			fail(w, FLIGHT_NOT_SELECT); /* SELECT INTO creates a table */
		if ((rangevar && (strcmp(key, "relname") == 0 || strcmp(key, "schemaname") == 0 ||
				  strcmp(key, "catalogname") == 0)) ||
		    strcmp(key, "ctename") == 0 || (strcmp(key, "sval") == 0 && p < w->end && *p == '"')) {
			char val[FLIGHT_NAME_MAX * 2];
			p = read_string(p, w->end, val, sizeof(val), &cut);
			if (!p)
				return NULL;
			if (strcmp(key, "sval") == 0) {
				if (!cut && !w->readonly && is_time_word(val))
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
			/* Write statements hold their target as an unwrapped RangeVar under "relation". */
			p = walk_value(w, p, depth + 1,
				       strcmp(key, "RangeVar") == 0 || (w->write && strcmp(key, "relation") == 0));
			if (!p)
				return NULL;
		}
next:
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
		else if (w->write)
			w->unsafe = true;
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
static bool is_cte(const struct walk *w, const struct flight_relation *t)
{
	if (t->schema[0])
		return false;
	for (int i = 0; i < w->nctes; i++)
		if (strcmp(w->ctes[i], t->name) == 0)
			return true;
	return false;
}

/* Whether the first word (after blanks, comments and '(') is SELECT, WITH, TABLE or VALUES: any
 * other text is not one SELECT, and needs no parse to say so. */
static bool may_be_select(const char *s, size_t n)
{
	static const char *const words[] = { "select", "with", "table", "values" };
	size_t i = 0;

	for (;;) {
		while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r' || s[i] == '\f' || s[i] == '('))
			i++;
		if (i + 1 < n && s[i] == '-' && s[i + 1] == '-') {
			while (i < n && s[i] != '\n')
				i++;
			continue;
		}
		if (i + 1 < n && s[i] == '/' && s[i + 1] == '*')
			return true; /* nested comments: let the parser read them */
		break;
	}
	for (size_t k = 0; k < sizeof(words) / sizeof(words[0]); k++) {
		size_t w = strlen(words[k]);
		if (n - i >= w && strncasecmp(s + i, words[k], w) == 0 &&
		    (n - i == w || !((s[i + w] >= 'a' && s[i + w] <= 'z') || (s[i + w] >= 'A' && s[i + w] <= 'Z') ||
				     (s[i + w] >= '0' && s[i + w] <= '9') || s[i + w] == '_' || s[i + w] == '$' ||
				     (unsigned char)s[i + w] >= 0x80)))
			return true;
	}
	return false;
}

static void decide(const char *sql, size_t len, const struct flight_table_policy *policy,
		   struct flight_decision *out, bool readonly)
{
	struct walk w = { .out = out, .policy = policy, .readonly = readonly };
	char *text;
	const char *p, *stmt;

	memset(out, 0, sizeof(*out));
	len = strnlen(sql, len);
	if (len > FLIGHT_MAX_SQL) {
		out->verdict = FLIGHT_TOO_BIG;
		return;
	}
	if (!may_be_select(sql, len)) {
		out->verdict = FLIGHT_NOT_SELECT; /* no parse needed to know */
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
	if (w.unsafe)
		fail(&w, FLIGHT_CALL);
	for (int i = 0; i < out->ntables && w.verdict == FLIGHT_OK; i++) {
		const struct flight_relation *t = &out->tables[i];
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

void flight_decide(const char *sql, size_t len, const struct flight_table_policy *policy,
		   struct flight_decision *out)
{
	decide(sql, len, policy, out, false);
}

bool flight_read_only(const char *sql, size_t len)
{
	struct flight_decision d;

	decide(sql, len, NULL, &d, true);
	return d.verdict == FLIGHT_OK;
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

void flight_classify_write(const char *sql, size_t len, struct flight_write *out)
{
	struct flight_decision d;
	struct walk w = { .write = true, .out = &d };
	char *text;
	const char *stmts;

	memset(out, 0, sizeof(*out));
	memset(&d, 0, sizeof(d));
	len = strnlen(sql, len);
	text = malloc(len + 1);
	if (!text) {
		out->flush_db = true;
		return;
	}
	memcpy(text, sql, len);
	text[len] = '\0';
	PgQueryParseResult r = pg_query_parse(text);
	free(text);
	if (r.error || !r.parse_tree) {
		out->flush_db = true;
		goto out;
	}
	w.end = r.parse_tree + strlen(r.parse_tree);
	stmts = strstr(r.parse_tree, "\"stmts\":");
	if (!stmts)
		goto out; /* empty or only comments */
	/* COMMIT PREPARED commits what an earlier session wrote, unseen. */
	if (strstr(r.parse_tree, "\"kind\":\"TRANS_STMT_COMMIT_PREPARED\"") ||
	    !walk_value(&w, stmts + strlen("\"stmts\":"), 0, false) || w.unsafe) {
		out->flush_db = true;
		goto out;
	}
	if (!w.writes)
		goto out; /* reads, SET, SHOW, transaction control */
	out->ntables = d.ntables;
	memcpy(out->tables, d.tables, sizeof(d.tables[0]) * (size_t)d.ntables);
out:
	pg_query_free_parse_result(r);
}
