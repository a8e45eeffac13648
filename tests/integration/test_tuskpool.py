"""libtuskpool on its own: the example that pools plain TCP to an echo server (two threads, a
backend that goes away and comes back), `make install` into a DESTDIR, and a program built
against the installed copy through pkg-config."""

import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, SLOW, TUSK_BIN, run

pytestmark = [pytest.mark.tusk_only, pytest.mark.exclusive]  # exclusive: conftest.py

EXAMPLE = TUSK_BIN.parent / "tcp_pool"


def check_example_output(out):
    """Every phase did what it should; the numbers are read back, not just the verdict."""
    up = re.search(r"^up: (\d+) ok, (\d+) failed \(", out, re.M)
    assert up, out
    assert int(up.group(1)) >= 400 and int(up.group(2)) == 0, out
    down = re.search(r"^down: (\d+) failed \((\d+) claims timed out, (\d+) failed fast, (\d+) requests broke\), "
                     r"backend (\w+), last error: (.*)$", out, re.M)
    assert down, out
    # While the backend is gone, the breaker fails claims fast instead of letting them wait.
    assert int(down.group(1)) >= 10 and int(down.group(3)) >= 1 and down.group(5) == "dead", out
    assert "refused" in down.group(6), out
    back = re.search(r"^back: (\d+) ok, backend (\w+)$", out, re.M)
    assert back and int(back.group(1)) >= 200 and back.group(2) == "up", out
    stop = re.search(r"^stop: claims (\d+) served (\d+) timeouts (\d+) connects (\d+) connect failures (\d+) "
                     r"handovers (\d+) max slots (\d+)$", out, re.M)
    assert stop, out
    claims, served, _, connects, failures, handovers, max_slots = map(int, stop.groups())
    assert served <= claims and failures >= 1
    # 8 clients over 3 slots on two threads: slots are reused, and move between the threads.
    assert connects < served / 10, out
    assert handovers > 0, out
    assert "destroy: ok" in out and out.rstrip().endswith("tcp_pool: PASS"), out


def test_tcp_pool_example_survives_backend_restart():
    assert EXAMPLE.exists(), f"{EXAMPLE} not built"
    r = subprocess.run([str(EXAMPLE)], capture_output=True, text=True, timeout=60 * SLOW)
    assert r.returncode == 0, r.stdout + r.stderr
    check_example_output(r.stdout)
    # The pool logged the backend's state changes through the host's log op.
    assert "up -> backoff" in r.stderr and "-> dead" in r.stderr and "dead -> up" in r.stderr, r.stderr


def test_make_install_into_destdir_and_build_against_it(tmp_path):
    dest = tmp_path / "dest"
    r = run(["make", "-C", str(REPO), "install", f"DESTDIR={dest}", "PREFIX=/usr/local"], timeout=900)
    prefix = dest / "usr/local"
    for rel in ["bin/tusk", "include/tuskpool.h", "lib/libtuskpool.a", "lib/libtuskpool.so",
                "lib/pkgconfig/tuskpool.pc", "share/man/man1/tusk.1", "share/doc/tusk/tusk.yaml.example"]:
        assert (prefix / rel).exists(), f"{rel} not installed:\n{r.stdout}"
    assert os.access(prefix / "bin/tusk", os.X_OK)
    assert (prefix / "share/man/man1/tusk.1").read_text().startswith(".TH TUSK 1")
    pc = (prefix / "lib/pkgconfig/tuskpool.pc").read_text()
    assert "prefix=/usr/local" in pc and "-ltuskpool" in pc
    # The installed binary runs.
    v = subprocess.run([str(prefix / "bin/tusk"), "--version"], capture_output=True, text=True, timeout=10)
    assert v.returncode == 0 and "tusk" in (v.stdout + v.stderr)

    # A program outside the tree, built from the installed header and shared library only.
    env = dict(os.environ, PKG_CONFIG_PATH=str(prefix / "lib/pkgconfig"))
    flags = subprocess.run(["pkg-config", "--define-prefix", "--cflags", "--libs", "tuskpool"], env=env,
                           capture_output=True, text=True, check=True).stdout.split()
    assert f"-I{prefix}/include" in flags, flags
    exe = tmp_path / "tcp_pool_installed"
    src = prefix / "share/doc/tusk/tcp_pool.c"
    subprocess.run(["cc", "-std=c17", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE", str(src), "-o", str(exe),
                    *flags, "-lev", "-pthread"], check=True, capture_output=True, text=True, timeout=120)
    ldd = subprocess.run(["ldd", str(exe)], capture_output=True, text=True, check=True).stdout
    assert "libtuskpool.so.0" in ldd
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, LD_LIBRARY_PATH=str(prefix / "lib")))
    assert out.returncode == 0, out.stdout + out.stderr
    check_example_output(out.stdout)
