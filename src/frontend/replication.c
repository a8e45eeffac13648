/* Replication connections: the session kind of a client whose startup packet asks for
 * replication (replication.h; docs/pooling.md, "Replication connections").
 *
 * Its startup is the pooled kind's (the pool rule of its database and user, the rule's
 * authentication; hba_file matches a physical one by the keyword "replication"). Then it gets
 * a server connection of its own, never pooled: opened for it on its worker with the pool
 * rule's login and the client's own startup parameters ("replication" among them), closed with
 * it. It goes to the service's primary (a standby for a rule whose target_session_attrs is
 * standby, read-only or prefer-standby: cascading replication), found by trying the backends
 * one after the other (services_candidate: known role first, down ones late) and reading
 * in_hot_standby at each login, so that a standby's walreceiver reconnecting after a failover
 * reaches the promoted one; each login tells the services what it found. The client is greeted
 * with the server's parameters and tusk's cancel key, and from then on the bytes pass both
 * ways without being read: the client's straight from its read buffer to the server's socket,
 * the server's straight into the client's write buffer. The server's messages are framed as
 * they pass, so that an error of tusk's own (a drain's 57P01) follows a whole message or none
 * is sent. Each side's buffer full stops reading the other: bounded, and the slower side sets
 * the pace. A client that is resident never moves between workers, as its server does not. */
#include "frontend/replication.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "frontend/client_int.h"
#include "frontend/client_kind.h"
#include "net/evio.h"
#include "net/tls.h"
#include "pool/pool.h"
#include "pool/server.h"
#include "pool/services.h"
#include "proto/proto.h"
#include "runtime/runtime.h"
#include "stats/stats.h"
#include "util/buf.h"
#include "util/log.h"
#include "worker/worker.h"

#define REPL_TRIES 8 /* backends tried at most, one after the other, for one replication connection */

struct repl_link {
	enum repl_mode mode;
	int tries;
	struct server *s;         /* connecting, then the client's own */
	int nparams;
	struct proto_param params[SERVER_LOGIN_EXTRA_MAX];
	char *strings;            /* the params' names and values, in one allocation */
	struct tp_backend_addr be; /* the backend s is on */
	struct tp_backend_addr tried[REPL_TRIES]; /* the backends tried before it, for this login */
	/* The server's message being passed on: its header's bytes so far (hdr_got < 5) and
	 * then the bytes of its body still to come. */
	uint8_t hdr[PROTO_HDR_LEN];
	uint8_t hdr_got;
	uint32_t body_left;
};

int repl_mode_of(const char *value)
{
	size_t n = strlen(value);
	if (strcmp(value, "database") == 0)
		return REPL_LOGICAL;
	if (n == 0)
		return -1;
	/* PostgreSQL's parse_bool: a unique prefix of true, false, yes, no; on, off (two letters
	 * at least); 1, 0. */
	if (strncasecmp(value, "true", n) == 0 && n <= 4)
		return REPL_PHYSICAL;
	if (strncasecmp(value, "false", n) == 0 && n <= 5)
		return REPL_NONE;
	if (strncasecmp(value, "yes", n) == 0 && n <= 3)
		return REPL_PHYSICAL;
	if (strncasecmp(value, "no", n) == 0 && n <= 2)
		return REPL_NONE;
	if (n >= 2 && strncasecmp(value, "on", n) == 0 && n <= 2)
		return REPL_PHYSICAL;
	if (n >= 2 && strncasecmp(value, "off", n) == 0 && n <= 3)
		return REPL_NONE;
	if (strcmp(value, "1") == 0)
		return REPL_PHYSICAL;
	if (strcmp(value, "0") == 0)
		return REPL_NONE;
	return -1;
}

/* A startup parameter the server connection's packet carries as the client sent it (tusk
 * writes user and database itself; protocol options were answered with 3.0). */
static bool passed_on(const char *name)
{
	return strcmp(name, "user") != 0 && strcmp(name, "database") != 0 && strncmp(name, "_pq_.", 5) != 0;
}

