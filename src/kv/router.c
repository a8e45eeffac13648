/* Routed kv calls (router.h). Owns the executor threads, their connections to this zone's
 * shard databases, the job queue and the little of the catalog routing needs (shard count,
 * the zone's instance). A call is one statement on one shard, so it is applied whole or not
 * at all; a connection lost after a write was sent is reported as such (the write may have
 * committed), never retried behind the client's back. */
#include "kv/router.h"
#include "kv/router_int.h"

#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <sys/socket.h>
#include "pq/pq.h"
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config/config.h"
#include "kv/catalog.h"
#include "kv/hash.h"
#include "kv/schema.h"
#include "util/grow.h"
#include "util/log.h"
#include "worker/worker.h"

#define CATALOG_RETRY_S 1.0
/* A worker waits this long for a shard's answer to a call, then drops the connection: the
 * shard's statement_timeout (60 s, kv/conn.c) and a margin, so a shard that stopped
 * answering (a hung host, a lost network) holds no call forever. */
#define KV_CALL_TIMEOUT_S 65.0
#define KV_IDLE_CLOSE_S 10.0

static double now_mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void kv_job_fail(struct kv_job *job, const char *sqlstate, const char *fmt, ...)
{
	va_list ap;

	job->failed = true;
	job->ours = true;
	snprintf(job->sqlstate, sizeof job->sqlstate, "%s", sqlstate);
	va_start(ap, fmt);
	vsnprintf(job->message, sizeof job->message, fmt, ap);
	va_end(ap);
}

void kv_job_fail_result(struct kv_job *job, const PGresult *res, PGconn *conn)
{
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
	const char *hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);

	job->failed = true;
	job->ours = false;
	snprintf(job->sqlstate, sizeof job->sqlstate, "%s", state ? state : "XX000");
	snprintf(job->message, sizeof job->message, "%s", msg ? msg : PQerrorMessage(conn));
	snprintf(job->detail, sizeof job->detail, "%s", detail ? detail : "");
	snprintf(job->hint, sizeof job->hint, "%s", hint ? hint : "");
}

/* ---- output ---- */

static bool rows_reserve(struct kv_job *job, size_t n)
{
	uint8_t *d = grow_bytes(job->rows, &job->rows_cap, job->rows_len + n, 4096);
	if (!d)
		return false;
	job->rows = d;
	return true;
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* A DataRow of ncols text values (NULL: SQL NULL). */
static bool add_row(struct kv_job *job, int ncols, const char *const *vals, const int *lens)
{
	size_t len = 4 + 2;
	for (int i = 0; i < ncols; i++)
		len += 4 + (vals[i] ? (size_t)lens[i] : 0);
	if (len > INT32_MAX || !rows_reserve(job, len + 1))
		return false;
	uint8_t *p = job->rows + job->rows_len;
	*p++ = 'D';
	put32(p, (uint32_t)len), p += 4;
	*p++ = (uint8_t)(ncols >> 8), *p++ = (uint8_t)ncols;
	for (int i = 0; i < ncols; i++) {
		if (!vals[i]) {
			put32(p, UINT32_MAX), p += 4;
			continue;
		}
		put32(p, (uint32_t)lens[i]), p += 4;
		memcpy(p, vals[i], (size_t)lens[i]), p += lens[i];
	}
	job->rows_len += len + 1;
	job->nrows++;
	return true;
}

/* ---- catalog ---- */

/* Whether the comma-separated list holds item as one whole entry (not a part of one:
 * 127.0.0.1 is not in "127.0.0.10"). */
bool kv_csv_has(const char *list, const char *item)
{
	size_t n = strlen(item);
	for (const char *p = list; *p;) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (len == n && memcmp(p, item, n) == 0)
			return true;
		if (!end)
			break;
		p = end + 1;
	}
	return false;
}

/* A route to instance (of zone), with the addresses for the workers' connects (a connect on a
 * worker's loop must not wait for DNS: libpq resolves a host name inside PQconnectStartParams).
 * On a router thread or the catalog's (kv_router_follow), never a worker's. A host that does
 * not resolve leaves every call to the threads, which report it as they always did. NULL: no
 * memory. */
static struct kv_route *route_new(const struct kv_instance *in)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res = NULL;
	size_t na = 0, nh = 0;
	int n = 0;
	struct kv_route *rt = calloc(1, sizeof *rt);

	if (!rt)
		return NULL;
	rt->instance_id = in->id;
	snprintf(rt->host, sizeof rt->host, "%s", in->host);
	rt->port = in->port;
	if (rt->host[0] == '/' || rt->host[0] == '@') {
		/* A Unix socket: its connect does not block, and libpq takes it without hostaddr. */
		snprintf(rt->hosts, sizeof rt->hosts, "%s", rt->host);
		rt->resolved = true;
		return rt;
	}
	int rc = getaddrinfo(rt->host, NULL, &hints, &res);
	if (rc != 0) {
		log_warn(NULL, NULL, "kv: %s does not resolve (%s): every call runs on the router's threads", rt->host,
			 gai_strerror(rc));
		return rt;
	}
	for (struct addrinfo *ai = res; ai && n < KV_HOSTADDR_MAX; ai = ai->ai_next) {
		char num[NI_MAXHOST];
		if (getnameinfo(ai->ai_addr, ai->ai_addrlen, num, sizeof num, NULL, 0, NI_NUMERICHOST) != 0)
			continue;
		if (kv_csv_has(rt->hostaddr, num)) /* getaddrinfo repeats an address per protocol */
			continue;
		if (na + strlen(num) + 2 > sizeof rt->hostaddr || nh + strlen(rt->host) + 2 > sizeof rt->hosts)
			break;
		na += (size_t)snprintf(rt->hostaddr + na, sizeof rt->hostaddr - na, "%s%s", n ? "," : "", num);
		nh += (size_t)snprintf(rt->hosts + nh, sizeof rt->hosts - nh, "%s%s", n ? "," : "", rt->host);
		n++;
	}
	freeaddrinfo(res);
	rt->resolved = n > 0;
	return rt;
}

/* rt becomes the newest route (under cat_mu). */
static void route_publish(struct kv_router *r, struct kv_route *rt)
{
	struct kv_route *old = atomic_load_explicit(&r->route, memory_order_relaxed);
	rt->older = old;
	atomic_store_explicit(&r->route, rt, memory_order_release);
}

/* The instance of zone in cat (the lowest id when several), or NULL. */
static const struct kv_instance *zone_instance(const struct kv_catalog *cat, const char *zone)
{
	const struct kv_instance *best = NULL;
	for (int i = 0; i < cat->ninstances; i++)
		if (strcmp(cat->instances[i].zone, zone) == 0 && (!best || cat->instances[i].id < best->id))
			best = &cat->instances[i];
	return best;
}

static void nstab_publish(struct kv_router *r, struct kv_catalog *cat);

