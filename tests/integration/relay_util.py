"""A TCP relay for tests: a port of its own in front of a server, to give that server another
address (test_kv_routing), to slow one direction down (test_cache_l2) or to hold a request back
(test_split)."""

import socket
import threading
import time

# The head of a CancelRequest: length 16, code 80877102 (the key data after it differs per backend).
CANCEL_REQUEST = b"\x00\x00\x00\x10\x04\xd2\x16\x2e"


class Relay:
    """Relays every connection to 127.0.0.1:target_port. `delay` seconds (0 by default, settable
    at any time) are waited before each piece going towards the target is passed on.
    `hold` (None by default, settable at any time): a piece going towards the target that contains
    these bytes is never passed on, and nothing after it on that connection; `held` is set then.
    `slow` (None by default, settable at any time): (bytes, seconds): a piece going towards the
    target that contains these bytes waits that long first (that connection's pieces only).
    `sent`: (time.monotonic(), bytes) of every piece passed on towards the target; the time is
    taken before the piece is handed on (what the target does in answer, and what that causes,
    is later: after it, the thread may not run again before the answer's consequences came back
    through the relay).
    upstream_ports: the local ports of its connections to the target (what PostgreSQL's
    pg_stat_activity shows as client_port). close() stops listening and drops every connection."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.delay = 0.0
        self.hold, self.held = None, threading.Event()
        self.slow = None
        self.sent = []
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.lock = threading.Lock()
        self.socks, self.upstream_ports = [], set()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                down, _ = self.lsock.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                up.settimeout(None)
            except OSError:
                down.close()
                continue
            with self.lock:
                self.socks += [down, up]
                self.upstream_ports.add(up.getsockname()[1])
            threading.Thread(target=self._pump, args=(down, up, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, down, False), daemon=True).start()

    def _pump(self, src, dst, towards_target):
        holding = False
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if towards_target and self.delay:
                    time.sleep(self.delay)
                slow = self.slow
                if towards_target and slow and slow[0] in data:
                    time.sleep(slow[1])
                if towards_target and (holding or self.hold and self.hold in data):
                    holding = True
                    self.held.set()
                    continue  # kept back; read on, so that the sender never blocks
                at = time.monotonic()
                dst.sendall(data)
                if towards_target:
                    with self.lock:
                        self.sent.append((at, data))
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)  # wakes accept()
        except OSError:
            pass
        self.lsock.close()
        with self.lock:
            for s in self.socks:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
