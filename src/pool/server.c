/* The server connector: connect, log in (trust, cleartext, md5, SCRAM-SHA-256), run
 * tusk's own simple queries (SETs before handing a server to a client, the reset after),
 * and close. One state machine per server connection, on the loop of the worker that
 * currently owns it. */
#include "pool/server.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "auth/scram.h"
#include "config/config.h"
#include "net/evio.h"
#include "pool/pool.h"
#include "pool/probes.h"
#include "pool/services.h"
#include "proto/proto.h"
#include "runtime/runtime.h"
#include "stats/stats.h"
#include "util/log.h"
#include "util/phash.h"
#include "worker/worker.h"

#define SERVER_WBUF_SIZE (32 * 1024)

static void server_io_cb(struct ev_loop *loop, ev_io *io, int revents);
static void server_timer_cb(struct ev_loop *loop, ev_timer *t, int revents);

static const struct tusk_config *cfg_of(const struct server *s)
{
	return s->worker->rt->cfg;
}

#if !defined(NDEBUG) || defined(TUSK_DEBUG_ALLOC)
bool server_state_strict = true;
#else
bool server_state_strict = false;
#endif

#define TO(x) (1u << (x))
/* legal[from]: the states it may move to. IDLE -> IDLE: relay.c marks a released server
 * idle before server_park does; CLOSED -> CLOSED: a failed connect is closed again by its
 * teardown. */
static const unsigned legal[] = {
	[SERVER_CONNECTING] = TO(SERVER_LOGIN) | TO(SERVER_CLOSED),
	[SERVER_LOGIN] = TO(SERVER_IDLE) | TO(SERVER_CLOSED),
	[SERVER_QUERY] = TO(SERVER_IDLE) | TO(SERVER_CLOSED),
	[SERVER_ACTIVE] = TO(SERVER_IDLE) | TO(SERVER_QUERY) | TO(SERVER_DRAINING) | TO(SERVER_CLOSED),
	[SERVER_DRAINING] = TO(SERVER_IDLE) | TO(SERVER_CLOSED),
	[SERVER_IDLE] = TO(SERVER_IDLE) | TO(SERVER_ACTIVE) | TO(SERVER_QUERY) | TO(SERVER_DRAINING) |
			TO(SERVER_CLOSED),
	[SERVER_CLOSED] = TO(SERVER_CLOSED),
};
#undef TO

bool server_state_legal(enum server_state from, enum server_state to)
{
	return (unsigned)from < sizeof legal / sizeof legal[0] && (unsigned)to < 32 && (legal[from] >> to & 1u);
}

static const char *state_name(enum server_state st)
{
	static const char *const names[] = { "CONNECTING", "LOGIN", "QUERY", "ACTIVE", "DRAINING", "IDLE", "CLOSED" };
	return (unsigned)st < sizeof names / sizeof names[0] ? names[st] : "?";
}

bool server_set_state(struct server *s, enum server_state to)
{
	enum server_state from = s->state;
	s->state = to;
	if (__builtin_expect(server_state_legal(from, to), 1)) {
		log_debug(s->id, s->ctx, "state %s -> %s", state_name(from), state_name(to));
		return true;
	}
	log_error(s->id, s->ctx, "illegal server state change %s -> %s", state_name(from), state_name(to));
	if (server_state_strict)
		abort();
	return false;
}

static void set_state(struct server *s, enum server_state to)
{
	(void)server_set_state(s, to);
}

/* Watch for reads always, for writes only while tusk has bytes queued for the server. */
static void update_io(struct server *s)
{
	int want = s->tls_step == SERVER_TLS_HANDSHAKE ? (s->tls.rd_want ? s->tls.rd_want : EV_READ)
						       : tls_link_events(&s->tls, true, !buf_empty(&s->wbuf));
	evio_watch(s->worker->loop, &s->io, s->fd, want);
}

/* The pool's slot on each worker (server_worker_hooks): the servers attached to its loop. */
struct server_worker {
	struct server *servers;
};

static struct server_worker *sw_of(const struct worker *w)
{
	return worker_slot(w, server_worker_hooks.slot);
}

struct server *server_first(const struct worker *w)
{
	return sw_of(w)->servers;
}

static void link_worker(struct server *s, struct worker *w)
{
	struct server_worker *sw = sw_of(w);
	s->worker = w;
	s->wprev = NULL;
	s->wnext = sw->servers;
	if (sw->servers)
		sw->servers->wprev = s;
	sw->servers = s;
}

static void unlink_worker(struct server *s)
{
	struct worker *w = s->worker;
	if (!w)
		return;
	ev_io_stop(w->loop, &s->io);
	ev_timer_stop(w->loop, &s->timer);
	if (s->wprev)
		s->wprev->wnext = s->wnext;
	else
		sw_of(w)->servers = s->wnext;
	if (s->wnext)
		s->wnext->wprev = s->wprev;
	s->wprev = s->wnext = NULL;
	s->worker = NULL;
}

/* Close the servers still attached to w's loop (shutdown). */
static void server_close_all(struct worker *w, const char *reason)
{
	struct server_worker *sw = sw_of(w);
	while (sw->servers)
		server_close(sw->servers, reason);
}

static void server_worker_free(struct worker *w)
{
	server_close_all(w, "tusk is shutting down");
}

static unsigned server_worker_tick(struct worker *w, double now)
{
	pool_maintain(w, now);
	return 0;
}

struct worker_hooks server_worker_hooks = {
	.name = "pool",
	.size = sizeof(struct server_worker),
	.tick = server_worker_tick,
	.stop = server_close_all,
	.free = server_worker_free,
};

/* stats: the server is no longer connecting or logging in (done, failed or closed). */
static void stats_connect_done(struct server *s)
{
	if (s->stats_connecting) {
		s->stats_connecting = false;
		stats_server_connecting(pool_stats(s->pool), -1);
	}
}

static void free_server(struct server *s)
{
	stats_connect_done(s);
	if (s->cancels_detach)
		s->cancels_detach(s);
	s->cancels_detach = NULL;
	unlink_worker(s);
	if (s->tls_away) {
		/* The handshake thread has fd and tls.conn: a husk, detached from everything, until
		 * tls_back frees it. */
		s->husk = true;
		return;
	}
	tls_link_close(&s->tls);
	if (s->fd >= 0)
		close(s->fd);
	if (s->scram) {
		scram_client_clear(s->scram);
		free(s->scram);
	}
	free(s->errmsg);
	free(s->row);
	prep_server_free(s->prep);
	free(s->replay);
	buf_free(&s->rbuf);
	buf_free(&s->wbuf);
	free(s);
}

