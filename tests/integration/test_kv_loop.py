"""One-key kv calls run on the worker's own loop (issue 25; docs/kv.md, "Routing"): each worker
keeps its own non-blocking, pipelined connections to the shards. Many clients of one worker
share them and each gets its own answer; a shard connection killed mid-load fails only the
calls in flight (reads are sent again once); a client that leaves mid-call leaks nothing; a
call stuck on a row lock holds up no other call; a shard that does not answer is bounded by
the call timeout (TUSK_TEST_KV_CALL_TIMEOUT shortens it here)."""

import threading
import time

import psycopg
import pytest

from conftest import SLOW, wait_until
from kv_util import NSHARDS, Parade, environ

pytestmark = pytest.mark.tusk_only

CALL_TIMEOUT = 2.0
IDLE_CLOSE = 2.0  # seconds an extra shard connection stays without a call (10 s by default)


@pytest.fixture(scope="module")
def zone(workdir):
    p = Parade(workdir / "kv-loop", ["l1"])
    p.setup()
    z = p.zones[0]  # one worker: every client below shares it
    start_tusk(z)
    yield z
    p.destroy()


def start_tusk(z):
    with environ({"TUSK_TEST_KV_CALL_TIMEOUT": str(CALL_TIMEOUT), "TUSK_TEST_KV_IDLE_CLOSE": str(IDLE_CLOSE)}):
        z.start_tusk()


def kv_conn(zone, **kw):
    return psycopg.connect(host="127.0.0.1", port=zone.tusk.port, user="postgres", dbname="kv",
                           autocommit=True, connect_timeout=10, **kw)


def worker_backends(zone, shard=None):
    """The pids of tusk's worker connections to the shards (application_name 'tusk kv worker')."""
    with zone.pg.admin() as a:
        q = "select pid from pg_stat_activity where application_name = 'tusk kv worker'"
        if shard is not None:
            q += f" and datname = 'kv_shard_{shard}'"
        return [r[0] for r in a.execute(q).fetchall()]


def run_clients(zone, n, body):
    """body(client_index, conn) in n threads, each with its own connection; the exceptions raised."""
    errors = []

    def one(i):
        try:
            with kv_conn(zone) as c:
                body(i, c)
        except Exception as e:  # noqa: BLE001 - reported by the caller
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120 * SLOW)
    return errors


def test_many_clients_of_one_worker_interleave_on_its_shard_connections_each_with_its_own_answer(zone):
    def body(i, c):
        for j in range(150):
            key = f"many:{i}:{j % 7}"
            assert c.execute("select kv.put('default', %s, %s::jsonb)", (key, f'{{"c": {i}, "j": {j}}}')).fetchone()
            assert c.execute("select kv.get('default', %s)", (key,)).fetchone()[0] == {"c": i, "j": j}
            n = c.execute("select kv.incr('default', %s, 1)", (f"many:ctr:{i}",)).fetchone()[0]
            assert n == j + 1, (i, j, n)

    assert run_clients(zone, 12, body) == []
    # One worker: 12 clients' calls shared at most KV_LOOP_CONNS (4) connections per shard,
    # pipelined (the router's threads, which a multi-shard call would open, are not counted).
    assert 1 <= len(worker_backends(zone)) <= 4 * NSHARDS, worker_backends(zone)


def test_a_shard_connection_killed_mid_load_fails_only_calls_in_flight_and_later_calls_succeed(zone):
    stop = threading.Event()
    seen = {"ok": 0, "08006": 0}
    other = []
    lock = threading.Lock()

    def body(i, c):
        j = 0
        while not stop.is_set():
            j += 1
            key = f"kill:{i}:{j % 5}"
            try:
                if j % 2:
                    c.execute("select kv.put('default', %s, %s::jsonb)", (key, str(j)))
                else:
                    c.execute("select kv.get('default', %s)", (key,)).fetchone()
                with lock:
                    seen["ok"] += 1
            except psycopg.Error as e:
                with lock:
                    if e.sqlstate == "08006" and "lost during the call" in str(e):
                        seen["08006"] += 1
                    else:
                        other.append(e)

    t = threading.Thread(target=lambda: run_clients(zone, 6, body))
    t.start()
    try:
        for _ in range(5):
            time.sleep(0.3)
            with zone.pg.admin() as a:
                a.execute("select pg_terminate_backend(pid) from pg_stat_activity "
                          "where application_name = 'tusk kv worker'")
        time.sleep(0.3)
    finally:
        stop.set()
        t.join(60 * SLOW)
    print("kill mid-load:", seen)
    assert other == [], other
    assert seen["ok"] > 50, seen
    # A get is sent again on a new connection: only writes may report the loss.
    with kv_conn(zone) as c:
        for i in range(20):
            c.execute("select kv.put('default', %s, '1')", (f"after-kill:{i}",))
            assert c.execute("select kv.get('default', %s)", (f"after-kill:{i}",)).fetchone()[0] == 1
    assert zone.tusk.proc.poll() is None


