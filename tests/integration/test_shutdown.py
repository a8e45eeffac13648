"""SIGTERM drains: no new clients, clients outside a transaction are closed with 57P01, a
client inside one finishes it, shutdown_timeout bounds the wait. SIGINT is immediate."""

import signal
import time

import psycopg
import pytest

from conftest import SLOW, TEST_DB, port_open, wait_until
from lifecycle_util import finished, rule


def _table(pg, name):
    pg.execute(f"create table if not exists {name} (v int)", dbname=TEST_DB)
    pg.execute(f"truncate {name}", dbname=TEST_DB)
    pg.execute(f"grant all on {name} to public", dbname=TEST_DB)


@pytest.mark.tusk_only
@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_sigterm_lets_a_transaction_finish_and_closes_idle_clients(tusk, pg, mode):
    _table(pg, "drain_t")
    t = tusk(pools=[rule(mode=mode)], shutdown_timeout="20s")
    busy = t.connect(autocommit=False)
    busy.execute("insert into drain_t values (1)")  # inside a transaction now
    idle = t.connect()
    idle.execute("select 1")  # logged in, outside any transaction
    t.proc.send_signal(signal.SIGTERM)
    # the idle client is told why, at once
    wait_until(lambda: "57P01" in t.log_text(), 5 * SLOW, what="idle client closed")
    with pytest.raises(psycopg.OperationalError) as ei:
        idle.execute("select 1")
    assert "shutting down" in str(ei.value) or "closed" in str(ei.value)
    # nobody new gets in
    wait_until(lambda: not port_open(t.port), 5 * SLOW, what="listener closed")
    # the transaction goes on and commits
    time.sleep(0.3)
    busy.execute("insert into drain_t values (2)")
    busy.commit()
    assert pg.execute("select count(*) from drain_t", dbname=TEST_DB)[0][0] == 2
    # then tusk closes it and exits cleanly, long before shutdown_timeout
    start = time.monotonic()
    assert finished(t, 10 * SLOW) == 0
    assert time.monotonic() - start < 5 * SLOW
    t.wait_log("drained: every client has finished")
    with pytest.raises(psycopg.OperationalError):
        busy.execute("select 1")
    busy.close()
    idle.close()


@pytest.mark.tusk_only
def test_sigterm_gives_up_after_shutdown_timeout(tusk, pg):
    _table(pg, "drain_to")
    t = tusk(pools=[rule(mode="transaction")], shutdown_timeout="1s")
    stuck = t.connect(autocommit=False)
    stuck.execute("insert into drain_to values (1)")
    start = time.monotonic()
    t.proc.send_signal(signal.SIGTERM)
    assert finished(t, 10 * SLOW) == 0
    took = time.monotonic() - start
    assert 0.9 <= took < 4 * SLOW, f"exited after {took:.2f}s with shutdown_timeout 1s"
    t.wait_log("shutdown_timeout reached: closing 1 remaining client")
    with pytest.raises(psycopg.OperationalError):
        stuck.execute("insert into drain_to values (2)")
        stuck.commit()
    stuck.close()
    # the unfinished transaction was rolled back, not committed
    wait_until(lambda: pg.backends(user="tusk_trust") == 0, 5 * SLOW, what="servers closed")
    assert pg.execute("select count(*) from drain_to", dbname=TEST_DB)[0][0] == 0


@pytest.mark.tusk_only
def test_sigint_is_immediate(tusk, pg):
    t = tusk(pools=[rule(mode="transaction")], shutdown_timeout="30s")
    c = t.connect(autocommit=False)
    c.execute("select 1")  # inside a transaction
    start = time.monotonic()
    t.proc.send_signal(signal.SIGINT)
    assert finished(t, 10 * SLOW) == 0
    assert time.monotonic() - start < 2 * SLOW
    with pytest.raises(psycopg.OperationalError):
        c.execute("select 1")
    c.close()
