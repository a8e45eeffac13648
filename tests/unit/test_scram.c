/* SCRAM-SHA-256 client and md5 response: the RFC 7677 vector through the real code path, the
 * empty-username variant tusk actually sends, and the server messages a hostile server could
 * send instead. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "auth/scram.h"

/* RFC 7677 section 3. */
#define RFC_NONCE "rOprNGfwEbeRWgbNEkqO"
#define RFC_SERVER_NONCE RFC_NONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_SERVER_FIRST "r=" RFC_SERVER_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define RFC_CLIENT_FINAL "c=biws,r=" RFC_SERVER_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC_SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

/* The same exchange with "n=" empty, as tusk and libpq send it. Computed independently with
 * python3 (hashlib.pbkdf2_hmac, hmac, base64), AuthMessage =
 * "n=,r=rOprNGfwEbeRWgbNEkqO" "," server-first "," "c=biws,r=<server nonce>". */
#define EMPTY_USER_CLIENT_FINAL "c=biws,r=" RFC_SERVER_NONCE ",p=qvT2SWdEH5Q06albL+hjSYuUhCG7VndFyzIb7CK4n9k="
#define EMPTY_USER_SERVER_FINAL "v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg="

static void run_exchange(const char *user, const char *expect_first, const char *expect_final,
			 const char *server_final)
{
	struct scram_client sc;
	char buf[SCRAM_MSG_MAX];

	assert_int_equal(scram_client_init_with_nonce(&sc, user, "pencil", RFC_NONCE), 0);
	int n = scram_client_first(&sc, buf, sizeof(buf));
	assert_int_equal(n, (int)strlen(expect_first));
	assert_string_equal(buf, expect_first);

	n = scram_client_final(&sc, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), buf, sizeof(buf));
	assert_int_equal(n, (int)strlen(expect_final));
	assert_string_equal(buf, expect_final);

	assert_int_equal(scram_client_verify_final(&sc, server_final, strlen(server_final)), 0);
	scram_client_clear(&sc);
}

static void test_rfc7677_vector(void **state)
{
	(void)state;
	run_exchange("user", "n,,n=user,r=" RFC_NONCE, RFC_CLIENT_FINAL, RFC_SERVER_FINAL);
}

static void test_empty_username_vector(void **state)
{
	(void)state;
	run_exchange("", "n,,n=,r=" RFC_NONCE, EMPTY_USER_CLIENT_FINAL, EMPTY_USER_SERVER_FINAL);
}

static void test_saslname_escaping(void **state)
{
	(void)state;
	struct scram_client sc;
	char buf[SCRAM_MSG_MAX];
	assert_int_equal(scram_client_init_with_nonce(&sc, "a,b=c", "pw", "abc"), 0);
	assert_true(scram_client_first(&sc, buf, sizeof(buf)) > 0);
	assert_string_equal(buf, "n,,n=a=2Cb=3Dc,r=abc");
	scram_client_clear(&sc);
}

static void test_random_nonce(void **state)
{
	(void)state;
	struct scram_client a, b;
	char fa[SCRAM_MSG_MAX], fb[SCRAM_MSG_MAX];

	assert_int_equal(scram_client_init(&a, "pw"), 0);
	assert_int_equal(scram_client_init(&b, "pw"), 0);
	int n = scram_client_first(&a, fa, sizeof(fa));
	/* "n,,n=,r=" and 24 random bytes in base64. */
	assert_int_equal(n, 8 + (SCRAM_NONCE_LEN + 2) / 3 * 4);
	assert_memory_equal(fa, "n,,n=,r=", 8);
	assert_true(scram_client_first(&b, fb, sizeof(fb)) > 0);
	assert_string_not_equal(fa, fb);
	for (const char *p = fa + 8; *p; p++)
		assert_true(*p > 0x20 && *p < 0x7f && *p != ',');
	scram_client_clear(&a);
	scram_client_clear(&b);
}

static void test_password_too_long(void **state)
{
	(void)state;
	struct scram_client sc;
	char pw[2048];
	memset(pw, 'x', sizeof(pw) - 1);
	pw[sizeof(pw) - 1] = '\0';
	assert_int_equal(scram_client_init(&sc, pw), -EINVAL);
	pw[sizeof(sc.password) - 1] = '\0';
	assert_int_equal(scram_client_init(&sc, pw), 0);
	scram_client_clear(&sc);
}