def test_a_get_on_a_connection_killed_while_idle_is_answered(zone):
    with kv_conn(zone) as c:
        c.execute("select kv.put('default', 'idle-kill', '7')")
        with zone.pg.admin() as a:
            a.execute("select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'tusk kv worker'")
        for _ in range(3):
            assert c.execute("select kv.get('default', 'idle-kill')").fetchone()[0] == 7
            c.execute("select kv.put('default', 'idle-kill', '7')")


def hold_row_lock(zone, shard, key):
    """A transaction on the shard (as postgres, directly) that holds key's row: kv calls that
    write it wait. Returns the connection; roll it back to release."""
    with kv_conn(zone) as c:
        c.execute("select kv.put('default', %s, '0')", (key,))
    h = zone.db(shard, user="postgres")
    h.autocommit = False
    h.execute("select 1 from kv.data where ns = 'default' and key = %s for update", (key,))
    return h


def test_a_call_stuck_on_a_row_lock_holds_up_no_other_call(zone):
    shard = 0
    locked = zone.parade.key_on(shard, "locked")
    free = zone.parade.key_on(shard, "free")
    h = hold_row_lock(zone, shard, locked)
    try:
        stuck = kv_conn(zone)
        stuck.pgconn.send_query_params(b"select kv.put('default', $1, '1')", [locked.encode()])
        stuck.pgconn.flush()
        time.sleep(0.3)
        # Same worker, same shard: answered while the put waits for the lock.
        with kv_conn(zone) as c:
            t0 = time.monotonic()
            for i in range(20):
                c.execute("select kv.put('default', %s, %s::jsonb)", (free, str(i)))
                assert c.execute("select kv.get('default', %s)", (free,)).fetchone()[0] == i
            assert time.monotonic() - t0 < CALL_TIMEOUT, "calls waited behind the stuck one"
    finally:
        h.rollback()
        h.close()
    # The stuck put ends once the lock goes.
    stuck.pgconn.consume_input()
    wait_until(lambda: (stuck.pgconn.consume_input() or True) and not stuck.pgconn.is_busy(), timeout=10 * SLOW)
    res = stuck.pgconn.get_result()
    assert res.status == psycopg.pq.ExecStatus.TUPLES_OK, res.error_message
    stuck.close()


def test_a_client_that_leaves_while_its_call_is_in_flight_leaves_the_connection_usable(zone):
    shard = 1
    locked = zone.parade.key_on(shard, "leave")
    h = hold_row_lock(zone, shard, locked)
    try:
        for _ in range(10):
            c = kv_conn(zone)
            c.pgconn.send_query_params(b"select kv.put('default', $1, '5')", [locked.encode()])
            c.pgconn.flush()
            c.close()
        time.sleep(0.2)
    finally:
        h.rollback()
        h.close()
    with kv_conn(zone) as c:
        wait_until(lambda: c.execute("select kv.get('default', %s)", (locked,)).fetchone()[0] == 5,
                   timeout=10 * SLOW)
        # The first of the ten abandoned puts has landed; the others, each on a shard connection
        # of its own, take the row one after another. A put of ours made before the last of
        # them lands is overwritten (CI once read 5 after our 9): wait until no call of tusk's
        # runs on the shard, as seen a few times in a row.
        with zone.db(shard, user="postgres") as a:
            quiet = []

            def settled():
                busy = a.execute("select count(*) from pg_stat_activity where datname = current_database() "
                                 "and application_name = 'tusk kv worker' and state <> 'idle'").fetchone()[0]
                quiet.append(busy == 0)
                return quiet[-4:] == [True] * 4

            wait_until(settled, timeout=10 * SLOW, interval=0.1, what="the abandoned puts to land")
        for i in range(10):
            c.execute("select kv.put('default', %s, %s::jsonb)", (locked, str(i)))
        assert c.execute("select kv.get('default', %s)", (locked,)).fetchone()[0] == 9
    assert zone.tusk.proc.poll() is None


