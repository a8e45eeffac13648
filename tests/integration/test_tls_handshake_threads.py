"""tls_handshake_threads (issue 28): client TLS handshakes run on threads of their own, not on
the workers that relay. A worker hands the handshake over after its 'S' and gets the client back
when it is done; a client closed meanwhile (login timeout, shutdown) is freed only then."""

import os
import socket
import struct
import threading
import time
from pathlib import Path

import psycopg
import pytest
import yaml

from conftest import SLOW, TEST_DB, free_port, wait_until
from test_metrics import scrape, value
from tls_util import Certs

pytestmark = pytest.mark.tusk_only

USER = "tusk_trust"
SSL_REQUEST = struct.pack("!II", 8, 80877103)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certs(tmp_path_factory.mktemp("certs"))


def start(tusk, certs, threads, **kw):
    http = free_port()
    t = tusk(listen_opts={"tls": "require", "tls_cert_file": certs.server_crt, "tls_key_file": certs.server_key},
             admin={"http": f"127.0.0.1:{http}"}, tls_handshake_threads=threads, **kw)
    t.http = http
    return t


def tls_login(t, sql="select 1"):
    with psycopg.connect(host="127.0.0.1", port=t.port, user=USER, dbname=TEST_DB, sslmode="require",
                         connect_timeout=int(15 * SLOW), autocommit=True) as c:
        assert c.pgconn.ssl_in_use
        return c.execute(sql).fetchone()[0]


def thread_names(pid):
    names = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except FileNotFoundError:
            pass
    return names


def offloaded(t):
    s = scrape(t.http)
    return value(s, "tusk_tls_offloaded_handshakes_total"), value(s, "tusk_tls_offloaded_handshakes_running")


def stalled_handshake(t, partial_hello=False):
    """A client that sends an SSLRequest, gets 'S' and then (part of a ClientHello and) nothing."""
    s = socket.create_connection(("127.0.0.1", t.port), timeout=10 * SLOW)
    s.sendall(SSL_REQUEST)
    assert s.recv(1) == b"S"
    if partial_hello:
        s.sendall(b"\x16\x03\x01\x02\x00\x01")  # a record header promising 512 bytes, and one
    return s


def closed_by_peer(s, timeout):
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def stop_with_handshakes_in_flight(t, stalled):
    """Every stalled handshake on the handshake thread, then SIGTERM: a clean exit (0, no
    sanitizer report: a client or connection left unfreed is a leak) in good time, and each
    stalled socket closed."""
    n = len(stalled)
    wait_until(lambda: offloaded(t)[1] == n, 5 * SLOW, what=f"{n} handshakes on the handshake thread")
    began = time.monotonic()
    assert t.stop() == []
    assert time.monotonic() - began < 10 * SLOW
    for s in stalled:
        assert closed_by_peer(s, 5 * SLOW)
        s.close()


def test_handshakes_run_on_the_handshake_threads(tusk, certs):
    t = start(tusk, certs, 2)
    assert thread_names(t.pid).count("tusk-handshake") == 2
    for i in range(30):
        assert tls_login(t, f"select {i}") == i
    done, running = offloaded(t)
    assert done >= 30 and running == 0, (done, running)


def test_auto_is_half_the_online_cpus_rounded_up(tusk, certs):
    http = free_port()
    t = tusk(listen_opts={"tls": "require", "tls_cert_file": certs.server_crt, "tls_key_file": certs.server_key},
             admin={"http": f"127.0.0.1:{http}"})
    t.http = http
    online = os.sysconf("SC_NPROCESSORS_ONLN")
    assert thread_names(t.pid).count("tusk-handshake") == (online + 1) // 2
    assert tls_login(t) == 1
    assert offloaded(t) == (1, 0)


def test_zero_threads_keeps_handshakes_on_the_workers(tusk, certs):
    t = start(tusk, certs, 0)
    assert "tusk-handshake" not in thread_names(t.pid)
    for i in range(5):
        assert tls_login(t, f"select {i}") == i
    assert offloaded(t) == (0, 0)


