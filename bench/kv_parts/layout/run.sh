#!/usr/bin/env bash
# bench/kv_parts/layout/run.sh: what a put's write to kv.data costs by the table's layout (issue
# 25, docs/kv.md "Sixth step"), on a throwaway PostgreSQL 15 (bench/lib.sh), without tusk or the
# kv functions: the same upsert of one of 10,000 keys into
#   plain    a two-column table (k text primary key, v jsonb): the bench-kv reference, HOT
#   cur      kv.data's layout today: primary key, the replication index (origin, chg_xid, ns,
#            key), the tombstone and expiry partial indexes; chg_xid changes at every write, so
#            no update is HOT
#   hotonly  kv.data's columns with the primary key only (fillfactor 70): every update HOT, but
#            nothing for replication to find changes by
#   hot      as hotonly, plus one row appended per write to a change log chg (origin, chg_xid,
#            ns, key) indexed on (origin, chg_xid): a layout replication could read
# pgbench -n -M prepared -c 1 -T SECS (3) each, ROUNDS (5) rounds alternated; prints µs per put
# per round, then medians and the paired (per-round) throughput ratio to plain, then
# pg_stat_user_tables' updates and HOT updates. Asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/../../.."
BENCH_NAME=kv-layout
. bench/lib.sh
L=bench/kv_parts/layout
bench_dir tusk-kv-layout
PG_PORT=$(free_port)
trap 'bench_pg_stop' EXIT
bench_pg_init "$PG_PORT" "shared_buffers = 256MB"
bench_pg_start "$PG_PORT" 1
P=("$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d bench -q -v ON_ERROR_STOP=1)
"${P[@]}" -f "$L/setup.sql"
echo "kv-layout: load average $(cut -d' ' -f1-3 /proc/loadavg) at start" >&2
for r in $(seq 1 "${ROUNDS:-5}"); do
	for v in plain cur hotonly hot; do
		tps=$("$PG_BIN/pgbench" -n -M prepared -h 127.0.0.1 -p "$PG_PORT" -U postgres -T "${SECS:-3}" \
			-f "$L/$v.sql" bench 2>&1 | awk '/^tps/ {print $3}')
		echo "$r $v $(awk -v t="$tps" 'BEGIN {printf "%.1f", 1e6 / t}')"
	done
done | tee "$DIR/rounds"
python3 - "$DIR/rounds" <<'PY'
import collections, math, statistics, sys
rounds = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    r, v, us = line.split()
    rounds[r][v] = float(us)
for v in ("plain", "cur", "hotonly", "hot"):
    us = [x[v] for x in rounds.values()]
    ratio = math.exp(statistics.mean(math.log(x["plain"] / x[v]) for x in rounds.values()))
    print(f"{v:8} median {statistics.median(us):7.1f} µs/put   throughput / plain (paired) {ratio:.2f}")
PY
"${P[@]}" -c "SELECT relname, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname IN ('plain', 'cur', 'hotonly', 'hot') ORDER BY 1"
