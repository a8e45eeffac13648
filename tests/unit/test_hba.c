/* pg_hba.conf subset: every line kind and connection kind, name lists and quoting, CIDR and
 * netmask addresses in both families (IPv4-mapped peers included), first-match order, the
 * option map=NAME against an ident_file, and each load error with its exact "FILE:LINE: hba:"
 * text, all of them reported in one load. */
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth/hba.h"
#include "auth/ident.h"
#include "config/ldap_options.h"

/* Load text as "t.conf"; returns the error count and leaves the messages in *errs (caller frees). */
static int load(const char *text, struct hba **h, char **errs)
{
	size_t errlen;
	FILE *ef = open_memstream(errs, &errlen);
	assert_non_null(ef);
	int n = hba_load_buffer("t.conf", text, strlen(text), NULL, ef, h);
	fclose(ef);
	return n;
}

static struct hba *load_ok(const char *text)
{
	struct hba *h = NULL;
	char *errs = NULL;
	int n = load(text, &h, &errs);
	if (n != 0)
		fprintf(stderr, "unexpected errors:\n%s", errs);
	assert_int_equal(n, 0);
	assert_string_equal(errs, "");
	free(errs);
	assert_non_null(h);
	return h;
}

static void expect_errors(const char *text, int count, const char *messages)
{
	struct hba *h = NULL;
	char *errs = NULL;
	assert_int_equal(load(text, &h, &errs), count);
	assert_null(h);
	assert_string_equal(errs, messages);
	free(errs);
}

static struct net_addr ip(const char *s)
{
	struct net_addr a;
	memset(&a, 0, sizeof(a));
	struct sockaddr_in *v4 = (struct sockaddr_in *)&a.sa;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&a.sa;
	if (inet_pton(AF_INET, s, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		a.len = sizeof(*v4);
	} else {
		assert_int_equal(inet_pton(AF_INET6, s, &v6->sin6_addr), 1);
		v6->sin6_family = AF_INET6;
		a.len = sizeof(*v6);
	}
	return a;
}

/* The line that matches, 0 for none; *m gets the method. */
static int match(const struct hba *h, enum hba_conn conn, const char *db, const char *user, const char *addr,
		 enum hba_method *m)
{
	struct net_addr a;
	struct hba_hit hit;
	if (addr)
		a = ip(addr);
	if (hba_match(h, conn, db, user, addr ? &a : NULL, NULL, &hit) != HBA_MATCH)
		return 0;
	assert_true(hit.line > 0);
	if (m)
		*m = hit.method;
	return hit.line;
}

/* Host names in the address field (PostgreSQL's): the line is decided by the client's name,
 * which the caller looks up only when such a line is the first that otherwise matches; the name
 * must be verified (its addresses hold the client's); ".suffix" matches longer names ending so;
 * both case-insensitively. */
static void test_host_names(void **state)
{
	(void)state;
	struct hba *h = load_ok("host all carol 10.0.0.0/8 trust\n"
				"host all alice,bob db.example.com md5\n"
				"host all all .Example.com password\n"
				"host all all all reject\n");
	struct net_addr a = ip("10.1.2.3"), far = ip("192.168.1.1");
	struct hba_hit hit = { 0 };
	struct hba_peer_name db = { true, "DB.example.COM" }, www = { true, "www.example.com" },
			     bare = { true, "example.com" }, near = { true, "xexample.com" },
			     unverified = { false, "db.example.com" }, none = { false, "" };
	assert_true(hba_has_names(h));
	/* an address line before, or a user no name line names: no name needed */
	assert_int_equal(hba_match(h, HBA_HOST_PLAIN, "d", "carol", &a, NULL, &hit), HBA_MATCH);
	assert_int_equal(hit.line, 1);
	assert_int_equal(hba_match(h, HBA_LOCAL, "d", "alice", NULL, NULL, &hit), HBA_NO_MATCH);
	/* the first line that otherwise matches names a host: the name decides */
	hit.line = 0;
	assert_int_equal(hba_match(h, HBA_HOST_PLAIN, "d", "alice", &a, NULL, &hit), HBA_NEED_NAME);
	assert_int_equal(hit.line, 0); /* untouched */
	assert_int_equal(hba_match(h, HBA_HOST_PLAIN, "d", "eve", &far, NULL, &hit), HBA_NEED_NAME);
	const struct {
		const char *user;
		const struct hba_peer_name *pn;
		int line;
	} want[] = {
		{ "alice", &db, 2 },         { "bob", &db, 2 },        { "eve", &db, 3 },  /* eve: not on line 2 */
		{ "alice", &www, 3 },        { "alice", &bare, 4 },    /* the suffix needs a longer name */
		{ "alice", &near, 4 },       /* ends with "example.com", not ".example.com" */
		{ "alice", &unverified, 4 }, /* its addresses do not hold the client's */
		{ "alice", &none, 4 },
	};
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
		assert_int_equal(hba_match(h, HBA_HOST_PLAIN, "d", want[i].user, &a, want[i].pn, &hit), HBA_MATCH);
		assert_int_equal(hit.line, want[i].line);
	}
	assert_int_equal(hba_match_physical(h, HBA_HOST_TLS, "alice", &a, NULL, &hit), HBA_NO_MATCH);
	hba_free(h);
	h = load_ok("host all all 10.0.0.0/8 md5\n");
	assert_false(hba_has_names(h));
	assert_false(hba_has_names(NULL));
	hba_free(h);
}

/* PostgreSQL's hostgssenc and hostnogssenc: tusk encrypts no connection with GSSAPI (it answers
 * N to a GSSENCRequest), so a hostgssenc line matches nothing and a hostnogssenc line every TCP
 * connection, plaintext or TLS, as a host line. */
static void test_gssenc_types(void **state)
{
	(void)state;
	struct hba *h = load_ok("hostgssenc all all all trust\n"
				"hostnogssenc all a 127.0.0.1/32 md5\n"
				"host all all all reject\n");
	enum hba_method m;
	assert_int_equal(match(h, HBA_HOST_PLAIN, "d", "a", "127.0.0.1", &m), 2);
	assert_int_equal(m, HBA_MD5);
	assert_int_equal(match(h, HBA_HOST_TLS, "d", "a", "127.0.0.1", &m), 2);
	assert_int_equal(match(h, HBA_HOST_TLS, "d", "b", "127.0.0.1", &m), 3);
	assert_int_equal(match(h, HBA_LOCAL, "d", "a", NULL, &m), 0);
	hba_free(h);
}

