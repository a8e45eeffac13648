/* PgBouncer's auth_file ("userlist.txt"): one "user" "secret" pair per line, the secret a
 * plain password, an md5 hash or a SCRAM-SHA-256 verifier. Loaded once into an immutable table
 * with hashed lookup by user name; SCRAM verifiers arrive already decoded. */
#ifndef TUSK_AUTH_USERLIST_H
#define TUSK_AUTH_USERLIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define USERLIST_KEY_LEN 32   /* SHA-256 */
#define USERLIST_SALT_MAX 64  /* PostgreSQL writes 16; a longer salt is refused at load */
#define USERLIST_SCRAM_ITER_MAX 10000000

enum userlist_kind {
	USERLIST_PLAIN, /* anything that is neither of the two below */
	USERLIST_MD5,   /* "md5" followed by exactly 32 hex digits */
	USERLIST_SCRAM, /* "SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>", validated */
};

/* All fields read-only; they live as long as the userlist. */
struct userlist_entry {
	char *user;
	char *secret; /* as written in the file, unquoted */
	enum userlist_kind kind;
	int line;
	/* USERLIST_SCRAM only: */
	int iterations;
	uint8_t salt[USERLIST_SALT_MAX];
	size_t salt_len;
	uint8_t stored_key[USERLIST_KEY_LEN];
	uint8_t server_key[USERLIST_KEY_LEN];
};

struct userlist; /* opaque, immutable after load: safe to share between threads */

/* Parse the file at path. 0 and *out, or the number of errors (*out untouched), each written to
 * errout (NULL: not written) as "FILE:LINE: userlist: message"; every bad line is reported. A
 * user listed twice is an error on the second line. A secret that starts like an md5 hash or a
 * SCRAM verifier but is malformed is an error, never taken as a plain password. */
__attribute__((warn_unused_result))
int userlist_load(const char *path, FILE *errout, struct userlist **out);

/* The same over bytes in memory; name stands for FILE in messages. */
__attribute__((warn_unused_result))
int userlist_load_buffer(const char *name, const char *data, size_t len, FILE *errout,
			 struct userlist **out);

/* Wipes the secrets, then frees. */
void userlist_free(struct userlist *ul);

/* The entry for user (exact, case-sensitive), or NULL. */
const struct userlist_entry *userlist_find(const struct userlist *ul, const char *user);

/* Classify one secret as the loader does (auth_query results): e->kind and, for a SCRAM
 * verifier, its decoded fields; e->user, e->secret and e->line are left alone. 0, or
 * -EINVAL for a secret that looks like md5 or SCRAM but is malformed. */
__attribute__((warn_unused_result))
int userlist_parse_secret(const char *secret, struct userlist_entry *e);

/* Whether the cleartext password matches e's secret of whatever kind (a plain one in constant
 * time; an empty plain secret matches nothing, as in PgBouncer), for user (md5's salt). */
bool userlist_password_matches(const struct userlist_entry *e, const char *user, const char *password);

/* Number of entries. */
int userlist_count(const struct userlist *ul);

#endif
