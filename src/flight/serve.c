/* The cache's side of a client (serve.h).
 *
 * Order of a cacheable request: decide (libpg_query), build the key, snapshot the versions of
 * its tables, look in L1, else join or lead a flight. The snapshot is taken before the query
 * is sent, and a result is kept only if the versions are unchanged when it is complete (a
 * write that committed meanwhile bumped them): the fill-versus-write race never stores a
 * result older than a write tusk saw commit. Writes bump at send and again at the
 * ReadyForQuery that ends their transaction (or when their client leaves). */
#include "flight/serve.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>

#include <openssl/crypto.h>
#include <xxhash.h>

#include "flight/cache.h"
#include "flight/decide.h"
#include "flight/ext.h"
#include "flight/key.h"
#include "flight/l2.h"
#include "flight/logical.h"
#include "flight/policy.h"
#include "frontend/client_int.h"
#include "frontend/session.h"
#include "pool/pool.h"
#include "pool/prepared.h"
#include "pool/server.h"
#include "proto/proto.h"
#include "pool/services.h"
#include "runtime/runtime.h"
#include "util/log.h"
#include "worker/worker.h"

/* The relay hooks (flight_relay_hooks, at the end) in the order relay.c and client.c call them. */
static bool flight_client_request(struct client *c);
static bool flight_client_session_request(struct client *c, const struct server *s);
static bool flight_client_writable(struct client *c);
static void flight_client_timer(struct client *c);
static bool flight_client_cancel(struct client *c);
static bool flight_client_quiet(const struct client *c);
static void flight_client_closed(struct client *c);
static void flight_client_scanned(struct client *c, const uint8_t *p, size_t n);
static void flight_client_sent_sql(struct client *c, const char *sql, size_t len);
static void flight_client_parsed(struct client *c, const char *name, const uint8_t *rest, size_t rest_len);
static bool flight_client_session_bind(struct client *c, const uint8_t *m, size_t avail, const char **text, size_t *len);
static void flight_client_session_close(struct client *c, const char *name);
static void flight_client_session_error(struct client *c);
static void flight_client_sent_bind(struct client *c, bool unnamed, const char *text, size_t len);
static void flight_client_sent_opaque(struct client *c);
static void flight_client_ready(struct client *c, bool last);
static bool flight_client_commit_wait(struct client *c, bool last);

#define KEY_BUF (FLIGHT_MAX_SQL + 16384) /* on the worker's stack: query plus session settings */
#define MAX_PARAMS 64

struct flight_client {
	struct flight *lead;         /* the flight this client's query in flight leads */
	bool lead_store;             /* keep its result in L1 (cache: on) */
	double lead_ttl;
	struct flight_waiter *wait;  /* the flight this client waits on (its reference) */
	/* An answer larger than the write buffer, being written (its reference), and how much
	 * of it is in the write buffer already: later requests wait behind it. */
	struct flight_result *out;
	size_t out_off;
	bool bypass_once;            /* released waiter: its request runs on its own */
	/* Parked: its request waits for the catalog (function volatility, relation dependencies)
	 * on a short poll timer, rather than run uncached beside the lookup (a cold burst then
	 * runs once); retry: the timer fired and the request is judged again, until park_until. */
	bool parked, retry;
	double park_until;
	/* With L2, a waiter reads the Redis versions itself (l2req) and is served only when they
	 * are its leader's (flight_result.l2sig): a commit another tusk acknowledged after the
	 * leader began moved them. held: the leader's result, come before the versions. */
	bool wait_l2, wait_sig_set;
	uint64_t wait_sig[2];
	struct flight_result *held;
	/* The request led or waited on, when it is an extended-protocol one (ext.h): its bytes
	 * in rbuf, and whether it began with a Parse (its answer then starts with ParseComplete) */
	size_t ext_len;
	bool ext_parse;
	/* L2 (l2.h): the lookup a leader waits on before its query goes to a server; the key
	 * without the process-local rule tag (other tusks judge with their own rules before
	 * they look); the versions the lookup read, which a fill stores */
	struct flight_l2_req *l2req;
	bool l2_checked;             /* looked: the request goes to a server now */
	bool l2_store;               /* the lookup answered: its versions are good to store with */
	uint8_t *l2key;
	size_t l2klen;
	struct flight_l2_versions l2v;
	uint64_t lead_ttl_ms;
	uint64_t l2bump[FLIGHT_L2_MAX_VERSIONS];
	uint16_t l2slot[FLIGHT_L2_MAX_VERSIONS]; /* l2bump[i]'s local slot (its pending INCRs) */
	int nl2bump;
	/* invalidations owed at the end of the transaction */
	uint16_t bump[FLIGHT_MAX_TABLES];
	int nbump;
	bool bump_db;
	bool bump_ddl; /* ... and the catalog may have changed (decide.h, flight_write.ddl) */
	int nheld;     /* bump[0, nheld) are held busy (inval.h) until the bumps at the end */
	bool held_db;
	struct flight_l2_waiter committed; /* the transaction's ReadyForQuery waits on Redis */
	bool rfq_bumped;                   /* ... and its bumps are done (flight_client_ready) */
	/* what the last classified text writes, and the unnamed statement's (Bind runs it again) */
	struct flight_write last, unnamed;
	/* Session pooling: the named statements the client parsed on its own server (tusk's
	 * prepared-statement tracking is for transaction pooling only), so that a Bind of one can
	 * be answered from the cache; and whether the unnamed statement the client last parsed was
	 * answered by the cache, so its server still holds an older one (flight_client_session_bind). */
	struct sess_stmt *stmts; /* SESSION_STMTS of them, allocated at the first named Parse */
	bool unnamed_cached;
};

/* Named statements remembered per session client: more are not remembered, and Binds of
 * them go to the server as usual. */
#define SESSION_STMTS 32

struct sess_stmt {
	char name[PREP_NAME_MAX + 1]; /* "" free */
	struct prep_hash id;          /* prep_identity of the body: the statement, not its name */
	uint8_t *body;                /* the Parse body after the name (query, count, OIDs) */
	size_t body_len;
};

static struct flight_cache *cache_of(const struct client *c)
{
	return c->worker->rt->flight;
}

static struct flight_client *state_of(struct client *c)
{
	if (!c->flight)
		c->flight = calloc(1, sizeof(*c->flight));
	return c->flight;
}

/* The whole length (type byte included) of the message at m[0, avail), read through
 * proto_read_hdr; 0 when fewer than 5 bytes are there or its length word is invalid. */
static size_t msg_total(const uint8_t *m, size_t avail)
{
	struct proto_hdr h;
	return proto_read_hdr(m, avail, UINT32_MAX, &h) == PROTO_HDR_LEN ? (size_t)h.len + 1 : 0;
}

/* The framing an extended-protocol answer starts with: ParseComplete when the client sent a
 * Parse, then BindComplete (request_frame). */
static const uint8_t ext_frame[10] = { '1', 0, 0, 0, 4, '2', 0, 0, 0, 4 };

/* Moves as much of the answer being written as fits into wbuf, then its ReadyForQuery 'I'.
 * True when the answer is all in wbuf (fc->out released). */
static bool fill_out(struct client *c)
{
	struct flight_client *fc = c->flight;
	struct flight_result *r = fc->out;

	buf_compact(&c->wbuf);
	size_t k = r->len - fc->out_off;
	if (k > buf_room(&c->wbuf))
		k = buf_room(&c->wbuf);
	if (k > 0 && buf_append(&c->wbuf, r->bytes + fc->out_off, k) == 0)
		fc->out_off += k;
	if (fc->out_off < r->len || buf_room(&c->wbuf) < 6 || proto_put_ready(&c->wbuf, 'I') < 0)
		return false;
	fc->out = NULL;
	flight_result_put(r);
	return true;
}

/* pre[0, npre) (an extended request's framing), the result and ReadyForQuery 'I' in place of
 * the request of qlen bytes at the head of rbuf; one larger than the room in wbuf is written
 * as the client reads (flight_client_writable). 1 answered, 0 not (no memory or room; nothing
 * done), -1 the client was closed. */
static int serve(struct client *c, struct flight_result *r, size_t qlen, const uint8_t *pre, size_t npre)
{
	buf_compact(&c->wbuf);
	if (buf_room(&c->wbuf) < npre + r->len + 6) {
		struct flight_client *fc = state_of(c);
		if (!fc || buf_room(&c->wbuf) < npre)
			return 0;
		if (npre && buf_append(&c->wbuf, pre, npre) < 0)
			return 0; /* cannot happen: room checked */
		flight_result_get(r);
		fc->out = r;
		fc->out_off = 0;
		(void)fill_out(c);
	} else if ((npre && buf_append(&c->wbuf, pre, npre) < 0) || buf_append(&c->wbuf, r->bytes, r->len) < 0 ||
		   proto_put_ready(&c->wbuf, 'I') < 0) {
		return 0; /* cannot happen: room checked */
	}
	buf_consume(&c->rbuf, qlen);
	for (;;) {
		if (client_write_wbuf(c) < 0) {
			client_close(c, "write to client failed");
			return -1;
		}
		/* The socket took all there was: refill now, or nothing would ask to write. */
		if (!c->flight || !c->flight->out || !buf_empty(&c->wbuf))
			break;
		(void)fill_out(c);
	}
	client_update_io(c);
	return 1;
}

