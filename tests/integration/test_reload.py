"""Reload on SIGHUP: a new configuration generation; pools added, removed (their clients
finish), resized; listeners added and removed; a broken file leaves the running one."""

import os
import re
import socket
import threading
import time

import psycopg
import pytest

from conftest import SLOW, TEST_DB, port_open, free_port, wait_until
from lifecycle_util import reload, rule, write_config


@pytest.mark.tusk_only
def test_reload_adds_a_pool(tusk, pg):
    t = tusk(pools=[rule(user="tusk_trust")])
    with pytest.raises(psycopg.OperationalError, match="no pool rule matches"):
        t.connect(user="tusk_solo")
    write_config(t, pg, [rule(user="tusk_trust"), rule(user="tusk_solo")])
    reload(t)
    with t.connect(user="tusk_solo") as c:
        assert c.execute("select current_user").fetchone() == ("tusk_solo",)
    with t.connect() as c:
        assert c.execute("select 1").fetchone() == (1,)


@pytest.mark.tusk_only
def test_reload_removes_a_pool_whose_client_is_mid_transaction(tusk, pg):
    pg.execute("create table if not exists reload_rm (v int)", dbname=TEST_DB)
    pg.execute("truncate reload_rm", dbname=TEST_DB)
    pg.execute("grant all on reload_rm to public", dbname=TEST_DB)
    t = tusk(pools=[rule(user="tusk_trust"), rule(user="tusk_solo", mode="transaction")])
    old = t.connect(user="tusk_solo", autocommit=False)
    old.execute("insert into reload_rm values (1)")  # opens the transaction
    write_config(t, pg, [rule(user="tusk_trust")])
    reload(t)
    t.wait_log("pool tusk_test/tusk_solo retired by reload")
    # new clients of the removed pool are refused with a clear error
    with pytest.raises(psycopg.OperationalError, match="no pool rule matches .*tusk_solo"):
        t.connect(user="tusk_solo")
    # the client in the middle of its transaction finishes it
    old.execute("insert into reload_rm values (2)")
    old.commit()
    assert pg.execute("select count(*) from reload_rm", dbname=TEST_DB)[0][0] == 2
    old.close()
    # its server is closed when released, not parked
    wait_until(lambda: pg.backends(user="tusk_solo") == 0, 5 * SLOW, what="retired pool's server closed")
    with t.connect() as c:
        assert c.execute("select 1").fetchone() == (1,)


def _hold(t, started, release, errors):
    try:
        with t.connect() as c:
            c.execute("select 1")
            started.release()
            release.wait(10)
    except Exception as e:  # noqa: BLE001 - reported by the test
        errors.append(e)
        started.release()


@pytest.mark.tusk_only
def test_reload_changes_pool_size(tusk, pg):
    t = tusk(pools=[rule(size=1)], pool_wait_timeout="500ms")
    with t.connect() as a:
        a.execute("select 1")
        with pytest.raises(psycopg.OperationalError, match="53300|pool"):
            t.connect().execute("select 1")
        # (a longer wait too: new server connections may be slow on a loaded machine)
        write_config(t, pg, [rule(size=3)], pool_wait_timeout="10s")
        reload(t)
        assert re.search(r"size 1 -> 3", t.log_text())
        # three clients at once now fit
        started, release, errors = threading.Semaphore(0), threading.Event(), []
        th = [threading.Thread(target=_hold, args=(t, started, release, errors)) for _ in range(2)]
        for x in th:
            x.start()
        for _ in th:
            started.acquire(timeout=10)
        release.set()
        for x in th:
            x.join()
        assert errors == []
    # and back down: the pool closes the extra servers when they are released
    write_config(t, pg, [rule(size=1)], pool_wait_timeout="10s")
    reload(t)
    wait_until(lambda: pg.backends(user="tusk_trust") <= 1, 5 * SLOW, what="pool shrunk to 1")


