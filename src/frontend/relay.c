/* The relay: while a client holds a server, bytes move between the two sockets straight
 * out of each side's read buffer, without re-encoding. Header scanners walk the messages in
 * both directions. Client to server they record what each request owes (the expect queue
 * on the server), note session changes (SET, DISCARD, ...) and, in transaction and
 * statement pooling, rename named prepared statements to tusk's server-side names,
 * preparing them first on a server that lacks them. Server to client they match replies to
 * that queue, drop the replies to tusk's own requests, answer requests tusk handles itself
 * in order, and find the ReadyForQuery that ends a transaction so the server can go back
 * to the pool. Only small messages are ever held whole; bodies otherwise stream. A side
 * whose peer cannot take more is not read, so memory stays bounded. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <xxhash.h>

#include "frontend/client_int.h"
#include "net/evio.h"
#include "pool/pool.h"
#include "pool/prepared.h"
#include "pool/server.h"
#include "proto/proto.h"
#include "router/classify.h"
#include "runtime/runtime.h"
#include "stats/stats.h"
#include "util/log.h"
#include "worker/worker.h"

#define RELAY_INSPECT_MAX 8192 /* largest ParameterStatus we look into; bigger ones just pass */
#define RELAY_TARGET_MAX 256   /* Describe/Close are a kind byte and one name */
#define RELAY_NAME_MAX 1024    /* longest statement or portal name cut to PREP_NAME_MAX (cut_names) */
#define RELAY_EARLY_RELEASE_MAX 4096 /* a final reply this small is copied to release early */
#define RELAY_COALESCE_MAX 4096 /* client bytes behind tusk's own copied to go in one write */
#define RELAY_REPLAY_MAX 8192  /* largest batch (Bind to Sync) kept to retry on a stale statement */
#define RELAY_STALE_ERROR_MAX 1024 /* largest ErrorResponse looked for behind a ParameterDescription */

/* The copy of a batch kept in server.replay (see heal_stale). */
enum replay_state {
	REPLAY_IDLE,      /* nothing kept */
	REPLAY_START,     /* a Bind of a tusk statement begins a batch at wbuf offset replay_mark */
	REPLAY_RECORDING, /* copying what goes to the server, up to the Sync */
	REPLAY_COMPLETE,  /* the whole batch, Sync included, is in replay */
	REPLAY_GAVE_UP,   /* too big, or not a batch that can be sent again */
};

enum scan_result {
	SCAN_OK,        /* scanned as far as the bytes allow */
	SCAN_STALL,     /* stopped until what is already scanned (or queued) has been written */
	SCAN_TERMINATE, /* the client's Terminate sits at the head */
	SCAN_BAD,       /* protocol violation */
	SCAN_CLOSED,    /* the client was failed and is gone */
};

static void relay_server_cb(struct ev_loop *loop, ev_io *io, int revents);
static void release_after_transaction(struct client *c, struct server *s);
static void transaction_over(struct client *c, struct server *s);
static void resync_kept(struct client *c, struct server *s);

static const struct tusk_config *cfg_of(const struct client *c) { return c->worker->rt->cfg; }

/* ---- the expect queue ---- */

static bool expect_room(const struct server *s, int n)
{
	return s->expect_count + n <= SERVER_EXPECT_MAX;
}

static struct server_expect *expect_push(struct server *s, uint8_t kind, uint8_t action)
{
	struct server_expect *e = &s->expect[(s->expect_head + s->expect_count) % SERVER_EXPECT_MAX];
	s->expect_count++;
	e->kind = kind;
	e->action = action;
	e->has_hash = false;
	e->all = false;
	e->stale = false;
	e->replay = false;
	e->fake = false;
	e->client_close = false;
	e->name_hash = 0;
	return e;
}

/* The client side stops scanning while fewer reply slots than this are free (one message may
 * push several: a rewritten Bind with its Parse, Close and Describe); every check of whether
 * that stop happened uses the same number, or a stopped client would never be read again. */
enum { SCAN_EXPECT_ROOM = 6 };

static struct server_expect *expect_head(struct server *s)
{
	return s->expect_count ? &s->expect[s->expect_head] : NULL;
}

static void expect_pop(struct server *s)
{
	s->expect_head = (uint16_t)((s->expect_head + 1) % SERVER_EXPECT_MAX);
	if (--s->expect_count == 0)
		s->flush_awaited = false;
}

static const char *expect_name(uint8_t kind)
{
	static const char *const names[] = { "Parse", "Bind", "Describe statement", "Describe portal", "Execute",
					     "Close", "Sync", "Query", "FunctionCall" };
	return kind < sizeof names / sizeof names[0] ? names[kind] : "?";
}

static void expect_dump(const struct client *c, const struct server *s)
{
	char line[512];
	size_t n = 0;
	for (int i = 0; i < s->expect_count && n + 24 < sizeof line; i++) {
		const struct server_expect *e = &s->expect[(s->expect_head + i) % SERVER_EXPECT_MAX];
		n += (size_t)snprintf(line + n, sizeof line - n, " %s/%c", expect_name(e->kind), "FDI"[e->action]);
	}
	line[n] = '\0';
	log_warn(c->id, c->ctx, "owed by server %s:%s", s->id, line);
}

static bool ends_with_ready(uint8_t kind)
{
	return kind == EXPECT_SYNC || kind == EXPECT_QUERY || kind == EXPECT_FUNCTION;
}

/* The client's own named Parse failed, or the server skipped it after an error: PostgreSQL
 * made no statement of it, so the name is free again (only that Parse's entry: one the client
 * parsed again since under the name stays). */
static void forget_client_parse(struct client *c, const struct server_expect *e)
{
	prep_client_forget_parse(c->prep, e->name_hash, e->hash);
}

/* After an error in the extended protocol the server skips everything up to the next Sync:
 * whatever those requests were owed will never come, and statements they would have
 * prepared do not exist. */
static void expect_skip_to_sync(struct client *c, struct server *s)
{
	struct server_expect *e;
	struct prep_hash kept[SERVER_EXPECT_MAX / 2];
	bool kept_stale[SERVER_EXPECT_MAX / 2];
	int nkept = 0, unclosed = 0;

	while ((e = expect_head(s)) && !ends_with_ready(e->kind)) {
		if (e->kind == EXPECT_PARSE && e->action == EXPECT_FORWARD && e->has_hash && e->name_hash)
			forget_client_parse(c, e);
		unclosed += e->client_close;
		if (e->has_hash && s->prep) {
			if (e->kind == EXPECT_PARSE)
				prep_server_forget(s->prep, e->hash);
			else if (e->kind == EXPECT_CLOSE && nkept < (int)(sizeof kept / sizeof kept[0])) {
				/* a skipped Close (eviction, stale, last name): still on the server */
				kept_stale[nkept] = e->stale;
				kept[nkept++] = e->hash;
			}
		}
		expect_pop(s);
	}
	/* After the Parses are forgotten, so that putting these back evicts nothing. */
	for (int i = 0; i < nkept; i++) {
		struct prep_hash ev;
		(void)prep_server_add(s->prep, kept[i], &ev);
		if (kept_stale[i])
			prep_server_mark_stale(s->prep, kept[i]);
	}
	/* The client's skipped Closes: their names are the client's again (after its skipped
	 * Parses are forgotten, which may have taken the same names meanwhile). */
	while (unclosed-- > 0)
		prep_client_close_skipped(c->prep);
}

/* ---- transaction boundaries of the extended protocol ----
 *
 * PostgreSQL opens an implicit transaction at the first Parse/Bind/Describe/Execute/Close
 * after a ReadyForQuery and ends it only at the Sync (or at a Query or FunctionCall, which
 * commit it): a client that never sends that Sync has its work rolled back when it leaves.
 * So from such a message on the server is inside a transaction whatever its last
 * ReadyForQuery said (s->ext_open, until the Sync goes out; then pending_rfq covers the wait
 * for its ReadyForQuery), and it may go to another client only once settled. */

/* Note the transaction effect of a client message of type t about to go to the server. */
static void note_extended_boundary(struct server *s, uint8_t t)
{
	if (t == 'P' || t == 'B' || t == 'D' || t == 'E' || t == 'C')
		s->ext_open = true;
	else if (t == 'S' || t == 'Q' || t == 'F')
		s->ext_open = false;
}

/* The server owes nothing: every ReadyForQuery came, no reply is queued, no batch is open. */
static bool server_quiet(const struct server *s)
{
	return s->pending_rfq == 0 && s->expect_count == 0 && !s->ext_open;
}

/* Its last ReadyForQuery said status ('I' idle, 'T' in a transaction) and nothing is owed or
 * begun since. */
static bool server_resting_in(const struct server *s, uint8_t status)
{
	return s->tx_status == status && !s->skipping && server_quiet(s);
}

/* The last ReadyForQuery said idle and nothing is owed or begun since: no transaction, no
 * reply on its way. The only state in which a server may serve another client. */
static bool server_settled(const struct server *s)
{
	return server_resting_in(s, 'I');
}

/* The client left inside an extended-protocol batch it never synced: make the server fail
 * it (a Parse that cannot parse; ignored if the server already skips after an error), then
 * Sync, so the implicit transaction rolls back (an explicit one is left failed, 'E', for the
 * ROLLBACK before reuse) instead of committing as a bare Sync would. Returns the
 * ReadyForQuery messages this adds, or <0 when it could not be queued. */
static int abort_unsynced(struct server *s)
{
	/* Parse: length 37, unnamed, the text, no parameter types; then Sync. */
	static const char abort_batch[] = "P\0\0\0\045" "\0" "tusk: client left before Sync\0" "\0\0"
					  "S\0\0\0\004";
	_Static_assert(sizeof abort_batch - 1 == 1 + 37 + 5, "Parse + Sync");
	if (buf_append(&s->wbuf, abort_batch, sizeof abort_batch - 1) < 0)
		return -1;
	s->ext_open = false;
	return 1;
}

/* ---- io ---- */

static void server_update_io(struct client *c, struct server *s)
{
	bool rd = buf_len(&s->rbuf) < s->rbuf.cap;
	int want = tls_link_events(&s->tls, rd, c->c2s_scanned > 0 || !buf_empty(&s->wbuf));
	evio_watch(c->worker->loop, &s->io, s->fd, want);
	/* Records OpenSSL already holds wake no poll: go and read them now there is room. Fed
	 * after the watcher is (re)armed: stopping it would drop the event. */
	if (rd && s->tls.buffered)
		ev_feed_event(c->worker->loop, &s->io, EV_READ);
}

/* Read into b (once; on TLS as many records as fit). >0 bytes, 0 EOF, -EAGAIN nothing now
 * or no room, other <0 error. */
static ssize_t read_some(int fd, struct tls_link *l, struct buf *b)
{
	if (buf_room(b) == 0)
		buf_compact(b);
	if (buf_room(b) == 0)
		return -EAGAIN;
	ssize_t n = tls_link_read(fd, l, buf_tail(b), buf_room(b));
	if (n > 0)
		buf_produce(b, (size_t)n);
	return n;
}

/* Write n bytes at the head of b to fd, consuming what went out. 0 (maybe partial, *n
 * updated), or <0 on a dead peer. */
static int write_head(int fd, struct tls_link *l, struct buf *b, size_t *n)
{
	while (*n > 0) {
		ssize_t w = tls_link_write(fd, l, buf_head(b), *n);
		if (w > 0) {
			buf_consume(b, (size_t)w);
			*n -= (size_t)w;
			continue;
		}
		if (w == -EAGAIN)
			return 0;
		return -EPIPE;
	}
	return 0;
}

static int flush_buf(int fd, struct tls_link *l, struct buf *b)
{
	size_t n = buf_len(b);
	return write_head(fd, l, b, &n);
}

/* ---- client to server ---- */

/* State that cannot be recreated on another server: this client keeps its server from now
 * on, as in session pooling, and the server is reset when the client leaves. */
static void pin_client(struct client *c, struct server *s, const char *why, const char *sql, size_t len)
{
	if (c->mode == POOL_MODE_SESSION || c->pinned)
		return;
	c->pinned = true;
	log_info(c->id, c->ctx, "pinned to server %s for the rest of the session: %s (%.*s)", s->id, why,
		 (int)(len > 60 ? 60 : len), sql);
}

/* Something ran whose effect on the session tusk cannot see: the server is reset before
 * it serves anyone else (release_after_transaction). */
static void mark_reset(struct client *c, struct server *s, const char *why, const char *sql, size_t len)
{
	if (c->mode == POOL_MODE_SESSION || c->pinned || c->reset_before_reuse)
		return;
	c->reset_before_reuse = true;
	log_debug(c->id, c->ctx, "server %s will be reset after this transaction: %s (%.*s)", s->id, why,
		  (int)(len > 60 ? 60 : len), sql);
}

/* A search_path that names pg_catalog may put another schema before it, and then an
 * unqualified name of a built-in may call a function of the client's own. */
static bool names_pg_catalog(const char *sql, size_t len)
{
	static const char needle[] = "pg_catalog";
	for (size_t i = 0; i + sizeof needle - 1 <= len; i++)
		if (strncasecmp(sql + i, needle, sizeof needle - 1) == 0)
			return true;
	return false;
}

/* What note_session found in a text that each later run of it needs again (a named prepared
 * statement keeps them: prep_stmt.flags). */
enum {
	MARK_KNOWN = 1, /* classified */
	MARK_PIN = 2,   /* pinned the client */
	MARK_RESET = 4, /* the server is reset after the transaction that runs it */
	MARK_SETS = 8,  /* it SETs or RESETs a setting: each run changes the session */
	/* (unnamed_marks only) bound since its Parse: a later Bind runs it again */
	MARK_BOUND = 0x80,
};

static bool note_session(struct client *c, struct server *s, const char *sql, size_t len, uint8_t *marks);

/* Pin or reset for one run of a statement whose text gave marks; one that SETs or RESETs
 * is read again, since its change happens at each run (false: the client had to be failed). */
static bool apply_marks(struct client *c, struct server *s, uint8_t marks, const char *sql, size_t len)
{
	if (marks & MARK_SETS)
		return note_session(c, s, sql, len, NULL);
	if (marks & MARK_PIN)
		pin_client(c, s, "prepared statement that keeps state in the session", sql, len);
	if (marks & MARK_RESET)
		mark_reset(c, s, "prepared statement that calls a function tusk does not know", sql, len);
	return true;
}

static void pin_marked(struct client *c, struct server *s, uint8_t *marks, const char *why, const char *sql,
		       size_t len)
{
	*marks |= MARK_PIN;
	pin_client(c, s, why, sql, len);
}

static void reset_marked(struct client *c, struct server *s, uint8_t *marks, const char *why, const char *sql,
			 size_t len)
{
	*marks |= MARK_RESET;
	mark_reset(c, s, why, sql, len);
}

/* Session effects of one SQL text (a Query, or the query of a Parse); *marks (may be NULL)
 * gets what a later run of the same text needs. Returns false when the client had to be
 * failed. */
/* While the transaction's tags are read (a ROLLBACK undoes what is kept, or an error made it
 * fail), count the ROLLBACK TO SAVEPOINTs sql sends: their tag is ROLLBACK too, but they leave
 * the transaction going on and healthy. sql ends with a NUL. */
static void count_rollback_to(struct client *c, const char *sql, size_t len)
{
	struct classify_result r;
	if (!(c->session.pending_len || c->tx_undo_watch || c->tx_failed) || !strcasestr(sql, "rollback") ||
	    classify_sql_opts(sql, len, c->backslash_quotes ? CLASSIFY_O_BACKSLASH_QUOTES : 0, &r) < 0)
		return;
	for (int i = 0; i < r.nsession; i++)
		if (r.stmts[i].kind == CLASSIFY_ROLLBACK_TO && c->rollback_to_owed < UINT8_MAX)
			c->rollback_to_owed++;
}

static bool note_sql(struct client *c, struct server *s, const char *sql, size_t len, uint8_t *marks)
{
	relay_hooks_sql(c, sql, len); /* the cache: what it may write goes stale */
	count_rollback_to(c, sql, len);
	return note_session(c, s, sql, len, marks);
}

/* The text has a word that a RESET needs (RESET, DISCARD, or SET ... TO DEFAULT), in any
 * case: session pooling parses no other text (note_session). */
static bool mentions_reset(const char *sql, size_t len)
{
	for (size_t i = 0; i + 5 <= len; i++) {
		char ch = (char)(sql[i] | 0x20);
		if ((ch == 'r' && strncasecmp(sql + i, "reset", 5) == 0) ||
		    (ch == 'd' && i + 7 <= len && (strncasecmp(sql + i, "discard", 7) == 0 ||
						   strncasecmp(sql + i, "default", 7) == 0)))
			return true;
	}
	return false;
}

/* The text has word (lower case, no longer than 10 bytes) in any case. */
static bool mentions(const char *sql, size_t len, const char *word)
{
	size_t wl = strlen(word);
	for (size_t i = 0; i + wl <= len; i++)
		if ((char)(sql[i] | 0x20) == word[0] && strncasecmp(sql + i, word, wl) == 0)
			return true;
	return false;
}

/* A savepoint statement while this transaction has session changes pending: what a
 * ROLLBACK TO undoes of them (session_pending_*). 0, or < 0 (no room to mark it). */
