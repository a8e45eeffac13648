"""Client authentication in tusk: client_auth per pool rule (trust, reject, password, md5,
scram-sha-256), blocked rules, auth_file secrets (plaintext, md5, SCRAM verifiers), server login
with the client's own credentials (passthrough), hba_file, the unix socket, client_login_timeout,
and memory staying flat under a stream of failed logins."""

import os
import shutil
import socket
import subprocess
import tempfile
import time

import psycopg
import pytest

import pgwire
from conftest import PASSWORDS, PG_BIN, SLOW, TEST_DB, TUSK_BIN, assert_tusk_error, SANITIZED
from lifecycle_util import reload as lifecycle_reload
from auth_util import (AUTH_CLEARTEXT, AUTH_MD5, AUTH_OK, AUTH_SASL, AUTH_SASL_CONTINUE, fail_cleartext_fast,
                       login_error_re, md5_secret, normalized_error, psql, raw_login, scram_verifier,
                       wait_closed, write_auth_file, write_hba)

# Every test here needs tusk itself (auth is tusk's, not PostgreSQL's).
pytestmark = pytest.mark.tusk_only

# Client-side identity checked by tusk; PostgreSQL trusts tusk_trust, so server login needs nothing.
USER = "tusk_trust"
SECRET = "app-secret-1"
METHODS = ["password", "md5", "scram-sha-256"]
# What each method asks the client for, first.
FIRST_REQUEST = {"password": AUTH_CLEARTEXT, "md5": AUTH_MD5, "scram-sha-256": AUTH_SASL}


def rule(user="*", database="*", client_auth=None, **extra):
    r = {"database": database, "user": user, "service": "main", "mode": "session", "size": 5}
    if client_auth:
        r["client_auth"] = client_auth
    r.update(extra)
    return r


def stored(kind, user, password):
    return {"plain": password, "md5": md5_secret(user, password), "scram": scram_verifier(password)}[kind]


def authed_tusk(tusk, tmp_path, method, secrets, pools=None, **kw):
    auth = write_auth_file(tmp_path / "userlist.txt", secrets)
    return tusk(pools=pools or [rule(client_auth=method)], auth_file=auth, **kw)


def assert_login_ok(t, user, password, expect_user=None, dbname=TEST_DB):
    expect_user = expect_user or user
    p = psql(t.port, user, password, dbname=dbname)
    assert p.returncode == 0 and p.stdout.strip() == expect_user, (p.returncode, p.stdout, p.stderr)
    with t.connect(user=user, password=password, dbname=dbname) as c:
        assert c.execute("select current_user").fetchone() == (expect_user,)


def assert_refused(t, user, password, sqlstate, dbname=TEST_DB):
    """psql and psycopg both fail with an error written by tusk; the raw protocol shows the
    SQLSTATE (libpq hides it on a failed login). -> the raw LoginResult."""
    p = psql(t.port, user, password, dbname=dbname)
    assert p.returncode != 0, (p.stdout, p.stderr)
    assert_tusk_error(p.stderr)
    with pytest.raises(psycopg.OperationalError) as ei:
        t.connect(user=user, password=password, dbname=dbname).close()
    assert_tusk_error(str(ei.value))
    r = raw_login(t.port, user, password, dbname=dbname)
    assert r.outcome == "error" and r.sqlstate == sqlstate, r
    assert_tusk_error(r.message)
    return r


# --- each method, each kind of stored secret --------------------------------------------------

@pytest.mark.parametrize("method,kind", [
    ("password", "plain"), ("password", "md5"), ("password", "scram"),
    ("md5", "plain"), ("md5", "md5"), ("md5", "scram"),
    ("scram-sha-256", "plain"), ("scram-sha-256", "scram"),
])
def test_right_password_logs_in(tusk, tmp_path, method, kind):
    t = authed_tusk(tusk, tmp_path, method, {USER: stored(kind, USER, SECRET)})
    assert_login_ok(t, USER, SECRET)
    r = raw_login(t.port, USER, SECRET)
    assert r.outcome == "ok", r
    want = FIRST_REQUEST[method]
    if method == "md5" and kind == "scram":
        want = AUTH_SASL  # md5 can't be checked against a verifier: tusk asks for SCRAM instead
    assert r.requests[0] == want, r
    assert r.requests[-1] == AUTH_OK, r
    if want == AUTH_SASL:
        assert r.server_signature_ok, "tusk's SCRAM server signature does not verify"


