"""Helpers for the client-authentication tests (test_client_auth.py): secrets in PgBouncer
userlist format (plaintext, md5, SCRAM verifiers), pg_hba files, psql with a password, and a raw
client that logs in with cleartext, md5 or SCRAM-SHA-256 and reports exactly what happened."""

import base64
import hashlib
import hmac
import os
import re
import socket
import struct
import subprocess
import threading
import time

import yaml

from conftest import PG_BIN, SLOW, TEST_DB, TUSK_ERROR_RE, free_port, port_open, to_yaml, wait_until
import pgwire

# Authentication request codes (the int32 after 'R').
AUTH_OK, AUTH_CLEARTEXT, AUTH_MD5, AUTH_SASL, AUTH_SASL_CONTINUE, AUTH_SASL_FINAL = 0, 3, 5, 10, 11, 12


def md5_secret(user, password):
    """What PostgreSQL stores for an md5 password: md5 + hex(md5(password || user))."""
    return "md5" + hashlib.md5((password + user).encode()).hexdigest()


def _scram_keys(password, salt, iterations):
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return client_key, hashlib.sha256(client_key).digest(), server_key


def scram_verifier(password, salt=None, iterations=4096):
    """SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>, as PostgreSQL writes it (no SASLprep:
    the test passwords are ASCII)."""
    salt = salt if salt is not None else os.urandom(16)
    _, stored, server = _scram_keys(password, salt, iterations)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored)}:{b64(server)}"


def write_auth_file(path, entries):
    """entries: {user: secret} -> PgBouncer userlist.txt lines '"user" "secret"'."""
    lines = ['; tusk test auth_file']
    for user, secret in entries.items():
        lines.append(f'"{user}" "{secret}"')
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def write_hba(path, lines):
    path.write_text("# tusk test hba_file\n" + "\n".join(lines) + "\n")
    return str(path)


def psql(port, user, password=None, dbname=TEST_DB, host="127.0.0.1", sql="select current_user",
         timeout=30):
    """psql -X -At -w with PGPASSWORD; -> CompletedProcess (returncode, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    if password is not None:
        env["PGPASSWORD"] = password
    env["PGCONNECT_TIMEOUT"] = str(int(15 * SLOW))
    cmd = [str(PG_BIN / "psql"), "-X", "-At", "-w", "-h", str(host), "-p", str(port), "-U", user,
           "-d", dbname, "-c", sql]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout * SLOW, env=env)


def normalized_error(message, user):
    """A login error's text with tusk's connection id and the user name blanked out, so a wrong
    password and an unknown user can be compared."""
    return TUSK_ERROR_RE.sub("tusk <id>", message).replace(user, "<user>")


class LoginResult:
    def __init__(self):
        self.outcome = None        # 'ok' | 'error' | 'closed'
        self.requests = []         # authentication request codes seen, in order
        self.error = {}            # ErrorResponse fields when outcome == 'error'
        self.closed_reason = None
        self.server_signature_ok = None  # SCRAM: the server's final signature verified
        self.iterations = None  # SCRAM: the iteration count the server asked for

    @property
    def sqlstate(self):
        return self.error.get("C")

    @property
    def message(self):
        return self.error.get("M", "")

    def __repr__(self):
        return (f"LoginResult({self.outcome}, requests={self.requests}, error={self.error}, "
                f"closed={self.closed_reason})")


def _sasl_initial(mechanism, data):
    return pgwire.message(b"p", mechanism.encode() + b"\0" + struct.pack("!i", len(data)) + data)


def raw_login(port, user, password, dbname=TEST_DB, timeout=10.0, client=None, keep_open=False):
    """Logs in over a raw socket answering cleartext, md5 or SCRAM-SHA-256 requests with
    `password` (None: answer nothing, just report the request). Returns a LoginResult; with
    keep_open=True also the RawClient (caller closes it)."""
    c = client or pgwire.RawClient("127.0.0.1", port, timeout=timeout * SLOW)
    res = LoginResult()
    try:
        c.send(pgwire.startup_packet({"user": user, "database": dbname}))
        scram = None
        while True:
            kind, body = c.read_message()
            if kind == b"E":
                res.outcome, res.error = "error", pgwire.parse_error_fields(body)
                break
            if kind == b"Z":
                res.outcome = "ok"
                break
            if kind != b"R":
                continue  # ParameterStatus, BackendKeyData, NoticeResponse
            (code,) = struct.unpack("!I", body[:4])
            res.requests.append(code)
            if code == AUTH_OK:
                continue
            if password is None:
                res.outcome = "asked"
                break
            if code == AUTH_CLEARTEXT:
                c.send(pgwire.message(b"p", password.encode() + b"\0"))
            elif code == AUTH_MD5:
                inner = hashlib.md5((password + user).encode()).hexdigest().encode()
                c.send(pgwire.message(b"p", b"md5" + hashlib.md5(inner + body[4:8]).hexdigest().encode()
                                      + b"\0"))
            elif code == AUTH_SASL:
                mechs = [m.decode() for m in body[4:].split(b"\0") if m]
                assert "SCRAM-SHA-256" in mechs, mechs
                nonce = base64.b64encode(os.urandom(18)).decode()
                first_bare = f"n=,r={nonce}"
                scram = {"nonce": nonce, "first_bare": first_bare}
                c.send(_sasl_initial("SCRAM-SHA-256", ("n,," + first_bare).encode()))
            elif code == AUTH_SASL_CONTINUE:
                server_first = body[4:].decode()
                attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
                assert attrs["r"].startswith(scram["nonce"]), server_first
                res.iterations = int(attrs["i"])
                client_key, stored, server_key = _scram_keys(password, base64.b64decode(attrs["s"]),
                                                             int(attrs["i"]))
                final_wo_proof = "c=biws,r=" + attrs["r"]
                auth_msg = f"{scram['first_bare']},{server_first},{final_wo_proof}".encode()
                sig = hmac.new(stored, auth_msg, hashlib.sha256).digest()
                proof = bytes(a ^ b for a, b in zip(client_key, sig))
                scram["server_sig"] = hmac.new(server_key, auth_msg, hashlib.sha256).digest()
                c.send(pgwire.message(b"p", (final_wo_proof + ",p=" + base64.b64encode(proof).decode())
                                      .encode()))
            elif code == AUTH_SASL_FINAL:
                attrs = dict(kv.split("=", 1) for kv in body[4:].decode().split(","))
                res.server_signature_ok = base64.b64decode(attrs.get("v", "")) == scram["server_sig"]
            else:
                raise AssertionError(f"unexpected authentication request {code}")
    except pgwire.Closed as e:
        res.outcome, res.closed_reason = "closed", str(e)
    finally:
        if not keep_open:
            c.close()
    return (res, c) if keep_open else res


def fail_cleartext_fast(port, user, password, dbname=TEST_DB, timeout=10.0):
    """One failed cleartext login with as little Python as possible: -> SQLSTATE of the error."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW) as s:
        s.sendall(pgwire.startup_packet({"user": user, "database": dbname}))
        buf = b""
        sent = False
        while True:
            chunk = s.recv(8192)
            if not chunk:
                return None
            buf += chunk
            while len(buf) >= 5:
                (ln,) = struct.unpack("!I", buf[1:5])
                if len(buf) < 1 + ln:
                    break
                kind, body, buf = buf[:1], buf[5:1 + ln], buf[1 + ln:]
                if kind == b"R" and not sent:
                    s.sendall(pgwire.message(b"p", password.encode() + b"\0"))
                    sent = True
                elif kind == b"E":
                    return pgwire.parse_error_fields(body).get("C")
                elif kind == b"Z":
                    return "ok"


