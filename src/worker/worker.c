/* Worker threads (see worker.h): a libev loop per thread, its listening sockets (every
 * worker listens on every address with SO_REUSEPORT, so the kernel spreads clients; the
 * set changes at reload through listen / unlisten messages), its inbox, the tick that runs
 * its tenants' housekeeping, and draining at shutdown. The tenants come in through their
 * registered hooks only: this file names none of them. */
#include "worker/worker.h"

#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "net/handshake.h"
#include "net/tls.h"
#include "net/net.h"
#include "runtime/runtime.h"
#include "util/log.h"

#define WORKER_TICK 1.0 /* seconds between housekeeping runs */
#define WORKER_DRAIN_TICK 0.05 /* seconds between looks for clients that left their transaction */

/* A listening socket this worker accepts on; the fd is the worker's own (the runtime keeps
 * a dup of it for online restart). */
struct listener {
	ev_io io;
	char key[WORKER_LISTEN_KEY_MAX];
	struct listener *next;
};

struct worker_priv {
	pthread_t thread;
	ev_async wake;
	ev_timer tick;
	ev_timer drain_tick; /* while draining */
	struct listener *listeners;
	pthread_mutex_t inbox_lock; /* protects inbox_head/tail and stop_requested */
	struct worker_msg *inbox_head, *inbox_tail;
	struct worker_msg *local_head, *local_tail; /* posted by this thread itself: no lock */
	bool stop_requested;
	bool threaded; /* worker_start; a worker_new one is run by its creator's ev_run */
	double tick_cpu, tick_wall; /* thread CPU and loop time at the last tick (load) */
};

static struct worker_priv *priv(struct worker *w) { return w->priv; }

/* The tenants, in their order of registration (worker_register): written on the main thread
 * before the first worker exists, read-only after. */
static struct worker_hooks *tenants[WORKER_SLOTS];
static int ntenants;
static bool workers_made;
/* The accept hook of the one tenant that takes connections (NULL: accepted sockets close). */
static void (*accept_hook)(struct worker *w, int fd, const struct net_addr *peer, const char *listener);

void worker_register(struct worker_hooks *h)
{
	for (int i = 0; i < ntenants; i++)
		if (tenants[i] == h)
			return;
	if (ntenants == WORKER_SLOTS || workers_made || (h->accept && accept_hook)) {
		log_error(NULL, NULL, "worker tenant %s registered %s", h->name,
			  ntenants == WORKER_SLOTS ? "past WORKER_SLOTS" : workers_made ? "after the workers were made"
											: "as a second acceptor");
		abort();
	}
	h->slot = ntenants;
	tenants[ntenants++] = h;
	if (h->accept)
		accept_hook = h->accept;
}

/* Dispatched messages are kept for the next post (issue 10: once clients queue for servers,
 * the pool's answer to a claim and each hand-over of a server between workers were a calloc
 * and a free per transaction). Per thread, so no lock: a worker thread keeps up to
 * WORKER_MSG_CACHE of the messages it dispatched and worker_msg_new takes from them; a
 * message may be taken on one worker and kept by another. Other threads (main, the test
 * seam) allocate and free. */
/* Under AddressSanitizer every message is a fresh calloc and a free, so that a message
 * used after its dispatch is reported rather than recycled. */
#if defined(__SANITIZE_ADDRESS__)
#define WORKER_MSG_CACHE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WORKER_MSG_CACHE 0
#endif
#endif
#ifndef WORKER_MSG_CACHE
#define WORKER_MSG_CACHE 64
#endif
static _Thread_local bool tl_caching;
static _Thread_local struct worker_msg *tl_cache;
static _Thread_local int tl_ncache;

struct worker_msg *worker_msg_new(void)
{
	struct worker_msg *m = tl_cache;
	if (!m)
		return calloc(1, sizeof *m);
	tl_cache = m->next;
	tl_ncache--;
	memset(m, 0, sizeof *m);
	return m;
}

