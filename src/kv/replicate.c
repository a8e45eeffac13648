/* Replication links of the kv store. Per (local shard database, peer instance) one thread:
 * in one REPEATABLE READ transaction on the peer it reads the peer's own rows (origin = peer)
 * with chg_xid in [W, snapshot xmin), keyset-paginated on (chg_xid, ns, key), and applies each
 * page locally with kv.apply_batch, which stores the new W in the same local transaction.
 * Every xid below the snapshot's xmin has finished, and every later change gets a larger
 * xid, so no committed write can land behind W whatever the clocks or transaction lengths.
 * Owns: the supervisor thread (reads the catalog, starts the links) and the link threads. */
#include "kv/replicate.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config/config.h"
#include "kv/catalog.h"
#include "kv/page.h"
#include "kv/schema.h"
#include "util/log.h"

#define BATCH_MIN 10
#define BATCH_START 500
#define BATCH_MAX 5000
#define PAGES_PER_PASS 20         /* then the peer's snapshot is released and a new pass begins */
#define PAGE_BYTES_SOFT (8 << 20) /* a page of more JSON than this halves the batch */
#define IDLE_MAX_S 0.25           /* passes that find nothing wait kv.pull_interval doubling to this */
#define RETRY_MIN_S 0.2           /* after an error, doubling up to RETRY_MAX_S */
#define RETRY_MAX_S 5.0
#define ACKS_INTERVAL_S 1.0       /* between two exchanges of a link's acknowledgements (note_caught_up) */
#define LAG_ROWS_CAP "10000"      /* counting the backlog costs an index scan; stop here */
#define XID_TEXT_MAX 24           /* a decimal xid8 (at most 20 digits) */

struct kv_link {
	struct kv_replicator *r;
	pthread_t thread;
	bool started;
	int local_id, peer_id, shard;
	char local_host[256], peer_host[256];
	int local_port, peer_port;
	char dbname[64];
	char app_name[64];
	pthread_mutex_t mu; /* protects stats: written by the link thread, read by the console */
	struct kv_link_stats stats;
	atomic_bool stop;   /* this link alone stops (a catalog reload dropped it) */
	int batch;          /* the link thread's own */
	double caught_up;   /* under mu: CLOCK_REALTIME of the last caught-up pass's snapshot; 0: never */
	double ae_at;       /* the link thread's own: CLOCK_REALTIME of its last anti-entropy round */
	int ae_chunk;       /* the link thread's own: differing buckets a repair statement asks for */
	double acks_at;     /* the link thread's own: CLOCK_REALTIME of its last exchange of acknowledgements */
	/* the link thread's own: the statements of a pass prepared on its local and peer
	 * connections (kv_conn_exec_prepared), zeroed when either is opened */
	uint32_t prep_local, prep_peer;
};

/* A pass's statements, each prepared once per connection (kv_conn_exec_prepared): parsing
 * them at every pass was ~11% of the replication backends' CPU (docs/kv.md, "Speed",
 * twenty-first step). On the peer the pass's transaction keeps a custom plan per run
 * (plan_cache_mode): the plans of the page and the backlog count are those of a statement run
 * with its parameters, as before; the local statements are function calls and a primary-key
 * read, which a generic plan serves alike. */
enum { ST_STATE, ST_SNAPSHOT, ST_PAGE_FIRST, ST_PAGE_NEXT, ST_APPLY, ST_CAUGHT_UP, ST_ACKS, ST_NOTE_ACKS };

struct kv_replicator {
	atomic_bool stop;
	pthread_mutex_t mu;  /* protects links/nlinks/instance_ids (replaced by the supervisor at a
	                      * reload; readers copy under it) and sleeps on cv */
	pthread_cond_t cv;   /* signalled at stop and at a link's stop, so sleepers wake at once */
	pthread_t supervisor;
	struct kv_link **links; /* each link's memory stays put while it runs */
	int nlinks;
	atomic_bool reload;  /* SIGHUP: read the catalog again (kv_replicate_reload) */
	int64_t version;     /* the supervisor's: catalog version the links follow */
	char zone[64];
	char catalog_host[256];
	int catalog_port;
	char catalog_db[CONFIG_NAME_MAX];
	char *password; /* kv_replicator's; NULL: none */
	kv_catalog_hook *on_catalog; /* each newer version followed, and its argument */
	void *on_catalog_arg;
	bool stopped;   /* main thread only: kv_replicate_stop ran */
	/* the purge (gc_main): settings from the config, the catalog's instance ids (under mu),
	 * and its thread */
	double ae_interval_s; /* anti-entropy: between digest comparisons of a link; 0: never */
	double pull_s;        /* kv.pull_interval: the wait after a pass that found rows */
	char link_options[96]; /* the links' connections' options: kv.link_statement_timeout */
	double link_timeout_s; /* the same, in seconds */
	int64_t gc_grace_us;
	double gc_interval_s, gc_pause_s;
	int gc_batch;
	int *instance_ids;
	int ninstances;
	pthread_t gc_thread;
	bool gc_started;
};

static double now_real(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Sleep up to seconds; false when replication (or link l, if given) is stopping. */
static bool nap_for(struct kv_replicator *r, struct kv_link *l, double seconds)
{
	struct timespec until;
	double t = now_real() + seconds;

	until.tv_sec = (time_t)t;
	until.tv_nsec = (long)((t - (double)until.tv_sec) * 1e9);
	pthread_mutex_lock(&r->mu);
	while (!atomic_load(&r->stop) && !(l && atomic_load(&l->stop))) {
		if (pthread_cond_timedwait(&r->cv, &r->mu, &until) != 0)
			break;
	}
	pthread_mutex_unlock(&r->mu);
	return !atomic_load(&r->stop) && !(l && atomic_load(&l->stop));
}

static bool nap(struct kv_replicator *r, double seconds)
{
	return nap_for(r, NULL, seconds);
}

static bool link_stopping(struct kv_link *l)
{
	return atomic_load(&l->r->stop) || atomic_load(&l->stop);
}

static void set_error(struct kv_link *l, const char *err)
{
	bool changed;

	pthread_mutex_lock(&l->mu);
	changed = strcmp(l->stats.last_error, err) != 0;
	snprintf(l->stats.last_error, sizeof l->stats.last_error, "%s", err);
	l->stats.connected = false;
	pthread_mutex_unlock(&l->mu);
	/* Once per distinct error, not once per retry. */
	if (changed)
		log_warn(NULL, NULL, "kv link %s (instance %d <- %d): %s", l->dbname, l->local_id, l->peer_id, err);
}

/* A keyset cursor into the peer's rows: (w, ns, key), or just w at the start of a range. */
struct cursor {
	char w[XID_TEXT_MAX];
	char *ns, *key; /* both NULL or both set; malloc'd */
};

static void cursor_clear(struct cursor *c)
{
	free(c->ns);
	free(c->key);
	c->ns = c->key = NULL;
}

static bool xid_text_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 20)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return true;
}

