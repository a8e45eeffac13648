"""auth_query: secrets of users absent from auth_file are fetched from PostgreSQL by tusk's own
connection as auth_user (PgBouncer's auth_user/auth_query), cached for auth_cache_ttl, and then
checked exactly as auth_file secrets are (md5 and SCRAM exchanges, passthrough to the server).

One PostgreSQL cluster of this module's own, since the tests change its pg_hba.conf: every role
used here must give PostgreSQL a password, so passthrough is really exercised."""

import socket
import subprocess
import threading
import time

import psycopg
import pytest

from conftest import SLOW, TEST_DB, TUSK_BIN, _make_pg, assert_tusk_error, wait_until
import pgwire
from txn_util import PeakWatcher
from auth_util import (AUTH_MD5, AUTH_OK, AUTH_SASL, login_error_re, md5_secret, normalized_error, psql,
                       raw_login, write_auth_file)

pytestmark = pytest.mark.tusk_only

PW = {"aq_md5": "md5-pass-1", "aq_scram": "scram-pass-1", "aq_super": "super-pass-1",
      "aq_lookup": "lookup-pass-1", "aq_late": "late-pass-1"}
LOOKUP_QUERY = "SELECT uname, phash FROM public.tusk_lookup($1)"

HBA_HEAD = """local all all trust
host all postgres 127.0.0.1/32 trust
"""
HBA_ROLES = """host all aq_md5 127.0.0.1/32 md5
host all aq_scram 127.0.0.1/32 scram-sha-256
host all aq_late 127.0.0.1/32 scram-sha-256
host all aq_lookup 127.0.0.1/32 scram-sha-256
host all tusk_trust 127.0.0.1/32 trust
host all all 127.0.0.1/32 reject
"""


def set_hba(pg, super_line="host all aq_super 127.0.0.1/32 md5"):
    (pg.data / "pg_hba.conf").write_text(HBA_HEAD + super_line + "\n" + HBA_ROLES)
    assert pg.execute("select pg_reload_conf()") == [(True,)]
    # the postmaster rereads pg_hba.conf on SIGHUP, asynchronously
    time.sleep(0.3)


@pytest.fixture(scope="module")
def aq_pg(workdir):
    s = _make_pg(workdir / "pg-authquery", with_bench=False)
    with s.admin() as c:
        c.execute("set password_encryption = 'md5'")
        c.execute(f"create role aq_md5 login password '{PW['aq_md5']}'")
        c.execute(f"create role aq_super login superuser password '{PW['aq_super']}'")
        c.execute("set password_encryption = 'scram-sha-256'")
        c.execute(f"create role aq_scram login password '{PW['aq_scram']}'")
        c.execute(f"create role aq_lookup login password '{PW['aq_lookup']}'")
    # PgBouncer's recommended setup: a SECURITY DEFINER function the auth_user may execute,
    # instead of a superuser reading pg_shadow.
    with s.admin(TEST_DB) as c:
        c.execute("""create function public.tusk_lookup(i_username text, out uname text, out phash text)
                     returns record as $$
                       select usename::text, passwd::text from pg_catalog.pg_shadow where usename = i_username
                     $$ language sql security definer set search_path = pg_catalog""")
        c.execute("revoke all on function public.tusk_lookup(text) from public")
        c.execute("grant execute on function public.tusk_lookup(text) to aq_lookup")
    set_hba(s)
    yield s
    s.destroy()


def wait_log(t, text):
    """tusk's logger writes asynchronously: wait for the line."""
    wait_until(lambda: text in t.log_text(), 5 * SLOW, what=f"{text!r} in tusk's log")


def rule(method, **extra):
    r = {"database": "*", "user": "*", "service": "main", "mode": "session", "size": 5, "client_auth": method}
    r.update(extra)
    return r


def aq_tusk(tusk, tmp_path, aq_pg, method, auth_entries=None, pools=None, **kw):
    """auth_file holds auth_user's secret only (md5 hash, as PostgreSQL stores it)."""
    entries = auth_entries if auth_entries is not None else {"aq_super": md5_secret("aq_super", PW["aq_super"])}
    if entries:
        kw["auth_file"] = write_auth_file(tmp_path / "userlist.txt", entries)
    kw.setdefault("auth_user", "aq_super")
    return tusk(pg_server=aq_pg, pools=pools or [rule(method)], **kw)


