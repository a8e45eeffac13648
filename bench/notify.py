#!/usr/bin/env python3
"""bench/notify.py: LISTEN/NOTIFY through transaction pooling (issue 24, docs/pooling.md
"LISTEN/NOTIFY"), two numbers on a throwaway PostgreSQL 15 (max_connections 700):

1. server connections held by IDLE (default 500) idle listening clients (node-postgres, 20
   channels), through tusk (transaction pooling, pool size 10: expect 1 listener + 0..10) and
   through PgBouncer (/usr/sbin/pgbouncer, session pooling, pool size IDLE + 20: the only mode
   in which LISTEN works there, since in transaction pooling the LISTEN stays on a server that
   goes back to the pool, and its notifications reach whoever runs there next; so expect IDLE):
   backends of the database in pg_stat_activity once every client listens;
2. latency from NOTIFY to the client, through tusk and direct: 200 node-postgres clients
   listening on 20 channels (10 each), one sender connected directly to PostgreSQL running
   `SELECT pg_notify(channel, <its wall clock in ms>)` at RATE (default 1000) per second
   round-robin over the channels (so 10 x RATE deliveries/s) for SECONDS (default 10); each
   client records arrival time minus the payload (the sender's clock just before the NOTIFY,
   so the commit round trip is included). Runs alternate tusk, direct, tusk, direct (RUNS pairs,
   default 2) and the median of each side's p50 and p99 is printed.

    TUSK_BIN=build/tusk /usr/bin/python3 bench/notify.py [--idle 500] [--rate 1000] [--seconds 10] [--runs 2]

Needs node and tests/drivers/node's node_modules (tests/drivers/node/install.sh). Prints
numbers; asserts nothing. Stops everything it started.
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from conftest import IS_ROOT, TEST_DB, Tusk, _make_pg, as_postgres, free_port, port_open  # noqa: E402

PGBOUNCER = "/usr/sbin/pgbouncer"
CHANNELS = 20
CLIENTS_JS = REPO / "bench" / "notify_clients.js"


class Clients:
    """bench/notify_clients.js against port: n clients listening, until close()."""

    def __init__(self, port, n):
        env = {"PATH": "/usr/bin:/bin", "PGHOST": "127.0.0.1", "PGPORT": str(port), "PGUSER": "tusk_trust",
               "PGDATABASE": TEST_DB, "CLIENTS": str(n), "CHANNELS": str(CHANNELS)}
        self.p = subprocess.Popen(["node", str(CLIENTS_JS)], env=env, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        if not json.loads(line or "{}").get("ready"):
            self.p.kill()
            raise RuntimeError(f"clients did not get ready: {line!r}")

    def close(self):
        self.p.stdin.close()
        out = self.p.stdout.readline()
        self.p.wait(60)
        return json.loads(out)


def backends(pg):
    """Client backends of the test database other than this script's own connection."""
    return pg.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend' "
                      "AND pid <> pg_backend_pid()", (TEST_DB,), dbname=TEST_DB)[0][0]


def settle(pg, seconds=2.0):
    """The backend count once it has not changed for a second (or after `seconds`)."""
    last, t_end = None, time.monotonic() + seconds
    while time.monotonic() < t_end:
        n = backends(pg)
        if n == last:
            return n
        last = n
        time.sleep(1.0)
    return last


def tusk_listeners(t):
    with psycopg.connect(host="127.0.0.1", port=t.port, user="postgres", dbname="tusk", autocommit=True) as c:
        return len(c.execute("SHOW LISTENERS").fetchall())


def start_pgbouncer(d, pg_port, pool_size, max_clients):
    port = free_port()
    (d / "userlist.txt").write_text('"tusk_trust" ""\n')
    ini = d / "pgbouncer.ini"
    ini.write_text(f"""[databases]
{TEST_DB} = host=127.0.0.1 port={pg_port} dbname={TEST_DB}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {d}/userlist.txt
pool_mode = session
default_pool_size = {pool_size}
max_client_conn = {max_clients}
max_db_connections = 0
logfile = {d}/pgbouncer.log
pidfile = {d}/pgbouncer.pid
""")
    if IS_ROOT:
        shutil.chown(d, "postgres", "postgres")
        for f in ("userlist.txt", "pgbouncer.ini"):
            shutil.chown(d / f, "postgres", "postgres")
    subprocess.run(as_postgres(["bash", "-c", f"ulimit -n 4096 2>/dev/null; exec {PGBOUNCER} -d {ini}"]),
                   check=True, timeout=30)
    t_end = time.monotonic() + 10
    while not port_open(port) and time.monotonic() < t_end:
        time.sleep(0.05)
    return port, d / "pgbouncer.pid"


