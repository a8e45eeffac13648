"""Big data through tusk: COPY both ways byte-identical, a 100 MB result with bounded memory."""

import hashlib
import random
import socket
import time

import pytest

from conftest import DIRECT, SANITIZED, SLOW, TEST_DB, connect
import pgwire


def make_copy_data(nbytes):
    """Tab-separated COPY text with nothing that COPY would re-escape, so out == in."""
    rnd = random.Random(7)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:-_"
    lines, size, i = [], 0, 0
    while size < nbytes:
        i += 1
        payload = "".join(rnd.choices(alphabet, k=rnd.randint(1, 400)))
        line = f"{i}\t{payload}\n"
        lines.append(line)
        size += len(line)
    return "".join(lines).encode()


def test_copy_10mb_in_and_out_is_byte_identical(tusk):
    t = tusk()
    data = make_copy_data(10 * 1024 * 1024)
    with t.connect() as c:
        c.execute("drop table if exists copy_t")
        c.execute("create table copy_t (id int primary key, payload text not null)")
        try:
            with c.cursor() as cur:
                with cur.copy("copy copy_t from stdin") as cp:
                    for off in range(0, len(data), 100_000):
                        cp.write(data[off:off + 100_000])
                assert c.execute("select count(*) from copy_t").fetchone()[0] == data.count(b"\n")
                out = bytearray()
                with cur.copy("copy (select id, payload from copy_t order by id) to stdout") as cp:
                    for chunk in cp:
                        out += chunk
            assert len(out) == len(data)
            assert hashlib.sha256(out).hexdigest() == hashlib.sha256(data).hexdigest()
            # the connection is still in sync after both COPYs
            assert c.execute("select 1").fetchone() == (1,)
        finally:
            c.execute("drop table if exists copy_t")


def test_copy_error_midway_leaves_connection_usable(tusk):
    t = tusk()
    with t.connect() as c:
        c.execute("create temp table copy_bad (id int)")
        with pytest.raises(Exception) as ei:
            with c.cursor().copy("copy copy_bad from stdin") as cp:
                cp.write(b"1\n2\nnot-a-number\n3\n")
        assert "invalid input syntax" in str(ei.value)
        assert c.execute("select count(*) from copy_bad").fetchone() == (0,)


def test_100mb_result_streams_with_bounded_memory(tusk):
    t = tusk()
    rows = 100_000
    with t.connect() as c:
        total, n = 0, 0
        start = time.monotonic()
        for (s,) in c.cursor().stream("select repeat('x', 1000) from generate_series(1, %s)", (rows,)):
            total += len(s)
            n += 1
            if n % 10_000 == 0:
                # a slow reader: without backpressure tusk would buffer what the server keeps sending
                time.sleep(0.2)
        assert n == rows and total == rows * 1000
        assert time.monotonic() - start < 120 * SLOW
        assert c.execute("select 1").fetchone() == (1,)
    if DIRECT:
        return
    hwm_kb = t.status("VmHWM")
    print(f"tusk VmHWM after streaming 100 MB: {hwm_kb} kB")
    # Sanitizers add shadow memory and a quarantine of freed blocks; buffering the result would
    # still show as ~100 MB.
    limit_mb = 80 if SANITIZED else 32
    assert hwm_kb < limit_mb * 1024, f"tusk peak RSS {hwm_kb} kB while streaming 100 MB (limit {limit_mb} MB)"


def test_stalled_reader_does_not_grow_tusk_or_block_others(tusk):
    """A client asks for 200 MB and stops reading. tusk must stop reading from that server
    (backpressure), not buffer the result; others keep working; when the staller goes away its
    server, stuck mid-result, must not be handed to the next client as is."""
    t = tusk(pools=[{"database": "*", "user": "tusk_solo", "service": "main", "mode": "session", "size": 1},
                    {"database": "*", "user": "*", "service": "main", "mode": "session", "size": 20}])
    c = pgwire.RawClient("127.0.0.1", t.port, timeout=10 * SLOW)
    try:
        c.startup("tusk_solo", TEST_DB)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.send(pgwire.query_message("select repeat('x', 1000) from generate_series(1, 200000)"))
        for i in range(30):  # 3 s of not reading while others work
            with t.connect() as other:
                assert other.execute("select %s::int", (i,)).fetchone() == (i,)
            time.sleep(0.1)
        if not DIRECT:
            rss, limit_mb = t.status("VmRSS"), (80 if SANITIZED else 32)
            assert rss < limit_mb * 1024, f"tusk RSS {rss} kB with a stalled 200 MB result (limit {limit_mb} MB)"
    finally:
        c.close(reset=True)
    with connect(t.port, user="tusk_solo", connect_timeout=int(20 * SLOW)) as s:
        assert s.execute("select 'next'").fetchone() == ("next",)
