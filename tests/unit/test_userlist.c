/* auth_file loader: the three secret kinds, quoting and comments, a SCRAM-SHA-256 verifier for
 * "pencil" checked against OpenSSL, each malformed line and verifier with its exact
 * "FILE:LINE: userlist:" text, all errors in one load, duplicates, and lookup over many users. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "auth/userlist.h"

/* The verifier PostgreSQL stores for password "pencil" with 4096 iterations and the salt
 * 01 02 .. 10 (16 bytes), as PostgreSQL 15 computes it (scram_build_secret): computed with
 *   sp = hashlib.pbkdf2_hmac('sha256', b'pencil', bytes(range(1, 17)), 4096)
 *   StoredKey = sha256(hmac(sp, b'Client Key', 'sha256')), ServerKey = hmac(sp, b'Server Key', 'sha256')
 * and base64 of each (python3 hashlib, hmac, base64). test_scram_pencil recomputes it with
 * OpenSSL. */
#define PENCIL_SALT_B64 "AQIDBAUGBwgJCgsMDQ4PEA=="
#define PENCIL_STORED_B64 "B9Mb8TSkDsvpddTD0BDmSDpJAo08+gvK8zcSCGRjCZw="
#define PENCIL_SERVER_B64 "0z4kjgndRyJQnA93HtYE376F1vMDI59QM1nDcPyu8Rw="
#define PENCIL_VERIFIER "SCRAM-SHA-256$4096:" PENCIL_SALT_B64 "$" PENCIL_STORED_B64 ":" PENCIL_SERVER_B64

static const uint8_t pencil_stored[32] = {
	0x07, 0xd3, 0x1b, 0xf1, 0x34, 0xa4, 0x0e, 0xcb, 0xe9, 0x75, 0xd4, 0xc3, 0xd0, 0x10, 0xe6, 0x48,
	0x3a, 0x49, 0x02, 0x8d, 0x3c, 0xfa, 0x0b, 0xca, 0xf3, 0x37, 0x12, 0x08, 0x64, 0x63, 0x09, 0x9c,
};
static const uint8_t pencil_server[32] = {
	0xd3, 0x3e, 0x24, 0x8e, 0x09, 0xdd, 0x47, 0x22, 0x50, 0x9c, 0x0f, 0x77, 0x1e, 0xd6, 0x04, 0xdf,
	0xbe, 0x85, 0xd6, 0xf3, 0x03, 0x23, 0x9f, 0x50, 0x33, 0x59, 0xc3, 0x70, 0xfc, 0xae, 0xf1, 0x1c,
};

static int load(const char *text, struct userlist **ul, char **errs)
{
	size_t errlen;
	FILE *ef = open_memstream(errs, &errlen);
	assert_non_null(ef);
	int n = userlist_load_buffer("users.txt", text, strlen(text), ef, ul);
	fclose(ef);
	return n;
}

static struct userlist *load_ok(const char *text)
{
	struct userlist *ul = NULL;
	char *errs = NULL;
	int n = load(text, &ul, &errs);
	if (n != 0)
		fprintf(stderr, "unexpected errors:\n%s", errs);
	assert_int_equal(n, 0);
	assert_string_equal(errs, "");
	free(errs);
	assert_non_null(ul);
	return ul;
}

static void expect_errors(const char *text, int count, const char *messages)
{
	struct userlist *ul = NULL;
	char *errs = NULL;
	assert_int_equal(load(text, &ul, &errs), count);
	assert_null(ul);
	assert_string_equal(errs, messages);
	free(errs);
}

