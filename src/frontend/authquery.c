/* auth_query (see authquery.h). Each worker keeps at most one auth_query connection per
 * (rule, database), logged in as auth_user with its auth_file secret (to auth_dbname when
 * set, else to that database): requests for that
 * key queue on it and run one after another with the extended protocol, the user name
 * bound as $1. A connection exists only while it has work: opened on the first request,
 * closed when its queue is empty, so no idle connection needs watching, a change of
 * auth_user's password or pg_hba takes effect at the next miss, and misses are rare
 * anyway behind the cache.
 *
 * Why not the pool of (database, auth_user): pooled servers log in with the rule's
 * server_user/server_password and are handed to clients, and a pool at its size would
 * make logins wait behind client traffic; these connections serve tusk alone. Why per
 * worker: the client waits on its own loop, so the connection lives there too, with no
 * cross-thread hand-over; a flood of misses costs at most one connection per worker and
 * database, and every answer (also "no such user") lands in the shared cache. */
#include "frontend/authquery.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "auth/userlist.h"
#include "frontend/client_int.h"
#include "pool/server.h"
#include "proto/proto.h"
#include "pool/services.h"
#include "runtime/runtime.h"
#include "util/log.h"
#include "worker/worker.h"

struct authq_req {
	struct authq_req *next;
	authquery_done_fn *done; /* NULL: the asker left; a running query still fills the cache */
	void *arg;
	char user[CONFIG_NAME_MAX];
};

/* One per (rule, database) with work, on the worker's list; it always has a server
 * connecting or running a query, and is freed when its queue runs empty. */
struct authq_conn {
	struct authq_conn *next;
	struct worker *w;
	const struct config_pool_rule *rule;
	char database[CONFIG_NAME_MAX]; /* the clients' database: part of the cache key */
	struct server *s;               /* NULL once closed */
	struct authq_req *head, *tail;  /* head runs (or waits for the login) */
};

static double cache_ttl(const struct worker *w)
{
	return (double)w->rt->cfg->auth_cache_ttl_ms / 1000.0;
}

static enum authcache_result cache_get(struct worker *w, const struct config_pool_rule *rule, const char *database,
				       const char *user, char out[AUTHCACHE_SECRET_MAX])
{
	if (w->rt->cfg->auth_cache_ttl_ms == 0)
		return AUTHCACHE_MISS;
	return authcache_get(w->rt->authcache, rule->service_name, database, user, ev_now(w->loop), out);
}

static void unlink_conn(struct authq_conn *q)
{
	struct authq_conn **pp = &fe_of(q->w)->authq;
	while (*pp && *pp != q)
		pp = &(*pp)->next;
	if (*pp)
		*pp = q->next;
}

static struct authq_req *pop(struct authq_conn *q)
{
	struct authq_req *r = q->head;
	if (r) {
		q->head = r->next;
		if (!q->head)
			q->tail = NULL;
	}
	return r;
}

/* Hand the answer to the request's asker (if still there). The request is freed first:
 * the asker may be torn down inside the call. */
static void deliver(struct authq_req *r, int result, const char *secret)
{
	authquery_done_fn *done = r->done;
	void *arg = r->arg;
	free(r);
	if (done)
		done(arg, result, secret);
}

/* The connection is gone: every request fails, then the conn is freed. */
static void fail_all(struct authq_conn *q)
{
	struct authq_req *r;
	unlink_conn(q);
	while ((r = pop(q)) != NULL)
		deliver(r, -EIO, NULL);
	free(q);
}

static void on_row(struct server *s, void *arg, int err, const char *reason, const uint8_t *errmsg, size_t errlen);

/* Run the head request, answering from the cache the ones another request already
 * fetched; close and free the conn when nothing is left. */
