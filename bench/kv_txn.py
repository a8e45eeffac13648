"""bench/kv_txn.py [PORT] [N] [PGPORT]: what a transaction costs through tusk's kv database
(docs/kv.md, "Transactions in the kv database"), one psycopg client, on a running `make run-kv`
(zone a's tusk, 6440, by default): N puts (1500) in autocommit, in transactions of one put each
(psycopg's default mode with a commit() per put: BEGIN answered by tusk, the put, COMMIT), and
in transactions of ten; every ten puts in a row are of one key (a transaction holds the keys of
one shard); then N gets in autocommit and in transactions of one get each (psycopg's default
mode reading: a READ COMMITTED transaction that only reads runs its reads alone and reaches no
shard). The same patterns of a plain upsert and a primary-key select of a table of its own
directly on zone a's PostgreSQL (PGPORT, by default read from .run-kv/pg-a/postmaster.pid; 0:
skipped), which tells what a transaction costs PostgreSQL itself. All ten alternated over 5
rounds. Prints calls per second per round, the medians and their ratios to autocommit of the
same target and kind; asserts nothing."""
import pathlib
import statistics
import sys
import time

import psycopg

port = int(sys.argv[1]) if len(sys.argv) > 1 else 6440
n = int(sys.argv[2]) if len(sys.argv) > 2 else 1500
pid_file = pathlib.Path(__file__).resolve().parent.parent / ".run-kv" / "pg-a" / "postmaster.pid"
if len(sys.argv) > 3:
    pg_port = int(sys.argv[3])
else:
    pg_port = int(pid_file.read_text().splitlines()[3]) if pid_file.exists() else 0

PUT = "select kv.put('default', %s, '1')"
UPSERT = "insert into bench_kv_txn (k, v) values (%s, '1') on conflict (k) do update set v = excluded.v"
GET = "select kv.get('default', %s)"
SELECT = "select v from bench_kv_txn where k = %s"


def connect(target, autocommit):
    if target == "kv":
        return psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="kv", autocommit=autocommit)
    return psycopg.connect(host="127.0.0.1", port=pg_port, user="postgres", dbname="postgres", autocommit=autocommit)


def run(target, per, read=False):
    """puts (gets: read) per second: per 0 autocommit, else a commit() after every per."""
    sql = (GET if read else PUT) if target == "kv" else (SELECT if read else UPSERT)
    with connect(target, per == 0) as c:
        start = time.perf_counter()
        for i in range(n):
            c.execute(sql, (f"bench-txn-{(i // 10) % 50}",))
            if per and (i + 1) % per == 0:
                c.commit()
        if per:
            c.commit()
        return n / (time.perf_counter() - start)


targets = ["kv"]
if pg_port:
    with connect("direct", True) as c:
        c.execute("create table if not exists bench_kv_txn (k text primary key, v jsonb not null)")
    targets.append("direct")
kinds = {"autocommit": 0, "transactions of 1": 1, "transactions of 10": 10,
         "gets autocommit": (0, True), "gets in transactions of 1": (1, True)}
rates = {(t, k): [] for t in targets for k in kinds}
for rnd in range(5):
    for t in targets:
        for k, per in kinds.items():
            rates[(t, k)].append(run(t, *per) if isinstance(per, tuple) else run(t, per))
    print(f"round {rnd + 1}: " + ", ".join(f"{t} {k} {rates[(t, k)][-1]:.0f}/s" for t in targets for k in kinds))
for t in targets:
    for k in kinds:
        base = statistics.median(rates[(t, "gets autocommit" if k.startswith("gets") else "autocommit")])
        m = statistics.median(rates[(t, k)])
        print(f"{t} {k}: median {m:.0f}/s ({m / base:.2f}x its autocommit)")
if pg_port:
    with connect("direct", True) as c:
        c.execute("drop table bench_kv_txn")