static int note_savepoint(struct client *c, const struct classify_stmt *st)
{
	if (st->flags & CLASSIFY_F_NAME_TRUNCATED) {
		if (st->kind == CLASSIFY_SAVEPOINT || st->kind == CLASSIFY_RELEASE || st->kind == CLASSIFY_ROLLBACK_TO)
			return -ENAMETOOLONG;
		return 0;
	}
	switch (st->kind) {
	case CLASSIFY_SAVEPOINT:
		return session_pending_savepoint(&c->session, st->name);
	case CLASSIFY_RELEASE:
		session_pending_release(&c->session, st->name);
		return 0;
	case CLASSIFY_ROLLBACK_TO:
		session_pending_rollback_to(&c->session, st->name);
		return 0;
	default:
		return 0;
	}
}

/* Whether a text may hold a savepoint statement that matters: this transaction has session
 * changes pending (only then are savepoints marked, note_savepoint). */
static bool savepoints_matter(const struct client *c, const char *sql, size_t len)
{
	return c->session.pending_len &&
	       (mentions(sql, len, "savepoint") || mentions(sql, len, "rollback") || mentions(sql, len, "release"));
}

/* Session pooling: the RESETs of a statement (note_session), and what undoes them. */
static bool note_session_resets(struct client *c, const struct classify_result *r)
{
	bool sets = r->nset_configs > 0; /* the unnamed statement's runs count again (MARK_SETS) */
	for (int i = 0; i < r->nsession; i++) {
		const struct classify_stmt *st = &r->stmts[i];
		int rc = 0;
		switch (st->kind) {
		case CLASSIFY_RESET:
			sets = true;
			rc = session_pending_reset(&c->session, st->name);
			break;
		case CLASSIFY_DISCARD_ALL:
			session_named_reset_clear(&c->session); /* no named statement is left */
			__attribute__((fallthrough));
		case CLASSIFY_RESET_ALL:
			sets = true;
			rc = session_pending_reset_all(&c->session);
			break;
		case CLASSIFY_DEALLOCATE_ALL:
			session_named_reset_clear(&c->session);
			break;
		case CLASSIFY_DEALLOCATE:
			if (!(st->flags & CLASSIFY_F_NAME_TRUNCATED))
				session_named_reset_drop(&c->session, st->name);
			break;
		case CLASSIFY_ROLLBACK:
			c->tx_failed = true; /* its RESETs are undone */
			break;
		case CLASSIFY_SET:
			sets = true;
			rc = session_pending_set_seen(&c->session, st->name); /* a RESET before it is over */
			break;
		default:
			rc = note_savepoint(c, st);
			break;
		}
		if (rc < 0)
			session_discard(&c->session); /* too many: as before, the server's default */
	}
	for (int i = 0; i < r->nset_configs; i++)
		if (session_pending_set_seen(&c->session, r->set_configs[i]) < 0)
			session_discard(&c->session);
	return sets;
}

static bool note_session(struct client *c, struct server *s, const char *sql, size_t len, uint8_t *marks)
{
	struct classify_result r;
	unsigned opts = c->backslash_quotes ? CLASSIFY_O_BACKSLASH_QUOTES : 0;
	uint8_t scratch;

	if (!marks)
		marks = &scratch;
	*marks = MARK_KNOWN;
	/* Session pooling keeps the client's server and resets it when the client leaves:
	 * nothing to carry, pin or reset. Only a RESET matters, when the startup packet set
	 * something: it goes back to the startup value, which the server got as a SET and so
	 * does not go back to (transaction_over sets it again). */
	if (c->mode == POOL_MODE_SESSION) {
		/* (not a named Parse: its statement may run later, or never, or many times, and
		 * session pooling keeps nothing per statement to tell when) */
		if (c->parse_named || !session_has_startup(&c->session))
			return true;
		bool savepoints = savepoints_matter(c, sql, len);
		if ((mentions_reset(sql, len) || savepoints || (c->session.pending_len && mentions(sql, len, "set")) ||
		     (session_named_resets(&c->session) && mentions(sql, len, "deallocate"))) &&
		    (savepoints || classify_maybe_session_opts(sql, len, opts)) &&
		    classify_sql_opts(sql, len, opts, &r) == 0 && !r.parse_error && note_session_resets(c, &r))
			*marks |= MARK_SETS; /* the unnamed statement's: again at a second Bind */
		return true;
	}

	if (c->lex_pending) {
		/* A request still in flight may have switched standard_conforming_strings: read
		 * either way, this text may hide a session statement. */
		if (classify_maybe_session_opts(sql, len, opts) ||
		    classify_maybe_session_opts(sql, len, opts ^ CLASSIFY_O_BACKSLASH_QUOTES))
			pin_marked(c, s, marks, "statement pipelined behind a change of how SQL is read", sql, len);
		/* Read on as the SQL was read before (pinned, only the client's own server's
		 * session is at stake): a SET after a pending RESET ALL must still win over it. */
	}
	if (!classify_maybe_session_opts(sql, len, opts) && !savepoints_matter(c, sql, len))
		return true;
	if (classify_sql_opts(sql, len, opts, &r) < 0) {
		/* Too long for the parser, or no memory: it may hold anything. */
		pin_marked(c, s, marks, "statement tusk could not classify", sql, len);
		return true;
	}
	if (r.parse_error) {
		/* A PostgreSQL 15 server rejects it and runs none of it; a newer one may accept
		 * syntax this parser does not know. */
		reset_marked(c, s, marks, "statement the parser rejected", sql, len);
		return true;
	}
	for (int i = 0; i < r.nsession; i++) {
		const struct classify_stmt *st = &r.stmts[i];
		const char *pin = NULL;
		int rc = 0;
		switch (st->kind) {
		case CLASSIFY_SET:
			if (st->flags & (CLASSIFY_F_NAME_TRUNCATED | CLASSIFY_F_FROM_CURRENT)) {
				pin = "SET that cannot be replayed elsewhere";
				break;
			}
			if (strcmp(st->name, "search_path") == 0 && names_pg_catalog(sql + st->offset, st->length)) {
				pin = "search_path that names pg_catalog";
				break;
			}
			/* Reported parameters come back as ParameterStatus; only the rest is carried.
			 * A named Parse's SET happens at each Bind of it, not now (apply_marks). */
			*marks |= MARK_SETS;
			if (!c->parse_named && !server_param(s, st->name))
				rc = session_pending_set(&c->session, st->name, sql + st->offset, st->length);
			else if (!c->parse_named)
				rc = session_pending_set_seen(&c->session, st->name);
			break;
		case CLASSIFY_RESET:
			/* a reported one too: it may go back to a startup value (session_commit) */
			*marks |= MARK_SETS;
			if (!c->parse_named)
				rc = session_pending_reset(&c->session, st->name);
			break;
		case CLASSIFY_RESET_ALL:
			*marks |= MARK_SETS;
			if (!c->parse_named)
				rc = session_pending_reset_all(&c->session);
			break;
		case CLASSIFY_DISCARD_ALL:
			rc = session_pending_reset_all(&c->session);
			if (c->prep)
				prep_client_clear(c->prep);
			if (s->prep)
				prep_server_forget_all(s->prep);
			s->check_prepared = false;
			break;
		case CLASSIFY_DEALLOCATE_ALL:
			if (c->prep)
				prep_client_clear(c->prep);
			if (s->prep)
				prep_server_forget_all(s->prep);
			s->check_prepared = false;
			break;
		case CLASSIFY_ROLLBACK:
			c->tx_failed = true; /* SETs of this transaction are undone */
			break;
		case CLASSIFY_SAVEPOINT:
		case CLASSIFY_RELEASE:
		case CLASSIFY_ROLLBACK_TO:
			/* a ROLLBACK TO undoes what followed its savepoint (session_pending_*) */
			rc = note_savepoint(c, st);
			if (rc == -ENAMETOOLONG) {
				rc = 0;
				pin = "savepoint whose name tusk cannot read whole";
			}
			break;
		case CLASSIFY_TEMP_OBJECT:
			if (!(st->flags & CLASSIFY_F_ON_COMMIT_DROP))
				pin = "temporary object";
			break;
		case CLASSIFY_PREPARE:
		case CLASSIFY_EXECUTE:
		case CLASSIFY_LISTEN:
		case CLASSIFY_HOLD_CURSOR:
		case CLASSIFY_SESSION_AUTH:
		case CLASSIFY_LOAD:
		case CLASSIFY_UNKNOWN:
			pin = "session state that lives in the server process";
			break;
		default:
			break;
		}
		if (pin)
			pin_marked(c, s, marks, pin, sql + st->offset, st->length);
		/* (a named Parse's SET or RESET changes nothing yet: its Binds do, apply_marks) */
		bool runs = !c->parse_named || st->kind == CLASSIFY_DISCARD_ALL;
		if (runs && (st->kind == CLASSIFY_SET || st->kind == CLASSIFY_RESET) &&
		    (strcmp(st->name, "standard_conforming_strings") == 0 || strcmp(st->name, "client_encoding") == 0))
			c->lex_pending = true;
		if (runs && (st->kind == CLASSIFY_RESET_ALL || st->kind == CLASSIFY_DISCARD_ALL))
			c->lex_pending = true;
		if (runs && (st->kind == CLASSIFY_RESET || st->kind == CLASSIFY_RESET_ALL ||
			     st->kind == CLASSIFY_DISCARD_ALL) && server_connect_query(s))
			s->connect_query_undone = true;
		if (rc < 0) {
			client_fail(c, "54000", "session settings too large to carry between servers");
			return false;
		}
	}
	if (r.truncated)
		pin_marked(c, s, marks, "too many session statements in one query", sql, len);
	/* Calls: a built-in that keeps session state, or set_config() of a setting the server
	 * does not report (its value then lives only in that server process), pins; a reported
	 * one comes back as ParameterStatus and is the client's like any SET. */
	if (r.calls & CLASSIFY_CALL_PIN)
		pin_marked(c, s, marks, "a function that keeps state in the session", sql, len);
	for (int i = 0; i < r.nset_configs; i++) {
		if (!server_param(s, r.set_configs[i]))
			pin_marked(c, s, marks, "set_config() of a setting the server does not report", sql, len);
		else if (session_pending_set_seen(&c->session, r.set_configs[i]) < 0) {
			client_fail(c, "54000", "session settings too large to carry between servers");
			return false;
		}
		if (strcmp(r.set_configs[i], "standard_conforming_strings") == 0 ||
		    strcmp(r.set_configs[i], "client_encoding") == 0)
			c->lex_pending = true;
	}
	if (r.calls & CLASSIFY_CALL_RESET)
		reset_marked(c, s, marks, "a function, DO block or procedure tusk does not know", sql, len);
	return true;
}

/* The text of a Query or Parse body, and its length up to the terminating NUL; false when the
 * body holds no NUL-terminated text (a malformed message). */
bool relay_sql_of(uint8_t type, const char *body, size_t blen, const char **sql, size_t *len)
{
	if (type == 'P') {
		const char *nul = memchr(body, '\0', blen);
		if (!nul)
			return false;
		blen -= (size_t)(nul + 1 - body);
		body = nul + 1;
	}
	const char *end = memchr(body, '\0', blen);
	if (!end)
		return false;
	*sql = body;
	*len = (size_t)(end - body);
	return true;
}

/* A Query or Parse larger than the read buffer streams through in pieces; a copy of it is
 * kept until the last piece so that it is classified like any other. Bounded by
 * max_message_size, freed at its end; only such oversized messages pay for it (the struct
 * client of an idle client holds one pointer for it). */
struct client_big {
	size_t len, cap;
	uint8_t type;
	char data[];
};

/* Without the memory for the copy the statement cannot be classified: the client is pinned
 * at once (its server stays, as for anything tusk cannot prove harmless). */
static void big_begin(struct client *c, struct server *s, uint8_t type, size_t total)
{
	free(c->big);
	size_t cap = total - PROTO_HDR_LEN;
	c->big = malloc(sizeof *c->big + cap);
	if (!c->big) {
		pin_client(c, s, "statement too large to copy for classification", "", 0);
		return;
	}
	c->big->len = 0;
	c->big->cap = cap;
	c->big->type = type;
}

