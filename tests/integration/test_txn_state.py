"""Session state in transaction pooling: a client's settings follow it from server to server
and never show in another client's session, with PostgreSQL's transactional semantics (a
rolled-back or failed SET is not kept, SET LOCAL ends with its transaction, RESET restores);
state that cannot move pins the client to its server."""

import os
import threading
import time

import psycopg
import pytest

from conftest import SLOW, TEST_DB
from txn_util import backend_pid, run_threads, txn_pool

pytestmark = pytest.mark.tusk_only

SETTINGS = ("TimeZone", "DateStyle", "IntervalStyle", "search_path", "statement_timeout", "work_mem",
            "application_name")


def settings(conn):
    sql = "select " + ", ".join(f"current_setting('{s}')" for s in SETTINGS)
    return dict(zip(SETTINGS, conn.execute(sql, prepare=False).fetchone()))


@pytest.fixture(scope="module")
def schemas(pg):
    """txn_sa.marker says 'a'; public has no marker table."""
    with pg.admin(TEST_DB) as c:
        c.execute("drop schema if exists txn_sa cascade")
        c.execute("create schema txn_sa authorization tusk_trust")
        c.execute("create table txn_sa.marker (v text)")
        c.execute("insert into txn_sa.marker values ('a')")
        c.execute("grant all on txn_sa.marker to public")
    yield
    with pg.admin(TEST_DB) as c:
        c.execute("drop schema if exists txn_sa cascade")


A_SETS = {
    "TimeZone": ("set timezone = 'Asia/Tokyo'", "Asia/Tokyo"),
    "DateStyle": ("set datestyle = 'SQL, DMY'", "SQL, DMY"),
    "IntervalStyle": ("set intervalstyle = 'iso_8601'", "iso_8601"),
    "search_path": ("set search_path = txn_sa, public", "txn_sa, public"),
    "statement_timeout": ("set statement_timeout = '300ms'", "300ms"),
    "work_mem": ("set work_mem = '17MB'", "17MB"),
    "application_name": ("set application_name = 'txn-a'", "txn-a"),
}


def test_settings_never_leak_between_clients_sharing_one_server(tusk, schemas):
    """Size 1: a and b take turns on the same server. a's SETs (reported parameters and
    unreported ones) show, and take effect, in a's transactions only; b keeps its own."""
    t = tusk(pools=[txn_pool(1)], pool_wait_timeout="5s")
    with t.connect() as a, t.connect() as b:
        assert backend_pid(a) == backend_pid(b), "size 1: one server for both"
        base = settings(b)
        base_tz = b.info.parameter_status("TimeZone")
        for sql, _ in A_SETS.values():
            a.execute(sql)
        mine = {k: v for k, (_, v) in A_SETS.items()}
        for rnd in range(3):
            assert settings(b) == base, f"round {rnd}: a's settings leaked into b's session"
            assert b.info.parameter_status("TimeZone") == base_tz
            assert b.info.parameter_status("application_name") == base["application_name"]
            assert b.execute("select to_regclass('marker')").fetchone() == (None,)
            assert b.execute("select '2024-03-04'::date::text, interval '1 day'::text").fetchone() == \
                ("2024-03-04", "1 day")
            assert b.execute("select 'slept' from pg_sleep(0.5)").fetchone() == ("slept",)

            assert settings(a) == mine, f"round {rnd}: a lost its own settings"
            assert a.info.parameter_status("TimeZone") == "Asia/Tokyo"
            assert a.info.parameter_status("DateStyle") == "SQL, DMY"
            assert a.info.parameter_status("application_name") == "txn-a"
            assert a.execute("select v from marker").fetchone() == ("a",)  # search_path works
            assert a.execute("select '2024-03-04'::date::text, interval '1 day'::text").fetchone() == \
                ("04/03/2024", "P1D")
            with pytest.raises(psycopg.errors.QueryCanceled):  # statement_timeout works
                a.execute("select pg_sleep(1)")
            assert backend_pid(a) == backend_pid(b)


