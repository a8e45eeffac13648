/* Client authentication: after the startup packet and before a server is sought. The method
 * comes from hba_file (first matching line) or else the pool rule's client_auth; secrets
 * come from auth_file. An unknown user goes through the same exchange as a known one and
 * fails the same way (28P01), so logins cannot be used to enumerate users. What the
 * exchange reveals (the cleartext, the stored md5 hash, or the ClientKey recovered from a
 * SCRAM proof) is kept in c->cred, so tusk can log in to the server as the client when the
 * rule has no server_password. A user absent from auth_file, under a rule with an
 * auth_user, gets its secret from auth_query first (authquery.c); the exchange is the same.
 * ldap (an hba_file line's options, or the rule's ldap_options) asks for the cleartext
 * password and hands it to the LDAP threads (auth/ldapauth.h), pam (an hba_file line's
 * pamservice, or the rule's pam_service) to the PAM threads (auth/pamauth.h); their answer
 * comes back to the client's worker as a message, and a client gone meanwhile is never touched
 * (extauth.h). An hba_file line whose address is a host name needs the client's name, looked up
 * the same way after the startup packet and before the kind's startup (client_auth_wait_name). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "auth/hba.h"
#include "auth/ldapauth.h"
#include "auth/pamauth.h"
#include "auth/scram.h"
#include "auth/scram_server.h"
#include "auth/userlist.h"
#include "frontend/authquery.h"
#include "frontend/extauth.h"
#include "frontend/client_int.h"
#include "frontend/client_kind.h"
#include "frontend/replication.h"
#include "pool/server.h"
#include "proto/proto.h"
#include "runtime/runtime.h"
#include "util/log.h"
#include "worker/worker.h"

#define AUTH_MSG_MAX 8192 /* largest password or SASL message accepted */

enum auth_step {
	AUTH_WAIT_PASSWORD, /* cleartext */
	AUTH_WAIT_MD5,
	AUTH_WAIT_SASL_INITIAL,
	AUTH_WAIT_SASL_FINAL,
};

struct client_auth {
	enum auth_step step;
	uint8_t salt[4];
	const struct userlist_entry *entry; /* NULL: unknown user */
	bool plus;                          /* SCRAM-SHA-256-PLUS offered (the client is on TLS) */
	struct scram_server scram;
	/* auth_query (authquery.c): the method waiting for the secret, the request in flight,
	 * and the fetched secret that entry then points to. */
	int method;
	struct authq_req *fetch;
	struct userlist_entry fetched;
	char fetched_secret[AUTHCACHE_SECRET_MAX];
	struct ext_login *ext; /* methods ldap and pam; NULL otherwise */
};

/* Method ldap or pam: the options, the check in flight, the password while it runs (kept for
 * the server login after a success). */
struct ext_login {
	struct extauth_opts o;
	struct extauth_check *check;
	char password[LDAPAUTH_PASSWORD_MAX];
};

/* What a password message did (handle_message): authenticated; more of the exchange to come
 * (c asked for it, or a check runs); or c failed, and may be freed already (client_fail and
 * client_close free a client whose socket is gone), so the caller must not touch it. */
enum { AUTH_GONE = -1, AUTH_MORE = 0, AUTH_DONE = 1 };

/* A method's refusal (enum config_auth), in PostgreSQL's words and SQLSTATE; why goes to the
 * log only. */
static void method_failed(struct client *c, int method, const char *why)
{
	const char *words = "authentication";
	switch (method) {
	case CONFIG_AUTH_PASSWORD:
	case CONFIG_AUTH_MD5:
	case CONFIG_AUTH_SCRAM:
		log_info(c->id, c->ctx, "password authentication failed: %s", why);
		client_fail(c, "28P01", "password authentication failed for user \"%s\"", c->user);
		return;
	case CONFIG_AUTH_LDAP: words = "LDAP authentication"; break;
	case CONFIG_AUTH_PAM: words = "PAM authentication"; break;
	case CONFIG_AUTH_TRUST: words = "\"trust\" authentication"; break;
	case CONFIG_AUTH_CERT: words = "certificate authentication"; break;
	case CONFIG_AUTH_PEER: words = "Peer authentication"; break;
	}
	log_info(c->id, c->ctx, "%s failed: %s", words, why);
	client_fail(c, "28000", "%s failed for user \"%s\"", words, c->user);
}