/* The shard count and this zone's instance: 0, or -EAGAIN with the reason in err. */
static int ensure_catalog(struct kv_router *r, int *nshards, char err[KV_ERR_MAX])
{
	int rc = 0;

	pthread_mutex_lock(&r->cat_mu);
	if (r->nshards > 0) {
		*nshards = r->nshards;
		goto out;
	}
	if (r->cat_tried > 0 && now_mono() - r->cat_tried < CATALOG_RETRY_S) {
		snprintf(err, KV_ERR_MAX, "%s", r->cat_err);
		rc = -EAGAIN;
		goto out;
	}
	struct kv_endpoint ep = { .host = r->catalog_host, .port = r->catalog_port, .dbname = r->catalog_db,
				  .user = "kv_replicator", .password = r->replicator_password };
	struct kv_catalog cat;
	PGconn *c = kv_conn_open(&ep, "tusk kv router", r->cat_err);
	int crc = c ? kv_catalog_read(c, &cat, r->cat_err) : -EIO;
	if (c)
		PQfinish(c);
	if (crc == 0 && cat.version == 0)
		snprintf(r->cat_err, sizeof r->cat_err, "the catalog %s on %s:%d is empty (version 0)", r->catalog_db,
			 r->catalog_host, r->catalog_port);
	if (crc == 0 && cat.version > 0) {
		const struct kv_instance *best = zone_instance(&cat, r->zone);
		struct kv_route *rt = NULL;
		if (!best) {
			snprintf(r->cat_err, sizeof r->cat_err, "zone %s has no instance in the catalog", r->zone);
		} else if (!(rt = route_new(best))) {
			snprintf(r->cat_err, sizeof r->cat_err, "out of memory");
		} else {
			r->nshards = cat.nshards;
			nstab_publish(r, &cat);
			log_info(NULL, NULL, "kv: routing calls to instance %d (%s:%d), %d shards", rt->instance_id, rt->host,
				 rt->port, r->nshards);
			route_publish(r, rt);
		}
	}
	if (crc == 0)
		kv_catalog_free(&cat);
	if (r->nshards > 0) {
		*nshards = r->nshards;
	} else {
		r->cat_tried = now_mono();
		snprintf(err, KV_ERR_MAX, "%s", r->cat_err);
		rc = -EAGAIN;
	}
out:
	pthread_mutex_unlock(&r->cat_mu);
	return rc;
}

/* ---- calls ---- */

/* An idle connection is fine while its server says nothing: we never LISTEN, so anything
 * readable (a FATAL after pg_terminate_backend or a shutdown, or EOF) means it is gone, as
 * for a parked server of the pool. */
static bool conn_alive(PGconn *conn)
{
	struct pollfd p = { .fd = PQsocket(conn), .events = POLLIN };

	if (PQstatus(conn) != CONNECTION_OK || p.fd < 0)
		return false;
	return poll(&p, 1, 0) == 0;
}

/* A live connection to shard, or NULL with the job failed (08006 naming the shard). */
static PGconn *shard_conn(struct kv_exec *x, int shard, struct kv_job *job)
{
	struct kv_router *r = x->r;
	char err[KV_ERR_MAX], db[32];

	if (x->nconns <= shard) {
		PGconn **c = realloc(x->conns, (size_t)r->nshards * sizeof *c);
		if (!c) {
			kv_job_fail(job, "53200", "out of memory");
			return NULL;
		}
		x->conns = c;
		kv_prepared_t *pr = realloc(x->prepared, (size_t)r->nshards * sizeof *pr);
		if (!pr) {
			kv_job_fail(job, "53200", "out of memory");
			return NULL;
		}
		x->prepared = pr;
		const struct kv_route **rts = realloc(x->routes, (size_t)r->nshards * sizeof *rts);
		if (!rts) {
			kv_job_fail(job, "53200", "out of memory");
			return NULL;
		}
		x->routes = rts;
		for (int i = x->nconns; i < r->nshards; i++)
			c[i] = NULL, pr[i] = 0, rts[i] = NULL;
		x->nconns = r->nshards;
	}
	/* one opened for an older route is closed: the catalog moved the instance */
	const struct kv_route *rt = kv_route_now(r);
	if (x->conns[shard] && x->routes[shard] == rt && conn_alive(x->conns[shard]))
		return x->conns[shard];
	if (x->conns[shard]) {
		PQfinish(x->conns[shard]);
		x->conns[shard] = NULL;
	}
	x->prepared[shard] = 0; /* a new connection has no prepared statements */
	snprintf(db, sizeof db, KV_SHARD_DB_PREFIX "%d", shard);
	struct kv_endpoint ep = { .host = rt->host, .port = rt->port, .dbname = db, .user = kv_shard_user(r),
				  .password = kv_shard_password(r), .options = kv_shard_options(r) };
	x->conns[shard] = kv_conn_open(&ep, "tusk kv router", err);
	if (!x->conns[shard]) {
		kv_job_fail(job, "08006", "kv shard %s of instance %d (%s:%d, zone %s) is down: %s", db, rt->instance_id,
			 rt->host, rt->port, r->zone, err);
		return NULL;
	}
	x->routes[shard] = rt;
	return x->conns[shard];
}

/* A hit is one planned query of the view, no PL/pgSQL (docs/kv.md, "Fifth step"); COALESCE
 * calls kv.get, which checks and raises, only when the view has no row. */
static const char get_live_sql[] = "SELECT COALESCE((SELECT l.value FROM kv.live l WHERE l.ns OPERATOR(pg_catalog.=) $1 "
				   "AND l.key OPERATOR(pg_catalog.=) $2), kv.get($1, $2))";
/* The same for Redis's GET: kv.read, on a miss, reads the value and else the counter in one
 * statement (a missing key costs one round trip, not a get and then a counter). */
static const char read_live_sql[] = "SELECT COALESCE((SELECT l.value FROM kv.live l WHERE l.ns OPERATOR(pg_catalog.=) $1 "
				    "AND l.key OPERATOR(pg_catalog.=) $2), kv.read($1, $2))";

/* The one statement of each op, prepared once per connection (PQprepare) and then run
 * with PQexecPrepared: the shard neither parses nor plans the call text again (measured in
 * docs/kv.md, "Speed": the unnamed statement of PQexecParams cost as much as the call). */
