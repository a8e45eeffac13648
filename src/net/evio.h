/* Re-arming an ev_io without losing an event already queued for it. */
#ifndef TUSK_NET_EVIO_H
#define TUSK_NET_EVIO_H

#include <ev.h>

/* Watch fd for want (0: stop watching). libev's ev_io_stop also clears a pending event, and a
 * TLS link's "records OpenSSL already holds" event is only ever a fed one (no poll reports it):
 * stopping and restarting the watcher to change its events must carry that event across, or a
 * client whose last bytes (a CopyDone, a Sync) sit decrypted inside OpenSSL waits forever. */
static inline void evio_watch(struct ev_loop *loop, ev_io *io, int fd, int want)
{
	if (ev_is_active(io) && (io->events & (EV_READ | EV_WRITE)) == want)
		return;
	int pending = ev_clear_pending(loop, io);
	ev_io_stop(loop, io);
	if (want) {
		ev_io_set(io, fd, want);
		ev_io_start(loop, io);
	}
	/* Only what the new mask still asks for: a read event fed while reads are off is fed
	 * again when they come back on (the caller's buffered flag). */
	pending &= want;
	if (pending)
		ev_feed_event(loop, io, pending);
}

#endif