void server_close_keep_slot(struct server *s, const char *reason)
{
	TUSK_PROBE3(server__closed, s->id, s->ctx, reason);
	/* A quiet one that never logged in: its pool logs the failure (rate-limited). */
	if (!s->quiet)
		log_info(s->id, s->ctx, "closing server connection: %s", reason);
	if (s->fd >= 0 && s->state != SERVER_CONNECTING && s->state != SERVER_CLOSED) {
		/* Best effort: a polite Terminate lets the backend exit without a log complaint. */
		static const uint8_t terminate[5] = { 'X', 0, 0, 0, 4 };
		ssize_t n = tls_link_write(s->fd, &s->tls, terminate, sizeof terminate);
		(void)n;
	}
	set_state(s, SERVER_CLOSED);
	free_server(s);
}

void server_close(struct server *s, const char *reason)
{
	if (s->slot) {
		pool_close_server(s, reason); /* through the core, which calls server_close_keep_slot */
		return;
	}
	server_close_keep_slot(s, reason); /* pool-less (server_connect_login), or its connect failed */
}

bool server_error_is_no_slot(const uint8_t *errmsg, size_t errlen)
{
	struct proto_error_fields f = { 0 };
	if (!errmsg || errlen <= PROTO_HDR_LEN || errmsg[0] != 'E')
		return false;
	if (proto_parse_error(errmsg + PROTO_HDR_LEN, errlen - PROTO_HDR_LEN, &f) < 0 || !f.sqlstate)
		return false;
	return strncmp(f.sqlstate, "53300", 5) == 0;
}

/* Whether a failed login means the backend is unavailable (back off) rather than that this
 * login is wrong (a password, a database name: retrying at once is as good as later).
 * No ErrorResponse at all means the connection itself failed. */
bool server_error_backoff_worthy(const uint8_t *errmsg, size_t errlen)
{
	struct proto_error_fields f = { 0 };
	if (!errmsg || errlen <= PROTO_HDR_LEN)
		return true;
	if (proto_parse_error(errmsg + PROTO_HDR_LEN, errlen - PROTO_HDR_LEN, &f) < 0 || !f.sqlstate)
		return true;
	/* 08 connection exception, 53 insufficient resources (too many connections),
	 * 57 operator intervention (shutting down, starting up) */
	return strncmp(f.sqlstate, "08", 2) == 0 || strncmp(f.sqlstate, "53", 2) == 0 ||
	       strncmp(f.sqlstate, "57", 2) == 0;
}

/* Report the end of an operation. A failure closes the server unless it stayed usable. */
static void finish(struct server *s, int err, const char *reason)
{
	server_done_fn done = s->done;
	void *arg = s->done_arg;
	uint8_t *errmsg = s->errmsg;
	size_t errlen = s->errlen;

	s->done = NULL;
	s->errmsg = NULL;
	s->errlen = 0;
	if (s->worker)
		ev_timer_stop(s->worker->loop, &s->timer);
	stats_connect_done(s);
	if (s->pool &&
	    (s->state == SERVER_CONNECTING || s->state == SERVER_LOGIN || (s->state == SERVER_CLOSED && s->fd < 0))) {
		TUSK_PROBE5(connect__done, s->id, s->ctx, err, (long long)((ev_now(s->worker->loop) - s->created) * 1e6),
			    err ? reason : "");
		/* Backoff, the 53300 cap and passthrough credentials are the pool's (pool.c decides
		 * from errmsg what the core is told). */
		if (err == 0)
			s->quiet = false; /* logged in: its life from now on is logged as any */
	}
	/* The watcher stays armed: whoever uses the server next (relay, park) re-points the
	 * callback, which costs no epoll change. */
	if (err == 0 || s->ok_after_error)
		set_state(s, SERVER_IDLE);
	bool close_after = err < 0 && !s->ok_after_error;
	if (close_after && !s->quiet)
		log_warn(s->id, s->ctx, "server connection failed: %s", reason);
	if (done)
		done(s, arg, err, reason, errmsg, errlen);
	free(errmsg);
	if (close_after)
		server_close(s, reason);
}

static void fail(struct server *s, const char *reason)
{
	s->ok_after_error = false;
	finish(s, -EPROTO, reason);
}

static int flush_wbuf(struct server *s)
{
	while (!buf_empty(&s->wbuf)) {
		ssize_t n = tls_link_write(s->fd, &s->tls, buf_head(&s->wbuf), buf_len(&s->wbuf));
		if (n > 0) {
			buf_consume(&s->wbuf, (size_t)n);
			continue;
		}
		if (n == -EAGAIN)
			break;
		return -EPIPE;
	}
	update_io(s);
	return 0;
}

/* Allocate s, fill in what every connection needs, and start the non-blocking connect to
 * s->addr. The caller has set the pool (or not), the login names and the credentials. */
static struct server *new_server(struct worker *w, struct pool *pool, size_t rbuf_size)
{
	struct server *s = calloc(1, sizeof *s);

	if (!s)
		return NULL;
	s->fd = -1;
	if (buf_init(&s->rbuf, rbuf_size) < 0)
		goto err_free;
	if (buf_init(&s->wbuf, SERVER_WBUF_SIZE) < 0)
		goto err_free;
	id_make(s->id, 's');
	s->idle_worker = -1;
	s->pool = pool;
	s->pool_gen = pool ? pool_generation(pool) : 0;
	link_worker(s, w);
	/* calloc: a new server starts SERVER_CONNECTING (0), the only state nothing moves to. */
	_Static_assert(SERVER_CONNECTING == 0, "a new server's state is its calloc'd zero");
	if (pool) { /* pool-less connections (auth_query) are not pool servers */
		s->stats_connecting = true;
		stats_server_connecting(pool_stats(pool), 1);
	}
	s->created = ev_now(w->loop);
	ev_init(&s->io, server_io_cb);
	s->io.data = s;
	ev_init(&s->timer, server_timer_cb);
	s->timer.data = s;
	return s;

err_free:
	buf_free(&s->rbuf);
	buf_free(&s->wbuf);
	free(s);
	return NULL;
}

static void start_connect(struct server *s, struct worker *w)
{
	TUSK_PROBE3(connect__start, s->id, s->ctx, w->index);
	struct net_tcp_opts k;
	net_tcp_opts_of(w->rt->cfg, true, &k);
	bool tcp = s->addr.sa.ss_family != AF_UNIX;
	s->fd = net_connect_buffered(&s->addr, tcp ? k.buffer : 0);
	k.buffer = 0; /* set already, before the handshake */
	if (s->fd >= 0 && tcp)
		net_tcp_opts_apply(s->fd, &k);
	if (s->fd < 0) {
		/* Report asynchronously-shaped failures the same way: through done, from the loop. */
		int e = -s->fd;
		s->fd = -1;
		if (!s->quiet)
			log_warn(s->id, s->ctx, "connect failed: %s", strerror(e));
		ev_timer_set(&s->timer, 0., 0.);
		ev_timer_start(w->loop, &s->timer);
		set_state(s, SERVER_CLOSED);
		return;
	}
	ev_io_set(&s->io, s->fd, EV_WRITE);
	ev_io_start(w->loop, &s->io);
	ev_timer_set(&s->timer, (double)w->rt->cfg->server_connect_timeout_ms / 1000.0, 0.);
	ev_timer_start(w->loop, &s->timer);
	log_debug(s->id, s->ctx, "connecting");
}

