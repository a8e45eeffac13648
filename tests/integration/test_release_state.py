"""What pins a client to its server in transaction mode, and what is reset (issue 27, items 4
and 7), against real behaviour:

- statements that only give session state up (asyncpg.Pool's release query
  `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;`, DISCARD, a single
  pg_advisory_unlock) pin nobody: an asyncpg.Pool larger than tusk's size works;
- a transaction that called a user function is followed by one question to the server: what
  the function left in the session (an advisory lock, a temporary table, LISTEN, a prepared
  statement, a role) stays the caller's, on its own server, and reaches no other client;
  settings it made are cleared by RESET ALL; a function that left nothing costs no DISCARD ALL.

One tusk (transaction mode, size 2) for the module, with a role of its own so that its servers
can be told apart in pg_stat_activity."""

import asyncio
from datetime import date
import functools
import sys
import threading
import time

import asyncpg
import pytest

import pgwire

from conftest import DIRECT, REPO, SLOW, TEST_DB, Tusk, connect, wait_until
from relay_util import Relay
from txn_util import WireClient, bind_msg, close_msg, execute_msg, parse_msg, sync_msg, txn_pool

sys.path.insert(0, str(REPO / "tests" / "drivers"))
import harness  # noqa: E402

USER = "rs_user"
SIZE = 2
LOCK = 81
WAIT = f"{int(8 * SLOW)}s"  # pool_wait_timeout: a pinned-out pool fails well inside a test

# name -> (function body, what the caller sees of it, what anyone else sees in its place)
STATEFUL = {
    "advisory_lock": (f"perform pg_advisory_lock({LOCK});",
                      f"select count(*)::text from pg_locks where locktype = 'advisory' and pid = pg_backend_pid() "
                      f"and objid = {LOCK}", "1", "0"),
    # Settings a function made are not asked about (pg_settings would cost ~10 times the
    # rest of the check, and lists no custom placeholder): RESET ALL clears them, so the
    # caller loses them (as on any other server) and nobody else sees them. None: the caller
    # may see either.
    "set_config_unreported": ("perform set_config('work_mem', '7MB', false);",
                              "select (current_setting('work_mem') = '7MB')::text", None, "false"),
    "set_config_custom": ("perform set_config('rs.secret', 'mine', false);",
                          "select coalesce(current_setting('rs.secret', true), '')", None, ""),
    "temp_table": ("create temp table rs_tmp (a int); insert into rs_tmp values (1);",
                   "select (to_regclass('pg_temp.rs_tmp') is not null)::text", "true", "false"),
    "listen": ("listen rs_channel;",
               "select count(*)::text from pg_listening_channels() c where c = 'rs_channel'", "1", "0"),
    "sql_prepare": ("execute 'prepare rs_stmt as select 1';",
                    "select count(*)::text from pg_prepared_statements where name = 'rs_stmt'", "1", "0"),
    "set_role": ("set role rs_limited;", "select current_user::text", "rs_limited", USER),
}


@pytest.fixture(scope="module")
def rs_db(pg):
    with pg.admin(TEST_DB) as c:
        c.execute(f"drop role if exists {USER}")
        c.execute("drop role if exists rs_limited")
        c.execute(f"create role {USER} login")
        c.execute("create role rs_limited nologin")
        c.execute(f"grant rs_limited to {USER}")
        c.execute("create or replace function public.rs_harmless(x int) returns int language plpgsql "
                  "as $$ begin return x + 1; end $$")
        for name, (body, *_rest) in STATEFUL.items():
            c.execute(f"create or replace function public.rs_{name}() returns int language plpgsql "
                      f"as $$ begin {body} return 1; end $$")
    yield
    with pg.admin(TEST_DB) as c:
        c.execute("drop function if exists public.rs_harmless(int)")
        for name in STATEFUL:
            c.execute(f"drop function if exists public.rs_{name}()")
        c.execute(f"drop role if exists {USER}")
        c.execute("drop role if exists rs_limited")


@pytest.fixture(scope="module")
def rs(pg, rs_db, tmp_path_factory):
    t = Tusk(tmp_path_factory.mktemp("release-state"), pg.port, pools=[txn_pool(SIZE)], pool_wait_timeout=WAIT)
    t.start()
    yield t
    problems = t.stop()
    if problems:
        pytest.fail("\n".join(problems) + f"\n--- {t.log_path}\n{t.log_tail()}", pytrace=False)


def client(rs):
    return connect(rs.port, user=USER)


def servers(pg):
    """Backend pids of the pool's servers."""
    with pg.admin(TEST_DB) as c:
        return {r[0] for r in c.execute("select pid from pg_stat_activity where usename = %s", (USER,))}


def quiet_pool(pg, rs):
    """No client of an earlier case still holds a server: every server idle in the pool."""
    deadline = time.monotonic() + 10 * SLOW
    while time.monotonic() < deadline:
        with pg.admin(TEST_DB) as c:
            busy = c.execute("select count(*) from pg_stat_activity where usename = %s and state <> 'idle'",
                             (USER,)).fetchone()[0]
        if busy == 0:
            return
        time.sleep(0.05)


