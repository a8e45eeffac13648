#!/bin/bash
# Sourced by shards.sh, redesign/ab2.sh and redesign/cpuab.sh (docs/kv.md, "Speed", thirteenth
# and fifteenth steps): with PG (the zone's PostgreSQL port) and W (a directory) set, writes
# pgbench scripts of one fixed key each into W: put_1shard / get_1shard (20 keys of shard 0),
# put_2shards / get_2shards (10 keys of each shard), pput / pget (the plain table's upsert and
# select of shard 0's 20 keys); "$W/SET".*.sql.
keys() { psql -X -h 127.0.0.1 -p "$PG" -U postgres -d kv_shard_0 -Atc \
	"SELECT g FROM generate_series(0, 3999) g WHERE kv.shard_of('default', g::text, 2) = $1 LIMIT $2"; }
script() {  # set prefix key...
	local set=$1 i=0; shift
	for k in "$@"; do
		case $set in
		put*) echo "SELECT kv.put('default', '$k', '{\"n\": 1}');" ;;
		get*) echo "SELECT kv.get('default', '$k');" ;;
		pput) echo "INSERT INTO plain (k, v) VALUES ('$k', '{\"n\": 1}') ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v;" ;;
		pget) echo "SELECT v FROM plain WHERE k = '$k';" ;;
		esac > "$W/$set.$i.sql"
		i=$((i + 1))
	done
}
S0=$(keys 0 20); S1=$(keys 1 10)
for op in put get; do
	script "${op}_1shard" $S0
	script "${op}_2shards" $(echo "$S0" | head -10) $S1
done
script pput $S0; script pget $S0
