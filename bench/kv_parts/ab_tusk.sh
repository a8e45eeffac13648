#!/bin/bash
# Two tusk binaries side by side on one zone of tusk_zone.py, both as kv_router (the put's fast
# path; docs/kv.md, "Speed", tenth step; issue 25): pgbench -n -M prepared -T SECONDS of random
# keys 0..3999 through each one's kv database (kv.put, kv.get) and plain database (the upsert,
# the select), which tusk first alternated each round; per second, medians, and the paired
# ratios kv / plain (per binary) and after / before.
#   bench/kv_parts/ab_tusk.sh BEFORE AFTER [ROUNDS [SECONDS [CLIENTS]]]
# BEFORE_AS_CLIENT=1: BEFORE's config without router_password (kv_client, SELECT kv.put: the
# ninth step's comparison, fast/through_tusk.sh).
set -e
B=$1; A=$2; R=${3:-5}; T=${4:-3}; C=${5:-1}
D=$(cd "$(dirname "$0")" && pwd); BASE=/tmp/kv-ab-tusk
rm -f "$BASE.out"
TUSK_BIN=$A /usr/bin/python3 "$D/tusk_zone.py" "$BASE" > "$BASE.out" 2>&1 &
ZONE=$!
trap 'kill $T1 $T2 2>/dev/null; kill $ZONE; wait $ZONE 2>/dev/null' EXIT
for _ in $(seq 120); do grep -q PGPORT "$BASE.out" 2>/dev/null && break; sleep 1; done
PGPORT=$(awk '/PGPORT/{print $2}' "$BASE.out")
psql -X -q -h 127.0.0.1 -p "$PGPORT" -U postgres -d kv_shard_0 -c "select 1" >/dev/null
[ -n "$BEFORE_AS_CLIENT" ] && sed -i '/router_password/d' "$BASE/t1/tusk.yaml"
"$B" -c "$BASE/t1/tusk.yaml" > "$BASE/t1.log" 2>&1 & T1=$!
"$A" -c "$BASE/t2/tusk.yaml" > "$BASE/t2.log" 2>&1 & T2=$!
sleep 2
run() { pgbench -n -M prepared -h 127.0.0.1 -p "$1" -U postgres -c "$C" -j "$C" -T "$T" -f "$D/tusk/$2.sql" "$3" 2>/dev/null |
	awk '/^tps/{printf "%.0f\n", $3}'; }
for p in 25001 25002; do run $p put kv >/dev/null; run $p get kv >/dev/null; done  # warm: catalog, connections, plans, keys
echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for r in $(seq "$R"); do
	if [ $((r % 2)) = 1 ]; then order="25001:before 25002:after"; else order="25002:after 25001:before"; fi
	for o in $order; do
		echo "${o#*:}_put $(run "${o%:*}" put kv)"; echo "${o#*:}_pput $(run "${o%:*}" pput plain)"
		echo "${o#*:}_get $(run "${o%:*}" get kv)"; echo "${o#*:}_pget $(run "${o%:*}" pget plain)"
	done
done | python3 -c '
import sys, statistics as st, collections
d = collections.OrderedDict()
for l in sys.stdin:
    k, v = l.split(); d.setdefault(k, []).append(float(v))
for k, v in sorted(d.items()): print(f"{k:12} median {st.median(v):8.0f}/s  {v}")
for w in ("before", "after"):
    for op, pl in (("put", "pput"), ("get", "pget")):
        r = [p / q for p, q in zip(d[w + "_" + op], d[w + "_" + pl])]
        print(f"{w:6} {op}/plain per round {[round(x, 2) for x in r]}, median {st.median(r):.2f}")
# which tusk runs first alternates by round, and the ratios can alternate with it (an order
# effect): the geometric mean weighs both orders, the median may not
for op in ("put", "get"):
    r = [a / b for a, b in zip(d["after_" + op], d["before_" + op])]
    print(f"after/before {op}s per round {[round(x, 2) for x in r]}, median {st.median(r):.2f}, "
          f"geometric mean {st.geometric_mean(r):.2f}")'
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