static void test_bad_test_nonce(void **state)
{
	(void)state;
	struct scram_client sc;
	assert_int_equal(scram_client_init_with_nonce(&sc, "", "pw", ""), -EINVAL);
	assert_int_equal(scram_client_init_with_nonce(&sc, "", "pw", "a,b"), -EINVAL);
	assert_int_equal(scram_client_init_with_nonce(&sc, "", "pw", "a b"), -EINVAL);
}

static void test_out_of_order(void **state)
{
	(void)state;
	struct scram_client sc;
	char buf[SCRAM_MSG_MAX];
	assert_int_equal(scram_client_init_with_nonce(&sc, "", "pencil", RFC_NONCE), 0);
	assert_int_equal(scram_client_verify_final(&sc, RFC_SERVER_FINAL, strlen(RFC_SERVER_FINAL)),
			 -EINVAL);
	assert_int_equal(scram_client_final(&sc, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), buf,
					    sizeof(buf)),
			 -EINVAL);
	scram_client_clear(&sc);
}

static void test_no_space(void **state)
{
	(void)state;
	struct scram_client sc;
	char buf[SCRAM_MSG_MAX];
	assert_int_equal(scram_client_init_with_nonce(&sc, "user", "pencil", RFC_NONCE), 0);
	assert_int_equal(scram_client_first(&sc, buf, 10), -ENOSPC);
	assert_true(scram_client_first(&sc, buf, sizeof(buf)) > 0);
	size_t need = strlen(RFC_CLIENT_FINAL) + 1;
	assert_int_equal(scram_client_final(&sc, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), buf,
					    need - 1),
			 -ENOSPC);
	/* Not fatal: the same exchange goes on with enough room. */
	assert_int_equal(scram_client_final(&sc, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), buf,
					    need),
			 (int)need - 1);
	assert_string_equal(buf, RFC_CLIENT_FINAL);
	scram_client_clear(&sc);
}

/* Runs the RFC exchange up to client-first and feeds `first` (len bytes) as the server-first. */
static int final_for(const char *first, size_t len)
{
	struct scram_client sc;
	char buf[SCRAM_MSG_MAX];
	assert_int_equal(scram_client_init_with_nonce(&sc, "", "pencil", RFC_NONCE), 0);
	assert_true(scram_client_first(&sc, buf, sizeof(buf)) > 0);
	int rc = scram_client_final(&sc, first, len, buf, sizeof(buf));
	scram_client_clear(&sc);
	return rc;
}

static int final_for_str(const char *first)
{
	return final_for(first, strlen(first));
}

static void test_server_first_accepted_variants(void **state)
{
	(void)state;
	/* Unknown optional extensions after i= are ignored (RFC 5802 section 7). */
	assert_true(final_for_str(RFC_SERVER_FIRST ",x=whatever") > 0);
	assert_true(final_for_str("r=" RFC_NONCE "X,s=QQ==,i=1") > 0);
	assert_true(final_for_str("r=" RFC_NONCE "X,s=QUI=,i=10000") > 0);
}

static void test_server_first_rejected(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"",
		"r=",
		/* the nonce does not extend ours */
		"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
		"r=XOprNGfwEbeRWgbNEkqO%hvYD,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
		"r=rOprNGfwEbeRWgbNEkq,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
		"r=%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
		/* nonce with a non-printable character */
		"r=" RFC_NONCE "ab\x7f,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
		"r=" RFC_NONCE "a b,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
		/* bad base64 salt */
		"r=" RFC_SERVER_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ=,i=4096",
		"r=" RFC_SERVER_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ,i=4096",
		"r=" RFC_SERVER_NONCE ",s=W22Z*J0SNY7soEsUEjb6gQ==,i=4096",
		"r=" RFC_SERVER_NONCE ",s=W2=ZaJ0SNY7soEsUEjb6gQ==,i=4096",
		"r=" RFC_SERVER_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ===,i=4096",
		"r=" RFC_SERVER_NONCE ",s=W22ZaJ0S NY7soEsUEjb6gQ==,i=4096",
		"r=" RFC_SERVER_NONCE ",s====,i=4096",
		"r=" RFC_SERVER_NONCE ",s=,i=4096",
		/* iteration count */
		"r=" RFC_SERVER_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0",
		"r=" RFC_SERVER_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=10000001",
		"r=" RFC_SERVER_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=99999999999999999999999",
		"r=" RFC_SERVER_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=-1",
		"r=" RFC_SERVER_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=+4096",
		"r=" RFC_SERVER_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096x",
		"r=" RFC_SERVER_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=",
		/* salt base64 with non-zero bits after the last byte */
		"r=" RFC_SERVER_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gR==,i=4096",
		"r=" RFC_SERVER_NONCE ",s=QUJ=,i=4096",
		/* missing, reordered or duplicated fields */
		"r=" RFC_SERVER_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==",
		"r=" RFC_SERVER_NONCE ",i=4096",
		"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
		"s=W22ZaJ0SNY7soEsUEjb6gQ==,r=" RFC_SERVER_NONCE ",i=4096",
		"r=" RFC_SERVER_NONCE ",i=4096,s=W22ZaJ0SNY7soEsUEjb6gQ==",
		"r=" RFC_SERVER_NONCE ",r=" RFC_SERVER_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
		/* mandatory extensions, first or later */
		"m=ext,r=" RFC_SERVER_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
		RFC_SERVER_FIRST ",m=ext",
		/* malformed extensions and separators */
		RFC_SERVER_FIRST ",",
		RFC_SERVER_FIRST ",x",
		RFC_SERVER_FIRST ",x=",
		RFC_SERVER_FIRST ",,x=1",
		RFC_SERVER_FIRST ",1=x",
		"r=" RFC_SERVER_NONCE ",,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
		"r" RFC_SERVER_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
		/* a server error where the challenge should be */
		"e=other-error",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = final_for_str(bad[i]);
		if (rc != -EPROTO)
			fail_msg("accepted or wrong error %d for server-first \"%s\"", rc, bad[i]);
	}
}

