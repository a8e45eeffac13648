"""make install's systemd unit names the paths make install uses (issue 26: the unit in contrib/
said /usr/bin/tusk while make install put tusk in /usr/local/bin), and systemd-analyze verify
accepts it."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import TUSK_BIN

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
