/* SCRAM-SHA-256 server side and md5 check: tusk's own client against the server, a verifier
 * made by real PostgreSQL, channel binding, passthrough of the recovered ClientKey, mock
 * verifiers for unknown users, and the messages a hostile client could send instead. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "auth/scram.h"
#include "auth/scram_int.h"
#include "auth/scram_server.h"

/* From PostgreSQL 15 itself: initdb a scratch cluster, SET password_encryption='scram-sha-256';
 * CREATE ROLE x PASSWORD 'pencil'; SELECT rolpassword FROM pg_authid WHERE rolname='x'. */
#define PG_VERIFIER                                                                    \
	"SCRAM-SHA-256$4096:H5kvMk1QZncDfFehfX7eRw==$gmImGcXl3My+fuFC8xBJfhC6jd5KcfN4eZwPnMB2BYk=" \
	":VGurz7t/2jyw5mbnQewFw66m1F0xocPwASFwXoDPqS4="

/* python3: 'md5' + hashlib.md5(hashlib.md5(b'pencilalice').hexdigest().encode() +
 * bytes([1, 2, 3, 4])).hexdigest() */
#define MD5_KNOWN "md537cba386e8b90f1e3941a0e792722253"

static const uint8_t cb_data[32] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
				     17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32 };

/* tusk's client against the server; returns scram_server_final's result and leaves the client's
 * verdict on the server-final in *client_rc. */
static int client_exchange(struct scram_server *st, struct scram_client *sc, int *client_rc)
{
	char buf[SCRAM_MSG_MAX], buf2[SCRAM_MSG_MAX];
	int n = scram_client_first(sc, buf, sizeof(buf));
	assert_true(n > 0);
	n = scram_server_first(st, buf, (size_t)n, buf2, sizeof(buf2));
	assert_true(n > 0);
	n = scram_client_final(sc, buf2, (size_t)n, buf, sizeof(buf));
	if (n < 0) {
		*client_rc = n;
		return n;
	}
	int rc = scram_server_final(st, buf, (size_t)n, buf2, sizeof(buf2));
	*client_rc = rc > 0 ? scram_client_verify_final(sc, buf2, (size_t)rc) : -1;
	return rc;
}

static int login(const struct scram_verifier *v, const char *password)
{
	struct scram_server st;
	struct scram_client sc;
	int client_rc;
	assert_int_equal(scram_server_init(&st, v, NULL, 0), 0);
	assert_int_equal(scram_client_init(&sc, password), 0);
	int rc = client_exchange(&st, &sc, &client_rc);
	if (rc > 0)
		assert_int_equal(client_rc, 0);
	scram_server_clear(&st);
	scram_client_clear(&sc);
	return rc > 0 ? 0 : rc;
}

/* A hand-made client for what scram_client does not do (channel binding, odd messages):
 * the client-final for server_first, given the c= value and any extra attributes before p=. */
static int craft_final(const char *password, const char *bare, const char *server_first,
		       const char *c_b64, const char *extra, char *out, size_t cap)
{
	char nonce[SCRAM_MSG_MAX], salt_b64[200], am[6 * SCRAM_MSG_MAX], without[3 * SCRAM_MSG_MAX];
	uint8_t salt[SCRAM_SALT_MAX], salted[32], ck[32], sk[32], sig[32], proof[32];
	char proof_b64[64];
	int iter;
	unsigned int l;

	assert_int_equal(sscanf(server_first, "r=%1023[^,],s=%199[^,],i=%d", nonce, salt_b64, &iter), 3);
	int slen = scram_b64_decode(salt_b64, strlen(salt_b64), salt, sizeof(salt));
	assert_true(slen > 0);
	snprintf(without, sizeof(without), "c=%s,r=%s%s", c_b64, nonce, extra);
	snprintf(am, sizeof(am), "%s,%s,%s", bare, server_first, without);
	assert_int_equal(PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, slen, iter,
					   EVP_sha256(), 32, salted), 1);
	assert_non_null(HMAC(EVP_sha256(), salted, 32, (const uint8_t *)"Client Key", 10, ck, &l));
	assert_int_equal(EVP_Digest(ck, 32, sk, &l, EVP_sha256(), NULL), 1);
	assert_non_null(HMAC(EVP_sha256(), sk, 32, (const uint8_t *)am, strlen(am), sig, &l));
	for (int i = 0; i < 32; i++)
		proof[i] = ck[i] ^ sig[i];
	assert_true(scram_b64_encode(proof, 32, proof_b64, sizeof(proof_b64)) > 0);
	return snprintf(out, cap, "%s,p=%s", without, proof_b64);
}