static void msg_done(struct worker_msg *m)
{
	if (!tl_caching || tl_ncache >= WORKER_MSG_CACHE) {
		free(m);
		return;
	}
	m->next = tl_cache;
	tl_cache = m;
	tl_ncache++;
}

static void msg_cache_free(void)
{
	tl_caching = false;
	while (tl_cache) {
		struct worker_msg *m = tl_cache;
		tl_cache = m->next;
		free(m);
	}
	tl_ncache = 0;
}

static void accept_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct worker *w = io->data;
	const struct listener *l = (const struct listener *)((char *)io - offsetof(struct listener, io));
	void (*accept)(struct worker *, int, const struct net_addr *, const char *) = accept_hook;
	(void)loop;
	(void)revents;

	/* Bounded batch: one busy listener must not starve the rest of the loop. */
	for (int i = 0; i < 64; i++) {
		struct net_addr peer;
		int fd = net_accept(io->fd, &peer);
		if (fd < 0) {
			if (fd == -EAGAIN || fd == -EWOULDBLOCK || fd == -EINTR || fd == -ECONNABORTED)
				return;
			log_warn(NULL, NULL, "accept failed: %s", strerror(-fd));
			return;
		}
		if (peer.sa.ss_family != AF_UNIX && w->rt->cfg) { /* tcp_keepalive and the rest, as the file says now */
			struct net_tcp_opts k;
			net_tcp_opts_of(w->rt->cfg, false, &k);
			net_tcp_opts_apply(fd, &k);
		}
		if (accept)
			accept(w, fd, &peer, l->key);
		else
			close(fd);
	}
}

static void add_listener(struct worker *w, int fd, const char *key)
{
	struct worker_priv *p = priv(w);
	struct listener *l = calloc(1, sizeof *l);
	if (!l || w->draining || w->stopping) {
		free(l);
		close(fd);
		if (!l)
			log_error(NULL, NULL, "worker %d: out of memory adding listener %s", w->index, key);
		return;
	}
	snprintf(l->key, sizeof l->key, "%s", key);
	ev_io_init(&l->io, accept_cb, fd, EV_READ);
	l->io.data = w;
	ev_io_start(w->loop, &l->io);
	l->next = p->listeners;
	p->listeners = l;
}

/* Close the listeners named key (all when key is NULL). */
static void close_listeners(struct worker *w, const char *key)
{
	struct worker_priv *p = priv(w);
	struct listener **lp = &p->listeners;
	while (*lp) {
		struct listener *l = *lp;
		if (key && strcmp(l->key, key) != 0) {
			lp = &l->next;
			continue;
		}
		*lp = l->next;
		ev_io_stop(w->loop, &l->io);
		close(l->io.fd);
		free(l);
	}
}

#define DRAIN_REASON "terminating connection because tusk is shutting down"
#define STOP_REASON "tusk is shutting down"

static void drain_tenants(struct worker *w)
{
	for (int i = 0; i < ntenants; i++)
		if (tenants[i]->drain)
			tenants[i]->drain(w, DRAIN_REASON);
}

static void drain_tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	(void)loop;
	(void)revents;
	drain_tenants(t->data);
}

/* Stop accepting; clients go at their next transaction boundary (drain_tick_cb), and the
 * main thread stops the worker when all are gone or shutdown_timeout passed. */
static void start_draining(struct worker *w)
{
	struct worker_priv *p = priv(w);
	if (w->draining || w->stopping)
		return;
	w->draining = true;
	atomic_store_explicit(&w->load, -1, memory_order_relaxed);
	close_listeners(w, NULL);
	drain_tenants(w);
	ev_timer_start(w->loop, &p->drain_tick);
}

/* The worker's own messages: listeners come and go, draining starts. */
static void on_listen(struct worker *w, struct worker_msg *m)
{
	add_listener(w, m->num, m->arg ? m->arg : "");
	free(m->arg);
}

static void on_unlisten(struct worker *w, struct worker_msg *m)
{
	close_listeners(w, m->arg);
	free(m->arg);
}