def others_see(rs, sql, n=6):
    """n clients at once (more than the pool's servers), each looking twice: what they saw,
    and the server pids they ran on."""
    seen, pids, errors = [], set(), []
    barrier = threading.Barrier(n)

    def one():
        try:
            with client(rs) as c:
                barrier.wait(timeout=10 * SLOW)
                for _ in range(2):
                    row = c.execute(f"select ({sql}), pg_backend_pid(), pg_sleep(0.05)", prepare=False).fetchone()
                    seen.append(row[0])
                    pids.add(row[1])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=one) for _ in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60 * SLOW)
    assert not errors, errors
    return seen, pids


# ---- item 4: statements that only release state pin nobody ----

RELEASING = {
    "asyncpg_release": "SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;",
    "unlock_all": "select pg_advisory_unlock_all()",
    "unlock_one": f"select pg_advisory_unlock({LOCK})",
    "unlock_shared": f"select pg_advisory_unlock_shared({LOCK}, 2)",
    "discard_all": "DISCARD ALL",
    "discard_others": "DISCARD PLANS; DISCARD SEQUENCES; DISCARD TEMP",
    "deallocate_all": "DEALLOCATE ALL",
}


@pytest.mark.parametrize("what", RELEASING)
def test_releasing_session_state_does_not_pin(pg, rs, what):
    """A client that ran only state-releasing statements keeps no server: with it still
    connected and idle, SIZE other clients (each holding its server in a transaction) all get
    one. Before the fix pg_advisory_unlock* pinned, and the last one timed out with 53300."""
    quiet_pool(pg, rs)
    with client(rs) as a:
        a.execute(RELEASING[what], prepare=False)
        others = [client(rs) for _ in range(SIZE)]
        try:
            for o in others:
                o.autocommit = False
                o.execute("select 1")  # holds a server until commit
            for o in others:
                o.commit()
        finally:
            for o in others:
                o.close()
        assert a.execute("select 1", prepare=False).fetchone() == (1,)


def test_asyncpg_pool_larger_than_size_releases(pg, rs):
    """asyncpg.Pool of 4 * SIZE connections: every connection acquired, released (its reset
    query runs), then as many jobs at once; all must finish (PgBouncer handles this too).
    Before the fix every release pinned its connection and the jobs timed out with 53300."""
    if DIRECT:
        pytest.skip("nothing to pin straight to PostgreSQL")
    quiet_pool(pg, rs)
    n = 4 * SIZE

    async def main():
        pool = await asyncpg.create_pool(host="127.0.0.1", port=rs.port, user=USER, database=TEST_DB,
                                         min_size=n, max_size=n, timeout=30 * SLOW)
        try:
            c0 = await pool.acquire()
            reset = c0._get_reset_query()
            await pool.release(c0)
            held = [await pool.acquire() for _ in range(n)]
            await asyncio.gather(*[pool.release(c) for c in held])

            async def job(i):
                async with pool.acquire() as c:
                    return await c.fetchval("select $1::int + 0 from pg_sleep(0.02)", i)
            got = await asyncio.wait_for(asyncio.gather(*[job(i) for i in range(n)]), 30 * SLOW)
            # And the pool's connections are not pinned now: several rounds go through.
            for _ in range(3):
                got2 = await asyncio.wait_for(asyncio.gather(*[job(i) for i in range(n)]), 30 * SLOW)
                assert got2 == list(range(n))
            return reset, got
        finally:
            await asyncio.wait_for(pool.close(), 30 * SLOW)

    reset, got = asyncio.run(main())
    assert "pg_advisory_unlock_all()" in reset and "RESET ALL" in reset, reset
    assert got == list(range(n))
    assert "pg_advisory_unlock_all" not in "".join(l for l in rs.log_text().splitlines() if "pinned" in l)


def test_asyncpg_pool_release_keeps_the_server_settings_it_connected_with(pg, rs):
    """asyncpg sends its server_settings in the startup packet and releases every connection
    with RESET ALL, which on PostgreSQL direct goes back to those startup values. Through tusk
    each release sent them to the server's defaults before (search_path "$user", public; no
    statement_timeout): every acquire after the first ran in the wrong schema. Now each sees
    what it connected with, after its own SETs of the three."""
    async def main():
        pool = await asyncpg.create_pool(host="127.0.0.1", port=rs.port, user=USER, database=TEST_DB,
                                         min_size=2, max_size=2, timeout=30 * SLOW,
                                         server_settings={"search_path": "rs_app, public",
                                                          "statement_timeout": "4321",
                                                          "application_name": "rs-app"})
        try:
            seen = []
            for _ in range(6):
                async with pool.acquire() as c:
                    seen.append(tuple(await c.fetchrow(
                        "select current_setting('search_path'), current_setting('statement_timeout'), "
                        "current_setting('application_name')")))
                    await c.execute("set search_path = public; set statement_timeout = 1000; "
                                    "set application_name = 'moved'")
            return seen
        finally:
            await asyncio.wait_for(pool.close(), 30 * SLOW)

    assert asyncio.run(main()) == [("rs_app, public", "4321ms", "rs-app")] * 6


def direct_and_through_tusk(pg, tmp_path, pools, steps):
    """steps(port) on PostgreSQL direct, then through a tusk with pools: both results."""
    want = steps(pg.port)
    t = Tusk(tmp_path, pg.port, pools=pools)
    t.start()
    try:
        got = steps(t.port)
    finally:
        problems = t.stop()
    assert not problems, problems
    return want, got


