/* Services (see services.h): a resolver per service and the pools that take its answers.
 *
 * Locking: the registry lock guards the list of entries (they are never unlinked before
 * services_free, so a found entry stays valid); each entry's lock guards its current set and
 * its subscribers, and is held while the set is given to the subscribers, so that a pool
 * subscribing meanwhile gets either the old set and then the new one, or the new one. Order:
 * the pool registry's lock (pool_get subscribes under it), then an entry's lock, then a pool
 * core's own lock (inside tp_pool_set_backends); nothing here takes them the other way. */
#include "pool/services.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pool/probes.h"
#include "resolve/resolve.h"
#include "util/log.h"

/* A role verdict is taken again after this long: a backend excluded for its role is offered
 * to its pools again, so that the next connect to it re-checks (a promotion, a demotion). */
#define SERVICES_ROLE_RECHECK 1.0
/* The services' own ticker (a thread): how often it compares each pool's part of the set
 * with what it was last given, and kicks the queues of pools looking for a primary. */
#define SERVICES_TICK 0.1

struct svc_sub {
	struct tp_pool *tp;
	int target;   /* enum config_target */
	uint64_t fed; /* fingerprint of the part it was last given (0: none yet) */
};

static double mono_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct svc_entry {
	/* immutable once linked */
	struct svc_entry *next;
	const struct config_service *svc; /* of the generation that started it; generations live until exit */
	struct services *owner;
	bool live;         /* part of the newest services_apply; written by the main thread under the registry lock */

	pthread_mutex_t lock; /* everything below */
	struct resolve *r; /* NULL once stopped; set and cleared by the main thread */
	struct tp_backend_addr *addrs;
	uint32_t *weights;
	uint8_t *roles;   /* enum services_role per backend, kept across answers by address */
	double *checked;  /* when each role was last seen (monotonic) */
	uint64_t *replay; /* each standby's last pg_last_wal_replay_lsn() seen (0: none); only grows */
	uint64_t *source; /* the name each came from (resolve_source): its TLS name (services_tls_name) */
	uint8_t *down;    /* its last connect failed (services_note_down), none succeeded since */
	int n;
	uint64_t gen;     /* bumped by each new set: fingerprints of an older one never match */
	struct svc_sub *subs;
	int nsubs, capsubs;
};

struct services {
	pthread_mutex_t lock; /* head */
	struct svc_entry *head; /* newest first */
	/* The ticker (services_tick every SERVICES_TICK): started by services_new, stopped and
	 * joined by services_stop. */
	pthread_t ticker;
	bool ticking;
	pthread_mutex_t tick_lock; /* stop, with tick_cond */
	pthread_cond_t tick_cond;
	bool stop;
};

static bool same_host(const struct config_host *a, const struct config_host *b)
{
	return strcmp(a->host, b->host) == 0 && a->port == b->port && a->weight == b->weight;
}

bool services_same_discovery(const struct config_service *a, const struct config_service *b)
{
	if (strcmp(a->name, b->name) != 0 || a->discovery != b->discovery || a->nhosts != b->nhosts ||
	    strcmp(a->dns, b->dns) != 0 || a->port != b->port || strcmp(a->srv, b->srv) != 0 ||
	    a->nnameservers != b->nnameservers || a->dns_min_ttl_ms != b->dns_min_ttl_ms ||
	    a->dns_max_ttl_ms != b->dns_max_ttl_ms || a->dns_nxdomain_ttl_ms != b->dns_nxdomain_ttl_ms ||
	    a->load_balance_hosts != b->load_balance_hosts)
		return false;
	for (int i = 0; i < a->nhosts; i++)
		if (!same_host(&a->hosts[i], &b->hosts[i]))
			return false;
	for (int i = 0; i < a->nnameservers; i++)
		if (!same_host(&a->nameservers[i], &b->nameservers[i]))
			return false;
	return true;
}

/* The entry that feeds svc: the live one with its discovery, else the newest stopped one
 * (a pool of an older generation keeps the last set it could have had). Under s->lock. */
static struct svc_entry *find_locked(struct services *s, const struct config_service *svc)
{
	struct svc_entry *stopped = NULL;
	for (struct svc_entry *e = s->head; e; e = e->next) {
		if (e->svc != svc && !services_same_discovery(e->svc, svc))
			continue;
		if (e->live)
			return e;
		if (!stopped)
			stopped = e;
	}
	return stopped;
}

