"""bench/kv_multi.py [PORT] [N]: what a Redis transaction costs on the kv's Redis listener
(docs/kv.md, "Transactions"), one client, on a running `make run-kv` (zone a's listener,
6390, by default): the rate-limit pair INCR k + EXPIRE k 60 as two plain commands, as
pipeline() (MULTI ... EXEC: one shard transaction) and as pipeline(transaction=False), N
pairs each (1500), alternated over 3 rounds. Prints pairs per second per round and the
medians; asserts nothing."""
import statistics
import sys
import time

import redis

port = int(sys.argv[1]) if len(sys.argv) > 1 else 6390
n = int(sys.argv[2]) if len(sys.argv) > 2 else 1500
r = redis.Redis(host="127.0.0.1", port=port)
r.ping()


def plain(i):
    r.incr(f"rl{i % 50}")
    r.expire(f"rl{i % 50}", 60)


def multi(i):
    r.pipeline().incr(f"rl{i % 50}").expire(f"rl{i % 50}", 60).execute()


def batched(i):
    r.pipeline(transaction=False).incr(f"rl{i % 50}").expire(f"rl{i % 50}", 60).execute()


runs = {"plain": [], "multi": [], "pipeline": []}
for _ in range(3):
    for name, f in (("plain", plain), ("multi", multi), ("pipeline", batched)):
        t = time.perf_counter()
        for i in range(n):
            f(i)
        runs[name].append(n / (time.perf_counter() - t))
for name, v in runs.items():
    print(f"{name:9} pairs/s {[round(x) for x in v]} median {round(statistics.median(v))}")
