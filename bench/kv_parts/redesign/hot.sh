#!/bin/bash
# Print n_tup_upd and n_tup_hot_upd of kv.data in both shard databases, summed:
#   bench/kv_parts/redesign/hot.sh PGPORT      -> "UPD HOT"
PG=$1; u=0; h=0
for db in kv_shard_0 kv_shard_1; do
	read -r a b < <(psql -X -h 127.0.0.1 -p "$PG" -U postgres -d "$db" -AtF' ' -c \
		"SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relid = 'kv.data'::regclass")
	u=$((u + a)); h=$((h + b))
done
echo "$u $h"
