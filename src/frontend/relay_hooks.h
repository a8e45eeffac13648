/* The relay's hook list: how a feature that watches or answers a pooled client's traffic (the
 * result cache, src/flight/serve.c; the read-write split, src/split/route.c) attaches to the
 * client and relay without frontend/ naming it, in the spirit of HAProxy's filters or nginx's
 * filter chain.
 *
 * A feature fills one struct relay_hooks (every function pointer may be NULL) and registers it
 * once, before the workers start (relay_hooks_register, from main.c). Per client, the list is
 * the registered hooks whose wants() holds for the configuration and the client's pool rule;
 * it is chosen again when a reload changes the configuration (relay_hooks_sync). With no
 * feature configured the list is NULL: every call site is one NULL test, no indirect call, and
 * the relay enters no feature file.
 *
 * Hooks run on the client's own worker, in registration order, and may include
 * frontend/client_int.h (they sit beside frontend/, above it in docs/ARCHITECTURE.md's layers).
 * See docs/ARCHITECTURE.md ("The relay's hooks") for who calls each one. */
#ifndef TUSK_FRONTEND_RELAY_HOOKS_H
#define TUSK_FRONTEND_RELAY_HOOKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct client;
struct server;
struct tusk_config;
struct config_pool_rule;

/* The reset a server needs before it goes back to the pool (relay.c's reset_and_park). */
enum reset_kind {
	RESET_NONE,       /* a clean server: ROLLBACK at most */
	RESET_CONFIGURED, /* session pooling: server_reset_query, as the operator set it */
	RESET_REQUIRED,   /* tusk could not follow the session (pinned, or a function ran):
	                   * server_reset_query, or DISCARD ALL when that is empty */
	RESET_SETTINGS,   /* a function ran and the server holds nothing else of its own
	                   * (state check): RESET ALL, for the settings no view lists (custom
	                   * placeholders such as set_config('app.x', ..., false)) */
};

struct relay_hooks {
	const char *name;
	/* enum relay_hook_bit: the callbacks that do nothing for a client until the feature wakes
	 * it (relay_hooks_wake: LISTEN/NOTIFY's, once the client has its state); until then the
	 * relay does not call them for that client (one bit test, no walk, no indirect call). */
	unsigned dormant;
	/* Whether the hooks attach to a client of rule (NULL: none yet) under cfg. Pure: reads
	 * the configuration only (no client, no I/O), so that the list can be chosen per rule. */
	bool (*wants)(const struct tusk_config *cfg, const struct config_pool_rule *rule);
	/* The list of a logged-in client changed to include these hooks (a reload turned the
	 * feature on): they did not see what the client sent before. */
	void (*joined)(struct client *c);

	/* ---- client.c ---- */
	/* Before a claim: which side of the pool (c->standby, cleared by the caller first). */
	void (*claim)(struct client *c);
	/* A request needs a server. s NULL: an idle (transaction/statement pooling) client's
	 * bytes; s: a session-pooling client's, linked to its idle server s. True: the hook took
	 * the request (answered it, or the client waits on it); the relay does nothing more. */
	bool (*request)(struct client *c, const struct server *s);
	/* s (idle, attached) is about to serve c. True: the hook took s over and later calls
	 * client_attach_resume (with s, or NULL to claim from the primary instead). */
	bool (*attach)(struct client *c, struct server *s);
	/* An idle client's socket took bytes: true when requests wait behind what the hook
	 * wrote (the caller claims a server for them). */
	bool (*writable)(struct client *c);
	/* The idle client's timer fired (a deadline the hook armed). */
	void (*timer)(struct client *c);
	/* A CancelRequest for c: true when it cancelled what the hook made c wait on. */
	bool (*cancel)(struct client *c);
	/* Nothing of c's is in flight in the hook (c may move to another worker). NULL: always. */
	bool (*quiet)(const struct client *c);
	/* c closes (or the hooks leave its list): let go of everything. */
	void (*closed)(struct client *c);

