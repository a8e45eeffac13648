/* A bounds-checked reader of protobuf's wire format over a byte range, for the parse trees
 * libpg_query returns (kv/call.c, router/classify.c). What the fields mean is the caller's;
 * this only splits a message into fields. No allocation. */
#ifndef TUSK_UTIL_PB_H
#define TUSK_UTIL_PB_H

#include <stdbool.h>
#include <stdint.h>

/* A message: the bytes [p, end) of libpg_query's output. */
struct pb {
	const uint8_t *p, *end;
};

enum pb_wire { PB_VARINT = 0, PB_FIXED64 = 1, PB_BYTES = 2, PB_FIXED32 = 5 };

/* Reads the field at b->p and moves past it: its number and wire type, the value of a varint
 * (0 otherwise), the payload of a length-delimited field (empty otherwise). False at the end
 * of b or on malformed bytes (a bad key, a truncated value, a group); b->p is then at end. */
bool pb_next(struct pb *b, uint32_t *field, enum pb_wire *wire, uint64_t *v, struct pb *sub);

#endif
