/* One server connection: the connector (TCP connect, startup, password/md5/SCRAM login),
 * simple-query exchanges tusk runs itself (SETs, reset), and the state it needs to be
 * pooled. While in use by a client, frontend/relay.c drives its socket. */
#ifndef TUSK_POOL_SERVER_H
#define TUSK_POOL_SERVER_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "net/net.h"
#include "net/tls.h"
#include "pool/prepared.h"
#include "proto/proto.h"
#include "util/buf.h"
#include "util/id.h"

struct pool;
struct worker;
struct worker_hooks;
struct scram_client;

#define SERVER_PARAMS_MAX 32
#define SERVER_PEEK_AFTER 0.1 /* seconds parked after which a server moved between threads is peeked at */
#define SERVER_PARAM_NAME_MAX 64
#define SERVER_PARAM_VALUE_MAX 256

enum server_state {
	SERVER_CONNECTING, /* TCP connect in progress */
	SERVER_LOGIN,      /* startup sent, authenticating, collecting parameters */
	SERVER_QUERY,      /* running a query of tusk's own (SETs, reset), swallowing replies */
	SERVER_ACTIVE,     /* linked to a client; relay.c moves the bytes */
	SERVER_DRAINING,   /* its client left mid-request: cancelled, replies discarded until idle */
	SERVER_IDLE,       /* clean and idle: parked in its pool (detached) or about to be */
	SERVER_CLOSED,
};

/* The one way a server's state changes (server.c holds the table of legal moves, from the
 * diagram above: CONNECTING -> LOGIN -> IDLE <-> ACTIVE/QUERY/DRAINING, any -> CLOSED). An
 * illegal move is logged; in debug builds (no NDEBUG, or the ASan build's TUSK_DEBUG_ALLOC)
 * it aborts (server_state_strict). Returns false when the move was illegal (the state is set
 * all the same: release builds keep running as before). */
struct server;
bool server_set_state(struct server *s, enum server_state to);
bool server_state_legal(enum server_state from, enum server_state to);
/* Whether an illegal move aborts; set by default in debug builds. Tests may change it. */
extern bool server_state_strict;

/* What the server owes for each request it was sent, in order. Injected requests of
 * tusk's own get their replies dropped; requests tusk answers itself (a Parse the server
 * already has, a Close of a statement) get their reply injected when they reach the head. */
/* TLS negotiation inside SERVER_CONNECTING (so the connect timeout and backoff cover it). */
enum server_tls_step {
	SERVER_TLS_NONE,      /* TCP connect in progress */
	SERVER_TLS_ANSWER,    /* SSLRequest sent, waiting for 'S' or 'N' */
	SERVER_TLS_HANDSHAKE, /* handshake in progress */
	SERVER_TLS_DONE,      /* encrypted, or plaintext by choice: login goes on */
};

enum server_expect_kind {
	EXPECT_PARSE,            /* '1' */
	EXPECT_BIND,             /* '2' */
	EXPECT_DESCRIBE_STMT,    /* 't' then 'T' or 'n' */
	EXPECT_DESCRIBE_PORTAL,  /* 'T' or 'n' */
	EXPECT_EXECUTE,          /* 'C', 'I' or 's' */
	EXPECT_CLOSE,            /* '3' */
	EXPECT_SYNC,             /* 'Z' */
	EXPECT_QUERY,            /* everything up to 'Z' */
	EXPECT_FUNCTION,         /* 'V' ... 'Z' */
};
enum server_expect_action {
	EXPECT_FORWARD, /* the client asked: pass the reply on */
	EXPECT_DROP,    /* tusk asked: swallow the reply */
	EXPECT_INJECT,  /* tusk answers the client itself, in order, when this reaches the head */
};
#define SERVER_EXPECT_MAX 512
struct server_expect {
	uint8_t kind;
	uint8_t action;
	bool has_hash;      /* a named Parse (forget hash if it fails) or an eviction Close (keep hash if skipped) */
	bool all;           /* an injected DEALLOCATE reply: "DEALLOCATE ALL" */
	bool stale;         /* a Close of a stale statement: if skipped, it is still there, still stale */
	bool replay;        /* the Bind that begins the batch copied in server.replay */
	bool fake;          /* a Bind sent to fail: its error becomes 0A000 (relay.c, told_check); a
			     * Parse sent to fail: its 42P01 becomes 42P05 (parse_taken) */
	bool client_close;  /* a client's Close of a name it had: its entry waits for the outcome
			     * (prep_client_close) */
	struct prep_hash hash; /* also on a Bind or Describe of a tusk statement */
	uint64_t name_hash; /* a client's Describe: whose statement it tells (prep_client_tell) */
};

