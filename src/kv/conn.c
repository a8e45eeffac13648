/* libpq plumbing for src/kv/: connections with explicit parameters and bounded error text. */
#include "kv/conn.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* One line, without libpq's trailing newline. */
static void copy_error(char *err, size_t cap, const char *msg)
{
	size_t n;

	snprintf(err, cap, "%s", msg && *msg ? msg : "unknown error");
	n = strlen(err);
	while (n > 0 && (err[n - 1] == '\n' || err[n - 1] == ' '))
		err[--n] = '\0';
	for (char *p = err; *p; p++)
		if (*p == '\n')
			*p = ' ';
}

static void notice_ignore(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

PGconn *kv_conn_open(const struct kv_endpoint *ep, const char *application_name, char err[KV_ERR_MAX])
{
	char port[16];
	const char *keys[10], *vals[10];
	int n = 0;

	snprintf(port, sizeof port, "%d", ep->port);
	keys[n] = "host", vals[n++] = ep->host;
	keys[n] = "port", vals[n++] = port;
	keys[n] = "dbname", vals[n++] = ep->dbname;
	keys[n] = "user", vals[n++] = ep->user;
	if (ep->password)
		keys[n] = "password", vals[n++] = ep->password;
	keys[n] = "application_name", vals[n++] = application_name;
	keys[n] = "connect_timeout", vals[n++] = "5";
	/* Bounded statements; replication's pulls are small batches, init's DDL is quick. */
	keys[n] = "options", vals[n++] = ep->options ? ep->options : "-c statement_timeout=60s -c lock_timeout=30s";
	keys[n] = NULL, vals[n] = NULL;

	PGconn *conn = PQconnectdbParams(keys, vals, 0);
	if (!conn) {
		copy_error(err, KV_ERR_MAX, "out of memory");
		return NULL;
	}
	if (PQstatus(conn) != CONNECTION_OK) {
		char msg[KV_ERR_MAX / 2]; /* room for the endpoint around it */
		copy_error(msg, sizeof msg, PQerrorMessage(conn));
		snprintf(err, KV_ERR_MAX, "%s:%d/%s as %s: %s", ep->host, ep->port, ep->dbname, ep->user, msg);
		PQfinish(conn);
		return NULL;
	}
	/* Notices (NOTICE: relation already exists, skipping) are expected from idempotent DDL. */
	PQsetNoticeProcessor(conn, notice_ignore, NULL);
	return conn;
}

PGresult *kv_conn_exec(PGconn *conn, const char *sql, int nparams, const char *const *params, char err[KV_ERR_MAX])
{
	PGresult *res;

	if (nparams > 0)
		res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
	else
		res = PQexec(conn, sql);
	ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
		return res;
	if (res) {
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
		char line[KV_ERR_MAX - 16];
		copy_error(line, sizeof line, msg ? msg : PQerrorMessage(conn));
		snprintf(err, KV_ERR_MAX, "%s: %s", state ? state : "08006", line);
		PQclear(res);
	} else {
		copy_error(err, KV_ERR_MAX, PQerrorMessage(conn));
	}
	return NULL;
}

int kv_conn_run(PGconn *conn, const char *sql, int nparams, const char *const *params, char err[KV_ERR_MAX])
{
	PGresult *res = kv_conn_exec(conn, sql, nparams, params, err);
	if (!res)
		return -EIO;
	PQclear(res);
	return 0;
}

int kv_conn_run_scripts(PGconn *conn, const char *const *scripts, char err[KV_ERR_MAX])
{
	if (kv_conn_run(conn, "BEGIN", 0, NULL, err) < 0)
		return -EIO;
	for (const char *const *s = scripts; *s; s++) {
		if (kv_conn_run(conn, *s, 0, NULL, err) < 0)
			goto err_rollback;
	}
	if (kv_conn_run(conn, "COMMIT", 0, NULL, err) < 0)
		goto err_rollback;
	return 0;

err_rollback:
	PQclear(PQexec(conn, "ROLLBACK"));
	return -EIO;
}