bool services_role_fits(int target, enum services_role role)
{
	switch (target) {
	case CONFIG_TARGET_READ_WRITE:
	case CONFIG_TARGET_PRIMARY:
		return role != SERVICES_ROLE_STANDBY;
	case CONFIG_TARGET_READ_ONLY:
	case CONFIG_TARGET_STANDBY:
		return role != SERVICES_ROLE_PRIMARY;
	default:
		return true;
	}
}

/* A pool of target is looking for a primary: it wants one (primary, read-write, the primary
 * side of a split) and every backend that may be one (not known to be a standby) failed its
 * last connect. A failover may be under way: every backend is offered to it, so that its
 * claims wait, and connect to each standby in turn (each -ESTALE holds it backoff_first),
 * until one is found promoted. Under e->lock. */
static bool hunting_locked(const struct svc_entry *e, int target)
{
	if (target != CONFIG_TARGET_PRIMARY && target != CONFIG_TARGET_READ_WRITE)
		return false;
	bool standby = false;
	for (int i = 0; i < e->n; i++) {
		if (e->roles[i] != SERVICES_ROLE_STANDBY && !e->down[i])
			return false;
		standby |= e->roles[i] == SERVICES_ROLE_STANDBY;
	}
	return standby;
}

/* The part of e's set that sub may connect to: backends whose role fits its target, those of
 * unknown role (a connect finds out), those whose verdict is due for a re-check, and all of
 * them while it is looking for a primary (hunting_locked). For prefer-standby: the standbys
 * (and unknown) while any is known, else all. Under e->lock; out has room for e->n. */
static int filter_locked(const struct svc_entry *e, const struct svc_sub *sub, double now, struct tp_backend_addr *out)
{
	int target = sub->target, n = 0;
	if (hunting_locked(e, target)) {
		memcpy(out, e->addrs, (size_t)e->n * sizeof *out);
		return e->n;
	}
	if (target == CONFIG_TARGET_PREFER_STANDBY) {
		target = CONFIG_TARGET_ANY;
		for (int i = 0; i < e->n; i++)
			if (e->roles[i] == SERVICES_ROLE_STANDBY)
				target = CONFIG_TARGET_STANDBY;
	}
	for (int i = 0; i < e->n; i++)
		if (services_role_fits(target, (enum services_role)e->roles[i]) ||
		    now - e->checked[i] >= SERVICES_ROLE_RECHECK)
			out[n++] = e->addrs[i];
	return n;
}

/* FNV-1a over the set's generation and the backends of a part. */
static uint64_t fingerprint(uint64_t gen, const struct tp_backend_addr *part, int m)
{
	uint64_t h = 14695981039346656037ull ^ gen;
	for (int k = 0; k < m; k++) {
		for (const char *c = part[k].name; *c; c++)
			h = (h ^ (uint8_t)*c) * 1099511628211ull;
		h = (h ^ part[k].port) * 1099511628211ull;
	}
	return h | 1u;
}

/* Give subscribers [from, e->nsubs) their part of the current set when it differs from what
 * each was last given (or always, with force). With kick, a pool looking for a primary whose
 * part did not change has its queue worked: a standby's -ESTALE hold may have ended.
 * Level-triggered: whatever verdict, failure or re-check changed, the next call gives each
 * pool what it should have now. Under e->lock. */
static void feed_from_locked(struct svc_entry *e, int from, bool force, bool kick)
{
	if (e->n == 0)
		return;
	struct tp_backend_addr *part = malloc((size_t)e->n * sizeof *part);
	if (!part) {
		log_warn(NULL, NULL, "service %s: out of memory giving its backends to its pools", e->svc->name);
		return;
	}
	double now = mono_now();
	for (int i = from; i < e->nsubs; i++) {
		struct svc_sub *sub = &e->subs[i];
		int m = filter_locked(e, sub, now, part);
		/* None fits: the pool keeps what it has (an empty answer never empties a pool);
		 * its connects find the roles out and fail fast, naming them. */
		if (m == 0)
			continue;
		uint64_t fp = fingerprint(e->gen, part, m);
		if (force || fp != sub->fed) {
			if (tp_pool_set_backends(sub->tp, part, m) < 0)
				log_warn(NULL, NULL, "service %s: a pool could not take its %d backends (out of memory)",
					 e->svc->name, m);
			else
				sub->fed = fp;
		} else if (kick && hunting_locked(e, sub->target)) {
			tp_pool_kick(sub->tp);
		}
	}
	free(part);
}

