/* evio_watch (net/evio.h): changing what a watcher waits for keeps an event already fed to it.
 * The TLS links feed EV_READ for records OpenSSL holds (no poll reports them); libev's
 * ev_io_stop clears a pending event, so a plain stop/set/start re-arm lost it and left a TLS
 * client's last bytes unread (CI: test_copy_in_over_tls waited out its 240 s timeout). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sys/socket.h>
#include <unistd.h>

#include "net/evio.h"

static int calls, last_revents;

static void cb(struct ev_loop *loop, ev_io *io, int revents)
{
	(void)loop;
	(void)io;
	calls++;
	last_revents |= revents;
}

struct fixture {
	struct ev_loop *loop;
	int sv[2];
	ev_io io;
};

static int setup(void **state)
{
	static struct fixture f;
	f.loop = ev_loop_new(EVFLAG_AUTO);
	if (!f.loop || socketpair(AF_UNIX, SOCK_STREAM, 0, f.sv) < 0)
		return -1;
	ev_io_init(&f.io, cb, f.sv[0], EV_READ);
	calls = last_revents = 0;
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	ev_io_stop(f->loop, &f->io);
	ev_loop_destroy(f->loop);
	close(f->sv[0]);
	close(f->sv[1]);
	return 0;
}

/* The bug's shape: a read event fed while the socket is empty, then the watcher re-armed for
 * read+write (a reply queued) — the callback must still see EV_READ. */
static void test_fed_read_survives_rearm(void **state)
{
	struct fixture *f = *state;
	evio_watch(f->loop, &f->io, f->sv[0], EV_READ);
	ev_feed_event(f->loop, &f->io, EV_READ);
	evio_watch(f->loop, &f->io, f->sv[0], EV_READ | EV_WRITE);
	assert_true(ev_is_active(&f->io));
	assert_int_equal(f->io.events & (EV_READ | EV_WRITE), EV_READ | EV_WRITE);
	ev_run(f->loop, EVRUN_NOWAIT);
	assert_true(calls >= 1);
	assert_true(last_revents & EV_READ);
}

/* From stopped (a full buffer: no reads, nothing to write) to reading: fed first, armed after. */
static void test_fed_while_stopped_then_armed(void **state)
{
	struct fixture *f = *state;
	evio_watch(f->loop, &f->io, f->sv[0], 0);
	assert_false(ev_is_active(&f->io));
	ev_feed_event(f->loop, &f->io, EV_READ | EV_WRITE);
	evio_watch(f->loop, &f->io, f->sv[0], EV_READ);
	ev_run(f->loop, EVRUN_NOWAIT);
	assert_int_equal(calls, 1);
	/* Only what the new mask asks for: EV_WRITE was dropped with it. */
	assert_int_equal(last_revents, EV_READ);
}

/* Stopping for good drops the event: a watcher about to be freed must not fire. */
static void test_stop_drops_pending(void **state)
{
	struct fixture *f = *state;
	evio_watch(f->loop, &f->io, f->sv[0], EV_READ);
	ev_feed_event(f->loop, &f->io, EV_READ);
	evio_watch(f->loop, &f->io, f->sv[0], 0);
	assert_false(ev_is_pending(&f->io));
	ev_run(f->loop, EVRUN_NOWAIT);
	assert_int_equal(calls, 0);
}

/* Same mask: nothing re-armed, the pending event stays as it was. */
static void test_same_mask_keeps_pending(void **state)
{
	struct fixture *f = *state;
	evio_watch(f->loop, &f->io, f->sv[0], EV_READ);
	ev_feed_event(f->loop, &f->io, EV_READ);
	evio_watch(f->loop, &f->io, f->sv[0], EV_READ);
	assert_true(ev_is_pending(&f->io));
	ev_run(f->loop, EVRUN_NOWAIT);
	assert_int_equal(calls, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_fed_read_survives_rearm, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fed_while_stopped_then_armed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stop_drops_pending, setup, teardown),
		cmocka_unit_test_setup_teardown(test_same_mask_keeps_pending, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
