#!/usr/bin/env bash
# bench/compare.sh [SECONDS]: pgbench -S direct vs PgBouncer vs tusk on a throwaway PostgreSQL 15
# (scale 10). The reference PgBouncer is the current release, 1.25, when it is found or can be
# built from ../shared/peers (bench_pgbouncer_find in lib.sh; PGBOUNCER_125=BINARY names it),
# else Debian's 1.18; with 1.25 the Debian one runs as well (target pgb-old), and every table
# says which versions ran. Scenarios:
#   session      -M simple,   32 clients, session pooling
#   txn-simple   -M simple,   32 clients, transaction pooling (20 servers)
#   txn-extended -M extended, 32 clients, transaction pooling
#   txn-prepared -M prepared, 32 clients, transaction pooling (PgBouncer 1.18 cannot; 1.25 can:
#                max_prepared_statements, 200 by default)
#   txn-1000     -M simple, 1000 clients, transaction pooling (direct: more than max_connections)
#   tls-txn      -M simple,   32 clients, transaction pooling, clients on TLS (sslmode=require)
#   tls-bulk     time to fetch a 100 MB result with psql, plaintext and TLS, through each target
# TLS is between the client and the first hop only (the poolers talk plaintext to PostgreSQL).
# Each scenario alternates the three targets for ROUNDS rounds (these machines are noisy), then
# prints tps per run, the median per target and its ratio to direct (or to PgBouncer where direct
# cannot run), and each pooler's CPU time per transaction (user + system of its process, read
# from /proc around each run: less sensitive to a busy machine than tps). Prints numbers only;
# asserts nothing. Stops everything it started.
# Env: TUSK_BIN (default build/tusk), ROUNDS (3), SCENARIOS (space-separated subset of the above),
# PGBOUNCER_125 ("none": Debian's alone), PGBOUNCER (Debian's, /usr/sbin/pgbouncer),
# CPU_PART=user|sys: count only the poolers' user or system time as "cpu" (default both),
# TUSK_BASE_BIN: a second tusk binary (e.g. built from the commit before a change), run as target
# "base" with the same configuration on its own port, alternated with the others in every round
# of the pgbench scenarios; each summary then adds tusk's ratio to it (before/after, same run).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
DURATION=${1:-10}
ROUNDS=${ROUNDS:-3}
SCENARIOS=${SCENARIOS:-session txn-simple txn-extended txn-prepared txn-1000 tls-txn tls-bulk}
TXN_POOL=20
TUSK=${TUSK_BIN:-$PWD/build/tusk}

[ -x "$TUSK" ] || { echo "bench: $TUSK not built (make build)" >&2; exit 1; }
bench_pgbouncer_find

bench_dir tusk-bench
PG_PORT=$(free_port)
BOUNCER_PORT=$(free_port)
OLD_PORT=$(free_port)
TUSK_PORT=$(free_port)
tusk_pid=
BASE=${TUSK_BASE_BIN:-}
BASE_PORT=$(free_port)
base_pid=
[ -z "$BASE" ] || [ -x "$BASE" ] || { echo "bench: TUSK_BASE_BIN=$BASE is not executable" >&2; exit 1; }

cleanup() {
	set +e
	if [ -n "$tusk_pid" ]; then kill -TERM "$tusk_pid" 2>/dev/null; wait "$tusk_pid" 2>/dev/null; fi
	if [ -n "$base_pid" ]; then kill -TERM "$base_pid" 2>/dev/null; wait "$base_pid" 2>/dev/null; fi
	for f in "$DIR/pgbouncer.pid" "$DIR/pgb-old.pid"; do
		[ -f "$f" ] || continue
		pid=$(cat "$f")
		kill -TERM "$pid" 2>/dev/null
		for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	done
	bench_pg_stop
	rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "bench: PostgreSQL on $PG_PORT, PgBouncer on $BOUNCER_PORT, tusk on $TUSK_PORT; files in $DIR" >&2
# One self-signed certificate for PostgreSQL, PgBouncer and tusk alike.
bench_pg_init_tls "$PG_PORT" "shared_buffers = 128MB
synchronous_commit = off"
# 1000 clients need 1000 sockets in pgbench and in each pooler, plus their servers.
ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)"
bench_pg_start "$PG_PORT" 10