struct server_param {
	char name[SERVER_PARAM_NAME_MAX];
	char value[SERVER_PARAM_VALUE_MAX];
};

/* What tusk logs in to the server with when the rule has no server_password: the client's
 * own credentials, as far as its authentication revealed them. */
enum server_cred_kind {
	SERVER_CRED_NONE,
	SERVER_CRED_PLAIN, /* cleartext password (client used password auth) */
	SERVER_CRED_MD5,   /* "md5" + md5(password || user), from auth_file */
	SERVER_CRED_SCRAM, /* ClientKey recovered from the client's SCRAM proof, with its verifier */
};
struct server_cred {
	enum server_cred_kind kind;
	char secret[256];
	uint8_t client_key[32], server_key[32];
	uint8_t salt[64];
	size_t salt_len;
	int iterations;
};

struct server;
/* err == 0: done, the server is idle on the caller's loop. err < 0: failed; reason says why
 * and errmsg/errlen hold the server's ErrorResponse (type byte included) when it sent one;
 * the server is still alive when ok_after_error (a failed query of ours), else closed. */
typedef void (*server_done_fn)(struct server *s, void *arg, int err, const char *reason,
			       const uint8_t *errmsg, size_t errlen);

struct server {
	char id[ID_LEN];                      /* read-only */
	enum server_state state;              /* read-only: changed by server_set_state only */
	struct pool *pool;                    /* read-only */
	struct worker *worker;                /* owning worker while attached, else NULL */
	int fd;
	struct tls_link tls;                  /* every read and write of fd goes through it */
	uint8_t tls_step;                     /* enum server_tls_step, while SERVER_CONNECTING */
	bool tls_away;                        /* its handshake is on a handshake thread (fd, tls.conn the thread's) */
	bool husk;                            /* closed while away: freed when the handshake comes back */
	double tls_deadline;                  /* while away: when server_connect_timeout ends */
	const struct config_service *service; /* read-only: where it connects (TLS settings, host name) */
	ev_io io;                             /* relay.c may re-point its callback in ACTIVE */
	ev_timer timer;
	struct buf rbuf;                      /* bytes read from the server */
	struct buf wbuf;                      /* bytes tusk wrote for the server */
	uint32_t backend_pid, backend_key;    /* from BackendKeyData */
	uint8_t tx_status;                    /* last ReadyForQuery status */
	int nparams;
	struct server_param params[SERVER_PARAMS_MAX]; /* as last reported by the server */
	uint64_t params_hash;                 /* phash of the settable ones (util/phash.h) */
	uint64_t login_params_hash;           /* params_hash right after login: the database's
	                                       * defaults, which RESET ALL / DISCARD ALL restore */
	int nreset;                           /* params[0, nreset) have reset_pairs */
	uint64_t reset_pairs[SERVER_PARAMS_MAX]; /* phash_pair of each as the server reported it at
	                                          * login, before connect_query: what its RESET goes to */
	struct net_addr addr;                 /* where the server is (for cancel) */
	char ctx[192];                        /* "db/user@host:port" for logs */
	double idle_since;                    /* ev_now when parked */
	double checked_at;                    /* last liveness peek while parked (pool.c) */
	double created;
	bool ok_after_error;                  /* see server_done_fn */
	bool stats_connecting;                /* counted as connecting in its pool's stats */
	bool quiet;                           /* private: until it logs in, failures are its pool's to log */
	void *owner;                          /* the client using it while ACTIVE (relay.c) */
	uint64_t last_owner;                  /* serial of the last client: same one back = no sync */
	int last_worker;                      /* index of the worker it last ran on */
	uint64_t carry_hash;                  /* which client's unreported SETs it carries (0: none) */
	struct prep_server *prep;             /* named statements prepared on it (NULL: none tracked) */
	bool check_prepared;                  /* SERVER_CHECK_STMT is believed prepared there: set by
	                                       * server_checked_state, cleared by whoever drops the
	                                       * session's statements (DISCARD ALL, DEALLOCATE ALL) */
	struct cancel_conn *cancels;          /* CancelRequests in flight for it (frontend/cancel.c) */
	/* Set by frontend/cancel.c with the first of them: the server calls it when it is freed,
	 * so that the cancels forget it (the pool names nothing of the frontend). */
	void (*cancels_detach)(struct server *s);
	bool park_after_cancel;               /* released, waiting for those before parking */
	int8_t reset_after_cancel;            /* relay.c: with park_after_cancel, the clean-up (a reset
	                                       * kind, +1) still to run once they are done: a cancel
	                                       * that lands later would cancel the clean-up itself */
	double expires_at;                    /* server_lifetime with jitter; 0 = never */
	unsigned pool_gen;                    /* pool_generation at connect (RECONNECT, KILL) */
	struct server_expect expect[SERVER_EXPECT_MAX]; /* ring, relay.c */
	uint16_t expect_head, expect_count;
	bool skipping;                        /* after an error, the server ignores all but Sync */
	bool ext_open;                        /* relay.c: an extended-protocol message went out after the
	                                       * last Sync, Query or FunctionCall: the server is inside a
	                                       * transaction (implicit or not) whatever its last
	                                       * ReadyForQuery said, until that of a later Sync */
	int pending_rfq;                      /* ReadyForQuery messages still owed */
	/* relay.c: a copy of the batch in flight from a Bind of a tusk statement to its Sync, as
	 * sent, to send once more when the server finds the statement stale (schema change) */
	uint8_t *replay;                      /* RELAY_REPLAY_MAX bytes, allocated at first use */
	uint32_t replay_len;
	uint32_t replay_mark;                 /* where in wbuf the batch's Bind begins */
	uint8_t replay_state;                 /* enum replay_state, relay.c */
	bool replay_retried;                  /* sent once more already: never twice */
	char replay_name[PREP_NAME_MAX + 1];  /* the client's name for the Bind's statement */
	/* relay.c: what statement descriptions tell (see told_check) */
	struct prep_hash bind_stmt;           /* the statement of the last Bind, */
	uint64_t bind_name, bind_portal;      /* its client name's hash and its portal's */
	bool bind_known;                      /* (false: the last Bind was of none of them) */
	uint64_t desc_params;                 /* a ParameterDescription awaiting its RowDescription */
	struct prep_hash recheck;             /* prepared afresh to check what it describes */
	bool recheck_set;
	bool flush_awaited;                   /* told_check sent a Flush: its replies will come (until the queue empties) */
	/* private to pool.c: its slot in the pool core */
	struct tp_slot *slot;                 /* NULL: no pool's (auth_query), or its connect failed */
	int idle_worker;                      /* parked in the core on this worker; -1 when not */
	bool connect_pending;                 /* connecting for the core, not reported yet */
	bool moved;                           /* handed over from another worker: peek before use */
	bool doomed;                          /* found dead while on its way to a claimer */
	bool checking;                        /* running the core's health check (server_check_delay) */
	bool resting;                         /* the core was told its client rests on it (pool_server_rest) */
	const char *close_reason;             /* for the core's close op */
	/* private */
	struct server *wprev, *wnext;         /* server_first(worker) while attached */
	server_done_fn done;
	void *done_arg;
	struct scram_client *scram;
	const char *login_password;
	bool in_connect_query;                /* login done, its pool's connect_query running */
	bool connect_query_undone;            /* relay.c: its client RESET what connect_query may have set */
	const struct proto_param *login_extra; /* server_login.extra, until logged in */
	int login_nextra;
	struct server_cred cred;              /* used when login_password is NULL */
	char login_user[64];
	char login_database[64];
	/* server_fetch_row: the first DataRow (body only), rows seen, and whether one was too big */
	uint8_t *row;
	size_t rowlen;
	int nrows;
	bool fetching;
	bool row_too_big;
	size_t pending_skip;                  /* bytes of an oversized skippable message still to drop */
	uint8_t *errmsg;                      /* first ErrorResponse seen in a query of ours */
	size_t errlen;
};

