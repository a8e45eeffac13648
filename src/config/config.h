/* Configuration: the YAML file parsed into one immutable generation (struct tusk_config).
 * Keys are declared in tables in config.c with type, bounds, default and whether a reload
 * may change them. Loading reports every error, each as "FILE:LINE: KEY: message". */
#ifndef TUSK_CONFIG_CONFIG_H
#define TUSK_CONFIG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "util/log.h" /* enum log_level, enum log_format (logging.level, logging.format) */

#define CONFIG_NAME_MAX 64   /* database, user and service names */
#define CONFIG_HOST_MAX 256

enum pool_mode { POOL_MODE_SESSION, POOL_MODE_TRANSACTION, POOL_MODE_STATEMENT };

/* The result cache (src/flight/, docs/cache.md). INHERIT only in a pool rule: take the
 * top-level value. COALESCE merges identical reads in flight; ON also keeps results. */
enum config_cache { CONFIG_CACHE_INHERIT, CONFIG_CACHE_OFF, CONFIG_CACHE_COALESCE, CONFIG_CACHE_ON };
/* active_limit: servers in use at once per pool; off = up to size (docs/pooling.md). */
enum config_active_limit { CONFIG_ACTIVE_LIMIT_OFF, CONFIG_ACTIVE_LIMIT_ADAPTIVE };

/* cache_invalidation: which writes invalidate kept results (docs/cache.md). */
enum config_cache_inval {
	CONFIG_CACHE_INVAL_TUSK,    /* writes through tusk (and cache_ttl for the rest) */
	CONFIG_CACHE_INVAL_LOGICAL, /* ... and every committed change, by logical decoding */
};

/* How clients of a rule prove who they are (hba_file, when set, decides instead). */
enum config_auth { CONFIG_AUTH_TRUST, CONFIG_AUTH_REJECT, CONFIG_AUTH_PASSWORD, CONFIG_AUTH_MD5, CONFIG_AUTH_SCRAM,
		   CONFIG_AUTH_CERT, CONFIG_AUTH_PEER, CONFIG_AUTH_LDAP, CONFIG_AUTH_PAM };

/* TLS towards clients, per listener (same order as net/tls.h's enum tls_mode_server). */
enum config_tls_listen { CONFIG_TLS_DISABLE, CONFIG_TLS_ALLOW, CONFIG_TLS_REQUIRE, CONFIG_TLS_VERIFY_CA,
			 CONFIG_TLS_VERIFY_FULL };
/* TLS towards servers, per service: like libpq's sslmode. */
enum config_tls_service { CONFIG_STLS_DISABLE, CONFIG_STLS_PREFER, CONFIG_STLS_REQUIRE, CONFIG_STLS_VERIFY_CA,
			  CONFIG_STLS_VERIFY_FULL };

/* What a listener speaks: PostgreSQL's protocol (every database, the console, kv), or the
 * Redis protocol in front of the kv (src/kv/resp_front.c; needs the kv section). */
enum config_listen_protocol { CONFIG_LISTEN_POSTGRES, CONFIG_LISTEN_REDIS };

#define CONFIG_KV_DATABASES 16 /* a redis listener's SELECT indexes: 0..15, as Redis's default */

struct config_listen {
	char host[CONFIG_HOST_MAX]; /* numeric address or name; "*" means all addresses */
	int port;
	int tls;                    /* enum config_tls_listen; default disable */
	char *tls_cert_file;        /* required unless tls is disable */
	char *tls_key_file;
	char *tls_ca_file;          /* required for verify-ca/verify-full; with allow/require a
	                             * client certificate is asked for and checked when sent */
	char *tls_ciphers;          /* TLS 1.2 cipher list; NULL: OpenSSL's default */
	char *tls13_ciphers;        /* TLS 1.3 suites; NULL: OpenSSL's default */
	char *tls_protocols;        /* default "secure" (TLS 1.2 and 1.3): config_tls_protocols */
	char *tls_ecdhcurve;        /* ECDHE groups; NULL or "auto": OpenSSL's default */
	int tls_session_tickets;    /* default true: resumption with stateless session tickets */
	int protocol;               /* enum config_listen_protocol; default postgres */
	char *kv_namespace;         /* protocol redis: the kv namespace of database 0; NULL: "default" */
	/* protocol redis: the namespace SELECT n maps to (NULL: n is out of range); index 0 is
	 * kv_namespace's when kv_databases does not name it. */
	char *kv_databases[CONFIG_KV_DATABASES];
};