static void test_kinds_and_comments(void **state)
{
	(void)state;
	struct userlist *ul = load_ok("; PgBouncer comment\n"
				      "# hash comment\n"
				      "\n"
				      "\"alice\" \"secret\"\n"
				      "  \t\"bob\"\t\"md5" "0123456789abcdef0123456789ABCDEF\"  \r\n"
				      "\"carol\" \"" PENCIL_VERIFIER "\"\n"
				      "\"dave\" \"md5short\"\n"
				      "   ; indented comment\n"
				      "\"erin\" \"SCRAM-SHA-1\"");
	const struct userlist_entry *e;
	assert_int_equal(userlist_count(ul), 5);

	e = userlist_find(ul, "alice");
	assert_non_null(e);
	assert_string_equal(e->user, "alice");
	assert_string_equal(e->secret, "secret");
	assert_int_equal(e->kind, USERLIST_PLAIN);
	assert_int_equal(e->line, 4);

	e = userlist_find(ul, "bob");
	assert_non_null(e);
	assert_int_equal(e->kind, USERLIST_MD5);
	assert_string_equal(e->secret, "md50123456789abcdef0123456789ABCDEF");
	assert_int_equal(e->line, 5);

	e = userlist_find(ul, "carol");
	assert_non_null(e);
	assert_int_equal(e->kind, USERLIST_SCRAM);
	assert_string_equal(e->secret, PENCIL_VERIFIER);

	/* Neither an md5 hash (wrong length) nor a verifier: plain passwords. */
	assert_int_equal(userlist_find(ul, "dave")->kind, USERLIST_PLAIN);
	assert_int_equal(userlist_find(ul, "erin")->kind, USERLIST_PLAIN);
	assert_int_equal(userlist_find(ul, "erin")->line, 9);

	assert_null(userlist_find(ul, "Alice"));
	assert_null(userlist_find(ul, ""));
	assert_null(userlist_find(ul, "mallory"));
	userlist_free(ul);
}

/* PgBouncer accepts "user" "" (a user for trust); tusk refused to start on it. */
static void test_empty_secret_accepted(void **state)
{
	(void)state;
	struct userlist *ul = load_ok("\"alice\" \"\"\n\"bob\" \"pw\"\n");
	const struct userlist_entry *e = userlist_find(ul, "alice");

	assert_int_equal(userlist_count(ul), 2);
	assert_non_null(e);
	assert_string_equal(e->secret, "");
	assert_int_equal(e->kind, USERLIST_PLAIN);
	userlist_free(ul);
}

static void test_quoting(void **state)
{
	(void)state;
	struct userlist *ul = load_ok("\"O\"\"Brien\" \"pa\"\"ss word\"\n"
				      "\"with space\" \"; not a comment\"\n"
				      "\"\"\"\" \"#\"\n");
	const struct userlist_entry *e = userlist_find(ul, "O\"Brien");
	assert_non_null(e);
	assert_string_equal(e->secret, "pa\"ss word");
	e = userlist_find(ul, "with space");
	assert_non_null(e);
	assert_string_equal(e->secret, "; not a comment");
	e = userlist_find(ul, "\"");
	assert_non_null(e);
	assert_string_equal(e->secret, "#");
	userlist_free(ul);
}

static void test_scram_pencil(void **state)
{
	(void)state;
	struct userlist *ul = load_ok("\"u\" \"" PENCIL_VERIFIER "\"\n");
	const struct userlist_entry *e = userlist_find(ul, "u");
	static const uint8_t salt[16] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 };

	assert_non_null(e);
	assert_int_equal(e->kind, USERLIST_SCRAM);
	assert_int_equal(e->iterations, 4096);
	assert_int_equal(e->salt_len, 16);
	assert_memory_equal(e->salt, salt, 16);
	assert_memory_equal(e->stored_key, pencil_stored, 32);
	assert_memory_equal(e->server_key, pencil_server, 32);

	/* The same keys from the decoded salt and iterations, independently of python. */
	uint8_t sp[32], ck[32], sk[32], svk[32];
	unsigned int len = 0;
	assert_int_equal(PKCS5_PBKDF2_HMAC("pencil", 6, e->salt, (int)e->salt_len, e->iterations, EVP_sha256(),
					   sizeof(sp), sp),
			 1);
	assert_non_null(HMAC(EVP_sha256(), sp, sizeof(sp), (const uint8_t *)"Client Key", 10, ck, &len));
	SHA256(ck, sizeof(ck), sk);
	assert_non_null(HMAC(EVP_sha256(), sp, sizeof(sp), (const uint8_t *)"Server Key", 10, svk, &len));
	assert_memory_equal(e->stored_key, sk, 32);
	assert_memory_equal(e->server_key, svk, 32);
	userlist_free(ul);

	/* Bounds of the iteration count and an unpadded-length salt (1 byte) are accepted. */
	ul = load_ok("\"a\" \"SCRAM-SHA-256$1:AQ==$" PENCIL_STORED_B64 ":" PENCIL_SERVER_B64 "\"\n"
		     "\"b\" \"SCRAM-SHA-256$10000000:" PENCIL_SALT_B64 "$" PENCIL_STORED_B64 ":" PENCIL_SERVER_B64 "\"\n");
	assert_int_equal(userlist_find(ul, "a")->iterations, 1);
	assert_int_equal(userlist_find(ul, "a")->salt_len, 1);
	assert_int_equal(userlist_find(ul, "b")->iterations, 10000000);
	userlist_free(ul);
}

