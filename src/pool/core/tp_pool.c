/* The pool core (include/tuskpool.h): backends from a resolver, slots, FIFO claims with
 * one absolute deadline, per-backend backoff and circuit breaker, health checks, idle and
 * lifetime expiry, per-thread idle lists and the one cross-thread hand-over. It knows no
 * protocol, no event loop and nothing of tusk: everything outside comes through the host
 * and connector ops it is given.
 *
 * Locking: one mutex per pool (pool_lock, a futex mutex) guards every field below it in struct tp_pool, the backends,
 * the claims' private fields while queued, and the slots' state and list links. It is never
 * held while calling an op, so ops may call back into the pool. A slot's connection is
 * touched only on the slot's thread; the lock only decides who owns which slot. */
#include "tuskpool.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "tp_probes.h"

enum slot_state {
	SLOT_CONNECTING, /* connector's connect in progress (or posted) */
	SLOT_IDLE,       /* on its thread's idle list */
	SLOT_BUSY,       /* claimed */
	SLOT_CHECKING,   /* connector's check in progress */
	SLOT_TRANSIT,    /* handed to a claim by kick: detach/attach or give posted */
	SLOT_CLOSING,    /* taken off an idle list to be closed (group room): close posted */
};

struct tp_backend {
	struct tp_backend *next;
	struct tp_backend_addr addr;
	enum tp_backend_state state;
	int nslots;
	int nconnecting; /* of nslots, connects in flight */
	int failures;    /* consecutive failed connects */
	double retry_at; /* no connect before this (BACKOFF, DEAD) */
	bool probing;    /* DEAD: its one probe connect is in flight */
	bool held;       /* its last connect found the wrong kind (-ESTALE): retry_at is a short hold */
	char last_error[160]; /* why its last connect failed; "" after a success */
};

struct tp_slot {
	struct tp_pool *pool;      /* immutable */
	struct tp_backend *be;     /* immutable; kept alive by be->nslots */
	void *conn;                /* the connector's */
	enum slot_state state;
	int thread;                /* owner; changes only in the hand-over */
	double created, expires_at, idle_since, checked_at, connect_start;
	struct tp_slot *prev, *next; /* idle list of its thread */
	struct tp_claim *claim;    /* SLOT_TRANSIT: who gets it; SLOT_CONNECTING: bound claim */
	enum tp_close_reason why;  /* tp_pool_tick: why it is being closed */
	uint64_t key;              /* key of the last claim it served */
	unsigned gen;              /* the pool's generation when it connected */
	bool connected;            /* its connect succeeded (gen is set) */
	bool refill;               /* a min_slots connect (no claim asked for it) */
	bool resting;              /* SLOT_BUSY, waiting on its claimer (tp_slot_rest); under the lock */
};

/* A group: slots of several pools counted against one limit. count is changed under the
 * lock of the pool whose slot it is (atomically, as pools of a group have different locks);
 * the member list under the group's own lock, which is taken before any pool's lock. */
struct tp_member {
	struct tp_pool *pool;
	struct tp_member *next;
};
struct tp_group {
	pthread_mutex_t lock; /* members */
	struct tp_member *members;
	atomic_int count;
	atomic_int limit;
};

/* One per thread, so that a post can name (pool, thread) without an allocation. */
struct tp_thread {
	struct tp_pool *pool;
	int index;
	struct tp_slot *idle; /* most recently released first; under the lock */
	/* The connect report in progress on this thread (tp_connect_report), for the claims it
	 * answers (tp_claim.connect); written and read on this thread only. */
	const struct tp_connect_result *report;
};

struct tp_pool {
	/* immutable after tp_pool_new */
	struct tp_config cfg;
	char name[TP_NAME_MAX];
	const struct tp_host_ops *host;
	void *host_ctx;
	const struct tp_connector_ops *conn;
	void *conn_ctx;
	struct tp_thread *threads;

	struct tp_group *groups[TP_GROUPS_MAX]; /* set before the first claim */
	struct tp_member member[TP_GROUPS_MAX];
	int ngroups;

	atomic_int lock; /* everything below (pool_lock) */
	int max_slots, min_slots; /* tp_pool_resize */
	int active_max;      /* tp_pool_set_active_max: slots in use (and on their way to a claim) at most; 0: none */
	int active_peak;     /* the most in use at once since tp_pool_take_active_peak */
	bool paused, retired, dormant;
	bool group_blocked;  /* a claim waits only for room in a group */
	int cap;             /* -EUSERS: slots the backend allows; -1: none */
	double cap_until;
	bool cap_probe;      /* capped with no slot: one connect may try for room */
	unsigned gen;        /* tp_pool_reconnect */
	int refill_failures; /* min_slots connects failed in a row */
	double refill_at;    /* no min_slots connect before this */
	struct tp_backend *backends;
	int nbackends; /* not draining */
	int nslots, nidle, nbusy, nconnecting, nchecking, ntransit;
	int nresting; /* of nbusy, waiting on their claimers (tp_slot_rest): not counted by active_max */
	int nstale; /* of nslots, connected before the last tp_pool_reconnect (gen != p->gen) */
	struct tp_claim *wait_head, *wait_tail;
	int nwait;
	int npending; /* posts not run yet: destroy waits for them */
	bool stopping;
	uint32_t rng;
	unsigned rotor; /* spreads connects over equally loaded backends */
	char last_error[TP_NAME_MAX + 160];
	struct tp_stats counters; /* only the uint64_t counters are kept here */
};

/* ---- the pool's lock ----
 *
 * A futex mutex ("Futexes Are Tricky", Drepper, mutex 3): 0 free, 1 held, 2 held and maybe
 * waited for. Taken and given back without contention in one atomic instruction each,
 * inline: glibc's pthread_mutex_lock and unlock cost ~57 instructions a pair through the PLT
 * (type dispatch, owner and user counts), and every claim and every release takes the lock
 * once (callgrind, issue 28). Like a default pthread mutex it does not spin, is not
 * recursive and is never held across an op. Linux only, as the rest of tusk. */
static __attribute__((noinline)) void lock_wait(atomic_int *l, int c)
{
	if (c != 2)
		c = atomic_exchange_explicit(l, 2, memory_order_acquire);
	while (c != 0) {
		(void)syscall(SYS_futex, l, FUTEX_WAIT_PRIVATE, 2, NULL, NULL, 0);
		c = atomic_exchange_explicit(l, 2, memory_order_acquire);
	}
}