def test_many_logins_at_once_beside_relayed_clients(tusk, certs):
    """60 TLS logins from 12 threads at once through one handshake thread, while two clients
    logged in before run queries throughout: every login and every query succeeds."""
    t = start(tusk, certs, 1, pools=[{"database": "*", "user": "*", "service": "main", "mode": "transaction",
                                      "size": 10}])
    errors, stop = [], threading.Event()
    queries = [0]

    def relayed():
        try:
            with psycopg.connect(host="127.0.0.1", port=t.port, user=USER, dbname=TEST_DB, sslmode="require",
                                 autocommit=True) as c:
                while not stop.is_set():
                    assert c.execute("select 7").fetchone() == (7,)
                    queries[0] += 1
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    def logins(k):
        try:
            for i in range(5):
                assert tls_login(t, f"select {k * 10 + i}") == k * 10 + i
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    bg = [threading.Thread(target=relayed) for _ in range(2)]
    for b in bg:
        b.start()
    burst = [threading.Thread(target=logins, args=(k,)) for k in range(12)]
    for b in burst:
        b.start()
    for b in burst:
        b.join(60 * SLOW)
    stop.set()
    for b in bg:
        b.join(30 * SLOW)
    assert not errors, errors
    assert queries[0] > 0
    done, running = offloaded(t)
    assert done >= 62 and running == 0, (done, running)


def test_a_stalled_handshake_holds_up_no_one_and_ends_at_the_login_timeout(tusk, certs):
    t = start(tusk, certs, 1, client_login_timeout="2s")
    stalled = [stalled_handshake(t, partial_hello=i % 2 == 1) for i in range(10)]
    wait_until(lambda: offloaded(t)[1] == 10, 5 * SLOW, what="10 handshakes on the handshake thread")
    began = time.monotonic()
    assert tls_login(t) == 1  # the one handshake thread serves it beside the ten stalled ones
    assert time.monotonic() - began < 2
    for s in stalled:
        assert closed_by_peer(s, 10 * SLOW)
        s.close()
    t.wait_log("TLS handshake not done within client_login_timeout")
    wait_until(lambda: offloaded(t)[1] == 0, 5 * SLOW, what="no handshake left running")


def test_stop_with_handshakes_in_flight_exits_cleanly(tusk, certs):
    """SIGTERM while handshakes wait on the handshake thread (the login timeout far away): the
    pool cancels them, the workers free their clients, and tusk exits 0 at once (under ASan, with
    no leak)."""
    t = start(tusk, certs, 1, client_login_timeout="60s")
    stalled = [stalled_handshake(t, partial_hello=i % 2 == 0) for i in range(6)]
    stop_with_handshakes_in_flight(t, stalled)


def test_stop_with_redis_handshakes_in_flight_exits_cleanly(tusk, certs):
    """The Redis listener hands its handshakes over too (kv/resp_front.c): SIGTERM while some
    stall on the handshake thread frees each connection once its handshake comes back."""
    redis_port = free_port()
    t = start(tusk, certs, 1, client_login_timeout="60s")
    cfg = t.cfg_path.read_text()
    assert t.stop() == []
    doc = yaml.safe_load(cfg)
    doc["listen"].append({"host": "127.0.0.1", "port": redis_port, "protocol": "redis", "tls": "require",
                          "tls_cert_file": certs.server_crt, "tls_key_file": certs.server_key})
    doc["kv"] = {"zone": "z", "service": "main"}  # the listener needs it; no call is made here
    t.cfg_path.write_text(yaml.safe_dump(doc))
    t.start()
    stalled = []
    for _ in range(4):
        s = socket.create_connection(("127.0.0.1", redis_port), timeout=10 * SLOW)
        s.sendall(b"\x16\x03\x01\x02\x00\x01")  # a ClientHello record's header, and one byte
        stalled.append(s)
    stop_with_handshakes_in_flight(t, stalled)


# ---- tusk's own handshakes towards the servers ----

