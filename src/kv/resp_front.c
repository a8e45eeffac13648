/* The kv's Redis listener (resp_front.h). A connection lives on the worker that accepted it
 * (its own ev_io, never moved); it parses one command at a time out of its input (resp.c),
 * and runs it as one or two calls of the kv API through the router (one call in flight; the
 * worker never blocks); the reply is written when the router's answer comes back as a
 * worker message. Pipelined commands wait in the input (not read further while a call runs
 * or while more than RESP_OUT_PAUSE bytes of replies are unsent). Values are Redis strings
 * stored as JSON strings (a value written through SQL that is not a JSON string reads as its
 * JSON text). On a listen entry with TLS the whole connection is TLS (a Redis client starts
 * the handshake at once, there is no SSLRequest): its first byte tells a TLS ClientHello from
 * plaintext, which `allow` takes and the stricter modes refuse with an error reply. */
#include "kv/resp_front.h"

#include <errno.h>
#include <fnmatch.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "config/config.h"
#include "frontend/client_kind.h"
#include "frontend/extauth.h"
#include "kv/call.h"
#include "kv/hash.h"
#include "kv/resp.h"
#include "kv/resp_auth.h"
#include "kv/router.h"
#include "net/evio.h"
#include "net/net.h"
#include "net/tls.h"
#include "proto/proto.h"
#include "runtime/runtime.h"
#include "util/grow.h"
#include "util/log.h"

#define RESP_IN_MAX (64u << 20)     /* one command's bytes at most (an MSET of many values) */
#define RESP_READ_CHUNK (64u << 10)
#define RESP_OUT_PAUSE (1u << 20)   /* unsent replies beyond which commands wait */
#define RESP_SHRINK (1u << 20)      /* buffers larger than this are freed after their command */
#define RESP_SCAN_CURSORS 8         /* SCAN continuations kept per connection */
#define RESP_CLIENT_NAME_MAX 512    /* CLIENT SETNAME: bytes kept (Redis has no bound) */
#define RESP_SCAN_MAX 10000         /* COUNT's bound (kv.scan's); KEYS's page */
#define RESP_KEYS_MAX (64u << 20)   /* KEYS's reply at most (beyond: an error, use SCAN) */
#define RESP_MULTI_MAX 100000       /* commands one MULTI may queue (and RESP_IN_MAX bytes of them) */
#define RESP_FLOAT_TRIES 1000      /* INCRBYFLOAT's reads whose key changed before its write */
#define RESP_EXEC_TRIES 50          /* runs of one EXEC that a concurrent write may undo (40001, 40P01) */
/* RESP_KEYS_MAX, or less for a test (TUSK_TEST_RESP_KEYS_MAX_MB: to see the bound act
 * without 64 MB of keys); set once by kv_resp_register, before any worker runs. */
static size_t keys_max = RESP_KEYS_MAX;

enum step { STEP_NONE, STEP_GET, STEP_SET, STEP_SET_NX, STEP_DEL,
	    STEP_EXISTS, STEP_MGET, STEP_MSET, STEP_TOUCH, STEP_TTL, STEP_INCR, STEP_SCAN, STEP_DBSIZE,
	    STEP_TYPE, STEP_STRLEN, STEP_SETNX, STEP_SWAP, STEP_GETEX_BAD, STEP_SET_HOW, STEP_SET_PAST,
	    STEP_SET_PAST_NX, STEP_KEYS, STEP_WATCH, STEP_MSETNX, STEP_RENAME,
	    STEP_FLOAT_READ, STEP_FLOAT_PUT, STEP_RANDOMKEY, STEP_FLUSH, STEP_OBJECT };

/* SET's options, as STEP_SET_HOW carries them to kv.set's answer. */
enum { SET_NX = 1, SET_XX = 2, SET_GET = 4, SET_KEEPTTL = 8 };

/* EXEC's steps: a read for routing to be ready (the first calls after start need the
 * catalog), the queued commands one after another, the transaction's end. */
enum exec_phase { EXEC_NONE, EXEC_WARM, EXEC_WATCHED, EXEC_CMDS, EXEC_END, EXEC_PAUSE };

/* Before the first command: TLS is settled (sniffed, then handshaken) under a deadline. */
enum resp_phase {
	RESP_SNIFF,     /* a TLS listener: the first byte says ClientHello (0x16) or plaintext */
	RESP_HANDSHAKE, /* the TLS handshake runs */
	RESP_READY,     /* commands (over c->link: plaintext or TLS) */
};

struct resp_conn {
	struct resp_conn *prev, *next; /* the worker's list; unlinked once closed */
	struct worker *worker;
	int fd;                        /* -1: closed (an orphan waiting for its call's answer) */
	ev_io io;
	unsigned long long id;         /* HELLO's "id": numbered from 1 in the order accepted */
	enum resp_phase phase;
	struct tls_link link;          /* conn NULL: plaintext */
	struct tls_ctx *tls;           /* the listen entry's; NULL: tls disable */
	int tls_mode;                  /* enum config_tls_listen */
	ev_timer deadline;             /* TLS settled within client_login_timeout; then an LDAP or PAM
					* check of AUTH answered within it */
	bool away;                     /* its handshake runs on a handshake thread (rt->tls_hs): fd
					* and link.conn are that thread's until hs_back */
	bool closed_away;              /* closed while away: hs_back closes the socket and frees */
	char cert_user[64];            /* verify-full: the client certificate's CN, the only user */
	const struct config_listen *listen; /* its entry (generations live until exit) */
	struct net_addr peer;          /* for hba_file */
	char ns[64];                   /* the selected database's namespace */
	int db;                        /* and its number (SELECT's) */
	char *client_name;             /* CLIENT SETNAME's (or HELLO's SETNAME), heap; NULL: none */
	int hello_name_arg;            /* HELLO's SETNAME argument, set once its AUTH passed; 0: none */
	char user[64];
	bool authed, closing;
	bool resp3;                    /* HELLO 3: nulls are _, HELLO's reply a map */
	struct authq_req *authq;       /* AUTH waits for auth_query's answer */
	struct extauth_check *ext;     /* an LDAP or PAM check, or the host-name lookup, in flight
					* (frontend/extauth.h): what ext_for says waits for it */
	enum { EXT_CHECK, EXT_NAME_OPEN, EXT_NAME_AUTH } ext_for;
	const struct hba_peer_name *name; /* hba_file's host-name lines: the peer's name once looked
					   * up (heap, or hba_no_name: none found, or not in time), else NULL */
	int auth_user_arg, auth_pass_arg; /* where AUTH's (or HELLO's) user and password are; 0: user default */
	int hello;                     /* HELLO's protocol version, answered once AUTH passed; 0: AUTH */
	bool busy;                     /* a call is with the router */
	char *in;                      /* [in_off, in_len): unparsed input */
	size_t in_off, in_len, in_cap;
	char *out;
	size_t out_off, out_len, out_cap;
	struct resp_arg *args;
	int args_cap, nargs;
	size_t used;                   /* bytes of the command being run */
	enum step step;
	bool pttl;                     /* TTL in ms */
	bool ttl_abs;                  /* EXPIRETIME: the expiry, not the time left */
	const char *bad_time;          /* STEP_GETEX_BAD: the error for a key that exists */
	unsigned set_how;              /* STEP_SET_HOW: SET's options, SET_NX | SET_XX | SET_GET | SET_KEEPTTL;
					* STEP_RENAME: SET_NX for RENAMENX */
	long long ttl_ms;              /* SET's EX/PX (0: none) */
	long long count;
	size_t float_at;               /* STEP_FLOAT_PUT: the new value's JSON text in vals */
	const char *object_sub;        /* STEP_OBJECT: OBJECT's subcommand, lower case */
	struct kv_job job;
	struct worker_msg *msg;
	char *vals;                    /* the job's texts, NUL-terminated */
	size_t vals_len, vals_cap;
	size_t *offs;                  /* keys (then values) as offsets into vals */
	const char **ptrs;
	int *order;                    /* argument index of each unique key */
	int nunique, list_cap;
	char *scan_after[RESP_SCAN_CURSORS];
	char *keys;                    /* KEYS: the keys found so far, as bulk strings */
	size_t keys_len, keys_cap;
	long long nkeys;
	bool keys_exact;               /* KEYS of a key without wildcards: that key or nothing */
	int glob_arg;                  /* SCAN's MATCH or KEYS's pattern, when more than prefix*: its
					* argument (the keys under its literal prefix are filtered by it);
					* 0: none */
	unsigned long long scan_id[RESP_SCAN_CURSORS], scan_next;
	/* MULTI ... EXEC (docs/kv.md, "Transactions") */
	bool multi;                    /* MULTI seen: commands are queued, not run */
	bool multi_dirty;              /* a command was refused while queued: EXEC discards them all */
	char *mq;                      /* the queued commands' bytes, one after another */
	size_t mq_len, mq_cap;
	int mq_n;
	enum exec_phase exec;          /* EXEC runs (waiting() while it does) */
	bool exec_warmed;              /* a read was made for routing to be ready: not again */
	bool exec_rollback;            /* its end is a ROLLBACK: the client left, or (exec_again) it runs again */
	bool exec_again;               /* a call met a concurrent write (40001, 40P01): run the queue again */
	bool exec_savepoints;          /* its runs put each call under a savepoint (a command failed) */
	int exec_tries;                /* runs of this EXEC so far */
	ev_timer exec_wait;            /* before a run again: a random pause, longer with each run */
	int exec_i;                    /* queued commands run so far */
	size_t exec_pos;               /* where the next one starts in mq */
	const char *abase;             /* while EXEC runs one: its bytes (arguments are offsets) */
	struct kv_txn txn;
	char *held;                    /* out before EXEC: the replies of EXEC's commands go to a */
	size_t held_off, held_len, held_cap; /* fresh out until they are known to stand */
	/* WATCH: each key as read then, one record after another: u32 ns length, ns, u32 key
	 * length, key, u32 meta length (UINT32_MAX: none), meta (kv.watch_tag's answer) */
	char *watch;
	size_t watch_len, watch_cap;
	int nwatch;
	int watch_i;                   /* WATCH: keys read so far; EXEC: keys checked so far */
	size_t watch_pos;              /* EXEC: where the next key to check is */
	bool watch_broke;              /* EXEC: a watched key changed: the transaction aborts */
};

struct resp_worker {
	struct resp_conn *head;
};

struct worker_hooks kv_resp_worker_hooks;

static struct resp_worker *rw_of(struct worker *w)
{
	return worker_slot(w, kv_resp_worker_hooks.slot);
}

/* Where the arguments' offsets count from: the input, or the queued command EXEC runs. */
static const char *abase(const struct resp_conn *c)
{
	return c->abase ? c->abase : c->in + c->in_off;
}

static const char *arg(const struct resp_conn *c, int i)
{
	return abase(c) + c->args[i].off;
}

static size_t alen(const struct resp_conn *c, int i)
{
	return c->args[i].len;
}

static bool is(const struct resp_conn *c, int i, const char *name)
{
	return resp_is(abase(c), &c->args[i], name);
}

/* ---- output ---- */

/* What one large command grew (past RESP_SHRINK) is given back once it is empty again. */
static void give_back(char **buf, size_t *cap)
{
	if (*cap > RESP_SHRINK) {
		free(*buf);
		*buf = NULL;
		*cap = 0;
	}
}