static size_t head_query_len(const struct client *c)
{
	return msg_total(buf_head(&c->rbuf), buf_len(&c->rbuf));
}

/* The bytes of the request c leads or waits on, and how its answer is framed. */
static size_t request_len(const struct client *c)
{
	return c->flight && c->flight->ext_len ? c->flight->ext_len : head_query_len(c);
}

static size_t request_frame(const struct client *c, const uint8_t **pre)
{
	const struct flight_client *fc = c->flight;

	*pre = fc && fc->ext_parse ? ext_frame : ext_frame + 5;
	return !fc || !fc->ext_len ? 0 : fc->ext_parse ? 10 : 5;
}

/* An extended request's statement, parameter types and Bind (ext.h), for the key. */
struct ext_key {
	const struct flight_ext *x;
	uint32_t types[256];
	int ntypes;
	uint8_t stmt_id[16]; /* a named statement's prep_hash */
	bool named;
};

static long build_key(struct client *c, const char *sql, size_t len, const struct ext_key *ek, bool local,
		      uint8_t *out, size_t cap)
{
	const struct config_pool_rule *rule = pool_rule(c->pool);
	struct flight_param params[MAX_PARAMS];
	int n = 0;
	size_t pos = 0;
	const char *name, *value;

	while (session_param_next(&c->session, &pos, &name, &value)) {
		if (n == MAX_PARAMS)
			return -1;
		params[n++] = (struct flight_param){ name, value };
	}
	struct flight_key_input in = {
		.service = rule->service_name,
		.server_user = rule->server_user ? rule->server_user : "",
		.server_db = rule->server_database ? rule->server_database : c->database,
		.database = c->database,
		.user = c->user,
		.role = c->user, /* SET ROLE and SET SESSION AUTHORIZATION pin, and pinned clients bypass */
		/* Generations are kept until exit, so a rule's address names it for good. */
		.policy_tag = local ? (uint64_t)(uintptr_t)rule : 0,
		.params = params,
		.nparams = n,
		/* The carried SETs (search_path, extra_float_digits, ...) verbatim: session.h keeps
		 * them private, but the key must hold exactly what the servers get replayed. */
		.carry = c->session.carry,
		.carry_len = c->session.carry_len,
		.protocol = ek ? FLIGHT_PROTO_EXTENDED : FLIGHT_PROTO_SIMPLE,
		.query = sql,
		.query_len = len,
		/* Parameter types, formats and values, result formats, which Describe, and a named
		 * statement's identity (not its name: two clients' names for one statement share). */
		.bind = ek ? ek->x->bind : NULL,
		.bind_len = ek ? ek->x->bind_len : 0,
		.param_types = ek ? ek->types : NULL,
		.nparam_types = ek ? ek->ntypes : 0,
		.describe = ek ? ek->x->describe : 0,
		.stmt_id = ek && ek->named ? ek->stmt_id : NULL,
		.stmt_id_len = ek && ek->named ? sizeof(ek->stmt_id) : 0,
	};
	return flight_key_build(&in, out, cap);
}

/* Where the pool's servers are and how they log in, as libpq parameters for the catalog
 * connection (volatility.h): the service's current address, the server user, and the
 * pool's password or the client's own plain one (passthrough). An md5 or SCRAM secret
 * cannot be given to libpq: the lookup then fails, and the names bypass. */
static void vol_target(struct client *c, struct flight_vol_target *t)
{
	const struct config_pool_rule *rule = pool_rule(c->pool);
	struct net_addr addr;
	const struct net_addr *a = services_addr(c->worker->rt->services, rule->service, &addr) == 0 ? &addr : NULL;
	static const char *const modes[] = { "disable", "prefer", "require", "verify-ca", "verify-full" };

	memset(t, 0, sizeof(*t));
	if (a && a->sa.ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)&a->sa;
		inet_ntop(AF_INET, &in->sin_addr, t->host, sizeof(t->host));
		snprintf(t->port, sizeof(t->port), "%u", ntohs(in->sin_port));
	} else if (a && a->sa.ss_family == AF_INET6) {
		const struct sockaddr_in6 *in = (const struct sockaddr_in6 *)&a->sa;
		inet_ntop(AF_INET6, &in->sin6_addr, t->host, sizeof(t->host));
		snprintf(t->port, sizeof(t->port), "%u", ntohs(in->sin6_port));
	} else if (a && a->sa.ss_family == AF_UNIX) {
		/* libpq wants the directory and the port of ".../.s.PGSQL.<port>". */
		const struct sockaddr_un *un = (const struct sockaddr_un *)&a->sa;
		const char *base = strrchr(un->sun_path, '/');
		if (base && strncmp(base, "/.s.PGSQL.", 10) == 0) {
			snprintf(t->host, sizeof(t->host), "%.*s", (int)(base - un->sun_path), un->sun_path);
			snprintf(t->port, sizeof(t->port), "%s", base + 10);
		}
	}
	snprintf(t->dbname, sizeof(t->dbname), "%s", rule->server_database ? rule->server_database : c->database);
	snprintf(t->user, sizeof(t->user), "%s", rule->server_user ? rule->server_user : pool_user(c->pool));
	if (rule->server_password)
		snprintf(t->password, sizeof(t->password), "%s", rule->server_password);
	else if (c->cred && c->cred->kind == SERVER_CRED_PLAIN)
		snprintf(t->password, sizeof(t->password), "%s", c->cred->secret);
	const struct config_service *svc = rule->service;
	if (svc && svc->tls >= 0 && (size_t)svc->tls < sizeof(modes) / sizeof(modes[0]))
		snprintf(t->sslmode, sizeof(t->sslmode), "%s", modes[svc->tls]);
	if (svc && svc->tls_ca_file)
		snprintf(t->sslrootcert, sizeof(t->sslrootcert), "%s", svc->tls_ca_file);
}

/* With cache_invalidation: logical, a result is kept only while its database is followed
 * (logical.h): otherwise a write around tusk would go unseen until cache_ttl. */
static bool logical_followed(struct client *c)
{
	/* Where a pool's database is followed, per worker thread (no lock): found once per rule
	 * and database, not on every leading miss. A reload makes new rules (kept until exit,
	 * so a rule's address is never reused): their first miss looks again. */
	enum { FOLLOW_SLOTS = 64 };
	static _Thread_local struct {
		const struct config_pool_rule *rule;
		char database[CONFIG_NAME_MAX];
		int idx;
	} follow[FOLLOW_SLOTS];
	struct flight_cache *cache = cache_of(c);
	const struct config_pool_rule *rule = pool_rule(c->pool);
	struct flight_vol_target t;

	if (!cache->logical)
		return true;
	size_t h = ((uintptr_t)rule >> 4 ^ (size_t)flight_inval_db_slot(c->database)) % FOLLOW_SLOTS;
	if (follow[h].rule == rule && strcmp(follow[h].database, c->database) == 0)
		return flight_logical_active(cache->logical, follow[h].idx);
	vol_target(c, &t);
	const struct tusk_config *cfg = c->worker->rt->cfg;
	if (cfg->cache_logical_user) {
		snprintf(t.user, sizeof(t.user), "%s", cfg->cache_logical_user);
		snprintf(t.password, sizeof(t.password), "%s", cfg->cache_logical_password ? cfg->cache_logical_password : "");
	}
	int idx;
	bool ok = flight_logical_follow_at(cache->logical, &t, c->database, &idx);
	OPENSSL_cleanse(t.password, sizeof(t.password));
	if (idx >= 0 && strlen(c->database) < sizeof(follow[h].database)) {
		follow[h].rule = rule;
		follow[h].idx = idx;
		snprintf(follow[h].database, sizeof(follow[h].database), "%s", c->database);
	}
	return ok;
}

/* The database whose pg_proc judges c's calls (volatility.h). */
static struct flight_vol_db vol_db_of(const struct client *c)
{
	const struct config_pool_rule *rule = pool_rule(c->pool);

	return (struct flight_vol_db){
		.service = rule->service_name,
		.server_db = rule->server_database ? rule->server_database : c->database,
		.database = c->database,
		.db_slot = flight_inval_db_slot(c->database),
	};
}

/* A decision whose only obstacle is function calls (decide.h): FLIGHT_OK when the catalog
 * says every one is immutable; FLIGHT_CALL_LOOKUP (and the lookup queued) when it has not
 * said yet. */
