/* One-key kv calls on the worker's own loop (router_int.h; docs/kv.md, "Routing"): each
 * worker keeps, per shard, one libpq connection of its own, opened without blocking
 * (PQconnectStartParams and PQconnectPoll, the instance's addresses resolved beforehand by
 * the router's thread) and used in pipeline mode: a call is PQsendPrepare (the first time on
 * that connection) + PQsendQueryPrepared + PQpipelineSync, so the calls of all the worker's
 * clients share the connection, each its own implicit transaction, answered in the order
 * sent. The socket is an ev_io of the worker's loop; nothing here blocks: every wait has a
 * timer (the connect's 5 s, a call's answer call_timeout). A shard's extra connections (all
 * but its first) close after idle_close (KV_IDLE_CLOSE_S, 10 s) without a call: a burst does not keep its server
 * processes for ever. A lost connection answers each
 * call in flight as router.c does (a read sent again once, on a new connection; a write
 * reported 08006, "may or may not have been applied"); the next call connects again. */
#include <ev.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kv/hash.h"
#include "kv/router_int.h"
#include "kv/schema.h"
#include "util/log.h"
#include "util/workq.h"
#include "worker/worker.h"

#define CONNECT_TIMEOUT_S 5.0 /* as kv_conn_open's connect_timeout */
/* Connections per shard on one worker. A call takes an idle one, else opens another (up to
 * KV_LOOP_CONNS: concurrent calls then run on as many server processes, as on the router's
 * four threads, not one after the other), else is pipelined behind the calls of the one with
 * the fewest in flight; one whose oldest call has been out longer than STUCK_S (a row lock, a
 * slow shard) gets no more while another can take it, so one slow call holds up no other. */
#define KV_LOOP_CONNS 4
#define STUCK_S 0.1
/* Connections per shard on one worker for transactions (struct kv_txn), each held by one
 * transaction at a time; a transaction that finds all of them held waits for one (twait). */
#define KV_LOOP_TXN_CONNS 4
/* The savepoint each call of a transaction runs under. */
#define TXN_SAVEPOINT "tusk_kv_call"
/* A cancel sent this soon after its call may have reached the backend before the call did
 * (it is ignored there): sent once more if the call still runs when the shard has taken it. */
#define CANCEL_EARLY_S 0.05
#define CANCEL_THREADS 2
#define CANCEL_QUEUE 64

/* An extra connection (not the shard's first, which pick prefers when idle) closes after this
 * long without a call in flight; the next burst opens it again (a connect: milliseconds). */

enum lc_state { LC_CLOSED, LC_CONNECTING, LC_READY };
/* The results a sent call still owes, in pipeline order. */
enum { STAGE_PREPARE, STAGE_EXEC, STAGE_SYNC };

struct kv_lconn {
	struct kv_loop *l;
	int shard;
	enum lc_state state;
	PGconn *conn;
	ev_io io;
	int fd, events;             /* what io watches */
	ev_timer timer;             /* the connect's deadline, the oldest sent call's, or idle_close's */
	bool idle_close;            /* timer closes this extra connection (no call in flight) */
	kv_prepared_t prepared;     /* bit op: op's statement sent to be prepared on this connection */
	struct kv_job *sent, *sent_tail; /* sent, answered in this order */
	int nsent;
	struct kv_job *wait, *wait_tail; /* waiting for the connect */
	const struct kv_route *route;    /* the route it was opened for (connect_start) */
	bool for_txn;                    /* one of tconns: takes only its owner's calls */
	struct kv_txn *owner;            /* the transaction holding it (for_txn) */
	/* Clients' cancels (kv_loop_cancel). A cancel is sent for hold_job once it is the oldest
	 * call in flight here (until then it is want), and cancel_out while PostgreSQL has not
	 * closed the cancel connection (it does once it has signalled the backend). Meanwhile the
	 * connection is held: no new call is sent on it (they wait in wait) until the cancel is
	 * taken and hold_job answered. The signal cancels the statement running when it comes
	 * (PostgreSQL drops one that comes between messages): hold_job's, or that of a call
	 * pipelined behind it (strays counts the signals sent, two per cancel, not seen yet). Such
	 * a call's implicit transaction is rolled back, so it is sent again (stray), as is one that
	 * found the statement it uses gone because a stray hit that statement's prepare
	 * (stray_prepare). Once the cancel is taken and nothing is in flight, no signal is left. */
	bool held, cancel_out, stray_prepare;
	struct kv_job *hold_job, *want;
	int strays;
	unsigned cancel_gen;             /* bumped when the connection closes: a late answer is stale */
	double cancel_at;                /* when the cancel was sent */
	double head_at;                  /* when the oldest call in flight became the oldest */
	int cancel_tries;                /* for hold_job (a call that began just before: twice) */
};

struct kv_loop {
	struct kv_router *r;
	struct worker *w;
	bool stopped;
	int nshards;
	struct kv_lconn *conns; /* KV_LOOP_CONNS per shard: [shard * KV_LOOP_CONNS + i] */
	struct kv_lconn *tconns; /* KV_LOOP_TXN_CONNS per shard, for transactions */
	struct kv_job **twait, **twait_tail; /* per shard: first calls of transactions waiting for one */
	ev_timer twait_timer;    /* while any waits: fails those waiting longer than call_timeout */
};

static void push(struct kv_job **head, struct kv_job **tail, struct kv_job *job)
{
	job->next = NULL;
	if (*tail)
		(*tail)->next = job;
	else
		*head = job;
	*tail = job;
}

/* The answer goes back through the job's own done, on this thread. */
static void finish(struct kv_job *job)
{
	job->local = true;
	job->done(job);
}

