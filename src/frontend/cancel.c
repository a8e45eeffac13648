/* Cancel requests. Each client gets a BackendKeyData minted by tusk; the registry maps
 * that key to the server serving the client right now (or to nothing), so a cancel that
 * arrives on any worker reaches exactly that server and never one that has moved on to
 * another client. The registry lock guards the table and the targets in it; it is held
 * for a lookup or an update only, never across I/O. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frontend/cancel.h"
#include "frontend/client_int.h"
#include "pool/server.h"
#include "proto/proto.h"
#include "runtime/runtime.h"
#include "util/log.h"
#include "worker/worker.h"

#define CANCEL_BUCKETS 4096
#define CANCEL_TIMEOUT 5.0

struct cancel_entry {
	struct cancel_entry *next;
	const struct client *client; /* identity only; never dereferenced outside the lock owner */
	uint32_t pid, key;
	bool has_target;
	struct net_addr addr;
	uint32_t backend_pid, backend_key;
	char server_id[ID_LEN];
};

struct cancel_registry {
	pthread_mutex_t lock;
	struct cancel_entry *buckets[CANCEL_BUCKETS];
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
	for (int i = 0; i < CANCEL_BUCKETS; i++) {
		struct cancel_entry *e = reg->buckets[i];
		while (e) {
			struct cancel_entry *n = e->next;
			free(e);
			e = n;
		}
	}
	pthread_mutex_destroy(&reg->lock);
	free(reg);
}

static struct cancel_entry **find(struct cancel_registry *reg, uint32_t pid, const struct client *c)
{
	struct cancel_entry **pp = &reg->buckets[pid % CANCEL_BUCKETS];
	while (*pp && (*pp)->client != c)
		pp = &(*pp)->next;
	return pp;
}

/* s == NULL: the client holds no server now. Entries are created on first use. */
void cancel_set_target(struct client *c, const struct server *s)
{
	struct cancel_registry *reg = c->worker->rt->cancels;
	pthread_mutex_lock(&reg->lock);
	struct cancel_entry **pp = find(reg, c->cancel_pid, c);
	struct cancel_entry *e = *pp;
	if (!e && s) {
		e = calloc(1, sizeof *e);
		if (e) {
			e->client = c;
			e->pid = c->cancel_pid;
			e->key = c->cancel_key;
			*pp = e;
		}
	}
	if (e) {
		e->has_target = s != NULL;
		if (s) {
			e->addr = s->addr;
			e->backend_pid = s->backend_pid;
			e->backend_key = s->backend_key;
			memcpy(e->server_id, s->id, ID_LEN);
		}
	}
	pthread_mutex_unlock(&reg->lock);
}

void cancel_forget(struct client *c)
{
	struct cancel_registry *reg = c->worker->rt->cancels;
	pthread_mutex_lock(&reg->lock);
	struct cancel_entry **pp = find(reg, c->cancel_pid, c);
	struct cancel_entry *e = *pp;
	if (e)
		*pp = e->next;
	pthread_mutex_unlock(&reg->lock);
	free(e);
}

/* One outgoing CancelRequest: connect, write 16 bytes, close. */
struct cancel_conn {
	ev_io io;
	ev_timer timer;
	struct ev_loop *loop;
	uint8_t pkt[16];
	char server_id[ID_LEN];
};

static void cancel_conn_free(struct cancel_conn *cc)
{
	ev_io_stop(cc->loop, &cc->io);
	ev_timer_stop(cc->loop, &cc->timer);
	close(cc->io.fd);
	free(cc);
}

static void cancel_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct cancel_conn *cc = io->data;
	(void)loop;
	(void)revents;
	if (net_connect_result(io->fd) == 0) {
		ssize_t n = write(io->fd, cc->pkt, sizeof cc->pkt);
		if (n != (ssize_t)sizeof cc->pkt)
			log_warn(cc->server_id, NULL, "could not send cancel request");
		else
			log_debug(cc->server_id, NULL, "cancel request sent");
	} else {
		log_warn(cc->server_id, NULL, "could not connect to send cancel request");
	}
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

void cancel_forward(struct worker *w, uint32_t pid, uint32_t key)
{
	struct cancel_registry *reg = w->rt->cancels;
	struct cancel_entry target;
	bool found = false;

	pthread_mutex_lock(&reg->lock);
	for (struct cancel_entry *e = reg->buckets[pid % CANCEL_BUCKETS]; e; e = e->next) {
		if (e->pid == pid && e->key == key) {
			found = e->has_target;
			target = *e;
			break;
		}
	}
	pthread_mutex_unlock(&reg->lock);
	if (!found) {
		log_debug(NULL, NULL, "cancel request for no running query; ignored");
		return;
	}

	struct cancel_conn *cc = calloc(1, sizeof *cc);
	struct buf b = { 0 };
	if (!cc)
		return;
	int fd = net_connect(&target.addr);
	if (fd < 0) {
		free(cc);
		log_warn(target.server_id, NULL, "could not connect to send cancel request");
		return;
	}
	b.data = cc->pkt;
	b.cap = sizeof cc->pkt;
	(void)proto_put_cancel_request(&b, target.backend_pid, target.backend_key);
	memcpy(cc->server_id, target.server_id, ID_LEN);
	cc->loop = w->loop;
	ev_io_init(&cc->io, cancel_io_cb, fd, EV_WRITE);
	cc->io.data = cc;
	ev_timer_init(&cc->timer, cancel_timer_cb, CANCEL_TIMEOUT, 0.);
	cc->timer.data = cc;
	ev_io_start(w->loop, &cc->io);
	ev_timer_start(w->loop, &cc->timer);
	log_info(target.server_id, NULL, "forwarding cancel request to backend pid %u", target.backend_pid);
}