static int cursor_set(struct cursor *c, const char *w, const char *ns, const char *key)
{
	if (!xid_text_ok(w))
		return -EPROTO;
	cursor_clear(c);
	snprintf(c->w, sizeof c->w, "%s", w);
	if (ns && key) {
		c->ns = strdup(ns);
		c->key = strdup(key);
		if (!c->ns || !c->key) {
			cursor_clear(c);
			return -ENOMEM;
		}
	}
	return 0;
}

static int read_state(struct kv_link *l, PGconn *local, struct cursor *c, char err[KV_ERR_MAX])
{
	char peer[16];
	const char *params[] = { peer };

	snprintf(peer, sizeof peer, "%d", l->peer_id);
	PGresult *res = kv_conn_exec_prepared(local, &l->prep_local, ST_STATE,
					      "SELECT w::text, cur_ns, cur_key FROM kv.links WHERE peer = $1", 1, params, err);
	if (!res)
		return -EIO;
	int rc;
	if (PQntuples(res) == 0)
		rc = cursor_set(c, "0", NULL, NULL);
	else
		rc = cursor_set(c, PQgetvalue(res, 0, 0), PQgetisnull(res, 0, 1) ? NULL : PQgetvalue(res, 0, 1),
				PQgetisnull(res, 0, 2) ? NULL : PQgetvalue(res, 0, 2));
	PQclear(res);
	if (rc < 0)
		snprintf(err, KV_ERR_MAX, "kv.links: unreadable state for peer %d", l->peer_id);
	return rc;
}

/* The page query: the peer's own rows after the cursor and below the snapshot's xmin, as one
 * JSON array, plus the last row's keyset position. json, not jsonb: the array is sent as text
 * and read by kv_page_decode and kv.apply_batch's jsonb parameter, so building it as jsonb
 * (then printed) only cost the peer ~2 us a row (docs/kv.md, "Speed", twentieth step). Rows of
 * version 0 are kv.incr's local tombstones of keys without a row (schema.c): never sent. */
#define PAGE_SELECT                                                                                                     \
	"WITH p AS (SELECT ns, key, value, ver_ts, origin, expires_at, chg_xid FROM kv.data WHERE origin = $1::int "   \
	"AND chg_xid < $2::xid8 AND ver_ts > 0 AND %s ORDER BY chg_xid, ns, key LIMIT $3::int) "                          \
	"SELECT (SELECT count(*) FROM p), (SELECT coalesce(json_agg(json_build_object('ns', ns, 'key', key, "            \
	"'value', value, 'ver_ts', ver_ts, 'origin', origin, 'expires_at', expires_at) ORDER BY chg_xid, ns, key), "    \
	"'[]')::text FROM p), l.chg_xid::text, l.ns, l.key FROM (SELECT 1) one LEFT JOIN (SELECT chg_xid, ns, key "     \
	"FROM p ORDER BY chg_xid DESC, ns DESC, key DESC LIMIT 1) l ON true"

static char page_first_sql[1024], page_next_sql[1024];
static pthread_once_t page_sql_once = PTHREAD_ONCE_INIT;

static void build_page_sql(void)
{
	snprintf(page_first_sql, sizeof page_first_sql, PAGE_SELECT, "chg_xid >= $4::xid8");
	snprintf(page_next_sql, sizeof page_next_sql, PAGE_SELECT,
		 "(chg_xid, ns, key) > ($4::xid8, $5::text COLLATE \"C\", $6::text COLLATE \"C\")");
}

struct page {
	long n;
	PGresult *res; /* holds the JSON and the last position */
};

/* One page from the peer. The result is hostile input: the count, the JSON's shape and the
 * position are checked by kv_page_decode before use; kv.apply_batch checks every row again. */
static int fetch_page(struct kv_link *l, PGconn *peer, const char *xmin, const struct cursor *c, struct page *pg,
		      char err[KV_ERR_MAX])
{
	char origin[16], limit[16];
	const char *params[6] = { origin, xmin, limit, c->w, c->ns, c->key };

	snprintf(origin, sizeof origin, "%d", l->peer_id);
	snprintf(limit, sizeof limit, "%d", l->batch);
	PGresult *res = kv_conn_exec_prepared(peer, &l->prep_peer, c->ns ? ST_PAGE_NEXT : ST_PAGE_FIRST,
					      c->ns ? page_next_sql : page_first_sql, c->ns ? 6 : 4, params, err);
	if (!res)
		return -EIO;
	long n = 0;
	char why[KV_ERR_MAX / 2];
#define FIELD(i) (PQgetisnull(res, 0, (i)) ? NULL : PQgetvalue(res, 0, (i)))
	if (PQntuples(res) != 1 || PQnfields(res) != 5) {
		snprintf(why, sizeof why, "%d rows of %d columns", PQntuples(res), PQnfields(res));
	} else {
		struct kv_page_in in = { .count = FIELD(0), .rows = FIELD(1), .pos_w = FIELD(2), .pos_ns = FIELD(3),
					 .pos_key = FIELD(4), .cursor_w = c->w, .xmin = xmin, .batch = l->batch };
		if (kv_page_decode(&in, &n, why, sizeof why) == 0)
			why[0] = '\0';
	}
#undef FIELD
	if (why[0]) {
		snprintf(err, KV_ERR_MAX, "peer %d sent a malformed page: %s", l->peer_id, why);
		PQclear(res);
		return -EPROTO;
	}
	pg->n = n;
	pg->res = res;
	return 0;
}

struct applied {
	long applied, skipped, quarantined;
};

static int apply_page(struct kv_link *l, PGconn *local, const char *rows, const char *w, const char *ns,
		      const char *key, struct applied *a, char err[KV_ERR_MAX])
{
	char peer[16];
	const char *params[] = { peer, rows, w, ns, key };

	snprintf(peer, sizeof peer, "%d", l->peer_id);
	PGresult *res = kv_conn_exec_prepared(local, &l->prep_local, ST_APPLY,
					      "SELECT applied, skipped, quarantined FROM kv.apply_batch($1::int, $2::jsonb, "
					      "$3::xid8, $4, $5)",
					      5, params, err);
	if (!res)
		return -EIO;
	if (PQntuples(res) != 1) {
		PQclear(res);
		snprintf(err, KV_ERR_MAX, "kv.apply_batch returned no row");
		return -EPROTO;
	}
	a->applied = atol(PQgetvalue(res, 0, 0));
	a->skipped = atol(PQgetvalue(res, 0, 1));
	a->quarantined = atol(PQgetvalue(res, 0, 2));
	PQclear(res);
	return 0;
}