int repl_keep_startup(struct client *c, const struct proto_startup *st, enum repl_mode mode)
{
	size_t need = 0;
	int n = 0;
	for (int i = 0; i < st->nparams; i++) {
		const char *name = st->params[i].name;
		if (!passed_on(name))
			continue;
		need += strlen(name) + strlen(st->params[i].value) + 2;
		n++;
	}
	if (n > SERVER_LOGIN_EXTRA_MAX)
		return -EINVAL; /* with user and database, more than a startup packet of tusk's holds */
	struct repl_link *r = calloc(1, sizeof *r);
	char *p = r ? malloc(need ? need : 1) : NULL;
	if (!p) {
		free(r);
		return -ENOMEM;
	}
	r->strings = p;
	r->mode = mode;
	for (int i = 0; i < st->nparams; i++) {
		const char *name = st->params[i].name, *value = st->params[i].value;
		if (!passed_on(name))
			continue;
		size_t nl = strlen(name) + 1, vl = strlen(value) + 1;
		memcpy(p, name, nl);
		r->params[r->nparams].name = p;
		p += nl;
		memcpy(p, value, vl);
		r->params[r->nparams].value = p;
		p += vl;
		r->nparams++;
	}
	free(c->repl ? c->repl->strings : NULL); /* a second "replication" in one packet: the last counts */
	free(c->repl);
	c->repl = r;
	return 0;
}

bool repl_is_physical(const struct client *c)
{
	return c->repl && c->repl->mode == REPL_PHYSICAL;
}

const char *repl_mode_name(const struct client *c)
{
	return !c->repl ? "none" : c->repl->mode == REPL_PHYSICAL ? "physical" : "logical";
}

const struct server *repl_server(const struct client *c)
{
	return c->repl ? c->repl->s : NULL;
}

void repl_free(struct client *c)
{
	struct repl_link *r = c->repl;
	if (!r)
		return;
	if (r->s) /* a failure before the kind's closed ran (free_client after a failed startup) */
		server_close(r->s, "its replication client is gone");
	free(r->strings);
	free(r);
	c->repl = NULL;
}

/* ---- startup ---- */

static void repl_startup(struct client *c)
{
	const struct config_pool_rule *rule = client_take_rule(c);
	if (!rule)
		return;
	if (client_auth_begin(c, rule->client_auth, pool_rule(c->pool), c->database))
		client_after_auth(c);
}

static void repl_connect(struct client *c);

/* The server watcher: read while the client's write buffer has room, write while the client
 * sent bytes the server has not taken. */
static void watch_server(struct client *c)
{
	struct server *s = c->repl->s;
	if (buf_room(&c->wbuf) == 0)
		buf_compact(&c->wbuf);
	bool rd = buf_room(&c->wbuf) > 0, wr = !buf_empty(&c->rbuf);
	evio_watch(s->worker->loop, &s->io, s->fd, tls_link_events(&s->tls, rd, wr));
	if (rd && s->tls.buffered)
		ev_feed_event(s->worker->loop, &s->io, EV_READ);
}

/* The server is gone or failed: its last words (an ErrorResponse) go out to the client, then
 * the client is closed; mid-message, it is closed at once. */
static void server_gone(struct client *c, const char *reason)
{
	struct server *s = c->repl->s;
	c->repl->s = NULL;
	server_close(s, reason);
	log_info(c->id, c->ctx, "replication connection ends: %s", reason);
	if (c->s2c_remaining || buf_empty(&c->wbuf)) {
		client_close(c, reason);
		return;
	}
	client_set_state(c, CLIENT_CLOSING);
	client_flush(c);
}

/* Framing of the server's bytes just put at the tail of the client's write buffer: where each
 * message ends. -1 on a length no message has. */
