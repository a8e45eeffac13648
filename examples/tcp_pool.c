/* examples/tcp_pool.c: libtuskpool pooling plain TCP connections to an echo server.
 *
 * Two worker threads, one libev loop each, run CLIENTS request loops each (claim with a
 * deadline, send a line, read the echo, release) against a pool smaller than the number of
 * clients. An echo server thread in the same process goes away in the middle of the run and
 * comes back; the pool's backoff and circuit breaker fail claims fast while it is gone and
 * the clients recover once it is back. Prints what happened and exits 0 only if every phase
 * did what it should:
 *   up      every request succeeds
 *   down    requests fail (refused connects, a dead backend, closed connections)
 *   back    requests succeed again
 *   stop    the pool stops and is destroyed with nothing left
 * Build: cc tcp_pool.c $(pkg-config --cflags --libs tuskpool) -lev -pthread */
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <tuskpool.h>

#define NTHREADS 2
#define CLIENTS 4       /* per thread: 8 clients for MAX_SLOTS connections */
#define MAX_SLOTS 3
#define UP_REQUESTS 200 /* per thread, phase up */
#define BACK_REQUESTS 100
#define DEADLINE 0.3 /* seconds per claim */

enum phase { PHASE_UP, PHASE_DOWN, PHASE_BACK, PHASE_STOP };
static atomic_int phase = PHASE_UP;

/* ---- host: clock, per-thread inboxes ---- */

struct task {
	void (*fn)(void *);
	void *arg;
	struct task *next;
};

struct worker {
	int index;
	pthread_t thread;
	struct ev_loop *loop;
	ev_async wake;
	ev_timer tick;
	pthread_mutex_t lock; /* protects inbox and quit */
	struct task *inbox, *inbox_tail;
	bool quit;
	/* per phase, this thread's results (only this thread writes them) */
	atomic_int ok[PHASE_STOP + 1], failed[PHASE_STOP + 1];
	atomic_int timed_out[PHASE_STOP + 1], unreachable[PHASE_STOP + 1];
};

static struct worker workers[NTHREADS];
static struct tp_pool *pool;
static uint16_t echo_port;

static double host_now(void *h)
{
	struct timespec ts;
	(void)h;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void host_post(void *h, int thread, void (*fn)(void *), void *arg)
{
	struct worker *w = &workers[thread];
	struct task *t = malloc(sizeof *t);
	(void)h;
	if (!t)
		abort(); /* an example: a real host keeps a bounded free list */
	t->fn = fn;
	t->arg = arg;
	t->next = NULL;
	pthread_mutex_lock(&w->lock);
	if (w->inbox_tail)
		w->inbox_tail->next = t;
	else
		w->inbox = t;
	w->inbox_tail = t;
	pthread_mutex_unlock(&w->lock);
	ev_async_send(w->loop, &w->wake);
}

static atomic_int events[TP_EV_CLOSED + 1];
static void host_count(void *h, enum tp_event ev, double v)
{
	(void)h;
	(void)v;
	atomic_fetch_add(&events[ev], 1);
}

static void host_log(void *h, enum tp_log_level level, const char *msg)
{
	(void)h;
	if (level >= TP_LOG_INFO)
		fprintf(stderr, "tuskpool: %s\n", msg);
}

static const struct tp_host_ops host_ops = { host_now, host_post, host_count, host_log };

/* ---- connector: non-blocking TCP to 127.0.0.1 ---- */

struct conn {
	int fd;
	ev_io io;
	struct worker *w;
	struct tp_slot *slot;
};

static void on_connected(struct ev_loop *loop, ev_io *io, int revents)
{
	struct conn *c = io->data;
	int err = 0;
	socklen_t len = sizeof err;
	(void)revents;
	ev_io_stop(loop, io);
	getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
	tp_connect_done(c->slot, err ? -err : 0, err ? strerror(err) : NULL);
}

static void conn_connect(void *ctx, struct tp_slot *slot, const struct tp_backend_addr *be)
{
	struct worker *w = &workers[tp_slot_thread(slot)];
	struct conn *c = calloc(1, sizeof *c);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(be->port) };
	(void)ctx;
	if (!c) {
		tp_connect_done(slot, -ENOMEM, "out of memory");
		return;
	}
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	c->w = w;
	c->slot = slot;
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	tp_slot_set_conn(slot, c);
	if (c->fd < 0 || (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS)) {
		int e = errno;
		tp_connect_done(slot, -e, strerror(e));
		return;
	}
	ev_io_init(&c->io, on_connected, c->fd, EV_WRITE);
	c->io.data = c;
	ev_io_start(w->loop, &c->io);
}

