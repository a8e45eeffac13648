/* libFuzzer target: an admin console session (the simple and extended protocol of
 * console.c and the commands behind it) after a trusted login as a full admin or a stats
 * user (see conn_harness.h). RELOAD and SHUTDOWN signal the process; the harness ignores
 * those signals. Input: [selector] then chunks; bit 0 picks "monitor" over "admin", bit 1
 * the database name "pgbouncer" over "tusk", bit 7 ends with Terminate. */
#include "conn_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	h_begin(0);
	h_startup(data[0] & 1 ? "monitor" : "admin", data[0] & 2 ? "pgbouncer" : "tusk");
	h_run_chunks(data + 1, size - 1);
	h_end(data[0] & 0x80);
	return 0;
}