/* The name TLS verifies (and sends as SNI): the configured name of the host the server's
 * address came from, since the address itself is numeric (services_tls_name). */
static void tls_host_name(const struct server *s, char *out, size_t cap)
{
	struct tp_backend_addr be = { .name = "" };
	int port = net_addr_host_port(&s->addr, be.name, sizeof be.name);
	be.port = port > 0 ? (uint16_t)port : 0;
	services_tls_name(s->worker->rt->services, s->service, &be, out, cap);
}

static struct server *connect_pool_server(struct pool *pool, struct worker *w, const struct net_addr *to,
					  const struct server_cred *cred, bool quiet, server_done_fn done, void *arg)
{
	struct runtime *rt = w->rt;
	const struct config_pool_rule *rule = pool_rule(pool);
	char addr[NET_ADDR_STR_MAX];
	struct server *s = new_server(w, pool, rt->cfg->buffer_size);

	if (!s)
		return NULL;
	/* Only transaction and statement pooling rename statements; session mode passes them. */
	if (rule->mode != POOL_MODE_SESSION && rt->cfg->max_prepared_statements > 0) {
		s->prep = prep_server_new((uint32_t)rt->cfg->max_prepared_statements);
		if (!s->prep) {
			unlink_worker(s);
			buf_free(&s->rbuf);
			buf_free(&s->wbuf);
			free(s);
			return NULL;
		}
	}
	s->done = done;
	s->done_arg = arg;
	uint64_t lifetime_ms = config_server_lifetime(rt->cfg, rule);
	if (lifetime_ms) {
		/* +-10% so that servers opened together do not all expire together. */
		unsigned r = (unsigned)random() % 2001;
		double life = (double)lifetime_ms / 1000.0 * (0.9 + (double)r / 10000.0);
		s->expires_at = s->created + life;
	}
	s->service = rule->service;
	s->addr = *to;
	snprintf(s->login_user, sizeof s->login_user, "%s", rule->server_user ? rule->server_user : pool_user(pool));
	snprintf(s->login_database, sizeof s->login_database, "%s",
		 rule->server_database ? rule->server_database : pool_database(pool));
	s->login_password = rule->server_password;
	if (!s->login_password && cred)
		s->cred = *cred;
	net_addr_str(&s->addr, addr, sizeof addr);
	log_ctx_format(s->ctx, sizeof s->ctx, pool_database(pool), pool_user(pool), addr);
	s->quiet = quiet;
	start_connect(s, w);
	return s;
}

struct server *server_connect(struct pool *pool, struct worker *w, const struct net_addr *addr,
			      const struct server_cred *cred, server_done_fn done, void *arg)
{
	return connect_pool_server(pool, w, addr, cred, false, done, arg);
}

struct server *server_connect_refill(struct pool *pool, struct worker *w, const struct net_addr *addr,
				     const struct server_cred *cred, server_done_fn done)
{
	return connect_pool_server(pool, w, addr, cred, true, done, NULL);
}

struct server *server_connect_login(struct worker *w, const struct server_login *login, server_done_fn done,
				    void *arg)
{
	char addr[NET_ADDR_STR_MAX];
	/* Small: it carries tusk's own queries and their one-row answers, never a client's. */
	struct server *s = new_server(w, NULL, login->rbuf_size ? login->rbuf_size : SERVER_LOGIN_RBUF_SIZE);

	if (!s)
		return NULL;
	s->done = done;
	s->done_arg = arg;
	s->addr = *login->addr;
	s->service = login->service;
	snprintf(s->login_user, sizeof s->login_user, "%s", login->user);
	snprintf(s->login_database, sizeof s->login_database, "%s", login->database);
	s->login_password = login->password;
	if (login->cred && !login->password)
		s->cred = *login->cred;
	s->login_extra = login->extra;
	s->login_nextra = login->nextra < SERVER_LOGIN_EXTRA_MAX ? login->nextra : SERVER_LOGIN_EXTRA_MAX;
	net_addr_str(&s->addr, addr, sizeof addr);
	log_ctx_format(s->ctx, sizeof s->ctx, login->database, login->user, addr);
	start_connect(s, w);
	return s;
}

static int send_startup(struct server *s)
{
	struct proto_param params[2 + SERVER_LOGIN_EXTRA_MAX] = {
		{ "user", s->login_user },
		{ "database", s->login_database },
	};
	int n = 2;
	for (int i = 0; i < s->login_nextra; i++)
		params[n++] = s->login_extra[i];
	if (s->pool) {
		/* The rule's, as PgBouncer's per-database options: the session's defaults, which
		 * RESET ALL and DISCARD ALL go back to and the greeting reports. */
		const struct config_pool_rule *rule = pool_rule(s->pool);
		const struct proto_param asked[] = { { "client_encoding", rule->client_encoding },
						     { "datestyle", rule->datestyle },
						     { "timezone", rule->timezone },
						     { "application_name", rule->application_name } };
		for (size_t i = 0; i < sizeof asked / sizeof asked[0]; i++)
			if (asked[i].value && n < (int)(sizeof params / sizeof params[0]))
				params[n++] = asked[i];
	}
	int rc = proto_put_startup(&s->wbuf, params, n);
	s->login_extra = NULL; /* the caller's: not read after this */
	s->login_nextra = 0;
	if (rc < 0)
		return -ENOSPC;
	set_state(s, SERVER_LOGIN);
	return flush_wbuf(s);
}

static int service_tls_mode(const struct server *s)
{
	return s->service->tls;
}

static void tls_done(struct server *s, int rc)
{
	char reason[TLS_ERR_MAX + 64];

	if (rc < 0) {
		snprintf(reason, sizeof reason, "TLS handshake with the server failed: %s", tls_conn_error(s->tls.conn));
		fail(s, reason);
		return;
	}
	s->tls_step = SERVER_TLS_DONE;
	s->tls.rd_want = 0;
	log_debug(s->id, s->ctx, "TLS established: %s %s", tls_version(s->tls.conn), tls_cipher(s->tls.conn));
	if (send_startup(s) < 0)
		fail(s, "could not send startup packet");
}

/* Back on the worker from the handshake thread (tls_hand_over): fd and tls.conn are the
 * worker's again. A server closed meanwhile was kept as a husk for this moment. */