@pytest.mark.parametrize("method", METHODS)
def test_wrong_password_is_28P01(tusk, tmp_path, method):
    t = authed_tusk(tusk, tmp_path, method, {USER: SECRET})
    r = assert_refused(t, USER, "not-" + SECRET, "28P01")
    assert login_error_re(USER).match(r.message), r.message
    p = psql(t.port, USER, "not-" + SECRET)
    assert "password authentication failed" in p.stderr, p.stderr
    # the right one still works afterwards
    assert_login_ok(t, USER, SECRET)


@pytest.mark.parametrize("method", ["password", "md5"])
def test_a_client_gone_before_its_refusal_is_written(tusk, tmp_path, method):
    """A client sends a wrong password and resets its connection at once: tusk reads the
    password, and writing the refusal fails, which frees the client inside client_fail. The
    password exchange went on to read the freed client's state (ASan: heap-use-after-free in
    client_auth_input, seen once in a TLS differential test). 150 rounds; tusk serves after."""
    import struct
    t = authed_tusk(tusk, tmp_path, method, {USER: SECRET})
    for _ in range(150):
        c = pgwire.RawClient("127.0.0.1", t.port, timeout=10 * SLOW)
        c.send(pgwire.startup_packet({"user": USER, "database": TEST_DB}))
        kind, body = c.read_message()
        assert kind == b"R" and struct.unpack("!I", body[:4])[0] == FIRST_REQUEST[method], (kind, body)
        pw = b"wrong-" + SECRET.encode() + b"\0"
        c.send(b"p" + struct.pack("!I", len(pw) + 4) + pw)
        c.close(reset=True)
    assert_login_ok(t, USER, SECRET)


@pytest.mark.parametrize("method", METHODS)
def test_unknown_user_looks_like_wrong_password(tusk, tmp_path, method):
    t = authed_tusk(tusk, tmp_path, method, {USER: SECRET})
    wrong = raw_login(t.port, USER, "not-" + SECRET)
    ghost = assert_refused(t, "ghost_user", "whatever", "28P01")
    assert wrong.outcome == "error" and wrong.sqlstate == "28P01", wrong
    assert login_error_re("ghost_user").match(ghost.message), ghost.message
    assert normalized_error(ghost.message, "ghost_user") == normalized_error(wrong.message, USER)
    assert set(ghost.error) == set(wrong.error), (ghost.error, wrong.error)
    # same requests up to the failure: with SCRAM the exchange runs to the end on a mock verifier
    assert ghost.requests == wrong.requests, (ghost, wrong)
    if method == "scram-sha-256":
        assert ghost.requests == [AUTH_SASL, AUTH_SASL_CONTINUE], ghost


def test_scram_iterations_for_plaintext_secrets(tusk, tmp_path):
    """scram_iterations (PgBouncer's): the PBKDF2 rounds tusk asks for when it runs SCRAM from a
    plaintext auth_file secret, and for an unknown user's mock exchange alike (no tell); a
    stored verifier keeps its own. Default 4096, PostgreSQL's."""
    for iterations in (7000, None):
        kw = {"scram_iterations": iterations} if iterations else {}
        t = authed_tusk(tusk, tmp_path, "scram-sha-256",
                        {USER: SECRET, "tusk_solo": scram_verifier("solo-pw", iterations=5000)}, **kw)
        want = iterations or 4096
        ok = raw_login(t.port, USER, SECRET)
        assert ok.outcome == "ok" and ok.server_signature_ok and ok.iterations == want, ok
        ghost = raw_login(t.port, "ghost_user", "whatever")
        assert ghost.outcome == "error" and ghost.iterations == want, ghost
        solo = raw_login(t.port, "tusk_solo", "solo-pw")
        assert solo.outcome == "ok" and solo.iterations == 5000, solo


