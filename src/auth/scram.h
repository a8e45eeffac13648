/* Client side of server login: SCRAM-SHA-256 (RFC 5802/7677, no channel binding) and the
 * md5 password hash, so tusk can log in to PostgreSQL with a configured password or, for
 * SCRAM passthrough, with the keys recovered from its own client (auth/scram_server.h).
 * Pure functions over strings, OpenSSL for the crypto. */
#ifndef TUSK_AUTH_SCRAM_H
#define TUSK_AUTH_SCRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SCRAM_NONCE_LEN 24       /* raw random bytes before base64 */
#define SCRAM_KEY_LEN 32         /* SHA-256 */
#define SCRAM_MSG_MAX 1024       /* bound on every SCRAM message tusk builds or accepts */
#define SCRAM_SALT_MAX 64        /* bound on a salt tusk keeps (PostgreSQL uses 16 bytes) */

struct scram_client {
	/* private */
	char password[1024];
	char client_nonce[64];
	char client_first_bare[128];
	char server_first[SCRAM_MSG_MAX];
	char client_final_without_proof[SCRAM_MSG_MAX];
	uint8_t salted_password[SCRAM_KEY_LEN];
	uint8_t server_signature[SCRAM_KEY_LEN];
	/* passthrough (scram_client_init_with_keys): keys instead of a password, and the salt and
	 * iteration count of the verifier they belong to */
	uint8_t client_key[SCRAM_KEY_LEN];
	uint8_t server_key[SCRAM_KEY_LEN];
	uint8_t salt[SCRAM_SALT_MAX];
	size_t salt_len;
	int iterations;
	bool have_keys;
	int state;
};

/* 0, or -EINVAL when the password is too long. Generates the client nonce (RAND_bytes). */
__attribute__((warn_unused_result))
int scram_client_init(struct scram_client *sc, const char *password);
/* The client-first-message ("n,,n=,r=NONCE"): writes it to out (NUL-terminated) and
 * returns its length, or -ENOSPC. */
int scram_client_first(struct scram_client *sc, char *out, size_t cap);
/* Given the server-first-message (r=,s=,i=), writes the client-final-message with proof and
 * returns its length; -EPROTO when the server message is malformed, its nonce does not
 * extend ours, or the iteration count is outside 1..10,000,000; -ENOSPC. */
int scram_client_final(struct scram_client *sc, const char *server_first, size_t len, char *out,
		       size_t cap);
/* Verify the server-final-message ("v=..."): 0 when the signature matches, -EPROTO else
 * (also for "e=..." server errors). */
int scram_client_verify_final(struct scram_client *sc, const char *server_final, size_t len);
/* SCRAM passthrough: log in with the ClientKey recovered from a client's proof
 * (scram_server_client_key) and the ServerKey of the verifier tusk checked it against, so no
 * password is needed. salt/salt_len/iterations are that verifier's: the keys only work when the
 * server stores the same verifier, so scram_client_final returns -EPROTO when the server-first
 * message names another salt or iteration count (the role's password differs between tusk's
 * auth source and the server; retrying cannot help). Then scram_client_first/final/verify_final
 * as usual. 0, or -EINVAL (salt empty or over SCRAM_SALT_MAX, iterations outside
 * 1..10,000,000). */
__attribute__((warn_unused_result))
int scram_client_init_with_keys(struct scram_client *sc, const uint8_t client_key[SCRAM_KEY_LEN],
				const uint8_t server_key[SCRAM_KEY_LEN], const uint8_t *salt,
				size_t salt_len, int iterations);
/* Wipe secrets. */
void scram_client_clear(struct scram_client *sc);

/* PostgreSQL md5 password response: "md5" || md5hex(md5hex(password || user) || salt).
 * out gets 35 characters plus NUL. */
void auth_md5_response(const char *user, const char *password, const uint8_t salt[4], char out[36]);
/* The stored form PostgreSQL keeps for md5: "md5" || md5hex(password || user). */
void auth_md5_hash(const char *user, const char *password, char out[36]);
/* The same from a stored "md5..." hash (auth_file) instead of the password; out is left
 * empty when stored is not of that form. */
void auth_md5_response_from_hash(const char *stored, const uint8_t salt[4], char out[36]);

/* Beyond the return values above: a step called out of order (or after a failed step)
 * returns -EINVAL, an OpenSSL failure (RNG, digest) -EIO. scram_client_final runs PBKDF2 with
 * the server's iteration count on the calling thread. auth_md5_response leaves out empty when
 * md5 is unavailable (a FIPS-only OpenSSL), which the server then rejects. */

/* For tests: scram_client_init with a fixed client nonce (printable ASCII without ',', under
 * 64 bytes) and the user name to send in "n=" (escaped as a SASLname), so known vectors such as
 * RFC 7677's run through the same code as a real login. 0 or -EINVAL. */
__attribute__((warn_unused_result))
int scram_client_init_with_nonce(struct scram_client *sc, const char *user, const char *password,
				 const char *nonce);

#endif
