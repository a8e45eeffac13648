/* Named prepared statements in transaction pooling: each client's statement names mapped to
 * tusk's own server-side names, the set of statements each server holds (LRU-capped), and the
 * readers and rewriters for the extended-protocol messages that carry statement names (Parse,
 * Bind, Describe, Close). Pure bookkeeping over byte ranges: no I/O, no locks. A prep_client
 * is used by its client's worker only; a prep_server travels with its server connection, so it
 * is touched by one thread at a time (servers change threads only while parked). A prep_refs
 * counts, for one pool, how many client names refer to each statement; it is shared by every
 * worker and has a lock of its own.
 *
 * Conventions (docs/ARCHITECTURE.md): commands return 0 or -errno; predicates return bool;
 * readers return the bytes consumed (> 0), 0 for "need more", or a negative PROTO_E*; builders
 * append to a struct buf and return 0 or -ENOSPC, leaving the buffer unchanged on failure.
 *
 * Statement identity is a cryptographic hash of the Parse body after the name (query text,
 * parameter count, parameter type OIDs), so every worker derives the same server-side name
 * "tusk_<32 hex>" with no shared registry; a collision would make one client's Bind run
 * another client's query, hence SHA-256 and not a fast hash that can be forced to collide. */
#ifndef TUSK_POOL_PREPARED_H
#define TUSK_POOL_PREPARED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "util/buf.h"

/* Longest statement or portal name the readers below accept, bytes without the NUL:
 * NAMEDATALEN - 1. PostgreSQL keeps this much of a longer name and drops the rest silently;
 * the relay cuts a client's longer names to it before they are read (relay.c's cut_names). */
#define PREP_NAME_MAX 63
/* Size of a server-side name buffer: "tusk_" + 32 hex digits + NUL. */
#define PREP_SERVER_NAME_SIZE 38

/* ---- identity ---- */

struct prep_hash {
	uint64_t hi, lo;
};

static inline bool prep_hash_equal(struct prep_hash a, struct prep_hash b)
{
	return a.hi == b.hi && a.lo == b.lo;
}

/* Identity of a statement from the Parse body after its name (struct prep_parse.rest).
 * 0 or -ENOMEM (the digest could not be computed). */
__attribute__((warn_unused_result))
int prep_identity(const uint8_t *rest, size_t len, struct prep_hash *out);
/* The same, for a body parsed in context ctx (0: prep_identity's). The server parses a
 * statement once, under the settings of the session that prepares it: literals are read with
 * its standard_conforming_strings and client_encoding, and typed constants ('...'::date,
 * ::timestamptz) are converted with its DateStyle and TimeZone. A statement shared between
 * sessions that differ in these would give one of them the other's reading. */
__attribute__((warn_unused_result))
int prep_identity_ctx(const uint8_t *rest, size_t len, uint64_t ctx, struct prep_hash *out);
/* The server-side name for a hash: "tusk_" + 32 lowercase hex digits, NUL-terminated. */
void prep_server_name(struct prep_hash h, char out[PREP_SERVER_NAME_SIZE]);

/* ---- readers of client messages (msg points at the type byte) ---- */

/* Parse ('P'). All pointers point into msg. */
struct prep_parse {
	const char *name;    /* statement name, NUL-terminated; "" is the unnamed statement */
	size_t name_len;
	const char *query;   /* NUL-terminated */
	size_t query_len;    /* its strlen */
	uint16_t nparams;    /* number of parameter type OIDs that follow */
	const uint8_t *rest; /* the body after the name: query, count, OIDs (what is hashed) */
	size_t rest_len;
};
/* Reads a whole Parse message. Returns its size (type byte + length word) once all of it is
 * in msg[0, avail), 0 before. PROTO_ETOOSHORT / PROTO_ETOOLONG when the length word is below 4
 * or above max_len (as soon as it is readable); PROTO_EMALFORMED when the type is not 'P', a
 * string lacks its NUL, the name exceeds PREP_NAME_MAX, or the OIDs do not end the body
 * exactly. */
ssize_t prep_read_parse(const uint8_t *msg, size_t avail, uint32_t max_len, struct prep_parse *out);

/* Head of a Bind ('B'): type, length word, portal name, statement name. The rest of a Bind
 * (formats, parameter values: any size) is never needed, so it can be streamed unchanged. */