/* Start connecting a new server for pool on worker w, to addr (the backend the pool core
 * picked). done runs once on w's loop. NULL only on allocation failure (the slot is then
 * still the caller's to drop). */
struct server *server_connect(struct pool *pool, struct worker *w, const struct net_addr *addr,
			      const struct server_cred *cred, server_done_fn done, void *arg);

/* server_connect for a min_size refill (no client): a failure to connect or log in is not
 * logged by the server, since its pool logs refill failures at most once a minute. */
struct server *server_connect_refill(struct pool *pool, struct worker *w, const struct net_addr *addr,
				     const struct server_cred *cred, server_done_fn done);

/* Whether a failed login means the backend is unavailable (back off: 08, 53, 57, or no
 * ErrorResponse at all) rather than that this login is wrong (a password, a database name). */
bool server_error_backoff_worthy(const uint8_t *errmsg, size_t errlen);

/* A login refused for want of connection slots: 53300 ("too many connections for role",
 * "sorry, too many clients already"). errmsg is a whole ErrorResponse (type byte included). */
bool server_error_is_no_slot(const uint8_t *errmsg, size_t errlen);

/* A connection of tusk's own, outside every pool (frontend/authquery.c's auth_query
 * connections): logs in as user to database with cred (NULL or SERVER_CRED_NONE: trust),
 * no server_password involved. done runs once on w's loop, as for server_connect. It holds
 * no pool slot and must never be handed to a client or parked; server_close just closes
 * it. NULL only on allocation failure. */
