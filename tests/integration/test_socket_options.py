"""Listener and socket settings PgBouncer has (unix_socket_mode, unix_socket_group; docs/operations.md),
each read back from the kernel: the socket file's mode and group, and who may connect through it."""

import grp
import os
import shutil
import stat
import subprocess
import tempfile

import psycopg
import pytest

from conftest import IS_ROOT, SLOW, TEST_DB

pytestmark = pytest.mark.tusk_only

SESSION = [{"database": "*", "user": "*", "service": "main", "mode": "session", "size": 2}]


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