class Pair:
    """Clients a and b on a pool of size 1: every b_is_untouched() makes b take the server
    between two of a's transactions, so a's next one must get its session rebuilt."""

    def __init__(self, t):
        self.a, self.b = t.connect(), t.connect()
        self.base = settings(self.b)
        self.a.execute("set timezone = 'Asia/Tokyo'")
        self.a.execute("set search_path = txn_sa, public")
        self.a.execute("set work_mem = '20MB'")
        self.b_is_untouched()

    def b_is_untouched(self):
        assert settings(self.b) == self.base, "a's settings showed in b's session"
        assert backend_pid(self.a) == backend_pid(self.b)

    def a_has(self, **want):
        got = settings(self.a)
        return {k: got[k] for k in want}

    def close(self):
        self.a.close()
        self.b.close()


@pytest.fixture
def pair(tusk, schemas):
    p = Pair(tusk(pools=[txn_pool(1)], pool_wait_timeout="5s"))
    yield p
    p.close()


KEPT = {"TimeZone": "Asia/Tokyo", "search_path": "txn_sa, public", "work_mem": "20MB"}


@pytest.mark.parametrize("how", ["psycopg_rollback", "sql_statements", "one_query_string"])
def test_rolled_back_set_is_not_kept(pair, how):
    """SETs inside a transaction that rolls back are undone (PostgreSQL semantics), also once
    the client's next transaction runs on a server rebuilt for it."""
    a = pair.a
    if how == "psycopg_rollback":  # BEGIN/ROLLBACK sent by psycopg, extended protocol
        with a.transaction(force_rollback=True):
            a.execute("set timezone = 'Europe/Paris'")
            a.execute("set search_path = public")
            a.execute("set work_mem = '33MB'")
            assert settings(a)["TimeZone"] == "Europe/Paris"
    elif how == "sql_statements":  # each its own simple Query
        a.execute("begin")
        a.execute("set timezone = 'Europe/Paris'")
        a.execute("set search_path = public")
        a.execute("set work_mem = '33MB'")
        a.execute("rollback")
    else:
        a.execute("begin; set timezone = 'Europe/Paris'; set search_path = public; set work_mem = '33MB'; "
                  "rollback")
    assert pair.a_has(**KEPT) == KEPT, "right after the rollback, on the same server"
    pair.b_is_untouched()
    assert pair.a_has(**KEPT) == KEPT, "a rolled-back SET was replayed on a's next server"
    assert a.info.parameter_status("TimeZone") == "Asia/Tokyo"


def test_failed_transaction_set_is_not_kept(pair):
    a = pair.a
    with pytest.raises(psycopg.errors.DivisionByZero):
        with a.transaction():
            a.execute("set statement_timeout = '1s'")
            a.execute("set datestyle = 'German'")
            a.execute("set work_mem = '33MB'")
            a.execute("select 1 / 0")
    pair.b_is_untouched()
    want = {"statement_timeout": pair.base["statement_timeout"], "DateStyle": pair.base["DateStyle"],
            "work_mem": "20MB"}
    assert pair.a_has(**want) == want


def test_committed_set_is_kept_and_set_local_is_not(pair):
    a = pair.a
    with a.transaction():
        a.execute("set work_mem = '44MB'")
        a.execute("set timezone = 'America/Lima'")
    pair.b_is_untouched()
    assert pair.a_has(work_mem=1, TimeZone=1) == {"work_mem": "44MB", "TimeZone": "America/Lima"}
    with a.transaction():
        a.execute("set local work_mem = '55MB'")
        a.execute("set local timezone = 'Africa/Cairo'")
        a.execute("set local search_path = public")
        assert pair.a_has(work_mem=1, TimeZone=1) == {"work_mem": "55MB", "TimeZone": "Africa/Cairo"}
    pair.b_is_untouched()
    want = {"work_mem": "44MB", "TimeZone": "America/Lima", "search_path": "txn_sa, public"}
    assert pair.a_has(**want) == want, "SET LOCAL outlived its transaction"


def test_reset_and_reset_all(pair):
    a = pair.a
    a.execute("reset search_path")
    a.execute("reset timezone")
    pair.b_is_untouched()
    want = {"search_path": pair.base["search_path"], "TimeZone": pair.base["TimeZone"], "work_mem": "20MB"}
    assert pair.a_has(**want) == want
    assert a.execute("select to_regclass('marker')").fetchone() == (None,)
    a.execute("set datestyle = 'Postgres, MDY'")
    a.execute("set statement_timeout = '9s'")
    a.execute("reset all")
    pair.b_is_untouched()
    assert settings(a) == pair.base


