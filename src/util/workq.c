/* Threads for blocking work (workq.h): a FIFO under one mutex, threads added as items come.
 * Owns the threads and the queue; the items are the caller's, lent from submit to end. */
#include "util/workq.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct workq_thread {
	struct workq *q;
	pthread_t thread;
	int index;
};

struct workq {
	struct workq_def d;
	pthread_mutex_t mu; /* protects everything below */
	pthread_cond_t cv;  /* an item queued, or stopping */
	pthread_cond_t idle_cv; /* CLOCK_MONOTONIC: a running item ended (workq_stop waits) */
	struct workq_item *head, *tail;
	unsigned queued;  /* on the list */
	unsigned running; /* taken by a thread, end not yet run */
	int nthreads;     /* started */
	int idle;         /* threads waiting on cv */
	int exited;       /* threads out of run() */
	bool stopping;
	bool abandoned;   /* workq_stop gave up waiting: the last thread out frees q */
	struct workq_thread threads[WORKQ_THREADS_MAX];
};

int workq_new(const struct workq_def *d, struct workq **out)
{
	struct workq *q = calloc(1, sizeof *q);
	if (!q)
		return -ENOMEM;
	pthread_condattr_t ca;
	if (pthread_mutex_init(&q->mu, NULL) != 0 || pthread_condattr_init(&ca) != 0) {
		free(q); /* (a mutex that did init is not worth a label: nothing to undo on Linux) */
		return -ENOMEM;
	}
	(void)pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	int rc = pthread_cond_init(&q->cv, NULL) | pthread_cond_init(&q->idle_cv, &ca);
	pthread_condattr_destroy(&ca);
	if (rc != 0) {
		pthread_mutex_destroy(&q->mu);
		free(q);
		return -ENOMEM;
	}
	q->d = *d;
	q->d.max_threads = d->max_threads < 1 ? 1 : d->max_threads > WORKQ_THREADS_MAX ? WORKQ_THREADS_MAX : d->max_threads;
	*out = q;
	return 0;
}

static void destroy(struct workq *q)
{
	pthread_cond_destroy(&q->cv);
	pthread_cond_destroy(&q->idle_cv);
	pthread_mutex_destroy(&q->mu);
	free(q);
}

static void *run(void *arg)
{
	struct workq_thread *t = arg;
	struct workq *q = t->q;

	(void)pthread_setname_np(pthread_self(), q->d.name);
	pthread_mutex_lock(&q->mu);
	for (;;) {
		while (!q->head && !q->stopping) {
			q->idle++;
			pthread_cond_wait(&q->cv, &q->mu);
			q->idle--;
		}
		if (q->stopping)
			break; /* what was queued ended cancelled in workq_stop */
		struct workq_item *it = q->head;
		q->head = it->next;
		if (!q->head)
			q->tail = NULL;
		q->queued--;
		q->running++;
		pthread_mutex_unlock(&q->mu);
		q->d.work(q->d.ctx, t->index, it);
		pthread_mutex_lock(&q->mu);
		q->d.end(q->d.ctx, it, q->abandoned ? WORKQ_DROPPED : WORKQ_DONE);
		q->running--;
		pthread_cond_signal(&q->idle_cv);
	}
	q->exited++;
	bool last = q->abandoned && q->exited == q->nthreads;
	pthread_mutex_unlock(&q->mu);
	if (last)
		destroy(q); /* nobody joins a given-up queue's threads */
	return NULL;
}

int workq_submit(struct workq *q, struct workq_item *it)
{
	int rc = 0;
	it->next = NULL;
	pthread_mutex_lock(&q->mu);
	if (q->stopping) {
		rc = -ESHUTDOWN;
	} else if (q->queued >= q->d.queue_max) {
		rc = -EAGAIN;
	} else {
		if (q->idle <= (int)q->queued && q->nthreads < q->d.max_threads) {
			sigset_t all, old;
			sigfillset(&all);
			pthread_sigmask(SIG_BLOCK, &all, &old); /* signals are the main thread's */
			struct workq_thread *t = &q->threads[q->nthreads];
			t->q = q;
			t->index = q->nthreads;
			if (pthread_create(&t->thread, NULL, run, t) == 0)
				q->nthreads++;
			pthread_sigmask(SIG_SETMASK, &old, NULL);
			if (q->nthreads == 0)
				rc = -ENOMEM; /* no thread to work it at all */
		}
		if (rc == 0) {
			if (q->tail)
				q->tail->next = it;
			else
				q->head = it;
			q->tail = it;
			q->queued++;
			pthread_cond_signal(&q->cv);
		}
	}
	pthread_mutex_unlock(&q->mu);
	return rc;
}

int workq_submit_or_wipe(struct workq *q, struct workq_item *it, void *block, size_t size)
{
	int rc = workq_submit(q, it);
	if (rc < 0) {
		explicit_bzero(block, size);
		free(block);
	}
	return rc;
}

unsigned workq_pending(struct workq *q)
{
	pthread_mutex_lock(&q->mu);
	unsigned n = q->queued + q->running;
	pthread_mutex_unlock(&q->mu);
	return n;
}

bool workq_stop(struct workq *q, int wait_ms)
{
	if (!q)
		return true;
	struct timespec until;
	clock_gettime(CLOCK_MONOTONIC, &until);
	if (wait_ms > 0) {
		until.tv_sec += wait_ms / 1000;
		until.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
	}
	pthread_mutex_lock(&q->mu);
	q->stopping = true;
	pthread_cond_broadcast(&q->cv);
	/* Never started: cancelled now, while their submitters still take answers. */
	while (q->head) {
		struct workq_item *it = q->head;
		q->head = it->next;
		q->queued--;
		q->d.end(q->d.ctx, it, WORKQ_CANCELLED);
	}
	q->tail = NULL;
	if (wait_ms >= 0) {
		while (q->running > 0 && pthread_cond_timedwait(&q->idle_cv, &q->mu, &until) != ETIMEDOUT)
			;
		if (q->running > 0) {
			q->abandoned = true; /* one still runs: it or another thread frees q at the end */
			for (int i = 0; i < q->nthreads; i++)
				(void)pthread_detach(q->threads[i].thread);
			pthread_mutex_unlock(&q->mu);
			return false;
		}
	}
	pthread_mutex_unlock(&q->mu);
	for (int i = 0; i < q->nthreads; i++)
		pthread_join(q->threads[i].thread, NULL);
	destroy(q);
	return true;
}
