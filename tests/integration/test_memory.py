"""What idle clients cost (issue 10): an idle client holds no I/O buffer, so its memory is a
bound checked here (bytes of RSS per client, not a timing), and many of them beside a busy
pool neither go unserved nor slow it down.

TUSK_MEMORY_CLIENTS sets the number of idle clients of the many-clients case (default 5000,
small enough for CI on 2 cores; the issue's case is 50000). Both ends need a descriptor per
client: the test raises its own limit (tusk inherits it), up to the hard limit.
"""

import os
import re
import resource
import selectors
import struct
import subprocess
import sys
import time

import pytest

from conftest import BENCH_DB, PG_BIN, REPO, SANITIZED, SLOW, TEST_DB

sys.path.insert(0, str(REPO / "bench"))
import idle_clients  # noqa: E402  (bench/idle_clients.py: the same measure bench/cost.sh uses)

pytestmark = pytest.mark.tusk_only

# Measured 1.5-1.6 kB per idle client (x86-64, glibc) once buffers were pooled; before,
# with a read and a write buffer per client, 10.4 kB; 0.95-1.0 kB over these 2,000 clients
# (0.8 kB over 5,000 in bench/cost.sh) once struct client shrank to 600 bytes, identical
# parameter sets were shared, the cancel registry stopped allocating and buffer blocks a
# login burst left unused were given back. Then 874-893 B once an idle client held no
# prepared-statement map and no pool-queue place (struct client 728 -> 600 bytes); the code
# before that measured 1,067-1,102 B here (2026-11-22), which this bound fails. The bound
# leaves room for malloc's layout and libev's per-descriptor arrays. Sanitizer builds pad
# every allocation: their bound only catches gross leaks.
IDLE_CLIENT_BOUND = 16384 if SANITIZED else 1000
MANY = int(os.environ.get("TUSK_MEMORY_CLIENTS", "5000"))


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if need > hard:
        pytest.fail(f"{need} descriptors needed, the hard limit is {hard} (raise it, or lower TUSK_MEMORY_CLIENTS)")
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def txn_tusk(tusk, nclients):
    return tusk(pools=[{"database": "*", "user": "*", "service": "main", "mode": "transaction", "size": 20}],
                max_client_connections=nclients + 1000, log_level="warn")


def query_all(socks, sql=b"select 1", timeout=120.0):
    """Sends one Query on every socket and waits for each one's ReadyForQuery; returns how
    many got a DataRow back (each must)."""
    body = sql + b"\0"
    msg = b"Q" + struct.pack("!I", len(body) + 4) + body
    sel = selectors.DefaultSelector()
    state = {}
    for s in socks:
        s.setblocking(True)
        s.sendall(msg)
        s.setblocking(False)
        state[s] = [b"", False]
        sel.register(s, selectors.EVENT_READ)
    pending, rows = len(socks), 0
    deadline = time.monotonic() + timeout * SLOW
    while pending:
        assert time.monotonic() < deadline, f"{pending} of {len(socks)} idle clients got no answer"
        for key, _ in sel.select(timeout=1.0):
            s = key.fileobj
            data = s.recv(65536)
            assert data, "tusk closed an idle client"
            st = state[s]
            st[0] += data
            while len(st[0]) >= 5:
                t = st[0][0:1]
                ln = struct.unpack("!I", st[0][1:5])[0]
                if len(st[0]) < 1 + ln:
                    break
                assert t != b"E", f"error for an idle client: {st[0][5:1 + ln]!r}"
                if t == b"D":
                    rows += 1
                st[0] = st[0][1 + ln:]
                if t == b"Z":
                    sel.unregister(s)
                    pending -= 1
    sel.close()
    return rows


def pgbench_tps(port, seconds):
    cmd = [str(PG_BIN / "pgbench"), "-h", "127.0.0.1", "-p", str(port), "-U", "tusk_trust", "-n", "-S",
           "-c", "16", "-j", "2", "-T", str(seconds), BENCH_DB]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=(seconds + 60) * SLOW)
    out = p.stdout + p.stderr
    assert p.returncode == 0, f"pgbench exited {p.returncode}:\n{out}"
    m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out)
    assert m, out
    return float(m.group(1))


