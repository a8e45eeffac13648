/* tusk import-pgbouncer: a pgbouncer.ini (and userlist.txt) turned into an equivalent
 * tusk.yaml, and every setting that could not be carried listed with the reason.
 * Runs once, offline: plain stdio, fixed bounds, nothing on any hot path. */
#include "config/import_pgbouncer.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/pgbouncer_names.h"

#define IMP_MAX_ENTRIES 512 /* keys of one section */
#define IMP_MAX_OPTS 32     /* key=value pairs of one [databases] / [users] entry */
#define IMP_LINE 4096

struct imp_kv {
	char *key;
	char *value;
	int line;
};

struct imp_section {
	int n;
	struct imp_kv kv[IMP_MAX_ENTRIES];
};

struct imp_opts {
	int n;
	char key[IMP_MAX_OPTS][64];
	char value[IMP_MAX_OPTS][512];
};

struct importer {
	const char *ini_path;
	struct imp_section general, databases, users;
	FILE *out;     /* the tusk.yaml */
	FILE *report;  /* "not carried" lines */
	int ncarried, nskipped;
};

static char *trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

static void skip(struct importer *im, const char *section, const char *key, const char *value, int line,
		 const char *why)
{
	fprintf(im->report, "%s:%d: [%s] %s = %s: not carried: %s\n", im->ini_path, line, section, key, value, why);
	im->nskipped++;
}

/* Read the ini into its three sections. 0 or -errno (reported). */
static int read_ini(struct importer *im)
{
	FILE *f = fopen(im->ini_path, "r");
	char buf[IMP_LINE];
	struct imp_section *cur = NULL;
	const char *cur_name = "";
	int line = 0;

	if (!f) {
		fprintf(stderr, "tusk import-pgbouncer: %s: %s\n", im->ini_path, strerror(errno));
		return -errno;
	}
	while (fgets(buf, sizeof buf, f)) {
		char *s = trim(buf), *eq;
		line++;
		if (!*s || *s == ';' || *s == '#')
			continue;
		if (*s == '[') {
			char *end = strchr(s, ']');
			if (end)
				*end = '\0';
			cur_name = s + 1;
			cur = strcasecmp(s + 1, "pgbouncer") == 0 ? &im->general
			      : strcasecmp(s + 1, "databases") == 0 ? &im->databases
			      : strcasecmp(s + 1, "users") == 0 ? &im->users
								: NULL;
			if (!cur)
				skip(im, s + 1, "(section)", "...", line, "tusk has no such section ([peers]: online restart is tusk --takeover)");
			continue;
		}
		if (strncmp(s, "%include", 8) == 0) {
			skip(im, cur_name, "%include", trim(s + 8), line, "import the included file on its own and merge");
			continue;
		}
		eq = strchr(s, '=');
		if (!cur || !eq || cur->n == IMP_MAX_ENTRIES) {
			if (cur)
				skip(im, cur_name, s, "", line, eq ? "too many entries in the section" : "not a key = value line");
			continue;
		}
		*eq = '\0';
		cur->kv[cur->n].key = strdup(trim(s));
		cur->kv[cur->n].value = strdup(trim(eq + 1));
		cur->kv[cur->n].line = line;
		if (!cur->kv[cur->n].key || !cur->kv[cur->n].value) {
			fclose(f);
			return -ENOMEM;
		}
		cur->n++;
	}
	fclose(f);
	return 0;
}

static const struct imp_kv *get(const struct imp_section *sec, const char *key)
{
	const struct imp_kv *found = NULL;

	for (int i = 0; i < sec->n; i++)
		if (strcasecmp(sec->kv[i].key, key) == 0)
			found = &sec->kv[i]; /* the last one wins, as in PgBouncer */
	return found;
}

/* "host=a port=5 dbname='x y'" into opts. 0, or -EINVAL for a malformed string. */
static int parse_connstr(const char *s, struct imp_opts *o)
{
	o->n = 0;
	while (*s) {
		size_t k = 0, v = 0;
		while (isspace((unsigned char)*s))
			s++;
		if (!*s)
			break;
		if (o->n == IMP_MAX_OPTS)
			return -EINVAL;
		while (*s && *s != '=' && !isspace((unsigned char)*s) && k < sizeof o->key[0] - 1)
			o->key[o->n][k++] = *s++;
		o->key[o->n][k] = '\0';
		while (isspace((unsigned char)*s))
			s++;
		if (*s++ != '=')
			return -EINVAL;
		while (isspace((unsigned char)*s))
			s++;
		if (*s == '\'') {
			/* PgBouncer's quoting (cstr_unquote_value): '' is a quote, a backslash is itself */
			s++;
			while (*s && (*s != '\'' || s[1] == '\'') && v < sizeof o->value[0] - 1) {
				if (*s == '\'')
					s++;
				o->value[o->n][v++] = *s++;
			}
			if (*s != '\'')
				return -EINVAL;
			s++;
		} else {
			while (*s && !isspace((unsigned char)*s) && v < sizeof o->value[0] - 1)
				o->value[o->n][v++] = *s++;
		}
		o->value[o->n][v] = '\0';
		o->n++;
	}
	return 0;
}

