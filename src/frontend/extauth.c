/* LDAP and PAM checks for askers on a worker (extauth.h). */
#include "frontend/extauth.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "auth/pamauth.h"
#include "config/config.h"
#include "net/net.h"
#include "runtime/runtime.h"
#include "worker/worker.h"

_Static_assert(LDAPAUTH_WHY_MAX == PAMAUTH_WHY_MAX, "one why buffer serves both");
_Static_assert(LDAPAUTH_PASSWORD_MAX == PAMAUTH_PASSWORD_MAX, "one password bound serves both");
_Static_assert(HBA_PAM_SERVICE_MAX == PAMAUTH_SERVICE_MAX, "an hba_file pamservice fits a check");

/* One check in flight, from its submit until back runs on the worker. done is cleared by
 * extauth_cancel (on the worker), and the answer is then dropped. */
struct extauth_check {
	extauth_done_fn *done;
	void *arg;
	struct worker *w;
	struct worker_msg *msg; /* made before the submit: the check's thread posts it, which cannot fail */
	int rc;
	char why[LDAPAUTH_WHY_MAX];
};

int extauth_opts_of(const struct tusk_config *cfg, int method, const struct hba_hit *hit,
		    const struct config_pool_rule *rule, struct extauth_opts *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof *out);
	if (method == CONFIG_AUTH_PAM) {
		out->is_pam = true;
		if (hit->pam) /* (a config key of at most 127 bytes: it fits) */
			out->pam = *hit->pam;
		else
			snprintf(out->pam.service, sizeof out->pam.service, "%s", config_pam_service(cfg, rule));
		return 0;
	}
	if (hit->ldap) {
		out->ldap = *hit->ldap;
		return 0;
	}
	const char *s = config_ldap_options(cfg, rule);
	if (!s) {
		snprintf(err, errlen, "no ldap_options");
		return -ENOENT;
	}
	return config_ldap_parse(s, &out->ldap, err, errlen) < 0 ? -EINVAL : 0;
}

const char *extauth_name(const struct extauth_opts *o)
{
	return o->is_pam ? "PAM" : "LDAP";
}

/* On an LDAP or PAM thread: the answer to the check's worker. */
static void on_thread(void *arg, int rc, const char *why)
{
	struct extauth_check *k = arg;
	struct worker_msg *m = k->msg;

	k->rc = rc;
	snprintf(k->why, sizeof k->why, "%s", why ? why : "");
	k->msg = NULL;
	m->arg = k;
	worker_post(k->w, m);
}

/* On the worker: to the asker, unless it cancelled. */
static void back(struct worker *w, struct worker_msg *m)
{
	struct extauth_check *k = m->arg;
	extauth_done_fn *done = k->done;
	(void)w;

	k->done = NULL; /* (a cancel from inside done is harmless) */
	if (done)
		done(k->arg, k->rc, k->why);
	OPENSSL_cleanse(k, sizeof *k);
	free(k);
}

int extauth_submit(struct worker *w, const struct extauth_opts *o, const char *user, const char *password,
		   const struct net_addr *peer, int ldap_wait_ms, extauth_done_fn *done, void *arg,
		   struct extauth_check **out)
{
	struct extauth_check *k;
	int rc;

	if (!password[0])
		return -EACCES;
	if (strlen(password) >= LDAPAUTH_PASSWORD_MAX)
		return -ENAMETOOLONG;
	/* Made first: a check's thread may answer as soon as it is submitted. */
	k = calloc(1, sizeof *k);
	if (!k || !(k->msg = worker_msg_new())) {
		free(k);
		return -ENOMEM;
	}
	k->done = done;
	k->arg = arg;
	k->w = w;
	k->msg->fn = back;
	if (o->is_pam) {
		struct pamauth_check pk = { .service = o->pam.service,
					    .user = user,
					    .password = password,
					    .peer = (const struct sockaddr *)&peer->sa,
					    .peer_len = peer->len,
					    .use_hostname = o->pam.use_hostname };
		rc = pamauth_submit(w->rt->pam, &pk, on_thread, k);
	} else {
		rc = ldapauth_submit(w->rt->ldap, &o->ldap, user, password, ldap_wait_ms, on_thread, k);
	}
	if (rc < 0) {
		free(k->msg);
		free(k);
		return rc;
	}
	*out = k;
	return 0;
}

void extauth_cancel(struct extauth_check *k)
{
	k->done = NULL;
	k->arg = NULL;
}
