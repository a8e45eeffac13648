"""The result cache and SingleFlight (src/flight/, docs/cache.md) against a real PostgreSQL 15
with pg_stat_statements preloaded, so that what the server actually ran can be counted."""

import random
import socket
import struct
import threading
import time

import psycopg
import pytest

import pgwire
from conftest import SLOW, TEST_DB, _make_pg, connect
from txn_util import txn_pool

SLOW_QUERY = ("SELECT a.id, b.id FROM items a, items b, items c "
              "WHERE c.id <= 3 AND (a.id * 7 + b.id * 13 + c.id) % 5000 = 4999")


@pytest.fixture(scope="module")
def cpg(workdir):
    """A PostgreSQL of this module's own with pg_stat_statements."""
    s = _make_pg(workdir / "pg-cache", with_bench=False)
    with open(s.data / "postgresql.conf", "a") as f:
        f.write("shared_preload_libraries = 'pg_stat_statements'\n"
                "pg_stat_statements.track = all\n"
                "wal_level = logical\n")  # cache_invalidation: logical
    s.stop()
    s.start()
    s.execute("create extension if not exists pg_stat_statements", dbname=TEST_DB)
    s.execute("create role tusk_other login")
    s.execute("grant select on items to tusk_other", dbname=TEST_DB)
    yield s
    s.destroy()


def calls(pg, fragment):
    """How many times PostgreSQL ran statements whose text contains fragment."""
    rows = pg.execute("select coalesce(sum(calls), 0) from pg_stat_statements where query like %s "
                      "and query not like '%%pg_stat_statements%%'", ("%" + fragment + "%",), dbname=TEST_DB)
    return int(rows[0][0])


def reset_stats(pg):
    pg.execute("select pg_stat_statements_reset()", dbname=TEST_DB)


def cache_pool(mode="on", **extra):
    return txn_pool(40, cache=mode, **extra)


def wire(t, user="tusk_trust", timeout=60.0):
    """A raw client speaking the simple protocol (Query), which is what the cache serves."""
    c = pgwire.RawClient("127.0.0.1", t.port, timeout=timeout)
    for kind, body in c.startup(user, TEST_DB):
        if kind == b"K":
            c.cancel_key = struct.unpack("!II", body[:8])
    return c


def cancel(t, client):
    """A CancelRequest with client's key, on a connection of its own."""
    with socket.create_connection(("127.0.0.1", t.port), timeout=5) as s:
        s.sendall(struct.pack("!IIII", 16, 80877102, *client.cancel_key))
        s.recv(1)  # tusk closes it when done


def rows_of(c, sql):
    rows, errors = c.simple_query(sql)
    assert not errors, errors
    return rows


def test_coalesce_200_identical_queries_run_once(cpg, tusk):
    t = tusk(pg_server=cpg, pools=[cache_pool("coalesce")], workers=2, cache_coalesce_wait="20s")
    direct = cpg.execute(SLOW_QUERY, dbname=TEST_DB)
    conns = [wire(t) for _ in range(200)]
    for c in conns:  # logged in and idle: no server held
        assert rows_of(c, "select 1") == [["1"]]
    reset_stats(cpg)
    barrier = threading.Barrier(len(conns))
    results = [None] * len(conns)

    def run(i):
        barrier.wait()
        results[i] = conns[i].simple_query(SLOW_QUERY)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(conns))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    want = sorted([[str(a), str(b)] for a, b in direct])
    for r in results:
        assert r is not None
        rows, errors = r
        assert not errors
        assert sorted(rows) == want
    assert calls(cpg, "items a, items b, items c") == 1
    for c in conns:
        c.close()


@pytest.fixture
def on(cpg, tusk):
    """tusk with cache: on for every client (one pool rule), and a clean items row 1."""
    cpg.execute("update items set name = 'item 1' where id = 1", dbname=TEST_DB)
    t = tusk(pg_server=cpg, pools=[cache_pool("on")], workers=2, cache_ttl="60s")
    reset_stats(cpg)
    return t


