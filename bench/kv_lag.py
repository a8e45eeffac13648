#!/usr/bin/env python3
"""kv numbers on this machine (three zones, each a PostgreSQL 15 with its tusk):

1. puts and gets per second calling kv.put / kv.get on a shard database directly and through
   tusk's virtual kv database, in the same run: one connection sequential, and 8 connections;
2. replication lag at RATE writes/s per zone (default 5000) from all three zones at once:
   each zone writes a batch of RATE/10 puts every 100 ms (one statement), and the last key of
   each batch is polled in the two other zones until it shows the batch; p50 / p99 / max;
3. catch-up after a partition of PARTITION seconds (default 60): zone 3's tusk is stopped (it
   pulls nothing) while zones 1 and 2 go on writing about 1000 new keys/s each; then it is
   started again and the time until zone 3 holds the last write of both is measured.

    TUSK_BIN=build/tusk python3 bench/kv_lag.py [SECONDS] [RATE] [PARTITION]

Prints numbers only; asserts nothing. Stops everything it started.
"""

import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from kv_util import Parade  # noqa: E402


def rate(fn, seconds):
    n, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < seconds:
        fn(n)
        n += 1
    return n / (time.monotonic() - t0)


def parallel_rate(connect, stmt, keys, seconds, nconn=8, args_of=None):
    """Calls per second of stmt on nconn connections, each call's parameters args_of(i) (by
    default the key keys[i % len(keys)]). Each connection is driven by its own forked process:
    threads of one Python process share its GIL, and their wake-ups queue behind it as the
    server answers faster, so the pooler that answered sooner looked slower (8 threads of
    psycopg with its named statements: tusk 4.3k/s against PgBouncer 1.25's 10.2k/s, where 8
    processes read 14.3-15.5k against 13.7-14.8k, and pgbench -M prepared 30-33k against
    27-28k). At one connection it is the same loop in the caller's process."""
    args_of = args_of or (lambda i: (keys[i % len(keys)],))

    def loop(j):
        n = 0
        with connect() as c:
            t_end = time.monotonic() + seconds
            i = j
            while time.monotonic() < t_end:
                c.execute(stmt, args_of(i))
                n += 1
                i += nconn
        return n

    t0 = time.monotonic()
    if nconn == 1:
        return loop(0) / (time.monotonic() - t0)
    # fork: the children run the closures as they are (nothing pickled), and leave with
    # os._exit, so the parent's own connections, inherited, are never closed by them.
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()

    def child(j):
        try:
            q.put(loop(j))
        except Exception as e:  # noqa: BLE001 (told to the parent, which raises it)
            q.put(f"{type(e).__name__}: {e}")

    procs = [ctx.Process(target=child, args=(j,)) for j in range(nconn)]
    for p in procs:
        p.start()
    return sum(gather(procs, q, seconds + 120, "rate")) / (time.monotonic() - t0)


def gather(procs, q, timeout, what):
    """The count each of procs put on q (an int, or the text of its exception), once all have
    ended; raises if any failed."""
    counts = [q.get(timeout=timeout) for _ in procs]
    for p in procs:
        p.join()
    failed = [c for c in counts if not isinstance(c, int)]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(procs)} {what} processes failed: {failed[0]}")
    return counts


def pct(xs, f):
    return xs[min(len(xs) - 1, int(f * len(xs)))] * 1000


def throughput(p, seconds):
    z1 = p.zones[0]
    keys = [r[0] for r in z1.sql(0, "select k from (select 'b' || g as k from generate_series(1, 20000) g) s "
                                    "where kv.shard_of('default', k, 2) = 0 limit 4000")]
    direct = lambda: z1.db(0)  # noqa: E731
    routed = lambda: psycopg.connect(host="127.0.0.1", port=z1.tusk.port, user="postgres",  # noqa: E731
                                     dbname="kv", autocommit=True)
    put = "select kv.put('default', %s, '{\"n\": 1}')"
    get = "select kv.get('default', %s)"
    for name, connect in (("direct on the shard", direct), ("through tusk (kv)  ", routed)):
        with connect() as c:
            puts = rate(lambda i: c.execute(put, (keys[i % len(keys)],)), seconds)
            gets = rate(lambda i: c.execute(get, (keys[i % len(keys)],)), seconds)
        pputs = parallel_rate(connect, put, keys, seconds)
        pgets = parallel_rate(connect, get, keys, seconds)
        print(f"{name}: 1 connection {puts:6.0f} puts/s {gets:6.0f} gets/s; "
              f"8 connections {pputs:6.0f} puts/s {pgets:6.0f} gets/s", flush=True)


