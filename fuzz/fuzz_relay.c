/* libFuzzer target: a client's byte stream after login, through the relay's scanners
 * (scan_client, note_sql, the prepared-statement rewriting, scan_server) against a scripted
 * server, in session, transaction and statement pooling (see conn_harness.h).
 * Input: [mode byte] then chunks. mode % 3 picks the pool mode, bit 6 a read-write-split
 * transaction pool instead (route.c's batch_read_only reads each batch before its claim); bit
 * 7 ends with Terminate instead of a plain close. */
#include "conn_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const users[] = { "s", "t", "st" };

	if (size < 1)
		return 0;
	h_begin(0);
	h_startup(data[0] & 0x40 ? "rw" : users[(data[0] & 0x3f) % 3], "db");
	h_run_chunks(data + 1, size - 1);
	h_end(data[0] & 0x80);
	return 0;
}