static enum flight_verdict judge_calls(struct client *c, const struct flight_policy *p,
				       const struct flight_decision *d)
{
	struct flight_cache *cache = cache_of(c);
	struct flight_vol_db db = vol_db_of(c);
	struct flight_vol_target t;

	switch (flight_vol_check(cache->vol, &cache->inval, &db, d->funcs, d->nfuncs)) {
	case FLIGHT_VOL_IMMUTABLE:
		return FLIGHT_OK;
	case FLIGHT_VOL_VOLATILE:
		return FLIGHT_CALL;
	case FLIGHT_VOL_UNKNOWN:
		break;
	}
	vol_target(c, &t);
	flight_vol_lookup(cache->vol, &cache->inval, &db, d->funcs, d->nfuncs, &t, (double)p->ttl_ms / 1000.0);
	OPENSSL_cleanse(&t, sizeof(t));
	return FLIGHT_CALL_LOOKUP;
}

/* d's tables replaced by every relation its result depends on (volatility.h,
 * flight_vol_deps); missing answers are looked up. */
static enum flight_verdict judge_deps(struct client *c, const struct flight_policy *p, struct flight_decision *d)
{
	struct flight_cache *cache = cache_of(c);
	struct flight_vol_db db = vol_db_of(c);
	struct flight_vol_target t;

	enum flight_verdict v = flight_vol_deps(cache->vol, &cache->inval, &db, d, NULL, 0);
	if (v != FLIGHT_CALL_LOOKUP)
		return v;
	vol_target(c, &t);
	v = flight_vol_deps(cache->vol, &cache->inval, &db, d, &t, (double)p->ttl_ms / 1000.0);
	OPENSSL_cleanse(&t, sizeof(t));
	return v;
}

/* Everything the catalog says about a decided text: its calls, then its dependencies (both
 * looked up at once when neither is known). */
static enum flight_verdict judge_catalog(struct client *c, const struct flight_policy *p, struct flight_decision *d)
{
	enum flight_verdict calls = d->verdict == FLIGHT_CALL && d->nfuncs > 0 ? judge_calls(c, p, d) : d->verdict;
	if (calls != FLIGHT_OK && calls != FLIGHT_CALL_LOOKUP)
		return calls;
	enum flight_verdict deps = judge_deps(c, p, d);
	if (deps != FLIGHT_OK && deps != FLIGHT_CALL_LOOKUP)
		return deps;
	return calls == FLIGHT_CALL_LOOKUP ? calls : deps;
}

#define PARK_POLL 0.005 /* a parked request looks at the catalog answers this often */
/* ... and runs uncached after cache_coalesce_wait (the lookup's own bound is its 5 s timeouts) */

/* The catalog has not answered for c's request yet: wait for it (true), or, past the
 * deadline, run uncached (false). */
static bool park(struct client *c, const struct flight_policy *p, bool retry, bool simple, const struct flight_ext *x)
{
	struct flight_client *fc = state_of(c);
	double now = ev_now(c->worker->loop);

	if (!fc)
		return false;
	if (!retry) {
		fc->park_until = now + (double)p->coalesce_wait_ms / 1000.0;
	} else if (now >= fc->park_until) {
		return false;
	}
	fc->parked = true;
	fc->ext_len = simple ? 0 : x->len;
	fc->ext_parse = !simple && x->has_parse;
	ev_timer_stop(c->worker->loop, &c->timer);
	ev_timer_set(&c->timer, PARK_POLL, 0.);
	ev_timer_start(c->worker->loop, &c->timer);
	return true;
}

static void deliver(struct worker *w, struct worker_msg *m);
static void wait_l2_done(void *arg, const struct flight_l2_answer *a);
static void wait_l2_stop(struct flight_client *fc);

/* On the leader's worker, lock released: hand each waiter its answer on its own worker. */
static void post_waiter(struct flight_waiter *fw, void *arg)
{
	struct worker *self = arg;
	struct worker_msg *m = calloc(1, sizeof(*m));

	if (!m) {
		/* Its deadline (cache_coalesce_wait) releases it instead. */
		flight_waiter_put(fw);
		return;
	}
	m->fn = deliver;
	m->arg = fw; /* takes over the list's reference */
	if (fw->worker == self)
		worker_post_local(self, m);
	else
		worker_post(fw->worker, m);
}

static void end_lead(struct client *c, bool ok)
{
	struct flight_client *fc = c->flight;
	struct flight_cache *cache = cache_of(c);
	struct flight *f = fc->lead;

	fc->lead = NULL;
	free(fc->l2key);
	fc->l2key = NULL;
	fc->l2_store = false;
	flight_result_put(flight_end(&cache->flights, f, ok, post_waiter, c->worker));
}

/* Whether a write through this tusk to one of v's tables (or its database) has an INCR Redis
 * has not answered yet: Redis may not count it yet, so its versions cannot be trusted for a
 * read that began after the write was sent (read-your-writes across workers). */
static bool l2_pending(struct flight_cache *cache, const struct flight_versions *v)
{
	if (atomic_load(&cache->l2_pending[FLIGHT_INVAL_SLOTS + v->db_slot]))
		return true;
	for (int i = 0; i < v->n; i++)
		if (atomic_load(&cache->l2_pending[v->slot[i]]))
			return true;
	return false;
}

/* On the client's worker: what Redis had for the leader's key. */
static void l2_sig(const struct flight_l2_versions *v, uint64_t out[2])
{
	uint64_t buf[2 * FLIGHT_L2_MAX_VERSIONS];
	int n = v->n < 0 ? 0 : v->n > FLIGHT_L2_MAX_VERSIONS ? FLIGHT_L2_MAX_VERSIONS : v->n;
	for (int i = 0; i < n; i++) {
		buf[2 * i] = v->id[i];
		buf[2 * i + 1] = v->v[i];
	}
	XXH128_hash_t h = XXH3_128bits(buf, (size_t)n * 2 * sizeof(buf[0]));
	out[0] = h.low64;
	out[1] = h.high64;
}

static void l2_done(void *arg, const struct flight_l2_answer *a)
{
	struct client *c = arg;
	struct flight_client *fc = c->flight;
	struct flight_cache *cache = cache_of(c);
	static const uint8_t ready[] = { 'Z', 0, 0, 0, 5, 'I' };

	fc->l2req = NULL;
	if (fc->lead && !a->error) {
		uint64_t sig[2];
		l2_sig(a->versions, sig);
		flight_set_l2sig(fc->lead, sig);
	}
	if (a->bytes && fc->lead) {
		/* The bytes are checked as a reply before anyone gets them: only RowDescription,
		 * DataRow and CommandComplete pass, whatever Redis holds. */
		int rc = flight_feed(fc->lead, a->bytes, a->len);
		if (rc == 0)
			rc = flight_feed(fc->lead, ready, sizeof(ready));
		if (rc == 1) {
			struct flight *f = fc->lead;
			fc->lead = NULL;
			free(fc->l2key);
			fc->l2key = NULL;
			struct flight_result *r = flight_end(&cache->flights, f, true, post_waiter, c->worker);
			const uint8_t *pre;
			size_t npre = request_frame(c, &pre);
			int served = r ? serve(c, r, request_len(c), pre, npre) : 0;
			flight_result_put(r);
			if (served < 0)
				return;
			if (served > 0) {
				log_debug(c->id, c->ctx, "answered from the cache's L2");
				if (!buf_empty(&c->rbuf))
					client_need_server(c);
				return;
			}
			fc->bypass_once = true; /* no room to answer whole: run it */
			client_need_server(c);
			return;
		}
		atomic_fetch_add_explicit(&cache->counters.l2_errors, 1, memory_order_relaxed);
		log_debug(c->id, c->ctx, "an L2 entry is not a shareable reply: ignored");
		/* The flight took bytes it must not keep: end it, and run the query alone. */
		end_lead(c, false);
		fc->bypass_once = true;
		client_need_server(c);
		return;
	}
	fc->l2v = *a->versions;
	fc->l2_store = !a->error && fc->lead;
	fc->l2_checked = true;
	client_need_server(c);
}

static bool request(struct client *c, bool session);
static void stop_waiting(struct client *c);

static bool reset_discards_all(const struct tusk_config *cfg);

static struct sess_stmt *sess_find(struct flight_client *fc, const char *name)
{
	for (int i = 0; fc && fc->stmts && i < SESSION_STMTS; i++)
		if (fc->stmts[i].name[0] && strcmp(fc->stmts[i].name, name) == 0)
			return &fc->stmts[i];
	return NULL;
}

static void sess_forget(struct sess_stmt *st)
{
	free(st->body);
	memset(st, 0, sizeof(*st));
}

/* The text and parameter types an extended request runs: its own Parse's, or those tusk
 * keeps for the named statement it binds (prepared.h). False when tusk does not know them:
 * the unnamed statement of an earlier request, a name it does not track, or, in transaction
 * pooling, a Parse of a name (a new name is prepared on a server; a name in use is PostgreSQL's
 * 42P05, which the relay answers: relay.c's parse_taken). */
