"""LDAP client authentication (PgBouncer 1.25's auth_type = ldap, auth_ldap_options and hba_file's
ldap method; PostgreSQL's semantics) against a real slapd: simple bind, search+bind as a bind DN
or anonymously, ldapurl, a server list with a dead first server, StartTLS, a server that never
answers (the client gets an error in time, the workers go on serving others), user names an
LDAP filter would read, the empty password, client_auth: ldap with ldap_options, a reload from
md5 to ldap, the passthrough login with the LDAP-checked password, and import-pgbouncer."""

import re
import socket
import subprocess
import time

import pytest
import redis

import ldap_util
import pgwire
from auth_util import (AUTH_CLEARTEXT, logins_beside, md5_secret, psql, raw_login, with_redis_listener,
                       write_auth_file, write_hba)
from conftest import SANITIZER_RE, SLOW, TUSK_BIN, assert_tusk_error, free_port, port_open, wait_until
from lifecycle_util import reload as lifecycle_reload
from resp_util import redis_cmd, resp_exchange
from tls_util import Certs

pytestmark = [pytest.mark.tusk_only,
              pytest.mark.skipif(not ldap_util.available(), reason="slapd is not installed (apt-get install slapd)")]

PEOPLE = f"ou=people,{ldap_util.BASE}"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certs(tmp_path_factory.mktemp("ldap-certs"))


@pytest.fixture(scope="module")
def slapd(tmp_path_factory, certs):
    s = ldap_util.Slapd(tmp_path_factory.mktemp("slapd"), certs)
    yield s
    s.stop()


def rule(user="*", server_user="tusk_trust", **extra):
    """LDAP users are not PostgreSQL roles: the server login is tusk_trust's, unless a test says
    (server_user=None: the client's own name and credentials)."""
    r = {"database": "*", "user": user, "service": "main", "mode": "session", "size": 5}
    if server_user:
        r["server_user"] = server_user
    r.update(extra)
    return r


def simple_line(slapd, extra=""):
    return (f'host all all 127.0.0.1/32 ldap ldapserver=127.0.0.1 ldapport={slapd.port} ldapprefix="uid=" '
            f'ldapsuffix=",{PEOPLE}" {extra}').rstrip()


def hba_tusk(tusk, tmp_path, lines, env=None, **kw):
    return tusk(pools=[rule()], hba_file=write_hba(tmp_path / "hba.conf", lines), env=env, **kw)


def login(t, user, password):
    """-> the raw LoginResult (outcome ok/error, sqlstate, requests)."""
    return raw_login(t.port, user, password)


def assert_ok(t, user, password):
    r = login(t, user, password)
    assert r.outcome == "ok" and r.requests[0] == AUTH_CLEARTEXT, r
    p = psql(t.port, user, password)
    assert p.returncode == 0 and p.stdout.strip() == "tusk_trust", (p.stdout, p.stderr)


def assert_refused(t, user, password, log_reason=None):
    r = login(t, user, password)
    assert r.outcome == "error" and r.sqlstate == "28000", r
    assert_tusk_error(r.message)
    # PostgreSQL's words and SQLSTATE for method ldap (28000; password's is 28P01).
    assert re.match(r'^tusk c[0-9a-f]{8}: LDAP authentication failed for user "' + re.escape(user) + '"$',
                    r.message), r.message
    if log_reason:
        t.wait_log(log_reason)
    if password:
        assert password not in t.log_text()  # the LDAP reason is logged, never the password
    return r


def test_simple_bind(tusk, tmp_path, slapd):
    t = hba_tusk(tusk, tmp_path, [simple_line(slapd)])
    assert_ok(t, "alice", "alice-pw")
    assert_ok(t, "bob", "bob-pw")
    assert_refused(t, "alice", "wrong-pw", "LDAP authentication failed: LDAP login failed for user \"alice\"")
    assert "Invalid credentials" in t.log_text()
    assert_refused(t, "nobody", "some-pw")
    # psql says what PostgreSQL would say
    p = psql(t.port, "alice", "bad-one")
    assert p.returncode != 0 and 'LDAP authentication failed for user "alice"' in p.stderr, p.stderr


