/* Unit tests of the pool core (libtuskpool) against a simulated host: a clock the test
 * moves, a queue of posted functions the test runs ("the loops"), and a connector whose
 * connects and checks complete only when the test says so. The cases are those that found
 * bugs in qorb and Cueball (see NOTES-backends.md). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdatomic.h>

#include "tuskpool.h"

/* ---- simulated host ---- */

#define SIM_MAX 256
struct sim_post {
	void (*fn)(void *);
	void *arg;
	int thread;
};
struct sim {
	double now;
	struct sim_post posts[SIM_MAX];
	int nposts;
	/* connector */
	struct tp_slot *connecting[SIM_MAX];
	int nconnecting;
	struct tp_slot *checking[SIM_MAX];
	int nchecking;
	int closed[TP_CLOSE__COUNT];
	int detached_on[4], attached_on[4];
	int parked;
	int post_thread_of_connect[SIM_MAX];
};

static double sim_now(void *h) { return ((struct sim *)h)->now; }

static void sim_post(void *h, int thread, void (*fn)(void *), void *arg)
{
	struct sim *s = h;
	assert_true(s->nposts < SIM_MAX);
	s->posts[s->nposts++] = (struct sim_post){ fn, arg, thread };
}

static int current_thread = -1;

/* Run posted functions in order until none is left (they may post more). */
static void sim_run(struct sim *s)
{
	while (s->nposts > 0) {
		struct sim_post p = s->posts[0];
		memmove(s->posts, s->posts + 1, (size_t)(s->nposts - 1) * sizeof *s->posts);
		s->nposts--;
		current_thread = p.thread;
		p.fn(p.arg);
		current_thread = -1;
	}
}

static void c_connect(void *ctx, struct tp_slot *slot, const struct tp_backend_addr *be)
{
	struct sim *s = ctx;
	(void)be;
	/* The core runs connects on the slot's thread. */
	assert_int_equal(current_thread, tp_slot_thread(slot));
	s->post_thread_of_connect[s->nconnecting] = current_thread;
	s->connecting[s->nconnecting++] = slot;
}

static void c_check(void *ctx, struct tp_slot *slot)
{
	struct sim *s = ctx;
	s->checking[s->nchecking++] = slot;
}

static void c_close(void *ctx, struct tp_slot *slot, enum tp_close_reason why)
{
	struct sim *s = ctx;
	s->closed[why]++;
	/* A slot closed while its connect is pending: the connector forgets it. */
	for (int i = 0; i < s->nconnecting; i++)
		if (s->connecting[i] == slot) {
			memmove(&s->connecting[i], &s->connecting[i + 1], (size_t)(s->nconnecting - i - 1) * sizeof(void *));
			s->nconnecting--;
			break;
		}
}

static void c_detach(void *ctx, struct tp_slot *slot)
{
	struct sim *s = ctx;
	assert_int_equal(current_thread, tp_slot_thread(slot));
	s->detached_on[current_thread]++;
}

static void c_attach(void *ctx, struct tp_slot *slot, int thread)
{
	struct sim *s = ctx;
	(void)slot;
	assert_int_equal(current_thread, thread);
	s->attached_on[thread]++;
}

static void c_park(void *ctx, struct tp_slot *slot)
{
	struct sim *s = ctx;
	(void)slot;
	s->parked++;
}

static const struct tp_host_ops host_ops = { .now = sim_now, .post = sim_post };
static const struct tp_connector_ops conn_ops = {
	.connect = c_connect, .check = c_check, .close = c_close, .detach = c_detach, .attach = c_attach,
	.park = c_park,
};

/* Finish the oldest pending connect. */
static struct tp_slot *finish_connect(struct sim *s, int err)
{
	assert_true(s->nconnecting > 0);
	struct tp_slot *slot = s->connecting[0];
	memmove(&s->connecting[0], &s->connecting[1], (size_t)(s->nconnecting - 1) * sizeof(void *));
	s->nconnecting--;
	current_thread = tp_slot_thread(slot);
	tp_connect_done(slot, err, err ? "connection refused" : NULL);
	current_thread = -1;
	sim_run(s);
	return slot;
}

/* tp_release from thread's own code: a hand-over's detach runs inline on that thread. */
static void release_on(int thread, struct tp_slot *slot)
{
	current_thread = thread;
	tp_release(slot, true);
	current_thread = -1;
}

/* A claim that records how it ended. */
struct rec {
	struct tp_claim c;
	struct tp_slot *slot;
	int err;
	int calls;
	int order;
	/* what tp_claim.connect said during done */
	bool by_connect;
	int connect_err;
	char connect_reason[64], connect_detail[64];
};
static int served_order;

static void rec_done(struct tp_claim *c, struct tp_slot *slot, int err)
{
	struct rec *r = (struct rec *)c;
	r->slot = slot;
	r->err = err;
	r->calls++;
	r->order = ++served_order;
	r->by_connect = c->connect != NULL;
	if (c->connect) {
		r->connect_err = c->connect->err;
		snprintf(r->connect_reason, sizeof r->connect_reason, "%s", c->connect->reason ? c->connect->reason : "");
		snprintf(r->connect_detail, sizeof r->connect_detail, "%.*s", (int)c->connect->detail_len,
			 c->connect->detail ? (const char *)c->connect->detail : "");
	}
}

static int claim(struct tp_pool *p, struct rec *r, int thread, double deadline)
{
	memset(r, 0, sizeof *r);
	r->c.done = rec_done;
	struct tp_slot *slot = NULL;
	int rc = tp_claim(p, &r->c, thread, deadline, &slot);
	if (rc == 0) {
		r->slot = slot;
		r->calls = 1;
		r->order = ++served_order;
	}
	return rc;
}

static struct tp_config base_cfg(void)
{
	return (struct tp_config){
		.name = "test", .nthreads = 2, .max_slots = 2, .backoff_first = 0.25, .backoff_max = 8,
		.breaker_failures = 3, .seed = 12345,
	};
}

static struct tp_backend_addr be_a = { .name = "a.example", .port = 5432 }, be_b = { .name = "b.example", .port = 5432 };

static struct tp_pool *make_pool(struct sim *s, const struct tp_config *cfg)
{
	memset(s, 0, sizeof *s);
	s->now = 100.0;
	struct tp_pool *p = tp_pool_new(cfg, &host_ops, s, &conn_ops, s);
	assert_non_null(p);
	return p;
}

static void finish_pool(struct sim *s, struct tp_pool *p)
{
	tp_pool_stop(p);
	sim_run(s);
	while (s->nconnecting > 0)
		finish_connect(s, 0);
	assert_int_equal(tp_pool_destroy(p), 0);
}

/* ---- cases ---- */

/* Issue 12: a bound claim whose connect fails moves to another backend instead of failing;
 * with none left it fails fast with -EHOSTUNREACH (every backend's last error). */
