"""Session pooling: size limits, FIFO waiting with a deadline, reset and reuse of servers."""

import os
import signal
import socket
import subprocess
import threading
import time

import psycopg
import pytest

from conftest import BENCH_DB, DIRECT, PG_BIN, TEST_DB, SLOW, TUSK_ERROR_RE, assert_tusk_error, console_show, wait_until
from pgwire import Closed, RawClient, query_message


def pool(size, user="*", database="*"):
    return {"database": database, "user": user, "service": "main", "mode": "session", "size": size}


def backend_pid(conn):
    return conn.execute("select pg_backend_pid()").fetchone()[0]


@pytest.mark.tusk_only
def test_pool_exhausted_client_gets_error_after_pool_wait_timeout(tusk):
    t = tusk(pools=[pool(2)], pool_wait_timeout="1s")
    with t.connect() as a, t.connect() as b:
        assert backend_pid(a) != backend_pid(b)
        start = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as ei:
            with t.connect() as c:
                c.execute("select 1")
        took = time.monotonic() - start
        assert 0.9 <= took <= 5 * SLOW, f"error after {took:.2f}s, pool_wait_timeout is 1s"
        assert_tusk_error(str(ei.value))
        # the id in the client's error leads to tusk's log
        cid = TUSK_ERROR_RE.search(str(ei.value)).group(0).split()[1]
        wait_until(lambda: cid in t.log_text(), 5 * SLOW, what=f"{cid} in tusk's log")
        # the two holders are unaffected
        assert a.execute("select 'a'").fetchone() == ("a",)
        assert b.execute("select 'b'").fetchone() == ("b",)


@pytest.mark.tusk_only
def test_waiting_client_gets_the_server_a_leaving_client_frees(tusk):
    t = tusk(pools=[pool(2)], pool_wait_timeout="5s")
    a, b = t.connect(), t.connect()
    try:
        pid_a = backend_pid(a)
        backend_pid(b)
        got = {}

        def waiter():
            try:
                with t.connect() as c:
                    got["pid"] = backend_pid(c)
                    got["at"] = time.monotonic()
            except Exception as e:  # noqa: BLE001
                got["error"] = str(e)

        th = threading.Thread(target=waiter, daemon=True)
        th.start()
        time.sleep(0.5)
        assert th.is_alive(), f"third client did not wait for a server: {got}"
        left = time.monotonic()
        a.close()
        th.join(10 * SLOW)
        assert not th.is_alive()
        assert "error" not in got, got["error"]
        assert got["pid"] == pid_a, "the waiter should get the server the leaver freed"
        assert got["at"] - left < 2 * SLOW
    finally:
        a.close()
        b.close()


@pytest.mark.tusk_only
def test_waiters_are_served_first_come_first_served(tusk):
    t = tusk(pools=[pool(1)], pool_wait_timeout="10s")
    holder = t.connect()
    order, errors = [], []

    def waiter(name):
        try:
            with t.connect() as c:
                order.append(name)
                c.execute("select pg_sleep(0.2)")
        except Exception as e:  # noqa: BLE001
            errors.append(f"{name}: {e}")

    threads = []
    for name in ("first", "second", "third"):
        th = threading.Thread(target=waiter, args=(name,), daemon=True)
        th.start()
        threads.append(th)
        time.sleep(0.3)  # each has surely queued before the next arrives
    holder.close()
    for th in threads:
        th.join(20 * SLOW)
    assert errors == []
    assert order == ["first", "second", "third"]


@pytest.mark.tusk_only
def test_pools_are_per_database_and_user(tusk):
    # Were the three one pool, b would wait for a's server and fail at the deadline; 5 s and
    # not 1 s, because a's server is the pool's first and a busy machine may take a second.
    t = tusk(pools=[pool(1)], pool_wait_timeout="5s")
    with t.connect() as a:
        backend_pid(a)
        with t.connect(dbname=BENCH_DB) as b, t.connect(user="tusk_solo") as c:
            assert b.execute("select current_database()").fetchone() == (BENCH_DB,)
            assert c.execute("select current_user").fetchone() == ("tusk_solo",)