def test_search_bind_with_bind_dn_and_anonymous(tusk, tmp_path, slapd):
    bound = (f'host all alice,dup,nobody 127.0.0.1/32 ldap ldapserver=127.0.0.1 ldapport={slapd.port} '
             f'ldapbasedn="{ldap_util.BASE}" ldapbinddn="{ldap_util.READER_DN}" ldapbindpasswd={ldap_util.READER_PW}')
    anon = (f'host all bob 127.0.0.1/32 ldap ldapserver=127.0.0.1 ldapport={slapd.port} '
            f'ldapbasedn="{ldap_util.BASE}" ldapsearchattribute=uid')
    t = hba_tusk(tusk, tmp_path, [bound, anon])
    assert_ok(t, "alice", "alice-pw")
    assert_ok(t, "bob", "bob-pw")  # anonymous search
    assert_refused(t, "alice", "bob-pw")
    # two entries with uid=dup (ou=people and ou=staff): refused even with the right password
    assert_refused(t, "dup", "dup-pw", 'LDAP user "dup" is not unique')
    assert_refused(t, "nobody", "x-pw", 'LDAP user "nobody" does not exist')


def test_search_bind_wrong_bind_dn_password_refuses(tusk, tmp_path, slapd):
    line = (f'host all all 127.0.0.1/32 ldap ldapserver=127.0.0.1 ldapport={slapd.port} '
            f'ldapbasedn="{ldap_util.BASE}" ldapbinddn="{ldap_util.READER_DN}" ldapbindpasswd=wrong')
    t = hba_tusk(tusk, tmp_path, [line])
    assert_refused(t, "alice", "alice-pw", "could not perform initial LDAP bind")


def test_ldapurl_and_search_filter(tusk, tmp_path, slapd):
    url = f'host all alice 127.0.0.1/32 ldap ldapurl="ldap://127.0.0.1:{slapd.port}/{PEOPLE}?uid?one"'
    filt = (f'host all bob 127.0.0.1/32 ldap ldapserver=127.0.0.1 ldapport={slapd.port} '
            f'ldapbasedn="{ldap_util.BASE}" ldapsearchfilter="(|(uid=$username)(mail=$username))"')
    t = hba_tusk(tusk, tmp_path, [url, filt])
    assert_ok(t, "alice", "alice-pw")
    assert_refused(t, "alice", "bob-pw")
    assert_ok(t, "bob", "bob-pw")


def test_filter_characters_refused_before_ldap(tusk, tmp_path, slapd):
    """(uid=ali*) would find alice's one entry and her password would bind: the name is refused
    as PostgreSQL refuses it, never pasted into the filter."""
    line = (f'host all all 127.0.0.1/32 ldap ldapserver=127.0.0.1 ldapport={slapd.port} '
            f'ldapbasedn="{ldap_util.BASE}"')
    t = hba_tusk(tusk, tmp_path, [line])
    for user in ("ali*", "alice)(uid=*", "a(b", "al\\ice", "a/b"):
        assert_refused(t, user, "alice-pw", "invalid character in user name for LDAP authentication")
    assert_ok(t, "alice", "alice-pw")


def test_empty_password_refused_before_any_bind(tusk, tmp_path, slapd):
    """An empty password would be an unauthenticated bind, which the server accepts."""
    t = hba_tusk(tusk, tmp_path, [simple_line(slapd)])
    r = assert_refused(t, "alice", "")
    t.wait_log("LDAP authentication failed: empty password")
    assert r.requests == [AUTH_CLEARTEXT]


