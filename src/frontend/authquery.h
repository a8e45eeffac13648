/* Internal to frontend/: secrets of users absent from auth_file, fetched with the rule's
 * auth_query on a connection of auth_user's, through the process-wide cache
 * (auth/authcache.h). auth.c asks; the answer comes back by client_auth_fetched. */
#ifndef TUSK_FRONTEND_AUTHQUERY_H
#define TUSK_FRONTEND_AUTHQUERY_H

#include "auth/authcache.h"
#include "config/config.h"

struct client;
struct worker;
struct authq_req;

enum authq_result {
	AUTHQ_PENDING = 0, /* asked the server: client_auth_fetched comes later, on c's loop */
	AUTHQ_SECRET = 1,  /* the secret is in out */
	AUTHQ_NO_USER = 2, /* no such user (no row, or a NULL password) */
};

/* Find c->user's secret for rule: from the cache at once (AUTHQ_SECRET with out filled, or
 * AUTHQ_NO_USER), or by queueing a query (AUTHQ_PENDING, *req set for authquery_cancel),
 * or a negative errno when not even that was possible. Never calls back synchronously. */
__attribute__((warn_unused_result))
int authquery_fetch(struct client *c, const struct config_pool_rule *rule, char out[AUTHCACHE_SECRET_MAX],
		    struct authq_req **req);
/* The client is going away: forget its request (a query already running still fills the
 * cache). */
void authquery_cancel(struct authq_req *req);
/* Shutdown, after every client of w is closed: close w's auth_query connections. */
void authquery_close_all(struct worker *w);

/* auth.c: the answer to an AUTHQ_PENDING fetch; result is AUTHQ_SECRET (secret set),
 * AUTHQ_NO_USER or a negative errno (the query could not run). */
void client_auth_fetched(struct client *c, int result, const char *secret);

#endif