@pytest.mark.tusk_only
def test_first_matching_rule_wins(tusk):
    t = tusk(pools=[pool(1, user="tusk_solo"), pool(5)], pool_wait_timeout="1s")
    with t.connect(user="tusk_solo") as a:
        backend_pid(a)
        with pytest.raises(psycopg.OperationalError) as ei:  # tusk_solo's pool is full
            with t.connect(user="tusk_solo") as b:
                b.execute("select 1")
        assert_tusk_error(str(ei.value))
        with t.connect() as c, t.connect() as d:  # everyone else's has room
            assert backend_pid(c) != backend_pid(d)


def test_session_state_is_reset_and_server_reused(tusk):
    t = tusk(pools=[pool(1)])
    with t.connect() as a:
        pid = backend_pid(a)
        a.execute("set work_mem = '77MB'")
        a.execute("create temp table leftover (x int)")
        a.execute("prepare leftover_stmt as select 1")
        a.execute("select pg_advisory_lock(77)")
        assert a.execute("show work_mem").fetchone() == ("77MB",)
    with t.connect() as b:
        if not DIRECT:
            assert backend_pid(b) == pid, "size-1 pool: the next client should reuse the same server"
        assert b.execute("show work_mem").fetchone() == ("4MB",)
        assert b.execute("select to_regclass('leftover')").fetchone() == (None,)
        assert b.execute("select count(*) from pg_prepared_statements").fetchone() == (0,)
        assert b.execute("select count(*) from pg_locks where locktype = 'advisory'").fetchone() == (0,)


@pytest.mark.parametrize("state", ["open", "failed"])
def test_client_leaving_inside_a_transaction_is_rolled_back(tusk, state):
    """DISCARD ALL cannot run inside a transaction block: the next client must still get a clean,
    working server and must not see the first one's uncommitted work."""
    t = tusk(pools=[pool(1)], pool_wait_timeout="5s")
    a = t.connect(autocommit=False)
    a.execute("insert into kv values ('uncommitted', 'x')")
    a.execute("set local work_mem = '55MB'")
    if state == "failed":
        with pytest.raises(psycopg.errors.DivisionByZero):
            a.execute("select 1/0")
    a.close()  # leaves without COMMIT or ROLLBACK
    with t.connect() as b:
        assert b.execute("select count(*) from kv where k = 'uncommitted'").fetchone() == (0,)
        assert b.execute("show work_mem").fetchone() == ("4MB",)
        assert b.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        b.execute("insert into kv values ('after', 'y')")
        b.execute("delete from kv where k = 'after'")


def test_many_short_sessions_reuse_few_servers(tusk, pg):
    t = tusk(pools=[pool(3)])
    pids = set()
    for _ in range(30):
        with t.connect() as c:
            pids.add(backend_pid(c))
    if not DIRECT:
        # A server is being reset while the next client arrives, so more than one may be used,
        # but never more than the pool's size.
        assert len(pids) <= 3, f"30 sequential sessions used {len(pids)} servers of a size-3 pool"
        assert pg.backends("tusk_trust") <= 3


def test_reused_server_takes_the_next_clients_startup_parameters(tusk):
    """A server keeps the startup parameters of the client it was opened for, and DISCARD ALL
    resets to those. The next client on the same server must still see its own."""
    t = tusk(pools=[pool(1)])
    pids = set()
    for app, tz in [("first", "UTC"), ("second", "Asia/Tokyo"), ("third", "America/New_York")]:
        os.environ["PGTZ"] = tz  # libpq sends it as TimeZone in the startup packet
        try:
            with t.connect(application_name=app) as c:
                pids.add(backend_pid(c))
                got = c.execute("select current_setting('application_name'), current_setting('TimeZone')")
                assert got.fetchone() == (app, tz)
                assert c.info.parameter_status("application_name") == app
                assert c.info.parameter_status("TimeZone") == tz
        finally:
            del os.environ["PGTZ"]
    if not DIRECT:
        assert len(pids) == 1, "size-1 pool: one server for all three"