class StallingServer:
    """A "PostgreSQL" that answers an SSLRequest with 'S' and then never says another word:
    tusk's handshake to it (its ClientHello sent) waits for a ServerHello that never comes."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", free_port()))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stopping = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                c.settimeout(10 * SLOW)
                if c.recv(8) == SSL_REQUEST:
                    c.sendall(b"S")
            except OSError:
                pass
            self.conns.append(c)

    def close(self):
        self.stopping = True
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def stalling_server():
    s = StallingServer()
    yield s
    s.close()


def start_with_stalling_service(tusk, pg, stall, **kw):
    """A plaintext listener and one worker (the stalled handshakes and the relayed clients share
    it); pool `stall` on a service whose servers are the stalling one, on TLS; every other
    database on PostgreSQL."""
    http = free_port()
    t = tusk(admin={"http": f"127.0.0.1:{http}"}, tls_handshake_threads=1, workers=1, pools=[
        {"database": "stall", "user": "*", "service": "stall", "server_database": TEST_DB},
        {"database": "*", "user": "*", "service": "main"}],
        services={"main": {"hosts": [f"127.0.0.1:{pg.port}"]},
                  "stall": {"hosts": [f"127.0.0.1:{stall.port}"], "tls": "require"}}, **kw)
    t.http = http
    return t


def stalled_logins(t, n, errors):
    """n clients of pool `stall` (plaintext to tusk) in threads; what each raised goes to errors."""
    def one():
        try:
            psycopg.connect(host="127.0.0.1", port=t.port, user=USER, dbname="stall", sslmode="disable",
                            connect_timeout=int(30 * SLOW)).close()
            errors.append(None)
        except psycopg.Error as e:
            errors.append(str(e))
    threads = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for th in threads:
        th.start()
    return threads


def test_a_stalled_server_handshake_runs_on_the_handshake_thread_and_ends_at_the_connect_timeout(
        tusk, pg, stalling_server):
    """tusk's TLS handshakes to its servers are handed to the handshake threads as the clients'
    are: while three stall there (a server that answered 'S' and went quiet), the one worker
    relays for a client of another pool without delay; at server_connect_timeout each fails, its
    client hears why, and nothing is left running."""
    t = start_with_stalling_service(tusk, pg, stalling_server, server_connect_timeout="3s",
                                    pool_wait_timeout="20s")
    errors = []
    threads = stalled_logins(t, 3, errors)
    wait_until(lambda: offloaded(t)[1] >= 1, 5 * SLOW, what="a server handshake on the handshake thread")
    with psycopg.connect(host="127.0.0.1", port=t.port, user=USER, dbname=TEST_DB, sslmode="disable",
                         autocommit=True, connect_timeout=int(10 * SLOW)) as c:
        for i in range(200):
            began = time.monotonic()
            assert c.execute("select %s::int", (i,)).fetchone()[0] == i
            assert time.monotonic() - began < 1.0 * SLOW
    for th in threads:
        th.join(60 * SLOW)
    assert len(errors) == 3 and None not in errors, errors
    t.wait_log("timed out connecting to the server (server_connect_timeout)")
    wait_until(lambda: offloaded(t)[1] == 0, 5 * SLOW, what="no handshake left running")
    assert offloaded(t)[0] >= 1


def test_stop_with_server_handshakes_in_flight_exits_cleanly(tusk, pg, stalling_server):
    """SIGTERM while tusk's own handshakes stall on the handshake thread (server_connect_timeout
    far away; their clients gave up at pool_wait_timeout, so nothing holds the drain): each
    server, closed by its worker at the stop, is freed when its handshake comes back cancelled,
    and tusk exits 0 at once (under ASan, with no leak)."""
    t = start_with_stalling_service(tusk, pg, stalling_server, server_connect_timeout="60s",
                                    pool_wait_timeout="1s")
    errors = []
    threads = stalled_logins(t, 2, errors)
    wait_until(lambda: offloaded(t)[1] >= 2, 5 * SLOW, what="two server handshakes on the handshake thread")
    for th in threads:
        th.join(30 * SLOW)
    assert len(errors) == 2 and None not in errors, errors
    assert offloaded(t)[1] >= 2  # still stalled there
    began = time.monotonic()
    assert t.stop() == []
    assert time.monotonic() - began < 10 * SLOW