static void big_append(struct client *c, const uint8_t *p, size_t n, size_t skip_header)
{
	struct client_big *b = c->big;
	if (!b || n <= skip_header)
		return;
	p += skip_header;
	n -= skip_header;
	if (n > b->cap - b->len)
		n = b->cap - b->len;
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

/* The last piece went by: classify it. Returns false when the client had to be failed. */
static bool big_end(struct client *c, struct server *s)
{
	struct client_big *b = c->big;
	const char *sql;
	size_t len;
	bool ok = true;

	if (relay_sql_of(b->type, b->data, b->len, &sql, &len)) {
		ok = note_sql(c, s, sql, len, b->type == 'P' ? &c->unnamed_marks : NULL);
		c->unnamed_marks &= (uint8_t)~MARK_SETS; /* noted now: it runs at once */
	}
	/* A body without its NUL is the server's to refuse: it runs nothing. */
	free(c->big);
	c->big = NULL;
	return ok;
}

/* A stale copy of the statement is still on the server: close it (reply dropped) so that
 * the Parse that follows makes it afresh instead of failing with 42P05. */
static bool close_if_stale(struct server *s, struct prep_hash h, const char *server_name)
{
	if (!prep_server_stale(s->prep, h))
		return true;
	if (prep_put_close_statement(&s->wbuf, server_name) < 0)
		return false;
	struct server_expect *x = expect_push(s, EXPECT_CLOSE, EXPECT_DROP);
	x->has_hash = true;
	x->hash = h;
	x->stale = true;
	return true;
}

/* Prepare statement h afresh on server s: close the copy it holds (stale or not), close the
 * least recently used one if the set is full, send the Parse (its reply forwarded or dropped,
 * per action) and a Describe whose reply, dropped, tells what the new copy describes
 * (told_check). At most 4 requests; the caller checked queue and buffer room. */
static bool prepare_on(struct server *s, struct prep_hash h, const char *server_name, const uint8_t *body,
		       size_t len, uint8_t action, uint64_t name_hash)
{
	struct prep_hash evicted;
	if (prep_server_holds(s->prep, h)) {
		prep_server_mark_stale(s->prep, h);
		if (!close_if_stale(s, h, server_name))
			return false;
	}
	if (prep_server_add(s->prep, h, &evicted)) {
		char name[PREP_SERVER_NAME_SIZE];
		prep_server_name(evicted, name);
		if (prep_put_close_statement(&s->wbuf, name) < 0)
			return false;
		struct server_expect *x = expect_push(s, EXPECT_CLOSE, EXPECT_DROP);
		x->has_hash = true;
		x->hash = evicted;
	}
	if (prep_put_parse(&s->wbuf, server_name, body, len) < 0)
		return false;
	struct server_expect *x = expect_push(s, EXPECT_PARSE, action);
	x->has_hash = true;
	x->hash = h;
	x->name_hash = name_hash; /* the client's own Parse: its name is forgotten if it fails */
	if (prep_put_describe_statement(&s->wbuf, server_name) < 0)
		return false;
	x = expect_push(s, EXPECT_DESCRIBE_STMT, EXPECT_DROP);
	x->has_hash = true;
	x->hash = h;
	return true;
}

/* Make sure server s has statement e, preparing it first (replies dropped) if not. A
 * client's statement is used on a shared copy only once a server prepared it after the
 * client's Parse (PostgreSQL plans a fresh prepare with the schema of the moment: a copy made
 * before a schema change would fail it with 0A000). The caller checked queue and buffer room. */
static bool ensure_prepared(struct server *s, const struct prep_stmt *e)
{
	if (e->placed && prep_server_has(s->prep, e->hash))
		return true;
	if (!prepare_on(s, e->hash, e->server_name, e->body, e->body_len, EXPECT_DROP, 0))
		return false;
	prep_stmt_set_placed(e);
	return true;
}

/* ---- what the client was told ----
 *
 * A driver keeps the RowDescription and ParameterDescription it got for a statement (from a
 * Describe of the statement, or of a portal bound to it) and decodes every later result with
 * them. PostgreSQL fixes both when the statement is prepared: when the schema changes them,
 * each later use fails with 0A000 "cached plan must not change result type" until the client
 * prepares again. tusk's copy on a server may be newer than the client's Parse (prepared on
 * another server, or again after a schema change), so before a Bind of a statement whose
 * client was told something, what the copy describes (learnt from the Describe tusk sends
 * after each Parse of its own) must still be that. If not, the copy is prepared afresh and
 * checked once more, and if it still differs the Bind is sent to fail (a statement that
 * does not exist: the server skips to Sync and rolls back as for any error) and its error
 * reaches the client as 0A000. */

enum told_verdict {
	TOLD_GO,   /* the copy describes what the client was told (or it was told nothing) */
	TOLD_WAIT, /* a Describe's reply is awaited: scan the Bind again when it comes */
	TOLD_FAIL, /* the schema changed what the client was told: 0A000 */
	TOLD_BAD,  /* no room after all */
};

/* The name a failing Bind names: no statement is ever called that. */
#define TOLD_FAIL_NAME "tusk_description_changed"

/* A Describe of h is on its way from s. */
static bool desc_pending(const struct server *s, struct prep_hash h)
{
	for (int i = 0; i < s->expect_count; i++) {
		const struct server_expect *x = &s->expect[(s->expect_head + i) % SERVER_EXPECT_MAX];
		if (x->kind == EXPECT_DESCRIBE_STMT && x->has_hash && prep_hash_equal(x->hash, h))
			return true;
	}
	return false;
}

static enum told_verdict told_check(struct server *s, const struct prep_stmt *e)
{
	if (!prep_stmt_told(e))
		return ensure_prepared(s, e) ? TOLD_GO : TOLD_BAD;
	bool recheck = s->recheck_set && prep_hash_equal(s->recheck, e->hash);
	if (!e->placed || !prep_server_has(s->prep, e->hash)) {
		if (!ensure_prepared(s, e))
			return TOLD_BAD;
		recheck = true;
	}
	struct prep_desc now = prep_server_desc(s->prep, e->hash);
	if (!desc_pending(s, e->hash)) {
		bool known = now.params || now.rows;
		if (known && !prep_desc_differs(e->told, now)) {
			s->recheck_set = false;
			return TOLD_GO;
		}
		if (known && recheck)
			return TOLD_FAIL; /* prepared afresh, and still not what the client knows */
		/* A copy of before a schema change, or one whose description is lost: again. */
		prep_server_mark_stale(s->prep, e->hash);
		if (!ensure_prepared(s, e))
			return TOLD_BAD;
		recheck = true;
	}
	s->recheck = e->hash;
	s->recheck_set = recheck;
	/* The server answers a Describe only at a Flush or Sync. */
	if (proto_put_parts(&s->wbuf, 'H', 0, NULL, 0) < 0)
		return TOLD_BAD;
	s->flush_awaited = true; /* the Bind waits for these replies: nothing is stranded */
	return TOLD_WAIT;
}

/* What a rewritten message may need beyond its body (a Close, a Describe, a Sync). */
enum { WBUF_MARGIN = 512 };
static bool wbuf_room_for(struct server *s, size_t body);
static enum scan_result room_to_rewrite(struct client *c, struct server *s, size_t body);

/* A Bind's portal name, then its statement name: whether the statement name is empty. Only
 * for the cache's invalidation (the bind hook); a Bind too short to tell counts
 * as named, which makes the database stale: safe. */
static bool bind_unnamed(const uint8_t *m, size_t avail)
{
	const uint8_t *p = m + PROTO_HDR_LEN, *end = m + avail;
	const uint8_t *nul = avail > PROTO_HDR_LEN ? memchr(p, 0, (size_t)(end - p)) : NULL;
	return nul && nul + 1 < end && nul[1] == 0;
}

/* Statement pooling: does this SQL open a transaction block (BEGIN, START TRANSACTION)? */
static bool opens_transaction(const char *sql, size_t cap)
{
	struct classify_result r;
	size_t len = strnlen(sql, cap);
	if (classify_sql(sql, len, &r) < 0 || r.parse_error)
		return false;
	for (int i = 0; i < r.nsession; i++)
		if (r.stmts[i].kind == CLASSIFY_BEGIN)
			return true;
	return false;
}

/* An unnamed Parse of "DEALLOCATE name" for a statement the client prepared through the
 * protocol (psycopg with libpq < 17 evicts its statements this way, through the extended
 * protocol): the name exists only in tusk's map, so the query becomes a DEALLOCATE of the
 * server-side name, which the server then really drops (and tusk forgets), so the client
 * gets the exact replies it expects. SCAN_BAD here only means "not such a Parse". */
static enum scan_result rewrite_deallocate(struct client *c, struct server *s, const struct prep_parse *p,
					   size_t total)
{
	struct classify_result r;

	if (p->nparams != 0 || !prep_lone_deallocate(p->query, p->query_len, &r) ||
	    r.stmts[0].kind != CLASSIFY_DEALLOCATE)
		return SCAN_BAD;
	const struct prep_stmt *e = prep_client_find(c->prep, r.stmts[0].name);
	if (!e)
		return SCAN_BAD;
	{
		enum scan_result room = room_to_rewrite(c, s, e->body_len + 64);
		if (room != SCAN_OK)
			return room;
	}
	if (!expect_room(s, 6))
		return SCAN_STALL;
	/* It must exist on this server to be dropped without an error. */
	if (!ensure_prepared(s, e))
		return SCAN_BAD;
	struct prep_hash h = e->hash;
	uint8_t rest[16 + PREP_SERVER_NAME_SIZE];
	int n = snprintf((char *)rest, sizeof rest, "DEALLOCATE %s", e->server_name);
	rest[n + 1] = 0; /* no parameter types: int16 0 */
	rest[n + 2] = 0;
	if (prep_put_parse(&s->wbuf, "", rest, (size_t)n + 3) < 0)
		return SCAN_STALL;
	prep_server_forget(s->prep, h);
	(void)prep_client_remove(c->prep, r.stmts[0].name);
	expect_push(s, EXPECT_PARSE, EXPECT_FORWARD);
	buf_consume(&c->rbuf, total);
	return SCAN_OK;
}

/* ---- refusing what PostgreSQL would refuse, saying why ---- */

int relay_check_client_hdr(struct client *c, const uint8_t *p, size_t avail, struct proto_hdr *h)
{
	uint32_t max = cfg_of(c)->max_message_size;
	ssize_t r = proto_read_hdr(p, avail, max, h);
	if (r == 0)
		return 0;
	/* The type first: garbage rarely has a plausible length either, and its type byte is
	 * what tells the client (or its author) what went wrong. */
	if (!proto_client_type_valid(p[0])) {
		client_fail(c, "08P01", "invalid frontend message type %u ('%c')", p[0],
			    p[0] >= 0x20 && p[0] < 0x7f ? p[0] : '?');
		return -1;
	}
	if (p[0] == 'Q' && cfg_of(c)->disable_pqexec) {
		/* PgBouncer's: only the extended protocol, one statement a message */
		client_fail(c, "08P01", "simple Query messages are not allowed (disable_pqexec): use the extended query protocol");
		return -1;
	}
	if (r == PROTO_ETOOLONG) {
		/* proto_read_hdr filled h in for the error text. */
		client_fail(c, "54000", "message of %llu bytes exceeds max_message_size (%u)",
			    (unsigned long long)h->len + 1, max);
		return -1;
	}
	if (r < 0) {
		client_fail(c, "08P01", "invalid message length in a '%c' message", p[0]);
		return -1;
	}
	return 1;
}

/* A statement or portal name at p, of which n bytes belong to the message and are present,
 * longer than PostgreSQL's NAMEDATALEN - 1 (the readers' limit: cut_names shortens longer
 * names before them, so a message here that has one is malformed past the name). */
static bool name_too_long(const uint8_t *p, size_t n)
{
	return n > PREP_NAME_MAX && !memchr(p, 0, PREP_NAME_MAX + 1);
}

/* A Parse, Bind, Describe or Close (whole, or at least its names, in m[0, avail)) that a
 * reader rejected: fail the client with the reason. Always SCAN_CLOSED. */
static enum scan_result refuse_message(struct client *c, const struct proto_hdr *h, const uint8_t *m, size_t avail)
{
	size_t total = (size_t)h->len + 1;
	size_t n = (avail < total ? avail : total) - PROTO_HDR_LEN;
	const uint8_t *body = m + PROTO_HDR_LEN;
	const uint8_t *name = h->type == 'D' || h->type == 'C' ? (n ? body + 1 : body) : body;
	size_t name_n = name == body ? n : n - 1;
	const char *what = h->type == 'B' || ((h->type == 'D' || h->type == 'C') && n && body[0] == 'P')
		? "portal" : "prepared statement";

	if (h->type == 'B' && !name_too_long(name, name_n)) {
		/* The portal is fine: the statement name follows it. */
		const uint8_t *nul = memchr(name, 0, name_n);
		if (nul) {
			name_n -= (size_t)(nul - name) + 1;
			name = nul + 1;
			what = "prepared statement";
		}
	}
	if (name_too_long(name, name_n)) {
		/* Its start, printable ASCII only: the client decodes the message as text. */
		char start[21];
		for (size_t i = 0; i < sizeof start - 1; i++)
			start[i] = name[i] >= 0x20 && name[i] < 0x7f ? (char)name[i] : '?';
		start[sizeof start - 1] = '\0';
		client_fail(c, "42622", "%s name \"%s...\" is too long (at most %d bytes)", what, start, PREP_NAME_MAX);
		return SCAN_CLOSED;
	}
	client_fail(c, "08P01", "invalid %s message", h->type == 'P' ? "Parse" : h->type == 'B' ? "Bind"
				    : h->type == 'D' ? "Describe" : "Close");
	return SCAN_CLOSED;
}

/* Bytes tusk may need in s->wbuf to handle one message: two Closes, a Parse, a Describe, a
 * Flush and the message. */
static bool wbuf_room_for(struct server *s, size_t body)
{
	if (buf_room(&s->wbuf) < body + WBUF_MARGIN)
		buf_compact(&s->wbuf);
	return buf_room(&s->wbuf) >= body + WBUF_MARGIN;
}

/* Whether tusk may write a rewritten message of `body` bytes to the server now: SCAN_OK,
 * SCAN_STALL until the scanned bytes and the buffer have drained, or SCAN_CLOSED (the client
 * failed) when it never can: a message that does not fit even an empty buffer would stall
 * the client side for ever, spinning (buffer_size bounds both buffers). */
static enum scan_result room_to_rewrite(struct client *c, struct server *s, size_t body)
{
	if (body + WBUF_MARGIN > s->wbuf.cap) {
		client_fail(c, "54000", "prepared statement too large to rewrite within buffer_size: raise buffer_size");
		return SCAN_CLOSED;
	}
	return c->c2s_scanned > 0 || !wbuf_room_for(s, body) ? SCAN_STALL : SCAN_OK;
}

/* ---- retrying a request on a stale statement ----
 *
 * A statement tusk shares on a server goes stale when the schema changes under it (ALTER
 * TABLE ... TYPE; DROP TYPE + CREATE TYPE): the server answers its Bind with "cached plan must
 * not change result type" (0A000) or "cache lookup failed for type" (XX000) although the
 * client just prepared the text afresh (a statement Describe fails the same way, after its
 * ParameterDescription). The client's bytes are gone to the server by then, so a batch that
 * may be sent again is copied as it goes out: from the Bind or statement Describe of a tusk
 * statement to its Sync, when that message opens the only batch in flight, outside a
 * transaction block, with nothing before it in the batch but Parse, Describe and Close (the
 * error rolls back the implicit transaction, so nothing is lost or done twice). When the
 * error is the first reply to that message (a ParameterDescription before it is held back
 * until it is known) and nothing was sent after the Sync, tusk drops the error and the
 * ReadyForQuery that follows, closes and prepares the statement again, and sends the batch
 * again, once. In every other case the error reaches the client and the
 * statement is marked stale, so that its next use on that server prepares it afresh; the
 * other servers heal the same way on first use. */

/* May the batch that this Bind (of a tusk statement) begins be kept for a retry? */
static bool replay_may_start(const struct client *c, const struct server *s)
{
	if (s->replay_state != REPLAY_IDLE || s->pending_rfq != 0 || s->tx_status != 'I' || c->copy_in)
		return false;
	for (int i = 0; i < s->expect_count; i++) {
		uint8_t kind = s->expect[(s->expect_head + i) % SERVER_EXPECT_MAX].kind;
		if (kind != EXPECT_PARSE && kind != EXPECT_CLOSE && kind != EXPECT_DESCRIBE_STMT &&
		    kind != EXPECT_DESCRIBE_PORTAL)
			return false; /* something that runs or binds is already in the batch */
	}
	return true;
}

/* The Bind or statement Describe x (of e, its bytes from wbuf offset mark) begins a batch
 * to keep. */
static void replay_begin(struct server *s, struct server_expect *x, size_t mark, const struct prep_stmt *e)
{
	x->replay = true;
	s->replay_state = REPLAY_START;
	s->replay_mark = (uint32_t)mark;
	s->replay_len = 0;
	s->replay_retried = false;
	memcpy(s->replay_name, e->name, sizeof s->replay_name);
}

/* Copy what one scan step sent on its way (s->wbuf from wbuf_from, the client's bytes from
 * scanned_from) into the batch being kept. The order is the wire's: tusk writes its own
 * bytes only when no scanned client bytes wait (the SCAN_STALL checks). */
static void replay_record(struct client *c, struct server *s, size_t wbuf_from, size_t scanned_from)
{
	if (s->replay_state == REPLAY_START) {
		if (!s->replay && !(s->replay = malloc(RELAY_REPLAY_MAX))) {
			s->replay_state = REPLAY_GAVE_UP;
			return;
		}
		wbuf_from = s->replay_mark;
		s->replay_state = REPLAY_RECORDING;
	}
	if (s->replay_state != REPLAY_RECORDING)
		return;
	size_t own = buf_len(&s->wbuf) > wbuf_from ? buf_len(&s->wbuf) - wbuf_from : 0;
	size_t theirs = c->c2s_scanned > scanned_from ? c->c2s_scanned - scanned_from : 0;
	if (s->replay_len + own + theirs > RELAY_REPLAY_MAX) {
		s->replay_state = REPLAY_GAVE_UP;
		return;
	}
	memcpy(s->replay + s->replay_len, buf_head(&s->wbuf) + wbuf_from, own);
	s->replay_len += (uint32_t)own;
	memcpy(s->replay + s->replay_len, buf_head(&c->rbuf) + scanned_from, theirs);
	s->replay_len += (uint32_t)theirs;
}

/* The fields of the ErrorResponse m (whole, total bytes): false when it is malformed or has no
 * SQLSTATE. */
static bool error_read(const uint8_t *m, size_t total, struct proto_error_fields *f)
{
	return proto_parse_error(m + PROTO_HDR_LEN, total - PROTO_HDR_LEN, f) == 0 && f->sqlstate;
}

/* An ErrorResponse (whole, at m) saying the statement no longer fits the schema. Any 0A000
 * counts (a retry of another one fails the same way and passes on); XX000 only with the
 * message of a vanished type (English; the SQLSTATE alone is any internal error). */
static bool is_stale_error(const uint8_t *m, size_t total)
{
	struct proto_error_fields f;
	if (!error_read(m, total, &f))
		return false;
	if (strcmp(f.sqlstate, "0A000") == 0)
		return true;
	return strcmp(f.sqlstate, "XX000") == 0 && f.message &&
	       strncmp(f.message, "cache lookup failed for type", 28) == 0;
}

/* The batch kept in s->replay can go again: its Bind failed first (e is at the head), its
 * Sync is the only ReadyForQuery owed and the last thing owed, nothing else is on its way. */
static bool replay_possible(const struct client *c, const struct server *s, const struct server_expect *e)
{
	if (!e->replay || s->replay_state != REPLAY_COMPLETE || s->replay_retried || s->pending_rfq != 1 ||
	    c->c2s_scanned != 0 || c->c2s_remaining != 0 || !buf_empty(&s->wbuf) || !expect_room(s, 3))
		return false;
	for (int i = 0; i < s->expect_count; i++) {
		const struct server_expect *x = &s->expect[(s->expect_head + i) % SERVER_EXPECT_MAX];
		if (ends_with_ready(x->kind) != (i == s->expect_count - 1))
			return false;
	}
	return true;
}

/* A request on tusk statement e->hash failed with the ErrorResponse at m. Returns 1 when it
 * was a stale statement and the request went again (consume bytes of s->rbuf, the error and
 * what was held before it, are dropped), 0 to pass the error on (the statement marked stale
 * if it was that), -1 to wait for the client's pending output first. */
static int heal_stale(struct client *c, struct server *s, const struct server_expect *e, const uint8_t *m,
		      size_t total, size_t consume)
{
	bool replay = e && e->replay;
	if (!e || !e->has_hash || !s->prep || (e->kind != EXPECT_BIND && e->kind != EXPECT_DESCRIBE_STMT &&
					      e->kind != EXPECT_DESCRIBE_PORTAL) ||
	    !is_stale_error(m, total)) {
		s->replay_state = REPLAY_IDLE;
		return 0;
	}
	const struct prep_stmt *st = c->prep ? prep_client_find(c->prep, s->replay_name) : NULL;
	/* A client told what the statement described gets PostgreSQL's error: the new copy
	 * would describe something else (told_check). */
	if (replay && replay_possible(c, s, e) && st && prep_hash_equal(st->hash, e->hash) && !prep_stmt_told(st) &&
	    prep_server_holds(s->prep, e->hash) && wbuf_room_for(s, st->body_len + s->replay_len)) {
		if (c->s2c_scanned > 0)
			return -1; /* the error is dropped: what precedes it goes out first */
		struct prep_hash h = e->hash, ev;
		if (prep_put_close_statement(&s->wbuf, st->server_name) < 0 ||
		    prep_put_parse(&s->wbuf, st->server_name, st->body, st->body_len) < 0 ||
		    buf_append(&s->wbuf, s->replay, s->replay_len) < 0) {
			buf_reset(&s->wbuf); /* it was empty */
			goto pass_on;
		}
		(void)prep_server_add(s->prep, h, &ev); /* held: only marks it fresh */
		/* Owed now, before the batch's own replies: the ReadyForQuery of the failed
		 * batch's Sync, then the Close and the Parse, all tusk's. */
		s->expect_head = (uint16_t)((s->expect_head + SERVER_EXPECT_MAX - 3) % SERVER_EXPECT_MAX);
		s->expect_count += 3;
		struct server_expect *x = &s->expect[s->expect_head];
		*x = (struct server_expect){ .kind = EXPECT_SYNC, .action = EXPECT_DROP };
		x = &s->expect[(s->expect_head + 1) % SERVER_EXPECT_MAX];
		*x = (struct server_expect){ .kind = EXPECT_CLOSE, .action = EXPECT_DROP };
		x = &s->expect[(s->expect_head + 2) % SERVER_EXPECT_MAX];
		*x = (struct server_expect){ .kind = EXPECT_PARSE, .action = EXPECT_DROP, .has_hash = true, .hash = h };
		s->pending_rfq++;
		s->replay_retried = true;
		buf_consume(&s->rbuf, consume);
		log_info(c->id, c->ctx, "statement %s went stale on server %s: prepared again, request retried",
			 st->server_name, s->id);
		return 1;
	}
pass_on:
	/* Too late or unsafe to retry: the client gets the error; the next use on this server
	 * closes and prepares the statement again. */
	prep_server_mark_stale(s->prep, e->hash);
	s->replay_state = REPLAY_IDLE;
	return 0;
}

/* One client message as the per-type scanners below see it. */
struct scan_msg {
	const struct proto_hdr *h;
	const uint8_t *m; /* its first byte, at the scan position */
	size_t avail;     /* bytes of it read */
	size_t total;     /* its size, header included */
	uint32_t max;     /* max_message_size */
	bool rename;      /* prepared statements are tracked (and renamed) on this server */
};

/* The per-type scanner let the message pass: scan_client_message advances over it. */
static enum scan_result advance(bool *pass)
{
	*pass = true;
	return SCAN_OK;
}

/* Session pooling: a named Parse's statement runs at each Bind of its name, not now, and
 * PostgreSQL's RESET there goes back to the startup value, which the client's server got as
 * a SET and so does not go back to. One that RESETs a setting the startup packet gave is
 * kept by name (session.h) so that each run counts (scan_bind); any other statement parsed
 * under the name replaces it. */
static void note_named_parse(struct client *c, const char *name, const char *sql, size_t len)
{
	struct classify_result r;
	unsigned opts = c->backslash_quotes ? CLASSIFY_O_BACKSLASH_QUOTES : 0;
	session_named_reset_drop(&c->session, name);
	if (!session_has_startup(&c->session) || !mentions_reset(sql, len) ||
	    !classify_maybe_session_opts(sql, len, opts) || classify_sql_opts(sql, len, opts, &r) < 0 || r.parse_error)
		return;
	for (int i = 0; i < r.nsession; i++) {
		const struct classify_stmt *st = &r.stmts[i];
		const char *setting = st->kind == CLASSIFY_RESET         ? st->name
				      : st->kind == CLASSIFY_RESET_ALL   ? ""
				      : st->kind == CLASSIFY_DISCARD_ALL ? SESSION_NAMED_DISCARD_ALL
									 : NULL;
		if (setting && session_named_reset_put(&c->session, name, setting) < 0)
			log_warn(c->id, c->ctx, "too many named statements that RESET: a run of \"%s\" goes to the server's default", name);
	}
}

/* A Parse of a name the client uses already: PostgreSQL answers 42P05 and keeps the statement
 * it has, but the server holds tusk's names (tusk_<hash>), not the client's, so it cannot
 * tell. A Parse made to fail goes in its place: PARSE_TAKEN_SQL fails in any session at parse
 * analysis with 42P01 (or with 25P02 in a failed transaction block, as the client's own would
 * there), reply_error turns the 42P01 into the client's 42P05, and the server skips to the
 * Sync as it would after the client's own error. The client's map is unchanged. */
#define PARSE_TAKEN_NAME "tusk_parse_taken"
#define PARSE_TAKEN_SQL "SELECT FROM pg_catalog.tusk_no_such_relation"
static enum scan_result parse_taken(struct client *c, struct server *s, const struct prep_stmt *taken, size_t total)
{
	enum scan_result room = room_to_rewrite(c, s, total);
	if (room != SCAN_OK)
		return room;
	static const uint8_t rest[] = PARSE_TAKEN_SQL "\0\0"; /* the text, its NUL, no parameter types */
	if (prep_put_parse(&s->wbuf, PARSE_TAKEN_NAME, rest, sizeof rest) < 0)
		return SCAN_BAD;
	struct server_expect *x = expect_push(s, EXPECT_PARSE, EXPECT_FORWARD);
	x->fake = true;
	x->hash = taken->hash;
	x->name_hash = taken->name_hash;
	buf_consume(&c->rbuf, total);
	return SCAN_OK;
}

/* A Parse (scan_client_message): judged, and with prepared-statement tracking a named one is
 * recorded and prepared on the server under tusk's name. */
static enum scan_result scan_parse(struct client *c, struct server *s, const struct scan_msg *msg, bool *pass)
{
	struct buf *b = &c->rbuf;
	const struct proto_hdr *h = msg->h;
	const uint8_t *m = msg->m;
	size_t avail = msg->avail, total = msg->total;
	uint32_t max = msg->max;
	bool rename = msg->rename;

	if (total > b->cap) {
		/* Too big to hold: fine while it is the unnamed statement, streamed as is. */
		if (avail < PROTO_HDR_LEN + 1)
			return SCAN_OK;
		if (rename && m[PROTO_HDR_LEN] != 0) {
			client_fail(c, "54000", "a named Parse message larger than buffer_size (%u bytes) cannot be pooled",
				    (unsigned)b->cap);
			return SCAN_CLOSED;
		}
		if (c->mode != POOL_MODE_SESSION)
			big_begin(c, s, 'P', total);
		relay_hooks_parsed(c, NULL, NULL, 0); /* not read: not judged */
		expect_push(s, EXPECT_PARSE, EXPECT_FORWARD);
		return advance(pass);
	}
	if (avail < total)
		return SCAN_OK;
	struct prep_parse p;
	if (prep_read_parse(m, avail, max, &p) <= 0)
		return refuse_message(c, h, m, avail);
	if (rename && p.name_len == 0 && p.nparams == 0 && prep_may_deallocate(p.query, p.query_len)) {
		enum scan_result dr = rewrite_deallocate(c, s, &p, total);
		if (dr != SCAN_BAD)
			return dr; /* handled (SCAN_OK), or must wait (SCAN_STALL) */
	}
	const struct prep_stmt *taken = rename && p.name_len ? prep_client_find(c->prep, p.name) : NULL;
	if (taken)
		return parse_taken(c, s, taken, total);
	uint8_t marks;
	c->parse_named = p.name_len > 0;
	bool noted = note_sql(c, s, p.query, p.query_len, &marks);
	c->parse_named = false;
	if (!noted)
		return SCAN_CLOSED;
	if (c->mode == POOL_MODE_SESSION && p.name_len > 0)
		note_named_parse(c, p.name, p.query, p.query_len);
	if (p.name_len == 0) {
		/* Its SETs were noted now (it runs at once); its text is kept for a second Bind. */
		bool again = (marks & MARK_SETS) && session_unnamed_keep(&c->session, p.query, p.query_len) == 0;
		c->unnamed_marks = (uint8_t)((marks & ~MARK_SETS) | (again ? MARK_SETS : 0));
	}
	relay_hooks_parsed(c, p.name, p.rest, p.rest_len);
	if (!rename || p.name_len == 0) {
		expect_push(s, EXPECT_PARSE, EXPECT_FORWARD);
		return advance(pass);
	}
	{
		enum scan_result room = room_to_rewrite(c, s, total);
		if (room != SCAN_OK)
			return room;
	}
	const struct prep_stmt *e;
	int rc = relay_prep_add(c, &p, &e);
	if (rc == -EDQUOT) {
		client_fail(c, "53400", "too many prepared statements on this connection");
		return SCAN_CLOSED;
	}
	if (rc < 0) {
		client_fail(c, "53200", "out of memory for prepared statements");
		return SCAN_CLOSED;
	}
	prep_client_set_flags(c->prep, e, marks);
	/* Prepared afresh even where the server holds a copy: PostgreSQL plans a new
	 * statement with the schema of the moment, and a copy from before a schema change
	 * would fail with 0A000 (the server's ParseComplete is the client's answer). */
	if (!prepare_on(s, e->hash, e->server_name, p.rest, p.rest_len, EXPECT_FORWARD, e->name_hash))
		return SCAN_BAD;
	prep_stmt_set_placed(e);
	buf_consume(b, total);
	return SCAN_OK;
}

/* A Bind of the unnamed statement: its Parse noted its SETs and RESETs, for its first run; a
 * later Bind of it (libpq's PQexecPrepared of "" again) runs them again (false: the client
 * had to be failed). */
static bool bind_unnamed_marks(struct client *c, struct server *s)
{
	uint8_t m = c->unnamed_marks;
	c->unnamed_marks |= MARK_BOUND;
	if ((m & MARK_SETS) && (m & MARK_BOUND)) {
		size_t len;
		const char *text = session_unnamed_text(&c->session, &len);
		if (text)
			return note_session(c, s, text, len, NULL);
	}
	return apply_marks(c, s, m & (uint8_t)~(MARK_SETS | MARK_BOUND), "", 0);
}

/* A Bind (scan_client_message): a tracked statement's is rewritten to tusk's name (and may
 * start a replay); the hooks see which text it runs. */
static enum scan_result scan_bind(struct client *c, struct server *s, const struct scan_msg *msg, bool *pass)
{
	struct buf *b = &c->rbuf;
	const struct proto_hdr *h = msg->h;
	const uint8_t *m = msg->m;
	size_t avail = msg->avail, total = msg->total;
	uint32_t max = msg->max;
	bool rename = msg->rename;

	if (!rename) {
		if (c->mode == POOL_MODE_SESSION && session_named_resets(&c->session)) {
			/* A named statement that RESETs runs now (note_named_parse). */
			struct prep_bind_head bh;
			ssize_t head = prep_read_bind_head(m, avail, max, &bh);
			if (head == 0)
				return SCAN_OK; /* its names are not all in yet */
			if (head > 0 && bh.stmt_len > 0 && session_named_reset_run(&c->session, bh.stmt) < 0)
				session_discard(&c->session); /* too many: as before, the server's default */
		}
		bool unnamed = bind_unnamed(m, avail);
		if (!relay_hooks_bind(c, m, avail, unnamed, NULL, 0)) {
			client_fail(c, "0A000", "a Bind of the unnamed statement whose Parse the cache answered is not supported");
			return SCAN_CLOSED;
		}
		if (unnamed && !bind_unnamed_marks(c, s))
			return SCAN_CLOSED;
		expect_push(s, EXPECT_BIND, EXPECT_FORWARD);
		return advance(pass);
	}
	struct prep_bind_head bh;
	ssize_t head = prep_read_bind_head(m, avail, max, &bh);
	if (head < 0)
		return refuse_message(c, h, m, avail);
	if (head == 0)
		return SCAN_OK;
	const struct prep_stmt *e = bh.stmt_len ? prep_client_find(c->prep, bh.stmt) : NULL;
	if (!e) {
		(void)relay_hooks_bind(c, m, avail, bh.stmt_len == 0, NULL, 0); /* refuses only in session pooling */
		/* Unnamed, or unknown: the server answers for it (26000 if unknown). */
		if (bh.stmt_len == 0 && !bind_unnamed_marks(c, s))
			return SCAN_CLOSED;
		s->bind_known = false;
		expect_push(s, EXPECT_BIND, EXPECT_FORWARD);
		return advance(pass);
	}
	{
		enum scan_result room = room_to_rewrite(c, s, e->body_len + (size_t)head);
		if (room != SCAN_OK)
			return room;
	}
	enum told_verdict v = told_check(s, e);
	if (v == TOLD_BAD)
		return SCAN_BAD;
	if (v == TOLD_WAIT)
		return SCAN_OK; /* nothing consumed: scanned again when the Describe's reply is in */
	/* Each run of the statement is judged as its text was when parsed (a function that
	 * takes a lock runs at every Execute, not at the Parse); a name prepared without a
	 * server (client.c) is judged at its first Bind. */
	const char *text = (const char *)e->body;
	size_t tlen = strnlen(text, e->body_len);
	if (!(e->flags & MARK_KNOWN)) {
		uint8_t marks;
		if (!note_session(c, s, text, tlen, &marks))
			return SCAN_CLOSED;
		prep_client_set_flags(c->prep, e, marks);
	} else if (!apply_marks(c, s, e->flags, text, tlen)) {
		return SCAN_CLOSED;
	}
	(void)relay_hooks_bind(c, m, avail, false, text, tlen);
	bool replay = v == TOLD_GO && replay_may_start(c, s);
	size_t mark = buf_len(&s->wbuf);
	if (prep_put_bind_head(&s->wbuf, &bh, v == TOLD_FAIL ? TOLD_FAIL_NAME : e->server_name) < 0)
		return SCAN_BAD;
	struct server_expect *x = expect_push(s, EXPECT_BIND, EXPECT_FORWARD);
	x->has_hash = true;
	x->hash = e->hash;
	x->fake = v == TOLD_FAIL;
	/* A Describe of its portal tells the client what the statement describes. */
	s->bind_known = v == TOLD_GO;
	s->bind_stmt = e->hash;
	s->bind_name = e->name_hash;
	s->bind_portal = XXH3_64bits(bh.portal, bh.portal_len);
	if (replay)
		replay_begin(s, x, mark, e);
	buf_consume(b, (size_t)head);
	/* The parameters follow unchanged, streamed. */
	c->c2s_remaining = (uint32_t)(total - (size_t)head);
	return SCAN_OK;
}

/* A Describe or Close (scan_client_message): of a tracked statement, rewritten to tusk's
 * name; a Close of one closes the server's copy only when no client of the pool names it. */
static enum scan_result scan_target(struct client *c, struct server *s, const struct scan_msg *msg, bool *pass)
{
	struct buf *b = &c->rbuf;
	const struct proto_hdr *h = msg->h;
	const uint8_t *m = msg->m;
	size_t avail = msg->avail, total = msg->total;
	bool rename = msg->rename;

	if (total > RELAY_TARGET_MAX) {
		/* Enough to tell a long name from garbage (the buffer holds far more). */
		if (avail < PROTO_HDR_LEN + 1 + PREP_NAME_MAX + 1)
			return SCAN_OK;
		return refuse_message(c, h, m, avail);
	}
	if (avail < total)
		return SCAN_OK;
	struct prep_target t;
	if (prep_read_target(m, avail, &t) <= 0)
		return refuse_message(c, h, m, avail);
	uint8_t kind = h->type == 'C' ? EXPECT_CLOSE : t.kind == 'S' ? EXPECT_DESCRIBE_STMT : EXPECT_DESCRIBE_PORTAL;
	if (h->type == 'C' && t.kind == 'S') {
		relay_hooks_close_stmt(c, t.name);
		session_named_reset_drop(&c->session, t.name);
	}
	const struct prep_stmt *e =
		rename && t.kind == 'S' && t.name_len ? prep_client_find(c->prep, t.name) : NULL;
	if (h->type == 'C' && rename && t.kind == 'S' && t.name_len) {
		/* Statements are shared on the server: Close forgets the client's name, and
		 * closes the server's copy only when no client of the pool names it any more
		 * (so a Parse of the same text after a schema change prepares it afresh). */
		if (c->c2s_scanned > 0 || !wbuf_room_for(s, 0))
			return SCAN_STALL;
		struct prep_hash gone;
		int closed = prep_client_close(c->prep, t.name, &gone);
		struct server_expect *x;
		if (closed == 1 && prep_server_holds(s->prep, gone)) {
			char name[PREP_SERVER_NAME_SIZE];
			prep_server_name(gone, name);
			if (prep_put_close_statement(&s->wbuf, name) < 0)
				return SCAN_BAD;
			bool stale = prep_server_stale(s->prep, gone);
			prep_server_forget(s->prep, gone);
			/* The server's CloseComplete is the client's answer. */
			x = expect_push(s, EXPECT_CLOSE, EXPECT_FORWARD);
			x->has_hash = true;
			x->hash = gone;
			x->stale = stale;
		} else {
			x = expect_push(s, EXPECT_CLOSE, EXPECT_INJECT);
		}
		/* Behind an error in this pipeline PostgreSQL skips the Close and the statement
		 * stays: the entry waits for the outcome (expect_skip_to_sync puts it back). */
		x->client_close = closed >= 0;
		buf_consume(b, total);
		return SCAN_OK;
	}
	if (!e) {
		struct server_expect *x = expect_push(s, kind, EXPECT_FORWARD);
		if (rename && h->type == 'D' && t.kind == 'P' && s->bind_known &&
		    s->bind_portal == XXH3_64bits(t.name, t.name_len)) {
			x->has_hash = true;
			x->hash = s->bind_stmt;
			x->name_hash = s->bind_name;
		}
		return advance(pass);
	}
	{
		enum scan_result room = room_to_rewrite(c, s, e->body_len);
		if (room != SCAN_OK)
			return room;
	}
	if (!ensure_prepared(s, e))
		return SCAN_BAD;
	bool replay = replay_may_start(c, s);
	size_t mark = buf_len(&s->wbuf);
	if (prep_put_describe_statement(&s->wbuf, e->server_name) < 0)
		return SCAN_BAD;
	struct server_expect *x = expect_push(s, kind, EXPECT_FORWARD);
	x->has_hash = true; /* a stale statement fails here too */
	x->hash = e->hash;
	x->name_hash = e->name_hash;
	if (replay)
		replay_begin(s, x, mark, e);
	buf_consume(b, total);
	return SCAN_OK;
}

/* One client message at the scan position that tusk must look into. Returns SCAN_OK after
 * advancing (or consuming), or why it stopped. */
static enum scan_result scan_client_message(struct client *c, struct server *s, const struct proto_hdr *h,
					    size_t avail)
{
	struct buf *b = &c->rbuf;
	const uint8_t *m = buf_head(b) + c->c2s_scanned;
	size_t total = (size_t)h->len + 1;
	uint32_t max = cfg_of(c)->max_message_size;
	bool rename = s->prep != NULL && c->prep_on;
	const struct scan_msg msg = { .h = h, .m = m, .avail = avail, .total = total, .max = max, .rename = rename };

	if (h->type != 'Q')
		note_extended_boundary(s, h->type); /* a Query only once it is known to go out */
	if (s->skipping && h->type != 'S') {
		/* Ignored by the server until the Sync: passed on as they are, owing nothing,
		 * and (statements never created) recorded nowhere. */
		size_t k = avail < total ? avail : total;
		c->c2s_scanned += k;
		c->c2s_remaining = (uint32_t)(total - k);
		return SCAN_OK;
	}

	if (h->type == 'Q' && total <= b->cap) {
		/* Everything below reads the text as a string of total - 6 bytes. */
		if (avail < total)
			return SCAN_OK;
		int bad = proto_check_query_body(m + PROTO_HDR_LEN, total - PROTO_HDR_LEN);
		if (bad < 0) {
			client_fail(c, "08P01", "%s", bad == PROTO_EMALFORMED
				    ? "invalid string in message (Query text without its terminating NUL)"
				    : "invalid message format (bytes after the end of a Query's text)");
			return SCAN_CLOSED;
		}
	}

	if (c->mode == POOL_MODE_STATEMENT && (h->type == 'Q' || h->type == 'P') && total <= b->cap) {
		if (avail < total)
			return SCAN_OK;
		const char *sql = (const char *)m + PROTO_HDR_LEN;
		if (h->type == 'P')
			sql += strnlen(sql, total - PROTO_HDR_LEN) + 1; /* past the statement name */
		if ((size_t)(sql - (const char *)m) < total && opens_transaction(sql, total - (size_t)(sql - (const char *)m))) {
			if (c->c2s_scanned > 0)
				return SCAN_STALL; /* answer it in order, after what went before */
			client_fail(c, "08P01", "transaction blocks are not allowed in statement pooling mode");
			return SCAN_CLOSED;
		}
	}

	switch (h->type) {
	case 'Q':
		if (total <= b->cap) {
			const char *sql;
			size_t len;
			if (avail < total)
				return SCAN_OK; /* wait for all of it */
			if (!relay_sql_of('Q', (const char *)m + PROTO_HDR_LEN, total - PROTO_HDR_LEN, &sql, &len))
				return SCAN_BAD;
			/* DEALLOCATE of a name only tusk's map holds: answered here (pool/prepared.c) */
			const char *tag = c->c2s_scanned == 0 && c->prep_on && prep_may_deallocate(sql, len)
						  ? prep_local_deallocate(c->prep, s->prep, sql, len)
						  : NULL;
			if (tag) {
				/* Answered in order by scan_server; the server never sees it. */
				struct server_expect *x = expect_push(s, EXPECT_QUERY, EXPECT_INJECT);
				x->all = strcmp(tag, "DEALLOCATE ALL") == 0;
				buf_consume(b, total);
				return SCAN_OK;
			}
			if (!note_sql(c, s, sql, len, NULL))
				return SCAN_CLOSED;
		} else if (c->mode != POOL_MODE_SESSION) {
			big_begin(c, s, 'Q', total);
		}
		c->unnamed_marks = 0; /* a Query drops the unnamed statement */
		note_extended_boundary(s, 'Q');
		expect_push(s, EXPECT_QUERY, EXPECT_FORWARD);
		s->pending_rfq++;
		break;
	case 'P': {
		bool pass = false;
		enum scan_result r = scan_parse(c, s, &msg, &pass);
		if (!pass)
			return r;
		break;
	}
	case 'B': {
		bool pass = false;
		enum scan_result r = scan_bind(c, s, &msg, &pass);
		if (!pass)
			return r;
		break;
	}
	case 'D':
	case 'C': {
		bool pass = false;
		enum scan_result r = scan_target(c, s, &msg, &pass);
		if (!pass)
			return r;
		break;
	}
	case 'E':
		expect_push(s, EXPECT_EXECUTE, EXPECT_FORWARD);
		break;
	case 'S':
		expect_push(s, EXPECT_SYNC, EXPECT_FORWARD);
		s->pending_rfq++;
		s->skipping = false;
		break;
	case 'F':
		relay_hooks_opaque(c);
		expect_push(s, EXPECT_FUNCTION, EXPECT_FORWARD);
		s->pending_rfq++;
		break;
	default:
		break; /* Flush, COPY data/done/fail: no reply of their own */
	}
	size_t k = avail < total ? avail : total;
	if (c->big)
		big_append(c, m, k, PROTO_HDR_LEN);
	c->c2s_scanned += k;
	c->c2s_remaining = (uint32_t)(total - k);
	if (c->big && c->c2s_remaining == 0 && !big_end(c, s))
		return SCAN_CLOSED;
	return SCAN_OK;
}

/* PostgreSQL keeps the first NAMEDATALEN - 1 bytes of a statement or portal name and drops the
 * rest without a word (the names key its hash tables): a longer name works there, and two that
 * share those bytes are one. So that a client sees the same through tusk, the name of a Parse,
 * Bind, Describe or Close at the scan position loses its bytes past PREP_NAME_MAX in rbuf,
 * before anything reads it: tusk's maps, the hooks and the server all see the name PostgreSQL
 * would keep (its errors quote the name whole where the server's quote it cut). A name must
 * arrive whole within RELAY_NAME_MAX bytes; a longer one fails the client. *h follows the cut.
 * SCAN_OK: done (or nothing to cut; a malformed message is left to its reader); SCAN_STALL: a
 * name's end has not arrived yet; SCAN_CLOSED: refused. */
static enum scan_result cut_names(struct client *c, struct proto_hdr *h, size_t avail)
{
	if (h->type != 'P' && h->type != 'B' && h->type != 'D' && h->type != 'C')
		return SCAN_OK;
	struct buf *b = &c->rbuf;
	size_t total = (size_t)h->len + 1;
	size_t have = avail < total ? avail : total;
	size_t off = PROTO_HDR_LEN + (h->type == 'D' || h->type == 'C');
	for (int i = 0; i < (h->type == 'B' ? 2 : 1); i++) {
		uint8_t *m = buf_head_mut(b) + c->c2s_scanned;
		if (off >= have)
			return have < total ? SCAN_STALL : SCAN_OK;
		const uint8_t *nul = memchr(m + off, 0, have - off);
		size_t len = nul ? (size_t)(nul - (m + off)) : have - off;
		if (len > RELAY_NAME_MAX) {
			char start[21]; /* printable ASCII only: the client decodes the message as text */
			for (size_t j = 0; j < sizeof start - 1; j++)
				start[j] = m[off + j] >= 0x20 && m[off + j] < 0x7f ? (char)m[off + j] : '?';
			start[sizeof start - 1] = '\0';
			bool portal = (h->type == 'B' && i == 0) || ((h->type == 'D' || h->type == 'C') && m[off - 1] == 'P');
			client_fail(c, "42622", "%s name \"%s...\" is too long (at most %d bytes)",
				    portal ? "portal" : "prepared statement", start, RELAY_NAME_MAX);
			return SCAN_CLOSED;
		}
		if (!nul)
			return have < total ? SCAN_STALL : SCAN_OK;
		if (len > PREP_NAME_MAX) {
			size_t cut = len - PREP_NAME_MAX;
			buf_cut(b, c->c2s_scanned + off + PREP_NAME_MAX, cut);
			h->len -= (uint32_t)cut;
			proto_store_be32(m + 1, h->len);
			total -= cut;
			have -= cut;
			len = PREP_NAME_MAX;
		}
		off += len + 1;
	}
	return SCAN_OK;
}

static enum scan_result scan_client(struct client *c, struct server *s)
{
	struct buf *b = &c->rbuf;

	while (c->c2s_scanned < buf_len(b)) {
		size_t avail = buf_len(b) - c->c2s_scanned;
		if (c->c2s_remaining > 0) {
			size_t k = avail < c->c2s_remaining ? avail : c->c2s_remaining;
			size_t from = c->c2s_scanned;
			if (c->big)
				big_append(c, buf_head(b) + c->c2s_scanned, k, 0);
			c->c2s_scanned += k;
			c->c2s_remaining -= (uint32_t)k;
			if (s->replay_state == REPLAY_RECORDING)
				replay_record(c, s, buf_len(&s->wbuf), from);
			if (c->big && c->c2s_remaining == 0 && !big_end(c, s))
				return SCAN_CLOSED;
			continue;
		}
		struct proto_hdr h;
		int r = relay_check_client_hdr(c, buf_head(b) + c->c2s_scanned, avail, &h);
		if (r == 0)
			break;
		if (r < 0)
			return SCAN_CLOSED;
		if (h.type == 'X')
			return c->c2s_scanned == 0 ? SCAN_TERMINATE : SCAN_STALL;
		if (!expect_room(s, SCAN_EXPECT_ROOM))
			return SCAN_STALL; /* the client is far ahead: let replies drain first */
		enum scan_result cut = cut_names(c, &h, avail);
		if (cut == SCAN_CLOSED)
			return cut;
		if (cut == SCAN_STALL)
			break; /* the rest of a long name is on its way */
		avail = buf_len(b) - c->c2s_scanned;
		size_t before_len = buf_len(b), before_scanned = c->c2s_scanned;
		size_t wbuf_before = buf_len(&s->wbuf);
		enum scan_result res = scan_client_message(c, s, &h, avail);
		if (res == SCAN_CLOSED || res == SCAN_BAD)
			return res; /* the client (and with it the server) may be gone */
		if (s->replay_state == REPLAY_START || s->replay_state == REPLAY_RECORDING) {
			/* A message that consumed its head (a rewritten Bind) sent nothing scanned. */
			replay_record(c, s, wbuf_before, buf_len(b) == before_len ? before_scanned : c->c2s_scanned);
			if (h.type == 'S' && s->replay_state == REPLAY_RECORDING && c->c2s_remaining == 0)
				s->replay_state = REPLAY_COMPLETE;
			else if (h.type == 'Q' || h.type == 'F' || h.type == 'd' || h.type == 'c' || h.type == 'f')
				s->replay_state = REPLAY_GAVE_UP;
		}
		if (res != SCAN_OK)
			return res;
		if (buf_len(b) == before_len && c->c2s_scanned == before_scanned)
			break; /* waiting for the rest of a message it must see whole */
	}
	return SCAN_OK;
}

/* ---- server to client ---- */

/* stats: a request that owes a ReadyForQuery went out; time it and its transaction. */
static void stats_requests_sent(struct client *c, const struct server *s)
{
	if (s->pending_rfq == 0 || c->query_start > 0)
		return;
	c->query_start = ev_now(c->worker->loop);
	if (c->xact_start == 0)
		c->xact_start = c->query_start;
}

/* stats: a ReadyForQuery ends one query (the oldest unanswered) and, with 'I', its
 * transaction; pipelined requests still owed are timed from now. */
static void stats_ready_for_query(struct client *c, const struct server *s, uint8_t status)
{
	struct stats_pool *sp = pool_stats(c->pool);
	double now = ev_now(c->worker->loop);
	if (c->query_start > 0) {
		stats_count_query(sp, now - c->query_start);
		c->query_start = s->pending_rfq > 0 ? now : 0;
	}
	if (status == 'I' && c->xact_start > 0) {
		stats_count_xact(sp, now - c->xact_start);
		c->xact_start = s->pending_rfq > 0 ? now : 0;
	}
}

static int any_restored(void *arg, const char *name, const char *value)
{
	(void)arg;
	(void)name;
	(void)value;
	return 1;
}

/* session_restores_each: whether arg (a parameter's name) is among them. */
static int restores_name(void *arg, const char *name, const char *value)
{
	(void)value;
	return strcasecmp(name, arg) == 0;
}

static int tell_restored(void *arg, const char *name, const char *value)
{
	struct client *c = arg;
	if (proto_put_parameter_status(&c->wbuf, name, value) < 0)
		return -1;
	relay_note_param(c, name, value); /* how the client's next SQL reads */
	return 0;
}

static void on_ready_for_query(struct client *c, struct server *s, uint8_t status)
{
	s->tx_status = status;
	if (s->pending_rfq > 0)
		s->pending_rfq--;
	/* Every reply is in, ParameterStatus included: the session's settings are known again. */
	if (s->pending_rfq == 0) {
		c->lex_pending = false;
		c->rollback_to_owed = 0; /* answered, or skipped after an error */
	}
	stats_ready_for_query(c, s, status);
	c->cancel_deferred = false; /* the request it was for is over */
	c->cancel_again = 0;
	c->active_at = ev_now(c->worker->loop); /* client_idle_timeout counts from here */
	c->copy_in = false;
	if (status == 'E')
		c->tx_failed = true;
	if (status == 'I') {
		relay_hooks_ready(c, s->pending_rfq == 0);
		/* A committed RESET goes back to the client's startup value, which the server
		 * does not have: the next attach makes a server its session first, and one it
		 * keeps is made so again before its next request (transaction_over). */
		if (c->tx_failed)
			session_discard(&c->session);
		else
			session_commit_to_startup(&c->session);
		c->tx_failed = false;
	}
}

/* One server message at the scan position, as the per-type scanners below see it. */
struct scan_reply {
	struct proto_hdr h;
	const uint8_t *m; /* its first byte */
	size_t avail;     /* bytes of it read */
	size_t total;     /* its size, header included */
};

/* What scan_server does after a per-type scanner: forward the message (PASS; *drop: consume
 * it instead), look at the queue again (AGAIN), or return the scanner's result (STOP). */
enum reply_next { REPLY_PASS, REPLY_AGAIN, REPLY_STOP };

static enum scan_result reply_pass(enum reply_next *next)
{
	*next = REPLY_PASS;
	return SCAN_OK;
}

static enum scan_result reply_again(enum reply_next *next)
{
	*next = REPLY_AGAIN;
	return SCAN_OK;
}

/* What tusk answers itself at the head of the reply queue (scan_server): a DEALLOCATE's tag
 * and ReadyForQuery, or a ParseComplete/CloseComplete the server never sends. */
static enum scan_result reply_inject(struct client *c, struct server *s, struct server_expect *e, enum reply_next *next)
{
	*next = REPLY_STOP;
		if (c->s2c_scanned > 0)
			return SCAN_STALL;
		int rc;
		if (e->kind == EXPECT_QUERY) {
			/* A DEALLOCATE tusk answers: tag, then ReadyForQuery with the status the
			 * server was in before it (nothing changed on the server). */
			size_t room = buf_room(&c->wbuf);
			if (room < 32)
				return SCAN_STALL;
			rc = proto_put_command_complete(&c->wbuf, e->all ? "DEALLOCATE ALL" : "DEALLOCATE");
			if (rc == 0)
				rc = proto_put_ready(&c->wbuf, s->tx_status ? s->tx_status : 'I');
			expect_pop(s);
			if (c->mode != POOL_MODE_SESSION && server_settled(s) && !c->pinned) {
				c->release_pending = true;
				return reply_pass(next);
			}
			return reply_again(next);
		}
		rc = e->kind == EXPECT_PARSE ? prep_put_parse_complete(&c->wbuf) : prep_put_close_complete(&c->wbuf);
		if (rc < 0)
			return SCAN_STALL;
		if (e->client_close)
			prep_client_close_done(c->prep);
		expect_pop(s);
		return reply_again(next);
}

/* A ReadyForQuery (scan_server): a retried batch's end is dropped; statement pooling refuses
 * a transaction block; a commit may wait for the hooks (commit_wait). */
static enum scan_result reply_ready(struct client *c, struct server *s, struct server_expect *e, const struct scan_reply *r,
				   enum reply_next *next, bool *drop)
{
	struct buf *b = &s->rbuf;
	const uint8_t *m = r->m;
	const struct proto_hdr *h = &r->h;
	size_t avail = r->avail, total = r->total;
	(void)drop;
	*next = REPLY_STOP;
	if (h->len != 5)
		return SCAN_BAD;
	if (avail < total)
		return SCAN_OK;
	if (e && e->kind == EXPECT_SYNC && e->action == EXPECT_DROP) {
		/* The end of a batch that failed on a stale statement and went again. */
		if (c->s2c_scanned > 0)
			return SCAN_STALL;
		s->tx_status = m[PROTO_HDR_LEN];
		if (s->pending_rfq > 0)
			s->pending_rfq--;
		expect_pop(s);
		buf_consume(b, total);
		return reply_again(next);
	}
	s->replay_state = REPLAY_IDLE; /* its batch (if any) is over */
	if (c->mode == POOL_MODE_STATEMENT && m[PROTO_HDR_LEN] != 'I' && s->pending_rfq <= 1 &&
	    s->expect_count <= 1) {
		/* A transaction block in statement pooling: refuse it while the client still
		 * waits for this ReadyForQuery, so the error is the answer it reads (a FATAL
		 * arriving later, between requests, is lost by libpq). The server is rolled
		 * back when it is released. */
		if (c->s2c_scanned > 0)
			return SCAN_STALL;
		if (e && ends_with_ready(e->kind))
			expect_pop(s);
		s->tx_status = m[PROTO_HDR_LEN];
		s->pending_rfq = 0;
		buf_consume(b, total);
		client_fail(c, "08P01", "transaction blocks are not allowed in statement pooling mode");
		return SCAN_CLOSED;
	}
	/* A commit reaches its client only once no tusk can serve what it changed:
	 * with L2, when Redis has its INCRs. Scanned bytes before it go out meanwhile;
	 * relay_resume comes back here. */
	if (m[PROTO_HDR_LEN] == 'I' && relay_hooks_commit_wait(c, s->pending_rfq <= 1))
		return SCAN_OK;
	if (m[PROTO_HDR_LEN] == 'I' && !c->tx_failed && c->session.pending_len &&
	    session_restores_each(&c->session, any_restored, NULL)) {
		/* The server told the client its default for what RESET touched; PostgreSQL
		 * direct tells the startup value, which the commit restores: told again first. */
		if (c->s2c_scanned > 0)
			return SCAN_STALL;
		if (session_restores_each(&c->session, tell_restored, c) < 0)
			return SCAN_STALL;
	}
	if (e && ends_with_ready(e->kind))
		expect_pop(s);
	on_ready_for_query(c, s, m[PROTO_HDR_LEN]);
	return reply_pass(next);
}

/* The 42P05 a Parse of a name the client uses already gets (parse_taken), in c->wbuf: as
 * PostgreSQL words it, with its routine. -1: no room now. */
static int put_name_taken(struct client *c, const struct server_expect *e)
{
	const char *name = prep_client_name_of(c->prep, e->name_hash, e->hash);
	char body[PREP_NAME_MAX + 160];
	/* A name closed meanwhile (a Close behind the Parse, which the server skips) is not known
	 * any more: the message says so without it. */
	int n = snprintf(body, sizeof body, "SERROR%cVERROR%cC42P05%cMprepared statement \"%s\" already exists%c"
		       "Fprepare.c%cRStorePreparedStatement%c", 0, 0, 0, name ? name : "", 0, 0, 0);
	const struct proto_part part = { body, (size_t)n + 1 }; /* the last NUL ends the fields */
	return proto_put_parts(&c->wbuf, 'E', 0, &part, 1) < 0 ? -1 : 0;
}

/* Whether the ErrorResponse m (whole, total bytes) has SQLSTATE state. */
static bool error_is(const uint8_t *m, size_t total, const char *state)
{
	struct proto_error_fields f;
	return error_read(m, total, &f) && strcmp(f.sqlstate, state) == 0;
}

/* An ErrorResponse (scan_server): a Bind sent to fail becomes 0A000, a Parse sent to fail
 * 42P05 (or, in a failed transaction, stays its 25P02), a stale statement may be healed (the
 * request goes again), the hooks see the rest. */
static enum scan_result reply_error(struct client *c, struct server *s, struct server_expect *e, const struct scan_reply *r,
				   enum reply_next *next, bool *drop)
{
	struct buf *b = &s->rbuf;
	const uint8_t *m = r->m;
	size_t avail = r->avail, total = r->total;
	*next = REPLY_STOP;
	const uint8_t *whole = NULL; /* the ErrorResponse for the hooks, when read whole */
	s->desc_params = 0; /* a statement Describe that failed after it */
	if (e && e->fake && total <= b->cap) {
		if (c->s2c_scanned > 0)
			return SCAN_STALL;
		if (avail < total)
			return SCAN_OK;
		if (e->kind == EXPECT_PARSE) {
			/* A Parse sent to fail (parse_taken): its 42P01 is the client's 42P05; any other
			 * error (25P02 in a failed block) is the client's as it is. */
			if (error_is(m, total, "42P01")) {
				if (put_name_taken(c, e) < 0)
					return SCAN_STALL;
				*drop = true;
			}
		} else {
			/* A Bind sent to fail (told_check): the client gets PostgreSQL's 0A000, with its
			 * routine (R): drivers tell this error from other 0A000s by it and then prepare
			 * again (pgjdbc's willHealViaReparse, asyncpg's InvalidCachedStatementError);
			 * without it pgjdbc and asyncpg gave up where PostgreSQL direct healed. */
			static const char body[] = "SERROR\0VERROR\0C0A000\0Mcached plan must not change result type\0"
						   "Fplancache.c\0RRevalidateCachedQuery\0";
			const struct proto_part part = { body, sizeof body }; /* its NUL ends the fields */
			if (proto_put_parts(&c->wbuf, 'E', 0, &part, 1) < 0)
				return SCAN_STALL;
			*drop = true;
		}
		e->fake = false;
		if (*drop) {
			client_count_error(c, NULL, 0);
		} else {
			client_count_error(c, m, total);
			whole = m;
		}
	} else if (total <= RELAY_INSPECT_MAX && total <= b->cap) { /* stats: its SQLSTATE */
		if (avail < total)
			return SCAN_OK;
		int healed = heal_stale(c, s, e, m, total, total);
		if (healed < 0)
			return SCAN_STALL;
		if (healed > 0)
			return reply_again(next); /* consumed; the request went again */
		client_count_error(c, m, total);
		whole = m;
	} else {
		client_count_error(c, NULL, 0);
	}
	/* the split: a 25006 from a primary; the cache: a failed Parse leaves no statement */
	relay_hooks_error(c, s, whole, total);
	c->tx_failed = true;
	if (e && !ends_with_ready(e->kind)) {
		expect_skip_to_sync(c, s);
		/* No Sync sent yet: the server will ignore what the client sends until
		 * one comes, so those messages must owe nothing (scan_client). */
		if (!expect_head(s))
			s->skipping = true;
	}
	c->copy_in = false;
	return reply_pass(next);
}

/* A ParameterDescription (scan_server): of a statement Describe, noted for the statement's
 * description (a stale one is held until what follows shows it can go again). */
static enum scan_result reply_param_desc(struct client *c, struct server *s, struct server_expect *e, const struct scan_reply *r,
				        enum reply_next *next, bool *drop)
{
	struct buf *b = &s->rbuf;
	const uint8_t *m = r->m;
	size_t avail = r->avail, total = r->total;
	*next = REPLY_STOP;
	if (e && e->kind == EXPECT_DESCRIBE_STMT && e->replay && s->replay_state == REPLAY_COMPLETE &&
	    !s->replay_retried && total + RELAY_STALE_ERROR_MAX <= b->cap) {
		/* A stale statement fails after its ParameterDescription: hold it until
		 * what follows shows whether the Describe can go again. */
		struct proto_hdr nh;
		if (avail < total + PROTO_HDR_LEN)
			return SCAN_OK;
		if (proto_read_hdr(m + total, avail - total, RELAY_STALE_ERROR_MAX, &nh) > 0 && nh.type == 'E') {
			size_t etotal = (size_t)nh.len + 1;
			if (avail < total + etotal)
				return SCAN_OK;
			int healed = heal_stale(c, s, e, m + total, etotal, total + etotal);
			if (healed < 0)
				return SCAN_STALL;
			if (healed > 0)
				return reply_again(next);
		}
	}
	if (e && e->kind == EXPECT_DESCRIBE_STMT) {
		if (e->action == EXPECT_DROP) {
			if (c->s2c_scanned > 0)
				return SCAN_STALL;
			*drop = true;
		}
		s->desc_params = 0;
		if (e->has_hash && total <= RELAY_INSPECT_MAX && total <= b->cap) {
			if (avail < total)
				return SCAN_OK;
			s->desc_params = prep_desc_params(m + PROTO_HDR_LEN, total - PROTO_HDR_LEN);
		}
		if (drop && avail < total)
			return SCAN_OK;
		e->kind = EXPECT_DESCRIBE_PORTAL;
	}
	return reply_pass(next);
}

/* A RowDescription or NoData (scan_server): ends a Describe, whose result the statement
 * maps keep. */
static enum scan_result reply_row_desc(struct client *c, struct server *s, struct server_expect *e, const struct scan_reply *r,
				      enum reply_next *next, bool *drop)
{
	struct buf *b = &s->rbuf;
	const uint8_t *m = r->m;
	const struct proto_hdr *h = &r->h;
	size_t avail = r->avail, total = r->total;
	*next = REPLY_STOP;
	if (e && e->kind == EXPECT_DESCRIBE_PORTAL) {
		if (e->action == EXPECT_DROP) {
			if (c->s2c_scanned > 0)
				return SCAN_STALL;
			*drop = true;
		}
		if (e->has_hash && s->prep && (h->type == 'n' || (total <= RELAY_INSPECT_MAX && total <= b->cap))) {
			if (avail < total)
				return SCAN_OK;
			struct prep_desc d = { s->desc_params, h->type == 'n' ? prep_desc_rows(NULL, 0)
				: prep_desc_rows(m + PROTO_HDR_LEN, total - PROTO_HDR_LEN) };
			prep_server_set_desc(s->prep, e->hash, d);
			if (e->name_hash)
				prep_client_tell(c->prep, e->name_hash, e->hash, d);
		}
		if (drop && avail < total)
			return SCAN_OK;
		s->desc_params = 0;
		expect_pop(s);
	}
	return reply_pass(next);
}

/* One server message at the scan position (scan_server): what it tells tusk, by type. */
static enum scan_result scan_reply(struct client *c, struct server *s, struct server_expect *e, const struct scan_reply *r,
				     enum reply_next *next, bool *drop)
{
	struct buf *b = &s->rbuf;
	const uint8_t *m = r->m;
	const struct proto_hdr *h = &r->h;
	size_t avail = r->avail, total = r->total;

	*next = REPLY_STOP;
	switch (h->type) {
	case 'Z':
		return reply_ready(c, s, e, r, next, drop);
	case 'S':
		/* Read whole only when it can be: one larger than the read buffer (buffer_size
		 * may be 4 kB) would never be complete there, and the relay would stall. */
		if (total <= RELAY_INSPECT_MAX && total <= b->cap) {
			const char *name, *value;
			if (avail < total)
				return SCAN_OK;
			if (proto_parse_parameter_status(m + PROTO_HDR_LEN, total - PROTO_HDR_LEN, &name, &value) == 0) {
				/* A RESET of what the startup packet gave: the server went to its
				 * default (its value at its login), which PostgreSQL direct never shows
				 * (it goes back to the startup value, which tusk tells instead:
				 * tell_restored, tell_put_back). Passed on, a driver would see a value
				 * it refuses (pgjdbc closes on a client_encoding other than UTF8 or a
				 * DateStyle not ISO). Any other value (a SET LOCAL after the RESET) is
				 * the client's own and passes. */
				bool transient = c->greeted && !c->tx_failed && c->session.pending_len &&
						 server_param_is_reset_value(s, name, value) &&
						 session_restores_each(&c->session, restores_name, (void *)name) > 0;
				if (transient && c->s2c_scanned > 0)
					return SCAN_STALL; /* what is before it goes out first */
				server_set_param(s, name, value);
				/* The client changed it (SET, RESET, DISCARD, set_config, a function):
				 * it is theirs to keep, and the next client's sync undoes it. */
				if (c->greeted && !session_param_read_only(name)) {
					if (session_param_set(&c->session, name, value) < 0)
						return SCAN_BAD;
					relay_note_param(c, name, value);
				}
				*drop = transient;
			}
		}
		return reply_pass(next);
	case 'E':
		return reply_error(c, s, e, r, next, drop);
	case '1':
	case '3':
		if (!e || e->kind != (h->type == '1' ? EXPECT_PARSE : EXPECT_CLOSE)) {
			log_warn(c->id, c->ctx, "server %s replied '%c' where %s was owed (%u queued)", s->id, h->type,
				 e ? expect_name(e->kind) : "nothing", s->expect_count);
			expect_dump(c, s);
			return SCAN_BAD;
		}
		if (e->action == EXPECT_DROP) {
			if (c->s2c_scanned > 0)
				return SCAN_STALL;
			if (avail < total)
				return SCAN_OK;
			*drop = true;
		}
		if (e->client_close)
			prep_client_close_done(c->prep);
		expect_pop(s);
		return reply_pass(next);
	case '2':
		if (!e || e->kind != EXPECT_BIND) {
			log_warn(c->id, c->ctx, "server %s replied '2' where %s was owed (%u queued)", s->id,
				 e ? expect_name(e->kind) : "nothing", s->expect_count);
			expect_dump(c, s);
			return SCAN_BAD;
		}
		expect_pop(s);
		return reply_pass(next);
	case 't':
		return reply_param_desc(c, s, e, r, next, drop);
	case 'T':
	case 'n':
		return reply_row_desc(c, s, e, r, next, drop);
	case 'C':
		/* Session changes are pending in this transaction: a ROLLBACK (or a COMMIT of
		 * a failed transaction, which reports ROLLBACK too) undoes them. The tag is
		 * the server's own word for it, whatever statement the client used. */
		if ((c->session.pending_len || c->tx_undo_watch || c->rollback_to_owed) && total <= RELAY_INSPECT_MAX) {
			if (avail < total)
				return SCAN_OK;
			/* ROLLBACK TO SAVEPOINT's tag is ROLLBACK too: it leaves the transaction
			 * healthy (an error before it made it fail) and going on. */
			if (total - PROTO_HDR_LEN >= 9 && memcmp(m + PROTO_HDR_LEN, "ROLLBACK", 9) == 0) {
				c->tx_failed = c->rollback_to_owed == 0;
				if (c->rollback_to_owed)
					c->rollback_to_owed--;
			}
		}
		if (e && e->kind == EXPECT_EXECUTE)
			expect_pop(s);
		return reply_pass(next);
	case 'I':
	case 's':
		if (e && e->kind == EXPECT_EXECUTE)
			expect_pop(s);
		return reply_pass(next);
	case 'G':
		c->copy_in = true;
		return reply_pass(next);
	default:
		return reply_pass(next);
	}
	return reply_pass(next);
}

static enum scan_result scan_server(struct client *c, struct server *s)
{
	struct buf *b = &s->rbuf;
	uint32_t max = cfg_of(c)->max_message_size;

	for (;;) {
		struct server_expect *e = expect_head(s);
		if (c->s2c_remaining == 0 && e && e->action == EXPECT_INJECT) {
			enum reply_next next;
			enum scan_result rr = reply_inject(c, s, e, &next);
			if (next == REPLY_STOP)
				return rr;
			if (next == REPLY_AGAIN)
				continue;
			break;
		}
		if (c->s2c_scanned >= buf_len(b) || c->release_pending)
			break;
		size_t avail = buf_len(b) - c->s2c_scanned;
		if (c->s2c_remaining > 0) {
			size_t k = avail < c->s2c_remaining ? avail : c->s2c_remaining;
			relay_hooks_scanned(c, buf_head(b) + c->s2c_scanned, k);
			c->s2c_scanned += k;
			c->s2c_remaining -= (uint32_t)k;
			continue;
		}
		const uint8_t *m = buf_head(b) + c->s2c_scanned;
		struct proto_hdr h;
		ssize_t r = proto_read_hdr(m, avail, max, &h);
		if (r == 0)
			break;
		if (r < 0)
			return SCAN_BAD;
		size_t total = (size_t)h.len + 1;
		bool drop = false;
		const struct scan_reply rep = { .h = h, .m = m, .avail = avail, .total = total };

		enum reply_next next;
		enum scan_result rr = scan_reply(c, s, e, &rep, &next, &drop);
		if (next == REPLY_STOP)
			return rr;
		if (next == REPLY_AGAIN)
			continue;
		if (drop) {
			buf_consume(b, total);
			continue;
		}
		size_t k = avail < total ? avail : total;
		relay_hooks_scanned(c, m, k); /* may end a flight this client leads */
		c->s2c_scanned += k;
		c->s2c_remaining = (uint32_t)(total - k);

		if (h.type == 'Z' && c->session.resync && server_settled(s) && (c->mode == POOL_MODE_SESSION || c->pinned)) {
			c->release_pending = true; /* transaction_over: resync_kept */
			break;
		}
		if (h.type == 'Z' && server_resting_in(s, 'T') && session_restore_owed(&c->session)) {
			c->release_pending = true; /* transaction_over: resync_kept */
			break;
		}
		if (h.type == 'Z' && c->mode != POOL_MODE_SESSION) {
			if (server_settled(s) && !c->pinned) {
				c->release_pending = true;
				break;
			}
			/* Nothing owed, and the server stays: it waits on its client. */
			if (!s->resting && server_quiet(s))
				pool_server_rest(s, true);
		}
	}
	return SCAN_OK;
}

/* Nothing owed either way, nothing half-sent: the server can go to another client; or, inside
 * a transaction, take tusk's own statements before the client's next (resync_kept). */
static bool releasable(const struct client *c, const struct server *s)
{
	return (server_settled(s) || server_resting_in(s, 'T')) && c->c2s_scanned == 0 && c->c2s_remaining == 0 && buf_empty(&s->wbuf);
}

/* A cancel the client sent for its transaction's last query is still on its way (cancel.c):
 * the query ended before it. PostgreSQL cancels whatever runs when it lands, and what runs
 * next on s after a transaction is tusk's own: the session state check (a failed one resets
 * the session, and the client loses the advisory lock its function took), read-your-writes'
 * fetch of the WAL position, a clean-up. So the server stays the client's (release_pending,
 * its next bytes held by pump_c2s) until PostgreSQL has taken the cancel, which an idle
 * session drops; relay_cancel_done then resumes the release. */
static bool release_waits_for_cancel(const struct server *s)
{
	return s->cancels != NULL;
}

static void server_lost(struct client *c, struct server *s, const char *reason)
{
	char sid[ID_LEN];
	memcpy(sid, s->id, ID_LEN);
	/* Whatever the server said last (often its own FATAL) goes out first. */
	c->release_pending = false;
	if (scan_server(c, s) != SCAN_CLOSED) {
		(void)flush_buf(c->fd, &c->tls, &c->wbuf);
		if (buf_empty(&c->wbuf))
			(void)write_head(c->fd, &c->tls, &s->rbuf, &c->s2c_scanned);
	} else {
		return;
	}
	c->server = NULL;
	s->owner = NULL;
	server_close(s, reason);
	client_fail(c, "08006", "server connection %s %s", sid, reason);
}

/* The reply queue is full: the client is read again only once replies come. Replies to a
 * batch not yet synced stay in the server's output buffer (it flushes at Sync, Flush or
 * when 8 kB are due), so with no ReadyForQuery owed they might never come, and the client,
 * waiting for them behind its own Sync that tusk has not read, would wait for ever. A Flush
 * (no reply of its own, no effect on the transaction) makes the server send them. Returns
 * false when c was closed. Sent again at each round that finds the queue still full: 5
 * bytes, and only while the server owes no ReadyForQuery. */
static bool flush_unsynced_replies(struct client *c, struct server *s)
{
	static const uint8_t flush[PROTO_HDR_LEN] = { 'H', 0, 0, 0, 4 };

	if (s->pending_rfq > 0)
		return true;
	if (buf_append(&s->wbuf, flush, sizeof flush) < 0 || flush_buf(s->fd, &s->tls, &s->wbuf) < 0) {
		server_lost(c, s, "closed while writing to it");
		return false;
	}
	return true;
}

/* Move client bytes (after tusk's own) to the server. Returns false when c was closed. */
static bool pump_c2s(struct client *c, struct server *s)
{
	for (;;) {
		/* A cancel for s is on its way (cancel.c): PostgreSQL signals the backend twice (its
		 * pid, then its process group), and a sender preempted in between lands the second
		 * signal on whatever runs next. Nothing new goes to s before PostgreSQL closes the
		 * cancel's connection, both signals sent (relay_cancel_done resumes). */
		if (s->cancels && c->c2s_scanned == 0 && c->c2s_remaining == 0 && buf_empty(&s->wbuf))
			return true;
		enum scan_result r = scan_client(c, s);
		/* stats: what goes to the server below, rewritten messages included */
		size_t unsent = buf_len(&s->wbuf) + c->c2s_scanned;
		if (s->resting && unsent > 0)
			pool_server_rest(s, false); /* it works again (pool_server_rest) */
		switch (r) {
		case SCAN_BAD:
			client_fail(c, "08P01", "invalid message from client");
			return false;
		case SCAN_CLOSED:
			return false;
		case SCAN_TERMINATE:
			buf_consume(&c->rbuf, PROTO_HDR_LEN);
			client_close(c, "client terminated the session");
			return false;
		default:
			break;
		}
		/* Tusk's own bytes (a rewritten Bind, a replayed Parse) and the client's behind
		 * them go in one write when those are few: two writes cost a system call more and
		 * can wake the server twice (prepared mode wrote 3 times per transaction, not 2). */
		if (!buf_empty(&s->wbuf) && c->c2s_scanned > 0 && c->c2s_scanned <= RELAY_COALESCE_MAX &&
		    buf_append(&s->wbuf, buf_head(&c->rbuf), c->c2s_scanned) == 0) {
			buf_consume(&c->rbuf, c->c2s_scanned);
			c->c2s_scanned = 0;
		}
		if (flush_buf(s->fd, &s->tls, &s->wbuf) < 0 ||
		    (buf_empty(&s->wbuf) && write_head(s->fd, &s->tls, &c->rbuf, &c->c2s_scanned) < 0)) {
			server_lost(c, s, "closed while writing to it");
			return false;
		}
		stats_add_received(pool_stats(c->pool), unsent - (buf_len(&s->wbuf) + c->c2s_scanned));
		stats_requests_sent(c, s);
		/* Go round again only if a stall has cleared: everything scanned went out. */
		if (r != SCAN_STALL && !(c->c2s_scanned == 0 && c->c2s_remaining == 0 &&
					 buf_len(&c->rbuf) >= PROTO_HDR_LEN && buf_head(&c->rbuf)[0] == 'X'))
			return true;
		if (c->c2s_scanned > 0 || !buf_empty(&s->wbuf))
			return true;
		if (!expect_room(s, SCAN_EXPECT_ROOM))
			return flush_unsynced_replies(c, s);
	}
}

/* Move server bytes (after tusk's own) to the client. Returns false when c was closed or
 * the server was released (c->server changed). */
static bool pump_s2c(struct client *c, struct server *s)
{
	size_t unsent = buf_len(&c->wbuf); /* stats: c->wbuf at the top of each round */
	for (;;) {
		if (flush_buf(c->fd, &c->tls, &c->wbuf) < 0) {
			client_close(c, "write to client failed");
			return false;
		}
		stats_add_sent(pool_stats(c->pool), unsent - buf_len(&c->wbuf));
		if (!buf_empty(&c->wbuf))
			return true;
		enum scan_result r = scan_server(c, s);
		if (r == SCAN_CLOSED)
			return false;
		if (r == SCAN_BAD) {
			server_lost(c, s, "sent a message out of order or malformed");
			return false;
		}
		/* stats: what goes to the client below (an early release's copy is counted when
		 * client.c writes it) */
		size_t to_write = buf_len(&c->wbuf) + c->s2c_scanned;
		/* The transaction's last reply is small (the usual case): move it to the client's
		 * buffer and release the server before the client can even read its answer, so
		 * its next request (or another client's) finds the server back in the pool. */
		if (c->release_pending && c->s2c_scanned <= RELAY_EARLY_RELEASE_MAX && releasable(c, s) &&
		    !release_waits_for_cancel(s) && buf_append(&c->wbuf, buf_head(&s->rbuf), c->s2c_scanned) == 0) {
			buf_consume(&s->rbuf, c->s2c_scanned);
			c->s2c_scanned = 0;
			transaction_over(c, s);
			return false;
		}
		if (flush_buf(c->fd, &c->tls, &c->wbuf) < 0 ||
		    (buf_empty(&c->wbuf) && write_head(c->fd, &c->tls, &s->rbuf, &c->s2c_scanned) < 0)) {
			client_close(c, "write to client failed");
			return false;
		}
		stats_add_sent(pool_stats(c->pool), to_write - (buf_len(&c->wbuf) + c->s2c_scanned));
		unsent = buf_len(&c->wbuf);
		if (c->release_pending && c->s2c_scanned == 0 && buf_empty(&c->wbuf)) {
			/* The client may have sent more since the final ReadyForQuery was scanned: then
			 * the transaction (or the next one) goes on here. */
			if (releasable(c, s)) {
				if (release_waits_for_cancel(s))
					return true;
				transaction_over(c, s);
				return false;
			}
			c->release_pending = false;
			continue;
		}
		if (r != SCAN_STALL || c->s2c_scanned > 0 || !buf_empty(&c->wbuf))
			return true;
	}
}

/* Whether pump_s2c would find nothing to do: nothing for the client in its buffer or in the
 * server's, no early release due, and no reply tusk gives itself at the head of the queue.
 * Right after a request goes out (every relay round that starts with the client's bytes),
 * that is the usual case, and the call costs ~110 instructions for nothing (issue 28). */
static bool s2c_idle(const struct client *c, const struct server *s)
{
	if (!buf_empty(&c->wbuf) || !buf_empty(&s->rbuf) || c->release_pending)
		return false;
	const struct server_expect *e = s->expect_count ? &s->expect[s->expect_head] : NULL;
	return c->s2c_remaining > 0 || !e || e->action != EXPECT_INJECT;
}

static void update_both(struct client *c, struct server *s)
{
	client_update_io(c);
	server_update_io(c, s);
}

/* ---- never a client waiting for what will not come ----
 *
 * A relay round ends waiting for an event: the server taking bytes, the server answering a
 * Sync or Query sent, or the client taking bytes or sending more. A whole client message
 * left unscanned while none of those is pending would wait for ever: the server owes no
 * ReadyForQuery (so it sends nothing more: replies to an unsynced batch stay in its buffer)
 * and the client waits for the answer to that very message. */
static bool client_request_stranded(const struct client *c, const struct server *s)
{
	struct proto_hdr h;
	size_t avail = buf_len(&c->rbuf);

	if (c->server != s || s->cancels /* relay_cancel_done */ || c->c2s_scanned > 0 || c->c2s_remaining > 0 ||
	    !buf_empty(&s->wbuf) ||
	    s->pending_rfq > 0 || c->s2c_scanned > 0 || c->s2c_remaining > 0 || !buf_empty(&c->wbuf) ||
	    c->release_pending || !expect_room(s, SCAN_EXPECT_ROOM) /* replies will come: flush_unsynced_replies */ ||
	    s->flush_awaited /* told_check's Describe: the Bind is scanned again at its reply */)
		return false;
	return avail >= PROTO_HDR_LEN &&
	       proto_read_hdr(buf_head(&c->rbuf), avail, cfg_of(c)->max_message_size, &h) > 0 &&
	       avail >= (size_t)h.len + 1;
}

/* Called at the end of each relay round. Scans again once; a request still stranded then
 * means tusk's bookkeeping cannot tell what to do with it: the client is failed, loudly,
 * rather than left waiting. false when c was closed. */
static bool unstrand_client(struct client *c, struct server *s)
{
	if (!client_request_stranded(c, s))
		return true;
	log_warn(c->id, c->ctx, "a whole request from the client sat unscanned with nothing owed on server %s: scanning again",
		 s->id);
	if (!pump_c2s(c, s) || !pump_s2c(c, s))
		return false;
	if (!client_request_stranded(c, s))
		return true;
	expect_dump(c, s);
	client_fail(c, "08P01", "tusk lost track of what server %s owes this connection; closing it rather than leaving the client waiting",
		    s->id);
	return false;
}

/* Both directions, until neither can move. false when c is closed or s released. */
static bool pump_both(struct client *c, struct server *s)
{
	for (;;) {
		if (!pump_c2s(c, s))
			return false;
		bool queue_full = !expect_room(s, SCAN_EXPECT_ROOM);
		/* Replies tusk gives itself (ParseComplete, CloseComplete) may be due now. */
		if (!s2c_idle(c, s) && !pump_s2c(c, s))
			return false;
		/* The client's side stopped on a full reply queue and the replies scanned just
		 * now made room: read it again now, for no event may come to do it (the server
		 * has sent all it will until it gets the Sync still unread in c->rbuf). */
		if (!queue_full || !expect_room(s, SCAN_EXPECT_ROOM))
			break;
	}
	if (!unstrand_client(c, s))
		return false;
	cancel_deferred_run(c); /* a cancel asked for before its request ran: it runs now */
	update_both(c, s);
	return true;
}

void relay_client_event(struct client *c, int revents)
{
	struct server *s = c->server;

	RELAY_HOOKS_SYNC(c); /* a reload may have turned a feature on or off */
	if (revents & EV_WRITE) {
		if (!pump_s2c(c, s))
			return;
	}
	if (revents & EV_READ) {
		ssize_t n = read_some(c->fd, &c->tls, &c->rbuf);
		if (n == 0) {
			client_close(c, "client closed the connection");
			return;
		}
		if (n < 0 && n != -EAGAIN) {
			client_close(c, "read from client failed");
			return;
		}
		if (n > 0 && ev_is_active(&c->timer))
			ev_timer_stop(c->worker->loop, &c->timer); /* idle-in-transaction timer */
	}
	/* A cancel waiting for the request read just now (cancel.c) is for the server's run of
	 * it: a hook that answers the request itself takes it, and the cancel is moot. */
	bool cancel = c->cancel_deferred;
	c->cancel_deferred = false;
	/* Session pooling: one whole Query to an idle server may be answered by the cache. */
	if (c->mode == POOL_MODE_SESSION && s && relay_hooks_request(c, s))
		return;
	/* Inside a transaction, with every reply relayed and nothing owed: a hook may answer
	 * what comes next itself (LISTEN/UNLISTEN, src/notify/). */
	if (c->hooks && s && c->mode != POOL_MODE_SESSION && !c->pinned && s->pending_rfq == 0 && s->expect_count == 0 &&
	    !s->ext_open && !c->copy_in && c->c2s_scanned == 0 && c->c2s_remaining == 0 && c->s2c_scanned == 0 &&
	    c->s2c_remaining == 0 && buf_empty(&s->rbuf) && (s->tx_status == 'T' || s->tx_status == 'E')) {
		size_t unread = buf_len(&c->rbuf);
		if (!relay_hooks_linked(c, s))
			return; /* the hook failed the client: it may be freed */
		if (buf_len(&c->rbuf) < unread)
			cancel = false;
	}
	c->cancel_deferred = cancel;
	(void)pump_both(c, s);
}

void relay_cancel_done(struct server *s)
{
	struct client *c = s->owner;
	if (!c || c->server != s || c->state != CLIENT_ACTIVE || s->state != SERVER_ACTIVE || c->worker->stopping ||
	    ev_cb(&s->io) != relay_server_cb || !pump_both(c, s))
		return;
	if (c->server == s)
		cancel_repeat(c); /* an early cancel goes again while its request still runs */
}

void relay_resume(struct client *c)
{
	if (c->server)
		(void)pump_both(c, c->server);
}

static void relay_server_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct server *s = io->data;
	struct client *c = s->owner;
	(void)loop;

	if (tls_link_crossed(&s->tls))
		revents |= EV_READ | EV_WRITE;
	if (revents & EV_READ) {
		ssize_t n = read_some(s->fd, &s->tls, &s->rbuf);
		if (n == 0) {
			server_lost(c, s, "closed the connection unexpectedly");
			return;
		}
		if (n < 0 && n != -EAGAIN) {
			server_lost(c, s, "failed while reading from it");
			return;
		}
		if (!pump_s2c(c, s))
			return;
	}
	if (!pump_both(c, s))
		return;
	/* Inside a transaction with nothing owed: the client is the one keeping it open. */
	uint64_t idle_tx_ms = 0;
	if ((s->tx_status != 'I' || s->ext_open) && s->expect_count == 0 && s->pending_rfq == 0 &&
	    (idle_tx_ms = config_idle_transaction_timeout(cfg_of(c), c->pool ? pool_rule(c->pool) : NULL)) &&
	    !ev_is_active(&c->timer)) {
		ev_timer_set(&c->timer, (double)idle_tx_ms / 1000.0, 0.);
		ev_timer_start(c->worker->loop, &c->timer);
	} else if (c->mode == POOL_MODE_SESSION && s->tx_status == 'I' && c->worker->rt->nworkers > 1) {
		client_maybe_move(c); /* may move c and s to another worker: last */
	}
}

