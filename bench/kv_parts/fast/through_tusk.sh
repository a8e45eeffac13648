#!/bin/bash
# A put's fast path through tusk (docs/kv.md, "Speed", ninth step; issue 25): two tusks on one
# zone of ../tusk_zone.py (set up by the NEW binary's tusk kv init, so kv_router exists), BEFORE
# on 25001 (its config without router_password: kv_client, SELECT kv.put) and NEW on 25002 (as
# kv_router: the fast statement); pgbench -n -M prepared -T SECONDS of random keys 0..3999
# through each one's kv database (kv.put) and plain database (the upsert), which tusk first
# alternated each round; per second.
#   bench/kv_parts/fast/through_tusk.sh BEFORE NEW [ROUNDS [SECONDS [CLIENTS]]]
set -e
B=$1; N=$2; R=${3:-5}; T=${4:-3}; C=${5:-1}
D=$(cd "$(dirname "$0")/.." && pwd); BASE=/tmp/kv-fast-tusk
TUSK_BIN=$N /usr/bin/python3 "$D/tusk_zone.py" "$BASE" > "$BASE.out" 2>&1 &
ZONE=$!
trap 'kill $T1 $T2 2>/dev/null; kill $ZONE; wait $ZONE 2>/dev/null' EXIT
for _ in $(seq 120); do grep -q PGPORT "$BASE.out" 2>/dev/null && break; sleep 1; done
sed -i '/router_password/d' "$BASE/t1/tusk.yaml"
"$B" -c "$BASE/t1/tusk.yaml" > "$BASE/t1.log" 2>&1 & T1=$!
"$N" -c "$BASE/t2/tusk.yaml" > "$BASE/t2.log" 2>&1 & T2=$!
sleep 2
run() { pgbench -n -M prepared -h 127.0.0.1 -p "$1" -U postgres -c "$C" -j "$C" -T "$T" -f "$D/tusk/$2.sql" "$3" 2>/dev/null |
	awk '/^tps/{printf "%.0f\n", $3}'; }
run 25001 put kv >/dev/null; run 25002 put kv >/dev/null   # warm: catalog read, connections, plans
for r in $(seq "$R"); do
	if [ $((r % 2)) = 1 ]; then order="25001:before 25002:new"; else order="25002:new 25001:before"; fi
	for o in $order; do
		echo "${o#*:}_put $(run "${o%:*}" put kv)"; echo "${o#*:}_plain $(run "${o%:*}" pput plain)"
	done
done | python3 -c '
import sys, statistics as st, collections
d = collections.OrderedDict()
for l in sys.stdin:
    k, v = l.split(); d.setdefault(k, []).append(float(v))
for k, v in sorted(d.items()): print(f"{k:14} median {st.median(v):8.0f}  {v}")
for w in ("before", "new"):
    r = [p / q for p, q in zip(d[w + "_put"], d[w + "_plain"])]
    print(f"{w:7} put/plain per round {[round(x, 2) for x in r]}, median {st.median(r):.2f}")
pr = [n / b for n, b in zip(d["new_put"], d["before_put"])]
print(f"new/before puts per round {[round(x, 2) for x in pr]}, median {st.median(pr):.2f}")'
