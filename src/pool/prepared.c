/* Named prepared statements in transaction pooling (see prepared.h): statement identity, the
 * per-client name map, the per-server LRU set, and the readers and rewriters of the messages
 * that name statements. Readers see bytes a client chose: every length is checked against
 * what is present and against a limit before use. Builders write nothing unless all fits. */
#include "pool/prepared.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <xxhash.h>

#include "proto/proto.h"
#include "router/classify.h"

/* ---- identity ---- */

static uint64_t load_be64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

/* SHA-256, not XXH3: with XXH3's public default secret, colliding inputs can be constructed,
 * and server-side names are visible to every session (pg_prepared_statements), so a client
 * could plant a statement under the name of another client's query. This runs once per Parse
 * of a new client name, never per Bind, so its cost does not matter. */
int prep_identity_ctx(const uint8_t *rest, size_t len, uint64_t ctx, struct prep_hash *out)
{
	uint8_t md[EVP_MAX_MD_SIZE], cb[8];
	unsigned int mdlen = 0;
	EVP_MD_CTX *x = EVP_MD_CTX_new();
	int ok = x && EVP_DigestInit_ex(x, EVP_sha256(), NULL) == 1;

	for (int i = 0; i < 8; i++)
		cb[i] = (uint8_t)(ctx >> (56 - 8 * i));
	/* Context 0 hashes the body alone: the names tusk used before contexts existed. */
	ok = ok && (ctx == 0 || EVP_DigestUpdate(x, cb, sizeof cb) == 1);
	ok = ok && EVP_DigestUpdate(x, rest, len) == 1 && EVP_DigestFinal_ex(x, md, &mdlen) == 1 && mdlen >= 16;
	EVP_MD_CTX_free(x);
	if (!ok)
		return -ENOMEM;
	out->hi = load_be64(md);
	out->lo = load_be64(md + 8);
	return 0;
}

int prep_identity(const uint8_t *rest, size_t len, struct prep_hash *out)
{
	return prep_identity_ctx(rest, len, 0, out);
}

void prep_server_name(struct prep_hash h, char out[PREP_SERVER_NAME_SIZE])
{
	static const char hex[] = "0123456789abcdef";
	memcpy(out, "tusk_", 5);
	for (int i = 0; i < 16; i++)
		out[5 + i] = hex[(h.hi >> (60 - 4 * i)) & 0xf];
	for (int i = 0; i < 16; i++)
		out[21 + i] = hex[(h.lo >> (60 - 4 * i)) & 0xf];
	out[37] = '\0';
}

/* ---- readers ---- */

/* The length of the NUL-terminated name at p, of which have bytes are present and total belong
 * to the message: >= 0 the length, -1 need more, PROTO_EMALFORMED when the name is longer than
 * PREP_NAME_MAX or the message ends first. Looks at no more than PREP_NAME_MAX + 1 bytes, so a
 * stream that never sends a NUL is rejected instead of waited for. */
static ssize_t scan_name(const uint8_t *p, size_t have, size_t total)
{
	size_t window = have < PREP_NAME_MAX + 1 ? have : PREP_NAME_MAX + 1;
	const uint8_t *nul = window ? memchr(p, 0, window) : NULL;
	if (nul)
		return nul - p;
	if (window == PREP_NAME_MAX + 1 || have == total)
		return PROTO_EMALFORMED;
	return -1;
}

/* The header of a message of the expected type(s): PROTO_HDR_LEN, 0 or PROTO_E*. The type is
 * checked as soon as one byte is present so a caller's mix-up is not mistaken for "need more". */
static ssize_t read_hdr(const uint8_t *msg, size_t avail, uint32_t max_len, uint8_t t1, uint8_t t2,
			struct proto_hdr *h)
{
	if (avail >= 1 && msg[0] != t1 && msg[0] != t2)
		return PROTO_EMALFORMED;
	return proto_read_hdr(msg, avail, max_len, h);
}

