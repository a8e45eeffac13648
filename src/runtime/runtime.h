/* The runtime: the one place for process-wide state. It holds the configuration generations,
 * the worker threads, the shared pools and the resolved service addresses (as pointers to
 * what the modules own). Everything else reaches shared state through a struct runtime
 * pointer, never through globals. The lifecycle that builds and changes it (start, reload,
 * drain, stop) is daemon/daemon.h; nothing here calls up. */
#ifndef TUSK_RUNTIME_RUNTIME_H
#define TUSK_RUNTIME_RUNTIME_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "config/config.h"
#include "net/net.h"

struct worker;
struct pool_registry;
struct cancel_registry;
struct userlist;
struct hba;
struct ident;
struct stats;
struct tls_ctx;
struct tls_tickets;
struct tls_hs_pool;
struct ldapauth_pool;
struct pamauth_pool;
struct extauth_names;
struct authcache;
struct flight_cache;
struct services;

#define RUNTIME_AUTHCACHE_MAX 10000 /* auth_query answers kept; beyond, random ones are evicted */

/* One configuration generation and what was derived from it. Generations are kept until
 * exit (a reload is rare and a generation is a few kB): pools, clients and servers may hold
 * pointers into any of them, and keeping them all makes every such pointer valid for the
 * life of the process without a reference count on the hot path. */
struct runtime_gen {
	struct tusk_config *cfg;
	struct userlist *users;         /* auth_file, or NULL */
	struct hba *hba;                /* hba_file, or NULL */
	struct ident *ident;            /* ident_file, or NULL; hba points into it (reached through hba only) */
	struct tls_ctx **listen_tls;    /* per cfg->listen entry; NULL where tls is disable */
	struct tls_ctx **service_tls;   /* per cfg->services entry; NULL where tls is disable */
	struct runtime_gen *older;
};

/* A listening socket: the runtime keeps a dup of every worker's listening fd, so that an
 * online restart can hand them all over and a reload can tell which to close. Main thread
 * only. */
struct runtime_listener {
	char key[300]; /* WORKER_LISTEN_KEY_MAX: "host:port" as configured, or "unix:PATH" */
	int fd;        /* the runtime's dup */
	int pending;   /* the worker's fd until it is posted to the worker, then -1 */
	int worker;
	/* A Unix socket's file as it was when we took the socket (unix_file): removed at the end
	 * only while it is still that file (a tusk started --beside may have replaced it). */
	dev_t file_dev;
	ino_t file_ino;
};

/* A listening socket received from the process being replaced (online restart). */
struct runtime_inherited {
	char key[300];
	int fd;
};

struct kv_router;
struct tunnel;
struct kv_replicator;

