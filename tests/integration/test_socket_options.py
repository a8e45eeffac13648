"""Listener and socket settings PgBouncer has (unix_socket_mode, unix_socket_group, tcp_defer_accept,
tcp_socket_buffer, listen_backlog, log.syslog_ident/facility; docs/operations.md), each read back from
the kernel: the socket file's mode and group and who may connect through it, the handshakes a listener
holds back, socket buffers and listen backlogs (ss), the datagrams syslog(3) sends."""

import grp
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import time

import psycopg
import pytest

from conftest import IS_ROOT, SLOW, TEST_DB, TUSK_BIN, connect, console_show, free_port, to_yaml
from lifecycle_util import reload

pytestmark = pytest.mark.tusk_only

SESSION = [{"database": "*", "user": "*", "service": "main", "mode": "session", "size": 2}]
ADMIN = {"users": ["postgres"], "client_auth": "trust"}  # console_show's


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="tusk-sock-")  # short: sun_path holds 107 bytes
    os.chmod(d, 0o755)  # other users may reach the socket file; its own mode decides
    yield d
    shutil.rmtree(d, ignore_errors=True)


def connects_as(user, path):
    """Whether user may connect to the Unix socket at path (the kernel checks the file's write bit)."""
    code = f"import socket; socket.socket(socket.AF_UNIX).connect({path!r})"
    p = subprocess.run(["runuser", "-u", user, "--", "/usr/bin/python3", "-c", code], capture_output=True,
                       text=True, timeout=10 * SLOW)
    assert p.returncode == 0 or "PermissionError" in p.stderr, p.stderr
    return p.returncode == 0


def test_unix_socket_mode_and_group(tusk, sockdir):
    t = tusk(pools=SESSION, unix_socket_dir=sockdir, unix_socket_mode="0660", unix_socket_group="postgres")
    path = f"{sockdir}/.s.PGSQL.{t.port}"
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660, oct(st.st_mode)
    assert st.st_gid == grp.getgrnam("postgres").gr_gid, st.st_gid
    with psycopg.connect(host=sockdir, port=t.port, user="tusk_trust", dbname=TEST_DB, autocommit=True,
                         connect_timeout=int(15 * SLOW)) as c:
        assert c.execute("select current_database()").fetchone() == (TEST_DB,)
    if IS_ROOT:  # the group may connect, others may not
        assert connects_as("postgres", path)
        assert not connects_as("nobody", path)


def test_unix_socket_default_mode_is_0777(tusk, sockdir):
    t = tusk(pools=SESSION, unix_socket_dir=sockdir)
    st = os.stat(f"{sockdir}/.s.PGSQL.{t.port}")
    assert stat.S_IMODE(st.st_mode) == 0o777 and st.st_gid == os.getegid(), (oct(st.st_mode), st.st_gid)


def test_a_takeover_applies_the_new_unix_socket_mode_and_group(tusk, sockdir, tmp_path):
    """An online restart (--takeover) inherits the Unix socket, not its old mode: the new
    configuration's unix_socket_mode and unix_socket_group are put on the socket file, and
    clients connect through it to the new process."""
    t = tusk(pools=SESSION, unix_socket_dir=sockdir, unix_socket_mode="0660",
             takeover_socket=str(tmp_path / "takeover.sock"))
    path = f"{sockdir}/.s.PGSQL.{t.port}"
    st = os.stat(path)
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, os.getegid()), (oct(st.st_mode), st.st_gid)
    text = t.cfg_path.read_text()
    new_text = re.sub(r"(?m)^unix_socket_mode: .*$", 'unix_socket_mode: "0640"\nunix_socket_group: postgres', text)
    assert new_text != text, text
    t.cfg_path.write_text(new_text)
    new_log = tmp_path / "new.log"
    with open(new_log, "ab") as logf:
        new = subprocess.Popen([str(TUSK_BIN), "-c", str(t.cfg_path), "--takeover"], stdin=subprocess.DEVNULL,
                               stdout=logf, stderr=subprocess.STDOUT, cwd=t.dir)
    try:
        deadline = time.monotonic() + 15 * SLOW
        while "this process serves" not in new_log.read_text(errors="replace") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "this process serves" in new_log.read_text(errors="replace"), new_log.read_text(errors="replace")
        assert t.proc.wait(timeout=10 * SLOW) == 0  # the old one drained (no client) and left
        t.logf.close()
        t.proc = None
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode), oct(st.st_mode)
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o640, grp.getgrnam("postgres").gr_gid), \
            (oct(st.st_mode), st.st_gid)
        with psycopg.connect(host=sockdir, port=t.port, user="tusk_trust", dbname=TEST_DB, autocommit=True,
                             connect_timeout=int(15 * SLOW)) as c:
            assert c.execute("select current_database()").fetchone() == (TEST_DB,)
        if IS_ROOT:  # 0640: the group may read, not write: connecting needs write
            assert not connects_as("postgres", path)
    finally:
        if new.poll() is None:
            new.terminate()
        rc = new.wait(15 * SLOW)
    assert rc == 0, new_log.read_text(errors="replace")