/* Give each subscriber whose part changed its part of the current set. Under e->lock. */
static void feed_locked(struct svc_entry *e)
{
	feed_from_locked(e, 0, false, false);
}

/* Replace e's set (roles carried over by address) and feed the subscribers. Under e->lock. */
static void publish_locked(struct svc_entry *e, const struct tp_backend_addr *addrs, const uint32_t *weights,
			   const uint16_t *priorities, const uint64_t *sources, int n)
{
	struct tp_backend_addr *a = malloc((size_t)n * sizeof *a);
	uint32_t *w = malloc((size_t)n * sizeof *w);
	uint8_t *r = calloc((size_t)n, sizeof *r);
	double *c = calloc((size_t)n, sizeof *c);
	uint64_t *rl = calloc((size_t)n, sizeof *rl);
	uint64_t *src = malloc((size_t)n * sizeof *src);
	uint8_t *dn = calloc((size_t)n, sizeof *dn);
	if (!a || !w || !r || !c || !rl || !src || !dn) {
		free(dn);
		free(src);
		free(rl);
		free(a);
		free(w);
		free(r);
		free(c);
		log_warn(NULL, NULL, "service %s: out of memory taking its %d backends", e->svc->name, n);
		return;
	}
	memcpy(a, addrs, (size_t)n * sizeof *a);
	memcpy(src, sources, (size_t)n * sizeof *src);
	for (int i = 0; i < n; i++) {
		w[i] = weights ? weights[i] : 1;
		/* What the pool cores choose by (pick_backend): the weight of a static host or an
		 * SRV record, and the SRV priority. */
		a[i].weight = w[i];
		a[i].priority = priorities ? priorities[i] : 0;
		for (int j = 0; j < e->n; j++)
			if (e->addrs[j].port == a[i].port && strcmp(e->addrs[j].name, a[i].name) == 0) {
				r[i] = e->roles[j];
				c[i] = e->checked[j];
				rl[i] = e->replay[j];
				dn[i] = e->down[j];
			}
	}
	free(e->addrs);
	free(e->weights);
	free(e->roles);
	free(e->checked);
	free(e->replay);
	free(e->source);
	free(e->down);
	e->down = dn;
	e->gen++;
	e->replay = rl;
	e->source = src;
	e->addrs = a;
	e->weights = w;
	e->roles = r;
	e->checked = c;
	e->n = n;
	feed_locked(e);
}

/* The resolver's callback, on its thread. */
static void on_update(void *arg, const struct tp_backend_addr *addrs, const uint32_t *weight, const uint16_t *priority,
		      const uint64_t *source, int n)
{
	struct svc_entry *e = arg;
	TUSK_PROBE3(resolver__update, e->svc->name, n, 0);
	pthread_mutex_lock(&e->lock);
	publish_locked(e, addrs, weight, priority, source, n);
	pthread_mutex_unlock(&e->lock);
	log_info(NULL, NULL, "service %s: %d backend%s now (%s%s)", e->svc->name, n, n == 1 ? "" : "s", addrs[0].name,
		 n > 1 ? ", ..." : "");
}

/* A static service of numeric addresses needs no lookup: its set is known now, in the same
 * text the resolver will produce (inet_ntop), so its first answer changes nothing. */
