/* LDAP checks on threads of their own (ldapauth.h): a util/workq.h queue of up to
 * LDAPAUTH_THREADS threads, each running one check at a time with libldap's synchronous calls
 * under PostgreSQL's rules, and a watchdog thread that shuts a check's connection past its
 * deadline. Owns each check until its done callback returns.
 *
 * libldap is opened with dlopen at the first check, not linked: it brings GnuTLS, SASL and
 * p11-kit, ~2.7 MB of RSS in every tusk, used or not (as libpq, pq/pq.c). Only its header is
 * needed to build; a tusk without the library refuses LDAP logins and says why in the log. */
#define LDAP_DEPRECATED 0
#include "auth/ldapauth.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>

#include <ldap.h>

#include "util/dl.h"
#include "util/workq.h"

/* The library the header describes: its soname changed with 2.6. */
#if LDAP_VENDOR_VERSION_MAJOR == 2 && LDAP_VENDOR_VERSION_MINOR < 6
#define LDAP_LIBRARY "libldap-2." LDAP_STR(LDAP_VENDOR_VERSION_MINOR) ".so.0"
#else
#define LDAP_LIBRARY "libldap.so.2"
#endif
#define LDAP_STR(x) LDAP_STR2(x)
#define LDAP_STR2(x) #x

#define LDAP_FUNCTIONS(X)                                                                                  \
	X(ldap_initialize) X(ldap_set_option) X(ldap_sasl_bind_s) X(ldap_search_ext_s) X(ldap_count_entries) \
	X(ldap_first_entry) X(ldap_get_dn) X(ldap_memfree) X(ldap_msgfree) X(ldap_unbind_ext_s)              \
	X(ldap_start_tls_s) X(ldap_err2string) X(ber_sockbuf_ctrl)

UTIL_DL_LIBRARY(LDAP_FUNCTIONS, LDAP_LIBRARY)

struct ldapauth_req {
	struct workq_item item; /* first: the queue's */
	struct config_ldap o;
	char user[LDAPAUTH_USER_MAX];
	char password[LDAPAUTH_PASSWORD_MAX];
	int timeout_ms;
	int rc;
	char why[LDAPAUTH_WHY_MAX];
	ldapauth_done_fn *done;
	void *arg;
};

struct ldapauth_pool;

/* What the watchdog knows of the check on one queue thread (by its index), under the pool's
 * lock. */
struct ldapauth_thread {
	struct ldapauth_pool *p;
	int fd;                   /* the connection libldap has open for the check, or -1 */
	struct timespec deadline; /* CLOCK_MONOTONIC: the check's end, connections shut after it */
	bool busy;
};

_Static_assert(LDAPAUTH_THREADS <= WORKQ_THREADS_MAX, "one watchdog slot per queue thread");

struct ldapauth_pool {
	struct workq *q;    /* the checks and their threads (util/workq.h) */
	pthread_mutex_t mu; /* protects everything below */
	pthread_cond_t wd_cv; /* CLOCK_MONOTONIC: the watchdog's sleep, cut short at the stop */
	bool stopping;
	bool wd_started, wd_stop;
	pthread_t watchdog;
	struct ldapauth_thread threads[LDAPAUTH_THREADS];
};

static void work(void *ctx, int index, struct workq_item *it);
static void end(void *ctx, struct workq_item *it, enum workq_end how);

int ldapauth_pool_new(int nthreads, unsigned queue_max, struct ldapauth_pool **out)
{
	struct ldapauth_pool *p = calloc(1, sizeof *p);
	if (!p)
		return -ENOMEM;
	if (pthread_mutex_init(&p->mu, NULL) != 0) {
		free(p);
		return -ENOMEM;
	}
	pthread_condattr_t ca;
	if (pthread_condattr_init(&ca) != 0) {
		pthread_mutex_destroy(&p->mu);
		free(p);
		return -ENOMEM;
	}
	(void)pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	int rc = pthread_cond_init(&p->wd_cv, &ca);
	pthread_condattr_destroy(&ca);
	struct workq_def d = { .name = "tusk-ldap",
			       .max_threads = nthreads > LDAPAUTH_THREADS ? LDAPAUTH_THREADS : nthreads,
			       .queue_max = queue_max,
			       .work = work,
			       .end = end,
			       .ctx = p };
	if (rc != 0 || workq_new(&d, &p->q) < 0) {
		pthread_mutex_destroy(&p->mu);
		free(p);
		return -ENOMEM; /* (a cv that did init is not worth a label: nothing to undo on Linux) */
	}
	for (int i = 0; i < LDAPAUTH_THREADS; i++) {
		p->threads[i].p = p;
		p->threads[i].fd = -1;
	}
	*out = p;
	return 0;
}

