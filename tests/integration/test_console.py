"""The admin console: the virtual database "tusk" (also "pgbouncer"). Every command through psql
(simple protocol) and through psycopg 3 with prepare=True and in pipeline mode (extended protocol:
Parse/Bind/Describe/Execute/Sync), column names checked against PgBouncer's, and the effects of
PAUSE/RESUME, KILL, KILL_CLIENT, RECONNECT, RELOAD and SHUTDOWN checked with real clients."""

import os
import socket
import re
import subprocess
import threading
import time

import psycopg
import pytest

from conftest import PG_BIN, SLOW, TEST_DB, assert_tusk_error, wait_until, SANITIZER_RE
from auth_util import write_auth_file
from pgwire import RawClient, query_message

pytestmark = pytest.mark.tusk_only

ADMIN, ADMIN_PW = "admin", "admin-secret"
MONITOR, MONITOR_PW = "monitor", "monitor-secret"
APP_PW = "app-secret"

POOLS_COLS = ["database", "user", "cl_active", "cl_waiting", "cl_active_cancel_req", "cl_waiting_cancel_req",
              "sv_active", "sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used", "sv_tested",
              "sv_login", "maxwait", "maxwait_us", "pool_mode"]
CONN_COLS = ["type", "user", "database", "replication", "state", "addr", "port", "local_addr", "local_port", "connect_time",
             "request_time", "wait", "wait_us", "close_needed", "ptr", "link", "remote_pid", "tls",
             "application_name", "prepared_statements"]
STATS_COLS = ["database", "total_xact_count", "total_query_count", "total_received", "total_sent",
              "total_xact_time", "total_query_time", "total_wait_time", "avg_xact_count", "avg_query_count",
              "avg_recv", "avg_sent", "avg_xact_time", "avg_query_time", "avg_wait_time"]
DATABASES_COLS = ["name", "host", "port", "database", "force_user", "pool_size", "min_pool_size",
                  "reserve_pool", "pool_mode", "max_connections", "current_connections", "paused", "disabled"]
SHOW_COLS = {
    "POOLS": POOLS_COLS,
    "CLIENTS": CONN_COLS + ["id"],
    "SERVERS": CONN_COLS + ["id"],
    "STATS": STATS_COLS,
    "DATABASES": DATABASES_COLS,
    "CONFIG": ["key", "value", "default", "changeable"],
    "LISTS": ["list", "items"],
    "VERSION": ["version"],
    "WAITS": ["database", "user", "xact_count", "wait_count", "wait_p50_us", "wait_p99_us", "wait_buckets"],
    # PgBouncer 1.18's, read from Debian's pgbouncer (issue 26).
    "STATS_TOTALS": ["database", "xact_count", "query_count", "bytes_received", "bytes_sent", "xact_time",
                     "query_time", "wait_time"],
    "STATS_AVERAGES": ["database", "xact_count", "query_count", "bytes_received", "bytes_sent", "xact_time",
                       "query_time", "wait_time"],
    "TOTALS": ["name", "value"],
    "USERS": ["name", "pool_mode"],
    "STATE": ["key", "value"],  # PgBouncer 1.25's
}


def test_show_state_follows_pause_and_resume(tusk, tmp_path):
    """SHOW STATE, PgBouncer's three rows (read from PgBouncer 1.25.2): active and paused follow
    a PAUSE of every database and its RESUME; a PAUSE of one database does not count; tusk has
    no SUSPEND."""
    t = start(tusk, tmp_path)

    def state():
        _, rows = psql_rows(t, "SHOW STATE")
        return {r["key"]: r["value"] for r in rows}

    assert state() == {"active": "yes", "paused": "no", "suspended": "no"}
    assert psql(t, f"PAUSE {TEST_DB}").returncode == 0
    assert state() == {"active": "yes", "paused": "no", "suspended": "no"}
    assert psql(t, f"RESUME {TEST_DB}").returncode == 0
    assert psql(t, "PAUSE").returncode == 0
    assert state() == {"active": "no", "paused": "yes", "suspended": "no"}
    assert psql(t, "RESUME").returncode == 0
    assert state() == {"active": "yes", "paused": "no", "suspended": "no"}
    # a stats user may read it
    _, rows = psql_rows(t, "SHOW STATE", user=MONITOR, password=MONITOR_PW)
    assert len(rows) == 3


def start(tusk, tmp_path, mode="session", size=5, **kw):
    auth = write_auth_file(tmp_path / "userlist.txt",
                           {ADMIN: ADMIN_PW, MONITOR: MONITOR_PW, "tusk_trust": APP_PW})
    pools = [{"database": "*", "user": "*", "service": "main", "mode": mode, "size": size}]
    return tusk(pools=pools, auth_file=auth, admin={"users": [ADMIN], "stats_users": [MONITOR]}, **kw)