def test_peer_authentication_on_the_unix_socket(tusk, tmp_path):
    """client_auth peer (PostgreSQL's and PgBouncer's, without a user name map): on the Unix
    socket the system user at the other end must be the user named; over TCP it always fails.
    In hba_file, peer is for local lines only."""
    sockdir = tempfile.mkdtemp(prefix="tusk-peer-")
    os.chmod(sockdir, 0o755)
    try:
        t = tusk(pools=[rule(client_auth="peer")], unix_socket_dir=sockdir)

        def local_psql(db_user):
            return subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "psql"), "-XAt", "-h", sockdir,
                                   "-p", str(t.port), "-U", db_user, "-d", TEST_DB, "-c", "select current_user"],
                                  capture_output=True, text=True, timeout=30 * SLOW)
        ok = local_psql("postgres")
        assert ok.returncode == 0 and ok.stdout.strip() == "postgres", (ok.stdout, ok.stderr)
        other = local_psql(USER)
        assert other.returncode != 0 and f'Peer authentication failed for user "{USER}"' in other.stderr, other.stderr
        assert_tusk_error(other.stderr)
        r = raw_login(t.port, "postgres", None)  # TCP
        assert r.outcome == "error" and r.sqlstate == "28000" and "Peer authentication failed" in r.message, r
        t.wait_log("Peer authentication failed: not on a Unix socket")
        # hba_file: peer on a local line; TCP clients by their own line
        hba = tmp_path / "hba.conf"
        hba.write_text("local all all peer\nhost all all 127.0.0.1/32 trust\n")
        t = tusk(pools=[rule()], unix_socket_dir=sockdir, hba_file=str(hba))
        ok = local_psql("postgres")
        assert ok.returncode == 0 and ok.stdout.strip() == "postgres", (ok.stdout, ok.stderr)
        assert local_psql(USER).returncode != 0
        assert raw_login(t.port, USER, None).outcome == "ok"
        hba.write_text("host all all 127.0.0.1/32 peer\n")
        chk = subprocess.run([str(TUSK_BIN), "--check", "-c", str(t.cfg_path)], capture_output=True, text=True)
        assert chk.returncode != 0 and "peer authentication is only supported on local sockets" in chk.stderr, chk.stderr
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


def test_peer_with_a_user_name_map(tusk, tmp_path):
    """hba_file's map=NAME on a peer line names a map of ident_file (PostgreSQL's pg_ident.conf,
    PgBouncer's auth_ident_file): root, the system user of these tests, logs in as tusk_trust by a
    line of the map, plain or a regular expression with \\1; a map without such a line refuses
    with 28000 and the log names the map; a changed ident_file takes effect at a reload."""
    sockdir = tempfile.mkdtemp(prefix="tusk-ident-")
    os.chmod(sockdir, 0o755)
    try:
        ident = tmp_path / "ident.conf"
        ident.write_text("# tusk test ident_file\n"
                         "plain root tusk_trust\n"
                         "rx /^(r)oot$ tusk_t\\1ust\n"
                         "nobody someone_else tusk_trust\n")
        hba = write_hba(tmp_path / "hba.conf", [
            "local all tusk_trust peer map=plain",
            "local all tusk_solo peer map=nobody",
            "local all all peer map=rx",
        ])
        t = tusk(pools=[rule()], unix_socket_dir=sockdir, hba_file=hba, ident_file=str(ident))
        sock = os.path.join(sockdir, f".s.PGSQL.{t.port}")

        def local_login(db_user):
            return raw_login(t.port, db_user, None, client=pgwire.RawClient.unix(sock, timeout=10 * SLOW))

        def local_psql(db_user):
            return subprocess.run([str(PG_BIN / "psql"), "-XAt", "-h", sockdir, "-p", str(t.port), "-U", db_user,
                                   "-d", TEST_DB, "-c", "select current_user"],
                                  capture_output=True, text=True, timeout=30 * SLOW)
        ok = local_psql(USER)
        assert ok.returncode == 0 and ok.stdout.strip() == USER, (ok.stdout, ok.stderr)
        # Without the map, root would have to log in as root.
        r = local_login("tusk_solo")
        assert r.outcome == "error" and r.sqlstate == "28000", r
        assert r.message.endswith('Peer authentication failed for user "tusk_solo"'), r
        t.wait_log('no match in usermap "nobody" for user "tusk_solo" authenticated as "root"')
        # The regular expression's capture: tusk_t + r + ust; anything else is refused.
        ok = local_psql("postgres")
        assert ok.returncode != 0 and 'Peer authentication failed for user "postgres"' in ok.stderr, ok.stderr
        assert_tusk_error(ok.stderr)
        t.wait_log('no match in usermap "rx" for user "postgres" authenticated as "root"')
        # A reload reads ident_file again: the map nobody now admits root as tusk_solo, and plain
        # no longer admits it as tusk_trust.
        ident.write_text("plain someone_else tusk_trust\n"
                         "rx /^(r)oot$ tusk_t\\1ust\n"
                         "nobody root tusk_solo\n")
        lifecycle_reload(t)
        assert local_login("tusk_solo").outcome == "ok"
        r = local_login(USER)
        assert r.outcome == "error" and r.sqlstate == "28000", r
        t.wait_log(f'no match in usermap "plain" for user "{USER}" authenticated as "root"')
        # A bad ident_file fails the reload and the running maps stay.
        ident.write_text("plain root\n")
        lifecycle_reload(t, expect_ok=False)
        t.wait_log(f"{ident}:1: ident: end of line before the database user name")
        assert local_login("tusk_solo").outcome == "ok"
        # --check: file:line and the reason, for ident_file and for a map it lacks.
        chk = subprocess.run([str(TUSK_BIN), "--check", "-c", str(t.cfg_path)], capture_output=True, text=True)
        assert chk.returncode != 0 and f"{ident}:1: ident: end of line before the database user name" in chk.stderr, \
            chk.stderr
        ident.write_text("rx root tusk_trust\n")
        chk = subprocess.run([str(TUSK_BIN), "--check", "-c", str(t.cfg_path)], capture_output=True, text=True)
        assert chk.returncode != 0, chk.stderr
        assert f'{hba}:2: hba: user name map "plain" is not in ident_file' in chk.stderr, chk.stderr
        assert f'{hba}:3: hba: user name map "nobody" is not in ident_file' in chk.stderr, chk.stderr
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