static int frame(struct client *c, const uint8_t *p, size_t n)
{
	struct repl_link *r = c->repl;
	while (n > 0) {
		if (r->body_left > 0) {
			size_t k = n < r->body_left ? n : r->body_left;
			r->body_left -= (uint32_t)k;
			p += k;
			n -= k;
			continue;
		}
		r->hdr[r->hdr_got++] = *p++;
		n--;
		if (r->hdr_got < PROTO_HDR_LEN)
			continue;
		uint32_t len = (uint32_t)r->hdr[1] << 24 | (uint32_t)r->hdr[2] << 16 | (uint32_t)r->hdr[3] << 8 | r->hdr[4];
		if (len < 4 || len > 0x7fffffff)
			return -1;
		r->hdr_got = 0;
		r->body_left = len - 4;
	}
	/* what client_fail reads: a message of the server's half passed on */
	c->s2c_remaining = r->body_left ? r->body_left : r->hdr_got;
	return 0;
}

/* Pass on what the client sent, as far as the server takes it. 0, or -1: the server failed. */
static int to_server(struct client *c)
{
	struct server *s = c->repl->s;
	while (!buf_empty(&c->rbuf)) {
		ssize_t n = tls_link_write(s->fd, &s->tls, buf_head(&c->rbuf), buf_len(&c->rbuf));
		if (n > 0) {
			buf_consume(&c->rbuf, (size_t)n);
			if (c->pool)
				stats_add_received(pool_stats(c->pool), (uint64_t)n);
			continue;
		}
		return n == -EAGAIN ? 0 : -1;
	}
	return 0;
}

/* Read what the server sent into the client's write buffer, as far as it has room. 0, or -1
 * when the server is gone (c is then closing or closed). */
static int from_server(struct client *c)
{
	struct server *s = c->repl->s;
	for (;;) {
		if (buf_room(&c->wbuf) == 0)
			buf_compact(&c->wbuf);
		if (buf_room(&c->wbuf) == 0)
			return 0;
		uint8_t *at = buf_tail(&c->wbuf);
		ssize_t n = tls_link_read(s->fd, &s->tls, at, buf_room(&c->wbuf));
		if (n == -EAGAIN)
			return 0;
		if (n == 0) {
			server_gone(c, "the server closed the connection");
			return -1;
		}
		if (n < 0) {
			server_gone(c, "read from the server failed");
			return -1;
		}
		if (frame(c, at, (size_t)n) < 0) {
			c->s2c_remaining = 1; /* nothing of tusk's after these bytes */
			server_gone(c, "the server sent a message of an impossible length");
			return -1;
		}
		buf_produce(&c->wbuf, (size_t)n);
	}
}

static void server_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct client *c = io->data;
	struct server *s = c->repl->s;
	(void)loop;

	if (c->state != CLIENT_IDLE) { /* closing: the server goes now */
		c->repl->s = NULL;
		server_close(s, "its replication client is closing");
		return;
	}
	if (tls_link_crossed(&s->tls))
		revents |= EV_READ | EV_WRITE;
	if ((revents & EV_WRITE) && to_server(c) < 0) {
		server_gone(c, "write to the server failed");
		return;
	}
	if ((revents & EV_READ) && from_server(c) < 0)
		return;
	if (client_write_wbuf(c) < 0) {
		client_close(c, "write to client failed");
		return;
	}
	watch_server(c);
	client_update_io(c);
}

/* CLIENT_IDLE: the client sent bytes (in rbuf). */
static void repl_input(struct client *c)
{
	if (!c->repl->s) {
		client_update_io(c);
		return;
	}
	if (to_server(c) < 0) {
		server_gone(c, "write to the server failed");
		return;
	}
	watch_server(c);
	client_update_io(c);
}

/* CLIENT_IDLE: the client's write buffer went out; the server may be read again. */
static bool repl_writable(struct client *c)
{
	if (c->repl->s)
		watch_server(c);
	client_update_io(c);
	return false;
}

