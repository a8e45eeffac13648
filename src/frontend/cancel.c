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
#include <time.h>
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

/* An online restart's hand-over (cancel_registry_set_predecessor): the requester's connection
 * of a cancel handed to the predecessor is held here until the predecessor answers that its
 * worker has decided ("D <seq>"), never longer than HANDOVER_WAIT, and at most HANDOVER_HELD at
 * once (beyond, a request is handed over and ended at once, as if answered). */
#define HANDOVER_WAIT 3.0  /* s: the predecessor decides in microseconds unless it is stuck */
#define HANDOVER_HELD 256
#define HANDOVER_READS 64  /* messages read from a takeover connection per call */
#define HANDOVER_MSG 48    /* bytes: the longest message is "C 4294967295 4294967295 4294967295" */
#define HANDOVER_BAD_LOGGED 10

/* A request waiting for the predecessor's answer: the requester's connection (fd, tls), or
 * the successor's request it stands for (up: that one's seq, answered when this one ends). */
struct held {
	uint32_t seq; /* 0: a free slot */
	int fd;
	struct tls_conn *tls;
	uint32_t up;
	double deadline;
};

/* The entries are the clients themselves (client->cancel_next): a separate allocation
 * would be a good part of what an idle client costs. Under the lock any thread may read a
 * registered client's cancel_pid, cancel_key, worker and cancel_next (set before it is
 * registered, or under the lock); the client is freed only after cancel_forget, which
 * takes the lock. Anything else of the client is read only on its own worker. */
struct cancel_registry {
	pthread_mutex_t lock; /* protects buckets and every client's cancel_next */
	struct client *buckets[CANCEL_BUCKETS];
	/* The takeover connections, while an online restart drains: pred, to the process this one
	 * took over from (requests go there; read by the main thread only, which alone closes it);
	 * succ, to the one that took over from this one (answers go there; the main thread's, which
	 * reads it and closes it after cancel_registry_set_successor(reg, -1)). hand_lock is held
	 * around each send, and guards held, nheld and next_seq; never around other I/O. */
	pthread_mutex_t hand_lock;
	int pred, succ;
	uint32_t next_seq;
	int nheld;
	struct held held[HANDOVER_HELD];
	unsigned bad_logged; /* malformed messages logged (main thread) */
	double full_logged;  /* when a request beyond HANDOVER_HELD was last logged (under hand_lock) */
	unsigned full_quiet; /* such requests since, not logged */
};

struct cancel_registry *cancel_registry_new(void)
{
	struct cancel_registry *reg = calloc(1, sizeof *reg);
	if (reg) {
		pthread_mutex_init(&reg->lock, NULL);
		pthread_mutex_init(&reg->hand_lock, NULL);
		reg->pred = -1;
		reg->succ = -1;
	}
	return reg;
}

static void end_held_all(struct cancel_registry *reg);

void cancel_registry_free(struct cancel_registry *reg)
{
	if (!reg)
		return;
	/* The clients, and with them the entries, are gone by now. */
	end_held_all(reg);
	if (reg->pred >= 0)
		close(reg->pred);
	pthread_mutex_destroy(&reg->hand_lock);
	pthread_mutex_destroy(&reg->lock);
	free(reg);
}

void cancel_registry_set_predecessor(struct cancel_registry *reg, int conn)
{
	pthread_mutex_lock(&reg->hand_lock);
	int old = reg->pred;
	reg->pred = conn;
	pthread_mutex_unlock(&reg->hand_lock);
	if (old >= 0) {
		close(old);
		end_held_all(reg);
	}
}

int cancel_registry_predecessor(const struct cancel_registry *reg)
{
	return reg->pred; /* written by the main thread only, which asks */
}