def test_startup_options_follow_the_client(tusk, schemas):
    """Settings from the startup packet (options -c ..., PGTZ) are each client's own too."""
    t = tusk(pools=[txn_pool(1)], pool_wait_timeout="5s")
    os.environ["PGTZ"] = "Pacific/Auckland"
    try:
        a = t.connect(options="-c search_path=txn_sa,public -c statement_timeout=4s -c work_mem=12MB")
    finally:
        del os.environ["PGTZ"]
    b = t.connect(options="-c work_mem=13MB")
    try:
        for _ in range(3):
            got = settings(a)
            assert (got["TimeZone"], got["search_path"], got["statement_timeout"], got["work_mem"]) == \
                ("Pacific/Auckland", "txn_sa,public", "4s", "12MB"), "(PostgreSQL shows txn_sa,public)"
            assert a.execute("select v from marker").fetchone() == ("a",)
            got = settings(b)
            assert got["work_mem"] == "13MB" and got["statement_timeout"] == "0"
            assert got["TimeZone"] != "Pacific/Auckland"
            assert b.execute("select to_regclass('marker')").fetchone() == (None,)
            assert backend_pid(a) == backend_pid(b)
    finally:
        a.close()
        b.close()


def test_settings_follow_each_client_across_servers(tusk):
    """Eight clients, three servers, each client with its own TimeZone, search_path and
    work_mem, all checked on every transaction while the servers are shuffled among them."""
    t = tusk(pools=[txn_pool(3)], pool_wait_timeout="10s")
    zones = ["UTC", "Asia/Tokyo", "Europe/Paris", "America/Lima", "Africa/Cairo", "Asia/Kolkata",
             "Australia/Sydney", "America/Denver"]
    pids_seen = set()
    lock = threading.Lock()

    def client(i):
        with t.connect() as c:
            c.execute(f"set timezone = '{zones[i]}'")
            c.execute(f"set search_path = s{i}, public")
            c.execute(f"set work_mem = '{i + 10}MB'")
            mine = set()
            for k in range(25):
                got = c.execute("select current_setting('TimeZone'), current_setting('search_path'), "
                                "current_setting('work_mem'), pg_backend_pid() from pg_sleep(0.003)").fetchone()
                assert got[:3] == (zones[i], f"s{i}, public", f"{i + 10}MB"), f"client {i} txn {k}: {got}"
                mine.add(got[3])
            with lock:
                pids_seen.update(mine)

    errors, hung = run_threads(client, [(i,) for i in range(8)], timeout=60)
    assert hung == 0 and errors == [], f"hung {hung}, errors {errors[:5]}"
    assert len(pids_seen) >= 2, "the clients should have shared several servers"


# --- pinning ------------------------------------------------------------------------------------

PINNERS = {
    # A LISTEN alone is answered by tusk without pinning (test_listen_notify.py); inside a
    # multi-statement Query tusk does not take it apart, so the server keeps it and pins.
    "listen": ("select 1; listen txn_chan", None),
    "temp_table": ("create temp table txn_tmp (x int)", "insert into txn_tmp values (1)"),
    "sql_prepare": ("prepare txn_stmt (int) as select $1 * 2", "execute txn_stmt (21)"),
    "hold_cursor": ("declare txn_cur cursor with hold for select generate_series(1, 100)", "fetch 1 from txn_cur"),
    "set_role": ("set role tusk_trust", None),
}


