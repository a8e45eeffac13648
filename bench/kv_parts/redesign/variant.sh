#!/bin/bash
# Put kv.data of both shard databases (kv_shard_0, kv_shard_1) of a tusk_zone.py zone into one of
# three index layouts, then VACUUM FULL ANALYZE it (docs/kv.md "Speed", issue 25; measuring the
# "HOT overwrites" redesign before building it):
#   A   as `tusk kv init` builds it (primary key, data_origin_chg_xid, data_tombstones,
#       data_expires, data_counter_marks)
#   B1  A without the replication index data_origin_chg_xid (origin, chg_xid, ns, key)
#   B2  B1 without data_tombstones (ver_ts) WHERE value IS NULL as well: ver_ts changes at every
#       write, so on PostgreSQL 15 this index alone also keeps every overwrite non-HOT
#   bench/kv_parts/redesign/variant.sh PGPORT A|B1|B2
set -e
PG=$1; V=$2
RIX="CREATE INDEX IF NOT EXISTS data_origin_chg_xid ON kv.data USING btree (origin, chg_xid, ns, key)"
TIX="CREATE INDEX IF NOT EXISTS data_tombstones ON kv.data USING btree (ver_ts) WHERE (value IS NULL)"
case $V in
A)  SQL="$RIX; $TIX;" ;;
B1) SQL="DROP INDEX IF EXISTS kv.data_origin_chg_xid; $TIX;" ;;
B2) SQL="DROP INDEX IF EXISTS kv.data_origin_chg_xid; DROP INDEX IF EXISTS kv.data_tombstones;" ;;
*) echo "variant A, B1 or B2" >&2; exit 2 ;;
esac
for db in kv_shard_0 kv_shard_1; do
	psql -X -q -h 127.0.0.1 -p "$PG" -U postgres -d "$db" -v ON_ERROR_STOP=1 \
		-c "SET search_path = kv, pg_catalog; $SQL" -c "VACUUM FULL ANALYZE kv.data" >/dev/null
	echo "$db: $(psql -X -h 127.0.0.1 -p "$PG" -U postgres -d "$db" -Atc \
		"SELECT string_agg(indexrelid::regclass::text, ' ' ORDER BY indexrelid::regclass::text) FROM pg_index WHERE indrelid = 'kv.data'::regclass")" >&2
done