def assert_login_ok(t, user, password):
    p = psql(t.port, user, password)
    assert p.returncode == 0 and p.stdout.strip() == user, (p.returncode, p.stdout, p.stderr)
    with t.connect(user=user, password=password) as c:
        assert c.execute("select current_user, session_user").fetchone() == (user, user)


def assert_refused(t, user, password, sqlstate="28P01"):
    p = psql(t.port, user, password)
    assert p.returncode != 0, (p.stdout, p.stderr)
    assert_tusk_error(p.stderr)
    with pytest.raises(psycopg.OperationalError) as ei:
        t.connect(user=user, password=password).close()
    assert_tusk_error(str(ei.value))
    r = raw_login(t.port, user, password)
    assert r.outcome == "error" and r.sqlstate == sqlstate, r
    assert_tusk_error(r.message)
    return r


# --- logins with fetched secrets, passthrough to PostgreSQL ------------------------------------

@pytest.mark.parametrize("method,user,first", [
    ("md5", "aq_md5", AUTH_MD5),
    ("md5", "aq_scram", AUTH_SASL),  # a SCRAM secret cannot answer md5: tusk asks SCRAM instead
    ("scram-sha-256", "aq_scram", AUTH_SASL),
])
def test_fetched_secret_logs_in_with_passthrough(tusk, tmp_path, aq_pg, method, user, first):
    # no server_password: tusk logs in to PostgreSQL with what the client's auth revealed
    t = aq_tusk(tusk, tmp_path, aq_pg, method)
    assert_login_ok(t, user, PW[user])
    r = raw_login(t.port, user, PW[user])
    assert r.outcome == "ok" and r.requests[0] == first and r.requests[-1] == AUTH_OK, r
    if first == AUTH_SASL:
        assert r.server_signature_ok, "tusk's SCRAM signature from a fetched verifier does not verify"
    # two at once: a second server login also has the client's credentials
    with t.connect(user=user, password=PW[user]) as a, t.connect(user=user, password=PW[user]) as b:
        assert a.execute("select current_user").fetchone() == (user,)
        assert b.execute("select current_user").fetchone() == (user,)


# (Under md5, a user with a SCRAM secret is asked for SCRAM, as PostgreSQL does; an unknown
# user looks like a user with an md5 secret.)
@pytest.mark.parametrize("method,user", [("md5", "aq_md5"), ("scram-sha-256", "aq_scram")])
def test_wrong_password_and_unknown_user_are_the_same_28P01(tusk, tmp_path, aq_pg, method, user):
    t = aq_tusk(tusk, tmp_path, aq_pg, method)
    wrong = assert_refused(t, user, "not-" + PW[user])
    assert login_error_re(user).match(wrong.message), wrong.message
    ghost = assert_refused(t, "aq_ghost", "whatever")
    assert login_error_re("aq_ghost").match(ghost.message), ghost.message
    assert normalized_error(ghost.message, "aq_ghost") == normalized_error(wrong.message, user)
    assert set(ghost.error) == set(wrong.error), (ghost.error, wrong.error)
    assert ghost.requests == wrong.requests, (ghost, wrong)
    # the right password still works after failures
    assert_login_ok(t, user, PW[user])


def test_user_name_is_a_parameter_not_sql(tusk, tmp_path, aq_pg):
    # Pasted into the SQL, this name would select aq_md5's row and its password would pass.
    t = aq_tusk(tusk, tmp_path, aq_pg, "md5")
    evil = "aq_md5' or usename = 'aq_md5"
    r = raw_login(t.port, evil, PW["aq_md5"])
    assert r.outcome == "error" and r.sqlstate == "28P01", r
    assert login_error_re(evil).match(r.message), r.message
    assert_login_ok(t, "aq_md5", PW["aq_md5"])


def test_security_definer_function_per_rule(tusk, tmp_path, aq_pg):
    """auth_user and auth_query set on the pool rule; the auth_user is no superuser, logs in
    with a plain secret from auth_file over SCRAM, and reads pg_shadow through a function."""
    pools = [rule("scram-sha-256", auth_user="aq_lookup", auth_query=LOOKUP_QUERY)]
    t = aq_tusk(tusk, tmp_path, aq_pg, None, pools=pools, auth_entries={"aq_lookup": PW["aq_lookup"]},
                auth_user="aq_nobody")
    assert_login_ok(t, "aq_scram", PW["aq_scram"])
    assert_refused(t, "aq_md5", PW["aq_md5"])  # as in PostgreSQL: an md5 secret cannot answer SCRAM
    # the function returns a row of NULLs for an unknown user: that is "no such user"
    ghost = assert_refused(t, "aq_ghost", "x")
    wrong = raw_login(t.port, "aq_scram", "wrong")
    assert normalized_error(ghost.message, "aq_ghost") == normalized_error(wrong.message, "aq_scram")
    # the auth_user itself is in auth_file, so it authenticates from there
    assert_login_ok(t, "aq_lookup", PW["aq_lookup"])


