/* TLS for both legs (client -> tusk, tusk -> server) over non-blocking sockets. OpenSSL does
 * the record layer straight on the fd: tls_write hands the caller's whole buffer to
 * SSL_write_ex (full 16 KB records, no copy of ours), tls_read decrypts into the caller's. */
#include "net/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* With read ahead, one recv() fills this much: four full records per syscall. */
#define TLS_READ_BUFFER (4 * (16384 + 256))

/* Session ticket keys: the one tickets are sealed with now and the one before it, which
 * still opens tickets (and has them replaced by the client's next full set). */
struct ticket_key {
	unsigned char name[16];
	unsigned char aes[32]; /* AES-256-CBC */
	unsigned char mac[32]; /* HMAC-SHA-256 */
	int64_t born;          /* monotonic milliseconds */
};

struct tls_tickets {
	pthread_mutex_t lock; /* protects keys[] and nkeys: workers seal and open tickets */
	struct ticket_key keys[2]; /* [0] current, [1] previous */
	int nkeys;
	int rotate;                /* seconds a key seals tickets */
	EVP_CIPHER *aes;           /* AES-256-CBC, fetched once: EVP_aes_256_cbc() fetches per call */
};

struct tls_ctx {
	SSL_CTX *ssl_ctx;
	struct tls_tickets *tickets; /* not owned; NULL: no tickets */
	bool server;
	bool verify_peer;   /* peer certificates are checked against a CA */
	int verify;         /* client side: 0, 1, 2 */
	char *hostname;     /* client side default for verify 2; owned */
};

struct tls_conn {
	SSL *ssl;
	bool server;
	bool verify_peer;
	bool defer_full; /* stop once before a full handshake signs (tls_conn_defer_full, cert_cb) */
	char err[TLS_ERR_MAX];
};

/* Drain the thread's OpenSSL error queue into buf as "prefix: reason[: reason...]". */
static void collect_errors(char *buf, size_t cap, const char *prefix)
{
	size_t n;
	unsigned long e;

	if (cap == 0)
		return;
	n = (size_t)snprintf(buf, cap, "%s", prefix);
	while ((e = ERR_get_error()) != 0) {
		char one[160];

		if (n + 3 >= cap)
			continue; /* keep draining */
		ERR_error_string_n(e, one, sizeof(one));
		n += (size_t)snprintf(buf + n, cap - n, ": %s", one);
	}
	if (n >= cap)
		n = cap - 1;
	buf[n] = '\0';
}

static void ctx_common(SSL_CTX *s)
{
	/* Renegotiation mid-stream would need both directions of readiness at odd times and
	 * buys nothing; compression is CRIME. */
	SSL_CTX_set_options(s, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
			       SSL_OP_IGNORE_UNEXPECTED_EOF);
	/* The caller's output buffer may be compacted between retries; partial writes let a
	 * large buffer go out record by record as the socket accepts it. Buffers stay
	 * allocated (no RELEASE_BUFFERS): freeing and re-allocating 16 KB per idle moment costs
	 * more than it saves on a pooler's few thousand connections. */
	SSL_CTX_set_mode(s, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_clear_mode(s, SSL_MODE_RELEASE_BUFFERS);
	/* Read ahead: one recv() fetches several records instead of a header then a body. */
	SSL_CTX_set_read_ahead(s, 1);
	SSL_CTX_set_default_read_buffer_len(s, TLS_READ_BUFFER);
	/* No session cache: it is a locked structure shared by every worker. Servers resume
	 * with stateless tickets instead (tls_tickets), which need none. */
	SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_OFF);
}

static int ctx_fail(SSL_CTX *s, char *err, size_t errcap, const char *what, int rc)
{
	collect_errors(err, errcap, what);
	SSL_CTX_free(s);
	return rc;
}

/* The versions of protocols (TLS_PROTO_* bits, 0: the default): the lowest to the highest,
 * minus the holes between them. 0, or -1 with OpenSSL's error queue set. */
static int set_protocols(SSL_CTX *s, unsigned protocols)
{
	static const struct {
		unsigned bit;
		int version;
		uint64_t no; /* the option that leaves the version out of a range around it */
	} v[] = {
		{ TLS_PROTO_1_0, TLS1_VERSION, SSL_OP_NO_TLSv1 },
		{ TLS_PROTO_1_1, TLS1_1_VERSION, SSL_OP_NO_TLSv1_1 },
		{ TLS_PROTO_1_2, TLS1_2_VERSION, SSL_OP_NO_TLSv1_2 },
		{ TLS_PROTO_1_3, TLS1_3_VERSION, SSL_OP_NO_TLSv1_3 },
	};
	int lo = -1, hi = -1;

	if (protocols == 0)
		protocols = TLS_PROTO_DEFAULT;
	for (int i = 0; i < 4; i++)
		if (protocols & v[i].bit) {
			lo = lo < 0 ? i : lo;
			hi = i;
		}
	if (lo < 0) {
		ERR_raise_data(ERR_LIB_SSL, SSL_R_NO_PROTOCOLS_AVAILABLE, "no TLS version allowed");
		return -1;
	}
	for (int i = lo; i <= hi; i++)
		if (!(protocols & v[i].bit))
			SSL_CTX_set_options(s, v[i].no);
	return SSL_CTX_set_min_proto_version(s, v[lo].version) && SSL_CTX_set_max_proto_version(s, v[hi].version)
		       ? 0
		       : -1;
}