ssize_t prep_read_parse(const uint8_t *msg, size_t avail, uint32_t max_len, struct prep_parse *out)
{
	struct proto_hdr h;
	ssize_t n = read_hdr(msg, avail, max_len, 'P', 'P', &h);
	if (n <= 0)
		return n;
	size_t total = 1 + (size_t)h.len;
	if (avail < total)
		return 0;

	struct proto_reader r;
	proto_reader_init(&r, msg + PROTO_HDR_LEN, h.len - 4);
	const char *name = proto_get_cstr(&r);
	size_t name_len = r.off ? r.off - 1 : 0;
	size_t rest_off = r.off;
	size_t query_len;
	const char *query = proto_get_cstr_n(&r, &query_len);
	uint16_t nparams = proto_get_u16(&r);
	proto_get_bytes(&r, (size_t)nparams * 4);
	/* PostgreSQL rejects trailing bytes too (pq_getmsgend), and they would be hashed. */
	if (r.err || proto_remaining(&r) != 0 || name_len > PREP_NAME_MAX)
		return PROTO_EMALFORMED;

	out->name = name;
	out->name_len = name_len;
	out->query = query;
	out->query_len = query_len;
	out->nparams = nparams;
	out->rest = r.p + rest_off;
	out->rest_len = r.len - rest_off;
	return (ssize_t)total;
}

ssize_t prep_read_bind_head(const uint8_t *msg, size_t avail, uint32_t max_len,
			    struct prep_bind_head *out)
{
	struct proto_hdr h;
	ssize_t n = read_hdr(msg, avail, max_len, 'B', 'B', &h);
	if (n <= 0)
		return n;
	/* Only the message's own bytes count: what follows it in the buffer is another message. */
	const uint8_t *body = msg + PROTO_HDR_LEN;
	size_t total = h.len - 4;
	size_t have = avail - PROTO_HDR_LEN < total ? avail - PROTO_HDR_LEN : total;

	ssize_t plen = scan_name(body, have, total);
	if (plen < 0)
		return plen == -1 ? 0 : plen;
	size_t soff = (size_t)plen + 1;
	ssize_t slen = scan_name(body + soff, have - soff, total - soff);
	if (slen < 0)
		return slen == -1 ? 0 : slen;

	out->len = h.len;
	out->portal = (const char *)body;
	out->portal_len = (size_t)plen;
	out->stmt = (const char *)body + soff;
	out->stmt_len = (size_t)slen;
	return (ssize_t)(PROTO_HDR_LEN + soff + (size_t)slen + 1);
}

/* Kind byte, name, NUL: the largest Describe or Close body with a name tusk accepts. */
#define TARGET_LEN_MAX (4 + 1 + PREP_NAME_MAX + 1)

ssize_t prep_read_target(const uint8_t *msg, size_t avail, struct prep_target *out)
{
	struct proto_hdr h;
	ssize_t n = read_hdr(msg, avail, TARGET_LEN_MAX, 'D', 'C', &h);
	if (n <= 0)
		return n == PROTO_ETOOLONG ? PROTO_EMALFORMED : n;
	if (h.len < 4 + 2)
		return PROTO_EMALFORMED; /* no room for a kind and a NUL */
	size_t total = 1 + (size_t)h.len;
	if (avail < total)
		return 0;

	const uint8_t *body = msg + PROTO_HDR_LEN;
	size_t name_size = h.len - 4 - 1; /* including the NUL */
	if (body[0] != 'S' && body[0] != 'P')
		return PROTO_EMALFORMED;
	/* The first NUL must be the last byte: no unterminated name, no trailing bytes. */
	if (memchr(body + 1, 0, name_size) != body + 1 + name_size - 1)
		return PROTO_EMALFORMED;

	out->type = h.type;
	out->kind = body[0];
	out->name = (const char *)body + 1;
	out->name_len = name_size - 1;
	return (ssize_t)total;
}

/* ---- descriptions ---- */

static uint64_t nonzero(uint64_t h)
{
	return h ? h : 1;
}

uint64_t prep_desc_params(const uint8_t *body, size_t len)
{
	struct proto_reader r;
	proto_reader_init(&r, body, len);
	size_t n = proto_get_u16(&r);
	if (r.err || proto_remaining(&r) != 4 * n)
		return 0;
	return nonzero(XXH3_64bits_withSeed(body, len, 't'));
}