	/* ---- relay.c, client to server ---- */
	/* A Query's or Parse's SQL text goes to the server. */
	void (*sql)(struct client *c, const char *sql, size_t len);
	/* Right after sql() for a Parse of statement name ("": unnamed) whose body after the
	 * name is rest; name NULL: a Parse too large to read, not judged. */
	void (*parsed)(struct client *c, const char *name, const uint8_t *rest, size_t rest_len);
	/* A Bind (m, avail bytes of it read) goes to the server. unnamed: it binds the unnamed
	 * statement; text: the named statement's query when the relay knows it (NULL: it does
	 * not). False: refuse it (the caller fails the client with 0A000). */
	bool (*bind)(struct client *c, const uint8_t *m, size_t avail, bool unnamed, const char *text, size_t len);
	/* A Close of statement name goes to the server (session pooling: the relay forwards it). */
	void (*close_stmt)(struct client *c, const char *name);
	/* A FunctionCall goes to the server. */
	void (*opaque)(struct client *c);

	/* ---- relay.c, server to client ---- */
	/* Bytes of server replies scanned and forwarded to c, in order. */
	void (*scanned)(struct client *c, const uint8_t *p, size_t n);
	/* An ErrorResponse from s while c uses it: m[0, total) when whole, else m NULL. */
	void (*error)(struct client *c, struct server *s, const uint8_t *m, size_t total);
	/* ReadyForQuery 'I' ending a transaction, before it reaches c. True: hold it (the hook
	 * calls relay_resume later). last: no other ReadyForQuery is owed. */
	bool (*commit_wait)(struct client *c, bool last);
	/* ReadyForQuery 'I' scanned. */
	void (*ready)(struct client *c, bool last);
	/* c's transaction is over and s goes back to the pool (reset: the reset it needs before
	 * it parks). True: the hook took s (it calls relay_release_finish(s, reset) later). */
	bool (*release)(struct client *c, struct server *s, enum reset_kind reset);

	/* ---- answering inside a transaction, delivering between transactions ---- */
	/* relay.c: a transaction/statement-pooling client c, not pinned, linked to s inside a
	 * transaction with every reply of s relayed and nothing owed: the hook may answer whole
	 * requests at the head of c->rbuf itself (consuming them, writing to c->wbuf). False:
	 * the hook failed the client (client_fail), which may have freed it: touch c no more. */
	bool (*linked)(struct client *c, struct server *s);
	/* client.c client_go_idle: c is idle between transactions, no server, nothing relayed
	 * pending: the hook may append whole messages to c->wbuf (written right after). */
	void (*idle)(struct client *c);
};

#define RELAY_HOOKS_MAX 4

/* Which callbacks some hook of a list has (struct relay_hook_list's has): the relay's calls
 * test one bit before walking the list, so a callback no hook in it defines (a pool with
 * LISTEN/NOTIFY but no cache defines no `scanned`, asked per server message) costs nothing. */
enum relay_hook_bit {
	RH_CLAIM = 1u << 0, RH_REQUEST = 1u << 1, RH_ATTACH = 1u << 2, RH_WRITABLE = 1u << 3,
	RH_TIMER = 1u << 4, RH_CANCEL = 1u << 5, RH_QUIET = 1u << 6, RH_CLOSED = 1u << 7,
	RH_SQL = 1u << 8, RH_PARSED = 1u << 9, RH_BIND = 1u << 10, RH_CLOSE_STMT = 1u << 11,
	RH_OPAQUE = 1u << 12, RH_SCANNED = 1u << 13, RH_ERROR = 1u << 14, RH_COMMIT_WAIT = 1u << 15,
	RH_READY = 1u << 16, RH_RELEASE = 1u << 17, RH_LINKED = 1u << 18, RH_IDLE = 1u << 19,
};

/* The hooks of one client, in registration order (n >= 1: an empty list is NULL). */
struct relay_hook_list {
	int n;
	unsigned mask; /* bit i: the i-th registration is in the list */
	unsigned has;  /* enum relay_hook_bit: the callbacks some hook in it defines */
	const struct relay_hooks *h[RELAY_HOOKS_MAX];
};

/* The feature h has state for client c (awake) or no longer has (asleep): its dormant
 * callbacks are called for c, or not (c->hooks_has). On c's worker. */
void relay_hooks_wake(struct client *c, const struct relay_hooks *h, bool awake);

/* main thread, before the workers start. 0, or -ENOSPC past RELAY_HOOKS_MAX. */
int relay_hooks_register(const struct relay_hooks *h);
/* Forget every registration (unit tests). */
void relay_hooks_unregister_all(void);
/* The list for a client of rule under cfg: NULL when no registered hooks want it. */
const struct relay_hook_list *relay_hooks_choose(const struct tusk_config *cfg, const struct config_pool_rule *rule);

#endif
