#!/usr/bin/env bash
# bench/instructions.sh BIN [BIN...]: user-space instructions per relayed transaction of each
# tusk binary, counted by valgrind's callgrind: a figure the machine's load does not move, for
# before/after comparisons of tusk's own code (its kernel time, most of its CPU per transaction,
# is what bench/wakeups.sh counts). Per binary: tusk (one worker, so the count is one thread's
# and callgrind serialises nothing) under callgrind with instrumentation off, a warm-up
# pgbench, instrumentation on, `pgbench -n -S -M MODE -c CLIENTS -j 1 -t TXNS` through a
# transaction pool (POOL_MODE=session: a session pool) of CLIENTS, a dump; prints
# instructions (Ir) per transaction (tusk, libc,
# libev and every other library in its process) and, with TOP=N, the N functions that cost
# most. The same throwaway PostgreSQL 15 (pgbench scale 1) serves every binary. Asserts nothing.
# Env: MODE (simple; extended, prepared), POOL_MODE (transaction; session), CLIENTS (8), TXNS
# (1000 per client), TOP (0), PG_BIN,
# KEEP (a directory to keep the callgrind files in, as callgrind.<basename of BIN>.<MODE>).
# A BIN of "pgbouncer" counts the reference PgBouncer (1.25 when found, bench_pgbouncer_find;
# one thread) through a pool (POOL_MODE) of CLIENTS servers. It must run as postgres, whose
# callgrind vgdb cannot switch on from here, so it is counted whole twice, with and without
# the measured pgbench (the warm-up in both), and the difference is divided.
# Example: bench/instructions.sh /tmp/tusk-before build/tusk pgbouncer
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_NAME=instructions
# shellcheck source=bench/lib.sh
. bench/lib.sh

[ $# -ge 1 ] || { echo "usage: bench/instructions.sh BIN [BIN...]" >&2; exit 2; }
command -v valgrind >/dev/null && command -v callgrind_control >/dev/null ||
	{ echo "instructions: valgrind (callgrind) missing: apt-get install valgrind" >&2; exit 1; }
MODE=${MODE:-simple}
POOL_MODE=${POOL_MODE:-transaction}
case $POOL_MODE in
transaction) LABEL=$MODE ;;
session) LABEL=$MODE/session ;;
*) echo "instructions: POOL_MODE=$POOL_MODE: transaction or session" >&2; exit 2 ;;
esac
CLIENTS=${CLIENTS:-8}
TXNS=${TXNS:-1000}
TOP=${TOP:-0}

bench_dir tusk-instructions
PG_PORT=$(free_port)
pid=
cleanup() {
	set +e
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	bench_pg_stop
	rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bench_pg_init "$PG_PORT" "max_connections = $((CLIENTS + 20))"
bench_pg_start "$PG_PORT" 1

pgb() { # PORT PGBENCH-ARGS...
	local port=$1
	shift
	"$PG_BIN/pgbench" -n -S -M "$MODE" -c "$CLIENTS" -j 1 -h 127.0.0.1 -p "$port" -U postgres "$@" bench
}
# cg_total FILE: the instructions a callgrind dump counted in all.
cg_total() {
	callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ && !t {gsub(",", "", $1); t = $1} END {print t}'
}
for bin in "$@"; do
	[ "$bin" = pgbouncer ] && { bench_pgbouncer_find; break; }
done
# pgbouncer_ir TXNS: PgBouncer's instructions from its start to its exit, a warm-up and TXNS
# transactions per client between.
pgbouncer_ir() {
	local port f
	port=$(free_port)
	rm -f "$DIR"/cg.*
	bench_pgbouncer_ini "$port" 1000 \
		"bench = host=127.0.0.1 port=$PG_PORT dbname=bench pool_mode=$POOL_MODE pool_size=$CLIENTS"
	as_postgres setsid valgrind --tool=callgrind --callgrind-out-file="$DIR/cg.out" \
		"$PGB_REF" "$DIR/pgbouncer.ini" 2>"$DIR/pgbouncer.err" &
	pid=$!
	wait_port "$port" >/dev/null
	pgb "$port" -t 50 >/dev/null 2>&1
	[ "$1" -eq 0 ] || pgb "$port" -t "$1" >/dev/null 2>&1
	pkill -INT -u postgres -f -- "--callgrind-out-file=$DIR/cg.out"
	wait "$pid" 2>/dev/null || true
	pid=
	f=$DIR/cg.out
	[ -s "$f" ] || { echo "instructions: PgBouncer left no dump" >&2; cat "$DIR/pgbouncer.err" >&2; exit 1; }
	cg_total "$f"
}
printf '%-40s %16s %12s\n' binary mode 'Ir/txn'
for bin in "$@"; do
	if [ "$bin" = pgbouncer ]; then
		a=$(pgbouncer_ir 0)
		b=$(pgbouncer_ir "$TXNS")
		printf '%-40s %16s %12.0f\n' "pgbouncer $PGB_REF_VERSION" "$LABEL" \
			"$(awk -v a="$a" -v b="$b" -v n="$((TXNS * CLIENTS))" 'BEGIN {print (b - a) / n}')"
		continue
	fi
	port=$(free_port)
	{
		bench_tusk_yaml "$port" "$PG_PORT" "" 1
		printf 'pools:\n  - database: bench\n    mode: %s\n    size: %s\n' "$POOL_MODE" "$CLIENTS"
	} >"$DIR/tusk.yaml"
	rm -f "$DIR"/cg.*
	setsid valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$DIR/cg.%p" \
		"$bin" -c "$DIR/tusk.yaml" 2>"$DIR/tusk.log" &
	pid=$!
	for _ in $(seq 1 50); do wait_port "$port" 2>/dev/null && break; done
	pgb "$port" -t 50 >/dev/null 2>&1
	callgrind_control -i on "$pid" >/dev/null
	done_txns=$(pgb "$port" -t "$TXNS" 2>&1 | awk -F'[ /]+' '/^number of transactions actually processed/ {print $6}')
	callgrind_control -i off "$pid" >/dev/null
	callgrind_control -d "$pid" >/dev/null
	sleep 1
	f=$(ls -S "$DIR"/cg."$pid".* 2>/dev/null | head -1)
	kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
	pid=
	[ -n "$f" ] && [ -n "${done_txns:-}" ] && [ "$done_txns" -gt 0 ] ||
		{ echo "instructions: $bin: no dump or no transactions (see $DIR/tusk.log)" >&2; cat "$DIR/tusk.log" >&2; exit 1; }
	total=$(cg_total "$f")
	printf '%-40s %16s %12.0f\n' "$bin" "$LABEL" "$(awk -v t="$total" -v n="$done_txns" 'BEGIN {print t / n}')"
	if [ "$TOP" -gt 0 ]; then
		callgrind_annotate "$f" 2>/dev/null | awk '/^-+$/ {s++; next} s >= 4 && NF' | awk -v n="$TOP" 'NR <= n' | cut -c1-150
	fi
	[ -n "${KEEP:-}" ] && cp "$f" "$KEEP/callgrind.$(basename "$bin").$MODE"
done