/* An idle connection the server closed reads as EOF: one recv(MSG_PEEK), no waiting. */
static void conn_check(void *ctx, struct tp_slot *slot)
{
	struct conn *c = tp_slot_conn(slot);
	char b;
	(void)ctx;
	ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	tp_check_done(slot, n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
}

static void conn_close(void *ctx, struct tp_slot *slot, enum tp_close_reason why)
{
	struct conn *c = tp_slot_conn(slot);
	(void)ctx;
	(void)why;
	if (!c)
		return;
	ev_io_stop(c->w->loop, &c->io);
	if (c->fd >= 0)
		close(c->fd);
	free(c);
}

/* No watcher runs on an idle connection here, so the hand-over only re-homes it. */
static void conn_detach(void *ctx, struct tp_slot *slot) { (void)ctx; (void)slot; }
static void conn_attach(void *ctx, struct tp_slot *slot, int thread)
{
	struct conn *c = tp_slot_conn(slot);
	(void)ctx;
	c->w = &workers[thread];
}

static const struct tp_connector_ops conn_ops = {
	.connect = conn_connect, .check = conn_check, .close = conn_close, .detach = conn_detach, .attach = conn_attach,
};

/* ---- clients: claim, echo one line, release ---- */

struct client {
	struct tp_claim claim; /* first: the claim callback finds the client from it */
	struct worker *w;
	int id;
	struct tp_slot *slot;
	ev_io io;
	ev_timer retry;
	int seq;
	int phase_at_start;
	bool busy;
};

static struct client clients[NTHREADS][CLIENTS];

static void start_request(struct client *cl);

static void finish(struct client *cl, bool ok)
{
	struct worker *w = cl->w;
	int ph = cl->phase_at_start;
	if (cl->slot) {
		tp_release(cl->slot, ok);
		cl->slot = NULL;
	}
	if (ok)
		atomic_fetch_add(&w->ok[ph], 1);
	else
		atomic_fetch_add(&w->failed[ph], 1);
	cl->busy = false;
	/* A failed request waits a little, as a real client would, then tries again. */
	if (ok)
		start_request(cl);
	else {
		/* libev keeps a stopped timer's remaining time: set it again before each start. */
		ev_timer_set(&cl->retry, 0.05, 0);
		ev_timer_start(w->loop, &cl->retry);
	}
}

static void on_echo(struct ev_loop *loop, ev_io *io, int revents)
{
	struct client *cl = io->data;
	struct conn *c = tp_slot_conn(cl->slot);
	char buf[64], want[64];
	(void)revents;
	ev_io_stop(loop, io);
	int n = snprintf(want, sizeof want, "ping %d.%d.%d\n", cl->w->index, cl->id, cl->seq);
	ssize_t got = recv(c->fd, buf, sizeof buf, 0);
	finish(cl, got == n && memcmp(buf, want, (size_t)n) == 0);
}

static void use_slot(struct client *cl, struct tp_slot *slot)
{
	struct conn *c = tp_slot_conn(slot);
	char line[64];
	cl->slot = slot;
	int n = snprintf(line, sizeof line, "ping %d.%d.%d\n", cl->w->index, cl->id, ++cl->seq);
	if (send(c->fd, line, (size_t)n, MSG_NOSIGNAL) != n) {
		finish(cl, false);
		return;
	}
	ev_io_init(&cl->io, on_echo, c->fd, EV_READ);
	cl->io.data = cl;
	ev_io_start(cl->w->loop, &cl->io);
}

static void on_claim(struct tp_claim *claim, struct tp_slot *slot, int err)
{
	struct client *cl = (struct client *)claim;
	if (err == -ETIMEDOUT)
		atomic_fetch_add(&cl->w->timed_out[cl->phase_at_start], 1);
	else if (err == -EHOSTUNREACH)
		atomic_fetch_add(&cl->w->unreachable[cl->phase_at_start], 1);
	if (err) {
		finish(cl, false);
		return;
	}
	use_slot(cl, slot);
}

static void start_request(struct client *cl)
{
	struct tp_slot *slot;
	int ph = atomic_load(&phase);
	if (ph == PHASE_STOP || (ph == PHASE_UP && atomic_load(&cl->w->ok[PHASE_UP]) >= UP_REQUESTS))
		return;
	cl->busy = true;
	cl->phase_at_start = ph;
	cl->claim.done = on_claim;
	int rc = tp_claim(pool, &cl->claim, cl->w->index, host_now(NULL) + DEADLINE, &slot);
	if (rc == 0)
		use_slot(cl, slot);
	else if (rc != -EINPROGRESS)
		on_claim(&cl->claim, NULL, rc);
}

static void on_retry(struct ev_loop *loop, ev_timer *t, int revents)
{
	(void)loop;
	(void)revents;
	start_request(t->data);
}

/* ---- worker threads ---- */

static void run_inbox(struct worker *w)
{
	pthread_mutex_lock(&w->lock);
	struct task *t = w->inbox;
	w->inbox = w->inbox_tail = NULL;
	bool quit = w->quit;
	pthread_mutex_unlock(&w->lock);
	while (t) {
		struct task *next = t->next;
		t->fn(t->arg);
		free(t);
		t = next;
	}
	if (quit) {
		ev_timer_stop(w->loop, &w->tick);
		ev_break(w->loop, EVBREAK_ALL);
	}
}

static void on_wake(struct ev_loop *loop, ev_async *a, int revents)
{
	(void)loop;
	(void)revents;
	run_inbox(a->data);
}

static void on_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct worker *w = t->data;
	(void)loop;
	(void)revents;
	tp_pool_tick(pool, w->index);
	/* Clients idle after phase up (their quota done) join the next phase. */
	int ph = atomic_load(&phase);
	for (int i = 0; i < CLIENTS && ph != PHASE_UP && ph != PHASE_STOP; i++) {
		struct client *cl = &clients[w->index][i];
		/* A retry timer that expired in this loop iteration is no longer active but its
		 * callback is still pending: it starts the request itself. */
		if (!cl->busy && !ev_is_active(&cl->retry) && !ev_is_pending(&cl->retry))
			start_request(cl);
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	for (int i = 0; i < CLIENTS; i++) {
		struct client *cl = &clients[w->index][i];
		cl->w = w;
		cl->id = i;
		ev_timer_init(&cl->retry, on_retry, 0.05, 0);
		cl->retry.data = cl;
		start_request(cl);
	}
	ev_run(w->loop, 0);
	return NULL;
}

/* ---- the echo server: a thread with a poll loop that can go away and come back ---- */

static int echo_ctl[2]; /* 'd' down, 'u' up, 'q' quit */

static int echo_listen(uint16_t port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 64) < 0) {
		perror("echo: bind/listen");
		exit(2);
	}
	socklen_t len = sizeof sa;
	getsockname(fd, (struct sockaddr *)&sa, &len);
	echo_port = ntohs(sa.sin_port);
	return fd;
}