def wait_closed(sock, timeout):
    """Reads (and discards) until EOF/RST; -> seconds it took, or None if still open at timeout."""
    start = time.monotonic()
    deadline = start + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return time.monotonic() - start
        except socket.timeout:
            return None
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - start
    return None


def login_error_re(user):
    return re.compile(r"^tusk c[0-9a-f]{8}: password authentication failed for user \"?"
                      + re.escape(user) + r"\"?$")


def logins_beside(t, slow_login, n=4, bound=1.5):
    """Runs slow_login() in n threads (logins whose check is slow: an LDAP server that never
    answers, a PAM module that sleeps) and, meanwhile, five times a trust login that runs a query
    and an md5 login (user pw_md5, password md5-secret), each pair within bound seconds (times
    SLOW): the slow checks must not hold the worker. Returns [(result, seconds)] per thread."""
    results = [None] * n

    def run(i):
        start = time.monotonic()
        results[i] = (slow_login(), time.monotonic() - start)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    time.sleep(0.3)
    for _ in range(5):
        start = time.monotonic()
        with t.connect(user="tusk_trust") as c:
            assert c.execute("select 1").fetchone() == (1,)
        r = raw_login(t.port, "pw_md5", "md5-secret")
        assert r.outcome == "ok", r
        assert time.monotonic() - start < bound * SLOW
    for th in threads:
        th.join(timeout=20 * SLOW)
    return results


def with_redis_listener(t):
    """t (a started tusk) started again with a kv section (a zone over its service main: AUTH
    needs no catalog) and a listener of the Redis protocol; -> that listener's port."""
    problems = t.stop()
    assert problems == [], problems
    cfg = yaml.safe_load(t.cfg_path.read_text())
    port = free_port()
    cfg["kv"] = {"zone": "z1", "service": "main"}
    cfg["listen"].append({"host": "127.0.0.1", "port": port, "protocol": "redis"})
    t.cfg_path.write_text(to_yaml(cfg) + "\n")
    t.start()
    wait_until(lambda: port_open(port), 10 * SLOW, what="the redis listener")
    return port

