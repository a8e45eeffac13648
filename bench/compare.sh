#!/usr/bin/env bash
# bench/compare.sh [SECONDS]: pgbench -S -c 32 -j 2 direct vs PgBouncer (session) vs tusk (session)
# on a throwaway PostgreSQL 15 (scale 10). Alternates the three targets for 3 rounds, because these
# machines are noisy, then prints tps per run, the median per target and its ratio to direct.
# Prints numbers only; asserts nothing. Stops everything it started.
# Env: TUSK_BIN (default build/tusk), ROUNDS (3), CLIENTS (32), PGBENCH_ARGS (extra, e.g. "-M extended").
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-32}
PGBENCH_ARGS=${PGBENCH_ARGS:-}
TUSK=${TUSK_BIN:-$PWD/build/tusk}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PGBOUNCER=${PGBOUNCER:-/usr/sbin/pgbouncer}

[ -x "$TUSK" ] || { echo "bench: $TUSK not built (make build)" >&2; exit 1; }

as_postgres() {
	if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
free_port() {
	/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() {
	for _ in $(seq 1 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	echo "bench: nothing listens on $1" >&2
	return 1
}

DIR=$(mktemp -d /tmp/tusk-bench.XXXXXX)
chmod 755 "$DIR"
[ "$(id -u)" -eq 0 ] && chown postgres:postgres "$DIR"
PGDATA=$DIR/pgdata
PG_PORT=$(free_port)
BOUNCER_PORT=$(free_port)
TUSK_PORT=$(free_port)
tusk_pid=
pg_started=

cleanup() {
	set +e
	if [ -n "$tusk_pid" ]; then kill -TERM "$tusk_pid" 2>/dev/null; wait "$tusk_pid" 2>/dev/null; fi
	if [ -f "$DIR/pgbouncer.pid" ]; then
		pid=$(cat "$DIR/pgbouncer.pid")
		kill -TERM "$pid" 2>/dev/null
		for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	fi
	[ -n "$pg_started" ] && as_postgres "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1
	rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "bench: PostgreSQL on $PG_PORT, PgBouncer on $BOUNCER_PORT, tusk on $TUSK_PORT; files in $DIR" >&2
as_postgres "$PG_BIN/initdb" -D "$PGDATA" -U postgres -A trust -E UTF8 --locale=C -N >/dev/null
cat >>"$PGDATA/postgresql.conf" <<CONF
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
max_connections = 200
shared_buffers = 128MB
fsync = off
synchronous_commit = off
CONF
as_postgres "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$DIR/postgres.log" -w -t 60 start >/dev/null
pg_started=1
"$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres bench
"$PG_BIN/pgbench" -i -q -s 10 -h 127.0.0.1 -p "$PG_PORT" -U postgres bench >/dev/null 2>&1

cat >"$DIR/userlist.txt" <<EOT
"postgres" ""
EOT
cat >"$DIR/pgbouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$PG_PORT dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $DIR/userlist.txt
pool_mode = session
default_pool_size = $((CLIENTS + 8))
max_client_conn = 1000
logfile = $DIR/pgbouncer.log
pidfile = $DIR/pgbouncer.pid
INI
[ "$(id -u)" -eq 0 ] && chown postgres:postgres "$DIR/pgbouncer.ini" "$DIR/userlist.txt"
as_postgres "$PGBOUNCER" -d "$DIR/pgbouncer.ini"
wait_port "$BOUNCER_PORT"

cat >"$DIR/tusk.yaml" <<YAML
listen:
  - host: 127.0.0.1
    port: $TUSK_PORT
workers: 2
log: {level: warn, format: text, target: stderr}
services:
  main:
    hosts: ["127.0.0.1:$PG_PORT"]
pools:
  - database: "*"
    user: "*"
    service: main
    mode: session
    size: $((CLIENTS + 8))
YAML
"$TUSK" -c "$DIR/tusk.yaml" 2>"$DIR/tusk.log" &
tusk_pid=$!
wait_port "$TUSK_PORT"

declare -A PORT=([direct]=$PG_PORT [pgbouncer]=$BOUNCER_PORT [tusk]=$TUSK_PORT)
declare -A RESULTS=()
TARGETS=(direct pgbouncer tusk)

run_one() {
	local target=$1 out tps
	# shellcheck disable=SC2086
	if out=$("$PG_BIN/pgbench" -n -S -c "$CLIENTS" -j 2 -T "$DURATION" $PGBENCH_ARGS \
		-h 127.0.0.1 -p "${PORT[$target]}" -U postgres bench 2>&1); then
		tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' <<<"$out")
	fi
	if [ -z "${tps:-}" ]; then
		echo "bench: $target run failed:" >&2
		tail -5 <<<"$out" >&2
		tps=failed
	fi
	echo "$tps"
}

echo
echo "pgbench -S -c $CLIENTS -j 2 -T $DURATION${PGBENCH_ARGS:+ $PGBENCH_ARGS}, scale 10, session mode, $ROUNDS rounds"
printf '%-6s %-10s %12s\n' round target tps
for round in $(seq 1 "$ROUNDS"); do
	# rotate the order each round so no target always runs first (or on a warmer cache)
	for i in 0 1 2; do
		target=${TARGETS[$(((i + round - 1) % 3))]}
		tps=$(run_one "$target")
		RESULTS[$target]="${RESULTS[$target]:-} $tps"
		printf '%-6s %-10s %12s\n' "$round" "$target" "$tps"
	done
done

median() { tr ' ' '\n' | grep -E '^[0-9.]+$' | sort -g | awk '{a[NR]=$1} END {if (NR==0) print "n/a"; else if (NR%2) print a[(NR+1)/2]; else printf "%.6f\n", (a[NR/2]+a[NR/2+1])/2}'; }

echo
printf '%-10s %12s %8s\n' target "median tps" "vs direct"
direct=$(median <<<"${RESULTS[direct]}")
for target in "${TARGETS[@]}"; do
	m=$(median <<<"${RESULTS[$target]}")
	if [[ $m != n/a && $direct != n/a ]]; then
		ratio=$(awk -v a="$m" -v b="$direct" 'BEGIN {printf "%.2f", a / b}')
		printf '%-10s %12.0f %8s\n' "$target" "$m" "$ratio"
	else
		printf '%-10s %12s %8s\n' "$target" "$m" "n/a"
	fi
done
