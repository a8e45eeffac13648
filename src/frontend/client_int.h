/* Internal to frontend/: the client struct shared by client.c (startup, waiting,
 * teardown), relay.c (moving bytes while a server is attached) and cancel.c. The session
 * kinds of the virtual databases (src/console/, src/kv/front.c; client_kind.h) also include
 * it: they answer their clients themselves, and the console lists and closes clients on their
 * workers. */
#ifndef TUSK_FRONTEND_CLIENT_INT_H
#define TUSK_FRONTEND_CLIENT_INT_H

#include <ev.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "frontend/client.h"
#include "frontend/relay_hooks.h"
#include "frontend/session.h"
#include "net/net.h"
#include "net/tls.h"
#include "pool/pool.h"
#include "pool/server.h"
#include "proto/proto.h"
#include "util/buf.h"
#include "util/id.h"
#include "worker/worker.h"

struct server;
struct prep_client;
struct client_auth;
struct client_kind;
struct vdb;
struct flight_client;
struct notify_client;
struct client_wait;
struct prep_parse;
struct prep_stmt;
struct client_big;
struct repl_link;

#define CLIENT_MAX_STATEMENTS 10000          /* named prepared statements per client */
#define CLIENT_MAX_STATEMENT_BYTES (16u << 20) /* their memory per client */

enum client_state {
	CLIENT_STARTUP, /* reading the startup packet (SSL/GSSENC answered 'N') */
	CLIENT_AUTH,    /* authenticating (frontend/auth.c) */
	CLIENT_WAITING, /* needs a server: queued, connecting, or preparing it */
	CLIENT_ACTIVE,  /* a server is linked; bytes relayed both ways */
	CLIENT_IDLE,    /* transaction/statement mode: logged in, between transactions, no server */
	CLIENT_CLOSING, /* flushing a last message; then closed */
};

/* Small fields sit beside each other rather than in holes: the size is paid per idle client
 * (in malloc's 16-byte steps). */