uint64_t prep_desc_rows(const uint8_t *body, size_t len)
{
	if (!body)
		return nonzero(XXH3_64bits_withSeed("", 0, 'n'));
	struct proto_reader r;
	proto_reader_init(&r, body, len);
	size_t n = proto_get_u16(&r);
	if (r.err)
		return 0;
	/* Chained: each part is hashed with the hash so far as its seed. */
	uint64_t h = XXH3_64bits_withSeed(body, 2, 'T');
	for (size_t i = 0; i < n; i++) {
		size_t name;
		const char *s = proto_get_cstr_n(&r, &name);
		/* name, then table OID (4), column number (2), type OID (4), length (2),
		 * modifier (4), format (2) */
		const uint8_t *attrs = proto_get_bytes(&r, 18);
		if (r.err)
			return 0;
		h = XXH3_64bits_withSeed(s, name + 1, h); /* with its NUL */
		h = XXH3_64bits_withSeed(attrs + 6, 10, h);
	}
	if (proto_remaining(&r) != 0)
		return 0;
	return nonzero(h);
}

bool prep_desc_differs(struct prep_desc told, struct prep_desc now)
{
	return (told.params && now.params && told.params != now.params) ||
	       (told.rows && now.rows && told.rows != now.rows);
}

/* ---- builders ---- */

int prep_put_parse(struct buf *b, const char *server_name, const uint8_t *rest, size_t rest_len)
{
	struct proto_part parts[] = { { server_name, strlen(server_name) + 1 }, { rest, rest_len } };
	/* A message too long for its length word does not fit any buffer either. */
	return proto_put_parts(b, 'P', 0, parts, 2) < 0 ? -ENOSPC : 0;
}

int prep_put_bind_head(struct buf *b, const struct prep_bind_head *h, const char *server_name)
{
	size_t nlen = strlen(server_name);
	/* The rest of the original Bind follows unchanged: the length word counts it. */
	size_t len = (size_t)h->len - h->stmt_len + nlen;
	struct proto_part parts[] = { { h->portal, h->portal_len + 1 }, { server_name, nlen + 1 } };
	return proto_put_parts(b, 'B', len, parts, 2);
}

static int put_target(struct buf *b, uint8_t type, const char *server_name)
{
	struct proto_part parts[] = { { "S", 1 }, { server_name, strlen(server_name) + 1 } };
	return proto_put_parts(b, type, 0, parts, 2) < 0 ? -ENOSPC : 0;
}

int prep_put_describe_statement(struct buf *b, const char *server_name)
{
	return put_target(b, 'D', server_name);
}

int prep_put_close_statement(struct buf *b, const char *server_name)
{
	return put_target(b, 'C', server_name);
}

int prep_put_parse_complete(struct buf *b)
{
	return proto_put_parts(b, '1', 0, NULL, 0);
}

int prep_put_close_complete(struct buf *b)
{
	return proto_put_parts(b, '3', 0, NULL, 0);
}

/* ---- per pool: reference counts by statement, open addressing on the hash ---- */

struct ref_slot {
	struct prep_hash h;
	uint32_t n; /* 0 = empty slot */
};

struct prep_refs {
	pthread_mutex_t lock; /* protects everything below; held for one lookup or one clear */
	size_t count;
	size_t mask;          /* table size - 1; load kept at or below 1/2 */
	struct ref_slot *tab;
};

struct prep_refs *prep_refs_new(void)
{
	struct prep_refs *r = calloc(1, sizeof *r);
	if (!r)
		return NULL;
	r->tab = calloc(16, sizeof *r->tab);
	if (!r->tab) {
		free(r);
		return NULL;
	}
	r->mask = 15;
	pthread_mutex_init(&r->lock, NULL);
	return r;
}

void prep_refs_free(struct prep_refs *r)
{
	if (!r)
		return;
	pthread_mutex_destroy(&r->lock);
	free(r->tab);
	free(r);
}

static size_t refs_pos(const struct prep_refs *r, struct prep_hash h)
{
	size_t i = (size_t)h.lo & r->mask;
	while (r->tab[i].n && !prep_hash_equal(r->tab[i].h, h))
		i = (i + 1) & r->mask;
	return i;
}

