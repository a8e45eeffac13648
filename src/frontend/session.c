/* Client session state (see session.h). Blobs of NUL-separated strings keep a client's
 * footprint to what it actually set; they change only on SET/ParameterStatus, never on
 * the per-message path. */
#include "frontend/session.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <xxhash.h>

#include "pool/server.h"
#include "util/phash.h"

struct session_params_set {
	struct session_params_set *next; /* in home's bucket */
	struct session_share *home;
	uint64_t hash;
	size_t refs;
	size_t len;
	char data[];
};

static struct session_params_set **bucket_of(struct session_share *sh, uint64_t hash)
{
	return &sh->buckets[hash % SESSION_SHARE_BUCKETS];
}

/* Give up st's params: free our own, or drop a reference to the shared set (the last one
 * unlinks and frees it). */
static void params_drop(struct session_state *st)
{
	struct session_params_set *set = st->shared;
	if (!set) {
		free(st->params);
	} else if (--set->refs == 0) {
		struct session_params_set **pp = bucket_of(set->home, set->hash);
		while (*pp != set)
			pp = &(*pp)->next;
		*pp = set->next;
		free(set);
	}
	st->shared = NULL;
	st->params = NULL;
	st->params_len = 0;
}

/* About to change params: make them our own copy. 0 or -ENOMEM (still shared). */
static int params_own(struct session_state *st)
{
	if (!st->shared)
		return 0;
	char *p = malloc(st->params_len);
	if (!p)
		return -ENOMEM;
	memcpy(p, st->params, st->params_len);
	size_t len = st->params_len;
	params_drop(st);
	st->params = p;
	st->params_len = len;
	return 0;
}

void session_params_share(struct session_state *st, struct session_share *sh)
{
	if (st->shared || st->params_len == 0)
		return;
	uint64_t hash = XXH3_64bits(st->params, st->params_len);
	struct session_params_set **head = bucket_of(sh, hash), *set;
	for (set = *head; set; set = set->next)
		if (set->hash == hash && set->len == st->params_len && memcmp(set->data, st->params, set->len) == 0)
			break;
	if (!set) {
		set = malloc(sizeof *set + st->params_len);
		if (!set)
			return;
		set->home = sh;
		set->hash = hash;
		set->refs = 0;
		set->len = st->params_len;
		memcpy(set->data, st->params, set->len);
		set->next = *head;
		*head = set;
	}
	free(st->params);
	set->refs++;
	st->shared = set;
	st->params = set->data;
}

int session_params_unshare(struct session_state *st)
{
	return params_own(st);
}

void session_params_take(struct session_state *st, struct session_state *from)
{
	params_drop(st);
	st->params = from->params;
	st->params_len = from->params_len;
	st->shared = from->shared;
	st->params_hash = from->params_hash;
	from->params = NULL;
	from->params_len = 0;
	from->shared = NULL;
}

size_t session_share_count(const struct session_share *sh)
{
	size_t n = 0;
	for (int i = 0; i < SESSION_SHARE_BUCKETS; i++)
		for (const struct session_params_set *set = sh->buckets[i]; set; set = set->next)
			n++;
	return n;
}

/* What few sessions need (session.h, more). */
struct session_more {
	/* what RESET goes back to (session_startup_keep): the startup's carried statements
	 * ("name\0statement\0") and reported values ("name\0value\0") */
	char *startup_carry, *startup_params;
	size_t startup_carry_len, startup_params_len;
	/* the names the last commits set back to startup values ("name\0" each), until
	 * session_resync_take */
	char *restored;
	size_t restored_len;
	/* session pooling's named statements that RESET when they run: "statement\0setting\0"
	 * pairs (setting "": RESET ALL, "*": DISCARD ALL), names compared exactly */
	char *named_resets;
	size_t named_resets_len;
	/* the unnamed statement's text when it SETs or RESETs (session_unnamed_keep) */
	char *unnamed;
	size_t unnamed_len;
};

static const struct session_more no_more;

/* For reading: st's, or an empty one. */
static const struct session_more *more_of(const struct session_state *st)
{
	return st->more ? st->more : &no_more;
}

/* For writing: st's, allocated now if it had none; NULL without memory. */
static struct session_more *more_get(struct session_state *st)
{
	if (!st->more)
		st->more = calloc(1, sizeof *st->more);
	return st->more;
}

