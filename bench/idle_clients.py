#!/usr/bin/env python3
"""bench/idle_clients.py: what idle clients cost a pooler in memory.

Opens WARMUP clients (their first allocations: pools, servers, arenas), reads the pooler's
VmRSS, opens N more clients that each finish login (ReadyForQuery) and then sit idle, reads
VmRSS again once it has settled, and prints one line:

    rss_before_kb rss_after_kb clients bytes_per_client

Settled: idle is the steady state measured, and tusk gives back the buffer blocks a burst
of logins left unused at its 1-second housekeeping, two ticks after the burst (~2 s, 0.7-0.8
MB of RSS for 2,000 logins here). A fixed wait misses that on a stalled machine (CI once
read 1.7 kB per client, twice the steady figure), so each reading waits at least SETTLE
seconds and then until VmRSS has not fallen for QUIET seconds (two ticks and a half), at
most 20 s; the readings are printed to stderr with --trace.

Clients come from several loopback source addresses (127.0.0.2, .3, ...) so that more than
~28k of them fit in the ephemeral port range of one (source, destination) pair. Trust or
no authentication only (a password request is an error). Used by bench/cost.sh and by
tests/integration/test_memory.py; stdlib only.
"""

import argparse
import selectors
import socket
import struct
import sys
import time

PER_SOURCE = 20000  # clients per source address, well inside 32768-60999


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def startup_packet(user, database):
    body = struct.pack("!I", 196608)
    for k, v in (("user", user), ("database", database)):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


class Conn:
    __slots__ = ("sock", "inbuf", "ready")

    def __init__(self, sock):
        self.sock = sock
        self.inbuf = b""
        self.ready = False


def open_clients(host, port, user, database, n, first_index, timeout, batch=500):
    """Opens n clients and returns their sockets once every one has had ReadyForQuery.
    At most `batch` logins are in flight at a time (a pooler's accept backlog is finite)."""
    sel = selectors.DefaultSelector()
    pkt = startup_packet(user, database)
    done = []
    pending = 0
    started = 0
    deadline = time.monotonic() + timeout

    def start_one(i):
        src = f"127.0.0.{2 + i // PER_SOURCE}" if host.startswith("127.") else None
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if src:
            s.bind((src, 0))
        s.connect((host, port))
        s.sendall(pkt)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, Conn(s))

    while len(done) < n:
        while pending < batch and started < n:
            start_one(first_index + started)
            started += 1
            pending += 1
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(done)} of {n} clients logged in before the deadline")
        for key, _ in sel.select(timeout=1.0):
            c = key.data
            data = c.sock.recv(65536)
            if not data:
                raise ConnectionError(f"pooler closed a client during login after {len(done)} logins")
            c.inbuf += data
            # walk whole messages: an ErrorResponse or an auth request other than Ok is fatal
            while len(c.inbuf) >= 5:
                t = c.inbuf[0:1]
                ln = struct.unpack("!I", c.inbuf[1:5])[0]
                if len(c.inbuf) < 1 + ln:
                    break
                body = c.inbuf[5 : 1 + ln]
                c.inbuf = c.inbuf[1 + ln :]
                if t == b"E":
                    raise ConnectionError(f"login refused: {body!r}")
                if t == b"R" and struct.unpack("!I", body[:4])[0] != 0:
                    raise ConnectionError("the pooler asks for a password: trust only")
                if t == b"Z":
                    c.ready = True
            if c.ready:
                sel.unregister(c.sock)
                done.append(c.sock)
                pending -= 1
    sel.close()
    return done


def settled_rss_kb(pid, settle=2.5, quiet=2.5, cap=20.0, trace=None):
    """VmRSS once it has stopped falling: polled every 0.25 s for at least SETTLE seconds,
    then until no reading has fallen (by more than 16 kB, a page or four of noise) for QUIET
    seconds, or CAP seconds in all. TRACE, a list, gets every (seconds, kB) read."""
    start = time.monotonic()
    low = rss_kb(pid)
    last_fall = start
    while True:
        now = time.monotonic()
        r = rss_kb(pid)
        if trace is not None:
            trace.append((round(now - start, 2), r))
        if r < low - 16:
            last_fall = now
        low = min(low, r)
        if (now - start >= settle and now - last_fall >= quiet) or now - start >= cap:
            return r
        time.sleep(0.25)


def measure(pid, host, port, user, database, n, warmup=50, settle=2.5, timeout=300.0, trace=None, probe=None):
    """Returns (rss_before_kb, rss_after_kb, bytes_per_client, sockets). The caller closes
    the sockets (keeping them lets it run something beside the idle clients). TRACE, a list,
    gets the two readings' series (settled_rss_kb). PROBE, a function, is called right after
    each of the two readings (to read what else the caller compares, at the same moments)."""
    socks = open_clients(host, port, user, database, warmup, 0, timeout)
    t0, t1 = [], []
    before = settled_rss_kb(pid, settle, trace=t0)
    if probe:
        probe()
    socks += open_clients(host, port, user, database, n, warmup, timeout)
    after = settled_rss_kb(pid, settle, trace=t1)
    if probe:
        probe()
    if trace is not None:
        trace += [t0, t1]
    return before, after, (after - before) * 1024.0 / n, socks


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pid", type=int, required=True, help="the pooler process")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", default="postgres")
    ap.add_argument("--database", required=True)
    ap.add_argument("-n", "--clients", type=int, default=5000)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--settle", type=float, default=2.5, help="least wait before each reading (then until it settles)")
    ap.add_argument("--trace", action="store_true", help="print each reading's series of (seconds, kB) to stderr")
    a = ap.parse_args()
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.clients + a.warmup + 100
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    trace = [] if a.trace else None
    before, after, per, socks = measure(a.pid, a.host, a.port, a.user, a.database, a.clients, a.warmup, a.settle,
                                        trace=trace)
    if trace:
        print(f"RSS before: {trace[0]}\nRSS after: {trace[1]}", file=sys.stderr)
    print(f"{before} {after} {a.clients} {per:.0f}")
    sys.stdout.flush()
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