static void test_server_first_embedded_nul(void **state)
{
	(void)state;
	char msg[] = RFC_SERVER_FIRST;
	size_t len = sizeof(msg) - 1;
	assert_true(final_for(msg, len) > 0);
	msg[len - 1] = '\0'; /* "i=409\0" */
	assert_int_equal(final_for(msg, len), -EPROTO);
}

static void test_server_first_overlong(void **state)
{
	(void)state;
	char msg[4 * SCRAM_MSG_MAX];

	/* A whole message over the bound. */
	int n = snprintf(msg, sizeof(msg), "%s,x=", RFC_SERVER_FIRST);
	memset(msg + n, 'a', sizeof(msg) - (size_t)n - 1);
	msg[sizeof(msg) - 1] = '\0';
	assert_int_equal(final_for_str(msg), -EPROTO);

	/* Exactly at the bound (SCRAM_MSG_MAX bytes, no room for the NUL of our copy). */
	n = snprintf(msg, sizeof(msg), "%s,x=", RFC_SERVER_FIRST);
	memset(msg + n, 'a', SCRAM_MSG_MAX - (size_t)n);
	msg[SCRAM_MSG_MAX] = '\0';
	assert_int_equal(final_for(msg, SCRAM_MSG_MAX), -EPROTO);
	/* One byte less fits. */
	assert_true(final_for(msg, SCRAM_MSG_MAX - 1) > 0);

	/* A server nonce so long that c=biws,r=NONCE cannot be built within SCRAM_MSG_MAX. */
	n = snprintf(msg, sizeof(msg), "r=%s", RFC_NONCE);
	memset(msg + n, 'z', SCRAM_MSG_MAX - 20 - (size_t)n);
	snprintf(msg + SCRAM_MSG_MAX - 20, 20, ",s=QQ==,i=1");
	assert_true(strlen(msg) < SCRAM_MSG_MAX);
	assert_int_equal(final_for_str(msg), -EPROTO);
}

static void test_failed_step_is_final(void **state)
{
	(void)state;
	struct scram_client sc;
	char buf[SCRAM_MSG_MAX];
	assert_int_equal(scram_client_init_with_nonce(&sc, "", "pencil", RFC_NONCE), 0);
	assert_true(scram_client_first(&sc, buf, sizeof(buf)) > 0);
	assert_int_equal(scram_client_final(&sc, "r=x", 3, buf, sizeof(buf)), -EPROTO);
	assert_int_equal(scram_client_final(&sc, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), buf,
					    sizeof(buf)),
			 -EINVAL);
	scram_client_clear(&sc);
}

/* Runs the empty-user RFC exchange up to client-final and verifies `final`. */
static int verify_for(const char *final, size_t len)
{
	struct scram_client sc;
	char buf[SCRAM_MSG_MAX];
	assert_int_equal(scram_client_init_with_nonce(&sc, "", "pencil", RFC_NONCE), 0);
	assert_true(scram_client_first(&sc, buf, sizeof(buf)) > 0);
	assert_true(scram_client_final(&sc, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), buf,
				       sizeof(buf)) > 0);
	int rc = scram_client_verify_final(&sc, final, len);
	scram_client_clear(&sc);
	return rc;
}

