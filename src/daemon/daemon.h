/* The daemon: the lifecycle of the process state (struct runtime, runtime/runtime.h): start
 * (resolve, open listeners, start the workers, the services, the cache, the Redis tunnel),
 * reload (SIGHUP), drain (SIGTERM, online restart), stop, and the loading of the files a
 * generation is built from. The only place that names every module it starts. Main thread
 * only. The online restart's socket hand-over is takeover.h. */
#ifndef TUSK_DAEMON_DAEMON_H
#define TUSK_DAEMON_DAEMON_H

#include <stdbool.h>
#include <stdio.h>

#include "runtime/runtime.h"

/* Resolve addresses, open listeners (taking the inherited ones first, see takeover.h;
 * inherited may be NULL), start the workers. cfg is owned by the runtime from here, even
 * on failure. 0 or a negative errno, after logging what failed. */
__attribute__((warn_unused_result))
int daemon_start(struct runtime *rt, struct tusk_config *cfg, struct runtime_inherited *inherited,
		  int ninherited);
/* Test seam (fuzzers): the same runtime with threadless workers (worker_new) and no
 * listening sockets; the caller runs each rt->workers[i]->loop and hands connections to
 * client_accept itself. daemon_stop ends it. */
__attribute__((warn_unused_result))
int daemon_start_inline(struct runtime *rt, struct tusk_config *cfg);
/* Load auth_file, ident_file and hba_file of cfg (any may be absent). 0, or the number of
 * errors, each printed to errout as FILE:LINE: ... (also used by --check). The hba points
 * into the ident (its map=NAME): free the hba first. When ident_file has errors, hba_file is
 * not read (its maps could not be checked); its errors show once ident_file is right. */
int daemon_load_auth(const struct tusk_config *cfg, FILE *errout, struct userlist **users, struct ident **ident,
		     struct hba **hba);

/* SIGHUP: load path into a new generation and switch to it (pools follow, listeners are
 * added and removed, restart-only keys are logged and kept). On any error the running
 * generation stays and every error is logged as FILE:LINE: KEY: message. 0 or negative. */
__attribute__((warn_unused_result))
int daemon_reload(struct runtime *rt, const char *path);

/* SIGTERM / online restart: close every listener, and have each worker close its clients
 * as they leave their transactions. daemon_stop ends it. */
void daemon_drain(struct runtime *rt);

/* Online restart: stop accepting on every listener but keep them open (pause true), or
 * accept again (pause false). */
void daemon_pause_accepting(struct runtime *rt, bool pause);

/* Build the TLS contexts of cfg's listeners and services (certificates, keys and CAs are
 * read now). 0, or the number of errors, each printed to errout as "FILE: KEY: message"
 * (also used by --check and by reload). On success the arrays (nlisten and nservices long,
 * NULL entries where TLS is off) are the caller's: daemon_free_tls. Listeners with
 * tls_session_tickets seal tickets with tickets (NULL: none, as for --check). */
int daemon_load_tls(const struct tusk_config *cfg, FILE *errout, struct tls_tickets *tickets,
		     struct tls_ctx ***listen_tls, struct tls_ctx ***service_tls);
void daemon_free_tls(const struct tusk_config *cfg, struct tls_ctx **listen_tls, struct tls_ctx **service_tls);
/* redis.tls's client context (*out NULL when TLS is off): 0, or 1 after printing why to
 * errout (also used by --check: the files must be readable and hold what they should). */
int daemon_load_redis_tls(const struct tusk_config *cfg, FILE *errout, struct tls_ctx **out);

/* Ask every worker to stop, join them, close pooled servers, free everything. */
void daemon_stop(struct runtime *rt);

#endif