/* Fail and answer every job of list. */
__attribute__((format(printf, 3, 4)))
static void fail_all(struct kv_job *list, const char *sqlstate, const char *fmt, ...)
{
	char msg[KV_ERR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	while (list) {
		struct kv_job *next = list->next;
		list->rows_len = 0;
		list->nrows = 0;
		kv_job_fail(list, sqlstate, "%s", msg);
		finish(list);
		list = next;
	}
}

/* libpq's error, on one line. */
static void conn_error(PGconn *conn, char *err, size_t cap)
{
	snprintf(err, cap, "%s", conn ? PQerrorMessage(conn) : "out of memory");
	size_t n = strlen(err);
	while (n > 0 && (err[n - 1] == '\n' || err[n - 1] == ' '))
		err[--n] = '\0';
	for (char *p = err; *p; p++)
		if (*p == '\n' || *p == '\t')
			*p = ' ';
	if (!err[0])
		snprintf(err, cap, "unknown error");
}

/* Watch fd for events (0: stop). With anew, even when fd and events are what io has: while it
 * connects, libpq may close its socket and open another (the next address, a retry without
 * TLS) that reuses the number, which an epoll loop must be told of again. */
static void watch_fd(struct kv_lconn *lc, int fd, int events, bool anew)
{
	struct ev_loop *loop = lc->l->w->loop;

	if (!anew && fd == lc->fd && events == lc->events && (ev_is_active(&lc->io) || !events))
		return;
	ev_io_stop(loop, &lc->io);
	lc->fd = fd;
	lc->events = events;
	if (events && fd >= 0) {
		ev_io_set(&lc->io, fd, events);
		ev_io_start(loop, &lc->io);
	}
}

static void watch(struct kv_lconn *lc, int fd, int events)
{
	watch_fd(lc, fd, events, false);
}

/* The connection of a transaction closes: the server rolled the transaction back. */
static void txn_drop(struct kv_lconn *lc)
{
	struct kv_txn *t = lc->owner;
	if (!t)
		return;
	t->broken = true;
	t->lc = NULL;
	lc->owner = NULL;
}

static void lc_close(struct kv_lconn *lc)
{
	txn_drop(lc);
	watch(lc, -1, 0);
	ev_timer_stop(lc->l->w->loop, &lc->timer);
	lc->idle_close = false;
	PQfinish(lc->conn);
	lc->conn = NULL;
	lc->state = LC_CLOSED;
	lc->prepared = 0; /* a new connection has no prepared statements */
	lc->held = lc->cancel_out = lc->stray_prepare = false; /* the backend is gone: no signal lands */
	lc->hold_job = lc->want = NULL;
	lc->strays = 0;
	lc->cancel_tries = 0;
	lc->cancel_gen++;
}

static void notice_ignore(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

static void send_call(struct kv_lconn *lc, struct kv_job *job);
static void connect_start(struct kv_lconn *lc);
static void txn_kick(struct kv_lconn *lc);
static void txn_ended(struct kv_lconn *lc, struct kv_job *job);

/* The connect failed (or timed out): every call waiting for it fails as router.c's would. */
static void connect_failed(struct kv_lconn *lc, const char *why)
{
	struct kv_router *r = lc->l->r;
	char err[KV_ERR_MAX / 2], db[32];
	struct kv_job *wait = lc->wait;

	if (why)
		snprintf(err, sizeof err, "%s", why);
	else
		conn_error(lc->conn, err, sizeof err);
	lc->wait = lc->wait_tail = NULL;
	lc_close(lc);
	snprintf(db, sizeof db, KV_SHARD_DB_PREFIX "%d", lc->shard);
	const struct kv_route *rt = lc->route;
	fail_all(wait, "08006", "kv shard %s of instance %d (%s:%d, zone %s) is down: %s:%d/%s as %s: %s", db,
		 rt->instance_id, rt->host, rt->port, r->zone, rt->host, rt->port, db, kv_shard_user(r), err);
	txn_kick(lc);
}

static void flush(struct kv_lconn *lc);
static void lost(struct kv_lconn *lc, bool timed_out);
static void arm_idle_timer(struct kv_lconn *lc);

/* lc is ready (connected, or its cancel settled): the calls that waited are sent. */
static void send_waiting(struct kv_lconn *lc)
{
	struct kv_job *wait = lc->wait;
	lc->wait = lc->wait_tail = NULL;
	while (wait) {
		struct kv_job *next = wait->next;
		if (lc->state == LC_READY)
			send_call(lc, wait);
		else /* lost while sending: the rest waits for the next connection */
			push(&lc->wait, &lc->wait_tail, wait);
		wait = next;
	}
	if (lc->wait && lc->state == LC_CLOSED)
		connect_start(lc);
	else if (lc->state == LC_READY && !lc->sent)
		arm_idle_timer(lc);
}

/* The cancel on lc is settled (taken by the shard, its call answered): the calls that waited
 * for it are sent. */
static void hold_check(struct kv_lconn *lc)
{
	if (!lc->held || lc->cancel_out || lc->hold_job || lc->want || lc->state != LC_READY)
		return;
	lc->held = false;
	lc->cancel_tries = 0;
	send_waiting(lc);
	txn_kick(lc);
}

static void connect_ready(struct kv_lconn *lc)
{
	if (PQsetnonblocking(lc->conn, 1) != 0 || !PQenterPipelineMode(lc->conn)) {
		connect_failed(lc, NULL);
		return;
	}
	PQsetNoticeProcessor(lc->conn, notice_ignore, NULL);
	lc->state = LC_READY;
	ev_timer_stop(lc->l->w->loop, &lc->timer);
	watch(lc, PQsocket(lc->conn), EV_READ);
	send_waiting(lc);
}

static void connect_poll(struct kv_lconn *lc)
{
	switch (PQconnectPoll(lc->conn)) {
	case PGRES_POLLING_READING:
		watch_fd(lc, PQsocket(lc->conn), EV_READ, true);
		return;
	case PGRES_POLLING_WRITING:
		watch_fd(lc, PQsocket(lc->conn), EV_WRITE, true);
		return;
	case PGRES_POLLING_OK:
		connect_ready(lc);
		return;
	default:
		connect_failed(lc, NULL);
		return;
	}
}

static void connect_start(struct kv_lconn *lc)
{
	struct kv_router *r = lc->l->r;
	char port[16], db[32];
	const char *keys[11], *vals[11];
	int n = 0;

	if (lc->l->stopped) {
		struct kv_job *wait = lc->wait;
		lc->wait = lc->wait_tail = NULL;
		fail_all(wait, "57P01", "terminating kv call because tusk is shutting down");
		return;
	}
	const struct kv_route *rt = lc->route = kv_route_now(r); /* resolved: runs_on_loop */
	snprintf(port, sizeof port, "%d", rt->port);
	snprintf(db, sizeof db, KV_SHARD_DB_PREFIX "%d", lc->shard);
	keys[n] = "host", vals[n++] = rt->hosts;
	if (rt->hostaddr[0])
		keys[n] = "hostaddr", vals[n++] = rt->hostaddr; /* no DNS on the loop */
	keys[n] = "port", vals[n++] = port;
	keys[n] = "dbname", vals[n++] = db;
	keys[n] = "user", vals[n++] = kv_shard_user(r);
	if (kv_shard_password(r))
		keys[n] = "password", vals[n++] = kv_shard_password(r);
	keys[n] = "application_name", vals[n++] = "tusk kv worker";
	/* as kv_conn_open: bounded statements */
	keys[n] = "options", vals[n++] = kv_shard_options(r);
	keys[n] = NULL, vals[n] = NULL;

	lc->conn = PQconnectStartParams(keys, vals, 0);
	lc->state = LC_CONNECTING;
	if (!lc->conn || PQstatus(lc->conn) == CONNECTION_BAD) {
		connect_failed(lc, lc->conn ? NULL : "out of memory, or libpq could not be loaded (see the log)");
		return;
	}
	ev_timer_stop(lc->l->w->loop, &lc->timer);
	ev_timer_set(&lc->timer, CONNECT_TIMEOUT_S, 0.);
	ev_timer_start(lc->l->w->loop, &lc->timer);
	/* libpq's own advice: start as if PQconnectPoll had said PGRES_POLLING_WRITING */
	watch(lc, PQsocket(lc->conn), EV_WRITE);
}

/* No call in flight: an extra connection starts counting its idleness, the first does not;
 * one opened for an older route (the catalog moved the instance) closes now. */
static void arm_idle_timer(struct kv_lconn *lc)
{
	struct ev_loop *loop = lc->l->w->loop;

	if (lc->route != kv_route_now(lc->l->r)) {
		lc_close(lc);
		return;
	}
	ev_timer_stop(loop, &lc->timer);
	lc->idle_close = false;
	if (lc->cancel_out) { /* the cancel's bound (timer_cb) */
		double left = lc->cancel_at + lc->l->r->call_timeout - ev_now(loop);
		ev_timer_set(&lc->timer, left > 0.001 ? left : 0.001, 0.);
		ev_timer_start(loop, &lc->timer);
		return;
	}
	if (lc == &lc->l->conns[lc->shard * KV_LOOP_CONNS])
		return;
	ev_timer_set(&lc->timer, lc->l->r->idle_close, 0.);
	ev_timer_start(loop, &lc->timer);
	lc->idle_close = true;
}

static void arm_call_timer(struct kv_lconn *lc)
{
	struct ev_loop *loop = lc->l->w->loop;

	if (!lc->sent) {
		arm_idle_timer(lc);
		return;
	}
	if (lc->idle_close) {
		ev_timer_stop(loop, &lc->timer);
		lc->idle_close = false;
	}
	if (ev_is_active(&lc->timer))
		return; /* it checks the oldest call when it fires */
	double left = lc->sent->sent + lc->l->r->call_timeout - ev_now(loop);
	ev_timer_set(&lc->timer, left > 0.001 ? left : 0.001, 0.);
	ev_timer_start(loop, &lc->timer);
}

/* One of a transaction's own statements, or the call's timeouts, whose result is owed before
 * the call's (job->pre). */
static bool send_step(struct kv_lconn *lc, struct kv_job *job, const char *sql)
{
	job->pre++;
	return PQsendQueryParams(lc->conn, sql, 0, NULL, NULL, NULL, NULL, 0) != 0;
}

/* A transaction's steps before its call: BEGIN the first time, the savepoint of a call that
 * failed rolled back, then a savepoint for this call; or, for its end, COMMIT or ROLLBACK
 * (the job's own result). */
static bool send_txn_steps(struct kv_lconn *lc, struct kv_job *job)
{
	struct kv_txn *t = job->txn;
	if (!t->begun) {
		t->begun = true;
		if (!send_step(lc, job, t->begin ? t->begin : t->snapshot ? "BEGIN ISOLATION LEVEL REPEATABLE READ" : "BEGIN"))
			return false;
		for (int i = 0; i < t->nsavepoints; i++) {
			char sql[KV_SAVEPOINT_SQL_MAX];
			kv_savepoint_sql(sql, "SAVEPOINT", t->savepoints[i]);
			if (!send_step(lc, job, sql))
				return false;
		}
	}
	if (t->aborted && !t->no_savepoints) {
		t->aborted = false;
		if (!send_step(lc, job, "ROLLBACK TO SAVEPOINT " TXN_SAVEPOINT) ||
		    !send_step(lc, job, "RELEASE SAVEPOINT " TXN_SAVEPOINT))
			return false;
	}
	if (job->txn_end == KV_TXN_STEP)
		return PQsendQueryParams(lc->conn, job->args[0], 0, NULL, NULL, NULL, NULL, 0) && PQpipelineSync(lc->conn);
	if (job->txn_end) {
		bool commit = job->txn_end == KV_TXN_COMMIT && !t->doomed;
		t->ending = commit;
		return PQsendQueryParams(lc->conn, commit ? "COMMIT" : "ROLLBACK", 0, NULL, NULL, NULL, NULL, 0) &&
		       PQpipelineSync(lc->conn);
	}
	return t->no_savepoints || send_step(lc, job, "SAVEPOINT " TXN_SAVEPOINT);
}

static void send_call(struct kv_lconn *lc, struct kv_job *job)
{
	/* router.c's names ("tusk_kv_<slot>"), without a printf per call */
	char name[16] = "tusk_kv_";
	struct kv_router *r = lc->l->r;
	int slot = kv_stmt_slot(r, job), n = 8;
	if (slot >= 10)
		name[n++] = (char)('0' + slot / 10);
	name[n++] = (char)('0' + slot % 10);
	name[n] = '\0';
	job->stage = STAGE_EXEC;
	job->sent = ev_now(lc->l->w->loop);
	push(&lc->sent, &lc->sent_tail, job); /* from here it is in flight: a failure below is a loss */
	lc->nsent++;
	job->again = false;
	job->pre = 0;
	if (job->txn) {
		if (!send_txn_steps(lc, job))
			goto err_lost;
		if (job->txn_end) {
			arm_call_timer(lc);
			flush(lc);
			return;
		}
	}
	char ttext[KV_TIMEOUT_COUNT][12];
	const char *tparams[KV_TIMEOUT_COUNT];
	job->timeouts_prepared = false;
	/* the caller's timeouts, in the call's transaction; in a client's, once set they stay on
	 * the shard until its end: every later call sets its own, NULL (the connection's) too */
	if (kv_job_timeouts(job, ttext, tparams) || (job->txn && job->txn->timeouts)) {
		if (job->txn)
			job->txn->timeouts = true;
		if (!(lc->prepared & KV_PREPARED_BIT(KV_SLOT_TIMEOUTS))) {
			if (!PQsendPrepare(lc->conn, "tusk_kv_60", kv_timeouts_sql, KV_TIMEOUT_COUNT, NULL))
				goto err_lost;
			lc->prepared |= KV_PREPARED_BIT(KV_SLOT_TIMEOUTS);
			job->timeouts_prepared = true;
			job->pre++;
		}
		if (!PQsendQueryPrepared(lc->conn, "tusk_kv_60", KV_TIMEOUT_COUNT, tparams, NULL, NULL, 0))
			goto err_lost;
		job->pre++;
	}
	const char *pbuf[KV_STMT_MAX_PARAMS];
	int np;
	const char *sql = kv_stmt(r, job, lc->prepared, &np);
	if (!(lc->prepared & KV_PREPARED_BIT(slot))) {
		if (!PQsendPrepare(lc->conn, name, sql, np, NULL))
			goto err_lost;
		lc->prepared |= KV_PREPARED_BIT(slot); /* later calls in the pipeline use it */
		job->stage = STAGE_PREPARE;
	}
	if (!PQsendQueryPrepared(lc->conn, name, np, kv_stmt_params(r, job, pbuf), NULL, NULL, 0) ||
	    (job->txn && !job->txn->no_savepoints &&
	     !PQsendQueryParams(lc->conn, "RELEASE SAVEPOINT " TXN_SAVEPOINT, 0, NULL, NULL, NULL, NULL, 0)) ||
	    !PQpipelineSync(lc->conn))
		goto err_lost;
	arm_call_timer(lc);
	flush(lc);
	return;

err_lost:
	lost(lc, false);
}

static void flush(struct kv_lconn *lc)
{
	int rc = PQflush(lc->conn);
	if (rc < 0)
		lost(lc, false);
	else
		watch(lc, PQsocket(lc->conn), rc ? EV_READ | EV_WRITE : EV_READ);
}

/* The connection is gone (or did not answer in time): each call sent on it is answered as
 * router.c answers a lost connection, a read sent again once on a new connection. */
static void lost(struct kv_lconn *lc, bool timed_out)
{
	struct kv_router *r = lc->l->r;
	char err[KV_ERR_MAX / 2];
	struct kv_job *sent = lc->sent;

	conn_error(lc->conn, err, sizeof err);
	lc->sent = lc->sent_tail = NULL;
	lc->nsent = 0;
	lc_close(lc);
	while (sent) {
		struct kv_job *job = sent;
		sent = sent->next;
		bool read = kv_op_is_read(job->op);
		if (job->txn) {
			/* the transaction went with the connection (lc_close marked it broken) */
			job->rows_len = 0;
			job->nrows = 0;
			job->detail[0] = job->hint[0] = '\0';
			kv_job_fail(job, "08006",
				    "connection to kv shard %s%d of instance %d (%s:%d) %s during the transaction%s: %s",
				    KV_SHARD_DB_PREFIX, lc->shard, lc->route->instance_id, lc->route->host, lc->route->port,
				    timed_out ? "timed out" : "lost",
				    job->txn_end == KV_TXN_COMMIT && job->txn->ending
					    ? " (its COMMIT was sent: it may or may not have been committed)"
					    : " (nothing of it was committed)",
				    timed_out ? "no answer within call_timeout" : err);
			job->ours = true;
			finish(job);
			continue;
		}
		if (read && !job->retried && !timed_out) {
			job->retried = true;
			kv_job_reset(job);
			push(&lc->wait, &lc->wait_tail, job);
			continue;
		}
		job->rows_len = 0;
		job->nrows = 0;
		job->detail[0] = job->hint[0] = '\0';
		if (timed_out)
			kv_job_fail(job, "08006",
				    "kv shard %s%d of instance %d (%s:%d) did not answer the call within %g s%s; its connection "
				    "is closed",
				    KV_SHARD_DB_PREFIX, lc->shard, lc->route->instance_id, lc->route->host, lc->route->port,
				    r->call_timeout,
				    read ? "" : " (the write may or may not have been applied)");
		else
			kv_job_fail(job, "08006",
				    "connection to kv shard %s%d of instance %d (%s:%d) lost during the call%s: %s",
				    KV_SHARD_DB_PREFIX, lc->shard, lc->route->instance_id, lc->route->host, lc->route->port,
				    read ? "" : " (the write may or may not have been applied)", err);
		finish(job);
	}
	if (lc->wait)
		connect_start(lc);
	txn_kick(lc);
}

/* A get's (or a read's) error that means its statement never ran because the shard's schema
 * predates kv.live or kv.read: its prepare failed (the first on this connection: from now on
 * the connection runs the fallbacks; or another op's came first and switched it already), or
 * it came behind that prepare in the pipeline and found no statement (26000). The call is
 * sent again after its Sync (once), not failed. */
static bool get_without_view(struct kv_lconn *lc, struct kv_job *job, const PGresult *res)
{
	if (!kv_op_falls_back(job->op) || job->resent || PQstatus(lc->conn) != CONNECTION_OK)
		return false;
	if (job->stage == STAGE_PREPARE && !kv_get_fall_back(lc->l->r, lc->shard, job->op, &lc->prepared, res) &&
	    (lc->prepared & KV_PREPARED_GET_FALLBACK)) {
		/* the connection had switched while this prepare (of the newer statement) was in
		 * flight: it is prepared again, with the fallback, when sent again */
		lc->prepared &= ~KV_PREPARED_BIT(job->op);
	} else if (job->stage != STAGE_PREPARE) {
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		if (job->stage != STAGE_EXEC || !(lc->prepared & KV_PREPARED_GET_FALLBACK) || !state ||
		    strcmp(state, "26000") != 0)
			return false;
	}
	if (job->txn && job->txn->no_savepoints)
		return false; /* its error aborted the transaction: the client gets it (the connection
			       * has switched: the next transaction's get runs the fallback) */
	job->again = job->resent = true;
	job->stage = STAGE_SYNC; /* what is left of it in the pipeline is its Sync */
	return true;
}

/* res, an error of job (not a transaction's: those connections are their own) on lc: whether
 * another client's cancel made it, so that it is sent again. A cancel's signal cancels the
 * statement that runs when it comes: counted against lc->strays either way. */
static bool stray(struct kv_lconn *lc, struct kv_job *job, const PGresult *res)
{
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	if (!state || !msg)
		return false;
	if (strcmp(state, "57014") == 0 && strcmp(msg, KV_CANCELED_MESSAGE) == 0) {
		if (lc->strays == 0) {
			if (!job->cancel_asked)
				log_warn(NULL, NULL, "kv: a call on kv shard %s%d was cancelled by no cancel of tusk's",
					 KV_SHARD_DB_PREFIX, lc->shard);
			return false;
		}
		lc->strays--;
		if (job->txn || job->cancel_asked || job->stray_resends >= 3)
			return false;
		lc->stray_prepare = true; /* what it prepared is not there: those behind it miss it */
		job->stray_resends++;
		log_info(NULL, NULL, "kv: another client's cancel hit a call on kv shard %s%d: it is sent again",
			 KV_SHARD_DB_PREFIX, lc->shard);
		return true;
	}
	/* a statement prepared by a call a stray hit (26000: "prepared statement ... does not exist") */
	if (strcmp(state, "26000") == 0 && lc->stray_prepare && !job->txn && job->stray_resends < 3) {
		job->stray_resends++;
		return true;
	}
	return false;
}

static bool cancel_send(struct kv_lconn *lc, struct kv_job *job);

/* A call was answered on lc: a cancel that waited for its call to be the oldest in flight is
 * sent; with nothing in flight and the last cancel taken, no signal is left to come. */
static void cancel_next(struct kv_lconn *lc)
{
	if (lc->cancel_out)
		return;
	if (!lc->sent) {
		lc->strays = 0;
		lc->stray_prepare = false;
	}
	if (lc->want && lc->sent == lc->want) {
		struct kv_job *job = lc->want;
		lc->want = NULL;
		(void)cancel_send(lc, job); /* not sent (no memory, too many): the call runs on */
	}
}

/* Every result libpq has parsed, to the calls they belong to. */
static void take_results(struct kv_lconn *lc)
{
	int idle_nulls = 0;

	while (lc->sent && !PQisBusy(lc->conn)) {
		struct kv_job *job = lc->sent;
		PGresult *res = PQgetResult(lc->conn);
		if (!res) {
			/* the end of one statement's results; two in a row would mean libpq has
			 * nothing for us although a call is owed: wait for input instead */
			if (++idle_nulls > 1)
				break;
			continue;
		}
		idle_nulls = 0;
		if (job->pre > 0 && PQresultStatus(res) != PGRES_PIPELINE_SYNC) {
			/* a transaction's own step (BEGIN, a savepoint) or the call's timeouts (rows):
			 * anything but its success leaves the transaction in a state tusk does not
			 * follow: it ends in ROLLBACK (outside one, the call is skipped: its error) */
			job->pre--;
			if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
				if (job->timeouts_prepared && job->pre == 1) /* it was the timeouts' prepare: not there */
					lc->prepared &= ~KV_PREPARED_BIT(KV_SLOT_TIMEOUTS);
				if (job->txn)
					job->txn->doomed = true;
				if (job->stage == STAGE_PREPARE) /* skipped: the next call prepares again */
					lc->prepared &= ~KV_PREPARED_BIT(kv_stmt_slot(lc->l->r, job));
				if (!job->failed && !job->again) {
					if (PQresultStatus(res) == PGRES_PIPELINE_ABORTED)
						kv_job_fail(job, "XX000", "kv shard %s%d skipped a step of the transaction",
							    KV_SHARD_DB_PREFIX, lc->shard);
					else if (stray(lc, job, res))
						job->again = true; /* after its Sync, from the start */
					else
						kv_job_fail_result(job, res, lc->conn);
				}
				job->stage = STAGE_SYNC;
			}
			PQclear(res);
			continue;
		}
		switch (PQresultStatus(res)) {
		case PGRES_PIPELINE_SYNC:
			lc->nsent--;
			lc->sent = job->next;
			if (!lc->sent)
				lc->sent_tail = NULL;
			lc->head_at = ev_now(lc->l->w->loop);
			if (job == lc->hold_job && !job->again)
				lc->hold_job = NULL; /* answered: free once the cancel is taken (hold_check) */
			if (job == lc->want && !job->again)
				lc->want = NULL; /* answered before its cancel could be sent */
			cancel_next(lc);
			if (job->txn_end && job->txn_end != KV_TXN_STEP) {
				txn_ended(lc, job);
				break;
			}
			if (job->again) {
				/* nothing of it ran: again, with the statement this connection has now */
				send_call(lc, job);
				if (lc->state != LC_READY)
					return;
				break;
			}
			if (job->stage != STAGE_SYNC && !job->failed)
				kv_job_fail(job, "XX000", "kv shard %s%d ended the call without its answer", KV_SHARD_DB_PREFIX,
					    lc->shard);
			if (job->failed) {
				job->rows_len = 0;
				job->nrows = 0;
			}
			finish(job);
			if (lc->state == LC_READY && !lc->sent)
				arm_idle_timer(lc);
			break;
		case PGRES_COMMAND_OK:
		case PGRES_TUPLES_OK:
			if (job->txn_end) {
				job->stage = STAGE_SYNC;
			} else if (job->stage == STAGE_PREPARE) {
				job->stage = STAGE_EXEC;
			} else if (job->stage == STAGE_EXEC) {
				if (!job->failed && kv_put_fast_missed(lc->l->r, job, res))
					job->again = true; /* after its Sync: kv.put, its error or its write */
				else if (!job->failed && job->fan)
					kv_job_add_rows(job, res); /* merged when it is answered (fan_part_done) */
				else if (!job->failed)
					kv_job_single(job, res, lc->shard);
				job->stage = STAGE_SYNC;
			}
			break;
		case PGRES_PIPELINE_ABORTED: /* behind a failed prepare: its error is the call's */
			if (!job->failed && !job->again)
				kv_job_fail(job, "XX000", "kv shard %s%d skipped the call", KV_SHARD_DB_PREFIX, lc->shard);
			job->stage = STAGE_SYNC;
			break;
		default:
			if (job->txn)
				job->txn->aborted = true; /* its savepoint is rolled back at the next step */
			if (job->txn_end) {
				if (!job->failed)
					kv_job_fail_result(job, res, lc->conn);
				job->stage = STAGE_SYNC;
				break;
			}
			if (get_without_view(lc, job, res))
				break;
			if (job->stage == STAGE_EXEC && !job->failed && kv_put_fast_missed(lc->l->r, job, res)) {
				job->again = true; /* after its Sync: kv.put_many */
				job->stage = STAGE_SYNC;
				break;
			}
			if (!job->failed && !job->again && stray(lc, job, res)) {
				job->again = true; /* nothing of it stays: after its Sync, from the start */
				if (job->stage == STAGE_PREPARE) { /* its statement is not there */
					lc->prepared &= ~KV_PREPARED_BIT(kv_stmt_slot(lc->l->r, job));
					job->stage = STAGE_EXEC;
				} else {
					job->stage = STAGE_SYNC;
				}
				break;
			}
			if (!job->failed)
				kv_job_fail_result(job, res, lc->conn);
			if (job->stage == STAGE_PREPARE) {
				/* calls behind it in the pipeline fail too (the statement is not there);
				 * the next one prepares again */
				lc->prepared &= ~KV_PREPARED_BIT(kv_stmt_slot(lc->l->r, job));
				job->stage = STAGE_EXEC;
			} else {
				job->stage = STAGE_SYNC;
			}
			break;
		}
		PQclear(res);
		if (lc->state != LC_READY)
			return; /* a done callback cannot close it, but stay safe */
	}
}

static void io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct kv_lconn *lc = io->data;
	(void)loop;

	if (lc->state == LC_CONNECTING) {
		connect_poll(lc);
		return;
	}
	if (lc->state != LC_READY)
		return;
	if (revents & EV_WRITE) {
		flush(lc);
		if (lc->state != LC_READY)
			return;
	}
	if (!(revents & EV_READ))
		return;
	if (!lc->sent) {
		/* We never LISTEN, so anything an idle connection reads (a FATAL after
		 * pg_terminate_backend or a shutdown, or EOF) means it is gone, as router.c's
		 * conn_alive decides: the next call connects again. */
		lc_close(lc);
		if (lc->wait)
			connect_start(lc);
		txn_kick(lc);
		return;
	}
	if (!PQconsumeInput(lc->conn)) {
		lost(lc, false);
		return;
	}
	take_results(lc);
	if (lc->state == LC_READY && PQstatus(lc->conn) != CONNECTION_OK)
		lost(lc, false);
	else if (lc->state == LC_READY && lc->held)
		hold_check(lc);
}

