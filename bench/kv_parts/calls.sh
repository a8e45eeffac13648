#!/bin/bash
# Server time of each kv call on a shard, with sets of function definitions swapped in turn
# (docs/kv.md, "Speed", fifteenth step; issue 25). After zone.py (its PostgreSQL's port): sets
# kv_shard_0's kv.identity to one shard, fills keys k0..k3999, then for ROUNDS rounds applies each
# SQL FILE (CREATE OR REPLACE FUNCTION ..., e.g. from functions.py) to kv_shard_0 and times N
# calls of each kv function in one statement (ms per call, printed per round and file).
#   bench/kv_parts/calls.sh PGPORT ROUNDS N FILE...
set -e
export PGHOST=127.0.0.1 PGPORT=$1; R=$2; N=$3; shift 3
q() { psql -X -q -U postgres -d kv_shard_0 "$@"; }
q -c "UPDATE kv.identity SET nshards = 1, shard = 0" \
  -c "SELECT count(kv.put('default', 'k' || g, '{\"n\": 1}')) FROM generate_series(0, 3999) g" >/dev/null
calls=(
	"delete|SELECT count(kv.delete('default', 'D' || g))"
	"delete_many|SELECT count(kv.delete_many('default', ARRAY['M' || g, 'N' || g]))"
	"put_many|SELECT count(kv.put_many('default', ARRAY['k' || (g % 4000), 'k' || ((g + 1) % 4000)], ARRAY['1', '2']))"
	"touch|SELECT count(kv.touch('default', 'k' || (g % 4000), '1 hour'))"
	"patch|SELECT count(kv.patch('default', 'P' || (g % 4000), '{\"m\": 2}'))"
	"incr|SELECT count(kv.incr('default', 'c' || (g % 100), 1))"
	"counter|SELECT count(kv.counter('default', 'c' || (g % 100)))"
	"put|SELECT count(kv.put('default', 'k' || (g % 4000), '{\"n\": 2}'))"
	"get|SELECT count(kv.get('default', 'k' || (g % 4000)))"
	"read_absent|SELECT count(kv.read('default', 'A' || g))"
	"read_many|SELECT count((SELECT count(*) FROM kv.read_many('default', ARRAY['k' || (g % 4000), 'c' || (g % 100), 'A' || g])))"
	"get_many|SELECT count((SELECT count(*) FROM kv.get_many('default', ARRAY['k' || (g % 4000), 'k' || ((g + 7) % 4000)])))"
)
for r in $(seq "$R"); do
	for f in "$@"; do
		q -v ON_ERROR_STOP=1 -f "$f" >/dev/null
		line="round $r $(basename "$f"):"
		for c in "${calls[@]}"; do
			name=${c%%|*}; sql=${c#*|}; sql=${sql//\'D\'/\'D$r$RANDOM\'}; sql=${sql//\'M\'/\'M$r$RANDOM\'}; sql=${sql//\'N\'/\'N$r$RANDOM\'}
			ms=$(q -At <<-SQL | grep -o "Time: [0-9.]*" | tail -1 | awk -v n="$N" '{printf "%.3f", $2 / n}'
				$sql FROM generate_series(1, 20) g;
				\timing on
				$sql FROM generate_series(1, $N) g;
			SQL
			)
			line="$line $name $ms"
		done
		echo "$line"
	done
done
