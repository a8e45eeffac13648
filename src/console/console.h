/* The admin console: the virtual database "tusk" (also answering as "pgbouncer", so existing
 * tooling works). Its clients authenticate like any other, must be listed in admin.users or
 * admin.stats_users, never get a server, and have their queries (SHOW POOLS, PAUSE, ...)
 * answered here, on their own worker, over the simple or the extended protocol. */
#ifndef TUSK_CONSOLE_CONSOLE_H
#define TUSK_CONSOLE_CONSOLE_H

#include <stdbool.h>
#include <stdint.h>

struct client;
struct worker;
struct tusk_config;
struct console_sets;

/* SET key = value (set.c): the console keeps each setting and asks for a reload; that reload
 * (daemon_reload, main thread) applies every SET kept over the file's values. A reload no SET
 * asked for (RELOAD, SIGHUP) forgets them: the file's values come back. */
struct console_sets *console_sets_new(void);
void console_sets_free(struct console_sets *s);
/* In a reload, to the configuration just loaded from the file: each SET kept (logged), or
 * none when no SET asked for this reload (they are forgotten). Returns how many applied. */
int console_sets_apply(struct console_sets *s, struct tusk_config *cfg);
struct console_kills;
struct worker_hooks;

/* Whether a startup packet for database makes the client an admin client. */
bool console_is_admin_db(const char *database);
/* At startup, before the workers: register the console's session kind (frontend's
 * client_kind.h: its clients authenticate by hba_file, else admin.client_auth, must be
 * listed, and have their input read by frontend/vdb.c through c->vdb) and the move hook that
 * replays missed kills (below). */
void console_register(void);
/* KILL and KILL_CLIENT close clients worker by worker. A client moving between workers
 * (worker_balance) that left one before it ran a kill and reached one after it ran it was in
 * neither's list: kills are numbered in the order they reach every worker's inbox, a moving
 * client carries the number its old worker had reached (console_kills_seen), and its new
 * worker replays for it the kills it missed (console_kills_catch_up). */
struct console_kills *console_kills_new(void);
/* The console's tenancy on every worker (worker.h): the number of the last kill run there. */
extern struct worker_hooks console_worker_hooks;
void console_kills_free(struct console_kills *k);
uint32_t console_kills_seen(const struct worker *w);
/* On w's thread, for c just linked on w: true when a missed kill closed it. */
bool console_kills_catch_up(struct worker *w, struct client *c, uint32_t seen);

#endif
