"""Extended-protocol work a client leaves unfinished (issue 27, item 0).

PostgreSQL opens an implicit transaction at the first Parse/Bind/Execute after a ReadyForQuery
and commits it only at the Sync: a client that leaves before its Sync has its work rolled back,
its locks released, and nothing of it reaches anyone else. Each test runs the same message
sequence straight against PostgreSQL and through tusk in session, transaction and statement
pooling (pool size 1, so the next client gets the very server the first one left) and asserts
the same visible outcome: whether the row is committed, what the next client sees, which locks
are held."""

import threading
import time
import uuid

import pytest

from conftest import SLOW, TEST_DB, wait_until
from txn_util import (WireClient, activity, bind_msg, execute_msg, locks_held, parse_msg, sync_msg,
                      txn_pool)
import pgwire

TARGETS = ["direct", "session", "transaction", "statement"]
LOCKED_ID = 11


def flush_msg():
    return pgwire.message(b"H")


@pytest.fixture(scope="module")
def unfinished_table(pg):
    pg.execute("create table if not exists unfinished (tag text not null)", dbname=TEST_DB)
    pg.execute("grant all on unfinished to public", dbname=TEST_DB)
    return "unfinished"


@pytest.fixture
def target(request, tusk, pg, unfinished_table):
    """-> the port of the target named by the test's parameter."""
    mode = request.param
    if mode == "direct":
        return pg.port
    return tusk(pools=[txn_pool(1, mode=mode)], pool_wait_timeout="10s").port


def committed(pg, tag):
    return pg.execute("select count(*) from unfinished where tag = %s", (tag,), dbname=TEST_DB)[0][0]


def backend_running(pg, marker):
    """pid of the backend whose last query contains marker, or None."""
    rows = pg.execute("select pid from pg_stat_activity where query like %s and pid <> pg_backend_pid()",
                      (f"%{marker}%",))
    return rows[0][0] if rows else None


def backend_wrote(pg, marker):
    """pid of the backend that ran the statement containing marker and waits for the client
    inside the transaction it wrote in (no Sync: pg_stat_activity still says 'active')."""
    rows = pg.execute("select pid from pg_stat_activity where query like %s and pid <> pg_backend_pid() "
                      "and backend_xid is not null and wait_event = 'ClientRead'", (f"%{marker}%",))
    return rows[0][0] if rows else None


def wait_settled(pg, pid):
    """The backend is gone (PostgreSQL direct) or idle outside any transaction, holding no lock
    (tusk rolled back what the client left)."""
    def settled():
        a = activity(pg, pid)
        return a is None or (a[0] == "idle" and not a[1] and locks_held(pg, pid) == [])
    wait_until(settled, 5 * SLOW, what=f"backend {pid} out of the client's transaction")


def read_kinds(w, n):
    return [w.read_message()[0] for _ in range(n)]


def insert_sql(tag):
    # the tag in the text too, so the backend running it can be found in pg_stat_activity
    return f"insert into unfinished values ($1) /* {tag} */"


@pytest.mark.parametrize("target", TARGETS, indirect=True)
def test_insert_without_sync_is_not_committed_when_the_client_leaves(target, pg):
    """Parse/Bind/Execute of an INSERT, no Sync, then the client goes: PostgreSQL rolls the row
    back; tusk used to send the Sync itself and commit it."""
    tag = f"nosync-{uuid.uuid4().hex[:12]}"
    w = WireClient(target)
    w.send(parse_msg("", insert_sql(tag)) + bind_msg("", [tag]) + execute_msg())
    wait_until(lambda: backend_wrote(pg, tag), 5 * SLOW, what="the INSERT ran on the server")
    pid = backend_wrote(pg, tag)
    w.close(reset=True)
    wait_settled(pg, pid)
    assert committed(pg, tag) == 0, "a row whose Sync never came was committed"