/* One hand-made exchange: gs2 header, c= value, password; returns the server's verdict at the
 * first failing step (or the server-final length). */
static int crafted_login(const struct scram_verifier *v, const uint8_t *cb, size_t cb_len,
			 const char *gs2, const char *c_b64, const char *password)
{
	struct scram_server st;
	char first[SCRAM_MSG_MAX], sfirst[SCRAM_MSG_MAX], final[SCRAM_MSG_MAX], out[SCRAM_MSG_MAX];
	const char *bare = "n=,r=fyko+d2lbbFgONRv9qkxdawL";

	assert_int_equal(scram_server_init(&st, v, cb, cb_len), 0);
	snprintf(first, sizeof(first), "%s%s", gs2, bare);
	int n = scram_server_first(&st, first, strlen(first), sfirst, sizeof(sfirst));
	if (n < 0)
		return n;
	n = craft_final(password, bare, sfirst, c_b64, "", final, sizeof(final));
	n = scram_server_final(&st, final, (size_t)n, out, sizeof(out));
	scram_server_clear(&st);
	return n;
}

static void test_round_trip_plaintext_verifier(void **state)
{
	(void)state;
	struct scram_verifier v;
	assert_int_equal(scram_verifier_from_password(&v, "pencil", SCRAM_DEFAULT_ITERATIONS), 0);
	assert_int_equal(v.iterations, 4096);
	assert_int_equal(v.salt_len, 16);
	assert_false(v.doomed);
	assert_int_equal(login(&v, "pencil"), 0);
	assert_int_equal(login(&v, "pencil "), -EPERM);
	assert_int_equal(login(&v, ""), -EPERM);
}

static void test_format_parse_round_trip(void **state)
{
	(void)state;
	struct scram_verifier v, w;
	char text[SCRAM_VERIFIER_MAX];
	assert_int_equal(scram_verifier_from_password(&v, "s3cret", SCRAM_DEFAULT_ITERATIONS), 0);
	int n = scram_verifier_format(&v, text, sizeof(text));
	assert_true(n > 0);
	assert_int_equal(scram_verifier_parse(&w, text, (size_t)n), 0);
	assert_memory_equal(&v, &w, sizeof(v));
	assert_int_equal(login(&w, "s3cret"), 0);
	assert_int_equal(login(&w, "S3cret"), -EPERM);
	assert_int_equal(scram_verifier_format(&v, text, 20), -ENOSPC);
}

static void test_postgres_verifier(void **state)
{
	(void)state;
	struct scram_verifier v, w;
	char text[SCRAM_VERIFIER_MAX];
	assert_int_equal(scram_verifier_parse(&v, PG_VERIFIER, strlen(PG_VERIFIER)), 0);
	assert_int_equal(v.iterations, 4096);
	assert_int_equal(v.salt_len, 16);
	/* Our derivation from the same salt is byte for byte PostgreSQL's. */
	assert_int_equal(scram_verifier_from_password_salt(&w, "pencil", v.salt, v.salt_len, 4096), 0);
	assert_int_equal(scram_verifier_format(&w, text, sizeof(text)), (int)strlen(PG_VERIFIER));
	assert_string_equal(text, PG_VERIFIER);
	assert_int_equal(login(&v, "pencil"), 0);
	assert_int_equal(login(&v, "pencil2"), -EPERM);
}

