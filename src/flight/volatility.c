/* Function volatility from pg_proc (volatility.h): the answers, and the thread that reads
 * the catalog. One mutex guards the answers and the queue; the thread holds it only to take
 * a request and to store an answer, never during I/O. */
#include "flight/volatility.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pq/pq.h"
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

/* Catalog relation dependencies (volatility.h, flight_vol_deps) of one relation name: a row
 * per relation a write to which can change a read of it, its name and whether the read
 * evaluates something there that tusk cannot follow. dep(oid, fwd): fwd when the read itself
 * evaluates the relation (the relation named, a view's base relations, a parent's partitions
 * and inheritance children, what the row-security policies of each read relation read);
 * !fwd when only writes to it reach those (views over it, its rules' relations, its parents,
 * the tables whose foreign-key actions write it). $2 = '' for an unqualified name: every
 * relation of that name in any schema. Functions are read from the stored trees (built-in
 * ones are pinned, so pg_depend does not list them): a view's rule or a policy's USING with
 * a function or operator that is not immutable, a clock SQL value function, nextval, or a
 * coercion to a time type (whose input reads 'now') is not followed exactly. */
static const char deps_sql[] =
	"WITH RECURSIVE dep(oid, fwd) AS ("
	" SELECT c.oid, true FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
	"  WHERE c.relname = $1 AND ($2 = '' OR n.nspname = $2) AND n.nspname !~ '^pg_(toast_)?temp_'"
	" UNION"
	" SELECT x.oid, x.fwd FROM dep d CROSS JOIN LATERAL ("
	"  SELECT dd.refobjid, true FROM pg_catalog.pg_rewrite r"
	"   JOIN pg_catalog.pg_class vc ON vc.oid = r.ev_class AND vc.relkind = 'v'"
	"   JOIN pg_catalog.pg_depend dd ON dd.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND dd.objid = r.oid"
	"   WHERE d.fwd AND r.ev_class = d.oid AND r.ev_type = '1'"
	"    AND dd.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND dd.refobjid <> d.oid"
	"  UNION ALL SELECT i.inhrelid, true FROM pg_catalog.pg_inherits i WHERE d.fwd AND i.inhparent = d.oid"
	"  UNION ALL SELECT dd.refobjid, true FROM pg_catalog.pg_policy p"
	"   JOIN pg_catalog.pg_class pc ON pc.oid = p.polrelid AND pc.relrowsecurity"
	"   JOIN pg_catalog.pg_depend dd ON dd.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass AND dd.objid = p.oid"
	"   WHERE d.fwd AND p.polrelid = d.oid"
	"    AND dd.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND dd.refobjid <> d.oid"
	"  UNION ALL SELECT r.ev_class, false FROM pg_catalog.pg_depend dd"
	"   JOIN pg_catalog.pg_rewrite r ON dd.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND dd.objid = r.oid"
	"   WHERE dd.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND dd.refobjid = d.oid AND r.ev_class <> d.oid"
	"  UNION ALL SELECT i.inhparent, false FROM pg_catalog.pg_inherits i WHERE i.inhrelid = d.oid"
	"  UNION ALL SELECT k.confrelid, false FROM pg_catalog.pg_constraint k"
	"   WHERE k.conrelid = d.oid AND k.contype = 'f'"
	"    AND (k.confdeltype IN ('c', 'n', 'd') OR k.confupdtype IN ('c', 'n', 'd'))"
	" ) x(oid, fwd)"
	"), nodes AS ("
	" SELECT c.oid, c.relname, c.relkind, c.relrowsecurity, bool_or(d.fwd) AS fwd"
	"  FROM dep d JOIN pg_catalog.pg_class c ON c.oid = d.oid GROUP BY 1, 2, 3, 4"
	"), exprs AS ("
	" SELECT n.oid, r.ev_action::text AS t FROM nodes n JOIN pg_catalog.pg_rewrite r ON r.ev_class = n.oid"
	"  WHERE n.fwd AND n.relkind = 'v' AND r.ev_type = '1'"
	" UNION ALL SELECT n.oid, p.polqual::text FROM nodes n JOIN pg_catalog.pg_policy p ON p.polrelid = n.oid"
	"  WHERE n.fwd AND n.relrowsecurity AND p.polqual IS NOT NULL"
	"), bad AS ("
	" SELECT e.oid FROM exprs e"
	"  WHERE e.t ~ '\\{(SQLVALUEFUNCTION :op [0-8] |NEXTVALUEEXPR|CURRENTOFEXPR)'"
	"   OR e.t ~ ':resulttype (1082|1083|1114|1184|1266) '"
	"   OR EXISTS (SELECT 1 FROM regexp_matches(e.t, ':(funcid|opfuncid|aggfnoid|winfnoid) ([0-9]+)', 'g') m"
	"    LEFT JOIN pg_catalog.pg_proc f ON f.oid = m[2]::pg_catalog.oid"
	"    WHERE m[2] <> '0' AND (f.oid IS NULL OR f.provolatile <> 'i'))"
	"   OR EXISTS (SELECT 1 FROM regexp_matches(e.t, ':opno ([0-9]+)', 'g') m"
	"    LEFT JOIN pg_catalog.pg_operator o ON o.oid = m[1]::pg_catalog.oid"
	"    LEFT JOIN pg_catalog.pg_proc f ON f.oid = o.oprcode WHERE f.oid IS NULL OR f.provolatile <> 'i')"
	")"
	" SELECT n.relname, n.fwd AND (n.relkind IN ('S', 'f') OR n.oid IN (SELECT oid FROM bad)) FROM nodes n";

