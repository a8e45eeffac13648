/* Service resolution with c-ares on a thread of its own (resolve.h). The thread owns the
 * c-ares channel, its sockets' libev watchers, the round in progress and the current set;
 * other threads only post requests through an ev_async and read a copy of the state under
 * the state lock. */
#include "resolve/resolve.h"

#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "util/log.h"

#define QUERY_TIMEOUT_MS 1000 /* per try; c-ares moves to the next nameserver on timeout */
#define QUERY_TRIES 2
#define RETRY_FIRST_S 0.5     /* first retry after a failed round; doubles up to dns_nxdomain_ttl */
#define MAX_SRV_TARGETS 2048  /* SRV records looked at per answer */
#define MISSES_TO_REMOVE 2    /* good answers in a row without a backend before it leaves */
/* Address lookups in flight at once: 1,000 SRV targets sent in one burst are 2,000 UDP
 * queries, more than a nameserver's socket buffer takes; the rest wait in the round's queue. */
#define MAX_INFLIGHT 64

/* A backend of a set. source is a hash of the name that produced it (a static host, the dns
 * name or an SRV target), so that the backends of a name that failed this round can be
 * carried over from the last set. */
struct entry {
	struct tp_backend_addr addr;
	uint32_t weight;
	uint16_t priority;
	uint8_t misses; /* good answers in a row without it */
	uint64_t source;
};

struct set {
	struct entry *v;
	int n, cap;
};

/* One name to look up in a round: queued, then one ares_getaddrinfo in flight. */
struct lookup {
	struct resolve *r;
	uint64_t source;
	uint16_t port, priority;
	uint32_t weight;
	char name[CONFIG_HOST_MAX];
};

struct sock_watch {
	ev_io io;
	struct resolve *r;
	struct sock_watch *next;
};

struct resolve {
	/* Copied from the config at start; read-only after. */
	char service[CONFIG_NAME_MAX];
	int discovery;
	int nhosts;
	struct config_host *hosts;
	char name[CONFIG_HOST_MAX]; /* dns or srv */
	uint16_t port;
	double min_ttl, max_ttl;   /* seconds */
	double fail_ttl;           /* seconds: the longest wait before a failed name is asked again */
	int load_balance_hosts;    /* enum config_load_balance: config_host_priority */
	resolve_update_fn *fn;
	void *arg;

	/* The resolver thread's own. */
	pthread_t thread;
	struct ev_loop *loop;
	ev_async wake;
	ev_timer next_round;
	ev_timer ares_timer;
	ares_channel channel;
	struct sock_watch *socks;
	bool in_round, again;
	int pending;                /* lookups queued or in flight (+1 while launching) */
	struct lookup **queue;      /* this round's lookups not yet launched: queue[qnext..nqueue) */
	int nqueue, capqueue, qnext;
	int inflight;
	bool stopping; /* resolve thread, after its loop: callbacks only free their own memory */
	bool pumping;
	struct set found;           /* this round's answers */
	uint64_t *failed_sources;   /* names that failed this round */
	int nfailed, capfailed;
	bool top_failed;            /* the SRV query itself failed: the whole round did */
	int min_answer_ttl;         /* seconds, over every record of the round */
	int dropped;                /* addresses beyond RESOLVE_MAX_BACKENDS this round */
	char round_error[256];
	struct set current;         /* the set last passed to fn */
	int consecutive;            /* failed rounds in a row */
	int partial_streak;         /* good rounds in a row where some name failed */
	uint32_t seed;              /* retry jitter */

	/* Requests from other threads, then ev_async_send. */
	atomic_bool refresh_requested, stop_requested;

	/* The console's copy, guarded by lock (only the copy: the thread's own fields above
	 * are never read elsewhere). */
	pthread_mutex_t lock;
	struct resolve_state state;
	struct tp_backend_addr *snap_addrs;
	uint32_t *snap_weight;
	int snap_n;
};

static pthread_once_t ares_once = PTHREAD_ONCE_INIT;
static int ares_init_status;

static void init_ares(void)
{
	ares_init_status = ares_library_init(ARES_LIB_INIT_ALL);
}