/* Every name of a TLS 1.3 suite list must be one OpenSSL knows: SSL_CTX_set_ciphersuites
 * skips unknown names without a word as long as one is known. */
static bool suites_known(SSL_CTX *s, const char *suites, char *bad, size_t badcap)
{
	STACK_OF(SSL_CIPHER) *have = SSL_CTX_get_ciphers(s);
	const char *p = suites;

	while (*p) {
		size_t n = strcspn(p, ":");
		bool found = false;
		for (int i = 0; !found && have && i < sk_SSL_CIPHER_num(have); i++) {
			const char *name = SSL_CIPHER_get_name(sk_SSL_CIPHER_value(have, i));
			found = strlen(name) == n && strncmp(name, p, n) == 0;
		}
		if (!found && n > 0) {
			snprintf(bad, badcap, "%.*s", (int)(n < 128 ? n : 128), p);
			return false;
		}
		p += n + (p[n] == ':');
	}
	return true;
}

/* Versions, TLS 1.2 ciphers and TLS 1.3 suites, the same on both sides. 0, or (s freed, err
 * set) -EINVAL. */
static int set_versions_ciphers(SSL_CTX *s, unsigned protocols, const char *ciphers, const char *suites, char *err,
				size_t errcap)
{
	char what[320], bad[160];

	if (set_protocols(s, protocols) < 0) {
		snprintf(what, sizeof(what), "TLS versions (protocols 0x%x)", protocols);
		return ctx_fail(s, err, errcap, what, -EINVAL);
	}
	if (ciphers && !SSL_CTX_set_cipher_list(s, ciphers)) {
		snprintf(what, sizeof(what), "ciphers \"%s\"", ciphers);
		return ctx_fail(s, err, errcap, what, -EINVAL);
	}
	if (suites && !SSL_CTX_set_ciphersuites(s, suites)) {
		snprintf(what, sizeof(what), "TLS 1.3 cipher suites \"%s\"", suites);
		return ctx_fail(s, err, errcap, what, -EINVAL);
	}
	if (suites && !suites_known(s, suites, bad, sizeof bad)) {
		snprintf(what, sizeof(what), "TLS 1.3 cipher suites \"%s\": no such suite %s", suites, bad);
		return ctx_fail(s, err, errcap, what, -EINVAL);
	}
	return 0;
}

/* Milliseconds: in whole seconds a key's age read a second more or less than it was (a key
 * made at 0.95 s was two seconds old at 2.05 s), which made tickets expire early. */
static int64_t mono_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int new_key(struct ticket_key *k, int64_t now)
{
	if (RAND_bytes(k->name, sizeof k->name) != 1 || RAND_bytes(k->aes, sizeof k->aes) != 1 ||
	    RAND_bytes(k->mac, sizeof k->mac) != 1) {
		ERR_clear_error();
		return -EIO;
	}
	k->born = now;
	return 0;
}

struct tls_tickets *tls_tickets_new(int rotate_seconds)
{
	struct tls_tickets *t = calloc(1, sizeof *t);
	if (!t)
		return NULL;
	if (pthread_mutex_init(&t->lock, NULL) != 0) {
		free(t);
		return NULL;
	}
	t->rotate = rotate_seconds > 0 ? rotate_seconds : TLS_TICKET_ROTATE;
	return t; /* the cipher and the first key at the first ticket (tickets_ready) */
}

/* The cipher and the first key, made when the first ticket is sealed or opened rather than at
 * start: fetching a cipher and seeding OpenSSL's generator cost a tusk that serves no TLS
 * client 2.2 MB of RSS at start. Under t->lock. False: no ticket this time (a full handshake). */
static bool tickets_ready(struct tls_tickets *t, int64_t now)
{
	if (!t->aes && !(t->aes = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL))) {
		ERR_clear_error();
		return false;
	}
	if (t->nkeys == 0 && new_key(&t->keys[0], now) == 0)
		t->nkeys = 1;
	return t->nkeys > 0;
}

void tls_tickets_free(struct tls_tickets *t)
{
	if (!t)
		return;
	pthread_mutex_destroy(&t->lock);
	EVP_CIPHER_free(t->aes);
	OPENSSL_cleanse(t->keys, sizeof t->keys);
	free(t);
}

