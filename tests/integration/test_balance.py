"""Clients moving between workers at transaction boundaries (worker_balance, docs/ARCHITECTURE.md
"Workers"): a light load gathers on one worker, and a client that moves keeps everything it had
(reported parameters, carried SETs, prepared statements, its cancel key, TLS, the cache's
state), also when tusk shuts down while clients are on their way.

TUSK_TEST_BALANCE=pingpong (a test seam read at start) makes every idle client move to the next
worker at every transaction boundary, so these tests drive the move hundreds of times instead of
once; the SHOW CLIENTS column `worker` shows where each client is. The tests marked `mode` run
with session pools too, where a client moves with its server (test_balance_session.py has what
is particular to those)."""

import subprocess
import threading
import time

import psycopg
import pytest

from conftest import BENCH_DB, PG_BIN, SLOW, TEST_DB, wait_until
from test_console import ADMIN, ADMIN_PW, APP_PW, admin, ext, psql_rows
from auth_util import write_auth_file
from tls_util import Certs
from txn_util import txn_pool

pytestmark = pytest.mark.tusk_only

MODES = pytest.mark.parametrize("mode", ["transaction", "session"])


def pool_size(mode, clients, size):
    """A session pool needs a server per client; a transaction pool keeps size."""
    return max(size, clients) if mode == "session" else size


def start(tusk, tmp_path, mode="transaction", size=4, pool_extra=None, **kw):
    auth = write_auth_file(tmp_path / "userlist.txt", {ADMIN: ADMIN_PW, "tusk_trust": APP_PW})
    return tusk(pools=[txn_pool(size, mode=mode, **(pool_extra or {}))], auth_file=auth,
                admin={"users": [ADMIN]}, workers=2, **kw)


def workers_of(t, prefix):
    """application_name -> worker index, for the clients whose name starts with prefix."""
    _, rows = psql_rows(t, "SHOW CLIENTS")
    return {r["application_name"]: int(r["worker"]) for r in rows if r["application_name"].startswith(prefix)}


def note_workers(t, prefix, seen):
    """Add each client's worker now to seen (application_name -> set of workers)."""
    for name, w in workers_of(t, prefix).items():
        seen.setdefault(name, set()).add(w)


def connect(t, name, **kw):
    return psycopg.connect(host="127.0.0.1", port=t.port, user="tusk_trust", password=APP_PW, dbname=TEST_DB,
                           application_name=name, autocommit=True, connect_timeout=int(15 * SLOW), **kw)


def sixteen_light_clients(t, prefix):
    """16 clients, 3 light transactions each; -> (application_name -> worker, the connections)."""
    conns = [connect(t, f"{prefix}{i}") for i in range(16)]
    try:
        for _ in range(3):
            for c in conns:
                assert c.execute("select 1").fetchone() == (1,)
        return workers_of(t, prefix), conns
    except BaseException:
        for c in conns:
            c.close()
        raise


def test_without_balance_clients_stay_where_the_kernel_put_them(tusk, tmp_path):
    """The control for the next test: SO_REUSEPORT spreads 16 connections over both workers
    (all on one has odds of 2 in 65,536), and with worker_balance off they stay there."""
    t = start(tusk, tmp_path, worker_balance=False)
    where, conns = sixteen_light_clients(t, "stay")
    for c in conns:
        c.close()
    assert len(where) == 16 and set(where.values()) == {0, 1}, where


def test_a_light_load_gathers_on_one_worker(tusk, tmp_path):
    """While both workers together use far less than half a core, every client ends up on
    worker 0 after a transaction, whichever worker accepted it."""
    t = start(tusk, tmp_path)
    where, conns = sixteen_light_clients(t, "light")
    try:
        assert len(where) == 16 and set(where.values()) == {0}, where
        # Moved clients keep working, each on its own session.
        for i, c in enumerate(conns):
            assert c.execute("select current_setting('application_name')").fetchone() == (f"light{i}",)
    finally:
        for c in conns:
            c.close()


@pytest.fixture
def pingpong(monkeypatch):
    monkeypatch.setenv("TUSK_TEST_BALANCE", "pingpong")