def test_reset_in_session_pooling_goes_back_to_the_startup_values(pg, rs_db, tmp_path):
    """Session pooling: the server a client keeps got the client's startup values as SETs, so
    its RESET went to the server's defaults, and the client went on with them (PgBouncer
    does too). tusk makes that server the client's session again after such a transaction,
    before its next request: RESET, RESET ALL and DISCARD ALL (alone or in a transaction that
    commits) give the startup values back, as on PostgreSQL direct, in a Query or an unnamed
    Parse, and the ParameterStatus the client was last told is its startup application_name.
    (Named statements: the test after this one.)"""
    def steps(port):
        seen = []
        with connect(port, user=USER, application_name="sess-a0", prepare_threshold=None,
                     options="-c work_mem=3MB -c search_path=rs_app,public") as a:
            for reset in ("reset all", "reset work_mem; reset search_path; reset application_name",
                          "begin; reset all; rollback", "begin; reset all; commit", "reset work_mem",
                          "set application_name to default", "discard all"):
                for unnamed in (False, True):  # a Query; Parse, Bind, Execute, Sync
                    a.execute("set work_mem = '17MB'; set search_path = public; set application_name = 'moved'")
                    for stmt in reset.split("; "):
                        a.execute(stmt, [] if unnamed else None)  # with parameters: extended
                    seen.append((reset, unnamed, a.execute(
                        "select current_setting('work_mem'), current_setting('search_path'), "
                        "current_setting('application_name')").fetchone(),
                        a.info.parameter_status("application_name")))
        return seen

    want, got = direct_and_through_tusk(pg, tmp_path, [txn_pool(2, mode="session")], steps)
    assert want[0][2] == ("3MB", "rs_app,public", "sess-a0")  # PostgreSQL direct
    assert got == want


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_reset_tells_the_startup_value_under_the_servers_name(pg, rs_db, tmp_path, mode):
    """A client that gave TimeZone, DateStyle and IntervalStyle at startup (as options, or as
    libpq's PGTZ/PGDATESTYLE do, in lower case): after RESET, RESET ALL or DISCARD ALL the
    driver must know the startup values again under the names PostgreSQL reports them with,
    for it reads dates and timestamps by them. tusk told them under the client's spelling
    ("timezone"), so libpq kept the server's default it had passed on: psycopg then took the
    server's SQL-style dates for ISO ones and failed to read them, and would have given
    timestamps the server default's zone."""
    def steps(port):
        seen = []
        with connect(port, user=USER, prepare_threshold=None,
                     options="-c timezone=Asia/Tokyo -c datestyle=SQL,DMY -c intervalstyle=postgres_verbose") as a:
            a.autocommit = True
            for reset in ("reset timezone; reset datestyle; reset intervalstyle", "reset all", "discard all",
                          "begin; reset all; commit"):
                a.execute("set timezone = 'America/Denver'; set datestyle = 'ISO, MDY'; set intervalstyle = iso_8601")
                for stmt in reset.split("; "):
                    a.execute(stmt)
                row = a.execute("select '2026-01-02'::date, current_setting('TimeZone'), "
                                "current_setting('DateStyle')").fetchone()
                # (binary: psycopg reads timestamptz as text in ISO style only)
                ts = a.execute("select '2026-01-02 03:04:05+00'::timestamptz", binary=True).fetchone()[0]
                seen.append((reset, row[0], ts.isoformat(), str(ts.tzinfo), row[1], row[2],
                             a.info.parameter_status("TimeZone"), a.info.parameter_status("DateStyle"),
                             a.info.parameter_status("IntervalStyle")))
        return seen

    want, got = direct_and_through_tusk(pg, tmp_path, [txn_pool(2, mode=mode)], steps)
    assert want[0][1:] == (date(2026, 1, 2), "2026-01-02T12:04:05+09:00", "Asia/Tokyo", "Asia/Tokyo", "SQL, DMY",
                           "Asia/Tokyo", "SQL, DMY", "postgres_verbose")  # PostgreSQL direct
    assert got == want


LATIN1_DB = "rs_latin1"


@pytest.fixture(scope="module")
def latin1_db(pg, rs_db):
    """A database whose defaults are not what its clients give at startup: LATIN1 (its default
    client_encoding), DateStyle 'SQL, DMY'."""
    with pg.admin() as c:
        c.execute(f"drop database if exists {LATIN1_DB}")
        c.execute(f"create database {LATIN1_DB} encoding 'LATIN1' lc_collate 'C' lc_ctype 'C' template template0")
        c.execute(f"alter database {LATIN1_DB} set datestyle = 'SQL, DMY'")
    yield LATIN1_DB
    with pg.admin() as c:
        c.execute(f"drop database if exists {LATIN1_DB} with (force)")


RESET_STEPS = ["set datestyle = 'German, DMY'", "reset all", "set datestyle = 'German, DMY'; set timezone = 'UTC'",
               "discard all", "set client_encoding = 'LATIN1'", "reset client_encoding", "begin",
               "set datestyle = 'Postgres, YMD'", "reset all", "select 1", "commit", "begin", "reset datestyle",
               "rollback", "reset all; set datestyle = 'Postgres, YMD'", "reset all; select 1/0", "begin", "reset all",
               "set local datestyle = 'German, DMY'", "commit", "reset all"]


