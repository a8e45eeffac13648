/* Who may use the kv's Redis listener (docs/kv.md, "The Redis protocol", AUTH): tusk's users as
 * a SQL client of database kv meets them: hba_file's first matching line or else the pool rule
 * of database kv and the user (none, or blocked: refused), then the secret in auth_file, else
 * the one auth_query fetches (frontend/authquery.h), or with methods ldap and pam the check of
 * their threads (auth/ldapauth.h, auth/pamauth.h). No I/O of its own, no state. */
#ifndef TUSK_KV_RESP_AUTH_H
#define TUSK_KV_RESP_AUTH_H

#include <stdbool.h>

#include "frontend/authquery.h"
#include "frontend/extauth.h"

struct net_addr;
struct tls_conn;
struct worker;

/* What a check needs of the connection. */
struct resp_auth_conn {
	struct worker *worker;       /* the connection's: auth_query runs on its loop */
	const struct net_addr *peer; /* hba_file's address */
	struct tls_conn *tls;        /* NULL: plaintext (hba's host, no certificate) */
	const char *cert_user;       /* verify-full: the certificate's CN, the only user; "": any */
	const struct hba_peer_name *name; /* the peer's host name once looked up, else NULL */
};

enum resp_auth_result {
	RESP_AUTH_REFUSED = 0,
	RESP_AUTH_OK = 1,
	RESP_AUTH_PENDING = 2, /* auth_query runs: done comes later, then resp_auth_fetched decides */
	RESP_AUTH_PENDING_EXT = 3, /* an LDAP or PAM check runs: ext_done comes later */
	RESP_AUTH_BUSY = 4,    /* refused without a check: too many LDAP or PAM checks wait already */
	RESP_AUTH_NEED_NAME = 5, /* hba_file's line for the user names a host and the name is not known:
				  * look it up (extauth_name_submit) and ask again with it */
};

/* Each LDAP wait's bound (ldapauth_submit: the whole check at most twice that). */
#define RESP_AUTH_LDAP_WAIT_MS 5000

/* Whether user is in without a password (OK): its method is trust, or cert with a verified
 * client certificate whose CN is user; else REFUSED, or NEED_NAME. */
enum resp_auth_result resp_auth_open(const struct resp_auth_conn *a, const char *user);

/* user's password pass: OK, REFUSED, NEED_NAME, or PENDING with *req set (for authquery_cancel) and
 * done(arg, result, secret) called later on the worker's loop; with method ldap or pam,
 * PENDING_EXT with *ext set (for extauth_cancel) and ext_done(ext_arg, rc, why) called later
 * on the worker's loop, rc 0 when the password is right, or BUSY. */
__attribute__((warn_unused_result))
enum resp_auth_result resp_auth_check(const struct resp_auth_conn *a, const char *user, const char *pass,
				      authquery_done_fn *done, void *arg, struct authq_req **req,
				      extauth_done_fn *ext_done, void *ext_arg, struct extauth_check **ext);

/* A PENDING check's answer (done's result and secret) against the password. */
bool resp_auth_fetched(int result, const char *secret, const char *user, const char *pass);

#endif
