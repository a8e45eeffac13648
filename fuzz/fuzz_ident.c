/* libFuzzer target for the ident_file (pg_ident.conf) loader and its matcher. Besides crashes,
 * leaks and timeouts (a pattern glibc's regcomp or regexec takes seconds on must be refused at
 * load, ident.c's regex_too_costly), it checks that a load either fails with errors and no result
 * or succeeds with no more entries than lines, and that every match names a line that exists.
 * Map names, system users and users come from a fixed list and from the input's own words, so the
 * fuzzer can steer them. The input is an exact-size heap copy, so
 * ASan flags a read even one byte past it. */
#include "auth/ident.h"
#include "file_harness.h"

/* Up to max words of text (runs of bytes that are not space, tab, newline or NUL), at most 64
 * bytes each: a peer's user name is at most 32, a CN by RFC 5280 at most 64. */
static size_t words_of(const char *text, size_t size, char words[][65], size_t max)
{
	size_t n = 0, i = 0;
	while (i < size && n < max) {
		while (i < size && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\0'))
			i++;
		size_t len = 0;
		while (i < size && !(text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\0')) {
			if (len < 64)
				words[n][len++] = text[i];
			i++;
		}
		if (len) {
			words[n][len] = '\0';
			n++;
		}
	}
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const fixed[] = { "root", "app", "alice@example.com", "", "a\"b", "all" };
	char words[8][65];
	struct ident *id = (struct ident *)1;
	size_t lines;
	char *text = fuzz_file_text(data, size, &lines);

	int n = ident_load_buffer("fuzz.conf", text, size, fuzz_devnull(), &id);
	check(n >= 0);
	if (n > 0) {
		check(id == (struct ident *)1);
		free(text);
		return 0;
	}
	check(id != NULL && id != (struct ident *)1);
	check((size_t)ident_count(id) <= lines);

	size_t nwords = words_of(text, size, words, sizeof(words) / sizeof(words[0]));
	const char *names[sizeof(fixed) / sizeof(fixed[0]) + sizeof(words) / sizeof(words[0])];
	size_t nnames = 0;
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		names[nnames++] = fixed[i];
	for (size_t i = 0; i < nwords; i++)
		names[nnames++] = words[i];
	for (size_t m = 0; m < nnames; m++) {
		(void)ident_has_map(id, names[m]);
		for (size_t s = 0; s < nnames; s++)
			for (size_t u = 0; u < nnames; u += 3) {
				int line = 0;
				if (ident_match(id, names[m], names[s], names[(s + u) % nnames], &line))
					check(line >= 1 && (size_t)line <= lines);
			}
	}
	ident_free(id);
	free(text);
	return 0;
}