static void timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct kv_lconn *lc = t->data;
	(void)revents;

	if (lc->state == LC_CONNECTING) {
		connect_failed(lc, "timeout expired");
		return;
	}
	if (lc->state != LC_READY)
		return;
	if (!lc->sent) {
		if (lc->cancel_out) {
			/* PQcancel's connect has no bound of its own: the calls held behind it get one */
			if (ev_now(loop) - lc->cancel_at < lc->l->r->call_timeout) {
				arm_idle_timer(lc);
				return;
			}
			log_warn(NULL, NULL, "kv: shard %s%d of instance %d (%s:%d) did not take a cancel within %g s: closing "
				 "worker %d's connection", KV_SHARD_DB_PREFIX, lc->shard, lc->route->instance_id,
				 lc->route->host, lc->route->port, lc->l->r->call_timeout, lc->l->w->index);
			lost(lc, true); /* nothing in flight: its waiting calls go to a new connection */
			return;
		}
		if (lc->idle_close) {
			log_debug(NULL, NULL, "kv: closing worker %d's idle extra connection to shard %s%d",
				  lc->l->w->index, KV_SHARD_DB_PREFIX, lc->shard);
			lc_close(lc);
			txn_kick(lc);
		}
		return;
	}
	double left = lc->sent->sent + lc->l->r->call_timeout - ev_now(loop);
	if (left <= 0) {
		log_warn(NULL, NULL, "kv: shard %s%d of instance %d (%s:%d) did not answer a call within %g s: closing "
			 "worker %d's connection", KV_SHARD_DB_PREFIX, lc->shard, lc->route->instance_id, lc->route->host,
			 lc->route->port, lc->l->r->call_timeout, lc->l->w->index);
		lost(lc, true);
		return;
	}
	ev_timer_set(t, left, 0.);
	ev_timer_start(loop, t);
}

