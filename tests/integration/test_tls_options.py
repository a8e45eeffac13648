"""PgBouncer's TLS choices in tusk: which TLS versions, TLS 1.2 ciphers, TLS 1.3 suites and ECDH
groups a listener allows (listen[].tls_protocols, tls_ciphers, tls13_ciphers, tls_ecdhcurve), and
which versions and ciphers tusk offers PostgreSQL (services.NAME.tls_protocols, tls_ciphers,
tls13_ciphers). Checked on real handshakes: Python's ssl and openssl s_client towards tusk,
pg_stat_ssl for tusk's own connections to a PostgreSQL with ssl on."""

import ctypes
import socket
import ssl
import subprocess

import psycopg
import psycopg.pq._pq_ctypes as pq_ctypes
import pytest

from conftest import SLOW, TUSK_BIN, to_yaml
from test_tls import listen_tls, tls_conn
from tls_util import Certs, serve_tls_only, starttls

pytestmark = pytest.mark.tusk_only

TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certs(tmp_path_factory.mktemp("certs"))


def ssl_attribute(conn, name):
    """libpq's PQsslAttribute (psycopg 3.1 has no wrapper for it): what libpq negotiated."""
    f = pq_ctypes.pq.PQsslAttribute
    f.argtypes, f.restype = [ctypes.c_void_p, ctypes.c_char_p], ctypes.c_char_p
    v = f(conn.pgconn.pgconn_ptr, name.encode())
    return v.decode() if v is not None else None


def handshake(t, certs, version, ciphers=None):
    """SSLRequest, then a handshake at exactly version: (version, cipher) tusk agreed to, or
    the ssl.SSLError it refused with."""
    ctx = ssl.create_default_context(cafile=certs.ca)
    ctx.minimum_version = ctx.maximum_version = version
    if ciphers:
        ctx.set_ciphers(ciphers)
    with socket.create_connection(("127.0.0.1", t.port), timeout=10 * SLOW) as raw:
        try:
            with starttls(raw, ctx) as s:
                return s.version(), s.cipher()[0]
        except ssl.SSLError as e:
            return e


def s_client(t, *args):
    """openssl s_client's STARTTLS for PostgreSQL towards tusk: (exit status, output)."""
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{t.port}", "-starttls", "postgres",
                        *args], input="", capture_output=True, text=True, timeout=30 * SLOW)
    return r.returncode, r.stdout + r.stderr


