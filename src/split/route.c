/* read-write-split in the client's path (route.h): its relay hooks. */
#include "split/route.h"

#include <string.h>

#include "frontend/client_int.h"
#include "pool/pool.h"
#include "pool/prepared.h"
#include "pool/server.h"
#include "pool/services.h"
#include "proto/proto.h"
#include "split/split.h"
#include "runtime/runtime.h"
#include "util/log.h"
#include "worker/worker.h"

/* server_fetch_row binds one text parameter: these take an unused one (""). */
static const char write_lsn_sql[] =
	/* The insert position, not pg_current_wal_lsn(): with asynchronous commit (or before
	 * the WAL writer ran) the write position can still be behind this transaction's
	 * commit record, and a standby would look caught up before it has the commit. The
	 * insert position is at or past the end of every record inserted so far. */
	"SELECT pg_current_wal_insert_lsn()::text WHERE $1::text IS NOT NULL";
static const char replay_lsn_sql[] = "SELECT pg_last_wal_replay_lsn()::text WHERE $1::text IS NOT NULL";
/* Whether a standby serves the pool's sessions: any statement that takes a snapshot fails
 * there when the sessions start serializable (the role's, the database's or the standby's
 * default_transaction_isolation). */
static const char standby_use_sql[] = "SELECT current_setting('default_transaction_isolation') WHERE $1::text IS NOT NULL";

static bool ryw_on(const struct client *c)
{
	return c->pool && pool_is_split(c->pool) && pool_rule(c->pool)->read_your_writes;
}

/* The text of a named statement c prepared in an earlier request (tusk's statement map: a
 * driver that prepares after a few runs), or false. */
static bool prepared_text(const struct client *c, const char *name, const char **sql, size_t *len)
{
	const struct prep_stmt *st = c->prep ? prep_client_find(c->prep, name) : NULL;
	if (!st)
		return false;
	*sql = (const char *)st->body;
	*len = strnlen(*sql, st->body_len);
	return *len < st->body_len;
}

/* Whether a Parse among the first n bytes of a batch (whole messages from p) names stmt. */
static bool parsed_in_batch(const uint8_t *p, size_t n, const char *stmt)
{
	struct proto_hdr h;
	while (n >= PROTO_HDR_LEN && proto_read_hdr(p, n, UINT32_MAX, &h) == PROTO_HDR_LEN && (size_t)h.len + 1 <= n) {
		if (p[0] == 'P' && h.len > 4 && memchr(p + PROTO_HDR_LEN, '\0', h.len - 4) &&
		    strcmp((const char *)p + PROTO_HDR_LEN, stmt) == 0)
			return true;
		p += (size_t)h.len + 1;
		n -= (size_t)h.len + 1;
	}
	return false;
}

/* Whether the request at the head of c->rbuf provably only reads, so that a standby may run
 * its whole implicit transaction: a Query whose text router_split_decide sends to a standby,
 * or an extended-protocol batch seen whole up to its Sync in which every Parse's text and the
 * text of every named statement a Bind runs does. Anything else goes to the primary: a batch
 * whose Sync is not here yet (asyncpg's prepare ends with Flush, and the COPY or write that
 * follows runs in the same implicit transaction, on the same server), a Bind of the unnamed
 * statement Parsed in an earlier request, a Query inside a batch, a function call, COPY data,
 * a message streamed in pieces. */
