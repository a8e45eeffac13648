"""Named prepared statements across schema changes in transaction pooling (issue 27, items 1, 2
and 6), differential: every scenario runs the same steps against PostgreSQL direct and through
tusk, and the messages each client receives must be the same (statement names, table and type
OIDs and the numbers in messages aside: the two runs create their own tables and types).

PostgreSQL fixes a statement's result columns and parameter types when it is prepared; once a
schema change alters them, every use of the statement fails with 0A000 "cached plan must not
change result type" (a dropped type: XX000 "cache lookup failed for type N") until the client
prepares it again, which drivers do on that error. A fresh prepare never fails that way. tusk
shares one server-side statement between clients and prepares it lazily, so it must neither
run a newer copy under a client that was told the old shape (the driver would decode the new
rows with the old layout: wrong values, silently) nor give a fresh prepare the error of an old
copy."""

import asyncio
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import asyncpg
import pytest

from conftest import TEST_DB
from pgwire import parse_error_fields
from txn_util import (WireClient, bind_msg, close_msg, describe_msg, execute_msg, parse_msg, sync_msg,
                      txn_pool)

pytestmark = pytest.mark.tusk_only  # each test runs direct itself, for the comparison

T = "psc_t"
SQL = f"select * from {T} where id = $1"


def _fields(body):
    (n,) = struct.unpack("!H", body[:2])
    off, out = 2, []
    for _ in range(n):
        end = body.index(b"\0", off)
        name = body[off:end].decode()
        _table, _col, typ, typlen, typmod, fmt = struct.unpack("!IhIhih", body[end + 1:end + 19])
        out.append((name, typ if typ < 16384 else "user", typlen, typmod, fmt))
        off = end + 19
    return out


def normalize(msgs):
    """What a client received, without what differs between two runs of the same steps."""
    out = []
    for kind, body in msgs:
        if kind == b"E":
            f = parse_error_fields(body)
            # with the routine: drivers recognise this 0A000 by it (pgjdbc, asyncpg)
            out.append(("E", f.get("S"), f.get("C"), re.sub(r"\d+", "N", f.get("M", "")), f.get("R")))
        elif kind == b"T":
            out.append(("T", _fields(body)))
        elif kind == b"t":
            (n,) = struct.unpack("!H", body[:2])
            oids = struct.unpack(f"!{n}I", body[2:2 + 4 * n])
            out.append(("t", [o if o < 16384 else "user" for o in oids]))
        else:
            out.append((kind.decode(), body))
    return out


class Run:
    """One run of a scenario: clients by name, every message each received."""

    def __init__(self, port, pg):
        self.port, self.pg = port, pg
        self.clients, self.log = {}, []

    def client(self, name):
        if name not in self.clients:
            self.clients[name] = WireClient(self.port)
        return self.clients[name]

    def send(self, name, *msgs):
        w = self.client(name)
        w.send(b"".join(msgs))
        got = normalize(w.read_until_ready())
        self.log.append((name, got))
        return got

    def query(self, name, sql):
        return self.send(name, parse_msg("", sql), bind_msg(""), execute_msg(), sync_msg())

    def ddl(self, sql):
        self.pg.execute(sql, dbname=TEST_DB)

    def close(self):
        for w in self.clients.values():
            w.terminate()


def differential(pg, tusk, scenario, **tusk_kw):
    """Runs scenario(run) direct, then through tusk in transaction mode; returns both logs,
    after checking they are the same."""
    logs = []
    t = tusk(pools=[txn_pool(tusk_kw.pop("size", 1))], pool_wait_timeout="10s", **tusk_kw)
    for port in (pg.port, t.port):
        run = Run(port, pg)
        try:
            scenario(run)
        finally:
            run.close()
        logs.append(run.log)
    direct, pooled = logs
    for i, (d, p) in enumerate(zip(direct, pooled)):
        assert d == p, f"step {i}: direct {d}\n   through tusk {p}"
    assert len(direct) == len(pooled)
    return direct


def setup_table(run, cols="id int, a int", values="1, 10"):
    run.ddl(f"drop table if exists {T}")
    run.ddl(f"create table {T} ({cols}); insert into {T} values ({values}); "
            f"alter table {T} owner to tusk_trust")


