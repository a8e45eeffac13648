"""What a PgBouncer operator relies on (issue 26): a startup parameter the server refuses is
FATAL as in PostgreSQL, an empty secret in userlist.txt is accepted (trust), pool_defaults'
client_auth binds the rules that omit it, and pidfile."""

import os
import subprocess

import pytest

import pgwire
from conftest import SLOW, TEST_DB, TUSK_BIN
from auth_util import AUTH_MD5, psql, raw_login, write_auth_file

pytestmark = pytest.mark.tusk_only


def rule(**extra):
    r = {"database": "*", "user": "*", "service": "main"}
    r.update(extra)
    return r


def test_unknown_startup_parameter_is_fatal(tusk):
    t = tusk(pools=[rule(mode="transaction", size=2)])
    c = pgwire.RawClient("127.0.0.1", t.port, timeout=10 * SLOW)
    try:
        c.send(pgwire.startup_packet({"user": "tusk_trust", "database": TEST_DB, "nosuch_param": "1"}))
        kind, fields = c.expect_error_or_close(timeout=10 * SLOW)
    finally:
        c.close()
    assert kind == "error", fields
    assert fields["S"] == "FATAL" and fields["V"] == "FATAL", fields
    assert fields["C"] == "42704" and "nosuch_param" in fields["M"], fields
    t.wait_log("login refused: the server rejected a startup parameter")  # the logger thread writes after the reply


def test_empty_secret_in_userlist_accepted_as_pgbouncer_does(tusk, tmp_path):
    auth = write_auth_file(tmp_path / "userlist.txt", {"tusk_trust": "", "tusk_solo": ""})
    t = tusk(pools=[rule(user="tusk_trust", client_auth="trust"), rule(user="tusk_solo", client_auth="md5")],
             auth_file=auth)
    p = psql(t.port, "tusk_trust", None)
    assert p.returncode == 0 and p.stdout.strip() == "tusk_trust", p.stderr
    # An empty secret is no password: md5 (and any other password method) refuses every answer.
    for pw in ("", "x"):
        r = raw_login(t.port, "tusk_solo", pw)
        assert r.outcome == "error" and r.sqlstate == "28P01", r


def test_pool_defaults_client_auth_binds_rules_that_omit_it(tusk, tmp_path):
    auth = write_auth_file(tmp_path / "userlist.txt", {"tusk_trust": "s3cret"})
    t = tusk(pool_defaults={"mode": "transaction", "size": 3, "client_auth": "md5"},
             pools=[rule(database=TEST_DB), rule()], auth_file=auth)
    r = raw_login(t.port, "tusk_trust", None)
    assert r.requests[:1] == [AUTH_MD5] and r.outcome != "ok", (r.requests, r.outcome)  # not trust
    assert psql(t.port, "tusk_trust", None).returncode != 0
    p = psql(t.port, "tusk_trust", "s3cret")
    assert p.returncode == 0 and p.stdout.strip() == "tusk_trust", p.stderr
    t.wait_log("mode transaction, size 3)")


def test_pidfile_written_removed_and_second_start_refused(tusk, tmp_path):
    pidfile = tmp_path / "tusk.pid"
    t = tusk(pools=[rule()], pidfile=str(pidfile))
    assert pidfile.read_text().strip() == str(t.pid)
    second = subprocess.run([str(TUSK_BIN), "-c", str(t.cfg_path)], capture_output=True, text=True,
                            timeout=15 * SLOW)
    assert second.returncode != 0
    assert f"already running with pid {t.pid}" in second.stderr + second.stdout
    assert pidfile.read_text().strip() == str(t.pid)
    t.stop()
    assert not pidfile.exists()