def test_repeated_read_served_from_memory(cpg, on):
    c = wire(on)
    q = "SELECT name FROM items WHERE id = 2"
    assert rows_of(c, q) == [["item 2"]]
    assert rows_of(c, q) == [["item 2"]]
    other = wire(on)
    assert rows_of(other, q) == [["item 2"]]
    assert calls(cpg, "FROM items WHERE id =") == 1
    # Another text is another key.
    assert rows_of(c, "SELECT name FROM items WHERE id = 3") == [["item 3"]]
    assert calls(cpg, "FROM items WHERE id =") == 2


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_reload_turning_the_cache_on_tracks_clients_logged_in_before(cpg, tusk, mode):
    """Issue 23: the relay's hook list is chosen per client and follows a reload: a writer
    logged in while no rule had the cache (its list empty) invalidates what a reload let the
    cache keep, from its very next statement."""
    from lifecycle_util import reload, write_config
    cpg.execute("update items set name = 'item 1' where id = 1", dbname=TEST_DB)
    t = tusk(pg_server=cpg, pools=[txn_pool(40, mode=mode, cache="off")], workers=1)
    writer = wire(t)
    assert rows_of(writer, "select 1") == [["1"]]
    write_config(t, cpg, [txn_pool(40, mode=mode, cache="on")], workers=1, cache_ttl="60s")
    reload(t)
    reader = wire(t)
    q = "SELECT name FROM items WHERE id = 1"
    assert rows_of(reader, q) == [["item 1"]]
    assert rows_of(reader, q) == [["item 1"]]  # kept now
    rows_of(writer, "UPDATE items SET name = 'changed' WHERE id = 1")
    assert rows_of(reader, q) == [["changed"]]
    writer.close()
    reader.close()


@pytest.mark.parametrize("how", ["autocommit", "commit", "psycopg"])
def test_write_then_read_sees_the_write(cpg, on, how):
    reader, writer = wire(on), wire(on)
    q = "SELECT name FROM items WHERE id = 1"
    assert rows_of(reader, q) == [["item 1"]]
    assert rows_of(reader, q) == [["item 1"]]  # cached now
    if how == "autocommit":
        rows_of(writer, "UPDATE items SET name = 'changed' WHERE id = 1")
    elif how == "commit":
        rows_of(writer, "BEGIN")
        rows_of(writer, "UPDATE items SET name = 'changed' WHERE id = 1")
        rows_of(writer, "COMMIT")
    else:  # extended protocol, as drivers send it
        with on.connect(autocommit=True) as pc:
            pc.execute("update items set name = %s where id = 1", ("changed",))
    assert rows_of(reader, q) == [["changed"]]  # another client
    assert rows_of(writer, q) == [["changed"]]  # the writer itself


def test_rollback_leaves_the_value(cpg, on):
    c = wire(on)
    q = "SELECT name FROM items WHERE id = 1"
    assert rows_of(c, q) == [["item 1"]]
    rows_of(c, "BEGIN")
    rows_of(c, "UPDATE items SET name = 'never' WHERE id = 1")
    assert rows_of(c, q) == [["never"]]  # inside the transaction: not cached, its own view
    rows_of(c, "ROLLBACK")
    assert rows_of(c, q) == [["item 1"]]


def test_fill_versus_write_race_never_stores_the_old_rows(cpg, on):
    """A slow read is in flight when a write to its table commits: its (older) result goes to
    its own client, but is not kept for the next reader."""
    q = "SELECT a.name FROM items a, items b, items c WHERE a.id = 1 AND c.id <= 3 AND b.id + c.id < 0 OR a.id = 1 AND b.id = 1 AND c.id = 1"
    reader, writer, late = wire(on), wire(on), wire(on)
    reader.send(pgwire.query_message(q))
    time.sleep(0.05)  # the read has started on its server
    rows_of(writer, "UPDATE items SET name = 'fresh' WHERE id = 1")
    got = []
    for kind, body in reader.read_until_ready():
        if kind == b"D":
            got.append(body)
    assert len(got) == 1
    assert rows_of(late, q) == [["fresh"]]


def test_commit_seen_by_postgresql_before_tusk_serves_nothing_old(cpg, on):
    """PostgreSQL makes a commit visible before tusk reads the writer's ReadyForQuery. A write
    that commits and then keeps its server busy (COMMIT inside a multi-statement query, then a
    sleep) opens that window wide: a reader that filled the cache with the old row while the
    write was uncommitted must not be served it once PostgreSQL shows the new one.
    The write holds its commit back 3 s (x SLOW) after its UPDATE, waited for on pg_stat_activity:
    the reads meanwhile need a second server connection (the writer holds the first), and a CI
    run under load once took the 0.7 s that a 1 s sleep left, then read the committed row."""
    q = "SELECT name FROM items WHERE id = 2"
    cpg.execute("update items set name = 'item 2' where id = 2", dbname=TEST_DB)
    reader, writer = wire(on), wire(on)
    assert rows_of(reader, q) == [["item 2"]]
    writer.send(pgwire.query_message(
        f"UPDATE items SET name = 'after' WHERE id = 2; SELECT pg_sleep({3 * SLOW}); COMMIT; SELECT pg_sleep(2)"))
    deadline = time.time() + 10 * SLOW
    while not cpg.execute("select count(*) from pg_stat_activity where wait_event = 'PgSleep' "
                          "and query like 'UPDATE items SET name = ''after''%'", dbname=TEST_DB)[0][0]:
        assert time.time() < deadline, "the write's UPDATE never ran"
        time.sleep(0.02)
    # the update is done, not committed: readers see the old row
    assert rows_of(reader, q) == [["item 2"]]
    assert rows_of(reader, q) == [["item 2"]]
    deadline = time.time() + 10
    while cpg.execute("select name from items where id = 2", dbname=TEST_DB)[0][0] != "after":
        assert time.time() < deadline, "the write never committed"
        time.sleep(0.05)
    # Committed in PostgreSQL; the writer's ReadyForQuery is still 2 s away.
    assert rows_of(reader, q) == [["after"]]
    assert rows_of(wire(on), q) == [["after"]]
    writer.read_until_ready()
    assert rows_of(reader, q) == [["after"]]
    cpg.execute("update items set name = 'item 2' where id = 2", dbname=TEST_DB)


