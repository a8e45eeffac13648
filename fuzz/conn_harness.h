/* Shared by the whole-connection fuzzers (fuzz_relay, fuzz_login, fuzz_console_session,
 * fuzz_kv_session): a real
 * tusk runtime with one threadless worker (daemon_start_inline), a client on a socketpair
 * handed to client_accept, and a scripted PostgreSQL on a loopback listener that answers
 * every request the way a server would. Everything runs on the fuzzer's thread: each step
 * writes bytes, then turns the worker's loop and the fake server until nothing moves.
 *
 * Input, after the fuzzer's own prefix: chunks of [tag][len][bytes]. An even tag sends the
 * bytes as the client; an odd tag writes them raw from the fake server to tusk's newest
 * server connection (so scan_server meets garbage too). len is (tag >> 1) * 256 + the len
 * byte, capped by what is left.
 *
 * The fake server's answers: Query -> CommandComplete + ReadyForQuery; a text containing
 * "error" fails (ErrorResponse), "begin"/"commit"/"rollback" move the transaction status,
 * "copy" starts a COPY FROM STDIN that CopyDone/CopyFail end, "set" reports a
 * ParameterStatus. Parse/Bind/Describe/Execute/Close/Sync get their replies, and after an
 * error everything up to Sync is skipped, as PostgreSQL does. Each runtime lives for one
 * input, so nothing carries over between inputs. */
#ifndef TUSK_FUZZ_CONN_HARNESS_H
#define TUSK_FUZZ_CONN_HARNESS_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <ev.h>

#include "config/config.h"
#include "daemon/daemon.h"
#include "frontend/client.h"
#include "runtime/runtime.h"
#include "util/log.h"
#include "worker/worker.h"

#define H_SERVERS 16
#define H_SERVER_IN (256 * 1024)
#define H_REDIS_PORT "6399" /* the Redis listen entry's (never bound) */

struct h_server {
	int fd;
	bool started;    /* the startup packet was answered */
	bool skipping;   /* after an error in the extended protocol: until Sync */
	bool copy_in;    /* COPY FROM STDIN in progress */
	uint8_t status;  /* transaction status for ReadyForQuery */
	size_t inlen;
	uint8_t in[H_SERVER_IN];
};

static struct {
	bool ready;
	char cfg_path[4][64]; /* by admin.client_auth: trust, password, md5, scram-sha-256 */
	char users_path[64];
	int listen_fd;
	struct runtime rt;
	struct worker *w;
	int client;      /* the fuzzer's end of the client's socketpair; -1 when closed */
	struct h_server srv[H_SERVERS];
	int nsrv;
	int newest;      /* index of the last server accepted, -1 none */
} h;

static void h_die(const char *what)
{
	perror(what);
	abort();
}

/* The configuration every whole-connection fuzzer runs with: small buffers so that "larger
 * than the buffer" paths are reachable with small inputs; one rule per pool mode and per
 * client_auth method, selected by user name (and "rw", a read-write-split pool: each batch is
 * judged whole before it is claimed); the admin console for "admin" (trust) and "monitor"
 * (password); the kv database (a kv section, but no kv router: start_kv is main.c's) and a
 * Redis listen entry (never bound: daemon_start_inline opens no listener; h_begin_redis hands
 * its connections over as if accepted there). */