static bool batch_read_only(const struct client *c)
{
	const uint8_t *start = buf_head(&c->rbuf), *m = start;
	size_t avail = buf_len(&c->rbuf);
	const char *last_name = NULL, *sql;
	size_t len;
	bool unnamed_parsed = false;

	for (int n = 0; n < 256 && avail >= PROTO_HDR_LEN; n++) {
		struct proto_hdr h;
		if (proto_read_hdr(m, avail, UINT32_MAX, &h) != PROTO_HDR_LEN || (size_t)h.len + 1 > avail)
			return false; /* not all here */
		const char *body = (const char *)m + PROTO_HDR_LEN;
		size_t blen = h.len - 4, total = (size_t)h.len + 1;
		switch (m[0]) {
		case 'Q':
			return n == 0 && relay_sql_of('Q', body, blen, &sql, &len) &&
			       router_split_decide(sql, len) == ROUTER_SPLIT_STANDBY;
		case 'P':
			if (!relay_sql_of('P', body, blen, &sql, &len) || router_split_decide(sql, len) != ROUTER_SPLIT_STANDBY)
				return false;
			unnamed_parsed |= body[0] == '\0';
			break;
		case 'B': {
			const char *portal_end = memchr(body, '\0', blen);
			if (!portal_end)
				return false;
			const char *name = portal_end + 1;
			if (!memchr(name, '\0', blen - (size_t)(name - body)))
				return false;
			if (name[0] == '\0') {
				if (!unnamed_parsed)
					return false; /* its Parse was in an earlier transaction */
				break;
			}
			if (last_name && strcmp(last_name, name) == 0)
				break; /* a batch running one statement many times: judged once */
			/* Parsed in this batch (judged above, and it replaces any earlier one of that
			 * name), or in an earlier request. */
			if (!parsed_in_batch(start, (size_t)(m - start), name) &&
			    (!prepared_text(c, name, &sql, &len) || router_split_decide(sql, len) != ROUTER_SPLIT_STANDBY))
				return false;
			last_name = name;
			break;
		}
		case 'D':
		case 'E':
		case 'C':
		case 'H':
			break;
		case 'S':
			return n > 0;
		default:
			return false;
		}
		m += total;
		avail -= total;
	}
	return false;
}

static void split_route_claim(struct client *c)
{
	c->standby = false;
	if (!c->pool || !pool_is_split(c->pool))
		return;
	if (!c->greeted) {
		/* A login needs no primary: while every backend that may be one is down (a failover
		 * may be under way), a standby logs the client in, and its reads go on. */
		c->standby = services_primary_down(c->worker->rt->services, pool_rule(c->pool)->service);
		return;
	}
	if (!batch_read_only(c))
		return;
	/* Its transactions are serializable (SET SESSION CHARACTERISTICS AS TRANSACTION
	 * ISOLATION LEVEL SERIALIZABLE, pgjdbc's setTransactionIsolation): a standby refuses
	 * them ("cannot use serializable mode in a hot standby"). */
	const char *iso = session_carried(&c->session, "default_transaction_isolation");
	if (iso && strcasestr(iso, "serializable"))
		return;
	/* Its sessions start serializable (ALTER ROLE/DATABASE ... SET default_transaction_isolation):
	 * a standby refuses them all, and tusk's own session sync (set_config) cannot even run
	 * there to change it. */
	if (pool_standby_use(c->pool, ev_now(c->worker->loop)) == POOL_STANDBY_REFUSES)
		return;
	/* Its last write's position is still being fetched: only the primary surely has it. */
	if (c->ryw_pending && ryw_on(c))
		return;
	/* Every backend is known to be a primary: no standby to ask. */
	if (!services_may_have_standby(c->worker->rt->services, pool_rule(c->pool)->service))
		return;
	c->standby = true;
}

static const struct tp_backend_addr *backend_of(const struct server *s)
{
	return s->slot ? tp_slot_backend(s->slot) : NULL;
}

static bool split_needs_replay_check(const struct client *c, const struct server *s)
{
	if (!c->standby || c->ryw_lsn == 0 || !ryw_on(c) || !backend_of(s))
		return false;
	uint64_t seen = services_replay_of(c->worker->rt->services, pool_rule(c->pool)->service, backend_of(s));
	return seen < c->ryw_lsn;
}

static double op_timeout(const struct server *s)
{
	return (double)s->worker->rt->cfg->server_reset_timeout_ms / 1000.0;
}

static void split_replay_fetch(struct server *s, void (*done)(struct server *, void *, int, const char *, const uint8_t *,
						       size_t), void *arg)
{
	server_fetch_row(s, replay_lsn_sql, "", op_timeout(s), done, arg);
}

static void split_write_fetch(struct server *s, void (*done)(struct server *, void *, int, const char *, const uint8_t *,
						      size_t), void *arg)
{
	server_fetch_row(s, write_lsn_sql, "", op_timeout(s), done, arg);
}

uint64_t split_parse_lsn(const char *text, size_t len)
{
	uint64_t hi = 0, lo = 0;
	size_t i = 0, digits = 0;
	for (; i < len && text[i] != '/'; i++, digits++) {
		char ch = text[i];
		int v = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
			: ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
		if (v < 0 || digits >= 8)
			return 0;
		hi = hi << 4 | (uint64_t)v;
	}
	if (i >= len || digits == 0)
		return 0;
	i++;
	digits = 0;
	for (; i < len; i++, digits++) {
		char ch = text[i];
		int v = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
			: ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
		if (v < 0 || digits >= 8)
			return 0;
		lo = lo << 4 | (uint64_t)v;
	}
	if (digits == 0)
		return 0;
	return hi << 32 | lo;
}

