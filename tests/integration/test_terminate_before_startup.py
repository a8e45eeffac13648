"""A Terminate where the startup packet belongs (issue 27, item 5): what node-postgres writes for
`client.connect(); client.end()` before the connection is even up. PostgreSQL (and PgBouncer)
close without a word; a FATAL ErrorResponse crashed node-postgres's end()."""

import socket
import struct

import pytest

import pgwire
from conftest import SLOW, TEST_DB


def everything_until_close(port, data):
    s = socket.create_connection(("127.0.0.1", port), timeout=5 * SLOW)
    try:
        s.sendall(data)
        got = b""
        while True:
            chunk = s.recv(65536)  # a timeout here (connection left open) fails the test
            if not chunk:
                return got
            got += chunk
    finally:
        s.close()


@pytest.mark.parametrize("target", ["direct", "tusk"])
@pytest.mark.parametrize("what", ["alone", "before_startup", "split"])
def test_terminate_before_startup_closes_silently(tusk, pg, target, what):
    port = pg.port if target == "direct" else tusk().port
    startup = pgwire.startup_packet({"user": "tusk_trust", "database": TEST_DB})
    if what == "split":
        # the Terminate in two pieces: tusk must wait for the rest before judging
        s = socket.create_connection(("127.0.0.1", port), timeout=5 * SLOW)
        try:
            s.sendall(b"X\0")
            s.settimeout(0.3)
            with pytest.raises(socket.timeout):
                s.recv(1)
            s.settimeout(5 * SLOW)
            s.sendall(b"\0\0\x04" + startup)
            assert s.recv(65536) == b""
        finally:
            s.close()
        return
    data = pgwire.terminate_message() + (startup if what == "before_startup" else b"")
    assert everything_until_close(port, data) == b""


def test_startup_after_ssl_refusal_still_gets_an_answer(tusk):
    """The check looks only for a Terminate: a real startup packet after an SSLRequest is
    served as before."""
    t = tusk()
    s = socket.create_connection(("127.0.0.1", t.port), timeout=5 * SLOW)
    try:
        s.sendall(pgwire.ssl_request())
        assert s.recv(1) == b"N"
        s.sendall(pgwire.startup_packet({"user": "tusk_trust", "database": TEST_DB}))
        kind = s.recv(1)
        assert kind == b"R", kind
    finally:
        s.close()
