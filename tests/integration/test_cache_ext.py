"""The result cache through the extended protocol (docs/cache.md, "Extended protocol"): the
plain [Parse] Bind [Describe] Execute Sync a driver sends for one parameterised read, with an
unnamed or a named statement, against a real PostgreSQL 15 with pg_stat_statements."""

import os
import struct
import subprocess
import threading
import time

import psycopg
import pytest
from psycopg.types.numeric import Int8

import pgwire
from conftest import TEST_DB, wait_until
from test_cache import SLOW_QUERY, cache_pool, calls, cpg, reset_stats, wire  # noqa: F401 (cpg: fixture)
from txn_util import txn_pool

Q = "select name from items where id = %s"


@pytest.fixture
def on(cpg, tusk):  # noqa: F811
    cpg.execute("update items set name = 'item ' || id where id <= 20", dbname=TEST_DB)
    t = tusk(pg_server=cpg, pools=[cache_pool("on")], workers=2, cache_ttl="60s")
    reset_stats(cpg)
    return t


def test_unnamed_and_prepared_reads_served_from_cache(cpg, on):
    direct = cpg.execute("select name from items where id = 3", dbname=TEST_DB)
    reset_stats(cpg)
    with on.connect() as a, on.connect() as b:
        for _ in range(3):
            assert a.execute(Q, (3,)).fetchall() == direct  # P/B/D/E/S, unnamed statement
            assert b.execute(Q, (3,)).fetchall() == direct
        assert calls(cpg, "from items where id = $1") == 1
        reset_stats(cpg)
        for _ in range(3):  # named: Parse once (answered by tusk), then B/D/E/S
            assert a.execute(Q.replace("name", "name as n"), (4,), prepare=True).fetchall() == [("item 4",)]
        assert calls(cpg, "name as n from items") == 1


def named_after_a_type_change(a, c, table):
    """Through connections a and c: a named statement of c run twice, a's ALTER of the column
    type it reads, then the statement three times more; what each run answered."""
    a.execute(f"drop table if exists {table}; create table {table}(id int, v int); insert into {table} values (1, 10)")
    q = f"select * from {table} where id = %s"

    def run():
        try:
            cur = c.execute(q, (1,), prepare=True)
            return ("rows", cur.fetchall(), cur.statusmessage, [d.name for d in cur.description or []])
        except psycopg.Error as e:
            return ("error", e.sqlstate)
    before = [run(), run()]
    a.execute(f"alter table {table} alter column v type bigint")
    return before, [run(), run(), run()]


def test_a_statement_failed_by_a_type_change_is_never_kept(cpg, on):
    """A named statement after its column's type changed: PostgreSQL answers 0A000 (cached plan
    must not change result type) at every run, and tusk, told of the change, answers it itself
    without the server's reply. That answer is an error too: the read it led must not be kept.
    It was, as an empty result (the ReadyForQuery alone), and the next runs were served no rows
    and no CommandComplete (node-postgres's named_schema_change case through cache: on;
    psycopg here). Differential: the same steps against PostgreSQL direct."""
    conn = dict(host="127.0.0.1", user="tusk_trust", dbname=TEST_DB, autocommit=True)
    with psycopg.connect(port=cpg.port, **conn) as a, psycopg.connect(port=cpg.port, **conn) as c:
        direct = named_after_a_type_change(a, c, "nsc_direct")
    with on.connect() as a, on.connect() as c:
        through = named_after_a_type_change(a, c, "nsc_tusk")
    assert direct[0] == [("rows", [(1, 10)], "SELECT 1", ["id", "v"])] * 2
    assert through == direct


def test_different_parameters_never_share(cpg, on):
    with on.connect() as a, on.connect() as b:
        for _ in range(2):
            for i in range(1, 9):
                c = a if i % 2 else b
                assert c.execute(Q, (i,)).fetchone() == (f"item {i}",)
                assert c.execute(Q, (Int8(i),)).fetchone() == (f"item {i}",)  # another type OID
                assert c.execute(Q, (i,), prepare=True).fetchone() == (f"item {i}",)
        # Per parameter value: one run as int2, one as int8, one through the named statement
        # (its results are its own: it was parsed under the settings of its Parse).
        assert calls(cpg, "from items where id = $1") == 24


def test_binary_results_never_served_to_a_text_requester(cpg, on):
    q = "select id, name, id * 1000000000000 as big from items where id = %s"
    want = [(5, "item 5", 5000000000000)]
    with on.connect(prepare_threshold=None) as a:  # unnamed statements only
        for _ in range(2):
            assert a.cursor(binary=True).execute(q, (5,)).fetchall() == want
            assert a.cursor(binary=False).execute(q, (5,)).fetchall() == want
            cur = a.cursor(binary=False)
            cur.execute(q, (5,))
            assert [d.type_code for d in cur.description] == [23, 25, 20]
        assert calls(cpg, "as big from items") == 2  # one per result format