static void test_bound_claim_moves_to_another_backend(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	cfg.bind_connects = true;
	cfg.backoff_after = 2;
	struct tp_pool *p = make_pool(&s, &cfg);
	struct tp_backend_addr both[2] = { be_a, be_b };
	assert_int_equal(tp_pool_set_backends(p, both, 2), 0);
	struct rec r;
	assert_int_equal(claim(p, &r, 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	assert_int_equal(s.nconnecting, 1);
	const char *first = tp_slot_backend(s.connecting[0])->name;
	bool first_is_a = strcmp(first, "a.example") == 0;
	finish_connect(&s, -ECONNREFUSED);
	assert_int_equal(r.calls, 0); /* requeued, not failed */
	assert_int_equal(s.nconnecting, 1);
	assert_string_equal(tp_slot_backend(s.connecting[0])->name, first_is_a ? "b.example" : "a.example");
	finish_connect(&s, 0);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.err, 0);
	tp_release(r.slot, true);

	/* Both refuse now: the claim goes round the backends that may still be tried, then
	 * fails fast naming them. */
	struct rec r2, r3;
	assert_int_equal(claim(p, &r2, 0, s.now + 10), 0); /* the idle slot */
	assert_int_equal(claim(p, &r3, 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	int rounds = 0;
	while (s.nconnecting > 0 && rounds++ < 10)
		finish_connect(&s, -ECONNREFUSED);
	assert_int_equal(r3.calls, 1);
	assert_int_equal(r3.err, -EHOSTUNREACH);
	char why[256];
	tp_pool_last_error(p, why, sizeof why);
	assert_non_null(strstr(why, "a.example:5432"));
	assert_non_null(strstr(why, "b.example:5432"));
	tp_release(r2.slot, true);
	finish_pool(&s, p);
}

/* A connect that finds a backend of the wrong kind (-ESTALE: a switchover's old primary
 * under a primary-only pool) does not fail its bound claim: the claim waits for the host's new
 * set, or for the same backend after backoff_first, and the backend is not backed off. */
static void test_bound_claim_waits_out_a_stale_backend(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	cfg.bind_connects = true;
	cfg.fail_fast = true;
	struct tp_pool *p = make_pool(&s, &cfg);
	assert_int_equal(tp_pool_set_backends(p, &be_a, 1), 0);
	struct rec r, r2;
	assert_int_equal(claim(p, &r, 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	assert_int_equal(s.nconnecting, 1);
	finish_connect(&s, -ESTALE);
	assert_int_equal(r.calls, 0);        /* waits, not failed */
	assert_int_equal(s.nconnecting, 0);  /* and a gets no connect at once */
	/* Another claim queues behind it rather than failing fast. */
	assert_int_equal(claim(p, &r2, 1, s.now + 10), -EINPROGRESS);
	struct tp_backend_addr addr;
	enum tp_backend_state st;
	assert_true(tp_pool_backend(p, 0, &addr, &st, NULL));
	assert_int_equal(st, TP_BACKEND_UP);
	/* The host's new set: b is connected to for the head claim at once. */
	assert_int_equal(tp_pool_set_backends(p, &be_b, 1), 0);
	sim_run(&s);
	assert_true(s.nconnecting >= 1);
	assert_string_equal(tp_slot_backend(s.connecting[0])->name, "b.example");
	while (s.nconnecting > 0)
		finish_connect(&s, 0);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.err, 0);
	assert_int_equal(r2.calls, 1);
	assert_int_equal(r2.err, 0);
	release_on(0, r.slot);
	release_on(1, r2.slot);

	/* No new set: the same backend is tried again after backoff_first, until the deadline. */
	struct rec r3, r4, r5;
	assert_int_equal(claim(p, &r3, 0, s.now + 10), 0);
	assert_int_equal(claim(p, &r4, 1, s.now + 10), 0);
	assert_int_equal(claim(p, &r5, 0, s.now + 1.0), -EINPROGRESS); /* max_slots 2: waits */
	tp_release(r3.slot, false); /* closed: r5's connect */
	sim_run(&s);
	assert_int_equal(s.nconnecting, 1);
	finish_connect(&s, -ESTALE);
	assert_int_equal(r5.calls, 0);
	assert_int_equal(s.nconnecting, 0);
	s.now += 0.3; /* past backoff_first (0.25) */
	tp_pool_tick(p, 0);
	sim_run(&s);
	assert_int_equal(s.nconnecting, 1);
	finish_connect(&s, -ESTALE);
	assert_int_equal(r5.calls, 0);
	s.now += 0.8; /* past the deadline */
	tp_pool_tick(p, 0);
	sim_run(&s);
	assert_int_equal(r5.calls, 1);
	assert_int_equal(r5.err, -ETIMEDOUT);
	assert_true(tp_pool_backend(p, 0, &addr, &st, NULL));
	assert_int_equal(st, TP_BACKEND_UP); /* never backed off for it */
	char why[64];
	assert_true(tp_pool_backend_error(p, 0, why, sizeof why));
	assert_string_equal(why, "connection refused"); /* what the timed-out claim is told */
	release_on(1, r4.slot);
	finish_pool(&s, p);
}

/* Issue 22: during a failover a primary-only pool's connects find the standbys (-ESTALE,
 * each held backoff_first) while the dead primary backs off. Neither a new claim (fail_fast)
 * nor the bound claim whose connect to the dead one failed may fail while a hold lasts: the
 * set is changing, and the claims wait for the promoted standby (tp_pool_kick after the hold). */
static void test_claims_wait_while_a_backend_is_held_after_estale(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	cfg.bind_connects = true;
	cfg.fail_fast = true;
	cfg.backoff_after = 1;
	struct tp_pool *p = make_pool(&s, &cfg);
	struct tp_backend_addr both[2] = { be_a, be_b };
	assert_int_equal(tp_pool_set_backends(p, both, 2), 0);
	struct rec r, r2;
	assert_int_equal(claim(p, &r, 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	assert_int_equal(s.nconnecting, 1);
	const char *held = tp_slot_backend(s.connecting[0])->name;
	finish_connect(&s, -ESTALE); /* a standby: held, the claim tries the other */
	assert_int_equal(r.calls, 0);
	assert_int_equal(s.nconnecting, 1);
	assert_string_not_equal(tp_slot_backend(s.connecting[0])->name, held);
	finish_connect(&s, -ECONNREFUSED); /* the dead primary: backs off */
	assert_int_equal(r.calls, 0);     /* waits for the held one: the set is changing */
	assert_int_equal(claim(p, &r2, 1, s.now + 10), -EINPROGRESS); /* no fail fast either */
	assert_int_equal(s.nconnecting, 0);
	s.now += 0.3; /* the hold (backoff_first) is over */
	tp_pool_kick(p);
	sim_run(&s);
	assert_true(s.nconnecting >= 1); /* the held one again (and the other, its backoff over too) */
	assert_string_equal(tp_slot_backend(s.connecting[0])->name, held);
	while (s.nconnecting > 0)
		finish_connect(&s, 0); /* promoted meanwhile */
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.err, 0);
	assert_int_equal(r2.calls, 1);
	assert_int_equal(r2.err, 0);
	release_on(0, r.slot);
	release_on(1, r2.slot);
	finish_pool(&s, p);
}

/* The reserve (reserve_pool_size/_timeout): a full pool's queue gets no extra slot before its
 * head has waited reserve_after, then up to reserve_slots more; a slot above max_slots closes
 * when released with nobody waiting (SHRUNK), and WAIT_CLOSE's stale count follows RECONNECT. */
static void test_reserve_slots_after_the_head_waited(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	cfg.max_slots = 1;
	cfg.reserve_slots = 1;
	cfg.reserve_after = 2.0;
	struct tp_pool *p = make_pool(&s, &cfg);
	assert_int_equal(tp_pool_set_backends(p, &be_a, 1), 0);
	struct rec r1, r2, r3;
	assert_int_equal(claim(p, &r1, 0, s.now + 30), -EINPROGRESS);
	sim_run(&s);
	finish_connect(&s, 0);
	assert_int_equal(r1.calls, 1);
	assert_int_equal(claim(p, &r2, 1, s.now + 30), -EINPROGRESS);
	assert_int_equal(claim(p, &r3, 1, s.now + 30), -EINPROGRESS);
	sim_run(&s);
	assert_int_equal(s.nconnecting, 0); /* full, and the head has not waited long enough */
	s.now += 1.0;
	tp_pool_tick(p, 0);
	sim_run(&s);
	assert_int_equal(s.nconnecting, 0);
	s.now += 1.5;
	tp_pool_tick(p, 0);
	sim_run(&s);
	assert_int_equal(s.nconnecting, 1); /* one reserve slot, not two */
	finish_connect(&s, 0);
	assert_int_equal(r2.calls, 1);
	assert_int_equal(r3.calls, 0);
	struct tp_stats st;
	tp_pool_stats(p, &st);
	assert_int_equal(st.slots, 2);
	assert_int_equal(st.reserve_connects, 1);
	tp_pool_reconnect(p);
	tp_pool_stats(p, &st);
	assert_int_equal(st.stale, 2);
	release_on(0, r1.slot); /* r3 waits: it gets this one? no: an older generation closes */
	sim_run(&s);
	tp_pool_stats(p, &st);
	assert_int_equal(st.stale, 1);
	sim_run(&s);
	while (s.nconnecting > 0)
		finish_connect(&s, 0);
	assert_int_equal(r3.calls, 1);
	release_on(1, r2.slot); /* the reserve slot, of the old generation: closed */
	sim_run(&s);
	tp_pool_stats(p, &st);
	assert_int_equal(st.stale, 0);
	release_on(1, r3.slot);
	sim_run(&s);
	tp_pool_stats(p, &st);
	assert_int_equal(st.slots, 1);
	finish_pool(&s, p);
}

/* Issue 12: with several backends, one whose connect hangs (a black hole) gets no second
 * connect while another backend serves: claims wait for the working one. */
static void test_slow_backend_gets_one_connect_at_a_time(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	cfg.bind_connects = true;
	cfg.max_slots = 6;
	struct tp_pool *p = make_pool(&s, &cfg);
	struct tp_backend_addr both[2] = { be_a, be_b };
	assert_int_equal(tp_pool_set_backends(p, both, 2), 0);
	struct rec r[5];
	for (int i = 0; i < 5; i++)
		assert_int_equal(claim(p, &r[i], 0, s.now + 30), -EINPROGRESS);
	sim_run(&s);
	/* One connect per backend: neither has a server yet. */
	assert_int_equal(s.nconnecting, 2);
	struct tp_slot *hole = strcmp(tp_slot_backend(s.connecting[0])->name, "a.example") == 0 ? s.connecting[0]
												    : s.connecting[1];
	/* b answers each connect; a never does. */
	for (int served = 0; served < 4; served++) {
		int k = s.connecting[0] == hole ? 1 : 0;
		assert_true(s.nconnecting > k);
		struct tp_slot *sl = s.connecting[k];
		assert_string_equal(tp_slot_backend(sl)->name, "b.example");
		memmove(&s.connecting[k], &s.connecting[k + 1], (size_t)(s.nconnecting - k - 1) * sizeof(void *));
		s.nconnecting--;
		current_thread = tp_slot_thread(sl);
		tp_connect_done(sl, 0, NULL);
		current_thread = -1;
		sim_run(&s);
	}
	int waiting = 0;
	for (int i = 0; i < 5; i++)
		waiting += r[i].calls == 0;
	assert_int_equal(waiting, 1); /* only the claim bound to the black hole */
	assert_int_equal(s.nconnecting, 1);
	assert_ptr_equal(s.connecting[0], hole);
	for (int i = 0; i < 5; i++)
		if (r[i].calls)
			tp_release(r[i].slot, true);
	finish_pool(&s, p);
}

static void test_claim_before_any_backend(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	struct tp_pool *p = make_pool(&s, &cfg);
	struct rec r;

	assert_int_equal(claim(p, &r, 0, s.now + 5), -EINPROGRESS);
	sim_run(&s);
	assert_int_equal(s.nconnecting, 0); /* nothing to connect to: the claim waits */
	s.now += 1;
	tp_pool_tick(p, 0);
	sim_run(&s);
	assert_int_equal(r.calls, 0);

	assert_int_equal(tp_pool_set_backends(p, &be_a, 1), 0);
	sim_run(&s);
	assert_int_equal(s.nconnecting, 1);
	struct tp_slot *slot = finish_connect(&s, 0);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.err, 0);
	assert_ptr_equal(r.slot, slot);
	assert_string_equal(tp_slot_backend(slot)->name, "a.example");
	tp_release(slot, true);
	finish_pool(&s, p);
}

static void test_more_claims_than_slots(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	cfg.nthreads = 1;
	struct tp_pool *p = make_pool(&s, &cfg);
	struct rec r[5];
	struct tp_stats st;

	assert_int_equal(tp_pool_set_backends(p, &be_a, 1), 0);
	for (int i = 0; i < 5; i++)
		assert_int_equal(claim(p, &r[i], 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	assert_int_equal(s.nconnecting, 2); /* the hard maximum, not one per claim */
	finish_connect(&s, 0);
	finish_connect(&s, 0);
	tp_pool_stats(p, &st);
	assert_int_equal(st.slots, 2);
	assert_int_equal(st.waiting, 3);
	assert_int_equal(r[0].calls, 1);
	assert_int_equal(r[1].calls, 1);
	assert_true(r[0].order < r[1].order);
	assert_int_equal(s.parked, 0); /* each went straight to a claim */
	/* Releases serve the rest in FIFO order, and no claim is served twice. */
	for (int i = 2; i < 5; i++) {
		assert_int_equal(r[i].calls, 0);
		tp_release(r[i - 2].slot, true);
		assert_int_equal(r[i].calls, 1);
		assert_int_equal(r[i].err, 0);
		assert_true(r[i].order > r[i - 1].order);
		tp_pool_stats(p, &st);
		assert_true(st.slots <= 2);
	}
	assert_int_equal(s.nconnecting, 0);
	assert_int_equal(s.parked, 0); /* handed from claim to claim: never parked */
	tp_release(r[3].slot, true);
	tp_release(r[4].slot, true);
	tp_pool_stats(p, &st);
	assert_int_equal(st.idle, 2);
	assert_int_equal(s.parked, 2); /* nobody waits: onto the idle list, through the op */
	assert_int_equal(st.served, 5);
	finish_pool(&s, p);
}

static void test_slow_connector_does_not_block(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	cfg.nthreads = 1;
	cfg.max_slots = 3;
	struct tp_pool *p = make_pool(&s, &cfg);
	struct rec first, a, b;

	assert_int_equal(tp_pool_set_backends(p, &be_a, 1), 0);
	assert_int_equal(claim(p, &first, 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	finish_connect(&s, 0);
	assert_int_equal(first.calls, 1);

	/* a's connect hangs (a slow backend, a lost SYN); b's connect is quick. */
	assert_int_equal(claim(p, &a, 0, s.now + 10), -EINPROGRESS);
	assert_int_equal(claim(p, &b, 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	assert_int_equal(s.nconnecting, 2);
	struct tp_slot *slow = s.connecting[0];
	struct tp_slot *quick = s.connecting[1];
	s.connecting[0] = quick;
	s.connecting[1] = slow;
	finish_connect(&s, 0); /* the quick one */
	assert_int_equal(a.calls, 1); /* the head waiter got the first slot ready */
	assert_ptr_equal(a.slot, quick);
	/* A release serves b while the slow connect is still pending. */
	tp_release(first.slot, true);
	assert_int_equal(b.calls, 1);
	assert_int_equal(s.nconnecting, 1);
	/* The slow one completes with nobody waiting: it goes idle, it is not lost. */
	finish_connect(&s, 0);
	struct tp_stats st;
	tp_pool_stats(p, &st);
	assert_int_equal(st.idle, 1);
	assert_int_equal(st.slots, 3);
	tp_release(a.slot, true);
	tp_release(b.slot, true);
	finish_pool(&s, p);
}

static void test_release_during_error(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	cfg.nthreads = 1;
	cfg.max_slots = 3;
	struct tp_pool *p = make_pool(&s, &cfg);
	struct rec r1, r2, r3;
	enum tp_backend_state bs;

	assert_int_equal(tp_pool_set_backends(p, &be_a, 1), 0);
	assert_int_equal(claim(p, &r1, 0, s.now + 10), -EINPROGRESS);
	assert_int_equal(claim(p, &r2, 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	finish_connect(&s, 0);
	finish_connect(&s, 0);
	/* The backend starts failing: r3's connect is refused, the backend backs off. */
	assert_int_equal(claim(p, &r3, 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	finish_connect(&s, -ECONNREFUSED);
	assert_true(tp_pool_backend(p, 0, NULL, &bs, NULL));
	assert_int_equal(bs, TP_BACKEND_BACKOFF);
	assert_int_equal(s.closed[TP_CLOSE_CONNECT], 1);
	assert_int_equal(r3.calls, 0); /* one failure is not a reason to fail claims */
	char err[128];
	tp_pool_last_error(p, err, sizeof err);
	assert_non_null(strstr(err, "connection refused"));

	/* r1's connection broke in the same outage: released as unusable while backed off. It
	 * is closed and its room does not bypass the backoff. */
	tp_release(r1.slot, false);
	sim_run(&s);
	assert_int_equal(s.closed[TP_CLOSE_BROKEN], 1);
	assert_int_equal(r3.calls, 0);
	assert_int_equal(s.nconnecting, 0);
	/* r2's connection is fine: it goes straight to r3. */
	tp_release(r2.slot, true);
	assert_int_equal(r3.calls, 1);
	assert_int_equal(r3.err, 0);
	/* After the backoff a new claim connects again and the backend is up. */
	struct rec r4;
	s.now += cfg.backoff_first + 0.01;
	assert_int_equal(claim(p, &r4, 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	finish_connect(&s, 0);
	assert_int_equal(r4.calls, 1);
	assert_true(tp_pool_backend(p, 0, NULL, &bs, NULL));
	assert_int_equal(bs, TP_BACKEND_UP);
	tp_release(r3.slot, true);
	tp_release(r4.slot, true);
	finish_pool(&s, p);
}

static void test_removal_during_health_check(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	cfg.nthreads = 1;
	cfg.check_after = 1.0;
	struct tp_pool *p = make_pool(&s, &cfg);
	struct rec r;
	struct tp_backend_addr addr;
	int slots;

	assert_int_equal(tp_pool_set_backends(p, &be_a, 1), 0);
	assert_int_equal(claim(p, &r, 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	finish_connect(&s, 0);
	tp_release(r.slot, true);
	s.now += 2;
	tp_pool_tick(p, 0);
	sim_run(&s);
	assert_int_equal(s.nchecking, 1);
	/* While the check runs, the resolver replaces a with b. */
	assert_int_equal(tp_pool_set_backends(p, &be_b, 1), 0);
	sim_run(&s);
	assert_true(tp_pool_backend(p, 1, &addr, NULL, &slots)); /* a still known: it has a slot */
	/* The check passes, but the backend is gone: the slot closes, a is forgotten. */
	tp_check_done(s.checking[0], true);
	sim_run(&s);
	assert_int_equal(s.closed[TP_CLOSE_REMOVED], 1);
	assert_true(tp_pool_backend(p, 0, &addr, NULL, &slots));
	assert_string_equal(addr.name, "b.example");
	assert_false(tp_pool_backend(p, 1, &addr, NULL, &slots));
	/* New claims go to b. */
	assert_int_equal(claim(p, &r, 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	struct tp_slot *slot = finish_connect(&s, 0);
	assert_string_equal(tp_slot_backend(slot)->name, "b.example");
	tp_release(slot, true);
	finish_pool(&s, p);
}

static void test_health_check_failure_closes(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	cfg.nthreads = 1;
	cfg.check_after = 1.0;
	struct tp_pool *p = make_pool(&s, &cfg);
	struct rec r;

	assert_int_equal(tp_pool_set_backends(p, &be_a, 1), 0);
	assert_int_equal(claim(p, &r, 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	finish_connect(&s, 0);
	tp_release(r.slot, true);
	s.now += 0.5;
	tp_pool_tick(p, 0);
	assert_int_equal(s.nchecking, 0); /* not idle long enough */
	s.now += 1;
	tp_pool_tick(p, 0);
	assert_int_equal(s.nchecking, 1);
	tp_check_done(s.checking[0], false);
	sim_run(&s);
	assert_int_equal(s.closed[TP_CLOSE_HEALTH], 1);
	struct tp_stats st;
	tp_pool_stats(p, &st);
	assert_int_equal(st.slots, 0);
	finish_pool(&s, p);
}

static void test_destroy_with_claims_pending(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	struct tp_pool *p = make_pool(&s, &cfg);
	struct rec r[3], late;

	assert_int_equal(tp_pool_set_backends(p, &be_a, 1), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(claim(p, &r[i], i % 2, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	assert_int_equal(s.nconnecting, 2);
	assert_int_equal(tp_pool_destroy(p), -EBUSY); /* not stopped */
	tp_pool_stop(p);
	assert_int_equal(tp_pool_destroy(p), -EBUSY); /* posts and connects still out */
	sim_run(&s);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(r[i].calls, 1);
		assert_int_equal(r[i].err, -ECANCELED);
		assert_null(r[i].slot);
	}
	assert_int_equal(claim(p, &late, 0, s.now + 10), -ECANCELED);
	assert_int_equal(tp_pool_destroy(p), -EBUSY);
	/* Connects that finish after the stop are closed, not handed out. */
	finish_connect(&s, 0);
	finish_connect(&s, 0);
	assert_int_equal(s.closed[TP_CLOSE_STOPPED], 2);
	assert_int_equal(tp_pool_destroy(p), 0);
}

static void test_deadline_expiry(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	struct tp_pool *p = make_pool(&s, &cfg);
	struct rec r0, r1;

	/* No backend: both wait for their deadlines. */
	assert_int_equal(claim(p, &r0, 0, s.now + 1.0), -EINPROGRESS);
	assert_int_equal(claim(p, &r1, 1, s.now + 1.0), -EINPROGRESS);
	s.now += 0.5;
	tp_pool_tick(p, 0);
	tp_pool_tick(p, 1);
	assert_int_equal(r0.calls + r1.calls, 0);
	s.now += 0.5;
	/* Each claim expires on its own thread's tick: done runs where the claimer lives. */
	tp_pool_tick(p, 0);
	assert_int_equal(r0.calls, 1);
	assert_int_equal(r0.err, -ETIMEDOUT);
	assert_int_equal(r1.calls, 0);
	tp_pool_tick(p, 1);
	assert_int_equal(r1.calls, 1);
	assert_int_equal(r1.err, -ETIMEDOUT);
	assert_false(tp_claim_cancel(&r0.c)); /* already done */
	struct tp_stats st;
	tp_pool_stats(p, &st);
	assert_int_equal(st.timeouts, 2);
	assert_int_equal(st.waiting, 0);
	finish_pool(&s, p);
}

static void test_cancel_queued_claim(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	struct tp_pool *p = make_pool(&s, &cfg);
	struct rec r0, r1;

	assert_int_equal(claim(p, &r0, 0, s.now + 5), -EINPROGRESS);
	assert_int_equal(claim(p, &r1, 0, s.now + 5), -EINPROGRESS);
	assert_true(tp_claim_cancel(&r0.c));
	assert_int_equal(tp_pool_set_backends(p, &be_a, 1), 0);
	sim_run(&s);
	assert_int_equal(s.nconnecting, 1); /* only r1 still wants a slot */
	finish_connect(&s, 0);
	assert_int_equal(r0.calls, 0);
	assert_int_equal(r1.calls, 1);
	tp_release(r1.slot, true);
	finish_pool(&s, p);
}

/* A pool of one slot on backend a, connected for a claim of thread 0 (r0, which holds it). */
static struct tp_pool *one_slot_claimed_on_0(struct sim *s, struct rec *r0)
{
	struct tp_config cfg = base_cfg();
	cfg.max_slots = 1;
	struct tp_pool *p = make_pool(s, &cfg);
	assert_int_equal(tp_pool_set_backends(p, &be_a, 1), 0);
	assert_int_equal(claim(p, r0, 0, s->now + 5), -EINPROGRESS);
	sim_run(s);
	finish_connect(s, 0);
	assert_int_equal(tp_slot_thread(r0->slot), 0);
	return p;
}

static void test_handover_between_threads(void **state)
{
	(void)state;
	struct sim s;
	struct rec r0, r1;
	struct tp_pool *p = one_slot_claimed_on_0(&s, &r0);
	tp_release(r0.slot, true); /* parked on thread 0 */
	/* A claim on thread 1: the idle slot moves (detach on 0, attach on 1), no new connect. */
	assert_int_equal(claim(p, &r1, 1, s.now + 5), -EINPROGRESS);
	sim_run(&s);
	assert_int_equal(r1.calls, 1);
	assert_ptr_equal(r1.slot, r0.slot);
	assert_int_equal(tp_slot_thread(r1.slot), 1);
	assert_int_equal(s.detached_on[0], 1);
	assert_int_equal(s.attached_on[1], 1);
	assert_int_equal(s.nconnecting, 0);
	/* Released on thread 1, a claim on 1 takes it without any post. */
	tp_release(r1.slot, true);
	struct rec r2;
	assert_int_equal(claim(p, &r2, 1, s.now + 5), 0);
	assert_int_equal(s.nposts, 0);
	struct tp_stats st;
	tp_pool_stats(p, &st);
	assert_int_equal(st.handovers, 1);
	tp_release(r2.slot, true);
	finish_pool(&s, p);
}

static void test_busy_slot_moved_with_its_owner(void **state)
{
	(void)state;
	struct sim s;
	struct rec r0, r1;
	struct tp_pool *p = one_slot_claimed_on_0(&s, &r0);
	/* Its owner took the connection to thread 1 (a session client moving): released there,
	 * it is parked on thread 1, and a claim on 1 takes it with no hand-over. */
	tp_slot_moved(r0.slot, 1);
	assert_int_equal(tp_slot_thread(r0.slot), 1);
	tp_release(r0.slot, true);
	int posts = s.nposts;
	assert_int_equal(claim(p, &r1, 1, s.now + 5), 0);
	assert_ptr_equal(r1.slot, r0.slot);
	assert_int_equal(s.nposts, posts);
	assert_int_equal(s.detached_on[0] + s.detached_on[1], 0);
	assert_int_equal(s.attached_on[0] + s.attached_on[1], 0);
	/* A thread out of range, or a slot not in use, is left as it is. */
	tp_slot_moved(r1.slot, 7);
	assert_int_equal(tp_slot_thread(r1.slot), 1);
	tp_release(r1.slot, true);
	tp_slot_moved(r1.slot, 0);
	assert_int_equal(tp_slot_thread(r1.slot), 1);
	/* Then a claim on thread 0 takes it by the ordinary hand-over. */
	struct rec r2;
	assert_int_equal(claim(p, &r2, 0, s.now + 5), -EINPROGRESS);
	sim_run(&s);
	assert_ptr_equal(r2.slot, r0.slot);
	assert_int_equal(s.detached_on[1], 1);
	assert_int_equal(s.attached_on[0], 1);
	tp_release(r2.slot, true);
	finish_pool(&s, p);
}

static void test_breaker_fails_fast_and_probes(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	cfg.nthreads = 1;
	struct tp_pool *p = make_pool(&s, &cfg);
	struct rec r, fast;
	enum tp_backend_state bs;

	assert_int_equal(tp_pool_set_backends(p, &be_a, 1), 0);
	assert_int_equal(claim(p, &r, 0, s.now + 60), -EINPROGRESS);
	for (int i = 0; i < cfg.breaker_failures; i++) {
		sim_run(&s);
		assert_int_equal(s.nconnecting, 1);
		finish_connect(&s, -ECONNREFUSED);
		if (i == cfg.breaker_failures - 1)
			break;
		s.now += cfg.backoff_max; /* past any retry time */
		tp_pool_tick(p, 0);
	}
	sim_run(&s);
	assert_true(tp_pool_backend(p, 0, NULL, &bs, NULL));
	assert_int_equal(bs, TP_BACKEND_DEAD);
	/* The waiting claim failed fast, with the reason kept. */
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.err, -EHOSTUNREACH);
	assert_int_equal(claim(p, &fast, 0, s.now + 60), -EHOSTUNREACH);
	char why[256];
	tp_pool_last_error(p, why, sizeof why);
	assert_string_equal(why, "a.example:5432 dead: connection refused");
	/* Once its retry time passed, a claim waits for one probe; a second claim waits for
	 * the same probe instead of opening another; the probe fails and both fail. */
	struct rec p1, p2;
	s.now += cfg.backoff_max;
	assert_int_equal(claim(p, &p1, 0, s.now + 60), -EINPROGRESS);
	assert_int_equal(claim(p, &p2, 0, s.now + 60), -EINPROGRESS);
	sim_run(&s);
	assert_int_equal(s.nconnecting, 1);
	finish_connect(&s, -ECONNREFUSED);
	assert_int_equal(p1.err, -EHOSTUNREACH);
	assert_int_equal(p2.err, -EHOSTUNREACH);
	/* A second backend that works: claims go there, around the dead one. */
	struct tp_backend_addr both[2] = { be_a, be_b };
	assert_int_equal(tp_pool_set_backends(p, both, 2), 0);
	assert_int_equal(claim(p, &r, 0, s.now + 60), -EINPROGRESS);
	sim_run(&s);
	assert_true(s.nconnecting >= 1);
	struct tp_slot *slot = NULL;
	while (s.nconnecting > 0) {
		struct tp_slot *x = s.connecting[0];
		bool to_b = strcmp(tp_slot_backend(x)->name, "b.example") == 0;
		finish_connect(&s, to_b ? 0 : -ECONNREFUSED);
		if (to_b)
			slot = x;
	}
	assert_non_null(slot);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.err, 0);
	assert_string_equal(tp_slot_backend(r.slot)->name, "b.example");
	tp_release(r.slot, true);
	finish_pool(&s, p);
}

/* Issue 12: new connects go where slots / weight is least, among the backends of the best
 * priority that are up; a lower priority only while none of the best is. */
static void test_weight_and_priority(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	cfg.nthreads = 1;
	cfg.max_slots = 8;
	struct tp_pool *p = make_pool(&s, &cfg);
	struct tp_backend_addr w[3] = { be_a, be_b, { .name = "c.example", .port = 5432 } };
	w[0].weight = 1;
	w[1].weight = 3;
	w[2].weight = 100;
	w[2].priority = 1; /* heavy, but a fallback */
	assert_int_equal(tp_pool_set_backends(p, w, 3), 0);
	struct rec r[8];
	int on_a = 0, on_b = 0;
	for (int i = 0; i < 8; i++) {
		assert_int_equal(claim(p, &r[i], 0, s.now + 60), -EINPROGRESS);
		sim_run(&s);
		assert_int_equal(s.nconnecting, 1);
		finish_connect(&s, 0);
		assert_int_equal(r[i].err, 0);
		const char *name = tp_slot_backend(r[i].slot)->name;
		on_a += strcmp(name, "a.example") == 0;
		on_b += strcmp(name, "b.example") == 0;
	}
	assert_int_equal(on_a, 2);
	assert_int_equal(on_b, 6);
	for (int i = 0; i < 8; i++)
		tp_release(r[i].slot, false);
	sim_run(&s);
	/* Both of priority 0 back off: only then does a connect go to priority 1. */
	struct rec x;
	bool tried_a = false, tried_b = false;
	assert_int_equal(claim(p, &x, 0, s.now + 60), -EINPROGRESS);
	sim_run(&s);
	for (int guard = 0; guard < 10 && x.calls == 0; guard++) {
		if (s.nconnecting == 0) {
			s.now += 1;
			tp_pool_tick(p, 0);
			sim_run(&s);
			continue;
		}
		const char *name = tp_slot_backend(s.connecting[0])->name;
		if (strcmp(name, "c.example") == 0) {
			assert_true(tried_a && tried_b); /* not while a or b was up */
			finish_connect(&s, 0);
			break;
		}
		tried_a |= strcmp(name, "a.example") == 0;
		tried_b |= strcmp(name, "b.example") == 0;
		finish_connect(&s, -ECONNREFUSED);
	}
	assert_int_equal(x.calls, 1);
	assert_int_equal(x.err, 0);
	assert_string_equal(tp_slot_backend(x.slot)->name, "c.example");
	tp_release(x.slot, true);
	finish_pool(&s, p);
}

static void test_empty_resolver_answer_keeps_backends(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	struct tp_pool *p = make_pool(&s, &cfg);
	struct tp_stats st;

	assert_int_equal(tp_pool_set_backends(p, &be_a, 1), 0);
	assert_int_equal(tp_pool_set_backends(p, NULL, 0), 0);
	tp_pool_stats(p, &st);
	assert_int_equal(st.backends, 1);
	assert_int_equal(tp_pool_set_backends(p, NULL, -1), -EINVAL);
	finish_pool(&s, p);
}

static void test_idle_timeout_and_lifetime(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	cfg.nthreads = 1;
	cfg.idle_timeout = 5;
	cfg.lifetime = 20;
	struct tp_pool *p = make_pool(&s, &cfg);
	struct rec r0, r1;

	assert_int_equal(tp_pool_set_backends(p, &be_a, 1), 0);
	assert_int_equal(claim(p, &r0, 0, s.now + 5), -EINPROGRESS);
	assert_int_equal(claim(p, &r1, 0, s.now + 5), -EINPROGRESS);
	sim_run(&s);
	finish_connect(&s, 0);
	finish_connect(&s, 0);
	tp_release(r0.slot, true);
	s.now += 4;
	tp_pool_tick(p, 0);
	assert_int_equal(s.closed[TP_CLOSE_IDLE], 0);
	s.now += 1;
	tp_pool_tick(p, 0);
	assert_int_equal(s.closed[TP_CLOSE_IDLE], 1);
	/* r1 is busy past its lifetime (at most 20 s, at least 18 with the jitter): closed at
	 * release instead of parked. */
	s.now += 16;
	tp_release(r1.slot, true);
	assert_int_equal(s.closed[TP_CLOSE_LIFETIME], 1);
	struct tp_stats st;
	tp_pool_stats(p, &st);
	assert_int_equal(st.slots, 0);
	finish_pool(&s, p);
}

static void test_bad_config(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	cfg.max_slots = 0;
	assert_null(tp_pool_new(&cfg, &host_ops, &s, &conn_ops, &s));
	assert_int_equal(errno, EINVAL);
}

/* ---- policy features (the daemon's rules, as generic core options) ---- */

static int claimk(struct tp_pool *p, struct rec *r, int thread, double deadline, uint64_t key)
{
	memset(r, 0, sizeof *r);
	r->c.done = rec_done;
	r->c.key = key;
	struct tp_slot *slot = NULL;
	int rc = tp_claim(p, &r->c, thread, deadline, &slot);
	if (rc == 0) {
		r->slot = slot;
		r->calls = 1;
		r->order = ++served_order;
	}
	return rc;
}

static void test_claim_key_preference(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	cfg.nthreads = 1;
	cfg.max_slots = 3;
	struct tp_pool *p = make_pool(&s, &cfg);
	struct rec r[3], a, b, c;

	assert_int_equal(tp_pool_set_backends(p, &be_a, 1), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(claimk(p, &r[i], 0, s.now + 10, (uint64_t)i + 1), -EINPROGRESS);
	sim_run(&s);
	for (int i = 0; i < 3; i++)
		finish_connect(&s, 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(r[i].calls, 1);
		tp_release(r[i].slot, true); /* idle, most recent first: keys 3, 2, 1 */
	}
	/* The slot last claimed with key 2, though key 3's is the most recent. */
	assert_int_equal(claimk(p, &a, 0, s.now + 10, 2), 0);
	assert_ptr_equal(a.slot, r[1].slot);
	/* An unknown key: the most recently released. */
	assert_int_equal(claimk(p, &b, 0, s.now + 10, 99), 0);
	assert_ptr_equal(b.slot, r[2].slot);
	/* No key: whatever is left. */
	assert_int_equal(claimk(p, &c, 0, s.now + 10, 0), 0);
	assert_ptr_equal(c.slot, r[0].slot);
	tp_release(a.slot, true);
	tp_release(b.slot, true);
	tp_release(c.slot, true);
	finish_pool(&s, p);
}

/* A pool of one slot with pass_over_max and pass_over_age, and r0 holding that slot on
 * thread 0 (connected for it). */
static struct tp_pool *one_slot_held(struct sim *s, int pass_over_max, double pass_over_age, struct rec *r0)
{
	struct tp_config cfg = base_cfg();
	cfg.max_slots = 1;
	cfg.pass_over_max = pass_over_max;
	cfg.pass_over_age = pass_over_age;
	struct tp_pool *p = make_pool(s, &cfg);
	assert_int_equal(tp_pool_set_backends(p, &be_a, 1), 0);
	assert_int_equal(claim(p, r0, 0, s->now + 10), -EINPROGRESS);
	sim_run(s);
	finish_connect(s, 0);
	assert_int_equal(r0->calls, 1);
	return p;
}

static void test_pass_over_to_same_thread(void **state)
{
	(void)state;
	struct sim s;
	struct rec r0, r1, r2;
	struct tp_pool *p = one_slot_held(&s, 1, 1.0, &r0);

	assert_int_equal(claim(p, &r1, 1, s.now + 10), -EINPROGRESS); /* head, other thread */
	assert_int_equal(claim(p, &r2, 0, s.now + 10), -EINPROGRESS); /* behind it, same thread */
	/* Released on thread 0: the young head is passed over once, no hand-over. */
	tp_release(r0.slot, true);
	sim_run(&s);
	assert_int_equal(r2.calls, 1);
	assert_int_equal(r1.calls, 0);
	assert_int_equal(s.detached_on[0], 0);
	/* Not twice: the next release goes to the head, through the hand-over (the detach runs
	 * inline on the releasing thread, the attach is posted to the claimer's). */
	release_on(0, r2.slot);
	assert_int_equal(s.detached_on[0], 1);
	assert_int_equal(r1.calls, 0);
	sim_run(&s);
	assert_int_equal(r1.calls, 1);
	assert_int_equal(s.detached_on[0], 1);
	assert_int_equal(s.attached_on[1], 1);
	tp_release(r1.slot, true);
	finish_pool(&s, p);
}

/* The bound is on how much later than the head a claim came, not on the head's own age: an
 * old head (a long queue) is still passed over for a claim of its time, never for one made
 * more than pass_over_age after it. */
static void test_pass_over_bound_is_relative(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	cfg.max_slots = 1;
	cfg.pass_over_max = 8;
	cfg.pass_over_age = 0.02;
	struct tp_pool *p = make_pool(&s, &cfg);
	struct rec r0, r1, r2, r3;

	assert_int_equal(tp_pool_set_backends(p, &be_a, 1), 0);
	assert_int_equal(claim(p, &r0, 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	finish_connect(&s, 0);
	assert_int_equal(claim(p, &r1, 1, s.now + 10), -EINPROGRESS); /* head, other thread */
	s.now += 0.01;
	assert_int_equal(claim(p, &r2, 0, s.now + 10), -EINPROGRESS); /* 10 ms after it */
	s.now += 0.02;
	assert_int_equal(claim(p, &r3, 0, s.now + 10), -EINPROGRESS); /* 30 ms after it */
	s.now += 1; /* every claim is old now */
	/* r2 came within 20 ms of the head: it takes the slot on its thread. */
	release_on(0, r0.slot);
	sim_run(&s);
	assert_int_equal(r2.calls, 1);
	assert_int_equal(r1.calls, 0);
	assert_int_equal(s.detached_on[0], 0);
	/* r3 came 30 ms after the head: the head gets the slot, through the hand-over. */
	release_on(0, r2.slot);
	sim_run(&s);
	assert_int_equal(r1.calls, 1);
	assert_int_equal(r3.calls, 0);
	assert_int_equal(s.detached_on[0], 1);
	assert_int_equal(s.attached_on[1], 1);
	release_on(1, r1.slot);
	sim_run(&s);
	assert_int_equal(r3.calls, 1);
	tp_release(r3.slot, true);
	finish_pool(&s, p);
}

/* tp_claim_at: the time the caller gives is the claim's start, not the host clock's (which
 * the core does not read then): a claim said to come 5 s after the head is not passed over it,
 * though by the host clock it came at the same moment. */
static void test_claim_at_takes_the_callers_time(void **state)
{
	(void)state;
	struct sim s;
	struct rec r0, r1, r2;
	struct tp_slot *slot = NULL;
	struct tp_pool *p = one_slot_held(&s, 8, 1.0, &r0);

	assert_int_equal(claim(p, &r1, 1, s.now + 10), -EINPROGRESS); /* head, other thread */
	memset(&r2, 0, sizeof r2);
	r2.c.done = rec_done;
	assert_int_equal(tp_claim_at(p, &r2.c, 0, s.now + 5, s.now + 10, &slot), -EINPROGRESS);
	release_on(0, r0.slot);
	sim_run(&s);
	assert_int_equal(r1.calls, 1); /* the head, through the hand-over */
	assert_int_equal(r2.calls, 0);
	assert_int_equal(s.detached_on[0], 1);
	release_on(1, r1.slot);
	sim_run(&s);
	assert_int_equal(r2.calls, 1);
	/* Served at once, tp_claim_at answers as tp_claim does. */
	release_on(0, r2.slot);
	sim_run(&s);
	memset(&r2, 0, sizeof r2);
	r2.c.done = rec_done;
	assert_int_equal(tp_claim_at(p, &r2.c, 0, s.now, s.now + 10, &slot), 0);
	assert_non_null(slot);
	assert_int_equal(tp_claim_at(NULL, &r2.c, 0, s.now, s.now + 10, &slot), -EINVAL);
	tp_release(slot, true);
	finish_pool(&s, p);
}

/* The pool's lock (a futex mutex) excludes: four threads claim and release their own slot
 * as fast as they can while another reads the counters; every claim is counted, none is lost
 * or served twice, and the pool ends as it started. */
#define HAMMER_THREADS 4
#define HAMMER_ROUNDS 200000
struct hammer {
	struct tp_pool *p;
	int thread;
	atomic_int *stop_readers;
	long failures;
};

static void *hammer_claims(void *arg)
{
	struct hammer *h = arg;
	for (int i = 0; i < HAMMER_ROUNDS; i++) {
		struct tp_claim c;
		struct tp_slot *slot = NULL;
		memset(&c, 0, sizeof c);
		c.done = rec_done;
		if (tp_claim(h->p, &c, h->thread, 1e9, &slot) != 0 || !slot || tp_slot_thread(slot) != h->thread) {
			h->failures++;
			continue;
		}
		tp_release(slot, true);
	}
	return NULL;
}

static void *hammer_reads(void *arg)
{
	struct hammer *h = arg;
	while (!atomic_load(h->stop_readers)) {
		struct tp_stats st;
		tp_pool_stats(h->p, &st);
		if (st.idle + st.busy != HAMMER_THREADS || st.busy < 0 || st.busy > HAMMER_THREADS)
			h->failures++;
	}
	return NULL;
}

static void test_lock_under_contention(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	cfg.nthreads = HAMMER_THREADS;
	cfg.max_slots = HAMMER_THREADS;
	/* No park op: the sim's counts it without a lock, from every thread here. */
	static const struct tp_connector_ops no_park = {
		.connect = c_connect, .check = c_check, .close = c_close, .detach = c_detach, .attach = c_attach,
	};
	memset(&s, 0, sizeof s);
	s.now = 100.0;
	struct tp_pool *p = tp_pool_new(&cfg, &host_ops, &s, &no_park, &s);
	assert_non_null(p);
	struct rec r[HAMMER_THREADS];

	assert_int_equal(tp_pool_set_backends(p, &be_a, 1), 0);
	/* One slot per thread, parked on it. */
	for (int t = 0; t < HAMMER_THREADS; t++) {
		assert_int_equal(claim(p, &r[t], t, s.now + 10), -EINPROGRESS);
		sim_run(&s);
		finish_connect(&s, 0);
		assert_int_equal(r[t].calls, 1);
	}
	for (int t = 0; t < HAMMER_THREADS; t++)
		release_on(t, r[t].slot);
	sim_run(&s);
	struct tp_stats before;
	tp_pool_stats(p, &before);
	assert_int_equal(before.idle, HAMMER_THREADS);

	atomic_int stop = 0;
	struct hammer h[HAMMER_THREADS + 1];
	pthread_t th[HAMMER_THREADS + 1];
	for (int t = 0; t <= HAMMER_THREADS; t++) {
		h[t] = (struct hammer){ .p = p, .thread = t, .stop_readers = &stop };
		assert_int_equal(pthread_create(&th[t], NULL, t < HAMMER_THREADS ? hammer_claims : hammer_reads, &h[t]), 0);
	}
	for (int t = 0; t < HAMMER_THREADS; t++)
		assert_int_equal(pthread_join(th[t], NULL), 0);
	atomic_store(&stop, 1);
	assert_int_equal(pthread_join(th[HAMMER_THREADS], NULL), 0);
	for (int t = 0; t <= HAMMER_THREADS; t++)
		assert_int_equal(h[t].failures, 0);
	assert_int_equal(s.nposts, 0); /* nothing crossed threads */
	struct tp_stats after;
	tp_pool_stats(p, &after);
	assert_int_equal(after.idle, HAMMER_THREADS);
	assert_int_equal(after.busy, 0);
	assert_int_equal(after.slots, HAMMER_THREADS);
	assert_true(after.claims == before.claims + (uint64_t)HAMMER_THREADS * HAMMER_ROUNDS);
	assert_true(after.served == before.served + (uint64_t)HAMMER_THREADS * HAMMER_ROUNDS);
	finish_pool(&s, p);
}

static void test_pause_resume(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	cfg.nthreads = 1;
	struct tp_pool *p = make_pool(&s, &cfg);
	struct rec r0, r1, r2;
	struct tp_stats st;

	assert_int_equal(tp_pool_set_backends(p, &be_a, 1), 0);
	assert_int_equal(claim(p, &r0, 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	finish_connect(&s, 0);
	tp_release(r0.slot, true);

	tp_pool_pause(p);
	/* An idle slot exists, yet the claim queues, and no connect starts for it. */
	assert_int_equal(claim(p, &r1, 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	assert_int_equal(r1.calls, 0);
	assert_int_equal(s.nconnecting, 0);
	tp_pool_stats(p, &st);
	assert_true(st.paused);
	assert_int_equal(st.waiting, 1);
	tp_pool_resume(p);
	sim_run(&s);
	assert_int_equal(r1.calls, 1);
	assert_ptr_equal(r1.slot, r0.slot);

	/* A slot released while paused is parked, not handed to the waiter. */
	tp_pool_pause(p);
	assert_int_equal(claim(p, &r2, 0, s.now + 10), -EINPROGRESS);
	tp_release(r1.slot, true);
	sim_run(&s);
	assert_int_equal(r2.calls, 0);
	tp_pool_stats(p, &st);
	assert_int_equal(st.idle, 1);
	/* Deadlines still run while paused. */
	s.now += 11;
	tp_pool_tick(p, 0);
	sim_run(&s);
	assert_int_equal(r2.calls, 1);
	assert_int_equal(r2.err, -ETIMEDOUT);
	tp_pool_resume(p);
	finish_pool(&s, p);
}

static void test_backend_full_caps_the_pool(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	cfg.nthreads = 1;
	cfg.max_slots = 3;
	cfg.full_hold = 60;
	struct tp_pool *p = make_pool(&s, &cfg);
	struct rec r[4];
	struct tp_stats st;
	enum tp_backend_state bs;

	assert_int_equal(tp_pool_set_backends(p, &be_a, 1), 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(claim(p, &r[i], 0, s.now + 100), -EINPROGRESS);
	sim_run(&s);
	assert_int_equal(s.nconnecting, 3);
	finish_connect(&s, 0);
	finish_connect(&s, -EUSERS); /* up but full: it took the other two */
	tp_pool_stats(p, &st);
	assert_int_equal(st.cap, 2);
	assert_int_equal(s.nconnecting, 1); /* no connect in place of the refused one */
	assert_true(tp_pool_backend(p, 0, NULL, &bs, NULL));
	assert_int_equal(bs, TP_BACKEND_UP); /* no backoff for that */
	finish_connect(&s, 0);
	assert_int_equal(r[1].calls, 1);
	assert_int_equal(r[2].calls, 0);
	/* Claims wait for the slots the backend took. */
	tp_release(r[0].slot, true);
	assert_int_equal(r[2].calls, 1);
	assert_int_equal(s.nconnecting, 0);
	/* The cap is forgotten full_hold later: room again. */
	s.now += 61;
	tp_pool_tick(p, 0);
	sim_run(&s);
	assert_int_equal(s.nconnecting, 1);
	finish_connect(&s, 0);
	assert_int_equal(r[3].calls, 1);
	tp_pool_stats(p, &st);
	assert_int_equal(st.cap, -1);
	tp_release(r[1].slot, true);
	tp_release(r[2].slot, true);
	tp_release(r[3].slot, true);
	finish_pool(&s, p);

	/* Capped at zero: one connect a tick tries whether room came back. */
	cfg.max_slots = 2;
	p = make_pool(&s, &cfg);
	assert_int_equal(tp_pool_set_backends(p, &be_a, 1), 0);
	assert_int_equal(claim(p, &r[0], 0, s.now + 100), -EINPROGRESS);
	sim_run(&s);
	finish_connect(&s, -EUSERS);
	assert_int_equal(s.nconnecting, 0);
	assert_int_equal(r[0].calls, 0);
	s.now += 1;
	tp_pool_tick(p, 0);
	sim_run(&s);
	assert_int_equal(s.nconnecting, 1);
	finish_connect(&s, 0);
	assert_int_equal(r[0].calls, 1);
	assert_int_equal(r[0].err, 0);
	tp_release(r[0].slot, true);
	finish_pool(&s, p);
}

static void test_bound_connects(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	cfg.nthreads = 1;
	cfg.bind_connects = true;
	struct tp_pool *p = make_pool(&s, &cfg);
	struct rec r0, r1, r2;
	enum tp_backend_state bs;

	assert_int_equal(tp_pool_set_backends(p, &be_a, 1), 0);
	assert_int_equal(claim(p, &r0, 0, s.now + 10), -EINPROGRESS);
	assert_int_equal(claim(p, &r1, 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	assert_int_equal(s.nconnecting, 2);
	/* The connector learns whose connect it is (e.g. to log in with its credentials). */
	assert_ptr_equal(tp_slot_claim(s.connecting[0]), &r0.c);
	assert_ptr_equal(tp_slot_claim(s.connecting[1]), &r1.c);
	/* A claim with a connect of its own is out of the queue: cancel says done will run. */
	assert_false(tp_claim_cancel(&r0.c));
	/* A refused login fails its claim with the connector's error, and backs nothing off. */
	finish_connect(&s, -EPERM);
	assert_int_equal(r0.calls, 1);
	assert_int_equal(r0.err, -EPERM);
	assert_true(tp_pool_backend(p, 0, NULL, &bs, NULL));
	assert_int_equal(bs, TP_BACKEND_UP);
	assert_int_equal(claim(p, &r2, 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	assert_int_equal(s.nconnecting, 2);
	/* Full: the claim goes back to the head of the queue and waits for a slot... */
	finish_connect(&s, -EUSERS);
	assert_int_equal(r1.calls, 0);
	/* ...while r2's own connect goes to r2, not to the head. */
	finish_connect(&s, 0);
	assert_int_equal(r2.calls, 1);
	assert_int_equal(r1.calls, 0);
	tp_release(r2.slot, true);
	assert_int_equal(r1.calls, 1);
	assert_ptr_equal(r1.slot, r2.slot);
	tp_release(r1.slot, true);
	finish_pool(&s, p);
}

/* Issue 23: a connect's outcome reaches the claims it answers through the core's API
 * (tp_connect_report, tp_claim.connect: the connector's detail, e.g. the server's
 * ErrorResponse), not through thread-local variables beside the core. Only an answer made
 * inside the report on the claim's thread carries it. */
static void test_connect_report_reaches_the_claim_it_answers(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	cfg.nthreads = 1;
	cfg.max_slots = 1;
	cfg.bind_connects = true;
	struct tp_pool *p = make_pool(&s, &cfg);
	struct rec r0, r1, r2;
	static const char detail[] = "E...28P01 password authentication failed";

	assert_int_equal(tp_pool_set_backends(p, &be_a, 1), 0);
	assert_int_equal(claim(p, &r0, 0, s.now + 10), -EINPROGRESS);
	assert_int_equal(claim(p, &r1, 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	assert_int_equal(s.nconnecting, 1);
	/* A refused login: its bound claim hears the connector's reason and detail. */
	struct tp_slot *slot = s.connecting[0];
	s.nconnecting = 0;
	struct tp_connect_result res = { .err = -EPERM, .reason = "login refused", .detail = detail,
					  .detail_len = sizeof detail - 1 };
	current_thread = 0;
	tp_connect_report(slot, &res);
	current_thread = -1;
	sim_run(&s);
	assert_int_equal(r0.calls, 1);
	assert_int_equal(r0.err, -EPERM);
	assert_true(r0.by_connect);
	assert_int_equal(r0.connect_err, -EPERM);
	assert_string_equal(r0.connect_reason, "login refused");
	assert_string_equal(r0.connect_detail, detail);
	/* The next claim's own connect succeeds (tp_connect_done): answered inside the report. */
	assert_int_equal(s.nconnecting, 1);
	finish_connect(&s, 0);
	assert_int_equal(r1.calls, 1);
	assert_int_equal(r1.err, 0);
	assert_true(r1.by_connect);
	assert_int_equal(r1.connect_err, 0);
	assert_string_equal(r1.connect_reason, "");
	/* A claim served by a release (no connect): no report. */
	assert_int_equal(claim(p, &r2, 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	assert_int_equal(s.nconnecting, 0);
	release_on(0, r1.slot);
	sim_run(&s);
	assert_int_equal(r2.calls, 1);
	assert_ptr_equal(r2.slot, r1.slot);
	assert_false(r2.by_connect);
	tp_release(r2.slot, true);
	finish_pool(&s, p);
}

static void test_reconnect_generation(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	cfg.nthreads = 1;
	struct tp_pool *p = make_pool(&s, &cfg);
	struct rec r0, r1, r2;

	assert_int_equal(tp_pool_set_backends(p, &be_a, 1), 0);
	assert_int_equal(claim(p, &r0, 0, s.now + 10), -EINPROGRESS);
	assert_int_equal(claim(p, &r1, 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	finish_connect(&s, 0);
	finish_connect(&s, 0);
	tp_release(r0.slot, true);
	tp_pool_reconnect(p);
	sim_run(&s); /* the idle one closes at once */
	assert_int_equal(s.closed[TP_CLOSE_RECONNECT], 1);
	tp_release(r1.slot, true); /* the one in use when it is released */
	assert_int_equal(s.closed[TP_CLOSE_RECONNECT], 2);
	assert_int_equal(claim(p, &r2, 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	finish_connect(&s, 0);
	assert_int_equal(r2.calls, 1);
	tp_release(r2.slot, true);
	tp_pool_tick(p, 0);
	sim_run(&s);
	assert_int_equal(s.closed[TP_CLOSE_RECONNECT], 2); /* a new one is kept */
	finish_pool(&s, p);
}

static void test_group_limit(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	cfg.nthreads = 1;
	cfg.max_slots = 3;
	struct tp_group *g = tp_group_new(2);
	assert_non_null(g);
	memset(&s, 0, sizeof s);
	s.now = 100.0;
	struct tp_pool *a = tp_pool_new(&cfg, &host_ops, &s, &conn_ops, &s);
	struct tp_pool *b = tp_pool_new(&cfg, &host_ops, &s, &conn_ops, &s);
	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal(tp_pool_join(a, g), 0);
	assert_int_equal(tp_pool_join(b, g), 0);
	assert_int_equal(tp_pool_set_backends(a, &be_a, 1), 0);
	assert_int_equal(tp_pool_set_backends(b, &be_a, 1), 0);
	struct rec a0, a1, a2, a3, b0;

	assert_int_equal(claim(a, &a0, 0, s.now + 10), -EINPROGRESS);
	assert_int_equal(claim(a, &a1, 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	finish_connect(&s, 0);
	finish_connect(&s, 0);
	tp_release(a0.slot, true);
	tp_release(a1.slot, true);
	assert_int_equal(tp_group_count(g), 2);
	/* b is below its own max but the group is full: an idle slot of a makes room. */
	assert_int_equal(claim(b, &b0, 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	assert_int_equal(s.closed[TP_CLOSE_GROUP], 1);
	assert_int_equal(s.nconnecting, 1);
	finish_connect(&s, 0);
	assert_int_equal(b0.calls, 1);
	assert_int_equal(tp_group_count(g), 2);
	/* a: one idle slot left, a second claim is held back by the group with nothing idle
	 * elsewhere to close... */
	assert_int_equal(claim(a, &a2, 0, s.now + 10), 0);
	assert_int_equal(claim(a, &a3, 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	assert_int_equal(s.nconnecting, 0);
	/* ...until b releases one with no claim of its own: closed for a, not parked. */
	tp_release(b0.slot, true);
	sim_run(&s);
	assert_int_equal(s.closed[TP_CLOSE_GROUP], 2);
	assert_int_equal(s.nconnecting, 1);
	finish_connect(&s, 0);
	assert_int_equal(a3.calls, 1);
	assert_int_equal(tp_group_count(g), 2);
	tp_release(a2.slot, true);
	tp_release(a3.slot, true);
	finish_pool(&s, b);
	tp_pool_stop(a);
	sim_run(&s);
	assert_int_equal(tp_pool_destroy(a), 0);
	assert_int_equal(tp_group_count(g), 0);
	tp_group_free(g);
}

static void test_min_slots_and_dormant(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	cfg.nthreads = 1;
	cfg.max_slots = 3;
	cfg.min_slots = 2;
	cfg.idle_timeout = 10;
	cfg.dormant_after = 3;
	cfg.breaker_failures = 100;
	struct tp_pool *p = make_pool(&s, &cfg);
	struct tp_stats st;
	struct rec r;

	assert_int_equal(tp_pool_set_backends(p, &be_a, 1), 0);
	for (int i = 0; i < 3; i++) {
		tp_pool_tick(p, 0);
		sim_run(&s);
		if (i < 2) {
			assert_int_equal(s.nconnecting, 1); /* one a tick */
			finish_connect(&s, 0);
		} else {
			assert_int_equal(s.nconnecting, 0);
		}
	}
	tp_pool_stats(p, &st);
	assert_int_equal(st.idle, 2);
	/* idle_timeout closes nothing below min_slots. */
	s.now += 11;
	tp_pool_tick(p, 0);
	sim_run(&s);
	tp_pool_stats(p, &st);
	assert_int_equal(st.idle, 2);
	/* A reload lowers min_slots and idle_timeout: the idle slots above it go at the next tick. */
	assert_int_equal(tp_pool_resize(p, 3, 1), 0);
	tp_pool_set_expiry(p, 5, 0);
	sim_run(&s);
	s.now += 6;
	tp_pool_tick(p, 0);
	sim_run(&s);
	tp_pool_stats(p, &st);
	assert_int_equal(st.idle, 1);
	assert_int_equal(s.closed[TP_CLOSE_IDLE], 1);
	finish_pool(&s, p);

	/* min_slots connects that keep failing with nothing claimed put the pool to sleep. */
	cfg.min_slots = 1;
	p = make_pool(&s, &cfg);
	assert_int_equal(tp_pool_set_backends(p, &be_a, 1), 0);
	for (int i = 0; i < 3; i++) {
		tp_pool_tick(p, 0);
		sim_run(&s);
		assert_int_equal(s.nconnecting, 1);
		finish_connect(&s, -EPERM);
		s.now += 9; /* past any refill backoff (backoff_max 8) */
	}
	tp_pool_stats(p, &st);
	assert_true(st.dormant);
	tp_pool_tick(p, 0);
	sim_run(&s);
	assert_int_equal(s.nconnecting, 0);
	/* A claim wakes it. */
	assert_int_equal(claim(p, &r, 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	tp_pool_stats(p, &st);
	assert_false(st.dormant);
	assert_int_equal(s.nconnecting, 1);
	finish_connect(&s, 0);
	assert_int_equal(r.calls, 1);
	tp_release(r.slot, true);
	/* Put to sleep by the program: idle slots close. */
	tp_pool_sleep(p);
	sim_run(&s);
	assert_int_equal(s.closed[TP_CLOSE_DORMANT], 1);
	finish_pool(&s, p);
}

static void test_resize_and_retire(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	cfg.nthreads = 1;
	cfg.max_slots = 3;
	struct tp_pool *p = make_pool(&s, &cfg);
	struct rec r[3], r3, r4;
	struct tp_stats st;

	assert_int_equal(tp_pool_set_backends(p, &be_a, 1), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(claim(p, &r[i], 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	for (int i = 0; i < 3; i++)
		finish_connect(&s, 0);
	tp_release(r[0].slot, true);
	assert_int_equal(tp_pool_resize(p, 0, 0), -EINVAL);
	assert_int_equal(tp_pool_resize(p, 1, 0), 0);
	sim_run(&s);
	assert_int_equal(s.closed[TP_CLOSE_SHRUNK], 1); /* the idle one, at once */
	tp_release(r[1].slot, true);
	assert_int_equal(s.closed[TP_CLOSE_SHRUNK], 2); /* the next one released */
	tp_pool_stats(p, &st);
	assert_int_equal(st.slots, 1);
	assert_int_equal(st.max_slots, 1);

	tp_pool_retire(p);
	sim_run(&s);
	/* Claims are still served, by what is released... */
	assert_int_equal(claim(p, &r3, 0, s.now + 10), -EINPROGRESS);
	tp_release(r[2].slot, true);
	assert_int_equal(r3.calls, 1);
	/* ...but nothing is kept. */
	tp_release(r3.slot, true);
	assert_int_equal(s.closed[TP_CLOSE_RETIRED], 1);
	/* A larger size serves waiters at once. */
	assert_int_equal(claim(p, &r[0], 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	finish_connect(&s, 0);
	assert_int_equal(claim(p, &r4, 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	assert_int_equal(s.nconnecting, 0);
	assert_int_equal(tp_pool_resize(p, 2, 0), 0);
	sim_run(&s);
	assert_int_equal(s.nconnecting, 1);
	finish_connect(&s, 0);
	assert_int_equal(r4.calls, 1);
	tp_release(r[0].slot, true);
	tp_release(r4.slot, true);
	finish_pool(&s, p);
}

/* tp_pool_set_active_max: claims past the bound queue while slots sit idle, a release below
 * it serves the queue, a lower bound takes effect as slots come back, a higher one serves
 * waiters at once, 0 lifts it. Idle slots are never closed for it. */
static void test_active_max(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	cfg.nthreads = 1;
	cfg.max_slots = 4;
	struct tp_pool *p = make_pool(&s, &cfg);
	struct rec r[4], w[3];
	struct tp_stats st;

	assert_int_equal(tp_pool_set_backends(p, &be_a, 1), 0);
	assert_int_equal(tp_pool_set_active_max(p, -1), -EINVAL);
	for (int i = 0; i < 4; i++)
		assert_int_equal(claim(p, &r[i], 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	for (int i = 0; i < 4; i++)
		finish_connect(&s, 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(r[i].calls, 1);
	for (int i = 0; i < 4; i++)
		tp_release(r[i].slot, true); /* 4 idle */

	assert_int_equal(tp_pool_set_active_max(p, 2), 0);
	assert_int_equal(claim(p, &r[0], 0, s.now + 10), 0);
	assert_int_equal(claim(p, &r[1], 0, s.now + 10), 0);
	/* A third queues with two slots idle, and no connect starts for it. */
	assert_int_equal(claim(p, &w[0], 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	assert_int_equal(w[0].calls, 0);
	assert_int_equal(s.nconnecting, 0);
	tp_pool_tick(p, 0);
	sim_run(&s);
	assert_int_equal(w[0].calls, 0);
	tp_pool_stats(p, &st);
	assert_int_equal(st.active_max, 2);
	assert_int_equal(st.busy, 2);
	assert_int_equal(st.idle, 2);
	assert_int_equal(st.waiting, 1);
	/* A release goes to the queue. */
	tp_release(r[0].slot, true);
	sim_run(&s);
	assert_int_equal(w[0].calls, 1);
	assert_int_equal(w[0].err, 0);

	/* Lowered to 1 with 2 in use: a release parks, the next goes to the queue. */
	assert_int_equal(claim(p, &w[1], 0, s.now + 10), -EINPROGRESS);
	assert_int_equal(tp_pool_set_active_max(p, 1), 0);
	sim_run(&s);
	tp_release(r[1].slot, true);
	sim_run(&s);
	assert_int_equal(w[1].calls, 0);
	tp_pool_stats(p, &st);
	assert_int_equal(st.busy, 1);
	assert_int_equal(st.idle, 3);
	tp_release(w[0].slot, true);
	sim_run(&s);
	assert_int_equal(w[1].calls, 1);

	/* Raised: the waiters are served at once from the idle slots. */
	assert_int_equal(claim(p, &w[2], 0, s.now + 10), -EINPROGRESS);
	assert_int_equal(claim(p, &r[2], 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	assert_int_equal(tp_pool_set_active_max(p, 3), 0);
	sim_run(&s);
	assert_int_equal(w[2].calls, 1);
	assert_int_equal(r[2].calls, 1);
	/* Lifted: a claim past 3 takes the last idle slot. */
	assert_int_equal(tp_pool_set_active_max(p, 0), 0);
	assert_int_equal(claim(p, &r[3], 0, s.now + 10), 0);
	tp_pool_stats(p, &st);
	assert_int_equal(st.busy, 4);
	assert_int_equal(s.closed[TP_CLOSE_IDLE] + s.closed[TP_CLOSE_SHRUNK], 0);
	/* Past max_slots the queue connects nothing (max_slots still bounds). */
	tp_release(w[1].slot, true);
	tp_release(w[2].slot, true);
	tp_release(r[2].slot, true);
	tp_release(r[3].slot, true);

	/* A bound also holds connects: with no idle slot, one connect at most for 3 claims. */
	finish_pool(&s, p);
	p = make_pool(&s, &cfg);
	assert_int_equal(tp_pool_set_backends(p, &be_a, 1), 0);
	assert_int_equal(tp_pool_set_active_max(p, 1), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(claim(p, &r[i], 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	assert_int_equal(s.nconnecting, 1);
	finish_connect(&s, 0);
	assert_int_equal(r[0].calls, 1);
	assert_int_equal(r[1].calls, 0);
	tp_release(r[0].slot, true);
	sim_run(&s);
	assert_int_equal(r[1].calls, 1);
	assert_int_equal(s.nconnecting, 0);
	tp_release(r[1].slot, true);
	sim_run(&s);
	assert_int_equal(r[2].calls, 1);
	tp_release(r[2].slot, true);
	finish_pool(&s, p);
}

/* A busy slot whose claimer rests on it (a transaction left open) is not counted by the
 * bound: resting serves a waiter at once, from an idle slot or a connect; using it again
 * counts it again (the bound is exceeded until releases bring it back under); a release or a
 * broken slot rests no more. */
static void test_active_max_resting(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	cfg.nthreads = 1;
	cfg.max_slots = 4;
	struct tp_pool *p = make_pool(&s, &cfg);
	struct rec r[3], w[2];
	struct tp_stats st;

	assert_int_equal(tp_pool_set_backends(p, &be_a, 1), 0);
	assert_int_equal(claim(p, &r[0], 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	finish_connect(&s, 0);
	assert_int_equal(r[0].calls, 1);
	tp_release(r[0].slot, true); /* 1 idle */
	assert_int_equal(tp_pool_set_active_max(p, 1), 0);
	assert_int_equal(claim(p, &r[0], 0, s.now + 10), 0);
	assert_int_equal(claim(p, &w[0], 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	assert_int_equal(w[0].calls, 0);
	assert_int_equal(s.nconnecting, 0);

	/* r[0] rests: w[0] gets a new connect (no idle slot), at once. */
	tp_slot_rest(r[0].slot, true);
	tp_slot_rest(r[0].slot, true); /* twice is once */
	sim_run(&s);
	assert_int_equal(s.nconnecting, 1);
	finish_connect(&s, 0);
	assert_int_equal(w[0].calls, 1);
	assert_int_equal(w[0].err, 0);
	tp_pool_stats(p, &st);
	assert_int_equal(st.busy, 2);
	assert_int_equal(st.resting, 1);
	assert_int_equal(tp_pool_take_active_peak(p), 1);

	/* r[0] works again: 2 in use against a bound of 1; the next claim waits for two
	 * releases, not one. */
	tp_slot_rest(r[0].slot, false);
	assert_int_equal(claim(p, &w[1], 0, s.now + 10), -EINPROGRESS);
	tp_release(w[0].slot, true);
	sim_run(&s);
	assert_int_equal(w[1].calls, 0);
	/* Released while resting: the count goes with it. */
	tp_slot_rest(r[0].slot, true);
	sim_run(&s);
	assert_int_equal(w[1].calls, 1);
	tp_release(r[0].slot, true);
	tp_pool_stats(p, &st);
	assert_int_equal(st.resting, 0);
	assert_int_equal(st.busy, 1);

	/* A broken resting slot: the count goes too. */
	tp_slot_rest(w[1].slot, true);
	tp_release(w[1].slot, false);
	sim_run(&s);
	tp_pool_stats(p, &st);
	assert_int_equal(st.resting, 0);
	assert_int_equal(st.busy, 0);
	/* Resting means nothing to a slot not busy, nor without a bound. */
	assert_int_equal(tp_pool_set_active_max(p, 0), 0);
	assert_int_equal(claim(p, &r[1], 0, s.now + 10), 0);
	tp_slot_rest(r[1].slot, true);
	tp_pool_stats(p, &st);
	assert_int_equal(st.resting, 1);
	tp_release(r[1].slot, true);
	finish_pool(&s, p);
}

static void test_backoff_after_and_fail_fast(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	cfg.nthreads = 1;
	cfg.bind_connects = true;
	cfg.backoff_after = 2;
	cfg.fail_fast = true;
	cfg.breaker_failures = 100;
	struct tp_pool *p = make_pool(&s, &cfg);
	struct rec r0, r1, r2, r3;
	struct tp_stats st;
	enum tp_backend_state bs;

	assert_int_equal(tp_pool_set_backends(p, &be_a, 1), 0);
	assert_int_equal(claim(p, &r0, 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	finish_connect(&s, -ECONNREFUSED);
	assert_int_equal(r0.err, -ECONNREFUSED);
	/* One failure may be a restart that just finished: no backoff yet. */
	assert_true(tp_pool_backend(p, 0, NULL, &bs, NULL));
	assert_int_equal(bs, TP_BACKEND_UP);
	assert_int_equal(claim(p, &r1, 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	finish_connect(&s, -ECONNREFUSED);
	assert_true(tp_pool_backend(p, 0, NULL, &bs, NULL));
	assert_int_equal(bs, TP_BACKEND_BACKOFF);
	tp_pool_stats(p, &st);
	assert_true(st.down);
	/* Backing off: a claim that needs a connect fails at once. */
	assert_int_equal(claim(p, &r2, 0, s.now + 10), -EHOSTUNREACH);
	s.now += 10;
	assert_int_equal(claim(p, &r3, 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	finish_connect(&s, 0);
	assert_int_equal(r3.calls, 1);
	tp_release(r3.slot, true);
	finish_pool(&s, p);
}

static void test_idle_broken(void **state)
{
	(void)state;
	struct sim s;
	struct tp_config cfg = base_cfg();
	cfg.nthreads = 1;
	struct tp_pool *p = make_pool(&s, &cfg);
	struct rec r0, r1, r2;
	struct tp_stats st;

	assert_int_equal(tp_pool_set_backends(p, &be_a, 1), 0);
	assert_int_equal(claim(p, &r0, 0, s.now + 10), -EINPROGRESS);
	assert_int_equal(claim(p, &r1, 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	finish_connect(&s, 0);
	finish_connect(&s, 0);
	tp_release(r0.slot, true);
	/* In use: not the connector's to close through this. */
	assert_false(tp_idle_broken(r1.slot));
	assert_int_equal(s.closed[TP_CLOSE_HEALTH], 0);
	/* Idle and dead: closed, and the next claim connects anew. */
	assert_true(tp_idle_broken(r0.slot));
	assert_int_equal(s.closed[TP_CLOSE_HEALTH], 1);
	tp_pool_stats(p, &st);
	assert_int_equal(st.idle, 0);
	assert_int_equal(st.slots, 1);
	assert_int_equal(claim(p, &r2, 0, s.now + 10), -EINPROGRESS);
	sim_run(&s);
	assert_int_equal(s.nconnecting, 1);
	finish_connect(&s, 0);
	assert_int_equal(r2.calls, 1);
	tp_release(r1.slot, true);
	tp_release(r2.slot, true);
	finish_pool(&s, p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_claim_before_any_backend),
		cmocka_unit_test(test_more_claims_than_slots),
		cmocka_unit_test(test_slow_connector_does_not_block),
		cmocka_unit_test(test_release_during_error),
		cmocka_unit_test(test_removal_during_health_check),
		cmocka_unit_test(test_health_check_failure_closes),
		cmocka_unit_test(test_destroy_with_claims_pending),
		cmocka_unit_test(test_deadline_expiry),
		cmocka_unit_test(test_cancel_queued_claim),
		cmocka_unit_test(test_handover_between_threads),
		cmocka_unit_test(test_busy_slot_moved_with_its_owner),
		cmocka_unit_test(test_breaker_fails_fast_and_probes),
		cmocka_unit_test(test_weight_and_priority),
		cmocka_unit_test(test_empty_resolver_answer_keeps_backends),
		cmocka_unit_test(test_bound_claim_moves_to_another_backend),
		cmocka_unit_test(test_bound_claim_waits_out_a_stale_backend),
		cmocka_unit_test(test_claims_wait_while_a_backend_is_held_after_estale),
		cmocka_unit_test(test_reserve_slots_after_the_head_waited),
		cmocka_unit_test(test_slow_backend_gets_one_connect_at_a_time),
		cmocka_unit_test(test_idle_timeout_and_lifetime),
		cmocka_unit_test(test_bad_config),
		cmocka_unit_test(test_claim_key_preference),
		cmocka_unit_test(test_pass_over_to_same_thread),
		cmocka_unit_test(test_pass_over_bound_is_relative),
		cmocka_unit_test(test_claim_at_takes_the_callers_time),
		cmocka_unit_test(test_lock_under_contention),
		cmocka_unit_test(test_pause_resume),
		cmocka_unit_test(test_backend_full_caps_the_pool),
		cmocka_unit_test(test_bound_connects),
		cmocka_unit_test(test_connect_report_reaches_the_claim_it_answers),
		cmocka_unit_test(test_reconnect_generation),
		cmocka_unit_test(test_group_limit),
		cmocka_unit_test(test_min_slots_and_dormant),
		cmocka_unit_test(test_resize_and_retire),
		cmocka_unit_test(test_active_max),
		cmocka_unit_test(test_active_max_resting),
		cmocka_unit_test(test_backoff_after_and_fail_fast),
		cmocka_unit_test(test_idle_broken),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