def test_auth_dbname_runs_auth_query_in_its_own_database(tusk, tmp_path, aq_pg):
    """auth_dbname (PgBouncer's, top level and per rule): auth_query runs in that database, so
    the lookup function need exist only there; without it, in the client's database, where
    the function is missing and the login fails."""
    with aq_pg.admin() as c:
        if not c.execute("select 1 from pg_database where datname = 'aq_authdb'").fetchone():
            c.execute("create database aq_authdb")
    with aq_pg.admin("aq_authdb") as c:
        c.execute("""create or replace function public.lookup_elsewhere(i_username text, out uname text,
                     out phash text) returns record as $$
                       select usename::text, passwd::text from pg_catalog.pg_shadow where usename = i_username
                     $$ language sql security definer set search_path = pg_catalog""")
        c.execute("revoke all on function public.lookup_elsewhere(text) from public")
        c.execute("grant execute on function public.lookup_elsewhere(text) to aq_lookup")
    query = "SELECT uname, phash FROM public.lookup_elsewhere($1)"
    base = dict(auth_entries={"aq_lookup": PW["aq_lookup"]}, auth_user="aq_lookup", auth_query=query,
                auth_cache_ttl=0)
    t = aq_tusk(tusk, tmp_path, aq_pg, "scram-sha-256", auth_dbname="aq_authdb", **base)
    assert_login_ok(t, "aq_scram", PW["aq_scram"])
    assert_refused(t, "aq_scram", "wrong")
    # a rule's own auth_dbname wins over the top-level one
    t = aq_tusk(tusk, tmp_path, aq_pg, None, auth_dbname="postgres",
                pools=[rule("scram-sha-256", auth_dbname="aq_authdb")], **base)
    assert_login_ok(t, "aq_scram", PW["aq_scram"])
    # none: the query runs in the client's database, which has no such function
    t = aq_tusk(tusk, tmp_path, aq_pg, "scram-sha-256", **base)
    r = raw_login(t.port, "aq_scram", PW["aq_scram"])
    assert r.outcome == "error" and r.sqlstate == "28000" and "auth_query failed" in r.message, r
    wait_log(t, "lookup_elsewhere")


def test_auth_user_with_trust_and_no_auth_file(tusk, tmp_path, aq_pg):
    # postgres is trusted by the cluster and absent from auth_file (there is none)
    t = aq_tusk(tusk, tmp_path, aq_pg, "md5", auth_entries={}, auth_user="postgres")
    assert_login_ok(t, "aq_md5", PW["aq_md5"])
    assert_refused(t, "aq_md5", "wrong")


def test_auth_user_without_secret_is_logged(tusk, tmp_path, aq_pg):
    # aq_super needs a password (md5 in pg_hba) and auth_file has none for it
    t = aq_tusk(tusk, tmp_path, aq_pg, "md5", auth_entries={"someone_else": "x"})
    r = raw_login(t.port, "aq_md5", PW["aq_md5"])
    assert r.outcome == "error" and r.sqlstate == "28000" and "auth_query failed" in r.message, r
    wait_log(t, "auth_file has no plain or md5 secret for this user")


def test_concurrent_logins_without_cache(tusk, tmp_path, aq_pg):
    """auth_cache_ttl 0: every login queries. Many at once (a flood of unknown users among
    them) queue on the per-worker connection: each client gets its own answer, and
    PostgreSQL never sees more auth_user backends than tusk has workers."""
    workers = 2
    t = aq_tusk(tusk, tmp_path, aq_pg, "md5", auth_cache_ttl=0, workers=workers,
                auth_query=SLOW_QUERY.format(0.01))
    results, errors = [], []

    def one(user, password, want_ok):
        try:
            with t.connect(user=user, password=password) as c:
                results.append((user, want_ok, c.execute("select current_user").fetchone()[0]))
        except psycopg.OperationalError as e:
            results.append((user, want_ok, "error" if "password authentication failed" in str(e) else str(e)))
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    jobs = []
    for i in range(10):
        jobs += [("aq_md5", PW["aq_md5"], True), ("aq_scram", PW["aq_scram"], True),
                 (f"aq_ghost{i}", "x", False), (f"aq_ghost{i}b", "x", False), ("aq_md5", "wrong", False)]
    threads = [threading.Thread(target=one, args=j) for j in jobs]
    with PeakWatcher(aq_pg, user="aq_super", interval=0.005) as w:
        for th in threads:
            th.start()
        for th in threads:
            th.join(60 * SLOW)
    assert w.error is None, w.error
    assert not errors, errors
    assert len(results) == len(jobs)
    for user, want_ok, got in results:
        assert got == (user if want_ok else "error"), (user, want_ok, got)
    assert 1 <= w.peak <= workers, f"{w.peak} auth_user backends at once with {workers} workers"
    # the connections are closed once their queues are empty
    wait_until(lambda: aq_pg.backends(user="aq_super") == 0, 5 * SLOW, what="auth_query connections closed")


