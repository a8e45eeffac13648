"""On-CPU time per call of a tusk and of the PostgreSQL processes (docs/kv.md, "Speed", fourth
step; issue 25): /proc/*/task/*/schedstat before and after (polled while pgbench runs, so a
backend that exits with its client is counted too), divided by the calls.

  python3 bench/kv_parts/cpu.py DATA TUSKPID PORT SCRIPT DB N   (env U: pgbench's user, postgres)

DATA: the PostgreSQL data directory (tusk_zone.py prints it); PORT: a tusk's or PostgreSQL's;
SCRIPT: a file of bench/kv_parts/tusk/ (fget.sql, fpget.sql: one key, also valid directly on
kv_shard_1) or a path; several, separated by commas, are one pgbench -f each (pgbench picks one
at random per call: redesign/cpuab.sh)."""
import glob
import os
import subprocess
import sys
import time

data, tpid, port, script, db, n = sys.argv[1:7]
n = int(n)
pm = open(os.path.join(data, "postmaster.pid")).readline().strip()
here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tusk")
scripts = [f if "/" in f else os.path.join(here, f) for f in script.split(",")]


def cpu(p):
    s = 0
    for t in glob.glob(f"/proc/{p}/task/*/schedstat"):
        try:
            s += int(open(t).read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return s


def kids():
    r = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if open(f"/proc/{p}/stat").read().split(") ")[1].split()[1] == pm:
                    r.append(p)
            except (OSError, IndexError):
                pass
    return r


first = {p: cpu(p) for p in kids()}
last = dict(first)
t0 = cpu(tpid)
pr = subprocess.Popen(["pgbench", "-n", "-M", "prepared", "-h", "127.0.0.1", "-p", port, "-U", os.environ.get("U", "postgres"),
                       "-t", str(n), *(a for f in scripts for a in ("-f", f)), db], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
while pr.poll() is None:
    for p in kids():
        c = cpu(p)
        if c:
            last[p] = c
        first.setdefault(p, 0)
    time.sleep(0.005)
out = pr.stdout.read()
t1 = cpu(tpid)
tps = float([line for line in out.splitlines() if line.startswith("tps")][0].split()[2])
pg = sum(v - first.get(p, 0) for p, v in last.items())
print(f"{os.path.basename(scripts[0]):10} {port}: wall {1e6 / tps:6.1f} us, tusk {(t1 - t0) / n / 1e3:6.1f} us, "
      f"postgres {pg / n / 1e3:6.1f} us per call", flush=True)
