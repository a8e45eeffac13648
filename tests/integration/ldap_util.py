"""A real OpenLDAP slapd for the LDAP authentication tests: Debian's slapd on a loopback port
below the ephemeral range, an mdb database in a temporary directory loaded with slapadd before
it starts, and a listener for StartTLS with the TLS tests' certificates."""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from conftest import SLOW, free_port

SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
SLAPADD = shutil.which("slapadd") or "/usr/sbin/slapadd"
BASE = "dc=example,dc=net"
READER_DN = f"cn=reader,{BASE}"
READER_PW = "reader-pw"
# uid -> (ou, password); "dup" is in two ous, so a search for it finds two entries.
USERS = {
    "alice": ("people", "alice-pw"),
    "bob": ("people", "bob-pw"),
    "dup": ("people", "dup-pw"),
    "pw_scram": ("people", "scram-secret"),  # the same password as PostgreSQL's role (conftest)
}


def available():
    return os.path.exists(SLAPD) and os.path.exists(SLAPADD)


def _ldif():
    out = [f"dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: example\n",
           f"dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people\n",
           f"dn: ou=staff,{BASE}\nobjectClass: organizationalUnit\nou: staff\n",
           f"dn: {READER_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
           f"cn: reader\nuserPassword: {READER_PW}\n"]
    for uid, (ou, pw) in USERS.items():
        out.append(f"dn: uid={uid},ou={ou},{BASE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\n"
                   f"sn: {uid}\nmail: {uid}@example.net\nuserPassword: {pw}\n")
    out.append(f"dn: uid=dup,ou=staff,{BASE}\nobjectClass: inetOrgPerson\nuid: dup\ncn: dup2\nsn: dup\n"
               f"userPassword: dup-pw\n")
    return "\n".join(out)


class Slapd:
    def __init__(self, d, certs=None):
        self.dir = Path(d)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "db").mkdir(exist_ok=True)
        self.port = free_port()
        self.conf = self.dir / "slapd.conf"
        tls = ""
        if certs:
            tls = (f"TLSCACertificateFile {certs.ca}\nTLSCertificateFile {certs.server_crt}\n"
                   f"TLSCertificateKeyFile {certs.server_key}\n")
        self.conf.write_text(
            "include /etc/ldap/schema/core.schema\n"
            "include /etc/ldap/schema/cosine.schema\n"
            "include /etc/ldap/schema/inetorgperson.schema\n"
            "modulepath /usr/lib/ldap\nmoduleload back_mdb\n"
            f"pidfile {self.dir}/slapd.pid\n{tls}"
            "database mdb\nmaxsize 10485760\n"
            f'suffix "{BASE}"\nrootdn "cn=admin,{BASE}"\nrootpw admin-pw\n'
            f"directory {self.dir}/db\n"
            "access to attrs=userPassword by anonymous auth by self read by * none\n"
            "access to * by * read\n")
        (self.dir / "data.ldif").write_text(_ldif())
        subprocess.run([SLAPADD, "-f", str(self.conf), "-l", str(self.dir / "data.ldif")], check=True,
                       capture_output=True, timeout=60)
        self.log = open(self.dir / "slapd.log", "wb")
        # -d 0: stays in the foreground (this process owns it), logs nothing but errors.
        self.proc = subprocess.Popen([SLAPD, "-d", "0", "-f", str(self.conf), "-h",
                                      f"ldap://127.0.0.1:{self.port}/"],
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 15 * SLOW
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"slapd exited {self.proc.returncode}: "
                                   f"{(self.dir / 'slapd.log').read_text(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("slapd did not listen")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()
