/* Login checks on threads for askers on a worker (extauth.h): LDAP and PAM checks of a
 * password, and host-name lookups for hba_file. */
#include "frontend/extauth.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "auth/pamauth.h"
#include "config/config.h"
#include "net/net.h"
#include "runtime/runtime.h"
#include "util/workq.h"
#include "worker/worker.h"

_Static_assert(LDAPAUTH_WHY_MAX == PAMAUTH_WHY_MAX, "one why buffer serves both");
_Static_assert(LDAPAUTH_PASSWORD_MAX == PAMAUTH_PASSWORD_MAX, "one password bound serves both");
_Static_assert(HBA_PAM_SERVICE_MAX == PAMAUTH_SERVICE_MAX, "an hba_file pamservice fits a check");

/* One check in flight, from its submit until back runs on the worker. done (or name_done) is
 * cleared by extauth_cancel (on the worker), and the answer is then dropped. */
struct extauth_check {
	extauth_done_fn *done;
	extauth_name_fn *name_done; /* a host-name lookup's */
	void *arg;
	struct hba_peer_name pn;    /* a host-name lookup's answer */
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
	extauth_name_fn *name_done = k->name_done;
	(void)w;

	k->done = NULL; /* (a cancel from inside done is harmless) */
	k->name_done = NULL;
	if (done)
		done(k->arg, k->rc, k->why);
	else if (name_done)
		name_done(k->arg, &k->pn);
	OPENSSL_cleanse(k, sizeof *k);
	free(k);
}

/* A check of w's for arg, its message made first: a check's thread may answer as soon as it is
 * submitted, and its post must not fail. NULL: out of memory. */
static struct extauth_check *check_new(struct worker *w, void *arg)
{
	struct extauth_check *k = calloc(1, sizeof *k);
	if (!k || !(k->msg = worker_msg_new())) {
		free(k);
		return NULL;
	}
	k->arg = arg;
	k->w = w;
	k->msg->fn = back;
	return k;
}

/* A check that was never submitted. */
static void check_free(struct extauth_check *k)
{
	free(k->msg);
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
	if (!(k = check_new(w, arg)))
		return -ENOMEM;
	k->done = done;
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
		check_free(k);
		return rc;
	}
	*out = k;
	return 0;
}

void extauth_cancel(struct extauth_check *k)
{
	k->done = NULL;
	k->name_done = NULL;
	k->arg = NULL;
}

/* ---- host names ---- */

/* A lookup on rt->names: its address, and the check it answers (posted back by end). */
struct name_req {
	struct workq_item item;
	struct net_addr addr;
	struct extauth_check *k;
};

/* Test seam, from the environment at extauth_names_new (TUSK_TEST_NAME_LOOKUP_DELAY_MS): each
 * lookup waits that long first, as behind a slow DNS, to see logins go on beside it, clients
 * leave during it, and client_login_timeout end it. 0: none. */
static int lookup_delay_ms;

static void name_work(void *ctx, int index, struct workq_item *it)
{
	struct name_req *r = (struct name_req *)it;
	(void)ctx;
	(void)index;
	if (lookup_delay_ms > 0)
		nanosleep(&(struct timespec){ lookup_delay_ms / 1000, (long)(lookup_delay_ms % 1000) * 1000000L }, NULL);
	hba_peer_name_lookup(&r->addr, &r->k->pn);
}

/* Under the queue's lock: the answer to the asker's worker (a cancelled lookup: no name), none
 * for a queue given up at the stop (the workers are being freed). */
static void name_end(void *ctx, struct workq_item *it, enum workq_end how)
{
	struct name_req *r = (struct name_req *)it;
	(void)ctx;
	if (how == WORKQ_CANCELLED)
		memset(&r->k->pn, 0, sizeof r->k->pn);
	if (how != WORKQ_DROPPED) {
		struct worker_msg *m = r->k->msg;
		r->k->msg = NULL;
		m->arg = r->k;
		worker_post(r->k->w, m);
	}
	free(r);
}

int extauth_names_new(struct workq **out)
{
	const char *t = getenv("TUSK_TEST_NAME_LOOKUP_DELAY_MS");
	lookup_delay_ms = t ? atoi(t) : 0;
	struct workq_def d = { .name = "tusk-names",
			       .max_threads = EXTAUTH_NAME_THREADS,
			       .queue_max = EXTAUTH_NAME_QUEUE_MAX,
			       .work = name_work,
			       .end = name_end };
	return workq_new(&d, out);
}

void extauth_names_stop(struct workq *q)
{
	(void)workq_stop(q, EXTAUTH_NAME_STOP_WAIT_MS);
}

int extauth_name_submit(struct worker *w, const struct net_addr *peer, extauth_name_fn *done, void *arg,
			struct extauth_check **out)
{
	struct name_req *r = calloc(1, sizeof *r);
	struct extauth_check *k = r ? check_new(w, arg) : NULL;
	if (!k) {
		free(r);
		return -ENOMEM;
	}
	k->name_done = done;
	r->addr = *peer;
	r->k = k;
	int rc = w->rt->names ? workq_submit(w->rt->names, &r->item) : -ESHUTDOWN;
	if (rc < 0) {
		check_free(k);
		free(r);
		return rc;
	}
	*out = k;
	return 0;
}
