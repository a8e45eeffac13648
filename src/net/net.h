/* Socket plumbing: listening sockets (one per worker with SO_REUSEPORT), non-blocking
 * connects to servers, and address formatting for logs. No event loop in here. */
#ifndef TUSK_NET_NET_H
#define TUSK_NET_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#define NET_ADDR_STR_MAX 64 /* "[ffff:...]:65535" */

struct net_addr {
	struct sockaddr_storage sa;
	socklen_t len;
};

/* Resolve host (numeric or name; "*" = any) and port to the first usable address.
 * Blocking (getaddrinfo): call at startup or from a non-loop thread only. 0 or -errno/-EINVAL. */
__attribute__((warn_unused_result))
int net_resolve(const char *host, int port, bool passive, struct net_addr *out);

/* A numeric IPv4 or IPv6 address (as the resolver hands them out) and port, without any
 * lookup: safe on a worker loop. 0 or -EINVAL. */
__attribute__((warn_unused_result))
int net_addr_numeric(const char *host, int port, struct net_addr *out);

/* A non-blocking listening socket with SO_REUSEADDR and SO_REUSEPORT. fd or -errno. */
__attribute__((warn_unused_result))
int net_listen(const struct net_addr *addr, int backlog);

/* A non-blocking listening Unix socket at path (a stale socket file is replaced), its file
 * given mode and group gid as net_unix_own before it listens. fd or -errno (-ENAMETOOLONG when
 * path does not fit). */
__attribute__((warn_unused_result))
int net_listen_unix(const char *path, int backlog, unsigned mode, unsigned gid);

/* The socket file at path: group gid ((unsigned)-1: left as it is), then mode. 0 or -errno. */
__attribute__((warn_unused_result))
int net_unix_own(const char *path, unsigned mode, unsigned gid);

/* Whether another socket listens on addr: 0 when none does, -EADDRINUSE when one does (a
 * socket bound there with SO_REUSEADDR but not SO_REUSEPORT is refused only by a listener,
 * not by connections in TIME_WAIT), other -errno. net_listen's SO_REUSEPORT would instead
 * share the port with another process of the same user without a word. */
__attribute__((warn_unused_result))
int net_listen_probe(const struct net_addr *addr);

/* path as a Unix socket's address: 0, or -ENAMETOOLONG (no room for it and its NUL). */
__attribute__((warn_unused_result))
int net_unix_addr(const char *path, struct sockaddr_un *sun);

/* Whether a process accepts connections on the Unix socket at path: -EADDRINUSE when one
 * does (a connect succeeds), 0 when none does (no file, or a stale one). */
__attribute__((warn_unused_result))
int net_unix_probe(const char *path);

/* A new backlog for a listening socket (listen(2) again, which Linux takes as only that). 0 or
 * -errno. */
__attribute__((warn_unused_result))
int net_set_backlog(int fd, int backlog);

/* TCP_DEFER_ACCEPT on a listening TCP socket: the kernel hands a connection to accept only
 * once the client has sent data, or after about seconds (0: at once). 0 or -errno. */
__attribute__((warn_unused_result))
int net_defer_accept(int fd, int seconds);

/* Start a non-blocking connect. fd (connect in progress or done) or -errno. */
__attribute__((warn_unused_result))
int net_connect(const struct net_addr *addr);
/* The same with SO_SNDBUF and SO_RCVBUF of buffer bytes (0: the system's), set before the
 * handshake so that the window scale it offers fits them. */
__attribute__((warn_unused_result))
int net_connect_buffered(const struct net_addr *addr, int buffer);

/* After the socket turned writable: 0 when connected, else -errno from SO_ERROR. */
int net_connect_result(int fd);

/* Non-blocking accept with CLOEXEC|NONBLOCK, TCP_NODELAY set. fd or -errno. */
int net_accept(int lfd, struct net_addr *peer);

/* TCP_NODELAY and keepalive on a connected socket; best effort. */
void net_tune(int fd);
/* For connections tusk opens (servers, Redis): keepalive probes after 30 s idle (dead
 * within about a minute) and TCP_USER_TIMEOUT 30 s; best effort, a no-op on Unix sockets. */
void net_tune_outgoing(int fd);

#define NET_KEEPIDLE_S 30
#define NET_KEEPINTVL_S 10
#define NET_KEEPCNT 3
#define NET_USER_TIMEOUT_MS 30000u

/* A socket's keepalive, TCP_USER_TIMEOUT and buffer sizes (0: left as they are). */
struct net_tcp_opts {
	bool on;
	int idle_s, intvl_s, cnt;
	unsigned user_timeout_ms;
	int buffer; /* SO_SNDBUF and SO_RCVBUF; the kernel doubles it and caps it at [wr]mem_max */
};
/* From the configuration's tcp_* keys: for a client socket (0s leave the system's defaults)
 * or, outgoing, a server socket (0s take net_tune_outgoing's). */
struct tusk_config;
void net_tcp_opts_of(const struct tusk_config *cfg, bool outgoing, struct net_tcp_opts *k);
/* Set them on fd; best effort. */
void net_tcp_opts_apply(int fd, const struct net_tcp_opts *k);

/* "127.0.0.1:5432" / "[::1]:5432"; always NUL-terminated. */
void net_addr_str(const struct net_addr *addr, char *out, size_t cap);
/* The numeric host of an IPv4 or IPv6 addr into host (INET6_ADDRSTRLEN will do), and its
 * port; -1 (host untouched) for any other family. */
int net_addr_host_port(const struct net_addr *addr, char *host, size_t cap);

/* A pooled idle socket is usable when a non-blocking peek finds nothing to read: EOF means
 * the server closed it, and unsolicited bytes (a FATAL before close) mean it must not be
 * handed out either. */
bool net_idle_alive(int fd);

/* The name of the system user at the other end of the Unix socket fd (SO_PEERCRED), for
 * peer authentication: 0, or -errno (not a Unix socket, a uid with no passwd entry, a name
 * longer than cap - 1). */
int net_peer_user(int fd, char *out, size_t cap);

/* One message of len bytes over the Unix socket conn, with the descriptor fd attached
 * (SCM_RIGHTS) when fd >= 0; flags as sendmsg's (MSG_NOSIGNAL is added). 0 or -errno. */
int net_send_fd(int conn, const void *buf, size_t len, int fd, int flags);
/* One message into buf[0, cap - 1], NUL-terminated; *fd gets an attached descriptor
 * (close-on-exec) or -1. The length, 0 at end of stream, -EMSGSIZE for a message (or its
 * control data) cut short, or -errno. */
int net_recv_fd(int conn, char *buf, size_t cap, int *fd);

#endif