# One PgBouncer (two: the reference and Debian's older one), one database name per pooling mode.
pgb_start() { # NAME PORT BINARY
	bench_pgbouncer_ini "$2" 2000 \
		"bench_s = host=127.0.0.1 port=$PG_PORT dbname=bench pool_mode=session pool_size=40
bench_t = host=127.0.0.1 port=$PG_PORT dbname=bench pool_mode=transaction pool_size=$TXN_POOL" \
		"client_tls_sslmode = allow
client_tls_cert_file = $DIR/server.crt
client_tls_key_file = $DIR/server.key
server_tls_sslmode = disable" "$1"
	bench_pgbouncer_start 8192 "$1" "$3"
	wait_port "$2"
}
pgb_start pgbouncer "$BOUNCER_PORT" "$PGB_REF"
[ -z "$PGB_OLD" ] || pgb_start pgb-old "$OLD_PORT" "$PGB_OLD"

{
	bench_tusk_yaml "$TUSK_PORT" "$PG_PORT" "    tls: allow
    tls_cert_file: $DIR/server.crt
    tls_key_file: $DIR/server.key"
	cat <<YAML
pools:
  - database: bench_s
    server_database: bench
    mode: session
    size: 40
  - database: bench_t
    server_database: bench
    mode: transaction
    size: $TXN_POOL
max_client_connections: 5000
YAML
} >"$DIR/tusk.yaml"
setsid "$TUSK" -c "$DIR/tusk.yaml" 2>"$DIR/tusk.log" &
tusk_pid=$!
wait_port "$TUSK_PORT"

declare -A PORT=([direct]=$PG_PORT [pgbouncer]=$BOUNCER_PORT [tusk]=$TUSK_PORT)
TARGETS=(direct pgbouncer tusk)
if [ -n "$PGB_OLD" ]; then
	PORT[pgb-old]=$OLD_PORT
	TARGETS+=(pgb-old)
fi
if [ -n "$BASE" ]; then
	sed "s/port: $TUSK_PORT\$/port: $BASE_PORT/" "$DIR/tusk.yaml" >"$DIR/base.yaml"
	setsid "$BASE" -c "$DIR/base.yaml" 2>"$DIR/base.log" &
	base_pid=$!
	wait_port "$BASE_PORT"
	PORT[base]=$BASE_PORT
	TARGETS+=(base)
fi
NT=${#TARGETS[@]}

CLK_TCK=$(getconf CLK_TCK)
# CPU time (user + system, clock ticks) a pooler process has used so far; 0 for direct.
cpu_ticks() {
	local pid=
	case $1 in
	tusk) pid=$tusk_pid ;;
	base) pid=$base_pid ;;
	pgbouncer | pgb-old) pid=$(cat "$DIR/$1.pid") ;;
	*) echo 0; return ;;
	esac
	case ${CPU_PART:-all} in
	user) awk '{print $14}' "/proc/$pid/stat" ;;
	sys) awk '{print $15}' "/proc/$pid/stat" ;;
	*) awk '{print $14 + $15}' "/proc/$pid/stat" ;;
	esac
}

# run_one TARGET DBNAME CLIENTS ARGS...: prints "tps cpu" (cpu: the pooler's CPU µs per
# transaction, "-" for direct), or "failed -"
run_one() {
	local target=$1 db=$2 clients=$3 out tps= n= c0 c1 cpu=-
	shift 3
	[ "$target" = direct ] && db=bench
	c0=$(cpu_ticks "$target")
	# A target that stops answering must not hang the whole run.
	if out=$(PGSSLMODE=${SSLMODE:-disable} timeout $((DURATION + 60)) "$PG_BIN/pgbench" -n -S -c "$clients" -j 2 -T "$DURATION" "$@" \
		-h 127.0.0.1 -p "${PORT[$target]}" -U postgres "$db" 2>&1); then
		tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' <<<"$out")
		n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
	fi
	c1=$(cpu_ticks "$target")
	if [ -z "$tps" ]; then
		echo "bench: $target failed: $(grep -m1 -iE 'error|fatal|abort' <<<"$out" | cut -c1-160)" >&2
		echo "failed -"
		return
	fi
	if [ "$target" != direct ] && [ -n "$n" ] && [ "$n" -gt 0 ]; then
		cpu=$(awk -v t=$((c1 - c0)) -v hz="$CLK_TCK" -v n="$n" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}')
	fi
	echo "$tps $cpu"
}