void relay_adopt(struct client *c, struct server *s)
{
	server_attach(s, c->worker);
	pool_server_moved(s);
	ev_set_cb(&s->io, relay_server_cb);
	s->io.data = s;
}

void relay_watch(struct client *c, struct server *s)
{
	update_both(c, s);
}

void relay_start(struct client *c, struct server *s)
{
	/* The watcher may stay armed: only its callback changes (no epoll change). */
	if (ev_is_active(&s->timer) || ev_is_pending(&s->timer))
		ev_timer_stop(c->worker->loop, &s->timer);
	ev_set_cb(&s->io, relay_server_cb);
	s->io.data = s;
	s->owner = c;
	server_set_state(s, SERVER_ACTIVE);
	s->pending_rfq = 0;
	s->expect_head = s->expect_count = 0;
	s->skipping = false;
	s->ext_open = false;
	s->replay_state = REPLAY_IDLE;
	s->bind_known = false;
	s->recheck_set = false;
	s->flush_awaited = false;
	s->desc_params = 0;
	c->server = s;
	c->c2s_scanned = c->s2c_scanned = 0;
	c->c2s_remaining = c->s2c_remaining = 0;
	c->release_pending = false;
	log_debug(c->id, c->ctx, "linked to server %s", s->id);
	/* The watchers are set once, at the end of the round below (pump_both's update_both, or
	 * the client's next state when it ends otherwise: released, failed, closed). */
	client_set_state_no_io(c, CLIENT_ACTIVE);
	/* Greeting first (when there is one); the client may also have bytes waiting. */
	if (!s2c_idle(c, s) && !pump_s2c(c, s))
		return;
	(void)pump_both(c, s);
}