static void tls_back(struct worker *w, struct worker_msg *m)
{
	struct server *s = m->arg;

	s->tls_away = false;
	if (s->husk) {
		free_server(s);
		return;
	}
	if (m->num == -ETIMEDOUT) {
		fail(s, "timed out connecting to the server (server_connect_timeout)");
		return;
	}
	if (m->num == -ECANCELED) {
		fail(s, "TLS handshake with the server cancelled: tusk is stopping");
		return;
	}
	/* The rest of server_connect_timeout is the login's (the thread had the timer). */
	double left = s->tls_deadline - ev_now(w->loop);
	ev_timer_set(&s->timer, left > 0.001 ? left : 0.001, 0.);
	ev_timer_start(w->loop, &s->timer);
	tls_done(s, m->num);
}

/* Hand the whole handshake to a handshake thread (rt->tls_hs), as the clients' are, so that
 * no key exchange or certificate check runs on the worker, which relays for other clients.
 * The connect timer's deadline goes with it. false: there is none, or no memory: the worker
 * runs it. */
static bool tls_hand_over(struct server *s)
{
	struct worker *w = s->worker;
	s->tls_deadline = ev_now(w->loop) + ev_timer_remaining(w->loop, &s->timer);
	if (!worker_tls_hand_over(w, s->tls.conn, s->fd, s->tls_deadline, tls_back, s))
		return false;
	ev_io_stop(w->loop, &s->io);
	ev_timer_stop(w->loop, &s->timer);
	s->tls_away = true;
	return true;
}

static void tls_handshake_step(struct server *s)
{
	int want = 0;
	int rc = tls_handshake(s->tls.conn, &want);

	if (rc == -EAGAIN) {
		s->tls.rd_want = (uint8_t)want;
		update_io(s);
		return;
	}
	tls_done(s, rc);
}

/* The server's one-byte answer to SSLRequest: 'S' starts the handshake, 'N' means plaintext
 * (acceptable only with tls: prefer). */
static void on_ssl_answer(struct server *s)
{
	uint8_t answer, extra;
	ssize_t n = read(s->fd, &answer, 1);

	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n != 1) {
		fail(s, "server closed the connection during TLS negotiation");
		return;
	}
	if (answer == 'N') {
		if (service_tls_mode(s) != CONFIG_STLS_PREFER) {
			fail(s, "server does not support TLS, and the service's tls mode requires it");
			return;
		}
		s->tls_step = SERVER_TLS_DONE;
		if (send_startup(s) < 0)
			fail(s, "could not send startup packet");
		return;
	}
	if (answer != 'S') {
		fail(s, "server answered the SSLRequest with neither S nor N");
		return;
	}
	/* Bytes before our ClientHello cannot come from the server's TLS stack: someone in the
	 * middle injected them (CVE-2021-23222). */
	if (recv(s->fd, &extra, 1, MSG_PEEK | MSG_DONTWAIT) > 0) {
		fail(s, "server sent unencrypted data after its SSL answer");
		return;
	}
	struct runtime *rt = s->worker->rt;
	char host[CONFIG_HOST_MAX];
	tls_host_name(s, host, sizeof host);
	s->tls.conn = tls_conn_new(runtime_service_tls(rt, s->service), s->fd, false, host);
	if (!s->tls.conn) {
		fail(s, "could not start TLS to the server");
		return;
	}
	s->tls_step = SERVER_TLS_HANDSHAKE;
	if (!tls_hand_over(s))
		tls_handshake_step(s);
}

static void on_connected(struct server *s)
{
	int err = net_connect_result(s->fd);
	if (err < 0) {
		char reason[128];
		snprintf(reason, sizeof reason, "could not connect to server: %s", strerror(-err));
		fail(s, reason);
		return;
	}
	if (service_tls_mode(s) != CONFIG_STLS_DISABLE) {
		static const uint8_t ssl_request[8] = { 0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f };
		if (write(s->fd, ssl_request, sizeof ssl_request) != (ssize_t)sizeof ssl_request) {
			fail(s, "could not send SSLRequest");
			return;
		}
		s->tls_step = SERVER_TLS_ANSWER;
		update_io(s);
		return;
	}
	s->tls_step = SERVER_TLS_DONE;
	if (send_startup(s) < 0)
		fail(s, "could not send startup packet");
}

static int handle_auth(struct server *s, const uint8_t *body, size_t len)
{
	struct proto_auth a;
	char msg[SCRAM_MSG_MAX];
	int n;

	if (proto_parse_auth(body, len, &a) < 0) {
		fail(s, "malformed authentication request from server");
		return -1;
	}
	if (a.code == PROTO_AUTH_OK)
		return 0;
	/* Without server_password, the client's own credentials (passthrough), if its
	 * authentication gave tusk something the server's method can use. */
	const char *password = s->login_password ? s->login_password
				: s->cred.kind == SERVER_CRED_PLAIN ? s->cred.secret : NULL;
	bool md5_hash = !s->login_password && s->cred.kind == SERVER_CRED_MD5;
	bool scram_keys = !s->login_password && s->cred.kind == SERVER_CRED_SCRAM;
	bool usable = password || (a.code == PROTO_AUTH_MD5 && md5_hash) ||
		      (a.code >= PROTO_AUTH_SASL && a.code <= PROTO_AUTH_SASL_FINAL && scram_keys);
	if (!usable && !s->pool) {
		fail(s, "the server asked for a password and auth_file has no plain or md5 secret for this user");
		return -1;
	}
	if (!usable) {
		fail(s, s->cred.kind == SERVER_CRED_NONE
				? "the server asked for a password and none is configured for this pool (set server_password)"
				: "the server's authentication method cannot use the client's credentials (set server_password)");
		return -1;
	}
	switch (a.code) {
	case PROTO_AUTH_CLEARTEXT:
		if (proto_put_password(&s->wbuf, password) < 0)
			goto err_nospace;
		break;
	case PROTO_AUTH_MD5: {
		char md5[36];
		if (a.data_len != 4) {
			fail(s, "malformed md5 salt from server");
			return -1;
		}
		if (password)
			auth_md5_response(s->login_user, password, a.data, md5);
		else
			auth_md5_response_from_hash(s->cred.secret, a.data, md5);
		if (proto_put_password(&s->wbuf, md5) < 0)
			goto err_nospace;
		break;
	}
	case PROTO_AUTH_SASL:
		if (!proto_sasl_has_mechanism(a.data, a.data_len, "SCRAM-SHA-256")) {
			fail(s, "the server offers no SASL mechanism tusk supports (need SCRAM-SHA-256)");
			return -1;
		}
		s->scram = calloc(1, sizeof *s->scram);
		if (!s->scram ||
		    (password ? scram_client_init(s->scram, password)
			      : scram_client_init_with_keys(s->scram, s->cred.client_key, s->cred.server_key, s->cred.salt,
							    s->cred.salt_len, s->cred.iterations)) < 0) {
			fail(s, "could not start SCRAM authentication");
			return -1;
		}
		n = scram_client_first(s->scram, msg, sizeof msg);
		if (n < 0 || proto_put_sasl_initial(&s->wbuf, "SCRAM-SHA-256", msg, (size_t)n) < 0)
			goto err_nospace;
		break;
	case PROTO_AUTH_SASL_CONTINUE:
		if (!s->scram) {
			fail(s, "unexpected SASL continue from server");
			return -1;
		}
		n = scram_client_final(s->scram, (const char *)a.data, a.data_len, msg, sizeof msg);
		if (n < 0) {
			fail(s, "invalid SCRAM server-first-message");
			return -1;
		}
		if (proto_put_sasl_response(&s->wbuf, msg, (size_t)n) < 0)
			goto err_nospace;
		break;
	case PROTO_AUTH_SASL_FINAL:
		if (!s->scram || scram_client_verify_final(s->scram, (const char *)a.data, a.data_len) < 0) {
			fail(s, "SCRAM server signature did not verify");
			return -1;
		}
		scram_client_clear(s->scram);
		free(s->scram);
		s->scram = NULL;
		return 0;
	default: {
		char reason[96];
		snprintf(reason, sizeof reason, "unsupported authentication method %u requested by server", a.code);
		fail(s, reason);
		return -1;
	}
	}
	if (flush_wbuf(s) < 0) {
		fail(s, "write to server failed");
		return -1;
	}
	return 0;

err_nospace:
	fail(s, "authentication message too large");
	return -1;
}

