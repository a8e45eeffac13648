#!/usr/bin/env python3
"""pgbench -S (select-only) through target_session_attrs: read-write-split over a primary and
two streaming standbys, against the same through target_session_attrs: primary (everything on
the primary). Rounds alternate the two (ROUNDS, default 3; the order flips each round); prints
each round's tps, the medians, their ratio, and the share of the split's transactions each
node committed (pg_stat_database.xact_commit of the test database, before and after).
Usage: bench/split.sh [SECONDS]   (default 20; env ROUNDS, CLIENTS (16), SCALE (10), TUSK_BIN)"""

import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
from conftest import PG_BIN, TEST_DB, Tusk  # noqa: E402
from repl_util import make_cluster  # noqa: E402


def commits(node):
    return node.execute("select xact_commit from pg_stat_database where datname = %s", [TEST_DB])[0][0]


def pgbench(port, seconds, clients):
    out = subprocess.run([str(PG_BIN / "pgbench"), "-n", "-S", "-c", str(clients), "-j", "2", "-T", str(seconds),
                          "-h", "127.0.0.1", "-p", str(port), "-U", "tusk_trust", TEST_DB],
                         capture_output=True, text=True, timeout=seconds + 120)
    m = re.search(r"tps = ([0-9.]+) \((?:without initial connection time|excluding connections establishing)\)",
                  out.stdout)
    if out.returncode != 0 or not m:
        sys.exit(f"split: pgbench failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    failed = re.search(r"number of failed transactions: (\d+)", out.stdout)
    if failed and int(failed.group(1)):
        sys.exit(f"split: {failed.group(1)} failed transactions:\n{out.stdout}")
    return float(m.group(1))


def main():
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    rounds = int(os.environ.get("ROUNDS", "3"))
    clients = int(os.environ.get("CLIENTS", "16"))
    scale = int(os.environ.get("SCALE", "10"))
    with tempfile.TemporaryDirectory(prefix="tusk-split-") as d:
        os.chmod(d, 0o755)
        c = make_cluster(Path(d) / "cluster")
        try:
            subprocess.run([str(PG_BIN / "pgbench"), "-i", "-q", "-s", str(scale), "-h", "127.0.0.1", "-p",
                            str(c.primary.port), "-U", "tusk_trust", TEST_DB], check=True, capture_output=True,
                           timeout=600)
            c.primary.execute("checkpoint")
            for s in c.standbys:
                c.wait_replayed(s, timeout=120)
            service = {"main": {"hosts": [f"127.0.0.1:{n.port}" for n in c.nodes]}}
            tusks = {}
            for name, target in (("split", "read-write-split"), ("primary", "primary")):
                tusks[name] = Tusk(Path(d) / f"tusk-{name}", c.primary.port, services=service, log_level="warn",
                                   pools=[{"database": "*", "user": "*", "service": "main", "mode": "transaction",
                                           "size": clients + 4, "target_session_attrs": target}]).start()
            tps = {"split": [], "primary": []}
            share = {n.port: 0 for n in c.nodes}
            for r in range(rounds):
                order = ["split", "primary"] if r % 2 == 0 else ["primary", "split"]
                for name in order:
                    before = {n.port: commits(n) for n in c.nodes}
                    tps[name].append(pgbench(tusks[name].port, seconds, clients))
                    if name == "split":
                        for n in c.nodes:
                            share[n.port] += commits(n) - before[n.port]
                    print(f"round {r + 1}: {name:7s} {tps[name][-1]:9.0f} tps", flush=True)
            for t in tusks.values():
                t.stop()
        finally:
            c.destroy()
    total = sum(share.values()) or 1
    on_standbys = sum(v for p, v in share.items() if p != c.primary.port) / total
    ms, mp = statistics.median(tps["split"]), statistics.median(tps["primary"])
    print(f"pgbench -S, {clients} clients, {seconds}s x {rounds} rounds, scale {scale}, tusk 2 workers")
    print(f"read-write-split (primary + 2 standbys): median {ms:.0f} tps  {[round(x) for x in tps['split']]}")
    print(f"target_session_attrs primary:           median {mp:.0f} tps  {[round(x) for x in tps['primary']]}")
    print(f"ratio split / primary: {ms / mp:.2f}")
    print(f"split's transactions committed by the standbys: {on_standbys * 100:.1f}% "
          f"(per node: primary {share[c.primary.port]}, "
          + ", ".join(f"standby {share[s.port]}" for s in c.standbys) + ")")


if __name__ == "__main__":
    main()