static bool ext_statement(struct client *c, const struct flight_ext *x, struct ext_key *ek, const char **sql,
			  size_t *len)
{
	const uint8_t *types;
	uint16_t n;

	if (x->stmt_len && c->mode == POOL_MODE_SESSION) {
		/* The statement lives on the client's own server, parsed under the session's
		 * settings, which the key holds (a session that changed any is not served). Its
		 * identity is its body, so two sessions' names for one text share results. */
		struct prep_hash id;
		if (x->has_parse) {
			if (prep_identity(x->parse_rest, x->parse_rest_len, &id) < 0)
				return false;
			*sql = x->query;
			*len = x->query_len;
			types = x->types;
			n = x->ntypes;
		} else {
			const struct sess_stmt *st = sess_find(c->flight, x->stmt);
			if (!st || !flight_ext_parse_body(st->body, st->body_len, sql, len, &types, &n))
				return false;
			id = st->id;
		}
		for (int i = 0; i < 8; i++) {
			ek->stmt_id[i] = (uint8_t)(id.hi >> (56 - 8 * i));
			ek->stmt_id[8 + i] = (uint8_t)(id.lo >> (56 - 8 * i));
		}
		ek->named = true;
	} else if (x->stmt_len) {
		const struct prep_stmt *e = c->prep && !x->has_parse ? prep_client_find(c->prep, x->stmt) : NULL;
		if (!e)
			return false;
		if (!flight_ext_parse_body(e->body, e->body_len, sql, len, &types, &n))
			return false;
		/* Its server copy was parsed under the settings of its Parse (typed constants such
		 * as '1/2/2020'::date are fixed then): only the same statement shares its results. */
		for (int i = 0; i < 8; i++) {
			ek->stmt_id[i] = (uint8_t)(e->hash.hi >> (56 - 8 * i));
			ek->stmt_id[8 + i] = (uint8_t)(e->hash.lo >> (56 - 8 * i));
		}
		ek->named = true;
	} else if (x->has_parse) {
		ek->named = false;
		*sql = x->query;
		*len = x->query_len;
		types = x->types;
		n = x->ntypes;
	} else {
		return false;
	}
	if (n > sizeof(ek->types) / sizeof(ek->types[0]))
		return false;
	struct proto_reader tr;
	proto_reader_init(&tr, types, 4 * (size_t)n);
	for (int i = 0; i < n; i++)
		ek->types[i] = proto_get_u32(&tr);
	if (tr.err)
		return false;
	ek->ntypes = n;
	ek->x = x;
	return true;
}

static bool flight_client_request(struct client *c)
{
	return request(c, false);
}

/* Whether server_reset_query leaves nothing of the previous client's session: otherwise a
 * session-mode server may carry settings the key does not hold. */
static bool reset_discards_all(const struct tusk_config *cfg)
{
	const char *q = cfg->server_reset_query;
	if (!q)
		return true; /* the default */
	while (*q == ' ')
		q++;
	if (strncasecmp(q, "DISCARD ALL", 11) != 0)
		return false;
	for (q += 11; *q == ' ' || *q == ';'; q++)
		;
	return *q == '\0';
}

static bool flight_client_session_request(struct client *c, const struct server *s)
{
	const struct tusk_config *cfg = c->worker->rt->cfg;

	const uint8_t *m = buf_head(&c->rbuf);
	size_t avail = buf_len(&c->rbuf);

	/* Called at every client event: only exactly one whole Query, or one whole extended
	 * read in the plain shape (ext.h), is a request. */
	struct flight_ext x;
	if (avail <= PROTO_HDR_LEN ||
	    (m[0] == 'Q' ? msg_total(m, avail) != avail : !flight_ext_read(m, avail, &x)))
		return false;
	struct flight_policy p;

	if (!cache_of(c) || !c->pool || c->mode != POOL_MODE_SESSION)
		return false;
	flight_policy_resolve(cfg, pool_rule(c->pool), &p);
	if (p.mode <= CONFIG_CACHE_OFF)
		return false;
	/* Results go to Redis only after a lookup this path does not wait for. */
	if (flight_l2_configured(cfg))
		return false;
	if (c->flight_session_dirty || !reset_discards_all(cfg) || s->tx_status != 'I' || s->ext_open ||
	    s->pending_rfq != 0 || s->expect_count != 0 || c->c2s_scanned != 0 || c->c2s_remaining != 0 ||
	    (c->flight && (c->flight->lead || c->flight->wait))) {
		atomic_fetch_add_explicit(&cache_of(c)->counters.bypass_state[FLIGHT_BYPASS_SESSION], 1,
					  memory_order_relaxed);
		return false;
	}
	return request(c, true);
}

/* What request() has judged, for the role flight_join gives it. */
struct request_ctx {
	const struct flight_policy *p;
	const struct flight_ext *x;  /* the extended read (not simple) */
	bool simple, session;
	const char *sql;
	size_t sql_len;
	const struct ext_key *ekp;
	const struct flight_decision *d;
	const struct flight_versions *v;
	uint8_t *key;                /* KEY_BUF bytes of scratch */
};

/* L1 holds a result under this very key: it answers the request (true). */
static bool l1_hit(struct client *c, const uint8_t *key, size_t klen, uint64_t hash, const uint8_t *pre, size_t npre,
		   bool sess_unnamed)
{
	struct flight_cache *cache = cache_of(c);
	enum flight_lru_outcome out;
	struct flight_result *r =
		flight_lru_get(cache->lru, &cache->inval, key, klen, hash, ev_now(c->worker->loop), &out);
	if (out == FLIGHT_LRU_STALE)
		atomic_fetch_add_explicit(&cache->counters.invalidations, 1, memory_order_relaxed);
	else if (out == FLIGHT_LRU_EXPIRED)
		atomic_fetch_add_explicit(&cache->counters.expirations, 1, memory_order_relaxed);
	if (r) {
		int served = serve(c, r, buf_len(&c->rbuf), pre, npre);
		flight_result_put(r);
		if (served > 0 && sess_unnamed)
			c->flight->unnamed_cached = true;
		if (served != 0) {
			atomic_fetch_add_explicit(&cache->counters.hits, 1, memory_order_relaxed);
			if (served > 0)
				log_debug(c->id, c->ctx, "answered from the cache");
			return true;
		}
	}
	return false;
}

/* c leads the flight: its query goes to a server (false), after an L2 lookup when there is
 * one (true: l2_done goes on). */
static bool lead_request(struct client *c, struct flight *lead, const struct request_ctx *r)
{
	struct flight_cache *cache = cache_of(c);
	struct flight_client *fc = c->flight;
	long klen;

	fc->lead = lead;
	fc->ext_len = r->simple ? 0 : r->x->len;
	fc->ext_parse = !r->simple && r->x->has_parse;
	if (!r->simple)
		flight_set_extended(lead);
	fc->lead_store = r->p->mode == CONFIG_CACHE_ON && logical_followed(c);
	fc->lead_ttl = (double)r->p->ttl_ms / 1000.0;
	fc->lead_ttl_ms = r->p->ttl_ms;
	atomic_fetch_add_explicit(&cache->counters.misses, 1, memory_order_relaxed);
	if (!r->session && fc->lead_store && flight_l2_configured(c->worker->rt->cfg) && !l2_pending(cache, r->v)) {
		/* The L2 key: the same request without this process's rule tag. */
		klen = build_key(c, r->sql, r->sql_len, r->ekp, false, r->key, KEY_BUF);
		fc->l2key = klen > 0 ? malloc((size_t)klen) : NULL;
		if (!fc->l2key)
			return false;
		memcpy(fc->l2key, r->key, (size_t)klen);
		fc->l2klen = (size_t)klen;
		if (flight_l2_get(c->worker, &cache->counters, r->key, (size_t)klen, c->database, r->d, l2_done, c,
				  &fc->l2req) == 0)
			return true; /* l2_done goes on */
		fc->l2req = NULL;
	}
	return false;
}

