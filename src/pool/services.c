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

#include "util/log.h"

struct svc_entry {
	/* immutable once linked */
	struct svc_entry *next;
	const struct config_service *svc; /* of the generation that started it; generations live until exit */
	struct services *owner;
	/* main thread only */
	bool live;         /* part of the newest services_apply */

	pthread_mutex_t lock; /* everything below */
	struct resolve *r; /* NULL once stopped; set and cleared by the main thread */
	struct tp_backend_addr *addrs;
	uint32_t *weights;
	int n;
	struct tp_pool **subs;
	int nsubs, capsubs;
};

struct services {
	pthread_mutex_t lock; /* head */
	struct svc_entry *head; /* newest first */
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
	    a->dns_max_ttl_ms != b->dns_max_ttl_ms)
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

/* Replace e's set and give it to every subscriber. Under e->lock. */
static void publish_locked(struct svc_entry *e, const struct tp_backend_addr *addrs, const uint32_t *weights, int n)
{
	struct tp_backend_addr *a = malloc((size_t)n * sizeof *a);
	uint32_t *w = malloc((size_t)n * sizeof *w);
	if (a && w) {
		memcpy(a, addrs, (size_t)n * sizeof *a);
		for (int i = 0; i < n; i++)
			w[i] = weights ? weights[i] : 1;
		free(e->addrs);
		free(e->weights);
		e->addrs = a;
		e->weights = w;
		e->n = n;
	} else {
		free(a);
		free(w);
		log_warn(NULL, NULL, "service %s: out of memory keeping its %d backends for new pools", e->svc->name, n);
	}
	for (int i = 0; i < e->nsubs; i++)
		if (tp_pool_set_backends(e->subs[i], addrs, n) < 0)
			log_warn(NULL, NULL, "service %s: a pool could not take its %d backends (out of memory)",
				 e->svc->name, n);
}

/* The resolver's callback, on its thread. */
static void on_update(void *arg, const struct tp_backend_addr *addrs, const uint32_t *weight, const uint16_t *priority,
		      int n)
{
	struct svc_entry *e = arg;
	(void)priority;
	pthread_mutex_lock(&e->lock);
	publish_locked(e, addrs, weight, n);
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
	if (!a || !w)
		goto out;
	for (int i = 0; i < svc->nhosts; i++) {
		unsigned char bin[sizeof(struct in6_addr)];
		int af = inet_pton(AF_INET, svc->hosts[i].host, bin) == 1 ? AF_INET
			 : inet_pton(AF_INET6, svc->hosts[i].host, bin) == 1 ? AF_INET6 : 0;
		if (!af || !inet_ntop(af, bin, a[i].name, sizeof a[i].name))
			goto out; /* a name: the resolver's first answer brings the set */
		a[i].port = (uint16_t)svc->hosts[i].port;
		w[i] = (uint32_t)svc->hosts[i].weight;
	}
	pthread_mutex_lock(&e->lock);
	publish_locked(e, a, w, svc->nhosts);
	pthread_mutex_unlock(&e->lock);
out:
	free(a);
	free(w);
}

/* Main thread. The resolver is stopped outside e->lock: its callback takes that lock, and
 * resolve_stop waits for the callback to finish. */
static void entry_stop(struct svc_entry *e)
{
	e->live = false;
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
	free(e->subs);
	free(e);
}

struct services *services_new(void)
{
	struct services *s = calloc(1, sizeof *s);
	if (s)
		pthread_mutex_init(&s->lock, NULL);
	return s;
}

void services_free(struct services *s)
{
	if (!s)
		return;
	for (struct svc_entry *e = s->head; e; e = e->next)
		entry_stop(e);
	while (s->head) {
		struct svc_entry *e = s->head;
		s->head = e->next;
		entry_free(e);
	}
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

int services_subscribe(struct services *s, const struct config_service *svc, struct tp_pool *tp)
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
		struct tp_pool **subs = realloc(e->subs, (size_t)cap * sizeof *subs);
		if (!subs) {
			rc = -ENOMEM;
			goto out;
		}
		e->subs = subs;
		e->capsubs = cap;
	}
	e->subs[e->nsubs++] = tp;
	if (e->n > 0)
		rc = tp_pool_set_backends(tp, e->addrs, e->n);
out:
	pthread_mutex_unlock(&e->lock);
	return rc;
}

int services_addr(struct services *s, const struct config_service *svc, struct net_addr *out)
{
	pthread_mutex_lock(&s->lock);
	struct svc_entry *e = find_locked(s, svc);
	pthread_mutex_unlock(&s->lock);
	int rc = -EHOSTUNREACH;
	if (!e)
		return rc;
	pthread_mutex_lock(&e->lock);
	if (e->n > 0)
		rc = net_addr_numeric(e->addrs[0].name, e->addrs[0].port, out) < 0 ? -EHOSTUNREACH : 0;
	pthread_mutex_unlock(&e->lock);
	return rc;
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