static double wall_now(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

uint64_t resolve_source(const char *s)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */
	for (; *s; s++) {
		char c = *s >= 'A' && *s <= 'Z' ? (char)(*s + 32) : *s; /* DNS names ignore case */
		h = (h ^ (uint8_t)c) * 1099511628211ULL;
	}
	return h;
}

static const char *kind_name(int discovery)
{
	return discovery == CONFIG_DISCOVERY_DNS ? "dns" : discovery == CONFIG_DISCOVERY_SRV ? "srv" : "hosts";
}

/* ---- sets ---------------------------------------------------------------------------------- */

static int set_find(const struct set *s, const struct tp_backend_addr *a)
{
	for (int i = 0; i < s->n; i++)
		if (s->v[i].addr.port == a->port && strcmp(s->v[i].addr.name, a->name) == 0)
			return i;
	return -1;
}

/* 0, or -ENOSPC past RESOLVE_MAX_BACKENDS, -ENOMEM. A duplicate keeps the better priority
 * and the larger weight (two SRV records naming the same address). */
static int set_add(struct set *s, const struct entry *e)
{
	int i = set_find(s, &e->addr);

	if (i >= 0) {
		if (e->priority < s->v[i].priority)
			s->v[i].priority = e->priority;
		if (e->weight > s->v[i].weight)
			s->v[i].weight = e->weight;
		return 0;
	}
	if (s->n == RESOLVE_MAX_BACKENDS)
		return -ENOSPC;
	if (s->n == s->cap) {
		int cap = s->cap ? s->cap * 2 : 16;
		struct entry *v = realloc(s->v, (size_t)cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		s->v = v;
		s->cap = cap;
	}
	s->v[s->n++] = *e;
	return 0;
}

static void set_free(struct set *s)
{
	free(s->v);
	*s = (struct set){ 0 };
}

static int compare_entries(const void *pa, const void *pb)
{
	const struct entry *a = pa, *b = pb;
	int c;

	if (a->priority != b->priority)
		return a->priority < b->priority ? -1 : 1;
	if (a->weight != b->weight)
		return a->weight > b->weight ? -1 : 1;
	c = strcmp(a->addr.name, b->addr.name);
	if (c)
		return c;
	return (int)a->addr.port - (int)b->addr.port;
}

/* Same backends with the same weights and priorities (both sorted). */
static bool set_same(const struct set *a, const struct set *b)
{
	if (a->n != b->n)
		return false;
	for (int i = 0; i < a->n; i++)
		if (compare_entries(&a->v[i], &b->v[i]) != 0)
			return false;
	return true;
}

/* ---- c-ares sockets on the loop -------------------------------------------------------------- */

static void arm_ares_timer(struct resolve *r)
{
	struct timeval tv, *t = ares_timeout(r->channel, NULL, &tv);

	ev_timer_stop(r->loop, &r->ares_timer);
	if (t) {
		ev_timer_set(&r->ares_timer, (double)t->tv_sec + (double)t->tv_usec / 1e6 + 0.001, 0.);
		ev_timer_start(r->loop, &r->ares_timer);
	}
}

static void on_sock(struct ev_loop *loop, ev_io *w, int revents)
{
	struct sock_watch *s = (struct sock_watch *)w;
	struct resolve *r = s->r;
	int fd = w->fd;

	(void)loop;
	ares_process_fd(r->channel, revents & EV_READ ? fd : ARES_SOCKET_BAD, revents & EV_WRITE ? fd : ARES_SOCKET_BAD);
	arm_ares_timer(r);
}

static void on_ares_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct resolve *r = w->data;

	(void)loop;
	(void)revents;
	ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	arm_ares_timer(r);
}

