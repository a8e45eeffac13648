/* Shared pools (see pool.h). Locking: the registry lock guards the list of pools and is
 * held only to find or add one; each pool's lock guards its counters, idle list and wait
 * queue, and is never held while doing I/O or taking another pool's lock. Worker inbox
 * posts happen after the pool lock is released. */
#include "pool/pool.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "net/net.h"
#include "pool/server.h"
#include "runtime/runtime.h"
#include "util/log.h"
#include "worker/worker.h"

struct pool {
	/* immutable after creation */
	char database[CONFIG_NAME_MAX];
	char user[CONFIG_NAME_MAX];
	const struct config_pool_rule *rule;
	struct runtime *rt;
	int index;
	struct pool *next; /* registry list; immutable once linked (pools are never unlinked) */

	pthread_mutex_t lock; /* protects everything below */
	int nslots;           /* servers connecting, in use or idle; <= rule->size */
	struct server *idle;  /* parked, most recently used first */
	struct pool_waiter *wait_head, *wait_tail;
};

struct pool_registry {
	pthread_mutex_t lock; /* protects head and count */
	struct pool *head;
	int count;
};

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
		while (p->idle) {
			struct server *s = p->idle;
			p->idle = s->next_idle;
			server_close(s, "shutting down");
		}
		pthread_mutex_destroy(&p->lock);
		free(p);
		p = next;
	}
	pthread_mutex_destroy(&reg->lock);
	free(reg);
}

struct pool *pool_get(struct runtime *rt, const struct config_pool_rule *rule, const char *database,
		      const char *user)
{
	struct pool_registry *reg = rt->pools;
	struct pool *p;

	pthread_mutex_lock(&reg->lock);
	for (p = reg->head; p; p = p->next)
		if (p->rule == rule && strcmp(p->database, database) == 0 && strcmp(p->user, user) == 0)
			goto out;
	p = calloc(1, sizeof *p);
	if (!p)
		goto out;
	snprintf(p->database, sizeof p->database, "%s", database);
	snprintf(p->user, sizeof p->user, "%s", user);
	p->rule = rule;
	p->rt = rt;
	p->index = reg->count++;
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

static void enqueue(struct pool *p, struct pool_waiter *w)
{
	w->next = NULL;
	w->queued = true;
	if (p->wait_tail)
		p->wait_tail->next = w;
	else
		p->wait_head = w;
	p->wait_tail = w;
}

static struct pool_waiter *dequeue(struct pool *p)
{
	struct pool_waiter *w = p->wait_head;
	if (!w)
		return NULL;
	p->wait_head = w->next;
	if (!p->wait_head)
		p->wait_tail = NULL;
	w->next = NULL;
	w->queued = false;
	return w;
}

enum pool_claim_result pool_claim(struct pool *p, struct pool_waiter *w, struct server **out)
{
	for (;;) {
		struct server *s = NULL;

		pthread_mutex_lock(&p->lock);
		/* Waiters already queued go first: strict FIFO. */
		if (!p->wait_head && p->idle) {
			s = p->idle;
			p->idle = s->next_idle;
			s->next_idle = NULL;
		} else if (!p->wait_head && p->nslots < p->rule->size) {
			p->nslots++;
			pthread_mutex_unlock(&p->lock);
			return POOL_CLAIM_CONNECT;
		} else {
			enqueue(p, w);
			pthread_mutex_unlock(&p->lock);
			return POOL_CLAIM_QUEUED;
		}
		pthread_mutex_unlock(&p->lock);

		/* Outside the lock: one syscall tells a dead idle socket from a live one. */
		if (net_idle_alive(s->fd)) {
			*out = s;
			return POOL_CLAIM_SERVER;
		}
		/* Its slot becomes ours to reconnect with, rather than going to a waiter behind us. */
		server_close_keep_slot(s, "closed by the server while idle");
		return POOL_CLAIM_CONNECT;
	}
}

void pool_put_idle(struct pool *p, struct server *s)
{
	struct pool_waiter *w;

	pthread_mutex_lock(&p->lock);
	w = dequeue(p);
	if (!w) {
		s->next_idle = p->idle;
		p->idle = s;
	}
	pthread_mutex_unlock(&p->lock);
	if (w) {
		struct worker_msg *m = calloc(1, sizeof *m);
		if (!m) {
			/* Out of memory: the waiter will time out; do not lose the slot. */
			server_close(s, "out of memory handing over");
			return;
		}
		m->kind = WORKER_MSG_SERVER;
		m->waiter = w;
		m->server = s;
		worker_post(w->worker, m);
	}
}

void pool_drop_slot(struct pool *p)
{
	struct pool_waiter *w;

	pthread_mutex_lock(&p->lock);
	w = dequeue(p);
	if (!w)
		p->nslots--;
	pthread_mutex_unlock(&p->lock);
	if (w) {
		struct worker_msg *m = calloc(1, sizeof *m);
		if (!m) {
			pthread_mutex_lock(&p->lock);
			p->nslots--;
			pthread_mutex_unlock(&p->lock);
			return;
		}
		m->kind = WORKER_MSG_GRANT;
		m->waiter = w;
		worker_post(w->worker, m);
	}
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
	return was_queued;
}

void pool_expire_idle(struct runtime *rt, int worker_index, int nworkers, double now)
{
	struct pool_registry *reg = rt->pools;
	uint64_t timeout_ms = rt->cfg->server_idle_timeout_ms;
	struct pool *head;

	if (timeout_ms == 0)
		return;
	pthread_mutex_lock(&reg->lock);
	head = reg->head;
	pthread_mutex_unlock(&reg->lock);

	/* The list only grows at the head, so walking from a snapshot of it is safe. */
	for (struct pool *p = head; p; p = p->next) {
		if (p->index % nworkers != worker_index)
			continue;
		struct server *expired = NULL;
		pthread_mutex_lock(&p->lock);
		struct server **pp = &p->idle;
		while (*pp) {
			struct server *s = *pp;
			if (now - s->idle_since >= (double)timeout_ms / 1000.0) {
				*pp = s->next_idle;
				s->next_idle = expired;
				expired = s;
			} else {
				pp = &s->next_idle;
			}
		}
		pthread_mutex_unlock(&p->lock);
		while (expired) {
			struct server *s = expired;
			expired = s->next_idle;
			server_close(s, "idle timeout");
		}
	}
}