struct config_host {
	char host[CONFIG_HOST_MAX];
	int port;   /* default 5432 when "host" has no ":port" (53 for nameservers) */
	int weight; /* 0..65535, default 1: share of new connections against the other hosts */
};

/* How a static hosts list is used (PgBouncer's and libpq's load_balance_hosts): spread by
 * weight, or in its order, a later host only while the earlier ones are down. */
enum config_load_balance { CONFIG_LOAD_BALANCE_ROUND_ROBIN, CONFIG_LOAD_BALANCE_DISABLE };
/* The priority of a hosts list's host i (lower first): its place under disable, else 0. */
static inline uint16_t config_host_priority(int load_balance_hosts, int i)
{
	return load_balance_hosts == CONFIG_LOAD_BALANCE_DISABLE ? (uint16_t)i : 0;
}

/* Where a service's backends come from: exactly one of hosts, dns and srv (docs/backends.md). */
enum config_discovery {
	CONFIG_DISCOVERY_HOSTS, /* the static list "hosts" (names in it resolved too) */
	CONFIG_DISCOVERY_DNS,   /* every A and AAAA address of "dns", on "port" */
	CONFIG_DISCOVERY_SRV,   /* the SRV records of "srv": priority, then weight; each target's A/AAAA */
};

/* libpq's target_session_attrs, plus tusk's read-write-split (transaction mode). */
enum config_target {
	CONFIG_TARGET_ANY,
	CONFIG_TARGET_READ_WRITE,
	CONFIG_TARGET_PRIMARY,
	CONFIG_TARGET_READ_ONLY,
	CONFIG_TARGET_STANDBY,
	CONFIG_TARGET_PREFER_STANDBY,
	CONFIG_TARGET_READ_WRITE_SPLIT,
};

struct config_service {
	char name[CONFIG_NAME_MAX];
	int discovery;              /* enum config_discovery, from which key is present */
	int nhosts;                 /* 0 unless discovery is hosts */
	struct config_host *hosts;
	char dns[CONFIG_HOST_MAX];  /* "" unless discovery is dns */
	int port;                   /* with dns: the backends' port; default 5432 */
	char srv[CONFIG_HOST_MAX];  /* "" unless discovery is srv: "_postgresql._tcp.NAME" */
	int nnameservers;           /* 0: the system's (/etc/resolv.conf) */
	struct config_host *nameservers; /* numeric addresses, port default 53 */
	uint64_t dns_min_ttl_ms;    /* default 5s: floor of the re-resolution period (TTL 0 gets it) */
	uint64_t dns_max_ttl_ms;    /* default 5m: ceiling of the re-resolution period */
	uint64_t dns_nxdomain_ttl_ms; /* 0 (absent): dns_max_ttl; ceiling of the retry backoff of a failed name */
	int max_per_host;           /* server connections per backend per pool; 0 = only "size" bounds it */
	int load_balance_hosts;     /* enum config_load_balance; default round-robin */
	int tls;              /* enum config_tls_service; default disable */
	char *tls_ca_file;    /* verify-ca/verify-full; NULL: the system's trusted CAs */
	char *tls_cert_file;  /* optional client certificate for the servers (with tls_key_file) */
	char *tls_key_file;
	char *tls_protocols;  /* default "secure" (TLS 1.2 and 1.3): config_tls_protocols */
	char *tls_ciphers;    /* TLS 1.2 cipher list; NULL: OpenSSL's default */
	char *tls13_ciphers;  /* TLS 1.3 suites; NULL: OpenSSL's default */
};