static void auth_failed(struct client *c)
{
	method_failed(c, CONFIG_AUTH_PASSWORD, "no such user, or the password does not match");
}

static int send_request(struct client *c, uint32_t code, const void *data, size_t len)
{
	if (proto_put_auth_request(&c->wbuf, code, data, len) < 0 || client_write_wbuf(c) < 0)
		return -1;
	client_update_io(c);
	return 0;
}

static void start_scram(struct client *c)
{
	struct client_auth *a = c->auth;
	struct scram_verifier v;
	int iterations = c->worker->rt->cfg->scram_iterations;
	int rc;

	if (a->entry && a->entry->kind == USERLIST_SCRAM)
		rc = scram_verifier_parse(&v, a->entry->secret, strlen(a->entry->secret));
	else if (a->entry && a->entry->kind == USERLIST_PLAIN && a->entry->secret[0])
		rc = scram_verifier_from_password(&v, a->entry->secret, iterations);
	else if ((rc = scram_verifier_mock(&v, c->user)) == 0) /* unknown user, or only an md5 hash */
		v.iterations = iterations; /* as a plaintext secret's: no tell */
	/* On TLS the binding is the hash of tusk's certificate, and -PLUS is offered first. */
	uint8_t cb[64];
	int cblen = c->tls.conn ? tls_server_end_point(c->tls.conn, cb) : -1;
	if (rc < 0 || scram_server_init(&a->scram, &v, cblen > 0 ? cb : NULL, cblen > 0 ? (size_t)cblen : 0) < 0) {
		client_fail(c, "XX000", "could not start SCRAM authentication");
		return;
	}
	static const char mechs[] = "SCRAM-SHA-256\0";
	static const char mechs_plus[] = "SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0";
	a->step = AUTH_WAIT_SASL_INITIAL;
	a->plus = cblen > 0;
	if (send_request(c, PROTO_AUTH_SASL, a->plus ? mechs_plus : mechs, a->plus ? sizeof mechs_plus : sizeof mechs) < 0)
		client_close(c, "write to client failed");
}

static void start_exchange(struct client *c, int method);

/* cert and peer: may system_user (CN, SO_PEERCRED user) log in as c->user? With no map (or no
 * hba_file: a rule's client_auth), when the names are equal; with the hba_file line's map,
 * when a line of it in ident_file admits it. A refusal is logged, as PostgreSQL logs it. */
static bool admitted(struct client *c, const struct hba *hba, const char *map, const char *system_user)
{
	int line;
	if (!map) {
		if (strcmp(system_user, c->user) == 0)
			return true;
		log_info(c->id, c->ctx, "%s authentication failed: the system user \"%s\" is another",
			 c->peer.sa.sa_family == AF_UNIX ? "peer" : "certificate", system_user);
		return false;
	}
	if (hba_map_admits(hba, map, system_user, c->user, &line)) {
		log_debug(c->id, c->ctx, "user name map \"%s\": ident_file line %d admits \"%s\"", map, line, system_user);
		return true;
	}
	log_info(c->id, c->ctx, "no match in usermap \"%s\" for user \"%s\" authenticated as \"%s\"", map, c->user,
		 system_user);
	return false;
}
static void use_fetched(struct client *c, int result);
static void auth_fetched(void *arg, int result, const char *secret);

bool client_auth_cert_name_ok(struct client *c)
{
	int wrong = c->cert_name_wrong;

	if (!wrong)
		return true;
	c->cert_name_wrong = 0;
	log_info(c->id, c->ctx, "certificate validation (clientcert=verify-full) failed for user \"%s\": %s mismatch",
		 c->user, wrong == 2 ? "DN" : "CN");
	method_failed(c, c->cert_name_method, "clientcert=verify-full");
	return false;
}