@pytest.mark.parametrize("synced_batch_first", [False, True], ids=["alone", "after_synced_batch"])
@pytest.mark.parametrize("target", TARGETS, indirect=True)
def test_insert_with_flush_is_not_handed_to_the_next_client(target, pg, synced_batch_first):
    """Parse/Bind/Execute/Flush of an INSERT: the client has its CommandComplete and leaves
    without Sync. The next client on the same server must not run inside that transaction
    (see the row, commit it)."""
    tag = f"flush-{uuid.uuid4().hex[:12]}"
    first = f"first-{uuid.uuid4().hex[:12]}"
    w = WireClient(target)
    msgs = b""
    if synced_batch_first:
        # one write: a whole batch, then the unfinished one behind it
        msgs = parse_msg("", insert_sql(first)) + bind_msg("", [first]) + execute_msg() + sync_msg()
    msgs += parse_msg("", insert_sql(tag)) + bind_msg("", [tag]) + execute_msg() + flush_msg()
    w.send(msgs)
    if synced_batch_first:
        assert read_kinds(w, 4) == [b"1", b"2", b"C", b"Z"]
    assert read_kinds(w, 3) == [b"1", b"2", b"C"]
    # The backend flushed CommandComplete before it went back to wait for the client
    # (pg_stat_activity's ClientRead): under load the client reads it first.
    wait_until(lambda: backend_wrote(pg, tag), 5 * SLOW, what="the INSERT's transaction open, waiting for the client")
    pid = backend_wrote(pg, tag)
    w.close(reset=True)
    wait_settled(pg, pid)

    nxt = WireClient(target)
    rows, errors = nxt.simple_query(f"select count(*) from unfinished where tag = '{tag}'")
    assert errors == [] and rows == [["0"]], "the next client saw the departed client's uncommitted row"
    nxt.terminate()
    assert committed(pg, tag) == 0, "the departed client's row was committed by the next client"
    assert committed(pg, first) == (1 if synced_batch_first else 0)


@pytest.mark.parametrize("target", ["direct", "session", "transaction"], indirect=True)
def test_begin_batch_with_flush_does_not_swallow_the_next_clients_writes(target, pg):
    """BEGIN and an INSERT through Parse/Bind/Execute, Flush, then the client goes: the next
    client's autocommit INSERT must commit (tusk used to park the server inside that BEGIN, so
    the next client's write ran in it and was rolled back later)."""
    tag = f"begin-{uuid.uuid4().hex[:12]}"
    tag2 = f"next-{uuid.uuid4().hex[:12]}"
    w = WireClient(target)
    w.send(parse_msg("", "begin") + bind_msg("") + execute_msg()
           + parse_msg("", insert_sql(tag)) + bind_msg("", [tag]) + execute_msg() + flush_msg())
    assert read_kinds(w, 6) == [b"1", b"2", b"C", b"1", b"2", b"C"]
    pid = backend_running(pg, tag)
    w.close(reset=True)
    wait_settled(pg, pid)

    nxt = WireClient(target)
    rows, errors = nxt.simple_query(f"insert into unfinished values ('{tag2}')")
    assert errors == []
    nxt.terminate()
    wait_until(lambda: committed(pg, tag2) == 1, 5 * SLOW, what="the next client's autocommit INSERT committed")
    assert committed(pg, tag) == 0


@pytest.mark.parametrize("target", TARGETS, indirect=True)
def test_row_lock_taken_before_flush_is_released_when_the_client_leaves(target, pg):
    """SELECT ... FOR UPDATE through Parse/Bind/Execute/Flush, then the client goes: the lock
    goes with it, as on PostgreSQL (tusk used to park the server holding it)."""
    marker = f"lock-{uuid.uuid4().hex[:12]}"
    w = WireClient(target)
    w.send(parse_msg("", f"select id from items where id = {LOCKED_ID} for update /* {marker} */")
           + bind_msg("") + execute_msg() + flush_msg())
    assert read_kinds(w, 4) == [b"1", b"2", b"D", b"C"]
    pid = backend_running(pg, marker)
    assert any(m == "RowShareLock" for _, m, _ in locks_held(pg, pid))
    w.close(reset=True)
    wait_settled(pg, pid)
    with pg.admin(TEST_DB) as c:
        c.execute("set lock_timeout = '2s'")
        c.execute("begin")
        assert c.execute("select id from items where id = %s for update", (LOCKED_ID,)).fetchone() == (LOCKED_ID,)
        c.execute("rollback")


