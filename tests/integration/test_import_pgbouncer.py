"""tusk import-pgbouncer (issue 26): a realistic pgbouncer.ini and userlist.txt become a
tusk.yaml that tusk starts on, and tusk then answers like PgBouncer 1.18 (Debian's binary) on
the same PostgreSQL: the same database and user behind each alias, the same logins refused,
the console for admin_users/stats_users. Every setting not carried is listed with a reason."""

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from conftest import PASSWORDS, SLOW, TEST_DB, BENCH_DB, TUSK_BIN, as_postgres, free_port, port_open, wait_until
from auth_util import md5_secret, psql
from tls_util import Certs

pytestmark = pytest.mark.tusk_only
PGBOUNCER = Path("/usr/sbin/pgbouncer")

INI = """\
;; pgbouncer.ini of a typical deployment (comments, odd spacing, several databases, TLS keys)
[databases]
appdb = host=127.0.0.1 port={pg} dbname={db} pool_size=5 pool_mode=transaction reserve_pool=3
reports = host=127.0.0.1 port={pg} dbname={db} pool_size=2 min_pool_size=1 connect_query='set tusk_test.cq = ''it''''s\\''' timezone=Asia/Tokyo datestyle='SQL, DMY'
bench   = host=127.0.0.1 port={pg} dbname={bench} user=tusk_trust pool_size=3
* = host=127.0.0.1 port={pg}

[users]
pw_clear = pool_mode=session max_user_connections=4

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
logfile = {dir}/pgbouncer.log
pidfile = {dir}/pgbouncer.pid
auth_type = md5
auth_file = {dir}/userlist.txt
auth_user = postgres
auth_query = SELECT usename, passwd FROM pg_shadow WHERE usename=$1
admin_users = pw_md5
stats_users = pw_clear
pool_mode = session
default_pool_size = 10
min_pool_size = 0
reserve_pool_size = 2
reserve_pool_timeout = 5
max_client_conn = 200
max_db_connections = 50
server_reset_query = DISCARD ALL
server_reset_query_always = 1
server_fast_close = 1
disable_pqexec = 0
application_name_add_host = 0
server_check_query = select 1
server_check_delay = 30
server_lifetime = 3600
server_idle_timeout = 600
server_connect_timeout = 15
server_login_retry = 15
client_login_timeout = 60
query_timeout = 0
query_wait_timeout = 120
client_idle_timeout = 0
idle_transaction_timeout = 0
autodb_idle_timeout = 3600
ignore_startup_parameters = extra_float_digits
log_connections = 1
log_disconnections = 1
log_pooler_errors = 1
stats_period = 60
client_tls_sslmode = disable
server_tls_sslmode = prefer
tcp_keepalive = 1
tcp_keepidle = 45
tcp_keepcnt = 5
tcp_user_timeout = 20000
tcp_defer_accept = 45
pkt_buf = 4096
"""


def userlist(dirpath):
    # md5 and plain secrets; pw_scram is left to auth_query; postgres' empty secret is how
    # PgBouncer deployments give auth_user a trust login.
    (dirpath / "userlist.txt").write_text(
        f'"pw_md5" "{md5_secret("pw_md5", PASSWORDS["pw_md5"])}"\n'
        f'"pw_clear" "{PASSWORDS["pw_clear"]}"\n'
        '"postgres" ""\n')


