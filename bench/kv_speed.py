#!/usr/bin/env python3
"""kv speed against plain PostgreSQL, side by side in one run (two zones, each a PostgreSQL 15
with its tusk):

1. puts/s and gets/s through tusk's kv database (kv.put / kv.get, 1 and 8 connections), through
   its Redis listener (SET / GET from python3-redis, the same keys; and redis-benchmark's SET /
   GET when installed) and, on the same PostgreSQL through tusk's plain pool, a single-row
   INSERT ... ON CONFLICT DO UPDATE and a primary-key SELECT of a two-column table (the same
   connections, the same keys), with the ratios, alternated in one run; and the Redis
   listener's INCR (the converging counter) against a plain counter upsert (INSERT ... ON
   CONFLICT DO UPDATE SET n = n + 1 RETURNING n), and its GET of absent keys (a miss also
   looks for a counter) against a plain select that finds nothing, and its DEL (a tombstone, and
   the key's counter reset) against a plain delete, last (the next round's puts write the keys
   again); and the same plain statements through PgBouncer (the current release, 1.25, found or
   built as bench/lib.sh's bench_pgbouncer_find does; transaction pooling) on the same
   PostgreSQL, the issue's other baseline, when one is there;
2. counters: both tusks stopped (no replication: a partition), WRITERS (4) connections per zone
   each call kv.incr N (1000) times on the counter's shard, all acknowledged; then the tusks
   start again and the time until both zones read exactly 2 x WRITERS x N is measured;
   at each count of connections, the puts twice more, away from zone b's replication of zone
   a's puts (on this one machine it takes the same cores): each zone on a core of its own, then
   zone b's tusk paused;
3. replication lag at the highest rate zone a sustains: 8 connections (each driven by a
   process) put through zone a's kv database as fast as they can while a probe key is written
   there every 50 ms and polled in zone b (directly on its shard); achieved puts/s, lag p50 /
   p99 / max.

    TUSK_BIN=build/tusk python3 bench/kv_speed.py [SECONDS] [N]

Prints numbers only; asserts nothing. Stops everything it started.
"""

import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import redis
import subprocess
import yaml
from psycopg.types.json import Jsonb

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from kv_util import Parade  # noqa: E402
from conftest import free_port, to_yaml  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kv_lag import gather, parallel_rate, pct  # noqa: E402

PUT = "select kv.put('default', %s, %s)"
GET = "select kv.get('default', %s)"
UPSERT = "insert into plain (k, v) values (%s, %s) on conflict (k) do update set v = excluded.v"
SELECT = "select v from plain where k = %s"
DELETE = "delete from plain where k = %s"
COUNT = "insert into plain_c (k, n) values (%s, 1) on conflict (k) do update set n = plain_c.n + 1 returning n"


def run_for(connect, stmt, args_of, seconds, nconn):
    return parallel_rate(connect, stmt, None, seconds, nconn, args_of)


class Resp:
    """A Redis connection that parallel_rate drives like a psycopg one: execute(command, args)."""

    def __init__(self, port):
        self.r = redis.Redis(host="127.0.0.1", port=port)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.r.close()

    def execute(self, command, args):
        return self.r.execute_command(command, *args)


def add_redis_listener(z):
    """Restart zone z's tusk with a redis listen entry beside its PostgreSQL one."""
    assert z.stop_tusk() == []
    cfg = yaml.safe_load(z.tusk.cfg_path.read_text())
    z.redis_port = free_port()
    cfg["listen"].append({"host": "127.0.0.1", "port": z.redis_port, "protocol": "redis"})
    z.tusk.cfg_path.write_text(to_yaml(cfg) + "\n")
    z.tusk.start()
    for _ in range(200):  # the router starts just after the listeners
        try:
            redis.Redis(host="127.0.0.1", port=z.redis_port).get("warm-up")
            return
        except (redis.ResponseError, redis.ConnectionError):
            time.sleep(0.05)


