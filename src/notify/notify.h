/* LISTEN/NOTIFY for transaction and statement pooling without pinning (docs/pooling.md,
 * "LISTEN/NOTIFY"): a client's simple-protocol LISTEN / UNLISTEN is answered by tusk, one
 * listener connection per pool LISTENs to the union of its clients' channels, and each
 * NotificationResponse it gets is fanned out to the subscribed clients on their own workers.
 * Attached as relay hooks (notify_relay_hooks) and a worker tenant (notify_worker_hooks). */
#ifndef TUSK_NOTIFY_NOTIFY_H
#define TUSK_NOTIFY_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>

#include <stddef.h>

struct client;
struct runtime;
struct notify_registry;

/* The hubs (one per pool that had a listening client); pools are never freed, nor are hubs
 * before the registry. Main thread, at start and after the workers are freed. */
struct notify_registry *notify_registry_new(void);
void notify_registry_free(struct notify_registry *r);

extern const struct relay_hooks notify_relay_hooks;
extern struct worker_hooks notify_worker_hooks;

/* One row of SHOW LISTENERS. */
struct notify_listener_row {
	char database[64];
	char user[64];
	int channels;          /* channels some client listens to */
	int clients;           /* clients listening to at least one channel */
	uint64_t relayed;      /* notifications received from the server */
	uint64_t reconnects;   /* listener connections lost and made again */
	bool connected;
};
typedef void (*notify_row_fn)(const struct notify_listener_row *row, void *arg);
/* Any thread: fn for each hub, under the registry's lock (fn must not call back in). */
void notify_foreach(struct runtime *rt, notify_row_fn fn, void *arg);

/* SHOW CLIENTS: the channels c listens to (committed), comma-separated into out (cut short
 * with "..." when they do not fit); returns their number. On c's worker. */
int notify_client_channels(const struct client *c, char *out, size_t cap);
/* Clients closed (53400) because they did not read their notifications, since start. */
uint64_t notify_closed_unread(struct runtime *rt);
/* RECONNECT [db]: close the listener connection of each pool of database (NULL or "": of
 * every pool) and make it again, as when it is lost. Any thread. */
void notify_reconnect(struct runtime *rt, const char *database);

#endif
