"""What idle clients cost (issue 10): an idle client holds no I/O buffer, so its memory is a
bound checked here (bytes of heap and of RSS per client, not a timing), and many of them beside a busy
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

from conftest import BENCH_DB, PG_BIN, REPO, SANITIZED, SLOW, TEST_DB, console_show

sys.path.insert(0, str(REPO / "bench"))
import idle_clients  # noqa: E402  (bench/idle_clients.py: the same measure bench/cost.sh uses)

pytestmark = [pytest.mark.tusk_only, pytest.mark.exclusive]  # exclusive: conftest.py

# Measured 1.5-1.6 kB per idle client (x86-64, glibc) once buffers were pooled; before,
# with a read and a write buffer per client, 10.4 kB; 0.95-1.0 kB over these 2,000 clients
# (0.8 kB over 5,000 in bench/cost.sh) once struct client shrank to 600 bytes, identical
# parameter sets were shared, the cancel registry stopped allocating and buffer blocks a
# login burst left unused were given back. Then 874-893 B once an idle client held no
# prepared-statement map and no pool-queue place (struct client 728 -> 600 bytes); the code
# before that measured 1,067-1,102 B here (2026-11-22), which this bound fails. The struct
# grew back to 640 bytes with later features (922-981 B here, 2026-11-27: too near the bound);
# 616 once the copy of an oversized statement moved behind one pointer and small fields
# filled its holes (831-920 B, same day). The bound
# leaves room for malloc's layout and libev's per-descriptor arrays. Sanitizer builds pad
# every allocation: their RSS bound only catches gross leaks (ASan's heap counter counts the
# bytes asked for, without the padding: 781 B per client, so the heap's bound is the same).
# RSS then read 961-1,010 B on a quiet machine (2026-11-30) where the heap tusk's allocator
# holds grew by 830-834 B per client (SHOW MEM's "heap"): the heap is what the bound judges,
# exactly; RSS (page layout, what stays resident after a login burst) gets a looser bound that
# still fails a per-client buffer (4 kB and more).
IDLE_CLIENT_BOUND = 1000
IDLE_CLIENT_RSS_BOUND = 16384 if SANITIZED else 1500
MANY = int(os.environ.get("TUSK_MEMORY_CLIENTS", "5000"))


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if need > hard:
        pytest.fail(f"{need} descriptors needed, the hard limit is {hard} (raise it, or lower TUSK_MEMORY_CLIENTS)")
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def txn_tusk(tusk, nclients):
    return tusk(pools=[{"database": "*", "user": "*", "service": "main", "mode": "transaction", "size": 20}],
                max_client_connections=nclients + 1000, log_level="warn",
                admin={"users": ["postgres"], "client_auth": "trust"})


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


def cpu_ticks(pid):
    """User + system CPU of a process, in clock ticks (/proc/PID/stat fields 14 and 15)."""
    stat = open(f"/proc/{pid}/stat").read()
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def pgbench_run(port, seconds, pid=None):
    """pgbench -S for SECONDS: (tps, the pooler's CPU in microseconds per transaction, or
    None without a pid). CPU per transaction is what the pooler itself spent, which a busy
    machine moves far less than it moves tps."""
    cmd = [str(PG_BIN / "pgbench"), "-h", "127.0.0.1", "-p", str(port), "-U", "tusk_trust", "-n", "-S",
           "-c", "16", "-j", "2", "-T", str(seconds), BENCH_DB]
    t0 = cpu_ticks(pid) if pid else 0
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=(seconds + 60) * SLOW)
    t1 = cpu_ticks(pid) if pid else 0
    out = p.stdout + p.stderr
    assert p.returncode == 0, f"pgbench exited {p.returncode}:\n{out}"
    m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out)
    n = re.search(r"number of transactions actually processed: ([0-9]+)", out)
    assert m and n, out
    cpu = (t1 - t0) * 1e6 / os.sysconf("SC_CLK_TCK") / max(1, int(n.group(1))) if pid else None
    return float(m.group(1)), cpu


def heap_used(t):
    """Bytes tusk's allocator has handed out and not taken back (SHOW MEM's process-wide row
    "heap": glibc's mallinfo2, or ASan's own counters)."""
    (row,) = [r for r in console_show(t, "SHOW MEM") if r["name"] == "heap"]
    return int(row["used"])


def test_idle_client_holds_no_buffer(tusk, monkeypatch):
    """Heap and RSS growth per logged-in idle client stay under bounds well below one I/O
    buffer. The heap's is exact (what the allocator holds for the clients, read from tusk
    itself) and judged on one measurement; RSS is what an operator sees, but a busy machine
    moves it (below), so it is measured up to three times and the smallest reading judged."""
    n = 2000
    raise_nofile(n + 500)
    if SANITIZED:
        # ASan's quarantine keeps every freed block resident (the login's buffers among
        # them): without it, RSS shows what clients hold, padded by redzones.
        monkeypatch.setenv("ASAN_OPTIONS", "detect_leaks=1:halt_on_error=1:abort_on_error=0:quarantine_size_mb=0")
    # A login burst on a busy machine can leave more blocks resident (a full suite on the shared
    # machine once read 1,231 B where runs alone read 817-948, and another 1,182 and 1,554 B in a
    # row): over the bound, the clients are measured again on a fresh tusk, up to three times,
    # and the smallest reading is judged. A regression of the struct or a per-client buffer
    # raises them all, and the heap's reading with them.
    readings, heap_per_client = [], None
    for _ in range(3):
        t = txn_tusk(tusk, n)
        trace, heap = [], []
        before, after, per_client, socks = idle_clients.measure(t.pid, "127.0.0.1", t.port, "tusk_trust", TEST_DB, n,
                                                                trace=trace, probe=lambda: heap.append(heap_used(t)))
        try:
            print(f"RSS {before} kB -> {after} kB for {n} idle clients: {per_client:.0f} B per client")
            print(f"readings (s, kB): before {trace[0]}; after {trace[1]}")
            print(f"heap used {heap[0]} B -> {heap[1]} B: {(heap[1] - heap[0]) / n:.0f} B per client")
            readings.append((per_client, before, after, trace))
            if heap_per_client is None:
                heap_per_client = (heap[1] - heap[0]) / n
                assert 0 < heap_per_client <= IDLE_CLIENT_BOUND, (
                    f"{heap_per_client:.0f} B of heap per idle client (bound {IDLE_CLIENT_BOUND}): "
                    f"{heap[0]} B before, {heap[1]} B after {n} clients")
            # They are real, logged-in clients: each is answered when it speaks.
            assert query_all(socks[:200]) == 200
        finally:
            for s in socks:
                s.close()
        if per_client <= IDLE_CLIENT_RSS_BOUND:
            break
    per_client, before, after, trace = min(readings, key=lambda r: r[0])
    assert per_client <= IDLE_CLIENT_RSS_BOUND, (
        f"{per_client:.0f} B of RSS per idle client (bound {IDLE_CLIENT_RSS_BOUND}), the smallest of "
        f"{[round(r[0]) for r in readings]}: {before} kB before, {after} kB after {n} clients; readings (s, kB) {trace}")


def test_many_idle_clients_beside_pgbench(tusk):
    """MANY idle clients in one process: all logged in, all answered afterwards, and a
    pgbench run beside them costs tusk at most 1.5 times the CPU per transaction it costs
    without them (least of three runs each, "alone" bracketing "beside"). What this guards
    against is per-event work that grows with the number of idle clients: a scan of all
    5000 clients per transaction would cost several times tusk's whole per-transaction
    work. It asserts tusk's own CPU per transaction, not pgbench's tps: tps moved by 2x
    between runs on a loaded 2-core machine (CI saw "beside" 10.4k against "alone" 8.0k
    and 14.6k tps with no code change), while the pooler's CPU per transaction does not
    depend on how much of the machine it got. The tps are printed beside it."""
    raise_nofile(MANY + 1000)
    t = txn_tusk(tusk, MANY)
    seconds = 3
    alone, beside = [], []
    alone.append(pgbench_run(t.port, seconds, t.pid))
    rss0 = t.status("VmRSS")
    socks = idle_clients.open_clients("127.0.0.1", t.port, "tusk_trust", TEST_DB, MANY, 0, 300 * SLOW)
    try:
        rss1 = t.status("VmRSS")
        assert len(socks) == MANY
        beside += [pgbench_run(t.port, seconds, t.pid) for _ in range(3)]
        served = query_all(socks)
        print(f"{MANY} idle clients: RSS {rss0} kB -> {rss1} kB ({(rss1 - rss0) * 1024 / MANY:.0f} B per client)")
        assert served == MANY
    finally:
        for s in socks:
            s.close()
    # The idle clients are gone (let tusk see them go): two more runs without them, so
    # "alone" brackets "beside".
    time.sleep(1)
    alone += [pgbench_run(t.port, seconds, t.pid) for _ in range(2)]
    fmt = lambda runs: ", ".join(f"{tps:.0f} tps {cpu:.1f} us/txn" for tps, cpu in runs)  # noqa: E731
    print(f"pgbench -S beside {MANY} idle clients: {fmt(beside)}; alone: {fmt(alone)}")
    cpu_beside = min(cpu for _, cpu in beside)
    cpu_alone = min(cpu for _, cpu in alone)
    assert cpu_beside <= 1.5 * cpu_alone, \
        f"tusk CPU per transaction beside {MANY} idle clients {fmt(beside)}; alone {fmt(alone)}"


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