static void run_next(struct authq_conn *q)
{
	char secret[AUTHCACHE_SECRET_MAX];

	for (;;) {
		struct authq_req *r = q->head;
		if (!r) {
			OPENSSL_cleanse(secret, sizeof secret);
			unlink_conn(q);
			server_close(q->s, "auth_query connection no longer needed");
			free(q);
			return;
		}
		if (!r->done) {
			free(pop(q));
			continue;
		}
		enum authcache_result hit = cache_get(q->w, q->rule, q->database, r->user, secret);
		if (hit != AUTHCACHE_MISS) {
			deliver(pop(q), hit == AUTHCACHE_SECRET ? AUTHQ_SECRET : AUTHQ_NO_USER, secret);
			continue;
		}
		const struct tusk_config *cfg = q->w->rt->cfg;
		server_fetch_row(q->s, config_auth_query(cfg, q->rule), r->user,
				 (double)cfg->server_connect_timeout_ms / 1000.0, on_row, q);
		OPENSSL_cleanse(secret, sizeof secret);
		return; /* q may already be gone if the query failed at once */
	}
}

static void log_failure(struct server *s, const char *what, const char *reason, const uint8_t *errmsg,
			size_t errlen)
{
	struct proto_error_fields f = { 0 };
	if (errmsg && errlen > PROTO_HDR_LEN)
		(void)proto_parse_error(errmsg + PROTO_HDR_LEN, errlen - PROTO_HDR_LEN, &f);
	log_warn(s->id, s->ctx, "%s: %s%s%s%s%s", what, reason, f.sqlstate ? ": " : "", f.sqlstate ? f.sqlstate : "",
		 f.message ? " " : "", f.message ? f.message : "");
}

static void on_login(struct server *s, void *arg, int err, const char *reason, const uint8_t *errmsg, size_t errlen)
{
	struct authq_conn *q = arg;

	if (err < 0) {
		log_failure(s, "auth_query connection failed", reason, errmsg, errlen);
		q->s = NULL; /* closed by the connector when this returns */
		fail_all(q);
		return;
	}
	run_next(q);
}

/* The query's answer as a secret: 1 with secret set, 0 for "no such user", -EBADMSG for
 * an answer that is not two text columns or a secret too long for the cache. */
static int parse_row(const uint8_t *row, size_t len, int nrows, char secret[AUTHCACHE_SECRET_MAX])
{
	if (nrows == 0)
		return 0;
	struct proto_reader rd;
	proto_reader_init(&rd, row, len);
	uint16_t ncols = proto_get_u16(&rd);
	if (rd.err || ncols < 2)
		return -EBADMSG;
	uint32_t l0 = proto_get_u32(&rd); /* the user name column: skipped */
	if (l0 != 0xffffffffu)
		(void)proto_get_bytes(&rd, l0);
	uint32_t l1 = proto_get_u32(&rd);
	if (rd.err)
		return -EBADMSG;
	if (l1 == 0xffffffffu)
		return 0; /* a role without a password cannot log in with one */
	const uint8_t *p = proto_get_bytes(&rd, l1);
	if (rd.err || !p || l1 >= AUTHCACHE_SECRET_MAX || memchr(p, 0, l1))
		return -EBADMSG;
	memcpy(secret, p, l1);
	secret[l1] = '\0';
	return l1 > 0 ? 1 : 0;
}

static void on_row(struct server *s, void *arg, int err, const char *reason, const uint8_t *errmsg, size_t errlen)
{
	struct authq_conn *q = arg;
	struct authq_req *r = pop(q);
	char secret[AUTHCACHE_SECRET_MAX];

	if (err < 0) {
		log_failure(s, "auth_query failed", reason, errmsg, errlen);
		if (!s->ok_after_error) {
			q->s = NULL; /* closed by the connector when this returns */
			deliver(r, -EIO, NULL);
			fail_all(q);
			return;
		}
		deliver(r, -EIO, NULL);
		run_next(q);
		return;
	}
	size_t len;
	int nrows;
	const uint8_t *row = server_fetched_row(s, &len, &nrows);
	int found = parse_row(row, len, nrows, secret);
	if (found < 0) {
		log_warn(s->id, s->ctx, "auth_query must return one row of (user, password) with a password under %d bytes",
			 AUTHCACHE_SECRET_MAX);
		deliver(r, -EIO, NULL);
	} else {
		struct worker *w = q->w;
		if (w->rt->cfg->auth_cache_ttl_ms > 0 &&
		    authcache_put(w->rt->authcache, q->rule->service_name, q->database, r->user, found ? secret : NULL,
				  ev_now(w->loop) + cache_ttl(w)) < 0)
			log_warn(s->id, s->ctx, "auth_query answer for \"%s\" not cached", r->user);
		log_debug(s->id, s->ctx, "auth_query: user \"%s\" %s", r->user, found ? "found" : "not found");
		deliver(r, found ? AUTHQ_SECRET : AUTHQ_NO_USER, found ? secret : NULL);
	}
	OPENSSL_cleanse(secret, sizeof secret);
	run_next(q);
}

