"""The result cache's L2 on Redis (src/flight/l2.c, docs/cache.md): two tusk processes sharing
one redis-server started here on a free loopback port; what PostgreSQL ran is counted with
pg_stat_statements (the module's own server, from test_cache)."""

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from conftest import TEST_DB, free_port, port_open, run, TUSK_BIN, wait_until
from relay_util import Relay
from test_cache import cache_pool, calls, cpg, reset_stats, rows_of, wire  # noqa: F401 (cpg: fixture)

REDIS = "/usr/bin/redis-server"
pytestmark = pytest.mark.skipif(not os.path.exists(REDIS), reason="redis-server is not installed")


class Redis:
    def __init__(self, port):
        self.port = port
        self.proc = None
        self.password = None
        self.db = 0

    def start(self, *extra):
        self.proc = subprocess.Popen([REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", *extra],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: port_open(self.port), 10, what="redis-server listening")
        return self

    def command(self, *args):
        """One command on a fresh connection (AUTH and SELECT first when the server wants them)."""
        cmds = ([["AUTH", self.password]] if self.password else []) + \
            ([["SELECT", str(self.db)]] if self.db else []) + [list(args)]
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(b"".join(b"*%d\r\n" % len(c) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a.encode()) for a in c)
                               for c in cmds))
            f = s.makefile("rb")
            replies = [f.readline().rstrip(b"\r\n") for _ in cmds]  # one-line replies only
        return replies[-1]

    def keys(self):
        return int(self.command("DBSIZE")[1:])

    def filled(self, before, what="the fill to reach Redis"):
        """The fill is fire-and-forget: wait until Redis holds more keys than before."""
        wait_until(lambda: self.keys() > before, 10, what=what)

    def kill(self):
        if self.proc:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def redis():
    r = Redis(free_port())
    yield r
    r.kill()


@pytest.fixture(scope="module")
def l2tables(cpg):
    cpg.execute("drop table if exists l2t; create table l2t (id int primary key, v text); "
                "insert into l2t select g, 'v' || g from generate_series(1, 20) g; "
                "drop table if exists l2secret; create table l2secret (v text); "
                "insert into l2secret values ('only tusk_trust')", dbname=TEST_DB)
    cpg.execute("grant select, update on l2t to tusk_trust; grant select on l2secret to tusk_trust; "
                "revoke all on l2secret from tusk_other", dbname=TEST_DB)
    return cpg


def two_tusks(tusk, cpg, redis_port, timeout="100ms", workers=2, **redis):
    ts = []
    for _ in range(2):
        http = f"127.0.0.1:{free_port()}"
        t = tusk(pg_server=cpg, pools=[cache_pool("on")], cache_ttl="60s", workers=workers,
                 admin={"http": http},
                 redis={"host": "127.0.0.1", "port": redis_port, "timeout": timeout, "prefix": "t:", **redis})
        t.http = http
        ts.append(t)
    return ts


def metric(t, name):
    body = urllib.request.urlopen(f"http://{t.http}/metrics", timeout=10).read().decode()
    m = re.search(r"^tusk_cache_%s_total (\d+)$" % name, body, re.M)
    assert m, f"tusk_cache_{name}_total not in /metrics"
    return int(m.group(1))


def wait_connected(t, since=0, workers=2):
    """Each worker logs its own connection."""
    wait_until(lambda: t.log_text()[since:].count("cache L2 (Redis): connected") >= workers, 15,
               what="every worker of tusk connected to Redis")


def first_read(t, sql):
    wait_connected(t)
    c = wire(t)
    return c, rows_of(c, sql)


def test_check_validates_redis(tmp_path):
    base = "services:\n  db:\n    hosts: ['127.0.0.1:5432']\npools:\n  - {service: db}\n"
    cases = {
        "redis:\n  host: 127.0.0.1\n  port: 6379\n  prefix: 'x:'\n  timeout: 50ms\n  db: 2\n": None,
        "redis:\n  unix: /tmp/r.sock\n": None,
        "redis:\n  host: h\n  unix: /tmp/r.sock\n": "host and unix",
        "redis:\n  unix: /tmp/r.sock\n  port: 7000\n": "a port with unix",
        "redis:\n  port: 7000\n": "a port without host",
        "redis:\n  unix: /tmp/r.sock\n  tls: on\n": "not to a unix socket",  # test_cache_l2_tls: the rest
        "redis:\n  host: h\n  timeout: 0ms\n": "redis.timeout",
    }
    for extra, want in cases.items():
        f = tmp_path / "t.yaml"
        f.write_text(base + extra)
        p = run([str(TUSK_BIN), "-c", str(f), "--check"], check=False)
        if want is None:
            assert p.returncode == 0, (extra, p.stdout, p.stderr)
        else:
            assert p.returncode != 0 and want in p.stdout + p.stderr, (extra, p.stdout, p.stderr)


