/* Shared pools (see pool.h). Locking: the registry lock guards the list of pools and is
 * held only to find or add one; each pool's lock guards its counters, idle lists and wait
 * queue, and is never held while doing I/O or taking another pool's lock. Worker inbox
 * posts happen after the pool lock is released.
 *
 * Idle servers stay parked on the loop of the worker that last used them, watched for
 * reads (a server that closes or talks while idle is closed at once), in that worker's
 * idle list of the pool. A claim on the same worker takes one without any system call;
 * another worker asks the owner, through its inbox, to hand one over (pool_on_steal):
 * the owner detaches it and posts it back. That is the only path by which a server
 * changes threads. */
#include "pool/pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "net/net.h"
#include "proto/proto.h"
#include "pool/prepared.h"
#include "pool/probes.h"
#include "pool/server.h"
#include "runtime/runtime.h"
#include "stats/stats.h"
#include "util/log.h"
#include "worker/worker.h"

/* Servers of all pools of one database, or of one user, for max_db_connections and
 * max_user_connections. */
struct pool_group {
	struct pool_group *next; /* registry list, immutable once linked */
	char name[CONFIG_NAME_MAX];
	bool is_user;
	bool paused; /* database groups: console PAUSE, so pools created later start paused; under the registry lock */
	/* Servers now; acq_rel is enough: it orders nothing else, and overshoot is undone at
	 * once by the one that overshot. */
	atomic_int count;
};

struct pool {
	/* immutable after creation */
	struct pool_group *db_group, *user_group;
	char database[CONFIG_NAME_MAX];
	char user[CONFIG_NAME_MAX];
	struct runtime *rt;
	int index;
	struct pool *next; /* registry list; immutable once linked (pools are never unlinked) */
	struct stats_pool *stats; /* its own atomics; no lock */
	struct prep_refs *prep_refs; /* client names per prepared statement; its own lock */

	/* The rule of the newest configuration generation this pool belongs to. A reload
	 * (main thread) re-points it at the matching rule of the new generation; every read is
	 * an implicit seq_cst load, so a worker sees either rule whole (the runtime keeps every
	 * generation alive until exit, so an old rule read a moment ago stays valid). */
	const struct config_pool_rule *_Atomic rule;
	/* Its rule vanished (or changed what a server is) at a reload: no new client finds it
	 * (pool_get matches rule pointers of the current generation), its clients finish, its
	 * servers close when released. Set once by the main thread; read by workers. */
	atomic_bool retired;

	pthread_mutex_t lock; /* protects everything below */
	int nslots;           /* servers connecting, in use or idle; <= rule->size */
	int nidle;            /* servers in all idle lists */
	struct server **idle; /* per worker index: parked there, most recently used first */
	struct pool_waiter *wait_head, *wait_tail;
	int failures;         /* consecutive failed connects */
	double backoff;       /* seconds; 0 while the backend answers */
	double down_until;    /* no new connections before this (loop time) */
	char last_error[160];
	unsigned jitter_seed;
	bool paused;          /* console PAUSE: claims queue, nothing is handed to waiters */
	/* min_size refills back off on their own, after a failure of any kind: a login refused
	 * (3D000, 28P01) fails the same way each second for ever otherwise. Clients' connects
	 * are not held back by it: they get PostgreSQL's own error at once. */
	int refill_failures;     /* consecutive failed refills */
	double refill_backoff;   /* seconds; 0 after a success */
	double refill_at;        /* no refill before this (loop time) */
	double refill_logged_at; /* last refill failure logged: at most one line a minute */
	int refill_unlogged;     /* failures since that line */
	/* Stopped for want of clients: no refills, no parked servers, until a client claims
	 * again (pool_get, pool_claim). Set when its logins keep failing and nobody uses it.
	 * Atomic rather than under the lock so that pool_get, holding the registry lock, can
	 * wake it; a refill more or less in a race is harmless. */
	atomic_bool dormant;
	/* What the backend allows: a login answered 53300 (role CONNECTION LIMIT,
	 * max_connections) caps the pool at the servers it had then, so that clients wait for
	 * one of those instead of failing; forgotten at cap_until. -1: no cap. */
	int cap;
	double cap_until;
	/* Since when nobody uses it (no client, nothing queued, no server out of the idle
	 * lists), as seen by its housekeeping worker; 0 while in use. pool_idle_timeout. */
	double unused_since;
	/* Passthrough pools (no server_password): the credentials of the last login a client's
	 * secret carried, so that min_size servers can be opened with nobody waiting. Until
	 * there is one, a server that wants a password (28xxx) stops min_size connects. */
	struct server_cred cred;
	bool have_cred;
	bool needs_cred;

	/* Bumped by RECONNECT and KILL: servers connected under an older generation are closed
	 * when released instead of parked. Relaxed: a server that slips through is merely
	 * reused once more; it orders no other memory. */
	atomic_uint generation;
};

#define POOL_BACKOFF_FIRST 0.25
#define POOL_BACKOFF_MAX 10.0
#define POOL_PREFER_SCAN 32 /* idle servers looked at for a preferred one */
/* A pool whose refills failed this many times in a row, with no client, goes dormant. */
#define POOL_DORMANT_AFTER 5
#define POOL_LOG_EVERY 60.0 /* seconds between two lines about the same failing refills */
#define POOL_CAP_KEEP 60.0  /* seconds a cap learned from 53300 is kept after the last one */
/* Pools that are not retired, at most. Each (database, user) a client names under a
 * wildcard rule makes a pool, before it authenticates, and pools are never freed (their
 * readers walk the list without a lock): this bounds what such clients can make tusk keep. */
