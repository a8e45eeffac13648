/* Logging (see log.h): a caller formats its line on its own thread and copies it into a slot of a
 * bounded ring; one logger thread writes the ring out with writev(2), or syslog(3), so no caller
 * ever waits for log I/O. Owns the one static `logger` below and the log file descriptor. */
#include "util/log.h"

/* <syslog.h> below defines LOG_INFO and LOG_DEBUG again as its own priorities (6 and 7):
 * tusk's levels are taken here, before it. */
enum { LEVEL_ERROR = LOG_ERROR, LEVEL_INFO = LOG_INFO, LEVEL_DEBUG = LOG_DEBUG };

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#define LOG_QUEUE_LINES 1024 /* ring slots: 2 MB, allocated by log_init */
#define LOG_BATCH_IOV 64    /* lines per writev(2) */
/* Room kept back while building a line for the longest ending: "...\"}\n". */
#define LOG_LINE_RESERVE 6

enum log_target_kind { LOG_TARGET_STDERR, LOG_TARGET_FILE, LOG_TARGET_SYSLOG };

struct log_slot {
	uint16_t len;  /* bytes in line, the final '\n' included */
	uint8_t level; /* for the syslog priority */
	char line[LOG_LINE_MAX];
};

/* The logger: the one piece of mutable global state in this module, because log_write is called
 * from everywhere without a handle. */
static struct {
	/* Read on every log call without a lock. Relaxed ordering is enough: nothing else is read
	 * on the strength of it, and a stale level only filters one line differently. */
	atomic_int level;
	/* How callers format lines. Stored by log_init before `running` is published under mu and
	 * by log_shutdown after it is cleared; relaxed, since a line formatted with a stale value is
	 * still a well-formed line. syslog_style drops the timestamp and pid syslog adds itself. */
	atomic_int format;
	atomic_bool syslog_style;
	atomic_uint_least64_t dropped; /* a statistic: relaxed */

	/* mu protects running, stopping, tail, count and the ring slots outside [tail, tail + count).
	 * Slots inside that window belong to the logger thread, which reads them without the lock;
	 * a producer only ever writes slot tail + count, so it cannot touch them. */
	pthread_mutex_t mu;
	pthread_cond_t nonempty; /* signalled when count leaves 0, and on stopping */
	bool running;            /* false: log_write writes to stderr synchronously */
	bool stopping;
	size_t tail;  /* oldest queued line */
	size_t count; /* queued lines */
	struct log_slot *ring;

	/* Set by log_init before the logger thread starts, used only by that thread until
	 * log_shutdown has joined it. */
	enum log_target_kind kind;
	int fd;
	pthread_t thread;
	char path[4096]; /* file target; read by log_reopen on the thread that called log_init */
} logger = {
	.level = LEVEL_INFO,
	.format = LOG_FORMAT_TEXT,
	.mu = PTHREAD_MUTEX_INITIALIZER,
	.nonempty = PTHREAD_COND_INITIALIZER,
	.fd = -1,
};

static const char *const level_text[] = { "ERROR", "WARN", "INFO", "DEBUG" };
static const char *const level_json[] = { "error", "warn", "info", "debug" };
static const int level_syslog[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };

static enum log_level clamp_level(enum log_level level)
{
	if ((int)level < LEVEL_ERROR)
		return (enum log_level)LEVEL_ERROR;
	if ((int)level > LEVEL_DEBUG)
		return (enum log_level)LEVEL_DEBUG;
	return level;
}

bool log_enabled(enum log_level level)
{
	return (int)level <= atomic_load_explicit(&logger.level, memory_order_relaxed);
}

void log_set_level(enum log_level level)
{
	atomic_store_explicit(&logger.level, (int)clamp_level(level), memory_order_relaxed);
}

uint64_t log_dropped(void)
{
	return atomic_load_explicit(&logger.dropped, memory_order_relaxed);
}

/* A line under construction. Every piece is appended whole or not at all; the first piece that
 * does not fit sets `full` and nothing more is appended. */
struct line {
	char *buf;
	size_t len;
	size_t cap;     /* LOG_LINE_MAX less the reserve for the ending */
	bool full;
	bool in_string; /* JSON: inside a string value, so a cut must close it */
};

static void put_raw(struct line *l, const char *s, size_t n)
{
	if (l->full || l->len + n > l->cap) {
		l->full = true;
		return;
	}
	memcpy(l->buf + l->len, s, n);
	l->len += n;
}