def test_two_tusks_share_results_and_writes(tusk, l2tables, redis):
    cpg = l2tables
    redis.start()
    a, b = two_tusks(tusk, cpg, redis.port)
    ca, _ = first_read(a, "SELECT 1 FROM l2t WHERE id = 1")
    cb, _ = first_read(b, "SELECT 1 FROM l2t WHERE id = 1")
    q = "SELECT id, v FROM l2t WHERE id <= 3 ORDER BY id"
    want = [["1", "v1"], ["2", "v2"], ["3", "v3"]]
    reset_stats(cpg)
    before = redis.keys()
    assert rows_of(ca, q) == want  # A: a miss, it runs and fills Redis
    assert calls(cpg, "FROM l2t WHERE id <=") == 1
    redis.filled(before)  # the fill is fire-and-forget
    hits = metric(b, "l2_hits")
    for _ in range(3):
        assert rows_of(cb, q) == want  # B: from Redis
    assert calls(cpg, "FROM l2t WHERE id <=") == 1
    assert metric(b, "l2_hits") == hits + 3
    assert metric(a, "l2_stores") >= 1 and metric(b, "l2_errors") == 0
    # A write through B; a read through A (which filled) sees it, and so does B.
    rows_of(cb, "UPDATE l2t SET v = 'changed' WHERE id = 2")
    want2 = [["1", "v1"], ["2", "changed"], ["3", "v3"]]
    assert rows_of(ca, q) == want2
    assert rows_of(cb, q) == want2
    # A COMMIT through A; B sees it.
    for s in ("BEGIN", "UPDATE l2t SET v = 'v2' WHERE id = 2", "COMMIT"):
        rows_of(ca, s)
    assert rows_of(cb, q) == want
    # A ROLLBACK moves nothing it should not: still served, still right.
    for s in ("BEGIN", "UPDATE l2t SET v = 'nope' WHERE id = 2", "ROLLBACK"):
        rows_of(ca, s)
    assert rows_of(cb, q) == want
    assert rows_of(ca, q) == want


def test_two_users_never_share_through_l2(tusk, l2tables, redis):
    cpg = l2tables
    redis.start()
    a, b = two_tusks(tusk, cpg, redis.port)
    first_read(a, "SELECT 1 FROM l2t WHERE id = 1")
    first_read(b, "SELECT 1 FROM l2t WHERE id = 1")
    q = "SELECT v FROM l2secret"
    mine = wire(a)
    before = redis.keys()
    assert rows_of(mine, q) == [["only tusk_trust"]]
    redis.filled(before)  # the fill is fire-and-forget
    assert rows_of(wire(b), q) == [["only tusk_trust"]]  # same user: may share
    them = wire(b, user="tusk_other")
    rows, errors = them.simple_query(q)
    assert rows == [] and errors and "permission denied" in str(errors), (rows, errors)


def test_redis_down_killed_slow_restarted(tusk, l2tables, redis):
    cpg = l2tables
    # Down at start: every read is a miss, answered right.
    a, b = two_tusks(tusk, cpg, redis.port, workers=1)
    q = "SELECT id, v FROM l2t WHERE id BETWEEN 10 AND 12 ORDER BY id"
    want = [["10", "v10"], ["11", "v11"], ["12", "v12"]]
    ca, cb = wire(a), wire(b)
    reset_stats(cpg)
    for _ in range(3):
        assert rows_of(ca, q) == want
        assert rows_of(cb, q) == want
    assert calls(cpg, "l2t WHERE id BETWEEN") == 6
    a.wait_log("cache L2 (Redis)")  # logged ...
    assert metric(a, "l2_errors") >= 3 and metric(a, "l2_hits") == 0  # ... and counted
    # Up: both reconnect (backoff up to 5 s) and share again.
    a_log, b_log = len(a.log_text()), len(b.log_text())
    redis.start()
    wait_connected(a, a_log, workers=1)
    wait_connected(b, b_log, workers=1)
    reset_stats(cpg)
    before = redis.keys()
    assert rows_of(ca, q) == want
    redis.filled(before)  # the fill is fire-and-forget
    assert rows_of(cb, q) == want
    assert calls(cpg, "l2t WHERE id BETWEEN") == 1
    # Slow: stopped for longer than the timeout. Reads stay right and bounded.
    errors = metric(b, "l2_errors")
    redis.proc.send_signal(signal.SIGSTOP)
    try:
        for _ in range(3):
            t0 = time.monotonic()
            assert rows_of(cb, q) == want
            assert time.monotonic() - t0 < 2.0
        rows_of(ca, "UPDATE l2t SET v = 'slow' WHERE id = 11")  # its invalidation may be lost ...
        assert rows_of(ca, q)[1] == ["11", "slow"]  # ... but reads while Redis is away run
        assert metric(b, "l2_errors") > errors  # the timeouts
    finally:
        redis.proc.send_signal(signal.SIGCONT)
    rows_of(ca, "UPDATE l2t SET v = 'v11' WHERE id = 11")
    # Killed mid run, then restarted on the same port: right answers throughout, then shared.
    redis.kill()
    for _ in range(3):
        assert rows_of(ca, q) == want
        assert rows_of(cb, q) == want
    a_log, b_log = len(a.log_text()), len(b.log_text())
    redis.start()
    # A worker notices a killed Redis at its next command, then retries with backoff.
    for _ in range(3):
        assert rows_of(ca, q) == want
        assert rows_of(cb, q) == want
    wait_connected(a, a_log, workers=1)
    wait_connected(b, b_log, workers=1)
    q2 = "SELECT v FROM l2t WHERE id BETWEEN 14 AND 15 ORDER BY id"  # never read before
    reset_stats(cpg)
    before = redis.keys()
    assert rows_of(ca, q2) == [["v14"], ["v15"]]
    redis.filled(before)  # the fill is fire-and-forget
    assert rows_of(cb, q2) == [["v14"], ["v15"]]
    assert calls(cpg, "SELECT v FROM l2t WHERE id BETWEEN") == 1


