"""A pool rule's connect_query (PgBouncer's per-database option; docs/pooling.md): run on each
new server connection of the pool after login, before any client uses it, and again after each
reset tusk runs on it (DISCARD ALL, RESET ALL, server_reset_query), so that every client finds
its settings. A failing one, or one that leaves a transaction open, fails the server's login.

The query sets a placeholder (tusk_test.cq, not reported by the server) and a reported
parameter (TimeZone, which the greeting's ParameterStatus tells)."""

import re
import threading

import psycopg
import pytest

from conftest import SLOW, TEST_DB, wait_until
from lifecycle_util import reload, rule, write_config

CQ = "set tusk_test.cq = 'yes'; set timezone = 'Asia/Kolkata'"
MODES = ["session", "transaction"]


def cq_of(c):
    """What the connect_query left on c's server: (tusk_test.cq, TimeZone by SHOW)."""
    return (c.execute("select coalesce(current_setting('tusk_test.cq', true), '')").fetchone()[0],
            c.execute("show timezone").fetchone()[0])


def db_timezone(pg):
    return pg.execute("select setting from pg_settings where name = 'TimeZone'", dbname=TEST_DB)[0][0]


@pytest.mark.tusk_only
@pytest.mark.parametrize("mode", MODES)
def test_connect_query_on_every_new_server_refill_included(tusk, pg, mode):
    """The servers min_size opens with no client and those opened for clients all ran it; the
    greeting tells the TimeZone it set."""
    t = tusk(pools=[rule(mode=mode, size=3, min_size=2, connect_query=CQ)])
    with t.connect() as c:
        assert cq_of(c) == ("yes", "Asia/Kolkata")
        assert c.info.parameter_status("TimeZone") == "Asia/Kolkata"
    wait_until(lambda: pg.backends("tusk_trust") >= 2, 10 * SLOW, what="min_size servers")
    # three clients inside a transaction each: three servers, the refilled ones among them
    clients = [t.connect() for _ in range(3)]
    try:
        pids = set()
        for c in clients:
            c.execute("begin")
            pids.add(c.execute("select pg_backend_pid()").fetchone()[0])
            assert cq_of(c) == ("yes", "Asia/Kolkata")
        assert len(pids) == 3
    finally:
        for c in clients:
            c.close()
    assert "connect_query failed" not in t.log_text()


@pytest.mark.tusk_only
def test_connect_query_again_after_resets_of_a_shared_server(tusk, pg):
    """Transaction pooling, one server: a client's own SET, RESET ALL and DISCARD ALL reach its
    own session only; the next client on the same server finds connect_query's settings."""
    t = tusk(pools=[rule(mode="transaction", size=1, connect_query=CQ)])
    default_tz = db_timezone(pg)
    assert default_tz != "Asia/Kolkata"
    with t.connect() as a, t.connect() as b:
        pid = a.execute("select pg_backend_pid()").fetchone()[0]
        a.execute("set tusk_test.cq = 'a'")
        assert cq_of(a) == ("a", "Asia/Kolkata")
        assert b.execute("select pg_backend_pid()").fetchone()[0] == pid
        assert cq_of(b) == ("yes", "Asia/Kolkata")
        # inside its transaction the client sees what PostgreSQL's RESET ALL gives
        a.execute("begin")
        a.execute("reset all")
        assert cq_of(a) == ("", default_tz)
        assert a.info.parameter_status("TimeZone") == default_tz
        a.execute("commit")
        for reset in ("reset tusk_test.cq", "reset all", "discard all"):
            if reset != "reset all":
                a.execute(reset)
            assert b.execute("select pg_backend_pid()").fetchone()[0] == pid
            assert cq_of(b) == ("yes", "Asia/Kolkata"), reset
            assert b.info.parameter_status("TimeZone") == "Asia/Kolkata"
            # the client's next transaction: connect_query's placeholder again (as on every
            # server of the pool), the reported TimeZone as its reset left it (as a SET would)
            assert cq_of(a) == ("yes", default_tz), reset
    # a newcomer after all that gets it too
    with t.connect() as c:
        assert c.execute("select pg_backend_pid()").fetchone()[0] == pid
        assert cq_of(c) == ("yes", "Asia/Kolkata")
        assert c.info.parameter_status("TimeZone") == "Asia/Kolkata"