/* OpenSSL's ticket key callback: seal (enc) with the current key, rotated when it is older
 * than t->rotate; open with the current or the previous one (2: valid, and issue a new
 * ticket, sealed with the current key). A ticket whose key is gone, or older than two
 * rotations, means a full handshake (0), never an error. */
static int ticket_key_cb(SSL *ssl, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
			 EVP_MAC_CTX *hctx, int enc)
{
	const struct tls_ctx *ctx = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
	struct tls_tickets *t = ctx ? ctx->tickets : NULL;
	struct ticket_key k;
	int found = -1;
	int64_t now = mono_now();

	if (!t)
		return 0;
	pthread_mutex_lock(&t->lock);
	if (!tickets_ready(t, now)) {
		pthread_mutex_unlock(&t->lock);
		return 0;
	}
	if (enc) {
		if (now - t->keys[0].born >= (int64_t)t->rotate * 1000) {
			struct ticket_key fresh;
			if (new_key(&fresh, now) == 0) {
				t->keys[1] = t->keys[0];
				t->keys[0] = fresh;
				t->nkeys = 2;
				OPENSSL_cleanse(&fresh, sizeof fresh);
			}
		}
		found = 0;
	} else {
		for (int i = 0; i < t->nkeys; i++)
			if (memcmp(name, t->keys[i].name, 16) == 0 && now - t->keys[i].born < 2 * (int64_t)t->rotate * 1000)
				found = i;
	}
	if (found >= 0)
		k = t->keys[found];
	pthread_mutex_unlock(&t->lock);
	if (found < 0)
		return 0;

	char digest[] = "SHA256";
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.mac, sizeof k.mac),
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
		OSSL_PARAM_construct_end(),
	};
	int ok;
	if (enc) {
		memcpy(name, k.name, 16);
		ok = RAND_bytes(iv, 16) == 1 && EVP_EncryptInit_ex(cctx, t->aes, NULL, k.aes, iv) == 1 &&
		     EVP_MAC_CTX_set_params(hctx, params) == 1;
	} else {
		ok = EVP_DecryptInit_ex(cctx, t->aes, NULL, k.aes, iv) == 1 &&
		     EVP_MAC_CTX_set_params(hctx, params) == 1;
	}
	OPENSSL_cleanse(&k, sizeof k);
	if (!ok) {
		ERR_clear_error();
		return enc ? -1 : 0;
	}
	/* 2 for every ticket that opens: renew it. With 1 OpenSSL sends no ticket after a TLS 1.3
	 * resumption, and a client that uses each ticket once (RFC 8446, C.4; OpenSSL clients
	 * with client session caching) then resumed only every other login. */
	return enc ? 1 : 2;
}

/* The session id context: a session resumes only on a listener whose certificate, mode and
 * client CA file are what they were when it was made (a ticket from a listener that
 * checked no client certificate, or checked it against another CA, or from before a reload
 * that changed either, starts a full handshake). SHA-256 of those; 0 or -1. */
static int set_sid_ctx(SSL_CTX *s, const struct tls_server_opts *o)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	unsigned char mode = (unsigned char)o->mode;
	unsigned char *der = NULL;
	X509 *cert = SSL_CTX_get0_certificate(s);
	int len = cert ? i2d_X509(cert, &der) : -1;
	EVP_MD_CTX *h = EVP_MD_CTX_new();
	int ok = h && len > 0 && EVP_DigestInit_ex(h, EVP_sha256(), NULL) == 1 &&
		 EVP_DigestUpdate(h, "tusk", 4) == 1 && EVP_DigestUpdate(h, &mode, 1) == 1 &&
		 EVP_DigestUpdate(h, der, (size_t)len) == 1;
	if (ok && o->ca_file) {
		FILE *f = fopen(o->ca_file, "rb");
		char buf[4096];
		size_t got;
		ok = f != NULL;
		while (ok && (got = fread(buf, 1, sizeof buf, f)) > 0)
			ok = EVP_DigestUpdate(h, buf, got) == 1;
		if (f && ferror(f))
			ok = 0;
		if (f)
			fclose(f);
	}
	ok = ok && EVP_DigestFinal_ex(h, md, &n) == 1 && SSL_CTX_set_session_id_context(s, md, n) == 1;
	EVP_MD_CTX_free(h);
	OPENSSL_free(der);
	return ok ? 0 : -1;
}

