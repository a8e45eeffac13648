/* Server side of SCRAM-SHA-256 and the md5 check, for tusk authenticating its clients as
 * PostgreSQL would (auth-scram.c is the reference for every accept/reject decision here).
 * Owns only the caller's structs and one per-process secret for mock verifiers; every byte a
 * client sends is bounded and validated before it is used. */
#include "auth/scram_server.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "auth/scram_int.h"

#define VERIFIER_PREFIX "SCRAM-SHA-256$"
#define CB_TYPE_PREFIX "p=tls-server-end-point,"
#define SERVER_NONCE_LEN 18 /* raw bytes, as PostgreSQL's SCRAM_RAW_NONCE_LEN */
/* A client nonce longer than this is refused: it keeps server-first and client-final well
 * inside SCRAM_MSG_MAX, which our own client (and libpq) also bound. */
#define CLIENT_NONCE_MAX 256

/* A zeroed struct is SERVER_UNINIT; each step checks it follows the one before. */
enum scram_server_state {
	SERVER_UNINIT = 0,
	SERVER_WAITING_FIRST,  /* init done, waiting for client-first */
	SERVER_WAITING_FINAL,  /* server-first sent */
	SERVER_AUTHENTICATED,  /* proof checked; client_key is set */
	SERVER_FAILED,	       /* only scram_server_clear is left */
};

static int derive_keys(struct scram_verifier *v, const char *password)
{
	uint8_t salted[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN];
	int rc = -EIO;

	if (PKCS5_PBKDF2_HMAC(password, (int)strlen(password), v->salt, (int)v->salt_len,
			      v->iterations, EVP_sha256(), SCRAM_KEY_LEN, salted) == 1 &&
	    scram_hmac_sha256(salted, SCRAM_KEY_LEN, "Client Key", 10, client_key) == 0 &&
	    scram_sha256(client_key, SCRAM_KEY_LEN, v->stored_key) == 0 &&
	    scram_hmac_sha256(salted, SCRAM_KEY_LEN, "Server Key", 10, v->server_key) == 0)
		rc = 0;
	OPENSSL_cleanse(salted, sizeof(salted));
	OPENSSL_cleanse(client_key, sizeof(client_key));
	return rc;
}

int scram_verifier_from_password_salt(struct scram_verifier *v, const char *password,
				      const uint8_t *salt, size_t salt_len, int iterations)
{
	memset(v, 0, sizeof(*v));
	/* The same bound as scram_client's password buffer. */
	if (strlen(password) >= 1024 || salt_len == 0 || salt_len > SCRAM_SALT_MAX ||
	    iterations < 1 || iterations > SCRAM_ITER_MAX)
		return -EINVAL;
	memcpy(v->salt, salt, salt_len);
	v->salt_len = salt_len;
	v->iterations = iterations;
	int rc = derive_keys(v, password);
	if (rc < 0)
		OPENSSL_cleanse(v, sizeof(*v));
	return rc;
}

int scram_verifier_from_password(struct scram_verifier *v, const char *password, int iterations)
{
	uint8_t salt[SCRAM_DEFAULT_SALT_LEN];
	if (RAND_bytes(salt, sizeof(salt)) != 1)
		return -EIO;
	return scram_verifier_from_password_salt(v, password, salt, sizeof(salt), iterations);
}

/* The piece of s up to the next sep (or the end when sep is 0); advances *p past the sep. */
static bool take_field(const char **p, const char *end, char sep, const char **f, size_t *flen)
{
	const char *stop = sep ? memchr(*p, sep, (size_t)(end - *p)) : end;
	if (!stop)
		return false;
	*f = *p;
	*flen = (size_t)(stop - *p);
	*p = sep ? stop + 1 : end;
	return *flen > 0;
}

