/* The cacheability decision (decide.h). libpg_query parses the text into its JSON tree, which
 * this file walks: every node type must be on a short list of inert ones (no call, no lock, no
 * write, no INTO), every relation is checked against the catalogs and the rule's table lists.
 * An allow list rather than a deny list: a node type this code has not thought about is a
 * bypass, never a wrong row. */
#include "flight/decide.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <pg_query.h>

#define WALK_MAX_DEPTH 400 /* JSON nesting; deeper trees are not cached (and not expected) */

/* Parse-tree nodes that compute nothing beyond built-in operators and casts on their inputs.
 * (FuncCall is judged apart: its name is looked up in pg_proc, volatility.h.) SQLValueFunction, LockingClause, IntoClause, RangeFunction, RangeTableSample,
 * RangeTableFunc, XmlExpr and every statement type but SelectStmt are absent on purpose. */
static const char *const inert_nodes[] = {
	"A_ArrayExpr", "A_Const",    "A_Expr",      "A_Indices",  "A_Indirection", "A_Star",
	"BitString",   "BoolExpr",   "Boolean",     "BooleanTest", "CaseExpr",     "CaseWhen",
	"CoalesceExpr", "CollateClause", "ColumnRef", "CommonTableExpr", "Float", "GroupingSet",
	"Integer",     "JoinExpr",   "List",        "MinMaxExpr", "NullTest",      "ParamRef",
	"RangeSubselect", "RangeVar", "ResTarget",  "RowExpr",    "SelectStmt",    "SortBy",
	"String",      "SubLink",    "TypeCast",    "TypeName",   "WindowDef",     "WithClause",
};

/* Literals the date/time input functions turn into the current time when the query runs. */
static const char *const time_words[] = { "now", "today", "tomorrow", "yesterday" };

/* Types whose input function reads the clock for those words: a cast to one of them of
 * anything but a plain literal or a $n (whose text the time words check) may be computed to 'now'
 * when the query runs, ('n' || 'ow')::timestamptz or a text column holding it. */
static const char *const time_types[] = { "date", "time", "timetz", "timestamp", "timestamptz" };

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
	bool unsafe;     /* write mode: may have written what it does not name, or the catalog */
	bool readonly;   /* flight_read_only: judge "runs on a standby", not cacheability */
	bool unsafe_call; /* write mode: calls a function that may write anything; readonly
	                   * mode: calls a function not in readonly_functions */
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

static const char *skip_ws(const char *p, const char *end);

/* A funcname list at p, [{"String":{"sval":"f"}}] or with a schema (and a catalog) before
 * it: its parts into parts[], *n of them (3 when there are more than two, which no function
 * this file accepts has). Returns the byte after the ']', or NULL when the list is not of
 * that shape. */
static const char *read_funcname(struct walk *w, const char *p, char parts[2][FLIGHT_NAME_MAX], int *n)
{
	const char *end = w->end;
	static const char open[] = "{\"String\":{\"sval\":";
	bool cut;

	*n = 0;
	p = skip_ws(p, end);
	if (p >= end || *p != '[')
		return NULL;
	for (p++;;) {
		char part[FLIGHT_NAME_MAX];
		p = skip_ws(p, end);
		if ((size_t)(end - p) < sizeof(open) - 1 || memcmp(p, open, sizeof(open) - 1) != 0)
			return NULL;
		p = read_string(p + sizeof(open) - 1, end, part, sizeof(part), &cut);
		if (!p || cut || end - p < 2 || p[0] != '}' || p[1] != '}')
			return NULL;
		p += 2;
		if (*n < 2)
			memcpy(parts[*n], part, sizeof(part));
		if (*n < 3)
			(*n)++;
		p = skip_ws(p, end);
		if (p < end && *p == ',') {
			p++;
			continue;
		}
		return p < end && *p == ']' ? p + 1 : NULL;
	}
}

/* Write mode: a function outside nowrite_functions may write anything. Readonly mode: a
 * function outside readonly_functions keeps the statement on the primary. */