# --- the cache ----------------------------------------------------------------------------------

def test_cache_keeps_logins_working_until_ttl(tusk, tmp_path, aq_pg):
    ttl = 3.0 * SLOW
    t = aq_tusk(tusk, tmp_path, aq_pg, "md5", auth_cache_ttl=f"{int(ttl * 1000)}ms")
    try:
        assert_login_ok(t, "aq_md5", PW["aq_md5"])  # fills the cache
        filled = time.monotonic()
        set_hba(aq_pg, "host all aq_super 127.0.0.1/32 reject")  # the auth_user can no longer log in
        # cached: logins go on (the server login is aq_md5's own, still allowed)
        assert_login_ok(t, "aq_md5", PW["aq_md5"])
        assert_refused(t, "aq_md5", "wrong")
        assert time.monotonic() - filled < ttl, "test too slow to observe the cache"
        # not cached: needs the auth_user, which PostgreSQL now rejects
        r = raw_login(t.port, "aq_scram", PW["aq_scram"])
        assert r.outcome == "error" and r.sqlstate == "28000", r
        assert "auth_query failed" in r.message, r.message
        assert_tusk_error(r.message)
        # after the TTL the cached secret is gone too
        time.sleep(max(0.0, ttl - (time.monotonic() - filled)) + 0.5)
        r = raw_login(t.port, "aq_md5", PW["aq_md5"])
        assert r.outcome == "error" and r.sqlstate == "28000", r
        p = psql(t.port, "aq_md5", PW["aq_md5"])
        assert p.returncode != 0 and "auth_query failed" in p.stderr, p.stderr
        wait_log(t, "auth_query connection failed")
    finally:
        set_hba(aq_pg)
    # the auth_user is back: logins work again
    assert_login_ok(t, "aq_md5", PW["aq_md5"])


def test_unknown_user_is_cached_too(tusk, tmp_path, aq_pg):
    ttl = 3.0 * SLOW
    t = aq_tusk(tusk, tmp_path, aq_pg, "scram-sha-256", auth_cache_ttl=f"{int(ttl * 1000)}ms")
    aq_pg.execute("drop role if exists aq_late")
    try:
        assert_refused(t, "aq_late", PW["aq_late"])  # "no such user" is remembered
        made = time.monotonic()
        aq_pg.execute(f"set password_encryption = 'scram-sha-256'; create role aq_late login password '{PW['aq_late']}'")
        r = raw_login(t.port, "aq_late", PW["aq_late"])
        assert r.outcome == "error" and r.sqlstate == "28P01", r
        assert time.monotonic() - made < ttl, "test too slow to observe the cache"
        time.sleep(max(0.0, ttl - (time.monotonic() - made)) + 0.5)
        assert_login_ok(t, "aq_late", PW["aq_late"])
    finally:
        aq_pg.execute("drop role if exists aq_late")


def test_auth_query_error_is_reported_not_taken_as_unknown(tusk, tmp_path, aq_pg):
    # a query that fails on the server (no such function) must not look like "no such user"
    t = aq_tusk(tusk, tmp_path, aq_pg, "md5", auth_query="SELECT * FROM public.no_such_fn($1)")
    r = raw_login(t.port, "aq_md5", PW["aq_md5"])
    assert r.outcome == "error" and r.sqlstate == "28000" and "auth_query failed" in r.message, r
    wait_log(t, "no_such_fn")