/* Once a second while a transaction waits for a connection (all KV_LOOP_TXN_CONNS of its
 * shard held by open transactions, perhaps clients idle in them): one waiting longer than a
 * call may wait for its answer fails, so no wait is unbounded. */
static void twait_cb(struct ev_loop *loop, ev_timer *timer, int revents)
{
	struct kv_loop *l = timer->data;
	double now = ev_now(loop);
	bool any = false;
	(void)revents;

	for (int s = 0; s < l->nshards; s++) {
		struct kv_job **pp = &l->twait[s], *late = NULL, *prev = NULL;
		while (*pp) {
			struct kv_job *job = *pp;
			if (now - job->sent < l->r->call_timeout) {
				prev = job;
				pp = &job->next;
				continue;
			}
			*pp = job->next;
			job->next = late;
			late = job;
		}
		l->twait_tail[s] = prev;
		any |= l->twait[s] != NULL;
		fail_all(late, "53300",
			 "waited %g s for one of this worker's %d connections to kv shard %s%d for transactions: all are "
			 "held by open transactions", l->r->call_timeout, KV_LOOP_TXN_CONNS, KV_SHARD_DB_PREFIX, s);
	}
	if (!any)
		ev_timer_stop(loop, timer);
}

static struct kv_loop *loop_new(struct kv_router *r, struct worker *w)
{
	struct kv_loop *l = calloc(1, sizeof *l);
	if (!l)
		return NULL;
	l->conns = calloc((size_t)r->nshards * KV_LOOP_CONNS, sizeof *l->conns);
	l->tconns = calloc((size_t)r->nshards * KV_LOOP_TXN_CONNS, sizeof *l->tconns);
	l->twait = calloc((size_t)r->nshards, sizeof *l->twait);
	l->twait_tail = calloc((size_t)r->nshards, sizeof *l->twait_tail);
	if (!l->conns || !l->tconns || !l->twait || !l->twait_tail) {
		free(l->conns);
		free(l->tconns);
		free(l->twait);
		free(l->twait_tail);
		free(l);
		return NULL;
	}
	l->r = r;
	l->w = w;
	l->nshards = r->nshards;
	ev_init(&l->twait_timer, twait_cb);
	l->twait_timer.repeat = 1.0;
	l->twait_timer.data = l;
	for (int i = 0; i < l->nshards * (KV_LOOP_CONNS + KV_LOOP_TXN_CONNS); i++) {
		bool t = i >= l->nshards * KV_LOOP_CONNS;
		int k = t ? i - l->nshards * KV_LOOP_CONNS : i;
		struct kv_lconn *lc = t ? &l->tconns[k] : &l->conns[k];
		lc->l = l;
		lc->shard = k / (t ? KV_LOOP_TXN_CONNS : KV_LOOP_CONNS);
		lc->for_txn = t;
		lc->fd = -1;
		ev_init(&lc->io, io_cb);
		lc->io.data = lc;
		ev_init(&lc->timer, timer_cb);
		lc->timer.data = lc;
	}
	return l;
}

