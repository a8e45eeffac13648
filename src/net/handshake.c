/* The TLS handshake threads (handshake.h). */
#include "net/handshake.h"

#include <errno.h>
#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "net/evio.h"
#include "net/tls.h"
#include "util/log.h"

struct hs_job {
	struct hs_thread *t;
	struct hs_job *prev, *next; /* the thread's running jobs; the incoming list uses next only */
	struct tls_conn *conn;
	int fd;
	double deadline;
	tls_hs_done_fn *done;
	void *arg;
	ev_io io;
	ev_timer timer;
};

struct hs_thread {
	struct tls_hs_pool *p;
	struct ev_loop *loop;
	ev_async wake;
	pthread_t thread;
	bool started;
	pthread_mutex_t mu;
	struct hs_job *incoming; /* under mu */
	bool stopping;           /* under mu */
	struct hs_job *jobs;     /* the thread's own */
};

struct tls_hs_pool {
	int n;
	atomic_uint next;
	atomic_uint pending;
	atomic_ulong done;
	atomic_ulong kept[2]; /* tls_hs_note_kept: [1] resumed, [0] full; counters alone, relaxed */
	struct hs_thread *threads;
};

static void finish(struct hs_job *j, int rc)
{
	struct hs_thread *t = j->t;

	ev_io_stop(t->loop, &j->io);
	ev_timer_stop(t->loop, &j->timer);
	if (j->prev)
		j->prev->next = j->next;
	else
		t->jobs = j->next;
	if (j->next)
		j->next->prev = j->prev;
	atomic_fetch_sub_explicit(&t->p->pending, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&t->p->done, 1, memory_order_relaxed);
	tls_hs_done_fn *done = j->done;
	void *arg = j->arg;
	free(j);
	done(arg, rc);
}

static void step(struct hs_job *j)
{
	int want = 0;
	int rc = tls_handshake(j->conn, &want);

	if (rc == -EAGAIN) {
		evio_watch(j->t->loop, &j->io, j->fd, want ? want : EV_READ);
		return;
	}
	finish(j, rc);
}

static void io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	(void)loop;
	(void)revents;
	step(io->data);
}

static void timer_cb(struct ev_loop *loop, ev_timer *tm, int revents)
{
	(void)loop;
	(void)revents;
	finish(tm->data, -ETIMEDOUT);
}

static void start_job(struct hs_thread *t, struct hs_job *j)
{
	j->prev = NULL;
	j->next = t->jobs;
	if (t->jobs)
		t->jobs->prev = j;
	t->jobs = j;
	ev_io_init(&j->io, io_cb, j->fd, EV_READ);
	j->io.data = j;
	double left = j->deadline - ev_time();
	ev_timer_init(&j->timer, timer_cb, left > 0 ? left : 0, 0);
	j->timer.data = j;
	ev_timer_start(t->loop, &j->timer);
	step(j);
}

static void wake_cb(struct ev_loop *loop, ev_async *a, int revents)
{
	struct hs_thread *t = a->data;
	(void)revents;

	pthread_mutex_lock(&t->mu);
	struct hs_job *in = t->incoming;
	bool stopping = t->stopping;
	t->incoming = NULL;
	pthread_mutex_unlock(&t->mu);
	while (in) {
		struct hs_job *j = in;
		in = in->next;
		start_job(t, j);
	}
	if (stopping) {
		while (t->jobs)
			finish(t->jobs, -ECANCELED);
		ev_break(loop, EVBREAK_ALL);
	}
}

static void *run(void *arg)
{
	struct hs_thread *t = arg;

	(void)pthread_setname_np(pthread_self(), "tusk-handshake");
	/* Behind the relay when the cores are short (Linux: nice is per thread). */
	if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), HS_NICE) < 0)
		log_debug(NULL, NULL, "TLS handshake thread: setpriority: %s", strerror(errno));
	ev_run(t->loop, 0);
	return NULL;
}

int tls_hs_pool_start(int nthreads, struct tls_hs_pool **out)
{
	struct tls_hs_pool *p = calloc(1, sizeof *p);
	int rc = 0;

	*out = NULL;
	if (!p || nthreads < 1 || !(p->threads = calloc((size_t)nthreads, sizeof *p->threads))) {
		free(p);
		return nthreads < 1 ? -EINVAL : -ENOMEM;
	}
	for (int i = 0; i < nthreads; i++) {
		struct hs_thread *t = &p->threads[i];
		t->p = p;
		pthread_mutex_init(&t->mu, NULL);
		t->loop = ev_loop_new(EVFLAG_AUTO);
		p->n = i + 1;
		if (!t->loop) {
			rc = -ENOMEM;
			break;
		}
		ev_async_init(&t->wake, wake_cb);
		t->wake.data = t;
		ev_async_start(t->loop, &t->wake);
		int e = pthread_create(&t->thread, NULL, run, t);
		if (e) {
			rc = -e;
			break;
		}
		t->started = true;
	}
	if (rc < 0) {
		log_error(NULL, NULL, "cannot start the TLS handshake threads: %s", strerror(-rc));
		tls_hs_pool_stop(p);
		return rc;
	}
	*out = p;
	return 0;
}

int tls_hs_submit(struct tls_hs_pool *p, struct tls_conn *conn, int fd, double deadline, tls_hs_done_fn *done,
		  void *arg)
{
	struct hs_job *j = calloc(1, sizeof *j);
	if (!j)
		return -ENOMEM;
	j->conn = conn;
	j->fd = fd;
	j->deadline = deadline;
	j->done = done;
	j->arg = arg;
	struct hs_thread *t = &p->threads[atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed) % (unsigned)p->n];
	j->t = t;
	pthread_mutex_lock(&t->mu);
	if (t->stopping) {
		pthread_mutex_unlock(&t->mu);
		free(j);
		return -ESHUTDOWN;
	}
	j->next = t->incoming;
	t->incoming = j;
	atomic_fetch_add_explicit(&p->pending, 1, memory_order_relaxed);
	pthread_mutex_unlock(&t->mu);
	ev_async_send(t->loop, &t->wake);
	return 0;
}

unsigned tls_hs_pending(const struct tls_hs_pool *p)
{
	return atomic_load_explicit(&p->pending, memory_order_relaxed);
}

unsigned long tls_hs_done_count(const struct tls_hs_pool *p)
{
	return atomic_load_explicit(&p->done, memory_order_relaxed);
}

void tls_hs_note_kept(struct tls_hs_pool *p, bool resumed)
{
	atomic_fetch_add_explicit(&p->kept[resumed], 1, memory_order_relaxed);
}

unsigned long tls_hs_kept_count(const struct tls_hs_pool *p, bool resumed)
{
	return atomic_load_explicit(&p->kept[resumed], memory_order_relaxed);
}

void tls_hs_pool_stop(struct tls_hs_pool *p)
{
	if (!p)
		return;
	for (int i = 0; i < p->n; i++) {
		struct hs_thread *t = &p->threads[i];
		pthread_mutex_lock(&t->mu);
		t->stopping = true;
		pthread_mutex_unlock(&t->mu);
		if (t->started) {
			ev_async_send(t->loop, &t->wake);
			pthread_join(t->thread, NULL);
		}
		if (t->loop)
			ev_loop_destroy(t->loop);
		pthread_mutex_destroy(&t->mu);
	}
	free(p->threads);
	free(p);
}
