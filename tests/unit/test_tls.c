/* Unit tests for net/tls: a CA, a server and a client certificate made at test time with the
 * OpenSSL API, then both ends of a non-blocking socketpair driven alternately with poll(). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <ev.h>
#include <stdatomic.h>

#include "net/handshake.h"
#include "net/tls.h"
#include "net/tunnel.h"

static char dir[64];
static char ca_pem[128], srv_pem[128], srv_key[128], cli_pem[128], cli_key[128], other_ca_pem[128];

/* ---- certificates ---- */

static void add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v3;
	X509_EXTENSION *ext;

	X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	assert_non_null(ext);
	assert_int_equal(X509_add_ext(cert, ext, -1), 1);
	X509_EXTENSION_free(ext);
}

/* A P-256 key and a certificate for cn signed by (issuer, ikey), self-signed when issuer is NULL. */
static void make_cert(const char *cn, X509 *issuer, EVP_PKEY *ikey, bool ca, const char *san,
		      X509 **cert_out, EVP_PKEY **key_out)
{
	static long serial = 1;
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *cert = X509_new();
	X509_NAME *name;

	assert_non_null(key);
	assert_non_null(cert);
	X509_set_version(cert, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(cert), serial++);
	X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
	X509_gmtime_adj(X509_getm_notAfter(cert), 86400);
	X509_set_pubkey(cert, key);
	name = X509_get_subject_name(cert);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(cert, issuer ? X509_get_subject_name(issuer) : name);
	if (ca) {
		add_ext(cert, issuer ? issuer : cert, NID_basic_constraints, "critical,CA:TRUE");
		add_ext(cert, issuer ? issuer : cert, NID_key_usage, "critical,keyCertSign,cRLSign");
	} else {
		add_ext(cert, issuer, NID_basic_constraints, "critical,CA:FALSE");
	}
	if (san)
		add_ext(cert, issuer ? issuer : cert, NID_subject_alt_name, san);
	assert_true(X509_sign(cert, ikey ? ikey : key, EVP_sha256()) > 0);
	*cert_out = cert;
	*key_out = key;
}

static void write_cert(const char *path, X509 *cert)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(PEM_write_X509(f, cert), 1);
	fclose(f);
}

static void write_key(const char *path, EVP_PKEY *key)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL), 1);
	fclose(f);
}

static int setup_certs(void **state)
{
	X509 *ca, *srv, *cli, *other;
	EVP_PKEY *cak, *srvk, *clik, *otherk;

	(void)state;
	signal(SIGPIPE, SIG_IGN);
	snprintf(dir, sizeof(dir), "/tmp/tusk-tls-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(ca_pem, sizeof(ca_pem), "%s/ca.pem", dir);
	snprintf(other_ca_pem, sizeof(other_ca_pem), "%s/other-ca.pem", dir);
	snprintf(srv_pem, sizeof(srv_pem), "%s/server.pem", dir);
	snprintf(srv_key, sizeof(srv_key), "%s/server.key", dir);
	snprintf(cli_pem, sizeof(cli_pem), "%s/client.pem", dir);
	snprintf(cli_key, sizeof(cli_key), "%s/client.key", dir);

	make_cert("tusk test CA", NULL, NULL, true, NULL, &ca, &cak);
	make_cert("localhost", ca, cak, false, "DNS:localhost,IP:127.0.0.1", &srv, &srvk);
	make_cert("alice", ca, cak, false, NULL, &cli, &clik);
	make_cert("someone else's CA", NULL, NULL, true, NULL, &other, &otherk);
	write_cert(ca_pem, ca);
	write_cert(other_ca_pem, other);
	write_cert(srv_pem, srv);
	write_key(srv_key, srvk);
	write_cert(cli_pem, cli);
	write_key(cli_key, clik);
	X509_free(ca), X509_free(srv), X509_free(cli), X509_free(other);
	EVP_PKEY_free(cak), EVP_PKEY_free(srvk), EVP_PKEY_free(clik), EVP_PKEY_free(otherk);
	return 0;
}

static int teardown_certs(void **state)
{
	const char *files[] = { ca_pem, other_ca_pem, srv_pem, srv_key, cli_pem, cli_key };

	(void)state;
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		unlink(files[i]);
	rmdir(dir);
	return 0;
}

/* ---- connections over a socketpair ---- */

struct pair {
	int fd[2]; /* [0] client end, [1] server end */
	struct tls_ctx *cctx, *sctx;
	struct tls_conn *cli, *srv;
};

static void nonblock(int fd)
{
	assert_int_equal(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
}

/* A context from o, or the test fails with OpenSSL's reason. */
static struct tls_ctx *server_from(struct tls_server_opts o)
{
	struct tls_ctx *ctx;
	char err[256];

	if (tls_ctx_server_new(&o, err, sizeof(err), &ctx) != 0)
		fail_msg("server ctx: %s", err);
	return ctx;
}

static struct tls_ctx *client_from(struct tls_client_opts o)
{
	struct tls_ctx *ctx;
	char err[256];

	if (tls_ctx_client_new(&o, err, sizeof(err), &ctx) != 0)
		fail_msg("client ctx: %s", err);
	return ctx;
}

static struct tls_ctx *server_ctx_ca(enum tls_mode_server mode, const char *ca)
{
	return server_from((struct tls_server_opts){ .cert_file = srv_pem, .key_file = srv_key, .ca_file = ca,
						     .mode = mode });
}

static struct tls_ctx *server_ctx(enum tls_mode_server mode)
{
	return server_ctx_ca(mode, ca_pem);
}

static struct tls_ctx *client_ctx(int verify, const char *ca, bool with_cert)
{
	struct tls_client_opts o = { .ca_file = ca, .verify = verify };

	if (with_cert) {
		o.cert_file = cli_pem;
		o.key_file = cli_key;
	}
	return client_from(o);
}

static void pair_open(struct pair *p, struct tls_ctx *cctx, struct tls_ctx *sctx, const char *host)
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, p->fd), 0);
	nonblock(p->fd[0]);
	nonblock(p->fd[1]);
	p->cctx = cctx;
	p->sctx = sctx;
	p->cli = tls_conn_new(cctx, p->fd[0], false, host);
	p->srv = tls_conn_new(sctx, p->fd[1], true, NULL);
	assert_non_null(p->cli);
	assert_non_null(p->srv);
}

