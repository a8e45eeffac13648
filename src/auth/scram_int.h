/* Internals shared by the SCRAM client (scram.c) and server (scram_server.c): strict base64,
 * the attribute reader for SCRAM messages, and the digests. Not for use outside src/auth/. */
#ifndef TUSK_AUTH_SCRAM_INT_H
#define TUSK_AUTH_SCRAM_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/scram.h"

#define SCRAM_ITER_MAX 10000000
/* A key, proof or signature in base64: 32 bytes make 44 characters. */
#define SCRAM_KEY_B64_LEN ((SCRAM_KEY_LEN + 2) / 3 * 4)

/* Base64 of n bytes into out (NUL-terminated): its length, or -ENOSPC. */
int scram_b64_encode(const uint8_t *in, size_t n, char *out, size_t cap);
/* Strict base64 (standard alphabet, padded, canonical, no whitespace) into at most cap bytes:
 * the decoded length, or -EPROTO when the text is not base64 or decodes to more than cap. */
int scram_b64_decode(const char *in, size_t n, uint8_t *out, size_t cap);

/* RFC 5802 printable: 0x21..0x7e except ','. */
bool scram_nonce_char_ok(char c);

/* Reads one attribute "a=value" (value non-empty, no ',') at a time from a message. */
struct scram_reader {
	const char *p;
	const char *end;
};
int scram_read_attr(struct scram_reader *r, char *name, const char **val, size_t *vlen);
/* The attribute the grammar requires next, or -EPROTO. */
int scram_expect_attr(struct scram_reader *r, char want, const char **val, size_t *vlen);
/* Skip well-formed extensions to the end; "m" (mandatory extension) is -EPROTO. */
int scram_skip_extensions(struct scram_reader *r);

/* 0 or -EIO. */
int scram_hmac_sha256(const uint8_t *key, size_t klen, const void *data, size_t dlen,
		      uint8_t out[SCRAM_KEY_LEN]);
int scram_sha256(const void *data, size_t len, uint8_t out[SCRAM_KEY_LEN]);
/* md5 over two pieces as lowercase hex: 0 or -EIO (md5 unavailable, e.g. a FIPS provider). */
int scram_md5_hex(const void *a, size_t alen, const void *b, size_t blen, char out[33]);

#endif
