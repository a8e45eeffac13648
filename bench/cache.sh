#!/usr/bin/env bash
# bench/cache.sh [SECONDS]: the result cache (docs/cache.md) on a throwaway PostgreSQL 15 with
# pg_stat_statements (pgbench scale 10), targets alternated round by round (noisy machines):
#   identical  200 clients send the same slow aggregate at once, cold (right after DDL through the
#              target, which drops tusk's catalog answers): wall time until all have their rows,
#              and how many times PostgreSQL ran it: direct, tusk cache off, tusk cache on
#   hot        pgbench -M $PROTOCOL, 32 clients, a hot set of 100 SELECTs (cache hits): direct,
#              tusk cache off, tusk cache on (target: on >= 3x direct)
#   miss       pgbench -M $PROTOCOL, 32 clients, cacheable SELECTs that never repeat (every one a
#              miss): tusk cache off vs on, MISS_ROUNDS (5) rounds alternated: tps and tusk's own
#              CPU per query (utime + stime around each run); target: on within 5% of off
#   l2         latency of one client reading the hot set: tusk cache off (PostgreSQL), cache on
#              (L1 hits), and a second tusk sharing a redis-server with a first that filled it
#              (L2 hits: with redis: L1 keeps nothing), with PostgreSQL's runs during the L2 run
#   write      pgbench -b simple-update (UPDATE, SELECT, INSERT per transaction), 1 client
#              (latency) and 8 (tps): tusk cache off, cache on (L1 bumps), and cache on with
#              redis: (INCRs, each commit held until Redis has answered them); with
#              TUSK_BEFORE_BIN, that binary with redis: too (l2before), for before/after in one run
# Prints numbers only; asserts nothing. Stops everything it started.
# Env: TUSK_BIN (default build/tusk), ROUNDS (3), SCENARIOS (subset of the above), PROTOCOL
# (pgbench -M of the hot and miss scenarios: simple (default), extended or prepared), REDIS_TLS
# (1: the l2 scenario's redis-server speaks only TLS, reached through tusk's tunnel, verify-full).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
DURATION=${1:-10}
ROUNDS=${ROUNDS:-3}
SCENARIOS=${SCENARIOS:-identical hot miss l2 write}
PROTOCOL=${PROTOCOL:-simple}
TUSK=${TUSK_BIN:-$PWD/build/tusk}
[ -x "$TUSK" ] || { echo "bench: $TUSK not built (make build)" >&2; exit 1; }

bench_dir tusk-cache-bench
PG_PORT=$(free_port)
declare -A PORT PID