static bool special(char ch)
{
	return ch == '*' || ch == '(' || ch == ')' || ch == '\\' || ch == '/';
}

int ldapauth_filter(const struct config_ldap *o, const char *user, char *out, size_t cap)
{
	size_t n = 0, ulen = strlen(user);
	int w;

	if (ulen == 0)
		return -EINVAL;
	for (const char *u = user; *u; u++)
		if (special(*u))
			return -EINVAL;
	if (!o->searchfilter[0]) {
		w = snprintf(out, cap, "(%s=%s)", o->searchattribute[0] ? o->searchattribute : "uid", user);
		return w < 0 || (size_t)w >= cap ? -ENOSPC : w;
	}
	for (const char *f = o->searchfilter; *f;) {
		const char *piece = f;
		size_t len = 1;
		if (strncmp(f, "$username", 9) == 0) {
			piece = user;
			len = ulen;
			f += 9;
		} else {
			f++;
		}
		if (n + len >= cap)
			return -ENOSPC;
		memcpy(out + n, piece, len);
		n += len;
	}
	out[n] = '\0';
	return (int)n;
}

int ldapauth_uris(const struct config_ldap *o, char *out, size_t cap)
{
	const char *scheme = o->ldaps ? "ldaps" : "ldap";
	int port = o->port ? o->port : o->ldaps ? 636 : 389;
	size_t n = 0;

	for (const char *h = o->server; *h;) {
		size_t len = strcspn(h, " ");
		int w = snprintf(out + n, cap - n, "%s%s://%.*s:%d", n ? " " : "", scheme, (int)len, h, port);
		if (w < 0 || (size_t)w >= cap - n)
			return -ENOSPC;
		n += (size_t)w;
		h += len;
		while (*h == ' ')
			h++;
	}
	if (n == 0)
		return -ENOSPC;
	return (int)n;
}

/* An LDAP result code as the errno ldapauth_done_fn passes. */
static int errno_of(int lrc)
{
	switch (lrc) {
	case LDAP_SUCCESS:
		return 0;
	case LDAP_INVALID_CREDENTIALS:
	case LDAP_INAPPROPRIATE_AUTH:
	case LDAP_UNWILLING_TO_PERFORM:
	case LDAP_INSUFFICIENT_ACCESS:
		return -EACCES;
	case LDAP_TIMEOUT:
	case LDAP_TIMELIMIT_EXCEEDED:
		return -ETIMEDOUT;
	case LDAP_SERVER_DOWN:
	case LDAP_CONNECT_ERROR:
		return -EHOSTUNREACH;
	default:
		return -EIO;
	}
}

static int simple_bind(LDAP *ld, const char *dn, const char *password)
{
	struct berval cred = { .bv_len = strlen(password), .bv_val = (char *)password };
	return lib.ldap_sasl_bind_s(ld, dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
}

static int fail(char *why, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *why, int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, LDAPAUTH_WHY_MAX, fmt, ap);
	va_end(ap);
	return rc;
}

