#!/bin/bash
# tusk's user-space instructions per kv call and per plain-pool call (docs/kv.md, "Speed", fourth
# step; issue 25). Callgrind counts do not move with the machine's load.
#   bench/kv_parts/callgrind.sh BINARY TAG [BASE]   (after tusk_zone.py; BASE as there, /tmp/kv-tusk)
# Runs BINARY under callgrind with BASE/t2/tusk.yaml (port 25002, one worker), instrumentation
# off; for each of get, put (the kv database, random keys 0..3999) and pget, pput (the same
# select / upsert of `plain` through the plain pool): a 20-call warm-up (the shard connections),
# then pgbench -M prepared -c 1 runs of 500 and of 2,500 calls, each counted alone;
# instructions per call = (I(2500) - I(500)) / 2000, so a run's own cost (login) cancels.
set -e
B=$1; TAG=$2; BASE=${3:-/tmp/kv-tusk}; D=$(cd "$(dirname "$0")" && pwd)/tusk; OUT=$BASE/cg.$TAG
rm -f "$OUT".*
setsid valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT" "$B" -c "$BASE/t2/tusk.yaml" \
	>"$BASE/t2/log.$TAG" 2>&1 &
VP=$!
sleep 6
for s in get:kv pget:plain put:kv pput:plain; do
	f=$D/${s%%:*}.sql; db=${s##*:}
	pgbench -n -M prepared -h 127.0.0.1 -p 25002 -U postgres -t 20 -f "$f" "$db" >/dev/null 2>&1
	for n in 500 2500; do
		callgrind_control -z $VP >/dev/null 2>&1; callgrind_control -i on $VP >/dev/null 2>&1
		pgbench -n -M prepared -h 127.0.0.1 -p 25002 -U postgres -t $n -f "$f" "$db" >/dev/null 2>&1
		callgrind_control -i off $VP >/dev/null 2>&1; callgrind_control -d "${s%%:*}_$n" $VP >/dev/null 2>&1
	done
done
kill $VP; wait $VP 2>/dev/null || true
for s in get put pget pput; do
	a=$(grep -l "Trigger: dump ${s}_500\$" "$OUT".* | xargs grep '^totals' | awk '{print $2}')
	b=$(grep -l "Trigger: dump ${s}_2500\$" "$OUT".* | xargs grep '^totals' | awk '{print $2}')
	echo "$TAG $s $(( (b - a) / 2000 )) instructions/call"
done