/* Under the lock. */
static int refs_add(struct prep_refs *r, struct prep_hash h)
{
	size_t i = refs_pos(r, h);
	if (r->tab[i].n) {
		r->tab[i].n++; /* at most one per client name: cannot wrap before memory runs out */
		return 0;
	}
	if (2 * (r->count + 1) > r->mask + 1) {
		size_t size = 2 * (r->mask + 1);
		struct ref_slot *tab = calloc(size, sizeof *tab);
		if (!tab)
			return -ENOMEM;
		for (size_t k = 0; k <= r->mask; k++) {
			if (!r->tab[k].n)
				continue;
			size_t j = (size_t)r->tab[k].h.lo & (size - 1);
			while (tab[j].n)
				j = (j + 1) & (size - 1);
			tab[j] = r->tab[k];
		}
		free(r->tab);
		r->tab = tab;
		r->mask = size - 1;
		i = refs_pos(r, h);
	}
	r->tab[i].h = h;
	r->tab[i].n = 1;
	r->count++;
	return 0;
}

/* Under the lock. True when that was the last reference. */
static bool refs_release(struct prep_refs *r, struct prep_hash h)
{
	size_t i = refs_pos(r, h);
	if (!r->tab[i].n)
		return false; /* not counted (cannot happen while every add is paired) */
	if (--r->tab[i].n > 0)
		return false;
	r->count--;
	for (size_t j = (i + 1) & r->mask; r->tab[j].n; j = (j + 1) & r->mask) {
		size_t home = (size_t)r->tab[j].h.lo & r->mask;
		bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
		if (stays)
			continue;
		r->tab[i] = r->tab[j];
		r->tab[j].n = 0;
		i = j;
	}
	return true;
}

uint32_t prep_refs_count(struct prep_refs *r, struct prep_hash h)
{
	pthread_mutex_lock(&r->lock);
	uint32_t n = r->tab[refs_pos(r, h)].n;
	pthread_mutex_unlock(&r->lock);
	return n;
}

/* ---- per client: open addressing on the name, linear probing ---- */

struct prep_client {
	struct prep_refs *refs;  /* NULL: names are not counted */
	uint64_t context;        /* parse context of later Parses (prep_client_set_context) */
	uint32_t max_statements;
	size_t max_bytes;
	uint32_t count;
	size_t bytes;            /* sum of entry_size() over the entries */
	size_t mask;             /* table size - 1; the table is NULL until the first add */
	struct prep_stmt **tab;  /* NULL = empty slot; load kept at or below 1/2 */
	/* Entries of names closed (prep_client_close) whose Close's outcome is not known yet,
	 * oldest first: neither counted nor in the table. */
	struct prep_stmt *closing, *closing_tail;
};

static size_t entry_size(size_t body_len)
{
	return sizeof(struct prep_stmt) + body_len;
}

static uint64_t name_hash(const char *name, size_t len)
{
	return XXH3_64bits(name, len);
}

struct prep_client *prep_client_new(uint32_t max_statements, size_t max_bytes)
{
	struct prep_client *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	c->max_statements = max_statements;
	c->max_bytes = max_bytes;
	return c;
}

void prep_client_share(struct prep_client *c, struct prep_refs *r)
{
	c->refs = r;
}

/* The slot holding name, or the empty slot where it would go. Needs a table. */
static size_t client_slot(const struct prep_client *c, const char *name, uint64_t h)
{
	size_t i = (size_t)h & c->mask;
	while (c->tab[i] && !(c->tab[i]->name_hash == h && strcmp(c->tab[i]->name, name) == 0))
		i = (i + 1) & c->mask;
	return i;
}

static int client_grow(struct prep_client *c)
{
	size_t size = c->tab ? 2 * (c->mask + 1) : 16;
	struct prep_stmt **tab = calloc(size, sizeof *tab);
	if (!tab)
		return -ENOMEM;
	for (size_t i = 0; c->tab && i <= c->mask; i++) {
		struct prep_stmt *e = c->tab[i];
		if (!e)
			continue;
		size_t j = (size_t)e->name_hash & (size - 1);
		while (tab[j])
			j = (j + 1) & (size - 1);
		tab[j] = e;
	}
	free(c->tab);
	c->tab = tab;
	c->mask = size - 1;
	return 0;
}

void prep_client_set_flags(struct prep_client *c, const struct prep_stmt *e, uint8_t flags)
{
	(void)c; /* e is one of c's entries: c owns it, so it may change it */
	((struct prep_stmt *)e)->flags = flags;
}

