/* Client side of SCRAM-SHA-256 (RFC 5802, RFC 7677) and PostgreSQL's md5 response, for tusk
 * logging in to a server. Owns no state beyond the caller's struct scram_client; every byte
 * the server sends is bounded and validated before it is used. */
#include "auth/scram.h"
#include "auth/scram_int.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

/* The gs2 header "n,," (no channel binding, no authzid) and its base64 for the c= attribute. */
#define SCRAM_GS2_HEADER "n,,"
#define SCRAM_GS2_HEADER_B64 "biws"

/* A zeroed struct is SCRAM_UNINIT; every step checks it follows the one before. */
enum scram_state {
	SCRAM_UNINIT = 0,
	SCRAM_NONCE_READY, /* init done, client-first may be (re)built */
	SCRAM_FIRST_SENT,  /* waiting for server-first */
	SCRAM_FINAL_SENT,  /* waiting for server-final, server_signature is set */
	SCRAM_VERIFIED,    /* server proved it knows the password */
	SCRAM_FAILED,      /* the server sent something unacceptable; only scram_client_clear is left */
};

static const char b64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Base64 of n bytes into out (NUL-terminated): its length, or -ENOSPC. */
int scram_b64_encode(const uint8_t *in, size_t n, char *out, size_t cap)
{
	size_t need = (n + 2) / 3 * 4;
	if (need >= cap)
		return -ENOSPC;
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)in[i + 1] << 8;
		if (i + 2 < n)
			v |= in[i + 2];
		out[o++] = b64_alphabet[(v >> 18) & 63];
		out[o++] = b64_alphabet[(v >> 12) & 63];
		out[o++] = i + 1 < n ? b64_alphabet[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < n ? b64_alphabet[v & 63] : '=';
	}
	out[o] = '\0';
	return (int)o;
}

static int b64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Strict base64 (standard alphabet, padded, canonical, no whitespace) into at most cap bytes: the decoded
 * length, or -EPROTO when the text is not base64 or decodes to more than cap bytes. */
int scram_b64_decode(const char *in, size_t n, uint8_t *out, size_t cap)
{
	if (n == 0 || n % 4 != 0)
		return -EPROTO;
	size_t pad = 0;
	if (in[n - 1] == '=')
		pad = in[n - 2] == '=' ? 2 : 1;
	size_t outlen = n / 4 * 3 - pad;
	if (outlen > cap)
		return -EPROTO;
	size_t o = 0;
	for (size_t i = 0; i < n; i += 4) {
		bool last = i + 4 == n;
		size_t nchars = last ? 4 - pad : 4;
		uint32_t v = 0;
		for (size_t k = 0; k < 4; k++) {
			int d = 0;
			if (k < nchars) {
				d = b64_value(in[i + k]);
				if (d < 0)
					return -EPROTO; /* also catches '=' before the end */
			}
			v = v << 6 | (uint32_t)d;
		}
		/* Bits past the last byte must be zero: otherwise several texts decode the same. */
		if ((nchars == 2 && (v & 0xffff)) || (nchars == 3 && (v & 0xff)))
			return -EPROTO;
		out[o++] = (uint8_t)(v >> 16);
		if (nchars > 2)
			out[o++] = (uint8_t)(v >> 8);
		if (nchars > 3)
			out[o++] = (uint8_t)v;
	}
	return (int)o;
}

/* RFC 5802 printable: 0x21..0x7e except ','. */
bool scram_nonce_char_ok(char c)
{
	return c >= 0x21 && c <= 0x7e && c != ',';
}

/* Reads from a server message one attribute "a=value" up to the next ',' or the end.
 * The value is at least one byte long and contains no ','. */
int scram_read_attr(struct scram_reader *r, char *name, const char **val, size_t *vlen)
{
	if (r->end - r->p < 3 || r->p[1] != '=')
		return -EPROTO;
	char a = r->p[0];
	if (!((a >= 'a' && a <= 'z') || (a >= 'A' && a <= 'Z')))
		return -EPROTO;
	const char *v = r->p + 2;
	const char *comma = memchr(v, ',', (size_t)(r->end - v));
	const char *vend = comma ? comma : r->end;
	if (vend == v)
		return -EPROTO;
	*name = a;
	*val = v;
	*vlen = (size_t)(vend - v);
	r->p = comma ? comma + 1 : r->end;
	if (comma && r->p == r->end)
		return -EPROTO; /* trailing ',' */
	return 0;
}

