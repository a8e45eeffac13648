"""target_session_attrs: read-write-split over a primary and two streaming standbys
(docs/backends.md, "Routing"): provably read-only transactions on the standbys, everything
else on the primary, and read-your-writes: a client's reads after its own write see it even
with a standby that applies WAL two seconds late, while a client that never wrote is served
by that standby."""

import re
import threading
import time

import psycopg
import pytest

import pgwire
from conftest import console_show, SLOW, TEST_DB, wait_until
from relay_util import CANCEL_REQUEST, Relay
from txn_util import WireClient

ADMIN = {"users": ["postgres"], "client_auth": "trust"}


def split_pools(read_your_writes=True, size=4):
    rule = {"database": "*", "user": "*", "service": "main", "mode": "transaction", "size": size,
            "target_session_attrs": "read-write-split"}
    if not read_your_writes:
        rule["read_your_writes"] = False
    return [rule]


def cluster_service(c):
    return {"main": {"hosts": [f"127.0.0.1:{n.port}" for n in c.nodes]}}


def port_of(conn, sql="select current_setting('port')::int"):
    """The port of the server that ran sql (current_setting is a stable built-in: a
    provably read-only SELECT)."""
    return conn.execute(sql).fetchone()[0]


@pytest.fixture
def split_table(pg_cluster):
    c = pg_cluster
    c.primary.execute("drop table if exists split_t", dbname=TEST_DB)
    c.primary.execute("create table split_t (id int primary key, who text)", dbname=TEST_DB)
    c.primary.execute("grant all on split_t to tusk_trust", dbname=TEST_DB)
    for s in c.standbys:
        c.wait_replayed(s)
    return c


def test_reads_on_standbys_writes_on_primary(split_table, tusk):
    c = split_table
    t = tusk(services=cluster_service(c), pools=split_pools(), admin=ADMIN)
    primary, standbys = c.primary.port, {s.port for s in c.standbys}

    # Four clients in a read-only transaction at once each hold a server of the standby side:
    # both standbys get some. pg_is_in_recovery() inside BEGIN READ ONLY says where it ran.
    conns = [t.connect() for _ in range(4)]
    try:
        seen = []
        for x in conns:
            x.execute("begin read only")
            seen.append((x.execute("select pg_is_in_recovery()").fetchone()[0], port_of(x)))
        assert all(rec for rec, _ in seen), seen
        assert {p for _, p in seen} == standbys, seen
        for x in conns:
            x.execute("commit")
    finally:
        for x in conns:
            x.close()

    with t.connect(autocommit=True) as x:
        # Plain reads, extended protocol (psycopg's default) and simple Query (ClientCursor).
        assert {port_of(x) for _ in range(10)} <= standbys
        cur = psycopg.ClientCursor(x)
        cur.execute("select current_setting('port')::int")
        assert cur.fetchone()[0] in standbys
        # A named prepared statement: decided on its Parse's text.
        assert x.execute("select current_setting('port')::int + %s", [0], prepare=True).fetchone()[0] in standbys
        # Writes, and what cannot be proven read-only, on the primary.
        assert x.execute("insert into split_t values (1, 'a') returning current_setting('port')::int"
                         ).fetchone()[0] == primary
        assert port_of(x, "select current_setting('port')::int, random()") == primary  # volatile
        assert port_of(x, "select current_setting('port')::int from split_t for update") == primary
        assert port_of(x, "select current_setting('port')::int, pg_is_in_recovery()") == primary  # not listed
    with t.connect() as x:  # BEGIN without READ ONLY: the primary, whatever follows
        x.execute("begin")
        assert port_of(x) == primary
        x.execute("commit")
    with t.connect() as x:
        # A write inside BEGIN READ ONLY reaches a standby: PostgreSQL's own 25006.
        x.execute("begin read only")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            x.execute("insert into split_t values (2, 'b')")
        x.rollback()
    rows = [r for r in show_services(t) if r["pool"] == f"{TEST_DB}/tusk_trust"]
    roles = {r["backend"]: r["role"] for r in rows}
    assert roles[f"127.0.0.1:{primary}"] == "primary", rows
    assert {roles[f"127.0.0.1:{p}"] for p in standbys} == {"standby"}, rows