/* The table has room for one more entry (grown when not): 0 or -ENOMEM. */
static int client_make_room(struct prep_client *c)
{
	return !c->tab || 2 * ((size_t)c->count + 1) > c->mask + 1 ? client_grow(c) : 0;
}

/* The pool's count of names of h takes one more (a map without refs counts nothing). */
static int client_ref(struct prep_client *c, struct prep_hash h)
{
	if (!c->refs)
		return 0;
	pthread_mutex_lock(&c->refs->lock);
	int err = refs_add(c->refs, h);
	pthread_mutex_unlock(&c->refs->lock);
	return err;
}

/* e (its name not in the table, room made) goes in, counted. */
static void client_put(struct prep_client *c, struct prep_stmt *e)
{
	c->tab[client_slot(c, e->name, e->name_hash)] = e;
	c->count++;
	c->bytes += entry_size(e->body_len);
}

int prep_client_add(struct prep_client *c, const struct prep_parse *p, const struct prep_stmt **out)
{
	if (p->name_len == 0 || p->name_len > PREP_NAME_MAX)
		return -EINVAL;
	uint64_t h = name_hash(p->name, p->name_len);
	if (c->tab && c->tab[client_slot(c, p->name, h)])
		return -EEXIST;
	size_t esize = entry_size(p->rest_len);
	if (c->count >= c->max_statements || esize > c->max_bytes - c->bytes)
		return -EDQUOT;
	int err = client_make_room(c);
	if (err)
		return err;

	struct prep_stmt *e = malloc(esize);
	if (!e)
		return -ENOMEM;
	if (prep_identity_ctx(p->rest, p->rest_len, c->context, &e->hash) != 0) {
		free(e);
		return -ENOMEM;
	}
	err = client_ref(c, e->hash);
	if (err) {
		free(e);
		return err;
	}
	prep_server_name(e->hash, e->server_name);
	memcpy(e->name, p->name, p->name_len);
	e->name[p->name_len] = '\0';
	e->name_hash = h;
	e->told = (struct prep_desc){ 0, 0 };
	e->placed = false;
	e->flags = 0;
	e->body_len = p->rest_len;
	memcpy(e->body, p->rest, p->rest_len);

	client_put(c, e);
	*out = e;
	return 0;
}

const struct prep_stmt *prep_client_find(const struct prep_client *c, const char *name)
{
	if (!c)
		return NULL;
	size_t len = strnlen(name, PREP_NAME_MAX + 1);
	if (!c->tab || len == 0 || len > PREP_NAME_MAX)
		return NULL;
	return c->tab[client_slot(c, name, name_hash(name, len))];
}

void prep_client_tell(struct prep_client *c, uint64_t name_hash, struct prep_hash h, struct prep_desc d)
{
	if (!c || !c->tab)
		return;
	/* By the name's hash and the statement's: a collision of both is not a concern. */
	for (size_t i = (size_t)name_hash & c->mask; c->tab[i]; i = (i + 1) & c->mask) {
		struct prep_stmt *e = c->tab[i];
		if (e->name_hash != name_hash || !prep_hash_equal(e->hash, h))
			continue;
		if (d.params)
			e->told.params = d.params;
		if (d.rows)
			e->told.rows = d.rows;
		return;
	}
}

/* The entry whose name hashes to name_hash and whose statement is h: in the table, else
 * (*closing set) among the names closed whose Close's outcome is to come; NULL if neither. */
static struct prep_stmt *find_entry(const struct prep_client *c, uint64_t name_hash, struct prep_hash h,
				    bool *closing)
{
	*closing = false;
	if (!c || !c->tab)
		return NULL;
	for (size_t i = (size_t)name_hash & c->mask; c->tab[i]; i = (i + 1) & c->mask)
		if (c->tab[i]->name_hash == name_hash && prep_hash_equal(c->tab[i]->hash, h))
			return c->tab[i];
	*closing = true;
	for (struct prep_stmt *e = c->closing; e; e = e->closing_next)
		if (e->name_hash == name_hash && prep_hash_equal(e->hash, h))
			return e;
	return NULL;
}

const char *prep_client_name_of(const struct prep_client *c, uint64_t name_hash, struct prep_hash h)
{
	bool closing;
	const struct prep_stmt *e = find_entry(c, name_hash, h, &closing);
	return e ? e->name : NULL;
}