def test_logical_invalidation_sees_writes_around_tusk(cpg, tusk):
    """cache_invalidation: logical: a write made directly on PostgreSQL (around tusk) reaches
    the cache by logical decoding within a few polls, where without it the old row is served
    until cache_ttl. Control first: the same steps through a tusk without the option do serve
    the old row, so the test can tell the two apart."""
    cpg.execute("drop table if exists logi; create table logi (k int primary key, v text); "
                "insert into logi values (1, 'old'); grant all on logi to public", dbname=TEST_DB)
    q = "SELECT v FROM logi WHERE k = 1"

    def cached(t):
        c = wire(t)
        deadline = time.time() + 20
        while True:  # kept once its database is followed (the slot is made on first use)
            before = calls(cpg, "FROM logi WHERE k =")
            assert rows_of(c, q) == [[cpg.execute("select v from logi where k = 1", dbname=TEST_DB)[0][0]]]
            if calls(cpg, "FROM logi WHERE k =") == before:
                return c
            assert time.time() < deadline, "the read was never served from the cache"
            time.sleep(0.1)

    plain = tusk(pg_server=cpg, pools=[cache_pool("on")], cache_ttl="60s")
    c = cached(plain)
    cpg.execute("update logi set v = 'direct 1' where k = 1", dbname=TEST_DB)
    time.sleep(1)
    assert rows_of(c, q) == [["old"]]  # without decoding: stale until cache_ttl
    plain.stop()

    t = tusk(pg_server=cpg, pools=[cache_pool("on")], cache_ttl="60s", cache_invalidation="logical",
             cache_logical_poll="50ms", cache_logical_user="postgres")
    c = cached(t)
    for i in range(2, 5):
        cpg.execute("update logi set v = %s where k = 1", (f"direct {i}",), dbname=TEST_DB)
        deadline = time.time() + 5
        while rows_of(c, q) != [[f"direct {i}"]]:
            assert time.time() < deadline, f"a write around tusk was not seen within 5 s (poll 50 ms)"
            time.sleep(0.05)
    # The reads between the writes were cached again (the option does not turn caching off).
    c = cached(t)
    assert rows_of(c, q) == [["direct 4"]]
    t.wait_log("following database")


def test_users_and_search_path_never_share(cpg, on):
    cpg.execute("drop schema if exists s1 cascade; drop schema if exists s2 cascade; "
                "create schema s1; create schema s2; "
                "create table s1.t (v text); create table s2.t (v text); "
                "insert into s1.t values ('one'); insert into s2.t values ('two'); "
                "grant usage on schema s1, s2 to public; grant select on s1.t, s2.t to public",
                dbname=TEST_DB)
    a, b = wire(on), wire(on)
    rows_of(a, "SET search_path = s1")
    rows_of(b, "SET search_path = s2")
    assert rows_of(a, "SELECT v FROM t") == [["one"]]
    assert rows_of(b, "SELECT v FROM t") == [["two"]]
    assert rows_of(a, "SELECT v FROM t") == [["one"]]
    # Row-level security keyed on the role: each user sees their own rows only.
    cpg.execute("drop table if exists secrets; create table secrets (owner name, v text); "
                "insert into secrets values ('tusk_trust', 'mine'), ('tusk_other', 'theirs'); "
                "alter table secrets enable row level security; alter table secrets force row level security; "
                "create policy own on secrets using (owner = current_user); "
                "grant select on secrets to public", dbname=TEST_DB)
    me, them = wire(on), wire(on, user="tusk_other")
    q = "SELECT v FROM public.secrets"
    assert rows_of(me, q) == [["mine"]]
    assert rows_of(them, q) == [["theirs"]]
    assert rows_of(me, q) == [["mine"]]
    assert rows_of(them, q) == [["theirs"]]


@pytest.mark.parametrize("sql", [
    "SELECT name, now() FROM items WHERE id = 1",
    "SELECT name FROM items WHERE id = 1 FOR UPDATE",
    "SELECT name FROM items WHERE id = 1 AND random() >= 0",
])
def test_bypasses_run_every_time(cpg, on, sql):
    c = wire(on)
    rows_of(c, sql)
    rows_of(c, sql)
    assert calls(cpg, "FROM items WHERE id = $1") == 2