/* auth_user's own secret from auth_file, as server credentials (none: trust). */
static void auth_user_cred(const struct runtime *rt, const char *user, struct server_cred *cred)
{
	const struct userlist_entry *e = rt->users ? userlist_find(rt->users, user) : NULL;
	memset(cred, 0, sizeof *cred);
	if (!e || strlen(e->secret) >= sizeof cred->secret)
		return;
	if (e->kind == USERLIST_PLAIN)
		cred->kind = SERVER_CRED_PLAIN;
	else if (e->kind == USERLIST_MD5)
		cred->kind = SERVER_CRED_MD5;
	else
		return; /* a SCRAM verifier cannot log in (no ClientKey); the server will say so */
	memcpy(cred->secret, e->secret, strlen(e->secret) + 1);
}

static struct authq_conn *open_conn(struct worker *w, const struct config_pool_rule *rule, const char *database)
{
	struct runtime *rt = w->rt;
	struct authq_conn *q = calloc(1, sizeof *q);
	struct server_cred cred;

	struct net_addr addr;
	if (!q)
		return NULL;
	if (services_addr(rt->services, rule->service, &addr) < 0) {
		/* No backend known yet (the service's first DNS answer is still out). */
		free(q);
		return NULL;
	}
	q->w = w;
	q->rule = rule;
	snprintf(q->database, sizeof q->database, "%s", database);
	auth_user_cred(rt, config_auth_user(rt->cfg, rule), &cred);
	const char *auth_db = config_auth_dbname(rt->cfg, rule);
	struct server_login login = {
		.service = rule->service,
		.addr = &addr,
		.user = config_auth_user(rt->cfg, rule),
		.database = auth_db ? auth_db : rule->server_database ? rule->server_database : database,
		.cred = &cred,
	};
	q->s = server_connect_login(w, &login, on_login, q);
	OPENSSL_cleanse(&cred, sizeof cred);
	if (!q->s) {
		free(q);
		return NULL;
	}
	q->next = fe_of(w)->authq;
	fe_of(w)->authq = q;
	return q;
}

int authquery_fetch(struct worker *w, const struct config_pool_rule *rule, const char *database, const char *user,
		    char out[AUTHCACHE_SECRET_MAX], authquery_done_fn *done, void *arg, struct authq_req **req)
{
	struct authq_conn *q;

	switch (cache_get(w, rule, database, user, out)) {
	case AUTHCACHE_SECRET:
		return AUTHQ_SECRET;
	case AUTHCACHE_NO_USER:
		return AUTHQ_NO_USER;
	case AUTHCACHE_MISS:
		break;
	}
	struct authq_req *r = calloc(1, sizeof *r);
	if (!r)
		return -ENOMEM;
	r->done = done;
	r->arg = arg;
	snprintf(r->user, sizeof r->user, "%s", user);
	for (q = fe_of(w)->authq; q; q = q->next)
		if (q->rule == rule && strcmp(q->database, database) == 0)
			break;
	/* A conn always has work in flight, so appending never runs anything now. */
	if (!q && !(q = open_conn(w, rule, database))) {
		free(r);
		return -ENOMEM;
	}
	if (q->tail)
		q->tail->next = r;
	else
		q->head = r;
	q->tail = r;
	*req = r;
	return AUTHQ_PENDING;
}

void authquery_cancel(struct authq_req *req)
{
	/* It stays queued, marked: run_next drops it, or on_row caches its answer for
	 * whoever asks next. Either frees it. */
	req->done = NULL;
}

void authquery_close_all(struct worker *w)
{
	struct frontend_worker *fe = fe_of(w);
	while (fe->authq) {
		struct authq_conn *q = fe->authq;
		struct authq_req *r;
		fe->authq = q->next;
		while ((r = pop(q)) != NULL)
			deliver(r, -ECANCELED, NULL);
		if (q->s)
			server_close(q->s, "tusk is shutting down");
		free(q);
	}
}
