/* The runtime's own functions: lookups in the process state (struct runtime, runtime.h)
 * that any thread may make. Nothing here calls up: the lifecycle that builds and changes the
 * state is daemon/daemon.c. */
#include "runtime/runtime.h"

#include <stdio.h>
#include <string.h>

/* The generation svc belongs to, and its index there. Generations are never freed before
 * exit, so walking the list needs no lock. */
static const struct runtime_gen *gen_of_service(const struct runtime *rt, const struct config_service *svc, int *i)
{
	for (const struct runtime_gen *g = rt->gen; g; g = g->older)
		if (svc >= g->cfg->services && svc < g->cfg->services + g->cfg->nservices) {
			*i = (int)(svc - g->cfg->services);
			return g;
		}
	return NULL; /* not reached: every rule's service belongs to its generation */
}

struct tls_ctx *runtime_service_tls(const struct runtime *rt, const struct config_service *svc)
{
	int i;
	const struct runtime_gen *g = gen_of_service(rt, svc, &i);
	return g ? g->service_tls[i] : NULL;
}

void runtime_listen_key(const struct config_listen *l, char *out, size_t cap)
{
	snprintf(out, cap, "%s:%d", l->host, l->port);
}

const struct config_listen *runtime_find_listen(const struct runtime *rt, const char *key, struct tls_ctx **tls)
{
	/* One generation: its config and its contexts belong together. */
	const struct runtime_gen *g = atomic_load_explicit(&rt->gen, memory_order_acquire);
	char k[300];

	*tls = NULL;
	for (int i = 0; key && i < g->cfg->nlisten; i++) {
		runtime_listen_key(&g->cfg->listen[i], k, sizeof k);
		if (strcmp(k, key) == 0) {
			*tls = g->listen_tls[i];
			return &g->cfg->listen[i];
		}
	}
	return NULL;
}

