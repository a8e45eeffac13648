/* Function volatility from pg_proc (volatility.h): the answers, and the thread that reads
 * the catalog. One mutex guards the answers and the queue; the thread holds it only to take
 * a request and to store an answer, never during I/O. */
#include "flight/volatility.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>
#include <openssl/crypto.h>

#include "util/log.h"

#define VOL_BUCKETS   1024
#define VOL_MAX       8192 /* answers kept; past it, new names bypass until CACHE FLUSH */
#define VOL_CONNS     4    /* catalog connections the thread keeps open */
#define VOL_FAIL_TTL  5.0  /* a failed lookup is not retried for this long (names bypass) */

/* Immutable iff there is at least one row and every row is an immutable function, aggregate
 * or window function; $2 = '' for an unqualified name (any schema, whatever the search_path). */
static const char vol_sql[] =
	"SELECT count(*), coalesce(bool_and(p.provolatile = 'i' AND p.prokind IN ('f', 'a', 'w')), false) "
	"FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
	"WHERE p.proname = $1 AND ($2 = '' OR n.nspname = $2)";

struct vol_name {
	char service[FLIGHT_NAME_MAX];
	char server_db[FLIGHT_NAME_MAX];
	char database[FLIGHT_NAME_MAX];
	struct flight_relation func;
};

struct vol_entry {
	struct vol_entry *next;
	struct vol_name id;
	uint16_t db_slot;
	uint64_t db_v;   /* the database's DDL version (inval.h) before the lookup was sent */
	double expires;  /* monotonic seconds; 0 while no answer */
	bool immutable;
	bool queued;     /* a lookup for it waits or runs */
};

struct vol_req {
	struct vol_req *next;
	struct vol_name id;
	uint16_t db_slot;
	uint64_t db_v;
	double ttl;
	struct flight_vol_target target;
};

struct vol_conn {
	PGconn *pg;
	struct flight_vol_target target;
};

struct flight_vol {
	pthread_mutex_t lock; /* everything below but conns (the thread's alone) */
	pthread_cond_t wake;
	struct vol_entry *buckets[VOL_BUCKETS];
	int nentries;
	struct vol_req *head, *tail;
	int nqueued;
	bool started, stop;
	pthread_t thread;
	struct vol_conn conns[VOL_CONNS];
};

static double mono_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void name_of(struct vol_name *id, const struct flight_vol_db *db, const struct flight_relation *f)
{
	memset(id, 0, sizeof(*id));
	snprintf(id->service, sizeof(id->service), "%s", db->service);
	snprintf(id->server_db, sizeof(id->server_db), "%s", db->server_db);
	snprintf(id->database, sizeof(id->database), "%s", db->database);
	id->func = *f;
}

static bool name_equal(const struct vol_name *a, const struct vol_name *b)
{
	return strcmp(a->func.name, b->func.name) == 0 && strcmp(a->func.schema, b->func.schema) == 0 &&
	       strcmp(a->database, b->database) == 0 && strcmp(a->server_db, b->server_db) == 0 &&
	       strcmp(a->service, b->service) == 0;
}

static unsigned name_hash(const struct vol_name *id)
{
	uint64_t h = 1469598103934665603u;
	const char *parts[] = { id->service, id->server_db, id->database, id->func.schema, id->func.name };
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
		for (const char *p = parts[i]; *p; p++)
			h = (h ^ (unsigned char)*p) * 1099511628211u;
		h = (h ^ 0xff) * 1099511628211u; /* a separator no name byte equals */
	}
	return (unsigned)(h % VOL_BUCKETS);
}

/* Under the lock. */
static struct vol_entry *find(struct flight_vol *v, const struct vol_name *id)
{
	for (struct vol_entry *e = v->buckets[name_hash(id)]; e; e = e->next)
		if (name_equal(&e->id, id))
			return e;
	return NULL;
}

static bool current(const struct vol_entry *e, struct flight_inval *iv, double now)
{
	return e->expires > now && atomic_load(&iv->ddl[e->db_slot]) == e->db_v;
}

struct flight_vol *flight_vol_new(void)
{
	struct flight_vol *v = calloc(1, sizeof(*v));
	if (!v)
		return NULL;
	if (pthread_mutex_init(&v->lock, NULL) != 0)
		goto err_free;
	if (pthread_cond_init(&v->wake, NULL) != 0)
		goto err_mutex;
	return v;
err_mutex:
	pthread_mutex_destroy(&v->lock);
err_free:
	free(v);
	return NULL;
}