def show_services(t):
    return console_show(t, "SHOW SERVICES")


def delay_standbys(c, ms):
    for s in c.standbys:
        c.delay_replay(s, ms)


def test_read_your_writes_with_a_delayed_standby(split_table, tusk):
    c = split_table
    t = tusk(services=cluster_service(c), pools=split_pools(), admin=ADMIN)
    with t.connect(autocommit=True) as w, t.connect(autocommit=True) as r:
        # Both sides have servers before the delay (the first claims learn the roles).
        port_of(r)
        w.execute("insert into split_t values (0, 'warm')")
        for s in c.standbys:
            c.wait_replayed(s)
        delay_standbys(c, 2000)
        # The writer always sees its own row, at once.
        for i in range(1, 21):
            w.execute("insert into split_t values (%s, 'w')", [i])
            assert w.execute("select count(*) from split_t where id = %s", [i]).fetchone()[0] == 1, i
        # Two writes back to back (the second may start before the first's position is in),
        # then a read: both rows.
        for i in range(1000, 1010):
            w.execute("insert into split_t values (%s, 'w')", [i])
            w.execute("insert into split_t values (%s, 'w')", [i + 100])
            assert w.execute("select count(*) from split_t where id in (%s, %s)", [i, i + 100]).fetchone()[0] == 2, i
        # A client that never wrote is served by a standby: the last row is not there yet
        # (two seconds of apply delay), and its read-only transaction is in recovery.
        assert r.execute("select count(*) from split_t where id = 20").fetchone()[0] == 0
        with r.transaction():
            pass
    with t.connect() as r2:
        r2.execute("begin read only")
        assert r2.execute("select pg_is_in_recovery()").fetchone()[0] is True
        r2.execute("commit")
    # Once the standbys have replayed it, the writer's reads go back to them.
    with t.connect(autocommit=True) as w:
        w.execute("insert into split_t values (100, 'late')")
        lsn = c.current_lsn()
        for s in c.standbys:
            c.wait_replayed(s, lsn, timeout=30)
        # The position is read on the standby at claim time (then cached).
        assert port_of(w) in {s.port for s in c.standbys}


def test_without_read_your_writes_a_reader_can_miss_its_write(split_table, tusk):
    # The control for the test above: the same sequence with read_your_writes: false does
    # read from the delayed standby and misses the row (so the test above can fail).
    c = split_table
    t = tusk(services=cluster_service(c), pools=split_pools(read_your_writes=False), admin=ADMIN)
    with t.connect(autocommit=True) as w:
        port_of(w)
        delay_standbys(c, 2000)
        w.execute("insert into split_t values (1, 'w')")
        assert w.execute("select count(*) from split_t where id = 1").fetchone()[0] == 0


def test_no_standby_up_reads_go_to_the_primary(split_table, tusk):
    c = split_table
    for s in c.standbys:
        s.stop("immediate")
    t = tusk(services=cluster_service(c), pools=split_pools(), pool_wait_timeout="5s")
    with t.connect(autocommit=True) as x:
        for _ in range(3):
            assert port_of(x) == c.primary.port


def test_25006_from_the_primary_side_rechecks_its_role(split_table, tusk):
    # A read-only error from a server taken for a primary may mean it was demoted: its role
    # is forgotten (unknown: every pool is offered it) and the next connect there re-checks.
    # Here the primary is still one: a transaction the client made read-only answers 25006.
    c = split_table
    t = tusk(services=cluster_service(c), pools=split_pools(), admin=ADMIN)
    key = f"127.0.0.1:{c.primary.port}"
    with t.connect() as x:
        x.execute("begin")
        x.execute("set transaction read only")
        assert roles_of(t)[key] == "primary"
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            x.execute("insert into split_t values (7, 'x')")
        x.rollback()
    assert roles_of(t)[key] == "unknown"
    t.wait_log("answered 25006")
    # Writes go on (unknown fits the primary side); a new connect finds it a primary again.
    conns = [t.connect() for _ in range(4)]  # size 4: at least one new connect
    try:
        for i, x in enumerate(conns):
            x.execute("begin")
            x.execute("insert into split_t values (%s, 'y')", [10 + i])
        for x in conns:
            x.execute("commit")
    finally:
        for x in conns:
            x.close()
    wait_until(lambda: roles_of(t)[key] == "primary", 10 * SLOW, what="role re-checked")