/* c waits on an identical query's flight (true), or runs its own (session pooling). */
static bool wait_request(struct client *c, struct flight_waiter *wait, const struct request_ctx *r)
{
	struct flight_cache *cache = cache_of(c);
	struct flight_client *fc = c->flight;
	long klen;

	fc->wait = wait;
	fc->ext_len = r->simple ? 0 : r->x->len;
	fc->ext_parse = !r->simple && r->x->has_parse;
	if (r->session) {
		/* Its server would sit idle while it waits, and the relay does not hold a
		 * session client's bytes back: it runs its own query. */
		stop_waiting(c);
		return false;
	}
	if (r->p->mode == CONFIG_CACHE_ON && flight_l2_configured(c->worker->rt->cfg)) {
		/* Its own read of the Redis versions, after it arrived (wait_l2_done). */
		fc->wait_l2 = true;
		fc->wait_sig_set = false;
		klen = build_key(c, r->sql, r->sql_len, r->ekp, false, r->key, KEY_BUF);
		if (klen <= 0 || flight_l2_get(c->worker, &cache->counters, r->key, (size_t)klen, c->database, r->d,
					       wait_l2_done, c, &fc->l2req) != 0)
			fc->l2req = NULL; /* no versions: the leader's result is not served to it */
	}
	atomic_fetch_add_explicit(&cache->counters.joins, 1, memory_order_relaxed);
	ev_timer_stop(c->worker->loop, &c->timer);
	ev_timer_set(&c->timer, (double)r->p->coalesce_wait_ms / 1000.0, 0.);
	ev_timer_start(c->worker->loop, &c->timer);
	log_debug(c->id, c->ctx, "waiting on an identical query in flight");
	return true;
}

/* session: a session-mode client linked to its idle server (flight_client_session_request):
 * it may be answered from L1 or lead, never wait. */
static bool request(struct client *c, bool session)
{
	struct flight_cache *cache = cache_of(c);
	struct flight_client *fc = c->flight;
	struct flight_policy p;
	struct flight_decision d;
	struct flight_versions v;
	uint8_t key[KEY_BUF];

	if (fc && (fc->wait || fc->l2req || fc->out || fc->parked))
		return true; /* still waiting or answering: later bytes stay behind the request */
	bool retry = fc && fc->retry;
	if (fc)
		fc->retry = false;
	if (fc && fc->l2_checked) {
		fc->l2_checked = false;
		return false; /* L2 had nothing: the leader's query goes to a server */
	}
	if (!cache || !c->pool || c->mode != (session ? POOL_MODE_SESSION : POOL_MODE_TRANSACTION))
		return false;
	if (fc && fc->bypass_once) {
		fc->bypass_once = false;
		return false;
	}
	flight_policy_resolve(c->worker->rt->cfg, pool_rule(c->pool), &p);
	if (p.mode <= CONFIG_CACHE_OFF)
		return false;
	const uint8_t *m = buf_head(&c->rbuf);
	size_t avail = buf_len(&c->rbuf);
	size_t total = avail >= PROTO_HDR_LEN && m[0] == 'Q' ? msg_total(m, avail) : 0;
	bool simple = total > PROTO_HDR_LEN && total == avail;
	struct flight_ext x;
	struct ext_key ek;
	if (!simple && !flight_ext_read(m, avail, &x)) {
		atomic_fetch_add_explicit(&cache->counters.bypass_state[FLIGHT_BYPASS_PIPELINED], 1, memory_order_relaxed);
		return false;
	}
	/* The classifier reads SQL as a PostgreSQL 15 server with standard strings does; a
	 * session that reads it otherwise, or whose settings are in motion, is not judged. */
	if (c->pinned || c->backslash_quotes || c->lex_pending || c->session.pending_len) {
		atomic_fetch_add_explicit(&cache->counters.bypass_state[FLIGHT_BYPASS_SESSION], 1, memory_order_relaxed);
		return false;
	}
	const char *sql = (const char *)m + PROTO_HDR_LEN;
	size_t sql_len = simple ? strnlen(sql, avail - PROTO_HDR_LEN) : 0;
	const struct ext_key *ekp = simple ? NULL : &ek;
	if (!simple && !ext_statement(c, &x, &ek, &sql, &sql_len)) {
		atomic_fetch_add_explicit(&cache->counters.bypass_state[FLIGHT_BYPASS_SESSION], 1, memory_order_relaxed);
		return false;
	}
	if (!simple && flight_ext_time_words(&x)) {
		atomic_fetch_add_explicit(&cache->counters.bypass[FLIGHT_TIME_LITERAL], 1, memory_order_relaxed);
		return false;
	}
	/* Answered or led here, the unnamed statement becomes this read, which writes nothing
	 * again when a later Bind runs it (flight_client_sent_bind). */
	if (!simple && x.has_parse && x.stmt_len == 0 && fc)
		fc->unnamed = (struct flight_write){ 0 };
	const uint8_t *pre = ext_frame + (!simple && x.has_parse ? 0 : 5);
	size_t npre = simple ? 0 : x.has_parse ? 10 : 5;
	/* Session pooling: a Parse of a named statement must reach the client's server, which
	 * keeps the statement for later Binds; such a request may lead, never be answered. An
	 * unnamed one answered here leaves the server's unnamed statement behind (noted). */
	bool may_serve = !(session && !simple && x.has_parse && x.stmt_len);
	bool sess_unnamed = session && !simple && x.has_parse && x.stmt_len == 0;
	if (sess_unnamed && !state_of(c))
		may_serve = false;
	if (sql_len > FLIGHT_MAX_SQL) {
		atomic_fetch_add_explicit(&cache->counters.bypass[FLIGHT_TOO_BIG], 1, memory_order_relaxed);
		return false;
	}
	long klen = build_key(c, sql, sql_len, ekp, true, key, sizeof(key));
	if (klen < 0) {
		atomic_fetch_add_explicit(&cache->counters.bypass[FLIGHT_TOO_BIG], 1, memory_order_relaxed);
		return false;
	}
	uint64_t hash = flight_key_hash(key, (size_t)klen);

	/* A kept result under this very key was judged cacheable under these very rules (the
	 * key holds the text and the rule): a hit needs no parse. */
	if (p.mode == CONFIG_CACHE_ON && may_serve && l1_hit(c, key, (size_t)klen, hash, pre, npre, sess_unnamed))
		return true;
	flight_decide(sql, sql_len, &p.tables, &d);
	if (d.verdict == FLIGHT_OK || (d.verdict == FLIGHT_CALL && d.nfuncs > 0))
		d.verdict = judge_catalog(c, &p, &d);
	/* Waiting for the catalog is single-flight too: one lookup per name, every request
	 * asking meanwhile waits for it (a session client never waits: it runs uncached). */
	if (d.verdict == FLIGHT_CALL_LOOKUP && !session && park(c, &p, retry, simple, &x))
		return true;
	if (d.verdict != FLIGHT_OK) {
		atomic_fetch_add_explicit(&cache->counters.bypass[d.verdict], 1, memory_order_relaxed);
		return false;
	}
	/* Before the query is sent (the leader's) or joined (a waiter's): see serve.h. */
	flight_inval_snapshot(&cache->inval, c->database, &d, &v);
	if (v.busy) {
		atomic_fetch_add_explicit(&cache->counters.bypass[FLIGHT_WRITE_PENDING], 1, memory_order_relaxed);
		return false;
	}
	fc = state_of(c);
	if (!fc)
		return false;
	struct flight *lead;
	struct flight_waiter *wait;
	/* A waiter's answer must fit its write buffer whole (serve): a larger result is not
	 * worth gathering. */
	size_t max = p.max_result;
	const struct request_ctx rq = { .p = &p, .x = &x, .simple = simple, .session = session, .sql = sql,
					.sql_len = sql_len, .ekp = ekp, .d = &d, .v = &v, .key = key };
	switch (flight_join(&cache->flights, key, (size_t)klen, hash, &v, max, c->worker, c, &lead, &wait)) {
	case FLIGHT_ROLE_LEAD:
		return lead_request(c, lead, &rq);
	case FLIGHT_ROLE_WAIT:
		return wait_request(c, wait, &rq);
	case FLIGHT_ROLE_ALONE:
		break;
	}
	return false;
}

/* The waiter let go (deadline, cancel, close): no answer will be used. */
static void stop_waiting(struct client *c)
{
	struct flight_client *fc = c->flight;
	struct flight_waiter *fw = fc->wait;

	fc->wait = NULL;
	fw->client = NULL;
	wait_l2_stop(fc);
	(void)flight_leave(&cache_of(c)->flights, fw);
	flight_waiter_put(fw);
	ev_timer_stop(c->worker->loop, &c->timer);
}

/* A waiter no longer waits for its Redis versions (wait_l2). */
static void wait_l2_stop(struct flight_client *fc)
{
	if (fc->wait_l2 && fc->l2req) {
		flight_l2_cancel(fc->l2req);
		fc->l2req = NULL;
	}
	fc->wait_l2 = false;
	fc->wait_sig_set = false;
}