def writer(zone, prefix, per_tick, stop, batches, tick=0.1, fresh=False):
    """Every tick, one statement of per_tick puts to shard 0 (the same keys each time, or with
    fresh, new keys each batch, about per_tick of them); records (batch, last key, time)."""
    if fresh:
        return fresh_writer(zone, prefix, per_tick, stop, batches, tick)
    with zone.db(0, user="postgres") as c:
        keys = [r[0] for r in c.execute(
            "select k from (select %s || g as k from generate_series(1, %s) g) s "
            "where kv.shard_of('default', k, 2) = 0 limit %s", (prefix, per_tick * 4, per_tick)).fetchall()]
        b = 0
        next_t = time.monotonic()
        while not stop.is_set():
            c.execute("select count(kv.put('default', k, jsonb_build_object('b', %s::int))) from unnest(%s::text[]) k",
                      (b, keys))
            batches.append((b, keys[-1], time.monotonic()))
            b += 1
            next_t += tick
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)


def fresh_writer(zone, prefix, per_tick, stop, batches, tick):
    with zone.db(0, user="postgres") as c:
        b = 0
        next_t = time.monotonic()
        while not stop.is_set():
            key = c.execute("select max(k) from (select k, kv.put('default', k, jsonb_build_object('b', %s::int)) "
                            "from (select %s || lpad(g::text, 9, '0') as k from generate_series(%s::int, %s::int) g) s "
                            "where kv.shard_of('default', k, 2) = 0) w",
                            (b, prefix, b * per_tick * 2, b * per_tick * 2 + per_tick * 2 - 1)).fetchone()[0]
            batches.append((b, key, time.monotonic()))
            b += 1
            next_t += tick
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)


def lag(p, seconds, per_second):
    per_tick = max(1, per_second // 10)
    stop = threading.Event()
    writes = {z.name: [] for z in p.zones}
    threads = [threading.Thread(target=writer, args=(z, f"{z.name}-", per_tick, stop, writes[z.name]))
               for z in p.zones]
    for t in threads:
        t.start()
    readers = {z.name: z.db(0, user="postgres") for z in p.zones}
    lags, checked = [], {z.name: 0 for z in p.zones}
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        # The newest batch of each zone not checked yet, polled in the other two zones.
        for src in p.zones:
            w = writes[src.name]
            if len(w) <= checked[src.name]:
                continue
            b, key, t0 = w[-1]
            checked[src.name] = len(w)
            for dst in p.zones:
                if dst is src:
                    continue
                while True:
                    v = readers[dst.name].execute("select value from kv.data where ns = 'default' and key = %s",
                                                  (key,)).fetchone()
                    if v and v[0]["b"] >= b:
                        lags.append(time.monotonic() - t0)
                        break
                    if time.monotonic() - t0 > 30:
                        lags.append(30.0)
                        break
                    time.sleep(0.002)
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join()
    done = sum(len(w) for w in writes.values())
    wrote = done * per_tick / seconds
    lags.sort()
    print(f"replication lag, 3 zones writing {per_second} puts/s each (achieved {wrote / 3:.0f}/s per zone): "
          f"{len(lags)} samples, p50 {pct(lags, 0.5):.0f} ms, p99 {pct(lags, 0.99):.0f} ms, max {lags[-1] * 1000:.0f} ms",
          flush=True)


def catch_up(p, partition):
    z1, z2, z3 = p.zones
    assert z3.stop_tusk() == []
    stop = threading.Event()
    writes = {z.name: [] for z in (z1, z2)}
    threads = [threading.Thread(target=writer, args=(z, f"part-{z.name}-", 100, stop, writes[z.name]),
                                kwargs={"fresh": True}) for z in (z1, z2)]
    for t in threads:
        t.start()
    time.sleep(partition)
    stop.set()
    for t in threads:
        t.join()
    last = [writes[z.name][-1] for z in (z1, z2)]
    backlog = sum(len(w) for w in writes.values()) * 100  # about: new keys, every one a row to pull
    t0 = time.monotonic()
    z3.start_tusk()
    with z3.db(0, user="postgres") as c:
        for b, key, _ in last:
            while True:
                v = c.execute("select value from kv.data where key = %s", (key,)).fetchone()
                if v and v[0]["b"] >= b:
                    break
                time.sleep(0.01)
    print(f"catch-up after a {partition:.0f} s partition ({backlog} puts in the two other zones): "
          f"{time.monotonic() - t0:.2f} s from restarting zone 3's tusk", flush=True)


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5
    per_second = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    partition = float(sys.argv[3]) if len(sys.argv) > 3 else 60
    base = Path(tempfile.mkdtemp(prefix="tusk-kv-bench-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")  # initdb runs as postgres
    p = Parade(base, ["z1", "z2", "z3"])
    try:
        p.setup()
        p.start()
        throughput(p, seconds)
        lag(p, seconds * 2, per_second)
        if partition > 0:
            catch_up(p, partition)
    finally:
        p.destroy()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
