/* Internal to frontend/: the client struct shared by client.c (startup, waiting,
 * teardown), relay.c (moving bytes while a server is attached) and cancel.c. */
#ifndef TUSK_FRONTEND_CLIENT_INT_H
#define TUSK_FRONTEND_CLIENT_INT_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "net/net.h"
#include "pool/pool.h"
#include "util/buf.h"
#include "util/id.h"

struct server;
struct worker;

#define CLIENT_PARAMS_MAX 64

enum client_state {
	CLIENT_STARTUP, /* reading the startup packet (SSL/GSSENC answered 'N') */
	CLIENT_WAITING, /* startup done; waiting for, connecting or preparing a server */
	CLIENT_ACTIVE,  /* greeted; bytes relayed to and from c->server */
	CLIENT_CLOSING, /* flushing a last message; then closed */
};

struct client_param {
	const char *name;  /* into params_mem */
	const char *value;
};

struct client {
	char id[ID_LEN];
	enum client_state state;
	struct worker *worker;
	int fd;
	ev_io io;
	ev_timer timer;
	struct buf rbuf; /* bytes from the client, not yet forwarded */
	struct buf wbuf; /* bytes tusk itself sends the client; always before relayed ones */
	struct net_addr peer;
	char ctx[192]; /* "db/user@addr:port" */
	char database[CONFIG_NAME_MAX];
	char user[CONFIG_NAME_MAX];
	int nparams;
	struct client_param params[CLIENT_PARAMS_MAX]; /* startup parameters to apply on servers */
	char *params_mem;
	struct pool *pool;
	struct server *server;      /* connecting, preparing or attached */
	struct pool_waiter waiter;
	bool queued;                /* waiter is (or was, until the answer arrives) in the pool queue */
	bool dead;                  /* closed while an answer from the pool was in flight */
	bool shut_wr;               /* CLOSING: our side is half-closed, the error is out */
	uint32_t cancel_pid, cancel_key; /* minted by tusk, sent in BackendKeyData */
	struct client *prev, *next; /* worker->clients */

	/* relay scanners: bytes at the head of a buffer already checked and ready to forward,
	 * and bytes of the message being streamed that have not arrived yet */
	size_t c2s_scanned;
	uint32_t c2s_remaining;
	size_t s2c_scanned;
	uint32_t s2c_remaining;
};

void client_set_state(struct client *c, enum client_state to);
void client_update_io(struct client *c);
void client_close(struct client *c, const char *reason);
void client_fail(struct client *c, const char *sqlstate, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int client_write_wbuf(struct client *c);
void client_flush(struct client *c);

/* relay.c */
void relay_start(struct client *c, struct server *s);
void relay_client_event(struct client *c, int revents);
/* The client is done with s (left, failed or shutting down): reset and pool it when it is
 * clean and idle, close it otherwise. */
void relay_release_server(struct client *c, struct server *s);

/* cancel.c: the registry lives in the runtime (cancel_registry_new/free there). */
void cancel_forward(struct worker *w, uint32_t pid, uint32_t key);
/* Point the client's cancel key at s, or at nothing (s == NULL). */
void cancel_set_target(struct client *c, const struct server *s);
/* Drop the client's entry (teardown). */
void cancel_forget(struct client *c);

#endif