def redis_benchmark(z, nconn, seconds):
    """redis-benchmark's SET and GET (a C client, no pipelining) on the listener: requests/s."""
    if not shutil.which("redis-benchmark"):
        return None
    n = int(max(1000, 400 * seconds * nconn))
    p = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(z.redis_port), "-c", str(nconn), "-n",
                        str(n), "-r", "4000", "-t", "set,get", "-q", "--csv"], capture_output=True, text=True,
                       timeout=600)
    out = {}
    for line in p.stdout.splitlines():
        cols = [c.strip('"') for c in line.split(",")]
        if len(cols) >= 2 and cols[0] in ("SET", "GET"):
            out[cols[0]] = float(cols[1])
    return out


def pgbouncer_binary():
    """The PgBouncer bench/lib.sh compares with (1.25 when it is there or can be built, else
    Debian's), or None."""
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run(["bash", "-c", 'source bench/lib.sh && bench_pgbouncer_find && echo "$PGB_REF"'],
                         cwd=repo, env={**os.environ, "BENCH_NAME": "kv_speed"}, capture_output=True,
                         text=True, timeout=900)
    ref = out.stdout.strip().splitlines()
    return ref[-1] if out.returncode == 0 and ref else None


class Bouncer:
    """PgBouncer in transaction pooling in front of zone z's PostgreSQL, database plain."""

    def __init__(self, binary, z, base):
        self.dir = base / "pgbouncer"
        self.dir.mkdir()
        self.port = free_port()
        (self.dir / "userlist.txt").write_text('"postgres" ""\n')
        (self.dir / "pgbouncer.ini").write_text(
            f"[databases]\nplain = host=127.0.0.1 port={z.pg.port} dbname=plain\n[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\nauth_type = trust\n"
            f"auth_file = {self.dir}/userlist.txt\npool_mode = transaction\ndefault_pool_size = 20\n"
            f"max_client_conn = 100\nlogfile = {self.dir}/pgbouncer.log\npidfile = {self.dir}/pgbouncer.pid\n")
        if os.geteuid() == 0:
            for f in (self.dir, self.dir / "userlist.txt", self.dir / "pgbouncer.ini"):
                shutil.chown(f, "postgres", "postgres")
        run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(run_as + [binary, "-d", str(self.dir / "pgbouncer.ini")], check=True, timeout=30)
        self.version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.split()[1]
        for _ in range(100):
            try:
                psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="plain").close()
                return
            except psycopg.OperationalError as e:
                why = e
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"PgBouncer on port {self.port} took no connection in 5 s ({why}; "
                           f"its log: {self.dir / 'pgbouncer.log'})")

    def connect(self):
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="plain", autocommit=True)

    def stop(self):
        pid = self.dir / "pgbouncer.pid"
        if pid.exists():
            try:
                os.kill(int(pid.read_text()), 15)
            except (ValueError, ProcessLookupError):
                pass


def throughput(p, seconds, base):
    z = p.zones[0]
    add_redis_listener(z)
    with z.pg.admin() as c:
        c.execute("create database plain")
    with z.pg.admin("plain") as c:
        c.execute("create table plain (k text primary key, v jsonb)")
        c.execute("create table plain_c (k text primary key, n bigint)")
    kv = lambda: psycopg.connect(host="127.0.0.1", port=z.tusk.port, user="postgres", dbname="kv",  # noqa: E731
                                 autocommit=True)
    plain = lambda: psycopg.connect(host="127.0.0.1", port=z.tusk.port, user="postgres",  # noqa: E731
                                    dbname="plain", autocommit=True)
    keys = [f"key-{i}" for i in range(4000)]
    val = Jsonb({"n": 1})
    resp = lambda: Resp(z.redis_port)  # noqa: E731
    binary = pgbouncer_binary()
    bouncer = Bouncer(binary, z, base) if binary else None
    try:
        for nconn in (1, 8):
            rates(z, nconn, seconds, kv, plain, resp, bouncer, keys, val)
            quiet_rates(p, nconn, seconds, kv, plain, resp, keys, val)
    finally:
        if bouncer:
            bouncer.stop()