/* ---- ldap and pam: checks on threads of their own (extauth.h) ---- */

/* The options of method ldap or pam: the hba_file line's (hit), else the rule's ldap_options
 * (checked at load, so they parse) or pam_service (or the top-level one). 0, or -1 when the
 * client was failed. */
static int ext_login_begin(struct client *c, int method, const struct hba_hit *hit, const struct config_pool_rule *rule)
{
	char err[256];
	struct ext_login *l = calloc(1, sizeof *l);
	if (!l) {
		client_fail(c, "53200", "out of memory");
		return -1;
	}
	c->auth->ext = l;
	int rc = extauth_opts_of(c->worker->rt->cfg, method, hit, rule, &l->o, err, sizeof err);
	if (rc < 0) {
		if (rc == -EINVAL)
			log_warn(c->id, c->ctx, "ldap_options: %s", err); /* cannot happen: checked at load */
		client_fail(c, "28000", "LDAP authentication is not configured for user \"%s\"", c->user);
		return -1;
	}
	return 0;
}

static void ext_login_free(struct ext_login *l)
{
	if (l->check)
		extauth_cancel(l->check); /* the answer is dropped when it comes */
	OPENSSL_cleanse(l, sizeof *l);
	free(l);
}

/* PostgreSQL's refusal for methods ldap and pam (28000, its own words, not password's 28P01);
 * the reason only to the log. */
static void ext_failed(struct client *c, const char *why)
{
	method_failed(c, c->auth->ext && c->auth->ext->o.is_pam ? CONFIG_AUTH_PAM : CONFIG_AUTH_LDAP, why);
}

static void keep_cred_plain(struct client *c, const char *password);

/* On the client's worker: the LDAP server's or PAM's answer (a client gone first cancelled it). */
static void ext_answered(void *arg, int rc, const char *why)
{
	struct client *c = arg;
	struct ext_login *l = c->auth->ext;

	l->check = NULL;
	/* Not in CLIENT_AUTH: failed meanwhile (login timeout), its teardown follows. */
	if (c->state != CLIENT_AUTH)
		return;
	if (rc == 0) {
		log_debug(c->id, c->ctx, "%s authentication succeeded", extauth_name(&l->o));
		keep_cred_plain(c, l->password);
		client_auth_free_state(c);
		client_after_auth(c);
	} else {
		ext_failed(c, why);
	}
}

/* Each LDAP wait's bound: a third of what is left of client_login_timeout, at most 5 s, at
 * least 0.2 s; the whole check ends within twice that (ldapauth.h), so before the client's
 * login time does, and the client hears why. (A PAM check has no such bound of its own: the
 * login time ends it, client_auth_timed_out.) */
static int ldap_timeout_ms(const struct client *c)
{
	double left = c->connect_time + (double)c->worker->rt->cfg->client_login_timeout_ms / 1000.0 -
		      ev_now(c->worker->loop);
	double ms = left * 1000.0 / 3.0;
	return ms > 5000.0 ? 5000 : ms < 200.0 ? 200 : (int)ms;
}

/* The password message of methods ldap and pam: hand it to their threads. Never true at once. */
static int ext_check_password(struct client *c, const char *password)
{
	struct ext_login *l = c->auth->ext;
	const char *name = extauth_name(&l->o);
	struct net_addr peer;

	if (strlen(password) >= sizeof l->password) {
		ext_failed(c, "password too long");
		return AUTH_GONE;
	}
	memcpy(l->password, password, strlen(password) + 1); /* for the server login after a success */
	client_peer(c, &peer);
	int rc = extauth_submit(c->worker, &l->o, c->user, password, &peer, ldap_timeout_ms(c), ext_answered, c,
				&l->check);
	if (rc == 0)
		return AUTH_MORE;
	if (rc == -EACCES)
		ext_failed(c, "empty password");
	else if (rc == -EAGAIN)
		client_fail(c, "53300", "too many %s logins waiting (%d); try again", name,
			    l->o.is_pam ? PAMAUTH_QUEUE_MAX : LDAPAUTH_QUEUE_MAX);
	else if (rc == -ENAMETOOLONG || rc == -EINVAL)
		ext_failed(c, "user name or password too long");
	else
		client_fail(c, "53200", "could not start %s authentication: %s", name, strerror(-rc));
	return AUTH_GONE;
}