/* classify.c reads SQL as a PostgreSQL 15 server would with the session's
 * standard_conforming_strings, and with a client_encoding in which no multibyte character
 * contains a quote or backslash byte (see router/classify.h); a session in another one can
 * hide statements from it, so it keeps its server. */
/* The parse context of the client's named statements: the settings under which the server
 * reads a statement's text once and for all (see prep_identity_ctx). */
static void update_parse_context(struct client *c)
{
	static const char *const names[] = { "standard_conforming_strings", "client_encoding", "DateStyle",
					     "TimeZone" };
	char key[4 * (SERVER_PARAM_VALUE_MAX + 1)];
	size_t n = 0;

	if (!c->prep)
		return;
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		const char *v = session_param_get(&c->session, names[i]);
		size_t l = v ? strnlen(v, SERVER_PARAM_VALUE_MAX) : 0;
		memcpy(key + n, v ? v : "", l);
		n += l;
		key[n++] = '\0';
	}
	uint64_t ctx = XXH3_64bits(key, n);
	prep_client_set_context(c->prep, ctx ? ctx : 1);
}

int relay_prep_add(struct client *c, const struct prep_parse *p, const struct prep_stmt **out)
{
	if (!c->prep) {
		c->prep = prep_client_new(CLIENT_MAX_STATEMENTS, CLIENT_MAX_STATEMENT_BYTES);
		if (!c->prep)
			return -ENOMEM;
		prep_client_share(c->prep, pool_prep_refs(c->pool));
		/* The context follows the session's parameters from the greeting on; a map made
		 * now takes the current one, as an eager map would have kept it. */
		update_parse_context(c);
	}
	return prep_client_add(c->prep, p, out);
}