/* A waiter's answer: r (NULL: its leader failed), served when its versions allow. */
static void waiter_answer(struct client *c, struct flight_result *r)
{
	struct flight_client *fc = c->flight;
	struct flight_cache *cache = cache_of(c);

	if (r && fc->wait_l2 &&
	    !(fc->wait_sig_set && r->l2set && r->l2sig[0] == fc->wait_sig[0] && r->l2sig[1] == fc->wait_sig[1]))
		r = NULL; /* a write committed since its leader read them, or unknown: run its own */
	wait_l2_stop(fc);
	const uint8_t *pre;
	size_t npre = request_frame(c, &pre);
	int served = r ? serve(c, r, request_len(c), pre, npre) : 0;
	if (served > 0) {
		atomic_fetch_add_explicit(&cache->counters.join_served, 1, memory_order_relaxed);
		if (!buf_empty(&c->rbuf))
			client_need_server(c);
	} else if (served == 0) {
		atomic_fetch_add_explicit(&cache->counters.waiter_fallbacks, 1, memory_order_relaxed);
		fc->bypass_once = true;
		client_need_server(c);
	}
}

/* A waiter's own read of the Redis versions answered. */
static void wait_l2_done(void *arg, const struct flight_l2_answer *a)
{
	struct client *c = arg;
	struct flight_client *fc = c->flight;

	fc->l2req = NULL;
	if (!a->error) {
		l2_sig(a->versions, fc->wait_sig);
		fc->wait_sig_set = true;
	}
	if (fc->held) {
		struct flight_result *r = fc->held;
		fc->held = NULL;
		waiter_answer(c, r);
		flight_result_put(r);
	}
}

/* On the waiter's worker: the flight it waited on is over. */
static void deliver(struct worker *w, struct worker_msg *m)
{
	struct flight_waiter *fw = m->arg;
	struct client *c = fw->client;

	if (c && !w->stopping) {
		struct flight_client *fc = c->flight;
		struct flight_result *r = fw->result;
		fc->wait = NULL;
		fw->client = NULL;
		ev_timer_stop(w->loop, &c->timer);
		if (r && fc->wait_l2 && fc->l2req) {
			flight_result_get(r); /* until its versions come (wait_l2_done) */
			fc->held = r;
		} else {
			waiter_answer(c, r);
		}
		flight_waiter_put(fw); /* the client's reference */
	}
	flight_waiter_put(fw); /* the message's */
}

static void flight_client_timer(struct client *c)
{
	struct flight_client *fc = c->flight;

	if (fc && fc->parked) {
		fc->parked = false;
		fc->retry = true;
		client_need_server(c);
		return;
	}
	if (!fc || !fc->wait)
		return;
	stop_waiting(c);
	atomic_fetch_add_explicit(&cache_of(c)->counters.waiter_fallbacks, 1, memory_order_relaxed);
	log_debug(c->id, c->ctx, "the identical query did not finish within cache_coalesce_wait: running it");
	fc->bypass_once = true;
	client_need_server(c);
}

static bool flight_client_quiet(const struct client *c)
{
	const struct flight_client *fc = c->flight;
	return !fc || (!fc->lead && !fc->wait && !fc->parked && !fc->out && !fc->l2req && fc->nl2bump == 0 && fc->nbump == 0 &&
		       fc->nheld == 0 && !fc->held_db && !fc->bump_db && !fc->bump_ddl && !fc->committed.l2);
}

static bool flight_client_cancel(struct client *c)
{
	struct flight_client *fc = c->flight;

	if (!fc || (!fc->wait && !fc->parked))
		return false;
	if (fc->wait) {
		stop_waiting(c);
	} else {
		fc->parked = false;
		ev_timer_stop(c->worker->loop, &c->timer);
	}
	atomic_fetch_add_explicit(&cache_of(c)->counters.waiter_cancels, 1, memory_order_relaxed);
	/* As PostgreSQL answers a cancelled Parse Bind Execute Sync: the Parse and Bind were
	 * done (ParseComplete, BindComplete), the Execute was cancelled. */
	const uint8_t *pre;
	size_t npre = request_frame(c, &pre);
	buf_consume(&c->rbuf, request_len(c));
	fc->ext_len = 0;
	fc->ext_parse = false;
	if (client_put_cancelled(c, pre, npre) < 0) {
		client_close(c, "no room for the cancel's error");
		return true;
	}
	if (client_write_wbuf(c) < 0) {
		client_close(c, "write to client failed");
		return true;
	}
	client_update_io(c);
	if (!buf_empty(&c->rbuf))
		client_need_server(c);
	return true;
}

static void apply_bumps(struct client *c, bool clear)
{
	struct flight_client *fc = c->flight;
	struct flight_cache *cache = cache_of(c);

	for (int i = 0; i < fc->nbump; i++)
		flight_inval_bump(&cache->inval, fc->bump[i]);
	if (fc->nbump)
		atomic_fetch_add_explicit(&cache->counters.table_bumps, (uint64_t)fc->nbump, memory_order_relaxed);
	if (fc->bump_db) {
		flight_inval_bump_db(&cache->inval, flight_inval_db_slot(c->database));
		atomic_fetch_add_explicit(&cache->counters.db_bumps, 1, memory_order_relaxed);
	}
	if (fc->bump_ddl)
		flight_inval_bump_ddl(&cache->inval, flight_inval_db_slot(c->database));
	if (flight_l2_configured(c->worker->rt->cfg)) {
		uint64_t ids[FLIGHT_L2_MAX_VERSIONS + 1];
		_Atomic uint32_t *pending[FLIGHT_L2_MAX_VERSIONS + 1];
		int n = fc->nl2bump;
		memcpy(ids, fc->l2bump, (size_t)n * sizeof(ids[0]));
		for (int i = 0; i < n; i++)
			pending[i] = &cache->l2_pending[fc->l2slot[i]];
		if (fc->bump_db) {
			ids[n] = flight_l2_db_id(c->database);
			pending[n++] = &cache->l2_pending[FLIGHT_INVAL_SLOTS + flight_inval_db_slot(c->database)];
		}
		flight_l2_bump(c->worker, &cache->counters, ids, pending, n);
	}
	if (clear) {
		/* After the bumps: a reader that sees the slot free sees the moved version. */
		for (int i = 0; i < fc->nheld; i++)
			flight_inval_release(&cache->inval, fc->bump[i]);
		if (fc->held_db)
			flight_inval_release_db(&cache->inval, flight_inval_db_slot(c->database));
		fc->nheld = 0;
		fc->held_db = false;
		fc->nbump = 0;
		fc->nl2bump = 0;
		fc->bump_db = false;
		fc->bump_ddl = false;
	}
}

static void flight_client_closed(struct client *c)
{
	struct flight_client *fc = c->flight;

	if (!fc)
		return;
	if (fc->wait)
		stop_waiting(c);
	if (fc->out) {
		flight_result_put(fc->out);
		fc->out = NULL;
	}
	if (fc->held) {
		flight_result_put(fc->held);
		fc->held = NULL;
	}
	if (fc->l2req) {
		flight_l2_cancel(fc->l2req);
		fc->l2req = NULL;
	}
	flight_l2_unwait(&fc->committed);
	if (fc->lead) {
		atomic_fetch_add_explicit(&cache_of(c)->counters.leader_failures, 1, memory_order_relaxed);
		end_lead(c, false);
	}
	/* A write whose end was not seen may still commit: its tables go stale now. */
	apply_bumps(c, true);
	for (int i = 0; fc->stmts && i < SESSION_STMTS; i++)
		free(fc->stmts[i].body);
	free(fc->stmts);
	free(fc);
	c->flight = NULL;
}

static void flight_client_scanned(struct client *c, const uint8_t *p, size_t n)
{
	struct flight_client *fc = c->flight;

	if (!fc || !fc->lead || n == 0)
		return;
	struct flight_cache *cache = cache_of(c);
	int rc = flight_feed(fc->lead, p, n);
	if (rc == 0)
		return;
	if (rc < 0) {
		atomic_fetch_add_explicit(&cache->counters.leader_failures, 1, memory_order_relaxed);
		end_lead(c, false);
		return;
	}
	if (fc->lead_store && flight_l2_configured(c->worker->rt->cfg)) {
		/* With L2, Redis alone keeps results: an L1 copy would not see writes through the
		 * other tusks. Kept with the versions Redis had before the query was sent. */
		if (fc->l2_store && fc->l2key && flight_inval_current(&cache->inval, flight_versions_of(fc->lead))) {
			const struct flight_result *r = flight_result_of(fc->lead);
			flight_l2_put(c->worker, &cache->counters, fc->l2key, fc->l2klen, &fc->l2v, r->bytes, r->len,
				      fc->lead_ttl_ms);
		} else if (fc->l2_store) {
			atomic_fetch_add_explicit(&cache->counters.store_races, 1, memory_order_relaxed);
		}
	} else if (fc->lead_store) {
		/* Kept only if no write to its tables committed since the versions were read. */
		if (flight_inval_current(&cache->inval, flight_versions_of(fc->lead))) {
			size_t klen;
			uint64_t hash;
			const uint8_t *key = flight_key_of(fc->lead, &klen, &hash);
			int ev = flight_lru_put(cache->lru, key, klen, hash, flight_versions_of(fc->lead), c->database,
						flight_result_of(fc->lead), ev_now(c->worker->loop) + fc->lead_ttl);
			atomic_fetch_add_explicit(&cache->counters.stores, 1, memory_order_relaxed);
			if (ev)
				atomic_fetch_add_explicit(&cache->counters.evictions, (uint64_t)ev, memory_order_relaxed);
		} else {
			atomic_fetch_add_explicit(&cache->counters.store_races, 1, memory_order_relaxed);
		}
	}
	end_lead(c, true);
}

