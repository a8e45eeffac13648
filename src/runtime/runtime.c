/* Runtime start and stop (see runtime.h). */
#include "runtime/runtime.h"

#include <errno.h>
#include <ev.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth/hba.h"
#include "auth/userlist.h"
#include "frontend/cancel.h"
#include "pool/pool.h"
#include "pool/resolver.h"
#include "stats/stats.h"
#include "util/log.h"
#include "worker/worker.h"

#define LISTEN_BACKLOG 1024

int runtime_service_index(const struct runtime *rt, const struct config_service *svc)
{
	return (int)(svc - rt->cfg->services);
}

/* Each service's backends, through its resolver. Until backend management lands, pools
 * connect to the first backend found. */
static int resolve_services(struct runtime *rt)
{
	const struct tusk_config *cfg = rt->cfg;
	struct resolver_backend found[RESOLVER_MAX_BACKENDS];

	rt->service_addrs = calloc((size_t)cfg->nservices, sizeof *rt->service_addrs);
	if (!rt->service_addrs)
		return -ENOMEM;
	for (int i = 0; i < cfg->nservices; i++) {
		struct resolver *r = resolver_static_new(&cfg->services[i]);
		if (!r)
			return -ENOMEM;
		int n = resolver_resolve(r, found, RESOLVER_MAX_BACKENDS);
		resolver_free(r);
		if (n < 0) {
			log_error(NULL, NULL, "service %s: no backend could be resolved", cfg->services[i].name);
			return n;
		}
		rt->service_addrs[i] = found[0].addr;
		if (n > 1)
			log_warn(NULL, NULL, "service %s: %d backends; only %s is used until backend management lands",
				 cfg->services[i].name, n, found[0].name);
	}
	return 0;
}

