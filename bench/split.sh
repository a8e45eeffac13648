#!/usr/bin/env bash
# pgbench -S through read-write-split over a primary and two standbys vs all on the primary
# (docs/backends.md, "Routing"). The cluster comes from the integration suite's fixture
# (tests/integration/repl_util.py), hence the Python body: bench/split.py.
# Usage: bench/split.sh [SECONDS]   env: ROUNDS (3), CLIENTS (16), SCALE (10), TUSK_BIN
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-/usr/bin/python3}" bench/split.py "$@"