def run_s1(run, who="c", describe_portal=False):
    msgs = [bind_msg("s1", (1,))] + ([describe_msg(b"P", "")] if describe_portal else []) + [execute_msg(),
                                                                                             sync_msg()]
    return run.send(who, *msgs)


CHANGES = {
    "add_column": f"alter table {T} add column c text default 'new'",
    "drop_column": f"alter table {T} drop column a",
    "int_to_bigint": f"alter table {T} alter column a type bigint",
    "int_to_text": f"alter table {T} alter column a type text",
}
ZERO_A = ("E", "ERROR", "0A000", "cached plan must not change result type", "RevalidateCachedQuery")


@pytest.mark.parametrize("change", sorted(CHANGES))
@pytest.mark.parametrize("how", ["describe_statement", "describe_portal"])
def test_told_result_changed_by_a_schema_change_gets_0a000_not_new_rows(pg, tusk, change, how):
    """Item 1. The client was told the result's columns (asyncpg: Describe of the statement;
    pgjdbc: Describe of the portal at the first run, never again): after the change each use
    fails with 0A000, also inside a transaction block, until it prepares again. tusk used to
    prepare again behind its back and send rows of the new shape (pgjdbc read a = 0, asyncpg
    failed to decode)."""

    def scenario(run):
        setup_table(run, "id int, a int, b text", "1, 10, 'bee'")
        if how == "describe_statement":
            run.send("c", parse_msg("s1", SQL), describe_msg(b"S", "s1"), sync_msg())
            run_s1(run)
        else:
            run.send("c", parse_msg("s1", SQL), bind_msg("s1", (1,)), describe_msg(b"P", ""), execute_msg(),
                     sync_msg())
        run_s1(run)
        run.ddl(CHANGES[change])
        assert run_s1(run)[0] == ZERO_A
        assert run_s1(run)[0] == ZERO_A
        run.query("c", "begin")
        assert run_s1(run)[0] == ZERO_A
        run.query("c", "rollback")
        # what drivers do on 0A000: prepare again, and run
        run.send("c", close_msg(b"S", "s1"), parse_msg("s1", SQL), describe_msg(b"S", "s1"), sync_msg())
        assert run_s1(run)[-1] == ("Z", b"I")

    differential(pg, tusk, scenario)


def test_another_clients_fresh_prepare_does_not_change_what_this_client_gets(pg, tusk):
    """Item 1, one server shared: after the change, another client prepares the same text
    (a fresh prepare: it gets the new columns). The first client, told the old ones, must still
    get 0A000, not the other client's new copy."""

    def scenario(run):
        setup_table(run)
        run.send("c", parse_msg("s1", SQL), describe_msg(b"S", "s1"), sync_msg())
        run_s1(run)
        run.ddl(CHANGES["add_column"])
        run.send("d", parse_msg("s1", SQL), describe_msg(b"S", "s1"), sync_msg())
        assert run_s1(run, "d")[-2:] == [("C", b"SELECT 1\0"), ("Z", b"I")]
        assert run_s1(run, "c")[0] == ZERO_A
        assert run_s1(run, "d")[-1] == ("Z", b"I")
        assert run_s1(run, "c")[0] == ZERO_A

    differential(pg, tusk, scenario)


@pytest.mark.parametrize("change", ["add_column", "none"])
def test_statement_prepared_again_lazily_is_checked_against_what_the_client_was_told(pg, tusk, change):
    """Item 1, the lazy prepare: with max_prepared_statements 1 the client's first statement
    is evicted from the server by its second, so its next use prepares it there again, after
    the schema change: the new copy describes new columns, and the client must get 0A000
    (tusk waits for the copy's description before it sends the Bind). Without a change the
    same path runs the statement as usual."""

    def scenario(run):
        setup_table(run)
        run.send("c", parse_msg("s1", SQL), describe_msg(b"S", "s1"), sync_msg())
        run_s1(run)
        run.send("c", parse_msg("s2", f"select a from {T}"), describe_msg(b"S", "s2"), sync_msg())
        if change != "none":
            run.ddl(CHANGES[change])
        got = run_s1(run)
        if change == "none":
            assert got[-2:] == [("C", b"SELECT 1\0"), ("Z", b"I")]
        else:
            assert got[0] == ZERO_A

    differential(pg, tusk, scenario, max_prepared_statements=1)