void session_free(struct session_state *st)
{
	params_drop(st);
	free(st->carry);
	free(st->pending);
	if (st->more) {
		free(st->more->startup_carry);
		free(st->more->startup_params);
		free(st->more->restored);
		free(st->more->named_resets);
		free(st->more->unnamed);
		free(st->more);
	}
	memset(st, 0, sizeof *st);
}

/* Remove the pair starting at off (name at off, value after it). */
static void blob_remove_pair(char *blob, size_t *len, size_t off)
{
	size_t nl = strlen(blob + off) + 1;
	size_t vl = strlen(blob + off + nl) + 1;
	memmove(blob + off, blob + off + nl + vl, *len - off - nl - vl);
	*len -= nl + vl;
}

/* The pair whose name is name (setting names: in any case; exact: as written), or -1. */
static long pair_find(const char *blob, size_t len, const char *name, bool exact)
{
	size_t off = 0;
	while (off < len) {
		size_t nl = strlen(blob + off) + 1;
		if ((exact ? strcmp : strcasecmp)(blob + off, name) == 0)
			return (long)off;
		off += nl;
		off += strlen(blob + off) + 1;
	}
	return -1;
}

static long blob_find(const char *blob, size_t len, const char *name)
{
	return pair_find(blob, len, name, false);
}

/* name in a blob of names alone ("name\0" each): its offset, or -1. */
static long blob_find_name(const char *blob, size_t len, const char *name)
{
	for (size_t off = 0; off < len; off += strlen(blob + off) + 1)
		if (strcasecmp(blob + off, name) == 0)
			return (long)off;
	return -1;
}

/* name and value[0, vlen) as a pair at the end. */
static int blob_append(char **blob, size_t *len, const char *name, const char *value, size_t vlen)
{
	size_t nl = strlen(name) + 1;
	size_t need = *len + nl + vlen + 1;
	if (need > SESSION_MAX_BYTES)
		return -E2BIG;
	char *p = realloc(*blob, need);
	if (!p)
		return -ENOMEM;
	memcpy(p + *len, name, nl);
	memcpy(p + *len + nl, value, vlen);
	p[*len + nl + vlen] = '\0';
	*blob = p;
	*len = need;
	return 0;
}

static int blob_put(char **blob, size_t *len, const char *name, const char *value, size_t vlen)
{
	long at = blob_find(*blob, *len, name);
	if (at >= 0)
		blob_remove_pair(*blob, len, (size_t)at);
	return blob_append(blob, len, name, value, vlen);
}

int session_param_set(struct session_state *st, const char *name, const char *value)
{
	const char *cur = session_param_get(st, name);
	if (cur && strcmp(cur, value) == 0)
		return 0;
	/* cur points into the shared set, which params_own may free: read it first. */
	bool counted = !session_param_read_only(name);
	uint64_t out = cur && counted ? phash_pair(name, cur) : 0;
	if (params_own(st) < 0)
		return -ENOMEM;
	int rc = blob_put(&st->params, &st->params_len, name, value, strlen(value));
	if (rc == 0 && counted)
		st->params_hash += phash_pair(name, value) - out;
	return rc;
}

/* One DateStyle value: its style (NULL: none) and order (NULL: none). False: a word not known. */
static bool datestyle_parse(const char *v, const char **style, const char **order)
{
	static const struct { const char *word, *style, *order; } words[] = {
		{ "ISO", "ISO", NULL }, { "SQL", "SQL", NULL }, { "POSTGRES", "Postgres", NULL },
		{ "GERMAN", "German", NULL }, { "YMD", NULL, "YMD" }, { "DMY", NULL, "DMY" },
		{ "EURO", NULL, "DMY" }, { "EUROPEAN", NULL, "DMY" }, { "MDY", NULL, "MDY" }, { "US", NULL, "MDY" },
		{ "NONEURO", NULL, "MDY" }, { "NONEUROPEAN", NULL, "MDY" },
	};
	bool german = false;
	*style = *order = NULL;
	while (*v) {
		size_t n = strcspn(v, ", \t");
		if (n == 0) {
			v++;
			continue;
		}
		size_t i = 0;
		while (i < sizeof words / sizeof words[0] && !(strlen(words[i].word) == n && strncasecmp(v, words[i].word, n) == 0))
			i++;
		if (i == sizeof words / sizeof words[0])
			return false;
		if (words[i].style)
			*style = words[i].style;
		if (words[i].order)
			*order = words[i].order;
		german |= words[i].style && strcmp(words[i].style, "German") == 0;
		v += n;
	}
	if (german && !*order)
		*order = "DMY";
	return *style || *order;
}

