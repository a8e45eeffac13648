/* LDAP authentication's pure parts: the option string of ldap_options (PgBouncer's
 * auth_ldap_options) and each of its errors, ldapurl taken apart (%-escapes, scope, the first
 * attribute, what it refuses), the search filter (user names with LDAP's special characters
 * refused, $username replaced), the URI list handed to ldap_initialize, and a check refused
 * before any network when the pool is stopped or the queue full. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "auth/ldapauth.h"
#include "config/ldap_options.h"

static struct config_ldap parse_ok(const char *s)
{
	struct config_ldap o;
	char err[256] = "";
	int rc = config_ldap_parse(s, &o, err, sizeof err);
	if (rc != 0)
		fprintf(stderr, "unexpected error for %s: %s\n", s, err);
	assert_int_equal(rc, 0);
	return o;
}

static void expect_error(const char *s, const char *message)
{
	struct config_ldap o;
	char err[256] = "";
	assert_int_equal(config_ldap_parse(s, &o, err, sizeof err), -EINVAL);
	assert_string_equal(err, message);
}

static void test_simple_bind_options(void **state)
{
	(void)state;
	struct config_ldap o = parse_ok("ldapserver=\"a.example b.example\"  ldapprefix=\"cn=\" "
					"ldapsuffix=\", dc=example, dc=net\" ldapport=1389 ldaptls=1");
	assert_false(o.search);
	assert_true(o.starttls);
	assert_false(o.ldaps);
	assert_int_equal(o.port, 1389);
	assert_string_equal(o.server, "a.example b.example");
	assert_string_equal(o.prefix, "cn=");
	assert_string_equal(o.suffix, ", dc=example, dc=net");
	/* ldaptls: only 1 turns it on, as in PostgreSQL */
	o = parse_ok("ldapserver=h ldapsuffix=,dc=x ldaptls=0");
	assert_false(o.starttls);
	/* "" inside quotes is one quote */
	o = parse_ok("ldapserver=h ldapprefix=\"a\"\"b\"");
	assert_string_equal(o.prefix, "a\"b");
}

static void test_search_options(void **state)
{
	(void)state;
	struct config_ldap o = parse_ok("ldapserver=h ldapscheme=ldaps ldapbasedn=\"dc=example,dc=net\" "
					"ldapbinddn=\"cn=reader,dc=example,dc=net\" ldapbindpasswd=secret ldapsearchattribute=cn");
	assert_true(o.search);
	assert_true(o.ldaps);
	assert_int_equal(o.scope, CONFIG_LDAP_SCOPE_SUB);
	assert_string_equal(o.basedn, "dc=example,dc=net");
	assert_string_equal(o.binddn, "cn=reader,dc=example,dc=net");
	assert_string_equal(o.bindpasswd, "secret");
	assert_string_equal(o.searchattribute, "cn");
}