static void count_page(struct kv_link *l, const struct applied *a)
{
	pthread_mutex_lock(&l->mu);
	l->stats.applied += (uint64_t)a->applied;
	l->stats.skipped += (uint64_t)a->skipped;
	l->stats.quarantined += (uint64_t)a->quarantined;
	l->stats.batches++;
	l->stats.batch_size = l->batch;
	pthread_mutex_unlock(&l->mu);
	if (a->quarantined > 0)
		log_warn(NULL, NULL, "kv link %s (instance %d <- %d): %ld poison row%s quarantined (kv.quarantine)", l->dbname,
			 l->local_id, l->peer_id, a->quarantined, a->quarantined == 1 ? "" : "s");
}

/* A pass caught up at the peer's clock snap_us: record it, and what the peer says of its own
 * links (how far it has every origin), for the purge's horizon (kv.gc); with w, W moves to the
 * peer's xmin as well. The peer's acknowledgements are read in the pass's snapshot
 * transaction and checked as JSON by kv.note_acks; the local writes are one transaction, so an
 * idle link spends one xid and one commit a second, not one per statement. */
static int note_caught_up(struct kv_link *l, PGconn *local, PGconn *peer, const char *w, const char *snap_us,
			  char err[KV_ERR_MAX])
{
	char id[16];

	snprintf(id, sizeof id, "%d", l->peer_id);
	PGresult *acks = kv_conn_exec_prepared(peer, &l->prep_peer, ST_ACKS,
					       "SELECT coalesce(jsonb_agg(jsonb_build_object('origin', peer, 'caught_up_us', "
					       "caught_up_us)), '[]')::text FROM kv.links WHERE caught_up_us IS NOT NULL",
					       0, NULL, err);
	if (!acks)
		return -EIO;
	if (PQntuples(acks) != 1 || PQgetisnull(acks, 0, 0)) {
		snprintf(err, KV_ERR_MAX, "peer %d sent malformed acknowledgements", l->peer_id);
		PQclear(acks);
		return -EPROTO;
	}
	if (kv_conn_run(local, "BEGIN", 0, NULL, err) < 0) {
		PQclear(acks);
		return -EIO;
	}
	int rc = 0;
	struct applied a;
	if (w)
		rc = apply_page(l, local, "[]", w, NULL, NULL, &a, err);
	const char *p2[] = { id, snap_us };
	PGresult *res = rc < 0 ? NULL
			       : kv_conn_exec_prepared(local, &l->prep_local, ST_CAUGHT_UP,
						       "SELECT kv.note_caught_up($1::int, $2::bigint)", 2, p2, err);
	if (res) {
		PQclear(res);
		const char *p3[] = { id, PQgetvalue(acks, 0, 0) };
		res = kv_conn_exec_prepared(local, &l->prep_local, ST_NOTE_ACKS, "SELECT kv.note_acks($1::int, $2::jsonb)", 2,
					    p3, err);
	}
	PQclear(acks);
	if (!res || kv_conn_run(local, "COMMIT", 0, NULL, err) < 0) {
		PQclear(res);
		PQclear(PQexec(local, "ROLLBACK"));
		return rc < 0 ? rc : -EIO;
	}
	PQclear(res);
	return 0;
}

/* A page that was slow or huge: the next is asked for half as many rows, not fewer than
 * BATCH_MIN; one that failed (failed: its statement_timeout, say), down to one row: with a
 * floor of 10, ten large rows that the peer could not build within the links' timeout (a
 * loaded machine, 100 kB rows, 50 ms) stopped the link for good, the same page failing at
 * every pass. */
static void halve_batch(struct kv_link *l, bool failed)
{
	int floor = failed ? 1 : BATCH_MIN;
	if (l->batch > floor)
		l->batch = l->batch / 2 > floor ? l->batch / 2 : floor;
}