/* GUC names are case-insensitive: the classifier lower-cases them, the server reports
 * "TimeZone", "DateStyle". */
static int param_index(const struct server *s, const char *name)
{
	for (int i = 0; i < s->nparams; i++)
		if (strcasecmp(s->params[i].name, name) == 0)
			return i;
	return -1;
}

const char *server_param(const struct server *s, const char *name)
{
	int i = param_index(s, name);
	return i < 0 ? NULL : s->params[i].value;
}

const char *server_param_name(const struct server *s, const char *name)
{
	int i = param_index(s, name);
	return i < 0 ? NULL : s->params[i].name;
}

bool server_param_is_reset_value(const struct server *s, const char *name, const char *value)
{
	int i = param_index(s, name);
	return i >= 0 && i < s->nreset && s->reset_pairs[i] == phash_pair(s->params[i].name, value);
}

void server_set_param(struct server *s, const char *name, const char *value)
{
	int i;
	for (i = 0; i < s->nparams; i++)
		if (strcmp(s->params[i].name, name) == 0)
			break;
	if (i == s->nparams) {
		if (s->nparams == SERVER_PARAMS_MAX) {
			log_warn(s->id, s->ctx, "too many server parameters; ignoring %s", name);
			return;
		}
		s->nparams++;
		snprintf(s->params[i].name, sizeof s->params[i].name, "%s", name);
	} else if (!server_param_read_only(name)) {
		s->params_hash -= phash_pair(s->params[i].name, s->params[i].value);
	}
	snprintf(s->params[i].value, sizeof s->params[i].value, "%s", value);
	if (!server_param_read_only(name))
		s->params_hash += phash_pair(s->params[i].name, s->params[i].value);
	else if (s->state != SERVER_LOGIN)
		pool_server_param(s, name, value); /* a role change after login (a promotion) */
}

bool server_param_read_only(const char *name)
{
	static const char *const ro[] = { "server_version", "server_encoding", "integer_datetimes", "is_superuser",
					  "session_authorization", "in_hot_standby", "scram_iterations" };
	for (size_t i = 0; i < sizeof ro / sizeof ro[0]; i++)
		if (strcasecmp(name, ro[i]) == 0)
			return true;
	return false;
}

static void keep_error(struct server *s, const uint8_t *msg, size_t len)
{
	if (s->errmsg)
		return;
	s->errmsg = malloc(len);
	if (s->errmsg) {
		memcpy(s->errmsg, msg, len);
		s->errlen = len;
	}
}

/* A DataRow of server_fetch_row: the first is kept if small enough, the rest counted. */
static void keep_row(struct server *s, const uint8_t *body, size_t len)
{
	if (s->nrows++ > 0)
		return;
	if (len > SERVER_FETCH_ROW_MAX) {
		s->row_too_big = true;
		return;
	}
	s->row = malloc(len ? len : 1);
	if (!s->row) {
		s->row_too_big = true; /* reported the same way: no row to give */
		return;
	}
	memcpy(s->row, body, len);
	s->rowlen = len;
}

const char *server_connect_query(const struct server *s)
{
	return s->pool ? pool_rule(s->pool)->connect_query : NULL;
}

/* Logged in: the rule's connect_query goes out, still inside the login (its timeout, no
 * client yet). */
static int start_connect_query(struct server *s)
{
	s->in_connect_query = true;
	if (proto_put_query(&s->wbuf, server_connect_query(s)) < 0 || flush_wbuf(s) < 0) {
		fail(s, "could not send connect_query");
		return -1;
	}
	return 0;
}

/* connect_query's ReadyForQuery came: an error, or a transaction left open, fails the login
 * (a server in a state the operator did not mean is handed to no client). Logged with the
 * server's id even for a min_size refill: the login itself went through. */
static bool connect_query_failed(struct server *s)
{
	char reason[320];
	if (s->errmsg) {
		struct proto_error_fields f = { 0 };
		char message[320];
		(void)proto_parse_error(s->errmsg + PROTO_HDR_LEN, s->errlen - PROTO_HDR_LEN, &f);
		snprintf(reason, sizeof reason, "connect_query failed: %s %s", f.sqlstate ? f.sqlstate : "",
			 f.message ? f.message : "");
		/* What the waiting client is told: the server's SQLSTATE (the pool's verdict on the
		 * backend reads it), with a message that says it was the connect_query. */
		snprintf(message, sizeof message, "tusk %s: connect_query failed: %s", s->id, f.message ? f.message : "");
		uint8_t out[sizeof message + 64];
		struct buf b = { .data = out, .cap = sizeof out };
		if (proto_put_error(&b, "FATAL", f.sqlstate ? f.sqlstate : "XX000", message, NULL, NULL) == 0) {
			free(s->errmsg); /* f's strings pointed into it: read above */
			s->errmsg = NULL;
			keep_error(s, buf_head(&b), buf_len(&b));
		}
	} else if (s->tx_status != 'I') {
		snprintf(reason, sizeof reason, "connect_query left the server inside a transaction");
	} else {
		return false;
	}
	s->quiet = false;
	fail(s, reason);
	return true;
}

/* One complete message during login or a query of ours. Returns 1 to go on, 0 when the
 * operation finished (finish() ran; s may be gone), -1 when it failed (s is gone). */