/* One entry of "pools": first match on (database, user) wins; "*" matches any name. */
struct config_pool_rule {
	char database[CONFIG_NAME_MAX];
	char user[CONFIG_NAME_MAX];
	char service_name[CONFIG_NAME_MAX];
	const struct config_service *service; /* resolved from service_name */
	enum pool_mode mode;                  /* default session */
	int size;                             /* max server connections per (database, user); default 20 */
	int min_size;                         /* kept connected per (database, user); default 0 */
	int active_limit;                     /* enum config_active_limit; default off */
	int active_limit_min;                 /* adaptive: the bound never goes below it; default 2 */
	int client_auth;                      /* enum config_auth; default trust */
	int blocked;                          /* true: clients matching this rule are refused (28000) */
	int max_db_connections;               /* across the pools of one database; 0 = no limit */
	int max_user_connections;             /* across the pools of one user; 0 = no limit */
	char *server_user;                    /* NULL: log in as the client's user */
	char *server_password;                /* NULL: none configured */
	char *server_database;                /* NULL: the client's database */
	char *auth_user;                      /* NULL: the top-level auth_user (config_auth_user) */
	char *auth_query;                     /* NULL: the top-level auth_query (config_auth_query) */
	char *auth_dbname;                    /* NULL: the top-level auth_dbname (config_auth_dbname) */
	char *ldap_options;                   /* NULL: the top-level ldap_options (config_ldap_options) */
	char *pam_service;                    /* NULL: the top-level pam_service (config_pam_service) */
	/* The result cache; 0 / NULL: the top-level value (src/flight/policy.h resolves them). */
	int cache;                            /* enum config_cache */
	uint64_t cache_ttl_ms;
	uint32_t cache_max_result;
	uint64_t cache_coalesce_wait_ms;
	int ncache_tables;
	char **cache_tables;                  /* "table" or "schema.table", as PostgreSQL stores them */
	int ncache_exclude_tables;
	char **cache_exclude_tables;
	int target_session_attrs;             /* enum config_target; default any */
	int read_your_writes;                 /* bool, read-write-split only; default true */
	/* query_timeout / client_idle_timeout / transaction_timeout / idle_transaction_timeout of
	 * this rule's clients, server_lifetime of its servers (PgBouncer's per-database one);
	 * CONFIG_TIMEOUT_INHERIT (absent): the top-level value (config_query_timeout, ...) */
	uint64_t query_timeout_ms;
	uint64_t client_idle_timeout_ms;
	uint64_t transaction_timeout_ms;
	uint64_t idle_transaction_timeout_ms;
	uint64_t server_lifetime_ms;
	/* servers above size for a queue that waited reserve_pool_timeout (PgBouncer's
	 * per-database reserve_pool); -1 (absent): the top-level reserve_pool_size
	 * (config_reserve_pool_size) */
	int reserve_pool_size;
	/* client connections of one database / one user, counted across all pools (PgBouncer's
	 * per-database max_db_client_connections, per-user max_user_client_connections); -1
	 * (absent): the top-level value (config_max_db_client_connections); 0: no limit */
	int max_db_client_connections;
	int max_user_client_connections;
	/* run on each new server connection after login, and again after each reset tusk runs
	 * (pool/server.c, frontend/relay.c); NULL: none */
	char *connect_query;
	/* sent in the server's startup packet (PgBouncer's per-database options); NULL: none */
	char *client_encoding;
	char *datestyle;
	char *timezone;
	char *application_name;
	int line;                             /* where the rule starts, for logs */
};

/* Operator access: the admin console (src/console/), the virtual database "tusk" (also
 * "pgbouncer"), and the HTTP metrics endpoint. */
struct config_admin {
	int nusers;
	char **users;       /* may run every console command */
	int nstats_users;
	char **stats_users; /* may run SHOW commands only */
	int client_auth;    /* enum config_auth when no hba_file; default scram-sha-256 */
	char *http;         /* NULL: no HTTP endpoint; "HOST:PORT" serving /metrics and /health */
};