def test_a_shard_that_does_not_answer_is_bounded_by_the_call_timeout(zone):
    shard = 0
    locked = zone.parade.key_on(shard, "timeout")
    h = hold_row_lock(zone, shard, locked)
    try:
        with kv_conn(zone) as c:
            t0 = time.monotonic()
            with pytest.raises(psycopg.Error) as e:
                c.execute("select kv.put('default', %s, '1')", (locked,))
            took = time.monotonic() - t0
            assert e.value.sqlstate == "08006", e.value
            assert "did not answer the call within" in str(e.value) and "may or may not" in str(e.value), e.value
            assert CALL_TIMEOUT * 0.9 <= took < CALL_TIMEOUT + 5 * SLOW, took
            # The session goes on; another key of the shard answers meanwhile.
            other = zone.parade.key_on(shard, "not-locked")
            c.execute("select kv.put('default', %s, '2')", (other,))
            assert c.execute("select kv.get('default', %s)", (other,)).fetchone()[0] == 2
    finally:
        h.rollback()
        h.close()
    with kv_conn(zone) as c:
        # The timed-out put was not cancelled: its statement still waited for the row on the
        # shard (its connection closed, which a backend waiting on a lock does not notice) and
        # writes once the row is free. Only then is a new put sure to be the last (PostgreSQL
        # does not queue a new writer behind a waiter that has yet to relock the row). With
        # the shipped timeouts the shard's lock_timeout (30 s) and statement_timeout (60 s) end
        # such a statement before the call's 65 s do.
        wait_until(lambda: c.execute("select kv.get('default', %s)", (locked,)).fetchone()[0] == 1,
                   10 * SLOW, interval=0.05, what="the timed-out put to land")
        c.execute("select kv.put('default', %s, '3')", (locked,))
        assert c.execute("select kv.get('default', %s)", (locked,)).fetchone()[0] == 3



def test_tusk_stopping_with_calls_in_flight_on_its_shard_connections_exits_cleanly(zone):
    """SIGTERM while calls wait on a row lock: their clients are closed, the calls answered
    57P01 on the worker (nothing leaked: the sanitizer build reports leaks at exit)."""
    shard = 0
    locked = zone.parade.key_on(shard, "stopping")
    h = hold_row_lock(zone, shard, locked)
    try:
        waiting = []
        for _ in range(3):
            c = kv_conn(zone)
            c.pgconn.send_query_params(b"select kv.put('default', $1, '1')", [locked.encode()])
            c.pgconn.flush()
            waiting.append(c)
        time.sleep(0.3)
        t0 = time.monotonic()
        assert zone.stop_tusk() == []
        assert time.monotonic() - t0 < 10 * SLOW
        for c in waiting:
            c.close()
    finally:
        h.rollback()
        h.close()
        zone.start_tusk()
    with kv_conn(zone) as c:
        c.execute("select kv.put('default', %s, '2')", (locked,))
        assert c.execute("select kv.get('default', %s)", (locked,)).fetchone()[0] == 2


def test_a_workers_extra_shard_connections_close_when_idle_and_the_first_stays(zone):
    # Concurrent calls open extra connections per shard (up to 4); 10 s (KV_IDLE_CLOSE_S in
    # router.c; IDLE_CLOSE here) without a call closes each extra one, never the shard's
    # first. Before, they stayed open for the tusk's life.
    def body(i, c):
        for j in range(200):
            c.execute("select kv.get('default', %s)", (f"idle:{i}:{j % 5}",)).fetchone()

    most = 0
    stop = threading.Event()

    def count():
        nonlocal most
        while not stop.is_set():
            most = max(most, len(worker_backends(zone)))
            time.sleep(0.05)

    t = threading.Thread(target=count)
    t.start()
    try:
        assert run_clients(zone, 12, body) == []
    finally:
        stop.set()
        t.join()
    assert most > NSHARDS, most  # the load did open extra connections
    wait_until(lambda: len(worker_backends(zone)) <= NSHARDS, 30 * SLOW, interval=0.5,
               what="the extra connections closing")
    time.sleep(IDLE_CLOSE + 1)  # past it: the shards' first connections stay
    for s in range(NSHARDS):
        assert len(worker_backends(zone, s)) == 1, (s, worker_backends(zone))
    with kv_conn(zone) as c:  # and a closed connection's slot connects again when needed
        for i in range(20):
            c.execute("select kv.put('default', %s, '1')", (f"after-idle:{i}",))
            assert c.execute("select kv.get('default', %s)", (f"after-idle:{i}",)).fetchone()[0] == 1
    assert zone.tusk.proc.poll() is None