struct client {
	char id[ID_LEN];
	bool tls_handshaking : 1; /* STARTUP: the TLS handshake runs (SSLRequest or direct) */
	bool tls_probed : 1;      /* STARTUP: the first byte was looked at for direct TLS */
	bool tls_queued : 1;      /* its next handshake step waits in the worker's queue (fe->hs) */
	bool tls_away : 1;        /* its handshake runs on a handshake thread (rt->tls_hs): fd and
				   * tls.conn are that thread's until hs_back */
	enum client_state state;
	struct worker *worker;
	int fd;
	enum pool_mode mode;
	struct tls_link tls;      /* every read and write of fd goes through it */
	const struct config_listen *listen; /* the entry it came in on (its generation's); NULL: Unix socket */
	struct tls_ctx *listen_tls;         /* that entry's TLS context; NULL: plaintext only */
	ev_io io;
	ev_timer timer;
	struct buf rbuf; /* bytes from the client, not yet forwarded */
	struct buf wbuf; /* bytes tusk itself sends the client; always before relayed ones */
	/* The peer's address in the space an IPv6 one needs (a sockaddr_storage is 128 bytes);
	 * a Unix peer keeps its family only, all that the logs and hba use. client_peer(). */
	union {
		struct sockaddr sa;
		struct sockaddr_in in;
		struct sockaddr_in6 in6;
	} peer;
	uint32_t cancel_pid;        /* minted by tusk (with cancel_key); here, it fills a hole */
	/* "db/user@addr:port\0db\0user\0" in one allocation sized to fit (never NULL); database
	 * and user point into it ("" before the startup packet), so an idle client keeps no
	 * fixed-size name arrays. */
	char *ctx;
	char *database;
	char *user;
	struct session_state session; /* what every server it gets must look like */
	uint64_t serial;            /* unique per process: the "remembered owner" of servers */
	double login_at;            /* ev_now when greeted, for the log_disconnections line */
	bool greeted : 1;           /* AuthenticationOk..ReadyForQuery sent */
	bool pinned : 1;            /* session state that cannot be carried: keep the server */
	bool backslash_quotes : 1;  /* standard_conforming_strings is off: classify accordingly */
	bool parse_named : 1;       /* note_session reads a named Parse's text (relay.c) */
	bool lex_pending : 1;       /* a request in flight may change how SQL is read (a SET of
	                             * standard_conforming_strings or client_encoding): until its
	                             * replies are in, texts that may matter pin (relay.c) */
	bool reset_before_reuse : 1; /* this transaction ran something tusk cannot prove harmless to
	                             * the session (a function, DO, CALL): its server gets the reset
	                             * query before it goes back to the pool */
	uint8_t unnamed_marks;      /* what the last Parse of the unnamed statement needs at each
	                             * Bind of it (relay.c's MARK_*; named ones keep theirs in
	                             * prep_stmt.flags) */
	/* Session pooling: the client sent something other than a cacheable read since login, so
	 * its server's session may differ from what the cache key says (src/flight/serve.c). */
	bool flight_session_dirty;
	uint8_t stats_state;        /* stats: see below (a byte: it fills a hole) */
	bool tx_failed;             /* an error or ROLLBACK since the transaction began */
	bool tx_undo_watch;         /* a hook keeps changes of this transaction that a ROLLBACK
	                             * undoes: the relay reads CommandComplete tags for it */
	uint8_t rollback_to_owed;   /* ROLLBACK TO SAVEPOINTs sent whose tag (ROLLBACK) is due */
	bool release_pending;       /* a final ReadyForQuery was scanned: release once it is out */
	/* A Query or Parse larger than rbuf, copied as it streams so that it is classified once
	 * whole (relay.c); NULL when none is in flight. */
	struct client_big *big;
	struct prep_client *prep;   /* NULL: no name (prepared.h reads NULL as an empty map) */
	struct client_auth *auth;   /* during CLIENT_AUTH (auth.c) */
	struct client_name *name;   /* hba_file's host-name lines: the name looked up, until the login
	                             * is done (auth.c); NULL: not needed, or not yet */
	struct server_cred *cred;   /* what the client's authentication revealed, for passthrough
	                             * (NULL: nothing; allocated by auth.c only when there is) */
	struct pool *pool;
	struct server *server;      /* connecting, preparing or attached */
	/* Its place in the pool queue: taken from the worker's free list for a claim and given
	 * back once the pool is done with it (the claim answered at once, the answer delivered,
	 * the queue left), so an idle client holds none. Non-NULL exactly while queued, and
	 * in a closed client's husk until the answer on its way arrives. */
	struct client_wait *wait;
	bool queued;                /* wait is (or was, until the answer arrives) in the pool queue */
	bool wait_quiet;            /* CLIENT_WAITING not yet counted, timed or polled (client_need_server) */
	bool wait_notice_armed;     /* CLIENT_WAITING: the timer runs for query_wait_notify's NOTICE,
	                             * not yet for pool_wait_timeout (arm_wait_timer) */
	bool standby;               /* read-write-split: this transaction's claim is for the standby
	                             * side (the split's claim hook; copied into the claim) */
	bool dead;                  /* closed (client_close): kept as a husk, freed at the loop's
	                             * next prepare phase (reap), or when an answer from the pool
	                             * (or a read-your-writes fetch, ryw_pending) in flight comes */
	uint8_t ryw_pending;        /* read-write-split: fetches of its writes' WAL positions in flight
	                             * (split/route.c; a second transaction on the primary may end
	                             * before the first's fetch): its reads go to the primary meanwhile */
	uint8_t ryw_reset;          /* relay.c: the reset (enum reset_kind) the server of that fetch
	                             * needs before it parks */
	bool shut_wr;               /* CLOSING: our side is half-closed, the error is out */
	bool pool_counted;          /* counted in its pool's database and user (pool_client_enter):
	                             * client_close takes it out */
	bool cancel_registered;     /* the minted key is in the cancel registry */
	uint32_t cancel_key;        /* minted by tusk (with cancel_pid), sent in BackendKeyData */
	bool copy_in;               /* the server waits for COPY data from the client */
	bool prep_on;               /* named statements are tracked (transaction/statement pooling
	                             * with max_prepared_statements): prep is the map, NULL until
	                             * the first named Parse (an idle client that names none pays
	                             * for no map) */
	bool cancel_deferred;       /* a CancelRequest came for a request that did not run yet
	                             * (cancel.c); pump_both sends it once the request runs */
	uint8_t cert_name_wrong;    /* hba_file's clientcert=verify-full on a method other than
	                             * cert, and the certificate's CN (1) or DN (2) is not the user:
	                             * refused once the method has succeeded, as PostgreSQL does
	                             * (client_auth_cert_name_ok; the name is read once, at
	                             * client_auth_begin) */
	uint8_t cert_name_method;   /* that method (enum config_auth), for PostgreSQL's refusal */
	uint8_t cancel_again;       /* sends left of that cancel while the request still runs
	                             * (relay_cancel_done) */
	struct client *cancel_next; /* in the cancel registry (cancel.c; under its lock) */
	struct client *reap_next;   /* closed, on frontend_worker's reap list */
	struct client *prev, *next; /* worker->clients; while dead, the worker's husks (frontend_worker) */
	double connect_time;        /* ev_now at accept (SHOW CLIENTS, the drain's login grace) */
	/* client_idle_timeout: loop time of its last sign of life (a state change, bytes read
	 * while idle, a ReadyForQuery); query_timeout: the query_start whose query tusk asked the
	 * server to cancel (0: none), so that the next tick closes what the cancel did not end */
	double active_at, query_cancel_for;
	const struct client_kind *kind; /* chosen once, at startup (client_kind.h); never NULL */
	struct vdb *vdb;            /* a virtual database's kind (console, kv): the vdb inside its
	                             * session that reads c's requests; NULL otherwise */
	struct repl_link *repl;     /* a replication connection's (replication.c); NULL otherwise */
	struct flight_client *flight; /* the result cache's state (src/flight/serve.c); NULL: none yet */
	struct notify_client *notify; /* LISTEN/NOTIFY's state (src/notify/); NULL: never listened */
	/* The relay hooks attached (relay_hooks.h; NULL: none, the relay calls no feature) and
	 * the configuration they were chosen under (relay_hooks_sync). */
	const struct relay_hook_list *hooks;
	const struct tusk_config *hooks_cfg;
	/* The callbacks the relay calls for c (enum relay_hook_bit): hooks->has but the dormant
	 * ones of features not awake for c (hooks_awake, by registration; relay_hooks_wake). */
	unsigned hooks_has, hooks_awake;