static void seed_numeric(struct svc_entry *e)
{
	const struct config_service *svc = e->svc;
	if (svc->discovery != CONFIG_DISCOVERY_HOSTS || svc->nhosts == 0 || svc->nhosts > RESOLVE_MAX_BACKENDS)
		return;
	struct tp_backend_addr *a = calloc((size_t)svc->nhosts, sizeof *a);
	uint32_t *w = calloc((size_t)svc->nhosts, sizeof *w);
	uint16_t *prio = calloc((size_t)svc->nhosts, sizeof *prio);
	uint64_t *src = calloc((size_t)svc->nhosts, sizeof *src);
	if (!a || !w || !prio || !src)
		goto out;
	for (int i = 0; i < svc->nhosts; i++) {
		unsigned char bin[sizeof(struct in6_addr)];
		int af = inet_pton(AF_INET, svc->hosts[i].host, bin) == 1 ? AF_INET
			 : inet_pton(AF_INET6, svc->hosts[i].host, bin) == 1 ? AF_INET6 : 0;
		if (!af || !inet_ntop(af, bin, a[i].name, sizeof a[i].name))
			goto out; /* a name: the resolver's first answer brings the set */
		a[i].port = (uint16_t)svc->hosts[i].port;
		w[i] = (uint32_t)svc->hosts[i].weight;
		prio[i] = config_host_priority(svc->load_balance_hosts, i);
		src[i] = resolve_source(svc->hosts[i].host);
	}
	pthread_mutex_lock(&e->lock);
	publish_locked(e, a, w, prio, src, svc->nhosts);
	pthread_mutex_unlock(&e->lock);
out:
	free(prio);
	free(src);
	free(a);
	free(w);
}

/* Main thread. The resolver is stopped outside e->lock: its callback takes that lock, and
 * resolve_stop waits for the callback to finish. */
static void entry_stop(struct svc_entry *e)
{
	pthread_mutex_lock(&e->owner->lock); /* live is read under it (find_locked) */
	e->live = false;
	pthread_mutex_unlock(&e->owner->lock);
	pthread_mutex_lock(&e->lock);
	struct resolve *r = e->r;
	e->r = NULL;
	pthread_mutex_unlock(&e->lock);
	resolve_stop(r);
}

static void entry_free(struct svc_entry *e)
{
	pthread_mutex_destroy(&e->lock);
	free(e->addrs);
	free(e->weights);
	free(e->roles);
	free(e->checked);
	free(e->replay);
	free(e->source);
	free(e->down);
	free(e->subs);
	free(e);
}

static void *ticker_main(void *arg);

struct services *services_new(void)
{
	struct services *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->tick_lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->tick_cond, &ca);
	pthread_condattr_destroy(&ca);
	if (pthread_create(&s->ticker, NULL, ticker_main, s) != 0) {
		pthread_cond_destroy(&s->tick_cond);
		pthread_mutex_destroy(&s->tick_lock);
		pthread_mutex_destroy(&s->lock);
		free(s);
		return NULL;
	}
	s->ticking = true;
	return s;
}

void services_stop(struct services *s)
{
	if (!s)
		return;
	if (s->ticking) {
		pthread_mutex_lock(&s->tick_lock);
		s->stop = true;
		pthread_cond_signal(&s->tick_cond);
		pthread_mutex_unlock(&s->tick_lock);
		pthread_join(s->ticker, NULL);
		s->ticking = false;
	}
	pthread_mutex_lock(&s->lock);
	struct svc_entry *head = s->head;
	pthread_mutex_unlock(&s->lock);
	for (struct svc_entry *e = head; e; e = e->next)
		entry_stop(e);
}

