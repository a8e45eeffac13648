/* PAM checks on threads of their own (pamauth.h): a util/workq.h queue of up to PAMAUTH_THREADS
 * threads, each running one check at a time through libpam's blocking calls. Owns each check
 * until its done callback returns.
 *
 * libpam is opened with dlopen at the first check, not linked, as libldap is (ldapauth.c):
 * nothing mapped in a tusk that never checks a PAM login; libpam0g is Priority: required on
 * Debian, so it is there to open. Its header (libpam0g-dev) gives the types and names. */
#include "auth/pamauth.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/dl.h"
#include "util/workq.h"

#include <security/pam_appl.h>

#define PAM_LIBRARY "libpam.so.0"
#define PAM_FUNCTIONS(X) X(pam_start) X(pam_end) X(pam_set_item) X(pam_authenticate) X(pam_acct_mgmt) X(pam_strerror)

UTIL_DL_LIBRARY(PAM_FUNCTIONS, PAM_LIBRARY)

struct pamauth_req {
	struct workq_item item; /* first: the queue's */
	char service[PAMAUTH_SERVICE_MAX];
	char user[PAMAUTH_USER_MAX];
	char password[PAMAUTH_PASSWORD_MAX];
	struct sockaddr_storage peer;
	socklen_t peer_len;
	bool use_hostname;
	int rc;
	char why[PAMAUTH_WHY_MAX];
	pamauth_done_fn *done;
	void *arg;
};

_Static_assert(PAMAUTH_THREADS <= WORKQ_THREADS_MAX, "the queue runs that many threads");

struct pamauth_pool {
	struct workq *q;
};

int pamauth_rhost(const struct sockaddr *peer, socklen_t len, bool use_hostname, char *out, size_t cap)
{
	if (peer->sa_family == AF_UNIX) {
		int w = snprintf(out, cap, "[local]");
		return w < 0 || (size_t)w >= cap ? -EINVAL : w;
	}
	if (peer->sa_family != AF_INET && peer->sa_family != AF_INET6)
		return -EINVAL;
	/* PostgreSQL's: the name when the address has one, else the address (no NI_NAMEREQD). */
	if (getnameinfo(peer, len, out, (socklen_t)cap, NULL, 0, use_hostname ? 0 : NI_NUMERICHOST) != 0)
		return -EINVAL;
	return (int)strlen(out);
}

/* PAM's conversation: each prompt answered with the password (PAM frees the answers, so each
 * is malloc'd, as the PAM specification requires), informational messages ignored (PAM_SILENT
 * asks modules for none, and there is no one to show them to). */
static int conversation(int n, const struct pam_message **msg, struct pam_response **resp, void *arg)
{
	const char *password = arg;
	struct pam_response *r;

	*resp = NULL;
	if (n <= 0 || n > PAM_MAX_NUM_MSG)
		return PAM_CONV_ERR;
	r = calloc((size_t)n, sizeof *r);
	if (!r)
		return PAM_BUF_ERR;
	for (int i = 0; i < n; i++) {
		switch (msg[i]->msg_style) {
		case PAM_PROMPT_ECHO_OFF:
		case PAM_PROMPT_ECHO_ON:
			if (!(r[i].resp = strdup(password)))
				goto fail;
			break;
		case PAM_ERROR_MSG:
		case PAM_TEXT_INFO:
			break;
		default: /* binary prompts and the like: nothing tusk can answer */
			goto fail;
		}
	}
	*resp = r;
	return PAM_SUCCESS;
fail:
	for (int i = 0; i < n; i++) {
		if (r[i].resp) {
			explicit_bzero(r[i].resp, strlen(r[i].resp));
			free(r[i].resp);
		}
	}
	free(r);
	return PAM_CONV_ERR;
}

/* A PAM result as the errno pamauth_done_fn passes: a refusal of the password or the account
 * (-EACCES), or PAM not working (-EIO: a missing service file, module or library). */
static int errno_of(int prc)
{
	switch (prc) {
	case PAM_SUCCESS:
		return 0;
	case PAM_AUTH_ERR:
	case PAM_USER_UNKNOWN:
	case PAM_PERM_DENIED:
	case PAM_CRED_INSUFFICIENT:
	case PAM_MAXTRIES:
	case PAM_ACCT_EXPIRED:
	case PAM_NEW_AUTHTOK_REQD:
	case PAM_AUTHTOK_EXPIRED:
		return -EACCES;
	default:
		return -EIO;
	}
}