def test_moving_clients_keep_their_sessions(tusk, tmp_path, pingpong):
    """Three clients with their own settings, carried SETs and prepared statements move at
    every transaction; each keeps seeing only its own state, and its ParameterStatus."""
    t = start(tusk, tmp_path, size=2)
    conns = [connect(t, f"pp{i}") for i in range(3)]
    seen = {}
    try:
        for i, c in enumerate(conns):
            c.execute(f"set search_path = s{i}, public")
            c.execute(f"set application_name = 'pp{i}'")
            c.execute("set DateStyle = %s" % ("'ISO, DMY'" if i % 2 else "'SQL, MDY'"))
        for rnd in range(25):
            for i, c in enumerate(conns):
                sp = c.execute("show search_path", prepare=True).fetchone()[0]
                assert sp == f"s{i}, public", (i, rnd, sp)
                ds = c.execute("show DateStyle").fetchone()[0]
                assert ds == ("ISO, DMY" if i % 2 else "SQL, MDY"), (i, rnd, ds)
                assert c.execute("select %s::int + 1", (rnd,), prepare=True).fetchone() == (rnd + 1,)
                assert c.info.parameter_status("application_name") == f"pp{i}"
                assert c.info.parameter_status("DateStyle") == ("ISO, DMY" if i % 2 else "SQL, MDY")
            if rnd < 4:  # three transactions per client per round: an odd number of moves
                note_workers(t, "pp", seen)
        # Each client was seen on both workers: they did move.
        assert len(seen) == 3 and all(v == {0, 1} for v in seen.values()), seen
    finally:
        for c in conns:
            c.close()


@MODES
@pytest.mark.parametrize("proto", ["simple", "extended", "prepared"])
def test_pgbench_while_every_client_moves_at_every_transaction(tusk, tmp_path, pingpong, proto, mode):
    t = start(tusk, tmp_path, mode=mode, size=pool_size(mode, 8, 4),
              log={"level": "warn", "format": "text", "target": "stderr"})
    cmd = [str(PG_BIN / "pgbench"), "-n", "-S", "-M", proto, "-c", "8", "-j", "2", "-t", "300",
           "-h", "127.0.0.1", "-p", str(t.port), "-U", "tusk_trust", BENCH_DB]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120 * SLOW,
                       env={"PGPASSWORD": APP_PW, "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stdout + p.stderr
    assert "number of transactions actually processed: 2400/2400" in p.stdout, p.stdout
    assert "moves to worker" not in t.log_text()  # debug lines only


@MODES
def test_cancel_reaches_a_client_that_moved(tusk, tmp_path, pingpong, mode):
    t = start(tusk, tmp_path, mode=mode)
    with connect(t, "cancelme") as c:
        before = set()
        for _ in range(4):
            c.execute("select 1")
            before.add(workers_of(t, "cancelme")["cancelme"])
        assert before == {0, 1}
        errors = []

        def run():
            try:
                c.execute("select pg_sleep(30)")
            except psycopg.errors.QueryCanceled as e:
                errors.append(e)

        th = threading.Thread(target=run)
        t0 = time.monotonic()
        th.start()
        wait_until(lambda: any(r["state"] == "active" for r in psql_rows(t, "SHOW CLIENTS")[1]
                               if r["application_name"] == "cancelme"), 10 * SLOW, what="the sleep to start")
        c.cancel()
        th.join(20 * SLOW)
        assert not th.is_alive() and len(errors) == 1, errors
        assert time.monotonic() - t0 < 15 * SLOW
        assert c.execute("select 2").fetchone() == (2,)


@MODES
def test_kill_reaches_clients_between_workers(tusk, tmp_path, pingpong, mode):
    """KILL closes clients worker by worker; a client moving at that moment was in neither
    worker's list when it ran, and is closed on arrival (console_kills_catch_up). Eight clients
    in tight loops, each moving at every transaction, 10 KILLs: every client dies each time."""
    t = start(tusk, tmp_path, mode=mode, size=pool_size(mode, 8, 4))
    for rnd in range(10):
        conns = [connect(t, f"k{rnd}_{i}") for i in range(8)]
        done = [None] * 8
        # libpq takes a FATAL that arrives in the same read as the previous answer's
        # ReadyForQuery (the client was idle) as a notice, and the next query then only sees
        # the connection end: psycopg reports that as "server closed the connection".
        notices = [[] for _ in range(8)]
        for i, c in enumerate(conns):
            c.add_notice_handler(lambda d, i=i: notices[i].append(d.message_primary or ""))
        go = threading.Event()

        def loop(i):
            go.wait()
            try:
                while True:
                    conns[i].execute("select 1")
            except psycopg.OperationalError as e:
                done[i] = str(e)

        threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(8)]
        for th in threads:
            th.start()
        go.set()
        time.sleep(0.2)
        with admin(t) as c:
            assert ext(c, f"KILL {TEST_DB}")[2] == "KILL"
        for th in threads:
            th.join(10 * SLOW)
        alive = [i for i, th in enumerate(threads) if th.is_alive()]
        for c in conns:
            c.close()
        assert not alive, f"round {rnd}: clients {alive} survived the KILL"
        # Each was closed; most with tusk's error (one killed while a server message was
        # half relayed to it, or while its server was on its way, can only be closed).
        told = [f"KILL {TEST_DB}" in (d or "") or any(f"KILL {TEST_DB}" in n for n in notices[i])
                for i, d in enumerate(done)]
        assert all(d is not None for d in done) and any(told), (done, notices)