bool client_auth_timed_out(struct client *c)
{
	if (c->state != CLIENT_AUTH || !c->auth || !c->auth->ext || !c->auth->ext->o.is_pam || !c->auth->ext->check)
		return false;
	ext_failed(c, "the PAM check did not end within client_login_timeout (its thread runs on: PAM cannot "
		      "interrupt a module)");
	return true;
}

/* ---- end ldap and pam ---- */

/* ---- host names (hba_file lines that name a host): looked up before the kind's startup ---- */

struct client_name {
	struct extauth_check *lookup; /* running; NULL once answered */
	struct hba_peer_name pn;
};

static enum hba_conn conn_of(const struct client *c)
{
	return c->peer.sa.sa_family == AF_UNIX ? HBA_LOCAL : c->tls.conn ? HBA_HOST_TLS : HBA_HOST_PLAIN;
}

/* hba's first line for c: pn its name, or NULL (not looked up). */
static enum hba_result match_client(struct client *c, const struct hba *hba, const struct hba_peer_name *pn,
				    struct hba_hit *hit)
{
	struct net_addr peer;
	enum hba_conn conn = conn_of(c);
	client_peer(c, &peer);
	const struct net_addr *from = conn == HBA_LOCAL ? NULL : &peer;
	return repl_is_physical(c) ? hba_match_physical(hba, conn, c->user, from, pn, hit)
				   : hba_match(hba, conn, c->database, c->user, from, pn, hit);
}

static void name_answered(void *arg, const struct hba_peer_name *pn)
{
	struct client *c = arg;
	c->name->lookup = NULL;
	c->name->pn = *pn;
	log_debug(c->id, c->ctx, "host name for hba_file: \"%s\"%s", pn->name,
		  !pn->name[0] ? " (none)" : pn->verified ? "" : " (its addresses do not include the client's)");
	if (c->state == CLIENT_STARTUP)
		c->kind->startup(c);
}

bool client_auth_wait_name(struct client *c)
{
	const struct hba *hba = c->worker->rt->hba;
	struct hba_hit hit;
	struct net_addr peer;

	if (c->name || conn_of(c) == HBA_LOCAL || !hba_has_names(hba) ||
	    match_client(c, hba, NULL, &hit) != HBA_NEED_NAME)
		return false;
	if (!(c->name = calloc(1, sizeof *c->name))) {
		client_fail(c, "53200", "out of memory");
		return true;
	}
	client_peer(c, &peer);
	int rc = extauth_name_submit(c->worker, &peer, name_answered, c, &c->name->lookup);
	if (rc >= 0)
		log_debug(c->id, c->ctx, "hba_file needs the client's host name: %s",
			  rc ? "joined the lookup of this address in flight" : "looking it up");
	if (rc == -EAGAIN)
		client_fail(c, "53300", "too many host-name lookups waiting (%d); try again", EXTAUTH_NAME_QUEUE_MAX);
	else if (rc < 0)
		client_fail(c, "53200", "could not look up the client's host name: %s", strerror(-rc));
	return true;
}

bool client_auth_name_pending(const struct client *c)
{
	return c->name && c->name->lookup;
}

static void free_name(struct client *c)
{
	if (c->name) {
		if (c->name->lookup)
			extauth_cancel(c->name->lookup);
		free(c->name);
		c->name = NULL;
	}
}

