/* read-write-split (docs/backends.md, "Routing"): which role of backend a transaction needs,
 * judged from the text that opens it. Pure functions: no I/O, no global state, thread-safe.
 * Reuses the result cache's parse-tree walk (flight/decide.h, flight_read_only) rather than
 * walking libpg_query's tree a third time. */
#ifndef TUSK_SPLIT_SPLIT_H
#define TUSK_SPLIT_SPLIT_H

#include <stdbool.h>
#include <stddef.h>

enum router_split {
	ROUTER_SPLIT_PRIMARY, /* may write, or cannot be proven not to */
	ROUTER_SPLIT_STANDBY, /* provably read-only: any standby (or the primary) may run it */
};

/* The opening text of a transaction: a simple Query, or the first Parse of an extended-
 * protocol one. STANDBY for
 *   - BEGIN / START TRANSACTION whose modes end with READ ONLY, alone in the text: the
 *     server itself refuses a write later in that transaction (25006);
 *   - one provably read-only statement (flight_read_only) outside a transaction block: plain
 *     SELECT, no volatile, unknown or user function, no FOR UPDATE/SHARE, no writable CTE,
 *     no SELECT INTO.
 * PRIMARY for everything else, including a BEGIN without READ ONLY (what follows it is not
 * known yet), several statements in one text, and parse errors. */
enum router_split router_split_decide(const char *sql, size_t len);

/* Whether sql[0, len) is one BEGIN / START TRANSACTION whose last access mode is READ ONLY. */
bool router_begins_read_only(const char *sql, size_t len);

const char *router_split_name(enum router_split s);

#endif
