/* Worker threads (see worker.h): a libev loop per thread, its listening sockets (every
 * worker listens on every address with SO_REUSEPORT, so the kernel spreads clients), its
 * inbox, and the periodic work that expires idle pooled servers. */
#include "worker/worker.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frontend/client.h"
#include "pool/server.h"
#include "pool/pool.h"
#include "runtime/runtime.h"
#include "util/log.h"

#define WORKER_TICK 1.0 /* seconds between housekeeping runs */

struct worker_priv {
	pthread_t thread;
	ev_async wake;
	ev_timer tick;
	int nlisten;
	ev_io *listen_io;
	pthread_mutex_t inbox_lock; /* protects inbox_head/tail and stop_requested */
	struct worker_msg *inbox_head, *inbox_tail;
	struct worker_msg *local_head, *local_tail; /* posted by this thread itself: no lock */
	bool stop_requested;
};

static struct worker_priv *priv(struct worker *w) { return w->priv; }

static void accept_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct worker *w = io->data;
	(void)loop;
	(void)revents;

	/* Bounded batch: one busy listener must not starve the rest of the loop. */
	for (int i = 0; i < 64; i++) {
		struct net_addr peer;
		int fd = net_accept(io->fd, &peer);
		if (fd < 0) {
			if (fd == -EAGAIN || fd == -EWOULDBLOCK || fd == -EINTR || fd == -ECONNABORTED)
				return;
			log_warn(NULL, NULL, "accept failed: %s", strerror(-fd));
			return;
		}
		client_accept(w, fd, &peer);
	}
}

/* One message, then freed. */
static void dispatch(struct worker *w, struct worker_msg *m)
{
	if (m->kind == WORKER_MSG_CANCEL)
		client_on_cancel_message(w, m);
	else if (m->kind == WORKER_MSG_STEAL)
		pool_on_steal(w, m->pool);
	else if (m->kind == WORKER_MSG_CALL)
		m->call(w, m->arg);
	else
		client_on_pool_message(w, m);
	free(m);
}

static void drain_inbox(struct worker *w)
{
	struct worker_priv *p = priv(w);
	struct worker_msg *m;
	bool stop;

	/* Own messages first: they were posted before anything now in the inbox was seen. */
	while ((m = p->local_head)) {
		p->local_head = m->next;
		if (!p->local_head)
			p->local_tail = NULL;
		m->next = NULL;
		dispatch(w, m);
	}

	pthread_mutex_lock(&p->inbox_lock);
	m = p->inbox_head;
	p->inbox_head = p->inbox_tail = NULL;
	stop = p->stop_requested;
	pthread_mutex_unlock(&p->inbox_lock);

	while (m) {
		struct worker_msg *next = m->next;
		dispatch(w, m);
		m = next;
	}
	if (stop && !w->stopping) {
		w->stopping = true;
		for (int i = 0; i < p->nlisten; i++) {
			ev_io_stop(w->loop, &p->listen_io[i]);
			close(p->listen_io[i].fd);
		}
		ev_timer_stop(w->loop, &p->tick);
		client_close_all(w, "tusk is shutting down");
		server_close_all(w, "tusk is shutting down");
		ev_async_stop(w->loop, &p->wake);
		/* Remaining watchers belong to connections being closed; break out now. */
		ev_break(w->loop, EVBREAK_ALL);
	}
}

static void wake_cb(struct ev_loop *loop, ev_async *a, int revents)
{
	(void)loop;
	(void)revents;
	drain_inbox(a->data);
}

static void tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct worker *w = t->data;
	(void)revents;
	pool_maintain(w, ev_now(loop));
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	ev_run(w->loop, 0);
	return NULL;
}

int worker_start(struct runtime *rt, int index, const int *listen_fds, int nlisten, struct worker **out)
{
	struct worker *w = calloc(1, sizeof *w);
	struct worker_priv *p = calloc(1, sizeof *p);
	sigset_t all, old;
	int rc = -ENOMEM;

	if (!w || !p)
		goto err_free;
	w->priv = p;
	w->index = index;
	w->rt = rt;
	w->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
	if (!w->loop)
		goto err_free;
	pthread_mutex_init(&p->inbox_lock, NULL);
	ev_async_init(&p->wake, wake_cb);
	p->wake.data = w;
	ev_async_start(w->loop, &p->wake);
	ev_timer_init(&p->tick, tick_cb, WORKER_TICK, WORKER_TICK);
	p->tick.data = w;
	ev_timer_start(w->loop, &p->tick);
	p->nlisten = nlisten;
	p->listen_io = calloc((size_t)nlisten, sizeof *p->listen_io);
	if (nlisten && !p->listen_io)
		goto err_loop;
	for (int i = 0; i < nlisten; i++) {
		ev_io_init(&p->listen_io[i], accept_cb, listen_fds[i], EV_READ);
		p->listen_io[i].data = w;
		ev_io_start(w->loop, &p->listen_io[i]);
	}

	/* Signals belong to the main thread; workers start with all of them blocked. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	rc = pthread_create(&p->thread, NULL, worker_main, w);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		rc = -rc;
		goto err_loop;
	}
	*out = w;
	return 0;

err_loop:
	free(p->listen_io);
	ev_loop_destroy(w->loop);
err_free:
	free(p);
	free(w);
	return rc;
}

void worker_post(struct worker *w, struct worker_msg *msg)
{
	struct worker_priv *p = priv(w);
	msg->next = NULL;
	pthread_mutex_lock(&p->inbox_lock);
	if (p->inbox_tail)
		p->inbox_tail->next = msg;
	else
		p->inbox_head = msg;
	p->inbox_tail = msg;
	pthread_mutex_unlock(&p->inbox_lock);
	ev_async_send(w->loop, &p->wake);
}

void worker_post_local(struct worker *w, struct worker_msg *msg)
{
	struct worker_priv *p = priv(w);
	msg->next = NULL;
	if (p->local_tail)
		p->local_tail->next = msg;
	else
		p->local_head = msg;
	p->local_tail = msg;
	/* Run wake_cb on this loop's next turn, without the eventfd write of ev_async_send. */
	ev_feed_event(w->loop, &p->wake, EV_ASYNC);
}

void worker_stop(struct worker *w)
{
	struct worker_priv *p = priv(w);
	pthread_mutex_lock(&p->inbox_lock);
	p->stop_requested = true;
	pthread_mutex_unlock(&p->inbox_lock);
	ev_async_send(w->loop, &p->wake);
}

void worker_join(struct worker *w)
{
	pthread_join(priv(w)->thread, NULL);
}

void worker_free(struct worker *w)
{
	struct worker_priv *p = priv(w);
	/* No thread runs any more, so nothing can post: this drain is the last. */
	drain_inbox(w);
	server_close_all(w, "tusk is shutting down");
	cancel_close_all(w);
	ev_loop_destroy(w->loop);
	pthread_mutex_destroy(&p->inbox_lock);
	free(p->listen_io);
	free(p);
	free(w);
}
