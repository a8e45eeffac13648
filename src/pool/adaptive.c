/* The adaptive active-server bound: see adaptive.h. */
#include "pool/adaptive.h"

static int clamp(int v, int lo, int hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

int adaptive_near(int limit)
{
	return limit / 8 > 1 ? limit / 8 : 1;
}

int adaptive_step_size(int limit, int run)
{
	int step = adaptive_near(limit) << (run < 3 ? run : 3);
	int half = limit / 2 > 1 ? limit / 2 : 1;
	return step < half ? step : half;
}

/* Learning starts afresh: no window to compare with, no direction, steps small again. */
static void forget(struct adaptive *a)
{
	a->have_prev = false;
	a->settled = false;
	a->doubt = false;
	a->dir = 0;
	a->run = 0;
}

void adaptive_open(struct adaptive *a, int hi)
{
	a->limit = hi;
	forget(a);
}

int adaptive_step(struct adaptive *a, const struct adaptive_window *w, int lo, int hi)
{
	if (lo < 1)
		lo = 1;
	if (hi < lo)
		hi = lo;
	a->limit = a->limit <= 0 ? hi : clamp(a->limit, lo, hi);
	a->tput = w->seconds > 0 ? (double)w->xacts / w->seconds : 0;
	a->latency = w->xacts > 0 ? w->xact_seconds / (double)w->xacts : 0;
	if (!w->reached || w->seconds <= 0) {
		/* Demand below the bound: this window says nothing about it. The next one that
		 * reaches it starts afresh (its predecessor is not comparable). */
		forget(a);
		return a->limit;
	}
	if (w->xacts == 0) {
		adaptive_open(a, hi);
		return a->limit;
	}
	int dir;
	if (!a->have_prev) {
		/* The first comparable window: probe, downwards from the top, else upwards. */
		dir = a->limit >= hi ? -1 : +1;
	} else {
		double gain = a->tput / a->prev_tput;
		if (a->dir > 0)
			/* Grew: keep growing only while it pays. */
			dir = gain > 1.0 + ADAPTIVE_EPS ? +1 : -1;
		else
			/* Shrank: keep shrinking while throughput holds; lost some: grow back. */
			dir = gain >= 1.0 - ADAPTIVE_EPS ? -1 : +1;
		if (dir != a->dir && !a->doubt) {
			/* One window against the direction may be noise: stay here for one more,
			 * compared with the same window before (prev_tput kept), and turn only if
			 * it agrees. */
			a->doubt = true;
			return a->limit;
		}
	}
	a->doubt = false;
	/* Until the first turn steps double while the direction holds (a far optimum is reached
	 * in a few windows); from then on they stay small (near the optimum the bound moves
	 * little). */
	if (a->have_prev && dir != a->dir)
		a->settled = true;
	a->run = !a->settled && dir == a->dir ? a->run + 1 : 0;
	a->prev_tput = a->tput;
	a->have_prev = true;
	int next = clamp(a->limit + dir * adaptive_step_size(a->limit, a->run), lo, hi);
	if (next == a->limit && lo < hi) {
		/* At a bound: every window that reached it moves, so that the next one has
		 * something to compare; from a bound the only move is back. */
		dir = -dir;
		a->run = 0;
		next = clamp(a->limit + dir * adaptive_step_size(a->limit, 0), lo, hi);
	}
	a->dir = dir;
	a->limit = next;
	return a->limit;
}