static void on_drain(struct worker *w, struct worker_msg *m)
{
	(void)m;
	start_draining(w);
}

/* One message, then kept for reuse or freed (msg_done). */
static void dispatch(struct worker *w, struct worker_msg *m)
{
	if (m->fn)
		m->fn(w, m);
	else
		m->call(m->arg);
	msg_done(m);
}

static void drain_inbox(struct worker *w)
{
	struct worker_priv *p = priv(w);
	struct worker_msg *m;
	bool stop;

	/* Own messages first: they were posted before anything now in the inbox was seen. */
	while ((m = p->local_head)) {
		p->local_head = m->next;
		if (!p->local_head)
			p->local_tail = NULL;
		m->next = NULL;
		dispatch(w, m);
	}

	pthread_mutex_lock(&p->inbox_lock);
	m = p->inbox_head;
	p->inbox_head = p->inbox_tail = NULL;
	stop = p->stop_requested;
	pthread_mutex_unlock(&p->inbox_lock);

	while (m) {
		struct worker_msg *next = m->next;
		dispatch(w, m);
		m = next;
	}
	if (stop && !w->stopping) {
		w->stopping = true;
		atomic_store_explicit(&w->load, -1, memory_order_relaxed);
		close_listeners(w, NULL);
		ev_timer_stop(w->loop, &p->tick);
		ev_timer_stop(w->loop, &p->drain_tick);
		for (int i = 0; i < ntenants; i++)
			if (tenants[i]->stop)
				tenants[i]->stop(w, STOP_REASON);
		ev_async_stop(w->loop, &p->wake);
		/* Remaining watchers belong to connections being closed; break out now. */
		ev_break(w->loop, EVBREAK_ALL);
	}
}

static void wake_cb(struct ev_loop *loop, ev_async *a, int revents)
{
	(void)loop;
	(void)revents;
	drain_inbox(a->data);
}

static double thread_cpu(void)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) < 0)
		return 0;
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* This thread's CPU over the last tick, for worker_balance_target. Thread CPU, not loop
 * time: on a machine shared with PostgreSQL a loop waits for a core more than it works. */
static void measure_load(struct worker *w, double now)
{
	struct worker_priv *p = priv(w);
	double cpu = thread_cpu();
	if (p->tick_wall > 0 && now > p->tick_wall && !w->draining && !w->stopping) {
		double f = (cpu - p->tick_cpu) / (now - p->tick_wall);
		atomic_store_explicit(&w->load, (int)(f * 1000.0 + 0.5), memory_order_relaxed);
	}
	p->tick_cpu = cpu;
	p->tick_wall = now;
	/* At most a quarter of its clients leave per tick when spreading: the loads that steer
	 * the moves are a tick old, and moving every client at once would only swing the
	 * imbalance to the other side. */
	w->moves_left = w->nclients / 4 + 1;
}

static void tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct worker *w = t->data;
	unsigned freed = 0;
	(void)revents;
	measure_load(w, ev_now(loop));
	for (int i = 0; i < ntenants; i++)
		if (tenants[i]->tick)
			freed += tenants[i]->tick(w, ev_now(loop));
#ifdef __GLIBC__
	/* Freed blocks in the middle of an arena keep their touched pages; this gives the
	 * whole free pages back (once per tick at most, and only after a burst). */
	if (freed > 0)
		(void)malloc_trim(0);
#else
	(void)freed;
#endif
}

/* Thresholds in thousandths of a core (worker.h, worker_balance_target). */
#define BALANCE_GATHER_BELOW 500 /* all workers together */
#define BALANCE_SPREAD_ABOVE 750 /* one worker */

