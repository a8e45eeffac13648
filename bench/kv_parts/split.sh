#!/bin/bash
# Where a 1-connection call's wall time goes, kv against the plain pool (docs/kv.md, "Speed",
# eleventh step; issue 25): for each round and each of put, pput, get, pget (bench/kv_parts/tusk/,
# random keys 0..3999; the order reversed every other round), pgbench -n -M prepared -c 1 -T
# SECONDS through the tusk on TUSKPORT while `perf record` takes the sendto/recvfrom tracepoints of
# the tusk and of the PostgreSQL backends serving it (kv: kv_router's; plain: the plain database's),
# and /proc schedstat their CPU; split.py cuts each call into client, tusk_in, to_shard, backend,
# tusk_out. Medians per round, then the medians of the rounds. Tracing adds ~1 us per syscall.
#   bench/kv_parts/split.sh TUSKPORT [ROUNDS [SECONDS [F]]]   (after tusk_zone.py and a tusk on it; root)
# F=f: the one-key scripts (fput, fpput, fget, fpget: every kv call on one shard's backend).
set -e
TP=$1; R=${2:-5}; T=${3:-2}; F=${4:-}; D=$(cd "$(dirname "$0")" && pwd); W=$(mktemp -d /tmp/kv-split.XXXXXX)
trap 'rm -rf "$W"' EXIT
P=$(ss -tlnpH "sport = :$TP" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
cpu() {  # on-CPU ns of the comma-separated pids, every thread
	local s=0 p f ps; IFS=, read -ra ps <<< "$1"
	for p in "${ps[@]}"; do for f in /proc/"$p"/task/*/schedstat; do
		[ -r "$f" ] && s=$((s + $(cut -d' ' -f1 "$f" 2>/dev/null || echo 0)))
	done; done; echo $s; }
one() {  # one script: prints split.py's line
	local s=$F$1 db=kv pat='postgres: kv_router kv_shard'
	case $1 in pput | pget) db=plain pat='postgres: postgres plain ' ;; esac
	pgbench -n -M prepared -h 127.0.0.1 -p "$TP" -U postgres -c 1 -t 50 -f "$D/tusk/$s.sql" $db >/dev/null 2>&1
	local be; be=$(pgrep -f "$pat" | paste -sd,)
	perf record -q -o "$W/p.data" -e syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_exit_recvfrom \
		-p "$P,$be" -- sleep $((T + 1)) >/dev/null 2>&1 &
	local sp=$! t0 b0; sleep 0.3
	t0=$(cpu "$P"); b0=$(cpu "$be")
	pgbench -n -M prepared -h 127.0.0.1 -p "$TP" -U postgres -c 1 -T "$T" -f "$D/tusk/$s.sql" $db > "$W/pgb" 2>&1 &
	local pb=$! cfd; sleep 0.5
	cfd=$(ss -tnpH "sport = :$TP" | grep -o "pid=$P,fd=[0-9]*" | head -1 | cut -d= -f3)
	wait $pb
	local t1 b1 n; t1=$(cpu "$P"); b1=$(cpu "$be")
	wait $sp
	n=$(awk '/number of transactions actually processed/{print $NF}' "$W/pgb" | cut -d/ -f1)
	perf script -F comm,pid,tid,cpu,time,event,trace -i "$W/p.data" 2>/dev/null > "$W/p.txt"
	echo "$1 tps $(awk '/^tps/{printf "%.0f", $3}' "$W/pgb") $(/usr/bin/python3 "$D/split.py" "$W/p.txt" "$P" "$cfd" "$n" \
		$((t1 - t0)) $((b1 - b0)))"
}
echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for r in $(seq "$R"); do
	if [ $((r % 2)) = 1 ]; then order="put pput get pget"; else order="pget get pput put"; fi
	for s in $order; do one "$s" | tee -a "$W/all" >&2; done
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
/usr/bin/python3 - "$W/all" <<'EOF'
import sys, statistics as st, collections
d = collections.defaultdict(lambda: collections.defaultdict(list))
for l in open(sys.argv[1]):
    w = l.split(); s = w[0]
    for k, v in zip(w[1::2], w[2::2]): d[s][k].append(float(v))
keys = ['tps', 'client', 'tusk_in', 'to_shard', 'backend', 'tusk_out', 'sum', 'cpu_tusk', 'cpu_backend']
print(f"{'median of rounds':8} " + " ".join(f"{k:>11}" for k in keys))
for s in ('put', 'pput', 'get', 'pget'):
    print(f"{s:16} " + " ".join(f"{st.median(d[s][k]):11.1f}" for k in keys))
EOF
