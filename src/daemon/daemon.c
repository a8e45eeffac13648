/* The daemon's lifecycle: start, reload, drain and stop (see daemon.h). Everything here runs on the main
 * thread; workers are reached through their inboxes and shared state through the _Atomic
 * pointers of struct runtime. */
#include "daemon/daemon.h"

#include <errno.h>
#include <ev.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth/authcache.h"
#include "flight/cache.h"
#include "flight/l2.h"
#include "flight/serve.h"
#include "notify/notify.h"
#include "auth/hba.h"
#include "auth/ident.h"
#include "auth/ldapauth.h"
#include "auth/pamauth.h"
#include "auth/userlist.h"
#include "console/console.h"
#include "frontend/cancel.h"
#include "frontend/client.h"
#include "frontend/extauth.h"
#include "frontend/relay_hooks.h"
#include "kv/front.h"
#include "kv/resp_front.h"
#include "net/tls.h"
#include "net/handshake.h"
#include "net/tunnel.h"
#include "pool/pool.h"
#include "pool/server.h"
#include "pool/services.h"
#include "runtime/runtime.h"
#include "split/route.h"
#include "stats/stats.h"
#include "util/log.h"
#include "worker/worker.h"

static void unix_path(const struct tusk_config *cfg, int port, char *out, size_t cap)
{
	snprintf(out, cap, "%s/.s.PGSQL.%d", cfg->unix_socket_dir, port);
}

static bool has_key(const struct tusk_config *cfg, const char *key)
{
	char k[300];
	for (int i = 0; i < cfg->nlisten; i++) {
		runtime_listen_key(&cfg->listen[i], k, sizeof k);
		if (strcmp(k, key) == 0)
			return true;
	}
	return false;
}

/* Record a listening socket for worker wi: fd is the worker's (handed over by
 * post_listeners), the runtime keeps a dup. On failure fd is closed. */