void relay_note_param(struct client *c, const char *name, const char *value)
{
	if (strcasecmp(name, "standard_conforming_strings") == 0 || strcasecmp(name, "client_encoding") == 0 ||
	    strcasecmp(name, "DateStyle") == 0 || strcasecmp(name, "TimeZone") == 0)
		update_parse_context(c);
	static const char *const unsafe_encodings[] = { "SJIS", "SHIFT_JIS_2004", "BIG5", "GBK", "UHC", "GB18030",
							"JOHAB" };
	bool unsafe = false;

	if (strcasecmp(name, "standard_conforming_strings") == 0) {
		c->backslash_quotes = strcasecmp(value, "on") != 0;
	} else if (strcasecmp(name, "client_encoding") == 0) {
		for (size_t i = 0; i < sizeof unsafe_encodings / sizeof unsafe_encodings[0]; i++)
			unsafe = unsafe || strcasecmp(value, unsafe_encodings[i]) == 0;
	}
	if (unsafe && c->mode != POOL_MODE_SESSION && !c->pinned) {
		c->pinned = true;
		log_info(c->id, c->ctx, "pinned to its server for the rest of the session: %s = %s hides statements from tusk's classifier",
			 name, value);
	}
}

/* ---- giving the server back ---- */

static void park(struct server *s)
{
	if (s->cancels) {
		/* A cancel for its last client's query is still on its way: nobody else gets this
		 * server before PostgreSQL has taken it (cancel.c parks it then). */
		s->park_after_cancel = true;
		server_set_state(s, SERVER_IDLE);
		ev_io_stop(s->worker->loop, &s->io);
		ev_timer_stop(s->worker->loop, &s->timer);
		return;
	}
	s->idle_since = ev_now(s->worker->loop);
	if (s->expires_at && s->idle_since >= s->expires_at) {
		server_close(s, "server_lifetime reached");
		return;
	}
	pool_put_idle(s->pool, s);
}

