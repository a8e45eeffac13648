/* The operator's HTTP endpoint (admin.http): /metrics in the Prometheus text format and
 * /health. It runs in libmicrohttpd's own thread, never on a worker, and only reads shared
 * state through stats/ (atomics, and each pool's lock for a moment). See docs/operations.md, "Metrics". */
#ifndef TUSK_METRICS_METRICS_H
#define TUSK_METRICS_METRICS_H

#include <stdbool.h>

struct runtime;
struct metrics_http; /* opaque */

/* Start serving on rt->cfg->admin.http, at rt->http_addr (which daemon_start resolved).
 * *out is NULL when admin.http is absent (and 0 is returned). 0 or a negative errno, after
 * logging what failed. Call after daemon_start. */
__attribute__((warn_unused_result))
int metrics_start(struct runtime *rt, struct metrics_http **out);
/* Stop the thread and close the socket; waits for a request being served. Call before
 * daemon_stop, which frees what the handlers read. NULL is fine. */
void metrics_stop(struct metrics_http *m);
/* Open libmicrohttpd (mhd_load.c) ahead of metrics_start: it can take most of a second
 * (GnuTLS initialises), which would otherwise fall between the listeners opening and
 * /health answering. false when it cannot be opened (logged; metrics_start then fails). */
bool metrics_load_library(void);

#endif
