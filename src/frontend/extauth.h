/* Login checks on threads of their own for any asker on a worker: a SQL client's login (auth.c,
 * client.c) and the kv's Redis listener's AUTH (kv/resp_front.c). Passwords checked by LDAP or
 * PAM (PostgreSQL's methods ldap and pam), and the client's host name looked up for hba_file's
 * host-name lines (auth/hba.h, hba_peer_name_lookup, on rt->names' threads).
 * The options are the hba_file line's, else the pool rule's (ldap_options, pam_service); the
 * check runs on rt->ldap's or rt->pam's threads (auth/ldapauth.h, auth/pamauth.h), and its
 * answer comes back to the asker's worker as a message. An asker that goes first cancels the
 * check, and the answer is dropped when it comes. */
#ifndef TUSK_FRONTEND_EXTAUTH_H
#define TUSK_FRONTEND_EXTAUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "auth/hba.h"
#include "auth/ldapauth.h"

struct net_addr;
struct worker;

/* What a check runs with: method pam's service, or method ldap's options. */
struct extauth_opts {
	bool is_pam;
	struct config_ldap ldap; /* ldap */
	struct hba_pam pam;      /* pam */
};

/* The options of method (CONFIG_AUTH_LDAP or CONFIG_AUTH_PAM) for hba_file's hit (zeroed
 * without hba_file; its ldap or pam, else) rule's, or the top-level ones; rule may be NULL.
 * 0, or -ENOENT when method ldap has no options (none on the line, no ldap_options), or
 * -EINVAL when the rule's do not parse (checked at load: cannot happen), with why in err. */
__attribute__((warn_unused_result))
int extauth_opts_of(const struct tusk_config *cfg, int method, const struct hba_hit *hit,
		    const struct config_pool_rule *rule, struct extauth_opts *out, char *err, size_t errlen);

/* On w's thread, once per check that extauth_submit took: rc 0 when the password is right,
 * else (ldapauth_done_fn's, pamauth_done_fn's codes) why says why, for the log. The check is
 * gone when it returns: the asker drops its pointer to it. */
typedef void extauth_done_fn(void *arg, int rc, const char *why);

struct extauth_check;

/* On w's thread: check user's password under o (copied), peer the client's address (PAM_RHOST),
 * each LDAP wait at most ldap_wait_ms. 0 with *out set: done(arg, ...) runs later on w's
 * thread, unless extauth_cancel(*out) comes first. Else done never runs: -EACCES (the empty
 * password, refused without a check: an LDAP server takes it as an unauthenticated bind, and
 * PostgreSQL refuses it for PAM too), -EAGAIN (too many checks wait), -ENAMETOOLONG or
 * -EINVAL (user name or password too long, or empty), -ENOMEM, -ESHUTDOWN. */
__attribute__((warn_unused_result))
int extauth_submit(struct worker *w, const struct extauth_opts *o, const char *user, const char *password,
		   const struct net_addr *peer, int ldap_wait_ms, extauth_done_fn *done, void *arg,
		   struct extauth_check **out);

/* On the check's worker, before its done ran: done never runs (the check's threads finish it,
 * and its answer is dropped on the worker). */
void extauth_cancel(struct extauth_check *k);

/* "LDAP" or "PAM", for messages. */
const char *extauth_name(const struct extauth_opts *o);

/* On w's thread, once per lookup extauth_name_submit took: pn the client's name (pn->name ""
 * when none was found, or when tusk is stopping). The lookup is gone when it returns. */
typedef void extauth_name_fn(void *arg, const struct hba_peer_name *pn);

/* On w's thread: look peer's host name up (hba_peer_name_lookup) on rt->names' threads; a
 * lookup of the same host's name already in flight is joined instead (its answer serves both).
 * 0 (a lookup of its own) or 1 (joined one) with *out set: done(arg, ...) runs later on w's
 * thread, unless extauth_cancel(*out) comes first. Else done never runs: -EAGAIN (too many
 * lookups wait), -ENOMEM, -ESHUTDOWN. */
__attribute__((warn_unused_result))
int extauth_name_submit(struct worker *w, const struct net_addr *peer, extauth_name_fn *done, void *arg,
			struct extauth_check **out);

#define EXTAUTH_NAME_THREADS 8     /* lookups at once (each may wait on DNS) */
#define EXTAUTH_NAME_QUEUE_MAX 256 /* lookups waiting (not those joined); past it a login is refused (-EAGAIN) */
#define EXTAUTH_NAME_STOP_WAIT_MS 2000 /* extauth_names_stop's wait for running lookups */

struct extauth_names;
/* The lookups' threads and the lookups in flight (rt->names; no thread until the first
 * lookup): made before the workers. */
__attribute__((warn_unused_result))
int extauth_names_new(struct extauth_names **out);
/* After the workers stopped: queued lookups answered as failed, running ones waited for up to
 * EXTAUTH_NAME_STOP_WAIT_MS (then left to their threads, their answers dropped; the last one
 * frees what is left). NULL: nothing. */
void extauth_names_stop(struct extauth_names *n);

#endif