/* The first column of the row server_fetch_row kept, as an LSN (0: none, NULL, garbage). */
static uint64_t fetched_lsn(const struct server *s)
{
	size_t len;
	int nrows;
	const uint8_t *row = server_fetched_row(s, &len, &nrows);
	if (!row || nrows < 1 || len < 6)
		return 0;
	struct proto_reader r;
	proto_reader_init(&r, row, len);
	uint16_t ncols = proto_get_u16(&r);
	int32_t clen = (int32_t)proto_get_u32(&r);
	const uint8_t *text = clen > 0 ? proto_get_bytes(&r, (size_t)clen) : NULL;
	if (r.err || ncols < 1 || !text)
		return 0;
	return split_parse_lsn((const char *)text, (size_t)clen);
}

static bool split_replay_result(struct client *c, struct server *s)
{
	uint64_t lsn = fetched_lsn(s);
	if (lsn && backend_of(s))
		services_note_replay(c->worker->rt->services, pool_rule(c->pool)->service, backend_of(s), lsn);
	return lsn >= c->ryw_lsn;
}

static bool split_after_primary(struct client *c, const struct server *s)
{
	(void)s;
	if (c->standby || !ryw_on(c) || c->ryw_pending == UINT8_MAX)
		return false; /* (255 in flight cannot happen: one transaction at a time each) */
	c->ryw_pending++;
	return true;
}

static bool split_write_result(struct client *c, struct server *s, bool ok)
{
	uint64_t lsn = ok ? fetched_lsn(s) : 0;
	c->ryw_pending--;
	if (lsn == 0)
		/* Position unknown: no standby can be shown to have the write; the primary serves
		 * this client's reads until a later write's position is known. */
		c->ryw_lsn = UINT64_MAX;
	else if (lsn > c->ryw_lsn || c->ryw_lsn == UINT64_MAX)
		/* Fetches may end out of order: the larger wins. A later fetch started after the
		 * earlier transaction ended, so its position also covers that one's write. */
		c->ryw_lsn = lsn;
	if (!lsn && !c->dead)
		log_warn(c->id, c->ctx, "read-your-writes: could not read the primary's WAL position; reads stay on the primary");
	if (c->dead) {
		client_husk_done(c);
		return false;
	}
	return true;
}

static void split_note_error(struct client *c, struct server *s, const uint8_t *m, size_t total)
{
	struct proto_error_fields f;
	if (total <= PROTO_HDR_LEN || !c->pool || !backend_of(s))
		return;
	const struct config_pool_rule *rule = pool_rule(c->pool);
	bool wants_primary = pool_is_split(c->pool) ? !c->standby
			     : rule->target_session_attrs == CONFIG_TARGET_PRIMARY ||
				       rule->target_session_attrs == CONFIG_TARGET_READ_WRITE;
	if (!wants_primary || proto_parse_error(m + PROTO_HDR_LEN, total - PROTO_HDR_LEN, &f) < 0 || !f.sqlstate ||
	    strcmp(f.sqlstate, "25006") != 0)
		return;
	/* Also answered by a real primary inside a transaction the client made read-only (SET
	 * TRANSACTION READ ONLY): then the re-check costs one connect and finds it a primary. */
	services_forget_role(c->worker->rt->services, rule->service, backend_of(s));
}

/* ---- the relay hooks (frontend/relay_hooks.h) ---- */

/* Pools whose role the split or a 25006 matters to: the split itself, and pools that want a
 * primary (split_note_error). */
static bool hook_wants(const struct tusk_config *cfg, const struct config_pool_rule *rule)
{
	(void)cfg;
	return rule && (rule->target_session_attrs == CONFIG_TARGET_READ_WRITE_SPLIT ||
			rule->target_session_attrs == CONFIG_TARGET_PRIMARY ||
			rule->target_session_attrs == CONFIG_TARGET_READ_WRITE);
}

/* s is idle and attached to our loop: with read-your-writes, a standby serves c only once it
 * replayed c's last write. */
