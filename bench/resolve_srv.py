#!/usr/bin/env python3
"""Resolution of N SRV records (default 1,000) by src/resolve/: one SRV name whose answer (over
TCP: it does not fit in UDP) names N targets, each with one A record, served by the test suite's
DNS server on a loopback port. Prints the time from the resolver's start to the callback with
all N backends (tests/tools/resolve_probe reports it), median of the runs.
Usage: bench/resolve_srv.py [N] [RUNS]   (TUSK_BIN names the build dir's tusk; default build/tusk)"""

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
from dns_util import DnsServer, ResolveProbe  # noqa: E402


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    probe_bin = Path(os.environ.get("TUSK_BIN", REPO / "build" / "tusk")).resolve().parent / "resolve_probe"
    dns = DnsServer()
    dns.set_srv("_postgresql._tcp.many.test",
                [(i % 3, 1 + i % 7, 5432, f"h{i:04d}.many.test") for i in range(n)], ttl=3600)
    for i in range(n):
        dns.set_a(f"h{i:04d}.many.test", [f"10.{1 + i // 65536}.{(i // 256) % 256}.{i % 256}"], ttl=3600)
    times = []
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "resolve.yaml"
        cfg.write_text("services:\n  many:\n    srv: _postgresql._tcp.many.test\n"
                       f"    nameservers: [\"{dns.nameserver}\"]\n    dns_min_ttl: 1h\n    dns_max_ttl: 1h\n"
                       "pools: [{}]\n")
        for _ in range(runs):
            q0 = dns.queries
            p = ResolveProbe(probe_bin, cfg, "many", Path(d) / "probe.log")
            try:
                u = p.wait_update(1, 120)
            finally:
                p.close()
            if len(u["backends"]) != n:
                sys.exit(f"resolve_srv: {len(u['backends'])} backends, expected {n}")
            times.append(u["t"])
            queries = dns.queries - q0
            time.sleep(0.2)
    dns.close()
    print(f"resolve {n} SRV records (+{n} targets' A/AAAA, {queries} queries per run): "
          f"median {statistics.median(times) * 1000:.0f} ms, min {min(times) * 1000:.0f} ms, "
          f"max {max(times) * 1000:.0f} ms over {runs} runs")


if __name__ == "__main__":
    main()