static void h_init(void)
{
	if (h.ready)
		return;
	/* RELOAD and SHUTDOWN on the console signal the process: that must not end the run. */
	signal(SIGHUP, SIG_IGN);
	signal(SIGTERM, SIG_IGN);
	signal(SIGUSR1, SIG_IGN);
	signal(SIGUSR2, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	/* TUSK_FUZZ_DEBUG=1 shows what tusk did with an input (reproducing a crash). */
	log_set_level(getenv("TUSK_FUZZ_DEBUG") ? LOG_DEBUG : LOG_ERROR);

	h.listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof a;
	if (h.listen_fd < 0 || bind(h.listen_fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(h.listen_fd, 64) < 0 ||
	    getsockname(h.listen_fd, (struct sockaddr *)&a, &alen) < 0)
		h_die("fake server listen");

	/* md5 secret of "pw" for user "md5": "md5" + md5("pw" "md5"). SCRAM users get a verifier
	 * computed by tusk from the plaintext (auth_file allows plain secrets for SCRAM). */
	strcpy(h.users_path, "/tmp/tusk_fuzz_users_XXXXXX");
	int ufd = mkstemp(h.users_path);
	if (ufd < 0)
		h_die("mkstemp");
	const char users[] = "\"password\" \"pw\"\n"
			     "\"md5\" \"md514b41e8aafff866e8f68c84295626136\"\n"
			     "\"scram\" \"pw\"\n"
			     "\"monitor\" \"pw\"\n"
			     "\"admin\" \"pw\"\n"
			     "\"t\" \"pw\"\n";
	if (write(ufd, users, sizeof users - 1) != (ssize_t)(sizeof users - 1))
		h_die("write users");
	close(ufd);

	static const char *const admin_auth[4] = { "trust", "password", "md5", "scram-sha-256" };
	for (int i = 0; i < 4; i++) {
	strcpy(h.cfg_path[i], "/tmp/tusk_fuzz_cfg_XXXXXX");
	int cfd = mkstemp(h.cfg_path[i]);
	if (cfd < 0)
		h_die("mkstemp");
	char cfg[4096];
	int n = snprintf(cfg, sizeof cfg,
			 "workers: 1\n"
			 "log: {level: error, format: text, target: stderr}\n"
			 "services:\n  main:\n    hosts: [\"127.0.0.1:%d\"]\n"
			 "auth_file: %s\n"
			 "buffer_size: 4kB\n"
			 "max_message_size: 8kB\n"
			 "max_prepared_statements: 4\n"
			 "server_reset_query: DISCARD ALL\n"
			 "admin:\n  users: [admin]\n  stats_users: [monitor]\n  client_auth: %s\n"
			 "kv:\n  zone: fuzz\n  service: main\n"
			 "listen:\n  - {host: 127.0.0.1, port: " H_REDIS_PORT ", protocol: redis,"
			 " kv_databases: {0: default, 1: sessions}}\n"
			 "pools:\n"
			 "  - {user: s, mode: session, size: 2}\n"
			 "  - {user: t, mode: transaction, size: 2}\n"
			 "  - {user: st, mode: statement, size: 2}\n"
			 "  - {user: rw, mode: transaction, size: 2, target_session_attrs: read-write-split}\n"
			 "  - {user: password, mode: transaction, size: 2, client_auth: password}\n"
			 "  - {user: md5, mode: transaction, size: 2, client_auth: md5}\n"
			 "  - {user: scram, mode: session, size: 2, client_auth: scram-sha-256}\n"
			 "  - {user: rejected, mode: session, size: 2, client_auth: reject}\n"
			 "  - {user: blocked, mode: session, size: 2, blocked: true}\n"
			 "  - {user: \"*\", mode: transaction, size: 2, client_auth: scram-sha-256}\n",
			 ntohs(a.sin_port), h.users_path, admin_auth[i]);
	if (write(cfd, cfg, (size_t)n) != n)
		h_die("write config");
	close(cfd);
	}
	h.ready = true;
}

static void h_put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t h_get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* ---- the fake PostgreSQL ---- */

static void h_srv_send(struct h_server *s, const void *p, size_t n)
{
	const uint8_t *b = p;
	while (n > 0 && s->fd >= 0) {
		ssize_t w = send(s->fd, b, n, MSG_NOSIGNAL);
		if (w <= 0)
			return; /* tusk closed it or its buffer is full: drop the rest */
		b += w;
		n -= (size_t)w;
	}
}

static void h_srv_msg(struct h_server *s, uint8_t type, const void *body, size_t len)
{
	uint8_t hdr[5] = { type };
	h_put_u32(hdr + 1, (uint32_t)len + 4);
	h_srv_send(s, hdr, 5);
	if (len)
		h_srv_send(s, body, len);
}

static void h_srv_str(struct h_server *s, uint8_t type, const char *str)
{
	h_srv_msg(s, type, str, strlen(str) + 1);
}

static void h_srv_param(struct h_server *s, const char *name, const char *value)
{
	char b[256];
	size_t a = strlen(name) + 1, v = strlen(value) + 1;
	memcpy(b, name, a);
	memcpy(b + a, value, v);
	h_srv_msg(s, 'S', b, a + v);
}

static void h_srv_ready(struct h_server *s)
{
	h_srv_msg(s, 'Z', &s->status, 1);
}

static void h_srv_error(struct h_server *s)
{
	static const char e[] = "SERROR\0VERROR\0C42000\0Mfake error\0";
	h_srv_msg(s, 'E', e, sizeof e);
	if (s->status == 'T')
		s->status = 'E';
}

static bool h_contains(const uint8_t *p, size_t n, const char *word)
{
	size_t w = strlen(word);
	for (size_t i = 0; i + w <= n; i++)
		if (strncasecmp((const char *)p + i, word, w) == 0)
			return true;
	return false;
}

/* The effect of one SQL text on the fake session; false when it fails. */
static bool h_srv_sql(struct h_server *s, const uint8_t *sql, size_t n)
{
	if (h_contains(sql, n, "error") || s->status == 'E') {
		if (!h_contains(sql, n, "rollback"))
			return false;
	}
	if (h_contains(sql, n, "begin"))
		s->status = 'T';
	if (h_contains(sql, n, "commit") || h_contains(sql, n, "rollback"))
		s->status = 'I';
	if (h_contains(sql, n, "set"))
		h_srv_param(s, "application_name", "fuzzed");
	return true;
}

static void h_srv_message(struct h_server *s, uint8_t type, const uint8_t *body, size_t len)
{
	if (getenv("TUSK_FUZZ_DEBUG"))
		fprintf(stderr, "fake server %d: '%c' %zu bytes%s\n", s->fd, type, len, s->skipping ? " (skipped)" : "");
	if (s->skipping && type != 'S')
		return;
	switch (type) {
	case 'Q':
		if (!h_srv_sql(s, body, len)) {
			h_srv_error(s);
		} else if (h_contains(body, len, "copy")) {
			static const uint8_t g[3] = { 0, 0, 0 };
			h_srv_msg(s, 'G', g, sizeof g);
			s->copy_in = true;
			return;
		} else {
			h_srv_str(s, 'C', "SELECT 1");
		}
		h_srv_ready(s);
		break;
	case 'P':
		if (!h_srv_sql(s, body, len)) {
			h_srv_error(s);
			s->skipping = true;
			return;
		}
		h_srv_msg(s, '1', NULL, 0);
		break;
	case 'B':
		h_srv_msg(s, '2', NULL, 0);
		break;
	case 'D':
		if (len && body[0] == 'S') {
			static const uint8_t none[2] = { 0, 0 };
			h_srv_msg(s, 't', none, sizeof none);
		}
		h_srv_msg(s, 'n', NULL, 0);
		break;
	case 'E':
		h_srv_str(s, 'C', "SELECT 0");
		break;
	case 'C':
		h_srv_msg(s, '3', NULL, 0);
		break;
	case 'S':
		s->skipping = false;
		h_srv_ready(s);
		break;
	case 'F': {
		static const uint8_t null_result[4] = { 0xff, 0xff, 0xff, 0xff };
		h_srv_msg(s, 'V', null_result, sizeof null_result);
		h_srv_ready(s);
		break;
	}
	case 'c':
	case 'f':
		if (!s->copy_in)
			break;
		s->copy_in = false;
		if (type == 'c')
			h_srv_str(s, 'C', "COPY 0");
		else
			h_srv_error(s);
		h_srv_ready(s);
		break;
	case 'X':
		close(s->fd);
		s->fd = -1;
		break;
	default:
		break; /* CopyData, Flush */
	}
}

/* Whatever tusk sent this server, answered. */
static bool h_srv_serve(struct h_server *s)
{
	bool moved = false;
	for (;;) {
		if (s->fd < 0)
			return moved;
		ssize_t n = recv(s->fd, s->in + s->inlen, sizeof s->in - s->inlen, 0);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
			close(s->fd);
			s->fd = -1;
			return true;
		}
		if (n < 0)
			break;
		s->inlen += (size_t)n;
		moved = true;
		if (s->inlen == sizeof s->in)
			s->inlen = 0; /* a message this long is not answered; its bytes are dropped */
	}
	size_t off = 0;
	for (;;) {
		size_t avail = s->inlen - off;
		const uint8_t *m = s->in + off;
		if (!s->started) {
			if (avail < 8 || avail < h_get_u32(m))
				break;
			uint32_t len = h_get_u32(m), code = h_get_u32(m + 4);
			off += len;
			if (code == 80877103u) { /* SSLRequest: no */
				h_srv_send(s, "N", 1);
				continue;
			}
			static const uint8_t ok[4] = { 0, 0, 0, 0 };
			static const uint8_t key[8] = { 0, 0, 0x30, 0x39, 1, 2, 3, 4 };
			h_srv_msg(s, 'R', ok, sizeof ok);
			h_srv_param(s, "server_version", "15.0");
			h_srv_param(s, "client_encoding", "UTF8");
			h_srv_param(s, "DateStyle", "ISO, MDY");
			h_srv_param(s, "standard_conforming_strings", "on");
			h_srv_param(s, "application_name", "");
			h_srv_msg(s, 'K', key, sizeof key);
			s->started = true;
			s->status = 'I';
			h_srv_ready(s);
			continue;
		}
		if (avail < 5)
			break;
		uint32_t len = h_get_u32(m + 1);
		if (len < 4) {
			close(s->fd);
			s->fd = -1;
			return true;
		}
		if (avail < (size_t)len + 1) {
			if ((size_t)len + 1 > sizeof s->in) { /* too long to hold: skip what is here */
				s->inlen = 0;
				return true;
			}
			break;
		}
		off += (size_t)len + 1;
		h_srv_message(s, m[0], m + 5, len - 4);
	}
	if (s->fd >= 0) {
		memmove(s->in, s->in + off, s->inlen - off);
		s->inlen -= off;
	}
	return moved;
}

static bool h_accept(void)
{
	bool moved = false;
	for (;;) {
		int fd = accept4(h.listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return moved;
		if (h.nsrv == H_SERVERS) {
			close(fd);
			continue;
		}
		/* Without it the fake server's small replies wait for delayed ACKs (40 ms) and
		 * the pump gives up before they arrive. */
		int one = 1;
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		struct h_server *s = &h.srv[h.nsrv];
		s->fd = fd;
		s->started = s->skipping = s->copy_in = false;
		s->inlen = 0;
		h.newest = h.nsrv++;
		moved = true;
	}
}

/* ---- driving ---- */

/* Turn the loop and the fake server until nothing moves (bounded). */
static void h_pump(void)
{
	for (int round = 0; round < 64; round++) {
		bool moved = false;
		ev_run(h.w->loop, EVRUN_NOWAIT);
		moved |= h_accept();
		for (int i = 0; i < h.nsrv; i++)
			moved |= h_srv_serve(&h.srv[i]);
		if (h.client >= 0) {
			uint8_t sink[65536];
			ssize_t n;
			while ((n = recv(h.client, sink, sizeof sink, 0)) > 0)
				moved = true;
			if (n == 0) {
				close(h.client);
				h.client = -1;
				moved = true;
			}
		}
		if (!moved && round > 2)
			return;
	}
}

static void h_client_send(const uint8_t *p, size_t n)
{
	while (n > 0 && h.client >= 0) {
		ssize_t w = send(h.client, p, n, MSG_NOSIGNAL);
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			h_pump(); /* tusk reads when it can */
			if (h.client < 0)
				return;
			w = send(h.client, p, n, MSG_NOSIGNAL);
			if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				return; /* tusk stopped reading (full buffers): drop the rest */
		}
		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

/* A fresh runtime (the configuration of admin_auth, 0-3: the console's client_auth trust,
 * password, md5, scram-sha-256) and a socketpair: the fuzzer keeps one end (h.client), the
 * other is returned for the accept. */
static int h_runtime(int admin_auth)
{
	h_init();
	struct tusk_config *cfg = NULL;
	if (config_load(h.cfg_path[admin_auth & 3], stderr, &cfg) != 0 || daemon_start_inline(&h.rt, cfg) < 0)
		h_die("harness runtime");
	h.w = h.rt.workers[0];
	h.nsrv = 0;
	h.newest = -1;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
		h_die("socketpair");
	h.client = sv[1];
	return sv[0];
}

/* (inline: each target uses one of h_begin and h_begin_redis.) */
/* A fresh runtime and one connected client of the PostgreSQL protocol (a Unix peer). */
static inline void h_begin(int admin_auth)
{
	int fd = h_runtime(admin_auth);
	struct net_addr peer = { .len = sizeof(sa_family_t) };
	peer.sa.ss_family = AF_UNIX;
	client_accept(h.w, fd, &peer, "unix");
}

/* A fresh runtime and one connection of the Redis listen entry (kv/resp_front.c), handed
 * over as the listener's accept would, from a loopback peer. */
static inline void h_begin_redis(void)
{
	int fd = h_runtime(0);
	struct net_addr peer = { .len = sizeof(struct sockaddr_in) };
	struct sockaddr_in *in = (struct sockaddr_in *)&peer.sa;
	in->sin_family = AF_INET;
	in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	in->sin_port = htons(40000);
	client_accept(h.w, fd, &peer, "127.0.0.1:" H_REDIS_PORT);
}

/* A StartupMessage for user and database (protocol 3.0) from the client. */
/* With a "replication" parameter when replication is not NULL (a replication connection:
 * frontend/replication.c passes its bytes unread). */
static inline void h_startup_repl(const char *user, const char *database, const char *replication)
{
	uint8_t p[256];
	size_t n = 8;
	const char *kv[] = { "user", user, "database", database, "application_name", "fuzz", "replication", replication };
	size_t nkv = sizeof kv / sizeof kv[0] - (replication ? 0 : 2);
	for (size_t i = 0; i < nkv; i++) {
		size_t l = strlen(kv[i]) + 1;
		memcpy(p + n, kv[i], l);
		n += l;
	}
	p[n++] = 0;
	h_put_u32(p, (uint32_t)n);
	h_put_u32(p + 4, 0x00030000u);
	h_client_send(p, n);
	h_pump();
}

static inline void h_startup(const char *user, const char *database)
{
	h_startup_repl(user, database, NULL);
}

/* The chunks of the input (see the top of this file). */
static void h_run_chunks(const uint8_t *data, size_t size)
{
	size_t off = 0;
	while (off + 2 <= size) {
		uint8_t tag = data[off];
		size_t len = (size_t)(tag >> 1) * 256 + data[off + 1];
		off += 2;
		if (len > size - off)
			len = size - off;
		if (tag & 1) {
			if (h.newest >= 0 && h.srv[h.newest].fd >= 0)
				h_srv_send(&h.srv[h.newest], data + off, len);
		} else {
			h_client_send(data + off, len);
		}
		off += len;
		h_pump();
	}
}

/* The client leaves (half the time by Terminate, else by closing), then the runtime stops
 * and every fake server connection goes. */
static void h_end(bool terminate)
{
	if (h.client >= 0 && terminate) {
		static const uint8_t x[5] = { 'X', 0, 0, 0, 4 };
		h_client_send(x, sizeof x);
		h_pump();
	}
	if (h.client >= 0) {
		close(h.client);
		h.client = -1;
	}
	h_pump();
	daemon_stop(&h.rt);
	for (int i = 0; i < h.nsrv; i++)
		if (h.srv[i].fd >= 0) {
			close(h.srv[i].fd);
			h.srv[i].fd = -1;
		}
	/* Connections tusk opened that were never accepted. */
	for (int fd; (fd = accept4(h.listen_fd, NULL, NULL, SOCK_CLOEXEC)) >= 0;)
		close(fd);
}

#endif