/* Length of the well-formed UTF-8 sequence at s (at most n bytes), or 0 if it is not one:
 * overlong forms, surrogates and code points past U+10FFFF are refused (RFC 3629). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	size_t len;
	unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
	if (c >= 0xc2 && c <= 0xdf)
		len = 2;
	else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	} else
		return 0;
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return len;
}

/* Append s escaped for the format. JSON: a valid string body (quotes, backslashes and control
 * characters escaped, invalid UTF-8 replaced by U+FFFD). Text: control characters escaped so
 * that one call is one line and a hostile name cannot forge another line. */
static void put_escaped(struct line *l, const char *s, size_t n, bool json)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s;
	char esc[8];

	for (size_t i = 0; i < n && !l->full;) {
		unsigned char c = p[i];
		const char *piece = esc;
		size_t plen = 2, adv = 1;
		esc[0] = '\\';
		if (c == '\n')
			esc[1] = 'n';
		else if (c == '\r')
			esc[1] = 'r';
		else if (c == '\t' && json)
			esc[1] = 't';
		else if (json && (c == '"' || c == '\\'))
			esc[1] = (char)c;
		else if (c < 0x20 && c != '\t') {
			if (json) {
				memcpy(esc + 1, "u00", 3);
				esc[4] = hex[c >> 4];
				esc[5] = hex[c & 15];
				plen = 6;
			} else {
				esc[1] = 'x';
				esc[2] = hex[c >> 4];
				esc[3] = hex[c & 15];
				plen = 4;
			}
		} else if (c == 0x7f && json) {
			piece = "\\u007f";
			plen = 6;
		} else if (c >= 0x80 && json) {
			adv = utf8_len(p + i, n - i);
			if (adv) {
				piece = s + i;
				plen = adv;
			} else {
				piece = "\\ufffd";
				plen = 6;
				adv = 1;
			}
		} else {
			piece = s + i;
			plen = 1;
		}
		put_raw(l, piece, plen);
		i += adv;
	}
}

/* A JSON string member: `,"key":"escaped"` or `,"key":null`. A value already cut short (cut)
 * leaves the string open, as if the line had filled up there. */
static void put_json_member(struct line *l, const char *key, const char *val, size_t vlen,
			    bool cut)
{
	char head[32];
	int n = snprintf(head, sizeof(head), ",\"%s\":%s", key, val ? "\"" : "null");
	put_raw(l, head, (size_t)n);
	if (!val || l->full)
		return;
	l->in_string = true;
	put_escaped(l, val, vlen, true);
	if (cut)
		l->full = true;
	put_raw(l, "\"", 1);
	if (!l->full)
		l->in_string = false;
}

static size_t put_ctx_part(char *out, size_t cap, size_t at, const char *s, const char *special)
{
	for (; *s && at + 1 < cap; s++) {
		if (strchr(special, *s)) {
			if (at + 4 > cap)
				break;
			at += (size_t)snprintf(out + at, cap - at, "%%%02X", (unsigned char)*s);
		} else {
			out[at++] = *s;
		}
	}
	return at;
}

