/* libFuzzer target: a whole connection of the kv's Redis listener (src/kv/resp_front.c)
 * after its accept: RESP2 multi-bulk and inline commands, pipelined and split anywhere, the
 * input buffer's growth and shrinking, each command's arity and option parsing (SET's EX/PX/
 * NX/XX, SCAN's cursor, MATCH and COUNT, MSET's pairs, EXPIRE's times), AUTH against the
 * harness's auth_file and pool rules, SELECT over kv_databases, HELLO 2/3, CLIENT, INFO,
 * CONFIG, ECHO, QUIT, and Redis's error replies (see conn_harness.h: one threadless worker,
 * the client on a socketpair). The harness starts no kv router (main.c's start_kv does), so
 * a command that gets as far as a kv call is answered "kv routing is not running": what is
 * fuzzed is everything a client's bytes reach before the shards (the replies built from the
 * shards' answers are the integration tests'). Input: [selector] then chunks (server chunks
 * have no server to go to); bit 7 of the selector ends with QUIT, else the client just
 * leaves. */
#include "conn_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	h_begin_redis();
	h_run_chunks(data + 1, size - 1);
	if (data[0] & 0x80) {
		static const uint8_t quit[] = "*1\r\n$4\r\nQUIT\r\n";
		h_client_send(quit, sizeof quit - 1);
		h_pump();
	}
	h_end(false);
	return 0;
}