def test_map_needs_ident_file_and_cert_or_peer(tusk, tmp_path):
    """map=NAME without ident_file, or on a method other than cert and peer, fails --check with
    the hba_file's line."""
    hba = write_hba(tmp_path / "hba.conf", ["host all all 127.0.0.1/32 trust"])
    t = tusk(pools=[rule()], hba_file=hba)
    for line, reason in [("local all all peer map=m", 'user name map "m" but no ident_file is set'),
                         ("host all all 127.0.0.1/32 md5 map=m",
                          'authentication option "map" is only valid for the cert and peer methods')]:
        write_hba(tmp_path / "hba.conf", [line])
        chk = subprocess.run([str(TUSK_BIN), "--check", "-c", str(t.cfg_path)], capture_output=True, text=True)
        assert chk.returncode != 0 and f"{hba}:2: hba: {reason}" in chk.stderr, chk.stderr


def test_ident_file_without_hba_file_warns_and_costly_patterns_are_refused(tusk, tmp_path):
    """ident_file's maps serve only hba_file's map=: set alone, it is checked and tusk warns at the
    start and at --check (and at each reload). A pattern glibc's matcher could spend minutes or gigabytes
    on (a back-reference, stacked quantifiers, counts that multiply) fails --check and the reload
    with its line, and the running maps stay."""
    ident = tmp_path / "ident.conf"
    ident.write_text("m root tusk_trust\n")
    warning = f"ident_file {ident} is set but hba_file is not: its maps are used only by hba_file's map= option"
    t = tusk(pools=[rule()], ident_file=str(ident))
    t.wait_log(warning)
    assert_login_ok(t, USER, None)
    chk = subprocess.run([str(TUSK_BIN), "--check", "-c", str(t.cfg_path)], capture_output=True, text=True)
    assert chk.returncode == 0 and warning in chk.stderr, chk.stderr
    for pattern, reason in [("^(a|aa)*\\1$", "back-references (\\1 to \\9) are not supported"),
                            ("^x**$", "a quantifier right after a quantifier"),
                            ("^((a{200}){200}){200}$", "it is too large once what its counts and '+' repeat is copied")]:
        ident.write_text(f"m root tusk_trust\nm /{pattern} tusk_trust\n")
        chk = subprocess.run([str(TUSK_BIN), "--check", "-c", str(t.cfg_path)], capture_output=True, text=True)
        assert chk.returncode != 0, chk.stderr
        assert f'{ident}:2: ident: regular expression "{pattern}": {reason}' in chk.stderr, chk.stderr
    lifecycle_reload(t, expect_ok=False)
    t.wait_log(f'{ident}:2: ident: regular expression "^((a{{200}}){{200}}){{200}}$"')
    assert_login_ok(t, USER, None)