struct server_login {
	const struct config_service *service; /* its TLS settings apply */
	const struct net_addr *addr;
	const char *user;
	const char *database;
	const struct server_cred *cred;
	const char *password; /* a rule's server_password (NULL: cred); kept, not copied */
	size_t rbuf_size;     /* 0: SERVER_LOGIN_RBUF_SIZE */
	/* More startup parameters after user and database (a replication connection's
	 * "replication" and its client's own, frontend/replication.c); kept, not copied: they
	 * must live until done runs. At most SERVER_LOGIN_EXTRA_MAX. */
	const struct proto_param *extra;
	int nextra;
};
#define SERVER_LOGIN_EXTRA_MAX 62 /* with user and database: PROTO_STARTUP_MAX_PARAMS */
#define SERVER_LOGIN_RBUF_SIZE (16 * 1024)
struct server *server_connect_login(struct worker *w, const struct server_login *login, server_done_fn done,
				    void *arg);

/* Run sql with the extended protocol (unnamed statement, one text parameter param, text
 * results) on an idle attached server and keep its first row. done runs as for
 * server_run_queries; on success, server_fetched_row tells what came back. A row over
 * SERVER_FETCH_ROW_MAX bytes fails the operation (the server stays usable). */
#define SERVER_FETCH_ROW_MAX 8192
void server_fetch_row(struct server *s, const char *sql, const char *param, double timeout, server_done_fn done,
		      void *arg);
/* Inside or after the done of a successful server_fetch_row, until the next operation:
 * the number of rows and the first one's DataRow body (NULL when none). */
const uint8_t *server_fetched_row(const struct server *s, size_t *len, int *nrows);

/* Ask an idle attached server, with one query, whether its session holds state of its own
 * after a transaction tusk could not see into (a user function, a DO block): session advisory
 * locks, temporary objects, prepared statements that are not tusk's (tusk_<32 hex>, Parse),
 * WITH HOLD cursors, LISTEN channels, a role or session authorization other than the
 * login's. Not settings: RESET ALL is the caller's answer to those. It changes nothing. done
 * runs as for server_fetch_row; then server_checked_state tells. */