median() { tr ' ' '\n' | { grep -E '^[0-9.]+$' || true; } | sort -g | awk '{a[NR]=$1} END {if (NR==0) print "n/a"; else if (NR%2) print a[(NR+1)/2]; else printf "%.6f\n", (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "n/a" || b == "n/a" || b == 0) print "n/a"; else printf "%.2f", a / b}'; }
# paired "A-LIST" "B-LIST": the geometric mean of the per-round ratios a[i] / b[i] (the two
# targets ran next to each other in each round), over the rounds where both have a number
paired() {
	awk -v a="$1" -v b="$2" 'BEGIN {n = split(a, x, " "); split(b, y, " "); s = 0; k = 0
		for (i = 1; i <= n; i++) if (x[i] ~ /^[0-9.]+$/ && y[i] ~ /^[0-9.]+$/ && x[i] > 0 && y[i] > 0) {s += log(x[i] / y[i]); k++}
		if (k == 0) print "n/a"; else printf "%.2f", exp(s / k)}'
}

SUMMARY=()
scenario() { # NAME DBNAME CLIENTS PGBENCH-ARGS...
	local name=$1 db=$2 clients=$3
	shift 3
	declare -A res=() cpu=()
	echo
	echo "== $name: pgbench -S -c $clients -j 2 -T $DURATION $*, scale 10, $ROUNDS rounds; pgbouncer is $PGB_REF_VERSION${PGB_OLD:+, pgb-old $PGB_OLD_VERSION}"
	printf '%-6s %-10s %12s %14s\n' round target tps "cpu µs/txn"
	for round in $(seq 1 "$ROUNDS"); do
		# rotate the order each round so no target always runs first (or on a warmer cache)
		for i in $(seq 0 $((NT - 1))); do
			local target=${TARGETS[$(((i + round - 1) % NT))]}
			local tps c
			read -r tps c < <(run_one "$target" "$db" "$clients" "$@")
			res[$target]="${res[$target]:-} $tps"
			cpu[$target]="${cpu[$target]:-} $c"
			printf '%-6s %-10s %12s %14s\n' "$round" "$target" "$tps" "$c"
		done
	done
	local d b t bc tc
	d=$(median <<<"${res[direct]}")
	b=$(median <<<"${res[pgbouncer]}")
	t=$(median <<<"${res[tusk]}")
	bc=$(median <<<"${cpu[pgbouncer]}")
	tc=$(median <<<"${cpu[tusk]}")
	printf '%-10s %12s %10s %12s %14s\n' target "median tps" "vs direct" "vs pgbouncer" "cpu µs/txn"
	printf '%-10s %12s %10s %12s %14s\n' direct "$d" 1.00 "$(ratio "$d" "$b")" -
	printf '%-10s %12s %10s %12s %14s\n' pgbouncer "$b" "$(ratio "$b" "$d")" 1.00 "$bc"
	printf '%-10s %12s %10s %12s %14s\n' tusk "$t" "$(ratio "$t" "$d")" "$(ratio "$t" "$b")" "$tc"
	local ot= otc=
	if [ -n "$PGB_OLD" ]; then
		ot=$(median <<<"${res[pgb-old]}")
		otc=$(median <<<"${cpu[pgb-old]}")
		printf '%-10s %12s %10s %12s %14s   tusk/pgb-old: tps %s, cpu %s\n' pgb-old "$ot" "$(ratio "$ot" "$d")" \
			"$(ratio "$ot" "$b")" "$otc" "$(ratio "$t" "$ot")" "$(ratio "$tc" "$otc")"
	fi
	if [ -n "$BASE" ]; then
		local bt btc
		bt=$(median <<<"${res[base]}")
		btc=$(median <<<"${cpu[base]}")
		printf '%-10s %12s %10s %12s %14s   tusk/base: tps %s, cpu %s\n' base "$bt" "$(ratio "$bt" "$d")" \
			"$(ratio "$bt" "$b")" "$btc" "$(ratio "$t" "$bt")" "$(ratio "$tc" "$btc")"
	fi
	printf 'paired (geometric mean of the %s per-round ratios): tusk/pgbouncer tps %s, cpu %s' "$ROUNDS" \
		"$(paired "${res[tusk]}" "${res[pgbouncer]}")" "$(paired "${cpu[tusk]}" "${cpu[pgbouncer]}")"
	[ -n "$PGB_OLD" ] && printf '; tusk/pgb-old tps %s, cpu %s' "$(paired "${res[tusk]}" "${res[pgb-old]}")" \
		"$(paired "${cpu[tusk]}" "${cpu[pgb-old]}")"
	[ -n "$BASE" ] && printf '; tusk/base tps %s, cpu %s' "$(paired "${res[tusk]}" "${res[base]}")" \
		"$(paired "${cpu[tusk]}" "${cpu[base]}")"
	echo
	SUMMARY+=("$(printf '%-13s %10s %10s %10s %10s %12s %12s %10s %10s %10s' "$name" "$d" "$b" "$t" "$(ratio "$t" "$d")" \
		"$(ratio "$t" "$b")" "$(ratio "$tc" "$bc")" "${ot:--}" "$(ratio "$t" "${ot:-n/a}")" "$(ratio "$tc" "${otc:-n/a}")")")
}