@pytest.mark.tusk_only
def test_connect_query_again_after_session_pooling_reset(tusk):
    """Session pooling: server_reset_query (DISCARD ALL) after each client, then connect_query;
    a client's own DISCARD ALL undoes it for the rest of its session, as on PostgreSQL."""
    t = tusk(pools=[rule(mode="session", size=1, connect_query=CQ)])
    with t.connect() as a:
        pid = a.execute("select pg_backend_pid()").fetchone()[0]
        a.execute("set tusk_test.cq = 'a'; set timezone = 'UTC'")
        a.execute("discard all")
        assert cq_of(a)[0] == ""
    with t.connect() as b:
        assert b.execute("select pg_backend_pid()").fetchone()[0] == pid
        assert cq_of(b) == ("yes", "Asia/Kolkata")
        assert b.info.parameter_status("TimeZone") == "Asia/Kolkata"


@pytest.mark.tusk_only
@pytest.mark.parametrize("query,why", [
    ("select 1/0", r"connect_query failed: 22012 division by zero"),
    ("begin", r"connect_query left the server inside a transaction"),
])
def test_failing_connect_query_hands_the_server_to_nobody(tusk, pg, query, why):
    """The login fails: logged with the server's id, the client refused, no server left open;
    a min_size refill logs its failures too."""
    t = tusk(pools=[rule(mode="transaction", size=2, min_size=1, connect_query=query)], pool_wait_timeout="2s")
    with pytest.raises(psycopg.OperationalError) as e:
        with t.connect() as c:
            c.execute("select 1")
    assert re.search(r"tusk [cs][0-9a-f]{8}: " + why.replace("failed: 22012", "failed:"), str(e.value)), e.value
    log = t.wait_log("connect_query")
    assert re.search(r"s[0-9a-f]{8}.*" + why, log), log
    wait_until(lambda: pg.backends("tusk_trust") == 0, 5 * SLOW, what="failed servers closed")


@pytest.mark.tusk_only
def test_reload_changes_connect_query_for_new_servers(tusk, pg):
    """A changed connect_query retires the pool: servers opened after the reload run the new
    one, a client that stayed through the reload keeps its server until it leaves."""
    t = tusk(pools=[rule(mode="session", size=2, connect_query=CQ)])
    with t.connect() as old:
        assert cq_of(old) == ("yes", "Asia/Kolkata")
        write_config(t, pg, [rule(mode="session", size=2, connect_query="set tusk_test.cq = 'new'")])
        reload(t)
        t.wait_log("retired by reload")
        assert cq_of(old) == ("yes", "Asia/Kolkata")
        with t.connect() as new:
            assert cq_of(new) == ("new", db_timezone(pg))
    wait_until(lambda: pg.backends("tusk_trust") <= 1, 5 * SLOW, what="the old pool's server closed")


@pytest.mark.tusk_only
def test_connect_query_is_the_pools_only(tusk, pg):
    """Only the rule's pool runs it: another rule's clients on the same database do not."""
    t = tusk(pools=[rule(user="tusk_solo", mode="transaction", size=1, connect_query=CQ),
                    rule(mode="transaction", size=1)])
    with t.connect(user="tusk_solo") as a, t.connect() as b:
        assert cq_of(a) == ("yes", "Asia/Kolkata")
        assert cq_of(b) == ("", db_timezone(pg))


@pytest.mark.tusk_only
def test_many_clients_on_one_server_all_see_connect_query(tusk):
    """Transaction pooling, size 1, several clients taking turns with SETs and resets of their
    own: each transaction that SETs nothing sees connect_query's settings."""
    t = tusk(pools=[rule(mode="transaction", size=1, connect_query=CQ)], pool_wait_timeout="20s")
    errors = []

    def one(i):
        """i % 3 == 0 SETs its own value and must keep seeing it; the others RESET ALL or
        DISCARD ALL now and then, and must see connect_query's after each."""
        own = ["set tusk_test.cq = 'mine'", "reset all", "discard all"][i % 3]
        want = "mine" if i % 3 == 0 else "yes"
        try:
            with t.connect(prepare_threshold=None) as c:  # (DISCARD ALL drops psycopg's)
                for n in range(12):
                    if n % 4 == 0:
                        c.execute(own)
                        continue
                    with c.transaction():
                        got = c.execute("select current_setting('tusk_test.cq', true)").fetchone()[0]
                    if got != want:
                        errors.append((i, n, got))
        except Exception as e:  # noqa: BLE001 - reported by the test
            errors.append((i, repr(e)))

    th = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for x in th:
        x.start()
    for x in th:
        x.join()
    assert errors == []