static const char *opt(const struct imp_opts *o, const char *key)
{
	for (int i = 0; i < o->n; i++)
		if (strcasecmp(o->key[i], key) == 0)
			return o->value[i];
	return NULL;
}

/* A YAML double-quoted scalar. */
static void put_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fputc('\\', f);
		fputc(*s, f);
	}
	fputc('"', f);
}

/* PgBouncer's seconds (possibly fractional) as a tusk duration. false: not a number. */
static bool seconds_to_duration(const char *v, char *out, size_t cap)
{
	char *end;
	double s = strtod(v, &end);

	if (end == v || *trim(end) || s < 0 || s > 1e9)
		return false;
	if (s == 0)
		snprintf(out, cap, "0");
	else if (s == (double)(long long)s)
		snprintf(out, cap, "%llds", (long long)s);
	else
		snprintf(out, cap, "%lldms", (long long)(s * 1000 + 0.5));
	return true;
}

static bool is_true(const char *v)
{
	return strcmp(v, "1") == 0 || strcasecmp(v, "yes") == 0 || strcasecmp(v, "on") == 0 || strcasecmp(v, "true") == 0;
}

/* auth_type to client_auth; NULL when tusk has no such method. */
static const char *client_auth_for(const char *auth_type, const char **note)
{
	*note = NULL;
	if (strcmp(auth_type, "trust") == 0 || strcmp(auth_type, "md5") == 0 || strcmp(auth_type, "cert") == 0 ||
	    strcmp(auth_type, "scram-sha-256") == 0 || strcmp(auth_type, "peer") == 0 || strcmp(auth_type, "ldap") == 0 ||
	    strcmp(auth_type, "pam") == 0) /* pam: with pam_service: pgbouncer (put_general) */
		return auth_type;
	if (strcmp(auth_type, "plain") == 0)
		return "password";
	if (strcmp(auth_type, "any") == 0) {
		*note = "any became trust: tusk checks the user name against the rules, it does not ignore it";
		return "trust";
	}
	return NULL;
}

/* [pgbouncer] keys the importer writes itself (or reads for other keys). */
static const char *const handled[] = {
	"listen_addr", "listen_port", "unix_socket_dir", "logfile", "syslog", "verbose", "pidfile", "pool_mode",
	"default_pool_size", "min_pool_size", "max_db_connections", "max_user_connections", "auth_type",
	"auth_hba_file", "auth_ident_file", "auth_ldap_options", "auth_file", "auth_user", "auth_query", "admin_users", "stats_users", "max_client_conn",
	"server_reset_query", "server_check_query", "log_connections", "log_disconnections", "pkt_buf", "max_packet_size",
	"max_prepared_statements", "client_tls_sslmode", "client_tls_key_file", "client_tls_cert_file",
	"client_tls_ca_file", "client_tls_ciphers", "client_tls13_ciphers", "client_tls_protocols",
	"client_tls_ecdhcurve", "server_tls_sslmode", "server_tls_protocols", "server_tls_ciphers", "server_tls13_ciphers", "server_tls_ca_file", "server_tls_key_file",
	"server_tls_cert_file", "server_lifetime", "server_idle_timeout", "server_connect_timeout",
	"client_login_timeout", "idle_transaction_timeout", "query_timeout", "client_idle_timeout", "server_check_delay", "stats_period", "autodb_idle_timeout",
	"query_wait_timeout", "reserve_pool_size", "reserve_pool_timeout", "log_stats", "ignore_startup_parameters", "user",
	"tcp_keepalive", "tcp_keepcnt", "tcp_keepidle", "tcp_keepintvl", "tcp_user_timeout", "unix_socket_mode",
	"unix_socket_group", "tcp_defer_accept", "tcp_socket_buffer",
	"listen_backlog", "syslog_ident", "syslog_facility",
	"server_reset_query_always", "server_fast_close", "disable_pqexec", "auth_dbname", "application_name_add_host", "scram_iterations",
	"transaction_timeout",
	"max_db_client_connections", "max_user_client_connections", "query_wait_notify",
};

static bool is_handled(const char *key)
{
	for (size_t i = 0; i < sizeof handled / sizeof handled[0]; i++)
		if (strcasecmp(handled[i], key) == 0)
			return true;
	return false;
}

