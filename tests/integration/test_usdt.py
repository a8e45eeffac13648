"""USDT probes: the tusk binary and libtuskpool carry each probe docs/observability.md documents,
with the documented number of arguments; a build without <sys/sdt.h> (TUSK_NO_SDT) has none
and still compiles."""

import json
import re
import shlex
import subprocess

import pytest

from conftest import REPO, TUSK_BIN

pytestmark = pytest.mark.tusk_only

# provider -> probe -> argument count (docs/observability.md lists the same)
TUSK_PROBES = {
    "claim__start": 3, "claim__done": 5, "connect__start": 3, "connect__done": 5, "health": 3,
    "backend__state": 4, "server__released": 4, "server__closed": 3, "resolver__update": 3,
}
TUSKPOOL_PROBES = {
    "claim__start": 3, "claim__done": 4, "connect__start": 4, "connect__done": 5, "health": 4,
    "backend__state": 5, "slot__released": 4, "slot__closed": 4, "resolver__update": 4,
}


def probes(path):
    """{(provider, name): set of argument counts} from readelf -n."""
    out = subprocess.run(["readelf", "-n", str(path)], capture_output=True, text=True, check=True).stdout
    found = {}
    for m in re.finditer(r"Provider: (\S+)\s+Name: (\S+)\s+Location:.*?\n\s+Arguments: ?(.*)", out):
        args = m.group(3).split()
        found.setdefault((m.group(1), m.group(2)), set()).add(len(args))
    return found


def sdt_available():
    r = subprocess.run(["cc", "-E", "-x", "c", "-"], input="#include <sys/sdt.h>\n", capture_output=True, text=True)
    return r.returncode == 0


needs_sdt = pytest.mark.skipif(not sdt_available(), reason="<sys/sdt.h> missing: apt-get install systemtap-sdt-dev")


@needs_sdt
def test_tusk_binary_lists_each_probe_with_its_arguments():
    found = probes(TUSK_BIN)
    for name, nargs in TUSK_PROBES.items():
        assert ("tusk", name) in found, f"probe tusk:{name} missing from {TUSK_BIN}"
        assert found[("tusk", name)] == {nargs}, f"tusk:{name}: {found[('tusk', name)]} arguments, want {nargs}"
    doc = (REPO / "docs/observability.md").read_text()
    for name in TUSK_PROBES:
        assert f"usdt:{{bin}}:tusk:{name}" in doc or f"tusk:{name}" in doc, f"tusk:{name} not documented"


@needs_sdt
def test_libtuskpool_lists_each_probe_with_its_arguments():
    lib = TUSK_BIN.parent / "libtuskpool.so"
    assert lib.exists(), f"{lib} not built"
    found = probes(lib)
    for name, nargs in TUSKPOOL_PROBES.items():
        assert ("tuskpool", name) in found, f"probe tuskpool:{name} missing from {lib}"
        assert found[("tuskpool", name)] == {nargs}, f"tuskpool:{name}: {found[('tuskpool', name)]}, want {nargs}"
    doc = (REPO / "docs/observability.md").read_text()
    for name in TUSKPOOL_PROBES:
        assert f"tuskpool:{name}" in doc, f"tuskpool:{name} not documented"


@pytest.mark.exclusive  # load: runs alone (conftest.py)
def test_build_without_sdt_has_no_probes(tmp_path):
    """The files with probes compile with TUSK_NO_SDT (as on a machine without sys/sdt.h), with
    the project's own flags, and carry no probe note."""
    cc_json = TUSK_BIN.parent / "compile_commands.json"
    if not cc_json.exists():
        cc_json = REPO / "build" / "compile_commands.json"
    commands = {e["file"]: e for e in json.loads(cc_json.read_text())}
    for rel in ["src/pool/pool.c", "src/pool/server.c", "src/pool/services.c", "src/pool/core/tp_pool.c"]:
        entry = commands[str(REPO / rel)]
        argv = shlex.split(entry["command"]) if "command" in entry else entry["arguments"]
        # Under link-time optimisation an object holds no machine code, notes included, until
        # the link: these objects are compiled to be read, so without it.
        argv = [a for a in argv if not a.startswith("-flto") and a != "-fno-fat-lto-objects"]
        out_i = argv.index("-o")
        obj = tmp_path / (rel.replace("/", "_") + ".o")
        argv = argv[:out_i] + ["-o", str(obj)] + argv[out_i + 2:] + ["-DTUSK_NO_SDT=1"]
        subprocess.run(argv, cwd=entry["directory"], check=True, capture_output=True, text=True, timeout=120)
        assert "stapsdt" not in subprocess.run(["readelf", "-n", str(obj)], capture_output=True, text=True).stdout
        if sdt_available():
            # ... and the same file built normally does have them: the switch is what differs.
            obj2 = tmp_path / (rel.replace("/", "_") + ".sdt.o")
            argv2 = [a for a in argv if a != "-DTUSK_NO_SDT=1"]
            argv2[argv2.index("-o") + 1] = str(obj2)
            subprocess.run(argv2, cwd=entry["directory"], check=True, capture_output=True, text=True, timeout=120)
            assert "stapsdt" in subprocess.run(["readelf", "-n", str(obj2)], capture_output=True, text=True).stdout