#define SCRAM_FMT "SCRAM-SHA-256$%s"
#define KEYS "$" PENCIL_STORED_B64 ":" PENCIL_SERVER_B64

static void test_scram_errors(void **state)
{
	(void)state;
	static const struct {
		const char *verifier_tail; /* after "SCRAM-SHA-256$" */
		const char *message;
	} cases[] = {
		{ "4096:" PENCIL_SALT_B64, "malformed SCRAM verifier: expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>" },
		{ "", "malformed SCRAM verifier: expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>" },
		{ "4096:" PENCIL_SALT_B64 "$" PENCIL_STORED_B64, "malformed SCRAM verifier: expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>" },
		{ ":" PENCIL_SALT_B64 KEYS, "malformed SCRAM verifier: empty iteration count" },
		{ "0:" PENCIL_SALT_B64 KEYS, "SCRAM verifier: iteration count must be 1..10000000" },
		{ "10000001:" PENCIL_SALT_B64 KEYS, "SCRAM verifier: iteration count must be 1..10000000" },
		{ "99999999999999999999999:" PENCIL_SALT_B64 KEYS, "SCRAM verifier: iteration count must be 1..10000000" },
		{ "-1:" PENCIL_SALT_B64 KEYS, "SCRAM verifier: iteration count must be 1..10000000" },
		{ "40x6:" PENCIL_SALT_B64 KEYS, "SCRAM verifier: iteration count must be 1..10000000" },
		{ "4096:" KEYS, "SCRAM verifier: salt is not base64 of 1..64 bytes" },
		{ "4096:AQIDBAUGBwgJCgsMDQ4PEA" KEYS, "SCRAM verifier: salt is not base64 of 1..64 bytes" },      /* no padding */
		{ "4096:AQIDBAUGBwgJCgsMDQ4PEB==" KEYS, "SCRAM verifier: salt is not base64 of 1..64 bytes" },    /* non-canonical */
		{ "4096:AQID*AUG" KEYS, "SCRAM verifier: salt is not base64 of 1..64 bytes" },
		{ "4096:AQ=D" KEYS, "SCRAM verifier: salt is not base64 of 1..64 bytes" },
		{ "4096:" "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB" KEYS,
		  "SCRAM verifier: salt is not base64 of 1..64 bytes" }, /* 66 bytes */
		{ "4096:" PENCIL_SALT_B64 "$" "B9Mb8TSkDsvpddTD0BDmSDpJAo08+gvK8zcSCGRjCQ==" ":" PENCIL_SERVER_B64,
		  "SCRAM verifier: StoredKey is not base64 of 32 bytes" }, /* 31 bytes */
		{ "4096:" PENCIL_SALT_B64 "$" ":" PENCIL_SERVER_B64, "SCRAM verifier: StoredKey is not base64 of 32 bytes" },
		{ "4096:" PENCIL_SALT_B64 "$" PENCIL_STORED_B64 ":" PENCIL_SERVER_B64 "AAAA",
		  "SCRAM verifier: ServerKey is not base64 of 32 bytes" },
		{ "4096:" PENCIL_SALT_B64 "$" PENCIL_STORED_B64 ":" PENCIL_SERVER_B64 " ",
		  "SCRAM verifier: ServerKey is not base64 of 32 bytes" },
		{ "4096:" PENCIL_SALT_B64 "$" PENCIL_STORED_B64 ":" PENCIL_SERVER_B64 ":x",
		  "SCRAM verifier: ServerKey is not base64 of 32 bytes" },
	};
	char text[512], want[512], verifier[400];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(verifier, sizeof(verifier), SCRAM_FMT, cases[i].verifier_tail);
		snprintf(text, sizeof(text), "\"ok\" \"pw\"\n\"u\" \"%s\"\n", verifier);
		snprintf(want, sizeof(want), "users.txt:2: userlist: %s\n", cases[i].message);
		expect_errors(text, 1, want);
	}
}