def test_idle_client_holds_no_buffer(tusk, monkeypatch):
    """RSS growth per logged-in idle client stays under a bound well below one I/O buffer."""
    n = 2000
    raise_nofile(n + 500)
    if SANITIZED:
        # ASan's quarantine keeps every freed block resident (the login's buffers among
        # them): without it, RSS shows what clients hold, padded by redzones.
        monkeypatch.setenv("ASAN_OPTIONS", "detect_leaks=1:halt_on_error=1:abort_on_error=0:quarantine_size_mb=0")
    t = txn_tusk(tusk, n)
    before, after, per_client, socks = idle_clients.measure(t.pid, "127.0.0.1", t.port, "tusk_trust", TEST_DB, n)
    try:
        print(f"RSS {before} kB -> {after} kB for {n} idle clients: {per_client:.0f} B per client")
        assert per_client <= IDLE_CLIENT_BOUND, (
            f"{per_client:.0f} B of RSS per idle client (bound {IDLE_CLIENT_BOUND}): "
            f"{before} kB before, {after} kB after {n} clients")
        # They are real, logged-in clients: each is answered when it speaks.
        assert query_all(socks[:200]) == 200
    finally:
        for s in socks:
            s.close()


def test_many_idle_clients_beside_pgbench(tusk):
    """MANY idle clients in one process: all logged in, all answered afterwards, and a
    pgbench run beside them keeps at least 75% of its throughput without them (best of
    three runs each, "alone" bracketing "beside"). The bound is loose on purpose: what it
    guards against is per-event work that grows with the number of idle clients (a scan of
    all clients per transaction costs far more than a quarter of the throughput at 5000
    clients), not the few percent that cache pressure and a shared, noisy machine move it;
    under ASan a 0.85 ratio has been seen with no code change."""
    raise_nofile(MANY + 1000)
    t = txn_tusk(tusk, MANY)
    seconds = 3
    alone, beside = [], []
    alone.append(pgbench_tps(t.port, seconds))
    rss0 = t.status("VmRSS")
    socks = idle_clients.open_clients("127.0.0.1", t.port, "tusk_trust", TEST_DB, MANY, 0, 300 * SLOW)
    try:
        rss1 = t.status("VmRSS")
        assert len(socks) == MANY
        beside += [pgbench_tps(t.port, seconds) for _ in range(3)]
        served = query_all(socks)
        print(f"{MANY} idle clients: RSS {rss0} kB -> {rss1} kB ({(rss1 - rss0) * 1024 / MANY:.0f} B per client); "
              f"pgbench -S tps beside them {beside}")
        assert served == MANY
    finally:
        for s in socks:
            s.close()
    # The idle clients are gone (let tusk see them go): two more runs without them, so
    # "alone" brackets "beside".
    time.sleep(1)
    alone += [pgbench_tps(t.port, seconds) for _ in range(2)]
    print(f"pgbench -S tps alone {alone}")
    assert max(beside) >= 0.75 * max(alone), f"tps beside {MANY} idle clients {beside}, alone {alone}"


def test_rss_at_start_under_8mb(tusk):
    """A fresh tusk (two workers, one transaction pool, no admin.http or kv) starts within
    8 MB of RSS: libraries it does not use are not mapped (libpq and libmicrohttpd are
    opened only when configured) and no per-client memory exists yet."""
    if SANITIZED:
        pytest.skip("AddressSanitizer's shadow memory and allocator dominate RSS; the bound is for release builds")
    t = txn_tusk(tusk, 100)
    time.sleep(0.5)  # the workers have started their loops
    rss = t.status("VmRSS")
    print(f"RSS at start: {rss} kB")
    assert rss <= 8 * 1024, f"RSS at start {rss} kB > 8 MB"