static void pair_close(struct pair *p)
{
	tls_conn_free(p->cli);
	tls_conn_free(p->srv);
	tls_ctx_free(p->cctx);
	tls_ctx_free(p->sctx);
	close(p->fd[0]);
	close(p->fd[1]);
}

static short want_events(int want)
{
	return want == TLS_WANT_WRITE ? POLLOUT : POLLIN;
}

/* Step both handshakes until each has finished or failed; both results out. A side that
 * failed stops; the other then sees EOF or an alert, so this always ends. */
static void handshake(struct pair *p, int *crc, int *src)
{
	int cw = 0, sw = 0;

	*crc = *src = -EAGAIN;
	for (int rounds = 0; rounds < 1000 && (*crc == -EAGAIN || *src == -EAGAIN); rounds++) {
		struct pollfd pf[2];
		nfds_t n = 0;

		if (*crc == -EAGAIN)
			*crc = tls_handshake(p->cli, &cw);
		if (*src == -EAGAIN)
			*src = tls_handshake(p->srv, &sw);
		if (*crc == -EAGAIN)
			pf[n++] = (struct pollfd){ .fd = p->fd[0], .events = want_events(cw) };
		if (*src == -EAGAIN)
			pf[n++] = (struct pollfd){ .fd = p->fd[1], .events = want_events(sw) };
		if (*crc != -EAGAIN && *src == -EAGAIN && *crc < 0)
			shutdown(p->fd[0], SHUT_RDWR); /* a failed client hangs up, as a caller would */
		if (*src != -EAGAIN && *crc == -EAGAIN && *src < 0)
			shutdown(p->fd[1], SHUT_RDWR);
		if (n > 0)
			assert_true(poll(pf, n, 5000) > 0);
	}
	assert_int_not_equal(*crc, -EAGAIN);
	assert_int_not_equal(*src, -EAGAIN);
}

static void handshake_ok(struct pair *p)
{
	int crc, src;

	handshake(p, &crc, &src);
	if (crc != 0 || src != 0)
		fail_msg("handshake: client %d (%s), server %d (%s)", crc, tls_conn_error(p->cli), src,
			 tls_conn_error(p->srv));
}

static uint8_t pattern(size_t i)
{
	return (uint8_t)(i * 2654435761u >> 13);
}

/* Send n bytes from one end to the other with partial writes and retries. After every
 * -EAGAIN the rest is rewritten from a different copy of the data, which is what a caller
 * compacting its buffer does (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER). */
static void transfer(struct tls_conn *from, int from_fd, struct tls_conn *to, int to_fd, size_t n)
{
	uint8_t *src[2] = { malloc(n), malloc(n) };
	uint8_t *dst = malloc(n);
	size_t sent = 0, got = 0;
	int which = 0, ww = 0, rw = TLS_WANT_READ;
	bool write_blocked = false, read_blocked = false;

	assert_non_null(src[0]);
	assert_non_null(src[1]);
	assert_non_null(dst);
	for (size_t i = 0; i < n; i++)
		src[0][i] = src[1][i] = pattern(i);
	while (got < n) {
		write_blocked = read_blocked = false;
		while (sent < n) {
			ssize_t r = tls_write(from, src[which] + sent, n - sent, &ww);

			if (r == -EAGAIN) {
				which ^= 1;
				write_blocked = true;
				break;
			}
			assert_true(r > 0);
			assert_true((size_t)r <= n - sent);
			sent += (size_t)r;
		}
		for (;;) {
			ssize_t r = tls_read(to, dst + got, n - got, &rw);

			if (r == -EAGAIN) {
				read_blocked = true;
				break;
			}
			if (r <= 0)
				fail_msg("read %zd: %s", r, tls_conn_error(to));
			got += (size_t)r;
			if (got == n)
				break;
		}
		if (got < n && write_blocked && read_blocked && !tls_pending(to)) {
			struct pollfd pf[2] = {
				{ .fd = from_fd, .events = want_events(ww) },
				{ .fd = to_fd, .events = want_events(rw) },
			};
			assert_true(poll(pf, 2, 5000) > 0);
		}
	}
	assert_int_equal(sent, n);
	for (size_t i = 0; i < n; i++)
		if (dst[i] != pattern(i))
			fail_msg("byte %zu differs", i);
	free(src[0]);
	free(src[1]);
	free(dst);
}

/* ---- tests ---- */

/* ---- the handshake threads (net/handshake.h) ---- */

struct hs_result {
	atomic_int rc;   /* 1: not done yet */
	atomic_int calls;
};

static void hs_record(void *arg, int rc)
{
	struct hs_result *r = arg;
	atomic_store(&r->rc, rc);
	atomic_fetch_add(&r->calls, 1);
}

/* Wait up to seconds for r's done to have run. */
static void hs_wait(struct hs_result *r, double seconds)
{
	for (int i = 0; i < (int)(seconds * 100) && atomic_load(&r->calls) == 0; i++)
		usleep(10000);
	assert_int_equal(atomic_load(&r->calls), 1);
}

/* A server handshake handed to the pool while this thread plays the client: done says 0 on
 * the pool's thread, and the connection then carries data here. A client that stays silent
 * ends at the deadline (-ETIMEDOUT); one still running at stop is cancelled (-ECANCELED)
 * before tls_hs_pool_stop returns. done runs once each time. */