@pytest.mark.parametrize("what", list(PINNERS))
def test_session_state_pins_the_client_to_its_server(tusk, what):
    """After a statement whose state lives in the server process, the client keeps its server
    (state still there, every transaction on the same backend) while another client, running at
    the same time, never gets that server; once the pinned client leaves, nothing of its state
    is seen by the next clients."""
    t = tusk(pools=[txn_pool(2)], pool_wait_timeout="5s")
    setup, use = PINNERS[what]
    a, b = t.connect(), t.connect()
    try:
        a.execute(setup)
        pid_a = backend_pid(a)
        results = []
        for k in range(8):
            with b.transaction():  # b holds a server while a runs: a's must not be given away
                pid_b = backend_pid(b)
                assert pid_b != pid_a, f"b got a's pinned server after {setup!r}"
                assert backend_pid(a) == pid_a, f"a moved off its server after {setup!r}"
                if use:
                    cur = a.execute(use)
                    results.append(cur.fetchall() if cur.description else None)
        if what == "temp_table":
            assert a.execute("select count(*) from txn_tmp").fetchone() == (8,)
            assert b.execute("select to_regclass('txn_tmp')").fetchone() == (None,)
        elif what == "sql_prepare":
            assert results == [[(42,)]] * 8
        elif what == "hold_cursor":
            assert [r[0][0] for r in results] == list(range(1, 9)), "the WITH HOLD cursor lost its place"
        elif what == "listen":
            got = []
            a.add_notify_handler(lambda n: got.append((n.channel, n.payload)))
            b.execute("notify txn_chan, 'hello'")
            deadline = time.monotonic() + 3 * SLOW
            while not got and time.monotonic() < deadline:
                a.execute("select 1")
                time.sleep(0.05)
            assert got == [("txn_chan", "hello")]
        elif what == "set_role":
            assert a.execute("select current_user, session_user").fetchone() == ("tusk_trust", "tusk_trust")
    finally:
        a.close()
    # the pinned server went back cleaned: two clients at once see both servers
    c, d = t.connect(autocommit=False), t.connect(autocommit=False)
    try:
        pids = set()
        for conn in (c, d):
            row = conn.execute(
                "select pg_backend_pid(), (select count(*) from pg_listening_channels()), "
                "to_regclass('txn_tmp') is null, (select count(*) from pg_prepared_statements where from_sql), "
                "(select count(*) from pg_cursors)").fetchone()
            pids.add(row[0])
            assert row[1:] == (0, True, 0, 0), f"{what}: a pinned client's state survived it: {row}"
        assert pid_a in pids
    finally:
        c.close()
        d.close()
        b.close()


def test_on_commit_drop_temp_table_does_not_pin(tusk):
    """A temp table that ends with its transaction leaves nothing behind: the client is not
    pinned, so with one server another client is served right after."""
    t = tusk(pools=[txn_pool(1)], pool_wait_timeout="2s")
    with t.connect() as a, t.connect() as b:
        with a.transaction():
            a.execute("create temp table txn_scratch (x int) on commit drop")
            a.execute("insert into txn_scratch values (1), (2)")
            assert a.execute("select sum(x) from txn_scratch").fetchone() == (3,)
        assert b.execute("select to_regclass('txn_scratch') is null").fetchone() == (True,)
        assert a.execute("select 1").fetchone() == (1,)


# --- what tusk cannot see in the protocol (issue 9, items 3-5) -------------------------------------

@pytest.fixture(scope="module")
def iso_objects(pg):
    """A role tusk_trust may SET ROLE to, and functions that change the session from inside."""
    with pg.admin(TEST_DB) as c:
        c.execute("drop role if exists iso_limited")
        c.execute("create role iso_limited nologin")
        c.execute("grant iso_limited to tusk_trust")
        c.execute("""create or replace function public.iso_set_fn() returns int language plpgsql as
                     $$ begin perform set_config('myapp.leak', 'from-fn', false); return 1; end $$""")
        c.execute("""create or replace function public.iso_role_fn() returns int language plpgsql as
                     $$ begin execute 'set role iso_limited'; return 1; end $$""")
        c.execute("""create or replace function public.iso_temp_fn() returns int language plpgsql as
                     $$ begin execute 'create temp table iso_fn_tmp (x int)'; return 1; end $$""")
        c.execute("grant execute on all functions in schema public to public")
    yield
    with pg.admin(TEST_DB) as c:
        c.execute("drop function if exists public.iso_set_fn(), public.iso_role_fn(), public.iso_temp_fn()")
        c.execute("drop owned by iso_limited")
        c.execute("drop role if exists iso_limited")


def own_view(conn):
    return conn.execute(
        "select pg_backend_pid(), current_user, coalesce(current_setting('myapp.leak', true), ''), "
        "to_regclass('iso_fn_tmp') is null", prepare=False).fetchone()


