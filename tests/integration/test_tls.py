"""TLS in tusk: per-listener TLS towards clients (allow, require, verify-ca, verify-full, direct
TLS), cert authentication, SCRAM-SHA-256-PLUS channel binding, hostssl/hostnossl in hba_file,
per-service TLS towards PostgreSQL (prefer, require, verify-ca, verify-full), and large results
over both encrypted legs."""

import contextlib
import hashlib
import socket
import ssl
import struct
import subprocess
import time

import psycopg
import pytest

from conftest import PG_BIN, SLOW, TEST_DB, TUSK_BIN, assert_tusk_error, free_port, wait_until
from auth_util import scram_verifier, write_auth_file, write_hba
from test_metrics import scrape, value
from tls_util import Certs, serve_tls_only, starttls

pytestmark = pytest.mark.tusk_only

USER = "tusk_trust"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certs(tmp_path_factory.mktemp("certs"))


def listen_tls(certs, mode, ca=False, **extra):
    o = {"tls": mode, "tls_cert_file": certs.server_crt, "tls_key_file": certs.server_key}
    if ca:
        o["tls_ca_file"] = certs.ca
    o.update(extra)
    return o


def tls_conn(t, user=USER, **kw):
    kw.setdefault("sslmode", "require")
    return psycopg.connect(host="127.0.0.1", port=t.port, user=user, dbname=TEST_DB,
                           connect_timeout=int(15 * SLOW), autocommit=True, **kw)


def login_error(t, **kw):
    with pytest.raises(psycopg.OperationalError) as ei:
        tls_conn(t, **kw).close()
    return str(ei.value)


def test_tls_require_serves_encrypted_clients_and_refuses_plaintext(tusk, certs):
    t = tusk(listen_opts=listen_tls(certs, "require"))
    with tls_conn(t) as c:
        assert c.pgconn.ssl_in_use
        assert c.execute("select 1").fetchone() == (1,)
    msg = login_error(t, sslmode="disable")
    assert "TLS is required" in msg
    assert_tusk_error(msg)


def test_tls_allow_takes_both(tusk, certs):
    t = tusk(listen_opts=listen_tls(certs, "allow"))
    with tls_conn(t, sslmode="require") as c:
        assert c.pgconn.ssl_in_use
    with tls_conn(t, sslmode="disable") as c:
        assert not c.pgconn.ssl_in_use
        assert c.execute("select 2").fetchone() == (2,)


def test_tls_disable_answers_n(tusk, certs):
    t = tusk()
    with tls_conn(t, sslmode="prefer") as c:
        assert not c.pgconn.ssl_in_use
    assert "does not support SSL" in login_error(t, sslmode="require")


def test_client_verifies_tusk_certificate(tusk, certs):
    t = tusk(listen_opts=listen_tls(certs, "require"))
    for host in ("localhost", "127.0.0.1"):
        with psycopg.connect(host=host, port=t.port, user=USER, dbname=TEST_DB, sslmode="verify-full",
                             sslrootcert=certs.ca) as c:
            assert c.pgconn.ssl_in_use
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(host="localhost", port=t.port, user=USER, dbname=TEST_DB, sslmode="verify-ca",
                        sslrootcert=certs.rogue_ca).close()


def test_psql_over_tls(tusk, certs):
    t = tusk(listen_opts=listen_tls(certs, "require"))
    env_sql = "select current_user"
    r = subprocess.run([str(PG_BIN / "psql"), "-X", "-At", "-c", env_sql,
                        f"host=127.0.0.1 port={t.port} user={USER} dbname={TEST_DB} sslmode=require"],
                       capture_output=True, text=True, timeout=30 * SLOW)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == USER