/* One pass. *more: the pass stopped before the end (pages left); pull again at once. */
static int run_pass(struct kv_link *l, PGconn *local, PGconn *peer, bool *more, long *rows, char err[KV_ERR_MAX])
{
	struct cursor c = { .w = "0" };
	char xmin[XID_TEXT_MAX], origin[16], snap_us[XID_TEXT_MAX + 1];
	int rc;

	*more = false;
	*rows = 0;
	rc = read_state(l, local, &c, err);
	if (rc < 0)
		return rc;
	if (kv_conn_run(peer, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL plan_cache_mode = force_custom_plan",
			0, NULL, err) < 0) {
		rc = -EIO;
		goto out;
	}
	double snap_at = now_real();
	/* The snapshot, and the peer's clock no later than it (the statement's start, with the
	 * skew tests inject): every write of the peer committed before then is in this pass. The
	 * backlog (the peer's rows from W on below xmin, counted up to a cap) in the same
	 * statement: one round trip fewer a pass. */
	snprintf(origin, sizeof origin, "%d", l->peer_id);
	const char *sp[] = { origin, c.w };
	PGresult *res = kv_conn_exec_prepared(peer, &l->prep_peer, ST_SNAPSHOT,
					      "SELECT s.x::text, (extract(epoch FROM statement_timestamp()) * 1000000)::bigint "
					      "+ coalesce((SELECT clock_offset_us FROM kv.identity), 0), "
					      "(SELECT count(*) FROM (SELECT 1 FROM kv.data WHERE origin = $1::int AND chg_xid >= $2::xid8 "
					      "AND chg_xid < s.x LIMIT " LAG_ROWS_CAP ") b) "
					      "FROM (SELECT pg_snapshot_xmin(pg_current_snapshot()) x) s",
					      2, sp, err);
	if (!res) {
		rc = -EIO;
		goto out_rollback;
	}
	bool three = PQntuples(res) == 1 && PQnfields(res) == 3;
	snprintf(xmin, sizeof xmin, "%s", three ? PQgetvalue(res, 0, 0) : "");
	snprintf(snap_us, sizeof snap_us, "%s", three ? PQgetvalue(res, 0, 1) : "");
	long backlog = three ? atol(PQgetvalue(res, 0, 2)) : 0;
	PQclear(res);
	if (!xid_text_ok(snap_us + (snap_us[0] == '-'))) {
		snprintf(err, KV_ERR_MAX, "peer %d: unreadable clock", l->peer_id);
		rc = -EPROTO;
		goto out_rollback;
	}
	if (!xid_text_ok(xmin)) {
		snprintf(err, KV_ERR_MAX, "peer %d: unreadable snapshot xmin", l->peer_id);
		rc = -EPROTO;
		goto out_rollback;
	}
	pthread_mutex_lock(&l->mu);
	l->stats.lag_rows = backlog;
	pthread_mutex_unlock(&l->mu);

	bool reached_end = false;
	for (int page = 0; page < PAGES_PER_PASS && !link_stopping(l); page++) {
		struct page pg;
		struct applied a;
		double t0 = now_real();

		rc = fetch_page(l, peer, xmin, &c, &pg, err);
		if (rc < 0) {
			/* A page the peer failed to build (its statement_timeout: large values
			 * written together; a JSON past its size limit) is asked again smaller,
			 * as one that failed to apply below: the same page at every retry would
			 * stop the link for good. */
			halve_batch(l, true);
			goto out_rollback;
		}
		if (pg.n == 0) {
			PQclear(pg.res);
			reached_end = true;
			break;
		}
		size_t bytes = strlen(PQgetvalue(pg.res, 0, 1));
		bool full = pg.n == l->batch;
		/* A short page is the last below xmin: its apply moves W to xmin and drops the
		 * cursor at once (what the empty apply after the loop would do, a round trip later). */
		const char *w = full ? PQgetvalue(pg.res, 0, 2) : xmin;
		const char *ns = full ? PQgetvalue(pg.res, 0, 3) : NULL, *key = full ? PQgetvalue(pg.res, 0, 4) : NULL;
		rc = apply_page(l, local, PQgetvalue(pg.res, 0, 1), w, ns, key, &a, err);
		if (rc == 0)
			rc = cursor_set(&c, w, ns, key);
		PQclear(pg.res);
		if (rc < 0) {
			/* A page that failed whole (a timeout, say) is retried smaller. */
			halve_batch(l, true);
			goto out_rollback;
		}
		*rows += pg.n;
		count_page(l, &a);
		/* Adapt: grow while full pages are quick, shrink when a page is slow or huge;
		 * quick and slow also against the links' statement_timeout, so that a batch
		 * never grows into it. */
		double dt = now_real() - t0, to = l->r->link_timeout_s;
		if (bytes > PAGE_BYTES_SOFT || dt > (to / 2 < 1.0 ? to / 2 : 1.0))
			halve_batch(l, false);
		else if (full && dt < (to / 8 < 0.2 ? to / 8 : 0.2) && l->batch < BATCH_MAX)
			l->batch = l->batch * 2 < BATCH_MAX ? l->batch * 2 : BATCH_MAX;
		if (!full) {
			reached_end = true;
			break;
		}
	}
	if (reached_end) {
		/* The acknowledgements feed only the purge's horizon (hours of grace by default):
		 * exchanged once a second, not at every pass (three round trips: nine a pass, not six). */
		bool acks_due = snap_at - l->acks_at >= ACKS_INTERVAL_S || snap_at < l->acks_at;
		/* Everything below xmin is applied: W moves to xmin, the cursor is dropped. At once
		 * when this pass applied rows or holds a cursor; after a pass that found nothing, only
		 * with the acknowledgements: [W, xmin) holds none of the peer's rows then (every xid
		 * below xmin has finished), so the next pass reads it for nothing more, while each
		 * move is a write, whose xid moves the peer's xmin for the links pulling from here:
		 * idle links kept one another writing at every pass. */
		bool move_w = c.ns || (strcmp(c.w, xmin) != 0 && (*rows > 0 || acks_due));
		if (acks_due) {
			rc = note_caught_up(l, local, peer, move_w ? xmin : NULL, snap_us, err);
			if (rc < 0)
				goto out_rollback;
			l->acks_at = snap_at;
		} else if (move_w) {
			struct applied a;
			rc = apply_page(l, local, "[]", xmin, NULL, NULL, &a, err);
			if (rc < 0)
				goto out_rollback;
		}
		pthread_mutex_lock(&l->mu);
		l->caught_up = snap_at;
		pthread_mutex_unlock(&l->mu);
	} else {
		*more = true;
	}
	rc = kv_conn_run(peer, "COMMIT", 0, NULL, err);
	pthread_mutex_lock(&l->mu);
	l->stats.passes++;
	if (rc == 0)
		l->stats.last_error[0] = '\0';
	l->stats.connected = rc == 0;
	pthread_mutex_unlock(&l->mu);
	goto out;

out_rollback:
	PQclear(PQexec(peer, "ROLLBACK"));
out:
	cursor_clear(&c);
	return rc;
}

/* ---- anti-entropy ---- */

#define AE_BUCKETS 1024
#define AE_CHUNK 64 /* differing buckets fetched per statement */

/* Digests of the shard on conn: per bucket "n:h", "" for an empty bucket. */
static int read_digest(PGconn *conn, char (*out)[48], char err[KV_ERR_MAX])
{
	char nb[16];
	const char *params[] = { nb };

	snprintf(nb, sizeof nb, "%d", AE_BUCKETS);
	PGresult *res = kv_conn_exec(conn, "SELECT bucket, n, h FROM kv.digest($1::int)", 1, params, err);
	if (!res)
		return -EIO;
	for (int b = 0; b < AE_BUCKETS; b++)
		out[b][0] = '\0';
	for (int i = 0; i < PQntuples(res); i++) {
		long b = atol(PQgetvalue(res, i, 0));
		if (b < 0 || b >= AE_BUCKETS || PQnfields(res) != 3) {
			PQclear(res);
			snprintf(err, KV_ERR_MAX, "malformed digest");
			return -EPROTO;
		}
		snprintf(out[b], sizeof out[b], "%s:%s", PQgetvalue(res, i, 1), PQgetvalue(res, i, 2));
	}
	PQclear(res);
	return 0;
}

/* Compare the peer's bucketed digests with ours; for buckets that differ, apply the peer's
 * rows here through the one upsert (kv.apply_repair): newer versions win, so this repairs a
 * database that lost rows and fills a new one with rows of origins it cannot pull (gone from
 * the catalog), never undoing a newer write. Each side repairs itself from every peer. */
