#!/usr/bin/env bash
# bench/tls_storm.sh [SECONDS]: TLS login storms (issue 28) on a throwaway PostgreSQL 15 (scale
# 10), every target in each of ROUNDS rounds in an order that rotates with the round; medians.
#   storm   pgbench -n -C -S -c CLIENTS -j 2 -T SECONDS, sslmode=require: every transaction is a
#           new connection, TLS handshake and login, so tps is logins/s (pgbench reports it
#           including the reconnections). Targets: direct (PostgreSQL's own TLS), PgBouncer
#           1.25 (bench_pgbouncer_find) and Debian's 1.18 when both exist, tusk (TUSK_BIN) and,
#           with TUSK_BASE_BIN, a second tusk ("base"), and tusk with tls_session_tickets: false
#           ("tusk-nt"). Also each pooler's CPU µs per login.
#   resume  bench/tls_resume.py for SECONDS: one client logging in again and again, offering
#           the session its last login got (libpq does not keep sessions, so pgbench cannot
#           show resumption). tusk with tickets, the same without offering the session, tusk
#           with tls_session_tickets: false, PgBouncer 1.25. logins/s, the share resumed, and
#           the pooler's CPU µs per login.
#   beside  pgbench -n -S -c 8 -T SECONDS in plaintext through a pooler, alone and with a storm
#           (pgbench -C sslmode=require, CLIENTS clients) beside it on the same pooler: what
#           handshakes cost the clients that only relay. tps and mean latency of the relayed
#           run, tusk and PgBouncer 1.25 (and base).
#   light   bench/tls_login.c (built here with cc): LIGHT_THREADS threads of a C client sharing
#           one TLS context, each logging in (TLS, startup, SELECT 1, Terminate) again and again
#           for SECONDS, full handshakes and, in a second run, offering each thread's last
#           session (resumption). pgbench -C spends ~0.9 ms of its own CPU per TLS login, which
#           on 2 cores bounds the storm more than the pooler; this client costs a fraction of
#           that. logins/s, ratio to PgBouncer 1.25 in the same mode, share resumed, the
#           pooler's and the client's CPU µs per login, and the pooler's context switches per
#           login (all threads; voluntary: sleeps in epoll_wait, involuntary: preempted).
#           Not in the default PARTS.
# Transaction pools of 20 servers; tusk 2 workers; trust authentication. Every pooler in a
# session of its own (bench/lib.sh). Prints numbers only. Stops everything it started.
# Env: TUSK_BIN (build/tusk), TUSK_BASE_BIN, ROUNDS (3), CLIENTS (16), LIGHT_THREADS (8), PARTS
# ("storm resume beside"; also "light"), ONE_WORKER (1: light also with tusk at workers: 1),
# PGB_SYSCA (1: PgBouncer 1.25 with its default client_tls_ca_file too, see pgb_start),
# PGBOUNCER_125, PGBOUNCER (see bench/lib.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_NAME=tls_storm
. bench/lib.sh
DURATION=${1:-10}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-16}
LIGHT_THREADS=${LIGHT_THREADS:-8}
PARTS=${PARTS:-storm resume beside}
TUSK=${TUSK_BIN:-$PWD/build/tusk}
BASE=${TUSK_BASE_BIN:-}
[ -x "$TUSK" ] || { echo "tls_storm: $TUSK not built (make build)" >&2; exit 1; }
[ -z "$BASE" ] || [ -x "$BASE" ] || { echo "tls_storm: TUSK_BASE_BIN=$BASE is not executable" >&2; exit 1; }
bench_pgbouncer_find

bench_dir tusk-storm
bench_poolers_init
PG_PORT=$(free_port)
bench_pg_init_tls "$PG_PORT" "shared_buffers = 128MB"
ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)"
bench_pg_start "$PG_PORT" 10
echo "tls_storm: load average $(cut -d' ' -f1-3 /proc/loadavg) at start" >&2