bool session_datestyle_merge(const char *prev, const char *next, char *out, size_t cap)
{
	const char *ps, *po, *ns, *no;
	if (!datestyle_parse(prev, &ps, &po) || !datestyle_parse(next, &ns, &no))
		return false;
	const char *style = ns ? ns : ps, *order = no ? no : po;
	int n = snprintf(out, cap, "%s%s%s", style ? style : "", style && order ? ", " : "", order ? order : "");
	return n > 0 && (size_t)n < cap;
}

const char *session_param_get(const struct session_state *st, const char *name)
{
	long at = blob_find(st->params, st->params_len, name);
	if (at < 0)
		return NULL;
	return st->params + at + strlen(st->params + at) + 1;
}

bool session_param_next(const struct session_state *st, size_t *pos, const char **name, const char **value)
{
	if (*pos >= st->params_len)
		return false;
	*name = st->params + *pos;
	*pos += strlen(*name) + 1;
	*value = st->params + *pos;
	*pos += strlen(*value) + 1;
	return true;
}

bool session_param_read_only(const char *name)
{
	return server_param_read_only(name);
}

static int pending_append(struct session_state *st, char op, const char *a, const char *b, size_t blen)
{
	size_t al = a ? strlen(a) + 1 : 0;
	size_t need = st->pending_len + 1 + al + (b ? blen + 1 : 0);
	if (need > SESSION_MAX_BYTES)
		return -E2BIG;
	char *p = realloc(st->pending, need);
	if (!p)
		return -ENOMEM;
	size_t o = st->pending_len;
	p[o++] = op;
	if (a) {
		memcpy(p + o, a, al);
		o += al;
	}
	if (b) {
		memcpy(p + o, b, blen);
		o += blen;
		p[o++] = '\0';
	}
	st->pending = p;
	st->pending_len = o;
	return 0;
}

int session_pending_set(struct session_state *st, const char *name, const char *stmt, size_t len)
{
	return pending_append(st, 'S', name, stmt, len);
}

int session_pending_reset(struct session_state *st, const char *name)
{
	return pending_append(st, 'R', name, NULL, 0);
}

int session_pending_reset_all(struct session_state *st)
{
	return pending_append(st, 'A', NULL, NULL, 0);
}

/* The offset just past pending record o. */
static size_t pending_next(const struct session_state *st, size_t o)
{
	char op = st->pending[o++];
	if (op == 'A' || op == 'D')
		return o;
	o += strlen(st->pending + o) + 1;
	if (op == 'S')
		o += strlen(st->pending + o) + 1;
	return o;
}

/* The offset of the last mark of savepoint name, or -1: it was made before every change
 * pending now (or never). */
static long savepoint_find(const struct session_state *st, const char *name)
{
	long at = -1;
	for (size_t o = 0; o < st->pending_len; o = pending_next(st, o))
		if (st->pending[o] == 'P' && strcmp(st->pending + o + 1, name) == 0)
			at = (long)o;
	return at;
}

int session_pending_set_seen(struct session_state *st, const char *name)
{
	return st->pending_len ? pending_append(st, 'V', name, NULL, 0) : 0;
}

int session_pending_savepoint(struct session_state *st, const char *name)
{
	return st->pending_len ? pending_append(st, 'P', name, NULL, 0) : 0;
}

void session_pending_rollback_to(struct session_state *st, const char *name)
{
	long at = savepoint_find(st, name);
	st->pending_len = at < 0 ? 0 : pending_next(st, (size_t)at); /* the savepoint stays */
}

void session_pending_release(struct session_state *st, const char *name)
{
	long at = savepoint_find(st, name);
	/* It and every savepoint made after it are gone; the changes stay the transaction's. */
	size_t o = at < 0 ? 0 : (size_t)at, w = o;
	while (o < st->pending_len) {
		size_t next = pending_next(st, o);
		if (st->pending[o] != 'P') {
			memmove(st->pending + w, st->pending + o, next - o);
			w += next - o;
		}
		o = next;
	}
	st->pending_len = w;
}