/* Durations: PgBouncer's key, tusk's key. */
static const char *const durations[][2] = {
	{ "server_lifetime", "server_lifetime" },
	{ "server_idle_timeout", "server_idle_timeout" },
	{ "server_connect_timeout", "server_connect_timeout" },
	{ "client_login_timeout", "client_login_timeout" },
	{ "idle_transaction_timeout", "idle_transaction_timeout" },
	{ "query_timeout", "query_timeout" },
	{ "transaction_timeout", "transaction_timeout" },
	{ "client_idle_timeout", "client_idle_timeout" },
	{ "server_check_delay", "server_check_delay" },
	{ "stats_period", "stats_period" },
	{ "autodb_idle_timeout", "pool_idle_timeout" },
	{ "query_wait_timeout", "pool_wait_timeout" },
	{ "query_wait_notify", "query_wait_notify" },
	{ "reserve_pool_timeout", "reserve_pool_timeout" },
	{ "tcp_keepidle", "tcp_keepidle" },
	{ "tcp_keepintvl", "tcp_keepintvl" },
};

static void put_durations(struct importer *im)
{
	for (size_t i = 0; i < sizeof durations / sizeof durations[0]; i++) {
		const struct imp_kv *kv = get(&im->general, durations[i][0]);
		char d[64];
		if (!kv)
			continue;
		if (!seconds_to_duration(kv->value, d, sizeof d)) {
			skip(im, "pgbouncer", kv->key, kv->value, kv->line, "not a number of seconds");
			continue;
		}
		if (strcmp(d, "0") == 0 && strcmp(durations[i][1], "pool_wait_timeout") == 0) {
			snprintf(d, sizeof d, "1d"); /* PgBouncer's 0 is "wait forever"; tusk's longest wait */
			fprintf(im->report, "%s:%d: [pgbouncer] query_wait_timeout = 0 (forever) became pool_wait_timeout: 1d\n",
				im->ini_path, kv->line);
		}
		if (strcmp(d, "0") == 0 && strcmp(durations[i][1], "server_lifetime") == 0)
			fprintf(im->report, "%s:%d: [pgbouncer] server_lifetime = 0 used a server once; in tusk 0 means never closed for age\n",
				im->ini_path, kv->line);
		fprintf(im->out, "%s: %s   # PgBouncer: %s = %s (seconds)\n", durations[i][1], d, kv->key, kv->value);
		im->ncarried++;
	}
}

static void put_plain(struct importer *im, const char *pgb, const char *tusk, bool quote)
{
	const struct imp_kv *kv = get(&im->general, pgb);
	if (!kv)
		return;
	fprintf(im->out, "%s: ", tusk);
	if (quote)
		put_str(im->out, kv->value);
	else
		fputs(kv->value, im->out);
	fputc('\n', im->out);
	im->ncarried++;
}

static void put_bool(struct importer *im, const char *key)
{
	const struct imp_kv *kv = get(&im->general, key);
	if (kv) {
		fprintf(im->out, "%s: %s\n", key, is_true(kv->value) ? "true" : "false");
		im->ncarried++;
	}
}

/* "a, b" as a YAML flow sequence. */
static void put_list(FILE *f, const char *v)
{
	char copy[IMP_LINE], *save = NULL;
	bool first = true;

	snprintf(copy, sizeof copy, "%s", v);
	fputc('[', f);
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		fputs(first ? "" : ", ", f);
		put_str(f, trim(t));
		first = false;
	}
	fputc(']', f);
}

static const char *listen_tls(const char *mode)
{
	if (strcmp(mode, "prefer") == 0)
		return "allow";
	return mode;
}

/* The TLS keys of a listener or a service, PgBouncer's name then tusk's, where the ini sets
 * them; values that mean OpenSSL's default (tusk's too) are left out: PgBouncer's cipher
 * shortcuts, an empty TLS 1.3 list, curve none (with OpenSSL 1.1+ it kept OpenSSL's groups). */
static void put_tls_keys(struct importer *im, const char *const keys[][2], size_t n)
{
	static const char *const openssl_default[] = { "default", "secure", "fast", "normal", "compat", "legacy" };

	for (size_t i = 0; i < n; i++) {
		const struct imp_kv *kv = get(&im->general, keys[i][0]);
		bool dflt = !kv || !kv->value[0];
		if (!dflt && strcmp(keys[i][1], "tls_ciphers") == 0)
			for (size_t k = 0; k < sizeof openssl_default / sizeof openssl_default[0]; k++)
				dflt = dflt || strcasecmp(kv->value, openssl_default[k]) == 0;
		if (!dflt && strcmp(keys[i][1], "tls_ecdhcurve") == 0)
			dflt = strcasecmp(kv->value, "none") == 0;
		if (dflt)
			continue;
		fprintf(im->out, "    %s: ", keys[i][1]);
		put_str(im->out, kv->value);
		fputc('\n', im->out);
	}
}