# PgBouncer 1.25 (libusual) sends the names of every CA in client_tls_ca_file in its
# CertificateRequest, and that file defaults to the system's bundle: ~14.8 kB of names in each
# full handshake here, which costs the client twice the CPU per login and PgBouncer ~20% more
# (docs/performance.md, "TLS logins against PgBouncer 1.25 at its best"). 1.18 sends none. The
# reference therefore gets the bench's own certificate as its CA file (one name), its best case;
# PGB_SYSCA=1 adds "pgb-sysca", 1.25 as built, to show the default.
pgb_start() { # NAME BINARY [CA-FILE (default: the bench's own certificate; "" = PgBouncer's default)]
	local ca=$DIR/server.crt
	[ $# -lt 3 ] || ca=$3
	PORT[$1]=$(free_port)
	bench_pgbouncer_ini "${PORT[$1]}" 2000 \
		"bench_t = host=127.0.0.1 port=$PG_PORT dbname=bench pool_mode=transaction pool_size=20" \
		"client_tls_sslmode = allow
client_tls_cert_file = $DIR/server.crt
client_tls_key_file = $DIR/server.key${ca:+
client_tls_ca_file = $ca}
server_tls_sslmode = disable" "$1"
	bench_pgbouncer_start 8192 "$1" "$2"
	wait_port "${PORT[$1]}"
	PID[$1]=$(cat "$DIR/$1.pid")
}
tusk_start() { # NAME BINARY [more listen lines [workers]]
	PORT[$1]=$(free_port)
	{
		bench_tusk_yaml "${PORT[$1]}" "$PG_PORT" "    tls: allow
    tls_cert_file: $DIR/server.crt
    tls_key_file: $DIR/server.key${3:-}" "${4:-2}"
		cat <<YAML
pools:
  - database: bench_t
    server_database: bench
    mode: transaction
    size: 20
max_client_connections: 5000
YAML
	} >"$DIR/$1.yaml"
	setsid "$2" -c "$DIR/$1.yaml" 2>"$DIR/$1.log" &
	PID[$1]=$!
	wait_port "${PORT[$1]}"
}

PORT[direct]=$PG_PORT
TARGETS=(direct pgbouncer tusk)
pgb_start pgbouncer "$PGB_REF"
if [ -n "$PGB_OLD" ]; then
	pgb_start pgb-old "$PGB_OLD"
	TARGETS+=(pgb-old)
fi
if [ "${PGB_SYSCA:-0}" = 1 ]; then
	pgb_start pgb-sysca "$PGB_REF" ""
	TARGETS+=(pgb-sysca)
fi
tusk_start tusk "$TUSK"
if [ -n "$BASE" ]; then
	tusk_start base "$BASE"
	TARGETS+=(base)
fi
# tusk without tickets: the resume part's, and a storm target (what issuing tickets costs).
tusk_start tusk-nt "$TUSK" "
    tls_session_tickets: false"
TARGETS+=(tusk-nt)
# ONE_WORKER=1: tusk with workers: 1 as well ("tusk-1w", light part only): a single relaying
# thread like PgBouncer's, to tell what two workers' wake-ups cost from what tusk's code costs.
if [ "${ONE_WORKER:-0}" = 1 ]; then
	tusk_start tusk-1w "$TUSK" "" 1
fi
NT=${#TARGETS[@]}

ticks() { if [ "$1" = direct ]; then echo 0; else bench_cpu_ticks "${PID[$1]}"; fi; }
db_of() { if [ "$1" = direct ]; then echo bench; else echo bench_t; fi; }
# storm_one TARGET: "logins/s cpu-µs-per-login"
storm_one() {
	local t=$1 out tps n c0 c1 cpu=-
	c0=$(ticks "$t")
	out=$(PGSSLMODE=require timeout $((DURATION + 60)) "$PG_BIN/pgbench" -n -C -S -c "$CLIENTS" -j 2 \
		-T "$DURATION" -h 127.0.0.1 -p "${PORT[$t]}" -U postgres "$(db_of "$t")" 2>&1) || true
	c1=$(ticks "$t")
	tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -n1)
	n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
	if [ -z "$tps" ]; then
		echo "tls_storm: $t failed: $(grep -m1 -iE 'error|fatal|abort' <<<"$out" | cut -c1-160)" >&2
		echo "failed -"
		return
	fi
	[ "$t" = direct ] || cpu=$(awk -v t=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v n="$n" 'BEGIN {printf "%.0f", t * 1e6 / hz / n}')
	echo "$tps $cpu"
}

case " $PARTS " in *" storm "*)
	declare -A res=() cpu=()
	echo
	echo "== storm: pgbench -n -C -S -c $CLIENTS -j 2 -T $DURATION, sslmode=require, $ROUNDS rounds;" \
		"pgbouncer is $PGB_REF_VERSION${PGB_OLD:+, pgb-old $PGB_OLD_VERSION}"
	printf '%-6s %-10s %12s %16s\n' round target logins/s "cpu µs/login"
	for round in $(seq 1 "$ROUNDS"); do
		for i in $(seq 0 $((NT - 1))); do
			t=${TARGETS[$(((i + round - 1) % NT))]}
			read -r l c < <(storm_one "$t")
			res[$t]="${res[$t]:-} $l"
			cpu[$t]="${cpu[$t]:-} $c"
			printf '%-6s %-10s %12s %16s\n' "$round" "$t" "$l" "$c"
		done
	done
	printf '%-10s %14s %12s %16s\n' target "median login/s" "vs pgbouncer" "cpu µs/login"
	b=$(bench_median <<<"${res[pgbouncer]}")
	for t in "${TARGETS[@]}"; do
		m=$(bench_median <<<"${res[$t]}")
		printf '%-10s %14s %12s %16s\n' "$t" "$m" "$(bench_ratio "$m" "$b")" "$(bench_median <<<"${cpu[$t]}")"
	done
	;;
