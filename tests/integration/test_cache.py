"""The result cache and SingleFlight (src/flight/, docs/cache.md) against a real PostgreSQL 15
with pg_stat_statements preloaded, so that what the server actually ran can be counted."""

import random
import threading
import time

import psycopg
import pytest

import pgwire
from conftest import TEST_DB, _make_pg, connect
from txn_util import txn_pool

SLOW_QUERY = ("SELECT a.id, b.id FROM items a, items b, items c "
              "WHERE c.id <= 3 AND (a.id * 7 + b.id * 13 + c.id) % 5000 = 4999")


@pytest.fixture(scope="module")
def cpg(workdir):
    """A PostgreSQL of this module's own with pg_stat_statements."""
    s = _make_pg(workdir / "pg-cache", with_bench=False)
    with open(s.data / "postgresql.conf", "a") as f:
        f.write("shared_preload_libraries = 'pg_stat_statements'\n"
                "pg_stat_statements.track = all\n")
    s.stop()
    s.start()
    s.execute("create extension if not exists pg_stat_statements", dbname=TEST_DB)
    s.execute("create role tusk_other login")
    s.execute("grant select on items to tusk_other", dbname=TEST_DB)
    yield s
    s.destroy()


def calls(pg, fragment):
    """How many times PostgreSQL ran statements whose text contains fragment."""
    rows = pg.execute("select coalesce(sum(calls), 0) from pg_stat_statements where query like %s "
                      "and query not like '%%pg_stat_statements%%'", ("%" + fragment + "%",), dbname=TEST_DB)
    return int(rows[0][0])


def reset_stats(pg):
    pg.execute("select pg_stat_statements_reset()", dbname=TEST_DB)


def cache_pool(mode="on", **extra):
    return txn_pool(40, cache=mode, **extra)


def wire(t, user="tusk_trust", timeout=60.0):
    """A raw client speaking the simple protocol (Query), which is what the cache serves."""
    c = pgwire.RawClient("127.0.0.1", t.port, timeout=timeout)
    c.startup(user, TEST_DB)
    return c


def rows_of(c, sql):
    rows, errors = c.simple_query(sql)
    assert not errors, errors
    return rows


def test_coalesce_200_identical_queries_run_once(cpg, tusk):
    t = tusk(pg_server=cpg, pools=[cache_pool("coalesce")], workers=2, cache_coalesce_wait="20s")
    direct = cpg.execute(SLOW_QUERY, dbname=TEST_DB)
    conns = [wire(t) for _ in range(200)]
    for c in conns:  # logged in and idle: no server held
        assert rows_of(c, "select 1") == [["1"]]
    reset_stats(cpg)
    barrier = threading.Barrier(len(conns))
    results = [None] * len(conns)

    def run(i):
        barrier.wait()
        results[i] = conns[i].simple_query(SLOW_QUERY)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(conns))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    want = sorted([[str(a), str(b)] for a, b in direct])
    for r in results:
        assert r is not None
        rows, errors = r
        assert not errors
        assert sorted(rows) == want
    assert calls(cpg, "items a, items b, items c") == 1
    for c in conns:
        c.close()
