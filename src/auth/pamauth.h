/* PAM client authentication, PostgreSQL's (auth-pam.html): pam_start(service, user), a
 * conversation that answers each prompt with the client's password, PAM_RHOST the client's
 * address (or its host name), pam_authenticate then pam_acct_mgmt. PAM's calls block (a module
 * may sleep, pam_faildelay does, or ask a server), so the checks run on a few threads of their
 * own (started at the first check), never on a worker's loop: a worker submits a check and its
 * done callback runs later on one of those threads, which the caller turns into a message to
 * its worker. The queue is bounded; a check's wait is bounded by its caller (the client's
 * login time), not here: a thread inside a PAM module cannot be interrupted, it runs on. */
#ifndef TUSK_AUTH_PAMAUTH_H
#define TUSK_AUTH_PAMAUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#define PAMAUTH_THREADS 4      /* checks at once; more wait in the queue */
#define PAMAUTH_QUEUE_MAX 256  /* checks waiting; past it a check is refused (-EAGAIN) */
#define PAMAUTH_SERVICE_MAX 128 /* bytes of a service name (a file of /etc/pam.d), NUL included */
#define PAMAUTH_USER_MAX 256
#define PAMAUTH_PASSWORD_MAX 1024
#define PAMAUTH_WHY_MAX 256
#define PAMAUTH_STOP_WAIT_MS 2000 /* pamauth_pool_stop: how long running checks may take */

struct pamauth_pool;

/* On a pool thread, once per submitted check: rc 0 (PAM took the password and the account),
 * -EACCES (it did not), -EIO (PAM failed otherwise: no such service, a module missing, libpam
 * not loadable), -ECANCELED (the pool stopped first). why says which, for the log (PAM's
 * pam_strerror): never the password. */
typedef void pamauth_done_fn(void *arg, int rc, const char *why);

/* A pool of up to nthreads threads (started when the first check comes) and queue_max
 * waiting checks. 0 or -ENOMEM. */
__attribute__((warn_unused_result))
int pamauth_pool_new(int nthreads, unsigned queue_max, struct pamauth_pool **out);

/* What PAM is told of a check: everything copied at submit. */
struct pamauth_check {
	const char *service;  /* /etc/pam.d/<service> */
	const char *user;
	const char *password; /* the client's cleartext: each prompt's answer */
	const struct sockaddr *peer; /* the client's address (PAM_RHOST); AF_UNIX: "[local]" */
	socklen_t peer_len;
	bool use_hostname;    /* PAM_RHOST the host name the address resolves to (getnameinfo, on
			       * the pool thread), the address when it resolves to none */
};

/* Any thread: run check k. 0 (done(arg, ...) will run on a pool thread, never before this
 * returns), or -EAGAIN (the queue is full), -ENAMETOOLONG (service, user or password too long),
 * -EINVAL (an empty service or user), -ENOMEM, -ESHUTDOWN (stopped); then done never runs. */
__attribute__((warn_unused_result))
int pamauth_submit(struct pamauth_pool *p, const struct pamauth_check *k, pamauth_done_fn *done, void *arg);
/* Checks submitted and not yet done (any thread). */
unsigned pamauth_pending(struct pamauth_pool *p);
/* Stop: the checks still queued get done(arg, -ECANCELED, ...); the running ones are waited
 * for PAMAUTH_STOP_WAIT_MS at most, and if one is still inside a PAM module then, the pool is
 * left to its threads (not freed, never joined; their done never runs: the process is ending).
 * NULL: nothing. */
void pamauth_pool_stop(struct pamauth_pool *p);

/* The PAM_RHOST of a peer: "[local]" for AF_UNIX (PostgreSQL's), the numeric address, or with
 * use_hostname the host name getnameinfo finds (blocking: pool threads only), else the numeric
 * address. The length, or -EINVAL (another family, or an unprintable one). */
__attribute__((warn_unused_result))
int pamauth_rhost(const struct sockaddr *peer, socklen_t len, bool use_hostname, char *out, size_t cap);

#endif