struct prep_bind_head {
	uint32_t len;       /* the Bind's length word */
	const char *portal; /* NUL-terminated, points into msg */
	size_t portal_len;
	const char *stmt;   /* NUL-terminated, points into msg */
	size_t stmt_len;
};
/* Returns the size of the head (5 + portal + NUL + statement + NUL) once both names are in
 * msg[0, avail), else 0; at most 5 + 2 * (PREP_NAME_MAX + 1) bytes are ever needed. To
 * rewrite, drop that many bytes, append prep_put_bind_head(), then forward the remaining
 * len + 1 - head bytes of the original unchanged. PROTO_ETOOSHORT / PROTO_ETOOLONG for a
 * length word below 4 or above max_len; PROTO_EMALFORMED when the type is not 'B', a name
 * exceeds PREP_NAME_MAX, or the names do not fit inside the message. */
ssize_t prep_read_bind_head(const uint8_t *msg, size_t avail, uint32_t max_len,
			    struct prep_bind_head *out);

/* Describe ('D') or Close ('C'): a target kind and one name, always a small message. */
struct prep_target {
	uint8_t type;     /* 'D' or 'C' */
	uint8_t kind;     /* 'S' (prepared statement) or 'P' (portal) */
	const char *name; /* NUL-terminated, points into msg */
	size_t name_len;
};
/* Returns the message size once all of it is in msg[0, avail), 0 before. PROTO_ETOOSHORT for
 * a length word below 4; PROTO_EMALFORMED for another type, a kind other than 'S'/'P', a name
 * without its NUL or longer than PREP_NAME_MAX, or bytes after the name. */
ssize_t prep_read_target(const uint8_t *msg, size_t avail, struct prep_target *out);

/* ---- builders ---- */

/* Parse named server_name with the original body after the name (struct prep_parse.rest, or
 * struct prep_stmt.body when replaying). */
__attribute__((warn_unused_result))
int prep_put_parse(struct buf *b, const char *server_name, const uint8_t *rest, size_t rest_len);
/* The head of the rewritten Bind: type, new length word (old length - statement name length +
 * server name length), portal name, server_name. -EMSGSIZE when that length word would pass
 * INT32_MAX (impossible with a max_len of INT32_MAX - PREP_SERVER_NAME_SIZE or less). */
__attribute__((warn_unused_result))
int prep_put_bind_head(struct buf *b, const struct prep_bind_head *h, const char *server_name);
/* Describe 'S' / Close 'S' of server_name (no Flush or Sync: the caller's concern). */
__attribute__((warn_unused_result))
int prep_put_describe_statement(struct buf *b, const char *server_name);
__attribute__((warn_unused_result))
int prep_put_close_statement(struct buf *b, const char *server_name);
/* ParseComplete ('1') and CloseComplete ('3'), for answers tusk gives the client itself. */
__attribute__((warn_unused_result))
int prep_put_parse_complete(struct buf *b);
__attribute__((warn_unused_result))
int prep_put_close_complete(struct buf *b);

/* ---- what a statement describes (ParameterDescription, RowDescription), hashed ---- */

/* A client's driver decodes rows with the RowDescription it was given and encodes parameters
 * for the ParameterDescription it was given; PostgreSQL fixes both when the statement is
 * prepared and answers 0A000 "cached plan must not change result type" rather than change
 * them. Each part is a hash, 0 when not known. */
struct prep_desc {
	uint64_t params; /* ParameterDescription: the parameter type OIDs */
	uint64_t rows;   /* RowDescription (names, type OIDs, lengths, modifiers) or NoData */
};
/* The hash of a ParameterDescription body ('t', after the length word); 0 if malformed. */
uint64_t prep_desc_params(const uint8_t *body, size_t len);
/* The hash of a RowDescription body ('T'); table OIDs, column numbers and formats are left
 * out (a Describe of a portal and of its statement hash alike, and PostgreSQL's own check
 * ignores them). body NULL: NoData ('n'). 0 if malformed. */
uint64_t prep_desc_rows(const uint8_t *body, size_t len);
/* A part known on both sides differs: what the client was told is no longer true. */
bool prep_desc_differs(struct prep_desc told, struct prep_desc now);

/* ---- per client: the client's statement names ---- */

/* One named statement of a client. Owned by its prep_client; valid until that name is removed
 * or the map is cleared or freed. All fields are read-only to callers. */
