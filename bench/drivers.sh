#!/usr/bin/env bash
# bench/drivers.sh [RUNS]: real drivers through tusk in transaction mode, on a throwaway
# PostgreSQL 15. Prints numbers; asserts nothing. Stops everything it started.
#   1. load, RUNS times each (default 5): pgjdbc 20 threads x 2,000 checked operations (half the
#      threads at prepareThreshold=1, half at the default 5), and asyncpg 50 connections x 5,000
#      checked operations (statement cache on), through a tusk pool of POOL_SIZE servers (10).
#      Per run: operations right, wrong results (a result that differs from what it must be, an
#      error, or committed state that disagrees at the end), stalls (a connection that made no
#      progress for 10 s: the run stops there and says which connection and what it was doing).
#   2. pass counts of the driver suites (tests/drivers: node-postgres, pgjdbc, asyncpg) direct vs
#      tusk vs PgBouncer 1.18, each pooler in transaction mode with 3 servers, judged as
#      tests/integration/test_drivers.py judges tusk (tests/drivers/harness.py); with the cases
#      each target fails.
# Env: TUSK_BIN (default build/tusk), JDBC_THREADS (20), JDBC_OPS (2000), ASYNCPG_CONNS (50),
# ASYNCPG_OPS (5000), POOL_SIZE (10), PARTS ("load pass": which of the two to run), LOADS
# ("jdbc asyncpg": which loads), DRIVERS_LOG (a file that gets each load run's whole output),
# LOAD_TLS (1: every load connection to tusk over TLS, the certificate checked).
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_NAME=drivers
. bench/lib.sh
RUNS=${1:-5}
TUSK=${TUSK_BIN:-$PWD/build/tusk}
JDBC_THREADS=${JDBC_THREADS:-20}
JDBC_OPS=${JDBC_OPS:-2000}
ASYNCPG_CONNS=${ASYNCPG_CONNS:-50}
ASYNCPG_OPS=${ASYNCPG_OPS:-5000}
POOL_SIZE=${POOL_SIZE:-10}
LOAD_TLS=${LOAD_TLS:-}
PARTS=${PARTS:-load pass}
LOADS=${LOADS:-jdbc asyncpg}
PY=/usr/bin/python3
JAR=${PGJDBC_JAR:-/usr/share/java/postgresql.jar}
export PGJDBC_JAR=$JAR

[ -x "$TUSK" ] || { echo "drivers: $TUSK not built (make build)" >&2; exit 1; }
tests/drivers/node/install.sh
JDBC_CLASSES=$($PY -c 'import sys; sys.path.insert(0, "tests/drivers"); import harness; print(harness.jdbc_classes())')

bench_dir tusk-drivers
PG_PORT=$(free_port)
TUSK_PORT=$(free_port)
BOUNCER_PORT=$(free_port)
tusk_pid=
cleanup() {
	set +e
	bench_stop_pid "$tusk_pid"
	[ -f "$DIR/pgbouncer.pid" ] && bench_stop_pid "$(cat "$DIR/pgbouncer.pid")"
	bench_pg_stop
	rm -rf "$DIR"
}
LOG=${DRIVERS_LOG:-/dev/null}
trap cleanup EXIT
trap 'exit 130' INT TERM
echo "drivers: PostgreSQL on $PG_PORT, tusk on $TUSK_PORT, PgBouncer on $BOUNCER_PORT; files in $DIR" >&2

bench_pg_init "$PG_PORT" "max_connections = 200
synchronous_commit = off"
as_postgres "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$DIR/postgres.log" -w -t 60 start >/dev/null
pg_started=1
"$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c "CREATE ROLE tusk_trust LOGIN" \
	-c "CREATE DATABASE tusk_test OWNER tusk_trust"