static void on_replay_checked(struct server *s, void *arg, int err, const char *reason, const uint8_t *errmsg,
			      size_t errlen)
{
	struct client *c = arg;
	(void)reason;
	(void)errmsg;
	(void)errlen;
	c->server = NULL;
	if (err == 0 && split_replay_result(c, s)) {
		client_attach_resume(c, s);
		return;
	}
	/* The standby has not replayed the client's last write yet (or could not say): the
	 * primary serves this read. */
	if (err == 0)
		relay_park_server(s);
	else if (s->ok_after_error)
		server_close(s, "could not read the standby's replay position");
	client_attach_resume(c, NULL);
}

static bool replay_check(struct client *c, struct server *s)
{
	if (!split_needs_replay_check(c, s))
		return false;
	/* read-your-writes: ask the standby how far it has replayed, then decide. */
	c->server = s;
	split_replay_fetch(s, on_replay_checked, c);
	return true;
}

/* A standby's answer to standby_use_sql for c's pool: it serves the pool's sessions (then the
 * replay check, if any), or it refuses serializable ones (0A000 "cannot use serializable mode
 * in a hot standby"; learned for the pool: its reads go to the primary), or something else
 * failed (this read goes to the primary; asked again next time). */
static void on_standby_use(struct server *s, void *arg, int err, const char *reason, const uint8_t *errmsg,
			   size_t errlen)
{
	struct client *c = arg;
	struct proto_error_fields f;
	double now = ev_now(c->worker->loop);
	c->server = NULL;
	if (err == 0) {
		pool_set_standby_use(c->pool, POOL_STANDBY_SERVES, now);
		if (!replay_check(c, s))
			client_attach_resume(c, s);
		return;
	}
	if (errmsg && errlen > PROTO_HDR_LEN && errmsg[0] == 'E' &&
	    proto_parse_error(errmsg + PROTO_HDR_LEN, errlen - PROTO_HDR_LEN, &f) == 0 && f.sqlstate &&
	    strcmp(f.sqlstate, "0A000") == 0 && f.message && strstr(f.message, "serializable")) {
		if (pool_standby_use(c->pool, now) != POOL_STANDBY_REFUSES)
			log_info(c->id, c->ctx, "read-write-split: the standbys refuse %s/%s's sessions (%s): its reads go to "
				 "the primary", pool_database(c->pool), pool_user(c->pool), f.message);
		pool_set_standby_use(c->pool, POOL_STANDBY_REFUSES, now);
	} else {
		log_info(c->id, c->ctx, "read-write-split: could not ask standby server %s what its sessions start with "
			 "(%s): the primary serves this read", s->id, reason ? reason : "error");
	}
	if (s->ok_after_error)
		server_close(s, "its sessions cannot serve this pool's reads");
	client_attach_resume(c, NULL);
}

static bool hook_attach(struct client *c, struct server *s)
{
	if (c->standby && pool_standby_use(c->pool, ev_now(c->worker->loop)) == POOL_STANDBY_UNKNOWN) {
		/* Once a minute per pool, before a standby serves it: can it? */
		c->server = s;
		server_fetch_row(s, standby_use_sql, "", op_timeout(s), on_standby_use, c);
		return true;
	}
	return replay_check(c, s);
}

static void on_write_lsn(struct server *s, void *arg, int err, const char *reason, const uint8_t *errmsg,
			 size_t errlen)
{
	struct client *c = arg;
	enum reset_kind reset = c->ryw_reset;
	(void)reason;
	(void)errmsg;
	(void)errlen;
	split_write_result(c, s, err == 0); /* may free c */
	if (err < 0) {
		if (s->ok_after_error)
			server_close(s, "could not read the primary's WAL position");
		return;
	}
	relay_release_finish(s, reset);
}

static bool hook_release(struct client *c, struct server *s, enum reset_kind reset)
{
	if (!split_after_primary(c, s))
		return false;
	/* read-your-writes: the primary's WAL position on this server, off the client's path
	 * (its reads go to the primary until it is in), then reset and park. */
	c->ryw_reset = reset;
	server_unpark(s);
	split_write_fetch(s, on_write_lsn, c);
	return true;
}

static void hook_error(struct client *c, struct server *s, const uint8_t *m, size_t total)
{
	if (m)
		split_note_error(c, s, m, total); /* 25006 from a primary: role re-check */
}

static bool hook_quiet(const struct client *c)
{
	return c->ryw_pending == 0;
}

const struct relay_hooks split_relay_hooks = {
	.name = "split",
	.wants = hook_wants,
	.claim = split_route_claim,
	.attach = hook_attach,
	.quiet = hook_quiet,
	.error = hook_error,
	.release = hook_release,
};