static void test_verifier_parse_rejects(void **state)
{
	(void)state;
	static const char *bad[] = {
		"",
		"md5a3556571e93b0d20722ba62be61e8c2d",
		"pencil",
		"SCRAM-SHA-1$4096:H5kvMk1QZncDfFehfX7eRw==$gmImGcXl3My+fuFC8xBJfhC6jd5KcfN4eZwPnMB2BYk=:VGurz7t/2jyw5mbnQewFw66m1F0xocPwASFwXoDPqS4=",
		"SCRAM-SHA-256$0:H5kvMk1QZncDfFehfX7eRw==$gmImGcXl3My+fuFC8xBJfhC6jd5KcfN4eZwPnMB2BYk=:VGurz7t/2jyw5mbnQewFw66m1F0xocPwASFwXoDPqS4=",
		"SCRAM-SHA-256$99999999:H5kvMk1QZncDfFehfX7eRw==$gmImGcXl3My+fuFC8xBJfhC6jd5KcfN4eZwPnMB2BYk=:VGurz7t/2jyw5mbnQewFw66m1F0xocPwASFwXoDPqS4=",
		"SCRAM-SHA-256$-1:H5kvMk1QZncDfFehfX7eRw==$gmImGcXl3My+fuFC8xBJfhC6jd5KcfN4eZwPnMB2BYk=:VGurz7t/2jyw5mbnQewFw66m1F0xocPwASFwXoDPqS4=",
		"SCRAM-SHA-256$:H5kvMk1QZncDfFehfX7eRw==$gmImGcXl3My+fuFC8xBJfhC6jd5KcfN4eZwPnMB2BYk=:VGurz7t/2jyw5mbnQewFw66m1F0xocPwASFwXoDPqS4=",
		"SCRAM-SHA-256$4096:$gmImGcXl3My+fuFC8xBJfhC6jd5KcfN4eZwPnMB2BYk=:VGurz7t/2jyw5mbnQewFw66m1F0xocPwASFwXoDPqS4=",
		"SCRAM-SHA-256$4096:H5kvMk1QZncDfFehfX7eR!==$gmImGcXl3My+fuFC8xBJfhC6jd5KcfN4eZwPnMB2BYk=:VGurz7t/2jyw5mbnQewFw66m1F0xocPwASFwXoDPqS4=",
		"SCRAM-SHA-256$4096:H5kvMk1QZncDfFehfX7eRw==$gmImGcXl3My+fuFC8xBJfhC6jd5KcfN4eZwPnMB2BY=:VGurz7t/2jyw5mbnQewFw66m1F0xocPwASFwXoDPqS4=",
		"SCRAM-SHA-256$4096:H5kvMk1QZncDfFehfX7eRw==$gmImGcXl3My+fuFC8xBJfhC6jd5KcfN4eZwPnMB2BYk=",
		"SCRAM-SHA-256$4096:H5kvMk1QZncDfFehfX7eRw==$gmImGcXl3My+fuFC8xBJfhC6jd5KcfN4eZwPnMB2BYk=:",
		"SCRAM-SHA-256$4096:H5kvMk1QZncDfFehfX7eRw==$gmImGcXl3My+fuFC8xBJfhC6jd5KcfN4eZwPnMB2BYk=:VGurz7t/2jyw5mbnQewFw66m1F0xocPwASFwXoDPqS4=x",
		"SCRAM-SHA-256$4096:H5kvMk1QZncDfFehfX7eRw==$gmImGcXl3My+fuFC8xBJfhC6jd5KcfN4eZwPnMB2BYk=:VGurz7t/2jyw5mbnQewFw66m1F0xocPwASFwXoDPqS4=:",
		"SCRAM-SHA-256$4096:H5kvMk1QZncDfFehfX7eRw==$gmImGcXl3My+fuFC8xBJfhC6jd5KcfN4eZwPnMB2BYk=$VGurz7t/2jyw5mbnQewFw66m1F0xocPwASFwXoDPqS4=",
		/* salt over SCRAM_SALT_MAX (96 bytes) */
		"SCRAM-SHA-256$4096:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA$gmImGcXl3My+fuFC8xBJfhC6jd5KcfN4eZwPnMB2BYk=:VGurz7t/2jyw5mbnQewFw66m1F0xocPwASFwXoDPqS4=",
	};
	struct scram_verifier v;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (scram_verifier_parse(&v, bad[i], strlen(bad[i])) != -EINVAL)
			fail_msg("accepted verifier %zu: %s", i, bad[i]);
	}
	/* An embedded NUL, and length bounded by the caller's len, not the string. */
	char nul[] = PG_VERIFIER;
	nul[20] = '\0';
	assert_int_equal(scram_verifier_parse(&v, nul, sizeof(nul) - 1), -EINVAL);
	assert_int_equal(scram_verifier_parse(&v, PG_VERIFIER, strlen(PG_VERIFIER) - 1), -EINVAL);
	/* Bad arguments for building one. */
	uint8_t salt[SCRAM_SALT_MAX + 1] = { 0 };
	assert_int_equal(scram_verifier_from_password_salt(&v, "x", salt, 0, 4096), -EINVAL);
	assert_int_equal(scram_verifier_from_password_salt(&v, "x", salt, sizeof(salt), 4096), -EINVAL);
	assert_int_equal(scram_verifier_from_password_salt(&v, "x", salt, 16, 0), -EINVAL);
	char longpw[1100];
	memset(longpw, 'a', sizeof(longpw) - 1);
	longpw[sizeof(longpw) - 1] = '\0';
	assert_int_equal(scram_verifier_from_password(&v, longpw, SCRAM_DEFAULT_ITERATIONS), -EINVAL);
}