void prep_stmt_set_placed(const struct prep_stmt *e)
{
	((struct prep_stmt *)e)->placed = true; /* the map owns its entries, never const */
}

int prep_client_remove(struct prep_client *c, const char *name)
{
	struct prep_hash gone;
	int rc = prep_client_drop(c, name, &gone);
	return rc < 0 ? rc : 0;
}

/* Takes the entry of name out of the map (uncounted, its pool reference released): NULL when
 * there is none. *last: it was the pool's last name of its statement. */
static struct prep_stmt *detach(struct prep_client *c, const char *name, bool *last)
{
	if (!c)
		return NULL;
	size_t len = strnlen(name, PREP_NAME_MAX + 1);
	if (!c->tab || len == 0 || len > PREP_NAME_MAX)
		return NULL;
	size_t i = client_slot(c, name, name_hash(name, len));
	struct prep_stmt *e = c->tab[i];
	if (!e)
		return NULL;
	*last = false;
	if (c->refs) {
		pthread_mutex_lock(&c->refs->lock);
		*last = refs_release(c->refs, e->hash);
		pthread_mutex_unlock(&c->refs->lock);
	}
	c->count--;
	c->bytes -= entry_size(e->body_len);
	c->tab[i] = NULL;

	/* Backward-shift deletion: pull later entries of the probe run into the hole unless their
	 * home slot lies cyclically in (hole, j], where moving them would put them before home. */
	for (size_t j = (i + 1) & c->mask; c->tab[j]; j = (j + 1) & c->mask) {
		size_t home = (size_t)c->tab[j]->name_hash & c->mask;
		bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
		if (stays)
			continue;
		c->tab[i] = c->tab[j];
		c->tab[j] = NULL;
		i = j;
	}
	return e;
}

int prep_client_drop(struct prep_client *c, const char *name, struct prep_hash *gone)
{
	bool last;
	struct prep_stmt *e = detach(c, name, &last);
	if (!e)
		return -ENOENT;
	*gone = e->hash;
	free(e);
	return last ? 1 : 0;
}

int prep_client_close(struct prep_client *c, const char *name, struct prep_hash *gone)
{
	bool last;
	struct prep_stmt *e = detach(c, name, &last);
	if (!e)
		return -ENOENT;
	*gone = e->hash;
	e->closing_next = NULL;
	e->never_made = false;
	if (c->closing_tail)
		c->closing_tail->closing_next = e;
	else
		c->closing = e;
	c->closing_tail = e;
	return last ? 1 : 0;
}

static struct prep_stmt *closing_pop(struct prep_client *c)
{
	struct prep_stmt *e = c ? c->closing : NULL;
	if (e) {
		c->closing = e->closing_next;
		if (!c->closing)
			c->closing_tail = NULL;
	}
	return e;
}

void prep_client_forget_parse(struct prep_client *c, uint64_t name_hash, struct prep_hash h)
{
	bool closing, last;
	struct prep_stmt *e = find_entry(c, name_hash, h, &closing);
	if (e && closing)
		e->never_made = true;
	else if (e)
		free(detach(c, e->name, &last)); /* detach leaves e whole: freed here */
}

void prep_client_close_done(struct prep_client *c)
{
	free(closing_pop(c));
}

void prep_client_close_skipped(struct prep_client *c)
{
	struct prep_stmt *e = closing_pop(c);
	if (!e)
		return;
	/* Back in the map as it was (its description told, its placement), counted again. */
	if (e->never_made || c->tab[client_slot(c, e->name, e->name_hash)] || client_make_room(c) != 0 ||
	    client_ref(c, e->hash) != 0) {
		free(e);
		return;
	}
	client_put(c, e);
}

void prep_client_clear(struct prep_client *c)
{
	if (!c)
		return;
	/* One lock for all names: a client leaving with thousands of them locks once. */
	if (c->refs && c->count)
		pthread_mutex_lock(&c->refs->lock);
	for (size_t i = 0; c->tab && i <= c->mask; i++) {
		if (c->tab[i] && c->refs)
			(void)refs_release(c->refs, c->tab[i]->hash);
		free(c->tab[i]);
		c->tab[i] = NULL;
	}
	if (c->refs && c->count)
		pthread_mutex_unlock(&c->refs->lock);
	c->count = 0;
	c->bytes = 0;
}

