/* Client connections: the startup phase, waiting for a server, the relay between client
 * and server in session mode, and the teardown that gives the server back. One state
 * machine per client, on the worker that accepted it or, between transactions, one it
 * moved to (worker_balance_target). */
#ifndef TUSK_FRONTEND_CLIENT_H
#define TUSK_FRONTEND_CLIENT_H

#include <stdint.h>

#include "net/net.h"

struct worker;
struct worker_hooks;
struct client;

/* The frontend's tenancy on every worker (worker.h): its clients, their buffer and
 * claim free lists, cancels being sent and auth_query connections. Accepts connections
 * (client_accept); at drain closes each client outside a transaction with 57P01, at stop
 * every client (then the auth_query connections), at free the cancels still being sent. */
extern struct worker_hooks frontend_worker_hooks;
/* Take over an accepted socket; listener names the listening socket it came from ("host:port"
 * as configured, see worker.h), which decides its TLS settings. */
void client_accept(struct worker *w, int fd, const struct net_addr *peer, const char *listener);

#endif
