/* Client connections: the startup phase, waiting for a server, the relay between client
 * and server in session mode, and the teardown that gives the server back. One state
 * machine per client, on the worker that accepted it or, between transactions, one it
 * moved to (worker_balance_target). */
#ifndef TUSK_FRONTEND_CLIENT_H
#define TUSK_FRONTEND_CLIENT_H

#include <stdint.h>

#include "net/net.h"

struct worker;
struct worker_msg;
struct client;

/* The per-worker state of w's clients (their buffer free lists); freed after the last
 * client of w is gone. */
void client_worker_init(struct worker *w);
void client_worker_free(struct worker *w);
/* Housekeeping tick: free the buffer blocks no client needed since the last one. */
void client_worker_trim(struct worker *w);
/* Take over an accepted socket; listener names the listening socket it came from ("host:port"
 * as configured, see worker.h), which decides its TLS settings. */
void client_accept(struct worker *w, int fd, const struct net_addr *peer, const char *listener);
/* A CancelRequest for a client of this worker (posted by whichever worker received it). */
void client_on_cancel_message(struct worker *w, struct worker_msg *m);
/* WORKER_MSG_CLIENT: an idle client another worker moved here (worker_balance_target) takes
 * up its place on w's loop; closed at once if w is stopping, or if it missed a KILL naming it
 * on the way (kills_seen: its old worker's mark, client_kind.h's move hook). */
void client_arrive(struct worker *w, struct client *c, uint32_t kills_seen);
/* Close every client of w (shutdown), each with reason in an ErrorResponse, then w's
 * auth_query connections. */
void client_close_all(struct worker *w, const char *reason);
/* Draining (SIGTERM, online restart): close with 57P01 every client of w that is outside a
 * transaction (idle between transactions, or in session mode with its server idle and
 * nothing in flight) and logged in for more than a moment. Clients inside a transaction,
 * or still logging in, are left to finish. */
void client_close_quiescent(struct worker *w, const char *reason);

#endif
