/* The adaptive bound on a pool's servers in use at once (active_limit: adaptive): a hill
 * climb on throughput, one step per window. It grows the bound while throughput grows, and
 * shrinks it while throughput holds without it (the latency PostgreSQL adds with more
 * backends at once buys nothing there); a window that lost throughput turns it around. Pure
 * arithmetic, no clock, no lock: the pool's home worker feeds it each window's counts and
 * applies the bound it returns (pool.c). */
#ifndef TUSK_POOL_ADAPTIVE_H
#define TUSK_POOL_ADAPTIVE_H

#include <stdbool.h>
#include <stdint.h>

/* A window's throughput must move by more than this share to count as a change: smaller
 * moves are noise on a shared machine. */
#define ADAPTIVE_EPS 0.05

struct adaptive {
	int limit;        /* the bound now; 0 before the first window */
	int dir;          /* the last move: +1 grew, -1 shrank, 0 none since the last reset */
	int run;          /* moves in a row in direction dir, after the first */
	bool settled;     /* turned since the last reset: steps no longer double */
	bool doubt;       /* the last window said turn; held still to see whether the next agrees */
	double prev_tput; /* transactions per second of the last window that moved */
	bool have_prev;
	/* For the log line of each move: the last window's throughput and mean server-side
	 * transaction time in seconds. */
	double tput, latency;
};

struct adaptive_window {
	double seconds;      /* its length (> 0) */
	uint64_t xacts;      /* transactions that ended in it */
	double xact_seconds; /* their server-side time, summed */
	/* The bound was reached all through it (the caller's judgement, tick by tick: a claim
	 * waited, or the servers in use came near the bound, adaptive_near): demand at or above
	 * the bound, the only case in which the bound decides the throughput. */
	bool reached;
};

/* How near the servers in use must come to limit for the bound to count as reached: an
 * eighth of it, at least 1. */
int adaptive_near(int limit);
/* The step the bound moves by from limit after run moves in one direction: an eighth of it
 * (at least 1), doubled per move up to 8 times that, never more than half of it. Smaller
 * steps were lost in the noise: a 2-core machine's throughput moves by 5-10% between two
 * windows with nothing changed. */
int adaptive_step_size(int limit, int run);

/* One window: the new bound in [lo, hi] (lo >= 1, hi >= lo, hi the pool's size). Not
 * reached all through: demand was below it (for a while at least: a window that straddles
 * the start or end of a load is not comparable with its neighbours), nothing is learnt and it
 * stays. Reached with no transaction ended: what holds the servers (pinned sessions, long
 * transactions) is not what a bound trades, so it opens to hi. */
int adaptive_step(struct adaptive *a, const struct adaptive_window *w, int lo, int hi);

/* Back to hi, learning afresh (the bound held clients back while nothing moved). */
void adaptive_open(struct adaptive *a, int hi);

#endif
