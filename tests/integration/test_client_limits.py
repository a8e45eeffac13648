"""Client-side limits and notices of PgBouncer 1.24/1.25: max_db_client_connections and
max_user_client_connections (clients per database / per user name, across workers, freed by
every way a client leaves), query_wait_notify (a NOTICE to a client queued for a server)."""

import threading
import time

import psycopg
import pytest

from conftest import BENCH_DB, SLOW, TEST_DB, assert_tusk_error, console_show, wait_until
from auth_util import write_auth_file
from lifecycle_util import reload, rule, write_config
from pgwire import RawClient, startup_packet

ADMIN = {"users": ["postgres"], "client_auth": "trust"}


def refused(t, user="tusk_trust", dbname=TEST_DB):
    """Log in with a raw client that must be refused: -> the ErrorResponse's fields."""
    c = RawClient("127.0.0.1", t.port, timeout=10 * SLOW)
    try:
        c.send(startup_packet({"user": user, "database": dbname}))
        kind, fields = c.expect_error_or_close(timeout=10 * SLOW)
        assert kind == "error", fields
        return fields
    finally:
        c.close()


def admitted(t, user="tusk_trust", dbname=TEST_DB, **kw):
    c = t.connect(user=user, dbname=dbname, **kw)
    assert c.execute("select 1").fetchone() == (1,)
    return c


def past_the_limit(login):
    """login() once tusk has seen the last client go (closing is asynchronous): its result,
    or the error it failed with for any reason but the client limit."""
    out = []

    def attempt():
        try:
            out.append(login())
        except psycopg.OperationalError as e:
            if "client_connections" in str(e):
                return False
            out.append(e)
        return True
    wait_until(attempt, 10 * SLOW, interval=0.1, what="a client slot freed")
    return out[0]


def admitted_soon(t, user="tusk_trust", dbname=TEST_DB, **kw):
    c = past_the_limit(lambda: admitted(t, user=user, dbname=dbname, **kw))
    assert not isinstance(c, Exception), c
    return c


def raw_admitted_soon(t, user, dbname=TEST_DB):
    """A raw client logged in (ReadyForQuery) once tusk has seen the last client go."""
    out = []

    def attempt():
        raw = RawClient("127.0.0.1", t.port, timeout=10 * SLOW)
        raw.send(startup_packet({"user": user, "database": dbname}))
        kind, body = raw.read_message()
        while kind not in (b"Z", b"E"):
            kind, body = raw.read_message()
        if kind == b"E":
            raw.close()
            assert b"client_connections" in body, body
            return False
        out.append(raw)
        return True
    wait_until(attempt, 10 * SLOW, interval=0.1, what="a client slot freed")
    return out[0]


@pytest.mark.tusk_only
def test_max_db_client_connections_refuses_the_client_over_it_with_53300(tusk):
    """Two clients of a database (any user), the third refused with 53300 naming the key and the
    client's id, and logged; another database is not counted; a logout frees a place."""
    t = tusk(pools=[rule()], max_db_client_connections=2)
    with admitted(t) as a, admitted(t, user="tusk_solo"):
        f = refused(t)
        assert f["S"] == "FATAL" and f["C"] == "53300", f
        assert 'too many client connections for database "tusk_test"' in f["M"], f
        assert "max_db_client_connections is 2" in f["M"], f
        assert_tusk_error(f["M"])
        cid = f["M"].split()[1].rstrip(":")
        log = t.wait_log("max_db_client_connections is 2")
        assert any(cid in line and "53300" in line for line in log.splitlines()), log
        with admitted(t, dbname=BENCH_DB):
            pass
        a.close()
        admitted_soon(t).close()


@pytest.mark.tusk_only
def test_max_user_client_connections_counts_a_user_across_databases(tusk):
    t = tusk(pools=[rule()], max_user_client_connections=1, workers=2)
    with admitted(t):
        f = refused(t, dbname=BENCH_DB)
        assert f["C"] == "53300" and 'too many client connections for user "tusk_trust"' in f["M"], f
        assert "max_user_client_connections is 1" in f["M"], f
        with admitted(t, user="tusk_solo", dbname=BENCH_DB):
            pass
    admitted_soon(t, dbname=BENCH_DB).close()