int runtime_start(struct runtime *rt, const struct tusk_config *cfg)
{
	int rc;
	int nfds = 0;
	int *fds = NULL;

	memset(rt, 0, sizeof *rt);
	rt->cfg = cfg;
	atomic_init(&rt->nclients, 0);
	rt->pools = pool_registry_new();
	rt->cancels = cancel_registry_new();
	rt->stats = stats_new();
	rt->start_time = ev_time();
	rt->nworkers = cfg->workers;
	rt->workers = calloc((size_t)cfg->workers, sizeof *rt->workers);
	rt->listen_addrs = calloc((size_t)cfg->nlisten, sizeof *rt->listen_addrs);
	fds = calloc((size_t)cfg->nlisten * (size_t)cfg->workers, sizeof *fds);
	if (!rt->pools || !rt->cancels || !rt->stats || !rt->workers || !rt->listen_addrs || !fds) {
		rc = -ENOMEM;
		goto err;
	}
	rc = resolve_services(rt);
	if (rc < 0)
		goto err;
	if (runtime_load_auth(cfg, stderr, &rt->users, &rt->hba) > 0) {
		rc = -EINVAL;
		goto err;
	}
	for (int i = 0; i < cfg->nlisten; i++) {
		rc = net_resolve(cfg->listen[i].host, cfg->listen[i].port, true, &rt->listen_addrs[i]);
		if (rc < 0) {
			log_error(NULL, NULL, "listen %s:%d: cannot resolve", cfg->listen[i].host, cfg->listen[i].port);
			goto err;
		}
	}
	/* One listening socket per worker and address: SO_REUSEPORT lets the kernel spread
	 * connections over the workers without an acceptor thread. */
	for (int w = 0; w < cfg->workers; w++) {
		for (int i = 0; i < cfg->nlisten; i++) {
			int fd = net_listen(&rt->listen_addrs[i], LISTEN_BACKLOG);
			if (fd < 0) {
				rc = fd;
				log_error(NULL, NULL, "listen %s:%d: %s", cfg->listen[i].host, cfg->listen[i].port,
					  strerror(-fd));
				goto err;
			}
			fds[nfds++] = fd;
		}
	}
	/* Unix sockets (no SO_REUSEPORT for them): worker 0 accepts on them. */
	for (int i = 0; cfg->unix_socket_dir && i < cfg->nlisten && rt->nunix < (int)(sizeof rt->unix_fd / sizeof rt->unix_fd[0]); i++) {
		char path[128];
		snprintf(path, sizeof path, "%s/.s.PGSQL.%d", cfg->unix_socket_dir, cfg->listen[i].port);
		int fd = net_listen_unix(path, LISTEN_BACKLOG);
		if (fd < 0) {
			rc = fd;
			log_error(NULL, NULL, "listen on Unix socket %s: %s", path, strerror(-fd));
			goto err;
		}
		rt->unix_fd[rt->nunix++] = fd;
		log_info(NULL, NULL, "listening on Unix socket %s", path);
	}
	for (int w = 0; w < cfg->workers; w++) {
		int n = cfg->nlisten;
		int w0[64];
		const int *mine = fds + w * cfg->nlisten;
		if (w == 0 && rt->nunix > 0 && cfg->nlisten + rt->nunix <= 64) {
			memcpy(w0, mine, (size_t)cfg->nlisten * sizeof *w0);
			memcpy(w0 + cfg->nlisten, rt->unix_fd, (size_t)rt->nunix * sizeof *w0);
			n += rt->nunix;
			mine = w0;
		}
		rc = worker_start(rt, w, mine, n, &rt->workers[w]);
		if (rc < 0) {
			log_error(NULL, NULL, "cannot start worker %d: %s", w, strerror(-rc));
			goto err;
		}
		/* From here the worker owns (and closes) its listening sockets. */
		for (int i = 0; i < cfg->nlisten; i++)
			fds[w * cfg->nlisten + i] = -1;
		if (w == 0)
			for (int i = 0; i < rt->nunix; i++)
				rt->unix_fd[i] = -1;
	}
	for (int i = 0; i < cfg->nlisten; i++)
		log_info(NULL, NULL, "listening on %s:%d with %d workers", cfg->listen[i].host, cfg->listen[i].port,
			 cfg->workers);
	free(fds);
	return 0;

err:
	for (int i = 0; fds && i < nfds; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	for (int i = 0; i < rt->nunix; i++)
		if (rt->unix_fd[i] >= 0)
			close(rt->unix_fd[i]);
	free(fds);
	runtime_stop(rt);
	return rc;
}

int runtime_load_auth(const struct tusk_config *cfg, FILE *errout, struct userlist **users, struct hba **hba)
{
	int nerr = 0;
	*users = NULL;
	*hba = NULL;
	if (cfg->auth_file)
		nerr += userlist_load(cfg->auth_file, errout, users);
	if (cfg->hba_file)
		nerr += hba_load(cfg->hba_file, errout, hba);
	return nerr;
}

void runtime_stop(struct runtime *rt)
{
	for (int w = 0; rt->workers && w < rt->nworkers; w++)
		if (rt->workers[w])
			worker_stop(rt->workers[w]);
	for (int w = 0; rt->workers && w < rt->nworkers; w++)
		if (rt->workers[w])
			worker_join(rt->workers[w]);
	/* Freeing settles the inboxes; a settled message may post to another worker's inbox,
	 * so settle all before freeing any (pool_drop_slot only posts to live waiters, and
	 * every client is closed by now, so this converges in one pass per worker). */
	for (int w = 0; rt->workers && w < rt->nworkers; w++)
		if (rt->workers[w])
			worker_free(rt->workers[w]);
	pool_registry_free(rt->pools);
	cancel_registry_free(rt->cancels);
	stats_free(rt->stats);
	userlist_free(rt->users);
	hba_free(rt->hba);
	if (rt->cfg && rt->cfg->unix_socket_dir) {
		for (int i = 0; i < rt->cfg->nlisten; i++) {
			char path[128];
			snprintf(path, sizeof path, "%s/.s.PGSQL.%d", rt->cfg->unix_socket_dir, rt->cfg->listen[i].port);
			(void)unlink(path);
		}
	}
	free(rt->workers);
	free(rt->listen_addrs);
	free(rt->service_addrs);
	memset(rt, 0, sizeof *rt);
}
