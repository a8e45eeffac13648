/* The logger: line formats, level filtering, escaping, truncation, the synchronous stderr path
 * before log_init and after log_shutdown, and many threads logging at once, every line either
 * written or counted as dropped. Each test logs to a file in its own temporary directory. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "util/log.h"

struct fixture {
	char dir[64];
	char path[128];   /* the log file */
	char target[160]; /* "file:" path */
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	if (!f)
		return -1;
	strcpy(f->dir, "/tmp/tusk-test-log-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->path, sizeof(f->path), "%s/tusk.log", f->dir);
	snprintf(f->target, sizeof(f->target), "file:%s", f->path);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	log_shutdown(); /* in case a test failed while the logger ran */
	DIR *d = opendir(f->dir);
	if (d) {
		struct dirent *e;
		while ((e = readdir(d))) {
			char p[512];
			if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
				continue;
			snprintf(p, sizeof(p), "%s/%s", f->dir, e->d_name);
			unlink(p);
		}
		closedir(d);
	}
	rmdir(f->dir);
	free(f);
	return 0;
}

/* The whole file, NUL-terminated; *len gets its size. */
static char *slurp(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	assert_non_null(fp);
	size_t cap = 1 << 16, n = 0;
	char *buf = malloc(cap);
	assert_non_null(buf);
	size_t r;
	while ((r = fread(buf + n, 1, cap - n - 1, fp)) > 0) {
		n += r;
		if (cap - n < 2) {
			cap *= 2;
			buf = realloc(buf, cap);
			assert_non_null(buf);
		}
	}
	fclose(fp);
	buf[n] = '\0';
	if (len)
		*len = n;
	return buf;
}

/* Split into lines in place; returns the count, each line without its '\n'. Every line must
 * end with '\n'. */
static size_t split_lines(char *buf, size_t len, char **lines, size_t max)
{
	size_t n = 0;
	char *p = buf;
	while (p < buf + len) {
		char *nl = memchr(p, '\n', (size_t)(buf + len - p));
		assert_non_null(nl);
		*nl = '\0';
		if (n < max)
			lines[n] = p;
		n++;
		p = nl + 1;
	}
	return n;
}

