/* The runtime: the one place for process-wide state. It owns the configuration generation,
 * the worker threads, the shared pools and the resolved service addresses. Everything else
 * reaches shared state through a struct runtime pointer, never through globals. */
#ifndef TUSK_RUNTIME_RUNTIME_H
#define TUSK_RUNTIME_RUNTIME_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "config/config.h"
#include "net/net.h"

struct worker;
struct pool_registry;
struct cancel_registry;
struct stats;
struct userlist;
struct hba;
struct tls_ctx;
struct authcache;

#define RUNTIME_AUTHCACHE_MAX 10000 /* auth_query answers kept; beyond, random ones are evicted */

struct runtime {
	const struct tusk_config *cfg;   /* read-only while workers run */
	int nworkers;
	struct worker **workers;
	struct net_addr *listen_addrs;   /* one per cfg->listen entry */
	struct net_addr *service_addrs;  /* cfg->services[i].hosts[0] resolved */
	struct pool_registry *pools;     /* shared by all workers; has its own locks */
	struct cancel_registry *cancels; /* shared by all workers; has its own lock */
	struct stats *stats;             /* process-wide counters; lock-free (stats/stats.h) */
	struct userlist *users;          /* auth_file, or NULL; immutable while workers run */
	struct hba *hba;                 /* hba_file, or NULL; immutable while workers run */
	struct tls_ctx **listen_tls;     /* per cfg->listen entry; NULL where tls is disable */
	struct tls_ctx **service_tls;    /* per cfg->services entry; NULL where tls is disable */
	struct authcache *authcache;     /* auth_query answers; shared by all workers; has its own lock */
	int unix_fd[8];                  /* Unix listening sockets (worker 0 accepts on them) */
	int nunix;
	/* Clients connected now, across workers; relaxed ordering suffices because it
	 * only bounds admission, it orders no other memory. */
	atomic_int nclients;
	/* Source of client serials (remembered owners); relaxed: uniqueness is all it gives. */
	atomic_uint_fast64_t next_client_serial;
};

/* Resolve addresses, open listeners, start the workers. 0 or a negative errno, after
 * logging what failed. */
__attribute__((warn_unused_result))
int runtime_start(struct runtime *rt, const struct tusk_config *cfg);
/* Load auth_file and hba_file of cfg (either may be absent). 0, or the number of errors,
 * each printed to errout as FILE:LINE: ... (also used by --check). */
int runtime_load_auth(const struct tusk_config *cfg, FILE *errout, struct userlist **users, struct hba **hba);

/* Build the TLS contexts of cfg's listeners and services (certificates, keys and CAs are
 * read now). 0, or the number of errors, each printed to errout as "FILE: KEY: message"
 * (also used by --check). On success the arrays (nlisten and nservices long, NULL entries
 * where TLS is off) are the caller's: runtime_free_tls. */
int runtime_load_tls(const struct tusk_config *cfg, FILE *errout, struct tls_ctx ***listen_tls,
		     struct tls_ctx ***service_tls);
void runtime_free_tls(const struct tusk_config *cfg, struct tls_ctx **listen_tls, struct tls_ctx **service_tls);

/* Ask every worker to stop, join them, close pooled servers, free everything. */
void runtime_stop(struct runtime *rt);

/* Index into cfg->services of svc. */
int runtime_service_index(const struct runtime *rt, const struct config_service *svc);

#endif
