/* The Redis listener's AUTH against tusk's users (resp_auth.h). */
#include "kv/resp_auth.h"

#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include <openssl/crypto.h>

#include "auth/hba.h"
#include "auth/userlist.h"
#include "config/config.h"
#include "frontend/extauth.h"
#include "net/tls.h"
#include "runtime/runtime.h"
#include "worker/worker.h"

/* A hostssl line's clientcert=: a certificate the listener's CA verified, and with verify-full
 * its CN (or DN, clientname=DN) the user's, as for SQL clients (where the name is compared
 * after the password; a refusal is a refusal either way). */
static bool cert_admits(const struct resp_auth_conn *a, enum hba_clientcert cc, bool dn, int method, const char *user)
{
	char name[64];
	int rc = a->tls ? tls_peer_name(a->tls, dn, name, sizeof name) : -ENOENT;

	if (cc == HBA_CLIENTCERT_OFF)
		return true;
	if (cc == HBA_CLIENTCERT_CA || method == CONFIG_AUTH_CERT) /* cert compares in without_password */
		return rc == 0 || rc == -EINVAL;
	return rc == 0 && strcmp(name, user) == 0;
}

#define RESP_METHOD_NEED_NAME (-1) /* method_of: hba_match's HBA_NEED_NAME */

/* How user logs in: hba_file's first matching line (database kv, hostssl by the connection's
 * TLS; *hit what it says, zeroed without hba_file), else the pool rule's client_auth; *rule
 * the rule (auth_query's, ldap_options', pam_service's), NULL when refused. */
static int method_of(const struct resp_auth_conn *a, const struct runtime_gen *g, const char *user,
		     const struct config_pool_rule **rule, struct hba_hit *hit)
{
	*hit = (struct hba_hit){ 0 };
	*rule = config_match_pool(g->cfg, "kv", user);
	if (*rule && (*rule)->blocked)
		*rule = NULL;
	if (!*rule)
		return CONFIG_AUTH_REJECT;
	if (!g->hba)
		return (*rule)->client_auth;
	enum hba_result r = hba_match(g->hba, a->tls ? HBA_HOST_TLS : HBA_HOST_PLAIN, "kv", user, a->peer, a->name, hit);
	if (r == HBA_NEED_NAME)
		return RESP_METHOD_NEED_NAME;
	if (r != HBA_MATCH)
		return CONFIG_AUTH_REJECT;
	/* peer is never matched: local lines only, and RESP is TCP */
	int method = hba_config_auth(hit->method);
	return cert_admits(a, hit->clientcert, hit->clientname_dn, method, user) ? method : CONFIG_AUTH_REJECT;
}

static const struct runtime_gen *gen_of(const struct resp_auth_conn *a)
{
	return atomic_load_explicit(&a->worker->rt->gen, memory_order_acquire);
}

/* cert: the certificate's CN (or DN) is user, or the hba_file line's map admits it as user. */
static bool without_password(const struct resp_auth_conn *a, const struct runtime_gen *g, int method,
			     const char *map, bool dn, const char *user)
{
	char cn[64];
	int line;
	if (method == CONFIG_AUTH_TRUST)
		return true;
	return method == CONFIG_AUTH_CERT && a->tls && tls_peer_name(a->tls, dn, cn, sizeof cn) == 0 &&
	       hba_map_admits(g->hba, map, cn, user, &line);
}

enum resp_auth_result resp_auth_open(const struct resp_auth_conn *a, const char *user)
{
	const struct runtime_gen *g = gen_of(a);
	const struct config_pool_rule *rule;
	struct hba_hit hit;
	int method = method_of(a, g, user, &rule, &hit);
	if (method == RESP_METHOD_NEED_NAME)
		return RESP_AUTH_NEED_NAME;
	return without_password(a, g, method, hit.map, hit.clientname_dn, user) ? RESP_AUTH_OK : RESP_AUTH_REFUSED;
}

bool resp_auth_fetched(int result, const char *secret, const char *user, const char *pass)
{
	struct userlist_entry e = { 0 };
	if (result != AUTHQ_SECRET || userlist_parse_secret(secret, &e) < 0)
		return false;
	e.user = (char *)user;
	e.secret = (char *)secret;
	bool ok = userlist_password_matches(&e, user, pass);
	OPENSSL_cleanse(&e, sizeof e);
	return ok;
}

/* LDAP or PAM (PostgreSQL's methods, as for SQL clients): the password handed to their threads
 * (frontend/extauth.h: the hba_file line's options, else the rule's). */
static enum resp_auth_result ext_check(const struct resp_auth_conn *a, const struct runtime_gen *g,
				       const struct config_pool_rule *rule, const struct hba_hit *hit, int method,
				       const char *user, const char *pass, extauth_done_fn *ext_done, void *ext_arg,
				       struct extauth_check **ext)
{
	struct extauth_opts o;
	char err[256];
	if (extauth_opts_of(g->cfg, method, hit, rule, &o, err, sizeof err) < 0)
		return RESP_AUTH_REFUSED;
	int rc = extauth_submit(a->worker, &o, user, pass, a->peer, RESP_AUTH_LDAP_WAIT_MS, ext_done, ext_arg, ext);
	return rc == 0 ? RESP_AUTH_PENDING_EXT : rc == -EAGAIN ? RESP_AUTH_BUSY : RESP_AUTH_REFUSED;
}

enum resp_auth_result resp_auth_check(const struct resp_auth_conn *a, const char *user, const char *pass,
				      authquery_done_fn *done, void *arg, struct authq_req **req,
				      extauth_done_fn *ext_done, void *ext_arg, struct extauth_check **ext)
{
	const struct runtime_gen *g = gen_of(a);
	const struct config_pool_rule *rule;
	struct hba_hit hit;
	int method = method_of(a, g, user, &rule, &hit);

	if (method == RESP_METHOD_NEED_NAME)
		return RESP_AUTH_NEED_NAME;
	if (a->cert_user[0] && strcmp(user, a->cert_user) != 0)
		return RESP_AUTH_REFUSED; /* verify-full: the certificate's CN is the only user */
	if (without_password(a, g, method, hit.map, hit.clientname_dn, user))
		return RESP_AUTH_OK;
	if (method == CONFIG_AUTH_LDAP || method == CONFIG_AUTH_PAM)
		return ext_check(a, g, rule, &hit, method, user, pass, ext_done, ext_arg, ext);
	if (method != CONFIG_AUTH_PASSWORD && method != CONFIG_AUTH_MD5 && method != CONFIG_AUTH_SCRAM)
		return RESP_AUTH_REFUSED;
	const struct userlist_entry *e = g->users ? userlist_find(g->users, user) : NULL;
	if (e || !config_auth_user(g->cfg, rule))
		return e && userlist_password_matches(e, user, pass) ? RESP_AUTH_OK : RESP_AUTH_REFUSED;
	/* Not in auth_file, under a rule with an auth_user: auth_query. kv is no database of the
	 * server's: the query runs in the rule's server_database, else in postgres. */
	char secret[AUTHCACHE_SECRET_MAX];
	int r = authquery_fetch(a->worker, rule, rule->server_database ? rule->server_database : "postgres", user,
				secret, done, arg, req);
	if (r == AUTHQ_PENDING)
		return RESP_AUTH_PENDING;
	bool ok = r > 0 && resp_auth_fetched(r, secret, user, pass);
	OPENSSL_cleanse(secret, sizeof secret);
	return ok ? RESP_AUTH_OK : RESP_AUTH_REFUSED;
}
