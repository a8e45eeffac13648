"""Failover under load (docs/backends.md, "Failover"), shared by test_failover_load.py and
bench/failover.py: a tusk service over a primary and two streaming standbys, pgbench
simple-update through tusk, looping writers (a new connection after each error), idle
clients between transactions and, for a read-write-split pool, looping readers; the primary
is killed (`pg_ctl stop -m immediate`) and a standby promoted 2 s later. One run returns
what happened: the time from pg_promote() to the first committed write through tusk, each
writer's acknowledged rows and failures (in flight on the dead primary or not), the idle
clients' and readers' errors."""

import subprocess
import threading
import time

import psycopg

from conftest import BENCH_DB, PG_BIN, TEST_DB, connect, wait_until


def pools(target, size=20):
    return [{"database": "*", "user": "*", "service": "main", "mode": "transaction", "size": size,
             "target_session_attrs": target}]


def service(c):
    return {"main": {"hosts": [f"127.0.0.1:{n.port}" for n in c.nodes]}}


TUSK_SETTINGS = {"pool_wait_timeout": "10s", "server_connect_timeout": "2s"}


def prepare(c):
    """pgbench's tables and the writers' table on the primary, replayed by every standby.
    Both standbys are made synchronous (the promoted one has every acknowledged commit): these clusters run synchronous_commit
    off and replicate asynchronously, so without it an acknowledged commit may be lost by
    PostgreSQL itself, and "no acknowledged write lost" would not test tusk."""
    c.primary.execute("alter system set synchronous_commit = on")
    c.primary.execute("alter system set synchronous_standby_names = 'ANY 2 (*)'")
    c.primary.execute("select pg_reload_conf()")
    wait_until(lambda: c.primary.execute("select count(*) from pg_stat_replication where sync_state = 'quorum'")[0][0]
               == 2, 30, what="both standbys synchronous")
    p = subprocess.run([str(PG_BIN / "pgbench"), "-h", "127.0.0.1", "-p", str(c.primary.port), "-U", "tusk_trust",
                        "-i", "-q", "-s", "1", BENCH_DB], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    with connect(c.primary.port, dbname=TEST_DB, autocommit=True) as cn:
        cn.execute("create table if not exists fo (id bigint primary key, writer int, at float8)")
    lsn = c.current_lsn()
    for s in c.standbys:
        c.wait_replayed(s, lsn, timeout=60)


class Writer(threading.Thread):
    """INSERTs in a loop, autocommit, a new connection after each error. A failure is in
    flight when its statement was sent before the primary died (kill_at): PostgreSQL can do
    nothing else with it; any other failure is one tusk should have spared the client."""

    def __init__(self, port, wid, stop, base):
        super().__init__(daemon=True)
        self.port, self.wid, self.stop, self.next_id = port, wid, stop, base
        self.acked = []  # (id, monotonic time of the commit's acknowledgement)
        self.failures = []  # (monotonic time the statement was sent, error text)
        self.kill_at = None

    def run(self):
        conn = None
        while not self.stop.is_set():
            sent = time.monotonic()
            try:
                if conn is None:
                    conn = connect(self.port, dbname=TEST_DB, autocommit=True, connect_timeout=30)
                    sent = time.monotonic()
                self.next_id += 1
                conn.execute("insert into fo (id, writer, at) values (%s, %s, %s)",
                             [self.next_id, self.wid, sent])
                self.acked.append((self.next_id, time.monotonic()))
                time.sleep(0.005)
            except psycopg.Error as e:
                self.failures.append((sent, str(e).strip().splitlines()[0] if str(e).strip() else repr(e)))
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.01)
        if conn is not None:
            conn.close()

    def split_failures(self):
        """(in flight, not in flight): sent before the kill, or after it."""
        inflight = [f for f in self.failures if self.kill_at is not None and f[0] < self.kill_at]
        other = [f for f in self.failures if f not in inflight]
        return inflight, other