static const char *judge_funcname(struct walk *w, const char *p)
{
	char parts[2][FLIGHT_NAME_MAX];
	int n;

	p = read_funcname(w, p, parts, &n);
	if (!p)
		return NULL;
	if (n == 0 || n > 2 || (n == 2 && strcmp(parts[0], "pg_catalog") != 0) ||
	    (w->readonly ? !in_names(readonly_functions, sizeof(readonly_functions) / sizeof(readonly_functions[0]),
				     parts[n - 1], strlen(parts[n - 1]))
			 : !in_names(nowrite_functions, sizeof(nowrite_functions) / sizeof(nowrite_functions[0]),
				     parts[n - 1], strlen(parts[n - 1]))))
		w->unsafe_call = true;
	return p;
}

/* Read mode: a called function, for the volatility check (the verdict stays FLIGHT_OK until
 * flight_decide's end says FLIGHT_CALL with the list). */
static const char *note_funcname(struct walk *w, const char *p)
{
	char parts[2][FLIGHT_NAME_MAX];
	struct flight_relation f;
	struct flight_decision *o = w->out;
	int n;

	p = read_funcname(w, p, parts, &n);
	if (!p)
		return NULL;
	if (n == 0 || n > 2) {
		fail(w, FLIGHT_CALL); /* a database-qualified name: nothing to look up */
		return p;
	}
	memcpy(f.schema, n == 2 ? parts[0] : "", n == 2 ? strlen(parts[0]) + 1 : 1);
	memcpy(f.name, parts[n - 1], strlen(parts[n - 1]) + 1);
	for (int i = 0; i < o->nfuncs; i++)
		if (strcmp(o->funcs[i].schema, f.schema) == 0 && strcmp(o->funcs[i].name, f.name) == 0)
			return p;
	if (o->nfuncs == FLIGHT_MAX_FUNCS)
		fail(w, FLIGHT_CALL);
	else
		o->funcs[o->nfuncs++] = f;
	return p;
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

/* A TypeCast's body, span[0, n) (from its '{'): whether it casts something other than a plain
 * literal to a type of time_types. Its "arg" comes first and its own "typeName" last (a
 * TypeName holds no TypeName), so the last "typeName" in the span is this cast's. */
static bool casts_computed_to_time(const char *span, size_t n)
{
	static const char arg_const[] = "{\"arg\":{\"A_Const\":";
	static const char arg_param[] = "{\"arg\":{\"ParamRef\":";
	static const char tn[] = "\"typeName\":{\"names\":[";
	const char *last = NULL;

	/* A parameter's value is checked as a literal's is (flight_ext_time_words). */
	if ((n >= sizeof(arg_const) - 1 && memcmp(span, arg_const, sizeof(arg_const) - 1) == 0) ||
	    (n >= sizeof(arg_param) - 1 && memcmp(span, arg_param, sizeof(arg_param) - 1) == 0))
		return false;
	for (const char *q = span; (size_t)(span + n - q) >= sizeof(tn) - 1; q++) {
		q = memchr(q, '"', (size_t)(span + n - q));
		if (!q || (size_t)(span + n - q) < sizeof(tn) - 1)
			break;
		if (memcmp(q, tn, sizeof(tn) - 1) == 0)
			last = q + sizeof(tn) - 1;
	}
	if (!last)
		return true; /* not the shape expected: judged as a time cast */
	/* The names list: its last "sval" is the type's own name. */
	const char *close = memchr(last, ']', (size_t)(span + n - last));
	const char *name = NULL;
	for (const char *q = last; close && q < close; q++) {
		q = memchr(q, ':', (size_t)(close - q));
		if (!q)
			break;
		if (q - last >= 6 && memcmp(q - 6, "\"sval\"", 6) == 0 && q + 1 < close && q[1] == '"')
			name = q + 2;
	}
	if (!name)
		return true;
	const char *endq = memchr(name, '"', (size_t)(close - name));
	if (!endq)
		return true;
	return in_names(time_types, sizeof(time_types) / sizeof(time_types[0]), name, (size_t)(endq - name));
}

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
		} else if (strcmp(key, "funcname") == 0) {
			p = w->readonly ? judge_funcname(w, p) : note_funcname(w, p);
			if (!p)
				return NULL;
			goto next;
		} else if (key[0] >= 'A' && key[0] <= 'Z' && (cut || !is_inert(key, strlen(key))) &&
			   strcmp(key, "FuncCall") != 0 &&
			   !(w->readonly && !cut &&
			     in_names(readonly_nodes, sizeof(readonly_nodes) / sizeof(readonly_nodes[0]), key, strlen(key)))) {
			fail(w, strcmp(key, "LockingClause") == 0 ? FLIGHT_LOCKING
				: strcmp(key, "SQLValueFunction") == 0 ||
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
			const char *start = p;
			/* Write statements hold their target as an unwrapped RangeVar under "relation". */
			p = walk_value(w, p, depth + 1,
				       strcmp(key, "RangeVar") == 0 || (w->write && strcmp(key, "relation") == 0));
			if (!p)
				return NULL;
			if (!w->write && !w->readonly && strcmp(key, "TypeCast") == 0 &&
			    casts_computed_to_time(start, (size_t)(p - start)))
				fail(w, FLIGHT_TIME_LITERAL);
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

/* The decision memo. A miss used to parse every text (libpg_query's JSON tree: about three
 * times the relay's own classification), while an application sends the same few statement
 * shapes with different constants. The decision depends on the constants only through the
 * time words ('now' ...), so it is kept per *shape*: the text with each plain string literal
 * and each number replaced by a marker byte, everything else (identifiers, keywords,
 * spacing, comments) byte for byte. Two texts of one shape are the same token sequence but
 * for the literals' contents, so they have the same tree but for its constants' values.
 * Anything the shape scanner is not sure of (E'', U&'', B'' and other prefixed strings,
 * dollar quotes, block comments, control bytes, a time word in a literal) is not memoised:
 * parsed as before. The whole shape is stored and compared, never only its hash.
 * Per thread (workers call this on their own loop): no lock, bounded, freed at thread exit. */
#define MEMO_SLOTS     128
#define SHAPE_NUMBER   '\x01'
#define SHAPE_STRING   '\x02'

struct memo_entry {
	uint64_t hash;
	size_t len;
	char *shape;                   /* len bytes */
	struct flight_decision d;      /* before the table lists (policy) */
	int nctes;
	char ctes[FLIGHT_MAX_TABLES][FLIGHT_NAME_MAX];
};

static pthread_key_t memo_key;
static pthread_once_t memo_once = PTHREAD_ONCE_INIT;
static bool memo_ok;

static void memo_free(void *arg)
{
	struct memo_entry **slots = arg;
	for (int i = 0; i < MEMO_SLOTS; i++)
		if (slots[i]) {
			free(slots[i]->shape);
			free(slots[i]);
		}
	free(slots);
}

static void memo_init(void)
{
	memo_ok = pthread_key_create(&memo_key, memo_free) == 0;
}

static struct memo_entry **memo_slots(void)
{
	pthread_once(&memo_once, memo_init);
	if (!memo_ok)
		return NULL;
	struct memo_entry **slots = pthread_getspecific(memo_key);
	if (!slots && (slots = calloc(MEMO_SLOTS, sizeof(*slots))) != NULL && pthread_setspecific(memo_key, slots) != 0) {
		free(slots);
		slots = NULL;
	}
	return slots;
}

static bool ident_byte(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
	       ch == '$' || ch >= 0x80;
}

static bool digit(char ch)
{
	return ch >= '0' && ch <= '9';
}

/* The shape of s[0, n) into out (at least n bytes): its length, or -1 when it is not one
 * this scanner can vouch for. */
static long shape_of(const char *s, size_t n, char *out)
{
	size_t i = 0, o = 0;

	while (i < n) {
		unsigned char ch = (unsigned char)s[i];
		if (ch < 0x20 && ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r' && ch != '\f')
			return -1; /* also keeps the markers unambiguous */
		if (ch == '\'') {
			/* A prefixed string (E'', B'', X'', N'', U&'', a typed 'literal' glued to its
			 * type name) reads differently: not vouched for. */
			if (o > 0 && (ident_byte((unsigned char)out[o - 1]) || out[o - 1] == '&'))
				return -1;
			size_t j = i + 1, start = j;
			for (;;) {
				const char *q = memchr(s + j, '\'', n - j);
				if (!q)
					return -1;
				j = (size_t)(q - s);
				if (j + 1 < n && s[j + 1] == '\'') {
					j += 2;
					continue;
				}
				break;
			}
			/* A time word is evaluated when the query runs: such a text is judged by a parse. */
			if (j - start < 32) {
				char word[32];
				memcpy(word, s + start, j - start);
				word[j - start] = '\0';
				if (is_time_word(word))
					return -1;
			}
			out[o++] = SHAPE_STRING;
			i = j + 1;
		} else if (ch == '"') {
			size_t j = i + 1;
			for (;;) {
				const char *q = memchr(s + j, '"', n - j);
				if (!q)
					return -1;
				j = (size_t)(q - s) + 1;
				if (j < n && s[j] == '"') {
					j++;
					continue;
				}
				break;
			}
			memcpy(out + o, s + i, j - i);
			o += j - i;
			i = j;
		} else if (ch == '-' && i + 1 < n && s[i + 1] == '-') {
			const char *q = memchr(s + i, '\n', n - i);
			size_t j = q ? (size_t)(q - s) : n;
			memcpy(out + o, s + i, j - i);
			o += j - i;
			i = j;
		} else if (ch == '/' && i + 1 < n && s[i + 1] == '*') {
			return -1;
		} else if (ch == '$') {
			if (i + 1 >= n || !digit(s[i + 1]))
				return -1; /* a dollar quote */
			out[o++] = s[i++];
			while (i < n && digit(s[i]))
				out[o++] = s[i++];
		} else if (digit((char)ch) || (ch == '.' && i + 1 < n && digit(s[i + 1]))) {
			while (i < n && digit(s[i]))
				i++;
			if (i < n && s[i] == '.') {
				i++;
				while (i < n && digit(s[i]))
					i++;
			}
			if (i + 1 < n && (s[i] == 'e' || s[i] == 'E') &&
			    (digit(s[i + 1]) || ((s[i + 1] == '+' || s[i + 1] == '-') && i + 2 < n && digit(s[i + 2])))) {
				i += 2;
				while (i < n && digit(s[i]))
					i++;
			}
			out[o++] = SHAPE_NUMBER;
		} else if (ident_byte(ch)) {
			while (i < n && ident_byte((unsigned char)s[i]))
				out[o++] = s[i++];
		} else {
			out[o++] = s[i++];
		}
	}
	return (long)o;
}

static uint64_t shape_hash(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603u;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 1099511628211u;
	return h;
}

/* sql[0, len) (no NUL inside) through libpg_query, for both walks: true with *r holding a
 * tree and w->end set; false when it did not parse (or no memory). *r must be freed with
 * pg_query_free_parse_result either way. */
static bool parse_text(const char *sql, size_t len, struct walk *w, PgQueryParseResult *r)
{
	char *text = malloc(len + 1);

	memset(r, 0, sizeof(*r));
	if (!text)
		return false;
	memcpy(text, sql, len);
	text[len] = '\0';
	*r = pg_query_parse(text);
	free(text);
	if (r->error || !r->parse_tree)
		return false;
	w->end = r->parse_tree + strlen(r->parse_tree);
	return true;
}

/* The text's decision before the table lists, and its CTE names: from the parse tree. */
static void decide_tree(const char *sql, size_t len, struct walk *w)
{
	struct flight_decision *out = w->out;
	PgQueryParseResult r;
	const char *stmt;

	if (!parse_text(sql, len, w, &r)) {
		fail(w, FLIGHT_NOT_SELECT);
		goto out;
	}
	/* {"version":N,"stmts":[{"stmt":{"SelectStmt":{...}}}]}: exactly one statement, a SELECT. */
	stmt = strstr(r.parse_tree, "\"stmts\":[{\"stmt\":{\"SelectStmt\":");
	if (!stmt || strstr(stmt + strlen("\"stmts\":[{"), "{\"stmt\":") != NULL) {
		fail(w, FLIGHT_NOT_SELECT);
		goto out;
	}
	if (!walk_value(w, stmt + strlen("\"stmts\":"), 0, false))
		fail(w, FLIGHT_UNKNOWN_NODE);
out:
	out->verdict = w->verdict; /* the walk's own, or why there was none */
	pg_query_free_parse_result(r);
}

void flight_decide(const char *sql, size_t len, const struct flight_table_policy *policy,
		   struct flight_decision *out)
{
	struct walk w = { .out = out, .policy = policy };
	char shape[FLIGHT_MAX_SQL];
	long slen = -1;
	uint64_t hash = 0;
	struct memo_entry **slots = NULL, *m = NULL;

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
	if ((slots = memo_slots()) != NULL && (slen = shape_of(sql, len, shape)) >= 0) {
		hash = shape_hash(shape, (size_t)slen);
		m = slots[hash % MEMO_SLOTS];
		if (m && m->hash == hash && m->len == (size_t)slen && memcmp(m->shape, shape, (size_t)slen) == 0) {
			*out = m->d;
			w.verdict = m->d.verdict;
			w.nctes = m->nctes;
			memcpy(w.ctes, m->ctes, sizeof(w.ctes[0]) * (size_t)m->nctes);
			goto policy;
		}
	}
	decide_tree(sql, len, &w);
	/* A parse error is not memoised: the scanner does not vouch that a literal caused none. */
	if (slen >= 0 && out->verdict != FLIGHT_NOT_SELECT) {
		struct memo_entry **slot = &slots[hash % MEMO_SLOTS];
		if (!*slot)
			*slot = calloc(1, sizeof(**slot));
		m = *slot;
		char *copy = m ? realloc(m->shape, (size_t)slen + 1) : NULL;
		if (copy) {
			m->shape = copy;
			memcpy(m->shape, shape, (size_t)slen);
			m->len = (size_t)slen;
			m->hash = hash;
			m->d = *out;
			m->nctes = w.nctes;
			memcpy(m->ctes, w.ctes, sizeof(w.ctes[0]) * (size_t)w.nctes);
		} else if (m) {
			m->len = 0;
			m->hash = 0;
		}
	}
policy:
	for (int i = 0; i < out->ntables && w.verdict == FLIGHT_OK; i++) {
		const struct flight_relation *t = &out->tables[i];
		if (is_cte(&w, t))
			continue;
		if ((policy && policy->nallow > 0 && !listed(policy->allow, policy->nallow, t)) ||
		    (policy && listed(policy->exclude, policy->nexclude, t)))
			w.verdict = FLIGHT_TABLE_POLICY;
	}
	/* Only calls stand in the way: the caller checks their volatility (decide.h). */
	if (w.verdict == FLIGHT_OK && out->nfuncs > 0)
		w.verdict = FLIGHT_CALL;
	else if (w.verdict != FLIGHT_OK)
		out->nfuncs = 0;
	out->verdict = w.verdict;
	if (out->verdict != FLIGHT_OK && out->nfuncs == 0)
		out->ntables = 0;
}

bool flight_read_only(const char *sql, size_t len)
{
	struct flight_decision d;
	struct walk w = { .out = &d, .readonly = true };

	memset(&d, 0, sizeof(d));
	len = strnlen(sql, len);
	if (len > FLIGHT_MAX_SQL || !may_be_select(sql, len))
		return false;
	decide_tree(sql, len, &w); /* not memoised: the memo holds the cache's verdicts */
	return d.verdict == FLIGHT_OK && !w.unsafe_call;
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
		[FLIGHT_CALL_LOOKUP] = "function_lookup",
		[FLIGHT_WRITE_PENDING] = "write_pending",
		[FLIGHT_DEPENDENCY] = "dependency",
	};
	return (unsigned)v < FLIGHT_VERDICT_COUNT ? names[v] : "?";
}

void flight_classify_write(const char *sql, size_t len, struct flight_write *out)
{
	struct flight_decision d;
	struct walk w = { .write = true, .out = &d };
	PgQueryParseResult r;
	const char *stmts;

	memset(out, 0, sizeof(*out));
	memset(&d, 0, sizeof(d));
	if (!parse_text(sql, strnlen(sql, len), &w, &r)) {
		out->flush_db = true;
		out->ddl = true;
		goto out;
	}
	stmts = strstr(r.parse_tree, "\"stmts\":");
	if (!stmts)
		goto out; /* empty or only comments */
	/* COMMIT PREPARED commits what an earlier session wrote, unseen. */
	if (strstr(r.parse_tree, "\"kind\":\"TRANS_STMT_COMMIT_PREPARED\"") ||
	    !walk_value(&w, stmts + strlen("\"stmts\":"), 0, false) || w.unsafe) {
		out->flush_db = true;
		out->ddl = true;
		goto out;
	}
	if (w.unsafe_call) {
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