@pytest.mark.tusk_only
def test_reload_of_a_broken_config_keeps_the_old_one_serving(tusk, pg):
    t = tusk(pools=[rule()])
    good = t.cfg_path.read_text()
    t.cfg_path.write_text(good + "pool_wait_timeout: forever\nno_such_key: 1\n")
    reload(t, expect_ok=False)
    log = t.log_text()
    # every error, each with file and line
    n = len(good.splitlines())
    assert f"{t.cfg_path}:{n + 1}: pool_wait_timeout" in log, log
    assert f"{t.cfg_path}:{n + 2}: no_such_key: unknown key" in log, log
    assert "the running configuration stays" in log
    with t.connect() as c:
        assert c.execute("select 1").fetchone() == (1,)
    # restart-only keys are logged and kept, the rest applies
    write_config(t, pg, [rule(user="tusk_trust"), rule(user="tusk_solo")], workers=3)
    reload(t)
    t.wait_log("workers: cannot be changed by a reload")
    with t.connect(user="tusk_solo") as c:
        assert c.execute("select 1").fetchone() == (1,)


@pytest.mark.tusk_only
def test_reload_adds_and_removes_listeners(tusk, pg):
    t = tusk(pools=[rule()])
    second = free_port()
    both = [{"host": "127.0.0.1", "port": t.port}, {"host": "127.0.0.1", "port": second}]
    write_config(t, pg, [rule()], listen=both)
    reload(t)
    wait_until(lambda: port_open(second), 5 * SLOW, what="new listener")
    with psycopg.connect(host="127.0.0.1", port=second, user="tusk_trust", dbname=TEST_DB) as c:
        assert c.execute("select 1").fetchone() == (1,)
    # drop the first address; a client connected through it stays
    held = t.connect()
    write_config(t, pg, [rule()], listen=[{"host": "127.0.0.1", "port": second}])
    reload(t)
    wait_until(lambda: not port_open(t.port), 5 * SLOW, what="old listener closed")
    assert held.execute("select 2").fetchone() == (2,)
    held.close()
    # a listen address that cannot be bound fails the whole reload
    busy = [{"host": "127.0.0.1", "port": second}, {"host": "127.0.0.1", "port": pg.port}]
    write_config(t, pg, [rule(user="tusk_solo")], listen=busy)
    reload(t, expect_ok=False)
    # nothing of it applied: tusk_trust (not in the new rules) is still served
    with psycopg.connect(host="127.0.0.1", port=second, user="tusk_trust", dbname=TEST_DB) as c:
        assert c.execute("select 3").fetchone() == (3,)
    # and so does one another process listens on with SO_REUSEPORT (another tusk), which
    # tusk's own SO_REUSEPORT sockets would have shared without a word
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        busy = [{"host": "127.0.0.1", "port": second}, {"host": "127.0.0.1", "port": other.getsockname()[1]}]
        write_config(t, pg, [rule(user="tusk_solo")], listen=busy)
        reload(t, expect_ok=False)
        t.wait_log(f"listen 127.0.0.1:{other.getsockname()[1]}: another process listens there")
    with psycopg.connect(host="127.0.0.1", port=second, user="tusk_trust", dbname=TEST_DB) as c:
        assert c.execute("select 4").fetchone() == (4,)
    # another name for an address tusk listens on already is refused, and named as such
    same = [{"host": "127.0.0.1", "port": second}, {"host": "127.1", "port": second}]
    write_config(t, pg, [rule(user="tusk_solo")], listen=same)
    reload(t, expect_ok=False)
    t.wait_log(f"listen 127.1:{second}: the same address as listen 127.0.0.1:{second}")
    with psycopg.connect(host="127.0.0.1", port=second, user="tusk_trust", dbname=TEST_DB) as c:
        assert c.execute("select 5").fetchone() == (5,)
    # leave t.port for the fixture's bookkeeping: it only signals the pid
    t.port = second


@pytest.mark.tusk_only
def test_reload_changes_server_idle_timeout_of_existing_pools(tusk, pg):
    """A pool made before the reload judges its idle servers by the new server_idle_timeout
    (the pool core keeps its own copy: the reload hands it the new value)."""
    t = tusk(pools=[rule(size=3)], server_idle_timeout="1h")
    with t.connect() as a, t.connect() as b:
        a.execute("select 1")
        b.execute("select 1")
    assert pg.backends(user="tusk_trust") >= 1, "pooled servers stay open while idle"
    time.sleep(1.5)
    assert pg.backends(user="tusk_trust") >= 1, "an hour's idle timeout closed a server"
    write_config(t, pg, [rule(size=3)], server_idle_timeout="1s")
    reload(t)
    wait_until(lambda: pg.backends(user="tusk_trust") == 0, 10 * SLOW, what="idle servers closed after the reload")
    with t.connect() as c:
        assert c.execute("select 1").fetchone() == (1,)
