"""Online restart: a new tusk started with --takeover receives the listening sockets of the
running one (SCM_RIGHTS over takeover_socket), serves, and the old one drains. A client loop
connecting every 10 ms sees no failure; a transaction on the old process commits."""

import os
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.request

import psycopg
import pytest

import pgwire
from conftest import SANITIZER_RE, SLOW, TEST_DB, TUSK_BIN, free_port, to_yaml, wait_until
from lifecycle_util import finished, rule
from tls_util import starttls


class Loop(threading.Thread):
    """Connect, SELECT 1, disconnect, every 10 ms; count what succeeds and what fails."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.ok = 0
        self.failures = []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                with psycopg.connect(host="127.0.0.1", port=self.port, user="tusk_trust", dbname=TEST_DB,
                                     connect_timeout=10, autocommit=True) as c:
                    assert c.execute("select 1").fetchone() == (1,)
                self.ok += 1
            except Exception as e:  # noqa: BLE001 - every failure is the test's finding
                self.failures.append(repr(e))
            time.sleep(0.01)


def start_new(t, log_path):
    logf = open(log_path, "ab")
    proc = subprocess.Popen([str(TUSK_BIN), "-c", str(t.cfg_path), "--takeover"], stdin=subprocess.DEVNULL,
                            stdout=logf, stderr=subprocess.STDOUT, cwd=t.dir)
    return proc, logf


def wait_taken_over(t, new_log):
    wait_until(lambda: "this process serves" in new_log.read_text(errors="replace"), 15 * SLOW,
               what="new process serving")
    wait_until(lambda: "listeners handed over; draining" in t.log_text(), 5 * SLOW, what="old draining")


def _exited_clean(rc, new_log):
    """The new process (stop_new's rc) exited 0, its log free of sanitizer reports."""
    assert rc == 0
    assert not SANITIZER_RE.search(new_log.read_text(errors="replace"))


def stop_new(new, new_logf):
    """SIGTERM to the new process unless it has exited; its exit code."""
    if new.poll() is None:
        new.send_signal(signal.SIGTERM)
    rc = new.wait(15 * SLOW)
    new_logf.close()
    return rc


@pytest.mark.tusk_only
@pytest.mark.parametrize("new_workers", [2, 3, 1])
def test_online_restart_refuses_no_connection(tusk, pg, tmp_path, new_workers):
    pg.execute("create table if not exists restart_t (v int)", dbname=TEST_DB)
    pg.execute("truncate restart_t", dbname=TEST_DB)
    pg.execute("grant all on restart_t to public", dbname=TEST_DB)
    sock = tmp_path / "takeover.sock"
    http = free_port()  # the old process serves it until it drains: the new one binds beside
    t = tusk(pools=[rule(mode="transaction")], takeover_socket=str(sock), shutdown_timeout="20s",
             admin={"http": f"127.0.0.1:{http}"})
    old_pid = t.pid
    # a client of the old process, inside a transaction through the swap
    held = t.connect(autocommit=False)
    held.execute("insert into restart_t values (1)")

    loop = Loop(t.port)
    loop.start()
    time.sleep(0.5)
    # the new process may run with another number of workers
    text = t.cfg_path.read_text().replace("workers: 2", f"workers: {new_workers}")
    t.cfg_path.write_text(text)
    new_log = tmp_path / "new.log"
    new, new_logf = start_new(t, new_log)
    try:
        wait_taken_over(t, new_log)
        time.sleep(0.5)
        # the old transaction goes on and commits on the old process
        held.execute("insert into restart_t values (2)")
        held.commit()
        assert pg.execute("select count(*) from restart_t", dbname=TEST_DB)[0][0] == 2
        held.close()
        assert finished(t, 10 * SLOW) == 0
        t.wait_log("drained: every client has finished")
        time.sleep(0.5)
        loop.stop.set()
        loop.join(10)
        assert loop.failures == [], f"{len(loop.failures)} failed of {loop.ok + len(loop.failures)}: {loop.failures[:3]}"
        print(f"online restart: {loop.ok} connections through the swap, {len(loop.failures)} failed")
        assert loop.ok > 20
        # clients now reach the new process
        with psycopg.connect(host="127.0.0.1", port=t.port, user="tusk_trust", dbname=TEST_DB) as c:
            assert c.execute("select 1").fetchone() == (1,)
        assert "login:" in new_log.read_text(errors="replace")
        assert _metric(http, "tusk_up") == "1"
        assert not os.path.exists(f"/proc/{old_pid}/status") or "zombie" in open(f"/proc/{old_pid}/status").read()
        # and the new process can itself be replaced: it bound takeover_socket
        assert sock.exists()
    finally:
        held.close()
        loop.stop.set()
        rc = stop_new(new, new_logf)
    _exited_clean(rc, new_log)


@pytest.mark.tusk_only
def test_second_tusk_without_takeover_is_refused(tusk, pg, tmp_path):
    sock = tmp_path / "takeover.sock"
    t = tusk(pools=[rule()], takeover_socket=str(sock))
    p = subprocess.run([str(TUSK_BIN), "-c", str(t.cfg_path)], capture_output=True, text=True, timeout=15 * SLOW)
    assert p.returncode == 1
    assert "another tusk answers there; start with --takeover" in p.stdout + p.stderr
    with t.connect() as c:
        assert c.execute("select 1").fetchone() == (1,)


@pytest.mark.tusk_only
def test_second_tusk_on_the_same_port_is_refused_without_takeover_socket(tusk, pg, tmp_path):
    """With no takeover_socket, a second tusk on a port the first listens on would share it by
    SO_REUSEPORT and take some of the new clients, with its own configuration, without a word;
    it is refused, as PgBouncer refuses. The same for the Unix socket, which it would have
    unlinked and taken over (another address, the same port and socket directory), and for
    admin.http, whose /metrics and /health would answer for either tusk. The first keeps
    serving on all three."""
    sockdir = tmp_path / "sock"
    sockdir.mkdir()
    http = free_port()
    t = tusk(pools=[rule()], unix_socket_dir=str(sockdir), admin={"http": f"127.0.0.1:{http}"})
    p = subprocess.run([str(TUSK_BIN), "-c", str(t.cfg_path)], capture_output=True, text=True, timeout=15 * SLOW)
    out = p.stdout + p.stderr  # an assertion shows all of it: which listener refused
    assert p.returncode == 1, out
    assert f"listen 127.0.0.1:{t.port}: another process listens there" in out, out
    text = t.cfg_path.read_text()
    # Another loopback address, the same port (hence the same socket file). Some other socket
    # on the machine may hold that port on the other address (seen once in a few hundred runs,
    # when free_port took ports from the kernel's ephemeral range: "listen 127.0.0.2:P: another
    # process listens there"); then another address is tried, and only the Unix socket's
    # refusal passes.
    second = tmp_path / "second.yaml"
    http2 = free_port()
    for host in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
        second.write_text(text.replace("host: 127.0.0.1\n", f"host: {host}\n", 1)
                          .replace(f"127.0.0.1:{http}", f"127.0.0.1:{http2}"))
        assert second.read_text() != text
        p = subprocess.run([str(TUSK_BIN), "-c", str(second)], capture_output=True, text=True, timeout=15 * SLOW)
        out = p.stdout + p.stderr
        assert p.returncode == 1, out
        if f"listen {host}:{t.port}: another process listens there" not in out:
            break
    assert f"listen on Unix socket {sockdir}/.s.PGSQL.{t.port}: another process listens there" in out, out
    third = tmp_path / "third.yaml"  # its own port and no Unix socket: only admin.http is shared
    third.write_text(text.replace(f"port: {t.port}\n", f"port: {free_port()}\n", 1)
                     .replace(f'unix_socket_dir: "{sockdir}"\n', ""))
    assert f"port: {t.port}\n" not in third.read_text() and str(sockdir) not in third.read_text()
    p = subprocess.run([str(TUSK_BIN), "-c", str(third)], capture_output=True, text=True, timeout=15 * SLOW)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert f"admin.http 127.0.0.1:{http}: another process listens there" in out, out
    assert _metric(http, "tusk_up") == "1"  # the first still answers there
    # Two entries of one configuration naming one address (127.1 is 127.0.0.1): both would be
    # bound, our SO_REUSEPORT sockets sharing the port, each connection getting one entry's
    # settings at random; refused at start as a reload refuses it (test_reload.py).
    q = free_port()
    fourth = tmp_path / "fourth.yaml"
    fourth.write_text(to_yaml({"listen": [{"host": "127.0.0.1", "port": q}, {"host": "127.1", "port": q}],
                               "services": {"main": {"hosts": [f"127.0.0.1:{pg.port}"]}},
                               "pools": [rule()]}) + "\n")
    p = subprocess.run([str(TUSK_BIN), "-c", str(fourth)], capture_output=True, text=True, timeout=15 * SLOW)
    assert p.returncode == 1, p.stdout + p.stderr
    assert f"listen 127.1:{q}: the same address as listen 127.0.0.1:{q}" in p.stdout + p.stderr
    for host in ("127.0.0.1", str(sockdir)):
        for _ in range(20):  # every connection reaches the first tusk (both workers' sockets)
            with psycopg.connect(host=host, port=t.port, user="tusk_trust", dbname=TEST_DB, connect_timeout=10,
                                 autocommit=True) as c:
                assert c.execute("select 1").fetchone() == (1,)
    # The restart without takeover_socket (docs/operations.md): --beside binds beside the first,
    # SIGUSR2 drains the first, and the second serves on both sockets.
    log = tmp_path / "beside.log"
    with open(log, "ab") as logf:
        p = subprocess.Popen([str(TUSK_BIN), "-c", str(t.cfg_path), "--beside"], stdin=subprocess.DEVNULL,
                             stdout=logf, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "started" in log.read_text(errors="replace") or p.poll() is not None, 15 * SLOW,
                   what="the second tusk started beside the first")
        assert p.poll() is None, log.read_text(errors="replace")
        t.proc.send_signal(signal.SIGUSR2)
        assert t.proc.wait(timeout=15 * SLOW) == 0
        t.proc = None
        t.logf.close()
        for host in ("127.0.0.1", str(sockdir)):
            with psycopg.connect(host=host, port=t.port, user="tusk_trust", dbname=TEST_DB, connect_timeout=10,
                                 autocommit=True) as c:
                assert c.execute("select 1").fetchone() == (1,)
        assert _metric(http, "tusk_up") == "1"  # beside the first, it bound admin.http too: now alone
        # Stopped, it leaves the freed port to a plain start (its connections in TIME_WAIT).
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=15 * SLOW) == 0
        assert not (sockdir / f".s.PGSQL.{t.port}").exists()
        with open(log, "ab") as logf:
            p = subprocess.Popen([str(TUSK_BIN), "-c", str(t.cfg_path)], stdin=subprocess.DEVNULL, stdout=logf,
                                 stderr=subprocess.STDOUT)
        wait_until(lambda: _serves(t.port), 15 * SLOW, what="a new tusk on the freed port")
        assert p.poll() is None
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=15 * SLOW)
    assert not SANITIZER_RE.search(log.read_text(errors="replace"))