def test_client_auth_ldap_with_ldap_options(tusk, tmp_path, slapd):
    """No hba_file: client_auth: ldap (pool_defaults and a rule) with the top-level ldap_options
    (PgBouncer's auth_ldap_options) and a rule's own."""
    top = f'ldapurl="ldap://127.0.0.1:{slapd.port}/{ldap_util.BASE}?uid?sub"'
    own = f'ldapserver=127.0.0.1 ldapport={slapd.port} ldapprefix="uid=" ldapsuffix=",{PEOPLE}"'
    t = tusk(pools=[rule(user="bob", ldap_options=own), rule()], pool_defaults={"client_auth": "ldap"},
             ldap_options=top)
    assert_ok(t, "alice", "alice-pw")
    assert_refused(t, "alice", "nope-pw")
    assert_ok(t, "bob", "bob-pw")
    assert_refused(t, "dup", "dup-pw", 'LDAP user "dup" is not unique')  # the top-level search, not bob's bind


def test_config_errors_name_file_line_and_key(tmp_path, slapd):
    cfg = tmp_path / "t.yaml"
    cfg.write_text("listen: [{host: 127.0.0.1, port: 6432}]\nservices: {main: {hosts: [\"127.0.0.1:5432\"]}}\n"
                   "pools:\n  - {database: '*', user: '*', client_auth: ldap}\n"
                   "ldap_options: 'ldapserver=h ldapprefix=uid= ldapbasedn=\"dc=x\"'\n")
    r = subprocess.run([str(TUSK_BIN), "--check", "-c", str(cfg)], capture_output=True, text=True)
    assert r.returncode != 0
    assert f"{cfg}:5: ldap_options: cannot use ldapbasedn" in r.stderr, r.stderr
    cfg.write_text("listen: [{host: 127.0.0.1, port: 6432}]\nservices: {main: {hosts: [\"127.0.0.1:5432\"]}}\n"
                   "pools:\n  - {database: '*', user: '*', client_auth: ldap}\n")
    r = subprocess.run([str(TUSK_BIN), "--check", "-c", str(cfg)], capture_output=True, text=True)
    assert r.returncode != 0 and "pools[0].client_auth: ldap needs ldap_options" in r.stderr, r.stderr
    hba = write_hba(tmp_path / "hba.conf", ["host all all 0.0.0.0/0 ldap ldapserver=h ldapport=99999 ldapprefix=x",
                                             "host all all 0.0.0.0/0 ldap ldapserver=h",
                                             "host all all 0.0.0.0/0 ldap ldapurl=http://h/ ",
                                             "host all all 0.0.0.0/0 ldap ldapserver=h ldapprefix=x ldapfoo=1"])
    cfg.write_text("listen: [{host: 127.0.0.1, port: 6432}]\nservices: {main: {hosts: [\"127.0.0.1:5432\"]}}\n"
                   f"hba_file: {hba}\npools:\n  - {{database: '*', user: '*'}}\n")
    r = subprocess.run([str(TUSK_BIN), "--check", "-c", str(cfg)], capture_output=True, text=True)
    assert r.returncode != 0
    for text in (f'{hba}:2: hba: invalid LDAP port number "99999"',
                 f'{hba}:3: hba: authentication method "ldap" requires argument "ldapbasedn"',
                 f'{hba}:4: hba: unsupported LDAP URL scheme',
                 f'{hba}:5: hba: unknown LDAP option "ldapfoo"'):
        assert text in r.stderr, (text, r.stderr)


def test_server_list_dead_first(tusk, tmp_path, slapd):
    """ldapserver names two hosts: the first refuses the connection, the second answers (libldap
    tries them in turn, as PostgreSQL's one ldap_initialize does)."""
    line = (f'host all all 127.0.0.1/32 ldap ldapserver="127.0.0.2 127.0.0.1" ldapport={slapd.port} '
            f'ldapprefix="uid=" ldapsuffix=",{PEOPLE}"')
    assert not port_open(slapd.port, "127.0.0.2")
    t = hba_tusk(tusk, tmp_path, [line])
    assert_ok(t, "alice", "alice-pw")
    assert_refused(t, "alice", "bob-pw")