static int handle_message(struct server *s, uint8_t type, const uint8_t *msg, size_t total)
{
	const uint8_t *body = msg + PROTO_HDR_LEN;
	size_t len = total - PROTO_HDR_LEN;

	switch (type) {
	case 'R':
		if (s->state != SERVER_LOGIN) {
			fail(s, "authentication request outside login");
			return -1;
		}
		return handle_auth(s, body, len) < 0 ? -1 : 1;
	case 'S': {
		const char *name, *value;
		if (proto_parse_parameter_status(body, len, &name, &value) == 0)
			server_set_param(s, name, value);
		return 1;
	}
	case 'K':
		if (proto_parse_backend_key(body, len, &s->backend_pid, &s->backend_key) < 0) {
			fail(s, "malformed BackendKeyData from server");
			return -1;
		}
		return 1;
	case 'E':
		if (s->state == SERVER_DRAINING)
			return 1; /* the cancel we sent, or the client's own failure: nobody to tell */
		keep_error(s, msg, total);
		if (s->state == SERVER_LOGIN && !s->in_connect_query) {
			struct proto_error_fields f = { 0 };
			char reason[256];
			(void)proto_parse_error(body, len, &f);
			snprintf(reason, sizeof reason, "server refused login: %s %s",
				 f.sqlstate ? f.sqlstate : "", f.message ? f.message : "");
			fail(s, reason);
			return -1;
		}
		return 1;
	case 'Z':
		if (len != 1) {
			fail(s, "malformed ReadyForQuery from server");
			return -1;
		}
		s->tx_status = body[0];
		if (s->state == SERVER_LOGIN) {
			if (!s->in_connect_query) {
				s->nreset = s->nparams;
				for (int i = 0; i < s->nparams; i++)
					s->reset_pairs[i] = phash_pair(s->params[i].name, s->params[i].value);
			}
			if (!s->in_connect_query && server_connect_query(s))
				return start_connect_query(s) < 0 ? -1 : 1;
			if (s->in_connect_query && connect_query_failed(s))
				return -1;
			/* after connect_query: its settings are part of what a client starts from */
			s->login_params_hash = s->params_hash;
			log_debug(s->id, s->ctx, "logged in (backend pid %u)", s->backend_pid);
			finish(s, 0, NULL);
			return 0;
		}
		if (--s->pending_rfq > 0)
			return 1;
		if (s->row_too_big && !s->errmsg) {
			s->ok_after_error = true;
			finish(s, -EMSGSIZE, "row from a query of tusk's own too large");
			return 0;
		}
		if (s->errmsg) {
			s->ok_after_error = true;
			finish(s, -EPROTO, "query failed on server");
		} else {
			finish(s, 0, NULL);
		}
		return 0;
	case 'G':
		if (s->state == SERVER_DRAINING) {
			/* The client left in the middle of COPY FROM STDIN: abort it. */
			static const char why[] = "client disconnected";
			uint8_t m[5 + sizeof why];
			m[0] = 'f';
			uint32_t l = 4 + sizeof why;
			m[1] = (uint8_t)(l >> 24), m[2] = (uint8_t)(l >> 16), m[3] = (uint8_t)(l >> 8), m[4] = (uint8_t)l;
			memcpy(m + 5, why, sizeof why);
			if (buf_append(&s->wbuf, m, sizeof m) < 0 || flush_wbuf(s) < 0) {
				fail(s, "could not abort COPY");
				return -1;
			}
			return 1;
		}
		fail(s, "unexpected COPY from a query of tusk's own");
		return -1;
	case 'H':
		if (s->state == SERVER_DRAINING)
			return 1; /* COPY TO STDOUT: its data is dropped like any other reply */
		fail(s, "unexpected COPY from a query of tusk's own");
		return -1;
	case 'W':
		fail(s, "unexpected COPY from a query of tusk's own");
		return -1;
	case 'D':
		if (s->fetching && s->state == SERVER_QUERY)
			keep_row(s, body, len);
		return 1;
	default:
		/* NoticeResponse, CommandComplete, rows, NotificationResponse, NegotiateProtocolVersion... */
		return 1;
	}
}

/* Types we may drop without looking when they do not fit in the buffer. */
static bool skippable(const struct server *s, uint8_t type)
{
	if (s->state == SERVER_DRAINING)
		return type != 'Z' && type != 'G' && type != 'W' && type != 'R';
	return type == 'D' || type == 'N' || type == 'A' || type == 'T' || type == 'C' || type == 'd';
}

static void process_input(struct server *s)
{
	uint32_t max = cfg_of(s)->max_message_size;

	while (!buf_empty(&s->rbuf)) {
		struct proto_hdr h;
		ssize_t r = proto_read_hdr(buf_head(&s->rbuf), buf_len(&s->rbuf), max, &h);
		if (r == 0)
			break;
		if (r < 0) {
			fail(s, "protocol violation from server");
			return;
		}
		size_t total = (size_t)h.len + 1;
		if (buf_len(&s->rbuf) < total) {
			if (total > s->rbuf.cap && skippable(s, h.type)) {
				/* Too big to hold and not needed: drop what we have, keep skipping. */
				if (h.type == 'D' && s->fetching && s->nrows++ == 0)
					s->row_too_big = true;
				s->pending_skip = total - buf_len(&s->rbuf);
				buf_consume(&s->rbuf, buf_len(&s->rbuf));
				return;
			}
			if (total > s->rbuf.cap) {
				fail(s, "message from server larger than the buffer");
				return;
			}
			buf_compact(&s->rbuf);
			break;
		}
		/* Consume before handling: a finished operation may start the next one (and read
		 * the buffer again) from inside handle_message. The bytes stay valid until the
		 * next read into the buffer. */
		const uint8_t *msg = buf_head(&s->rbuf);
		buf_consume(&s->rbuf, total);
		if (handle_message(s, h.type, msg, total) <= 0)
			return;
	}
}

static void read_input(struct server *s)
{
	for (;;) {
		if (buf_room(&s->rbuf) == 0)
			buf_compact(&s->rbuf);
		ssize_t n = tls_link_read(s->fd, &s->tls, buf_tail(&s->rbuf), buf_room(&s->rbuf));
		if (n > 0) {
			/* Records OpenSSL holds past a full buffer wake no poll. Fed before processing:
			 * if processing frees s, stopping its watcher drops the event. */
			if (s->tls.buffered)
				ev_feed_event(s->worker->loop, &s->io, EV_READ);
			if (s->pending_skip) {
				size_t k = (size_t)n < s->pending_skip ? (size_t)n : s->pending_skip;
				s->pending_skip -= k;
				buf_produce(&s->rbuf, (size_t)n);
				buf_consume(&s->rbuf, k);
			} else {
				buf_produce(&s->rbuf, (size_t)n);
			}
			enum server_state before = s->state;
			process_input(s);
			/* process_input may have finished the operation (and freed s on failure). */
			return (void)before;
		}
		if (n == 0) {
			fail(s, "server closed the connection");
			return;
		}
		if (n == -EAGAIN) {
			update_io(s);
			return;
		}
		fail(s, "read from server failed");
		return;
	}
}

