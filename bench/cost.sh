#!/usr/bin/env bash
# bench/cost.sh: what a pooler costs to run, tusk beside PgBouncer (issue 10), on a throwaway
# PostgreSQL 15 (pgbench scale 10). The PgBouncer is the current release, 1.25, when it is found
# or can be built from ../shared/peers (bench_pgbouncer_find in lib.sh; PGBOUNCER_125=BINARY),
# else Debian's 1.18; with 1.25, Debian's runs too (pgb-old). The table names both versions.
# Three rows:
#   cpu      pooler CPU (user + system, /proc/PID/stat) per pgbench -S transaction, 32 clients,
#            transaction pooling (pool size 32, tusk with 2 workers), TXNS transactions per client
#   idle     RSS growth per idle client: WARMUP clients, then IDLE_CLIENTS more that finished
#            login (bench/idle_clients.py), VmRSS before and after
#   start    VmRSS of a freshly started pooler once it listens
# Each round starts every pooler afresh (in an order that rotates with the round), measures
# start, idle, then cpu, and stops it; the table gives every run and the median of each row.
# Prints numbers only; asserts nothing. Stops everything it started.
# Env: TUSK_BIN (default build/tusk), PGBOUNCER_125 ("none": Debian's alone), PGBOUNCER
#      (Debian's, /usr/sbin/pgbouncer), ROUNDS (3),
#      TUSK_BEFORE_BIN (another tusk binary, e.g. main's, run alongside as "tusk-before" with
#      the same configuration: before/after figures from one run),
#      IDLE_CLIENTS (5000), TXNS (3000 per client: 96k in all), MODES (pgbench -M modes for the
#      cpu row, "simple"; e.g. "simple extended prepared"; set and empty: no cpu row),
#      EXTRA_POOLER_NAME + EXTRA_POOLER_CMD: one more pooler, a foreground command in which
#      @PORT@ (where it must listen), @PG_PORT@ (PostgreSQL, user postgres, trust, database
#      bench) and @DIR@ (a scratch directory) are substituted; it must serve database bench_t
#      in transaction mode. Example for Odyssey: an odyssey.conf template and
#      EXTRA_POOLER_CMD='odyssey @DIR@/odyssey.conf' after sed-ing it into @DIR@.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_NAME=cost
. bench/lib.sh
ROUNDS=${ROUNDS:-3}
IDLE_CLIENTS=${IDLE_CLIENTS:-5000}
TXNS=${TXNS:-3000}
MODES=${MODES-simple}
TUSK=${TUSK_BIN:-$PWD/build/tusk}
POOL=32

[ -x "$TUSK" ] || { echo "cost: $TUSK not built (make build)" >&2; exit 1; }
bench_pgbouncer_find

bench_dir tusk-cost
PG_PORT=$(free_port)
bench_poolers_init

# idle clients and their servers: both ends need descriptors
ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
if [ $((IDLE_CLIENTS + 200)) -gt "$NOFILE" ]; then
	echo "cost: IDLE_CLIENTS=$IDLE_CLIENTS needs more than the descriptor limit ($NOFILE)" >&2
	exit 1
fi

echo "cost: PostgreSQL on $PG_PORT; files in $DIR" >&2
bench_pg_init "$PG_PORT" "max_connections = 200
shared_buffers = 128MB
synchronous_commit = off"
bench_pg_start "$PG_PORT" 10

POOLERS=(tusk pgbouncer)
[ -n "$PGB_OLD" ] && POOLERS+=(pgb-old)
[ -n "${TUSK_BEFORE_BIN:-}" ] && POOLERS+=(tusk-before)
[ -n "${EXTRA_POOLER_CMD:-}" ] && POOLERS+=("${EXTRA_POOLER_NAME:-extra}")
for p in "${POOLERS[@]}"; do PORT[$p]=$(free_port); done

for p in pgbouncer ${PGB_OLD:+pgb-old}; do
	bench_pgbouncer_ini "${PORT[$p]}" $((NOFILE - 100)) \
		"bench_t = host=127.0.0.1 port=$PG_PORT dbname=bench pool_mode=transaction pool_size=$POOL" "" "$p"
done
for t in tusk ${TUSK_BEFORE_BIN:+tusk-before}; do
	{
		bench_tusk_txn_yaml "${PORT[$t]}" "$PG_PORT" "$POOL"
		echo "max_client_connections: $((NOFILE - 100))"
	} >"$DIR/$t.yaml"
