#!/usr/bin/env python3
"""The body of bench/failover.sh (see there). Prints numbers only; asserts nothing."""

import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
import conftest  # noqa: E402
from conftest import Tusk  # noqa: E402
from failover_util import TUSK_SETTINGS, pools, prepare, run_failover, service  # noqa: E402
from repl_util import make_cluster  # noqa: E402

WAIT_FIRST = 20.0


def one(binary, target, d):
    c = make_cluster(d / "cluster")
    try:
        prepare(c)
        conftest.TUSK_BIN = Path(binary)
        t = Tusk(d / "tusk", c.primary.port, services=service(c), pools=pools(target), log_level="warn",
                 **TUSK_SETTINGS).start(timeout=30)
        try:
            return run_failover(c, t, writers=4, readers=3 if target == "read-write-split" else 0,
                                wait_first=WAIT_FIRST)
        finally:
            t.stop()
    finally:
        c.destroy()


def main():
    runs = int(os.environ.get("RUNS", "5"))
    targets = os.environ.get("TARGETS", "primary read-write-split").split()
    bins = {"after": os.environ.get("TUSK_BIN", str(REPO / "build" / "tusk"))}
    if os.environ.get("TUSK_BEFORE_BIN"):
        bins = {"before": os.environ["TUSK_BEFORE_BIN"], **bins}
    results = {(b, tg): [] for b in bins for tg in targets}
    for r in range(runs):
        for tg in targets:
            order = list(bins) if r % 2 == 0 else list(reversed(bins))
            for b in order:
                with tempfile.TemporaryDirectory(prefix="tusk-fo-") as d:
                    os.chmod(d, 0o755)
                    out = one(bins[b], tg, Path(d))
                results[(b, tg)].append(out)
                fw = out["first_write"]
                print(f"run {r + 1} {b:6} {tg:16} first write "
                      f"{'> %.0f' % WAIT_FIRST if fw is None else '%.2f' % fw} s; failed in flight "
                      f"{len(out['inflight'])}, not in flight {len(out['not_inflight'])}; reader errors "
                      f"{len(out['reader_errors'])}/{out['reads']}; idle errors {len(out['idle_errors'])}; "
                      f"lost {len(out['lost'])} of {len(out['acked'])}", flush=True)
    print()
    print("binary  pool              first write after pg_promote() (s): median  max   | failed in flight | "
          "not in flight | reader errors | idle errors | acked lost")
    for (b, tg), outs in results.items():
        fws = [o["first_write"] if o["first_write"] is not None else float("inf") for o in outs]
        fmt = lambda v: f"> {WAIT_FIRST:.0f}" if v == float("inf") else f"{v:.2f}"  # noqa: E731
        print(f"{b:7} {tg:17} {', '.join(fmt(v) for v in fws):32} {fmt(statistics.median(fws)):>6} "
              f"{fmt(max(fws)):>5} | {sum(len(o['inflight']) for o in outs):16} | "
              f"{sum(len(o['not_inflight']) for o in outs):13} | {sum(len(o['reader_errors']) for o in outs):13} | "
              f"{sum(len(o['idle_errors']) for o in outs):11} | {sum(len(o['lost']) for o in outs)}")


if __name__ == "__main__":
    main()
