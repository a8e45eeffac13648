/* PgBouncer 1.18's keys (and 1.25's TLS 1.3 suites), one line each: see pgbouncer_names.h. */
#include "config/pgbouncer_names.h"

#include <stddef.h>
#include <string.h>

#define SAME(n) { n, PGB_SAME, n, NULL }
#define TO(n, t) { n, PGB_RENAMED, t, NULL }
#define TO_NOTE(n, t, w) { n, PGB_RENAMED, t, w }
#define NOT_NEEDED(n, w) { n, PGB_NOT_NEEDED, NULL, w }
#define MISSING(n, w) { n, PGB_MISSING, NULL, w }

static const struct pgb_name names[] = {
	/* [pgbouncer]: general */
	TO("logfile", "log.target: file:PATH"),
	SAME("pidfile"),
	TO("listen_addr", "listen[].host (one entry per address)"),
	TO("listen_port", "listen[].port"),
	SAME("unix_socket_dir"),
	SAME("unix_socket_mode"),
	SAME("unix_socket_group"),
	NOT_NEEDED("user", "run tusk as that user (systemd User=, the package's tusk user)"),
	TO("pool_mode", "pool_defaults.mode (or pools[].mode)"),
	TO("max_client_conn", "max_client_connections"),
	TO("default_pool_size", "pool_defaults.size (or pools[].size)"),
	TO("min_pool_size", "pool_defaults.min_size (or pools[].min_size)"),
	SAME("reserve_pool_size"),
	SAME("reserve_pool_timeout"),
	TO("max_db_connections", "pool_defaults.max_db_connections (or pools[].max_db_connections)"),
	TO("max_user_connections", "pool_defaults.max_user_connections (or pools[].max_user_connections)"),
	/* PgBouncer 1.24 */
	SAME("max_db_client_connections"),
	SAME("max_user_client_connections"),
	NOT_NEEDED("server_round_robin", "new servers are spread over a service's hosts by weight; idle ones are reused"),
	NOT_NEEDED("ignore_startup_parameters", "tusk passes every startup parameter on (extra_float_digits, search_path, ...)"),
	NOT_NEEDED("track_extra_parameters", "tusk tracks every parameter a client sets and carries it between servers"),
	SAME("disable_pqexec"),
	SAME("application_name_add_host"),
	NOT_NEEDED("conffile", "tusk -c FILE"),
	NOT_NEEDED("service_name", "Windows only"),
	NOT_NEEDED("job_name", "Windows only"),
	SAME("stats_period"),
	NOT_NEEDED("peer_id", "online restart is tusk --takeover (takeover_socket), not peering"),
	NOT_NEEDED("so_reuseport", "one process serves every worker thread from the same listeners"),
	/* authentication */
	TO_NOTE("auth_type", "pool_defaults.client_auth (or pools[].client_auth, admin.client_auth)",
		"hba: hba_file; any: trust (every name accepted); plain: password; pam: pam (pam_service: pgbouncer)"),
	TO("auth_hba_file", "hba_file"),
	TO("auth_ident_file", "ident_file"), /* PgBouncer 1.25: hba_file's map=NAME */
	TO("auth_ldap_options", "ldap_options (or pools[].ldap_options)"), /* PgBouncer 1.25: auth_type = ldap */
	SAME("auth_file"),
	SAME("auth_user"),
	SAME("auth_query"),
	SAME("auth_dbname"),
	SAME("scram_iterations"),
	/* logging */
	TO("syslog", "log.target: syslog"),
	TO("syslog_ident", "log.syslog_ident"),
	TO("syslog_facility", "log.syslog_facility"),
	SAME("log_connections"),
	SAME("log_disconnections"),
	NOT_NEEDED("log_pooler_errors", "errors tusk sends a client are always logged with its id"),
	TO("log_stats", "stats_period (0: no stats line)"),
	TO("verbose", "log.level: debug"),
	/* console access */
	TO("admin_users", "admin.users"),
	TO("stats_users", "admin.stats_users"),
	/* connection sanity */
	SAME("server_reset_query"),
	SAME("server_reset_query_always"),
	SAME("server_check_query"),
	SAME("server_check_delay"),
	SAME("server_fast_close"),
	SAME("server_lifetime"),
	SAME("server_idle_timeout"),
	SAME("server_connect_timeout"),
	NOT_NEEDED("server_login_retry", "a failing backend is backed off and retried by itself"),
	SAME("client_login_timeout"),
	TO("autodb_idle_timeout", "pool_idle_timeout"),
	TO("dns_max_ttl", "services.NAME.dns_max_ttl"),
	TO("dns_nxdomain_ttl", "services.NAME.dns_nxdomain_ttl"),
	NOT_NEEDED("dns_zone_check_period", "names are re-resolved on their TTL"),
	TO("resolv_conf", "services.NAME.nameservers"),
	/* TLS */
	TO("client_tls_sslmode", "listen[].tls"),
	TO("client_tls_key_file", "listen[].tls_key_file"),
	TO("client_tls_cert_file", "listen[].tls_cert_file"),
	TO("client_tls_ca_file", "listen[].tls_ca_file"),
	TO_NOTE("client_tls_protocols", "listen[].tls_protocols",
		"same syntax and default (secure); legacy is taken as all, as PgBouncer's documentation says "
		"(its parser refuses it)"),
	TO("client_tls_ciphers", "listen[].tls_ciphers"),
	TO_NOTE("client_tls13_ciphers", "listen[].tls13_ciphers", "PgBouncer 1.25; empty: OpenSSL's suites"),
	TO_NOTE("client_tls_ecdhcurve", "listen[].tls_ecdhcurve",
		"auto or a colon-separated list of groups (PgBouncer takes one curve); PgBouncer's none is not "
		"taken (with OpenSSL 1.1+ it changed nothing: the importer leaves it out)"),
	NOT_NEEDED("client_tls_dheparams",
		   "no finite-field DHE: tusk loads no DH parameters, so ECDHE (or TLS 1.3) is always the key "
		   "exchange, which every TLS client of the last decade offers"),
	TO("server_tls_sslmode", "services.NAME.tls"),
	TO("server_tls_ca_file", "services.NAME.tls_ca_file"),
	TO("server_tls_key_file", "services.NAME.tls_key_file"),
	TO("server_tls_cert_file", "services.NAME.tls_cert_file"),
	TO_NOTE("server_tls_protocols", "services.NAME.tls_protocols", "same syntax and default (secure)"),
	TO_NOTE("server_tls_ciphers", "services.NAME.tls_ciphers",
		"OpenSSL's cipher list; PgBouncer's shortcuts (default, secure, fast, normal) are OpenSSL's "
		"default: the importer leaves them out"),
	TO_NOTE("server_tls13_ciphers", "services.NAME.tls13_ciphers", "PgBouncer 1.25; empty: OpenSSL's suites"),
	/* dangerous timeouts */
	SAME("query_timeout"),
	TO("query_wait_timeout", "pool_wait_timeout"),
	SAME("query_wait_notify"), /* PgBouncer 1.25 */
	NOT_NEEDED("cancel_wait_timeout", "a CancelRequest never waits for a pool's server: tusk closes its connection at once "
		   "and cancels on a connection of its own to the backend, given up after 5 s"), /* PgBouncer 1.25 */
	SAME("client_idle_timeout"),
	SAME("idle_transaction_timeout"),
	SAME("transaction_timeout"),
	NOT_NEEDED("suspend_timeout", "online restart hands the listeners over (tusk --takeover)"),
	/* low level */
	TO("pkt_buf", "buffer_size"),
	TO("max_packet_size", "max_message_size"),
	SAME("listen_backlog"),
	NOT_NEEDED("sbuf_loopcnt", "each worker loop is fair by design"),
	SAME("tcp_defer_accept"),
	SAME("tcp_socket_buffer"),
	SAME("tcp_keepalive"),
	SAME("tcp_keepcnt"),
	SAME("tcp_keepidle"),
	SAME("tcp_keepintvl"),
	SAME("tcp_user_timeout"),
	SAME("max_prepared_statements"),
	/* [databases] options */
	TO("dbname", "pools[].server_database"),
	TO("host", "services.NAME.hosts"),
	TO("port", "services.NAME.hosts (host:port)"),
	TO("password", "pools[].server_password"),
	TO("pool_size", "pools[].size"),
	TO("reserve_pool", "pools[].reserve_pool_size"),
	TO("connect_query", "pools[].connect_query"),
	TO("client_encoding", "pools[].client_encoding"),
	TO("datestyle", "pools[].datestyle"),
	TO("timezone", "pools[].timezone"),
	TO("application_name", "pools[].application_name"),
	TO("load_balance_hosts", "services.NAME.load_balance_hosts"),
	{ NULL, PGB_SAME, NULL, NULL },
};

const struct pgb_name *pgb_name_find(const char *name)
{
	for (const struct pgb_name *n = names; n->name; n++)
		if (strcmp(n->name, name) == 0)
			return n;
	return NULL;
}