/* The connection of shard a call goes to: an idle one, else a closed one (connected now),
 * else the one with the fewest calls in flight that is not stuck, else one connecting, else
 * the one whose oldest call is youngest. One opened for an older route (the catalog moved the
 * instance) is closed when idle and takes no call while another can (it finishes what it
 * was sent). */
static struct kv_lconn *pick(struct kv_loop *l, int shard)
{
	struct kv_lconn *set = &l->conns[shard * KV_LOOP_CONNS];
	struct kv_lconn *busy = NULL, *connecting = NULL, *closed = NULL, *stuck = NULL, *old = NULL, *held = NULL;
	double now = ev_now(l->w->loop);
	const struct kv_route *rt = kv_route_now(l->r);

	for (int i = 0; i < KV_LOOP_CONNS; i++) {
		struct kv_lconn *lc = &set[i];
		if (lc->state != LC_CLOSED && lc->route != rt) {
			if (lc->state == LC_READY && !lc->sent) {
				lc_close(lc);
			} else {
				old = old ? old : lc;
				continue;
			}
		}
		if (lc->held) { /* a cancel is being settled on it: calls wait */
			held = held ? held : lc;
			continue;
		}
		switch (lc->state) {
		case LC_READY:
			if (!lc->sent)
				return lc;
			if (now - lc->sent->sent < STUCK_S) {
				if (!busy || lc->nsent < busy->nsent)
					busy = lc;
			} else if (!stuck || lc->sent->sent > stuck->sent->sent) {
				stuck = lc;
			}
			break;
		case LC_CONNECTING:
			if (!connecting)
				connecting = lc;
			break;
		case LC_CLOSED:
			if (!closed)
				closed = lc;
			break;
		}
	}
	return closed ? closed : busy ? busy : connecting ? connecting : stuck ? stuck : old ? old : held;
}

static void txn_send(struct kv_loop *l, int shard, struct kv_job *job);
static void lc_send(struct kv_lconn *lc, struct kv_job *job);

void kv_txn_abandon(struct kv_txn *t)
{
	struct kv_lconn *lc = t->lc;
	if (!lc)
		return;
	lc_close(lc); /* drops t */
	if (lc->wait)
		connect_start(lc);
	txn_kick(lc);
}

/* A connection for transactions was let go (closed with its owner, or freed by its end): the
 * first transaction waiting for one of its shard's takes it. */
static void txn_kick(struct kv_lconn *lc)
{
	struct kv_loop *l = lc->l;
	struct kv_job *next = l->twait[lc->shard];
	if (!lc->for_txn || !next || l->stopped || lc->owner || lc->sent || lc->wait || lc->held)
		return;
	l->twait[lc->shard] = next->next;
	if (!next->next)
		l->twait_tail[lc->shard] = NULL;
	txn_send(l, lc->shard, next);
}

