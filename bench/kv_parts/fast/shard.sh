#!/bin/bash
# A put directly on a shard, µs per call (docs/kv.md, "Speed", ninth step; issue 25): kv.put as
# kv_client, tusk's fast statement as kv_router, the plain table's upsert; pgbench -n -M
# prepared -c 1 -T SECONDS, alternated, medians. After ../zone.py (run with the new binary's
# TUSK_BIN: kv_router exists); sets kv_shard_0's kv.identity to one shard (every key passes).
#   bench/kv_parts/fast/shard.sh PGPORT [ROUNDS [SECONDS]]
export PGHOST=127.0.0.1 PGPORT=$1; R=${2:-5}; T=${3:-3}; D=$(cd "$(dirname "$0")" && pwd)
psql -U postgres -d kv_shard_0 -qc "update kv.identity set nshards = 1, shard = 0"
CV=$(psql -U postgres -d kv_shard_0 -tAc "select catalog_version from kv.identity")
sed "s/CV/$CV/" "$D/put_fast.sql" > /tmp/kv_put_fast.sql
run() { pgbench -n -M prepared -c 1 -T "$T" -U "$1" -f "$2" kv_shard_0 2>/dev/null | awk '/^tps/{printf "%.1f\n", 1e6/$3}'; }
for r in $(seq "$R"); do
	echo "kv.put $(run kv_client "$D/put_kv.sql")"; echo "fast $(run kv_router /tmp/kv_put_fast.sql)"
	echo "plain $(run kv_client "$D/put_plain.sql")"
done | python3 -c '
import sys, statistics as st, collections
d = collections.OrderedDict()
for l in sys.stdin:
    k, v = l.split(); d.setdefault(k, []).append(float(v))
for k, v in d.items(): print(f"{k:8} median {st.median(v):7.1f} us  {v}")'
