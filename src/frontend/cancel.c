/* Cancel requests. Each client gets a BackendKeyData minted by tusk, registered here with
 * the worker that serves the client. A CancelRequest may arrive on any worker: it is looked
 * up and posted to the client's own worker, which alone knows which server the client holds
 * right now. That worker sends the cancel to that server and keeps the server from going to
 * another client until PostgreSQL has taken the cancel (it closes the cancel connection
 * once it has signalled the backend), so a cancel never lands on a stranger's query.
 * The registry lock guards the table; it is held for a lookup or an update, never for I/O. */
#include "frontend/cancel.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frontend/client_int.h"
#include "pool/server.h"
#include "proto/proto.h"
#include "runtime/runtime.h"
#include "util/log.h"
#include "worker/worker.h"

#define CANCEL_BUCKETS 4096
#define CANCEL_TIMEOUT 5.0

/* The entries are the clients themselves (client->cancel_next): a separate allocation
 * would be a good part of what an idle client costs. Under the lock any thread may read a
 * registered client's cancel_pid, cancel_key, worker and cancel_next (set before it is
 * registered, or under the lock); the client is freed only after cancel_forget, which
 * takes the lock. Anything else of the client is read only on its own worker. */
struct cancel_registry {
	pthread_mutex_t lock; /* protects buckets and every client's cancel_next */
	struct client *buckets[CANCEL_BUCKETS];
};

struct cancel_registry *cancel_registry_new(void)
{
	struct cancel_registry *reg = calloc(1, sizeof *reg);
	if (reg)
		pthread_mutex_init(&reg->lock, NULL);
	return reg;
}

void cancel_registry_free(struct cancel_registry *reg)
{
	if (!reg)
		return;
	/* The clients, and with them the entries, are gone by now. */
	pthread_mutex_destroy(&reg->lock);
	free(reg);
}

int cancel_register(struct client *c)
{
	struct cancel_registry *reg = c->worker->rt->cancels;
	pthread_mutex_lock(&reg->lock);
	c->cancel_next = reg->buckets[c->cancel_pid % CANCEL_BUCKETS];
	reg->buckets[c->cancel_pid % CANCEL_BUCKETS] = c;
	pthread_mutex_unlock(&reg->lock);
	c->cancel_registered = true;
	return 0;
}

void cancel_forget(struct client *c)
{
	struct cancel_registry *reg = c->worker->rt->cancels;

	if (!c->cancel_registered)
		return;
	pthread_mutex_lock(&reg->lock);
	for (struct client **pp = &reg->buckets[c->cancel_pid % CANCEL_BUCKETS]; *pp; pp = &(*pp)->cancel_next) {
		if (*pp == c) {
			*pp = c->cancel_next;
			break;
		}
	}
	pthread_mutex_unlock(&reg->lock);
	c->cancel_next = NULL;
	c->cancel_registered = false;
}

/* ---- sending ---- */

/* One outgoing CancelRequest: connect, write 16 bytes, wait for PostgreSQL to close. */
struct cancel_conn {
	struct cancel_conn *prev, *next; /* frontend_worker.cancel_conns */
	struct cancel_conn *snext;       /* server->cancels */
	struct worker *worker;
	struct server *server;           /* held back from the pool until we are done; may be NULL */
	ev_io io;
	ev_timer timer;
	bool sent;
	uint8_t pkt[16];
	char server_id[ID_LEN];
};

static void cancel_conn_free(struct cancel_conn *cc)
{
	struct worker *w = cc->worker;
	struct server *s = cc->server;

	if (cc->prev)
		cc->prev->next = cc->next;
	else
		fe_of(w)->cancel_conns = cc->next;
	if (cc->next)
		cc->next->prev = cc->prev;
	ev_io_stop(w->loop, &cc->io);
	ev_timer_stop(w->loop, &cc->timer);
	close(cc->io.fd);
	if (s) {
		for (struct cancel_conn **pp = &s->cancels; *pp; pp = &(*pp)->snext) {
			if (*pp == cc) {
				*pp = cc->snext;
				break;
			}
		}
	}
	free(cc);
	if (s && !s->cancels) {
		if (s->park_after_cancel) {
			s->park_after_cancel = false;
			relay_park_server(s);
		} else {
			relay_cancel_done(s);
		}
	}
}

/* s is being freed (its cancels_detach): the cancels in flight for it forget it. */
static void cancel_detach_server(struct server *s)
{
	for (struct cancel_conn *cc = s->cancels; cc; cc = cc->snext)
		cc->server = NULL;
	s->cancels = NULL;
	s->park_after_cancel = false;
	s->reset_after_cancel = 0;
}

