"""tls_handshake_threads (issue 28): client TLS handshakes run on threads of their own, not on
the workers that relay. A worker reads the ClientHello; a full handshake then goes to a thread
and comes back when it is done (a client closed meanwhile, login timeout or shutdown, is freed
only then), a resumption (a session ticket: no signature) stays on the worker."""

import os
import socket
import ssl
import struct
import threading
import time
from pathlib import Path

import psycopg
import pytest
import yaml

from conftest import SLOW, TEST_DB, free_port, wait_until
from test_metrics import scrape, value
from test_tls import _tls_login as ticket_login
from tls_util import Certs

pytestmark = [pytest.mark.tusk_only, pytest.mark.exclusive]  # exclusive: conftest.py

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


def kept(t):
    """Client handshakes the workers kept (their ClientHello offered a ticket): (resumed, full)."""
    s = scrape(t.http)
    return (value(s, "tusk_tls_worker_handshakes_total", session="resumed"),
            value(s, "tusk_tls_worker_handshakes_total", session="full"))


def full_hello():
    """The ClientHello of a full handshake (no session offered), as Python's ssl writes it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    out = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def stalled_handshake(t, hello=None):
    """A client that sends an SSLRequest, gets 'S' and then nothing more than hello: None,
    "partial" (part of a ClientHello: the worker waits for the rest) or "full" (a whole one that
    offers no ticket: the rest of the handshake goes to a thread, which waits for the client's
    Finished)."""
    s = socket.create_connection(("127.0.0.1", t.port), timeout=10 * SLOW)
    s.sendall(SSL_REQUEST)
    assert s.recv(1) == b"S"
    if hello == "partial":
        s.sendall(b"\x16\x03\x01\x02\x00\x01")  # a record header promising 512 bytes, and one
    elif hello == "full":
        s.sendall(full_hello())
    return s


def closed_by_peer(s, timeout):
    """Whether tusk closes s within timeout (what it sent first, its half of a handshake, read
    and dropped)."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            if s.recv(65536) == b"":
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def stop_with_handshakes_in_flight(t, stalled, waiting=()):
    """Every stalled handshake on the handshake thread (and those waiting for their ClientHello on
    the worker), then SIGTERM: a clean exit (0, no sanitizer report: a client or connection left
    unfreed is a leak) in good time, and each stalled socket closed."""
    n = len(stalled)
    wait_until(lambda: offloaded(t)[1] == n, 5 * SLOW, what=f"{n} handshakes on the handshake thread")
    began = time.monotonic()
    assert t.stop() == []
    assert time.monotonic() - began < 10 * SLOW
    for s in [*stalled, *waiting]:
        assert closed_by_peer(s, 5 * SLOW)
        s.close()


def test_handshakes_run_on_the_handshake_threads(tusk, certs):
    t = start(tusk, certs, 2)
    assert thread_names(t.pid).count("tusk-handshake") == 2
    for i in range(30):
        assert tls_login(t, f"select {i}") == i
    done, running = offloaded(t)
    assert done >= 30 and running == 0, (done, running)
    assert kept(t) == (0, 0)  # libpq offers no ticket: every handshake is a full one


def ticket_client(certs, version):
    ctx = ssl.create_default_context(cafile=certs.ca)
    ctx.minimum_version = ctx.maximum_version = (ssl.TLSVersion.TLSv1_3 if version == "1.3"
                                                 else ssl.TLSVersion.TLSv1_2)
    return ctx


@pytest.mark.parametrize("version", ["1.3", "1.2"])
def test_resumed_logins_stay_on_the_worker_and_full_ones_go_to_the_threads(tusk, certs, version):
    """The worker reads each ClientHello: one that offers no ticket (a full handshake) goes on to
    a handshake thread, one that offers a ticket (a TLS 1.3 PSK, a TLS 1.2 session ticket)
    resumes on the worker, login after login (a fresh ticket each time). A ticket that no
    longer opens (another process's keys, after a restart; a forged one alike) makes a full
    handshake, which goes to the thread like any other, and the login succeeds."""
    t = start(tusk, certs, 1)
    ctx = ticket_client(certs, version)
    reused, sess = ticket_login(t, certs, ctx)
    assert not reused and sess.has_ticket
    assert offloaded(t) == (1, 0)
    for i in range(5):
        reused, sess = ticket_login(t, certs, ctx, sess)
        assert reused, i
    assert offloaded(t) == (1, 0)
    assert kept(t) == (5, 0)
    assert tls_login(t) == 1  # libpq: no ticket, to the thread
    assert offloaded(t) == (2, 0)

    assert t.stop() == []
    t.start()  # new ticket keys: the saved ticket does not open
    reused, sess = ticket_login(t, certs, ctx, sess)
    assert not reused and sess.has_ticket
    assert offloaded(t) == (1, 0)
    assert kept(t) == (0, 0)
    reused, sess = ticket_login(t, certs, ctx, sess)
    assert reused
    assert kept(t) == (1, 0)


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
    ctx = ticket_client(certs, "1.3")
    reused, sess = ticket_login(t, certs, ctx)
    reused, sess = ticket_login(t, certs, ctx, sess)
    assert reused
    assert offloaded(t) == (0, 0)
    assert kept(t) == (0, 0)  # counted only when there are threads it could have gone to


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