static void server_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct server *s = io->data;
	(void)loop;

	if (s->state == SERVER_CONNECTING) {
		if (s->tls_step == SERVER_TLS_ANSWER)
			on_ssl_answer(s);
		else if (s->tls_step == SERVER_TLS_HANDSHAKE)
			tls_handshake_step(s);
		else
			on_connected(s);
		return;
	}
	if (tls_link_crossed(&s->tls))
		revents |= EV_READ | EV_WRITE;
	if (s->state == SERVER_IDLE && (revents & EV_READ)) {
		/* Between operations nothing is owed: bytes now mean trouble. */
		server_close(s, "sent data while idle");
		return;
	}
	if (revents & EV_WRITE) {
		if (flush_wbuf(s) < 0) {
			fail(s, "write to server failed");
			return;
		}
	}
	if (revents & EV_READ)
		read_input(s);
}

static void server_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct server *s = t->data;
	(void)loop;
	(void)revents;

	switch (s->state) {
	case SERVER_CLOSED: /* connect() failed synchronously */
		fail(s, "could not connect to server");
		break;
	case SERVER_CONNECTING:
	case SERVER_LOGIN:
		fail(s, "timed out connecting to the server (server_connect_timeout)");
		break;
	default:
		fail(s, "timed out waiting for the server");
		break;
	}
}

/* Take over the server for an operation of tusk's own that ends after nrfq ReadyForQuery. */
static void begin_op(struct server *s, enum server_state state, int nrfq, server_done_fn done, void *arg)
{
	if (s->resting)
		pool_server_rest(s, false); /* tusk's own work on it (a rollback, a reset) */
	s->done = done;
	s->done_arg = arg;
	s->ok_after_error = false;
	s->pending_rfq = nrfq;
	s->fetching = false;
	s->row_too_big = false;
	s->nrows = 0;
	free(s->row);
	s->row = NULL;
	s->rowlen = 0;
	set_state(s, state);
	ev_set_cb(&s->io, server_io_cb);
	s->io.data = s;
}

/* Send what is queued, arm the timeout, and handle replies already buffered. */
static void run_op(struct server *s, double timeout)
{
	ev_timer_stop(s->worker->loop, &s->timer);
	ev_timer_set(&s->timer, timeout, 0.);
	ev_timer_start(s->worker->loop, &s->timer);
	if (flush_wbuf(s) < 0) {
		fail(s, "write to server failed");
		return;
	}
	/* Replies may already be buffered only if the server spoke out of turn; handle them. */
	if (!buf_empty(&s->rbuf))
		process_input(s);
}

void server_run_queries(struct server *s, const char *const *sqls, int nqueries, double timeout,
			server_done_fn done, void *arg)
{
	begin_op(s, SERVER_QUERY, nqueries, done, arg);
	for (int i = 0; i < nqueries; i++) {
		if (proto_put_query(&s->wbuf, sqls[i]) < 0) {
			fail(s, "query of tusk's own too large");
			return;
		}
	}
	run_op(s, timeout);
}

void server_run_statements(struct server *s, const char *list, double timeout, server_done_fn done, void *arg)
{
	static const uint8_t zero16[2] = { 0, 0 }, zero32[4] = { 0, 0, 0, 0 };
	static const char name[] = SERVER_OWN_NAME;
	if (!*list) {
		done(s, arg, 0, NULL, NULL, 0);
		return;
	}
	begin_op(s, SERVER_QUERY, 1, done, arg);
	const struct proto_part bind[] = { { name, sizeof name }, { name, sizeof name }, { zero16, 2 }, { zero16, 2 },
					   { zero16, 2 } };
	const struct proto_part exec[] = { { name, sizeof name }, { zero32, 4 } };
	const struct proto_part close_s[] = { { "S", 1 }, { name, sizeof name } };
	const struct proto_part close_p[] = { { "P", 1 }, { name, sizeof name } };
	for (const char *sql = list; *sql; sql += strlen(sql) + 1) {
		const struct proto_part parse[] = { { name, sizeof name }, { sql, strlen(sql) + 1 }, { zero16, 2 } };
		/* The statement is closed before its portal runs (the portal keeps its plan): an
		 * error in the Execute skips the rest, and leaves no statement of tusk's behind. */
		if (proto_put_parts(&s->wbuf, 'P', 0, parse, 3) < 0 || proto_put_parts(&s->wbuf, 'B', 0, bind, 5) < 0 ||
		    proto_put_parts(&s->wbuf, 'C', 0, close_s, 2) < 0 || proto_put_parts(&s->wbuf, 'E', 0, exec, 2) < 0 ||
		    proto_put_parts(&s->wbuf, 'C', 0, close_p, 2) < 0) {
			fail(s, "query of tusk's own too large");
			return;
		}
	}
	if (proto_put_parts(&s->wbuf, 'S', 0, NULL, 0) < 0) {
		fail(s, "query of tusk's own too large");
		return;
	}
	run_op(s, timeout);
}

/* Parse stmt from sql (unless sql is NULL: stmt is prepared already), Bind "" stmt with one
 * text parameter and text results, Execute all rows, Sync. The parameter never enters the
 * SQL text. */
static void fetch_row(struct server *s, const char *stmt, const char *sql, const char *param, double timeout,
		      server_done_fn done, void *arg)
{
	static const uint8_t zero16[2] = { 0, 0 }, one16[2] = { 0, 1 }, zero32[4] = { 0, 0, 0, 0 };
	size_t plen = strlen(param);
	uint8_t plen_be[4] = { (uint8_t)(plen >> 24), (uint8_t)(plen >> 16), (uint8_t)(plen >> 8), (uint8_t)plen };

	begin_op(s, SERVER_QUERY, 1, done, arg);
	s->fetching = true;
	const struct proto_part parse[] = { { stmt, strlen(stmt) + 1 }, { sql ? sql : "", sql ? strlen(sql) + 1 : 1 },
					    { zero16, 2 } };
	const struct proto_part bind[] = { { "", 1 }, { stmt, strlen(stmt) + 1 }, { zero16, 2 }, { one16, 2 },
					   { plen_be, 4 }, { param, plen }, { zero16, 2 } };
	const struct proto_part exec[] = { { "", 1 }, { zero32, 4 } };
	if ((sql && proto_put_parts(&s->wbuf, 'P', 0, parse, 3) < 0) || proto_put_parts(&s->wbuf, 'B', 0, bind, 7) < 0 ||
	    proto_put_parts(&s->wbuf, 'E', 0, exec, 2) < 0 || proto_put_parts(&s->wbuf, 'S', 0, NULL, 0) < 0) {
		fail(s, "query of tusk's own too large");
		return;
	}
	run_op(s, timeout);
}

