"""Helpers for the transaction-pooling tests (test_transaction.py, test_txn_*.py): pool rules,
watching PostgreSQL's backends while a test runs, pgbench, a psql that can be killed mid
transaction, and a raw extended-protocol client for what drivers never let you spell out."""

import os
import re
import select
import signal
import socket
import struct
import subprocess
import threading
import time
import traceback

from conftest import BENCH_DB, PG_BIN, SLOW, TEST_DB
import pgwire


def txn_pool(size, mode="transaction", user="*", database="*", **extra):
    """One pool rule; extra keys (min_size, ...) go into the rule."""
    rule = {"database": database, "user": user, "service": "main", "mode": mode, "size": size}
    rule.update(extra)
    return rule


def backend_pid(conn):
    return conn.execute("select pg_backend_pid()", prepare=False).fetchone()[0]


def count_backends(pg, user="tusk_trust", dbname=TEST_DB):
    return pg.execute(
        "select count(*) from pg_stat_activity where backend_type = 'client backend' "
        "and usename = %s and datname = %s", (user, dbname))[0][0]


def backend_pids(pg, user="tusk_trust", dbname=TEST_DB):
    rows = pg.execute(
        "select pid from pg_stat_activity where backend_type = 'client backend' "
        "and usename = %s and datname = %s", (user, dbname))
    return {r[0] for r in rows}


def wait_no_backends(pg, user="tusk_trust", dbname=TEST_DB, timeout=10):
    """Server connections of an earlier tusk (stopped at its test's teardown) may still be
    closing; a test that counts backends starts from none."""
    deadline = time.monotonic() + timeout * SLOW
    while count_backends(pg, user, dbname) and time.monotonic() < deadline:
        time.sleep(0.05)
    n = count_backends(pg, user, dbname)
    assert n == 0, f"{n} backends of {user}/{dbname} left over from an earlier test"


class PeakWatcher:
    """Samples pg_stat_activity every `interval` seconds on its own direct connection and keeps
    the largest number of backends seen for (user, dbname). Use as a context manager."""

    def __init__(self, pg, user="tusk_trust", dbname=TEST_DB, interval=0.01):
        self.pg, self.user, self.dbname, self.interval = pg, user, dbname, interval
        self.peak = 0
        self.samples = 0
        self.error = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            with self.pg.admin(self.dbname) as c:
                while not self._stop.is_set():
                    n = c.execute(
                        "select count(*) from pg_stat_activity where backend_type = 'client backend' "
                        "and usename = %s and datname = %s", (self.user, self.dbname)).fetchone()[0]
                    self.peak = max(self.peak, n)
                    self.samples += 1
                    time.sleep(self.interval)
        except Exception as e:  # noqa: BLE001 - reported by __exit__'s caller through .error
            self.error = f"{type(e).__name__}: {e}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)
        return False


def run_threads(target, args_list, timeout):
    """Runs target(*args) on one thread each; returns (errors, hung) where errors holds
    'args: Type: message' for every exception and hung the number still running at the deadline."""
    errors = []
    lock = threading.Lock()

    def wrap(args):
        try:
            target(*args)
        except Exception as e:  # noqa: BLE001 - every failure is reported
            tb = traceback.extract_tb(e.__traceback__)
            where = " <- ".join(f"{f.name}:{f.lineno}" for f in reversed(tb[-4:]))
            with lock:
                errors.append(f"{args}: {type(e).__name__}: {e} (at {where})")

    threads = [threading.Thread(target=wrap, args=(a,), daemon=True) for a in args_list]
    for th in threads:
        th.start()
    deadline = time.monotonic() + timeout * SLOW
    for th in threads:
        th.join(max(0.01, deadline - time.monotonic()))
    return errors, sum(th.is_alive() for th in threads)


def pgbench(port, *args, db=BENCH_DB, user="tusk_trust", timeout=90):
    """-> (exit code, stdout+stderr)."""
    cmd = [str(PG_BIN / "pgbench"), "-h", "127.0.0.1", "-p", str(port), "-U", user, *args, db]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout * SLOW)
    return p.returncode, p.stdout + p.stderr


def pgbench_counts(out):
    """(processed, failed) transactions from pgbench's summary; failed is 0 when not printed."""
    m = re.search(r"number of transactions actually processed: (\d+)", out)
    assert m, f"no pgbench summary:\n{out}"
    f = re.search(r"number of failed transactions: (\d+)", out)
    return int(m.group(1)), int(f.group(1)) if f else 0


