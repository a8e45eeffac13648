/* The kv's Redis listener (docs/kv.md, "The Redis protocol"): a listen entry with
 * `protocol: redis` speaks RESP2 to Redis clients, on the workers, and runs each command as
 * calls of the kv API through the same router as the kv database (kv/router.h): GET (also of
 * a counter), SET (EX/PX/NX/XX), DEL, EXISTS, MGET, MSET, EXPIRE/PEXPIRE, TTL/PTTL,
 * INCR/DECR/INCRBY/DECRBY (the converging counter), SCAN (MATCH prefix*, COUNT), KEYS (prefix* or a key), DBSIZE, PING,
 * ECHO, AUTH (hba_file / pool rule, auth_file, auth_query), SELECT (kv_databases), HELLO 2/3,
 * QUIT; over TLS when the entry has it. Off unless such a listen entry exists. */
#ifndef TUSK_KV_RESP_FRONT_H
#define TUSK_KV_RESP_FRONT_H

#include "worker/worker.h"

/* Its per-worker connections (closed at stop). Registered by daemon's start. */
extern struct worker_hooks kv_resp_worker_hooks;

/* At startup, before the workers: take the connections of redis listeners
 * (client_protocol_register). */
void kv_resp_register(void);

#endif
