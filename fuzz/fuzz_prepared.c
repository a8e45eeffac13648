/* libFuzzer target for pool/prepared: the input is a stream of client messages. Parse, Bind,
 * Describe and Close go through their readers and rewriters; Parse also feeds a client name
 * map (its names counted in a prep_refs) and a small server LRU with stale marks, checked
 * against a reference model. Besides crashes it checks the
 * readers' promises: results in range, pointers inside the message, a decision on a prefix
 * never changing as more bytes arrive, and rewritten messages reading back as the original
 * with only the statement name replaced. Every reader sees an exact-size heap copy of its
 * bytes, so ASan flags a read even one byte past the range it was given. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pool/prepared.h"
#include "proto/proto.h"
#include "util/buf.h"

#define FUZZ_MAX_MSG (1u << 16)
#define FUZZ_LRU_CAP 4
/* Rewritten messages may grow by a server name over a client name. */
#define FUZZ_MAX_REWRITTEN (FUZZ_MAX_MSG + PREP_SERVER_NAME_SIZE)

static void check(int ok)
{
	if (!ok)
		abort();
}

static uint8_t *dup_exact(const uint8_t *p, size_t n)
{
	uint8_t *q = malloc(n ? n : 1);
	check(q != NULL);
	if (n)
		memcpy(q, p, n);
	return q;
}

/* A NUL-terminated string starting inside [base, base + len) whose NUL is inside too. */
static int inside(const void *p, size_t slen, const uint8_t *base, size_t len)
{
	const uint8_t *q = p;
	return q >= base && q + slen < base + len && q[slen] == 0 && memchr(q, 0, slen) == NULL;
}

static struct buf *scratch(void)
{
	static struct buf b;
	static int ready;
	if (!ready) {
		check(buf_init(&b, 2 * FUZZ_MAX_MSG) == 0);
		ready = 1;
	}
	buf_reset(&b);
	return &b;
}

static uint32_t load_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* ---- reference LRU: keys in order, least recent first ---- */

struct model {
	struct prep_hash k[FUZZ_LRU_CAP];
	bool stale[FUZZ_LRU_CAP];
	int n;
};

static int model_find(const struct model *m, struct prep_hash h)
{
	for (int i = 0; i < m->n; i++)
		if (prep_hash_equal(m->k[i], h))
			return i;
	return -1;
}

static void model_touch(struct model *m, int at)
{
	struct prep_hash h = m->k[at];
	bool stale = m->stale[at];
	memmove(m->k + at, m->k + at + 1, (size_t)(m->n - at - 1) * sizeof m->k[0]);
	memmove(m->stale + at, m->stale + at + 1, (size_t)(m->n - at - 1) * sizeof m->stale[0]);
	m->k[m->n - 1] = h;
	m->stale[m->n - 1] = stale;
}

static void lru_add(struct prep_server *s, struct model *m, struct prep_hash h)
{
	struct prep_hash ev;
	bool evicted = prep_server_add(s, h, &ev);
	int at = model_find(m, h);
	if (at >= 0) {
		check(!evicted);
		m->stale[at] = false; /* prepared again after its Close */
		model_touch(m, at);
	} else if (m->n == FUZZ_LRU_CAP) {
		check(evicted && prep_hash_equal(ev, m->k[0]));
		m->k[0] = h;
		m->stale[0] = false;
		model_touch(m, 0);
	} else {
		check(!evicted);
		m->stale[m->n] = false;
		m->k[m->n++] = h;
	}
	check(prep_server_count(s) == (uint32_t)m->n);
}

static void lru_has(struct prep_server *s, struct model *m, struct prep_hash h)
{
	int at = model_find(m, h);
	check(prep_server_has(s, h) == (at >= 0 && !m->stale[at]));
	check(prep_server_holds(s, h) == (at >= 0));
	check(prep_server_stale(s, h) == (at >= 0 && m->stale[at]));
	if (at >= 0 && !m->stale[at])
		model_touch(m, at);
}

/* ---- per message type ---- */

struct state {
	struct prep_refs *refs;
	struct prep_client *client;
	struct prep_server *server;
	struct model model;
};

static const char server_name[] = "tusk_0123456789abcdef0123456789abcdef";

