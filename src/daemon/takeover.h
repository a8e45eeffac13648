/* Online restart: a new tusk takes the listening sockets of the running one over a Unix
 * socket (SCM_RIGHTS), so no connection queued in a listen backlog is ever dropped.
 *
 *   new → old  "TAKEOVER"
 *   old → new  one "L <key>" message per listening socket, the socket attached; then "END <pid>"
 *   (new starts its workers on those sockets, plus fresh SO_REUSEPORT ones if it has more)
 *   new → old  "DRAIN"
 *   old → new  "OK": old has stopped accepting and drains like SIGTERM; new binds the
 *              takeover socket for the next restart.
 *   new → old  "C <pid> <key> <seq>" (decimal) for each CancelRequest whose key new never
 *              gave out: it is for a client of old, which serves it as its own. new holds the
 *              requester's connection (plaintext or TLS) until
 *   old → new  "D <seq>": old's worker has decided what the cancel does; new ends the
 *              requester's connection now (at most 3 s after, without an answer). Beyond
 *              256 held at once, new sends "C <pid> <key>", answered by nothing, and ends the
 *              request at once (frontend/cancel.h). The connection stays open for these
 *              until old exits; then new ends every request still held. Both sides read it
 *              non-blocking on their main thread, a bounded number of messages at a time,
 *              and log and ignore a malformed message; nothing comes attached any more.
 * The socket is SOCK_SEQPACKET, so every message keeps its boundaries. If the new process
 * goes away before DRAIN, the old one carries on as if nothing happened. */
#ifndef TUSK_DAEMON_TAKEOVER_H
#define TUSK_DAEMON_TAKEOVER_H

#include "runtime/runtime.h" /* struct runtime_inherited */

/* Bind and listen on path. A path another tusk answers on is -EADDRINUSE (it is running:
 * start with --takeover instead); a stale one is replaced. fd or a negative errno. */
__attribute__((warn_unused_result))
int takeover_listen(const char *path);

/* Old side, main thread: serve one connection accepted on the takeover socket *listen_fd.
 * Sends rt's listeners; when the peer asks to DRAIN, drains rt, closes *listen_fd (sets it
 * to -1) before it answers OK, so that the new process, once it has the OK, finds the path
 * free for its own takeover socket; and returns 1 with the connection in *successor,
 * non-blocking (the caller reads the cancels the new process hands over with
 * cancel_registry_successor_input, and exits once drained). 0 when the peer went away
 * without asking; negative on error. */
__attribute__((warn_unused_result))
int takeover_serve(struct runtime *rt, int *listen_fd, int *successor);
/* New side: connect to path and receive the listeners. *conn stays open for
 * takeover_finish. 0 or a negative errno (logged). */
__attribute__((warn_unused_result))
int takeover_fetch(const char *path, int *conn, struct runtime_inherited **out, int *n, int *old_pid);
/* New side, once serving: tell the old process to drain and wait for its OK. 0: conn stays
 * open (the caller hands it to the cancel registry: cancel_registry_set_predecessor);
 * negative: conn is closed. */
__attribute__((warn_unused_result))
int takeover_finish(int conn);

#endif