static void test_channel_binding(void **state)
{
	(void)state;
	struct scram_verifier v;
	char c_b64[200];
	uint8_t hdr_cb[23 + 2 + 32];
	uint8_t other_cb[32];

	assert_int_equal(scram_verifier_from_password(&v, "pencil", SCRAM_DEFAULT_ITERATIONS), 0);
	memcpy(hdr_cb, "p=tls-server-end-point,,", 24);
	memcpy(hdr_cb + 24, cb_data, 32);
	assert_true(scram_b64_encode(hdr_cb, 24 + 32, c_b64, sizeof(c_b64)) > 0);

	/* Matching binding data passes; a wrong password still fails as such. */
	assert_true(crafted_login(&v, cb_data, 32, "p=tls-server-end-point,,", c_b64, "pencil") > 0);
	assert_int_equal(crafted_login(&v, cb_data, 32, "p=tls-server-end-point,,", c_b64, "x"),
			 -EPERM);
	/* The client saw another certificate (a man in the middle): mismatch. */
	memcpy(other_cb, cb_data, 32);
	other_cb[31] ^= 1;
	assert_int_equal(crafted_login(&v, other_cb, 32, "p=tls-server-end-point,,", c_b64, "pencil"),
			 -EPROTO);
	/* Binding data of another length. */
	assert_int_equal(crafted_login(&v, cb_data, 31, "p=tls-server-end-point,,", c_b64, "pencil"),
			 -EPROTO);
	/* c= without the binding data, or naming another header than the first message did. */
	assert_int_equal(crafted_login(&v, cb_data, 32, "p=tls-server-end-point,,",
				       "cD10bHMtc2VydmVyLWVuZC1wb2ludCws", "pencil"),
			 -EPROTO);
	assert_int_equal(crafted_login(&v, NULL, 0, "n,,", "eSws", "pencil"), -EPROTO);
	assert_int_equal(crafted_login(&v, NULL, 0, "y,,", "biws", "pencil"), -EPROTO);

	/* "y": the client could bind but thinks we cannot. A downgrade when we can. */
	assert_int_equal(crafted_login(&v, cb_data, 32, "y,,", "eSws", "pencil"), -EPROTO);
	assert_true(crafted_login(&v, NULL, 0, "y,,", "eSws", "pencil") > 0);
	/* "p=" without TLS, or another binding type. */
	assert_int_equal(crafted_login(&v, NULL, 0, "p=tls-server-end-point,,", c_b64, "pencil"),
			 -EPROTO);
	assert_int_equal(crafted_login(&v, cb_data, 32, "p=tls-unique,,", c_b64, "pencil"), -EPROTO);
	/* "n" on TLS: the client chose not to bind (channel_binding=disable); PostgreSQL allows it. */
	assert_true(crafted_login(&v, cb_data, 32, "n,,", "biws", "pencil") > 0);
	/* An authzid is not supported. */
	assert_int_equal(crafted_login(&v, NULL, 0, "n,a=bob,", "biws", "pencil"), -EPROTO);

	/* Init bounds. */
	struct scram_server st;
	uint8_t big[SCRAM_CB_MAX + 1] = { 0 };
	assert_int_equal(scram_server_init(&st, &v, big, sizeof(big)), -EINVAL);
	assert_int_equal(scram_server_init(&st, &v, NULL, 4), -EINVAL);
}