uint32_t prep_client_count(const struct prep_client *c)
{
	return c ? c->count : 0;
}

void prep_client_free(struct prep_client *c)
{
	if (!c)
		return;
	prep_client_clear(c);
	while (c->closing)
		prep_client_close_done(c);
	free(c->tab);
	free(c);
}

/* ---- per server: fixed slots, an index by hash, an LRU list through the slots ---- */

#define NIL UINT32_MAX

struct server_slot {
	struct prep_hash h;
	struct prep_desc desc; /* what the server's copy describes, as far as known */
	bool stale;          /* on the server, but must be closed before it is prepared again */
	uint32_t prev, next; /* LRU neighbours (towards head = most recent), or the free list */
};

struct prep_server {
	uint32_t max;
	uint32_t count;
	uint32_t used;       /* slots ever handed out since the last forget_all */
	uint32_t free_list;  /* slots given back by forget, through next */
	uint32_t head, tail; /* most and least recently used */
	size_t mask;         /* index size - 1 */
	uint32_t *index;     /* slot + 1, 0 = empty; load at most 1/2 */
	struct server_slot *slots;
};

struct prep_server *prep_server_new(uint32_t max_prepared)
{
	if (max_prepared == 0)
		return NULL;
	struct prep_server *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	size_t size = 4;
	while (size < 2 * (size_t)max_prepared)
		size *= 2;
	s->index = calloc(size, sizeof *s->index);
	s->slots = calloc(max_prepared, sizeof *s->slots);
	if (!s->index || !s->slots) {
		prep_server_free(s);
		return NULL;
	}
	s->max = max_prepared;
	s->mask = size - 1;
	prep_server_forget_all(s);
	return s;
}

void prep_server_free(struct prep_server *s)
{
	if (!s)
		return;
	free(s->index);
	free(s->slots);
	free(s);
}

/* Index position of h, or of the empty position where it would go. */
static size_t server_pos(const struct prep_server *s, struct prep_hash h)
{
	size_t i = (size_t)h.lo & s->mask;
	while (s->index[i] && !prep_hash_equal(s->slots[s->index[i] - 1].h, h))
		i = (i + 1) & s->mask;
	return i;
}

static void lru_unlink(struct prep_server *s, uint32_t k)
{
	struct server_slot *e = &s->slots[k];
	if (e->prev != NIL)
		s->slots[e->prev].next = e->next;
	else
		s->head = e->next;
	if (e->next != NIL)
		s->slots[e->next].prev = e->prev;
	else
		s->tail = e->prev;
}

static void lru_push_head(struct prep_server *s, uint32_t k)
{
	struct server_slot *e = &s->slots[k];
	e->prev = NIL;
	e->next = s->head;
	if (s->head != NIL)
		s->slots[s->head].prev = k;
	else
		s->tail = k;
	s->head = k;
}

/* Empties index position i, then backward-shift deletion as in the client map. */
static void index_delete(struct prep_server *s, size_t i)
{
	s->index[i] = 0;
	for (size_t j = (i + 1) & s->mask; s->index[j]; j = (j + 1) & s->mask) {
		size_t home = (size_t)s->slots[s->index[j] - 1].h.lo & s->mask;
		bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
		if (stays)
			continue;
		s->index[i] = s->index[j];
		s->index[j] = 0;
		i = j;
	}
}

/* Marks slot k most recently used. */
static void lru_touch(struct prep_server *s, uint32_t k)
{
	lru_unlink(s, k);
	lru_push_head(s, k);
}

bool prep_server_has(struct prep_server *s, struct prep_hash h)
{
	size_t i = server_pos(s, h);
	if (!s->index[i] || s->slots[s->index[i] - 1].stale)
		return false;
	lru_touch(s, s->index[i] - 1);
	return true;
}

bool prep_server_holds(const struct prep_server *s, struct prep_hash h)
{
	return s->index[server_pos(s, h)] != 0;
}

bool prep_server_stale(const struct prep_server *s, struct prep_hash h)
{
	size_t i = server_pos(s, h);
	return s->index[i] && s->slots[s->index[i] - 1].stale;
}