def activity(pg, pid):
    """pg_stat_activity's (state, xact_start is not null, query) of one backend, or None if gone."""
    rows = pg.execute("select state, xact_start is not null, query from pg_stat_activity where pid = %s", (pid,))
    return rows[0] if rows else None


def locks_held(pg, pid):
    """Locks one backend holds or waits for (an idle backend holds none)."""
    return pg.execute("select locktype, mode, granted from pg_locks where pid = %s", (pid,))


def shutdown_socket(conn):
    """Cut a psycopg connection's socket under it, the way a crashed client vanishes: RST, no
    Terminate. psycopg's own close() afterwards fails quietly."""
    s = socket.socket(fileno=os.dup(conn.fileno()))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.shutdown(socket.SHUT_RDWR)
    s.close()


class Psql:
    """An interactive psql fed through a pipe, to be killed with SIGKILL mid transaction."""

    def __init__(self, port, user="tusk_trust", dbname=TEST_DB):
        self.proc = subprocess.Popen(
            [str(PG_BIN / "psql"), "-X", "-q", "-At", "-h", "127.0.0.1", "-p", str(port), "-U", user,
             "-d", dbname],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def send(self, sql):
        self.proc.stdin.write(sql.encode() + b"\n")
        self.proc.stdin.flush()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def output(self):
        ready, _, _ = select.select([self.proc.stdout], [], [], 0)
        return os.read(self.proc.stdout.fileno(), 65536).decode(errors="replace") if ready else ""

    def close(self):
        self.kill()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


# --- raw extended protocol ---------------------------------------------------------------------

def _cstr(s):
    return s.encode() + b"\0"


def parse_msg(name, sql, types=()):
    return pgwire.message(b"P", _cstr(name) + _cstr(sql) + struct.pack("!H", len(types))
                          + b"".join(struct.pack("!I", t) for t in types))


def bind_msg(stmt, params=(), portal=""):
    body = _cstr(portal) + _cstr(stmt) + struct.pack("!H", 0) + struct.pack("!H", len(params))
    for p in params:
        if p is None:
            body += struct.pack("!i", -1)
        else:
            v = str(p).encode()
            body += struct.pack("!i", len(v)) + v
    return pgwire.message(b"B", body + struct.pack("!H", 0))


def describe_msg(kind, name):
    return pgwire.message(b"D", kind + _cstr(name))


def execute_msg(portal="", max_rows=0):
    return pgwire.message(b"E", _cstr(portal) + struct.pack("!I", max_rows))


def close_msg(kind, name):
    return pgwire.message(b"C", kind + _cstr(name))


def sync_msg():
    return pgwire.message(b"S")


def data_row(body):
    (n,) = struct.unpack("!H", body[:2])
    off, row = 2, []
    for _ in range(n):
        (ln,) = struct.unpack("!i", body[off:off + 4])
        off += 4
        if ln < 0:
            row.append(None)
        else:
            row.append(body[off:off + ln].decode())
            off += ln
    return row


class WireClient(pgwire.RawClient):
    """pgwire.RawClient plus one call that sends extended-protocol messages ending in Sync and
    returns what came back up to ReadyForQuery, summarized."""

    def __init__(self, port, user="tusk_trust", dbname=TEST_DB, timeout=10.0, **startup):
        super().__init__("127.0.0.1", port, timeout=timeout * SLOW)
        self.startup_msgs = self.startup(user, dbname, **startup)  # BackendKeyData ('K') among them

    def exchange(self, *msgs):
        """-> {'kinds': [type bytes], 'rows': [[str]], 'errors': [field dicts], 'status': b'I'}"""
        self.send(b"".join(msgs))
        kinds, rows, errors, status = [], [], [], None
        for kind, body in self.read_until_ready():
            kinds.append(kind)
            if kind == b"D":
                rows.append(data_row(body))
            elif kind == b"E":
                errors.append(pgwire.parse_error_fields(body))
            elif kind == b"Z":
                status = body
        return {"kinds": kinds, "rows": rows, "errors": errors, "status": status}

    def terminate(self):
        try:
            self.send(pgwire.terminate_message())
        finally:
            self.close()