/* A transaction's end was answered: its connection is free for the next one waiting. */
static void txn_ended(struct kv_lconn *lc, struct kv_job *job)
{
	struct kv_txn *t = job->txn;
	struct kv_loop *l = lc->l;

	if (job->stage != STAGE_SYNC && !job->failed)
		kv_job_fail(job, "XX000", "kv shard %s%d ended the transaction without its answer", KV_SHARD_DB_PREFIX,
			    lc->shard);
	if (!job->failed && t->doomed && job->txn_end == KV_TXN_COMMIT)
		kv_job_fail(job, "XX000", "a step of the transaction failed on kv shard %s%d: it was rolled back",
			    KV_SHARD_DB_PREFIX, lc->shard);
	if (!job->failed && t->broken && job->txn_end == KV_TXN_COMMIT)
		kv_job_fail(job, "08006", "the transaction's connection to kv shard %s%d was lost: nothing of it was "
			    "committed", KV_SHARD_DB_PREFIX, lc->shard);
	job->rows_len = 0;
	job->nrows = 0;
	lc->owner = NULL;
	*t = (struct kv_txn){ .shard = t->shard, .snapshot = t->snapshot, .begin = t->begin, .no_savepoints = t->no_savepoints };
	finish(job); /* posts to the submitter: it runs later on this loop */
	if (l->twait[lc->shard])
		txn_kick(lc);
	else if (lc->state == LC_READY && !lc->sent)
		arm_idle_timer(lc);
}

/* A free connection of shard's for a transaction: a ready one, else a closed one; NULL when
 * every one is held. One opened for an older route is closed first. */
static struct kv_lconn *txn_pick(struct kv_loop *l, int shard)
{
	struct kv_lconn *set = &l->tconns[shard * KV_LOOP_TXN_CONNS], *closed = NULL;
	const struct kv_route *rt = kv_route_now(l->r);

	for (int i = 0; i < KV_LOOP_TXN_CONNS; i++) {
		struct kv_lconn *lc = &set[i];
		if (lc->owner || lc->sent || lc->wait || lc->held)
			continue;
		if (lc->state == LC_READY && lc->route != rt)
			lc_close(lc);
		if (lc->state == LC_READY)
			return lc;
		if (lc->state == LC_CLOSED && !closed)
			closed = lc;
	}
	return closed;
}

/* A call (or the end) of a transaction, on the connection it holds, taking one first. */
static void txn_send(struct kv_loop *l, int shard, struct kv_job *job)
{
	struct kv_txn *t = job->txn;

	if (shard != t->shard) {
		kv_job_fail(job, "XX000", "kv: a call of a transaction on shard %s%d names a key of shard %s%d",
			    KV_SHARD_DB_PREFIX, t->shard, KV_SHARD_DB_PREFIX, shard);
		finish(job);
		return;
	}
	if (job->txn_end == KV_TXN_STEP && !t->lc && !t->broken) {
		finish(job); /* nothing was begun: nothing to do */
		return;
	}
	if (job->txn_end && job->txn_end != KV_TXN_STEP && !t->lc) {
		/* nothing was begun, or the connection is gone with all of it */
		if (t->broken && job->txn_end == KV_TXN_COMMIT)
			kv_job_fail(job, "08006", "the transaction's connection to kv shard %s%d was lost: nothing of it "
				    "was committed", KV_SHARD_DB_PREFIX, shard);
		*t = (struct kv_txn){ .shard = t->shard, .snapshot = t->snapshot, .begin = t->begin, .no_savepoints = t->no_savepoints };
		finish(job);
		return;
	}
	if (t->broken || (t->doomed && (!job->txn_end || job->txn_end == KV_TXN_STEP))) {
		kv_job_fail(job, t->broken ? "08006" : "XX000",
			    t->broken ? "the transaction's connection to kv shard %s%d was lost: nothing of it was committed"
				      : "a step of the transaction failed on kv shard %s%d: it is rolled back",
			    KV_SHARD_DB_PREFIX, shard);
		job->ours = true;
		finish(job);
		return;
	}
	struct kv_lconn *lc = t->lc;
	if (!lc) {
		lc = txn_pick(l, shard);
		if (!lc) {
			job->sent = ev_now(l->w->loop);
			push(&l->twait[shard], &l->twait_tail[shard], job);
			if (!ev_is_active(&l->twait_timer))
				ev_timer_again(l->w->loop, &l->twait_timer);
			return;
		}
		lc->owner = t;
		t->lc = lc;
	}
	lc_send(lc, job);
}

/* job to shard's connection of l. */
static void send_to(struct kv_loop *l, int shard, struct kv_job *job)
{
	if (job->txn) {
		txn_send(l, shard, job);
		return;
	}
	lc_send(pick(l, shard), job);
}

/* job on lc: sent now, or once it is connected. */
static void lc_send(struct kv_lconn *lc, struct kv_job *job)
{
	switch (lc->state) {
	case LC_READY:
		if (lc->held)
			push(&lc->wait, &lc->wait_tail, job); /* until its cancel is settled (hold_check) */
		else
			send_call(lc, job);
		break;
	case LC_CONNECTING:
		push(&lc->wait, &lc->wait_tail, job);
		break;
	case LC_CLOSED:
		push(&lc->wait, &lc->wait_tail, job);
		connect_start(lc);
		break;
	}
}

/* ---- calls of several shards (get_many, put_many, delete_many: the keys split by shard;
 * scan, count: every shard) ---- */

/* One such call: a part per shard concerned, all sent at once, each on its shard's
 * connection as a one-key call is; each part's rows stay in the part until it is answered
 * (a read part lost mid-call is sent again and answered once), then are merged here; the
 * call is answered when its last part is. As router.c's run_split and run_fanout answer:
 * get_many's and scan's rows in key order (scan's first lim), the counts summed, and a part
 * that fails fails the call (a batch saying how many other shards it had written). */
struct fan {
	struct kv_job *call;
	int pending;               /* parts not answered yet (one more while they are being sent) */
	int written;               /* parts answered without error */
	bool failed;
	struct kv_pair *pairs;
	size_t npairs, cap;
	long long sum;
	char *pick;                /* random_key: the key kept so far (kv_random_offer) */
	int pick_len, seen;
	int nparts;
	struct fan_part {
		struct kv_job job;
		int shard;
		char *keys, *values;   /* the part's text[] literals */
	} parts[];
};

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static char *dup_n(const uint8_t *p, uint32_t n)
{
	char *s = malloc((size_t)n + 1);
	if (s) {
		memcpy(s, p, n);
		s[n] = '\0';
	}
	return s;
}

/* A part's DataRows (kv_job_add_rows: two columns, key and value) appended to the pairs. */
static bool take_pairs(struct fan *f, const struct kv_job *part)
{
	for (size_t at = 0; at + 7 <= part->rows_len;) {
		const uint8_t *p = part->rows + at;
		uint32_t len = get32(p + 1);
		if (f->npairs == f->cap) {
			size_t ncap = f->cap ? f->cap * 2 : 64;
			struct kv_pair *np = realloc(f->pairs, ncap * sizeof *np);
			if (!np)
				return false;
			f->pairs = np;
			f->cap = ncap;
		}
		struct kv_pair *kp = &f->pairs[f->npairs];
		const uint8_t *q = p + 7;
		uint32_t kl = get32(q), vl = get32(q + 4 + kl);
		kp->klen = (int)kl;
		kp->key = dup_n(q + 4, kl);
		kp->vlen = vl == UINT32_MAX ? 0 : (int)vl;
		kp->value = vl == UINT32_MAX ? NULL : dup_n(q + 8 + kl, vl);
		if (!kp->key || (vl != UINT32_MAX && !kp->value)) {
			free(kp->key);
			free(kp->value);
			return false;
		}
		f->npairs++;
		at += 1 + (size_t)len;
	}
	return true;
}

static void fan_free(struct fan *f)
{
	for (size_t i = 0; i < f->npairs; i++) {
		free(f->pairs[i].key);
		free(f->pairs[i].value);
	}
	free(f->pairs);
	free(f->pick);
	for (int i = 0; i < f->nparts; i++) {
		kv_job_free(&f->parts[i].job);
		free(f->parts[i].keys);
		free(f->parts[i].values);
	}
	free(f);
}

static void fan_answer(struct fan *f)
{
	struct kv_job *call = f->call;
	enum kv_op op = call->op;

	if (f->failed) {
		if (f->written > 0 && (op == KV_OP_PUT_MANY || op == KV_OP_DELETE_MANY) && !call->detail[0])
			snprintf(call->detail, sizeof call->detail,
				 "kv.%s had already written the keys of %d other shard(s): a batch is all or nothing per "
				 "shard, not across shards", kv_op_name(op), f->written);
	} else if (kv_op_rows(op)) {
		long lim = op == KV_OP_SCAN && call->args[3] ? strtol(call->args[3], NULL, 10) : 0;
		kv_send_pairs(call, f->pairs, f->npairs, lim > 0 ? (size_t)lim : f->npairs);
	} else if (op == KV_OP_RANDOM_KEY) {
		kv_send_value(call, f->pick, f->pick_len);
	} else {
		kv_send_count(call, f->sum);
	}
	if (call->failed) {
		call->rows_len = 0;
		call->nrows = 0;
	}
	fan_free(f);
	finish(call);
}

