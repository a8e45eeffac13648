/* read-write-split in the client's path (docs/backends.md, "Routing"): which side of a split
 * pool a transaction claims from, and read-your-writes. The hooks are called by client.c and
 * relay.c; everything else of the split is here. */
#ifndef TUSK_FRONTEND_SPLIT_ROUTE_H
#define TUSK_FRONTEND_SPLIT_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct client;
struct server;

/* Before a claim: set c->standby from the first message of the transaction in
 * c->rbuf (a Query's text or a Parse's, named or not): a standby for what
 * router_split_decide proves read-only, unless read-your-writes says the client's last
 * write may not be there yet (its position is still being fetched); the primary for
 * everything else and for pools without the split. */
void split_route_claim(struct client *c);

/* A standby-side server s is about to serve c: false when it may (c wrote nothing, or s's
 * standby replayed past c's last write as far as tusk knows). true: s's replay position must
 * be asked first (split_replay_fetch). */
bool split_needs_replay_check(const struct client *c, const struct server *s);
/* Ask s (idle, attached, linked to c as c->server) for pg_last_wal_replay_lsn(); done runs as
 * for server_fetch_row, then split_replay_result. */
void split_replay_fetch(struct server *s, void (*done)(struct server *, void *, int, const char *,
						       const uint8_t *, size_t), void *arg);
/* After split_replay_fetch succeeded: note the standby's position; true when it has c's write. */
bool split_replay_result(struct client *c, struct server *s);

/* A transaction of c on the primary side of a split pool with read_your_writes just ended
 * (its final ReadyForQuery is out): true when c's write position must be fetched from s
 * before s goes back (c->ryw_pending counts it, and c's reads go to the primary until
 * every such fetch reported, split_write_result). */
bool split_after_primary(struct client *c, const struct server *s);
void split_write_fetch(struct server *s, void (*done)(struct server *, void *, int, const char *,
						      const uint8_t *, size_t), void *arg);
/* The fetch is over (ok: it succeeded, s holds the row): c's position is noted, pending is
 * cleared. false: c was closed meanwhile and is freed now (do not touch it). */
bool split_write_result(struct client *c, struct server *s, bool ok);

/* An ErrorResponse (whole, at m) from s while c uses it: a 25006 (read-only transaction)
 * from a server its pool took for a primary (the primary side of a split, a primary or
 * read-write pool) makes the backend's role unknown, so that the next connect re-checks it
 * (the backend may have been demoted). */
void split_note_error(struct client *c, struct server *s, const uint8_t *m, size_t total);

/* "X/Y" (pg_lsn's text) into a number; 0 on anything else. */
uint64_t split_parse_lsn(const char *text, size_t len);

#endif
