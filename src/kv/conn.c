/* libpq plumbing for src/kv/: connections with explicit parameters and bounded error text. */
#include "kv/conn.h"

#include <assert.h>
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

/* res when its status is OK (tuples or command), else NULL with "SQLSTATE: message" in err (res
 * cleared). */
static PGresult *result_or_error(PGconn *conn, PGresult *res, char err[KV_ERR_MAX])
{
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

PGresult *kv_conn_exec(PGconn *conn, const char *sql, int nparams, const char *const *params, char err[KV_ERR_MAX])
{
	if (nparams > 0)
		return result_or_error(conn, PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0), err);
	return result_or_error(conn, PQexec(conn, sql), err);
}

PGresult *kv_conn_exec_prepared(PGconn *conn, uint32_t *prepared, int id, const char *sql, int nparams,
				const char *const *params, char err[KV_ERR_MAX])
{
	char name[32];

	assert(id >= 0 && id < 31);
	snprintf(name, sizeof name, "tusk_kv_%d", id);
	if (!(*prepared & (1u << id))) {
		PGresult *res = result_or_error(conn, PQprepare(conn, name, sql, nparams, NULL), err);
		if (!res)
			return NULL;
		PQclear(res);
		*prepared |= 1u << id;
	}
	PGresult *res = PQexecPrepared(conn, name, nparams, params, NULL, NULL, 0);
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	if (state && (strcmp(state, "0A000") == 0 || strcmp(state, "26000") == 0))
		*prepared |= KV_PREPARED_STALE;
	return result_or_error(conn, res, err);
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