/* c-ares says which of its sockets to watch. A socket it closes is reported (0, 0) first. */
static void sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
	struct resolve *r = data;
	struct sock_watch **pp = &r->socks, *s;

	while (*pp && (*pp)->io.fd != fd)
		pp = &(*pp)->next;
	s = *pp;
	if (!readable && !writable) {
		if (s) {
			ev_io_stop(r->loop, &s->io);
			*pp = s->next;
			free(s);
		}
		return;
	}
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (!s) {
			/* The query on it will time out and the round fail: logged there. */
			return;
		}
		s->r = r;
		s->next = r->socks;
		r->socks = s;
		ev_io_init(&s->io, on_sock, fd, 0);
	}
	ev_io_stop(r->loop, &s->io);
	ev_io_set(&s->io, fd, (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));
	ev_io_start(r->loop, &s->io);
}

/* ---- a round ------------------------------------------------------------------------------- */

static void finish_round(struct resolve *r);

static void note_error(struct resolve *r, const char *fmt, const char *name, const char *what)
{
	size_t o = strlen(r->round_error);

	if (o + 4 >= sizeof(r->round_error))
		return;
	if (o)
		o += (size_t)snprintf(r->round_error + o, sizeof(r->round_error) - o, "; ");
	/* A long list of errors is cut: the return value is looked at only so that gcc -O3
	 * (CMAKE_BUILD_TYPE=Release) does not refuse the build over that truncation. */
	if (o < sizeof(r->round_error) &&
	    snprintf(r->round_error + o, sizeof(r->round_error) - o, fmt, name, what) >= (int)(sizeof(r->round_error) - o))
		r->round_error[sizeof(r->round_error) - 1] = '\0';
}

static void note_failed_source(struct resolve *r, uint64_t source)
{
	if (r->nfailed == r->capfailed) {
		int cap = r->capfailed ? r->capfailed * 2 : 8;
		uint64_t *v = realloc(r->failed_sources, (size_t)cap * sizeof(*v));
		if (!v)
			return; /* its backends are then treated as missing once: not removed yet */
		r->failed_sources = v;
		r->capfailed = cap;
	}
	r->failed_sources[r->nfailed++] = source;
}

static void round_done_one(struct resolve *r)
{
	if (--r->pending == 0)
		finish_round(r);
}

static void pump(struct resolve *r);

static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
	struct lookup *l = arg;
	struct resolve *r = l->r;

	(void)timeouts;
	if (status == ARES_EDESTRUCTION || r->stopping) {
		if (res)
			ares_freeaddrinfo(res);
		free(l);
		r->inflight--;
		return; /* resolve_stop: nothing is finished or published */
	}
	if (status != ARES_SUCCESS || !res || !res->nodes) {
		note_failed_source(r, l->source);
		note_error(r, "%s: %s", l->name, status == ARES_SUCCESS ? "no address" : ares_strerror(status));
	} else {
		for (struct ares_addrinfo_node *n = res->nodes; n; n = n->ai_next) {
			struct entry e = { .weight = l->weight, .priority = l->priority, .source = l->source };
			const void *a;

			if (n->ai_family == AF_INET)
				a = &((const struct sockaddr_in *)(const void *)n->ai_addr)->sin_addr;
			else if (n->ai_family == AF_INET6)
				a = &((const struct sockaddr_in6 *)(const void *)n->ai_addr)->sin6_addr;
			else
				continue;
			if (!inet_ntop(n->ai_family, a, e.addr.name, sizeof(e.addr.name)))
				continue;
			e.addr.port = l->port;
			if (n->ai_ttl >= 0 && n->ai_ttl < r->min_answer_ttl)
				r->min_answer_ttl = n->ai_ttl;
			if (set_add(&r->found, &e) < 0)
				r->dropped++;
		}
	}
	if (res)
		ares_freeaddrinfo(res);
	free(l);
	r->inflight--;
	pump(r);
	round_done_one(r);
}

/* Launch queued lookups up to MAX_INFLIGHT. A lookup may finish inside ares_getaddrinfo
 * (numeric addresses, /etc/hosts) and call pump again: that inner call does nothing, the
 * outer loop goes on. */
static void pump(struct resolve *r)
{
	struct ares_addrinfo_hints hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
					     /* sorting would connect() to every address */
					     .ai_flags = ARES_AI_NOSORT };

	if (r->pumping)
		return;
	r->pumping = true;
	while (r->inflight < MAX_INFLIGHT && r->qnext < r->nqueue) {
		struct lookup *l = r->queue[r->qnext++];
		r->inflight++;
		ares_getaddrinfo(r->channel, l->name, NULL, &hints, on_addrinfo, l);
	}
	r->pumping = false;
}