# bulk TARGET SSLMODE: seconds for psql to fetch a 100 MB result (100,000 rows of 1 kB)
bulk_one() {
	local target=$1 mode=$2 db=bench_s t0 t1
	[ "$target" = direct ] && db=bench
	t0=$(date +%s.%N)
	if ! PGSSLMODE=$mode timeout 300 "$PG_BIN/psql" -X -At -o /dev/null -h 127.0.0.1 -p "${PORT[$target]}" \
		-U postgres -d "$db" -c "select repeat('x', 1000) from generate_series(1, 100000)" 2>"$DIR/bulk.err"; then
		echo "bench: bulk $target $mode failed: $(head -c 160 "$DIR/bulk.err")" >&2
		echo failed
		return
	fi
	t1=$(date +%s.%N)
	awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f\n", b - a}'
}

bulk() {
	declare -A res=()
	echo
	echo "== tls-bulk: psql fetching 100 MB (100000 rows x 1 kB), plaintext vs TLS, $((ROUNDS * 2)) rounds, seconds"
	printf '%-6s %-10s %-8s %10s\n' round target mode seconds
	for round in $(seq 1 $((ROUNDS * 2))); do
		for i in 0 1 2; do
			local target=${TARGETS[$(((i + round - 1) % 3))]}
			for mode in disable require; do
				local s
				s=$(bulk_one "$target" "$mode")
				res[$target-$mode]="${res[$target-$mode]:-} $s"
				printf '%-6s %-10s %-8s %10s\n' "$round" "$target" "$mode" "$s"
			done
		done
	done
	printf '%-10s %12s %12s %10s\n' target "plain (s)" "TLS (s)" "TLS/plain"
	local tt=
	for target in direct pgbouncer tusk; do # the first three: bulk runs no others
		local p t
		p=$(median <<<"${res[$target-disable]}")
		t=$(median <<<"${res[$target-require]}")
		printf '%-10s %12s %12s %10s\n' "$target" "$p" "$t" "$(ratio "$t" "$p")"
	done
	local bp bt tp
	bt=$(median <<<"${res[pgbouncer-require]}")
	tt=$(median <<<"${res[tusk-require]}")
	tp=$(median <<<"${res[tusk-disable]}")
	echo "tusk TLS / tusk plaintext: $(ratio "$tt" "$tp")   tusk TLS / PgBouncer TLS: $(ratio "$tt" "$bt")"
	SUMMARY+=("$(printf '%-13s %10s %10s %10s %10s %12s' "tls-bulk(s)" "$(median <<<"${res[direct-require]}")" "$bt" "$tt" "$(ratio "$tt" "$tp")" "$(ratio "$tt" "$bt")")   (tusk/dir column: tusk TLS / tusk plaintext)")
}

for sc in $SCENARIOS; do
	case $sc in
	session) scenario session bench_s 32 -M simple ;;
	txn-simple) scenario txn-simple bench_t 32 -M simple ;;
	txn-extended) scenario txn-extended bench_t 32 -M extended ;;
	txn-prepared) scenario txn-prepared bench_t 32 -M prepared ;;
	txn-1000) scenario txn-1000 bench_t 1000 -M simple ;;
	tls-txn) SSLMODE=require scenario tls-txn bench_t 32 -M simple ;;
	tls-bulk) bulk ;;
	*) echo "bench: unknown scenario $sc" >&2 ;;
	esac
done

echo
echo "== summary (median tps; ratios of tusk); pgbouncer: PgBouncer $PGB_REF_VERSION${PGB_OLD:+, pgb-old: PgBouncer $PGB_OLD_VERSION}"
printf '%-13s %10s %10s %10s %10s %12s %12s %10s %10s %10s\n' scenario direct pgbouncer tusk "tusk/dir" "tusk/pgb" "cpu t/pgb" \
	pgb-old "tusk/old" "cpu t/old"
printf '%s\n' "${SUMMARY[@]}"
