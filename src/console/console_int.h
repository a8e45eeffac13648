/* Internal to console/: the per-client session (console.c: protocol, output) and the
 * commands (commands.c). */
#ifndef TUSK_CONSOLE_CONSOLE_INT_H
#define TUSK_CONSOLE_CONSOLE_INT_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "console/console.h"
#include "frontend/vdb.h"

struct client;
struct console_collect;
struct client_kind;

#define CONSOLE_QUERY_MAX 1024   /* longest command text accepted */
#define CONSOLE_STATEMENTS 16    /* named statements per admin client */
#define CONSOLE_NAME_MAX VDB_NAME_MAX /* statement names */

enum console_cmd_kind {
	CONSOLE_CMD_EMPTY,
	CONSOLE_CMD_SHOW_POOLS,
	CONSOLE_CMD_SHOW_CLIENTS,
	CONSOLE_CMD_SHOW_SERVERS,
	CONSOLE_CMD_SHOW_STATS,
	CONSOLE_CMD_SHOW_DATABASES,
	CONSOLE_CMD_SHOW_CONFIG,
	CONSOLE_CMD_SHOW_LISTS,
	CONSOLE_CMD_SHOW_VERSION,
	CONSOLE_CMD_SHOW_KV,
	CONSOLE_CMD_SHOW_CACHE,
	CONSOLE_CMD_SHOW_SERVICES,
	CONSOLE_CMD_SHOW_WAITS,
	CONSOLE_CMD_SHOW_STATS_TOTALS,   /* SHOW STATS' total_* columns */
	CONSOLE_CMD_SHOW_STATS_AVERAGES, /* SHOW STATS' avg_* columns */
	CONSOLE_CMD_SHOW_TOTALS,         /* SHOW STATS over every database, as (name, value) rows */
	CONSOLE_CMD_SHOW_USERS,
	CONSOLE_CMD_SHOW_MEM,     /* memory per worker: client/server structs and buffer blocks; the cache's */
	CONSOLE_CMD_SHOW_SOCKETS, /* one row per client and server socket (also SHOW FDS) */
	CONSOLE_CMD_SHOW_ACTIVE_SOCKETS, /* SHOW SOCKETS' rows with bytes pending in a buffer */
	CONSOLE_CMD_SHOW_LISTENERS, /* one row per LISTEN/NOTIFY listener connection (notify/notify.h) */
	CONSOLE_CMD_SHOW_STATE,     /* PgBouncer's: active, paused, suspended as (key, value) rows */
	CONSOLE_CMD_SHOW_HELP, /* the last SHOW: console_run reads SHOW_POOLS..SHOW_HELP as "SHOW" */
	CONSOLE_CMD_PAUSE,
	CONSOLE_CMD_RESUME,
	CONSOLE_CMD_RELOAD,
	CONSOLE_CMD_KILL,
	CONSOLE_CMD_KILL_CLIENT,
	CONSOLE_CMD_RECONNECT,
	CONSOLE_CMD_SHUTDOWN,
	CONSOLE_CMD_SHUTDOWN_WAIT,
	CONSOLE_CMD_CACHE_FLUSH, /* CACHE FLUSH [db] */
	CONSOLE_CMD_DISABLE,     /* DISABLE db: new logins refused */
	CONSOLE_CMD_ENABLE,      /* ENABLE db */
	CONSOLE_CMD_WAIT_CLOSE,  /* WAIT_CLOSE [db]: until servers from before RECONNECT are closed */
	CONSOLE_CMD_SET,         /* SET key = value: arg is the key (set.c) */
};
#define CONSOLE_CMD_LAST CONSOLE_CMD_SET /* keep it the enum's last (fuzz_console checks the range) */

#define CONSOLE_SET_VALUE_MAX 64 /* SET's value: a number, a duration, a size or a choice */

struct console_cmd {
	enum console_cmd_kind kind;
	char arg[CONFIG_NAME_MAX]; /* database or client id; SET's key; "" when none */
	char value[CONSOLE_SET_VALUE_MAX]; /* SET's value; "" otherwise */
};

/* A column: values always travel as text; the type tells drivers how to read them. */
#define CONSOLE_TEXT 25u
#define CONSOLE_INT8 VDB_OID_INT8
struct console_columns {
	int n;
	const struct vdb_col *cols;
};

struct console_stmt {
	char name[CONSOLE_NAME_MAX];
	bool used;
	struct console_cmd cmd;
	char error[160]; /* parse error: reported at Bind/Describe/Execute */
};

/* One admin client's console state. */
struct console_session {
	struct vdb v;               /* client, output, skipping, busy, portal_set */
	bool full;                  /* listed in admin.users (else stats_users: SHOW only) */
	struct console_stmt stmts[CONSOLE_STATEMENTS]; /* [0] is the unnamed statement */
	struct console_cmd portal;  /* the portal bound last (vdb_bind_portal), when v.portal_set */
	uint64_t portal_binary;     /* its Bind's result formats: bit i, column i in binary */
	struct console_collect *collect; /* in flight, or NULL */
	ev_timer pause_timer;       /* PAUSE, WAIT_CLOSE: polls until the pools' servers are back / closed */
	char pause_db[CONFIG_NAME_MAX];
};

/* commands.c */
/* Parse one command. 0, or -EINVAL with a message in err. */
int console_parse(const char *text, size_t len, struct console_cmd *out, char *err, size_t errcap);
/* The columns a command's answer has (n == 0: none; it answers with a tag only). */
struct console_columns console_columns_of(enum console_cmd_kind kind);
/* Run cmd: append DataRows, then a CommandComplete (or an ErrorResponse) to cs->out and
 * return 0; or start async work and return 1: console_command_done is called later. */
int console_run(struct console_session *cs, const struct console_cmd *cmd);
/* SHOW STATS, STATS_TOTALS, STATS_AVERAGES and TOTALS (stats.c), by kind. */
void console_show_stats(struct console_session *cs, enum console_cmd_kind kind);
/* SHOW WAITS (stats.c): per pool, transactions, claim waits and their histogram. */
void console_show_waits(struct console_session *cs);
/* SET key = value (set.c): checked against the running configuration and queued for a
 * reload: true (the caller asks for the reload and answers), or false with an error in cs. */
bool console_set(struct console_session *cs, const struct console_cmd *cmd);
/* Stop async work of a closing client. */
void console_cancel(struct console_session *cs);
/* The admin console's session kind (console.c): what an admin client's c->kind is. */
extern const struct client_kind console_kind;

/* console.c */
/* Async work of cs ended (its rows and tag, or error, are in cs->out): go on with input. */
void console_command_done(struct console_session *cs);

#endif