#define POOL_MAX_POOLS 10000

struct pool_registry {
	pthread_mutex_t lock; /* protects head, count, live, groups and pause_all */
	struct pool *head;
	int count;
	int live; /* pools not retired by a reload (bounded by POOL_MAX_POOLS) */
	double full_logged_at; /* the last "too many pools" line (rate limit) */
	struct pool_group *groups;
	bool pause_all; /* console PAUSE without a database */
};

static struct pool_group *find_group(struct pool_registry *reg, const char *name, bool is_user)
{
	struct pool_group *g;
	for (g = reg->groups; g; g = g->next)
		if (g->is_user == is_user && strcmp(g->name, name) == 0)
			return g;
	g = calloc(1, sizeof *g);
	if (!g)
		return NULL;
	snprintf(g->name, sizeof g->name, "%s", name);
	g->is_user = is_user;
	atomic_init(&g->count, 0);
	g->next = reg->groups;
	reg->groups = g;
	return g;
}

/* Take one server's room in a group under limit (0 = none). */
static bool group_take(struct pool_group *g, int limit)
{
	int now = atomic_fetch_add_explicit(&g->count, 1, memory_order_acq_rel);
	if (limit > 0 && now >= limit) {
		atomic_fetch_sub_explicit(&g->count, 1, memory_order_acq_rel);
		return false;
	}
	return true;
}

static void group_give(struct pool_group *g)
{
	atomic_fetch_sub_explicit(&g->count, 1, memory_order_acq_rel);
}

/* The size p may grow to now: its rule's, or less while the backend said it has no room
 * for more (cap). Under p's lock. */
static int size_now(const struct pool *p)
{
	int size = p->rule->size;
	return p->cap >= 0 && p->cap < size ? p->cap : size;
}

/* A new slot for p: within size and both group limits. Under p's lock. */
static bool reserve_slot_within(struct pool *p, int size)
{
	if (p->nslots >= size)
		return false;
	if (!group_take(p->db_group, p->rule->max_db_connections))
		return false;
	if (!group_take(p->user_group, p->rule->max_user_connections)) {
		group_give(p->db_group);
		return false;
	}
	p->nslots++;
	return true;
}

static bool reserve_slot(struct pool *p)
{
	return reserve_slot_within(p, size_now(p));
}

static void unreserve_slot(struct pool *p)
{
	p->nslots--;
	group_give(p->db_group);
	group_give(p->user_group);
}

struct pool_registry *pool_registry_new(void)
{
	struct pool_registry *reg = calloc(1, sizeof *reg);
	if (reg)
		pthread_mutex_init(&reg->lock, NULL);
	return reg;
}

void pool_registry_free(struct pool_registry *reg)
{
	if (!reg)
		return;
	struct pool *p = reg->head;
	while (p) {
		struct pool *next = p->next;
		/* Parked servers belong to their workers, which closed them before this. */
		pthread_mutex_destroy(&p->lock);
		OPENSSL_cleanse(&p->cred, sizeof p->cred);
		stats_pool_free(p->stats);
		prep_refs_free(p->prep_refs);
		free(p->idle);
		free(p);
		p = next;
	}
	while (reg->groups) {
		struct pool_group *g = reg->groups;
		reg->groups = g->next;
		free(g);
	}
	pthread_mutex_destroy(&reg->lock);
	free(reg);
}

bool pool_registry_full(struct runtime *rt)
{
	struct pool_registry *reg = rt->pools;
	pthread_mutex_lock(&reg->lock);
	bool full = reg->live >= POOL_MAX_POOLS;
	pthread_mutex_unlock(&reg->lock);
	return full;
}