# ---- a get's value from the view kv.live (docs/kv.md, "Fifth step") ----

def test_a_get_through_tusk_from_the_live_view_answers_what_kv_get_answers_in_every_state_of_a_key(zone):
    # tusk reads a hit from kv.live and calls kv.get only on a miss: differential against
    # kv.get on the shard itself, for a key live, overwritten, deleted, expired, never
    # written, with a JSON null, in a namespace the catalog does not have, and malformed.
    keys = {state: zone.parade.key_on(i % NSHARDS, f"view-{state}-")
            for i, state in enumerate(["live", "over", "deleted", "expired", "never", "jnull"])}
    with kv_conn(zone) as c:
        c.execute("select kv.put('default', %s, '{\"v\": 1}')", (keys["live"],))
        c.execute("select kv.put('default', %s, '1')", (keys["over"],))
        c.execute("select kv.put('default', %s, '[2, \"x\"]')", (keys["over"],))
        c.execute("select kv.put('default', %s, '3')", (keys["deleted"],))
        c.execute("select kv.delete('default', %s)", (keys["deleted"],))
        c.execute("select kv.put('default', %s, '4', '0.3 seconds')", (keys["expired"],))
        c.execute("select kv.put('default', %s, 'null')", (keys["jnull"],))
    time.sleep(0.5)
    calls = [("default", k) for k in keys.values()] + [("nosuch", "k"), ("default", ""), ("default", "a\x1fb"),
                                                      ("default", "x" * 1025)]

    def answer(conn, ns, key):
        try:
            return ("row", conn.execute("select kv.get(%s, %s)", (ns, key)).fetchone())
        except psycopg.Error as e:
            return ("error", e.sqlstate, e.diag.message_primary)

    with kv_conn(zone) as c:
        through = [answer(c, ns, k) for ns, k in calls]
    direct = []
    for ns, k in calls:
        shard = zone.parade.shard_of(ns if ns != "nosuch" else "default", k) if k else 0
        with zone.db(shard) as d:
            direct.append(answer(d, ns, k))
    assert through == direct
    by_state = dict(zip(keys, through))
    assert by_state["live"] == ("row", ({"v": 1},))
    assert by_state["over"] == ("row", ([2, "x"],))
    assert by_state["jnull"] == ("row", (None,))  # JSON null: psycopg reads it as None too
    assert [by_state[s] for s in ("deleted", "expired", "never")] == [("row", (None,))] * 3
    assert through[-4][1] == "22023" and through[-3][1] == "22023" and through[-1][1] == "22001", through[-4:]


def test_a_key_of_a_namespace_the_catalog_dropped_is_not_read_through_the_view(zone):
    # kv.live joins kv.namespaces: a namespace pushed away leaves its rows in kv.data, and a
    # get then raises what kv.get raises (unknown namespace), through tusk as on the shard.
    def push(sql):
        with zone.pg.admin("kv_catalog") as c:
            c.execute(sql)
            c.execute("select kv_catalog.bump()")
        zone.kv("push")

    push("insert into kv_catalog.namespaces values ('gone', NULL)")
    k = zone.parade.key_on(0, "gone-")
    with kv_conn(zone) as c:
        c.execute("select kv.put('gone', %s, '\"kept\"')", (k,))
        assert c.execute("select kv.get('gone', %s)", (k,)).fetchone()[0] == "kept"
    push("delete from kv_catalog.namespaces where ns = 'gone'")
    shard = zone.parade.shard_of("gone", k)
    assert zone.sql(shard, "select count(*) from kv.data where ns = 'gone'") == [(1,)]  # the row stays
    for conn in (lambda: kv_conn(zone), lambda: zone.db(shard)):
        with conn() as c, pytest.raises(psycopg.Error) as ei:
            c.execute("select kv.get('gone', %s)", (k,))
        assert ei.value.sqlstate == "22023" and 'unknown namespace "gone"' in str(ei.value)