cleanup() {
	set +e
	for k in "${!PID[@]}"; do kill -TERM "${PID[$k]}" 2>/dev/null; wait "${PID[$k]}" 2>/dev/null; done
	bench_pg_stop
	rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bench_pg_init "$PG_PORT" "max_connections = 300
shared_buffers = 128MB
synchronous_commit = off
shared_preload_libraries = 'pg_stat_statements'"
ulimit -n 8192 2>/dev/null || true
bench_pg_start "$PG_PORT" 10
"$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres bench -c "create extension pg_stat_statements"

# Two tusks, the same but for the cache: off, and on (which also coalesces); with l2, two more
# sharing a redis-server of the bench's own.
MODES="off on"
if [[ " $SCENARIOS " == *" l2 "* || " $SCENARIOS " == *" write "* ]]; then
	REDIS_PORT=$(free_port)
	REDIS_ARGS=(--port "$REDIS_PORT")
	REDIS_TLS_YAML=
	if [ "${REDIS_TLS:-0}" = 1 ]; then
		(cd "$DIR" && openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=bench-ca -keyout ca.key -out ca.crt \
			-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign &&
			openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout r.key -out r.csr &&
			printf 'subjectAltName=IP:127.0.0.1\n' >r.ext &&
			openssl x509 -req -in r.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile r.ext -out r.crt) \
			>/dev/null 2>&1
		REDIS_ARGS=(--port 0 --tls-port "$REDIS_PORT" --tls-cert-file "$DIR/r.crt" --tls-key-file "$DIR/r.key"
			--tls-ca-cert-file "$DIR/ca.crt" --tls-auth-clients no)
		REDIS_TLS_YAML=", tls: verify-full, tls_ca_file: '$DIR/ca.crt'"
	fi
	redis-server "${REDIS_ARGS[@]}" --bind 127.0.0.1 --save '' --appendonly no >"$DIR/redis.log" 2>&1 &
	PID[redis]=$!
	wait_port "$REDIS_PORT"
	MODES="off on l2a l2b"
	[ -n "${TUSK_BEFORE_BIN:-}" ] && MODES="$MODES l2before"
fi
for mode in $MODES; do
	PORT[$mode]=$(free_port)
	cache=$mode redis=
	case $mode in l2a | l2b | l2before)
		cache=on
		redis="redis: {host: 127.0.0.1, port: $REDIS_PORT, prefix: 'bench:', timeout: 200ms$REDIS_TLS_YAML}"
	esac
	{
		bench_tusk_yaml "${PORT[$mode]}" "$PG_PORT"
		cat <<YAML
cache: $cache
$redis
cache_ttl: 60s
cache_coalesce_wait: 30s
pools:
  - mode: transaction
    size: 20
YAML
	} >"$DIR/tusk-$mode.yaml"
	bin=$TUSK
	[ "$mode" = l2before ] && bin=$TUSK_BEFORE_BIN
	setsid "$bin" -c "$DIR/tusk-$mode.yaml" >"$DIR/tusk-$mode.log" 2>&1 &
	PID[$mode]=$!
	wait_port "${PORT[$mode]}"
done
PORT[direct]=$PG_PORT

median() { sort -n | awk '{a[NR]=$1} END {if (NR) print (NR % 2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2); else print 0}'; }
tps_of() { sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1; }

echo "# bench/cache.sh: ${DURATION}s runs, $ROUNDS rounds, $(nproc) cores, pgbench -M $PROTOCOL"

if [[ " $SCENARIOS " == *" identical "* ]]; then
	cat >"$DIR/identical.py" <<'PY'
import socket, struct, sys, threading, time
port, n, rnd = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
Q = ("SELECT count(*), min(a.aid) FROM pgbench_accounts a, pgbench_branches b, pgbench_tellers t "
     "WHERE a.aid <= 500 AND (a.aid * 7 + b.bid * 13 + t.tid) % 1000 = 999 AND a.aid > -" + str(rnd))  # new each round
def msg(kind, body): return kind + struct.pack("!I", len(body) + 4) + body
def read_until_ready(s):
    buf, rows = b"", 0
    while True:
        while len(buf) < 5 or len(buf) < 1 + struct.unpack("!I", buf[1:5])[0]:
            d = s.recv(65536)
            if not d: raise RuntimeError("closed")
            buf += d
        ln = struct.unpack("!I", buf[1:5])[0]
        kind, body, buf = buf[:1], buf[5:1 + ln], buf[1 + ln:]
        if kind == b"E": raise RuntimeError(body.decode(errors="replace"))
        rows += kind == b"D"
        if kind == b"Z": return rows
conns = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    p = b"user\0postgres\0database\0bench\0\0"
    s.sendall(struct.pack("!II", len(p) + 8, 196608) + p)
    read_until_ready(s)
    conns.append(s)
bar = threading.Barrier(n + 1)
got = []
def run(s):
    bar.wait(); s.sendall(msg(b"Q", Q.encode() + b"\0")); got.append(read_until_ready(s))