# name -> (call, what a itself sees afterwards: None when tusk cannot see the state and resets it)
HIDDEN = {
    # A custom placeholder set inside a function is listed by no view: RESET ALL clears it.
    "function_set_config": ("select public.iso_set_fn()", None),
    "call_in_from": ("select * from public.iso_set_fn()", None),
    # The check after the transaction finds these, and a keeps them on its own server.
    "function_set_role": ("select public.iso_role_fn()", ("iso_limited", "", True)),
    "function_temp_table": ("select public.iso_temp_fn()", ("tusk_trust", "", False)),
    "do_block": ("do $$ begin perform set_config('myapp.leak', 'from-do', false); execute 'set role iso_limited'; end $$",
                 ("iso_limited", "from-do", True)),
}


@pytest.mark.parametrize("what", list(HIDDEN))
def test_functions_and_do_blocks_never_reach_the_next_client(tusk, iso_objects, what):
    """Regression (issue 9, item 5): what a function or a DO block does to the session is not in
    the protocol. Either tusk finds it after the transaction (issue 27, item 7) and a keeps its
    server and its state, while b gets the other server and a fresh session; or it cannot see
    it and the server is reset before b uses it (size 1: both on the one server, a not pinned)."""
    sql, a_keeps = HIDDEN[what]
    t = tusk(pools=[txn_pool(1 if a_keeps is None else 2)], pool_wait_timeout="5s")
    with t.connect() as a, t.connect() as b:
        pid = backend_pid(a)
        a.execute(sql, prepare=False)
        for _ in range(3):
            row = own_view(b)
            assert row[1:] == ("tusk_trust", "", True), f"after a's {what!r}, b sees {row}"
            if a_keeps is None:
                assert row[0] == pid
            else:
                assert row[0] != pid, f"after a's {what!r}, b got a's server"
                assert own_view(a) == (pid,) + a_keeps, f"a lost what its {what!r} did"
        # and a itself was not pinned: the one server serves both in turn
        assert backend_pid(a) == pid


def test_harmless_builtins_do_not_reset(tusk):
    """Built-in functions keep nothing in the session: no reset after them (the server keeps
    a's prepared statements, which a DISCARD ALL would drop)."""
    t = tusk(pools=[txn_pool(1)], pool_wait_timeout="5s")
    with t.connect() as a:
        a.execute("select count(*), now(), lower('X'), pg_catalog.upper('y') from generate_series(1, 3) g(x)",
                  prepare=True)
        for _ in range(3):
            a.execute("select %s::int + 1", (1,), prepare=True)
        pid = backend_pid(a)
        rows = a.execute("select count(*) from pg_prepared_statements where name like 'tusk_%%'",
                         prepare=False).fetchone()
        assert rows[0] >= 1, "the server was reset after harmless built-ins"
        assert backend_pid(a) == pid


MORE_PINNERS = {
    "advisory_lock": "select pg_advisory_lock(4242)",
    "set_config_unreported": "select set_config('myapp.kept', 'a-only', false)",
}


@pytest.mark.parametrize("what", list(MORE_PINNERS))
def test_session_builtins_pin(tusk, what):
    """Session advisory locks and set_config() of a setting the server does not report keep a
    on its server (its state stays its own), b never gets that server meanwhile, and after a
    leaves nothing of it is left."""
    t = tusk(pools=[txn_pool(2)], pool_wait_timeout="5s")
    a, b = t.connect(), t.connect()
    try:
        a.execute(MORE_PINNERS[what], prepare=False)
        pid_a = backend_pid(a)
        for _ in range(6):
            with b.transaction():
                assert backend_pid(b) != pid_a, f"b got a's pinned server after {what}"
                assert backend_pid(a) == pid_a
                if what == "advisory_lock":
                    assert b.execute("select pg_try_advisory_xact_lock(4242)").fetchone() == (False,)
        if what == "set_config_unreported":
            assert a.execute("select current_setting('myapp.kept')").fetchone() == ("a-only",)
    finally:
        a.close()
    c, d = t.connect(autocommit=False), t.connect(autocommit=False)
    try:
        for conn in (c, d):
            row = conn.execute(
                "select coalesce(current_setting('myapp.kept', true), ''), current_setting('standard_conforming_strings'), "
                "(select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid())").fetchone()
            assert row == ("", "on", 0), f"{what}: a pinned client's state survived it: {row}"
        # the lock was released when a's server was reset
        assert c.execute("select pg_try_advisory_xact_lock(4242)").fetchone() == (True,)
    finally:
        c.close()
        d.close()
        b.close()


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_oversized_set_role_is_classified(tusk, iso_objects, protocol):
    """Regression (issue 9, item 4): SET ROLE padded past buffer_size streamed through
    unclassified and the next client on that server ran as iso_limited."""
    t = tusk(pools=[txn_pool(2)], pool_wait_timeout="5s", buffer_size="16kB")
    pad = "/* " + "x" * 40000 + " */ "
    a = t.connect()
    try:
        if protocol == "simple":
            a.execute(pad + "set role iso_limited; select 1", prepare=False)  # two statements: simple Query
        else:
            a.execute(pad + "set role iso_limited", prepare=False)  # one statement: an unnamed Parse
        assert a.execute("select current_user").fetchone() == ("iso_limited",)
        others = [t.connect() for _ in range(4)]
        try:
            for _ in range(5):
                for o in others:
                    assert o.execute("select current_user").fetchone() == ("tusk_trust",)
        finally:
            for o in others:
                o.close()
    finally:
        a.close()
    with t.connect() as c, t.connect() as d:
        assert c.execute("select current_user").fetchone() == ("tusk_trust",)
        assert d.execute("select current_user").fetchone() == ("tusk_trust",)


