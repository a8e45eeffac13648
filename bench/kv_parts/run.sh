#!/bin/bash
# The shard's side of a kv call, part by part (docs/kv.md, "Speed", third step; issue 25).
#   1. /usr/bin/python3 bench/kv_parts/zone.py &   (a one-zone Parade, prints PORT; Ctrl-C stops)
#   2. bench/kv_parts/run.sh PORT
# Loads variants.sql into kv_shard_1 (scratch: its kv.identity is set to one shard, so every
# key passes the same check; copies of kv.put / kv.get in schema kvx, one thing changed each),
# then times A (proc.sql, 5 rounds: a procedure of 5,000 calls, COMMIT after each), B (loop.sql, 5 rounds: 10,000
# calls in one transaction) and C (pgbench -M prepared -c 1, 3 s, alternated). Medians, µs.
set -e
PORT=$1; D=$(cd "$(dirname "$0")" && pwd)
Q="psql -h 127.0.0.1 -p $PORT -U postgres -d kv_shard_1"
$Q -q -v ON_ERROR_STOP=1 -c "create table if not exists public.plain (k text primary key, v jsonb)" \
   -c "grant all on public.plain to kv_client, kv_owner" >/dev/null
$Q -q -v ON_ERROR_STOP=1 -f "$D/variants.sql" >/dev/null
med() { python3 -c '
import sys, statistics as st, collections
d = collections.OrderedDict()
for l in sys.stdin:
    p = l.split()
    d.setdefault(p[-2], []).append(float(p[-1]))
for v, ts in d.items(): print(f"{v:12} {st.median(ts):8.1f}  {ts}")'; }
echo "== A: commit after each call, us"; for r in 1 2 3 4 5; do $Q -f "$D/proc.sql" 2>&1; done | grep -o "R .*" | med
echo "== B: one transaction, us"; for r in 1 2 3 4 5; do $Q -f "$D/loop.sql" 2>&1; done | grep -o "R .*" | med
echo "== C: pgbench -M prepared -c 1, us per call"
for r in 1 2 3; do for f in "$D"/pgbench/*.sql; do v=$(basename "$f" .sql)
  tps=$(pgbench -n -M prepared -h 127.0.0.1 -p "$PORT" -U postgres -T 3 -f "$f" kv_shard_1 2>&1 | awk '/^tps/{print $3}')
  echo "$v $(python3 -c "print(round(1e6/$tps, 1))")"
done; done | med