void cancel_registry_set_successor(struct cancel_registry *reg, int conn)
{
	pthread_mutex_lock(&reg->hand_lock);
	reg->succ = conn;
	pthread_mutex_unlock(&reg->hand_lock);
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

/* ---- online restart: the hand-over (cancel.h) ---- */

static double mono_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The end of a request: its connection's, and when the successor handed it here (up != 0),
 * the answer that lets the successor end its requester's. Any thread; no lock held. */
static void finish(struct cancel_registry *reg, int fd, struct tls_conn *tls, uint32_t up)
{
	end_request(fd, tls);
	if (!up)
		return;
	char msg[HANDOVER_MSG];
	int len = snprintf(msg, sizeof msg, "D %u", (unsigned)up);
	int rc = -ENOTCONN;
	pthread_mutex_lock(&reg->hand_lock);
	if (reg->succ >= 0)
		rc = net_send_fd(reg->succ, msg, (size_t)len, -1, MSG_DONTWAIT);
	pthread_mutex_unlock(&reg->hand_lock);
	if (rc < 0) /* it ends its requester at its time limit, or has gone */
		log_debug(NULL, NULL, "cancel request of the process that took over from this one: could not answer: %s",
			  strerror(-rc));
}

/* The held request seq, taken out of the table (seq 0 in *out when there is none). */
static void take_held(struct cancel_registry *reg, uint32_t seq, struct held *out)
{
	out->seq = 0;
	pthread_mutex_lock(&reg->hand_lock);
	for (int i = 0; i < HANDOVER_HELD && reg->nheld > 0; i++) {
		if (reg->held[i].seq == seq) {
			*out = reg->held[i];
			reg->held[i].seq = 0;
			reg->nheld--;
			break;
		}
	}
	pthread_mutex_unlock(&reg->hand_lock);
}

/* Every held request ended: the predecessor has gone (or this process stops). */
static void end_held_all(struct cancel_registry *reg)
{
	for (int i = 0; i < HANDOVER_HELD; i++) {
		struct held h;
		pthread_mutex_lock(&reg->hand_lock);
		h = reg->held[i];
		reg->held[i].seq = 0;
		if (h.seq)
			reg->nheld--;
		pthread_mutex_unlock(&reg->hand_lock);
		if (h.seq)
			finish(reg, h.fd, h.tls, h.up);
	}
}

/* A key this process never gave out goes to the process it took over from, if that one is
 * still draining: true when sent ("C <pid> <key> <seq>"). The requester's connection (fd and
 * its TLS session, which cannot travel to another process) is held here until the
 * predecessor answers "D <seq>" once its worker has decided (cancel_registry_predecessor_input),
 * so the requester cannot send its next request before then (see forward); or at most
 * HANDOVER_WAIT. Beyond HANDOVER_HELD held, "C <pid> <key>" and the request ends at once. up:
 * the successor's request this one stands for (a chain of restarts), or 0. */
static bool hand_to_predecessor(struct cancel_registry *reg, uint32_t pid, uint32_t key, int fd, struct tls_conn *tls,
				uint32_t up)
{
	char msg[HANDOVER_MSG];
	struct held *slot = NULL;
	int rc = -ENOTCONN, len;

	pthread_mutex_lock(&reg->hand_lock);
	if (reg->pred >= 0) {
		for (int i = 0; i < HANDOVER_HELD && reg->nheld < HANDOVER_HELD && !slot; i++)
			if (!reg->held[i].seq)
				slot = &reg->held[i];
		if (slot) {
			if (++reg->next_seq == 0)
				reg->next_seq = 1;
			len = snprintf(msg, sizeof msg, "C %u %u %u", (unsigned)pid, (unsigned)key, (unsigned)reg->next_seq);
		} else {
			len = snprintf(msg, sizeof msg, "C %u %u", (unsigned)pid, (unsigned)key);
		}
		rc = net_send_fd(reg->pred, msg, (size_t)len, -1, MSG_DONTWAIT);
		if (rc == 0 && slot) {
			*slot = (struct held){ .seq = reg->next_seq, .fd = fd, .tls = tls, .up = up,
					       .deadline = mono_now() + HANDOVER_WAIT };
			reg->nheld++;
		}
	}
	pthread_mutex_unlock(&reg->hand_lock);
	if (rc < 0) {
		/* -EAGAIN: it reads nothing now; otherwise it has gone (the main thread sees the end). */
		if (rc != -ENOTCONN)
			log_warn(NULL, NULL, "cancel request: could not hand it to the process this one took over from: %s",
				 strerror(-rc));
		return false;
	}
	if (slot) {
		log_info(NULL, NULL, "cancel request for a client of the process this one took over from: handed to it");
	} else {
		/* A flood of them (a client looping on cancels) is logged once a second. */
		double now = mono_now();
		unsigned quiet = 0;
		bool say = false;
		pthread_mutex_lock(&reg->hand_lock);
		if (now - reg->full_logged >= 1.0) {
			say = true;
			quiet = reg->full_quiet;
			reg->full_logged = now;
			reg->full_quiet = 0;
		} else {
			reg->full_quiet++;
		}
		pthread_mutex_unlock(&reg->hand_lock);
		if (say)
			log_warn(NULL, NULL, "cancel request for a client of the process this one took over from: handed to it, "
					     "ended at once (%d wait for its answer already; %u more such since the last "
					     "of these lines)", HANDOVER_HELD, quiet);
		finish(reg, fd, tls, up);
	}
	return true;
}

/* The requester's connection (m->num, and its TLS session in m->arg2) stays open until the
 * owner has decided what the cancel does. A client takes the close as done (libpq's PQcancel
 * returns on it, libpq 17's PQcancelBlocking on TLS's close_notify) and sends its next
 * request; closed at once, the owner could come to the cancel after that request had arrived
 * and take the cancel as meant for it (client_sent_more), so a cancel sent while nothing ran
 * cancelled the request after it (PostgreSQL ignores it). up: as for hand_to_predecessor. */
static void forward(struct cancel_registry *reg, uint32_t pid, uint32_t key, int fd, struct tls_conn *tls, uint32_t up)
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
		if (hand_to_predecessor(reg, pid, key, fd, tls, up))
			return;
		log_info(NULL, NULL, "cancel request with an unknown key; ignored");
		finish(reg, fd, tls, up);
		return;
	}
	struct worker_msg *m = calloc(1, sizeof *m);
	if (!m) {
		finish(reg, fd, tls, up);
		return;
	}
	m->fn = cancel_on_message;
	m->u32[0] = pid;
	m->u32[1] = key;
	m->u32[2] = up;
	m->num = fd;
	m->arg2 = tls;
	worker_post(owner, m);
}

