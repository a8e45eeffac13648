/* Internal to frontend/: replication connections (docs/pooling.md, "Replication
 * connections"). A client whose startup packet asks for replication (replication=true for a
 * physical one: pg_basebackup, pg_receivewal, a standby's walreceiver; replication=database
 * for a logical one: pg_recvlogical, a subscription) is a session kind of its own: after its
 * authentication it gets a server connection of its own, opened for it with its startup
 * parameters and closed with it, never pooled; the bytes then pass both ways unread (the
 * replication protocol's commands, COPY both ways), framed only to know where messages end. */
#ifndef TUSK_FRONTEND_REPLICATION_H
#define TUSK_FRONTEND_REPLICATION_H

#include <stdbool.h>

#include "proto/proto.h"

struct client;
struct client_kind;
struct server;

enum repl_mode { REPL_NONE, REPL_PHYSICAL, REPL_LOGICAL };

/* What a startup packet's "replication" value asks for, read as PostgreSQL reads it
 * (database, or a boolean: on/off, true/false, yes/no, 1/0 and their unique prefixes);
 * -1 when it is none of these. */
int repl_mode_of(const char *value);

/* Keep what the server connection's startup packet will carry: every parameter of st but
 * user, database and protocol options (_pq_.*). 0, -ENOMEM, or -EINVAL when they are more
 * than SERVER_LOGIN_EXTRA_MAX. */
__attribute__((warn_unused_result)) int repl_keep_startup(struct client *c, const struct proto_startup *st,
							    enum repl_mode mode);
/* A physical replication client: hba_file matches it by the keyword "replication". */
bool repl_is_physical(const struct client *c);
/* SHOW CLIENTS: "none", "physical" or "logical" (PgBouncer's column), and the server of
 * c's own (NULL: none, or not yet). */
const char *repl_mode_name(const struct client *c);
const struct server *repl_server(const struct client *c);
/* Teardown of c (free_client): what repl_keep_startup kept. */
void repl_free(struct client *c);

extern const struct client_kind repl_kind;

#endif
