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
	int unix_fd[8];                  /* Unix listening sockets (worker 0 accepts on them) */
	int nunix;
	/* Clients connected now, across workers; relaxed ordering suffices because it
	 * only bounds admission, it orders no other memory. */
	atomic_int nclients;
	/* Source of client serials (remembered owners); relaxed: uniqueness is all it gives. */
	atomic_uint_fast64_t next_client_serial;
	double start_time; /* wall clock (ev_time) at start; read-only: SHOW STATS rates */
};

/* Resolve addresses, open listeners, start the workers. 0 or a negative errno, after
 * logging what failed. */
__attribute__((warn_unused_result))
int runtime_start(struct runtime *rt, const struct tusk_config *cfg);
/* Load auth_file and hba_file of cfg (either may be absent). 0, or the number of errors,
 * each printed to errout as FILE:LINE: ... (also used by --check). */
int runtime_load_auth(const struct tusk_config *cfg, FILE *errout, struct userlist **users, struct hba **hba);

/* Ask every worker to stop, join them, close pooled servers, free everything. */
void runtime_stop(struct runtime *rt);

/* Index into cfg->services of svc. */
int runtime_service_index(const struct runtime *rt, const struct config_service *svc);

#endif