def psql(t, sql, user=ADMIN, password=ADMIN_PW, dbname="tusk", timeout=30):
    """psql --csv: a header line, then rows. -> CompletedProcess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = password
    env["PGCONNECT_TIMEOUT"] = str(int(15 * SLOW))
    cmd = [str(PG_BIN / "psql"), "-X", "--csv", "-w", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
           "-p", str(t.port), "-U", user, "-d", dbname, "-c", sql]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout * SLOW, env=env)


def psql_rows(t, sql, **kw):
    """-> (header, rows as dicts) for a successful SHOW."""
    p = psql(t, sql, **kw)
    assert p.returncode == 0, (sql, p.stdout, p.stderr)
    import csv
    lines = list(csv.reader(p.stdout.splitlines()))
    header = lines[0]
    return header, [dict(zip(header, r)) for r in lines[1:]]


def admin(t, user=ADMIN, password=ADMIN_PW, dbname="tusk", **kw):
    return t.connect(user=user, password=password, dbname=dbname, **kw)


def ext(conn, sql):
    """Extended protocol: psycopg prepares (Parse, then Bind/Describe/Execute/Sync).
    -> (column names, rows)."""
    cur = conn.cursor()
    cur.execute(sql, prepare=True)
    names = [d.name for d in cur.description] if cur.description else None
    return names, (cur.fetchall() if cur.description else None), cur.statusmessage


def pipelined(conn, sql):
    """Extended protocol with the unnamed statement (psycopg's pipeline mode)."""
    with conn.pipeline():
        cur = conn.cursor()
        cur.execute(sql)
    names = [d.name for d in cur.description] if cur.description else None
    return names, (cur.fetchall() if cur.description else None), cur.statusmessage


def app(t, **kw):
    return t.connect(password=APP_PW, **kw)


def client_id(t, application_name):
    _, rows = psql_rows(t, "SHOW CLIENTS")
    ids = [r["id"] for r in rows if r["application_name"] == application_name]
    assert len(ids) == 1, rows
    return ids[0]


def test_every_show_command_has_pgbouncer_columns_in_both_protocols(tusk, tmp_path):
    t = start(tusk, tmp_path)
    with admin(t) as c:
        for what, cols in SHOW_COLS.items():
            header, _ = psql_rows(t, f"SHOW {what}")
            assert header[:len(cols)] == cols, (what, header)
            names, rows, status = ext(c, f"SHOW {what}")
            assert names[:len(cols)] == cols, (what, names)
            assert status == "SHOW"
            names2, rows2, _ = pipelined(c, f"show {what.lower()};")
            assert names2 == names, (what, names2)
    # The other name of the database answers the same way (existing tooling).
    header, rows = psql_rows(t, "SHOW VERSION", dbname="pgbouncer")
    assert header == ["version"] and rows[0]["version"].startswith("tusk ")


def test_show_help_is_a_notice(tusk, tmp_path):
    t = start(tusk, tmp_path)
    p = psql(t, "SHOW HELP")
    assert p.returncode == 0, p.stderr
    assert "SHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|STATS|WAITS|LISTS|VERSION" in p.stderr
    assert "KILL_CLIENT" in p.stderr
    notices = []
    with admin(t) as c:
        c.add_notice_handler(lambda d: notices.append(d.message_primary))
        names, rows, status = ext(c, "SHOW HELP")
    assert names is None and status == "SHOW"
    assert any("RECONNECT [<db>]" in n for n in notices), notices


def test_show_contents_follow_real_connections(tusk, tmp_path):
    t = start(tusk, tmp_path)
    with app(t, application_name="watched") as a:
        (backend_pid,) = a.execute("select pg_backend_pid()").fetchone()
        cid = client_id(t, "watched")
        _, clients = psql_rows(t, "SHOW CLIENTS")
        me = next(r for r in clients if r["id"] == cid)
        assert me["type"] == "C" and me["user"] == "tusk_trust" and me["database"] == TEST_DB
        assert me["state"] == "active" and me["addr"] == "127.0.0.1" and me["ptr"] == cid
        assert me["local_port"] == str(t.port) and me["connect_time"].endswith("UTC")
        # The admin client is listed too, on the console's database.
        assert any(r["database"] == "tusk" and r["user"] == ADMIN for r in clients)

        with admin(t) as c:
            names, servers, _ = ext(c, "SHOW SERVERS")
            srv = [dict(zip(names, r)) for r in servers]
            linked = [s for s in srv if s["link"] == cid]
            assert len(linked) == 1, srv
            assert linked[0]["type"] == "S" and linked[0]["state"] == "active"
            assert int(linked[0]["remote_pid"]) == backend_pid

            names, pools, _ = ext(c, "SHOW POOLS")
            row = next(dict(zip(names, r)) for r in pools if r[0] == TEST_DB and r[1] == "tusk_trust")
            assert row["cl_active"] == 1 and row["sv_active"] == 1 and row["cl_waiting"] == 0
            assert row["pool_mode"] == "session"

            names, lists, _ = ext(c, "SHOW LISTS")
            items = dict(lists)
            assert items["pools"] >= 1 and items["used_clients"] >= 2 and items["used_servers"] >= 1

            names, dbs, _ = ext(c, "SHOW DATABASES")
            db = dict(zip(names, dbs[0]))
            assert db["name"] == "*" and db["pool_size"] == 5 and db["current_connections"] >= 1

            names, cfg, _ = ext(c, "SHOW CONFIG")
            conf = {r[0]: r for r in cfg}
            assert conf["admin.users"][1] == ADMIN
            assert conf["admin.stats_users"][1] == MONITOR
            assert conf["pool_wait_timeout"][2] == "30s" and conf["pool_wait_timeout"][3] == "yes"
            assert conf["buffer_size"][3] == "no"


def test_show_stats_counts_queries(tusk, tmp_path):
    t = start(tusk, tmp_path, mode="transaction")
    with app(t) as a:
        for _ in range(5):
            a.execute("select 1")
    def stats():
        _, rows = psql_rows(t, "SHOW STATS")
        return {r["database"]: r for r in rows}
    wait_until(lambda: TEST_DB in stats() and int(stats()[TEST_DB]["total_query_count"]) >= 5, 5 * SLOW,
               what="SHOW STATS to count the queries")
    row = stats()[TEST_DB]
    assert int(row["total_xact_count"]) >= 5
    assert int(row["total_received"]) > 0 and int(row["total_sent"]) > 0


def test_pause_holds_new_work_until_resume(tusk, tmp_path):
    t = start(tusk, tmp_path, mode="transaction")
    with app(t) as a:
        a.execute("select 1")
        # PAUSE waits for servers in use: a transaction open in the pool delays it.
        a.execute("begin")
        a.execute("select 1")
        done = threading.Event()
        result = {}

        def pause():
            result["p"] = psql(t, f"PAUSE {TEST_DB}")
            done.set()

        th = threading.Thread(target=pause)
        th.start()
        assert not done.wait(0.5 * SLOW), "PAUSE returned while a server was still in use"
        a.execute("commit")
        assert done.wait(10 * SLOW), "PAUSE did not return after the transaction ended"
        th.join()
        assert result["p"].returncode == 0 and "PAUSE" not in result["p"].stderr, result["p"].stderr

        _, pools = psql_rows(t, "SHOW POOLS")
        assert next(r for r in pools if r["database"] == TEST_DB)["paused"] == "1"

        # A new transaction waits while paused ...
        got = threading.Event()

        def query():
            a.execute("select 42").fetchone()
            got.set()

        q = threading.Thread(target=query)
        q.start()
        assert not got.wait(0.7 * SLOW), "a query ran on a paused pool"
        _, pools = psql_rows(t, "SHOW POOLS")
        assert next(r for r in pools if r["database"] == TEST_DB)["cl_waiting"] == "1"
        # ... and goes on after RESUME (extended protocol this time).
        with admin(t) as c:
            _, _, status = ext(c, f"RESUME {TEST_DB}")
            assert status == "RESUME"
        assert got.wait(10 * SLOW), "RESUME did not release the waiting client"
        q.join()


def test_pause_all_extended_and_resume_all(tusk, tmp_path):
    t = start(tusk, tmp_path, mode="transaction")
    with app(t) as a:
        a.execute("select 1")
        with admin(t) as c:
            assert ext(c, "PAUSE")[2] == "PAUSE"
            got = threading.Event()
            th = threading.Thread(target=lambda: (a.execute("select 1"), got.set()))
            th.start()
            assert not got.wait(0.5 * SLOW)
            assert pipelined(c, "RESUME")[2] == "RESUME"
            assert got.wait(10 * SLOW)
            th.join()


def test_kill_client_closes_that_client_only(tusk, tmp_path):
    t = start(tusk, tmp_path)
    with app(t, application_name="victim") as v, app(t, application_name="bystander") as b:
        v.execute("select 1")
        b.execute("select 1")
        vid = client_id(t, "victim")
        p = psql(t, f"KILL_CLIENT {vid}")
        assert p.returncode == 0, p.stderr
        with pytest.raises(psycopg.OperationalError) as e:
            v.execute("select 1")
        assert "KILL_CLIENT" in str(e.value)
        assert_tusk_error(str(e.value))
        assert b.execute("select 2").fetchone() == (2,)
        # Unknown ids are an error, in both protocols.
        p = psql(t, "KILL_CLIENT c00000000")
        assert p.returncode != 0 and "no client" in p.stderr
        bid = client_id(t, "bystander")
        with admin(t) as c:
            assert ext(c, f"KILL_CLIENT {bid}")[2] == "KILL_CLIENT"
        with pytest.raises(psycopg.OperationalError):
            b.execute("select 1")


def test_kill_database_closes_its_clients_and_servers(tusk, tmp_path, pg):
    t = start(tusk, tmp_path)
    a, b = app(t), app(t)
    try:
        a.execute("select 1")
        b.execute("select 1")
        assert pg.backends(user="tusk_trust") >= 2
        with admin(t) as c:
            assert ext(c, f"KILL {TEST_DB}")[2] == "KILL"
        for conn in (a, b):
            with pytest.raises(psycopg.OperationalError) as e:
                conn.execute("select 1")
            assert f"KILL {TEST_DB}" in str(e.value)
        wait_until(lambda: pg.backends(user="tusk_trust") == 0, 10 * SLOW, what="server connections closed")
        # New clients are served again.
        with app(t) as n:
            assert n.execute("select 3").fetchone() == (3,)
    finally:
        a.close()
        b.close()
    p = psql(t, "KILL nosuchdb_but_star_rule_matches")
    assert p.returncode == 0, p.stderr  # a '*' rule makes every name a database
    p = psql(t, "KILL")
    assert p.returncode != 0 and "needs an argument" in p.stderr


def test_reconnect_gives_fresh_backends(tusk, tmp_path, pg):
    t = start(tusk, tmp_path, mode="transaction")
    with app(t) as a:
        (pid1,) = a.execute("select pg_backend_pid()").fetchone()
        (again,) = a.execute("select pg_backend_pid()").fetchone()
        assert again == pid1
        p = psql(t, f"RECONNECT {TEST_DB}")
        assert p.returncode == 0, p.stderr
        (pid2,) = a.execute("select pg_backend_pid()").fetchone()
        assert pid2 != pid1
        # A server in use during RECONNECT is closed when released.
        a.execute("begin")
        (pid3,) = a.execute("select pg_backend_pid()").fetchone()
        with admin(t) as c:
            assert pipelined(c, "RECONNECT")[2] == "RECONNECT"
        a.execute("commit")
        (pid4,) = a.execute("select pg_backend_pid()").fetchone()
        assert pid4 != pid3
        wait_until(lambda: not pg.execute("select 1 from pg_stat_activity where pid = %s", [pid3]), 10 * SLOW,
                   what="old backend gone")


def test_reload_signals_the_main_thread(tusk, tmp_path):
    t = start(tusk, tmp_path)
    p = psql(t, "RELOAD")
    assert p.returncode == 0, p.stderr
    wait_until(lambda: "SIGHUP" in t.log_text(), 5 * SLOW, what="SIGHUP in the log")
    with admin(t) as c:
        assert ext(c, "RELOAD")[2] == "RELOAD"
    assert t.proc.poll() is None
    assert psql_rows(t, "SHOW VERSION")[1]


@pytest.mark.parametrize("command,extended", [("SHUTDOWN", False), ("SHUTDOWN WAIT_FOR_CLIENTS", True)])
def test_shutdown_stops_tusk(tusk, tmp_path, command, extended):
    t = start(tusk, tmp_path)
    if extended:
        with admin(t) as c:
            try:
                status = ext(c, command)[2]
                assert status == "SHUTDOWN"
            except psycopg.OperationalError as e:
                # The connection may be closed by the shutdown right after the answer.
                assert "shutting down" in str(e)
    else:
        p = psql(t, command)
        assert "SHUTDOWN" in p.stdout or p.returncode == 0 or "shutting down" in p.stderr, (p.stdout, p.stderr)
    rc = t.proc.wait(timeout=15 * SLOW)
    assert rc == 0
    t.logf.close()
    assert not SANITIZER_RE.search(t.log_text())
    t.proc = None  # stopped on purpose: the fixture has nothing left to stop


def test_stats_user_may_only_show(tusk, tmp_path):
    t = start(tusk, tmp_path)
    header, rows = psql_rows(t, "SHOW POOLS", user=MONITOR, password=MONITOR_PW)
    assert header[:len(POOLS_COLS)] == POOLS_COLS
    for cmd in ["PAUSE", "RESUME", "RELOAD", f"KILL {TEST_DB}", "KILL_CLIENT c1", "RECONNECT", "SHUTDOWN"]:
        p = psql(t, cmd, user=MONITOR, password=MONITOR_PW)
        assert p.returncode != 0 and "permission denied" in p.stderr, (cmd, p.stderr)
        assert_tusk_error(p.stderr)
    with admin(t, user=MONITOR, password=MONITOR_PW) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            ext(c, "PAUSE")
        # The connection stays usable after the error.
        assert ext(c, "SHOW VERSION")[0] == ["version"]
    assert t.proc.poll() is None


def test_unlisted_user_and_wrong_password_are_refused(tusk, tmp_path):
    t = start(tusk, tmp_path)
    p = psql(t, "SHOW POOLS", user="tusk_trust", password=APP_PW)
    assert p.returncode != 0 and "may not use the admin console" in p.stderr, p.stderr
    assert_tusk_error(p.stderr)
    p = psql(t, "SHOW POOLS", password="wrong")
    assert p.returncode != 0 and "password authentication failed" in p.stderr, p.stderr
    # Regular clients are unaffected by the console's settings.
    with app(t) as a:
        assert a.execute("select 1").fetchone() == (1,)


def test_errors_are_clear_and_the_session_goes_on(tusk, tmp_path):
    t = start(tusk, tmp_path)
    p = psql(t, "SELECT 1")
    assert p.returncode != 0 and 'unknown command "SELECT"' in p.stderr, p.stderr
    p = psql(t, "SHOW POOLS; SHOW CLIENTS")
    assert p.returncode != 0 and "one command per query" in p.stderr, p.stderr
    p = psql(t, "SHOW NOTHING")
    assert p.returncode != 0 and 'unknown SHOW item "NOTHING"' in p.stderr, p.stderr
    with admin(t) as c:
        with pytest.raises(psycopg.errors.SyntaxError) as e:
            ext(c, "FROBNICATE")
        assert_tusk_error(str(e.value))
        # Simple protocol after extended errors, on the same connection.
        assert c.execute("SHOW VERSION").fetchone()[0].startswith("tusk ")
        assert ext(c, "SHOW LISTS")[0] == ["list", "items"]


def test_answers_longer_than_the_client_buffer(tusk, tmp_path):
    """SHOW CLIENTS for 200 clients is far more than the 32 kB a client's wbuf holds: the
    console's own output buffer streams it, in both protocols."""
    t = start(tusk, tmp_path, mode="transaction")
    conns = []
    try:
        for i in range(200):
            conns.append(app(t, application_name=f"many-{i:03d}"))
        _, rows = psql_rows(t, "SHOW CLIENTS")
        names = sorted(r["application_name"] for r in rows if r["application_name"].startswith("many-"))
        assert names == [f"many-{i:03d}" for i in range(200)]
        with admin(t) as c:
            cols, rows, _ = ext(c, "SHOW CLIENTS")
            assert sum(1 for r in rows if r[cols.index("application_name")].startswith("many-")) == 200
            assert c.execute("SHOW VERSION").fetchone()[0].startswith("tusk ")
    finally:
        for c in conns:
            c.close()


def test_kill_reaches_clients_queued_on_a_paused_pool(tusk, tmp_path):
    t = start(tusk, tmp_path, mode="transaction")
    with app(t) as a:
        a.execute("select 1")
        assert psql(t, f"PAUSE {TEST_DB}").returncode == 0
        errors = []

        def query():
            try:
                a.execute("select 1")
            except psycopg.OperationalError as e:
                errors.append(str(e))

        th = threading.Thread(target=query)
        th.start()
        wait_until(lambda: next(r for r in psql_rows(t, "SHOW POOLS")[1] if r["database"] == TEST_DB)["cl_waiting"]
                   == "1", 5 * SLOW, what="the client to queue")
        _, clients = psql_rows(t, "SHOW CLIENTS")
        assert any(r["state"] == "waiting" for r in clients), clients
        p = psql(t, f"KILL {TEST_DB}")
        assert p.returncode == 0, p.stderr
        th.join(10 * SLOW)
        assert not th.is_alive() and errors and f"KILL {TEST_DB}" in errors[0], errors
        assert psql(t, "RESUME").returncode == 0
    with app(t) as b:
        assert b.execute("select 5").fetchone() == (5,)


def test_hba_file_decides_how_admins_log_in(tusk, tmp_path):
    from auth_util import write_hba
    hba = write_hba(tmp_path / "hba.conf", [
        "host tusk admin 127.0.0.1/32 trust",
        "host all all 127.0.0.1/32 scram-sha-256",
    ])
    t = start(tusk, tmp_path, hba_file=hba)
    header, _ = psql_rows(t, "SHOW VERSION", password="not-needed")
    assert header == ["version"]
    p = psql(t, "SHOW VERSION", user=MONITOR, password="wrong")
    assert p.returncode != 0 and "password authentication failed" in p.stderr, p.stderr
    assert psql_rows(t, "SHOW VERSION", user=MONITOR, password=MONITOR_PW)[0] == ["version"]


@pytest.mark.parametrize("target", ["", TEST_DB])
def test_pause_covers_pools_created_while_paused(tusk, tmp_path, target):
    """No pool exists yet when PAUSE runs: the first client's pool is created paused (its login
    needs a server in tusk, so the login itself waits) and RESUME lets it through."""
    t = start(tusk, tmp_path, mode="transaction")
    assert psql(t, f"PAUSE {target}").returncode == 0
    result = {}

    def login_and_query():
        with app(t) as a:
            result["v"] = a.execute("select 7").fetchone()

    th = threading.Thread(target=login_and_query)
    th.start()
    th.join(0.7 * SLOW)
    assert th.is_alive() and "v" not in result, "a client got a server from a paused database"
    _, pools = psql_rows(t, "SHOW POOLS")
    assert [r["paused"] for r in pools if r["database"] == TEST_DB] == ["1"]
    assert psql(t, f"RESUME {target}").returncode == 0
    th.join(10 * SLOW)
    assert result.get("v") == (7,)


def test_pause_and_resume_under_pgbench(tusk, tmp_path):
    """pgbench (TPC-B-like, transaction pooling) keeps running through PAUSE/RESUME: PAUSE
    returns between transactions, no transaction runs while paused, none fails."""
    from conftest import BENCH_DB
    t = start(tusk, tmp_path, mode="transaction", size=4)
    cmd = [str(PG_BIN / "pgbench"), "-h", "127.0.0.1", "-p", str(t.port), "-U", "tusk_trust", "-n",
           "-M", "extended", "-c", "6", "-j", "2", "-T", str(int(5 * SLOW)), BENCH_DB]
    bench = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def xacts():
            _, rows = psql_rows(t, "SHOW STATS")
            return int(next((r["total_xact_count"] for r in rows if r["database"] == BENCH_DB), 0))

        wait_until(lambda: xacts() > 50, 10 * SLOW, what="pgbench to get going")
        p = psql(t, f"PAUSE {BENCH_DB}")
        assert p.returncode == 0, p.stderr
        before = xacts()
        time.sleep(0.5 * SLOW)
        assert xacts() == before, "transactions ran on a paused database"
        _, pools = psql_rows(t, "SHOW POOLS")
        row = next(r for r in pools if r["database"] == BENCH_DB)
        assert int(row["cl_waiting"]) > 0 and row["sv_active"] == "0", row
        p = psql(t, f"RESUME {BENCH_DB}")
        assert p.returncode == 0, p.stderr
        wait_until(lambda: xacts() > before + 50, 10 * SLOW, what="pgbench to go on after RESUME")
        out, _ = bench.communicate(timeout=30 * SLOW)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    assert bench.returncode == 0, out
    m = re.search(r"number of failed transactions: (\d+)", out)
    assert not m or int(m.group(1)) == 0, out


def test_pgbouncer_scripts_show_totals_stats_totals_averages_and_users(tusk, tmp_path):
    """SHOW STATS_TOTALS / STATS_AVERAGES / TOTALS / USERS, which PgBouncer users script
    against, were "unknown command" (issue 26)."""
    t = start(tusk, tmp_path, mode="transaction")
    with app(t) as c:
        for _ in range(5):
            c.execute("select 1")
    _, stats = psql_rows(t, "SHOW STATS")
    _, totals = psql_rows(t, "SHOW STATS_TOTALS")
    row = next(r for r in totals if r["database"] == TEST_DB)
    srow = next(r for r in stats if r["database"] == TEST_DB)
    assert int(row["query_count"]) >= 5 and row["query_count"] == srow["total_query_count"], (row, srow)
    _, avgs = psql_rows(t, "SHOW STATS_AVERAGES")
    assert any(r["database"] == TEST_DB for r in avgs), avgs
    _, tot = psql_rows(t, "SHOW TOTALS")
    names = {r["name"]: int(r["value"]) for r in tot}
    assert names["total_query_count"] >= 5 and "avg_wait_time" in names, names
    _, users = psql_rows(t, "SHOW USERS", user=MONITOR, password=MONITOR_PW)
    me = [{k: r[k] for k in ("name", "pool_mode")} for r in users if r["name"] == "tusk_trust"]
    assert me == [{"name": "tusk_trust", "pool_mode": ""}], users


def test_pause_of_a_database_nothing_matches_is_an_error_and_under_star_a_warning(tusk, tmp_path):
    """PAUSE nosuchdb was accepted in silence under a "*" rule. Now: with no rule that could
    match it, an error (as PgBouncer's "no such database"); when only "*" matches and no pool
    exists yet, it still acts (the pool starts paused) but warns."""
    t = start(tusk, tmp_path)
    for cmd in ("PAUSE nosuchdb", "RESUME nosuchdb", "RECONNECT nosuchdb"):
        p = psql(t, cmd)
        assert p.returncode == 0 and 'no pool of this database yet: only a "*" rule matches it' in p.stderr, \
            (cmd, p.stderr)
    assert "start paused" in psql(t, "PAUSE nosuchdb").stderr
    assert psql(t, "RESUME nosuchdb").returncode == 0
    with app(t) as c:
        c.execute("select 1")
    p = psql(t, f"PAUSE {TEST_DB}")
    assert p.returncode == 0 and "no pool" not in p.stderr, p.stderr
    assert psql(t, f"RESUME {TEST_DB}").returncode == 0

    auth = write_auth_file(tmp_path / "u2.txt", {ADMIN: ADMIN_PW})
    named = tusk(pools=[{"database": TEST_DB, "user": "*", "service": "main"}], auth_file=auth,
                 admin={"users": [ADMIN]})
    for cmd in ("PAUSE nosuchdb", "RESUME nosuchdb", "RECONNECT nosuchdb", "KILL nosuchdb"):
        p = psql(named, cmd)
        assert p.returncode != 0 and 'no such database: "nosuchdb"' in p.stderr, (cmd, p.stderr)


def test_disable_refuses_new_logins_until_enable(tusk, tmp_path):
    """DISABLE db (PgBouncer's): new logins to db are refused with PostgreSQL's 55000, clients
    already in keep working; SHOW DATABASES says disabled; ENABLE lets logins in again. Both
    need a database name and a full admin."""
    auth = write_auth_file(tmp_path / "userlist.txt", {ADMIN: ADMIN_PW, "tusk_trust": APP_PW})
    t = tusk(pools=[{"database": TEST_DB, "user": "*", "service": "main", "mode": "transaction", "size": 5}],
             auth_file=auth, admin={"users": [ADMIN]})
    with app(t) as inside:
        inside.execute("select 1")
        p = psql(t, f"DISABLE {TEST_DB}")
        assert p.returncode == 0, p.stderr
        with pytest.raises(psycopg.OperationalError) as e:
            app(t)
        assert "not currently accepting connections" in str(e.value) and "tusk " in str(e.value)
        assert inside.execute("select 7").fetchone()[0] == 7  # already in: untouched
        _, dbs = psql_rows(t, "SHOW DATABASES")
        assert next(r for r in dbs if r["name"] == TEST_DB)["disabled"] == "1"
        with admin(t) as c:
            _, _, status = ext(c, f"ENABLE {TEST_DB}")
            assert status == "ENABLE"
        with app(t) as again:
            assert again.execute("select 8").fetchone()[0] == 8
        _, dbs = psql_rows(t, "SHOW DATABASES")
        assert next(r for r in dbs if r["name"] == TEST_DB)["disabled"] == "0"
    p = psql(t, "DISABLE")
    assert p.returncode != 0 and "needs an argument" in p.stderr
    p = psql(t, "DISABLE nosuchdb_at_all")
    assert p.returncode != 0 and "no such database" in p.stderr


def test_wait_close_returns_once_servers_from_before_reconnect_are_closed(tusk, tmp_path):
    """WAIT_CLOSE [db] (PgBouncer's): after RECONNECT, it returns only when no server connected
    before it is left; a transaction holding one delays it until the server is released (and
    closed)."""
    t = start(tusk, tmp_path, mode="transaction")
    with app(t) as a, app(t) as b:
        b.execute("select 1")  # a second server, parked: closed at once by RECONNECT
        a.execute("begin")
        old = a.execute("select pg_backend_pid()").fetchone()[0]
        p = psql(t, f"RECONNECT {TEST_DB}")
        assert p.returncode == 0, p.stderr
        done = threading.Event()
        result = {}

        def wait():
            result["p"] = psql(t, f"WAIT_CLOSE {TEST_DB}")
            done.set()

        th = threading.Thread(target=wait)
        th.start()
        assert not done.wait(0.7 * SLOW), "WAIT_CLOSE returned while a server from before RECONNECT was in use"
        a.execute("commit")
        assert done.wait(10 * SLOW), "WAIT_CLOSE did not return after the old server was released"
        th.join()
        assert result["p"].returncode == 0, result["p"].stderr
        assert a.execute("select pg_backend_pid()").fetchone()[0] != old
        # Nothing from before a RECONNECT left: at once, for one database and for all.
        for cmd in (f"WAIT_CLOSE {TEST_DB}", "WAIT_CLOSE"):
            t0 = time.monotonic()
            p = psql(t, cmd)
            assert p.returncode == 0 and time.monotonic() - t0 < 5 * SLOW, p.stderr


def test_show_mem_and_sockets_follow_real_connections(tusk, tmp_path):
    # PgBouncer's SHOW MEM columns (tusk's pools: client and server structs, buffer blocks per
    # worker), and SHOW SOCKETS / SHOW FDS: one row per client and server socket (issue 26).
    t = start(tusk, tmp_path)
    with app(t, application_name="sock") as a:
        (backend_pid,) = a.execute("select pg_backend_pid()").fetchone()
        cid = client_id(t, "sock")
        header, mem = psql_rows(t, "SHOW MEM", user=MONITOR, password=MONITOR_PW)
        assert header[:5] == ["name", "size", "used", "free", "memtotal"], header
        per = {}
        for r in mem:
            per.setdefault(r["name"], []).append(r)
        assert len(per["client"]) == 2 and len(per["server"]) == 2, mem  # one row per worker
        assert sum(int(r["used"]) for r in per["client"]) >= 2  # the app and this psql
        assert sum(int(r["used"]) for r in per["server"]) >= 1
        for r in per["client"] + per["client_rbuf"]:
            assert int(r["memtotal"]) == (int(r["used"]) + int(r["free"])) * int(r["size"]), r
        assert int(per["client_rbuf"][0]["size"]) > 0
        # the allocator's counters, process-wide: what it handed out is part of what it got
        (heap,) = per["heap"]
        assert heap["worker"] == "" and 0 < int(heap["used"]) <= int(heap["memtotal"]), heap

        for verb in ("SOCKETS", "FDS"):
            header, socks = psql_rows(t, f"SHOW {verb}")
            assert header[:5] == ["type", "fd", "worker", "id", "state"], header
            me = next(r for r in socks if r["id"] == cid)
            assert me["type"] == "C" and me["user"] == "tusk_trust" and me["database"] == TEST_DB
            assert me["state"] == "active" and me["local_port"] == str(t.port) and me["addr"] == "127.0.0.1"
            srv = [r for r in socks if r["type"] == "S" and r["database"] == TEST_DB]
            assert srv and all(r["state"] in ("active", "idle") for r in srv), socks
            # each fd is a socket of tusk's own
            for r in [me] + srv:
                assert os.readlink(f"/proc/{t.pid}/fd/{r['fd']}").startswith("socket:"), r
        with admin(t) as c:
            names, rows, status = ext(c, "SHOW SOCKETS")
            assert names[:2] == ["type", "fd"] and status == "SHOW" and len(rows) >= 3
            names, rows, _ = pipelined(c, "show mem;")
            assert names[:5] == ["name", "size", "used", "free", "memtotal"] and rows
        assert backend_pid


def test_show_active_sockets_lists_sockets_with_bytes_pending(tusk, tmp_path):
    # PgBouncer's SHOW ACTIVE_SOCKETS: SHOW SOCKETS' columns, only the sockets with bytes in
    # their buffers. A client that asked for a large result and does not read it has some
    # (in its own buffer or its server's); an idle client has none.
    t = start(tusk, tmp_path)
    with app(t, application_name="idle-one") as idle:
        idle.execute("select 1")
        idle_id = client_id(t, "idle-one")
        slow = RawClient("127.0.0.1", t.port)
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            slow.startup("tusk_trust", TEST_DB, application_name="slow-reader")
            slow_id = client_id(t, "slow-reader")
            slow.send(query_message("select repeat('x', 100000) from generate_series(1, 200)"))

            def active():
                header, rows = psql_rows(t, "SHOW ACTIVE_SOCKETS")
                assert header == psql_rows(t, "SHOW SOCKETS")[0], header
                return rows
            wait_until(lambda: any(r["id"] == slow_id or (r["type"] == "S" and int(r["recv_pending"]) > 0)
                                   for r in active()), 10 * SLOW, what="the slow reader's bytes pending")
            rows = active()
            assert all(int(r["recv_pending"]) + int(r["send_pending"]) > 0 for r in rows), rows
            assert idle_id not in [r["id"] for r in rows], rows
            assert idle_id in [r["id"] for r in psql_rows(t, "SHOW SOCKETS")[1]]
        finally:
            slow.close(reset=True)


def test_server_fast_close_ends_idle_sessions_after_reconnect(tusk, tmp_path):
    # PgBouncer's server_fast_close: after RECONNECT a session-mode client's server closes as
    # soon as the session is idle outside a transaction, and the client with it (57P01); a
    # transaction under way finishes first. Off (the default), the session keeps its old
    # server until it ends.
    for fast in (True, False):
        t = start(tusk, tmp_path, server_fast_close=fast)
        with app(t, autocommit=True) as idle, app(t, autocommit=True) as busy:
            pid = idle.execute("select pg_backend_pid()").fetchone()[0]
            busy.execute("begin")
            busy.execute("select 1")
            assert psql(t, "RECONNECT").returncode == 0
            time.sleep(2.5 * SLOW)  # the check runs on the workers' 1 s tick
            if not fast:
                assert idle.execute("select pg_backend_pid()").fetchone()[0] == pid
                busy.execute("commit")
                continue
            with pytest.raises(psycopg.OperationalError) as e:
                idle.execute("select 1")
            assert "server_fast_close is on" in str(e.value), e.value  # an error sent while idle: no sqlstate read
            # inside its transaction the other session goes on, and is ended after it
            assert busy.execute("select 2").fetchone() == (2,)
            busy.execute("commit")
            t.wait_log("server_fast_close is on", timeout=5 * SLOW)

            def ended():
                try:
                    busy.execute("select 1")
                    return False
                except psycopg.OperationalError:
                    return True
            wait_until(ended, 5 * SLOW, what="the session ended after its transaction")
        with app(t) as fresh:  # new sessions get new servers
            assert fresh.execute("select pg_backend_pid()").fetchone()[0] != pid


def test_set_changes_a_reloadable_key_until_the_next_reload(tusk, tmp_path):
    # PgBouncer's SET key = value for the keys a reload may change (issue 26): applied by the
    # reload it asks for, over the file; RELOAD gives the file's value back.
    t = start(tusk, tmp_path, query_timeout="5s")
    with admin(t) as c:
        def value(key):
            _, rows, _ = ext(c, "SHOW CONFIG")
            return next(r[1] for r in rows if r[0] == key)

        p = psql(t, "SET query_timeout = '1500ms'")  # simple protocol
        assert p.returncode == 0 and p.stdout.strip() == "SET", (p.stdout, p.stderr)
        wait_until(lambda: value("query_timeout") == "1500ms", 5 * SLOW, what="SET applied by the reload")
        assert ext(c, "set pool_wait_timeout to 7s")[2] == "SET"
        wait_until(lambda: value("pool_wait_timeout") == "7000ms", 5 * SLOW, what="SET over the extended protocol")
        assert value("query_timeout") == "1500ms"  # the earlier SET stays in the running generation
        t.wait_log("SET pool_wait_timeout = 7s from the admin console")
        # ... and it takes effect: a query over 1.5 s is cancelled now
        with app(t) as a:
            with pytest.raises(psycopg.errors.QueryCanceled):
                a.execute("select pg_sleep(10)")
        # refused, with the reason, and the session goes on
        for sql, want in (("SET workers = 4", "only a restart"), ("SET nosuch = 1", "unknown key"),
                          ("SET query_timeout = 30", "has no unit"), ("SET auth_file = '/x'", "edit the file"),
                          ("SET query_timeout", "SET needs key = value")):
            with pytest.raises(psycopg.Error) as ei:
                c.execute(sql)
            assert want in str(ei.value), (sql, str(ei.value))
        with admin(t, user=MONITOR, password=MONITOR_PW) as m:
            with pytest.raises(psycopg.Error) as ei:
                m.execute("SET query_timeout = 2s")
            assert "may only run SHOW" in str(ei.value)
        # the file is the truth again after a RELOAD
        c.execute("RELOAD")
        wait_until(lambda: value("query_timeout") == "5000ms" and value("pool_wait_timeout") == "30000ms", 5 * SLOW,
                   what="RELOAD back to the file's values")


def test_show_databases_has_pgbouncer_125s_columns(tusk, pg):
    """SHOW DATABASES ends with PgBouncer 1.25's reserve_pool_size (1.18's reserve_pool, which
    stays in its place), server_lifetime (seconds: the rule's, else the top level's) and
    load_balance_hosts (for a list of hosts only, as PgBouncer)."""
    from conftest import BENCH_DB, console_show
    hosts = [f"127.0.0.1:{pg.port}", f"localhost:{pg.port}"]
    t = tusk(pools=[{"database": BENCH_DB, "user": "*", "service": "two", "mode": "session", "size": 2,
                     "server_lifetime": "90s", "reserve_pool_size": 2},
                    {"database": "*", "user": "*", "service": "main", "mode": "session", "size": 2}],
             services={"main": {"hosts": hosts[:1]}, "two": {"hosts": hosts, "load_balance_hosts": "disable"}},
             admin={"users": ["postgres"], "client_auth": "trust"}, server_lifetime="30m")
    rows = {r["name"]: r for r in console_show(t, "SHOW DATABASES")}
    assert list(rows[BENCH_DB])[-3:] == ["reserve_pool_size", "server_lifetime", "load_balance_hosts"], rows
    assert (rows[BENCH_DB]["reserve_pool"], rows[BENCH_DB]["reserve_pool_size"]) == (2, 2), rows
    assert (rows[BENCH_DB]["server_lifetime"], rows[BENCH_DB]["load_balance_hosts"]) == (90, "disable"), rows
    assert (rows["*"]["server_lifetime"], rows["*"]["load_balance_hosts"]) == (1800, None), rows


def test_binary_results_read_as_the_text_ones(tusk, tmp_path):
    """A Bind that asks for binary results (psycopg's binary=True; pgjdbc once a statement is
    prepared) gets the console's int8 columns as 8-byte integers and its text columns as their
    bytes: SHOW LISTS and SHOW CONFIG read the same both ways, and a Describe of the portal says
    the formats (psycopg decodes by them). Before, any binary result format was refused (0A000
    "the admin console answers in text format only")."""
    t = start(tusk, tmp_path)
    with admin(t) as c:
        for sql in ("SHOW LISTS", "SHOW CONFIG", "SHOW VERSION"):
            text = c.cursor().execute(sql).fetchall()
            binary = c.cursor().execute(sql, binary=True).fetchall()
            assert binary == text and text, (sql, text, binary)
        assert all(isinstance(n, int) for _, n in c.cursor().execute("SHOW LISTS", binary=True).fetchall())
    # Result format counts that match neither one nor the columns, and codes other than 0 and 1:
    # PostgreSQL's errors.
    import struct

    import pgwire
    from auth_util import raw_login
    res, r = raw_login(t.port, ADMIN, ADMIN_PW, dbname="tusk", keep_open=True)
    assert res.outcome == "ok", res
    try:
        parse = pgwire.message(b"P", b"\0SHOW LISTS\0" + struct.pack("!H", 0))
        for codes, state in (((1, 1, 1), "08P01"), ((2,), "22023")):
            bind = pgwire.message(b"B", b"\0\0" + struct.pack(f"!HHH{len(codes)}H", 0, 0, len(codes), *codes))
            r.send(parse + bind + pgwire.message(b"E", b"\0" + struct.pack("!I", 0)) + pgwire.message(b"S"))
            errors = [pgwire.parse_error_fields(b) for k, b in r.read_until_ready() if k == b"E"]
            assert [e["C"] for e in errors] == [state], (codes, errors)
    finally:
        r.close()


def test_pgjdbc_polls_the_console_with_a_prepared_statement(tusk, tmp_path):
    """A Java monitor's loop (tests/integration/jdbc/ConsoleShow.java): one prepared SHOW LISTS
    run six times; from the second run on (prepareThreshold=2) pgjdbc asks for the int8 column
    in binary. Every round reads the same rows. Before, the third run failed (0A000)."""
    import sys

    from conftest import REPO
    sys.path.insert(0, str(REPO / "tests" / "drivers"))
    import harness

    t = start(tusk, tmp_path)
    lines = harness.jdbc_program(REPO / "tests" / "integration" / "jdbc" / "ConsoleShow.java", "127.0.0.1", t.port,
                                 ADMIN, ADMIN_PW, 6, timeout=120 * SLOW)
    rounds = {}
    for line in lines:
        i, name, items = line.split(" ")
        rounds.setdefault(int(i), []).append((name, int(items)))
    assert sorted(rounds) == list(range(6)) and all(r == rounds[0] for r in rounds.values()) and rounds[0], lines