def told_at_each_reset(port):
    """A raw client that gives client_encoding, DateStyle and TimeZone at startup runs
    RESET_STEPS; each step followed by an empty query (what tusk tells between a RESET inside a
    transaction and the next statement counts for the RESET). -> its parameters after the
    login, and per step: [(name, value) told], its parameters after it."""
    c = pgwire.RawClient("127.0.0.1", port, timeout=10 * SLOW)
    try:
        params = {}
        for kind, body in c.startup(USER, LATIN1_DB, client_encoding="UTF8", DateStyle="ISO, MDY",
                                    TimeZone="Asia/Tokyo"):
            if kind == b"S":
                name, value = body.split(b"\0")[:2]
                params[name.decode()] = value.decode()
        login, steps = dict(params), []
        for sql in RESET_STEPS:
            told = []
            for q in (sql, ";"):
                c.send(pgwire.query_message(q))
                for kind, body in c.read_until_ready():
                    if kind == b"S":
                        name, value = (x.decode() for x in body.split(b"\0")[:2])
                        told.append((name, value))
                        params[name] = value
            steps.append((sql, told, dict(params)))
        return login, steps
    finally:
        c.close()


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_a_reset_never_tells_the_servers_default_of_a_startup_setting(pg, latin1_db, tmp_path, mode):
    """A RESET of a setting the startup packet gave goes back to the startup value on
    PostgreSQL direct, which tells that value (or nothing, when it had it). tusk's server got
    the startup values as SETs, so its RESET went to the database's defaults, and tusk passed
    the server's ParameterStatus on before telling the startup value: the client was told, for
    a moment, client_encoding LATIN1 and DateStyle 'SQL, DMY', which pgjdbc takes as fatal
    (the test after this one). Now no value is told that the client does not have on
    PostgreSQL direct before or after that step, and the values after each step are direct's.
    A SET LOCAL after the RESET is the client's and is told. (Full DateStyles only: a partial one such as 'ISO' is completed from the server's
    default, the database's 'SQL, DMY', where PostgreSQL direct completes a startup value
    from postgresql.conf's: docs/pooling.md.)"""
    want, got = direct_and_through_tusk(pg, tmp_path, [txn_pool(2, mode=mode)], told_at_each_reset)
    assert want[0] == got[0]
    before = got[0]
    for (sql, told, after), (_, _, direct_after) in zip(got[1], want[1]):
        for name, value in told:
            assert value in (before.get(name), after.get(name)), (sql, name, value, before, after)
        assert after == direct_after, sql
        before = after


