/* LDAP client authentication, PostgreSQL's (auth-ldap.html): simple bind as prefix + user +
 * suffix, or search+bind (find the user's one entry under basedn, as binddn or anonymously,
 * then bind as it). libldap's calls block, so the checks run on a few threads of their own
 * (started at the first check), never on a worker's loop: a worker submits a check and its
 * done callback runs later on one of those threads, which the caller turns into a message to
 * its worker. Every wait is bounded (LDAP_OPT_NETWORK_TIMEOUT per server, LDAP_OPT_TIMEOUT
 * per operation, and the whole check by a watchdog), and so is the queue. */
#ifndef TUSK_AUTH_LDAPAUTH_H
#define TUSK_AUTH_LDAPAUTH_H

#include <stddef.h>

#include "config/ldap_options.h"

#define LDAPAUTH_THREADS 4      /* checks at once; more wait in the queue */
#define LDAPAUTH_QUEUE_MAX 256  /* checks waiting; past it a check is refused (-EAGAIN) */
#define LDAPAUTH_USER_MAX 256   /* bytes of a user name, NUL included */
#define LDAPAUTH_PASSWORD_MAX 1024
#define LDAPAUTH_WHY_MAX 256

struct ldapauth_pool;

/* On a pool thread, once per submitted check: rc 0 (the server took the password), -EACCES
 * (it did not, or the user is not one entry), -ETIMEDOUT, -EHOSTUNREACH (no server answered),
 * -EIO (another LDAP error), -EINVAL (a user name a search filter may not hold), -ECANCELED
 * (the pool stopped first). why says which, for the log: never the password. */
typedef void ldapauth_done_fn(void *arg, int rc, const char *why);

/* A pool of up to nthreads threads (started when the first check comes) and queue_max
 * waiting checks. 0 or -ENOMEM. */
__attribute__((warn_unused_result))
int ldapauth_pool_new(int nthreads, unsigned queue_max, struct ldapauth_pool **out);
/* Any thread: check user's password under o (copied: o may go away), each LDAP wait at
 * most timeout_ms, the whole check at most twice that (a watchdog thread shuts its connection
 * then: libldap bounds no TLS handshake). 0 (done(arg, ...) will run on a pool thread, never before this returns),
 * or -EAGAIN (the queue is full), -ENAMETOOLONG (user or password too long), -ENOMEM,
 * -ESHUTDOWN (stopped); then done never runs. */
__attribute__((warn_unused_result))
int ldapauth_submit(struct ldapauth_pool *p, const struct config_ldap *o, const char *user, const char *password,
		    int timeout_ms, ldapauth_done_fn *done, void *arg);
/* Checks submitted and not yet done (any thread). */
unsigned ldapauth_pending(struct ldapauth_pool *p);
/* Stop: the checks still queued get done(arg, -ECANCELED, ...), the running ones finish
 * (each bounded by its timeouts); join the threads, free. NULL: nothing. */
void ldapauth_pool_stop(struct ldapauth_pool *p);

/* The search filter for user under o: ldapsearchfilter with each $username replaced, else
 * (ATTR=user), ATTR ldapsearchattribute or uid. -EINVAL when user holds a character LDAP
 * filters give a meaning to (* ( ) \ /), which PostgreSQL refuses rather than escapes, or is
 * empty; -ENOSPC when out is too small; else the length. */
__attribute__((warn_unused_result))
int ldapauth_filter(const struct config_ldap *o, const char *user, char *out, size_t cap);
/* The URI list ldap_initialize takes: "SCHEME://HOST:PORT" for each ldapserver, blank-separated
 * (libldap tries them in turn). The length, or -ENOSPC. */
__attribute__((warn_unused_result))
int ldapauth_uris(const struct config_ldap *o, char *out, size_t cap);

#endif
