"""The real drivers' suites (tests/drivers/: node-postgres, pgjdbc, asyncpg, psycopg) on a
database whose defaults are not what the drivers ask for at startup: encoding LATIN1 (so its
default client_encoding is LATIN1, where every driver asks for UTF8) and a TimeZone set with
ALTER DATABASE. Each suite runs direct and through a transaction pool and a session pool, and
every case must answer as direct (harness.judge), as in test_drivers.py.

What a server's RESET ALL or DISCARD ALL goes back to is then the database's default, not the
client's startup value: tusk passed the server's ParameterStatus for it on, and pgjdbc closed
its connection at the first RESET ALL (`prepared_set_and_reset`: "The server's client_encoding
parameter was changed to LATIN1"; docs/pooling.md, "RESET").

Not set on the database: a DateStyle. psycopg and node-postgres cannot read dates in a
non-ISO DateStyle even direct, and a partial startup DateStyle (asyncpg's `server_settings`
case gives `Postgres`) is completed from the database's DateStyle through any pooler, where
PostgreSQL direct completes it from postgresql.conf's (docs/pooling.md)."""

import sys

import pytest

from conftest import REPO, Tusk
from txn_util import txn_pool

sys.path.insert(0, str(REPO / "tests" / "drivers"))
import harness  # noqa: E402

USER = "tusk_trust"
# as test_drivers.py: pg_prepared_statements lists a pooled server's statements
KNOWN_DIFFERENT = {("asyncpg", "transaction"): {"prepared_statements_view"}}

pytestmark = pytest.mark.tusk_only


@pytest.mark.parametrize("suite", ["jdbc", "asyncpg", "psycopg", "node"])
@pytest.mark.parametrize("mode", ["transaction", "session"])
@pytest.mark.timeout(600)
def test_driver_suite_on_a_latin1_database_answers_as_direct(pg, tmp_path, suite, mode):
    why = harness.available(suite)
    if why:
        pytest.fail(why)
    if suite == "node":
        harness.install_node_modules()
    db = f"drv_latin1_{suite}_{mode}"
    with pg.admin() as a:
        a.execute(f"drop database if exists {db} with (force)")
        a.execute(f"create database {db} owner {USER} encoding 'LATIN1' lc_collate 'C' lc_ctype 'C' "
                  "template template0")
        a.execute(f"alter database {db} set timezone = 'America/Denver'")
    try:
        direct = harness.run_reference(suite, "127.0.0.1", pg.port, db, USER, tag=f"{suite}_l1d")
        problems = {c: harness.direct_problem(suite, c, out) for c, out in direct.items()}
        assert not any(problems.values()), problems
        # session: a server per connection (more than a suite opens at once); transaction: fewer
        t = Tusk(tmp_path, pg.port, pools=[txn_pool(3 if mode == "transaction" else 20, mode=mode)])
        t.start()
        try:
            through = harness.run_suite(suite, "127.0.0.1", t.port, db, USER, tag=f"{suite}_l1t")
        finally:
            stopped = t.stop()
        assert not stopped, stopped
        differ = {c: harness.judge(suite, c, direct[c], through.get(c)) for c in direct}
        differ = {c: why for c, why in differ.items() if why}
        assert set(differ) == KNOWN_DIFFERENT.get((suite, mode), set()), differ
    finally:
        with pg.admin() as a:
            a.execute(f"drop database if exists {db} with (force)")
