/* The admin console: the virtual database "tusk" (also answering as "pgbouncer", so existing
 * tooling works). Its clients authenticate like any other, must be listed in admin.users or
 * admin.stats_users, never get a server, and have their queries (SHOW POOLS, PAUSE, ...)
 * answered here, on their own worker, over the simple or the extended protocol. */
#ifndef TUSK_CONSOLE_CONSOLE_H
#define TUSK_CONSOLE_CONSOLE_H

#include <stdbool.h>

struct client;

/* Whether a startup packet for database makes the client an admin client. */
bool console_is_admin_db(const char *database);
/* After the startup packet: authenticate (hba_file, else admin.client_auth) and, when that
 * is done at once, begin. */
void console_startup(struct client *c);
/* Authenticated: check the user is listed, greet, and answer queries from now on
 * (client.c hands its input and drained wbuf to frontend/vdb.c through c->vdb). */
void console_begin(struct client *c);
/* Teardown of an admin client (from client_close): stop timers, forget pending work. */
void console_client_closed(struct client *c);

#endif
