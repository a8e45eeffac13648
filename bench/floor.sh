#!/usr/bin/env bash
# bench/floor.sh: CPU per transaction of the poolers against the floor under them (issue 10).
# bench/floor.c is the least any proxy that moves bytes through sockets can do per
# transaction (one thread, epoll, read and write, a PostgreSQL connection per client, nothing
# else). Beside it, in one run and alternated: Debian's PgBouncer (transaction pool of 32),
# tusk with 2 workers and tusk with 1 worker (same pool). Each runs pgbench -S, 32 clients,
# TXNS transactions per client per mode; the pooler's user + system CPU (/proc/PID/stat) is
# divided by the transactions. Prints every run, the medians and their ratios to PgBouncer's.
# Prints numbers only; asserts nothing. Stops everything it started.
# Env: TUSK_BIN (build/tusk), ROUNDS (3), TXNS (2000), MODES ("simple extended prepared").
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_NAME=floor
. bench/lib.sh
ROUNDS=${ROUNDS:-3}
TXNS=${TXNS:-2000}
MODES=${MODES:-simple extended prepared}
TUSK=${TUSK_BIN:-$PWD/build/tusk}
POOL=32
[ -x "$TUSK" ] || { echo "floor: $TUSK not built (make build)" >&2; exit 1; }

bench_dir tusk-floor
PG_PORT=$(free_port)
bench_poolers_init

cc -O2 -o "$DIR/floor" bench/floor.c
bench_pg_init "$PG_PORT" "max_connections = 200
shared_buffers = 128MB
synchronous_commit = off"
bench_pg_start "$PG_PORT" 10

TARGETS=(floor pgbouncer tusk tusk-1w)
for t in "${TARGETS[@]}"; do PORT[$t]=$(free_port); done
bench_pgbouncer_ini "${PORT[pgbouncer]}" 1000 \
	"bench_t = host=127.0.0.1 port=$PG_PORT dbname=bench pool_mode=transaction pool_size=$POOL"
for t in tusk tusk-1w; do
	w=2
	[ "$t" = tusk-1w ] && w=1
	bench_tusk_txn_yaml "${PORT[$t]}" "$PG_PORT" "$POOL" "$w" >"$DIR/$t.yaml"
done

start_one() {
	case $1 in
	floor)
		setsid "$DIR/floor" "${PORT[floor]}" "$PG_PORT" bench 2>>"$DIR/floor.log" &
		PID[floor]=$!
		;;
	pgbouncer)
		bench_pgbouncer_start 1000
		for _ in $(seq 1 50); do [ -s "$DIR/pgbouncer.pid" ] && break; sleep 0.1; done
		PID[pgbouncer]=$(cat "$DIR/pgbouncer.pid")
		;;
	tusk | tusk-1w)
		setsid "$TUSK" -c "$DIR/$1.yaml" 2>>"$DIR/$1.log" &
		PID[$1]=$!
		;;
	esac
	wait_port "${PORT[$1]}"
}
median() { bench_median; }
ratio() { bench_ratio "$@"; }

echo "floor: PostgreSQL on $PG_PORT; files in $DIR" >&2
declare -A RES=()
nt=${#TARGETS[@]}
printf '%-6s %-10s %-10s %10s\n' round target mode "cpu µs/txn"
for round in $(seq 1 "$ROUNDS"); do
	for i in $(seq 0 $((nt - 1))); do
		t=${TARGETS[$(((i + round - 1) % nt))]}
		start_one "$t"
		for m in $MODES; do
			v=$(bench_pooler_cpu "$t" "$m")
			RES[$t,$m]="${RES[$t,$m]:-} $v"
			printf '%-6s %-10s %-10s %10s\n' "$round" "$t" "$m" "$v"
		done
		bench_stop_pooler "$t"
	done
done
echo
echo "== medians of $ROUNDS rounds, pooler CPU µs per pgbench -S transaction (32 clients), and / PgBouncer"
printf '%-10s' mode
for t in "${TARGETS[@]}"; do printf ' %10s %6s' "$t" "/pgb"; done
echo
for m in $MODES; do
	b=$(median <<<"${RES[pgbouncer,$m]}")
	printf '%-10s' "$m"
	for t in "${TARGETS[@]}"; do
		v=$(median <<<"${RES[$t,$m]}")
		printf ' %10s %6s' "$v" "$(ratio "$v" "$b")"
	done
	echo
done