bool client_auth_begin(struct client *c, int rule_method, const struct config_pool_rule *authq_rule,
		       const char *authq_db)
{
	struct runtime *rt = c->worker->rt;
	int method = rule_method;
	const struct hba *hba = rt->hba; /* one load: the map below is this hba's */
	struct hba_hit hit = { 0 };       /* without hba_file: no map, no clientcert, no options */

	if (hba) {
		/* (a host name: looked up before, client_auth_wait_name; a reload since that added a
		 * host-name line ahead finds none, and the line does not match) */
		enum hba_result r = match_client(c, hba, c->name ? &c->name->pn : &hba_no_name, &hit);
		free_name(c);
		if (r != HBA_MATCH && repl_is_physical(c)) {
			client_fail(c, "28000", "no hba_file line matches a replication connection for user \"%s\" from this address",
				    c->user);
			return false;
		} else if (r != HBA_MATCH) {
			client_fail(c, "28000", "no hba_file line matches user \"%s\", database \"%s\" from this address",
				    c->user, c->database);
			return false;
		}
		method = hba_config_auth(hit.method);
		log_debug(c->id, c->ctx, "hba_file line %d: %s%s%s", hit.line, hba_method_name(hit.method),
			  hit.map ? " map=" : "", hit.map ? hit.map : "");
	}
	/* clientcert= (hostssl lines; the cert method's is verify-full): a certificate the
	 * listener's CA verified first, before the method asks anything, in PostgreSQL's words. */
	char cn[CONFIG_NAME_MAX]; /* the CN, or the DN with clientname=DN */
	int cert = -ENOENT;
	if (c->tls.conn && (hit.clientcert != HBA_CLIENTCERT_OFF || method == CONFIG_AUTH_CERT))
		cert = tls_peer_name(c->tls.conn, hit.clientname_dn, cn, sizeof cn);
	if (hit.clientcert != HBA_CLIENTCERT_OFF && cert == -ENOTSUP) {
		log_warn(c->id, c->ctx, "hba_file line with clientcert=, but this listener has no tls_ca_file");
		client_fail(c, "F0000", "client certificates can only be checked if a root certificate store is available");
		return false;
	}
	if (hit.clientcert != HBA_CLIENTCERT_OFF && (cert == -ENOENT || cert == -ENOMEM)) {
		client_fail(c, "28000", "connection requires a valid client certificate");
		return false;
	}
	if (hit.clientcert == HBA_CLIENTCERT_FULL && method != CONFIG_AUTH_CERT &&
	    (cert < 0 || strcmp(cn, c->user) != 0)) {
		c->cert_name_wrong = hit.clientname_dn ? 2 : 1; /* refused once the method has succeeded */
		c->cert_name_method = (uint8_t)method;
	}
	if (method == CONFIG_AUTH_TRUST) /* succeeded: the name now (callers that begin at once */
		return client_auth_cert_name_ok(c); /* skip client_after_auth: the console, kv) */
	if (method == CONFIG_AUTH_CERT) {
		/* A certificate the listener's CA verified, whose CN (or DN) is the user name, or
		 * which the line's user name map admits as it (PostgreSQL's cert method). Without
		 * hba_file (a rule's client_auth: cert) the listener must have verified one. */
		if (cert < 0) {
			method_failed(c, method, !c->tls.conn ? "not on TLS" : cert == -EINVAL ? "the certificate names no user" : "no verified client certificate");
			return false;
		}
		if (!admitted(c, hba, hit.map, cn)) {
			method_failed(c, method, "the certificate's name is not admitted (above)");
			return false;
		}
		return true;
	}
	if (method == CONFIG_AUTH_PEER) {
		/* PostgreSQL's peer method: on a Unix socket, the system user at the other end
		 * (SO_PEERCRED) is the user name, or the line's user name map admits it as it. */
		char os_user[CONFIG_NAME_MAX];
		int err = c->peer.sa.sa_family == AF_UNIX ? net_peer_user(c->fd, os_user, sizeof os_user) : -EPROTOTYPE;
		if (err < 0) {
			method_failed(c, method, err == -EPROTOTYPE ? "not on a Unix socket" : strerror(-err));
			return false;
		}
		if (!admitted(c, hba, hit.map, os_user)) {
			method_failed(c, method, "the system user is not admitted (above)");
			return false;
		}
		return true;
	}
	if (method == CONFIG_AUTH_REJECT) {
		client_fail(c, "28000", "connection rejected for user \"%s\", database \"%s\"", c->user, c->database);
		return false;
	}

	struct client_auth *a = calloc(1, sizeof *a);
	if (!a) {
		client_fail(c, "53200", "out of memory");
		return false;
	}
	c->auth = a;
	a->entry = rt->users ? userlist_find(rt->users, c->user) : NULL;
	client_set_state(c, CLIENT_AUTH);
	if (method == CONFIG_AUTH_LDAP || method == CONFIG_AUTH_PAM) {
		if (ext_login_begin(c, method, &hit, authq_rule) == 0)
			start_exchange(c, method);
		return false;
	}
	/* ---- auth_query: not in auth_file, so ask the server (or the cache) first. Admin
	 * console clients have no rule, hence no auth_user: auth_file only. ---- */
	if (!a->entry && authq_rule && authq_db && config_auth_user(rt->cfg, authq_rule)) {
		a->method = method;
		int r = authquery_fetch(c->worker, authq_rule, authq_db, c->user, a->fetched_secret, auth_fetched, c,
					&a->fetch);
		if (r == AUTHQ_PENDING)
			return false; /* auth_fetched goes on */
		if (r < 0) {
			client_fail(c, "53200", "out of memory");
			return false;
		}
		use_fetched(c, r);
	}
	/* ---- end auth_query ---- */
	start_exchange(c, method);
	return false;
}