/* The greeting, as for a pooled client (client_put_greeting); then the bytes pass. */
static void greet(struct client *c, struct server *s)
{
	if (client_put_greeting(c, s) < 0)
		return;
	c->greeted = true;
	c->login_at = ev_now(c->worker->loop);
	if (c->worker->rt->cfg->log_connections)
		log_info(c->id, c->ctx, "login: %s replication connection, server %s", repl_mode_name(c), s->id);
	struct ev_loop *loop = c->worker->loop;
	ev_io_stop(loop, &s->io);
	ev_set_cb(&s->io, server_cb);
	s->io.data = c;
	server_set_state(s, SERVER_ACTIVE);
	s->owner = c;
	client_set_state(c, CLIENT_IDLE);
	/* The server's bytes after its ReadyForQuery (none: the client asked nothing yet) and
	 * what the client sent before its greeting. */
	if (!buf_empty(&s->rbuf)) {
		if (buf_append(&c->wbuf, buf_head(&s->rbuf), buf_len(&s->rbuf)) < 0 ||
		    frame(c, buf_head(&s->rbuf), buf_len(&s->rbuf)) < 0) {
			client_fail(c, "08P01", "the server sent more than expected at login");
			return;
		}
		buf_consume(&s->rbuf, buf_len(&s->rbuf));
	}
	repl_input(c);
}

/* Which servers the rule's target takes: a standby for standby and read-only (cascading
 * replication), either for prefer-standby, else the primary. */
static bool want_standby(const struct client *c)
{
	int t = pool_rule(c->pool)->target_session_attrs;
	return t == CONFIG_TARGET_STANDBY || t == CONFIG_TARGET_READ_ONLY || t == CONFIG_TARGET_PREFER_STANDBY;
}

static bool takes(const struct client *c, bool standby)
{
	int t = pool_rule(c->pool)->target_session_attrs;
	return t == CONFIG_TARGET_PREFER_STANDBY || standby == want_standby(c);
}

/* The backend to try next (the one just tried among those tried): 0, or -EHOSTUNREACH. */
static int candidate(struct client *c, int ntried, struct net_addr *addr, struct tp_backend_addr *be)
{
	if (ntried >= REPL_TRIES)
		return -EHOSTUNREACH;
	return services_candidate(c->worker->rt->services, pool_rule(c->pool)->service, want_standby(c),
				  c->repl->tried, ntried, addr, be);
}

/* Whether another backend is left after the one just tried (recorded by on_login). */
static bool has_next(struct client *c)
{
	struct net_addr addr;
	struct tp_backend_addr be;
	return candidate(c, c->repl->tries + 1, &addr, &be) == 0;
}

/* The next backend, after one that failed or is of the wrong role (why, for the client if it
 * was the last). */
static void try_next(struct client *c, const char *why)
{
	struct repl_link *r = c->repl;
	if (!has_next(c)) {
		client_fail(c, "08006", "no server took the replication connection (%d tried; the last: %s)", r->tries + 1,
			    why);
		return;
	}
	r->tries++;
	repl_connect(c);
}