const char *const kv_op_sql[KV_OP_COUNT_ALL] = {
	[KV_OP_GET] = get_live_sql,
	[KV_OP_PUT] = "SELECT kv.put($1, $2, $3::jsonb, $4::interval)",
	[KV_OP_DELETE] = "SELECT kv.delete($1, $2)",
	[KV_OP_PATCH] = "SELECT kv.patch($1, $2, $3::jsonb)",
	[KV_OP_GET_MANY] = "SELECT key, value FROM kv.get_many($1, $2::text[])",
	[KV_OP_GET_META] = "SELECT kv.get_meta($1, $2)",
	[KV_OP_PUT_IF_VERSION] = "SELECT kv.put_if_version($1, $2, $3::jsonb, $4::bigint, $5::interval)",
	[KV_OP_PUT_IF_ABSENT] = "SELECT kv.put_if_absent($1, $2, $3::jsonb, $4::interval)",
	[KV_OP_DELETE_IF_VERSION] = "SELECT kv.delete_if_version($1, $2, $3::bigint)",
	[KV_OP_TOUCH] = "SELECT kv.touch($1, $2, $3::interval)",
	[KV_OP_INCR] = "SELECT kv.incr($1, $2, $3::bigint)",
	[KV_OP_COUNTER] = "SELECT kv.counter($1, $2)",
	[KV_OP_PUT_MANY] = "SELECT kv.put_many($1, $2::text[], $3::text[], $4::interval)",
	[KV_OP_DELETE_MANY] = "SELECT kv.delete_many($1, $2::text[])",
	[KV_OP_SCAN] = "SELECT key, value FROM kv.scan($1, $2, $3, $4::int)",
	[KV_OP_COUNT] = "SELECT kv.count($1, $2)",
	[KV_OP_READ] = read_live_sql,
	[KV_OP_READ_MANY] = "SELECT key, value FROM kv.read_many($1, $2::text[])",
	[KV_OP_READ_META] = "SELECT kv.read_meta($1, $2)",
	[KV_OP_SWAP] = "SELECT kv.swap($1, $2, $3::jsonb, $4::interval)",
	[KV_OP_PERSIST] = "SELECT kv.persist($1, $2)",
	[KV_OP_EXPIRE] = "SELECT kv.expire($1, $2, $3::interval, $4)",
	[KV_OP_GETEX] = "SELECT kv.getex($1, $2, $3::interval, $4)",
	[KV_OP_SET] = "SELECT kv.set($1, $2, $3::jsonb, $4::interval, $5)",
	[KV_OP_APPEND] = "SELECT kv.append($1, $2, $3)",
	[KV_OP_WATCH_TAG] = "SELECT kv.watch_tag($1, $2)",
	[KV_OP_MSETNX] = "SELECT kv.msetnx($1, $2::jsonb)",
	[KV_OP_RENAME] = "SELECT kv.rename($1, $2, $3, $4::boolean)",
	[KV_OP_PUT_IF_VALUE] = "SELECT kv.put_if_value($1, $2, $3::jsonb, $4::jsonb)",
	[KV_OP_RANDOM_KEY] = "SELECT kv.random_key($1)",
	[KV_OP_FLUSH] = "SELECT kv.flush($1)",
};
const int kv_op_nparams[KV_OP_COUNT_ALL] = {
	[KV_OP_GET] = 2, [KV_OP_PUT] = 4, [KV_OP_DELETE] = 2, [KV_OP_PATCH] = 3, [KV_OP_GET_MANY] = 2,
	[KV_OP_GET_META] = 2, [KV_OP_PUT_IF_VERSION] = 5, [KV_OP_PUT_IF_ABSENT] = 4, [KV_OP_DELETE_IF_VERSION] = 3,
	[KV_OP_TOUCH] = 3, [KV_OP_INCR] = 3, [KV_OP_COUNTER] = 2, [KV_OP_PUT_MANY] = 4, [KV_OP_DELETE_MANY] = 2,
	[KV_OP_SCAN] = 4, [KV_OP_COUNT] = 2, [KV_OP_READ] = 2, [KV_OP_READ_MANY] = 2, [KV_OP_READ_META] = 2,
	[KV_OP_SWAP] = 4, [KV_OP_PERSIST] = 2, [KV_OP_EXPIRE] = 4, [KV_OP_GETEX] = 4, [KV_OP_SET] = 5, [KV_OP_APPEND] = 3,
	[KV_OP_WATCH_TAG] = 2, [KV_OP_MSETNX] = 2, [KV_OP_RENAME] = 4, [KV_OP_PUT_IF_VALUE] = 4, [KV_OP_RANDOM_KEY] = 1,
	[KV_OP_FLUSH] = 1,
};
const char kv_get_fallback_sql[] = "SELECT kv.get($1, $2)";
/* kv.read's answer from the functions every schema with counters has: still one statement. */
const char kv_read_fallback_sql[] = "SELECT COALESCE(kv.get($1, $2), (SELECT pg_catalog.to_jsonb(c) "
				    "FROM kv.counter($1, $2) c WHERE c OPERATOR(pg_catalog.<>) 0))";
/* kv.read_many's: the values only (its counters are not read) */
const char kv_read_many_fallback_sql[] = "SELECT key, value FROM kv.get_many($1, $2::text[])";
/* kv.read_meta's: a value's only (a counter reads as absent) */
const char kv_read_meta_fallback_sql[] = "SELECT kv.get_meta($1, $2)";
_Static_assert(sizeof kv_op_sql / sizeof kv_op_sql[0] <= KV_SLOT_TIMEOUTS,
	       "the prepared mask holds one bit per op, the timeouts', the slow puts' and the fallback's");

bool kv_get_fall_back(struct kv_router *r, int shard, enum kv_op op, kv_prepared_t *prepared, const PGresult *res)
{
	if (!kv_op_falls_back(op) || (*prepared & KV_PREPARED_GET_FALLBACK))
		return false;
	*prepared = (*prepared & ~KV_PREPARED_BIT(op)) | KV_PREPARED_GET_FALLBACK;
	if (!atomic_exchange(&r->get_fallback_noted, true)) {
		const char *why = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
		const struct kv_route *rt = kv_route_now(r);
		log_warn(NULL, NULL, "kv: shard %s%d of instance %d (%s:%d) has no view kv.live or no kv.read (%s): "
			 "gets call kv.get there, which is slower; run tusk kv init again in zone %s", KV_SHARD_DB_PREFIX, shard,
			 rt->instance_id, rt->host, rt->port, why ? why : "its prepare failed", r->zone);
	}
	return true;
}
_Static_assert(KV_OP_FLUSH + 1 == KV_OP_COUNT_ALL, "kv_op_sql has one entry per op");
_Static_assert(KV_SLOT_PUT_SLOW >= KV_OP_COUNT_ALL && KV_SLOT_PUT_SLOW < 63, "the slow put's bit is no op's nor the fallback's");
_Static_assert(KV_SLOT_PUT_MANY_SLOW >= KV_OP_COUNT_ALL && KV_SLOT_PUT_MANY_SLOW < 63 &&
		       KV_SLOT_PUT_MANY_SLOW != KV_SLOT_PUT_SLOW,
	       "the slow put_many's bit is no op's, nor the fallback's, nor the slow put's");

/* A put on the fast path (kv_router, docs/kv.md "Ninth step"): kv.put's own INSERT as one
 * top-level statement, no PL/pgSQL, no SECURITY DEFINER. tusk checked the namespace in its
 * catalog and passes the policy's default_ttl ($5) and max_ttl ($6) with the catalog version
 * they are of ($7); the WHERE holds every check of kv.put's own first statement but the
 * joins: the catalog version (a shard at another version may have another policy, or none),
 * the shard (a key lands on the same shard whichever path wrote it), the key's form, the
 * value, the ttl, and that the key has no counter's rows (a put replaces a counter: kv.put
 * resets it first; probed in data_counter_bases, the small index of counter rows: the primary
 * key's range cost more in a pgbench of the statement alone). It returns the new version, or no row when a check failed: tusk then runs
 * kv.put (KV_SLOT_PUT_SLOW), which raises exactly what it raises, or writes when only the
 * catalog version differed (a second statement rather than a CTE with COALESCE around this
 * one: that cost ~6% of a put's CPU on the shard at every call, "Tenth step"). The row is the
 * one kv.put writes: ver_ts, origin, expires_at and chg_xid computed alike (the update's value
 * and expiry are the insert's expressions again: $3 is bound as jsonb once). It holds no lock against kv.incr (schema.h, KV_LOCK_KEY_SQL), so its
 * probe of the counter's rows may miss a part an INCR made after its snapshot. Such an INCR
 * found the key without a live value (else it adds to the value), and made the key's row first
 * when it had none (a tombstone of version 0, kv.incr): so the statement writes only over a live
 * value (the conflict's WHERE, on the newest row) or a key without a row. A tombstone or an
 * expired value: no row, and kv.put runs under its lock. */
const char kv_put_fast_sql[] =
	"INSERT INTO kv.data AS d (ns, key, value, ver_ts, origin, expires_at) "
	"SELECT $1::text, $2::text, $3::jsonb, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint + i.clock_offset_us, "
	"i.origin, now() + coalesce($4::interval, $5::interval) FROM kv.identity i "
	"WHERE i.catalog_version = $7::bigint "
	"AND " KV_SHARD_SQL("$1::text", "$2::text", "i.nshards") " = i.shard "
	"AND " KV_KEY_OK_SQL("$2::text") " "
	"AND $3::jsonb IS NOT NULL AND pg_column_size($3::jsonb) <= 1048576 "
	"AND ($4::interval IS NULL OR ($4::interval > interval '0' AND ($6::interval IS NULL OR $4::interval <= $6::interval))) "
	"AND NOT EXISTS (SELECT FROM kv.data c WHERE " KV_COUNTER_BASE_SQL("c.", "$1::text", "$2::text") ") "
	"ON CONFLICT ON CONSTRAINT data_pkey DO UPDATE SET value = $3::jsonb, "
	"ver_ts = greatest(EXCLUDED.ver_ts, d.ver_ts + 1), origin = EXCLUDED.origin, "
	"expires_at = now() + coalesce($4::interval, $5::interval), "
	"chg_xid = pg_current_xact_id() WHERE " KV_LIVE_SQL("d.") " "
	"RETURNING d.ver_ts";

