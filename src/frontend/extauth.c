/* Login checks on threads for askers on a worker (extauth.h): LDAP and PAM checks of a
 * password, and host-name lookups for hba_file. */
#include "frontend/extauth.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <netinet/in.h>

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
	struct extauth_check *next; /* a host-name lookup's other waiters */
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

/* A lookup in flight (queued or running) of one host's name, and the checks waiting for its
 * answer. A login that needs the name of a host already being looked up joins that lookup
 * instead of queueing its own: the clients of an application's pool that reconnect at once
 * from one host cost one DNS round trip and one thread, not one each (behind a slow DNS,
 * their own lookups would fill the threads and the queue, and refuse logins 53300). */
struct name_req {
	struct workq_item item;
	struct name_req *next;         /* names->flights, until the lookup is done */
	struct net_addr addr;
	struct hba_peer_name pn;       /* the answer */
	struct extauth_check *waiters; /* each gets the answer; linked by their next */
};

/* rt->names. mu guards flights and each flight's waiters; the queue's end callback never
 * takes it (submit takes mu, then the queue's lock inside workq_submit), and reads a flight's
 * waiters only once no submit can reach it: after its lookup took it off flights, or at the
 * stop (the workers gone). refs: the owner's, and one per flight not yet ended; the last one
 * out frees it (the owner's at the stop, or a lookup's left to its thread then). */
struct extauth_names {
	struct workq *q;
	pthread_mutex_t mu;
	struct name_req *flights;
	atomic_uint refs;
};

/* Test seam, from the environment at extauth_names_new (TUSK_TEST_NAME_LOOKUP_DELAY_MS): each
 * lookup waits that long first, as behind a slow DNS, to see logins go on beside it, clients
 * leave during it, and client_login_timeout end it. 0: none. */
static int lookup_delay_ms;

static void names_release(struct extauth_names *n)
{
	if (atomic_fetch_sub(&n->refs, 1) != 1)
		return;
	/* every flight ended: what is still listed was cancelled at the stop, never looked up */
	for (struct name_req *f = n->flights, *next; f; f = next) {
		next = f->next;
		free(f);
	}
	pthread_mutex_destroy(&n->mu);
	free(n);
}

/* The same host: the family and the address (not the port). */
static bool same_host(const struct net_addr *a, const struct net_addr *b)
{
	if (a->sa.ss_family != b->sa.ss_family)
		return false;
	if (a->sa.ss_family == AF_INET)
		return ((const struct sockaddr_in *)&a->sa)->sin_addr.s_addr ==
		       ((const struct sockaddr_in *)&b->sa)->sin_addr.s_addr;
	if (a->sa.ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)&a->sa, *y = (const struct sockaddr_in6 *)&b->sa;
		return !memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) && x->sin6_scope_id == y->sin6_scope_id;
	}
	return false;
}

static void name_work(void *ctx, int index, struct workq_item *it)
{
	struct extauth_names *n = ctx;
	struct name_req *f = (struct name_req *)it;
	(void)index;
	if (lookup_delay_ms > 0)
		nanosleep(&(struct timespec){ lookup_delay_ms / 1000, (long)(lookup_delay_ms % 1000) * 1000000L }, NULL);
	hba_peer_name_lookup(&f->addr, &f->pn);
	pthread_mutex_lock(&n->mu); /* done: no one joins it now */
	for (struct name_req **pp = &n->flights; *pp; pp = &(*pp)->next) {
		if (*pp == f) {
			*pp = f->next;
			break;
		}
	}
	pthread_mutex_unlock(&n->mu);
}

/* Under the queue's lock: the answer to each waiter's worker (a lookup cancelled at the stop:
 * no name), none for a queue given up at the stop (the workers are being freed). */
static void name_end(void *ctx, struct workq_item *it, enum workq_end how)
{
	struct extauth_names *n = ctx;
	struct name_req *f = (struct name_req *)it;
	for (struct extauth_check *k = f->waiters, *next; k; k = next) {
		next = k->next;
		if (how == WORKQ_DROPPED) {
			check_free(k);
			continue;
		}
		if (how == WORKQ_DONE)
			k->pn = f->pn;
		struct worker_msg *m = k->msg;
		k->msg = NULL;
		m->arg = k;
		worker_post(k->w, m);
	}
	f->waiters = NULL;
	if (how != WORKQ_CANCELLED) /* (a cancelled one is still listed: freed with n) */
		free(f);
	names_release(n);
}

int extauth_names_new(struct extauth_names **out)
{
	const char *t = getenv("TUSK_TEST_NAME_LOOKUP_DELAY_MS");
	lookup_delay_ms = t ? atoi(t) : 0;
	struct extauth_names *n = calloc(1, sizeof *n);
	if (!n)
		return -ENOMEM;
	pthread_mutex_init(&n->mu, NULL);
	atomic_init(&n->refs, 1);
	struct workq_def d = { .name = "tusk-names",
			       .max_threads = EXTAUTH_NAME_THREADS,
			       .queue_max = EXTAUTH_NAME_QUEUE_MAX,
			       .work = name_work,
			       .end = name_end,
			       .ctx = n };
	int rc = workq_new(&d, &n->q);
	if (rc < 0) {
		names_release(n);
		return rc;
	}
	*out = n;
	return 0;
}

void extauth_names_stop(struct extauth_names *n)
{
	if (!n)
		return;
	(void)workq_stop(n->q, EXTAUTH_NAME_STOP_WAIT_MS);
	names_release(n);
}

int extauth_name_submit(struct worker *w, const struct net_addr *peer, extauth_name_fn *done, void *arg,
			struct extauth_check **out)
{
	struct extauth_names *n = w->rt->names;
	struct extauth_check *k;
	struct name_req *f;
	int rc = 0;

	if (!n)
		return -ESHUTDOWN;
	if (!(k = check_new(w, arg)))
		return -ENOMEM;
	k->name_done = done;
	pthread_mutex_lock(&n->mu);
	for (f = n->flights; f && !same_host(&f->addr, peer); f = f->next)
		;
	if (f) {
		rc = 1; /* joins it */
	} else if (!(f = calloc(1, sizeof *f))) {
		rc = -ENOMEM;
	} else {
		f->addr = *peer;
		atomic_fetch_add(&n->refs, 1);
		if ((rc = workq_submit(n->q, &f->item)) < 0) {
			atomic_fetch_sub(&n->refs, 1); /* (the owner's stays) */
			free(f);
		} else {
			f->next = n->flights; /* (its lookup takes it off under mu: not before this) */
			n->flights = f;
		}
	}
	if (rc >= 0) {
		k->next = f->waiters;
		f->waiters = k;
	}
	pthread_mutex_unlock(&n->mu);
	if (rc < 0) {
		check_free(k);
		return rc;
	}
	*out = k;
	return rc;
}