def roles_of(t):
    return {r["backend"]: r["role"] for r in show_services(t) if r["pool"] == f"{TEST_DB}/tusk_trust"}


def test_serializable_transactions_stay_on_the_primary(split_table, tusk):
    """A standby refuses SERIALIZABLE ("cannot use serializable mode in a hot standby"), READ
    ONLY or not: a client whose transactions are serializable (pgjdbc's
    setTransactionIsolation sends SET SESSION CHARACTERISTICS) or a BEGIN ... SERIALIZABLE
    READ ONLY is served by the primary; a read-only isolation level a standby takes stays
    there. pgjdbc's suite through a split pool got the standby's 0A000 before."""
    c = split_table
    t = tusk(services=cluster_service(c), pools=split_pools(), admin=ADMIN)
    primary, standbys = c.primary.port, {s.port for s in c.standbys}
    # (Each on a connection of its own: after a transaction on the primary, a client's reads
    # wait there for its write position, read-your-writes.)
    with t.connect() as x:
        x.execute("begin read only isolation level serializable")
        assert port_of(x) == primary
        x.execute("commit")
    with t.connect() as x:
        x.execute("begin isolation level repeatable read read only")
        assert port_of(x) in standbys
        x.execute("commit")
    with t.connect() as x:
        assert port_of(x) in standbys
        x.execute("set session characteristics as transaction isolation level serializable")
        for _ in range(5):
            assert port_of(x) == primary
            assert x.execute("select current_setting('transaction_isolation')").fetchone() == ("serializable",)
    with t.connect() as x:
        x.execute("set session characteristics as transaction isolation level repeatable read")
        # The SET ran on the primary: reads come back to the standbys once its position is
        # known (read-your-writes; under ASan the first read can come before that).
        wait_until(lambda: port_of(x) in standbys, 10 * SLOW, what="a read on a standby")


def function_and_tusk(c, tusk, create):
    """The function created on the primary and replayed on the standbys, then a split tusk."""
    c.primary.execute(create, dbname=TEST_DB)
    for s in c.standbys:
        c.wait_replayed(s)
    return tusk(services=cluster_service(c), pools=split_pools(), admin=ADMIN)


def test_an_advisory_lock_a_function_took_stays_the_clients(split_table, tusk):
    """A function that takes a session advisory lock: tusk cannot see into it, asks the server
    what the session holds after the transaction, and pins the client to it. In a split pool
    the read-your-writes hook reset the server first (DISCARD ALL): the client lost its lock
    unawares and a stranger took it (asyncpg's lock_taken_in_function through a split pool)."""
    c = split_table
    t = function_and_tusk(c, tusk, "create or replace function split_lock81() returns void language sql as "
                                   "$$ select pg_advisory_lock(81) $$")
    try:
        with t.connect(autocommit=True) as holder, t.connect(autocommit=True) as stranger:
            holder.execute("select split_lock81()")
            assert stranger.execute("select pg_try_advisory_lock(81)").fetchone() == (False,)
            assert holder.execute("select pg_advisory_unlock(81)").fetchone() == (True,)
            assert stranger.execute("select pg_try_advisory_lock(81)").fetchone() == (True,)
            stranger.execute("select pg_advisory_unlock_all()")
        # Without state left behind, the server goes back to the pool, and the client's
        # write position is fetched as for any primary transaction: its reads see its writes.
        with t.connect(autocommit=True) as x:
            x.execute("select split_lock81()")
            x.execute("select pg_advisory_unlock(81)")
            x.execute("insert into split_t values (81, 'fn') on conflict (id) do update set who = 'fn'")
            assert x.execute("select who from split_t where id = 81").fetchone() == ("fn",)
    finally:
        c.primary.execute("drop function if exists split_lock81()", dbname=TEST_DB)


