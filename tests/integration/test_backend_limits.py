"""Pools against a backend that refuses logins (issue 9, items 7 and 12).

- A pool created by a login to a database that does not exist, with min_size: its refills back
  off (0.25 s doubling, like any failing backend), log at most a line a minute, and the pool
  retires once nobody uses it; a new client still gets PostgreSQL's own 3D000.
- A role with CONNECTION LIMIT 1 and a pool of size 2: the second login or claim is answered
  53300 by PostgreSQL; tusk makes it wait for the busy server within pool_wait_timeout instead
  of failing at once, and fails it with 53300 and the client's id when the wait runs out."""

import re
import threading
import time
from datetime import datetime

import psycopg
import pytest

from conftest import SLOW, TEST_DB, TUSK_ERROR_RE, assert_tusk_error, wait_until
from pgwire import RawClient, startup_packet
from test_metrics import scrape, start_with_http, value

pytestmark = pytest.mark.tusk_only

NO_DB = "tusk_no_such_db"
LIMITED = "tusk_limited"
LINE_TS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) UTC")


def rule(mode="session", size=2, **kw):
    return {"database": "*", "user": "*", "service": "main", "mode": mode, "size": size, **kw}


def stamped(log, *patterns):
    """Times (seconds) of the log lines that contain every pattern."""
    out = []
    for line in log.splitlines():
        m = LINE_TS.match(line)
        if m and all(p in line for p in patterns):
            out.append(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp())
    return out


def test_min_size_pool_of_missing_database_backs_off_logs_little_and_retires(tusk):
    t = start_with_http(tusk, pools=[rule(size=4, min_size=2)], log_level="debug")
    ctx = f"{NO_DB}/tusk_trust@"

    with pytest.raises(psycopg.OperationalError) as ei:
        t.connect(dbname=NO_DB)
    assert f'database "{NO_DB}" does not exist' in str(ei.value)
    assert not TUSK_ERROR_RE.search(str(ei.value)), "PostgreSQL's own 3D000 is relayed, not a tusk error"

    retired = f"pool {NO_DB}/tusk_trust retired"
    wait_until(lambda: retired in t.log_text(), 30 * SLOW, what="the pool to retire")
    log = t.log_text()
    # One "connecting" line per server attempt: the client's, then the refills.
    attempts = stamped(log, ctx, ": connecting")
    refills = attempts[1:]
    assert len(refills) == 5, f"retire after 5 refills in a row, saw {len(refills)}:\n{t.log_tail(80)}"
    gaps = [b - a for a, b in zip(refills, refills[1:])]
    # The backoff before the 5th is 2 s +-25%, rounded up to the 1 s housekeeping tick.
    assert gaps[-1] >= 1.45, f"no backoff between refills: gaps {gaps}"
    assert gaps[-1] > gaps[0], f"the backoff does not grow: gaps {gaps}"

    # Logging: one line for the refills (the first failure), one for the retirement, and the
    # client's own failure; no per-attempt warnings.
    warns = [line for line in log.splitlines() if " WARN" in line and NO_DB in line]
    assert sum("min_size connect failed" in line for line in warns) == 1, "\n".join(warns)
    assert sum(retired in line for line in warns) == 1, "\n".join(warns)
    assert len(warns) <= 4, "\n".join(warns)

    # Retired: no more attempts.
    n = len(stamped(t.log_text(), ctx, ": connecting"))
    time.sleep(3 * SLOW)
    assert len(stamped(t.log_text(), ctx, ": connecting")) == n, f"a retired pool kept connecting:\n{t.log_tail(20)}"

    # The pool is still listed (metrics walk every pool), with no server.
    fam = scrape(t.http_port)
    assert value(fam, "tusk_pool_size", database=NO_DB, user="tusk_trust") == 4
    assert value(fam, "tusk_servers", database=NO_DB, user="tusk_trust") == 0

    # A new client still gets PostgreSQL's answer, and an existing database still works.
    with pytest.raises(psycopg.OperationalError) as ei:
        t.connect(dbname=NO_DB)
    assert f'database "{NO_DB}" does not exist' in str(ei.value)
    with t.connect() as c:
        assert c.execute("select 1").fetchone() == (1,)