static void fuzz_parse(struct state *st, const uint8_t *msg, size_t len)
{
	struct prep_parse p;
	ssize_t n = prep_read_parse(msg, len, FUZZ_MAX_MSG, &p);
	/* Any shorter prefix either needs more or fails the same way. */
	size_t probes[] = { 0, 1, 4, 5, 6, len / 2, len - 1 };
	for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
		if (probes[i] >= len)
			continue;
		uint8_t *pre = dup_exact(msg, probes[i]);
		struct prep_parse q;
		ssize_t m = prep_read_parse(pre, probes[i], FUZZ_MAX_MSG, &q);
		check(m == 0 || (m < 0 && m == n));
		free(pre);
	}
	if (n <= 0)
		return;
	check((size_t)n == len);
	check(p.name_len <= PREP_NAME_MAX && inside(p.name, p.name_len, msg, len));
	check(inside(p.query, strlen(p.query), msg, len));
	check(p.rest == (const uint8_t *)p.name + p.name_len + 1 && p.rest + p.rest_len == msg + len);
	check(p.rest_len == strlen(p.query) + 1 + 2 + 4 * (size_t)p.nparams);

	/* Rewritten, it reads back with the server name and the same rest. */
	struct buf *b = scratch();
	check(prep_put_parse(b, server_name, p.rest, p.rest_len) == 0);
	struct prep_parse q;
	check(prep_read_parse(buf_head(b), buf_len(b), FUZZ_MAX_REWRITTEN, &q) == (ssize_t)buf_len(b));
	check(strcmp(q.name, server_name) == 0 && q.nparams == p.nparams);
	check(q.rest_len == p.rest_len && memcmp(q.rest, p.rest, p.rest_len) == 0);

	const struct prep_stmt *e = NULL;
	int rc = prep_client_add(st->client, &p, &e);
	if (p.name_len == 0) {
		check(rc == -EINVAL);
		return;
	}
	const struct prep_stmt *found = prep_client_find(st->client, p.name);
	if (rc == 0) {
		check(found == e && strcmp(e->name, p.name) == 0);
		check(e->body_len == p.rest_len && memcmp(e->body, p.rest, p.rest_len) == 0);
		struct prep_hash h;
		check(prep_identity(p.rest, p.rest_len, &h) == 0 && prep_hash_equal(h, e->hash));
		char sn[PREP_SERVER_NAME_SIZE];
		prep_server_name(h, sn);
		check(strcmp(sn, e->server_name) == 0);
		lru_add(st->server, &st->model, e->hash);
	} else if (rc == -EEXIST) {
		check(found != NULL);
		lru_has(st->server, &st->model, found->hash);
	} else {
		check(rc == -EDQUOT && found == NULL);
		/* A full map: make room as a Close would. */
		prep_client_clear(st->client);
		check(prep_client_count(st->client) == 0);
	}
}

static void fuzz_bind(struct state *st, const uint8_t *msg, size_t len)
{
	struct prep_bind_head h;
	ssize_t n = prep_read_bind_head(msg, len, FUZZ_MAX_MSG, &h);
	/* Every prefix: need more until decided, then the same decision. */
	size_t upto = len < 5 + 2 * (PREP_NAME_MAX + 1) + 1 ? len : 5 + 2 * (PREP_NAME_MAX + 1) + 1;
	ssize_t decided = 0;
	for (size_t i = 0; i <= upto; i++) {
		uint8_t *pre = dup_exact(msg, i);
		struct prep_bind_head g;
		ssize_t m = prep_read_bind_head(pre, i, FUZZ_MAX_MSG, &g);
		free(pre);
		check(decided == 0 || m == decided);
		decided = m;
	}
	check(decided == n);
	if (n <= 0)
		return;
	check((size_t)n <= len && n == (ssize_t)(PROTO_HDR_LEN + h.portal_len + 1 + h.stmt_len + 1));
	check(h.len == load_be32(msg + 1) && (size_t)h.len + 1 == len);
	check(h.portal_len <= PREP_NAME_MAX && inside(h.portal, h.portal_len, msg, (size_t)n));
	check(h.stmt_len <= PREP_NAME_MAX && inside(h.stmt, h.stmt_len, msg, (size_t)n));

	/* Head rewritten, the rest forwarded: a Bind of the same portal, the server name, and the
	 * same bytes after it. */
	struct buf *b = scratch();
	check(prep_put_bind_head(b, &h, server_name) == 0);
	check(buf_append(b, msg + n, len - (size_t)n) == 0);
	size_t out_len = buf_len(b);
	const uint8_t *out = buf_head(b);
	check(out_len == len - h.stmt_len + strlen(server_name));
	check(out[0] == 'B' && load_be32(out + 1) == out_len - 1);
	uint8_t *copy = dup_exact(out, out_len);
	struct prep_bind_head g;
	ssize_t m = prep_read_bind_head(copy, out_len, FUZZ_MAX_REWRITTEN, &g);
	check(m == n - (ssize_t)h.stmt_len + (ssize_t)strlen(server_name));
	check(strcmp(g.portal, h.portal) == 0 && strcmp(g.stmt, server_name) == 0);
	check(memcmp(copy + m, msg + n, len - (size_t)n) == 0);
	free(copy);

	const struct prep_stmt *e = prep_client_find(st->client, h.stmt);
	if (e)
		lru_has(st->server, &st->model, e->hash);
}

