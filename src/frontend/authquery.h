/* Secrets of users absent from auth_file, fetched with the rule's auth_query on a connection
 * of auth_user's, through the process-wide cache (auth/authcache.h). auth.c asks for SQL
 * clients, kv/resp_front.c for the Redis listener's AUTH; the answer comes back through the
 * asker's callback, on the asking worker's loop. */
#ifndef TUSK_FRONTEND_AUTHQUERY_H
#define TUSK_FRONTEND_AUTHQUERY_H

#include "auth/authcache.h"
#include "config/config.h"

struct worker;
struct authq_req;

enum authq_result {
	AUTHQ_PENDING = 0, /* asked the server: the done callback comes later, on the worker's loop */
	AUTHQ_SECRET = 1,  /* the secret is in out */
	AUTHQ_NO_USER = 2, /* no such user (no row, or a NULL password) */
};

/* The answer to an AUTHQ_PENDING fetch: result is AUTHQ_SECRET (secret set), AUTHQ_NO_USER
 * or a negative errno (the query could not run). */
typedef void authquery_done_fn(void *arg, int result, const char *secret);

/* Find user's secret for rule, asked for database (the cache key, and where the query runs
 * unless the rule has a server_database): from the cache at once (AUTHQ_SECRET with out
 * filled, or AUTHQ_NO_USER), or by queueing a query (AUTHQ_PENDING, *req set for
 * authquery_cancel; done(arg, ...) comes later on w's loop), or a negative errno when not
 * even that was possible. Never calls back synchronously. */
__attribute__((warn_unused_result))
int authquery_fetch(struct worker *w, const struct config_pool_rule *rule, const char *database, const char *user,
		    char out[AUTHCACHE_SECRET_MAX], authquery_done_fn *done, void *arg, struct authq_req **req);
/* The asker is going away: forget its request (a query already running still fills the
 * cache). */
void authquery_cancel(struct authq_req *req);
/* Shutdown, after every client of w is closed: close w's auth_query connections. */
void authquery_close_all(struct worker *w);

#endif
