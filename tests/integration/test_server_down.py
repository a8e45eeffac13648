"""Faults on the server side: PostgreSQL stops under load, comes back, kills idle backends."""

import threading
import time

import psycopg
import pytest

from conftest import DIRECT, SLOW, TUSK_ERROR_RE, assert_tusk_error, connect

pytestmark = pytest.mark.exclusive  # load or timing: runs alone (conftest.py)

SHUTDOWN_TEXT = "terminating connection due to administrator command"


def acceptable_shutdown_error(sqlstate, msg):
    """What a client may see when PostgreSQL stops under it: PostgreSQL's own FATAL 57P01, relayed,
    or an error tusk wrote itself, which then must carry the client's id."""
    if sqlstate == "57P01" or SHUTDOWN_TEXT in msg:
        return True
    return bool(TUSK_ERROR_RE.search(msg))


def test_postgres_stopped_under_load_then_restarted(tusk, private_pg):
    """Two kinds of client are connected when PostgreSQL stops (pg_ctl stop -m fast):
    - sleepers, in the middle of a long query: each must get PostgreSQL's FATAL 57P01 relayed, or
      an error from tusk carrying the client's id;
    - busy clients firing short queries: each must get *an* error. A client whose next query is
      in flight when the connection closes can see a bare "server closed the connection": the
      close turns into a reset that drops the error before libpq reads it. PostgreSQL alone does
      the same (TUSK_TEST_DIRECT=1 shows it), so only sleepers are held to the exact error."""
    t = tusk(pg_server=private_pg, server_connect_timeout="2s", pool_wait_timeout="3s")
    nbusy, nsleep = 8, 6
    n = nbusy + nsleep
    outcome = [None] * n
    ran = [0] * n
    stop_by = time.monotonic() + 60 * SLOW

    def client(i):
        try:
            with connect(t.port) as c:
                while time.monotonic() < stop_by:
                    assert c.execute("select %s::int from pg_sleep(0.005)", (i,)).fetchone() == (i,)
                    ran[i] += 1
                    if i >= nbusy:
                        c.execute("select pg_sleep(60)")
            outcome[i] = ("no error", "")
        except psycopg.Error as e:
            outcome[i] = (e.sqlstate, str(e))
        except Exception as e:  # noqa: BLE001
            outcome[i] = ("unexpected", f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n)]
    for th in threads:
        th.start()
    deadline = time.monotonic() + 30 * SLOW
    while not all(ran) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert all(ran), f"not every client ran a query before the stop: {ran} {outcome}"
    time.sleep(0.2)  # sleepers are inside pg_sleep(60)

    private_pg.stop("fast")
    for th in threads:
        th.join(30 * SLOW)
    assert not any(th.is_alive() for th in threads), "clients hung after PostgreSQL stopped"
    no_error = [(i, o) for i, o in enumerate(outcome) if o is None or o[0] in ("no error", "unexpected")]
    assert not no_error, f"clients without an error: {no_error}"
    bad = [(i, o) for i, o in enumerate(outcome[nbusy:], nbusy) if not acceptable_shutdown_error(*o)]
    assert not bad, f"clients in a query got neither 57P01 nor a tusk error with their id: {bad}"
    for sqlstate, msg in outcome:
        if "tusk" in msg:
            assert_tusk_error(msg)

    # While PostgreSQL is down, a new client gets a clear error from tusk, not a hang.
    start = time.monotonic()
    with pytest.raises(psycopg.OperationalError) as ei:
        with connect(t.port, connect_timeout=int(20 * SLOW)) as c:
            c.execute("select 1")
    assert time.monotonic() - start < 10 * SLOW
    if not DIRECT:
        assert_tusk_error(str(ei.value))

    private_pg.start()
    # tusk was not restarted: new clients must work, one by one and together.
    for i in range(5):
        with connect(t.port) as c:
            assert c.execute("select %s::int", (i,)).fetchone() == (i,)
    errors = []

    def again(i):
        try:
            with connect(t.port) as c:
                for _ in range(20):
                    assert c.execute("select %s::int", (i,)).fetchone() == (i,)
        except Exception as e:  # noqa: BLE001
            errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=again, args=(i,), daemon=True) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30 * SLOW)
    assert errors == [], errors


@pytest.mark.tusk_only
def test_idle_server_killed_in_pool_is_not_handed_out(tusk, pg):
    """An idle pooled server whose backend died (pg_terminate_backend, idle timeouts, restarts)
    must be noticed at checkout, not given to the next client."""
    t = tusk(pools=[{"database": "*", "user": "*", "service": "main", "mode": "session", "size": 2}])
    with t.connect(user="tusk_solo") as c:
        pid = c.execute("select pg_backend_pid()").fetchone()[0]
    time.sleep(0.2)  # reset query runs after the client leaves
    assert pg.execute("select pg_terminate_backend(%s)", [pid])[0][0] is True
    time.sleep(0.2)
    with t.connect(user="tusk_solo") as c:
        assert c.execute("select 'fresh'").fetchone() == ("fresh",)
        assert c.execute("select pg_backend_pid()").fetchone()[0] != pid


def test_server_terminated_during_session_reports_error_to_client(tusk, pg):
    t = tusk()
    with t.connect(user="tusk_solo") as c:
        pid = c.execute("select pg_backend_pid()").fetchone()[0]
        pg.execute("select pg_terminate_backend(%s)", [pid])
        with pytest.raises(psycopg.OperationalError) as ei:
            for _ in range(3):
                c.execute("select 1")
                time.sleep(0.1)
        msg = str(ei.value)
        assert acceptable_shutdown_error(ei.value.sqlstate, msg) or "server closed the connection" in msg, msg
        if "tusk" in msg:
            assert_tusk_error(msg)
    with t.connect(user="tusk_solo") as c:
        assert c.execute("select 1").fetchone() == (1,)
