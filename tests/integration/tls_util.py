"""Certificates for the TLS tests, made with the openssl command line: a CA, a server certificate
for localhost/127.0.0.1, client certificates by CN, and a second CA nobody trusts."""

import shutil
import struct
import subprocess
from pathlib import Path

from conftest import IS_ROOT


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


class Certs:
    def __init__(self, d):
        self.dir = Path(d)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = self._ca("ca", "tusk test CA")
        self.rogue_ca = self._ca("rogue", "rogue CA")
        self.server_crt, self.server_key = self._leaf("server", "localhost", "ca",
                                                      san="DNS:localhost,IP:127.0.0.1")
        self.clients = {}

    def _ca(self, name, cn):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={cn}",
                 "-keyout", f"{name}.key", "-out", f"{name}.crt",
                 "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                 cwd=self.dir)
        return str(self.dir / f"{name}.crt")

    def _leaf(self, name, cn, ca, san=None):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=self.dir)
        ext = self.dir / f"{name}.ext"
        ext.write_text("basicConstraints=CA:FALSE\n" + (f"subjectAltName={san}\n" if san else ""))
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
                 "-CAcreateserial", "-days", "2", "-sha256", "-extfile", ext.name, "-out", f"{name}.crt",
                 cwd=self.dir)
        key = self.dir / f"{name}.key"
        key.chmod(0o600)
        return str(self.dir / f"{name}.crt"), str(key)

    def client(self, cn, ca="ca"):
        """(cert, key) for CN=cn signed by ca ('ca' or 'rogue')."""
        k = (cn, ca)
        if k not in self.clients:
            self.clients[k] = self._leaf(f"client-{cn}-{ca}", cn, ca)
        return self.clients[k]


def ssl_on(pg, certs, ca=False):
    """pg's configuration with ssl on (certs' server certificate) and, with ca, certs' CA as
    its ssl_ca_file (client certificates); a restart takes it."""
    files = [(certs.server_crt, "server.crt"), (certs.server_key, "server.key")] + ([(certs.ca, "ca.crt")] if ca else [])
    for src, name in files:
        shutil.copy(src, pg.data / name)
        if IS_ROOT:
            shutil.chown(pg.data / name, "postgres", "postgres")
        (pg.data / name).chmod(0o600)
    with open(pg.data / "postgresql.conf", "a") as f:
        f.write("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
                + ("ssl_ca_file = 'ca.crt'\n" if ca else ""))


def serve_tls_only(pg, certs):
    """Restart pg with ssl on (certs' server certificate) and TCP logins on TLS only."""
    ssl_on(pg, certs)
    (pg.data / "pg_hba.conf").write_text(
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n")
    pg.stop()
    pg.start()
    return pg


def starttls(sock, ctx, session=None):
    """PostgreSQL's STARTTLS on a connected socket: SSLRequest, the server's "S", then the
    handshake with ctx (checking the name localhost; session to resume one). The TLS socket;
    an ssl.SSLError when the handshake is refused."""
    sock.sendall(struct.pack("!II", 8, 80877103))
    assert sock.recv(1) == b"S"
    return ctx.wrap_socket(sock, server_hostname="localhost", session=session)