static void fan_release(struct fan *f)
{
	if (--f->pending == 0)
		fan_answer(f);
}

/* The value of a part's one row of one column (a DataRow: its length at 7, its bytes from 11):
 * false when there is none (no row, NULL, or cut short). */
static bool part_value(const struct kv_job *part, const uint8_t **v, uint32_t *n)
{
	uint32_t len = part->rows_len >= 11 ? get32(part->rows + 7) : UINT32_MAX;
	if (len == UINT32_MAX || 11 + (size_t)len > part->rows_len)
		return false;
	*v = part->rows + 11;
	*n = len;
	return true;
}

/* A part answered (its done): its error becomes the call's (the first one), else its rows or
 * count are merged. */
static void fan_part_done(struct kv_job *part)
{
	struct fan *f = part->fan;
	struct kv_job *call = f->call;

	if (part->failed) {
		if (!f->failed) {
			f->failed = true;
			call->failed = true;
			call->ours = part->ours;
			memcpy(call->sqlstate, part->sqlstate, sizeof call->sqlstate);
			memcpy(call->message, part->message, sizeof call->message);
			memcpy(call->detail, part->detail, sizeof call->detail);
			memcpy(call->hint, part->hint, sizeof call->hint);
		}
	} else if (kv_op_rows(call->op)) {
		if (!f->failed && !take_pairs(f, part)) {
			f->failed = true;
			kv_job_fail(call, "53200", "out of memory");
		}
		f->written++;
	} else if (call->op == KV_OP_RANDOM_KEY) {
		/* one row of one text column: a key, or NULL */
		const uint8_t *k;
		uint32_t n;
		if (part_value(part, &k, &n) && !f->failed &&
		    !kv_random_offer(&f->pick, &f->pick_len, &f->seen, (const char *)k, (int)n))
			f->failed = true, kv_job_fail(call, "53200", "out of memory");
		f->written++;
	} else {
		/* one row of one bigint column */
		const uint8_t *p;
		uint32_t n;
		char *v = part_value(part, &p, &n) && n < 32 ? dup_n(p, n) : NULL;
		if (v)
			f->sum += strtoll(v, NULL, 10);
		else if (!f->failed)
			f->failed = true, kv_job_fail(call, "XX000", "kv: a shard answered kv.%s without a count",
							kv_op_name(call->op));
		free(v);
		f->written++;
	}
	fan_release(f);
}

/* The parts of call on l (nshards of them at most), then sent; answered by fan_answer. */
static void fan_out(struct kv_loop *l, struct kv_job *call)
{
	enum kv_op op = call->op;
	bool split = kv_op_array_arg(op, 1); /* the keys, split by shard; else every shard */
	int *shard_of = NULL, *idx = NULL;

	if (op == KV_OP_PUT_MANY && call->nvalues != call->nkeys) {
		kv_job_fail(call, "22023", "kv: put_many got %d keys and %d values", call->nkeys, call->nvalues);
		finish(call);
		return;
	}
	struct fan *f = calloc(1, sizeof *f + (size_t)l->nshards * sizeof f->parts[0]);
	if (!f || (split && call->nkeys > 0 &&
		   (!(shard_of = malloc((size_t)call->nkeys * sizeof *shard_of)) ||
		    !(idx = malloc((size_t)call->nkeys * sizeof *idx))))) {
		free(f);
		free(shard_of);
		kv_job_fail(call, "53200", "out of memory");
		finish(call);
		return;
	}
	f->call = call;
	for (int i = 0; split && i < call->nkeys; i++)
		shard_of[i] = kv_shard_of(call->ns, strlen(call->ns), call->keys[i], strlen(call->keys[i]), l->nshards);
	for (int s = 0; s < l->nshards && !f->failed; s++) {
		struct fan_part *pt = &f->parts[f->nparts];
		struct kv_job *j = &pt->job;
		if (split) {
			int n = kv_keys_of_shard(shard_of, call->nkeys, s, idx);
			if (n == 0)
				continue;
			pt->keys = kv_array_literal(call->keys, idx, n);
			if (op == KV_OP_PUT_MANY && pt->keys)
				pt->values = kv_array_literal(call->values, idx, n);
			if (!pt->keys || (op == KV_OP_PUT_MANY && !pt->values)) {
				free(pt->keys);
				pt->keys = NULL;
				f->failed = true;
				kv_job_fail(call, "53200", "out of memory");
				break;
			}
			j->args[0] = call->ns;
			j->args[1] = pt->keys;
			j->args[2] = pt->values;
			j->args[3] = op == KV_OP_PUT_MANY ? call->args[3] : NULL;
			j->nkeys = n; /* the part's size (its keys are in args[1]): put_many's fast path */
		} else {
			memcpy(j->args, call->args, sizeof j->args);
		}
		j->op = op;
		j->worker = call->worker;
		j->ns = call->ns;
		j->txn = call->txn;
		memcpy(j->timeout_ms, call->timeout_ms, sizeof j->timeout_ms);
		j->done = fan_part_done;
		j->fan = f;
		pt->shard = s;
		f->nparts++;
	}
	free(shard_of);
	free(idx);
	if (f->failed) { /* nothing sent */
		f->pending = 1;
		fan_release(f);
		return;
	}
	f->pending = f->nparts + 1; /* a part may be answered while the others are still being sent */
	for (int i = 0; i < f->nparts; i++)
		send_to(l, f->parts[i].shard, &f->parts[i].job);
	fan_release(f);
}

void kv_loop_submit(struct kv_router *r, struct kv_job *job)
{
	struct worker *w = job->worker;

	kv_job_reset(job);
	job->retried = false;
	job->resent = false;
	job->cancel_asked = false;
	job->stray_resends = 0;
	if (atomic_load_explicit(&r->stopping, memory_order_relaxed) || w->stopping) {
		if (job->txn && job->txn->lc)
			lc_close(job->txn->lc); /* its transaction is over: no end will free the connection */
		kv_job_fail(job, "57P01", "terminating kv call because tusk is shutting down");
		finish(job);
		return;
	}
	struct kv_loop *l = r->loops[w->index];
	if (!l && !(l = r->loops[w->index] = loop_new(r, w))) {
		kv_job_fail(job, "53200", "out of memory");
		finish(job);
		return;
	}
	if (job->txn_end) {
		txn_send(l, job->txn->shard, job);
		return;
	}
	if (kv_op_keyless(job->op)) { /* a call of several shards */
		fan_out(l, job);
		return;
	}
	int shard = kv_shard_of(job->ns, strlen(job->ns), job->key, strlen(job->key), l->nshards);
	if (shard < 0) {
		kv_job_fail(job, "XX000", "bad shard count %d", l->nshards);
		finish(job);
		return;
	}
	send_to(l, shard, job);
}

void kv_loop_stop(struct kv_router *r, struct kv_loop *l)
{
	(void)r;
	l->stopped = true;
	ev_timer_stop(l->w->loop, &l->twait_timer);
	for (int s = 0; s < l->nshards; s++) {
		struct kv_job *wait = l->twait[s];
		l->twait[s] = l->twait_tail[s] = NULL;
		fail_all(wait, "57P01", "terminating kv call because tusk is shutting down");
	}
	for (int i = 0; i < l->nshards * (KV_LOOP_CONNS + KV_LOOP_TXN_CONNS); i++) {
		int n = l->nshards * KV_LOOP_CONNS;
		struct kv_lconn *lc = i < n ? &l->conns[i] : &l->tconns[i - n];
		struct kv_job *sent = lc->sent, *wait = lc->wait;
		lc->sent = lc->sent_tail = lc->wait = lc->wait_tail = NULL;
		lc->nsent = 0;
		lc_close(lc);
		fail_all(sent, "57P01", "terminating kv call because tusk is shutting down");
		fail_all(wait, "57P01", "terminating kv call because tusk is shutting down");
	}
}

void kv_loop_free(struct kv_loop *l)
{
	if (!l)
		return;
	/* The worker's loop is gone: kv_loop_stop stopped the watchers and answered the calls. */
	for (int i = 0; i < l->nshards * KV_LOOP_CONNS; i++)
		PQfinish(l->conns[i].conn);
	for (int i = 0; i < l->nshards * KV_LOOP_TXN_CONNS; i++)
		PQfinish(l->tconns[i].conn);
	free(l->conns);
	free(l->tconns);
	free(l->twait);
	free(l->twait_tail);
	free(l);
}