/* Relations a write to which may write elsewhere, unseen: user triggers (foreign-key actions
 * are internal triggers, followed by deps_sql) and rules other than a view's SELECT. */
static const char fanout_sql[] =
	"SELECT DISTINCT c.relname FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid"
	" WHERE NOT t.tgisinternal"
	" UNION SELECT c.relname FROM pg_catalog.pg_rewrite r JOIN pg_catalog.pg_class c ON c.oid = r.ev_class"
	" WHERE r.ev_type <> '1'";

#define FANOUT_MAX 4096 /* relations with triggers kept by name; past it every write bumps the database */

/* What an entry answers: a function's volatility, a relation's dependencies, or the
 * database's relations with triggers and rules. */
enum vol_kind { VOL_FUNC, VOL_REL, VOL_FANOUT };

struct vol_name {
	char kind;
	char service[FLIGHT_NAME_MAX];
	char server_db[FLIGHT_NAME_MAX];
	char database[FLIGHT_NAME_MAX];
	struct flight_relation func;
};

/* A relation kind's answer: names (VOL_REL: its dependency set; VOL_FANOUT: the relations
 * with triggers or rules) and VOL_REL's verdict. */
struct vol_names {
	int n;
	char (*names)[FLIGHT_NAME_MAX];
	enum flight_verdict why; /* VOL_REL: FLIGHT_OK, FLIGHT_DEPENDENCY or FLIGHT_TOO_BIG */
	bool all;                /* VOL_FANOUT: too many to keep, every write fans out */
};

struct vol_entry {
	struct vol_entry *next;
	struct vol_name id;
	uint16_t db_slot;
	uint64_t db_v;   /* the database's DDL version (inval.h) before the lookup was sent */
	double expires;  /* monotonic seconds; 0 while no answer */
	bool immutable;
	bool queued;     /* a lookup for it waits or runs */
	struct vol_names rel;
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
	id->kind = VOL_FUNC;
	snprintf(id->service, sizeof(id->service), "%s", db->service);
	snprintf(id->server_db, sizeof(id->server_db), "%s", db->server_db);
	snprintf(id->database, sizeof(id->database), "%s", db->database);
	id->func = *f;
}

static bool name_equal(const struct vol_name *a, const struct vol_name *b)
{
	return a->kind == b->kind && strcmp(a->func.name, b->func.name) == 0 && strcmp(a->func.schema, b->func.schema) == 0 &&
	       strcmp(a->database, b->database) == 0 && strcmp(a->server_db, b->server_db) == 0 &&
	       strcmp(a->service, b->service) == 0;
}

