#!/bin/bash
# A put's fast path through tusk (docs/kv.md, "Speed", ninth step; issue 25): two tusks on one
# zone of ../tusk_zone.py (set up by the NEW binary's tusk kv init, so kv_router exists), BEFORE
# without router_password (kv_client, SELECT kv.put) and NEW as kv_router (the fast statement);
# pgbench through each one's kv and plain databases, alternated: ../ab_tusk.sh does it.
#   bench/kv_parts/fast/through_tusk.sh BEFORE NEW [ROUNDS [SECONDS [CLIENTS]]]
BEFORE_AS_CLIENT=1 exec "$(dirname "$0")/../ab_tusk.sh" "$@"