size_t log_ctx_format(char *out, size_t cap, const char *db, const char *user, const char *addr)
{
	size_t at = 0;
	if (cap == 0)
		return 0;
	at = put_ctx_part(out, cap, at, db, "%/");
	if (at + 1 < cap)
		out[at++] = '/';
	at = put_ctx_part(out, cap, at, user, "%@");
	if (at + 1 < cap)
		out[at++] = '@';
	for (; *addr && at + 1 < cap; addr++)
		out[at++] = *addr;
	out[at] = '\0';
	return at;
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* A %XX-escaped part of a ctx (log_ctx_format) as a JSON member, unescaped. */
static void put_json_ctx_part(struct line *l, const char *key, const char *p, size_t n)
{
	char part[LOG_LINE_MAX];
	size_t k = 0;
	for (size_t i = 0; i < n && k < sizeof(part); i++) {
		int hi = p[i] == '%' && i + 2 < n ? hex_digit(p[i + 1]) : -1;
		int lo = hi >= 0 ? hex_digit(p[i + 2]) : -1;
		if (lo >= 0) {
			part[k++] = (char)(hi << 4 | lo);
			i += 2;
		} else {
			part[k++] = p[i];
		}
	}
	put_json_member(l, key, part, k, false);
}

/* "db", "user" and "addr" of a ctx of log_ctx_format's shape; null for anything else. */
static void put_json_ctx_parts(struct line *l, const char *ctx)
{
	const char *slash = ctx ? strchr(ctx, '/') : NULL;
	const char *at = slash ? strchr(slash + 1, '@') : NULL;
	if (!at) {
		static const char none[] = ",\"db\":null,\"user\":null,\"addr\":null";
		put_raw(l, none, sizeof(none) - 1);
		return;
	}
	if (slash - ctx == 1 && ctx[0] == '-' && at - slash == 2 && slash[1] == '-') {
		static const char none[] = ",\"db\":null,\"user\":null";
		put_raw(l, none, sizeof(none) - 1);
	} else {
		put_json_ctx_part(l, "db", ctx, (size_t)(slash - ctx));
		put_json_ctx_part(l, "user", slash + 1, (size_t)(at - slash - 1));
	}
	put_json_member(l, "addr", at + 1, strlen(at + 1), false);
}

/* Format one line into out[LOG_LINE_MAX]; returns its length, the final '\n' included. */
static size_t format_line(char *out, enum log_level level, const char *id, const char *ctx,
			  const char *msg, size_t mlen, bool msg_cut)
{
	struct line l = { .buf = out, .cap = LOG_LINE_MAX - LOG_LINE_RESERVE };
	bool json = atomic_load_explicit(&logger.format, memory_order_relaxed) == LOG_FORMAT_JSON;
	bool stamp = json || !atomic_load_explicit(&logger.syslog_style, memory_order_relaxed);
	char ts[64] = "";

	if (stamp) {
		struct timespec now;
		struct tm tm;
		clock_gettime(CLOCK_REALTIME, &now);
		gmtime_r(&now.tv_sec, &tm);
		size_t n = strftime(ts, sizeof(ts), json ? "%Y-%m-%dT%H:%M:%S" : "%Y-%m-%d %H:%M:%S", &tm);
		snprintf(ts + n, sizeof(ts) - n, json ? ".%03dZ" : ".%03d UTC", (int)(now.tv_nsec / 1000000));
	}

	char head[128];
	int n;
	if (json)
		n = snprintf(head, sizeof(head), "{\"ts\":\"%s\",\"pid\":%d,\"level\":\"%s\"", ts,
			     (int)getpid(), level_json[level]);
	else if (stamp)
		n = snprintf(head, sizeof(head), "%s [%d] %s", ts, (int)getpid(), level_text[level]);
	else
		n = snprintf(head, sizeof(head), "%s", level_text[level]);
	put_raw(&l, head, (size_t)n);

	if (json) {
		put_json_member(&l, "id", id, id ? strlen(id) : 0, false);
		put_json_member(&l, "ctx", ctx, ctx ? strlen(ctx) : 0, false);
		put_json_ctx_parts(&l, ctx);
		put_json_member(&l, "msg", msg, mlen, msg_cut);
		put_raw(&l, "}", 1);
	} else {
		if (id) {
			put_raw(&l, " ", 1);
			put_escaped(&l, id, strlen(id), false);
		}
		if (ctx) {
			put_raw(&l, " ", 1);
			put_escaped(&l, ctx, strlen(ctx), false);
		}
		put_raw(&l, ": ", 2);
		put_escaped(&l, msg, mlen, false);
		if (msg_cut)
			l.full = true;
	}

	/* The reserve always has room for the ending. A JSON line cut outside a string value was cut
	 * between members, so closing the object keeps it valid. */
	if (l.full) {
		const char *end = !json ? "..." : l.in_string ? "...\"}" : "}";
		memcpy(out + l.len, end, strlen(end));
		l.len += strlen(end);
	}
	out[l.len++] = '\n';
	return l.len;
}

/* write(2) all of it, for the synchronous path. Errors are ignored: there is nowhere to report. */
static void write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t r = write(fd, p, n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				struct pollfd pfd = { .fd = fd, .events = POLLOUT };
				(void)poll(&pfd, 1, 1000);
				continue;
			}
			return;
		}
		p += r;
		n -= (size_t)r;
	}
}