static void test_ldapurl(void **state)
{
	(void)state;
	struct config_ldap o = parse_ok("ldapurl=\"ldap://ldap.example.net:1389/ou=people%2Cdc=example,dc=net?uid,cn?base\"");
	assert_false(o.ldaps);
	assert_true(o.search);
	assert_string_equal(o.server, "ldap.example.net");
	assert_int_equal(o.port, 1389);
	assert_string_equal(o.basedn, "ou=people,dc=example,dc=net");
	assert_string_equal(o.searchattribute, "uid"); /* the first of the list */
	assert_int_equal(o.scope, CONFIG_LDAP_SCOPE_BASE);
	o = parse_ok("ldapurl=ldaps://h/dc=x?" "?" "?(mail=$username)") /* no trigraph */;
	assert_true(o.ldaps);
	assert_int_equal(o.port, 0);
	assert_int_equal(o.scope, CONFIG_LDAP_SCOPE_SUB);
	assert_string_equal(o.searchfilter, "(mail=$username)");
	/* no base DN: a server for simple bind */
	o = parse_ok("ldapurl=ldap://h:389 ldapprefix=uid=");
	assert_false(o.search);
	assert_string_equal(o.server, "h");

	expect_error("ldapurl=ftp://h/dc=x", "unsupported LDAP URL scheme in \"ftp://h/dc=x\" (ldap:// or ldaps://)");
	expect_error("ldapurl=ldap:///dc=x", "invalid host in ldapurl \"ldap:///dc=x\"");
	expect_error("ldapurl=ldap://h:0/dc=x", "invalid port in ldapurl \"ldap://h:0/dc=x\" (1..65535)");
	expect_error("ldapurl=ldap://h:70000/dc=x", "invalid port in ldapurl \"ldap://h:70000/dc=x\" (1..65535)");
	expect_error("ldapurl=ldap://h:x/dc=x", "invalid port in ldapurl \"ldap://h:x/dc=x\" (1..65535)");
	expect_error("ldapurl=ldap://h/dc=x?uid?sub?(uid=*)?ext", "ldapurl extensions are not supported");
	expect_error("ldapurl=ldap://h/dc=x?uid?sub?(uid=*)?ext?more", "too many parts in ldapurl \"ldap://h/dc=x?uid?sub?(uid=*)?ext?more\"");
	expect_error("ldapurl=ldap://h/dc=%2", "invalid %-escape in the base DN of ldapurl");
	expect_error("ldapurl=ldap://h/dc=%zz", "invalid %-escape in the base DN of ldapurl");
	expect_error("ldapurl=ldap://h/dc=%00x", "invalid %-escape in the base DN of ldapurl");
	expect_error("ldapurl=ldap://h/dc=x?uid?sub ldapserver=g", "LDAP option \"ldapserver\" given twice (or also in ldapurl)");
	expect_error("ldapserver=g ldapurl=ldap://h/dc=x",
		     "ldapurl cannot be combined with ldapserver, ldapport, ldapscheme, ldapbasedn, ldapsearchattribute or ldapsearchfilter");
	expect_error("ldapurl=ldap://h/dc=x ldapprefix=uid=",
		     "cannot use ldapbasedn, ldapbinddn, ldapbindpasswd, ldapsearchattribute, ldapsearchfilter, or ldapurl together with ldapprefix");
}

static void test_option_errors(void **state)
{
	(void)state;
	expect_error("", "authentication method \"ldap\" requires argument \"ldapbasedn\", \"ldapprefix\", or \"ldapsuffix\" to be set");
	expect_error("ldapprefix=uid=",
		     "authentication method \"ldap\" requires argument \"ldapserver\" (or an ldapurl with a host) to be set");
	expect_error("ldapserver=h ldapprefix=x ldapbinddn=y",
		     "cannot use ldapbasedn, ldapbinddn, ldapbindpasswd, ldapsearchattribute, ldapsearchfilter, or ldapurl together with ldapprefix");
	expect_error("ldapserver=h ldapbasedn=x ldapsearchattribute=a ldapsearchfilter=(a=$username)",
		     "cannot use ldapsearchattribute together with ldapsearchfilter");
	expect_error("ldapserver=h ldapport=x ldapprefix=x", "invalid LDAP port number \"x\" (1..65535)");
	expect_error("ldapserver=h ldapport=123456 ldapprefix=x", "invalid LDAP port number \"123456\" (1..65535)");
	expect_error("ldapserver=h ldapscheme=LDAP ldapprefix=x", "invalid ldapscheme value \"LDAP\" (ldap or ldaps)");
	expect_error("ldapserver=h ldapprefix=x ldapprefix=y", "LDAP option \"ldapprefix\" given twice (or also in ldapurl)");
	expect_error("ldapserver=h ldapprefix=x bogus=1", "unknown LDAP option \"bogus\"");
	expect_error("ldapserver=h ldapprefix", "expected NAME=VALUE, found a word without \"=\"");
	expect_error("ldapserver=h ldapprefix=\"x", "unterminated quote in the value of ldapprefix");
	expect_error("ldapserver=\" \" ldapprefix=x", "ldapserver is empty");
	expect_error("ldapserver=h:389 ldapprefix=x", "invalid ldapserver host \"h:389\"");
	expect_error("ldapserver=h ldapscheme=ldaps ldaptls=1 ldapprefix=x",
		     "ldaptls=1 (StartTLS) cannot be used with ldapscheme ldaps");
	char big[CONFIG_LDAP_STR_MAX + 64];
	snprintf(big, sizeof big, "ldapserver=h ldapprefix=%0*d", CONFIG_LDAP_STR_MAX, 0);
	expect_error(big, "ldapprefix is longer than 511 bytes");
}