static void note_bump(struct client *c, const char *table)
{
	struct flight_client *fc = c->flight;
	uint16_t slot = flight_inval_slot(c->database, table);
	uint64_t id = flight_l2_table_id(c->database, table);
	bool have = false;

	for (int i = 0; i < fc->nl2bump && !have; i++)
		have = fc->l2bump[i] == id;
	if (!have && fc->nl2bump < FLIGHT_MAX_TABLES) {
		fc->l2slot[fc->nl2bump] = slot;
		fc->l2bump[fc->nl2bump++] = id;
	} else if (!have)
		fc->bump_db = true;
	for (int i = 0; i < fc->nbump; i++)
		if (fc->bump[i] == slot)
			return;
	if (fc->nbump == FLIGHT_MAX_TABLES)
		fc->bump_db = true;
	else
		fc->bump[fc->nbump++] = slot;
}

static void bump_db_now(struct client *c)
{
	struct flight_cache *cache = cache_of(c);
	uint64_t id = flight_l2_db_id(c->database);
	_Atomic uint32_t *pending = &cache->l2_pending[FLIGHT_INVAL_SLOTS + flight_inval_db_slot(c->database)];

	flight_inval_bump_db(&cache->inval, flight_inval_db_slot(c->database));
	flight_inval_bump_ddl(&cache->inval, flight_inval_db_slot(c->database));
	flight_l2_bump(c->worker, &cache->counters, &id, &pending, 1);
}

/* The slots noted since the last call are held busy until the end of the write (apply_bumps
 * with clear), so that the window between PostgreSQL's commit and tusk reading its
 * ReadyForQuery serves nothing old (inval.h). Call before the write's first bump, so no
 * reader sees its new version with the slot free. */
static void hold_new(struct client *c)
{
	struct flight_client *fc = c->flight;
	struct flight_cache *cache = cache_of(c);

	for (; fc->nheld < fc->nbump; fc->nheld++)
		flight_inval_hold(&cache->inval, fc->bump[fc->nheld]);
	if (fc->bump_db && !fc->held_db) {
		flight_inval_hold_db(&cache->inval, flight_inval_db_slot(c->database));
		fc->held_db = true;
	}
}

/* Whether a write to w's tables may write others tusk does not see (triggers, rules): the
 * whole database goes stale then, and while the catalog has not said. */
static bool fans_out(struct client *c, const struct flight_write *w)
{
	struct flight_cache *cache = cache_of(c);
	struct flight_vol_target t;
	bool fans = false, looked = false;

	if (!c->pool)
		return w->ntables > 0;
	struct flight_vol_db db = vol_db_of(c);
	for (int i = 0; i < w->ntables && !fans; i++) {
		fans = flight_vol_write_fans_out(cache->vol, &cache->inval, &db, w->tables[i].name, NULL, 0);
		if (fans && !looked) {
			/* Ask the catalog for the next write (only the first time: one lookup). */
			struct flight_policy p;
			flight_policy_resolve(c->worker->rt->cfg, pool_rule(c->pool), &p);
			vol_target(c, &t);
			(void)flight_vol_write_fans_out(cache->vol, &cache->inval, &db, w->tables[i].name, &t,
							(double)p.ttl_ms / 1000.0);
			OPENSSL_cleanse(&t, sizeof(t));
			looked = true;
		}
	}
	return fans;
}

static void note_write(struct client *c, const struct flight_write *w)
{

	if (!w->flush_db && w->ntables == 0)
		return;
	if (!state_of(c)) {
		/* No memory to remember it for the end of the transaction: now is all there is. */
		bump_db_now(c);
		return;
	}
	for (int i = 0; i < w->ntables; i++)
		note_bump(c, w->tables[i].name);
	if (w->flush_db || fans_out(c, w))
		c->flight->bump_db = true;
	if (w->ddl)
		c->flight->bump_ddl = true;
	hold_new(c);
	/* Now as well: entries and flights from before the write stop being used at once. */
	apply_bumps(c, false);
}

/* Whether sql is a SELECT whose only obstacle to caching is calls, all of them known
 * immutable now (no lookup is queued from here). */
static bool calls_immutable(struct client *c, const char *sql, size_t len)
{
	struct flight_cache *cache = cache_of(c);
	struct flight_decision d;

	if (c->backslash_quotes || !c->pool)
		return false;
	flight_decide(sql, len, NULL, &d);
	if (d.verdict != FLIGHT_CALL || d.nfuncs == 0)
		return false;
	struct flight_vol_db db = vol_db_of(c);
	return flight_vol_check(cache->vol, &cache->inval, &db, d.funcs, d.nfuncs) == FLIGHT_VOL_IMMUTABLE;
}

/* Session pooling: whether a text the server runs leaves the session as it was, as far as
 * tusk can tell without tracking session state there: a read the cache would take (its
 * functions all immutable). Anything else marks the client for good. */
static bool session_clean_read(struct client *c, const char *sql, size_t len)
{
	struct flight_policy p;
	struct flight_decision d;

	if (c->backslash_quotes || !c->pool)
		return false;
	flight_policy_resolve(c->worker->rt->cfg, pool_rule(c->pool), &p);
	flight_decide(sql, len, &p.tables, &d);
	if (d.verdict == FLIGHT_CALL && d.nfuncs > 0)
		d.verdict = judge_calls(c, &p, &d);
	return d.verdict == FLIGHT_OK || d.verdict == FLIGHT_TABLE_POLICY;
}

static bool tracking(const struct client *c)
{
	return c->worker->rt->flight && c->pool && flight_cache_tracking(c->worker->rt->cfg);
}

static void flight_client_sent_sql(struct client *c, const char *sql, size_t len)
{
	struct flight_write w;

	if (!tracking(c)) {
		/* Not judged: if a reload turns the cache on, this session is not known. */
		c->flight_session_dirty = true;
		return;
	}
	if (c->flight && c->flight->lead) {
		/* The leader's own query: a read, judged already (an extended one's Parse makes
		 * the unnamed statement this read, flight_client_parsed). */
		c->flight->last = (struct flight_write){ 0 };
		return;
	}
	if (c->mode == POOL_MODE_SESSION && !c->flight_session_dirty && !session_clean_read(c, sql, len))
		c->flight_session_dirty = true;
	flight_classify_write(sql, len, &w);
	/* A read that calls functions outside the write classifier's short list may write
	 * anything, unless the catalog says they are immutable (PostgreSQL runs those
	 * read-only): then it does not make the whole database stale. */
	if (w.flush_db && !w.ddl && w.ntables == 0 && calls_immutable(c, sql, len))
		w.flush_db = false;
	if (c->flight || ((w.flush_db || w.ntables) && state_of(c))) {
		struct flight_write *u = &c->flight->unnamed;
		c->flight->last = w;
		/* Until flight_client_parsed says which text the unnamed statement is (a Parse too
		 * big for the read buffer reaches here without it), it may be any of them. */
		u->flush_db |= w.flush_db;
		u->ddl |= w.ddl;
		for (int i = 0; i < w.ntables && !u->flush_db; i++) {
			bool have = false;
			for (int k = 0; k < u->ntables && !have; k++)
				have = strcmp(u->tables[k].name, w.tables[i].name) == 0;
			if (!have && u->ntables == FLIGHT_MAX_TABLES)
				u->flush_db = true;
			else if (!have)
				u->tables[u->ntables++] = w.tables[i];
		}
	}
	note_write(c, &w);
}

/* Session pooling: remember a named statement the client's server is about to parse. A
 * Parse that fails there (42P05 for a live name, a syntax error ...) leaves the record
 * wrong, but its ErrorResponse marks the session (flight_client_session_error), and a
 * marked session is never served again. */