static unsigned name_hash(const struct vol_name *id)
{
	uint64_t h = (1469598103934665603u ^ (unsigned char)id->kind) * 1099511628211u;
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
			free(e->rel.names);
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

/* Under the lock: queues a lookup of id unless one waits or runs, or its answer is current
 * (one lookup per name however many requests ask: the lookup is single-flight). False when
 * it could not (no memory, the queue full, no thread). */
static bool queue_locked(struct flight_vol *v, struct flight_inval *iv, const struct flight_vol_db *db,
			 const struct vol_name *id, const struct flight_vol_target *target, double ttl, double now)
{
	struct vol_entry *e = find(v, id);
	if (e && (e->queued || current(e, iv, now)))
		return true;
	if (v->stop)
		return false;
	if (!e) {
		if (v->nentries >= VOL_MAX || !(e = calloc(1, sizeof(*e))))
			return false;
		e->id = *id;
		unsigned b = name_hash(id);
		e->next = v->buckets[b];
		v->buckets[b] = e;
		v->nentries++;
	}
	struct vol_req *r;
	if (v->nqueued >= FLIGHT_VOL_QUEUE || !(r = calloc(1, sizeof(*r))))
		return false;
	if (!v->started) {
		if (pthread_create(&v->thread, NULL, vol_thread, v) != 0) {
			free(r);
			return false;
		}
		v->started = true;
	}
	r->id = *id;
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
	pthread_cond_signal(&v->wake);
	return true;
}

void flight_vol_lookup(struct flight_vol *v, struct flight_inval *iv, const struct flight_vol_db *db,
		       const struct flight_relation *funcs, int n, const struct flight_vol_target *target, double ttl)
{
	double now = mono_now();
	struct vol_name id;

	pthread_mutex_lock(&v->lock);
	for (int i = 0; i < n; i++) {
		name_of(&id, db, &funcs[i]);
		if (!queue_locked(v, iv, db, &id, target, ttl, now))
			break;
	}
	pthread_mutex_unlock(&v->lock);
}

static void rel_name_of(struct vol_name *id, const struct flight_vol_db *db, const struct flight_relation *t,
			enum vol_kind kind)
{
	static const struct flight_relation none = { "", "" };
	name_of(id, db, kind == VOL_REL ? t : &none);
	id->kind = (char)kind;
}

/* Adds name to d's tables unless there; false when they are full. */
static bool add_dep(struct flight_relation *tables, int *n, const char *name)
{
	for (int i = 0; i < *n; i++)
		if (strcmp(tables[i].name, name) == 0)
			return true;
	if (*n == FLIGHT_MAX_TABLES)
		return false;
	tables[*n].schema[0] = '\0';
	snprintf(tables[*n].name, sizeof(tables[*n].name), "%s", name);
	(*n)++;
	return true;
}

enum flight_verdict flight_vol_deps(struct flight_vol *v, struct flight_inval *iv, const struct flight_vol_db *db,
				    struct flight_decision *d, const struct flight_vol_target *target, double ttl)
{
	struct flight_relation out[FLIGHT_MAX_TABLES];
	enum flight_verdict verdict = FLIGHT_OK;
	double now = mono_now();
	struct vol_name id;
	int n = 0;

	pthread_mutex_lock(&v->lock);
	for (int i = 0; i < d->ntables; i++) {
		rel_name_of(&id, db, &d->tables[i], VOL_REL);
		struct vol_entry *e = find(v, &id);
		if (!e || !current(e, iv, now)) {
			if (target)
				(void)queue_locked(v, iv, db, &id, target, ttl, now);
			verdict = FLIGHT_CALL_LOOKUP;
			continue;
		}
		if (verdict != FLIGHT_OK)
			continue;
		if (e->rel.why != FLIGHT_OK) {
			verdict = e->rel.why;
			continue;
		}
		/* The name itself first: a name the catalog does not know (a CTE) is followed too. */
		bool room = add_dep(out, &n, d->tables[i].name);
		for (int k = 0; k < e->rel.n && room; k++)
			room = add_dep(out, &n, e->rel.names[k]);
		if (!room)
			verdict = FLIGHT_TOO_BIG;
	}
	pthread_mutex_unlock(&v->lock);
	if (verdict == FLIGHT_OK) {
		memcpy(d->tables, out, (size_t)n * sizeof(out[0]));
		d->ntables = n;
	}
	return verdict;
}

bool flight_vol_write_fans_out(struct flight_vol *v, struct flight_inval *iv, const struct flight_vol_db *db,
			       const char *table, const struct flight_vol_target *target, double ttl)
{
	double now = mono_now();
	struct vol_name id;
	bool fans = true;

	rel_name_of(&id, db, NULL, VOL_FANOUT);
	pthread_mutex_lock(&v->lock);
	struct vol_entry *e = find(v, &id);
	if (!e || !current(e, iv, now)) {
		if (target)
			(void)queue_locked(v, iv, db, &id, target, ttl, now);
	} else if (!e->rel.all) {
		fans = false;
		for (int k = 0; k < e->rel.n && !fans; k++)
			fans = strcmp(e->rel.names[k], table) == 0;
	}
	pthread_mutex_unlock(&v->lock);
	return fans;
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

/* A relation kind's rows into *a (names in column 0; VOL_REL: column 1 't' when the read
 * cannot be followed there). 0, or -1 out of memory. */
static int read_names(const struct vol_req *r, PGresult *res, struct vol_names *a)
{
	int rows = PQntuples(res);
	int cap = r->id.kind == VOL_REL ? FLIGHT_MAX_TABLES : FANOUT_MAX;

	a->why = FLIGHT_OK;
	if (rows > cap) {
		a->why = FLIGHT_TOO_BIG;
		a->all = true;
		return 0;
	}
	a->names = rows ? calloc((size_t)rows, sizeof(a->names[0])) : NULL;
	if (rows && !a->names)
		return -1;
	for (int i = 0; i < rows; i++) {
		if (r->id.kind == VOL_REL && strcmp(PQgetvalue(res, i, 1), "t") == 0)
			a->why = FLIGHT_DEPENDENCY;
		const char *name = PQgetvalue(res, i, 0);
		bool have = false;
		for (int k = 0; k < a->n && !have; k++)
			have = strcmp(a->names[k], name) == 0;
		if (!have && strlen(name) < FLIGHT_NAME_MAX)
			snprintf(a->names[a->n++], FLIGHT_NAME_MAX, "%s", name);
	}
	return 0;
}

/* VOL_FUNC: 1 immutable, 0 not (or no such function); the relation kinds: 1 answered (*a);
 * -1 the lookup failed. */
static int look_up(struct flight_vol *v, const struct vol_req *r, struct vol_names *a)
{
	PGconn *pg = conn_for(v, &r->target);
	if (!pg)
		return -1;
	const char *params[2] = { r->id.func.name, r->id.func.schema };
	PGresult *res = r->id.kind == VOL_FUNC ? PQexecParams(pg, vol_sql, 2, NULL, params, NULL, NULL, 0)
			: r->id.kind == VOL_REL ? PQexecParams(pg, deps_sql, 2, NULL, params, NULL, NULL, 0)
						: PQexec(pg, fanout_sql);
	int rc = -1;
	if (r->id.kind != VOL_FUNC && res && PQresultStatus(res) == PGRES_TUPLES_OK &&
	    PQnfields(res) == (r->id.kind == VOL_REL ? 2 : 1))
		rc = read_names(r, res, a) == 0 ? 1 : -1;
	else if (r->id.kind == VOL_FUNC && res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
		 PQnfields(res) == 2)
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

		struct vol_names a = { 0 };
		int rc = look_up(v, r, &a);
		if (r->id.kind == VOL_FUNC)
			log_debug(NULL, NULL, "cache: function %s%s%s is %s", r->id.func.schema,
				  r->id.func.schema[0] ? "." : "", r->id.func.name,
				  rc > 0 ? "immutable" : rc == 0 ? "not immutable" : "unknown (lookup failed)");
		else
			log_debug(NULL, NULL, "cache: %s %s%s%s: %d relations, %s", r->id.kind == VOL_REL ? "dependencies of" : "relations with triggers", r->id.func.schema,
				  r->id.func.schema[0] ? "." : "", r->id.func.name, a.n,
				  rc < 0 ? "unknown (lookup failed)" : flight_verdict_name(a.why));
		if (rc < 0) {
			/* Failed: not followed until retried (a dependency bypasses, a write fans out). */
			free(a.names);
			a = (struct vol_names){ .why = FLIGHT_DEPENDENCY, .all = true };
		}
		double now = mono_now();

		pthread_mutex_lock(&v->lock);
		struct vol_entry *e = find(v, &r->id);
		if (e) {
			e->queued = false;
			e->db_slot = r->db_slot;
			e->db_v = r->db_v;
			e->immutable = rc > 0;
			e->expires = now + (rc < 0 ? VOL_FAIL_TTL : r->ttl);
			free(e->rel.names);
			e->rel = a;
		} else {
			free(a.names);
		}
		OPENSSL_cleanse(&r->target, sizeof(r->target));
		free(r);
	}
	pthread_mutex_unlock(&v->lock);
	return NULL;
}
