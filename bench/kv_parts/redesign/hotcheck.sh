#!/bin/bash
# HOT share of kv.data's updates under each layout of variant.sh: layout, VACUUM FULL, N puts of
# 10 + 10 keys of both shards through the tusk, pg_stat_user_tables deltas (after 11 s: PostgreSQL
# 15 flushes an idle backend's counters within 10 s).
#   bench/kv_parts/redesign/hotcheck.sh PGPORT TUSKPORT N "A B1 B2"
D=$(cd "$(dirname "$0")" && pwd); PG=$1; TP=$2; N=${3:-4000}
W=$(mktemp -d /tmp/kv-hot.XXXXXX); trap 'rm -rf "$W"' EXIT; args=(); i=0
for k in $(psql -X -h 127.0.0.1 -p "$PG" -U postgres -d kv_shard_0 -Atc "(SELECT g FROM generate_series(0, 3999) g WHERE kv.shard_of('default', g::text, 2) = 0 LIMIT 10) UNION ALL (SELECT g FROM generate_series(0, 3999) g WHERE kv.shard_of('default', g::text, 2) = 1 LIMIT 10)"); do
	echo "SELECT kv.put('default', '$k', '{\"n\": 1}');" > "$W/$i.sql"; args+=(-f "$W/$i.sql"); i=$((i + 1)); done
for v in ${4:-A B1 B2}; do
	"$D/variant.sh" "$PG" "$v" >/dev/null 2>&1; sleep 11
	read -r u0 h0 < <("$D/hot.sh" "$PG")
	pgbench -n -M prepared -h 127.0.0.1 -p "$TP" -U postgres -t "$N" "${args[@]}" kv >/dev/null 2>&1; sleep 11
	read -r u1 h1 < <("$D/hot.sh" "$PG")
	echo "$v: $((u1 - u0)) updates, $((h1 - h0)) HOT ($(( 100 * (h1 - h0) / (u1 - u0) ))%)"
done
