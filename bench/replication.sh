#!/usr/bin/env bash
# Replication connections (docs/pooling.md, "Replication connections"): pg_basebackup's stream
# (one physical replication connection, BASE_BACKUP as a tar on stdout, -X none) directly,
# through PgBouncer (1.25, which passes replication connections since 1.23) and through tusk,
# alternated in each round: MB/s each, and the pooler's CPU per GB streamed.
# Usage: bench/replication.sh [ROUNDS]   env: SCALE (pgbench scale of the database, 20),
# TUSK_BIN (build/tusk), PGBOUNCER_125. Prints numbers; asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_NAME=replication
# shellcheck source=bench/lib.sh
. bench/lib.sh
ROUNDS=${1:-5}
SCALE=${SCALE:-20}
TUSK_BIN=${TUSK_BIN:-build/tusk}
bench_pgbouncer_find

bench_dir tusk-bench-replication
bench_poolers_init
PG_PORT=$(free_port)
bench_pg_init "$PG_PORT" "max_wal_senders = 10"
bench_pg_start "$PG_PORT" "$SCALE"
PORT[direct]=$PG_PORT

PORT[pgbouncer]=$(free_port)
bench_pgbouncer_ini "${PORT[pgbouncer]}" 100 "* = host=127.0.0.1 port=$PG_PORT"
bench_pgbouncer_start 1024 pgbouncer "$PGB_REF"
wait_port "${PORT[pgbouncer]}"
PID[pgbouncer]=$(cat "$DIR/pgbouncer.pid")

PORT[tusk]=$(free_port)
{
	bench_tusk_yaml "${PORT[tusk]}" "$PG_PORT"
	cat <<YAML
pools:
  - database: "*"
    mode: session
    size: 4
YAML
} >"$DIR/tusk.yaml"
setsid "$TUSK_BIN" -c "$DIR/tusk.yaml" 2>"$DIR/tusk.log" &
PID[tusk]=$!
wait_port "${PORT[tusk]}"

# one run: prints "MB/s cpu-ms-per-GB" (the pooler's CPU; 0 for direct)
one() {
	local target=$1 c0=0 c1=0 t0 t1 bytes
	[ "$target" != direct ] && c0=$(bench_cpu_ticks "${PID[$target]}")
	t0=$(date +%s.%N)
	bytes=$(PGSSLMODE=disable "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "${PORT[$target]}" -U postgres -D - -Ft \
		-X none -c fast 2>/dev/null | wc -c)
	t1=$(date +%s.%N)
	[ "$target" != direct ] && c1=$(bench_cpu_ticks "${PID[$target]}")
	awk -v b="$bytes" -v t="$(awk -v a="$t0" -v z="$t1" 'BEGIN {print z - a}')" -v c=$((c1 - c0)) \
		-v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f %.1f\n", b / 1e6 / t, c * 1000 / hz / (b / 1e9)}'
}

declare -A RATE=() CPU=()
targets=(direct pgbouncer tusk)
one direct >/dev/null # warm the cache
for r in $(seq 1 "$ROUNDS"); do
	# rotate the order each round
	for i in 0 1 2; do
		tg=${targets[$(((i + r) % 3))]}
		read -r mbs cpu < <(one "$tg")
		RATE[$tg]+="$mbs "
		CPU[$tg]+="$cpu "
		echo "round $r $tg: $mbs MB/s, $cpu ms CPU/GB" >&2
	done
done
size=$(PGSSLMODE=disable "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -Atc \
	"select pg_size_pretty(sum(pg_database_size(oid))) from pg_database" postgres)
echo "== pg_basebackup -Ft -X none to stdout, cluster $size, $ROUNDS rounds (medians); PgBouncer $PGB_REF_VERSION"
printf '%-10s %10s %10s %16s\n' target "MB/s" "vs direct" "CPU ms per GB"
d=$(bench_median <<<"${RATE[direct]}")
for tg in direct pgbouncer tusk; do
	m=$(bench_median <<<"${RATE[$tg]}")
	printf '%-10s %10s %10s %16s\n' "$tg" "$m" "$(bench_ratio "$m" "$d")" "$(bench_median <<<"${CPU[$tg]}")"
done
echo "tusk/pgbouncer: rate $(bench_ratio "$(bench_median <<<"${RATE[tusk]}")" "$(bench_median <<<"${RATE[pgbouncer]}")"), CPU per GB $(bench_ratio "$(bench_median <<<"${CPU[tusk]}")" "$(bench_median <<<"${CPU[pgbouncer]}")")"