ts = [threading.Thread(target=run, args=(s,)) for s in conns]
for t in ts: t.start()
bar.wait(); t0 = time.monotonic()
for t in ts: t.join()
assert len(got) == n and len(set(got)) == 1, got[:5]  # everyone got the same number of rows
print(f"{time.monotonic() - t0:.3f}")
PY
	for target in direct off on; do : >"$DIR/identical-$target"; : >"$DIR/identical-calls-$target"; done
	for r in $(seq 1 "$ROUNDS"); do
		for target in direct off on; do
			# Cold: DDL through the target drops tusk's catalog answers (function volatility,
			# relation dependencies), as CACHE FLUSH, a restart or any DDL does.
			"$PG_BIN/psql" -X -q -h 127.0.0.1 -p "${PORT[$target]}" -U postgres bench -c "comment on table pgbench_branches is 'cold $r'" >/dev/null
			"$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres bench -c "select pg_stat_statements_reset()" >/dev/null
			n=200; [ "$target" = direct ] && n=150 # max_connections
			secs=$(/usr/bin/python3 "$DIR/identical.py" "${PORT[$target]}" "$n" "$r")
			calls=$("$PG_BIN/psql" -X -qAt -h 127.0.0.1 -p "$PG_PORT" -U postgres bench -c \
				"select coalesce(sum(calls),0) from pg_stat_statements where query like '%pgbench_tellers t%'")
			echo "$secs" >>"$DIR/identical-$target"
			echo "$calls" >>"$DIR/identical-calls-$target"
			echo "identical round $r $target: ${n} clients, ${secs}s, PostgreSQL ran it $calls times"
		done
	done
	for target in direct off on; do
		echo "identical median $target: $(median <"$DIR/identical-$target")s, runs $(median <"$DIR/identical-calls-$target")"
	done
fi

run_pgbench() { # target script -> tps
	"$PG_BIN/pgbench" -n -M "$PROTOCOL" -c 32 -j 2 -T "$DURATION" -h 127.0.0.1 -p "${PORT[$1]}" -U postgres \
		-f "$2" bench 2>/dev/null | tps_of
}

if [[ " $SCENARIOS " == *" hot "* ]]; then
	printf '\\set aid random(1, 100)\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n' >"$DIR/hot.sql"
	for target in direct off on; do : >"$DIR/hot-$target"; done
	for r in $(seq 1 "$ROUNDS"); do
		for target in direct off on; do
			tps=$(run_pgbench "$target" "$DIR/hot.sql")
			echo "$tps" >>"$DIR/hot-$target"
			echo "hot round $r $target: $tps tps"
		done
	done
	d=$(median <"$DIR/hot-direct")
	for target in direct off on; do
		m=$(median <"$DIR/hot-$target")
		echo "hot median $target: $m tps ($(awk -v a="$m" -v b="$d" 'BEGIN{printf "%.2f", a/b}')x direct)"
	done
fi

if [[ " $SCENARIOS " == *" miss "* ]]; then
	# :r makes every text new: each SELECT is cacheable and a miss (and then kept, and evicted).
	# tps alone is too noisy on a shared machine to show 5%: what the cache adds is tusk's own
	# CPU, so each run also reads tusk's utime + stime (/proc/PID/stat) around it, per query.
	printf '\\set aid random(1, 1000000)\n\\set r random(1, 1000000000)\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid AND :r > 0;\n' >"$DIR/miss.sql"
	MISS_ROUNDS=${MISS_ROUNDS:-5}
	TCK=$(getconf CLK_TCK)
	cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
	for target in off on; do : >"$DIR/miss-$target"; : >"$DIR/miss-cpu-$target"; done
	for r in $(seq 1 "$MISS_ROUNDS"); do
		for target in off on; do
			t0=$(cpu_ticks "${PID[$target]}")
			out=$("$PG_BIN/pgbench" -n -M "$PROTOCOL" -c 32 -j 2 -T "$DURATION" -h 127.0.0.1 -p "${PORT[$target]}" \
				-U postgres -f "$DIR/miss.sql" bench 2>/dev/null)
			t1=$(cpu_ticks "${PID[$target]}")
			tps=$(tps_of <<<"$out")
			n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
			us=$(awk -v d=$((t1 - t0)) -v n="${n:-0}" -v h="$TCK" 'BEGIN{printf "%.2f", n ? d / h * 1e6 / n : 0}')
			echo "$tps" >>"$DIR/miss-$target"
			echo "$us" >>"$DIR/miss-cpu-$target"
			echo "miss round $r $target: $tps tps, $n queries, tusk CPU $us us/query"
		done
	done
	off=$(median <"$DIR/miss-off")
	on=$(median <"$DIR/miss-on")
	coff=$(median <"$DIR/miss-cpu-off")
	con=$(median <"$DIR/miss-cpu-on")
	echo "miss median off: $off tps, on: $on tps ($(awk -v a="$on" -v b="$off" 'BEGIN{printf "%.3f", a/b}') of off)"
	echo "miss median tusk CPU off: $coff us/query, on: $con us/query ($(awk -v a="$con" -v b="$coff" 'BEGIN{printf "%.3f", b ? a/b : 0}') of off; target <= 1.05)"