void flight_vol_free(struct flight_vol *v)
{
	if (!v)
		return;
	pthread_mutex_lock(&v->lock);
	v->stop = true;
	pthread_cond_signal(&v->wake);
	bool started = v->started;
	pthread_mutex_unlock(&v->lock);
	if (started)
		pthread_join(v->thread, NULL);
	for (struct vol_req *r = v->head, *next; r; r = next) {
		next = r->next;
		OPENSSL_cleanse(&r->target, sizeof(r->target));
		free(r);
	}
	for (int i = 0; i < VOL_CONNS; i++)
		if (v->conns[i].pg)
			PQfinish(v->conns[i].pg);
	OPENSSL_cleanse(v->conns, sizeof(v->conns));
	for (int b = 0; b < VOL_BUCKETS; b++)
		for (struct vol_entry *e = v->buckets[b], *next; e; e = next) {
			next = e->next;
			free(e);
		}
	pthread_cond_destroy(&v->wake);
	pthread_mutex_destroy(&v->lock);
	free(v);
}

enum flight_vol_answer flight_vol_check(struct flight_vol *v, struct flight_inval *iv, const struct flight_vol_db *db,
					const struct flight_relation *funcs, int n)
{
	enum flight_vol_answer a = FLIGHT_VOL_IMMUTABLE;
	double now = mono_now();
	struct vol_name id;

	pthread_mutex_lock(&v->lock);
	for (int i = 0; i < n && a != FLIGHT_VOL_VOLATILE; i++) {
		name_of(&id, db, &funcs[i]);
		struct vol_entry *e = find(v, &id);
		if (!e || !current(e, iv, now))
			a = FLIGHT_VOL_UNKNOWN;
		else if (!e->immutable)
			a = FLIGHT_VOL_VOLATILE;
	}
	pthread_mutex_unlock(&v->lock);
	return a;
}

static void *vol_thread(void *arg);

void flight_vol_lookup(struct flight_vol *v, struct flight_inval *iv, const struct flight_vol_db *db,
		       const struct flight_relation *funcs, int n, const struct flight_vol_target *target, double ttl)
{
	double now = mono_now();
	struct vol_name id;

	pthread_mutex_lock(&v->lock);
	for (int i = 0; i < n && !v->stop; i++) {
		name_of(&id, db, &funcs[i]);
		struct vol_entry *e = find(v, &id);
		if (e && (e->queued || current(e, iv, now)))
			continue;
		if (!e) {
			if (v->nentries >= VOL_MAX || !(e = calloc(1, sizeof(*e))))
				continue;
			e->id = id;
			unsigned b = name_hash(&id);
			e->next = v->buckets[b];
			v->buckets[b] = e;
			v->nentries++;
		}
		struct vol_req *r;
		if (v->nqueued >= FLIGHT_VOL_QUEUE || !(r = calloc(1, sizeof(*r))))
			continue;
		if (!v->started) {
			if (pthread_create(&v->thread, NULL, vol_thread, v) != 0) {
				free(r);
				break;
			}
			v->started = true;
		}
		r->id = id;
		r->db_slot = db->db_slot;
		/* Before the lookup is sent: DDL committing meanwhile makes its answer unused. */
		r->db_v = atomic_load(&iv->ddl[db->db_slot]);
		r->ttl = ttl;
		r->target = *target;
		e->queued = true;
		if (v->tail)
			v->tail->next = r;
		else
			v->head = r;
		v->tail = r;
		v->nqueued++;
	}
	pthread_cond_signal(&v->wake);
	pthread_mutex_unlock(&v->lock);
}

bool flight_vol_target_equal(const struct flight_vol_target *a, const struct flight_vol_target *b)
{
	return strcmp(a->host, b->host) == 0 && strcmp(a->port, b->port) == 0 && strcmp(a->dbname, b->dbname) == 0 &&
	       strcmp(a->user, b->user) == 0 && strcmp(a->password, b->password) == 0 &&
	       strcmp(a->sslmode, b->sslmode) == 0 && strcmp(a->sslrootcert, b->sslrootcert) == 0;
}

