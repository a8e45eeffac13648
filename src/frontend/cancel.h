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
 * takeover connection kept open ("C <pid> <key>", the requester's connection attached when it
 * is plaintext); conn is the registry's from here (closed once the predecessor has gone, or
 * with the registry). */
void cancel_registry_set_predecessor(struct cancel_registry *reg, int conn);
/* On the predecessor: a request so handed over, as if it had arrived here (fd: the
 * requester's connection, closed once the client's worker has decided; or -1). */
void cancel_handed_over(struct cancel_registry *reg, uint32_t pid, uint32_t key, int fd);

#endif