struct pool *pool_get(struct runtime *rt, const struct config_pool_rule *rule, const char *database,
		      const char *user)
{
	struct pool_registry *reg = rt->pools;
	struct pool *p;

	pthread_mutex_lock(&reg->lock);
	for (p = reg->head; p; p = p->next)
		if (p->rule == rule && !atomic_load(&p->retired) && strcmp(p->database, database) == 0 && strcmp(p->user, user) == 0) {
			if (atomic_exchange(&p->dormant, false))
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
	atomic_init(&p->dormant, false);
	p->cap = -1;
	p->rt = rt;
	p->db_group = find_group(reg, database, false);
	p->user_group = find_group(reg, user, true);
	p->idle = calloc((size_t)rt->nworkers, sizeof *p->idle);
	p->stats = stats_pool_new();
	p->prep_refs = prep_refs_new();
	if (!p->db_group || !p->user_group || !p->idle || !p->stats || !p->prep_refs) {
		prep_refs_free(p->prep_refs);
		stats_pool_free(p->stats);
		free(p->idle);
		free(p);
		p = NULL;
		goto out;
	}
	p->index = reg->count++;
	if (!atomic_load(&p->retired))
		reg->live++;
	p->jitter_seed = (unsigned)p->index * 2654435761u;
	p->paused = reg->pause_all || p->db_group->paused;
	pthread_mutex_init(&p->lock, NULL);
	p->next = reg->head;
	reg->head = p;
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
	pthread_mutex_lock(&p->lock);
	out->slots = p->nslots;
	out->idle = p->nidle;
	out->waiters = 0;
	for (const struct pool_waiter *w = p->wait_head; w; w = w->next)
		out->waiters++;
	out->down = p->backoff > 0;
	out->paused = p->paused;
	pthread_mutex_unlock(&p->lock);
}

void pool_foreach(struct runtime *rt, void (*cb)(struct pool *p, void *arg), void *arg)
{
	struct pool_registry *reg = rt->pools;
	pthread_mutex_lock(&reg->lock);
	struct pool *p = reg->head;
	pthread_mutex_unlock(&reg->lock);
	/* Each next was written before its pool was published under the lock taken above. */
	for (; p; p = p->next)
		cb(p, arg);
}

/* A clock for queue ages: the coarse one costs no system call (vDSO) and its few
 * milliseconds of resolution are enough to tell a busy pool's short waits from long ones. */
static double coarse_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void enqueue(struct pool *p, struct pool_waiter *w)
{
	w->next = NULL;
	w->queued = true;
	w->passed_over = 0;
	w->queued_at = coarse_now();
	if (p->wait_tail)
		p->wait_tail->next = w;
	else
		p->wait_head = w;
	p->wait_tail = w;
}

/* The longest waiter, or NULL when none or while paused (then nothing is handed out: a
 * released server is parked, a freed slot released). */
static struct pool_waiter *dequeue(struct pool *p)
{
	struct pool_waiter *w = p->wait_head;
	if (!w || p->paused)
		return NULL;
	p->wait_head = w->next;
	if (!p->wait_head)
		p->wait_tail = NULL;
	w->next = NULL;
	w->queued = false;
	return w;
}

/* A server released on worker wi goes preferably to a waiter on wi: handing it to another
 * thread costs a detach, a re-attach (two epoll_ctl) and a message, about as much as the
 * transaction itself on a busy pool. FIFO order bends only a little, and only on a busy pool:
 * the head is passed over at most POOL_MAX_PASS_OVER times and only while it has waited less
 * than POOL_PASS_OVER_AGE seconds; only the first POOL_LOCAL_SCAN waiters are looked at.
 * Under the pool lock. */
#define POOL_MAX_PASS_OVER 2
#define POOL_PASS_OVER_AGE 0.02
#define POOL_LOCAL_SCAN 16
static struct pool_waiter *dequeue_near(struct pool *p, int wi)
{
	struct pool_waiter *head = p->wait_head, *prev = head, *w;
	int i = 0;

	if (!head || p->paused || head->worker->index == wi || head->passed_over >= POOL_MAX_PASS_OVER ||
	    coarse_now() - head->queued_at >= POOL_PASS_OVER_AGE)
		return dequeue(p);
	for (w = head->next; w && i < POOL_LOCAL_SCAN; prev = w, w = w->next, i++) {
		if (w->worker->index != wi)
			continue;
		prev->next = w->next;
		if (p->wait_tail == w)
			p->wait_tail = prev;
		w->next = NULL;
		w->queued = false;
		head->passed_over++;
		return w;
	}
	return dequeue(p);
}

static void idle_push(struct pool *p, struct server *s, int wi)
{
	s->idle_worker = wi;
	s->prev_idle = NULL;
	s->next_idle = p->idle[wi];
	if (s->next_idle)
		s->next_idle->prev_idle = s;
	p->idle[wi] = s;
	p->nidle++;
}

static void idle_unlink(struct pool *p, struct server *s)
{
	if (s->prev_idle)
		s->prev_idle->next_idle = s->next_idle;
	else
		p->idle[s->idle_worker] = s->next_idle;
	if (s->next_idle)
		s->next_idle->prev_idle = s->prev_idle;
	s->next_idle = s->prev_idle = NULL;
	s->idle_worker = -1;
	p->nidle--;
}

/* The idle server of worker wi to hand to w: the one w's owner used last (its session
 * already matches: no SETs), else the most recently used. Under the pool lock. */
static struct server *take_preferred(struct pool *p, int wi, const struct pool_waiter *w)
{
	struct server *best = p->idle[wi], *s = best;
	for (int i = 0; s && i < POOL_PREFER_SCAN; i++, s = s->next_idle) {
		if (s->last_owner == w->owner) {
			best = s;
			break;
		}
	}
	if (best)
		idle_unlink(p, best);
	return best;
}

/* A worker other than self (-1: any) with idle servers in p, or -1. Under the pool lock. */
static int worker_with_idle(const struct pool *p, int self)
{
	for (int i = 0; i < p->rt->nworkers; i++)
		if (i != self && p->idle[i])
			return i;
	return -1;
}

void pool_forget_idle(struct server *s)
{
	struct pool *p = s->pool;
	pthread_mutex_lock(&p->lock);
	if (s->idle_worker >= 0)
		idle_unlink(p, s);
	pthread_mutex_unlock(&p->lock);
}

static void post_steal(struct pool *p, int owner);
static void post_server(struct pool_waiter *w, struct server *s);
static void post_grant(struct pool *p, struct pool_waiter *w);

static struct pool *registry_head(struct pool_registry *reg)
{
	pthread_mutex_lock(&reg->lock);
	struct pool *head = reg->head;
	pthread_mutex_unlock(&reg->lock);
	return head;
}

static bool shares_limited_group(const struct pool *a, const struct pool *b)
{
	return (a->db_group == b->db_group && a->rule->max_db_connections > 0) ||
	       (a->user_group == b->user_group && a->rule->max_user_connections > 0);
}

/* p is held back by max_db_connections / max_user_connections: close an idle server of
 * another pool of the same database or user to make room (its slot's release then wakes
 * p's waiter, see group_wake). */
static void evict_for(struct pool *p, int wi)
{
	for (struct pool *q = registry_head(p->rt->pools); q; q = q->next) {
		if (q == p || !shares_limited_group(p, q))
			continue;
		/* Only servers parked on this thread can be closed from here. */
		pthread_mutex_lock(&q->lock);
		struct server *s = q->idle[wi];
		if (s)
			idle_unlink(q, s);
		pthread_mutex_unlock(&q->lock);
		if (s) {
			server_close(s, "making room under max_db_connections / max_user_connections");
			return;
		}
	}
}

enum pool_claim_result pool_claim(struct pool *p, struct pool_waiter *w, double now, struct server **out)
{
	struct server *s = NULL;
	int wi = w->worker->index, owner = -1;
	bool limited = false;

	TUSK_PROBE3(claim__start, p->database, p->user, wi);
	atomic_store_explicit(&p->dormant, false, memory_order_relaxed);
	pthread_mutex_lock(&p->lock);
	p->unused_since = 0;
	if (p->cap >= 0 && now >= p->cap_until)
		p->cap = -1;
	if (p->paused) {
		/* Waits for RESUME (or its pool_wait_timeout). */
		enqueue(p, w);
		pthread_mutex_unlock(&p->lock);
		return POOL_CLAIM_QUEUED;
	}
	/* Waiters already queued go first: strict FIFO. */
	if (!p->wait_head && p->idle[wi]) {
		s = take_preferred(p, wi, w);
	} else if (!p->wait_head && (owner = worker_with_idle(p, wi)) >= 0) {
		/* Idle servers exist, on other threads: queue, and ask one owner to hand over. */
		enqueue(p, w);
		pthread_mutex_unlock(&p->lock);
		post_steal(p, owner);
		return POOL_CLAIM_QUEUED;
	} else if (!p->wait_head && p->nslots < p->rule->size && now < p->down_until) {
		pthread_mutex_unlock(&p->lock);
		TUSK_PROBE5(claim__done, p->database, p->user, wi, 0LL, TUSK_CLAIM_DOWN);
		return POOL_CLAIM_DOWN;
	} else if (!p->wait_head && reserve_slot(p)) {
		pthread_mutex_unlock(&p->lock);
		TUSK_PROBE5(claim__done, p->database, p->user, wi, 0LL, TUSK_CLAIM_CONNECT);
		return POOL_CLAIM_CONNECT;
	} else {
		/* Below size yet refused: a database or user limit is what holds it back. */
		limited = p->nslots < size_now(p) && !p->wait_head;
		enqueue(p, w);
		/* Others queued first; idle servers may still be parked somewhere (their owners
		 * hand them to the head of the queue, in order). */
		owner = worker_with_idle(p, -1);
		pthread_mutex_unlock(&p->lock);
		if (owner >= 0)
			post_steal(p, owner);
		if (limited)
			evict_for(p, wi);
		return POOL_CLAIM_QUEUED;
	}
	pthread_mutex_unlock(&p->lock);
	TUSK_PROBE5(claim__done, p->database, p->user, wi, 0LL, TUSK_CLAIM_SERVER);
	/* Parked on this loop and watched: had it closed or spoken, it would be gone already. */
	*out = s;
	return POOL_CLAIM_SERVER;
}

/* The one cross-thread hand-over of a server: detached, it goes to the waiter's worker.
 * When the waiter is on the server's own worker (called on that thread), the server stays
 * attached and the message stays local. */
static void post_server(struct pool_waiter *w, struct server *s)
{
	bool local = s->worker == w->worker;
	TUSK_PROBE5(claim__done, s->pool->database, s->pool->user, w->worker->index,
		    (long long)((coarse_now() - w->queued_at) * 1e6), TUSK_CLAIM_SERVER);
	if (!local)
		server_detach(s);
	struct worker_msg *m = calloc(1, sizeof *m);
	if (!m) {
		/* Out of memory: the waiter will time out; do not lose the slot. */
		server_close(s, "out of memory handing over");
		return;
	}
	m->kind = WORKER_MSG_SERVER;
	m->waiter = w;
	m->server = s;
	if (local)
		worker_post_local(w->worker, m);
	else
		worker_post(w->worker, m);
}

static void post_steal(struct pool *p, int owner)
{
	struct worker_msg *m = calloc(1, sizeof *m);
	if (!m)
		return; /* the waiter gets the next server released, or times out */
	m->kind = WORKER_MSG_STEAL;
	m->pool = p;
	worker_post(p->rt->workers[owner], m);
}

static void post_grant(struct pool *p, struct pool_waiter *w)
{
	TUSK_PROBE5(claim__done, p->database, p->user, w->worker->index, (long long)((coarse_now() - w->queued_at) * 1e6),
		    TUSK_CLAIM_CONNECT);
	struct worker_msg *m = calloc(1, sizeof *m);
	if (!m)
		return; /* the waiter times out; its reserved slot is leaked until then: OOM only */
	m->kind = WORKER_MSG_GRANT;
	m->waiter = w;
	worker_post(w->worker, m);
}

/* Room appeared in p's database/user groups: the first other pool sharing a limited group
 * that has a waiter and room gets a slot reserved and granted. */
static void group_wake(struct pool *p)
{
	if (p->rule->max_db_connections <= 0 && p->rule->max_user_connections <= 0)
		return;
	for (struct pool *q = registry_head(p->rt->pools); q; q = q->next) {
		if (q == p || !shares_limited_group(p, q))
			continue;
		struct pool_waiter *w = NULL;
		pthread_mutex_lock(&q->lock);
		if (q->wait_head && !q->paused && reserve_slot(q))
			w = dequeue(q);
		pthread_mutex_unlock(&q->lock);
		if (w) {
			post_grant(q, w);
			return;
		}
	}
}

/* Another pool of p's limited database/user groups has clients waiting. */
static bool group_has_waiters(struct pool *p)
{
	if (p->rule->max_db_connections <= 0 && p->rule->max_user_connections <= 0)
		return false;
	for (struct pool *q = registry_head(p->rt->pools); q; q = q->next) {
		if (q == p || !shares_limited_group(p, q))
			continue;
		pthread_mutex_lock(&q->lock);
		bool waiting = q->wait_head != NULL;
		pthread_mutex_unlock(&q->lock);
		if (waiting)
			return true;
	}
	return false;
}

void pool_put_idle(struct pool *p, struct server *s)
{
	struct pool_waiter *w;
	struct worker *owner = s->worker;

	TUSK_PROBE4(server__released, s->id, p->database, p->user, owner->index);

	if (s->pool_gen != atomic_load_explicit(&p->generation, memory_order_relaxed)) {
		server_close(s, "closed for RECONNECT or KILL");
		return;
	}

	pthread_mutex_lock(&p->lock);
	w = dequeue_near(p, owner->index);
	pthread_mutex_unlock(&p->lock);
	/* Outside p's lock: group_has_waiters takes other pools' locks. */
	if (!w && group_has_waiters(p)) {
		/* Idle here while another pool of the database/user waits for room: give it. */
		server_close(s, "making room under max_db_connections / max_user_connections");
		return;
	}
	if (!w) {
		const char *why = NULL;
		pthread_mutex_lock(&p->lock);
		w = dequeue_near(p, owner->index); /* one may have queued meanwhile */
		if (!w) {
			/* After a reload: a retired pool keeps no servers, a shrunk one no more
			 * than its new size. */
			if (atomic_load(&p->retired))
				why = "its pool rule was removed or changed by a reload";
			else if (p->nslots > p->rule->size)
				why = "pool size was reduced by a reload";
			else {
				server_park(s);
				idle_push(p, s, owner->index);
			}
		}
		pthread_mutex_unlock(&p->lock);
		if (why) {
			server_close(s, why);
			return;
		}
	}
	if (w)
		post_server(w, s);
}

void pool_on_steal(struct worker *self, struct pool *p)
{
	for (;;) {
		struct pool_waiter *w = NULL;
		struct server *s = NULL;
		int owner = -1;

		pthread_mutex_lock(&p->lock);
		if (!p->wait_head || p->paused) {
			pthread_mutex_unlock(&p->lock);
			return;
		}
		if (p->idle[self->index]) {
			w = dequeue(p);
			s = take_preferred(p, self->index, w);
		} else if ((owner = worker_with_idle(p, self->index)) < 0 && reserve_slot(p)) {
			/* None idle anywhere, but room: the waiter opens a new server rather than
			 * wait for a release. */
			w = dequeue(p);
		}
		pthread_mutex_unlock(&p->lock);
		if (s) {
			post_server(w, s);
			continue; /* more waiters, more parked here? */
		}
		if (w)
			post_grant(p, w);
		else if (owner >= 0)
			post_steal(p, owner); /* another worker has one now */
		return;
	}
}

void pool_drop_slot(struct pool *p)
{
	struct pool_waiter *w = NULL;

	pthread_mutex_lock(&p->lock);
	/* Above what the backend allows now (cap): the slot goes, and the waiter waits for a
	 * release, not for a login the backend would refuse again. */
	if (p->nslots <= size_now(p))
		w = dequeue(p);
	if (!w)
		unreserve_slot(p);
	pthread_mutex_unlock(&p->lock);
	if (w)
		post_grant(p, w); /* the slot passes to the waiter as it is */
	else
		group_wake(p);
}

bool pool_leave_queue(struct pool *p, struct pool_waiter *w)
{
	bool was_queued;

	pthread_mutex_lock(&p->lock);
	was_queued = w->queued;
	if (was_queued) {
		struct pool_waiter **pp = &p->wait_head;
		struct pool_waiter *prev = NULL;
		while (*pp && *pp != w) {
			prev = *pp;
			pp = &(*pp)->next;
		}
		if (*pp) {
			*pp = w->next;
			if (p->wait_tail == w)
				p->wait_tail = prev;
		}
		w->queued = false;
		w->next = NULL;
	}
	pthread_mutex_unlock(&p->lock);
	if (was_queued)
		TUSK_PROBE5(claim__done, p->database, p->user, w->worker->index,
			    (long long)((coarse_now() - w->queued_at) * 1e6), TUSK_CLAIM_GAVE_UP);
	return was_queued;
}

bool pool_may_connect(struct pool *p, double now)
{
	bool ok;
	pthread_mutex_lock(&p->lock);
	ok = now >= p->down_until;
	pthread_mutex_unlock(&p->lock);
	if (!ok)
		pool_drop_slot(p);
	return ok;
}

void pool_connect_failed(struct pool *p, double now, const char *reason)
{
	pthread_mutex_lock(&p->lock);
	snprintf(p->last_error, sizeof p->last_error, "%s", reason ? reason : "unknown error");
	/* One failure may be a blip (or the restart that just finished): the next client
	 * tries again at once. From the second on, clients fail fast while backed off. */
	if (++p->failures < 2) {
		pthread_mutex_unlock(&p->lock);
		return;
	}
	if (!p->backoff)
		TUSK_PROBE4(backend__state, p->database, p->user, TUSK_BACKEND_DOWN, p->last_error);
	p->backoff = p->backoff ? p->backoff * 2 : POOL_BACKOFF_FIRST;
	if (p->backoff > POOL_BACKOFF_MAX)
		p->backoff = POOL_BACKOFF_MAX;
	/* +-25% so that pools (and tusk instances) do not retry in lockstep. */
	double jitter = 0.75 + (double)(rand_r(&p->jitter_seed) % 1000) / 2000.0;
	p->down_until = now + p->backoff * jitter;
	pthread_mutex_unlock(&p->lock);
}

void pool_connect_succeeded(struct pool *p)
{
	pthread_mutex_lock(&p->lock);
	if (p->backoff)
		TUSK_PROBE4(backend__state, p->database, p->user, TUSK_BACKEND_UP, "");
	p->failures = 0;
	p->backoff = 0;
	p->down_until = 0;
	p->refill_failures = 0;
	p->refill_backoff = 0;
	p->refill_at = 0;
	p->refill_unlogged = 0;
	/* The backend had room for one more than the cap said: someone else left. */
	if (p->cap >= 0 && p->nslots > p->cap)
		p->cap = p->nslots;
	pthread_mutex_unlock(&p->lock);
}

void pool_connect_busy(struct pool *p, double now, const char *reason)
{
	pthread_mutex_lock(&p->lock);
	/* The refused login still holds its slot: the others are what the backend took. */
	int others = p->nslots > 0 ? p->nslots - 1 : 0;
	bool lower = p->cap < 0 || others < p->cap;
	p->cap = others;
	p->cap_until = now + POOL_CAP_KEEP;
	if (lower)
		TUSK_PROBE4(backend__state, p->database, p->user, TUSK_BACKEND_FULL, reason ? reason : "53300");
	pthread_mutex_unlock(&p->lock);
	/* One line each time the cap goes down: at most size lines per POOL_CAP_KEEP. */
	if (lower)
		log_info(NULL, NULL,
			 "pool %s/%s: the server has no connection for another login (%s): at most %d server%s for %.0fs, clients wait for them",
			 p->database, p->user, reason ? reason : "53300", others, others == 1 ? "" : "s", POOL_CAP_KEEP);
}

void pool_wait_first(struct pool *p, struct pool_waiter *w)
{
	pthread_mutex_lock(&p->lock);
	/* It was served before those queued now: it keeps its place. */
	w->queued = true;
	w->next = p->wait_head;
	p->wait_head = w;
	if (!p->wait_tail)
		p->wait_tail = w;
	/* A server released while w was connecting was parked: ask for it. */
	int owner = worker_with_idle(p, -1);
	pthread_mutex_unlock(&p->lock);
	if (owner >= 0)
		post_steal(p, owner);
}

void pool_down_reason(struct pool *p, double now, char *out, size_t cap)
{
	pthread_mutex_lock(&p->lock);
	snprintf(out, cap, "%s; next attempt in %.1fs", p->last_error, p->down_until > now ? p->down_until - now : 0.0);
	pthread_mutex_unlock(&p->lock);
}

void pool_remember_cred(struct pool *p, const struct server_cred *cred)
{
	pthread_mutex_lock(&p->lock);
	p->cred = *cred;
	p->have_cred = true;
	p->needs_cred = false;
	pthread_mutex_unlock(&p->lock);
}

/* A min_size refill failed (server.c closes it quietly): back off, log at most a line a
 * minute, and stop the pool when nobody uses it. */
static void refill_failed(struct pool *p, double now, const char *reason)
{
	pthread_mutex_lock(&p->lock);
	int failures = ++p->refill_failures;
	p->refill_backoff = p->refill_backoff ? p->refill_backoff * 2 : POOL_BACKOFF_FIRST;
	if (p->refill_backoff > POOL_BACKOFF_MAX)
		p->refill_backoff = POOL_BACKOFF_MAX;
	double jitter = 0.75 + (double)(rand_r(&p->jitter_seed) % 1000) / 2000.0;
	double wait = p->refill_backoff * jitter;
	p->refill_at = now + wait;
	int unlogged = p->refill_unlogged;
	bool log_it = failures == 1 || now - p->refill_logged_at >= POOL_LOG_EVERY;
	if (log_it) {
		p->refill_logged_at = now;
		p->refill_unlogged = 0;
	} else {
		p->refill_unlogged++;
	}
	/* No client: clients in any state (stats gauges) or queued. A client that comes a
	 * moment later wakes the pool again (pool_get, pool_claim). */
	bool stop = failures >= POOL_DORMANT_AFTER && !p->wait_head && stats_pool_clients(p->stats) == 0 &&
		    !atomic_load(&p->retired);
	pthread_mutex_unlock(&p->lock);
	if (log_it)
		log_warn(NULL, NULL, "pool %s/%s: min_size connect failed (%d in a row, %d not logged since the last line): %s; next attempt in %.1fs",
			 p->database, p->user, failures, unlogged, reason ? reason : "unknown error", wait);
	if (stop && !atomic_exchange(&p->dormant, true))
		log_warn(NULL, NULL, "pool %s/%s retired: no clients and its last %d logins failed (%s); it keeps no servers until a client comes",
			 p->database, p->user, failures, reason ? reason : "unknown error");
}

static void on_min_ready(struct server *s, void *arg, int err, const char *reason, const uint8_t *errmsg,
			 size_t errlen)
{
	struct proto_error_fields f = { 0 };
	(void)arg;
	if (err < 0) {
		refill_failed(s->pool, ev_now(s->worker->loop), reason);
		/* server.c closes it and releases the slot; the backoff was noted. A refused login
		 * (class 28) will not pass by retrying each tick without a client's credentials. */
		if (errmsg && errlen > PROTO_HDR_LEN &&
		    proto_parse_error(errmsg + PROTO_HDR_LEN, errlen - PROTO_HDR_LEN, &f) == 0 && f.sqlstate &&
		    strncmp(f.sqlstate, "28", 2) == 0 && !pool_rule(s->pool)->server_password) {
			pthread_mutex_lock(&s->pool->lock);
			s->pool->needs_cred = !s->pool->have_cred;
			pthread_mutex_unlock(&s->pool->lock);
		}
		return;
	}
	s->idle_since = ev_now(s->worker->loop);
	pool_put_idle(s->pool, s);
}

/* Made by a "*" rule, i.e. for whatever names clients sent: those are what
 * pool_idle_timeout retires (a named rule's pool is the operator's, kept as configured). */
static bool from_wildcard(const struct config_pool_rule *rule)
{
	return strcmp(rule->database, "*") == 0 || strcmp(rule->user, "*") == 0;
}

void pool_maintain(struct worker *w, double now)
{
	struct runtime *rt = w->rt;
	double idle_timeout = (double)rt->cfg->server_idle_timeout_ms / 1000.0;
	double unused_timeout = (double)rt->cfg->pool_idle_timeout_ms / 1000.0;

	/* The list only grows at the head, so walking from a snapshot of it is safe. */
	for (struct pool *p = registry_head(rt->pools); p; p = p->next) {
		struct server *expired = NULL;
		int open = 0;
		bool retired = atomic_load(&p->retired);
		bool dormant = atomic_load_explicit(&p->dormant, memory_order_relaxed);
		bool mine = p->index % rt->nworkers == w->index;
		struct pool_waiter *grant = NULL;
		int steal_from = -1;
		pthread_mutex_lock(&p->lock);
		if (p->cap >= 0 && now >= p->cap_until)
			p->cap = -1;
		bool unused_long = false;
		if (mine && !retired && !dormant && unused_timeout > 0 && from_wildcard(p->rule)) {
			/* Clients counted in the stats gauges: one between pool_get and its first
			 * state change is missed, and its claim wakes the pool again. */
			if (p->wait_head || p->nslots != p->nidle || stats_pool_clients(p->stats) > 0)
				p->unused_since = 0;
			else if (p->unused_since == 0)
				p->unused_since = now;
			else
				unused_long = now - p->unused_since >= unused_timeout;
		}
		/* Servers beyond a size a reload reduced: parked ones go first. */
		int excess = p->nslots - p->rule->size;
		/* This worker's parked servers: it alone may close them. */
		struct server *s = p->idle[w->index];
		while (s) {
			struct server *next = s->next_idle;
			bool too_old = s->expires_at && now >= s->expires_at;
			bool too_idle = idle_timeout > 0 && now - s->idle_since >= idle_timeout &&
					p->nslots > p->rule->min_size;
			bool too_many = excess-- > 0;
			if (too_old || too_idle || too_many || retired || dormant) {
				idle_unlink(p, s);
				s->next_idle = expired;
				expired = s;
			}
			s = next;
		}
		/* Keep min_size open: one pool's worth per worker (by pool index), one connect per
		 * tick so a down backend is not hammered. */
		struct server_cred cred;
		bool with_cred = false;
		if (!retired && !dormant && mine && p->nslots < p->rule->min_size && now >= p->down_until &&
		    now >= p->refill_at && !p->wait_head && !p->needs_cred && reserve_slot(p)) {
			open = 1;
			if (p->have_cred && !p->rule->server_password) {
				cred = p->cred;
				with_cred = true;
			}
		}
		/* Clients queued with nothing on its way to them: after a 53300 cap expired, or
		 * when the backend refused logins with none of this pool's servers left to wait for
		 * (then one login a tick tries whether it has room again). */
		if (mine && p->wait_head && !p->paused && now >= p->down_until) {
			if ((steal_from = worker_with_idle(p, -1)) < 0 &&
			    (reserve_slot(p) || (p->nslots == 0 && reserve_slot_within(p, p->rule->size))))
				grant = dequeue(p);
		}
		pthread_mutex_unlock(&p->lock);
		if (unused_long && !atomic_exchange(&p->dormant, true))
			log_info(NULL, NULL, "pool %s/%s retired: no client for %.0fs (pool_idle_timeout); it keeps no servers until a client comes",
				 p->database, p->user, unused_timeout);
		if (grant)
			post_grant(p, grant);
		else if (steal_from >= 0)
			post_steal(p, steal_from);
		while (expired) {
			struct server *x = expired;
			expired = x->next_idle;
			x->next_idle = NULL;
			server_close(x, retired ? "its pool rule was removed or changed by a reload"
					 : dormant ? "its pool was retired (no clients)"
					 : x->expires_at && now >= x->expires_at ? "server_lifetime reached"
					 : "idle timeout, or pool size reduced by a reload");
		}
		if (open && !server_connect_refill(p, w, with_cred ? &cred : NULL, on_min_ready))
			pool_drop_slot(p);
		if (with_cred)
			OPENSSL_cleanse(&cred, sizeof cred);
	}
}

/* Can servers opened under rule a serve clients of rule b? Mode is included because a
 * server's prepared-statement tracking is chosen by the mode it was opened for. */
static bool same_servers(const struct config_pool_rule *a, const struct config_pool_rule *b)
{
	const struct config_service *sa = a->service, *sb = b->service;
	if (a->mode != b->mode || strcmp(sa->name, sb->name) != 0 || sa->nhosts != sb->nhosts)
		return false;
	for (int i = 0; i < sa->nhosts; i++)
		if (strcmp(sa->hosts[i].host, sb->hosts[i].host) != 0 || sa->hosts[i].port != sb->hosts[i].port)
			return false;
#define SAME_STR(x, y) ((x) == (y) || ((x) && (y) && strcmp((x), (y)) == 0))
	/* TLS too: servers opened in plaintext must not go on serving a service now requiring TLS. */
	return SAME_STR(a->server_user, b->server_user) && SAME_STR(a->server_password, b->server_password) &&
	       SAME_STR(a->server_database, b->server_database) && sa->tls == sb->tls &&
	       SAME_STR(sa->tls_ca_file, sb->tls_ca_file) && SAME_STR(sa->tls_cert_file, sb->tls_cert_file) &&
	       SAME_STR(sa->tls_key_file, sb->tls_key_file);
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
			log_info(NULL, NULL, "pool %s/%s retired by reload (%s): its clients finish, its servers close",
				 p->database, p->user, !rule ? "no rule matches any more" : rule->blocked ? "now blocked"
				 : "its service, server login or mode changed");
			continue;
		}
		atomic_store(&p->rule, rule);
		if (old->size != rule->size || old->min_size != rule->min_size)
			log_info(NULL, NULL, "pool %s/%s: size %d -> %d, min_size %d -> %d", p->database, p->user,
				 old->size, rule->size, old->min_size, rule->min_size);
		/* A larger size frees slots now: waiters get them as grants. */
		for (;;) {
			struct pool_waiter *w = NULL;
			pthread_mutex_lock(&p->lock);
			if (p->wait_head && worker_with_idle(p, -1) < 0 && reserve_slot(p))
				w = dequeue(p);
			pthread_mutex_unlock(&p->lock);
			if (!w)
				break;
			post_grant(p, w);
		}
	}
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
}