def _metric(port, name):
    """The value of an unlabelled sample of admin.http's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10 * SLOW) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return line.split()[1]
    raise AssertionError(f"{name} not in /metrics")


def _serves(port):
    try:
        with psycopg.connect(host="127.0.0.1", port=port, user="tusk_trust", dbname=TEST_DB, connect_timeout=3,
                             autocommit=True) as c:
            return c.execute("select 1").fetchone() == (1,)
    except psycopg.Error:
        return False


@pytest.mark.tusk_only
def test_failed_takeover_leaves_the_old_process_serving(tusk, pg, tmp_path):
    sock = tmp_path / "takeover.sock"
    t = tusk(pools=[rule()], takeover_socket=str(sock))
    loop = Loop(t.port)
    loop.start()
    time.sleep(0.3)
    # the new process gets the listeners, then fails: its second address is PostgreSQL's
    # port (after the inherited one, so a worker would already have it if it were posted)
    good = t.cfg_path.read_text()
    bad = good.replace("\nworkers:", f"\n  - host: 127.0.0.1\n    port: {pg.port}\nworkers:", 1)
    assert bad != good
    t.cfg_path.write_text(bad)
    new_log = tmp_path / "new.log"
    new, new_logf = start_new(t, new_log)
    assert new.wait(15 * SLOW) == 1
    new_logf.close()
    assert "received" in new_log.read_text(errors="replace")
    wait_until(lambda: "accepting again" in t.log_text(), 5 * SLOW, what="old process resumed")
    time.sleep(0.5)
    loop.stop.set()
    loop.join(10)
    assert loop.failures == [], loop.failures[:3]
    assert loop.ok > 20
    t.cfg_path.write_text(good)
    with t.connect() as c:
        assert c.execute("select 1").fetchone() == (1,)
    assert sock.exists()


def _tls_cancel(port, ca, key):
    """A CancelRequest over TLS (as libpq 17's PQcancelBlocking and asyncpg send it on a TLS
    connection), waiting for its end."""
    ctx = ssl.create_default_context(cafile=ca)
    with socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW) as raw:
        with starttls(raw, ctx) as s:
            s.sendall(struct.pack("!IIII", 16, 80877102, *key))
            assert s.recv(1) == b""


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    from tls_util import Certs
    return Certs(tmp_path_factory.mktemp("certs"))


def _sleep_in_background(c):
    """pg_sleep(30) on RawClient c from a thread; -> (thread, ended: {"how": "cancelled" or what
    came instead, "after": seconds})."""
    ended = {}

    def run():
        began = time.monotonic()
        rows, errors = c.simple_query("select pg_sleep(30)")
        ended["how"] = "cancelled" if errors and errors[0].get("C") == "57014" else repr((rows, errors))
        ended["after"] = time.monotonic() - began

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th, ended


@pytest.mark.tusk_only
@pytest.mark.parametrize("mode,how", [("session", "plain"), ("transaction", "plain"), ("session", "tls")])
def test_a_cancel_reaches_a_query_of_the_draining_process(tusk, pg, tmp_path, certs, mode, how):
    """After a takeover the listeners are the new process's, so a client of the old one (still
    running its query while the old process drains) sends its CancelRequest to the new one,
    which never gave out that key: the cancel was ignored ("unknown key") and the query ran
    its full time, holding the old process up to shutdown_timeout. The new process hands a
    key it does not know to the process it took over from, whose client's query is cancelled;
    so does it for a cancel sent over TLS (the TLS session itself stays with the new process)."""
    sock = tmp_path / "takeover.sock"
    tls = {"tls": "allow", "tls_cert_file": certs.server_crt, "tls_key_file": certs.server_key}
    t = tusk(pools=[rule(mode=mode)], takeover_socket=str(sock), shutdown_timeout="60s",
             listen_opts=tls if how == "tls" else None)
    c = pgwire.RawClient("127.0.0.1", t.port, timeout=60 * SLOW)
    key = next(struct.unpack("!II", body[:8]) for kind, body in c.startup("tusk_trust", TEST_DB) if kind == b"K")
    th, ended = _sleep_in_background(c)
    new_log = tmp_path / "new.log"
    new, new_logf = start_new(t, new_log)
    try:
        wait_taken_over(t, new_log)
        assert th.is_alive(), ended
        # The cancel reaches the new process: the listeners are its own now.
        if how == "tls":
            _tls_cancel(t.port, certs.ca, key)
        else:
            with socket.create_connection(("127.0.0.1", t.port), timeout=10 * SLOW) as s:
                s.sendall(struct.pack("!IIII", 16, 80877102, *key))
                assert s.recv(1) == b""  # closed once the old process has decided
        th.join(10 * SLOW)
        assert ended.get("how") == "cancelled", f"pg_sleep(30) {ended.get('how', 'still running')}"
        assert ended["after"] < 15, ended
        # (the log is written by a thread of its own: the line may come just after the cancel)
        wait_until(lambda: "handed to it" in new_log.read_text(errors="replace"), 10 * SLOW,
                   what="the new process's log of the key handed over")
        c.close()
        assert finished(t, 10 * SLOW) == 0
        with psycopg.connect(host="127.0.0.1", port=t.port, user="tusk_trust", dbname=TEST_DB) as d:
            assert d.execute("select 1").fetchone() == (1,)
    finally:
        c.close()
        rc = stop_new(new, new_logf)
    _exited_clean(rc, new_log)


def _old_in_a_transaction(tusk, tmp_path, certs):
    """A tusk with a takeover socket and TLS allowed; a client of it inside a transaction (so
    that the old process still drains after a takeover), its cancel key; the new process."""
    tls = {"tls": "allow", "tls_cert_file": certs.server_crt, "tls_key_file": certs.server_key}
    t = tusk(pools=[rule(mode="transaction")], takeover_socket=str(tmp_path / "takeover.sock"),
             shutdown_timeout="60s", listen_opts=tls)
    c = pgwire.RawClient("127.0.0.1", t.port, timeout=30 * SLOW)
    key = next(struct.unpack("!II", body[:8]) for kind, body in c.startup("tusk_trust", TEST_DB) if kind == b"K")
    for sql in ("begin", "savepoint s"):
        assert c.simple_query(sql)[1] == []
    new_log = tmp_path / "new.log"
    new, new_logf = start_new(t, new_log)
    wait_taken_over(t, new_log)
    return t, c, key, new, new_logf, new_log


@pytest.mark.tusk_only
def test_a_tls_cancel_handed_to_the_draining_process_ends_once_it_has_decided(tusk, tmp_path, certs):
    """A TLS cancel (libpq 17's PQcancelBlocking) that the new process hands to the draining
    one: its TLS session cannot travel, and the new process sent its close_notify at once,
    before the old process had decided. The client then sent its next query, which the old
    process often took for one sent before the cancel, and cancelled (11 to 87 of 150 on the code
    before). The new process now holds the request until the old one answers that it has
    decided: 150 cancels sent while the client runs nothing must cancel nothing."""
    t, c, key, new, new_logf, new_log = _old_in_a_transaction(tusk, tmp_path, certs)
    try:
        hit = []
        for i in range(150):
            _tls_cancel(t.port, certs.ca, key)
            rows, errors = c.simple_query("select pg_sleep(0.002)")
            if errors:
                hit.append(f"round {i}: {errors[0]}")
                assert c.simple_query("rollback to savepoint s")[1] == []
        assert not hit, f"{len(hit)} of 150 queries after a handed-over TLS cancel sent while idle were cancelled: {hit[:3]}"
        assert c.simple_query("commit")[1] == []
        c.close()
        assert finished(t, 10 * SLOW) == 0
    finally:
        c.close()
        rc = stop_new(new, new_logf)
    _exited_clean(rc, new_log)


@pytest.mark.tusk_only
def test_a_cancel_goes_down_a_chain_of_restarts(tusk, tmp_path, certs):
    """Two takeovers in a row while the first process still drains: the third process hands a
    key it never gave out to the second, which does not know it either and hands it on to the
    first, whose client's query is cancelled; the first's answer comes back up the chain, and
    only then does the requester's (TLS) connection end."""
    tls = {"tls": "allow", "tls_cert_file": certs.server_crt, "tls_key_file": certs.server_key}
    t = tusk(pools=[rule(mode="transaction")], takeover_socket=str(tmp_path / "takeover.sock"),
             shutdown_timeout="60s", listen_opts=tls)
    a = pgwire.RawClient("127.0.0.1", t.port, timeout=60 * SLOW)
    key = next(struct.unpack("!II", body[:8]) for kind, body in a.startup("tusk_trust", TEST_DB) if kind == b"K")
    th, ended = _sleep_in_background(a)
    b_log, c_log = tmp_path / "b.log", tmp_path / "c.log"
    b, b_logf = start_new(t, b_log)
    c = c_logf = None
    b_client = None
    try:
        wait_taken_over(t, b_log)
        # a client of the second process, inside a transaction: it drains after the next takeover
        b_client = pgwire.RawClient("127.0.0.1", t.port, timeout=30 * SLOW)
        b_client.startup("tusk_trust", TEST_DB)
        assert b_client.simple_query("begin")[1] == []
        c, c_logf = start_new(t, c_log)
        wait_until(lambda: "this process serves" in c_log.read_text(errors="replace"), 15 * SLOW,
                   what="third process serving")
        wait_until(lambda: "listeners handed over; draining" in b_log.read_text(errors="replace"), 5 * SLOW,
                   what="second draining")
        assert th.is_alive(), ended
        began = time.monotonic()
        _tls_cancel(t.port, certs.ca, key)  # to the third process's listener
        th.join(10 * SLOW)
        assert ended.get("how") == "cancelled", f"pg_sleep(30) {ended.get('how', 'still running')}"
        assert time.monotonic() - began < 10, "the cancel took its time limit, not the chain's answer"
        for log in (c_log, b_log):
            wait_until(lambda: "handed to it" in log.read_text(errors="replace"), 10 * SLOW,
                       what=f"{log.name}: the key handed over")
            text = log.read_text(errors="replace")
            assert "did not answer" not in text, text[-2000:]
        a.close()
        assert finished(t, 10 * SLOW) == 0
        assert b_client.simple_query("commit")[1] == []
        b_client.close()
        assert b.wait(15 * SLOW) == 0  # drained
        assert _serves(t.port)
    finally:
        a.close()
        if b_client:
            b_client.close()
        rc_b = stop_new(b, b_logf)
        rc_c = stop_new(c, c_logf) if c else 0
    _exited_clean(rc_b, b_log)
    _exited_clean(rc_c, c_log)


@pytest.mark.tusk_only
def test_restarts_in_a_row_each_bind_the_takeover_socket(tusk, tmp_path):
    """Five online restarts in a row under a connect loop, each as soon as the last new process
    serves, while the process before it still drains a transaction. Each new process must bind
    takeover_socket: the old one used to close it only as it began to drain, a moment after
    its OK, so that the new one could still find it answering there ('Address already in use;
    the next online restart will not find this process') and the next restart failed."""
    t = tusk(pools=[rule(mode="transaction")], takeover_socket=str(tmp_path / "takeover.sock"),
             shutdown_timeout="30s")
    loop = Loop(t.port)
    loop.start()
    procs, held = [], []
    try:
        for i in range(5):
            c = pgwire.RawClient("127.0.0.1", t.port, timeout=30 * SLOW)
            c.startup("tusk_trust", TEST_DB)
            assert c.simple_query("begin")[1] == []  # its process drains until it commits
            held.append(c)
            log = tmp_path / f"new{i}.log"
            p, logf = start_new(t, log)
            procs.append((p, logf, log))
            wait_until(lambda: "this process serves" in log.read_text(errors="replace") or p.poll() is not None,
                       15 * SLOW, what=f"restart {i + 1} serving")
            text = log.read_text(errors="replace")
            assert "this process serves" in text, text[-2000:]
            assert "will not find this process" not in text, text[-2000:]
        for c in held:
            assert c.simple_query("commit")[1] == []
            c.close()
        assert finished(t, 15 * SLOW) == 0
        for p, logf, log in procs[:-1]:
            assert p.wait(15 * SLOW) == 0, log.read_text(errors="replace")[-2000:]
        time.sleep(0.3)
        loop.stop.set()
        loop.join(10)
        assert loop.failures == [], f"{len(loop.failures)} failed of {loop.ok + len(loop.failures)}: {loop.failures[:3]}"
        assert _serves(t.port)
    finally:
        loop.stop.set()
        for c in held:
            c.close()
        rcs = [stop_new(p, logf) for p, logf, _ in procs]
    for rc, (_, _, log) in zip(rcs, procs):
        _exited_clean(rc, log)


def _cancel_in_background(port, ca, key):
    """A TLS cancel sent from a thread; -> (thread, result: {"after": seconds to its end})."""
    result = {}

    def run():
        began = time.monotonic()
        try:
            _tls_cancel(port, ca, key)
            result["after"] = time.monotonic() - began
        except Exception as e:  # noqa: BLE001 - the test reports it
            result["error"] = repr(e)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th, result


@pytest.mark.tusk_only
def test_a_held_cancel_ends_when_the_draining_process_exits_or_times_out(tusk, tmp_path, certs):
    """The new process holds a handed-over cancel's connection until the old one answers;
    never longer than CANCEL_HANDOVER_WAIT (3 s), and not a moment longer once the old
    process has gone (its end of the takeover connection closes)."""
    t, c, key, new, new_logf, new_log = _old_in_a_transaction(tusk, tmp_path, certs)
    try:
        os.kill(t.proc.pid, signal.SIGSTOP)  # the old process answers nothing now
        try:
            th, res = _cancel_in_background(t.port, certs.ca, key)
            th.join(10 * SLOW)
            assert not th.is_alive() and "after" in res, res
            assert 2.5 < res["after"] < 6, res  # the time limit, not at once
            wait_until(lambda: "did not answer" in new_log.read_text(errors="replace"), 5 * SLOW,
                       what="the time limit logged")
            th, res = _cancel_in_background(t.port, certs.ca, key)
            time.sleep(0.5)
            assert th.is_alive(), res  # held: the old process has not decided
        finally:
            os.kill(t.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        th.join(10 * SLOW)
        assert not th.is_alive() and "after" in res, res
        assert time.monotonic() - killed < 1.5, res  # at once, not at the time limit
        t.proc.wait(10 * SLOW)
        t.logf.close()
        t.proc = None
        wait_until(lambda: "has gone" in new_log.read_text(errors="replace"), 5 * SLOW, what="the end logged")
        assert _serves(t.port)
    finally:
        c.close()
        rc = stop_new(new, new_logf)
    _exited_clean(rc, new_log)


def _devnulls(pid):
    """How many of pid's descriptors are open on /dev/null."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}") == os.devnull
        except OSError:
            pass
    return n


def _fake_successor(sock_path):
    """Take the listeners of the tusk at sock_path as a new process would (TAKEOVER, ...,
    DRAIN, OK); -> the takeover connection, now for cancels; the listeners are closed."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    conn.settimeout(10 * SLOW)
    conn.connect(str(sock_path))
    conn.send(b"TAKEOVER")
    while True:
        msg, fds, _, _ = socket.recv_fds(conn, 512, 4)
        for fd in fds:
            os.close(fd)
        if msg.startswith(b"END "):
            break
        assert msg.startswith(b"L "), msg
    conn.send(b"DRAIN")
    assert conn.recv(64) == b"OK"
    return conn


@pytest.mark.tusk_only
def test_the_draining_process_answers_handed_over_cancels_and_ignores_garbage(tusk, tmp_path):
    """The old process's end of the takeover connection after the hand-over: it serves
    "C <pid> <key> <seq>" as its own cancel and answers "D <seq>" once decided (for a key it
    does not know as well, at once), and logs and ignores what is malformed (a bounded number
    of times), closing any descriptor that comes attached, without stopping reading."""
    sock = tmp_path / "takeover.sock"
    t = tusk(pools=[rule(mode="transaction")], takeover_socket=str(sock), shutdown_timeout="60s")
    c = pgwire.RawClient("127.0.0.1", t.port, timeout=30 * SLOW)
    pid, key = next(struct.unpack("!II", body[:8]) for kind, body in c.startup("tusk_trust", TEST_DB) if kind == b"K")
    assert c.simple_query("begin")[1] == []  # the old process drains, and stays, while it runs
    conn = _fake_successor(sock)
    try:
        wait_until(lambda: "listeners handed over; draining" in t.log_text(), 5 * SLOW, what="old draining")
        fds_before = _devnulls(t.proc.pid)
        garbage = [b"X", b"C", b"C 1", b"C  1 2 3", b"C -1 2 3", b"C 1 2 4294967296", b"C 1 2 3 4",
                   b"C 1 2 3 ", b"C 01x 2 3", b"D 5", b"C 1 2 99999999999", b"C" + b" 1" * 100, b"\0" * 300]
        for g in garbage:
            conn.send(g)
        with open(os.devnull, "rb") as f:
            socket.send_fds(conn, [b"C 1 2"], [f.fileno()])  # well formed, with a descriptor attached
        conn.send(b"C 1 2 9")  # a key the old process does not know either
        assert conn.recv(64) == b"D 9"
        th, ended = _sleep_in_background(c)
        time.sleep(0.3)
        conn.send(f"C {pid} {key} 4294967295".encode())
        assert conn.recv(64) == b"D 4294967295"
        th.join(10 * SLOW)
        assert ended.get("how") == "cancelled", ended
        log = t.log_text()
        assert log.count("malformed cancel request from the process that took over") == 10, log[-3000:]
        assert "no more such messages are logged" in log
        assert _devnulls(t.proc.pid) == fds_before  # the one attached was closed
        assert c.simple_query("rollback")[1] == []
    finally:
        conn.close()
    wait_until(lambda: "that took over from this one has gone" in t.log_text(), 5 * SLOW, what="the end logged")
    c.close()
    assert finished(t, 10 * SLOW) == 0


@pytest.mark.tusk_only
def test_the_new_process_holds_handed_over_cancels_until_answered_within_bounds(tusk, tmp_path, certs):
    """The new process's end of the takeover connection, with the test as the old process:
    a handed-over TLS cancel is held until "D <seq>" comes for it, garbage in between (or an
    answer for no request) is logged and ignored; beyond 256 held at once a request is handed
    over without a seq and ended at once."""
    sock = tmp_path / "takeover.sock"
    tls = {"tls": "allow", "tls_cert_file": certs.server_crt, "tls_key_file": certs.server_key}
    t = tusk(pools=[rule()], takeover_socket=str(sock), listen_opts=tls)
    t.proc.send_signal(signal.SIGTERM)
    assert finished(t, 10 * SLOW) == 0
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    if sock.exists():
        sock.unlink()
    lsock.bind(str(sock))
    lsock.listen(1)
    lsock.settimeout(15 * SLOW)
    new_log = tmp_path / "new.log"
    new, new_logf = start_new(t, new_log)
    conn = None
    try:
        conn, _ = lsock.accept()
        conn.settimeout(10 * SLOW)
        assert conn.recv(64) == b"TAKEOVER"
        conn.send(b"END 1")  # no listeners: the new process opens its own
        assert conn.recv(64) == b"DRAIN"
        conn.send(b"OK")
        wait_until(lambda: "this process serves" in new_log.read_text(errors="replace"), 15 * SLOW,
                   what="new process serving")
        th, res = _cancel_in_background(t.port, certs.ca, (7, 8))
        msg = conn.recv(64).split()
        assert msg[:3] == [b"C", b"7", b"8"] and len(msg) == 4, msg
        for g in [b"D", b"D 0", b"D x", b"D " + msg[3] + b" ", b"D -" + msg[3], b"C 7 8 1", b"D 1" * 100,
                  b"D " + str(int(msg[3]) + 1).encode()]:
            conn.send(g)
        time.sleep(0.5)
        assert th.is_alive(), res  # held: no answer for it yet
        conn.send(b"D " + msg[3])
        th.join(5 * SLOW)
        assert "after" in res and res["after"] < 2.5, res  # the answer ended it, not the time limit
        # 256 held at once: the next ones are ended at once, handed over without a seq.
        held = [_cancel_in_background(t.port, certs.ca, (7, i)) for i in range(256)]
        seqs = []
        while len(seqs) < 256:
            m = conn.recv(64).split()
            assert len(m) == 4, m
            seqs.append(m[3])
        over = [_cancel_in_background(t.port, certs.ca, (9, i)) for i in range(3)]
        for th, res in over:
            th.join(5 * SLOW)
            assert "after" in res and res["after"] < 2.5, res
        for _ in over:
            m = conn.recv(64).split()
            assert m[:2] == [b"C", b"9"] and len(m) == 3, m
        assert all(th.is_alive() for th, _ in held)
        for s in seqs:
            conn.send(b"D " + s)
        for th, res in held:
            th.join(5 * SLOW)
            assert "after" in res, res
        log = new_log.read_text(errors="replace")
        assert "malformed answer from the process this one took over from" in log
        assert "did not answer" not in log
        # the three beyond the bound, within a second: one line, not three (a flood of
        # cancels would otherwise write one each)
        assert log.count("ended at once (256 wait for its answer already") == 1, log[-2000:]
    finally:
        if conn:
            conn.close()
        lsock.close()
        rc = stop_new(new, new_logf)
    assert rc == 0
    log = new_log.read_text(errors="replace")
    assert "the process this one took over from has gone" in log
    assert not SANITIZER_RE.search(log)
