/* Invalidation by logical decoding (`cache_invalidation: logical`): writes made around tusk
 * (other clients of PostgreSQL, another tusk without Redis, cron jobs, triggers' own writes)
 * bump the versions of the tables they changed, a poll interval after they commit.
 *
 * One thread of this module's own follows each database the cache has kept a result of: a
 * libpq connection (dlopen'd, pq/pq.c) holding a *temporary* logical replication slot
 * with the test_decoding plugin, so nothing is left behind (no retained WAL) when tusk or the
 * connection dies. Every poll it takes the decoded changes (committed transactions only) and
 * bumps the version of each table named. A follow that starts, or starts again after its
 * connection was lost, bumps the database's version first: writes made while nobody decoded
 * them are not seen, so nothing kept before that moment is served. DDL is not decoded: it is
 * seen only through tusk (as without this option), and otherwise bounded by cache_ttl.
 *
 * The login needs the REPLICATION attribute (or superuser) and the server wal_level=logical;
 * a database that cannot be followed is logged, counted (logical_errors) and retried, and its
 * results are then only as fresh as cache_ttl makes them, as without this option. */
#ifndef TUSK_FLIGHT_LOGICAL_H
#define TUSK_FLIGHT_LOGICAL_H

#include <stdint.h>

#include "flight/inval.h"
#include "flight/volatility.h"

struct flight_logical;
struct flight_counters;

/* poll: seconds between polls. NULL when out of memory. The thread starts at the first
 * follow. */
struct flight_logical *flight_logical_new(struct flight_inval *iv, struct flight_counters *counters, double poll);
/* Stops the thread (bounded by its statement and connect timeouts) and closes its
 * connections (their slots go with them). */
void flight_logical_free(struct flight_logical *l);

/* Make sure the backend database of target is followed, bumping the versions of the client
 * database `database` (whose tables the cache keys). Cheap when it is already: call it before
 * keeping a result. At most FLIGHT_LOGICAL_MAX databases are followed; a result of another
 * one is not kept (returns false), since a write around tusk to it would go unseen. true when
 * the database is followed and its slot is decoding now. */
#define FLIGHT_LOGICAL_MAX 64
bool flight_logical_follow(struct flight_logical *l, const struct flight_vol_target *target, const char *database);
/* The same, and *idx: the database's place (-1 when it is not followed), which stays its
 * own until exit, for flight_logical_active. */
bool flight_logical_follow_at(struct flight_logical *l, const struct flight_vol_target *target, const char *database,
			      int *idx);
/* Whether the database at idx (flight_logical_follow_at) is decoding now. Lock-free. */
bool flight_logical_active(struct flight_logical *l, int idx);

/* For tests of the parser: the table name (the last part, unquoted) of a test_decoding line
 * "table s.t: INSERT: ...", into out; false when line is not a change of a table. */
bool flight_logical_table(const char *line, char *out, size_t cap);

#endif
