/* The extended-protocol requests the cache takes: the plain shape drivers send for one
 * parameterised read, [Parse] Bind [Describe] Execute Sync, read whole from a client's
 * buffer. Anything else (several Executes, a row limit, Flush, Close, named portals, a
 * Describe before the Bind) is not such a request and goes to a server as usual.
 * Pure functions over byte ranges: no I/O, no allocation, thread-safe. */
#ifndef TUSK_FLIGHT_EXT_H
#define TUSK_FLIGHT_EXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One request; every pointer points into the bytes read. */
struct flight_ext {
	size_t len;             /* bytes of the whole request, Sync included */
	bool has_parse;
	const char *stmt;       /* the statement name ("" unnamed), NUL-terminated */
	size_t stmt_len;
	/* Parse only: the body after the name (query, count, OIDs: what tusk's prepared
	 * statements store), the query and the parameter type OIDs (big-endian, ntypes of them) */
	const uint8_t *parse_rest;
	size_t parse_rest_len;
	const char *query;      /* NUL-terminated */
	size_t query_len;
	const uint8_t *types;
	uint16_t ntypes;
	/* The Bind after its two names: parameter formats, values, result formats, as sent */
	const uint8_t *bind;
	size_t bind_len;
	uint8_t describe;       /* 0 (no Describe), 'S' (the statement) or 'P' (the portal) */
};

/* Whether m[0, avail) is exactly one such request (nothing before or after it): Parse
 * optional; unnamed portal throughout; a Describe, if any, after the Bind and of the
 * statement being bound or of the unnamed portal; one Execute with no row limit; one Sync.
 * Every message is checked whole (lengths, strings, the Bind's counts and format codes). */
bool flight_ext_read(const uint8_t *m, size_t avail, struct flight_ext *out);

/* Whether a text-format parameter value of x's Bind holds "now", "today", "tomorrow" or
 * "yesterday" (any case, anywhere): the date/time input functions turn those into the time
 * the statement runs, so such a request must not be shared (a stray match costs a miss). */
bool flight_ext_time_words(const struct flight_ext *x);

/* The query and parameter type OIDs of a stored Parse body (query NUL, int16 count, OIDs):
 * false when it is not one. */
bool flight_ext_parse_body(const uint8_t *rest, size_t len, const char **query, size_t *query_len,
			   const uint8_t **types, uint16_t *ntypes);

#endif