void cancel_forward(struct worker *w, uint32_t pid, uint32_t key, int fd, struct tls_conn *tls)
{
	forward(w->rt->cancels, pid, key, fd, tls, 0);
}

/* "<tag> <n1> ... <nmax>" with at least min numbers: decimal, 1 to 10 digits, each below
 * 2^32, one space before each; the count of numbers, or -1. */
static int parse_msg(const char *msg, int len, char tag, uint32_t *n, int min, int max)
{
	int count = 0, i = 1;
	if (len < 1 || msg[0] != tag)
		return -1;
	while (i < len && count < max) {
		uint64_t v = 0;
		int digits = 0;
		if (msg[i++] != ' ')
			return -1;
		while (i < len && msg[i] >= '0' && msg[i] <= '9' && digits < 11) {
			v = v * 10 + (uint64_t)(msg[i++] - '0');
			digits++;
		}
		if (digits == 0 || digits > 10 || v > UINT32_MAX)
			return -1;
		n[count++] = (uint32_t)v;
	}
	return i == len && count >= min ? count : -1;
}

static void log_bad(struct cancel_registry *reg, const char *from, const char *what)
{
	if (reg->bad_logged >= HANDOVER_BAD_LOGGED)
		return;
	reg->bad_logged++;
	log_warn(NULL, NULL, "takeover: %s from the process %s; ignored%s", what, from,
		 reg->bad_logged == HANDOVER_BAD_LOGGED ? " (no more such messages are logged)" : "");
}

