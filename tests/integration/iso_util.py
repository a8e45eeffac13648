"""Helpers for the two-client isolation suite (test_isolation.py): one query that shows
everything of a session another client could leak into it, the simple and the extended
protocol spelled the way psycopg speaks them, reference sessions straight to PostgreSQL, and a
crowd of clients that run transactions at once so that every server of a pool gets used.

What a client must see is never written down here: it is what a session straight to
PostgreSQL, opened with the same startup parameters and running the same statements, sees."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg

from conftest import SLOW, TEST_DB, connect

# Settable parameters PostgreSQL 15 reports (GUC_REPORT), then unreported ones.
REPORTED_SETTABLE = ("application_name", "client_encoding", "DateStyle", "IntervalStyle", "TimeZone",
                     "standard_conforming_strings", "default_transaction_read_only")
UNREPORTED = ("search_path", "work_mem", "statement_timeout", "myapp.x")
SETTINGS = REPORTED_SETTABLE + UNREPORTED
# Every parameter a client is told with ParameterStatus, settable or not.
REPORTED = REPORTED_SETTABLE + ("is_superuser", "session_authorization", "integer_datetimes",
                                "server_encoding", "in_hot_standby")

# Session advisory lock key client A takes in the lock cases; everyone else probes it.
LOCK_KEY = 7349001

# name -> SQL expression, all text so both protocols and every result format compare equal.
_COLUMNS = [
    ("pid", "pg_backend_pid()::text"),
    ("current_user", "current_user::text"),
    ("session_user", "session_user::text"),
] + [(s, f"current_setting('{s}')") for s in SETTINGS if s != "myapp.x"] + [
    # A session that never heard of myapp.x has no such setting (NULL); one where it was set and
    # then reset (RESET ALL, DISCARD ALL) keeps an empty placeholder. Neither is another
    # client's value, so both read as ''.
    ("myapp.x", "coalesce(current_setting('myapp.x', true), '')"),
    ("transaction_read_only", "current_setting('transaction_read_only')"),
    # What the settings do, not only what they say.
    ("backslash_literal_length", r"length('a\b')::text"),
    ("timestamptz_text", "'2024-03-04 05:06:07+00'::timestamptz::text"),
    ("interval_text", "interval '1 day 2 hours'::text"),
    ("no_temp_table", "(to_regclass('pg_temp.iso_tmp') is null)::text"),
    ("exclusive_advisory_locks",
     "(select count(*) from pg_locks where locktype = 'advisory' and mode = 'ExclusiveLock' "
     "and pid = pg_backend_pid())::text"),
    ("iso_prepared", "(select count(*) from pg_prepared_statements where starts_with(name, 'iso'))::text"),
    # A shared transaction-level lock: clients probing at once don't block each other, but
    # anyone holding LOCK_KEY exclusively in another session makes it false.
    ("lock_free", f"pg_try_advisory_xact_lock_shared({LOCK_KEY})::text"),
]
COLUMNS = [n for n, _ in _COLUMNS]


def check_sql(proto, sleep):
    """The one query every client runs to look at its session. The sleep holds the server a
    moment so that clients running it at once need several servers. Extended: the sleep is a
    bound parameter."""
    exprs = ", ".join(e for _, e in _COLUMNS)
    if proto == "simple":
        return f"select {exprs}, pg_sleep({sleep:.3f})::text", None
    return f"select {exprs}, pg_sleep(%s)::text", (sleep,)


def run_sql(conn, proto, sql, named=False):
    """One statement in the requested protocol. simple: a Query message. extended: with
    named=False an unnamed Parse/Bind/Describe/Execute/Sync (psycopg takes the extended
    protocol for binary results even without parameters), with named=True a named prepared
    statement (Parse once, then Bind/Execute)."""
    if proto == "simple":
        return conn.execute(sql, prepare=False)
    if named:
        return conn.execute(sql, prepare=True)
    return conn.execute(sql, binary=True)


def look(conn, proto, sleep=0.0, named=False):
    """-> dict of COLUMNS for this session right now."""
    sql, params = check_sql(proto, sleep)
    if params is None:
        row = conn.execute(sql, prepare=False).fetchone()
    else:
        row = conn.execute(sql, params, prepare=named).fetchone()
    return dict(zip(COLUMNS, row[:len(COLUMNS)]))


def told(conn):
    """ParameterStatus values the client has been told (psycopg keeps the latest)."""
    return {p: conn.info.parameter_status(p) for p in REPORTED}


def diff(got, want, what):
    """Readable list of differences, ignoring keys whose wanted value is None (undefined)."""
    return [f"{what} {k}: {got.get(k)!r}, want {v!r}" for k, v in want.items()
            if v is not None and got.get(k) != v]


def without_pid(view):
    return {k: v for k, v in view.items() if k != "pid"}


def run_steps(conn, proto, steps):
    """Runs a case's statements; returns the session's view at each 'CHECK' step.
    ('ERROR', sql) must fail."""
    views = []
    for step in steps:
        if step == "CHECK":
            views.append(without_pid(look(conn, proto)))
        elif isinstance(step, tuple) and step[0] == "ERROR":
            try:
                run_sql(conn, proto, step[1])
            except psycopg.Error:
                pass
            else:
                raise AssertionError(f"{step[1]!r} should have failed")
        else:
            run_sql(conn, proto, step)
    return views


def reference(pg_port, user, startup, proto, steps=()):
    """What a session straight to PostgreSQL sees after `steps`: (views at CHECK steps, final
    view, final ParameterStatus). DISCARD ALL before closing releases its advisory locks at
    once (a closing backend releases them only when it has exited)."""
    with connect(pg_port, user=user, dbname=TEST_DB, **startup) as c:
        views = run_steps(c, proto, steps)
        final = without_pid(look(c, proto))
        ps = told(c)
        c.execute("discard all", prepare=False)
    return views, final, ps


class Client:
    def __init__(self, name, kind, conn, want, want_told, shared=False):
        self.name, self.kind, self.conn, self.want, self.want_told = name, kind, conn, want, want_told
        self.shared = shared  # connected once for many cases: a Crowd does not close it

    def close(self):
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - closing a broken connection is not the test
            pass


class Crowd:
    """Clients that each check, in every round and all at once, that their session is exactly
    what PostgreSQL would give them: their reference view, told parameters included."""

    def __init__(self, port, user, proto, transactions, sleep, pool):
        self.port, self.user, self.proto = port, user, proto
        self.transactions = transactions  # may wrap checks in BEGIN/COMMIT (not in statement mode)
        self.sleep = sleep
        self.pool = pool  # ThreadPoolExecutor
        self.clients = []
        self.visited = set()
        self.lock = threading.Lock()

    def join(self, clients, refs):
        """Clients connected earlier (shared ones included); what they must see starts again
        from their reference."""
        for c in clients:
            c.want, c.want_told = dict(refs[c.kind][0]), refs[c.kind][1]
            self.clients.append(c)

    def add(self, names_startups, refs, phase, shared=False):
        """Connect clients (name, kind, startup) at once; each checks its told parameters at
        login. refs: kind -> (view, told)."""
        def one(item):
            name, kind, startup = item
            conn = connect(self.port, user=self.user, dbname=TEST_DB, **startup)
            want, want_told = refs[kind]
            c = Client(f"{name}(kind {kind})", kind, conn, dict(want), want_told, shared)
            problems = diff(told(conn), want_told, f"{phase}: {c.name} at login: ParameterStatus")
            return c, problems
        problems = []
        for c, p in self.pool.map(one, names_startups):
            self.clients.append(c)
            problems += p
        return problems

    def _check(self, c, rnd, phase):
        problems = []
        named = self.proto == "extended" and rnd % 2 == 1
        in_txn = self.transactions and rnd % 2 == 1
        if in_txn:  # several statements in one transaction, each looking
            run_sql(c.conn, self.proto, "begin")
        try:
            for _ in range(2 if in_txn else 1):
                view = look(c.conn, self.proto, self.sleep, named=named)
                with self.lock:
                    self.visited.add(int(view["pid"]))
                problems += diff(view, c.want, f"{phase}: {c.name} round {rnd} on server {view['pid']}:")
        finally:
            if in_txn:
                run_sql(c.conn, self.proto, "commit")
        problems += diff(told(c.conn), c.want_told, f"{phase}: {c.name} round {rnd}: ParameterStatus")
        return problems

    def round(self, rnd, phase):
        """Every client checks once (twice in a transaction on odd rounds), all at once."""
        problems = []
        futures = [self.pool.submit(self._check, c, rnd, phase) for c in self.clients]
        for f in futures:
            try:
                problems += f.result(timeout=60 * SLOW)
            except Exception as e:  # noqa: BLE001 - an error is a finding like any other
                problems.append(f"{type(e).__name__}: {e}")
        return problems

    def close(self, clients=None):
        """Closes the given clients (default: all but the shared ones) and forgets them."""
        gone = self.clients if clients is None else clients
        for c in gone:
            if not c.shared:
                c.close()
        self.clients = [c for c in self.clients if c not in gone]


def executor():
    return ThreadPoolExecutor(max_workers=24, thread_name_prefix="iso")


def wait_lock_released(pg, key, timeout):
    """True once no session holds `key` (a backend that closed releases it only on exit)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = pg.execute("select count(*) from pg_locks where locktype = 'advisory' and objid = %s "
                       "and granted", (key,), dbname=TEST_DB)[0][0]
        if n == 0:
            return True
        time.sleep(0.05)
    return False