static void put_listen(struct importer *im)
{
	const struct imp_kv *addr = get(&im->general, "listen_addr"), *port = get(&im->general, "listen_port");
	const struct imp_kv *tls = get(&im->general, "client_tls_sslmode");
	const struct imp_kv *curve = get(&im->general, "client_tls_ecdhcurve");
	char copy[IMP_LINE], *save = NULL;

	snprintf(copy, sizeof copy, "%s", addr ? addr->value : "127.0.0.1");
	if (!addr)
		fprintf(im->report, "%s: [pgbouncer] listen_addr is not set: PgBouncer then listens only on its Unix "
			"socket; tusk listens on 127.0.0.1\n", im->ini_path);
	fprintf(im->out, "listen:\n");
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		fprintf(im->out, "  - host: ");
		put_str(im->out, trim(t));
		fprintf(im->out, "\n    port: %s\n", port ? port->value : "6432");
		if (tls && strcmp(tls->value, "disable") != 0) {
			static const char *const keys[][2] = {
				{ "client_tls_cert_file", "tls_cert_file" }, { "client_tls_key_file", "tls_key_file" },
				{ "client_tls_ca_file", "tls_ca_file" },     { "client_tls_ciphers", "tls_ciphers" },
				{ "client_tls13_ciphers", "tls13_ciphers" }, { "client_tls_protocols", "tls_protocols" },
				{ "client_tls_ecdhcurve", "tls_ecdhcurve" },
			};
			fprintf(im->out, "    tls: %s\n", listen_tls(tls->value));
			put_tls_keys(im, keys, sizeof keys / sizeof keys[0]);
		}
	}
	if (tls && strcmp(tls->value, "disable") != 0 && curve && strcasecmp(curve->value, "none") == 0)
		fprintf(im->report, "%s:%d: [pgbouncer] client_tls_ecdhcurve = none left out: with OpenSSL 1.1 and later "
			"PgBouncer then keeps OpenSSL's groups, which is tusk's default (auto)\n", im->ini_path, curve->line);
	im->ncarried++;
}

/* One service per distinct host list and port of [databases]. */
#define IMP_MAX_SERVICES 64
struct imp_service {
	char hosts[512];
	char port[16];
	bool in_order; /* load_balance_hosts=disable */
};

static int service_for(struct imp_service *svc, int *nsvc, const char *hosts, const char *port, bool in_order)
{
	for (int i = 0; i < *nsvc; i++)
		if (strcmp(svc[i].hosts, hosts) == 0 && strcmp(svc[i].port, port) == 0 && svc[i].in_order == in_order)
			return i;
	if (*nsvc == IMP_MAX_SERVICES)
		return -1;
	snprintf(svc[*nsvc].hosts, sizeof svc[0].hosts, "%s", hosts);
	snprintf(svc[*nsvc].port, sizeof svc[0].port, "%s", port);
	svc[*nsvc].in_order = in_order;
	return (*nsvc)++;
}

static const char *server_tls(const char *mode, struct importer *im, int line)
{
	if (strcmp(mode, "allow") == 0) {
		fprintf(im->report, "%s:%d: [pgbouncer] server_tls_sslmode = allow became prefer (tusk has no allow)\n",
			im->ini_path, line);
		return "prefer";
	}
	return mode;
}

static void put_services(struct importer *im, struct imp_service *svc, int nsvc)
{
	const struct imp_kv *tls = get(&im->general, "server_tls_sslmode");

	fprintf(im->out, "services:\n");
	for (int i = 0; i < nsvc; i++) {
		char copy[512], *save = NULL;
		bool first = true;

		fprintf(im->out, "  s%d:\n    hosts: [", i + 1);
		size_t hl = strnlen(svc[i].hosts, sizeof copy - 1);
		memcpy(copy, svc[i].hosts, hl);
		copy[hl] = '\0';
		for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
			char hp[600];
			snprintf(hp, sizeof hp, strchr(trim(t), ':') ? "[%s]:%s" : "%s:%s", trim(t), svc[i].port);
			fputs(first ? "" : ", ", im->out);
			put_str(im->out, hp);
			first = false;
		}
		fprintf(im->out, "]\n");
		if (svc[i].in_order)
			fprintf(im->out, "    load_balance_hosts: disable\n");
		if (tls && strcmp(tls->value, "disable") != 0) {
			static const char *const keys[][2] = {
				{ "server_tls_ca_file", "tls_ca_file" },     { "server_tls_cert_file", "tls_cert_file" },
				{ "server_tls_key_file", "tls_key_file" },   { "server_tls_protocols", "tls_protocols" },
				{ "server_tls_ciphers", "tls_ciphers" },     { "server_tls13_ciphers", "tls13_ciphers" },
			};
			fprintf(im->out, "    tls: %s\n", server_tls(tls->value, im, tls->line));
			put_tls_keys(im, keys, sizeof keys / sizeof keys[0]);
		}
	}
}

static void put_opt_str(FILE *f, const struct imp_opts *o, const char *key, const char *tusk)
{
	const char *v = opt(o, key);
	if (v) {
		fprintf(f, "    %s: ", tusk);
		put_str(f, v);
		fputc('\n', f);
	}
}

/* The [users] timeouts (PgBouncer 1.25's), which win over the [pgbouncer] ones. */
static const char *const user_timeouts[] = { "query_timeout", "idle_transaction_timeout", "transaction_timeout",
					     "client_idle_timeout" };