static void test_server_final_rejected(void **state)
{
	(void)state;
	static const char *const bad[] = {
		/* one bit flipped in the signature: first byte, last byte */
		"v=2HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg=",
		"v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOo=",
		/* the same bytes, but a non-zero bit after the last byte (non-canonical base64) */
		"v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOh=",
		/* the signature of another exchange (RFC 7677 with n=user) */
		RFC_SERVER_FINAL,
		/* truncated, too long, not base64 */
		"v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBt",
		"v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOgAAAA=",
		"v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg",
		"v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSO*=",
		"v=",
		"",
		"e=invalid-proof",
		EMPTY_USER_SERVER_FINAL ",m=x",
		EMPTY_USER_SERVER_FINAL ",",
		("x=1," EMPTY_USER_SERVER_FINAL),
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = verify_for(bad[i], strlen(bad[i]));
		if (rc != -EPROTO)
			fail_msg("accepted or wrong error %d for server-final \"%s\"", rc, bad[i]);
	}
	/* The genuine one, with an optional extension, and with a NUL inside the length. */
	assert_int_equal(verify_for(EMPTY_USER_SERVER_FINAL, strlen(EMPTY_USER_SERVER_FINAL)), 0);
	assert_int_equal(verify_for(EMPTY_USER_SERVER_FINAL ",x=y", strlen(EMPTY_USER_SERVER_FINAL ",x=y")),
			 0);
	assert_int_equal(verify_for(EMPTY_USER_SERVER_FINAL, strlen(EMPTY_USER_SERVER_FINAL) + 1),
			 -EPROTO);
}

static void test_verify_only_once(void **state)
{
	(void)state;
	struct scram_client sc;
	char buf[SCRAM_MSG_MAX];
	assert_int_equal(scram_client_init_with_nonce(&sc, "", "pencil", RFC_NONCE), 0);
	assert_true(scram_client_first(&sc, buf, sizeof(buf)) > 0);
	assert_true(scram_client_final(&sc, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), buf,
				       sizeof(buf)) > 0);
	/* A wrong signature ends the exchange: a second guess is not checked. */
	assert_int_equal(scram_client_verify_final(&sc, "v=AAAA", 6), -EPROTO);
	assert_int_equal(scram_client_verify_final(&sc, EMPTY_USER_SERVER_FINAL,
						   strlen(EMPTY_USER_SERVER_FINAL)),
			 -EINVAL);
	scram_client_clear(&sc);
}

static void test_clear_wipes(void **state)
{
	(void)state;
	struct scram_client sc;
	char buf[SCRAM_MSG_MAX];
	assert_int_equal(scram_client_init_with_nonce(&sc, "", "pencil", RFC_NONCE), 0);
	assert_true(scram_client_first(&sc, buf, sizeof(buf)) > 0);
	assert_true(scram_client_final(&sc, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), buf,
				       sizeof(buf)) > 0);
	scram_client_clear(&sc);
	static const struct scram_client zero;
	assert_memory_equal(&sc, &zero, sizeof(sc));
}

static void test_md5_response(void **state)
{
	(void)state;
	/* Computed independently:
	 *   python3 -c "import hashlib; i = hashlib.md5(b'secret' + b'postgres').hexdigest();
	 *               print('md5' + hashlib.md5(i.encode() + bytes([1, 2, 3, 4])).hexdigest())"
	 */
	static const uint8_t salt[4] = { 0x01, 0x02, 0x03, 0x04 };
	char out[36];
	memset(out, 'X', sizeof(out));
	auth_md5_response("postgres", "secret", salt, out);
	assert_string_equal(out, "md5bb41a296aab6baccb36ff243a562abff");
	assert_int_equal(strlen(out), 35);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rfc7677_vector),
		cmocka_unit_test(test_empty_username_vector),
		cmocka_unit_test(test_saslname_escaping),
		cmocka_unit_test(test_random_nonce),
		cmocka_unit_test(test_password_too_long),
		cmocka_unit_test(test_bad_test_nonce),
		cmocka_unit_test(test_out_of_order),
		cmocka_unit_test(test_no_space),
		cmocka_unit_test(test_server_first_accepted_variants),
		cmocka_unit_test(test_server_first_rejected),
		cmocka_unit_test(test_server_first_embedded_nul),
		cmocka_unit_test(test_server_first_overlong),
		cmocka_unit_test(test_failed_step_is_final),
		cmocka_unit_test(test_server_final_rejected),
		cmocka_unit_test(test_verify_only_once),
		cmocka_unit_test(test_clear_wipes),
		cmocka_unit_test(test_md5_response),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
