#!/usr/bin/env bash
# bench/syscalls.sh BIN [BIN...]: system calls per transaction of each tusk binary, counted with
# strace -c -f over a fixed pgbench -S run (transaction pooling, CLIENTS clients x TXNS
# transactions each, simple protocol) on a throwaway PostgreSQL 15. The binaries take turns on
# the same PostgreSQL, ROUNDS times. Startup and shutdown are counted too: they are a few
# hundred calls against tens of thousands, and the same for every binary.
# Prints, per run, the calls per transaction and the top calls. Asserts nothing.
# Env: CLIENTS (8), TXNS (2000), ROUNDS (2), PG_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
[ $# -ge 1 ] || { echo "usage: bench/syscalls.sh BIN [BIN...]" >&2; exit 2; }
CLIENTS=${CLIENTS:-8}
TXNS=${TXNS:-2000}
ROUNDS=${ROUNDS:-2}
command -v strace >/dev/null || { echo "bench: strace missing" >&2; exit 1; }

bench_dir tusk-sys
PG_PORT=$(free_port)
trace_pid=
cleanup() {
	set +e
	[ -n "$trace_pid" ] && kill -TERM "$(pgrep -P "$trace_pid")" 2>/dev/null && wait "$trace_pid" 2>/dev/null
	bench_pg_stop
	rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bench_pg_init "$PG_PORT"
bench_pg_start "$PG_PORT" 1

for round in $(seq 1 "$ROUNDS"); do
	for bin in "$@"; do
		port=$(free_port)
		{
			bench_tusk_yaml "$port" "$PG_PORT"
			cat <<YAML
pools:
  - database: bench
    mode: transaction
    size: 4
YAML
		} >"$DIR/tusk.yaml"
		strace -c -f -o "$DIR/strace.out" "$bin" -c "$DIR/tusk.yaml" 2>"$DIR/tusk.log" &
		trace_pid=$!
		wait_port "$port"
		out=$("$PG_BIN/pgbench" -n -S -c "$CLIENTS" -j 2 -t "$TXNS" -h 127.0.0.1 -p "$port" -U postgres bench 2>&1)
		n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
		# strace keeps a signal sent to itself from the command it runs: stop tusk itself.
		kill -TERM "$(pgrep -P "$trace_pid")"
		wait "$trace_pid" || true
		trace_pid=
		total=$(awk '$NF == "total" {print $4}' "$DIR/strace.out")
		printf 'round %s  %-40s  txns %s  syscalls %s  per txn %s\n' "$round" "$bin" "$n" "$total" \
			"$(awk -v t="$total" -v n="$n" 'BEGIN {printf "%.2f", t / n}')"
		# The busiest calls: name and count per transaction.
		awk -v n="$n" '/^[ ]*[0-9.]+ +[0-9.]+ +[0-9]+ +[0-9]+/ && $NF != "total" {calls = $4; printf "    %-14s %8.2f\n", $NF, calls / n}' \
			"$DIR/strace.out" | sort -k2 -g -r | head -6
	done
done