/* Our certificate (chain) and its key. 0, or (s freed, err set) -EINVAL. */
static int use_cert_key(SSL_CTX *s, const char *cert_file, const char *key_file, char *err, size_t errcap)
{
	char what[320];

	if (!SSL_CTX_use_certificate_chain_file(s, cert_file)) {
		snprintf(what, sizeof(what), "certificate %s", cert_file);
		return ctx_fail(s, err, errcap, what, -EINVAL);
	}
	if (!SSL_CTX_use_PrivateKey_file(s, key_file, SSL_FILETYPE_PEM)) {
		snprintf(what, sizeof(what), "key %s", key_file);
		return ctx_fail(s, err, errcap, what, -EINVAL);
	}
	if (!SSL_CTX_check_private_key(s)) {
		snprintf(what, sizeof(what), "key %s does not match certificate %s", key_file, cert_file);
		return ctx_fail(s, err, errcap, what, -EINVAL);
	}
	return 0;
}

/* PostgreSQL 17 clients send ALPN "postgresql" (required for direct TLS): choose it when
 * offered; a client offering only other protocols gets no ALPN, not a failed handshake. */
static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
		       unsigned int inlen, void *arg)
{
	static const unsigned char pg[] = "\012postgresql";
	unsigned char *sel = NULL;
	(void)ssl;
	(void)arg;
	if (SSL_select_next_proto(&sel, outlen, pg, sizeof pg - 1, in, inlen) != OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_NOACK;
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

/* OpenSSL's certificate callback, on every server context. OpenSSL calls it only when the
 * handshake is to be a full one: after it has read the ClientHello and tried the session the
 * client offered (a TLS 1.3 PSK, a TLS 1.2 ticket), before it chooses the certificate and signs.
 * For a connection told to (tls_conn_defer_full) it stops there once (-1: SSL_do_handshake
 * returns with SSL_ERROR_WANT_X509_LOOKUP) so that its caller can hand the signature and the
 * rest to another thread, where the next call (this callback again, the flag now clear) goes
 * on. A resumption never comes here and stays where the hello was read; so does nothing else:
 * a ticket that does not open (its key rotated out, forged to push the signature onto the
 * worker) is a full handshake and stops like any other. */
static int cert_cb(SSL *ssl, void *arg)
{
	struct tls_conn *c = SSL_get_app_data(ssl);
	(void)arg;

	if (!c || !c->defer_full)
		return 1;
	c->defer_full = false; /* decided: the thread that goes on, or a HelloRetryRequest's second hello, signs */
	return -1;
}

int tls_ctx_server_new(const struct tls_server_opts *o, char *err, size_t errcap, struct tls_ctx **out)
{
	struct tls_ctx *t;
	SSL_CTX *s;
	char what[320];
	int rc;
	bool verify = o->mode == TLS_SERVER_VERIFY_CA || o->mode == TLS_SERVER_VERIFY_FULL;
	/* With a CA but no demand, a client certificate is asked for and checked when one is sent
	 * (as PostgreSQL does with ssl_ca_file), so that cert authentication works there too. */
	bool ask = verify || o->ca_file;

	*out = NULL;
	ERR_clear_error();
	if (!o->cert_file || !o->key_file) {
		snprintf(err, errcap, "TLS server needs a certificate and a key file");
		return -EINVAL;
	}
	if (verify && !o->ca_file) {
		snprintf(err, errcap, "client certificate verification needs a CA file");
		return -EINVAL;
	}
	s = SSL_CTX_new(TLS_server_method());
	if (!s) {
		collect_errors(err, errcap, "SSL_CTX_new");
		return -ENOMEM;
	}
	ctx_common(s);
	SSL_CTX_set_options(s, SSL_OP_CIPHER_SERVER_PREFERENCE);
	if (o->tickets) {
		/* Stateless tickets (TLS 1.3 and 1.2) sealed with o->tickets' keys: one per full
		 * handshake (OpenSSL's default two costs a second seal and record for clients
		 * that keep only the last), a fresh one after each resumption. */
		SSL_CTX_set_num_tickets(s, 1);
		SSL_CTX_set_tlsext_ticket_key_evp_cb(s, ticket_key_cb);
	} else {
		SSL_CTX_set_options(s, SSL_OP_NO_TICKET);
		SSL_CTX_set_num_tickets(s, 0);
	}
	rc = set_versions_ciphers(s, o->protocols, o->ciphers, o->ciphersuites, err, errcap);
	if (rc < 0)
		return rc;
	if (o->groups && strcasecmp(o->groups, "auto") != 0 && !SSL_CTX_set1_groups_list(s, o->groups)) {
		snprintf(what, sizeof(what), "ECDH groups \"%s\"", o->groups);
		return ctx_fail(s, err, errcap, what, -EINVAL);
	}
	rc = use_cert_key(s, o->cert_file, o->key_file, err, errcap);
	if (rc < 0)
		return rc;
	/* Without a session id context OpenSSL refuses handshakes that verify a client cert. */
	if (set_sid_ctx(s, o) < 0) {
		snprintf(what, sizeof(what), "session id context (CA file %s)", o->ca_file ? o->ca_file : "none");
		return ctx_fail(s, err, errcap, what, -EINVAL);
	}
	if (ask) {
		STACK_OF(X509_NAME) *names;

		if (!SSL_CTX_load_verify_locations(s, o->ca_file, NULL)) {
			snprintf(what, sizeof(what), "CA file %s", o->ca_file);
			return ctx_fail(s, err, errcap, what, -EINVAL);
		}
		names = SSL_load_client_CA_file(o->ca_file);
		if (!names) {
			snprintf(what, sizeof(what), "CA names from %s", o->ca_file);
			return ctx_fail(s, err, errcap, what, -EINVAL);
		}
		SSL_CTX_set_client_CA_list(s, names);
		SSL_CTX_set_verify(s, verify ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_PEER, NULL);
	} else {
		SSL_CTX_set_verify(s, SSL_VERIFY_NONE, NULL);
	}
	t = calloc(1, sizeof(*t));
	if (!t)
		return ctx_fail(s, err, errcap, "out of memory", -ENOMEM);
	t->ssl_ctx = s;
	t->server = true;
	t->verify_peer = ask;
	t->tickets = o->tickets;
	SSL_CTX_set_app_data(s, t);
	SSL_CTX_set_alpn_select_cb(s, select_alpn, NULL);
	SSL_CTX_set_cert_cb(s, cert_cb, NULL);
	*out = t;
	return 0;
}

int tls_ctx_client_new(const struct tls_client_opts *o, char *err, size_t errcap, struct tls_ctx **out)
{
	struct tls_ctx *t;
	SSL_CTX *s;
	char what[320];
	int rc;

	*out = NULL;
	ERR_clear_error();
	if (o->verify < 0 || o->verify > 2) {
		snprintf(err, errcap, "verify must be 0, 1 or 2");
		return -EINVAL;
	}
	if (!o->cert_file != !o->key_file) {
		snprintf(err, errcap, "a client certificate needs both a certificate and a key file");
		return -EINVAL;
	}
	s = SSL_CTX_new(TLS_client_method());
	if (!s) {
		collect_errors(err, errcap, "SSL_CTX_new");
		return -ENOMEM;
	}
	ctx_common(s);
	rc = set_versions_ciphers(s, o->protocols, o->ciphers, o->ciphersuites, err, errcap);
	if (rc < 0)
		return rc;
	if (o->cert_file) {
		rc = use_cert_key(s, o->cert_file, o->key_file, err, errcap);
		if (rc < 0)
			return rc;
	}
	if (o->verify > 0) {
		int ok = o->ca_file ? SSL_CTX_load_verify_locations(s, o->ca_file, NULL)
				    : SSL_CTX_set_default_verify_paths(s);
		if (!ok) {
			snprintf(what, sizeof(what), "CA file %s", o->ca_file ? o->ca_file : "(system default)");
			return ctx_fail(s, err, errcap, what, -EINVAL);
		}
		SSL_CTX_set_verify(s, SSL_VERIFY_PEER, NULL);
	} else {
		SSL_CTX_set_verify(s, SSL_VERIFY_NONE, NULL);
	}
	t = calloc(1, sizeof(*t));
	if (!t)
		return ctx_fail(s, err, errcap, "out of memory", -ENOMEM);
	if (o->hostname && !(t->hostname = strdup(o->hostname))) {
		free(t);
		return ctx_fail(s, err, errcap, "out of memory", -ENOMEM);
	}
	t->ssl_ctx = s;
	t->verify_peer = o->verify > 0;
	t->verify = o->verify;
	*out = t;
	return 0;
}

void tls_ctx_free(struct tls_ctx *ctx)
{
	if (!ctx)
		return;
	SSL_CTX_free(ctx->ssl_ctx);
	free(ctx->hostname);
	free(ctx);
}

static bool is_ip_literal(const char *h)
{
	unsigned char a[16];

	return inet_pton(AF_INET, h, a) == 1 || inet_pton(AF_INET6, h, a) == 1;
}

/* recv(2) and send(2) as bare system calls. glibc's wrappers are cancellation points: in a
 * process with threads each call switches asynchronous cancellation on and off around the
 * system call, two atomic read-modify-writes of the thread's cancel word (~65 instructions a
 * call under callgrind, four calls per relayed transaction). tusk never cancels a thread
 * (no pthread_cancel anywhere), so the switch buys nothing. syscall(3) sets errno as they do. */
static inline ssize_t sock_recv(int fd, void *buf, size_t len, int flags)
{
	return (ssize_t)syscall(SYS_recvfrom, fd, buf, len, flags, NULL, NULL);
}

static inline ssize_t sock_send(int fd, const void *buf, size_t len, int flags)
{
	return (ssize_t)syscall(SYS_sendto, fd, buf, len, flags, NULL, 0);
}

/* OpenSSL's socket BIO reads and writes with read()/write(); recv()/send() go straight to
 * the socket layer, past the file layer's work per call (see plain_io below). The method
 * is the socket BIO's but for those two: a constant table, made once (pthread_once) at the
 * first connection and never freed. */
static BIO_METHOD *sock_method;
static pthread_once_t sock_method_once = PTHREAD_ONCE_INIT;

static int bio_recv(BIO *b, char *out, int outl)
{
	ssize_t n;

	if (!out || outl <= 0)
		return 0;
	do
		n = sock_recv((int)BIO_get_fd(b, NULL), out, (size_t)outl, 0);
	while (n < 0 && errno == EINTR);
	BIO_clear_retry_flags(b);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		BIO_set_retry_read(b);
	else if (n == 0)
		BIO_set_flags(b, BIO_FLAGS_IN_EOF); /* BIO_eof: OpenSSL tells EOF from an error by it */
	return (int)n;
}

static int bio_send(BIO *b, const char *in, int inl)
{
	ssize_t n;

	do
		n = sock_send((int)BIO_get_fd(b, NULL), in, (size_t)inl, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	BIO_clear_retry_flags(b);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		BIO_set_retry_write(b);
	return (int)n;
}

static void make_sock_method(void)
{
	const BIO_METHOD *sock = BIO_s_socket();
	BIO_METHOD *m = BIO_meth_new(BIO_TYPE_SOCKET, "tusk socket");

	if (!m)
		return;
	if (!BIO_meth_set_read(m, bio_recv) || !BIO_meth_set_write(m, bio_send) ||
	    !BIO_meth_set_ctrl(m, BIO_meth_get_ctrl(sock)) || !BIO_meth_set_create(m, BIO_meth_get_create(sock)) ||
	    !BIO_meth_set_destroy(m, BIO_meth_get_destroy(sock))) {
		BIO_meth_free(m);
		return;
	}
	sock_method = m;
}

/* A BIO on fd (not closed with it) for ssl: ours, or OpenSSL's socket BIO when ours could
 * not be made. 0 or -1. */
static int set_socket(SSL *ssl, int fd)
{
	pthread_once(&sock_method_once, make_sock_method);
	if (!sock_method)
		return SSL_set_fd(ssl, fd) == 1 ? 0 : -1; /* BIO_NOCLOSE: the fd stays the caller's */
	BIO *b = BIO_new(sock_method);
	if (!b)
		return -1;
	BIO_set_fd(b, fd, BIO_NOCLOSE);
	SSL_set_bio(ssl, b, b);
	return 0;
}

struct tls_conn *tls_conn_new(struct tls_ctx *ctx, int fd, bool server, const char *sni_host)
{
	struct tls_conn *c;
	const char *check;

	if (server != ctx->server)
		return NULL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	ERR_clear_error();
	c->ssl = SSL_new(ctx->ssl_ctx);
	if (!c->ssl)
		goto err_free_conn;
	c->server = server;
	c->verify_peer = ctx->verify_peer;
	if (set_socket(c->ssl, fd) < 0)
		goto err_free_ssl;
	if (server) {
		SSL_set_accept_state(c->ssl);
		SSL_set_app_data(c->ssl, c); /* for cert_cb */
		return c;
	}
	SSL_set_connect_state(c->ssl);
	/* RFC 6066: SNI carries DNS names only. */
	if (sni_host && *sni_host && !is_ip_literal(sni_host) &&
	    !SSL_set_tlsext_host_name(c->ssl, sni_host))
		goto err_free_ssl;
	check = sni_host && *sni_host ? sni_host : ctx->hostname;
	if (ctx->verify == 2) {
		X509_VERIFY_PARAM *p = SSL_get0_param(c->ssl);

		if (!check || !*check)
			goto err_free_ssl;
		X509_VERIFY_PARAM_set_hostflags(p, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		/* An IP literal must match an IP SAN, which set1_host would never look at. */
		if (is_ip_literal(check) ? !X509_VERIFY_PARAM_set1_ip_asc(p, check)
					 : !X509_VERIFY_PARAM_set1_host(p, check, 0))
			goto err_free_ssl;
	}
	return c;

err_free_ssl:
	SSL_free(c->ssl);
err_free_conn:
	free(c);
	ERR_clear_error();
	return NULL;
}

void tls_conn_free(struct tls_conn *c)
{
	if (!c)
		return;
	SSL_free(c->ssl);
	free(c);
}

/* Map a failed SSL_* call to our convention. rc is what the call returned (for the EOF case). */
static int fail(struct tls_conn *c, int rc, int *want, const char *op)
{
	int e = SSL_get_error(c->ssl, rc);
	int saved = errno;

	switch (e) {
	case SSL_ERROR_WANT_READ:
		*want = TLS_WANT_READ;
		return -EAGAIN;
	case SSL_ERROR_WANT_WRITE:
		*want = TLS_WANT_WRITE;
		return -EAGAIN;
	case SSL_ERROR_WANT_X509_LOOKUP: /* cert_cb: a full handshake, deferred */
		return -EINPROGRESS;
	case SSL_ERROR_ZERO_RETURN:
		snprintf(c->err, sizeof(c->err), "%s: connection closed", op);
		return 0;
	case SSL_ERROR_SYSCALL:
		if (ERR_peek_error() != 0) {
			collect_errors(c->err, sizeof(c->err), op);
			return -EPROTO;
		}
		if (saved == 0)
			saved = ECONNRESET; /* EOF where OpenSSL still wanted bytes */
		snprintf(c->err, sizeof(c->err), "%s: %s", op, strerror(saved));
		return -saved;
	default: {
		long vr = SSL_get_verify_result(c->ssl);
		size_t n;

		collect_errors(c->err, sizeof(c->err), op);
		if (vr != X509_V_OK) {
			n = strlen(c->err);
			snprintf(c->err + n, sizeof(c->err) - n, " (%s)", X509_verify_cert_error_string(vr));
		}
		return -EPROTO;
	}
	}
}

int tls_handshake(struct tls_conn *c, int *want)
{
	int rc;

	/* OpenSSL reads the thread's error queue to classify a failure: start it empty, as
	 * other code on this thread (SCRAM's HMACs) may have left entries there. */
	ERR_clear_error();
	errno = 0;
	rc = SSL_do_handshake(c->ssl);
	if (rc == 1)
		return 0;
	rc = fail(c, rc, want, "TLS handshake");
	return rc == 0 ? -ECONNRESET : rc;
}

ssize_t tls_read(struct tls_conn *c, void *buf, size_t len, int *want)
{
	size_t n = 0;
	int rc;

	ERR_clear_error();
	errno = 0;
	rc = SSL_read_ex(c->ssl, buf, len, &n);
	if (rc == 1)
		return (ssize_t)n;
	return fail(c, rc, want, "TLS read");
}

ssize_t tls_write(struct tls_conn *c, const void *buf, size_t len, int *want)
{
	size_t n = 0;
	int rc;

	if (len == 0)
		return 0;
	if (len > INT_MAX)
		len = INT_MAX;
	ERR_clear_error();
	errno = 0;
	rc = SSL_write_ex(c->ssl, buf, len, &n);
	if (rc == 1)
		return (ssize_t)n;
	rc = fail(c, rc, want, "TLS write");
	return rc == 0 ? -EPIPE : rc;
}

int tls_shutdown(struct tls_conn *c, int *want)
{
	int rc;

	ERR_clear_error();
	errno = 0;
	rc = SSL_shutdown(c->ssl);
	if (rc >= 0)
		return 0; /* 0: ours is sent, theirs not awaited; 1: both done */
	rc = fail(c, rc, want, "TLS shutdown");
	return rc == 0 ? 0 : rc;
}

bool tls_pending(const struct tls_conn *c)
{
	/* SSL_has_pending, unlike SSL_pending, also counts read-ahead bytes not yet decrypted. */
	return SSL_has_pending(c->ssl) == 1;
}

const char *tls_conn_error(const struct tls_conn *c)
{
	return c->err;
}

void tls_conn_defer_full(struct tls_conn *c)
{
	if (c->server)
		c->defer_full = true;
}

bool tls_resumed(const struct tls_conn *c)
{
	return SSL_session_reused(c->ssl) == 1;
}

int tls_server_end_point(const struct tls_conn *c, uint8_t out[64])
{
	X509 *cert = c->server ? SSL_get_certificate(c->ssl) : SSL_get0_peer_certificate(c->ssl);
	const EVP_MD *md;
	unsigned int n = 0;
	int algo = NID_undef;

	if (!cert)
		return -ENOENT;
	if (!OBJ_find_sigid_algs(X509_get_signature_nid(cert), &algo, NULL))
		algo = NID_undef;
	switch (algo) {
	case NID_undef:
	case NID_md5:
	case NID_sha1:
		md = EVP_sha256();
		break;
	default:
		md = EVP_get_digestbynid(algo);
		if (!md || EVP_MD_get_size(md) > 64)
			return -ENOTSUP;
	}
	if (!X509_digest(cert, md, out, &n)) {
		ERR_clear_error();
		return -EPROTO;
	}
	return (int)n;
}

bool tls_peer_cn(const struct tls_conn *c, char *out, size_t cap)
{
	return tls_peer_name(c, false, out, cap) == 0;
}

/* len bytes at p as a NUL-terminated name into out: -EINVAL when they hold a NUL (which
 * would let "alice\0.evil" pass as "alice") or do not fit. */
static int copy_name(const void *p, int len, char *out, size_t cap)
{
	if (len < 0 || (size_t)len >= cap || memchr(p, '\0', (size_t)len))
		return -EINVAL;
	memcpy(out, p, (size_t)len);
	out[len] = '\0';
	return 0;
}

int tls_peer_name(const struct tls_conn *c, bool dn, char *out, size_t cap)
{
	const X509 *cert = SSL_get0_peer_certificate(c->ssl);
	const X509_NAME *name;
	int rc = -EINVAL;

	if (!c->verify_peer)
		return -ENOTSUP;
	if (!cert || SSL_get_verify_result(c->ssl) != X509_V_OK)
		return -ENOENT;
	name = X509_get_subject_name(cert);
	if (dn) {
		BIO *b = BIO_new(BIO_s_mem());
		char *p = NULL;
		if (!b)
			return -ENOMEM;
		if (X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253) >= 0) {
			long len = BIO_get_mem_data(b, &p);
			if (p && len > 0 && len < INT_MAX)
				rc = copy_name(p, (int)len, out, cap);
		}
		BIO_free(b);
		ERR_clear_error();
		return rc;
	}
	int idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
	if (idx < 0 || X509_NAME_get_index_by_NID(name, NID_commonName, idx) >= 0)
		return -EINVAL;
	unsigned char *utf8 = NULL;
	int len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx)));
	if (len < 0) {
		ERR_clear_error();
		return -EINVAL;
	}
	rc = copy_name(utf8, len, out, cap);
	OPENSSL_free(utf8);
	return rc;
}