static void test_filter(void **state)
{
	(void)state;
	struct config_ldap o = parse_ok("ldapserver=h ldapbasedn=dc=x");
	char out[128];
	assert_int_equal(ldapauth_filter(&o, "alice", out, sizeof out), (int)strlen("(uid=alice)"));
	assert_string_equal(out, "(uid=alice)");
	/* PostgreSQL refuses, rather than escapes, what a filter gives a meaning to. */
	static const char *bad[] = { "ali*", "a(b", "a)b", "a\\b", "a/b", "*", "" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_int_equal(ldapauth_filter(&o, bad[i], out, sizeof out), -EINVAL);
	/* Other characters are plain in a filter's value. */
	assert_true(ldapauth_filter(&o, "o'brien, jr.=x", out, sizeof out) > 0);
	assert_string_equal(out, "(uid=o'brien, jr.=x)");
	o = parse_ok("ldapserver=h ldapbasedn=dc=x ldapsearchattribute=mail");
	assert_true(ldapauth_filter(&o, "bob", out, sizeof out) > 0);
	assert_string_equal(out, "(mail=bob)");
	o = parse_ok("ldapserver=h ldapbasedn=dc=x ldapsearchfilter=\"(|(uid=$username)(mail=$username@x))\"");
	assert_true(ldapauth_filter(&o, "bob", out, sizeof out) > 0);
	assert_string_equal(out, "(|(uid=bob)(mail=bob@x))");
	assert_int_equal(ldapauth_filter(&o, "b)ob", out, sizeof out), -EINVAL);
	assert_int_equal(ldapauth_filter(&o, "bob", out, 10), -ENOSPC);
	assert_int_equal(ldapauth_filter(&o, "a-rather-long-user-name", out, 24), -ENOSPC);
}

static void test_uris(void **state)
{
	(void)state;
	char out[256];
	struct config_ldap o = parse_ok("ldapserver=\"a b  c\" ldapprefix=x");
	assert_true(ldapauth_uris(&o, out, sizeof out) > 0);
	assert_string_equal(out, "ldap://a:389 ldap://b:389 ldap://c:389");
	o = parse_ok("ldapserver=a ldapscheme=ldaps ldapprefix=x");
	assert_true(ldapauth_uris(&o, out, sizeof out) > 0);
	assert_string_equal(out, "ldaps://a:636");
	o = parse_ok("ldapserver=a,b ldapport=1636 ldapscheme=ldaps ldapprefix=x");
	assert_true(ldapauth_uris(&o, out, sizeof out) > 0);
	assert_string_equal(out, "ldaps://a:1636 ldaps://b:1636");
	assert_int_equal(ldapauth_uris(&o, out, 10), -ENOSPC);
}

static int dones;
static void count_done(void *arg, int rc, const char *why)
{
	(void)arg;
	(void)why;
	assert_int_equal(rc, -ECANCELED);
	dones++;
}

/* The queue's bound, and a stop that cancels what never ran; nothing reaches a server (the
 * port is one nobody listens on, and the threads are busy with the first checks meanwhile). */
static void test_pool_bounds(void **state)
{
	(void)state;
	struct ldapauth_pool *p;
	struct config_ldap o = parse_ok("ldapserver=127.0.0.1 ldapport=9 ldapprefix=x");
	assert_int_equal(ldapauth_pool_new(1, 2, &p), 0);
	char longname[LDAPAUTH_USER_MAX + 1];
	memset(longname, 'u', sizeof longname - 1);
	longname[sizeof longname - 1] = '\0';
	assert_int_equal(ldapauth_submit(p, &o, longname, "pw", 1000, count_done, NULL), -ENAMETOOLONG);
	ldapauth_pool_stop(p);

	assert_int_equal(ldapauth_pool_new(1, 0, &p), 0);
	assert_int_equal(ldapauth_submit(p, &o, "u", "pw", 1000, count_done, NULL), -EAGAIN); /* no room at all */
	assert_int_equal(ldapauth_pending(p), 0);
	ldapauth_pool_stop(p);
	assert_int_equal(dones, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_simple_bind_options),
		cmocka_unit_test(test_search_options),
		cmocka_unit_test(test_ldapurl),
		cmocka_unit_test(test_option_errors),
		cmocka_unit_test(test_filter),
		cmocka_unit_test(test_uris),
		cmocka_unit_test(test_pool_bounds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
