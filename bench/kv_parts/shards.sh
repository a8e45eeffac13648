#!/bin/bash
# One connection's kv calls on one shard's keys against both shards' keys (docs/kv.md, "Speed",
# thirteenth step; issue 25): pgbench -n -M prepared -c 1 through a tusk's kv database with 20
# scripts of one fixed key each, all of shard 0 or ten of each shard, and the plain pool's
# select / upsert of 20 keys of `plain` beside them; alternated, medians in microseconds per
# call and the median of the rounds' rate ratios to plain.
#   bench/kv_parts/shards.sh PGPORT TUSKPORT [ROUNDS [SECONDS]]   (after tusk_zone.py and a tusk)
set -e
PG=$1; TP=$2; R=${3:-5}; T=${4:-3}
W=$(mktemp -d /tmp/kv-shards.XXXXXX); trap 'rm -rf "$W"' EXIT
. "$(dirname "$0")/sets.sh"
run() {  # set database
	local args=() f
	for f in "$W/$1".*.sql; do args+=(-f "$f"); done
	pgbench -n -M prepared -h 127.0.0.1 -p "$TP" -U postgres -T "$T" "${args[@]}" "$2" 2>/dev/null |
		awk '/^tps/{printf "%.1f\n", 1e6/$3}'
}
for s in put_1shard put_2shards get_1shard get_2shards; do run $s kv >/dev/null; done
echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for r in $(seq "$R"); do
	echo "pput $(run pput plain)"; echo "put_1shard $(run put_1shard kv)"; echo "put_2shards $(run put_2shards kv)"
	echo "pget $(run pget plain)"; echo "get_1shard $(run get_1shard kv)"; echo "get_2shards $(run get_2shards kv)"
done | python3 -c '
import sys, statistics as st, collections
d = collections.OrderedDict()
for l in sys.stdin:
    p = l.split()
    if len(p) == 2:
        d.setdefault(p[0], []).append(float(p[1]))
for k, v in d.items():
    print(f"{k:12} {st.median(v):7.1f} us per call  {v}")
for a, b in (("put_1shard", "pput"), ("put_2shards", "pput"), ("get_1shard", "pget"), ("get_2shards", "pget")):
    if a in d and b in d and len(d[a]) == len(d[b]):
        print(f"{a:12} rate / plain, median of the rounds: {st.median([q / p for p, q in zip(d[a], d[b])]):.2f}")'
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