/* search+bind's first half: the DN of user's one entry, into dn. */
static int find_dn(LDAP *ld, const struct ldapauth_req *r, const char *filter, char *dn, size_t cap, char *why)
{
	static const int scopes[] = { [CONFIG_LDAP_SCOPE_BASE] = LDAP_SCOPE_BASE,
				      [CONFIG_LDAP_SCOPE_ONE] = LDAP_SCOPE_ONELEVEL,
				      [CONFIG_LDAP_SCOPE_SUB] = LDAP_SCOPE_SUBTREE };
	char *attrs[] = { (char *)LDAP_NO_ATTRS, NULL }; /* "1.1": the DNs only */
	struct timeval tv = { .tv_sec = r->timeout_ms / 1000, .tv_usec = (r->timeout_ms % 1000) * 1000 };
	LDAPMessage *res = NULL;
	int lrc;

	/* As binddn, or anonymously (an empty DN and password). */
	lrc = simple_bind(ld, r->o.binddn[0] ? r->o.binddn : "", r->o.bindpasswd);
	if (lrc != LDAP_SUCCESS) {
		int e = errno_of(lrc);
		return fail(why, e == -EACCES ? -EIO : e, "could not perform initial LDAP bind for ldapbinddn \"%s\" on "
					       "server \"%s\": %s",
			    r->o.binddn, r->o.server, lib.ldap_err2string(lrc));
	}
	lrc = lib.ldap_search_ext_s(ld, r->o.basedn, scopes[r->o.scope], filter, attrs, 0, NULL, NULL, &tv, 0, &res);
	if (lrc != LDAP_SUCCESS) {
		lib.ldap_msgfree(res);
		return fail(why, errno_of(lrc) == -EACCES ? -EIO : errno_of(lrc),
			    "could not search LDAP for filter \"%s\" on server \"%s\": %s", filter, r->o.server,
			    lib.ldap_err2string(lrc));
	}
	int count = lib.ldap_count_entries(ld, res);
	if (count != 1) {
		lib.ldap_msgfree(res);
		return fail(why, -EACCES, count == 0 ? "LDAP user \"%s\" does not exist (filter \"%s\", server \"%s\")"
							: "LDAP user \"%s\" is not unique (filter \"%s\", server \"%s\")",
			    r->user, filter, r->o.server);
	}
	char *found = lib.ldap_get_dn(ld, lib.ldap_first_entry(ld, res));
	lib.ldap_msgfree(res);
	if (!found)
		return fail(why, -EIO, "could not get the DN of LDAP user \"%s\"", r->user);
	int w = snprintf(dn, cap, "%s", found);
	lib.ldap_memfree(found);
	if (w < 0 || (size_t)w >= cap)
		return fail(why, -EIO, "the DN of LDAP user \"%s\" is too long", r->user);
	return 0;
}

/* Each connection libldap opens for a check, once connected, and closes: the watchdog's to shut
 * when the check's deadline passes. LDAP_OPT_NETWORK_TIMEOUT bounds the connect and
 * LDAP_OPT_TIMEOUT each operation's wait, but libldap 2.5 bounds no TLS handshake (ldaps, or
 * StartTLS once the server agreed): on its blocking socket a server that never answers held
 * the thread for good (test_ldap_auth). shutdown() ends the blocked read; the check fails. */
static int on_connect(LDAP *ld, Sockbuf *sb, LDAPURLDesc *srv, struct sockaddr *addr, struct ldap_conncb *ctx)
{
	struct ldapauth_thread *t = ctx->lc_arg;
	ber_socket_t fd;
	(void)ld;
	(void)srv;
	(void)addr;
	if (lib.ber_sockbuf_ctrl(sb, LBER_SB_OPT_GET_FD, &fd) == 1) {
		pthread_mutex_lock(&t->p->mu);
		t->fd = fd;
		pthread_mutex_unlock(&t->p->mu);
	}
	return 0;
}

/* Before libldap closes it: the number may be another file's once closed. */
static void on_disconnect(LDAP *ld, Sockbuf *sb, struct ldap_conncb *ctx)
{
	struct ldapauth_thread *t = ctx->lc_arg;
	(void)ld;
	(void)sb;
	pthread_mutex_lock(&t->p->mu);
	t->fd = -1;
	pthread_mutex_unlock(&t->p->mu);
}

