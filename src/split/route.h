/* read-write-split in the client's path (docs/backends.md, "Routing"): which side of a split
 * pool a transaction claims from, and read-your-writes. Attached to the client through the
 * relay's hooks (frontend/relay_hooks.h), registered by main.c; frontend/ names none of it. */
#ifndef TUSK_SPLIT_ROUTE_H
#define TUSK_SPLIT_ROUTE_H

#include <stddef.h>
#include <stdint.h>

#include "frontend/relay_hooks.h"

/* The split's relay hooks: clients of pools with target_session_attrs read-write-split
 * (and, for the 25006 re-check, primary or read-write).
 *   claim    before a claim, c->standby from the transaction's first message in c->rbuf (a
 *            Query's text, a Parse's, or a Bind's through the statement map): a standby for
 *            what router_split_decide proves read-only, unless read-your-writes says the
 *            client's last write may not be there yet; at login, a standby while every
 *            possible primary is down
 *   attach   a standby-side server about to serve a client that wrote: its replay position
 *            is asked first (pg_last_wal_replay_lsn()), else the primary serves the read
 *   release  a primary-side transaction ended (read_your_writes): pg_current_wal_insert_lsn()
 *            on the same server before it parks (c->ryw_pending counts the fetches)
 *   error    a 25006 from a server taken for a primary: its role is checked again
 *   quiet    no fetch of read-your-writes in flight */
extern const struct relay_hooks split_relay_hooks;

/* "X/Y" (pg_lsn's text) into a number; 0 on anything else. */
uint64_t split_parse_lsn(const char *text, size_t len);

#endif