def test_scram_channel_binding(tusk, certs, tmp_path):
    secret = "cb-secret"
    auth = write_auth_file(tmp_path / "users.txt", {USER: scram_verifier(secret)})
    t = tusk(listen_opts=listen_tls(certs, "allow"), auth_file=auth,
             pools=[{"database": "*", "user": "*", "service": "main", "client_auth": "scram-sha-256"}])
    # channel_binding=require makes libpq insist on SCRAM-SHA-256-PLUS with tls-server-end-point.
    with tls_conn(t, password=secret, channel_binding="require") as c:
        assert c.execute("select 1").fetchone() == (1,)
    r = subprocess.run([str(PG_BIN / "psql"), "-X", "-At", "-w", "-c", "select 7",
                        f"host=127.0.0.1 port={t.port} user={USER} dbname={TEST_DB} sslmode=require "
                        f"channel_binding=require password={secret}"],
                       capture_output=True, text=True, timeout=30 * SLOW)
    assert r.returncode == 0 and r.stdout.strip() == "7", r.stderr
    # A wrong password over -PLUS is still 28P01.
    msg = login_error(t, password="wrong", channel_binding="require")
    assert "password authentication failed" in msg
    # Without TLS there is nothing to bind to: libpq refuses, and plain SCRAM still works.
    with pytest.raises(psycopg.OperationalError, match="channel binding"):
        tls_conn(t, sslmode="disable", password=secret, channel_binding="require").close()
    with tls_conn(t, sslmode="disable", password=secret) as c:
        assert c.execute("select 1").fetchone() == (1,)


def test_cert_auth(tusk, certs):
    t = tusk(listen_opts=listen_tls(certs, "require", ca=True),
             pools=[{"database": "*", "user": "*", "service": "main", "client_auth": "cert"}])
    crt, key = certs.client(USER)
    with tls_conn(t, sslcert=crt, sslkey=key) as c:
        assert c.execute("select current_user").fetchone() == (USER,)
    # A valid certificate for someone else, none at all, or one from an untrusted CA: refused.
    crt2, key2 = certs.client("somebody_else")
    msg = login_error(t, sslcert=crt2, sslkey=key2)
    assert "certificate authentication failed" in msg
    assert_tusk_error(msg)
    msg = login_error(t, sslcert="/nonexistent", sslkey="/nonexistent")
    assert "certificate authentication failed" in msg
    rcrt, rkey = certs.client(USER, ca="rogue")
    # tusk asks for certificates of its CA: a foreign one fails the handshake itself.
    msg = login_error(t, sslcert=rcrt, sslkey=rkey)
    assert "unknown ca" in msg or "certificate" in msg, msg


def test_cert_auth_with_a_user_name_map(tusk, certs, tmp_path):
    """hba_file's map=NAME on a cert line: the certificate's CN goes through ident_file's map
    (PostgreSQL's pg_ident.conf, PgBouncer's auth_ident_file). CN alice mapped to tusk_trust is
    admitted; an unmapped CN, or a CN equal to the user name but absent from the map, is refused;
    a regular expression's \\1 carries part of the CN."""
    ident = tmp_path / "ident.conf"
    ident.write_text("certs alice tusk_trust\ncerts /^svc-(.*)$ \\1\n")
    hba = write_hba(tmp_path / "hba.conf", ["hostssl all all 127.0.0.1/32 cert map=certs"])
    t = tusk(listen_opts=listen_tls(certs, "require", ca=True), hba_file=hba, ident_file=str(ident))
    crt, key = certs.client("alice")
    with tls_conn(t, sslcert=crt, sslkey=key) as c:
        assert c.execute("select current_user").fetchone() == (USER,)
    msg = login_error(t, user="tusk_solo", sslcert=crt, sslkey=key)
    assert 'certificate authentication failed for user "tusk_solo"' in msg, msg
    assert_tusk_error(msg)
    t.wait_log('no match in usermap "certs" for user "tusk_solo" authenticated as "alice"')
    for cn in ("bob", USER):
        crt2, key2 = certs.client(cn)
        msg = login_error(t, sslcert=crt2, sslkey=key2)
        assert f'certificate authentication failed for user "{USER}"' in msg, msg
        t.wait_log(f'no match in usermap "certs" for user "{USER}" authenticated as "{cn}"')
    crt3, key3 = certs.client(f"svc-{USER}")
    with tls_conn(t, sslcert=crt3, sslkey=key3) as c:
        assert c.execute("select current_user").fetchone() == (USER,)