class Reader(threading.Thread):
    """Reads in a loop: one connection kept, and a fresh login for every tenth read."""

    def __init__(self, port, stop):
        super().__init__(daemon=True)
        self.port, self.stop = port, stop
        self.reads = 0
        self.errors = []

    def run(self):
        conn = None
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                if conn is None:
                    conn = connect(self.port, dbname=TEST_DB, autocommit=True, connect_timeout=30)
                if i % 10 == 0:
                    with connect(self.port, dbname=TEST_DB, autocommit=True, connect_timeout=30) as fresh:
                        fresh.execute("select count(*) from fo").fetchone()
                else:
                    conn.execute("select count(*) from fo").fetchone()
                self.reads += 1
            except psycopg.Error as e:
                self.errors.append((time.monotonic(), str(e).strip()))
                if conn is not None:
                    conn.close()
                conn = None
            time.sleep(0.02)
        if conn is not None:
            conn.close()


def run_failover(c, t, writers=4, readers=0, idle=3, after=3.0, wait_first=15.0, order="kill", pgbench=True):
    """Load, kill the primary, promote standby 0 two seconds later; returns a dict (see the
    module's text). The cluster's primary is the promoted standby afterwards. A planned
    switchover instead: order "stop" stops the primary cleanly (-m fast) and promotes at once,
    "promote" promotes first and stops the old primary (-m fast) half a second later."""
    stop = threading.Event()
    bench = None if not pgbench else subprocess.Popen([str(PG_BIN / "pgbench"), "-h", "127.0.0.1", "-p", str(t.port), "-U", "tusk_trust",
                              "-b", "simple-update", "-n", "-c", "8", "-j", "2", "-T", "600", BENCH_DB],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    idle_conns = [connect(t.port, dbname=TEST_DB, autocommit=True) for _ in range(idle)]
    for cn in idle_conns:
        cn.execute("select 1")
    ws = [Writer(t.port, i, stop, (i + 1) * 10_000_000) for i in range(writers)]
    rs = [Reader(t.port, stop) for _ in range(readers)]
    for th in ws + rs:
        th.start()
    out = {"pgbench_alive": True}
    try:
        wait_until(lambda: all(w.acked for w in ws), 30, what="every writer committed once")
        time.sleep(1.5)
        old, new = c.primary, c.standbys[0]

        def stop_old(mode):
            old.stop(mode)
            kill_at = time.monotonic()  # what was sent before this may have been in flight on it
            for w in ws:
                w.kill_at = kill_at

        if order == "promote":
            promote_at = time.monotonic()
            c.promote(new)
            out["promoted"] = time.monotonic() - promote_at
            time.sleep(0.5)
            stop_old("fast")
        else:
            stop_old("immediate" if order == "kill" else "fast")
            if order == "kill":
                time.sleep(2.0)
            promote_at = time.monotonic()
            c.promote(new)
            out["promoted"] = time.monotonic() - promote_at
        out["promote_returned"] = time.monotonic() - promote_at
        deadline = promote_at + wait_first
        first = None
        while time.monotonic() < deadline and first is None:
            times = [a for w in ws for (_, a) in w.acked if a > promote_at]
            first = min(times) - promote_at if times else None
            time.sleep(0.02)
        out["first_write"] = first
        time.sleep(after)
        # Idle clients: logged in before the kill, between transactions throughout.
        out["idle_errors"] = []
        for k, cn in enumerate(idle_conns):
            try:
                cn.execute("insert into fo (id, writer, at) values (%s, -1, 0)", [-(k + 1)])
            except psycopg.Error as e:
                out["idle_errors"].append(str(e).strip())
    finally:
        stop.set()
        for th in ws + rs:
            th.join(timeout=60)
        if bench:
            bench.terminate()
            try:
                bench.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                bench.kill()
                bench.communicate()
        for cn in idle_conns:
            cn.close()
    out["acked"] = [i for w in ws for (i, _) in w.acked]
    out["inflight"] = [f for w in ws for f in w.split_failures()[0]]
    out["not_inflight"] = [f for w in ws for f in w.split_failures()[1]]
    out["reader_errors"] = [e for r in rs for e in r.errors]
    out["reads"] = sum(r.reads for r in rs)
    present = set(r[0] for r in c.primary.execute("select id from fo", dbname=TEST_DB))
    out["lost"] = sorted(set(out["acked"]) - present)
    return out
