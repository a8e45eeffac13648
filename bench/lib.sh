# shellcheck shell=bash
# bench/lib.sh: what the bench scripts share, sourced by each: a scratch directory, a
# throwaway PostgreSQL 15, PgBouncer's configuration and start, and the head of a tusk
# configuration. Sourcing runs nothing. A script may set BENCH_NAME (the prefix of its messages,
# "bench" by default) first, and calls bench_pg_stop from its EXIT trap.
# Env: PG_BIN (default /usr/lib/postgresql/15/bin), PGBOUNCER (/usr/sbin/pgbouncer: Debian's,
# 1.18), PGBOUNCER_125 and PEERS_DIR / PEERS_CACHE (bench_pgbouncer_find).
#
# Every pooler runs in a session of its own: start it as `setsid CMD ... &`. A daemon or a
# systemd service has one, and PgBouncer -d makes its own. With autogroup scheduling
# (kernel.sched_autogroup_enabled, on by default) a process left in this script's session
# shares one CPU share with pgbench, which runs here too, and wakes up, sleeps and is
# preempted far more often: on this 2-core machine that alone made tusk's CPU per transaction
# 1.8x PgBouncer's instead of 1.1x, and a bare relay's (bench/floor.c) 1.5x instead of 1.0x
# (bench/wakeups.sh, 2026-11-22). In a script (no job control) a background job is no
# process-group leader, so setsid execs in place and $! is the pooler's own pid.
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PGBOUNCER=${PGBOUNCER:-/usr/sbin/pgbouncer}
BENCH_NAME=${BENCH_NAME:-bench}
pg_started=

