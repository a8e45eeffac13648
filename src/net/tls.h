/* TLS over an already connected, non-blocking socket, for readiness-driven loops: contexts
 * (one SSL_CTX per configuration, shared by all workers) and per-connection state. Owns no
 * fd and no event watcher: callers poll for what *want says and call again. */
#ifndef TUSK_NET_TLS_H
#define TUSK_NET_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* What a client of tusk must present. ALLOW and REQUIRE differ only in whether the caller
 * accepts plaintext; neither asks for a client certificate. VERIFY_CA and VERIFY_FULL both
 * demand a client certificate signed by ca_file (matching the CN to the user is the
 * caller's business, through tls_peer_cn()). */
enum tls_mode_server { TLS_SERVER_DISABLE, TLS_SERVER_ALLOW, TLS_SERVER_REQUIRE, TLS_SERVER_VERIFY_CA, TLS_SERVER_VERIFY_FULL };

/* Session ticket keys shared by every server context of a process: random at creation,
 * a new key every rotate seconds (lazily, when a ticket is sealed), the previous one still
 * accepted. Nothing is kept across processes: after an online restart clients holding
 * tickets do a full handshake. Thread-safe (a mutex inside); free only after every context
 * that names it. */
struct tls_tickets;
#define TLS_TICKET_ROTATE 3600
/* rotate_seconds <= 0: TLS_TICKET_ROTATE. NULL when out of memory. The cipher and the first key
 * are made at the first ticket, not here (a tusk serving no TLS client never loads them). */
struct tls_tickets *tls_tickets_new(int rotate_seconds);
void tls_tickets_free(struct tls_tickets *t);

/* TLS versions a context allows (bits of tls_*_opts.protocols); 0 means TLS_PROTO_DEFAULT.
 * A set with holes (1.0 and 1.3) allows the versions between its lowest and highest but
 * those it leaves out. OpenSSL 3 refuses TLS 1.0 and 1.1 below security level 0 (ciphers
 * "...:@SECLEVEL=0") whatever the set says. */
#define TLS_PROTO_1_0 (1u << 0)
#define TLS_PROTO_1_1 (1u << 1)
#define TLS_PROTO_1_2 (1u << 2)
#define TLS_PROTO_1_3 (1u << 3)
#define TLS_PROTO_DEFAULT (TLS_PROTO_1_2 | TLS_PROTO_1_3)

struct tls_server_opts {
	const char *cert_file; /* PEM, may hold the chain after the leaf */
	const char *key_file;
	const char *ca_file;   /* required for VERIFY_CA / VERIFY_FULL */
	const char *ciphers;   /* TLS 1.2 cipher list; NULL = OpenSSL's default */
	const char *ciphersuites; /* TLS 1.3 suites, colon-separated; NULL = OpenSSL's default */
	const char *groups;    /* ECDHE groups, colon-separated; NULL or "auto" = OpenSSL's default */
	unsigned protocols;    /* TLS_PROTO_* bits; 0 = TLS_PROTO_DEFAULT */
	enum tls_mode_server mode;
	struct tls_tickets *tickets; /* session resumption with tickets sealed by these keys; NULL: none */
};

struct tls_client_opts {
	const char *ca_file;   /* NULL with verify > 0: the system's default paths */
	const char *cert_file; /* client certificate, optional (both or neither) */
	const char *key_file;
	int verify;            /* 0 none, 1 CA, 2 CA + hostname */
	const char *hostname;  /* default name to check when tls_conn_new() gets none */
	const char *ciphers;   /* TLS 1.2 cipher list; NULL = OpenSSL's default */
	const char *ciphersuites; /* TLS 1.3 suites, colon-separated; NULL = OpenSSL's default */
	unsigned protocols;    /* TLS_PROTO_* bits; 0 = TLS_PROTO_DEFAULT */
};

#define TLS_WANT_READ 1
#define TLS_WANT_WRITE 2
#define TLS_ERR_MAX 256

/* Immutable once built; OpenSSL 3 lets threads share an SSL_CTX for making connections. */
struct tls_ctx;

/* 0, or -EINVAL/-EPROTO/-ENOMEM with a message in err (always NUL-terminated). */
__attribute__((warn_unused_result))
int tls_ctx_server_new(const struct tls_server_opts *o, char *err, size_t errcap, struct tls_ctx **out);
__attribute__((warn_unused_result))
int tls_ctx_client_new(const struct tls_client_opts *o, char *err, size_t errcap, struct tls_ctx **out);
/* Connections made from ctx keep it alive (reference counted inside OpenSSL). */
void tls_ctx_free(struct tls_ctx *ctx);

struct tls_conn;

/* A TLS session over fd, which stays the caller's (not closed by tls_conn_free). On the client
 * side sni_host is sent as SNI (not when it is an IP literal) and, with verify 2, is the name
 * the server certificate must carry (falls back to the ctx's hostname). NULL on allocation
 * failure or when verify 2 has no name to check. */
__attribute__((warn_unused_result))
struct tls_conn *tls_conn_new(struct tls_ctx *ctx, int fd, bool server, const char *sni_host);
void tls_conn_free(struct tls_conn *c);

/* 0 done; -EAGAIN (then *want is TLS_WANT_READ or TLS_WANT_WRITE); -EINPROGRESS: stopped before
 * a full handshake signs (tls_conn_defer_full), call again to go on; other
 * negative: failed (tls_conn_error() says why). Application data may arrive with the last
 * flight: check tls_pending() before waiting for readability. */
__attribute__((warn_unused_result))
int tls_handshake(struct tls_conn *c, int *want);

/* Server side, before the handshake starts: let tls_handshake stop once, with -EINPROGRESS,
 * when the handshake is to be a full one (no session offered, or the offered ticket did not
 * open, or the context seals no tickets), after the ClientHello is read and before the
 * signature, so that the caller can hand the rest (the signature, the key exchange) to another
 * thread; the next call, on any thread, goes on. A resumption never stops. No-op on a client
 * conn. */
void tls_conn_defer_full(struct tls_conn *c);
/* The finished handshake resumed a session (a ticket). */
bool tls_resumed(const struct tls_conn *c);

/* > 0 bytes; 0 clean close (close_notify or EOF); -EAGAIN with *want; other negative: error.
 * A read may want the socket writable and a write may want it readable (TLS 1.3 key updates):
 * wait for what *want says, not for the direction of the call. */
__attribute__((warn_unused_result))
ssize_t tls_read(struct tls_conn *c, void *buf, size_t len, int *want);
/* Returns after at least one record went out (partial writes): > 0 bytes taken from buf.
 * After -EAGAIN call again with the same bytes; buf may have moved (compacted, reallocated)
 * but len must not shrink. */
__attribute__((warn_unused_result))
ssize_t tls_write(struct tls_conn *c, const void *buf, size_t len, int *want);

/* Send close_notify (one-way: the peer's is not awaited). 0, -EAGAIN with *want, or error. */
__attribute__((warn_unused_result))
int tls_shutdown(struct tls_conn *c, int *want);

/* Bytes are buffered inside (decrypted, or read ahead from the socket): read again before
 * waiting, or the loop may sleep on data it already has. */
bool tls_pending(const struct tls_conn *c);
/* The last failure's reason; "" when none. Valid until the next call on c. */
const char *tls_conn_error(const struct tls_conn *c);

/* tls-server-end-point channel binding (RFC 5929) for SCRAM-SHA-256-PLUS: the hash of the
 * SERVER's certificate on either side (ours on a server conn, the peer's on a client conn),
 * with the certificate's signature hash, SHA-256 when that is MD5, SHA-1 or unknown. Length
 * (32 for SHA-256) or negative when there is no certificate yet. */
__attribute__((warn_unused_result))
int tls_server_end_point(const struct tls_conn *c, uint8_t out[64]);

/* The peer certificate's CN (UTF-8, NUL-terminated) when the peer presented a certificate
 * that was verified; false when there is none, it was not verified, the name is absent,
 * ambiguous (several CNs), holds a NUL, or does not fit in cap. */
bool tls_peer_cn(const struct tls_conn *c, char *out, size_t cap);

/* The name hba_file's clientcert=verify-full and clientname= compare (PostgreSQL's): the
 * verified peer certificate's CN as tls_peer_cn gives it, or with dn its subject's whole
 * distinguished name in RFC 2253 form ("CN=alice,O=Example"), as PostgreSQL prints it. 0;
 * -ENOTSUP when this side verifies no certificates (a server context without a CA file);
 * -ENOENT when the peer presented none (or it did not verify); -EINVAL when the name is
 * absent, ambiguous, holds a NUL, or does not fit in cap. */
__attribute__((warn_unused_result))
int tls_peer_name(const struct tls_conn *c, bool dn, char *out, size_t cap);

/* A connection as a readiness loop sees it: plaintext (conn NULL) or TLS. Reads and writes
 * remember which readiness a blocked call waits for (a TLS read may need the socket writable
 * during a key update, a write readable), and whether decrypted or read-ahead bytes may sit
 * inside OpenSSL where no poll can see them. TLS_WANT_READ/_WRITE equal libev's EV_READ/_WRITE. */
struct tls_link {
	struct tls_conn *conn; /* NULL: plaintext */
	uint8_t rd_want;       /* what the last blocked read waits for; 0 = TLS_WANT_READ */
	uint8_t wr_want;       /* what the last blocked write waits for; 0 = TLS_WANT_WRITE */
	bool buffered;         /* a read stopped for lack of room, not for lack of bytes: read
	                        * again once there is room, without waiting for the socket */
};

/* Read into buf from fd, through l->conn when set: as many TLS records as fit (stopping early
 * leaves l->buffered set). >0 bytes, 0 EOF / close_notify, -EAGAIN nothing now, other < 0
 * failed. EINTR is retried. */
__attribute__((warn_unused_result))
ssize_t tls_link_read(int fd, struct tls_link *l, void *buf, size_t len);
/* >0 bytes taken (maybe fewer than len), -EAGAIN, or < 0 failed. */
__attribute__((warn_unused_result))
ssize_t tls_link_write(int fd, struct tls_link *l, const void *buf, size_t len);
/* The readiness (TLS_WANT_* bits) to wait for when the caller wants to read and/or write. */
int tls_link_events(const struct tls_link *l, bool rd, bool wr);
/* A blocked read waits for writability or a blocked write for readability (TLS 1.3 key
 * updates): on the next event, whichever it is, both directions must be tried. */
bool tls_link_crossed(const struct tls_link *l);
/* Send close_notify when on TLS (best effort, never blocks) and free the session. */
void tls_link_close(struct tls_link *l);

/* "TLSv1.3", cipher name; "(none)" before the handshake. */
const char *tls_version(const struct tls_conn *c);
const char *tls_cipher(const struct tls_conn *c);

#endif