fi

if [[ " $SCENARIOS " == *" l2 "* ]]; then
	printf '\\set aid random(1, 100)\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n' >"$DIR/hot.sql"
	lat_of() { sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' | head -1; }
	run_lat() { # target -> average latency in ms, one client
		"$PG_BIN/pgbench" -n -M simple -c 1 -j 1 -T "$DURATION" -h 127.0.0.1 -p "${PORT[$1]}" -U postgres \
			-f "$DIR/hot.sql" bench 2>/dev/null | lat_of
	}
	for target in off on l2b; do : >"$DIR/l2-$target"; done
	for r in $(seq 1 "$ROUNDS"); do
		# Fill: every one of the 100 reads through the first tusk (misses there, stored in Redis).
		for aid in $(seq 1 100); do echo "SELECT abalance FROM pgbench_accounts WHERE aid = $aid;"; done |
			"$PG_BIN/psql" -X -q -h 127.0.0.1 -p "${PORT[l2a]}" -U postgres bench >/dev/null
		for target in off on l2b; do
			"$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres bench -c "select pg_stat_statements_reset()" >/dev/null
			ms=$(run_lat "$target")
			calls=$("$PG_BIN/psql" -X -qAt -h 127.0.0.1 -p "$PG_PORT" -U postgres bench -c \
				"select coalesce(sum(calls),0) from pg_stat_statements where query like 'SELECT abalance FROM pgbench_accounts%'")
			echo "$ms" >>"$DIR/l2-$target"
			echo "l2 round $r $target: ${ms} ms per read, PostgreSQL ran $calls"
		done
	done
	for target in off on l2b; do
		echo "l2 median $target: $(median <"$DIR/l2-$target") ms per read"
	done
fi

if [[ " $SCENARIOS " == *" write "* ]]; then
	WTARGETS="off on l2a"
	[ -n "${TUSK_BEFORE_BIN:-}" ] && WTARGETS="$WTARGETS l2before"
	for clients in 1 8; do
		for target in $WTARGETS; do : >"$DIR/w$clients-$target"; done
	done
	for r in $(seq 1 "$ROUNDS"); do
		for clients in 1 8; do
			for target in $WTARGETS; do
				out=$("$PG_BIN/pgbench" -n -M simple -b simple-update -c "$clients" -j 1 -T "$DURATION" \
					-h 127.0.0.1 -p "${PORT[$target]}" -U postgres bench 2>/dev/null)
				tps=$(tps_of <<<"$out")
				echo "$tps" >>"$DIR/w$clients-$target"
				echo "write round $r, $clients client(s), $target: $tps tps"
			done
		done
	done
	for clients in 1 8; do
		off=$(median <"$DIR/w$clients-off")
		for target in ${WTARGETS#off }; do
			m=$(median <"$DIR/w$clients-$target")
			echo "write median, $clients client(s), $target: $m tps ($(awk -v a="$m" -v b="$off" 'BEGIN{printf "%.3f", b ? a/b : 0}') of cache off)"
		done
	done
fi