static bool out_room(struct resp_conn *c, size_t n)
{
	if (c->out_off > 0 && c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	if (c->out_cap - c->out_len >= n)
		return true;
	if (c->out_off > 0) {
		memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
		c->out_len -= c->out_off;
		c->out_off = 0;
	}
	char *p = grow_bytes(c->out, &c->out_cap, c->out_len + n, 4096);
	if (!p)
		return false;
	c->out = p;
	return true;
}

static struct resp_out ro(struct resp_conn *c)
{
	return (struct resp_out){ c->out, c->out_len, c->out_cap };
}

/* Every reply goes through these; out of memory closes the connection. */
#define REPLY(c, need, call)                                     \
	do {                                                     \
		if (!out_room((c), (need))) {                    \
			(c)->closing = true;                     \
			break;                                   \
		}                                                \
		struct resp_out o_ = ro(c);                      \
		if (call(&o_))                                   \
			(c)->out_len = o_.len;                   \
	} while (0)

static void reply_simple(struct resp_conn *c, const char *s)
{
	size_t n = strlen(s) + 3;
#define CALL(o) resp_out_simple(o, s)
	REPLY(c, n, CALL);
#undef CALL
}

static void reply_error(struct resp_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply_error(struct resp_conn *c, const char *fmt, ...)
{
	char buf[1200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	size_t n = strlen(buf) + 3;
#define CALL(o) resp_out_error(o, buf)
	REPLY(c, n, CALL);
#undef CALL
}

static void reply_int(struct resp_conn *c, long long v)
{
#define CALL(o) resp_out_int(o, v)
	REPLY(c, 32, CALL);
#undef CALL
}

static void reply_nil(struct resp_conn *c)
{
	if (c->resp3)
		REPLY(c, 8, resp_out_null3);
	else
		REPLY(c, 8, resp_out_nil);
}

static void reply_array(struct resp_conn *c, long long n)
{
#define CALL(o) resp_out_array(o, n)
	REPLY(c, 32, CALL);
#undef CALL
}

static void reply_bulk(struct resp_conn *c, const char *p, size_t len)
{
#define CALL(o) resp_out_bulk(o, p, len)
	REPLY(c, len + 32, CALL);
#undef CALL
}

static void reply_str(struct resp_conn *c, const char *s)
{
	reply_bulk(c, s, strlen(s));
}

/* n pairs follow: a map on RESP3, a flat array of 2n on RESP2 (as Redis). */
static void reply_map(struct resp_conn *c, long long n)
{
	if (c->resp3) {
#define CALL(o) resp_out_map3(o, n)
		REPLY(c, 32, CALL);
#undef CALL
	} else {
		reply_array(c, 2 * n);
	}
}

/* A kv value (JSON text) as a Redis string (resp_out_value: a JSON string unquoted in place). */
static void reply_value(struct resp_conn *c, const char *v, size_t n)
{
#define CALL(o) resp_out_value(o, v, n)
	REPLY(c, RESP_VALUE_ROOM(n), CALL);
#undef CALL
}

/* A value's length as a Redis string (STRLEN): unquoted where reply_value would (into the
 * output buffer's free space, not kept). */
static long long value_length(struct resp_conn *c, const char *v, size_t n)
{
	if (n < 2 || v[0] != '"')
		return (long long)n;
	if (!out_room(c, n)) {
		c->closing = true;
		return (long long)n;
	}
	long k = resp_json_unquote(v, n, c->out + c->out_len);
	return k >= 0 ? k : (long long)n;
}

/* ---- the connection ---- */

/* The namespace of SELECT db (0 <= db < CONFIG_KV_DATABASES) on entry l; NULL: unmapped. */
static const char *db_namespace(const struct config_listen *l, int db)
{
	if (l->kv_databases[db])
		return l->kv_databases[db];
	if (db == 0)
		return l->kv_namespace ? l->kv_namespace : "default";
	return NULL;
}

/* A call with the router or an auth_query in flight: the next command waits. */
static bool waiting(const struct resp_conn *c)
{
	return c->busy || c->authq || c->ext || c->exec;
}

static void conn_free(struct resp_conn *c)
{
	kv_txn_abandon(&c->txn); /* (normally ended already: EXEC's end, or exec_left's) */
	kv_job_free(&c->job);
	free(c->in);
	free(c->out);
	free(c->args);
	free(c->vals);
	free(c->offs);
	free(c->ptrs);
	free(c->order);
	for (int i = 0; i < RESP_SCAN_CURSORS; i++)
		free(c->scan_after[i]);
	free(c->keys);
	free(c->client_name);
	free(c->mq);
	free(c->held);
	free(c->watch);
	free(c);
}

static void conn_close(struct resp_conn *c)
{
	struct worker *w = c->worker;
	struct resp_worker *rw = rw_of(w);

	if (c->fd < 0 || c->closed_away)
		return;
	evio_watch(w->loop, &c->io, c->fd, 0);
	ev_timer_stop(w->loop, &c->deadline);
	ev_timer_stop(w->loop, &c->exec_wait); /* a paused EXEC holds no shard connection */
	if (c->authq) {
		authquery_cancel(c->authq);
		c->authq = NULL;
	}
	if (c->ext) {
		extauth_cancel(c->ext); /* its answer is dropped */
		c->ext = NULL;
	}
	if (c->name != &hba_no_name)
		free((void *)c->name);
	c->name = NULL;
	if (c->away) {
		c->closed_away = true; /* the socket and TLS state are the handshake thread's */
	} else {
		tls_link_close(&c->link);
		close(c->fd);
		c->fd = -1;
	}
	atomic_fetch_sub_explicit(&w->rt->nclients, 1, memory_order_relaxed);
	if (c->prev)
		c->prev->next = c->next;
	else
		rw->head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	if (!c->busy && !c->away)
		conn_free(c); /* else freed when the router answers, or by hs_back */
}

static void process(struct resp_conn *c);

static void update_io(struct resp_conn *c)
{
	bool pending = !c->exec && c->out_len > c->out_off;
	if (c->closing && !pending && !c->exec) {
		conn_close(c);
		return;
	}
	bool rd = !waiting(c) && !c->closing && c->out_len - c->out_off < RESP_OUT_PAUSE;
	evio_watch(c->worker->loop, &c->io, c->fd, tls_link_events(&c->link, rd, pending));
	/* Records OpenSSL already holds wake no poll: read them now there is room (fed after
	 * the watcher is armed: rearming it would drop the event). */
	if (rd && c->link.buffered)
		ev_feed_event(c->worker->loop, &c->io, EV_READ);
}

static bool flush_out(struct resp_conn *c)
{
	if (c->exec)
		return true; /* out holds EXEC's replies, which may yet be taken back */
	while (c->out_len > c->out_off) {
		ssize_t n = tls_link_write(c->fd, &c->link, c->out + c->out_off, c->out_len - c->out_off);
		if (n > 0) {
			c->out_off += (size_t)n;
			continue;
		}
		return n == -EAGAIN;
	}
	c->out_off = c->out_len = 0;
	give_back(&c->out, &c->out_cap);
	return true;
}

/* Run what the input holds, write what that replied, and watch for what comes next. */
static void run_and_flush(struct resp_conn *c)
{
	process(c);
	if (c->fd >= 0 && c->out_len > c->out_off && !flush_out(c)) {
		conn_close(c);
		return;
	}
	if (c->fd >= 0)
		update_io(c);
}

/* What resp_auth.h needs of the connection. */
static struct resp_auth_conn auth_conn(const struct resp_conn *c)
{
	return (struct resp_auth_conn){ c->worker, &c->peer, c->link.conn, c->cert_user, c->name };
}

static void start_name(struct resp_conn *c, int ext_for);

/* Whether the connection's user is in without AUTH; false while its host name is looked up
 * first (start_name: commands wait). */
static void check_open(struct resp_conn *c)
{
	struct resp_auth_conn a = auth_conn(c);
	enum resp_auth_result r = resp_auth_open(&a, c->user);
	c->authed = r == RESP_AUTH_OK;
	if (r == RESP_AUTH_NEED_NAME)
		start_name(c, EXT_NAME_OPEN);
}

/* TLS is done (or plaintext was taken): commands from now on, as Redis's user "default" (or,
 * on verify-full, the certificate's CN), in without AUTH when that user's method needs no
 * password. */
static void tls_settled(struct resp_conn *c)
{
	ev_timer_stop(c->worker->loop, &c->deadline);
	c->phase = RESP_READY;
	if (c->cert_user[0])
		snprintf(c->user, sizeof c->user, "%s", c->cert_user);
	check_open(c);
}

/* The log context of c, "kv/user@addr:port" (log.h), into out[cap]. */
static const char *conn_ctx(const struct resp_conn *c, const char *user, char *out, size_t cap)
{
	char addr[128];
	net_addr_str(&c->peer, addr, sizeof addr);
	log_ctx_format(out, cap, "kv", user, addr);
	return out;
}

static void refuse(struct resp_conn *c, const char *why)
{
	char ctx[256];
	log_info(NULL, conn_ctx(c, c->user, ctx, sizeof ctx), "kv redis: %s", why);
	conn_close(c);
}

/* The handshake ended with rc (0: done): false when the connection was closed. */
static bool tls_finish(struct resp_conn *c, int rc)
{
	if (rc < 0) {
		char why[TLS_ERR_MAX + 32];
		snprintf(why, sizeof why, "TLS handshake failed: %s", tls_conn_error(c->link.conn));
		refuse(c, why);
		return false;
	}
	if (c->tls_mode == CONFIG_TLS_VERIFY_FULL && !tls_peer_cn(c->link.conn, c->cert_user, sizeof c->cert_user)) {
		refuse(c, "verify-full: the client certificate has no usable CN");
		return false;
	}
	tls_settled(c);
	c->link.buffered = true; /* commands may have come with the last flight */
	return true;
}

static bool hs_hand_over(struct resp_conn *c);

/* The TLS handshake, non-blocking, on the worker: all of it without handshake threads; with
 * them, a resumption and the ClientHello of a full handshake, whose signature and the rest go
 * to a thread (sniff, as frontend/client.c's). False when the connection was closed. */
static bool tls_step(struct resp_conn *c)
{
	int want = 0;
	int rc = tls_handshake(c->link.conn, &want);
	if (rc == -EAGAIN) {
		evio_watch(c->worker->loop, &c->io, c->fd, want);
		return true;
	}
	if (rc == -EINPROGRESS) /* a full handshake: on a thread, or here if none takes it */
		return hs_hand_over(c) || tls_step(c);
	if (rc == 0)
		worker_tls_note_kept(c->worker, c->link.conn);
	return tls_finish(c, rc);
}

/* Back on the worker (hs_hand_over): the socket and TLS state are the worker's again. */
static void hs_back(struct worker *w, struct worker_msg *m)
{
	struct resp_conn *c = m->arg;
	(void)w;

	c->away = false;
	if (c->closed_away) {
		tls_link_close(&c->link);
		close(c->fd);
		c->fd = -1;
		conn_free(c);
		return;
	}
	if (m->num == -ETIMEDOUT) {
		refuse(c, "TLS not settled within client_login_timeout");
		return;
	}
	if (tls_finish(c, m->num))
		run_and_flush(c);
}

/* Hand the rest of a full handshake (its ClientHello read) to a handshake thread (rt->tls_hs),
 * as the SQL clients' are (frontend/client.c), so that no signature runs on the worker that
 * relays. false: there is none, or no memory: the worker runs it. */
static bool hs_hand_over(struct resp_conn *c)
{
	struct worker *w = c->worker;
	/* The deadline timer runs from accept until TLS is settled: the thread takes what is left. */
	double deadline = ev_now(w->loop) + ev_timer_remaining(w->loop, &c->deadline);
	if (!worker_tls_hand_over(w, c->link.conn, c->fd, deadline, hs_back, c))
		return false;
	evio_watch(w->loop, &c->io, c->fd, 0);
	ev_timer_stop(w->loop, &c->deadline); /* the thread keeps it meanwhile */
	c->away = true;
	return true;
}

/* A TLS listener's first byte: a TLS record (0x16, a handshake) starts TLS; plaintext is
 * taken by `allow` and refused by the other modes with a reply a Redis client shows. False
 * when the connection was closed or the byte has not come yet. */
static bool sniff(struct resp_conn *c)
{
	unsigned char b;
	ssize_t n = recv(c->fd, &b, 1, MSG_PEEK);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return false;
	if (n <= 0) {
		conn_close(c);
		return false;
	}
	if (b == 0x16) {
		c->link.conn = tls_conn_new(c->tls, c->fd, true, NULL);
		if (!c->link.conn) {
			refuse(c, "out of memory starting TLS");
			return false;
		}
		c->phase = RESP_HANDSHAKE;
		/* A resumption finishes on the worker, a full handshake stops before its signature
		 * and goes to a thread (tls_step; net/tls.h, tls_conn_defer_full). */
		worker_tls_defer_full(c->worker, c->link.conn);
		return true;
	}
	if (c->tls_mode == CONFIG_TLS_ALLOW) {
		tls_settled(c);
		return true;
	}
	static const char req[] = "-ERR tusk: TLS is required on this listener (redis-cli --tls)\r\n";
	(void)!send(c->fd, req, sizeof req - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
	refuse(c, "a plaintext client on a TLS listener");
	return false;
}

static void ext_timed_out(struct resp_conn *c);

static void deadline_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct resp_conn *c = t->data;
	(void)loop;
	(void)revents;
	if (c->ext) {
		ext_timed_out(c);
		return;
	}
	refuse(c, "TLS not settled within client_login_timeout");
}

static void io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct resp_conn *c = io->data;
	(void)loop;

	if (c->phase == RESP_SNIFF && !sniff(c))
		return;
	if (c->phase == RESP_HANDSHAKE && (!tls_step(c) || c->phase != RESP_READY))
		return;
	/* A TLS read may wait for writability or a write for readability (key updates): on
	 * such an event try both. */
	if (tls_link_crossed(&c->link))
		revents |= EV_READ | EV_WRITE;
	if (c->link.buffered)
		revents |= EV_READ;
	if (revents & EV_WRITE) {
		if (!flush_out(c)) {
			conn_close(c);
			return;
		}
	}
	if ((revents & EV_READ) && !waiting(c) && !c->closing) {
		if (c->in_off > 0) {
			memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
			c->in_len -= c->in_off;
			c->in_off = 0;
		}
		if (c->in_cap - c->in_len < RESP_READ_CHUNK / 4) {
			size_t cap = c->in_cap ? c->in_cap * 2 : RESP_READ_CHUNK;
			if (cap > RESP_IN_MAX + RESP_READ_CHUNK)
				cap = RESP_IN_MAX + RESP_READ_CHUNK;
			char *p = cap > c->in_cap ? realloc(c->in, cap) : NULL;
			if (!p && c->in_cap - c->in_len == 0) {
				conn_close(c); /* out of memory or past RESP_IN_MAX: process() said so */
				return;
			}
			if (p) {
				c->in = p;
				c->in_cap = cap;
			}
		}
		ssize_t n = tls_link_read(c->fd, &c->link, c->in + c->in_len, c->in_cap - c->in_len);
		if (n == 0 || (n < 0 && n != -EAGAIN)) {
			conn_close(c);
			return;
		}
		if (n > 0)
			c->in_len += (size_t)n;
	}
	run_and_flush(c);
}

static void exec_wait_cb(struct ev_loop *loop, ev_timer *t, int revents);

static void kv_resp_accept(struct worker *w, int fd, const struct net_addr *peer, const struct config_listen *l,
			   struct tls_ctx *tls)
{
	struct runtime *rt = w->rt;
	int now = atomic_fetch_add_explicit(&rt->nclients, 1, memory_order_relaxed);
	struct resp_conn *c = calloc(1, sizeof *c);
	(void)peer;

	if (!c || now >= rt->cfg->max_client_connections) {
		static const char full[] = "-ERR max number of clients reached\r\n";
		if (c)
			(void)!send(fd, full, sizeof full - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
		free(c);
		close(fd);
		atomic_fetch_sub_explicit(&rt->nclients, 1, memory_order_relaxed);
		return;
	}
	static atomic_ullong next_id; /* only numbers connections: no ordering needed */
	c->id = atomic_fetch_add_explicit(&next_id, 1, memory_order_relaxed) + 1;
	c->worker = w;
	c->fd = fd;
	c->listen = l;
	c->peer = *peer;
	snprintf(c->ns, sizeof c->ns, "%s", db_namespace(l, 0));
	snprintf(c->user, sizeof c->user, "default");
	c->phase = tls ? RESP_SNIFF : RESP_READY;
	c->tls = tls;
	c->tls_mode = tls ? l->tls : CONFIG_TLS_DISABLE;
	ev_timer_init(&c->deadline, deadline_cb, (double)rt->cfg->client_login_timeout_ms / 1000.0, 0.);
	c->deadline.data = c;
	if (tls)
		ev_timer_start(w->loop, &c->deadline);
	else
		tls_settled(c);
	struct resp_worker *rw = rw_of(w);
	c->next = rw->head;
	if (rw->head)
		rw->head->prev = c;
	rw->head = c;
	ev_init(&c->io, io_cb);
	c->io.data = c;
	ev_init(&c->exec_wait, exec_wait_cb);
	c->exec_wait.data = c;
	evio_watch(w->loop, &c->io, fd, EV_READ);
}

/* ---- running calls ---- */

static void on_answer(struct worker *w, struct worker_msg *m);

static void answer_done(struct kv_job *job)
{
	struct resp_conn *c = job->arg;
	struct worker_msg *m = c->msg;
	c->msg = NULL;
	if (job->local)
		worker_post_local(c->worker, m); /* ran on this worker's loop */
	else
		worker_post(c->worker, m);
}

static void vals_reset(struct resp_conn *c)
{
	c->vals_len = 0;
}

/* Room in vals for n more bytes. */
static bool vals_room(struct resp_conn *c, size_t n)
{
	char *v = grow_bytes(c->vals, &c->vals_cap, c->vals_len + n, 1024);
	if (!v)
		return false;
	c->vals = v;
	return true;
}

/* Append s[0, n) and a NUL: its offset, or SIZE_MAX (out of memory). */
static size_t add_val(struct resp_conn *c, const char *s, size_t n)
{
	if (!vals_room(c, n + 1))
		return SIZE_MAX;
	memcpy(c->vals + c->vals_len, s, n);
	c->vals[c->vals_len + n] = '\0';
	size_t off = c->vals_len;
	c->vals_len += n + 1;
	return off;
}

/* A ttl of ms milliseconds as an interval's text in vals: its offset, SIZE_MAX out of memory. */
static size_t add_ttl(struct resp_conn *c, long long ms)
{
	char ttl[48];
	int n = snprintf(ttl, sizeof ttl, "%lld milliseconds", ms);
	return add_val(c, ttl, (size_t)n);
}

/* The wall clock in milliseconds: Redis's absolute times and expiries are read by it. */
static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A Redis time t, in seconds or (ms) milliseconds, relative or (at) a unix time, as a ttl in
 * milliseconds by tusk's clock in *ttl; false where Redis refuses it (seconds past 64 bits of
 * milliseconds, a relative time whose sum with now is). A time in the past is -1 ms, whatever
 * its distance, as it is to Redis (the key goes), and no interval of PostgreSQL's overflows. */
static bool time_to_ttl(long long t, bool ms, bool at, long long *ttl)
{
	if (!ms && (t > LLONG_MAX / 1000 || t < LLONG_MIN / 1000))
		return false;
	long long when = ms ? t : t * 1000, now = now_ms();
	if (!at && when > LLONG_MAX - now)
		return false;
	*ttl = at ? (when < now ? -1 : when - now) : (when < 0 ? -1 : when);
	return true;
}

/* A Redis string as the JSON text of a kv value, quoted straight into vals: its offset,
 * SIZE_MAX out of memory, SIZE_MAX - 1 when it cannot be one (a NUL byte). */
static size_t add_json(struct resp_conn *c, const char *s, size_t n)
{
	size_t cap = 6 * n + 2;
	if (!vals_room(c, cap + 1))
		return SIZE_MAX;
	long k = resp_json_quote(s, n, c->vals + c->vals_len, cap);
	if (k < 0)
		return SIZE_MAX - 1;
	c->vals[c->vals_len + (size_t)k] = '\0';
	size_t off = c->vals_len;
	c->vals_len += (size_t)k + 1;
	return off;
}

static bool lists_room(struct resp_conn *c, int n)
{
	if (n <= c->list_cap)
		return true;
	size_t *o = realloc(c->offs, (size_t)n * 2 * sizeof *o);
	if (o)
		c->offs = o;
	const char **p = o ? realloc(c->ptrs, (size_t)n * 2 * sizeof *p) : NULL;
	if (p)
		c->ptrs = p;
	int *ord = p ? realloc(c->order, (size_t)n * sizeof *ord) : NULL;
	if (!ord)
		return false;
	c->order = ord;
	c->list_cap = n;
	return true;
}

/* Submit the job set up in c->job (strings as offsets resolved by the caller). */
static void submit(struct resp_conn *c, enum step step)
{
	struct kv_router *r = atomic_load_explicit(&c->worker->rt->kv_router, memory_order_acquire);
	if (!r) {
		reply_error(c, "ERR tusk: kv routing is not running (see tusk's log)");
		return;
	}
	c->msg = worker_msg_new(); /* recycled by the worker after on_answer */
	if (!c->msg) {
		reply_error(c, "ERR out of memory");
		return;
	}
	c->msg->fn = on_answer;
	c->msg->arg = c;
	c->job.done = answer_done;
	c->job.arg = c;
	c->job.worker = c->worker;
	c->job.txn = c->exec == EXEC_WATCHED || c->exec == EXEC_CMDS || c->exec == EXEC_END ? &c->txn : NULL;
	c->job.txn_end = c->exec != EXEC_END ? 0 : c->exec_rollback ? KV_TXN_ROLLBACK : KV_TXN_COMMIT;
	c->step = step;
	c->busy = true;
	kv_router_submit(r, &c->job);
}

/* One call on the shard of the key at vals + key (SIZE_MAX: the key is its argument 1): args as
 * texts (NULL: SQL NULL), already in vals at offs. */
static void call_routed(struct resp_conn *c, enum step step, enum kv_op op, const size_t *offs, int n, size_t key)
{
	struct kv_job *j = &c->job;
	j->op = op;
	for (int i = 0; i < KV_CALL_MAX_ARGS; i++)
		j->args[i] = i < n && offs[i] != SIZE_MAX ? c->vals + offs[i] : NULL;
	j->ns = j->args[0];
	j->key = kv_op_keyless(op) ? NULL : key != SIZE_MAX ? c->vals + key : j->args[1];
	j->nkeys = j->nvalues = 0;
	j->keys = j->values = NULL;
	submit(c, step);
}

/* One call on one key: args as texts (NULL: SQL NULL), already in vals at offs. */
static void call_key(struct resp_conn *c, enum step step, enum kv_op op, const size_t *offs, int n)
{
	call_routed(c, step, op, offs, n, SIZE_MAX);
}

/* ns and key, alone in vals: offs[0], offs[1] (the rest SIZE_MAX). false: out of memory. */
static bool vals_ns_key(struct resp_conn *c, const char *ns, const char *key, size_t klen,
			size_t offs[KV_CALL_MAX_ARGS])
{
	vals_reset(c);
	for (int k = 0; k < KV_CALL_MAX_ARGS; k++)
		offs[k] = SIZE_MAX;
	offs[0] = add_val(c, ns, strlen(ns));
	offs[1] = offs[0] == SIZE_MAX ? SIZE_MAX : add_val(c, key, klen);
	return offs[1] != SIZE_MAX;
}

/* ns and the key of argument i into vals: offs[0], offs[1]. */
static bool ns_key(struct resp_conn *c, int i, size_t offs[KV_CALL_MAX_ARGS])
{
	if (memchr(arg(c, i), '\0', alen(c, i))) {
		reply_error(c, "ERR tusk: a key may not contain a NUL byte");
		return false;
	}
	if (!vals_ns_key(c, c->ns, arg(c, i), alen(c, i), offs)) {
		reply_error(c, "ERR out of memory");
		return false;
	}
	return true;
}

/* Keys of arguments first, first + step, ... < end, deduplicated (the batches refuse a key
 * twice): c->order[0, nunique) their argument indexes (the last of equal keys), the job's
 * keys in vals. */
static _Thread_local const struct resp_conn *cmp_conn; /* qsort has no argument */
static int cmp_keys(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;
	size_t lx = alen(cmp_conn, x), ly = alen(cmp_conn, y);
	int r = memcmp(arg(cmp_conn, x), arg(cmp_conn, y), lx < ly ? lx : ly);
	if (r)
		return r;
	if (lx != ly)
		return lx < ly ? -1 : 1;
	return x < y ? -1 : x > y;
}

static bool batch_keys(struct resp_conn *c, int first, int end, int stride)
{
	int n = (end - first + stride - 1) / stride;
	if (n > KV_CALL_MAX_KEYS) {
		reply_error(c, "ERR tusk: a command takes at most %d keys", KV_CALL_MAX_KEYS);
		return false;
	}
	if (!lists_room(c, n)) {
		reply_error(c, "ERR out of memory");
		return false;
	}
	for (int i = 0; i < n; i++) {
		c->order[i] = first + i * stride;
		if (memchr(arg(c, c->order[i]), '\0', alen(c, c->order[i]))) {
			reply_error(c, "ERR tusk: a key may not contain a NUL byte");
			return false;
		}
	}
	cmp_conn = c;
	qsort(c->order, (size_t)n, sizeof *c->order, cmp_keys);
	int u = 0;
	for (int i = 0; i < n; i++) {
		if (u > 0 && alen(c, c->order[u - 1]) == alen(c, c->order[i]) &&
		    memcmp(arg(c, c->order[u - 1]), arg(c, c->order[i]), alen(c, c->order[i])) == 0)
			c->order[u - 1] = c->order[i]; /* the last one wins (MSET) */
		else
			c->order[u++] = c->order[i];
	}
	c->nunique = u;
	vals_reset(c);
	return true;
}

/* The job for a batch op over c->order's keys (and, for put_many, the values after them). */
static void call_batch(struct resp_conn *c, enum step step, enum kv_op op, bool values)
{
	size_t ns = add_val(c, c->ns, strlen(c->ns));
	bool ok = ns != SIZE_MAX;
	for (int i = 0; ok && i < c->nunique; i++) {
		c->offs[i] = add_val(c, arg(c, c->order[i]), alen(c, c->order[i]));
		ok = c->offs[i] != SIZE_MAX;
	}
	for (int i = 0; ok && values && i < c->nunique; i++) {
		int a = c->order[i] + 1;
		c->offs[c->nunique + i] = add_json(c, arg(c, a), alen(c, a));
		if (c->offs[c->nunique + i] == SIZE_MAX - 1) {
			reply_error(c, "ERR tusk: a value may not contain a NUL byte");
			return;
		}
		ok = c->offs[c->nunique + i] != SIZE_MAX;
	}
	if (!ok) {
		reply_error(c, "ERR out of memory");
		return;
	}
	int total = values ? 2 * c->nunique : c->nunique;
	for (int i = 0; i < total; i++)
		c->ptrs[i] = c->vals + c->offs[i];
	struct kv_job *j = &c->job;
	j->op = op;
	for (int i = 0; i < KV_CALL_MAX_ARGS; i++)
		j->args[i] = NULL;
	j->args[0] = j->ns = c->vals + ns;
	j->key = NULL;
	j->nkeys = c->nunique;
	j->keys = c->ptrs;
	j->nvalues = values ? c->nunique : 0;
	j->values = values ? c->ptrs + c->nunique : NULL;
	submit(c, step);
}

/* ---- answers ---- */

/* The DataRows of a job, column by column. */
struct rows {
	const uint8_t *p, *end;
};

/* A job's rows to read (none: an answer without rows may have no buffer yet). */
static struct rows rows_of(const struct kv_job *j)
{
	return j->rows ? (struct rows){ j->rows, j->rows + j->rows_len } : (struct rows){ NULL, NULL };
}

/* The next row's first ncols columns (NULL: SQL NULL). false at the end. The router built
 * them, but they are read through the bounds-checked readers all the same. */
static bool next_row(struct rows *r, int ncols, const char **col, size_t *len)
{
	struct proto_hdr h;
	size_t avail = (size_t)(r->end - r->p);
	if (proto_read_hdr(r->p, avail, UINT32_MAX, &h) != PROTO_HDR_LEN || h.type != 'D' || avail - 1 < h.len)
		return false;
	struct proto_reader rd;
	proto_reader_init(&rd, r->p + PROTO_HDR_LEN, h.len - 4);
	int n = proto_get_u16(&rd);
	for (int i = 0; i < n && !rd.err; i++) {
		uint32_t l = proto_get_u32(&rd);
		const uint8_t *v = l == UINT32_MAX ? NULL : proto_get_bytes(&rd, l);
		if (i < ncols) {
			col[i] = (const char *)v;
			len[i] = v ? l : 0;
		}
	}
	if (rd.err)
		return false;
	for (int i = n; i < ncols; i++)
		col[i] = NULL, len[i] = 0;
	r->p += 1 + h.len;
	return true;
}

static bool first_col(const struct kv_job *j, const char **v, size_t *n)
{
	struct rows r = rows_of(j);
	return next_row(&r, 1, v, n);
}

/* The number after "key": in a get_meta answer (its last occurrence: the value comes first). */
static const char *meta_field(const char *v, size_t n, const char *key)
{
	char pat[32];
	int pl = snprintf(pat, sizeof pat, "\"%s\": ", key);
	const char *found = NULL;
	for (const char *p = v; p && (size_t)(v + n - p) >= (size_t)pl;) {
		p = memmem(p, (size_t)(v + n - p), pat, (size_t)pl);
		if (p) {
			found = p + pl;
			p++;
		}
	}
	return found;
}

/* An ISO 8601 timestamp with offset ("2026-11-23T18:00:00.123456+00:00", how jsonb writes a
 * timestamptz) in ms since the epoch; -1 if malformed. */
static long long iso_ms(const char *s, const char *end)
{
	int Y, M, D, h, m, sec, n = 0;
	if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &Y, &M, &D, &h, &m, &sec, &n) != 6 || n < 19)
		return -1;
	const char *p = s + n;
	long long frac_us = 0;
	if (p < end && *p == '.') {
		int digits = 0;
		for (p++; p < end && *p >= '0' && *p <= '9'; p++, digits++)
			if (digits < 6)
				frac_us = frac_us * 10 + (*p - '0');
		for (; digits < 6; digits++)
			frac_us *= 10;
	}
	long off = 0;
	if (p < end && (*p == '+' || *p == '-')) {
		int sign = *p == '-' ? -1 : 1, oh = 0, om = 0, os = 0;
		if (sscanf(p + 1, "%2d:%2d:%2d", &oh, &om, &os) < 1)
			return -1;
		off = sign * (oh * 3600L + om * 60L + os);
	}
	struct tm tm = { .tm_year = Y - 1900, .tm_mon = M - 1, .tm_mday = D, .tm_hour = h, .tm_min = m, .tm_sec = sec };
	time_t t = timegm(&tm);
	return ((long long)t - off) * 1000 + frac_us / 1000;
}