def server_side(port, state):
    """tusk's side of the connections to port in that TCP state (ss), as "peer:port" strings."""
    out = subprocess.run(["ss", "-tnH", "state", state, f"( sport = :{port} )"], capture_output=True, text=True,
                         check=True).stdout
    return [line.split()[-1] for line in out.splitlines()]


def client_ports(t):
    return {r["port"] for r in console_show(t, "SHOW SOCKETS") if r["type"] == "C"}


def test_tcp_defer_accept_holds_silent_clients_back(tusk):
    t = tusk(pools=SESSION, admin=ADMIN, tcp_defer_accept="10s")
    silent = socket.create_connection(("127.0.0.1", t.port), timeout=5)
    try:
        me = silent.getsockname()[1]
        # the handshake is done on the client's side; tusk's side waits for data, unaccepted
        time.sleep(0.5)
        assert server_side(t.port, "syn-recv") == [f"127.0.0.1:{me}"], server_side(t.port, "syn-recv")
        assert me not in client_ports(t)
        # one that sends its startup is served at once
        start = time.monotonic()
        with connect(t.port) as c:
            assert c.execute("select 1").fetchone() == (1,)
        assert time.monotonic() - start < 2 * SLOW
        # and the silent one is accepted by its first bytes (an SSLRequest: tusk answers N)
        silent.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")
        assert silent.recv(1) == b"N"
        assert me in client_ports(t)
    finally:
        silent.close()


def test_tcp_defer_accept_off_by_default_and_by_reload(tusk):
    for t in (tusk(pools=SESSION, admin=ADMIN), tusk(pools=SESSION, admin=ADMIN, tcp_defer_accept="10s")):
        if "tcp_defer_accept" in t.cfg_path.read_text():
            t.cfg_path.write_text(t.cfg_path.read_text().replace("tcp_defer_accept: 10s", "tcp_defer_accept: 0"))
            reload(t)
        with socket.create_connection(("127.0.0.1", t.port), timeout=5) as silent:
            me = silent.getsockname()[1]
            wait_until_accepted = time.monotonic() + 5 * SLOW
            while me not in client_ports(t) and time.monotonic() < wait_until_accepted:
                time.sleep(0.05)
            assert me in client_ports(t), t.cfg_path.read_text()
            assert server_side(t.port, "syn-recv") == []


def buffers(filter_expr):
    """(rcvbuf, sndbuf) of each established socket ss's filter matches, as the kernel holds them."""
    out = subprocess.run(["ss", "-tmnH", "state", "established", filter_expr], capture_output=True, text=True,
                         check=True).stdout
    return [(int(rb), int(tb)) for rb, tb in re.findall(r"skmem:\(r\d+,rb(\d+),t\d+,tb(\d+),", out)]


