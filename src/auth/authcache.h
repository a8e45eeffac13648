/* auth_query results, shared by every worker: (service, database, user) -> the secret the
 * server returned, or "no such user", each until an expiry. Bounded in size; when full, a
 * random entry goes (expired ones first where the probe finds them). */
#ifndef TUSK_AUTH_AUTHCACHE_H
#define TUSK_AUTH_AUTHCACHE_H

#include <stdbool.h>
#include <stddef.h>

#define AUTHCACHE_SECRET_MAX 1024 /* longer secrets are not cached (nor accepted by authquery) */
#define AUTHCACHE_NAME_MAX 64

struct authcache; /* opaque; thread-safe */

/* A cache of at most max_entries. NULL on allocation failure. */
struct authcache *authcache_new(size_t max_entries);
/* Wipes the secrets, then frees. */
void authcache_free(struct authcache *ac);

enum authcache_result {
	AUTHCACHE_MISS,    /* nothing, or expired */
	AUTHCACHE_SECRET,  /* secret copied to out */
	AUTHCACHE_NO_USER, /* the query found no such user (or no password) */
};
/* Look up at time now (seconds, any clock shared by every caller). */
enum authcache_result authcache_get(struct authcache *ac, const char *service, const char *database,
				    const char *user, double now, char out[AUTHCACHE_SECRET_MAX]);
/* Remember secret (NULL: no such user) until expires. 0, -ENAMETOOLONG, -EMSGSIZE (secret
 * too long) or -ENOMEM; an existing entry is replaced. */
__attribute__((warn_unused_result))
int authcache_put(struct authcache *ac, const char *service, const char *database, const char *user,
		  const char *secret, double expires);
/* Entries held now (tests). */
size_t authcache_count(struct authcache *ac);

#endif