static void *echo_main(void *arg)
{
	struct pollfd fds[64];
	int n = 2;
	fds[0] = (struct pollfd){ .fd = echo_ctl[0], .events = POLLIN };
	fds[1] = (struct pollfd){ .fd = *(int *)arg, .events = POLLIN };
	for (;;) {
		if (poll(fds, (nfds_t)n, -1) < 0)
			continue;
		if (fds[0].revents & POLLIN) {
			char cmd;
			if (read(echo_ctl[0], &cmd, 1) != 1 || cmd == 'q')
				break;
			if (cmd == 'd') { /* go away: no listener, every connection closed */
				for (int i = 1; i < n; i++)
					close(fds[i].fd);
				n = 1;
			} else if (cmd == 'u' && n == 1) {
				fds[1] = (struct pollfd){ .fd = echo_listen(echo_port), .events = POLLIN };
				n = 2;
			}
			continue;
		}
		if (n > 1 && (fds[1].revents & POLLIN) && n < 64) {
			int fd = accept4(fds[1].fd, NULL, NULL, SOCK_CLOEXEC);
			if (fd >= 0)
				fds[n++] = (struct pollfd){ .fd = fd, .events = POLLIN };
		}
		for (int i = 2; i < n; i++) {
			if (!fds[i].revents)
				continue;
			char buf[256];
			ssize_t got = read(fds[i].fd, buf, sizeof buf);
			if (got <= 0 || write(fds[i].fd, buf, (size_t)got) != got) {
				close(fds[i].fd);
				fds[i--] = fds[--n];
			}
		}
	}
	for (int i = 1; i < n; i++)
		close(fds[i].fd);
	return NULL;
}

static void echo_cmd(char c)
{
	if (write(echo_ctl[1], &c, 1) != 1)
		abort();
}

enum { SUM_OK, SUM_FAILED, SUM_TIMED_OUT, SUM_UNREACHABLE };
static int sum(int which, int ph)
{
	int s = 0;
	for (int i = 0; i < NTHREADS; i++) {
		struct worker *w = &workers[i];
		s += atomic_load(which == SUM_OK ? &w->ok[ph] : which == SUM_FAILED ? &w->failed[ph]
				 : which == SUM_TIMED_OUT ? &w->timed_out[ph] : &w->unreachable[ph]);
	}
	return s;
}
static void print_failed(int ph)
{
	int f = sum(SUM_FAILED, ph), t = sum(SUM_TIMED_OUT, ph), u = sum(SUM_UNREACHABLE, ph);
	printf("%d failed (%d claims timed out, %d failed fast, %d requests broke)", f, t, u, f - t - u);
}

/* Wait up to limit seconds for cond(); true if it held. */
static bool wait_for(bool (*cond)(void), double limit)
{
	double until = host_now(NULL) + limit;
	while (!cond()) {
		if (host_now(NULL) > until)
			return false;
		usleep(10000);
	}
	return true;
}

