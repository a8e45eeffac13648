"""Prepared statements after schema changes (issue 9, item 6). In transaction and statement
pooling tusk shares one server-side statement `tusk_<hash>` between every client that prepares
the same text; when the schema changes under it (ALTER TABLE ... TYPE, DROP TYPE + CREATE TYPE)
a client that prepares the text again must get what PostgreSQL direct gives it (a fresh plan),
not "cached plan must not change result type" (0A000) or "cache lookup failed for type" (XX000).
Tests without the tusk_only mark also pass with TUSK_TEST_DIRECT=1 (PostgreSQL direct)."""

import re

import pytest

from conftest import DIRECT, TEST_DB, TUSK_ERROR_RE, wait_until
from pgwire import parse_error_fields
from txn_util import (WireClient, bind_msg, close_msg, describe_msg, execute_msg, parse_msg, sync_msg,
                      txn_pool)

TABLE_SQL = "select v from heal_t order by id"
MOOD_SQL = "select $1::heal_mood"


def _alter_setup(pg):
    pg.execute("drop table if exists heal_t cascade", dbname=TEST_DB)
    pg.execute("create table heal_t (id int primary key, v int)", dbname=TEST_DB)
    pg.execute("insert into heal_t values (1, 10), (2, 20)", dbname=TEST_DB)
    pg.execute("alter table heal_t owner to tusk_trust", dbname=TEST_DB)


def _alter_change(pg):
    pg.execute("alter table heal_t alter column v type text using 'v' || v::text", dbname=TEST_DB)


def _mood_setup(pg):
    pg.execute("drop type if exists heal_mood", dbname=TEST_DB)
    pg.execute("create type heal_mood as enum ('calm', 'cross')", dbname=TEST_DB)
    pg.execute("alter type heal_mood owner to tusk_trust", dbname=TEST_DB)


def _mood_change(pg):
    pg.execute("drop type heal_mood", dbname=TEST_DB)
    pg.execute("create type heal_mood as enum ('calm', 'cross')", dbname=TEST_DB)


# (setup, change, sql, params, rows before, rows after)
CHANGES = {
    "alter_column_type": (_alter_setup, _alter_change, TABLE_SQL, (), [["10"], ["20"]], [["v10"], ["v20"]]),
    "drop_create_type": (_mood_setup, _mood_change, MOOD_SQL, ("cross",), [["cross"]], [["cross"]]),
}


def run_stmt(w, name, params):
    return w.exchange(bind_msg(name, params), execute_msg(), sync_msg())


def reprepare_and_run(w, name, sql, params):
    """What a client does after a schema change: close its statement, prepare the same text
    again, run it; all in one batch, as drivers send it."""
    return w.exchange(close_msg(b"S", name), parse_msg(name, sql), bind_msg(name, params), execute_msg(),
                      sync_msg())


def assert_ok(r, rows):
    assert r["errors"] == [], r
    assert r["rows"] == rows, r
    assert r["status"] == b"I", r


@pytest.mark.parametrize("mode", ["transaction", "statement"])
@pytest.mark.parametrize("size", [1, 4])
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_schema_change_then_reprepare_on_shared_servers(tusk, pg, change, size, mode):
    """Several clients prepare the same text (on every server of the pool where the pool has
    several: in transaction mode each client holds one in an open transaction while it runs
    the statement), the schema changes, then each client closes, prepares again and runs it:
    no error, the new result. Afterwards, in transaction mode, all clients run it at once
    inside transaction blocks (where nothing can be retried): every server has healed."""
    setup, change_fn, sql, params, before, after = CHANGES[change]
    setup(pg)
    t = tusk(pools=[txn_pool(size, mode=mode)], pool_wait_timeout="10s")
    nclients = 4 if size == 4 else 2
    clients = [WireClient(t.port) for _ in range(nclients)]
    hold = mode == "transaction" and size > 1
    try:
        for w in clients:
            if hold:
                assert w.simple_query("begin")[1] == []
            r = w.exchange(parse_msg("s1", sql), bind_msg("s1", params), execute_msg(), sync_msg())
            assert r["errors"] == [] and r["rows"] == before, r
        if hold:
            for w in clients:
                assert w.simple_query("commit")[1] == []
        change_fn(pg)
        for w in clients:
            assert_ok(reprepare_and_run(w, "s1", sql, params), after)
            assert_ok(run_stmt(w, "s1", params), after)
        if hold:
            pids = set()
            for w in clients:
                assert w.simple_query("begin")[1] == []
                rows, errs = w.simple_query("select pg_backend_pid()")
                pids.add(rows[0][0])
                r = run_stmt(w, "s1", params)
                assert r["errors"] == [] and r["rows"] == after and r["status"] == b"T", r
            assert len(pids) == nclients
            for w in clients:
                assert w.simple_query("commit")[1] == []
    finally:
        for w in clients:
            w.terminate()