const char *tls_version(const struct tls_conn *c)
{
	return SSL_is_init_finished(c->ssl) ? SSL_get_version(c->ssl) : "(none)";
}

const char *tls_cipher(const struct tls_conn *c)
{
	return SSL_is_init_finished(c->ssl) ? SSL_get_cipher_name(c->ssl) : "(none)";
}

/* One read or write on a plaintext socket, EINTR retried, errors as negative errno.
 * recv/send, not read/write: they go straight to the socket layer, past the file layer's
 * position lookup, range check and fsnotify hooks that read/write pay per call (fdget_pos,
 * vfs_read/vfs_write: 4-5% of tusk's samples in perf under pgbench -S). */
static ssize_t plain_io(int fd, void *buf, size_t len, bool wr)
{
	for (;;) {
		ssize_t n = wr ? sock_send(fd, buf, len, MSG_NOSIGNAL) : sock_recv(fd, buf, len, 0);
		if (n >= 0)
			return n;
		if (errno != EINTR)
			return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	}
}

ssize_t tls_link_read(int fd, struct tls_link *l, void *buf, size_t len)
{
	if (!l->conn)
		return plain_io(fd, buf, len, false);
	/* One SSL_read returns at most one record: go on while OpenSSL holds more (read ahead,
	 * not yet decrypted) or until buf is full, since a level-triggered poll says nothing
	 * about what OpenSSL already holds. When it holds nothing the poll is exact again: stop
	 * without the read that would only say EAGAIN (one system call per request less; with
	 * read ahead the last read took all the socket had, up to TLS_READ_BUFFER). */
	size_t got = 0;
	while (got < len) {
		int want = 0;
		ssize_t n = tls_read(l->conn, (char *)buf + got, len - got, &want);
		if (n > 0) {
			got += (size_t)n;
			l->rd_want = 0;
			if (!tls_pending(l->conn)) {
				l->buffered = false;
				return (ssize_t)got;
			}
			continue;
		}
		if (n == -EAGAIN) {
			l->rd_want = (uint8_t)want;
			l->buffered = false;
			return got ? (ssize_t)got : -EAGAIN;
		}
		if (got)
			break; /* report the bytes now; the EOF or error comes back on the next read */
		return n;
	}
	l->buffered = true;
	return (ssize_t)got;
}

ssize_t tls_link_write(int fd, struct tls_link *l, const void *buf, size_t len)
{
	if (!l->conn)
		return plain_io(fd, (void *)buf, len, true);
	int want = 0;
	ssize_t n = tls_write(l->conn, buf, len, &want);
	l->wr_want = n == -EAGAIN ? (uint8_t)want : 0;
	return n;
}

int tls_link_events(const struct tls_link *l, bool rd, bool wr)
{
	int ev = 0;
	if (rd)
		ev |= l->rd_want ? l->rd_want : TLS_WANT_READ;
	if (wr)
		ev |= l->wr_want ? l->wr_want : TLS_WANT_WRITE;
	return ev;
}

bool tls_link_crossed(const struct tls_link *l)
{
	return l->rd_want == TLS_WANT_WRITE || l->wr_want == TLS_WANT_READ;
}

void tls_link_close(struct tls_link *l)
{
	if (!l->conn)
		return;
	int want;
	if (tls_shutdown(l->conn, &want) < 0)
		want = 0; /* the peer is gone or not reading: nothing more to do */
	tls_conn_free(l->conn);
	*l = (struct tls_link){ 0 }; /* plaintext from now on: nothing held, nothing inverted */
}