@pytest.mark.tusk_only
def test_a_rules_client_limits_over_the_top_level(tusk):
    """A rule's own max_user_client_connections / max_db_client_connections (PgBouncer's
    [users] and [databases] ones) win over the top level's; 0 there lifts it."""
    t = tusk(pools=[rule(user="tusk_solo", max_user_client_connections=0),
                    rule(database=BENCH_DB, max_db_client_connections=1),
                    rule(max_user_client_connections=2)],
             max_user_client_connections=1)
    solos = [admitted(t, user="tusk_solo") for _ in range(3)]
    with admitted(t), admitted(t):
        assert "max_user_client_connections is 2" in refused(t)["M"]
    for c in solos:
        c.close()
    with admitted_soon(t, dbname=BENCH_DB):  # the second rule's
        assert "max_db_client_connections is 1" in refused(t, dbname=BENCH_DB)["M"]


@pytest.mark.tusk_only
def test_client_count_drops_however_a_client_leaves(tusk, tmp_path):
    """With room for one client, each way out frees the place for the next: logout, a client
    that vanishes (RST), KILL_CLIENT, a failed password after the client was counted, and
    tusk's own close (client_idle_timeout)."""
    auth = write_auth_file(tmp_path / "userlist.txt", {"tusk_trust": "right"})
    t = tusk(pools=[rule(user="tusk_solo", client_idle_timeout="1s"), rule(client_auth="password")],
             auth_file=auth, admin=ADMIN, max_db_client_connections=1)
    pw = {"password": "right"}

    with admitted(t, **pw):  # logout
        assert refused(t)["C"] == "53300"
    c = admitted_soon(t, **pw)
    c.close()

    raw = raw_admitted_soon(t, "tusk_solo")  # vanishes
    assert refused(t)["C"] == "53300"
    raw.close(reset=True)
    admitted_soon(t, **pw).close()

    with admitted_soon(t, application_name="victim", **pw) as v:  # KILL_CLIENT
        cid = [r["id"] for r in console_show(t, "SHOW CLIENTS") if r["application_name"] == "victim"][0]
        with psycopg.connect(host="127.0.0.1", port=t.port, user="postgres", dbname="tusk", autocommit=True) as adm:
            adm.execute(f"KILL_CLIENT {cid}")
        with pytest.raises(psycopg.OperationalError):
            v.execute("select 1")
    admitted_soon(t, **pw).close()

    e = past_the_limit(lambda: admitted(t, password="wrong"))  # counted at startup, then a wrong password
    assert isinstance(e, psycopg.OperationalError) and "password authentication failed" in str(e), e
    admitted_soon(t, **pw).close()

    idle = admitted_soon(t, user="tusk_solo")  # closed by tusk after client_idle_timeout
    wait_until(lambda: "client_idle_timeout" in t.log_text(), 10 * SLOW, what="the idle client closed")
    admitted_soon(t, **pw).close()
    idle.close()


@pytest.mark.tusk_only
def test_client_limits_reload_for_new_clients(tusk, pg):
    """A reload sets, and lifts, the limits for the next logins; clients already in stay."""
    t = tusk(pools=[rule()])
    a, b = admitted(t), admitted(t)
    write_config(t, pg, [rule()], max_db_client_connections=2)
    reload(t)
    assert "max_db_client_connections is 2" in refused(t)["M"]
    assert a.execute("select 2").fetchone() == (2,) and b.execute("select 3").fetchone() == (3,)
    write_config(t, pg, [rule()], max_user_client_connections=3)
    reload(t)
    with admitted(t):
        assert "max_user_client_connections is 3" in refused(t)["M"]
    a.close()
    b.close()


QUEUED = "No server connection available in postgres backend, client being queued"


def held_server(t, user="tusk_trust"):
    """A client inside a transaction on its rule's only server (transaction pooling)."""
    a = t.connect(user=user)
    a.execute("begin")
    a.execute("select 1")
    return a


def wait_with_notices(t, hold, timeout_ok=False):
    """A logged-in client's query while another holds the only server for hold seconds:
    -> (notices with the time each came after the query began, the query's outcome)."""
    notices, start = [], []
    with t.connect() as b, held_server(t) as a:
        # the Diagnostic is only readable inside the handler
        b.add_notice_handler(lambda d: notices.append(({"message": d.message_primary, "sqlstate": d.sqlstate,
                                                         "severity": d.severity_nonlocalized,
                                                         "detail": d.message_detail}, time.monotonic() - start[0])))
        release = threading.Timer(hold, a.execute, args=("commit",))
        release.start()
        start.append(time.monotonic())
        try:
            outcome = b.execute("select 42").fetchone()[0]
        except psycopg.OperationalError as e:
            assert timeout_ok, e
            outcome = e
        release.join()
    return notices, outcome


