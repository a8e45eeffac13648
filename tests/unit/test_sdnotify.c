/* Unit tests for util/sdnotify: datagrams reach a path socket and an abstract ('@') one,
 * nothing is sent without $NOTIFY_SOCKET, and a malformed address is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "util/sdnotify.h"

/* A datagram socket bound to name ('@' = abstract); returns the fd. */
static int bind_dgram(const char *name)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	size_t len = strlen(name);
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	assert_true(fd >= 0);
	memcpy(sun.sun_path, name, len);
	if (name[0] == '@')
		sun.sun_path[0] = '\0';
	else
		(void)unlink(name);
	socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (name[0] == '/'));
	assert_int_equal(bind(fd, (struct sockaddr *)&sun, salen), 0);
	return fd;
}

static void expect_datagram(int fd, const char *want_prefix)
{
	char buf[256];
	ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_int_equal(strncmp(buf, want_prefix, strlen(want_prefix)), 0);
}

static void test_path_socket(void **state)
{
	char path[64];
	(void)state;
	snprintf(path, sizeof path, "/tmp/tusk-sdnotify-%d.sock", (int)getpid());
	int fd = bind_dgram(path);
	setenv("NOTIFY_SOCKET", path, 1);
	assert_int_equal(sdnotify("READY=1\nSTATUS=serving"), 0);
	expect_datagram(fd, "READY=1\nSTATUS=serving");
	assert_int_equal(sdnotify_reloading(), 0);
	expect_datagram(fd, "RELOADING=1\nMONOTONIC_USEC=");
	close(fd);
	unlink(path);
	unsetenv("NOTIFY_SOCKET");
}

static void test_abstract_socket(void **state)
{
	char name[64];
	(void)state;
	snprintf(name, sizeof name, "@tusk-sdnotify-%d", (int)getpid());
	int fd = bind_dgram(name);
	setenv("NOTIFY_SOCKET", name, 1);
	assert_int_equal(sdnotify("STOPPING=1"), 0);
	expect_datagram(fd, "STOPPING=1");
	close(fd);
	unsetenv("NOTIFY_SOCKET");
}

static void test_unset_and_invalid(void **state)
{
	(void)state;
	unsetenv("NOTIFY_SOCKET");
	assert_int_equal(sdnotify("READY=1"), 0); /* not under systemd: nothing to do */
	setenv("NOTIFY_SOCKET", "relative/path", 1);
	assert_int_equal(sdnotify("READY=1"), -EINVAL);
	setenv("NOTIFY_SOCKET", "/nonexistent-dir-tusk/notify", 1);
	assert_true(sdnotify("READY=1") < 0);
	unsetenv("NOTIFY_SOCKET");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_path_socket),
		cmocka_unit_test(test_abstract_socket),
		cmocka_unit_test(test_unset_and_invalid),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
