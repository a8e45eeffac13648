#!/usr/bin/env bash
# node-postgres at the versions package-lock.json pins, into tests/drivers/node/node_modules (git
# ignores it). Does nothing when node_modules is already what the lock file says. Called by
# scripts/install-deps.sh and by tests/integration/test_drivers.py; needs node and npm, and the
# npm registry.
set -euo pipefail
cd "$(dirname "$0")"
# npm writes node_modules/.package-lock.json on every install: newer than the lock file = current.
if [ -f node_modules/.package-lock.json ] && [ node_modules/.package-lock.json -nt package-lock.json ]; then
	exit 0
fi
command -v npm >/dev/null || { echo "tests/drivers/node: npm is not installed (scripts/install-deps.sh)" >&2; exit 1; }
npm ci --no-audit --no-fund --loglevel=error