struct prep_stmt {
	struct prep_hash hash;
	char server_name[PREP_SERVER_NAME_SIZE];
	char name[PREP_NAME_MAX + 1];       /* the client's name */
	uint64_t name_hash;                 /* the map's own key hash (prep_client_tell) */
	struct prep_desc told;              /* what the client was told of it (0: nothing yet) */
	bool placed;                        /* a server prepared it since the client's Parse */
	uint8_t flags;                      /* the caller's own (prep_client_set_flags); 0 when added */
	struct prep_stmt *closing_next;     /* in the map's closing list (prep_client_close) */
	bool never_made;                    /* there: its Parse failed, so a skipped Close does
					     * not put it back */
	size_t body_len;
	uint8_t body[];                     /* copy of the Parse body after the name */
};

struct prep_client;

/* A NULL map is an empty one to find, remove, drop, clear and count (a caller may allocate
 * it on the first add: most clients never name a statement). */
/* An empty map (allocates nothing more until the first add). max_statements bounds the number
 * of names, max_bytes the memory their entries take (struct + body each); 0 forbids all.
 * NULL on allocation failure. */
struct prep_client *prep_client_new(uint32_t max_statements, size_t max_bytes);
void prep_client_free(struct prep_client *c); /* NULL is fine */

/* Counts the client names of one pool per statement (pool.c owns one per pool), so that a
 * Close of the last name can let the statement go on the server. Shared by every worker:
 * each call takes its mutex. Without one, a client map counts nothing. */
struct prep_refs;
struct prep_refs *prep_refs_new(void); /* NULL on allocation failure */
void prep_refs_free(struct prep_refs *r); /* NULL is fine; no client may still use it */
/* Client names referring to h (tests and the console). */
uint32_t prep_refs_count(struct prep_refs *r, struct prep_hash h);
/* From now on c's names are counted in r (call before the first add; r outlives c). */
void prep_client_share(struct prep_client *c, struct prep_refs *r);

/* Records a named Parse the client sent (p from prep_read_parse), copying its body: one
 * malloc. *out is the new entry. -EINVAL for the unnamed statement (never tracked: pass it
 * through), -EEXIST when the name is taken (PostgreSQL's 42P05: the map is unchanged), -EDQUOT
 * when max_statements or max_bytes would be exceeded, -ENOMEM.
 * PostgreSQL creates the statement only if the Parse succeeds: if the server answers it with
 * an ErrorResponse, or skips it after an earlier error in the same pipeline, remove the name. */
__attribute__((warn_unused_result))
int prep_client_add(struct prep_client *c, const struct prep_parse *p, const struct prep_stmt **out);
/* The parse context (prep_identity_ctx) of the client's later Parses; statements it has
 * already named keep theirs, as they would on a real server. */
void prep_client_set_context(struct prep_client *c, uint64_t ctx);
/* Sets the caller's flags of an entry of c (what the caller learnt of its text, kept for each
 * later use of the name). */
void prep_client_set_flags(struct prep_client *c, const struct prep_stmt *e, uint8_t flags);
/* The entry for a client name, or NULL. */
const struct prep_stmt *prep_client_find(const struct prep_client *c, const char *name);
/* A Describe of the client's statement (name_hash, h) answered it: the known parts of d are
 * what it was told. Nothing when the name is gone or now names another statement. */
void prep_client_tell(struct prep_client *c, uint64_t name_hash, struct prep_hash h, struct prep_desc d);
/* The client name of the entry (name_hash, h), or NULL when the name is gone or now names
 * another statement (a name closed whose Close's outcome is not known yet counts). */
const char *prep_client_name_of(const struct prep_client *c, uint64_t name_hash, struct prep_hash h);
/* The client has been told something of e. */
static inline bool prep_stmt_told(const struct prep_stmt *e)
{
	return e->told.params || e->told.rows;
}
/* A server prepared e (or will, with the messages being sent) after the client's Parse. */
void prep_stmt_set_placed(const struct prep_stmt *e);
/* A Close of a name, sent on to the server: the name is forgotten as prep_client_drop forgets
 * it (same results), but its entry waits, in the order of the Closes, for the Close's outcome:
 * PostgreSQL skips a Close behind an error in the same pipeline, and the statement stays. */
int prep_client_close(struct prep_client *c, const char *name, struct prep_hash *gone);
/* The Parse of the entry (name_hash, h) failed or was skipped: PostgreSQL made no statement of
 * it, so its name is forgotten (a closed one's entry will not be put back). */
void prep_client_forget_parse(struct prep_client *c, uint64_t name_hash, struct prep_hash h);
/* The oldest Close still waiting was done (its entry is freed), or was skipped (its entry is
 * the name's again, unless the name names another statement by now: then it is freed). */