static __attribute__((noinline)) void lock_wake(atomic_int *l)
{
	atomic_store_explicit(l, 0, memory_order_release);
	(void)syscall(SYS_futex, l, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static inline void pool_lock(struct tp_pool *p)
{
	int c = 0;
	if (!atomic_compare_exchange_strong_explicit(&p->lock, &c, 1, memory_order_acquire, memory_order_relaxed))
		lock_wait(&p->lock, c);
}

static inline void pool_unlock(struct tp_pool *p)
{
	if (atomic_fetch_sub_explicit(&p->lock, 1, memory_order_release) != 1)
		lock_wake(&p->lock);
}

/* ---- small helpers ---- */

static double now_of(const struct tp_pool *p)
{
	return p->host->now(p->host_ctx);
}

static void count(const struct tp_pool *p, enum tp_event ev, double v)
{
	if (p->host->count)
		p->host->count(p->host_ctx, ev, v);
}

__attribute__((format(printf, 3, 4))) static void logf_(const struct tp_pool *p, enum tp_log_level lvl,
							  const char *fmt, ...)
{
	char line[TP_NAME_MAX * 2 + 256];
	va_list ap;
	if (!p->host->log)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	p->host->log(p->host_ctx, lvl, line);
}

/* xorshift32: jitter only, not security. Under the lock. */
static double rand01(struct tp_pool *p)
{
	uint32_t x = p->rng;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	p->rng = x;
	return (double)x / 4294967296.0;
}

/* Every post is counted so that tp_pool_destroy never frees a pool a queued function will
 * still read. Under the lock; the op itself runs after the caller unlocks (see flush). */
struct post {
	void (*fn)(void *);
	void *arg;
	int thread;
};
#define POSTS_MAX 64
/* Declared uninitialised with n = 0: v is written before it is read, and zeroing its 64
 * entries cost ~200 instructions per claim and per release (callgrind, issue 28). */
struct posts {
	struct post v[POSTS_MAX];
	int n;
};

static bool add_post(struct tp_pool *p, struct posts *ps, int thread, void (*fn)(void *), void *arg)
{
	if (ps->n == POSTS_MAX)
		return false;
	ps->v[ps->n++] = (struct post){ fn, arg, thread };
	p->npending++;
	return true;
}

static void flush_posts(struct tp_pool *p, struct posts *ps)
{
	for (int i = 0; i < ps->n; i++)
		p->host->post(p->host_ctx, ps->v[i].thread, ps->v[i].fn, ps->v[i].arg);
	ps->n = 0;
}

/* Most calls have nothing to post: the test inline, not a call (every claim flushes). */
static inline void flush(struct tp_pool *p, struct posts *ps)
{
	if (ps->n > 0)
		flush_posts(p, ps);
}

static void post_ran(struct tp_pool *p)
{
	pool_lock(p);
	p->npending--;
	pool_unlock(p);
}

const char *tp_backend_state_name(enum tp_backend_state s)
{
	switch (s) {
	case TP_BACKEND_UP: return "up";
	case TP_BACKEND_BACKOFF: return "backoff";
	case TP_BACKEND_DEAD: return "dead";
	case TP_BACKEND_DRAINING: return "draining";
	}
	return "?";
}

const char *tp_close_reason_name(enum tp_close_reason r)
{
	switch (r) {
	case TP_CLOSE_BROKEN: return "broken";
	case TP_CLOSE_IDLE: return "idle_timeout";
	case TP_CLOSE_LIFETIME: return "lifetime";
	case TP_CLOSE_HEALTH: return "health_check";
	case TP_CLOSE_REMOVED: return "backend_removed";
	case TP_CLOSE_STOPPED: return "pool_stopped";
	case TP_CLOSE_CONNECT: return "connect_failed";
	case TP_CLOSE_RECONNECT: return "reconnect";
	case TP_CLOSE_RETIRED: return "pool_retired";
	case TP_CLOSE_DORMANT: return "pool_dormant";
	case TP_CLOSE_GROUP: return "group_room";
	case TP_CLOSE_SHRUNK: return "pool_shrunk";
	case TP_CLOSE__COUNT: break;
	}
	return "?";
}

static void set_state(struct tp_pool *p, struct tp_backend *be, enum tp_backend_state st)
{
	if (be->state == st)
		return;
	TP_PROBE5(backend__state, p->name, be->addr.name, (int)be->addr.port, (int)be->state, (int)st);
	logf_(p, st == TP_BACKEND_UP ? TP_LOG_INFO : TP_LOG_WARN, "pool %s: backend %s:%u %s -> %s", p->name,
	      be->addr.name, be->addr.port, tp_backend_state_name(be->state), tp_backend_state_name(st));
	be->state = st;
}

/* ---- lists ---- */

static void idle_push(struct tp_pool *p, struct tp_slot *s)
{
	struct tp_thread *t = &p->threads[s->thread];
	s->state = SLOT_IDLE;
	s->prev = NULL;
	s->next = t->idle;
	if (t->idle)
		t->idle->prev = s;
	t->idle = s;
	p->nidle++;
}

static void idle_unlink(struct tp_pool *p, struct tp_slot *s)
{
	struct tp_thread *t = &p->threads[s->thread];
	if (s->prev)
		s->prev->next = s->next;
	else
		t->idle = s->next;
	if (s->next)
		s->next->prev = s->prev;
	s->prev = s->next = NULL;
	p->nidle--;
}

static void enqueue(struct tp_pool *p, struct tp_claim *c)
{
	c->next = NULL;
	c->queued = true;
	if (p->wait_tail)
		p->wait_tail->next = c;
	else
		p->wait_head = c;
	p->wait_tail = c;
	p->nwait++;
}

static void unlink_claim(struct tp_pool *p, struct tp_claim *c, struct tp_claim *prev)
{
	if (prev)
		prev->next = c->next;
	else
		p->wait_head = c->next;
	if (p->wait_tail == c)
		p->wait_tail = prev;
	c->next = NULL;
	c->queued = false;
	p->nwait--;
}

static struct tp_claim *dequeue(struct tp_pool *p)
{
	struct tp_claim *c = p->wait_head;
	if (c)
		unlink_claim(p, c, NULL);
	return c;
}

/* ---- groups ---- */

/* Room for one more slot of p in each of its groups: false (nothing taken) when one is
 * full. Under p's lock. */
static bool group_reserve(struct tp_pool *p)
{
	for (int i = 0; i < p->ngroups; i++) {
		struct tp_group *g = p->groups[i];
		int limit = atomic_load_explicit(&g->limit, memory_order_relaxed);
		int n = atomic_fetch_add_explicit(&g->count, 1, memory_order_acq_rel);
		if (limit > 0 && n >= limit) {
			atomic_fetch_sub_explicit(&g->count, 1, memory_order_acq_rel);
			while (i-- > 0)
				atomic_fetch_sub_explicit(&p->groups[i]->count, 1, memory_order_acq_rel);
			return false;
		}
	}
	return true;
}

static void group_unreserve(struct tp_pool *p)
{
	for (int i = 0; i < p->ngroups; i++)
		atomic_fetch_sub_explicit(&p->groups[i]->count, 1, memory_order_acq_rel);
}

static bool group_limited(const struct tp_group *g)
{
	return atomic_load_explicit(&g->limit, memory_order_relaxed) > 0;
}

static void kick(struct tp_pool *p);

/* Room appeared in p's groups: the other pools may connect for their claims. No pool lock
 * held by the caller. */
static void group_wake(struct tp_pool *p)
{
	for (int i = 0; i < p->ngroups; i++) {
		struct tp_group *g = p->groups[i];
		if (!group_limited(g))
			continue;
		pthread_mutex_lock(&g->lock);
		for (struct tp_member *m = g->members; m; m = m->next)
			if (m->pool != p)
				kick(m->pool);
		pthread_mutex_unlock(&g->lock);
	}
}

/* Another pool of p's limited groups has a claim held back only by the group. No pool lock
 * held by the caller. */
static bool group_mate_blocked(struct tp_pool *p)
{
	bool blocked = false;
	for (int i = 0; i < p->ngroups && !blocked; i++) {
		struct tp_group *g = p->groups[i];
		if (!group_limited(g))
			continue;
		pthread_mutex_lock(&g->lock);
		for (struct tp_member *m = g->members; m && !blocked; m = m->next) {
			if (m->pool == p)
				continue;
			pool_lock(m->pool);
			blocked = m->pool->group_blocked && m->pool->wait_head;
			pool_unlock(m->pool);
		}
		pthread_mutex_unlock(&g->lock);
	}
	return blocked;
}

static void run_close(void *arg);

/* p's claim is held back only by a group: close one idle slot of another pool of the group
 * (on its thread); its room then wakes p (group_wake). No pool lock held by the caller. */
static void group_evict(struct tp_pool *p)
{
	for (int i = 0; i < p->ngroups; i++) {
		struct tp_group *g = p->groups[i];
		bool done = false;
		if (!group_limited(g))
			continue;
		pthread_mutex_lock(&g->lock);
		for (struct tp_member *m = g->members; m && !done; m = m->next) {
			struct tp_pool *q = m->pool;
			struct posts ps;
			ps.n = 0;
			if (q == p)
				continue;
			pool_lock(q);
			for (int t = 0; t < q->cfg.nthreads && !done; t++) {
				struct tp_slot *s = q->threads[t].idle;
				if (!s)
					continue;
				idle_unlink(q, s);
				s->state = SLOT_CLOSING;
				s->why = TP_CLOSE_GROUP;
				add_post(q, &ps, s->thread, run_close, s);
				done = true;
			}
			pool_unlock(q);
			flush(q, &ps);
		}
		pthread_mutex_unlock(&g->lock);
		if (done)
			return;
	}
}

/* A slot's room is given back: counts, groups and its backend, which is forgotten when it
 * was removed and this was its last slot. Under the lock. */
static void drop_slot_locked(struct tp_pool *p, struct tp_slot *s)
{
	struct tp_backend *be = s->be;
	p->nslots--;
	if (s->connected && s->gen != p->gen)
		p->nstale--;
	group_unreserve(p);
	if (--be->nslots == 0 && be->state == TP_BACKEND_DRAINING) {
		struct tp_backend **pp = &p->backends;
		while (*pp && *pp != be)
			pp = &(*pp)->next;
		if (*pp)
			*pp = be->next;
		free(be);
	}
}

/* ---- serving the queue ---- */

static void run_connect(void *arg);
static void run_fail(void *arg);
static void run_detach(void *arg);
static void run_give(void *arg);
static void run_attach(void *arg);

/* A backend that may take a new connect now, or NULL: one with no connect in flight before
 * one with, then the one with the fewest slots. With several backends, a backend has at
 * most one connect in flight more than the connections it has open (a slow start): a slow
 * or black-holed backend, whose connects hang until their timeout, holds at most one claim
 * while the others serve the rest; claims wait in the queue meanwhile, and each finished
 * connect starts the next ones. Under the lock. */
static double backend_share(const struct tp_backend *be)
{
	return be->addr.weight ? (double)be->addr.weight : 0.01;
}

static struct tp_backend *pick_backend(struct tp_pool *p, double now)
{
	/* Without a per-backend bound, the pool's own (the reserve included: kick_locked bounds it). */
	int per = p->cfg.max_per_backend > 0 ? p->cfg.max_per_backend : p->max_slots + p->cfg.reserve_slots;
	struct tp_backend *best = NULL;
	unsigned i = 0, start = p->rotor++;
	int n = 0;
	/* The best priority among backends that are up (none up: among all, so that probes and
	 * backoffs still find one). */
	unsigned prio = UINT16_MAX + 1u, prio_any = UINT16_MAX + 1u;
	for (struct tp_backend *be = p->backends; be; be = be->next) {
		n++;
		if (be->state == TP_BACKEND_DRAINING)
			continue;
		if (be->addr.priority < prio_any)
			prio_any = be->addr.priority;
		if (be->state != TP_BACKEND_DEAD && now >= be->retry_at && be->addr.priority < prio)
			prio = be->addr.priority;
	}
	if (prio > UINT16_MAX)
		prio = prio_any;
	/* Start the scan at a rotating position so that ties spread. */
	for (int k = 0; k < n; k++) {
		struct tp_backend *be = p->backends;
		unsigned idx = (start + (unsigned)k) % (unsigned)n;
		for (i = 0; i < idx; i++)
			be = be->next;
		if (be->state == TP_BACKEND_DRAINING || be->nslots >= per || now < be->retry_at ||
		    be->addr.priority != prio)
			continue;
		if (be->state == TP_BACKEND_DEAD && be->probing)
			continue;
		if (p->nbackends > 1 && be->nconnecting > be->nslots - be->nconnecting)
			continue;
		bool busy = be->nconnecting > 0;
		/* The one whose share after this connect, (slots + 1) / weight, is least. */
		if (!best || (!busy && best->nconnecting > 0) ||
		    (busy == (best->nconnecting > 0) &&
		     (be->nslots + 1) / backend_share(be) < (best->nslots + 1) / backend_share(best)))
			best = be;
	}
	return best;
}

/* Some backend may be connected to now (not backing off, not dead before its probe). */
static bool any_ready(const struct tp_pool *p, double now)
{
	for (const struct tp_backend *be = p->backends; be; be = be->next)
		if (be->state != TP_BACKEND_DRAINING && now >= be->retry_at &&
		    !(be->state == TP_BACKEND_DEAD && be->probing))
			return true;
	return false;
}

/* A backend other than skip may be connected to now. Under the lock. */
static bool other_ready(const struct tp_pool *p, const struct tp_backend *skip, double now)
{
	for (const struct tp_backend *be = p->backends; be; be = be->next)
		if (be != skip && be->state != TP_BACKEND_DRAINING && now >= be->retry_at &&
		    !(be->state == TP_BACKEND_DEAD && be->probing))
			return true;
	return false;
}

/* Some backend other than skip is only held after a -ESTALE connect (the set is changing):
 * a claim waits for its hold to end or the set to change rather than failing. Under the lock. */
static bool other_held(const struct tp_pool *p, const struct tp_backend *skip)
{
	for (const struct tp_backend *be = p->backends; be; be = be->next)
		if (be != skip && be->state != TP_BACKEND_DRAINING && be->held)
			return true;
	return false;
}

/* Every backend the resolver lists is dead (breaker open) and not due for its probe, and
 * no slot exists that could serve a claim (a probe in flight holds one): waiting is
 * pointless. A dead backend due for a probe is not "all dead": the claim that finds it
 * waits for that one connect, which is how a dead backend comes back. Under the lock. */
static bool all_dead(const struct tp_pool *p, double now)
{
	if (p->nbackends == 0 || p->nslots > 0)
		return false;
	for (const struct tp_backend *be = p->backends; be; be = be->next)
		if (be->state != TP_BACKEND_DRAINING && (be->state != TP_BACKEND_DEAD || now >= be->retry_at))
			return false;
	return true;
}

/* The n-th queued claim (0 = head), or NULL. Under the lock. */
static struct tp_claim *nth_waiter(const struct tp_pool *p, int n)
{
	struct tp_claim *c = p->wait_head;
	while (c && n-- > 0)
		c = c->next;
	return c;
}

/* Slots allowed now: max_slots, or less while a -EUSERS cap holds. Under the lock. */
static int max_now(struct tp_pool *p, double now)
{
	if (p->cap >= 0 && now >= p->cap_until)
		p->cap = -1;
	return p->cap >= 0 && p->cap < p->max_slots ? p->cap : p->max_slots;
}

/* Slots active_max counts: in use but not resting, in hand-over, connecting. Under the lock. */
static int in_use(const struct tp_pool *p)
{
	return p->nbusy - p->nresting + p->ntransit + p->nconnecting;
}

/* May one more slot go to a claim? Below active_max counting slots in use, in hand-over and
 * connecting (each connect serves a claim when it is done; a min_slots connect is counted
 * too: it only delays a claim until it lands). Under the lock. */
static bool active_room(const struct tp_pool *p)
{
	return p->active_max <= 0 || in_use(p) < p->active_max;
}

/* After one more slot went to a claim (or started connecting for one). Under the lock. */
static void note_active(struct tp_pool *p)
{
	int n = in_use(p);
	if (n > p->active_peak)
		p->active_peak = n;
}

#define PREFER_SCAN 32 /* idle slots of a thread looked at for the claim's key */

/* The idle slot of thread for a claim with key: the one last claimed with key, else the
 * most recently released; never one of an older generation. Under the lock. */
static struct tp_slot *pick_idle(const struct tp_pool *p, int thread, uint64_t key)
{
	struct tp_slot *best = NULL;
	int i = 0;
	for (struct tp_slot *s = p->threads[thread].idle; s && i < PREFER_SCAN; s = s->next, i++) {
		if (s->gen != p->gen)
			continue;
		if (!best)
			best = s;
		if (key && s->key == key)
			return s;
		if (!key)
			break;
	}
	return best;
}

/* Put c back at the head of the queue (it was served before those queued now). */
static void push_head(struct tp_pool *p, struct tp_claim *c)
{
	c->next = p->wait_head;
	c->queued = true;
	p->wait_head = c;
	if (!p->wait_tail)
		p->wait_tail = c;
	p->nwait++;
}

/* A new slot on thread, connecting (posted), for claim c (bind_connects) or none. Under the
 * lock; false when no backend may take it, a group is full or memory is short. */
static bool start_connect(struct tp_pool *p, struct posts *ps, double now, int thread, struct tp_claim *c,
			  bool refill)
{
	struct tp_backend *be = pick_backend(p, now);
	if (!be)
		return false;
	if (!group_reserve(p)) {
		p->group_blocked = true;
		return false;
	}
	struct tp_slot *s = calloc(1, sizeof *s);
	if (!s) {
		group_unreserve(p);
		return false;
	}
	s->pool = p;
	s->be = be;
	s->state = SLOT_CONNECTING;
	s->thread = thread;
	s->claim = c;
	s->refill = refill;
	be->nslots++;
	be->nconnecting++;
	if (be->state == TP_BACKEND_DEAD)
		be->probing = true;
	p->nslots++;
	p->nconnecting++;
	note_active(p);
	p->cap_probe = false;
	add_post(p, ps, s->thread, run_connect, s);
	return true;
}

/* Work the queue from any thread: hand idle slots to waiters (one of the waiter's own
 * thread first), open new slots for waiters no connect covers yet, fail waiters fast when
 * every backend is dead. Only posts: nothing here runs an op or a claim's callback inline.
 * Under the lock; the caller flushes ps after unlocking. */
static void kick_locked(struct tp_pool *p, struct posts *ps)
{
	double now = now_of(p);
	if (p->stopping || p->paused)
		return;
	while (p->wait_head && p->nidle > 0 && ps->n < POSTS_MAX && active_room(p)) {
		struct tp_claim *c = p->wait_head;
		struct tp_slot *s = pick_idle(p, c->thread, c->key);
		for (int t = 0; !s && t < p->cfg.nthreads; t++)
			if (t != c->thread)
				s = pick_idle(p, t, c->key);
		if (!s)
			break;
		idle_unlink(p, s);
		(void)dequeue(p);
		s->state = SLOT_TRANSIT;
		p->ntransit++;
		note_active(p);
		s->claim = c;
		/* On its own thread a slot needs no hand-over, only a turn of that loop. */
		add_post(p, ps, s->thread, s->thread == c->thread ? run_give : run_detach, s);
	}
	/* Connects in flight each serve one waiter (whichever is head when it is done, or the
	 * one it is bound to). */
	bool bind = p->cfg.bind_connects;
	int max = max_now(p, now);
	/* The reserve: for a queue whose head has waited long enough, and never past a cap. */
	if (p->cfg.reserve_slots > 0 && p->wait_head && max == p->max_slots &&
	    now - p->wait_head->start >= p->cfg.reserve_after) {
		max += p->cfg.reserve_slots;
	}
	p->group_blocked = false;
	while (p->wait_head && (bind || p->nwait > p->nconnecting) && ps->n < POSTS_MAX) {
		if (p->nslots >= max && !(p->cap_probe && p->nslots == 0))
			break;
		if (!active_room(p))
			break;
		struct tp_claim *c = bind ? p->wait_head : nth_waiter(p, p->nconnecting);
		if (!start_connect(p, ps, now, c->thread, bind ? c : NULL, false))
			break;
		if (p->nslots > p->max_slots)
			p->counters.reserve_connects++;
		if (bind)
			(void)dequeue(p);
	}
	if (p->wait_head && all_dead(p, now)) {
		struct tp_claim *c;
		while (ps->n < POSTS_MAX && (c = dequeue(p))) {
			c->err = -EHOSTUNREACH;
			add_post(p, ps, c->thread, run_fail, c);
		}
	}
}

static void kick(struct tp_pool *p)
{
	struct posts ps;
	ps.n = 0;
	pool_lock(p);
	kick_locked(p, &ps);
	bool evict = p->group_blocked && p->wait_head;
	pool_unlock(p);
	flush(p, &ps);
	if (evict)
		group_evict(p);
}

static void claim_done(struct tp_claim *c, struct tp_slot *s, int err)
{
	struct tp_pool *p = c->pool;
	double waited = now_of(p) - c->start;
	pool_lock(p);
	if (err == 0)
		p->counters.served++;
	else if (err == -ETIMEDOUT)
		p->counters.timeouts++;
	pool_unlock(p);
	TP_PROBE4(claim__done, p->name, c->thread, (long long)(waited * 1e6), err);
	if (err == 0)
		count(p, TP_EV_CLAIM_WAIT, waited);
	else
		count(p, err == -ETIMEDOUT ? TP_EV_CLAIM_TIMEOUT : TP_EV_CLAIM_FAILED, waited);
	c->connect = p->threads[c->thread].report;
	c->done(c, s, err);
}

static void run_fail(void *arg)
{
	struct tp_claim *c = arg;
	struct tp_pool *p = c->pool;
	post_ran(p);
	claim_done(c, NULL, c->err);
}

static void close_slot(struct tp_slot *s, enum tp_close_reason why)
{
	struct tp_pool *p = s->pool;
	TP_PROBE4(slot__closed, p->name, s->be->addr.name, (int)s->be->addr.port, tp_close_reason_name(why));
	count(p, TP_EV_CLOSED, (double)why);
	p->conn->close(p->conn_ctx, s, why);
	pool_lock(p);
	drop_slot_locked(p, s);
	pool_unlock(p);
	free(s);
	/* A slot fewer may let a waiter connect (room under max_slots, or in a group). */
	kick(p);
	if (p->ngroups)
		group_wake(p);
}

static void run_close(void *arg)
{
	struct tp_slot *s = arg;
	post_ran(s->pool);
	close_slot(s, s->why);
}

/* The claim a slot released on thread goes to: the head, or (pass_over_max) a claim of the
 * same thread a little behind it: one that queued at most pass_over_age after the head.
 * The bound is relative, not the head's own age: when many clients queue (1,000 on 20
 * servers) every head is old, and an absolute bound sent half of all releases through a
 * cross-thread hand-over, whose wake-up leaves the server idle meanwhile. A head whose
 * thread has no slots is still served within pass_over_age of the claims of its time.
 * Under the lock. */
#define PASS_OVER_SCAN 128
static struct tp_claim *dequeue_near(struct tp_pool *p, int thread)
{
	struct tp_claim *head = p->wait_head;
	if (p->cfg.pass_over_max <= 0 || head->thread == thread || head->passed_over >= p->cfg.pass_over_max)
		return dequeue(p);
	int i = 0;
	for (struct tp_claim *prev = head, *c = head->next; c && i < PASS_OVER_SCAN; prev = c, c = c->next, i++) {
		if (c->start - head->start > p->cfg.pass_over_age)
			break; /* the queue is in arrival order: the rest came later still */
		if (c->thread != thread)
			continue;
		unlink_claim(p, c, prev);
		head->passed_over++;
		return c;
	}
	return dequeue(p);
}

/* s leaves SLOT_BUSY (released or broken). Under the lock. */
static void unbusy(struct tp_pool *p, struct tp_slot *s)
{
	p->nbusy--;
	if (s->resting) {
		s->resting = false;
		p->nresting--;
	}
}

/* A slot free on its own thread (released, connected, checked): to a waiter, inline when
 * the waiter is on this thread, else through the hand-over; or onto the idle list; or
 * closed when the pool's policy keeps no more of it. */
static void give_free_slot(struct tp_slot *s, bool was_busy)
{
	struct tp_pool *p = s->pool;
	struct tp_claim *c = NULL, *away = NULL;
	enum tp_close_reason why = TP_CLOSE_STOPPED;
	bool close_it = true, parked = false;
	double now = now_of(p);
	/* Read before p's lock: it takes the other pools' locks. */
	bool mate_blocked = p->ngroups && group_mate_blocked(p);

	pool_lock(p);
	if (was_busy)
		unbusy(p, s);
	if (p->stopping || s->be->state == TP_BACKEND_DRAINING) {
		why = p->stopping ? TP_CLOSE_STOPPED : TP_CLOSE_REMOVED;
	} else if (s->gen != p->gen) {
		why = TP_CLOSE_RECONNECT;
	} else if (s->expires_at && now >= s->expires_at) {
		why = TP_CLOSE_LIFETIME;
	} else if (p->wait_head && !p->paused && active_room(p)) {
		close_it = false;
		c = dequeue_near(p, s->thread);
		s->key = c->key;
		if (c->thread == s->thread) {
			s->state = SLOT_BUSY;
			p->nbusy++;
			note_active(p);
		} else {
			/* We are on the owner: detach here, after unlocking; the claimer attaches. */
			s->state = SLOT_TRANSIT;
			p->ntransit++;
			note_active(p);
			p->npending++; /* the attach post, dropped by run_attach */
			s->claim = c;
			away = c;
			c = NULL;
		}
	} else if (p->retired) {
		why = TP_CLOSE_RETIRED;
	} else if (p->dormant) {
		why = TP_CLOSE_DORMANT;
	} else if (p->nslots > p->max_slots) {
		why = TP_CLOSE_SHRUNK;
	} else if (mate_blocked) {
		why = TP_CLOSE_GROUP;
	} else {
		close_it = false;
		parked = true;
		s->idle_since = now;
		s->checked_at = now;
		idle_push(p, s);
	}
	pool_unlock(p);
	/* Still on its thread, before any post that could take it from the idle list runs. */
	if (parked && p->conn->park)
		p->conn->park(p->conn_ctx, s);
	if (away) {
		/* One message, not two: the release runs on the owner already. */
		if (p->conn->detach)
			p->conn->detach(p->conn_ctx, s);
		p->host->post(p->host_ctx, away->thread, run_attach, s);
	} else if (close_it)
		close_slot(s, why);
	else if (c)
		claim_done(c, s, 0);
}

/* ---- the hand-over: the one path by which a slot changes threads ---- */

static void run_attach(void *arg)
{
	struct tp_slot *s = arg;
	struct tp_pool *p = s->pool;
	struct tp_claim *c = s->claim;
	post_ran(p);
	if (p->conn->attach)
		p->conn->attach(p->conn_ctx, s, c->thread);
	pool_lock(p);
	s->thread = c->thread;
	s->claim = NULL;
	s->key = c->key;
	s->state = SLOT_BUSY;
	p->ntransit--;
	p->nbusy++;
	p->counters.handovers++;
	pool_unlock(p);
	count(p, TP_EV_HANDOVER, 0);
	claim_done(c, s, 0);
}

static void run_detach(void *arg)
{
	struct tp_slot *s = arg;
	struct tp_pool *p = s->pool;
	if (p->conn->detach)
		p->conn->detach(p->conn_ctx, s);
	/* This post's count in npending carries over to the attach (run_attach drops it). */
	p->host->post(p->host_ctx, s->claim->thread, run_attach, s);
}

/* An idle slot given to a claim of its own thread by kick (from another thread). */
static void run_give(void *arg)
{
	struct tp_slot *s = arg;
	struct tp_pool *p = s->pool;
	struct tp_claim *c = s->claim;
	pool_lock(p);
	p->npending--;
	s->claim = NULL;
	s->key = c->key;
	s->state = SLOT_BUSY;
	p->ntransit--;
	p->nbusy++;
	pool_unlock(p);
	claim_done(c, s, 0);
}

/* ---- connects ---- */

static void run_connect(void *arg)
{
	struct tp_slot *s = arg;
	struct tp_pool *p = s->pool;
	post_ran(p);
	s->connect_start = now_of(p);
	TP_PROBE4(connect__start, p->name, s->be->addr.name, (int)s->be->addr.port, s->thread);
	pool_lock(p);
	p->counters.connects++;
	pool_unlock(p);
	p->conn->connect(p->conn_ctx, s, &s->be->addr);
}

/* Full jitter below a cap doubling from backoff_first up to backoff_max, step 1 first. */
static double backoff_wait(struct tp_pool *p, int step)
{
	double cap = p->cfg.backoff_first;
	for (int i = 1; i < step && cap < p->cfg.backoff_max; i++)
		cap *= 2;
	if (cap > p->cfg.backoff_max)
		cap = p->cfg.backoff_max;
	return cap * rand01(p);
}

static void post_sweeps(struct tp_pool *p);

void tp_connect_done(struct tp_slot *s, int err, const char *reason)
{
	struct tp_connect_result r = { .err = err, .reason = reason };
	tp_connect_report(s, &r);
}

static void connect_done(struct tp_slot *s, int err, const char *reason);

void tp_connect_report(struct tp_slot *s, const struct tp_connect_result *r)
{
	struct tp_thread *t = &s->pool->threads[s->thread];
	const struct tp_connect_result *outer = t->report;
	t->report = r;
	connect_done(s, r->err, r->reason);
	t->report = outer;
}

static void connect_done(struct tp_slot *s, int err, const char *reason)
{
	struct tp_pool *p = s->pool;
	struct tp_backend *be = s->be;
	struct tp_claim *bound = s->claim;
	double now = now_of(p), took = now - s->connect_start;
	bool full = err == -EUSERS, stale = err == -ESTALE, lowered = false, requeued = false, sleep = false;
	int cap = 0;

	TP_PROBE5(connect__done, p->name, be->addr.name, (int)be->addr.port, err, (long long)(took * 1e6));
	count(p, err ? TP_EV_CONNECT_FAILED : TP_EV_CONNECT_OK, took);
	pool_lock(p);
	p->nconnecting--;
	be->nconnecting--;
	be->probing = false;
	be->held = stale;
	s->claim = NULL;
	if (err == 0) {
		be->failures = 0;
		be->retry_at = 0;
		be->last_error[0] = '\0';
		if (be->state != TP_BACKEND_DRAINING)
			set_state(p, be, TP_BACKEND_UP);
		if (s->refill) {
			p->refill_failures = 0;
			p->refill_at = 0;
		}
		/* The backend took one more than the cap said: someone else left. */
		if (p->cap >= 0 && p->nslots > p->cap)
			p->cap = p->nslots;
		s->created = now;
		s->gen = p->gen;
		s->connected = true;
		if (p->cfg.lifetime > 0)
			s->expires_at = now + p->cfg.lifetime * (1.0 - 0.1 * rand01(p));
		if (bound && !p->stopping) {
			s->state = SLOT_BUSY;
			s->key = bound->key;
			p->nbusy++;
			bool waiting = p->wait_head != NULL;
			pool_unlock(p);
			claim_done(bound, s, 0);
			/* Claims held back by the slow start (pick_backend) may connect now. */
			if (waiting)
				kick(p);
			return;
		}
		pool_unlock(p);
		if (bound)
			claim_done(bound, NULL, -ECANCELED);
		give_free_slot(s, false);
		return;
	}
	p->counters.connect_failures++;
	snprintf(p->last_error, sizeof p->last_error, "%s:%u: %s", be->addr.name, be->addr.port,
		 reason ? reason : "connect failed");
	snprintf(be->last_error, sizeof be->last_error, "%s", reason ? reason : "connect failed");
	if (full) {
		/* Up but full: the slots it has (this one excluded) are what it takes for now. */
		cap = p->nslots - 1;
		lowered = p->cap < 0 || cap < p->cap;
		p->cap = cap;
		p->cap_until = now + (p->cfg.full_hold > 0 ? p->cfg.full_hold : 60.0);
		if (bound && !p->stopping) {
			push_head(p, bound);
			requeued = true;
		}
	} else if (stale) {
		/* Not a failure, but not worth another connect at once either: the host may not
		 * have a new set yet (a switchover's new primary is still known as a standby). */
		be->retry_at = now + (p->cfg.backoff_first > 0.1 ? p->cfg.backoff_first : 0.1);
	} else if (err != -EPERM && be->state != TP_BACKEND_DRAINING) {
		int after = p->cfg.backoff_after > 0 ? p->cfg.backoff_after : 1;
		be->failures++;
		if (be->failures >= after) {
			/* Full jitter at every step, the cap included: retries of many pools never align. */
			bool dead = be->failures >= p->cfg.breaker_failures;
			be->retry_at = now + backoff_wait(p, dead ? 1 << 20 : be->failures - after + 1);
			set_state(p, be, dead ? TP_BACKEND_DEAD : TP_BACKEND_BACKOFF);
		}
	}
	/* The backend failed (or was removed meanwhile, e.g. for its role), not the claim: a
	 * bound claim tries another backend that may be connected to now (back at the head, its
	 * deadline unchanged). Once none is left it fails fast with every backend's last error
	 * (tp_pool_last_error). A refused login (-EPERM) is the claim's own. A backend of the
	 * wrong kind (-ESTALE) means the set is changing: the claim waits for the new one. */
	if (!full && err != -EPERM && bound && !p->stopping && now < bound->deadline) {
		if (stale || other_ready(p, be, now) || other_held(p, be)) {
			push_head(p, bound);
			requeued = true;
		} else if (p->nbackends > 1) {
			err = -EHOSTUNREACH;
		}
	}
	if (s->refill) {
		p->refill_failures++;
		/* +-25% around the doubling step: nothing claims, so no herd to spread, and a
		 * growing gap is what an operator reading the log expects. */
		double step = p->cfg.backoff_first;
		for (int i = 1; i < p->refill_failures && step < p->cfg.backoff_max; i++)
			step *= 2;
		if (step > p->cfg.backoff_max)
			step = p->cfg.backoff_max;
		p->refill_at = now + step * (0.75 + 0.5 * rand01(p));
		if (p->cfg.dormant_after > 0 && p->refill_failures >= p->cfg.dormant_after && !p->wait_head &&
		    p->nbusy == 0 && !p->dormant && !p->retired) {
			p->dormant = true;
			sleep = true;
		}
	}
	pool_unlock(p);
	if (full && lowered)
		logf_(p, TP_LOG_INFO, "pool %s: %s:%u has no room for another connection (%s): at most %d slot%s for a while",
		      p->name, be->addr.name, be->addr.port, reason ? reason : "full", cap, cap == 1 ? "" : "s");
	else if (!full)
		logf_(p, TP_LOG_WARN, "pool %s: connect to %s:%u failed: %s", p->name, be->addr.name, be->addr.port,
		      reason ? reason : "connect failed");
	if (sleep)
		logf_(p, TP_LOG_WARN, "pool %s: dormant: its last %d min_slots connects failed with nothing claimed",
		      p->name, p->cfg.dormant_after);
	if (bound && !requeued)
		claim_done(bound, NULL, p->stopping ? -ECANCELED : err);
	close_slot(s, TP_CLOSE_CONNECT);
	if (sleep)
		post_sweeps(p);
}

/* ---- health ---- */

bool tp_idle_broken(struct tp_slot *s)
{
	struct tp_pool *p = s->pool;
	pool_lock(p);
	bool mine = s->state == SLOT_IDLE;
	if (mine)
		idle_unlink(p, s);
	pool_unlock(p);
	TP_PROBE4(health, p->name, s->be->addr.name, (int)s->be->addr.port, 0);
	if (mine)
		close_slot(s, TP_CLOSE_HEALTH);
	return mine;
}

void tp_check_done(struct tp_slot *s, bool ok)
{
	struct tp_pool *p = s->pool;
	TP_PROBE4(health, p->name, s->be->addr.name, (int)s->be->addr.port, (int)ok);
	pool_lock(p);
	p->nchecking--;
	pool_unlock(p);
	if (!ok) {
		close_slot(s, TP_CLOSE_HEALTH);
		return;
	}
	/* A backend removed meanwhile, or a stop, closes it there. */
	give_free_slot(s, false);
}

/* ---- public API ---- */
struct tp_pool *tp_pool_new(const struct tp_config *cfg, const struct tp_host_ops *host, void *host_ctx,
			    const struct tp_connector_ops *conn, void *conn_ctx)
{
	if (!cfg || !host || !host->now || !host->post || !conn || !conn->connect || !conn->close ||
	    cfg->nthreads < 1 || cfg->max_slots < 1 || cfg->max_per_backend < 0 || cfg->backoff_first <= 0 ||
	    cfg->backoff_max < cfg->backoff_first || cfg->breaker_failures < 1 || cfg->min_slots < 0 ||
	    cfg->min_slots > cfg->max_slots || cfg->home_thread < 0 || cfg->home_thread >= cfg->nthreads ||
	    cfg->pass_over_max < 0 || cfg->backoff_after < 0 || cfg->dormant_after < 0) {
		errno = EINVAL;
		return NULL;
	}
	struct tp_pool *p = calloc(1, sizeof *p);
	if (!p)
		return NULL;
	p->threads = calloc((size_t)cfg->nthreads, sizeof *p->threads);
	if (!p->threads) {
		free(p);
		return NULL;
	}
	p->cfg = *cfg;
	snprintf(p->name, sizeof p->name, "%s", cfg->name ? cfg->name : "pool");
	p->cfg.name = p->name;
	p->host = host;
	p->host_ctx = host_ctx;
	p->conn = conn;
	p->conn_ctx = conn_ctx;
	for (int i = 0; i < cfg->nthreads; i++) {
		p->threads[i].pool = p;
		p->threads[i].index = i;
	}
	p->rng = cfg->seed ? cfg->seed : (uint32_t)time(NULL) | 1u;
	p->max_slots = cfg->max_slots;
	p->min_slots = cfg->min_slots;
	p->cap = -1;
	atomic_init(&p->lock, 0);
	return p;
}

int tp_pool_set_backends(struct tp_pool *p, const struct tp_backend_addr *list, int n)
{
	int added = 0, removed = 0;
	if (n < 0 || (n > 0 && !list))
		return -EINVAL;
	if (n == 0) {
		/* Keep the last good set: an empty answer is more likely a resolver failure. */
		TP_PROBE4(resolver__update, p->name, 0, 0, 0);
		logf_(p, TP_LOG_WARN, "pool %s: the resolver found no backend; keeping the last %d", p->name,
		      p->nbackends);
		return 0;
	}
	struct tp_backend *fresh[n];
	for (int i = 0; i < n; i++) {
		fresh[i] = calloc(1, sizeof *fresh[i]);
		if (!fresh[i]) {
			while (i-- > 0)
				free(fresh[i]);
			return -ENOMEM;
		}
		fresh[i]->addr = list[i];
		fresh[i]->addr.name[TP_NAME_MAX - 1] = '\0';
	}
	pool_lock(p);
	for (struct tp_backend *be = p->backends; be; be = be->next) {
		bool listed = false;
		for (int i = 0; i < n && !listed; i++)
			listed = be->addr.port == list[i].port && strcmp(be->addr.name, fresh[i]->addr.name) == 0;
		if (!listed && be->state != TP_BACKEND_DRAINING) {
			/* Never marked dead for this: it simply gets no new slots. */
			set_state(p, be, TP_BACKEND_DRAINING);
			removed++;
		} else if (listed && be->state == TP_BACKEND_DRAINING) {
			set_state(p, be, be->failures ? TP_BACKEND_BACKOFF : TP_BACKEND_UP);
			added++;
		}
	}
	for (int i = 0; i < n; i++) {
		bool known = false;
		for (struct tp_backend *be = p->backends; be && !known; be = be->next)
			known = be->addr.port == fresh[i]->addr.port && strcmp(be->addr.name, fresh[i]->addr.name) == 0;
		if (known) {
			for (struct tp_backend *be = p->backends; be; be = be->next)
				if (be->addr.port == fresh[i]->addr.port && strcmp(be->addr.name, fresh[i]->addr.name) == 0) {
					be->addr.weight = fresh[i]->addr.weight;
					be->addr.priority = fresh[i]->addr.priority;
				}
			free(fresh[i]);
			continue;
		}
		fresh[i]->state = TP_BACKEND_UP;
		fresh[i]->next = p->backends;
		p->backends = fresh[i];
		added++;
	}
	/* Forget removed backends that hold no slot. */
	int live = 0;
	for (struct tp_backend **pp = &p->backends; *pp;) {
		struct tp_backend *be = *pp;
		if (be->state == TP_BACKEND_DRAINING && be->nslots == 0) {
			*pp = be->next;
			free(be);
			continue;
		}
		live += be->state != TP_BACKEND_DRAINING;
		pp = &be->next;
	}
	p->nbackends = live;
	pool_unlock(p);
	TP_PROBE4(resolver__update, p->name, live, added, removed);
	logf_(p, TP_LOG_INFO, "pool %s: resolver: %d backends (%d added, %d removed)", p->name, live, added, removed);
	kick(p);
	return 0;
}

int tp_claim(struct tp_pool *p, struct tp_claim *c, int thread, double deadline, struct tp_slot **out)
{
	if (!p)
		return -EINVAL;
	return tp_claim_at(p, c, thread, now_of(p), deadline, out);
}

int tp_claim_at(struct tp_pool *p, struct tp_claim *c, int thread, double now, double deadline, struct tp_slot **out)
{
	struct posts ps;
	ps.n = 0;
	struct tp_slot *s = NULL;
	int rc = -EINPROGRESS;

	if (!p || !c || !c->done || !out || thread < 0 || thread >= p->cfg.nthreads)
		return -EINVAL;
	*out = NULL;
	TP_PROBE3(claim__start, p->name, thread, (long long)((deadline - now) * 1e6));
	pool_lock(p);
	/* A claim still queued must not be queued twice (that corrupts the queue). queued is
	 * only written under the lock, and a zeroed claim reads false. */
	if (c->queued) {
		pool_unlock(p);
		return -EBUSY;
	}
	c->pool = p;
	c->thread = thread;
	c->start = now;
	c->deadline = deadline;
	c->slot = NULL;
	c->err = 0;
	p->counters.claims++;
	p->dormant = false; /* a claim wakes a sleeping pool */
	c->passed_over = 0;
	if (p->stopping) {
		rc = -ECANCELED;
	} else if (!p->paused && !p->wait_head && active_room(p) && (s = pick_idle(p, thread, c->key))) {
		/* Strict FIFO: only when nobody waits may a claim skip the queue. */
		idle_unlink(p, s);
		s->state = SLOT_BUSY;
		s->key = c->key;
		p->nbusy++;
		note_active(p);
		p->counters.served++;
		rc = 0;
	} else if (!p->paused && all_dead(p, c->start)) {
		rc = -EHOSTUNREACH;
	} else if (!p->paused && p->cfg.fail_fast && !p->wait_head && p->nidle == 0 && p->nbackends > 0 &&
		   p->nslots < max_now(p, c->start) && !any_ready(p, c->start) && !other_held(p, NULL)) {
		/* It would wait for a connect that no backend takes before its backoff ends (one
		 * held after a -ESTALE connect is not backing off: the set is changing). */
		rc = -EHOSTUNREACH;
	} else {
		enqueue(p, c);
		kick_locked(p, &ps);
	}
	bool evict = p->group_blocked && p->wait_head;
	pool_unlock(p);
	flush(p, &ps);
	if (evict)
		group_evict(p);
	if (rc != -EINPROGRESS) {
		TP_PROBE4(claim__done, p->name, thread, 0LL, rc);
		if (rc == 0)
			count(p, TP_EV_CLAIM_WAIT, 0);
		else
			count(p, TP_EV_CLAIM_FAILED, 0);
	}
	*out = s;
	return rc;
}

bool tp_claim_cancel(struct tp_claim *c)
{
	struct tp_pool *p = c->pool;
	bool was = false;
	pool_lock(p);
	if (c->queued) {
		struct tp_claim *prev = NULL, *w = p->wait_head;
		while (w && w != c) {
			prev = w;
			w = w->next;
		}
		if (w) {
			unlink_claim(p, c, prev);
			was = true;
		}
	}
	pool_unlock(p);
	return was;
}

void tp_release(struct tp_slot *s, bool reusable)
{
	struct tp_pool *p = s->pool;
	TP_PROBE4(slot__released, p->name, s->be->addr.name, (int)s->be->addr.port, (int)reusable);
	if (!reusable) {
		pool_lock(p);
		unbusy(p, s);
		pool_unlock(p);
		close_slot(s, TP_CLOSE_BROKEN);
		return;
	}
	give_free_slot(s, true);
}

void tp_slot_rest(struct tp_slot *s, bool resting)
{
	struct tp_pool *p = s->pool;
	struct posts ps;
	ps.n = 0;
	pool_lock(p);
	if (s->state == SLOT_BUSY && s->resting != resting) {
		s->resting = resting;
		p->nresting += resting ? 1 : -1;
		if (resting && p->active_max > 0)
			kick_locked(p, &ps); /* room under the bound: a waiter may go now */
	}
	pool_unlock(p);
	flush(p, &ps);
}

void tp_pool_kick(struct tp_pool *p)
{
	if (p)
		kick(p);
}

void tp_pool_tick(struct tp_pool *p, int thread)
{
	struct tp_claim *expired = NULL, **etail = &expired;
	struct tp_slot *closing = NULL, *checking = NULL;
	struct posts ps;
	ps.n = 0;
	double now = now_of(p);

	if (thread < 0 || thread >= p->cfg.nthreads)
		return;
	pool_lock(p);
	/* This thread's claims past their deadline (others expire on their own threads, so that
	 * done always runs on the claim's thread). */
	for (struct tp_claim *c = p->wait_head, *prev = NULL, *next; c; c = next) {
		next = c->next;
		if (c->thread != thread || now < c->deadline) {
			prev = c;
			continue;
		}
		unlink_claim(p, c, prev);
		*etail = c;
		etail = &c->next;
	}
	/* This thread's idle slots: expire, drop the removed and what the policy keeps no
	 * more, start health checks. */
	int left = p->nslots;
	for (struct tp_slot *s = p->threads[thread].idle, *next; s; s = next) {
		next = s->next;
		enum tp_close_reason why = TP_CLOSE__COUNT;
		if (p->stopping)
			why = TP_CLOSE_STOPPED;
		else if (s->be->state == TP_BACKEND_DRAINING)
			why = TP_CLOSE_REMOVED;
		else if (s->gen != p->gen)
			why = TP_CLOSE_RECONNECT;
		else if (p->retired)
			why = TP_CLOSE_RETIRED;
		else if (p->dormant)
			why = TP_CLOSE_DORMANT;
		else if (s->expires_at && now >= s->expires_at)
			why = TP_CLOSE_LIFETIME;
		else if (left > p->max_slots)
			why = TP_CLOSE_SHRUNK;
		else if (p->cfg.idle_timeout > 0 && now - s->idle_since >= p->cfg.idle_timeout && left > p->min_slots)
			why = TP_CLOSE_IDLE;
		bool check = why == TP_CLOSE__COUNT && p->conn->check && p->cfg.check_after > 0 &&
			     now - s->checked_at >= p->cfg.check_after;
		if (why == TP_CLOSE__COUNT && !check)
			continue;
		idle_unlink(p, s);
		if (why != TP_CLOSE__COUNT) {
			s->why = why;
			s->state = SLOT_CLOSING;
			s->next = closing;
			closing = s;
			left--;
		} else {
			s->state = SLOT_CHECKING;
			s->checked_at = now;
			p->nchecking++;
			s->next = checking;
			checking = s;
		}
	}
	if (thread == p->cfg.home_thread && !p->stopping) {
		(void)max_now(p, now); /* forgets an expired cap */
		/* Capped with no slot left to wait for: one connect a tick tries for room. */
		if (p->cap >= 0 && p->nslots == 0 && p->wait_head && p->nconnecting == 0)
			p->cap_probe = true;
		/* min_slots: one connect a tick, so that a backend that is down is not hammered. */
		if (!p->retired && !p->dormant && !p->wait_head && p->nslots < p->min_slots && p->nconnecting == 0 &&
		    now >= p->refill_at && p->nslots < max_now(p, now))
			(void)start_connect(p, &ps, now, thread, NULL, true);
	}
	pool_unlock(p);
	flush(p, &ps);
	while (expired) {
		struct tp_claim *c = expired;
		expired = c->next;
		c->next = NULL;
		claim_done(c, NULL, -ETIMEDOUT);
	}
	while (closing) {
		struct tp_slot *s = closing;
		closing = s->next;
		s->next = NULL;
		close_slot(s, s->why);
	}
	while (checking) {
		struct tp_slot *s = checking;
		checking = s->next;
		s->next = NULL;
		p->conn->check(p->conn_ctx, s);
	}
	/* A backoff may have ended: waiters get their connects. */
	kick(p);
}

static void run_stop_thread(void *arg)
{
	struct tp_thread *t = arg;
	post_ran(t->pool);
	tp_pool_tick(t->pool, t->index);
}

void tp_pool_stop(struct tp_pool *p)
{
	struct posts ps;
	ps.n = 0;
	struct tp_claim *c;
	pool_lock(p);
	p->stopping = true;
	while ((c = dequeue(p))) {
		c->err = -ECANCELED;
		if (!add_post(p, &ps, c->thread, run_fail, c)) {
			pool_unlock(p);
			flush(p, &ps);
			pool_lock(p);
			add_post(p, &ps, c->thread, run_fail, c);
		}
	}
	pool_unlock(p);
	flush(p, &ps);
	post_sweeps(p);
}

/* Each thread closes its own idle slots (what tp_pool_tick would close), soon. */
static void post_sweeps(struct tp_pool *p)
{
	for (int i = 0; i < p->cfg.nthreads; i++) {
		pool_lock(p);
		p->npending++;
		pool_unlock(p);
		p->host->post(p->host_ctx, i, run_stop_thread, &p->threads[i]);
	}
}

void tp_pool_pause(struct tp_pool *p)
{
	pool_lock(p);
	p->paused = true;
	pool_unlock(p);
}

void tp_pool_resume(struct tp_pool *p)
{
	pool_lock(p);
	p->paused = false;
	pool_unlock(p);
	kick(p);
}

void tp_pool_reconnect(struct tp_pool *p)
{
	pool_lock(p);
	p->gen++;
	/* Every connected slot is of an older generation now; connecting ones take the new. */
	p->nstale = p->nslots - p->nconnecting;
	pool_unlock(p);
	post_sweeps(p);
}

void tp_pool_retire(struct tp_pool *p)
{
	pool_lock(p);
	p->retired = true;
	pool_unlock(p);
	post_sweeps(p);
}

void tp_pool_sleep(struct tp_pool *p)
{
	pool_lock(p);
	bool was = p->dormant;
	p->dormant = true;
	pool_unlock(p);
	if (!was)
		post_sweeps(p);
}

int tp_pool_resize(struct tp_pool *p, int max_slots, int min_slots)
{
	if (max_slots < 1 || min_slots < 0 || min_slots > max_slots)
		return -EINVAL;
	pool_lock(p);
	bool shrunk = p->nslots > max_slots;
	p->max_slots = max_slots;
	p->min_slots = min_slots;
	pool_unlock(p);
	if (shrunk)
		post_sweeps(p);
	kick(p);
	return 0;
}

int tp_pool_take_active_peak(struct tp_pool *p)
{
	pool_lock(p);
	int peak = p->active_peak;
	p->active_peak = in_use(p);
	pool_unlock(p);
	return peak;
}

int tp_pool_set_active_max(struct tp_pool *p, int active_max)
{
	if (active_max < 0)
		return -EINVAL;
	pool_lock(p);
	p->active_max = active_max;
	pool_unlock(p);
	kick(p); /* a higher bound serves waiters now */
	return 0;
}

void tp_pool_set_expiry(struct tp_pool *p, double idle_timeout, double lifetime)
{
	pool_lock(p);
	p->cfg.idle_timeout = idle_timeout > 0 ? idle_timeout : 0;
	p->cfg.lifetime = lifetime > 0 ? lifetime : 0;
	pool_unlock(p);
}

void tp_pool_set_reserve(struct tp_pool *p, int reserve_slots, double reserve_after)
{
	pool_lock(p);
	p->cfg.reserve_slots = reserve_slots > 0 ? reserve_slots : 0;
	p->cfg.reserve_after = reserve_after > 0 ? reserve_after : 0;
	pool_unlock(p);
	kick(p);
}

void tp_pool_set_check_after(struct tp_pool *p, double check_after)
{
	pool_lock(p);
	p->cfg.check_after = check_after > 0 ? check_after : 0;
	pool_unlock(p);
}

struct tp_group *tp_group_new(int limit)
{
	struct tp_group *g = calloc(1, sizeof *g);
	if (!g)
		return NULL;
	pthread_mutex_init(&g->lock, NULL);
	atomic_init(&g->count, 0);
	atomic_init(&g->limit, limit > 0 ? limit : 0);
	return g;
}

void tp_group_set_limit(struct tp_group *g, int limit)
{
	atomic_store(&g->limit, limit > 0 ? limit : 0);
}

int tp_group_count(const struct tp_group *g)
{
	return atomic_load(&((struct tp_group *)g)->count);
}

void tp_group_free(struct tp_group *g)
{
	if (!g)
		return;
	pthread_mutex_destroy(&g->lock);
	free(g);
}

int tp_pool_join(struct tp_pool *p, struct tp_group *g)
{
	if (!p || !g)
		return -EINVAL;
	if (p->ngroups == TP_GROUPS_MAX)
		return -ENOSPC;
	int i = p->ngroups;
	p->member[i].pool = p;
	pthread_mutex_lock(&g->lock);
	p->member[i].next = g->members;
	g->members = &p->member[i];
	pthread_mutex_unlock(&g->lock);
	pool_lock(p);
	p->groups[i] = g;
	p->ngroups++;
	atomic_fetch_add(&g->count, p->nslots);
	pool_unlock(p);
	return 0;
}

int tp_pool_destroy(struct tp_pool *p)
{
	if (!p)
		return 0;
	pool_lock(p);
	bool busy = !p->stopping || p->nslots > 0 || p->npending > 0 || p->wait_head;
	pool_unlock(p);
	if (busy)
		return -EBUSY;
	for (int i = 0; i < p->ngroups; i++) {
		struct tp_group *g = p->groups[i];
		pthread_mutex_lock(&g->lock);
		for (struct tp_member **mm = &g->members; *mm; mm = &(*mm)->next)
			if (*mm == &p->member[i]) {
				*mm = p->member[i].next;
				break;
			}
		pthread_mutex_unlock(&g->lock);
	}
	while (p->backends) {
		struct tp_backend *be = p->backends;
		p->backends = be->next;
		free(be);
	}
	free(p->threads);
	free(p);
	return 0;
}

void *tp_slot_conn(const struct tp_slot *s) { return s->conn; }
void tp_slot_set_conn(struct tp_slot *s, void *conn) { s->conn = conn; }
const struct tp_backend_addr *tp_slot_backend(const struct tp_slot *s) { return &s->be->addr; }
int tp_slot_thread(const struct tp_slot *s) { return s->thread; }

void tp_slot_moved(struct tp_slot *s, int thread)
{
	struct tp_pool *p = s->pool;
	pool_lock(p);
	if (s->state == SLOT_BUSY && thread >= 0 && thread < p->cfg.nthreads)
		s->thread = thread;
	pool_unlock(p);
}
struct tp_pool *tp_slot_pool(const struct tp_slot *s) { return s->pool; }
struct tp_claim *tp_slot_claim(const struct tp_slot *s) { return s->state == SLOT_CONNECTING ? s->claim : NULL; }

bool tp_slot_must_close(const struct tp_slot *s)
{
	struct tp_pool *p = s->pool;
	pool_lock(p);
	bool closing = s->connected && (s->gen != p->gen || p->retired || s->be->state == TP_BACKEND_DRAINING);
	pool_unlock(p);
	return closing;
}

void tp_pool_stats(struct tp_pool *p, struct tp_stats *out)
{
	pool_lock(p);
	*out = p->counters;
	out->slots = p->nslots;
	out->idle = p->nidle;
	out->busy = p->nbusy;
	out->resting = p->nresting;
	out->connecting = p->nconnecting;
	out->checking = p->nchecking;
	out->stale = p->nstale;
	out->waiting = p->nwait;
	out->backends = p->nbackends;
	out->backends_up = 0;
	for (struct tp_backend *be = p->backends; be; be = be->next)
		out->backends_up += be->state == TP_BACKEND_UP;
	out->max_slots = p->max_slots;
	out->active_max = p->active_max;
	out->min_slots = p->min_slots;
	out->cap = p->cap >= 0 && now_of(p) < p->cap_until ? p->cap : -1;
	out->paused = p->paused;
	out->retired = p->retired;
	out->dormant = p->dormant;
	out->down = p->nbackends > 0 && !any_ready(p, now_of(p));
	pool_unlock(p);
}

bool tp_pool_backend(struct tp_pool *p, int i, struct tp_backend_addr *addr, enum tp_backend_state *state, int *slots)
{
	bool found = false;
	pool_lock(p);
	struct tp_backend *be = p->backends;
	while (be && i-- > 0)
		be = be->next;
	if (be) {
		found = true;
		if (addr)
			*addr = be->addr;
		if (state)
			*state = be->state;
		if (slots)
			*slots = be->nslots;
	}
	pool_unlock(p);
	return found;
}

bool tp_pool_backend_error(struct tp_pool *p, int i, char *out, size_t cap)
{
	bool found = false;
	if (cap == 0)
		return false;
	out[0] = '\0';
	pool_lock(p);
	struct tp_backend *be = p->backends;
	while (be && i-- > 0)
		be = be->next;
	if (be) {
		found = true;
		snprintf(out, cap, "%s", be->last_error);
	}
	pool_unlock(p);
	return found;
}

void tp_pool_last_error(struct tp_pool *p, char *out, size_t cap)
{
	size_t len = 0;
	if (cap == 0)
		return;
	out[0] = '\0';
	pool_lock(p);
	/* Every backend that is not up, and why: a claim that failed fast says which backends
	 * were tried and what each answered, not just the last one. */
	for (const struct tp_backend *be = p->backends; be && len < cap; be = be->next) {
		if (be->state == TP_BACKEND_DRAINING || !be->last_error[0])
			continue;
		int n = snprintf(out + len, cap - len, "%s%s:%u %s: %s", len ? "; " : "", be->addr.name, be->addr.port,
				 tp_backend_state_name(be->state), be->last_error);
		if (n < 0)
			break;
		len += (size_t)n;
	}
	if (len == 0)
		snprintf(out, cap, "%s", p->last_error);
	pool_unlock(p);
}