	/* stats (stats/stats.h): the state and pool this client is counted in (stats_state is
	 * the counted state + 1, 0 before the first), and when its wait, its oldest unanswered
	 * query and its transaction began (loop time; 0: none) */
	uint64_t ryw_lsn;           /* read-your-writes: the primary's WAL insert position after its
	                             * last write (0: none; UINT64_MAX: unknown, reads stay on the primary) */
	struct stats_pool *stats_pool;
	double wait_start, query_start, xact_start;

	/* relay scanners: bytes at the head of a buffer already checked and ready to forward,
	 * and bytes of the message being streamed that have not arrived yet */
	size_t c2s_scanned;
	size_t s2c_scanned;
	uint32_t c2s_remaining;
	uint32_t s2c_remaining;
};

/* c's peer address as a net_addr (for net_addr_str, hba_match). */
void client_peer(const struct client *c, struct net_addr *out);
void client_set_state(struct client *c, enum client_state to);
/* client_set_state without the watcher update: for a caller that runs client_update_io
 * itself before it returns to the loop (or closes c), as the relay's round does. */
void client_set_state_no_io(struct client *c, enum client_state to);
void client_update_io(struct client *c);
/* The one teardown: c's socket, server and watchers are let go, c->dead is set, and its memory
 * is freed before the loop polls again (or when an answer in flight for it comes), never under
 * the caller: a caller may still read c (c->dead tells it closed) but must not serve it. A
 * second close of a dead client does nothing. */
void client_close(struct client *c, const char *reason);
/* A FATAL ErrorResponse (sqlstate, the message with tusk's connection id), then the close once
 * it is written. When it cannot be written (the client reset its connection) c is closed before
 * this returns (client_close: c->dead, its memory still there until the loop's next turn). */
