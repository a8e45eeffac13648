#!/usr/bin/env bash
# Failover under load (docs/backends.md, "Failover"; issue 22): a primary and two streaming
# standbys behind one tusk service (transaction mode, size 20, pool_wait_timeout 10s,
# server_connect_timeout 2s), pgbench -b simple-update -c 8 through tusk plus 4 looping
# writers (a new connection after each error) and, in read-write-split pools, 3 looping
# readers; the primary is killed (pg_ctl stop -m immediate) and a standby promoted 2 s later.
# Prints, per binary and pool kind, the time from pg_promote() to the first committed write
# (each run, median, max), failed writes in flight on the dead primary and not in flight,
# reader errors, acknowledged writes lost. The cluster comes from the integration suite's
# fixture (a fresh one per run: a promotion cannot be undone), hence the Python body.
# Usage: bench/failover.sh   env: RUNS (5), TARGETS ("primary read-write-split"), TUSK_BIN,
# TUSK_BEFORE_BIN (another build, run alternately with TUSK_BIN: before/after in one run)
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-/usr/bin/python3}" bench/failover.py "$@"