/* Ask the client for its password, md5 hash or SCRAM proof, by method. */
static void start_exchange(struct client *c, int method)
{
	struct client_auth *a = c->auth;

	switch (method) {
	case CONFIG_AUTH_PASSWORD:
	case CONFIG_AUTH_LDAP:
	case CONFIG_AUTH_PAM:
		a->step = AUTH_WAIT_PASSWORD;
		if (send_request(c, PROTO_AUTH_CLEARTEXT, NULL, 0) < 0)
			client_close(c, "write to client failed");
		break;
	case CONFIG_AUTH_MD5:
		/* As PostgreSQL: a SCRAM secret cannot answer md5, so SCRAM is asked instead. */
		if (a->entry && a->entry->kind == USERLIST_SCRAM) {
			start_scram(c);
			break;
		}
		if (RAND_bytes(a->salt, sizeof a->salt) != 1) {
			client_fail(c, "58000", "could not generate a salt");
			break;
		}
		a->step = AUTH_WAIT_MD5;
		if (send_request(c, PROTO_AUTH_MD5, a->salt, sizeof a->salt) < 0)
			client_close(c, "write to client failed");
		break;
	default:
		start_scram(c);
		break;
	}
}

/* ---- auth_query (authquery.c) ---- */

/* The fetched secret becomes the entry the exchange checks against; a malformed one is
 * treated as no secret (the login fails like a wrong password). */
static void use_fetched(struct client *c, int result)
{
	struct client_auth *a = c->auth;

	if (result != AUTHQ_SECRET)
		return;
	if (userlist_parse_secret(a->fetched_secret, &a->fetched) < 0) {
		log_warn(c->id, c->ctx, "auth_query returned a malformed md5 or SCRAM secret; treating it as none");
		return;
	}
	a->fetched.user = c->user;
	a->fetched.secret = a->fetched_secret;
	a->entry = &a->fetched;
}

/* The answer to an AUTHQ_PENDING fetch. */
static void auth_fetched(void *arg, int result, const char *secret)
{
	struct client *c = arg;
	struct client_auth *a = c->auth;

	a->fetch = NULL;
	if (c->state != CLIENT_AUTH)
		return; /* failed meanwhile (login timeout); teardown follows */
	if (result < 0) {
		client_fail(c, "28000", "could not look up the password of user \"%s\" (auth_query failed)", c->user);
		return;
	}
	if (result == AUTHQ_SECRET)
		memcpy(a->fetched_secret, secret, strlen(secret) + 1);
	use_fetched(c, result);
	start_exchange(c, a->method);
}