def test_password_and_db(tusk, l2tables, redis):
    """AUTH and SELECT are sent first on every connection; a refused AUTH is an l2 error and
    every read still runs and is right."""
    cpg = l2tables
    redis.start("--requirepass", "s3cret")
    redis.password, redis.db = "s3cret", 3
    a, b = two_tusks(tusk, cpg, redis.port, password="s3cret", db=3)
    ca, _ = first_read(a, "SELECT 1 FROM l2t WHERE id = 1")
    cb, _ = first_read(b, "SELECT 1 FROM l2t WHERE id = 1")
    q = "SELECT v FROM l2t WHERE id = 5"
    reset_stats(cpg)
    before = redis.keys()
    assert rows_of(ca, q) == [["v5"]]
    redis.filled(before)  # the fill is fire-and-forget
    assert rows_of(cb, q) == [["v5"]]
    assert calls(cpg, "SELECT v FROM l2t WHERE id =") == 1
    assert metric(a, "l2_errors") == 0 and metric(b, "l2_hits") >= 1
    keys = run(["redis-cli", "-p", str(redis.port), "-a", "s3cret", "-n", "3", "--no-auth-warning",
                "keys", "t:e1:*"]).stdout.split()
    assert keys, "the entry is in db 3 under the prefix"


def test_wrong_password_is_a_counted_miss(tusk, l2tables, redis):
    cpg = l2tables
    redis.start("--requirepass", "s3cret")
    a, _ = two_tusks(tusk, cpg, redis.port, password="wrong", workers=1)
    c = wire(a)
    wait_until(lambda: "AUTH or SELECT refused" in a.log_text(), 15, what="the refusal logged")
    reset_stats(cpg)
    for _ in range(3):
        assert rows_of(c, "SELECT v FROM l2t WHERE id = 6") == [["v6"]]
    assert calls(cpg, "SELECT v FROM l2t WHERE id =") == 3
    assert metric(a, "l2_errors") >= 1 and metric(a, "l2_hits") == 0


def test_read_after_write_across_clients_of_one_tusk(tusk, l2tables, redis):
    """Writer and readers on whatever workers the kernel picks: a read that starts after a
    write's reply never gets the row from before it. (The window this guards, a reader's
    lookup reaching Redis before the writer's INCR, was not hit here even with the pending-INCR
    check disabled: this is a regression test of the behaviour, not a proof of that check.)"""
    cpg = l2tables
    redis.start()
    a, _ = two_tusks(tusk, cpg, redis.port)
    writer, _ = first_read(a, "SELECT 1 FROM l2t WHERE id = 1")
    readers = [wire(a) for _ in range(4)]
    q = "SELECT v FROM l2t WHERE id = 7"
    for i in range(40):
        for r in readers:
            rows_of(r, q)  # warm: each read may fill or hit
        rows_of(writer, f"UPDATE l2t SET v = 'w{i}' WHERE id = 7")
        for r in readers:
            assert rows_of(r, q) == [[f"w{i}"]], i
    rows_of(writer, "UPDATE l2t SET v = 'v7' WHERE id = 7")
    assert metric(a, "l2_hits") > 0  # the reads between writes were served from Redis


