/* Invalidation by logical decoding (logical.h). */
#include "flight/logical.h"

#include "pq/pq.h"
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "flight/cache.h"
#include "util/log.h"

/* Changes taken per poll and database: bounds the memory of one answer; the rest comes at
 * the next poll (a backlog only delays bumps, it never loses one). */
#define LOGICAL_BATCH "10000"
#define LOGICAL_RETRY 2.0 /* seconds before a failed follow is tried again */

struct logical_db {
	/* written once, before ndbs counts it (under lock); read-only after */
	struct flight_vol_target target;
	char database[FLIGHT_NAME_MAX];
	uint16_t db_slot;
	/* the thread's own */
	PGconn *pg;
	char slot[64];
	double retry_at;
	bool warned;
	/* written by the thread, read by follow */
	_Atomic bool active;
};

struct flight_logical {
	struct flight_inval *iv;
	struct flight_counters *counters;
	double poll;
	pthread_mutex_t lock; /* ndbs (appending), started, stop, the wake-up */
	pthread_cond_t wake;
	pthread_t thread;
	bool started, stop;
	_Atomic int ndbs;
	struct logical_db dbs[FLIGHT_LOGICAL_MAX];
};

static double mono_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct flight_logical *flight_logical_new(struct flight_inval *iv, struct flight_counters *counters, double poll)
{
	struct flight_logical *l = calloc(1, sizeof(*l));
	pthread_condattr_t ca;

	if (!l)
		return NULL;
	l->iv = iv;
	l->counters = counters;
	l->poll = poll > 0 ? poll : 0.2;
	pthread_mutex_init(&l->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&l->wake, &ca);
	pthread_condattr_destroy(&ca);
	return l;
}

void flight_logical_free(struct flight_logical *l)
{
	if (!l)
		return;
	pthread_mutex_lock(&l->lock);
	l->stop = true;
	pthread_cond_signal(&l->wake);
	bool started = l->started;
	pthread_mutex_unlock(&l->lock);
	if (started)
		pthread_join(l->thread, NULL);
	for (int i = 0; i < atomic_load(&l->ndbs); i++)
		if (l->dbs[i].pg)
			PQfinish(l->dbs[i].pg);
	OPENSSL_cleanse(l->dbs, sizeof(l->dbs));
	pthread_cond_destroy(&l->wake);
	pthread_mutex_destroy(&l->lock);
	free(l);
}

static void *logical_thread(void *arg);

/* One decoder per backend database and client database, whichever login asked first: every
 * login of a database sees the same changes. */
static bool same_db(const struct logical_db *d, const struct flight_vol_target *t, const char *database)
{
	return strcmp(d->database, database) == 0 && strcmp(d->target.host, t->host) == 0 &&
	       strcmp(d->target.port, t->port) == 0 && strcmp(d->target.dbname, t->dbname) == 0;
}

bool flight_logical_follow(struct flight_logical *l, const struct flight_vol_target *target, const char *database)
{
	int idx;
	return flight_logical_follow_at(l, target, database, &idx);
}

bool flight_logical_active(struct flight_logical *l, int idx)
{
	return idx >= 0 && idx < atomic_load(&l->ndbs) && atomic_load(&l->dbs[idx].active);
}

bool flight_logical_follow_at(struct flight_logical *l, const struct flight_vol_target *target, const char *database,
			      int *idx)
{
	int n = atomic_load(&l->ndbs);

	*idx = -1;
	/* Lock-free when followed already: entries below ndbs are never written again. */
	for (int i = 0; i < n; i++)
		if (same_db(&l->dbs[i], target, database))
			return atomic_load(&l->dbs[(*idx = i)].active);
	pthread_mutex_lock(&l->lock);
	n = atomic_load(&l->ndbs);
	for (int i = 0; i < n; i++)
		if (same_db(&l->dbs[i], target, database)) {
			pthread_mutex_unlock(&l->lock);
			return atomic_load(&l->dbs[(*idx = i)].active);
		}
	if (n < FLIGHT_LOGICAL_MAX && !l->stop && strlen(database) < sizeof(l->dbs[n].database)) {
		*idx = n;
		struct logical_db *d = &l->dbs[n];
		d->target = *target;
		memcpy(d->database, database, strlen(database) + 1);
		d->db_slot = flight_inval_db_slot(database);
		snprintf(d->slot, sizeof(d->slot), "tusk_cache_%ld_%d", (long)getpid(), n);
		atomic_store(&l->ndbs, n + 1);
		if (!l->started && pthread_create(&l->thread, NULL, logical_thread, l) == 0)
			l->started = true;
		pthread_cond_signal(&l->wake);
	}
	pthread_mutex_unlock(&l->lock);
	return false;
}

/* One identifier at *p (quoted with "" escapes, or bare up to '.', ':' or a space) into out;
 * advances *p. false when malformed or too long. */
static bool read_ident(const char **p, char *out, size_t cap)
{
	const char *s = *p;
	size_t n = 0;

	if (*s == '"') {
		for (s++;; s++) {
			if (*s == '\0')
				return false;
			if (*s == '"') {
				if (s[1] != '"')
					break;
				s++;
			}
			if (n + 1 >= cap)
				return false;
			out[n++] = *s;
		}
		s++;
	} else {
		while (*s && *s != '.' && *s != ':' && *s != ' ') {
			if (n + 1 >= cap)
				return false;
			out[n++] = *s++;
		}
	}
	if (n == 0)
		return false;
	out[n] = '\0';
	*p = s;
	return true;
}