@pytest.fixture
def limited_role(pg):
    pg.execute(f"drop role if exists {LIMITED}")
    pg.execute(f"create role {LIMITED} login connection limit 1")
    pg.execute(f"grant all on table items to {LIMITED}", dbname=TEST_DB)
    yield LIMITED
    pg.execute(f"select pg_terminate_backend(pid) from pg_stat_activity where usename = '{LIMITED}'")
    wait_until(lambda: pg.backends(LIMITED) == 0, 10 * SLOW, what="limited role's backends gone")
    pg.execute(f"revoke all on table items from {LIMITED}", dbname=TEST_DB)
    pg.execute(f"drop role {LIMITED}")


def hold_server(t, mode):
    """A client of the limited role that holds the only backend the role may have."""
    a = t.connect(user=LIMITED)
    if mode == "transaction":
        a.autocommit = False
        a.execute("select 1")  # inside a transaction: the server stays with a
    else:
        a.execute("select 1")
    return a


def second_client(t, mode, out):
    start = time.monotonic()
    try:
        with t.connect(user=LIMITED, connect_timeout=int(30 * SLOW)) as b:
            pid = b.execute("select pg_backend_pid()").fetchone()[0]
            out["ok"] = (pid, time.monotonic() - start)
    except psycopg.Error as e:
        out["error"] = (e.sqlstate, str(e), time.monotonic() - start)


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_role_connection_limit_second_client_waits_for_the_first(tusk, pg, limited_role, mode):
    t = tusk(pools=[rule(mode=mode, size=2)], pool_wait_timeout=f"{int(10 * SLOW)}s")
    a = hold_server(t, mode)
    pid_a = a.execute("select pg_backend_pid()").fetchone()[0]
    out = {}
    th = threading.Thread(target=second_client, args=(t, mode, out), daemon=True)
    th.start()
    # b's login is refused by PostgreSQL (53300) and b waits instead of failing.
    wait_until(lambda: "has no connection for another login" in t.log_text(), 10 * SLOW,
               what="tusk to see the 53300")
    time.sleep(1)
    assert not out, f"the second client did not wait: {out}"
    if mode == "transaction":
        a.commit()  # the server goes back to the pool, to b
    else:
        a.close()  # session mode: the server goes back when a leaves
    th.join(15 * SLOW)
    assert "ok" in out, f"the second client failed: {out}\n{t.log_tail(30)}"
    pid_b, took = out["ok"]
    assert pid_b == pid_a, "b got the server a released (the role may have only one)"
    assert took >= 1.0
    if mode == "transaction":
        # Both keep working, one transaction at a time, on the one backend the role may have.
        assert a.execute("select 2").fetchone() == (2,)
        a.commit()
        a.close()
    assert pg.backends(LIMITED) <= 1


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_role_connection_limit_second_client_gets_53300_after_pool_wait_timeout(tusk, limited_role, mode):
    t = tusk(pools=[rule(mode=mode, size=2)], pool_wait_timeout="2s")
    a = hold_server(t, mode)
    try:
        out = {}
        second_client(t, mode, out)
        assert "error" in out, f"the second client got a server beside the first: {out}"
        sqlstate, msg, took = out["error"]
        assert "53300" in msg or sqlstate == "53300" or "timed out" in msg, msg
        assert "timed out after 2.0s waiting for a server connection" in msg, msg
        assert_tusk_error(msg)
        assert 1.8 <= took <= 6 * SLOW, f"failed after {took:.2f}s, pool_wait_timeout is 2s"
        # The first client is unharmed.
        assert a.execute("select 3").fetchone() == (3,)
    finally:
        a.close()
    # With the first gone, a new client gets the server at once.
    start = time.monotonic()
    with t.connect(user=LIMITED) as c:
        assert c.execute("select 4").fetchone() == (4,)
    assert time.monotonic() - start < 2 * SLOW