/* An IPv4 address in no subnet of this machine's interfaces (machines may use the
 * documentation ranges themselves), or NULL. */
static const char *foreign_ipv4(void)
{
	static const char *const candidates[] = { "192.0.2.77", "198.51.100.77", "203.0.113.77", "100.127.200.77" };
	struct ifaddrs *ifs;
	if (getifaddrs(&ifs) < 0)
		return NULL;
	const char *found = NULL;
	for (size_t k = 0; k < sizeof candidates / sizeof candidates[0] && !found; k++) {
		struct in_addr c;
		bool inside = false;
		assert_int_equal(inet_pton(AF_INET, candidates[k], &c), 1);
		for (struct ifaddrs *i = ifs; i && !inside; i = i->ifa_next)
			if (i->ifa_addr && i->ifa_netmask && i->ifa_addr->sa_family == AF_INET) {
				uint32_t a = ((struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr;
				uint32_t m = ((struct sockaddr_in *)i->ifa_netmask)->sin_addr.s_addr;
				inside = (a & m) == (c.s_addr & m);
			}
		if (!inside)
			found = candidates[k];
	}
	freeifaddrs(ifs);
	return found;
}

/* samehost: one of this machine's addresses (the loopback's 127.0.0.1, not 127.0.0.2: lo holds
 * 127.0.0.1/8); samenet: any address of an interface's subnet (127.0.0.2 too, not one of no
 * interface's subnet). IPv4-mapped peers as IPv4. */
static void test_samehost_samenet(void **state)
{
	(void)state;
	struct hba *h = load_ok("host all a samehost trust\n"
				"host all a samenet md5\n"
				"host all all all reject\n");
	enum hba_method m;
	assert_int_equal(match(h, HBA_HOST_PLAIN, "d", "a", "127.0.0.1", &m), 1);
	assert_int_equal(match(h, HBA_HOST_TLS, "d", "a", "::ffff:127.0.0.1", &m), 1);
	assert_int_equal(match(h, HBA_HOST_PLAIN, "d", "a", "127.0.0.2", &m), 2);
	assert_int_equal(m, HBA_MD5);
	const char *foreign = foreign_ipv4();
	if (foreign)
		assert_int_equal(match(h, HBA_HOST_PLAIN, "d", "a", foreign, &m), 3);
	assert_int_equal(match(h, HBA_HOST_PLAIN, "d", "b", "127.0.0.1", &m), 3);
	hba_free(h);
}

/* The database keyword "replication" matches physical replication connections and only them;
 * "all" and names never match those (PostgreSQL's rule); quoted, it is a database's name. */
static void test_replication_keyword(void **state)
{
	(void)state;
	struct hba *h = load_ok("host replication rep 127.0.0.1/32 md5\n"
				"host \"replication\" all 127.0.0.1/32 scram-sha-256\n"
				"host all all 127.0.0.1/32 trust\n"
				"host replication,app all 10.0.0.0/8 password\n");
	struct net_addr a = ip("127.0.0.1"), far = ip("10.1.2.3");
	struct hba_hit hit;
	enum hba_method m;
	assert_int_equal(hba_match_physical(h, HBA_HOST_PLAIN, "rep", &a, NULL, &hit), HBA_MATCH);
	assert_int_equal(hit.line, 1);
	assert_int_equal(hit.method, HBA_MD5);
	/* another user: no later line holds the keyword for this address, "all" does not count */
	assert_int_equal(hba_match_physical(h, HBA_HOST_PLAIN, "other", &a, NULL, &hit), HBA_NO_MATCH);
	assert_int_equal(hba_match_physical(h, HBA_HOST_PLAIN, "other", &far, NULL, &hit), HBA_MATCH);
	assert_int_equal(hit.line, 4);
	assert_int_equal(hit.method, HBA_PASSWORD);
	/* an ordinary connection to a database named replication: the quoted name, not the keyword */
	assert_int_equal(match(h, HBA_HOST_PLAIN, "replication", "rep", "127.0.0.1", &m), 2);
	assert_int_equal(m, HBA_SCRAM);
	assert_int_equal(match(h, HBA_HOST_PLAIN, "app", "u", "10.1.2.3", &m), 4);
	assert_int_equal(match(h, HBA_HOST_PLAIN, "other", "u", "10.1.2.3", &m), 0);
	hba_free(h);
}

static void test_line_kinds(void **state)
{
	(void)state;
	struct hba *h = load_ok("# comment\n"
				"\n"
				"local   all all                trust\n"
				"hostssl all all 10.0.0.0/8     cert\n"
				"hostnossl all all 10.0.0.0/8   md5\n"
				"host    all all all            scram-sha-256\n"
				"   \t  # indented comment\r\n"
				"local   all all                reject\n"
				"local   all all                peer\n");
	enum hba_method m;
	assert_int_equal(hba_count(h), 6);
	assert_int_equal(match(h, HBA_LOCAL, "db", "u", NULL, &m), 3);
	assert_int_equal(m, HBA_TRUST);
	assert_int_equal(match(h, HBA_HOST_TLS, "db", "u", "10.1.1.1", &m), 4);
	assert_int_equal(m, HBA_CERT);
	assert_int_equal(match(h, HBA_HOST_PLAIN, "db", "u", "10.1.1.1", &m), 5);
	assert_int_equal(m, HBA_MD5);
	/* host matches both kinds of TCP connection. */
	assert_int_equal(match(h, HBA_HOST_PLAIN, "db", "u", "192.0.2.1", &m), 6);
	assert_int_equal(m, HBA_SCRAM);
	assert_int_equal(match(h, HBA_HOST_TLS, "db", "u", "2001:db8::1", &m), 6);
	/* A host connection without an address matches only "all". */
	assert_int_equal(match(h, HBA_HOST_TLS, "db", "u", NULL, &m), 6);
	hba_free(h);

	/* hostssl only TLS, hostnossl only plain, local never TCP. */
	h = load_ok("hostssl all all all password\n");
	assert_int_equal(match(h, HBA_HOST_TLS, "d", "u", "127.0.0.1", &m), 1);
	assert_int_equal(m, HBA_PASSWORD);
	assert_int_equal(match(h, HBA_HOST_PLAIN, "d", "u", "127.0.0.1", NULL), 0);
	assert_int_equal(match(h, HBA_LOCAL, "d", "u", NULL, NULL), 0);
	hba_free(h);
	h = load_ok("hostnossl all all all trust");
	assert_int_equal(match(h, HBA_HOST_PLAIN, "d", "u", "127.0.0.1", NULL), 1);
	assert_int_equal(match(h, HBA_HOST_TLS, "d", "u", "127.0.0.1", NULL), 0);
	hba_free(h);
	h = load_ok("local all all trust\n");
	assert_int_equal(match(h, HBA_HOST_PLAIN, "d", "u", "127.0.0.1", NULL), 0);
	assert_int_equal(match(h, HBA_HOST_TLS, "d", "u", NULL, NULL), 0);
	hba_free(h);
}

static void test_empty_file_matches_nothing(void **state)
{
	(void)state;
	struct hba *h = load_ok("# nothing\n\n");
	assert_int_equal(hba_count(h), 0);
	assert_int_equal(match(h, HBA_LOCAL, "d", "u", NULL, NULL), 0);
	hba_free(h);
	h = load_ok("");
	assert_int_equal(match(h, HBA_HOST_PLAIN, "d", "u", "::1", NULL), 0);
	hba_free(h);
}

static void test_name_lists(void **state)
{
	(void)state;
	struct hba *h = load_ok("local app,reports alice,bob trust\n"
				"local sales, \"My DB\" all md5\n"
				"local sameuser all password\n"
				"local \"all\" \"sameuser\" reject\n"
				"local \"a\"\"b\",x \"c,d\" scram-sha-256 # trailing comment\n"
				"local all x trust#comment\n");
	enum hba_method m;
	assert_int_equal(match(h, HBA_LOCAL, "app", "alice", NULL, &m), 1);
	assert_int_equal(match(h, HBA_LOCAL, "reports", "bob", NULL, &m), 1);
	assert_int_equal(m, HBA_TRUST);
	/* Names are case-sensitive; a list may continue after whitespace following a comma. */
	assert_int_equal(match(h, HBA_LOCAL, "App", "alice", NULL, &m), 0);
	assert_int_equal(match(h, HBA_LOCAL, "app", "carol", NULL, &m), 0);
	assert_int_equal(match(h, HBA_LOCAL, "My DB", "carol", NULL, &m), 2);
	assert_int_equal(m, HBA_MD5);
	assert_int_equal(match(h, HBA_LOCAL, "sales", "x", NULL, &m), 2);
	assert_int_equal(match(h, HBA_LOCAL, "my db", "carol", NULL, &m), 0);
	/* sameuser: database named like the user. */
	assert_int_equal(match(h, HBA_LOCAL, "carol", "carol", NULL, &m), 3);
	assert_int_equal(m, HBA_PASSWORD);
	/* Quoted keywords are plain names. */
	assert_int_equal(match(h, HBA_LOCAL, "all", "sameuser", NULL, &m), 4);
	assert_int_equal(m, HBA_REJECT);
	assert_int_equal(match(h, HBA_LOCAL, "all", "other", NULL, &m), 0);
	/* "" inside quotes is one quote; a comma inside quotes is part of the name; # ends the line. */
	assert_int_equal(match(h, HBA_LOCAL, "a\"b", "c,d", NULL, &m), 5);
	assert_int_equal(m, HBA_SCRAM);
	assert_int_equal(match(h, HBA_LOCAL, "x", "c,d", NULL, &m), 5);
	assert_int_equal(match(h, HBA_LOCAL, "x", "c", NULL, &m), 0);
	/* An unquoted # starts a comment even inside a word. */
	assert_int_equal(match(h, HBA_LOCAL, "y", "x", NULL, &m), 6);
	assert_int_equal(m, HBA_TRUST);
	hba_free(h);
}

static void test_cidr_v4(void **state)
{
	(void)state;
	struct hba *h = load_ok("host all all 192.0.2.7/32 trust\n"
				"host all all 10.0.0.0/8 md5\n"
				"host all all 172.16.5.9/12 password\n" /* host bits are ignored */
				"host all all 0.0.0.0/0 reject\n");
	assert_int_equal(match(h, HBA_HOST_PLAIN, "d", "u", "192.0.2.7", NULL), 1);
	assert_int_equal(match(h, HBA_HOST_PLAIN, "d", "u", "192.0.2.8", NULL), 4);
	assert_int_equal(match(h, HBA_HOST_PLAIN, "d", "u", "10.255.255.255", NULL), 2);
	assert_int_equal(match(h, HBA_HOST_PLAIN, "d", "u", "11.0.0.0", NULL), 4);
	assert_int_equal(match(h, HBA_HOST_PLAIN, "d", "u", "172.31.0.1", NULL), 3);
	assert_int_equal(match(h, HBA_HOST_PLAIN, "d", "u", "172.32.0.1", NULL), 4);
	/* IPv4-mapped IPv6 peers match IPv4 lines on their embedded address. */
	assert_int_equal(match(h, HBA_HOST_PLAIN, "d", "u", "::ffff:192.0.2.7", NULL), 1);
	assert_int_equal(match(h, HBA_HOST_PLAIN, "d", "u", "::ffff:10.1.2.3", NULL), 2);
	/* /0 is every IPv4 peer, but no IPv6 one. */
	assert_int_equal(match(h, HBA_HOST_PLAIN, "d", "u", "::1", NULL), 0);
	assert_int_equal(match(h, HBA_HOST_PLAIN, "d", "u", "2001:db8::", NULL), 0);
	/* Not a mapped address: ::192.0.2.7 (IPv4-compatible) and 64:ff9b::c000:207 (NAT64). */
	assert_int_equal(match(h, HBA_HOST_PLAIN, "d", "u", "::192.0.2.7", NULL), 0);
	assert_int_equal(match(h, HBA_HOST_PLAIN, "d", "u", "64:ff9b::c000:207", NULL), 0);
	hba_free(h);
}

static void test_cidr_v6(void **state)
{
	(void)state;
	struct hba *h = load_ok("host all all ::1/128 trust\n"
				"host all all 2001:db8::/32 md5\n"
				"host all all ::ffff:0:0/96 password\n"
				"host all all ::/0 reject\n");
	enum hba_method m;
	assert_int_equal(match(h, HBA_HOST_TLS, "d", "u", "::1", &m), 1);
	assert_int_equal(m, HBA_TRUST);
	assert_int_equal(match(h, HBA_HOST_TLS, "d", "u", "::2", NULL), 4);
	assert_int_equal(match(h, HBA_HOST_TLS, "d", "u", "2001:db8:ffff::1", NULL), 2);
	assert_int_equal(match(h, HBA_HOST_TLS, "d", "u", "2001:db9::1", NULL), 4);
	assert_int_equal(match(h, HBA_HOST_TLS, "d", "u", "::ffff:127.0.0.1", NULL), 3);
	/* IPv6 lines never match a plain AF_INET peer, not even ::/0. */
	assert_int_equal(match(h, HBA_HOST_TLS, "d", "u", "127.0.0.1", NULL), 0);
	hba_free(h);
}

static void test_netmask_form(void **state)
{
	(void)state;
	struct hba *h = load_ok("host all all 192.168.0.0 255.255.0.0 md5\n"
				"host all all 127.0.0.1 255.255.255.255 trust\n"
				"host all all fe80:: ffff:ffff:ffff:ffff:: password\n"
				"host all all 0.0.0.0 0.0.0.0 reject\n");
	enum hba_method m;
	assert_int_equal(match(h, HBA_HOST_PLAIN, "d", "u", "192.168.44.1", &m), 1);
	assert_int_equal(m, HBA_MD5);
	assert_int_equal(match(h, HBA_HOST_PLAIN, "d", "u", "127.0.0.1", &m), 2);
	assert_int_equal(m, HBA_TRUST);
	assert_int_equal(match(h, HBA_HOST_PLAIN, "d", "u", "127.0.0.2", NULL), 4);
	assert_int_equal(match(h, HBA_HOST_PLAIN, "d", "u", "fe80::1:2", NULL), 3);
	assert_int_equal(match(h, HBA_HOST_PLAIN, "d", "u", "fe81::1", NULL), 0);
	hba_free(h);
}

static void test_first_match_wins(void **state)
{
	(void)state;
	struct hba *h = load_ok("host app admin 10.0.0.0/8 reject\n"
				"host app all 10.0.0.0/8 scram-sha-256\n"
				"host all all 10.0.0.0/8 md5\n"
				"host app all 10.0.0.0/8 trust\n");
	enum hba_method m;
	assert_int_equal(match(h, HBA_HOST_PLAIN, "app", "admin", "10.0.0.1", &m), 1);
	assert_int_equal(m, HBA_REJECT);
	assert_int_equal(match(h, HBA_HOST_PLAIN, "app", "bob", "10.0.0.1", &m), 2);
	assert_int_equal(m, HBA_SCRAM);
	assert_int_equal(match(h, HBA_HOST_PLAIN, "other", "admin", "10.0.0.1", &m), 3);
	assert_int_equal(m, HBA_MD5);
	hba_free(h);
}

static void test_each_error(void **state)
{
	(void)state;
	static const struct {
		const char *line;
		const char *message;
	} cases[] = {
		{ "hots all all all trust",
		  "invalid connection type \"hots\" (local, host, hostssl, hostnossl, hostgssenc or hostnogssenc)" },
		{ "hostgssenc all all", "end of line before the address field" },
		{ "local,host all all trust", "the connection type must be a single value, not a list" },
		{ "local", "end of line before the database field" },
		{ "local all", "end of line before the user field" },
		{ "local all all", "end of line before the authentication method" },
		{ "host all all", "end of line before the address field" },
		{ "host all all 10.0.0.0/8", "end of line before the authentication method" },
		{ "local all all md6", "invalid authentication method \"md6\" (trust, reject, password, md5, scram-sha-256, cert, peer, ldap or pam)" },
		{ "local all all md5,trust", "invalid authentication method \"md5\" (trust, reject, password, md5, scram-sha-256, cert, peer, ldap or pam)" },
		{ "local all all trust clientcert=verify-full", "clientcert can only be configured for \"hostssl\" rows" },
		{ "host all all all md5 clientname=DN", "clientname can only be configured for \"hostssl\" rows" },
		{ "hostssl all all all md5 clientcert=1", "invalid value for clientcert: \"1\"" },
		{ "hostssl all all all md5 clientname=cn", "invalid value for clientname: \"cn\"" },
		{ "hostssl all all all cert clientcert=verify-ca", "clientcert only accepts \"verify-full\" when using \"cert\" authentication" },
		{ "hostssl all all all ldap ldapserver=x ldapprefix=a ldapsuffix=b clientcert=no-verify", "invalid value for clientcert: \"no-verify\"" },
		{ "local all all trust frobnicate=1", "authentication option \"frobnicate=1\" is not supported" },
		{ "local all all trust extra", "unexpected field \"extra\" after the authentication method" },
		{ "host all all all md5 map=x", "authentication option \"map\" is only valid for the cert and peer methods" },
		{ "local all all trust map=x", "authentication option \"map\" is only valid for the cert and peer methods" },
		{ "local all all peer mapping=x", "authentication option \"mapping=x\" is not supported" },
		{ "local all all peer map=x", "user name map \"x\" but no ident_file is set" },
		{ "local all all peer map=", "empty user name map in \"map=\"" },
		{ "local all all peer map=x,y", "the map name must be a single value, not a list" },
		{ "host all all all cert", "cert authentication is only supported on hostssl lines" },
		{ "local all all cert", "cert authentication is only supported on hostssl lines" },
		{ "host all all all peer", "peer authentication is only supported on local sockets" },
		{ "hostssl all all all peer", "peer authentication is only supported on local sockets" },
		{ "local +admins all trust", "group membership \"+admins\" is not supported (write the user names)" },
		{ "local all a,+admins trust", "group membership \"+admins\" is not supported (write the user names)" },
		{ "local @dbs all trust", "file inclusion \"@dbs\" needs hba_file on disk" },
		{ "local all @users trust", "file inclusion \"@users\" needs hba_file on disk" },
		{ "local all sameuser trust", "user keyword \"sameuser\" is not supported in the user field" },
		{ "local samerole all trust", "database keyword \"samerole\" is not supported" },
		{ "local all replication,x trust", "user keyword \"replication\" is not supported" },
		{ "local \"\" all trust", "empty database name" },
		{ "local all \"\" trust", "empty user name" },
		{ "local a,,b all trust", "empty element in a comma-separated list" },
		{ "local a, all trust", "end of line before the authentication method" }, /* "all" continues the list */
		{ "local a,", "list ends with a comma" },
		{ "local a, # x", "list ends with a comma" },
		{ "local \"My DB all trust", "unterminated quoted string" },
		{ "host all all db.example.com/24 md5", "specifying both host name and CIDR mask is invalid: \"db.example.com/24\"" },
		{ "host all all db!example.com md5", "invalid IP address \"db!example.com\"" },
		{ "host all all db.example.com", "end of line before the authentication method" }, /* no netmask */
		{ "host all all db.example.com md5 map=x", "authentication option \"map\" is only valid for the cert and peer methods" },
		{ "host all all samenet,samehost md5", "the address must be a single value, not a list" },
		{ "host all all 10.0.0.0/33 md5", "invalid CIDR mask in address \"10.0.0.0/33\" (0..32)" },
		{ "host all all ::1/129 md5", "invalid CIDR mask in address \"::1/129\" (0..128)" },
		{ "host all all 10.0.0.0/ md5", "invalid CIDR mask in address \"10.0.0.0/\" (0..32)" },
		{ "host all all 10.0.0.0/-1 md5", "invalid CIDR mask in address \"10.0.0.0/-1\" (0..32)" },
		{ "host all all 10.0.0.0/8x md5", "invalid CIDR mask in address \"10.0.0.0/8x\" (0..32)" },
		{ "host all all 10.0.0.256/8 md5", "invalid IP address \"10.0.0.256/8\"" },
		{ "host all all 10.0.0.0", "end of line before the netmask of \"10.0.0.0\"" },
		{ "host all all 10.0.0.0 md5", "invalid IP mask \"md5\" for address \"10.0.0.0\"" },
		{ "host all all 10.0.0.0 ffff:: md5", "invalid IP mask \"ffff::\" for address \"10.0.0.0\"" },
		{ "host all all 10.0.0.0 255.0.0.0", "end of line before the authentication method" },
		{ "host all all 10.0.0.0/8,::1/128 md5", "the address must be a single value, not a list" },
	};
	char text[256], want[512];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		/* A good line first, so the bad one is line 2. */
		snprintf(text, sizeof(text), "local all all trust\n%s\n", cases[i].line);
		snprintf(want, sizeof(want), "t.conf:2: hba: %s\n", cases[i].message);
		expect_errors(text, 1, want);
	}
}

static void test_nul_byte(void **state)
{
	(void)state;
	static const char text[] = "local all all trust\nlocal all\0 all trust\n";
	struct hba *h = NULL;
	char *errs = NULL;
	size_t errlen;
	FILE *ef = open_memstream(&errs, &errlen);
	assert_int_equal(hba_load_buffer("t.conf", text, sizeof(text) - 1, NULL, ef, &h), 1);
	fclose(ef);
	assert_string_equal(errs, "t.conf:2: hba: NUL byte in line\n");
	assert_null(h);
	free(errs);
}

static void test_all_errors_reported(void **state)
{
	(void)state;
	expect_errors("local all all trust\n"
		      "host all all 10.0.0.0/99 md5\n"
		      "# fine\n"
		      "local all all bogus\n"
		      "host all all all md5\n"
		      "local +g all trust\n",
		      3,
		      "t.conf:2: hba: invalid CIDR mask in address \"10.0.0.0/99\" (0..32)\n"
		      "t.conf:4: hba: invalid authentication method \"bogus\" (trust, reject, password, md5, scram-sha-256, cert, peer, ldap or pam)\n"
		      "t.conf:6: hba: group membership \"+g\" is not supported (write the user names)\n");
}

static void put_file(const char *dir, const char *name, const char *text)
{
	char path[512];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* hba_load of dir/name: the number of errors, their text in *errs (freed by the caller). */
static int load_path(const char *dir, const char *name, struct hba **h, char **errs)
{
	char path[512];
	size_t len;
	snprintf(path, sizeof path, "%s/%s", dir, name);
	FILE *ef = open_memstream(errs, &len);
	int n = hba_load(path, NULL, ef, h);
	fclose(ef);
	return n;
}

/* PostgreSQL's @file in database and user fields: names read from a file relative to the
 * directory of the file naming it (whitespace or commas between them, # comments, quotes as
 * on a line), nested @files too, down to ten deep; keywords keep their meaning there. */
static void test_include_files(void **state)
{
	(void)state;
	char dir[] = "/tmp/tusk-test-hba-inc-XXXXXX";
	char sub[600], path[700], want[1024];
	assert_non_null(mkdtemp(dir));
	snprintf(sub, sizeof sub, "%s/users", dir);
	assert_int_equal(mkdir(sub, 0700), 0);
	put_file(dir, "hba.conf", "host @dbs.txt @users/list 127.0.0.1/32 trust\nhost all all all reject\n");
	put_file(dir, "dbs.txt", "db1, db2 # two\n\n\"all\"\n");
	put_file(dir, "users/list", "alice bob\n@more\n");
	put_file(dir, "users/more", "carol");
	struct hba *h = NULL;
	char *errs = NULL;
	assert_int_equal(load_path(dir, "hba.conf", &h, &errs), 0);
	assert_string_equal(errs, "");
	free(errs);
	assert_int_equal(match(h, HBA_HOST_PLAIN, "db1", "alice", "127.0.0.1", NULL), 1);
	assert_int_equal(match(h, HBA_HOST_PLAIN, "db2", "carol", "127.0.0.1", NULL), 1);
	assert_int_equal(match(h, HBA_HOST_PLAIN, "all", "bob", "127.0.0.1", NULL), 1); /* quoted: a name */
	assert_int_equal(match(h, HBA_HOST_PLAIN, "db3", "alice", "127.0.0.1", NULL), 2);
	assert_int_equal(match(h, HBA_HOST_PLAIN, "db1", "dave", "127.0.0.1", NULL), 2);
	hba_free(h);

	/* A missing file, one that names itself, a directory: each reported on its line. */
	put_file(dir, "loop", "x @loop\n");
	put_file(dir, "bad.conf", "host @nope all all trust\nhost all @loop all trust\nhost all @users all trust\n");
	h = NULL;
	assert_int_equal(load_path(dir, "bad.conf", &h, &errs), 3);
	assert_null(h);
	snprintf(path, sizeof path, "%s/loop", dir);
	snprintf(want, sizeof want,
		 "%s/bad.conf:1: hba: could not open secondary authentication file \"@nope\" as \"%s/nope\": No such file or directory\n",
		 dir, dir);
	assert_non_null(strstr(errs, want));
	snprintf(want, sizeof want, "%s:1: hba: could not open file \"loop\": maximum nesting depth exceeded\n", path);
	assert_non_null(strstr(errs, want));
	snprintf(want, sizeof want, "%s/bad.conf:2: hba: 1 error in \"@loop\"\n", dir);
	assert_non_null(strstr(errs, want));
	snprintf(want, sizeof want, "%s/bad.conf:3: hba: could not open secondary authentication file \"@users\" as \"%s/users\": not a regular file\n", dir, dir);
	assert_non_null(strstr(errs, want));
	free(errs);

	/* Bytes in memory name no directory: no @file. */
	expect_errors("host @dbs.txt all all trust\n", 1, "t.conf:1: hba: file inclusion \"@dbs.txt\" needs hba_file on disk\n");

	const char *names[] = { "hba.conf", "dbs.txt", "users/list", "users/more", "loop", "bad.conf" };
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		snprintf(path, sizeof path, "%s/%s", dir, names[i]);
		unlink(path);
	}
	rmdir(sub);
	rmdir(dir);
}

static void test_load_file(void **state)
{
	(void)state;
	char path[] = "/tmp/tusk-test-hba-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	static const char good[] = "host all all 127.0.0.1/32 scram-sha-256\n";
	assert_int_equal(write(fd, good, sizeof(good) - 1), (ssize_t)(sizeof(good) - 1));
	close(fd);

	struct hba *h = NULL;
	assert_int_equal(hba_load(path, NULL, NULL, &h), 0);
	enum hba_method m;
	assert_int_equal(match(h, HBA_HOST_TLS, "d", "u", "127.0.0.1", &m), 1);
	assert_int_equal(m, HBA_SCRAM);
	hba_free(h);

	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("local all all trust\n\nlocal all all nope\n", f);
	fclose(f);
	char *errs = NULL;
	size_t errlen;
	FILE *ef = open_memstream(&errs, &errlen);
	h = NULL;
	assert_int_equal(hba_load(path, NULL, ef, &h), 1);
	fclose(ef);
	assert_null(h);
	char want[256];
	snprintf(want, sizeof(want),
		 "%s:3: hba: invalid authentication method \"nope\" (trust, reject, password, md5, scram-sha-256, cert, peer, ldap or pam)\n",
		 path);
	assert_string_equal(errs, want);
	free(errs);

	unlink(path);
	ef = open_memstream(&errs, &errlen);
	assert_int_equal(hba_load(path, NULL, ef, &h), 1);
	fclose(ef);
	snprintf(want, sizeof(want), "%s: hba: cannot open: No such file or directory\n", path);
	assert_string_equal(errs, want);
	free(errs);
}

static void test_method_names(void **state)
{
	(void)state;
	assert_string_equal(hba_method_name(HBA_TRUST), "trust");
	assert_string_equal(hba_method_name(HBA_REJECT), "reject");
	assert_string_equal(hba_method_name(HBA_PEER), "peer");
	assert_string_equal(hba_method_name(HBA_PASSWORD), "password");
	assert_string_equal(hba_method_name(HBA_MD5), "md5");
	assert_string_equal(hba_method_name(HBA_SCRAM), "scram-sha-256");
	assert_string_equal(hba_method_name(HBA_CERT), "cert");
	assert_string_equal(hba_method_name(HBA_LDAP), "ldap");
	assert_string_equal(hba_method_name((enum hba_method)99), "?");
}

/* ldap lines: PostgreSQL's options, quoted values with blanks and commas, the options found by
 * the matched line's number; other lines have none. */
static void test_ldap_lines(void **state)
{
	(void)state;
	struct hba *h = load_ok("host all alice 10.0.0.0/8 ldap ldapserver=\"ldap1 ldap2\" ldapport=1389 "
				"ldapprefix=\"uid=\" ldapsuffix=\", ou=people, dc=example, dc=net\"\n"
				"host all all all ldap ldapurl=\"ldaps://ldap.example.net/dc=example,dc=net??one?(%7C(uid=$username)(mail=$username))\"\n"
				"host all all all md5\n");
	struct hba_hit hit;
	struct net_addr a = ip("10.1.2.3"), far = ip("192.168.1.1");
	assert_int_equal(hba_match(h, HBA_HOST_PLAIN, "db", "alice", &a, NULL, &hit), HBA_MATCH);
	assert_int_equal(hit.method, HBA_LDAP);
	assert_int_equal(hit.line, 1);
	assert_null(hit.pam);
	const struct config_ldap *o = hit.ldap;
	assert_non_null(o);
	assert_false(o->search);
	assert_string_equal(o->server, "ldap1 ldap2");
	assert_int_equal(o->port, 1389);
	assert_string_equal(o->prefix, "uid=");
	assert_string_equal(o->suffix, ", ou=people, dc=example, dc=net");
	assert_int_equal(hba_match(h, HBA_HOST_PLAIN, "db", "bob", &a, NULL, &hit), HBA_MATCH);
	assert_int_equal(hit.line, 2);
	o = hit.ldap;
	assert_non_null(o);
	assert_true(o->search);
	assert_true(o->ldaps);
	assert_string_equal(o->server, "ldap.example.net");
	assert_string_equal(o->basedn, "dc=example,dc=net");
	assert_string_equal(o->searchattribute, "");
	assert_int_equal(o->scope, CONFIG_LDAP_SCOPE_ONE);
	assert_string_equal(o->searchfilter, "(|(uid=$username)(mail=$username))");
	/* a line of another method has none */
	hba_free(h);
	h = load_ok("host all alice 10.0.0.0/8 ldap ldapserver=x ldapprefix=a ldapsuffix=b\n"
		    "host all all all md5\n");
	assert_int_equal(hba_match(h, HBA_HOST_PLAIN, "db", "alice", &far, NULL, &hit), HBA_MATCH);
	assert_int_equal(hit.line, 2);
	assert_int_equal(hit.method, HBA_MD5);
	assert_null(hit.ldap);
	assert_null(hit.pam);
	hba_free(h);
}

static void test_clientcert_lines(void **state)
{
	(void)state;
	struct hba *h = load_ok("hostssl all a all scram-sha-256 clientcert=verify-full\n"
				"hostssl all b all trust clientcert=verify-ca clientname=DN\n"
				"hostssl all c all cert clientname=DN\n"
				"hostssl all d all cert\n"
				"hostssl all e all ldap ldapserver=x ldapprefix=a ldapsuffix=b clientcert=verify-full\n"
				"hostssl all f all md5 clientname=CN\n");
	static const struct {
		const char *user;
		int line;
		enum hba_clientcert cc;
		bool dn;
	} want[] = {
		{ "a", 1, HBA_CLIENTCERT_FULL, false }, { "b", 2, HBA_CLIENTCERT_CA, true },
		{ "c", 3, HBA_CLIENTCERT_FULL, true },  { "d", 4, HBA_CLIENTCERT_FULL, false },
		{ "e", 5, HBA_CLIENTCERT_FULL, false }, { "f", 6, HBA_CLIENTCERT_OFF, false },
	};
	struct net_addr a = ip("10.1.2.3");
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
		struct hba_hit hit;
		assert_int_equal(hba_match(h, HBA_HOST_TLS, "db", want[i].user, &a, NULL, &hit), HBA_MATCH);
		assert_int_equal(hit.line, want[i].line);
		assert_int_equal(hit.clientcert, want[i].cc);
		assert_int_equal(hit.clientname_dn, want[i].dn);
		assert_true((hit.ldap != NULL) == (want[i].line == 5));
	}
	hba_free(h);
}