def test_kv_live_shows_kv_client_only_live_rows_even_to_its_own_functions(zone):
    # The view runs as its owner; security_barrier keeps a caller's function in the WHERE from
    # being evaluated on the rows the view hides (a tombstone, an expired value).
    k_dead, k_exp, k_live = (zone.parade.key_on(0, p) for p in ("bar-dead-", "bar-exp-", "bar-live-"))
    with zone.db(0) as c:
        c.execute("select kv.put('default', %s, '\"secret-dead\"')", (k_dead,))
        c.execute("select kv.delete('default', %s)", (k_dead,))
        c.execute("select kv.put('default', %s, '\"secret-expired\"', '0.2 seconds')", (k_exp,))
        c.execute("select kv.put('default', %s, '\"shown\"')", (k_live,))
    time.sleep(0.4)
    seen = []
    with zone.db(0) as c:
        c.add_notice_handler(lambda d: seen.append(d.message_primary))
        c.execute("create function pg_temp.peek(k text, v jsonb) returns bool language plpgsql cost 0.0000001 as "
                  "$$ begin raise notice 'peek % %', k, v; return true; end $$")
        rows = c.execute("select key, value from kv.live where key like 'bar-%%' and pg_temp.peek(key, value) "
                         "order by key").fetchall()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("select value from kv.data where key = %s", (k_dead,))
    assert rows == [(k_live, "shown")]
    assert not any("secret" in m for m in seen), seen
    assert any("shown" in m for m in seen), seen  # the function did run, on the live row


def test_gets_on_shards_without_kv_live_fall_back_to_kv_get_with_no_error(zone):
    # A shard database from before kv.live (tusk kv init not run again): the first prepare of
    # the get fails, the connection switches to kv.get and the call runs again, and so do the
    # calls pipelined behind it. No client sees an error, on a router thread (a new tusk's
    # first call, before it has read the catalog) or on the worker's own connections. tusk kv
    # init brings the view back.
    keys = [zone.parade.key_on(i % NSHARDS, f"fb{i}-") for i in range(8)]
    with kv_conn(zone) as c:
        for k in keys:
            c.execute("select kv.put('default', %s, %s::jsonb)", (k, f'"{k}"'))
    for s in range(NSHARDS):
        zone.sql(s, "drop view kv.live")
    try:
        assert zone.stop_tusk() == []
        start_tusk(zone)
        with kv_conn(zone) as c:  # the first call of a new tusk: a router thread runs it
            assert c.execute("select kv.get('default', %s)", (keys[1],)).fetchone()[0] == keys[1]
        # tusk's logger writes from its own thread: the line may follow the answer
        wait_until(lambda: "has no view kv.live" in zone.tusk.log_text(), 5 * SLOW, what="the fallback's log line")
        with zone.pg.admin() as a:  # fresh shard connections: each prepares the get again
            a.execute("select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'tusk kv worker'")
        wait_until(lambda: not worker_backends(zone), 10 * SLOW, what="the worker's shard connections closing")

        start = threading.Barrier(40, timeout=30 * SLOW)

        def body(i, c):
            start.wait()  # every client's first get at once, while the connections connect
            for j in range(40):
                k = keys[(i + j) % len(keys)]
                assert c.execute("select kv.get('default', %s)", (k,)).fetchone()[0] == k
                assert c.execute("select kv.get('default', %s)", (f"fb-never-{i}-{j}",)).fetchone()[0] is None

        # more clients than the worker's 4 connections per shard: calls queue on each
        # connection while it connects, then go out in one pipeline behind the failing prepare
        assert run_clients(zone, 40, body) == []
        zone.tusk.wait_log("has no view kv.live")
    finally:
        zone.kv("init")
    assert all(zone.sql(s, "select count(*) from pg_views where schemaname = 'kv' and viewname = 'live'") == [(1,)]
               for s in range(NSHARDS))
    with kv_conn(zone) as c:
        assert c.execute("select kv.get('default', %s)", (keys[0],)).fetchone()[0] == keys[0]