@pytest.mark.exclusive  # timing bounds: runs alone (conftest.py)
def test_silent_server_times_out_and_workers_serve_others(tusk, tmp_path, slapd):
    """A server that takes the TCP connection and never answers: the client gets its error
    within client_login_timeout (each LDAP wait bounded), and meanwhile trust and md5 logins on
    the same one-worker tusk go on at their usual speed (the check runs on an LDAP thread)."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", free_port()))
    hole.listen(64)  # the kernel completes handshakes; nobody ever reads
    try:
        port = hole.getsockname()[1]
        auth = write_auth_file(tmp_path / "users.txt", {"pw_md5": md5_secret("pw_md5", "md5-secret")})
        t = tusk(pools=[rule(user="tusk_trust"), rule(user="pw_md5", server_user=None), rule()],
                 hba_file=write_hba(tmp_path / "hba.conf", [
                     "host all tusk_trust 127.0.0.1/32 trust",
                     "host all pw_md5 127.0.0.1/32 md5",
                     f'host all all 127.0.0.1/32 ldap ldapserver=127.0.0.1 ldapport={port} ldapprefix="uid=" '
                     f'ldapsuffix=",{PEOPLE}"']),
                 auth_file=auth, workers=1, client_login_timeout="6s")
        results = logins_beside(t, lambda: login(t, "alice", "alice-pw"))
        for r, took in results:
            assert r.outcome == "error" and r.sqlstate == "28000", r
            assert took < 5.5 * SLOW, took  # a 2 s bound on each wait, inside the 6 s login timeout
        t.wait_log("Timed out")
    finally:
        hole.close()


@pytest.mark.exclusive  # timing bounds: runs alone (conftest.py)
def test_client_leaving_during_its_check_is_not_touched(tusk, tmp_path, slapd):
    """Clients that send their password to a silent LDAP server and hang up at once: their
    checks finish later (timed out) on the LDAP threads, and the answers, which find no client,
    are dropped (the ASan build would catch a use after free; the fixture fails on its report).
    ldaps to the same silent server is bounded too (its TLS handshake never gets an answer)."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", free_port()))
    hole.listen(64)
    try:
        port = hole.getsockname()[1]
        t = tusk(pools=[rule()], workers=1, client_login_timeout="6s", log_level="debug",
                 hba_file=write_hba(tmp_path / "hba.conf", [
            f'host all alice 127.0.0.1/32 ldap ldapserver=127.0.0.1 ldapport={port} ldapprefix="uid=" ldapsuffix=",{PEOPLE}"',
            f'host all bob 127.0.0.1/32 ldap ldapserver=127.0.0.1 ldapport={port} ldapscheme=ldaps ldapprefix="uid=" '
            f'ldapsuffix=",{PEOPLE}"',
            "host all all 127.0.0.1/32 trust"]))
        for _ in range(3):
            c = pgwire.RawClient("127.0.0.1", t.port, timeout=5 * SLOW)
            c.send(pgwire.startup_packet({"user": "alice", "database": "tusk_test"}))
            kind, body = c.read_message()
            assert kind == b"R" and body[:4] == AUTH_CLEARTEXT.to_bytes(4, "big"), (kind, body)
            c.send(pgwire.message(b"p", b"alice-pw\0"))
            c.close()
        start = time.monotonic()
        r = login(t, "bob", "bob-pw")
        assert r.outcome == "error" and r.sqlstate == "28000", r
        assert time.monotonic() - start < 5.5 * SLOW
        t.wait_log("LDAP authentication failed: LDAP login failed for user \"bob\"")
        # the three clients were gone before their checks ended (each ~2 s, bob's took longer)
        assert t.log_text().count("closing client connection: client closed the connection while waiting") == 3
        time.sleep(0.5 * SLOW)
        with t.connect(user="tusk_trust") as c:
            assert c.execute("select 1").fetchone() == (1,)
        assert 'LDAP authentication failed: LDAP login failed for user "alice"' not in t.log_text()
    finally:
        hole.close()