def test_listener_tls13_only_refuses_tls12(tusk, certs):
    t = tusk(listen_opts=listen_tls(certs, "require", tls_protocols="tlsv1.3"))
    assert handshake(t, certs, TLS13)[0] == "TLSv1.3"
    assert isinstance(handshake(t, certs, TLS12), ssl.SSLError)
    rc, out = s_client(t, "-tls1_2")
    assert rc != 0 and "Cipher is (NONE)" in out, out
    rc, out = s_client(t, "-tls1_3")
    assert rc == 0 and "TLSv1.3" in out, out
    with tls_conn(t) as c:  # libpq's sslmode=require
        assert ssl_attribute(c, "protocol") == "TLSv1.3"
        assert c.execute("select 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError):
        tls_conn(t, ssl_max_protocol_version="TLSv1.2").close()


def test_listener_tls12_only_and_pgbouncer_lists(tusk, certs):
    """tlsv1.2 alone; "secure" (the default) and "!tlsv1.3" (all but 1.3: 1.2 is what OpenSSL 3
    leaves of it) in PgBouncer's syntax."""
    t = tusk(listen_opts=listen_tls(certs, "require", tls_protocols="tlsv1.2"))
    assert handshake(t, certs, TLS12)[0] == "TLSv1.2"
    assert isinstance(handshake(t, certs, TLS13), ssl.SSLError)
    with tls_conn(t) as c:
        assert ssl_attribute(c, "protocol") == "TLSv1.2"
    t2 = tusk(listen_opts=listen_tls(certs, "require", tls_protocols="!tlsv1.3"))
    assert handshake(t2, certs, TLS12)[0] == "TLSv1.2"
    assert isinstance(handshake(t2, certs, TLS13), ssl.SSLError)
    t3 = tusk(listen_opts=listen_tls(certs, "require", tls_protocols="TLSv1.2:TLSv1.3"))
    assert handshake(t3, certs, TLS12)[0] == "TLSv1.2"
    assert handshake(t3, certs, TLS13)[0] == "TLSv1.3"


def test_listener_ciphers_and_tls13_suites(tusk, certs):
    """tls13_ciphers picks the TLS 1.3 suite, tls_ciphers the TLS 1.2 cipher; a client offering
    none of them is refused."""
    t = tusk(listen_opts=listen_tls(certs, "require", tls_ciphers="ECDHE-RSA-AES128-GCM-SHA256",
                                    tls13_ciphers="TLS_CHACHA20_POLY1305_SHA256"))
    with tls_conn(t) as c:
        assert ssl_attribute(c, "cipher") == "TLS_CHACHA20_POLY1305_SHA256"
    with tls_conn(t, ssl_max_protocol_version="TLSv1.2") as c:
        assert ssl_attribute(c, "cipher") == "ECDHE-RSA-AES128-GCM-SHA256"
    assert handshake(t, certs, TLS12) == ("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256")
    assert isinstance(handshake(t, certs, TLS12, ciphers="ECDHE-RSA-AES256-GCM-SHA384"), ssl.SSLError)
    rc, out = s_client(t, "-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384")
    assert rc != 0, out
    rc, out = s_client(t, "-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256")
    assert rc == 0 and "TLS_CHACHA20_POLY1305_SHA256" in out, out


def test_listener_ecdhcurve(tusk, certs):
    """tls_ecdhcurve: the only group tusk takes for the key exchange; auto is OpenSSL's list.
    Without a group in common TLS 1.3 fails; TLS 1.2 falls back to a cipher without ECDHE
    (RSA key exchange, in OpenSSL's default list), never to a group tusk was told not to use."""
    t = tusk(listen_opts=listen_tls(certs, "require", tls_ecdhcurve="secp384r1"))
    for version in ("-tls1_2", "-tls1_3"):
        rc, out = s_client(t, version, "-groups", "P-384:X25519")
        assert rc == 0 and "Server Temp Key: ECDH, secp384r1" in out, out
    rc, out = s_client(t, "-tls1_3", "-groups", "X25519:P-256")
    assert rc != 0, out
    rc, out = s_client(t, "-tls1_2", "-groups", "X25519:P-256")
    assert "Server Temp Key" not in out, out
    t2 = tusk(listen_opts=listen_tls(certs, "require", tls_ecdhcurve="auto"))
    rc, out = s_client(t2, "-groups", "X25519")
    assert rc == 0 and "Server Temp Key: X25519" in out, out


def test_listener_tls_protocols_reload(tusk, pg, certs):
    """A reload builds the listener's TLS context again: new handshakes follow the new
    tls_protocols, a client already connected stays on its version."""
    from lifecycle_util import reload, rule, write_config
    t = tusk(listen_opts=listen_tls(certs, "require", tls_protocols="tlsv1.2"), pools=[rule()])
    old = tls_conn(t)
    assert ssl_attribute(old, "protocol") == "TLSv1.2"
    write_config(t, pg, [rule()], listen=[{"host": "127.0.0.1", "port": t.port,
                                            **listen_tls(certs, "require", tls_protocols="tlsv1.3")}])
    reload(t)
    assert isinstance(handshake(t, certs, TLS12), ssl.SSLError)
    assert handshake(t, certs, TLS13)[0] == "TLSv1.3"
    assert old.execute("select 2").fetchone() == (2,)
    old.close()


def check(path, cfg):
    """tusk --check of cfg written to path: (exit status, stderr)."""
    path.write_text(to_yaml(cfg) + "\n")
    r = subprocess.run([str(TUSK_BIN), "-c", str(path), "--check"], capture_output=True, text=True, timeout=30)
    return r.returncode, r.stderr


def test_bad_values_fail_check(tmp_path, certs):
    """Each bad value is an error of --check (and so of a start or a reload), named. The
    versions are the file's to judge; OpenSSL's names are judged when the contexts are built,
    which --check does once the file itself is clean."""
    svc = {"hosts": ["127.0.0.1:5432"]}
    bad_file = {
        "listen": [{"host": "127.0.0.1", "port": 7001, "tls_protocols": "tlsv1.2,sslv3"}],
        "services": {"main": {**svc, "tls_protocols": "!all"}},
        "pools": [{"database": "*", "user": "*"}],
    }
    rc, err = check(tmp_path / "a.yaml", bad_file)
    assert rc == 1, err
    assert 'listen[0].tls_protocols: expected TLS versions' in err and '"tlsv1.2,sslv3"' in err, err
    assert 'services.main.tls_protocols: expected TLS versions' in err, err
    bad_names = {
        "listen": [listen_tls(certs, "require", host="127.0.0.1", port=6999,
                              tls13_ciphers="TLS_AES_128_GCM_SHA256:TLS_NO_SUCH_SUITE"),
                   listen_tls(certs, "require", host="127.0.0.1", port=7000,
                              tls_ecdhcurve="prime256v1:no-such-curve")],
        "services": {"main": {**svc, "tls": "require", "tls_ciphers": "NO-SUCH-CIPHER"}},
        "pools": [{"database": "*", "user": "*"}],
    }
    rc, err = check(tmp_path / "b.yaml", bad_names)
    assert rc == 1, err
    assert 'listen[0]: TLS 1.3 cipher suites "TLS_AES_128_GCM_SHA256:TLS_NO_SUCH_SUITE": no such suite ' \
           'TLS_NO_SUCH_SUITE' in err, err
    assert 'listen[1]: ECDH groups "prime256v1:no-such-curve"' in err, err
    assert 'services.main: ciphers "NO-SUCH-CIPHER"' in err, err


# ---- towards the servers ----

@pytest.fixture
def ssl_pg(private_pg, certs):
    return serve_tls_only(private_pg, certs)


def server_ssl(t):
    """pg_stat_ssl's version and cipher of the server connection tusk serves this client with."""
    with t.connect() as c:
        return c.execute("select version, cipher from pg_stat_ssl where pid = pg_backend_pid()").fetchone()


@pytest.mark.parametrize("protocols, version", [("tlsv1.2", "TLSv1.2"), ("tlsv1.3", "TLSv1.3"),
                                                ("secure", "TLSv1.3")])
def test_service_tls_protocols(tusk, ssl_pg, protocols, version):
    t = tusk(pg_server=ssl_pg, services={"main": {"hosts": [f"127.0.0.1:{ssl_pg.port}"], "tls": "require",
                                                  "tls_protocols": protocols}})
    assert server_ssl(t)[0] == version


def test_service_ciphers_and_tls13_suites(tusk, ssl_pg):
    """PostgreSQL prefers its own cipher order (ssl_prefer_server_ciphers): tusk offering one
    cipher, and one suite, is what decides."""
    svc = {"hosts": [f"127.0.0.1:{ssl_pg.port}"], "tls": "require", "tls13_ciphers": "TLS_AES_128_GCM_SHA256",
           "tls_ciphers": "ECDHE-RSA-CHACHA20-POLY1305"}
    t = tusk(pg_server=ssl_pg, services={"main": svc})
    assert server_ssl(t) == ("TLSv1.3", "TLS_AES_128_GCM_SHA256")
    t2 = tusk(pg_server=ssl_pg, services={"main": {**svc, "tls_protocols": "tlsv1.2"}})
    assert server_ssl(t2) == ("TLSv1.2", "ECDHE-RSA-CHACHA20-POLY1305")


def test_service_tls_protocols_reload_retires_servers(tusk, ssl_pg):
    """A reload that changes a service's tls_protocols retires its pools, as one that changes
    tls does: new server connections speak the new version."""
    from lifecycle_util import reload, rule, write_config
    svc = {"hosts": [f"127.0.0.1:{ssl_pg.port}"], "tls": "require", "tls_protocols": "tlsv1.2"}
    t = tusk(pg_server=ssl_pg, services={"main": svc}, pools=[rule()])
    assert server_ssl(t)[0] == "TLSv1.2"
    write_config(t, ssl_pg, [rule()], services={"main": {**svc, "tls_protocols": "tlsv1.3"}})
    reload(t)
    assert server_ssl(t)[0] == "TLSv1.3"