static bool up_done(void) { return sum(0, PHASE_UP) >= NTHREADS * UP_REQUESTS; }
static bool down_seen(void) { return sum(1, PHASE_DOWN) >= 10; }
static bool back_done(void) { return sum(0, PHASE_BACK) >= NTHREADS * BACK_REQUESTS; }
static bool drained(void)
{
	struct tp_stats st;
	tp_pool_stats(pool, &st);
	return st.slots == 0 && st.waiting == 0;
}

int main(void)
{
	struct tp_config cfg = {
		.name = "echo", .nthreads = NTHREADS, .max_slots = MAX_SLOTS, .idle_timeout = 30, .lifetime = 0,
		.check_after = 0.2, .backoff_first = 0.05, .backoff_max = 0.3, .breaker_failures = 3,
	};
	pthread_t echo;
	struct tp_stats st;
	bool ok = true;

	if (pipe(echo_ctl) < 0)
		return 2;
	/* Listening before any client starts: the first connects must not be refused. */
	int listener = echo_listen(0);
	pthread_create(&echo, NULL, echo_main, &listener);
	pool = tp_pool_new(&cfg, &host_ops, NULL, &conn_ops, NULL);
	if (!pool)
		return 2;
	struct tp_backend_addr be = { .name = "127.0.0.1", .port = echo_port };
	if (tp_pool_set_backends(pool, &be, 1) < 0)
		return 2;
	for (int i = 0; i < NTHREADS; i++) {
		struct worker *w = &workers[i];
		w->index = i;
		w->loop = ev_loop_new(EVFLAG_AUTO);
		pthread_mutex_init(&w->lock, NULL);
		ev_async_init(&w->wake, on_wake);
		w->wake.data = w;
		ev_async_start(w->loop, &w->wake);
		ev_timer_init(&w->tick, on_tick, 0.02, 0.02);
		w->tick.data = w;
		ev_timer_start(w->loop, &w->tick);
	}
	for (int i = 0; i < NTHREADS; i++)
		pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]);

	bool up = wait_for(up_done, 20);
	printf("up: %d ok, ", sum(0, PHASE_UP));
	print_failed(PHASE_UP);
	printf("\n");
	ok &= up && sum(1, PHASE_UP) == 0;

	atomic_store(&phase, PHASE_DOWN);
	echo_cmd('d');
	bool down = wait_for(down_seen, 10);
	usleep(500000); /* long enough for the breaker to open and fail claims fast */
	tp_pool_stats(pool, &st);
	char last[256];
	tp_pool_last_error(pool, last, sizeof last);
	enum tp_backend_state bs;
	tp_pool_backend(pool, 0, NULL, &bs, NULL);
	printf("down: ");
	print_failed(PHASE_DOWN);
	printf(", backend %s, last error: %s\n", tp_backend_state_name(bs), last);
	ok &= down && bs == TP_BACKEND_DEAD && strstr(last, "refused") != NULL;

	atomic_store(&phase, PHASE_BACK);
	echo_cmd('u');
	bool back = wait_for(back_done, 20);
	tp_pool_backend(pool, 0, NULL, &bs, NULL);
	printf("back: %d ok, backend %s\n", sum(0, PHASE_BACK), tp_backend_state_name(bs));
	ok &= back && bs == TP_BACKEND_UP;

	atomic_store(&phase, PHASE_STOP);
	usleep(100000); /* requests in flight finish */
	tp_pool_stop(pool);
	bool empty = wait_for(drained, 5);
	for (int i = 0; i < NTHREADS; i++) {
		pthread_mutex_lock(&workers[i].lock);
		workers[i].quit = true;
		pthread_mutex_unlock(&workers[i].lock);
		ev_async_send(workers[i].loop, &workers[i].wake);
		pthread_join(workers[i].thread, NULL);
	}
	tp_pool_stats(pool, &st);
	printf("stop: claims %llu served %llu timeouts %llu connects %llu connect failures %llu handovers %llu max slots %d\n",
	       (unsigned long long)st.claims, (unsigned long long)st.served, (unsigned long long)st.timeouts,
	       (unsigned long long)st.connects, (unsigned long long)st.connect_failures,
	       (unsigned long long)st.handovers, MAX_SLOTS);
	int rc = tp_pool_destroy(pool);
	printf("destroy: %s\n", rc == 0 ? "ok" : strerror(-rc));
	ok &= empty && rc == 0 && st.served > 0 && st.connect_failures > 0;
	echo_cmd('q');
	pthread_join(echo, NULL);
	printf("%s\n", ok ? "tcp_pool: PASS" : "tcp_pool: FAIL");
	return ok ? 0 : 1;
}