static void finish(struct resp_conn *c);
static void keys_answer(struct resp_conn *c);
static void unwatch(struct resp_conn *c);
static bool watch_add(struct resp_conn *c, const char *key, size_t kl, const char *meta, size_t ml);
static void watch_next(struct resp_conn *c);

static void set_put(struct resp_conn *c, int vi, enum step step);
static void float_read(struct resp_conn *c);
static void float_add(struct resp_conn *c, const char *v, size_t n);
static void object_answer(struct resp_conn *c, const char *v, size_t n);

static void kv_error(struct resp_conn *c)
{
	reply_error(c, "ERR %s%s%s (SQLSTATE %s)", c->job.message, c->job.detail[0] ? ": " : "", c->job.detail,
		    c->job.sqlstate);
}

/* Binary search of the (key, value) rows of a get_many answer, in key order. */
struct kvrow {
	const char *k, *v;
	size_t kl, vl;
};

static int find_row(const struct kvrow *rows, int n, const char *k, size_t kl)
{
	int lo = 0, hi = n - 1;
	while (lo <= hi) {
		int mid = lo + (hi - lo) / 2;
		size_t ml = rows[mid].kl;
		int r = memcmp(rows[mid].k, k, ml < kl ? ml : kl);
		if (r == 0 && ml != kl)
			r = ml < kl ? -1 : 1;
		if (r == 0)
			return mid;
		if (r < 0)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return -1;
}

/* The rows of a get_many / scan answer; NULL and *n = -1 out of memory. */
static struct kvrow *kv_rows(const struct kv_job *j, int *n)
{
	struct kvrow *rows = malloc(((size_t)j->nrows + 1) * sizeof *rows);
	struct rows r = rows_of(j);
	const char *col[2];
	size_t len[2];
	*n = 0;
	if (!rows) {
		*n = -1;
		return NULL;
	}
	while ((uint64_t)*n < j->nrows && next_row(&r, 2, col, len) && col[0]) {
		rows[*n] = (struct kvrow){ col[0], col[1], len[0], len[1] };
		(*n)++;
	}
	return rows;
}

/* SCAN's MATCH and KEYS's patterns are Redis's globs (* ? [...] with ^ and ranges, \ escapes),
 * matched byte by byte as Redis's stringmatchlen matches them, by fnmatch(3) in the C locale
 * (tusk sets no other): kv.scan lists the keys under the pattern's literal prefix, the bytes
 * before its first * ? [ or \, and the pattern filters them here. fnmatch also reads [!...] as
 * a negation and [[:alpha:]] as a class, where Redis reads them as sets of those bytes. */
#define RESP_GLOB_MAX 2048 /* a pattern's bytes */
#define RESP_KEY_MAX 1024  /* a kv key's (KV_KEY_OK_SQL) */

static size_t glob_literal(const char *p, size_t n)
{
	size_t i = 0;
	while (i < n && !memchr("*?[\\", p[i], 4))
		i++;
	return i;
}

/* Argument i, a pattern of what (MATCH, KEYS), is one tusk takes; else the error is replied. */
static bool glob_ok(struct resp_conn *c, int i, const char *what)
{
	if (memchr(arg(c, i), '\0', alen(c, i))) {
		reply_error(c, "ERR tusk: a key may not contain a NUL byte");
		return false;
	}
	if (alen(c, i) > RESP_GLOB_MAX) {
		reply_error(c, "ERR tusk: a %s pattern takes at most %d bytes", what, RESP_GLOB_MAX);
		return false;
	}
	return true;
}

/* A pattern that is a literal prefix and one '*' needs no filter: kv.scan's prefix is it. */
static bool glob_is_prefix(const char *p, size_t n)
{
	return n > 0 && p[n - 1] == '*' && glob_literal(p, n) == n - 1;
}

/* glob_arg's pattern NUL-terminated into out (RESP_GLOB_MAX + 1 bytes). */
static const char *glob_of(const struct resp_conn *c, char *out)
{
	size_t n = alen(c, c->glob_arg);
	memcpy(out, arg(c, c->glob_arg), n);
	out[n] = '\0';
	return out;
}

static bool glob_match(const char *pat, const char *k, size_t kl)
{
	char key[RESP_KEY_MAX + 1];
	if (kl > RESP_KEY_MAX)
		return false;
	memcpy(key, k, kl);
	key[kl] = '\0';
	return fnmatch(pat, key, 0) == 0;
}

static void scan_answer(struct resp_conn *c)
{
	int n;
	struct kvrow *rows = kv_rows(&c->job, &n);
	if (n < 0) {
		reply_error(c, "ERR out of memory");
		return;
	}
	unsigned long long id = 0;
	if (n > 0 && n >= c->count) {
		int slot = (int)(c->scan_next % RESP_SCAN_CURSORS);
		char *k = malloc(rows[n - 1].kl + 1);
		if (k) {
			memcpy(k, rows[n - 1].k, rows[n - 1].kl);
			k[rows[n - 1].kl] = '\0';
			free(c->scan_after[slot]);
			c->scan_after[slot] = k;
			id = c->scan_id[slot] = ++c->scan_next;
		}
	}
	char cur[24];
	snprintf(cur, sizeof cur, "%llu", id);
	reply_array(c, 2);
	reply_bulk(c, cur, strlen(cur));
	/* A page of COUNT keys scanned, fewer (or none) matched: as Redis's MATCH, applied after
	 * the keys are read. */
	char globbuf[RESP_GLOB_MAX + 1];
	const char *glob = c->glob_arg ? glob_of(c, globbuf) : NULL;
	int matched = 0; /* the rows kept close up (the cursor above has the page's last key) */
	for (int i = 0; i < n; i++)
		if (!glob || glob_match(glob, rows[i].k, rows[i].kl))
			rows[matched++] = rows[i];
	reply_array(c, matched);
	for (int i = 0; i < matched; i++)
		reply_bulk(c, rows[i].k, rows[i].kl);
	free(rows);
}

static void answer(struct resp_conn *c)
{
	struct kv_job *j = &c->job;
	const char *v = NULL;
	size_t n = 0;

	if (j->failed) {
		if (c->step == STEP_WATCH)
			unwatch(c); /* as if WATCH had not come: none of its keys is watched */
		if (c->step == STEP_SET_NX && strcmp(j->sqlstate, "KV001") == 0)
			reply_nil(c);
		else if (c->step == STEP_SETNX && strcmp(j->sqlstate, "KV001") == 0)
			reply_int(c, 0);
		else if (c->step == STEP_INCR && strcmp(j->sqlstate, "KV002") == 0) /* Redis's words */
			reply_error(c, "ERR value is not an integer or out of range");
		else if (c->step == STEP_INCR && strcmp(j->sqlstate, "22003") == 0)
			reply_error(c, "ERR increment or decrement would overflow");
		else if (c->step == STEP_RENAME && strcmp(j->sqlstate, "KV004") == 0)
			reply_error(c, "ERR no such key");
		else if ((c->step == STEP_RENAME || c->step == STEP_MSETNX) && strcmp(j->sqlstate, "22023") == 0 &&
			 strstr(j->message, "belongs to shard")) /* kv._check: keys of another shard (routing not
								   * ready when the command was checked) */
			reply_error(c, "CROSSSLOT Keys in request don't hash to the same slot");
		else
			kv_error(c);
		return;
	}
	if (c->step != STEP_EXISTS && c->step != STEP_MGET && c->step != STEP_SCAN && c->step != STEP_KEYS)
		(void)first_col(j, &v, &n);
	switch (c->step) {
	case STEP_GET:
	case STEP_SWAP: /* kv.swap answers the old value as kv.read reads it */
		/* kv.read: the value, else a counter (0 too) as a JSON number (its decimal text,
		 * as Redis's GET after INCR), else NULL */
		if (v)
			reply_value(c, v, n);
		else
			reply_nil(c);
		return;
	case STEP_SET_HOW: /* kv.set: the old value; written unless NX found it or XX did not */
		if ((c->set_how & SET_GET) && v)
			reply_value(c, v, n);
		else if ((c->set_how & SET_GET) || ((c->set_how & SET_NX) && v) || ((c->set_how & SET_XX) && !v))
			reply_nil(c);
		else
			reply_simple(c, "OK");
		return;
	case STEP_GETEX_BAD: /* as Redis: the key looked up before the time is checked */
		if (v)
			reply_error(c, "%s", c->bad_time);
		else
			reply_nil(c);
		return;
	case STEP_TYPE: /* every kv value, and a counter, is a Redis string */
		reply_simple(c, v ? "string" : "none");
		return;
	case STEP_STRLEN:
		reply_int(c, v ? value_length(c, v, n) : 0);
		return;
	case STEP_SET:
	case STEP_SET_NX:
	case STEP_MSET:
		reply_simple(c, "OK");
		return;
	case STEP_SETNX:
		reply_int(c, 1);
		return;
	case STEP_MSETNX: /* kv.msetnx: true when written */
		reply_int(c, v && n == 1 && *v == 't');
		return;
	case STEP_FLOAT_READ:
		float_add(c, v, n);
		return;
	case STEP_RANDOMKEY: /* kv.random_key of every shard: one of their keys, or none */
		if (v)
			reply_bulk(c, v, n);
		else
			reply_nil(c);
		return;
	case STEP_FLUSH:
		reply_simple(c, "OK");
		return;
	case STEP_OBJECT:
		object_answer(c, v, n);
		return;
	case STEP_FLOAT_PUT: /* kv.put_if_value: written, or the key changed since it was read */
		if (v && n == 1 && *v == 't')
			reply_bulk(c, c->vals + c->float_at + 1, strlen(c->vals + c->float_at) - 2);
		else if (++c->count >= RESP_FLOAT_TRIES)
			reply_error(c, "ERR tusk: the key changed between INCRBYFLOAT's read and its write in each of %d tries",
				    RESP_FLOAT_TRIES);
		else
			float_read(c);
		return;
	case STEP_RENAME: /* kv.rename: 1 moved, 0 RENAMENX found newkey */
		if (!(c->set_how & SET_NX))
			reply_simple(c, "OK");
		else
			reply_int(c, v && n == 1 && *v == '1');
		return;
	case STEP_DEL:
	case STEP_SET_PAST: {
		/* delete_many's count: the keys that had a live value or a counter (0 too); a SET in
		 * the past: OK, or nil when XX found no key */
		long long x;
		if (!v || !resp_to_ll(v, n, &x))
			reply_error(c, "ERR tusk: kv.delete_many answered no count");
		else if (c->step == STEP_DEL)
			reply_int(c, x);
		else if ((c->set_how & SET_XX) && x == 0)
			reply_nil(c);
		else
			reply_simple(c, "OK");
		return;
	}
	case STEP_EXISTS:
	case STEP_SET_PAST_NX:
	case STEP_MGET: {
		int nr;
		struct kvrow *rows = kv_rows(j, &nr);
		if (nr < 0) {
			reply_error(c, "ERR out of memory");
			return;
		}
		long long found = 0;
		if (c->step == STEP_MGET)
			reply_array(c, c->nargs - 1);
		for (int i = 1; i < c->nargs; i++) {
			int r = find_row(rows, nr, arg(c, i), alen(c, i));
			if (c->step != STEP_MGET)
				found += r >= 0;
			else if (r >= 0 && rows[r].v)
				reply_value(c, rows[r].v, rows[r].vl);
			else
				reply_nil(c);
		}
		free(rows);
		if (c->step == STEP_EXISTS)
			reply_int(c, found);
		else if (c->step == STEP_SET_PAST_NX) /* NX: written (and gone) only when absent */
			found ? reply_nil(c) : reply_simple(c, "OK");
		return;
	}
	case STEP_TOUCH:
		reply_int(c, v ? 1 : 0);
		return;
	case STEP_TTL: {
		if (!v) {
			reply_int(c, -2);
			return;
		}
		const char *e = meta_field(v, n, "expires_at");
		if (!e || *e != '"') {
			reply_int(c, -1);
			return;
		}
		char stamp[64];
		size_t sl = (size_t)(v + n - (e + 1));
		if (sl >= sizeof stamp)
			sl = sizeof stamp - 1;
		memcpy(stamp, e + 1, sl);
		stamp[sl] = '\0';
		long long at = iso_ms(stamp, stamp + strcspn(stamp, "\""));
		long long left = c->ttl_abs ? at : at - now_ms();
		if (at < 0) {
			reply_error(c, "ERR tusk: unreadable expiry");
			return;
		}
		if (left < 0)
			left = 0;
		reply_int(c, c->pttl ? left : (left + 500) / 1000);
		return;
	}
	case STEP_INCR: {
		long long x;
		if (!v || !resp_to_ll(v, n, &x)) {
			reply_error(c, "ERR tusk: unexpected counter value");
			return;
		}
		reply_int(c, x);
		return;
	}
	case STEP_DBSIZE: {
		long long x;
		reply_int(c, v && resp_to_ll(v, n, &x) ? x : 0);
		return;
	}
	case STEP_SCAN:
		scan_answer(c);
		return;
	case STEP_KEYS:
		keys_answer(c);
		return;
	case STEP_WATCH:
		if (!watch_add(c, arg(c, c->watch_i), alen(c, c->watch_i), v, n)) {
			unwatch(c);
			reply_error(c, "ERR out of memory");
			return;
		}
		c->watch_i++;
		watch_next(c);
		return;
	case STEP_NONE:
		break;
	}
}

static void exec_answer(struct resp_conn *c);
static void exec_left(struct resp_conn *c);

static void on_answer(struct worker *w, struct worker_msg *m)
{
	struct resp_conn *c = m->arg;
	(void)w;

	c->busy = false;
	if (c->fd < 0) {
		exec_left(c);
		if (!c->busy)
			conn_free(c);
		return;
	}
	if (c->exec)
		exec_answer(c);
	else
		answer(c);
	if (!c->busy && !c->exec)
		finish(c);
	run_and_flush(c);
}

/* ---- commands ---- */

/* Argument i as Redis names a command in its errors: lower case, printable (cut to 31 bytes). */
static void lower_arg(const struct resp_conn *c, int i, char name[32])
{
	size_t n = alen(c, i) < 31 ? alen(c, i) : 31;
	for (size_t k = 0; k < n; k++) {
		char ch = arg(c, i)[k];
		name[k] = ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : (ch >= ' ' && ch < 127 ? ch : '?');
	}
	name[n] = '\0';
}

static bool wrong_args(struct resp_conn *c, bool bad)
{
	if (bad) {
		char name[32];
		lower_arg(c, 0, name);
		reply_error(c, "ERR wrong number of arguments for '%s' command", name);
	}
	return bad;
}

static bool arg_ll(struct resp_conn *c, int i, long long *v)
{
	if (!resp_to_ll(arg(c, i), alen(c, i), v)) {
		reply_error(c, "ERR value is not an integer or out of range");
		return false;
	}
	return true;
}

static void start_auth(struct resp_conn *c, int ui, int pi);

static bool set_client_name(struct resp_conn *c, int i);

/* HELLO's answer, as Redis's: its SETNAME taken (a name Redis refuses: that error, and the
 * protocol stays), then the server's facts as a map (an array on RESP2). */
static void reply_hello(struct resp_conn *c)
{
	int name = c->hello_name_arg;
	c->hello_name_arg = 0;
	if (name && !set_client_name(c, name))
		return;
	c->resp3 = c->hello == 3;
	reply_map(c, 7);
	reply_str(c, "server");
	reply_str(c, "tusk");
	reply_str(c, "version");
	reply_str(c, TUSK_VERSION);
	reply_str(c, "proto");
	reply_int(c, c->resp3 ? 3 : 2);
	reply_str(c, "id");
	reply_int(c, (long long)c->id);
	reply_str(c, "mode");
	reply_str(c, "standalone");
	reply_str(c, "role");
	reply_str(c, "master");
	reply_str(c, "modules");
	reply_array(c, 0);
}

/* HELLO [protover [AUTH user pass] [SETNAME name]]: RESP2 or RESP3, and AUTH on the way. */
static void cmd_hello(struct resp_conn *c)
{
	long long ver = c->resp3 ? 3 : 2;
	int ui = 0, pi = 0;
	if (c->nargs >= 2) {
		if (!resp_to_ll(arg(c, 1), alen(c, 1), &ver)) {
			reply_error(c, "ERR Protocol version is not an integer or out of range");
			return;
		}
		if (ver < 2 || ver > 3) {
			reply_error(c, "NOPROTO unsupported protocol version");
			return;
		}
	}
	int ni = 0;
	for (int i = 2; i < c->nargs; i++) {
		if (is(c, i, "AUTH") && i + 2 < c->nargs) {
			ui = i + 1;
			pi = i + 2;
			i += 2;
		} else if (is(c, i, "SETNAME") && i + 1 < c->nargs) {
			ni = ++i; /* set once authenticated (reply_hello), as Redis */
		} else {
			reply_error(c, "ERR Syntax error in HELLO option '%.*s'", alen(c, i) < 40 ? (int)alen(c, i) : 40,
				    arg(c, i));
			return;
		}
	}
	c->hello = (int)ver;
	c->hello_name_arg = ni; /* (this command's: reply_hello runs within it, or once its AUTH passed) */
	if (pi) {
		start_auth(c, ui, pi);
		return;
	}
	if (!c->authed) {
		c->hello_name_arg = 0;
		reply_error(c, "NOAUTH HELLO must be called with the client already authenticated, otherwise the "
			       "HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select "
			       "the RESP protocol version at the same time");
		return;
	}
	reply_hello(c);
}

/* AUTH (or HELLO's AUTH) decided: WRONGPASS, or the connection is user's now. */
static void auth_done(struct resp_conn *c, const char *user, bool ok)
{
	if (!ok) {
		char ctx[256];
		log_info(NULL, conn_ctx(c, user, ctx, sizeof ctx), "kv redis: AUTH failed for user \"%s\"", user);
		reply_error(c, "WRONGPASS invalid username-password pair or user is disabled.");
		return;
	}
	c->authed = true;
	snprintf(c->user, sizeof c->user, "%s", user);
	if (c->hello)
		reply_hello(c);
	else
		reply_simple(c, "OK");
}

/* AUTH's user and password (arguments c->auth_user_arg, c->auth_pass_arg) as C strings;
 * false when they cannot be a user's (too long, a NUL byte). */
static bool auth_args(const struct resp_conn *c, char user[64], char pass[1024])
{
	int ui = c->auth_user_arg, pi = c->auth_pass_arg;
	if ((ui > 0 && alen(c, ui) >= 64) || alen(c, pi) >= 1024 || (ui > 0 && memchr(arg(c, ui), '\0', alen(c, ui))) ||
	    memchr(arg(c, pi), '\0', alen(c, pi)))
		return false;
	if (ui > 0)
		snprintf(user, 64, "%.*s", (int)alen(c, ui), arg(c, ui));
	else /* Redis's AUTH password is user default's; on verify-full, the certificate's */
		snprintf(user, 64, "%s", c->cert_user[0] ? c->cert_user : "default");
	snprintf(pass, 1024, "%.*s", (int)alen(c, pi), arg(c, pi));
	return true;
}

static void auth_fetched(void *arg, int result, const char *secret)
{
	struct resp_conn *c = arg;
	char user[64], pass[1024];

	c->authq = NULL;
	if (result < 0) {
		reply_error(c, "ERR tusk: could not look up the password (auth_query failed, see tusk's log)");
	} else {
		bool shaped = auth_args(c, user, pass);
		auth_done(c, user, shaped && resp_auth_fetched(result, secret, user, pass));
		OPENSSL_cleanse(pass, sizeof pass);
	}
	finish(c);
	run_and_flush(c);
}

/* On the connection's worker: the LDAP server's or PAM's answer to AUTH. */
static void ext_answered(void *arg, int rc, const char *why)
{
	struct resp_conn *c = arg;
	char user[64], pass[1024], ctx[256];

	c->ext = NULL;
	ev_timer_stop(c->worker->loop, &c->deadline);
	bool shaped = auth_args(c, user, pass);
	OPENSSL_cleanse(pass, sizeof pass);
	if (rc != 0)
		log_info(NULL, conn_ctx(c, user, ctx, sizeof ctx), "kv redis: LDAP or PAM check of \"%s\": %s", user, why);
	auth_done(c, user, shaped && rc == 0);
	finish(c);
	run_and_flush(c);
}

static void name_known(struct resp_conn *c, const struct hba_peer_name *pn);

/* What c->ext is did not answer within client_login_timeout: it is cancelled (its answer dropped
 * when it comes; a PAM module cannot be interrupted, its thread runs on). AUTH's check answers
 * AUTH with an error; a host-name lookup leaves the connection nameless (host-name lines do not
 * match it), and what waited for it goes on. */
static void ext_timed_out(struct resp_conn *c)
{
	char ctx[256];
	bool check = c->ext_for == EXT_CHECK;
	extauth_cancel(c->ext);
	c->ext = NULL;
	log_warn(NULL, conn_ctx(c, c->user[0] ? c->user : NULL, ctx, sizeof ctx), "kv redis: %s",
		 check ? "an LDAP or PAM check of AUTH did not end within client_login_timeout"
		       : "the client's host name (hba_file) was not found within client_login_timeout");
	if (!check) {
		name_known(c, &hba_no_name);
		return;
	}
	reply_error(c, "ERR tusk: the password check did not end in time (client_login_timeout)");
	finish(c);
	run_and_flush(c);
}

/* ---- the peer's host name, for hba_file's host-name lines ---- */

static void start_auth(struct resp_conn *c, int ui, int pi);

/* c->name is known now (or taken as none): what waited for it, the open check or AUTH, runs. */
static void after_name(struct resp_conn *c, int ext_for)
{
	if (ext_for == EXT_NAME_OPEN)
		check_open(c);
	else
		start_auth(c, c->auth_user_arg, c->auth_pass_arg);
}

/* The name known, on the worker (its answer, or none at the deadline): what waited goes on. */
static void name_known(struct resp_conn *c, const struct hba_peer_name *pn)
{
	int ext_for = c->ext_for;
	struct hba_peer_name *copy = pn->name[0] ? malloc(sizeof *copy) : NULL;
	if (copy)
		*copy = *pn;
	c->name = copy ? copy : &hba_no_name;
	after_name(c, ext_for);
	if (ext_for == EXT_NAME_AUTH && !waiting(c))
		finish(c);
	run_and_flush(c);
}

static void name_answered(void *arg, const struct hba_peer_name *pn)
{
	struct resp_conn *c = arg;
	c->ext = NULL;
	ev_timer_stop(c->worker->loop, &c->deadline);
	name_known(c, pn);
}

/* Look the peer's name up, for the connection's user (EXT_NAME_OPEN) or AUTH's (EXT_NAME_AUTH);
 * what needs it waits (waiting: c->ext). A lookup that cannot start is no name. */
static void start_name(struct resp_conn *c, int ext_for)
{
	char ctx[256];
	c->ext_for = ext_for;
	int rc = extauth_name_submit(c->worker, &c->peer, name_answered, c, &c->ext);
	if (rc < 0) {
		log_warn(NULL, conn_ctx(c, c->user[0] ? c->user : NULL, ctx, sizeof ctx),
			 "kv redis: could not look up the client's host name (hba_file): %s", strerror(-rc));
		c->name = &hba_no_name;
		after_name(c, ext_for); /* (within its caller: the caller finishes and flushes) */
		return;
	}
	ev_timer_set(&c->deadline, (double)c->worker->rt->cfg->client_login_timeout_ms / 1000.0, 0.);
	ev_timer_start(c->worker->loop, &c->deadline);
}

/* Check the user and password of arguments ui (0: none) and pi (resp_auth.h); when
 * auth_query runs, the answer comes later (c->authq, auth_fetched), and so does an LDAP or
 * PAM check's (c->ext, ext_answered). */
static void start_auth(struct resp_conn *c, int ui, int pi)
{
	char user[64], pass[1024];
	c->auth_user_arg = ui;
	c->auth_pass_arg = pi;
	if (!auth_args(c, user, pass)) {
		auth_done(c, "?", false);
		return;
	}
	struct resp_auth_conn a = auth_conn(c);
	enum resp_auth_result r = resp_auth_check(&a, user, pass, auth_fetched, c, &c->authq, ext_answered, c, &c->ext);
	OPENSSL_cleanse(pass, sizeof pass);
	if (r == RESP_AUTH_NEED_NAME) {
		start_name(c, EXT_NAME_AUTH); /* then start_auth again */
		return;
	}
	if (r == RESP_AUTH_PENDING_EXT) {
		c->ext_for = EXT_CHECK;
		/* answered on this worker (ext_answered), or timed out by the deadline timer */
		ev_timer_set(&c->deadline, (double)c->worker->rt->cfg->client_login_timeout_ms / 1000.0, 0.);
		ev_timer_start(c->worker->loop, &c->deadline);
		return;
	}
	if (r == RESP_AUTH_BUSY)
		reply_error(c, "ERR tusk: too many LDAP or PAM checks wait already; try again");
	else if (r != RESP_AUTH_PENDING)
		auth_done(c, user, r == RESP_AUTH_OK);
}

static void cmd_auth(struct resp_conn *c)
{
	if (wrong_args(c, c->nargs < 2 || c->nargs > 3))
		return;
	c->hello = 0;
	c->hello_name_arg = 0;
	start_auth(c, c->nargs == 3 ? 1 : 0, c->nargs - 1);
}

/* SELECT n: the namespace kv_databases maps n to; SCAN cursors were the old one's. */
static void cmd_select(struct resp_conn *c)
{
	long long db;
	if (wrong_args(c, c->nargs != 2) || !arg_ll(c, 1, &db))
		return;
	const char *ns = db >= 0 && db < CONFIG_KV_DATABASES ? db_namespace(c->listen, (int)db) : NULL;
	if (!ns) {
		reply_error(c, "ERR DB index is out of range");
		return;
	}
	c->db = (int)db;
	if (strcmp(c->ns, ns) != 0) {
		snprintf(c->ns, sizeof c->ns, "%s", ns);
		for (int i = 0; i < RESP_SCAN_CURSORS; i++) {
			free(c->scan_after[i]);
			c->scan_after[i] = NULL;
		}
	}
	reply_simple(c, "OK");
}

/* GET, and TYPE and STRLEN (redis-cli --bigkeys and --memkeys ask them): kv.read's answer. */
static void cmd_get(struct resp_conn *c, int step)
{
	size_t offs[KV_CALL_MAX_ARGS];
	if (!wrong_args(c, c->nargs != 2) && ns_key(c, 1, offs))
		call_key(c, step, KV_OP_READ, offs, 2);
}

/* An expiry argument t of the command named cmd, in seconds or (ms) milliseconds, as
 * milliseconds in *ttl_ms; false (answered with Redis's error) when not positive or past 64
 * bits of milliseconds. */
enum { TIME_MS = 1, TIME_AT = 2 }; /* EXPIRE/TTL's variants: PEXPIRE, EXPIREAT, PTTL, EXPIRETIME... */

static bool expire_arg(struct resp_conn *c, long long t, bool ms, const char *cmd, long long *ttl_ms)
{
	if (t <= 0 || (!ms && t > 9223372036854775LL)) {
		reply_error(c, "ERR invalid expire time in '%s' command", cmd);
		return false;
	}
	*ttl_ms = ms ? t : t * 1000;
	return true;
}

static void cmd_getdel(struct resp_conn *c);
static void set_past(struct resp_conn *c, unsigned how);

static void cmd_set(struct resp_conn *c)
{
	unsigned how = 0;
	long long ttl_ms = 0;
	bool timed = false; /* EX, PX, EXAT or PXAT given */

	if (wrong_args(c, c->nargs < 3))
		return;
	for (int i = 3; i < c->nargs; i++) {
		if (is(c, i, "NX") && !(how & SET_XX)) {
			how |= SET_NX;
		} else if (is(c, i, "XX") && !(how & SET_NX)) {
			how |= SET_XX;
		} else if (is(c, i, "GET")) {
			how |= SET_GET;
		} else if (is(c, i, "KEEPTTL") && !timed) {
			how |= SET_KEEPTTL;
		} else if ((is(c, i, "EX") || is(c, i, "PX") || is(c, i, "EXAT") || is(c, i, "PXAT")) && !timed &&
			   !(how & SET_KEEPTTL) && i + 1 < c->nargs) {
			long long t;
			bool ms = is(c, i, "PX") || is(c, i, "PXAT"), at = is(c, i, "EXAT") || is(c, i, "PXAT");
			if (!arg_ll(c, i + 1, &t))
				return;
			if (!at && !expire_arg(c, t, ms, "set", &ttl_ms))
				return;
			if (at && (t <= 0 || !time_to_ttl(t, ms, true, &ttl_ms))) { /* a unix time, as Redis */
				reply_error(c, "ERR invalid expire time in 'set' command");
				return;
			}
			timed = true;
			i++;
		} else {
			reply_error(c, "ERR syntax error");
			return;
		}
	}
	if (timed && ttl_ms <= 0) {
		set_past(c, how);
		return;
	}
	c->ttl_ms = ttl_ms;
	if ((how & (SET_KEEPTTL | SET_XX)) || ((how & SET_GET) && (how & SET_NX))) {
		/* kv.set: the test, the read and the write in one step, under the key's locks (its
		 * version read first and a put at that version was two: a SET between them made a
		 * SET XX of a key that existed throughout answer nil) */
		c->set_how = how;
		set_put(c, 2, STEP_SET_HOW);
		return;
	}
	if (how & SET_GET) {
		set_put(c, 2, STEP_SWAP);
		return;
	}
	set_put(c, 2, (how & SET_NX) ? STEP_SET_NX : STEP_SET);
}

/* SET k v with an EXAT or PXAT not in the future: what Redis answers, the key absent after it, in
 * one call each. GET: the old value, the key deleted (GETDEL's), or with NX only read (a key that
 * exists is kept, one that does not stays absent); NX: OK when the key is absent (nothing stays
 * written), nil when it exists; XX: the key deleted, OK when it existed, else nil; neither: the
 * key deleted, OK. */
static void set_past(struct resp_conn *c, unsigned how)
{
	c->nargs = 2;
	c->set_how = how;
	if ((how & SET_GET) && (how & SET_NX)) {
		cmd_get(c, STEP_GET);
	} else if (how & SET_GET) {
		cmd_getdel(c);
	} else if (batch_keys(c, 1, 2, 1)) {
		if (how & SET_NX)
			call_batch(c, STEP_SET_PAST_NX, KV_OP_READ_MANY, false);
		else
			call_batch(c, STEP_SET_PAST, KV_OP_DELETE_MANY, false);
	}
}

/* SETEX k seconds v, PSETEX k ms v: SET k v EX|PX, with their own errors, as Redis. */
static void cmd_setex(struct resp_conn *c, int ms)
{
	long long t;
	if (wrong_args(c, c->nargs != 4) || !arg_ll(c, 2, &t) ||
	    !expire_arg(c, t, ms, ms ? "psetex" : "setex", &c->ttl_ms))
		return;
	set_put(c, 3, STEP_SET);
}

/* SETNX k v (STEP_SETNX: SET k v NX answered 1 or 0, as Redis) and GETSET k v (STEP_SWAP: SET
 * k v GET): a put of argument 2 without expiry. */
static void cmd_set_kin(struct resp_conn *c, int step)
{
	if (wrong_args(c, c->nargs != 3))
		return;
	c->ttl_ms = 0;
	set_put(c, 2, step);
}

/* The put of SET and its kin: the key is argument 1, the value argument vi, the expiry
 * c->ttl_ms (0: none given); STEP_SET_NX and STEP_SETNX only if absent. */
static void set_put(struct resp_conn *c, int vi, enum step step)
{
	size_t offs[KV_CALL_MAX_ARGS];
	if (!ns_key(c, 1, offs))
		return;
	long long ttl_ms = c->ttl_ms;
	bool nx = step == STEP_SET_NX || step == STEP_SETNX;
	enum kv_op op = step == STEP_SWAP	? KV_OP_SWAP
			: step == STEP_SET_HOW ? KV_OP_SET
			: nx		       ? KV_OP_PUT_IF_ABSENT
					       : KV_OP_PUT;
	offs[2] = add_json(c, arg(c, vi), alen(c, vi));
	int n = 3;
	if (ttl_ms > 0)
		offs[n++] = add_ttl(c, ttl_ms);
	if (step == STEP_SET_HOW) { /* kv.set's how, in words; the ttl NULL when none was given */
		unsigned h = c->set_how;
		const char *how = (h & SET_KEEPTTL) ? ((h & SET_NX) ? "nx keepttl" : (h & SET_XX) ? "xx keepttl" : "keepttl")
					       : (h & SET_NX) ? "nx" : "xx";
		if (ttl_ms <= 0)
			offs[3] = SIZE_MAX;
		offs[4] = add_val(c, how, strlen(how));
		n = 5;
	}
	if (offs[2] >= SIZE_MAX - 1 || offs[n - 1] == SIZE_MAX || (ttl_ms > 0 && offs[3] == SIZE_MAX)) {
		reply_error(c, offs[2] == SIZE_MAX - 1 ? "ERR tusk: a value may not contain a NUL byte" : "ERR out of memory");
		return;
	}
	call_key(c, step, op, offs, n);
}

/* GETDEL k: the value, and the key deleted (kv.swap of NULL). */
static void cmd_getdel(struct resp_conn *c)
{
	size_t offs[KV_CALL_MAX_ARGS];
	if (wrong_args(c, c->nargs != 2) || !ns_key(c, 1, offs))
		return;
	offs[2] = SIZE_MAX; /* NULL: delete */
	call_key(c, STEP_SWAP, KV_OP_SWAP, offs, 3);
}

static void cmd_del(struct resp_conn *c)
{
	/* One call: delete_many writes the tombstones, resets the keys' counters and counts the
	 * keys that existed (a live value or a counter, 0 too). */
	if (!wrong_args(c, c->nargs < 2) && batch_keys(c, 1, c->nargs, 1))
		call_batch(c, STEP_DEL, KV_OP_DELETE_MANY, false);
}

static void cmd_exists_mget(struct resp_conn *c, int step)
{
	/* read_many: the keys' values, else their counters, 0 too (as GET reads them), one
	 * call per shard holding some of the keys */
	if (!wrong_args(c, c->nargs < 2) && batch_keys(c, 1, c->nargs, 1))
		call_batch(c, step, KV_OP_READ_MANY, false);
}

static void cmd_mset(struct resp_conn *c)
{
	if (!wrong_args(c, c->nargs < 3 || c->nargs % 2 == 0) && batch_keys(c, 1, c->nargs, 2))
		call_batch(c, STEP_MSET, KV_OP_PUT_MANY, true);
}

/* EXPIRE k s, PEXPIRE k ms, EXPIREAT k unix-s, PEXPIREAT k unix-ms [NX | XX | GT | LT ...], as
 * Redis 7: the options checked first, then the time; an expiry not in the future deletes the key.
 * Without options kv.touch (or DEL's delete_many), with them kv.expire, which tests the key's
 * expiry and writes in one step. An absolute time becomes a ttl by tusk's clock. */
/* how: TIME_MS and TIME_AT, as the command's name says */
static void cmd_expire(struct resp_conn *c, int how)
{
	bool ms = how & TIME_MS, at = how & TIME_AT;
	long long t;
	size_t offs[KV_CALL_MAX_ARGS];
	bool nx = false, xx = false, gt = false, lt = false;

	if (wrong_args(c, c->nargs < 3))
		return;
	for (int i = 3; i < c->nargs; i++) {
		if (is(c, i, "NX"))
			nx = true;
		else if (is(c, i, "XX"))
			xx = true;
		else if (is(c, i, "GT"))
			gt = true;
		else if (is(c, i, "LT"))
			lt = true;
		else {
			reply_error(c, "ERR Unsupported option");
			return;
		}
	}
	if (nx && (xx || gt || lt)) {
		reply_error(c, "ERR NX and XX, GT or LT options at the same time are not compatible");
		return;
	}
	if (gt && lt) {
		reply_error(c, "ERR GT and LT options at the same time are not compatible");
		return;
	}
	if (!arg_ll(c, 2, &t))
		return;
	long long when;
	if (!time_to_ttl(t, ms, at, &when)) {
		reply_error(c, "ERR invalid expire time in '%s' command",
			    at ? (ms ? "pexpireat" : "expireat") : (ms ? "pexpire" : "expire"));
		return;
	}
	bool cond = nx || xx || gt || lt;
	if (when <= 0 && !cond) { /* as Redis: an expiry in the past deletes the key */
		c->nargs = 2;
		cmd_del(c);
		return;
	}
	if (!ns_key(c, 1, offs))
		return;
	offs[2] = add_ttl(c, when);
	const char *only = nx ? "nx" : gt ? "gt" : xx && lt ? "xx lt" : xx ? "xx" : "lt";
	if (cond)
		offs[3] = add_val(c, only, strlen(only));
	if (offs[2] == SIZE_MAX || (cond && offs[3] == SIZE_MAX)) {
		reply_error(c, "ERR out of memory");
		return;
	}
	if (cond)
		call_key(c, STEP_TOUCH, KV_OP_EXPIRE, offs, 4);
	else
		call_key(c, STEP_TOUCH, KV_OP_TOUCH, offs, 3);
}

/* GETEX k [EX s | PX ms | EXAT unix-s | PXAT unix-ms | PERSIST], as Redis 7: the value (nil when
 * absent), its expiry set or removed in the same step (kv.getex); a time not positive (or not
 * an integer) is refused for a key that exists, an EXAT or PXAT not in the future deletes the
 * key; an absolute time becomes a ttl by tusk's clock. */
static void cmd_getex(struct resp_conn *c)
{
	size_t offs[KV_CALL_MAX_ARGS];
	int unit = -1;     /* the time's argument (the last, when one option is given again) */
	int kind = 0, k;   /* 1 EX, 2 PX, 3 EXAT, 4 PXAT: one of them, as Redis */
	bool persist = false, ms = false, at = false;
	long long t;

	if (wrong_args(c, c->nargs < 2))
		return;
	for (int i = 2; i < c->nargs; i++) {
		k = is(c, i, "EX") ? 1 : is(c, i, "PX") ? 2 : is(c, i, "EXAT") ? 3 : is(c, i, "PXAT") ? 4 : 0;
		if (is(c, i, "PERSIST") && kind == 0) {
			persist = true;
		} else if (k && !persist && (kind == 0 || kind == k) && i + 1 < c->nargs) {
			kind = k;
			unit = ++i;
			ms = k == 2 || k == 4;
			at = k >= 3;
		} else {
			reply_error(c, "ERR syntax error");
			return;
		}
	}
	c->bad_time = NULL;
	if (unit > 0) {
		if (!resp_to_ll(arg(c, unit), alen(c, unit), &t))
			c->bad_time = "ERR value is not an integer or out of range";
		else if (t <= 0 || !time_to_ttl(t, ms, at, &t))
			c->bad_time = "ERR invalid expire time in 'getex' command";
	}
	if (!ns_key(c, 1, offs))
		return;
	if (c->bad_time) { /* as Redis: nil when absent, else the error, and nothing changed */
		call_key(c, STEP_GETEX_BAD, KV_OP_READ, offs, 2);
		return;
	}
	if (unit > 0) {
		offs[2] = add_ttl(c, t);
	} else if (persist) {
		offs[3] = add_val(c, "persist", strlen("persist"));
	}
	if ((unit > 0 && offs[2] == SIZE_MAX) || (persist && offs[3] == SIZE_MAX)) {
		reply_error(c, "ERR out of memory");
		return;
	}
	call_key(c, STEP_GET, KV_OP_GETEX, offs, 4);
}

/* APPEND k suffix: the new value's length, as STRLEN reads it (kv.append). */
static void cmd_append(struct resp_conn *c)
{
	size_t offs[KV_CALL_MAX_ARGS];
	if (wrong_args(c, c->nargs != 3) || !ns_key(c, 1, offs))
		return;
	if (memchr(arg(c, 2), '\0', alen(c, 2))) {
		reply_error(c, "ERR tusk: a value may not contain a NUL byte");
		return;
	}
	offs[2] = add_val(c, arg(c, 2), alen(c, 2));
	if (offs[2] == SIZE_MAX) {
		reply_error(c, "ERR out of memory");
		return;
	}
	call_key(c, STEP_STRLEN, KV_OP_APPEND, offs, 3);
}

/* Whether the keys of arguments first, first + stride, ... < end lie on one shard (and hold no
 * NUL byte); when not, answered CROSSSLOT, as Redis Cluster answers keys of several slots.
 * Routing not ready yet (no shard count): true, and kv._check on the shard refuses a key of
 * another (answered CROSSSLOT too). */
static bool one_shard(struct resp_conn *c, int first, int end, int stride)
{
	struct kv_router *r = atomic_load_explicit(&c->worker->rt->kv_router, memory_order_acquire);
	int nshards = r ? kv_router_nshards(r) : 0, shard = -1;
	for (int i = first; i < end; i += stride)
		if (memchr(arg(c, i), '\0', alen(c, i))) {
			reply_error(c, "ERR tusk: a key may not contain a NUL byte");
			return false;
		}
	for (int i = first; nshards > 0 && i < end; i += stride) {
		int sh = kv_shard_of(c->ns, strlen(c->ns), arg(c, i), alen(c, i), nshards);
		if (shard >= 0 && sh != shard) {
			reply_error(c, "CROSSSLOT Keys in request don't hash to the same slot");
			return false;
		}
		shard = sh;
	}
	return true;
}

/* The byte sep, then argument i (a Redis string) as JSON text, appended to vals without a NUL
 * (the object being built goes on after it); false answered (a NUL byte, out of memory). */
static bool json_piece(struct resp_conn *c, char sep, int i, const char *what)
{
	size_t off = add_val(c, &sep, 1);
	if (off != SIZE_MAX) {
		c->vals_len--;
		off = add_json(c, arg(c, i), alen(c, i));
	}
	if (off >= SIZE_MAX - 1) {
		if (off == SIZE_MAX - 1)
			reply_error(c, "ERR tusk: a %s may not contain a NUL byte", what);
		else
			reply_error(c, "ERR out of memory");
		return false;
	}
	c->vals_len--;
	return true;
}

/* MSETNX k v [k v ...]: all written (1) or, when one of the keys exists (a live value or a
 * counter), none (0), in one step of their shard (kv.msetnx, its keys and values one JSON
 * object); keys of several shards: CROSSSLOT, nothing written. */
static void cmd_msetnx(struct resp_conn *c)
{
	size_t offs[KV_CALL_MAX_ARGS];
	if (wrong_args(c, c->nargs < 3 || c->nargs % 2 == 0))
		return;
	if ((c->nargs - 1) / 2 > KV_CALL_MAX_KEYS) {
		reply_error(c, "ERR tusk: a command takes at most %d keys", KV_CALL_MAX_KEYS);
		return;
	}
	if (!one_shard(c, 1, c->nargs, 2) || !ns_key(c, 1, offs)) /* offs[1]: the first key, for routing */
		return;
	offs[2] = c->vals_len;
	for (int i = 1; i < c->nargs; i += 2)
		if (!json_piece(c, i == 1 ? '{' : ',', i, "key") || !json_piece(c, ':', i + 1, "value"))
			return;
	if (add_val(c, "}", 1) == SIZE_MAX) {
		reply_error(c, "ERR out of memory");
		return;
	}
	size_t key = offs[1];
	offs[1] = offs[2];
	call_routed(c, STEP_MSETNX, KV_OP_MSETNX, offs, 2, key);
}

/* RENAME k newk (RENAMENX: nx): k's value, or counter, moved to newk with its expiry, in one
 * step of their shard (kv.rename); keys of two shards: CROSSSLOT. */
static void cmd_rename(struct resp_conn *c, int nx)
{
	size_t offs[KV_CALL_MAX_ARGS];
	if (wrong_args(c, c->nargs != 3) || !one_shard(c, 1, 3, 1) || !ns_key(c, 1, offs))
		return;
	offs[2] = add_val(c, arg(c, 2), alen(c, 2));
	offs[3] = add_val(c, nx ? "true" : "false", nx ? 4 : 5);
	if (offs[2] == SIZE_MAX || offs[3] == SIZE_MAX) {
		reply_error(c, "ERR out of memory");
		return;
	}
	c->set_how = nx ? SET_NX : 0;
	call_key(c, STEP_RENAME, KV_OP_RENAME, offs, 4);
}

/* A kv value v[0, n) (JSON text) as the Redis string GET replies: a JSON string unquoted into
 * vals (emptied first), another value's JSON text as it is; *t its start, its length returned
 * (-1: out of memory, or not one JSON string). */
static long value_string(struct resp_conn *c, const char *v, size_t n, const char **t)
{
	*t = v;
	if (n < 2 || v[0] != '"')
		return (long)n;
	vals_reset(c);
	*t = c->vals;
	return vals_room(c, n) ? resp_json_unquote(v, n, c->vals) : -1;
}

/* INCRBYFLOAT k delta: the key read (kv.read: its value, or its counter's number), the sum made
 * here as Redis makes it (long double, which PostgreSQL has not; resp_to_ld, resp_ld_human), and
 * written by kv.put_if_value only if the key still reads the same (under its lock, the expiry
 * kept); else read again, at most RESP_FLOAT_TRIES times. A counter becomes a value. */
static void cmd_incrbyfloat(struct resp_conn *c)
{
	long double d;
	if (wrong_args(c, c->nargs != 3))
		return;
	if (!resp_to_ld(arg(c, 2), alen(c, 2), &d)) {
		reply_error(c, "ERR value is not a valid float");
		return;
	}
	c->count = 0;
	float_read(c);
}

static void float_read(struct resp_conn *c)
{
	size_t offs[KV_CALL_MAX_ARGS];
	if (ns_key(c, 1, offs))
		call_key(c, STEP_FLOAT_READ, KV_OP_READ, offs, 2);
}

/* The key read as v[0, n) (JSON; NULL absent): the sum written if the key still reads so. */
static void float_add(struct resp_conn *c, const char *v, size_t n)
{
	long double old = 0, d = 0;
	size_t offs[KV_CALL_MAX_ARGS];
	char num[RESP_LD_MAX];

	if (v) {
		const char *t;
		long tl = n <= 6 * (size_t)RESP_LD_MAX + 2 ? value_string(c, v, n, &t) : -1; /* longer: no float */
		if (tl < 0 || !resp_to_ld(t, (size_t)tl, &old)) {
			reply_error(c, "ERR value is not a valid float");
			return;
		}
	}
	(void)resp_to_ld(arg(c, 2), alen(c, 2), &d); /* checked by cmd_incrbyfloat */
	long double sum = old + d;
	size_t l = resp_ld_human(sum, num);
	if (isnan(sum) || isinf(sum) || l == 0) {
		reply_error(c, "ERR increment would produce NaN or Infinity");
		return;
	}
	if (!ns_key(c, 1, offs))
		return;
	offs[2] = v ? add_val(c, v, n) : SIZE_MAX; /* NULL: expected absent */
	offs[3] = c->float_at = add_json(c, num, l);
	if ((v && offs[2] == SIZE_MAX) || offs[3] >= SIZE_MAX - 1) {
		reply_error(c, "ERR out of memory");
		return;
	}
	call_key(c, STEP_FLOAT_PUT, KV_OP_PUT_IF_VALUE, offs, 4);
}

/* RANDOMKEY: a key of the namespace (kv.random_key: of a random sample of its shard's rows),
 * nil when it has none. The shards are asked one after the other from a random one until one
 * has a key; not uniform (a shard's keys weigh as much as a larger one's). */
static void cmd_randomkey(struct resp_conn *c)
{
	size_t offs[KV_CALL_MAX_ARGS];
	if (wrong_args(c, c->nargs != 1))
		return;
	vals_reset(c);
	for (int k = 0; k < KV_CALL_MAX_ARGS; k++)
		offs[k] = SIZE_MAX;
	offs[0] = add_val(c, c->ns, strlen(c->ns));
	if (offs[0] == SIZE_MAX) {
		reply_error(c, "ERR out of memory");
		return;
	}
	call_key(c, STEP_RANDOMKEY, KV_OP_RANDOM_KEY, offs, 1); /* every shard asked */
}

/* FLUSHDB [ASYNC | SYNC]: every key of the namespace deleted (kv.flush on every shard, each
 * shard's part one transaction); the two options do the same. */
static void cmd_flushdb(struct resp_conn *c)
{
	size_t offs[KV_CALL_MAX_ARGS];
	if (c->nargs > 2 || (c->nargs == 2 && !is(c, 1, "ASYNC") && !is(c, 1, "SYNC"))) {
		reply_error(c, "ERR syntax error");
		return;
	}
	vals_reset(c);
	for (int k = 0; k < KV_CALL_MAX_ARGS; k++)
		offs[k] = SIZE_MAX;
	offs[0] = add_val(c, c->ns, strlen(c->ns));
	if (offs[0] == SIZE_MAX) {
		reply_error(c, "ERR out of memory");
		return;
	}
	call_key(c, STEP_FLUSH, KV_OP_FLUSH, offs, 1);
}

/* WAIT numreplicas timeout: 0 at once. The kv's replication is its own (zones pull from each
 * other, docs/kv.md "Replication"): no Redis replica acknowledges a write, and none is waited
 * for (Redis with none waits out the timeout when numreplicas > 0). Redis's errors. */
static void cmd_wait(struct resp_conn *c)
{
	long long t, n;
	if (wrong_args(c, c->nargs != 3) || !arg_ll(c, 1, &n))
		return;
	if (!resp_to_ll(arg(c, 2), alen(c, 2), &t))
		reply_error(c, "ERR timeout is not an integer or out of range");
	else if (t < 0)
		reply_error(c, "ERR timeout is negative");
	else
		reply_int(c, 0);
}

/* OBJECT HELP | ENCODING k | REFCOUNT k | IDLETIME k | FREQ k: what Redis 7 answers of a string
 * key (object_answer), nil for an absent one; Redis's errors. */
static void cmd_object(struct resp_conn *c)
{
	static const char *const subs[] = { "HELP", "ENCODING", "REFCOUNT", "IDLETIME", "FREQ" };
	static const char *const names[] = { "help", "encoding", "refcount", "idletime", "freq" };
	static const char *const help[] = {
		"OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
		"ENCODING <key>",
		"    Return the kind of internal representation used in order to store the value",
		"    associated with a <key>.",
		"FREQ <key>",
		"    Return the access frequency index of the <key>. The returned integer is",
		"    proportional to the logarithm of the recent access frequency of the key.",
		"IDLETIME <key>",
		"    Return the idle time of the <key>, that is the approximated number of",
		"    seconds elapsed since the last access to the key.",
		"REFCOUNT <key>",
		"    Return the number of references of the value associated with the specified",
		"    <key>.",
		"HELP",
		"    Prints this help.",
	};
	size_t offs[KV_CALL_MAX_ARGS];
	const char *sub = NULL;

	if (wrong_args(c, c->nargs < 2))
		return;
	for (size_t i = 0; i < sizeof subs / sizeof subs[0] && !sub; i++)
		if (is(c, 1, subs[i]))
			sub = names[i];
	if (!sub) {
		int l = alen(c, 1) < 128 ? (int)alen(c, 1) : 128;
		reply_error(c, "ERR unknown subcommand '%.*s'. Try OBJECT HELP.", l, arg(c, 1));
		return;
	}
	if (c->nargs != (strcmp(sub, "help") == 0 ? 2 : 3)) {
		reply_error(c, "ERR wrong number of arguments for 'object|%s' command", sub);
		return;
	}
	if (strcmp(sub, "help") == 0) {
		reply_array(c, (long long)(sizeof help / sizeof help[0]));
		for (size_t i = 0; i < sizeof help / sizeof help[0]; i++)
			reply_simple(c, help[i]);
		return;
	}
	c->object_sub = sub;
	if (ns_key(c, 2, offs))
		call_key(c, STEP_OBJECT, KV_OP_READ, offs, 2);
}

/* OBJECT's answer of the key read as v[0, n) (GET's kv.read; NULL: absent). ENCODING as Redis
 * picks it for a string written by SET: "int" for an integer in Redis's form of at most 20
 * bytes (a counter too), "embstr" up to 44 bytes, else "raw" (Redis answers "raw" for a value
 * APPEND or SETRANGE made, whatever its length: tusk does not know how a value was made);
 * REFCOUNT 2147483647 for Redis's shared integers (0..9999), else 1; IDLETIME 0 (no LRU clock
 * here, as TOUCH); FREQ Redis's error without an LFU policy (tusk has no maxmemory policy). */
static void object_answer(struct resp_conn *c, const char *v, size_t n)
{
	if (!v) {
		reply_nil(c);
		return;
	}
	if (strcmp(c->object_sub, "idletime") == 0) {
		reply_int(c, 0);
		return;
	}
	if (strcmp(c->object_sub, "freq") == 0) {
		reply_error(c, "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note "
			       "that when switching between policies at runtime LRU and LFU data will take some time to adjust.");
		return;
	}
	const char *t;
	long tl = value_string(c, v, n, &t);
	if (tl < 0) {
		reply_error(c, "ERR out of memory");
		return;
	}
	long long x;
	bool integer = tl <= 20 && resp_to_ll(t, (size_t)tl, &x);
	if (strcmp(c->object_sub, "refcount") == 0)
		reply_int(c, integer && x >= 0 && x < 10000 ? 2147483647 : 1);
	else
		reply_simple(c, integer ? "int" : tl <= 44 ? "embstr" : "raw");
}

/* PERSIST k: 1 when an expiry was removed, 0 when the key is absent or has none (kv.persist). */
static void cmd_persist(struct resp_conn *c)
{
	size_t offs[KV_CALL_MAX_ARGS];
	if (!wrong_args(c, c->nargs != 2) && ns_key(c, 1, offs))
		call_key(c, STEP_TOUCH, KV_OP_PERSIST, offs, 2);
}

/* TTL, PTTL: the time left; EXPIRETIME, PEXPIRETIME (abs): the expiry, in unix time. */
/* how: TIME_MS and TIME_AT (EXPIRETIME: when, not how long) */
static void cmd_ttl(struct resp_conn *c, int how)
{
	size_t offs[KV_CALL_MAX_ARGS];
	c->pttl = how & TIME_MS;
	c->ttl_abs = how & TIME_AT;
	if (!wrong_args(c, c->nargs != 2) && ns_key(c, 1, offs))
		call_key(c, STEP_TTL, KV_OP_READ_META, offs, 2); /* a value's, else a counter's */
}

/* how: 1 INCR, 2 INCRBY, -1 DECR, -2 DECRBY */
static void cmd_incr(struct resp_conn *c, int how)
{
	int sign = how < 0 ? -1 : 1;
	bool by = how == 2 || how == -2;
	long long d = 1;
	size_t offs[KV_CALL_MAX_ARGS];
	char num[24];

	if (wrong_args(c, c->nargs != (by ? 3 : 2)) || (by && !arg_ll(c, 2, &d)))
		return;
	if (sign < 0 && d == (-9223372036854775807LL - 1)) {
		reply_error(c, "ERR decrement would overflow");
		return;
	}
	if (!ns_key(c, 1, offs))
		return;
	snprintf(num, sizeof num, "%lld", sign * d);
	offs[2] = add_val(c, num, strlen(num));
	if (offs[2] == SIZE_MAX) {
		reply_error(c, "ERR out of memory");
		return;
	}
	call_key(c, STEP_INCR, KV_OP_INCR, offs, 3);
}

/* kv.scan(ns, prefix, after, count) for SCAN (step STEP_SCAN) or KEYS (STEP_KEYS); after NULL:
 * from the start. */
static void scan_call(struct resp_conn *c, enum step step, const char *prefix, size_t plen, const char *after,
		      size_t after_len, long long count)
{
	size_t offs[KV_CALL_MAX_ARGS];
	char lim[24];
	vals_reset(c);
	for (int k = 0; k < KV_CALL_MAX_ARGS; k++)
		offs[k] = SIZE_MAX;
	snprintf(lim, sizeof lim, "%lld", count);
	offs[0] = add_val(c, c->ns, strlen(c->ns));
	offs[1] = add_val(c, prefix, plen);
	offs[2] = after ? add_val(c, after, after_len) : SIZE_MAX - 1;
	offs[3] = add_val(c, lim, strlen(lim));
	if (offs[0] == SIZE_MAX || offs[1] == SIZE_MAX || offs[2] == SIZE_MAX || offs[3] == SIZE_MAX) {
		reply_error(c, "ERR out of memory");
		return;
	}
	if (offs[2] == SIZE_MAX - 1)
		offs[2] = SIZE_MAX; /* NULL: from the start */
	c->count = count;
	call_key(c, step, KV_OP_SCAN, offs, 4);
}

static void cmd_scan(struct resp_conn *c)
{
	long long cursor, count = 10;
	const char *prefix = "";
	size_t plen = 0;

	c->glob_arg = 0;
	if (wrong_args(c, c->nargs < 2))
		return;
	if (!resp_to_ll(arg(c, 1), alen(c, 1), &cursor) || cursor < 0) {
		reply_error(c, "ERR invalid cursor");
		return;
	}
	for (int i = 2; i < c->nargs; i += 2) {
		if (i + 1 >= c->nargs) {
			reply_error(c, "ERR syntax error");
			return;
		}
		if (is(c, i, "MATCH")) {
			prefix = arg(c, i + 1);
			plen = alen(c, i + 1);
			if (!glob_ok(c, i + 1, "MATCH"))
				return;
			/* kv.scan reads by the literal prefix; anything more filters (glob_match) */
			c->glob_arg = glob_is_prefix(prefix, plen) ? 0 : i + 1;
			plen = glob_literal(prefix, plen);
		} else if (is(c, i, "COUNT")) {
			if (!arg_ll(c, i + 1, &count))
				return;
			if (count < 1) {
				reply_error(c, "ERR syntax error");
				return;
			}
			if (count > RESP_SCAN_MAX)
				count = RESP_SCAN_MAX;
		} else {
			reply_error(c, "ERR syntax error");
			return;
		}
	}
	const char *after = NULL;
	if (cursor != 0) {
		for (int s = 0; s < RESP_SCAN_CURSORS && !after; s++)
			if (c->scan_id[s] == (unsigned long long)cursor && c->scan_after[s])
				after = c->scan_after[s];
		if (!after) {
			reply_error(c, "ERR invalid cursor");
			return;
		}
	}
	scan_call(c, STEP_SCAN, prefix, plen, after, after ? strlen(after) : 0, count);
}

/* KEYS pattern: every key SCAN MATCH pattern lists, in one reply (Redis's KEYS), read as kv.scan
 * pages of RESP_SCAN_MAX keys one after the other; a pattern without wildcards is that key, when
 * it exists. Like SCAN, not a snapshot: a key that exists throughout is listed once, one written
 * or deleted meanwhile may or may not be. More than RESP_KEYS_MAX bytes of keys: an error. */
static void cmd_keys(struct resp_conn *c)
{
	if (wrong_args(c, c->nargs != 2))
		return;
	const char *pat = arg(c, 1);
	size_t plen = alen(c, 1), lit = glob_literal(pat, plen);
	c->glob_arg = 0;
	if (!glob_ok(c, 1, "KEYS"))
		return;
	c->keys_exact = lit >= plen;
	if (c->keys_exact && plen == 0) { /* the empty key: never a kv key */
		reply_array(c, 0);
		return;
	}
	if (!c->keys_exact && !glob_is_prefix(pat, plen))
		c->glob_arg = 1; /* filtered by the whole pattern (glob_match) */
	plen = lit;
	/* The key itself sorts first of the keys it prefixes: one row says whether it exists. */
	scan_call(c, STEP_KEYS, pat, plen, NULL, 0, c->keys_exact ? 1 : RESP_SCAN_MAX);
}

/* A kv.scan page of KEYS: its keys kept, the next page asked, or the reply written. */
static void keys_answer(struct resp_conn *c)
{
	int n;
	struct kvrow *rows = kv_rows(&c->job, &n);
	if (n < 0) {
		reply_error(c, "ERR out of memory");
		return;
	}
	const char *pat = arg(c, 1);
	size_t plen = alen(c, 1);
	char globbuf[RESP_GLOB_MAX + 1];
	const char *glob = c->glob_arg ? glob_of(c, globbuf) : NULL;
	for (int i = 0; i < n; i++) {
		if (c->keys_exact && (rows[i].kl != plen || memcmp(rows[i].k, pat, plen) != 0))
			continue;
		if (glob && !glob_match(glob, rows[i].k, rows[i].kl))
			continue;
		size_t need = c->keys_len + rows[i].kl + 32; /* resp_out_bulk's room: header, key, CRLF */
		if (need > keys_max) {
			free(rows);
			reply_error(c, "ERR tusk: KEYS matched more than %zu MB of keys; use SCAN", keys_max >> 20);
			return;
		}
		char *p = grow_bytes(c->keys, &c->keys_cap, need, 4096);
		if (p)
			c->keys = p;
		struct resp_out o = { .p = c->keys, .len = c->keys_len, .cap = c->keys_cap };
		if (!p || !resp_out_bulk(&o, rows[i].k, rows[i].kl)) {
			free(rows);
			reply_error(c, "ERR out of memory");
			return;
		}
		c->keys_len = o.len;
		c->nkeys++;
	}
	if (!c->keys_exact && n > 0 && n >= c->count) {
		/* (scan_call copies the last key into vals before the job's rows are reused) */
		scan_call(c, STEP_KEYS, pat, glob_literal(pat, plen), rows[n - 1].k, rows[n - 1].kl, RESP_SCAN_MAX);
		free(rows);
		return;
	}
	free(rows);
	reply_array(c, c->nkeys);
	if (c->keys_len && !c->closing) {
		if (!out_room(c, c->keys_len)) {
			c->closing = true;
			return;
		}
		memcpy(c->out + c->out_len, c->keys, c->keys_len);
		c->out_len += c->keys_len;
	}
}

static void cmd_dbsize(struct resp_conn *c)
{
	size_t offs[KV_CALL_MAX_ARGS];
	if (wrong_args(c, c->nargs != 1))
		return;
	vals_reset(c);
	for (int k = 0; k < KV_CALL_MAX_ARGS; k++)
		offs[k] = SIZE_MAX;
	offs[0] = add_val(c, c->ns, strlen(c->ns));
	offs[1] = add_val(c, "", 0);
	if (offs[0] == SIZE_MAX || offs[1] == SIZE_MAX) {
		reply_error(c, "ERR out of memory");
		return;
	}
	call_key(c, STEP_DBSIZE, KV_OP_COUNT, offs, 2);
}

/* INFO [section ...]: tusk's facts in Redis's text form, for tools that ask (redis-py's info(),
 * monitoring): the server (tusk's name and version, as HELLO's; no redis_version: tusk is not
 * Redis) and replication (a standalone master: the kv's replication is its own) sections; an
 * unknown section gives nothing, as Redis. */
static void cmd_info(struct resp_conn *c)
{
	bool server = c->nargs == 1, repl = c->nargs == 1;
	for (int i = 1; i < c->nargs; i++) {
		if (is(c, i, "SERVER"))
			server = true;
		else if (is(c, i, "REPLICATION"))
			repl = true;
		else if (is(c, i, "ALL") || is(c, i, "DEFAULT") || is(c, i, "EVERYTHING"))
			server = repl = true;
	}
	char buf[256];
	int n = 0;
	if (server)
		n += snprintf(buf, sizeof buf,
			      "# Server\r\nserver_name:tusk\r\ntusk_version:%s\r\nredis_mode:standalone\r\n"
			      "process_id:%ld\r\n",
			      TUSK_VERSION, (long)getpid());
	if (repl && n >= 0 && (size_t)n < sizeof buf)
		n += snprintf(buf + n, sizeof buf - (size_t)n, "%s# Replication\r\nrole:master\r\nconnected_slaves:0\r\n",
			      n ? "\r\n" : "");
	if (n < 0 || (size_t)n >= sizeof buf)
		reply_error(c, "ERR tusk: INFO did not fit");
	else
		reply_bulk(c, buf, (size_t)n);
}

/* CONFIG GET name...: of Redis's settings only the two that say how Redis keeps data, as
 * they are here: no snapshots (save "") and no append-only file (appendonly "no"); the kv
 * keeps its data in PostgreSQL (redis-benchmark asks for both and warned on an error or an
 * empty answer). Any other name matches nothing, as in Redis; CONFIG SET and the rest are
 * refused: the kv is configured in tusk's configuration. */
static void cmd_config(struct resp_conn *c)
{
	if (c->nargs < 2 || !is(c, 1, "GET")) {
		reply_error(c, "ERR tusk: only CONFIG GET is answered; the kv is configured in tusk's configuration");
		return;
	}
	if (wrong_args(c, c->nargs < 3))
		return;
	bool save = false, aof = false;
	for (int i = 2; i < c->nargs; i++) {
		bool all = alen(c, i) == 1 && arg(c, i)[0] == '*';
		save = save || all || is(c, i, "SAVE");
		aof = aof || all || is(c, i, "APPENDONLY");
	}
	reply_map(c, (long long)save + aof);
	if (save) {
		reply_str(c, "save");
		reply_str(c, "");
	}
	if (aof) {
		reply_str(c, "appendonly");
		reply_str(c, "no");
	}
}

/* Run the parsed command c->args[0, nargs): replies at once, or submits a call (c->busy). */
static void reply_unknown(struct resp_conn *c)
{
	char name[64];
	size_t n = alen(c, 0) < 40 ? alen(c, 0) : 40;
	for (size_t i = 0; i < n; i++) {
		char ch = arg(c, 0)[i];
		name[i] = ch >= ' ' && ch < 127 ? ch : '?';
	}
	name[n] = '\0';
	reply_error(c, "ERR unknown command '%s', with args beginning with: ", name);
}

/* ---- MULTI / EXEC (docs/kv.md, "Transactions") ---- */

/* WATCH: no key watched any more (EXEC, DISCARD, UNWATCH, a failed WATCH). */
static void unwatch(struct resp_conn *c)
{
	c->watch_len = 0;
	c->nwatch = 0;
	give_back(&c->watch, &c->watch_cap);
}

/* Watch key in the connection's namespace as kv.watch_tag answered it (meta NULL: no answer,
 * a shard whose schema predates it and has no value: its fallback, kv.get_meta). */
static bool watch_add(struct resp_conn *c, const char *key, size_t kl, const char *meta, size_t ml)
{
	size_t nl = strlen(c->ns), need = nl + 1 + kl + 1 + 1 + (meta ? ml : 0) + 1;
	char *w = grow_bytes(c->watch, &c->watch_cap, c->watch_len + need, 1024);
	if (!w)
		return false;
	c->watch = w;
	char *p = w + c->watch_len;
	memcpy(p, c->ns, nl + 1);
	p += nl + 1;
	memcpy(p, key, kl);
	p[kl] = '\0';
	p += kl + 1;
	*p++ = meta ? 'Y' : 'N';
	if (meta)
		memcpy(p, meta, ml);
	p[meta ? ml : 0] = '\0';
	c->watch_len += need;
	c->nwatch++;
	return true;
}

/* A watched key's record at pos: its namespace, key and meta (NULL: absent); the next's pos. */
static size_t watch_at(const struct resp_conn *c, size_t pos, const char **ns, const char **key, const char **meta)
{
	*ns = c->watch + pos;
	*key = *ns + strlen(*ns) + 1;
	const char *tag = *key + strlen(*key) + 1;
	*meta = *tag == 'Y' ? tag + 1 : NULL;
	return (size_t)(tag + 1 + strlen(tag + 1) + 1 - c->watch);
}

/* WATCH's next key read (kv.watch_tag: kv.read_meta's answer and the versions of the key's
 * rows, so that any write of it shows), or +OK once all are. */
static void watch_next(struct resp_conn *c)
{
	size_t offs[KV_CALL_MAX_ARGS];
	if (c->watch_i >= c->nargs) {
		reply_simple(c, "OK");
		return;
	}
	if (ns_key(c, c->watch_i, offs))
		call_key(c, STEP_WATCH, KV_OP_WATCH_TAG, offs, 2);
	else
		unwatch(c); /* ns_key replied why */
}

static void cmd_watch(struct resp_conn *c)
{
	if (wrong_args(c, c->nargs < 2))
		return;
	if (c->nwatch + c->nargs - 1 > RESP_MULTI_MAX) {
		reply_error(c, "ERR tusk: a connection watches at most %d keys", RESP_MULTI_MAX);
		return;
	}
	c->watch_i = 1;
	watch_next(c);
}

static void cmd_ping(struct resp_conn *c)
{
	if (wrong_args(c, c->nargs > 2))
		return;
	if (c->nargs == 2)
		reply_bulk(c, arg(c, 1), alen(c, 1));
	else
		reply_simple(c, "PONG");
}

static void cmd_echo(struct resp_conn *c)
{
	if (!wrong_args(c, c->nargs != 2))
		reply_bulk(c, arg(c, 1), alen(c, 1));
}

static void cmd_command(struct resp_conn *c)
{
	reply_array(c, 0); /* redis-cli asks at start; no command table */
}

/* A client name, or CLIENT SETINFO's library name or version, as Redis takes them: printable
 * ASCII without spaces. */
static bool client_attr_ok(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] < '!' || p[i] > '~')
			return false;
	return true;
}