/* pam lines: PostgreSQL's pamservice (default postgresql) and pam_use_hostname; other lines
 * have none. */
static void test_pam_lines(void **state)
{
	(void)state;
	struct hba *h = load_ok("host all alice 10.0.0.0/8 pam\n"
				"host all bob all pam pamservice=tusk-db pam_use_hostname=1\n"
				"local all all pam pam_use_hostname=0 pamservice=\"x.y\"\n"
				"hostssl all eve all pam clientcert=verify-full pamservice=z\n"
				"host all all all md5\n");
	struct hba_hit hit;
	struct net_addr a = ip("10.1.2.3");
	assert_int_equal(hba_match(h, HBA_HOST_PLAIN, "db", "alice", &a, NULL, &hit), HBA_MATCH);
	assert_int_equal(hit.method, HBA_PAM);
	assert_non_null(hit.pam);
	assert_string_equal(hit.pam->service, "postgresql");
	assert_false(hit.pam->use_hostname);
	assert_null(hit.ldap);
	assert_int_equal(hba_match(h, HBA_HOST_PLAIN, "db", "bob", &a, NULL, &hit), HBA_MATCH);
	assert_int_equal(hit.line, 2);
	assert_non_null(hit.pam);
	assert_string_equal(hit.pam->service, "tusk-db");
	assert_true(hit.pam->use_hostname);
	assert_int_equal(hba_match(h, HBA_LOCAL, "db", "carol", NULL, NULL, &hit), HBA_MATCH);
	assert_int_equal(hit.line, 3);
	assert_non_null(hit.pam);
	assert_string_equal(hit.pam->service, "x.y");
	assert_false(hit.pam->use_hostname);
	assert_int_equal(hba_match(h, HBA_HOST_PLAIN, "db", "eve", &a, NULL, &hit), HBA_MATCH); /* not on TLS: the md5 line */
	assert_int_equal(hit.line, 5);
	assert_null(hit.pam);
	/* clientcert= on a hostssl pam line, as on any method's */
	assert_int_equal(hba_match(h, HBA_HOST_TLS, "db", "eve", &a, NULL, &hit), HBA_MATCH);
	assert_int_equal(hit.line, 4);
	assert_int_equal(hit.clientcert, HBA_CLIENTCERT_FULL);
	assert_false(hit.clientname_dn);
	assert_string_equal(hit.pam->service, "z");
	assert_string_equal(hba_method_name(HBA_PAM), "pam");
	hba_free(h);
}