/* Read the attribute that the grammar requires next; "m" (mandatory extension) is refused
 * wherever it appears because we implement none. */
int scram_expect_attr(struct scram_reader *r, char want, const char **val, size_t *vlen)
{
	char name;
	if (scram_read_attr(r, &name, val, vlen) < 0 || name != want)
		return -EPROTO;
	return 0;
}

/* Extensions after the required attributes must be ignored (RFC 5802 section 7) but still
 * be well-formed, and "m" must fail authentication. */
int scram_skip_extensions(struct scram_reader *r)
{
	while (r->p < r->end) {
		char name;
		const char *val;
		size_t vlen;
		if (scram_read_attr(r, &name, &val, &vlen) < 0 || name == 'm')
			return -EPROTO;
	}
	return 0;
}

/* A SASLname (RFC 5802 section 5.1): ',' and '=' are escaped as "=2C" and "=3D". */
static int append_saslname(char *out, size_t cap, size_t *len, const char *name)
{
	for (const char *s = name; *s; s++) {
		const char *piece = *s == ',' ? "=2C" : *s == '=' ? "=3D" : NULL;
		size_t n = piece ? 3 : 1;
		if (*len + n >= cap)
			return -EINVAL;
		memcpy(out + *len, piece ? piece : s, n);
		*len += n;
	}
	out[*len] = '\0';
	return 0;
}

static int scram_setup(struct scram_client *sc, const char *user, const char *password,
		       const char *nonce)
{
	memset(sc, 0, sizeof(*sc));

	/* No SASLprep (RFC 4013): the password bytes are used as they are. libpq falls back to the
	 * raw password when SASLprep fails, and SASLprep leaves printable ASCII unchanged, so
	 * for ASCII passwords this is exactly what PostgreSQL expects. A non-ASCII password that
	 * SASLprep would normalise differently fails to log in rather than silently succeeding. */
	size_t plen = strlen(password);
	if (plen >= sizeof(sc->password))
		return -EINVAL;
	memcpy(sc->password, password, plen + 1);

	size_t nlen = strlen(nonce);
	if (nlen == 0 || nlen >= sizeof(sc->client_nonce))
		goto err_clear;
	for (size_t i = 0; i < nlen; i++)
		if (!scram_nonce_char_ok(nonce[i]))
			goto err_clear;
	memcpy(sc->client_nonce, nonce, nlen + 1);

	/* client-first-message-bare is fixed from here on: the AuthMessage needs it verbatim. */
	size_t len = 2;
	memcpy(sc->client_first_bare, "n=", 3);
	if (append_saslname(sc->client_first_bare, sizeof(sc->client_first_bare), &len, user) < 0)
		goto err_clear;
	int n = snprintf(sc->client_first_bare + len, sizeof(sc->client_first_bare) - len, ",r=%s",
			 sc->client_nonce);
	if (n < 0 || (size_t)n >= sizeof(sc->client_first_bare) - len)
		goto err_clear;

	sc->state = SCRAM_NONCE_READY;
	return 0;

err_clear:
	scram_client_clear(sc);
	return -EINVAL;
}

int scram_client_init(struct scram_client *sc, const char *password)
{
	uint8_t raw[SCRAM_NONCE_LEN];
	char nonce[sizeof(sc->client_nonce)];

	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return -EIO;
	if (scram_b64_encode(raw, sizeof(raw), nonce, sizeof(nonce)) < 0)
		return -EINVAL; /* SCRAM_NONCE_LEN too large for client_nonce: a build-time mistake */
	/* PostgreSQL ignores the SCRAM username and uses the one from the startup packet; libpq
	 * sends "n=" too. */
	return scram_setup(sc, "", password, nonce);
}

int scram_client_init_with_nonce(struct scram_client *sc, const char *user, const char *password,
				 const char *nonce)
{
	return scram_setup(sc, user, password, nonce);
}

