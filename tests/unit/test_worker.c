/* The worker as a host (worker.h): tenants registered with worker_register get their slots
 * and their hooks in order (init, tick's heap report, drain, stop forward, free in reverse),
 * messages are a function and its argument, and accepted connections go to the one tenant
 * with an accept hook. Threadless workers (worker_new), run here with ev_run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "runtime/runtime.h"
#include "worker/worker.h"

/* What the hooks saw, in order: one letter for the tenant, one for the hook. */
static char trace[128];
static struct worker *seen_worker;
static int accepted_fd = -1;
static char accepted_key[WORKER_LISTEN_KEY_MAX];
static bool fail_init_c;

static void note(char tenant, char hook)
{
	size_t n = strlen(trace);
	assert_true(n + 2 < sizeof trace);
	trace[n] = tenant;
	trace[n + 1] = hook;
	trace[n + 2] = '\0';
}

struct slot_a {
	long value;
	char more[100];
};

static int a_init(struct worker *w)
{
	note('a', 'i');
	seen_worker = w;
	return 0;
}
static void a_drain(struct worker *w, const char *reason)
{
	(void)w;
	assert_non_null(strstr(reason, "shutting down"));
	note('a', 'd');
}
static void a_stop(struct worker *w, const char *reason)
{
	(void)w;
	assert_non_null(reason);
	note('a', 's');
}
static void a_free(struct worker *w)
{
	(void)w;
	note('a', 'f');
}
static void a_accept(struct worker *w, int fd, const struct net_addr *peer, const char *listener)
{
	(void)w;
	(void)peer;
	accepted_fd = fd;
	snprintf(accepted_key, sizeof accepted_key, "%s", listener);
}
static int b_init(struct worker *w)
{
	(void)w;
	note('b', 'i');
	return 0;
}
static void b_stop(struct worker *w, const char *reason)
{
	(void)w;
	(void)reason;
	note('b', 's');
}
static void b_free(struct worker *w)
{
	(void)w;
	note('b', 'f');
}
static int c_init(struct worker *w)
{
	(void)w;
	note('c', 'i');
	return fail_init_c ? -ENOMEM : 0;
}
static void c_free(struct worker *w)
{
	(void)w;
	note('c', 'f');
}

static struct worker_hooks tenant_a = {
	.name = "a",
	.size = sizeof(struct slot_a),
	.init = a_init,
	.drain = a_drain,
	.stop = a_stop,
	.free = a_free,
	.accept = a_accept,
};
static struct worker_hooks tenant_b = {
	.name = "b",
	.size = sizeof(long),
	.init = b_init,
	.stop = b_stop,
	.free = b_free,
};
/* No slot and no stop: hooks may be left out. */
static struct worker_hooks tenant_c = {
	.name = "c",
	.init = c_init,
	.free = c_free,
};

static struct runtime rt;

static int setup_all(void **state)
{
	(void)state;
	worker_register(&tenant_a);
	worker_register(&tenant_b);
	worker_register(&tenant_c);
	/* Again: nothing changes (a second runtime in one process registers again). */
	worker_register(&tenant_a);
	return 0;
}

static struct worker *make(void)
{
	struct worker *w = NULL;
	trace[0] = '\0';
	assert_int_equal(worker_new(&rt, 0, &w), 0);
	return w;
}

static void test_each_tenant_has_its_own_zeroed_slot(void **state)
{
	(void)state;
	assert_int_equal(tenant_a.slot, 0);
	assert_int_equal(tenant_b.slot, 1);
	assert_int_equal(tenant_c.slot, 2);
	struct worker *w = make();
	assert_string_equal(trace, "aibici");
	assert_ptr_equal(seen_worker, w);
	struct slot_a *a = worker_slot(w, tenant_a.slot);
	long *b = worker_slot(w, tenant_b.slot);
	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal(a->value, 0);
	assert_int_equal(*b, 0);
	assert_null(worker_slot(w, tenant_c.slot));
	a->value = 7;
	*b = 8;
	worker_stop(w);
	ev_run(w->loop, 0);
	worker_free(w);
}

struct ran {
	struct worker *w;
	void *arg;
	uint32_t u;
	int times;
};

static void record(struct worker *w, struct worker_msg *m)
{
	struct ran *r = m->arg;
	r->w = w;
	r->arg = m->arg;
	r->u = m->u32[0];
	r->times++;
}

static void bump(void *arg)
{
	(*(int *)arg)++;
}

