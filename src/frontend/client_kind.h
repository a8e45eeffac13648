/* Session kinds: what a client is, chosen once, after its startup packet, by the database it
 * names, with the handlers the generic paths of client.c call for it (nginx's handler swap:
 * the generic code calls c->kind's handler and tests no feature). The pooled kind (client.c)
 * claims a server per transaction or session; a virtual database that tusk answers itself
 * (the admin console, console/console.c; the kv database, kv/front.c) registers its kind at
 * startup, before any worker runs (client_kind_register, from daemon_start). */
#ifndef TUSK_FRONTEND_CLIENT_KIND_H
#define TUSK_FRONTEND_CLIENT_KIND_H

#include <stdbool.h>
#include <stdint.h>

struct client;
struct tusk_config;
struct worker;

struct client_kind {
	const char *name; /* "pooled", "console", "kv", "replication": for logs */
	/* Registered kinds: the database names whose startup packet selects it (NULL-terminated),
	 * and whether cfg offers it (NULL: always). The first registered kind that matches wins;
	 * none: the pooled kind. */
	const char *const *databases;
	bool (*enabled)(const struct tusk_config *cfg);
	/* The startup packet was accepted (names, TLS, protocol version): authenticate
	 * (client_auth_begin) and call begin when that is done at once; or client_fail. */
	void (*startup)(struct client *c);
	/* Authenticated (at once, or after an exchange in CLIENT_AUTH). */
	void (*begin)(struct client *c);
	/* CLIENT_IDLE, logged in: bytes arrived in rbuf. */
	void (*input)(struct client *c);
	/* CLIENT_IDLE: wbuf was written out. It updates the watcher (client_update_io) and
	 * returns true when it is done with the event, false when a pending read may follow. */
	bool (*writable)(struct client *c);
	/* Teardown, from client_close (server released, socket closed): free the kind's state
	 * (c->vdb for a virtual database); NULL: nothing to free. */
	void (*closed)(struct client *c);
	/* A CancelRequest with c's key (cancel.c, on c's worker): true when the kind took it;
	 * NULL: the pooled path (the request running on c's server, or waiting for one). */
	bool (*cancel)(struct client *c);
	/* Its clients keep their buffers while idle and never move to another worker: their
	 * answers are written into wbuf outside the relay (a kv answer arrives from a router
	 * thread while the client looks idle). */
	bool resident;
};

/* At startup, before any worker runs (kinds are read without a lock); registering the same
 * kind again is a no-op. */
void client_kind_register(const struct client_kind *k);
/* The kind a startup packet for database selects under cfg (the pooled kind when none of the
 * registered ones does). */
const struct client_kind *client_kind_of(const struct tusk_config *cfg, const char *database);

/* A listener of another protocol than PostgreSQL's (config_listen.protocol, e.g. the kv's
 * Redis listener, kv/resp_front.c): client_accept hands its connections to accept at once
 * (they never become clients), with the entry's TLS context (NULL: tls disable). Registered
 * at startup, before any worker runs; none registered for a protocol: its connections are
 * closed. */
struct net_addr;
struct config_listen;
struct tls_ctx;
typedef void (*client_protocol_accept_fn)(struct worker *w, int fd, const struct net_addr *peer,
					   const struct config_listen *l, struct tls_ctx *tls);
void client_protocol_register(int protocol, client_protocol_accept_fn accept);

/* What a client moving between workers (worker_balance_target) carries and is checked for on
 * arrival. One hook (the admin console's kills, console.h): mark reads the old worker's
 * progress; arrive, on the new worker with c linked, returns true when it closed c. */
struct client_move_hook {
	uint32_t (*mark)(const struct worker *from);
	bool (*arrive)(struct worker *to, struct client *c, uint32_t mark);
};
void client_set_move_hook(const struct client_move_hook *h);

#endif