esac

case " $PARTS " in *" resume "*)
	declare -A rr=() rf=() rc=()
	RT=(tusk tusk-full tusk-nt pgbouncer)
	echo
	echo "== resume: bench/tls_resume.py, one client, ${DURATION}s, $ROUNDS rounds (tusk-full: not offering" \
		"its session; tusk-nt: tls_session_tickets false)"
	printf '%-6s %-10s %10s %8s %16s\n' round target logins/s resumed "cpu µs/login"
	for round in $(seq 1 "$ROUNDS"); do
		for i in 0 1 2 3; do
			t=${RT[$(((i + round - 1) % 4))]}
			case $t in
			tusk-full) port=${PORT[tusk]} flag= p=tusk ;;
			*) port=${PORT[$t]} flag=--resume p=$t ;;
			esac
			c0=$(ticks "$p")
			read -r l f n < <(python3 bench/tls_resume.py 127.0.0.1 "$port" postgres bench_t "$DURATION" $flag ||
				echo "failed - 0")
			c1=$(ticks "$p")
			c=$(awk -v t=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v n="$n" 'BEGIN {if (n > 0) printf "%.0f", t * 1e6 / hz / n; else print "-"}')
			rr[$t]="${rr[$t]:-} $l"
			rc[$t]="${rc[$t]:-} $c"
			rf[$t]=$f
			printf '%-6s %-10s %10s %8s %16s\n' "$round" "$t" "$l" "$f" "$c"
		done
	done
	b=$(bench_median <<<"${rr[tusk-full]}")
	printf '%-10s %14s %16s %8s %16s\n' target "median login/s" "vs tusk-full" resumed "cpu µs/login"
	for t in "${RT[@]}"; do
		m=$(bench_median <<<"${rr[$t]}")
		printf '%-10s %14s %16s %8s %16s\n' "$t" "$m" "$(bench_ratio "$m" "$b")" "${rf[$t]}" "$(bench_median <<<"${rc[$t]}")"
	done
	;;
esac