def test_wildcard_pool_without_clients_retires_after_pool_idle_timeout(tusk, pg):
    """A pool a "*" rule made for whatever a client named stops its work (min_size servers) once
    nobody used it for pool_idle_timeout; a pool of a named rule keeps its min_size."""
    t = tusk(pools=[rule(size=4, min_size=2, user="tusk_solo", database=TEST_DB), rule(size=4, min_size=2)],
             pool_idle_timeout="2s")
    for user in ("tusk_solo", "tusk_trust"):
        with t.connect(user=user) as c:
            assert c.execute("select 1").fetchone() == (1,)
    wait_until(lambda: pg.backends("tusk_trust") == 2 and pg.backends("tusk_solo") == 2, 10 * SLOW,
               what="min_size servers of both pools")
    wait_until(lambda: f"pool {TEST_DB}/tusk_trust retired: no client for 2s" in t.log_text(), 10 * SLOW,
               what="the wildcard pool to retire")
    wait_until(lambda: pg.backends("tusk_trust") == 0, 5 * SLOW, what="the retired pool's servers to close")
    time.sleep(2.5)
    assert pg.backends("tusk_trust") == 0, "a retired pool refilled min_size"
    assert pg.backends("tusk_solo") == 2, "the named rule's pool must keep min_size"
    assert f"pool {TEST_DB}/tusk_solo retired" not in t.log_text()
    # A client wakes it: same pool (not a new one), min_size again.
    with t.connect() as c:
        assert c.execute("select 2").fetchone() == (2,)
        wait_until(lambda: pg.backends("tusk_trust") >= 2, 10 * SLOW, what="min_size after the pool woke")
    assert t.log_text().count(f"pool {TEST_DB}/tusk_trust created") == 1
    t.wait_log(f"pool {TEST_DB}/tusk_trust: a client is back")


def test_max_connections_reached_second_client_waits_for_the_first(tusk, private_pg):
    """"sorry, too many clients already" (53300 from max_connections, other applications holding
    the other slots) is waited out like the role limit: the pool has one server, so the second
    client waits for it."""
    private_pg.execute("alter system set max_connections = 4")
    private_pg.execute("alter system set superuser_reserved_connections = 0")
    private_pg.stop()
    private_pg.start()
    others = [psycopg.connect(host="127.0.0.1", port=private_pg.port, user="tusk_trust", dbname=TEST_DB)
              for _ in range(3)]
    try:
        t = tusk(pg_server=private_pg, pools=[rule(mode="transaction", size=3)],
                 pool_wait_timeout=f"{int(10 * SLOW)}s")
        a = t.connect()
        a.autocommit = False
        a.execute("select 1")  # holds the last slot PostgreSQL has
        out = {}
        th = threading.Thread(target=lambda: second_client_as(t, "tusk_trust", out), daemon=True)
        th.start()
        wait_until(lambda: "too many clients already" in t.log_text(), 10 * SLOW, what="tusk to see the 53300")
        time.sleep(0.5)
        assert not out, f"the second client did not wait: {out}"
        a.commit()
        th.join(15 * SLOW)
        assert "ok" in out, f"the second client failed: {out}\n{t.log_tail(30)}"
        a.close()
    finally:
        for c in others:
            c.close()


def second_client_as(t, user, out):
    start = time.monotonic()
    try:
        with t.connect(user=user, connect_timeout=int(30 * SLOW)) as b:
            out["ok"] = (b.execute("select 5").fetchone()[0], time.monotonic() - start)
    except psycopg.Error as e:
        out["error"] = (e.sqlstate, str(e), time.monotonic() - start)


def test_pools_made_by_unauthenticated_names_are_bounded(tusk):
    """A "*" rule makes a pool for whatever (database, user) a startup packet names, before the
    client authenticates, and pools are never freed: their number is bounded (10000). Past it a
    new name gets 53300 "too many pools"; existing pools keep working."""
    t = tusk(pools=[rule(database=TEST_DB, user="tusk_trust"), rule(client_auth="reject")],
             log_level="warn")
    with t.connect() as c:  # its pool exists before the flood
        assert c.execute("select 1").fetchone() == (1,)
    rss_before = t.status("VmRSS")
    limit = 10000

    def attempt(i):
        r = RawClient("127.0.0.1", t.port)
        try:
            r.send(startup_packet({"user": "nobody", "database": f"flood{i}"}))
            kind, fields = r.expect_error_or_close()
            assert kind == "error", fields
            return fields
        finally:
            r.close()

    for i in range(limit - 1):  # tusk_test/tusk_trust is one of the 10000
        fields = attempt(i)
        assert fields["C"] == "28000", fields
    fields = attempt(limit)
    assert fields["C"] == "53300" and "too many pools" in fields["M"], fields
    assert_tusk_error(fields["M"])
    # A name seen before still finds its pool; the existing pool still serves.
    assert attempt(5)["C"] == "28000"
    with t.connect() as c:
        assert c.execute("select 2").fetchone() == (2,)
    rss_after = t.status("VmRSS")
    print(f"VmRSS {rss_before} kB -> {rss_after} kB with {limit} pools")
    assert t.wait_log("pools exist already").count("pools exist already") == 1, "the refusal is logged at most once a minute"