/* One check, start to end; why filled unless it succeeds. */
static int check(struct ldapauth_thread *t, const struct ldapauth_req *r, char *why)
{
	char uris[CONFIG_LDAP_STR_MAX * 2], filter[CONFIG_LDAP_STR_MAX + LDAPAUTH_USER_MAX], dn[1024];
	struct timeval tv = { .tv_sec = r->timeout_ms / 1000, .tv_usec = (r->timeout_ms % 1000) * 1000 };
	int version = LDAP_VERSION3, lrc, rc;
	struct ldap_conncb cb = { .lc_add = on_connect, .lc_del = on_disconnect, .lc_arg = t };
	LDAP *ld = NULL;

	if (!r->password[0]) /* an empty password would be an unauthenticated bind, which succeeds */
		return fail(why, -EACCES, "empty password");
	if (r->o.search && ldapauth_filter(&r->o, r->user, filter, sizeof filter) < 0)
		return fail(why, -EINVAL, "invalid character in user name for LDAP authentication");
	if (!r->o.search) {
		int w = snprintf(dn, sizeof dn, "%s%s%s", r->o.prefix, r->user, r->o.suffix);
		if (w < 0 || (size_t)w >= sizeof dn)
			return fail(why, -EINVAL, "the DN of user \"%s\" is too long", r->user);
	}
	if (ldapauth_uris(&r->o, uris, sizeof uris) < 0)
		return fail(why, -EIO, "ldapserver list too long");
	pthread_once(&lib_once, lib_load);
	if (!lib_ok)
		return fail(why, -EIO, "%s", lib_error);
	lrc = lib.ldap_initialize(&ld, uris);
	if (lrc != LDAP_SUCCESS)
		return fail(why, -EIO, "could not initialize LDAP for \"%s\": %s", uris, lib.ldap_err2string(lrc));
	if ((lrc = lib.ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &version)) != LDAP_OPT_SUCCESS ||
	    (lrc = lib.ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &tv)) != LDAP_OPT_SUCCESS ||
	    (lrc = lib.ldap_set_option(ld, LDAP_OPT_TIMEOUT, &tv)) != LDAP_OPT_SUCCESS ||
	    (lrc = lib.ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF)) != LDAP_OPT_SUCCESS ||
	    (lrc = lib.ldap_set_option(ld, LDAP_OPT_CONNECT_CB, &cb)) != LDAP_OPT_SUCCESS) {
		rc = fail(why, -EIO, "could not set LDAP options: %s", lib.ldap_err2string(lrc));
		goto out;
	}
	if (r->o.starttls && (lrc = lib.ldap_start_tls_s(ld, NULL, NULL)) != LDAP_SUCCESS) {
		rc = fail(why, errno_of(lrc) == -EACCES ? -EIO : errno_of(lrc), "could not start LDAP TLS session on \"%s\": %s",
			  uris, lib.ldap_err2string(lrc));
		goto out;
	}
	if (r->o.search && (rc = find_dn(ld, r, filter, dn, sizeof dn, why)) < 0)
		goto out;
	lrc = simple_bind(ld, dn, r->password);
	rc = errno_of(lrc);
	if (rc < 0)
		fail(why, rc, "LDAP login failed for user \"%s\" (DN \"%s\") on server \"%s\": %s", r->user, dn, r->o.server,
		     lib.ldap_err2string(lrc));
out:
	lib.ldap_unbind_ext_s(ld, NULL, NULL);
	return rc;
}

/* A check is a connect and up to four waits (StartTLS, two binds, a search), each bounded by
 * the timeout; the whole check by twice it (then its connection is shut), which the caller
 * keeps inside the client's login time. */
#define LDAPAUTH_WAITS 2