def tree(pid):
    """pid and its descendants' pids (from /proc), each with its threads."""
    kids = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        q = todo.pop()
        try:
            out += [int(t.name) for t in Path(f"/proc/{q}/task").iterdir()]
        except OSError:
            continue
        todo += kids.get(q, [])
    return out


def pin(pids, cpus):
    for x in pids:
        try:
            os.sched_setaffinity(x, cpus)
        except OSError:
            pass  # gone meanwhile


def zone_pids(z):
    postmaster = int((z.pg.data / "postmaster.pid").read_text().split()[0])
    return tree(postmaster) + tree(z.tusk.proc.pid)


def quiet_rates(p, nconn, seconds, kv, plain, resp, keys, val):
    """The puts again, away from zone b's replication: on this one machine zone b's tusk
    replicates every put of zone a (reading the changes from a's shards, writing them into
    b's) on the same cores as the writers, where a deployment has zone b on its own machine.
    First each zone on a core of its own (zone b's PostgreSQL and tusk on the last CPU; zone
    a's, this process and its writers on the others: a's part of replication, serving b's
    reads of its changes, stays with a), when there are two CPUs or more; then zone b's tusk
    paused (SIGSTOP: no replication at all meanwhile; it catches up after)."""
    a, b = p.zones
    every = os.sched_getaffinity(0)
    quiet = []
    if len(every) >= 2:
        last = max(every)
        pin(zone_pids(b), {last})
        pin(zone_pids(a) + [os.getpid()], every - {last})
        quiet.append(("zones on separate cores", None))
    quiet.append(("zone b's tusk paused", b))
    for what, stop in quiet:
        if stop:
            pin(zone_pids(a) + zone_pids(b) + [os.getpid()], every)
            os.kill(stop.tusk.proc.pid, signal.SIGSTOP)
        try:
            r = {name: run_for(connect, stmt, lambda i: (keys[i % len(keys)], v), seconds, nconn)
                 for name, connect, stmt, v in (("kv put", kv, PUT, val), ("resp set", resp, "SET", '{"n": 1}'),
                                                ("plain upsert", plain, UPSERT, val))}
        finally:
            if stop:
                os.kill(stop.tusk.proc.pid, signal.SIGCONT)
            pin(zone_pids(a) + zone_pids(b) + [os.getpid()], every)
        print(f"{nconn} connection(s), {what}: kv puts {r['kv put']:6.0f}/s, RESP SETs {r['resp set']:6.0f}/s vs "
              f"plain upserts {r['plain upsert']:6.0f}/s ({r['kv put'] / r['plain upsert']:.2f}x, "
              f"{r['resp set'] / r['plain upsert']:.2f}x)", flush=True)


