"""PAM client authentication (PostgreSQL's pam method in hba_file, PgBouncer's auth_type = pam as
client_auth: pam with pam_service) against real PAM stacks: each test writes its own
/etc/pam.d/tusk-test-<random> (removed after), pam_exec.so running a script of the test that
reads the password from stdin (expose_authtok) and compares it with a table, records
PAM_SERVICE, PAM_USER and PAM_RHOST, and sleeps for the user "slow"; account pam_permit.so.
Covered: the right password (raw client, psql, psycopg), a wrong one and an unknown user
(PostgreSQL's 28000 and words), PAM_RHOST (the address, or the host name with
pam_use_hostname=1), pamservice=, client_auth: pam per rule with pam_service, a slow module
beside a trust client of the same worker, a check outliving client_login_timeout, clients that
leave during their check, a reload to pam, load errors with FILE:LINE, and import-pgbouncer."""

import os
import re
import secrets
import subprocess
import time
from pathlib import Path

import pytest

import pgwire
from auth_util import (AUTH_CLEARTEXT, logins_beside, md5_secret, psql, raw_login, with_redis_listener,
                       write_auth_file, write_hba)
from conftest import SLOW, TUSK_BIN, assert_tusk_error
from lifecycle_util import reload as lifecycle_reload
from resp_util import redis_cmd, resp_exchange

PAM_EXEC = next((p for p in ("/lib/x86_64-linux-gnu/security/pam_exec.so", "/usr/lib/x86_64-linux-gnu/security/pam_exec.so",
                             "/lib/security/pam_exec.so", "/usr/lib/security/pam_exec.so",
                             "/usr/lib64/security/pam_exec.so") if os.path.exists(p)), None)


def _why_not():
    if os.geteuid() != 0:
        return "PAM stacks are written to /etc/pam.d: needs root"
    if not os.access("/etc/pam.d", os.W_OK):
        return "/etc/pam.d is not writable"
    if not PAM_EXEC:
        return "pam_exec.so is not installed (Debian: libpam-modules)"
    return None


