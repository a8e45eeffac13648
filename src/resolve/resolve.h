/* Service resolution: turns a service's hosts, dns name or SRV name into the list of backends
 * the pool core takes (tp_pool_set_backends). DNS goes through c-ares on the resolver's own
 * thread and libev loop, so no worker ever blocks on it. It re-resolves on the answer's TTL
 * (bounded by dns_min_ttl/dns_max_ttl), on resolve_refresh and, with backoff, after a failure;
 * a failed, empty or timed-out answer keeps the last good set, and a backend leaves the set
 * only after two good answers in a row without it (docs/backends.md, "Resolution"). */
#ifndef TUSK_RESOLVE_RESOLVE_H
#define TUSK_RESOLVE_RESOLVE_H

#include <stdint.h>

#include "config/config.h"
#include "tuskpool.h"

#define RESOLVE_MAX_BACKENDS 4096 /* per service; more addresses in an answer are dropped (logged) */

struct resolve;

/* The new set, on the resolver's thread (no lock of the resolver held; the callee may call
 * resolve_snapshot or resolve_refresh, never resolve_stop). Sorted by SRV priority (lowest
 * first; 0 for hosts and dns), then weight (highest first), then address. n >= 1: an empty
 * answer is never passed on. addrs is what tp_pool_set_backends takes; weight[i],
 * priority[i] and source[i] go with addrs[i]: source is resolve_source(the name whose lookup
 * gave the address: a static host, the dns name or an SRV target). The arrays live until the
 * callback returns. */
typedef void resolve_update_fn(void *arg, const struct tp_backend_addr *addrs, const uint32_t *weight,
			       const uint16_t *priority, const uint64_t *source, int n);

/* The source of the addresses of name (case-insensitive, as DNS names are). */
uint64_t resolve_source(const char *name);

/* Start resolving svc (its discovery keys are copied: svc may be freed afterwards) on a new
 * thread; the first round starts at once. NULL with errno set (ENOMEM, or EINVAL for a bad
 * nameserver list, EIO when c-ares or the thread could not start). */
struct resolve *resolve_start(const struct config_service *svc, resolve_update_fn *fn, void *arg);

/* Resolve again now (any thread): a reload, or a caller that saw a backend vanish. A round
 * in progress is followed by another one. */
void resolve_refresh(struct resolve *r);

/* Stop the thread, cancel what is in flight, free r (any thread but the resolver's own).
 * No callback runs after it returns. NULL is a no-op. */
void resolve_stop(struct resolve *r);

/* The resolver's state, for a console view (any thread). */
struct resolve_state {
	const char *kind;         /* "hosts", "dns" or "srv" */
	double last_answer;       /* wall-clock seconds of the last good answer; 0: none yet */
	double last_attempt;      /* wall-clock seconds the last round ended; 0: none yet */
	double next_at;           /* wall-clock seconds of the next round (approximate) */
	uint32_t ttl_ms;          /* period taken from the last good answer: its TTL, bounded */
	uint64_t rounds;          /* rounds finished */
	uint64_t failures;        /* rounds that failed, timed out or came back empty */
	uint64_t partial;         /* good rounds where some name failed (its backends were kept) */
	uint64_t updates;         /* times the set changed and the callback ran */
	int consecutive_failures; /* 0 after a good answer */
	int nbackends;            /* size of the current set */
	char error[256];          /* the last round's problem; "" when it had none */
};

/* Fill *st and up to cap backends of the current set (as passed to the last callback; the
 * arrays may be NULL with cap 0). Returns how many were copied. */
int resolve_snapshot(struct resolve *r, struct resolve_state *st, struct tp_backend_addr *addrs,
		     uint32_t *weight, int cap);

#endif