static int anti_entropy(struct kv_link *l, PGconn *local, PGconn *peer, char err[KV_ERR_MAX])
{
	char (*mine)[48] = malloc(sizeof(char[AE_BUCKETS][48]));
	char (*theirs)[48] = malloc(sizeof(char[AE_BUCKETS][48]));
	int rc = -ENOMEM, differ = 0;
	long repaired = 0;

	if (!mine || !theirs) {
		snprintf(err, KV_ERR_MAX, "out of memory");
		goto out;
	}
	rc = read_digest(peer, theirs, err);
	if (rc == 0)
		rc = read_digest(local, mine, err);
	if (rc < 0)
		goto out;
	char list[AE_CHUNK * 6 + 4], peer_id[16], nb[16];
	snprintf(peer_id, sizeof peer_id, "%d", l->peer_id);
	snprintf(nb, sizeof nb, "%d", AE_BUCKETS);
	/* A chunk whose rows the peer cannot send or this database cannot apply in one statement
	 * (the links' statement_timeout, jsonb's 256 MB) is asked again halved, down to one
	 * bucket; the size is kept for the next round and doubles back after a round without
	 * failures. A fixed chunk failed at every round. */
	if (l->ae_chunk < 1 || l->ae_chunk > AE_CHUNK)
		l->ae_chunk = AE_CHUNK;
	bool shrunk = false;
	for (int b = 0; b < AE_BUCKETS && !link_stopping(l);) {
		size_t off = (size_t)snprintf(list, sizeof list, "{");
		int in_chunk = 0, start = b;
		for (; b < AE_BUCKETS && in_chunk < l->ae_chunk; b++) {
			/* Only buckets the peer has something in: what we hold alone the peer pulls from us. */
			if (!theirs[b][0] || strcmp(mine[b], theirs[b]) == 0)
				continue;
			off += (size_t)snprintf(list + off, sizeof list - off, "%s%d", in_chunk ? "," : "", b);
			in_chunk++;
		}
		if (in_chunk == 0)
			continue;
		snprintf(list + off, sizeof list - off, "}");
		differ += in_chunk;
		const char *p1[] = { list, nb };
		PGresult *res = kv_conn_exec(peer, "SELECT kv.bucket_rows($1::int[], $2::int)", 2, p1, err);
		PGresult *ap = NULL;
		if (res) {
			const char *p2[] = { peer_id, PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "[]" };
			ap = kv_conn_exec(local, "SELECT kv.apply_repair($1::int, $2::jsonb)", 2, p2, err);
			PQclear(res);
		}
		if (!ap) {
			if (l->ae_chunk > 1 && PQstatus(peer) == CONNECTION_OK && PQstatus(local) == CONNECTION_OK) {
				log_warn(NULL, NULL, "kv anti-entropy %s (instance %d <- %d): %d buckets in one statement failed "
					 "(%s); asking for %d", l->dbname, l->local_id, l->peer_id, l->ae_chunk, err,
					 l->ae_chunk / 2);
				l->ae_chunk /= 2;
				shrunk = true;
				differ -= in_chunk;
				b = start;
				continue;
			}
			rc = -EIO;
			goto out;
		}
		repaired += atol(PQgetvalue(ap, 0, 0));
		PQclear(ap);
	}
	if (repaired > 0)
		log_info(NULL, NULL, "kv anti-entropy %s (instance %d <- %d): %d bucket%s differed, %ld row%s repaired",
			 l->dbname, l->local_id, l->peer_id, differ, differ == 1 ? "" : "s", repaired,
			 repaired == 1 ? "" : "s");
	if (!shrunk && l->ae_chunk < AE_CHUNK)
		l->ae_chunk *= 2;
	pthread_mutex_lock(&l->mu);
	l->stats.digest_mismatches += (uint64_t)differ;
	l->stats.repaired += (uint64_t)repaired;
	pthread_mutex_unlock(&l->mu);
	rc = 0;
out:
	free(mine);
	free(theirs);
	return rc;
}

static void *link_main(void *arg)
{
	struct kv_link *l = arg;
	struct kv_replicator *r = l->r;
	PGconn *local = NULL, *peer = NULL;
	double idle = r->pull_s, retry = RETRY_MIN_S;
	double idle_max = r->pull_s > IDLE_MAX_S ? r->pull_s : IDLE_MAX_S;
	char err[KV_ERR_MAX];

	while (!link_stopping(l)) {
		struct kv_endpoint lep = { .host = l->local_host, .port = l->local_port, .dbname = l->dbname,
					   .user = "kv_replicator", .password = r->password, .options = r->link_options };
		struct kv_endpoint pep = { .host = l->peer_host, .port = l->peer_port, .dbname = l->dbname,
					   .user = "kv_replicator", .password = r->password, .options = r->link_options };
		if (!local) {
			local = kv_conn_open(&lep, l->app_name, err);
			l->prep_local = 0;
		}
		if (local && !peer) {
			peer = kv_conn_open(&pep, l->app_name, err);
			l->prep_peer = 0;
		}
		if (!local || !peer) {
			set_error(l, err);
			if (!nap_for(r, l, retry))
				break;
			retry = retry * 2 < RETRY_MAX_S ? retry * 2 : RETRY_MAX_S;
			continue;
		}
		bool more;
		long rows;
		int batch = l->batch;
		if (run_pass(l, local, peer, &more, &rows, err) < 0) {
			set_error(l, err);
			/* Pages applied before the failure, or a page to be asked again smaller: the
			 * link moves, so the wait does not grow. */
			if (rows > 0 || l->batch < batch)
				retry = RETRY_MIN_S;
			/* A broken connection is reopened, and one whose prepared statement the
			 * server can no longer run (the schema changed under it); a failing
			 * statement is just retried. */
			if (PQstatus(local) != CONNECTION_OK || (l->prep_local & KV_PREPARED_STALE)) {
				PQfinish(local);
				local = NULL;
			}
			if (PQstatus(peer) != CONNECTION_OK || (l->prep_peer & KV_PREPARED_STALE)) {
				PQfinish(peer);
				peer = NULL;
			}
			if (!nap_for(r, l, retry))
				break;
			retry = retry * 2 < RETRY_MAX_S ? retry * 2 : RETRY_MAX_S;
			continue;
		}
		retry = RETRY_MIN_S;
		if (more)
			continue;
		if (r->ae_interval_s > 0 && now_real() - l->ae_at >= r->ae_interval_s) {
			l->ae_at = now_real();
			if (anti_entropy(l, local, peer, err) < 0)
				set_error(l, err); /* the next pass clears it; the next round tries again */
		}
		/* Caught up: back off while the peer is quiet, return to quick pulls when it writes. */
		idle = rows > 0 ? r->pull_s : (idle * 2 < idle_max ? idle * 2 : idle_max);
		if (!nap_for(r, l, idle))
			break;
	}
	if (local)
		PQfinish(local);
	if (peer)
		PQfinish(peer);
	return NULL;
}

/* Links of this zone from the catalog: every local instance x shard x other instance, each
 * allocated on its own (not started). *out and the count, or -ENOMEM. */