def test_a_harmless_function_costs_no_discard_all(split_table, tusk):
    """After a transaction that called a function, the server is asked what the session holds;
    nothing: RESET ALL (settings a function made), then read-your-writes fetches the
    primary's WAL position on it. That hook reset it with DISCARD ALL, which also throws away
    every statement tusk prepared on the server; a plain transaction pool did not."""
    c = split_table
    t = function_and_tusk(c, tusk, "create or replace function split_harmless82(x int) returns int "
                                   "language plpgsql as $$ begin return x + 1; end $$")
    try:
        with t.connect(autocommit=True) as a:
            for i in range(3):
                got, pid = a.execute("select split_harmless82(%s), pg_backend_pid()", (i,)).fetchone()
                assert got == i + 1

                def settled():
                    rows = c.primary.execute("select state, query from pg_stat_activity where pid = %s", (pid,))
                    return rows and rows[0][0] == "idle" and "split_harmless82" not in rows[0][1]
                wait_until(settled, 10 * SLOW, what="the release of the function's server")
                last = c.primary.execute("select query from pg_stat_activity where pid = %s", (pid,))[0][0]
                assert "DISCARD" not in last.upper(), f"server {pid} was reset with {last!r}"
                assert "RESET ALL" in last.upper(), last
    finally:
        c.primary.execute("drop function if exists split_harmless82(int)", dbname=TEST_DB)


def test_a_role_whose_default_is_serializable_reads_on_the_primary(split_table, tusk):
    """ALTER ROLE ... SET default_transaction_isolation = serializable: a standby refuses every
    transaction of that role's sessions ("cannot use serializable mode in a hot standby"), so
    its reads go to the primary (tusk asks a standby, once a minute per pool, what its
    sessions start with); another role's reads stay on the standbys. A client of that role
    that SETs another default still reads on the primary: tusk's own session sync
    (set_config, a SELECT) cannot run on such a standby to apply it. Before, every read of
    such a role failed, and tusk closed the client."""
    c = split_table
    c.primary.execute("drop role if exists split_ser")
    c.primary.execute("create role split_ser login")
    c.primary.execute("alter role split_ser set default_transaction_isolation = 'serializable'")
    c.primary.execute("grant select on split_t to split_ser", dbname=TEST_DB)
    c.primary.execute("insert into split_t values (83, 'ser') on conflict (id) do update set who = 'ser'",
                      dbname=TEST_DB)
    for s in c.standbys:
        c.wait_replayed(s)
    t = tusk(services=cluster_service(c), pools=split_pools(), admin=ADMIN)
    primary, standbys = c.primary.port, {s.port for s in c.standbys}
    try:
        for _ in range(2):
            with t.connect(user="split_ser") as x:
                for _ in range(4):
                    assert x.execute("select who from split_t where id = 83").fetchone() == ("ser",)
                    assert port_of(x) == primary
                    assert x.execute("select current_setting('transaction_isolation')").fetchone() == ("serializable",)
        with t.connect() as other:
            assert port_of(other) in standbys
        with t.connect(user="split_ser") as x:
            x.execute("set default_transaction_isolation = 'read committed'")
            for _ in range(3):
                assert x.execute("select who from split_t where id = 83").fetchone() == ("ser",)
                assert x.execute("select current_setting('transaction_isolation')").fetchone() == ("read committed",)
                assert port_of(x) == primary
        t.wait_log("the standbys refuse tusk_test/split_ser's sessions")
    finally:
        c.primary.execute("revoke all on split_t from split_ser", dbname=TEST_DB)
        c.primary.execute("drop role split_ser")


