/* Server side of SCRAM-SHA-256 (RFC 5802/7677, channel binding tls-server-end-point as in
 * RFC 5929) the way PostgreSQL runs it, for tusk authenticating its clients; and the md5 check.
 * Pure functions over strings, OpenSSL for the crypto; nothing calls these yet. */
#ifndef TUSK_AUTH_SCRAM_SERVER_H
#define TUSK_AUTH_SCRAM_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/scram.h"

#define SCRAM_DEFAULT_ITERATIONS 4096 /* PostgreSQL's scram_iterations default */
#define SCRAM_DEFAULT_SALT_LEN 16     /* PostgreSQL's SCRAM_DEFAULT_SALT_LEN */
#define SCRAM_CB_MAX 64               /* tls-server-end-point hash: up to SHA-512 */
#define SCRAM_VERIFIER_MAX 256        /* bound on a verifier string tusk parses or formats */

/* What a SCRAM login is checked against: PostgreSQL's rolpassword, decoded. Public fields,
 * read-only once built. */
struct scram_verifier {
	int iterations;
	size_t salt_len;
	uint8_t salt[SCRAM_SALT_MAX];
	uint8_t stored_key[SCRAM_KEY_LEN];
	uint8_t server_key[SCRAM_KEY_LEN];
	bool doomed; /* mock verifier for an unknown user: the exchange runs, then fails */
};

/* Parse "SCRAM-SHA-256$<iter>:<salt b64>$<StoredKey b64>:<ServerKey b64>" (len bytes, no NUL
 * needed): 0, or -EINVAL when it is not such a verifier (an md5 hash or plaintext included),
 * the iteration count is outside 1..10,000,000, the salt is empty or over SCRAM_SALT_MAX, or a
 * key is not 32 bytes. */
__attribute__((warn_unused_result))
int scram_verifier_parse(struct scram_verifier *v, const char *s, size_t len);
/* A verifier for a plaintext password as PostgreSQL makes one: random 16-byte salt, the given
 * iterations (PostgreSQL's default: SCRAM_DEFAULT_ITERATIONS; PBKDF2 runs on the calling
 * thread). 0, -EINVAL (password over 1023 bytes, iterations outside 1..SCRAM_ITER_MAX) or
 * -EIO. The password is used without SASLprep, as scram_client does. */
__attribute__((warn_unused_result))
int scram_verifier_from_password(struct scram_verifier *v, const char *password, int iterations);
/* The same with a given salt and iteration count (tests, reproducible verifiers). */
__attribute__((warn_unused_result))
int scram_verifier_from_password_salt(struct scram_verifier *v, const char *password,
				      const uint8_t *salt, size_t salt_len, int iterations);
/* For a user that does not exist (or has no usable verifier): a doomed verifier whose salt is
 * derived from the user name and a random per-process secret, so the same user always sees the
 * same salt and nobody can tell from the exchange whether the user exists. The exchange then
 * fails like a wrong password (-EPERM). 0 or -EIO. */
__attribute__((warn_unused_result))
int scram_verifier_mock(struct scram_verifier *v, const char *user);
/* The PostgreSQL text form into out (NUL-terminated): its length, or -ENOSPC. */
int scram_verifier_format(const struct scram_verifier *v, char *out, size_t cap);

/* One exchange with one client. */
struct scram_server {
	/* private */
	struct scram_verifier v;
	uint8_t cb_data[SCRAM_CB_MAX];
	size_t cb_len;
	char gs2_header[32];	 /* as the client sent it, for the c= check */
	char client_first_bare[SCRAM_MSG_MAX];
	char server_first[SCRAM_MSG_MAX];
	char nonce[SCRAM_MSG_MAX]; /* client nonce + ours */
	uint8_t client_key[SCRAM_KEY_LEN];
	int state;
};

/* cb_data: the tls-server-end-point hash of tusk's certificate when the client is on TLS (then
 * SCRAM-SHA-256-PLUS may be offered), NULL otherwise. 0, or -EINVAL when cb_len is over
 * SCRAM_CB_MAX (or cb_data is NULL with a length). The verifier is copied. */
__attribute__((warn_unused_result))
int scram_server_init(struct scram_server *st, const struct scram_verifier *v,
		      const uint8_t *cb_data, size_t cb_len);
/* Takes the client-first-message and writes the server-first-message (NUL-terminated); returns
 * its length. -EPROTO: malformed (also: authzid given, "p=" when there is no channel binding
 * data, a binding type other than tls-server-end-point, "y" when binding is available — a
 * downgrade — and messages of SCRAM_MSG_MAX or more). -ENOSPC: out too small, state unchanged.
 * The user name in "n=" is ignored, as PostgreSQL does: the startup packet's counts. */
int scram_server_first(struct scram_server *st, const char *client_first, size_t len, char *out,
		       size_t cap);
/* Takes the client-final-message and, when the proof is right, writes the server-final-message
 * ("v=...", NUL-terminated) and returns its length. -EPERM: wrong password (or a mock verifier):
 * send 28P01. -EPROTO: malformed, a channel binding that does not match, a nonce that is not
 * ours. -ENOSPC: out too small, state unchanged. */
int scram_server_final(struct scram_server *st, const char *client_final, size_t len, char *out,
		       size_t cap);
/* After a successful scram_server_final: the client's ClientKey (ClientProof XOR
 * ClientSignature), for scram_client_init_with_keys. 0, or -EINVAL before that. */
__attribute__((warn_unused_result))
int scram_server_client_key(const struct scram_server *st, uint8_t out[SCRAM_KEY_LEN]);
/* Wipe secrets. */
void scram_server_clear(struct scram_server *st);

/* Beyond the above: a step out of order, or after a failed one, returns -EINVAL; an OpenSSL
 * failure -EIO. A failed step ends the exchange. */

/* PostgreSQL md5 authentication: client_response must be "md5" || md5hex(md5hex(password ||
 * user) || salt), with stored either PostgreSQL's md5 verifier ("md5" and 32 lowercase hex
 * digits) or a plaintext password. A SCRAM verifier cannot check md5: false. The comparison is
 * constant-time. */
bool auth_md5_verify(const char *user, const char *stored, const uint8_t salt[4],
		     const char *client_response);

#endif