static void sess_parsed(struct client *c, const char *name, const uint8_t *rest, size_t rest_len)
{
	struct flight_client *fc = state_of(c);
	struct sess_stmt *st;

	if (!fc) {
		c->flight_session_dirty = true;
		return;
	}
	if (!*name) {
		fc->unnamed_cached = false; /* the server's unnamed statement is this one now */
		return;
	}
	st = sess_find(fc, name);
	if (st) {
		/* PostgreSQL refuses to parse a live name (42P05) and keeps the old statement:
		 * which one runs at the next Bind is not sure here, so neither is remembered. */
		sess_forget(st);
		return;
	}
	/* A statement may outlive its client on a server reset with less than DISCARD ALL:
	 * then a name this session never parsed may exist, and a Parse of it fail. */
	if (!reset_discards_all(c->worker->rt->cfg))
		return;
	if (!fc->stmts)
		fc->stmts = calloc(SESSION_STMTS, sizeof(*fc->stmts));
	for (int i = 0; !st && fc->stmts && i < SESSION_STMTS; i++)
		if (!fc->stmts[i].name[0])
			st = &fc->stmts[i];
	if (!st || strlen(name) > PREP_NAME_MAX || rest_len > FLIGHT_MAX_SQL + 4 + 2 * 65536u)
		return; /* not remembered: its Binds go to the server (and mark the session) */
	st->body = malloc(rest_len);
	if (!st->body || prep_identity(rest, rest_len, &st->id) < 0) {
		sess_forget(st);
		return;
	}
	memcpy(st->body, rest, rest_len);
	st->body_len = rest_len;
	snprintf(st->name, sizeof(st->name), "%s", name);
}

static void flight_client_parsed(struct client *c, const char *name, const uint8_t *rest, size_t rest_len)
{
	if (c->mode == POOL_MODE_SESSION) {
		/* Its text was judged as it went (flight_client_sent_sql); a Parse too large to
		 * read (name NULL) was not. */
		if (!name)
			c->flight_session_dirty = true;
		else
			sess_parsed(c, name, rest, rest_len);
	}
	if (name && !*name && tracking(c) && c->flight)
		c->flight->unnamed = c->flight->last;
}

/* Whether a Bind names the unnamed statement (portal name, then statement name); one too
 * short to tell counts as such (the caller then refuses it: safe). */
static bool bind_unnamed_stmt(const uint8_t *m, size_t avail)
{
	const uint8_t *p = m + PROTO_HDR_LEN, *end = m + avail;
	const uint8_t *nul = avail > PROTO_HDR_LEN ? memchr(p, 0, (size_t)(end - p)) : NULL;
	return !nul || nul + 1 >= end || nul[1] == 0;
}

static bool flight_client_session_bind(struct client *c, const uint8_t *m, size_t avail, const char **text, size_t *len)
{
	struct prep_bind_head bh;
	const struct sess_stmt *st = NULL;

	*text = NULL;
	*len = 0;
	if (c->mode != POOL_MODE_SESSION)
		return true;
	/* The cache answered the client's last unnamed Parse, so its server holds an older
	 * unnamed statement (or none): this Bind would run that one. No driver binds the unnamed
	 * statement again after its Sync; refuse rather than run the wrong text. */
	if (c->flight && c->flight->unnamed_cached && bind_unnamed_stmt(m, avail))
		return false;
	ssize_t head = prep_read_bind_head(m, avail, UINT32_MAX, &bh);
	if (head > 0 && bh.stmt_len && (st = sess_find(c->flight, bh.stmt))) {
		*text = (const char *)st->body; /* the body starts with the query, NUL-terminated */
		*len = strnlen(*text, st->body_len);
	}
	/* A named portal outlives its Execute until the transaction ends; a Bind whose names
	 * are not all here yet cannot be told, nor can a statement tusk did not see parsed:
	 * the session is no longer known. */
	if (head <= 0 || bh.portal_len || (bh.stmt_len && !st))
		c->flight_session_dirty = true;
	return true;
}

static void flight_client_session_close(struct client *c, const char *name)
{
	struct flight_client *fc = c->flight;
	struct sess_stmt *st;

	if (c->mode != POOL_MODE_SESSION || !fc)
		return;
	if (!*name)
		fc->unnamed_cached = false; /* closed on the server as the client expects */
	else if ((st = sess_find(fc, name)))
		sess_forget(st);
}

static void flight_client_session_error(struct client *c)
{
	if (c->mode == POOL_MODE_SESSION)
		c->flight_session_dirty = true;
}

static void flight_client_sent_bind(struct client *c, bool unnamed, const char *text, size_t len)
{
	struct flight_write w;

	if (!tracking(c) || (c->flight && c->flight->lead))
		return; /* ... or the leader's own read (request) */
	if (text) {
		flight_classify_write(text, len, &w);
		note_write(c, &w);
	} else if (unnamed) {
		if (c->flight)
			note_write(c, &c->flight->unnamed);
	} else {
		flight_client_sent_opaque(c);
	}
}

static void flight_client_sent_opaque(struct client *c)
{
	c->flight_session_dirty = true;
	if (!tracking(c))
		return;
	if (!state_of(c)) {
		bump_db_now(c);
		return;
	}
	if (!c->flight->bump_db || !c->flight->bump_ddl) {
		c->flight->bump_db = true;
		c->flight->bump_ddl = true;
		hold_new(c);
		apply_bumps(c, false);
	}
}

static void committed_cb(void *arg)
{
	relay_resume(arg);
}

static bool flight_client_commit_wait(struct client *c, bool last)
{
	struct flight_client *fc = c->flight;

	if (!fc)
		return false;
	if (fc->committed.l2)
		return true;
	if (fc->rfq_bumped || (fc->nl2bump == 0 && !fc->bump_db) || !flight_l2_configured(c->worker->rt->cfg))
		return false;
	apply_bumps(c, last);
	fc->rfq_bumped = true;
	if (!flight_l2_wait(c->worker, &fc->committed, committed_cb, c))
		return false;
	atomic_fetch_add_explicit(&cache_of(c)->counters.l2_commit_waits, 1, memory_order_relaxed);
	return true;
}

static void flight_client_ready(struct client *c, bool last)
{
	struct flight_client *fc = c->flight;

	if (!fc)
		return;
	if (fc->rfq_bumped) {
		fc->rfq_bumped = false; /* flight_client_commit_wait bumped for this one */
		return;
	}
	/* Pipelined: what was noted may belong to a later transaction, still running. Bump now
	 * for this one, and keep it all for the last ReadyForQuery owed. */
	if (fc->nbump || fc->bump_db)
		apply_bumps(c, last);
}

static bool flight_client_writable(struct client *c)
{
	struct flight_client *fc = c->flight;

	if (!fc || !fc->out || !fill_out(c))
		return false;
	log_debug(c->id, c->ctx, "the rest of a cached answer larger than the write buffer is written");
	return !buf_empty(&c->rbuf);
}

/* ---- the relay hooks (frontend/relay_hooks.h) ---- */

/* Every client while the cache tracks writes anywhere: any client's write may invalidate
 * a result another pool's rule keeps (flight_cache_tracking); a rule with the cache off
 * then only tracks (request() resolves its policy). */
static bool hook_wants(const struct tusk_config *cfg, const struct config_pool_rule *rule)
{
	(void)rule;
	return flight_cache_tracking(cfg);
}

/* A reload turned the cache on under a logged-in client: what it sent before was not judged,
 * so its session (session pooling) is not known to match the key. */
static void hook_joined(struct client *c)
{
	c->flight_session_dirty = true;
}

static bool hook_request(struct client *c, const struct server *s)
{
	if (!s)
		return flight_client_request(c);
	return c->mode == POOL_MODE_SESSION && !c->flight_session_dirty && flight_client_session_request(c, s);
}

static bool hook_bind(struct client *c, const uint8_t *m, size_t avail, bool unnamed, const char *text, size_t len)
{
	if (!text && !flight_client_session_bind(c, m, avail, &text, &len))
		return false;
	flight_client_sent_bind(c, unnamed, text, len);
	return true;
}

static void hook_error(struct client *c, struct server *s, const uint8_t *m, size_t total)
{
	(void)s;
	(void)m;
	(void)total;
	/* The read this client leads failed. Its ErrorResponse, fed to the flight, would fail it
	 * too, but not every error is: one the relay answers itself and drops (a Bind sent to
	 * fail, told_check's 0A000) left a flight that saw only the ReadyForQuery after it, kept
	 * as an empty result and served to the next Execute of the statement: no rows, no
	 * CommandComplete, where PostgreSQL said 0A000 again. */
	struct flight_client *fc = c->flight;
	if (fc && fc->lead) {
		atomic_fetch_add_explicit(&cache_of(c)->counters.leader_failures, 1, memory_order_relaxed);
		end_lead(c, false);
	}
	flight_client_session_error(c); /* a failed Parse leaves no statement */
}

const struct relay_hooks flight_relay_hooks = {
	.name = "cache",
	.wants = hook_wants,
	.joined = hook_joined,
	.request = hook_request,
	.writable = flight_client_writable,
	.timer = flight_client_timer,
	.cancel = flight_client_cancel,
	.quiet = flight_client_quiet,
	.closed = flight_client_closed,
	.sql = flight_client_sent_sql,
	.parsed = flight_client_parsed,
	.bind = hook_bind,
	.close_stmt = flight_client_session_close,
	.opaque = flight_client_sent_opaque,
	.scanned = flight_client_scanned,
	.error = hook_error,
	.commit_wait = flight_client_commit_wait,
	.ready = flight_client_ready,
};
