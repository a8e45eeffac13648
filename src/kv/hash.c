/* Shard placement: PostgreSQL's hashtextextended(ns || ':' || key, 0), reproduced here so tusk
 * and the shard databases (kv.hash, a one-line SQL function over the built-in) agree. The
 * built-in is Bob Jenkins' lookup3 (public domain) over the bytes, read as little-endian words
 * on a little-endian server: hash_bytes_extended with seed 0 returns (b << 32) | c. */
#include "kv/hash.h"

#include <errno.h>
#include <string.h>

#define ROT(x, k) (((x) << (k)) | ((x) >> (32 - (k))))

#define MIX(a, b, c)                                                                               \
	do {                                                                                           \
		a -= c; a ^= ROT(c, 4);  c += b;                                                           \
		b -= a; b ^= ROT(a, 6);  a += c;                                                           \
		c -= b; c ^= ROT(b, 8);  b += a;                                                           \
		a -= c; a ^= ROT(c, 16); c += b;                                                           \
		b -= a; b ^= ROT(a, 19); a += c;                                                           \
		c -= b; c ^= ROT(b, 4);  b += a;                                                           \
	} while (0)

#define FINAL(a, b, c)                                                                             \
	do {                                                                                           \
		c ^= b; c -= ROT(b, 14);                                                                   \
		a ^= c; a -= ROT(c, 11);                                                                   \
		b ^= a; b -= ROT(a, 25);                                                                   \
		c ^= b; c -= ROT(b, 16);                                                                   \
		a ^= c; a -= ROT(c, 4);                                                                    \
		b ^= a; b -= ROT(a, 14);                                                                   \
		c ^= b; c -= ROT(b, 24);                                                                   \
	} while (0)

/* The input ns ':' key as a stream of bytes, without copying it into one buffer. */
struct kv_hash_in {
	const unsigned char *ns, *key;
	size_t ns_len, key_len, pos;
};

static size_t take(struct kv_hash_in *in, unsigned char *out, size_t want)
{
	size_t n = 0;

	while (n < want) {
		size_t p = in->pos;
		if (p < in->ns_len) {
			size_t m = in->ns_len - p < want - n ? in->ns_len - p : want - n;
			memcpy(out + n, in->ns + p, m);
			n += m;
			in->pos += m;
		} else if (p == in->ns_len) {
			out[n++] = ':';
			in->pos++;
		} else if (p - in->ns_len - 1 < in->key_len) {
			size_t k = p - in->ns_len - 1, m = in->key_len - k < want - n ? in->key_len - k : want - n;
			memcpy(out + n, in->key + k, m);
			n += m;
			in->pos += m;
		} else {
			break;
		}
	}
	return n;
}

static uint32_t le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int64_t kv_hash(const char *ns, size_t ns_len, const char *key, size_t key_len)
{
	struct kv_hash_in in = { (const unsigned char *)ns, (const unsigned char *)key, ns_len, key_len, 0 };
	size_t total = ns_len + 1 + key_len;
	/* PostgreSQL takes the length as an int and adds it as a uint32. */
	uint32_t a, b, c, len = (uint32_t)total;
	unsigned char blk[12];

	a = b = c = 0x9e3779b9u + len + 3923095u;
	while (total - in.pos >= 12) {
		(void)take(&in, blk, 12);
		a += le32(blk);
		b += le32(blk + 4);
		c += le32(blk + 8);
		MIX(a, b, c);
	}
	/* The last 0..11 bytes, zero-padded; the lowest byte of c is left out (it used to hold the
	 * length), so bytes 8..10 go to c shifted by one byte. */
	memset(blk, 0, sizeof blk);
	size_t rest = take(&in, blk, 11);
	if (rest > 0) {
		a += le32(blk);
		b += le32(blk + 4);
		c += le32(blk + 8) << 8;
	}
	FINAL(a, b, c);
	return (int64_t)(((uint64_t)b << 32) | c);
}

int kv_shard_of_hash(int64_t hash, int nshards)
{
	if (nshards < 1 || nshards > KV_MAX_SHARDS)
		return -EINVAL;
	return (int)(((uint64_t)hash & (uint64_t)INT64_MAX) % (uint64_t)nshards);
}

int kv_shard_of(const char *ns, size_t ns_len, const char *key, size_t key_len, int nshards)
{
	return kv_shard_of_hash(kv_hash(ns, ns_len, key, key_len), nshards);
}