static void pause_one(struct pool *p)
{
	pthread_mutex_lock(&p->lock);
	p->paused = true;
	pthread_mutex_unlock(&p->lock);
}

static void resume_one(struct pool *p);

/* The registry remembers the pause first (under its lock, where pool_get reads it), then
 * each existing pool is paused under its own lock: a pool created in between starts paused.
 * The two locks are never held together. */
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
			pause_one(p);
	return 0;
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
			resume_one(p);
}

static void resume_one(struct pool *p)
{
	struct pool_waiter *grants = NULL, **tail = &grants;
	int nworkers = p->rt->nworkers;
	bool steal[nworkers > 0 ? nworkers : 1];

	pthread_mutex_lock(&p->lock);
	p->paused = false;
	/* Parked servers go to the head of the queue through their owners (the one hand-over
	 * path); when none is parked, free room becomes grants. */
	for (int i = 0; i < nworkers; i++)
		steal[i] = p->idle[i] != NULL;
	if (worker_with_idle(p, -1) < 0) {
		while (p->wait_head && reserve_slot(p)) {
			struct pool_waiter *w = dequeue(p);
			*tail = w;
			tail = &w->next;
		}
	}
	pthread_mutex_unlock(&p->lock);
	for (int i = 0; i < nworkers; i++)
		if (steal[i])
			post_steal(p, i);
	while (grants) {
		struct pool_waiter *w = grants;
		grants = w->next;
		w->next = NULL;
		post_grant(p, w);
	}
}