static void test_passthrough(void **state)
{
	(void)state;
	struct scram_verifier v;
	struct scram_server st;
	struct scram_client sc;
	uint8_t ck[SCRAM_KEY_LEN], expect[SCRAM_KEY_LEN], salted[SCRAM_KEY_LEN];
	unsigned int l;
	int client_rc;

	assert_int_equal(scram_verifier_parse(&v, PG_VERIFIER, strlen(PG_VERIFIER)), 0);
	assert_int_equal(scram_server_init(&st, &v, NULL, 0), 0);
	assert_int_equal(scram_server_client_key(&st, ck), -EINVAL);
	assert_int_equal(scram_client_init(&sc, "pencil"), 0);
	assert_true(client_exchange(&st, &sc, &client_rc) > 0);
	assert_int_equal(client_rc, 0);
	assert_int_equal(scram_server_client_key(&st, ck), 0);
	scram_server_clear(&st);
	scram_client_clear(&sc);

	/* The recovered ClientKey is HMAC(SaltedPassword, "Client Key"). */
	assert_int_equal(PKCS5_PBKDF2_HMAC("pencil", 6, v.salt, (int)v.salt_len, v.iterations,
					   EVP_sha256(), 32, salted), 1);
	assert_non_null(HMAC(EVP_sha256(), salted, 32, (const uint8_t *)"Client Key", 10, expect, &l));
	assert_memory_equal(ck, expect, SCRAM_KEY_LEN);

	/* With it, tusk logs in to "the server" (a second scram_server with the same verifier)
	 * without the password, and checks that server's signature. */
	assert_int_equal(scram_server_init(&st, &v, NULL, 0), 0);
	assert_int_equal(scram_client_init_with_keys(&sc, ck, v.server_key, v.salt, v.salt_len,
						     v.iterations), 0);
	assert_true(client_exchange(&st, &sc, &client_rc) > 0);
	assert_int_equal(client_rc, 0);
	scram_server_clear(&st);
	scram_client_clear(&sc);

	/* A server that holds a ServerKey other than ours is not believed. */
	uint8_t wrong_sk[SCRAM_KEY_LEN];
	memcpy(wrong_sk, v.server_key, SCRAM_KEY_LEN);
	wrong_sk[0] ^= 1;
	assert_int_equal(scram_server_init(&st, &v, NULL, 0), 0);
	assert_int_equal(scram_client_init_with_keys(&sc, ck, wrong_sk, v.salt, v.salt_len,
						     v.iterations), 0);
	assert_true(client_exchange(&st, &sc, &client_rc) > 0);
	assert_int_equal(client_rc, -EPROTO);
	scram_server_clear(&st);
	scram_client_clear(&sc);

	/* The server's verifier has another salt or iteration count: -EPROTO before any proof. */
	struct scram_verifier other;
	assert_int_equal(scram_verifier_from_password(&other, "pencil", SCRAM_DEFAULT_ITERATIONS), 0);
	assert_int_equal(scram_server_init(&st, &other, NULL, 0), 0);
	assert_int_equal(scram_client_init_with_keys(&sc, ck, v.server_key, v.salt, v.salt_len,
						     v.iterations), 0);
	assert_int_equal(client_exchange(&st, &sc, &client_rc), -EPROTO);
	scram_server_clear(&st);
	scram_client_clear(&sc);

	assert_int_equal(scram_verifier_from_password_salt(&other, "pencil", v.salt, v.salt_len, 4097), 0);
	assert_int_equal(scram_server_init(&st, &other, NULL, 0), 0);
	assert_int_equal(scram_client_init_with_keys(&sc, ck, v.server_key, v.salt, v.salt_len,
						     v.iterations), 0);
	assert_int_equal(client_exchange(&st, &sc, &client_rc), -EPROTO);
	scram_server_clear(&st);
	scram_client_clear(&sc);

	/* Bad arguments. */
	assert_int_equal(scram_client_init_with_keys(&sc, ck, v.server_key, v.salt, 0, 4096), -EINVAL);
	assert_int_equal(scram_client_init_with_keys(&sc, ck, v.server_key, v.salt, 65, 4096), -EINVAL);
	assert_int_equal(scram_client_init_with_keys(&sc, ck, v.server_key, v.salt, 16, 0), -EINVAL);
}