def test_starttls(tusk, tmp_path, slapd, certs):
    line = simple_line(slapd, "ldaptls=1")
    t = hba_tusk(tusk, tmp_path, [line], env={"LDAPTLS_CACERT": certs.ca, "LDAPTLS_REQCERT": "demand"})
    assert_ok(t, "alice", "alice-pw")
    assert_refused(t, "alice", "bob-pw")
    # A CA that did not sign slapd's certificate: no TLS session, no login.
    (tmp_path / "rogue").mkdir()
    t2 = hba_tusk(tusk, tmp_path / "rogue", [line], env={"LDAPTLS_CACERT": certs.rogue_ca, "LDAPTLS_REQCERT": "demand"})
    assert_refused(t2, "alice", "alice-pw", "could not start LDAP TLS session")


def test_reload_from_md5_to_ldap(tusk, tmp_path, slapd):
    auth = write_auth_file(tmp_path / "users.txt", {"alice": md5_secret("alice", "old-md5-pw")})
    hba = tmp_path / "hba.conf"
    write_hba(hba, ["host all all 127.0.0.1/32 md5"])
    t = tusk(pools=[rule()], hba_file=str(hba), auth_file=auth)
    assert login(t, "alice", "old-md5-pw").outcome == "ok"
    r = login(t, "alice", "alice-pw")  # md5's refusal, before the reload
    assert r.outcome == "error" and r.sqlstate == "28P01", r
    write_hba(hba, [simple_line(slapd)])
    lifecycle_reload(t)
    assert_ok(t, "alice", "alice-pw")
    assert_refused(t, "alice", "old-md5-pw")
    # A broken ldap line: the reload is refused and the running file stays.
    write_hba(hba, ["host all all 127.0.0.1/32 ldap ldapserver=127.0.0.1"])
    lifecycle_reload(t, expect_ok=False)
    assert_ok(t, "alice", "alice-pw")


def test_passthrough_with_the_ldap_checked_password(tusk, tmp_path, slapd, pg):
    """No server_password: the password LDAP accepted logs in to PostgreSQL as the client (its
    role's password is the same), as PgBouncer does."""
    t = tusk(pools=[rule(user="pw_scram", server_user=None)],
             hba_file=write_hba(tmp_path / "hba.conf", [simple_line(slapd)]))
    p = psql(t.port, "pw_scram", "scram-secret")
    assert p.returncode == 0 and p.stdout.strip() == "pw_scram", (p.stdout, p.stderr)
    # two at once: the second server login has what it needs too
    with t.connect(user="pw_scram", password="scram-secret") as a, \
            t.connect(user="pw_scram", password="scram-secret") as b:
        assert a.execute("select current_user").fetchone() == ("pw_scram",)
        assert b.execute("select current_user").fetchone() == ("pw_scram",)
    assert_refused(t, "pw_scram", "wrong-secret")