def test_psycopg_drop_and_create_view_then_prepare_again_on_another_server(tusk, pg):
    """psycopg with prepare=True, pool of 2: the query is prepared on both servers. Client a
    drops the view and creates it with another column type; psycopg, seeing DROP, forgets its
    statements and sends DEALLOCATE ALL (which really clears that one server), then prepares
    the same text again on its next execute, which lands on the other server, where tusk's
    shared statement is stale: it must run as it does direct."""
    _alter_setup(pg)
    pg.execute("create view heal_v as select id, v from heal_t", dbname=TEST_DB)
    pg.execute("alter view heal_v owner to tusk_trust", dbname=TEST_DB)
    sql = "select v from heal_v where id = %s"
    t = tusk(pools=[txn_pool(2)], pool_wait_timeout="10s")
    with t.connect(autocommit=True) as a, t.connect(autocommit=True) as b, t.connect(autocommit=False) as c:
        # c holds one server in a transaction and runs it there; a runs it on the other
        assert c.execute(sql, (1,), prepare=True).fetchall() == [(10,)]
        assert a.execute(sql, (1,), prepare=True).fetchall() == [(10,)]
        c.commit()
        with a.transaction():
            ddl_pid = a.execute("select pg_backend_pid()").fetchone()[0]
            a.execute("drop view heal_v")
            a.execute("create view heal_v as select id, 'v' || v as v from heal_t")
        # steer a's next transaction to the server that did not run the DDL
        if c.execute("select pg_backend_pid()").fetchone()[0] != ddl_pid:
            b.execute("begin")
            b.execute("select 1")
            c.commit()
        for _ in range(2):
            assert a.execute(sql, (2,), prepare=True).fetchall() == [("v20",)]
        if not DIRECT:
            assert a.execute("select pg_backend_pid()").fetchone()[0] != ddl_pid
            # a fresh prepare is planned afresh there, as direct: nothing to retry
            assert "request retried" not in t.log_path.read_text()


def _two_clients_one_server_after_alter(pg, t):
    """Clients a and b have s1 prepared on the pool's only server; the column type changed."""
    _alter_setup(pg)
    a, b = WireClient(t.port), WireClient(t.port)
    for w in (a, b):
        assert_ok(w.exchange(parse_msg("s1", TABLE_SQL), bind_msg("s1"), execute_msg(), sync_msg()),
                  [["10"], ["20"]])
    _alter_change(pg)
    return a, b


def assert_server_error_unchanged(err):
    """PostgreSQL's own error, as PostgreSQL wrote it: not one of tusk's."""
    assert err["C"] == "0A000", err
    assert err["M"] == "cached plan must not change result type", err
    assert not TUSK_ERROR_RE.search(err["M"]), err


@pytest.mark.tusk_only
def test_stale_statement_error_passes_through_in_a_transaction_block(tusk, pg):
    """Inside a transaction block the error aborts the transaction, so it cannot be retried:
    the client gets PostgreSQL's error unchanged; after its ROLLBACK the statement, marked
    stale, is prepared afresh on its next use (the client was told nothing of its result:
    direct, the statement would fail until prepared again, hence tusk only)."""
    t = tusk(pools=[txn_pool(1)], pool_wait_timeout="10s")
    a, b = _two_clients_one_server_after_alter(pg, t)
    try:
        assert a.simple_query("begin")[1] == []
        r = run_stmt(a, "s1", ())
        assert len(r["errors"]) == 1 and r["status"] == b"E", r
        assert_server_error_unchanged(r["errors"][0])
        assert a.simple_query("rollback")[1] == []
        assert_ok(run_stmt(a, "s1", ()), [["v10"], ["v20"]])
        # b never prepared again: tusk's shared statement is already fresh for it
        assert_ok(run_stmt(b, "s1", ()), [["v10"], ["v20"]])
    finally:
        a.terminate()
        b.terminate()


@pytest.mark.tusk_only
def test_stale_statement_error_passes_through_with_a_pipeline_in_flight(tusk, pg):
    """Two batches sent at once: when the error for the first arrives, the second is already
    with the server, so the first cannot go again in order. Both get PostgreSQL's error; the
    next use works."""
    t = tusk(pools=[txn_pool(1)], pool_wait_timeout="10s")
    a, b = _two_clients_one_server_after_alter(pg, t)
    try:
        a.send(bind_msg("s1") + execute_msg() + sync_msg() + bind_msg("s1") + execute_msg() + sync_msg())
        for _ in range(2):
            msgs = a.read_until_ready()
            errs = [m for m in msgs if m[0] == b"E"]
            assert len(errs) == 1, msgs
            assert_server_error_unchanged(parse_error_fields(errs[0][1]))
        assert_ok(run_stmt(a, "s1", ()), [["v10"], ["v20"]])
        assert_ok(run_stmt(b, "s1", ()), [["v10"], ["v20"]])
    finally:
        a.terminate()
        b.terminate()