@pytest.fixture
def workdir_shared():
    d = Path(tempfile.mkdtemp(prefix="tusk-import-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def import_ini(ini, out, users=None):
    cmd = [str(TUSK_BIN), "import-pgbouncer", "-o", str(out), str(ini)] + ([str(users)] if users else [])
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30 * SLOW)


def probe(port, user, dbname):
    """What a client sees: (current_database, current_user) or the error's text."""
    try:
        with psycopg.connect(host="127.0.0.1", port=port, user=user, dbname=dbname, password=PASSWORDS.get(user),
                             connect_timeout=int(10 * SLOW), autocommit=True) as c:
            return tuple(c.execute("select current_database(), current_user").fetchone())
    except psycopg.OperationalError as e:
        return ("refused", "password authentication failed" in str(e) or "SASL" in str(e) or "auth" in str(e))


CASES = [("pw_md5", "appdb"), ("pw_clear", "appdb"), ("pw_scram", "appdb"), ("pw_md5", "reports"),
         ("pw_md5", "bench"), ("pw_clear", TEST_DB), ("pw_scram", "postgres")]


def test_imported_config_starts_and_answers_like_pgbouncer(pg, workdir_shared):
    d = workdir_shared
    pgb_port, tusk_port = free_port(), free_port()
    userlist(d)
    ini = d / "pgbouncer.ini"
    ini.write_text(INI.format(pg=pg.port, db=TEST_DB, bench=BENCH_DB, port=pgb_port, dir=d))

    # From the ini to a serving tusk, timed as a new user would go: import, check, start.
    t0 = time.monotonic()
    out = d / "tusk.yaml"
    r = import_ini(ini, out, d / "userlist.txt")
    assert r.returncode == 0, r.stderr
    yaml = out.read_text().replace(f"port: {pgb_port}", f"port: {tusk_port}")
    yaml = yaml.replace(f"file:{d}/pgbouncer.log", f"file:{d}/tusk.log").replace("pgbouncer.pid", "tusk.pid")
    out.write_text(yaml)
    chk = subprocess.run([str(TUSK_BIN), "--check", "-c", str(out)], capture_output=True, text=True)
    assert chk.returncode == 0, chk.stdout + chk.stderr + yaml
    tusk = subprocess.Popen([str(TUSK_BIN), "-c", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    shutil.chown(d, "postgres")
    for f in d.iterdir():
        shutil.chown(f, "postgres")
    pgb = subprocess.Popen(as_postgres([str(PGBOUNCER), str(ini)]), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: port_open(tusk_port), 15 * SLOW, what="tusk listening")
        elapsed = time.monotonic() - t0
        print(f"ini to serving tusk: {elapsed:.2f}s")
        wait_until(lambda: port_open(pgb_port), 15 * SLOW, what="pgbouncer listening")

        # Every setting not carried is named with its reason.
        for key in ("server_login_retry",):
            assert f"{key}" in r.stderr, (key, r.stderr)
        # reports' connect_query ('' is a quote in PgBouncer's quoting, a backslash itself),
        # timezone and datestyle are carried
        assert "connect_query" not in r.stderr and "timezone" not in r.stderr, r.stderr
        assert '    connect_query: "set tusk_test.cq = \'it\'\'s\\\\\'"\n' in yaml, yaml
        assert '    timezone: "Asia/Tokyo"\n' in yaml and '    datestyle: "SQL, DMY"\n' in yaml, yaml
        # the keepalive keys are carried, PgBouncer's milliseconds of tcp_user_timeout too
        for line in ("tcp_keepalive: true", "tcp_keepidle: 45s", "tcp_keepcnt: 5", "tcp_user_timeout: 20000ms"):
            assert line in yaml, (line, yaml)
        assert "] tcp_keep" not in r.stderr and "] tcp_user_timeout" not in r.stderr, r.stderr
        assert "tcp_defer_accept: 1s " in yaml and "tcp_defer_accept" not in r.stderr, r.stderr
        assert "query_timeout: 0 " in yaml and "client_idle_timeout: 0 " in yaml
        assert ": query_timeout" not in r.stderr and ": client_idle_timeout" not in r.stderr
        assert "not carried" in r.stderr and ": server_lifetime" not in r.stderr
        assert "server_lifetime: 3600s" in yaml and "pool_wait_timeout: 120s" in yaml
        assert "client_auth: md5" in yaml
        assert "server_reset_query_always: true" in yaml and "] server_reset_query_always" not in r.stderr
        assert "server_fast_close: true" in yaml and "] server_fast_close" not in r.stderr
        assert "disable_pqexec: false" in yaml and "] disable_pqexec" not in r.stderr
        assert "application_name_add_host: false" in yaml and "] application_name_add_host" not in r.stderr
        assert "reserve_pool_size: " in yaml and "reserve_pool_timeout: " in yaml
        assert "    reserve_pool_size: 3\n" in yaml, yaml  # appdb's own reserve_pool
        assert "reserve_pool=3" not in r.stderr, r.stderr
        assert 'server_check_query: "select 1"' in yaml and ": server_check_query" not in r.stderr

        # connect_query and the startup settings reach the first server of both alike
        for port in (pgb_port, tusk_port):
            with psycopg.connect(host="127.0.0.1", port=port, user="pw_md5", dbname="reports",
                                 password=PASSWORDS["pw_md5"], autocommit=True) as c:
                got = c.execute("select current_setting('tusk_test.cq'), current_setting('timezone'), "
                                "current_setting('datestyle')").fetchone()
                assert got == ("it's\\", "Asia/Tokyo", "SQL, DMY"), (port, got)
                assert c.info.parameter_status("TimeZone") == "Asia/Tokyo", port
        seen = {}
        for user, db in CASES:
            want = probe(pgb_port, user, db)
            got = probe(tusk_port, user, db)
            assert got == want, (user, db, "pgbouncer:", want, "tusk:", got)
            seen[(user, db)] = got
        # After the reports server's DISCARD ALL (server_reset_query, the probe's logout),
        # tusk ran connect_query again; PgBouncer does not (its client finds '' there).
        with psycopg.connect(host="127.0.0.1", port=tusk_port, user="pw_md5", dbname="reports",
                             password=PASSWORDS["pw_md5"], autocommit=True) as c:
            assert c.execute("select current_setting('tusk_test.cq')").fetchone()[0] == "it's\\"
        # ... and what they agree on is the aliases' targets, not a shared refusal.
        assert seen[("pw_md5", "appdb")] == (TEST_DB, "pw_md5")
        assert seen[("pw_scram", "appdb")] == (TEST_DB, "pw_scram")  # through auth_query
        assert seen[("pw_md5", "bench")] == (BENCH_DB, "tusk_trust")  # user= forces the server login
        assert seen[("pw_scram", "postgres")] == ("postgres", "pw_scram")  # the * entry
        # A wrong password is refused by both.
        for port in (pgb_port, tusk_port):
            p = psql(port, "pw_md5", "wrong", dbname="appdb")
            assert p.returncode != 0
        # admin_users and stats_users reach the console (virtual database pgbouncer) on both.
        for port in (pgb_port, tusk_port):
            p = psql(port, "pw_md5", PASSWORDS["pw_md5"], dbname="pgbouncer", sql="SHOW POOLS")
            assert p.returncode == 0, (port, p.stderr)
            p = psql(port, "pw_clear", PASSWORDS["pw_clear"], dbname="pgbouncer", sql="SHOW STATS")
            assert p.returncode == 0, (port, p.stderr)
            p = psql(port, "pw_clear", PASSWORDS["pw_clear"], dbname="pgbouncer", sql="PAUSE")
            assert p.returncode != 0, (port, "stats user ran PAUSE")
    finally:
        pgb.terminate()
        tusk.terminate()
        pgb.wait(timeout=15)
        assert tusk.wait(timeout=30 * SLOW) == 0, tusk.stderr.read().decode()[-3000:]


def import_text(tmp_path, text):
    """Import an ini of text: -> (the run, the YAML written)."""
    ini, out = tmp_path / "p.ini", tmp_path / "t.yaml"
    ini.write_text(text)
    r = import_ini(ini, out)
    assert r.returncode == 0, r.stderr
    return r, out.read_text()


def assert_loads(yaml_text, tmp_path):
    """tusk --check accepts the imported YAML."""
    out = tmp_path / "checked.yaml"
    out.write_text(yaml_text)
    chk = subprocess.run([str(TUSK_BIN), "--check", "-c", str(out)], capture_output=True, text=True)
    assert chk.returncode == 0, chk.stdout + chk.stderr + yaml_text


def test_import_reports_what_it_cannot_carry(tmp_path):
    r, y = import_text(tmp_path, "[databases]\n* = host=db1,db2 port=5433 client_encoding=UTF8 server_idle_timeout=60\n"
                       "[pgbouncer]\nauth_type = gss\nserver_tls_sslmode = allow\nclient_tls_sslmode = prefer\n"
                       "client_tls_cert_file = /etc/c.crt\nclient_tls_key_file = /etc/c.key\nquery_wait_timeout = 0\n"
                       "server_lifetime = 0.5\nbogus_key = 1\nquery_timeout = 30\nclient_idle_timeout = 600\n[peers]\n1 = host=x\n")
    assert 'hosts: ["db1:5433", "db2:5433"]' in y and "tls: prefer" in y
    assert "tls: allow" in y and 'tls_cert_file: "/etc/c.crt"' in y
    assert "client_auth: reject" in y and "pool_wait_timeout: 1d" in y and "server_lifetime: 500ms" in y
    assert "query_timeout: 30s" in y and "client_idle_timeout: 600s" in y
    assert '    client_encoding: "UTF8"\n' in y and "(client_encoding=UTF8)" not in r.stderr, (y, r.stderr)
    for text in ("auth_type = gss: not carried", "(server_idle_timeout=60) = ", "bogus_key = 1: not carried",
                 "[peers]", "server_tls_sslmode = allow became prefer", "query_wait_timeout = 0 (forever)"):
        assert text in r.stderr, (text, r.stderr)


def test_import_carries_auth_dbname(tmp_path):
    # PgBouncer's auth_dbname, top level and per database, and 1.25's transaction_timeout,
    # scram_iterations, per-database application_name and load_balance_hosts (1.18, the suite's PgBouncer, has
    # none of them: not in the shared ini above)
    r, y = import_text(tmp_path, "[databases]\napp = host=db1,db2 auth_dbname=appauth application_name=appx "
                       "load_balance_hosts=disable auth_query='SELECT u, p FROM lookup($1)'\n"
                       "* = host=db1,db2\n"
                       "[pgbouncer]\nauth_user = pgb\nauth_dbname = authdb\ntransaction_timeout = 90\n"
                       "scram_iterations = 8192\n")
    assert "\nauth_dbname: \"authdb\"" in y and "    auth_dbname: \"appauth\"" in y, y
    assert "auth_dbname" not in r.stderr, r.stderr
    assert "\ntransaction_timeout: 90s " in y and "transaction_timeout" not in r.stderr, (y, r.stderr)
    assert "\nscram_iterations: 8192\n" in y and "scram_iterations" not in r.stderr, (y, r.stderr)
    assert '    application_name: "appx"\n' in y and "application_name" not in r.stderr, (y, r.stderr)
    assert '    auth_query: "SELECT u, p FROM lookup($1)"\n' in y and "auth_query" not in r.stderr, (y, r.stderr)
    # load_balance_hosts=disable: a service of its own for the same hosts, taken in order
    assert y.count("    load_balance_hosts: disable\n") == 1 and y.count('hosts: ["db1:5432", "db2:5432"]') == 2, y
    assert_loads(y, tmp_path)


def test_import_carries_auth_ident_file(tmp_path):
    """PgBouncer 1.25's auth_ident_file is tusk's ident_file, beside auth_hba_file's hba_file;
    the imported configuration loads with the hba file's map=NAME resolved in it."""
    ident = tmp_path / "ident.conf"
    ident.write_text("certs alice app\nlocal /^(.*)$ \\1\n")
    hba = tmp_path / "hba.conf"
    hba.write_text("local all all peer map=local\nhostssl all all 0.0.0.0/0 cert map=certs\n")
    r, y = import_text(tmp_path, "[databases]\n* = host=127.0.0.1 port=5432\n[pgbouncer]\nauth_type = hba\n"
                       f"auth_hba_file = {hba}\nauth_ident_file = {ident}\n")
    assert f'\nhba_file: "{hba}"\n' in y and f'\nident_file: "{ident}"\n' in y, y
    assert "auth_ident_file" not in r.stderr, r.stderr
    assert_loads(y, tmp_path)
    # Without it the hba file's maps are unknown: tusk --check names the line.
    r, y = import_text(tmp_path, "[databases]\n* = host=127.0.0.1 port=5432\n[pgbouncer]\nauth_type = hba\n"
                       f"auth_hba_file = {hba}\n")
    assert "ident_file" not in y, y
    out = tmp_path / "checked.yaml"
    out.write_text(y)
    chk = subprocess.run([str(TUSK_BIN), "--check", "-c", str(out)], capture_output=True, text=True)
    assert chk.returncode != 0 and f'{hba}:1: hba: user name map "local" but no ident_file is set' in chk.stderr, \
        chk.stderr


def test_import_carries_socket_keys(tmp_path):
    """unix_socket_mode as PgBouncer reads it (C's 0 prefix for octal), unix_socket_group by name."""
    r, y = import_text(tmp_path, "[databases]\n* = host=127.0.0.1 port=5432\n[pgbouncer]\nlisten_addr = 127.0.0.1\n"
                       "unix_socket_mode = 0660\nunix_socket_group = postgres\ntcp_defer_accept = 1\n"
                       "tcp_socket_buffer = 65536\nlisten_backlog = 128\nsyslog = 1\nsyslog_ident = pgb\n"
                       "syslog_facility = local3\n")
    for line in ('unix_socket_mode: "0660"', 'unix_socket_group: "postgres"', "tcp_defer_accept: 1s ",
                 "tcp_socket_buffer: 65536\n", "listen_backlog: 128\n",
                 'log:\n  level: info\n  target: syslog\n  syslog_ident: "pgb"\n  syslog_facility: "local3"\n'):
        assert line in y, (line, y)
    assert ": not carried" not in r.stderr, r.stderr
    assert_loads(y, tmp_path)
    # 432 is decimal to PgBouncer: the same 0660
    r, y = import_text(tmp_path, "[databases]\n* = host=127.0.0.1 port=5432\n[pgbouncer]\nunix_socket_mode = 432\n")
    assert 'unix_socket_mode: "0660"' in y, (r.stderr, y)


def test_import_carries_tls_choices(tmp_path):
    """PgBouncer 1.25's TLS versions, ciphers, TLS 1.3 suites and curve land on the listener and
    the services, and tusk --check builds TLS contexts from them; values meaning OpenSSL's
    default are left out, client_tls_dheparams is reported as not needed."""
    certs = Certs(tmp_path / "certs")
    text = f"""[databases]
* = host=127.0.0.1 port=5432
[pgbouncer]
listen_addr = 127.0.0.1
client_tls_sslmode = require
client_tls_cert_file = {certs.server_crt}
client_tls_key_file = {certs.server_key}
client_tls_protocols = tlsv1.2,tlsv1.3
client_tls_ciphers = ECDHE-RSA-AES256-GCM-SHA384
client_tls13_ciphers = TLS_AES_256_GCM_SHA384
client_tls_ecdhcurve = secp384r1
client_tls_dheparams = auto
server_tls_sslmode = require
server_tls_protocols = tlsv1.3
server_tls_ciphers = ECDHE-RSA-AES128-GCM-SHA256
server_tls13_ciphers = TLS_CHACHA20_POLY1305_SHA256
"""
    r, y = import_text(tmp_path, text)
    listener = ('    tls: require\n', '    tls_ciphers: "ECDHE-RSA-AES256-GCM-SHA384"\n',
                '    tls13_ciphers: "TLS_AES_256_GCM_SHA384"\n', '    tls_protocols: "tlsv1.2,tlsv1.3"\n',
                '    tls_ecdhcurve: "secp384r1"\n')
    service = ('    tls_protocols: "tlsv1.3"\n', '    tls_ciphers: "ECDHE-RSA-AES128-GCM-SHA256"\n',
               '    tls13_ciphers: "TLS_CHACHA20_POLY1305_SHA256"\n')
    head, svc = y.split("services:", 1)
    for line in listener:
        assert line in head, (line, y)
    for line in service:
        assert line in svc, (line, y)
    assert "client_tls_dheparams = auto: not carried: no finite-field DHE" in r.stderr, r.stderr
    for key in ("client_tls_protocols", "client_tls13_ciphers", "client_tls_ecdhcurve", "server_tls_protocols",
                "server_tls_ciphers", "server_tls13_ciphers"):
        assert key not in r.stderr, r.stderr
    assert_loads(y, tmp_path)
    # PgBouncer's words for OpenSSL's defaults: nothing written, the curve's none said so.
    r, y = import_text(tmp_path, text.replace("secp384r1", "none").replace("ECDHE-RSA-AES128-GCM-SHA256", "fast")
                       .replace("server_tls13_ciphers = TLS_CHACHA20_POLY1305_SHA256", "server_tls13_ciphers ="))
    assert "tls_ecdhcurve" not in y and "tls13_ciphers" not in y.split("services:", 1)[1], y
    assert "tls_ciphers" not in y.split("services:", 1)[1], y
    assert "client_tls_ecdhcurve = none left out" in r.stderr, r.stderr


def test_import_carries_client_limits_and_query_wait_notify(tmp_path):
    """PgBouncer 1.24's max_db_client_connections / max_user_client_connections, top-level and
    per [databases] / [users] entry (where 0 means the top-level value: not written), and
    1.25's query_wait_notify (seconds); 1.25's cancel_wait_timeout is reported as not needed."""
    r, y = import_text(tmp_path, "[databases]\napp = host=127.0.0.1 port=5432 max_db_client_connections=40\n"
                       "other = host=127.0.0.1 port=5432 max_db_client_connections=0\n"
                       "[users]\nalice = max_user_client_connections=7\n"
                       "[pgbouncer]\nlisten_addr = 127.0.0.1\nmax_db_client_connections = 100\n"
                       "max_user_client_connections = 30\nquery_wait_notify = 3\ncancel_wait_timeout = 10\n")
    for line in ("\nmax_db_client_connections: 100\n", "\nmax_user_client_connections: 30\n", "\nquery_wait_notify: 3s ",
                 '  - database: "app"\n    user: "alice"\n', "    max_user_client_connections: 7\n"):
        assert line in y, (line, y)
    assert y.count("    max_db_client_connections: 40\n") == 2, y  # app's rules: alice's and "*"
    assert y.count("max_user_client_connections: 7") == 2, y  # alice's rules: app's and other's
    assert y.count("max_db_client_connections:") == 3, y  # none for other's 0
    assert "client_connections" not in r.stderr and "query_wait_notify" not in r.stderr, r.stderr
    assert "cancel_wait_timeout = 10: not carried: a CancelRequest never waits" in r.stderr, r.stderr
    assert_loads(y, tmp_path)


def test_import_carries_per_database_server_lifetime_and_per_user_pool_settings(tmp_path):
    """PgBouncer 1.25's [databases] server_lifetime and [users] pool_size, reserve_pool_size,
    query_timeout, idle_transaction_timeout, transaction_timeout and client_idle_timeout land on
    the rules they apply to (a user's over its database's); 0 there means the top-level value
    (not written)."""
    r, y = import_text(tmp_path, "[databases]\napp = host=127.0.0.1 port=5432 server_lifetime=120 pool_size=8 "
                       "reserve_pool=2\nother = host=127.0.0.1 port=5432 server_lifetime=0\n"
                       "[users]\nalice = pool_size=3 reserve_pool_size=1 query_timeout=30 idle_transaction_timeout=20 "
                       "transaction_timeout=60 client_idle_timeout=0\n"
                       "[pgbouncer]\nlisten_addr = 127.0.0.1\nserver_lifetime = 600\n")
    rules = {}
    for block in y.split("\n  - database: ")[1:]:
        head, _, rest = block.partition("\n    user: ")
        user, _, body = rest.partition("\n")
        rules[(head.strip('"'), user.strip('"'))] = body + "\n"
    assert set(rules) == {("app", "alice"), ("app", "*"), ("other", "alice"), ("other", "*")}, y
    assert "server_lifetime: 120s\n" in rules[("app", "alice")] and "server_lifetime: 120s\n" in rules[("app", "*")]
    assert "server_lifetime" not in rules[("other", "*")] + rules[("other", "alice")], y
    for db in ("app", "other"):
        alice = rules[(db, "alice")]
        for line in ("    size: 3\n", "    reserve_pool_size: 1\n", "    query_timeout: 30s\n",
                     "    idle_transaction_timeout: 20s\n", "    transaction_timeout: 60s\n"):
            assert line in alice, (db, line, alice)
        assert "client_idle_timeout" not in alice, alice
    assert "    size: 8\n" in rules[("app", "*")] and "    reserve_pool_size: 2\n" in rules[("app", "*")], y
    assert "timeout" not in rules[("app", "*")], y
    assert "\nserver_lifetime: 600s " in y, y
    assert ": not carried" not in r.stderr, r.stderr
    assert_loads(y, tmp_path)