/* A put_many part on the fast path (kv_router): kv.put_many's write as one top-level statement,
 * all or nothing. A gate evaluated once (an uncorrelated subquery over the whole batch) holds
 * every check kv.put_many makes of each key and value (the key's form, the shard, the value's
 * size, no key twice) besides the catalog version and the ttl's, and that no key has a
 * counter's rows (kv.put_many resets those counters first), so that the INSERT writes
 * every key of the part or none; none (a count of 0) makes tusk run kv.put_many as a second
 * statement (KV_SLOT_PUT_MANY_SLOW), which raises its error or writes. The update takes a key's
 * value from EXCLUDED (kv_router reads kv.data's value: the conflict's WHERE needs it too);
 * parts of more than KV_PUT_MANY_FAST_MAX keys call kv.put_many at once. The values are parsed once, as jsonb[] (a value that is not JSON
 * fails the statement's Bind with kv.put_many's SQLSTATE and message). One row, the count, as
 * kv.put_many answers. A key's row without a live value (kv_put_fast_sql skips it) fails the
 * whole statement with kv._stale's KV003, and tusk runs kv.put_many. */
const char kv_put_many_fast_sql[] =
	"WITH w AS (INSERT INTO kv.data AS d (ns, key, value, ver_ts, origin, expires_at) "
	"SELECT $1::text, u.k, u.v, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint + i.clock_offset_us, "
	"i.origin, now() + coalesce($4::interval, $5::interval) "
	"FROM kv.identity i, unnest($2::text[], $3::jsonb[]) u(k, v) "
	"WHERE i.catalog_version = $7::bigint "
	"AND ($4::interval IS NULL OR ($4::interval > interval '0' AND ($6::interval IS NULL OR $4::interval <= $6::interval))) "
	"AND cardinality($2::text[]) = cardinality($3::jsonb[]) "
	"AND (SELECT bool_and(" KV_KEY_OK_SQL("c.k") " "
	"AND c.v IS NOT NULL AND pg_column_size(c.v) <= 1048576 "
	"AND " KV_SHARD_SQL("$1::text", "c.k", "i.nshards") " = i.shard) "
	"AND count(DISTINCT c.k) = count(*) FROM unnest($2::text[], $3::jsonb[]) c(k, v)) "
	"AND NOT EXISTS (SELECT FROM unnest($2::text[]) c(k) CROSS JOIN LATERAL (SELECT FROM kv.data p "
	"WHERE " KV_COUNTER_BASE_SQL("p.", "$1::text", "c.k") " LIMIT 1) x) "
	"ON CONFLICT ON CONSTRAINT data_pkey DO UPDATE SET value = EXCLUDED.value, "
	"ver_ts = greatest(EXCLUDED.ver_ts, d.ver_ts + 1), origin = EXCLUDED.origin, "
	"expires_at = now() + coalesce($4::interval, $5::interval), "
	"chg_xid = CASE WHEN " KV_LIVE_SQL("d.") " "
	"THEN pg_current_xact_id() "
	"ELSE kv._stale() END RETURNING 1) "
	"SELECT count(*) FROM w";

/* A put (or a put_many part on a worker's loop, of at most KV_PUT_MANY_FAST_MAX keys) when tusk
 * logs in to the shards as kv_router: it takes the fast path, until its fast statement wrote
 * nothing (put_slow: kv.put or kv.put_many then runs as a second statement). A put_many on a
 * router thread (run_split, no fan) calls kv.put_many. */
static inline bool put_as_router(const struct kv_router *r, const struct kv_job *job)
{
	return r->router_password &&
	       (job->op == KV_OP_PUT ||
		(job->op == KV_OP_PUT_MANY && job->fan && job->nkeys > 0 && job->nkeys <= KV_PUT_MANY_FAST_MAX));
}

/* A put_many part inside a transaction without savepoints takes kv.put_many at once: its fast
 * statement's miss is an error (KV003), which would abort the transaction before kv.put_many
 * could run after it. (A put's miss is no row, not an error.) */
static inline bool put_fast(const struct kv_router *r, const struct kv_job *job)
{
	return put_as_router(r, job) && !job->put_slow &&
	       !(job->op == KV_OP_PUT_MANY && job->txn && job->txn->no_savepoints);
}

int kv_stmt_slot(const struct kv_router *r, const struct kv_job *job)
{
	/* Under kv_router the op's own slot holds the fast statement on every connection; the
	 * kv.put or kv.put_many call has a slot of its own (a put_many too large for the fast
	 * path, or on a router thread, calls it at once). */
	if (!r->router_password || (job->op != KV_OP_PUT && job->op != KV_OP_PUT_MANY) || put_fast(r, job))
		return (int)job->op;
	return job->op == KV_OP_PUT ? KV_SLOT_PUT_SLOW : KV_SLOT_PUT_MANY_SLOW;
}

bool kv_put_fast_missed(const struct kv_router *r, struct kv_job *job, const PGresult *res)
{
	if (!put_fast(r, job))
		return false;
	if (PQresultStatus(res) == PGRES_FATAL_ERROR) {
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		if (!state || strcmp(state, "KV003") != 0)
			return false;
	} else if (job->op == KV_OP_PUT ? PQntuples(res) != 0
				 : PQntuples(res) != 1 || PQgetisnull(res, 0, 0) || strcmp(PQgetvalue(res, 0, 0), "0") != 0)
		return false;
	job->put_slow = true;
	return true;
}

const char *kv_stmt(const struct kv_router *r, const struct kv_job *job, kv_prepared_t prepared, int *nparams)
{
	if (put_fast(r, job)) {
		*nparams = 7;
		return job->op == KV_OP_PUT ? kv_put_fast_sql : kv_put_many_fast_sql;
	}
	*nparams = kv_op_nparams[job->op];
	return kv_op_statement(job->op, prepared);
}

static int ns_cmp(const void *a, const void *b)
{
	return strcmp(((const struct kv_ns_policy *)a)->ns, ((const struct kv_ns_policy *)b)->ns);
}

const char *const *kv_stmt_params(struct kv_router *r, struct kv_job *job, const char **params)
{
	if (!put_fast(r, job))
		return job->args;
	for (int i = 0; i < 4; i++)
		params[i] = job->args[i];
	params[4] = params[5] = params[6] = NULL;
	const struct kv_nstab *t = atomic_load_explicit(&r->nstab, memory_order_acquire);
	if (!t || !job->ns)
		return params;
	const struct kv_ns_policy key = { .ns = (char *)job->ns };
	const struct kv_ns_policy *p = bsearch(&key, t->ns, (size_t)t->n, sizeof *t->ns, ns_cmp);
	if (p) {
		params[4] = p->default_ttl;
		params[5] = p->max_ttl;
		params[6] = t->version_text;
	}
	return params;
}

/* cat's namespaces become the fast path's (when newer than those it has; under cat_mu). It
 * takes them from cat, which keeps none. Out of memory: the older table stays (its version
 * no longer matches the shards', so puts take kv.put: slower, never wrong). */
static void nstab_publish(struct kv_router *r, struct kv_catalog *cat)
{
	struct kv_nstab *old = atomic_load_explicit(&r->nstab, memory_order_relaxed);
	if (!r->router_password || (old && old->version >= cat->version))
		return;
	struct kv_nstab *t = calloc(1, sizeof *t);
	if (!t) {
		log_error(NULL, NULL, "kv: out of memory taking catalog version %lld's namespaces: puts call kv.put",
			  (long long)cat->version);
		return;
	}
	t->version = cat->version;
	snprintf(t->version_text, sizeof t->version_text, "%lld", (long long)cat->version);
	t->n = cat->nns;
	t->ns = cat->ns;
	cat->ns = NULL;
	cat->nns = 0;
	if (t->n > 1)
		qsort(t->ns, (size_t)t->n, sizeof *t->ns, ns_cmp);
	t->older = old;
	atomic_store_explicit(&r->nstab, t, memory_order_release);
}

