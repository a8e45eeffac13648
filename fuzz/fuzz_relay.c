/* libFuzzer target: a client's byte stream after login, through the relay's scanners
 * (scan_client, note_sql, the prepared-statement rewriting, scan_server) against a scripted
 * server, in session, transaction and statement pooling (see conn_harness.h).
 * Input: [mode byte] then chunks. The low 6 bits m pick the pool mode (m % 3), or for m >= 60
 * a replication connection (frontend/replication.c: 60 physical, else logical), whose bytes
 * pass unread both ways (the server's framed); bit 6 a read-write-split transaction pool
 * instead (route.c's batch_read_only reads each batch before its claim); bit 7 ends with
 * Terminate instead of a plain close. */
#include "conn_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const users[] = { "s", "t", "st" };

	if (size < 1)
		return 0;
	h_begin(0);
	unsigned m = data[0] & 0x3f;
	if (m >= 60)
		h_startup_repl("s", "db", m == 60 ? "true" : "database");
	else
		h_startup(data[0] & 0x40 ? "rw" : users[m % 3], "db");
	h_run_chunks(data + 1, size - 1);
	h_end(data[0] & 0x80);
	return 0;
}