/* Server-first for a fixed client-first; for the client-final tests. */
#define BARE "n=,r=fyko+d2lbbFgONRv9qkxdawL"
static int start(struct scram_server *st, const struct scram_verifier *v, char *sfirst)
{
	assert_int_equal(scram_server_init(st, v, NULL, 0), 0);
	return scram_server_first(st, "n,," BARE, strlen("n,," BARE), sfirst, SCRAM_MSG_MAX);
}

static void test_client_first_malformed(void **state)
{
	(void)state;
	struct scram_verifier v;
	struct scram_server st;
	char out[SCRAM_MSG_MAX];
	static const char *bad[] = {
		"",
		"n",
		"n,",
		"n,,",
		"x,,n=,r=abc",
		"n,,r=abc",
		"n,,n=,",
		"n,,n=",
		"n,,n=,r=",
		"n,,n=,s=abc",
		"n,,m=ext,n=,r=abc",
		"n,,n=,r=abc,m=ext",
		"n,,n=,r=abc,",
		"n,,n=,r=abc,x",
		"n,,n=,r=ab c",
		"n,,n=,r=ab\x7f",
		"n,a=bob,n=,r=abc",
		"nn,,n=,r=abc",
		"y,n=,r=abc",
	};
	assert_int_equal(scram_verifier_from_password_salt(&v, "pencil", (const uint8_t *)"0123456789abcdef",
							   16, 4096), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(scram_server_init(&st, &v, NULL, 0), 0);
		if (scram_server_first(&st, bad[i], strlen(bad[i]), out, sizeof(out)) != -EPROTO)
			fail_msg("accepted client-first %zu: %s", i, bad[i]);
		/* A failed step ends the exchange. */
		assert_int_equal(scram_server_first(&st, "n,," BARE, strlen("n,," BARE), out, sizeof(out)),
				 -EINVAL);
	}

	/* Embedded NUL, an overlong nonce, an overlong message. */
	assert_int_equal(scram_server_init(&st, &v, NULL, 0), 0);
	assert_int_equal(scram_server_first(&st, "n,,n=,r=a\0b", 11, out, sizeof(out)), -EPROTO);
	char big[SCRAM_MSG_MAX + 10];
	memcpy(big, "n,,n=,r=", 8);
	memset(big + 8, 'a', 257);
	assert_int_equal(scram_server_init(&st, &v, NULL, 0), 0);
	assert_int_equal(scram_server_first(&st, big, 8 + 257, out, sizeof(out)), -EPROTO);
	assert_int_equal(scram_server_init(&st, &v, NULL, 0), 0);
	assert_true(scram_server_first(&st, big, 8 + 256, out, sizeof(out)) > 0);
	memset(big + 8, 'a', sizeof(big) - 8);
	assert_int_equal(scram_server_init(&st, &v, NULL, 0), 0);
	assert_int_equal(scram_server_first(&st, big, sizeof(big), out, sizeof(out)), -EPROTO);

	/* Accepted: a user name (ignored), escapes in it, extensions after the nonce. */
	static const char *good[] = { "n,,n=user,r=abc", "n,,n=a=2Cb,r=abc", "n,,n=,r=abc,x=1,y=2" };
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		assert_int_equal(scram_server_init(&st, &v, NULL, 0), 0);
		int n = scram_server_first(&st, good[i], strlen(good[i]), out, sizeof(out));
		assert_true(n > 0);
		assert_int_equal(strncmp(out, "r=abc", 5), 0);
		/* client nonce + 24 characters of ours */
		assert_ptr_equal(strchr(out, ','), out + 5 + 24);
		assert_non_null(strstr(out, ",s=MDEyMzQ1Njc4OWFiY2RlZg==,i=4096"));
	}

	/* Out of room: state unchanged, a retry with room works. */
	assert_int_equal(scram_server_init(&st, &v, NULL, 0), 0);
	assert_int_equal(scram_server_first(&st, "n,," BARE, strlen("n,," BARE), out, 10), -ENOSPC);
	assert_true(scram_server_first(&st, "n,," BARE, strlen("n,," BARE), out, sizeof(out)) > 0);
	/* Out of order. */
	assert_int_equal(scram_server_first(&st, "n,," BARE, strlen("n,," BARE), out, sizeof(out)),
			 -EINVAL);
	struct scram_server zero = { 0 };
	assert_int_equal(scram_server_final(&zero, "c=biws", 6, out, sizeof(out)), -EINVAL);
}