/* A rule's duration from an entry's seconds, whole as PgBouncer reads them (atoi); it reads 0
 * there as "the [pgbouncer] value", which the rule inherits when absent. */
static void put_rule_seconds(struct importer *im, const struct imp_opts *o, const char *key)
{
	const char *v = opt(o, key);
	if (v && atoi(v) > 0)
		fprintf(im->out, "    %s: %ds\n", key, atoi(v));
}

/* One pool rule: database name (or "*"), user (or "*"), the [databases] entry's options and
 * the [users] entry's (which win, as in PgBouncer). */
static void put_rule(struct importer *im, const char *db, const char *user, int service, const struct imp_opts *d,
		     const struct imp_opts *u)
{
	const char *v;

	fprintf(im->out, "  - database: ");
	put_str(im->out, db);
	fprintf(im->out, "\n    user: ");
	put_str(im->out, user);
	fprintf(im->out, "\n    service: s%d\n", service + 1);
	if ((v = opt(d, "dbname")) && strcmp(v, db) != 0) {
		fprintf(im->out, "    server_database: ");
		put_str(im->out, v);
		fputc('\n', im->out);
	}
	put_opt_str(im->out, d, "user", "server_user");
	put_opt_str(im->out, d, "password", "server_password");
	put_opt_str(im->out, d, "auth_user", "auth_user");
	put_opt_str(im->out, d, "auth_dbname", "auth_dbname");
	put_opt_str(im->out, d, "auth_query", "auth_query");
	if ((v = u ? opt(u, "pool_mode") : NULL) || (v = opt(d, "pool_mode")))
		fprintf(im->out, "    mode: %s\n", v);
	if ((v = u ? opt(u, "pool_size") : NULL) || (v = opt(d, "pool_size")))
		fprintf(im->out, "    size: %s\n", v);
	if ((v = opt(d, "min_pool_size")))
		fprintf(im->out, "    min_size: %s\n", v);
	if ((v = opt(d, "max_db_connections")))
		fprintf(im->out, "    max_db_connections: %s\n", v);
	if ((v = u ? opt(u, "reserve_pool_size") : NULL) || (v = opt(d, "reserve_pool")) ||
	    (v = opt(d, "reserve_pool_size")))
		fprintf(im->out, "    reserve_pool_size: %s\n", v);
	put_rule_seconds(im, d, "server_lifetime");
	for (size_t i = 0; u && i < sizeof user_timeouts / sizeof user_timeouts[0]; i++)
		put_rule_seconds(im, u, user_timeouts[i]);
	if (u && (v = opt(u, "max_user_connections")))
		fprintf(im->out, "    max_user_connections: %s\n", v);
	/* PgBouncer reads 0 here as "the [pgbouncer] value", which the rule inherits when absent. */
	if ((v = opt(d, "max_db_client_connections")) && atoi(v) > 0)
		fprintf(im->out, "    max_db_client_connections: %d\n", atoi(v));
	if (u && (v = opt(u, "max_user_client_connections")) && atoi(v) > 0)
		fprintf(im->out, "    max_user_client_connections: %d\n", atoi(v));
	put_opt_str(im->out, d, "connect_query", "connect_query");
	put_opt_str(im->out, d, "client_encoding", "client_encoding");
	put_opt_str(im->out, d, "datestyle", "datestyle");
	put_opt_str(im->out, d, "timezone", "timezone");
	put_opt_str(im->out, d, "application_name", "application_name");
}

static const char *const db_opts_carried[] = { "host", "port", "dbname", "user", "password", "auth_user", "auth_dbname", "auth_query", "pool_mode",
					       "pool_size", "min_pool_size", "max_db_connections", "reserve_pool",
					       "reserve_pool_size", "connect_query", "client_encoding", "datestyle",
					       "timezone", "application_name", "max_db_client_connections",
					       "load_balance_hosts", "server_lifetime" };

static void check_db_opts(struct importer *im, const struct imp_kv *kv, const struct imp_opts *o, const char *sec)
{
	for (int i = 0; i < o->n; i++) {
		bool carried = false;
		for (size_t k = 0; k < sizeof db_opts_carried / sizeof db_opts_carried[0]; k++)
			carried = carried || strcasecmp(db_opts_carried[k], o->key[i]) == 0;
		if (strcmp(sec, "users") == 0) {
			static const char *const user_opts[] = { "pool_mode", "pool_size", "reserve_pool_size",
								  "max_user_connections", "max_user_client_connections" };
			carried = false;
			for (size_t k = 0; k < sizeof user_opts / sizeof user_opts[0]; k++)
				carried = carried || strcasecmp(user_opts[k], o->key[i]) == 0;
			for (size_t k = 0; k < sizeof user_timeouts / sizeof user_timeouts[0]; k++)
				carried = carried || strcasecmp(user_timeouts[k], o->key[i]) == 0;
		}
		if (carried)
			continue;
		const struct pgb_name *n = pgb_name_find(o->key[i]);
		char what[700];
		snprintf(what, sizeof what, "%s (%s=%s)", kv->key, o->key[i], o->value[i]);
		skip(im, sec, what, kv->value, kv->line, n && n->note ? n->note : "not a PgBouncer option tusk knows");
	}
}