static void on_login(struct server *s, void *arg, int err, const char *reason, const uint8_t *errmsg, size_t errlen)
{
	struct client *c = arg;
	struct repl_link *r = c->repl;
	struct services *svcs = c->worker->rt->services;
	const struct config_service *svc = pool_rule(c->pool)->service;

	r->tried[r->tries] = r->be; /* tries < REPL_TRIES: candidate's bound */
	if (c->state != CLIENT_WAITING) { /* failed meanwhile (KILL_CLIENT): closing */
		r->s = NULL;
		if (err == 0)
			server_close(s, "its replication client is closing");
		return;
	}
	if (err < 0) { /* s is closed by the connector */
		r->s = NULL;
		bool refused = errmsg && errlen > PROTO_HDR_LEN && errmsg[0] == 'E';
		/* Not reached, no answer, or the backend cannot take sessions now (08, 53, 57: a
		 * failover, a restart, max_wal_senders): the next, if there is one. */
		if (server_error_backoff_worthy(errmsg, errlen) && (!refused || has_next(c))) {
			if (!refused)
				services_note_down(svcs, svc, &r->be);
			log_info(c->id, c->ctx, "replication connection to %s:%u failed: %s", r->be.name, r->be.port,
				 reason ? reason : "");
			try_next(c, reason ? reason : "connect failed");
			return;
		}
		/* PostgreSQL's own refusal (no REPLICATION attribute, its pg_hba.conf), as the
		 * client would have had it directly. */
		log_info(c->id, c->ctx, "replication login refused by the server: %s", reason ? reason : "");
		if (refused && buf_append(&c->wbuf, errmsg, errlen) == 0) {
			client_count_error(c, errmsg, errlen);
			client_set_state(c, CLIENT_CLOSING);
			client_flush(c);
			return;
		}
		client_fail(c, "08006", "server connection failed: %s", reason ? reason : "unknown error");
		return;
	}
	services_note_up(svcs, svc, &r->be);
	const char *hs = server_param(s, "in_hot_standby");
	if (hs) { /* PostgreSQL 14 and later say; older ones are taken as they come */
		bool standby = strcmp(hs, "on") == 0;
		services_note_role(svcs, svc, &r->be, standby ? SERVICES_ROLE_STANDBY : SERVICES_ROLE_PRIMARY);
		if (!takes(c, standby)) {
			r->s = NULL;
			server_close(s, standby ? "a replication connection for the primary reached a standby"
						: "a replication connection for a standby reached the primary");
			try_next(c, standby ? "a standby, not the primary" : "the primary, not a standby");
			return;
		}
	}
	greet(c, s);
}

static void repl_connect(struct client *c)
{
	struct repl_link *r = c->repl;
	const struct config_pool_rule *rule = pool_rule(c->pool);
	struct net_addr addr;

	if (candidate(c, r->tries, &addr, &r->be) < 0) {
		client_fail(c, "08006", "no backend known for the service of database \"%s\" yet", c->database);
		return;
	}
	struct server_login login = {
		.service = rule->service,
		.addr = &addr,
		.user = rule->server_user ? rule->server_user : pool_user(c->pool),
		.database = rule->server_database ? rule->server_database : pool_database(c->pool),
		.cred = c->cred,
		.password = rule->server_password,
		.extra = r->params,
		.nextra = r->nparams,
	};
	r->s = server_connect_login(c->worker, &login, on_login, c);
	if (!r->s)
		client_fail(c, "53200", "out of memory");
}

/* Authenticated: the cancel key, then the server of its own. The wait is the server's
 * connect and login, under server_connect_timeout. */
static void repl_begin(struct client *c)
{
	if (client_mint_cancel_key(c) < 0)
		return;
	log_debug(c->id, c->ctx, "%s replication connection: opening its server", repl_mode_name(c));
	client_set_state(c, CLIENT_WAITING);
	repl_connect(c);
}

static void repl_closed(struct client *c)
{
	struct repl_link *r = c->repl;
	if (r && r->s) {
		struct server *s = r->s;
		r->s = NULL;
		if (s->state == SERVER_ACTIVE)
			s->owner = NULL;
		server_close(s, "its replication client is gone");
	}
}

/* A CancelRequest with the client's key: for its server, whatever it runs (PostgreSQL
 * ignores one that comes while nothing runs). */
static bool repl_cancel(struct client *c)
{
	struct server *s = c->repl ? c->repl->s : NULL;
	if (s && s->state == SERVER_ACTIVE) {
		log_info(c->id, c->ctx, "client asked to cancel what its replication connection runs on server %s", s->id);
		cancel_send_for(c->worker, s, 0);
	}
	return true;
}

const struct client_kind repl_kind = {
	.name = "replication",
	.startup = repl_startup,
	.begin = repl_begin,
	.input = repl_input,
	.writable = repl_writable,
	.closed = repl_closed,
	.cancel = repl_cancel,
	.resident = true,
};
