/* Resolvers: where a service's backends are. An interface, so that DNS (A/AAAA/SRV) can
 * join the static list later without the pool noticing; today only the static list of the
 * service's `hosts` exists. Resolution may block (getaddrinfo): call it at start or reload,
 * never on a worker loop. */
#ifndef TUSK_POOL_RESOLVER_H
#define TUSK_POOL_RESOLVER_H

#include "config/config.h"
#include "net/net.h"

#define RESOLVER_MAX_BACKENDS 64

struct resolver_backend {
	struct net_addr addr;
	char name[CONFIG_HOST_MAX + 8]; /* "host:port" as configured, for logs */
};

struct resolver;

struct resolver_ops {
	/* Fill out[0, max) with the backends found now. Count (>= 1) or a negative errno. */
	int (*resolve)(struct resolver *r, struct resolver_backend *out, int max);
	void (*destroy)(struct resolver *r);
};

struct resolver {
	const struct resolver_ops *ops;      /* read-only */
	const struct config_service *service; /* read-only */
};

/* The static resolver: the service's hosts, each resolved once per call. NULL on OOM. */
struct resolver *resolver_static_new(const struct config_service *service);

__attribute__((warn_unused_result))
static inline int resolver_resolve(struct resolver *r, struct resolver_backend *out, int max)
{
	return r->ops->resolve(r, out, max);
}

static inline void resolver_free(struct resolver *r)
{
	if (r)
		r->ops->destroy(r);
}

#endif