static void cancel_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct cancel_conn *cc = io->data;
	(void)revents;

	if (!cc->sent) {
		if (net_connect_result(io->fd) < 0 || write(io->fd, cc->pkt, sizeof cc->pkt) != (ssize_t)sizeof cc->pkt) {
			log_warn(cc->server_id, NULL, "could not send cancel request");
			cancel_conn_free(cc);
			return;
		}
		cc->sent = true;
		ev_io_stop(loop, &cc->io);
		ev_io_set(&cc->io, io->fd, EV_READ);
		ev_io_start(loop, &cc->io);
		return;
	}
	/* PostgreSQL says nothing on a cancel connection: EOF means it has been handled. */
	char c;
	ssize_t n = read(io->fd, &c, 1);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	log_debug(cc->server_id, NULL, "cancel request handled by the server");
	cancel_conn_free(cc);
}

static void cancel_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct cancel_conn *cc = t->data;
	(void)loop;
	(void)revents;
	log_warn(cc->server_id, NULL, "timed out sending cancel request");
	cancel_conn_free(cc);
}

/* Send a cancel for s's running query from worker w (s's own worker). */
void cancel_send_for(struct worker *w, struct server *s)
{
	struct cancel_conn *cc = calloc(1, sizeof *cc);
	struct buf b = { 0 };
	if (!cc)
		return;
	int fd = net_connect(&s->addr);
	if (fd < 0) {
		free(cc);
		log_warn(s->id, s->ctx, "could not connect to send cancel request");
		return;
	}
	b.data = cc->pkt;
	b.cap = sizeof cc->pkt;
	(void)proto_put_cancel_request(&b, s->backend_pid, s->backend_key);
	memcpy(cc->server_id, s->id, ID_LEN);
	cc->worker = w;
	cc->server = s;
	cc->snext = s->cancels;
	s->cancels = cc;
	s->cancels_detach = cancel_detach_server;
	cc->next = fe_of(w)->cancel_conns;
	if (cc->next)
		cc->next->prev = cc;
	fe_of(w)->cancel_conns = cc;
	ev_io_init(&cc->io, cancel_io_cb, fd, EV_WRITE);
	cc->io.data = cc;
	ev_timer_init(&cc->timer, cancel_timer_cb, CANCEL_TIMEOUT, 0.);
	cc->timer.data = cc;
	ev_io_start(w->loop, &cc->io);
	ev_timer_start(w->loop, &cc->timer);
	log_info(s->id, s->ctx, "sending cancel request to backend pid %u", s->backend_pid);
}

void cancel_close_all(struct worker *w)
{
	struct frontend_worker *fe = fe_of(w);
	while (fe->cancel_conns)
		cancel_conn_free(fe->cancel_conns);
}

void cancel_move(struct client *c, struct worker *to)
{
	struct cancel_registry *reg = c->worker->rt->cancels;
	pthread_mutex_lock(&reg->lock);
	c->worker = to;
	pthread_mutex_unlock(&reg->lock);
}

/* ---- receiving ---- */

void cancel_forward(struct worker *w, uint32_t pid, uint32_t key)
{
	struct cancel_registry *reg = w->rt->cancels;
	struct worker *owner = NULL;

	pthread_mutex_lock(&reg->lock);
	for (const struct client *e = reg->buckets[pid % CANCEL_BUCKETS]; e; e = e->cancel_next) {
		if (e->cancel_pid == pid && e->cancel_key == key) {
			owner = e->worker;
			break;
		}
	}
	pthread_mutex_unlock(&reg->lock);
	if (!owner) {
		log_info(NULL, NULL, "cancel request with an unknown key; ignored");
		return;
	}
	struct worker_msg *m = calloc(1, sizeof *m);
	if (!m)
		return;
	m->fn = cancel_on_message;
	m->u32[0] = pid;
	m->u32[1] = key;
	worker_post(owner, m);
}

void cancel_on_message(struct worker *w, struct worker_msg *m)
{
	struct cancel_registry *reg = w->rt->cancels;
	struct client *c = NULL;
	uint32_t pid = m->u32[0], key = m->u32[1];

	if (w->stopping)
		return;
	/* Entries are removed on the client's own thread, which is this one: an entry found
	 * now names a live client. */
	pthread_mutex_lock(&reg->lock);
	for (struct client *e = reg->buckets[pid % CANCEL_BUCKETS]; e; e = e->cancel_next) {
		if (e->cancel_pid == pid && e->cancel_key == key && e->worker == w) {
			c = e;
			break;
		}
	}
	pthread_mutex_unlock(&reg->lock);
	if (!c)
		return;
	if (relay_hooks_cancel(c))
		return; /* it waited on another client's identical query: only it stops waiting */
	if (client_cancel_wait(c))
		return; /* it waited for a server: its request never ran */
	struct server *s = c->server;
	if (!s || s->state != SERVER_ACTIVE || (s->expect_count == 0 && s->pending_rfq == 0)) {
		/* No server, or nothing running on it: PostgreSQL would ignore it too. */
		log_debug(c->id, c->ctx, "cancel request while no query runs; ignored");
		return;
	}
	log_info(c->id, c->ctx, "client asked to cancel its query on server %s", s->id);
	cancel_send_for(w, s);
}