static void test_client_final_malformed(void **state)
{
	(void)state;
	struct scram_verifier v;
	struct scram_server st;
	char sfirst[SCRAM_MSG_MAX], final[SCRAM_MSG_MAX], out[SCRAM_MSG_MAX], nonce[SCRAM_MSG_MAX];
	char msg[2 * SCRAM_MSG_MAX];
	int n;

	assert_int_equal(scram_verifier_from_password(&v, "pencil", SCRAM_DEFAULT_ITERATIONS), 0);

	/* The well-formed one first, with an extension before p= (allowed and signed). */
	assert_true(start(&st, &v, sfirst) > 0);
	n = craft_final("pencil", BARE, sfirst, "biws", ",x=ext", final, sizeof(final));
	assert_int_equal(scram_server_final(&st, final, (size_t)n, out, 10), -ENOSPC);
	assert_true(scram_server_final(&st, final, (size_t)n, out, sizeof(out)) > 0);
	assert_int_equal(scram_server_final(&st, final, (size_t)n, out, sizeof(out)), -EINVAL);

	assert_true(start(&st, &v, sfirst) > 0);
	assert_int_equal(sscanf(sfirst, "r=%1023[^,]", nonce), 1);
	const char *proof = "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
	const char *fmts[] = {
		"c=biws,r=%s,%s,x", /* something after the proof */
		"c=biws,r=%s,%s,",
		"c=biws,r=%sX,%s",  /* nonce not ours */
		"c=biws,r=%.20s,%s", /* client nonce only */
		"c=biws,r=%s",	     /* no proof */
		"c=biws,r=%s,p=",
		"c=biws,r=%s,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndV", /* bad b64 */
		"c=biws,r=%s,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ!",
		"c=biws,r=%s,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7A=", /* 31 bytes */
		"c=biws,r=%s,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQAAAA=",
		"c=biws,r=%s,m=x,%s",
		"r=%s,%s", /* no c= */
		"c=bi!s,r=%s,%s",
		"c=,r=%s,%s",
		"c=biws,%s,%s", /* no r= (the nonce lands where r= should be) */
		"c=biws,r=%s,,%s",
	};
	for (size_t i = 0; i < sizeof(fmts) / sizeof(fmts[0]); i++) {
		assert_true(start(&st, &v, sfirst) > 0);
		assert_int_equal(sscanf(sfirst, "r=%1023[^,]", nonce), 1);
		snprintf(msg, sizeof(msg), fmts[i], nonce, proof);
		if (scram_server_final(&st, msg, strlen(msg), out, sizeof(out)) != -EPROTO)
			fail_msg("accepted client-final %zu: %s", i, msg);
		assert_int_equal(scram_server_client_key(&st, (uint8_t *)out), -EINVAL);
	}
	/* A well-formed proof that is wrong: a wrong password, not a protocol error. */
	assert_true(start(&st, &v, sfirst) > 0);
	assert_int_equal(sscanf(sfirst, "r=%1023[^,]", nonce), 1);
	snprintf(msg, sizeof(msg), "c=biws,r=%s,%s", nonce, proof);
	assert_int_equal(scram_server_final(&st, msg, strlen(msg), out, sizeof(out)), -EPERM);

	/* Embedded NUL and overlong. */
	assert_true(start(&st, &v, sfirst) > 0);
	n = craft_final("pencil", BARE, sfirst, "biws", "", final, sizeof(final));
	final[3] = '\0';
	assert_int_equal(scram_server_final(&st, final, (size_t)n, out, sizeof(out)), -EPROTO);
	assert_true(start(&st, &v, sfirst) > 0);
	memset(msg, 'a', sizeof(msg));
	assert_int_equal(scram_server_final(&st, msg, sizeof(msg), out, sizeof(out)), -EPROTO);
}