const char *session_carried(const struct session_state *st, const char *name)
{
	long at = blob_find(st->carry, st->carry_len, name);
	return at < 0 ? NULL : st->carry + at + strlen(st->carry + at) + 1;
}

static void rehash(struct session_state *st)
{
	st->carry_hash = st->carry_len ? XXH3_64bits(st->carry, st->carry_len) : 0;
	if (st->carry_len && (st->carry_hash == 0 || st->carry_hash == SESSION_CARRY_UNKNOWN))
		st->carry_hash = 1;
}

static char *dup_blob(const char *p, size_t n)
{
	char *d = malloc(n ? n : 1);
	if (d && n)
		memcpy(d, p, n);
	return d;
}

int session_startup_keep(struct session_state *st, const char *names)
{
	/* Most clients give no setting tusk carries: nothing is allocated for them (a client's
	 * bytes count, test_memory.py). */
	char *carry = st->carry_len ? dup_blob(st->carry, st->carry_len) : NULL, *params = NULL;
	size_t plen = 0;
	if (st->carry_len && !carry)
		return -ENOMEM;
	for (const char *n = names; *n; n += strlen(n) + 1) {
		const char *v = session_param_get(st, n);
		if (v && blob_put(&params, &plen, n, v, strlen(v)) < 0) {
			free(carry);
			free(params);
			return -ENOMEM;
		}
	}
	if (!carry && !params && !st->more)
		return 0;
	struct session_more *m = more_get(st);
	if (!m) {
		free(carry);
		free(params);
		return -ENOMEM;
	}
	free(m->startup_carry);
	free(m->startup_params);
	m->startup_carry = carry;
	m->startup_carry_len = carry ? st->carry_len : 0;
	m->startup_params = params;
	m->startup_params_len = plen;
	return 0;
}

bool session_has_startup(const struct session_state *st)
{
	return more_of(st)->startup_carry_len > 0 || more_of(st)->startup_params_len > 0;
}

uint64_t session_resync_take(struct session_state *st)
{
	if (!st->resync)
		return st->carry_hash;
	st->resync = false;
	if (st->more)
		st->more->restored_len = 0;
	return SESSION_CARRY_UNKNOWN;
}

static int put_str(char *out, size_t cap, size_t *pos, const char *s, size_t n);

/* Ends a statement of a list ("stmt\0stmt\0...\0"): past its NUL, the list's end after it. */
static int put_end(char *out, size_t cap, size_t *pos)
{
	if (*pos + 2 > cap)
		return -ENOSPC;
	out[(*pos)++] = '\0';
	out[*pos] = '\0';
	return 0;
}

/* One statement of a list that sets name: text (a carried statement), or else
 * SELECT set_config(name, value, false). */
static int put_setting(char *out, size_t cap, size_t *pos, const char *name, const char *value, const char *text)
{
	if (text) {
		if (put_str(out, cap, pos, text, strlen(text)) < 0)
			return -ENOSPC;
	} else if (put_str(out, cap, pos, "SELECT set_config(", 18) < 0 || session_put_literal(out, cap, pos, name) < 0 ||
		   put_str(out, cap, pos, ", ", 2) < 0 || session_put_literal(out, cap, pos, value) < 0 ||
		   put_str(out, cap, pos, ", false)", 8) < 0) {
		return -ENOSPC;
	}
	return put_end(out, cap, pos);
}

int session_resync_sql(struct session_state *st, char *out, size_t cap)
{
	size_t pos = 0;
	if (cap == 0)
		return -ENOSPC;
	out[0] = '\0';
	const struct session_more *m = more_of(st);
	for (size_t i = 0; i < m->restored_len; i += strlen(m->restored + i) + 1) {
		const char *name = m->restored + i;
		const char *text = session_carried(st, name);
		const char *value = session_param_get(st, name);
		if ((text || value) && put_setting(out, cap, &pos, name, value, text) < 0)
			return -ENOSPC;
	}
	st->resync = false;
	if (st->more)
		st->more->restored_len = 0;
	return 0;
}

/* RESET of name: its startup value again, carried or reported (false: it had none). A
 * change that does not fit is dropped; the server has the default then, which the next
 * attach's sync corrects for reported ones. */