void server_fetch_row(struct server *s, const char *sql, const char *param, double timeout, server_done_fn done,
		      void *arg)
{
	/* No parameter types: the server infers $1. The user name travels as a parameter. */
	fetch_row(s, "", sql, param, timeout, done, arg);
}

/* One row, one text column: '' when the session holds nothing of its own, else what it
 * holds. Every name is schema-qualified; the transaction-level locks and cursors of the
 * client's transaction are gone by now, so whatever pg_locks and pg_cursors show outlives
 * it. role and session_authorization are compared with the login's ($1), since RESET ALL
 * leaves both alone. Settings are not asked about (pg_settings costs ~10 times the rest):
 * the caller resets them with RESET ALL when nothing else is found. */
static const char check_state_sql[] =
	"SELECT pg_catalog.concat_ws(', ', "
	"CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_locks WHERE pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid() "
	"AND locktype OPERATOR(pg_catalog.=) 'advisory') THEN 'advisory lock' END, "
	"CASE WHEN pg_catalog.pg_my_temp_schema() OPERATOR(pg_catalog.<>) 0 AND ("
	"EXISTS (SELECT FROM pg_catalog.pg_class WHERE relnamespace OPERATOR(pg_catalog.=) pg_catalog.pg_my_temp_schema()) OR "
	"EXISTS (SELECT FROM pg_catalog.pg_proc WHERE pronamespace OPERATOR(pg_catalog.=) pg_catalog.pg_my_temp_schema()) OR "
	"EXISTS (SELECT FROM pg_catalog.pg_type WHERE typnamespace OPERATOR(pg_catalog.=) pg_catalog.pg_my_temp_schema())) "
	"THEN 'temporary object' END, "
	"CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_prepared_statements WHERE from_sql OR NOT "
	"(name OPERATOR(pg_catalog.~) '^tusk_[0-9a-f]{32}$' OR name OPERATOR(pg_catalog.=) '" SERVER_CHECK_STMT "')) "
	"THEN 'prepared statement' END, "
	"CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_cursors WHERE is_holdable) THEN 'cursor WITH HOLD' END, "
	"CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_listening_channels()) THEN 'LISTEN' END, "
	"CASE WHEN pg_catalog.current_setting('role') OPERATOR(pg_catalog.<>) 'none' OR "
	"pg_catalog.current_setting('session_authorization') OPERATOR(pg_catalog.<>) $1 THEN 'role' END)";

void server_check_state(struct server *s, double timeout, server_done_fn done, void *arg)
{
	/* Planning it costs more than running it: prepared once per server. Whether it still is
	 * is known only from a successful answer (server_checked_state); a failed Bind or a
	 * Parse of a name that exists fails the check, and the caller's DISCARD ALL clears both. */
	bool prepared = s->check_prepared;
	s->check_prepared = false;
	fetch_row(s, SERVER_CHECK_STMT, prepared ? NULL : check_state_sql, s->login_user, timeout, done, arg);
}

int server_checked_state(struct server *s, char *what, size_t cap)
{
	const uint8_t *row = s->row;
	size_t len = s->rowlen;

	if (cap == 0 || !row || s->nrows != 1)
		return -1;
	what[0] = '\0';
	struct proto_reader r;
	proto_reader_init(&r, row, len);
	uint16_t ncols = proto_get_u16(&r);
	int32_t clen = (int32_t)proto_get_u32(&r);
	if (r.err || ncols != 1 || clen < 0 || (size_t)clen != proto_remaining(&r))
		return -1;
	s->check_prepared = true;
	if (clen == 0)
		return 0;
	size_t n = (size_t)clen < cap - 1 ? (size_t)clen : cap - 1;
	memcpy(what, proto_reader_pos(&r), n);
	what[n] = '\0';
	return 1;
}

const uint8_t *server_fetched_row(const struct server *s, size_t *len, int *nrows)
{
	*len = s->rowlen;
	*nrows = s->nrows;
	return s->row;
}

void server_drain(struct server *s, int nrfq, double timeout, server_done_fn done, void *arg)
{
	begin_op(s, SERVER_DRAINING, nrfq, done, arg);
	run_op(s, timeout);
}

static void on_orphan_done(struct server *s, void *arg, int err, const char *reason, const uint8_t *errmsg,
			   size_t errlen)
{
	(void)arg;
	(void)reason;
	(void)errmsg;
	(void)errlen;
	if (err < 0) {
		if (s->ok_after_error)
			server_close(s, "orphaned server's query failed");
		return; /* else closed by finish() */
	}
	if (s->tx_status != 'I') {
		server_close(s, "orphaned server not idle");
		return;
	}
	s->idle_since = ev_now(s->worker->loop);
	pool_put_idle(s->pool, s);
}

static void server_parked_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct server *s = io->data;
	(void)loop;
	(void)revents;
	TUSK_PROBE3(health, s->id, s->ctx, 0);
	/* Nothing is owed by an idle server: EOF, a FATAL before close, or noise all mean it
	 * must not be handed out. */
	server_close(s, "closed by the server while idle");
}

void server_park(struct server *s)
{
	if (ev_is_active(&s->timer) || ev_is_pending(&s->timer)) /* cheaper than the call, per release */
		ev_timer_stop(s->worker->loop, &s->timer);
	set_state(s, SERVER_IDLE);
	s->owner = NULL;
	ev_set_cb(&s->io, server_parked_cb);
	s->io.data = s;
	/* Not evio_watch: an event pending from the server's last owner is not carried into the
	 * parked callback, which closes the server on any event. */
	if (!ev_is_active(&s->io) || (s->io.events & (EV_READ | EV_WRITE)) != EV_READ) {
		ev_io_stop(s->worker->loop, &s->io);
		ev_io_set(&s->io, s->fd, EV_READ);
		ev_io_start(s->worker->loop, &s->io);
	}
}

void server_unpark(struct server *s)
{
	ev_set_cb(&s->io, server_io_cb);
	s->io.data = s;
}

void server_orphan(struct server *s)
{
	s->done = on_orphan_done;
	s->done_arg = NULL;
}

void server_attach(struct server *s, struct worker *w)
{
	server_detach(s);
	link_worker(s, w);
	ev_init(&s->io, server_io_cb);
	s->io.data = s;
	ev_io_set(&s->io, s->fd, EV_READ);
	ev_init(&s->timer, server_timer_cb);
	s->timer.data = s;
}

void server_detach(struct server *s)
{
	if (s->worker)
		s->last_worker = s->worker->index;
	unlink_worker(s);
}