void services_free(struct services *s)
{
	if (!s)
		return;
	services_stop(s);
	while (s->head) {
		struct svc_entry *e = s->head;
		s->head = e->next;
		entry_free(e);
	}
	pthread_cond_destroy(&s->tick_cond);
	pthread_mutex_destroy(&s->tick_lock);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

int services_apply(struct services *s, const struct tusk_config *cfg)
{
	int nentries = 0, nfresh = 0, rc = 0;

	pthread_mutex_lock(&s->lock);
	for (struct svc_entry *e = s->head; e; e = e->next)
		nentries++;
	pthread_mutex_unlock(&s->lock);
	/* old: the entries now (only the main thread adds any); keep: which this configuration
	 * keeps; fresh: started for it, linked only once all started (a failed reload leaves
	 * nothing that points into its configuration). */
	struct svc_entry **old = calloc((size_t)nentries + 1, sizeof *old);
	bool *keep = calloc((size_t)nentries + 1, sizeof *keep);
	struct svc_entry **fresh = calloc((size_t)cfg->nservices + 1, sizeof *fresh);
	if (!old || !keep || !fresh) {
		rc = -ENOMEM;
		goto out;
	}
	pthread_mutex_lock(&s->lock);
	int k = 0;
	for (struct svc_entry *e = s->head; e && k < nentries; e = e->next)
		old[k++] = e;
	pthread_mutex_unlock(&s->lock);

	for (int i = 0; i < cfg->nservices; i++) {
		const struct config_service *svc = &cfg->services[i];
		int found = -1;
		for (int j = 0; j < nentries && found < 0; j++)
			if (old[j]->live && services_same_discovery(old[j]->svc, svc))
				found = j;
		if (found >= 0) {
			keep[found] = true;
			continue;
		}
		struct svc_entry *e = calloc(1, sizeof *e);
		if (!e) {
			rc = -ENOMEM;
			goto out;
		}
		pthread_mutex_init(&e->lock, NULL);
		e->svc = svc;
		e->owner = s;
		seed_numeric(e);
		struct resolve *r = resolve_start(svc, on_update, e);
		if (!r) {
			rc = -errno;
			log_error(NULL, NULL, "service %s: the resolver could not start: %s", svc->name, strerror(errno));
			entry_free(e);
			goto out;
		}
		pthread_mutex_lock(&e->lock);
		e->r = r;
		pthread_mutex_unlock(&e->lock);
		e->live = true;
		fresh[nfresh++] = e;
	}
	pthread_mutex_lock(&s->lock);
	for (int i = 0; i < nfresh; i++) {
		fresh[i]->next = s->head;
		s->head = fresh[i];
	}
	pthread_mutex_unlock(&s->lock);
	nfresh = 0;
	for (int j = 0; j < nentries; j++) {
		if (!old[j]->live)
			continue;
		if (keep[j])
			resolve_refresh(old[j]->r); /* a reload asks again now */
		else
			entry_stop(old[j]); /* gone or changed: its pools (retired) keep the last set */
	}
out:
	for (int i = 0; i < nfresh; i++) {
		entry_stop(fresh[i]);
		entry_free(fresh[i]);
	}
	free(old);
	free(keep);
	free(fresh);
	return rc;
}

int services_subscribe(struct services *s, const struct config_service *svc, struct tp_pool *tp, int target)
{
	pthread_mutex_lock(&s->lock);
	struct svc_entry *e = find_locked(s, svc);
	pthread_mutex_unlock(&s->lock);
	if (!e)
		return 0; /* not reached: every rule's service was applied */
	int rc = 0;
	pthread_mutex_lock(&e->lock);
	if (e->nsubs == e->capsubs) {
		int cap = e->capsubs ? 2 * e->capsubs : 8;
		struct svc_sub *subs = realloc(e->subs, (size_t)cap * sizeof *subs);
		if (!subs) {
			rc = -ENOMEM;
			goto out;
		}
		e->subs = subs;
		e->capsubs = cap;
	}
	e->subs[e->nsubs++] = (struct svc_sub){ .tp = tp, .target = target };
	/* Only the newcomer: the others have the set already, and a "*" rule can make thousands
	 * of pools, each of which would otherwise re-feed all before it. */
	feed_from_locked(e, e->nsubs - 1, true, false);
out:
	pthread_mutex_unlock(&e->lock);
	return rc;
}

void services_note_role(struct services *s, const struct config_service *svc, const struct tp_backend_addr *be,
			enum services_role role)
{
	pthread_mutex_lock(&s->lock);
	struct svc_entry *e = find_locked(s, svc);
	pthread_mutex_unlock(&s->lock);
	if (!e)
		return;
	bool changed = false, refeed = false;
	double now = mono_now();
	pthread_mutex_lock(&e->lock);
	for (int i = 0; i < e->n; i++) {
		if (e->addrs[i].port != be->port || strcmp(e->addrs[i].name, be->name) != 0)
			continue;
		changed = e->roles[i] != role;
		/* What a pool is given depends on the role, whether the verdict is due for a
		 * re-check and whether the backend is down: only a change of one re-feeds (most
		 * logins change none). */
		refeed |= changed || now - e->checked[i] >= SERVICES_ROLE_RECHECK || e->down[i];
		e->roles[i] = (uint8_t)role;
		e->checked[i] = now;
		e->down[i] = 0;
	}
	if (refeed)
		feed_locked(e);
	pthread_mutex_unlock(&e->lock);
	if (changed)
		log_info(NULL, NULL, "service %s: %s:%u is a %s", svc->name, be->name, be->port,
			 services_role_name(role));
}

bool services_has_standby(struct services *s, const struct config_service *svc)
{
	pthread_mutex_lock(&s->lock);
	struct svc_entry *e = find_locked(s, svc);
	pthread_mutex_unlock(&s->lock);
	bool any = false;
	if (!e)
		return false;
	pthread_mutex_lock(&e->lock);
	for (int i = 0; i < e->n && !any; i++)
		any = e->roles[i] == SERVICES_ROLE_STANDBY;
	pthread_mutex_unlock(&e->lock);
	return any;
}

static int index_locked(const struct svc_entry *e, const struct tp_backend_addr *be);
static struct svc_entry *entry_of(struct services *s, const struct config_service *svc);

void services_tick(struct services *s)
{
	double now = mono_now();
	pthread_mutex_lock(&s->lock);
	struct svc_entry *head = s->head;
	pthread_mutex_unlock(&s->lock);
	/* Entries are never unlinked before services_free, and new ones go in at the head. */
	for (struct svc_entry *e = head; e; e = e->next) {
		pthread_mutex_lock(&e->lock);
		/* Only an entry with a verdict due for its re-check or a backend down can give a
		 * pool another part than it has (a cheap look first: a "*" rule makes many pools). */
		bool due = false;
		for (int i = 0; i < e->n && !due; i++)
			due = e->down[i] ||
			      (e->roles[i] != SERVICES_ROLE_UNKNOWN && now - e->checked[i] >= SERVICES_ROLE_RECHECK);
		if (due)
			feed_from_locked(e, 0, false, true);
		pthread_mutex_unlock(&e->lock);
	}
}

static void *ticker_main(void *arg)
{
	struct services *s = arg;
	pthread_mutex_lock(&s->tick_lock);
	while (!s->stop) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		long ns = ts.tv_nsec + (long)(SERVICES_TICK * 1e9);
		ts.tv_sec += ns / 1000000000L;
		ts.tv_nsec = ns % 1000000000L;
		(void)pthread_cond_timedwait(&s->tick_cond, &s->tick_lock, &ts);
		if (s->stop)
			break;
		pthread_mutex_unlock(&s->tick_lock);
		services_tick(s);
		pthread_mutex_lock(&s->tick_lock);
	}
	pthread_mutex_unlock(&s->tick_lock);
	return NULL;
}