static bool back_to_startup(struct session_state *st, const char *name)
{
	bool any = false;
	struct session_more *m = st->more;
	if (!m) /* no startup settings */
		return false;
	if (blob_find_name(m->restored, m->restored_len, name) < 0 &&
	    (blob_find(m->startup_carry, m->startup_carry_len, name) >= 0 ||
	     blob_find(m->startup_params, m->startup_params_len, name) >= 0)) {
		size_t nl = strlen(name) + 1;
		char *p = m->restored_len + nl <= SESSION_MAX_BYTES ? realloc(m->restored, m->restored_len + nl) : NULL;
		if (p) {
			memcpy(p + m->restored_len, name, nl);
			m->restored = p;
			m->restored_len += nl;
		}
	}
	long at = blob_find(m->startup_carry, m->startup_carry_len, name);
	if (at >= 0) {
		const char *text = m->startup_carry + at + strlen(m->startup_carry + at) + 1;
		(void)blob_put(&st->carry, &st->carry_len, name, text, strlen(text));
		any = true;
	}
	at = blob_find(m->startup_params, m->startup_params_len, name);
	if (at >= 0) {
		const char *n = m->startup_params + at;
		if (session_param_set(st, n, n + strlen(n) + 1) < 0) {
			/* (no memory) the server's default stays the client's view, as it is */
		}
		any = true;
	}
	return any;
}

/* Whether name is SET again by a pending record from offset o on ('S', or 'V' for one
 * whose value tusk learns otherwise): a RESET before it goes back to no startup value. */
static bool set_after(const struct session_state *st, size_t o, const char *name)
{
	for (; o < st->pending_len; o = pending_next(st, o))
		if ((st->pending[o] == 'S' || st->pending[o] == 'V') && strcasecmp(st->pending + o + 1, name) == 0)
			return true;
	return false;
}

/* RESET ALL: every name of a startup blob ("name\0value\0" pairs) back to its value, but
 * those SET again after it (pending records from o on). */
static void all_to_startup(struct session_state *st, const char *blob, size_t len, size_t o)
{
	for (size_t i = 0; i < len;) {
		const char *n = blob + i;
		i += strlen(n) + 1;
		i += strlen(blob + i) + 1;
		if (!set_after(st, o, n))
			st->resync |= back_to_startup(st, n);
	}
}

static void commit(struct session_state *st, bool to_startup)
{

	for (size_t o = 0, next; o < st->pending_len; o = next) {
		next = pending_next(st, o);
		char op = st->pending[o];
		const char *name = st->pending + o + 1;
		if (op == 'A') {
			st->carry_len = 0;
			if (to_startup) {
				const struct session_more *m = more_of(st);
				all_to_startup(st, m->startup_carry, m->startup_carry_len, next);
				all_to_startup(st, m->startup_params, m->startup_params_len, next);
			}
		} else if (op == 'R') {
			long at = blob_find(st->carry, st->carry_len, name);
			if (at >= 0)
				blob_remove_pair(st->carry, &st->carry_len, (size_t)at);
			if (to_startup && !set_after(st, next, name))
				st->resync |= back_to_startup(st, name);
		} else if (op == 'S') {
			const char *text = name + strlen(name) + 1;
			/* A change that does not fit is dropped with the rest of the blob's bound;
			 * the server still has it, and the caller pins such sessions. */
			(void)blob_put(&st->carry, &st->carry_len, name, text, strlen(text));
		} /* 'P', 'V': a savepoint's mark; a SET whose value is known otherwise */
	}
	st->pending_len = 0;
	rehash(st);
}

void session_commit(struct session_state *st)
{
	commit(st, false);
}

void session_commit_to_startup(struct session_state *st)
{
	commit(st, true);
}

typedef int (*owed_fn)(void *arg, const char *name, const char *value, const char *text);

/* The pairs of blob (startup_carry if carried, else startup_params) that the RESET of name
 * (NULL: all) at pending record ending at next went back to, unless a later record SETs the
 * name again: fn(arg, name, value, NULL), or fn(arg, name, NULL, text) for carried ones. */
