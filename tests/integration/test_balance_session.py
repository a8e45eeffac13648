"""Session-pool clients moving between workers with their servers (worker_balance,
docs/ARCHITECTURE.md "Workers"): between transactions, a session client and the server it owns
go to another worker together, so a light session load gathers on one loop as a transaction
load does. Whatever the session holds lives on that one PostgreSQL backend and must stay the
client's: its backend, SETs, temporary tables, SQL PREPAREs, WITH HOLD cursors, advisory locks.
A transaction never moves in its middle.

TUSK_TEST_BALANCE=pingpong (test_balance.py) makes every client move to the next worker at
every boundary; the SHOW CLIENTS column `worker` shows where each one is. pgbench, cancel, KILL,
TLS and shutdown while session clients move are test_balance.py's, run in both pool modes."""

import threading

import pytest

from conftest import SLOW, wait_until
from test_balance import connect, note_workers, start, workers_of
from txn_util import backend_pid

pytestmark = pytest.mark.tusk_only


@pytest.fixture
def pingpong(monkeypatch):
    monkeypatch.setenv("TUSK_TEST_BALANCE", "pingpong")


def session(tusk, tmp_path, **kw):
    return start(tusk, tmp_path, mode="session", size=kw.pop("size", 20), **kw)


def test_a_light_session_load_gathers_on_one_worker_with_its_servers(tusk, tmp_path):
    """16 session clients spread by SO_REUSEPORT over both workers end up on worker 0 after a
    few transactions, each still on the PostgreSQL backend it began with."""
    t = session(tusk, tmp_path)
    conns = [connect(t, f"sl{i}") for i in range(16)]
    try:
        pids = [backend_pid(c) for c in conns]
        assert len(set(pids)) == 16
        for _ in range(3):
            for i, c in enumerate(conns):
                assert c.execute("select pg_backend_pid()").fetchone() == (pids[i],)
        where = workers_of(t, "sl")
        assert len(where) == 16 and set(where.values()) == {0}, where
    finally:
        for c in conns:
            c.close()


def test_session_state_follows_every_move(tusk, tmp_path, pingpong):
    """Three session clients, each with its own SET, temporary table, SQL PREPARE, WITH HOLD
    cursor and advisory lock, move at every transaction: each keeps its backend and all of it,
    and sees none of the others'."""
    t = session(tusk, tmp_path, size=4)
    conns = [connect(t, f"ss{i}") for i in range(3)]
    seen = {}
    try:
        pids = [backend_pid(c) for c in conns]
        for i, c in enumerate(conns):
            c.execute(f"set search_path = s{i}, public")
            c.execute(f"create temp table mine (v int); insert into mine values ({i})")
            c.execute(f"prepare plus{i}(int) as select $1 + {i}")
            c.execute("begin")
            c.execute(f"declare cur{i} cursor with hold for select g from generate_series(1, 100) g")
            c.execute("commit")
            assert c.execute("select pg_try_advisory_lock(4242 + %s)", (i,)).fetchone() == (True,)
        for rnd in range(30):
            for i, c in enumerate(conns):
                # five statements per client per round: an odd number of moves
                assert c.execute("select pg_backend_pid(), current_setting('search_path')").fetchone() == \
                    (pids[i], f"s{i}, public"), (i, rnd)
                assert c.execute("select v from mine").fetchall() == [(i,)]
                assert c.execute(f"execute plus{i}({rnd})").fetchone() == (rnd + i,)
                assert c.execute(f"fetch next from cur{i}").fetchone() == (rnd + 1,)
                held = c.execute("select objid from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()")
                assert held.fetchall() == [(4242 + i,)]
            if rnd < 4:
                note_workers(t, "ss", seen)
        assert len(seen) == 3 and all(v == {0, 1} for v in seen.values()), seen
    finally:
        for c in conns:
            c.close()


def test_a_transaction_stays_on_its_worker(tusk, tmp_path, pingpong):
    """Inside BEGIN ... COMMIT the client does not move (its server is in a transaction);
    after COMMIT it does."""
    t = session(tusk, tmp_path, size=2)
    with connect(t, "stay") as c:
        c.execute("select 1")
        c.execute("begin")
        first = workers_of(t, "stay")["stay"]
        for k in range(10):
            assert c.execute("select %s::int", (k,)).fetchone() == (k,)
            assert workers_of(t, "stay")["stay"] == first
        c.execute("commit")
        wait_until(lambda: workers_of(t, "stay")["stay"] != first, 5 * SLOW, what="the move after COMMIT")


def test_servers_that_moved_serve_the_next_sessions(tusk, tmp_path, pingpong):
    """A session's server goes back to the pool on the worker the session ended on, not the
    one it began on (the pool core is told, tp_slot_moved): four threads open short sessions
    of one to four statements (moves of both parities) on a pool of two servers, 40 each;
    every answer is right and every server ends clean (a backend reused by the next session
    shows none of the last one's SET)."""
    t = session(tusk, tmp_path, size=2)
    with connect(t, "default") as c:
        default = c.execute("show work_mem").fetchone()
    assert default != ("7MB",)
    errors = []

    def run(k):
        try:
            for n in range(40):
                with connect(t, f"short{k}") as c:
                    assert c.execute("show work_mem").fetchone() == default
                    c.execute("set work_mem = '7MB'")
                    for j in range(n % 3):
                        assert c.execute("select %s::int * 2", (j,)).fetchone() == (2 * j,)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120 * SLOW)
    assert not any(th.is_alive() for th in threads)
    assert errors == []
    assert t.proc.poll() is None