void log_write(enum log_level level, const char *id, const char *ctx, const char *fmt, ...)
{
	char msg[LOG_LINE_MAX];
	char line[LOG_LINE_MAX];
	va_list ap;

	if (!log_enabled(level))
		return;
	level = clamp_level(level);

	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0) { /* an encoding error in a %ls argument: log the rest of the line */
		n = 0;
		msg[0] = '\0';
	}
	bool cut = (size_t)n >= sizeof(msg);
	size_t mlen = cut ? sizeof(msg) - 1 : (size_t)n;
	size_t len = format_line(line, level, id, ctx, msg, mlen, cut);

	pthread_mutex_lock(&logger.mu);
	if (!logger.running) {
		pthread_mutex_unlock(&logger.mu);
		write_all(STDERR_FILENO, line, len);
		return;
	}
	if (logger.count == LOG_QUEUE_LINES) {
		pthread_mutex_unlock(&logger.mu);
		atomic_fetch_add_explicit(&logger.dropped, 1, memory_order_relaxed);
		return;
	}
	struct log_slot *slot = &logger.ring[(logger.tail + logger.count) % LOG_QUEUE_LINES];
	memcpy(slot->line, line, len);
	slot->len = (uint16_t)len;
	slot->level = (uint8_t)level;
	if (logger.count++ == 0)
		pthread_cond_signal(&logger.nonempty);
	pthread_mutex_unlock(&logger.mu);
}

/* writev(2) the batch, resuming after short writes; returns how many lines could not be written
 * because of an error other than EINTR/EAGAIN (a full disk, a closed pipe). */
static size_t writev_all(int fd, struct iovec *iov, size_t cnt)
{
	while (cnt > 0) {
		ssize_t r = writev(fd, iov, (int)cnt);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				struct pollfd pfd = { .fd = fd, .events = POLLOUT };
				(void)poll(&pfd, 1, 1000);
				continue;
			}
			return cnt;
		}
		size_t done = (size_t)r;
		while (cnt > 0 && done >= iov->iov_len) {
			done -= iov->iov_len;
			iov++;
			cnt--;
		}
		if (cnt > 0) {
			iov->iov_base = (char *)iov->iov_base + done;
			iov->iov_len -= done;
		}
	}
	return 0;
}

/* Write the n queued lines starting at slot tail. Runs without mu (see the comment on it). */
static void flush_slots(size_t tail, size_t n)
{
	struct iovec iov[LOG_BATCH_IOV];
	size_t lost = 0;

	for (size_t i = 0; i < n;) {
		size_t cnt = 0;
		for (; i < n && cnt < LOG_BATCH_IOV; i++, cnt++) {
			struct log_slot *s = &logger.ring[(tail + i) % LOG_QUEUE_LINES];
			if (logger.kind == LOG_TARGET_SYSLOG) {
				/* syslog(3) is line by line and ends the line itself. */
				syslog(level_syslog[s->level], "%.*s", (int)s->len - 1, s->line);
				continue;
			}
			iov[cnt].iov_base = s->line;
			iov[cnt].iov_len = s->len;
		}
		if (logger.kind != LOG_TARGET_SYSLOG)
			lost += writev_all(logger.fd, iov, cnt);
	}
	if (lost)
		atomic_fetch_add_explicit(&logger.dropped, lost, memory_order_relaxed);
}

static void *logger_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&logger.mu);
	for (;;) {
		while (logger.count == 0 && !logger.stopping)
			pthread_cond_wait(&logger.nonempty, &logger.mu);
		if (logger.count == 0)
			break; /* stopping, and everything queued is written */
		size_t tail = logger.tail, n = logger.count;
		pthread_mutex_unlock(&logger.mu);
		flush_slots(tail, n);
		pthread_mutex_lock(&logger.mu);
		logger.tail = (tail + n) % LOG_QUEUE_LINES;
		logger.count -= n;
	}
	pthread_mutex_unlock(&logger.mu);
	return NULL;
}

/* openlog(3) keeps the ident pointer: it lives here. */
static char syslog_ident[64] = "tusk";
static int syslog_facility = LOG_DAEMON;

int log_syslog_facility(const char *name)
{
	static const struct {
		const char *name;
		int value;
	} names[] = {
		{ "auth", LOG_AUTH },	  { "authpriv", LOG_AUTHPRIV }, { "daemon", LOG_DAEMON }, { "user", LOG_USER },
		{ "local0", LOG_LOCAL0 }, { "local1", LOG_LOCAL1 },	{ "local2", LOG_LOCAL2 }, { "local3", LOG_LOCAL3 },
		{ "local4", LOG_LOCAL4 }, { "local5", LOG_LOCAL5 },	{ "local6", LOG_LOCAL6 }, { "local7", LOG_LOCAL7 },
	};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (strcmp(name, names[i].name) == 0)
			return names[i].value;
	return -EINVAL;
}