/* The connection's name from argument i ("": none), as CLIENT SETNAME; false when refused
 * (answered). */
static bool set_client_name(struct resp_conn *c, int i)
{
	const char *p = arg(c, i);
	size_t n = alen(c, i);
	char *copy = NULL;
	if (!client_attr_ok(p, n)) {
		reply_error(c, "ERR Client names cannot contain spaces, newlines or special characters.");
		return false;
	}
	if (n > RESP_CLIENT_NAME_MAX) {
		reply_error(c, "ERR Client name too long (at most %d bytes here)", RESP_CLIENT_NAME_MAX);
		return false;
	}
	if (n && !(copy = strndup(p, n))) {
		reply_error(c, "ERR out of memory");
		return false;
	}
	free(c->client_name);
	c->client_name = copy;
	return true;
}

/* CLIENT INFO's line, as Redis's (the fields tusk has: no memory or buffer figures). */
static void client_info(struct resp_conn *c)
{
	char addr[64], laddr[64] = "", line[RESP_CLIENT_NAME_MAX + 512];
	struct net_addr local = { .len = sizeof local.sa };
	net_addr_str(&c->peer, addr, sizeof addr);
	if (getsockname(c->fd, (struct sockaddr *)&local.sa, &local.len) == 0)
		net_addr_str(&local, laddr, sizeof laddr);
	int n = snprintf(line, sizeof line,
			 "id=%llu addr=%s laddr=%s fd=%d name=%s db=%d multi=%d user=%s resp=%d\n", c->id, addr,
			 laddr, c->fd, c->client_name ? c->client_name : "", c->db, c->multi ? (int)c->mq_n : -1,
			 c->user, c->resp3 ? 3 : 2);
	reply_bulk(c, line, n > 0 && (size_t)n < sizeof line ? (size_t)n : 0);
}

