#!/usr/bin/python3
"""bench/drivers_pass.py PG_PORT TUSK_PORT BOUNCER_PORT CA: the driver suites (tests/drivers)
direct, through tusk and through PgBouncer (both serving tusk_test from 3 servers and
tusk_test_one from 1, TLS allowed with a certificate of CA), each target's answers judged against
PostgreSQL's as tests/integration/test_drivers.py judges tusk's. Prints a table of cases passed
and, per target, the cases that failed and how. Run by bench/drivers.sh."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "drivers"))
import harness  # noqa: E402

pg_port, tusk_port, bouncer_port, ca = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
TARGETS = {"direct": (pg_port, None), "tusk": (tusk_port, "tusk_test_one"),
           "pgbouncer": (bouncer_port, "tusk_test_one")}

rows, failures = [], []
for suite in harness.CASES:
    why = harness.available(suite)
    if why:
        print(f"{suite}: not run: {why}")
        continue
    answers = {}
    for target, (port, one_db) in TARGETS.items():
        answers[target] = harness.run_suite(suite, "127.0.0.1", port, "tusk_test", "tusk_trust",
                                            tag=f"bp_{suite}_{target[0]}", one_db=one_db,
                                            tls_port=None if target == "direct" else port, tls_ca=ca)
    counts = {}
    for target in TARGETS:
        n = 0
        for case in harness.CASES[suite]:
            direct, got = answers["direct"][case], answers[target][case]
            problem = harness.direct_problem(suite, case, direct) if target == "direct" else \
                harness.judge(suite, case, direct, got)
            if problem is None:
                n += 1
            else:
                failures.append(f"  {target:9} {suite}/{case}: {problem}"[:600])
        counts[target] = n
    rows.append((suite, len(harness.CASES[suite]), counts))

print(f"{'suite':10} {'cases':>5} {'direct':>7} {'tusk':>7} {'pgbouncer':>9}")
for suite, n, c in rows:
    print(f"{suite:10} {n:>5} {c['direct']:>7} {c['tusk']:>7} {c['pgbouncer']:>9}")
total = {t: sum(c[t] for _, _, c in rows) for t in TARGETS}
print(f"{'all':10} {sum(n for _, n, _ in rows):>5} {total['direct']:>7} {total['tusk']:>7} {total['pgbouncer']:>9}")
if failures:
    print("failed cases:")
    print("\n".join(failures))
