"""A small authoritative DNS server for the resolver tests (dnspython), on a free loopback port,
UDP and TCP. A test mutates it as a Python object: set A/AAAA/SRV records with their TTLs,
make it go silent (drop every query) or answer SERVFAIL, count the queries it saw.

Answers follow what a real authoritative server does, because c-ares reads them that way: a name
it knows with no record of the asked type is NOERROR with no answer (NODATA), an unknown name is
NXDOMAIN, and a UDP answer larger than the client's limit is sent truncated (TC) so that the
client retries over TCP (how 1,000 SRV records get through)."""

import socket
import struct
import threading

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class DnsServer:
    """mode: "ok" (answer), "silent" (read queries, never answer), "servfail"."""

    def __init__(self, host="127.0.0.1"):
        self.host = host
        self.mode = "ok"
        self.queries = 0
        self.tcp_queries = 0
        self._lock = threading.Lock()
        self._records = {}  # (name, rdtype) -> (ttl, [rdata text])
        self._names = set()
        self._stop = False
        self.udp, self.tcp = self._bind_pair(host)
        self.port = self.udp.getsockname()[1]
        self.tcp.listen(64)
        self.udp.settimeout(0.2)
        self.tcp.settimeout(0.2)
        self._threads = [threading.Thread(target=self._serve_udp, daemon=True),
                         threading.Thread(target=self._serve_tcp, daemon=True)]
        for t in self._threads:
            t.start()

    @staticmethod
    def _bind_pair(host):
        """A UDP and a TCP socket on the same free port: the kernel picks the UDP one, and
        another process may hold that number in TCP, so try a few."""
        for _ in range(50):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((host, 0))
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((host, udp.getsockname()[1]))
                return udp, tcp
            except OSError:
                udp.close()
                tcp.close()
        raise OSError("no port free in both UDP and TCP")

    @property
    def nameserver(self):
        return f"{self.host}:{self.port}"

    # ---- records -------------------------------------------------------------------------

    @staticmethod
    def _key(name):
        return dns.name.from_text(name).to_text().lower()

    def _set(self, name, rdtype, ttl, rdatas):
        k = self._key(name)
        with self._lock:
            if rdatas:
                self._records[(k, rdtype)] = (ttl, list(rdatas))
            else:
                self._records.pop((k, rdtype), None)
            self._names = {n for (n, _t) in self._records}

    def set_a(self, name, addrs, ttl=60):
        self._set(name, dns.rdatatype.A, ttl, addrs)

    def set_aaaa(self, name, addrs, ttl=60):
        self._set(name, dns.rdatatype.AAAA, ttl, addrs)

    def set_srv(self, name, records, ttl=60):
        """records: [(priority, weight, port, target), ...]"""
        self._set(name, dns.rdatatype.SRV, ttl,
                  [f"{p} {w} {port} {dns.name.from_text(t).to_text()}" for (p, w, port, t) in records])

    def remove(self, name):
        k = self._key(name)
        with self._lock:
            self._records = {key: v for key, v in self._records.items() if key[0] != k}
            self._names = {n for (n, _t) in self._records}

    def reset(self):
        with self._lock:
            self._records = {}
            self._names = set()
            self.mode = "ok"
            self.queries = 0
            self.tcp_queries = 0

    # ---- serving -------------------------------------------------------------------------

    def _answer(self, wire):
        """The reply's bytes, or None to stay silent."""
        try:
            q = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        with self._lock:
            self.queries += 1
            mode = self.mode
        if mode == "silent" or not q.question:
            return None
        r = dns.message.make_response(q)
        r.flags |= dns.flags.AA
        if mode == "servfail":
            r.set_rcode(dns.rcode.SERVFAIL)
            return r
        qq = q.question[0]
        k = qq.name.to_text().lower()
        with self._lock:
            found = self._records.get((k, qq.rdtype))
            known = k in self._names
        if found:
            ttl, rdatas = found
            r.answer.append(dns.rrset.from_text_list(qq.name, ttl, dns.rdataclass.IN, qq.rdtype, rdatas))
        elif not known:
            r.set_rcode(dns.rcode.NXDOMAIN)
        return r

    def _serve_udp(self):
        while not self._stop:
            try:
                wire, peer = self.udp.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            r = self._answer(wire)
            if r is None:
                continue
            limit = max(512, r.payload if r.edns >= 0 else 512)
            try:
                out = r.to_wire(max_size=limit)
            except dns.exception.TooBig:
                r.answer = []
                r.flags |= dns.flags.TC
                out = r.to_wire()
            try:
                self.udp.sendto(out, peer)
            except OSError:
                pass

    def _serve_tcp(self):
        while not self._stop:
            try:
                conn, _ = self.tcp.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve_tcp_conn, args=(conn,), daemon=True).start()

    def _serve_tcp_conn(self, conn):
        conn.settimeout(5)
        try:
            while not self._stop:
                head = self._recv_exact(conn, 2)
                if not head:
                    return
                wire = self._recv_exact(conn, struct.unpack("!H", head)[0])
                if wire is None:
                    return
                with self._lock:
                    self.tcp_queries += 1
                r = self._answer(wire)
                if r is None:
                    continue
                out = r.to_wire(max_size=65535)
                conn.sendall(struct.pack("!H", len(out)) + out)
        except (OSError, dns.exception.DNSException):
            pass
        finally:
            conn.close()

    @staticmethod
    def _recv_exact(conn, n):
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def close(self):
        self._stop = True
        for s in (self.udp, self.tcp):
            try:
                s.close()
            except OSError:
                pass
        for t in self._threads:
            t.join(timeout=2)


class ResolveProbe:
    """tests/tools/resolve_probe on one service of a config: src/resolve/ alone. Reads its JSON
    lines on a thread; updates() and state() give what it printed."""

    def __init__(self, binary, config_path, service, log_path):
        import json
        import subprocess

        self._json = json
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen([str(binary), str(config_path), service], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1)
        self._cond = threading.Condition()
        self._updates = []
        self._states = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            ev = self._json.loads(line)
            with self._cond:
                (self._updates if ev["event"] == "update" else self._states).append(ev)
                self._cond.notify_all()

    def _send(self, cmd):
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()

    def refresh(self):
        self._send("refresh")

    def updates(self):
        with self._cond:
            return list(self._updates)

    def wait_update(self, count, timeout):
        """The count-th update (1-based), waiting for it up to timeout seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._updates) >= count, timeout):
                raise TimeoutError(f"update {count} not seen in {timeout}s; got {self._updates}")
            return self._updates[count - 1]

    def state(self, timeout=5):
        with self._cond:
            n = len(self._states)
            self._send("state")
            if not self._cond.wait_for(lambda: len(self._states) > n, timeout):
                raise TimeoutError("no state line")
            return self._states[n]

    def close(self):
        try:
            self._send("quit")
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        return self.proc.returncode