bool flight_logical_table(const char *line, char *out, size_t cap)
{
	const char *p = line;

	if (strncmp(p, "table ", 6) != 0)
		return false;
	p += 6;
	for (;;) {
		if (!read_ident(&p, out, cap))
			return false;
		if (*p == '.') {
			p++;
			continue;
		}
		return *p == ':';
	}
}

static void notice_ignore(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

/* Writes nobody decoded may have happened (a follow begins, or its connection went): what is
 * kept of the database is not proven current any more. */
static void lost_track(struct flight_logical *l, struct logical_db *d)
{
	atomic_store(&d->active, false);
	flight_inval_bump_db(l->iv, d->db_slot);
	atomic_fetch_add_explicit(&l->counters->db_bumps, 1, memory_order_relaxed);
}

static void follow_failed(struct flight_logical *l, struct logical_db *d, const char *what)
{
	const char *msg = d->pg ? PQerrorMessage(d->pg) : "out of memory";

	atomic_fetch_add_explicit(&l->counters->logical_errors, 1, memory_order_relaxed);
	if (!d->warned) /* once per outage: retries every LOGICAL_RETRY would flood the log */
		log_warn(NULL, NULL, "cache: cannot follow database %s on %s:%s by logical decoding (%s): %s; "
			 "its results are not kept until it can",
			 d->target.dbname, d->target.host, d->target.port, what, msg);
	d->warned = true;
	if (d->pg)
		PQfinish(d->pg);
	d->pg = NULL;
	if (atomic_load(&d->active))
		lost_track(l, d);
	d->retry_at = mono_now() + LOGICAL_RETRY;
}

static void start_follow(struct flight_logical *l, struct logical_db *d)
{
	PGresult *res;
	const char *params[1] = { d->slot };

	d->pg = flight_vol_connect(&d->target, "tusk cache decoder", "-c statement_timeout=10s");
	if (!d->pg || PQstatus(d->pg) != CONNECTION_OK) {
		follow_failed(l, d, "connect");
		return;
	}
	PQsetNoticeProcessor(d->pg, notice_ignore, NULL);
	/* Temporary: dropped with the session, so a dead tusk retains no WAL. */
	res = PQexecParams(d->pg, "SELECT pg_create_logical_replication_slot($1, 'test_decoding', true)", 1, NULL,
			   params, NULL, NULL, 0);
	bool ok = PQresultStatus(res) == PGRES_TUPLES_OK;
	PQclear(res);
	if (!ok) {
		follow_failed(l, d, "create a temporary slot");
		return;
	}
	lost_track(l, d); /* what was kept before the slot began is not proven current */
	atomic_store(&d->active, true);
	if (d->warned)
		log_info(NULL, NULL, "cache: following database %s on %s:%s by logical decoding again", d->target.dbname,
			 d->target.host, d->target.port);
	else
		log_info(NULL, NULL, "cache: following database %s on %s:%s by logical decoding", d->target.dbname,
			 d->target.host, d->target.port);
	d->warned = false;
}

static void poll_db(struct flight_logical *l, struct logical_db *d)
{
	const char *params[1] = { d->slot };
	char table[FLIGHT_NAME_MAX];

	PGresult *res = PQexecParams(d->pg,
				     "SELECT data FROM pg_logical_slot_get_changes($1, NULL, " LOGICAL_BATCH
				     ", 'skip-empty-xacts', '1', 'include-xids', '0')",
				     1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		PQclear(res);
		follow_failed(l, d, "read changes");
		return;
	}
	uint64_t changes = 0;
	for (int i = 0; i < PQntuples(res); i++) {
		const char *line = PQgetvalue(res, i, 0);
		if (flight_logical_table(line, table, sizeof(table))) {
			flight_inval_bump(l->iv, flight_inval_slot(d->database, table));
			changes++;
		} else if (strncmp(line, "table ", 6) == 0) {
			/* A name this parser cannot read: the whole database, rather than a miss. */
			flight_inval_bump_db(l->iv, d->db_slot);
			atomic_fetch_add_explicit(&l->counters->db_bumps, 1, memory_order_relaxed);
		}
	}
	PQclear(res);
	if (changes) {
		atomic_fetch_add_explicit(&l->counters->logical_changes, changes, memory_order_relaxed);
		atomic_fetch_add_explicit(&l->counters->table_bumps, changes, memory_order_relaxed);
	}
}

static void *logical_thread(void *arg)
{
	struct flight_logical *l = arg;

	pthread_mutex_lock(&l->lock);
	while (!l->stop) {
		int n = atomic_load(&l->ndbs);
		pthread_mutex_unlock(&l->lock);
		double now = mono_now();
		for (int i = 0; i < n; i++) {
			struct logical_db *d = &l->dbs[i];
			if (!d->pg && now >= d->retry_at)
				start_follow(l, d);
			else if (d->pg)
				poll_db(l, d);
		}
		pthread_mutex_lock(&l->lock);
		if (l->stop)
			break;
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		double until = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9 + l->poll;
		ts.tv_sec = (time_t)until;
		ts.tv_nsec = (long)((until - (double)ts.tv_sec) * 1e9);
		pthread_cond_timedwait(&l->wake, &l->lock, &ts);
	}
	pthread_mutex_unlock(&l->lock);
	return NULL;
}
