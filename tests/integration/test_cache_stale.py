"""Concurrent writers and readers through the result cache (docs/cache.md, issue 21): a read
sent after a write was acknowledged never returns a row older than that write, over at least
100,000 reads, through one tusk (L1) and across two tusks sharing one Redis (L2: writes through
A, reads through B and A).

Each row carries a version that only goes up (`UPDATE ... SET ver = ver + 1 ... RETURNING ver`,
autocommit). Writers record, per row, each version and the moment its ReadyForQuery arrived
(after it: the acknowledgement is no later than that). Readers record the moment just before
each read was written to the socket (the read reached tusk no earlier) and the version it got.
A read is stale when some write of that row acknowledged before the read was sent has a higher
version than the read returned. Times are CLOCK_MONOTONIC, one clock for every thread. Through
one tusk a read is also never older than what any reader had received before it was sent (a
result is what PostgreSQL held at some moment during its request); across two tusks that is
only printed (docs/cache.md, limits of L2, leaves a window of about one Redis round trip).

Reads are one Query at a time per connection (a pipelined Query is never cached), from several
threads; rows are spread over several tables so that a write invalidates only a part of what is
kept and most reads are served by the cache (asserted from SHOW CACHE, so the test cannot pass
by never caching). Two read shapes per row: a point read, and one that takes a few milliseconds
on the server (a longer flight for other reads to join, the window of issue 21 item 4)."""

import bisect
import os
import random
import struct
import threading
import time

import pytest

from conftest import SLOW, TEST_DB, Tusk
from test_cache import cpg, wire  # noqa: F401 (cpg: fixture)
from test_cache_differential import REDIS, Redis, pool

TABLES = 8
ROWS = 2
READS = 100_000
READERS = 6
WRITERS = 2
WRITE_PAUSE = 0.004  # seconds between a writer's writes: each table written every ~40 ms
SLOW_SHARE = 0.2  # reads of the slower shape
READY = b"Z\x00\x00\x00\x05I"


def query(sql):
    b = sql.encode() + b"\0"
    return b"Q" + struct.pack("!I", len(b) + 4) + b


def keys():
    return [(t, r) for t in range(TABLES) for r in range(1, ROWS + 1)]


def point_read(t, r):
    return query(f"SELECT ver FROM st_{t} WHERE id = {r}")


def slow_read(t, r):
    return query(f"SELECT ver, (SELECT count(*) FROM items a, items b WHERE a.id <= 20 AND (a.id + b.id) % 7 = {r}) AS n FROM st_{t} WHERE id = {r}")


def exchange(sock, msg):
    """Send one Query, read its reply up to ReadyForQuery 'I'. -> the reply bytes."""
    sock.sendall(msg)
    buf = b""
    while not buf.endswith(READY):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("tusk closed the connection")
        buf += chunk
    return buf


def first_value(reply):
    """The first column of the first DataRow of a reply, as int; raises on an error reply."""
    off = 0
    while off < len(reply):
        kind = reply[off:off + 1]
        (ln,) = struct.unpack_from("!I", reply, off + 1)
        if kind == b"E":
            raise AssertionError(f"error reply: {reply[off + 5:off + 1 + ln]!r}")
        if kind == b"D":
            (n,) = struct.unpack_from("!i", reply, off + 7)
            return int(reply[off + 11:off + 11 + n])
        off += 1 + ln
    raise AssertionError(f"no DataRow in {reply!r}")


def older_than(known, reads):
    """known: key -> [(at, version)] (a version known to be committed at that moment); reads:
    [(key, sent, version, latency)]. -> the reads that returned less than some version known
    strictly before they were sent, as (key, sent, got, known)."""
    floor = {}
    for k, lst in known.items():
        lst.sort()
        best, m = [], 0
        for _, ver in lst:
            m = max(m, ver)
            best.append(m)
        floor[k] = ([at for at, _ in lst], best)
    out = []
    for k, sent, ver, _ in reads:
        times, best = floor[k]
        i = bisect.bisect_left(times, sent)
        if i and best[i - 1] > ver:
            out.append((k, sent, ver, best[i - 1]))
    return out


def cache_counters(t):
    from test_console import psql_rows
    _, rows = psql_rows(t, "SHOW CACHE")
    return {(r["name"], r["reason"]): int(r["value"]) for r in rows}


