/* The cancel-key registry shared by all workers (see cancel.c). */
#ifndef TUSK_FRONTEND_CANCEL_H
#define TUSK_FRONTEND_CANCEL_H

struct cancel_registry;

struct cancel_registry *cancel_registry_new(void);
void cancel_registry_free(struct cancel_registry *reg);

#endif
