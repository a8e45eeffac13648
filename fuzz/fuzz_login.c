/* libFuzzer target: the startup and authentication exchange for every client_auth method
 * (trust, password, md5, scram-sha-256, reject, a blocked rule, a user absent from auth_file)
 * against pools and the admin console (see conn_harness.h). cert needs TLS, which the
 * harness does not speak: it is not covered here (tests/integration/test_tls.py is).
 * Input: [selector] then chunks. selector & 7 picks the user, bit 3 the console database,
 * bits 4-5 the console's client_auth (trust, password, md5, scram-sha-256), bit 6 leaves the startup packet to the input (SSLRequest, CancelRequest, garbage), bit 7
 * ends with Terminate. */
#include "conn_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const users[] = { "t", "password", "md5", "scram", "rejected", "blocked", "nobody", "admin" };

	if (size < 1)
		return 0;
	uint8_t sel = data[0];
	h_begin((sel >> 4) & 3);
	if (!(sel & 0x40))
		h_startup(users[sel & 7], sel & 8 ? "tusk" : "db");
	h_run_chunks(data + 1, size - 1);
	h_end(sel & 0x80);
	return 0;
}