struct worker *worker_balance_target(struct worker *w)
{
	struct runtime *rt = w->rt;
	int n = rt->nworkers;
	if (n < 2 || w->draining || w->stopping || !rt->cfg->worker_balance)
		return NULL;
	if (rt->balance_test) {
		/* Test seam (runtime.h): every idle client moves on at every boundary. */
		struct worker *to = rt->workers[(w->index + 1) % n];
		return !to || atomic_load_explicit(&to->load, memory_order_relaxed) < 0 ? NULL : to;
	}
	int mine = atomic_load_explicit(&w->load, memory_order_relaxed), sum = 0, least_load = INT32_MAX;
	struct worker *least = NULL;
	for (int i = 0; i < n; i++) {
		struct worker *o = rt->workers[i];
		if (!o)
			return NULL;
		int l = atomic_load_explicit(&o->load, memory_order_relaxed);
		if (l < 0)
			continue;
		sum += l;
		if (o != w && l < least_load) {
			least_load = l;
			least = o;
		}
	}
	struct worker *home = rt->workers[0];
	if (sum < BALANCE_GATHER_BELOW) {
		/* The gathering is not rationed: each client that moves makes the loads only more
		 * like the state being aimed at, one busy loop. */
		if (w == home || atomic_load_explicit(&home->load, memory_order_relaxed) < 0)
			return NULL;
		return home;
	}
	if (mine > BALANCE_SPREAD_ABOVE && least && least_load < mine / 2 && w->moves_left > 0)
		return least;
	return NULL;
}

void worker_balance_moved(struct worker *w)
{
	if (w->moves_left > 0)
		w->moves_left--;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	tl_caching = true;
	runtime_worker_index = w->index;
	ev_run(w->loop, 0);
	msg_cache_free();
	return NULL;
}

/* The tenants' free hooks from tenant n-1 down to 0, and their slots. */
static void free_tenants(struct worker *w, int n)
{
	for (int i = n - 1; i >= 0; i--) {
		if (tenants[i]->free)
			tenants[i]->free(w);
		free(w->slot[i]);
		w->slot[i] = NULL;
	}
}

int worker_new(struct runtime *rt, int index, struct worker **out)
{
	struct worker *w = calloc(1, sizeof *w);
	struct worker_priv *p = calloc(1, sizeof *p);
	int rc = -ENOMEM;

	workers_made = true;
	if (!w || !p)
		goto err_free;
	w->priv = p;
	w->index = index;
	w->rt = rt;
	w->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
	if (!w->loop)
		goto err_free;
	for (int i = 0; i < ntenants; i++) {
		const struct worker_hooks *h = tenants[i];
		rc = -ENOMEM;
		if (h->size && !(w->slot[i] = calloc(1, h->size))) {
			free_tenants(w, i);
			goto err_loop;
		}
		if (h->init && (rc = h->init(w)) < 0) {
			free(w->slot[i]);
			w->slot[i] = NULL;
			free_tenants(w, i);
			goto err_loop;
		}
	}
	pthread_mutex_init(&p->inbox_lock, NULL);
	ev_async_init(&p->wake, wake_cb);
	p->wake.data = w;
	ev_async_start(w->loop, &p->wake);
	ev_timer_init(&p->tick, tick_cb, WORKER_TICK, WORKER_TICK);
	p->tick.data = w;
	ev_timer_start(w->loop, &p->tick);
	ev_timer_init(&p->drain_tick, drain_tick_cb, WORKER_DRAIN_TICK, WORKER_DRAIN_TICK);
	p->drain_tick.data = w;
	*out = w;
	return 0;

err_loop:
	ev_loop_destroy(w->loop);
err_free:
	free(p);
	free(w);
	return rc;
}