static int owed_pairs(const struct session_state *st, const char *blob, size_t len, bool carried, const char *name,
		      size_t next, owed_fn fn, void *arg)
{
	for (size_t i = 0; i < len;) {
		const char *n = blob + i, *v = n + strlen(n) + 1;
		i = (size_t)(v - blob) + strlen(v) + 1;
		int rc = (!name || strcasecmp(name, n) == 0) && !set_after(st, next, n)
				 ? fn(arg, n, carried ? NULL : v, carried ? v : NULL)
				 : 0;
		if (rc)
			return rc;
	}
	return 0;
}

/* The startup values that the RESETs pending from offset from on went back from, each passed
 * to fn (owed_pairs). Stops at fn's non-zero answer. */
static int resets_each(const struct session_state *st, size_t from, owed_fn fn, void *arg)
{
	const struct session_more *m = more_of(st);
	for (size_t o = from, next; o < st->pending_len; o = next) {
		next = pending_next(st, o);
		char op = st->pending[o];
		if (op != 'A' && op != 'R')
			continue;
		const char *name = op == 'A' ? NULL : st->pending + o + 1;
		int rc = owed_pairs(st, m->startup_carry, m->startup_carry_len, true, name, next, fn, arg);
		if (rc == 0)
			rc = owed_pairs(st, m->startup_params, m->startup_params_len, false, name, next, fn, arg);
		if (rc)
			return rc;
	}
	return 0;
}

/* Where the RESETs not yet put back begin: past the last 'D' record. */
static size_t owed_from(const struct session_state *st)
{
	size_t from = 0;
	for (size_t o = 0; o < st->pending_len; o = pending_next(st, o))
		if (st->pending[o] == 'D')
			from = pending_next(st, o);
	return from;
}

/* A walk's fn for callers that want the reported values only. */
struct reported {
	int (*fn)(void *arg, const char *name, const char *value);
	void *arg;
};

static int only_reported(void *arg, const char *name, const char *value, const char *text)
{
	(void)text;
	const struct reported *t = arg;
	return value ? t->fn(t->arg, name, value) : 0;
}

int session_restores_each(const struct session_state *st, int (*fn)(void *arg, const char *name, const char *value),
			  void *arg)
{
	struct reported t = { fn, arg };
	return resets_each(st, 0, only_reported, &t);
}

static int any_owed(void *arg, const char *name, const char *value, const char *text)
{
	(void)arg;
	(void)name;
	(void)value;
	(void)text;
	return 1;
}

bool session_restore_owed(const struct session_state *st)
{
	return st->more && resets_each(st, owed_from(st), any_owed, NULL) > 0;
}

struct restore_out {
	char *out;
	size_t cap, pos;
};

static int put_restore(void *arg, const char *name, const char *value, const char *text)
{
	struct restore_out *r = arg;
	return put_setting(r->out, r->cap, &r->pos, name, value, text);
}

int session_restore_take(struct session_state *st, char *out, size_t cap,
			 int (*tell)(void *arg, const char *name, const char *value), void *arg)
{
	struct restore_out r = { out, cap, 0 };
	struct reported t = { tell, arg };
	if (cap == 0)
		return -ENOSPC;
	out[0] = '\0';
	size_t from = owed_from(st);
	int rc = resets_each(st, from, put_restore, &r);
	if (rc == 0 && tell) /* only once the SQL is whole: told means set */
		rc = resets_each(st, from, only_reported, &t);
	if (rc < 0)
		out[0] = '\0';
	/* Marked either way: what could not be put back is not tried after every statement (the
	 * commit still goes back to the startup values). Without room for the mark it is. */
	(void)pending_append(st, 'D', NULL, NULL, 0);
	return rc < 0 ? rc : 0;
}

void session_discard(struct session_state *st)
{
	st->pending_len = 0;
}

/* E'...' literal: neither quotes nor backslashes can break out. */
int session_put_literal(char *out, size_t cap, size_t *pos, const char *v)
{
	size_t p = *pos;
	if (p + 3 >= cap)
		return -ENOSPC;
	out[p++] = 'E';
	out[p++] = '\'';
	for (; *v; v++) {
		if (p + 4 >= cap)
			return -ENOSPC;
		if (*v == '\'' || *v == '\\')
			out[p++] = *v;
		out[p++] = *v;
	}
	out[p++] = '\'';
	out[p] = '\0';
	*pos = p;
	return 0;
}

static int put_str(char *out, size_t cap, size_t *pos, const char *s, size_t n)
{
	if (*pos + n + 1 >= cap)
		return -ENOSPC;
	memcpy(out + *pos, s, n);
	*pos += n;
	out[*pos] = '\0';
	return 0;
}