@pytest.mark.tusk_only
def test_retry_is_logged(tusk, pg):
    """The healed request shows in the log, naming the statement and the server."""
    t = tusk(pools=[txn_pool(1)], pool_wait_timeout="10s")
    a, b = _two_clients_one_server_after_alter(pg, t)
    try:
        assert_ok(run_stmt(a, "s1", ()), [["v10"], ["v20"]])
        wait_until(lambda: re.search(r"statement tusk_[0-9a-f]{32} went stale on server s[0-9a-f]{8}: "
                                     r"prepared again, request retried", t.log_path.read_text()), timeout=5)
    finally:
        a.terminate()
        b.terminate()


def _server_statements(w):
    rows, errs = w.simple_query("select name from pg_prepared_statements where name like 'tusk_%'")
    assert errs == []
    return sorted(r[0] for r in rows)


@pytest.mark.tusk_only
@pytest.mark.parametrize("how", ["close", "deallocate"])
def test_last_close_lets_the_statement_go_on_the_server(tusk, pg, how):
    """A Close (or SQL DEALLOCATE) of a statement another client of the pool still names
    leaves it on the server; the last one lets it go there (Close: at once; DEALLOCATE, whose
    reply tusk gives itself: before its next Parse there), so a Parse of the same text after
    a schema change prepares afresh with no error to retry."""
    _alter_setup(pg)
    t = tusk(pools=[txn_pool(1)], pool_wait_timeout="10s")
    a, b = WireClient(t.port), WireClient(t.port)

    def let_go(w):
        if how == "close":
            r = w.exchange(close_msg(b"S", "s1"), sync_msg())
            assert r["errors"] == [] and r["kinds"] == [b"3", b"Z"], r
        else:
            rows, errs = w.simple_query("deallocate s1")
            assert errs == []

    try:
        for w in (a, b):
            assert_ok(w.exchange(parse_msg("s1", TABLE_SQL), bind_msg("s1"), execute_msg(), sync_msg()),
                      [["10"], ["20"]])
        held = _server_statements(a)
        assert len(held) == 1
        let_go(a)
        assert _server_statements(a) == held, "b still names it"
        let_go(b)
        if how == "close":
            assert _server_statements(a) == [], "nobody names it any more"
        _alter_change(pg)
        assert_ok(a.exchange(parse_msg("s1", TABLE_SQL), bind_msg("s1"), execute_msg(), sync_msg()),
                  [["v10"], ["v20"]])
        assert "request retried" not in t.log_path.read_text()
    finally:
        a.terminate()
        b.terminate()


@pytest.mark.tusk_only
def test_second_stale_statement_in_a_retried_batch_passes_its_error_on(tusk, pg):
    """One batch runs two stale statements. The first one's error is retried away; when the
    second one fails, the first one's rows have reached the client, so its error passes on
    unchanged (PostgreSQL rolls the implicit transaction back, as it would direct for any
    error there) and both statements work on the next try."""
    t = tusk(pools=[txn_pool(1)], pool_wait_timeout="10s")
    a, b = _two_clients_one_server_after_alter(pg, t)
    sql2 = "select id, v from heal_t order by id"
    try:
        for w in (a, b):
            assert_ok(w.exchange(parse_msg("s2", sql2), bind_msg("s2"), execute_msg(), sync_msg()),
                      [["1", "v10"], ["2", "v20"]])
        pg.execute("alter table heal_t alter column v type bigint using 0", dbname=TEST_DB)
        r = a.exchange(bind_msg("s1"), execute_msg(), bind_msg("s2"), execute_msg(), sync_msg())
        assert r["rows"] == [["0"], ["0"]], r
        assert len(r["errors"]) == 1 and r["status"] == b"I", r
        assert_server_error_unchanged(r["errors"][0])
        r = a.exchange(bind_msg("s1"), execute_msg(), bind_msg("s2"), execute_msg(), sync_msg())
        assert r["errors"] == [] and r["rows"] == [["0"], ["0"], ["1", "0"], ["2", "0"]], r
        assert t.wait_log("request retried").count("request retried") == 1
    finally:
        a.terminate()
        b.terminate()


@pytest.mark.parametrize("mode", ["transaction", "statement"])
def test_describe_after_reprepare_on_a_stale_server(tusk, pg, mode):
    """Drivers that prepare with Parse + Describe statement + Sync (asyncpg, pgjdbc): after
    the schema change, preparing the same text again describes the new result type, as
    direct, although another client still names the old statement on the same server."""
    t = tusk(pools=[txn_pool(1, mode=mode)], pool_wait_timeout="10s")
    a, b = _two_clients_one_server_after_alter(pg, t)
    try:
        r = a.exchange(close_msg(b"S", "s1"), parse_msg("s1", TABLE_SQL), describe_msg(b"S", "s1"), sync_msg())
        assert r["errors"] == [] and r["kinds"] == [b"3", b"1", b"t", b"T", b"Z"], r
        assert_ok(run_stmt(a, "s1", ()), [["v10"], ["v20"]])
        r = b.exchange(close_msg(b"S", "s1"), parse_msg("s1", TABLE_SQL), describe_msg(b"S", "s1"), sync_msg())
        assert r["errors"] == [] and r["kinds"] == [b"3", b"1", b"t", b"T", b"Z"], r
    finally:
        a.terminate()
        b.terminate()
