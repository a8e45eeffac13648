#!/usr/bin/env bash
# bench/active.sh [SECONDS]: how many PostgreSQL backends are active at once behind each pooler,
# and whether fewer is faster (issue 28). pgbench -M simple, 32 clients, transaction pooling,
# scale 10, on a throwaway PostgreSQL 15, through: direct; PgBouncer (the reference, see
# bench_pgbouncer_find in lib.sh) with pool_size 32 and 8; Debian's PgBouncer when it is not the
# reference; tusk (2 workers) with pools of POOLS servers (default "32 8 4"), and with a pool of
# 32 under `active_limit: adaptive` (target tusk:a32, floor 2). WORKLOAD: "select" (default,
# pgbench -S) or "hot": each transaction adds 1 to one of HOT_ROWS rows (default 1) picked at
# random, so that transactions queue on row locks in PostgreSQL (more backends at once buy
# nothing there). The targets
# alternate, order rotated each round (ROUNDS, 3). During each run a psql session samples
# pg_stat_activity every 100ms: client backends in state 'active' (not itself). Prints per run
# tps, the pooler's CPU µs per transaction, mean and max active backends; then the medians and
# the ratios to the reference PgBouncer at pool 32. Prints numbers only; asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_NAME=active
. bench/lib.sh
DURATION=${1:-10}
ROUNDS=${ROUNDS:-3}
POOLS=${POOLS:-32 8 4}
WORKLOAD=${WORKLOAD:-select}
HOT_ROWS=${HOT_ROWS:-1}
TUSK=${TUSK_BIN:-$PWD/build/tusk}
[ -x "$TUSK" ] || { echo "active: $TUSK not built (make build)" >&2; exit 1; }
bench_pgbouncer_find

bench_dir tusk-active
PG_PORT=$(free_port)
bench_poolers_init
bench_pg_init "$PG_PORT" "max_connections = 200
shared_buffers = 128MB
synchronous_commit = off"
bench_pg_start "$PG_PORT" 10

dbs="bench_32 = host=127.0.0.1 port=$PG_PORT dbname=bench pool_mode=transaction pool_size=32
bench_8 = host=127.0.0.1 port=$PG_PORT dbname=bench pool_mode=transaction pool_size=8"
POOLERS=(pgbouncer tusk)
[ -n "$PGB_OLD" ] && POOLERS+=(pgb-old)
for p in "${POOLERS[@]}"; do PORT[$p]=$(free_port); done
bench_pgbouncer_ini "${PORT[pgbouncer]}" 1000 "$dbs" "" pgbouncer
bench_pgbouncer_start 4096 pgbouncer "$PGB_REF"
[ -z "$PGB_OLD" ] || { bench_pgbouncer_ini "${PORT[pgb-old]}" 1000 "$dbs" "" pgb-old; bench_pgbouncer_start 4096 pgb-old "$PGB_OLD"; }
{
	bench_tusk_yaml "${PORT[tusk]}" "$PG_PORT"
	echo "pools:"
	for n in $POOLS; do printf '  - database: bench_%s\n    server_database: bench\n    mode: transaction\n    size: %s\n' "$n" "$n"; done
	printf '  - database: bench_a32\n    server_database: bench\n    mode: transaction\n    size: 32\n    active_limit: adaptive\n'
} >"$DIR/tusk.yaml"
case $WORKLOAD in
select) PGB_ARGS=(-S) ;;
hot)
	as_postgres "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres bench \
		-c "DROP TABLE IF EXISTS hot; CREATE TABLE hot (id int PRIMARY KEY, n bigint NOT NULL);
		    INSERT INTO hot SELECT g, 0 FROM generate_series(1, $HOT_ROWS) g"
	printf '\\set id random(1, %s)\nUPDATE hot SET n = n + 1 WHERE id = :id;\n' "$HOT_ROWS" >"$DIR/hot.sql"
	chmod 644 "$DIR/hot.sql"
	PGB_ARGS=(-f "$DIR/hot.sql") ;;
*) echo "active: WORKLOAD is select or hot" >&2; exit 2 ;;
esac
setsid "$TUSK" -c "$DIR/tusk.yaml" 2>"$DIR/tusk.log" &
PID[tusk]=$!
for p in "${POOLERS[@]}"; do wait_port "${PORT[$p]}"; done
for p in pgbouncer pgb-old; do [ -f "$DIR/$p.pid" ] && PID[$p]=$(cat "$DIR/$p.pid"); done
PORT[direct]=$PG_PORT