/* One check, start to end; why filled unless it succeeds. */
static int check(struct pamauth_req *r, char *why)
{
	struct pam_conv conv = { .conv = conversation, .appdata_ptr = r->password };
	char rhost[NI_MAXHOST];
	pam_handle_t *h = NULL;
	const char *step = "pam_start";
	int prc;

	pthread_once(&lib_once, lib_load);
	if (!lib_ok) {
		snprintf(why, PAMAUTH_WHY_MAX, "%s", lib_error);
		return -EIO;
	}
	if (pamauth_rhost((const struct sockaddr *)&r->peer, r->peer_len, r->use_hostname, rhost, sizeof rhost) < 0)
		rhost[0] = '\0';
	prc = lib.pam_start(r->service, r->user, &conv, &h);
	if (prc == PAM_SUCCESS && rhost[0]) {
		step = "pam_set_item(PAM_RHOST)";
		prc = lib.pam_set_item(h, PAM_RHOST, rhost);
	}
	if (prc == PAM_SUCCESS) {
		step = "pam_authenticate";
		prc = lib.pam_authenticate(h, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK);
	}
	if (prc == PAM_SUCCESS) {
		step = "pam_acct_mgmt";
		prc = lib.pam_acct_mgmt(h, PAM_SILENT);
	}
	/* A reason longer than why is cut short (a host name near 1 kB): the log line only. */
	if (prc != PAM_SUCCESS &&
	    snprintf(why, PAMAUTH_WHY_MAX, "%s failed (service \"%s\", PAM_RHOST \"%s\"): %s", step, r->service, rhost,
		     lib.pam_strerror(h, prc)) >= PAMAUTH_WHY_MAX)
		why[PAMAUTH_WHY_MAX - 1] = '\0';
	if (h)
		(void)lib.pam_end(h, prc);
	return errno_of(prc);
}

static void work(void *ctx, int index, struct workq_item *it)
{
	struct pamauth_req *r = (struct pamauth_req *)it;
	(void)ctx;
	(void)index;
	r->why[0] = '\0';
	r->rc = check(r, r->why);
}

/* Under the queue's lock: the answer (none for a check of a pool given up at the stop: the
 * workers it would go to are being freed), then the request, password and all, is wiped. */
static void end(void *ctx, struct workq_item *it, enum workq_end how)
{
	struct pamauth_req *r = (struct pamauth_req *)it;
	(void)ctx;
	if (how == WORKQ_DONE)
		r->done(r->arg, r->rc, r->why);
	else if (how == WORKQ_CANCELLED)
		r->done(r->arg, -ECANCELED, "tusk is stopping");
	explicit_bzero(r, sizeof *r);
	free(r);
}

int pamauth_pool_new(int nthreads, unsigned queue_max, struct pamauth_pool **out)
{
	struct pamauth_pool *p = calloc(1, sizeof *p);
	if (!p)
		return -ENOMEM;
	struct workq_def d = { .name = "tusk-pam",
			       .max_threads = nthreads > PAMAUTH_THREADS ? PAMAUTH_THREADS : nthreads,
			       .queue_max = queue_max,
			       .work = work,
			       .end = end };
	if (workq_new(&d, &p->q) < 0) {
		free(p);
		return -ENOMEM;
	}
	*out = p;
	return 0;
}

int pamauth_submit(struct pamauth_pool *p, const struct pamauth_check *k, pamauth_done_fn *done, void *arg)
{
	if (!k->service[0] || !k->user[0])
		return -EINVAL;
	if (strlen(k->service) >= PAMAUTH_SERVICE_MAX || strlen(k->user) >= PAMAUTH_USER_MAX ||
	    strlen(k->password) >= PAMAUTH_PASSWORD_MAX || k->peer_len > sizeof(struct sockaddr_storage))
		return -ENAMETOOLONG;
	struct pamauth_req *r = calloc(1, sizeof *r);
	if (!r)
		return -ENOMEM;
	memcpy(r->service, k->service, strlen(k->service) + 1);
	memcpy(r->user, k->user, strlen(k->user) + 1);
	memcpy(r->password, k->password, strlen(k->password) + 1);
	memcpy(&r->peer, k->peer, k->peer_len);
	r->peer_len = k->peer_len;
	r->use_hostname = k->use_hostname;
	r->done = done;
	r->arg = arg;
	int rc = workq_submit(p->q, &r->item);
	if (rc < 0) {
		explicit_bzero(r, sizeof *r);
		free(r);
	}
	return rc;
}

unsigned pamauth_pending(struct pamauth_pool *p)
{
	return workq_pending(p->q);
}

void pamauth_pool_stop(struct pamauth_pool *p)
{
	if (!p)
		return;
	/* false: a module holds a thread (PAM has no way to interrupt one); the queue is left to
	 * its threads, which free it as the last one leaves, if it ever does. */
	(void)workq_stop(p->q, PAMAUTH_STOP_WAIT_MS);
	free(p);
}