/* CLIENT's subcommands, as Redis 7 answers them, for what a connection here has: its id, name
 * and info, the library's attributes (taken, not kept), the eviction and touch flags (nothing
 * to evict or touch: taken). Client-side caching is refused: tusk sends no invalidation, so
 * a client that believed TRACKING on would serve its cached values after other clients changed
 * them (OFF, GETREDIR, TRACKINGINFO and CACHING answer as for a client that never turned it
 * on). REPLY OFF and SKIP are refused (each command is answered). The rest (LIST, KILL,
 * PAUSE...): unknown, as Redis words it. */
static void cmd_client(struct resp_conn *c)
{
	enum { ID, GETNAME, SETNAME, SETINFO, INFO, NO_EVICT, REPLY, TRACKING, CACHING, GETREDIR, TRACKINGINFO, HELP };
	static const struct {
		const char *name; /* (matched in any case) */
		int arity;        /* with CLIENT and the subcommand; negative: at least */
		int sub;
	} subs[] = { { "ID", 2, ID },           { "GETNAME", 2, GETNAME },   { "SETNAME", 3, SETNAME },
		     { "SETINFO", 4, SETINFO }, { "INFO", 2, INFO },         { "NO-EVICT", 3, NO_EVICT },
		     { "NO-TOUCH", 3, NO_EVICT }, { "REPLY", 3, REPLY },     { "TRACKING", -3, TRACKING },
		     { "CACHING", 3, CACHING }, { "GETREDIR", 2, GETREDIR }, { "TRACKINGINFO", 2, TRACKINGINFO },
		     { "HELP", 2, HELP } };
	size_t k = 0;
	if (wrong_args(c, c->nargs < 2))
		return;
	while (k < sizeof subs / sizeof subs[0] && !is(c, 1, subs[k].name))
		k++;
	if (k == sizeof subs / sizeof subs[0]) {
		reply_error(c, "ERR unknown subcommand '%.*s'. Try CLIENT HELP.", alen(c, 1) < 128 ? (int)alen(c, 1) : 128,
			    arg(c, 1));
		return;
	}
	if (subs[k].arity > 0 ? c->nargs != subs[k].arity : c->nargs < -subs[k].arity) {
		char name[32];
		lower_arg(c, 1, name); /* (the subcommand, as typed: one of the names above) */
		reply_error(c, "ERR wrong number of arguments for 'client|%s' command", name);
		return;
	}
	switch (subs[k].sub) {
	case ID:
		reply_int(c, (long long)c->id);
		break;
	case GETNAME:
		if (c->client_name)
			reply_str(c, c->client_name);
		else
			reply_nil(c);
		break;
	case SETNAME:
		if (set_client_name(c, 2))
			reply_simple(c, "OK");
		break;
	case SETINFO: { /* Redis 7.2's */
		const char *attr = is(c, 2, "LIB-NAME") ? "lib-name" : is(c, 2, "LIB-VER") ? "lib-ver" : NULL;
		if (!attr)
			reply_error(c, "ERR Unrecognized option '%.*s'", alen(c, 2) < 128 ? (int)alen(c, 2) : 128, arg(c, 2));
		else if (!client_attr_ok(arg(c, 3), alen(c, 3)))
			reply_error(c, "ERR %s cannot contain spaces, newlines or special characters.", attr);
		else
			reply_simple(c, "OK");
		break;
	}
	case INFO:
		client_info(c);
		break;
	case NO_EVICT: /* and NO-TOUCH */
		if (is(c, 2, "ON") || is(c, 2, "OFF"))
			reply_simple(c, "OK");
		else
			reply_error(c, "ERR syntax error");
		break;
	case REPLY:
		if (is(c, 2, "ON"))
			reply_simple(c, "OK");
		else if (is(c, 2, "OFF") || is(c, 2, "SKIP"))
			reply_error(c, "ERR CLIENT REPLY OFF and SKIP are not supported here: every command is answered");
		else
			reply_error(c, "ERR syntax error");
		break;
	case TRACKING:
		if (is(c, 2, "OFF") && c->nargs == 3)
			reply_simple(c, "OK");
		else if (is(c, 2, "ON"))
			reply_error(c, "ERR CLIENT TRACKING is not supported here: tusk sends no invalidation messages, so "
				       "a client-side cache would serve stale values");
		else
			reply_error(c, "ERR syntax error");
		break;
	case CACHING:
		reply_error(c, "ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or "
			       "OPTOUT mode enabled");
		break;
	case GETREDIR:
		reply_int(c, -1);
		break;
	case TRACKINGINFO:
		reply_map(c, 3);
		reply_str(c, "flags");
		reply_array(c, 1);
		reply_str(c, "off");
		reply_str(c, "redirect");
		reply_int(c, -1);
		reply_str(c, "prefixes");
		reply_array(c, 0);
		break;
	default: { /* HELP */
		static const char *const help[] = {
			"CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are (tusk's kv listener):",
			"ID", "    Return the ID of the current connection.",
			"GETNAME", "    Return the name of the current connection.",
			"SETNAME <name>", "    Assign the name <name> to the current connection.",
			"SETINFO <LIB-NAME|LIB-VER> <value>", "    Taken and not kept.",
			"INFO", "    Return information about the current client connection.",
			"NO-EVICT (ON|OFF)", "    Taken (nothing is evicted).",
			"NO-TOUCH (ON|OFF)", "    Taken (nothing is touched).",
			"REPLY ON", "    Every command is answered (OFF and SKIP are not supported).",
			"TRACKING OFF", "    Client-side caching is not supported (no invalidation messages).",
			"GETREDIR", "    -1: no tracking.",
			"TRACKINGINFO", "    Tracking is off.",
			"HELP", "    Print this help.",
		};
		reply_array(c, (long long)(sizeof help / sizeof help[0]));
		for (size_t i = 0; i < sizeof help / sizeof help[0]; i++)
			reply_simple(c, help[i]);
		break;
	}
	}
}

