/* auth_file loader: line parser for the quoted "user" "secret" format, secret classification
 * (plain, md5, SCRAM verifier with strict base64 decoding) and an open-addressing hash table
 * from user name to entry. Owns the entries, their strings and the table. */
#include "auth/userlist.h"
#include "auth/scram.h"
#include "auth/scram_int.h"
#include "auth/scram_server.h"
#include "util/file.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#define USERLIST_FILE_MAX (64u << 20)

struct userlist {
	struct userlist_entry *entries;
	int n;
	int *slots;    /* index into entries, -1 empty; size a power of two, at least 2n */
	size_t nslots;
};

/* A double-quoted string at s[*i] ("" inside means one quote) into out (room for len+1).
 * true and *i past the closing quote, or false. */
static bool read_quoted(const char *s, size_t len, size_t *i, char *out)
{
	size_t p = *i, w = 0;

	if (p >= len || s[p] != '"')
		return false;
	for (p++; p < len; p++) {
		if (s[p] == '"') {
			if (p + 1 < len && s[p + 1] == '"') {
				out[w++] = '"';
				p++;
				continue;
			}
			out[w] = '\0';
			*i = p + 1;
			return true;
		}
		out[w++] = s[p];
	}
	return false;
}

static bool is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

#define SCRAM_PREFIX "SCRAM-SHA-256$"

/* Parse "SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>" into e. 0 or -EINVAL after
 * reporting what is wrong. */
static int parse_scram(struct util_file_report *c, const char *s, struct userlist_entry *e)
{
	const char *p = s + strlen(SCRAM_PREFIX);
	const char *colon1 = strchr(p, ':');
	const char *dollar = colon1 ? strchr(colon1 + 1, '$') : NULL;
	const char *colon2 = dollar ? strchr(dollar + 1, ':') : NULL;
	long iter = 0;

	if (!colon2) {
		util_file_report(c, "malformed SCRAM verifier: expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>");
		return -EINVAL;
	}
	if (p == colon1) {
		util_file_report(c, "malformed SCRAM verifier: empty iteration count");
		return -EINVAL;
	}
	for (const char *q = p; q < colon1; q++) {
		if (*q < '0' || *q > '9' || iter > USERLIST_SCRAM_ITER_MAX) {
			iter = -1;
			break;
		}
		iter = iter * 10 + (*q - '0');
	}
	if (iter < 1 || iter > USERLIST_SCRAM_ITER_MAX) {
		util_file_report(c, "SCRAM verifier: iteration count must be 1..%d", USERLIST_SCRAM_ITER_MAX);
		return -EINVAL;
	}
	e->iterations = (int)iter;
	int n = scram_b64_decode(colon1 + 1, (size_t)(dollar - colon1 - 1), e->salt, sizeof(e->salt));
	if (n < 1) {
		util_file_report(c, "SCRAM verifier: salt is not base64 of 1..%d bytes", USERLIST_SALT_MAX);
		return -EINVAL;
	}
	e->salt_len = (size_t)n;
	uint8_t key[USERLIST_KEY_LEN + 1];
	n = scram_b64_decode(dollar + 1, (size_t)(colon2 - dollar - 1), key, sizeof(key));
	if (n != USERLIST_KEY_LEN) {
		util_file_report(c, "SCRAM verifier: StoredKey is not base64 of %d bytes", USERLIST_KEY_LEN);
		return -EINVAL;
	}
	memcpy(e->stored_key, key, USERLIST_KEY_LEN);
	n = scram_b64_decode(colon2 + 1, strlen(colon2 + 1), key, sizeof(key));
	if (n != USERLIST_KEY_LEN) {
		util_file_report(c, "SCRAM verifier: ServerKey is not base64 of %d bytes", USERLIST_KEY_LEN);
		return -EINVAL;
	}
	memcpy(e->server_key, key, USERLIST_KEY_LEN);
	explicit_bzero(key, sizeof(key));
	return 0;
}