case " $PARTS " in *" light "*)
	cc -O2 -o "$DIR/tls_login" bench/tls_login.c -lssl -lcrypto -lpthread
	declare -A lr=() lc=() lk=() lu=() lv=() li=()
	LT=()
	for t in pgbouncer ${PGB_OLD:+pgb-old} ${PID[pgb-sysca]:+pgb-sysca} tusk tusk-nt ${BASE:+base} ${PID[tusk-1w]:+tusk-1w}; do LT+=("$t:full" "$t:resume"); done
	echo
	echo "== light: bench/tls_login.c, $LIGHT_THREADS threads, one TLS context, a login + SELECT 1 each," \
		"${DURATION}s, $ROUNDS rounds (full: no session offered; resume: each thread offers its last)"
	printf '%-6s %-18s %10s %8s %16s %16s %10s\n' round target logins/s resumed "cpu µs/login" "client µs/login" "vol/invol"
	for round in $(seq 1 "$ROUNDS"); do
		for i in $(seq 0 $((${#LT[@]} - 1))); do
			k=${LT[$(((i + round - 1) % ${#LT[@]}))]}
			t=${k%%:*}
			r=0
			[ "${k#*:}" = resume ] && r=1
			c0=$(ticks "$t")
			read -r v0 i0 < <(bench_switches "${PID[$t]}")
			read -r n e f s u < <("$DIR/tls_login" 127.0.0.1 "${PORT[$t]}" postgres bench_t "$LIGHT_THREADS" "$DURATION" $r ||
				echo "0 0 0 1 0")
			c1=$(ticks "$t")
			read -r v1 i1 < <(bench_switches "${PID[$t]}")
			l=$(awk -v n="$n" -v s="$s" 'BEGIN {printf "%.0f", n / s}')
			sv=$(awk -v v=$((v1 - v0)) -v n="$n" 'BEGIN {if (n > 0) printf "%.2f", v / n; else print "-"}')
			si=$(awk -v v=$((i1 - i0)) -v n="$n" 'BEGIN {if (n > 0) printf "%.2f", v / n; else print "-"}')
			w=$sv/$si
			c=$(awk -v t=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v n="$n" 'BEGIN {if (n > 0) printf "%.0f", t * 1e6 / hz / n; else print "-"}')
			[ "$e" = 0 ] || echo "tls_storm: $k: $e failed logins" >&2
			lr[$k]="${lr[$k]:-} $l"
			lc[$k]="${lc[$k]:-} $c"
			lu[$k]="${lu[$k]:-} $u"
			lv[$k]="${lv[$k]:-} $sv"
			li[$k]="${li[$k]:-} $si"
			lk[$k]=$(awk -v f="$f" -v n="$n" 'BEGIN {if (n > 0) printf "%.2f", f / n; else print "-"}')
			printf '%-6s %-18s %10s %8s %16s %16s %10s\n' "$round" "$k" "$l" "${lk[$k]}" "$c" "$u" "$w"
		done
	done
	printf '%-18s %14s %12s %8s %16s %16s %10s\n' target "median login/s" "vs pgbouncer" resumed "cpu µs/login" "client µs/login" "vol/invol"
	for k in "${LT[@]}"; do
		m=$(bench_median <<<"${lr[$k]}")
		b=$(bench_median <<<"${lr[pgbouncer:${k#*:}]}")
		printf '%-18s %14s %12s %8s %16s %16s %10s\n' "$k" "$m" "$(bench_ratio "$m" "$b")" "${lk[$k]}" \
			"$(bench_median <<<"${lc[$k]}")" "$(bench_median <<<"${lu[$k]}")" \
			"$(bench_median <<<"${lv[$k]}")/$(bench_median <<<"${li[$k]}")"
	done
	;;
esac

case " $PARTS " in *" beside "*)
	declare -A bt=() bl=()
	echo
	echo "== beside: pgbench -n -S -c 8 -j 2 -T $DURATION plaintext, alone and beside a storm" \
		"(pgbench -C -S -c $CLIENTS sslmode=require) on the same pooler, $ROUNDS rounds"
	printf '%-6s %-18s %10s %12s %14s\n' round run "relay tps" "latency ms" "storm login/s"
	BT=(tusk:alone pgbouncer:alone tusk:storm pgbouncer:storm)
	[ -z "$BASE" ] || BT+=(base:alone base:storm)
	for round in $(seq 1 "$ROUNDS"); do
		for i in $(seq 0 $((${#BT[@]} - 1))); do
			k=${BT[$(((i + round - 1) % ${#BT[@]}))]}
			t=${k%%:*}
			sp= sl=-
			if [ "${k#*:}" = storm ]; then
				PGSSLMODE=require timeout $((DURATION + 60)) "$PG_BIN/pgbench" -n -C -S -c "$CLIENTS" -j 2 \
					-T $((DURATION + 2)) -h 127.0.0.1 -p "${PORT[$t]}" -U postgres bench_t >"$DIR/storm.out" 2>&1 &
				sp=$!
				sleep 1
			fi
			out=$(PGSSLMODE=disable "$PG_BIN/pgbench" -n -S -c 8 -j 2 -T "$DURATION" -h 127.0.0.1 \
				-p "${PORT[$t]}" -U postgres bench_t 2>&1) || true
			if [ -n "$sp" ]; then
				wait "$sp" || true
				sl=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$DIR/storm.out" | head -n1)
			fi
			tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -n1)
			lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out")
			bt[$k]="${bt[$k]:-} ${tps:-failed}"
			bl[$k]="${bl[$k]:-} ${lat:-failed}"
			printf '%-6s %-18s %10s %12s %14s\n' "$round" "$k" "${tps:-failed}" "${lat:-failed}" "$sl"
		done
	done
	printf '%-18s %12s %12s %18s\n' run "median tps" "latency ms" "tps storm / alone"
	for k in "${BT[@]}"; do
		m=$(bench_median <<<"${bt[$k]}")
		a=$(bench_median <<<"${bt[${k%%:*}:alone]}")
		printf '%-18s %12s %12s %18s\n' "$k" "$m" "$(bench_median <<<"${bl[$k]}")" "$(bench_ratio "$m" "$a")"
	done
	;;
esac
echo
echo "tls_storm: load average $(cut -d' ' -f1-3 /proc/loadavg) at the end" >&2