@pytest.mark.tusk_only
def test_idle_servers_closed_after_server_idle_timeout(tusk, pg):
    t = tusk(pools=[pool(5, user="tusk_solo"), pool(5)], server_idle_timeout="1s")
    with t.connect(user="tusk_solo") as a, t.connect(user="tusk_solo") as b:
        backend_pid(a), backend_pid(b)
    assert pg.backends("tusk_solo") >= 2, "pooled servers stay open while idle"
    wait_until(lambda: pg.backends("tusk_solo") == 0, 10 * SLOW, what="idle servers closed")
    with t.connect(user="tusk_solo") as c:
        assert c.execute("select 1").fetchone() == (1,)


@pytest.mark.tusk_only
def test_custom_server_reset_query(tusk):
    t = tusk(pools=[pool(1)], server_reset_query="RESET work_mem")
    with t.connect() as a:
        pid = backend_pid(a)
        a.execute("set work_mem = '77MB'")
        a.execute("set maintenance_work_mem = '99MB'")
    with t.connect() as b:
        assert backend_pid(b) == pid
        assert b.execute("show work_mem").fetchone() == ("4MB",)
        # only what the configured reset query resets is reset
        assert b.execute("show maintenance_work_mem").fetchone() == ("99MB",)


@pytest.mark.tusk_only
def test_server_reset_query_always_runs_after_every_transaction(tusk, pg):
    """server_reset_query_always (PgBouncer's): in transaction pooling the reset query runs after
    every transaction too, not only when tusk must reset; off (the default), a transaction-mode
    server goes back to the pool as it is."""
    pg.execute("create table if not exists reset_always_log (n serial);"
               " grant all on reset_always_log, reset_always_log_n_seq to public", dbname=TEST_DB)
    txn = {**pool(1), "mode": "transaction"}
    for always in (True, False):
        pg.execute("truncate reset_always_log", dbname=TEST_DB)
        t = tusk(pools=[txn], server_reset_query="insert into reset_always_log default values",
                 server_reset_query_always=always)
        with t.connect(autocommit=True) as a:
            for _ in range(5):
                a.execute("select 1")

        def resets():
            return pg.execute("select count(*) from reset_always_log", dbname=TEST_DB)[0][0]
        if always:
            wait_until(lambda: resets() >= 5, 10 * SLOW, what="a reset after each transaction")
        else:
            time.sleep(0.3)
            assert resets() == 0


@pytest.mark.tusk_only
def test_server_reset_query_always_discard_all_keeps_the_clients_session(tusk):
    """With server_reset_query_always and DISCARD ALL, the server forgets everything between
    transactions, yet each client's settings and prepared statements follow it as before (tusk
    sets and prepares them again), and another client on the same server sees none of them."""
    txn = {**pool(1), "mode": "transaction"}
    for always in (True, False):
        t = tusk(pools=[txn], server_reset_query="DISCARD ALL", server_reset_query_always=always)
        with t.connect(autocommit=True) as a, t.connect(autocommit=True) as b:
            a.execute("set work_mem = '77MB'")
            for i in range(3):
                assert a.execute("select %s::int", [i], prepare=True).fetchone() == (i,)
            # what the server holds at the start of the next transaction
            held = a.execute("select count(*) from pg_prepared_statements").fetchone()[0]
            assert (held == 0) if always else (held >= 1), held
            assert a.execute("show work_mem").fetchone() == ("77MB",)
            assert a.execute("select %s::int", [7], prepare=True).fetchone() == (7,)
            assert b.execute("show work_mem").fetchone() == ("4MB",)
            assert a.execute("show work_mem").fetchone() == ("77MB",)