int log_set_syslog(const char *ident, const char *facility)
{
	int f = log_syslog_facility(facility);
	if (f < 0 || !ident[0] || strlen(ident) >= sizeof syslog_ident)
		return -EINVAL;
	snprintf(syslog_ident, sizeof syslog_ident, "%s", ident);
	syslog_facility = f;
	return 0;
}

int log_init(enum log_level level, enum log_format format, const char *target)
{
	enum log_target_kind kind;
	int fd = -1;
	int rc;

	if (strcmp(target, "stderr") == 0) {
		kind = LOG_TARGET_STDERR;
		fd = STDERR_FILENO;
	} else if (strcmp(target, "syslog") == 0) {
		kind = LOG_TARGET_SYSLOG;
	} else if (strncmp(target, "file:", 5) == 0 && target[5] != '\0') {
		kind = LOG_TARGET_FILE;
	} else {
		return -EINVAL;
	}
	if (format != LOG_FORMAT_TEXT && format != LOG_FORMAT_JSON)
		return -EINVAL;

	pthread_mutex_lock(&logger.mu);
	bool running = logger.running;
	pthread_mutex_unlock(&logger.mu);
	if (running)
		return -EBUSY;

	struct log_slot *ring = malloc(sizeof(*ring) * LOG_QUEUE_LINES);
	if (!ring)
		return -ENOMEM;
	if (kind == LOG_TARGET_FILE) {
		fd = open(target + 5, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
		if (fd < 0) {
			rc = -errno;
			goto err_free_ring;
		}
	} else if (kind == LOG_TARGET_SYSLOG) {
		openlog(syslog_ident, LOG_PID | LOG_NDELAY, syslog_facility);
	}

	logger.ring = ring;
	logger.kind = kind;
	logger.fd = fd;
	snprintf(logger.path, sizeof logger.path, "%s", kind == LOG_TARGET_FILE ? target + 5 : "");
	logger.tail = logger.count = 0;
	logger.stopping = false;
	log_set_level(level);
	atomic_store_explicit(&logger.format, (int)format, memory_order_relaxed);
	atomic_store_explicit(&logger.syslog_style, kind == LOG_TARGET_SYSLOG, memory_order_relaxed);

	/* The logger thread takes no signals: they stay with the threads that handle them. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = -pthread_create(&logger.thread, NULL, logger_main, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc < 0)
		goto err_close;

	pthread_mutex_lock(&logger.mu);
	logger.running = true;
	pthread_mutex_unlock(&logger.mu);
	return 0;

err_close:
	atomic_store_explicit(&logger.syslog_style, false, memory_order_relaxed);
	if (kind == LOG_TARGET_FILE)
		close(fd);
	else if (kind == LOG_TARGET_SYSLOG)
		closelog();
	logger.ring = NULL;
	logger.fd = -1;
err_free_ring:
	free(ring);
	return rc;
}

void log_shutdown(void)
{
	pthread_mutex_lock(&logger.mu);
	if (!logger.running) {
		pthread_mutex_unlock(&logger.mu);
		return;
	}
	/* From here on log_write goes to stderr; what is queued is still written to the target. */
	logger.running = false;
	logger.stopping = true;
	pthread_cond_signal(&logger.nonempty);
	pthread_mutex_unlock(&logger.mu);

	pthread_join(logger.thread, NULL);

	atomic_store_explicit(&logger.syslog_style, false, memory_order_relaxed);
	if (logger.kind == LOG_TARGET_FILE)
		close(logger.fd);
	else if (logger.kind == LOG_TARGET_SYSLOG)
		closelog();
	logger.fd = -1;
	free(logger.ring);
	logger.ring = NULL;
}

int log_reopen(void)
{
	pthread_mutex_lock(&logger.mu);
	bool running = logger.running;
	pthread_mutex_unlock(&logger.mu);
	if (!running || logger.kind != LOG_TARGET_FILE)
		return 0;
	int fd = open(logger.path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
		return -errno;
	/* dup2 swaps the file under the logger thread's descriptor atomically: a write in
	 * progress lands in the old file or the new one, never nowhere. */
	int rc = dup2(fd, logger.fd) < 0 ? -errno : 0;
	close(fd);
	return rc;
}
