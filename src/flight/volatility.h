/* Function volatility, read from the catalog: which function names a cached statement may
 * call. A name is safe when every pg_proc row that the call could resolve to is IMMUTABLE
 * (a plain function, an aggregate or a window function): for an unqualified name that is
 * every row of that name in any schema, whatever the search_path; for s.f every f in s.
 * Overloads are not resolved (tusk does not type the arguments), so one non-immutable
 * overload makes the name unsafe. Answers are kept per (service, server database, client
 * database) with the database's DDL version (inval.h) read before the lookup was sent, and
 * used only while that version is unchanged (DDL, CREATE OR REPLACE, any statement tusk
 * cannot read through tusk bump it, and so does CACHE FLUSH) and for at most the caller's
 * TTL (changes around tusk).
 *
 * Lookups run on one thread of this module's own, with libpq (dlopen'd, pq/pq.c), on a
 * connection of tusk's own per database: a worker never blocks, a request whose functions
 * are not known yet bypasses the cache while the lookup runs. */
#ifndef TUSK_FLIGHT_VOLATILITY_H
#define TUSK_FLIGHT_VOLATILITY_H

#include <stdbool.h>
#include <stdint.h>

#include "flight/decide.h"
#include "flight/inval.h"

struct flight_vol;

/* Where and as whom to read the catalog (libpq connection parameters; "" = left out). */
struct flight_vol_target {
	char host[256];
	char port[8];
	char dbname[FLIGHT_NAME_MAX];
	char user[FLIGHT_NAME_MAX];
	char password[256];
	char sslmode[16];
	char sslrootcert[256];
};

enum flight_vol_answer {
	FLIGHT_VOL_IMMUTABLE, /* every function is known immutable, now */
	FLIGHT_VOL_VOLATILE,  /* at least one is known not to be (or unknown to the catalog) */
	FLIGHT_VOL_UNKNOWN,   /* at least one has no current answer: call flight_vol_lookup */
};

/* NULL when out of memory. */
struct flight_vol *flight_vol_new(void);
/* Stops the lookup thread (waits for a lookup in progress, bounded by its timeouts). */
void flight_vol_free(struct flight_vol *v);

/* Which database's catalog: the backend (service, the database tusk logs in to) and the
 * client's database, whose version counter (iv, db_slot) DDL through tusk bumps. */
struct flight_vol_db {
	const char *service;
	const char *server_db;
	const char *database;
	uint16_t db_slot;
};

/* The volatility of funcs[0, n) in db. */
enum flight_vol_answer flight_vol_check(struct flight_vol *v, struct flight_inval *iv, const struct flight_vol_db *db,
					const struct flight_relation *funcs, int n);

/* Queues a catalog lookup of each of funcs[0, n) without a current answer, kept for ttl
 * seconds at most (the rule's cache_ttl). At most FLIGHT_VOL_QUEUE lookups wait; more are
 * dropped and asked again by a later request. */
#define FLIGHT_VOL_QUEUE 256
void flight_vol_lookup(struct flight_vol *v, struct flight_inval *iv, const struct flight_vol_db *db,
		       const struct flight_relation *funcs, int n, const struct flight_vol_target *target, double ttl);

/* Relation dependencies (docs/cache.md, "Where a result's rows come from"), read from the
 * catalog on the same thread, kept per database as function answers are. Replaces d's
 * tables (the names its text reads) by every relation name a write to which may change its
 * result: views expanded to their base relations, partitioned and inheritance parents to
 * their children and children to their parents, the relations row-security policies of each
 * relation read reference, views and rules over any of those, tables whose foreign-key
 * actions write them. Returns FLIGHT_OK (d->tables replaced), FLIGHT_CALL_LOOKUP (an answer is
 * missing: its lookup is queued when target is given, at most one per name), FLIGHT_DEPENDENCY
 * (a view or policy it reads calls what is not immutable, reads the clock, a sequence or a
 * foreign table; or the lookup failed) or FLIGHT_TOO_BIG (more than FLIGHT_MAX_TABLES). */
enum flight_verdict flight_vol_deps(struct flight_vol *v, struct flight_inval *iv, const struct flight_vol_db *db,
				    struct flight_decision *d, const struct flight_vol_target *target, double ttl);

/* Whether a write to table (any schema's) may write other relations tusk does not see: it has
 * a user trigger or a rule other than a view's, or the catalog has not said yet (its lookup
 * queued when target is given). The writer then makes the whole database stale. */
bool flight_vol_write_fans_out(struct flight_vol *v, struct flight_inval *iv, const struct flight_vol_db *db,
			       const char *table, const struct flight_vol_target *target, double ttl);

/* Shared with logical.c: whether two targets are the same login, and a libpq connection to
 * one (check PQstatus; PQfinish it either way). */
bool flight_vol_target_equal(const struct flight_vol_target *a, const struct flight_vol_target *b);
typedef struct pg_conn PGconn;
PGconn *flight_vol_connect(const struct flight_vol_target *t, const char *application_name, const char *options);

#endif