@pytest.mark.parametrize("setting", [
    ("default_transaction_read_only", "set default_transaction_read_only = on", "off"),
    ("default_transaction_read_only", "select set_config('default_transaction_read_only', 'on', false)", "off"),
    ("client_encoding", "set client_encoding = 'LATIN1'", "UTF8"),
    ("application_name", "set application_name = 'left-by-a'", ""),
    ("DateStyle", "set datestyle = 'SQL, DMY'", "ISO, MDY"),
])
def test_new_client_is_greeted_with_defaults_not_the_last_clients(tusk, setting):
    """Regression (issue 9, item 3): a client logging in on a server another client changed was
    told that client's values in ParameterStatus and ran with them."""
    name, sql, default = setting
    t = tusk(pools=[txn_pool(1)], pool_wait_timeout="5s")
    with t.connect() as a:
        a.execute(sql, prepare=False)
        pid = backend_pid(a)
        # a stays connected; b logs in on the same (only) server
        with t.connect() as b:
            assert backend_pid(b) == pid
            assert b.info.parameter_status(name) == default, f"b was greeted with a's {name}"
            assert b.execute(f"select current_setting('{name}')").fetchone() == (default,)
            if name == "default_transaction_read_only":
                b.execute("create temp table if not exists iso_rw (x int) on commit drop")


def test_standard_conforming_strings_off_is_read_as_the_server_reads_it(tusk, iso_objects):
    """standard_conforming_strings = off is a's own (b on the same single server sees on, and
    a is not pinned for it), and tusk reads a's SQL with backslash escapes as the server does:
    a SET ROLE hidden behind 'x\\' ' (one string with off, two with on) is seen and pins a."""
    t = tusk(pools=[txn_pool(1)], pool_wait_timeout="5s")
    with t.connect() as a:
        a.execute("set standard_conforming_strings = off", prepare=False)
        pid = backend_pid(a)
        with t.connect() as b:
            assert backend_pid(b) == pid, "a is not pinned by standard_conforming_strings alone"
            assert b.info.parameter_status("standard_conforming_strings") == "on"
            assert b.execute("select 'x\\'").fetchone() == ("x\\",)
        assert a.execute("show standard_conforming_strings").fetchone() == ("off",)
    t2 = tusk(pools=[txn_pool(2)], pool_wait_timeout="5s")
    a = t2.connect()
    try:
        a.execute("set standard_conforming_strings = off", prepare=False)
        # simple protocol (several statements); with off this is: string, SET ROLE, comment
        a.execute("select 'x\\' ' ; set role iso_limited; -- '", prepare=False)
        assert a.execute("select current_user").fetchone() == ("iso_limited",)
        pid_a = backend_pid(a)
        with t2.connect() as b:
            for _ in range(6):
                with b.transaction():
                    assert backend_pid(b) != pid_a, "a was not pinned by its hidden SET ROLE"
                    assert b.execute("select current_user").fetchone() == ("tusk_trust",)
    finally:
        a.close()
    with t2.connect() as c, t2.connect() as d:
        for conn in (c, d):
            assert conn.execute("select current_user, current_setting('standard_conforming_strings')").fetchone() == (
                "tusk_trust", "on")
