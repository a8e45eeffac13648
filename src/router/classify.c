/* Statement classifier for transaction pooling: a lexer that mirrors PostgreSQL's scanner
 * closely enough to never miss a session statement, and libpg_query for the real answer.
 *
 * The parse tree is read from libpg_query's protobuf output with the small bounds-checked
 * reader below, not with protobuf-c's unpack: unpack builds the whole tree on the heap and
 * recurses with about 1.5 kB of stack per tree level, while all this code needs are a few
 * fields at the top of each statement. Field numbers come from pg_query.proto of libpg_query
 * 15-4.0.0; tests/unit/test_classify.c has a statement that fails if any one of them is wrong. */
#include "router/classify.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <pg_query.h>

#include "util/pb.h"

#if !defined(PG_VERSION_NUM) || PG_VERSION_NUM / 10000 != 15
#error "classify.c reads libpg_query's PostgreSQL 15 parse tree: check the field numbers"
#endif

/* ---- lexer ---------------------------------------------------------------------------- */

/* Words the rules look at; everything else is W_OTHER. */
enum word {
	W_NONE, /* not a word (start of text, or a non-word token) */
	W_OTHER,
	/* session statements when they start one */
	W_SET, W_RESET, W_DISCARD, W_PREPARE, W_EXECUTE, W_DEALLOCATE, W_LISTEN, W_UNLISTEN,
	W_DECLARE, W_LOAD, W_CLOSE,
	/* transaction control when it starts a statement */
	W_BEGIN, W_START, W_COMMIT, W_END, W_ROLLBACK, W_ABORT, W_SAVEPOINT, W_RELEASE,
	/* the words that can stand right before TEMP in PostgreSQL's grammar (OptTemp, into_clause) */
	W_CREATE, W_REPLACE, W_LOCAL, W_GLOBAL, W_INTO,
	W_TEMP, /* TEMP or TEMPORARY */
};

#define WORD_MAXLEN 10 /* "deallocate" */

struct lex {
	bool session;     /* a session rule fired (see classify_maybe_session) */
	bool txn;         /* a transaction-control word starts a statement */
	bool pg_temp;     /* an identifier starting with pg_temp */
	enum word first;  /* the text's first token, if it is a word */
	size_t first_at;  /* offset of the text's first token; the length when there is none */
	size_t last_end;  /* offset just past the text's last token (trailing comments excluded) */
	size_t tokens;    /* tokens that can add a level to a parse tree (not literals , . ;) */
	bool call;        /* DO or CALL starts a statement, or '(' follows a name that is not a
	                   * keyword or a harmless built-in: the parse tree must tell (scan_calls) */
};

/* The last tokens seen, for telling a call "name(" from other brackets. */
enum tok_kind { TK_NONE, TK_WORD, TK_QIDENT, TK_DOT, TK_OTHER };
struct tok {
	enum tok_kind kind;
	size_t at, len; /* TK_WORD: the word's bytes */
};