static void test_handshake_threads(void **state)
{
	struct tls_hs_pool *pool;
	struct pair p, quiet, left;
	struct hs_result r = { 1, 0 }, rq = { 1, 0 }, rl = { 1, 0 };

	(void)state;
	assert_int_equal(tls_hs_pool_start(2, &pool), 0);
	pair_open(&p, client_ctx(2, ca_pem, false), server_ctx(TLS_SERVER_REQUIRE), "localhost");
	assert_int_equal(tls_hs_submit(pool, p.srv, p.fd[1], ev_time() + 10, hs_record, &r), 0);
	int crc = -EAGAIN, cw = 0;
	for (int rounds = 0; rounds < 1000 && crc == -EAGAIN; rounds++) {
		crc = tls_handshake(p.cli, &cw);
		if (crc == -EAGAIN) {
			struct pollfd pf = { .fd = p.fd[0], .events = want_events(cw) };
			assert_true(poll(&pf, 1, 5000) > 0);
		}
	}
	assert_int_equal(crc, 0);
	hs_wait(&r, 10);
	assert_int_equal(atomic_load(&r.rc), 0);
	transfer(p.cli, p.fd[0], p.srv, p.fd[1], 1 << 16);
	transfer(p.srv, p.fd[1], p.cli, p.fd[0], 1 << 16);

	pair_open(&quiet, client_ctx(2, ca_pem, false), server_ctx(TLS_SERVER_REQUIRE), "localhost");
	double t0 = ev_time();
	assert_int_equal(tls_hs_submit(pool, quiet.srv, quiet.fd[1], t0 + 0.2, hs_record, &rq), 0);
	hs_wait(&rq, 10);
	assert_int_equal(atomic_load(&rq.rc), -ETIMEDOUT);
	assert_true(ev_time() - t0 >= 0.19);

	pair_open(&left, client_ctx(2, ca_pem, false), server_ctx(TLS_SERVER_REQUIRE), "localhost");
	assert_int_equal(tls_hs_submit(pool, left.srv, left.fd[1], ev_time() + 60, hs_record, &rl), 0);
	for (int i = 0; i < 500 && tls_hs_pending(pool) != 1; i++)
		usleep(1000);
	assert_int_equal(tls_hs_pending(pool), 1);
	assert_int_equal(tls_hs_done_count(pool), 2);
	tls_hs_pool_stop(pool);
	assert_int_equal(atomic_load(&rl.calls), 1);
	assert_int_equal(atomic_load(&rl.rc), -ECANCELED);
	assert_int_equal(atomic_load(&r.calls), 1);
	assert_int_equal(atomic_load(&rq.calls), 1);
	pair_close(&p);
	pair_close(&quiet);
	pair_close(&left);
}

static void test_round_trip(void **state)
{
	struct pair p;

	(void)state;
	pair_open(&p, client_ctx(2, ca_pem, false), server_ctx(TLS_SERVER_REQUIRE), "localhost");
	assert_string_equal(tls_version(p.cli), "(none)");
	handshake_ok(&p);
	assert_string_equal(tls_version(p.cli), "TLSv1.3");
	assert_string_equal(tls_version(p.srv), "TLSv1.3");
	assert_string_equal(tls_cipher(p.cli), tls_cipher(p.srv));

	transfer(p.cli, p.fd[0], p.srv, p.fd[1], 13);
	transfer(p.srv, p.fd[1], p.cli, p.fd[0], 13);
	transfer(p.cli, p.fd[0], p.srv, p.fd[1], 1 << 20);
	transfer(p.srv, p.fd[1], p.cli, p.fd[0], 1 << 20);
	assert_false(tls_pending(p.cli));
	assert_false(tls_pending(p.srv));
	pair_close(&p);
}

/* Both ends of a handshake over sv: a raw OpenSSL client cli on sv[0], a tusk server conn
 * srv on sv[1], driven alternately until both are done. */
static void raw_handshake(SSL *cli, struct tls_conn *srv, const int sv[2])
{
	int sw = 0, src = -EAGAIN, crc = 0;

	for (int i = 0; i < 100 && (src == -EAGAIN || crc != 1); i++) {
		struct pollfd pf[2] = { { .fd = sv[0], .events = POLLIN }, { .fd = sv[1], .events = POLLIN } };

		if (crc != 1) {
			crc = SSL_do_handshake(cli);
			assert_true(crc == 1 || SSL_get_error(cli, crc) == SSL_ERROR_WANT_READ);
		}
		if (src == -EAGAIN)
			src = tls_handshake(srv, &sw);
		if (src == -EAGAIN || crc != 1)
			assert_true(poll(pf, 2, 5000) > 0);
	}
	assert_int_equal(src, 0);
	assert_int_equal(crc, 1);
}