@pytest.mark.tusk_only
@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_transaction_timeout_ends_long_transactions(tusk, pg, mode):
    """transaction_timeout (PgBouncer 1.25's, PostgreSQL 17's): a transaction open longer, or a
    statement outside one running longer, ends its client with 25P04 and its server; short
    transactions one after another are never counted together. A rule's own 0 turns it off."""
    rule = {**pool(4), "mode": mode}
    t = tusk(pools=[{**rule, "database": BENCH_DB, "transaction_timeout": "0s"}, rule], transaction_timeout="2s")
    with t.connect(autocommit=True) as busy, t.connect(autocommit=True) as idle_in_tx, \
            t.connect(autocommit=True) as slow, t.connect(dbname=BENCH_DB, autocommit=True) as exempt:
        idle_in_tx.execute("begin")
        idle_in_tx.execute("select 1")
        exempt.execute("begin")
        exempt.execute("select 1")
        pid = slow.execute("select pg_backend_pid()").fetchone()[0]
        with pytest.raises(psycopg.OperationalError) as e:
            slow.execute("select pg_sleep(30)")
        assert "transaction_timeout" in str(e.value), e.value
        for _ in range(8):  # 0.4 s apart: each short, together well past 2 s
            assert busy.execute("select 1").fetchone() == (1,)
            time.sleep(0.4)
        with pytest.raises(psycopg.OperationalError) as e:
            idle_in_tx.execute("select 1")
        assert "transaction_timeout" in str(e.value), e.value
        assert exempt.execute("select 2").fetchone() == (2,)
        exempt.execute("commit")
        wait_until(lambda: not pg.execute("select 1 from pg_stat_activity where pid = %s", [pid]), 5 * SLOW,
                   what="the slow statement's server closed")
    t.wait_log("transaction_timeout 2.0s")


@pytest.mark.tusk_only
def test_application_name_add_host(tusk, pg):
    """application_name_add_host (PgBouncer's): the client's address and port are added to the
    application_name it gave ("app" when none), as the server sees it and as the client is
    told; off (the default), the name passes as given."""
    for on in (True, False):
        t = tusk(pools=[pool(2)], application_name_add_host=on)
        for given in ("myapp", None):
            kw = {"application_name": given} if given else {}
            with t.connect(autocommit=True, **kw) as c:
                s = socket.socket(fileno=os.dup(c.pgconn.socket))
                host, port = s.getsockname()[:2]
                s.close()
                want = f"{given or 'app'} - {host}:{port}" if on else (given or "")
                assert c.execute("show application_name").fetchone() == (want,)
                assert c.info.parameter_status("application_name") == want
                pid = c.execute("select pg_backend_pid()").fetchone()[0]
                assert pg.execute("select application_name from pg_stat_activity where pid = %s", [pid]) == [(want,)]


@pytest.mark.tusk_only
def test_disable_pqexec_refuses_simple_queries(tusk):
    """disable_pqexec (PgBouncer's): the extended protocol passes, a simple Query (psql's, one
    carrying two statements) ends the connection with 08P01. Off (the default), both pass."""
    for disabled in (True, False):
        t = tusk(pools=[pool(2)], disable_pqexec=disabled)
        with t.connect(autocommit=True) as c:
            assert c.execute("select %s::int + 1", [1]).fetchone() == (2,)  # extended
        raw = RawClient("127.0.0.1", t.port)
        try:
            raw.startup("tusk_trust", TEST_DB)
            if disabled:
                raw.send(query_message("select 1; select 2"))
                kind, err = raw.expect_error_or_close()
                assert kind == "error" and err.get("C") == "08P01" and "disable_pqexec" in err.get("M", ""), err
                with pytest.raises(Closed):
                    raw.read_message(timeout=5 * SLOW)
            else:
                rows, errors = raw.simple_query("select 1; select 2")
                assert not errors and rows == [["1"], ["2"]], (rows, errors)
        finally:
            raw.close()
        p = subprocess.run([str(PG_BIN / "psql"), "-X", "-h", "127.0.0.1", "-p", str(t.port), "-U", "tusk_trust",
                            "-d", TEST_DB, "-Atc", "select 42"], capture_output=True, text=True, timeout=30 * SLOW)
        if disabled:
            assert p.returncode != 0 and "disable_pqexec" in p.stderr, (p.stdout, p.stderr)
        else:
            assert p.returncode == 0 and p.stdout.strip() == "42", (p.stdout, p.stderr)