def test_role_connection_limit_claim_between_transactions_waits(tusk, pg, limited_role):
    """Transaction mode, both clients logged in: b's next transaction needs a server while a is
    inside one; the login tusk tries for b is refused (53300) and b's query waits for a's server."""
    t = tusk(pools=[rule(mode="transaction", size=2)], pool_wait_timeout=f"{int(10 * SLOW)}s")
    a = t.connect(user=LIMITED)
    b = t.connect(user=LIMITED)
    try:
        a.autocommit = False
        pid_a = a.execute("select pg_backend_pid()").fetchone()[0]
        out = {}

        def query():
            start = time.monotonic()
            try:
                out["ok"] = (b.execute("select pg_backend_pid()").fetchone()[0], time.monotonic() - start)
            except psycopg.Error as e:
                out["error"] = str(e)

        th = threading.Thread(target=query, daemon=True)
        th.start()
        wait_until(lambda: "has no connection for another login" in t.log_text(), 10 * SLOW,
                   what="tusk to see the 53300")
        time.sleep(1)
        assert not out, f"b's query did not wait: {out}"
        a.commit()
        th.join(15 * SLOW)
        assert "ok" in out, f"b's query failed: {out}\n{t.log_tail(30)}"
        assert out["ok"][0] == pid_a and out["ok"][1] >= 1.0, out
        # The cap is remembered: the next overlap queues without another refused login.
        refusals = t.log_text().count("53300 too many connections for role")
        a.execute("select 1")
        th = threading.Thread(target=query, daemon=True)
        out.clear()
        th.start()
        time.sleep(1)
        assert not out
        a.commit()
        th.join(15 * SLOW)
        assert "ok" in out, out
        assert t.log_text().count("53300 too many connections for role") == refusals
    finally:
        a.close()
        b.close()


# ---- max_db_connections / max_user_connections across the pools of several rules -------------

def _hold_server(t, user):
    c = t.connect(user=user, autocommit=True)
    c.execute("begin")
    c.execute("select 1")
    return c


def _gets_server(t, user):
    """True when a transaction of user's gets a server within pool_wait_timeout."""
    try:
        with t.connect(user=user, autocommit=True) as c:
            c.execute("begin")
            c.execute("select 1")
        return True
    except psycopg.Error as e:
        assert "timed out after 1.0s waiting for a server connection" in str(e), e
        assert_tusk_error(str(e))
        return False


def test_max_db_connections_holds_across_rules_and_reloads(tusk, pg):
    """Two rules for one database: tusk_trust's sets max_db_connections 1, tusk_solo's none.
    The limit binds both pools, whichever was made last (the second pool's rule used to set
    its 0 over the first's 1); a reload that drops it lifts it for both."""
    from lifecycle_util import reload, rule, write_config
    limited = rule(database=TEST_DB, user="tusk_trust", mode="transaction", size=4, max_db_connections=1)
    free = rule(database=TEST_DB, user="tusk_solo", mode="transaction", size=4)
    t = tusk(pools=[limited, free], pool_wait_timeout="1s")
    a = _hold_server(t, "tusk_trust")  # the database's one server
    assert not _gets_server(t, "tusk_solo")  # its pool is made now, by the rule without a limit
    assert not _gets_server(t, "tusk_trust")
    a.close()
    # Released: the other pool may have the database's server (an idle one of a sibling is
    # closed to make room).
    assert _gets_server(t, "tusk_solo")
    b = _hold_server(t, "tusk_solo")
    assert not _gets_server(t, "tusk_trust")
    b.close()
    write_config(t, pg, [dict(limited, max_db_connections=0), free], pool_wait_timeout="1s")
    reload(t)
    held = [_hold_server(t, "tusk_trust"), _hold_server(t, "tusk_solo"), _hold_server(t, "tusk_trust")]
    for c in held:
        c.close()
