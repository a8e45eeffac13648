/* The protobuf wire-format reader (pb.h). */
#include "util/pb.h"

static bool pb_varint(struct pb *b, uint64_t *v)
{
	uint64_t x = 0;

	for (unsigned shift = 0; shift < 64 && b->p < b->end; shift += 7) {
		uint8_t c = *b->p++;
		x |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80)) {
			*v = x;
			return true;
		}
	}
	return false;
}

bool pb_next(struct pb *b, uint32_t *field, enum pb_wire *wire, uint64_t *v, struct pb *sub)
{
	uint64_t key, len;

	*v = 0;
	*sub = (struct pb){ b->end, b->end };
	if (b->p >= b->end || !pb_varint(b, &key) || key >> 3 == 0 || key >> 3 > UINT32_MAX)
		goto malformed;
	*field = (uint32_t)(key >> 3);
	*wire = (enum pb_wire)(key & 7);
	switch (key & 7) {
	case PB_VARINT:
		if (!pb_varint(b, v))
			goto malformed;
		return true;
	case PB_FIXED64:
	case PB_FIXED32:
		len = (key & 7) == PB_FIXED64 ? 8 : 4;
		if ((uint64_t)(b->end - b->p) < len)
			goto malformed;
		b->p += len;
		return true;
	case PB_BYTES:
		if (!pb_varint(b, &len) || len > (uint64_t)(b->end - b->p))
			goto malformed;
		*sub = (struct pb){ b->p, b->p + len };
		b->p += len;
		return true;
	default:
		goto malformed;
	}
malformed:
	b->p = b->end;
	return false;
}