/* The key-value store (src/kv/, docs/kv.md): off unless zone is set. Read at start only. */
struct config_kv {
	char *zone;                /* this tusk's zone in the kv catalog; NULL: kv is off */
	char *service;             /* the service whose first host holds the catalog tusk starts from */
	char *catalog_database;    /* default kv_catalog */
	char *user;                /* role of tusk kv init / push (CREATEDB, CREATEROLE); default postgres */
	char *password;            /* its password; NULL: none (trust, peer, ~/.pgpass) */
	char *replicator_password; /* kv_replicator's, set by init and used by replication; NULL: none */
	char *client_password;     /* kv_client's, set by init; NULL: left as it is */
	char *router_password;     /* kv_router's, set by init; set: the kv database's shard connections log in
	                            * as kv_router and puts take the fast path (docs/kv.md); NULL: kv_client */
	uint64_t gc_grace_ms;      /* default 1h: tombstones and expired rows are kept this much longer
	                            * than every instance acknowledged them (docs/kv.md, "Purge") */
	uint64_t gc_interval_ms;   /* default 10s: between purge rounds of a shard database */
	int gc_batch;              /* default 1000: rows per purge statement */
	uint64_t gc_pause_ms;      /* default 100ms: between two purge statements (the throttle) */
	uint64_t anti_entropy_interval_ms; /* default 60s: between digest comparisons of a link; 0: never */
	uint64_t pull_interval_ms; /* default 50ms: between two passes of a link that found rows (docs/kv.md) */
	uint64_t link_statement_timeout_ms; /* default 60s: statement_timeout of the links' connections */
};

/* Redis, the result cache's L2 (src/flight/l2.c, docs/cache.md): off unless host or unix is
 * set. Read at start only. */
struct config_redis {
	char *host;       /* TCP; NULL with unix NULL: no L2 */
	int port;         /* 0: 6379 */
	char *unix_path;  /* a unix socket instead of host/port */
	char *password;   /* AUTH; NULL: none */
	int tls;          /* enum config_tls_service, never PREFER: not DISABLE runs the TLS tunnel
	                   * (src/net/tunnel.h) to host:port; default disable */
	char *tls_ca_file;   /* NULL: the system's store (verify-ca, verify-full) */
	char *tls_cert_file; /* client certificate for tls-auth-clients yes; with tls_key_file */
	char *tls_key_file;
	int db;           /* SELECT */
	char *prefix;     /* every key tusk writes starts with it; default "tusk:" */
	uint64_t timeout_ms; /* a command's and a connect's bound; default 100ms */
};

struct tusk_config {
	char *path;

	int nlisten;
	struct config_listen *listen; /* default one: 127.0.0.1:6432 */

	int workers; /* "auto" resolves to the number of online CPUs; default auto */
	int tls_handshake_threads; /* default auto (half the online CPUs, rounded up): threads that run client TLS handshakes; 0: the workers do */
	int worker_balance; /* default true: idle clients move between workers (worker_balance_target) */

	struct {
		enum log_level level;   /* default info */
		enum log_format format; /* default text */
		char *target;           /* "stderr" (default), "file:PATH" or "syslog" */
		char *syslog_ident;     /* default "tusk": the name syslog lines carry */
		char *syslog_facility;  /* default "daemon" (log_syslog_facility names the rest) */
	} log;

	int nservices;
	struct config_service *services;

	/* pool_defaults: what a rule that omits mode, size, min_size, client_auth,
	 * max_db_connections, max_user_connections, target_session_attrs or cache takes (only those
	 * fields are set; each defaults to the rule key's own default). */
	struct config_pool_rule pool_defaults;

	int npools;
	struct config_pool_rule *pools;

	/* Timeouts in milliseconds. */
	uint64_t pool_wait_timeout_ms;      /* default 30s: claim deadline */
	uint64_t query_wait_notify_ms;      /* default 5s: a NOTICE to a client waiting longer for a server; 0 = none */
	uint64_t server_connect_timeout_ms; /* default 5s: TCP connect + server login */
	uint64_t server_reset_timeout_ms;   /* default 5s: reset query must finish within */
	uint64_t client_login_timeout_ms;   /* default 15s: startup must finish within */
	uint64_t server_idle_timeout_ms;    /* default 10m: idle pooled servers closed after; 0 = never */
	uint64_t pool_idle_timeout_ms;      /* default 1h: a wildcard rule's pool with no client retires after; 0 = never */