static void test_line_errors(void **state)
{
	(void)state;
	static const struct {
		const char *line;
		const char *message;
	} cases[] = {
		{ "alice \"pw\"", "expected a double-quoted user name" },
		{ "'alice' 'pw'", "expected a double-quoted user name" },
		{ "\"alice", "unterminated quoted user name" },
		{ "\"alice\"", "expected whitespace and a double-quoted secret after the user name" },
		{ "\"alice\"\"pw\"", "expected whitespace and a double-quoted secret after the user name" }, /* user alice"pw */
		{ "\"alice\"pw", "expected whitespace and a double-quoted secret after the user name" },
		{ "\"alice\"   ", "expected a double-quoted secret" },
		{ "\"alice\" pw", "expected a double-quoted secret" },
		{ "\"alice\" \"pw", "unterminated quoted secret" },
		{ "\"alice\" \"pw\" extra", "unexpected text after the secret" },
		{ "\"alice\" \"pw\" ; comment", "unexpected text after the secret" },
		{ "\"alice\" \"pw\" \"more\"", "unexpected text after the secret" },
		{ "\"\" \"pw\"", "empty user name" },
		{ "\"alice\" \"md50123456789abcdef0123456789abcdeg\"",
		  "malformed md5 secret: \"md5\" must be followed by 32 hex digits" },
	};
	char text[256], want[512];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(text, sizeof(text), "; users\n\"ok\" \"pw\"\n%s\n", cases[i].line);
		snprintf(want, sizeof(want), "users.txt:3: userlist: %s\n", cases[i].message);
		expect_errors(text, 1, want);
	}
}

static void test_nul_and_duplicates(void **state)
{
	(void)state;
	static const char text[] = "\"a\" \"x\"\n\"b\" \"x\0y\"\n";
	struct userlist *ul = NULL;
	char *errs = NULL;
	size_t errlen;
	FILE *ef = open_memstream(&errs, &errlen);
	assert_int_equal(userlist_load_buffer("users.txt", text, sizeof(text) - 1, ef, &ul), 1);
	fclose(ef);
	assert_null(ul);
	assert_string_equal(errs, "users.txt:2: userlist: NUL byte in line\n");
	free(errs);

	expect_errors("\"a\" \"x\"\n\"b\" \"y\"\n\"a\" \"z\"\n\"a\" \"w\"\n", 2,
		      "users.txt:3: userlist: duplicate user \"a\" (first on line 1)\n"
		      "users.txt:4: userlist: duplicate user \"a\" (first on line 1)\n");
}

static void test_all_errors_reported(void **state)
{
	(void)state;
	/* Line errors come in file order, then duplicates (found once all lines are read). */
	expect_errors("\"a\" \"x\"\n"
		      "b \"y\"\n"
		      "; fine\n"
		      "\"c\" \"SCRAM-SHA-256$0:AA==$x:y\"\n"
		      "\"a\" \"again\"\n"
		      "\"d\" \"z\" junk\n",
		      4,
		      "users.txt:2: userlist: expected a double-quoted user name\n"
		      "users.txt:4: userlist: SCRAM verifier: iteration count must be 1..10000000\n"
		      "users.txt:6: userlist: unexpected text after the secret\n"
		      "users.txt:5: userlist: duplicate user \"a\" (first on line 1)\n");
}