static int give_listener(struct runtime *rt, const char *key, int fd, int wi)
{
	if (rt->nlisteners == rt->caplisteners) {
		int cap = rt->caplisteners ? rt->caplisteners * 2 : 16;
		struct runtime_listener *l = realloc(rt->listeners, (size_t)cap * sizeof *l);
		if (!l) {
			close(fd);
			return -ENOMEM;
		}
		rt->listeners = l;
		rt->caplisteners = cap;
	}
	int keep = dup(fd);
	if (keep < 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	struct runtime_listener *l = &rt->listeners[rt->nlisteners++];
	snprintf(l->key, sizeof l->key, "%s", key);
	l->fd = keep;
	l->pending = fd;
	l->worker = wi;
	l->file_dev = 0;
	l->file_ino = 0;
	return 0;
}

/* Workers start accepting only once everything is open: a start or reload that fails
 * half-way has accepted nobody it would then drop. */
static void post_listeners(struct runtime *rt)
{
	for (int i = 0; i < rt->nlisteners; i++) {
		struct runtime_listener *l = &rt->listeners[i];
		if (l->pending < 0)
			continue;
		if (worker_post_listen(rt->workers[l->worker], l->pending, l->key) < 0) {
			log_error(NULL, NULL, "worker %d: out of memory adding listener %s", l->worker, l->key);
			close(l->pending);
		}
		l->pending = -1;
	}
}

/* Forget the listeners from index `from` on (not posted yet), closing both fds. */
static void drop_listeners(struct runtime *rt, int from)
{
	for (int i = from; i < rt->nlisteners; i++) {
		if (rt->listeners[i].pending >= 0)
			close(rt->listeners[i].pending);
		close(rt->listeners[i].fd);
	}
	rt->nlisteners = from;
}

/* Listeners for one listen entry: the inherited sockets of the same key first (each must
 * be accepted on, or the connections queued in it would be lost), then fresh SO_REUSEPORT
 * sockets until every worker has one. Fresh ones are opened before any is handed out, so
 * a failure leaves nothing half done for this entry. */
static int open_entry(struct runtime *rt, const struct tusk_config *cfg, const struct config_listen *entry,
		      const struct net_addr *addr, struct runtime_inherited *inh, int ninh)
{
	char key[300];
	int w = 0, rc;

	runtime_listen_key(entry, key, sizeof key);
	for (int i = 0; i < ninh; i++) {
		if (inh[i].fd < 0 || strcmp(inh[i].key, key) != 0)
			continue;
		rc = give_listener(rt, key, inh[i].fd, w % rt->nworkers);
		inh[i].fd = -1;
		if (rc < 0)
			return rc;
		w++;
	}
	if (w < rt->nworkers) {
		int fresh[256];
		int n = 0;
		for (; w + n < rt->nworkers; n++) {
			fresh[n] = net_listen(addr, cfg->listen_backlog);
			if (fresh[n] < 0) {
				rc = fresh[n];
				log_error(NULL, NULL, "%s: listen %s: %s", cfg->path, key, strerror(-rc));
				while (n-- > 0)
					close(fresh[n]);
				return rc;
			}
		}
		for (int i = 0; i < n; i++) {
			rc = give_listener(rt, key, fresh[i], w + i);
			if (rc < 0) {
				for (int j = i + 1; j < n; j++)
					close(fresh[j]);
				return rc;
			}
		}
	}
	log_info(NULL, NULL, "listening on %s with %d workers", key, rt->nworkers);
	return 0;
}

#define ANOTHER_LISTENS                                                                                     \
	"another process listens there (a tusk already running? replace it with --takeover, or start beside " \
	"it with --beside)"

/* admin.http, resolved once into rt->http_addr (metrics_start serves it after the
 * listeners, with SO_REUSEPORT too) and probed unless this is a takeover, whose old process
 * serves it until it drains, or a start --beside. */
static int probe_http(struct runtime *rt, const struct tusk_config *cfg, int ninh)
{
	char host[CONFIG_HOST_MAX];
	int port;
	if (!cfg->admin.http)
		return 0;
	if (config_split_host_port(cfg->admin.http, host, sizeof host, &port) < 0)
		return -EINVAL; /* config.c checked it already */
	int rc = net_resolve(host, port, true, &rt->http_addr);
	if (rc < 0) {
		log_error(NULL, NULL, "admin.http %s: cannot resolve: %s", cfg->admin.http, strerror(-rc));
		return rc;
	}
	if (cfg->listen_beside || ninh > 0)
		return 0;
	rc = net_listen_probe(&rt->http_addr);
	if (rc < 0)
		log_error(NULL, NULL, "%s: admin.http %s: %s", cfg->path, cfg->admin.http,
			  rc == -EADDRINUSE ? ANOTHER_LISTENS : strerror(-rc));
	return rc;
}

/* The key of one of our own listeners bound to addr (another entry's name for the same
 * address: "localhost:6432" beside "127.0.0.1:6432"), or NULL. */
static const char *own_listener(const struct runtime *rt, const struct net_addr *addr)
{
	for (int j = 0; j < rt->nlisteners; j++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof ss;
		if (getsockname(rt->listeners[j].fd, (struct sockaddr *)&ss, &len) == 0 && len == addr->len &&
		    memcmp(&ss, &addr->sa, len) == 0)
			return rt->listeners[j].key;
	}
	return NULL;
}

/* Whether an entry before i resolved to addrs[i] (another name for the same address: both
 * would be bound, our SO_REUSEPORT sockets sharing it, and each connection would get one of
 * the two entries' settings, TLS among them, at random); its key in key. */
static bool twin_entry(const struct tusk_config *cfg, const struct net_addr *addrs, int i, char *key, size_t cap)
{
	for (int j = 0; j < i; j++) {
		if (addrs[j].len == addrs[i].len && memcmp(&addrs[j].sa, &addrs[i].sa, addrs[i].len) == 0) {
			runtime_listen_key(&cfg->listen[j], key, cap);
			return true;
		}
	}
	return false;
}

/* Before any listener of ours is open, each listen entry that needs sockets of its own
 * (not all of a takeover's inherited ones; at a reload, only the new entries: not in cur)
 * resolved once, into addrs[i], and probed: no other process may listen on an address no
 * inherited socket serves (unless started with --beside: the restart without
 * takeover_socket, docs/operations.md), nor on admin.http. Our SO_REUSEPORT sockets would
 * share it with another process of the same user without a word (a second tusk started by
 * mistake, with no takeover_socket to refuse it; a reload adding a port another process
 * serves), and clients (or /metrics and /health requests) would be spread over both
 * daemons. PgBouncer refuses to start so (so_reuseport off by default). */
static int probe_entries(const struct runtime *rt, const struct tusk_config *cfg, const struct tusk_config *cur,
			 const struct runtime_inherited *inh, int ninh, struct net_addr *addrs)
{
	int nworkers = rt->nworkers;
	for (int i = 0; i < cfg->nlisten; i++) {
		char key[300];
		int inherited = 0;
		runtime_listen_key(&cfg->listen[i], key, sizeof key);
		if (cur && has_key(cur, key))
			continue;
		for (int j = 0; j < ninh; j++)
			inherited += inh[j].fd >= 0 && strcmp(inh[j].key, key) == 0;
		if (inherited >= nworkers)
			continue; /* open_entry opens none */
		int rc = net_resolve(cfg->listen[i].host, cfg->listen[i].port, true, &addrs[i]);
		if (rc < 0) {
			log_error(NULL, NULL, "%s: listen %s: cannot resolve", cfg->path, key);
			return rc;
		}
		char twin[300];
		if (twin_entry(cfg, addrs, i, twin, sizeof twin)) {
			log_error(NULL, NULL, "%s: listen %s: the same address as listen %s", cfg->path, key, twin);
			return -EADDRINUSE;
		}
		if (inherited > 0 || cfg->listen_beside)
			continue; /* the old process listens there: ours go beside its */
		rc = net_listen_probe(&addrs[i]);
		const char *own = rc == -EADDRINUSE ? own_listener(rt, &addrs[i]) : NULL;
		if (own)
			log_error(NULL, NULL, "%s: listen %s: the same address as listen %s", cfg->path, key, own);
		else if (rc < 0)
			log_error(NULL, NULL, "%s: listen %s: %s", cfg->path, key,
				  rc == -EADDRINUSE ? ANOTHER_LISTENS : strerror(-rc));
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* The listen entries' listeners (at a reload, cur non-NULL: only the entries not in cur),
 * every address probed before any opens; at start also admin.http's. */
static int open_entries(struct runtime *rt, const struct tusk_config *cfg, const struct tusk_config *cur,
			struct runtime_inherited *inh, int ninh)
{
	struct net_addr *addrs = calloc((size_t)cfg->nlisten + 1, sizeof *addrs);
	int rc = addrs ? probe_entries(rt, cfg, cur, inh, ninh, addrs) : -ENOMEM;
	if (rc == 0 && !cur)
		rc = probe_http(rt, cfg, ninh);
	for (int i = 0; rc == 0 && i < cfg->nlisten; i++) {
		char key[300];
		runtime_listen_key(&cfg->listen[i], key, sizeof key);
		if (!cur || !has_key(cur, key))
			rc = open_entry(rt, cfg, &cfg->listen[i], &addrs[i], inh, ninh);
	}
	free(addrs);
	return rc;
}

/* Unix sockets (no SO_REUSEPORT for them): worker 0 accepts on them. Inherited ones take
 * this configuration's unix_socket_mode and unix_socket_group too. */
static int open_unix(struct runtime *rt, const struct tusk_config *cfg, struct runtime_inherited *inh, int ninh)
{
	unsigned mode = config_unix_socket_mode(cfg), gid;
	if (cfg->unix_socket_dir && config_unix_socket_group(cfg, &gid) < 0) {
		log_error(NULL, NULL, "%s: unix_socket_group %s: no such group", cfg->path, cfg->unix_socket_group);
		return -ENOENT;
	}
	for (int i = 0; cfg->unix_socket_dir && i < cfg->nlisten; i++) {
		char path[128], key[300];
		int fd = -1;
		if (cfg->listen[i].protocol != CONFIG_LISTEN_POSTGRES)
			continue; /* .s.PGSQL.<port> speaks PostgreSQL's protocol */
		unix_path(cfg, cfg->listen[i].port, path, sizeof path);
		snprintf(key, sizeof key, "unix:%s", path);
		for (int j = 0; j < rt->nlisteners; j++)
			if (strcmp(rt->listeners[j].key, key) == 0)
				goto next; /* two listen entries on one port */
		for (int j = 0; j < ninh && fd < 0; j++) {
			if (inh[j].fd >= 0 && strcmp(inh[j].key, key) == 0) {
				fd = inh[j].fd;
				inh[j].fd = -1;
			}
		}
		if (fd < 0 && !cfg->listen_beside && net_unix_probe(path) == -EADDRINUSE) {
			/* net_listen_unix would unlink a live socket and take its clients */
			log_error(NULL, NULL, "listen on Unix socket %s: " ANOTHER_LISTENS, path);
			return -EADDRINUSE;
		}
		int rc = 0;
		if (fd < 0)
			fd = net_listen_unix(path, cfg->listen_backlog, mode, gid);
		else
			rc = net_unix_own(path, mode, gid);
		if (fd < 0 || rc < 0) {
			rc = fd < 0 ? fd : rc;
			log_error(NULL, NULL, "listen on Unix socket %s: %s", path, strerror(-rc));
			if (fd >= 0)
				close(fd);
			return rc;
		}
		rc = give_listener(rt, key, fd, 0);
		if (rc < 0)
			return rc;
		struct stat st;
		if (stat(path, &st) == 0) {
			rt->listeners[rt->nlisteners - 1].file_dev = st.st_dev;
			rt->listeners[rt->nlisteners - 1].file_ino = st.st_ino;
		}
		log_info(NULL, NULL, "listening on Unix socket %s", path);
next:;
	}
	return 0;
}

/* What cfg sets on every listener, inherited and opened before included, at start and at each
 * reload: listen_backlog, and TCP_DEFER_ACCEPT on the TCP ones. Best effort: a failure is logged. */
static void tune_listeners(const struct runtime *rt, const struct tusk_config *cfg)
{
	int defer_s = (int)((cfg->tcp_defer_accept_ms + 999) / 1000);
	for (int i = 0; i < rt->nlisteners; i++) {
		const struct runtime_listener *l = &rt->listeners[i];
		int rc = net_set_backlog(l->fd, cfg->listen_backlog);
		if (rc < 0)
			log_warn(NULL, NULL, "listener %s: listen_backlog: %s", l->key, strerror(-rc));
		rc = strncmp(l->key, "unix:", 5) == 0 ? 0 : net_defer_accept(l->fd, defer_s);
		if (rc < 0)
			log_warn(NULL, NULL, "listener %s: tcp_defer_accept: %s", l->key, strerror(-rc));
	}
}

static void publish(struct runtime *rt, struct runtime_gen *g)
{
	g->older = rt->gen;
	/* Release stores: see struct runtime. The generation list first, so that any rule a
	 * worker finds through cfg already has its service address reachable. */
	atomic_store_explicit(&rt->gen, g, memory_order_release);
	atomic_store_explicit(&rt->cfg, g->cfg, memory_order_release);
	atomic_store_explicit(&rt->users, g->users, memory_order_release);
	atomic_store_explicit(&rt->hba, g->hba, memory_order_release);
}

static void free_gen(struct runtime_gen *g)
{
	if (!g)
		return;
	userlist_free(g->users);
	hba_free(g->hba);
	ident_free(g->ident); /* after the hba, which points into it */
	daemon_free_tls(g->cfg, g->listen_tls, g->service_tls);
	config_free(g->cfg);
	free(g);
}

int daemon_load_redis_tls(const struct tusk_config *cfg, FILE *errout, struct tls_ctx **out)
{
	const struct config_redis *r = &cfg->redis;
	char err[TLS_ERR_MAX];

	*out = NULL;
	if (r->tls == CONFIG_STLS_DISABLE)
		return 0;
	struct tls_client_opts o = {
		.ca_file = r->tls_ca_file, .cert_file = r->tls_cert_file, .key_file = r->tls_key_file,
		.verify = r->tls == CONFIG_STLS_VERIFY_FULL ? 2 : r->tls == CONFIG_STLS_VERIFY_CA ? 1 : 0,
		.hostname = r->host,
	};
	if (tls_ctx_client_new(&o, err, sizeof err, out) < 0) {
		fprintf(errout, "%s: redis: %s\n", cfg->path, err);
		return 1;
	}
	return 0;
}

/* Redis is reached through the tunnel for the process's life (redis: is not reloadable). */
static int start_redis_tunnel(struct runtime *rt, const struct tusk_config *cfg)
{
	struct tls_ctx *ctx;

	if (daemon_load_redis_tls(cfg, stderr, &ctx) > 0)
		return -EINVAL;
	struct tunnel_opts o = {
		.name = "cache L2 (Redis)", .host = cfg->redis.host, .port = cfg->redis.port ? cfg->redis.port : 6379,
		.ctx = ctx, .timeout = (double)cfg->redis.timeout_ms / 1000.0,
		/* one connection per worker, and a reconnect may overlap the old one's close */
		.max_conns = 2 * cfg->workers + 16,
	};
	return tunnel_start(&o, &rt->redis_tunnel);
}

/* ---- worker tenants: the one place that names them ----
 * The modules that keep state and connections on every worker register their hooks and get
 * their per-worker slots (worker.h, worker_hooks). The order is the order their init, tick,
 * drain and stop run in (free runs in the reverse): clients close before the servers they
 * hold, and the cache's Redis link last. Registering again (a second runtime in one process,
 * the test seams) does nothing. */
static void register_worker_tenants(void)
{
	worker_register(&frontend_worker_hooks);
	worker_register(&notify_worker_hooks); /* closes its listener servers before the servers' stop */
	worker_register(&server_worker_hooks);
	worker_register(&flight_l2_worker_hooks);
	worker_register(&console_worker_hooks);
	worker_register(&kv_resp_worker_hooks);
}

/* threads false: the test seam of daemon_start_inline (no worker threads, no listeners). */
static int start(struct runtime *rt, struct tusk_config *cfg, struct runtime_inherited *inherited, int ninherited,
		 bool threads)
{
	int rc;
	struct runtime_gen *g = calloc(1, sizeof *g);

	memset(rt, 0, sizeof *rt);
	atomic_init(&rt->nclients, 0);
	if (!g) {
		config_free(cfg);
		return -ENOMEM;
	}
	g->cfg = cfg;
	/* Ticket keys for every generation's listeners: a reload keeps clients' tickets valid. */
	rt->tls_tickets = tls_tickets_new(0);
	if (!rt->tls_tickets) {
		fprintf(stderr, "%s: out of memory making the TLS session ticket keys\n", cfg->path);
		free_gen(g);
		return -ENOMEM;
	}
	if (daemon_load_auth(cfg, stderr, &g->users, &g->ident, &g->hba) > 0 ||
	    daemon_load_tls(cfg, stderr, rt->tls_tickets, &g->listen_tls, &g->service_tls) > 0) {
		free_gen(g);
		tls_tickets_free(rt->tls_tickets);
		rt->tls_tickets = NULL;
		return -EINVAL;
	}
	/* Resolvers before the generation is published: a worker that finds a rule finds its
	 * service's entry (its set may still be on its way: claims wait for it). */
	rt->services = services_new();
	rc = rt->services ? services_apply(rt->services, cfg) : -ENOMEM;
	if (rc < 0) {
		services_free(rt->services);
		rt->services = NULL;
		free_gen(g);
		tls_tickets_free(rt->tls_tickets);
		rt->tls_tickets = NULL;
		return rc;
	}
	publish(rt, g);
	stats_set_shards(cfg->workers); /* before the first pool's block */
	rt->pools = pool_registry_new();
	rt->cancels = cancel_registry_new();
	rt->kills = console_kills_new();
	rt->sets = console_sets_new();
	rt->notify = notify_registry_new();
	/* The session kinds of the virtual databases, before any worker runs (idempotent). */
	console_register();
	kv_front_register();
	kv_resp_register();
	/* The features that watch the relay, in the order their hooks run (relay_hooks.h): the
	 * split first (a 25006's role re-check before the cache's look at the same error). */
	(void)relay_hooks_register(&split_relay_hooks);
	(void)relay_hooks_register(&notify_relay_hooks); /* LISTEN answered before the cache looks */
	(void)relay_hooks_register(&flight_relay_hooks);
	rt->authcache = authcache_new(RUNTIME_AUTHCACHE_MAX);
	rt->flight = flight_cache_new(cfg->cache_memory, cfg->cache_invalidation == CONFIG_CACHE_INVAL_LOGICAL
								 ? (double)cfg->cache_logical_poll_ms / 1000.0
								 : 0);
	rt->stats = stats_new();
	rt->start_time = ev_time();
	rt->nworkers = cfg->workers;
	const char *bt = getenv("TUSK_TEST_BALANCE");
	rt->balance_test = bt && strcmp(bt, "pingpong") == 0;
	rt->workers = calloc((size_t)cfg->workers, sizeof *rt->workers);
	if (!rt->pools || !rt->cancels || !rt->kills || !rt->sets || !rt->notify || !rt->authcache || !rt->flight || !rt->stats || !rt->workers) {
		rc = -ENOMEM;
		goto err;
	}
	if (threads && cfg->redis.tls != CONFIG_STLS_DISABLE) {
		rc = start_redis_tunnel(rt, cfg);
		if (rc < 0)
			goto err;
	}
	/* Before the workers, which hand their clients' handshakes to it. */
	if (threads && cfg->tls_handshake_threads > 0) {
		rc = tls_hs_pool_start(cfg->tls_handshake_threads, &rt->tls_hs);
		if (rc < 0)
			goto err;
	}
	/* Before the workers, which hand their clients' LDAP checks to it (no thread until one). */
	rc = ldapauth_pool_new(LDAPAUTH_THREADS, LDAPAUTH_QUEUE_MAX, &rt->ldap);
	if (rc < 0)
		goto err;
	rc = pamauth_pool_new(PAMAUTH_THREADS, PAMAUTH_QUEUE_MAX, &rt->pam);
	if (rc < 0)
		goto err;
	rc = extauth_names_new(&rt->names);
	if (rc < 0)
		goto err;
	register_worker_tenants();
	for (int w = 0; w < cfg->workers; w++) {
		rc = threads ? worker_start(rt, w, &rt->workers[w]) : worker_new(rt, w, &rt->workers[w]);
		if (rc < 0) {
			log_error(NULL, NULL, "cannot start worker %d: %s", w, strerror(-rc));
			goto err;
		}
	}
	if (!threads)
		return 0;
	/* Each worker connects to Redis now, on its own thread, so the first lookups find it
	 * up (a worker without the message connects at its first lookup instead). */
	for (int w = 0; w < cfg->workers && flight_l2_configured(cfg); w++) {
		struct worker_msg *m = calloc(1, sizeof(*m));
		if (!m)
			break;
		m->fn = flight_l2_start;
		worker_post(rt->workers[w], m);
	}
	/* One listening socket per worker and address: SO_REUSEPORT lets the kernel spread
	 * connections over the workers without an acceptor thread. */
	rc = open_entries(rt, cfg, NULL, inherited, ninherited);
	if (rc < 0)
		goto err;
	rc = open_unix(rt, cfg, inherited, ninherited);
	if (rc < 0)
		goto err;
	for (int i = 0; i < ninherited; i++) {
		if (inherited[i].fd >= 0) {
			log_warn(NULL, NULL, "inherited listener %s is not in the configuration: closed", inherited[i].key);
			close(inherited[i].fd);
			inherited[i].fd = -1;
		}
	}
	tune_listeners(rt, cfg);
	post_listeners(rt);
	return 0;

err:
	drop_listeners(rt, 0);
	daemon_stop(rt);
	return rc;
}

int daemon_start(struct runtime *rt, struct tusk_config *cfg, struct runtime_inherited *inherited, int ninherited)
{
	return start(rt, cfg, inherited, ninherited, true);
}

int daemon_start_inline(struct runtime *rt, struct tusk_config *cfg)
{
	return start(rt, cfg, NULL, 0, false);
}

int daemon_load_auth(const struct tusk_config *cfg, FILE *errout, struct userlist **users, struct ident **ident,
		     struct hba **hba)
{
	int nerr = 0, ierr = 0;
	*users = NULL;
	*ident = NULL;
	*hba = NULL;
	if (cfg->auth_file)
		nerr += userlist_load(cfg->auth_file, errout, users);
	if (cfg->ident_file)
		ierr = ident_load(cfg->ident_file, errout, ident);
	if (cfg->hba_file && ierr == 0)
		nerr += hba_load(cfg->hba_file, *ident, errout, hba);
	if (cfg->ident_file && !cfg->hba_file)
		log_warn(NULL, NULL, "ident_file %s is set but hba_file is not: its maps are used only by hba_file's map= option",
			 cfg->ident_file);
	return nerr + ierr;
}

/* Each line the loaders wrote (FILE:LINE: KEY: message) as one log line. */
static void log_lines(enum log_level level, const char *prefix, char *text)
{
	char *save = NULL;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		log_at(level, NULL, NULL, "%s%s", prefix, line);
}

int daemon_reload(struct runtime *rt, const char *path)
{
	const struct tusk_config *cur = rt->cfg;
	struct runtime_gen *g = calloc(1, sizeof *g);
	char *errs = NULL;
	size_t errlen = 0;
	FILE *err = open_memstream(&errs, &errlen);
	int rc = -EINVAL, nerr;

	if (!g || !err) {
		rc = -ENOMEM;
		goto out;
	}
	nerr = config_load(path, err, &g->cfg);
	/* The console's SETs go over the file's values (until the next reload). */
	if (nerr == 0 && rt->sets)
		(void)console_sets_apply(rt->sets, g->cfg);
	if (nerr == 0)
		nerr = daemon_load_auth(g->cfg, err, &g->users, &g->ident, &g->hba);
	if (nerr == 0)
		nerr = daemon_load_tls(g->cfg, err, rt->tls_tickets, &g->listen_tls, &g->service_tls);
	fflush(err);
	if (nerr > 0) {
		log_lines(LOG_ERROR, "reload: ", errs);
		log_error(NULL, NULL, "reload of %s failed with %d error%s; the running configuration stays", path, nerr,
			  nerr == 1 ? "" : "s");
		goto out;
	}
	rewind(err);
	errlen = 0;
	if (config_check_reload(cur, g->cfg, err) > 0) {
		fflush(err);
		log_lines(LOG_WARN, "reload: ", errs);
		log_warn(NULL, NULL, "reload: the keys above keep their running values until a restart");
	}
	if (config_keep_fixed(cur, g->cfg) < 0) {
		rc = -ENOMEM;
		goto out;
	}
	g->cfg->listen_beside = cur->listen_beside; /* main's (--beside), not the file's */
	/* New listeners before anything is published: an address that cannot be bound fails
	 * the reload as a whole. */
	if (!rt->draining) {
		int before = rt->nlisteners;
		rc = open_entries(rt, g->cfg, cur, NULL, 0);
		if (rc < 0) {
			drop_listeners(rt, before); /* none was handed to a worker yet */
			log_error(NULL, NULL, "reload of %s failed; the running configuration stays", path);
			goto out;
		}
	}
	/* Kept resolvers are asked again now (a reload means "look again"); new or changed
	 * services get new ones, before any worker can find a rule naming them. */
	rc = services_apply(rt->services, g->cfg);
	if (rc < 0) {
		log_error(NULL, NULL, "reload of %s failed (resolvers: %s); the running configuration stays", path,
			  strerror(-rc));
		goto out;
	}
	publish(rt, g);
	tune_listeners(rt, g->cfg);
	post_listeners(rt);
	pool_registry_reload(rt->pools, g->cfg);
	/* Listeners whose listen entry is gone. */
	for (int j = 0; j < rt->nlisteners;) {
		struct runtime_listener *l = &rt->listeners[j];
		if (strncmp(l->key, "unix:", 5) == 0 || has_key(g->cfg, l->key)) {
			j++;
			continue;
		}
		if (worker_post_unlisten(rt->workers[l->worker], l->key) < 0)
			log_error(NULL, NULL, "reload: out of memory closing listener %s", l->key);
		log_info(NULL, NULL, "reload: no longer listening on %s (worker %d)", l->key, l->worker);
		close(l->fd);
		*l = rt->listeners[--rt->nlisteners];
	}
	log_set_level(g->cfg->log.level);
	log_info(NULL, NULL, "reloaded %s: %d pool rule%s, %d listen address%s", path, g->cfg->npools,
		 g->cfg->npools == 1 ? "" : "s", g->cfg->nlisten, g->cfg->nlisten == 1 ? "" : "es");
	g = NULL;
	rc = 0;
out:
	if (err)
		fclose(err);
	free(errs);
	free_gen(g);
	return rc;
}

_Static_assert(TLS_PROTO_1_0 == 1 && TLS_PROTO_1_1 == 2 && TLS_PROTO_1_2 == 4 && TLS_PROTO_1_3 == 8,
	       "config_tls_protocols's bits are net/tls.h's TLS_PROTO_*");

int daemon_load_tls(const struct tusk_config *cfg, FILE *errout, struct tls_tickets *tickets,
		     struct tls_ctx ***listen_tls, struct tls_ctx ***service_tls)
{
	struct tls_ctx **lt = calloc((size_t)cfg->nlisten + 1, sizeof *lt);
	struct tls_ctx **st = calloc((size_t)cfg->nservices + 1, sizeof *st);
	char err[TLS_ERR_MAX];
	int nerr = 0;

	*listen_tls = *service_tls = NULL;
	if (!lt || !st) {
		free(lt);
		free(st);
		fprintf(errout, "%s: out of memory building TLS contexts\n", cfg->path);
		return 1;
	}
	for (int i = 0; i < cfg->nlisten; i++) {
		const struct config_listen *l = &cfg->listen[i];
		if (l->tls == CONFIG_TLS_DISABLE)
			continue;
		struct tls_server_opts o = {
			.cert_file = l->tls_cert_file, .key_file = l->tls_key_file, .ca_file = l->tls_ca_file,
			.ciphers = l->tls_ciphers, .ciphersuites = l->tls13_ciphers, .groups = l->tls_ecdhcurve,
			.protocols = (unsigned)config_tls_protocols(l->tls_protocols), .mode = (enum tls_mode_server)l->tls,
			.tickets = l->tls_session_tickets ? tickets : NULL,
		};
		if (tls_ctx_server_new(&o, err, sizeof err, &lt[i]) < 0) {
			fprintf(errout, "%s: listen[%d]: %s\n", cfg->path, i, err);
			nerr++;
		}
	}
	for (int i = 0; i < cfg->nservices; i++) {
		const struct config_service *svc = &cfg->services[i];
		if (svc->tls == CONFIG_STLS_DISABLE)
			continue;
		struct tls_client_opts o = {
			.ca_file = svc->tls_ca_file, .cert_file = svc->tls_cert_file, .key_file = svc->tls_key_file,
			.verify = svc->tls == CONFIG_STLS_VERIFY_FULL ? 2 : svc->tls == CONFIG_STLS_VERIFY_CA ? 1 : 0,
			.ciphers = svc->tls_ciphers, .ciphersuites = svc->tls13_ciphers,
			.protocols = (unsigned)config_tls_protocols(svc->tls_protocols),
		};
		if (tls_ctx_client_new(&o, err, sizeof err, &st[i]) < 0) {
			fprintf(errout, "%s: services.%s: %s\n", cfg->path, svc->name, err);
			nerr++;
		}
	}
	if (nerr > 0) {
		daemon_free_tls(cfg, lt, st);
		return nerr;
	}
	*listen_tls = lt;
	*service_tls = st;
	return 0;
}

void daemon_free_tls(const struct tusk_config *cfg, struct tls_ctx **listen_tls, struct tls_ctx **service_tls)
{
	for (int i = 0; listen_tls && i < cfg->nlisten; i++)
		tls_ctx_free(listen_tls[i]);
	for (int i = 0; service_tls && i < cfg->nservices; i++)
		tls_ctx_free(service_tls[i]);
	free(listen_tls);
	free(service_tls);
}

void daemon_pause_accepting(struct runtime *rt, bool pause)
{
	if (rt->paused == pause || rt->draining)
		return;
	rt->paused = pause;
	/* Workers close their own fds; the runtime's dups keep every socket (and the
	 * connections queued in it) alive. Resuming hands each worker a fresh dup. */
	for (int w = 0; w < rt->nworkers; w++)
		if (pause && worker_post_unlisten(rt->workers[w], NULL) < 0)
			log_error(NULL, NULL, "worker %d: out of memory pausing its listeners", w);
	for (int i = 0; !pause && i < rt->nlisteners; i++) {
		const struct runtime_listener *l = &rt->listeners[i];
		int fd = dup(l->fd);
		if (fd < 0 || worker_post_listen(rt->workers[l->worker], fd, l->key) < 0) {
			log_error(NULL, NULL, "cannot resume accepting on %s", l->key);
			if (fd >= 0)
				close(fd);
		}
	}
}

/* Close the listeners. The socket files of our own Unix listeners go with them, while they
 * are still the files we listened on (not every path the configuration names: a start refused
 * because another process listens there must not unlink that process's file, nor one that
 * drains after a successor started --beside the successor's); a process that handed its
 * sockets over leaves the files to its successor. */
static void close_listeners(struct runtime *rt)
{
	for (int i = 0; i < rt->nlisteners; i++) {
		const struct runtime_listener *l = &rt->listeners[i];
		struct stat st;
		close(l->fd);
		if (!rt->handed_over && strncmp(l->key, "unix:", 5) == 0 && l->file_ino && stat(l->key + 5, &st) == 0 &&
		    st.st_dev == l->file_dev && st.st_ino == l->file_ino)
			(void)unlink(l->key + 5);
	}
	rt->nlisteners = 0;
}

void daemon_drain(struct runtime *rt)
{
	if (rt->draining)
		return;
	rt->draining = true;
	for (int w = 0; w < rt->nworkers; w++)
		if (worker_post_drain(rt->workers[w]) < 0)
			worker_stop(rt->workers[w]); /* out of memory: stopping is the fallback */
	close_listeners(rt);
}

void daemon_stop(struct runtime *rt)
{
	/* No resolver answer may reach a pool from here on (workers may still read the sets). */
	services_stop(rt->services);
	for (int w = 0; rt->workers && w < rt->nworkers; w++)
		if (rt->workers[w])
			worker_stop(rt->workers[w]);
	for (int w = 0; rt->workers && w < rt->nworkers; w++)
		if (rt->workers[w])
			worker_join(rt->workers[w]);
	/* Handshakes still running come back to their workers' inboxes as cancelled; freeing
	 * the workers below settles them (their clients, closed by now, are freed). */
	tls_hs_pool_stop(rt->tls_hs);
	rt->tls_hs = NULL;
	/* The same for LDAP checks: queued ones come back cancelled, running ones finish first. */
	ldapauth_pool_stop(rt->ldap);
	rt->ldap = NULL;
	/* PAM checks: queued ones come back cancelled, running ones get PAMAUTH_STOP_WAIT_MS (a
	 * module cannot be interrupted: past it the pool is left to its threads, answers dropped). */
	pamauth_pool_stop(rt->pam);
	rt->pam = NULL;
	/* Host-name lookups (hba_file): the same, each bounded by the resolver's own timeouts. */
	extauth_names_stop(rt->names);
	rt->names = NULL;
	/* Freeing settles the inboxes; a settled message may post to another worker's inbox,
	 * so settle all before freeing any (the pool core posts only for waiters, and every
	 * client is closed by now, so this converges in one pass per worker). */
	for (int w = 0; rt->workers && w < rt->nworkers; w++)
		if (rt->workers[w])
			worker_free(rt->workers[w]);
	services_free(rt->services); /* no worker runs: nothing reads the sets any more */
	pool_registry_free(rt->pools);
	cancel_registry_free(rt->cancels);
	console_kills_free(rt->kills);
	console_sets_free(rt->sets);
	rt->sets = NULL;
	notify_registry_free(rt->notify);
	rt->notify = NULL;
	authcache_free(rt->authcache);
	flight_cache_free(rt->flight);
	tunnel_stop(rt->redis_tunnel); /* after the workers: none of them connects to it any more */
	rt->redis_tunnel = NULL;
	stats_free(rt->stats);
	close_listeners(rt);
	struct runtime_gen *g = rt->gen;
	while (g) {
		struct runtime_gen *older = g->older;
		free_gen(g);
		g = older;
	}
	tls_tickets_free(rt->tls_tickets); /* after every context that names it */
	free(rt->listeners);
	free(rt->workers);
	memset(rt, 0, sizeof *rt);
}
