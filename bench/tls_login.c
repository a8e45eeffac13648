/* bench/tls_login.c: a light TLS login storm (issue 28). THREADS threads, each logging in again
 * and again for SECONDS: TCP connect, SSLRequest, TLS handshake, StartupMessage (trust
 * authentication), one simple Query (SELECT 1), Terminate, close. Unlike pgbench -C (libpq builds
 * a TLS context per connection and keeps no session, ~0.9 ms of client CPU per login on the
 * development machine) it shares one context per process and, with RESUME=1, offers each
 * thread's last session (TLS 1.3 ticket or 1.2 session), so the pooler's side of a login is most
 * of the cost, as with many application hosts logging in to one pooler. No certificate check:
 * the bench's own certificate, on loopback.
 *
 * Usage: tls_login HOST PORT USER DATABASE THREADS SECONDS RESUME
 * Prints one line: logins errors resumed seconds client_cpu_us_per_login
 * TLS_LOGIN_DEBUG=1 (env): each login's version, cipher and whether its session resumed and
 * the next one can, on stderr.
 * Build: cc -O2 -o tls_login bench/tls_login.c -lssl -lcrypto -lpthread */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char *host, *user, *database;
static int port, resume;
static double until;
static SSL_CTX *ctx;

struct result {
	long logins, errors, resumed;
};

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int read_full(int fd, void *buf, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = read(fd, (char *)buf + got, n - got);
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

static int ssl_read_full(SSL *s, void *buf, size_t n)
{
	size_t got = 0;
	while (got < n) {
		int r = SSL_read(s, (char *)buf + got, (int)(n - got));
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

/* Read messages until ReadyForQuery; -1 on an ErrorResponse, an authentication request other
 * than Ok, or a lost connection. */
static int until_ready(SSL *s)
{
	static __thread char body[65536];
	for (;;) {
		unsigned char hdr[5];
		if (ssl_read_full(s, hdr, 5) < 0)
			return -1;
		uint32_t len = ((uint32_t)hdr[1] << 24 | (uint32_t)hdr[2] << 16 | (uint32_t)hdr[3] << 8 | hdr[4]);
		if (len < 4 || len - 4 > sizeof body)
			return -1;
		if (ssl_read_full(s, body, len - 4) < 0)
			return -1;
		if (hdr[0] == 'E')
			return -1;
		if (hdr[0] == 'R' && (len < 8 || body[0] || body[1] || body[2] || body[3]))
			return -1;
		if (hdr[0] == 'Z')
			return 0;
	}
}

static int login(SSL_SESSION **sess, struct result *res)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1, rc = -1;
	SSL *s = NULL;
	if (fd < 0)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	struct timeval tv = { .tv_sec = 10 }; /* a target that stops answering fails the login, no hang */
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	inet_pton(AF_INET, host, &a.sin_addr);
	if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
		goto out;
	static const unsigned char ssl_request[8] = { 0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f };
	char answer;
	if (write(fd, ssl_request, 8) != 8 || read_full(fd, &answer, 1) < 0 || answer != 'S')
		goto out;
	s = SSL_new(ctx);
	if (!s || !SSL_set_fd(s, fd))
		goto out;
	if (resume && *sess)
		SSL_set_session(s, *sess);
	if (SSL_connect(s) != 1)
		goto out;
	if (SSL_session_reused(s))
		res->resumed++;
	/* StartupMessage: protocol 3.0, user, database */
	char msg[512];
	size_t n = 8;
	n += (size_t)snprintf(msg + n, sizeof msg - n, "user%c%s%cdatabase%c%s%c%c", 0, user, 0, 0, database, 0, 0);
	uint32_t be = htonl((uint32_t)n), ver = htonl(196608);
	memcpy(msg, &be, 4);
	memcpy(msg + 4, &ver, 4);
	if (SSL_write(s, msg, (int)n) != (int)n || until_ready(s) < 0)
		goto out;
	static const char sql[] = "SELECT 1";
	char q[64];
	be = htonl((uint32_t)(4 + sizeof sql));
	q[0] = 'Q';
	memcpy(q + 1, &be, 4);
	memcpy(q + 5, sql, sizeof sql);
	if (SSL_write(s, q, (int)(5 + sizeof sql)) != (int)(5 + sizeof sql) || until_ready(s) < 0)
		goto out;
	static const char terminate[] = "X\0\0\0\4";
	(void)SSL_write(s, terminate, 5);
	/* close_notify, as libpq sends; a session freed without it is marked not resumable */
	(void)SSL_shutdown(s);
	if (resume) {
		/* TLS 1.3 tickets come after the handshake: by now they have been read. */
		SSL_SESSION *next = SSL_get1_session(s);
		if (getenv("TLS_LOGIN_DEBUG"))
			fprintf(stderr, "%s %s reused %d resumable %d ticket %d\n", SSL_get_version(s), SSL_get_cipher_name(s),
				SSL_session_reused(s), next ? SSL_SESSION_is_resumable(next) : -1,
				next ? SSL_SESSION_has_ticket(next) : -1);
		if (next) {
			if (*sess)
				SSL_SESSION_free(*sess);
			*sess = next;
		}
	}
	rc = 0;
out:
	if (s)
		SSL_free(s);
	close(fd);
	ERR_clear_error();
	return rc;
}

static void *run(void *arg)
{
	struct result *res = arg;
	SSL_SESSION *sess = NULL;
	while (now() < until) {
		if (login(&sess, res) == 0)
			res->logins++;
		else
			res->errors++;
	}
	if (sess)
		SSL_SESSION_free(sess);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 8) {
		fprintf(stderr, "usage: tls_login HOST PORT USER DATABASE THREADS SECONDS RESUME\n");
		return 2;
	}
	host = argv[1];
	port = atoi(argv[2]);
	user = argv[3];
	database = argv[4];
	int nthreads = atoi(argv[5]);
	double seconds = atof(argv[6]);
	resume = atoi(argv[7]);
	if (nthreads < 1 || nthreads > 1024 || seconds <= 0)
		return 2;
	ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx)
		return 1;
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	pthread_t th[1024];
	struct result res[1024];
	memset(res, 0, sizeof res);
	double start = now();
	until = start + seconds;
	for (int i = 0; i < nthreads; i++)
		if (pthread_create(&th[i], NULL, run, &res[i]) != 0)
			return 1;
	struct result sum = { 0 };
	for (int i = 0; i < nthreads; i++) {
		pthread_join(th[i], NULL);
		sum.logins += res[i].logins;
		sum.errors += res[i].errors;
		sum.resumed += res[i].resumed;
	}
	double took = now() - start;
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
		     (double)ru.ru_stime.tv_usec / 1e6;
	printf("%ld %ld %ld %.3f %.0f\n", sum.logins, sum.errors, sum.resumed, took,
	       sum.logins ? cpu * 1e6 / (double)sum.logins : 0.0);
	SSL_CTX_free(ctx);
	return 0;
}