# target = pooler:pool
TARGETS=(direct pgbouncer:32 pgbouncer:8)
[ -n "$PGB_OLD" ] && TARGETS+=(pgb-old:32)
for n in $POOLS; do TARGETS+=("tusk:$n"); done
TARGETS+=(tusk:a32)
NT=${#TARGETS[@]}
TCK=$(getconf CLK_TCK)
declare -A TPS CPU MEAN MAX
# a first run warms PostgreSQL's caches (the first target would pay for them otherwise)
"$PG_BIN/pgbench" -n "${PGB_ARGS[@]}" -c 32 -j 2 -T 3 -h 127.0.0.1 -p "$PG_PORT" -U postgres bench >/dev/null 2>&1 || true
echo "# active.sh: workload $WORKLOAD$([ "$WORKLOAD" = hot ] && echo " ($HOT_ROWS rows)"), ${DURATION}s runs, $ROUNDS rounds, $(nproc) cores; pgbouncer: $PGB_REF_VERSION${PGB_OLD:+, pgb-old: $PGB_OLD_VERSION}; load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-6s %-14s %12s %12s %12s %10s\n' round target tps "cpu µs/txn" "active mean" "max"
for round in $(seq 1 "$ROUNDS"); do
	for i in $(seq 0 $((NT - 1))); do
		t=${TARGETS[$(((i + round - 1) % NT))]}
		p=${t%%:*}
		db=bench
		[ "$p" = direct ] || db=bench_${t#*:}
		: >"$DIR/samples"
		# one session samples: SELECT ... \watch prints one count per 100 ms
		printf "select count(*) from pg_stat_activity where state = 'active' and backend_type = 'client backend' and pid <> pg_backend_pid() \\\\watch 0.1\n" |
			timeout $((DURATION + 5)) "$PG_BIN/psql" -X -At -h 127.0.0.1 -p "$PG_PORT" -U postgres bench >"$DIR/samples" 2>/dev/null &
		sampler=$!
		c0=0
		[ "$p" = direct ] || c0=$(bench_cpu_ticks "${PID[$p]}")
		out=$(PGSSLMODE=disable "$PG_BIN/pgbench" -n "${PGB_ARGS[@]}" -M simple -c 32 -j 2 -T "$DURATION" -h 127.0.0.1 -p "${PORT[$p]}" \
			-U postgres "$db" 2>&1) || echo "active: $t failed: $(grep -m1 -iE 'error|fatal' <<<"$out" | cut -c1-160)" >&2
		c1=0
		[ "$p" = direct ] || c1=$(bench_cpu_ticks "${PID[$p]}")
		kill "$sampler" 2>/dev/null || true
		wait "$sampler" 2>/dev/null || true
		tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' <<<"$out")
		n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
		cpu=-
		[ "$p" = direct ] || [ -z "$n" ] || cpu=$(awk -v d=$((c1 - c0)) -v h="$TCK" -v n="$n" 'BEGIN {printf "%.1f", n ? d / h * 1e6 / n : 0}')
		read -r mean max < <(grep -E '^[0-9]+$' "$DIR/samples" | awk '{s += $1; if ($1 > m) m = $1} END {if (NR) printf "%.1f %d\n", s / NR, m; else print "n/a n/a"}')
		TPS[$t]="${TPS[$t]:-} ${tps:-failed}"
		CPU[$t]="${CPU[$t]:-} $cpu"
		MEAN[$t]="${MEAN[$t]:-} $mean"
		MAX[$t]="${MAX[$t]:-} $max"
		printf '%-6s %-14s %12s %12s %12s %10s\n' "$round" "$t" "${tps:-failed}" "$cpu" "$mean" "$max"
	done
done
echo
echo "== medians of $ROUNDS rounds (ratios to pgbouncer:32, PgBouncer $PGB_REF_VERSION)"
printf '%-14s %12s %8s %12s %8s %12s %10s\n' target tps ratio "cpu µs/txn" ratio "active mean" "max"
rt=$(bench_median <<<"${TPS[pgbouncer:32]}")
rc=$(bench_median <<<"${CPU[pgbouncer:32]}")
for t in "${TARGETS[@]}"; do
	mt=$(bench_median <<<"${TPS[$t]}")
	mc=$(bench_median <<<"${CPU[$t]}")
	printf '%-14s %12s %8s %12s %8s %12s %10s\n' "$t" "$mt" "$(bench_ratio "$mt" "$rt")" "$mc" "$(bench_ratio "$mc" "$rc")" \
		"$(bench_median <<<"${MEAN[$t]}")" "$(bench_median <<<"${MAX[$t]}")"
done
