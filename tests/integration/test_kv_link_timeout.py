"""A link whose pages take longer than its statement_timeout (kv.link_statement_timeout):
large values written together make one page of them too slow to build on the peer. The link
retries smaller, as it does for a page that fails to apply, instead of asking for the same page
at every retry for ever (it did: "passes 13, lag 60.74 s / 200 rows, batch 500"). Zone b's links
time out at 50 ms; 200 values of 100 kB (one 20 MB page at the batch a link starts with) are
written in zone a in one transaction. Anti-entropy (the repair) the same way, below."""

import pytest

from conftest import SLOW, wait_until
from kv_util import running_parade

pytestmark = pytest.mark.tusk_only

TIMEOUT_MS = 50
N, SIZE = 200, 100_000


@pytest.fixture(scope="module")
def parade(workdir):
    yield from running_parade(workdir / "kv-link-timeout", ["ta", "tb"], lambda z: dict(
        link_statement_timeout=f"{TIMEOUT_MS}ms" if z.name == "tb" else None))


def write_large(parade, zone, shard, prefix):
    """N values of SIZE bytes on shard, written in zone in one transaction; their keys."""
    keys, i = [], 0
    while len(keys) < N:
        if parade.shard_of("default", f"{prefix}{i}") == shard:
            keys.append(f"{prefix}{i}")
        i += 1
    with zone.db(shard) as c:
        with c.transaction():
            for n, k in enumerate(keys):
                c.execute("select kv.put('default', %s, to_jsonb(repeat(%s, %s)))", (k, chr(ord("a") + n % 26), SIZE))
    return keys


def test_pages_too_slow_for_the_links_timeout_are_pulled_smaller(parade):
    za, zb = parade.zones
    write_large(parade, za, 0, "big")
    pulled = f"select count(*) from kv.data where key ^@ 'big' and octet_length(value #>> '{{}}') = {SIZE}"
    wait_until(lambda: zb.sql(0, pulled)[0][0] == N, 60 * SLOW, interval=0.5, what="zone b pulled the values")
    zb.tusk.wait_log("canceling statement due to statement timeout")
    parade.converge()


def test_repair_chunks_too_slow_for_the_timeout_are_asked_smaller(parade):
    """Anti-entropy asked for 64 differing buckets per statement whatever they held: a chunk of
    large rows failed at every round. Zone b loses 200 of zone a's large rows under its links
    (deleted directly: no tombstones, and W is past them, so only the repair brings them back)
    and repairs itself every second, its statements still timing out at 50 ms."""
    za, zb = parade.zones
    assert zb.stop_tusk() == []
    zb.kv_extra = dict(zb.kv_extra, anti_entropy_interval="1s")
    write_large(parade, za, 1, "lost")
    zb.start_tusk()
    present = f"select count(*) from kv.data where key ^@ 'lost' and octet_length(value #>> '{{}}') = {SIZE}"
    wait_until(lambda: zb.sql(1, present)[0][0] == N, 60 * SLOW, interval=0.5, what="zone b pulled the values")
    zb.sql(1, "delete from kv.data where key ^@ 'lost'")
    wait_until(lambda: zb.sql(1, present)[0][0] == N, 60 * SLOW, interval=0.5, what="zone b repaired the values")
    zb.tusk.wait_log("buckets in one statement failed")
    parade.converge()