def rates(z, nconn, seconds, kv, plain, resp, bouncer, keys, val):
    r = {}
    via_bouncer = (("bouncer upsert", bouncer.connect, UPSERT, lambda i: (keys[i % len(keys)], val)),
                   ("bouncer select", bouncer.connect, SELECT, lambda i: (keys[i % len(keys)],))) \
        if bouncer else ()
    for name, connect, stmt, args in via_bouncer + (
            ("kv put", kv, PUT, lambda i: (keys[i % len(keys)], val)),
            ("resp set", resp, "SET", lambda i: (keys[i % len(keys)], '{"n": 1}')),
            ("plain upsert", plain, UPSERT, lambda i: (keys[i % len(keys)], val)),
            ("kv get", kv, GET, lambda i: (keys[i % len(keys)],)),
            ("resp get", resp, "GET", lambda i: (keys[i % len(keys)],)),
            ("plain select", plain, SELECT, lambda i: (keys[i % len(keys)],)),
            ("resp incr", resp, "INCR", lambda i: (f"n-{keys[i % len(keys)]}",)),
            ("plain count", plain, COUNT, lambda i: (keys[i % len(keys)],)),
            ("resp miss", resp, "GET", lambda i: (f"absent-{i}",)),
            ("plain miss", plain, SELECT, lambda i: (f"absent-{i}",)),
            ("resp del", resp, "DEL", lambda i: (keys[i % len(keys)],)),
            ("plain delete", plain, DELETE, lambda i: (keys[i % len(keys)],))):
        r[name] = run_for(connect, stmt, args, seconds, nconn)
    print(f"{nconn} connection(s): kv puts {r['kv put']:6.0f}/s, RESP SETs {r['resp set']:6.0f}/s vs plain "
          f"upserts {r['plain upsert']:6.0f}/s ({r['kv put'] / r['plain upsert']:.2f}x, "
          f"{r['resp set'] / r['plain upsert']:.2f}x); kv gets {r['kv get']:6.0f}/s, RESP GETs "
          f"{r['resp get']:6.0f}/s vs plain selects {r['plain select']:6.0f}/s "
          f"({r['kv get'] / r['plain select']:.2f}x, {r['resp get'] / r['plain select']:.2f}x)", flush=True)
    print(f"{nconn} connection(s): RESP INCRs {r['resp incr']:6.0f}/s vs plain counter upserts "
          f"{r['plain count']:6.0f}/s ({r['resp incr'] / r['plain count']:.2f}x); RESP GETs of absent keys "
          f"{r['resp miss']:6.0f}/s vs plain selects of absent keys {r['plain miss']:6.0f}/s "
          f"({r['resp miss'] / r['plain miss']:.2f}x); RESP DELs {r['resp del']:6.0f}/s vs plain deletes "
          f"{r['plain delete']:6.0f}/s ({r['resp del'] / r['plain delete']:.2f}x)", flush=True)
    if bouncer:
        print(f"{nconn} connection(s), against PgBouncer {bouncer.version} (transaction pooling, same "
              f"PostgreSQL): plain upserts {r['bouncer upsert']:6.0f}/s: kv puts {r['kv put'] / r['bouncer upsert']:.2f}x, "
              f"RESP SETs {r['resp set'] / r['bouncer upsert']:.2f}x, tusk's plain upserts "
              f"{r['plain upsert'] / r['bouncer upsert']:.2f}x; plain selects {r['bouncer select']:6.0f}/s: kv gets "
              f"{r['kv get'] / r['bouncer select']:.2f}x, RESP GETs {r['resp get'] / r['bouncer select']:.2f}x, "
              f"tusk's plain selects {r['plain select'] / r['bouncer select']:.2f}x", flush=True)
    rb = redis_benchmark(z, nconn, seconds)
    if rb:
        print(f"{nconn} connection(s): redis-benchmark on the Redis listener: SET {rb.get('SET', 0):6.0f}/s "
              f"({rb.get('SET', 0) / r['plain upsert']:.2f}x plain upserts), GET {rb.get('GET', 0):6.0f}/s "
              f"({rb.get('GET', 0) / r['plain select']:.2f}x plain selects)", flush=True)


