#!/usr/bin/env python3
"""bench/tls_resume.py HOST PORT USER DB SECONDS [--resume]: PostgreSQL logins over TLS, one
after the other for SECONDS: SSLRequest, handshake, startup, ReadyForQuery, Terminate, close.
With --resume each login offers the session (ticket) the previous one got, as a client library
that keeps sessions would (libpq does not: pgbench -C always does a full handshake).
Prints "logins/s resumed_fraction logins". Trust (or no) authentication only."""
import socket
import ssl
import struct
import sys
import time


def startup(user, db):
    body = struct.pack("!I", 196608)
    for k, v in (("user", user), ("database", db)):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def until_ready(s):
    buf = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("closed before ReadyForQuery")
        buf += chunk
        while len(buf) >= 5:
            n = 1 + struct.unpack("!I", buf[1:5])[0]
            if len(buf) < n:
                break
            kind, buf = buf[:1], buf[n:]
            if kind == b"E":
                raise RuntimeError("login failed")
            if kind == b"Z":
                return


def main():
    host, port, user, db, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
    resume = "--resume" in sys.argv[6:]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    sess = None
    n = reused = 0
    msg = startup(user, db)
    end = time.monotonic() + seconds
    t0 = time.monotonic()
    while time.monotonic() < end:
        with socket.create_connection((host, port)) as raw:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw.sendall(struct.pack("!II", 8, 80877103))
            if raw.recv(1) != b"S":
                raise RuntimeError("TLS refused")
            with ctx.wrap_socket(raw, server_hostname=host, session=sess if resume else None) as s:
                s.sendall(msg)
                until_ready(s)
                reused += s.session_reused
                if resume:
                    sess = s.session
                s.sendall(b"X\0\0\0\4")
        n += 1
    print(f"{n / (time.monotonic() - t0):.1f} {reused / max(n, 1):.2f} {n}")


if __name__ == "__main__":
    main()