@pytest.mark.parametrize("change", ["add_column", "drop_and_create"])
@pytest.mark.parametrize("in_block", [False, True])
def test_fresh_prepare_after_a_schema_change_never_gets_0a000(pg, tusk, change, in_block):
    """Item 2. Client a prepares and runs the text and leaves; the table changes (a column
    added; or dropped and created again with other columns); a new client prepares the same
    text: PostgreSQL plans it afresh, and so must tusk, also inside a transaction block (where
    the error tusk used to retry away aborted the transaction)."""

    def scenario(run):
        setup_table(run)
        run.send("a", parse_msg("s1", SQL), describe_msg(b"S", "s1"), bind_msg("s1", (1,)), execute_msg(),
                 sync_msg())
        run.clients.pop("a").terminate()
        if change == "add_column":
            run.ddl(CHANGES["add_column"])
        else:
            setup_table(run, "id int, z text", "1, 'zz'")
        if in_block:
            run.query("b", "begin")
        got = run.send("b", parse_msg("s1", SQL), describe_msg(b"S", "s1"), sync_msg())
        assert not [m for m in got if m[0] == "E"], got
        got = run_s1(run, "b")
        assert got[-1] == ("Z", b"T" if in_block else b"I") and not [m for m in got if m[0] == "E"], got
        if in_block:
            run.query("b", "commit")

    differential(pg, tusk, scenario)


def test_type_dropped_and_created_again(pg, tusk):
    """Item 6, on the wire: a statement prepared (and described) before DROP TYPE + CREATE
    TYPE of its parameter's type fails as it does direct (XX000 cache lookup failed for type
    N); once prepared again (Close + Parse) it runs, also inside a savepoint."""

    def scenario(run):
        run.ddl("drop type if exists psc_mood cascade")
        run.ddl("create type psc_mood as enum ('calm', 'cross'); alter type psc_mood owner to tusk_trust")
        sql = "select $1::psc_mood"
        run.send("c", parse_msg("m1", sql), describe_msg(b"S", "m1"), sync_msg())
        run.send("c", bind_msg("m1", ("cross",)), execute_msg(), sync_msg())
        run.ddl("drop type psc_mood; create type psc_mood as enum ('calm', 'cross'); "
                "alter type psc_mood owner to tusk_trust")
        got = run.send("c", bind_msg("m1", ("cross",)), execute_msg(), sync_msg())
        assert got[0][0] == "E", got
        run.query("c", "begin")
        run.query("c", "savepoint sp")
        run.send("c", close_msg(b"S", "m1"), parse_msg("m1", sql), describe_msg(b"S", "m1"), sync_msg())
        got = run.send("c", bind_msg("m1", ("cross",)), execute_msg(), bind_msg("m1", ("calm",)), execute_msg(),
                       sync_msg())
        assert [m for m in got if m[0] == "D"] == [("D", b"\0\x01\0\0\0\x05cross"), ("D", b"\0\x01\0\0\0\x04calm")]
        run.query("c", "release sp")
        run.query("c", "commit")

    differential(pg, tusk, scenario)


# ---- real drivers -----------------------------------------------------------------------------

def _psycopg_type_steps(port, pg, how):
    """psycopg's own test_change_type_*: in a transaction, create a type and a table using
    it, insert through a prepared statement (prepare_threshold 0; execute, executemany or in a
    savepoint), roll back (psycopg then deallocates its statements); three times: each round's
    type is a new one under the same name. -> what each round got."""
    import psycopg
    out = []
    with psycopg.connect(host="127.0.0.1", port=port, user="tusk_trust", dbname=TEST_DB,
                         prepare_threshold=0) as c:
        for _ in range(3):
            try:
                c.execute("create type psc_enum as enum ('foo', 'bar', 'baz')")
                c.execute("create table psc_enums (id integer, bar psc_enum[])")
                sql = "insert into psc_enums (bar) values (%(e)s::psc_enum[])"
                if how == "execute":
                    c.cursor().execute(sql, {"e": ["foo"]})
                elif how == "executemany":
                    c.cursor().executemany(sql, [{"e": ["foo"]}, {"e": ["bar", "baz"]}])
                else:
                    with c.transaction():  # a savepoint
                        c.cursor().execute(sql, {"e": ["baz"]})
                out.append(c.execute("select bar::text[] from psc_enums order by id").fetchall())
            except psycopg.Error as e:
                out.append(f"{e.sqlstate}: {e}")
            c.rollback()
    return out


