/* net_listen_probe and net_unix_probe: whether another socket listens where tusk is about to
 * (a second tusk on the same port would otherwise share it by SO_REUSEPORT, or unlink and take
 * over the first one's Unix socket file). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "net/net.h"

/* A loopback address with a port the kernel picked (free when this returns). */
static void free_addr(struct net_addr *a)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof sin;
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	close(fd);
	assert_int_equal(net_addr_numeric("127.0.0.1", ntohs(sin.sin_port), a), 0);
}

static void test_probe_sees_our_own_kind_of_listener(void **state)
{
	(void)state;
	struct net_addr a;
	free_addr(&a);
	assert_int_equal(net_listen_probe(&a), 0);
	int l = net_listen(&a, 8);
	assert_true(l >= 0);
	/* A second SO_REUSEPORT listener would be allowed beside it: the probe is not. */
	int l2 = net_listen(&a, 8);
	assert_true(l2 >= 0);
	close(l2);
	assert_int_equal(net_listen_probe(&a), -EADDRINUSE);
	close(l);
	assert_int_equal(net_listen_probe(&a), 0);
}

static void test_probe_ignores_connections_in_time_wait(void **state)
{
	(void)state;
	struct net_addr a;
	free_addr(&a);
	int l = net_listen(&a, 8);
	assert_true(l >= 0);
	int c = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(connect(c, (struct sockaddr *)&a.sa, a.len), 0);
	int s = -1;
	for (int i = 0; i < 1000 && s < 0; i++) {
		s = accept(l, NULL, NULL);
		if (s < 0)
			usleep(1000);
	}
	assert_true(s >= 0);
	close(s); /* the listener's side closes first: its end goes to TIME_WAIT */
	close(c);
	close(l);
	usleep(10000);
	assert_int_equal(net_listen_probe(&a), 0);
}

static void test_unix_probe(void **state)
{
	(void)state;
	char dir[] = "/tmp/tusk_test_net_XXXXXX", path[128];
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/.s.PGSQL.5432", dir);
	assert_int_equal(net_unix_probe(path), 0); /* no file */
	int l = net_listen_unix(path, 8, 0777, (unsigned)-1);
	assert_true(l >= 0);
	assert_int_equal(net_unix_probe(path), -EADDRINUSE);
	close(l); /* the file stays, stale */
	assert_int_equal(access(path, F_OK), 0);
	assert_int_equal(net_unix_probe(path), 0);
	l = net_listen_unix(path, 8, 0640, (unsigned)getgid()); /* a stale file is replaced */
	assert_true(l >= 0);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);
	assert_int_equal(st.st_gid, getgid());
	close(l);
	unlink(path);
	rmdir(dir);
}

/* A path with its NUL fills sun_path at most: one byte more is refused, by all three users. */
static void test_unix_addr_bounds(void **state)
{
	(void)state;
	struct sockaddr_un sun;
	char path[sizeof sun.sun_path + 1];
	memset(path, 'a', sizeof path - 1);
	path[0] = '/';
	path[sizeof sun.sun_path - 1] = 0; /* the longest that fits */
	memset(&sun, 0x55, sizeof sun);
	assert_int_equal(net_unix_addr(path, &sun), 0);
	assert_int_equal(sun.sun_family, AF_UNIX);
	assert_string_equal(sun.sun_path, path);
	path[sizeof sun.sun_path - 1] = 'a';
	path[sizeof sun.sun_path] = 0; /* one byte too long */
	assert_int_equal(net_unix_addr(path, &sun), -ENAMETOOLONG);
	assert_int_equal(net_listen_unix(path, 8, 0777, (unsigned)-1), -ENAMETOOLONG);
	assert_int_equal(net_unix_probe(path), -ENAMETOOLONG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_probe_sees_our_own_kind_of_listener),
		cmocka_unit_test(test_probe_ignores_connections_in_time_wait),
		cmocka_unit_test(test_unix_probe),
		cmocka_unit_test(test_unix_addr_bounds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