def jdbc_reset_to_startup(port):
    """tests/integration/jdbc/ResetToStartup.java against port: its output lines."""
    return harness.jdbc_program(REPO / "tests" / "integration" / "jdbc" / "ResetToStartup.java", "127.0.0.1", port,
                                LATIN1_DB, USER, timeout=120 * SLOW)


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_pgjdbc_keeps_its_connection_through_reset_all_and_discard_all(pg, latin1_db, tmp_path, mode):
    """pgjdbc on a LATIN1 database: RESET ALL, DISCARD ALL, RESET client_encoding (as a
    Statement, as a PreparedStatement past prepareThreshold, inside a transaction). Through
    tusk pgjdbc was told client_encoding LATIN1 and closed its connection ("The server's
    client_encoding parameter was changed to LATIN1"); now it answers as direct."""
    want, got = direct_and_through_tusk(pg, tmp_path, [txn_pool(2, mode=mode)], jdbc_reset_to_startup)
    assert want[0] == "RESET ALL UTF8 2026-01-02" and len(want) == 10, want
    assert got == want


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_reset_inside_a_transaction_goes_back_to_the_startup_values_at_once(pg, rs_db, tmp_path, mode):
    """A RESET (RESET ALL, DISCARD ALL is refused in a block) inside a transaction: the
    statements after it in the same transaction see the startup values on PostgreSQL direct.
    The server got them as SETs, so its RESET went to its defaults, and until the commit the
    client saw those (the wrong schema for the rest of the transaction). tusk now sets them
    back before the client's next statement, and tells it the startup application_name; a
    rollback to a savepoint before the RESET, or of the whole transaction, undoes both. Also
    a RESET run as a Parse/Bind/Execute, and a SET after the RESET that stays."""
    def steps(port):
        seen = []
        with connect(port, user=USER, application_name="sess-t0", prepare_threshold=None,
                     options="-c work_mem=3MB -c search_path=rs_app,public") as a:
            show = ("select current_setting('work_mem'), current_setting('search_path'), "
                    "current_setting('application_name')")

            def look(*what):
                seen.append((*what, a.execute(show).fetchone(), a.info.parameter_status("application_name")))

            for reset in ("reset all", "reset search_path", "reset application_name", "set work_mem to default"):
                for unnamed in (False, True):
                    a.execute("set work_mem = '17MB'; set search_path = public; set application_name = 'moved'")
                    a.execute("begin")
                    a.execute(reset, [] if unnamed else None)
                    look(reset, unnamed, "after")
                    a.execute("select 1")
                    look(reset, unnamed, "again")
                    a.execute("commit")
                    look(reset, unnamed, "committed")
            # Undone by a rollback to a savepoint made before it, and by a rollback.
            a.execute("set work_mem = '17MB'; set search_path = public")
            a.execute("begin")
            a.execute("savepoint s")
            a.execute("reset all")
            look("savepoint", "reset")
            a.execute("rollback to savepoint s")
            look("savepoint", "rolled back to")
            a.execute("reset search_path")
            a.execute("set search_path = rs_app")
            look("savepoint", "set after")
            a.execute("rollback")
            look("rollback")
        return seen

    want, got = direct_and_through_tusk(pg, tmp_path, [txn_pool(2, mode=mode)], steps)
    assert want[0][3] == ("3MB", "rs_app,public", "sess-t0")  # PostgreSQL direct
    assert got == want


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_reset_prepared_as_a_named_statement(pg, rs_db, tmp_path, mode):
    """The same through named statements (psycopg's prepare=True: Parse "_pg3_N" once, then
    Bind/Execute of it at each run; drivers do so after N runs, psycopg after 5, pgjdbc after
    5). The RESET happens when the statement runs, not when it is parsed: each run after a SET
    goes back to the startup values, one inside a transaction that rolls back does not, and a
    statement closed (psycopg evicts past prepared_max) runs nothing. Before, session pooling
    kept nothing per statement, and the client went on with the server's defaults."""
    def steps(port):
        seen = []
        with connect(port, user=USER, application_name="sess-n0", prepare_threshold=0,
                     options="-c work_mem=3MB -c search_path=rs_app,public") as a:
            show = ("select current_setting('work_mem'), current_setting('search_path'), "
                    "current_setting('application_name')")

            def moved():
                a.execute("set work_mem = '17MB'; set search_path = public; set application_name = 'moved'",
                          prepare=False)

            def look(*what):
                seen.append((*what, a.execute(show, prepare=False).fetchone(),
                             a.info.parameter_status("application_name")))

            for run in range(2):  # the second run Binds the statements the first parsed
                for reset in ("reset all", "reset search_path", "set application_name to default",
                              "reset work_mem", "begin; reset all; rollback", "begin; reset all; commit"):
                    moved()
                    for stmt in reset.split("; "):
                        a.execute(stmt, prepare=stmt.startswith("reset") or "default" in stmt)
                    look(run, reset)
            # psycopg evicts past prepared_max (a Close) and parses again when needed.
            a.prepared_max = 2
            for reset in ("reset work_mem", "reset search_path", "reset application_name", "reset work_mem"):
                moved()
                a.execute(reset, prepare=True)
                look("evicting", reset)
        # The protocol's own messages (pgjdbc and asyncpg send these): parsed now, run later
        # (the SETs between them are what it resets); a Close, after which the name runs
        # nothing; a name parsed again for another statement; a RESET pipelined after a SET.
        w = pgwire.RawClient("127.0.0.1", port, timeout=10 * SLOW)
        try:
            w.startup(USER, TEST_DB, application_name="sess-w0", options="-c work_mem=3MB")
            wire = functools.partial(WireClient.exchange, w)
            move = "set work_mem = '17MB'; set application_name = 'moved'"
            show = "select current_setting('work_mem'), current_setting('application_name')"

            def ok(r):
                assert not r["errors"], r["errors"]
                return r["rows"]

            ok(wire(parse_msg("later", "reset all"), sync_msg()))
            for _ in range(2):
                assert w.simple_query(move)[1] == []
                seen.append(("wire before", ok(wire(parse_msg("", show), bind_msg(""), execute_msg(), sync_msg()))))
                ok(wire(bind_msg("later"), execute_msg(), sync_msg()))
                seen.append(("wire ran", ok(wire(parse_msg("", show), bind_msg(""), execute_msg(), sync_msg()))))
            assert w.simple_query(move)[1] == []
            ok(wire(close_msg(b"S", "later"),
                    parse_msg("later", "select 1"), bind_msg("later"), execute_msg(), sync_msg()))
            seen.append(("wire closed", ok(wire(parse_msg("", show), bind_msg(""), execute_msg(), sync_msg()))))
            # One Sync for all: RESET in the middle of a pipeline, then a statement after it.
            ok(wire(close_msg(b"S", "later"), parse_msg("later", "reset work_mem"), sync_msg()))
            ok(wire(parse_msg("", "set work_mem = '18MB'"), bind_msg(""), execute_msg(),
                    bind_msg("later"), execute_msg(), sync_msg()))
            seen.append(("wire pipelined", ok(wire(parse_msg("", show), bind_msg(""), execute_msg(), sync_msg()))))
        finally:
            WireClient.terminate(w)
        return seen

    want, got = direct_and_through_tusk(pg, tmp_path, [txn_pool(2, mode=mode)], steps)
    assert want[0][2] == ("3MB", "rs_app,public", "sess-n0")  # PostgreSQL direct
    assert got == want


