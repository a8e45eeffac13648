#!/usr/bin/python3
"""The replication page query's JSON built as jsonb (as it was) and as json (as it is), on a
scratch table of ROWS rows shaped like kv.data's (40-byte values, a third with an expiry),
each prepared, ROUNDS rounds of 20 runs each alternated; prints the medians a page (docs/kv.md,
"Replication", the page's check).
Usage: page_json.py CONNINFO [ROWS [ROUNDS]]   e.g. page_json.py "host=/tmp port=5432 user=postgres"
Creates and drops the temporary table kv_page_bench in that database."""

import statistics
import sys
import time

import psycopg

TEMPLATE = ("WITH p AS (SELECT ns, key, value, ver_ts, origin, expires_at, chg_xid FROM kv_page_bench "
            "ORDER BY chg_xid, ns, key LIMIT {n}) SELECT (SELECT count(*) FROM p), (SELECT coalesce({agg}("
            "{build}('ns', ns, 'key', key, 'value', value, 'ver_ts', ver_ts, 'origin', origin, "
            "'expires_at', expires_at) ORDER BY chg_xid, ns, key), '[]')::text FROM p)")


def main():
    conninfo = sys.argv[1]
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    with psycopg.connect(conninfo, autocommit=True) as c:
        c.execute("CREATE TEMP TABLE kv_page_bench (ns text COLLATE \"C\", key text COLLATE \"C\", value jsonb, "
                  "ver_ts bigint, origin int, expires_at timestamptz, chg_xid xid8 DEFAULT pg_current_xact_id(), "
                  "PRIMARY KEY (ns, key))")
        c.execute("INSERT INTO kv_page_bench (ns, key, value, ver_ts, origin, expires_at) SELECT 'default', "
                  "'key:' || i, jsonb_build_object('n', i, 's', repeat('x', 40)), 1795813919246010 + i, 1, "
                  "CASE WHEN i %% 3 = 0 THEN now() + interval '1 hour' END FROM generate_series(1, %s) i", (rows,))
        c.execute("ANALYZE kv_page_bench")
        forms = {"jsonb": ("jsonb_agg", "jsonb_build_object"), "json": ("json_agg", "json_build_object")}
        for name, (agg, build) in forms.items():
            c.execute(f"PREPARE page_{name} AS " + TEMPLATE.format(n=rows, agg=agg, build=build))
        ms = {name: [] for name in forms}
        for _ in range(rounds):
            for name in forms:
                t = time.perf_counter()
                for _ in range(20):
                    c.execute(f"EXECUTE page_{name}").fetchone()
                ms[name].append((time.perf_counter() - t) / 20 * 1000)
        for name, v in ms.items():
            print(f"{name}: {statistics.median(v):.3f} ms a {rows}-row page (median of {rounds})")
        print(f"json / jsonb: {statistics.median(ms['json']) / statistics.median(ms['jsonb']):.2f}")


if __name__ == "__main__":
    main()
