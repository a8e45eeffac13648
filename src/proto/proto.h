/* PostgreSQL v3 wire codec: framing of typed messages, the untyped startup-phase packets,
 * bounds-checked readers for the few server messages tusk inspects, and builders for the
 * messages tusk writes itself. Pure functions over byte ranges: no I/O, no allocation.
 *
 * Conventions: incremental parsers return bytes consumed (> 0), 0 for "need more", or a
 * negative PROTO_E* for malformed input. Builders append to a struct buf and return 0 or
 * -ENOSPC (the buffer is left unchanged on failure). */
#ifndef TUSK_PROTO_PROTO_H
#define TUSK_PROTO_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <sys/types.h>

#include "util/buf.h"

#define PROTO_VERSION_3          0x00030000u /* 196608 */
#define PROTO_CODE_CANCEL        80877102u
#define PROTO_CODE_SSL           80877103u
#define PROTO_CODE_GSSENC        80877104u
#define PROTO_STARTUP_MAX        10240u /* largest startup-phase packet accepted, bytes */
#define PROTO_STARTUP_MAX_PARAMS 64     /* name/value pairs in one StartupMessage */
#define PROTO_HDR_LEN            5      /* type byte + int32 length */

/* Negative results of parsers. */
enum proto_err {
	PROTO_ETOOSHORT = -1,  /* a length field smaller than its own header */
	PROTO_ETOOLONG = -2,   /* a length field larger than the allowed maximum */
	PROTO_EVERSION = -3,   /* unsupported protocol version or request code */
	PROTO_EMALFORMED = -4, /* missing terminator, odd pairs, field past the end, ... */
};

/* Human-readable text for a PROTO_E* value (static string). */
const char *proto_strerror(int err);

/* ---- startup phase (untyped packets: int32 length, int32 code, body) ---- */

enum proto_startup_kind {
	PROTO_STARTUP_MESSAGE, /* protocol 3.x StartupMessage */
	PROTO_STARTUP_SSL,     /* SSLRequest */
	PROTO_STARTUP_GSSENC,  /* GSSENCRequest */
	PROTO_STARTUP_CANCEL,  /* CancelRequest */
};

struct proto_param {
	const char *name;  /* points into the parsed packet; NUL-terminated */
	const char *value; /* points into the parsed packet; NUL-terminated */
};

struct proto_startup {
	enum proto_startup_kind kind;
	uint32_t version;      /* the code word: protocol version or request code */
	/* PROTO_STARTUP_MESSAGE: all pairs in packet order, user/database also picked out.
	 * database is NULL when absent (PostgreSQL then defaults it to user). */
	int nparams;
	struct proto_param params[PROTO_STARTUP_MAX_PARAMS];
	const char *user;
	const char *database;
	/* PROTO_STARTUP_CANCEL */
	uint32_t cancel_pid;
	uint32_t cancel_key;
};

/* Parse one startup-phase packet at buf[0, len). Returns the packet length when the whole
 * packet is present, 0 when more bytes are needed, or PROTO_E*. Lengths below 8 or above
 * PROTO_STARTUP_MAX are rejected as soon as the length word is readable. A StartupMessage
 * must be version 3.x (minor ignored), have a "user" and end with the terminating NUL;
 * SSL/GSSENC requests must be exactly 8 bytes, CancelRequest exactly 16. String pointers
 * in *out point into buf, so the caller copies what it keeps before reusing buf.
 * Like PostgreSQL, an empty "user" counts as missing, an empty "database" as absent (NULL),
 * and bytes after the terminating NUL are malformed. Unlike it, a repeated "user" or
 * "database" is malformed: tusk must never route by one value while the server uses another. */
ssize_t proto_parse_startup(const uint8_t *buf, size_t len, struct proto_startup *out);

/* ---- typed messages ---- */

struct proto_hdr {
	uint8_t type;
	uint32_t len; /* the length word: includes itself, excludes the type byte */
};

