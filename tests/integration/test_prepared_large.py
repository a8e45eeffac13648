"""A named statement whose text nearly fills buffer_size (issue 27 follow-up).

tusk rewrites a client's named Parse (and the Bind, Describe and DEALLOCATE naming it) into the
server's buffer, with a margin for what it adds. A message that fits the client's buffer but
not the server's buffer with that margin used to stall the client side for ever, spinning: the
room check failed even on an empty buffer. Such a client must get an answer at once: its rows
when the message fits, or an error that names buffer_size, and the next client must find the
pool working."""

import pytest

from conftest import TEST_DB
from txn_util import WireClient, bind_msg, execute_msg, parse_msg, sync_msg, txn_pool

BUFFER = 65536


@pytest.fixture
def small_buffers(tusk):
    return tusk(pools=[txn_pool(1)], pool_wait_timeout="5s")


@pytest.mark.parametrize("text_len", [BUFFER - 600, BUFFER - 300, BUFFER - 100, BUFFER - 40, BUFFER - 20, BUFFER + 200])
def test_named_parse_near_buffer_size_is_answered_not_stalled(small_buffers, text_len):
    sql = "select '" + "x" * (text_len - 10) + "'::text"
    c = WireClient(small_buffers.port, dbname=TEST_DB, timeout=10.0)
    try:
        got = c.exchange(parse_msg("big", sql), bind_msg("big"), execute_msg(), sync_msg())
    except Exception as exc:  # a closed connection after an ErrorResponse is an answer too
        got = {"errors": [], "closed": repr(exc)}
    finally:
        c.close()
    if got.get("rows"):
        assert got["rows"][0][0] == "x" * (text_len - 10)
    else:
        assert got.get("errors") or got.get("closed"), got
        if got.get("errors"):
            assert got["errors"][0].get("C") in ("54000", "08P01"), got["errors"]
    nxt = WireClient(small_buffers.port, dbname=TEST_DB, timeout=10.0)
    try:
        assert nxt.exchange(parse_msg("", "select 41 + 1"), bind_msg(""), execute_msg(), sync_msg())["rows"] == [["42"]]
    finally:
        nxt.close()