int session_build_sync(const struct session_state *st, const void *server, session_lookup_fn lookup,
		       uint64_t server_carry_hash, char *out, size_t cap)
{
	size_t pos = 0, it = 0;
	const char *name, *value;

	if (cap == 0)
		return -ENOSPC;
	out[0] = '\0';
	/* set_config() parses a value exactly as a startup parameter is parsed (a list such
	 * as "a,b" stays a list), which SET with one quoted literal would not. */
	bool any = false;
	while (session_param_next(st, &it, &name, &value)) {
		if (session_param_read_only(name))
			continue;
		const char *cur = lookup(server, name);
		if (cur && strcmp(cur, value) == 0)
			continue;
		if (put_str(out, cap, &pos, any ? ", set_config(" : "SELECT set_config(", any ? 13 : 18) < 0 ||
		    session_put_literal(out, cap, &pos, name) < 0 || put_str(out, cap, &pos, ", ", 2) < 0 ||
		    session_put_literal(out, cap, &pos, value) < 0 || put_str(out, cap, &pos, ", false)", 8) < 0)
			return -ENOSPC;
		any = true;
	}
	if (any && put_str(out, cap, &pos, ";", 1) < 0)
		return -ENOSPC;
	if (st->carry_len && server_carry_hash != st->carry_hash) {
		size_t o = 0;
		while (o < st->carry_len) {
			o += strlen(st->carry + o) + 1;
			const char *text = st->carry + o;
			size_t tl = strlen(text);
			o += tl + 1;
			if (put_str(out, cap, &pos, text, tl) < 0 || put_str(out, cap, &pos, ";", 1) < 0)
				return -ENOSPC;
		}
	}
	return 0;
}

/* ---- session pooling: named statements that RESET ---- */

/* stmt's pair in named_resets (statement names are compared exactly): its offset, or -1. */
static long named_find(const struct session_state *st, const char *stmt)
{
	return pair_find(more_of(st)->named_resets, more_of(st)->named_resets_len, stmt, true);
}

bool session_named_resets(const struct session_state *st)
{
	return more_of(st)->named_resets_len > 0;
}

void session_named_reset_drop(struct session_state *st, const char *stmt)
{
	long at = named_find(st, stmt);
	if (at >= 0)
		blob_remove_pair(st->more->named_resets, &st->more->named_resets_len, (size_t)at);
}

int session_named_reset_put(struct session_state *st, const char *stmt, const char *setting)
{
	session_named_reset_drop(st, stmt);
	setting = setting ? setting : "";
	struct session_more *m = more_get(st);
	return m ? blob_append(&m->named_resets, &m->named_resets_len, stmt, setting, strlen(setting)) : -ENOMEM;
}

void session_named_reset_clear(struct session_state *st)
{
	if (!st->more)
		return;
	free(st->more->named_resets);
	st->more->named_resets = NULL;
	st->more->named_resets_len = 0;
}

int session_named_reset_run(struct session_state *st, const char *stmt)
{
	long at = named_find(st, stmt);
	if (at < 0)
		return 0;
	const char *setting = st->more->named_resets + at + strlen(stmt) + 1;
	int rc;
	if (*setting && strcmp(setting, SESSION_NAMED_DISCARD_ALL) != 0)
		rc = session_pending_reset(st, setting);
	else {
		if (*setting)
			session_named_reset_clear(st); /* DISCARD ALL: its statements are gone, this one too */
		rc = session_pending_reset_all(st);
	}
	return rc < 0 ? rc : 1;
}

/* ---- the unnamed statement's SETs ---- */

int session_unnamed_keep(struct session_state *st, const char *sql, size_t len)
{
	if (len > SESSION_MAX_BYTES)
		return -E2BIG;
	struct session_more *m = more_get(st);
	char *p = m ? realloc(m->unnamed, len + 1) : NULL;
	if (!p)
		return -ENOMEM;
	memcpy(p, sql, len);
	p[len] = '\0';
	m->unnamed = p;
	m->unnamed_len = len;
	return 0;
}

const char *session_unnamed_text(const struct session_state *st, size_t *len)
{
	*len = more_of(st)->unnamed_len;
	return more_of(st)->unnamed;
}