static void lookup_addresses(struct resolve *r, const char *name, uint16_t port, uint32_t weight, uint16_t priority)
{
	struct lookup *l = calloc(1, sizeof(*l));

	if (r->nqueue == r->capqueue) {
		int cap = r->capqueue ? r->capqueue * 2 : 16;
		struct lookup **q = realloc(r->queue, (size_t)cap * sizeof(*q));
		if (q) {
			r->queue = q;
			r->capqueue = cap;
		}
	}
	if (!l || r->nqueue == r->capqueue) {
		free(l);
		note_failed_source(r, resolve_source(name));
		note_error(r, "%s: %s", name, "out of memory");
		return;
	}
	*l = (struct lookup){ .r = r, .source = resolve_source(name), .port = port, .priority = priority, .weight = weight };
	snprintf(l->name, sizeof(l->name), "%s", name);
	r->queue[r->nqueue++] = l;
	r->pending++;
	pump(r);
}

static uint16_t get16(const unsigned char *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

/* The smallest TTL of the SRV records in a reply (c-ares 1.18's SRV parser drops TTLs).
 * Every offset is checked against alen: the reply is the network's. -1 when malformed. */
static int srv_min_ttl(const unsigned char *abuf, int alen)
{
	const unsigned char *p = abuf + 12, *end = abuf + alen;
	int qd, an, ttl = INT_MAX;
	long len;
	char *name;

	if (alen < 12)
		return -1;
	qd = get16(abuf + 4);
	an = get16(abuf + 6);
	for (int i = 0; i < qd; i++) {
		if (ares_expand_name(p, abuf, alen, &name, &len) != ARES_SUCCESS)
			return -1;
		ares_free_string(name);
		if (len < 0 || end - p < len + 4)
			return -1;
		p += len + 4;
	}
	for (int i = 0; i < an; i++) {
		uint32_t t;
		uint16_t type, rdlen;

		if (ares_expand_name(p, abuf, alen, &name, &len) != ARES_SUCCESS)
			return -1;
		ares_free_string(name);
		if (len < 0 || end - p < len + 10)
			return -1;
		p += len;
		type = get16(p);
		t = ((uint32_t)p[4] << 24) | ((uint32_t)p[5] << 16) | ((uint32_t)p[6] << 8) | p[7];
		rdlen = get16(p + 8);
		p += 10;
		if (end - p < rdlen)
			return -1;
		p += rdlen;
		if (type == 33 /* SRV */ && t < (uint32_t)ttl)
			ttl = t > INT_MAX ? INT_MAX : (int)t;
	}
	return ttl;
}

static int compare_srv(const void *pa, const void *pb)
{
	const struct ares_srv_reply *a = *(const struct ares_srv_reply *const *)pa;
	const struct ares_srv_reply *b = *(const struct ares_srv_reply *const *)pb;

	if (a->priority != b->priority)
		return a->priority < b->priority ? -1 : 1;
	if (a->weight != b->weight)
		return a->weight > b->weight ? -1 : 1;
	return strcmp(a->host, b->host);
}

static void on_srv(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct resolve *r = arg;
	struct ares_srv_reply *reply = NULL;
	int ttl;

	(void)timeouts;
	if (status == ARES_EDESTRUCTION || r->stopping)
		return;
	if (status == ARES_SUCCESS)
		status = ares_parse_srv_reply(abuf, alen, &reply);
	if (status != ARES_SUCCESS || !reply) {
		r->top_failed = true;
		note_error(r, "%s: %s", r->name, status == ARES_SUCCESS ? "no SRV record" : ares_strerror(status));
		if (reply)
			ares_free_data(reply);
		round_done_one(r);
		return;
	}
	ttl = srv_min_ttl(abuf, alen);
	if (ttl >= 0 && ttl < r->min_answer_ttl)
		r->min_answer_ttl = ttl;

	/* Launch the targets in SRV order, so that when an answer is cut at MAX_SRV_TARGETS it
	 * is the least preferred records that are dropped. */
	struct ares_srv_reply *sorted[MAX_SRV_TARGETS];
	int n = 0, skipped = 0;
	for (struct ares_srv_reply *s = reply; s; s = s->next) {
		if (s->port == 0 || !s->host[0] || strcmp(s->host, ".") == 0)
			continue; /* "service not available here" (RFC 2782) or nonsense */
		if (n == MAX_SRV_TARGETS) {
			skipped++;
			continue;
		}
		sorted[n++] = s;
	}
	if (skipped)
		log_warn(NULL, NULL, "service %s: %s: %d SRV records past the first %d ignored", r->service, r->name,
			 skipped, MAX_SRV_TARGETS);
	qsort(sorted, (size_t)n, sizeof(sorted[0]), compare_srv);
	if (n == 0) {
		r->top_failed = true;
		note_error(r, "%s: %s", r->name, "no usable SRV record");
	}
	for (int i = 0; i < n; i++)
		lookup_addresses(r, sorted[i]->host, sorted[i]->port, sorted[i]->weight, sorted[i]->priority);
	ares_free_data(reply);
	round_done_one(r);
}

static void start_round(struct resolve *r)
{
	r->in_round = true;
	r->again = false;
	r->found.n = 0;
	r->nfailed = 0;
	r->top_failed = false;
	r->min_answer_ttl = INT_MAX;
	r->dropped = 0;
	r->round_error[0] = '\0';
	r->nqueue = 0;
	r->qnext = 0;
	r->pending = 1; /* the launch itself: no callback can finish the round before it ends */
	switch (r->discovery) {
	case CONFIG_DISCOVERY_HOSTS:
		for (int i = 0; i < r->nhosts; i++)
			lookup_addresses(r, r->hosts[i].host, (uint16_t)r->hosts[i].port, (uint32_t)r->hosts[i].weight,
					 config_host_priority(r->load_balance_hosts, i));
		break;
	case CONFIG_DISCOVERY_DNS:
		lookup_addresses(r, r->name, r->port, 1, 0);
		break;
	case CONFIG_DISCOVERY_SRV:
		r->pending++;
		ares_query(r->channel, r->name, 1 /* C_IN */, 33 /* T_SRV */, on_srv, r);
		break;
	}
	arm_ares_timer(r);
	round_done_one(r);
}

static bool source_failed(const struct resolve *r, uint64_t source)
{
	for (int i = 0; i < r->nfailed; i++)
		if (r->failed_sources[i] == source)
			return true;
	return false;
}

/* Full jitter between half and all of the step, so that many tusks do not retry together. */
static double backoff(struct resolve *r, int attempt)
{
	double d = RETRY_FIRST_S;

	for (int i = 1; i < attempt && d < r->fail_ttl; i++)
		d *= 2;
	if (d > r->fail_ttl)
		d = r->fail_ttl;
	r->seed ^= r->seed << 13; /* xorshift32: rand() is neither per-thread nor needed here */
	r->seed ^= r->seed >> 17;
	r->seed ^= r->seed << 5;
	return d * (0.5 + 0.5 * ((double)r->seed / UINT32_MAX));
}

/* Copy the set for resolve_snapshot and fill the state; the caller holds no lock. */
static void publish_state(struct resolve *r, bool good, double delay, double period)
{
	double now = wall_now();
	struct tp_backend_addr *addrs = NULL;
	uint32_t *weight = NULL;

	if (good) {
		addrs = malloc((size_t)(r->current.n ? r->current.n : 1) * sizeof(*addrs));
		weight = malloc((size_t)(r->current.n ? r->current.n : 1) * sizeof(*weight));
		if (addrs && weight) {
			for (int i = 0; i < r->current.n; i++) {
				addrs[i] = r->current.v[i].addr;
				weight[i] = r->current.v[i].weight;
			}
		}
	}
	pthread_mutex_lock(&r->lock);
	r->state.rounds++;
	r->state.last_attempt = now;
	r->state.next_at = now + delay;
	r->state.consecutive_failures = r->consecutive;
	snprintf(r->state.error, sizeof(r->state.error), "%s", r->round_error);
	if (good) {
		r->state.last_answer = now;
		r->state.ttl_ms = (uint32_t)(period * 1000);
		if (r->nfailed)
			r->state.partial++;
		if (addrs && weight) {
			free(r->snap_addrs);
			free(r->snap_weight);
			r->snap_addrs = addrs;
			r->snap_weight = weight;
			r->snap_n = r->current.n;
			addrs = NULL;
			weight = NULL;
		}
		r->state.nbackends = r->current.n;
	} else {
		r->state.failures++;
	}
	pthread_mutex_unlock(&r->lock);
	free(addrs);
	free(weight);
}

static void finish_round(struct resolve *r)
{
	struct set next = { 0 };
	bool good = !r->top_failed && r->found.n > 0;
	double delay, period = 0;
	bool changed = false;

	r->in_round = false;
	if (r->dropped)
		log_warn(NULL, NULL, "service %s: %d addresses past %d backends dropped", r->service, r->dropped,
			 RESOLVE_MAX_BACKENDS);
	if (good) {
		/* The answer, then what it lacks: backends of names that failed this round are
		 * carried over as they were; the others miss one more answer, and go at the
		 * second miss in a row. */
		for (int i = 0; i < r->found.n && good; i++)
			if (set_add(&next, &r->found.v[i]) < 0)
				good = false;
		for (int i = 0; i < r->current.n && good; i++) {
			struct entry e = r->current.v[i];
			if (set_find(&next, &e.addr) >= 0)
				continue;
			if (!source_failed(r, e.source) && ++e.misses >= MISSES_TO_REMOVE) {
				log_info(NULL, NULL, "service %s: backend %s port %u left the answer twice: removed",
					 r->service, e.addr.name, e.addr.port);
				continue;
			}
			if (set_add(&next, &e) < 0)
				good = false;
		}
	}
	if (good) {
		qsort(next.v, (size_t)next.n, sizeof(next.v[0]), compare_entries);
		changed = !set_same(&next, &r->current);
		/* misses changed even when the set did not: keep next either way */
		set_free(&r->current);
		r->current = next;
		r->consecutive = 0;
		period = r->min_answer_ttl == INT_MAX ? r->min_ttl : (double)r->min_answer_ttl;
		if (period < r->min_ttl)
			period = r->min_ttl; /* TTL 0 included */
		if (period > r->max_ttl)
			period = r->max_ttl;
		delay = period;
		if (r->nfailed) {
			/* A name that failed is asked again soon, not a whole TTL later. */
			double retry;
			r->partial_streak++;
			retry = backoff(r, r->partial_streak);
			if (retry < delay)
				delay = retry;
			log_warn(NULL, NULL, "service %s: %s (their last backends kept)", r->service, r->round_error);
		} else {
			r->partial_streak = 0;
		}
	} else {
		set_free(&next);
		r->consecutive++;
		delay = backoff(r, r->consecutive);
		if (!r->round_error[0])
			snprintf(r->round_error, sizeof(r->round_error), "%s", "out of memory");
		log_warn(NULL, NULL, "service %s: resolution failed (%d in a row): %s; keeping the last %d backends, retry in %.1fs",
			 r->service, r->consecutive, r->round_error, r->current.n, delay);
	}
	publish_state(r, good, delay, period);
	if (changed && r->current.n > 0) {
		int n = r->current.n;
		struct tp_backend_addr *addrs = malloc((size_t)n * sizeof(*addrs));
		uint32_t *weight = malloc((size_t)n * sizeof(*weight));
		uint16_t *prio = malloc((size_t)n * sizeof(*prio));
		uint64_t *source = malloc((size_t)n * sizeof(*source));
		if (addrs && weight && prio && source) {
			for (int i = 0; i < n; i++) {
				addrs[i] = r->current.v[i].addr;
				weight[i] = r->current.v[i].weight;
				prio[i] = r->current.v[i].priority;
				source[i] = r->current.v[i].source;
			}
			pthread_mutex_lock(&r->lock);
			r->state.updates++;
			pthread_mutex_unlock(&r->lock);
			r->fn(r->arg, addrs, weight, prio, source, n);
		} else {
			/* Forget the set, so that the next good round finds it changed and tells. */
			r->current.n = 0;
			delay = RETRY_FIRST_S;
		}
		free(addrs);
		free(weight);
		free(prio);
		free(source);
	}
	if (r->again) {
		start_round(r);
		return;
	}
	ev_timer_stop(r->loop, &r->next_round);
	ev_timer_set(&r->next_round, delay, 0.);
	ev_timer_start(r->loop, &r->next_round);
}

static void on_next_round(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct resolve *r = w->data;

	(void)loop;
	(void)revents;
	if (!r->in_round)
		start_round(r);
}

static void on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
	struct resolve *r = w->data;

	(void)revents;
	if (atomic_load(&r->stop_requested)) {
		ev_break(loop, EVBREAK_ALL);
		return;
	}
	if (atomic_exchange(&r->refresh_requested, false)) {
		if (r->in_round) {
			r->again = true;
		} else {
			ev_timer_stop(loop, &r->next_round);
			start_round(r);
		}
	}
}