int scram_verifier_parse(struct scram_verifier *v, const char *s, size_t len)
{
	const char *p = s, *end = s + len, *f;
	size_t flen;
	uint8_t key[SCRAM_KEY_LEN + 3]; /* room to notice a key that is too long */
	long iter = 0;

	memset(v, 0, sizeof(*v));
	if (len >= SCRAM_VERIFIER_MAX || len < strlen(VERIFIER_PREFIX) ||
	    memcmp(s, VERIFIER_PREFIX, strlen(VERIFIER_PREFIX)) != 0 || memchr(s, '\0', len))
		return -EINVAL;
	p += strlen(VERIFIER_PREFIX);

	if (!take_field(&p, end, ':', &f, &flen))
		return -EINVAL;
	for (size_t i = 0; i < flen; i++) {
		if (f[i] < '0' || f[i] > '9')
			return -EINVAL;
		iter = iter * 10 + (f[i] - '0');
		if (iter > SCRAM_ITER_MAX)
			return -EINVAL;
	}
	if (iter < 1)
		return -EINVAL;
	v->iterations = (int)iter;

	if (!take_field(&p, end, '$', &f, &flen))
		return -EINVAL;
	int n = scram_b64_decode(f, flen, v->salt, sizeof(v->salt));
	if (n <= 0)
		goto err_clear;
	v->salt_len = (size_t)n;

	if (!take_field(&p, end, ':', &f, &flen) ||
	    scram_b64_decode(f, flen, key, sizeof(key)) != SCRAM_KEY_LEN)
		goto err_clear;
	memcpy(v->stored_key, key, SCRAM_KEY_LEN);
	if (!take_field(&p, end, 0, &f, &flen) ||
	    scram_b64_decode(f, flen, key, sizeof(key)) != SCRAM_KEY_LEN)
		goto err_clear;
	memcpy(v->server_key, key, SCRAM_KEY_LEN);
	OPENSSL_cleanse(key, sizeof(key));
	return 0;

err_clear:
	OPENSSL_cleanse(key, sizeof(key));
	OPENSSL_cleanse(v, sizeof(*v));
	return -EINVAL;
}

int scram_verifier_format(const struct scram_verifier *v, char *out, size_t cap)
{
	char salt[SCRAM_SALT_MAX / 3 * 4 + 8], stored[SCRAM_KEY_B64_LEN + 1],
		server[SCRAM_KEY_B64_LEN + 1];
	if (scram_b64_encode(v->salt, v->salt_len, salt, sizeof(salt)) < 0 ||
	    scram_b64_encode(v->stored_key, SCRAM_KEY_LEN, stored, sizeof(stored)) < 0 ||
	    scram_b64_encode(v->server_key, SCRAM_KEY_LEN, server, sizeof(server)) < 0)
		return -ENOSPC;
	int n = snprintf(out, cap, VERIFIER_PREFIX "%d:%s$%s:%s", v->iterations, salt, stored,
			 server);
	if (n < 0 || (size_t)n >= cap)
		return -ENOSPC;
	return n;
}

/* The per-process secret behind mock verifiers: random, so nobody outside can compute which
 * salt an unknown user gets and compare it with a real one; fixed for the process, so asking
 * twice gives the same salt as it would for a real user. pthread_once orders the write before
 * every reader. */
static pthread_once_t mock_once = PTHREAD_ONCE_INIT;
static uint8_t mock_secret[SCRAM_KEY_LEN];
static bool mock_secret_ok;

static void init_mock_secret(void)
{
	mock_secret_ok = RAND_bytes(mock_secret, sizeof(mock_secret)) == 1;
}

int scram_verifier_mock(struct scram_verifier *v, const char *user)
{
	uint8_t seed[SCRAM_KEY_LEN];

	memset(v, 0, sizeof(*v));
	if (pthread_once(&mock_once, init_mock_secret) != 0 || !mock_secret_ok)
		return -EIO;
	/* Like PostgreSQL's scram_mock_salt: a hash of the user name and a server secret. The keys
	 * are derived too so that nothing in the struct is a telltale constant; doomed decides. */
	int rc = -EIO;
	if (scram_hmac_sha256(mock_secret, sizeof(mock_secret), user, strlen(user), seed) == 0 &&
	    scram_hmac_sha256(seed, sizeof(seed), "Stored Key", 10, v->stored_key) == 0 &&
	    scram_hmac_sha256(seed, sizeof(seed), "Server Key", 10, v->server_key) == 0) {
		memcpy(v->salt, seed, SCRAM_DEFAULT_SALT_LEN);
		v->salt_len = SCRAM_DEFAULT_SALT_LEN;
		v->iterations = SCRAM_DEFAULT_ITERATIONS;
		v->doomed = true;
		rc = 0;
	}
	OPENSSL_cleanse(seed, sizeof(seed));
	return rc;
}