static void test_mock_verifier(void **state)
{
	(void)state;
	struct scram_verifier a, a2, b;
	struct scram_server st;
	char s1[SCRAM_MSG_MAX], s2[SCRAM_MSG_MAX], final[SCRAM_MSG_MAX], out[SCRAM_MSG_MAX];

	assert_int_equal(scram_verifier_mock(&a, "ghost"), 0);
	assert_int_equal(scram_verifier_mock(&a2, "ghost"), 0);
	assert_int_equal(scram_verifier_mock(&b, "ghost2"), 0);
	assert_true(a.doomed);
	assert_memory_equal(&a, &a2, sizeof(a));
	assert_int_equal(a.salt_len, 16);
	assert_int_equal(a.iterations, 4096);
	assert_memory_not_equal(a.salt, b.salt, a.salt_len);

	/* Same salt in every exchange for the same user, like a real one; and it fails as a wrong
	 * password does, whatever the password. */
	assert_true(start(&st, &a, s1) > 0);
	assert_true(start(&st, &a, s2) > 0);
	assert_string_equal(strstr(s1, ",s="), strstr(s2, ",s="));
	assert_int_equal(login(&a, "pencil"), -EPERM);
	assert_int_equal(login(&a, ""), -EPERM);

	/* Even a proof computed "correctly" from the mock salt fails: the exchange is doomed. */
	assert_true(start(&st, &a, s1) > 0);
	int n = craft_final("pencil", BARE, s1, "biws", "", final, sizeof(final));
	assert_int_equal(scram_server_final(&st, final, (size_t)n, out, sizeof(out)), -EPERM);
	struct scram_verifier forced = a;
	struct scram_verifier real;
	assert_int_equal(scram_verifier_from_password_salt(&real, "pencil", a.salt, a.salt_len, 4096), 0);
	memcpy(forced.stored_key, real.stored_key, SCRAM_KEY_LEN);
	memcpy(forced.server_key, real.server_key, SCRAM_KEY_LEN);
	assert_int_equal(login(&forced, "pencil"), -EPERM);
	forced.doomed = false;
	assert_int_equal(login(&forced, "pencil"), 0);
}

static void test_md5_verify(void **state)
{
	(void)state;
	const uint8_t salt[4] = { 0x01, 0x02, 0x03, 0x04 };
	const uint8_t salt2[4] = { 0x01, 0x02, 0x03, 0x05 };
	char resp[36];

	auth_md5_response("alice", "pencil", salt, resp);
	assert_int_equal(strlen(resp), 35);
	/* Stored as PostgreSQL's md5 verifier: "md5" || md5hex("pencil" || "alice"). */
	/* PostgreSQL's stored md5 verifier: "md5" || md5hex("pencil" || "alice"). */
	char stored[36], inner[33];
	assert_int_equal(scram_md5_hex("pencil", 6, "alice", 5, inner), 0);
	snprintf(stored, sizeof(stored), "md5%s", inner);
	assert_true(auth_md5_verify("alice", stored, salt, resp));
	assert_true(auth_md5_verify("alice", "pencil", salt, resp));
	assert_false(auth_md5_verify("alice", "pencil2", salt, resp));
	assert_false(auth_md5_verify("bob", "pencil", salt, resp));
	assert_false(auth_md5_verify("alice", stored, salt2, resp));
	assert_false(auth_md5_verify("alice", "", salt, resp));
	assert_false(auth_md5_verify("alice", PG_VERIFIER, salt, resp));
	char shorter[36];
	memcpy(shorter, resp, 34);
	shorter[34] = '\0';
	assert_false(auth_md5_verify("alice", stored, salt, shorter));
	char longer[40];
	snprintf(longer, sizeof(longer), "%sx", resp);
	assert_false(auth_md5_verify("alice", stored, salt, longer));
	resp[10] ^= 1;
	assert_false(auth_md5_verify("alice", stored, salt, resp));
	/* Independently computed (see MD5_KNOWN). */
	assert_true(auth_md5_verify("alice", "pencil", salt, MD5_KNOWN));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip_plaintext_verifier),
		cmocka_unit_test(test_format_parse_round_trip),
		cmocka_unit_test(test_postgres_verifier),
		cmocka_unit_test(test_verifier_parse_rejects),
		cmocka_unit_test(test_channel_binding),
		cmocka_unit_test(test_passthrough),
		cmocka_unit_test(test_client_first_malformed),
		cmocka_unit_test(test_client_final_malformed),
		cmocka_unit_test(test_mock_verifier),
		cmocka_unit_test(test_md5_verify),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
