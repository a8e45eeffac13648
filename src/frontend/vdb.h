/* A virtual database: one a client logs into that tusk answers itself, with no server
 * behind it (the admin console, the kv database). What they share lives here: the greeting,
 * the framing of requests and their dispatch by type, the extended protocol's skip-until-Sync,
 * and a growable output buffer that lets an answer be longer than the client's wbuf. The
 * owner (console/, kv/) embeds a struct vdb in its session and answers each request kind. */
#ifndef TUSK_FRONTEND_VDB_H
#define TUSK_FRONTEND_VDB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/log.h"

struct client;

struct vdb_col;

/* A growable output buffer. */
struct vdb_out {
	uint8_t *data;
	size_t start, len, cap; /* bytes [start, len) not yet moved to the wbuf */
	bool failed;            /* out of memory or over VDB_OUT_MAX: the answer is lost */
	/* vdb_out_row's form: bit i set, column i (of type row_cols[i].type_oid) in binary (an
	 * extended Bind's result formats); 0, every value as text. */
	uint64_t row_binary;
	const struct vdb_col *row_cols;
};

#define VDB_OUT_MAX (64u << 20)  /* bound on one answer's unsent bytes */
#define VDB_OUT_HIGH (256u << 10) /* stop reading requests while this much is unsent */
#define VDB_NAME_MAX 64            /* statement names, with their NUL */

/* A statement name as PostgreSQL keeps it: its first VDB_NAME_MAX - 1 bytes (it cuts a longer
 * one without a word, so two names that share those are one). name itself when short enough,
 * else its cut copy in out. */
const char *vdb_name(const char *name, char out[VDB_NAME_MAX]);

void vdb_out_raw(struct vdb_out *o, const void *p, size_t n);
void vdb_out_msg(struct vdb_out *o, uint8_t type, const void *body, size_t n);
/* A DataRow of ncols values given as text (NULL: SQL NULL), each sent as text, or in binary
 * when o->row_binary says (int8: big-endian; text: its bytes). */
void vdb_out_row(struct vdb_out *o, int ncols, const char *const *vals);
void vdb_out_free(struct vdb_out *o);

/* A column: its name, its type (which tells drivers how to read it), and the format its values
 * travel in: 0 text (the console's, and the kv's unless a Bind asks for binary), 1 binary. */
#define VDB_OID_BOOL 16u
#define VDB_OID_INT8 20u
#define VDB_OID_INT4 23u
#define VDB_OID_TEXT 25u
struct vdb_col {
	const char *name;
	uint32_t type_oid;
	uint16_t format;
};
/* A Bind's nres result format codes (big-endian, at codes) for ncols columns, as PostgreSQL
 * takes them: none, all text; one, for every column; else one per column. *binary: bit i,
 * column i in binary. false after an error (vdb_error_skip): a count that is neither (08P01),
 * a code other than 0 and 1 (22023), binary past 64 columns (0A000). */
struct vdb;
bool vdb_result_formats(struct vdb *v, const uint8_t *codes, uint16_t nres, int ncols, uint64_t *binary);

/* A RowDescription of n columns. */
void vdb_out_row_description(struct vdb_out *o, const struct vdb_col *cols, int n);

struct vdb;

/* What the owner answers. vdb has framed each message and read its fields (a Bind's body is
 * passed whole: what it may carry differs), and it answers Sync, Flush and unserved types. */
struct vdb_ops {
	const char *name;      /* "the admin console": in error texts */
	const char *log_tag;   /* "console": prefix of the log line of each error sent */
	enum log_level error_log_level;
	const char *out_failed; /* client_fail text when an answer did not fit vdb_out */
	const char *fastpath;   /* the error text for a FunctionCall */
	/* A message longer than the client's rbuf: collected in a heap copy (true) or fatal. */
	bool collect_long;
	/* A simple Query's text: its answer (EmptyQueryResponse for none), or an error; true when
	 * it is answered later (busy set), else vdb adds ReadyForQuery. */
	bool (*query)(struct vdb *v, const char *text);
	/* Parse of a statement ("" the unnamed one) with ntypes big-endian parameter type oids
	 * at types: ParseComplete or an error (vdb_error_skip). */
	void (*parse)(struct vdb *v, const char *name, const char *text, uint16_t ntypes, const uint8_t *types);
	void (*bind)(struct vdb *v, const uint8_t *body, size_t len);
	/* Describe of a statement ("" is the unnamed one): ParameterDescription and RowDescription
	 * (or NoData), or an error (vdb_error_skip) when there is no such statement. */
	void (*describe_statement)(struct vdb *v, const char *name);
	/* Describe of the portal, which is bound (portal_set). */
	void (*describe_portal)(struct vdb *v);
	/* Execute the portal: it was bound; portal_set is already cleared (the op sets it again
	 * when it sends PortalSuspended: at most max_rows rows, 0 = all, and more are left; an op
	 * may ignore max_rows and run the portal whole). */
	void (*execute)(struct vdb *v, uint32_t max_rows);
	/* Close of a statement: forget it if it exists (not an error otherwise). */
	void (*close_statement)(struct vdb *v, const char *name);
	/* Optional: Describe of a portal that is not the bound one, a cursor the owner keeps
	 * (DECLARE): true when it answered (RowDescription). */
	bool (*describe_cursor)(struct vdb *v, const char *name);
	/* Optional: a named portal that is not the bound one, kept by the owner since another was
	 * bound (PostgreSQL keeps every portal of a transaction): made the bound one
	 * (vdb_bind_portal), true; false when the owner keeps none of that name. */
	bool (*find_portal)(struct vdb *v, const char *name);
	/* Optional: called before each ReadyForQuery (ParameterStatus of a setting that changed). */
	void (*before_ready)(struct vdb *v);
};