static void cmd_unwatch(struct resp_conn *c)
{
	if (!c->exec)
		unwatch(c); /* (in a transaction: EXEC unwatches anyway) */
	reply_simple(c, "OK");
}

/* Every command but QUIT and MULTI's own (MULTI, EXEC, DISCARD, WATCH): what runs it (run, or
 * run_how with how), and what it is checked for when MULTI queues it, as Redis checks it: its
 * arity (negative: at least), where its keys are (first, last: -1 the last argument, step),
 * and whether a transaction may hold it here (flags). */
enum { CMD_NOMULTI = 1, /* not in one shard's transaction (every shard's keys, the connection's state) */
       CMD_READ = 2,     /* reads keys and writes none: a transaction holding one reads one snapshot */
       CMD_NOAUTH = 4 }; /* runs before AUTH */
static const struct resp_cmd {
	const char *name;
	int arity, first, last, step;
	unsigned flags;
	void (*run)(struct resp_conn *c);
	void (*run_how)(struct resp_conn *c, int how);
	int how;
} resp_cmds[] = {
	{ "GET", 2, 1, 1, 1, CMD_READ, NULL, cmd_get, STEP_GET },
	{ "TYPE", 2, 1, 1, 1, CMD_READ, NULL, cmd_get, STEP_TYPE },
	{ "STRLEN", 2, 1, 1, 1, CMD_READ, NULL, cmd_get, STEP_STRLEN },
	{ "SET", -3, 1, 1, 1, 0, cmd_set, NULL, 0 },
	{ "SETEX", 4, 1, 1, 1, 0, NULL, cmd_setex, 0 },
	{ "PSETEX", 4, 1, 1, 1, 0, NULL, cmd_setex, 1 },
	{ "SETNX", 3, 1, 1, 1, 0, NULL, cmd_set_kin, STEP_SETNX },
	{ "GETSET", 3, 1, 1, 1, 0, NULL, cmd_set_kin, STEP_SWAP },
	{ "APPEND", 3, 1, 1, 1, 0, cmd_append, NULL, 0 },
	{ "GETEX", -2, 1, 1, 1, 0, cmd_getex, NULL, 0 },
	{ "GETDEL", 2, 1, 1, 1, 0, cmd_getdel, NULL, 0 },
	{ "DEL", -2, 1, -1, 1, 0, cmd_del, NULL, 0 },
	{ "UNLINK", -2, 1, -1, 1, 0, cmd_del, NULL, 0 },
	{ "PERSIST", 2, 1, 1, 1, 0, cmd_persist, NULL, 0 },
	{ "MSETNX", -3, 1, -1, 2, 0, cmd_msetnx, NULL, 0 },
	{ "RENAME", 3, 1, 2, 1, 0, NULL, cmd_rename, 0 },
	{ "RENAMENX", 3, 1, 2, 1, 0, NULL, cmd_rename, 1 },
	{ "EXISTS", -2, 1, -1, 1, CMD_READ, NULL, cmd_exists_mget, STEP_EXISTS },
	/* TOUCH: the keys that exist (no LRU here) */
	{ "TOUCH", -2, 1, -1, 1, CMD_READ, NULL, cmd_exists_mget, STEP_EXISTS },
	{ "MGET", -2, 1, -1, 1, CMD_READ, NULL, cmd_exists_mget, STEP_MGET },
	{ "MSET", -3, 1, -1, 2, 0, cmd_mset, NULL, 0 },
	{ "EXPIRE", -3, 1, 1, 1, 0, NULL, cmd_expire, 0 },
	{ "PEXPIRE", -3, 1, 1, 1, 0, NULL, cmd_expire, TIME_MS },
	{ "EXPIREAT", -3, 1, 1, 1, 0, NULL, cmd_expire, TIME_AT },
	{ "PEXPIREAT", -3, 1, 1, 1, 0, NULL, cmd_expire, TIME_MS | TIME_AT },
	{ "TTL", 2, 1, 1, 1, CMD_READ, NULL, cmd_ttl, 0 },
	{ "PTTL", 2, 1, 1, 1, CMD_READ, NULL, cmd_ttl, TIME_MS },
	{ "EXPIRETIME", 2, 1, 1, 1, CMD_READ, NULL, cmd_ttl, TIME_AT },
	{ "PEXPIRETIME", 2, 1, 1, 1, CMD_READ, NULL, cmd_ttl, TIME_MS | TIME_AT },
	{ "INCR", 2, 1, 1, 1, 0, NULL, cmd_incr, 1 },
	{ "DECR", 2, 1, 1, 1, 0, NULL, cmd_incr, -1 },
	{ "INCRBY", 3, 1, 1, 1, 0, NULL, cmd_incr, 2 },
	{ "DECRBY", 3, 1, 1, 1, 0, NULL, cmd_incr, -2 },
	{ "INCRBYFLOAT", 3, 1, 1, 1, 0, cmd_incrbyfloat, NULL, 0 },
	{ "OBJECT", -2, 2, 2, 1, CMD_READ, cmd_object, NULL, 0 },
	{ "WAIT", 3, 0, 0, 0, 0, cmd_wait, NULL, 0 },
	{ "RANDOMKEY", 1, 0, 0, 0, CMD_NOMULTI, cmd_randomkey, NULL, 0 },
	{ "FLUSHDB", -1, 0, 0, 0, CMD_NOMULTI, cmd_flushdb, NULL, 0 },
	{ "PING", -1, 0, 0, 0, 0, cmd_ping, NULL, 0 },
	{ "ECHO", 2, 0, 0, 0, 0, cmd_echo, NULL, 0 },
	{ "INFO", -1, 0, 0, 0, 0, cmd_info, NULL, 0 },
	{ "CONFIG", -2, 0, 0, 0, 0, cmd_config, NULL, 0 },
	{ "COMMAND", -1, 0, 0, 0, 0, cmd_command, NULL, 0 },
	{ "CLIENT", -2, 0, 0, 0, 0, cmd_client, NULL, 0 },
	{ "UNWATCH", 1, 0, 0, 0, 0, cmd_unwatch, NULL, 0 },
	{ "SCAN", -2, 0, 0, 0, CMD_NOMULTI, cmd_scan, NULL, 0 },
	{ "KEYS", 2, 0, 0, 0, CMD_NOMULTI, cmd_keys, NULL, 0 },
	{ "DBSIZE", 1, 0, 0, 0, CMD_NOMULTI, cmd_dbsize, NULL, 0 },
	{ "SELECT", 2, 0, 0, 0, CMD_NOMULTI, cmd_select, NULL, 0 },
	{ "AUTH", -2, 0, 0, 0, CMD_NOMULTI | CMD_NOAUTH, cmd_auth, NULL, 0 },
	{ "HELLO", -1, 0, 0, 0, CMD_NOMULTI | CMD_NOAUTH, cmd_hello, NULL, 0 },
};