/* Read a typed message header at buf[0, avail). Returns PROTO_HDR_LEN when the header is
 * complete and valid, 0 when fewer than 5 bytes are present, PROTO_ETOOSHORT when
 * len < 4, PROTO_ETOOLONG when len > max_len (*out is filled then too, for the error text).
 * The body need not be present. */
/* v big-endian at p (a length word, an OID): returns p + 4. */
static inline uint8_t *proto_store_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
	return p + 4;
}

static inline ssize_t proto_read_hdr(const uint8_t *buf, size_t avail, uint32_t max_len, struct proto_hdr *out)
{
	/* Inline: every message of every relayed transaction passes here (~12 per pgbench one). */
	if (avail < PROTO_HDR_LEN)
		return 0;
	uint32_t len = (uint32_t)buf[1] << 24 | (uint32_t)buf[2] << 16 | (uint32_t)buf[3] << 8 | (uint32_t)buf[4];
	if (len < 4)
		return PROTO_ETOOSHORT;
	out->type = buf[0];
	out->len = len;
	if (len > max_len)
		return PROTO_ETOOLONG;
	return PROTO_HDR_LEN;
}

/* True for the message types a logged-in client may send (Query, the extended protocol,
 * FunctionCall, COPY data/done/fail, Terminate). 'p' is valid only during authentication and
 * is not among them; anything else is a protocol violation PostgreSQL answers with FATAL. */
static inline bool proto_client_type_valid(uint8_t type)
{
	switch (type) {
	case 'Q': case 'P': case 'B': case 'E': case 'D': case 'C': case 'H': case 'S':
	case 'F': case 'X': case 'd': case 'c': case 'f':
		return true;
	default:
		return false;
	}
}

/* The body of a Query is exactly one string: 0 when its first NUL is its last byte,
 * PROTO_EMALFORMED when it has no NUL at all (PostgreSQL: "invalid string in message"),
 * PROTO_ETOOLONG when bytes follow the NUL ("invalid message format"). */
int proto_check_query_body(const uint8_t *body, size_t len);

/* Bounds-checked reader over one message body. Any read past the end sets err and returns
 * a zero value / NULL; callers check err once at the end. */
struct proto_reader {
	const uint8_t *p;
	size_t len;
	size_t off;
	bool err;
};
void proto_reader_init(struct proto_reader *r, const void *body, size_t len);
uint8_t proto_get_u8(struct proto_reader *r);
uint16_t proto_get_u16(struct proto_reader *r);
uint32_t proto_get_u32(struct proto_reader *r);
uint64_t proto_get_u64(struct proto_reader *r);
/* A NUL-terminated string inside the body; NULL (and err) when there is no terminator. */
const char *proto_get_cstr(struct proto_reader *r);
/* The same, and its length (without the NUL) in *len (0 on failure). */
const char *proto_get_cstr_n(struct proto_reader *r, size_t *len);
/* n raw bytes; NULL (and err) when fewer remain. */
const uint8_t *proto_get_bytes(struct proto_reader *r, size_t n);
static inline size_t proto_remaining(const struct proto_reader *r) { return r->len - r->off; }
/* Where the next read starts (the bytes still unread: proto_remaining of them). */
static inline const uint8_t *proto_reader_pos(const struct proto_reader *r) { return r->p + r->off; }

/* ErrorResponse/NoticeResponse body: fields tusk cares about, pointing into the body. Absent
 * fields are NULL. Returns 0 or PROTO_EMALFORMED. */
struct proto_error_fields {
	const char *severity; /* 'S' (localized) or 'V' when 'S' is absent */
	const char *sqlstate; /* 'C' */
	const char *message;  /* 'M' */
	const char *detail;   /* 'D' */
	const char *hint;     /* 'H' */
};
int proto_parse_error(const uint8_t *body, size_t len, struct proto_error_fields *out);

/* ParameterStatus body ('S' from the server). Returns 0 or PROTO_EMALFORMED. */
int proto_parse_parameter_status(const uint8_t *body, size_t len, const char **name, const char **value);