def test_extended_write_invalidates_an_extended_read(cpg, on):
    with on.connect() as r, on.connect() as w:
        for i in range(3):
            assert r.execute(Q, (7,)).fetchone() == (f"item 7" if i == 0 else f"v{i - 1}",)
            assert r.execute(Q, (7,), prepare=True).fetchone() == r.execute(Q, (7,)).fetchone()
            w.execute("update items set name = %s where id = %s", (f"v{i}", 7))
            assert r.execute(Q, (7,)).fetchone() == (f"v{i}",)
            assert r.execute(Q, (7,), prepare=True).fetchone() == (f"v{i}",)


def test_50_concurrent_identical_extended_reads_run_once(cpg, tusk):
    t = tusk(pg_server=cpg, pools=[cache_pool("coalesce")], workers=2, cache_coalesce_wait="30s")
    q = SLOW_QUERY.replace("%", "%%").replace("c.id <= 3", "c.id <= %s")
    want = sorted(cpg.execute(q, (3,), dbname=TEST_DB))
    conns = [t.connect() for _ in range(50)]
    reset_stats(cpg)
    barrier = threading.Barrier(len(conns))
    results = [None] * len(conns)

    def run(i):
        barrier.wait()
        results[i] = sorted(conns[i].execute(q, (3,)).fetchall())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(conns))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert all(r == want for r in results)
    assert calls(cpg, "items a, items b, items c") == 1
    for c in conns:
        c.close()


# ---- raw wire: each shape's reply, byte for byte, against PostgreSQL's own ----

def parse(name, sql, types=()):
    return pgwire.message(b"P", name + b"\0" + sql + b"\0" + struct.pack("!H", len(types)) +
                          b"".join(struct.pack("!I", t) for t in types))


def bind(stmt, values, result_formats=()):
    body = b"\0" + stmt + b"\0" + struct.pack("!H", 0) + struct.pack("!H", len(values))
    for v in values:
        body += struct.pack("!i", len(v)) + v
    body += struct.pack("!H", len(result_formats)) + b"".join(struct.pack("!H", f) for f in result_formats)
    return pgwire.message(b"B", body)


def describe(kind, name=b""):
    return pgwire.message(b"D", kind + name + b"\0")


def execute(max_rows=0):
    return pgwire.message(b"E", b"\0" + struct.pack("!I", max_rows))


SYNC = pgwire.message(b"S")


def exchange(c, data):
    c.send(data)
    return c.read_until_ready()


SQL = b"select id, name from items where id = $1"
SHAPES = {
    "P/B/D(P)/E/S": parse(b"", SQL) + bind(b"", [b"11"]) + describe(b"P") + execute() + SYNC,
    "P/B/D(S)/E/S": parse(b"", SQL, (23,)) + bind(b"", [b"11"]) + describe(b"S") + execute() + SYNC,
    "P/B/E/S binary": parse(b"", SQL) + bind(b"", [b"11"], (1,)) + execute() + SYNC,
    # a function of the name: PostgreSQL refuses to Parse a live name (42P05), and so does tusk
    "named P/B/D(S)/E/S": lambda n: parse(n, SQL) + bind(n, [b"11"]) + describe(b"S", n) + execute() + SYNC,
    "named B/D(P)/E/S": bind(b"s1", [b"11"]) + describe(b"P") + execute() + SYNC,
    "named B/E/S": bind(b"s1", [b"11"]) + execute() + SYNC,
}


def test_each_shape_answered_as_postgresql_answers(cpg, on):
    direct = pgwire.RawClient("127.0.0.1", cpg.port)
    direct.startup("tusk_trust", TEST_DB)
    via, other = wire(on), wire(on)
    for c in (direct, via, other):  # the named statement, prepared the way libpq does
        assert [k for k, _ in exchange(c, parse(b"s1", SQL) + SYNC)] == [b"1", b"Z"]
    fresh = iter(range(1000))
    for shape, data in SHAPES.items():
        def sent(data=data):  # a named Parse takes a fresh name each time
            return data(f"s1_{next(fresh)}".encode()) if callable(data) else data
        reset_stats(cpg)
        want = exchange(direct, sent())
        assert [k for k, _ in want if k in b"ED"] == [b"D"], shape
        for c in (via, via, other):
            assert exchange(c, sent()) == want, shape
        # Once for direct, once through tusk (its leader), none for the two repeats; a request
        # that names a statement in its Parse goes to a server each time.
        assert calls(cpg, "from items where id = $1") <= (4 if callable(data) else 2), shape
    for c in (direct, via, other):
        c.close()


