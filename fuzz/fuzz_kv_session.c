/* libFuzzer target: a session of the kv database (src/kv/front.c behind vdb: the simple and
 * extended protocol, each call's parser, the growing table of named statements, Bind's text
 * and binary values, Describe and Close) after a login under the transaction pool rule (see
 * conn_harness.h, whose configuration has a kv section). The harness starts no kv router
 * (main.c's start_kv does), so a call that gets as far as run_call is answered 57P03: what is
 * fuzzed is everything a client's bytes reach before the shards. Input: [selector] then
 * chunks; bit 7 ends with Terminate. */
#include "conn_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	h_begin(0);
	h_startup("t", "kv");
	h_run_chunks(data + 1, size - 1);
	h_end(data[0] & 0x80);
	return 0;
}