	uint64_t server_lifetime_ms;        /* default 1h: servers older (+-jitter) are closed when idle; 0 = never */
	uint64_t server_check_delay_ms;     /* default 30s: idle servers checked (SELECT 1) after this idle; 0 = never */
	uint64_t idle_transaction_timeout_ms; /* default 0 (off): close clients idle inside a transaction */
	uint64_t query_timeout_ms;          /* default 0 (off): cancel a query running longer (pools[] may override) */
	uint64_t transaction_timeout_ms;    /* default 0 (off): end a client whose transaction runs longer (pools[] too) */
	uint64_t client_idle_timeout_ms;    /* default 0 (off): close a client idle (no transaction) longer (pools[] too) */
	int reserve_pool_size;             /* default 0: servers a pool may open above its size for a queue ... */
	uint64_t reserve_pool_timeout_ms;  /* ... whose first client has waited this long (default 5s) */
	int max_prepared_statements;   /* default 200: per server, LRU; 0 = pass named statements through */

	char *server_reset_query;      /* default "DISCARD ALL"; "" = none */
	int server_reset_query_always; /* default false: server_reset_query in transaction/statement pooling too */
	int application_name_add_host; /* default false: " - addr:port" appended to a client's application_name */
	int disable_pqexec;            /* default false: pooled clients' simple Query messages refused (08P01) */
	int server_fast_close;         /* default false: a session's server to be closed closes when it is idle */
	char *server_check_query;      /* default "SELECT 1": the idle check (server_check_delay); "" = no query */
	char *auth_file;               /* NULL: none; PgBouncer userlist.txt format (auth/userlist.h) */
	char *hba_file;                /* NULL: none; pg_hba.conf syntax (auth/hba.h), before the rules */
	char *ident_file;              /* NULL: none; pg_ident.conf syntax (auth/ident.h), hba_file's map=NAME */
	char *auth_user;               /* NULL: no auth_query; role that runs auth_query for users not in auth_file */
	char *auth_query;              /* default PgBouncer's pg_shadow query; $1 is the user name */
	char *auth_dbname;             /* NULL: auth_query runs in the client's (server) database */
	char *ldap_options;            /* client_auth: ldap's options (PgBouncer's auth_ldap_options,
					* config/ldap_options.h); NULL: none */
	char *pam_service;             /* default "tusk": client_auth: pam's service, /etc/pam.d/<it> */
	int scram_iterations;          /* default 4096: SCRAM's rounds for a plaintext auth_file secret */
	uint64_t auth_cache_ttl_ms;    /* default 60s: how long auth_query answers are kept; 0 = not cached */
	char *unix_socket_dir;         /* NULL: no Unix socket; else DIR/.s.PGSQL.<port> per listen port */
	char *unix_socket_mode;        /* default "0777": octal, checked (config_unix_socket_mode) */
	char *unix_socket_group;       /* NULL: the process's group; else a group name that exists */
	uint32_t max_message_size;     /* default 64MB (size); bounds every typed message length */
	uint32_t buffer_size;          /* default 64kB (size), per-connection read buffer, 4kB..16MB */
	int max_client_connections;    /* default 10000 */
	int max_db_client_connections;   /* default 0 (none): clients per database name (pools[] may override) */
	int max_user_client_connections; /* default 0 (none): clients per user name (pools[] may override) */
	uint64_t shutdown_timeout_ms;  /* default 30s: SIGTERM waits this long for transactions to finish */
	/* TCP keepalive, TCP_USER_TIMEOUT and buffers of client and server sockets (PgBouncer's tcp_* keys;
	 * net_tcp_opts_of). 0: the system's default on client sockets, tusk's own on server
	 * sockets (probes after 30 s idle, 10 s apart, 3 of them; 30 s unacknowledged). */
	int tcp_keepalive;             /* default true: SO_KEEPALIVE on both */
	uint64_t tcp_keepidle_ms;      /* rounded up to whole seconds */
	uint64_t tcp_keepintvl_ms;     /* rounded up to whole seconds */
	int tcp_keepcnt;
	uint64_t tcp_user_timeout_ms;
	uint32_t tcp_socket_buffer;    /* default 0: the system's; else SO_SNDBUF and SO_RCVBUF, bytes */
	int listen_backlog;            /* default 1024: listen(2)'s backlog on every listener (the kernel caps it at somaxconn) */
	uint64_t tcp_defer_accept_ms;  /* default 0 (off): TCP_DEFER_ACCEPT on TCP listeners, whole seconds */
	int log_connections;           /* default true: a line per client login */
	int log_disconnections;        /* default true: a line per client logout */
	uint64_t stats_period_ms;      /* default 60s: a stats line per period; 0 = none */
	char *takeover_socket;         /* NULL: no online restart; else the Unix socket of the hand-over */
	bool listen_beside;            /* set by main (--beside), never by the file: listen where another process does */
	char *pidfile;                 /* NULL: none; else tusk's pid, written at start (read at start) */

