/* Replication between the zones of the kv store: one thread per link (local shard database,
 * peer instance), pulling the peer's own writes with the commit-safe xid8 watermark and
 * applying them through kv.apply_batch (docs/kv.md, "Replication"). tusk's own background
 * work: plain blocking libpq, never on a worker's loop. */
#ifndef TUSK_KV_REPLICATE_H
#define TUSK_KV_REPLICATE_H

#include <stdbool.h>
#include <stdint.h>

#include "kv/conn.h"

struct tusk_config;
struct kv_replicator;

/* A copy of one link's counters, for the console (SHOW KV) and /metrics. */
struct kv_link_stats {
	int local_id, peer_id, shard;
	bool connected;          /* both connections up */
	uint64_t applied;        /* rows that changed the local copy */
	uint64_t skipped;        /* rows not newer than the local version: conflicts lost, replays */
	uint64_t quarantined;    /* poison rows moved to kv.quarantine */
	uint64_t batches, passes;
	int64_t lag_rows;        /* the peer's rows still to pull when the last pass began (capped) */
	double lag_seconds;      /* age of the snapshot of the last pass that caught up; -1: never */
	int batch_size;          /* the adaptive page size now */
	uint64_t digest_mismatches; /* anti-entropy: buckets that differed from the peer's */
	uint64_t repaired;       /* anti-entropy: rows of the peer that changed the local copy */
	char last_error[KV_ERR_MAX]; /* "" when the last pass succeeded */
};

/* Start replication when cfg has a kv section (*out = NULL otherwise). The catalog is read
 * in the background, retried until it answers, and the links started from it; cfg is not
 * kept. Each newer version read is also given to on_catalog(arg, catalog) (NULL: none), on
 * the catalog's thread, after the links follow it (the kv database's routing,
 * kv_router_follow). 0 or -ENOMEM. */
struct kv_catalog;
typedef void kv_catalog_hook(void *arg, const struct kv_catalog *cat);
__attribute__((warn_unused_result))
int kv_replicate_start(const struct tusk_config *cfg, kv_catalog_hook *on_catalog, void *arg,
		       struct kv_replicator **out);
/* Stop every link (NULL is fine). Waits for the statements in flight. The counters stay
 * readable (SHOW KV, /metrics) until kv_replicate_free. */
void kv_replicate_stop(struct kv_replicator *r);
/* Stop if still running, and free r (NULL is fine). No reader may hold r any more. */
void kv_replicate_free(struct kv_replicator *r);

/* Read the catalog again soon (SIGHUP; a NOTIFY on kv_catalog does the same by itself): a
 * newer version starts and stops only the links it changes. An atomic store: any thread. */
void kv_replicate_reload(struct kv_replicator *r);

/* Links running now (0 until the catalog was read). */
int kv_replicate_nlinks(struct kv_replicator *r);
/* Counters of link i. 0, or -ENOENT. */
int kv_replicate_link_stats(struct kv_replicator *r, int i, struct kv_link_stats *out);

#endif
