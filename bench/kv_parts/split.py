"""Where one call's wall time goes, at 1 connection (docs/kv.md, "Speed", eleventh step; issue 25).

  python3 bench/kv_parts/split.py PERF_SCRIPT_TXT TUSKPID CLIENTFD CALLS CPU_TUSK_NS CPU_BACKENDS_NS

PERF_SCRIPT_TXT: `perf script -F comm,pid,tid,cpu,time,event,trace` of the syscalls:sys_enter_sendto,
sys_enter_recvfrom and sys_exit_recvfrom tracepoints of the tusk and of the PostgreSQL backends that
served its calls (split.sh records them). Per call, from the timestamps (the medians, in us):
  client     tusk's answer sent to the client -> the client's next request read (pgbench, both
             wake-ups, the loopback both ways)
  tusk_in    the request read -> the statement sent to the shard (the relay: the bytes forwarded)
  to_shard   tusk's send -> the backend's read of it, plus the backend's answer sent -> tusk's read
             (the loopback and the wake-ups both ways)
  backend    the backend's read of the statement -> its answer sent (parse, execute, commit)
  tusk_out   the shard's answer read -> the client's answer sent
and the on-CPU time per call of the tusk and of the backends (schedstat deltas over CALLS)."""
import re
import statistics as st
import sys

f, tpid, cfd, calls, cpu_t, cpu_b = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), \
    int(sys.argv[5]), int(sys.argv[6])
rx = re.compile(r'^\s*\S+\s+(\d+)/\d+\s+\[\d+\]\s+(\d+\.\d+): +syscalls:sys_(enter_sendto|exit_recvfrom|enter_recvfrom): '
                r'(?:fd: 0x([0-9a-f]+))?(?:0x([0-9a-f]+))?')
last_fd = {}
ev = []
for line in open(f):
    m = rx.search(line)
    if not m:
        continue
    pid, t, k = int(m[1]), float(m[2]), m[3]
    if k == 'enter_recvfrom':
        last_fd[pid] = int(m[4], 16)
    elif k == 'exit_recvfrom':
        n = int(m[5], 16)
        if 0 < n < 0x80000000 and pid in last_fd:  # not EAGAIN, not EOF
            ev.append((t, pid, 'r', last_fd[pid]))
    else:
        ev.append((t, pid, 's', int(m[4], 16)))
seg = {k: [] for k in ('client', 'tusk_in', 'to_shard', 'backend', 'tusk_out')}
cur = {}
for t, pid, op, fd in ev:
    if pid == tpid:
        if op == 'r' and fd == cfd:
            if 'cs' in cur:
                seg['client'].append(t - cur['cs'])
            cur = {'cr': t}
        elif op == 's' and fd != cfd and 'cr' in cur and 'ss' not in cur:
            cur['ss'] = t
        elif op == 'r' and fd != cfd and 'ss' in cur and 'sr' not in cur and 'bs' in cur:
            cur['sr'] = t
        elif op == 's' and fd == cfd and 'sr' in cur and 'cs' not in cur:
            cur['cs'] = t
            seg['tusk_in'].append(cur['ss'] - cur['cr'])
            seg['to_shard'].append((cur['br'] - cur['ss']) + (cur['sr'] - cur['bs']))
            seg['backend'].append(cur['bs'] - cur['br'])
            seg['tusk_out'].append(t - cur['sr'])
    elif op == 'r' and 'ss' in cur and 'br' not in cur:
        cur['br'] = t
    elif op == 's' and 'br' in cur and 'bs' not in cur:
        cur['bs'] = t
med = {k: st.median(v) * 1e6 for k, v in seg.items() if v}
print(" ".join(f"{k} {v:.1f}" for k, v in med.items()) +
      f" sum {sum(med.values()):.1f} n {len(seg['backend'])} cpu_tusk {cpu_t / 1e3 / calls:.1f} "
      f"cpu_backend {cpu_b / 1e3 / calls:.1f}")