def test_set_prepared_as_a_named_statement_counts_at_each_run(pg, rs_db, tmp_path):
    """Transaction pooling carries a client's SETs to whichever server it gets next. A SET
    prepared as a named statement (psycopg's prepare=True; pgjdbc after 5 runs) changes the
    session at each run, not when parsed: run again after another SET, its value is the
    client's again. Before, only its Parse counted: tusk carried the other SET's value while
    the server had the statement's, and the client's next server (here the same one, reset
    by another client in between) got the wrong value."""
    def steps(port):
        with connect(port, user=USER, prepare_threshold=0) as a, connect(port, user=USER) as b:
            show = "select current_setting('work_mem'), current_setting('search_path')"
            seen = []
            for _ in range(2):
                a.execute("set work_mem = '5MB'", prepare=True)
                a.execute("set search_path = rs_app, public", prepare=True)
                a.execute("set work_mem = '6MB'; set search_path = public", prepare=False)
                a.execute("set work_mem = '5MB'", prepare=True)
                a.execute("set search_path = rs_app, public", prepare=True)
                seen.append(("b", b.execute(show, prepare=False).fetchone()))
                seen.append(("a", a.execute(show, prepare=False).fetchone()))
                a.execute("reset work_mem; reset search_path", prepare=False)
        return seen

    want, got = direct_and_through_tusk(pg, tmp_path, [txn_pool(1)], steps)
    assert want[1] == ("a", ("5MB", "rs_app, public"))  # PostgreSQL direct
    assert got == want


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_unnamed_statement_bound_again_runs_its_set_again(pg, rs_db, tmp_path, mode):
    """The unnamed statement can be bound more than once after one Parse (libpq's
    PQprepare(conn, "", ...) then PQexecPrepared(conn, "", ...) again; any Bind before the next
    Parse of "" or the next Query), and each run SETs or RESETs again. Before, only its Parse
    counted: a `SET work_mem = '5MB'` bound again after a named `SET work_mem = '6MB'` left tusk
    carrying 6MB while the server had 5MB (the client's next server got 6MB), and a `RESET
    search_path` bound again after a SET went to the server's default instead of the startup
    value. Within one Sync in both modes; across Syncs in session pooling too, where the client
    keeps its server and so its unnamed statement (in transaction pooling the next transaction
    may run on another server: the unnamed statement does not outlive its Sync there, as in
    PgBouncer), also after tusk set the startup values back on that server."""
    show = "select current_setting('work_mem'), current_setting('search_path')"

    def steps(port):
        seen = []
        a = WireClient(port, user=USER, options="-c search_path=rs_app,public")
        try:
            def wire(*msgs):
                r = a.exchange(*msgs, sync_msg())
                assert not r["errors"], (seen, r)
                return r["rows"]

            with connect(port, user=USER) as b:
                for first, other in (("set work_mem = '5MB'", "set work_mem = '6MB'"),
                                     ("reset search_path", "set search_path = public")):
                    again = [parse_msg("other", other), bind_msg("other"), execute_msg(), close_msg(b"S", "other"),
                             bind_msg(""), execute_msg()]  # the unnamed statement again
                    groups = [[[parse_msg("", first), bind_msg(""), execute_msg(), *again]]]  # one Sync
                    if mode == "session":
                        groups.append([[parse_msg("", first), bind_msg(""), execute_msg()], again])
                    for group in groups:
                        for msgs in group:
                            wire(*msgs)
                        seen.append(("b", b.execute(show, prepare=False).fetchone()))
                        seen.append(("a", wire(parse_msg("look", show), bind_msg("look"), execute_msg(),
                                               close_msg(b"S", "look"))))
                        a.exchange(pgwire.message(b"Q", b"reset all\0"))
        finally:
            a.terminate()
        return seen

    want, got = direct_and_through_tusk(pg, tmp_path, [txn_pool(1 if mode == "transaction" else 2, mode=mode)],
                                        steps)
    assert want[1] == ("a", [["5MB", "rs_app,public"]]) and want[-1] == ("a", [["4MB", "rs_app,public"]])
    assert got == want


def test_asyncpg_release_drops_a_pinned_clients_lock(pg, rs):
    """The leak side of item 4: a pool connection that took a session lock (pinned) and is
    released by asyncpg.Pool holds no lock afterwards: a stranger gets it."""
    quiet_pool(pg, rs)

    async def main():
        pool = await asyncpg.create_pool(host="127.0.0.1", port=rs.port, user=USER, database=TEST_DB,
                                         min_size=1, max_size=1, timeout=30 * SLOW)
        try:
            async with pool.acquire() as c:
                assert await c.fetchval("select pg_try_advisory_lock($1)", LOCK + 1)
            with client(rs) as b:
                got = b.execute("select pg_try_advisory_lock(%s)", (LOCK + 1,), prepare=False).fetchone()[0]
                b.execute("select pg_advisory_unlock_all()", prepare=False)
            return got
        finally:
            await asyncio.wait_for(pool.close(), 30 * SLOW)

    assert asyncio.run(main()) is True


# ---- item 7: what a function leaves stays its caller's, and only its caller's ----

