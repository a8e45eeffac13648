/* libFuzzer target for the pg_hba.conf loader. Besides crashes and leaks, it checks that a load
 * either fails with errors and no result or succeeds, and that every match names a line that
 * exists and a known method. Errors go to /dev/null so their formatting runs too. The input is an
 * exact-size heap copy, so ASan flags a read even one byte past it. */
#include <arpa/inet.h>
#include <netinet/in.h>

#include "auth/hba.h"
#include "file_harness.h"

static struct net_addr make_addr(const char *s)
{
	struct net_addr a;
	memset(&a, 0, sizeof(a));
	struct sockaddr_in *v4 = (struct sockaddr_in *)&a.sa;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&a.sa;
	if (inet_pton(AF_INET, s, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		a.len = sizeof(*v4);
	} else {
		check(inet_pton(AF_INET6, s, &v6->sin6_addr) == 1);
		v6->sin6_family = AF_INET6;
		a.len = sizeof(*v6);
	}
	return a;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const addrs[] = { "127.0.0.1", "10.1.2.3", "::1", "::ffff:10.1.2.3", "2001:db8::1" };
	static const char *const names[] = { "all", "app", "My DB", "a\"b", "" };
	struct hba *h = (struct hba *)1;
	size_t lines;
	char *text = fuzz_file_text(data, size, &lines);

	int n = hba_load_buffer("fuzz.conf", text, size, NULL, fuzz_devnull(), &h);
	check(n >= 0);
	if (n > 0) {
		check(h == (struct hba *)1);
		free(text);
		return 0;
	}
	check(h != NULL && h != (struct hba *)1);
	check((size_t)hba_count(h) <= lines);
	for (int conn = HBA_LOCAL; conn <= HBA_HOST_TLS; conn++) {
		for (size_t a = 0; a <= sizeof(addrs) / sizeof(addrs[0]); a++) {
			struct net_addr addr;
			if (a < sizeof(addrs) / sizeof(addrs[0]))
				addr = make_addr(addrs[a]);
			for (size_t d = 0; d < sizeof(names) / sizeof(names[0]); d++) {
				struct hba_hit hit;
				const struct net_addr *pa = conn == HBA_LOCAL || a == sizeof(addrs) / sizeof(addrs[0]) ? NULL : &addr;
				/* the name a lookup found, for host-name lines (matched case-insensitively) */
				static const struct hba_peer_name pn = { true, "A.example.com" };
				enum hba_result r = hba_match(h, (enum hba_conn)conn, names[d], names[(d + 1) % 5], pa, NULL, &hit);
				check(r == HBA_MATCH || r == HBA_NO_MATCH || (r == HBA_NEED_NAME && pa && hba_has_names(h)));
				if (r == HBA_NEED_NAME)
					check(hba_match(h, (enum hba_conn)conn, names[d], names[(d + 1) % 5], pa, &pn, &hit) !=
					      HBA_NEED_NAME);
				if (r == HBA_MATCH) {
					check(hit.line >= 1 && (size_t)hit.line <= lines);
					check(strcmp(hba_method_name(hit.method), "?") != 0);
					/* clientcert= only on hostssl lines; the cert method always verify-full */
					check(hit.clientcert == HBA_CLIENTCERT_OFF || conn == HBA_HOST_TLS);
					check(hit.method != HBA_CERT || hit.clientcert == HBA_CLIENTCERT_FULL);
					/* a method's options on its own lines only */
					check((hit.ldap != NULL) == (hit.method == HBA_LDAP));
					check((hit.pam != NULL) == (hit.method == HBA_PAM));
				}
			}
		}
	}
	hba_free(h);
	free(text);
	return 0;
}