static int plan_links(struct kv_replicator *r, const struct kv_catalog *cat, struct kv_link ***out)
{
	int nlocal = 0, n = 0;

	*out = NULL;
	for (int i = 0; i < cat->ninstances; i++)
		nlocal += strcmp(cat->instances[i].zone, r->zone) == 0;
	if (nlocal == 0 || cat->ninstances < 2)
		return 0;
	size_t total = (size_t)nlocal * (size_t)cat->nshards * (size_t)(cat->ninstances - 1);
	struct kv_link **links = calloc(total, sizeof *links);
	if (!links)
		return -ENOMEM;
	for (int i = 0; i < cat->ninstances; i++) {
		const struct kv_instance *me = &cat->instances[i];
		if (strcmp(me->zone, r->zone) != 0)
			continue;
		for (int s = 0; s < cat->nshards; s++) {
			for (int j = 0; j < cat->ninstances; j++) {
				const struct kv_instance *p = &cat->instances[j];
				if (j == i)
					continue;
				struct kv_link *l = calloc(1, sizeof *l);
				if (!l) {
					for (int k = 0; k < n; k++) {
						pthread_mutex_destroy(&links[k]->mu);
						free(links[k]);
					}
					free(links);
					return -ENOMEM;
				}
				links[n++] = l;
				l->r = r;
				l->local_id = me->id;
				l->peer_id = p->id;
				l->shard = s;
				snprintf(l->local_host, sizeof l->local_host, "%s", me->host);
				snprintf(l->peer_host, sizeof l->peer_host, "%s", p->host);
				l->local_port = me->port;
				l->peer_port = p->port;
				snprintf(l->dbname, sizeof l->dbname, KV_SHARD_DB_PREFIX "%d", s);
				snprintf(l->app_name, sizeof l->app_name, "tusk kv %d<-%d/%d", me->id, p->id, s);
				l->batch = BATCH_START;
				l->stats = (struct kv_link_stats){ .local_id = me->id, .peer_id = p->id, .shard = s,
								   .lag_seconds = -1, .batch_size = BATCH_START };
				atomic_init(&l->stop, false);
				pthread_mutex_init(&l->mu, NULL);
			}
		}
	}
	*out = links;
	return n;
}

/* The same link: same databases at the same addresses. */
static bool same_link(const struct kv_link *a, const struct kv_link *b)
{
	return a->local_id == b->local_id && a->peer_id == b->peer_id && a->shard == b->shard &&
	       a->local_port == b->local_port && a->peer_port == b->peer_port &&
	       strcmp(a->local_host, b->local_host) == 0 && strcmp(a->peer_host, b->peer_host) == 0;
}

static void log_link_stopped(struct kv_link *l)
{
	struct kv_link_stats st;

	pthread_mutex_lock(&l->mu);
	st = l->stats;
	st.lag_seconds = l->caught_up > 0 ? now_real() - l->caught_up : -1;
	pthread_mutex_unlock(&l->mu);
	log_info(NULL, NULL,
		 "kv link %s (instance %d <- %d) stopped: applied %llu, skipped %llu, quarantined %llu, "
		 "batches %llu, passes %llu, lag %.2f s / %lld rows, batch %d, last error: %s",
		 l->dbname, st.local_id, st.peer_id, (unsigned long long)st.applied, (unsigned long long)st.skipped,
		 (unsigned long long)st.quarantined, (unsigned long long)st.batches, (unsigned long long)st.passes,
		 st.lag_seconds, (long long)st.lag_rows, st.batch_size, st.last_error[0] ? st.last_error : "none");
}

/* Follow a new plan: links in both keep running untouched (their counters too), links only
 * in the old one stop, links only in the new one start. Takes plan (and its links). */
static void apply_plan(struct kv_replicator *r, struct kv_link **plan, int n, int64_t version, const int *ids,
		       int nids)
{
	int kept = 0, started = 0, stopped = 0;
	int *new_ids = calloc((size_t)nids + 1, sizeof *new_ids);
	struct kv_link **gone = NULL;
	int ngone = 0;

	if (new_ids)
		memcpy(new_ids, ids, (size_t)nids * sizeof *ids);
	bool *placed = n ? calloc((size_t)n, sizeof *placed) : NULL; /* plan[k] is a kept link */
	pthread_mutex_lock(&r->mu);
	struct kv_link **old = r->links;
	int nold = r->nlinks;
	gone = nold ? calloc((size_t)nold, sizeof *gone) : NULL;
	for (int i = 0; i < nold; i++) {
		int k = n;
		if (placed)
			for (k = 0; k < n; k++)
				if (!placed[k] && same_link(old[i], plan[k]))
					break;
		if (k < n) {
			/* Kept: the running link takes the plan's place. */
			pthread_mutex_destroy(&plan[k]->mu);
			free(plan[k]);
			plan[k] = old[i];
			placed[k] = true;
			kept++;
		} else if (gone) {
			gone[ngone++] = old[i];
		} else {
			atomic_store(&old[i]->stop, true); /* no room to remember it: stopped, not joined */
		}
	}
	r->links = plan;
	r->nlinks = n;
	if (new_ids) {
		free(r->instance_ids);
		r->instance_ids = new_ids;
		r->ninstances = nids;
	}
	for (int i = 0; i < ngone; i++)
		atomic_store(&gone[i]->stop, true);
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	free(old);
	for (int i = 0; i < ngone; i++) {
		if (gone[i]->started)
			pthread_join(gone[i]->thread, NULL);
		log_link_stopped(gone[i]);
		pthread_mutex_destroy(&gone[i]->mu);
		free(gone[i]);
		stopped++;
	}
	free(gone);
	for (int i = 0; i < n; i++) {
		struct kv_link *l = plan[i];
		if (placed && placed[i])
			continue; /* kept: running already (or never started, as before) */
		if (pthread_create(&l->thread, NULL, link_main, l) != 0) {
			log_error(NULL, NULL, "kv: cannot start the thread of link %s %d<-%d", l->dbname, l->local_id,
				  l->peer_id);
			continue;
		}
		l->started = true;
		started++;
	}
	free(placed);
	r->version = version;
	log_info(NULL, NULL, "kv: zone %s, catalog version %lld: %d replication link%s (%d kept, %d started, %d stopped)",
		 r->zone, (long long)version, n, n == 1 ? "" : "s", kept, started, stopped);
}

/* ---- the purge of tombstones and expired rows ---- */

struct gc_target {
	int local_id, shard;
	char host[256];
	int port;
	char dbname[64];
	PGconn *conn;
	char last_err[KV_ERR_MAX];
	uint64_t purged;
};

/* One round on one shard database: kv.gc in batches of gc_batch while they come back full,
 * gc_pause apart, so a large backlog never holds locks or I/O for long. */
