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

/* At startup, before the workers: register the kv database's session kind (frontend's
 * client_kind.h), offered when the configuration has a kv section. Its clients authenticate
 * by the pool rule matching database kv (or hba_file), and have their input read by
 * frontend/vdb.c through c->vdb; a call in flight keeps its session past the client's
 * teardown until it is answered. */
void kv_front_register(void);

#endif