static void notice_ignore(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

static void close_conn(struct vol_conn *k)
{
	if (k->pg)
		PQfinish(k->pg);
	OPENSSL_cleanse(k, sizeof(*k));
}

PGconn *flight_vol_connect(const struct flight_vol_target *t, const char *application_name, const char *options)
{
	const char *keys[12], *vals[12];
	int n = 0;

#define ADD(k, val)                             \
	if ((val)[0]) {                         \
		keys[n] = k, vals[n++] = (val); \
	}
	ADD("host", t->host)
	ADD("port", t->port)
	ADD("dbname", t->dbname)
	ADD("user", t->user)
	ADD("password", t->password)
	ADD("sslmode", t->sslmode)
	ADD("sslrootcert", t->sslrootcert)
#undef ADD
	keys[n] = "application_name", vals[n++] = application_name;
	keys[n] = "connect_timeout", vals[n++] = "5";
	keys[n] = "options", vals[n++] = options;
	keys[n] = NULL, vals[n] = NULL;
	return PQconnectdbParams(keys, vals, 0);
}

/* The thread's connection for t: kept, or opened (the oldest slot closed for it). */
static PGconn *conn_for(struct flight_vol *v, const struct flight_vol_target *t)
{
	for (int i = 0; i < VOL_CONNS; i++)
		if (v->conns[i].pg && flight_vol_target_equal(&v->conns[i].target, t))
			return v->conns[i].pg;
	close_conn(&v->conns[VOL_CONNS - 1]);
	memmove(&v->conns[1], &v->conns[0], sizeof(v->conns[0]) * (VOL_CONNS - 1));
	memset(&v->conns[0], 0, sizeof(v->conns[0]));
	PGconn *pg = flight_vol_connect(t, "tusk cache catalog", "-c statement_timeout=5s -c default_transaction_read_only=on");
	if (!pg || PQstatus(pg) != CONNECTION_OK) {
		log_warn(NULL, NULL, "cache: cannot read function volatility from %s/%s: %s", t->host, t->dbname,
			 pg ? PQerrorMessage(pg) : "out of memory");
		if (pg)
			PQfinish(pg);
		return NULL;
	}
	PQsetNoticeProcessor(pg, notice_ignore, NULL);
	v->conns[0].pg = pg;
	v->conns[0].target = *t;
	return pg;
}

/* 1 immutable, 0 not (or no such function), -1 the lookup failed. */
static int look_up(struct flight_vol *v, const struct vol_req *r)
{
	PGconn *pg = conn_for(v, &r->target);
	if (!pg)
		return -1;
	const char *params[2] = { r->id.func.name, r->id.func.schema };
	PGresult *res = PQexecParams(pg, vol_sql, 2, NULL, params, NULL, NULL, 0);
	int rc = -1;
	if (res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && PQnfields(res) == 2)
		rc = strcmp(PQgetvalue(res, 0, 0), "0") != 0 && strcmp(PQgetvalue(res, 0, 1), "t") == 0;
	else
		log_warn(NULL, NULL, "cache: reading function volatility failed: %s", PQerrorMessage(pg));
	PQclear(res);
	if (rc < 0) {
		for (int i = 0; i < VOL_CONNS; i++)
			if (v->conns[i].pg == pg)
				close_conn(&v->conns[i]); /* opened again by the next lookup */
	}
	return rc;
}

static void *vol_thread(void *arg)
{
	struct flight_vol *v = arg;

	pthread_mutex_lock(&v->lock);
	for (;;) {
		while (!v->head && !v->stop)
			pthread_cond_wait(&v->wake, &v->lock);
		if (v->stop)
			break;
		struct vol_req *r = v->head;
		v->head = r->next;
		if (!v->head)
			v->tail = NULL;
		v->nqueued--;
		pthread_mutex_unlock(&v->lock);

		int rc = look_up(v, r);
		log_debug(NULL, NULL, "cache: function %s%s%s is %s", r->id.func.schema, r->id.func.schema[0] ? "." : "",
			  r->id.func.name, rc > 0 ? "immutable" : rc == 0 ? "not immutable" : "unknown (lookup failed)");
		double now = mono_now();

		pthread_mutex_lock(&v->lock);
		struct vol_entry *e = find(v, &r->id);
		if (e) {
			e->queued = false;
			e->db_slot = r->db_slot;
			e->db_v = r->db_v;
			e->immutable = rc > 0;
			e->expires = now + (rc < 0 ? VOL_FAIL_TTL : r->ttl);
		}
		OPENSSL_cleanse(&r->target, sizeof(r->target));
		free(r);
	}
	pthread_mutex_unlock(&v->lock);
	return NULL;
}
