/* The relay's hook list (relay_hooks.h): the registry, the choice per client, and the walks
 * over a client's list that client_int.h's inline wrappers call once the list is not NULL. */
#include "frontend/relay_hooks.h"

#include <errno.h>

#include "frontend/client_int.h"
#include "pool/pool.h"
#include "runtime/runtime.h"
#include "worker/worker.h"

/* Written on the main thread before the workers start, read only afterwards. */
static const struct relay_hooks *registered[RELAY_HOOKS_MAX];
static int nregistered;
/* Every subset of the registrations as a list, by mask (lists[0] unused: that list is NULL). */
static struct relay_hook_list lists[1u << RELAY_HOOKS_MAX];

static unsigned has_of(const struct relay_hooks *h)
{
	return (h->claim ? RH_CLAIM : 0) | (h->request ? RH_REQUEST : 0) | (h->attach ? RH_ATTACH : 0) |
	       (h->writable ? RH_WRITABLE : 0) | (h->timer ? RH_TIMER : 0) | (h->cancel ? RH_CANCEL : 0) |
	       (h->quiet ? RH_QUIET : 0) | (h->closed ? RH_CLOSED : 0) | (h->sql ? RH_SQL : 0) |
	       (h->parsed ? RH_PARSED : 0) | (h->bind ? RH_BIND : 0) | (h->close_stmt ? RH_CLOSE_STMT : 0) |
	       (h->opaque ? RH_OPAQUE : 0) | (h->scanned ? RH_SCANNED : 0) | (h->error ? RH_ERROR : 0) |
	       (h->commit_wait ? RH_COMMIT_WAIT : 0) | (h->ready ? RH_READY : 0) | (h->release ? RH_RELEASE : 0) |
	       (h->linked ? RH_LINKED : 0) | (h->idle ? RH_IDLE : 0);
}

int relay_hooks_register(const struct relay_hooks *h)
{
	for (int i = 0; i < nregistered; i++)
		if (registered[i] == h)
			return 0; /* again (a second start in one process: the test seams) */
	if (nregistered == RELAY_HOOKS_MAX)
		return -ENOSPC;
	registered[nregistered++] = h;
	for (unsigned mask = 1; mask < (1u << nregistered); mask++) {
		struct relay_hook_list *l = &lists[mask];
		l->n = 0;
		l->mask = mask;
		l->has = 0;
		for (int i = 0; i < nregistered; i++)
			if (mask & (1u << i)) {
				l->h[l->n++] = registered[i];
				l->has |= has_of(registered[i]);
			}
	}
	return 0;
}

void relay_hooks_unregister_all(void)
{
	nregistered = 0;
}

const struct relay_hook_list *relay_hooks_choose(const struct tusk_config *cfg, const struct config_pool_rule *rule)
{
	unsigned mask = 0;
	for (int i = 0; i < nregistered; i++)
		if (registered[i]->wants && registered[i]->wants(cfg, rule))
			mask |= 1u << i;
	return mask ? &lists[mask] : NULL;
}

/* The callbacks of list for a client whose awake features are awake (registration bits). */
static unsigned has_for(const struct relay_hook_list *list, unsigned awake)
{
	unsigned has = 0;
	for (int i = 0; list && i < nregistered; i++)
		if (list->mask & (1u << i))
			has |= has_of(registered[i]) & ~(awake & (1u << i) ? 0 : registered[i]->dormant);
	return has;
}

void relay_hooks_wake(struct client *c, const struct relay_hooks *h, bool awake)
{
	for (int i = 0; i < nregistered; i++)
		if (registered[i] == h)
			c->hooks_awake = awake ? c->hooks_awake | (1u << i) : c->hooks_awake & ~(1u << i);
	c->hooks_has = has_for(c->hooks, c->hooks_awake);
}