static void *run(void *arg)
{
	struct resolve *r = arg;

	start_round(r);
	ev_run(r->loop, 0);
	/* Stopping: every pending callback is called (ARES_ECANCELLED, then ARES_EDESTRUCTION)
	 * and only frees its own memory. Cancelled first, until no lookup is in flight: c-ares
	 * before 1.20 (Debian 12 has 1.18.1) lets an ares_getaddrinfo whose other address family
	 * found nothing start its next lookup (a search domain) from inside ares_destroy, which
	 * then aborts on its own assertion that every query list is empty (c-ares PR #553; seen
	 * as a SIGABRT of tusk at SIGTERM). Each pass moves such a lookup one name further; a
	 * name has at most a few search domains. */
	r->stopping = true;
	for (int pass = 0; pass < 16 && r->inflight > 0; pass++)
		ares_cancel(r->channel);
	ares_destroy(r->channel);
	r->channel = NULL;
	return NULL;
}

/* "127.0.0.1:5353,[::1]:53" for ares_set_servers_ports_csv. */
static int nameserver_csv(const struct config_service *svc, char *out, size_t cap)
{
	size_t o = 0;

	out[0] = '\0';
	for (int i = 0; i < svc->nnameservers; i++) {
		const struct config_host *h = &svc->nameservers[i];
		int w = snprintf(out + o, cap - o, strchr(h->host, ':') ? "%s[%s]:%d" : "%s%s:%d", i ? "," : "", h->host,
				 h->port);
		if (w < 0 || (size_t)w >= cap - o)
			return -ENAMETOOLONG;
		o += (size_t)w;
	}
	return 0;
}