/* Up to HANDOVER_READS messages from conn (non-blocking), each given to take. 0, or -1 at
 * the connection's end or failure (logged). */
static int read_messages(struct cancel_registry *reg, int conn, const char *from,
			 void (*take)(struct cancel_registry *, const char *, int, const char *))
{
	for (int i = 0; i < HANDOVER_READS; i++) {
		char msg[HANDOVER_MSG];
		int fd;
		int rc = net_recv_fd(conn, msg, sizeof msg, &fd);
		if (fd >= 0)
			close(fd); /* nothing comes attached any more */
		if (rc == -EAGAIN || rc == -EWOULDBLOCK || rc == -EINTR)
			return 0;
		if (rc == -EMSGSIZE) {
			log_bad(reg, from, "an overlong message");
			continue;
		}
		if (rc <= 0) {
			log_info(NULL, NULL, "takeover: the process %s has gone%s%s", from, rc < 0 ? ": " : "",
				 rc < 0 ? strerror(-rc) : "");
			return -1;
		}
		take(reg, msg, rc, from);
	}
	return 0;
}

/* On the predecessor: "C <pid> <key> [<seq>]" from the successor, served as if it had
 * arrived here; answered with "D <seq>" once decided (finish). */
static void take_request(struct cancel_registry *reg, const char *msg, int len, const char *from)
{
	uint32_t n[3] = { 0 };
	if (parse_msg(msg, len, 'C', n, 2, 3) < 0) {
		log_bad(reg, from, "a malformed cancel request");
		return;
	}
	forward(reg, n[0], n[1], -1, NULL, n[2]);
}

/* On the successor: "D <seq>", the predecessor has decided: the request held ends now. */
static void take_answer(struct cancel_registry *reg, const char *msg, int len, const char *from)
{
	uint32_t seq;
	struct held h;
	if (parse_msg(msg, len, 'D', &seq, 1, 1) < 0 || seq == 0) {
		log_bad(reg, from, "a malformed answer");
		return;
	}
	take_held(reg, seq, &h);
	if (h.seq)
		finish(reg, h.fd, h.tls, h.up);
	else
		log_debug(NULL, NULL, "takeover: an answer for a cancel request already ended (its time limit)");
}

int cancel_registry_successor_input(struct cancel_registry *reg, int conn)
{
	return read_messages(reg, conn, "that took over from this one", take_request);
}

int cancel_registry_predecessor_input(struct cancel_registry *reg)
{
	if (reg->pred < 0 || read_messages(reg, reg->pred, "this one took over from", take_answer) == 0)
		return 0;
	cancel_registry_set_predecessor(reg, -1); /* closes it, ends every held request */
	return -1;
}

double cancel_registry_tick(struct cancel_registry *reg)
{
	double now = mono_now(), next = -1;
	for (int i = 0; i < HANDOVER_HELD; i++) {
		struct held h = { 0 };
		pthread_mutex_lock(&reg->hand_lock);
		if (reg->nheld == 0) {
			pthread_mutex_unlock(&reg->hand_lock);
			break;
		}
		if (reg->held[i].seq && reg->held[i].deadline <= now) {
			h = reg->held[i];
			reg->held[i].seq = 0;
			reg->nheld--;
		} else if (reg->held[i].seq && (next < 0 || reg->held[i].deadline - now < next)) {
			next = reg->held[i].deadline - now;
		}
		pthread_mutex_unlock(&reg->hand_lock);
		if (h.seq) {
			log_warn(NULL, NULL, "takeover: the process this one took over from did not answer a cancel request "
					     "within %.0fs; its connection is ended", HANDOVER_WAIT);
			finish(reg, h.fd, h.tls, h.up);
		}
	}
	return next;
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
	/* The requester's acknowledgement (cancel_forward), or the successor's (forward). */
	finish(w->rt->cancels, m->num, m->arg2, m->u32[2]);
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
