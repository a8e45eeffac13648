"""Misbehaving clients get an ErrorResponse or a closed socket, never a stuck or crashed tusk,
and well-behaved clients running at the same time see no error."""

import contextlib
import socket
import struct
import threading
import time

import pytest

from conftest import DIRECT, SLOW, TEST_DB, connect
import pgwire

SOLO_POOL = {"database": "*", "user": "tusk_solo", "service": "main", "mode": "session", "size": 1}
ANY_POOL = {"database": "*", "user": "*", "service": "main", "mode": "session", "size": 20}


@contextlib.contextmanager
def background_clients(port, n=6):
    """n psycopg clients querying in a loop; yields the list their errors go to."""
    stop = threading.Event()
    errors, counts = [], [0] * n

    def loop(i):
        try:
            with connect(port) as c:
                while not stop.is_set():
                    v = c.execute("select %s::int + 1", (i,)).fetchone()[0]
                    assert v == i + 1
                    counts[i] += 1
        except Exception as e:  # noqa: BLE001
            errors.append(f"client {i}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(n)]
    for th in threads:
        th.start()
    deadline = time.monotonic() + 30 * SLOW
    while not all(counts) and not errors and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield errors
    finally:
        stop.set()
        for th in threads:
            th.join(30 * SLOW)
        assert not any(th.is_alive() for th in threads), "background clients hung"
        assert errors == [], errors
        assert all(counts), f"some background clients ran no query: {counts}"


def raw(port):
    return pgwire.RawClient("127.0.0.1", port, timeout=10 * SLOW)


def expect_error_or_close(c):
    outcome, detail = c.expect_error_or_close(timeout=10 * SLOW)
    assert outcome in ("error", "closed"), detail
    return outcome, detail


GARBAGE = [
    pytest.param(b"GET / HTTP/1.1\r\nHost: tusk\r\n\r\n", id="http"),
    pytest.param(bytes(range(256)) * 4, id="bytes"),
    pytest.param(b"\x00\x00\x00\x08\x12\x34\x56\x78", id="unknown-protocol-version"),
    pytest.param(b"\x00\x00\x00\x03\x00\x03\x00\x00", id="length-below-minimum"),
    pytest.param(struct.pack("!I", 0x7FFFFFF0) + struct.pack("!I", pgwire.PROTO_V3), id="oversized-startup-length"),
    pytest.param(struct.pack("!I", 1 << 20) + struct.pack("!I", pgwire.PROTO_V3) + b"user\0" + b"u" * 60000,
                 id="startup-1mb-length"),
    pytest.param(pgwire.startup_packet({"database": TEST_DB}), id="startup-without-user"),
    pytest.param(struct.pack("!I", 20) + struct.pack("!I", pgwire.PROTO_V3) + b"user\0tusk_tr", id="startup-unterminated"),
]


@pytest.mark.parametrize("payload", GARBAGE)
def test_garbage_gets_error_or_close(tusk, payload):
    t = tusk()
    with background_clients(t.port):
        c = raw(t.port)
        try:
            try:
                c.send(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed on us mid-send: that is a close
            outcome, detail = expect_error_or_close(c)
            if outcome == "error" and not DIRECT:
                assert "M" in detail and detail["M"].startswith("tusk "), detail
        finally:
            c.close()
        # and tusk still serves
        with t.connect() as conn:
            assert conn.execute("select 1").fetchone() == (1,)


def test_truncated_startup_then_close(tusk):
    t = tusk()
    with background_clients(t.port):
        for reset in (False, True):
            for _ in range(20):
                c = raw(t.port)
                full = pgwire.startup_packet({"user": "tusk_trust", "database": TEST_DB})
                c.send(full[: len(full) // 2])
                c.close(reset=reset)
        with t.connect() as conn:
            assert conn.execute("select 1").fetchone() == (1,)


@pytest.mark.tusk_only
def test_silent_client_is_dropped_after_client_login_timeout(tusk):
    t = tusk(client_login_timeout="1s")
    c = raw(t.port)
    try:
        start = time.monotonic()
        c.send(b"\x00\x00")  # half a length word, then nothing
        outcome, _ = expect_error_or_close(c)
        took = time.monotonic() - start
        assert 0.8 <= took <= 5 * SLOW, f"dropped after {took:.2f}s, client_login_timeout is 1s"
    finally:
        c.close()


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_client_vanishing_mid_message_does_not_poison_the_server(tusk, reset):
    """Half a Query goes to the server, then the client is gone. The server connection can't be
    reset (it waits for the rest of the message): tusk must not give it to the next client."""
    t = tusk(pools=[SOLO_POOL, ANY_POOL])
    with background_clients(t.port):
        for i in range(3):
            c = raw(t.port)
            c.startup("tusk_solo", TEST_DB)
            rows, errors = c.simple_query("select 'warm'")
            assert rows == [["warm"]] and not errors
            sql = b"select 'never finished', pg_sleep(0)" + b" " * 2000 + b"\0"
            msg = b"Q" + struct.pack("!I", 4 + len(sql)) + sql
            c.send(msg[: 1 + 4 + 100])
            time.sleep(0.1)
            c.close(reset=reset)
            # the only server of the size-1 pool must come back usable, or be replaced
            with connect(t.port, user="tusk_solo", connect_timeout=int(20 * SLOW)) as conn:
                assert conn.execute("select %s::int", (i,)).fetchone() == (i,)


def test_client_vanishing_during_a_long_query(tusk):
    t = tusk(pools=[SOLO_POOL, ANY_POOL])
    with background_clients(t.port):
        c = raw(t.port)
        c.startup("tusk_solo", TEST_DB)
        c.send(pgwire.query_message("select pg_sleep(1)"))
        time.sleep(0.1)
        c.close(reset=True)
        with connect(t.port, user="tusk_solo", connect_timeout=int(20 * SLOW)) as conn:
            assert conn.execute("select 'after'").fetchone() == ("after",)


def test_many_connections_closed_right_after_connect(tusk):
    t = tusk()
    with background_clients(t.port):
        for i in range(200):
            s = socket.create_connection(("127.0.0.1", t.port), timeout=5)
            if i % 2:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        with t.connect() as conn:
            assert conn.execute("select 1").fetchone() == (1,)


def test_unknown_message_after_startup_is_answered(tusk):
    """Session mode relays it; PostgreSQL answers with a protocol error and closes."""
    t = tusk()
    c = raw(t.port)
    try:
        c.startup("tusk_trust", TEST_DB)
        c.send(pgwire.message(b"?", b"junk"))
        expect_error_or_close(c)
    finally:
        c.close()
    with t.connect() as conn:
        assert conn.execute("select 1").fetchone() == (1,)
