/* The cache key: everything that can change the bytes of a result, serialised as one byte
 * string that is stored and compared whole (a hash only picks the bucket). Two requests share
 * a result only when their keys are byte-equal. Pure functions, thread-safe. */
#ifndef TUSK_FLIGHT_KEY_H
#define TUSK_FLIGHT_KEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FLIGHT_KEY_MAX (64u << 10) /* a longer key is not cached */
#define FLIGHT_KEY_VERSION 2       /* bump when the layout or the reply format changes */

enum flight_protocol { FLIGHT_PROTO_SIMPLE = 'Q', FLIGHT_PROTO_EXTENDED = 'E' };

struct flight_param {
	const char *name, *value;
};

/* What a request's result depends on. Strings are NUL-terminated; blobs are (pointer, length). */
struct flight_key_input {
	const char *service;     /* the backend: service name ... */
	const char *server_user; /* ... the role tusk logs in as ... */
	const char *server_db;   /* ... and the database it logs in to */
	const char *database;    /* the client's database and user */
	const char *user;
	const char *role;        /* current role (SET ROLE pins the client, so the user today) */
	/* Which rules judged the request (the pool rule of its configuration generation): a
	 * reload that changes cache_tables must not find results kept under the old lists. */
	uint64_t policy_tag;
	/* Reported parameters (TimeZone, DateStyle, client_encoding ...) in any order: they are
	 * sorted by name; application_name is left out (no result reads it without a call, and
	 * calls are never cached). */
	const struct flight_param *params;
	int nparams;
	/* The client's carried SETs, verbatim (search_path, extra_float_digits, bytea_output ...). */
	const char *carry;
	size_t carry_len;
	enum flight_protocol protocol;
	const char *query; /* exact bytes */
	size_t query_len;
	/* Extended protocol: the Bind message body after the two names (parameter formats,
	 * values and result formats, exactly as sent) and the Parse's parameter type OIDs. */
	const uint8_t *bind;
	size_t bind_len;
	const uint32_t *param_types;
	int nparam_types;
	/* Extended protocol: the Describe sent ('S', 'P', or 0 for none), which decides what the
	 * kept reply holds (ParameterDescription, RowDescription, or neither). */
	uint8_t describe;
	/* A named statement's identity (prepared.h: its text, types and the settings it was
	 * parsed under, which fix its typed constants): NULL for the unnamed one, parsed now. */
	const uint8_t *stmt_id;
	size_t stmt_id_len;
};

/* Serialises in into out[0, cap). Returns the key's length, or -E2BIG (longer than cap or
 * FLIGHT_KEY_MAX) or -EINVAL (more than 256 parameters). */
__attribute__((warn_unused_result))
long flight_key_build(const struct flight_key_input *in, uint8_t *out, size_t cap);

uint64_t flight_key_hash(const uint8_t *key, size_t len);
bool flight_key_equal(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen);

#endif