void relay_hooks_refresh(struct client *c)
{
	const struct tusk_config *cfg = c->worker->rt->cfg;
	const struct relay_hook_list *old = c->hooks, *want = NULL;

	/* Only a pooled client has a pool; the virtual databases' kinds (console, kv) none. */
	if (c->pool)
		want = relay_hooks_choose(cfg, pool_rule(c->pool));
	unsigned was = old ? old->mask : 0, now = want ? want->mask : 0;
	/* A hook that leaves while something of c's is in flight in it stays until it is quiet
	 * (hooks_cfg is not updated: the next event asks again). */
	for (int i = 0; i < nregistered; i++)
		if ((was & ~now & (1u << i)) && registered[i]->quiet && !registered[i]->quiet(c))
			return;
	for (int i = 0; i < nregistered; i++)
		if ((was & ~now & (1u << i)) && registered[i]->closed)
			registered[i]->closed(c);
	c->hooks = want;
	c->hooks_has = has_for(want, c->hooks_awake);
	c->hooks_cfg = cfg;
	for (int i = 0; i < nregistered && c->greeted; i++)
		if ((now & ~was & (1u << i)) && registered[i]->joined)
			registered[i]->joined(c);
}

/* The walks. Each runs only with c->hooks set and its bit in c->hooks_has (the inline
 * wrappers test it); a walk may still call a dormant callback of a feature not awake for c,
 * when another hook in the list defines the same one: it does nothing. */
#define EACH(c, fn) \
	for (const struct relay_hook_list *l_ = (c)->hooks; l_; l_ = NULL) \
		for (int i_ = 0; i_ < l_->n; i_++) \
			for (const struct relay_hooks *h = l_->h[i_]; h && h->fn; h = NULL)

void relay_hooks_claim_(struct client *c)
{
	EACH(c, claim) h->claim(c);
}

bool relay_hooks_request_(struct client *c, const struct server *s)
{
	EACH(c, request) if (h->request(c, s)) return true;
	return false;
}

bool relay_hooks_attach_(struct client *c, struct server *s)
{
	EACH(c, attach) if (h->attach(c, s)) return true;
	return false;
}

bool relay_hooks_writable_(struct client *c)
{
	bool more = false;
	EACH(c, writable) more |= h->writable(c);
	return more;
}

void relay_hooks_timer_(struct client *c)
{
	EACH(c, timer) h->timer(c);
}

bool relay_hooks_cancel_(struct client *c)
{
	EACH(c, cancel) if (h->cancel(c)) return true;
	return false;
}

bool relay_hooks_quiet_(const struct client *c)
{
	EACH(c, quiet) if (!h->quiet(c)) return false;
	return true;
}

void relay_hooks_closed_(struct client *c)
{
	EACH(c, closed) h->closed(c);
}

void relay_hooks_sql_(struct client *c, const char *sql, size_t len)
{
	EACH(c, sql) h->sql(c, sql, len);
}

void relay_hooks_parsed_(struct client *c, const char *name, const uint8_t *rest, size_t rest_len)
{
	EACH(c, parsed) h->parsed(c, name, rest, rest_len);
}

bool relay_hooks_bind_(struct client *c, const uint8_t *m, size_t avail, bool unnamed, const char *text, size_t len)
{
	EACH(c, bind) if (!h->bind(c, m, avail, unnamed, text, len)) return false;
	return true;
}

void relay_hooks_close_stmt_(struct client *c, const char *name)
{
	EACH(c, close_stmt) h->close_stmt(c, name);
}

void relay_hooks_opaque_(struct client *c)
{
	EACH(c, opaque) h->opaque(c);
}

void relay_hooks_scanned_(struct client *c, const uint8_t *p, size_t n)
{
	EACH(c, scanned) h->scanned(c, p, n);
}

void relay_hooks_error_(struct client *c, struct server *s, const uint8_t *m, size_t total)
{
	EACH(c, error) h->error(c, s, m, total);
}

bool relay_hooks_commit_wait_(struct client *c, bool last)
{
	EACH(c, commit_wait) if (h->commit_wait(c, last)) return true;
	return false;
}

void relay_hooks_ready_(struct client *c, bool last)
{
	EACH(c, ready) h->ready(c, last);
}

bool relay_hooks_release_(struct client *c, struct server *s, enum reset_kind reset)
{
	EACH(c, release) if (h->release(c, s, reset)) return true;
	return false;
}

bool relay_hooks_linked_(struct client *c, struct server *s)
{
	EACH(c, linked) if (!h->linked(c, s)) return false;
	return true;
}

void relay_hooks_idle_(struct client *c)
{
	EACH(c, idle) h->idle(c);
}
