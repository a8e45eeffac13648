"""A pool rule's client_encoding, datestyle, timezone and application_name (PgBouncer's per-database options,
"ask specific X from server"): they go into the startup packet of the pool's server
connections, so they are the session's defaults there. A client that does not send its own
sees the rule's, in the greeting's ParameterStatus and in SHOW; one that sends its own gets its
own, across transaction pooling too, where clients share servers."""

import subprocess

import psycopg
import pytest

from conftest import PG_BIN, TEST_DB
from lifecycle_util import reload, rule, write_config

# (rule key, the GUC SHOW names, the name ParameterStatus reports it by, the rule's value,
# a client's own value in options (no space: options splits at spaces), as SHOW tells it)
PARAMS = [
    ("timezone", "timezone", "TimeZone", "Asia/Tokyo", "UTC", "UTC"),
    ("datestyle", "datestyle", "DateStyle", "SQL, DMY", "ISO,MDY", "ISO, MDY"),
    ("client_encoding", "client_encoding", "client_encoding", "LATIN1", "UTF8", "UTF8"),
    ("application_name", "application_name", "application_name", "pool-app", "mine", "mine"),
]


def seen(c, guc, reported):
    """(SHOW guc, the ParameterStatus the client holds): what the client sees."""
    return c.execute(f"show {guc}").fetchone()[0], c.info.parameter_status(reported)


@pytest.mark.tusk_only
@pytest.mark.parametrize("mode", ["session", "transaction"])
@pytest.mark.parametrize("key,guc,reported,value,own_in,own", PARAMS, ids=[p[0] for p in PARAMS])
def test_rule_setting_is_the_default_a_client_may_override(tusk, pg, mode, key, guc, reported, value, own_in, own):
    default = pg.execute(f"show {guc}", dbname=TEST_DB)[0][0]
    assert default != value
    # transaction mode: one server the two clients take turns on
    t = tusk(pools=[rule(mode=mode, size=1 if mode == "transaction" else 2, **{key: value})])
    kw = {"prepare_threshold": None}
    with t.connect(**kw) as plain, t.connect(options=f"-c {guc}={own_in}", **kw) as mine:
        for _ in range(3):
            assert seen(plain, guc, reported) == (value, value)
            assert seen(mine, guc, reported) == (own, own)
        # a RESET goes back to the client's own startup value, as on PostgreSQL, and the client
        # is told so under the name the server reports
        mine.execute(f"reset {guc}")
        assert seen(mine, guc, reported) == (own, own)
        assert seen(plain, guc, reported) == (value, value)
    with t.connect(**kw) as again:  # after both: the rule's value again
        assert seen(again, guc, reported) == (value, value)
        again.execute("reset all")  # RESET ALL goes back to the rule's, not the database's
        assert seen(again, guc, reported) == (value, value)


@pytest.mark.tusk_only
def test_timezone_as_with_pgbouncer_through_libpq_and_psql(tusk, pg):
    """A rule's timezone read by psql (libpq) too, and the database's own without the rule."""
    t = tusk(pools=[rule(user="tusk_solo", mode="transaction", size=1, timezone="Asia/Tokyo"),
                    rule(mode="transaction", size=1)])
    out = subprocess.run([str(PG_BIN / "psql"), "-XAtq", "-h", "127.0.0.1", "-p", str(t.port), "-U", "tusk_solo",
                          "-d", TEST_DB, "-c", "show timezone", "-c", "select now()::text like '%+09'"],
                         capture_output=True, text=True, timeout=30, check=True).stdout.split()
    assert out == ["Asia/Tokyo", "t"], out
    with t.connect() as c:
        assert c.execute("show timezone").fetchone()[0] == pg.execute("show timezone", dbname=TEST_DB)[0][0]


@pytest.mark.tusk_only
def test_reload_changes_the_rules_timezone_for_new_servers(tusk, pg):
    t = tusk(pools=[rule(mode="transaction", size=2, timezone="Asia/Tokyo")])
    with t.connect() as c:
        assert seen(c, "timezone", "TimeZone") == ("Asia/Tokyo", "Asia/Tokyo")
    write_config(t, pg, [rule(mode="transaction", size=2, timezone="Europe/Paris")])
    reload(t)
    t.wait_log("retired by reload")
    with t.connect() as c:
        assert seen(c, "timezone", "TimeZone") == ("Europe/Paris", "Europe/Paris")


@pytest.mark.tusk_only
def test_a_timezone_the_server_refuses_fails_the_login(tusk):
    t = tusk(pools=[rule(mode="transaction", size=1, timezone="Mars/Olympus")], pool_wait_timeout="2s")
    with pytest.raises(psycopg.OperationalError, match='(?i)invalid value for parameter "timezone"'):
        with t.connect() as c:
            c.execute("select 1")