def test_reads_in_a_transaction_bypass(cpg, on):
    c = wire(on)
    q = "SELECT name FROM items WHERE id = 4"
    rows_of(c, "BEGIN")
    rows_of(c, q)
    rows_of(c, q)
    rows_of(c, "COMMIT")
    assert calls(cpg, "FROM items WHERE id =") == 2


def test_temp_tables_bypass(cpg, on):
    c = wire(on)
    rows_of(c, "CREATE TEMP TABLE items (id int, name text)")  # pins the client; shadows items
    rows_of(c, "INSERT INTO items VALUES (5, 'temp')")
    q = "SELECT name FROM items WHERE id = 5"
    assert rows_of(c, q) == [["temp"]]
    other = wire(on)
    assert rows_of(other, q) == [["item 5"]]
    assert rows_of(c, q) == [["temp"]]
    assert rows_of(other, q) == [["item 5"]]


def test_errors_are_never_cached(cpg, on):
    cpg.execute("drop table if exists later", dbname=TEST_DB)
    c = wire(on)
    q = "SELECT x FROM later"
    rows, errors = c.simple_query(q)
    assert errors and errors[0]["C"] == "42P01"
    cpg.execute("create table later (x int); insert into later values (7); grant select on later to public",
                dbname=TEST_DB)
    assert rows_of(c, q) == [["7"]]


def test_ddl_flushes_the_database(cpg, on):
    cpg.execute("drop table if exists d; create table d (x int); insert into d values (1); "
                "grant all on d to public", dbname=TEST_DB)
    c, admin = wire(on), wire(on)
    q = "SELECT x FROM d"
    assert rows_of(c, q) == [["1"]]
    assert rows_of(c, q) == [["1"]]
    # TRUNCATE names no row: tusk cannot tell what it wrote, so the database goes stale.
    rows_of(admin, "TRUNCATE d")
    assert rows_of(c, q) == []


def slow_query_of_at_least(pg, seconds):
    """A cacheable query (no function call) that runs at least that long here, and its rows.
    Its time grows linearly with n (the rows of c): one warm-up and a timed run at a small n
    say how far to jump, and a timed run there (doubling if still short) confirms it. Kept
    on the PostgreSQL object: a later caller asking no longer reuses it (three callers calibrated from
    scratch each took ~25 s of a CI phase)."""
    kept = getattr(pg, "slow_query", None)  # (q, its rows, the seconds its timed run took)
    if kept and kept[2] >= seconds:
        return kept[0], kept[1]
    n = 6
    warmed = False
    while True:
        q = SLOW_QUERY.replace("c.id <= 3", f"c.id <= {n}")
        if not warmed:
            pg.execute(q, dbname=TEST_DB)  # warm: a cold first run says too much
            warmed = True
        t0 = time.monotonic()
        rows = pg.execute(q, dbname=TEST_DB)
        took = time.monotonic() - t0
        if took >= seconds or n >= 800:
            rows = sorted([[str(a), str(b)] for a, b in rows])
            pg.slow_query = (q, rows, took)
            return q, rows
        # a quarter over the linear estimate, at least double, at most 800
        n = min(800, max(2 * n, int(n * seconds * 1.25 / max(took, 1e-3)) + 1))


def running(pg, q):
    """Backends running q now (pg_stat_activity), so a test need not guess from sleeps."""
    return pg.execute("select count(*) from pg_stat_activity where state = 'active' and query = %s", (q,),
                      dbname=TEST_DB)[0][0]


def wait_running(pg, q, n=1):
    deadline = time.monotonic() + 10
    while running(pg, q) < n:
        assert time.monotonic() < deadline, f"{q} did not start"
        time.sleep(0.02)


def test_waiter_cancel_detaches_only_that_waiter(cpg, tusk):
    t = tusk(pg_server=cpg, pools=[cache_pool("coalesce")], workers=2, cache_coalesce_wait="20s")
    q, _ = slow_query_of_at_least(cpg, 3.0)
    leader, waiter = wire(t), wire(t)
    leader.send(pgwire.query_message(q))
    wait_running(cpg, q)
    waiter.send(pgwire.query_message(q))
    time.sleep(0.2)
    assert running(cpg, q) == 1  # the waiter waits; it runs nothing
    cancel(t, waiter)
    msgs = waiter.read_until_ready(timeout=5)
    errors = [pgwire.parse_error_fields(b) for k, b in msgs if k == b"E"]
    assert errors and errors[0]["C"] == "57014", msgs
    # The leader carries on and gets its rows.
    msgs = leader.read_until_ready(timeout=60)
    assert not [b for k, b in msgs if k == b"E"]
    assert [b for k, b in msgs if k == b"D"]
    assert rows_of(waiter, "select 1") == [["1"]]