/* A connect to be failed (refused, timed out, the server shutting down): while every backend
 * that may be a primary is down, the pools that want one are given every backend at once
 * (hunting_locked), before the failed claim looks for another. */
void services_note_down(struct services *s, const struct config_service *svc, const struct tp_backend_addr *be)
{
	struct svc_entry *e = entry_of(s, svc);
	if (!e)
		return;
	pthread_mutex_lock(&e->lock);
	int i = index_locked(e, be);
	if (i >= 0 && !e->down[i]) {
		e->down[i] = 1;
		feed_locked(e);
	}
	pthread_mutex_unlock(&e->lock);
}

/* A connect to be logged in (its role, if any, comes through services_note_role). */
void services_note_up(struct services *s, const struct config_service *svc, const struct tp_backend_addr *be)
{
	struct svc_entry *e = entry_of(s, svc);
	if (!e)
		return;
	pthread_mutex_lock(&e->lock);
	int i = index_locked(e, be);
	if (i >= 0 && e->down[i]) {
		e->down[i] = 0;
		feed_locked(e);
	}
	pthread_mutex_unlock(&e->lock);
}

bool services_primary_down(struct services *s, const struct config_service *svc)
{
	struct svc_entry *e = entry_of(s, svc);
	if (!e)
		return false;
	pthread_mutex_lock(&e->lock);
	bool down = hunting_locked(e, CONFIG_TARGET_PRIMARY);
	pthread_mutex_unlock(&e->lock);
	return down;
}

/* The entry's index of be, or -1. Under e->lock. */
static int index_locked(const struct svc_entry *e, const struct tp_backend_addr *be)
{
	for (int i = 0; i < e->n; i++)
		if (e->addrs[i].port == be->port && strcmp(e->addrs[i].name, be->name) == 0)
			return i;
	return -1;
}

static struct svc_entry *entry_of(struct services *s, const struct config_service *svc)
{
	pthread_mutex_lock(&s->lock);
	struct svc_entry *e = find_locked(s, svc);
	pthread_mutex_unlock(&s->lock);
	return e;
}