/* op's statement on conn (prepared there first if it is not yet): its result, NULL when out
 * of memory. A failed PQprepare's result is returned as the call's. */
static PGresult *exec_prepared(struct kv_exec *x, PGconn *conn, int shard, const struct kv_job *job,
				const char *const *params)
{
	char name[32];
	int np, slot = kv_stmt_slot(x->r, job);
	const char *sql = kv_stmt(x->r, job, x->prepared[shard], &np);
	snprintf(name, sizeof name, "tusk_kv_%d", slot);
	if (!(x->prepared[shard] & KV_PREPARED_BIT(slot))) {
		PGresult *res = PQprepare(conn, name, sql, np, NULL);
		if (res && PQresultStatus(res) == PGRES_FATAL_ERROR && PQstatus(conn) == CONNECTION_OK &&
		    kv_get_fall_back(x->r, shard, job->op, &x->prepared[shard], res)) {
			PQclear(res);
			sql = kv_stmt(x->r, job, x->prepared[shard], &np);
			res = PQprepare(conn, name, sql, np, NULL);
		}
		if (!res || PQresultStatus(res) != PGRES_COMMAND_OK)
			return res;
		PQclear(res);
		x->prepared[shard] |= KV_PREPARED_BIT(slot);
	}
	char text[KV_TIMEOUT_COUNT][12];
	const char *set[KV_TIMEOUT_COUNT];
	if (!kv_job_timeouts(job, text, set))
		return PQexecPrepared(conn, name, np, params, NULL, NULL, 0);
	/* the caller's timeouts, for this call only: its own transaction, ended whatever came of
	 * the call (a failed call's ROLLBACK; a lost connection is closed) */
	PGresult *res = PQexec(conn, "BEGIN");
	if (!res || PQresultStatus(res) != PGRES_COMMAND_OK)
		return res;
	PQclear(res);
	res = PQexecParams(conn, kv_timeouts_sql, KV_TIMEOUT_COUNT, NULL, set, NULL, NULL, 0);
	if (res && PQresultStatus(res) == PGRES_TUPLES_OK) {
		PQclear(res);
		res = PQexecPrepared(conn, name, np, params, NULL, NULL, 0);
	}
	bool ok = res && (PQresultStatus(res) == PGRES_TUPLES_OK || PQresultStatus(res) == PGRES_COMMAND_OK);
	PGresult *end = PQexec(conn, ok ? "COMMIT" : "ROLLBACK");
	if (ok && (!end || PQresultStatus(end) != PGRES_COMMAND_OK)) {
		PQclear(res); /* the commit's error is the call's */
		res = end;
	} else {
		PQclear(end);
	}
	return res;
}

/* Run op's statement on shard. The result (tuples), or NULL with the job failed. */
static PGresult *shard_exec(struct kv_exec *x, int shard, const char *const *params, struct kv_job *job)
{
	PGconn *conn = shard_conn(x, shard, job);
	if (!conn)
		return NULL;
	PGresult *res = exec_prepared(x, conn, shard, job, params);
	if (res && PQresultStatus(res) == PGRES_TUPLES_OK)
		return res;
	if (PQstatus(conn) != CONNECTION_OK && kv_op_is_read(job->op)) {
		/* A read is safe to run again: once, on a new connection (the old one may have died
		 * between the liveness check and the call). */
		PQclear(res);
		PQfinish(conn);
		x->conns[shard] = NULL;
		conn = shard_conn(x, shard, job);
		if (!conn)
			return NULL;
		res = exec_prepared(x, conn, shard, job, params);
		if (res && PQresultStatus(res) == PGRES_TUPLES_OK)
			return res;
	}
	if (PQstatus(conn) != CONNECTION_OK) {
		char err[KV_ERR_MAX];
		snprintf(err, sizeof err, "%s", PQerrorMessage(conn));
		for (char *p = err; *p; p++)
			if (*p == '\n')
				*p = ' ';
		const struct kv_route *rt = x->routes[shard];
		kv_job_fail(job, "08006", "connection to kv shard %s%d of instance %d (%s:%d) lost during the call%s: %s",
			 KV_SHARD_DB_PREFIX, shard, rt->instance_id, rt->host, rt->port,
			 kv_op_is_read(job->op) ? "" : " (the write may or may not have been applied)",
			 err);
		PQfinish(conn);
		x->conns[shard] = NULL;
	} else if (res) {
		kv_job_fail_result(job, res, conn);
	} else {
		kv_job_fail(job, "53200", "out of memory");
	}
	PQclear(res);
	return NULL;
}

static void run_single(struct kv_exec *x, int nshards, struct kv_job *job)
{
	const char *pbuf[KV_STMT_MAX_PARAMS];
	const char *const *params = kv_stmt_params(x->r, job, pbuf);
	if ((size_t)job->op >= sizeof kv_op_sql / sizeof kv_op_sql[0] || !kv_op_sql[job->op] || kv_op_keyless(job->op)) {
		kv_job_fail(job, "XX000", "kv: no single-shard form of kv.%s", kv_op_name(job->op));
		return;
	}
	int shard = kv_shard_of(job->ns, strlen(job->ns), job->key, strlen(job->key), nshards);

	if (shard < 0) {
		kv_job_fail(job, "XX000", "bad shard count %d", nshards);
		return;
	}
	PGresult *res = shard_exec(x, shard, params, job);
	if (res && kv_put_fast_missed(x->r, job, res)) {
		PQclear(res);
		res = shard_exec(x, shard, job->args, job); /* kv.put: its error, or its write */
	}
	if (!res)
		return;
	kv_job_single(job, res, shard);
	PQclear(res);
}

void kv_job_add_rows(struct kv_job *job, const PGresult *res)
{
	int nf = PQnfields(res);
	const char *v[2];
	int l[2];
	if (nf < 1 || nf > 2) {
		kv_job_fail(job, "XX000", "kv shard answered %d columns", nf);
		return;
	}
	for (int row = 0; row < PQntuples(res); row++) {
		for (int i = 0; i < nf; i++) {
			v[i] = PQgetisnull(res, row, i) ? NULL : PQgetvalue(res, row, i);
			l[i] = PQgetlength(res, row, i);
		}
		if (!add_row(job, nf, v, l)) {
			kv_job_fail(job, "53200", "out of memory");
			return;
		}
	}
}

void kv_job_single(struct kv_job *job, const PGresult *res, int shard)
{
	if (PQntuples(res) != 1 || PQnfields(res) != 1) {
		kv_job_fail(job, "XX000", "kv shard %s%d answered %d rows of %d columns", KV_SHARD_DB_PREFIX, shard,
			 PQntuples(res), PQnfields(res));
	} else {
		const char *v = PQgetisnull(res, 0, 0) ? NULL : PQgetvalue(res, 0, 0);
		int len = PQgetlength(res, 0, 0);
		if (!add_row(job, 1, &v, &len))
			kv_job_fail(job, "53200", "out of memory");
	}
}

static int pair_cmp(const void *a, const void *b)
{
	const struct kv_pair *x = a, *y = b;
	int n = x->klen < y->klen ? x->klen : y->klen;
	int c = memcmp(x->key, y->key, (size_t)n);
	return c ? c : (x->klen > y->klen) - (x->klen < y->klen);
}

int kv_keys_of_shard(const int *shard_of, int nkeys, int shard, int *idx)
{
	int n = 0;
	for (int i = 0; i < nkeys; i++)
		if (shard_of[i] == shard)
			idx[n++] = i;
	return n;
}