@pytest.mark.tusk_only
def test_reserve_pool_serves_a_queue_that_waited_reserve_pool_timeout(tusk, pg):
    """reserve_pool_size / reserve_pool_timeout (PgBouncer's): a full pool opens up to
    reserve_pool_size more servers for a queue whose first client has waited
    reserve_pool_timeout, not before; the extra server closes when released with nobody
    waiting. Without a reserve the same client waits for the holder."""
    def tusk_backends():
        return pg.execute("select count(*) from pg_stat_activity where application_name = 'tusk-reserve'"
                          " and backend_type = 'client backend'")[0][0]

    txn = {**pool(1), "mode": "transaction"}
    for reserve in (1, 0):
        t = tusk(pools=[txn], pool_wait_timeout="5s", reserve_pool_size=reserve, reserve_pool_timeout="1s")
        with t.connect(application_name="tusk-reserve") as a, t.connect(application_name="tusk-reserve") as b:
            a.execute("begin")
            a.execute("select 1")  # holds the pool's only server
            start = time.monotonic()
            if reserve:
                assert b.execute("select 2").fetchone()[0] == 2
                took = time.monotonic() - start
                assert 0.9 <= took < 4 * SLOW, took  # not before reserve_pool_timeout
                wait_until(lambda: tusk_backends() == 1, 10 * SLOW, what="the reserve server closed when released")
            else:
                with pytest.raises(psycopg.OperationalError):
                    b.execute("select 2")  # pool_wait_timeout: no reserve to take
                assert time.monotonic() - start >= 4.5
            a.execute("commit")


@pytest.mark.tusk_only
def test_a_rules_reserve_pool_size_over_the_top_level(tusk):
    """A rule's own reserve_pool_size (PgBouncer's per-database reserve_pool) wins over the
    top-level one, both ways: a reserve for one rule with none at the top, and none for a rule
    whose top level has one. SHOW DATABASES tells each rule's."""
    with_reserve = {**pool(1), "mode": "transaction", "reserve_pool_size": 1}
    without = {**pool(1, user="tusk_solo"), "mode": "transaction", "reserve_pool_size": 0}
    t = tusk(pools=[without, with_reserve], pool_wait_timeout="3s", reserve_pool_size=0,
             reserve_pool_timeout="500ms", admin={"users": ["postgres"], "client_auth": "trust"})
    rows = {(r["name"], r["user"]): r["reserve_pool"] for r in console_show(t, "SHOW DATABASES")}
    assert rows == {("*", "*"): 1, ("*", "tusk_solo"): 0}, rows
    for user, reserve in (("tusk_trust", True), ("tusk_solo", False)):
        app = f"reserve-{user}"
        with t.connect(user=user, application_name=app) as a, t.connect(user=user, application_name=app) as b:
            a.execute("begin")
            a.execute("select 1")  # holds the rule's only server
            if reserve:  # a second server while the rule's size is 1 and a holds it
                assert b.execute("select 2").fetchone()[0] == 2
            else:
                with pytest.raises(psycopg.OperationalError):
                    b.execute("select 2")  # pool_wait_timeout: this rule has no reserve
            a.execute("commit")


