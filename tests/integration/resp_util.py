"""Raw RESP (the Redis protocol) for the tests of tusk's Redis listener: a command's bytes, and
replies read as they come."""

import socket

from conftest import SLOW


def redis_cmd(*args):
    """One command: an array of bulk strings."""
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def recv_until(s, n_lines, timeout=20):
    """What socket s sends until n_lines CRLF-ended lines came (or it closes)."""
    buf = b""
    s.settimeout(timeout * SLOW)
    while buf.count(b"\r\n") < n_lines:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def resp_exchange(port, payload, n_lines, timeout=20):
    """payload (commands' bytes) sent in one write on a new connection; what came back until
    n_lines lines."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW) as s:
        s.sendall(payload)
        return recv_until(s, n_lines, timeout)
