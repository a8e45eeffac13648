"""A statement larger than buffer_size streams through to the server in pieces, and tusk keeps
a copy of it to classify it once whole (src/frontend/relay.c, big_begin; docs/pooling.md,
"Statements of any size"). When the memory for that copy cannot be had, tusk cannot tell what
the statement does to the session: it pins the client to its server for the rest of the
session (as for anything it cannot prove harmless), and the statement still runs.

The failure is made from outside: an LD_PRELOAD shim (tests/tools/fail_malloc.c) fails every
malloc from 256 kB up to 1 MB, the size of the copy (tusk's start allocates more, less or
nothing in between). Each case runs with and without it: only with it is the client pinned,
and the SET is the client's alone either way. The failing cases need glibc's malloc: under
ASan, which owns malloc and can only fail everything above a size (tusk's start included),
they are skipped; the release run has them."""

import subprocess

import psycopg
import pytest

from conftest import REPO, SANITIZED, SLOW, TEST_DB

pytestmark = pytest.mark.tusk_only

FAIL_FROM, FAIL_TO = 256 * 1024, 1024 * 1024
# A SET padded to 512 kB: past buffer_size (64 kB), in the failing window, and shorter than
# the longest statement tusk classifies (1 MB, CLASSIFY_MAX_LEN; a longer one pins anyway).
BIG_SET = ("SET work_mem = '17MB' /* " + "x" * (512 * 1024) + " */").encode()
PINNED = "statement too large to copy for classification"


@pytest.fixture(scope="module")
def fail_malloc_lib(tmp_path_factory):
    out = tmp_path_factory.mktemp("fail_malloc") / "fail_malloc.so"
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(out), str(REPO / "tests" / "tools" / "fail_malloc.c")],
                   check=True, timeout=60)
    return out


def failing_env(lib):
    return {"LD_PRELOAD": str(lib), "FAIL_MALLOC_FROM": str(FAIL_FROM), "FAIL_MALLOC_TO": str(FAIL_TO)}


def connect(port):
    return psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname=TEST_DB, autocommit=True,
                           connect_timeout=10 * SLOW)


def run_big_set(conn, proto):
    """The padded SET as a simple Query ('Q') or as an unnamed Parse/Bind/Execute ('P')."""
    pg = conn.pgconn
    res = pg.exec_(BIG_SET) if proto == "simple" else pg.exec_params(BIG_SET, [])
    assert res.status == psycopg.pq.ExecStatus.COMMAND_OK, res.error_message


@pytest.mark.parametrize("malloc_fails", [False, True], ids=["copied", "no-memory"])
@pytest.mark.parametrize("proto", ["simple", "extended"])
def test_oversized_statement_without_memory_for_its_copy_pins_the_client(tusk, fail_malloc_lib, proto,
                                                                         malloc_fails):
    if malloc_fails and SANITIZED:
        pytest.skip("ASan owns malloc: an LD_PRELOAD shim cannot fail tusk's allocations (the release run has this case)")
    # One server: a pinned client keeps it, and a second client can then only wait.
    t = tusk(pools=[{"database": "*", "user": "*", "service": "main", "mode": "transaction", "size": 1}],
             pool_wait_timeout="1s", env=failing_env(fail_malloc_lib) if malloc_fails else None)
    with connect(t.port) as a:
        run_big_set(a, proto)
        # The statement ran, whole: the setting is A's.
        assert a.execute("show work_mem").fetchone()[0] == "17MB"
        if malloc_fails:
            # A, idle, keeps the only server: B (whose login takes a server) waits out
            # pool_wait_timeout.
            with pytest.raises(psycopg.OperationalError) as err:
                connect(t.port).close()
            assert "waiting for a server connection" in str(err.value), err.value
            assert PINNED in t.wait_log(PINNED)
        else:
            # Copied and classified: A is not pinned, B gets the server, and not A's setting.
            with connect(t.port) as b:
                assert b.execute("show work_mem").fetchone()[0] == "4MB"
        assert a.execute("show work_mem").fetchone()[0] == "17MB"
    # A gone: its server serves the next client from the defaults.
    with connect(t.port) as c:
        assert c.execute("show work_mem").fetchone()[0] == "4MB"
    assert (PINNED in t.log_text()) == malloc_fails
