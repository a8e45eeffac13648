/* libpq, loaded on first use. Only the kv commands and replication threads talk libpq, yet
 * linking it maps libpq, Kerberos, LDAP and GnuTLS (with p11-kit) into every tusk: ~3 MB
 * of its RSS at start (docs/performance.md). This file defines the libpq functions tusk
 * calls, under their own names (callers include pq/pq.h, which is <libpq-fe.h> unchanged), and
 * forwards them to libpq.so.5 opened with dlopen the first time one is called (kv, the cache's
 * catalog and logical threads and `tusk top` use it). When it cannot be opened,
 * PQconnectdbParams logs why and returns NULL, which kv reports as a failed connection. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "pq/pq.h"

#include "util/log.h"

#define PQ_LIBRARY "libpq.so.5"

#define PQ_FUNCTIONS(X)                                                                                     \
	X(PQclear) X(PQconnectdbParams) X(PQerrorMessage) X(PQescapeIdentifier) X(PQescapeLiteral) X(PQexec)  \
	X(PQexecParams) X(PQexecPrepared) X(PQprepare) X(PQfinish) X(PQfreemem) X(PQgetisnull) X(PQgetvalue) X(PQnfields) X(PQntuples)       \
	X(PQresultErrorField) X(PQresultStatus) X(PQsetNoticeProcessor) X(PQstatus) X(PQconnectdb)          \
	X(PQconsumeInput) X(PQfnumber) X(PQgetlength) X(PQhost) X(PQnotifies) X(PQport) X(PQreset)           \
	X(PQsocket) X(PQconnectStartParams) X(PQconnectPoll) X(PQsetnonblocking) X(PQenterPipelineMode)        \
	X(PQpipelineSync) X(PQsendPrepare) X(PQsendQueryPrepared) X(PQsendQueryParams) X(PQisBusy) X(PQgetResult) X(PQflush) \
	X(PQgetCancel) X(PQfreeCancel) X(PQcancel) X(PQbackendPID)

/* Written once under pq_once, read-only afterwards (pthread_once orders it for every
 * thread that calls pq_loaded). */
static struct {
#define PQ_POINTER(f) __typeof__(&f) f;
	PQ_FUNCTIONS(PQ_POINTER)
#undef PQ_POINTER
} pq;
static bool pq_ok;
static pthread_once_t pq_once = PTHREAD_ONCE_INIT;

