/* Shared pools (see pool.h): the daemon's side of the pool core. Each (database, user) pool
 * owns a struct tp_pool (include/tuskpool.h) that does every piece of slot and queue logic:
 * the count of servers under size, the FIFO of waiting clients with their deadline, connect
 * backoff, the cap a 53300 at login sets, idle and lifetime expiry, min_size, the per-worker
 * idle lists and the one cross-thread hand-over. Here: the registry of pools, the policy
 * the core is configured with (sizes, database/user groups, pause, reconnect, reload,
 * dormant pools), the host the core runs on (worker inboxes, the clock, logs) and the glue
 * that makes server.c its connector.
 *
 * Locking: the registry lock guards the list of pools and groups and is held only to find or
 * add one; a pool's own lock guards only its passthrough credentials and pool_idle_timeout
 * bookkeeping; the core locks itself and calls back into this file with no lock held. */
#include "pool/pool.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <xxhash.h>

#include "net/net.h"
#include "proto/proto.h"
#include "pool/adaptive.h"
#include "pool/prepared.h"
#include "pool/probes.h"
#include "pool/server.h"
#include "pool/services.h"
#include "runtime/runtime.h"
#include "stats/stats.h"
#include "util/log.h"
#include "worker/worker.h"

/* All pools of one database, or of one user: a core group for max_db_connections and
 * max_user_connections. */
struct pool_group {
	struct pool_group *next; /* registry list, immutable once linked */
	struct pool_group *hnext; /* the registry's hash chain; under its lock */
	char name[CONFIG_NAME_MAX];
	bool is_user;
	bool paused; /* database groups: console PAUSE, so pools created later start paused; under the registry lock */
	bool disabled; /* database groups: console DISABLE, logins refused; under the registry lock */
	int limit;   /* the tightest max_db/user_connections of its pools' rules (0: none); under the registry lock */
	/* Client connections of this database (user) on every worker (pool_client_enter); an
	 * atomic of its own, no lock: each login's fetch-add gets a distinct previous count. */
	atomic_int clients;
	struct tp_group *tp;
};

struct pool {
	/* immutable after creation */
	struct pool_group *db_group, *user_group;
	char database[CONFIG_NAME_MAX];
	char user[CONFIG_NAME_MAX];
	struct runtime *rt;
	int index;
	struct pool *next; /* registry list; immutable once linked (pools are never unlinked) */
	struct pool *hnext; /* the registry's hash chain by (database, user); under its lock */
	struct stats_pool *stats; /* its own atomics; no lock */
	struct prep_refs *prep_refs; /* client names per prepared statement; its own lock */
	struct tp_pool *tp;  /* the core: locks itself */
	/* read-write-split only (else NULL): the standby side, a second core fed the service's
	 * standbys, for transactions router_split_decide proves read-only. Two cores rather than
	 * a role filter inside one: the core picks a backend per connect and per idle slot, and
	 * a second pool gives it a role-pure set, its own queue and idle lists with no new code
	 * in it; each side keeps its own FIFO, and size bounds each side. */
	struct tp_pool *tp_ro;

	/* The rule of the newest configuration generation this pool belongs to (see
	 * pool_registry_reload); every read is an implicit seq_cst load. */
	const struct config_pool_rule *_Atomic rule;
	/* Retired by a reload: no new client finds it (pool_get), its clients finish. */
	atomic_bool retired;
	/* Bumped by RECONNECT and KILL, for SHOW SERVERS' "stale" column (the core closes). */
	atomic_uint generation;
	/* The last backend__state probe fired said "down" (probes only). */
	atomic_bool down;
	/* A claim since the home worker last looked (pool_idle_timeout). */
	atomic_bool claimed;
	/* read-write-split: enum pool_standby_use, and when it was learned (ms of the loop clock) */
	atomic_int standby_use;
	atomic_llong standby_use_at;

	/* active_limit: adaptive, only ever touched by the home worker (pool_maintain): the
	 * controller, and the counters at the start of its window (adapt_at: 0 before one). */
	struct adaptive adapt;
	double adapt_at;
	uint64_t adapt_xacts, adapt_xact_us, adapt_wait_us;
	bool adapt_unreached;      /* a tick of this window found the bound not reached */
	uint64_t adapt_tick_xacts; /* at the last tick: has any transaction ended since? */
	bool adapt_tick_waiting;   /* clients waited at the last tick */

	pthread_mutex_t lock; /* protects everything below */
	/* Passthrough pools (no server_password): the credentials of the last login a client's
	 * secret carried, so that min_size servers can be opened with nobody waiting. Until
	 * there is one, a server that wants a password (28xxx) stops min_size connects. */
	struct server_cred cred;
	bool have_cred;
	bool needs_cred;
	/* Since when nobody uses it, as seen by its home worker; 0 while in use. */
	double unused_since;
	/* min_size connects failing: logged at most once a minute. */
	int refill_failures;
	int refill_unlogged;
	double refill_logged_at;
};

/* Connect failures in a row that open a backend's breaker (it is then dead: one probe at
 * POOL_BACKOFF_MAX, claims go to the other backends). */
#define POOL_BREAKER_FAILURES 5
#define POOL_BACKOFF_FIRST 0.25
#define POOL_BACKOFF_MAX 10.0
/* A pool whose min_size connects failed this many times in a row, with no client, sleeps. */
#define POOL_DORMANT_AFTER 5
#define POOL_LOG_EVERY 60.0 /* seconds between two "too many pools" lines */
#define POOL_CAP_KEEP 60.0  /* seconds a cap learned from 53300 is kept after the last one */
/* The core's deadline for a claim comes this long after pool_wait_timeout: the client's own
 * timer answers first, with its own message; the core's is the backstop. */
#define POOL_DEADLINE_SLACK 1.0
/* Pools that are not retired, at most. Each (database, user) a client names under a
 * wildcard rule makes a pool, before it authenticates, and pools are never freed (their
 * readers walk the list without a lock): this bounds what such clients can make tusk keep. */
#define POOL_MAX_POOLS 10000

#define POOL_HASH_SIZE 4096 /* a power of two */

static size_t name_hash(const char *a, const char *b)
{
	/* a's NUL is hashed too, so ("ab","c") and ("a","bc") part ways */
	uint64_t h = XXH3_64bits_withSeed(b, strlen(b), XXH3_64bits(a, strlen(a) + 1));
	return (size_t)(h & (POOL_HASH_SIZE - 1));
}

struct pool_registry {
	pthread_mutex_t lock; /* protects head, count, live, groups and pause_all */
	struct pool *head;
	int count;
	int live; /* pools not retired by a reload (bounded by POOL_MAX_POOLS) */
	double full_logged_at; /* the last "too many pools" line (rate limit) */
	struct pool_group *groups;
	/* Hash chains over the same pools and groups: a "*" rule can make POOL_MAX_POOLS pools,
	 * and a login must not walk them all to find its own. */
	struct pool *pool_hash[POOL_HASH_SIZE];
	struct pool_group *group_hash[POOL_HASH_SIZE];
	bool pause_all; /* console PAUSE without a database */
	/* pool_registry_free: no worker runs any more, the core's posts run inline. */
	atomic_bool stopped;
};

/* Each core of a pool: p->tp, then the split's standby side when there is one. */
#define FOR_CORES(p, t) for (struct tp_pool *t = (p)->tp, *t##_next_ = (p)->tp_ro; t; t = t##_next_, t##_next_ = NULL)

/* A clock for the core: the coarse one costs no system call (vDSO) and its few milliseconds
 * of resolution are enough for deadlines, idle times and the pass-over age. */
static double coarse_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the host the core runs on ---- */

static double host_now(void *host)
{
	(void)host;
	return coarse_now();
}

