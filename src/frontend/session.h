/* A client's session state as tusk must recreate it on whichever server the client gets:
 * the values of the parameters the server reports (ParameterStatus: TimeZone, DateStyle,
 * application_name, ...) and, for settings the server does not report (search_path,
 * work_mem, ...), the text of the client's own SET statements, replayed verbatim.
 * SETs are transactional, so changes seen inside a transaction stay pending until it
 * commits, and are dropped if it fails or rolls back. Pure data: no I/O. */
#ifndef TUSK_FRONTEND_SESSION_H
#define TUSK_FRONTEND_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SESSION_MAX_BYTES (64 * 1024) /* bound on each blob; beyond it changes are refused */

/* Identical sets of reported parameters shared between the clients of one worker: most
 * clients have the server's defaults, and one copy of them each would be a good part of
 * what an idle client costs. A client's set is copied on its first change. One per worker,
 * used on that worker's thread only (the counts are plain integers). */
#define SESSION_SHARE_BUCKETS 64
struct session_params_set;
struct session_share {
	struct session_params_set *buckets[SESSION_SHARE_BUCKETS]; /* private */
};

struct session_state {
	/* private: NUL-separated "name\0value\0" pairs; read-only while shared */
	char *params;
	size_t params_len;
	struct session_params_set *shared; /* private: params is this set's (NULL: our own) */
	/* private: "name\0statement\0" pairs, in the order the client set them */
	char *carry;
	size_t carry_len;
	uint64_t carry_hash; /* read-only: 0 when carry is empty */
	uint64_t params_hash; /* read-only: phash of the settable params (util/phash.h) */
	/* private: pending changes to carry in the current transaction: records of
	 * 'S' name\0 text\0, 'R' name\0, 'A' (reset all), 'V' name\0 (a SET whose value is
	 * known otherwise), 'P' name\0 (a savepoint's mark) and 'D' (the startup values RESETs
	 * before it went back from are on the server again: session_restore_take) */
	char *pending;
	size_t pending_len;
	/* A committed RESET, RESET ALL or DISCARD ALL went back to a startup value, which the
	 * server it ran on does not have (its RESET went to the server's default): that server
	 * must be made this session again before it serves it (session_resync_take). */
	bool resync;
	/* private: what few clients need (startup settings RESET goes back to, named statements
	 * that RESET): allocated when first needed, so that most clients cost 64 bytes less */
	struct session_more *more;
};

/* carry_hash of a server whose carried settings tusk no longer knows: every client's next
 * attach resets it first (no session's carry_hash is this: rehash never gives it). */
#define SESSION_CARRY_UNKNOWN UINT64_MAX

void session_free(struct session_state *st);

/* Share st's reported parameters with the identical sets of other clients of sh's worker
 * (st's own copy is freed), or offer them for sharing. Best effort: without memory st
 * keeps its own copy. */
void session_params_share(struct session_state *st, struct session_share *sh);
/* Give up the worker's shared set for a copy of st's own (a client moving to another
 * worker, whose sets are that worker's). 0 or -ENOMEM (still shared). */
__attribute__((warn_unused_result)) int session_params_unshare(struct session_state *st);
/* Replace st's reported parameters with from's (which gives them up). */
void session_params_take(struct session_state *st, struct session_state *from);
/* Sets shared now, for tests. */
size_t session_share_count(const struct session_share *sh);

/* Reported parameters. 0 or -ENOMEM / -E2BIG. */
__attribute__((warn_unused_result))
int session_param_set(struct session_state *st, const char *name, const char *value);
const char *session_param_get(const struct session_state *st, const char *name);
/* A DateStyle set over another, as PostgreSQL's check_datestyle combines them: each of the
 * output style and the field order that next leaves out is kept from prev (GERMAN alone also
 * means DMY). The result in out ("ISO, DMY"); false when either holds a word the rule does not
 * know (DEFAULT, a typo): then next alone applies, and the server judges it. */
bool session_datestyle_merge(const char *prev, const char *next, char *out, size_t cap);
/* Iterate: start with *pos = 0; false at the end. */
bool session_param_next(const struct session_state *st, size_t *pos, const char **name, const char **value);

/* True for reported parameters that only the server sets (server_version, is_superuser...). */
bool session_param_read_only(const char *name);

/* Changes seen in the current transaction. 0 or -ENOMEM / -E2BIG. */
__attribute__((warn_unused_result))
int session_pending_set(struct session_state *st, const char *name, const char *stmt, size_t len);
__attribute__((warn_unused_result))
int session_pending_reset(struct session_state *st, const char *name);
__attribute__((warn_unused_result))
int session_pending_reset_all(struct session_state *st);
/* Savepoints of the current transaction (names as the parser normalised them): SAVEPOINT
 * marks where the changes pending now end (nothing to mark when none is); ROLLBACK TO drops
 * the changes made since that savepoint's last mark (all of them when it has none: it was
 * made before them), keeping the savepoint; RELEASE drops its mark and later ones, keeping
 * the changes. */
__attribute__((warn_unused_result))
int session_pending_savepoint(struct session_state *st, const char *name);
/* A SET of name that is not carried (a reported parameter, whose value comes back as
 * ParameterStatus; anything in session pooling): a RESET pending before it does not go
 * back to the startup value at the commit. Recorded only after another change. */