int scram_client_init_with_keys(struct scram_client *sc, const uint8_t client_key[SCRAM_KEY_LEN],
				const uint8_t server_key[SCRAM_KEY_LEN], const uint8_t *salt,
				size_t salt_len, int iterations)
{
	if (salt_len == 0 || salt_len > SCRAM_SALT_MAX || iterations < 1 ||
	    iterations > SCRAM_ITER_MAX)
		return -EINVAL;
	int rc = scram_client_init(sc, "");
	if (rc < 0)
		return rc;
	memcpy(sc->client_key, client_key, SCRAM_KEY_LEN);
	memcpy(sc->server_key, server_key, SCRAM_KEY_LEN);
	memcpy(sc->salt, salt, salt_len);
	sc->salt_len = salt_len;
	sc->iterations = iterations;
	sc->have_keys = true;
	return 0;
}

int scram_client_first(struct scram_client *sc, char *out, size_t cap)
{
	if (sc->state != SCRAM_NONCE_READY && sc->state != SCRAM_FIRST_SENT)
		return -EINVAL;
	int n = snprintf(out, cap, SCRAM_GS2_HEADER "%s", sc->client_first_bare);
	if (n < 0 || (size_t)n >= cap)
		return -ENOSPC;
	sc->state = SCRAM_FIRST_SENT;
	return n;
}

int scram_hmac_sha256(const uint8_t *key, size_t klen, const void *data, size_t dlen,
		       uint8_t out[SCRAM_KEY_LEN])
{
	unsigned int olen = 0;
	if (!HMAC(EVP_sha256(), key, (int)klen, data, dlen, out, &olen) || olen != SCRAM_KEY_LEN)
		return -EIO;
	return 0;
}

int scram_sha256(const void *data, size_t len, uint8_t out[SCRAM_KEY_LEN])
{
	unsigned int dlen = 0;
	if (EVP_Digest(data, len, out, &dlen, EVP_sha256(), NULL) != 1 || dlen != SCRAM_KEY_LEN)
		return -EIO;
	return 0;
}

/* The parsed server-first-message; pointers into sc->server_first. */
struct server_first {
	const char *nonce;
	size_t nonce_len;
	uint8_t salt[SCRAM_MSG_MAX]; /* base64 decodes to 3/4 of its length: always fits */
	size_t salt_len;
	int iterations;
};

static int parse_server_first(const struct scram_client *sc, size_t len, struct server_first *sf)
{
	struct scram_reader r = { sc->server_first, sc->server_first + len };
	const char *val;
	size_t vlen;

	/* An "m=" first is the reserved mandatory extension: scram_expect_attr refuses it as "not r". */
	if (scram_expect_attr(&r, 'r', &val, &vlen) < 0)
		return -EPROTO;
	size_t cn_len = strlen(sc->client_nonce);
	if (vlen <= cn_len || memcmp(val, sc->client_nonce, cn_len) != 0)
		return -EPROTO;
	for (size_t i = 0; i < vlen; i++)
		if (!scram_nonce_char_ok(val[i]))
			return -EPROTO;
	sf->nonce = val;
	sf->nonce_len = vlen;

	if (scram_expect_attr(&r, 's', &val, &vlen) < 0)
		return -EPROTO;
	int n = scram_b64_decode(val, vlen, sf->salt, sizeof(sf->salt));
	if (n <= 0)
		return -EPROTO;
	sf->salt_len = (size_t)n;

	if (scram_expect_attr(&r, 'i', &val, &vlen) < 0)
		return -EPROTO;
	long iter = 0;
	for (size_t i = 0; i < vlen; i++) {
		if (val[i] < '0' || val[i] > '9')
			return -EPROTO;
		iter = iter * 10 + (val[i] - '0');
		if (iter > SCRAM_ITER_MAX)
			return -EPROTO;
	}
	if (iter < 1)
		return -EPROTO;
	sf->iterations = (int)iter;

	return scram_skip_extensions(&r);
}