static void gc_round(struct kv_replicator *r, struct gc_target *t)
{
	char err[KV_ERR_MAX], peers[512], grace[24], batch[16];
	size_t off = 0;

	if (!t->conn) {
		struct kv_endpoint ep = { .host = t->host, .port = t->port, .dbname = t->dbname, .user = "kv_replicator",
					  .password = r->password };
		t->conn = kv_conn_open(&ep, "tusk kv gc", err);
		if (!t->conn)
			goto failed;
	}
	off += (size_t)snprintf(peers, sizeof peers, "{");
	int listed = 0, nids;
	pthread_mutex_lock(&r->mu);
	nids = r->ninstances;
	for (int i = 0; i < nids && off < sizeof peers - 16; i++, listed++)
		if (r->instance_ids[i] != t->local_id)
			off += (size_t)snprintf(peers + off, sizeof peers - off, "%s%d", off > 1 ? "," : "", r->instance_ids[i]);
	pthread_mutex_unlock(&r->mu);
	snprintf(peers + off, sizeof peers - off, "}");
	if (listed < nids) {
		/* A peer left out would not hold the horizon back: no purge rather than an unsafe one. */
		snprintf(err, sizeof err, "too many instances (%d) for the purge's peer list", nids);
		goto failed;
	}
	snprintf(grace, sizeof grace, "%lld", (long long)r->gc_grace_us);
	snprintf(batch, sizeof batch, "%d", r->gc_batch);
	const char *params[] = { peers, grace, batch };
	long round = 0;
	while (!atomic_load(&r->stop)) {
		PGresult *res = kv_conn_exec(t->conn, "SELECT kv.gc($1::int[], $2::bigint, $3::int)", 3, params, err);
		if (!res)
			goto failed;
		long n = PQntuples(res) == 1 ? atol(PQgetvalue(res, 0, 0)) : 0;
		PQclear(res);
		round += n;
		if (n < r->gc_batch || !nap(r, r->gc_pause_s))
			break;
	}
	if (round > 0) {
		t->purged += (uint64_t)round;
		log_info(NULL, NULL, "kv gc %s (instance %d): purged %ld tombstones, expired rows and spent counters' rows", t->dbname, t->local_id,
			 round);
	}
	t->last_err[0] = '\0';
	return;
failed:
	if (strcmp(err, t->last_err) != 0)
		log_warn(NULL, NULL, "kv gc %s (instance %d): %s", t->dbname, t->local_id, err);
	snprintf(t->last_err, sizeof t->last_err, "%s", err);
	if (t->conn && PQstatus(t->conn) != CONNECTION_OK) {
		PQfinish(t->conn);
		t->conn = NULL;
	}
}

/* The targets of this round: one per local shard database of the current links (they repeat
 * each per peer), reusing the connections of the last round; targets gone are closed. */
static int gc_targets(struct kv_replicator *r, struct gc_target **t, int n)
{
	struct gc_target *next = NULL;
	int m = 0;

	pthread_mutex_lock(&r->mu);
	next = r->nlinks ? calloc((size_t)r->nlinks, sizeof *next) : NULL;
	for (int i = 0; next && i < r->nlinks; i++) {
		const struct kv_link *l = r->links[i];
		bool seen = false;
		for (int k = 0; k < m && !seen; k++)
			seen = next[k].local_id == l->local_id && next[k].shard == l->shard;
		if (seen)
			continue;
		next[m] = (struct gc_target){ .local_id = l->local_id, .shard = l->shard, .port = l->local_port };
		snprintf(next[m].host, sizeof next[m].host, "%s", l->local_host);
		snprintf(next[m].dbname, sizeof next[m].dbname, "%s", l->dbname);
		m++;
	}
	pthread_mutex_unlock(&r->mu);
	for (int k = 0; k < n; k++) {
		struct gc_target *o = &(*t)[k];
		int found = -1;
		for (int i = 0; next && i < m && found < 0; i++)
			if (next[i].local_id == o->local_id && next[i].shard == o->shard && next[i].port == o->port &&
			    strcmp(next[i].host, o->host) == 0)
				found = i;
		if (found >= 0) {
			next[found].conn = o->conn;
			next[found].purged = o->purged;
			snprintf(next[found].last_err, sizeof next[found].last_err, "%s", o->last_err);
		} else if (o->conn) {
			PQfinish(o->conn);
		}
	}
	free(*t);
	*t = next;
	return next ? m : 0;
}

static void *gc_main(void *arg)
{
	struct kv_replicator *r = arg;
	struct gc_target *t = NULL;
	int n = 0;

	while (nap(r, r->gc_interval_s)) {
		n = gc_targets(r, &t, n);
		for (int i = 0; i < n && !atomic_load(&r->stop); i++)
			gc_round(r, &t[i]);
	}
	for (int i = 0; i < n; i++)
		if (t[i].conn)
			PQfinish(t[i].conn);
	free(t);
	return NULL;
}

/* Read the catalog through conn; a copy of its instance ids in *ids. 0, or -EIO with err. */
static int read_catalog(PGconn *conn, struct kv_catalog *cat, int **ids, char err[KV_ERR_MAX])
{
	if (kv_catalog_read(conn, cat, err) < 0)
		return -EIO;
	*ids = calloc((size_t)cat->ninstances + 1, sizeof **ids);
	if (!*ids) {
		kv_catalog_free(cat);
		snprintf(err, KV_ERR_MAX, "out of memory");
		return -EIO;
	}
	for (int i = 0; i < cat->ninstances; i++)
		(*ids)[i] = cat->instances[i].id;
	return 0;
}

/* A newer catalog version: plan its links and follow it. */
static void follow(struct kv_replicator *r, const struct kv_catalog *cat, const int *ids)
{
	struct kv_link **plan;
	int n = plan_links(r, cat, &plan);

	if (n < 0) {
		log_error(NULL, NULL, "kv: out of memory planning the replication links of catalog version %lld",
			  (long long)cat->version);
		return;
	}
	apply_plan(r, plan, n, cat->version, ids, cat->ninstances);
	if (r->on_catalog)
		r->on_catalog(r->on_catalog_arg, cat);
	if (n > 0 && !r->gc_started) {
		if (pthread_create(&r->gc_thread, NULL, gc_main, r) == 0)
			r->gc_started = true;
		else
			log_error(NULL, NULL, "kv: cannot start the purge thread; tombstones and expired rows are kept");
	}
}

/* Reads the catalog until it answers, starts the links, then follows the catalog: a NOTIFY on
 * channel kv_catalog (sent when a push or kv_catalog.bump() commits) or a SIGHUP
 * (kv_replicate_reload) reads it again, and a newer version changes only the links it
 * changes. */
