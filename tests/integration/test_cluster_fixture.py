"""The replicated-cluster fixture itself (repl_util.Cluster), so that the backend tests built on
it stand on something proven: two streaming standbys made with pg_basebackup -R that replay the
primary's writes, a replay delay that holds a write back on one standby only, stop/start, and a
promotion after which the promoted node takes writes and the other standby is still a standby."""

import time

import psycopg
import pytest


def test_standbys_stream_and_replay(pg_cluster):
    c = pg_cluster
    assert not c.in_recovery(c.primary)
    assert all(c.in_recovery(s) for s in c.standbys) and len(c.standbys) == 2
    c.primary.execute("create table if not exists fx (id int primary key)")
    c.primary.execute("insert into fx values (1) on conflict do nothing")
    lsn = c.current_lsn()
    for s in c.standbys:
        c.wait_replayed(s, lsn, timeout=15)
        assert s.execute("select count(*) from fx where id = 1")[0][0] == 1
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        c.standbys[0].execute("insert into fx values (2)")


def test_delayed_replay_holds_back_one_standby(pg_cluster):
    c = pg_cluster
    slow, fast = c.standbys
    c.primary.execute("create table if not exists fx (id int primary key)")
    c.delay_replay(slow, 3000)
    c.primary.execute("insert into fx values (100) on conflict do nothing")
    c.primary.execute("delete from fx where id = 100")
    c.primary.execute("insert into fx values (100)")
    lsn = c.current_lsn()
    c.wait_replayed(fast, lsn, timeout=10)
    assert not c.replayed(slow, lsn)
    c.wait_replayed(slow, lsn, timeout=15)
    c.primary.execute("delete from fx where id = 100")


def test_stop_and_start_a_standby(pg_cluster):
    c = pg_cluster
    s = c.standbys[1]
    s.stop("immediate")
    with pytest.raises(psycopg.OperationalError):
        s.execute("select 1")
    s.start()
    c.wait_streaming()
    assert c.in_recovery(s)


def test_promote_makes_a_new_primary(private_cluster):
    c = private_cluster
    old = c.primary
    old.stop("immediate")
    t0 = time.monotonic()
    new = c.standbys[0]
    c.promote(new)
    took = time.monotonic() - t0
    assert c.primary is new and not c.in_recovery(new)
    new.execute("create table after_promote (id int)")
    new.execute("insert into after_promote values (1)")
    assert c.in_recovery(c.standbys[0])  # the other standby: still one (now orphaned)
    assert took < 10, took
