/* bench/stats_cost.c: what the stats calls of one relayed transaction cost, alone (issue 28).
 *
 * A worker's per-transaction stats in transaction pooling: a claim answered at once (a zero
 * wait), the client's two state changes (idle -> active -> idle in one pool), one query, one
 * transaction, bytes both ways. Runs them N times on a thread that is worker 0 of 2 (its own
 * shard, as in tusk) and prints ns per transaction, best of 5 rounds. Build it against two
 * trees to compare their src/stats/stats.c (callgrind gives the instructions):
 *   cc -O3 -flto -Isrc -o /tmp/stats_cost bench/stats_cost.c src/stats/stats.c
 *   /tmp/stats_cost [N]      valgrind --tool=callgrind /tmp/stats_cost 100000 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "stats/stats.h"

/* src/runtime/thread.c's, without the runtime: this thread is worker 0. */
_Thread_local int runtime_worker_index = 0;

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 5000000;
	if (n <= 0)
		return 2;
	stats_set_shards(2);
	struct stats *st = stats_new();
	struct stats_pool *sp = stats_pool_new();
	if (!st || !sp)
		return 1;
	stats_client_move(st, NULL, -1, sp, STATS_CLIENT_IDLE);
	double best = 0;
	for (int round = 0; round < 5; round++) {
		double t = now();
		for (long i = 0; i < n; i++) {
			stats_count_wait(sp, 0);
			stats_client_move(st, sp, STATS_CLIENT_IDLE, sp, STATS_CLIENT_ACTIVE);
			stats_add_received(sp, 60);
			stats_count_query(sp, 0.0003);
			stats_count_xact(sp, 0.0003);
			stats_add_sent(sp, 300);
			stats_client_move(st, sp, STATS_CLIENT_ACTIVE, sp, STATS_CLIENT_IDLE);
		}
		double ns = (now() - t) / (double)n * 1e9;
		if (round == 0 || ns < best)
			best = ns;
	}
	struct stats_counters c;
	stats_pool_read(sp, &c);
	printf("%.1f ns per transaction (best of 5 rounds of %ld; %llu transactions counted)\n", best, n,
	       (unsigned long long)c.xact_count);
	stats_pool_free(sp);
	stats_free(st);
	return 0;
}
