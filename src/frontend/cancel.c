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
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "frontend/client_int.h"
#include "frontend/client_kind.h"
#include "net/net.h"
#include "pool/server.h"
#include "proto/proto.h"
#include "runtime/runtime.h"
#include "util/log.h"
#include "worker/worker.h"

#define CANCEL_BUCKETS 4096
#define CANCEL_TIMEOUT 5.0
#define CANCEL_EARLY 0.05 /* s: a query younger than this when cancelled may not have begun */

/* The entries are the clients themselves (client->cancel_next): a separate allocation
 * would be a good part of what an idle client costs. Under the lock any thread may read a
 * registered client's cancel_pid, cancel_key, worker and cancel_next (set before it is
 * registered, or under the lock); the client is freed only after cancel_forget, which
 * takes the lock. Anything else of the client is read only on its own worker. */
struct cancel_registry {
	pthread_mutex_t lock; /* protects buckets and every client's cancel_next */
	struct client *buckets[CANCEL_BUCKETS];
	/* The process this one took over from, while it drains (cancel_registry_set_predecessor):
	 * the takeover connection, or -1. pred_lock is held around each send and the close, so
	 * no worker sends on a descriptor number another has closed (and the kernel reused). */
	pthread_mutex_t pred_lock;
	int pred;
};

struct cancel_registry *cancel_registry_new(void)
{
	struct cancel_registry *reg = calloc(1, sizeof *reg);
	if (reg) {
		pthread_mutex_init(&reg->lock, NULL);
		pthread_mutex_init(&reg->pred_lock, NULL);
		reg->pred = -1;
	}
	return reg;
}

void cancel_registry_free(struct cancel_registry *reg)
{
	if (!reg)
		return;
	/* The clients, and with them the entries, are gone by now. */
	if (reg->pred >= 0)
		close(reg->pred);
	pthread_mutex_destroy(&reg->pred_lock);
	pthread_mutex_destroy(&reg->lock);
	free(reg);
}

void cancel_registry_set_predecessor(struct cancel_registry *reg, int conn)
{
	pthread_mutex_lock(&reg->pred_lock);
	if (reg->pred >= 0)
		close(reg->pred);
	reg->pred = conn;
	pthread_mutex_unlock(&reg->pred_lock);
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
	if (cc->io.fd >= 0)
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

static bool cancel_connect(struct cancel_conn *cc, int fd);

/* Whether s runs a request: replies are due on it. */
static bool runs_request(const struct server *s)
{
	return s->expect_count > 0 || s->pending_rfq > 0;
}

static void cancel_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct cancel_conn *cc = t->data;
	struct server *s = cc->server;
	(void)loop;
	(void)revents;
	if (cc->io.fd < 0) {
		/* A cancel sent again after a pause (relay_cancel_done): only while the request it
		 * is for still runs (the next one waits for this cancel, so it is that one). */
		if (s && s->state == SERVER_ACTIVE && runs_request(s) && cancel_connect(cc, -1))
			return;
		cancel_conn_free(cc);
		return;
	}
	log_warn(cc->server_id, NULL, "timed out sending cancel request");
	cancel_conn_free(cc);
}

static int cancel_socket(struct server *s)
{
	int fd = net_connect(&s->addr);
	if (fd < 0)
		log_warn(s->id, s->ctx, "could not connect to send cancel request");
	return fd;
}

/* cc's connection (fd, or a new one when fd < 0) to s's PostgreSQL, and its time limit;
 * false when there is none. */
static bool cancel_connect(struct cancel_conn *cc, int fd)
{
	struct server *s = cc->server;
	if (fd < 0 && (fd = cancel_socket(s)) < 0)
		return false;
	ev_io_set(&cc->io, fd, EV_WRITE);
	ev_io_start(cc->worker->loop, &cc->io);
	ev_timer_set(&cc->timer, CANCEL_TIMEOUT, 0.);
	ev_timer_start(cc->worker->loop, &cc->timer);
	log_info(s->id, s->ctx, "sending cancel request to backend pid %u", s->backend_pid);
	return true;
}