struct resolve *resolve_start(const struct config_service *svc, resolve_update_fn *fn, void *arg)
{
	struct ares_options opts = { 0 };
	char csv[16 * (INET6_ADDRSTRLEN + 10)];
	struct resolve *r;
	int err = EIO;

	pthread_once(&ares_once, init_ares);
	if (ares_init_status != ARES_SUCCESS) {
		errno = EIO;
		return NULL;
	}
	r = calloc(1, sizeof(*r));
	if (!r) {
		errno = ENOMEM;
		return NULL;
	}
	snprintf(r->service, sizeof(r->service), "%s", svc->name);
	r->discovery = svc->discovery;
	if (svc->nhosts) {
		r->hosts = calloc((size_t)svc->nhosts, sizeof(*r->hosts));
		if (!r->hosts) {
			err = ENOMEM;
			goto err_free;
		}
		memcpy(r->hosts, svc->hosts, (size_t)svc->nhosts * sizeof(*r->hosts));
		r->nhosts = svc->nhosts;
	}
	snprintf(r->name, sizeof(r->name), "%s", svc->discovery == CONFIG_DISCOVERY_SRV ? svc->srv : svc->dns);
	r->port = (uint16_t)svc->port;
	r->min_ttl = (double)svc->dns_min_ttl_ms / 1000;
	r->max_ttl = (double)svc->dns_max_ttl_ms / 1000;
	if (r->min_ttl <= 0)
		r->min_ttl = 1; /* a config_service built by hand, without the loader's defaults */
	if (r->max_ttl < r->min_ttl)
		r->max_ttl = r->min_ttl;
	r->fail_ttl = svc->dns_nxdomain_ttl_ms ? (double)svc->dns_nxdomain_ttl_ms / 1000 : r->max_ttl;
	r->load_balance_hosts = svc->load_balance_hosts;
	r->fn = fn;
	r->seed = (uint32_t)resolve_source(r->name) ^ (uint32_t)wall_now() ^ 0x9e3779b9u;
	if (!r->seed)
		r->seed = 1;
	r->arg = arg;
	r->state.kind = kind_name(svc->discovery);
	atomic_init(&r->refresh_requested, false);
	atomic_init(&r->stop_requested, false);
	if (pthread_mutex_init(&r->lock, NULL) != 0)
		goto err_free;