static void test_pam_errors(void **state)
{
	(void)state;
	expect_errors("host all all all pam pamfoo=1\n"
		      "host all all all pam pam_use_hostname=yes\n"
		      "host all all all pam pamservice=a pamservice=b\n"
		      "host all all all pam pamservice=\n"
		      "host all all all pam pamservice=../x\n"
		      "host all all all pam map=m\n"
		      "host all all all pam junk\n"
		      "host all all all pam ldapserver=h\n"
		      "host all all all pam pamservice=a,b\n"
		      "host all all all pam\n",
		      9,
		      "t.conf:1: hba: authentication option \"pamfoo\" is not supported for the pam method (pamservice, pam_use_hostname)\n"
		      "t.conf:2: hba: invalid pam_use_hostname \"yes\" (0 or 1)\n"
		      "t.conf:3: hba: authentication option \"pamservice\" given twice\n"
		      "t.conf:4: hba: invalid pamservice \"\" (a file name of /etc/pam.d, at most 127 bytes)\n"
		      "t.conf:5: hba: invalid pamservice \"../x\" (a file name of /etc/pam.d, at most 127 bytes)\n"
		      "t.conf:6: hba: authentication option \"map\" is not supported for the pam method (pamservice, pam_use_hostname)\n"
		      "t.conf:7: hba: unexpected field \"junk\" after the authentication method\n"
		      "t.conf:8: hba: authentication option \"ldapserver\" is not supported for the pam method (pamservice, pam_use_hostname)\n"
		      "t.conf:9: hba: the value of \"pamservice\" must be a single value, not a list\n");
}

