/* PAM authentication's pure parts: PAM_RHOST as PostgreSQL sets it ([local] on a Unix socket,
 * the numeric address otherwise), and a check refused before any PAM call (an empty service or
 * user, names too long, a full queue), with nothing left pending. The checks themselves run
 * against real PAM stacks in tests/integration/test_pam_auth.py. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include <cmocka.h>

#include "auth/pamauth.h"

static void test_rhost(void **state)
{
	(void)state;
	char out[128];
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	assert_int_equal(pamauth_rhost((struct sockaddr *)&un, sizeof un.sun_family, false, out, sizeof out), 7);
	assert_string_equal(out, "[local]");
	struct sockaddr_in in = { .sin_family = AF_INET };
	inet_pton(AF_INET, "192.0.2.7", &in.sin_addr);
	assert_true(pamauth_rhost((struct sockaddr *)&in, sizeof in, false, out, sizeof out) > 0);
	assert_string_equal(out, "192.0.2.7");
	struct sockaddr_in6 in6 = { .sin6_family = AF_INET6 };
	inet_pton(AF_INET6, "2001:db8::1", &in6.sin6_addr);
	assert_true(pamauth_rhost((struct sockaddr *)&in6, sizeof in6, false, out, sizeof out) > 0);
	assert_string_equal(out, "2001:db8::1");
	assert_int_equal(pamauth_rhost((struct sockaddr *)&in6, sizeof in6, false, out, 4), -EINVAL); /* too small */
	struct sockaddr other = { .sa_family = AF_APPLETALK };
	assert_int_equal(pamauth_rhost(&other, sizeof other, false, out, sizeof out), -EINVAL);
}

static int dones;
static void count_done(void *arg, int rc, const char *why)
{
	(void)arg;
	(void)rc;
	(void)why;
	dones++;
}

static void test_submit_refusals(void **state)
{
	(void)state;
	struct pamauth_pool *p;
	struct sockaddr_in in = { .sin_family = AF_INET };
	char longname[PAMAUTH_USER_MAX + 1];
	memset(longname, 'u', sizeof longname - 1);
	longname[sizeof longname - 1] = '\0';
	struct pamauth_check k = { .service = "tusk-unit", .user = "u", .password = "pw",
				   .peer = (struct sockaddr *)&in, .peer_len = sizeof in };

	assert_int_equal(pamauth_pool_new(1, 2, &p), 0);
	k.user = longname;
	assert_int_equal(pamauth_submit(p, &k, count_done, NULL), -ENAMETOOLONG);
	k.user = "";
	assert_int_equal(pamauth_submit(p, &k, count_done, NULL), -EINVAL);
	k.user = "u";
	k.service = "";
	assert_int_equal(pamauth_submit(p, &k, count_done, NULL), -EINVAL);
	k.service = longname;
	assert_int_equal(pamauth_submit(p, &k, count_done, NULL), -ENAMETOOLONG);
	assert_int_equal(pamauth_pending(p), 0);
	pamauth_pool_stop(p);

	k.service = "tusk-unit";
	assert_int_equal(pamauth_pool_new(1, 0, &p), 0);
	assert_int_equal(pamauth_submit(p, &k, count_done, NULL), -EAGAIN); /* no room at all */
	assert_int_equal(pamauth_pending(p), 0);
	pamauth_pool_stop(p);
	assert_int_equal(dones, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rhost),
		cmocka_unit_test(test_submit_refusals),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