def test_tcp_socket_buffer_on_client_and_server_sockets(tusk, pg):
    t = tusk(pools=SESSION, tcp_socket_buffer="48kB")
    with connect(t.port) as c:
        pid = c.execute("select pg_backend_pid()").fetchone()[0]
        port = pg.execute("select client_port from pg_stat_activity where pid = %s", [pid])[0][0]
        # SO_SNDBUF/SO_RCVBUF of 49152: the kernel keeps twice that, and no autotuning moves it
        want = [(2 * 49152, 2 * 49152)]
        assert buffers(f"( sport = :{t.port} )") == want, buffers(f"( sport = :{t.port} )")
        assert buffers(f"( sport = :{port} and dport = :{pg.port} )") == want
        # the system's on a tusk without the key (Linux starts a receive buffer at tcp_rmem's default)
        plain = tusk(pools=SESSION)
        with connect(plain.port):
            [(rb, _)] = buffers(f"( sport = :{plain.port} )")
            assert rb != 2 * 49152, rb


def backlogs(t, sockdir):
    """The backlog of each of t's listeners, TCP and Unix: ss shows it as a listener's Send-Q (after
    a Netid column for Unix sockets)."""
    tcp = subprocess.run(["ss", "-tlnH", f"( sport = :{t.port} )"], capture_output=True, text=True, check=True).stdout
    unix = subprocess.run(["ss", "-xlnH", "src", f"{sockdir}/.s.PGSQL.{t.port}"], capture_output=True, text=True,
                          check=True).stdout
    return [int(line.split()[2]) for line in tcp.splitlines()], [int(line.split()[3]) for line in unix.splitlines()]


def test_listen_backlog_at_start_and_by_reload(tusk, sockdir):
    somaxconn = int(open("/proc/sys/net/core/somaxconn").read())
    plain = tusk(pools=SESSION, unix_socket_dir=sockdir)
    assert backlogs(plain, sockdir) == ([min(1024, somaxconn)] * 2, [min(1024, somaxconn)])  # two workers
    t = tusk(pools=SESSION, unix_socket_dir=sockdir, listen_backlog=77)
    assert backlogs(t, sockdir) == ([77, 77], [77])
    t.cfg_path.write_text(t.cfg_path.read_text().replace("listen_backlog: 77", "listen_backlog: 33"))
    reload(t)
    assert backlogs(t, sockdir) == ([33, 33], [33])
    with connect(t.port) as c:  # the same sockets still accept
        assert c.execute("select 1").fetchone() == (1,)


@pytest.mark.skipif(not IS_ROOT, reason="a mount namespace needs root")
def test_syslog_ident_and_facility(tmp_path, pg):
    """tusk's syslog lines reach /dev/log with the configured ident and facility. tusk runs in a
    mount namespace of its own whose /dev holds the test's datagram socket as log (the host's
    /dev is left alone)."""
    dev = tmp_path / "dev"
    dev.mkdir()
    log = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    log.bind(str(dev / "log"))
    log.settimeout(15 * SLOW)
    port = free_port()
    cfg = tmp_path / "tusk.yaml"
    cfg.write_text(to_yaml({
        "listen": [{"host": "127.0.0.1", "port": port}], "workers": 1,
        "log": {"level": "info", "target": "syslog", "syslog_ident": "tusk-it", "syslog_facility": "local3"},
        "services": {"main": {"hosts": [f"127.0.0.1:{pg.port}"]}}, "pools": SESSION}) + "\n")
    devs = " ".join(f"touch {dev}/{f} && mount --bind /dev/{f} {dev}/{f} &&" for f in ("null", "zero", "urandom"))
    proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                             f"{devs} mount --rbind {dev} /dev && exec {TUSK_BIN} -c {cfg}"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        line = log.recv(4096).decode(errors="replace")
        # <PRI> is facility * 8 + severity: local3 (19) and info (6); then the ident and pid
        assert line.startswith(f"<{19 * 8 + 6}>"), line
        assert re.search(r" tusk-it\[\d+\]: ", line), line
    finally:
        proc.terminate()
        assert proc.wait(timeout=30 * SLOW) == 0, proc.stderr.read().decode()[-2000:]
        log.close()
