/* libpq for tusk's blocking clients (kv's commands, replication and router threads, the
 * cache's catalog and logical-decoding threads, `tusk top`): include this instead of
 * <libpq-fe.h>. The functions tusk calls are defined in pq.c under libpq's own names and
 * forward to libpq.so.5, opened with dlopen at the first call (libpq is not linked: it and
 * what it pulls in would be ~3 MB of every tusk's RSS, docs/performance.md). When it cannot
 * be opened, PQconnectdbParams/PQconnectdb log why and return NULL, which every caller
 * already reports as a failed connection. Only the functions listed in pq.c exist. */
#ifndef TUSK_PQ_PQ_H
#define TUSK_PQ_PQ_H

#include <libpq-fe.h>

#endif