static const struct resp_cmd *cmd_find(const struct resp_conn *c)
{
	for (size_t i = 0; i < sizeof resp_cmds / sizeof resp_cmds[0]; i++)
		if (is(c, 0, resp_cmds[i].name))
			return &resp_cmds[i];
	return NULL;
}

static void multi_reset(struct resp_conn *c)
{
	c->multi = c->multi_dirty = false;
	c->mq_len = 0;
	c->mq_n = 0;
	give_back(&c->mq, &c->mq_cap);
}

/* A command after MULTI: checked as Redis checks it, then kept for EXEC (+QUEUED); refused,
 * it is an error now and EXEC discards the transaction. */
static void multi_queue(struct resp_conn *c)
{
	const struct resp_cmd *k = cmd_find(c);
	if (!k) {
		reply_unknown(c);
	} else if (k->arity > 0 ? c->nargs != k->arity : c->nargs < -k->arity) {
		(void)wrong_args(c, true);
	} else if (k->flags & CMD_NOMULTI) {
		reply_error(c, "ERR tusk: %s is not allowed inside a transaction here (docs/kv.md, \"Transactions\")",
			    k->name);
	} else if (c->mq_n >= RESP_MULTI_MAX || c->mq_len + c->used > RESP_IN_MAX) {
		reply_error(c, "ERR tusk: a transaction queues at most %d commands and %u bytes", RESP_MULTI_MAX,
			    RESP_IN_MAX);
	} else {
		char *q = grow_bytes(c->mq, &c->mq_cap, c->mq_len + c->used, 4096);
		if (!q) {
			reply_error(c, "ERR out of memory");
		} else {
			c->mq = q;
			memcpy(c->mq + c->mq_len, c->in + c->in_off, c->used);
			c->mq_len += c->used;
			c->mq_n++;
			reply_simple(c, "QUEUED");
			return;
		}
	}
	c->multi_dirty = true;
}

/* The queued command at pos into args (abase then points at it): its length, 0 on failure
 * (out of memory; it parsed once already). */
static size_t mq_parse(struct resp_conn *c, size_t pos)
{
	for (;;) {
		int n;
		size_t used;
		const char *err = NULL;
		enum resp_rc rc = resp_parse(c->mq + pos, c->mq_len - pos, c->args, c->args_cap, &n, &used, &err);
		if (rc == RESP_GROW) {
			int cap = c->args_cap ? c->args_cap : 8;
			while (cap < n)
				cap *= 2;
			struct resp_arg *a = realloc(c->args, (size_t)cap * sizeof *a);
			if (!a)
				return 0;
			c->args = a;
			c->args_cap = cap;
			continue;
		}
		if (rc == RESP_ERROR || rc == RESP_MORE || n < 1)
			return 0;
		c->nargs = n;
		c->abase = c->mq + pos;
		return used;
	}
}