	r->loop = ev_loop_new(EVFLAG_AUTO);
	if (!r->loop)
		goto err_mutex;
	ev_async_init(&r->wake, on_wake);
	r->wake.data = r;
	ev_async_start(r->loop, &r->wake);
	ev_timer_init(&r->next_round, on_next_round, 0., 0.);
	r->next_round.data = r;
	ev_timer_init(&r->ares_timer, on_ares_timer, 0., 0.);
	r->ares_timer.data = r;

	opts.sock_state_cb = sock_state;
	opts.sock_state_cb_data = r;
	opts.timeout = QUERY_TIMEOUT_MS;
	opts.tries = QUERY_TRIES;
	if (ares_init_options(&r->channel, &opts, ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES) !=
	    ARES_SUCCESS)
		goto err_loop;
	if (svc->nnameservers) {
		if (nameserver_csv(svc, csv, sizeof csv) < 0 || ares_set_servers_ports_csv(r->channel, csv) != ARES_SUCCESS) {
			err = EINVAL;
			goto err_ares;
		}
	}
	if (pthread_create(&r->thread, NULL, run, r) != 0)
		goto err_ares;
	return r;

err_ares:
	ares_destroy(r->channel);
err_loop:
	ev_loop_destroy(r->loop);
err_mutex:
	pthread_mutex_destroy(&r->lock);
err_free:
	free(r->hosts);
	free(r);
	errno = err;
	return NULL;
}