def test_function_advisory_lock_stays_with_its_client(pg, rs):
    """A transaction called a function that took pg_advisory_lock(81): the lock stays the
    caller's while it is connected (as straight to PostgreSQL), so a stranger's
    pg_try_advisory_lock(81) fails; after the caller leaves, the stranger gets it. Before the
    fix tusk ran DISCARD ALL after that transaction and the stranger got the lock at once."""
    quiet_pool(pg, rs)
    with client(rs) as a:
        assert a.execute("select rs_advisory_lock()", prepare=False).fetchone() == (1,)
        a.execute("select 1", prepare=False)  # a later transaction of A's
        with client(rs) as b:
            assert b.execute("select pg_try_advisory_lock(%s)", (LOCK,), prepare=False).fetchone() == (False,)
        assert a.execute(STATEFUL["advisory_lock"][1], prepare=False).fetchone() == ("1",)
        assert a.execute("select pg_advisory_unlock(%s)", (LOCK,), prepare=False).fetchone() == (True,)
        # Unlocking inside the pinned session releases it for others too.
        with client(rs) as b:
            assert b.execute("select pg_try_advisory_xact_lock(%s)", (LOCK,), prepare=False).fetchone() == (True,)
        a.execute("select rs_advisory_lock()", prepare=False)
    # A left: its server is reset (off A's path, so a moment later) and the lock is gone.
    with client(rs) as b:
        wait_until(lambda: b.execute("select pg_try_advisory_xact_lock(%s)", (LOCK,), prepare=False).fetchone()[0],
                   10 * SLOW, what="the lock of a client that left to be released")


@pytest.mark.parametrize("what", STATEFUL)
def test_state_left_by_a_function_stays_with_its_caller(pg, rs, what):
    """A function that leaves state in the session (a temp table, LISTEN, a PREPARE, SET ROLE, a
    session lock): its caller keeps it across its later transactions (before the fix DISCARD
    ALL wiped it), and no other client ever sees it, while the caller is connected or after it
    left. Settings (set_config(..., false)) are reset, never passed on."""
    _, probe, mine, theirs = STATEFUL[what]
    quiet_pool(pg, rs)
    with client(rs) as a:
        a.execute(f"select rs_{what}()", prepare=False)
        for _ in range(3):
            got = a.execute(probe, prepare=False).fetchone()[0]
            assert got == mine or (mine is None and got == theirs), f"{what}: the caller lost its state: {got}"
        seen, _ = others_see(rs, probe)
        assert set(seen) == {theirs}, f"{what}: another client saw {seen}"
        if what == "advisory_lock":
            a.execute("select pg_advisory_unlock_all()", prepare=False)
    seen, pids = others_see(rs, probe)
    assert set(seen) == {theirs}, f"{what}: after the caller left, another client saw {seen}"


def test_function_in_explicit_transaction_keeps_its_lock(pg, rs):
    """The same through BEGIN ... COMMIT and the extended protocol."""
    quiet_pool(pg, rs)
    with client(rs) as a:
        with a.transaction():
            a.execute("select rs_advisory_lock()")
            a.execute("select 1")
        with client(rs) as b:
            assert b.execute("select pg_try_advisory_lock(%s)", (LOCK,)).fetchone() == (False,)
        a.execute("select pg_advisory_unlock_all()")


def test_harmless_function_is_not_followed_by_a_reset(pg, rs):
    """A function that leaves nothing: its server goes back to the pool after one check query
    and RESET ALL, not DISCARD ALL (which also threw away every statement tusk had prepared
    there), and its caller is not pinned."""
    if DIRECT:
        pytest.skip("tusk's own queries")
    quiet_pool(pg, rs)
    with client(rs) as a:
        pid = a.execute("select pg_backend_pid()", prepare=False).fetchone()[0]
        assert a.execute("select rs_harmless(1)", prepare=False).fetchone() == (2,)
        time.sleep(0.2)
        with pg.admin(TEST_DB) as adm:
            last = adm.execute("select query from pg_stat_activity where pid = %s", (pid,)).fetchone()[0]
        assert "DISCARD" not in last.upper(), f"server {pid} was reset after a harmless function: {last!r}"
        # Not pinned: SIZE other clients each get a server while A stays connected.
        others = [client(rs) for _ in range(SIZE)]
        try:
            for o in others:
                o.autocommit = False
                o.execute("select 1")
            for o in others:
                o.commit()
        finally:
            for o in others:
                o.close()
    assert not [l for l in rs.log_text().splitlines() if "pinned" in l and "rs_harmless" in l]


def test_function_changing_a_carried_setting_reaches_no_other_client(pg, rs):
    """A client that carries `SET statement_timeout` calls a function that changes that very
    setting: the check does not ask about carried names, so the server must not reach another
    client carrying the same SET without RESET ALL first."""
    quiet_pool(pg, rs)
    with pg.admin(TEST_DB) as c:
        c.execute("create or replace function public.rs_change_timeout() returns int language plpgsql "
                  "as $$ begin perform set_config('statement_timeout', '4321ms', false); return 1; end $$")
    try:
        with client(rs) as a:
            a.execute("set statement_timeout = '1min'", prepare=False)
            a.execute("select rs_change_timeout()", prepare=False)
            conns = [client(rs) for _ in range(4)]
            try:
                for o in conns:
                    o.execute("set statement_timeout = '1min'", prepare=False)
                for _ in range(3):
                    for o in conns:
                        got = o.execute("select current_setting('statement_timeout')", prepare=False).fetchone()[0]
                        assert got == "1min", f"another client with the same SET saw {got}"
            finally:
                for o in conns:
                    o.close()
    finally:
        with pg.admin(TEST_DB) as c:
            c.execute("drop function if exists public.rs_change_timeout()")


