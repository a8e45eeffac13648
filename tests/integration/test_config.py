"""Configuration errors: every one reported as FILE:LINE: KEY: message, and tusk refuses to start."""

import re
import subprocess
import textwrap
import time

import pytest

from conftest import SLOW, TUSK_BIN, free_port, port_open

pytestmark = pytest.mark.tusk_only

ERROR_LINE_RE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): (?P<key>[^:]+): (?P<msg>.+)$")


def tusk_cmd(*args, timeout=10):
    return subprocess.run([str(TUSK_BIN), *args], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=timeout * SLOW)


def good_config(port, pg_port=5432):
    return textwrap.dedent(f"""\
        listen:
          - host: 127.0.0.1
            port: {port}
        workers: 2
        log: {{level: info, format: text, target: stderr}}
        services:
          main:
            hosts: ["127.0.0.1:{pg_port}"]
        pools:
          - database: "*"
            user: "*"
            service: main
            mode: session
            size: 20
        pool_wait_timeout: 30s
        server_connect_timeout: 5s
        server_reset_timeout: 5s
        client_login_timeout: 15s
        server_idle_timeout: 10m
        server_reset_query: DISCARD ALL
        max_message_size: 64MB
        buffer_size: 64kB
        max_client_connections: 10000
        """)


# (line, key suffix) of each mistake below; line numbers are 1-based.
BROKEN = """\
listen:
  - host: 127.0.0.1
    port: 99999
workers: lots
log: {level: chatty, format: text, target: stderr}
services:
  main:
    hosts: ["127.0.0.1:5432"]
pools:
  - database: "*"
    user: "*"
    service: nosuch
    mode: sideways
    size: -1
pool_wait_timeout: forever
max_message_size: 12 parsecs
"""
BROKEN_ERRORS = [(3, "port"), (4, "workers"), (5, "level"), (12, "service"), (13, "mode"), (14, "size"),
                 (15, "pool_wait_timeout"), (16, "max_message_size")]


def test_good_config_passes_check(tmp_path):
    cfg = tmp_path / "good.yaml"
    cfg.write_text(good_config(free_port()))
    p = tusk_cmd("-c", str(cfg), "--check")
    assert p.returncode == 0, p.stderr


def test_minimal_config_passes_check(tmp_path):
    cfg = tmp_path / "minimal.yaml"
    cfg.write_text('services:\n  main:\n    hosts: ["127.0.0.1:5432"]\npools:\n  - service: main\n'
                   '    database: "*"\n    user: "*"\n')
    p = tusk_cmd("-c", str(cfg), "--check")
    assert p.returncode == 0, p.stderr


def test_broken_config_reports_every_error_with_file_and_line(tmp_path):
    cfg = tmp_path / "broken.yaml"
    cfg.write_text(BROKEN)
    p = tusk_cmd("-c", str(cfg), "--check")
    assert p.returncode == 1, f"exit {p.returncode}\n{p.stderr}"
    found = {}
    for line in p.stderr.splitlines():
        m = ERROR_LINE_RE.match(line)
        if m:
            assert m["file"] == str(cfg), line
            found.setdefault(int(m["line"]), []).append(m["key"])
    missing = [(ln, key) for ln, key in BROKEN_ERRORS
               if not any(k.endswith(key) or key in k for k in found.get(ln, []))]
    assert not missing, f"errors not reported (line, key): {missing}\nstderr:\n{p.stderr}"


def test_broken_config_does_not_start(tmp_path):
    port = free_port()
    cfg = tmp_path / "broken.yaml"
    cfg.write_text(BROKEN.replace("99999", str(port)))
    proc = subprocess.Popen([str(TUSK_BIN), "-c", str(cfg)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=10 * SLOW)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=10)
        pytest.fail("tusk kept running with a broken config")
    assert proc.returncode != 0
    assert f"{cfg}:4: " in err, err
    assert not port_open(port)


def test_yaml_syntax_error_names_the_line(tmp_path):
    cfg = tmp_path / "syntax.yaml"
    cfg.write_text("listen:\n  - host: 127.0.0.1\n    port: [6432\nworkers: 2\n")
    p = tusk_cmd("-c", str(cfg), "--check")
    assert p.returncode == 1
    assert re.search(rf"^{re.escape(str(cfg))}:\d+: ", p.stderr, re.M), p.stderr


def test_missing_config_file(tmp_path):
    p = tusk_cmd("-c", str(tmp_path / "nope.yaml"), "--check")
    assert p.returncode == 1
    assert "nope.yaml" in p.stderr


def test_default_config_is_tusk_yaml_in_cwd(tmp_path):
    (tmp_path / "tusk.yaml").write_text(good_config(free_port()))
    p = subprocess.run([str(TUSK_BIN), "--check"], cwd=tmp_path, capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=10 * SLOW)
    assert p.returncode == 0, p.stderr


def test_version_and_help():
    p = tusk_cmd("--version")
    assert p.returncode == 0
    assert re.search(r"\d+\.\d+\.\d+", p.stdout + p.stderr)
    p = tusk_cmd("--help")
    assert p.returncode == 0
    assert "--check" in p.stdout + p.stderr


def test_sigint_stops_cleanly(tmp_path, pg):
    port = free_port()
    cfg = tmp_path / "tusk.yaml"
    cfg.write_text(good_config(port, pg.port))
    proc = subprocess.Popen([str(TUSK_BIN), "-c", str(cfg)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15 * SLOW
        while not port_open(port) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert port_open(port), "tusk did not start"
        proc.send_signal(2)
        assert proc.wait(timeout=15 * SLOW) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.parametrize("opener", ["[", "{a: "], ids=["flow-sequence", "flow-mapping"])
def test_deeply_nested_yaml_is_refused_fast(tmp_path, opener):
    """Issue 9 item 13: libyaml has no depth bound and spends minutes on a few MB of "[[[["."""
    cfg = tmp_path / "deep.yaml"
    head = "services:\n  main:\n    hosts: [\"127.0.0.1:5432\"]\nx: "
    cfg.write_text(head + opener * ((1 << 20) // len(opener)) + "\n")
    start = time.monotonic()
    p = tusk_cmd("-c", str(cfg), "--check")
    took = time.monotonic() - start
    assert p.returncode == 1, p.stderr
    assert f"{cfg}:4: -: nested deeper than 64 levels" in p.stderr, p.stderr
    assert took < 1.0 * SLOW, f"took {took:.2f}s to refuse a 1 MB deeply nested file"


def test_split_needs_transaction_mode(tmp_path):
    # read-write-split decides per transaction: a session-mode rule is refused by --check
    # (and at start), naming the key; in transaction mode it starts (test_split.py).
    port = free_port()
    cfg = tmp_path / "split.yaml"
    cfg.write_text(f"listen: [{{host: 127.0.0.1, port: {port}}}]\nservices:\n  main:\n"
                   f"    hosts: [\"127.0.0.1:5432\"]\n"
                   f"pools:\n  - mode: session\n    target_session_attrs: read-write-split\n")
    p = tusk_cmd("--check", "-c", str(cfg))
    assert p.returncode == 1, p.stderr
    assert "pools[0].target_session_attrs: read-write-split needs mode: transaction (found session)" in p.stderr, \
        p.stderr
    cfg.write_text(cfg.read_text().replace("mode: session", "mode: transaction"))
    p = tusk_cmd("--check", "-c", str(cfg))
    assert p.returncode == 0, p.stderr