# One CA and server certificate (the tests' own), for tusk's and PgBouncer's TLS.
$PY -c "import sys; sys.path.insert(0, 'tests/integration'); from tls_util import Certs; Certs('$DIR/certs')"
chmod 755 "$DIR/certs"
bench_chown "$DIR/certs" "$DIR/certs"/*

# tusk: tusk_test (3 servers) and tusk_test_one (1 server) for the suites, tusk_load for the load.
{
	bench_tusk_yaml "$TUSK_PORT" "$PG_PORT" "    tls: allow
    tls_cert_file: $DIR/certs/server.crt
    tls_key_file: $DIR/certs/server.key"
	cat <<YAML
pool_wait_timeout: 30s
pools:
  - {database: tusk_test_one, server_database: tusk_test, user: "*", service: main, mode: transaction, size: 1}
  - {database: tusk_load, server_database: tusk_test, user: "*", service: main, mode: transaction, size: $POOL_SIZE}
  - {database: "*", user: "*", service: main, mode: transaction, size: 3}
YAML
} >"$DIR/tusk.yaml"
setsid "$TUSK" -c "$DIR/tusk.yaml" >"$DIR/tusk.log" 2>&1 &
tusk_pid=$!
wait_port "$TUSK_PORT"

# PgBouncer 1.18, the same pools (pgjdbc sends extra_float_digits at startup: PgBouncer refuses
# it unless told to ignore it, as everyone running pgjdbc through it configures).
bench_pgbouncer_ini "$BOUNCER_PORT" 1000 \
	"tusk_test = host=127.0.0.1 port=$PG_PORT dbname=tusk_test pool_mode=transaction pool_size=3
tusk_test_one = host=127.0.0.1 port=$PG_PORT dbname=tusk_test pool_mode=transaction pool_size=1" \
	"client_tls_sslmode = allow
client_tls_cert_file = $DIR/certs/server.crt
client_tls_key_file = $DIR/certs/server.key
server_tls_sslmode = disable
query_wait_timeout = 30
ignore_startup_parameters = extra_float_digits"
echo '"tusk_trust" ""' >>"$DIR/userlist.txt"
bench_pgbouncer_start 4096
wait_port "$BOUNCER_PORT"

# load_run KIND: one run of the load through tusk; prints "ok wrong stalls time detail". A stall
# (a connection without progress for 10 s) is reported by the program with what PostgreSQL's
# backends were doing, and the run goes on; one stalled for 120 s ends it ("hung").
load_run() {
	local out rc=0
	if [ -n "$LOAD_TLS" ]; then export TLS_ALL=1 TLS_CA=$DIR/certs/ca.crt; else unset TLS_ALL; fi
	if [ "$1" = jdbc ]; then
		out=$(TAG=bj PG_DIRECT_PORT=$PG_PORT timeout 3600 java -cp "$JAR:$JDBC_CLASSES" DriverSuite 127.0.0.1 \
			"$TUSK_PORT" tusk_load tusk_trust --load "$JDBC_THREADS" "$JDBC_OPS" 2>&1) || rc=$?
	else
		out=$(TAG=ba PGDATABASE=tusk_load PGSSLMODE=disable PG_DIRECT_PORT=$PG_PORT timeout 3600 \
			$PY tests/drivers/asyncpg_suite.py "$TUSK_PORT" --load "$ASYNCPG_CONNS" "$ASYNCPG_OPS" 2>&1) || rc=$?
	fi
	echo "$out" >>"$LOG"
	local res nstall detail ok=n/a wrong=n/a secs=-
	res=$(grep -m1 '^RESULT' <<<"$out" || true)
	nstall=$(grep -c '"stall"' <<<"$out" || true)
	detail="$(grep -m1 -E '"(hung|stall)"' <<<"$out" | cut -c1-300 || true) $(grep -m1 '"recovered"' <<<"$out" || true)"
	if [ -n "$res" ]; then
		ok=$(sed -E 's/.*ok=([0-9]+).*/\1/' <<<"$res")
		wrong=$(($(sed -E 's/.* bad=([0-9]+).*/\1/' <<<"$res") + $(sed -E 's/.*final_bad=([0-9]+).*/\1/' <<<"$res")))
		secs=$(sed -E 's/.*seconds=([0-9.]+).*/\1s/' <<<"$res")
		detail="$(grep -m1 '^  ' <<<"$out" | cut -c1-200 || true) $detail"
	elif ! grep -q '"hung"' <<<"$out"; then
		detail="exit $rc: $(tail -n 3 <<<"$out" | tr '\n' ' ' | cut -c1-300)"
	fi
	printf '%s %s %s %s %s\n' "$ok" "$wrong" "$nstall" "$secs" "$detail"
}

if [[ " $PARTS " == *" load "* ]]; then
	for kind in $LOADS; do
		if [ "$kind" = jdbc ]; then
			echo "== pgjdbc $JDBC_THREADS threads x $JDBC_OPS operations through tusk (transaction, $POOL_SIZE servers${LOAD_TLS:+, TLS})"
		else
			echo "== asyncpg $ASYNCPG_CONNS connections x $ASYNCPG_OPS operations through tusk (transaction, $POOL_SIZE servers${LOAD_TLS:+, TLS})"
		fi
		printf '%-4s %10s %8s %7s %9s  %s\n' run ok wrong stalls time "first problem"
		for r in $(seq 1 "$RUNS"); do
			read -r ok wrong stalls secs detail <<<"$(load_run "$kind")"
			printf '%-4s %10s %8s %7s %9s  %s\n' "$r" "$ok" "$wrong" "$stalls" "$secs" "$detail"
		done
	done
fi

if [[ " $PARTS " == *" pass "* ]]; then
	echo "== driver suites: cases passed (tests/drivers/harness.py judges each target against PostgreSQL direct)"
	$PY bench/drivers_pass.py "$PG_PORT" "$TUSK_PORT" "$BOUNCER_PORT" "$DIR/certs/ca.crt"
fi