static void host_post(void *host, int thread, void (*fn)(void *arg), void *arg)
{
	struct runtime *rt = host;
	if (atomic_load_explicit(&rt->pools->stopped, memory_order_acquire)) {
		fn(arg); /* shutting down: no loop runs any more (pool_registry_free) */
		return;
	}
	struct worker_msg *m;
	/* The core counts every post and must see each run: wait for memory rather than drop. */
	while (!(m = worker_msg_new())) {
		log_warn(NULL, NULL, "out of memory posting to worker %d; retrying", thread);
		struct timespec ts = { 0, 10 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	m->call = fn; /* the worker runs fn(arg) */
	m->arg = arg;
	worker_post(rt->workers[thread], m);
}

/* The daemon words its own lines about its pools (server.c per connection, this file per
 * pool, rate-limited where a failure repeats): the core's go to the debug level. */
static void host_log(void *host, enum tp_log_level level, const char *msg)
{
	(void)host;
	(void)level;
	log_debug(NULL, NULL, "%s", msg);
}

static const struct tp_host_ops host_ops = { .now = host_now, .post = host_post, .log = host_log };

/* ---- the connector: server.c's PostgreSQL connections as the core's slots ---- */

static struct pool_waiter *waiter_of(struct tp_claim *c)
{
	return (struct pool_waiter *)((char *)c - offsetof(struct pool_waiter, claim));
}

static bool login_class(const uint8_t *errmsg, size_t errlen, const char *cls)
{
	struct proto_error_fields f = { 0 };
	return errmsg && errlen > PROTO_HDR_LEN &&
	       proto_parse_error(errmsg + PROTO_HDR_LEN, errlen - PROTO_HDR_LEN, &f) == 0 && f.sqlstate &&
	       strncmp(f.sqlstate, cls, strlen(cls)) == 0;
}

/* A backend__state probe when the core's view changed (probes only: no behaviour). */
static void note_backend_state(struct pool *p, bool full, const char *why)
{
	struct tp_stats st;
	tp_pool_stats(p->tp, &st);
	if (full) {
		TUSK_PROBE4(backend__state, p->database, p->user, TUSK_BACKEND_FULL, why ? why : "53300");
		return;
	}
	if (st.down != atomic_exchange(&p->down, st.down))
		TUSK_PROBE4(backend__state, p->database, p->user, st.down ? TUSK_BACKEND_DOWN : TUSK_BACKEND_UP,
			    why ? why : "");
}

/* The core put a server on its worker's idle list: parked on that loop, watched for reads
 * (a parked server that closes or talks is closed at once). A server handed straight to a
 * waiter is not parked: no watcher change on a busy pool's hand-off. */
static void conn_park(void *ctx, struct tp_slot *slot)
{
	struct server *s = tp_slot_conn(slot);
	(void)ctx;
	server_park(s);
	s->idle_worker = s->worker->index;
}

/* The core's limits from the rule, min_size on or off (off while a passthrough pool has no
 * credentials to open servers with). */
static void set_min_size(struct pool *p, bool on)
{
	const struct config_pool_rule *rule = p->rule;
	int size = rule->size > 0 ? rule->size : 1;
	int min = !on ? 0 : rule->min_size < size ? rule->min_size : size;
	FOR_CORES(p, t)
		if (tp_pool_resize(t, size, min) < 0)
			log_warn(NULL, NULL, "pool %s/%s: limits not applied", p->database, p->user);
}

/* A min_size connect failed (server.c closed it quietly; the core backs off): log at most a
 * line a minute, and the core's decision to put the pool to sleep. */
static void refill_failed(struct pool *p, double now, const char *reason)
{
	struct tp_stats st;
	tp_pool_stats(p->tp, &st);
	pthread_mutex_lock(&p->lock);
	int failures = ++p->refill_failures;
	int unlogged = p->refill_unlogged;
	bool log_it = failures == 1 || now - p->refill_logged_at >= POOL_LOG_EVERY;
	if (log_it) {
		p->refill_logged_at = now;
		p->refill_unlogged = 0;
	} else {
		p->refill_unlogged++;
	}
	/* Nobody uses it (no client in any state, none queued): stop trying until one comes
	 * (the core wakes it at the next claim). */
	bool slept = failures >= POOL_DORMANT_AFTER && !st.dormant && st.waiting == 0 &&
		     stats_pool_clients(p->stats) == 0 && !atomic_load(&p->retired);
	pthread_mutex_unlock(&p->lock);
	if (slept)
		FOR_CORES(p, t)
			tp_pool_sleep(t);
	if (log_it)
		log_warn(NULL, NULL, "pool %s/%s: min_size connect failed (%d in a row, %d not logged since the last line): %s",
			 p->database, p->user, failures, unlogged, reason ? reason : "unknown error");
	if (slept)
		log_warn(NULL, NULL, "pool %s/%s retired: no clients and its last %d logins failed (%s); it keeps no servers until a client comes",
			 p->database, p->user, failures, reason ? reason : "unknown error");
}

/* The role a server reported at login: in_hot_standby (PostgreSQL 14+); without it, unknown. */
static enum services_role server_role(const struct server *s)
{
	for (int i = 0; i < s->nparams; i++)
		if (strcmp(s->params[i].name, "in_hot_standby") == 0)
			return strcmp(s->params[i].value, "on") == 0 ? SERVICES_ROLE_STANDBY : SERVICES_ROLE_PRIMARY;
	return SERVICES_ROLE_UNKNOWN;
}

/* The role a core of p wants: the rule's, or for read-write-split a primary on p->tp and a
 * standby on p->tp_ro. */
static int pool_core_target(const struct pool *p, const struct tp_pool *tp)
{
	int target = pool_rule(p)->target_session_attrs;
	if (target != CONFIG_TARGET_READ_WRITE_SPLIT)
		return target;
	return tp == p->tp_ro ? CONFIG_TARGET_STANDBY : CONFIG_TARGET_PRIMARY;
}

/* Note a new server's role for its service, and whether it fits the pool's
 * target_session_attrs (else why not, in reason). */
static bool role_fits(struct pool *p, struct server *s, char *reason, size_t cap)
{
	const struct tp_backend_addr *be = tp_slot_backend(s->slot);
	const struct config_pool_rule *rule = pool_rule(p);
	enum services_role role = server_role(s);
	if (role != SERVICES_ROLE_UNKNOWN)
		services_note_role(p->rt->services, rule->service, be, role);
	int target = pool_core_target(p, tp_slot_pool(s->slot));
	/* The same rule as the set the pool is fed: a primary offered only for its role re-check
	 * must not serve a prefer-standby pool while a standby is known. */
	if (target == CONFIG_TARGET_PREFER_STANDBY && role == SERVICES_ROLE_PRIMARY &&
	    services_has_standby(p->rt->services, rule->service))
		target = CONFIG_TARGET_STANDBY;
	if (services_role_fits(target, role))
		return true;
	snprintf(reason, cap, "%s:%u is a %s (target_session_attrs %s)", be->name, be->port, services_role_name(role),
		 config_target_name(target));
	return false;
}

void pool_server_param(struct server *s, const char *name, const char *value)
{
	if (!s->pool || !s->slot || strcmp(name, "in_hot_standby") != 0)
		return;
	/* A promotion (or a demotion) seen on a live server: the service's pools follow. */
	services_note_role(s->pool->rt->services, pool_rule(s->pool)->service, tp_slot_backend(s->slot),
			   strcmp(value, "on") == 0 ? SERVICES_ROLE_STANDBY : SERVICES_ROLE_PRIMARY);
}

/* Report a connect's outcome to the core: the claims it answers on this thread get it as
 * their tp_claim.connect, with the server's ErrorResponse (errmsg, a whole message, or NULL)
 * as its detail, and are answered inline (on_claim). */
static void report_connect(struct tp_slot *slot, int err, const char *reason, const uint8_t *errmsg, size_t errlen)
{
	struct tp_connect_result r = { .err = err, .reason = reason, .detail = errmsg, .detail_len = errlen };
	tp_connect_report(slot, &r);
}

/* server.c's done for a server the core asked for (conn_connect). */
static void on_connected(struct server *s, void *arg, int err, const char *reason, const uint8_t *errmsg,
			 size_t errlen)
{
	struct tp_slot *slot = s->slot;
	struct pool *p = s->pool;
	(void)arg;
	s->connect_pending = false;
	char role_reason[TP_NAME_MAX + 96];
	if (err == 0 && !role_fits(p, s, role_reason, sizeof role_reason)) {
		/* Logged in, but to a server of the wrong role: this backend is out of the pool's set
		 * now (services_note_role re-fed it); the claim tries another, or waits for the set
		 * to change (a switchover: the new primary's verdict is re-offered within a second).
		 * A read-write-split read fails over to the primary instead of waiting. */
		s->close_reason = role_reason; /* conn_close runs inside tp_connect_done */
		report_connect(slot, tp_slot_pool(slot) == p->tp_ro ? -ECONNREFUSED : -ESTALE, role_reason, NULL,
			       0); /* closes s through conn_close */
		return;
	}
	if (err == 0) {
		if (s->cred.kind != SERVER_CRED_NONE)
			pool_remember_cred(p, &s->cred);
		if (!tp_slot_claim(slot)) {
			pthread_mutex_lock(&p->lock);
			p->refill_failures = 0;
			pthread_mutex_unlock(&p->lock);
		}
		s->idle_since = ev_now(s->worker->loop);
		services_note_up(p->rt->services, pool_rule(p)->service, tp_slot_backend(slot));
		report_connect(slot, 0, NULL, NULL, 0);
		note_backend_state(p, false, NULL);
		return;
	}
	/* 53300: up but full (no backoff; the pool is capped). A login refused for what it
	 * sent (28xxx, 3D000): nothing to back off from. Else the backend is unavailable. */
	bool full = server_error_is_no_slot(errmsg, errlen);
	int code = full ? -EUSERS : server_error_backoff_worthy(errmsg, errlen) ? -ECONNREFUSED : -EPERM;
	if (!tp_slot_claim(slot) && login_class(errmsg, errlen, "28") && !pool_rule(p)->server_password) {
		/* A min_size login without a client's credentials will not pass by retrying: no
		 * min_size until a client's login brings some (pool_remember_cred). */
		pthread_mutex_lock(&p->lock);
		bool stop = !p->have_cred && !p->needs_cred;
		p->needs_cred = !p->have_cred;
		pthread_mutex_unlock(&p->lock);
		if (stop)
			set_min_size(p, false);
	}
	/* Down: pools that want a primary look among the others before this claim moves on. */
	if (code == -ECONNREFUSED)
		services_note_down(p->rt->services, pool_rule(p)->service, tp_slot_backend(slot));
	bool refill = !tp_slot_claim(slot);
	struct tp_stats before, after;
	tp_pool_stats(p->tp, &before);
	/* server.c closes s after this returns: it is no slot's any more. */
	s->slot = NULL;
	tp_slot_set_conn(slot, NULL);
	report_connect(slot, code, reason, errmsg, errlen);
	note_backend_state(p, full, reason);
	tp_pool_stats(p->tp, &after);
	if (full && after.cap >= 0 && (before.cap < 0 || after.cap < before.cap))
		/* One line each time the cap goes down: at most size lines per POOL_CAP_KEEP. */
		log_info(NULL, NULL,
			 "pool %s/%s: the server has no connection for another login (%s): at most %d server%s for %.0fs, clients wait for them",
			 p->database, p->user, reason ? reason : "53300", after.cap, after.cap == 1 ? "" : "s", POOL_CAP_KEEP);
	if (refill)
		refill_failed(p, ev_now(s->worker->loop), reason);
}

static void conn_connect(void *ctx, struct tp_slot *slot, const struct tp_backend_addr *be)
{
	struct pool *p = ctx;
	struct worker *w = p->rt->workers[tp_slot_thread(slot)];
	struct tp_claim *c = tp_slot_claim(slot);
	struct pool_waiter *wt = c ? waiter_of(c) : NULL;
	struct server_cred cred;
	struct server *s;
	struct net_addr addr;

	/* The resolver hands out numeric addresses only: no lookup on this loop. */
	if (net_addr_numeric(be->name, be->port, &addr) < 0) {
		tp_connect_done(slot, -ECONNREFUSED, "the backend's address is not numeric");
		return;
	}
	if (wt) {
		wt->connecting = true;
		s = server_connect(p, w, &addr, wt->cred, on_connected, NULL);
	} else {
		bool with_cred = false, stop = false;
		pthread_mutex_lock(&p->lock);
		if (p->have_cred && !pool_rule(p)->server_password) {
			cred = p->cred;
			with_cred = true;
		}
		stop = p->needs_cred;
		pthread_mutex_unlock(&p->lock);
		if (stop) {
			tp_connect_done(slot, -EPERM, "a min_size login needs a client's credentials first (passthrough)");
			return;
		}
		s = server_connect_refill(p, w, &addr, with_cred ? &cred : NULL, on_connected);
		OPENSSL_cleanse(&cred, sizeof cred);
	}
	if (!s) {
		tp_connect_done(slot, -ENOMEM, "out of memory connecting to server");
		return;
	}
	s->slot = slot;
	s->connect_pending = true;
	tp_slot_set_conn(slot, s);
}

static const char *close_text(enum tp_close_reason why)
{
	switch (why) {
	case TP_CLOSE_IDLE: return "idle timeout";
	case TP_CLOSE_LIFETIME: return "server_lifetime reached";
	case TP_CLOSE_HEALTH: return "closed by the server while idle";
	case TP_CLOSE_REMOVED: return "its backend was removed";
	case TP_CLOSE_STOPPED: return "tusk is shutting down";
	case TP_CLOSE_RECONNECT: return "closed for RECONNECT or KILL";
	case TP_CLOSE_RETIRED: return "its pool rule was removed or changed by a reload";
	case TP_CLOSE_DORMANT: return "its pool was retired (no clients)";
	case TP_CLOSE_GROUP: return "making room under max_db_connections / max_user_connections";
	case TP_CLOSE_SHRUNK: return "pool size was reduced by a reload";
	case TP_CLOSE_BROKEN:
	case TP_CLOSE_CONNECT:
	case TP_CLOSE__COUNT: break;
	}
	return "closed";
}

static void conn_close(void *ctx, struct tp_slot *slot, enum tp_close_reason why)
{
	struct server *s = tp_slot_conn(slot);
	(void)ctx;
	if (!s)
		return; /* its connect failed: server.c closes it */
	tp_slot_set_conn(slot, NULL);
	s->slot = NULL;
	s->idle_worker = -1;
	server_close_keep_slot(s, s->close_reason ? s->close_reason : close_text(why));
}

/* The hand-over: detached on the owner, attached on the claimer (watchers stopped). */
static void conn_detach(void *ctx, struct tp_slot *slot)
{
	(void)ctx;
	server_detach(tp_slot_conn(slot));
}

static void conn_attach(void *ctx, struct tp_slot *slot, int thread)
{
	struct pool *p = ctx;
	struct server *s = tp_slot_conn(slot);
	server_attach(s, p->rt->workers[thread]);
	s->moved = true;
}

/* The health check's end (server.c's op done). A failure that closed the connection comes
 * through pool_close_server instead: finish() closes it after this returns. */
static void on_checked(struct server *s, void *arg, int err, const char *reason, const uint8_t *errmsg,
		       size_t errlen)
{
	(void)arg;
	(void)reason;
	(void)errmsg;
	(void)errlen;
	if (err < 0 && !s->ok_after_error)
		return;
	s->checking = false;
	if (err < 0 || s->tx_status != 'I')
		s->close_reason = "failed its health check (server_check_delay, server_check_query)";
	tp_check_done(s->slot, err == 0 && s->tx_status == 'I');
}

/* Seconds an idle server waits for its check; 0 (none) with server_check_delay 0 or an empty
 * server_check_query. */
static double check_after(const struct tusk_config *cfg)
{
	if (cfg->server_check_query && cfg->server_check_query[0] == '\0')
		return 0;
	return (double)cfg->server_check_delay_ms / 1000.0;
}

/* An idle server unused for server_check_delay: a server that died silently (a host gone,
 * a firewall that dropped the flow) shows nothing to the idle watcher's peek; one round
 * trip of server_check_query shows it before a client gets it. An empty server_check_query
 * (PgBouncer's way to turn the check off) sets no check at all (check_after()). */
static void conn_check(void *ctx, struct tp_slot *slot)
{
	struct pool *p = ctx;
	struct server *s = tp_slot_conn(slot);
	const char *const query[] = { p->rt->cfg->server_check_query && p->rt->cfg->server_check_query[0]
					      ? p->rt->cfg->server_check_query
					      : "SELECT 1" };
	s->idle_worker = -1;
	s->checking = true;
	server_unpark(s);
	server_run_queries(s, query, 1, (double)p->rt->cfg->server_connect_timeout_ms / 1000.0, on_checked, NULL);
}

static const struct tp_connector_ops conn_ops = {
	.connect = conn_connect, .close = conn_close, .detach = conn_detach, .attach = conn_attach,
	.park = conn_park, .check = conn_check,
};

/* ---- claims ---- */

static void claim_core(struct pool *p, struct pool_waiter *w);

/* The answer for w, on its worker. */
static void deliver(struct pool_waiter *w, struct server *s, int err, const char *reason, const uint8_t *errmsg,
		    size_t errlen)
{
	struct pool *p = w->claim.arg;
	w->connecting = false;
	if (s) {
		bool moved = s->moved;
		s->moved = false;
		s->idle_worker = -1;
		server_unpark(s);
		/* One that comes straight from a release was fine a moment ago; one that sat parked
		 * on another loop (watched there until it left) is peeked at; one found dead while
		 * in transit was marked. Either way: close it and claim again. */
		if (s->doomed || (moved && ev_now(w->worker->loop) - s->idle_since > SERVER_PEEK_AFTER &&
				  !net_idle_alive(s->fd))) {
			server_close(s, "closed by the server while idle");
			claim_core(p, w);
			return;
		}
	}
	TUSK_PROBE5(claim__done, p->database, p->user, w->worker->index,
		    (long long)((coarse_now() - w->queued_at) * 1e6),
		    s ? TUSK_CLAIM_SERVER : err == -EHOSTUNREACH ? TUSK_CLAIM_DOWN : TUSK_CLAIM_GAVE_UP);
	w->answer(w, s, err, reason, errmsg, errlen);
}

/* on_claim's message, on the claimer's worker: arg the waiter, arg2 the server (or NULL),
 * num the error. */
static void on_claim_message(struct worker *wk, struct worker_msg *m)
{
	(void)wk;
	deliver(m->arg, m->arg2, m->num, NULL, NULL, 0);
}

/* The core's callback for a queued claim, on the claimer's worker: inline while a connect
 * reports (as server.c's own callback always ran), else on the next turn of the loop, so
 * that a server released inside a client's teardown never re-enters another client. */
static void on_claim(struct tp_claim *c, struct tp_slot *slot, int err)
{
	struct pool_waiter *w = waiter_of(c);
	struct server *s = slot ? tp_slot_conn(slot) : NULL;
	if (c->connect) {
		/* Answered by a connect's report on this thread: inline (as server.c's own callback
		 * always ran), with the server's ErrorResponse, which lives only that long. */
		deliver(w, s, err, c->connect->reason, c->connect->detail, c->connect->detail_len);
		return;
	}
	struct worker_msg *m = worker_msg_new();
	if (!m) {
		deliver(w, s, err, NULL, NULL, 0); /* out of memory: inline rather than lose it */
		return;
	}
	m->fn = on_claim_message;
	m->arg = w;
	m->arg2 = s;
	m->num = err;
	worker_post_local(w->worker, m);
}

static double deadline_from(const struct pool *p, double now)
{
	return now + (double)p->rt->cfg->pool_wait_timeout_ms / 1000.0 + POOL_DEADLINE_SLACK;
}

static double wait_deadline(const struct pool *p)
{
	return deadline_from(p, coarse_now());
}

/* The core w claims from: the split's standby side when w asks for it and p has one. */
static struct tp_pool *waiter_core(const struct pool *p, const struct pool_waiter *w)
{
	return w->standby && p->tp_ro ? p->tp_ro : p->tp;
}

bool pool_is_split(const struct pool *p)
{
	return p->tp_ro != NULL;
}

enum pool_standby_use pool_standby_use(const struct pool *p, double now)
{
	int use = atomic_load(&p->standby_use);
	if (use == POOL_STANDBY_UNKNOWN || now * 1000.0 - (double)atomic_load(&p->standby_use_at) > POOL_STANDBY_RECHECK_S * 1000.0)
		return POOL_STANDBY_UNKNOWN;
	return (enum pool_standby_use)use;
}

void pool_set_standby_use(struct pool *p, enum pool_standby_use use, double now)
{
	atomic_store(&p->standby_use_at, (long long)(now * 1000.0));
	atomic_store(&p->standby_use, (int)use);
}

/* Claim again for w after a server it was given turned out dead: the answer comes as any. */
static void claim_core(struct pool *p, struct pool_waiter *w)
{
	struct tp_slot *slot = NULL;
	int rc = tp_claim(waiter_core(p, w), &w->claim, w->worker->index, wait_deadline(p), &slot);
	if (rc == 0) {
		struct server *s = tp_slot_conn(slot);
		s->moved = false;
		deliver(w, s, 0, NULL, NULL, 0);
	} else if (rc != -EINPROGRESS) {
		w->answer(w, NULL, rc, NULL, NULL, 0);
	}
}

enum pool_claim_result pool_claim(struct pool *p, struct pool_waiter *w, double now, struct server **out)
{
	struct tp_slot *slot = NULL;
	int wi = w->worker->index;
	(void)now;

	TUSK_PROBE3(claim__start, p->database, p->user, wi);
	/* Read first: on a busy pool the flag is set already and its cache line stays shared. */
	if (!atomic_load_explicit(&p->claimed, memory_order_relaxed))
		atomic_store_explicit(&p->claimed, true, memory_order_relaxed);
	w->claim.done = on_claim;
	w->claim.arg = p;
	w->claim.key = w->owner;
	w->connecting = false;
	/* One clock read for the probe's start, the deadline and the core (each read ~30
	 * instructions, three per claim before). */
	double cnow = coarse_now();
	w->queued_at = cnow;
	int rc = tp_claim_at(waiter_core(p, w), &w->claim, wi, cnow, deadline_from(p, cnow), &slot);
	if (rc == 0) {
		struct server *s = tp_slot_conn(slot);
		s->idle_worker = -1;
		TUSK_PROBE5(claim__done, p->database, p->user, wi, 0LL, TUSK_CLAIM_SERVER);
		/* Parked on this loop and watched: had it closed or spoken, it would be gone already. */
		*out = s;
		return POOL_CLAIM_SERVER;
	}
	if (rc == -EINPROGRESS)
		return POOL_CLAIM_QUEUED;
	TUSK_PROBE5(claim__done, p->database, p->user, wi, 0LL, TUSK_CLAIM_DOWN);
	return POOL_CLAIM_DOWN;
}

bool pool_leave_queue(struct pool *p, struct pool_waiter *w)
{
	bool out = tp_claim_cancel(&w->claim);
	if (out)
		TUSK_PROBE5(claim__done, p->database, p->user, w->worker->index,
			    (long long)((coarse_now() - w->queued_at) * 1e6), TUSK_CLAIM_GAVE_UP);
	return out;
}

bool pool_backend(struct pool *p, int i, struct tp_backend_addr *addr, enum tp_backend_state *state, int *slots,
		  char *err, size_t errcap)
{
	/* The primary side's backends, then the standby side's (read-write-split). */
	struct tp_stats st;
	tp_pool_stats(p->tp, &st);
	struct tp_pool *tp = p->tp;
	if (i >= st.backends && p->tp_ro) {
		i -= st.backends;
		tp = p->tp_ro;
	}
	return tp_pool_backend(tp, i, addr, state, slots) && tp_pool_backend_error(tp, i, err, errcap);
}

bool pool_retired(const struct pool *p)
{
	return atomic_load(&p->retired);
}

bool pool_server_must_close(const struct server *s)
{
	return s->slot && tp_slot_must_close(s->slot);
}

void pool_down_reason(struct pool *p, double now, char *out, size_t cap)
{
	(void)now;
	/* Name the service, then each backend that is not up and what it answered last. */
	int n = snprintf(out, cap, "service %s: ", pool_rule(p)->service->name);
	if (n < 0 || (size_t)n >= cap)
		return;
	tp_pool_last_error(p->tp, out + n, cap - (size_t)n);
	if (!out[n])
		snprintf(out + n, cap - (size_t)n, "connects are backed off");
}

bool pool_wait_reason(struct pool *p, char *out, size_t cap)
{
	struct tp_stats st;
	char e[8];
	bool failing = false;
	tp_pool_stats(p->tp, &st);
	if (st.slots > 0)
		return false;
	/* A backend's own error is cleared by its next successful connect; the pool's last one
	 * is not, and could be an hour old. */
	for (int i = 0; !failing && tp_pool_backend_error(p->tp, i, e, sizeof e); i++)
		failing = e[0] != '\0';
	if (!failing)
		return false;
	pool_down_reason(p, 0, out, cap);
	return true;
}

void pool_put_idle(struct pool *p, struct server *s)
{
	TUSK_PROBE4(server__released, s->id, p->database, p->user, s->worker->index);
	s->idle_since = ev_now(s->worker->loop);
	s->resting = false; /* the core forgets it with the release */
	tp_release(s->slot, true);
}

void pool_server_rest(struct server *s, bool resting)
{
	/* Told only while the pool has the bound (a lock per rest otherwise for nothing); an
	 * "again in use" goes whenever the core was told it rests, even if a reload switched
	 * the bound off meanwhile. */
	if (!s->slot || !s->pool)
		return;
	if (resting && s->pool->rule->active_limit != CONFIG_ACTIVE_LIMIT_ADAPTIVE)
		return;
	s->resting = resting;
	tp_slot_rest(s->slot, resting);
}

void pool_server_moved(struct server *s)
{
	if (s->slot && s->worker)
		tp_slot_moved(s->slot, s->worker->index);
}

void pool_close_server(struct server *s, const char *reason)
{
	struct tp_slot *slot = s->slot;
	s->close_reason = reason;
	if (s->checking) {
		/* Its health check failed (a write, the timeout, a protocol fault): the core
		 * closes it through conn_close. */
		s->checking = false;
		tp_check_done(slot, false);
		return;
	}
	if (s->connect_pending) {
		/* Its connect never reported (shutdown, a console KILL): report it failed now. */
		s->connect_pending = false;
		s->slot = NULL;
		tp_slot_set_conn(slot, NULL);
		server_close_keep_slot(s, reason);
		/* Its waiter (if any) hears of it now, not through a message: at shutdown no
		 * loop turn is left to run one. */
		report_connect(slot, -ECONNABORTED, reason, NULL, 0);
		return;
	}
	if (s->idle_worker >= 0) {
		if (tp_idle_broken(slot))
			return; /* closed through conn_close */
		/* Already handed to a claim, on its way: the claimer closes it and claims again. */
		s->close_reason = NULL;
		s->doomed = true;
		server_detach(s);
		return;
	}
	s->resting = false;
	tp_release(slot, false);
}

void pool_remember_cred(struct pool *p, const struct server_cred *cred)
{
	pthread_mutex_lock(&p->lock);
	p->cred = *cred;
	p->have_cred = true;
	bool resume = p->needs_cred;
	p->needs_cred = false;
	pthread_mutex_unlock(&p->lock);
	if (resume)
		set_min_size(p, true);
}

/* ---- the registry ---- */

static struct pool_group *lookup_group(struct pool_registry *reg, const char *name, bool is_user)
{
	size_t h = name_hash(is_user ? "u" : "d", name);
	for (struct pool_group *g = reg->group_hash[h]; g; g = g->hnext)
		if (g->is_user == is_user && strcmp(g->name, name) == 0)
			return g;
	return NULL;
}

static struct pool_group *find_group(struct pool_registry *reg, const char *name, bool is_user)
{
	size_t h = name_hash(is_user ? "u" : "d", name);
	struct pool_group *g = lookup_group(reg, name, is_user);
	if (g)
		return g;
	g = calloc(1, sizeof *g);
	if (!g)
		return NULL;
	g->tp = tp_group_new(0);
	if (!g->tp) {
		free(g);
		return NULL;
	}
	snprintf(g->name, sizeof g->name, "%s", name);
	g->is_user = is_user;
	atomic_init(&g->clients, 0);
	g->next = reg->groups;
	reg->groups = g;
	g->hnext = reg->group_hash[h];
	reg->group_hash[h] = g;
	return g;
}

static struct pool *registry_head(struct pool_registry *reg)
{
	pthread_mutex_lock(&reg->lock);
	struct pool *head = reg->head;
	pthread_mutex_unlock(&reg->lock);
	return head;
}

struct pool_registry *pool_registry_new(void)
{
	struct pool_registry *reg = calloc(1, sizeof *reg);
	if (reg) {
		pthread_mutex_init(&reg->lock, NULL);
		atomic_init(&reg->stopped, false);
	}
	return reg;
}

void pool_registry_free(struct pool_registry *reg)
{
	if (!reg)
		return;
	/* The workers closed every server before this; what the core still posts runs here. */
	atomic_store_explicit(&reg->stopped, true, memory_order_release);
	struct pool *p = reg->head;
	while (p) {
		struct pool *next = p->next;
		FOR_CORES(p, t) {
			tp_pool_stop(t);
			if (tp_pool_destroy(t) < 0)
				log_warn(NULL, NULL, "pool %s/%s: servers left at exit; not freed", p->database, p->user);
		}
		pthread_mutex_destroy(&p->lock);
		OPENSSL_cleanse(&p->cred, sizeof p->cred);
		stats_pool_free(p->stats);
		prep_refs_free(p->prep_refs);
		free(p);
		p = next;
	}
	while (reg->groups) {
		struct pool_group *g = reg->groups;
		reg->groups = g->next;
		tp_group_free(g->tp);
		free(g);
	}
	pthread_mutex_destroy(&reg->lock);
	free(reg);
}

static void group_leave(struct pool_group *g)
{
	atomic_fetch_sub_explicit(&g->clients, 1, memory_order_relaxed);
}

/* Count one client in g unless that makes more than max (0: no limit). */
static bool group_enter(struct pool_group *g, int max, int *count)
{
	int before = atomic_fetch_add_explicit(&g->clients, 1, memory_order_relaxed);
	*count = before;
	if (max > 0 && before >= max) {
		group_leave(g);
		return false;
	}
	return true;
}

enum pool_client_entry pool_client_enter(struct pool *p, int db_max, int user_max, int *count)
{
	if (!group_enter(p->db_group, db_max, count))
		return POOL_CLIENT_DB_FULL;
	if (!group_enter(p->user_group, user_max, count)) {
		group_leave(p->db_group);
		return POOL_CLIENT_USER_FULL;
	}
	return POOL_CLIENT_IN;
}

int pool_name_clients(struct runtime *rt, const char *name, bool is_user)
{
	struct pool_registry *reg = rt->pools;
	pthread_mutex_lock(&reg->lock);
	const struct pool_group *g = lookup_group(reg, name, is_user);
	int n = g ? atomic_load_explicit(&g->clients, memory_order_relaxed) : 0;
	pthread_mutex_unlock(&reg->lock);
	return n;
}

void pool_client_leave(struct pool *p)
{
	group_leave(p->db_group);
	group_leave(p->user_group);
}

bool pool_registry_full(struct runtime *rt)
{
	struct pool_registry *reg = rt->pools;
	pthread_mutex_lock(&reg->lock);
	bool full = reg->live >= POOL_MAX_POOLS;
	pthread_mutex_unlock(&reg->lock);
	return full;
}

/* A database's (or user's) pools may come from several rules, each with its own
 * max_db_connections (max_user_connections): the tightest one set applies to all of them, so
 * a rule without one never lifts another's. Under the registry lock. */
static void tighten(struct pool_group *g, int limit)
{
	if (limit > 0 && (g->limit == 0 || limit < g->limit))
		g->limit = limit;
}

static void tighten_groups(struct pool *p, const struct config_pool_rule *rule)
{
	tighten(p->db_group, rule->max_db_connections);
	tighten(p->user_group, rule->max_user_connections);
}

static void apply_rule(struct pool *p, const struct config_pool_rule *rule)
{
	tighten_groups(p, rule);
	tp_group_set_limit(p->db_group->tp, p->db_group->limit);
	tp_group_set_limit(p->user_group->tp, p->user_group->limit);
}

/* After a reload: every group's limit again from the rules of its live pools (a limit
 * raised or removed is lifted). */
static void regroup(struct pool_registry *reg)
{
	pthread_mutex_lock(&reg->lock);
	for (struct pool_group *g = reg->groups; g; g = g->next)
		g->limit = 0;
	for (struct pool *p = reg->head; p; p = p->next) {
		if (atomic_load(&p->retired))
			continue;
		tighten_groups(p, atomic_load(&p->rule));
	}
	for (struct pool_group *g = reg->groups; g; g = g->next)
		tp_group_set_limit(g->tp, g->limit);
	pthread_mutex_unlock(&reg->lock);
}

static struct tp_pool *new_core(struct pool *p, const struct config_pool_rule *rule, bool standby)
{
	const struct tusk_config *cfg = p->rt->cfg;
	char name[2 * CONFIG_NAME_MAX + 16];
	snprintf(name, sizeof name, "%s/%s%s", p->database, p->user, standby ? " (standby)" : "");
	int size = rule->size > 0 ? rule->size : 1;
	struct tp_config tc = {
		.name = name,
		.nthreads = p->rt->nworkers,
		.max_slots = size,
		.min_slots = rule->min_size < size ? rule->min_size : size,
		.idle_timeout = (double)cfg->server_idle_timeout_ms / 1000.0,
		.lifetime = (double)config_server_lifetime(cfg, rule) / 1000.0,
		.check_after = check_after(cfg),
		.reserve_slots = config_reserve_pool_size(cfg, rule),
		.reserve_after = (double)cfg->reserve_pool_timeout_ms / 1000.0,
		.backoff_first = POOL_BACKOFF_FIRST,
		.backoff_max = POOL_BACKOFF_MAX,
		.max_per_backend = rule->service->max_per_host,
		/* After this many failed connects in a row a backend is dead: one probe at the
		 * longest backoff, claims go to the others. */
		.breaker_failures = POOL_BREAKER_FAILURES,
		.seed = (uint32_t)p->index * 2654435761u | 1u,
		/* One failure may be a blip (or the restart that just finished): the next client
		 * tries again at once. From the second on, clients fail fast while backed off. */
		.backoff_after = 2,
		.fail_fast = true,
		/* A connect logs in with its client's credentials and its failure is that client's. */
		.bind_connects = true,
		.home_thread = p->index % p->rt->nworkers,
		/* Dormancy is decided here (refill_failed), where the pool's clients are known. */
		.dormant_after = 0,
		.full_hold = POOL_CAP_KEEP,
		/* A server released on a worker goes preferably to a waiter on it: handing it to
		 * another thread costs a detach, a re-attach and a message, about as much as the
		 * transaction itself on a busy pool. The head is passed over only for claims made
		 * within 20 ms after it, 64 times at most: a bound on its extra wait, whatever
		 * the length of the queue. */
		.pass_over_max = 64,
		.pass_over_age = 0.02,
	};
	struct tp_pool *tp = tp_pool_new(&tc, &host_ops, p->rt, &conn_ops, p);
	if (!tp)
		return NULL;
	/* Its backends come from the service's resolver once the pool is linked (pool_get). */
	if (tp_pool_join(tp, p->db_group->tp) < 0 || tp_pool_join(tp, p->user_group->tp) < 0) {
		tp_pool_stop(tp);
		int rc = tp_pool_destroy(tp); /* nothing was connected: no slot, no post */
		(void)rc;
		return NULL;
	}
	return tp;
}

struct pool *pool_get(struct runtime *rt, const struct config_pool_rule *rule, const char *database,
		      const char *user)
{
	struct pool_registry *reg = rt->pools;
	struct pool *p;

	size_t h = name_hash(database, user);
	pthread_mutex_lock(&reg->lock);
	for (p = reg->pool_hash[h]; p; p = p->hnext)
		if (p->rule == rule && !atomic_load(&p->retired) && strcmp(p->database, database) == 0 && strcmp(p->user, user) == 0) {
			struct tp_stats st;
			tp_pool_stats(p->tp, &st);
			if (st.dormant)
				log_info(NULL, NULL, "pool %s/%s: a client is back, the pool works again", database, user);
			goto out;
		}
	if (reg->live >= POOL_MAX_POOLS) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		double now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
		if (now - reg->full_logged_at >= POOL_LOG_EVERY || reg->full_logged_at == 0) {
			reg->full_logged_at = now;
			log_warn(NULL, NULL, "no pool for %s/%s: %d pools exist already (the limit)", database, user,
				 POOL_MAX_POOLS);
		}
		p = NULL;
		goto out;
	}
	p = calloc(1, sizeof *p);
	if (!p)
		goto out;
	snprintf(p->database, sizeof p->database, "%s", database);
	snprintf(p->user, sizeof p->user, "%s", user);
	atomic_init(&p->rule, rule);
	/* A worker that matched its rule in the generation a reload just replaced: this pool
	 * serves that client, then retires. Checked under the registry lock, which the reload's
	 * walk also takes after publishing, so no pool escapes both the check and the walk. */
	const struct tusk_config *cfg = rt->cfg;
	atomic_init(&p->retired, rule < cfg->pools || rule >= cfg->pools + cfg->npools);
	atomic_init(&p->generation, 0);
	atomic_init(&p->down, false);
	atomic_init(&p->claimed, false);
	p->rt = rt;
	p->index = reg->count;
	p->db_group = find_group(reg, database, false);
	p->user_group = find_group(reg, user, true);
	p->stats = stats_pool_new();
	p->prep_refs = prep_refs_new();
	if (p->db_group && p->user_group) {
		apply_rule(p, rule);
		p->tp = new_core(p, rule, false);
		if (p->tp && rule->target_session_attrs == CONFIG_TARGET_READ_WRITE_SPLIT)
			p->tp_ro = new_core(p, rule, true);
	}
	if (!p->tp || !p->stats || !p->prep_refs || (rule->target_session_attrs == CONFIG_TARGET_READ_WRITE_SPLIT && !p->tp_ro)) {
		FOR_CORES(p, t) {
			tp_pool_stop(t);
			int rc = tp_pool_destroy(t);
			(void)rc;
		}
		prep_refs_free(p->prep_refs);
		stats_pool_free(p->stats);
		free(p);
		p = NULL;
		goto out;
	}
	reg->count++;
	if (atomic_load(&p->retired)) {
		FOR_CORES(p, t)
			tp_pool_retire(t);
	} else {
		reg->live++;
	}
	if (reg->pause_all || p->db_group->paused)
		FOR_CORES(p, t)
			tp_pool_pause(t);
	pthread_mutex_init(&p->lock, NULL);
	p->next = reg->head;
	reg->head = p;
	p->hnext = reg->pool_hash[h];
	reg->pool_hash[h] = p;
	/* The service's current backends now, each change later. Until the first answer claims
	 * queue (within pool_wait_timeout). */
	FOR_CORES(p, t)
		if (services_subscribe(rt->services, rule->service, t, pool_core_target(p, t)) < 0)
			log_warn(NULL, NULL, "pool %s/%s: out of memory subscribing to service %s: it gets no backends",
				 database, user, rule->service->name);
	log_info(NULL, NULL, "pool %s/%s created (rule at line %d, mode %s, size %d)", database, user,
		 rule->line, config_pool_mode_name(rule->mode), rule->size);
out:
	pthread_mutex_unlock(&reg->lock);
	return p;
}

const struct config_pool_rule *pool_rule(const struct pool *p) { return p->rule; }
const char *pool_database(const struct pool *p) { return p->database; }
const char *pool_user(const struct pool *p) { return p->user; }
struct stats_pool *pool_stats(const struct pool *p) { return p->stats; }
struct prep_refs *pool_prep_refs(const struct pool *p) { return p->prep_refs; }

void pool_snapshot(struct pool *p, struct pool_gauges *out)
{
	struct tp_stats st;
	tp_pool_stats(p->tp, &st);
	out->slots = st.slots;
	out->idle = st.idle;
	out->waiters = st.waiting;
	out->down = st.down;
	out->paused = st.paused;
	out->stale = st.stale;
	out->active_max = st.active_max;
	if (p->tp_ro) {
		/* The split's standby side counts in the same (database, user) row. */
		tp_pool_stats(p->tp_ro, &st);
		out->slots += st.slots;
		out->idle += st.idle;
		out->waiters += st.waiting;
		out->stale += st.stale;
	}
}

void pool_foreach(struct runtime *rt, void (*cb)(struct pool *p, void *arg), void *arg)
{
	/* Each next was written before its pool was published under the registry lock. */
	for (struct pool *p = registry_head(rt->pools); p; p = p->next)
		cb(p, arg);
}

void pool_stats_snapshot(struct pool *p, struct stats_pool_snapshot *out)
{
	struct pool_gauges g;

	memset(out, 0, sizeof *out);
	out->database = pool_database(p);
	out->user = pool_user(p);
	out->mode = config_pool_mode_name(pool_rule(p)->mode);
	out->size = pool_rule(p)->size;
	stats_pool_snapshot_read(pool_stats(p), out);
	pool_snapshot(p, &g);
	out->sv_idle = g.idle;
	/* Slots also cover connects and hand-overs in flight; what remains is in use. */
	out->sv_active = g.slots - g.idle - out->sv_connecting;
	if (out->sv_active < 0)
		out->sv_active = 0;
	out->waiters = g.waiters;
	out->down = g.down;
	out->active_limit = g.active_max > 0 && g.active_max < out->size ? g.active_max : out->size;
}

struct snapshot_walk {
	void (*cb)(const struct stats_pool_snapshot *snap, void *arg);
	void *arg;
};

static void snapshot_one(struct pool *p, void *arg)
{
	struct snapshot_walk *walk = arg;
	struct stats_pool_snapshot snap;
	pool_stats_snapshot(p, &snap);
	walk->cb(&snap, walk->arg);
}

void pool_foreach_snapshot(struct runtime *rt, void (*cb)(const struct stats_pool_snapshot *snap, void *arg),
			   void *arg)
{
	struct snapshot_walk walk = { cb, arg };
	pool_foreach(rt, snapshot_one, &walk);
}

static void total_one(const struct stats_pool_snapshot *snap, void *arg)
{
	stats_snapshot_add(arg, snap);
}

void pool_totals(struct runtime *rt, struct stats_pool_snapshot *out)
{
	memset(out, 0, sizeof *out);
	pool_foreach_snapshot(rt, total_one, out);
}

/* Made by a "*" rule, i.e. for whatever names clients sent: those are what
 * pool_idle_timeout retires (a named rule's pool is the operator's, kept as configured). */
static bool from_wildcard(const struct config_pool_rule *rule)
{
	return strcmp(rule->database, "*") == 0 || strcmp(rule->user, "*") == 0;
}

/* A window of the adaptive bound (pool/adaptive.h) ends every this many seconds: four
 * housekeeping ticks. Two were too few on a shared 2-core machine: a window's throughput
 * moved by 10-15% from one to the next with nothing changed, more than most steps do. */
#define ADAPT_WINDOW 3.9

/* active_limit: adaptive, on the pool's home worker each tick: at the end of a window, feed
 * it to the controller and apply the bound. Switched off (a reload) or retired: lifted. */
static void adapt_tick(struct pool *p, double now)
{
	const struct config_pool_rule *rule = p->rule;
	if (rule->active_limit != CONFIG_ACTIVE_LIMIT_ADAPTIVE || atomic_load(&p->retired)) {
		if (p->adapt.limit > 0) {
			p->adapt = (struct adaptive){ 0 };
			p->adapt_at = 0;
			if (tp_pool_set_active_max(p->tp, 0) == 0)
				log_info(NULL, NULL, "pool %s/%s: active_limit off, up to size (%d) in use", p->database,
					 p->user, rule->size);
		}
		return;
	}
	struct stats_counters c;
	stats_pool_read(p->stats, &c);
	struct tp_stats st;
	tp_pool_stats(p->tp, &st);
	int size = rule->size > 0 ? rule->size : 1;
	/* Every tick, not only at a window's end: clients waited at the last tick and still do,
	 * below size, and not one transaction ended in between. What holds the servers
	 * (transactions left open, long ones, pinned sessions) is not what the bound trades:
	 * open it now, so that no client waits on it for more than two ticks. (Waiting at both
	 * ticks: a pool idle for a second whose clients come back at once is not stalled.) */
	bool stalled = p->adapt.limit > 0 && p->adapt.limit < size && st.waiting > 0 && p->adapt_tick_waiting &&
		       c.xact_count == p->adapt_tick_xacts;
	p->adapt_tick_xacts = c.xact_count;
	p->adapt_tick_waiting = st.waiting > 0;
	if (stalled) {
		int before = p->adapt.limit;
		adaptive_open(&p->adapt, size);
		p->adapt_at = 0; /* the next window starts at the next tick */
		if (tp_pool_set_active_max(p->tp, size) == 0)
			log_info(NULL, NULL, "pool %s/%s: active_limit %d -> %d: %d clients wait and no transaction ended in the last second",
				 p->database, p->user, before, size, st.waiting);
		return;
	}
	/* This tick: was the bound reached since the last one? */
	int limit = p->adapt.limit > 0 ? p->adapt.limit : size;
	int peak = tp_pool_take_active_peak(p->tp);
	bool waited = st.waiting > 0 || c.wait_us > p->adapt_wait_us;
	p->adapt_wait_us = c.wait_us;
	if (!waited && peak < limit - adaptive_near(limit))
		p->adapt_unreached = true;
	if (p->adapt_at > 0 && now - p->adapt_at < ADAPT_WINDOW && now >= p->adapt_at)
		return;
	bool have_window = p->adapt_at > 0 && now > p->adapt_at;
	struct adaptive_window win = {
		.seconds = now - p->adapt_at,
		.xacts = c.xact_count - p->adapt_xacts,
		.xact_seconds = (double)(c.xact_us - p->adapt_xact_us) / 1e6,
		.reached = !p->adapt_unreached,
	};
	p->adapt_at = now;
	p->adapt_xacts = c.xact_count;
	p->adapt_xact_us = c.xact_us;
	p->adapt_unreached = false;
	if (!have_window)
		return;
	int lo = rule->active_limit_min < size ? rule->active_limit_min : size;
	int before = p->adapt.limit;
	int n = adaptive_step(&p->adapt, &win, lo, size);
	if (n == before)
		return;
	if (tp_pool_set_active_max(p->tp, n) < 0)
		return;
	log_debug(NULL, NULL, "pool %s/%s: active_limit %d -> %d (%.0f transactions/s, %.2f ms each%s)", p->database,
		  p->user, before, n, p->adapt.tput, p->adapt.latency * 1e3, win.reached ? "" : ", not reached");
}

void pool_maintain(struct worker *w, double now)
{
	struct runtime *rt = w->rt;
	double unused_timeout = (double)rt->cfg->pool_idle_timeout_ms / 1000.0;

	/* The list only grows at the head, so walking from a snapshot of it is safe. */
	for (struct pool *p = registry_head(rt->pools); p; p = p->next) {
		FOR_CORES(p, t)
			tp_pool_tick(t, w->index);
		if (p->index % rt->nworkers == w->index)
			adapt_tick(p, now);
		if (p->index % rt->nworkers != w->index || unused_timeout <= 0 || atomic_load(&p->retired) ||
		    !from_wildcard(p->rule))
			continue;
		/* Made for whatever names clients sent: retired after pool_idle_timeout unused.
		 * Clients counted in the stats gauges: one between pool_get and its first state
		 * change is missed, and its claim wakes the pool again. */
		struct tp_stats st;
		tp_pool_stats(p->tp, &st);
		if (st.dormant)
			continue;
		bool unused_long = false;
		pthread_mutex_lock(&p->lock);
		bool claimed = atomic_exchange_explicit(&p->claimed, false, memory_order_relaxed);
		if (claimed || st.waiting || st.slots != st.idle || stats_pool_clients(p->stats) > 0)
			p->unused_since = 0;
		else if (p->unused_since == 0)
			p->unused_since = now;
		else
			unused_long = now - p->unused_since >= unused_timeout;
		if (unused_long)
			p->unused_since = 0;
		pthread_mutex_unlock(&p->lock);
		if (unused_long) {
			FOR_CORES(p, t)
				tp_pool_sleep(t);
			log_info(NULL, NULL, "pool %s/%s retired: no client for %.0fs (pool_idle_timeout); it keeps no servers until a client comes",
				 p->database, p->user, unused_timeout);
		}
	}
}

/* Can servers opened under rule a serve clients of rule b? Mode is included because a
 * server's prepared-statement tracking is chosen by the mode it was opened for. */
static bool same_servers(const struct config_pool_rule *a, const struct config_pool_rule *b)
{
	const struct config_service *sa = a->service, *sb = b->service;
	/* The same resolver's answers (pool/services.c keeps it across the reload). */
	if (a->mode != b->mode || !services_same_discovery(sa, sb) || sa->max_per_host != sb->max_per_host)
		return false;
	/* read-write-split has a second core (the standby side): it comes and goes with the pool. */
	if ((a->target_session_attrs == CONFIG_TARGET_READ_WRITE_SPLIT) !=
	    (b->target_session_attrs == CONFIG_TARGET_READ_WRITE_SPLIT))
		return false;
#define SAME_STR(x, y) ((x) == (y) || ((x) && (y) && strcmp((x), (y)) == 0))
	/* TLS too: servers opened in plaintext must not go on serving a service now requiring TLS. */
	return SAME_STR(a->server_user, b->server_user) && SAME_STR(a->server_password, b->server_password) &&
	       SAME_STR(a->server_database, b->server_database) && sa->tls == sb->tls &&
	       SAME_STR(sa->tls_ca_file, sb->tls_ca_file) && SAME_STR(sa->tls_cert_file, sb->tls_cert_file) &&
	       SAME_STR(sa->tls_key_file, sb->tls_key_file) && SAME_STR(sa->tls_protocols, sb->tls_protocols) &&
	       SAME_STR(sa->tls_ciphers, sb->tls_ciphers) && SAME_STR(sa->tls13_ciphers, sb->tls13_ciphers) &&
	       SAME_STR(a->connect_query, b->connect_query) &&
	       SAME_STR(a->client_encoding, b->client_encoding) && SAME_STR(a->datestyle, b->datestyle) &&
	       SAME_STR(a->timezone, b->timezone) && SAME_STR(a->application_name, b->application_name);
#undef SAME_STR
}

void pool_registry_reload(struct pool_registry *reg, const struct tusk_config *next)
{
	for (struct pool *p = registry_head(reg); p; p = p->next) {
		if (atomic_load(&p->retired))
			continue;
		const struct config_pool_rule *old = p->rule;
		const struct config_pool_rule *rule = config_match_pool(next, p->database, p->user);
		if (!rule || rule->blocked || !same_servers(old, rule)) {
			pthread_mutex_lock(&reg->lock);
			atomic_store(&p->retired, true);
			reg->live--;
			pthread_mutex_unlock(&reg->lock);
			FOR_CORES(p, t)
				tp_pool_retire(t);
			log_info(NULL, NULL, "pool %s/%s retired by reload (%s): its clients finish, its servers close",
				 p->database, p->user, !rule ? "no rule matches any more" : rule->blocked ? "now blocked"
				 : "its service, server login, connect_query or mode changed");
			continue;
		}
		atomic_store(&p->rule, rule);
		FOR_CORES(p, t) {
			tp_pool_set_expiry(t, (double)next->server_idle_timeout_ms / 1000.0,
					   (double)config_server_lifetime(next, rule) / 1000.0);
			tp_pool_set_check_after(t, check_after(next));
			tp_pool_set_reserve(t, config_reserve_pool_size(next, rule),
					    (double)next->reserve_pool_timeout_ms / 1000.0);
		}
		if (old->size != rule->size || old->min_size != rule->min_size) {
			log_info(NULL, NULL, "pool %s/%s: size %d -> %d, min_size %d -> %d", p->database, p->user,
				 old->size, rule->size, old->min_size, rule->min_size);
			/* A larger size frees slots now (waiters connect); a smaller one closes the
			 * excess, parked servers first. */
			pthread_mutex_lock(&p->lock);
			bool min_on = !p->needs_cred;
			pthread_mutex_unlock(&p->lock);
			set_min_size(p, min_on);
		}
	}
	regroup(reg);
}

/* ---- the admin console's view and controls ---- */

struct pool *pool_first(struct runtime *rt) { return registry_head(rt->pools); }
struct pool *pool_next(const struct pool *p) { return p->next; }

unsigned pool_generation(const struct pool *p)
{
	return atomic_load_explicit(&p->generation, memory_order_relaxed);
}

void pool_reconnect(struct pool *p)
{
	atomic_fetch_add_explicit(&p->generation, 1, memory_order_relaxed);
	FOR_CORES(p, t)
		tp_pool_reconnect(t);
}

/* The registry remembers the pause first (under its lock, where pool_get reads it), then
 * each existing pool is paused: a pool created in between starts paused. */
int pool_pause_database(struct runtime *rt, const char *database)
{
	struct pool_registry *reg = rt->pools;
	int rc = 0;

	pthread_mutex_lock(&reg->lock);
	if (!*database) {
		reg->pause_all = true;
	} else {
		struct pool_group *g = find_group(reg, database, false);
		if (g)
			g->paused = true;
		else
			rc = -ENOMEM;
	}
	pthread_mutex_unlock(&reg->lock);
	if (rc < 0)
		return rc;
	for (struct pool *p = registry_head(reg); p; p = p->next)
		if (!*database || strcmp(p->database, database) == 0)
			FOR_CORES(p, t)
				tp_pool_pause(t);
	return 0;
}

bool pool_paused_all(struct runtime *rt)
{
	struct pool_registry *reg = rt->pools;
	pthread_mutex_lock(&reg->lock);
	bool paused = reg->pause_all;
	pthread_mutex_unlock(&reg->lock);
	return paused;
}

int pool_disable_database(struct runtime *rt, const char *database, bool disabled)
{
	struct pool_registry *reg = rt->pools;
	pthread_mutex_lock(&reg->lock);
	struct pool_group *g = disabled ? find_group(reg, database, false) : lookup_group(reg, database, false);
	if (g)
		g->disabled = disabled;
	pthread_mutex_unlock(&reg->lock);
	return g || !disabled ? 0 : -ENOMEM;
}

bool pool_database_disabled(struct runtime *rt, const char *database)
{
	struct pool_registry *reg = rt->pools;
	pthread_mutex_lock(&reg->lock);
	const struct pool_group *g = lookup_group(reg, database, false);
	bool disabled = g && g->disabled;
	pthread_mutex_unlock(&reg->lock);
	return disabled;
}

void pool_resume_database(struct runtime *rt, const char *database)
{
	struct pool_registry *reg = rt->pools;

	pthread_mutex_lock(&reg->lock);
	for (struct pool_group *g = reg->groups; g; g = g->next)
		if (!g->is_user && (!*database || strcmp(g->name, database) == 0))
			g->paused = false;
	if (!*database)
		reg->pause_all = false;
	pthread_mutex_unlock(&reg->lock);
	for (struct pool *p = registry_head(reg); p; p = p->next)
		if (!*database || strcmp(p->database, database) == 0)
			FOR_CORES(p, t)
				tp_pool_resume(t);
}
