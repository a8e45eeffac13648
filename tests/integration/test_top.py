"""`tusk top` in a real terminal (tmux: send-keys to type, capture-pane to read the screen)
against a running tusk under pgbench load: the pool's row with live tps and clients, sorting,
PAUSE/RESUME of the selected pool's database, and KILL_CLIENT of the selected client after a
confirmation (refused once, then accepted). SHOW WAITS, which top reads, is checked too."""

import os
import re
import shutil
import subprocess
import time

import psycopg
import pytest

from conftest import BENCH_DB, PG_BIN, SLOW, TEST_DB, TUSK_BIN, wait_until
from test_console import ADMIN, ADMIN_PW, APP_PW, psql, psql_rows, start

pytestmark = [pytest.mark.tusk_only,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux missing (scripts/install-deps.sh)")]


class Tmux:
    """A tmux server of this test's own (-L), so nobody else's sessions are touched."""

    def __init__(self, name, cmd, width=170, height=45):
        self.sock = f"tusk-top-{os.getpid()}-{name}"
        self.run("new-session", "-d", "-s", "top", "-x", str(width), "-y", str(height), cmd)

    def run(self, *args, check=True):
        return subprocess.run(["tmux", "-L", self.sock, *args], capture_output=True, text=True, timeout=10,
                              check=check)

    def keys(self, *keys):
        self.run("send-keys", "-t", "top", *keys)

    def screen(self, escapes=False):
        args = ["capture-pane", "-p", "-t", "top"] + (["-e"] if escapes else [])
        r = self.run(*args, check=False)
        return r.stdout if r.returncode == 0 else ""

    def alive(self):
        return self.run("has-session", "-t", "top", check=False).returncode == 0

    def kill(self):
        self.run("kill-server", check=False)
        # tmux leaves its socket file behind.
        sock = os.path.join(os.environ.get("TMUX_TMPDIR", "/tmp"), f"tmux-{os.getuid()}", self.sock)
        if os.path.exists(sock):
            os.unlink(sock)


def pool_line(screen, db):
    return next((ln for ln in screen.splitlines() if ln.startswith(db + " ")), None)


def selected_line(screen_with_escapes):
    """The row drawn in reverse video (the selection)."""
    for ln in screen_with_escapes.splitlines():
        if "\x1b[7m" in ln:
            return re.sub(r"\x1b\[[0-9;]*m", "", ln)
    return None


def test_show_waits_columns_and_percentiles(tusk, tmp_path):
    t = start(tusk, tmp_path, mode="transaction", size=2)
    with psycopg.connect(host="127.0.0.1", port=t.port, user="tusk_trust", password=APP_PW, dbname=TEST_DB,
                         autocommit=True) as c:
        for _ in range(20):
            c.execute("select 1")
    cols, rows = psql_rows(t, "SHOW WAITS")
    assert cols == ["database", "user", "xact_count", "wait_count", "wait_p50_us", "wait_p99_us", "wait_buckets"]
    row = next(r for r in rows if r["database"] == TEST_DB)
    assert int(row["xact_count"]) >= 20
    buckets = [int(x) for x in row["wait_buckets"].split(",")]
    assert len(buckets) == 15 and sum(buckets) == int(row["wait_count"])
    assert int(row["wait_p50_us"]) <= int(row["wait_p99_us"])


def test_top_under_pgbench(tusk, tmp_path):
    t = start(tusk, tmp_path, mode="transaction", size=3, pool_wait_timeout="30s")
    bench = subprocess.Popen([str(PG_BIN / "pgbench"), "-h", "127.0.0.1", "-p", str(t.port), "-U", "tusk_trust",
                              "-n", "-S", "-c", "6", "-j", "2", "-T", str(int(40 * SLOW)), BENCH_DB],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    victim = psycopg.connect(host="127.0.0.1", port=t.port, user="tusk_trust", password=APP_PW, dbname=TEST_DB,
                             autocommit=True, application_name="victim")
    conninfo = f"host=127.0.0.1 port={t.port} user={ADMIN} password={ADMIN_PW} dbname=tusk"
    tm = Tmux("a", f"{TUSK_BIN} top -i 0.5 '{conninfo}'")
    try:
        # The bench pool appears with transactions per second and its clients.
        def live():
            ln = pool_line(tm.screen(), BENCH_DB)
            if not ln:
                return False
            f = ln.split()
            return float(f[7]) > 0 and int(f[3]) + int(f[4]) >= 1
        wait_until(live, 20 * SLOW, what="tusk top to show the bench pool with tps > 0")
        screen = tm.screen()
        assert "DATABASE" in screen and "WAIT_P99" in screen and "CLIENT" in screen, screen
        assert "victim" in screen, screen

        # Sorting: s cycles the key shown in the header; by tps the bench pool comes first.
        tm.keys("s")
        wait_until(lambda: "sort: tps" in tm.screen(), 5 * SLOW, what="sort: tps")
        wait_until(lambda: (selected_line(tm.screen(True)) or "").startswith(BENCH_DB + " "), 5 * SLOW,
                   what="the busiest pool selected first")

        # PAUSE and RESUME the selected pool's database.
        def paused():
            _, pools = psql_rows(t, "SHOW POOLS")
            return next(r for r in pools if r["database"] == BENCH_DB)["paused"] == "1"
        tm.keys("p")
        wait_until(paused, 15 * SLOW, what="PAUSE from tusk top")
        wait_until(lambda: f'PAUSE "{BENCH_DB}": done' in tm.screen(), 5 * SLOW, what="PAUSE status line")
        wait_until(lambda: (pool_line(tm.screen(), BENCH_DB) or "").rstrip().endswith("yes"), 5 * SLOW,
                   what="PAUSED yes on screen")
        tm.keys("r")
        wait_until(lambda: not paused(), 15 * SLOW, what="RESUME from tusk top")

        # KILL_CLIENT: focus the clients, move to the victim, refuse once, then confirm.
        tm.keys("Tab")
        wait_until(lambda: "focus: clients" in tm.screen(), 5 * SLOW, what="focus on clients")
        for _ in range(60):
            sel = selected_line(tm.screen(True)) or ""
            if "victim" in sel:
                break
            tm.keys("j")
            time.sleep(0.1)
        sel = selected_line(tm.screen(True)) or ""
        assert "victim" in sel, tm.screen()
        victim_id = sel.split()[0]
        tm.keys("x")
        wait_until(lambda: f"KILL_CLIENT {victim_id}? [y/N]" in tm.screen(), 5 * SLOW, what="confirmation")
        tm.keys("n")
        wait_until(lambda: f"KILL_CLIENT {victim_id}: not done" in tm.screen(), 5 * SLOW, what="refusal")
        victim.execute("select 1")  # still connected
        # The selection follows the client across refreshes (the list is re-read each time).
        time.sleep(1.2)
        assert victim_id in (selected_line(tm.screen(True)) or ""), tm.screen()
        tm.keys("x")
        wait_until(lambda: f"KILL_CLIENT {victim_id}? [y/N]" in tm.screen(), 5 * SLOW, what="confirmation")
        tm.keys("y")
        wait_until(lambda: f"KILL_CLIENT {victim_id}: done" in tm.screen(), 5 * SLOW, what="KILL_CLIENT done")
        with pytest.raises(psycopg.OperationalError):
            victim.execute("select 1")
        _, clients = psql_rows(t, "SHOW CLIENTS")
        assert victim_id not in [c["id"] for c in clients]

        # q quits and gives the terminal back.
        tm.keys("q")
        wait_until(lambda: not tm.alive(), 5 * SLOW, what="tusk top to exit on q")
    finally:
        tm.kill()
        victim.close()
        if bench.poll() is None:
            bench.terminate()
        out, _ = bench.communicate(timeout=60)
    # The load went on through all of it: pgbench saw no failed transaction.
    assert "aborted" not in out, out


def test_top_once_prints_a_frame(tusk, tmp_path, pg):
    t = start(tusk, tmp_path, mode="transaction", size=2)
    with psycopg.connect(host="127.0.0.1", port=t.port, user="tusk_trust", password=APP_PW, dbname=TEST_DB,
                         autocommit=True) as c:
        c.execute("select 1")
        conninfo = f"host=127.0.0.1 port={t.port} user={ADMIN} password={ADMIN_PW} dbname=tusk"
        r = subprocess.run([str(TUSK_BIN), "top", "--once", "-i", "0.2", conninfo], capture_output=True, text=True,
                           timeout=30)
    assert r.returncode == 0, r.stderr
    assert pool_line(r.stdout, TEST_DB), r.stdout
    assert "\x1b[" not in r.stdout  # no terminal control in --once output
    # The backends panel (SHOW SERVICES): the service's one backend, up, with the pool's server.
    lines = r.stdout.splitlines()
    head = [i for i, line in enumerate(lines) if line.split()[:3] == ["SERVICE", "BACKEND", "POOL"]]
    assert head, r.stdout
    backends = [line.split() for line in lines[head[0] + 1:] if line.strip() and not line.startswith("CLIENT")]
    backends = backends[:next((i for i, b in enumerate(backends) if b[0] == "CLIENT"), len(backends))]
    assert any(b[1].endswith(f":{pg.port}") and "up" in b and f"{TEST_DB}/tusk_trust" in b[2] for b in backends), r.stdout
    bad = subprocess.run([str(TUSK_BIN), "top", "--once", f"host=127.0.0.1 port={t.port} user=nobody dbname=tusk"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "tusk top:" in bad.stderr


def test_top_finds_its_console_from_the_config_and_refuses_a_non_console_dbname(tusk, tmp_path, pg):
    """tusk top with no connection string took "dbname=tusk" on libpq's default port, not the
    tusk configured in tusk.yaml; and a string without dbname=tusk failed with libpq's words."""
    t = start(tusk, tmp_path, mode="transaction", size=2)
    with psycopg.connect(host="127.0.0.1", port=t.port, user="tusk_trust", password=APP_PW, dbname=TEST_DB,
                         autocommit=True) as c:
        c.execute("select 1")
        env = {"PATH": "/usr/bin:/bin", "PGUSER": ADMIN, "PGPASSWORD": ADMIN_PW}
        r = subprocess.run([str(TUSK_BIN), "top", "--once", "-i", "0.2", "-c", str(t.cfg_path)], capture_output=True,
                           text=True, timeout=30, env=env)
        assert r.returncode == 0, r.stderr
        assert pool_line(r.stdout, TEST_DB), r.stdout
        r = subprocess.run([str(TUSK_BIN), "top", "--once", "-i", "0.2"], capture_output=True, text=True, timeout=30,
                           env=env, cwd=t.cfg_path.parent)
        assert r.returncode == 0 and pool_line(r.stdout, TEST_DB), r.stderr
    r = subprocess.run([str(TUSK_BIN), "top", "--once", f"host=127.0.0.1 port={t.port} dbname={TEST_DB}"],
                       capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 2 and "add dbname=tusk" in r.stderr, r.stderr