/* Kind of the secret, decoding a SCRAM verifier into e. 0 or -EINVAL after reporting. */
static int classify_secret(struct util_file_report *c, const char *s, struct userlist_entry *e)
{
	size_t len = strlen(s);

	if (strncmp(s, "md5", 3) == 0 && len == 35) {
		for (size_t i = 3; i < len; i++) {
			if (!is_hex(s[i])) {
				util_file_report(c, "malformed md5 secret: \"md5\" must be followed by 32 hex digits");
				return -EINVAL;
			}
		}
		e->kind = USERLIST_MD5;
		return 0;
	}
	if (strncmp(s, SCRAM_PREFIX, strlen(SCRAM_PREFIX)) == 0) {
		e->kind = USERLIST_SCRAM;
		return parse_scram(c, s, e);
	}
	e->kind = USERLIST_PLAIN;
	return 0;
}

int userlist_parse_secret(const char *secret, struct userlist_entry *e)
{
	struct util_file_report c = { .name = "auth_query", .what = "userlist" };
	return classify_secret(&c, secret, e);
}

static void free_entry(struct userlist_entry *e)
{
	if (e->secret) {
		explicit_bzero(e->secret, strlen(e->secret));
		free(e->secret);
	}
	free(e->user);
	explicit_bzero(e, sizeof(*e));
}

/* One line (no '\n') into e: 1 for an entry, 0 for a blank or comment line, -EINVAL after
 * reporting, -ENOMEM. */
static int parse_line(struct util_file_report *c, const char *s, size_t len, struct userlist_entry *e)
{
	size_t i = 0;
	char *user, *secret;

	while (i < len && util_is_blank(s[i]))
		i++;
	if (i == len || s[i] == ';' || s[i] == '#')
		return 0;
	if (memchr(s, '\0', len)) {
		util_file_report(c, "NUL byte in line");
		return -EINVAL;
	}
	user = malloc(len + 1);
	secret = malloc(len + 1);
	if (!user || !secret)
		goto err_nomem;
	if (!read_quoted(s, len, &i, user)) {
		util_file_report(c, s[i] == '"' ? "unterminated quoted user name" : "expected a double-quoted user name");
		goto err_inval;
	}
	if (user[0] == '\0') {
		util_file_report(c, "empty user name");
		goto err_inval;
	}
	if (i == len || !util_is_blank(s[i])) {
		util_file_report(c, "expected whitespace and a double-quoted secret after the user name");
		goto err_inval;
	}
	while (i < len && util_is_blank(s[i]))
		i++;
	if (!read_quoted(s, len, &i, secret)) {
		util_file_report(c, i < len && s[i] == '"' ? "unterminated quoted secret" : "expected a double-quoted secret");
		goto err_inval;
	}
	while (i < len && util_is_blank(s[i]))
		i++;
	if (i != len) {
		util_file_report(c, "unexpected text after the secret");
		goto err_inval;
	}
	/* An empty secret is accepted, as PgBouncer accepts it: the user can log in where
	 * client_auth is trust and with no password anywhere else (frontend/auth.c). */
	memset(e, 0, sizeof(*e));
	e->line = c->line;
	if (classify_secret(c, secret, e) < 0) {
		explicit_bzero(e, sizeof(*e));
		goto err_inval;
	}
	/* Shrink to size: thousands of entries would otherwise keep a line's length twice. */
	e->user = strdup(user);
	e->secret = strdup(secret);
	explicit_bzero(secret, len + 1);
	free(user);
	free(secret);
	if (!e->user || !e->secret) {
		free_entry(e);
		return -ENOMEM;
	}
	return 1;

err_inval:
	explicit_bzero(secret, len + 1);
	free(secret);
	free(user);
	return -EINVAL;
err_nomem:
	free(secret);
	free(user);
	return -ENOMEM;
}

/* FNV-1a, 64-bit. */
static uint64_t hash_name(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (; *s; s++) {
		h ^= (uint8_t)*s;
		h *= 0x100000001b3ull;
	}
	return h;
}

/* Slot holding user, or the empty slot where it would go. */
static size_t find_slot(const struct userlist *ul, const char *user)
{
	size_t mask = ul->nslots - 1;
	size_t i = (size_t)hash_name(user) & mask;
	while (ul->slots[i] >= 0 && strcmp(ul->entries[ul->slots[i]].user, user) != 0)
		i = (i + 1) & mask;
	return i;
}