/* Send a cancel for s's running query from worker w (s's own worker); after delay seconds
 * when delay > 0, and then only if s still runs a query. Until it is done, s is held: its
 * client's next request and its release wait (relay_cancel_done). */
void cancel_send_for(struct worker *w, struct server *s, double delay)
{
	struct cancel_conn *cc = calloc(1, sizeof *cc);
	struct buf b = { 0 };
	int fd = -1;
	if (!cc)
		return;
	if (delay <= 0 && (fd = cancel_socket(s)) < 0) {
		free(cc);
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
	ev_io_init(&cc->io, cancel_io_cb, -1, EV_WRITE);
	cc->io.data = cc;
	ev_timer_init(&cc->timer, cancel_timer_cb, delay, 0.);
	cc->timer.data = cc;
	if (delay > 0)
		ev_timer_start(w->loop, &cc->timer);
	else
		(void)cancel_connect(cc, fd); /* fd >= 0: it cannot fail */
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

/* The end of a cancel request's connection: TLS's close_notify first (as PostgreSQL's
 * backend sends it; best effort, the socket is non-blocking), then the close. */
static void end_request(int fd, struct tls_conn *tls)
{
	if (tls) {
		int want;
		if (tls_shutdown(tls, &want) < 0)
			want = 0; /* the requester is gone or not reading: it closes anyway */
		tls_conn_free(tls);
	}
	if (fd >= 0)
		close(fd);
}

/* A key this process never gave out goes to the process it took over from, if that one is
 * still draining: true when sent (then fd and tls are ended here, the predecessor holding its
 * own copy of a plaintext fd until it has decided). A TLS session cannot travel: its
 * close_notify goes at once, so such a client may send its next query before the predecessor
 * has decided (plaintext requesters wait for the decision). */
static bool hand_to_predecessor(struct cancel_registry *reg, uint32_t pid, uint32_t key, int fd, struct tls_conn *tls)
{
	char msg[32];
	int len = snprintf(msg, sizeof msg, "C %u %u", (unsigned)pid, (unsigned)key);
	int rc = -ENOTCONN;

	pthread_mutex_lock(&reg->pred_lock);
	if (reg->pred >= 0) {
		rc = net_send_fd(reg->pred, msg, (size_t)len, tls ? -1 : fd, MSG_DONTWAIT);
		if (rc < 0 && rc != -EAGAIN && rc != -ENOBUFS && rc != -EINTR) {
			close(reg->pred); /* it has exited: nothing more goes there */
			reg->pred = -1;
		}
	}
	pthread_mutex_unlock(&reg->pred_lock);
	if (rc < 0)
		return false;
	log_info(NULL, NULL, "cancel request for a client of the process this one took over from: handed to it");
	end_request(fd, tls);
	return true;
}

/* The requester's connection (m->num, and its TLS session in m->arg2) stays open until the
 * owner has decided what the cancel does. A client takes the close as done (libpq's PQcancel
 * returns on it, libpq 17's PQcancelBlocking on TLS's close_notify) and sends its next
 * request; closed at once, the owner could come to the cancel after that request had arrived
 * and take the cancel as meant for it (client_sent_more), so a cancel sent while nothing ran
 * cancelled the request after it (PostgreSQL ignores it). */
static void forward(struct cancel_registry *reg, uint32_t pid, uint32_t key, int fd, struct tls_conn *tls)
{
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
		if (hand_to_predecessor(reg, pid, key, fd, tls))
			return;
		log_info(NULL, NULL, "cancel request with an unknown key; ignored");
		end_request(fd, tls);
		return;
	}
	struct worker_msg *m = calloc(1, sizeof *m);
	if (!m) {
		end_request(fd, tls);
		return;
	}
	m->fn = cancel_on_message;
	m->u32[0] = pid;
	m->u32[1] = key;
	m->num = fd;
	m->arg2 = tls;
	worker_post(owner, m);
}

void cancel_forward(struct worker *w, uint32_t pid, uint32_t key, int fd, struct tls_conn *tls)
{
	forward(w->rt->cancels, pid, key, fd, tls);
}

void cancel_handed_over(struct cancel_registry *reg, uint32_t pid, uint32_t key, int fd)
{
	forward(reg, pid, key, fd, NULL);
}

/* c has sent bytes tusk has not answered: read (c->rbuf), or still in the socket (a client
 * held WAITING is not read from until its server is ready) or in OpenSSL. */
static bool client_sent_more(const struct client *c)
{
	int n = 0;
	return !buf_empty(&c->rbuf) || c->tls.buffered || (ioctl(c->fd, FIONREAD, &n) == 0 && n > 0);
}

static void take_cancel(struct worker *w, uint32_t pid, uint32_t key)
{
	struct cancel_registry *reg = w->rt->cancels;
	struct client *c = NULL;

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
	if (c->kind->cancel && c->kind->cancel(c))
		return; /* a replication connection's own server */
	if (relay_hooks_cancel(c))
		return; /* it waited on another client's identical query: only it stops waiting */
	if (client_cancel_wait(c))
		return; /* it waited for a server: its request never ran */
	if (cancel_running(c))
		return;
	if (c->greeted && client_sent_more(c) &&
	    (c->state == CLIENT_IDLE || c->state == CLIENT_WAITING || (c->state == CLIENT_ACTIVE && c->server))) {
		/* The client sent a request that does not run yet: not read yet (an idle client,
		 * or one with its server between requests), a server on its way to it (the pool's
		 * answer) or being made ready for it (the SETs of its settings, RESET ALL, a
		 * standby's replay position), or held by the relay until the cancel of the request
		 * before has landed. On PostgreSQL it would be running by now, so the cancel goes
		 * to it once it runs (relay.c, pump_both); a request answered without a server
		 * (the cache, a hook) takes it along. Dropped, the request ran its full time. */
		c->cancel_deferred = true;
		log_info(c->id, c->ctx, "client asked to cancel a query that does not run yet: sent once it runs");
		return;
	}
	log_debug(c->id, c->ctx, "cancel request while no query runs; ignored");
}

void cancel_on_message(struct worker *w, struct worker_msg *m)
{
	take_cancel(w, m->u32[0], m->u32[1]);
	end_request(m->num, m->arg2); /* the requester's acknowledgement (cancel_forward) */
}

bool cancel_running(struct client *c)
{
	struct server *s = c->server;
	if (!s || s->state != SERVER_ACTIVE || c->state != CLIENT_ACTIVE || !runs_request(s))
		return false; /* no server, or nothing of the client's running on it */
	c->cancel_deferred = false;
	log_info(c->id, c->ctx, "client asked to cancel its query on server %s", s->id);
	/* A query forwarded just now may not have been read by its backend yet, and a cancel
	 * that comes before it is ignored: sent again while it still runs (relay_cancel_done). */
	c->cancel_again = c->query_start > 0 && ev_now(c->worker->loop) - c->query_start < CANCEL_EARLY ? 2 : 0;
	cancel_send_for(c->worker, s, 0);
	return true;
}

void cancel_deferred_run(struct client *c)
{
	if (c->cancel_deferred && cancel_running(c))
		c->cancel_again = 2; /* its request was forwarded just now */
}

void cancel_repeat(struct client *c)
{
	/* A cancel sent as its request was forwarded can reach the backend before it has read
	 * the request, and PostgreSQL ignores a cancel while it waits for a command (seen under
	 * load: 1 round in 50; cancel_running). While that request still runs, the cancel goes
	 * again after a pause (5, then 50 ms: a backend a loaded machine has not run yet); each
	 * waits for the one before, and the request after for the last (release_waits_for_cancel,
	 * client_request_stranded), so none lands on another request. */
	struct server *s = c->server;
	if (c->cancel_again > 0 && s && runs_request(s)) {
		c->cancel_again--;
		log_debug(c->id, c->ctx, "its query still runs on server %s after the cancel: sending it again shortly", s->id);
		cancel_send_for(c->worker, s, c->cancel_again ? 0.005 : 0.05);
	}
}
