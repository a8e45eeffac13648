"""Idle servers are checked (docs/backends.md): a server idle for server_check_delay runs
SELECT 1 before a client may get it again, so one that died silently (its backend stopped:
no EOF, nothing for the idle watcher's peek to see) is closed and replaced instead of
hanging the next client; connections tusk opens carry keepalive probes after 30 s."""
import os
import re
import signal
import subprocess
import threading
import time

from conftest import SLOW, TEST_DB, wait_until
from lifecycle_util import reload, rule, write_config


def backend_pid(c):
    return c.execute("select pg_backend_pid()").fetchone()[0]


def test_a_silently_dead_idle_server_is_replaced_not_handed_out(tusk, pg):
    t = tusk(pools=[rule(database=TEST_DB, user="tusk_trust", mode="transaction", size=1)],
             server_check_delay="1s", server_connect_timeout=f"{int(2 * SLOW)}s")
    c = t.connect()
    old = backend_pid(c)
    os.kill(old, signal.SIGSTOP)
    try:
        # The check runs from the pool's tick once the server has been idle 1 s; it times
        # out after server_connect_timeout and the core closes the server.
        wait_until(lambda: "failed its health check" in t.log_text() or "timed out waiting for the server"
                   in t.log_text(), 15 * SLOW, what="the stopped server's check to fail")
        started = time.monotonic()
        new = backend_pid(c)
        assert new != old
        assert time.monotonic() - started < 5 * SLOW
    finally:
        os.kill(old, signal.SIGCONT)
        pg.execute("select pg_terminate_backend(%s)", [old])
    c.close()


def test_a_healthy_idle_server_passes_its_checks_and_is_kept(tusk, pg):
    t = tusk(pools=[rule(database=TEST_DB, user="tusk_trust", mode="transaction", size=1)],
             server_check_delay="1s", log_level="debug")
    c = t.connect()
    first = backend_pid(c)
    time.sleep(3.5)  # at least two checks, each after a second idle
    assert backend_pid(c) == first
    assert "failed its health check" not in t.log_text()
    c.close()


def test_without_checks_the_stopped_server_is_what_the_client_gets(tusk, pg):
    """The control: with server_check_delay 0 nothing looks, and the next query waits on the
    stopped backend (the failure the check exists for)."""
    t = tusk(pools=[rule(database=TEST_DB, user="tusk_trust", mode="transaction", size=1)],
             server_check_delay="0")
    c = t.connect()
    old = backend_pid(c)
    os.kill(old, signal.SIGSTOP)
    try:
        time.sleep(2.5)
        out = {}
        th = threading.Thread(target=lambda: out.setdefault("pid", backend_pid(c)), daemon=True)
        th.start()
        th.join(2)
        assert th.is_alive(), "the query should hang on the stopped backend"
    finally:
        os.kill(old, signal.SIGCONT)
    th.join(10)
    assert out.get("pid") == old
    c.close()


def test_server_connections_carry_keepalive_probes(tusk, pg):
    t = tusk(pools=[rule(database=TEST_DB, user="tusk_trust", mode="transaction", size=1)])
    c = t.connect()
    c.execute("select 1")
    out = subprocess.run(["ss", "-Htno", "state", "established", f"( dport = :{pg.port} )"],
                         capture_output=True, text=True, check=True).stdout
    timers = re.findall(r"timer:\(keepalive,(\d+)sec", out)
    assert timers, out
    # The kernel's default is 7200 s to the first probe; tusk asks for 30.
    assert all(int(s) <= 30 for s in timers), out
    c.close()


def test_server_check_delay_is_reloadable(tusk, pg):
    """Started with checks off, a reload turns them on for the pool that exists: its idle,
    silently dead server is found and replaced, not handed out."""
    pools = [rule(database=TEST_DB, user="tusk_trust", mode="transaction", size=1)]
    t = tusk(pools=pools, server_check_delay="0", server_connect_timeout=f"{int(2 * SLOW)}s")
    c = t.connect()
    old = backend_pid(c)
    os.kill(old, signal.SIGSTOP)
    try:
        write_config(t, pg, pools, server_check_delay="1s", server_connect_timeout=f"{int(2 * SLOW)}s")
        reload(t)
        wait_until(lambda: "failed its health check" in t.log_text() or "timed out waiting for the server"
                   in t.log_text(), 15 * SLOW, what="the stopped server's check to fail")
        assert backend_pid(c) != old
    finally:
        os.kill(old, signal.SIGCONT)
        pg.execute("select pg_terminate_backend(%s)", [old])
    c.close()


def test_server_check_query_is_what_the_idle_check_runs(tusk, pg):
    """server_check_query (PgBouncer's name and meaning): the idle check runs it, not SELECT 1;
    a sequence it advances shows each run. Empty turns the check off."""
    pg.execute("drop sequence if exists tusk_check_seq", dbname=TEST_DB)
    pg.execute("create sequence tusk_check_seq", dbname=TEST_DB)
    pg.execute("grant usage, select on sequence tusk_check_seq to public", dbname=TEST_DB)
    try:
        t = tusk(pools=[rule(database=TEST_DB, user="tusk_trust", mode="transaction", size=1)],
                 server_check_delay="1s", server_check_query="SELECT nextval('tusk_check_seq')")
        c = t.connect()
        first = backend_pid(c)
        wait_until(lambda: pg.execute("select last_value from tusk_check_seq", dbname=TEST_DB)[0][0] >= 2, 15 * SLOW,
                   what="two runs of server_check_query")
        assert backend_pid(c) == first  # a check that answers keeps the server
        c.close()

        t2 = tusk(pools=[rule(database=TEST_DB, user="tusk_trust", mode="transaction", size=1)],
                  server_check_delay="1s", server_check_query="")
        c2 = t2.connect()
        second = backend_pid(c2)
        assert t.stop() == []  # the first tusk's checks would advance it too
        time.sleep(1)
        before = pg.execute("select last_value from tusk_check_seq", dbname=TEST_DB)[0][0]
        time.sleep(3)  # three check periods: no check ran
        assert pg.execute("select last_value from tusk_check_seq", dbname=TEST_DB)[0][0] == before
        assert backend_pid(c2) == second
        c2.close()
    finally:
        pg.execute("drop sequence if exists tusk_check_seq", dbname=TEST_DB)