def idle_servers(pg, port, n):
    """Backends the n clients added (the count before them is subtracted: the previous
    pooler's idle servers)."""
    before = settle(pg)
    c = Clients(port, n)
    try:
        return settle(pg) - before
    finally:
        c.close()


def latency_run(pg_port, port, clients, rate, seconds):
    c = Clients(port, clients)
    sent = [0]

    def sender():
        with psycopg.connect(host="127.0.0.1", port=pg_port, user="tusk_trust", dbname=TEST_DB,
                             autocommit=True) as s:
            t0 = time.monotonic()
            i = 0
            while True:
                due = t0 + i / rate
                now = time.monotonic()
                if now - t0 >= seconds:
                    break
                if due > now:
                    time.sleep(due - now)
                s.execute("SELECT pg_notify(%s, %s)", (f"ch{i % CHANNELS}", f"{time.time() * 1000:.3f}"))
                i += 1
            sent[0] = i

    th = threading.Thread(target=sender)
    th.start()
    th.join()
    time.sleep(1.0)
    res = c.close()
    res["sent"] = sent[0]
    res["achieved_rate"] = round(sent[0] / seconds)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=int, default=500)
    ap.add_argument("--latency-clients", type=int, default=200)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="tusk-bench-notify-"))
    if IS_ROOT:
        shutil.chown(base, "postgres", "postgres")
    pg = _make_pg(base / "pg")
    tusk = pgb_pid = None
    try:
        with open(pg.data / "postgresql.conf", "a") as f:
            f.write("max_connections = 700\n")
        pg.stop()
        pg.start()
        tusk = Tusk(base / "tusk", pg.port, workers=2, log_level="warn",
                    admin={"users": ["postgres"], "client_auth": "trust"},
                    pools=[{"database": "*", "user": "*", "service": "main", "mode": "transaction", "size": 10}])
        tusk.start()
        pgb_dir = base / "pgbouncer"
        pgb_dir.mkdir()
        pgb_port, pgb_pid = start_pgbouncer(pgb_dir, pg.port, args.idle + 20, args.idle + 100)

        print(f"1. server connections held by {args.idle} idle listening clients ({CHANNELS} channels)")
        n = idle_servers(pg, tusk.port, args.idle)
        lst = tusk_listeners(tusk)
        print(f"   tusk (transaction, pool size 10): {n} ({lst} listener connection; the rest the pool's servers)")
        print(f"   PgBouncer {PGBOUNCER} (session): {idle_servers(pg, pgb_port, args.idle)}")
        subprocess.run(["kill", pgb_pid.read_text().strip()], check=False)  # its idle servers go too
        pgb_pid = None
        time.sleep(2)

        print(f"2. NOTIFY-to-client latency, {args.latency_clients} clients on {CHANNELS} channels, "
              f"{args.rate} notifications/s for {args.seconds:g} s per run")
        runs = {"tusk": [], "direct": []}
        for r in range(args.runs):
            for name, port in (("tusk", tusk.port), ("direct", pg.port)):
                res = latency_run(pg.port, port, args.latency_clients, args.rate, args.seconds)
                runs[name].append(res)
                print(f"   run {r + 1} {name:6}: sent {res['sent']} ({res['achieved_rate']}/s), received {res['n']}, "
                      f"p50 {res['p50_ms']:.2f} ms, p99 {res['p99_ms']:.2f} ms, max {res['max_ms']:.1f} ms, "
                      f"errors {res['errors']}")
        for name, rs in runs.items():
            print(f"   median {name:6}: p50 {statistics.median(x['p50_ms'] for x in rs):.2f} ms, "
                  f"p99 {statistics.median(x['p99_ms'] for x in rs):.2f} ms")
    finally:
        if pgb_pid and pgb_pid.exists():
            subprocess.run(["kill", pgb_pid.read_text().strip()], check=False)
        if tusk:
            tusk.stop()
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
