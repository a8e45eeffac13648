/* The virtual database "kv" (docs/kv.md, "Routing"): its clients authenticate like any other
 * (hba_file, else the pool rule matching database kv), never get a pooled server, and send
 * calls of the kv API over the simple or the extended protocol. Each call is parsed here, on
 * the client's worker, and run by the router (kv/router.h) on the shard of its key in this
 * zone; the answer is written back on the worker. */
#ifndef TUSK_KV_FRONT_H
#define TUSK_KV_FRONT_H

#include <stdbool.h>

struct client;
struct tusk_config;

#define KV_FRONT_DATABASE "kv"

/* Whether a startup packet for database makes the client a kv client (cfg has a kv section). */
bool kv_front_is_db(const struct tusk_config *cfg, const char *database);
/* After the startup packet: pick the rule, authenticate, and begin when that is done at once. */
void kv_front_startup(struct client *c);
/* Authenticated: greet, and answer calls from now on
 * (client.c hands its input and drained wbuf to frontend/vdb.c through c->vdb). */
void kv_front_begin(struct client *c);
/* Teardown (from client_close). A call in flight keeps its session until it is answered. */
void kv_front_closed(struct client *c);

#endif
