#!/usr/bin/env bash
# bench/wakeups.sh BIN [BIN...]: where a pooler's CPU per transaction goes, in counts that the
# load on the machine hardly moves: per pgbench -S transaction (POOL_MODE pooling, CLIENTS
# clients, pool of SIZE, WORKERS workers for tusk), the pooler's epoll_wait and epoll_ctl calls, reads and writes
# (read/write and recvfrom/sendto), voluntary context switches (sleeps in epoll_wait: each
# costs a wake-up), involuntary ones (preempted by whom its writes woke), and its CPU time
# (user + system). Syscalls come from `perf stat -e syscalls:sys_enter_*` (tracepoints: far
# less intrusive than strace), switches and CPU from /proc/PID/task/*/status and /proc/PID/stat.
# A BIN of "pgbouncer" runs Debian's PgBouncer (/usr/sbin/pgbouncer) instead of a tusk,
# "pgbouncer=PATH" the PgBouncer at PATH (e.g. 1.25.2 from bench_pgbouncer_find's cache), and
# "floor" bench/floor.c (a bare one-thread relay: the floor under any pooler, not a pooler).
# The binaries take turns on one throwaway PostgreSQL 15, ROUNDS times. Asserts nothing.
# Env: CLIENTS (32), SIZE (32; fewer than CLIENTS makes clients queue), TXNS (2000 per
# client), MODE (simple), ROUNDS (3), WORKERS (tusk's, 2), POOL_MODE (transaction, or session), PG_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_NAME=wakeups
. bench/lib.sh
[ $# -ge 1 ] || { echo "usage: bench/wakeups.sh BIN|pgbouncer [...]" >&2; exit 2; }
CLIENTS=${CLIENTS:-32}
SIZE=${SIZE:-32}
TXNS=${TXNS:-2000}
MODE=${MODE:-simple}
ROUNDS=${ROUNDS:-3}
WORKERS=${WORKERS:-2}
POOL_MODE=${POOL_MODE:-transaction}
command -v perf >/dev/null || { echo "wakeups: perf missing" >&2; exit 1; }

bench_dir tusk-wakeups
PG_PORT=$(free_port)
pooler=
cleanup() {
	set +e
	[ -n "$pooler" ] && kill "$pooler" 2>/dev/null
	[ -f "$DIR/pgbouncer.pid" ] && kill "$(cat "$DIR/pgbouncer.pid")" 2>/dev/null
	bench_pg_stop
	rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bench_pg_init "$PG_PORT" "max_connections = $((SIZE + 20))"
bench_pg_start "$PG_PORT" 10

events=syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_ctl,syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto
printf '%-6s %-36s %8s %8s %8s %8s %8s %8s %8s\n' round pooler tps 'cpu µs' epoll ep-ctl rd+wr vol-cs invol
for round in $(seq 1 "$ROUNDS"); do
	for bin in "$@"; do
		port=$(free_port)
		if [ "$bin" = floor ]; then
			[ -x "$DIR/floor" ] || cc -O2 -o "$DIR/floor" bench/floor.c
			setsid "$DIR/floor" "$port" "$PG_PORT" bench 2>"$DIR/floor.log" &
			pooler=$!
			pid=$pooler
			wait_port "$port"
		elif [ "${bin%%=*}" = pgbouncer ]; then
			bench_pgbouncer_ini "$port" 2000 "bench = host=127.0.0.1 port=$PG_PORT dbname=bench pool_size=$SIZE" \
				"pool_mode = $POOL_MODE"
			bench_pgbouncer_start 4096 pgbouncer "$([ "$bin" = pgbouncer ] && echo "$PGBOUNCER" || echo "${bin#pgbouncer=}")"
			wait_port "$port"
			pid=$(cat "$DIR/pgbouncer.pid")
		else
			{
				bench_tusk_yaml "$port" "$PG_PORT" "" "$WORKERS"
				cat <<YAML
pools:
  - database: bench
    mode: $POOL_MODE
    size: $SIZE
YAML
			} >"$DIR/tusk.yaml"
			setsid "$bin" -c "$DIR/tusk.yaml" 2>"$DIR/tusk.log" &
			pooler=$!
			pid=$pooler
			wait_port "$port"
		fi
		pgb=("$PG_BIN/pgbench" -n -S -M "$MODE" -c "$CLIENTS" -j 2 -h 127.0.0.1 -p "$port" -U postgres bench)
		"${pgb[@]}" -t 100 >/dev/null 2>&1 # servers open, pools warm
		read -r v0 n0 < <(bench_switches "$pid")
		c0=$(bench_cpu_ticks "$pid")
		perf stat -x, -e "$events" -o "$DIR/perf.out" -p "$pid" &
		perf_pid=$!
		sleep 0.3
		out=$("${pgb[@]}" -t "$TXNS" 2>&1)
		kill -INT "$perf_pid"
		wait "$perf_pid" || true
		read -r v1 n1 < <(bench_switches "$pid")
		c1=$(bench_cpu_ticks "$pid")
		n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
		tps=$(sed -n 's/^tps = \([0-9.]*\) (without.*/\1/p' <<<"$out")
		hz=$(getconf CLK_TCK)
		awk -F, -v r="$round" -v b="$bin" -v n="$n" -v tps="$tps" -v c=$((c1 - c0)) -v hz="$hz" \
			-v v=$((v1 - v0)) -v nv=$((n1 - n0)) '
			/epoll_wait/ {e = $1} /epoll_ctl/ {ec = $1} /enter_(read|write|recvfrom|sendto)/ {rw += $1}
			END {printf "%-6s %-36s %8.0f %8.1f %8.2f %8.2f %8.2f %8.2f %8.2f\n", r, b, tps, c * 1e6 / hz / n,
				e / n, ec / n, rw / n, v / n, nv / n}' "$DIR/perf.out"
		if [ "${bin%%=*}" = pgbouncer ]; then
			kill "$pid"
			rm -f "$DIR/pgbouncer.pid"
		else
			kill "$pooler"
			wait "$pooler" 2>/dev/null || true
			pooler=
		fi
		sleep 0.5
	done
done