/* ---- end auth_query ---- */

void client_auth_free(struct client *c)
{
	free_name(c);
	client_auth_free_state(c);
	if (c->cred) {
		OPENSSL_cleanse(c->cred, sizeof *c->cred);
		free(c->cred);
		c->cred = NULL;
	}
}

/* The credentials to keep, allocated only for a client whose authentication reveals some
 * (a trusted client's struct stays small); NULL on ENOMEM: then none are kept and a
 * passthrough login fails as it would without them. */
static struct server_cred *cred_for(struct client *c)
{
	if (!c->cred)
		c->cred = calloc(1, sizeof *c->cred);
	return c->cred;
}

/* Cleartext password against the stored secret of whatever kind. */
static bool check_cleartext(struct client *c, const char *password)
{
	return c->auth->entry && userlist_password_matches(c->auth->entry, c->user, password);
}

static void keep_cred_plain(struct client *c, const char *password)
{
	struct server_cred *cred;
	if (strlen(password) < sizeof cred->secret && (cred = cred_for(c))) {
		cred->kind = SERVER_CRED_PLAIN;
		memcpy(cred->secret, password, strlen(password) + 1);
	}
}

static void keep_cred_md5(struct client *c)
{
	const struct userlist_entry *e = c->auth->entry;
	struct server_cred *cred;
	if (e->kind == USERLIST_MD5 && strlen(e->secret) < sizeof cred->secret) {
		if ((cred = cred_for(c))) {
			cred->kind = SERVER_CRED_MD5;
			memcpy(cred->secret, e->secret, strlen(e->secret) + 1);
		}
	} else if (e->kind == USERLIST_PLAIN) {
		keep_cred_plain(c, e->secret);
	}
}

/* One complete 'p' message. Returns true when authentication succeeded. */
static int handle_message(struct client *c, const uint8_t *body, size_t len)
{
	struct client_auth *a = c->auth;
	char out[SCRAM_MSG_MAX];
	int n;

	switch (a->step) {
	case AUTH_WAIT_PASSWORD: {
		if (len == 0 || body[len - 1] != 0) {
			client_fail(c, "08P01", "invalid password message");
			return AUTH_GONE;
		}
		if (a->ext)
			return ext_check_password(c, (const char *)body);
		if (!check_cleartext(c, (const char *)body)) {
			auth_failed(c);
			return AUTH_GONE;
		}
		keep_cred_plain(c, (const char *)body);
		return AUTH_DONE;
	}
	case AUTH_WAIT_MD5:
		if (len == 0 || body[len - 1] != 0) {
			client_fail(c, "08P01", "invalid password message");
			return AUTH_GONE;
		}
		if (!a->entry || !a->entry->secret[0] || !auth_md5_verify(c->user, a->entry->secret, a->salt, (const char *)body)) {
			auth_failed(c);
			return AUTH_GONE;
		}
		keep_cred_md5(c);
		return AUTH_DONE;
	case AUTH_WAIT_SASL_INITIAL: {
		struct proto_reader r;
		proto_reader_init(&r, body, len);
		const char *mech = proto_get_cstr(&r);
		uint32_t dlen = proto_get_u32(&r);
		const uint8_t *data = r.err || dlen == 0xffffffffu ? NULL : proto_get_bytes(&r, dlen);
		if (r.err || !data || !mech) {
			client_fail(c, "08P01", "invalid SASLInitialResponse");
			return AUTH_GONE;
		}
		bool plus = strcmp(mech, "SCRAM-SHA-256-PLUS") == 0;
		if (!(plus && a->plus) && strcmp(mech, "SCRAM-SHA-256") != 0) {
			client_fail(c, "28000", "SASL mechanism %s is not supported", mech);
			return AUTH_GONE;
		}
		/* The mechanism and the GS2 header must agree: -PLUS binds ("p="), the other not. */
		if (plus != (dlen >= 2 && data[0] == 'p' && data[1] == '=')) {
			client_fail(c, "08P01", "SCRAM channel binding does not match the mechanism %s", mech);
			return AUTH_GONE;
		}
		n = scram_server_first(&a->scram, (const char *)data, dlen, out, sizeof out);
		if (n < 0) {
			client_fail(c, "08P01", "invalid SCRAM client-first-message");
			return AUTH_GONE;
		}
		a->step = AUTH_WAIT_SASL_FINAL;
		if (send_request(c, PROTO_AUTH_SASL_CONTINUE, out, (size_t)n) < 0) {
			client_close(c, "write to client failed");
			return AUTH_GONE;
		}
		return AUTH_MORE;
	}
	case AUTH_WAIT_SASL_FINAL:
		n = scram_server_final(&a->scram, (const char *)body, len, out, sizeof out);
		if (n == -EPERM) {
			auth_failed(c);
			return AUTH_GONE;
		}
		if (n < 0) {
			client_fail(c, "08P01", "invalid SCRAM client-final-message");
			return AUTH_GONE;
		}
		if (proto_put_auth_request(&c->wbuf, PROTO_AUTH_SASL_FINAL, out, (size_t)n) < 0) {
			client_fail(c, "54000", "SCRAM reply too large");
			return AUTH_GONE;
		}
		struct server_cred *cred;
		if (a->entry && a->entry->kind == USERLIST_SCRAM && (cred = cred_for(c)) &&
		    scram_server_client_key(&a->scram, cred->client_key) == 0) {
			cred->kind = SERVER_CRED_SCRAM;
			memcpy(cred->server_key, a->entry->server_key, sizeof cred->server_key);
			memcpy(cred->salt, a->entry->salt, a->entry->salt_len);
			cred->salt_len = a->entry->salt_len;
			cred->iterations = a->entry->iterations;
		} else if (a->entry && a->entry->kind == USERLIST_PLAIN) {
			keep_cred_plain(c, a->entry->secret);
		}
		return AUTH_DONE;
	}
	client_fail(c, "08P01", "unexpected password message"); /* (every step is a case above) */
	return AUTH_GONE;
}