char *kv_array_literal(const char *const *arr, const int *idx, int n)
{
	size_t len = 3;
	for (int i = 0; i < n; i++)
		len += 2 * strlen(arr[idx[i]]) + 3;
	char *s = malloc(len), *p = s;
	if (!s)
		return NULL;
	*p++ = '{';
	for (int i = 0; i < n; i++) {
		if (i)
			*p++ = ',';
		*p++ = '"';
		for (const char *k = arr[idx[i]]; *k; k++) {
			if (*k == '"' || *k == '\\')
				*p++ = '\\';
			*p++ = *k;
		}
		*p++ = '"';
	}
	*p++ = '}';
	*p = '\0';
	return s;
}

/* Append the (key, value) rows of res to *pairs. false (job failed) when out of memory. */
static bool collect_pairs(struct kv_job *job, PGresult *res, struct kv_pair **pairs, size_t *npairs, size_t *cap)
{
	for (int row = 0; row < PQntuples(res); row++) {
		if (*npairs == *cap) {
			size_t ncap = *cap ? *cap * 2 : 64;
			struct kv_pair *p = realloc(*pairs, ncap * sizeof *p);
			if (!p) {
				kv_job_fail(job, "53200", "out of memory");
				return false;
			}
			*pairs = p;
			*cap = ncap;
		}
		struct kv_pair *p = &(*pairs)[*npairs];
		p->klen = PQgetlength(res, row, 0);
		p->key = strdup(PQgetvalue(res, row, 0));
		p->vlen = PQgetlength(res, row, 1);
		p->value = PQgetisnull(res, row, 1) ? NULL : strdup(PQgetvalue(res, row, 1));
		if (!p->key || (!p->value && !PQgetisnull(res, row, 1))) {
			free(p->key);
			free(p->value);
			kv_job_fail(job, "53200", "out of memory");
			return false;
		}
		(*npairs)++;
	}
	return true;
}

void kv_send_pairs(struct kv_job *job, struct kv_pair *pairs, size_t npairs, size_t max)
{
	if (npairs > 1) /* none: pairs is NULL, which qsort may not be given */
		qsort(pairs, npairs, sizeof *pairs, pair_cmp);
	for (size_t i = 0; i < npairs && i < max; i++) {
		const char *v[2] = { pairs[i].key, pairs[i].value };
		int l[2] = { pairs[i].klen, pairs[i].vlen };
		if (!add_row(job, 2, v, l)) {
			kv_job_fail(job, "53200", "out of memory");
			break;
		}
	}
}

/* One bigint result column of res added to *sum. false (job failed) otherwise. */
static bool add_count(struct kv_job *job, PGresult *res, int shard, long long *sum)
{
	if (PQntuples(res) != 1 || PQnfields(res) != 1 || PQgetisnull(res, 0, 0)) {
		kv_job_fail(job, "XX000", "kv shard %s%d answered %d rows of %d columns", KV_SHARD_DB_PREFIX, shard,
			 PQntuples(res), PQnfields(res));
		return false;
	}
	*sum += strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	return true;
}

void kv_send_value(struct kv_job *job, const char *v, int n)
{
	if (!add_row(job, 1, &v, &n))
		kv_job_fail(job, "53200", "out of memory");
}

bool kv_random_offer(char **pick, int *pick_len, int *seen, const char *v, int n)
{
	if (rand() % ++*seen != 0)
		return true;
	char *copy = malloc((size_t)n + 1);
	if (!copy)
		return false;
	memcpy(copy, v, (size_t)n);
	copy[n] = '\0';
	free(*pick);
	*pick = copy;
	*pick_len = n;
	return true;
}

void kv_send_count(struct kv_job *job, long long sum)
{
	char buf[32];
	int n = snprintf(buf, sizeof buf, "%lld", sum);
	const char *v = buf;
	if (!add_row(job, 1, &v, &n))
		kv_job_fail(job, "53200", "out of memory");
}

/* get_many, read_many, put_many, delete_many: the keys split by shard, one call per shard holding
 * some (get_many's and read_many's rows merged in key order, the batches' counts summed). A
 * shard that fails fails the call: no partial answer (a batch's earlier shards stay written:
 * the error says so). */
static void run_split(struct kv_exec *x, int nshards, struct kv_job *job)
{
	int *shard_of = NULL, *idx = NULL;
	struct kv_pair *pairs = NULL;
	size_t npairs = 0, cap = 0;
	long long sum = 0;
	int done_shards = 0;

	if (job->op == KV_OP_PUT_MANY && job->nvalues != job->nkeys) {
		kv_job_fail(job, "22023", "kv: put_many got %d keys and %d values", job->nkeys, job->nvalues);
		return;
	}
	if (job->nkeys == 0) {
		if (!kv_op_rows(job->op))
			kv_send_count(job, 0);
		return;
	}
	shard_of = malloc((size_t)job->nkeys * sizeof *shard_of);
	idx = malloc((size_t)job->nkeys * sizeof *idx);
	if (!shard_of || !idx) {
		kv_job_fail(job, "53200", "out of memory");
		goto out;
	}
	for (int i = 0; i < job->nkeys; i++)
		shard_of[i] = kv_shard_of(job->ns, strlen(job->ns), job->keys[i], strlen(job->keys[i]), nshards);
	for (int s = 0; s < nshards && !job->failed; s++) {
		int n = kv_keys_of_shard(shard_of, job->nkeys, s, idx);
		if (n == 0)
			continue;
		char *lit = kv_array_literal(job->keys, idx, n);
		char *vlit = job->op == KV_OP_PUT_MANY && lit ? kv_array_literal(job->values, idx, n) : NULL;
		if (!lit || (job->op == KV_OP_PUT_MANY && !vlit)) {
			free(lit);
			kv_job_fail(job, "53200", "out of memory");
			break;
		}
		PGresult *res;
		if (kv_op_rows(job->op)) {
			const char *params[2] = { job->ns, lit };
			res = shard_exec(x, s, params, job);
		} else if (job->op == KV_OP_PUT_MANY) {
			const char *params[4] = { job->ns, lit, vlit, job->args[3] };
			res = shard_exec(x, s, params, job);
		} else {
			const char *params[2] = { job->ns, lit };
			res = shard_exec(x, s, params, job);
		}
		free(lit);
		free(vlit);
		if (!res)
			break;
		if (kv_op_rows(job->op))
			(void)collect_pairs(job, res, &pairs, &npairs, &cap);
		else if (add_count(job, res, s, &sum))
			done_shards++;
		PQclear(res);
	}
	if (job->failed && done_shards > 0 && !job->detail[0])
		snprintf(job->detail, sizeof job->detail,
			 "kv.%s had already written the keys of %d other shard(s): a batch is all or nothing per shard, "
			 "not across shards", kv_op_name(job->op), done_shards);
	if (!job->failed) {
		if (kv_op_rows(job->op))
			kv_send_pairs(job, pairs, npairs, npairs);
		else
			kv_send_count(job, sum);
	}
	if (job->failed) {
		job->rows_len = 0;
		job->nrows = 0;
	}
out:
	for (size_t i = 0; i < npairs; i++) {
		free(pairs[i].key);
		free(pairs[i].value);
	}
	free(pairs);
	free(shard_of);
	free(idx);
}

/* scan, count, flush, random_key: every shard asked, the rows merged in key order (the first
 * lim kept; each shard sent at most lim), the counts summed, or one of the keys picked. */