@pytest.mark.tusk_only
def test_query_timeout_cancels_a_long_query_and_the_session_goes_on(tusk):
    # PgBouncer's query_timeout: the query is cancelled on its server; a rule's own 0 turns it off.
    solo = {**pool(1, user="tusk_solo"), "query_timeout": "0"}
    t = tusk(pools=[solo, pool(2)], query_timeout="1s")
    with t.connect() as c, t.connect(user="tusk_solo") as s:
        pid = backend_pid(c)
        exempt = {}
        th = threading.Thread(target=lambda: exempt.setdefault("r", s.execute("select pg_sleep(2.5), 1").fetchone()))
        th.start()
        start = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            c.execute("select pg_sleep(20)")
        took = time.monotonic() - start
        assert 0.9 <= took <= 2.5 * SLOW, f"cancelled after {took:.2f}s, query_timeout is 1s"
        # the session and its server stay: only the query went
        assert backend_pid(c) == pid
        assert c.execute("select 'after'").fetchone() == ("after",)
        th.join(10 * SLOW)
        assert exempt.get("r") == ("", 1), exempt  # the rule with query_timeout: 0 ran to its end
    t.wait_log("query_timeout")


@pytest.mark.tusk_only
@pytest.mark.skipif(os.geteuid() != 0, reason="stops a PostgreSQL backend with SIGSTOP")
def test_query_timeout_closes_the_client_when_the_server_ignores_the_cancel(tusk):
    # PgBouncer's case for query_timeout: a server that does not answer at all (stopped, or the
    # network gone) gets no say: a query_timeout after the cancel, the client is told and closed.
    t = tusk(pools=[pool(2)], query_timeout="500ms")
    c = t.connect()
    pid = backend_pid(c)
    os.kill(pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as ei:
            c.execute("select 1")
        took = time.monotonic() - start
        msg = str(ei.value)
        assert "query_timeout" in msg, msg
        assert_tusk_error(msg)
        assert 0.9 <= took <= 3 * SLOW, f"closed after {took:.2f}s, query_timeout is 0.5s"
    finally:
        os.kill(pid, signal.SIGCONT)
        c.close()
    # The woken server answers its cancel at once; it must not serve again all the same (a
    # server drained back into the pool here made the next client's pid equal in CI).
    time.sleep(0.5)
    with t.connect() as d:  # the pool serves on with another server
        assert backend_pid(d) != pid
    t.wait_log("outlived query_timeout")


@pytest.mark.tusk_only
def test_client_idle_timeout_closes_idle_clients_only(tusk):
    # PgBouncer's client_idle_timeout, in session and transaction pooling: an idle client is
    # closed with a clear error; one that keeps talking, or sits in a transaction, is not.
    txn = {**pool(2, user="tusk_solo"), "mode": "transaction"}
    t = tusk(pools=[txn, pool(3)], client_idle_timeout="1s")
    idle_s, idle_t, busy, in_tx = t.connect(), t.connect(user="tusk_solo"), t.connect(), t.connect(autocommit=False)
    try:
        for c in (idle_s, idle_t, busy):
            c.execute("select 1")
        in_tx.execute("select 1")  # psycopg opened a transaction: not idle, whatever the clock says
        # Past 2.6 s (the 1 s timeout and a housekeeping tick, with room) and until tusk has
        # logged both idle clients closed: busy keeps talking all the while, and must not be.
        def closed():
            return t.log_text().count("client_idle_timeout 1.0s")

        window, deadline = time.monotonic() + 2.6, time.monotonic() + 15 * SLOW
        while time.monotonic() < window or (closed() < 2 and time.monotonic() < deadline):
            assert busy.execute("select 2").fetchone() == (2,)
            time.sleep(0.3)
        for c in (idle_s, idle_t):
            with pytest.raises(psycopg.OperationalError) as ei:
                c.execute("select 3")
            msg = str(ei.value)
            assert "idle-session timeout" in msg or ei.value.sqlstate == "57P05", msg
        assert busy.execute("select 4").fetchone() == (4,)
        assert in_tx.execute("select 5").fetchone() == (5,)
        assert closed() == 2, t.log_tail()
    finally:
        for c in (idle_s, idle_t, busy, in_tx):
            c.close()