int scram_server_init(struct scram_server *st, const struct scram_verifier *v,
		      const uint8_t *cb_data, size_t cb_len)
{
	memset(st, 0, sizeof(*st));
	if (cb_len > SCRAM_CB_MAX || (cb_len > 0 && !cb_data))
		return -EINVAL;
	if (v->salt_len == 0 || v->salt_len > SCRAM_SALT_MAX || v->iterations < 1 ||
	    v->iterations > SCRAM_ITER_MAX)
		return -EINVAL;
	st->v = *v;
	if (cb_len > 0)
		memcpy(st->cb_data, cb_data, cb_len);
	st->cb_len = cb_len;
	st->state = SERVER_WAITING_FIRST;
	return 0;
}

/* gs2-header "n,," / "y,," / "p=tls-server-end-point,,": its length, or -EPROTO. */
static int parse_gs2_header(const struct scram_server *st, const char *m, size_t len)
{
	size_t i;
	switch (len > 0 ? m[0] : '\0') {
	case 'n':
		i = 1;
		break;
	case 'y':
		/* The client could bind but believes we cannot: with binding data at hand, someone
		 * in between stripped -PLUS from our mechanism list (RFC 5802 section 6). */
		if (st->cb_len > 0)
			return -EPROTO;
		i = 1;
		break;
	case 'p':
		/* Only tls-server-end-point, and only when the client is on TLS with us. */
		if (st->cb_len == 0 || len < strlen(CB_TYPE_PREFIX) ||
		    memcmp(m, CB_TYPE_PREFIX, strlen(CB_TYPE_PREFIX)) != 0)
			return -EPROTO;
		i = strlen(CB_TYPE_PREFIX) - 1;
		break;
	default:
		return -EPROTO;
	}
	/* Then ',' and an empty authzid: PostgreSQL does not support "a=" either. */
	if (len < i + 2 || m[i] != ',' || m[i + 1] != ',')
		return -EPROTO;
	return (int)(i + 2);
}

int scram_server_first(struct scram_server *st, const char *client_first, size_t len, char *out,
		       size_t cap)
{
	uint8_t raw[SERVER_NONCE_LEN];
	char our_nonce[SERVER_NONCE_LEN / 3 * 4 + 1];
	char salt_b64[SCRAM_SALT_MAX / 3 * 4 + 8];
	const char *val;
	size_t vlen;

	if (st->state != SERVER_WAITING_FIRST)
		return -EINVAL;
	if (len == 0 || len >= SCRAM_MSG_MAX || memchr(client_first, '\0', len))
		goto err_proto;
	int h = parse_gs2_header(st, client_first, len);
	if (h < 0 || (size_t)h >= sizeof(st->gs2_header))
		goto err_proto;

	/* client-first-message-bare: [reserved-mext ","] username "," nonce ["," extensions]. */
	const char *bare = client_first + h;
	struct scram_reader r = { bare, client_first + len };
	/* "n=" may be empty (libpq sends "n=,"), which scram_read_attr refuses, so by hand; its
	 * value is ignored: the startup packet's user name is the one that counts. */
	if (r.end - r.p < 2 || r.p[0] != 'n' || r.p[1] != '=')
		goto err_proto; /* "m=" lands here too */
	const char *comma = memchr(r.p, ',', (size_t)(r.end - r.p));
	if (!comma)
		goto err_proto;
	r.p = comma + 1;
	if (scram_expect_attr(&r, 'r', &val, &vlen) < 0 || vlen > CLIENT_NONCE_MAX)
		goto err_proto;
	for (size_t i = 0; i < vlen; i++)
		if (!scram_nonce_char_ok(val[i]))
			goto err_proto;
	if (scram_skip_extensions(&r) < 0)
		goto err_proto;

	if (scram_b64_encode(st->v.salt, st->v.salt_len, salt_b64, sizeof(salt_b64)) < 0)
		goto err_proto; /* cannot happen: salt_len checked in init */
	/* "r=" nonce ",s=" salt ",i=" up to 8 digits */
	size_t need = 2 + vlen + sizeof(our_nonce) - 1 + 3 + strlen(salt_b64) + 3 + 8;
	if (need >= cap)
		return -ENOSPC; /* state unchanged: the caller may retry with more room */

	if (RAND_bytes(raw, sizeof(raw)) != 1 ||
	    scram_b64_encode(raw, sizeof(raw), our_nonce, sizeof(our_nonce)) < 0) {
		st->state = SERVER_FAILED;
		return -EIO;
	}
	memcpy(st->gs2_header, client_first, (size_t)h);
	st->gs2_header[h] = '\0';
	size_t bare_len = len - (size_t)h;
	memcpy(st->client_first_bare, bare, bare_len);
	st->client_first_bare[bare_len] = '\0';
	memcpy(st->nonce, val, vlen);
	memcpy(st->nonce + vlen, our_nonce, strlen(our_nonce) + 1);

	int n = snprintf(st->server_first, sizeof(st->server_first), "r=%s,s=%s,i=%d", st->nonce,
			 salt_b64, st->v.iterations);
	if (n < 0 || (size_t)n >= sizeof(st->server_first) || (size_t)n >= cap)
		goto err_proto; /* cannot happen: bounded above */
	memcpy(out, st->server_first, (size_t)n + 1);
	st->state = SERVER_WAITING_FINAL;
	return n;

err_proto:
	st->state = SERVER_FAILED;
	return -EPROTO;
}

