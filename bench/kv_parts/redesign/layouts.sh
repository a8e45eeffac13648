#!/bin/bash
# shards.sh's comparison under variant.sh's index layouts of kv.data (docs/kv.md, "Speed",
# sixteenth step; issue 25), through a tusk on bench/kv_parts/tusk_zone.py's zone: in every round
# each layout in turn (the order rotated between rounds; kv.data is small, so a layout's DROP /
# CREATE INDEX + VACUUM FULL takes well under a second), and under each one:
#   wall: pgbench -n -M prepared -c 1 -T SECONDS of the plain upsert, kv.put on 20 keys of shard
#         0, kv.put on 10 + 10 keys of both shards, the plain select, kv.get on shard 0's keys and
#         on both shards' keys (sets.sh's scripts); lines "LAYOUT SET US_PER_CALL" (summary2.py);
#   cpu:  on-CPU time per call of the tusk and of every PostgreSQL process (../cpu.py, N calls) of
#         the plain upsert and the two kv.put sets, far less sensitive to a busy machine than
#         wall time; lines "LAYOUT SET <cpu.py's line>" (summary3.py).
#   bench/kv_parts/redesign/layouts.sh wall PGPORT TUSKPORT ROUNDS SECONDS "A B2 B1" > LOG
#   bench/kv_parts/redesign/layouts.sh cpu PGPORT TUSKPORT ROUNDS N "A B2" DATADIR TUSKPID > LOG
set -e
D=$(cd "$(dirname "$0")" && pwd); MODE=$1; PG=$2; TP=$3; R=${4:-10}; T=$5; VARS=(${6:-A B2})
DATA=$7; TPID=$8
W=$(mktemp -d /tmp/kv-layouts.XXXXXX); trap 'rm -rf "$W"' EXIT
. "$D/../sets.sh"
csv() { local IFS=,; echo "$*"; }
wall() {  # set database
	local args=() f
	for f in "$W/$1".*.sql; do args+=(-f "$f"); done
	pgbench -n -M prepared -h 127.0.0.1 -p "$TP" -U postgres -T "$T" "${args[@]}" "$2" 2>/dev/null |
		awk '/^tps/{printf "%.1f\n", 1e6/$3}'
}
cpu() {  # set database [calls]
	python3 "$D/../cpu.py" "$DATA" "$TPID" "$TP" "$(csv "$W/$1".*.sql)" "$2" "${3:-$T}"
}
n=${#VARS[@]}
for r in $(seq 0 $((R - 1))); do
	echo "round $r $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
	for j in $(seq 0 $((n - 1))); do
		v=${VARS[$(((j + r) % n))]}
		"$D/variant.sh" "$PG" "$v" >/dev/null 2>&1
		if [ "$MODE" = cpu ]; then
			cpu put_2shards kv 500 >/dev/null  # warm-up after the VACUUM FULL
			sets="pput put_1shard put_2shards"
		else
			wall put_1shard kv >/dev/null
			sets="pput put_1shard put_2shards pget get_1shard get_2shards"
		fi
		for s in $sets; do
			case $s in pput|pget) db=plain ;; *) db=kv ;; esac
			echo "$v $s $($MODE $s $db)"
		done
	done
done
