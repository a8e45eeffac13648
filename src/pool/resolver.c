/* The static resolver (see resolver.h). */
#include "pool/resolver.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "pool/probes.h"
#include "util/log.h"

static int static_resolve(struct resolver *r, struct resolver_backend *out, int max)
{
	const struct config_service *svc = r->service;
	int n = 0, last = -ENOENT;

	for (int i = 0; i < svc->nhosts && n < max; i++) {
		const struct config_host *h = &svc->hosts[i];
		int rc = net_resolve(h->host, h->port, false, &out[n].addr);
		if (rc < 0) {
			/* One bad name must not hide the others. */
			log_warn(NULL, NULL, "service %s: cannot resolve %s:%d", svc->name, h->host, h->port);
			last = rc;
			continue;
		}
		snprintf(out[n].name, sizeof out[n].name, "%s:%d", h->host, h->port);
		n++;
	}
	TUSK_PROBE3(resolver__update, svc->name, n, n > 0 ? 0 : last);
	return n > 0 ? n : last;
}

static void static_destroy(struct resolver *r)
{
	free(r);
}

static const struct resolver_ops static_ops = { .resolve = static_resolve, .destroy = static_destroy };

struct resolver *resolver_static_new(const struct config_service *service)
{
	struct resolver *r = calloc(1, sizeof *r);
	if (!r)
		return NULL;
	r->ops = &static_ops;
	r->service = service;
	return r;
}