static int put_pools(struct importer *im)
{
	struct imp_service svc[IMP_MAX_SERVICES];
	int nsvc = 0, sid[IMP_MAX_ENTRIES];
	static struct imp_opts dopt[IMP_MAX_ENTRIES], uopt[IMP_MAX_ENTRIES];
	int star = -1;

	for (int i = 0; i < im->databases.n; i++) {
		const struct imp_kv *kv = &im->databases.kv[i];
		const char *host, *port;
		if (parse_connstr(kv->value, &dopt[i]) < 0) {
			skip(im, "databases", kv->key, kv->value, kv->line, "malformed connection string");
			sid[i] = -1;
			continue;
		}
		check_db_opts(im, kv, &dopt[i], "databases");
		host = opt(&dopt[i], "host");
		port = opt(&dopt[i], "port");
		if (!host || host[0] == '/') {
			fprintf(im->report, "%s:%d: [databases] %s: %s: tusk connects over TCP to 127.0.0.1 instead\n",
				im->ini_path, kv->line, kv->key,
				host ? "a Unix socket directory as host" : "no host (PgBouncer uses the Unix socket)");
			host = "127.0.0.1";
		}
		const char *lb = opt(&dopt[i], "load_balance_hosts");
		sid[i] = service_for(svc, &nsvc, host, port ? port : "5432", lb && strcmp(lb, "disable") == 0);
		if (strcmp(kv->key, "*") == 0)
			star = i;
	}
	for (int j = 0; j < im->users.n; j++) {
		if (parse_connstr(im->users.kv[j].value, &uopt[j]) < 0)
			uopt[j].n = 0;
		check_db_opts(im, &im->users.kv[j], &uopt[j], "users");
	}
	if (nsvc == 0) {
		fprintf(stderr, "tusk import-pgbouncer: %s: no usable [databases] entry\n", im->ini_path);
		return -EINVAL;
	}
	put_services(im, svc, nsvc);
	fprintf(im->out, "pools:\n");
	/* Named databases first, "*" last: tusk's rules are first match. Per database, the
	 * [users] overrides come before its catch-all user. */
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < im->databases.n; i++) {
			if (sid[i] < 0 || (pass == 0) == (i == star))
				continue;
			for (int j = 0; j < im->users.n; j++)
				put_rule(im, im->databases.kv[i].key, im->users.kv[j].key, sid[i], &dopt[i], &uopt[j]);
			put_rule(im, im->databases.kv[i].key, "*", sid[i], &dopt[i], NULL);
			im->ncarried++;
		}
	}
	return 0;
}

static void put_pool_defaults(struct importer *im)
{
	const struct imp_kv *kv;
	const char *note = NULL;

	fprintf(im->out, "pool_defaults:\n");
	if ((kv = get(&im->general, "pool_mode")))
		fprintf(im->out, "  mode: %s\n", kv->value);
	kv = get(&im->general, "default_pool_size");
	fprintf(im->out, "  size: %s\n", kv ? kv->value : "20");
	if ((kv = get(&im->general, "min_pool_size")))
		fprintf(im->out, "  min_size: %s\n", kv->value);
	if ((kv = get(&im->general, "max_db_connections")))
		fprintf(im->out, "  max_db_connections: %s\n", kv->value);
	if ((kv = get(&im->general, "max_user_connections")))
		fprintf(im->out, "  max_user_connections: %s\n", kv->value);
	/* PgBouncer 1.18's auth_type defaults to md5, tusk's client_auth to trust: spell it out. */
	kv = get(&im->general, "auth_type");
	const char *type = kv ? kv->value : "md5";
	const char *ca = strcmp(type, "hba") == 0 ? "md5" : client_auth_for(type, &note);
	if (!ca) {
		skip(im, "pgbouncer", "auth_type", type, kv ? kv->line : 0, "tusk has no such method: reject is written");
		ca = "reject";
	} else if (note) {
		fprintf(im->report, "%s:%d: [pgbouncer] auth_type = %s: %s\n", im->ini_path, kv ? kv->line : 0, type, note);
	}
	fprintf(im->out, "  client_auth: %s%s\n", ca, kv ? "" : "   # PgBouncer's default auth_type");
	im->ncarried++;
}