@pytest.mark.parametrize("mode", ["transaction", "statement"])
def test_execute_flush_then_wait_keeps_the_server(tusk, pg, unfinished_table, mode):
    """A client that has its CommandComplete (Flush) but has not synced keeps its server: with
    pool size 1 another client waits until the Sync, then sees the row committed."""
    t = tusk(pools=[txn_pool(1, mode=mode)], pool_wait_timeout="10s")
    tag = f"wait-{uuid.uuid4().hex[:12]}"
    a = WireClient(t.port)
    a.send(parse_msg("", insert_sql(tag)) + bind_msg("", [tag]) + execute_msg() + flush_msg())
    assert read_kinds(a, 3) == [b"1", b"2", b"C"]

    seen = []
    def other():
        b = WireClient(t.port)
        seen.append(b.simple_query(f"select count(*) from unfinished where tag = '{tag}'"))
        b.terminate()
    th = threading.Thread(target=other)
    th.start()
    time.sleep(1.0 * SLOW)
    assert seen == [], "another client got the server inside the first client's unsynced batch"
    a.send(sync_msg())
    assert read_kinds(a, 1) == [b"Z"]
    th.join(10 * SLOW)
    assert seen == [([["1"]], [])]
    a.terminate()
    assert committed(pg, tag) == 1


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_client_gone_in_the_middle_of_a_large_row_leaves_a_reusable_server(tusk, pg, mode):
    """The client leaves while a DataRow larger than tusk's buffer is half passed on: the rest
    of that row, still coming from the server, is skipped, not read as messages, so the
    server is rolled back and reused (it used to be closed, or worse)."""
    t = tusk(pools=[txn_pool(1, mode=mode)], pool_wait_timeout="10s")
    w = WireClient(t.port)
    pid = int(w.simple_query("select pg_backend_pid()")[0][0][0])
    w.send(pgwire.query_message("select repeat('x', 8 * 1024 * 1024)"))
    assert w.read_message()[0] == b"T"
    w._fill(64 * 1024, time.monotonic() + 10 * SLOW)  # well into the DataRow
    w.close(reset=True)
    wait_settled(pg, pid)
    nxt = WireClient(t.port)
    rows, errors = nxt.simple_query("select pg_backend_pid()")
    assert errors == [] and int(rows[0][0]) == pid, "the server was not reused after the client left"
    nxt.terminate()
    assert "protocol violation" not in t.log_text()


# --- issue 27, item 3: a client must never wait for bytes tusk will not send --------------------

@pytest.mark.parametrize("target", ["direct", "transaction", "session"], indirect=True)
def test_pipeline_longer_than_the_reply_queue_before_its_sync_is_answered(target, pg):
    """Hundreds of Bind/Execute pairs before one Sync (a driver's large batch, pgjdbc's
    executeBatch): tusk's reply queue fills before it reads the Sync, and the server keeps the
    small replies of an unsynced batch in its buffer. tusk used to wait for those replies
    while the client waited for the answer to its Sync: both for ever."""
    w = WireClient(target)
    n = 400
    w.send(parse_msg("", "select 1") + (bind_msg("") + execute_msg()) * n + sync_msg())
    kinds = [k for k, _ in w.read_until_ready(timeout=20 * SLOW)]
    assert kinds.count(b"C") == n and kinds.count(b"2") == n and kinds[-1] == b"Z"
    rows, errors = w.simple_query("select 42")
    assert rows == [["42"]] and errors == []
    w.terminate()