/* TLS 1.2 still works (a raw OpenSSL client capped at 1.2), with the configured cipher list. */
static void test_tls12(void **state)
{
	struct tls_server_opts o = { .cert_file = srv_pem, .key_file = srv_key, .mode = TLS_SERVER_REQUIRE,
				     .ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256" };
	struct tls_ctx *sctx;
	struct tls_conn *srv;
	SSL_CTX *rctx = SSL_CTX_new(TLS_client_method());
	SSL *cli;
	char err[256], buf[8];
	uint8_t a[64];
	int sv[2], sw = 0;
	size_t n = 0;

	(void)state;
	assert_int_equal(tls_ctx_server_new(&o, err, sizeof(err), &sctx), 0);
	assert_non_null(rctx);
	assert_int_equal(SSL_CTX_set_max_proto_version(rctx, TLS1_2_VERSION), 1);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	nonblock(sv[0]);
	nonblock(sv[1]);
	cli = SSL_new(rctx);
	SSL_set_fd(cli, sv[0]);
	SSL_set_connect_state(cli);
	srv = tls_conn_new(sctx, sv[1], true, NULL);
	assert_non_null(srv);
	raw_handshake(cli, srv, sv);
	assert_string_equal(tls_version(srv), "TLSv1.2");
	assert_string_equal(tls_cipher(srv), "ECDHE-ECDSA-AES128-GCM-SHA256");
	assert_int_equal(tls_server_end_point(srv, a), 32);
	assert_int_equal(tls_write(srv, "hello", 5, &sw), 5);
	assert_int_equal(SSL_read_ex(cli, buf, sizeof(buf), &n), 1);
	assert_int_equal(n, 5);
	assert_memory_equal(buf, "hello", 5);
	SSL_free(cli);
	SSL_CTX_free(rctx);
	tls_conn_free(srv);
	tls_ctx_free(sctx);
	close(sv[0]);
	close(sv[1]);
}

static void test_bad_ciphers(void **state)
{
	struct tls_server_opts o = { .cert_file = srv_pem, .key_file = srv_key, .ciphers = "NOPE-NOT-A-CIPHER" };
	struct tls_ctx *ctx;
	char err[256];

	(void)state;
	assert_int_equal(tls_ctx_server_new(&o, err, sizeof(err), &ctx), -EINVAL);
	assert_null(ctx);
	assert_non_null(strstr(err, "NOPE-NOT-A-CIPHER"));
	o.ciphers = NULL;
	o.key_file = cli_key; /* not the server certificate's key */
	assert_int_equal(tls_ctx_server_new(&o, err, sizeof(err), &ctx), -EINVAL);
	if (!strstr(err, "mismatch"))
		fail_msg("%s", err);
}

/* protocols, TLS 1.3 suites, groups and (client side) ciphers: what a handshake between two
 * such contexts negotiates, and the values OpenSSL does not know refused with their name. */
static struct tls_ctx *opts_server(unsigned protocols, const char *suites, const char *groups)
{
	return server_from((struct tls_server_opts){ .cert_file = srv_pem, .key_file = srv_key,
						     .mode = TLS_SERVER_REQUIRE, .protocols = protocols,
						     .ciphersuites = suites, .groups = groups });
}

static struct tls_ctx *opts_client(unsigned protocols, const char *ciphers, const char *suites)
{
	return client_from((struct tls_client_opts){ .protocols = protocols, .ciphers = ciphers,
						     .ciphersuites = suites });
}

static void test_versions_and_suites(void **state)
{
	struct pair p;
	int crc, src;
	char err[256];
	struct tls_ctx *ctx;

	(void)state;
	pair_open(&p, opts_client(TLS_PROTO_1_2, NULL, NULL), opts_server(TLS_PROTO_1_3, NULL, NULL), NULL);
	handshake(&p, &crc, &src);
	assert_true(crc < 0 && src < 0);
	pair_close(&p);

	pair_open(&p, opts_client(0, NULL, NULL), opts_server(TLS_PROTO_1_3, NULL, "auto"), NULL);
	handshake_ok(&p);
	assert_string_equal(tls_version(p.srv), "TLSv1.3");
	pair_close(&p);

	pair_open(&p, opts_client(0, "ECDHE-ECDSA-AES128-GCM-SHA256", NULL), opts_server(TLS_PROTO_1_2, NULL, "P-384"),
		  NULL);
	handshake_ok(&p);
	assert_string_equal(tls_version(p.cli), "TLSv1.2");
	assert_string_equal(tls_cipher(p.srv), "ECDHE-ECDSA-AES128-GCM-SHA256");
	pair_close(&p);

	pair_open(&p, opts_client(TLS_PROTO_1_2 | TLS_PROTO_1_3, NULL, "TLS_AES_128_GCM_SHA256"),
		  opts_server(0, "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256", NULL), NULL);
	handshake_ok(&p);
	assert_string_equal(tls_cipher(p.cli), "TLS_AES_128_GCM_SHA256");
	pair_close(&p);

	struct tls_server_opts so = { .cert_file = srv_pem, .key_file = srv_key, .ciphersuites = "TLS_AES_128_GCM_SHA256:BOGUS" };
	assert_int_equal(tls_ctx_server_new(&so, err, sizeof(err), &ctx), -EINVAL);
	assert_null(ctx);
	if (!strstr(err, "no such suite BOGUS"))
		fail_msg("%s", err);
	so.ciphersuites = NULL;
	so.groups = "P-256:nosuchcurve";
	assert_int_equal(tls_ctx_server_new(&so, err, sizeof(err), &ctx), -EINVAL);
	if (!strstr(err, "ECDH groups \"P-256:nosuchcurve\""))
		fail_msg("%s", err);
	struct tls_client_opts co = { .ciphers = "NOPE-NOT-A-CIPHER" };
	assert_int_equal(tls_ctx_client_new(&co, err, sizeof(err), &ctx), -EINVAL);
	if (!strstr(err, "ciphers \"NOPE-NOT-A-CIPHER\""))
		fail_msg("%s", err);
	co.ciphers = NULL;
	co.ciphersuites = "NOPE";
	assert_int_equal(tls_ctx_client_new(&co, err, sizeof(err), &ctx), -EINVAL);
	if (!strstr(err, "TLS 1.3 cipher suites \"NOPE\""))
		fail_msg("%s", err);
}

static void test_end_point(void **state)
{
	struct pair p;
	uint8_t a[64], b[64], want[32];
	unsigned int n = 0;
	X509 *cert;
	FILE *f;

	(void)state;
	pair_open(&p, client_ctx(1, ca_pem, false), server_ctx(TLS_SERVER_REQUIRE), NULL);
	assert_true(tls_server_end_point(p.cli, a) < 0); /* no peer certificate yet */
	handshake_ok(&p);
	assert_int_equal(tls_server_end_point(p.cli, a), 32);
	assert_int_equal(tls_server_end_point(p.srv, b), 32);
	assert_memory_equal(a, b, 32);

	f = fopen(srv_pem, "r");
	assert_non_null(f);
	cert = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(cert);
	assert_int_equal(X509_digest(cert, EVP_sha256(), want, &n), 1);
	assert_int_equal(n, 32);
	assert_memory_equal(a, want, 32);
	X509_free(cert);
	pair_close(&p);
}

static void test_verify_full_hostname(void **state)
{
	struct pair p;
	int crc, src;

	(void)state;
	pair_open(&p, client_ctx(2, ca_pem, false), server_ctx(TLS_SERVER_REQUIRE), "localhost");
	handshake_ok(&p);
	pair_close(&p);

	pair_open(&p, client_ctx(2, ca_pem, false), server_ctx(TLS_SERVER_REQUIRE), "127.0.0.1");
	handshake_ok(&p);
	pair_close(&p);

	pair_open(&p, client_ctx(2, ca_pem, false), server_ctx(TLS_SERVER_REQUIRE), "db.example.com");
	handshake(&p, &crc, &src);
	assert_int_equal(crc, -EPROTO);
	assert_non_null(strstr(tls_conn_error(p.cli), "certificate verify failed"));
	assert_non_null(strstr(tls_conn_error(p.cli), "mismatch"));
	pair_close(&p);

	pair_open(&p, client_ctx(2, ca_pem, false), server_ctx(TLS_SERVER_REQUIRE), "127.0.0.2");
	handshake(&p, &crc, &src);
	assert_int_equal(crc, -EPROTO);
	pair_close(&p);

	/* verify 1 checks the CA only: a wrong name passes, a wrong CA does not. */
	pair_open(&p, client_ctx(1, ca_pem, false), server_ctx(TLS_SERVER_REQUIRE), "db.example.com");
	handshake_ok(&p);
	pair_close(&p);

	pair_open(&p, client_ctx(1, other_ca_pem, false), server_ctx(TLS_SERVER_REQUIRE), "localhost");
	handshake(&p, &crc, &src);
	assert_int_equal(crc, -EPROTO);
	assert_non_null(strstr(tls_conn_error(p.cli), "certificate verify failed"));
	pair_close(&p);

	/* verify 0 takes anything. */
	pair_open(&p, client_ctx(0, NULL, false), server_ctx(TLS_SERVER_REQUIRE), "db.example.com");
	handshake_ok(&p);
	pair_close(&p);
}

static void test_verify_full_needs_name(void **state)
{
	struct tls_ctx *ctx = client_ctx(2, ca_pem, false);
	int sv[2];

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_null(tls_conn_new(ctx, sv[0], false, NULL));
	assert_null(tls_conn_new(ctx, sv[0], true, "localhost")); /* a client ctx is not a server */
	tls_ctx_free(ctx);
	close(sv[0]);
	close(sv[1]);
}

static void test_client_cert_cn(void **state)
{
	struct pair p;
	char cn[64];

	(void)state;
	pair_open(&p, client_ctx(2, ca_pem, true), server_ctx(TLS_SERVER_VERIFY_FULL), "localhost");
	handshake_ok(&p);
	assert_true(tls_peer_cn(p.srv, cn, sizeof(cn)));
	assert_string_equal(cn, "alice");
	assert_false(tls_peer_cn(p.srv, cn, 5)); /* "alice" needs 6 */
	assert_true(tls_peer_cn(p.cli, cn, sizeof(cn)));
	assert_string_equal(cn, "localhost");
	transfer(p.cli, p.fd[0], p.srv, p.fd[1], 4096);
	pair_close(&p);

	/* In require mode with a CA a certificate is asked for (cert authentication needs it)
	 * and verified when sent; without a CA it is not asked for, so there is no CN. */
	pair_open(&p, client_ctx(1, ca_pem, true), server_ctx(TLS_SERVER_REQUIRE), NULL);
	handshake_ok(&p);
	assert_true(tls_peer_cn(p.srv, cn, sizeof(cn)));
	assert_string_equal(cn, "alice");
	pair_close(&p);
	pair_open(&p, client_ctx(1, ca_pem, false), server_ctx(TLS_SERVER_REQUIRE), NULL);
	handshake_ok(&p);
	assert_false(tls_peer_cn(p.srv, cn, sizeof(cn)));
	pair_close(&p);
	pair_open(&p, client_ctx(1, ca_pem, true), server_ctx_ca(TLS_SERVER_REQUIRE, NULL), NULL);
	handshake_ok(&p);
	assert_false(tls_peer_cn(p.srv, cn, sizeof(cn)));
	pair_close(&p);

	/* Unverified server certificate: no CN either. */
	pair_open(&p, client_ctx(0, NULL, false), server_ctx(TLS_SERVER_REQUIRE), NULL);
	handshake_ok(&p);
	assert_false(tls_peer_cn(p.cli, cn, sizeof(cn)));
	pair_close(&p);
}

static void test_missing_client_cert(void **state)
{
	struct pair p;
	int crc, src;

	(void)state;
	pair_open(&p, client_ctx(1, ca_pem, false), server_ctx(TLS_SERVER_VERIFY_CA), NULL);
	handshake(&p, &crc, &src);
	assert_true(src < 0);
	assert_non_null(strstr(tls_conn_error(p.srv), "certificate"));
	pair_close(&p);
}

/* A raw OpenSSL client capped at TLS 1.1, at security level 0 so it really sends a 1.1 hello. */
static void test_tls11_refused(void **state)
{
	struct tls_ctx *sctx = server_ctx(TLS_SERVER_REQUIRE);
	SSL_CTX *old = SSL_CTX_new(TLS_client_method());
	SSL *cli;
	struct tls_conn *srv;
	int sv[2], sw = 0, src = -EAGAIN, crc = -1;

	(void)state;
	assert_non_null(old);
	assert_int_equal(SSL_CTX_set_min_proto_version(old, TLS1_1_VERSION), 1);
	assert_int_equal(SSL_CTX_set_max_proto_version(old, TLS1_1_VERSION), 1);
	assert_int_equal(SSL_CTX_set_cipher_list(old, "DEFAULT:@SECLEVEL=0"), 1);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	nonblock(sv[0]);
	nonblock(sv[1]);
	cli = SSL_new(old);
	SSL_set_fd(cli, sv[0]);
	SSL_set_connect_state(cli);
	srv = tls_conn_new(sctx, sv[1], true, NULL);
	assert_non_null(srv);

	for (int i = 0; i < 100 && src == -EAGAIN; i++) {
		struct pollfd pf = { .fd = sv[1], .events = POLLIN };

		crc = SSL_do_handshake(cli);
		assert_true(crc != 1 && SSL_get_error(cli, crc) == SSL_ERROR_WANT_READ); /* hello sent */
		src = tls_handshake(srv, &sw);
		if (src == -EAGAIN)
			assert_true(poll(&pf, 1, 5000) > 0);
	}
	assert_int_equal(src, -EPROTO);
	if (!strstr(tls_conn_error(srv), "unsupported protocol"))
		fail_msg("%s", tls_conn_error(srv));
	ERR_clear_error();
	SSL_free(cli);
	SSL_CTX_free(old);
	tls_conn_free(srv);
	tls_ctx_free(sctx);
	close(sv[0]);
	close(sv[1]);
}

static void test_clean_close(void **state)
{
	struct pair p;
	char buf[64];
	int want = 0;

	(void)state;
	/* close_notify */
	pair_open(&p, client_ctx(1, ca_pem, false), server_ctx(TLS_SERVER_REQUIRE), NULL);
	handshake_ok(&p);
	assert_int_equal(tls_read(p.srv, buf, sizeof(buf), &want), -EAGAIN);
	assert_int_equal(want, TLS_WANT_READ);
	assert_int_equal(tls_write(p.cli, "bye", 3, &want), 3);
	assert_int_equal(tls_shutdown(p.cli, &want), 0);
	assert_int_equal(tls_read(p.srv, buf, sizeof(buf), &want), 3);
	assert_memory_equal(buf, "bye", 3);
	assert_int_equal(tls_read(p.srv, buf, sizeof(buf), &want), 0);
	pair_close(&p);

	/* plain EOF, no close_notify */
	pair_open(&p, client_ctx(1, ca_pem, false), server_ctx(TLS_SERVER_REQUIRE), NULL);
	handshake_ok(&p);
	tls_conn_free(p.srv);
	p.srv = NULL;
	close(p.fd[1]);
	p.fd[1] = -1;
	assert_int_equal(tls_read(p.cli, buf, sizeof(buf), &want), 0);
	assert_true(tls_write(p.cli, "x", 1, &want) < 0);
	pair_close(&p);
}

/* ---- net/tunnel: a plaintext client on the tunnel's Unix socket reaches a TLS server ---- */

#define TUNNEL_BYTES (100 * 1024) /* three times the tunnel's buffers; fits the socket buffers */

static int tcp_listener(int *port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(fd, 8), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	*port = ntohs(a.sin_port);
	return fd;
}

static int unix_client(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = 5 };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	assert_true(strlen(path) < sizeof(a.sun_path));
	strcpy(a.sun_path, path);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	return fd;
}