def test_a_batch_that_writes_after_a_read_runs_on_the_primary(split_table, tusk):
    """The side is chosen for the whole implicit transaction up to the Sync, not its first
    statement: a psycopg pipeline whose first statement reads and a later one writes, and
    asyncpg's copy_records_to_table (a prepare ending with Flush, its SELECT ... LIMIT 1 on the
    table, then the COPY in the same implicit transaction) got a standby's 25006 before. A
    batch seen whole up to its Sync that only reads still goes to a standby; one whose Sync
    has not arrived when it needs a server goes to the primary (a pipeline's first statement)."""
    import asyncio

    import asyncpg

    c = split_table
    t = tusk(services=cluster_service(c), pools=split_pools(), admin=ADMIN)
    standbys = {s.port for s in c.standbys}
    with t.connect(autocommit=True) as x:
        with x.pipeline():
            first = x.execute("select count(*) from split_t")
            x.execute("insert into split_t values (85, 'pipe') on conflict (id) do update set who = 'pipe'")
            last = x.execute("select who from split_t where id = 85")
        assert first.fetchone()[0] >= 0
        assert last.fetchone() == ("pipe",)
    with t.connect(autocommit=True) as y:  # Parse/Bind/Describe/Execute/Sync of a read: a standby
        assert y.execute("select current_setting('port')::int where %s", (True,)).fetchone()[0] in standbys
        with y.pipeline():
            reads = [y.execute("select %s::int", (i,)) for i in range(3)]
        assert [r.fetchone()[0] for r in reads] == [0, 1, 2]

    async def copy():
        conn = await asyncpg.connect(host="127.0.0.1", port=t.port, user="tusk_trust", database=TEST_DB)
        try:
            done = await conn.copy_records_to_table("split_t", records=[(86, "copy"), (87, "copy")])
            return done, await conn.fetchval("select count(*) from split_t where who = 'copy'")
        finally:
            await conn.close()

    assert asyncio.run(copy()) == ("COPY 2", 2)


@pytest.mark.parametrize("target", ["read-write-split", "primary"])
def test_listen_reaches_the_primary_whichever_host_is_listed_first(split_table, tusk, target):
    """tusk answers LISTEN itself and listens on one connection per pool; NOTIFYs happen only
    on the primary. That connection went to the service's first host: a standby listed first
    refused its LISTEN ("cannot execute LISTEN during recovery") and no notification ever
    came. It now goes to a backend known to be the primary, and one that reports
    in_hot_standby at login is left for another."""
    c = split_table
    hosts = [f"127.0.0.1:{n.port}" for n in (c.standbys[0], c.primary, c.standbys[1])]
    rule = {"database": "*", "user": "*", "service": "main", "mode": "transaction", "size": 4,
            "target_session_attrs": target}
    t = tusk(services={"main": {"hosts": hosts}}, pools=[rule], admin=ADMIN)
    with t.connect(autocommit=True) as listener, t.connect(autocommit=True) as sender:
        got = []
        listener.add_notify_handler(lambda n: got.append(n.payload))
        listener.execute("listen split_ch")
        for i in range(3):
            sender.execute("select pg_notify('split_ch', %s)", (f"n{i}",))
        # (psycopg 3.1 reads notifications while it runs a statement)
        wait_until(lambda: listener.execute("select 1") and len(got) >= 3, 10 * SLOW, what="3 notifications")
        assert got == ["n0", "n1", "n2"]


@pytest.mark.parametrize("ends_by", ["stop", "timeout"])
def test_a_gone_clients_write_position_read_that_never_answers(pg, tusk, ends_by):
    # read-your-writes reads the primary's WAL position after each transaction there, on the
    # same server, off the client's path. A client that leaves meanwhile is kept until that read
    # ends; here it is never answered (a relay holds it back). It ends by server_reset_timeout
    # (the kept client is freed then, the slot comes back: one server, and the next client
    # writes), or tusk stops first (the exit is clean, the kept client freed at exit: an ASan
    # build reported its leak before).
    relay = Relay(pg.port)
    relay.hold = b"pg_current_wal_insert_lsn"
    try:
        t = tusk(services={"main": {"hosts": [f"127.0.0.1:{relay.port}"]}}, pools=split_pools(size=1),
                 server_reset_timeout="1s", pool_wait_timeout=f"{int(5 * SLOW)}s")
        with t.connect(autocommit=True) as x:
            # volatile: the primary's side, so its end reads the WAL position
            assert x.execute("select 1 from (select random()) r").fetchone() == (1,)
            assert relay.held.wait(10 * SLOW), "the WAL position was never asked for"
        t.wait_log("logout after")
        gone = re.search(r" (c[0-9a-f]{8}) \S+: logout after", t.log_text()).group(1)
        if ends_by == "timeout":
            t.wait_log("server connection failed: timed out waiting for the server")
            relay.hold = None
            with t.connect(autocommit=True) as y:
                assert y.execute("select 2 from (select random()) r").fetchone() == (2,)
        assert t.stop() == []
        freed_at_exit = re.search(rf" {gone} \S+: freed at exit", t.log_text()) is not None
        assert freed_at_exit == (ends_by == "stop"), t.log_tail()  # (the next client's may be)
    finally:
        relay.close()