void prep_client_close_done(struct prep_client *c);
void prep_client_close_skipped(struct prep_client *c);
/* Forgets a name (Close 'S'; a failed Parse). 0 or -ENOENT (not an error for Close). */
int prep_client_remove(struct prep_client *c, const char *name);
/* Forgets a name as prep_client_remove does and tells whether it was the pool's last name
 * for its statement: 1 (and *gone is the statement) when no client of the pool refers to it
 * any more, 0 when some still do (or c shares no prep_refs), -ENOENT for an unknown name. */
int prep_client_drop(struct prep_client *c, const char *name, struct prep_hash *gone);
/* Forgets every name (DISCARD ALL, DEALLOCATE ALL). */
void prep_client_clear(struct prep_client *c);
uint32_t prep_client_count(const struct prep_client *c);

/* ---- per server: the statements prepared on one server connection ---- */

struct prep_server;

/* An empty set holding at most max_prepared (>= 1) statements; all memory is allocated here.
 * NULL when max_prepared is 0 or on allocation failure. */
struct prep_server *prep_server_new(uint32_t max_prepared);
void prep_server_free(struct prep_server *s); /* NULL is fine */

/* True when the server holds h and it is not stale; marks it most recently used. */
bool prep_server_has(struct prep_server *s, struct prep_hash h);
/* True when the server holds h, stale or not (no LRU change). */
bool prep_server_holds(const struct prep_server *s, struct prep_hash h);
/* True when the server holds h but it is stale: it must be closed before it is prepared
 * again (a Parse of the same name would fail with 42P05). */
bool prep_server_stale(const struct prep_server *s, struct prep_hash h);
/* The server's copy of h no longer matches the schema (it answered "cached plan must not
 * change result type" or "cache lookup failed for type"), or no client refers to it any
 * more: prep_server_has says false until it is added again. Nothing when h is not held. */
void prep_server_mark_stale(struct prep_server *s, struct prep_hash h);
/* Records h as prepared (call when sending its Parse), most recently used. When the set was
 * full, the least recently used statement is dropped and returned in *evicted with true: the
 * caller sends Close for it. Adding a held hash only marks it used (and fresh: the caller
 * closed a stale one first); either way what it describes is not known until set again.
 * Never fails.
 * The server skips everything after an error until Sync, so the set is only as true as the
 * caller's rollback: a Parse that got no ParseComplete is forgotten, and an evicting Close
 * that got no CloseComplete is added back (else the next Parse of it fails with 42P05). */
bool prep_server_add(struct prep_server *s, struct prep_hash h, struct prep_hash *evicted);
/* What the server's copy of h describes (parts 0 when not known, or h not held). */
struct prep_desc prep_server_desc(const struct prep_server *s, struct prep_hash h);
/* Records the known parts of d for the server's copy of h (nothing when not held). */
void prep_server_set_desc(struct prep_server *s, struct prep_hash h, struct prep_desc d);
/* Drops one hash (its Parse failed or was skipped, or the statement went stale on the server). */
void prep_server_forget(struct prep_server *s, struct prep_hash h);
/* Drops all (DISCARD ALL / DEALLOCATE ALL ran on the server, or a fresh connection). */
void prep_server_forget_all(struct prep_server *s);
uint32_t prep_server_count(const struct prep_server *s);

struct classify_result;
/* Whether the text may start with DEALLOCATE: its first letter after blanks is a d. The first
 * test of prep_lone_deallocate, inline for the relay, which asks it of every Query. */
static inline bool prep_may_deallocate(const char *sql, size_t len)
{
	size_t i = 0;
	while (i < len && (sql[i] == ' ' || sql[i] == '\t' || sql[i] == '\n' || sql[i] == '\r'))
		i++;
	return len - i >= 10 && (sql[i] | 0x20) == 'd';
}
/* The text is exactly one DEALLOCATE [ALL] statement (a cheap prefix test first, then the
 * parser); r holds its classification. */
bool prep_lone_deallocate(const char *sql, size_t len, struct classify_result *r);
/* A Query that is exactly one DEALLOCATE of a statement the client prepared through the
 * protocol (psycopg closes its own statements this way), or DEALLOCATE ALL: such names live
 * only in tusk's map pc (servers hold them as tusk_<hash>), so tusk answers the query itself.
 * The name is dropped from pc (all of them for ALL); a statement no client of the pool names
 * any more is marked stale in the server's set ps (NULL: none), to be closed before it is
 * prepared there again. Returns the tag to answer with, or NULL to pass the query on. */
const char *prep_local_deallocate(struct prep_client *pc, struct prep_server *ps, const char *sql, size_t len);

#endif
