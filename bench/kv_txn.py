"""bench/kv_txn.py [PORT] [N]: what a transaction costs through tusk's kv database (docs/kv.md,
"Transactions in the kv database"), one psycopg client, on a running `make run-kv` (zone a's
tusk, 6440, by default): N puts (1500) in autocommit, in transactions of one put each
(psycopg's default mode with a commit() per put: BEGIN answered by tusk, the put, COMMIT), and
in transactions of ten, alternated over 5 rounds; every ten puts in a row are of one key (a
transaction holds the keys of one shard). Prints puts per second per round, the medians and
their ratios to autocommit; asserts nothing."""
import statistics
import sys
import time

import psycopg

port = int(sys.argv[1]) if len(sys.argv) > 1 else 6440
n = int(sys.argv[2]) if len(sys.argv) > 2 else 1500


def connect(autocommit):
    return psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="kv", autocommit=autocommit)


def run(per):
    """puts/s: per 0 autocommit, else a commit() after every per puts."""
    with connect(per == 0) as c:
        start = time.perf_counter()
        for i in range(n):
            c.execute("select kv.put('default', %s, '1')", (f"bench-txn-{(i // 10) % 50}",))
            if per and (i + 1) % per == 0:
                c.commit()
        if per:
            c.commit()
        return n / (time.perf_counter() - start)


kinds = {"autocommit": 0, "transactions of 1": 1, "transactions of 10": 10}
rates = {k: [] for k in kinds}
for rnd in range(5):
    for k, per in kinds.items():
        rates[k].append(run(per))
    print(f"round {rnd + 1}: " + ", ".join(f"{k} {rates[k][-1]:.0f}/s" for k in kinds))
base = statistics.median(rates["autocommit"])
for k in kinds:
    m = statistics.median(rates[k])
    print(f"{k}: median {m:.0f} puts/s ({m / base:.2f}x autocommit)")
