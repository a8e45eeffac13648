/* TLS handshakes off the threads that relay (issue 28): a few threads of their own, each with
 * its own libev loop, run the server side of client handshakes that a worker hands over, so a
 * login storm's signatures and key exchanges never run on the thread that relays bytes for the
 * clients already logged in. The threads run at a lower priority (nice +HS_NICE): when the
 * cores are short, the relay goes first and the handshakes take what is left.
 *
 * A handshake handed over (tls_hs_submit) belongs to the pool until its done callback runs, on
 * the pool's thread: the pool drives tls_handshake on the connection's socket until it
 * completes (0), fails (a negative errno; tls_conn_error says why), passes its deadline
 * (-ETIMEDOUT) or the pool stops (-ECANCELED). Neither the connection nor the socket may be
 * touched by anyone else meanwhile; the pool never closes either. */
#ifndef TUSK_NET_HANDSHAKE_H
#define TUSK_NET_HANDSHAKE_H

#include <stdbool.h>

struct tls_conn;
struct tls_hs_pool;

#define HS_NICE 10

/* Runs on the pool's thread, once per submitted handshake. */
typedef void tls_hs_done_fn(void *arg, int rc);

/* Start nthreads (>= 1) threads. 0 or -errno (logged). */
__attribute__((warn_unused_result))
int tls_hs_pool_start(int nthreads, struct tls_hs_pool **out);
/* Any thread: hand over the handshake of conn on fd (its first step runs at once on the pool's
 * thread), to finish by deadline (seconds on ev_time()'s clock).
 * 0, or -ENOMEM / -ESHUTDOWN (nothing handed over: the caller still owns all and done never runs). */
__attribute__((warn_unused_result))
int tls_hs_submit(struct tls_hs_pool *p, struct tls_conn *conn, int fd, double deadline, tls_hs_done_fn *done,
		  void *arg);
/* Handshakes handed over and not yet done (any thread; for SHOW and tests). */
unsigned tls_hs_pending(const struct tls_hs_pool *p);
/* Handshakes the pool has finished, successfully or not (any thread). */
unsigned long tls_hs_done_count(const struct tls_hs_pool *p);
/* Any thread: a server-side handshake that stayed on its worker though there are handshake
 * threads finished: resumed (tls_conn_defer_full lets a resumption finish where it started),
 * or full when the hand-over failed. Counted for the metrics. */
void tls_hs_note_kept(struct tls_hs_pool *p, bool resumed);
/* Those handshakes so far, resumed or full (any thread). */
unsigned long tls_hs_kept_count(const struct tls_hs_pool *p, bool resumed);
/* Stop every thread: each handshake still running gets done(arg, -ECANCELED) first; join, free.
 * NULL: nothing. */
void tls_hs_pool_stop(struct tls_hs_pool *p);

#endif