static void test_ldap_errors(void **state)
{
	(void)state;
	/* Every bad line reported, each with its number. */
	expect_errors("host all all all ldap\n"
		      "host all all all ldap ldapserver=h\n"
		      "host all all all ldap ldapserver=h ldapprefix=x ldapbasedn=dc=x\n"
		      "host all all all ldap ldapserver=h ldapport=0 ldapprefix=x\n"
		      "host all all all ldap ldapserver=h ldapport=65536 ldapprefix=x\n"
		      "host all all all ldap ldapserver=h ldapprefix=x ldapfoo=1\n"
		      "host all all all ldap ldapurl=http://h/dc=x\n"
		      "host all all all ldap ldapserver=h ldapbasedn=dc=x,dc=y\n"
		      "host all all all ldap ldapserver=h ldapbasedn=x ldapsearchattribute=uid ldapsearchfilter=(uid=$username)\n"
		      "host all all all ldap ldapserver=h ldapprefix=x map=m\n"
		      "host all all all ldap ldapserver=h ldapprefix=x junk\n"
		      "host all all all ldap ldapserver=h ldapserver=g ldapprefix=x\n"
		      "host all all all ldap ldapscheme=ldapx ldapserver=h ldapprefix=x\n"
		      "host all all all ldap ldapserver=h ldapscheme=ldaps ldaptls=1 ldapprefix=x\n"
		      "host all all all ldap ldapurl=\"ldap://h:1/dc=x?uid?deep\"\n"
		      "host all all all ldap ldapserver=h/x ldapprefix=x\n"
		      "host all all all md5\n",
		      16,
		      "t.conf:1: hba: authentication method \"ldap\" requires argument \"ldapbasedn\", \"ldapprefix\", or \"ldapsuffix\" to be set\n"
		      "t.conf:2: hba: authentication method \"ldap\" requires argument \"ldapbasedn\", \"ldapprefix\", or \"ldapsuffix\" to be set\n"
		      "t.conf:3: hba: cannot use ldapbasedn, ldapbinddn, ldapbindpasswd, ldapsearchattribute, ldapsearchfilter, or ldapurl together with ldapprefix\n"
		      "t.conf:4: hba: invalid LDAP port number \"0\" (1..65535)\n"
		      "t.conf:5: hba: invalid LDAP port number \"65536\" (1..65535)\n"
		      "t.conf:6: hba: unknown LDAP option \"ldapfoo\"\n"
		      "t.conf:7: hba: unsupported LDAP URL scheme in \"http://h/dc=x\" (ldap:// or ldaps://)\n"
		      /* PostgreSQL's: an unquoted comma makes two tokens, and "dc=y" is no option */
		      "t.conf:8: hba: unknown LDAP option \"dc\"\n"
		      "t.conf:9: hba: cannot use ldapsearchattribute together with ldapsearchfilter\n"
		      "t.conf:10: hba: unknown LDAP option \"map\"\n"
		      "t.conf:11: hba: unexpected field \"junk\" after the authentication method\n"
		      "t.conf:12: hba: LDAP option \"ldapserver\" given twice (or also in ldapurl)\n"
		      "t.conf:13: hba: invalid ldapscheme value \"ldapx\" (ldap or ldaps)\n"
		      "t.conf:14: hba: ldaptls=1 (StartTLS) cannot be used with ldapscheme ldaps\n"
		      "t.conf:15: hba: invalid scope in ldapurl \"ldap://h:1/dc=x?uid?deep\" (base, one or sub)\n"
		      "t.conf:16: hba: invalid ldapserver host \"h/x\"\n");
}