/* ---- clients' cancels (kv_router_cancel) ---- */

/* One cancel: PQcancel on a thread of r->cancel_q, then its answer (msg, first: the worker
 * frees a message once it has run it, which frees all of it) back to the loop that sent it. */
struct lc_cancel {
	struct worker_msg msg;
	struct workq_item item;
	PGcancel *pc;
	struct kv_router *r;
	struct kv_lconn *lc;
	unsigned gen;
	bool taken;
	char err[160];
};

static struct lc_cancel *cancel_of(struct workq_item *it)
{
	return (struct lc_cancel *)(void *)((char *)it - offsetof(struct lc_cancel, item));
}

static void cancel_work(void *ctx, int index, struct workq_item *it)
{
	struct lc_cancel *c = cancel_of(it);
	(void)ctx;
	(void)index;
	if (c->r->cancel_delay > 0) { /* tests: a shard slow to take the cancel */
		struct timespec ts = { (time_t)c->r->cancel_delay,
				       (long)((c->r->cancel_delay - (double)(time_t)c->r->cancel_delay) * 1e9) };
		nanosleep(&ts, NULL);
	}
	c->taken = PQcancel(c->pc, c->err, (int)sizeof c->err) != 0;
}

static void cancel_answered(struct worker *w, struct worker_msg *m);

/* Under the queue's lock: the answer goes back to its loop, unless tusk is stopping (the
 * workers outlive this queue: kv_router_stop stops it first). */
static void cancel_end(void *ctx, struct workq_item *it, enum workq_end how)
{
	struct lc_cancel *c = cancel_of(it);
	(void)ctx;
	PQfreeCancel(c->pc);
	c->pc = NULL;
	if (how != WORKQ_DONE || atomic_load_explicit(&c->r->stopping, memory_order_relaxed)) {
		free(c);
		return;
	}
	c->msg.fn = cancel_answered;
	c->msg.arg = c;
	worker_post(c->lc->l->w, &c->msg);
}

int kv_loop_cancels_start(struct kv_router *r)
{
	struct workq_def d = { .name = "tusk-kv-cancel",
			       .max_threads = CANCEL_THREADS,
			       .queue_max = CANCEL_QUEUE,
			       .work = cancel_work,
			       .end = cancel_end,
			       .ctx = r };
	return workq_new(&d, &r->cancel_q);
}

void kv_loop_cancels_stop(struct kv_router *r)
{
	/* a cancel's connect to a host that stopped answering is not waited for long */
	(void)workq_stop(r->cancel_q, 1000);
	r->cancel_q = NULL;
}

/* Send a cancel for job, alone in flight on lc; false when it could not be sent. */
static bool cancel_send(struct kv_lconn *lc, struct kv_job *job)
{
	struct kv_router *r = lc->l->r;
	struct lc_cancel *c = r->cancel_q ? calloc(1, sizeof *c) : NULL;
	if (!c || !(c->pc = PQgetCancel(lc->conn))) {
		free(c);
		return false;
	}
	c->r = r;
	c->lc = lc;
	c->gen = lc->cancel_gen;
	if (workq_submit(r->cancel_q, &c->item) != 0) {
		PQfreeCancel(c->pc);
		free(c);
		return false;
	}
	lc->held = lc->cancel_out = true;
	if (lc->hold_job != job)
		lc->cancel_tries = 0;
	lc->hold_job = job;
	lc->cancel_at = ev_now(lc->l->w->loop);
	lc->cancel_tries++;
	/* PostgreSQL signals the backend and then its process group: it may take the second
	 * signal after the first one's error, and cancel the next statement with it */
	lc->strays += 2;
	log_info(NULL, NULL, "kv: sending a client's cancel to kv shard %s%d's backend pid %d (worker %d)",
		 KV_SHARD_DB_PREFIX, lc->shard, PQbackendPID(lc->conn), lc->l->w->index);
	return true;
}

/* On the loop: the shard took the cancel (or it could not be sent). */
static void cancel_answered(struct worker *w, struct worker_msg *m)
{
	struct lc_cancel *c = m->arg;
	struct kv_lconn *lc = c->lc;
	(void)w;

	if (!c->taken)
		log_warn(NULL, NULL, "kv: could not send a client's cancel to kv shard %s%d: %s", KV_SHARD_DB_PREFIX,
			 lc->shard, c->err);
	if (!lc->l->stopped && lc->cancel_out && lc->cancel_gen == c->gen) {
		lc->cancel_out = false;
		struct kv_job *job = lc->hold_job;
		/* sent (or become the oldest in flight) just before the cancel and still running:
		 * the backend may not have begun it when the signal came (ignored, as between
		 * statements): once more */
		double began = job && job->sent > lc->head_at ? job->sent : lc->head_at;
		if (c->taken && job && lc->cancel_tries < 2 && lc->cancel_at - began < CANCEL_EARLY_S && lc->sent == job &&
		    cancel_send(lc, job))
			return;
		cancel_next(lc);
		hold_check(lc);
	}
	/* c is m's block: the worker frees it (or keeps it for its next message) */
}

static bool part_of(const struct kv_job *job, const struct kv_job *call)
{
	return job == call || (job->fan && ((const struct fan *)job->fan)->call == call);
}

/* The jobs of call in *list not sent yet (none of a transaction's: its connection is its
 * own), answered 57014; their number. */
static int cancel_waiting(struct kv_job **head, struct kv_job **tail, const struct kv_job *call, bool txn_too)
{
	struct kv_job *keep = NULL, *keep_tail = NULL, *drop = NULL, *drop_tail = NULL;
	int n = 0;
	for (struct kv_job *job = *head, *next; job; job = next) {
		next = job->next;
		if (part_of(job, call) && (txn_too || !job->txn)) {
			push(&drop, &drop_tail, job);
			n++;
		} else {
			push(&keep, &keep_tail, job);
		}
	}
	*head = keep;
	*tail = keep_tail;
	while (drop) {
		struct kv_job *job = drop;
		drop = drop->next;
		kv_job_canceled(job);
		finish(job);
	}
	return n;
}

const char *kv_loop_cancel(struct kv_router *r, struct worker *w, const struct kv_job *call)
{
	struct kv_loop *l = w->index < r->nloops ? r->loops[w->index] : NULL;
	int unsent = 0, sent = 0, later = 0, not_sent = 0;

	if (!l || l->stopped)
		return "no kv call of this worker's runs";
	for (int s = 0; s < l->nshards; s++) /* first calls of transactions waiting for a connection */
		unsent += cancel_waiting(&l->twait[s], &l->twait_tail[s], call, true);
	for (int i = 0; i < l->nshards * (KV_LOOP_CONNS + KV_LOOP_TXN_CONNS); i++) {
		int n = l->nshards * KV_LOOP_CONNS;
		struct kv_lconn *lc = i < n ? &l->conns[i] : &l->tconns[i - n];
		unsent += cancel_waiting(&lc->wait, &lc->wait_tail, call, false);
		struct kv_job *mine = NULL;
		for (struct kv_job *job = lc->sent; job; job = job->next) {
			if (part_of(job, call)) {
				job->cancel_asked = true; /* its own 57014 is its answer, not another's stray */
				mine = mine ? mine : job;
			}
		}
		if (!mine || lc->state != LC_READY)
			continue;
		if ((lc->cancel_out && lc->hold_job == mine) || lc->want == mine) {
			sent++; /* asked already */
		} else if (lc->sent == mine && !lc->cancel_out) {
			if (cancel_send(lc, mine))
				sent++;
			else
				not_sent++;
		} else if (!lc->want) {
			lc->want = mine; /* once the calls before it are answered (cancel_next) */
			lc->held = true;
			later++;
		} else {
			not_sent++; /* another client's cancel waits on this connection already */
		}
	}
	if (not_sent)
		return "a cancel could not be sent now (another waits on its shard connection, or no memory): the call "
		       "runs on";
	if (later)
		return "cancel to be sent once the calls before it on its shard connection are answered";
	if (sent)
		return unsent ? "cancel sent to its shard; its calls not sent yet answered 57014" : "cancel sent to its shard";
	return unsent ? "its call was not sent yet: answered 57014" : "no kv call of this worker's runs";
}