static void put_admin(struct importer *im)
{
	const struct imp_kv *au = get(&im->general, "admin_users"), *su = get(&im->general, "stats_users");
	const struct imp_kv *type = get(&im->general, "auth_type");
	const char *note, *ca = client_auth_for(type ? type->value : "md5", &note);

	if (!au && !su)
		return;
	fprintf(im->out, "admin:\n");
	if (au) {
		fprintf(im->out, "  users: ");
		put_list(im->out, au->value);
		fputc('\n', im->out);
	}
	if (su) {
		fprintf(im->out, "  stats_users: ");
		put_list(im->out, su->value);
		fputc('\n', im->out);
	}
	if (ca && strcmp(ca, "ldap") == 0) /* tusk's console takes LDAP through hba_file only */
		fprintf(im->report, "%s:%d: [pgbouncer] auth_type = ldap: admin.client_auth left at scram-sha-256 (an "
				    "hba_file ldap line for database pgbouncer gives the console LDAP)\n",
			im->ini_path, type->line);
	else if (ca)
		fprintf(im->out, "  client_auth: %s\n", ca);
	im->ncarried++;
}

static void put_general(struct importer *im, const char *userlist)
{
	const struct imp_kv *kv;

	put_listen(im);
	if ((kv = get(&im->general, "unix_socket_dir")) && kv->value[0])
		put_plain(im, "unix_socket_dir", "unix_socket_dir", true);
	if ((kv = get(&im->general, "unix_socket_mode"))) { /* PgBouncer reads it as C does: 0660 octal, 432 decimal */
		char *end;
		long mode = strtol(kv->value, &end, 0);
		if (end == kv->value || *end || mode < 0 || mode > 0777) {
			skip(im, "pgbouncer", kv->key, kv->value, kv->line, "not a file mode from 0 to 0777");
		} else {
			fprintf(im->out, "unix_socket_mode: \"%04lo\"\n", mode);
			im->ncarried++;
		}
	}
	if ((kv = get(&im->general, "unix_socket_group")) && kv->value[0])
		put_plain(im, "unix_socket_group", "unix_socket_group", true);
	kv = get(&im->general, "logfile");
	const struct imp_kv *sl = get(&im->general, "syslog"), *vb = get(&im->general, "verbose");
	fprintf(im->out, "log:\n  level: %s\n  target: ", vb && atoi(vb->value) > 0 ? "debug" : "info");
	if (sl && is_true(sl->value)) {
		fputs("syslog\n", im->out);
	} else if (kv && kv->value[0]) {
		char t[IMP_LINE + 8];
		snprintf(t, sizeof t, "file:%s", kv->value);
		put_str(im->out, t);
		fputc('\n', im->out);
	} else {
		fputs("stderr\n", im->out);
	}
	put_plain(im, "syslog_ident", "  syslog_ident", true); /* under log: */
	put_plain(im, "syslog_facility", "  syslog_facility", true);
	put_plain(im, "pidfile", "pidfile", true);
	put_plain(im, "max_client_conn", "max_client_connections", false);
	put_plain(im, "max_db_client_connections", "max_db_client_connections", false);
	put_plain(im, "max_user_client_connections", "max_user_client_connections", false);
	if ((kv = get(&im->general, "auth_type")) && strcmp(kv->value, "hba") == 0) {
		if (!get(&im->general, "auth_hba_file"))
			skip(im, "pgbouncer", "auth_type", "hba", kv->line, "auth_hba_file is not set");
		put_plain(im, "auth_hba_file", "hba_file", true);
	}
	if ((kv = get(&im->general, "auth_type")) && strcmp(kv->value, "ldap") == 0 &&
	    !get(&im->general, "auth_ldap_options"))
		skip(im, "pgbouncer", "auth_type", "ldap", kv->line, "auth_ldap_options is not set (tusk refuses "
								       "client_auth: ldap without ldap_options)");
	put_plain(im, "auth_ldap_options", "ldap_options", true);
	/* PgBouncer's PAM service name is fixed; tusk's default is its own ("tusk"). */
	if ((kv = get(&im->general, "auth_type")) && strcmp(kv->value, "pam") == 0)
		fprintf(im->out, "pam_service: pgbouncer\n");
	/* The maps of the hba file's map=NAME; loaded and checked even without one, as PgBouncer does. */
	put_plain(im, "auth_ident_file", "ident_file", true);
	if (userlist) {
		fprintf(im->out, "auth_file: ");
		put_str(im->out, userlist);
		fputc('\n', im->out);
	} else {
		put_plain(im, "auth_file", "auth_file", true);
	}
	put_plain(im, "auth_user", "auth_user", true);
	put_plain(im, "auth_query", "auth_query", true);
	put_plain(im, "auth_dbname", "auth_dbname", true);
	put_plain(im, "scram_iterations", "scram_iterations", false);
	put_plain(im, "server_reset_query", "server_reset_query", true);
	put_bool(im, "server_reset_query_always");
	put_bool(im, "server_fast_close");
	put_bool(im, "disable_pqexec");
	put_bool(im, "application_name_add_host");
	put_plain(im, "server_check_query", "server_check_query", true);
	put_plain(im, "reserve_pool_size", "reserve_pool_size", false);
	put_bool(im, "log_connections");
	put_bool(im, "log_disconnections");
	if ((kv = get(&im->general, "log_stats")) && !is_true(kv->value))
		fprintf(im->out, "stats_period: 0   # PgBouncer: log_stats = 0\n");
	if ((kv = get(&im->general, "pkt_buf")))
		fprintf(im->out, "buffer_size: %d   # PgBouncer: pkt_buf = %s\n", atoi(kv->value) < 4096 ? 4096 : atoi(kv->value),
			kv->value);
	if ((kv = get(&im->general, "max_packet_size")))
		fprintf(im->out, "max_message_size: %d\n", atoi(kv->value) < 8192 ? 8192 : atoi(kv->value));
	put_plain(im, "max_prepared_statements", "max_prepared_statements", false);
	put_bool(im, "tcp_keepalive");
	put_plain(im, "tcp_keepcnt", "tcp_keepcnt", false);
	put_plain(im, "tcp_socket_buffer", "tcp_socket_buffer", false); /* bytes in both */
	put_plain(im, "listen_backlog", "listen_backlog", false);
	if ((kv = get(&im->general, "tcp_user_timeout"))) { /* milliseconds in PgBouncer */
		fprintf(im->out, "tcp_user_timeout: %lldms   # PgBouncer: tcp_user_timeout = %s (milliseconds)\n",
			atoll(kv->value) < 0 ? 0LL : atoll(kv->value), kv->value);
		im->ncarried++;
	}
	if ((kv = get(&im->general, "tcp_defer_accept"))) { /* a switch in PgBouncer: on sets 1 s */
		char *end;
		long on = strtol(kv->value, &end, 0);
		if (end == kv->value || *end) {
			skip(im, "pgbouncer", kv->key, kv->value, kv->line, "not a number");
		} else {
			fprintf(im->out, "tcp_defer_accept: %s   # PgBouncer: tcp_defer_accept = %s (%s)\n", on ? "1s" : "0",
				kv->value, on ? "on: TCP_DEFER_ACCEPT of 1 s" : "off");
			im->ncarried++;
		}
	}
	put_durations(im);
}

