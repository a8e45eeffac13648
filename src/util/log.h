/* Logging: levels are checked before any formatting; lines are formatted on the calling
 * thread into a bounded queue and written by one logger thread, so an event loop never
 * blocks on log I/O. When the queue is full lines are dropped and counted. */
#ifndef TUSK_UTIL_LOG_H
#define TUSK_UTIL_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The logger's own types; config/ reads logging.level and logging.format into them. */
enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

#define LOG_LINE_MAX 2048 /* bytes per line, '\n' included; a longer line is cut and ends in "..." */

/* target: "stderr", "file:PATH" or "syslog". 0 or a negative errno. Before log_init (and
 * after log_shutdown) lines go synchronously to stderr, so startup errors are seen. */
__attribute__((warn_unused_result))
int log_init(enum log_level level, enum log_format format, const char *target);
/* syslog(3)'s facility named as PgBouncer's syslog_facility names it: auth, authpriv, daemon,
 * user, local0 to local7. The LOG_* value, or -EINVAL. */
int log_syslog_facility(const char *name);
/* For the syslog target: the ident and facility (a name log_syslog_facility takes) openlog(3)
 * gets. Before log_init; by default "tusk" and daemon. 0 or -EINVAL. */
__attribute__((warn_unused_result))
int log_set_syslog(const char *ident, const char *facility);
/* SIGUSR1 (log rotation): reopen a file:PATH target by name, so lines go to the new file
 * once the old one was renamed. No-op for stderr and syslog. 0 or a negative errno (the
 * old file is kept). Same thread as log_init. */
__attribute__((warn_unused_result))
int log_reopen(void);
/* Flush what is queued, stop the logger thread. */
void log_shutdown(void);
void log_set_level(enum log_level level);
bool log_enabled(enum log_level level);
uint64_t log_dropped(void);

/* A connection's context for log_write, "db/user@addr:port", into out[cap] (cut to fit). In
 * the database name '%' and '/', in the user name '%' and '@' are written %25, %2F, %40, so
 * that the first '/' and the first '@' after it always split the three parts (JSON lines carry
 * them as "db", "user" and "addr"). Returns the length written. */
size_t log_ctx_format(char *out, size_t cap, const char *db, const char *user, const char *addr);

/* id: the connection id ("c7f3a91e2") or NULL; ctx: "db/user@addr:port" or NULL.
 * Text line: "2026-11-21 07:27:24.123 UTC [pid] LEVEL id db/user@addr:port: message".
 * JSON line: {"ts":..,"level":..,"id":..,"ctx":..,"db":..,"user":..,"addr":..,"msg":..} with
 * proper escaping; db, user and addr split from a ctx made by log_ctx_format (null when ctx is
 * NULL or not of that shape, and db and user null for "-/-@addr", a client before its
 * startup packet). */
void log_write(enum log_level level, const char *id, const char *ctx, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Beyond the contract above: log_init returns -EINVAL for an unknown target or format, -EBUSY
 * when already running, or the open(2) error of the log file (created 0640, O_APPEND).
 * log_init and log_shutdown are called from one thread (startup, exit), never concurrently.
 * Outside log_init..log_shutdown lines keep the format of the last log_init (text before any).
 * log_dropped also counts queued lines the target failed to take (a full disk). Text lines
 * escape control characters (\n, \r, \xHH) so one call is one line; syslog text lines leave
 * out the timestamp and pid, which syslog adds. JSON lines also carry "pid", write null for a
 * NULL id or ctx, and replace invalid UTF-8 with U+FFFD. */

#define log_at(level, id, ctx, ...)                               \
	do {                                                          \
		if (log_enabled(level))                                   \
			log_write((level), (id), (ctx), __VA_ARGS__);         \
	} while (0)
#define log_error(id, ctx, ...) log_at(LOG_ERROR, id, ctx, __VA_ARGS__)
#define log_warn(id, ctx, ...) log_at(LOG_WARN, id, ctx, __VA_ARGS__)
#define log_info(id, ctx, ...) log_at(LOG_INFO, id, ctx, __VA_ARGS__)
#define log_debug(id, ctx, ...) log_at(LOG_DEBUG, id, ctx, __VA_ARGS__)

#endif