void client_fail(struct client *c, const char *sqlstate, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int client_write_wbuf(struct client *c);
void client_flush(struct client *c);
/* stats: count a whole ErrorResponse message (header included) sent on to c. */
void client_count_error(struct client *c, const uint8_t *msg, size_t len);

/* A queued client leaves the pool queue: true when it did (no answer will come), false
 * when the answer is already on its way. */
bool client_leave_queue(struct client *c);
/* A CancelRequest for c while it waits in its pool's queue: its request is answered with
 * 57014 and dropped (cancel.c). false when there is nothing of that kind to cancel. */
bool client_cancel_wait(struct client *c);
/* The answer to a request cancelled before any server ran it (the pool's queue, the cache's
 * wait): PostgreSQL's 57014 error naming the client, then ReadyForQuery 'I', after pre (the
 * replies of messages done before the cancel: the cache's ParseComplete, BindComplete).
 * 0, or -1 when the write buffer had no room (the caller closes the client). */
int client_put_cancelled(struct client *c, const uint8_t *pre, size_t npre);
/* client.c: the client needs a server for bytes it sent while idle. */
void client_need_server(struct client *c);
/* Greeting done or transaction over: no server, wait for the next request. */
void client_go_idle(struct client *c);
/* A closed client kept while a fetch of read-your-writes ran (dead, ryw_pending now 0):
 * freed now unless a pool answer is still on its way. */
void client_husk_done(struct client *c);

/* Startup of a kind served by a pool rule (the pooled kind, replication connections): the
 * rule for c's database and user, its pool in c->pool, the rule's and DISABLE's refusals.
 * NULL when c was failed. */
const struct config_pool_rule *client_take_rule(struct client *c);
/* Authenticated: the kind's begin. */
void client_after_auth(struct client *c);
/* AuthenticationOk, s's reported parameters, c's cancel key, ReadyForQuery 'I' into c's wbuf;
 * 0, or -1 when they did not fit (c was failed). */
__attribute__((warn_unused_result)) int client_put_greeting(struct client *c, const struct server *s);
/* The key c will cancel with, minted and registered; 0, or -1 when c was failed. */
__attribute__((warn_unused_result)) int client_mint_cancel_key(struct client *c);

/* auth.c: true when the client may go on at once (trust, and its certificate's name checked
 * under clientcert=verify-full: client_auth_cert_name_ok); false when an exchange started
 * (state CLIENT_AUTH) or the client was failed. A user absent from auth_file is looked up
 * with authq_rule's auth_query in database authq_db when the rule has an auth_user (NULL
 * rule: auth_file only, as for the admin console). */
bool client_auth_begin(struct client *c, int rule_method, const struct config_pool_rule *authq_rule,
		       const char *authq_db);
/* auth.c, after the startup packet, before the kind's startup: true when c waits for its host
 * name (hba_file's first line that otherwise matches names a host: the lookup runs, and its
 * answer calls c->kind->startup; or c was failed); false to go on at once. */
bool client_auth_wait_name(struct client *c);
/* A host-name lookup runs: the bytes c sends wait. */
bool client_auth_name_pending(const struct client *c);
/* Bytes arrived in CLIENT_AUTH: 1 authenticated, 0 need more, -1 failed (client gone). */
int client_auth_input(struct client *c);
/* After the method succeeded (client_after_auth): false when hba_file's clientcert=verify-full
 * refuses the certificate's name (c was failed with the method's own refusal, as
 * PostgreSQL's). */
bool client_auth_cert_name_ok(struct client *c);
void client_auth_free_state(struct client *c);
/* client_login_timeout, in CLIENT_AUTH: when a PAM check still runs, fail c as PAM's refusal
 * (the module's thread runs on; its answer is dropped) and true; else false (the caller fails
 * c as a login timeout). */
bool client_auth_timed_out(struct client *c);
/* Teardown: the exchange state and any credentials kept. */
void client_auth_free(struct client *c);

/* relay.c */
void relay_start(struct client *c, struct server *s);
/* A session client moved to another worker (client.c, client_maybe_move) brings its server s,
 * detached from the old worker's loop: s joins c's worker with the relay's callback, watchers
 * unarmed. */
void relay_adopt(struct client *c, struct server *s);
/* The relay's watchers of c and its server s, armed for what is in flight (none: reads). */
void relay_watch(struct client *c, struct server *s);
/* Between transactions (client_go_idle; relay_server_cb for a session client on its server):
 * c (with its server) moves to the worker worker_balance_target names, if it can. */
void client_maybe_move(struct client *c);
void relay_client_event(struct client *c, int revents);
/* What held the relay outside it (a commit_wait hook) is over: move what can move. */
void relay_resume(struct client *c);
/* The last cancel tusk sent for s is done (cancel.c): the client requests the relay held back
 * meanwhile (pump_c2s) go to s now. */
void relay_cancel_done(struct server *s);
/* The header of a message from a logged-in client at p[0, avail): 1 valid (*h filled), 0 not
 * all there yet, -1 refused as PostgreSQL would (unknown type, length below 4 or above
 * max_message_size): the client was failed with the reason. */
int relay_check_client_hdr(struct client *c, const uint8_t *p, size_t avail, struct proto_hdr *h)
	__attribute__((warn_unused_result));
/* The client is done with s (left, failed or shutting down): reset and pool it when it is
 * clean and idle, close it otherwise. */
void relay_release_server(struct client *c, struct server *s);
/* Records a named Parse in c's statement map (c->prep_on), creating the map on the first
 * one: prep_client_add's results, -ENOMEM also when the map cannot be made. */
__attribute__((warn_unused_result)) int relay_prep_add(struct client *c, const struct prep_parse *p,
							const struct prep_stmt **out);
/* The SQL text of a Query or Parse body (blen bytes after the header): false if malformed. */
bool relay_sql_of(uint8_t type, const char *body, size_t blen, const char **sql, size_t *len);

/* The frontend's slot on each worker (frontend_worker_hooks, client.c), on that worker's
 * thread only. */
struct frontend_worker {
	struct client *clients; /* served here (struct client's prev, next) */
	/* Closed clients kept for an answer on its way (dead; linked by prev, next): at exit
	 * the ones whose answer can no longer come (a read-your-writes fetch on a server that
	 * was closed) are freed here. */
	struct client *husks;
	/* Closed clients with nothing in flight (also husks), freed by reap_prepare before the
	 * loop polls again: until then a caller up the stack may still read a client it closed
	 * (c->dead), so no closing call frees memory under its caller. */
	struct client *reap;
	ev_prepare reap_prepare;
	uint64_t gone;          /* clients closed or moved to another worker so far: whether a
	                         * call left its client no longer this thread's to serve */
	/* client read/write buffer blocks, taken while bytes are in flight and given back when
	 * the client goes idle with both drained */
	struct buf_pool rbufs, wbufs;
	/* places in a pool queue (struct client_wait) no client holds, kept for the next claim
	 * (at most CLIENT_FREE_WAITS) */
	struct client_wait *waits;
	unsigned nwaits;
	struct session_share params; /* the reported-parameter sets its clients share (session.h) */
	struct cancel_conn *cancel_conns; /* cancel.c: cancels being sent */
	struct authq_conn *authq;         /* authquery.c: auth_query connections */
	/* Clients whose next TLS handshake step is ready to run (tls_queued), oldest at
	 * hs[hs_head]; a closed one leaves NULL. Steps run after the loop iteration's other
	 * events (hs_prepare, CLIENT_HANDSHAKES_PER_TURN each time), so a login storm's
	 * handshakes do not hold up the clients being relayed; hs_idle keeps the loop from
	 * sleeping while steps wait. */
	struct client **hs;
	unsigned hs_head, hs_len, hs_cap;
	ev_prepare hs_prepare;
	ev_idle hs_idle;
};

static inline struct frontend_worker *fe_of(const struct worker *w)
{
	return worker_slot(w, frontend_worker_hooks.slot);
}

/* The clients of w (the admin console lists and kills them): follow c->next. */
static inline struct client *client_first(const struct worker *w)
{
	return fe_of(w)->clients;
}

/* cancel.c: the registry lives in the runtime (cancel_registry_new/free there). */
/* A CancelRequest arrived on w over the connection fd (through TLS when tls is set): post it
 * to the worker of the client that owns the key, which ends the connection (tls's
 * close_notify, then fd's close) once it has decided: the close is the requester's
 * acknowledgement (cancel.c). fd and tls are given to it: the caller keeps neither. */
void cancel_forward(struct worker *w, uint32_t pid, uint32_t key, int fd, struct tls_conn *tls);
/* On the owner's worker: cancel what the client's server runs now, if anything; then close
 * the request's connection. */
void cancel_on_message(struct worker *w, struct worker_msg *m);
/* Send a cancel for what c's server runs now; false (nothing sent) when it runs nothing. */
bool cancel_running(struct client *c);
/* A cancel c asked for before its request ran (cancel_on_message): sent now if it runs. */
void cancel_deferred_run(struct client *c);
/* After one of c's cancels landed: an early one (cancel_again) goes again while its request
 * still runs on c's server. */
void cancel_repeat(struct client *c);
/* Abandon the cancel requests still being sent from w (worker_free). */
void cancel_close_all(struct worker *w);
/* Register the client's minted key (after startup); forget it at teardown. */
__attribute__((warn_unused_result)) int cancel_register(struct client *c);
void cancel_forget(struct client *c);
/* c moves to worker to: c->worker changes under the registry's lock, so that a CancelRequest
 * looked up from now on is posted to to (where, until c arrives, it finds no query running:
 * c moves only while idle). */
void cancel_move(struct client *c, struct worker *to);
/* Send a CancelRequest for what server s (attached to w) runs now. Until PostgreSQL has
 * taken it, s is not parked (relay_park_server waits). */
void cancel_send_for(struct worker *w, struct server *s, double delay);

/* relay.c: a reported parameter of the client's session changed (or was greeted with):
 * standard_conforming_strings decides how its SQL is classified; a client_encoding whose
 * multibyte characters can hide a quote makes it unreadable to the classifier, which pins. */
void relay_note_param(struct client *c, const char *name, const char *value);
/* list (session_resync_sql, session_restore_take: statements that set startup values again
 * after a RESET) run on s, which c keeps (server_run_statements), then relayed as after an
 * attach (c waits meanwhile; a failure ends c as a failed attach). */
void client_resync(struct client *c, struct server *s, const char *list);

/* relay.c: park s in its pool, or hold it on this loop while cancels are in flight. */
void relay_park_server(struct server *s);
/* relay.c: a release hook that took s (relay_hooks.h, release) is done with it: reset it
 * (reset: as the transaction's release asked) and park it. */
void relay_release_finish(struct server *s, enum reset_kind reset);
/* client.c: an attach hook that took s over is done: s serves c now; s NULL: c claims from
 * the primary side instead (s went back or was closed by the hook). */
void client_attach_resume(struct client *c, struct server *s);

/* ---- the relay hooks of c (relay_hooks.h): each an inline NULL test, then the list ---- */

/* Choose c's list again (relay_hooks_choose) for the configuration of the moment; hooks that
 * leave it get closed() once quiet, hooks that join a logged-in client get joined(). */
void relay_hooks_refresh(struct client *c);
/* The list follows a reload: one pointer compare per event. */
#define RELAY_HOOKS_SYNC(c)                                       \
	do {                                                      \
		if ((c)->hooks_cfg != (c)->worker->rt->cfg)       \
			relay_hooks_refresh(c);                   \
	} while (0)

void relay_hooks_claim_(struct client *c);
bool relay_hooks_request_(struct client *c, const struct server *s);
bool relay_hooks_attach_(struct client *c, struct server *s);
bool relay_hooks_writable_(struct client *c);
void relay_hooks_timer_(struct client *c);
bool relay_hooks_cancel_(struct client *c);
bool relay_hooks_quiet_(const struct client *c);
void relay_hooks_closed_(struct client *c);
void relay_hooks_sql_(struct client *c, const char *sql, size_t len);
void relay_hooks_parsed_(struct client *c, const char *name, const uint8_t *rest, size_t rest_len);
bool relay_hooks_bind_(struct client *c, const uint8_t *m, size_t avail, bool unnamed, const char *text, size_t len);
void relay_hooks_close_stmt_(struct client *c, const char *name);
void relay_hooks_opaque_(struct client *c);
void relay_hooks_scanned_(struct client *c, const uint8_t *p, size_t n);
void relay_hooks_error_(struct client *c, struct server *s, const uint8_t *m, size_t total);
bool relay_hooks_commit_wait_(struct client *c, bool last);
void relay_hooks_ready_(struct client *c, bool last);
bool relay_hooks_release_(struct client *c, struct server *s, enum reset_kind reset);
bool relay_hooks_linked_(struct client *c, struct server *s);
void relay_hooks_idle_(struct client *c);

/* c's list has a hook defining the callback of bit (enum relay_hook_bit), awake for c. */
#define RELAY_HOOKS_HAS(c, bit) (((c)->hooks_has & (bit)) != 0)

static inline void relay_hooks_claim(struct client *c)
{
	if (RELAY_HOOKS_HAS(c, RH_CLAIM))
		relay_hooks_claim_(c);
}
static inline bool relay_hooks_request(struct client *c, const struct server *s)
{
	return RELAY_HOOKS_HAS(c, RH_REQUEST) && relay_hooks_request_(c, s);
}
static inline bool relay_hooks_attach(struct client *c, struct server *s)
{
	return RELAY_HOOKS_HAS(c, RH_ATTACH) && relay_hooks_attach_(c, s);
}
static inline bool relay_hooks_writable(struct client *c)
{
	return RELAY_HOOKS_HAS(c, RH_WRITABLE) && relay_hooks_writable_(c);
}
static inline void relay_hooks_timer(struct client *c)
{
	if (RELAY_HOOKS_HAS(c, RH_TIMER))
		relay_hooks_timer_(c);
}
static inline bool relay_hooks_cancel(struct client *c)
{
	return RELAY_HOOKS_HAS(c, RH_CANCEL) && relay_hooks_cancel_(c);
}
static inline bool relay_hooks_quiet(const struct client *c)
{
	return !RELAY_HOOKS_HAS(c, RH_QUIET) || relay_hooks_quiet_(c);
}
static inline void relay_hooks_closed(struct client *c)
{
	if (RELAY_HOOKS_HAS(c, RH_CLOSED))
		relay_hooks_closed_(c);
}
static inline void relay_hooks_sql(struct client *c, const char *sql, size_t len)
{
	if (RELAY_HOOKS_HAS(c, RH_SQL))
		relay_hooks_sql_(c, sql, len);
}
static inline void relay_hooks_parsed(struct client *c, const char *name, const uint8_t *rest, size_t rest_len)
{
	if (RELAY_HOOKS_HAS(c, RH_PARSED))
		relay_hooks_parsed_(c, name, rest, rest_len);
}
static inline bool relay_hooks_bind(struct client *c, const uint8_t *m, size_t avail, bool unnamed, const char *text,
				    size_t len)
{
	return !RELAY_HOOKS_HAS(c, RH_BIND) || relay_hooks_bind_(c, m, avail, unnamed, text, len);
}
static inline void relay_hooks_close_stmt(struct client *c, const char *name)
{
	if (RELAY_HOOKS_HAS(c, RH_CLOSE_STMT))
		relay_hooks_close_stmt_(c, name);
}
static inline void relay_hooks_opaque(struct client *c)
{
	if (RELAY_HOOKS_HAS(c, RH_OPAQUE))
		relay_hooks_opaque_(c);
}
static inline void relay_hooks_scanned(struct client *c, const uint8_t *p, size_t n)
{
	if (RELAY_HOOKS_HAS(c, RH_SCANNED))
		relay_hooks_scanned_(c, p, n);
}
static inline void relay_hooks_error(struct client *c, struct server *s, const uint8_t *m, size_t total)
{
	if (RELAY_HOOKS_HAS(c, RH_ERROR))
		relay_hooks_error_(c, s, m, total);
}
static inline bool relay_hooks_commit_wait(struct client *c, bool last)
{
	return RELAY_HOOKS_HAS(c, RH_COMMIT_WAIT) && relay_hooks_commit_wait_(c, last);
}
static inline void relay_hooks_ready(struct client *c, bool last)
{
	if (RELAY_HOOKS_HAS(c, RH_READY))
		relay_hooks_ready_(c, last);
}
static inline bool relay_hooks_release(struct client *c, struct server *s, enum reset_kind reset)
{
	return RELAY_HOOKS_HAS(c, RH_RELEASE) && relay_hooks_release_(c, s, reset);
}
/* False: c was failed (and may be freed). */
static inline bool relay_hooks_linked(struct client *c, struct server *s)
{
	return !RELAY_HOOKS_HAS(c, RH_LINKED) || relay_hooks_linked_(c, s);
}
static inline void relay_hooks_idle(struct client *c)
{
	if (RELAY_HOOKS_HAS(c, RH_IDLE))
		relay_hooks_idle_(c);
}

#endif