static void test_many_users(void **state)
{
	(void)state;
	enum { N = 5000 };
	size_t cap = (size_t)N * 40, len = 0;
	char *text = malloc(cap);
	assert_non_null(text);
	for (int i = 0; i < N; i++)
		len += (size_t)snprintf(text + len, cap - len, "\"user%d\" \"pw%d\"\n", i, i);
	struct userlist *ul = NULL;
	assert_int_equal(userlist_load_buffer("big", text, len, NULL, &ul), 0);
	free(text);
	assert_int_equal(userlist_count(ul), N);
	for (int i = 0; i < N; i++) {
		char name[32], pw[32];
		snprintf(name, sizeof(name), "user%d", i);
		snprintf(pw, sizeof(pw), "pw%d", i);
		const struct userlist_entry *e = userlist_find(ul, name);
		assert_non_null(e);
		assert_string_equal(e->secret, pw);
		assert_int_equal(e->line, i + 1);
	}
	assert_null(userlist_find(ul, "user5000"));
	assert_null(userlist_find(ul, "user"));
	userlist_free(ul);

	/* An empty file is an empty list. */
	ul = load_ok("");
	assert_int_equal(userlist_count(ul), 0);
	assert_null(userlist_find(ul, "a"));
	userlist_free(ul);
}

static void test_load_file(void **state)
{
	(void)state;
	char path[] = "/tmp/tusk-test-userlist-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	static const char good[] = "\"alice\" \"" PENCIL_VERIFIER "\"\n";
	assert_int_equal(write(fd, good, sizeof(good) - 1), (ssize_t)(sizeof(good) - 1));
	close(fd);

	struct userlist *ul = NULL;
	assert_int_equal(userlist_load(path, NULL, &ul), 0);
	assert_int_equal(userlist_find(ul, "alice")->kind, USERLIST_SCRAM);
	userlist_free(ul);

	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("\"a\" \"b\"\n\"c\" d\n", f);
	fclose(f);
	char *errs = NULL;
	size_t errlen;
	FILE *ef = open_memstream(&errs, &errlen);
	ul = NULL;
	assert_int_equal(userlist_load(path, ef, &ul), 1);
	fclose(ef);
	assert_null(ul);
	char want[256];
	snprintf(want, sizeof(want), "%s:2: userlist: expected a double-quoted secret\n", path);
	assert_string_equal(errs, want);
	free(errs);

	unlink(path);
	ef = open_memstream(&errs, &errlen);
	assert_int_equal(userlist_load(path, ef, &ul), 1);
	fclose(ef);
	snprintf(want, sizeof(want), "%s: userlist: cannot open: No such file or directory\n", path);
	assert_string_equal(errs, want);
	free(errs);
}

/* One secret on its own (auth_query answers): the same classification as in the file. */
static void test_parse_secret(void **state)
{
	struct userlist_entry e;
	(void)state;

	memset(&e, 0, sizeof e);
	assert_int_equal(userlist_parse_secret(PENCIL_VERIFIER, &e), 0);
	assert_int_equal(e.kind, USERLIST_SCRAM);
	assert_int_equal(e.iterations, 4096);
	assert_int_equal(e.salt_len, 16);
	assert_null(e.user); /* left alone */
	assert_int_equal(userlist_parse_secret("md5" "0123456789abcdef0123456789abcdef", &e), 0);
	assert_int_equal(e.kind, USERLIST_MD5);
	assert_int_equal(userlist_parse_secret("just a password", &e), 0);
	assert_int_equal(e.kind, USERLIST_PLAIN);
	assert_true(userlist_parse_secret("md5" "0123456789abcdef0123456789abcdeX", &e) < 0);
	assert_true(userlist_parse_secret("SCRAM-SHA-256$4096:AQID", &e) < 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kinds_and_comments),
		cmocka_unit_test(test_quoting),
		cmocka_unit_test(test_empty_secret_accepted),
		cmocka_unit_test(test_scram_pencil),
		cmocka_unit_test(test_scram_errors),
		cmocka_unit_test(test_line_errors),
		cmocka_unit_test(test_nul_and_duplicates),
		cmocka_unit_test(test_all_errors_reported),
		cmocka_unit_test(test_many_users),
		cmocka_unit_test(test_load_file),
		cmocka_unit_test(test_parse_secret),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