static void run_fanout(struct kv_exec *x, int nshards, struct kv_job *job)
{
	struct kv_pair *pairs = NULL;
	size_t npairs = 0, cap = 0;
	long long sum = 0;
	char *pick = NULL;
	int pick_len = 0, seen = 0;

	for (int s = 0; s < nshards && !job->failed; s++) {
		PGresult *res = shard_exec(x, s, job->args, job);
		if (!res)
			break;
		if (job->op == KV_OP_SCAN)
			(void)collect_pairs(job, res, &pairs, &npairs, &cap);
		else if (job->op != KV_OP_RANDOM_KEY)
			(void)add_count(job, res, s, &sum);
		else if (PQntuples(res) == 1 && PQnfields(res) == 1 && !PQgetisnull(res, 0, 0) &&
			 !kv_random_offer(&pick, &pick_len, &seen, PQgetvalue(res, 0, 0), PQgetlength(res, 0, 0)))
			kv_job_fail(job, "53200", "out of memory");
		PQclear(res);
	}
	if (!job->failed) {
		if (job->op == KV_OP_SCAN) {
			long lim = job->args[3] ? strtol(job->args[3], NULL, 10) : 0;
			kv_send_pairs(job, pairs, npairs, lim > 0 ? (size_t)lim : 0);
		} else if (job->op == KV_OP_RANDOM_KEY) {
			kv_send_value(job, pick, pick_len);
		} else {
			kv_send_count(job, sum);
		}
	}
	free(pick);
	if (job->failed) {
		job->rows_len = 0;
		job->nrows = 0;
	}
	for (size_t i = 0; i < npairs; i++) {
		free(pairs[i].key);
		free(pairs[i].value);
	}
	free(pairs);
}

void kv_job_txn_end(struct kv_job *job, struct kv_txn *t, uint8_t end)
{
	job->op = KV_OP_COUNTER;
	for (int i = 0; i < KV_CALL_MAX_ARGS; i++)
		job->args[i] = NULL;
	job->ns = "";
	job->key = NULL;
	job->nkeys = job->nvalues = 0;
	job->keys = job->values = NULL;
	job->txn = t;
	job->txn_end = end;
}

const char kv_timeouts_sql[] = "SELECT pg_catalog.set_config('statement_timeout', $1, true), "
			       "pg_catalog.set_config('lock_timeout', $2, true)";

bool kv_job_timeouts(const struct kv_job *job, char text[KV_TIMEOUT_COUNT][12], const char *params[KV_TIMEOUT_COUNT])
{
	bool any = false;
	for (int t = 0; t < KV_TIMEOUT_COUNT; t++) {
		uint32_t ms = job->timeout_ms[t];
		params[t] = NULL;
		if (ms == 0 || (t == KV_TIMEOUT_STATEMENT && ms >= 60000))
			continue;
		snprintf(text[t], sizeof text[t], "%" PRIu32, ms);
		params[t] = text[t];
		any = true;
	}
	return any;
}

void kv_job_reset(struct kv_job *job)
{
	job->failed = false;
	job->ours = false;
	job->local = false;
	job->sqlstate[0] = job->message[0] = job->detail[0] = job->hint[0] = '\0';
	job->rows_len = 0;
	job->nrows = 0;
}

void kv_job_canceled(struct kv_job *job)
{
	kv_job_reset(job);
	kv_job_fail(job, "57014", KV_CANCELED_MESSAGE);
	job->ours = false; /* PostgreSQL's own error, as a shard would have said it */
}

static void run_job(struct kv_exec *x, struct kv_job *job)
{
	char err[KV_ERR_MAX];
	int nshards;

	kv_job_reset(job);
	if (ensure_catalog(x->r, &nshards, err) < 0) {
		kv_job_fail(job, "57P03", "kv routing is not ready: %s", err);
		return;
	}
	if (kv_op_array_arg(job->op, 1)) /* the keys: split by shard */
		run_split(x, nshards, job);
	else if (kv_op_keyless(job->op))
		run_fanout(x, nshards, job);
	else
		run_single(x, nshards, job);
}

static void *exec_main(void *arg)
{
	struct kv_exec *x = arg;
	struct kv_router *r = x->r;

	for (;;) {
		pthread_mutex_lock(&r->mu);
		while (!r->head && !r->stop && kv_route_now(r) == x->route_seen)
			pthread_cond_wait(&r->cv, &r->mu);
		if (r->stop) {
			pthread_mutex_unlock(&r->mu);
			break;
		}
		if (!r->head) {
			/* The catalog moved the instance (kv_router_follow): an idle connection to the
			 * old one is not kept until this thread's next call on that shard. */
			pthread_mutex_unlock(&r->mu);
			x->route_seen = kv_route_now(r);
			for (int i = 0; i < x->nconns; i++)
				if (x->conns[i] && x->routes[i] != x->route_seen) {
					PQfinish(x->conns[i]);
					x->conns[i] = NULL;
				}
			continue;
		}
		struct kv_job *job = r->head;
		r->head = job->next;
		if (!r->head)
			r->tail = NULL;
		pthread_mutex_unlock(&r->mu);
		run_job(x, job);
		job->done(job);
	}
	for (int i = 0; i < x->nconns; i++)
		if (x->conns[i])
			PQfinish(x->conns[i]);
	free(x->conns);
	free(x->prepared);
	free(x->routes);
	x->conns = NULL;
	x->prepared = NULL;
	x->routes = NULL;
	x->nconns = 0;
	return NULL;
}

static void answer_stopped(struct kv_job *job)
{
	job->rows_len = 0;
	job->nrows = 0;
	job->detail[0] = job->hint[0] = '\0';
	kv_job_fail(job, "57P01", "terminating kv call because tusk is shutting down");
	job->done(job);
}

static bool route_resolved(struct kv_router *r)
{
	const struct kv_route *rt = kv_route_now(r);
	return rt && rt->resolved;
}

/* A call the worker runs itself (shard_loop.c), of one shard or several, once routing is
 * known and the instance's host resolved. */
static bool runs_on_loop(struct kv_router *r, const struct kv_job *job)
{
	return job->worker && job->worker->index < r->nloops && (size_t)job->op < KV_OP_COUNT_ALL &&
	       kv_op_sql[job->op] && route_resolved(r);
}

bool kv_router_loop_ready(struct kv_router *r)
{
	return route_resolved(r);
}

int kv_router_nshards(struct kv_router *r)
{
	if (!route_resolved(r))
		return 0;
	pthread_mutex_lock(&r->cat_mu);
	int nshards = r->nshards;
	pthread_mutex_unlock(&r->cat_mu);
	return nshards > 0 ? nshards : 0;
}

const char *kv_router_cancel(struct kv_router *r, struct kv_job *job)
{
	bool queued = false;
	if (!r || !job->worker)
		return "no kv call runs";
	pthread_mutex_lock(&r->mu);
	for (struct kv_job **pp = &r->head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next) {
		if (*pp == job) { /* waiting for a router thread: it never runs */
			*pp = job->next;
			if (r->tail == job)
				r->tail = prev;
			queued = true;
			break;
		}
	}
	pthread_mutex_unlock(&r->mu);
	if (queued) {
		kv_job_canceled(job);
		job->local = true;
		job->done(job);
		return "its call was not sent yet: answered 57014";
	}
	return kv_loop_cancel(r, job->worker, job);
}