static void reset_and_park(struct server *s, enum reset_kind kind);

void relay_park_server(struct server *s)
{
	if (s->reset_after_cancel) {
		enum reset_kind kind = (enum reset_kind)(s->reset_after_cancel - 1);
		s->reset_after_cancel = 0;
		/* park stopped its watcher while the cancel was away: armed again for the clean-up */
		server_unpark(s);
		evio_watch(s->worker->loop, &s->io, s->fd, EV_READ);
		reset_and_park(s, kind);
		return;
	}
	park(s);
}

void relay_release_finish(struct server *s, enum reset_kind reset)
{
	reset_and_park(s, reset);
}

/* ---- after a transaction that called what tusk cannot see into ----
 * A user function, a DO block or a procedure may have left state in the session (a session
 * advisory lock, a temporary table, set_config(..., false), LISTEN). Instead of wiping it, the
 * server is asked once (server_check_state) before it goes back to the pool: nothing there,
 * it is parked as it is; something there, the client is pinned to it, state and all, as if it
 * had written the statement itself. Meanwhile the client, which has its answer, waits for
 * that one round trip before its next request (its bytes stay in its buffer). */

static void on_state_checked(struct server *s, void *arg, int err, const char *reason, const uint8_t *errmsg,
			     size_t errlen)
{
	struct client *c = arg;
	char what[256];
	int found = -1;
	(void)errmsg;
	(void)errlen;

	c->server = NULL;
	s->owner = NULL;
	if (err == 0 && c->worker->stopping) {
		server_close(s, "shutting down");
		client_go_idle(c);
		return;
	}
	if (err == 0)
		found = server_checked_state(s, what, sizeof what);
	if (found == 0) {
		/* Nothing that must stay the client's. Settings a function made (set_config(...,
		 * false), SET in plpgsql) are not asked about: RESET ALL, off the client's path,
		 * and no carried SET is left there either. */
		log_debug(c->id, c->ctx, "server %s holds no session state of its own: RESET ALL, back to the pool", s->id);
		(void)session_resync_take(&c->session); /* the next attach sets every setting of its own */
		if (!relay_hooks_release(c, s, RESET_SETTINGS)) /* taken: the same after the hook's work */
			reset_and_park(s, RESET_SETTINGS);
	} else if (found > 0) {
		pin_client(c, s, "state a function left in the session", what, strlen(what));
		if (c->session.resync) {
			/* its last transaction RESET to startup values, which this server it now
			 * keeps does not have */
			resync_kept(c, s);
			return;
		}
		relay_start(c, s); /* ACTIVE again, idle in no transaction, and on with what it sent */
		return;
	} else if (err == 0 || s->ok_after_error) {
		/* The answer could not be had: wipe the session, as before the check existed. */
		log_info(c->id, c->ctx, "session state check on server %s failed (%s): resetting it", s->id,
				 err ? (reason ? reason : "error") : "unreadable answer");
		(void)session_resync_take(&c->session);
		server_unpark(s);
		if (!relay_hooks_release(c, s, RESET_REQUIRED))
			reset_and_park(s, RESET_REQUIRED);
	} /* else server.c closes it */
	client_go_idle(c);
}