static void *supervisor_main(void *arg)
{
	struct kv_replicator *r = arg;
	struct kv_endpoint ep = { .host = r->catalog_host, .port = r->catalog_port, .dbname = r->catalog_db,
				  .user = "kv_replicator", .password = r->password };
	char err[KV_ERR_MAX], last[KV_ERR_MAX] = "";
	PGconn *c = NULL;
	bool want = true; /* read the catalog at the next chance */

	while (!atomic_load(&r->stop)) {
		if (!c) {
			c = kv_conn_open(&ep, "tusk kv catalog", err);
			if (c && kv_conn_run(c, "LISTEN kv_catalog", 0, NULL, err) < 0) {
				PQfinish(c);
				c = NULL;
			}
			if (!c) {
				if (strcmp(err, last) != 0)
					log_warn(NULL, NULL, "kv: catalog unreachable: %s; retrying", err);
				snprintf(last, sizeof last, "%s", err);
				if (!nap(r, 2.0))
					break;
				continue;
			}
			want = true; /* notifications may have been missed while disconnected */
		}
		if (atomic_exchange(&r->reload, false)) {
			log_info(NULL, NULL, "kv: reloading the catalog (SIGHUP)");
			want = true;
		}
		if (want) {
			struct kv_catalog cat;
			int *ids = NULL;
			if (read_catalog(c, &cat, &ids, err) < 0) {
				if (strcmp(err, last) != 0)
					log_warn(NULL, NULL, "kv: cannot read the catalog: %s; retrying", err);
				snprintf(last, sizeof last, "%s", err);
				if (PQstatus(c) != CONNECTION_OK) {
					PQfinish(c);
					c = NULL;
				}
				if (!nap(r, 2.0))
					break;
				continue;
			}
			last[0] = '\0';
			want = false;
			if (cat.version == 0) {
				log_warn(NULL, NULL, "kv: catalog %s on %s:%d is empty (version 0); waiting for a push",
					 r->catalog_db, r->catalog_host, r->catalog_port);
			} else if (cat.version > r->version) {
				follow(r, &cat, ids);
			} else if (cat.version < r->version) {
				log_warn(NULL, NULL, "kv: catalog version %lld is older than the %lld followed; ignored",
					 (long long)cat.version, (long long)r->version);
			}
			free(ids);
			kv_catalog_free(&cat);
		}
		/* Wait for a notification, a SIGHUP or the stop, checking the flags 4 times a second. */
		struct pollfd pfd = { .fd = PQsocket(c), .events = POLLIN };
		if (pfd.fd < 0 || (poll(&pfd, 1, 250) > 0 && !PQconsumeInput(c))) {
			PQfinish(c);
			c = NULL;
			continue;
		}
		PGnotify *nt;
		while ((nt = PQnotifies(c))) {
			want = true;
			PQfreemem(nt);
		}
	}
	if (c)
		PQfinish(c);
	return NULL;
}

void kv_replicate_reload(struct kv_replicator *r)
{
	if (r)
		atomic_store(&r->reload, true);
}

int kv_replicate_start(const struct tusk_config *cfg, kv_catalog_hook *on_catalog, void *arg,
		       struct kv_replicator **out)
{
	struct kv_endpoint ep;
	char err[KV_ERR_MAX];

	*out = NULL;
	if (!cfg->kv.zone)
		return 0;
	if (kv_catalog_endpoint(cfg, "kv_replicator", cfg->kv.replicator_password, &ep, err) < 0) {
		log_error(NULL, NULL, "kv: %s; replication not started", err);
		return 0;
	}
	pthread_once(&page_sql_once, build_page_sql);
	struct kv_replicator *r = calloc(1, sizeof *r);
	if (!r)
		return -ENOMEM;
	snprintf(r->zone, sizeof r->zone, "%s", cfg->kv.zone);
	snprintf(r->catalog_host, sizeof r->catalog_host, "%s", ep.host);
	r->catalog_port = ep.port;
	snprintf(r->catalog_db, sizeof r->catalog_db, "%s", ep.dbname);
	r->ae_interval_s = (double)cfg->kv.anti_entropy_interval_ms / 1000.0;
	r->pull_s = (double)cfg->kv.pull_interval_ms / 1000.0;
	snprintf(r->link_options, sizeof r->link_options, "-c statement_timeout=%llu -c lock_timeout=30s",
		 (unsigned long long)cfg->kv.link_statement_timeout_ms);
	r->link_timeout_s = (double)cfg->kv.link_statement_timeout_ms / 1000.0;
	r->gc_grace_us = (int64_t)cfg->kv.gc_grace_ms * 1000;
	r->gc_interval_s = (double)cfg->kv.gc_interval_ms / 1000.0;
	r->gc_pause_s = (double)cfg->kv.gc_pause_ms / 1000.0;
	r->gc_batch = cfg->kv.gc_batch;
	r->on_catalog = on_catalog;
	r->on_catalog_arg = arg;
	if (cfg->kv.replicator_password) {
		r->password = strdup(cfg->kv.replicator_password);
		if (!r->password)
			goto err_free;
	}
	atomic_init(&r->stop, false);
	atomic_init(&r->reload, false);
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	if (pthread_create(&r->supervisor, NULL, supervisor_main, r) != 0)
		goto err_destroy;
	*out = r;
	return 0;

err_destroy:
	pthread_cond_destroy(&r->cv);
	pthread_mutex_destroy(&r->mu);
err_free:
	free(r->password);
	free(r);
	return -ENOMEM;
}

void kv_replicate_stop(struct kv_replicator *r)
{
	if (!r || r->stopped)
		return;
	pthread_mutex_lock(&r->mu);
	atomic_store(&r->stop, true);
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	/* The supervisor first: after it returns, links/nlinks no longer change. */
	pthread_join(r->supervisor, NULL);
	if (r->gc_started) {
		pthread_join(r->gc_thread, NULL);
		r->gc_started = false;
	}
	for (int i = 0; i < r->nlinks; i++) {
		if (r->links[i]->started)
			pthread_join(r->links[i]->thread, NULL);
		/* The counters are in memory only: leave them in the log too. */
		log_link_stopped(r->links[i]);
	}
	r->stopped = true;
}

void kv_replicate_free(struct kv_replicator *r)
{
	if (!r)
		return;
	kv_replicate_stop(r);
	for (int i = 0; i < r->nlinks; i++) {
		pthread_mutex_destroy(&r->links[i]->mu);
		free(r->links[i]);
	}
	free(r->links);
	pthread_cond_destroy(&r->cv);
	pthread_mutex_destroy(&r->mu);
	free(r->password);
	free(r->instance_ids);
	free(r);
}

int kv_replicate_nlinks(struct kv_replicator *r)
{
	int n;

	if (!r)
		return 0;
	pthread_mutex_lock(&r->mu);
	n = r->nlinks;
	pthread_mutex_unlock(&r->mu);
	return n;
}

int kv_replicate_link_stats(struct kv_replicator *r, int i, struct kv_link_stats *out)
{
	int rc = -ENOENT;

	if (!r)
		return rc;
	/* Under the table's lock: a reload may replace the table and free a dropped link. */
	pthread_mutex_lock(&r->mu);
	if (i >= 0 && i < r->nlinks) {
		struct kv_link *l = r->links[i];
		pthread_mutex_lock(&l->mu);
		*out = l->stats;
		out->lag_seconds = l->caught_up > 0 ? now_real() - l->caught_up : -1;
		pthread_mutex_unlock(&l->mu);
		rc = 0;
	}
	pthread_mutex_unlock(&r->mu);
	return rc;
}
