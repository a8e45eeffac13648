#!/bin/bash
# Wall time per call, directly on the shard and through tusk (docs/kv.md, "Speed", fourth step;
# issue 25): pgbench -M prepared -c 1 of one key, kv.get / kv.put as kv_client on kv_shard_1 and
# through tusk's kv database, the select / upsert of plain directly and through its plain pool;
# alternated, medians in microseconds.
#   bench/kv_parts/wall.sh PGPORT TUSKPORT [ROUNDS [SECONDS]]   (after tusk_zone.py and a tusk)
PG=$1; TP=$2; R=${3:-5}; T=${4:-2}; D=$(cd "$(dirname "$0")" && pwd)/tusk
run() { pgbench -n -M prepared -h 127.0.0.1 -p "$1" -U "$2" -T "$T" -f "$D/$3.sql" "$4" 2>/dev/null |
	awk '/^tps/{printf "%.1f\n", 1e6/$3}'; }
for r in $(seq "$R"); do
	echo "direct_get $(run "$PG" kv_client fget kv_shard_1)"; echo "tusk_get $(run "$TP" postgres fget kv)"
	echo "direct_pget $(run "$PG" postgres fpget plain)"; echo "tusk_pget $(run "$TP" postgres fpget plain)"
	echo "direct_put $(run "$PG" kv_client fput kv_shard_1)"; echo "tusk_put $(run "$TP" postgres fput kv)"
	echo "direct_pput $(run "$PG" postgres fpput plain)"; echo "tusk_pput $(run "$TP" postgres fpput plain)"
done | python3 -c '
import sys, statistics as st, collections
d = collections.OrderedDict()
for l in sys.stdin:
    k, v = l.split(); d.setdefault(k, []).append(float(v))
for k, v in d.items(): print(f"{k:12} {st.median(v):7.1f}  {v}")'