/* c= must carry exactly the gs2 header the client sent first, plus the binding data for "p". */
static bool channel_binding_ok(const struct scram_server *st, const char *val, size_t vlen)
{
	uint8_t got[sizeof(st->gs2_header) + SCRAM_CB_MAX + 3];
	uint8_t want[sizeof(st->gs2_header) + SCRAM_CB_MAX];
	size_t hlen = strlen(st->gs2_header);
	size_t wlen = hlen;

	memcpy(want, st->gs2_header, hlen);
	if (st->gs2_header[0] == 'p') {
		memcpy(want + hlen, st->cb_data, st->cb_len);
		wlen += st->cb_len;
	}
	int n = scram_b64_decode(val, vlen, got, sizeof(got));
	return n > 0 && (size_t)n == wlen && CRYPTO_memcmp(got, want, wlen) == 0;
}

int scram_server_final(struct scram_server *st, const char *client_final, size_t len, char *out,
		       size_t cap)
{
	uint8_t proof[SCRAM_KEY_LEN + 3]; /* room to notice a proof that is too long */
	uint8_t client_sig[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN], stored[SCRAM_KEY_LEN];
	uint8_t server_sig[SCRAM_KEY_LEN];
	char sig_b64[SCRAM_KEY_B64_LEN + 1];
	char auth_message[3 * SCRAM_MSG_MAX];
	const char *val, *proof_val = NULL;
	size_t vlen, proof_len = 0;
	char name;
	int rc = -EPROTO;

	if (st->state != SERVER_WAITING_FINAL)
		return -EINVAL;
	if (len == 0 || len >= SCRAM_MSG_MAX || memchr(client_final, '\0', len))
		goto err_fail;

	/* channel-binding "," nonce ["," extensions] "," proof */
	struct scram_reader r = { client_final, client_final + len };
	if (scram_expect_attr(&r, 'c', &val, &vlen) < 0 || !channel_binding_ok(st, val, vlen))
		goto err_fail;
	if (scram_expect_attr(&r, 'r', &val, &vlen) < 0 || vlen != strlen(st->nonce) ||
	    memcmp(val, st->nonce, vlen) != 0)
		goto err_fail;
	while (r.p < r.end) {
		if (scram_read_attr(&r, &name, &val, &vlen) < 0 || name == 'm')
			goto err_fail;
		if (name == 'p') {
			proof_val = val;
			proof_len = vlen;
			break;
		}
	}
	if (!proof_val || r.p != r.end)
		goto err_fail; /* no proof, or something after it */
	if (scram_b64_decode(proof_val, proof_len, proof, sizeof(proof)) != SCRAM_KEY_LEN)
		goto err_fail;
	if (2 + SCRAM_KEY_B64_LEN >= cap)
		return -ENOSPC; /* state unchanged: the caller may retry with more room */

	/* client-final-message-without-proof ends before ",p=". */
	size_t without_proof = (size_t)(proof_val - 3 - client_final);
	int n = snprintf(auth_message, sizeof(auth_message), "%s,%s,%.*s", st->client_first_bare,
			 st->server_first, (int)without_proof, client_final);
	if (n < 0 || (size_t)n >= sizeof(auth_message))
		goto err_fail; /* cannot happen: each part is under SCRAM_MSG_MAX */
	size_t am_len = (size_t)n;

	rc = -EIO;
	if (scram_hmac_sha256(st->v.stored_key, SCRAM_KEY_LEN, auth_message, am_len, client_sig) < 0)
		goto cleanse;
	for (size_t i = 0; i < SCRAM_KEY_LEN; i++)
		client_key[i] = proof[i] ^ client_sig[i];
	if (scram_sha256(client_key, SCRAM_KEY_LEN, stored) < 0)
		goto cleanse;
	/* A mock verifier fails even if the proof happened to match. */
	rc = -EPERM;
	if (CRYPTO_memcmp(stored, st->v.stored_key, SCRAM_KEY_LEN) != 0 || st->v.doomed)
		goto cleanse;
	rc = -EIO;
	if (scram_hmac_sha256(st->v.server_key, SCRAM_KEY_LEN, auth_message, am_len, server_sig) < 0 ||
	    scram_b64_encode(server_sig, SCRAM_KEY_LEN, sig_b64, sizeof(sig_b64)) < 0)
		goto cleanse;
	n = snprintf(out, cap, "v=%s", sig_b64);
	if (n < 0 || (size_t)n >= cap)
		goto cleanse; /* checked above */
	memcpy(st->client_key, client_key, SCRAM_KEY_LEN);
	st->state = SERVER_AUTHENTICATED;
	rc = n;

cleanse:
	OPENSSL_cleanse(proof, sizeof(proof));
	OPENSSL_cleanse(client_sig, sizeof(client_sig));
	OPENSSL_cleanse(client_key, sizeof(client_key));
	OPENSSL_cleanse(stored, sizeof(stored));
	if (rc >= 0)
		return rc;
err_fail:
	st->state = SERVER_FAILED;
	return rc;
}