NOW_SQL = b"select id, name from items where id = $1 and $2::timestamptz > '2000-01-01'"


def test_time_words_in_text_parameters_bypass(cpg, on):
    """'now' (any case) as a text parameter is read as the time the statement runs: never
    shared; the same statement with a fixed time is."""
    c = wire(on)
    for value, runs in ((b"2001-01-01", 1), (b"Now", 3)):
        reset_stats(cpg)
        data = parse(b"", NOW_SQL) + bind(b"", [b"12", value]) + execute() + SYNC
        replies = [exchange(c, data) for _ in range(3)]
        assert replies[0] == replies[1] == replies[2] and any(k == b"D" for k, _ in replies[0])
        assert calls(cpg, "from items where id = $1") == runs, value
    c.close()


@pytest.mark.parametrize("shape", ["row limit", "two executes", "flush", "describe first"])
def test_other_shapes_run_every_time(cpg, on, shape):
    data = {
        "row limit": parse(b"", SQL) + bind(b"", [b"12"]) + describe(b"P") + execute(1) + SYNC,
        "two executes": parse(b"", SQL) + bind(b"", [b"12"]) + execute() + execute() + SYNC,
        "flush": parse(b"", SQL) + bind(b"", [b"12"]) + execute() + pgwire.message(b"H") + SYNC,
        "describe first": parse(b"", SQL) + describe(b"S") + bind(b"", [b"12"]) + execute() + SYNC,
    }[shape]
    c = wire(on)
    replies = [exchange(c, data) for _ in range(3)]
    assert replies[0] == replies[1] == replies[2]
    assert any(k == b"D" for k, _ in replies[0])
    assert calls(cpg, "from items where id = $1") >= 3  # every time (two Executes may count twice)
    c.close()