/* BackendKeyData body ('K'). Returns 0 or PROTO_EMALFORMED (wrong length). */
int proto_parse_backend_key(const uint8_t *body, size_t len, uint32_t *pid, uint32_t *key);

/* Authentication request body ('R'): code plus whatever follows it (salt for md5, mechanism
 * list for SASL, SASL data for continue/final). Returns 0 or PROTO_EMALFORMED. For the codes
 * below data_len is checked: 0 for ok/cleartext, 4 for md5, and for SASL a list of one or more
 * mechanisms whose empty-string terminator is the last byte. Other codes are not checked. */
enum proto_auth_code {
	PROTO_AUTH_OK = 0,
	PROTO_AUTH_CLEARTEXT = 3,
	PROTO_AUTH_MD5 = 5,
	PROTO_AUTH_SASL = 10,
	PROTO_AUTH_SASL_CONTINUE = 11,
	PROTO_AUTH_SASL_FINAL = 12,
};
struct proto_auth {
	uint32_t code;
	const uint8_t *data; /* bytes after the code (md5: 4-byte salt) */
	size_t data_len;
};
int proto_parse_auth(const uint8_t *body, size_t len, struct proto_auth *out);

/* True when the NUL-separated, empty-string-terminated SASL mechanism list in data
 * (AuthenticationSASL body after the code) contains mech. */
bool proto_sasl_has_mechanism(const uint8_t *data, size_t len, const char *mech);

/* ---- builders (append complete messages to b) ---- */

/* A typed message from parts written back to back after the header. declared_len is its
 * length word (0: 4 + the parts' total); when larger than that, only this head is appended
 * and the caller streams the rest of the body. 0, -ENOSPC (buffer unchanged), or -EMSGSIZE
 * when the length word cannot be written (over INT32_MAX). */
struct proto_part {
	const void *p;
	size_t n;
};
int proto_put_parts(struct buf *b, uint8_t type, size_t declared_len, const struct proto_part *parts, int nparts);

/* ErrorResponse ('E') or NoticeResponse ('N'): severity is written as both 'S' and 'V';
 * detail and hint may be NULL. */
int proto_put_error(struct buf *b, const char *severity, const char *sqlstate,
		    const char *message, const char *detail, const char *hint);
int proto_put_notice(struct buf *b, const char *severity, const char *sqlstate,
		     const char *message, const char *detail, const char *hint);
int proto_put_parameter_status(struct buf *b, const char *name, const char *value);
/* NegotiateProtocolVersion ('v'): the newest minor version supported and the names of the
 * protocol options ("_pq_.*") not recognised. */
int proto_put_negotiate_version(struct buf *b, uint32_t minor, const char *const *options, int noptions);
int proto_put_backend_key(struct buf *b, uint32_t pid, uint32_t key);
int proto_put_ready(struct buf *b, uint8_t status); /* 'I', 'T' or 'E' */
int proto_put_command_complete(struct buf *b, const char *tag); /* 'C' */
int proto_put_auth_ok(struct buf *b);
/* AuthenticationRequest ('R') with code and the bytes after it (md5 salt, SASL mechanism list
 * or SASL data). */
int proto_put_auth_request(struct buf *b, uint32_t code, const void *data, size_t len);
/* StartupMessage (protocol 3.0) from name/value pairs. */
int proto_put_startup(struct buf *b, const struct proto_param *params, int nparams);
int proto_put_cancel_request(struct buf *b, uint32_t pid, uint32_t key);
int proto_put_query(struct buf *b, const char *sql);  /* 'Q' */
int proto_put_terminate(struct buf *b);               /* 'X' */
/* PasswordMessage ('p') with a NUL-terminated password or md5 hash string. */
int proto_put_password(struct buf *b, const char *password);
/* SASLInitialResponse ('p'): mechanism, int32 length, data. */
int proto_put_sasl_initial(struct buf *b, const char *mechanism, const void *data, size_t len);
/* SASLResponse ('p'): raw data. */
int proto_put_sasl_response(struct buf *b, const void *data, size_t len);

#endif