static inline unsigned char lower_ascii(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

/* PostgreSQL's {space} is [ \t\n\r\f]; \v is taken too: one more place a statement may start
 * only adds false positives. */
static inline bool is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static inline bool is_ident_start(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

/* {dolq_cont}: an identifier character except '$'. */
static inline bool is_dolq_cont(unsigned char c)
{
	return is_ident_start(c) || (c >= '0' && c <= '9');
}

static inline bool is_ident_cont(unsigned char c)
{
	return is_dolq_cont(c) || c == '$';
}

static enum word lookup_word(const unsigned char *w, size_t n)
{
	unsigned char l[WORD_MAXLEN];

	if (n < 3 || n > WORD_MAXLEN)
		return W_OTHER;
	for (size_t i = 0; i < n; i++)
		l[i] = lower_ascii(w[i]);
#define IS(word) (memcmp(l, word, sizeof(word) - 1) == 0)
	/* By length, then by first letter: one or two comparisons per word. */
	switch (n) {
	case 3:
		return IS("set") ? W_SET : IS("end") ? W_END : W_OTHER;
	case 4:
		return IS("load") ? W_LOAD : IS("into") ? W_INTO : IS("temp") ? W_TEMP : W_OTHER;
	case 5:
		switch (l[0]) {
		case 'r': return IS("reset") ? W_RESET : W_OTHER;
		case 'c': return IS("close") ? W_CLOSE : W_OTHER;
		case 'b': return IS("begin") ? W_BEGIN : W_OTHER;
		case 's': return IS("start") ? W_START : W_OTHER;
		case 'a': return IS("abort") ? W_ABORT : W_OTHER;
		case 'l': return IS("local") ? W_LOCAL : W_OTHER;
		default: return W_OTHER;
		}
	case 6:
		switch (l[0]) {
		case 'l': return IS("listen") ? W_LISTEN : W_OTHER;
		case 'c': return IS("commit") ? W_COMMIT : IS("create") ? W_CREATE : W_OTHER;
		case 'g': return IS("global") ? W_GLOBAL : W_OTHER;
		default: return W_OTHER;
		}
	case 7:
		switch (l[0]) {
		case 'd': return IS("discard") ? W_DISCARD : IS("declare") ? W_DECLARE : W_OTHER;
		case 'p': return IS("prepare") ? W_PREPARE : W_OTHER;
		case 'e': return IS("execute") ? W_EXECUTE : W_OTHER;
		case 'r': return IS("release") ? W_RELEASE : IS("replace") ? W_REPLACE : W_OTHER;
		default: return W_OTHER;
		}
	case 8:
		return IS("unlisten") ? W_UNLISTEN : IS("rollback") ? W_ROLLBACK : W_OTHER;
	case 9:
		return IS("savepoint") ? W_SAVEPOINT : IS("temporary") ? W_TEMP : W_OTHER;
	default:
		return IS("deallocate") ? W_DEALLOCATE : W_OTHER;
	}
#undef IS
}

static bool starts_pg_temp(const unsigned char *w, size_t n)
{
	static const char p[] = "pg_temp";

	if (n < sizeof p - 1)
		return false;
	for (size_t i = 0; i < sizeof p - 1; i++)
		if (lower_ascii(w[i]) != (unsigned char)p[i])
			return false;
	return true;
}

/* End of a quoted literal or identifier opened at s[i]. The quote doubles to escape itself;
 * with backslash (E'...'), a backslash escapes the byte after it. Unterminated: n. */
static size_t skip_quoted(const unsigned char *s, size_t i, size_t n, unsigned char q, bool backslash)
{
	for (i++; i < n; i++) {
		if (backslash && s[i] == '\\') {
			i++;
			continue;
		}
		if (s[i] == q) {
			if (i + 1 < n && s[i + 1] == q) {
				i++;
				continue;
			}
			return i + 1;
		}
	}
	return n;
}

/* End of a (nested) block comment opened at s[i], as PostgreSQL's xc state reads it. */
static size_t skip_block_comment(const unsigned char *s, size_t i, size_t n)
{
	unsigned depth = 1;

	for (i += 2; i + 1 < n; i++) {
		if (s[i] == '*' && s[i + 1] == '/') {
			i++;
			if (--depth == 0)
				return i + 1;
		} else if (s[i] == '/' && s[i + 1] == '*') {
			i++;
			depth++;
		}
	}
	return n;
}

/* Length of a dollar-quote delimiter $tag$ at s[i], 0 if there is none ({dolqdelim}). */
static size_t dollar_delim_len(const unsigned char *s, size_t i, size_t n)
{
	size_t j = i + 1;

	if (j < n && is_ident_start(s[j]))
		for (j++; j < n && is_dolq_cont(s[j]); j++)
			;
	return (j < n && s[j] == '$') ? j + 1 - i : 0;
}

/* w[0, n) is word (lower case), ignoring ASCII case. */
static bool word_is(const unsigned char *w, size_t n, const char *word)
{
	size_t k = strlen(word);

	if (n != k)
		return false;
	for (size_t i = 0; i < n; i++)
		if (lower_ascii(w[i]) != (unsigned char)word[i])
			return false;
	return true;
}

/* ---- calls: which names are harmless --------------------------------------------------- */

#include "router/call_lists.inc"

static int cmp_name(const void *key, const void *elem)
{
	return strcmp(key, *(const char *const *)elem);
}

static bool in_list(const char *const *list, size_t n, const char *name)
{
	return bsearch(name, list, n, sizeof *list, cmp_name) != NULL;
}

#define IN_LIST(list, name) in_list((list), sizeof(list) / sizeof((list)[0]), (name))

/* A pg_catalog function that keeps nothing in the session (its name as PostgreSQL folds it). */
static bool safe_function(const char *name)
{
	return IN_LIST(call_safe_functions, name);
}

/* The word w[0, n) as PostgreSQL folds an unquoted identifier (ASCII lower case) into out.
 * False when it does not fit (PostgreSQL would truncate it: not a name tusk knows). */
static bool fold_word(const unsigned char *w, size_t n, char out[CLASSIFY_NAME_MAX])
{
	if (n >= CLASSIFY_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		out[i] = (char)lower_ascii(w[i]);
	out[n] = '\0';
	return true;
}

/* '(' after the tokens t1 (last), t2, t3: a call tusk must look at in the parse tree, unless
 * the name before it is known harmless. Only errs towards "look". */
static void lex_paren(const unsigned char *s, const struct tok *t1, const struct tok *t2, const struct tok *t3,
                      struct lex *out)
{
	char name[CLASSIFY_NAME_MAX];

	if (t1->kind == TK_QIDENT) {
		out->call = true; /* "f"(...): a quoted name may spell anything */
		return;
	}
	if (t1->kind != TK_WORD)
		return; /* a bracket after an operator, a literal, another bracket: no call */
	if (!fold_word(s + t1->at, t1->len, name)) {
		out->call = true;
		return;
	}
	if (t2->kind == TK_DOT) {
		/* schema.f(...): harmless only as a pg_catalog built-in. */
		if (t3->kind != TK_WORD || !word_is(s + t3->at, t3->len, "pg_catalog") || !safe_function(name))
			out->call = true;
		return;
	}
	/* A table's column list, an alias's column names: INSERT INTO t (...), CREATE TABLE t (...),
	 * AS t (...), REFERENCES t (...), COPY t (...). */
	if (t2->kind == TK_WORD && (word_is(s + t2->at, t2->len, "into") || word_is(s + t2->at, t2->len, "table") ||
	                            word_is(s + t2->at, t2->len, "as") || word_is(s + t2->at, t2->len, "references") ||
	                            word_is(s + t2->at, t2->len, "copy")))
		return;
	/* Reserved and column-name keywords are never function names (VALUES (, IN (, CAST (...). */
	if (IN_LIST(call_keywords, name) || safe_function(name))
		return;
	out->call = true;
}

/* The token at s[i], which starts with an identifier character: a word, or a literal with a
 * one-letter prefix. Updates the rules' state; returns the end of the token. */
static size_t lex_word(const unsigned char *s, size_t i, size_t n, bool *at_start, enum word *prev,
                       struct lex *out, enum tok_kind *tk)
{
	unsigned char l = lower_ascii(s[i]);
	size_t j = i + 1;

	while (j < n && is_ident_cont(s[j]))
		j++;
	/* A one-letter prefix glued to a quote is a literal, not a word: E'', B'', X'', N'', U&''
	 * (and U&"", an identifier that can spell anything, pg_temp too, in escapes). */
	if (j == i + 1 && j < n && s[j] == '\'' && (l == 'e' || l == 'b' || l == 'x' || l == 'n')) {
		*at_start = false;
		*prev = W_NONE;
		*tk = TK_OTHER;
		return skip_quoted(s, j, n, '\'', l == 'e');
	}
	if (j == i + 1 && l == 'u' && j + 1 < n && s[j] == '&' && (s[j + 1] == '\'' || s[j + 1] == '"')) {
		*tk = TK_OTHER;
		if (s[j + 1] == '"') {
			out->session = true;
			out->tokens++;
			*tk = TK_QIDENT;
		}
		*at_start = false;
		*prev = W_NONE;
		return skip_quoted(s, j + 1, n, s[j + 1], false);
	}

	enum word w = lookup_word(s + i, j - i);
	*tk = TK_WORD;
	out->tokens++;
	if (starts_pg_temp(s + i, j - i))
		out->pg_temp = out->session = true;
	if (*at_start) {
		if (i == out->first_at)
			out->first = w;
		/* DO runs an anonymous block, CALL a procedure: what they do to the session is not
		 * in the text. */
		if (word_is(s + i, j - i, "do") || word_is(s + i, j - i, "call"))
			out->call = true;
		switch (w) {
		case W_SET: case W_RESET: case W_DISCARD: case W_PREPARE: case W_EXECUTE:
		case W_DEALLOCATE: case W_LISTEN: case W_UNLISTEN: case W_DECLARE: case W_LOAD:
		case W_CLOSE:
			out->session = true;
			break;
		case W_BEGIN: case W_START: case W_COMMIT: case W_END: case W_ROLLBACK:
		case W_ABORT: case W_SAVEPOINT: case W_RELEASE:
			out->txn = true;
			break;
		default:
			break;
		}
	}
	if (w == W_EXECUTE)
		out->session = true;
	if (w == W_TEMP && (*prev == W_CREATE || *prev == W_REPLACE || *prev == W_LOCAL ||
	                    *prev == W_GLOBAL || *prev == W_INTO))
		out->session = true;
	*prev = w;
	*at_start = false;
	return j;
}

/* One pass over s[0, n). The scanner rules mirrored are PostgreSQL 15's scan.l with
 * standard_conforming_strings on: where this code could disagree with it, it errs towards
 * seeing more words (treating a literal as code), never fewer. stop_early returns as soon as
 * out->session is known to be true. */
static void lex_sql(const unsigned char *s, size_t n, bool stop_early, bool backslash, struct lex *out)
{
	bool at_start = true; /* no token since the start or the last ';' */
	enum word prev = W_NONE;
	struct tok t1 = {TK_NONE, 0, 0}, t2 = t1, t3 = t1; /* the last three tokens, t1 the latest */
	size_t i = 0;

	*out = (struct lex){.first = W_NONE, .first_at = n};
	while (i < n) {
		unsigned char c = s[i];

		if (is_space(c)) {
			i++;
			continue;
		}
		if (c == '-' && i + 1 < n && s[i + 1] == '-') {
			while (i < n && s[i] != '\n' && s[i] != '\r')
				i++;
			continue;
		}
		if (c == '/' && i + 1 < n && s[i + 1] == '*') {
			i = skip_block_comment(s, i, n);
			continue;
		}

		/* A token starts at i. */
		if (out->first_at == n)
			out->first_at = i;
		struct tok t = {TK_OTHER, i, 0};
		if (is_ident_start(c)) {
			i = lex_word(s, i, n, &at_start, &prev, out, &t.kind);
			t.len = i - t.at;
		} else {
			at_start = c == ';';
			prev = W_NONE;
			switch (c) {
			case '.':
				t.kind = TK_DOT;
				i++;
				break;
			case '(':
				lex_paren(s, &t1, &t2, &t3, out);
				out->tokens++;
				i++;
				break;
			case ';':
			case ',':
				i++;
				break;
			case '\'':
				/* standard_conforming_strings = off: '...' takes backslash escapes, as E'...' */
				i = skip_quoted(s, i, n, '\'', backslash);
				break;
			case '"': {
				size_t end = skip_quoted(s, i, n, '"', false);
				if (starts_pg_temp(s + i + 1, end - i - 1))
					out->pg_temp = out->session = true;
				out->tokens++;
				t.kind = TK_QIDENT;
				i = end;
				break;
			}
			case '$': {
				size_t dl = dollar_delim_len(s, i, n);
				if (dl == 0) { /* a parameter $1 or a stray '$' */
					out->tokens++;
					i++;
					break;
				}
				const unsigned char *close = memmem(s + i + dl, n - i - dl, s + i, dl);
				i = close ? (size_t)(close - s) + dl : n;
				break;
			}
			default:
				if (c >= '0' && c <= '9') {
					while (i < n && s[i] >= '0' && s[i] <= '9')
						i++;
				} else {
					out->tokens++;
					i++;
				}
				break;
			}
		}
		t3 = t2;
		t2 = t1;
		t1 = t;
		out->last_end = i;
		if (stop_early && (out->session || out->call))
			return;
	}
}

/* Bytes the SELECT shortcut stops at: what could start a call, a quoted name or a dollar
 * quote (1), a ';' (2), the last letter of "temp" (3) or the second of "execute" (4): the
 * rarest letter of each word in SQL text (an 'e' or a 't' is in most words). */
static const unsigned char shortcut_class[256] = {
	['('] = 1, ['"'] = 1, ['$'] = 1, [';'] = 2, ['p'] = 3, ['P'] = 3, ['x'] = 4, ['X'] = 4,
};

/* Bit j set: s[j] (of 16) may be a byte the shortcut stops at. With SSE2 (every x86-64), each
 * byte OR 0x20 (every stop byte has that bit, so none is missed; a few others map onto one and
 * are merely looked at again) is compared with the six at once; elsewhere, the table. */
static inline __attribute__((always_inline)) unsigned stops16(const unsigned char *s)
{
#if defined(__SSE2__)
	__m128i w = _mm_or_si128(_mm_loadu_si128((const __m128i *)(const void *)s), _mm_set1_epi8(0x20));
	__m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(w, _mm_set1_epi8('(')), _mm_cmpeq_epi8(w, _mm_set1_epi8('"'))),
				 _mm_or_si128(_mm_cmpeq_epi8(w, _mm_set1_epi8('$')), _mm_cmpeq_epi8(w, _mm_set1_epi8(';'))));
	m = _mm_or_si128(m, _mm_or_si128(_mm_cmpeq_epi8(w, _mm_set1_epi8('p')), _mm_cmpeq_epi8(w, _mm_set1_epi8('x'))));
	return (unsigned)_mm_movemask_epi8(m);
#else
	unsigned m = 0;
	for (unsigned j = 0; j < 16; j++)
		m |= (unsigned)(shortcut_class[s[j]] != 0) << j;
	return m;
#endif
}

/* s[0, k) is word (k <= 8 lower-case letters), ignoring ASCII case: one load and compare.
 * OR 0x20 folds exactly the two cases of a letter onto the lower one and nothing else onto
 * it, so for words of letters this is word_is. */
static inline bool letters_ci(const unsigned char *s, const char *word, size_t k)
{
	uint64_t w = 0, ref = 0, fold = 0;
	memcpy(&w, s, k);
	memcpy(&ref, word, k);
	memcpy(&fold, "\x20\x20\x20\x20\x20\x20\x20\x20", k);
	return (w | fold) == ref;
}

/* The shortcut before lex_sql, for the commonest text of all: one SELECT (a trailing ';'
 * allowed) with no '(', '"' or '$' anywhere but in parameters ($ and digits), and neither
 * "temp" nor "execute" in any case, comments and literals included. lex_sql finds nothing in
 * such a text (its first word is SELECT and no other word starts a statement; no bracket, so
 * no call; no quoted name; no pg_temp, TEMP or EXECUTE word), so it need not run: it cost
 * ~1,500 instructions of the ~7,500 that tusk spends relaying a pgbench -S transaction
 * (bench/instructions.sh). Sixteen bytes at a time: each block's stop bytes at once, then
 * only those looked at (pgbench's SELECT has two: the p of pgbench and the ';'), ~130
 * instructions for its 56 bytes. The fuzzer checks that the answer is lex_sql's
 * (CLASSIFY_O_NO_SHORTCUT). */
static bool plain_select(const unsigned char *s, size_t n)
{
	size_t i = 0;
	while (i < n && is_space(s[i]))
		i++;
	if (n - i < 6 || !letters_ci(s + i, "select", 6) || (i + 6 < n && is_ident_cont(s[i + 6])))
		return false;
	i += 6;
	/* Blocks of 16 from i; the last one is the text's last 16 bytes (those before i masked
	 * off), or, in a text shorter than 16, a byte at a time through the table. */
	while (i < n) {
		size_t base = i;
		unsigned m;
		if (n - i >= 16) {
			m = stops16(s + i);
		} else if (n >= 16) {
			base = n - 16;
			m = stops16(s + base) & (0xffffu << (i - base));
		} else {
			m = shortcut_class[s[i]] ? 1u : 0u;
		}
		size_t next = base + 16 < n ? base + 16 : n;
		if (n < 16)
			next = i + 1;
		while (m) {
			size_t j = base + (size_t)__builtin_ctz(m);
			m &= m - 1;
			if (j < i)
				continue; /* inside a parameter's digits read already */
			unsigned char k = shortcut_class[s[j]];
			if (k == 0)
				continue; /* a byte that only looks like one after the fold */
			if (k == 1) {
				/* $1, $2 ...: a parameter, as lex_sql reads a '$' that opens no $tag$ quote */
				if (s[j] != '$' || j + 1 >= n || s[j + 1] < '0' || s[j + 1] > '9')
					return false;
				i = j + 1;
				while (i < n && s[i] >= '0' && s[i] <= '9')
					i++;
				if (i > next)
					next = i;
			} else if (k == 2) { /* only ';' and spaces to the end */
				for (; j < n; j++)
					if (s[j] != ';' && !is_space(s[j]))
						return false;
				return true;
			} else if (k == 3 ? letters_ci(s + j - 3, "temp", 4)
					  : n - j + 1 >= 7 && letters_ci(s + j - 1, "execute", 7)) {
				return false; /* j >= 6: "select" is behind */
			}
		}
		i = next;
	}
	return true;
}

/* The full pass, apart: its frame and saved registers are not paid by the texts the shortcut
 * answers. */
static __attribute__((noinline)) bool lex_maybe_session(const char *sql, size_t len, unsigned opts)
{
	struct lex lx;

	lex_sql((const unsigned char *)sql, len, true, (opts & CLASSIFY_O_BACKSLASH_QUOTES) != 0, &lx);
	return lx.session || lx.call;
}

bool classify_maybe_session_opts(const char *sql, size_t len, unsigned opts)
{
	if (sql == NULL || len == 0)
		return false;
	if (!(opts & CLASSIFY_O_NO_SHORTCUT) && plain_select((const unsigned char *)sql, len))
		return false;
	return lex_maybe_session(sql, len, opts);
}

bool classify_maybe_session(const char *sql, size_t len)
{
	return classify_maybe_session_opts(sql, len, 0);
}

/* ---- protobuf reader -------------------------------------------------------------------- */

/* Field numbers from pg_query.proto (libpg_query 15-4.0.0). */
enum {
	PB_PARSE_RESULT_VERSION = 1, PB_PARSE_RESULT_STMTS = 2,
	PB_RAW_STMT_STMT = 1,
	/* Node is a oneof: the field number is the node's type */
	PB_NODE_SELECT_STMT = 58, PB_NODE_CLOSE_PORTAL_STMT = 68, PB_NODE_CREATE_STMT = 71,
	PB_NODE_CREATE_FUNCTION_STMT = 78, PB_NODE_LISTEN_STMT = 84, PB_NODE_UNLISTEN_STMT = 85,
	PB_NODE_TRANSACTION_STMT = 86, PB_NODE_VIEW_STMT = 87, PB_NODE_LOAD_STMT = 88,
	PB_NODE_EXPLAIN_STMT = 93, PB_NODE_CREATE_TABLE_AS_STMT = 94, PB_NODE_CREATE_SEQ_STMT = 95,
	PB_NODE_VARIABLE_SET_STMT = 97, PB_NODE_DISCARD_STMT = 99, PB_NODE_PREPARE_STMT = 119,
	PB_NODE_EXECUTE_STMT = 120, PB_NODE_DEALLOCATE_STMT = 121, PB_NODE_DECLARE_CURSOR_STMT = 122,
	PB_NODE_DEF_ELEM = 195, PB_NODE_STRING = 233,
	PB_VARIABLE_SET_STMT_KIND = 1, PB_VARIABLE_SET_STMT_NAME = 2, PB_VARIABLE_SET_STMT_ARGS = 3,
	PB_VARIABLE_SET_STMT_IS_LOCAL = 4,
	PB_TRANSACTION_STMT_KIND = 1, PB_TRANSACTION_STMT_SAVEPOINT_NAME = 3,
	PB_TRANSACTION_STMT_GID = 4, PB_TRANSACTION_STMT_CHAIN = 5,
	PB_DISCARD_STMT_TARGET = 1,
	PB_PREPARE_STMT_NAME = 1, PB_EXECUTE_STMT_NAME = 1, PB_DEALLOCATE_STMT_NAME = 1,
	PB_LISTEN_STMT_CONDITIONNAME = 1, PB_UNLISTEN_STMT_CONDITIONNAME = 1,
	PB_DECLARE_CURSOR_STMT_PORTALNAME = 1, PB_DECLARE_CURSOR_STMT_OPTIONS = 2,
	PB_CLOSE_PORTAL_STMT_PORTALNAME = 1,
	PB_LOAD_STMT_FILENAME = 1,
	PB_CREATE_STMT_RELATION = 1, PB_CREATE_STMT_ONCOMMIT = 9,
	PB_VIEW_STMT_VIEW = 1,
	PB_CREATE_SEQ_STMT_SEQUENCE = 1,
	PB_CREATE_TABLE_AS_STMT_QUERY = 1, PB_CREATE_TABLE_AS_STMT_INTO = 2,
	PB_INTO_CLAUSE_REL = 1, PB_INTO_CLAUSE_ON_COMMIT = 5,
	PB_SELECT_STMT_INTO_CLAUSE = 2, PB_SELECT_STMT_OP = 17, PB_SELECT_STMT_LARG = 19,
	PB_EXPLAIN_STMT_QUERY = 1, PB_EXPLAIN_STMT_OPTIONS = 2,
	PB_CREATE_FUNCTION_STMT_FUNCNAME = 3,
	PB_RANGE_VAR_SCHEMANAME = 2, PB_RANGE_VAR_RELNAME = 3, PB_RANGE_VAR_RELPERSISTENCE = 5,
	PB_DEF_ELEM_DEFNAME = 2,
	PB_STRING_SVAL = 1,
};

/* Enum values from pg_query.proto (they are not PostgreSQL's own numbering). */
enum {
	PB_VAR_SET_VALUE = 1, PB_VAR_SET_DEFAULT = 2, PB_VAR_SET_CURRENT = 3, PB_VAR_SET_MULTI = 4,
	PB_VAR_RESET = 5, PB_VAR_RESET_ALL = 6,
	PB_TRANS_BEGIN = 1, PB_TRANS_START = 2, PB_TRANS_COMMIT = 3, PB_TRANS_ROLLBACK = 4,
	PB_TRANS_SAVEPOINT = 5, PB_TRANS_RELEASE = 6, PB_TRANS_ROLLBACK_TO = 7, PB_TRANS_PREPARE = 8,
	PB_TRANS_COMMIT_PREPARED = 9, PB_TRANS_ROLLBACK_PREPARED = 10,
	PB_DISCARD_ALL = 1, PB_DISCARD_PLANS = 2, PB_DISCARD_SEQUENCES = 3, PB_DISCARD_TEMP = 4,
	PB_ONCOMMIT_DROP = 4,
	PB_SETOP_NONE = 1,
};

/* PostgreSQL's CURSOR_OPT_HOLD (parsenodes.h), kept as is in DeclareCursorStmt.options. */
#define PG_CURSOR_OPT_HOLD 0x0020

/* An absent string: empty, but with real pointers so that lengths are plain subtractions. */
static const uint8_t pb_empty[1];
static const struct pb no_name = {pb_empty, pb_empty};

/* Decoding state of one statement: where its entries go, and whether the tree made sense. */
struct decode {
	struct classify_result *out;
	const struct lex *lx;
	int index;
	size_t offset, length;
	bool bad; /* a malformed or unexpected tree: the statement is CLASSIFY_UNKNOWN */
};

/* The last occurrence of a length-delimited field (protobuf: the last one wins). */
static bool pb_bytes(struct decode *d, struct pb m, uint32_t want, struct pb *out)
{
	uint32_t f;
	enum pb_wire w;
	uint64_t v;
	struct pb sub;
	bool found = false;

	while (m.p < m.end) {
		if (!pb_next(&m, &f, &w, &v, &sub)) {
			d->bad = true;
			return false;
		}
		if (f == want && w == PB_BYTES) {
			*out = sub;
			found = true;
		}
	}
	return found;
}

/* A varint field, 0 when absent (proto3 leaves out default values). */
static uint64_t pb_uint(struct decode *d, struct pb m, uint32_t want)
{
	uint32_t f;
	enum pb_wire w;
	uint64_t v, val = 0;
	struct pb sub;

	while (m.p < m.end) {
		if (!pb_next(&m, &f, &w, &v, &sub)) {
			d->bad = true;
			return 0;
		}
		if (f == want && w == PB_VARINT)
			val = v;
	}
	return val;
}

/* A Node: its type (the oneof's field number) and payload; 0 for an empty node. */
static uint32_t pb_node(struct decode *d, struct pb node, struct pb *payload)
{
	uint32_t f;
	enum pb_wire w;
	uint64_t v;

	if (node.p == node.end)
		return 0;
	if (!pb_next(&node, &f, &w, &v, payload) || w != PB_BYTES) {
		d->bad = true;
		return 0;
	}
	return f;
}

static bool pb_equals(struct pb s, const char *text)
{
	size_t n = strlen(text);
	return (size_t)(s.end - s.p) == n && memcmp(s.p, text, n) == 0;
}

static bool pb_has_prefix(struct pb s, const char *text)
{
	size_t n = strlen(text);
	return (size_t)(s.end - s.p) >= n && memcmp(s.p, text, n) == 0;
}

/* ---- classification ------------------------------------------------------------------- */

static void add_entry(struct decode *d, enum classify_kind kind, unsigned flags, const char *prefix,
                      struct pb name, bool lower)
{
	struct classify_result *out = d->out;
	struct classify_stmt *st;
	size_t plen = prefix ? strlen(prefix) : 0, nlen = (size_t)(name.end - name.p), k = 0;

	if (out->nsession == CLASSIFY_MAX_STMTS) {
		out->truncated = true;
		return;
	}
	st = &out->stmts[out->nsession++];
	memset(st, 0, sizeof *st);
	st->kind = kind;
	st->index = d->index;
	st->offset = d->offset;
	st->length = d->length;
	st->flags = flags;
	if (plen + nlen > CLASSIFY_NAME_MAX - 1)
		st->flags |= CLASSIFY_F_NAME_TRUNCATED;
	for (size_t i = 0; i < plen && k < CLASSIFY_NAME_MAX - 1; i++)
		st->name[k++] = prefix[i];
	for (size_t i = 0; i < nlen && k < CLASSIFY_NAME_MAX - 1; i++)
		st->name[k++] = lower ? (char)lower_ascii(name.p[i]) : (char)name.p[i];
	st->name[k] = '\0';
}

static void add(struct decode *d, enum classify_kind kind, unsigned flags, struct pb name)
{
	add_entry(d, kind, flags, NULL, name, false);
}

static bool name_is(struct pb name, const char *lower)
{
	size_t n = strlen(lower);

	if ((size_t)(name.end - name.p) != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (lower_ascii(name.p[i]) != (unsigned char)lower[i])
			return false;
	return true;
}

/* SESSION CHARACTERISTICS AS TRANSACTION ...: one SET of default_transaction_* per mode. */
static void classify_session_characteristics(struct decode *d, struct pb m, bool is_local)
{
	struct pb args = m, item, elem, defname;
	uint32_t f;
	enum pb_wire w;
	uint64_t v;
	int n = 0;

	while (args.p < args.end && pb_next(&args, &f, &w, &v, &item)) {
		if (f != PB_VARIABLE_SET_STMT_ARGS)
			continue;
		if (pb_node(d, item, &elem) != PB_NODE_DEF_ELEM ||
		    !pb_bytes(d, elem, PB_DEF_ELEM_DEFNAME, &defname) ||
		    !pb_has_prefix(defname, "transaction_")) {
			d->bad = true;
			return;
		}
		add_entry(d, is_local ? CLASSIFY_SET_LOCAL : CLASSIFY_SET, 0, "default_", defname, true);
		n++;
	}
	if (n == 0)
		d->bad = true;
}

static void classify_variable_set(struct decode *d, struct pb m)
{
	uint64_t kind = pb_uint(d, m, PB_VARIABLE_SET_STMT_KIND);
	bool is_local = pb_uint(d, m, PB_VARIABLE_SET_STMT_IS_LOCAL) != 0;
	struct pb name = no_name;
	enum classify_kind k;
	unsigned flags = 0;

	pb_bytes(d, m, PB_VARIABLE_SET_STMT_NAME, &name);
	switch (kind) {
	case PB_VAR_SET_CURRENT:
		flags = CLASSIFY_F_FROM_CURRENT;
		k = CLASSIFY_SET;
		break;
	case PB_VAR_SET_VALUE:
		k = CLASSIFY_SET;
		break;
	case PB_VAR_SET_DEFAULT: /* SET x TO DEFAULT is RESET x */
	case PB_VAR_RESET:
		k = CLASSIFY_RESET;
		break;
	case PB_VAR_RESET_ALL:
		add(d, CLASSIFY_RESET_ALL, 0, no_name);
		return;
	case PB_VAR_SET_MULTI:
		/* SET TRANSACTION ... and SET TRANSACTION SNAPSHOT last one transaction; SET SESSION
		 * CHARACTERISTICS AS TRANSACTION ... sets default_transaction_* for the session. */
		if (pb_equals(name, "TRANSACTION") || pb_equals(name, "TRANSACTION SNAPSHOT"))
			return;
		if (pb_equals(name, "SESSION CHARACTERISTICS"))
			classify_session_characteristics(d, m, is_local);
		else
			d->bad = true;
		return;
	default:
		d->bad = true;
		return;
	}
	if (is_local)
		k = CLASSIFY_SET_LOCAL;
	else if (name_is(name, "role") || name_is(name, "session_authorization"))
		k = CLASSIFY_SESSION_AUTH;
	else if (name_is(name, "transaction_isolation") || name_is(name, "transaction_read_only") ||
	         name_is(name, "transaction_deferrable"))
		return; /* reset from default_transaction_* when each transaction starts */
	add_entry(d, k, flags, NULL, name, true);
}

static void classify_transaction(struct decode *d, struct pb m)
{
	struct pb name = no_name;
	unsigned flags = pb_uint(d, m, PB_TRANSACTION_STMT_CHAIN) ? CLASSIFY_F_CHAIN : 0;

	switch (pb_uint(d, m, PB_TRANSACTION_STMT_KIND)) {
	case PB_TRANS_BEGIN:
	case PB_TRANS_START:
		add(d, CLASSIFY_BEGIN, 0, no_name);
		break;
	case PB_TRANS_COMMIT:
		add(d, CLASSIFY_COMMIT, flags, no_name);
		break;
	case PB_TRANS_PREPARE:
		pb_bytes(d, m, PB_TRANSACTION_STMT_GID, &name);
		add(d, CLASSIFY_COMMIT, CLASSIFY_F_TWO_PHASE, name);
		break;
	case PB_TRANS_ROLLBACK:
		add(d, CLASSIFY_ROLLBACK, flags, no_name);
		break;
	case PB_TRANS_SAVEPOINT:
		pb_bytes(d, m, PB_TRANSACTION_STMT_SAVEPOINT_NAME, &name);
		add(d, CLASSIFY_SAVEPOINT, 0, name);
		break;
	case PB_TRANS_RELEASE:
		pb_bytes(d, m, PB_TRANSACTION_STMT_SAVEPOINT_NAME, &name);
		add(d, CLASSIFY_RELEASE, 0, name);
		break;
	case PB_TRANS_ROLLBACK_TO:
		pb_bytes(d, m, PB_TRANSACTION_STMT_SAVEPOINT_NAME, &name);
		add(d, CLASSIFY_ROLLBACK_TO, 0, name);
		break;
	case PB_TRANS_COMMIT_PREPARED: /* not about this session's transaction */
	case PB_TRANS_ROLLBACK_PREPARED:
		break;
	default:
		d->bad = true;
		break;
	}
}

/* pg_temp is the session's temporary schema; pg_temp_N names it (or another session's, which
 * PostgreSQL refuses). Case matters: "PG_TEMP" quoted is an ordinary schema. */
static bool schema_is_temp(struct pb schema)
{
	return pb_equals(schema, "pg_temp") || pb_has_prefix(schema, "pg_temp_");
}

/* A RangeVar naming a relation being created: temporary? Its name goes to *name. */
static bool range_var_is_temp(struct decode *d, struct pb rv, struct pb *name)
{
	struct pb schema = no_name, persistence = no_name;

	*name = no_name;
	pb_bytes(d, rv, PB_RANGE_VAR_RELNAME, name);
	pb_bytes(d, rv, PB_RANGE_VAR_SCHEMANAME, &schema);
	pb_bytes(d, rv, PB_RANGE_VAR_RELPERSISTENCE, &persistence);
	return pb_equals(persistence, "t") || schema_is_temp(schema);
}

/* An IntoClause (CREATE TABLE AS, SELECT INTO): adds TEMP_OBJECT when it creates a temporary
 * table, and says so. */
static bool classify_into(struct decode *d, struct pb into)
{
	struct pb rel, name;

	if (!pb_bytes(d, into, PB_INTO_CLAUSE_REL, &rel) || !range_var_is_temp(d, rel, &name))
		return false;
	add(d, CLASSIFY_TEMP_OBJECT,
	    pb_uint(d, into, PB_INTO_CLAUSE_ON_COMMIT) == PB_ONCOMMIT_DROP ? CLASSIFY_F_ON_COMMIT_DROP : 0,
	    name);
	return true;
}

/* The statements EXPLAIN can wrap and that matter here. analyze: EXPLAIN ANALYZE runs them. */
static void classify_query(struct decode *d, uint32_t type, struct pb m, bool analyze)
{
	struct pb sub, inner;

	switch (type) {
	case PB_NODE_EXECUTE_STMT:
		pb_bytes(d, m, PB_EXECUTE_STMT_NAME, &sub);
		add(d, CLASSIFY_EXECUTE, 0, sub);
		break;
	case PB_NODE_CREATE_TABLE_AS_STMT:
		if (analyze && pb_bytes(d, m, PB_CREATE_TABLE_AS_STMT_INTO, &sub) && classify_into(d, sub))
			break;
		if (pb_bytes(d, m, PB_CREATE_TABLE_AS_STMT_QUERY, &sub) &&
		    pb_node(d, sub, &inner) == PB_NODE_EXECUTE_STMT) {
			pb_bytes(d, inner, PB_EXECUTE_STMT_NAME, &sub);
			add(d, CLASSIFY_EXECUTE, 0, sub);
		}
		break;
	case PB_NODE_SELECT_STMT:
		if (!analyze)
			break;
		/* In UNION/INTERSECT/EXCEPT the INTO sits on the leftmost SELECT: walk down larg. */
		for (size_t depth = 0; depth <= CLASSIFY_MAX_TOKENS && !d->bad; depth++) {
			uint64_t op = pb_uint(d, m, PB_SELECT_STMT_OP);
			if (op == 0 || op == PB_SETOP_NONE) {
				if (pb_bytes(d, m, PB_SELECT_STMT_INTO_CLAUSE, &sub))
					classify_into(d, sub);
				break;
			}
			if (!pb_bytes(d, m, PB_SELECT_STMT_LARG, &m))
				break;
		}
		break;
	default:
		break;
	}
}

static bool explain_analyzes(struct decode *d, struct pb m)
{
	struct pb opts = m, item, elem, defname;
	uint32_t f;
	enum pb_wire w;
	uint64_t v;

	/* Any ANALYZE option counts, even ANALYZE false: a false positive at worst. */
	while (opts.p < opts.end && pb_next(&opts, &f, &w, &v, &item))
		if (f == PB_EXPLAIN_STMT_OPTIONS && pb_node(d, item, &elem) == PB_NODE_DEF_ELEM &&
		    pb_bytes(d, elem, PB_DEF_ELEM_DEFNAME, &defname) && pb_equals(defname, "analyze"))
			return true;
	return false;
}

/* CREATE FUNCTION pg_temp.f(): the function lives in the session's temporary schema. */
static void classify_create_function(struct decode *d, struct pb m)
{
	struct pb it = m, item, str, part, schema = no_name, name = no_name;
	uint32_t f;
	enum pb_wire w;
	uint64_t v;

	while (it.p < it.end && pb_next(&it, &f, &w, &v, &item)) {
		if (f != PB_CREATE_FUNCTION_STMT_FUNCNAME)
			continue;
		part = no_name;
		if (pb_node(d, item, &str) == PB_NODE_STRING)
			pb_bytes(d, str, PB_STRING_SVAL, &part);
		schema = name;
		name = part;
	}
	if (schema_is_temp(schema))
		add(d, CLASSIFY_TEMP_OBJECT, 0, name);
}

static void classify_node(struct decode *d, uint32_t type, struct pb m)
{
	struct pb sub = no_name, name;
	uint64_t v;

	switch (type) {
	case PB_NODE_VARIABLE_SET_STMT:
		classify_variable_set(d, m);
		break;
	case PB_NODE_TRANSACTION_STMT:
		classify_transaction(d, m);
		break;
	case PB_NODE_DISCARD_STMT:
		switch (pb_uint(d, m, PB_DISCARD_STMT_TARGET)) {
		case PB_DISCARD_ALL:
			add(d, CLASSIFY_DISCARD_ALL, 0, no_name);
			break;
		case PB_DISCARD_PLANS:
			add_entry(d, CLASSIFY_DISCARD_OTHER, 0, "plans", no_name, false);
			break;
		case PB_DISCARD_SEQUENCES:
			add_entry(d, CLASSIFY_DISCARD_OTHER, 0, "sequences", no_name, false);
			break;
		case PB_DISCARD_TEMP:
			add_entry(d, CLASSIFY_DISCARD_OTHER, 0, "temp", no_name, false);
			break;
		default:
			d->bad = true;
			break;
		}
		break;
	case PB_NODE_PREPARE_STMT:
		pb_bytes(d, m, PB_PREPARE_STMT_NAME, &sub);
		add(d, CLASSIFY_PREPARE, 0, sub);
		break;
	case PB_NODE_DEALLOCATE_STMT:
		if (pb_bytes(d, m, PB_DEALLOCATE_STMT_NAME, &sub))
			add(d, CLASSIFY_DEALLOCATE, 0, sub);
		else
			add(d, CLASSIFY_DEALLOCATE_ALL, 0, no_name);
		break;
	case PB_NODE_LISTEN_STMT:
		pb_bytes(d, m, PB_LISTEN_STMT_CONDITIONNAME, &sub);
		add(d, CLASSIFY_LISTEN, 0, sub);
		break;
	case PB_NODE_UNLISTEN_STMT:
		if (pb_bytes(d, m, PB_UNLISTEN_STMT_CONDITIONNAME, &sub))
			add(d, CLASSIFY_UNLISTEN, 0, sub);
		else
			add(d, CLASSIFY_UNLISTEN_ALL, 0, no_name);
		break;
	case PB_NODE_DECLARE_CURSOR_STMT:
		if (pb_uint(d, m, PB_DECLARE_CURSOR_STMT_OPTIONS) & PG_CURSOR_OPT_HOLD) {
			pb_bytes(d, m, PB_DECLARE_CURSOR_STMT_PORTALNAME, &sub);
			add(d, CLASSIFY_HOLD_CURSOR, 0, sub);
		}
		break;
	case PB_NODE_CLOSE_PORTAL_STMT:
		if (pb_bytes(d, m, PB_CLOSE_PORTAL_STMT_PORTALNAME, &sub))
			add(d, CLASSIFY_CLOSE, 0, sub);
		else
			add(d, CLASSIFY_CLOSE_ALL, 0, no_name);
		break;
	case PB_NODE_LOAD_STMT:
		pb_bytes(d, m, PB_LOAD_STMT_FILENAME, &sub);
		add(d, CLASSIFY_LOAD, 0, sub);
		break;
	case PB_NODE_CREATE_STMT:
		if (pb_bytes(d, m, PB_CREATE_STMT_RELATION, &sub) && range_var_is_temp(d, sub, &name)) {
			v = pb_uint(d, m, PB_CREATE_STMT_ONCOMMIT);
			add(d, CLASSIFY_TEMP_OBJECT, v == PB_ONCOMMIT_DROP ? CLASSIFY_F_ON_COMMIT_DROP : 0, name);
		}
		break;
	case PB_NODE_VIEW_STMT:
		if (pb_bytes(d, m, PB_VIEW_STMT_VIEW, &sub) && range_var_is_temp(d, sub, &name))
			add(d, CLASSIFY_TEMP_OBJECT, 0, name);
		break;
	case PB_NODE_CREATE_SEQ_STMT:
		if (pb_bytes(d, m, PB_CREATE_SEQ_STMT_SEQUENCE, &sub) && range_var_is_temp(d, sub, &name))
			add(d, CLASSIFY_TEMP_OBJECT, 0, name);
		break;
	case PB_NODE_CREATE_FUNCTION_STMT:
		classify_create_function(d, m);
		break;
	case PB_NODE_CREATE_TABLE_AS_STMT:
	case PB_NODE_SELECT_STMT:
		classify_query(d, type, m, true);
		break;
	case PB_NODE_EXECUTE_STMT:
		classify_query(d, type, m, false);
		break;
	case PB_NODE_EXPLAIN_STMT: {
		struct pb inner;
		if (pb_bytes(d, m, PB_EXPLAIN_STMT_QUERY, &sub)) {
			uint32_t t = pb_node(d, sub, &inner);
			classify_query(d, t, inner, explain_analyzes(d, m));
		}
		break;
	}
	default:
		/* Any other CREATE that names pg_temp (a type, domain, operator, index on a temporary
		 * table ...) makes or needs session-local objects: flagged without reading its tree. */
		if (d->lx->first == W_CREATE && d->lx->pg_temp)
			add(d, CLASSIFY_TEMP_OBJECT, 0, no_name);
		break;
	}
}

static bool is_out_of_memory(const PgQueryError *e)
{
	return e->message && strcmp(e->message, "out of memory") == 0;
}

/* Parses text (NUL-terminated: one statement) into a tree and classifies it. */
static int classify_text(struct decode *d, const char *text)
{
	PgQueryProtobufParseResult r = pg_query_parse_protobuf(text);
	struct pb res, raw = no_name, stmt = no_name, node;
	uint32_t f, type;
	enum pb_wire w;
	uint64_t v;
	int nraw = 0, rc = 0, before = d->out->nsession;

	if (r.error) {
		if (is_out_of_memory(r.error))
			rc = -ENOMEM;
		else
			d->bad = true; /* the whole text parsed, so this is unexpected */
		goto out;
	}
	res = (struct pb){(const uint8_t *)r.parse_tree.data, (const uint8_t *)r.parse_tree.data + r.parse_tree.len};
	if (pb_uint(d, res, PB_PARSE_RESULT_VERSION) / 10000 != PG_VERSION_NUM / 10000) {
		rc = -EPROTO;
		goto out;
	}
	while (res.p < res.end) {
		if (!pb_next(&res, &f, &w, &v, &stmt)) {
			d->bad = true;
			goto out;
		}
		if (f == PB_PARSE_RESULT_STMTS && w == PB_BYTES) {
			raw = stmt;
			nraw++;
		}
	}
	if (nraw != 1 || !pb_bytes(d, raw, PB_RAW_STMT_STMT, &stmt)) {
		d->bad = true;
		goto out;
	}
	type = pb_node(d, stmt, &node);
	if (!d->bad)
		classify_node(d, type, node);
out:
	if (d->bad && rc == 0) {
		/* Whatever was added from a tree that did not make sense goes; one UNKNOWN stays. */
		d->out->nsession = before;
		add(d, CLASSIFY_UNKNOWN, 0, no_name);
	}
	pg_query_free_protobuf_parse_result(r);
	return rc;
}

/* ---- calls: what the parse tree says --------------------------------------------------- */

/* libpg_query's JSON has no schema to decode against, but it is regular: every node is
 * {"Type":{fields}}, strings are JSON strings with '"' and '\' escaped, so a key with its
 * quotes ("FuncCall":) can only be a key. Only the few nodes below are read. */

/* End of the JSON value starting at p (object, array, string or scalar), or NULL. */
static const char *json_skip(const char *p, const char *end)
{
	int depth = 0;

	while (p < end) {
		char c = *p;
		if (c == '"') {
			for (p++; p < end && *p != '"'; p++)
				if (*p == '\\')
					p++;
			if (p >= end)
				return NULL;
			p++;
		} else if (c == '{' || c == '[') {
			depth++;
			p++;
		} else if (c == '}' || c == ']') {
			if (depth == 0)
				return p; /* the end of the container holding a scalar */
			depth--;
			p++;
		} else if (c == ',' && depth == 0) {
			return p;
		} else {
			p++;
		}
		if (depth == 0 && (p >= end || *p == ',' || *p == '}' || *p == ']'))
			return p;
	}
	return NULL;
}

static bool json_eat(const char **p, const char *end, const char *lit)
{
	size_t n = strlen(lit);

	if ((size_t)(end - *p) < n || memcmp(*p, lit, n) != 0)
		return false;
	*p += n;
	return true;
}

/* A JSON string at *p without escapes that fits out: copied. */
static bool json_plain_string(const char **p, const char *end, char out[CLASSIFY_NAME_MAX])
{
	const char *q = *p;
	size_t k = 0;

	if (q >= end || *q++ != '"')
		return false;
	for (; q < end && *q != '"'; q++) {
		if (*q == '\\' || k == CLASSIFY_NAME_MAX - 1)
			return false;
		out[k++] = *q;
	}
	if (q >= end)
		return false;
	out[k] = '\0';
	*p = q + 1;
	return true;
}

/* {"A_Const":{"sval":{"sval":"NAME"}...}} at *p: its string. */
static bool json_const_string(const char *p, const char *end, char out[CLASSIFY_NAME_MAX])
{
	return json_eat(&p, end, "{\"A_Const\":{\"sval\":{\"sval\":") && json_plain_string(&p, end, out);
}

static bool json_const_true(const char *p, const char *end)
{
	return json_eat(&p, end, "{\"A_Const\":{\"boolval\":{\"boolval\":true}");
}

/* set_config(name, value, is_local) of a FuncCall whose "args" start at p: harmless when
 * is_local is the constant true; a constant name is recorded (the caller knows whether the
 * server reports it); anything else keeps state tusk cannot name. */
static void judge_set_config(const char *p, const char *end, struct classify_result *out)
{
	const char *arg[3];
	int nargs = 0;
	char name[CLASSIFY_NAME_MAX];

	if (!json_eat(&p, end, "\"args\":[")) {
		out->calls |= CLASSIFY_CALL_PIN;
		return;
	}
	while (p < end && *p != ']' && nargs < 3) {
		arg[nargs++] = p;
		p = json_skip(p, end);
		if (!p) {
			out->calls |= CLASSIFY_CALL_PIN;
			return;
		}
		if (*p == ',')
			p++;
	}
	if (nargs == 3 && json_const_true(arg[2], end))
		return;
	if (nargs < 1 || !json_const_string(arg[0], end, name) || out->nset_configs == CLASSIFY_MAX_SET_CONFIGS) {
		out->calls |= CLASSIFY_CALL_PIN;
		return;
	}
	for (char *c = name; *c; c++)
		*c = (char)lower_ascii((unsigned char)*c);
	memcpy(out->set_configs[out->nset_configs++], name, CLASSIFY_NAME_MAX);
}

/* One FuncCall's body at p ("funcname":[...],...). */
static void judge_call(const char *p, const char *end, struct classify_result *out)
{
	char parts[3][CLASSIFY_NAME_MAX];
	int n = 0;

	if (!json_eat(&p, end, "\"funcname\":[")) {
		out->calls |= CLASSIFY_CALL_RESET;
		return;
	}
	while (n < 3 && json_eat(&p, end, "{\"String\":{\"sval\":")) {
		if (!json_plain_string(&p, end, parts[n]) || !json_eat(&p, end, "}}")) {
			out->calls |= CLASSIFY_CALL_RESET; /* a name with escapes: no built-in has one */
			return;
		}
		n++;
		if (!json_eat(&p, end, ","))
			break;
	}
	if (n == 0 || !json_eat(&p, end, "]")) {
		out->calls |= CLASSIFY_CALL_RESET;
		return;
	}
	(void)json_eat(&p, end, ",");
	const char *name = parts[n - 1];
	bool builtin = n == 1 || (n == 2 && strcmp(parts[0], "pg_catalog") == 0);
	if (IN_LIST(call_session_functions, name)) {
		out->calls |= CLASSIFY_CALL_PIN; /* whatever schema: dblink lives in public */
		return;
	}
	if (builtin && strcmp(name, "set_config") == 0) {
		judge_set_config(p, end, out);
		return;
	}
	if (builtin && safe_function(name))
		return;
	/* Written by the grammar for SQL syntax (EXTRACT, OVERLAY, AT TIME ZONE ...): a
	 * built-in, never a name the client chose. */
	const char *fmt = strstr(p, "\"funcformat\":\"");
	if (builtin && fmt && fmt < end && json_eat(&fmt, end, "\"funcformat\":\"COERCE_SQL_SYNTAX\""))
		return;
	out->calls |= CLASSIFY_CALL_RESET;
}

/* The calls of one statement (text, NUL-terminated), from libpg_query's JSON tree. */
static int scan_calls(const char *text, struct classify_result *out)
{
	PgQueryParseResult r = pg_query_parse(text);
	int rc = 0;

	if (r.error) {
		if (is_out_of_memory(r.error))
			rc = -ENOMEM;
		else
			out->calls |= CLASSIFY_CALL_RESET; /* it split, so this is unexpected */
		goto out;
	}
	const char *tree = r.parse_tree, *end = tree + strlen(tree);
	if (strncmp(tree, "{\"version\":15", 13) != 0) {
		rc = -EPROTO;
		goto out;
	}
	if (strstr(tree, "\"DoStmt\":") || strstr(tree, "\"CallStmt\":"))
		out->calls |= CLASSIFY_CALL_RESET;
	for (const char *p = strstr(tree, "\"FuncCall\":{"); p; p = strstr(p, "\"FuncCall\":{")) {
		p += strlen("\"FuncCall\":{");
		judge_call(p, end, out);
	}
out:
	pg_query_free_parse_result(r);
	return rc;
}

/* The scanner's own copy of the GUC (libpg_query keeps PostgreSQL's globals per thread): what
 * a server with standard_conforming_strings = off would read, the parser reads too. */
extern __thread bool standard_conforming_strings;

static int classify(const char *sql, size_t len, struct classify_result *out, bool exhaustive, unsigned opts)
{
	bool backslash = (opts & CLASSIFY_O_BACKSLASH_QUOTES) != 0;
	PgQuerySplitResult sr;
	size_t n;
	char *buf;
	int rc = 0;

	memset(out, 0, offsetof(struct classify_result, stmts));
	n = (sql && len) ? strnlen(sql, len) : 0;
	if (n > CLASSIFY_MAX_LEN)
		return -E2BIG;
	if (n == 0)
		return 0;
	/* libpg_query wants a C string; the padding keeps any multibyte look-ahead in bounds. */
	buf = malloc(n + 8);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, sql, n);
	memset(buf + n, 0, 8);

	/* The whole text once through the grammar without building a tree: statement boundaries
	 * and syntax errors, in constant stack whatever the nesting. */
	standard_conforming_strings = !backslash; /* this thread's; restored below */
	sr = pg_query_split_with_parser(buf);
	if (sr.error) {
		if (is_out_of_memory(sr.error))
			rc = -ENOMEM;
		else
			out->parse_error = true;
		goto err_free_split;
	}
	out->nstmts = sr.n_stmts;
	for (int i = 0; i < sr.n_stmts; i++) {
		size_t loc = (size_t)sr.stmts[i]->stmt_location, slen = (size_t)sr.stmts[i]->stmt_len;
		struct lex lx;

		if (sr.stmts[i]->stmt_location < 0 || sr.stmts[i]->stmt_len < 0 || loc > n || slen > n - loc) {
			rc = -EPROTO;
			goto err_free_split;
		}
		if (slen == 0)
			slen = n - loc;
		lex_sql((const unsigned char *)buf + loc, slen, false, backslash, &lx);
		bool want_tree = exhaustive || lx.session || lx.txn, want_calls = exhaustive || lx.call;
		if (!want_tree && !want_calls)
			continue;

		struct decode d = {
			.out = out,
			.lx = &lx,
			.index = i,
			.offset = loc + lx.first_at,
			.length = lx.last_end - lx.first_at,
		};
		if (lx.first_at == slen) { /* no token where the parser found a statement */
			d.offset = loc;
			d.length = slen;
			add(&d, CLASSIFY_UNKNOWN, 0, no_name);
			continue;
		}
		if (lx.tokens > CLASSIFY_MAX_TOKENS) {
			if (want_tree)
				add(&d, CLASSIFY_UNKNOWN, 0, no_name);
			if (lx.call) /* too deep to parse safely: assume the worst */
				out->calls |= CLASSIFY_CALL_RESET;
			continue;
		}
		char *end = buf + d.offset + d.length, saved = *end;
		*end = '\0';
		rc = want_tree ? classify_text(&d, buf + d.offset) : 0;
		if (rc == 0 && want_calls)
			rc = scan_calls(buf + d.offset, out);
		*end = saved;
		if (rc < 0)
			goto err_free_split;
	}
	pg_query_free_split_result(sr);
	free(buf);
	standard_conforming_strings = true;
	return 0;

err_free_split:
	pg_query_free_split_result(sr);
	free(buf);
	standard_conforming_strings = true;
	if (rc < 0) {
		out->nstmts = 0;
		out->nsession = 0;
		out->truncated = false;
		out->calls = 0;
		out->nset_configs = 0;
	}
	return rc;
}

int classify_sql(const char *sql, size_t len, struct classify_result *out)
{
	return classify(sql, len, out, false, 0);
}

int classify_sql_opts(const char *sql, size_t len, unsigned opts, struct classify_result *out)
{
	return classify(sql, len, out, false, opts);
}

int classify_sql_exhaustive(const char *sql, size_t len, struct classify_result *out)
{
	return classify(sql, len, out, true, 0);
}

int classify_sql_exhaustive_opts(const char *sql, size_t len, unsigned opts, struct classify_result *out)
{
	return classify(sql, len, out, true, opts);
}

bool classify_is_valid_guc_name(const char *name)
{
	bool part_start = true;
	size_t n = 0;

	if (name == NULL)
		return false;
	for (const unsigned char *p = (const unsigned char *)name; *p; p++, n++) {
		if (n >= CLASSIFY_NAME_MAX - 1)
			return false;
		if (*p == '.') {
			if (part_start)
				return false; /* empty part */
			part_start = true;
		} else if (is_ident_start(*p)) {
			part_start = false;
		} else if (!part_start && ((*p >= '0' && *p <= '9') || *p == '$')) {
			continue;
		} else {
			return false;
		}
	}
	return !part_start;
}

const char *classify_kind_name(enum classify_kind kind)
{
	switch (kind) {
	case CLASSIFY_OTHER: return "other";
	case CLASSIFY_SET: return "set";
	case CLASSIFY_SET_LOCAL: return "set_local";
	case CLASSIFY_RESET: return "reset";
	case CLASSIFY_RESET_ALL: return "reset_all";
	case CLASSIFY_DISCARD_ALL: return "discard_all";
	case CLASSIFY_DISCARD_OTHER: return "discard_other";
	case CLASSIFY_PREPARE: return "prepare";
	case CLASSIFY_EXECUTE: return "execute";
	case CLASSIFY_DEALLOCATE: return "deallocate";
	case CLASSIFY_DEALLOCATE_ALL: return "deallocate_all";
	case CLASSIFY_LISTEN: return "listen";
	case CLASSIFY_UNLISTEN: return "unlisten";
	case CLASSIFY_UNLISTEN_ALL: return "unlisten_all";
	case CLASSIFY_HOLD_CURSOR: return "hold_cursor";
	case CLASSIFY_CLOSE: return "close";
	case CLASSIFY_CLOSE_ALL: return "close_all";
	case CLASSIFY_TEMP_OBJECT: return "temp_object";
	case CLASSIFY_SESSION_AUTH: return "session_auth";
	case CLASSIFY_LOAD: return "load";
	case CLASSIFY_BEGIN: return "begin";
	case CLASSIFY_COMMIT: return "commit";
	case CLASSIFY_ROLLBACK: return "rollback";
	case CLASSIFY_SAVEPOINT: return "savepoint";
	case CLASSIFY_RELEASE: return "release";
	case CLASSIFY_ROLLBACK_TO: return "rollback_to";
	case CLASSIFY_UNKNOWN: return "unknown";
	}
	return "?";
}