__attribute__((warn_unused_result))
int session_pending_set_seen(struct session_state *st, const char *name);
void session_pending_rollback_to(struct session_state *st, const char *name);
void session_pending_release(struct session_state *st, const char *name);
/* The statement that set name, carried to every server the client gets (committed SETs
 * only), or NULL. */
const char *session_carried(const struct session_state *st, const char *name);
/* Keep the session as it is now (right after its first server applied the startup packet)
 * as what RESET goes back to: its carried statements, and of its reported parameters those
 * in names ("name\0" each, then "\0"; the ones the client's startup packet gave). 0 or
 * -ENOMEM. */
__attribute__((warn_unused_result)) int session_startup_keep(struct session_state *st, const char *names);
/* Whether the startup packet set anything RESET goes back to. */
bool session_has_startup(const struct session_state *st);
/* The carry_hash the server that ran the session's last transaction has: st's, or
 * SESSION_CARRY_UNKNOWN once (resync cleared) after a RESET went back to a startup value. */
uint64_t session_resync_take(struct session_state *st);
/* For a server the session keeps (session pooling, pinned): the statements that set what the
 * last commits set back to startup values (the startup's statements, set_config of reported
 * ones), a list in out ("stmt\0stmt\0...\0", ended by an empty one: server_run_statements);
 * resync cleared. 0 or -ENOSPC. */
int session_resync_sql(struct session_state *st, char *out, size_t cap);

/* The transaction committed (apply pending) or failed/rolled back (drop pending). A RESET
 * forgets the carried SET of its name, RESET ALL (and DISCARD ALL) every one. */
void session_commit(struct session_state *st);
/* session_commit, where a RESET of a name the startup packet set goes back to the startup's
 * value, as PostgreSQL's RESET goes back to the value the session started with, and RESET
 * ALL to all of them; the server the transaction ran on does not have those (its RESET went
 * to the server's default): st->resync. For a session whose next transaction gets a server
 * made its own first (a transaction-pooled one). */
void session_commit_to_startup(struct session_state *st);
/* fn(arg, name, startup value) for each reported parameter session_commit_to_startup would
 * set back (a name may come twice); the first non-zero fn returns ends it and is returned. */
int session_restores_each(const struct session_state *st, int (*fn)(void *arg, const char *name, const char *value),
			  void *arg);
/* Inside a transaction, a RESET (RESET ALL, DISCARD ALL) of a setting the startup packet gave
 * went to the server's default, where PostgreSQL direct goes back to the startup value, and
 * the transaction's next statements would see the default (relay.c puts the startup values
 * back before them). Owed: such a RESET is pending since the last take. Take: the statements
 * that put them back (set_config(..., false): a rollback undoes it with the RESET), a list in
 * out[0, cap) as session_resync_sql's; tell (may be NULL) gets each reported one, for its
 * ParameterStatus; marks them put back ('D' record; ROLLBACK TO a savepoint before it drops it
 * with the RESETs), also when it fails.
 * 0, or -ENOSPC (out too small: out is empty) or tell's error (out is empty, some were told). */
bool session_restore_owed(const struct session_state *st);
__attribute__((warn_unused_result))
int session_restore_take(struct session_state *st, char *out, size_t cap,
			 int (*tell)(void *arg, const char *name, const char *value), void *arg);
void session_discard(struct session_state *st);

/* Session pooling keeps the client's server and parses only what may RESET a setting the
 * startup packet gave (relay.c): a named statement that does runs many times, or never, and
 * its RESET happens at each run. These keep such statements by name. Put: stmt resets setting
 * (NULL: all) each time it runs (-E2BIG past SESSION_MAX_BYTES, -ENOMEM). Drop: stmt is gone
 * or another statement now (Close, DEALLOCATE, a Parse). Clear: every statement is gone
 * (DEALLOCATE ALL, DISCARD ALL). Run: a Bind of stmt; its RESET is pending in the
 * transaction as if its text had come now: 1, or 0 when stmt does not reset, or < 0 (no
 * room for one more pending change). */
int session_named_reset_put(struct session_state *st, const char *stmt, const char *setting);
#define SESSION_NAMED_DISCARD_ALL "*" /* the setting of a DISCARD ALL (no GUC is named so) */
void session_named_reset_drop(struct session_state *st, const char *stmt);
void session_named_reset_clear(struct session_state *st);
int session_named_reset_run(struct session_state *st, const char *stmt);
bool session_named_resets(const struct session_state *st);

/* The text of the unnamed statement when it SETs or RESETs (relay.c counts it again at each
 * Bind after the first): kept (0; -E2BIG past SESSION_MAX_BYTES, -ENOMEM: not kept), or
 * NULL and its length when there is none. */
__attribute__((warn_unused_result))
int session_unnamed_keep(struct session_state *st, const char *sql, size_t len);
const char *session_unnamed_text(const struct session_state *st, size_t *len);

/* The SQL that turns a server into this session: SETs for every reported parameter whose
 * server value (lookup) differs, then the carried statements unless the server already
 * carries exactly these (server_carry_hash == st->carry_hash). Writes a NUL-terminated
 * string to out ("" when nothing is needed). 0 or -ENOSPC. */
/* Append v as an E'' literal at out[*pos] (NUL-terminated). 0 or -ENOSPC. */
int session_put_literal(char *out, size_t cap, size_t *pos, const char *v);

typedef const char *(*session_lookup_fn)(const void *server, const char *name);
int session_build_sync(const struct session_state *st, const void *server, session_lookup_fn lookup,
		       uint64_t server_carry_hash, char *out, size_t cap);

#endif
