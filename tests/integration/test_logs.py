"""Logs: SIGUSR1 reopens a file target (rotation), log_connections / log_disconnections,
the periodic stats line, JSON lines; and systemd's notify protocol (READY, RELOADING,
STOPPING) on a real datagram socket, abstract and path."""

import json
import os
import re
import signal
import socket
import time

import pytest

from conftest import SLOW, wait_until
from lifecycle_util import finished, reload, rule, write_config


def file_log(path, fmt="text"):
    return {"level": "info", "format": fmt, "target": f"file:{path}"}


@pytest.mark.tusk_only
def test_sigusr1_reopens_the_log_file_after_rotation(tusk, tmp_path):
    log = tmp_path / "tusk-file.log"
    t = tusk(pools=[rule()], log=file_log(log))
    with t.connect() as c:
        c.execute("select 1")
    wait_until(lambda: log.exists() and "login:" in log.read_text(), 5 * SLOW, what="login in the log file")
    rotated = tmp_path / "tusk-file.log.1"
    os.rename(log, rotated)
    os.kill(t.pid, signal.SIGUSR1)
    wait_until(lambda: log.exists(), 5 * SLOW, what="log file reopened")
    with t.connect() as c:
        c.execute("select 1")
    wait_until(lambda: "login:" in log.read_text(), 5 * SLOW, what="new login in the new file")
    new = log.read_text()
    assert "SIGUSR1: log file reopened" in new
    assert "SIGUSR1" not in rotated.read_text()
    assert rotated.read_text().count("login:") == 1


@pytest.mark.tusk_only
def test_log_connections_and_disconnections(tusk, pg):
    t = tusk(pools=[rule(mode="transaction")])
    with t.connect(application_name="x") as c:
        c.execute("select 1")
    wait_until(lambda: "logout after" in t.log_text(), 5 * SLOW, what="logout line")
    log = t.log_text()
    login = re.search(r" (c[0-9a-f]{8}) tusk_test/tusk_trust@127\.0\.0\.1:\d+: login: transaction mode", log)
    assert login, log
    cid = login.group(1)
    assert re.search(cid + r" tusk_test/tusk_trust@127\.0\.0\.1:\d+: logout after \d+\.\d+s: client terminated", log)
    # both can be turned off, by a reload
    write_config(t, pg, [rule(mode="transaction")], log_connections=False, log_disconnections=False,
                 log={"level": "info", "format": "text", "target": "stderr"})
    reload(t)
    before = t.log_text().count("login:"), t.log_text().count("logout after")
    with t.connect() as c:
        c.execute("select 1")
    time.sleep(0.3)
    assert (t.log_text().count("login:"), t.log_text().count("logout after")) == before


@pytest.mark.tusk_only
def test_stats_line_every_period(tusk):
    t = tusk(pools=[rule()], stats_period="200ms")
    with t.connect() as c:
        c.execute("select 1")
        wait_until(lambda: "stats: clients 1, servers 1 " in t.log_text(), 5 * SLOW, what="stats line with the client")
    time.sleep(0.7)
    lines = [l for l in t.log_text().splitlines() if "stats: clients" in l]
    assert len(lines) >= 3
    pat = (r"stats: clients \d+, servers \d+ \(active \d+, idle \d+, connecting \d+\), waiting \d+, "
           r"xacts/s ([\d.]+), queries/s ([\d.]+), in \d+ B/s, out \d+ B/s")
    assert re.search(pat, lines[-1]), lines[-1]
    # rates come from the stats counters: queries show up as queries/s
    with t.connect() as c:
        for _ in range(100):
            c.execute("select 1")

    def busy_line():
        return any(float(m.group(2)) > 0 for m in re.finditer(pat, t.log_text()))

    wait_until(busy_line, 5 * SLOW, what="a stats line with queries/s > 0")


@pytest.mark.tusk_only
def test_stats_off_with_zero(tusk):
    t = tusk(pools=[rule()], stats_period="0")
    time.sleep(1.2)
    assert "stats:" not in t.log_text()


@pytest.mark.tusk_only
def test_json_lines(tusk, tmp_path):
    log = tmp_path / "tusk.json"
    t = tusk(pools=[rule()], log={**file_log(log, "json"), "level": "debug"})
    with t.connect() as c:
        c.execute("select 1")
    wait_until(lambda: log.exists() and "logout after" in log.read_text(), 5 * SLOW, what="logout in json")
    records = [json.loads(l) for l in log.read_text().splitlines()]
    login = [r for r in records if r["msg"].startswith("login:")]
    assert login and re.fullmatch(r"c[0-9a-f]{8}", login[0]["id"])
    assert login[0]["ctx"].startswith("tusk_test/tusk_trust@127.0.0.1:")
    # Database, user and address as fields of their own (issue 26 item 9), also for the server.
    assert (login[0]["db"], login[0]["user"]) == ("tusk_test", "tusk_trust")
    assert re.fullmatch(r"127\.0\.0\.1:\d+", login[0]["addr"])
    server = [r for r in records if r["id"] and r["id"].startswith("s")]
    assert server and all((r["db"], r["user"]) == ("tusk_test", "tusk_trust") for r in server), server
    assert all(r["level"] in ("error", "warn", "info", "debug") for r in records)
    assert all(set(r) >= {"db", "user", "addr"} for r in records)


def _notify_socket(abstract, tmp_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"tusk-life-{os.getpid()}-{time.monotonic_ns()}"
        s.bind("\0" + name)
        env = "@" + name
    else:
        path = str(tmp_path / "notify.sock")
        s.bind(path)
        env = path
    s.settimeout(10 * SLOW)
    return s, env


def _expect(s, what):
    deadline = time.monotonic() + 10 * SLOW
    seen = []
    while time.monotonic() < deadline:
        msg = s.recv(4096).decode()
        seen.append(msg)
        if what in msg.split("\n"):
            return msg
    raise AssertionError(f"{what} not received; got {seen}")


@pytest.mark.tusk_only
@pytest.mark.parametrize("abstract", [True, False])
def test_sd_notify_ready_reloading_stopping(tusk, pg, tmp_path, monkeypatch, abstract):
    s, env = _notify_socket(abstract, tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", env)
    try:
        t = tusk(pools=[rule()])
        _expect(s, "READY=1")
        os.kill(t.pid, signal.SIGHUP)
        msg = _expect(s, "RELOADING=1")
        assert re.search(r"MONOTONIC_USEC=\d+", msg)
        _expect(s, "READY=1")
        t.proc.send_signal(signal.SIGTERM)
        _expect(s, "STOPPING=1")
        assert finished(t, 10 * SLOW) == 0
    finally:
        s.close()