/* Embedded in the owner's session. */
struct vdb {
	struct client *client;    /* public; the owner may set it to NULL once the client is gone */
	const struct vdb_ops *ops; /* public, read-only */
	struct vdb_out out;       /* public: answers are appended here */
	bool skipping;            /* public: after an error in the extended protocol, until Sync */
	bool busy;                /* public: a request is answered later; input waits */
	bool busy_simple;         /* public: ... and it came in a simple Query */
	bool portal_set;          /* public: a portal is bound (vdb_bind_portal): one at a time */
	char portal_name[VDB_NAME_MAX]; /* public, read-only: its name ("" the unnamed) */
	uint8_t txn_status;       /* public: ReadyForQuery's status: 0 ('I'), 'T', or 'E' (an error
				   * written while 'T' makes it 'E', as PostgreSQL's aborted block) */
	uint32_t nerrors;         /* public, read-only: the ErrorResponses written so far */
	bool out_ready;           /* private: a ReadyForQuery waits in out (a whole answer to send) */
	uint8_t *big;             /* private: a message longer than rbuf, collected as it streams */
	size_t big_len, big_need;
};

/* v reads c's requests from now on (c->vdb; client_close clears it). */
void vdb_init(struct vdb *v, struct client *c, const struct vdb_ops *ops);
/* Frees what v holds (not v). */
void vdb_free(struct vdb *v);

/* Greet the authenticated client (AuthenticationOk, ParameterStatus, default_read_only the
 * default_transaction_read_only reported; BackendKeyData with a fresh random key,
 * ReadyForQuery), make it CLIENT_IDLE and serve what it already sent. On failure the client
 * is failed (closing). */
void vdb_greet(struct vdb *v, const char *server_version, const char *datestyle, bool default_read_only);

/* An ErrorResponse "tusk <client id>: <text>", logged at ops->error_log_level. */
void vdb_error(struct vdb *v, const char *sqlstate, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* vdb_error for a failed request of the extended protocol: what follows is skipped until Sync. */
void vdb_error_skip(struct vdb *v, const char *sqlstate, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* An ErrorResponse (error) or NoticeResponse with the text as it is, or as tusk's own
 * ("tusk <client id>: " before it) when ours; detail and hint may be NULL or "". */
void vdb_out_error(struct vdb *v, bool error, bool ours, const char *sqlstate, const char *text,
		   const char *detail, const char *hint);
/* The Bind of portal name (cut as vdb_name cuts it) succeeded: Describe, Execute and Close find
 * it by that name until it is executed, closed or another is bound (PostgreSQL keeps several;
 * a virtual database keeps the last, enough for drivers that bind and execute a named portal
 * in turn: pgjdbc with a fetch size inside a transaction). */
void vdb_bind_portal(struct vdb *v, const char *name);
/* A WARNING with the text as it is (PostgreSQL's "there is already a transaction in progress"). */
void vdb_out_warning(struct vdb *v, const char *sqlstate, const char *text);
void vdb_ready(struct vdb *v); /* ReadyForQuery, with txn_status */
void vdb_complete(struct vdb *v, const char *tag); /* CommandComplete */
void vdb_complete_select(struct vdb *v, uint64_t nrows); /* CommandComplete "SELECT <nrows>", no printf */

/* Handle the whole requests in the client's rbuf until it is busy or much output waits,
 * then flush. The client may be closed on return. */
void vdb_input(struct vdb *v);
/* The wbuf drained: move more output, then read on. The client may be closed on return. */
void vdb_writable(struct vdb *v);

/* The input and writable handlers of a virtual database's session kind (client_kind.h):
 * c's requests are read, and its answers moved on, through c->vdb. */
void vdb_client_input(struct client *c);
bool vdb_client_writable(struct client *c);

#endif
