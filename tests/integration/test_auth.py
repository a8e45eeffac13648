"""tusk logs in to PostgreSQL with cleartext, md5 and SCRAM-SHA-256 using server_password."""

import psycopg
import pytest

from conftest import PASSWORDS, SLOW, TEST_DB, assert_tusk_error
import pgwire


def rule(user, server_user=None, server_password=None):
    r = {"database": "*", "user": user, "service": "main", "mode": "session", "size": 5}
    if server_user:
        r["server_user"] = server_user
    if server_password is not None:
        r["server_password"] = server_password
    return r


def test_harness_password_users_need_their_password(pg):
    """Checks the fixture, not tusk: each pw_* user really requires its password and method."""
    for user, password in PASSWORDS.items():
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(host="127.0.0.1", port=pg.port, user=user, dbname=TEST_DB, password="wrong",
                            connect_timeout=10).close()
        with psycopg.connect(host="127.0.0.1", port=pg.port, user=user, dbname=TEST_DB, password=password,
                             connect_timeout=10) as c:
            assert c.execute("select current_user").fetchone() == (user,)
    methods = {r[0]: r[1] for r in pg.execute(
        "select rolname, left(rolpassword, 6) from pg_authid where rolname like 'pw_%'")}
    assert methods["pw_md5"].startswith("md5")
    assert methods["pw_scram"] == "SCRAM-"


@pytest.mark.tusk_only
@pytest.mark.parametrize("user", sorted(PASSWORDS))
def test_server_login_with_password(tusk, user):
    t = tusk(pools=[rule(user, server_password=PASSWORDS[user])])
    with t.connect(user=user) as c:
        assert c.execute("select current_user").fetchone() == (user,)
    # the pooled server is reused, and a second concurrent one logs in too
    with t.connect(user=user) as a, t.connect(user=user) as b:
        assert a.execute("select 1").fetchone() == (1,)
        assert b.execute("select 2").fetchone() == (2,)


@pytest.mark.tusk_only
def test_server_user_maps_client_to_another_role(tusk):
    t = tusk(pools=[rule("app", server_user="pw_scram", server_password=PASSWORDS["pw_scram"])])
    with t.connect(user="app") as c:
        assert c.execute("select current_user").fetchone() == ("pw_scram",)


@pytest.mark.tusk_only
@pytest.mark.parametrize("server_user", sorted(PASSWORDS))
def test_missing_server_password_is_a_clear_error(tusk, server_user):
    t = tusk(pools=[rule("nopw", server_user=server_user)], server_connect_timeout="3s")
    with pytest.raises(psycopg.OperationalError) as ei:
        with t.connect(user="nopw", connect_timeout=int(15 * SLOW)) as c:
            c.execute("select 1")
    msg = str(ei.value)
    assert_tusk_error(msg)
    assert "password" in msg.lower(), msg


@pytest.mark.tusk_only
@pytest.mark.parametrize("server_user", sorted(PASSWORDS))
def test_wrong_server_password_gives_server_error(tusk, server_user):
    t = tusk(pools=[rule("badpw", server_user=server_user, server_password="not-the-password")],
             server_connect_timeout="3s")
    with pytest.raises(psycopg.OperationalError) as ei:
        with t.connect(user="badpw", connect_timeout=int(15 * SLOW)) as c:
            c.execute("select 1")
    assert "password authentication failed" in str(ei.value)
    # libpq hides the SQLSTATE of a failed login; read the ErrorResponse ourselves.
    c = pgwire.RawClient("127.0.0.1", t.port, timeout=15 * SLOW)
    try:
        c.send(pgwire.startup_packet({"user": "badpw", "database": TEST_DB}))
        outcome, fields = c.expect_error_or_close(timeout=15 * SLOW)
    finally:
        c.close()
    assert outcome == "error", fields
    assert fields.get("C") == "28P01", fields