void resolve_refresh(struct resolve *r)
{
	atomic_store(&r->refresh_requested, true);
	ev_async_send(r->loop, &r->wake);
}

void resolve_stop(struct resolve *r)
{
	if (!r)
		return;
	atomic_store(&r->stop_requested, true);
	ev_async_send(r->loop, &r->wake);
	pthread_join(r->thread, NULL);
	while (r->socks) {
		struct sock_watch *s = r->socks;
		r->socks = s->next;
		free(s);
	}
	ev_loop_destroy(r->loop);
	pthread_mutex_destroy(&r->lock);
	set_free(&r->found);
	set_free(&r->current);
	free(r->failed_sources);
	for (int i = r->qnext; i < r->nqueue; i++)
		free(r->queue[i]); /* a round cut short by the stop: never launched */
	free(r->queue);
	free(r->snap_addrs);
	free(r->snap_weight);
	free(r->hosts);
	free(r);
}

int resolve_snapshot(struct resolve *r, struct resolve_state *st, struct tp_backend_addr *addrs, uint32_t *weight,
		     int cap)
{
	int n;

	pthread_mutex_lock(&r->lock);
	*st = r->state;
	n = r->snap_n < cap ? r->snap_n : cap;
	for (int i = 0; i < n; i++) {
		if (addrs)
			addrs[i] = r->snap_addrs[i];
		if (weight)
			weight[i] = r->snap_weight[i];
	}
	pthread_mutex_unlock(&r->lock);
	return n;
}