def test_leader_killed_or_cancelled_releases_its_waiters(cpg, tusk):
    q, want = slow_query_of_at_least(cpg, 2.0)
    for end in ("kill", "cancel"):
        # A tusk per round: the killed leader's server is cleaned up some time after its query
        # ends, and what that cleanup marks stale (conservatively) would keep the next round's
        # clients from joining one flight, which is not what this test is about.
        t = tusk(pg_server=cpg, pools=[cache_pool("coalesce")], workers=2, cache_coalesce_wait="30s")
        deadline = time.monotonic() + 30
        while running(cpg, q) > 0:
            assert time.monotonic() < deadline, "the previous round's query never ended"
            time.sleep(0.05)
        leader, w1, w2 = wire(t), wire(t), wire(t)
        reset_stats(cpg)
        leader.send(pgwire.query_message(q))
        wait_running(cpg, q)
        w1.send(pgwire.query_message(q))
        w2.send(pgwire.query_message(q))
        time.sleep(0.2)
        assert running(cpg, q) == 1, end  # only the leader's runs: the others wait on it
        if end == "kill":
            leader.close(reset=True)
        else:
            cancel(t, leader)
            msgs = leader.read_until_ready(timeout=10)
            assert [pgwire.parse_error_fields(b)["C"] for k, b in msgs if k == b"E"] == ["57014"]
        for w in (w1, w2):
            rows, errors = [], []
            for kind, body in w.read_until_ready(timeout=60):
                if kind == b"E":
                    errors.append(pgwire.parse_error_fields(body))
                elif kind == b"D":
                    rows.append(body)
            assert not errors
            assert len(rows) == len(want)
        # Released, the waiters ran it themselves (one may lead the other).
        assert 1 <= calls(cpg, "items a, items b, items c") <= 2


def test_differential_random_reads_and_writes(cpg, on):
    """Several clients read and write at random through tusk with the cache on; every read is
    checked against what PostgreSQL holds just before and just after it: a counter that only
    goes up must read within [before, after], and never below what the client itself wrote."""
    cpg.execute("drop table if exists cnt; create table cnt (k int primary key, ver int not null); "
                "insert into cnt select g, 0 from generate_series(1, 5) g; grant all on cnt to public",
                dbname=TEST_DB)
    failures = []

    def worker(seed):
        rnd = random.Random(seed)
        c = wire(on)
        direct = psycopg.connect(host="127.0.0.1", port=cpg.port, user="postgres", dbname=TEST_DB,
                                 autocommit=True)
        written = {}
        try:
            for _ in range(150):
                k = rnd.randint(1, 5)
                op = rnd.random()
                if op < 0.55:
                    before = direct.execute("select ver from cnt where k = %s", (k,)).fetchone()[0]
                    got = int(rows_of(c, f"SELECT ver FROM cnt WHERE k = {k}")[0][0])
                    after = direct.execute("select ver from cnt where k = %s", (k,)).fetchone()[0]
                    if not before <= got <= after or got < written.get(k, 0):
                        failures.append((seed, k, before, got, after, written.get(k)))
                elif op < 0.65:
                    before = direct.execute("select ver from cnt where k = 1").fetchone()[0]
                    got = rows_of(c, "SELECT k, ver FROM cnt WHERE k IN (1, 2) ORDER BY k")
                    after = direct.execute("select ver from cnt where k = 1").fetchone()[0]
                    if not before <= int(got[0][1]) <= after:
                        failures.append((seed, "pair", before, got, after))
                elif op < 0.85:
                    rows = rows_of(c, f"UPDATE cnt SET ver = ver + 1 WHERE k = {k} RETURNING ver")
                    written[k] = int(rows[0][0])
                elif op < 0.95:
                    rows_of(c, "BEGIN")
                    rows = rows_of(c, f"UPDATE cnt SET ver = ver + 1 WHERE k = {k} RETURNING ver")
                    rows_of(c, "COMMIT")
                    written[k] = int(rows[0][0])
                else:
                    rows_of(c, "BEGIN")
                    rows_of(c, f"UPDATE cnt SET ver = ver + 1 WHERE k = {k}")
                    rows_of(c, "ROLLBACK")
        finally:
            c.close()
            direct.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not failures, failures[:5]
    # The cache did serve reads (otherwise this proves nothing about it).
    n = calls(cpg, "SELECT ver FROM cnt WHERE k =")
    assert n < 4 * 150 * 0.55, n


