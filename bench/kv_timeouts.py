"""bench/kv_timeouts.py [PORT] [N]: what a session's statement_timeout costs a kv call
(docs/kv.md, "statement_timeout and lock_timeout"): one psycopg client in autocommit on a
running `make run-kv` (zone a's tusk, 6440, by default), N puts and N gets (1000) of one
session without timeouts and of one with `SET statement_timeout = '5s'` (each call then carries
a set_config in its pipeline), alternated over 5 rounds. Prints calls per second per round, the
medians and the ratio with/without; asserts nothing."""
import statistics
import sys
import time

import psycopg

port = int(sys.argv[1]) if len(sys.argv) > 1 else 6440
n = int(sys.argv[2]) if len(sys.argv) > 2 else 1000


def run(conn, sql):
    t0 = time.perf_counter()
    for i in range(n):
        conn.execute(sql, (f"bench-timeouts-{i % 100}",))
    return n / (time.perf_counter() - t0)


plain = psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="kv", autocommit=True)
timed = psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="kv", autocommit=True)
timed.execute("SET statement_timeout = '5s'")
kinds = {"put": "select kv.put('default', %s, '1')", "get": "select kv.get('default', %s)"}
rates = {(k, t): [] for k in kinds for t in ("none", "5s")}
for rnd in range(5):
    for kind, sql in kinds.items():
        for label, conn in (("none", plain), ("5s", timed)) if rnd % 2 == 0 else (("5s", timed), ("none", plain)):
            rates[(kind, label)].append(run(conn, sql))
    print(f"round {rnd + 1}: " + ", ".join(f"{k}/{t} {rates[(k, t)][-1]:.0f}/s" for k, t in rates), flush=True)
for kind in kinds:
    a, b = statistics.median(rates[(kind, "none")]), statistics.median(rates[(kind, "5s")])
    print(f"{kind}: median {a:.0f}/s without, {b:.0f}/s with statement_timeout; ratio with/without {b / a:.2f}")