	/* The result cache (docs/cache.md): process-wide defaults of the pool rules' keys. */
	int cache;                       /* enum config_cache; default off */
	uint64_t cache_ttl_ms;           /* default 10s: an entry's life, the backstop for writes around tusk */
	uint32_t cache_max_result;       /* default 1MB: replies above it are neither kept nor shared */
	uint32_t cache_memory;           /* default 64MB: bound on all kept results, process-wide */
	uint64_t cache_coalesce_wait_ms; /* default 5s: a waiter's deadline, then it runs the query itself */
	int cache_invalidation;          /* enum config_cache_inval; default tusk (read at start) */
	uint64_t cache_logical_poll_ms;  /* default 200ms: between polls of logical decoding */
	char *cache_logical_user;        /* NULL: the pool's server login; needs REPLICATION */
	char *cache_logical_password;
	int ncache_tables;
	char **cache_tables;             /* NULL: every table not excluded */
	int ncache_exclude_tables;
	char **cache_exclude_tables;

	struct config_admin admin;
	struct config_kv kv;
	struct config_redis redis;
};

/* Parse "250ms", "30s", "5m", "1h", "2d" or "0". 0, -EDOM for a bare number other than 0 (no
 * unit is assumed: PgBouncer's are seconds), -EINVAL, or -ERANGE when the result does not fit
 * in 64 bits. */
int config_parse_duration_ms(const char *s, uint64_t *out);
/* Parse "512", "64kB", "16MB", "1GB" (1024 multiples; "k"/"K"/"kB", "M"/"MB", "G"/"GB"). 0 or -EINVAL/-ERANGE. */
int config_parse_size(const char *s, uint64_t *out);

/* Load path. On success returns 0 and *out; otherwise writes every error to errout as
 * "FILE:LINE: KEY: message\n" and returns the (positive) number of errors. */
__attribute__((warn_unused_result))
int config_load(const char *path, FILE *errout, struct tusk_config **out);
void config_free(struct tusk_config *cfg);

/* Before a reload replaces cur with next: writes "FILE:0: KEY: ..." to errout (may be NULL)
 * for each key that only a restart may change (workers, log.format, log.target, buffer_size,
 * unix_socket_dir, takeover_socket, pidfile, ...) and differs, and returns how many. */
__attribute__((warn_unused_result))
int config_check_reload(const struct tusk_config *cur, const struct tusk_config *next, FILE *errout);
/* Give next the running values of those restart-only keys, so that a reload applies
 * everything else and leaves them as they are. 0 or -ENOMEM. */
__attribute__((warn_unused_result))
int config_keep_fixed(const struct tusk_config *cur, struct tusk_config *next);

/* The console's SET key = value: one top-level key that a reload may change and that holds
 * one scalar (an integer, a duration, a size or a choice), set in cfg from value as the file
 * would set it. 0, or -ENOENT (no such key), -EPERM (not settable) or -EINVAL (a bad value),
 * with the reason in err. Strings are left alone (a SET never allocates). */
__attribute__((warn_unused_result))
int config_set(struct tusk_config *cfg, const char *key, const char *value, char *err, size_t errcap);

/* First rule matching (database, user), or NULL. */
const struct config_pool_rule *config_match_pool(const struct tusk_config *cfg, const char *database,
						 const char *user);