@pytest.mark.parametrize("size", [9000, 20000])  # over the 8 kB row bound; over the 16 kB buffer
def test_oversized_answer_is_refused(tusk, tmp_path, aq_pg, size):
    t = aq_tusk(tusk, tmp_path, aq_pg, "md5", auth_query=f"SELECT $1::text, repeat('x', {size})")
    r = raw_login(t.port, "aq_md5", PW["aq_md5"])
    assert r.outcome == "error" and r.sqlstate == "28000" and "auth_query failed" in r.message, r
    wait_log(t, "too large")
    # the connection survived the oversized row: the next login's query runs on it or a new one
    r = raw_login(t.port, "aq_scram", PW["aq_scram"])
    assert r.outcome == "error" and r.sqlstate == "28000", r


SLOW_QUERY = "SELECT usename, passwd FROM pg_shadow, pg_sleep({}) WHERE usename = $1"


def test_client_gone_during_the_query_then_answer_cached(tusk, tmp_path, aq_pg):
    """The client's login timeout fires while its query runs: it is told so, tusk survives, and
    the answer, which arrives later, is cached for the next login."""
    t = aq_tusk(tusk, tmp_path, aq_pg, "md5", auth_query=SLOW_QUERY.format(2 * SLOW),
                client_login_timeout=f"{int(1000 * SLOW)}ms", server_connect_timeout="30s")
    r = raw_login(t.port, "aq_md5", PW["aq_md5"], timeout=10 * SLOW)
    assert r.outcome == "error" and r.sqlstate == "08P01" and "client_login_timeout" in r.message, r
    time.sleep(2 * SLOW)
    start = time.monotonic()
    assert_login_ok(t, "aq_md5", PW["aq_md5"])
    assert time.monotonic() - start < 1.5 * SLOW, "second login was not served from the cache"


def test_shutdown_with_queries_in_flight(tusk, tmp_path, aq_pg):
    """SIGTERM while clients wait for auth_query answers: tusk exits 0, and (under ASan) leaks
    nothing; the fixture's teardown checks both."""
    t = aq_tusk(tusk, tmp_path, aq_pg, "md5", auth_query=SLOW_QUERY.format(3), server_connect_timeout="30s")
    socks = []
    for user in ("aq_md5", "aq_scram", "aq_ghost"):
        s = socket.create_connection(("127.0.0.1", t.port), timeout=5)
        s.sendall(pgwire.startup_packet({"user": user, "database": TEST_DB}))
        socks.append(s)
    wait_until(lambda: aq_pg.execute("select count(*) from pg_stat_activity where usename = 'aq_super'")[0][0] > 0,
               5 * SLOW, what="auth_query connection on the server")
    problems = t.stop()
    for s in socks:
        s.close()
    assert not problems, problems


def test_query_timeout(tusk, tmp_path, aq_pg):
    # server_connect_timeout bounds the query too
    t = aq_tusk(tusk, tmp_path, aq_pg, "md5", auth_query=SLOW_QUERY.format(5), server_connect_timeout="1s")
    start = time.monotonic()
    r = raw_login(t.port, "aq_md5", PW["aq_md5"], timeout=10 * SLOW)
    assert r.outcome == "error" and r.sqlstate == "28000" and "auth_query failed" in r.message, r
    assert time.monotonic() - start < 4 * SLOW
    wait_log(t, "timed out")


# --- configuration -------------------------------------------------------------------------------

def check_config(tmp_path, text):
    cfg = tmp_path / "check.yaml"
    cfg.write_text(text)
    return subprocess.run([str(TUSK_BIN), "--check", "-c", str(cfg)], capture_output=True, text=True, timeout=30)


BASE = """services:
  main:
    hosts: ["127.0.0.1:5432"]
pools:
  - database: "*"
    user: "*"
    client_auth: md5
"""


def test_check_validates_auth_keys(tmp_path):
    ok = check_config(tmp_path, BASE + "auth_user: pgbouncer\nauth_cache_ttl: 30s\n"
                      "auth_query: \"SELECT usename, passwd FROM pg_shadow WHERE usename = $1\"\n")
    assert ok.returncode == 0, ok.stderr
    bad = check_config(tmp_path, BASE + "auth_query: \"SELECT usename, passwd FROM pg_shadow WHERE usename = 'x'\"\n"
                       "auth_cache_ttl: forever\n")
    assert bad.returncode != 0
    assert "auth_query" in bad.stderr and "$1" in bad.stderr, bad.stderr
    assert "auth_cache_ttl" in bad.stderr, bad.stderr
    bad = check_config(tmp_path, BASE + "    auth_query: \"SELECT $2\"\n    auth_user: \"\"\n")
    assert bad.returncode != 0
    assert "pools[0].auth_query" in bad.stderr and "pools[0].auth_user" in bad.stderr, bad.stderr