static struct tunnel *tunnel_to(int port, struct tls_ctx *cctx)
{
	struct tunnel_opts o = { .name = "test", .host = "127.0.0.1", .port = port, .ctx = cctx, .timeout = 5.0,
				 .max_conns = 4 };
	struct tunnel *t;
	struct stat st;
	char d[128];

	assert_int_equal(tunnel_start(&o, &t), 0);
	snprintf(d, sizeof(d), "%s", tunnel_path(t));
	*strrchr(d, '/') = '\0';
	assert_int_equal(stat(d, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700); /* only tusk's user may use its TLS identity */
	return t;
}

/* The server end: accept and run the handshake to its end. 0 or the handshake's error. */
static int serve_handshake(int lfd, struct tls_ctx *sctx, int *fd, struct tls_conn **conn)
{
	int rc, want = 0;

	*fd = accept(lfd, NULL, NULL);
	assert_true(*fd >= 0);
	nonblock(*fd);
	*conn = tls_conn_new(sctx, *fd, true, NULL);
	assert_non_null(*conn);
	while ((rc = tls_handshake(*conn, &want)) == -EAGAIN) {
		struct pollfd pf = { .fd = *fd, .events = want_events(want) };
		assert_true(poll(&pf, 1, 5000) > 0);
	}
	return rc;
}

static void test_tunnel_round_trip(void **state)
{
	struct tls_ctx *sctx = server_ctx(TLS_SERVER_REQUIRE);
	uint8_t *buf = malloc(TUNNEL_BYTES);
	int port, sfd, want = 0;
	struct tls_conn *srv;
	char path[128];
	size_t got = 0, sent = 0;
	(void)state;

	assert_non_null(buf);
	int lfd = tcp_listener(&port);
	struct tunnel *t = tunnel_to(port, client_ctx(2, ca_pem, false));
	snprintf(path, sizeof(path), "%s", tunnel_path(t));
	int u = unix_client(path);
	assert_int_equal(serve_handshake(lfd, sctx, &sfd, &srv), 0);
	/* local -> server */
	for (size_t i = 0; i < TUNNEL_BYTES; i++)
		buf[i] = pattern(i);
	assert_int_equal(write(u, buf, TUNNEL_BYTES), TUNNEL_BYTES);
	memset(buf, 0, TUNNEL_BYTES);
	while (got < TUNNEL_BYTES) {
		ssize_t r = tls_read(srv, buf + got, TUNNEL_BYTES - got, &want);
		if (r == -EAGAIN) {
			struct pollfd pf = { .fd = sfd, .events = want_events(want) };
			assert_true(poll(&pf, 1, 5000) > 0);
			continue;
		}
		assert_true(r > 0);
		got += (size_t)r;
	}
	for (size_t i = 0; i < TUNNEL_BYTES; i++)
		if (buf[i] != pattern(i))
			fail_msg("byte %zu differs on the way in", i);
	/* server -> local */
	while (sent < TUNNEL_BYTES) {
		ssize_t r = tls_write(srv, buf + sent, TUNNEL_BYTES - sent, &want);
		if (r == -EAGAIN) {
			struct pollfd pf = { .fd = sfd, .events = want_events(want) };
			assert_true(poll(&pf, 1, 5000) > 0);
			continue;
		}
		assert_true(r > 0);
		sent += (size_t)r;
	}
	uint8_t *back = calloc(1, TUNNEL_BYTES);
	assert_non_null(back);
	for (got = 0; got < TUNNEL_BYTES;) {
		ssize_t r = read(u, back + got, TUNNEL_BYTES - got);
		assert_true(r > 0);
		got += (size_t)r;
	}
	for (size_t i = 0; i < TUNNEL_BYTES; i++)
		if (back[i] != pattern(i))
			fail_msg("byte %zu differs on the way out", i);
	/* The local client leaves: the server's end is closed too. */
	close(u);
	for (;;) {
		ssize_t r = tls_read(srv, buf, TUNNEL_BYTES, &want);
		if (r != -EAGAIN) {
			assert_true(r <= 0);
			break;
		}
		struct pollfd pf = { .fd = sfd, .events = want_events(want) };
		assert_true(poll(&pf, 1, 5000) > 0);
	}
	tunnel_stop(t);
	assert_int_equal(access(path, F_OK), -1); /* socket and directory removed */
	*strrchr(path, '/') = '\0';
	assert_int_equal(access(path, F_OK), -1);
	tls_conn_free(srv);
	close(sfd);
	close(lfd);
	tls_ctx_free(sctx);
	free(buf);
	free(back);
}

/* A server certificate the tunnel cannot verify: the local client's connection is closed, no byte comes. */
static void test_tunnel_bad_certificate(void **state)
{
	struct tls_ctx *sctx = server_ctx(TLS_SERVER_REQUIRE);
	int port, sfd;
	struct tls_conn *srv;
	char c;
	(void)state;

	int lfd = tcp_listener(&port);
	struct tunnel *t = tunnel_to(port, client_ctx(2, other_ca_pem, false));
	int u = unix_client(tunnel_path(t));
	assert_int_equal(write(u, "PING\r\n", 6), 6);
	assert_true(serve_handshake(lfd, sctx, &sfd, &srv) < 0);
	/* closed (a reset: the tunnel never read what the client had sent) */
	ssize_t r = read(u, &c, 1);
	assert_true(r == 0 || (r < 0 && errno == ECONNRESET));
	close(u);
	tunnel_stop(t);
	tls_conn_free(srv);
	close(sfd);
	close(lfd);
	tls_ctx_free(sctx);
}

/* ---- session resumption ---- */

/* One handshake of a raw OpenSSL client (rctx, offering sess when not NULL) with a tusk server
 * conn from sctx; the client reads until the server's ticket has come (TLS 1.3 sends it after
 * the handshake). With pool, the server conn is told to defer full handshakes: when its
 * tls_handshake stops at the ClientHello (-EINPROGRESS) the rest goes to pool's thread, as a
 * worker hands it over. Whether it stopped; *resumed from the server's side; *out the client's
 * session. */
static bool deferred_once(struct tls_ctx *sctx, SSL_CTX *rctx, SSL_SESSION *sess, struct tls_hs_pool *pool,
			  bool *resumed, SSL_SESSION **out)
{
	int sv[2], sw = 0, src = -EAGAIN, crc = 0;
	struct hs_result r = { 1, 0 };
	bool away = false;
	char buf[8];
	size_t n = 0;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	nonblock(sv[0]);
	nonblock(sv[1]);
	SSL *cli = SSL_new(rctx);
	assert_non_null(cli);
	SSL_set_fd(cli, sv[0]);
	SSL_set_connect_state(cli);
	if (sess)
		assert_int_equal(SSL_set_session(cli, sess), 1);
	struct tls_conn *srv = tls_conn_new(sctx, sv[1], true, NULL);
	assert_non_null(srv);
	if (pool)
		tls_conn_defer_full(srv);
	for (int i = 0; i < 200 && (crc != 1 || (!away && src == -EAGAIN)); i++) {
		struct pollfd pf[2] = { { .fd = sv[0], .events = POLLIN }, { .fd = sv[1], .events = POLLIN } };

		if (crc != 1) {
			crc = SSL_do_handshake(cli);
			assert_true(crc == 1 || SSL_get_error(cli, crc) == SSL_ERROR_WANT_READ);
		}
		if (!away && src == -EAGAIN) {
			src = tls_handshake(srv, &sw);
			if (src == -EINPROGRESS) {
				away = true; /* the socket and srv are the thread's until done */
				assert_int_equal(tls_hs_submit(pool, srv, sv[1], ev_time() + 10, hs_record, &r), 0);
			}
		}
		if (crc != 1 || (!away && src == -EAGAIN))
			assert_true(poll(pf, away ? 1 : 2, 5000) > 0);
	}
	assert_int_equal(crc, 1);
	if (away) {
		hs_wait(&r, 10);
		src = atomic_load(&r.rc);
	}
	assert_int_equal(src, 0);
	*resumed = tls_resumed(srv);
	assert_int_equal(*resumed, SSL_session_reused(cli) == 1);
	assert_int_equal(tls_write(srv, "x", 1, &sw), 1); /* the client has read the ticket once it reads this */
	for (int i = 0; i < 100; i++) {
		if (SSL_read_ex(cli, buf, sizeof buf, &n) == 1)
			break;
		assert_int_equal(SSL_get_error(cli, 0), SSL_ERROR_WANT_READ);
		struct pollfd pf = { .fd = sv[0], .events = POLLIN };
		assert_true(poll(&pf, 1, 5000) > 0);
	}
	assert_int_equal(n, 1);
	*out = SSL_get1_session(cli);
	SSL_shutdown(cli);
	SSL_free(cli);
	tls_conn_free(srv);
	close(sv[0]);
	close(sv[1]);
	return away;
}

static bool resume_once(struct tls_ctx *sctx, SSL_CTX *rctx, SSL_SESSION *sess, SSL_SESSION **out)
{
	bool resumed;
	assert_false(deferred_once(sctx, rctx, sess, NULL, &resumed, out));
	return resumed;
}

/* A client that uses each TLS 1.3 ticket once (RFC 8446, C.4; OpenSSL with client session
 * caching marks a session not resumable once it resumed): it resumes again only if the server
 * sends a fresh ticket at each resumption. */
static SSL_CTX *raw_client(int max_version)
{
	SSL_CTX *r = SSL_CTX_new(TLS_client_method());
	assert_non_null(r);
	SSL_CTX_set_session_cache_mode(r, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	if (max_version)
		assert_int_equal(SSL_CTX_set_max_proto_version(r, max_version), 1);
	return r;
}

static struct tls_ctx *ticket_server(struct tls_tickets *tk, const char *ca)
{
	return server_from((struct tls_server_opts){ .cert_file = srv_pem, .key_file = srv_key, .ca_file = ca,
						     .mode = TLS_SERVER_REQUIRE, .tickets = tk });
}

/* A returning client resumes with its ticket, on TLS 1.3 and 1.2, again and again (each
 * resumption brings a fresh ticket), also on a context built again from the same files (a
 * reload); not on one with another client CA; never without tickets. */
static void test_session_tickets(void **state)
{
	struct tls_tickets *tk = tls_tickets_new(0);
	(void)state;
	assert_non_null(tk);
	for (int v = 0; v < 2; v++) {
		SSL_CTX *r = raw_client(v == 0 ? 0 : TLS1_2_VERSION);
		struct tls_ctx *s = ticket_server(tk, NULL), *again = ticket_server(tk, NULL);
		struct tls_ctx *other = ticket_server(tk, other_ca_pem), *none = server_ctx_ca(TLS_SERVER_REQUIRE, NULL);
		SSL_SESSION *a, *b, *c, *d, *e;

		assert_false(resume_once(s, r, NULL, &a));
		assert_non_null(a);
		assert_true(SSL_SESSION_is_resumable(a));
		assert_true(resume_once(s, r, a, &b));
		assert_true(SSL_SESSION_is_resumable(b)); /* a fresh ticket came with the resumption */
		assert_true(resume_once(again, r, b, &c));
		assert_false(resume_once(other, r, c, &d));
		assert_false(resume_once(none, r, c, &e));
		SSL_SESSION_free(a);
		SSL_SESSION_free(b);
		SSL_SESSION_free(c);
		SSL_SESSION_free(d);
		SSL_SESSION_free(e);
		tls_ctx_free(s);
		tls_ctx_free(again);
		tls_ctx_free(other);
		tls_ctx_free(none);
		SSL_CTX_free(r);
	}
	/* Other keys (another process): a full handshake, no error. */
	struct tls_tickets *tk2 = tls_tickets_new(0);
	struct tls_ctx *s1 = ticket_server(tk, NULL), *s2 = ticket_server(tk2, NULL);
	SSL_CTX *r = raw_client(0);
	SSL_SESSION *a, *b;
	assert_false(resume_once(s1, r, NULL, &a));
	assert_false(resume_once(s2, r, a, &b));
	SSL_SESSION_free(a);
	SSL_SESSION_free(b);
	tls_ctx_free(s1);
	tls_ctx_free(s2);
	SSL_CTX_free(r);
	tls_tickets_free(tk);
	tls_tickets_free(tk2);
}

/* Keys rotate: a ticket sealed with the previous key still opens (and is replaced); one
 * older than two rotations does not. */
static void test_ticket_rotation(void **state)
{
	struct tls_tickets *tk = tls_tickets_new(1);
	struct tls_ctx *s = ticket_server(tk, NULL);
	SSL_CTX *r = raw_client(0);
	SSL_SESSION *a, *b, *c;
	(void)state;

	assert_false(resume_once(s, r, NULL, &a));
	usleep(1100 * 1000);
	assert_true(resume_once(s, r, a, &b)); /* sealed anew with the next key */
	usleep(2100 * 1000);
	assert_false(resume_once(s, r, a, &c)); /* a's key is past two rotations */
	SSL_SESSION_free(a);
	SSL_SESSION_free(b);
	SSL_SESSION_free(c);
	tls_ctx_free(s);
	SSL_CTX_free(r);
	tls_tickets_free(tk);
}

/* ---- full handshakes deferred to a thread, resumptions kept (tls_conn_defer_full) ---- */

/* On TLS 1.3 and 1.2: a ClientHello without a ticket stops the handshake, which a handshake
 * thread then finishes; one with a ticket resumes where it was read, every time; one whose
 * ticket does not open (another process's keys: as a forged one) stops like any full
 * handshake, so no signature runs where the hello was read; on a listener without tickets
 * every hello stops. */
static void test_defer_full_handshakes(void **state)
{
	struct tls_tickets *tk = tls_tickets_new(0), *tk2 = tls_tickets_new(0);
	struct tls_hs_pool *pool;
	(void)state;

	assert_int_equal(tls_hs_pool_start(1, &pool), 0);
	for (int v = 0; v < 2; v++) {
		SSL_CTX *r = raw_client(v == 0 ? 0 : TLS1_2_VERSION);
		struct tls_ctx *s = ticket_server(tk, NULL), *other = ticket_server(tk2, NULL);
		struct tls_ctx *none = server_ctx_ca(TLS_SERVER_REQUIRE, NULL);
		SSL_SESSION *ss[5];
		bool resumed;

		assert_true(deferred_once(s, r, NULL, pool, &resumed, &ss[0]));
		assert_false(resumed);
		assert_false(deferred_once(s, r, ss[0], pool, &resumed, &ss[1]));
		assert_true(resumed);
		assert_false(deferred_once(s, r, ss[1], pool, &resumed, &ss[2]));
		assert_true(resumed);
		assert_true(deferred_once(other, r, ss[2], pool, &resumed, &ss[3]));
		assert_false(resumed);
		assert_true(deferred_once(none, r, ss[2], pool, &resumed, &ss[4]));
		assert_false(resumed);
		for (int i = 0; i < 5; i++)
			SSL_SESSION_free(ss[i]);
		tls_ctx_free(s);
		tls_ctx_free(other);
		tls_ctx_free(none);
		SSL_CTX_free(r);
	}
	assert_int_equal(tls_hs_done_count(pool), 6);
	tls_hs_pool_stop(pool);
	tls_tickets_free(tk);
	tls_tickets_free(tk2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_handshake_threads),
		cmocka_unit_test(test_tls12),
		cmocka_unit_test(test_bad_ciphers),
		cmocka_unit_test(test_versions_and_suites),
		cmocka_unit_test(test_end_point),
		cmocka_unit_test(test_verify_full_hostname),
		cmocka_unit_test(test_verify_full_needs_name),
		cmocka_unit_test(test_client_cert_cn),
		cmocka_unit_test(test_missing_client_cert),
		cmocka_unit_test(test_tls11_refused),
		cmocka_unit_test(test_clean_close),
		cmocka_unit_test(test_tunnel_round_trip),
		cmocka_unit_test(test_tunnel_bad_certificate),
		cmocka_unit_test(test_session_tickets),
		cmocka_unit_test(test_ticket_rotation),
		cmocka_unit_test(test_defer_full_handshakes),
	};

	return cmocka_run_group_tests(tests, setup_certs, teardown_certs);
}