void services_tls_name(struct services *s, const struct config_service *svc, const struct tp_backend_addr *be,
		       char *out, size_t cap)
{
	const char *name = svc->nhosts > 0 ? svc->hosts[0].host : svc->dns[0] ? svc->dns : svc->srv;
	struct svc_entry *e = svc->discovery == CONFIG_DISCOVERY_HOSTS && svc->nhosts > 1 ? entry_of(s, svc) : NULL;
	if (e) {
		pthread_mutex_lock(&e->lock);
		int j = index_locked(e, be);
		uint64_t src = j >= 0 ? e->source[j] : 0;
		pthread_mutex_unlock(&e->lock);
		for (int i = 0; j >= 0 && i < svc->nhosts; i++)
			if (svc->hosts[i].port == be->port && resolve_source(svc->hosts[i].host) == src) {
				name = svc->hosts[i].host;
				break;
			}
	}
	snprintf(out, cap, "%s", name);
}

void services_note_replay(struct services *s, const struct config_service *svc, const struct tp_backend_addr *be,
			  uint64_t lsn)
{
	struct svc_entry *e = entry_of(s, svc);
	if (!e)
		return;
	pthread_mutex_lock(&e->lock);
	int i = index_locked(e, be);
	if (i >= 0 && lsn > e->replay[i])
		e->replay[i] = lsn;
	pthread_mutex_unlock(&e->lock);
}

uint64_t services_replay_of(struct services *s, const struct config_service *svc, const struct tp_backend_addr *be)
{
	struct svc_entry *e = entry_of(s, svc);
	uint64_t lsn = 0;
	if (!e)
		return 0;
	pthread_mutex_lock(&e->lock);
	int i = index_locked(e, be);
	if (i >= 0)
		lsn = e->replay[i];
	pthread_mutex_unlock(&e->lock);
	return lsn;
}

void services_forget_role(struct services *s, const struct config_service *svc, const struct tp_backend_addr *be)
{
	struct svc_entry *e = entry_of(s, svc);
	if (!e)
		return;
	pthread_mutex_lock(&e->lock);
	int i = index_locked(e, be);
	bool changed = i >= 0 && e->roles[i] != SERVICES_ROLE_UNKNOWN;
	if (changed) {
		/* Unknown fits every pool: each is re-fed it, and its next connect there tells. */
		e->roles[i] = SERVICES_ROLE_UNKNOWN;
		e->checked[i] = 0;
		feed_locked(e);
	}
	pthread_mutex_unlock(&e->lock);
	if (changed)
		log_info(NULL, NULL, "service %s: %s:%u answered 25006 (read-only transaction): its role is re-checked",
			 svc->name, be->name, be->port);
}

bool services_may_have_standby(struct services *s, const struct config_service *svc)
{
	struct svc_entry *e = entry_of(s, svc);
	bool any = false;
	if (!e)
		return false;
	pthread_mutex_lock(&e->lock);
	for (int i = 0; i < e->n && !any; i++)
		any = e->roles[i] != SERVICES_ROLE_PRIMARY;
	pthread_mutex_unlock(&e->lock);
	return any;
}

const char *services_role_name(enum services_role role)
{
	return role == SERVICES_ROLE_PRIMARY ? "primary" : role == SERVICES_ROLE_STANDBY ? "standby" : "unknown";
}

enum services_role services_role_of(struct services *s, const struct config_service *svc, const struct tp_backend_addr *be)
{
	pthread_mutex_lock(&s->lock);
	struct svc_entry *e = find_locked(s, svc);
	pthread_mutex_unlock(&s->lock);
	enum services_role role = SERVICES_ROLE_UNKNOWN;
	if (!e)
		return role;
	pthread_mutex_lock(&e->lock);
	for (int i = 0; i < e->n; i++)
		if (e->addrs[i].port == be->port && strcmp(e->addrs[i].name, be->name) == 0)
			role = (enum services_role)e->roles[i];
	pthread_mutex_unlock(&e->lock);
	return role;
}

/* Which of an entry's addresses (under its lock): -1 when none fits. */
static int pick_first(const struct svc_entry *e)
{
	return e->n > 0 ? 0 : -1;
}

/* Its first primary, else its first that is not a standby (a role not known yet). */
static int pick_primary(const struct svc_entry *e)
{
	for (int i = 0; i < e->n; i++)
		if (e->roles[i] == SERVICES_ROLE_PRIMARY)
			return i;
	for (int i = 0; i < e->n; i++)
		if (e->roles[i] != SERVICES_ROLE_STANDBY)
			return i;
	return -1;
}