def test_reads_on_shards_without_kv_read_fall_back_with_no_error(zone):
    # A shard database from before kv.read and kv.read_many (the Redis GET's and MGET's calls:
    # the value, else the counter), tusk kv init not run again: their prepare fails, the
    # connection switches to the fallbacks (kv.get, else kv.counter when not 0: still one
    # statement; read_many: kv.get_many, values only) and the calls run again, those pipelined
    # behind it too. No client sees an error; gets, prepared beside it, answer too.
    keys = [zone.parade.key_on(i % NSHARDS, f"rfb{i}-") for i in range(8)]
    want = {}
    with zone.pg.admin() as a:  # connections of the test before may still run its fallbacks
        a.execute("select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'tusk kv worker'")
    wait_until(lambda: not worker_backends(zone), 10 * SLOW, what="the worker's shard connections closing")
    with kv_conn(zone) as c:
        for i, k in enumerate(keys):
            if i % 2:
                c.execute("select kv.put('default', %s, %s::jsonb)", (k, f'"{k}"'))
                want[k] = k
            else:
                c.execute("select kv.incr('default', %s, %s)", (k, i + 1))
                want[k] = i + 1
        assert [c.execute("select kv.read('default', %s)", (k,)).fetchone()[0] for k in keys] == \
            [want[k] for k in keys]
        assert c.execute("select * from kv.read_many('default', %s)", (keys,)).fetchall() == \
            sorted((k, want[k]) for k in keys)
    for s in range(NSHARDS):
        zone.sql(s, "drop function kv.read(text, text)")
        zone.sql(s, "drop function kv.read_many(text, text[])")
        zone.sql(s, "drop function kv.read_meta(text, text)")
        zone.sql(s, "drop function kv.watch_tag(text, text)")
    try:
        noted = zone.tusk.log_text().count("no kv.read")
        assert zone.stop_tusk() == []  # a new tusk logs the switch once again
        start_tusk(zone)
        with kv_conn(zone) as c:  # the first call of a new tusk: a router thread runs it
            assert c.execute("select kv.read('default', %s)", (keys[0],)).fetchone()[0] == want[keys[0]]
        with zone.pg.admin() as a:  # fresh shard connections: each prepares the read again
            a.execute("select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'tusk kv worker'")
        wait_until(lambda: not worker_backends(zone), 10 * SLOW, what="the worker's shard connections closing")
        start = threading.Barrier(40, timeout=30 * SLOW)

        def body(i, c):
            start.wait()
            for j in range(20):
                k = keys[(i + j) % len(keys)]
                assert c.execute("select kv.read('default', %s)", (k,)).fetchone()[0] == want[k]
                assert c.execute("select kv.read('default', %s)", (f"rfb-never-{i}-{j}",)).fetchone()[0] is None
                assert c.execute("select kv.get('default', %s)", (k,)).fetchone()[0] == (k if isinstance(want[k], str)
                                                                                        else None)
                meta = c.execute("select kv.read_meta('default', %s)", (k,)).fetchone()[0]  # kv.get_meta's
                assert (meta or {}).get("value") == (k if isinstance(want[k], str) else None)
                # the fallback reads the values only
                assert c.execute("select * from kv.read_many('default', %s)", (keys,)).fetchall() == \
                    sorted((k, k) for k in keys if isinstance(want[k], str))

        assert run_clients(zone, 40, body) == []
        assert zone.tusk.log_text().count("no kv.read") == noted + 1
    finally:
        zone.kv("init")
    with zone.pg.admin() as a:  # a connection keeps its fallbacks until closed: new ones have the functions again
        a.execute("select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'tusk kv worker'")
    wait_until(lambda: not worker_backends(zone), 10 * SLOW, what="the worker's shard connections closing")
    with kv_conn(zone) as c:
        assert c.execute("select kv.read('default', %s)", (keys[0],)).fetchone()[0] == want[keys[0]]
        assert c.execute("select * from kv.read_many('default', %s)", (keys,)).fetchall() == \
            sorted((k, want[k]) for k in keys)
