"""make run-kv (scripts/run-kv.sh): the two-zone demo starts, a put through zone a's tusk is
read through zone b's once replicated, and Ctrl-C stops both tusks and both PostgreSQL."""

import os
import re
import signal
import socket
import subprocess
import time

import psycopg
import pytest

from conftest import PG_BIN, SLOW, TUSK_BIN, as_postgres, port_open, wait_until

pytestmark = pytest.mark.tusk_only

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def kv(port):
    return psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="kv", autocommit=True,
                           connect_timeout=10)


def pg_ports(run_dir):
    """The PostgreSQL ports the demo wrote into its tusk configs."""
    ports = []
    for z in ("a", "b"):
        text = (run_dir / f"tusk-{z}.yaml").read_text()
        ports.append(int(re.search(r'hosts: \["127\.0\.0\.1:(\d+)"\]', text).group(1)))
    return ports


def kill_demo(proc, run_dir):
    """The demo killed before its own clean-up ran: pg_ctl daemonized its postmasters out of
    the script's process group, so they are stopped here, not left for the rest of the run."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for z in ("a", "b"):
        data = run_dir / f"pg-{z}"
        if (data / "postmaster.pid").exists():
            subprocess.run(as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                           capture_output=True, timeout=60)


def start_demo(run_dir):
    """run-kv.sh started on run_dir, and its two psql lines: (proc, {zone: tusk port})."""
    env = dict(os.environ, RUN_KV_DIR=str(run_dir), TUSK_BIN=str(TUSK_BIN))
    # SIGINT as a terminal's Ctrl-C delivers it: a shell started with SIGINT ignored (a run in
    # the background of a shell without job control, as nohup ... & does) cannot trap it.
    proc = subprocess.Popen([os.path.join(ROOT, "scripts", "run-kv.sh")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = {}
    deadline = time.monotonic() + 120 * SLOW
    try:
        while len(lines) < 2 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            m = re.match(r"zone (\w+): psql -h 127\.0\.0\.1 -p (\d+) -U postgres kv$", line.strip())
            assert m, f"unexpected output line {line!r}"
            lines[m.group(1)] = int(m.group(2))
        assert set(lines) == {"a", "b"}, (lines, proc.poll(), proc.stderr.read() if proc.poll() is not None else "")
    except BaseException:
        kill_demo(proc, run_dir)
        raise
    return proc, lines


def stop_demo(proc, run_dir, ports):
    """Ctrl-C; the demo stops cleanly and leaves nothing of ports open."""
    proc.send_signal(signal.SIGINT)
    try:
        rc = proc.wait(timeout=60 * SLOW)
    except subprocess.TimeoutExpired:
        # What each process of the demo was doing, and what the script printed, before
        # they are killed.
        ps = subprocess.run(["ps", "-o", "pid,ppid,stat,wchan:24,etime,args", "-s", str(proc.pid)],
                            capture_output=True, text=True).stdout
        kill_demo(proc, run_dir)
        err = proc.communicate(timeout=10)[1]
        raise AssertionError(f"run-kv.sh still running 60 s after SIGINT\n{ps}\nits stderr:\n{err}")
    err = proc.stderr.read()
    assert rc == 0, err
    assert "stopped both tusks and both PostgreSQL instances" in err
    # Everything it started is gone: both tusks and both postmasters.
    wait_until(lambda: not any(port_open(p) for p in ports), 10 * SLOW, what="the demo's ports to close")
    for z in ("a", "b"):
        assert not (run_dir / f"pg-{z}" / "postmaster.pid").exists()


def test_run_kv_demo_replicates_between_zones_and_stops_on_ctrl_c(workdir):
    run_dir = workdir / "run-kv"
    proc, lines = start_demo(run_dir)
    ports = []
    try:
        # Two tusks, two ports: one shared port (SO_REUSEPORT) would mix the zones up.
        assert lines["a"] != lines["b"], lines
        assert len(set(pg_ports(run_dir))) == 2

        with kv(lines["a"]) as a:
            assert a.execute("select kv.put('default', 'demo', '{\"from\": \"a\"}')").fetchone()[0] > 0
            assert a.execute("select kv.get('default', 'demo')").fetchone()[0] == {"from": "a"}
        # The demo sets kv.router_password: zone a's shard connections are kv_router's (a put's
        # fast path), none kv_client's.
        with psycopg.connect(host="127.0.0.1", port=pg_ports(run_dir)[0], user="postgres", dbname="postgres",
                             autocommit=True, connect_timeout=10) as pg:
            roles = {r[0] for r in pg.execute("select usename from pg_stat_activity where datname like 'kv_shard_%' "
                                              "and application_name in ('tusk kv worker', 'tusk kv router')")}
            assert roles == {"kv_router"}, roles
        with kv(lines["b"]) as b:
            wait_until(lambda: b.execute("select kv.get('default', 'demo')").fetchone()[0] == {"from": "a"},
                       30 * SLOW, interval=0.1, what="the put of zone a to reach zone b")
            # The other way too: every zone is a master.
            b.execute("select kv.patch('default', 'demo', '{\"n\": 1}')")
        with kv(lines["a"]) as a:
            wait_until(lambda: a.execute("select kv.get('default', 'demo')").fetchone()[0] == {"from": "a", "n": 1},
                       30 * SLOW, interval=0.1, what="the patch of zone b to reach zone a")
        # Its redis listeners, printed after the psql lines: a SET in zone a is read by a GET in zone b.
        rlines = {}
        while len(rlines) < 2:
            line = proc.stdout.readline()
            m = re.match(r"zone (\w+): redis-cli -h 127\.0\.0\.1 -p (\d+)$", line.strip())
            assert m, f"unexpected output line {line!r}"
            rlines[m.group(1)] = int(m.group(2))
        cli = lambda z, *args: subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(rlines[z]), *args],  # noqa: E731
                                              capture_output=True, text=True, timeout=30 * SLOW).stdout.strip()
        assert cli("a", "SET", "demo-redis", "from a") == "OK"
        wait_until(lambda: cli("b", "GET", "demo-redis") == "from a", 30 * SLOW, interval=0.1,
                   what="the SET of zone a to reach zone b's GET")
        ports = list(lines.values()) + list(rlines.values()) + pg_ports(run_dir)
        assert all(port_open(p) for p in ports)
    finally:
        stop_demo(proc, run_dir, ports)
    for z in ("a", "b"):
        log = (run_dir / f"tusk-{z}.log").read_text()
        assert "kv: routing calls to instance" in log and "stopped" in log, log[-2000:]

    # Run again on the same data while a socket holds zone a's last PostgreSQL port (as a
    # connection of the last run left in TIME_WAIT may, or another program): zone a's
    # PostgreSQL moves to another port, which the catalog kept from the first run does not
    # name. The demo refreshes the catalog before tusk kv init reads it (it used to init
    # first, and stop on "connection refused" at the old port).
    old = pg_ports(run_dir)
    with socket.socket() as hold:
        # SO_REUSEADDR: the first run's closed connections may leave the port in TIME_WAIT,
        # which refuses a plain bind (EADDRINUSE); a listener still holds the port alone.
        hold.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        hold.bind(("127.0.0.1", old[0]))
        hold.listen(1)
        proc, lines = start_demo(run_dir)
        new = pg_ports(run_dir)
        try:
            assert new[0] != old[0], (old, new)
            with kv(lines["a"]) as a:
                a.execute("select kv.put('default', 'again', '{\"run\": 2}')")
            with kv(lines["b"]) as b:
                wait_until(lambda: b.execute("select kv.get('default', 'again')").fetchone()[0] == {"run": 2},
                           30 * SLOW, interval=0.1, what="the second run's put of zone a to reach zone b")
                # What the first run wrote is still there.
                assert b.execute("select kv.get('default', 'demo')").fetchone()[0] == {"from": "a", "n": 1}
        finally:
            stop_demo(proc, run_dir, list(lines.values()) + new)
