/* The cache's side of a client (transaction pooling, simple protocol): answering a request
 * from L1, leading or joining a flight, feeding the leader's reply to its flight, waiters'
 * deadlines and cancels, and the writes every client's statements commit. Like the console,
 * it sits beside frontend/ and includes frontend/client_int.h; every function runs on the
 * client's own worker. */
#ifndef TUSK_FLIGHT_SERVE_H
#define TUSK_FLIGHT_SERVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct client;
struct server;

/* client.c, an idle client's bytes need a server: true when the cache took the request (it
 * was answered, or the client now waits on a flight, or still does); false: claim a server
 * as usual (the client may now lead a flight). */
bool flight_client_request(struct client *c);
/* relay.c, session pooling: c (linked to idle server s) has exactly one whole Query in its
 * read buffer. True when the cache answered it (the Query is consumed); false: relay it as
 * usual (c may now lead a flight, whose reply the relay's scan feeds). Never waits. */
bool flight_client_session_request(struct client *c, const struct server *s);
/* client.c, an idle client's socket took bytes: more of an answer larger than its write
 * buffer goes into it. True when that answer is complete and requests wait behind it (call
 * client_need_server). */
bool flight_client_writable(struct client *c);
/* client.c: the client's CLIENT_IDLE timer fired (a waiter's cache_coalesce_wait). */
void flight_client_timer(struct client *c);
/* cancel.c: a CancelRequest for c. True when it cancelled a wait (c got 57014). */
bool flight_client_cancel(struct client *c);
/* Nothing of c's is in flight in the cache (no flight led or waited on, no answer being
 * written, no L2 lookup, no invalidation owed): c may move to another worker. */
bool flight_client_quiet(const struct client *c);
/* client.c, client_close: let go of flights, apply pending invalidations, free the state. */
void flight_client_closed(struct client *c);

/* relay.c: bytes of server replies the relay scanned and forwards to c, in order. */
void flight_client_scanned(struct client *c, const uint8_t *p, size_t n);
/* relay.c: a Query or Parse text goes to the server (what it may write is invalidated). */
void flight_client_sent_sql(struct client *c, const char *sql, size_t len);
/* relay.c: a Parse went through flight_client_sent_sql just now, of statement name ("":
 * unnamed, whose Binds run it) with body rest (after the name); name NULL: a Parse too large
 * to read, not judged. */
void flight_client_parsed(struct client *c, const char *name, const uint8_t *rest, size_t rest_len);
/* relay.c, session pooling: a Bind (m, avail bytes of it read) goes to c's own server; *text
 * (len bytes) is the query of the named statement it runs when tusk saw it parsed, for
 * flight_client_sent_bind. False when it binds an unnamed statement the cache answered the
 * Parse of (the server holds another): fail the client. */
__attribute__((warn_unused_result))
bool flight_client_session_bind(struct client *c, const uint8_t *m, size_t avail, const char **text, size_t *len);
/* relay.c, session pooling: a Close of statement name goes to c's server. */
void flight_client_session_close(struct client *c, const char *name);
/* relay.c, session pooling: c's server sent an ErrorResponse (a Parse may have failed). */
void flight_client_session_error(struct client *c);
/* relay.c: a Bind goes to the server. text: the named statement's query text when tusk knows
 * it (classified again: every execution may write); unnamed: the last unnamed Parse's writes
 * again; otherwise (a name tusk does not track) the database goes stale. */
void flight_client_sent_bind(struct client *c, bool unnamed, const char *text, size_t len);
/* relay.c: a FunctionCall goes to the server: the database goes stale. */
void flight_client_sent_opaque(struct client *c);
/* relay.c: ReadyForQuery 'I': the transaction is over, its writes are visible. last: no
 * other ReadyForQuery is owed (else the writes noted may be a later transaction's too: they
 * are bumped now and kept for the last one). */
void flight_client_ready(struct client *c, bool last);
/* At the ReadyForQuery ('I') that ends a transaction which wrote, before it reaches the
 * client: with L2, do flight_client_ready's bumps now and tell whether the ReadyForQuery must
 * wait for Redis to answer their INCRs (true; relay_resume(c) follows, at most redis.timeout
 * later). Once the client sees its commit, no tusk serves what the commit changed. */
bool flight_client_commit_wait(struct client *c, bool last);

#endif