void prep_server_mark_stale(struct prep_server *s, struct prep_hash h)
{
	size_t i = server_pos(s, h);
	if (s->index[i])
		s->slots[s->index[i] - 1].stale = true;
}

bool prep_server_add(struct prep_server *s, struct prep_hash h, struct prep_hash *evicted)
{
	size_t i = server_pos(s, h);
	if (s->index[i]) {
		uint32_t held = s->index[i] - 1;
		s->slots[held].stale = false;
		s->slots[held].desc = (struct prep_desc){ 0, 0 };
		lru_touch(s, held);
		return false;
	}

	bool did_evict = false;
	uint32_t k;
	if (s->count == s->max) {
		k = s->tail;
		*evicted = s->slots[k].h;
		did_evict = true;
		lru_unlink(s, k);
		index_delete(s, server_pos(s, s->slots[k].h));
		s->count--;
	} else if (s->free_list != NIL) {
		k = s->free_list;
		s->free_list = s->slots[k].next;
	} else {
		k = s->used++;
	}

	s->slots[k].h = h;
	s->slots[k].stale = false;
	s->slots[k].desc = (struct prep_desc){ 0, 0 };
	s->index[server_pos(s, h)] = k + 1;
	lru_push_head(s, k);
	s->count++;
	return did_evict;
}

struct prep_desc prep_server_desc(const struct prep_server *s, struct prep_hash h)
{
	size_t i = server_pos(s, h);
	return s->index[i] ? s->slots[s->index[i] - 1].desc : (struct prep_desc){ 0, 0 };
}

void prep_server_set_desc(struct prep_server *s, struct prep_hash h, struct prep_desc d)
{
	size_t i = server_pos(s, h);
	if (!s->index[i])
		return;
	struct prep_desc *to = &s->slots[s->index[i] - 1].desc;
	if (d.params)
		to->params = d.params;
	if (d.rows)
		to->rows = d.rows;
}

void prep_server_forget(struct prep_server *s, struct prep_hash h)
{
	size_t i = server_pos(s, h);
	if (!s->index[i])
		return;
	uint32_t k = s->index[i] - 1;
	lru_unlink(s, k);
	index_delete(s, i);
	s->slots[k].next = s->free_list;
	s->free_list = k;
	s->count--;
}

void prep_server_forget_all(struct prep_server *s)
{
	memset(s->index, 0, (s->mask + 1) * sizeof *s->index);
	s->count = 0;
	s->used = 0;
	s->free_list = NIL;
	s->head = s->tail = NIL;
}

uint32_t prep_server_count(const struct prep_server *s)
{
	return s->count;
}

void prep_client_set_context(struct prep_client *c, uint64_t ctx)
{
	if (c)
		c->context = ctx;
}

/* ---- DEALLOCATE interception (relay.c's Query scan) ---- */

/* prepared.h */
bool prep_lone_deallocate(const char *sql, size_t len, struct classify_result *r)
{
	size_t i = 0;
	while (i < len && (sql[i] == ' ' || sql[i] == '\t' || sql[i] == '\n' || sql[i] == '\r'))
		i++;
	if (!prep_may_deallocate(sql, len) || strncasecmp(sql + i, "deallocate", 10) != 0)
		return false;
	return classify_sql(sql, len, r) == 0 && !r->parse_error && r->nstmts == 1 && r->nsession == 1 &&
	       !(r->stmts[0].flags & CLASSIFY_F_NAME_TRUNCATED);
}

/* prepared.h */
const char *prep_local_deallocate(struct prep_client *pc, struct prep_server *ps, const char *sql, size_t len)
{
	struct classify_result r;
	struct prep_hash gone;

	if (!prep_lone_deallocate(sql, len, &r))
		return NULL;
	if (r.stmts[0].kind == CLASSIFY_DEALLOCATE_ALL) {
		prep_client_clear(pc);
		return "DEALLOCATE ALL";
	}
	if (r.stmts[0].kind != CLASSIFY_DEALLOCATE)
		return NULL;
	int rc = prep_client_drop(pc, r.stmts[0].name, &gone);
	if (rc < 0)
		return NULL;
	/* No client of the pool names it any more: the server's copy is closed before it is
	 * prepared there again (the reply to this query cannot carry a Close). */
	if (rc == 1 && ps)
		prep_server_mark_stale(ps, gone);
	return "DEALLOCATE";
}