def test_verify_ca_and_verify_full_listeners(tusk, certs):
    t = tusk(listen_opts=listen_tls(certs, "verify-ca", ca=True))
    crt, key = certs.client("any_name")
    with tls_conn(t, sslcert=crt, sslkey=key) as c:  # verify-ca: any CN the CA signed
        assert c.execute("select 1").fetchone() == (1,)
    login_error(t)  # no certificate: the handshake fails
    t2 = tusk(listen_opts=listen_tls(certs, "verify-full", ca=True))
    crt, key = certs.client(USER)
    with tls_conn(t2, sslcert=crt, sslkey=key) as c:
        assert c.execute("select 1").fetchone() == (1,)
    crt, key = certs.client("any_name")
    assert "CN does not match" in login_error(t2, sslcert=crt, sslkey=key)


def test_hostssl_and_hostnossl(tusk, certs, tmp_path):
    hba = write_hba(tmp_path / "hba.conf", [
        "hostnossl all all 127.0.0.1/32 reject",
        "hostssl all all 127.0.0.1/32 trust",
    ])
    t = tusk(listen_opts=listen_tls(certs, "allow"), hba_file=hba)
    with tls_conn(t) as c:
        assert c.execute("select 1").fetchone() == (1,)
    msg = login_error(t, sslmode="disable")
    assert "rejected" in msg


def _startup(user, db):
    body = struct.pack("!I", 196608)
    for k, v in (("user", user), ("database", db)):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def _read_until_ready(sock, stop=(b"Z", b"E")):
    buf = b""
    msgs = []
    while True:
        while len(buf) < 5 or len(buf) < 1 + struct.unpack("!I", buf[1:5])[0]:
            chunk = sock.recv(65536)
            if not chunk:
                return msgs
            buf += chunk
        n = 1 + struct.unpack("!I", buf[1:5])[0]
        msgs.append((buf[:1], buf[5:n]))
        buf = buf[n:]
        if msgs[-1][0] in stop:
            return msgs


def test_direct_tls(tusk, certs):
    """PostgreSQL 17's sslnegotiation=direct: the handshake comes first, ALPN "postgresql"."""
    t = tusk(listen_opts=listen_tls(certs, "require"))
    ctx = ssl.create_default_context(cafile=certs.ca)
    ctx.set_alpn_protocols(["postgresql"])
    with socket.create_connection(("127.0.0.1", t.port), timeout=10 * SLOW) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.selected_alpn_protocol() == "postgresql"
            s.sendall(_startup(USER, TEST_DB))
            msgs = _read_until_ready(s)
            assert msgs[-1][0] == b"Z", msgs
            q = b"select 42\0"
            s.sendall(b"Q" + struct.pack("!I", len(q) + 4) + q)
            msgs = _read_until_ready(s)
            rows = [m for m in msgs if m[0] == b"D"]
            assert rows and rows[0][1].endswith(b"42"), msgs


def test_plaintext_after_sslrequest_is_refused(tusk, certs):
    """Bytes pipelined after an SSLRequest would be unencrypted and injectable (CVE-2021-23214)."""
    t = tusk(listen_opts=listen_tls(certs, "allow"))
    with socket.create_connection(("127.0.0.1", t.port), timeout=10 * SLOW) as s:
        s.sendall(struct.pack("!II", 8, 80877103) + _startup(USER, TEST_DB))
        data = s.recv(4096)
        assert data[:1] == b"E", data
        assert b"unencrypted data after SSL request" in data