int client_auth_input(struct client *c)
{
	for (;;) {
		if (c->auth->fetch)
			return 0; /* nothing was asked yet: auth_query is running (bytes wait) */
		if (c->auth->ext && c->auth->ext->check)
			return 0; /* the LDAP or PAM check runs: what follows waits for its answer */
		struct proto_hdr h;
		ssize_t r = proto_read_hdr(buf_head(&c->rbuf), buf_len(&c->rbuf), AUTH_MSG_MAX, &h);
		if (r == 0)
			return 0;
		if (r == PROTO_ETOOLONG && buf_head(&c->rbuf)[0] == 'p') {
			client_fail(c, "08P01", "password message longer than %d bytes", AUTH_MSG_MAX);
			return -1;
		}
		if (r < 0 || h.type != 'p') {
			client_fail(c, "08P01", "expected a password message during authentication");
			return -1;
		}
		size_t total = (size_t)h.len + 1;
		if (buf_len(&c->rbuf) < total)
			return 0;
		const uint8_t *body = buf_head(&c->rbuf) + PROTO_HDR_LEN;
		buf_consume(&c->rbuf, total); /* bytes stay valid until the next read */
		int rc = handle_message(c, body, total - PROTO_HDR_LEN);
		if (rc == AUTH_DONE) {
			client_auth_free_state(c);
			return 1;
		}
		if (rc == AUTH_GONE)
			return -1; /* failed: c may be freed already (client_fail closes a client gone) */
	}
}

void client_auth_free_state(struct client *c)
{
	if (c->auth) {
		if (c->auth->fetch)
			authquery_cancel(c->auth->fetch);
		if (c->auth->ext)
			ext_login_free(c->auth->ext);
		scram_server_clear(&c->auth->scram);
		OPENSSL_cleanse(c->auth, sizeof *c->auth);
		free(c->auth);
		c->auth = NULL;
	}
}
