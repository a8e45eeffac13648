/* The cache key (key.h). Each field is written as a 4-byte length and its bytes, in a fixed
 * order after a format version, so no two different inputs can serialise alike. */
#include "flight/key.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define KEY_MAX_PARAMS 256

struct out {
	uint8_t *p;
	size_t len, cap;
	bool full;
};

static void put(struct out *o, const void *data, size_t n)
{
	uint8_t hdr[4] = { (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n };

	if (n > UINT32_MAX || o->cap - o->len < n + 4) {
		o->full = true;
		return;
	}
	memcpy(o->p + o->len, hdr, 4);
	if (n)
		memcpy(o->p + o->len + 4, data, n);
	o->len += n + 4;
}

static void put_str(struct out *o, const char *s)
{
	put(o, s ? s : "", s ? strlen(s) : 0);
}

static int cmp_param(const void *a, const void *b)
{
	return strcmp(((const struct flight_param *)a)->name, ((const struct flight_param *)b)->name);
}

long flight_key_build(const struct flight_key_input *in, uint8_t *out, size_t cap)
{
	struct flight_param sorted[KEY_MAX_PARAMS];
	struct out o = { out, 0, cap < FLIGHT_KEY_MAX ? cap : FLIGHT_KEY_MAX, false };
	uint8_t head[3] = { FLIGHT_KEY_VERSION, (uint8_t)in->protocol, in->describe };
	int n = 0;

	if (in->nparams > KEY_MAX_PARAMS || in->nparam_types > KEY_MAX_PARAMS || in->nparams < 0 ||
	    in->nparam_types < 0)
		return -EINVAL;
	for (int i = 0; i < in->nparams; i++)
		if (strcmp(in->params[i].name, "application_name") != 0)
			sorted[n++] = in->params[i];
	qsort(sorted, (size_t)n, sizeof(sorted[0]), cmp_param);

	put(&o, head, sizeof(head));
	put_str(&o, in->service);
	put_str(&o, in->server_user);
	put_str(&o, in->server_db);
	put_str(&o, in->database);
	put_str(&o, in->user);
	put_str(&o, in->role);
	uint8_t tag[8];
	for (int i = 0; i < 8; i++)
		tag[i] = (uint8_t)(in->policy_tag >> (56 - 8 * i));
	put(&o, tag, sizeof(tag));
	uint8_t count[2] = { (uint8_t)(n >> 8), (uint8_t)n };
	put(&o, count, 2);
	for (int i = 0; i < n; i++) {
		put_str(&o, sorted[i].name);
		put_str(&o, sorted[i].value);
	}
	put(&o, in->carry, in->carry ? in->carry_len : 0);
	put(&o, in->query, in->query_len);
	uint8_t types[KEY_MAX_PARAMS * 4];
	for (int i = 0; i < in->nparam_types; i++) {
		uint32_t t = in->param_types[i];
		types[i * 4] = (uint8_t)(t >> 24);
		types[i * 4 + 1] = (uint8_t)(t >> 16);
		types[i * 4 + 2] = (uint8_t)(t >> 8);
		types[i * 4 + 3] = (uint8_t)t;
	}
	put(&o, types, (size_t)in->nparam_types * 4);
	put(&o, in->bind, in->bind ? in->bind_len : 0);
	put(&o, in->stmt_id, in->stmt_id ? in->stmt_id_len : 0);
	if (o.full)
		return -E2BIG;
	return (long)o.len;
}

uint64_t flight_key_hash(const uint8_t *key, size_t len)
{
	return XXH3_64bits(key, len);
}

bool flight_key_equal(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	return alen == blen && memcmp(a, b, alen) == 0;
}
