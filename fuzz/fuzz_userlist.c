/* libFuzzer target for the auth_file loader. Besides crashes and leaks, it checks that a load
 * either fails with errors and no result or succeeds with entries whose decoded SCRAM fields are
 * within their bounds, and that each user found on a line of the input is found by lookup. The
 * input is an exact-size heap copy, so ASan flags a read even one byte past it. */
#include "auth/userlist.h"
#include "file_harness.h"

static void check_entry(const struct userlist_entry *e, const char *user, size_t lines)
{
	check(strcmp(e->user, user) == 0);
	/* An empty secret is a user listed for trust only (as PgBouncer reads it), plain-kind. */
	check(e->secret[0] != '\0' || e->kind == USERLIST_PLAIN);
	check(e->line >= 1 && (size_t)e->line <= lines);
	if (e->kind == USERLIST_SCRAM) {
		check(e->iterations >= 1 && e->iterations <= USERLIST_SCRAM_ITER_MAX);
		check(e->salt_len >= 1 && e->salt_len <= USERLIST_SALT_MAX);
	} else if (e->kind == USERLIST_MD5) {
		check(strlen(e->secret) == 35);
	} else {
		check(e->kind == USERLIST_PLAIN);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct userlist *ul = (struct userlist *)1;
	size_t lines;
	char *text = fuzz_file_text(data, size, &lines);

	int n = userlist_load_buffer("fuzz.txt", text, size, fuzz_devnull(), &ul);
	check(n >= 0);
	if (n > 0) {
		check(ul == (struct userlist *)1);
		free(text);
		return 0;
	}
	check(ul != NULL && ul != (struct userlist *)1);
	check((size_t)userlist_count(ul) <= lines);
	check(userlist_find(ul, "") == NULL);

	/* Every line that starts with a simple quoted name (no "" inside) names a listed user. */
	int found = 0;
	for (size_t pos = 0; pos < size;) {
		const char *s = text + pos, *nl = memchr(s, '\n', size - pos);
		size_t len = nl ? (size_t)(nl - s) : size - pos;
		pos += len + 1;
		if (len < 3 || s[0] != '"')
			continue;
		const char *q = memchr(s + 1, '"', len - 1);
		if (!q || q == s + 1 || (size_t)(q - s) + 1 >= len || q[1] != ' ')
			continue;
		char user[256];
		size_t ulen = (size_t)(q - s - 1);
		if (ulen >= sizeof(user))
			continue;
		memcpy(user, s + 1, ulen);
		user[ulen] = '\0';
		const struct userlist_entry *e = userlist_find(ul, user);
		check(e != NULL);
		check_entry(e, user, lines);
		found++;
	}
	check(found <= userlist_count(ul));
	userlist_free(ul);
	free(text);
	return 0;
}