@pytest.mark.parametrize("mode", ["extended", "prepared"])
def test_pgbench_select_only_through_the_cache(cpg, on, tmp_path, mode):
    script = tmp_path / "hot.sql"
    script.write_text("\\set id random(1, 20)\nselect name from items where id = :id;\n")
    env = dict(os.environ, PGCONNECT_TIMEOUT="30")
    p = subprocess.run(["pgbench", "-n", "-M", mode, "-c", "4", "-j", "2", "-t", "200", "-f", str(script),
                        "-h", "127.0.0.1", "-p", str(on.port), "-U", "tusk_trust", TEST_DB],
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    assert "number of transactions actually processed: 800/800" in p.stdout
    # 800 reads of 20 keys: at most one run per key (pgbench's own Parse is not counted).
    assert calls(cpg, "from items where id = $1") <= 20
    # Differential: what the cache now holds is what PostgreSQL says.
    with on.connect() as via, psycopg.connect(host="127.0.0.1", port=cpg.port, user="tusk_trust",
                                              dbname=TEST_DB, autocommit=True) as direct:
        for i in range(1, 21):
            assert via.execute(Q, (i,)).fetchall() == direct.execute(Q, (i,)).fetchall()
            assert via.execute(Q, (i,), prepare=True).fetchall() == direct.execute(Q, (i,)).fetchall()


def test_extended_waiter_delivered_cancelled_and_leader_killed(cpg, tusk):
    """A waiter on an extended leader gets the leader's rows framed for its own sequence; a
    cancelled waiter gets 57014 and its whole request is gone (the next one is read right);
    a leader that leaves releases its waiters to run their own."""
    from test_cache import cancel, running, slow_query_of_at_least, wait_running
    t = tusk(pg_server=cpg, pools=[cache_pool("coalesce")], workers=2, cache_coalesce_wait="20s")
    q, want = slow_query_of_at_least(cpg, 2.0)
    data = parse(b"", q.encode()) + bind(b"", []) + describe(b"P") + execute() + SYNC
    leader, waiter, cancelled = wire(t), wire(t), wire(t)
    leader.send(data)
    wait_running(cpg, q)
    waiter.send(data)
    cancelled.send(data)
    time.sleep(0.3)
    assert running(cpg, q) == 1  # both wait
    cancel(t, cancelled)
    msgs = cancelled.read_until_ready(timeout=5)
    errors = [pgwire.parse_error_fields(b) for k, b in msgs if k == b"E"]
    assert errors and errors[0]["C"] == "57014", msgs
    # As PostgreSQL: its Parse and Bind were done, its Execute cancelled (the Describe's
    # RowDescription, which tusk does not have without the leader's answer, is left out).
    assert [k for k, _ in msgs] == [b"1", b"2", b"E", b"Z"], msgs
    assert [k for k, _ in exchange(cancelled, parse(b"", b"select 1") + bind(b"", []) + execute() + SYNC)] == \
        [b"1", b"2", b"D", b"C", b"Z"]
    got_leader = leader.read_until_ready(timeout=60)
    got_waiter = waiter.read_until_ready(timeout=60)
    assert got_waiter == got_leader
    assert [k for k, _ in got_leader][:3] == [b"1", b"2", b"T"] and [k for k, _ in got_leader][-2:] == [b"C", b"Z"]
    assert len([k for k, _ in got_leader if k == b"D"]) == len(want)
    # The leader leaves mid-query: the waiter runs its own and gets the same rows.
    leader.send(data)
    wait_running(cpg, q)
    waiter.send(data)
    time.sleep(0.3)
    leader.close(reset=True)
    assert waiter.read_until_ready(timeout=60) == got_leader
    for c in (waiter, cancelled):
        c.close()


# ---- session pooling (docs/cache.md, "Session pooling") ----

@pytest.fixture
def sess(cpg, tusk, tmp_path):  # noqa: F811
    from auth_util import write_auth_file
    from test_console import ADMIN, ADMIN_PW
    cpg.execute("update items set name = 'item ' || id where id <= 20", dbname=TEST_DB)
    cpg.execute("drop schema if exists sess cascade; create schema sess; "
                "create table sess.items (id int, name text); insert into sess.items values (3, 'sess copy'); "
                "grant usage on schema sess to public; grant select on sess.items to public", dbname=TEST_DB)
    auth = write_auth_file(tmp_path / "userlist.txt", {ADMIN: ADMIN_PW})
    t = tusk(pg_server=cpg, pools=[txn_pool(20, mode="session", cache="on")], workers=2, cache_ttl="60s",
             auth_file=auth, admin={"users": [ADMIN]})
    # A session client never waits for the catalog: until tusk has read the dependencies of
    # items (docs/cache.md), its reads of it run uncached. Read them once, first.
    with t.connect() as w:
        wait_until(lambda: w.execute("select name from items where id = 0").fetchall() == [] and
                   cache_counters(t).get(("stores", ""), 0) > 0, 10, what="the catalog read")
    reset_stats(cpg)
    return t


def cache_counters(t):
    from test_console import psql_rows
    _, rows = psql_rows(t, "SHOW CACHE")
    return {(r["name"], r["reason"]): int(r["value"]) for r in rows}


def test_session_extended_unnamed_and_prepared_served_from_cache(cpg, sess):
    from test_console import psql
    direct = cpg.execute("select name from items where id = 3", dbname=TEST_DB)
    reset_stats(cpg)  # pg_stat_statements counts that one as "... where id = $1" too
    with sess.connect() as a, sess.connect() as b:
        for _ in range(3):
            assert a.execute(Q, (3,)).fetchall() == direct  # P/B/D/E/S, unnamed statement
            assert b.execute(Q, (3,)).fetchall() == direct
        assert calls(cpg, "from items where id = $1") == 1
        assert cache_counters(sess)[("hits", "")] == 5
        reset_stats(cpg)
        q = Q.replace("name", "name as n")
        for c in (a, b, a, b):  # named: each session's Parse reaches its server, then B/D/E/S
            assert c.execute(q, (4,), prepare=True).fetchall() == [("item 4",)]
        # The first B/D/E/S led; every later one (either session's) came from the cache.
        assert calls(cpg, "name as n from items") == 1
        # The statement is still on each client's own server: after a flush its Binds run there.
        p = psql(sess, f"CACHE FLUSH {TEST_DB}")
        assert p.returncode == 0, p.stderr
        # The flush dropped the catalog answers too: read once for them (a session client
        # never waits for the catalog, docs/cache.md).
        with sess.connect() as w:
            w.execute("select name from items where id = 0")
        time.sleep(1)
        reset_stats(cpg)
        for c in (a, b):
            assert c.execute(q, (4,), prepare=True).fetchall() == [("item 4",)]
            assert c.execute(q, (5,), prepare=True).fetchall() == [("item 5",)]
        assert calls(cpg, "name as n from items") == 2  # one per key; no 26000 from the servers
        names = {r[0] for r in a.execute("select name from pg_prepared_statements", prepare=False).fetchall()}
        assert any(n.startswith("_pg3_") for n in names), names


def test_session_extended_state_and_transactions_bypass(cpg, sess):
    with sess.connect() as plain, sess.connect() as other, sess.connect() as txn:
        assert plain.execute(Q, (3,)).fetchall() == [("item 3",)]
        other.execute("SET search_path = sess, public")
        for _ in range(2):  # never the plain session's result, never leaves its own
            assert other.execute(Q, (3,)).fetchall() == [("sess copy",)]
            assert other.execute(Q, (3,), prepare=True).fetchall() == [("sess copy",)]
        assert plain.execute(Q, (3,)).fetchall() == [("item 3",)]
        assert plain.execute(Q, (3,), prepare=True).fetchall() == [("item 3",)]
        reset_stats(cpg)
        txn.execute("BEGIN")
        for _ in range(2):
            assert txn.execute(Q, (3,)).fetchall() == [("item 3",)]
        txn.execute("COMMIT")
        assert calls(cpg, "from items where id = $1") == 2  # the transaction ran its own
        assert plain.execute(Q, (3,)).fetchall() == [("item 3",)]
        assert calls(cpg, "from items where id = $1") == 2  # still kept for the clean session


def test_session_wire_shapes_answered_as_postgresql_answers(cpg, sess):
    """Byte for byte what the client's own server says, for each shape; a named statement
    closed is gone (26000) as on PostgreSQL; a Bind of an unnamed statement whose Parse the
    cache answered is refused rather than run on the server's older unnamed statement."""
    direct = pgwire.RawClient("127.0.0.1", cpg.port)
    direct.startup("tusk_trust", TEST_DB)
    via, other = wire(sess), wire(sess)
    for c in (direct, via, other):
        assert [k for k, _ in exchange(c, parse(b"s1", SQL) + SYNC)] == [b"1", b"Z"]
    for shape in ("P/B/D(P)/E/S", "P/B/D(S)/E/S", "P/B/E/S binary", "named B/D(P)/E/S", "named B/E/S"):
        data = SHAPES[shape]
        want = exchange(direct, data)
        assert [k for k, _ in want if k in b"ED"] == [b"D"], shape
        reset_stats(cpg)
        for c in (via, other, via):
            assert exchange(c, data) == want, shape
        assert calls(cpg, "from items where id = $1") == 1, shape  # via led, the rest cached
    close = pgwire.message(b"C", b"Ss1\0") + SYNC
    for c in (direct, via):
        assert [k for k, _ in exchange(c, close)] == [b"3", b"Z"]
    gone = exchange(direct, SHAPES["named B/E/S"])
    assert [k for k, _ in gone] == [b"E", b"Z"]
    got = exchange(via, SHAPES["named B/E/S"])
    assert [k for k, _ in got] == [b"E", b"Z"]
    assert pgwire.parse_error_fields(got[0][1])["C"] == "26000"
    # other's unnamed Parses were all answered by the cache: its server never saw them.
    other.send(bind(b"", [b"11"]) + execute() + SYNC)
    kind, body = other.read_message(timeout=10)
    assert kind == b"E" and pgwire.parse_error_fields(body)["C"] == "0A000", body
    for c in (direct, via, other):
        c.close()


@pytest.mark.parametrize("mode", ["extended", "prepared"])
def test_session_pgbench_select_only(cpg, sess, tmp_path, mode):
    script = tmp_path / "hot.sql"
    script.write_text("\\set id random(1, 20)\nselect name from items where id = :id;\n")
    env = dict(os.environ, PGCONNECT_TIMEOUT="30")
    p = subprocess.run(["pgbench", "-n", "-M", mode, "-c", "4", "-j", "2", "-t", "200", "-f", str(script),
                        "-h", "127.0.0.1", "-p", str(sess.port), "-U", "tusk_trust", TEST_DB],
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    assert "number of transactions actually processed: 800/800" in p.stdout
    # Session clients never wait on another's flight: a key runs at most once per client
    # (each has one request in flight; the first answer kept serves the rest).
    assert calls(cpg, "from items where id = $1") <= 4 * 20, {k: v for k, v in cache_counters(sess).items() if v}
    assert cache_counters(sess)[("hits", "")] >= 800 - 4 * 20
    with sess.connect() as via, psycopg.connect(host="127.0.0.1", port=cpg.port, user="tusk_trust",
                                                dbname=TEST_DB, autocommit=True) as direct:
        for i in range(1, 21):
            assert via.execute(Q, (i,)).fetchall() == direct.execute(Q, (i,)).fetchall()
            assert via.execute(Q, (i,), prepare=True).fetchall() == direct.execute(Q, (i,)).fetchall()