def test_trust_and_reject(tusk):
    t = tusk(pools=[rule(user="tusk_solo", client_auth="reject"), rule(client_auth="trust")])
    r = raw_login(t.port, USER, None)
    assert r.outcome == "ok" and r.requests == [AUTH_OK], r  # no password asked
    assert_login_ok(t, USER, None)
    assert_refused(t, "tusk_solo", None, "28000")


def test_default_client_auth_is_trust(tusk):
    t = tusk(pools=[rule()])
    r = raw_login(t.port, USER, None)
    assert r.outcome == "ok" and r.requests == [AUTH_OK], r


def test_blocked_rule_is_28000(tusk, tmp_path):
    t = authed_tusk(tusk, tmp_path, "password", {USER: SECRET, "tusk_solo": SECRET},
                    pools=[rule(user="tusk_solo", blocked=True), rule(client_auth="password")])
    # refused even with the right password
    assert_refused(t, "tusk_solo", SECRET, "28000")
    assert_login_ok(t, USER, SECRET)


# --- passthrough: no server_password, the client's credentials log in to PostgreSQL -----------

def _pg_secret(pg, user):
    return pg.execute("select rolpassword from pg_authid where rolname = %s", (user,))[0][0]


@pytest.mark.parametrize("user,method", [("pw_clear", "password"), ("pw_md5", "md5"),
                                         ("pw_scram", "scram-sha-256")])
def test_passthrough_with_server_secrets(tusk, tmp_path, pg, user, method):
    secret = {"password": PASSWORDS[user], "md5": _pg_secret(pg, user), "scram-sha-256": _pg_secret(pg, user)}[method]
    if method == "md5":
        assert secret == md5_secret(user, PASSWORDS[user])
    else:
        assert method == "password" or secret.startswith("SCRAM-SHA-256$")
    t = authed_tusk(tusk, tmp_path, method, {user: secret}, pools=[rule(user=user, client_auth=method)],
                    server_connect_timeout="5s")
    assert_login_ok(t, user, PASSWORDS[user])
    # a wrong password is caught by tusk, never forwarded
    r = assert_refused(t, user, "wrong-" + PASSWORDS[user], "28P01")
    assert login_error_re(user).match(r.message), r.message
    # two at once: the second login to PostgreSQL also has what it needs
    with t.connect(user=user, password=PASSWORDS[user]) as a, t.connect(user=user, password=PASSWORDS[user]) as b:
        assert a.execute("select current_user").fetchone() == (user,)
        assert b.execute("select current_user").fetchone() == (user,)


def test_passthrough_pool_keeps_min_size_after_first_login(tusk, tmp_path, pg):
    """min_size in a pool with no server_password: nothing to log in with until a client's SCRAM
    proof reveals the ClientKey; then tusk opens min_size servers itself and keeps them, and it
    does not hammer PostgreSQL with failing logins before that."""
    user = "pw_scram"
    t = authed_tusk(tusk, tmp_path, "scram-sha-256", {user: _pg_secret(pg, user)},
                    pools=[rule(user=user, client_auth="scram-sha-256", min_size=3, mode="transaction")])
    time.sleep(2.5 * SLOW)  # a few housekeeping ticks: at most one refused attempt, then none
    assert t.log_text().count("password authentication failed") <= 1, t.log_tail()
    assert pg.backends(user=user) == 0
    assert_login_ok(t, user, PASSWORDS[user])
    deadline = time.monotonic() + 10 * SLOW
    while pg.backends(user=user) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pg.backends(user=user) == 3


# --- hba_file -----------------------------------------------------------------------------------

def hba_tusk(tusk, tmp_path, lines, pools=None, secrets=None, **kw):
    kw["hba_file"] = write_hba(tmp_path / "hba.conf", lines)
    if secrets:
        kw["auth_file"] = write_auth_file(tmp_path / "userlist.txt", secrets)
    return tusk(pools=pools or [rule()], **kw)


def test_hba_allows_by_address(tusk, tmp_path):
    t = hba_tusk(tusk, tmp_path, ["host all all 10.0.0.0/8 reject", "host all all 127.0.0.1/32 trust"])
    assert_login_ok(t, USER, None)


def test_hba_no_match_is_refused(tusk, tmp_path):
    t = hba_tusk(tusk, tmp_path, ["host all all 10.0.0.0/8 trust", "host all all ::1/128 trust"])
    assert_refused(t, USER, None, "28000")


