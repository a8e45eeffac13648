"""Many clients at once, and pgbench in every query mode."""

import re
import subprocess
import threading
import time

import pytest

from conftest import BENCH_DB, DIRECT, PG_BIN, SLOW, TEST_DB

pytestmark = pytest.mark.exclusive  # load or timing: runs alone (conftest.py)


def test_200_clients_50_queries_each(tusk, pg):
    size = 50
    t = tusk(pools=[{"database": "*", "user": "*", "service": "main", "mode": "session", "size": size}])
    # With TUSK_TEST_DIRECT=1 PostgreSQL's own max_connections (200) would be the limit.
    nclients, nqueries = (150 if DIRECT else 200), 50
    wait_until_no_backends(pg)
    start = threading.Barrier(nclients)
    errors, done = [], []
    peak = [0]
    stop_watch = threading.Event()

    def client(i):
        try:
            start.wait(timeout=60)
            with t.connect() as c:
                for q in range(nqueries):
                    n = i * 1000 + q
                    got = c.execute("select %s::int * 2", (n,)).fetchone()[0]
                    assert got == 2 * n, f"client {i} query {q}: {got} != {2 * n}"
            done.append(i)
        except Exception as e:  # noqa: BLE001 - every failure is reported below
            errors.append(f"client {i}: {type(e).__name__}: {e}")

    def watch():
        with pg.admin(TEST_DB) as c:
            while not stop_watch.is_set():
                n = c.execute("select count(*) from pg_stat_activity where usename = 'tusk_trust' "
                              "and datname = %s and backend_type = 'client backend'", (TEST_DB,)).fetchone()[0]
                peak[0] = max(peak[0], n)
                time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(nclients)]
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    for th in threads:
        th.start()
    deadline = time.monotonic() + 120 * SLOW
    for th in threads:
        th.join(max(0.1, deadline - time.monotonic()))
    stop_watch.set()
    watcher.join(10)
    hung = [th for th in threads if th.is_alive()]
    assert not hung, f"{len(hung)} clients still running after the deadline"
    assert errors == [], f"{len(errors)} clients failed, first: {errors[:5]}"
    assert len(done) == nclients
    if not DIRECT:
        assert 0 < peak[0] <= size, f"tusk opened {peak[0]} server connections for a pool of size {size}"


def wait_until_no_backends(pg, user="tusk_trust", timeout=10):
    """Server connections of an earlier test's tusk may still be closing."""
    deadline = time.monotonic() + timeout
    while pg.backends(user) and time.monotonic() < deadline:
        time.sleep(0.05)


def pgbench(port, *args, timeout=120):
    cmd = [str(PG_BIN / "pgbench"), "-h", "127.0.0.1", "-p", str(port), "-U", "tusk_trust", *args, BENCH_DB]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout * SLOW)


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_select_only(tusk, mode):
    t = tusk()
    p = pgbench(t.port, "-S", "-n", "-M", mode, "-c", "8", "-j", "2", "-T", "3")
    out = p.stdout + p.stderr
    assert p.returncode == 0, f"pgbench exited {p.returncode}:\n{out}"
    m = re.search(r"number of transactions actually processed: (\d+)", out)
    assert m, out
    assert int(m.group(1)) > 0, out
    m = re.search(r"number of failed transactions: (\d+)", out)
    if m:
        assert int(m.group(1)) == 0, out
    assert "aborted" not in out.lower(), out


def test_pgbench_tpcb_writes_in_session_mode(tusk):
    """The default TPC-B-like script: transactions with updates and inserts."""
    t = tusk()
    p = pgbench(t.port, "-n", "-M", "extended", "-c", "4", "-j", "2", "-t", "100")
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "number of transactions actually processed: 400/400" in out, out