/* The client waits, its answer written, while tusk's own query runs on s, which stays its:
 * its bytes wait in its buffer; if it leaves, relay_release_server closes s. No wait
 * deadline: tusk's query has its own. false: the client could not be written to. */
static bool hold_client(struct client *c, struct server *s)
{
	if (client_write_wbuf(c) < 0)
		return false;
	c->server = s;
	s->owner = c;
	client_set_state(c, CLIENT_WAITING);
	ev_timer_stop(c->worker->loop, &c->timer);
	return true;
}

static void state_check_start(struct client *c, struct server *s)
{
	if (!hold_client(c, s)) {
		/* The server goes back clean first; the client is gone. */
		reset_and_park(s, RESET_REQUIRED);
		client_close(c, "write to client failed");
		return;
	}
	server_check_state(s, (double)cfg_of(c)->server_reset_timeout_ms / 1000.0, on_state_checked, c);
}

/* Released after its client's RESET of what connect_query may have set: no client takes it
 * as it is (client.c's use_server_now runs RESET ALL and connect_query first). */
static void forget_connect_query(struct server *s)
{
	if (s->connect_query_undone)
		s->carry_hash = SESSION_CARRY_UNKNOWN;
	s->connect_query_undone = false;
}

/* server_reset_query, NULL when none ("" runs nothing). */
static const char *configured_reset_query(const struct tusk_config *cfg)
{
	return cfg->server_reset_query && cfg->server_reset_query[0] ? cfg->server_reset_query : NULL;
}

static void release_after_transaction(struct client *c, struct server *s)
{
	struct worker *w = c->worker;
	bool reset = c->reset_before_reuse;
	const struct tusk_config *cfg = cfg_of(c);
	/* server_reset_query_always (PgBouncer's): the operator's reset after every transaction */
	enum reset_kind always = cfg->server_reset_query_always && configured_reset_query(cfg) ? RESET_CONFIGURED
											      : RESET_NONE;

	/* The watcher stays armed (server_park re-points it): stopping and restarting it would
	 * cost libev a failed EPOLL_CTL_ADD and a MOD per transaction. */
	s->owner = NULL;
	s->last_owner = c->serial;
	/* (the check may pin the client to s: then the resync is s's, on_state_checked) */
	s->carry_hash = reset ? c->session.carry_hash : session_resync_take(&c->session);
	forget_connect_query(s);
	server_set_state(s, SERVER_IDLE);
	c->server = NULL;
	c->release_pending = false;
	if (!buf_empty(&s->rbuf)) {
		/* Asynchronous chatter after the last ReadyForQuery belonged to this client. */
		log_debug(c->id, c->ctx, "dropping %zu unsolicited bytes from server %s", buf_len(&s->rbuf), s->id);
		buf_reset(&s->rbuf);
	}
	c->reset_before_reuse = false;
	log_debug(c->id, c->ctx, "transaction done, server %s back to the pool", s->id);
	if (w->stopping) {
		server_close(s, "shutting down");
	} else if (reset) {
		/* First: what the session holds may be the client's (on_state_checked offers s to
		 * the release hooks after). A hook first reset it unasked: a split pool's client
		 * lost the advisory lock its function took, and a stranger got it. */
		server_unpark(s);
		state_check_start(c, s); /* the client goes idle when it answers */
		return;
	} else if (relay_hooks_release(c, s, always)) {
		/* taken (read-your-writes fetches the primary's WAL position on s first):
		 * relay_release_finish follows */
	} else if (always != RESET_NONE) {
		server_unpark(s);
		reset_and_park(s, always);
	} else {
		park(s); /* stays on this loop, watcher armed: no epoll change */
	}
	client_go_idle(c);
}

/* tell_restored, for a value the server now has: the server's ParameterStatus for it went to
 * tusk, and a rollback says nothing when it leaves the value as last reported, so the
 * client's session has it now (its next server is set to it). */
static int tell_put_back(void *arg, const char *name, const char *value)
{
	struct client *c = arg;
	if (session_param_set(&c->session, name, value) < 0)
		return -1;
	return tell_restored(arg, name, value);
}

/* The startup values a RESET went back from are put on s again, which c keeps, before c's
 * next request (c waits for that round trip):
 * - after the transaction (s idle, 'I'; session pooling, pinned): what the commits restored
 *   (session_resync_sql);
 * - inside it ('T'; any mode), once the RESET's answer is out: what RESETs since the last
 *   time went back from (session_restore_take), as PostgreSQL direct has them for the
 *   transaction's next statements, the client told the reported ones as PostgreSQL would
 *   have told them at the RESET. A client that sent its next statement already (a pipeline)
 *   is not held for this: its statements see the default until the commit (docs/pooling.md). */
static void resync_kept(struct client *c, struct server *s)
{
	char list[8192];
	bool in_tx = s->tx_status == 'T';
	c->release_pending = false;
	if ((in_tx ? session_restore_take(&c->session, list, sizeof list, tell_put_back, c)
		   : session_resync_sql(&c->session, list, sizeof list)) < 0) {
		/* too long to set again: what RESET went to on s stays (the old behaviour) */
		log_warn(c->id, c->ctx, "startup values too long to set again after RESET on server %s", s->id);
		list[0] = '\0';
	}
	if (!hold_client(c, s)) {
		client_close(c, "write to client failed");
		return;
	}
	log_debug(c->id, c->ctx, "RESET%s went back to startup values: server %s gets them again",
		  in_tx ? " in a transaction" : "", s->id);
	client_resync(c, s, list);
}

/* The transaction's last reply is out (release_pending): the server goes back to the pool,
 * or, kept by its client, is made its session again; inside a transaction, a RESET's startup
 * values go back on it. */
static void transaction_over(struct client *c, struct server *s)
{
	if (s->tx_status == 'T' || c->mode == POOL_MODE_SESSION || c->pinned)
		resync_kept(c, s);
	else
		release_after_transaction(c, s);
}

static void on_reset_done(struct server *s, void *arg, int err, const char *reason, const uint8_t *errmsg,
			  size_t errlen)
{
	(void)arg;
	(void)errmsg;
	(void)errlen;
	(void)reason;
	if (err < 0) {
		if (s->ok_after_error)
			server_close(s, "reset query failed");
		/* else server.c closes it, having logged why */
		return;
	}
	if (s->tx_status != 'I') {
		server_close(s, "still in a transaction after reset");
		return;
	}
	park(s);
}

/* ROLLBACK if a transaction is open, and the reset query when the session may have left
 * state behind (session pooling, a pinned client, a function tusk cannot see into); then
 * park. */
static void reset_and_park(struct server *s, enum reset_kind kind)
{
	const struct tusk_config *cfg = s->worker->rt->cfg;
	const char *queries[4];
	const char *configured = configured_reset_query(cfg);
	int n = 0;

	if (s->tx_status != 'I')
		queries[n++] = "ROLLBACK";
	/* server_reset_query (even an empty one) is the operator's choice for session pooling.
	 * When tusk lost track of a transaction-pooled session, the next client is a stranger:
	 * DISCARD ALL at least, then the operator's own query (extension clean-up) if another. */
	if (kind == RESET_REQUIRED) {
		queries[n++] = "DISCARD ALL";
		if (configured && strcasecmp(configured, "DISCARD ALL") != 0)
			queries[n++] = configured;
	} else if (kind == RESET_CONFIGURED && configured) {
		queries[n++] = configured;
	} else if (kind == RESET_SETTINGS) {
		queries[n++] = "RESET ALL";
		s->carry_hash = 0;
	}
	if ((kind == RESET_REQUIRED || kind == RESET_CONFIGURED) && n > (s->tx_status != 'I')) {
		/* Whatever it was, the session is now as fresh as a new connection. */
		s->carry_hash = 0;
		if (s->prep)
			prep_server_forget_all(s->prep);
		s->check_prepared = false;
	}
	/* What a reset undid of connect_query's (its SETs) is made again for the next client. */
	if (n > (s->tx_status != 'I') && server_connect_query(s))
		queries[n++] = server_connect_query(s);
	if (n == 0) {
		server_set_state(s, SERVER_IDLE);
		park(s);
		return;
	}
	if (s->cancels) {
		/* A cancel for its last client's request is still on its way (sent when the client
		 * left mid-request, or the client's own): the request ended before it, and PostgreSQL
		 * cancels whatever runs when it lands, the clean-up itself (then closed as a failed
		 * reset). Landing on an idle session it is dropped: the clean-up waits until
		 * PostgreSQL has taken it: park holds it unwatched meanwhile, and cancel.c's
		 * relay_park_server then runs the clean-up. */
		s->reset_after_cancel = (int8_t)(kind + 1);
		park(s);
		return;
	}
	server_run_queries(s, queries, n, (double)cfg->server_reset_timeout_ms / 1000.0, on_reset_done, NULL);
}

static void on_drained(struct server *s, void *arg, int err, const char *reason, const uint8_t *errmsg,
		       size_t errlen)
{
	(void)errmsg;
	(void)errlen;
	(void)reason;
	if (err < 0)
		return; /* closed by server.c */
	reset_and_park(s, (enum reset_kind)(intptr_t)arg);
}

void relay_release_server(struct client *c, struct server *s)
{
	struct worker *w = c->worker;
	const struct tusk_config *cfg = cfg_of(c);
	bool was_active = s->state == SERVER_ACTIVE;
	enum reset_kind reset = c->mode == POOL_MODE_SESSION ? RESET_CONFIGURED
				: c->pinned || c->reset_before_reuse ? RESET_REQUIRED : RESET_NONE;

	s->owner = NULL;
	s->last_owner = c->serial;
	s->carry_hash = session_resync_take(&c->session);
	forget_connect_query(s);
	if (w->stopping) {
		server_close(s, "shutting down");
		return;
	}
	if (s->state != SERVER_ACTIVE && s->state != SERVER_IDLE) {
		/* Still logging in or applying parameters: simplest to give the slot back. */
		server_close(s, "client left before the server was ready");
		return;
	}
	if (was_active && c->c2s_remaining > 0) {
		/* Half a message went to the server and the rest never will. */
		server_close(s, "client left in the middle of sending a message");
		return;
	}
	/* Replies not yet passed on are for a client that is gone; so is the rest of a message
	 * half passed on, still to come from the socket. */
	buf_reset(&s->rbuf);
	if (was_active)
		s->pending_skip = c->s2c_remaining;
	server_unpark(s);
	if (!was_active || (s->pending_rfq == 0 && s->expect_count == 0 && !s->skipping && !s->ext_open)) {
		reset_and_park(s, reset);
		return;
	}

	/* The client left with requests in flight: cancel what runs, complete what it began
	 * (a COPY it fed, a pipeline it never synced), wait for the server to be ready, then
	 * roll back and reuse it. */
	log_info(c->id, c->ctx, "client left mid-request: cancelling on server %s and draining it", s->id);
	int nrfq = s->pending_rfq;
	if (c->copy_in) {
		/* CopyFail: 'f', length, "client left\0" */
		static const uint8_t copyfail[] = { 'f', 0, 0, 0, 16, 'c', 'l', 'i', 'e', 'n', 't', ' ', 'l', 'e', 'f', 't', 0 };
		if (buf_append(&s->wbuf, copyfail, sizeof copyfail) < 0) {
			server_close(s, "could not abort the client's COPY");
			return;
		}
	}
	struct server_expect *last = s->expect_count
		? &s->expect[(s->expect_head + s->expect_count - 1) % SERVER_EXPECT_MAX] : NULL;
	bool busy = s->pending_rfq > 0 || s->expect_count > 0;
	if (s->ext_open || s->skipping || (last && !ends_with_ready(last->kind))) {
		/* Never a bare Sync: it would commit what the client left unfinished. */
		int added = abort_unsynced(s);
		if (added < 0) {
			server_close(s, "could not roll back the client's unfinished pipeline");
			return;
		}
		nrfq += added;
	}
	s->expect_head = s->expect_count = 0;
	s->flush_awaited = false;
	if (busy)
		cancel_send_for(w, s, 0);
	/* Whatever the abandoned request did to the session is unknown: reset before reuse. */
	if (reset == RESET_NONE)
		reset = RESET_REQUIRED;
	server_drain(s, nrfq, (double)cfg->server_reset_timeout_ms / 1000.0, on_drained, (void *)(intptr_t)reset);
}