static void assert_matches(const char *line, const char *pattern)
{
	regex_t re;
	assert_int_equal(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
	int rc = regexec(&re, line, 0, NULL, 0);
	regfree(&re);
	if (rc != 0)
		fail_msg("line \"%s\" does not match /%s/", line, pattern);
}

#define TS_TEXT "^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3} UTC "
#define TS_JSON "^\\{\"ts\":\"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z\","

static void test_text_format(void **state)
{
	struct fixture *f = *state;
	mode_t old = umask(022);
	assert_int_equal(log_init(LOG_INFO, LOG_FORMAT_TEXT, f->target), 0);
	umask(old);
	log_info("c7f3a91e2", "app/alice@10.0.0.7:51234", "login ok after %d ms", 12);
	log_warn(NULL, NULL, "no connection");
	log_error("s04bd6c1a", NULL, "server closed");
	log_info(NULL, "app/alice@10.0.0.7:51234", "ctx only");
	log_shutdown();

	struct stat st;
	assert_int_equal(stat(f->path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0640);

	size_t len;
	char *buf = slurp(f->path, &len);
	char *lines[8];
	assert_int_equal(split_lines(buf, len, lines, 8), 4);
	char pat[256];
	snprintf(pat, sizeof(pat), TS_TEXT "\\[%d\\] INFO c7f3a91e2 app/alice@10\\.0\\.0\\.7:51234: login ok after 12 ms$",
		 (int)getpid());
	assert_matches(lines[0], pat);
	snprintf(pat, sizeof(pat), TS_TEXT "\\[%d\\] WARN: no connection$", (int)getpid());
	assert_matches(lines[1], pat);
	snprintf(pat, sizeof(pat), TS_TEXT "\\[%d\\] ERROR s04bd6c1a: server closed$", (int)getpid());
	assert_matches(lines[2], pat);
	snprintf(pat, sizeof(pat), TS_TEXT "\\[%d\\] INFO app/alice@10\\.0\\.0\\.7:51234: ctx only$", (int)getpid());
	assert_matches(lines[3], pat);
	free(buf);
}

static void test_appends(void **state)
{
	struct fixture *f = *state;
	for (int round = 0; round < 2; round++) {
		assert_int_equal(log_init(LOG_INFO, LOG_FORMAT_TEXT, f->target), 0);
		log_info(NULL, NULL, "round %d", round);
		log_shutdown();
	}
	size_t len;
	char *buf = slurp(f->path, &len);
	char *lines[4];
	assert_int_equal(split_lines(buf, len, lines, 4), 2);
	assert_non_null(strstr(lines[0], ": round 0"));
	assert_non_null(strstr(lines[1], ": round 1"));
	free(buf);
}

/* First of the tests: the level before log_init (and after log_shutdown) is info, not
 * syslog's number for it (6, which let debug lines through). */
static void test_default_level_is_info(void **state)
{
	(void)state;
	assert_true(log_enabled(LOG_INFO));
	assert_false(log_enabled(LOG_DEBUG));
	log_set_level((enum log_level)9); /* past debug: debug */
	assert_true(log_enabled(LOG_DEBUG));
	assert_false(log_enabled((enum log_level)(LOG_DEBUG + 1)));
	log_set_level(LOG_INFO);
}

static void test_level_filtering(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(log_init(LOG_WARN, LOG_FORMAT_TEXT, f->target), 0);
	assert_true(log_enabled(LOG_ERROR));
	assert_true(log_enabled(LOG_WARN));
	assert_false(log_enabled(LOG_INFO));
	assert_false(log_enabled(LOG_DEBUG));
	log_info(NULL, NULL, "hidden info");
	log_write(LOG_DEBUG, NULL, NULL, "hidden debug, called directly");
	log_warn(NULL, NULL, "shown warn");
	log_error(NULL, NULL, "shown error");
	log_set_level(LOG_DEBUG);
	assert_true(log_enabled(LOG_DEBUG));
	log_debug(NULL, NULL, "shown debug");
	log_set_level(LOG_ERROR);
	log_warn(NULL, NULL, "hidden warn");
	log_shutdown();

	size_t len;
	char *buf = slurp(f->path, &len);
	assert_null(strstr(buf, "hidden"));
	char *lines[8];
	assert_int_equal(split_lines(buf, len, lines, 8), 3);
	assert_non_null(strstr(lines[0], " WARN: shown warn"));
	assert_non_null(strstr(lines[1], " ERROR: shown error"));
	assert_non_null(strstr(lines[2], " DEBUG: shown debug"));
	free(buf);
	log_set_level(LOG_INFO);
}

static void test_json_format_and_escaping(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(log_init(LOG_DEBUG, LOG_FORMAT_JSON, f->target), 0);
	log_info("c1", "d\"b/u\\@h:1", "q\" b\\ nl\n cr\r tab\t ctl\x01 esc\x1b del\x7f "
				       "utf8 \xc3\xa9\xe2\x82\xac\xf0\x9f\x90\x98 bad \xff \xc3 \xed\xa0\x80 \xc0\xaf end");
	log_warn(NULL, NULL, "plain");
	log_shutdown();

	size_t len;
	char *buf = slurp(f->path, &len);
	char *lines[4];
	assert_int_equal(split_lines(buf, len, lines, 4), 2);
	char pat[256];
	snprintf(pat, sizeof(pat), TS_JSON "\"pid\":%d,\"level\":\"info\",\"id\":\"c1\",\"ctx\":\"d\\\\\"b/u\\\\\\\\@h:1\",\"db\":\"d\\\\\"b\",\"user\":\"u\\\\\\\\\","
		 "\"addr\":\"h:1\",\"msg\":",
		 (int)getpid());
	assert_matches(lines[0], pat);
	const char *msg = strstr(lines[0], "\"msg\":");
	assert_non_null(msg);
	assert_string_equal(msg, "\"msg\":\"q\\\" b\\\\ nl\\n cr\\r tab\\t ctl\\u0001 esc\\u001b del\\u007f "
				 "utf8 \xc3\xa9\xe2\x82\xac\xf0\x9f\x90\x98 bad \\ufffd \\ufffd "
				 "\\ufffd\\ufffd\\ufffd \\ufffd\\ufffd end\"}");
	snprintf(pat, sizeof(pat), TS_JSON "\"pid\":%d,\"level\":\"warn\",\"id\":null,\"ctx\":null,\"db\":null,\"user\":null,"
		 "\"addr\":null,\"msg\":\"plain\"\\}$",
		 (int)getpid());
	assert_matches(lines[1], pat);
	free(buf);
}

/* Names with the separators in them: the context keeps them apart (%2F, %40, %25), and JSON
 * lines carry database, user and address as separate fields, unescaped. */
static void test_ctx_fields(void **state)
{
	struct fixture *f = *state;
	char ctx[128];
	size_t n = log_ctx_format(ctx, sizeof ctx, "a/b%c", "u@v", "127.0.0.1:5");
	assert_int_equal(n, strlen(ctx));
	assert_string_equal(ctx, "a%2Fb%25c/u%40v@127.0.0.1:5");
	char small[8];
	log_ctx_format(small, sizeof small, "database", "user", "addr");
	assert_string_equal(small, "databas");

	assert_int_equal(log_init(LOG_DEBUG, LOG_FORMAT_JSON, f->target), 0);
	log_info("c1", ctx, "one");
	log_info("c2", "-/-@[::1]:7", "two");
	log_info("c3", "no shape", "three");
	log_shutdown();
	size_t len;
	char *buf = slurp(f->path, &len);
	char *lines[4];
	assert_int_equal(split_lines(buf, len, lines, 4), 3);
	assert_non_null(strstr(lines[0], "\"db\":\"a/b%c\",\"user\":\"u@v\",\"addr\":\"127.0.0.1:5\",\"msg\":\"one\""));
	assert_non_null(strstr(lines[1], "\"db\":null,\"user\":null,\"addr\":\"[::1]:7\",\"msg\":\"two\""));
	assert_non_null(strstr(lines[2], "\"db\":null,\"user\":null,\"addr\":null,\"msg\":\"three\""));
	free(buf);
}

static void test_text_escaping(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(log_init(LOG_INFO, LOG_FORMAT_TEXT, f->target), 0);
	log_info("c1\n", "db\r/u", "a\nfake line\x01 tab\t ok \xc3\xa9");
	log_shutdown();

	size_t len;
	char *buf = slurp(f->path, &len);
	char *lines[4];
	assert_int_equal(split_lines(buf, len, lines, 4), 1);
	const char *p = strstr(lines[0], " INFO ");
	assert_non_null(p);
	assert_string_equal(p, " INFO c1\\n db\\r/u: a\\nfake line\\x01 tab\t ok \xc3\xa9");
	free(buf);
}

/* Whether s[0, n) is valid UTF-8 (structure only: enough to see a sequence was not split). */
static bool utf8_whole(const unsigned char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		size_t k = s[i] < 0x80 ? 1 : s[i] >= 0xf0 ? 4 : s[i] >= 0xe0 ? 3 : 2;
		if (i + k > n)
			return false;
		for (size_t j = 1; j < k; j++)
			if ((s[i + j] & 0xc0) != 0x80)
				return false;
		i += k;
	}
	return true;
}

static void test_truncation(void **state)
{
	struct fixture *f = *state;
	static char huge[10000], quotes[3000], accents[4001];
	memset(huge, 'x', sizeof(huge) - 1);
	memset(quotes, '"', sizeof(quotes) - 1);
	for (size_t i = 0; i + 1 < sizeof(accents); i += 2)
		memcpy(accents + i, "\xc3\xa9", 2);

	assert_int_equal(log_init(LOG_INFO, LOG_FORMAT_TEXT, f->target), 0);
	log_info("c1", NULL, "%s", huge);
	log_info("c1", NULL, "%s tail", huge + 8000); /* 1999 x: cut only by the line prefix */
	log_info(NULL, NULL, "after");
	log_shutdown();

	size_t len;
	char *buf = slurp(f->path, &len);
	char *lines[8];
	assert_int_equal(split_lines(buf, len, lines, 8), 3);
	for (int i = 0; i < 2; i++) {
		size_t l = strlen(lines[i]);
		assert_true(l + 1 <= LOG_LINE_MAX);
		assert_true(l + 1 >= LOG_LINE_MAX - 8); /* the space was used */
		assert_string_equal(lines[i] + l - 4, "x...");
	}
	assert_non_null(strstr(lines[2], "INFO: after"));
	free(buf);
	unlink(f->path);

	assert_int_equal(log_init(LOG_INFO, LOG_FORMAT_JSON, f->target), 0);
	log_info("c1", "db/u@h:1", "%s", huge);
	log_info("c1", "db/u@h:1", "%s", quotes);
	log_info("c1", "db/u@h:1", "%s", accents);
	log_info(huge, "db/u@h:1", "id too long");
	log_info("c1", "db/u@h:1", "after");
	log_shutdown();

	buf = slurp(f->path, &len);
	assert_int_equal(split_lines(buf, len, lines, 8), 5);
	for (int i = 0; i < 4; i++) {
		size_t l = strlen(lines[i]);
		assert_true(l + 1 <= LOG_LINE_MAX);
		assert_true(l + 1 >= LOG_LINE_MAX - 8);
		assert_string_equal(lines[i] + l - 5, "...\"}");
		assert_true(utf8_whole((const unsigned char *)lines[i], l));
	}
	/* An escape is never split: the quotes line is \" pairs up to the cut. */
	const char *q = strstr(lines[1], "\"msg\":\"") + 7;
	size_t qlen = strlen(q) - 5;
	assert_int_equal(qlen % 2, 0);
	for (size_t i = 0; i < qlen; i += 2)
		assert_memory_equal(q + i, "\\\"", 2);
	/* The over-long id is cut inside the id; the object is still closed. */
	assert_null(strstr(lines[3], "\"msg\""));
	assert_non_null(strstr(lines[4], "\"msg\":\"after\"}"));
	free(buf);
}

/* Run fn with fd 2 pointing at a file; returns what was written to it. */
static char *capture_stderr(struct fixture *f, void (*fn)(struct fixture *))
{
	char path[160];
	snprintf(path, sizeof(path), "%s/stderr", f->dir);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	fflush(stderr);
	int saved = dup(STDERR_FILENO);
	assert_true(saved >= 0);
	assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
	close(fd);
	fn(f);
	assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
	close(saved);
	return slurp(path, NULL);
}

/* Outside log_init..log_shutdown lines keep the format of the last log_init (text before the
 * first): set text here so the test does not depend on which test ran before. */
static void log_around_lifetime(struct fixture *f)
{
	assert_int_equal(log_init(LOG_INFO, LOG_FORMAT_TEXT, "stderr"), 0);
	log_shutdown();
	log_warn("c1", NULL, "before init %d", 1);
	assert_int_equal(log_init(LOG_INFO, LOG_FORMAT_TEXT, f->target), 0);
	log_warn("c1", NULL, "while running");
	log_shutdown();
	log_warn(NULL, NULL, "after shutdown");
	log_shutdown(); /* twice is harmless */
	assert_int_equal(log_init(LOG_INFO, LOG_FORMAT_JSON, f->target), 0);
	log_shutdown();
	log_warn(NULL, NULL, "after a json shutdown");
}

static void test_sync_stderr_outside_lifetime(void **state)
{
	struct fixture *f = *state;
	char *err = capture_stderr(f, log_around_lifetime);
	char *lines[4];
	assert_int_equal(split_lines(err, strlen(err), lines, 4), 3);
	char pat[160];
	snprintf(pat, sizeof(pat), TS_TEXT "\\[%d\\] WARN c1: before init 1$", (int)getpid());
	assert_matches(lines[0], pat);
	snprintf(pat, sizeof(pat), TS_TEXT "\\[%d\\] WARN: after shutdown$", (int)getpid());
	assert_matches(lines[1], pat);
	assert_matches(lines[2], TS_JSON ".*\"msg\":\"after a json shutdown\"\\}$");
	free(err);

	char *file = slurp(f->path, NULL);
	assert_int_equal(split_lines(file, strlen(file), lines, 4), 1);
	assert_non_null(strstr(lines[0], "WARN c1: while running"));
	free(file);
}

static void log_to_stderr_target(struct fixture *f)
{
	(void)f;
	assert_int_equal(log_init(LOG_INFO, LOG_FORMAT_JSON, "stderr"), 0);
	log_info("c1", NULL, "via the logger thread");
	log_shutdown();
}

static void test_stderr_target(void **state)
{
	struct fixture *f = *state;
	char *err = capture_stderr(f, log_to_stderr_target);
	char *lines[4];
	assert_int_equal(split_lines(err, strlen(err), lines, 4), 1);
	assert_matches(lines[0], TS_JSON ".*\"msg\":\"via the logger thread\"\\}$");
	free(err);
}

static void test_bad_targets(void **state)
{
	struct fixture *f = *state;
	char missing[200];
	snprintf(missing, sizeof(missing), "file:%s/no/such/dir.log", f->dir);
	assert_int_equal(log_init(LOG_INFO, LOG_FORMAT_TEXT, "bogus"), -EINVAL);
	assert_int_equal(log_init(LOG_INFO, LOG_FORMAT_TEXT, "file:"), -EINVAL);
	assert_int_equal(log_init(LOG_INFO, LOG_FORMAT_TEXT, "stderr:"), -EINVAL);
	assert_int_equal(log_init(LOG_INFO, (enum log_format)7, "stderr"), -EINVAL);
	assert_int_equal(log_init(LOG_INFO, LOG_FORMAT_TEXT, missing), -ENOENT);

	assert_int_equal(log_init(LOG_INFO, LOG_FORMAT_TEXT, f->target), 0);
	assert_int_equal(log_init(LOG_INFO, LOG_FORMAT_TEXT, f->target), -EBUSY);
	log_shutdown();
}

/* PgBouncer's facility names, as syslog.h numbers them (facility << 3). */
static void test_syslog_facility_names(void **state)
{
	(void)state;
	assert_int_equal(log_syslog_facility("daemon"), 3 << 3);
	assert_int_equal(log_syslog_facility("local3"), 19 << 3);
	assert_int_equal(log_syslog_facility("kern"), -EINVAL);
	assert_int_equal(log_set_syslog("tusk", "kern"), -EINVAL);
	assert_int_equal(log_set_syslog("", "daemon"), -EINVAL);
	assert_int_equal(log_set_syslog("tusk", "daemon"), 0);
}

static void test_syslog_target(void **state)
{
	(void)state;
	/* Only that it starts, takes lines and stops: where syslog puts them is the system's. */
	assert_int_equal(log_init(LOG_DEBUG, LOG_FORMAT_TEXT, "syslog"), 0);
	log_debug("c1", "db/u@h:1", "tusk unit test: syslog target");
	log_shutdown();
}

#define THREADS 8
#define LINES_PER_THREAD 20000

static void *spam(void *arg)
{
	int t = (int)(intptr_t)arg;
	for (int i = 0; i < LINES_PER_THREAD; i++)
		log_info("c1", "db/u@h:1", "thread %d line %d", t, i);
	return NULL;
}

static void test_concurrent(void **state)
{
	struct fixture *f = *state;
	pthread_t th[THREADS];
	uint64_t dropped_before = log_dropped();

	assert_int_equal(log_init(LOG_INFO, LOG_FORMAT_TEXT, f->target), 0);
	for (int t = 0; t < THREADS; t++)
		assert_int_equal(pthread_create(&th[t], NULL, spam, (void *)(intptr_t)t), 0);
	for (int t = 0; t < THREADS; t++)
		pthread_join(th[t], NULL);
	log_shutdown();
	uint64_t dropped = log_dropped() - dropped_before;

	size_t len;
	char *buf = slurp(f->path, &len);
	static char *lines[THREADS * LINES_PER_THREAD];
	size_t n = split_lines(buf, len, lines, THREADS * LINES_PER_THREAD);
	assert_int_equal(n + dropped, THREADS * LINES_PER_THREAD);

	/* Every line whole, and each thread's lines in the order it logged them. */
	int last[THREADS];
	for (int t = 0; t < THREADS; t++)
		last[t] = -1;
	for (size_t i = 0; i < n; i++) {
		const char *p = strstr(lines[i], " INFO c1 db/u@h:1: thread ");
		assert_non_null(p);
		int t, k, used = 0;
		assert_int_equal(sscanf(p, " INFO c1 db/u@h:1: thread %d line %d%n", &t, &k, &used), 2);
		assert_int_equal(p[used], '\0');
		assert_true(t >= 0 && t < THREADS);
		assert_true(k > last[t]);
		last[t] = k;
	}
	print_message("concurrent: %zu lines written, %llu dropped\n", n, (unsigned long long)dropped);
	free(buf);
}

/* Drops for sure: the target is a pipe nobody reads until everything is logged. */
struct pipe_reader {
	int fd;
	size_t lines;
};

static void *drain_pipe(void *arg)
{
	struct pipe_reader *r = arg;
	char buf[65536];
	ssize_t n;
	while ((n = read(r->fd, buf, sizeof(buf))) > 0)
		for (ssize_t i = 0; i < n; i++)
			r->lines += buf[i] == '\n';
	return NULL;
}

static void test_full_queue_drops(void **state)
{
	struct fixture *f = *state;
	char fifo[160], target[170];
	snprintf(fifo, sizeof(fifo), "%s/fifo", f->dir);
	snprintf(target, sizeof(target), "file:%s", fifo);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	struct pipe_reader r = { .fd = open(fifo, O_RDONLY | O_NONBLOCK) };
	assert_true(r.fd >= 0);

	uint64_t dropped_before = log_dropped();
	assert_int_equal(log_init(LOG_INFO, LOG_FORMAT_TEXT, target), 0);
	/* A pipe holds 64 kB, the ring 1024 lines: 4000 lines of ~150 bytes cannot all fit. */
	for (int i = 0; i < 4000; i++)
		log_info("c1", NULL, "%0100d", i);
	uint64_t dropped = log_dropped() - dropped_before;
	assert_true(dropped > 0);

	int fl = fcntl(r.fd, F_GETFL);
	assert_int_equal(fcntl(r.fd, F_SETFL, fl & ~O_NONBLOCK), 0);
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, drain_pipe, &r), 0);
	log_shutdown(); /* flushes into the pipe as it drains, then closes it: EOF for the reader */
	pthread_join(th, NULL);
	close(r.fd);
	assert_int_equal(log_dropped() - dropped_before, dropped); /* nothing more lost */
	assert_int_equal(r.lines + dropped, 4000);
	print_message("full queue: %zu lines written, %llu dropped\n", r.lines, (unsigned long long)dropped);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_default_level_is_info),
		cmocka_unit_test_setup_teardown(test_text_format, setup, teardown),
		cmocka_unit_test_setup_teardown(test_appends, setup, teardown),
		cmocka_unit_test_setup_teardown(test_level_filtering, setup, teardown),
		cmocka_unit_test_setup_teardown(test_json_format_and_escaping, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ctx_fields, setup, teardown),
		cmocka_unit_test_setup_teardown(test_text_escaping, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sync_stderr_outside_lifetime, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stderr_target, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_targets, setup, teardown),
		cmocka_unit_test_setup_teardown(test_syslog_target, setup, teardown),
		cmocka_unit_test(test_syslog_facility_names),
		cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_full_queue_drops, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