@MODES
def test_tls_clients_move(tusk, tmp_path, pingpong, mode):
    certs = Certs(tmp_path / "certs")
    t = start(tusk, tmp_path, mode=mode, listen_opts={"tls": "require", "tls_cert_file": certs.server_crt,
                                           "tls_key_file": certs.server_key})
    conns = [connect(t, f"tls{i}", sslmode="require") for i in range(3)]
    seen = {}
    try:
        for rnd in range(30):
            for i, c in enumerate(conns):
                assert c.pgconn.ssl_in_use
                # An answer larger than a TLS record, so that records span reads after moves.
                n = c.execute("select length(string_agg(md5(g::text), '')) from generate_series(1, %s) g",
                              (500 + rnd + i,)).fetchone()[0]
                assert n == 32 * (500 + rnd + i)
            if rnd < 4:  # a transaction per client per round: a move each
                note_workers(t, "tls", seen)
        assert len(seen) == 3 and all(v == {0, 1} for v in seen.values()), seen
    finally:
        for c in conns:
            c.close()


@MODES
def test_cached_reads_while_clients_move(tusk, tmp_path, pingpong, pg, mode):
    """The result cache's per-client state moves only when nothing of it is in flight; four
    clients reading the same rows and one writing them get the right answers throughout."""
    t = start(tusk, tmp_path, mode=mode, size=pool_size(mode, 5, 4), pool_extra={"cache": "on"}, cache_ttl="60s")
    pg.execute("drop table if exists balance_kv; create table balance_kv (k int primary key, v int); "
               "insert into balance_kv values (1, 0); grant all on balance_kv to tusk_trust", dbname=TEST_DB)
    setup = connect(t, "cwriter")
    readers = [connect(t, f"creader{i}") for i in range(4)]
    try:
        for v in range(1, 16):
            for r in readers:
                for _ in range(3):
                    assert r.execute("select v from balance_kv where k = 1").fetchone() == (v - 1,)
            setup.execute("update balance_kv set v = %s where k = 1", (v,))
        assert set(workers_of(t, "creader").values()) <= {0, 1}
    finally:
        for c in readers + [setup]:
            c.close()
        pg.execute("drop table balance_kv", dbname=TEST_DB)


@MODES
def test_shutdown_while_clients_move(tusk, tmp_path, pingpong, mode):
    """SIGTERM while messages carrying clients (and, in session pools, their servers) are in
    the workers' inboxes: tusk exits 0, and (under ASan) with no client or server leaked or
    used after free."""
    t = start(tusk, tmp_path, mode=mode, size=pool_size(mode, 16, 4), shutdown_timeout="5s")
    cmd = [str(PG_BIN / "pgbench"), "-n", "-S", "-c", "16", "-j", "2", "-T", "20",
           "-h", "127.0.0.1", "-p", str(t.port), "-U", "tusk_trust", BENCH_DB]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env={"PGPASSWORD": APP_PW, "PATH": "/usr/bin:/bin"})
    try:
        time.sleep(2 * SLOW)
        assert p.poll() is None, p.stdout.read()
        problems = t.stop()
        assert problems == [], problems
    finally:
        p.kill()
        p.communicate()