/* The address of svc's entry that pick chooses: its numeric address, and the backend's when
 * be is not NULL. */
static int entry_addr(struct services *s, const struct config_service *svc, int (*pick)(const struct svc_entry *),
		      struct net_addr *out, struct tp_backend_addr *be)
{
	pthread_mutex_lock(&s->lock);
	struct svc_entry *e = find_locked(s, svc);
	pthread_mutex_unlock(&s->lock);
	int rc = -EHOSTUNREACH;
	if (!e)
		return rc;
	pthread_mutex_lock(&e->lock);
	int i = pick(e);
	if (i >= 0) {
		rc = net_addr_numeric(e->addrs[i].name, e->addrs[i].port, out) < 0 ? -EHOSTUNREACH : 0;
		if (be)
			*be = e->addrs[i];
	}
	pthread_mutex_unlock(&e->lock);
	return rc;
}

static bool among(const struct tp_backend_addr *be, const struct tp_backend_addr *v, int n)
{
	for (int i = 0; i < n; i++)
		if (v[i].port == be->port && strcmp(v[i].name, be->name) == 0)
			return true;
	return false;
}

int services_candidate(struct services *s, const struct config_service *svc, bool standby_first,
		       const struct tp_backend_addr *tried, int ntried, struct net_addr *out, struct tp_backend_addr *be)
{
	pthread_mutex_lock(&s->lock);
	struct svc_entry *e = find_locked(s, svc);
	pthread_mutex_unlock(&s->lock);
	if (!e)
		return -EHOSTUNREACH;
	uint8_t want = standby_first ? SERVICES_ROLE_STANDBY : SERVICES_ROLE_PRIMARY;
	uint8_t other = standby_first ? SERVICES_ROLE_PRIMARY : SERVICES_ROLE_STANDBY;
	int rc = -EHOSTUNREACH;
	pthread_mutex_lock(&e->lock);
	/* rounds: the wanted role up, unknown up, the wanted role down, unknown down, the other */
	for (int round = 0; round < 5 && rc < 0; round++) {
		for (int i = 0; i < e->n; i++) {
			uint8_t role = e->roles[i];
			bool down = e->down[i] != 0;
			bool in = round == 0   ? role == want && !down
				  : round == 1 ? role == SERVICES_ROLE_UNKNOWN && !down
				  : round == 2 ? role == want && down
				  : round == 3 ? role == SERVICES_ROLE_UNKNOWN && down
					       : role == other;
			if (!in || among(&e->addrs[i], tried, ntried))
				continue;
			rc = net_addr_numeric(e->addrs[i].name, e->addrs[i].port, out) < 0 ? -EHOSTUNREACH : 0;
			if (be)
				*be = e->addrs[i];
			break;
		}
	}
	pthread_mutex_unlock(&e->lock);
	return rc;
}

int services_addr(struct services *s, const struct config_service *svc, struct net_addr *out)
{
	return entry_addr(s, svc, pick_first, out, NULL);
}

int services_primary_addr(struct services *s, const struct config_service *svc, struct net_addr *out,
			  struct tp_backend_addr *be)
{
	return entry_addr(s, svc, pick_primary, out, be);
}

bool services_view(struct services *s, int i, char *name, size_t namecap, struct resolve_state *st,
		   struct tp_backend_addr *addrs, uint32_t *weights, int cap, int *n)
{
	struct svc_entry *e;
	pthread_mutex_lock(&s->lock);
	for (e = s->head; e; e = e->next)
		if (e->live && i-- == 0)
			break;
	pthread_mutex_unlock(&s->lock);
	if (!e)
		return false;
	snprintf(name, namecap, "%s", e->svc->name);
	memset(st, 0, sizeof *st);
	pthread_mutex_lock(&e->lock);
	/* Under e->lock: a reload stopping this resolver waits for the snapshot. */
	if (e->r)
		(void)resolve_snapshot(e->r, st, NULL, NULL, 0);
	int m = e->n < cap ? e->n : cap;
	if (m > 0) {
		memcpy(addrs, e->addrs, (size_t)m * sizeof *addrs);
		memcpy(weights, e->weights, (size_t)m * sizeof *weights);
	}
	*n = m;
	pthread_mutex_unlock(&e->lock);
	return true;
}
