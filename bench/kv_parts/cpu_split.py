#!/usr/bin/python3
"""CPU time per call of each part of a two-zone kv set-up, on a running `make run-kv` (docs/kv.md,
"Speed", nineteenth step; issue 25): kv puts through zone a's kv database, RESP SETs through its
Redis listener and plain upserts through its plain pool, each on NCONN connections driven by a
process of their own for SECONDS, and for each the CPU time a call of the clients, zone a's tusk,
zone b's tusk (replication), zone a's PostgreSQL and zone b's (from /proc: live processes only,
so a backend that exits meanwhile is not counted), each PostgreSQL's also split into what its
kv_replicator backends spent (repl: on zone a serving zone b's pulls, on zone b applying them;
the rest is the writers' own backends and the server's processes). With PAUSED=1 each kind runs
a second time with zone b's tusk stopped (SIGSTOP: no replication; docs/kv.md, "Speed",
twentieth step). Prints ROUNDS rounds.
  [PAUSED=1] bench/kv_parts/cpu_split.py RUN_LOG [SECONDS [NCONN [ROUNDS]]]
RUN_LOG: what make run-kv printed (its ports are read there), e.g. make run-kv > /tmp/run-kv.log 2>&1 &
RUN_KV_DIR: the demo's data directory (default .run-kv)."""

import multiprocessing
import os
import re
import signal
import sys
import time
from pathlib import Path

import psycopg
import redis
from psycopg.types.json import Jsonb

RUN = Path(os.environ.get("RUN_KV_DIR", Path(__file__).resolve().parents[2] / ".run-kv"))
TICK = os.sysconf("SC_CLK_TCK")


def processes():
    """{pid: (ppid, CPU seconds, argv)} of every live process, from one walk of /proc."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                f = (d / "stat").read_text().rsplit(")", 1)[1].split()
                out[int(d.name)] = (int(f[1]), (int(f[11]) + int(f[12])) / TICK, (d / "cmdline").read_bytes().split(b"\0"))
            except (OSError, IndexError, ValueError):
                pass
    return out


def postgres(zone, procs):
    pm = int((RUN / f"pg-{zone}" / "postmaster.pid").read_text().split()[0])
    return [pid for pid, (ppid, _, _) in procs.items() if pid == pm or ppid == pm]


def replication(zone, procs):
    """zone's backends of the role replication logs in as (ps shows "postgres: USER DB ...")."""
    return [pid for pid in postgres(zone, procs) if procs[pid][2][0].startswith(b"postgres: kv_replicator ")]


def tusk(zone, procs):
    cfg = str(RUN / f"tusk-{zone}.yaml").encode()
    return [pid for pid, (_, _, argv) in procs.items() if cfg in argv]


PARTS = {"tusk a": lambda p: tusk("a", p), "tusk b": lambda p: tusk("b", p),
         "pg a": lambda p: postgres("a", p), "pg a repl": lambda p: replication("a", p),
         "pg b": lambda p: postgres("b", p), "pg b repl": lambda p: replication("b", p)}


def snapshot():
    procs = processes()
    return {name: sum(procs[pid][1] for pid in pids(procs)) for name, pids in PARTS.items()}


def loop(kind, ports, seconds, nconn, j, q):
    val = Jsonb({"n": 1})
    if kind == "RESP SET":
        r = redis.Redis(port=ports["redis"])
        call = lambda i: r.execute_command("SET", f"k{i % 1000}", '{"n": 1}')  # noqa: E731
    else:
        db = "kv" if kind == "kv put" else "postgres"
        c = psycopg.connect(f"host=127.0.0.1 port={ports['psql']} user=postgres dbname={db}", autocommit=True)
        stmt = ("select kv.put('default', %s, %s)" if kind == "kv put" else
                "insert into plain (k, v) values (%s, %s) on conflict (k) do update set v = excluded.v")
        call = lambda i: c.execute(stmt, (f"k{i % 1000}", val))  # noqa: E731
    n, i = 0, j
    t0 = time.process_time()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        call(i)
        n += 1
        i += nconn
    q.put((n, time.process_time() - t0))


def main():
    log = Path(sys.argv[1]).read_text()
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 3
    nconn = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    ports = {"psql": int(re.search(r"zone a: psql -h 127\.0\.0\.1 -p (\d+)", log).group(1)),
             "redis": int(re.search(r"zone a: redis-cli -h 127\.0\.0\.1 -p (\d+)", log).group(1))}
    with psycopg.connect(f"host=127.0.0.1 port={ports['psql']} user=postgres dbname=postgres", autocommit=True) as c:
        c.execute("create table if not exists plain (k text primary key, v jsonb)")
    ctx = multiprocessing.get_context("fork")
    tusk_b = tusk("b", processes())
    for _ in range(rounds):
        for paused in (False, True) if os.environ.get("PAUSED") == "1" else (False,):
            for kind in ("kv put", "RESP SET", "plain upsert"):
                q = ctx.Queue()
                procs = [ctx.Process(target=loop, args=(kind, ports, seconds, nconn, j, q)) for j in range(nconn)]
                if paused:
                    for pid in tusk_b:
                        os.kill(pid, signal.SIGSTOP)
                try:
                    before = snapshot()
                    for p in procs:
                        p.start()
                    res = [q.get(timeout=seconds + 60) for _ in procs]
                    for p in procs:
                        p.join()
                    after = snapshot()
                finally:
                    if paused:
                        for pid in tusk_b:
                            os.kill(pid, signal.SIGCONT)
                if paused:
                    time.sleep(2)  # zone b catches up before the next kind is measured
                n = sum(x[0] for x in res)
                print(f"{kind:12s}{' (b paused)' if paused else ''} {n / seconds:7.0f}/s  µs a call: clients "
                      f"{sum(x[1] for x in res) / n * 1e6:4.0f}  " +
                      "  ".join(f"{name} {(after[name] - before[name]) / n * 1e6:4.0f}" for name in PARTS),
                      flush=True)


if __name__ == "__main__":
    main()
