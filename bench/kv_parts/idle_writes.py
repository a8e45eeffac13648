#!/usr/bin/python3
"""What an idle make run-kv writes: zone a's PostgreSQL instance's xids, commits and WAL bytes
a second over SECONDS, with nothing written by any client (docs/kv.md, "Replication", "Idle
links write little"). Read through zone a's plain pool; reading the next xid consumes none.

Usage: idle_writes.py RUN_LOG [SECONDS] [SETTLE]
RUN_LOG: what make run-kv printed (its ports are read there), e.g.
  RUN_KV_DIR=/tmp/runkv-x TUSK_BIN=build/tusk make run-kv > /tmp/run-kv.log 2>&1 &
SETTLE: seconds to wait first (default 10), for the links' first passes to end.
To compare two binaries, run make run-kv with each in turn (TUSK_BIN), alternated, and this
against each."""

import re
import sys
import time
from pathlib import Path

import psycopg

QUERY = ("select pg_snapshot_xmax(pg_current_snapshot())::text::bigint, "
         "(select sum(xact_commit) from pg_stat_database)::bigint, "
         "(pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint")


def main():
    log = Path(sys.argv[1]).read_text()
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 20.0
    settle = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
    port = int(re.search(r"zone a: psql -h 127\.0\.0\.1 -p (\d+)", log).group(1))
    time.sleep(settle)

    def sample():
        with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True) as c:
            return c.execute(QUERY).fetchone()

    a = sample()
    t0 = time.monotonic()
    time.sleep(seconds)
    b = sample()
    dt = time.monotonic() - t0
    # pg_stat_database's commits reach the view within a second (PostgreSQL 15): +-1 s of them.
    print(f"zone a, idle, {dt:.1f} s: xids {(b[0] - a[0]) / dt:.1f}/s, commits {(b[1] - a[1]) / dt:.1f}/s, "
          f"WAL {(b[2] - a[2]) / dt:.0f} B/s")


if __name__ == "__main__":
    main()