def test_bad_tls_files_fail_check(tmp_path, certs):
    cfg = tmp_path / "tusk.yaml"
    cfg.write_text(f"""listen:
  - host: 127.0.0.1
    port: 6999
    tls: require
    tls_cert_file: {tmp_path}/missing.crt
    tls_key_file: {certs.server_key}
  - host: 127.0.0.1
    port: 7000
    tls: verify-ca
    tls_cert_file: {certs.server_crt}
    tls_key_file: {certs.server_key}
services:
  main:
    hosts: ["127.0.0.1:5432"]
    tls: verify-full
    tls_cert_file: {certs.server_crt}
pools:
  - database: "*"
    user: "*"
""")
    r = subprocess.run([str(TUSK_BIN), "-c", str(cfg), "--check"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "tls verify-ca needs tls_ca_file" in r.stderr
    assert "tls_cert_file and tls_key_file go together" in r.stderr


# ---- towards the servers ----

@pytest.fixture
def ssl_pg(private_pg, certs):
    """A PostgreSQL that takes only TLS connections over TCP."""
    return serve_tls_only(private_pg, certs)


def test_server_tls_require(tusk, ssl_pg):
    """Each server connection on TLS, its handshake run by a handshake thread (the clients'
    are plaintext here, so every handshake counted is one of tusk's own)."""
    http = free_port()
    t = tusk(pg_server=ssl_pg, admin={"http": f"127.0.0.1:{http}"}, tls_handshake_threads=1,
             services={"main": {"hosts": [f"127.0.0.1:{ssl_pg.port}"], "tls": "require"}})
    conns = [t.connect() for _ in range(3)]  # each in its transaction: three servers
    for c in conns:
        assert c.execute("select ssl from pg_stat_ssl where pid = pg_backend_pid()").fetchone() == (True,)
    pids = {c.execute("select pg_backend_pid()").fetchone()[0] for c in conns}
    assert len(pids) == 3
    for c in conns:
        c.close()
    m = scrape(http)
    assert value(m, "tusk_tls_offloaded_handshakes_total") >= 3
    assert value(m, "tusk_tls_offloaded_handshakes_running") == 0


def test_server_tls_verify_full(tusk, ssl_pg, certs):
    t = tusk(pg_server=ssl_pg, services={"main": {"hosts": [f"localhost:{ssl_pg.port}"], "tls": "verify-full",
                                                  "tls_ca_file": certs.ca}})
    with t.connect() as c:
        assert c.execute("select ssl from pg_stat_ssl where pid = pg_backend_pid()").fetchone() == (True,)
    bad = tusk(pg_server=ssl_pg, pool_wait_timeout="3s",
               services={"main": {"hosts": [f"localhost:{ssl_pg.port}"], "tls": "verify-ca",
                                  "tls_ca_file": certs.rogue_ca}})
    with pytest.raises(psycopg.OperationalError) as ei:
        bad.connect().close()
    msg = str(ei.value)
    # The client hears of the failed handshake, or (when the pool has backed off meanwhile) of
    # the backend being unreachable; the log names the cause either way.
    assert any(w in msg for w in ("certificate verify failed", "TLS handshake", "timed out", "refus")), msg
    # The logger thread writes asynchronously: the client may hear first.
    wait_until(lambda: "certificate verify failed" in bad.log_text(), 10 * SLOW, what="the cause in tusk's log")


def test_server_tls_verify_full_per_host_name(tusk, ssl_pg, certs):
    """Several hosts, as libpq does: a server is verified against the name of the host its
    address came from. The first host, 127.0.0.2, is not in the certificate (and nothing
    listens there); the server reached through localhost is verified as localhost, not as
    127.0.0.2 (which failed every connect before)."""
    t = tusk(pg_server=ssl_pg, pool_wait_timeout="5s",
             services={"main": {"hosts": [f"127.0.0.2:{ssl_pg.port}", f"localhost:{ssl_pg.port}"],
                                "tls": "verify-full", "tls_ca_file": certs.ca}})
    for _ in range(3):
        with t.connect() as c:
            assert c.execute("select ssl from pg_stat_ssl where pid = pg_backend_pid()").fetchone() == (True,)
    assert "certificate verify failed" not in t.log_text()


def test_server_tls_prefer_and_require_against_plain_server(tusk, pg):
    t = tusk(services={"main": {"hosts": [f"127.0.0.1:{pg.port}"], "tls": "prefer"}})
    with t.connect() as c:
        assert c.execute("select 1").fetchone() == (1,)
    t2 = tusk(pool_wait_timeout="3s", services={"main": {"hosts": [f"127.0.0.1:{pg.port}"], "tls": "require"}})
    with pytest.raises(psycopg.OperationalError) as ei:
        t2.connect().close()
    assert "does not support TLS" in str(ei.value)


def test_large_result_over_tls_both_legs(tusk, ssl_pg, certs):
    """20 MB through two TLS legs, byte for byte, in transaction mode."""
    t = tusk(pg_server=ssl_pg, listen_opts=listen_tls(certs, "require"),
             services={"main": {"hosts": [f"127.0.0.1:{ssl_pg.port}"], "tls": "require"}},
             pools=[{"database": "*", "user": "*", "service": "main", "mode": "transaction", "size": 4}])
    sql = "select string_agg(md5(i::text), '') from generate_series(1, 655360) i"
    with tls_conn(t) as c:
        got = c.execute(sql).fetchone()[0]
        assert len(got) == 32 * 655360
        with ssl_pg.admin() as d:
            want = d.execute(sql).fetchone()[0]
        assert hashlib.sha256(got.encode()).digest() == hashlib.sha256(want.encode()).digest()
        # and COPY out, streamed
        n = 0
        with c.cursor().copy("copy (select i, md5(i::text) from generate_series(1, 200000) i) to stdout") as cp:
            for chunk in cp:
                n += len(chunk)
        assert n > 200000 * 34


def test_copy_in_over_tls(tusk, certs, pg):
    """10 MB from a TLS client: full read buffers with records left inside OpenSSL must still
    be read (no poll reports them)."""
    t = tusk(listen_opts=listen_tls(certs, "require"), buffer_size="16kB")
    rows = [f"{i}\t{'y' * 200}\n" for i in range(50000)]
    data = "".join(rows).encode()
    with tls_conn(t) as c:
        c.execute("create temp table tls_in (i int, s text)")
        with c.cursor().copy("copy tls_in from stdin") as cp:
            for off in range(0, len(data), 1 << 20):
                cp.write(data[off:off + (1 << 20)])
        assert c.execute("select count(*), sum(length(s)) from tls_in").fetchone() == (50000, 50000 * 200)


@contextlib.contextmanager
def raw_tls_socket(t, certs, timeout):
    """A raw TLS socket past SSLRequest and handshake."""
    ctx = ssl.create_default_context(cafile=certs.ca)
    with socket.create_connection(("127.0.0.1", t.port), timeout=timeout) as raw:
        with starttls(raw, ctx) as s:
            yield s


@contextlib.contextmanager
def raw_tls_session(t, certs, timeout, login=None):
    """A raw TLS socket past SSLRequest, handshake and login (ReadyForQuery read); the login's
    messages are appended to the list login when given."""
    with raw_tls_socket(t, certs, timeout) as s:
        s.sendall(_startup(USER, TEST_DB))
        msgs = _read_until_ready(s)
        assert msgs[-1][0] == b"Z"
        if login is not None:
            login.extend(msgs)
        yield s


def test_copy_tail_held_by_openssl_is_read(tusk, certs):
    """A COPY sent whole into a slow server: tusk's 16 kB read buffer stays full while the server
    is behind, and at the end OpenSSL's read-ahead has taken the socket empty, so the last
    records (the CopyDone) sit inside OpenSSL where no poll reports them. When the server takes
    bytes and the buffer has room, re-arming the client's watcher must not drop the read event
    fed for those records (libev's ev_io_stop clears a pending event): the reply comes."""
    t = tusk(listen_opts=listen_tls(certs, "require"), buffer_size="16kB")
    with raw_tls_session(t, certs, 30 * SLOW) as s:
        q = (b"create temp table tail_in (s text);"
             b"create function pg_temp.slow() returns trigger language plpgsql as"
             b" $$begin perform pg_sleep(0.002); return new; end$$;"
             b"create trigger slow before insert on tail_in for each row execute function pg_temp.slow();"
             b"copy tail_in from stdin\0")
        s.sendall(b"Q" + struct.pack("!I", len(q) + 4) + q)
        msgs = _read_until_ready(s, stop=(b"Z", b"E", b"G"))
        assert msgs[-1][0] == b"G", msgs
        row = b"x" * 16383 + b"\n"
        nrows = 600  # ~10 MB: more than the kernel's buffers between tusk and the server
        # Every CopyData and the CopyDone in one write: nothing more reaches the socket.
        s.sendall(b"".join(b"d" + struct.pack("!I", len(row) + 4) + row for _ in range(nrows)) + b"c\0\0\0\4")
        msgs = _read_until_ready(s)
        assert msgs[-1][0] == b"Z", msgs
        assert (b"C", b"COPY %d\0" % nrows) in msgs, msgs


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_pipelined_queries_held_by_openssl_are_read(tusk, certs, pg, mode):
    """Thousands of Query messages in one TLS write: OpenSSL takes them off the socket at once,
    tusk's 16 kB buffer takes part, and the replies make the client's watcher add and drop
    EV_WRITE. Each re-arm must keep the read event fed for the records OpenSSL still holds."""
    from lifecycle_util import rule
    t = tusk(listen_opts=listen_tls(certs, "require"), buffer_size="16kB", pools=[rule(mode=mode)])
    q = b"select 1\0"
    one = b"Q" + struct.pack("!I", len(q) + 4) + q
    with raw_tls_session(t, certs, 15 * SLOW) as s:
        for n in (100, 1000, 4000):
            s.sendall(one * n)
            got = 0
            buf = b""
            while got < n:
                while len(buf) < 5 or len(buf) < 1 + struct.unpack("!I", buf[1:5])[0]:
                    chunk = s.recv(65536)
                    assert chunk, f"tusk closed after {got} of {n} replies"
                    buf += chunk
                k = 1 + struct.unpack("!I", buf[1:5])[0]
                assert buf[:1] != b"E", buf[:k]
                got += buf[:1] == b"Z"
                buf = buf[k:]


def _tls_query(s, sql):
    q = sql.encode() + b"\0"
    s.sendall(b"Q" + struct.pack("!I", len(q) + 4) + q)
    msgs = _read_until_ready(s, stop=(b"Z",))
    assert msgs and msgs[-1][0] == b"Z", msgs
    return [body for kind, body in msgs if kind == b"E"]


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_tls_cancel_request_ends_once_the_cancel_is_decided(tusk, certs, mode):
    """libpq 17's PQcancelBlocking and PQcancelStart (psycopg 3.2's cancel) send the
    CancelRequest over TLS when the connection used TLS, and take TLS's close_notify as the
    cancel handled; the client then sends its next query. tusk sent the close_notify as soon as
    it had read the request and only then decided, on the client's worker, what the cancel
    was for: a next query that had arrived by then was taken for one sent before the cancel,
    and cancelled (the plaintext CancelRequest had the same defect: test_txn_faults.py). A TLS
    cancel must stop a running query, and 200 sent while nothing runs must cancel nothing;
    the request's connection ends with a close_notify (Python's ssl raises on a bare close)."""
    from lifecycle_util import rule
    t = tusk(listen_opts=listen_tls(certs, "require"), pools=[rule(mode=mode, size=2)])
    login = []

    def cancel(key):
        with raw_tls_socket(t, certs, 10 * SLOW) as c:
            c.sendall(struct.pack("!IIII", 16, 80877102, *key))
            assert c.recv(1) == b""  # close_notify: the cancel is handled

    with raw_tls_session(t, certs, 30 * SLOW, login=login) as s:
        key = next(struct.unpack("!II", body[:8]) for kind, body in login if kind == b"K")
        q = b"select pg_sleep(30)\0"
        s.sendall(b"Q" + struct.pack("!I", len(q) + 4) + q)
        time.sleep(0.3)
        cancel(key)
        msgs = _read_until_ready(s, stop=(b"Z",))
        errors = [body for kind, body in msgs if kind == b"E"]
        assert errors and b"C57014\0" in errors[0], msgs
        hit = []
        for i in range(200):
            assert not _tls_query(s, "select 1")
            cancel(key)
            errors = _tls_query(s, "select pg_sleep(0.002)")
            if errors:
                hit.append(f"round {i}: {errors[0]!r}")
        assert not hit, f"{len(hit)} of 200 queries after a TLS cancel sent while idle were cancelled: {hit[:3]}"


def test_reload_turns_tls_on_and_keeps_running_on_a_bad_certificate(tusk, pg, certs, tmp_path):
    from lifecycle_util import reload, rule, write_config
    t = tusk(pools=[rule()])
    with tls_conn(t, sslmode="disable") as c:
        assert c.execute("select 1").fetchone() == (1,)
    # A certificate file that does not exist: the reload is refused, plaintext goes on.
    write_config(t, pg, [rule()], listen=[{"host": "127.0.0.1", "port": t.port,
                                            **listen_tls(certs, "require", tls_cert_file=str(tmp_path / "nope.crt"))}])
    reload(t, expect_ok=False)
    t.wait_log("nope.crt")
    with tls_conn(t, sslmode="disable") as c:
        assert c.execute("select 1").fetchone() == (1,)
    # A good one: new clients must use TLS now, a client already connected stays.
    old = tls_conn(t, sslmode="disable")
    write_config(t, pg, [rule()], listen=[{"host": "127.0.0.1", "port": t.port, **listen_tls(certs, "require")}])
    reload(t)
    with tls_conn(t) as c:
        assert c.pgconn.ssl_in_use
    assert "TLS is required" in login_error(t, sslmode="disable")
    assert old.execute("select 3").fetchone() == (3,)
    old.close()


def _tls_login(t, certs, ctx, session=None):
    """SSLRequest, a handshake offering session, login, Terminate. (reused, the new session)."""
    with socket.create_connection(("127.0.0.1", t.port), timeout=10 * SLOW) as raw:
        with starttls(raw, ctx, session) as s:
            s.sendall(_startup(USER, TEST_DB))
            # ReadyForQuery comes after the ticket (TLS 1.3 sends it after the handshake).
            assert _read_until_ready(s)[-1][0] == b"Z"
            reused, sess = s.session_reused, s.session
            s.sendall(b"X\0\0\0\4")
            s.unwrap()
    return reused, sess


@pytest.mark.parametrize("version", ["1.3", "1.2"])
def test_session_tickets_resume_returning_clients(tusk, pg, certs, version):
    """A client that comes back with its saved session resumes it (a stateless ticket), also
    after a reload; with tls_session_tickets: false it does not."""
    from lifecycle_util import reload, rule, write_config
    ctx = ssl.create_default_context(cafile=certs.ca)
    v = ssl.TLSVersion.TLSv1_3 if version == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx.minimum_version = ctx.maximum_version = v
    t = tusk(listen_opts=listen_tls(certs, "require"), pools=[rule()])
    reused, sess = _tls_login(t, certs, ctx)
    assert not reused and sess is not None and sess.has_ticket
    reused, sess = _tls_login(t, certs, ctx, sess)
    assert reused
    # A reload rebuilds the TLS contexts; the ticket keys are the process's and stay.
    write_config(t, pg, [rule()], listen=[{"host": "127.0.0.1", "port": t.port, **listen_tls(certs, "require")}])
    reload(t)
    reused, sess = _tls_login(t, certs, ctx, sess)
    assert reused
    # Turned off (at a reload): full handshakes, no ticket.
    write_config(t, pg, [rule()], listen=[{"host": "127.0.0.1", "port": t.port,
                                            **listen_tls(certs, "require", tls_session_tickets=False)}])
    reload(t)
    reused, sess2 = _tls_login(t, certs, ctx, sess)
    assert not reused
    assert not sess2.has_ticket
    # A client of psycopg (libpq) still logs in.
    with tls_conn(t) as c:
        assert c.execute("select 1").fetchone() == (1,)


def test_login_storm_with_relayed_client(tusk, pg, certs):
    """Many TLS handshakes at once (they queue per worker, one step per loop iteration) while
    a logged-in client keeps querying: every login completes, the relayed client is served."""
    import threading
    from lifecycle_util import rule
    t = tusk(listen_opts=listen_tls(certs, "require"), pools=[rule()])
    errors = []

    def login():
        try:
            with tls_conn(t) as c:
                assert c.execute("select 1").fetchone() == (1,)
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    with tls_conn(t) as busy:
        threads = [threading.Thread(target=login) for _ in range(40)]
        for th in threads:
            th.start()
        n = 0
        while any(th.is_alive() for th in threads):
            assert busy.execute("select %s::int", (n,)).fetchone() == (n,)
            n += 1
        for th in threads:
            th.join()
    assert not errors, errors[:3]
    # Half-open handshakes: a ClientHello's worth of connections that vanish mid-handshake.
    for _ in range(10):
        with socket.create_connection(("127.0.0.1", t.port), timeout=10 * SLOW) as raw:
            raw.sendall(struct.pack("!II", 8, 80877103))
            assert raw.recv(1) == b"S"
            raw.sendall(b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00")  # a truncated ClientHello
    with tls_conn(t) as c:
        assert c.execute("select 2").fetchone() == (2,)
