"""The plain path: real clients (psql, psycopg) log in through tusk and run queries."""

import os
import re
import subprocess
import threading
import time

import psycopg
import pytest

from conftest import PG_BIN, SLOW, TEST_DB, wait_until
import pgwire
from txn_util import txn_pool


def psql(port, sql, user="tusk_trust", env=None):
    return subprocess.run(
        [str(PG_BIN / "psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(port),
         "-U", user, "-d", TEST_DB, "-c", sql],
        capture_output=True, text=True, timeout=30 * SLOW, env=env)


def test_psql_select_1(tusk):
    t = tusk()
    p = psql(t.port, "select 1")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "1\n"


def test_psql_reads_table_and_reports_sql_errors(tusk):
    t = tusk()
    p = psql(t.port, "select count(*), sum(id) from items")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "1000|500500\n"
    p = psql(t.port, "select * from no_such_table")
    assert p.returncode != 0
    assert 'relation "no_such_table" does not exist' in p.stderr


def test_psycopg_extended_protocol_and_transactions(tusk):
    t = tusk()
    with t.connect(autocommit=False) as c:
        assert c.execute("select %s::int + %s::int", (40, 2)).fetchone() == (42,)
        c.execute("insert into kv values ('tx', 'rolled back')")
        c.rollback()
        assert c.execute("select count(*) from kv where k = 'tx'").fetchone() == (0,)
        c.execute("insert into kv values ('tx', 'kept')")
        c.commit()
    with t.connect() as c:
        assert c.execute("select v from kv where k = 'tx'").fetchone() == ("kept",)
        c.execute("delete from kv where k = 'tx'")


def test_client_startup_parameters_reach_server(tusk):
    t = tusk()
    # libpq sends PGTZ and PGDATESTYLE in the startup packet as TimeZone/DateStyle.
    os.environ["PGTZ"] = "America/Sao_Paulo"
    os.environ["PGDATESTYLE"] = "SQL, DMY"
    try:
        with t.connect(application_name="tusk-it-app") as c:
            assert c.execute("show application_name").fetchone() == ("tusk-it-app",)
            assert c.execute("show timezone").fetchone() == ("America/Sao_Paulo",)
            assert c.execute("show datestyle").fetchone() == ("SQL, DMY",)
            # ... and the client saw the server's ParameterStatus for them
            assert c.info.parameter_status("application_name") == "tusk-it-app"
            assert c.info.parameter_status("TimeZone") == "America/Sao_Paulo"
    finally:
        del os.environ["PGTZ"]
        del os.environ["PGDATESTYLE"]


def test_client_sees_server_parameter_status(tusk, pg):
    t = tusk()
    with pg.admin(TEST_DB) as direct, t.connect() as c:
        for name in ("server_version", "server_encoding", "client_encoding", "integer_datetimes",
                     "standard_conforming_strings"):
            assert c.info.parameter_status(name) == direct.info.parameter_status(name), name
        assert c.info.server_version == direct.info.server_version


@pytest.mark.tusk_only
def test_backend_key_data_is_minted_by_tusk(tusk):
    t = tusk()
    with t.connect() as a, t.connect() as b:
        real_a = a.execute("select pg_backend_pid()").fetchone()[0]
        # the client must never learn a server's real key: it may be serving someone else later
        assert a.info.backend_pid != 0
        assert a.info.backend_pid != real_a
        assert a.info.backend_pid != b.info.backend_pid


def test_ssl_request_is_refused_then_plain_startup_works(tusk):
    t = tusk()
    c = pgwire.RawClient("127.0.0.1", t.port)
    try:
        c.send(pgwire.ssl_request())
        assert c.read_byte() == b"N"
        c.startup("tusk_trust", TEST_DB)
        rows, errors = c.simple_query("select 6 * 7")
        assert errors == [] and rows == [["42"]]
        c.send(pgwire.terminate_message())
    finally:
        c.close()


def test_psql_through_sslmode_prefer_falls_back_to_plain(tusk):
    t = tusk()
    env = dict(os.environ, PGSSLMODE="prefer")
    p = psql(t.port, "select 'plain'", env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "plain\n"


@pytest.mark.tusk_only
def test_log_lines_carry_connection_id_and_context(tusk):
    t = tusk()
    with t.connect(application_name="log-check") as c:
        c.execute("select 1")
    line_re = re.compile(r" c[0-9a-f]{8} tusk_test/tusk_trust@127\.0\.0\.1:\d+: ")
    # the log is written by a logger thread: give it a moment
    wait_until(lambda: line_re.search(t.log_text()), 5 * SLOW, what="a client log line with id and db/user@addr:port")


@pytest.mark.tusk_only
def test_log_target_file(tusk, tmp_path):
    path = tmp_path / "tusk-file.log"
    t = tusk(log={"level": "info", "format": "text", "target": f"file:{path}"})
    with t.connect() as c:
        c.execute("select 1")
    wait_until(lambda: path.exists() and "tusk_test/tusk_trust@" in path.read_text(), 5 * SLOW,
               what=f"client log lines in {path}")


def test_cancel_request_reaches_the_right_query(tusk):
    t = tusk()
    with t.connect() as victim, t.connect() as bystander:
        timer = threading.Timer(0.5, victim.cancel)
        timer.start()
        start = time.monotonic()
        try:
            with pytest.raises(psycopg.errors.QueryCanceled):
                victim.execute("select pg_sleep(20)")
        finally:
            timer.cancel()
        assert time.monotonic() - start < 5 * SLOW
        assert bystander.execute("select 'untouched'").fetchone() == ("untouched",)
        assert victim.execute("select 'still usable'").fetchone() == ("still usable",)


@pytest.mark.tusk_only
def test_max_client_connections(tusk):
    t = tusk(max_client_connections=3)
    held = [t.connect() for _ in range(3)]
    try:
        c = pgwire.RawClient("127.0.0.1", t.port, timeout=10 * SLOW)
        try:
            c.send(pgwire.startup_packet({"user": "tusk_trust", "database": TEST_DB}))
            outcome, detail = c.expect_error_or_close(timeout=10 * SLOW)
            if outcome == "error":
                assert detail["M"].startswith("tusk "), detail
        finally:
            c.close()
    finally:
        for h in held:
            h.close()
    # a slot frees up when a client leaves
    wait_until(lambda: _can_query(t), 10 * SLOW, what="a new client accepted after others left")


def _can_query(t):
    try:
        with t.connect(connect_timeout=5) as c:
            return c.execute("select 1").fetchone() == (1,)
    except psycopg.OperationalError:
        return False

# Startup packets whose parameters overlap "options" (pgjdbc sends DateStyle=ISO, TimeZone and
# extra_float_digits before whatever options the application gave): PostgreSQL applies
# options first, then the other parameters in packet order, and a second DateStyle keeps what
# it leaves out of the first (GERMAN alone means DMY).
STARTUP_ORDERS = [
    {"DateStyle": "ISO", "TimeZone": "UTC", "extra_float_digits": "3",
     "options": "-c DateStyle=German -c TimeZone=Asia/Tokyo -c extra_float_digits=1 -c statement_timeout=4s"},
    {"options": "-c DateStyle=SQL,DMY", "DateStyle": "ISO"},
    {"DateStyle": "YMD", "options": "-c DateStyle=Postgres"},
    {"options": "-c DateStyle=German -c DateStyle=MDY -c work_mem=5MB -c work_mem=6MB"},
    {"DateStyle": "Euro", "TimeZone": "Europe/Oslo"},
]
STARTUP_LOOK = ("SELECT current_setting('DateStyle'), current_setting('TimeZone'), "
                "current_setting('extra_float_digits'), current_setting('statement_timeout'), "
                "current_setting('work_mem'), date '2024-03-05'::text, 0.1::float8::text")


def startup_view(port, params):
    """What a raw client with these startup parameters is told and sees, twice (a transaction
    pool may serve the second from another server)."""
    c = pgwire.RawClient("127.0.0.1", port)
    try:
        msgs = c.startup("tusk_trust", TEST_DB, **params)
        told = {}
        for kind, body in msgs:
            if kind == b"S":
                name, value = body.split(b"\0")[:2]
                told[name.decode()] = value.decode()
        seen = [c.simple_query(STARTUP_LOOK) for _ in range(2)]
        return {k: told.get(k) for k in ("DateStyle", "TimeZone")}, seen
    finally:
        c.close()


def test_startup_parameters_apply_in_postgresqls_order(tusk, pg):
    """Same packets straight to PostgreSQL and through a transaction pool of one server,
    interleaved so that each client's second look may follow another client's on the server."""
    t = tusk(pools=[txn_pool(1)])
    for params in STARTUP_ORDERS:
        want = startup_view(pg.port, params)
        assert startup_view(t.port, params) == want, params


def _libpq(port, **params):
    """A libpq connection (psycopg's thin wrapper of PGconn: the calls a C client makes)."""
    info = " ".join(f"{k}={v}" for k, v in {"host": "127.0.0.1", "port": port, "user": "tusk_trust",
                                             "dbname": TEST_DB, **params}.items())
    conn = psycopg.pq.PGconn.connect(info.encode())
    assert conn.status == psycopg.pq.ConnStatus.OK, conn.error_message
    return conn


def _run(conn, sql):
    """Every result of sql on conn (libpq's PQexec), the last error's SQLSTATE or None."""
    conn.send_query(sql.encode())
    state = None
    while (res := conn.get_result()) is not None:
        if res.status == psycopg.pq.ExecStatus.FATAL_ERROR:
            state = res.error_field(psycopg.pq.DiagnosticField.SQLSTATE).decode()
    return state


@pytest.mark.parametrize("mode,proto", [("transaction", "simple"), ("session", "simple"), ("transaction", "extended"),
                                        ("transaction", "prepared")])
def test_one_cancel_sent_right_after_a_query_cancels_it(tusk, mode, proto):
    """A driver sends one CancelRequest (its statement timeout, a user's interrupt), and may
    send it right after the query. On PostgreSQL the query is running by the time the cancel's
    signal comes (the cancel is a new connection and a new process): it ends with 57014.
    Through tusk the query may first wait for tusk's own steps on its server: in a transaction
    pool the SET of application_name (the server last served a client with another one), in a
    session pool the startup values set again after the client's RESET ALL (asyncpg's release
    ends with one), or for tusk to read it at all. A cancel that came then was dropped and the
    query ran its full time (13 to 21 of 25 rounds). 25 rounds of libpq's calls: PQsendQuery
    (or PQsendQueryParams; or PQsendQueryPrepared of a statement prepared once, which tusk
    prepares on each server it lands on first), then at once PQcancel; the statement after each
    must not be cancelled."""
    t = tusk(pools=[txn_pool(1, mode=mode)], pool_wait_timeout=f"{int(10 * SLOW)}s", max_prepared_statements=100)
    a = _libpq(t.port, application_name="canceller", options="'-c work_mem=7MB'")
    b = _libpq(t.port, application_name="other") if mode == "transaction" else None
    try:
        if proto == "prepared":
            assert a.prepare(b"sleeper", b"select pg_sleep($1)").status == psycopg.pq.ExecStatus.COMMAND_OK
        slow = []
        for i in range(25):
            if b:
                assert _run(b, "select 1") is None  # the server now carries b's application_name
            else:
                assert _run(a, "reset all") is None  # work_mem goes back to 7MB on the server
            cancel = a.get_cancel()
            started = time.monotonic()
            if proto == "simple":
                a.send_query(b"select pg_sleep(4)")
            elif proto == "extended":
                a.send_query_params(b"select pg_sleep($1)", [b"4"])
            else:
                a.send_query_prepared(b"sleeper", [b"4"])
            cancel.cancel()
            state = None
            while (res := a.get_result()) is not None:
                if res.status == psycopg.pq.ExecStatus.FATAL_ERROR:
                    state = res.error_field(psycopg.pq.DiagnosticField.SQLSTATE).decode()
            took = time.monotonic() - started
            if state != "57014" or took > 2:
                slow.append((i, state, round(took, 2)))
            # and nothing of that cancel reaches the next statement (tusk may send it again)
            assert _run(a, "select pg_sleep(0.01)") is None, f"round {i}: the next statement was cancelled"
        assert not slow, f"{len(slow)} of 25 queries not cancelled at once (round, SQLSTATE, s): {slow}"
        assert _run(a, "select 1") is None
        a.send_query(b"show work_mem")
        res = a.get_result()
        assert res.get_value(0, 0) == b"7MB"
        assert a.get_result() is None
    finally:
        a.finish()
        if b:
            b.finish()