@pytest.mark.tusk_only
def test_query_wait_notify_tells_a_queued_client_once_and_it_keeps_waiting(tusk):
    """PgBouncer 1.25's query_wait_notify: a client that has waited this long for a server gets
    PgBouncer's NOTICE (00000) once, then is served when the server comes back."""
    txn = {**rule(size=1), "mode": "transaction"}
    t = tusk(pools=[txn], query_wait_notify="500ms", pool_wait_timeout="10s")
    notices, got = wait_with_notices(t, hold=2.0 * SLOW)
    assert got == 42
    assert len(notices) == 1, notices
    diag, after = notices[0]
    assert diag["message"] == QUEUED and diag["sqlstate"] == "00000" and diag["severity"] == "NOTICE", diag
    assert "pool_wait_timeout is 10.0s" in diag["detail"] and "tusk c" in diag["detail"], diag
    assert 0.45 <= after < 2.0 * SLOW, after


@pytest.mark.tusk_only
def test_query_wait_notify_then_pool_wait_timeout_still_applies(tusk):
    txn = {**rule(size=1), "mode": "transaction"}
    t = tusk(pools=[txn], query_wait_notify="300ms", pool_wait_timeout="1500ms")
    notices, err = wait_with_notices(t, hold=3.0 * SLOW, timeout_ok=True)
    assert isinstance(err, psycopg.OperationalError) and "timed out after 1.5s waiting" in str(err), err
    assert [d["message"] for d, _ in notices] == [QUEUED]


@pytest.mark.tusk_only
def test_query_wait_notify_off_and_reloaded(tusk, pg):
    """0 turns it off; a short wait (under the default 5s) gets nothing; a reload turns it on."""
    txn = {**rule(size=1), "mode": "transaction"}
    t = tusk(pools=[txn], query_wait_notify=0)
    notices, got = wait_with_notices(t, hold=1.0)
    assert got == 42 and notices == []
    write_config(t, pg, [txn])  # the default, 5s
    reload(t)
    notices, got = wait_with_notices(t, hold=1.0)
    assert got == 42 and notices == []
    write_config(t, pg, [txn], query_wait_notify="200ms")
    reload(t)
    notices, got = wait_with_notices(t, hold=1.0)
    assert got == 42 and [d["message"] for d, _ in notices] == [QUEUED]


@pytest.mark.tusk_only
def test_show_databases_and_users_count_clients(tusk):
    """PgBouncer 1.25's columns: SHOW DATABASES' max_client_connections and
    current_client_connections (the database's clients, all users) per row, SHOW USERS'
    max_user_client_connections, current_client_connections and current_connections."""
    t = tusk(pools=[rule(user="tusk_solo", database=TEST_DB, mode="session", size=3), rule(mode="session", size=3)],
             admin=ADMIN, max_db_client_connections=5, max_user_client_connections=4)
    with admitted(t) as a, admitted(t) as b, admitted(t, user="tusk_solo") as c:
        dbs = [r for r in console_show(t, "SHOW DATABASES") if r["name"] == TEST_DB]
        assert dbs and all(r["max_client_connections"] == 5 and r["current_client_connections"] == 3 for r in dbs), dbs
        star = [r for r in console_show(t, "SHOW DATABASES") if r["name"] == "*"]
        assert star and star[0]["current_client_connections"] == 3, star  # its pools' database
        users = {r["name"]: r for r in console_show(t, "SHOW USERS")}
        assert users["tusk_trust"]["current_client_connections"] == 2, users
        assert users["tusk_trust"]["max_user_client_connections"] == 4, users
        assert users["tusk_trust"]["current_connections"] == 2, users  # session mode: a server each
        assert users["tusk_trust"]["pool_size"] is None, users  # as PgBouncer: a [users] entry's own only
        assert users["tusk_solo"]["current_client_connections"] == 1, users
        assert a and b and c
    wait_until(lambda: {r["name"]: r["current_client_connections"] for r in console_show(t, "SHOW USERS")}
               .get("tusk_trust") == 0, 5 * SLOW, what="the clients uncounted")