static void test_a_message_is_a_function_and_its_argument(void **state)
{
	(void)state;
	struct worker *w = make();
	struct ran r = { 0 };
	struct worker_msg *m = worker_msg_new();
	assert_non_null(m);
	m->fn = record;
	m->arg = &r;
	m->u32[0] = 42;
	worker_post(w, m);
	m = worker_msg_new();
	assert_non_null(m);
	m->fn = record;
	m->arg = &r;
	m->u32[0] = 43;
	worker_post_local(w, m);
	/* The pool core's form: fn NULL, call(arg). */
	int calls = 0;
	m = worker_msg_new();
	assert_non_null(m);
	m->call = bump;
	m->arg = &calls;
	worker_post(w, m);
	ev_run(w->loop, EVRUN_NOWAIT);
	assert_int_equal(calls, 1);
	assert_int_equal(r.times, 2);
	assert_ptr_equal(r.w, w);
	assert_ptr_equal(r.arg, &r);
	/* the worker's own message (local) runs before the inbox's, so the inbox's came last */
	assert_int_equal(r.u, 42);
	worker_stop(w);
	ev_run(w->loop, 0);
	worker_free(w);
}

static void test_stop_runs_forward_and_free_backward(void **state)
{
	(void)state;
	struct worker *w = make();
	trace[0] = '\0';
	assert_int_equal(worker_post_drain(w), 0);
	ev_run(w->loop, EVRUN_NOWAIT);
	assert_string_equal(trace, "ad");
	assert_true(w->draining);
	assert_int_equal(atomic_load(&w->load), -1);
	trace[0] = '\0';
	worker_stop(w);
	ev_run(w->loop, 0); /* returns: stopping breaks the loop */
	assert_true(w->stopping);
	assert_string_equal(trace, "asbs");
	trace[0] = '\0';
	worker_free(w);
	assert_string_equal(trace, "cfbfaf");
}

static void test_a_message_left_in_the_inbox_runs_at_free(void **state)
{
	(void)state;
	struct worker *w = make();
	struct ran r = { 0 };
	worker_stop(w);
	ev_run(w->loop, 0);
	struct worker_msg *m = worker_msg_new();
	assert_non_null(m);
	m->fn = record;
	m->arg = &r;
	worker_post(w, m);
	worker_free(w);
	assert_int_equal(r.times, 1);
}

static void test_a_failed_init_frees_the_tenants_before_it(void **state)
{
	(void)state;
	struct worker *w = NULL;
	trace[0] = '\0';
	fail_init_c = true;
	assert_int_equal(worker_new(&rt, 0, &w), -ENOMEM);
	fail_init_c = false;
	assert_string_equal(trace, "aibicibfaf");
}

static void test_accepted_connections_go_to_the_acceptor(void **state)
{
	(void)state;
	struct worker *w = make();
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(lfd >= 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = 0 };
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
	assert_int_equal(listen(lfd, 8), 0);
	assert_int_equal(fcntl(lfd, F_SETFL, O_NONBLOCK), 0);
	socklen_t len = sizeof sa;
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &len), 0);
	assert_int_equal(worker_post_listen(w, lfd, "127.0.0.1:test"), 0);
	ev_run(w->loop, EVRUN_NOWAIT);

	int cfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(cfd >= 0);
	assert_int_equal(connect(cfd, (struct sockaddr *)&sa, sizeof sa), 0);
	for (int i = 0; i < 100 && accepted_fd < 0; i++)
		ev_run(w->loop, EVRUN_ONCE);
	assert_true(accepted_fd >= 0);
	assert_string_equal(accepted_key, "127.0.0.1:test");
	close(accepted_fd);
	close(cfd);
	accepted_fd = -1;

	/* Unlisten by name: closed (a new connection is refused). */
	assert_int_equal(worker_post_unlisten(w, "127.0.0.1:test"), 0);
	ev_run(w->loop, EVRUN_NOWAIT);
	cfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(cfd >= 0);
	assert_int_not_equal(connect(cfd, (struct sockaddr *)&sa, sizeof sa), 0);
	close(cfd);
	worker_stop(w);
	ev_run(w->loop, 0);
	worker_free(w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_each_tenant_has_its_own_zeroed_slot),
		cmocka_unit_test(test_a_message_is_a_function_and_its_argument),
		cmocka_unit_test(test_stop_runs_forward_and_free_backward),
		cmocka_unit_test(test_a_message_left_in_the_inbox_runs_at_free),
		cmocka_unit_test(test_a_failed_init_frees_the_tenants_before_it),
		cmocka_unit_test(test_accepted_connections_go_to_the_acceptor),
	};
	return cmocka_run_group_tests(tests, setup_all, NULL);
}