int scram_client_final(struct scram_client *sc, const char *server_first, size_t len, char *out,
		       size_t cap)
{
	struct server_first sf;
	uint8_t client_key[SCRAM_KEY_LEN], stored_key[SCRAM_KEY_LEN], client_sig[SCRAM_KEY_LEN];
	uint8_t server_key[SCRAM_KEY_LEN], proof[SCRAM_KEY_LEN];
	char auth_message[sizeof(sc->client_first_bare) + 2 * SCRAM_MSG_MAX];
	char proof_b64[SCRAM_KEY_B64_LEN + 1];
	int rc = -EPROTO;

	if (sc->state != SCRAM_FIRST_SENT)
		return -EINVAL;
	/* The message arrives as a length-delimited SASL payload: no NUL inside, and it must fit
	 * the copy the AuthMessage is built from. */
	if (len == 0 || len >= sizeof(sc->server_first) || memchr(server_first, '\0', len))
		goto err_fail;
	memcpy(sc->server_first, server_first, len);
	sc->server_first[len] = '\0';
	if (parse_server_first(sc, len, &sf) < 0)
		goto err_fail;
	/* Passthrough keys belong to one salt and iteration count; the server's verifier must be
	 * that one, or the proof would be wrong and the server's error would be misleading. */
	if (sc->have_keys && (sf.salt_len != sc->salt_len || sf.iterations != sc->iterations ||
			      memcmp(sf.salt, sc->salt, sc->salt_len) != 0))
		goto err_fail;

	int n = snprintf(sc->client_final_without_proof, sizeof(sc->client_final_without_proof),
			 "c=" SCRAM_GS2_HEADER_B64 ",r=%.*s", (int)sf.nonce_len, sf.nonce);
	if (n < 0 || (size_t)n >= sizeof(sc->client_final_without_proof))
		goto err_fail;
	size_t final_len = (size_t)n + strlen(",p=") + SCRAM_KEY_B64_LEN;
	/* Our client-final must stay within SCRAM_MSG_MAX too; only an absurd server nonce
	 * (hundreds of bytes) gets here. */
	if (final_len >= SCRAM_MSG_MAX)
		goto err_fail;
	if (final_len >= cap)
		return -ENOSPC; /* state unchanged: the caller may retry with more room */

	n = snprintf(auth_message, sizeof(auth_message), "%s,%s,%s", sc->client_first_bare,
		     sc->server_first, sc->client_final_without_proof);
	if (n < 0 || (size_t)n >= sizeof(auth_message))
		goto err_fail; /* cannot happen: each part is bounded by its buffer */
	size_t am_len = (size_t)n;

	rc = -EIO;
	if (sc->have_keys) {
		memcpy(client_key, sc->client_key, SCRAM_KEY_LEN);
		memcpy(server_key, sc->server_key, SCRAM_KEY_LEN);
	} else if (PKCS5_PBKDF2_HMAC(sc->password, (int)strlen(sc->password), sf.salt,
				     (int)sf.salt_len, sf.iterations, EVP_sha256(), SCRAM_KEY_LEN,
				     sc->salted_password) != 1 ||
		   scram_hmac_sha256(sc->salted_password, SCRAM_KEY_LEN, "Client Key", 10,
				     client_key) < 0 ||
		   scram_hmac_sha256(sc->salted_password, SCRAM_KEY_LEN, "Server Key", 10,
				     server_key) < 0) {
		goto cleanse;
	}
	if (scram_sha256(client_key, SCRAM_KEY_LEN, stored_key) < 0 ||
	    scram_hmac_sha256(stored_key, SCRAM_KEY_LEN, auth_message, am_len, client_sig) < 0 ||
	    scram_hmac_sha256(server_key, SCRAM_KEY_LEN, auth_message, am_len, sc->server_signature) < 0)
		goto cleanse;
	for (size_t i = 0; i < SCRAM_KEY_LEN; i++)
		proof[i] = client_key[i] ^ client_sig[i];
	if (scram_b64_encode(proof, sizeof(proof), proof_b64, sizeof(proof_b64)) < 0)
		goto cleanse;

	n = snprintf(out, cap, "%s,p=%s", sc->client_final_without_proof, proof_b64);
	if (n < 0 || (size_t)n >= cap) {
		rc = -ENOSPC; /* checked above; kept so a future edit cannot overflow out */
		goto cleanse;
	}
	rc = n;
	sc->state = SCRAM_FINAL_SENT;

cleanse:
	OPENSSL_cleanse(client_key, sizeof(client_key));
	OPENSSL_cleanse(stored_key, sizeof(stored_key));
	OPENSSL_cleanse(client_sig, sizeof(client_sig));
	OPENSSL_cleanse(server_key, sizeof(server_key));
	OPENSSL_cleanse(proof, sizeof(proof));
	if (rc >= 0)
		return rc;
err_fail:
	sc->state = SCRAM_FAILED;
	return rc;
}