def test_the_write_position_is_read_only_after_the_clients_late_cancel_landed(pg, tusk):
    # A client cancelled its query on the primary's side and the query ended before the cancel
    # reached PostgreSQL (a relay holds CancelRequests back 0.5 s). read-your-writes then reads
    # the primary's WAL position on that server: sent while the cancel was on its way, it was
    # what the cancel landed on (the server closed, "could not read the primary's WAL
    # position"). It is now sent only after the cancel has reached PostgreSQL, and the same
    # server serves the client's next query.
    relay = Relay(pg.port)
    try:
        t = tusk(services={"main": {"hosts": [f"127.0.0.1:{relay.port}"]}}, pools=split_pools(size=1),
                 server_reset_timeout=f"{int(5 * SLOW)}s", pool_wait_timeout=f"{int(5 * SLOW)}s")
        with t.connect(autocommit=True) as x:
            pid = x.execute("select pg_backend_pid() from (select random()) r").fetchone()[0]
            wait_until(lambda: any(b"pg_current_wal_insert_lsn" in d for _, d in list(relay.sent)), 5 * SLOW,
                       what="the first write position read")  # (off the client's path)
            relay.slow = (CANCEL_REQUEST, 0.5)
            relay.sent.clear()
            canceller = threading.Timer(0.05, x.cancel)
            canceller.start()
            assert x.execute("select 1 from pg_sleep(0.2), (select random()) r").fetchone() == (1,)
            canceller.join(10 * SLOW)
            wait_until(lambda: any(b"pg_current_wal_insert_lsn" in d for _, d in list(relay.sent)), 5 * SLOW,
                       what="the write position read")
            sent = list(relay.sent)
            cancel_at = [at for at, d in sent if CANCEL_REQUEST in d]
            fetch_at = [at for at, d in sent if b"pg_current_wal_insert_lsn" in d]
            assert cancel_at and min(fetch_at) > min(cancel_at), (cancel_at, fetch_at)
            assert x.execute("select pg_backend_pid() from (select random()) r").fetchone()[0] == pid
        assert "could not read the primary's WAL position" not in t.log_text()
    finally:
        relay.close()


@pytest.mark.parametrize("asked", ["standby_use", "replay_position"])
def test_a_client_gone_while_tusk_asks_its_standby_leaves_nothing_behind(split_table, tusk, asked):
    # Before a standby serves a read, tusk may ask it something on the client's server: whether
    # it serves the pool's sessions (once a minute per pool), and with read-your-writes, how far
    # it has replayed. A client that leaves while the question is out (a relay holds it back):
    # the server is closed and its slot comes back; with one server a side, the next reader is
    # served by a standby at once.
    c = split_table
    hold = b"default_transaction_isolation" if asked == "standby_use" else b"pg_last_wal_replay_lsn"
    relays = [Relay(s.port) for s in c.standbys]
    try:
        hosts = [f"127.0.0.1:{c.primary.port}"] + [f"127.0.0.1:{r.port}" for r in relays]
        t = tusk(services={"main": {"hosts": hosts}}, pools=split_pools(size=1), pool_wait_timeout=f"{int(3 * SLOW)}s")
        if asked == "replay_position":
            with t.connect(autocommit=True) as x:  # the standby side asked its question already
                assert port_of(x) in {s.port for s in c.standbys}
        for r in relays:
            r.hold = hold
        x = WireClient(t.port)
        if asked == "replay_position":
            assert x.simple_query("insert into split_t values (1, 'w')")[1] == []  # the next read needs the check
            time.sleep(0.5 * SLOW)  # the write's position read on the primary (its reads stay there till then)
        x.send(pgwire.query_message("select current_setting('port')::int"))
        wait_until(lambda: any(r.held.is_set() for r in relays), 10 * SLOW, what="the standby asked")
        x.close()
        t.wait_log("client left before the server was ready")
        for r in relays:
            r.hold = None
        with t.connect(autocommit=True) as y:
            assert port_of(y) in {s.port for s in c.standbys}
    finally:
        for r in relays:
            r.close()