static void fuzz_target(struct state *st, const uint8_t *msg, size_t len)
{
	struct prep_target t;
	ssize_t n = prep_read_target(msg, len, &t);
	ssize_t decided = 0;
	for (size_t i = 0; i <= len && i <= 80; i++) {
		uint8_t *pre = dup_exact(msg, i);
		struct prep_target u;
		ssize_t m = prep_read_target(pre, i, &u);
		free(pre);
		check(decided == 0 || m == decided);
		decided = m;
	}
	check(decided == n); /* past 80 bytes the length word alone decided */
	if (n <= 0)
		return;
	check((size_t)n == len && t.type == msg[0] && (t.kind == 'S' || t.kind == 'P'));
	check(t.name_len <= PREP_NAME_MAX && inside(t.name, t.name_len, msg, len));
	check(len == PROTO_HDR_LEN + 1 + t.name_len + 1);
	if (t.kind != 'S')
		return;

	struct buf *b = scratch();
	int rc = t.type == 'D' ? prep_put_describe_statement(b, server_name) : prep_put_close_statement(b, server_name);
	check(rc == 0);
	struct prep_target u;
	check(prep_read_target(buf_head(b), buf_len(b), &u) == (ssize_t)buf_len(b));
	check(u.type == t.type && u.kind == 'S' && strcmp(u.name, server_name) == 0);

	if (t.type == 'C') {
		const struct prep_stmt *e = prep_client_find(st->client, t.name);
		struct prep_hash h = e ? e->hash : (struct prep_hash){ 0, 0 }, gone;
		uint32_t names = e ? prep_refs_count(st->refs, h) : 0;
		int removed = prep_client_drop(st->client, t.name, &gone);
		check(e ? removed == (names == 1) : removed == -ENOENT);
		check(prep_client_find(st->client, t.name) == NULL);
		if (e)
			check(prep_hash_equal(gone, h) && prep_refs_count(st->refs, h) == names - 1);
		check(prep_put_close_complete(scratch()) == 0);
	} else {
		/* Describe of a statement the client holds: its Parse failed on the server (odd
		 * name length: forgotten) or the schema changed under it (even: stale, still there). */
		const struct prep_stmt *e = prep_client_find(st->client, t.name);
		if (e) {
			int at = model_find(&st->model, e->hash);
			if (t.name_len % 2) {
				prep_server_forget(st->server, e->hash);
				if (at >= 0) {
					model_touch(&st->model, at);
					st->model.n--;
				}
			} else {
				prep_server_mark_stale(st->server, e->hash);
				if (at >= 0)
					st->model.stale[at] = true;
			}
			lru_has(st->server, &st->model, e->hash);
			check(prep_server_count(st->server) == (uint32_t)st->model.n);
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct state st = { 0 };
	st.refs = prep_refs_new();
	st.client = prep_client_new(8, 4096);
	st.server = prep_server_new(FUZZ_LRU_CAP);
	check(st.refs && st.client && st.server);
	prep_client_share(st.client, st.refs);

	size_t off = 0;
	while (off < size) {
		struct proto_hdr h;
		size_t avail = size - off;
		if (proto_read_hdr(data + off, avail, FUZZ_MAX_MSG, &h) <= 0) {
			/* A message that never completes: the readers must not run past it either. */
			uint8_t *rest = dup_exact(data + off, avail);
			struct prep_parse p;
			struct prep_bind_head bh;
			struct prep_target t;
			check(prep_read_parse(rest, avail, FUZZ_MAX_MSG, &p) <= 0);
			check(prep_read_bind_head(rest, avail, FUZZ_MAX_MSG, &bh) <= 0);
			check(prep_read_target(rest, avail, &t) <= 0);
			free(rest);
			break;
		}
		size_t len = (size_t)h.len + 1;
		if (len > avail) {
			/* Incomplete: a Bind head can still be complete; a Parse must need more. */
			uint8_t *rest = dup_exact(data + off, avail);
			struct prep_bind_head bh;
			struct prep_parse p;
			if (h.type == 'B')
				check(prep_read_bind_head(rest, avail, FUZZ_MAX_MSG, &bh) <= (ssize_t)avail);
			if (h.type == 'P')
				check(prep_read_parse(rest, avail, FUZZ_MAX_MSG, &p) == 0);
			free(rest);
			break;
		}
		uint8_t *msg = dup_exact(data + off, len);
		switch (h.type) {
		case 'P': fuzz_parse(&st, msg, len); break;
		case 'B': fuzz_bind(&st, msg, len); break;
		case 'D':
		case 'C': fuzz_target(&st, msg, len); break;
		case 'X': prep_client_clear(st.client); prep_server_forget_all(st.server); st.model.n = 0; break;
		default: break;
		}
		free(msg);
		off += len;
	}

	prep_client_free(st.client);
	prep_server_free(st.server);
	prep_refs_free(st.refs); /* after the map: freeing it released every name */
	return 0;
}