static void add_ms(struct timespec *ts, long ms)
{
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* On a queue thread: one check, its deadline the watchdog's to enforce. */
static void work(void *ctx, int index, struct workq_item *it)
{
	struct ldapauth_pool *p = ctx;
	struct ldapauth_thread *t = &p->threads[index];
	struct ldapauth_req *r = (struct ldapauth_req *)it;

	pthread_mutex_lock(&p->mu);
	clock_gettime(CLOCK_MONOTONIC, &t->deadline);
	add_ms(&t->deadline, (long)r->timeout_ms * LDAPAUTH_WAITS);
	t->fd = -1;
	t->busy = true;
	pthread_cond_signal(&p->wd_cv); /* the watchdog sleeps while no check runs */
	pthread_mutex_unlock(&p->mu);
	r->why[0] = '\0';
	r->rc = check(t, r, r->why);
	pthread_mutex_lock(&p->mu);
	t->busy = false;
	t->fd = -1;
	pthread_mutex_unlock(&p->mu);
}

/* Under the queue's lock: the answer, then the request (password, bindpasswd) wiped. The
 * queue is never given up (ldapauth_pool_stop waits for every check: each is bounded). */
static void end(void *ctx, struct workq_item *it, enum workq_end how)
{
	struct ldapauth_req *r = (struct ldapauth_req *)it;
	(void)ctx;
	if (how == WORKQ_CANCELLED)
		r->done(r->arg, -ECANCELED, "tusk is stopping");
	else if (how == WORKQ_DONE)
		r->done(r->arg, r->rc, r->why);
	explicit_bzero(r, sizeof *r);
	free(r);
}

static bool passed(const struct timespec *now, const struct timespec *deadline)
{
	return now->tv_sec > deadline->tv_sec || (now->tv_sec == deadline->tv_sec && now->tv_nsec >= deadline->tv_nsec);
}

/* Every 100 ms while a check runs (asleep while none does): shut the connection of a check past
 * its deadline (every one, once stopping), so that no blocked read of libldap's holds a thread
 * longer. */
static void *watchdog(void *arg)
{
	struct ldapauth_pool *p = arg;

	(void)pthread_setname_np(pthread_self(), "tusk-ldap-wd");
	pthread_mutex_lock(&p->mu);
	while (!p->wd_stop) {
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		bool any = false;
		for (int i = 0; i < LDAPAUTH_THREADS; i++) {
			struct ldapauth_thread *t = &p->threads[i];
			any |= t->busy;
			if (t->busy && t->fd >= 0 && (p->stopping || passed(&now, &t->deadline))) {
				(void)shutdown(t->fd, SHUT_RDWR);
				t->fd = -1;
			}
		}
		if (!any) {
			pthread_cond_wait(&p->wd_cv, &p->mu);
			continue;
		}
		struct timespec until = now;
		add_ms(&until, 100);
		(void)pthread_cond_timedwait(&p->wd_cv, &p->mu, &until);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

int ldapauth_submit(struct ldapauth_pool *p, const struct config_ldap *o, const char *user, const char *password,
		    int timeout_ms, ldapauth_done_fn *done, void *arg)
{
	if (strlen(user) >= LDAPAUTH_USER_MAX || strlen(password) >= LDAPAUTH_PASSWORD_MAX)
		return -ENAMETOOLONG;
	/* The watchdog with the first check (a check it cannot watch is not run). */
	pthread_mutex_lock(&p->mu);
	if (!p->wd_started && !p->stopping) {
		sigset_t all, old;
		sigfillset(&all);
		pthread_sigmask(SIG_BLOCK, &all, &old); /* signals are the main thread's */
		if (pthread_create(&p->watchdog, NULL, watchdog, p) == 0)
			p->wd_started = true;
		pthread_sigmask(SIG_SETMASK, &old, NULL);
	}
	bool watched = p->wd_started, stopping = p->stopping;
	pthread_mutex_unlock(&p->mu);
	if (stopping)
		return -ESHUTDOWN;
	if (!watched)
		return -ENOMEM;
	struct ldapauth_req *r = calloc(1, sizeof *r);
	if (!r)
		return -ENOMEM;
	r->o = *o;
	memcpy(r->user, user, strlen(user) + 1);
	memcpy(r->password, password, strlen(password) + 1);
	r->timeout_ms = timeout_ms < 100 ? 100 : timeout_ms;
	r->done = done;
	r->arg = arg;
	return workq_submit_or_wipe(p->q, &r->item, r, sizeof *r);
}

unsigned ldapauth_pending(struct ldapauth_pool *p)
{
	return workq_pending(p->q);
}

void ldapauth_pool_stop(struct ldapauth_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->stopping = true; /* the watchdog shuts every check's connection now */
	pthread_cond_signal(&p->wd_cv);
	pthread_mutex_unlock(&p->mu);
	/* Queued checks come back cancelled; the running ones end (bounded, their connections
	 * shut) before the threads are joined. */
	(void)workq_stop(p->q, -1);
	if (p->wd_started) {
		pthread_mutex_lock(&p->mu);
		p->wd_stop = true;
		pthread_cond_signal(&p->wd_cv);
		pthread_mutex_unlock(&p->mu);
		pthread_join(p->watchdog, NULL);
	}
	pthread_cond_destroy(&p->wd_cv);
	pthread_mutex_destroy(&p->mu);
	free(p);
}