static void exec_next(struct resp_conn *c);
static void exec_run(struct resp_conn *c);
static void exec_refuse(struct resp_conn *c, const char *why);
static void dispatch(struct resp_conn *c);

/* out and held trade places (EXEC's replies are written to an out of their own). */
static void swap_out(struct resp_conn *c)
{
	char *p = c->out;
	size_t off = c->out_off, len = c->out_len, cap = c->out_cap;
	c->out = c->held;
	c->out_off = c->held_off;
	c->out_len = c->held_len;
	c->out_cap = c->held_cap;
	c->held = p;
	c->held_off = off;
	c->held_len = len;
	c->held_cap = cap;
}

/* EXEC: every key the queue names must lie on one shard (a transaction of that shard's);
 * Redis Cluster refuses keys of several slots the same way. Until routing is ready (the first
 * calls after start), one read makes it so. */
static void exec_start(struct resp_conn *c)
{
	struct kv_router *r = atomic_load_explicit(&c->worker->rt->kv_router, memory_order_acquire);
	int shard = -1, nshards = r ? kv_router_nshards(r) : 0; /* 0: routing not ready yet */
	size_t pos = 0, wlen = 0;
	const char *wkey = NULL; /* a key whose shard is not known yet */
	bool cross = false, reads = c->nwatch > 0;

	if (!r) {
		exec_refuse(c, "ERR tusk: kv routing is not running (see tusk's log)");
		return;
	}
	for (int i = 0; i < c->mq_n && !cross; i++) {
		size_t used = mq_parse(c, pos);
		if (!used) {
			c->abase = NULL;
			exec_refuse(c, "ERR out of memory");
			return;
		}
		const struct resp_cmd *k = cmd_find(c);
		int last = k->last < 0 ? c->nargs - 1 : k->last;
		reads |= (k->flags & CMD_READ) != 0;
		for (int a = k->first; k->step > 0 && a <= last && a < c->nargs; a += k->step) {
			int sh = nshards ? kv_shard_of(c->ns, strlen(c->ns), arg(c, a), alen(c, a), nshards) : -1;
			if (sh < 0 && !wkey) {
				wkey = arg(c, a);
				wlen = alen(c, a);
			}
			cross |= sh >= 0 && shard >= 0 && sh != shard;
			shard = sh >= 0 ? sh : shard;
		}
		pos += used;
	}
	c->abase = NULL;
	/* the watched keys are checked in the same transaction: on the same shard */
	for (size_t wp = 0; wp < c->watch_len && !cross;) {
		const char *ns, *key, *meta;
		wp = watch_at(c, wp, &ns, &key, &meta);
		int sh = nshards ? kv_shard_of(ns, strlen(ns), key, strlen(key), nshards) : -1;
		if (sh < 0 && !wkey) {
			wkey = key;
			wlen = strlen(key);
		}
		cross |= sh >= 0 && shard >= 0 && sh != shard;
		shard = sh >= 0 ? sh : shard;
	}
	if (cross) {
		exec_refuse(c, "CROSSSLOT Keys in request don't hash to the same slot");
		return;
	}
	if (wkey && !c->exec_warmed) {
		/* routing is not ready: one read of a key the queue names (its answer unused) */
		size_t offs[KV_CALL_MAX_ARGS];
		c->exec_warmed = true;
		if (!vals_ns_key(c, c->ns, wkey, wlen, offs)) {
			exec_refuse(c, "ERR out of memory");
			return;
		}
		c->exec = EXEC_WARM;
		call_key(c, STEP_NONE, KV_OP_COUNTER, offs, 2);
		if (c->busy)
			return;
		c->exec = EXEC_NONE; /* submit replied why not */
		c->exec_warmed = false;
		multi_reset(c);
		unwatch(c);
		return;
	}
	if (wkey) {
		exec_refuse(c, "TRYAGAIN tusk: kv routing is not ready yet (see tusk's log)");
		return;
	}
	/* no savepoint per call until a command fails (then the queue runs again with them) */
	c->txn = (struct kv_txn){ .shard = shard < 0 ? 0 : shard, .snapshot = reads, .no_savepoints = true };
	c->exec_savepoints = false;
	c->exec_tries = 1;
	swap_out(c); /* out is empty now; what it held waits in held */
	exec_run(c);
}

/* A run of the transaction: its watched keys checked, then its commands. */
static void exec_run(struct resp_conn *c)
{
	c->exec = c->nwatch ? EXEC_WATCHED : EXEC_CMDS;
	c->exec_i = 0;
	c->exec_pos = 0;
	c->watch_i = 0;
	c->watch_pos = 0;
	c->watch_broke = false;
	exec_next(c);
}

/* EXEC refused before it ran anything (Redis unwatches then too). */
static void exec_refuse(struct resp_conn *c, const char *why)
{
	multi_reset(c);
	unwatch(c);
	reply_error(c, "%s", why);
}

/* EXEC is over: its replies (an array of the commands' replies; or, failed, the end's error:
 * the transaction was not committed) follow the ones held before it. */
enum exec_how { EXEC_OK, EXEC_END_FAILED, EXEC_NO_ROUTER, EXEC_CONFLICTS, EXEC_WATCH_BROKE };
static void exec_done(struct resp_conn *c, enum exec_how how)
{
	c->exec = EXEC_NONE;
	swap_out(c); /* held: EXEC's replies */
	char *ebuf = c->held;
	size_t eoff = c->held_off, elen = c->held_len - c->held_off;
	c->held = NULL;
	c->held_off = c->held_len = c->held_cap = 0;
	if (how == EXEC_WATCH_BROKE) {
		if (c->resp3) /* Redis's null reply: a watched key changed, nothing ran */
			reply_nil(c);
		else
			reply_array(c, -1);
	} else if (how == EXEC_END_FAILED) {
		kv_error(c);
	} else if (how == EXEC_NO_ROUTER) {
		reply_error(c, "ERR tusk: kv routing is not running (see tusk's log)");
	} else if (how == EXEC_CONFLICTS) {
		reply_error(c, "ERR tusk: the transaction met concurrent writes to its keys in each of %d runs; none of it "
			       "was applied (SQLSTATE 40001)", RESP_EXEC_TRIES);
	} else {
		reply_array(c, c->mq_n);
		if (elen > 0 && !c->closing && out_room(c, elen)) {
			memcpy(c->out + c->out_len, ebuf + eoff, elen);
			c->out_len += elen;
		} else if (elen > 0) {
			c->closing = true;
		}
	}
	free(ebuf);
	c->abase = NULL;
	c->exec_warmed = false;
	multi_reset(c);
	unwatch(c);
}

/* The transaction's end (COMMIT; ROLLBACK when the client left) once its calls are done. */
static void exec_end(struct resp_conn *c)
{
	c->abase = NULL;
	c->exec = EXEC_END;
	if (!c->txn.lc && !c->txn.broken && !c->txn.doomed) {
		exec_done(c, c->watch_broke ? EXEC_WATCH_BROKE : EXEC_OK); /* nothing reached a shard: nothing to end */
		return;
	}
	kv_job_txn_end(&c->job, &c->txn, c->exec_rollback ? KV_TXN_ROLLBACK : KV_TXN_COMMIT); /* (submit sets the same) */
	submit(c, STEP_NONE);
	if (!c->busy && c->exec == EXEC_END)
		exec_done(c, EXEC_NO_ROUTER); /* submit could not (its reply is dropped with out) */
}

/* Run the queued commands in turn; each is dispatched as if it had just come, its replies
 * go to out. */
static void exec_next(struct resp_conn *c)
{
	if (c->exec == EXEC_WATCHED && c->watch_i < c->nwatch) {
		/* the next watched key read again, in the transaction (one snapshot) */
		const char *ns, *key, *meta;
		size_t offs[KV_CALL_MAX_ARGS];
		(void)watch_at(c, c->watch_pos, &ns, &key, &meta);
		if (!vals_ns_key(c, ns, key, strlen(key), offs)) {
			c->watch_broke = true; /* (out of memory) the client tries again */
			c->exec_rollback = true;
			exec_end(c);
			return;
		}
		call_key(c, STEP_NONE, KV_OP_WATCH_TAG, offs, 2);
		if (!c->busy) {
			c->watch_broke = true;
			c->exec_rollback = true;
			exec_end(c);
		}
		return;
	}
	if (c->exec == EXEC_WATCHED)
		c->exec = EXEC_CMDS;
	while (c->exec == EXEC_CMDS && c->exec_i < c->mq_n && !c->closing) {
		size_t used = mq_parse(c, c->exec_pos);
		c->exec_i++;
		if (!used) {
			c->abase = NULL;
			reply_error(c, "ERR out of memory");
			continue;
		}
		c->exec_pos += used;
		dispatch(c);
		if (c->busy)
			return;
	}
	if (c->exec == EXEC_CMDS)
		exec_end(c);
}

static void exec_answer(struct resp_conn *c)
{
	switch (c->exec) {
	case EXEC_WARM:
		c->exec = EXEC_NONE;
		exec_start(c);
		break;
	case EXEC_WATCHED:
	case EXEC_CMDS:
		if (c->job.failed &&
		    (strcmp(c->job.sqlstate, "40001") == 0 || strcmp(c->job.sqlstate, "40P01") == 0)) {
			/* a concurrent write to a key of it came first (its snapshot is older): the
			 * transaction is rolled back and the whole queue runs again */
			c->exec_again = c->exec_rollback = true;
			exec_end(c);
			break;
		}
		if (c->exec == EXEC_CMDS && c->job.failed && !c->job.ours && c->txn.no_savepoints) {
			/* a command failed on the shard, which aborts a transaction without savepoints:
			 * the queue runs again with a savepoint per call, so that the failed command
			 * alone is undone and the others apply, as Redis goes on past a command's
			 * error. (A savepoint of a write is a subtransaction with an xid of its own:
			 * paid only when a command fails.) */
			c->exec_again = c->exec_rollback = c->exec_savepoints = true;
			exec_end(c);
			break;
		}
		if (c->exec == EXEC_WATCHED) {
			const char *ns, *key, *meta, *v = NULL;
			size_t n = 0;
			c->watch_pos = watch_at(c, c->watch_pos, &ns, &key, &meta);
			c->watch_i++;
			bool found = !c->job.failed && first_col(&c->job, &v, &n) && v;
			if (c->job.failed || found != (meta != NULL) || (found && (strlen(meta) != n || memcmp(meta, v, n)))) {
				/* changed since WATCH (or not readable): Redis's EXEC runs nothing */
				c->watch_broke = c->exec_rollback = true;
				exec_end(c);
				break;
			}
			exec_next(c);
			break;
		}
		answer(c);
		if (!c->busy)
			exec_next(c);
		break;
	case EXEC_END:
		if (c->watch_broke) {
			c->exec_again = c->exec_rollback = false;
			exec_done(c, EXEC_WATCH_BROKE);
			break;
		}
		if (c->exec_again && !c->job.failed && c->exec_tries < RESP_EXEC_TRIES) {
			/* the transactions that met stay apart for a random while (else the same one
			 * can lose every time) */
			c->exec_again = c->exec_rollback = false;
			c->exec_tries++;
			c->out_off = c->out_len = 0; /* the replies of the run undone */
			c->txn = (struct kv_txn){ .shard = c->txn.shard, .snapshot = c->txn.snapshot,
						  .no_savepoints = !c->exec_savepoints };
			c->exec = EXEC_PAUSE;
			int most = c->exec_tries < 20 ? c->exec_tries : 20;
			ev_timer_set(&c->exec_wait, (double)(rand() % (most * 1000 + 1)) / 1e6, 0.);
			ev_timer_start(c->worker->loop, &c->exec_wait);
			break;
		}
		if (c->exec_again && !c->job.failed) {
			c->exec_again = c->exec_rollback = false;
			c->exec = EXEC_NONE;
			exec_done(c, EXEC_CONFLICTS);
			break;
		}
		c->exec_again = c->exec_rollback = false;
		exec_done(c, c->job.failed ? EXEC_END_FAILED : EXEC_OK);
		break;
	case EXEC_PAUSE:
	case EXEC_NONE:
		break;
	}
}

static void exec_wait_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct resp_conn *c = t->data;
	(void)loop;
	(void)revents;

	if (c->exec != EXEC_PAUSE)
		return;
	exec_run(c);
	if (!c->busy && !c->exec)
		finish(c);
	run_and_flush(c);
}

/* The client is gone while EXEC runs (a worker's drain): a transaction holding a shard
 * connection is rolled back, which frees that connection; c is freed when it is answered. */
static void exec_left(struct resp_conn *c)
{
	if (c->exec == EXEC_END || !c->txn.lc) {
		c->exec = EXEC_NONE;
		return;
	}
	c->exec_rollback = true;
	exec_end(c);
}

/* MULTI, EXEC, DISCARD, WATCH and UNWATCH, and every command after MULTI; false: none of them. */
static bool dispatch_multi(struct resp_conn *c)
{
	bool exec = is(c, 0, "EXEC"), discard = is(c, 0, "DISCARD"), multi = is(c, 0, "MULTI"),
	     watch = is(c, 0, "WATCH");
	if (c->multi) {
		if (exec && !wrong_args(c, c->nargs != 1)) {
			if (c->multi_dirty) {
				multi_reset(c);
				unwatch(c);
				reply_error(c, "EXECABORT Transaction discarded because of previous errors.");
			} else {
				exec_start(c);
			}
		} else if (discard && !wrong_args(c, c->nargs != 1)) {
			multi_reset(c);
			unwatch(c);
			reply_simple(c, "OK");
		} else if (multi) {
			reply_error(c, "ERR MULTI calls can not be nested");
		} else if (watch) {
			reply_error(c, "ERR WATCH inside MULTI is not allowed");
		} else if (!exec && !discard) {
			multi_queue(c);
		}
		return true;
	}
	if (multi) {
		if (!wrong_args(c, c->nargs != 1)) {
			c->multi = true;
			reply_simple(c, "OK");
		}
	} else if (exec) {
		reply_error(c, "ERR EXEC without MULTI");
	} else if (discard) {
		reply_error(c, "ERR DISCARD without MULTI");
	} else if (watch) {
		cmd_watch(c);
	} else {
		return false;
	}
	return true;
}

static void dispatch(struct resp_conn *c)
{
	c->step = STEP_NONE;
	if (is(c, 0, "QUIT")) {
		reply_simple(c, "OK");
		c->closing = true;
		return;
	}
	if (c->multi && !c->exec) { /* queued (MULTI needed AUTH first) */
		(void)dispatch_multi(c);
		return;
	}
	const struct resp_cmd *cmd = cmd_find(c);
	if (!c->authed && !(cmd && (cmd->flags & CMD_NOAUTH))) {
		reply_error(c, "NOAUTH Authentication required.");
		if (c->multi)
			c->multi_dirty = true;
		return;
	}
	if (!c->exec && dispatch_multi(c))
		return;
	if (!cmd)
		reply_unknown(c);
	else if (cmd->run)
		cmd->run(c);
	else
		cmd->run_how(c, cmd->how);
}

/* The command is done: drop its bytes. */
static void finish(struct resp_conn *c)
{
	c->in_off += c->used;
	c->used = 0;
	c->nargs = 0;
	c->step = STEP_NONE;
	/* What one large command grew is given back once nothing is left in it. */
	if (c->in_off == c->in_len && c->in_cap > 4 * RESP_READ_CHUNK) {
		free(c->in);
		c->in = NULL;
		c->in_off = c->in_len = c->in_cap = 0;
	}
	give_back(&c->vals, &c->vals_cap);
	if (!c->vals_cap)
		c->vals_len = 0;
	if (c->job.rows_cap > RESP_SHRINK)
		kv_job_free(&c->job);
	free(c->keys); /* KEYS's, whichever way it ended */
	c->keys = NULL;
	c->keys_len = c->keys_cap = 0;
	c->nkeys = 0;
}

static void process(struct resp_conn *c)
{
	while (c->fd >= 0 && !waiting(c) && !c->closing && c->out_len - c->out_off < RESP_OUT_PAUSE) {
		int n;
		size_t used;
		const char *err = NULL;
		if (c->in_off == c->in_len)
			return; /* nothing to parse; c->in may be NULL (finish gave a large one back) */
		enum resp_rc rc = resp_parse(c->in + c->in_off, c->in_len - c->in_off, c->args, c->args_cap, &n, &used,
					     &err);
		if (rc == RESP_GROW) {
			int cap = c->args_cap ? c->args_cap : 8;
			while (cap < n)
				cap *= 2;
			if (cap > RESP_MAX_ARGS)
				cap = RESP_MAX_ARGS;
			struct resp_arg *a = realloc(c->args, (size_t)cap * sizeof *a);
			if (!a) {
				reply_error(c, "ERR out of memory");
				c->closing = true;
				return;
			}
			c->args = a;
			c->args_cap = cap;
			continue;
		}
		if (rc == RESP_ERROR) {
			reply_error(c, "ERR %s", err);
			c->closing = true;
			return;
		}
		if (rc == RESP_MORE) {
			if (c->in_len - c->in_off >= RESP_IN_MAX) {
				reply_error(c, "ERR Protocol error: request larger than %u bytes", RESP_IN_MAX);
				c->closing = true;
			}
			return;
		}
		c->nargs = n;
		c->used = used;
		if (n > 0)
			dispatch(c);
		if (!waiting(c))
			finish(c);
	}
}

/* ---- the worker tenant ---- */

static void resp_stop(struct worker *w, const char *reason)
{
	struct resp_worker *rw = rw_of(w);
	(void)reason;
	while (rw->head)
		conn_close(rw->head);
}

/* The worker stops: its Redis connections, then the shard connections its kv calls (SQL and
 * Redis clients') run on (router.c keeps those; this tenant is kv's only one). */
static void kv_worker_stop(struct worker *w, const char *reason)
{
	resp_stop(w, reason);
	kv_router_worker_stop(atomic_load_explicit(&w->rt->kv_router, memory_order_acquire), w);
}

struct worker_hooks kv_resp_worker_hooks = {
	.name = "kv redis",
	.size = sizeof(struct resp_worker),
	.drain = resp_stop,
	.stop = kv_worker_stop,
};

void kv_resp_register(void)
{
	const char *t = getenv("TUSK_TEST_RESP_KEYS_MAX_MB");
	unsigned long long mb = t ? strtoull(t, NULL, 10) : 0;
	if (mb > 0 && mb < RESP_KEYS_MAX >> 20)
		keys_max = (size_t)mb << 20;
	client_protocol_register(CONFIG_LISTEN_REDIS, kv_resp_accept);
}