def test_a_stalled_client_hello_waits_on_the_worker_without_holding_it_up(tusk, certs):
    """Clients that send an SSLRequest and then nothing, or part of a ClientHello, wait on the
    worker (whose loop reads each hello) without a thread: the one worker meanwhile relays a
    logged-in client's queries without delay and logs new clients in, and each stalled one is
    closed at client_login_timeout, not before."""
    t = start(tusk, certs, 1, client_login_timeout="2s", workers=1)
    with psycopg.connect(host="127.0.0.1", port=t.port, user=USER, dbname=TEST_DB, sslmode="require",
                         autocommit=True, connect_timeout=int(10 * SLOW)) as relayed:
        began = time.monotonic()
        stalled = [stalled_handshake(t, hello="partial" if i % 2 else None) for i in range(10)]
        for i in range(200):
            q = time.monotonic()
            assert relayed.execute("select %s::int", (i,)).fetchone()[0] == i
            assert time.monotonic() - q < 0.5 * SLOW
        assert tls_login(t) == 1
        assert offloaded(t) == (2, 0)  # the two full logins; no stalled hello went to the thread
        for s in stalled:
            assert not closed_by_peer(s, max(0.0, 1.5 - (time.monotonic() - began)))
        for s in stalled:
            assert closed_by_peer(s, 10 * SLOW)
            s.close()
        assert time.monotonic() - began < 2 + 3 * SLOW
        assert relayed.execute("select 3").fetchone() == (3,)
    t.wait_log("client did not finish startup within client_login_timeout")
    assert offloaded(t) == (2, 0)


def test_a_stalled_handshake_holds_up_no_one_and_ends_at_the_login_timeout(tusk, certs):
    """Clients that send a whole ClientHello (no ticket) and then stall: their handshakes wait on
    the handshake thread, which serves another login beside them; each ends at
    client_login_timeout."""
    timeout = 2 * SLOW  # the login below must end before the stalled ones do, ASan or not
    t = start(tusk, certs, 1, client_login_timeout=f"{timeout:g}s")
    stalled = [stalled_handshake(t, hello="full") for i in range(10)]
    wait_until(lambda: offloaded(t)[1] == 10, 5 * SLOW, what="10 handshakes on the handshake thread")
    began = time.monotonic()
    assert tls_login(t) == 1  # the one handshake thread serves it beside the ten stalled ones
    took = time.monotonic() - began
    assert took < timeout, f"the login took {took:.2f}s: it waited for the stalled handshakes"
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
    stalled = [stalled_handshake(t, hello="full") for i in range(6)]
    waiting = [stalled_handshake(t, hello="partial" if i % 2 else None) for i in range(4)]  # on the worker
    stop_with_handshakes_in_flight(t, stalled, waiting)


def test_stop_with_redis_handshakes_in_flight_exits_cleanly(tusk, certs):
    """The Redis listener defers its full handshakes to the thread too (kv/resp_front.c): SIGTERM
    while some stall there (and others wait on the worker for the rest of their ClientHello)
    frees each connection once its handshake comes back."""
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
    stalled, waiting = [], []
    for i in range(6):
        s = socket.create_connection(("127.0.0.1", redis_port), timeout=10 * SLOW)
        if i < 4:
            s.sendall(full_hello())  # the thread waits for the client's Finished
            stalled.append(s)
        else:
            s.sendall(b"\x16\x03\x01\x02\x00\x01")  # a ClientHello record's header, and one byte
            waiting.append(s)
    stop_with_handshakes_in_flight(t, stalled, waiting)


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
