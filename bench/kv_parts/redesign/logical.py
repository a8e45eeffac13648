"""wal_level=logical for kv.data, measured before building a replication that reads the WAL
(docs/kv.md "Speed", issue 25). On a zone of bench/kv_parts/tusk_zone.py with a tusk on TUSKPORT:

  (a) puts with wal_level=replica against wal_level=logical with a publication FOR TABLE kv.data
      and a pgoutput slot in kv_shard_0 (not consumed while measured): layouts.sh cpu (ROUNDS rounds of
      PUTS calls; kv.data in variant.sh's layout $LAYOUT, default B2) in each, alternated CYCLES
      times (PostgreSQL restarted at each switch, as postgres via pg_ctl), and the WAL bytes per
      put (pg_current_wal_lsn around 5,000 puts of shard 0's keys);
  (b) the decoding's cost: N puts of shard 0's keys through tusk, then in one session
      pg_logical_slot_peek_binary_changes (3 times) and pg_logical_slot_get_binary_changes
      ('proto_version' '1', 'publication_names' 'p'), timed and with that backend's CPU
      (/proc/PID/schedstat and /proc/PID/stat utime+stime), per put and per message.
  The slot is dropped at the end, and wal_level set back to replica.

  TUSKPID=<tusk's pid> [LAYOUT=B2] /usr/bin/python3 bench/kv_parts/redesign/logical.py \
      PGPORT DATADIR TUSKPORT [CYCLES [N [ROUNDS PUTS]]]     (then summary3.py on its output)
"""
import os, subprocess, sys, time, statistics as st
import psycopg

PG, DATA, TP = sys.argv[1], sys.argv[2], sys.argv[3]
CYCLES = int(sys.argv[4]) if len(sys.argv) > 4 else 2
N = int(sys.argv[5]) if len(sys.argv) > 5 else 20000
R, T = (sys.argv[6], sys.argv[7]) if len(sys.argv) > 7 else ("2", "4000")
TPID = os.environ["TUSKPID"]
LAYOUT = os.environ.get("LAYOUT", "B2")
HERE = os.path.dirname(os.path.abspath(__file__))
PG_CTL = "/usr/lib/postgresql/15/bin/pg_ctl"


def conn(db="kv_shard_0"):
    return psycopg.connect(host="127.0.0.1", port=PG, user="postgres", dbname=db, autocommit=True)


def one(sql, db="kv_shard_0"):
    with conn(db) as c:
        return c.execute(sql).fetchone()


def load():
    return open("/proc/loadavg").read().split()[:3]


def wait_tusk():
    for _ in range(100):
        r = subprocess.run(["psql", "-X", "-h", "127.0.0.1", "-p", TP, "-U", "postgres", "-d", "kv", "-Atc",
                            "SELECT kv.put('default', 'probe', '1')"], capture_output=True)
        if r.returncode == 0:
            return
        time.sleep(0.3)
    raise SystemExit("tusk does not answer after the restart")


def set_level(level):
    with conn("postgres") as c:
        c.execute(f"ALTER SYSTEM SET wal_level = {level}")
    subprocess.run(["runuser", "-u", "postgres", "--", PG_CTL, "-D", DATA, "-m", "fast", "-w", "restart",
                    "-l", os.path.join(os.path.dirname(DATA), "restart.log")], check=True, capture_output=True)
    assert one("SHOW wal_level")[0] == level
    wait_tusk()


def slot(create):
    with conn() as c:
        if create:
            if not c.execute("SELECT 1 FROM pg_publication WHERE pubname = 'p'").fetchone():
                c.execute("CREATE PUBLICATION p FOR TABLE kv.data")
            if not c.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = 's'").fetchone():
                c.execute("SELECT pg_create_logical_replication_slot('s', 'pgoutput')")
        elif c.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = 's'").fetchone():
            c.execute("SELECT pg_drop_replication_slot('s')")


KEYS = [r[0] for r in conn().execute(
    "SELECT g::text FROM generate_series(0, 3999) g WHERE kv.shard_of('default', g::text, 2) = 0 LIMIT 20").fetchall()]
PUTS = []  # one script per key (tusk's kv database takes constants or parameters only)
for i, k in enumerate(KEYS):
    PUTS += ["-f", f"/tmp/kv-logical-put.{i}.sql"]
    with open(PUTS[-1], "w") as f:
        f.write(f"SELECT kv.put('default', '{k}', '{{\"n\": 1}}');\n")


def puts(n):
    subprocess.run(["pgbench", "-n", "-M", "prepared", "-h", "127.0.0.1", "-p", TP, "-U", "postgres",
                    "-t", str(n), *PUTS, "kv"], check=True, capture_output=True)


def wal_per_put(n=5000):
    a = one("SELECT pg_current_wal_lsn()")[0]
    puts(n)
    return int(one(f"SELECT pg_current_wal_lsn() - '{a}'::pg_lsn")[0]) / n


# (a)
for cycle in range(CYCLES):
    for level in ("replica", "logical"):
        slot(False)
        set_level(level)
        if level == "logical":
            slot(True)
        print(f"=== wal_level {level} cycle {cycle}  {time.strftime('%H:%M:%S')}  load {load()}", flush=True)
        out = subprocess.run([os.path.join(HERE, "layouts.sh"), "cpu", PG, TP, R, T, LAYOUT, DATA, TPID], capture_output=True, text=True)
        print(out.stdout + out.stderr, end="", flush=True)
        print(f"WAL bytes per put {level}: {wal_per_put():.1f}", flush=True)

# (b): wal_level is logical and the slot exists here
slot(False); slot(True)
print(f"=== decoding, N = {N}  {time.strftime('%H:%M:%S')}  load {load()}", flush=True)
with conn() as c:
    pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
    c.execute("SELECT pg_replication_slot_advance('s', pg_current_wal_lsn())")
    puts(N)
    lsn = c.execute("SELECT pg_current_wal_lsn()").fetchone()[0]

    def cpu():
        s = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return int(open(f"/proc/{pid}/schedstat").read().split()[0]) / 1e3, (int(s[11]) + int(s[12])) * 1e6 / os.sysconf("SC_CLK_TCK")

    rows = []
    for fn in ("peek", "peek", "peek", "get"):
        c0, u0, t0 = *cpu(), time.perf_counter()
        n = c.execute(f"SELECT count(*) FROM pg_logical_slot_{fn}_binary_changes('s', '{lsn}', NULL, "
                      "'proto_version', '1', 'publication_names', 'p')").fetchone()[0]
        c1, u1, t1 = *cpu(), time.perf_counter()
        rows.append((fn, n, (t1 - t0) * 1e6, c1 - c0, u1 - u0))
        print(f"{fn}: {n} messages, wall {(t1 - t0) * 1e3:.1f} ms, backend CPU {(c1 - c0) / 1e3:.1f} ms "
              f"(schedstat; utime+stime {(u1 - u0) / 1e3:.0f} ms): per put wall {(t1 - t0) * 1e6 / N:.2f} us, "
              f"CPU {(c1 - c0) / N:.2f} us; per message CPU {(c1 - c0) / max(n, 1):.2f} us", flush=True)
    print(f"decoding per put, median of the 4: CPU {st.median(r[3] for r in rows) / N:.2f} us, "
          f"wall {st.median(r[2] for r in rows) / N:.2f} us", flush=True)
slot(False)
with conn() as c:
    c.execute("DROP PUBLICATION IF EXISTS p")
set_level("replica")
print("slot dropped, publication dropped, wal_level replica", one("SELECT count(*) FROM pg_replication_slots"), flush=True)