def test_import_pgbouncer_ldap(tmp_path, slapd, pg):
    """auth_type = ldap with auth_ldap_options becomes client_auth: ldap with ldap_options, and
    tusk started on the imported file logs LDAP users in."""
    port = free_port()
    ini = tmp_path / "pgbouncer.ini"
    ini.write_text(f"[databases]\n* = host=127.0.0.1 port={pg.port} user=tusk_trust\n[pgbouncer]\n"
                   f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\nauth_type = ldap\n"
                   f'auth_ldap_options = ldapurl="ldap://127.0.0.1:{slapd.port}/{ldap_util.BASE}?uid?sub"\n')
    out = tmp_path / "tusk.yaml"
    r = subprocess.run([str(TUSK_BIN), "import-pgbouncer", "-o", str(out), str(ini)], capture_output=True, text=True,
                       timeout=30 * SLOW)
    assert r.returncode == 0, r.stderr
    y = out.read_text()
    assert "  client_auth: ldap\n" in y and "\nldap_options: " in y and "auth_ldap_options" not in r.stderr, (y, r.stderr)
    log = open(tmp_path / "tusk.log", "wb")
    proc = subprocess.Popen([str(TUSK_BIN), "-c", str(out)], stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_until(lambda: port_open(port), 15 * SLOW, what="imported tusk listening")
        r = raw_login(port, "alice", "alice-pw")
        assert r.outcome == "ok" and r.requests[0] == AUTH_CLEARTEXT, r
        r = raw_login(port, "alice", "bob-pw")
        assert r.outcome == "error" and r.sqlstate == "28000", r
    finally:
        proc.terminate()
        assert proc.wait(timeout=15 * SLOW) == 0
        log.close()
        assert not SANITIZER_RE.search((tmp_path / "tusk.log").read_text(errors="replace"))
    # Without auth_ldap_options the importer says tusk would refuse it.
    ini.write_text("[databases]\n* = host=127.0.0.1\n[pgbouncer]\nauth_type = ldap\n")
    r = subprocess.run([str(TUSK_BIN), "import-pgbouncer", "-o", str(out), str(ini)], capture_output=True, text=True,
                       timeout=30 * SLOW)
    assert "auth_ldap_options is not set" in r.stderr, r.stderr


def test_admin_console_through_an_hba_ldap_line(tusk, tmp_path, slapd):
    """The console's login completes on the LDAP answer too (its own session kind)."""
    t = tusk(pools=[rule()], admin={"users": ["alice"]},
             hba_file=write_hba(tmp_path / "hba.conf", [simple_line(slapd).replace("host all all", "host tusk all")]))
    with t.connect(user="alice", password="alice-pw", dbname="tusk") as c:
        assert c.execute("show version").fetchone()
    r = raw_login(t.port, "alice", "bob-pw", dbname="tusk")
    assert r.outcome == "error" and r.sqlstate == "28000", r


def test_password_method_still_asks_cleartext_without_ldap(tusk, tmp_path, slapd):
    """An ldap line for one user leaves the other lines as they were."""
    auth = write_auth_file(tmp_path / "users.txt", {"carol": "carol-pw"})
    t = hba_tusk(tusk, tmp_path, ["host all carol 127.0.0.1/32 password", simple_line(slapd)], auth_file=auth)
    assert login(t, "carol", "carol-pw").outcome == "ok"
    assert_ok(t, "alice", "alice-pw")


def test_redis_auth_on_an_ldap_line_binds_as_a_sql_login_does(tusk, tmp_path, slapd):
    """The kv's Redis listener: AUTH on an hba_file ldap line (database kv) is checked by the
    LDAP server as a SQL client's login is (it was refused without a check). Commands sent
    behind AUTH in the same write wait for its answer; a wrong password is WRONGPASS and the
    LDAP server's reason goes to the log; the empty password is refused before any bind; a
    client that leaves while its check runs leaves nothing behind (ASan)."""
    t = hba_tusk(tusk, tmp_path, [simple_line(slapd)])
    port = with_redis_listener(t)
    got = resp_exchange(port, redis_cmd("AUTH", "alice", "alice-pw") + redis_cmd("PING"), 2)
    assert got == b"+OK\r\n+PONG\r\n", got
    got = resp_exchange(port, redis_cmd("AUTH", "alice", "wrong-pw") + redis_cmd("PING"), 2)
    assert got.startswith(b"-WRONGPASS") and got.endswith(b"-NOAUTH Authentication required.\r\n"), got
    t.wait_log('kv redis: LDAP or PAM check of "alice": LDAP login failed for user "alice"')
    assert "Invalid credentials" in t.log_text() and "wrong-pw" not in t.log_text()
    got = resp_exchange(port, redis_cmd("HELLO", "3", "AUTH", "bob", "bob-pw"), 1)
    assert got.startswith(b"%") and b"tusk" in got, got
    binds = t.log_text().count("LDAP login failed")
    got = resp_exchange(port, redis_cmd("AUTH", "alice", ""), 1)
    assert got.startswith(b"-WRONGPASS"), got
    assert t.log_text().count("LDAP login failed") == binds  # no bind was tried
    for _ in range(3):  # gone before the answer: it is dropped
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.sendall(redis_cmd("AUTH", "alice", "alice-pw"))
    r = redis.Redis(host="127.0.0.1", port=port, username="bob", password="bob-pw", socket_timeout=10 * SLOW)
    assert r.ping() is True
