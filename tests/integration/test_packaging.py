"""make install's systemd unit names the paths make install uses (issue 26: the unit in contrib/
said /usr/bin/tusk while make install put tusk in /usr/local/bin), and systemd-analyze verify
accepts it."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import TUSK_BIN, connect, free_port, port_open, wait_until

pytestmark = pytest.mark.exclusive  # load or timing: runs alone (conftest.py)

BUILD = Path(TUSK_BIN).parent


@pytest.mark.skipif(not (BUILD / "cmake_install.cmake").exists(), reason="TUSK_BIN is not in a CMake build dir")
def test_installed_systemd_unit_names_installed_paths(tmp_path):
    dest = tmp_path / "root"
    r = subprocess.run(["cmake", "--install", str(BUILD)], env={"DESTDIR": str(dest), "PATH": "/usr/bin:/bin"},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    units = list(dest.rglob("lib/systemd/system/tusk.service"))
    assert len(units) == 1, list(dest.rglob("*"))
    text = units[0].read_text()
    execs = re.findall(r"^Exec(?:Start|StartPre)=(\S+)", text, re.M)
    assert execs, text
    for path in execs:
        assert (dest / path.lstrip("/")).is_file(), f"{path} is not where make install put tusk"
    doc = re.search(r"^Documentation=file://(\S+)", text, re.M).group(1)
    assert (dest / doc.lstrip("/")).is_file(), doc
    for name in ("LICENSE", "CHANGELOG.md", "migrating-from-pgbouncer.md"):
        assert (Path(doc).parent / name).name and (dest / Path(doc).parent.relative_to("/") / name).is_file(), name
    if shutil.which("systemd-analyze"):
        prefix = str(Path(execs[0]).parent.parent) + "/"
        local = tmp_path / "tusk.service"
        local.write_text(text.replace(prefix, f"{dest}{prefix}"))
        v = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True, timeout=60)
        assert v.returncode == 0, v.stdout + v.stderr


# --- make deb (issue 26, item 8) -------------------------------------------------------------
# Built from this tree (scripts/build-deb.sh, its own Release build), installed with dpkg -i,
# run, and purged. It needs root (dpkg) and no tusk package already installed (a developer's own
# would be replaced); it builds the package itself, whatever TUSK_BIN is, so it runs once: in the
# release pass, not again against the ASan binary.
def _deb_reason():
    if os.geteuid() != 0:
        return "dpkg -i needs root"
    if not shutil.which("dpkg-deb") or not shutil.which("dpkg-shlibdeps"):
        return "dpkg-dev is not installed (scripts/install-deps.sh installs it)"
    if "build-asan" in str(TUSK_BIN):
        return "the package is built from source, not from TUSK_BIN: it runs in the release pass only"
    if subprocess.run(["dpkg-query", "-W", "-f=${Status}", "tusk"], capture_output=True,
                      text=True).stdout.startswith("install ok"):
        return "a tusk package is installed on this machine; not replacing it"
    return None


@pytest.mark.skipif(_deb_reason() is not None, reason=str(_deb_reason()))
def test_make_deb_installs_and_serves(tmp_path, pg):
    src = Path(__file__).resolve().parents[2]
    r = subprocess.run(["make", "-C", str(src), "deb", f"DEB_OUT={tmp_path}"], capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    debs = list(tmp_path.glob("tusk_*.deb"))
    assert len(debs) == 1, r.stdout
    deb = debs[0]

    info = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends"], capture_output=True, text=True, check=True).stdout
    for dep in ("libpq5", "libmicrohttpd12", "libldap-2.5-0", "libpam0g", "libev4", "libssl3"):
        assert dep in info, info

    inst = subprocess.run(["dpkg", "-i", str(deb)], capture_output=True, text=True, timeout=300)
    try:
        assert inst.returncode == 0, inst.stdout + inst.stderr
        files = subprocess.run(["dpkg", "-L", "tusk"], capture_output=True, text=True, check=True).stdout.split()
        for path in ("/usr/bin/tusk", "/usr/share/man/man1/tusk.1.gz", "/usr/lib/systemd/system/tusk.service",
                     "/etc/tusk/tusk.yaml", "/usr/share/doc/tusk/LICENSE"):
            assert path in files, path
        unit = Path("/usr/lib/systemd/system/tusk.service").read_text()
        assert "ExecStart=/usr/bin/tusk -c /etc/tusk/tusk.yaml" in unit, unit
        assert "User=tusk" in unit
        # The unit's user exists, and it (not everyone) can read the installed configuration.
        subprocess.run(["getent", "passwd", "tusk"], check=True, capture_output=True)
        st = os.stat("/etc/tusk/tusk.yaml")
        assert st.st_mode & 0o007 == 0, oct(st.st_mode)
        chk = subprocess.run(["runuser", "-u", "tusk", "--", "/usr/bin/tusk", "-c", "/etc/tusk/tusk.yaml", "--check"],
                             capture_output=True, text=True, timeout=60)
        assert chk.returncode == 0, chk.stdout + chk.stderr
        if shutil.which("systemd-analyze"):
            v = subprocess.run(["systemd-analyze", "verify", "/usr/lib/systemd/system/tusk.service"],
                               capture_output=True, text=True, timeout=60)
            assert v.returncode == 0, v.stdout + v.stderr
        # The installed binary serves: the packaged libraries are the ones it runs with.
        port = free_port()
        cfg = tmp_path / "tusk.yaml"
        cfg.write_text(f"""listen:
  - host: 127.0.0.1
    port: {port}
workers: 1
log: {{level: info, format: text, target: stderr}}
services:
  main: {{hosts: ["127.0.0.1:{pg.port}"]}}
pools:
  - {{database: "*", user: "*", service: main, mode: transaction, size: 2}}
""")
        proc = subprocess.Popen(["/usr/bin/tusk", "-c", str(cfg)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: port_open(port) or proc.poll() is not None, 20, what="packaged tusk listening")
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")
            with connect(port) as conn:
                assert conn.execute("SELECT 40 + 2").fetchone()[0] == 42
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    finally:
        purge = subprocess.run(["dpkg", "--purge", "tusk"], capture_output=True, text=True, timeout=300)
    assert purge.returncode == 0, purge.stdout + purge.stderr
    assert not Path("/usr/bin/tusk").exists() and not Path("/etc/tusk").exists()