pytestmark = [pytest.mark.tusk_only, pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")]

USERS = {"alice": "alice-pw", "bob": "bob-pw", "slow": "slow-pw"}

SCRIPT = r"""#!/bin/sh
# pam_exec expose_authtok: the password on stdin, NUL-terminated.
pw=$(head -c 1100 | tr -d '\000')
printf '%s %s %s\n' "$PAM_SERVICE" "$PAM_USER" "$PAM_RHOST" >> "{dir}/seen"
if [ "$PAM_USER" = slow ]; then sleep "$(cat "{dir}/slow_seconds")"; fi
grep -qxF -- "$PAM_USER:$pw" "{dir}/table"
"""


class PamStack:
    """/etc/pam.d/<name>: auth by the test's script, account by pam_permit."""

    def __init__(self, workdir):
        self.dir = Path(workdir)
        self.name = "tusk-test-" + secrets.token_hex(4)
        self.path = Path("/etc/pam.d") / self.name
        (self.dir / "table").write_text("".join(f"{u}:{p}\n" for u, p in USERS.items()))
        (self.dir / "slow_seconds").write_text("2\n")
        script = self.dir / "check.sh"
        script.write_text(SCRIPT.replace("{dir}", str(self.dir)))
        script.chmod(0o755)
        self.path.write_text(f"auth required {PAM_EXEC} expose_authtok quiet {script}\n"
                             "account required pam_permit.so\n")

    def slow_seconds(self, s):
        (self.dir / "slow_seconds").write_text(f"{s}\n")

    def seen(self):
        """[(service, user, rhost)] of every check so far."""
        try:
            return [tuple(line.split(" ", 2)) for line in (self.dir / "seen").read_text().splitlines()]
        except FileNotFoundError:
            return []

    def remove(self):
        self.path.unlink(missing_ok=True)


@pytest.fixture
def pam(tmp_path_factory):
    stacks = []

    def make():
        s = PamStack(tmp_path_factory.mktemp("pam"))
        stacks.append(s)
        return s

    yield make
    for s in stacks:
        s.remove()


def rule(user="*", server_user="tusk_trust", **extra):
    """PAM users are not PostgreSQL roles: the server login is tusk_trust's."""
    r = {"database": "*", "user": user, "service": "main", "mode": "session", "size": 5}
    if server_user:
        r["server_user"] = server_user
    r.update(extra)
    return r


def pam_line(stack, extra=""):
    return f"host all all 127.0.0.1/32 pam pamservice={stack.name} {extra}".rstrip()


def hba_tusk(tusk, tmp_path, lines, **kw):
    return tusk(pools=[rule()], hba_file=write_hba(tmp_path / "hba.conf", lines), **kw)


def assert_ok(t, user, password):
    r = raw_login(t.port, user, password)
    assert r.outcome == "ok" and r.requests[0] == AUTH_CLEARTEXT, r
    p = psql(t.port, user, password)
    assert p.returncode == 0 and p.stdout.strip() == "tusk_trust", (p.stdout, p.stderr)


def assert_refused(t, user, password, log_reason=None):
    r = raw_login(t.port, user, password)
    # PostgreSQL's words and SQLSTATE for method pam (28000: auth_failed gives 28P01 only to
    # password and md5).
    assert r.outcome == "error" and r.sqlstate == "28000", r
    assert_tusk_error(r.message)
    assert re.match(r'^tusk c[0-9a-f]{8}: PAM authentication failed for user "' + re.escape(user) + '"$',
                    r.message), r.message
    if log_reason:
        t.wait_log(log_reason)
    if password:
        assert password not in t.log_text()  # PAM's reason is logged, never the password
    return r


def test_right_and_wrong_password_and_unknown_user(tusk, tmp_path, pam):
    s = pam()
    t = hba_tusk(tusk, tmp_path, [pam_line(s)])
    assert_ok(t, "alice", "alice-pw")
    assert_ok(t, "bob", "bob-pw")
    with t.connect(user="alice", password="alice-pw") as c:  # psycopg
        assert c.execute("select current_user").fetchone() == ("tusk_trust",)
    assert_refused(t, "alice", "wrong-pw", f'PAM authentication failed: pam_authenticate failed (service "{s.name}"')
    assert_refused(t, "nobody", "nobody-pw")
    assert_refused(t, "alice", "bob-pw")
    # psql says what PostgreSQL would say
    p = psql(t.port, "alice", "bad-one")
    assert p.returncode != 0 and 'PAM authentication failed for user "alice"' in p.stderr, p.stderr
    assert {"alice", "nobody"} <= {u for _, u, _ in s.seen()}


def test_empty_password_refused_before_pam(tusk, tmp_path, pam):
    s = pam()
    t = hba_tusk(tusk, tmp_path, [pam_line(s)])
    r = assert_refused(t, "alice", "", "PAM authentication failed: empty password")
    assert r.requests == [AUTH_CLEARTEXT]
    assert s.seen() == []  # never reached PAM


def test_pam_rhost_is_the_client_address_or_its_name(tusk, tmp_path, pam):
    """PAM_RHOST: the client's IP; with pam_use_hostname=1 the name it resolves to (127.0.0.1 is
    localhost in /etc/hosts)."""
    s = pam()
    t = hba_tusk(tusk, tmp_path, ["host all alice 127.0.0.1/32 pam pamservice=" + s.name,
                                  pam_line(s, "pam_use_hostname=1")])
    assert_ok(t, "alice", "alice-pw")
    assert (s.name, "alice", "127.0.0.1") in s.seen(), s.seen()
    assert_ok(t, "bob", "bob-pw")
    expect = subprocess.run(["getent", "hosts", "127.0.0.1"], capture_output=True, text=True).stdout.split()
    if len(expect) < 2:
        pytest.skip("127.0.0.1 has no name here")
    assert (s.name, "bob", expect[1]) in s.seen(), (expect, s.seen())


def test_client_auth_pam_per_rule_with_pam_service(tusk, tmp_path, pam):
    """No hba_file: client_auth: pam (pool_defaults and a rule), the top-level pam_service and a
    rule's own."""
    top, own = pam(), pam()
    t = tusk(pools=[rule(user="bob", pam_service=own.name), rule()], pool_defaults={"client_auth": "pam"},
             pam_service=top.name)
    assert_ok(t, "alice", "alice-pw")
    assert_ok(t, "bob", "bob-pw")
    assert_refused(t, "alice", "bob-pw")
    assert {u for _, u, _ in top.seen()} == {"alice"}, top.seen()
    assert {u for _, u, _ in own.seen()} == {"bob"}, own.seen()


def test_service_without_a_file_refuses(tusk, tmp_path, pam):
    """A pamservice with no /etc/pam.d file: libpam falls back to "other" (Debian's denies or
    asks pam_unix, which knows no alice with that password); refused, not crashed."""
    t = hba_tusk(tusk, tmp_path, ["host all all 127.0.0.1/32 pam pamservice=tusk-test-absent-" + secrets.token_hex(4)])
    assert_refused(t, "alice", "alice-pw", "PAM authentication failed: ")


def test_load_errors_name_file_and_line(tmp_path):
    hba = write_hba(tmp_path / "hba.conf", ["host all all 0.0.0.0/0 pam pamfoo=1",
                                             "host all all 0.0.0.0/0 pam pam_use_hostname=2",
                                             "host all all 0.0.0.0/0 pam pamservice=../passwd"])
    cfg = tmp_path / "t.yaml"
    cfg.write_text("listen: [{host: 127.0.0.1, port: 6432}]\nservices: {main: {hosts: [\"127.0.0.1:5432\"]}}\n"
                   f"hba_file: {hba}\npools:\n  - {{database: '*', user: '*'}}\n")
    r = subprocess.run([str(TUSK_BIN), "--check", "-c", str(cfg)], capture_output=True, text=True)
    assert r.returncode != 0
    for text in (f'{hba}:2: hba: authentication option "pamfoo" is not supported for the pam method',
                 f'{hba}:3: hba: invalid pam_use_hostname "2" (0 or 1)',
                 f'{hba}:4: hba: invalid pamservice "../passwd"'):
        assert text in r.stderr, (text, r.stderr)
    cfg.write_text("listen: [{host: 127.0.0.1, port: 6432}]\nservices: {main: {hosts: [\"127.0.0.1:5432\"]}}\n"
                   "pools:\n  - {database: '*', user: '*', client_auth: pam, pam_service: a/b}\n")
    r = subprocess.run([str(TUSK_BIN), "--check", "-c", str(cfg)], capture_output=True, text=True)
    assert r.returncode != 0 and "pools[0].pam_service: must be a file name of /etc/pam.d" in r.stderr, r.stderr


@pytest.mark.exclusive  # timing bounds: runs alone (conftest.py)
def test_slow_module_does_not_block_the_worker(tusk, tmp_path, pam):
    """Four checks that each sleep 2 s in the module, on a one-worker tusk: meanwhile trust and
    md5 logins go on at their usual speed (the checks run on the PAM threads), and then the
    slow ones succeed."""
    s = pam()
    s.slow_seconds(2)
    auth = write_auth_file(tmp_path / "users.txt", {"pw_md5": md5_secret("pw_md5", "md5-secret")})
    t = tusk(pools=[rule(user="tusk_trust"), rule(user="pw_md5", server_user=None), rule()], workers=1,
             auth_file=auth, hba_file=write_hba(tmp_path / "hba.conf", [
                 "host all tusk_trust 127.0.0.1/32 trust", "host all pw_md5 127.0.0.1/32 md5", pam_line(s)]))
    for r, took in logins_beside(t, lambda: raw_login(t.port, "slow", "slow-pw"), bound=1.0):
        assert r.outcome == "ok", r
        assert took >= 1.9, took


@pytest.mark.exclusive  # timing bounds: runs alone (conftest.py)
def test_check_longer_than_client_login_timeout(tusk, tmp_path, pam):
    """A module that takes 6 s under client_login_timeout 2s: the client hears PAM's refusal when
    its login time ends (not 6 s later); the thread runs on, its answer dropped; tusk stops
    cleanly meanwhile (the fixture checks exit 0 and no sanitizer report)."""
    s = pam()
    s.slow_seconds(6)
    t = hba_tusk(tusk, tmp_path, ["host all tusk_trust 127.0.0.1/32 trust", pam_line(s)], client_login_timeout="2s")
    start = time.monotonic()
    r = raw_login(t.port, "slow", "slow-pw")
    took = time.monotonic() - start
    assert r.outcome == "error" and r.sqlstate == "28000", r
    assert 'PAM authentication failed for user "slow"' in r.message, r.message
    assert 1.8 < took < 4 * SLOW, took
    t.wait_log("the PAM check did not end within client_login_timeout")
    with t.connect(user="tusk_trust") as c:
        assert c.execute("select 1").fetchone() == (1,)


@pytest.mark.exclusive  # timing bounds: runs alone (conftest.py)
def test_client_leaving_during_its_check_is_not_touched(tusk, tmp_path, pam):
    """Clients that send their password to a slow module and hang up at once: their checks
    finish later on the PAM threads, and the answers, which find no client, are dropped (the
    ASan build would catch a use after free; the fixture fails on its report)."""
    s = pam()
    s.slow_seconds(1)
    t = hba_tusk(tusk, tmp_path, ["host all tusk_trust 127.0.0.1/32 trust", pam_line(s)], workers=1,
                 log_level="debug")
    for _ in range(3):
        c = pgwire.RawClient("127.0.0.1", t.port, timeout=5 * SLOW)
        c.send(pgwire.startup_packet({"user": "slow", "database": "tusk_test"}))
        kind, body = c.read_message()
        assert kind == b"R" and body[:4] == AUTH_CLEARTEXT.to_bytes(4, "big"), (kind, body)
        c.send(pgwire.message(b"p", b"slow-pw\0"))
        c.close()
    # their checks ran to the end (the script records each before it sleeps)
    deadline = time.monotonic() + 10 * SLOW
    while len(s.seen()) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(s.seen()) == 3, s.seen()
    time.sleep(1.5 * SLOW)  # the answers came back to the worker and found no client
    with t.connect(user="tusk_trust") as c:
        assert c.execute("select 1").fetchone() == (1,)
    assert "PAM authentication succeeded" not in t.log_text()
    assert_ok(t, "alice", "alice-pw")


def test_reload_switches_a_rule_to_pam(tusk, tmp_path, pam):
    s = pam()
    auth = write_auth_file(tmp_path / "users.txt", {"alice": md5_secret("alice", "old-md5-pw")})
    t = tusk(pools=[rule(client_auth="md5")], auth_file=auth, pam_service=s.name)
    assert raw_login(t.port, "alice", "old-md5-pw").outcome == "ok"
    r = raw_login(t.port, "alice", "alice-pw")  # md5's refusal, before the reload
    assert r.outcome == "error" and r.sqlstate == "28P01", r
    text = t.cfg_path.read_text()
    assert text.count("client_auth: md5") == 1, text
    t.cfg_path.write_text(text.replace("client_auth: md5", "client_auth: pam"))
    lifecycle_reload(t)
    assert_ok(t, "alice", "alice-pw")
    assert_refused(t, "alice", "old-md5-pw")


def test_import_pgbouncer_pam(tmp_path):
    """auth_type = pam becomes client_auth: pam with pam_service: pgbouncer (PgBouncer's fixed
    service name), for the pools and the admin console; the file loads."""
    ini = tmp_path / "pgbouncer.ini"
    ini.write_text("[databases]\n* = host=127.0.0.1 port=5432\n[pgbouncer]\nlisten_addr = 127.0.0.1\n"
                   "listen_port = 6432\nunix_socket_dir =\nauth_type = pam\nadmin_users = admin\n")
    out = tmp_path / "tusk.yaml"
    r = subprocess.run([str(TUSK_BIN), "import-pgbouncer", "-o", str(out), str(ini)], capture_output=True, text=True,
                       timeout=30 * SLOW)
    assert r.returncode == 0, r.stderr
    y = out.read_text()
    assert "  client_auth: pam\n" in y and "\npam_service: pgbouncer\n" in y, y
    assert "client_auth: reject" not in y and "auth_type = pam" not in r.stderr, (y, r.stderr)
    chk = subprocess.run([str(TUSK_BIN), "--check", "-c", str(out)], capture_output=True, text=True)
    assert chk.returncode == 0, chk.stdout + chk.stderr + y


def test_admin_console_through_client_auth_pam(tusk, tmp_path, pam):
    """admin.client_auth: pam checks the console's users under the top-level pam_service."""
    s = pam()
    t = tusk(pools=[rule()], admin={"users": ["alice"], "client_auth": "pam"}, pam_service=s.name)
    with t.connect(user="alice", password="alice-pw", dbname="tusk") as c:
        assert c.execute("show version").fetchone()
    r = raw_login(t.port, "alice", "bob-pw", dbname="tusk")
    assert r.outcome == "error" and r.sqlstate == "28000", r


def test_redis_auth_on_a_pam_line_runs_the_pam_stack(tusk, tmp_path, pam):
    """The kv's Redis listener: AUTH on an hba_file pam line (database kv) runs the PAM stack as
    a SQL client's login does (it was refused without a check), with the client's address as
    PAM_RHOST; a check that outlives client_login_timeout answers AUTH with an error then (the
    module cannot be interrupted) and the connection goes on."""
    s = pam()
    t = hba_tusk(tusk, tmp_path, [pam_line(s)], client_login_timeout="2s")
    port = with_redis_listener(t)
    got = resp_exchange(port, redis_cmd("AUTH", "alice", "alice-pw") + redis_cmd("PING"), 2)
    assert got == b"+OK\r\n+PONG\r\n", got
    assert (s.name, "alice", "127.0.0.1") in s.seen()
    got = resp_exchange(port, redis_cmd("AUTH", "bob", "alice-pw") + redis_cmd("PING"), 2)
    assert got.startswith(b"-WRONGPASS") and got.endswith(b"-NOAUTH Authentication required.\r\n"), got
    t.wait_log('kv redis: LDAP or PAM check of "bob"')
    s.slow_seconds(6)
    began = time.monotonic()
    got = resp_exchange(port, redis_cmd("AUTH", "slow", "slow-pw") + redis_cmd("AUTH", "alice", "alice-pw")
                        + redis_cmd("PING"), 3, timeout=20)
    assert got.startswith(b"-ERR tusk: the password check did not end in time") and got.endswith(
        b"+OK\r\n+PONG\r\n"), got
    assert 1.5 < time.monotonic() - began < 5 * SLOW
    t.wait_log("an LDAP or PAM check of AUTH did not end within client_login_timeout")
    time.sleep(5)  # the slow check ends now, its answer dropped
    assert resp_exchange(port, redis_cmd("AUTH", "bob", "bob-pw"), 1) == b"+OK\r\n"
