"""Just enough of the PostgreSQL v3 wire protocol to send what real drivers never would:
garbage, truncated and oversized packets. Every read has a deadline."""

import socket
import struct
import time

PROTO_V3 = 196608
SSL_REQUEST = 80877103


def startup_packet(params, version=PROTO_V3):
    body = struct.pack("!I", version)
    for k, v in params.items():
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def ssl_request():
    return struct.pack("!II", 8, SSL_REQUEST)


def message(kind, body=b""):
    return kind + struct.pack("!I", len(body) + 4) + body


def query_message(sql):
    return message(b"Q", sql.encode() + b"\0")


def terminate_message():
    return message(b"X")


def bind_message(portal, stmt, values, results=()):
    """Bind of stmt to portal (bytes), the values in text; results: the result format codes
    (none: all text)."""
    body = portal + b"\0" + stmt + b"\0" + struct.pack("!HH", 0, len(values))
    for v in values:
        body += struct.pack("!I", len(v)) + v
    return message(b"B", body + struct.pack(f"!H{len(results)}H", len(results), *results))


def execute_message(portal=b"", max_rows=0):
    return message(b"E", portal + b"\0" + struct.pack("!I", max_rows))


def parse_error_fields(body):
    """ErrorResponse / NoticeResponse body -> {'S': .., 'C': .., 'M': ..}."""
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return fields


class Closed(Exception):
    """The peer closed (or reset) the connection."""


class RawClient:
    def __init__(self, host, port, timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = b""

    @classmethod
    def unix(cls, path, timeout=10.0):
        """A client over the Unix socket at path (DIR/.s.PGSQL.PORT)."""
        c = cls.__new__(cls)
        c.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.sock.settimeout(timeout)
        c.sock.connect(path)
        c.timeout = timeout
        c.buf = b""
        return c

    def send(self, data):
        self.sock.sendall(data)

    def close(self, reset=False):
        if reset:
            # SO_LINGER 0: close() sends RST, the way a crashed client vanishes.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def _fill(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no data within {self.timeout}s (have {len(self.buf)} of {n} bytes)")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError as e:
                raise Closed("reset") from e
            if not chunk:
                raise Closed("eof")
            self.buf += chunk

    def read_byte(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        self._fill(1, deadline)
        b, self.buf = self.buf[:1], self.buf[1:]
        return b

    def read_message(self, timeout=None):
        """-> (type byte, body). Raises Closed on EOF/RST, TimeoutError past the deadline."""
        deadline = time.monotonic() + (timeout or self.timeout)
        self._fill(5, deadline)
        kind = self.buf[:1]
        (length,) = struct.unpack("!I", self.buf[1:5])
        if length < 4 or length > 1 << 30:
            raise ValueError(f"bad length {length} for message {kind!r}")
        self._fill(1 + length, deadline)
        body = self.buf[5 : 1 + length]
        self.buf = self.buf[1 + length :]
        return kind, body

    def read_until_ready(self, timeout=None):
        """Messages up to and including ReadyForQuery ('Z'); stops early at an ErrorResponse
        during startup (the server closes after it)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        out = []
        while True:
            kind, body = self.read_message(max(0.01, deadline - time.monotonic()))
            out.append((kind, body))
            if kind == b"Z":
                return out

    def startup(self, user, database, **extra):
        params = {"user": user, "database": database}
        params.update(extra)
        self.send(startup_packet(params))
        msgs = self.read_until_ready()
        errors = [parse_error_fields(b) for k, b in msgs if k == b"E"]
        if errors:
            raise RuntimeError(f"startup failed: {errors}")
        return msgs

    def simple_query(self, sql):
        """-> (rows as lists of str/None, errors as field dicts)."""
        self.send(query_message(sql))
        rows, errors = [], []
        for kind, body in self.read_until_ready():
            if kind == b"D":
                (n,) = struct.unpack("!H", body[:2])
                off, row = 2, []
                for _ in range(n):
                    (ln,) = struct.unpack("!i", body[off : off + 4])
                    off += 4
                    if ln < 0:
                        row.append(None)
                    else:
                        row.append(body[off : off + ln].decode())
                        off += ln
                rows.append(row)
            elif kind == b"E":
                errors.append(parse_error_fields(body))
        return rows, errors

    def expect_error_or_close(self, timeout=10.0):
        """What a misbehaving client must get: an ErrorResponse or the connection closed.
        Returns ('error', fields) or ('closed', reason). Anything else is a failure."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                kind, body = self.read_message(max(0.01, deadline - time.monotonic()))
                if kind == b"E":
                    return "error", parse_error_fields(body)
                if kind == b"N":  # a notice before the error is allowed
                    continue
                raise AssertionError(f"expected ErrorResponse or close, got message {kind!r} {body[:80]!r}")
        except Closed as e:
            return "closed", str(e)
