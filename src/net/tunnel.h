/* A TLS tunnel: a plaintext client on a private Unix socket gets a TLS connection to a TCP
 * server, made for it per accepted connection. It lets a library without TLS (hiredis 0.14,
 * the result cache's L2) reach a TLS-only server without a client of its own.
 *
 * One thread with its own libev loop per tunnel. The socket lives in a directory made with
 * mkdtemp (mode 0700: only tusk's user may use the tunnel's credentials), removed by
 * tunnel_stop. Each accepted connection: TCP connect + TLS handshake (SNI = host, checks as
 * the context says) bounded by timeout, then bytes both ways through two fixed buffers; a
 * failure, or EOF on either side, closes both ends (a failed handshake reads to the local
 * client as the server closing the connection: EOF, or a reset when it had sent bytes). */
#ifndef TUSK_NET_TUNNEL_H
#define TUSK_NET_TUNNEL_H

struct tls_ctx;
struct tunnel;

struct tunnel_opts {
	const char *name;    /* for log lines, e.g. "cache L2 (Redis)" */
	const char *host;    /* resolved at each connect (blocking, on the tunnel's own thread) */
	int port;
	struct tls_ctx *ctx; /* a client context; the tunnel owns it from tunnel_start on, even on failure */
	double timeout;      /* seconds: TCP connect + TLS handshake */
	int max_conns;       /* accepted connections beyond it are closed at once */
};

/* Make the directory and socket, start the thread. 0 or -errno (logged). */
__attribute__((warn_unused_result))
int tunnel_start(const struct tunnel_opts *o, struct tunnel **out);
/* The Unix socket to connect to; valid until tunnel_stop. */
const char *tunnel_path(const struct tunnel *t);
/* Stop the thread, close every connection, remove the socket and its directory. NULL: nothing. */
void tunnel_stop(struct tunnel *t);

#endif