void kv_router_submit(struct kv_router *r, struct kv_job *job)
{
	job->put_slow = false;
	/* a transaction that holds a connection goes on there whatever became of the route */
	if (runs_on_loop(r, job) || (job->txn && job->txn->lc)) {
		kv_loop_submit(r, job);
		return;
	}
	if (job->txn) {
		/* a transaction holds one of its worker's connections: not a router thread's */
		kv_job_reset(job);
		kv_job_fail(job, "57P03", "kv routing is not ready for a transaction yet: try again");
		job->local = true;
		job->done(job);
		return;
	}
	job->next = NULL;
	pthread_mutex_lock(&r->mu);
	if (r->stop) {
		pthread_mutex_unlock(&r->mu);
		answer_stopped(job);
		return;
	}
	if (r->tail)
		r->tail->next = job;
	else
		r->head = job;
	r->tail = job;
	pthread_cond_signal(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

int kv_router_start(const struct tusk_config *cfg, struct kv_router **out)
{
	struct kv_endpoint ep;
	char err[KV_ERR_MAX];

	*out = NULL;
	if (!cfg->kv.zone)
		return 0;
	if (kv_catalog_endpoint(cfg, "kv_replicator", cfg->kv.replicator_password, &ep, err) < 0) {
		log_error(NULL, NULL, "kv: %s; calls to the kv database will fail", err);
		return 0;
	}
	struct kv_router *r = calloc(1, sizeof *r);
	if (!r)
		return -ENOMEM;
	snprintf(r->zone, sizeof r->zone, "%s", cfg->kv.zone);
	snprintf(r->catalog_host, sizeof r->catalog_host, "%s", ep.host);
	r->catalog_port = ep.port;
	snprintf(r->catalog_db, sizeof r->catalog_db, "%s", ep.dbname);
	if ((cfg->kv.replicator_password && !(r->replicator_password = strdup(cfg->kv.replicator_password))) ||
	    (cfg->kv.client_password && !(r->client_password = strdup(cfg->kv.client_password))) ||
	    (cfg->kv.router_password && !(r->router_password = strdup(cfg->kv.router_password)))) {
		free(r->replicator_password);
		free(r->client_password);
		free(r);
		return -ENOMEM;
	}
	r->nloops = cfg->workers > 0 ? cfg->workers : 0;
	r->loops = r->nloops ? calloc((size_t)r->nloops, sizeof *r->loops) : NULL;
	if (r->nloops && !r->loops)
		r->nloops = 0; /* every call on the threads */
	r->call_timeout = KV_CALL_TIMEOUT_S;
	const char *t = getenv("TUSK_TEST_KV_CALL_TIMEOUT"); /* tests: seconds, to see the bound act */
	if (t && strtod(t, NULL) > 0)
		r->call_timeout = strtod(t, NULL);
	r->idle_close = KV_IDLE_CLOSE_S;
	t = getenv("TUSK_TEST_KV_IDLE_CLOSE"); /* tests: seconds, to see the close without waiting 10 s */
	if (t && strtod(t, NULL) > 0)
		r->idle_close = strtod(t, NULL);
	t = getenv("TUSK_TEST_KV_CANCEL_DELAY"); /* tests: seconds a cancel waits before it is sent */
	if (t && strtod(t, NULL) > 0)
		r->cancel_delay = strtod(t, NULL);
	pthread_mutex_init(&r->mu, NULL);
	pthread_mutex_init(&r->cat_mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	if (kv_loop_cancels_start(r) < 0)
		log_error(NULL, NULL, "kv: out of memory; clients' cancels of kv calls will not be sent");
	int started = 0;
	for (int i = 0; i < KV_ROUTER_THREADS; i++) {
		r->exec[i].r = r;
		if (pthread_create(&r->exec[i].thread, NULL, exec_main, &r->exec[i]) == 0) {
			r->exec[i].started = true;
			started++;
		}
	}
	if (started == 0) {
		/* Nothing would ever answer a queued call: answer them all at once instead. */
		r->stop = true;
		log_error(NULL, NULL, "kv: cannot start the router's threads; calls to the kv database will fail");
	}
	*out = r;
	return 0;
}

void kv_router_stop(struct kv_router *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->mu);
	r->stop = true;
	atomic_store_explicit(&r->stopping, true, memory_order_relaxed);
	struct kv_job *queued = r->head;
	r->head = r->tail = NULL;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	kv_loop_cancels_stop(r); /* after stopping: no answer is posted to a worker from here on */
	for (int i = 0; i < KV_ROUTER_THREADS; i++)
		if (r->exec[i].started) {
			pthread_join(r->exec[i].thread, NULL);
			r->exec[i].started = false;
		}
	while (queued) {
		struct kv_job *next = queued->next;
		answer_stopped(queued);
		queued = next;
	}
}

void kv_router_worker_stop(struct kv_router *r, struct worker *w)
{
	if (r && w->index < r->nloops && r->loops[w->index])
		kv_loop_stop(r, r->loops[w->index]);
}

void kv_router_follow(void *router, const struct kv_catalog *cat)
{
	struct kv_router *r = router;
	if (!r)
		return;
	pthread_mutex_lock(&r->cat_mu);
	int nshards = r->nshards;
	const struct kv_route *cur = kv_route_now(r);
	pthread_mutex_unlock(&r->cat_mu);
	if (!cur)
		return; /* not routed yet: the first call reads the catalog itself */
	if (r->router_password) {
		/* the fast path's namespaces follow every newer catalog (a copy: cat is the caller's) */
		struct kv_catalog c;
		bool ok = kv_catalog_copy_ns(cat, &c) == 0;
		pthread_mutex_lock(&r->cat_mu);
		if (ok)
			nstab_publish(r, &c);
		else
			log_error(NULL, NULL, "kv: out of memory taking catalog version %lld's namespaces: puts call kv.put",
				  (long long)cat->version);
		pthread_mutex_unlock(&r->cat_mu);
		kv_catalog_free(&c);
	}
	if (cat->nshards != nshards)
		log_error(NULL, NULL, "kv: catalog version %lld has %d shards, the kv database routes by %d: it keeps doing "
			  "so until tusk restarts (a shard count is set before the first key is written)",
			  (long long)cat->version, cat->nshards, nshards);
	const struct kv_instance *in = zone_instance(cat, r->zone);
	if (!in) {
		log_warn(NULL, NULL, "kv: catalog version %lld has no instance in zone %s: kv calls keep going to instance "
			 "%d (%s:%d)", (long long)cat->version, r->zone, cur->instance_id, cur->host, cur->port);
		return;
	}
	if (in->id == cur->instance_id && in->port == cur->port && strcmp(in->host, cur->host) == 0)
		return;
	struct kv_route *rt = route_new(in); /* resolves: outside the lock, which the threads take per call */
	if (!rt) {
		log_error(NULL, NULL, "kv: out of memory following catalog version %lld: kv calls keep going to instance "
			  "%d (%s:%d)", (long long)cat->version, cur->instance_id, cur->host, cur->port);
		return;
	}
	pthread_mutex_lock(&r->cat_mu);
	route_publish(r, rt);
	pthread_mutex_unlock(&r->cat_mu);
	pthread_mutex_lock(&r->mu); /* the threads close their idle connections to the old one */
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	log_info(NULL, NULL, "kv: catalog version %lld: routing calls to instance %d (%s:%d), no longer to instance %d "
		 "(%s:%d), whose connections close once they have answered their calls", (long long)cat->version,
		 rt->instance_id, rt->host, rt->port, cur->instance_id, cur->host, cur->port);
}

void kv_router_free(struct kv_router *r)
{
	if (!r)
		return;
	kv_router_stop(r);
	for (int i = 0; i < r->nloops; i++)
		kv_loop_free(r->loops[i]);
	free(r->loops);
	for (struct kv_route *rt = atomic_load(&r->route), *older; rt; rt = older) {
		older = rt->older;
		free(rt);
	}
	for (struct kv_nstab *t = atomic_load(&r->nstab), *older; t; t = older) {
		older = t->older;
		struct kv_catalog c = { .nns = t->n, .ns = t->ns };
		kv_catalog_free(&c);
		free(t);
	}
	pthread_cond_destroy(&r->cv);
	pthread_mutex_destroy(&r->cat_mu);
	pthread_mutex_destroy(&r->mu);
	free(r->replicator_password);
	free(r->client_password);
	free(r->router_password);
	free(r);
}

void kv_job_free(struct kv_job *job)
{
	free(job->rows);
	job->rows = NULL;
	job->rows_len = job->rows_cap = 0;
}