def test_show_cache_cache_flush_and_metrics(cpg, tusk, tmp_path):
    from auth_util import write_auth_file
    from conftest import free_port
    from test_console import ADMIN, ADMIN_PW, psql, psql_rows
    import urllib.request

    auth = write_auth_file(tmp_path / "userlist.txt", {ADMIN: ADMIN_PW})
    http = f"127.0.0.1:{free_port()}"
    t = tusk(pg_server=cpg, pools=[cache_pool("on")], auth_file=auth, cache_ttl="60s",
             admin={"users": [ADMIN], "http": http})
    c = wire(t)
    q = "SELECT name FROM items WHERE id = 9"
    for _ in range(3):
        assert rows_of(c, q) == [["item 9"]]
    rows_of(c, "SELECT name, CURRENT_TIMESTAMP FROM items WHERE id = 9")
    header, rows = psql_rows(t, "SHOW CACHE")
    assert header == ["name", "reason", "value"]
    got = {(r["name"], r["reason"]): int(r["value"]) for r in rows}
    assert got[("hits", "")] == 2
    assert got[("misses", "")] == 1
    assert got[("stores", "")] == 1
    assert got[("entries", "")] == 1
    assert got[("bypasses", "function_call")] == 1
    body = urllib.request.urlopen(f"http://{http}/metrics", timeout=10).read().decode()
    assert "tusk_cache_hits_total 2\n" in body
    assert 'tusk_cache_bypasses_total{reason="function_call"} 1\n' in body
    assert "tusk_cache_entries 1\n" in body
    p = psql(t, f"CACHE FLUSH {TEST_DB}")
    assert p.returncode == 0, p.stderr
    reset_stats(cpg)
    assert rows_of(c, q) == [["item 9"]]
    assert calls(cpg, "FROM items WHERE id =") == 1  # gone from the cache: it ran again
    _, rows = psql_rows(t, "SHOW CACHE")
    got = {(r["name"], r["reason"]): int(r["value"]) for r in rows}
    assert got[("flushes", "")] == 1


def test_extended_protocol_writes_invalidate_by_table(cpg, on):
    """A driver's prepared write (named statement, executed again and again with Bind only)
    invalidates its table each time; a prepared read of another table does not flush it."""
    cpg.execute("drop table if exists other; create table other (x int); grant all on other to public",
                dbname=TEST_DB)
    reader = wire(on)
    q = "SELECT name FROM items WHERE id = 6"
    with on.connect(autocommit=True, prepare_threshold=0) as pc:
        for i in range(3):
            assert rows_of(reader, q) == [[f"item 6" if i == 0 else f"v{i - 1}"]]
            assert rows_of(reader, q) == rows_of(reader, q)
            pc.execute("update items set name = %s where id = 6", (f"v{i}",))
            assert rows_of(reader, q) == [[f"v{i}"]]
        reset_stats(cpg)
        assert rows_of(reader, q) == [["v2"]]
        pc.execute("select x from other where x = %s", (1,))  # prepared read: no invalidation
        pc.execute("insert into other values (%s)", (1,))      # another table
        assert rows_of(reader, q) == [["v2"]]
        assert calls(cpg, "FROM items WHERE id =") == 0
    cpg.execute("update items set name = 'item 6' where id = 6", dbname=TEST_DB)


def served_from_cache(pg, c, q, fragment, tries=50):
    """Whether q comes to be answered without PostgreSQL running it, once tusk has read the
    volatility of its functions (the lookup runs beside the first requests, which bypass)."""
    for _ in range(tries):
        want = rows_of(c, q)
        reset_stats(pg)
        if rows_of(c, q) == want and rows_of(c, q) == want and calls(pg, fragment) == 0:
            return True
        time.sleep(0.1)
    return False


def runs_every_time(pg, c, q, fragment, n=8):
    """Whether each of n runs of q (spread over the time a lookup takes) reached PostgreSQL."""
    reset_stats(pg)
    for _ in range(n):
        rows_of(c, q)
        time.sleep(0.1)
    return calls(pg, fragment) == n