def test_requests_sent_during_the_check_wait_for_it(pg, rs):
    """A client that sends its next requests before the check answered (a pipeline, and a
    query right behind the function's): they run after it, on the pinned server when the
    function left a lock, elsewhere otherwise; nothing is lost or reordered."""
    quiet_pool(pg, rs)
    with client(rs) as a:
        with a.pipeline():
            c1 = a.execute("select rs_advisory_lock()")
            c2 = a.execute(STATEFUL["advisory_lock"][1])
            c3 = a.execute("select rs_harmless(41)")
        assert c1.fetchone() == (1,) and c2.fetchone() == ("1",) and c3.fetchone() == (42,)
        assert a.execute(STATEFUL["advisory_lock"][1]).fetchone() == ("1",)
        a.execute("select pg_advisory_unlock_all()")
    with client(rs) as b:
        for i in range(20):
            with b.pipeline():
                x = b.execute("select rs_harmless(%s)", (i,))
                y = b.execute("select %s::int", (i,))
            assert x.fetchone() == (i + 1,) and y.fetchone() == (i,)


def test_client_leaving_during_the_check(pg, rs):
    """Clients that leave right after a function's answer (while the check may be in flight)
    leave no server behind and no state: the pool keeps serving, and nobody sees a lock."""
    quiet_pool(pg, rs)
    for i in range(30):
        c = client(rs)
        c.execute("select rs_advisory_lock()" if i % 2 else "select rs_harmless(1)", prepare=False)
        c.close()
    with client(rs) as b:
        wait_until(lambda: b.execute("select pg_try_advisory_xact_lock(%s)", (LOCK,), prepare=False).fetchone()[0],
                   10 * SLOW, what="the locks of clients that left to be released")
    seen, _ = others_see(rs, STATEFUL["advisory_lock"][1])
    assert set(seen) == {"0"}


def test_a_check_that_is_never_answered_ends_at_server_reset_timeout(pg, rs_db, tusk):
    """The check's question on a server that never answers (a relay holds it back): the client,
    whose next request waits for the check, is not held longer than server_reset_timeout; that
    server is closed and the request runs on another (one server: its slot came back)."""
    relay = Relay(pg.port)
    relay.hold = b"pg_listening_channels"  # in the check's text, sent with its first Parse on a server
    try:
        t = tusk(services={"main": {"hosts": [f"127.0.0.1:{relay.port}"]}},
                 pools=[txn_pool(1)], server_reset_timeout="1s", pool_wait_timeout=WAIT)
        with connect(t.port, user=USER) as a:
            assert a.execute("select rs_harmless(1)").fetchone() == (2,)
            assert relay.held.wait(10 * SLOW), "the check was never asked"
            relay.hold = None
            started = time.monotonic()
            assert a.execute("select 3").fetchone() == (3,)
            waited = time.monotonic() - started
        assert waited < 1 + 3 * SLOW, waited
        t.wait_log("server connection failed: timed out waiting for the server")
    finally:
        relay.close()


def test_named_prepared_statement_marks_every_transaction_that_runs_it(pg, rs):
    """A client's named prepared statement that calls a function is judged at every run, not
    only in the transaction of its Parse. A prepares `select rs_advisory_lock()` (psycopg,
    prepare=True: Parse, Bind, Execute) in a first transaction that gives the lock back before
    it ends (nothing left: A is not pinned), then runs it again (Bind, Execute only) in a second
    one that keeps the lock. Before the fix that second transaction was not marked: the
    server went back to the pool holding A's lock and other clients ran on it."""
    probe = STATEFUL["advisory_lock"][1]
    quiet_pool(pg, rs)
    with client(rs) as a:
        with a.transaction():
            assert a.execute("select rs_advisory_lock()", prepare=True).fetchone() == (1,)
            a.execute("select pg_advisory_unlock(%s)", (LOCK,), prepare=False)
        assert a.execute("select rs_advisory_lock()", prepare=True).fetchone() == (1,)
        assert a.execute(probe, prepare=False).fetchone() == ("1",), "the caller lost its lock"
        with client(rs) as b:
            assert b.execute("select pg_try_advisory_xact_lock(%s)", (LOCK,),
                             prepare=False).fetchone() == (False,)
        seen, _ = others_see(rs, probe)
        assert set(seen) == {"0"}, f"another client ran on the server holding A's lock: {seen}"
        a.execute("select pg_advisory_unlock_all()", prepare=False)
    seen, _ = others_see(rs, probe)
    assert set(seen) == {"0"}, f"after the caller left, another client saw {seen}"


def test_asyncpg_statement_prepared_earlier_marks_its_run(pg, rs):
    """The same through asyncpg: prepare() (Parse, Describe, Sync: a transaction of its own
    that runs nothing), then the statement's fetchval() in a later transaction (Bind, Execute)
    takes the lock. Before the fix only the Parse's transaction was judged."""
    probe = STATEFUL["advisory_lock"][1]
    quiet_pool(pg, rs)

    async def run():
        a = await asyncpg.connect(host="127.0.0.1", port=rs.port, user=USER, database=TEST_DB,
                                  statement_cache_size=0)
        try:
            stmt = await a.prepare("select rs_advisory_lock()")
            await a.execute("select 1")  # another transaction between
            assert await stmt.fetchval() == 1
            seen, _ = await asyncio.to_thread(others_see, rs, probe)
            assert set(seen) == {"0"}, f"another client ran on the server holding A's lock: {seen}"
            await a.execute("select pg_advisory_unlock_all()")
        finally:
            await a.close()

    asyncio.run(run())