static void pq_load(void)
{
	void *lib = dlopen(PQ_LIBRARY, RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		log_error(NULL, NULL, "cannot load %s: %s", PQ_LIBRARY, dlerror());
		return;
	}
	/* dlsym gives an object pointer; POSIX guarantees it converts to a function pointer. */
#define PQ_RESOLVE(f)                                                                               \
	{                                                                                           \
		void *sym = dlsym(lib, #f);                                                         \
		if (!sym) {                                                                         \
			log_error(NULL, NULL, "cannot load %s: no symbol %s", PQ_LIBRARY, #f);    \
			return;                                                                     \
		}                                                                                   \
		memcpy(&pq.f, &sym, sizeof sym);                                                    \
	}
	PQ_FUNCTIONS(PQ_RESOLVE)
#undef PQ_RESOLVE
	pq_ok = true; /* the library stays loaded until exit */
}

static bool pq_loaded(void)
{
	pthread_once(&pq_once, pq_load);
	return pq_ok;
}

/* Every function but PQconnectdbParams, PQstatus, PQerrorMessage, PQfinish and PQclear needs
 * a connection or a result, which only a loaded libpq can have made: their fallbacks are
 * never reached but keep each wrapper total. */

PGconn *PQconnectdbParams(const char *const *keywords, const char *const *values, int expand_dbname)
{
	return pq_loaded() ? pq.PQconnectdbParams(keywords, values, expand_dbname) : NULL;
}

/* The non-blocking start of a connection (kv's calls on the workers' loops, kv/shard_loop.c):
 * NULL when libpq cannot be loaded, as PQconnectdbParams. */
PGconn *PQconnectStartParams(const char *const *keywords, const char *const *values, int expand_dbname)
{
	return pq_loaded() ? pq.PQconnectStartParams(keywords, values, expand_dbname) : NULL;
}

PostgresPollingStatusType PQconnectPoll(PGconn *conn)
{
	return conn && pq_loaded() ? pq.PQconnectPoll(conn) : PGRES_POLLING_FAILED;
}

ConnStatusType PQstatus(const PGconn *conn)
{
	return conn && pq_loaded() ? pq.PQstatus(conn) : CONNECTION_BAD;
}

char *PQerrorMessage(const PGconn *conn)
{
	static char unavailable[] = "libpq could not be loaded (see the log)";
	return conn && pq_loaded() ? pq.PQerrorMessage(conn) : unavailable;
}

void PQfinish(PGconn *conn)
{
	if (conn && pq_loaded())
		pq.PQfinish(conn);
}

void PQclear(PGresult *res)
{
	if (res && pq_loaded())
		pq.PQclear(res);
}

void PQfreemem(void *ptr)
{
	if (ptr && pq_loaded())
		pq.PQfreemem(ptr);
}

PGresult *PQexec(PGconn *conn, const char *query)
{
	return pq_loaded() ? pq.PQexec(conn, query) : NULL;
}

PGresult *PQexecParams(PGconn *conn, const char *command, int nParams, const Oid *paramTypes,
		       const char *const *paramValues, const int *paramLengths, const int *paramFormats,
		       int resultFormat)
{
	return pq_loaded() ? pq.PQexecParams(conn, command, nParams, paramTypes, paramValues, paramLengths,
					     paramFormats, resultFormat)
			   : NULL;
}

PGresult *PQprepare(PGconn *conn, const char *stmtName, const char *query, int nParams, const Oid *paramTypes)
{
	return pq_loaded() ? pq.PQprepare(conn, stmtName, query, nParams, paramTypes) : NULL;
}

PGresult *PQexecPrepared(PGconn *conn, const char *stmtName, int nParams, const char *const *paramValues,
			 const int *paramLengths, const int *paramFormats, int resultFormat)
{
	return pq_loaded() ? pq.PQexecPrepared(conn, stmtName, nParams, paramValues, paramLengths, paramFormats,
					       resultFormat)
			   : NULL;
}

char *PQescapeIdentifier(PGconn *conn, const char *str, size_t len)
{
	return pq_loaded() ? pq.PQescapeIdentifier(conn, str, len) : NULL;
}

char *PQescapeLiteral(PGconn *conn, const char *str, size_t len)
{
	return pq_loaded() ? pq.PQescapeLiteral(conn, str, len) : NULL;
}

ExecStatusType PQresultStatus(const PGresult *res)
{
	return res && pq_loaded() ? pq.PQresultStatus(res) : PGRES_FATAL_ERROR;
}

char *PQresultErrorField(const PGresult *res, int fieldcode)
{
	return res && pq_loaded() ? pq.PQresultErrorField(res, fieldcode) : NULL;
}

int PQntuples(const PGresult *res)
{
	return res && pq_loaded() ? pq.PQntuples(res) : 0;
}

int PQnfields(const PGresult *res)
{
	return res && pq_loaded() ? pq.PQnfields(res) : 0;
}

char *PQgetvalue(const PGresult *res, int tup_num, int field_num)
{
	static char empty[] = "";
	return res && pq_loaded() ? pq.PQgetvalue(res, tup_num, field_num) : empty;
}

int PQgetisnull(const PGresult *res, int tup_num, int field_num)
{
	return res && pq_loaded() ? pq.PQgetisnull(res, tup_num, field_num) : 1;
}

PQnoticeProcessor PQsetNoticeProcessor(PGconn *conn, PQnoticeProcessor proc, void *arg)
{
	return conn && pq_loaded() ? pq.PQsetNoticeProcessor(conn, proc, arg) : NULL;
}

PGconn *PQconnectdb(const char *conninfo)
{
	return pq_loaded() ? pq.PQconnectdb(conninfo) : NULL;
}

void PQreset(PGconn *conn)
{
	if (conn && pq_loaded())
		pq.PQreset(conn);
}

int PQsocket(const PGconn *conn)
{
	return conn && pq_loaded() ? pq.PQsocket(conn) : -1;
}

int PQconsumeInput(PGconn *conn)
{
	return conn && pq_loaded() ? pq.PQconsumeInput(conn) : 0;
}

PGnotify *PQnotifies(PGconn *conn)
{
	return conn && pq_loaded() ? pq.PQnotifies(conn) : NULL;
}

char *PQhost(const PGconn *conn)
{
	return conn && pq_loaded() ? pq.PQhost(conn) : NULL;
}

char *PQport(const PGconn *conn)
{
	return conn && pq_loaded() ? pq.PQport(conn) : NULL;
}

int PQfnumber(const PGresult *res, const char *field_name)
{
	return res && pq_loaded() ? pq.PQfnumber(res, field_name) : -1;
}

int PQgetlength(const PGresult *res, int tup_num, int field_num)
{
	return res && pq_loaded() ? pq.PQgetlength(res, tup_num, field_num) : 0;
}

int PQsetnonblocking(PGconn *conn, int arg)
{
	return conn && pq_loaded() ? pq.PQsetnonblocking(conn, arg) : -1;
}

int PQenterPipelineMode(PGconn *conn)
{
	return conn && pq_loaded() ? pq.PQenterPipelineMode(conn) : 0;
}

int PQpipelineSync(PGconn *conn)
{
	return conn && pq_loaded() ? pq.PQpipelineSync(conn) : 0;
}

int PQsendPrepare(PGconn *conn, const char *stmtName, const char *query, int nParams, const Oid *paramTypes)
{
	return conn && pq_loaded() ? pq.PQsendPrepare(conn, stmtName, query, nParams, paramTypes) : 0;
}

int PQsendQueryPrepared(PGconn *conn, const char *stmtName, int nParams, const char *const *paramValues,
			const int *paramLengths, const int *paramFormats, int resultFormat)
{
	return conn && pq_loaded() ? pq.PQsendQueryPrepared(conn, stmtName, nParams, paramValues, paramLengths,
							    paramFormats, resultFormat)
				   : 0;
}

int PQsendQueryParams(PGconn *conn, const char *command, int nParams, const Oid *paramTypes,
		      const char *const *paramValues, const int *paramLengths, const int *paramFormats, int resultFormat)
{
	return conn && pq_loaded() ? pq.PQsendQueryParams(conn, command, nParams, paramTypes, paramValues, paramLengths,
							  paramFormats, resultFormat)
				   : 0;
}

int PQisBusy(PGconn *conn)
{
	return conn && pq_loaded() ? pq.PQisBusy(conn) : 0;
}

PGresult *PQgetResult(PGconn *conn)
{
	return conn && pq_loaded() ? pq.PQgetResult(conn) : NULL;
}

int PQflush(PGconn *conn)
{
	return conn && pq_loaded() ? pq.PQflush(conn) : -1;
}

PGcancel *PQgetCancel(PGconn *conn)
{
	return conn && pq_loaded() ? pq.PQgetCancel(conn) : NULL;
}

void PQfreeCancel(PGcancel *cancel)
{
	if (cancel && pq_loaded())
		pq.PQfreeCancel(cancel);
}

int PQcancel(PGcancel *cancel, char *errbuf, int errbufsize)
{
	if (cancel && pq_loaded())
		return pq.PQcancel(cancel, errbuf, errbufsize);
	if (errbuf && errbufsize > 0)
		snprintf(errbuf, (size_t)errbufsize, "libpq could not be loaded");
	return 0;
}

int PQbackendPID(const PGconn *conn)
{
	return conn && pq_loaded() ? pq.PQbackendPID(conn) : 0;
}
