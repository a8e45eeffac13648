/* The cache's side of a client (transaction pooling, simple protocol): answering a request
 * from L1, leading or joining a flight, feeding the leader's reply to its flight, waiters'
 * deadlines and cancels, and the writes every client's statements commit. Like the console,
 * it sits beside frontend/ and includes frontend/client_int.h; every function runs on the
 * client's own worker. */
#ifndef TUSK_FLIGHT_SERVE_H
#define TUSK_FLIGHT_SERVE_H

#include "frontend/relay_hooks.h"

/* The cache's relay hooks: every client while the cache tracks writes (a rule anywhere has
 * cache on or coalesce). What each does, in the order the relay calls them:
 *   request   an idle client's request: answered from L1, or the client waits on an
 *             identical query's flight (or leads one and its request goes on to a server);
 *             session pooling: one whole Query/extended read to an idle server, never waits
 *   writable  more of an answer larger than the write buffer goes out
 *   timer     a waiter's cache_coalesce_wait ran out (or a parked request is judged again)
 *   cancel    a CancelRequest stops a wait (57014)
 *   quiet     no flight led or waited on, no answer being written, no L2 lookup or
 *             invalidation owed: the client may move to another worker
 *   closed    let go of flights, apply pending invalidations, free the state
 *   sql, parsed, bind, close_stmt, opaque
 *             what goes to the server may write: its tables (or the database) go stale
 *             (session pooling: the statements its server holds are followed)
 *   scanned   a leader's reply feeds its flight
 *   error     session pooling: a failed Parse leaves the session unknown
 *   commit_wait, ready
 *             the transaction's writes are visible: bumps now (with L2, its ReadyForQuery
 *             waits for Redis to take them; relay_resume follows) */
extern const struct relay_hooks flight_relay_hooks;

#endif