def test_hba_denies_by_user(tusk, tmp_path):
    t = hba_tusk(tusk, tmp_path, ["host all tusk_solo 127.0.0.1/32 reject", "host all all 127.0.0.1/32 trust"])
    assert_refused(t, "tusk_solo", None, "28000")
    assert_login_ok(t, USER, None)


def test_hba_denies_by_database(tusk, tmp_path):
    t = hba_tusk(tusk, tmp_path, ["host postgres all 127.0.0.1/32 reject", "host all all 127.0.0.1/32 trust"])
    assert_refused(t, USER, None, "28000", dbname="postgres")
    assert_login_ok(t, USER, None)


def test_hba_method_replaces_rule_client_auth(tusk, tmp_path):
    # the rule says trust, hba says scram-sha-256: a password is required
    t = hba_tusk(tusk, tmp_path, ["host all all 127.0.0.1/32 scram-sha-256"], pools=[rule(client_auth="trust")],
                 secrets={USER: SECRET})
    r = raw_login(t.port, USER, None)
    assert r.outcome == "asked" and r.requests == [AUTH_SASL], r
    assert_refused(t, USER, "wrong", "28P01")
    assert_login_ok(t, USER, SECRET)


def test_hba_local_line_over_unix_socket(tusk, tmp_path):
    sockdir = tempfile.mkdtemp(prefix="tusk-sock-")  # short: sun_path holds 107 bytes
    try:
        t = hba_tusk(tusk, tmp_path, ["local all all trust", "host all all 127.0.0.1/32 reject"],
                     unix_socket_dir=sockdir)
        p = psql(t.port, USER, None, host=sockdir)
        assert p.returncode == 0 and p.stdout.strip() == USER, (p.returncode, p.stdout, p.stderr)
        with psycopg.connect(host=sockdir, port=t.port, user=USER, dbname=TEST_DB, autocommit=True,
                             connect_timeout=int(15 * SLOW)) as c:
            assert c.execute("select current_user").fetchone() == (USER,)
        # the same tusk over TCP matches the host line: rejected
        assert_refused(t, USER, None, "28000")
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


# --- client_login_timeout -------------------------------------------------------------------------

def test_login_timeout_closes_silent_clients(tusk, tmp_path):
    t = authed_tusk(tusk, tmp_path, "password", {USER: SECRET}, client_login_timeout="1s")
    silent = socket.create_connection(("127.0.0.1", t.port), timeout=5)
    # one that stops halfway: startup sent, the password request never answered
    asked, half = raw_login(t.port, USER, None, keep_open=True)
    try:
        assert asked.outcome == "asked" and asked.requests == [AUTH_CLEARTEXT], asked
        start = time.monotonic()
        # meanwhile another client logs in and works
        with t.connect(user=USER, password=SECRET) as c:
            assert c.execute("select 1").fetchone() == (1,)
        took = wait_closed(silent, 6 * SLOW)
        assert took is not None, "a client that sent nothing was not closed within 6s"
        took = time.monotonic() - start
        assert 0.5 <= took <= 6 * SLOW, took
        assert wait_closed(half.sock, 6 * SLOW) is not None, "a client stuck in auth was not closed"
        with t.connect(user=USER, password=SECRET) as c:
            assert c.execute("select 2").fetchone() == (2,)
    finally:
        silent.close()
        half.close()


# --- memory under failed logins -------------------------------------------------------------------

def test_failed_logins_do_not_grow_memory(tusk, tmp_path):
    t = authed_tusk(tusk, tmp_path, "password", {USER: SECRET})
    for _ in range(100):
        assert fail_cleartext_fast(t.port, USER, "wrong") == "28P01"
    time.sleep(0.2)
    before = t.status("VmRSS")
    start = time.monotonic()
    for i in range(1000):
        code = fail_cleartext_fast(t.port, USER, "wrong")
        assert code == "28P01", f"login {i}: {code}"
    elapsed = time.monotonic() - start
    time.sleep(0.2)
    after = t.status("VmRSS")
    # Under ASan freed memory sits in the allocator's quarantine, so RSS measures that, not
    # tusk; LeakSanitizer checks at exit that nothing leaked instead.
    if not SANITIZED:
        assert after - before <= 5 * 1024, f"VmRSS {before} kB -> {after} kB after 1000 failed logins ({elapsed:.1f}s)"
    assert_login_ok(t, USER, SECRET)