# PostgreSQL refuses to run as root: as root, run its tools as postgres.
as_postgres() {
	if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
# A free loopback port below the kernel's ephemeral range (32768-60999), where the relays'
# outgoing connections never take their local port, and not handed out before by this script
# (called as $(free_port), a subshell: the ports given are kept in a file named by the script's
# pid, which $$ still is in a subshell).
free_port() {
	local p given=/tmp/bench-ports.$$
	touch "$given"
	while :; do
		p=$((10000 + RANDOM % 22000))
		grep -qx "$p" "$given" && continue
		ss -Htan "sport = :$p" 2>/dev/null | grep -q . && continue
		break
	done
	echo "$p" >> "$given"
	echo "$p"
}
wait_port() { # PORT: until something accepts on it (10 s)
	for _ in $(seq 1 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	echo "$BENCH_NAME: nothing listens on $1" >&2
	return 1
}
# chown to postgres when running as root (its servers run as postgres and read these).
bench_chown() {
	if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$@"; fi
}

# bench_dir PREFIX: a fresh scratch directory in DIR, PostgreSQL's data directory in PGDATA.
bench_dir() {
	DIR=$(mktemp -d "/tmp/$1.XXXXXX")
	chmod 755 "$DIR"
	bench_chown "$DIR"
	PGDATA=$DIR/pgdata
}

# bench_pg_init PORT [CONF]: initdb in PGDATA, listening on 127.0.0.1:PORT only (sockets in
# DIR), without fsync; CONF (lines) is added to postgresql.conf.
bench_pg_init() {
	as_postgres "$PG_BIN/initdb" -D "$PGDATA" -U postgres -A trust -E UTF8 --locale=C -N >/dev/null
	cat >>"$PGDATA/postgresql.conf" <<CONF
port = $1
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
fsync = off
${2:-}
CONF
}

# bench_pg_init_tls PORT [CONF]: bench_pg_init with TLS on, and one self-signed certificate
# (DIR/server.crt, DIR/server.key) for PostgreSQL and the poolers alike; max_connections 400
# (compare.sh with TUSK_BASE_BIN runs four poolers, each keeping 32 session and 20 transaction
# servers: 208, and 32 direct clients beside them).
bench_pg_init_tls() {
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost -keyout "$DIR/server.key" \
		-out "$DIR/server.crt" >/dev/null 2>&1
	chmod 600 "$DIR/server.key"
	bench_chown "$DIR/server.key" "$DIR/server.crt"
	bench_pg_init "$1" "ssl = on
ssl_cert_file = '$DIR/server.crt'
ssl_key_file = '$DIR/server.key'
max_connections = 400
${2:-}"
}

# bench_pg_start PORT SCALE: start it, and create database bench with pgbench's tables at SCALE.
bench_pg_start() {
	as_postgres "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$DIR/postgres.log" -w -t 60 start >/dev/null
	pg_started=1
	"$PG_BIN/createdb" -h 127.0.0.1 -p "$1" -U postgres bench
	"$PG_BIN/pgbench" -i -q -s "$2" -h 127.0.0.1 -p "$1" -U postgres bench >/dev/null 2>&1
}

bench_pg_stop() {
	rm -f "/tmp/bench-ports.$$"
	[ -n "$pg_started" ] && as_postgres "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1
	pg_started=
}

# bench_pgbouncer_find: the PgBouncer to compare with. PGB_REF (binary) and PGB_REF_VERSION
# ("1.25.2"): the current release when there is one, else Debian's; PGB_OLD: Debian's too when
# the reference is the newer one (both then run), else empty. The current release is, in this
# order: PGBOUNCER_125 (a binary; "none": do without), PEERS_CACHE/pgbouncer-1.25/pgbouncer
# (default /var/tmp/tusk-peers), else built there from PEERS_DIR (default ../shared/peers or
# ../wt/shared/peers beside the checkout: build-pgbouncer.sh and its tarball) when present.
bench_pgbouncer_version() { "$1" --version 2>/dev/null | head -n1 | awk '{print $NF}'; }
bench_pgbouncer_find() {
	local new=${PGBOUNCER_125:-} cache=${PEERS_CACHE:-/var/tmp/tusk-peers}/pgbouncer-1.25 peers=${PEERS_DIR:-} d
	if [ -z "$new" ] && [ -x "$cache/pgbouncer" ]; then new=$cache/pgbouncer; fi
	if [ -z "$new" ]; then
		for d in "$PWD/../shared/peers" "$PWD/../wt/shared/peers"; do
			[ -z "$peers" ] && [ -f "$d/build-pgbouncer.sh" ] && peers=$d
		done
		if [ -n "$peers" ] && [ -f "$peers/pgbouncer-1.25.2.tar.gz" ]; then
			echo "$BENCH_NAME: building PgBouncer 1.25.2 from $peers into $cache (once)" >&2
			mkdir -p "$(dirname "$cache")"
			# several checkouts may bench at once: one builds, the others wait for it
			if (flock 9 && { [ -x "$cache/pgbouncer" ] || { bash "$peers/build-pgbouncer.sh" "$cache.tmp$$" >&2 &&
				mkdir -p "$cache" && mv "$cache.tmp$$/pgbouncer" "$cache/pgbouncer"; }; }) \
				9>"$(dirname "$cache")/.build.lock"; then
				new=$cache/pgbouncer
			else
				echo "$BENCH_NAME: building PgBouncer 1.25.2 failed (needs autoconf automake libtool" \
					"pkg-config libevent-dev libssl-dev): comparing with $PGBOUNCER" >&2
			fi
			rm -rf "$cache.tmp$$"
		fi
	fi
	[ "$new" = none ] && new=
	if [ -n "$new" ] && [ -x "$new" ]; then
		PGB_REF=$new
		PGB_OLD=
		[ -x "$PGBOUNCER" ] && [ "$(bench_pgbouncer_version "$PGBOUNCER")" != "$(bench_pgbouncer_version "$new")" ] &&
			PGB_OLD=$PGBOUNCER
	else
		PGB_REF=$PGBOUNCER
		PGB_OLD=
	fi
	[ -x "$PGB_REF" ] || { echo "$BENCH_NAME: no PgBouncer ($PGB_REF)" >&2; return 1; }
	PGB_REF_VERSION=$(bench_pgbouncer_version "$PGB_REF")
	PGB_OLD_VERSION=${PGB_OLD:+$(bench_pgbouncer_version "$PGB_OLD")}
	echo "$BENCH_NAME: reference PgBouncer $PGB_REF_VERSION ($PGB_REF)${PGB_OLD:+, also $PGB_OLD_VERSION ($PGB_OLD)}" >&2
}

# bench_pgbouncer_ini PORT MAX_CLIENT_CONN DATABASES [SETTINGS [NAME]]: DIR/NAME.ini (NAME:
# pgbouncer by default; trust for postgres, log and pid file DIR/NAME.log, DIR/NAME.pid) with
# the [databases] lines DATABASES and more [pgbouncer] lines SETTINGS.
bench_pgbouncer_ini() {
	local name=${5:-pgbouncer}
	cat >"$DIR/userlist.txt" <<EOT
"postgres" ""
EOT
	cat >"$DIR/$name.ini" <<INI
[databases]
$3
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $1
unix_socket_dir =
auth_type = trust
auth_file = $DIR/userlist.txt
max_client_conn = $2
max_db_connections = 0
logfile = $DIR/$name.log
pidfile = $DIR/$name.pid
${4:-}
INI
	bench_chown "$DIR/$name.ini" "$DIR/userlist.txt"
}

# bench_pgbouncer_start NOFILE [NAME [BINARY]]: PgBouncer (BINARY, default $PGBOUNCER) on
# DIR/NAME.ini daemonised (its pid in DIR/NAME.pid) with that many descriptors. It refuses to
# run as root, and runuser does not pass on the descriptor limit: it is set in the daemon's own
# shell.
bench_pgbouncer_start() {
	local name=${2:-pgbouncer}
	rm -f "$DIR/$name.pid"
	as_postgres bash -c "ulimit -n $1 2>/dev/null; exec ${3:-$PGBOUNCER} -d $DIR/$name.ini"
}

# bench_tusk_yaml PORT PG_PORT [LISTEN [WORKERS]]: the head of a tusk configuration (WORKERS
# workers, 2 by default; warnings on stderr, service "main" on PostgreSQL); LISTEN: more lines of
# the listen entry. The caller appends its pools.
bench_tusk_yaml() {
	cat <<YAML
listen:
  - host: 127.0.0.1
    port: $1
${3:-}
workers: ${4:-2}
log: {level: warn, format: text, target: stderr}
services:
  main:
    hosts: ["127.0.0.1:$2"]
YAML
}

# bench_tusk_txn_yaml PORT PG_PORT POOL [WORKERS]: bench_tusk_yaml with one transaction pool,
# database bench_t served by PostgreSQL's bench, of POOL servers.
bench_tusk_txn_yaml() {
	bench_tusk_yaml "$1" "$2" "" "${4:-2}"
	cat <<YAML
pools:
  - database: bench_t
    server_database: bench
    mode: transaction
    size: $3
YAML
}

# bench_stop_pid PID: TERM, up to 10 s to go, then KILL; reaped if it is our child.
bench_stop_pid() {
	[ -n "$1" ] || return 0
	kill -TERM "$1" 2>/dev/null || true
	for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}
# Poolers a script runs by name (floor.sh, cost.sh): bench_poolers_init declares the global
# maps PID and PORT (name -> pid, port) and, at exit, stops every pooler, PostgreSQL and $DIR;
# bench_stop_pooler NAME stops one; bench_pooler_cpu NAME MODE is bench_pgbench_cpu through it
# on database bench_t, TXNS transactions per client.
bench_stop_pooler() {
	bench_stop_pid "${PID[$1]:-}"
	PID[$1]=
}
bench_poolers_cleanup() {
	set +e
	for p in "${!PID[@]}"; do bench_stop_pooler "$p"; done
	bench_pg_stop
	rm -rf "$DIR"
}
bench_poolers_init() {
	declare -gA PID=() PORT=()
	trap bench_poolers_cleanup EXIT
	trap 'exit 130' INT TERM
}
bench_pooler_cpu() { bench_pgbench_cpu "${PID[$1]}" "${PORT[$1]}" bench_t "$2" "$TXNS"; }
# bench_cpu_ticks PID: user + system CPU of the process so far, in clock ticks.
bench_cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# bench_switches PID: voluntary and involuntary context switches of all its threads so far.
bench_switches() {
	cat /proc/"$1"/task/*/status | awk '/^voluntary_ctxt/ {v += $2} /^nonvoluntary_ctxt/ {n += $2} END {print v, n}'
}
# bench_pgbench_cpu PID PORT DB MODE TXNS: pgbench -S, 32 clients, TXNS each, through PORT;
# prints the CPU µs per transaction PID spent, or "failed" (the reason on stderr).
bench_pgbench_cpu() {
	local out n c0 c1
	c0=$(bench_cpu_ticks "$1")
	if ! out=$(PGSSLMODE=disable "$PG_BIN/pgbench" -n -S -M "$4" -c 32 -j 2 -t "$5" -h 127.0.0.1 -p "$2" \
		-U postgres "$3" 2>&1); then
		echo "$BENCH_NAME: pgbench -M $4 on port $2 failed: $(grep -m1 -iE 'error|fatal|abort' <<<"$out" | cut -c1-160)" >&2
		echo failed
		return
	fi
	c1=$(bench_cpu_ticks "$1")
	n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
	awk -v t=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v n="$n" 'BEGIN {printf "%.1f\n", t * 1e6 / hz / n}'
}
# bench_median: the median of the numbers on stdin (words that are not numbers are skipped),
# one decimal, or n/a.
bench_median() { tr ' ' '\n' | { grep -E '^[0-9.]+$' || true; } | sort -g | awk '{a[NR]=$1} END {if (NR==0) print "n/a"; else if (NR%2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}'; }
# bench_ratio A B: A / B to two decimals, or n/a.
bench_ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "n/a" || b == "n/a" || b == 0) print "n/a"; else printf "%.2f", a / b}'; }