def test_extended_reads_shared_through_l2(tusk, l2tables, redis):
    """An extended read filled through one tusk is served by the other from Redis, framed for
    the other's own sequence (ParseComplete only for the client that sent a Parse), byte for
    byte what PostgreSQL sends; a write through either invalidates it."""
    from test_cache_ext import SYNC, bind, describe, exchange, execute, parse
    cpg = l2tables
    redis.start()
    a, b = two_tusks(tusk, cpg, redis.port)
    ca, _ = first_read(a, "SELECT 1 FROM l2t WHERE id = 1")
    cb, _ = first_read(b, "SELECT 1 FROM l2t WHERE id = 1")
    sql = b"select id, v from l2t where id = $1"
    unnamed = parse(b"", sql, (23,)) + bind(b"", [b"4"]) + describe(b"S") + execute() + SYNC
    reset_stats(cpg)
    before = redis.keys()
    want = exchange(ca, unnamed)  # A: a miss, it runs and fills Redis
    assert [k for k, _ in want] == [b"1", b"2", b"t", b"T", b"D", b"C", b"Z"]
    redis.filled(before)  # the fill is fire-and-forget
    hits = metric(b, "l2_hits")
    assert exchange(cb, unnamed) == want
    assert exchange(cb, unnamed) == want
    assert calls(cpg, "from l2t where id = $1") == 1
    assert metric(b, "l2_hits") == hits + 2
    rows_of(ca, "UPDATE l2t SET v = 'x4' WHERE id = 4")
    got = exchange(cb, unnamed)
    assert [b for k, b in got if k == b"D"] != [b for k, b in want if k == b"D"]
    assert b"x4" in [b for k, b in got if k == b"D"][0]
    rows_of(ca, "UPDATE l2t SET v = 'v4' WHERE id = 4")


def test_commit_seen_only_after_redis_has_its_invalidation(tusk, l2tables, redis):
    """A client that saw its UPDATE commit through tusk A, then reads through tusk B, gets the
    new row even when A's Redis answers late: A holds the commit's ReadyForQuery until Redis
    has answered the write's INCRs. (With the hold disabled, B served the old row from Redis.)"""
    cpg = l2tables
    redis.start()
    link = Relay(redis.port)  # its delay: a Redis that answers one tusk late
    try:
        ts = []
        for port in (link.port, redis.port):
            http = f"127.0.0.1:{free_port()}"
            t = tusk(pg_server=cpg, pools=[cache_pool("on")], cache_ttl="60s", workers=1, admin={"http": http},
                     redis={"host": "127.0.0.1", "port": port, "timeout": "5s", "prefix": "t:"})
            t.http = http
            wait_connected(t, workers=1)
            ts.append(t)
        a, b = ts
        ca, cb = wire(a), wire(b)
        q = "SELECT v FROM l2t WHERE id = 11"
        for i in range(3):
            assert rows_of(cb, q) == [["v11"]]  # B fills Redis, then hits
            time.sleep(0.1)  # the fill is fire-and-forget
        hits = metric(b, "l2_hits")
        assert rows_of(cb, q) == [["v11"]] and metric(b, "l2_hits") > hits
        waits = metric(a, "l2_commit_waits")
        link.delay = 0.4
        for i in range(3):
            t0 = time.monotonic()
            rows_of(ca, f"UPDATE l2t SET v = 'late{i}' WHERE id = 11")
            took = time.monotonic() - t0
            assert rows_of(cb, q) == [[f"late{i}"]], i
            assert took >= 0.4, f"the commit came back in {took:.3f}s, before Redis could answer"
            assert rows_of(cb, q) == [[f"late{i}"]], i
        assert metric(a, "l2_commit_waits") >= waits + 3
        link.delay = 0.0
        rows_of(ca, "UPDATE l2t SET v = 'v11' WHERE id = 11")
        assert rows_of(cb, q) == [["v11"]]
        assert metric(a, "l2_errors") == 0
    finally:
        link.close()


def test_commit_goes_on_when_redis_never_answers(tusk, l2tables, redis):
    """A Redis that stops answering holds a commit no longer than redis.timeout; the write is
    done and later reads (Redis lost to them too) are right."""
    cpg = l2tables
    redis.start()
    a, _ = two_tusks(tusk, cpg, redis.port, timeout="300ms", workers=1)
    wait_connected(a, workers=1)
    ca = wire(a)
    q = "SELECT v FROM l2t WHERE id = 12"
    assert rows_of(ca, q) == [["v12"]]
    errors = metric(a, "l2_errors")
    redis.proc.send_signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        rows_of(ca, "UPDATE l2t SET v = 'stopped' WHERE id = 12")
        took = time.monotonic() - t0
        assert took < 3, f"the commit waited {took:.3f}s on a Redis that does not answer"
        assert rows_of(ca, q) == [["stopped"]]
        assert metric(a, "l2_errors") > errors
        a.wait_log("invalidation was not answered in time")
    finally:
        redis.proc.send_signal(signal.SIGCONT)
    rows_of(ca, "UPDATE l2t SET v = 'v12' WHERE id = 12")
    assert rows_of(ca, q) == [["v12"]]