static struct ident *ident_of(const char *text)
{
	struct ident *id = NULL;
	assert_int_equal(ident_load_buffer("i.conf", text, strlen(text), NULL, &id), 0);
	return id;
}

/* map=NAME on cert and peer lines: the line carries it, and hba_map_admits asks ident_file. */
static void test_map_option(void **state)
{
	(void)state;
	struct ident *id = ident_of("local root tusk_trust\n"
				    "local /^svc-(.*)$ \\1\n"
				    "certs alice tusk_trust\n"
				    "\"my map\" bob all\n");
	static const char text[] = "local all admin peer\n"
				   "local all all peer map=local\n"
				   "hostssl all all all cert map=certs\n"
				   "hostssl all all all cert \"map=my map\"\n";
	struct hba *h = NULL;
	assert_int_equal(hba_load_buffer("t.conf", text, sizeof(text) - 1, id, NULL, &h), 0);
	struct net_addr a = ip("10.1.2.3");
	struct hba_hit hit;
	int line;
	const char *map;

	assert_int_equal(hba_match(h, HBA_LOCAL, "d", "admin", NULL, NULL, &hit), HBA_MATCH);
	assert_int_equal(hit.line, 1);
	map = hit.map;
	assert_null(map);
	/* Without a map, the names must be equal. */
	assert_true(hba_map_admits(h, map, "admin", "admin", &line));
	assert_int_equal(line, 0);
	assert_false(hba_map_admits(h, map, "root", "admin", &line));

	assert_int_equal(hba_match(h, HBA_LOCAL, "d", "tusk_trust", NULL, NULL, &hit), HBA_MATCH);
	assert_int_equal(hit.method, HBA_PEER);
	assert_int_equal(hit.line, 2);
	map = hit.map;
	assert_string_equal(map, "local");
	assert_true(hba_map_admits(h, map, "root", "tusk_trust", &line));
	assert_int_equal(line, 1);
	/* With a map, equal names are not enough. */
	assert_false(hba_map_admits(h, map, "tusk_trust", "tusk_trust", &line));
	assert_true(hba_map_admits(h, map, "svc-app", "app", &line));
	assert_int_equal(line, 2);
	assert_false(hba_map_admits(h, map, "svc-app", "svc-app", &line));
	/* Another map's lines do not count. */
	assert_false(hba_map_admits(h, map, "alice", "tusk_trust", &line));

	assert_int_equal(hba_match_physical(h, HBA_LOCAL, "rep", NULL, NULL, &hit), HBA_NO_MATCH);
	assert_int_equal(hba_match(h, HBA_HOST_TLS, "d", "x", &a, NULL, &hit), HBA_MATCH);
	assert_int_equal(hit.method, HBA_CERT);
	map = hit.map;
	assert_string_equal(map, "certs");
	assert_true(hba_map_admits(h, map, "alice", "tusk_trust", &line));
	assert_int_equal(line, 3);
	assert_false(hba_map_admits(h, map, "alice", "alice", &line));
	assert_true(hba_map_admits(h, "my map", "bob", "anyone", &line));
	assert_int_equal(line, 4);
	hba_free(h);
	ident_free(id);
}