def counters(p, n, writers=4):
    shard = p.shard_of("default", "bench-hits")
    for z in p.zones:
        assert z.stop_tusk() == []
    errors = []

    def writer(z):
        try:
            with z.db(shard) as c:
                for _ in range(n):
                    c.execute("select kv.incr('default', 'bench-hits', 1)")
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    t0 = time.monotonic()
    threads = [threading.Thread(target=writer, args=(z,)) for z in p.zones for _ in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - t0
    seen = [z.sql(shard, "select kv.counter('default', 'bench-hits')")[0][0] for z in p.zones]
    p.start()
    t0 = time.monotonic()
    want = len(p.zones) * writers * n
    while True:
        vals = [z.sql(shard, "select kv.counter('default', 'bench-hits')")[0][0] for z in p.zones]
        if all(v == want for v in vals) or time.monotonic() - t0 > 120:
            break
        time.sleep(0.05)
    print(f"counters: {len(p.zones)} zones x {writers} writers x {n} increments while partitioned "
          f"({len(p.zones) * writers * n / took:.0f} increments/s; each zone saw {seen} before healing); "
          f"after healing {vals} (want {want}) in {time.monotonic() - t0:.2f} s; errors {len(errors)}", flush=True)


def caught_up(p, timeout=120):
    """Waits until zone b holds a key just written in zone a (the pause in quiet_rates left it
    behind): the lag measure starts from a zone that is not catching up. -> seconds waited."""
    a, b = p.zones
    mark = f"{time.time()}"
    shard = p.shard_of("default", "caught-up")
    t0 = time.monotonic()
    with psycopg.connect(host="127.0.0.1", port=a.tusk.port, user="postgres", dbname="kv", autocommit=True) as w:
        w.execute(PUT, ("caught-up", Jsonb({"m": mark})))
    with b.db(shard, user="postgres") as r:
        while time.monotonic() - t0 < timeout:
            v = r.execute("select value from kv.data where ns = 'default' and key = 'caught-up'").fetchone()
            if v and v[0] and v[0].get("m") == mark:
                break
            time.sleep(0.05)
    return time.monotonic() - t0


def lag(p, seconds):
    print(f"(zone b caught up with zone a in {caught_up(p):.1f} s)", flush=True)
    a, b = p.zones
    # The writers are processes, as in parallel_rate: as threads of this process they shared
    # its GIL with the probe below, whose polls then waited behind them (the lag read longer)
    # and whose writers' wake-ups queued behind one another (the rate read lower).
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    t0 = time.monotonic()

    def writer(j):
        try:
            n = 0
            with psycopg.connect(host="127.0.0.1", port=a.tusk.port, user="postgres", dbname="kv",
                                 autocommit=True) as c:
                while time.monotonic() - t0 < seconds:
                    c.execute(PUT, (f"lag-{j}-{n % 5000}", Jsonb({"i": n})))
                    n += 1
            q.put(n)
        except Exception as e:  # noqa: BLE001 (told to the parent, which raises it)
            q.put(f"{type(e).__name__}: {e}")

    probe_shard = p.shard_of("default", "probe")
    lags = []
    procs = [ctx.Process(target=writer, args=(j,)) for j in range(8)]
    for proc in procs:
        proc.start()
    with psycopg.connect(host="127.0.0.1", port=a.tusk.port, user="postgres", dbname="kv", autocommit=True) as w, \
            b.db(probe_shard, user="postgres") as r:
        n = 0
        while time.monotonic() - t0 < seconds:
            n += 1
            w.execute(PUT, ("probe", Jsonb({"n": n})))
            t_put = time.monotonic()
            while True:
                v = r.execute("select value from kv.data where ns = 'default' and key = 'probe'").fetchone()
                if v and v[0] and v[0]["n"] >= n:
                    lags.append(time.monotonic() - t_put)
                    break
                if time.monotonic() - t_put > 30:
                    lags.append(30.0)
                    break
                time.sleep(0.002)
            time.sleep(0.05)
    rate = sum(gather(procs, q, seconds + 120, "lag writer")) / seconds
    lags.sort()
    print(f"replication lag a -> b while zone a takes {rate:.0f} puts/s through its kv database (8 connections, "
          f"as fast as they go): {len(lags)} probes, p50 {pct(lags, 0.5):.0f} ms, p99 {pct(lags, 0.99):.0f} ms, "
          f"max {lags[-1] * 1000:.0f} ms", flush=True)


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    base = Path(tempfile.mkdtemp(prefix="tusk-kv-speed-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    p = Parade(base, ["a", "b"])
    try:
        p.setup()
        p.start()
        throughput(p, seconds, base)
        if n > 0:
            counters(p, n)
        lag(p, seconds * 2)
    finally:
        p.destroy()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
