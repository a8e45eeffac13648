/* User name maps: PostgreSQL's pg_ident.conf (PgBouncer's auth_ident_file), read from
 * ident_file for the hba_file option map=NAME of cert and peer lines. Each line is
 * "MAPNAME SYSTEM-USERNAME DATABASE-USERNAME"; a SYSTEM-USERNAME starting with '/' is a POSIX
 * extended regular expression (PostgreSQL's own ARE dialect has more: \d, lookahead, ...)
 * whose first parenthesized capture replaces a "\1" in DATABASE-USERNAME; DATABASE-USERNAME
 * "all" (unquoted) admits any user, as in PostgreSQL 16. Immutable after load. */
#ifndef TUSK_AUTH_IDENT_H
#define TUSK_AUTH_IDENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct ident; /* opaque, immutable after load: safe to share between threads */

/* Parse the file at path. 0 and *out, or the number of errors (*out untouched), each written
 * to errout (NULL: not written) as "FILE:LINE: ident: message"; every bad line is reported. */
__attribute__((warn_unused_result))
int ident_load(const char *path, FILE *errout, struct ident **out);

/* The same over bytes in memory; name stands for FILE in messages. */
__attribute__((warn_unused_result))
int ident_load_buffer(const char *name, const char *data, size_t len, FILE *errout, struct ident **out);

void ident_free(struct ident *id);

/* Some line names map (for hba_file's map=NAME at load). */
bool ident_has_map(const struct ident *id, const char *map);

/* True when a line of map admits the system user (peer's SO_PEERCRED name, cert's CN) as the
 * database user; *line is that line's number. Lines are tried in file order, as in PostgreSQL;
 * a regular expression whose capture did not take part in the match ends the search (false),
 * as PostgreSQL's error does. */
bool ident_match(const struct ident *id, const char *map, const char *system_user, const char *user, int *line);

/* Number of lines loaded (for logs and tests). */
int ident_count(const struct ident *id);

#endif