def test_function_volatility_read_from_the_catalog(cpg, tusk):
    on = tusk(pg_server=cpg, pools=[cache_pool("on")], workers=2, cache_ttl="60s")
    cpg.execute("drop function if exists tusk_plus(int); drop function if exists tusk_vol(int); "
                "drop sequence if exists tusk_seq; create sequence tusk_seq; grant usage on tusk_seq to public; "
                "create function tusk_plus(int) returns int immutable language sql as 'select $1 + 1'; "
                "create function tusk_vol(int) returns int language sql as 'select $1 + 2'; "
                "alter function tusk_plus(int) owner to tusk_trust",
                dbname=TEST_DB)
    c, other = wire(on), wire(on)
    # Built-in immutable functions and aggregates over them: cached once their volatility is known.
    assert served_from_cache(cpg, c, "SELECT count(*) FROM items WHERE id <= 3", "count(*) FROM items")
    assert rows_of(other, "SELECT count(*) FROM items WHERE id <= 3") == [["3"]]
    assert served_from_cache(cpg, c, "SELECT abs(id - 10) FROM items WHERE id = 2", "abs(id -")
    assert rows_of(c, "SELECT abs(id - 10) FROM items WHERE id = 2") == [["8"]]
    assert served_from_cache(cpg, c, "SELECT lower(name) FROM items WHERE id = 2", "lower(name)")
    assert served_from_cache(cpg, c, "SELECT tusk_plus(id) FROM items WHERE id = 2", "tusk_plus(id)")
    assert rows_of(other, "SELECT tusk_plus(id) FROM items WHERE id = 2") == [["3"]]
    # Volatile and stable ones never are.
    for q, fragment in [("SELECT random() < 2 FROM items WHERE id = 2", "random() <"),
                        ("SELECT now() IS NOT NULL FROM items WHERE id = 2", "now() IS NOT"),
                        ("SELECT nextval('tusk_seq') > 0 FROM items WHERE id = 2", "nextval("),
                        ("SELECT tusk_vol(id) FROM items WHERE id = 2", "tusk_vol(id)")]:
        assert runs_every_time(cpg, c, q, fragment), q
    # The same function made VOLATILE through tusk: not served from the cache from then on.
    rows_of(other, "CREATE OR REPLACE FUNCTION tusk_plus(int) RETURNS int VOLATILE LANGUAGE sql "
                   "AS 'select $1 + 5'")
    assert rows_of(c, "SELECT tusk_plus(id) FROM items WHERE id = 2") == [["7"]]
    assert runs_every_time(cpg, c, "SELECT tusk_plus(id) FROM items WHERE id = 2", "tusk_plus(id)")