const char *config_pool_mode_name(enum pool_mode mode);
/* "any", "read-write", ..., "read-write-split" (libpq's spelling). */
const char *config_target_name(enum config_target t);

/* The auth_user / auth_query that apply to rule (its own, else the top-level one); the user
 * is NULL when auth_query is off for the rule. */
const char *config_auth_user(const struct tusk_config *cfg, const struct config_pool_rule *rule);
const char *config_auth_query(const struct tusk_config *cfg, const struct config_pool_rule *rule);
/* The database auth_query runs in (PgBouncer's auth_dbname); NULL: the client's. */
const char *config_auth_dbname(const struct tusk_config *cfg, const struct config_pool_rule *rule);
/* The LDAP options of a rule with client_auth: ldap (its own, else the top-level ldap_options),
 * checked at load (config_ldap_parse); NULL: none. */
const char *config_ldap_options(const struct tusk_config *cfg, const struct config_pool_rule *rule);
/* The PAM service of client_auth: pam under rule (its own pam_service, else the top-level one;
 * rule NULL: the top-level one, the admin console's). */
const char *config_pam_service(const struct tusk_config *cfg, const struct config_pool_rule *rule);

/* A rule's query_timeout / client_idle_timeout when the rule does not set it. */
#define CONFIG_TIMEOUT_INHERIT UINT64_MAX
/* The query_timeout / client_idle_timeout / transaction_timeout / idle_transaction_timeout that
 * apply to rule's clients, the server_lifetime of its servers (its own, else the top-level one;
 * rule may be NULL): milliseconds, 0 = off. */
uint64_t config_query_timeout(const struct tusk_config *cfg, const struct config_pool_rule *rule);
int config_reserve_pool_size(const struct tusk_config *cfg, const struct config_pool_rule *rule);
uint64_t config_client_idle_timeout(const struct tusk_config *cfg, const struct config_pool_rule *rule);
uint64_t config_transaction_timeout(const struct tusk_config *cfg, const struct config_pool_rule *rule);
uint64_t config_idle_transaction_timeout(const struct tusk_config *cfg, const struct config_pool_rule *rule);
uint64_t config_server_lifetime(const struct tusk_config *cfg, const struct config_pool_rule *rule);
/* The max_db_client_connections / max_user_client_connections for rule's clients (its own,
 * else the top-level one; rule may be NULL): 0 = no limit. */
int config_max_db_client_connections(const struct tusk_config *cfg, const struct config_pool_rule *rule);
int config_max_user_client_connections(const struct tusk_config *cfg, const struct config_pool_rule *rule);

/* Whether user is listed in names (admin.users, admin.stats_users). */
bool config_name_listed(char *const *names, int n, const char *user);

/* Every scalar key of cfg, in table order, as text ("listen", "services" and "pools" are
 * summarised; secrets are shown as "********"). For the console's SHOW CONFIG. */
typedef void config_key_fn(void *arg, const char *key, const char *value, const char *def, bool reloadable);
void config_describe(const struct tusk_config *cfg, config_key_fn *fn, void *arg);

/* A tls_protocols value (PgBouncer's syntax: "tlsv1.2,tlsv1.3", "secure", "all", "!tlsv1.0")
 * as bits: 1 << 0 TLS 1.0 up to 1 << 3 TLS 1.3 (net/tls.h's TLS_PROTO_*). -1 when malformed
 * or when it allows no version. */
int config_tls_protocols(const char *val);

/* unix_socket_mode as a mode (the load checked it: octal, at most 0777). */
unsigned config_unix_socket_mode(const struct tusk_config *cfg);
/* unix_socket_group's gid into *gid ((unsigned)-1 when the key is unset): 0, or -ENOENT when
 * the group is gone since the load. Blocking (NSS): not on a worker loop. */
int config_unix_socket_group(const struct tusk_config *cfg, unsigned *gid);

/* Split "HOST:PORT" or "[V6]:PORT" into host (brackets dropped) and port. 0 or -EINVAL. */
int config_split_host_port(const char *s, char *host, size_t cap, int *port);

#endif