int scram_client_verify_final(struct scram_client *sc, const char *server_final, size_t len)
{
	uint8_t sig[SCRAM_KEY_LEN + 3]; /* room to notice a signature that is too long */
	const char *val;
	size_t vlen;

	if (sc->state != SCRAM_FINAL_SENT)
		return -EINVAL;
	sc->state = SCRAM_FAILED;
	if (len == 0 || len >= SCRAM_MSG_MAX || memchr(server_final, '\0', len))
		return -EPROTO;

	/* "e=..." (a server error) fails here too: only "v=" is accepted first. */
	struct scram_reader r = { server_final, server_final + len };
	if (scram_expect_attr(&r, 'v', &val, &vlen) < 0 || scram_skip_extensions(&r) < 0)
		return -EPROTO;
	int n = scram_b64_decode(val, vlen, sig, sizeof(sig));
	if (n != SCRAM_KEY_LEN || CRYPTO_memcmp(sig, sc->server_signature, SCRAM_KEY_LEN) != 0)
		return -EPROTO;
	sc->state = SCRAM_VERIFIED;
	return 0;
}

void scram_client_clear(struct scram_client *sc)
{
	OPENSSL_cleanse(sc, sizeof(*sc));
}

static void hex_encode(const uint8_t *in, size_t n, char *out)
{
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hex[in[i] >> 4];
		out[2 * i + 1] = hex[in[i] & 15];
	}
	out[2 * n] = '\0';
}

/* md5 over two pieces, as lowercase hex. 0 or -EIO (md5 unavailable, e.g. a FIPS provider). */
int scram_md5_hex(const void *a, size_t alen, const void *b, size_t blen, char out[33])
{
	uint8_t md[16];
	unsigned int mdlen = 0;
	int rc = -EIO;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (!ctx)
		return -EIO;
	if (EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1 && EVP_DigestUpdate(ctx, a, alen) == 1 &&
	    EVP_DigestUpdate(ctx, b, blen) == 1 && EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 &&
	    mdlen == sizeof(md)) {
		hex_encode(md, sizeof(md), out);
		rc = 0;
	}
	EVP_MD_CTX_free(ctx);
	OPENSSL_cleanse(md, sizeof(md));
	return rc;
}

void auth_md5_response(const char *user, const char *password, const uint8_t salt[4], char out[36])
{
	char inner[33], outer[33];

	out[0] = '\0';
	if (scram_md5_hex(password, strlen(password), user, strlen(user), inner) == 0 &&
	    scram_md5_hex(inner, 32, salt, 4, outer) == 0) {
		memcpy(out, "md5", 3);
		memcpy(out + 3, outer, 33);
	}
	OPENSSL_cleanse(inner, sizeof(inner));
	OPENSSL_cleanse(outer, sizeof(outer));
}

void auth_md5_response_from_hash(const char *stored, const uint8_t salt[4], char out[36])
{
	char outer[33];

	out[0] = '\0';
	/* stored is "md5" + md5hex(password || user): the inner step is already done. */
	if (strlen(stored) != 35 || strncmp(stored, "md5", 3) != 0)
		return;
	if (scram_md5_hex(stored + 3, 32, salt, 4, outer) == 0) {
		memcpy(out, "md5", 3);
		memcpy(out + 3, outer, 33);
	}
	OPENSSL_cleanse(outer, sizeof(outer));
}

void auth_md5_hash(const char *user, const char *password, char out[36])
{
	char inner[33];

	out[0] = '\0';
	if (scram_md5_hex(password, strlen(password), user, strlen(user), inner) == 0) {
		memcpy(out, "md5", 3);
		memcpy(out + 3, inner, 33);
	}
	OPENSSL_cleanse(inner, sizeof(inner));
}
