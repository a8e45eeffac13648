#!/usr/bin/env python3
"""kv numbers on this machine: puts and gets per second calling the functions on a shard
database directly (one connection each, sequential), and the replication lag from a put in
one zone to its visibility in the others (three zones, each with its tusk).

    TUSK_BIN=build/tusk python3 bench/kv_lag.py [SECONDS]

Lag is measured by polling each other zone's kv.get every 5 ms after each put, one put at a
time, so it includes the links' idle back-off (up to 250 ms): the latency of a quiet store.
"""

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from kv_util import Parade  # noqa: E402


def rate(fn, seconds):
    n, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < seconds:
        fn(n)
        n += 1
    return n / (time.monotonic() - t0)


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5
    base = Path(tempfile.mkdtemp(prefix="tusk-kv-bench-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")  # initdb runs as postgres
    p = Parade(base, ["z1", "z2", "z3"])
    try:
        p.setup()
        p.start()
        z1, z2, z3 = p.zones
        c = z1.db(0)
        keys = [k for k in (f"b{i}" for i in range(4000)) if p.shard_of("default", k) == 0]
        puts = rate(lambda i: c.execute("select kv.put('default', %s, '{\"n\": 1}')", (keys[i % len(keys)],)), seconds)
        gets = rate(lambda i: c.execute("select kv.get('default', %s)", (keys[i % len(keys)],)), seconds)
        print(f"direct on the shard, one connection: {puts:.0f} puts/s, {gets:.0f} gets/s")
        readers = {z: z.db(0) for z in (z2, z3)}
        lags = []
        t_end = time.monotonic() + seconds * 3
        i = 0
        while time.monotonic() < t_end:
            k = keys[i % len(keys)]
            v = {"i": i}
            c.execute("select kv.put('default', %s, %s::jsonb)", (k, json.dumps(v)))
            t0 = time.monotonic()
            pending = set(readers)
            while pending:
                for z in list(pending):
                    if readers[z].execute("select kv.get('default', %s)", (k,)).fetchone()[0] == v:
                        pending.discard(z)
                        lags.append(time.monotonic() - t0)
                time.sleep(0.005)
            i += 1
        lags.sort()
        q = lambda f: lags[min(len(lags) - 1, int(f * len(lags)))] * 1000
        print(f"replication lag over {len(lags)} deliveries: p50 {q(0.5):.0f} ms, p99 {q(0.99):.0f} ms, "
              f"max {lags[-1] * 1000:.0f} ms")
    finally:
        p.destroy()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