def warm_catalog(pg, c):
    """Until a read of items is served from the cache: tusk has read its dependencies."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        reset_stats(pg)
        rows_of(c, "SELECT name FROM items WHERE id = 0")
        if calls(pg, "FROM items WHERE id =") == 0:
            return
        time.sleep(0.2)
    raise AssertionError("tusk never kept a read of items")


def test_session_mode_serves_only_clients_whose_session_is_known(cpg, tusk):
    cpg.execute("update items set name = 'item 3' where id = 3", dbname=TEST_DB)
    cpg.execute("drop schema if exists sess cascade; create schema sess; "
                "create table sess.items (id int, name text); insert into sess.items values (3, 'sess copy'); "
                "grant usage on schema sess to public; grant select on sess.items to public", dbname=TEST_DB)
    t = tusk(pg_server=cpg, pools=[txn_pool(20, mode="session", cache="on")], workers=2, cache_ttl="60s")
    q = "SELECT name FROM items WHERE id = 3"
    a, b = wire(t), wire(t)
    assert rows_of(a, q) == [["item 3"]]
    # A session client never waits for the catalog: the first reads of a relation run while
    # tusk reads its dependencies (docs/cache.md).
    warm_catalog(cpg, a)
    assert rows_of(a, q) == [["item 3"]]
    reset_stats(cpg)
    assert rows_of(b, q) == [["item 3"]]  # another session: from the cache
    assert rows_of(a, q) == [["item 3"]]
    assert calls(cpg, "FROM items WHERE id =") == 0

    # A session whose state tusk does not follow (SET, temp tables, a transaction) neither
    # gets nor leaves a shared result.
    other = wire(t)
    rows_of(other, "SET search_path = sess, public")
    assert rows_of(other, q) == [["sess copy"]]
    assert rows_of(other, q) == [["sess copy"]]
    assert rows_of(b, q) == [["item 3"]]
    assert rows_of(wire(t), q) == [["item 3"]]
    temp = wire(t)
    rows_of(temp, "CREATE TEMP TABLE items (id int, name text)")
    rows_of(temp, "INSERT INTO items VALUES (3, 'temp')")
    assert rows_of(temp, q) == [["temp"]]
    txn = wire(t)
    rows_of(txn, "BEGIN")
    assert rows_of(txn, q) == [["item 3"]]
    rows_of(txn, "COMMIT")
    reset_stats(cpg)
    assert rows_of(txn, q) == [["item 3"]]
    assert calls(cpg, "FROM items WHERE id =") == 1
    # Nothing of theirs was kept (the temp table's INSERT bumped the name items: a miss).
    # CREATE TEMP TABLE is DDL: the catalog answers went with it; read once for them.
    fresh = wire(t)
    warm_catalog(cpg, fresh)
    reset_stats(cpg)
    assert rows_of(fresh, q) == [["item 3"]]
    assert rows_of(b, q) == [["item 3"]]
    assert rows_of(fresh, q) == [["item 3"]]
    assert calls(cpg, "FROM items WHERE id =") == 1

    # A write through a session-mode client invalidates what the others read.
    writer = wire(t)
    rows_of(writer, "UPDATE items SET name = 'changed 3' WHERE id = 3")
    assert rows_of(a, q) == [["changed 3"]]
    assert rows_of(b, q) == [["changed 3"]]
    rows_of(writer, "UPDATE items SET name = 'item 3' WHERE id = 3")
    assert rows_of(fresh, q) == [["item 3"]]
    for c in (a, b, other, temp, txn, fresh, writer):
        c.close()


def test_results_larger_than_the_write_buffer_are_cached_whole(cpg, tusk):
    on = tusk(pg_server=cpg, pools=[cache_pool("on")], workers=2, cache_ttl="60s", cache_max_result="8MB",
              log_level="debug")
    """A ~6 MB result (far above the 32 kB client write buffer, and more than the kernel
    buffers of a loopback connection take) is kept and served whole,
    also to a client that reads it slowly and sends a second Query while it is written."""
    q = "SELECT id, name || repeat('x', 6000) AS pad FROM items WHERE id > 0 ORDER BY id"
    direct = [[str(i), pad] for i, pad in cpg.execute(q, dbname=TEST_DB)]
    assert len(direct) == 1000
    c = wire(on)
    reset_stats(cpg)
    assert rows_of(c, q) == direct
    assert calls(cpg, "|| repeat(") == 1  # the fragment matches what PostgreSQL ran
    assert served_from_cache(cpg, c, q, "|| repeat(")
    # Slow reader, and a Query behind the cached one: both answered, in order.
    # A small receive window, set before connecting: the answer cannot all be in flight.
    slow = pgwire.RawClient.__new__(pgwire.RawClient)
    slow.sock = socket.socket()
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.sock.settimeout(60)
    slow.sock.connect(("127.0.0.1", on.port))
    slow.timeout, slow.buf = 60.0, b""
    slow.startup("tusk_trust", TEST_DB)
    reset_stats(cpg)
    slow.send(pgwire.query_message(q))
    time.sleep(0.3)  # tusk has more than the socket takes: the rest waits for the reader
    slow.send(pgwire.query_message("SELECT name FROM items WHERE id = 6"))  # behind it
    time.sleep(0.3)
    first = slow.read_until_ready()
    second = slow.read_until_ready()
    rows = [m for m in first if m[0] == b"D"]
    assert len(rows) == 1000 and first[-1] == (b"Z", b"I")
    assert [m for m in second if m[0] == b"D"] and second[-1] == (b"Z", b"I")
    assert calls(cpg, "|| repeat(") == 0  # the first came from the cache
    # ... and was written as the reader took it, the second Query waiting behind it.
    for _ in range(50):  # the log is written by its own thread
        if "larger than the write buffer is written" in on.log_path.read_text():
            break
        time.sleep(0.1)
    else:
        pytest.fail("the cached answer was not written in parts")
    reset_stats(cpg)
    assert rows_of(wire(on), q) == direct
    assert calls(cpg, "|| repeat(") == 0
    slow.close()
    c.close()


def test_pipelined_write_invalidates_at_its_own_commit(cpg, tusk):
    """Two requests pipelined by one client: a write, then a write to another table that
    commits a second later. The first one's ReadyForQuery must not end the second one's
    invalidation: a read while the second runs (the old row, rightly) is not kept, and a read
    after it commits sees the new row. (Before: the first ReadyForQuery cleared both, and the
    old row stayed cached until cache_ttl.)"""
    cpg.execute("drop table if exists pipe_a, pipe_b; create table pipe_a (v int); insert into pipe_a values (0); "
                "create table pipe_b (id int primary key, v text); insert into pipe_b values (1, 'old'); "
                "grant select, update on pipe_a, pipe_b to tusk_trust", dbname=TEST_DB)
    t = tusk(pg_server=cpg, pools=[cache_pool("on")], cache_ttl="60s", workers=1)
    w, r = wire(t), wire(t)
    q = "SELECT v FROM pipe_b WHERE id = 1"
    assert rows_of(r, q) == [["old"]]
    assert rows_of(r, q) == [["old"]]
    w.send(pgwire.query_message("UPDATE pipe_a SET v = v + 1")
           + pgwire.query_message("UPDATE pipe_b SET v = 'new' WHERE id = 1; SELECT pg_sleep(1)"))
    first = w.read_until_ready()
    assert [k for k, _ in first] == [b"C", b"Z"], first
    time.sleep(0.2)  # the second request is running, its update not yet committed
    assert rows_of(r, q) == [["old"]]
    second = w.read_until_ready()
    assert not [b for k, b in second if k == b"E"], second
    assert rows_of(r, q) == [["new"]]
    assert rows_of(r, q) == [["new"]]