def run_load(cpg, write_tusk, read_tusks, reads=READS, limit=150.0):
    """Writers through write_tusk, readers spread over read_tusks, until `reads` reads are done.
    -> (number of reads, stale reads as (key, sent, got, acknowledged before), writes)."""
    cpg.execute("; ".join(f"drop table if exists st_{t}; create table st_{t} (id int primary key, ver bigint not null); "
                          f"insert into st_{t} select g, 0 from generate_series(1, {ROWS}) g; grant all on st_{t} to public"
                          for t in range(TABLES)), dbname=TEST_DB)
    ks = keys()
    acks = {k: [] for k in ks}  # key -> [(acknowledged at, version)], in the writer's order
    done = threading.Event()
    count = [0]
    lock = threading.Lock()
    results = []
    errors = []

    def writer(mine):
        try:
            c = wire(write_tusk)
            try:
                i = 0
                while not done.is_set():
                    k = mine[i % len(mine)]
                    i += 1
                    reply = exchange(c.sock, query(f"UPDATE st_{k[0]} SET ver = ver + 1 WHERE id = {k[1]} RETURNING ver"))
                    at = time.monotonic()
                    acks[k].append((at, first_value(reply)))
                    time.sleep(WRITE_PAUSE)
            finally:
                c.close()
        except Exception as e:  # noqa: BLE001 (reported by the test)
            errors.append(("writer", repr(e)))
            done.set()

    def reader(t, seed):
        rnd = random.Random(seed)
        msgs = [(k, point_read(*k), slow_read(*k)) for k in ks]
        got = []
        try:
            c = wire(t)
            try:
                n = 0
                while not done.is_set():
                    k, fast, slow = msgs[rnd.randrange(len(msgs))]
                    msg = slow if rnd.random() < SLOW_SHARE else fast
                    sent = time.monotonic()
                    ver = first_value(exchange(c.sock, msg))
                    got.append((k, sent, ver, time.monotonic() - sent))
                    n += 1
                    if n == 200:
                        with lock:
                            count[0] += n
                            if count[0] >= reads:
                                done.set()
                        n = 0
            finally:
                c.close()
        except Exception as e:  # noqa: BLE001
            errors.append(("reader", repr(e)))
            done.set()
        with lock:
            results.append(got)

    threads = [threading.Thread(target=writer, args=(ks[w::WRITERS],)) for w in range(WRITERS)]
    threads += [threading.Thread(target=reader, args=(read_tusks[i % len(read_tusks)], i)) for i in range(READERS)]
    started = time.monotonic()
    for th in threads:
        th.start()
    done.wait(limit * SLOW)
    done.set()
    for th in threads:
        th.join(60)
    elapsed = time.monotonic() - started
    assert not errors, errors[:5]

    reads = [r for got in results for r in got]
    # Stale: older than a write acknowledged before the read was sent.
    stale = older_than(acks, reads)
    # Older than what another reader had already received when this one was sent (docs/cache.md:
    # a result is what PostgreSQL held at some moment during its request, so never that).
    seen = {k: [] for k in ks}
    for k, sent, ver, lat in reads:
        seen[k].append((sent + lat, ver))
    behind = older_than(seen, reads)
    total = len(reads)
    writes = sum(len(v) for v in acks.values())
    lat = sorted(x[3] for x in reads)
    print(f"{total} reads, {writes} writes in {elapsed:.1f}s, {len(stale)} stale, {len(behind)} behind "
          "another reader; read latency "
          + " ".join(f"p{q}={lat[min(len(lat) - 1, len(lat) * q // 100)] * 1000:.2f}ms" for q in (50, 90, 99)))
    return total, stale, behind, writes


def admin_tusk(tmp_path_factory, cpg, **kw):
    from auth_util import write_auth_file
    from test_console import ADMIN, ADMIN_PW
    auth = write_auth_file(tmp_path_factory.mktemp("stale-auth") / "userlist.txt", {ADMIN: ADMIN_PW})
    t = Tusk(tmp_path_factory.mktemp("tusk-stale"), cpg.port, workers=2, pools=[pool("on")[0] | {"size": 10}],
             cache_ttl="60s", auth_file=auth, admin={"users": [ADMIN]}, **kw)
    return t.start()


def served(before, after, names):
    return sum(after.get((n, ""), 0) - before.get((n, ""), 0) for n in names)


def test_no_stale_read_after_acknowledged_write_one_tusk(cpg, tmp_path_factory):
    """L1: writers and readers through one tusk; every read sent after a write was acknowledged
    returns that write's version or a later one."""
    t = admin_tusk(tmp_path_factory, cpg)
    try:
        before = cache_counters(t)
        total, stale, behind, writes = run_load(cpg, t, [t])
        after = cache_counters(t)
        hits = served(before, after, ("hits", "join_served"))
        print(f"L1: served from the cache {hits} of {total}")
        assert total >= READS
        assert writes >= 1000, writes
        assert not stale, (len(stale), stale[:10])
        assert not behind, (len(behind), behind[:10])
        assert hits >= total * 0.3, (hits, total, after)
    finally:
        problems = t.stop()
    assert not problems, problems


@pytest.mark.skipif(not os.path.exists(REDIS), reason="redis-server is not installed")
def test_no_stale_read_after_acknowledged_write_across_two_tusks(cpg, tmp_path_factory):
    """L2: two tusks sharing one Redis; writes through A, reads through B (and some through A).
    A read through B sent after A acknowledged a write never returns an older version, neither
    from Redis nor by joining a flight that began before the write (issue 21 item 4)."""
    redis = Redis()
    started = []
    try:
        r = {"host": "127.0.0.1", "port": redis.port, "prefix": "stale:"}
        a = admin_tusk(tmp_path_factory, cpg, redis=r)
        started.append(a)
        b = admin_tusk(tmp_path_factory, cpg, redis=r)
        started.append(b)
        before = {x: cache_counters(x) for x in (a, b)}
        # Two thirds of the readers on B, which learns of A's writes only through Redis.
        # (Reads behind another reader are only printed here: docs/cache.md, limits of L2, leaves
        # a window of about one Redis round trip for a reader that learns of a commit that way.)
        total, stale, _, writes = run_load(cpg, a, [b, b, a])
        after = {x: cache_counters(x) for x in (a, b)}
        hits_b = served(before[b], after[b], ("l2_hits", "join_served"))
        hits = hits_b + served(before[a], after[a], ("l2_hits", "join_served"))
        print(f"L2: served from the cache {hits} of {total} ({hits_b} through B)")
        assert total >= READS
        assert writes >= 1000, writes
        assert not stale, (len(stale), stale[:10])
        assert hits >= total * 0.3, (hits, total, after)
        assert hits_b >= total * 0.15, (hits_b, total, after[b])
    finally:
        problems = []
        for t in started:
            problems += t.stop()
        redis.stop()
    assert not problems, problems