static void report_rest(struct importer *im)
{
	for (int i = 0; i < im->general.n; i++) {
		const struct imp_kv *kv = &im->general.kv[i];
		const struct pgb_name *n;
		if (is_handled(kv->key))
			continue;
		n = pgb_name_find(kv->key);
		if (!n)
			skip(im, "pgbouncer", kv->key, kv->value, kv->line, "not a PgBouncer 1.18 setting tusk knows");
		else if (n->fate == PGB_NOT_NEEDED)
			skip(im, "pgbouncer", kv->key, kv->value, kv->line, n->note);
		else
			skip(im, "pgbouncer", kv->key, kv->value, kv->line,
			     n->note ? n->note : n->tusk ? n->tusk : "no tusk equivalent");
	}
}

static void usage(FILE *f)
{
	fprintf(f, "Usage: tusk import-pgbouncer [-o tusk.yaml] pgbouncer.ini [userlist.txt]\n"
		   "  Writes an equivalent tusk.yaml (to stdout without -o) and lists on stderr every\n"
		   "  setting it could not carry, with the reason. Check the result with tusk --check.\n");
}

int import_pgbouncer_main(int argc, char **argv)
{
	static const struct option opts[] = { { "output", required_argument, NULL, 'o' },
					      { "help", no_argument, NULL, 'h' },
					      { NULL, 0, NULL, 0 } };
	static struct importer im;
	const char *out_path = NULL;
	int c, rc;

	optind = 1;
	while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
		if (c == 'o') {
			out_path = optarg;
		} else if (c == 'h') {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (argc - optind < 1 || argc - optind > 2) {
		usage(stderr);
		return 2;
	}
	im.ini_path = argv[optind];
	im.report = stderr;
	if (read_ini(&im) < 0)
		return 1;
	im.out = out_path ? fopen(out_path, "w") : stdout;
	if (!im.out) {
		fprintf(stderr, "tusk import-pgbouncer: %s: %s\n", out_path, strerror(errno));
		return 1;
	}
	fprintf(im.out, "# tusk.yaml imported from %s by tusk import-pgbouncer.\n"
			"# What could not be carried was listed when it ran; see docs/migrating-from-pgbouncer.md.\n",
		im.ini_path);
	put_general(&im, argc - optind == 2 ? argv[optind + 1] : NULL);
	put_pool_defaults(&im);
	rc = put_pools(&im);
	put_admin(&im);
	report_rest(&im);
	if (out_path && fclose(im.out) != 0) {
		fprintf(stderr, "tusk import-pgbouncer: %s: %s\n", out_path, strerror(errno));
		return 1;
	}
	fprintf(stderr, "tusk import-pgbouncer: %d settings carried, %d not carried%s\n", im.ncarried, im.nskipped,
		rc < 0 ? "; no pools written" : "");
	return rc < 0 ? 1 : 0;
}