static void test_map_errors(void **state)
{
	(void)state;
	struct ident *id = ident_of("m root root\n");
	static const char text[] = "local all all peer map=m\n"
				   "local all all peer map=n\n"
				   "hostssl all all all cert map=m map=m\n"
				   "local all all md5 map=m\n";
	struct hba *h = NULL;
	char *errs = NULL;
	size_t errlen;
	FILE *ef = open_memstream(&errs, &errlen);
	assert_int_equal(hba_load_buffer("t.conf", text, sizeof(text) - 1, id, ef, &h), 3);
	fclose(ef);
	assert_null(h);
	assert_string_equal(errs, "t.conf:2: hba: user name map \"n\" is not in ident_file\n"
				  "t.conf:3: hba: authentication option \"map\" given twice\n"
				  "t.conf:4: hba: authentication option \"map\" is only valid for the cert and peer methods\n");
	free(errs);
	ident_free(id);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_line_kinds),
		cmocka_unit_test(test_empty_file_matches_nothing),
		cmocka_unit_test(test_name_lists),
		cmocka_unit_test(test_cidr_v4),
		cmocka_unit_test(test_cidr_v6),
		cmocka_unit_test(test_netmask_form),
		cmocka_unit_test(test_first_match_wins),
		cmocka_unit_test(test_each_error),
		cmocka_unit_test(test_clientcert_lines),
		cmocka_unit_test(test_gssenc_types), cmocka_unit_test(test_host_names),
		cmocka_unit_test(test_samehost_samenet),
		cmocka_unit_test(test_replication_keyword),
		cmocka_unit_test(test_nul_byte),
		cmocka_unit_test(test_include_files),
		cmocka_unit_test(test_all_errors_reported),
		cmocka_unit_test(test_load_file),
		cmocka_unit_test(test_method_names),
		cmocka_unit_test(test_map_option),
		cmocka_unit_test(test_map_errors),
		cmocka_unit_test(test_ldap_lines),
		cmocka_unit_test(test_ldap_errors),
		cmocka_unit_test(test_pam_lines),
		cmocka_unit_test(test_pam_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