int worker_start(struct runtime *rt, int index, struct worker **out)
{
	struct worker *w;
	sigset_t all, old;
	int rc = worker_new(rt, index, &w);

	if (rc < 0)
		return rc;
	struct worker_priv *p = priv(w);
	/* Signals belong to the main thread; workers start with all of them blocked. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	rc = pthread_create(&p->thread, NULL, worker_main, w);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		free_tenants(w, ntenants);
		ev_loop_destroy(w->loop);
		pthread_mutex_destroy(&p->inbox_lock);
		free(p);
		free(w);
		return -rc;
	}
	p->threaded = true;
	*out = w;
	return 0;
}

void worker_post(struct worker *w, struct worker_msg *msg)
{
	struct worker_priv *p = priv(w);
	msg->next = NULL;
	pthread_mutex_lock(&p->inbox_lock);
	if (p->inbox_tail)
		p->inbox_tail->next = msg;
	else
		p->inbox_head = msg;
	p->inbox_tail = msg;
	pthread_mutex_unlock(&p->inbox_lock);
	ev_async_send(w->loop, &p->wake);
}

void worker_post_local(struct worker *w, struct worker_msg *msg)
{
	struct worker_priv *p = priv(w);
	msg->next = NULL;
	if (p->local_tail)
		p->local_tail->next = msg;
	else
		p->local_head = msg;
	p->local_tail = msg;
	/* Run wake_cb on this loop's next turn, without the eventfd write of ev_async_send. */
	ev_feed_event(w->loop, &p->wake, EV_ASYNC);
}

/* The worker's own messages are rare (start, reload, shutdown): calloc'd, and the key a copy. */
static int post_own(struct worker *w, worker_fn *fn, int fd, const char *key)
{
	struct worker_msg *m = calloc(1, sizeof *m);
	char *k = key ? strndup(key, WORKER_LISTEN_KEY_MAX - 1) : NULL;
	if (!m || (key && !k)) {
		free(m);
		free(k);
		return -ENOMEM;
	}
	m->fn = fn;
	m->num = fd;
	m->arg = k;
	worker_post(w, m);
	return 0;
}

int worker_post_listen(struct worker *w, int fd, const char *key)
{
	return post_own(w, on_listen, fd, key);
}

int worker_post_unlisten(struct worker *w, const char *key)
{
	return post_own(w, on_unlisten, -1, key && key[0] ? key : NULL);
}

int worker_post_drain(struct worker *w)
{
	return post_own(w, on_drain, -1, NULL);
}

void worker_stop(struct worker *w)
{
	struct worker_priv *p = priv(w);
	pthread_mutex_lock(&p->inbox_lock);
	p->stop_requested = true;
	pthread_mutex_unlock(&p->inbox_lock);
	ev_async_send(w->loop, &p->wake);
}

void worker_join(struct worker *w)
{
	if (priv(w)->threaded)
		pthread_join(priv(w)->thread, NULL);
}

void worker_free(struct worker *w)
{
	struct worker_priv *p = priv(w);
	/* No thread runs any more, so nothing can post: this drain is the last. */
	drain_inbox(w);
	free_tenants(w, ntenants);
	close_listeners(w, NULL); /* handed over after the loop ended */
	ev_loop_destroy(w->loop);
	pthread_mutex_destroy(&p->inbox_lock);
	free(p);
	free(w);
}

/* On the handshake thread: the handshake is over; back to the worker that handed it over. */
static void hs_done(void *arg, int rc)
{
	struct worker_msg *m = arg;
	m->num = rc;
	worker_post(m->arg2, m);
}

bool worker_tls_hand_over(struct worker *w, struct tls_conn *conn, int fd, double deadline,
			  void (*back)(struct worker *w, struct worker_msg *m), void *arg)
{
	struct tls_hs_pool *p = w->rt->tls_hs;
	if (!p)
		return false;
	struct worker_msg *m = worker_msg_new();
	if (!m)
		return false;
	m->fn = back;
	m->arg = arg;
	m->arg2 = w;
	if (tls_hs_submit(p, conn, fd, deadline, hs_done, m) < 0) {
		free(m);
		return false;
	}
	return true; /* back cannot run before this thread's loop turns again */
}

void worker_tls_defer_full(struct worker *w, struct tls_conn *conn)
{
	if (w->rt->tls_hs)
		tls_conn_defer_full(conn);
}

void worker_tls_note_kept(struct worker *w, const struct tls_conn *conn)
{
	if (w->rt->tls_hs)
		tls_hs_note_kept(w->rt->tls_hs, tls_resumed(conn));
}