@pytest.mark.parametrize("how", ["execute", "executemany", "savepoint"])
def test_psycopg_type_dropped_and_created_again(pg, tusk, how):
    """Item 6 with psycopg (its test_change_type_*): direct, every round works; through tusk
    the rounds after the first used to fail with XX000 cache lookup failed for type N (the
    statement prepared again was answered with the server's copy of the first round)."""
    t = tusk(pools=[txn_pool(1)], pool_wait_timeout="10s")
    direct = _psycopg_type_steps(pg.port, pg, how)
    assert not [r for r in direct if isinstance(r, str)], direct
    assert _psycopg_type_steps(t.port, pg, how) == direct


async def _asyncpg_steps(port):
    """asyncpg (statement cache on): the repro's cases, each a fetchrow before a change and
    two after; then a new connection's first use of a text prepared before a change."""
    dsn = dict(host="127.0.0.1", port=port, user="tusk_trust", database=TEST_DB)
    out = []
    adm = await asyncpg.connect(**dsn, statement_cache_size=0)
    try:
        for n, (cols, values, change) in enumerate([
            ("id int, a int", "1, 10", "add column c text default 'new'"),
            ("id int, a int", "1, 10", "alter column a type bigint"),
            ("id int, a int", "1, 10", "alter column a type text"),
            ("id int, a int, b text", "1, 10, 'bee'", "drop column a"),
            ("id int, a bigint", "1, 10", "alter column a type int"),
        ]):
            tn = f"psc_a{n}"
            await adm.execute(f"drop table if exists {tn}; create table {tn} ({cols}); "
                              f"insert into {tn} values ({values})")
            c = await asyncpg.connect(**dsn)
            q = f"select * from {tn} where id = $1"
            out.append(dict(await c.fetchrow(q, 1)))
            await adm.execute(f"alter table {tn} {change}")
            for _ in range(2):
                try:
                    out.append(dict(await c.fetchrow(q, 1)))
                except Exception as e:  # noqa: BLE001 - the comparison shows it
                    out.append(f"{type(e).__name__}: {e}")
            await c.close()
            # a new connection's first use of the same text
            d = await asyncpg.connect(**dsn)
            out.append(dict(await d.fetchrow(q, 1)))
            await d.close()
            await adm.execute(f"drop table {tn}")
    finally:
        await adm.close()
    return out


def test_asyncpg_statement_cache_across_schema_changes(pg, tusk):
    """Items 1 and 2 with asyncpg: the same results direct and through tusk (it used to fail
    with ProtocolError / BufferError after the change, and a new connection got 0A000)."""
    t = tusk(pools=[txn_pool(1)], pool_wait_timeout="10s")
    direct = asyncio.run(_asyncpg_steps(pg.port))
    assert not [r for r in direct if isinstance(r, str)], direct
    assert asyncio.run(_asyncpg_steps(t.port)) == direct


JDBC_JAR = "/usr/share/java/postgresql.jar"


@pytest.mark.skipif(not (shutil.which("java") and os.path.exists(JDBC_JAR)), reason="pgjdbc or java missing")
def test_pgjdbc_prepared_statement_across_schema_changes(pg, tusk):
    """Item 1 with pgjdbc (Debian's libpostgresql-jdbc-java): a server-prepared statement run
    before and after ADD/DROP COLUMN and column type changes reads what it reads direct
    (pgjdbc retries 0A000 itself). Through tusk it used to read a = 0 after int -> bigint,
    silently, and fail after every later ADD/DROP COLUMN. prepareThreshold 1 and 5, in one JVM
per side."""
    t = tusk(pools=[txn_pool(1)], pool_wait_timeout="10s")
    src = Path(__file__).parent / "drivers" / "PreparedSchemaChange.java"
    outs = []
    for port in (pg.port, t.port):
        p = subprocess.run(["java", "-cp", JDBC_JAR, str(src), str(port), TEST_DB, "tusk_trust", "1,5",
                            "psc_j"], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        outs.append(p.stdout.splitlines())
    direct, pooled = outs
    assert "1 after 1: id=1 a=10 " in direct, direct
    assert pooled == direct
