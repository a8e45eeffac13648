/* The cancel-key registry shared by all workers (see cancel.c). */
#ifndef TUSK_FRONTEND_CANCEL_H
#define TUSK_FRONTEND_CANCEL_H

#include <stdint.h>

struct cancel_registry;

struct cancel_registry *cancel_registry_new(void);
void cancel_registry_free(struct cancel_registry *reg);

/* Online restart (daemon/takeover.h). After a takeover the listeners are the new process's,
 * so the clients of the old one, draining, send their CancelRequests to the new one. The new
 * process hands every request with a key it never gave out to its predecessor over conn, the
 * takeover connection kept open ("C <pid> <key> <seq>"), and holds the requester's connection
 * (its TLS session too) until the predecessor answers "D <seq>": its worker has decided what
 * the cancel does, so the requester's next request cannot be taken for one the cancel was
 * meant for. At most 256 held, each at most 3 s; all ended when the predecessor goes. conn
 * must be non-blocking; the registry's from here (closed once the predecessor has gone, or
 * with the registry). Main thread. */
void cancel_registry_set_predecessor(struct cancel_registry *reg, int conn);
/* That connection for the main thread to poll (-1: none, or the predecessor has gone). */
int cancel_registry_predecessor(const struct cancel_registry *reg);
/* Main thread, when it is readable: its answers (bounded reads; malformed ones logged and
 * ignored). 0, or -1 when the predecessor has gone: the connection is closed, every held
 * request ended. */
int cancel_registry_predecessor_input(struct cancel_registry *reg);
/* Main thread, every so often: ends the held requests past their time; the seconds until the
 * next one's, or -1 when none is held. */
double cancel_registry_tick(struct cancel_registry *reg);

/* On the predecessor: conn (non-blocking), the takeover connection to the process that took
 * over from this one, where the answers go; -1 before the caller closes it. The caller keeps
 * it, and reads it with cancel_registry_successor_input. */
void cancel_registry_set_successor(struct cancel_registry *reg, int conn);
/* Main thread, when conn is readable: the requests handed over, each served as if it had
 * arrived here and answered once decided. 0, or -1 when the successor has gone or failed. */
int cancel_registry_successor_input(struct cancel_registry *reg, int conn);

#endif