void userlist_free(struct userlist *ul)
{
	if (!ul)
		return;
	for (int i = 0; i < ul->n; i++)
		free_entry(&ul->entries[i]);
	free(ul->entries);
	free(ul->slots);
	free(ul);
}

int userlist_load_buffer(const char *name, const char *data, size_t len, FILE *errout,
			 struct userlist **out)
{
	struct util_file_report c = { .name = name, .what = "userlist", .errout = errout };
	struct userlist *ul = calloc(1, sizeof(*ul));
	int cap = 0;
	size_t pos = 0;

	if (!ul)
		goto err_nomem;
	const char *s;
	size_t n;
	while (util_next_line(data, len, &pos, &c, &s, &n)) {

		if (ul->n == cap) {
			int ncap = cap ? cap * 2 : 64;
			struct userlist_entry *ne = realloc(ul->entries, (size_t)ncap * sizeof(*ne));
			if (!ne)
				goto err_free;
			ul->entries = ne;
			cap = ncap;
		}
		int rc = parse_line(&c, s, n, &ul->entries[ul->n]);
		if (rc == -ENOMEM)
			goto err_free;
		if (rc == 1)
			ul->n++;
	}

	ul->nslots = 16;
	while (ul->nslots < 2 * (size_t)ul->n)
		ul->nslots *= 2;
	ul->slots = malloc(ul->nslots * sizeof(*ul->slots));
	if (!ul->slots)
		goto err_free;
	memset(ul->slots, 0xff, ul->nslots * sizeof(*ul->slots));
	/* Insert in file order so a duplicate is reported on its later line. Duplicates stay in
	 * entries (freed with the rest) but never enter the table. */
	for (int i = 0; i < ul->n; i++) {
		size_t slot = find_slot(ul, ul->entries[i].user);
		if (ul->slots[slot] >= 0) {
			c.line = ul->entries[i].line;
			util_file_report(&c, "duplicate user \"%s\" (first on line %d)", ul->entries[i].user,
			       ul->entries[ul->slots[slot]].line);
			continue;
		}
		ul->slots[slot] = i;
	}
	if (c.nerr) {
		userlist_free(ul);
		return c.nerr;
	}
	*out = ul;
	return 0;

err_free:
	userlist_free(ul);
err_nomem:
	c.line = 0;
	util_file_report(&c, "out of memory");
	return c.nerr;
}

int userlist_load(const char *path, FILE *errout, struct userlist **out)
{
	struct util_file_report c = { .name = path, .what = "userlist", .errout = errout };
	char *data;
	size_t len;
	int rc = util_load_file(path, USERLIST_FILE_MAX, true, &c, &data, &len);

	if (rc > 0)
		return rc;
	rc = userlist_load_buffer(path, data, len, errout, out);
	explicit_bzero(data, len);
	free(data);
	return rc;
}

const struct userlist_entry *userlist_find(const struct userlist *ul, const char *user)
{
	size_t slot = find_slot(ul, user);
	return ul->slots[slot] >= 0 ? &ul->entries[ul->slots[slot]] : NULL;
}

int userlist_count(const struct userlist *ul)
{
	return ul->n;
}

static bool equal_ct(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	return la == lb && CRYPTO_memcmp(a, b, la) == 0;
}

bool userlist_password_matches(const struct userlist_entry *e, const char *user, const char *password)
{
	switch (e->kind) {
	case USERLIST_PLAIN: /* an empty secret (trust only, as in PgBouncer) matches no password */
		return e->secret[0] && equal_ct(password, e->secret);
	case USERLIST_MD5: {
		char hash[36];
		auth_md5_hash(user, password, hash);
		return hash[0] && equal_ct(hash, e->secret);
	}
	case USERLIST_SCRAM: {
		struct scram_verifier v;
		if (scram_verifier_from_password_salt(&v, password, e->salt, e->salt_len, e->iterations) < 0)
			return false;
		return CRYPTO_memcmp(v.stored_key, e->stored_key, sizeof v.stored_key) == 0 &&
		       CRYPTO_memcmp(v.server_key, e->server_key, sizeof v.server_key) == 0;
	}
	}
	return false;
}