int scram_server_client_key(const struct scram_server *st, uint8_t out[SCRAM_KEY_LEN])
{
	if (st->state != SERVER_AUTHENTICATED)
		return -EINVAL;
	memcpy(out, st->client_key, SCRAM_KEY_LEN);
	return 0;
}

void scram_server_clear(struct scram_server *st)
{
	OPENSSL_cleanse(st, sizeof(*st));
}

bool auth_md5_verify(const char *user, const char *stored, const uint8_t salt[4],
		     const char *client_response)
{
	char inner[33], expect[36];
	bool ok = false;

	/* Lengths are not secret: every valid response is 35 bytes. */
	if (strlen(client_response) != 35 || stored[0] == '\0' ||
	    strncmp(stored, VERIFIER_PREFIX, strlen(VERIFIER_PREFIX)) == 0)
		return false;
	/* PostgreSQL's test for an md5 verifier (isMD5): "md5" and 35 bytes; a plaintext password
	 * of that shape is taken as a hash there too. */
	if (strlen(stored) == 35 && strncmp(stored, "md5", 3) == 0)
		memcpy(inner, stored + 3, 33);
	else if (scram_md5_hex(stored, strlen(stored), user, strlen(user), inner) < 0)
		goto cleanse;
	memcpy(expect, "md5", 3);
	if (scram_md5_hex(inner, 32, salt, 4, expect + 3) < 0)
		goto cleanse;
	ok = CRYPTO_memcmp(expect, client_response, 35) == 0;
cleanse:
	OPENSSL_cleanse(inner, sizeof(inner));
	OPENSSL_cleanse(expect, sizeof(expect));
	return ok;
}