void server_check_state(struct server *s, double timeout, server_done_fn done, void *arg);
#define SERVER_CHECK_STMT "tusk_check" /* the server-side name of the check's statement */
/* After a successful server_check_state: 0 when the session holds nothing, 1 when it does
 * (what it holds, for a log line, in what[0, cap), NUL-terminated, possibly cut), -1 when the
 * answer cannot be read (treat as state). */
int server_checked_state(struct server *s, char *what, size_t cap);

/* Run sql as a simple query on an idle attached server, swallowing every reply; done runs
 * when ReadyForQuery arrives (err < 0 with the server's error if one came; the server is
 * then still usable when s->ok_after_error) or the connection fails or times out. nqueries
 * is the number of Query messages in sql_list (each NUL-separated string is one Query). */
void server_run_queries(struct server *s, const char *const *sqls, int nqueries, double timeout,
			server_done_fn done, void *arg);

/* Run each statement of list ("stmt\0stmt\0...\0", ended by an empty one; each one
 * statement) through the extended protocol under a statement and portal name of tusk's own
 * (SERVER_OWN_NAME), closed after it, with one Sync; replies swallowed, done as for
 * server_run_queries. Unlike a Query, this leaves the session's unnamed statement and
 * unnamed portal alone: a client that keeps its server (session pooling, pinned) may bind
 * them again after tusk's own work, inside a transaction too. An empty list runs nothing:
 * done is called at once with 0. */
#define SERVER_OWN_NAME "tusk_own_statement"
void server_run_statements(struct server *s, const char *list, double timeout, server_done_fn done, void *arg);

/* Discard everything the server sends until nrfq ReadyForQuery messages have come (a
 * client left mid-request), then done runs as for server_run_queries. */
void server_drain(struct server *s, int nrfq, double timeout, server_done_fn done, void *arg);

/* Parked on its worker's loop: watched for reads (a parked server that closes or talks is
 * closed), no timer. pool.c calls it when putting the server on an idle list. */
void server_park(struct server *s);
/* Back in use on its own loop: tusk's own callbacks, watchers left running (no epoll
 * change). relay.c then takes the io callback for the relay. */
void server_unpark(struct server *s);

/* Its client gave up while it was connecting or running a query of tusk's own: when that
 * ends it is parked (or closed on failure) instead of reported to anyone. */
void server_orphan(struct server *s);

/* The pool's tenancy on every worker (worker.h): the servers attached to its loop, the
 * housekeeping tick (pool_maintain), and every server closed at stop and at free. */
extern struct worker_hooks server_worker_hooks;
/* The servers attached to w's loop (the console lists them): follow s->wnext. */
struct server *server_first(const struct worker *w);
/* Attach a detached server to worker w's loop (watchers idle), or detach it. */
void server_attach(struct server *s, struct worker *w);
void server_detach(struct server *s);

/* Its pool rule's connect_query (config.h); NULL when none or pool-less (auth_query,
 * replication). Whoever runs DISCARD ALL or RESET ALL on a pool server runs it after. */
const char *server_connect_query(const struct server *s);

/* Look up a reported parameter; NULL when the server never reported it. */
const char *server_param(const struct server *s, const char *name);
/* The server's own spelling of a reported parameter's name ("TimeZone" for "timezone"). */
const char *server_param_name(const struct server *s, const char *name);
/* Whether value is what a RESET of name goes back to on s (its value at s's login). */
bool server_param_is_reset_value(const struct server *s, const char *name, const char *value);
/* Record a ParameterStatus (name/value from the server). */
void server_set_param(struct server *s, const char *name, const char *value);
/* Reported parameters only the server sets (server_version, is_superuser, ...): never SET,
 * not part of params_hash. */
bool server_param_read_only(const char *name);

/* Close and free; a pool server's slot goes back to the pool core (pool_close_server), in
 * whatever state it is. On the owning worker. reason goes to the log. */
void server_close(struct server *s, const char *reason);
/* Close and free, nothing else: for the pool core's close op and pool-less servers. */
void server_close_keep_slot(struct server *s, const char *reason);

#endif