done

start_pooler() { # NAME: starts it, sets PID[NAME], waits until it listens
	case $1 in
	tusk)
		setsid "$TUSK" -c "$DIR/tusk.yaml" 2>>"$DIR/tusk.log" &
		PID[tusk]=$!
		;;
	tusk-before)
		setsid "$TUSK_BEFORE_BIN" -c "$DIR/tusk-before.yaml" 2>>"$DIR/tusk-before.log" &
		PID[tusk-before]=$!
		;;
	pgbouncer | pgb-old)
		local bin=$PGB_REF
		[ "$1" = pgb-old ] && bin=$PGB_OLD
		bench_pgbouncer_start "$NOFILE" "$1" "$bin"
		for _ in $(seq 1 50); do [ -s "$DIR/$1.pid" ] && break; sleep 0.1; done
		PID[$1]=$(cat "$DIR/$1.pid")
		;;
	*)
		local cmd=${EXTRA_POOLER_CMD//@PORT@/${PORT[$1]}}
		cmd=${cmd//@PG_PORT@/$PG_PORT}
		cmd=${cmd//@DIR@/$DIR}
		setsid bash -c "exec $cmd" >>"$DIR/extra.log" 2>&1 &
		PID[$1]=$!
		;;
	esac
	wait_port "${PORT[$1]}"
}
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
median() { bench_median; }

declare -A RES=()
ROWS=()
for m in $MODES; do ROWS+=("cpu-$m"); done
ROWS+=(idle start)
np=${#POOLERS[@]}
printf '%-6s %-10s %-14s %12s\n' round pooler row value
for round in $(seq 1 "$ROUNDS"); do
	for i in $(seq 0 $((np - 1))); do
		p=${POOLERS[$(((i + round - 1) % np))]}
		start_pooler "$p"
		sleep 1
		v=$(awk -v k="$(rss_kb "${PID[$p]}")" 'BEGIN {printf "%.1f", k / 1024}')
		RES[$p,start]="${RES[$p,start]:-} $v"
		printf '%-6s %-10s %-14s %12s\n' "$round" "$p" "start (MB)" "$v"
		if out=$(/usr/bin/python3 bench/idle_clients.py --pid "${PID[$p]}" --port "${PORT[$p]}" \
			--database bench_t -n "$IDLE_CLIENTS" 2>"$DIR/idle.err"); then
			read -r _ _ _ v <<<"$out"
		else
			echo "cost: $p idle clients: $(tail -n1 "$DIR/idle.err")" >&2
			v=failed
		fi
		RES[$p,idle]="${RES[$p,idle]:-} $v"
		printf '%-6s %-10s %-14s %12s\n' "$round" "$p" "idle (B/cl)" "$v"
		# the idle clients are gone; let the pooler notice before the pgbench run
		sleep 1
		for m in $MODES; do
			v=$(bench_pooler_cpu "$p" "$m")
			RES[$p,cpu-$m]="${RES[$p,cpu-$m]:-} $v"
			printf '%-6s %-10s %-14s %12s\n' "$round" "$p" "cpu-$m (µs)" "$v"
		done
		bench_stop_pooler "$p"
	done
done

echo
echo "== medians of $ROUNDS rounds (tusk: $("$TUSK" --version 2>/dev/null | head -n1 || echo "$TUSK"); pgbouncer: PgBouncer $PGB_REF_VERSION${PGB_OLD:+; pgb-old: PgBouncer $PGB_OLD_VERSION})"
printf '%-62s' figure
for p in "${POOLERS[@]}"; do printf ' %12s' "$p"; done
printf ' %12s\n' tusk/pgb
for r in "${ROWS[@]}"; do
	case $r in
	cpu-*) label="pooler CPU per pgbench -S -M ${r#cpu-} txn (32 clients), µs" ;;
	idle) label="RSS growth per idle client ($IDLE_CLIENTS clients), bytes" ;;
	start) label="RSS at start, MB" ;;
	esac
	printf '%-62s' "$label"
	for p in "${POOLERS[@]}"; do printf ' %12s' "$(median <<<"${RES[$p,$r]}")"; done
	printf ' %12s\n' "$(bench_ratio "$(median <<<"${RES[tusk,$r]}")" "$(median <<<"${RES[pgbouncer,$r]}")")"
done