struct runtime {
	/* The current generation's config, users and hba. Written by the main thread only
	 * (start, reload) with release stores after the generation is fully built; read by
	 * workers as plain expressions on these _Atomic pointers, which are seq_cst (hence
	 * acquire) loads: a worker that sees the new pointer sees everything it points to.
	 * The three are published one after the other: a login between the stores may see a
	 * new config with the old hba (both valid; the next login sees all new). */
	const struct tusk_config *_Atomic cfg;
	struct userlist *_Atomic users;
	struct hba *_Atomic hba;
	struct runtime_gen *_Atomic gen; /* newest first; see struct runtime_gen */
	int nworkers;
	struct worker **workers;
	/* Test seam, from the environment at start (TUSK_TEST_BALANCE=pingpong): every idle
	 * client moves to the next worker at every transaction boundary (worker_balance_target),
	 * so that tests drive the move itself as often as they like. Read-only. */
	bool balance_test;
	struct pool_registry *pools;     /* shared by all workers; has its own locks */
	struct services *services;       /* each service's resolver and current backends (pool/services.h); its own locks */
	struct cancel_registry *cancels; /* shared by all workers; has its own lock */
	struct console_kills *kills;     /* recent KILLs for moving clients (console.h); its own lock */
	struct console_sets *sets;       /* the console's SETs for the next reload (console.h); its own lock */
	/* main thread only */
	struct runtime_listener *listeners;
	int nlisteners, caplisteners;
	bool draining;
	bool paused;      /* takeover in progress: workers do not accept */
	bool handed_over; /* listeners went to a new process: leave socket files alone at exit */
	/* admin.http's address, resolved once at start (daemon.c's probe_http) for
	 * metrics_start; valid when the config has admin.http and the start succeeded. */
	struct net_addr http_addr;
	struct stats *stats;             /* process-wide counters; lock-free (stats/stats.h) */
	struct authcache *authcache;     /* auth_query answers; shared by all workers; has its own lock */
	struct flight_cache *flight;     /* the result cache (src/flight/cache.h); its own locks and atomics */
	struct notify_registry *notify;  /* LISTEN/NOTIFY's hubs (src/notify/notify.h); its own locks */
	/* Session ticket keys of every listener's TLS context, every generation (net/tls.h):
	 * made at start, freed after the last generation; its own lock. */
	struct tls_tickets *tls_tickets;
	/* tls_handshake_threads: the threads that run client TLS handshakes (net/handshake.h);
	 * NULL: each worker runs its own. Started before the workers, stopped after they joined
	 * and before they are freed (a handshake still running comes back as a message). */
	struct tls_hs_pool *tls_hs;
	/* The threads that run LDAP checks (auth/ldapauth.h; started at the first one): made before
	 * the workers, stopped after they joined and before they are freed (a check still queued
	 * comes back as a message). */
	struct ldapauth_pool *ldap;
	/* The threads that run PAM checks (auth/pamauth.h; started at the first one): made and
	 * stopped as ldap. */
	struct pamauth_pool *pam;
	/* The threads that look clients' host names up for hba_file's host-name lines
	 * (frontend/extauth.h; started at the first lookup): made and stopped as ldap. */
	struct extauth_names *names;
	/* redis.tls: the tunnel (net/tunnel.h) the workers' L2 connections go through; NULL
	 * without. Set before the workers start, stopped after they are gone: read-only to them. */
	struct tunnel *redis_tunnel;
	/* Clients connected now, across workers; relaxed ordering suffices because it
	 * only bounds admission, it orders no other memory. */
	atomic_int nclients;
	/* Source of client serials (remembered owners); relaxed: uniqueness is all it gives. */
	atomic_uint_fast64_t next_client_serial;
	double start_time; /* wall clock (ev_time) at start; read-only: SHOW STATS rates */
	/* The kv router (src/kv/router.h), NULL without a kv section. Stored once by main after
	 * daemon_start (workers read it as a seq_cst load, so they see it fully built) and freed
	 * only after daemon_stop. */
	struct kv_router *_Atomic kv_router;
	/* kv replication (src/kv/replicate.h), NULL without a kv section: stored once by main
	 * after daemon_start, stopped at shutdown, freed only after daemon_stop and metrics_stop,
	 * so the console and /metrics may read its counters at any time. */
	struct kv_replicator *_Atomic kv_replicator;
};

/* The current generation's listen entry that accepted on the listener named key ("host:port",
 * see worker.h), and its TLS context (NULL when tls is disable). NULL when none matches (a
 * Unix socket, or an entry a reload just removed). */
const struct config_listen *runtime_find_listen(const struct runtime *rt, const char *key, struct tls_ctx **tls);
/* The TLS context for the servers of svc, a service of any generation (NULL: plaintext). */
struct tls_ctx *runtime_service_tls(const struct runtime *rt, const struct config_service *svc);
/* A listen entry's key, "host:port" (the name of its listeners, see worker.h). */
void runtime_listen_key(const struct config_listen *l, char *out, size_t cap);

/* The index of the worker whose loop runs on this thread (set by worker_main), -1 on every
 * other thread: what a lower layer keys per-worker data by (stats/ its shards). */
extern _Thread_local int runtime_worker_index;

#endif
