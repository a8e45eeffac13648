#!/bin/bash
# One statement's cost directly on a shard, as tusk sends it (stmt.c; docs/kv.md, "Speed",
# tenth step; issue 25). After zone.py (its PostgreSQL's port): sets kv_shard_0's kv.identity to
# one shard (every key passes the shard check), fills keys 0..3999 in kv.data and public.plain,
# writes the variants tusk runs today from src/kv/router.c (fast_put: kv_put_fast_sql as
# kv_router; live_get: get_live_sql as kv_client), and runs stmt.c on them and the VARIANTs
# given (files of stmt/, or paths), alternated.
#   bench/kv_parts/stmt.sh PGPORT SECONDS ROUNDS VARIANT...   e.g. ... 2 5 plain_put fast_put kv_put
set -e
export PGHOST=127.0.0.1 PGPORT=$1; T=$2; R=$3; shift 3
D=$(cd "$(dirname "$0")" && pwd); W=$(mktemp -d /tmp/kv-stmt.XXXXXX); trap 'rm -rf "$W"' EXIT
cc -std=c17 -D_GNU_SOURCE -O2 -o "$W/stmt" "$D/stmt.c" -I"$(pg_config --includedir)" -lpq
psql -X -q -U postgres -d kv_shard_0 >/dev/null <<'SQL'
UPDATE kv.identity SET nshards = 1, shard = 0;
CREATE TABLE IF NOT EXISTS public.plain (k text PRIMARY KEY, v jsonb);
GRANT ALL ON public.plain TO kv_client;
INSERT INTO public.plain SELECT g::text, '{"n": 1}' FROM generate_series(0, 3999) g ON CONFLICT DO NOTHING;
SELECT count(kv.put('default', g::text, '{"n": 1}')) FROM generate_series(0, 3999) g;
SQL
CV=$(psql -X -U postgres -d kv_shard_0 -tAc "SELECT catalog_version FROM kv.identity")
sql_of() {  # the C string constant $1 of src/kv/router.c (macros expanded: KV_SHARD_SQL), as one line
	gcc -std=c17 -D_GNU_SOURCE -E -P -I"$D/../../src" -I"$D/../../include" -I"$(pg_config --includedir)" \
		"$D/../../src/kv/router.c" > "$W/router.i"
	python3 - "$W/router.i" "$1" <<'PY'
import re, sys
s = open(sys.argv[1]).read()
m = re.search(r'char %s\[\]\s*=(.*?);\n' % sys.argv[2], s, re.S)
print("".join(p.replace('\\"', '"') for p in re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(1))))
PY
}
printf 'user kv_router\npassword router-pw\nsql %s\nparam default\nparam %%k\nparam {"n": 1}\nparam NULL\nparam NULL\nparam NULL\nparam %s\n' \
	"$(sql_of kv_put_fast_sql)" "$CV" > "$W/fast_put"
printf 'user kv_client\nsql %s\nparam default\nparam %%k\n' "$(sql_of get_live_sql)" > "$W/live_get"
args=()
for v in "$@"; do
	if [ ! -f "$W/$v" ]; then  # a file of stmt/ or a path; CV: the shard's catalog version
		f=$v; [ -f "$D/stmt/$v" ] && f=$D/stmt/$v
		v=$(basename "$v"); sed "s/\bCV\b/$CV/g" "$f" > "$W/$v"
	fi
	args+=("$W/$v")
done
"$W/stmt" "host=127.0.0.1 port=$PGPORT dbname=kv_shard_0" "$T" "$R" "${args[@]}"
