"""A link whose pages take longer than its statement_timeout (kv.link_statement_timeout):
large values written together make one page of them too slow to build on the peer. The link
retries smaller, as it does for a page that fails to apply, instead of asking for the same page
at every retry for ever (it did: "passes 13, lag 60.74 s / 200 rows, batch 500"). Zone b's links
time out at 50 ms; 200 values of 100 kB (one 20 MB page at the batch a link starts with) are
written in zone a in one transaction."""

import pytest

from conftest import SLOW, wait_until
from kv_util import Parade

pytestmark = pytest.mark.tusk_only

TIMEOUT_MS = 50
N, SIZE = 200, 100_000


@pytest.fixture(scope="module")
def parade(workdir):
    p = Parade(workdir / "kv-link-timeout", ["ta", "tb"])
    try:
        p.setup()
        for z in p.zones:
            z.write_config(link_statement_timeout=f"{TIMEOUT_MS}ms" if z.name == "tb" else None)
        p.start()
        yield p
    finally:
        p.destroy()


def test_pages_too_slow_for_the_links_timeout_are_pulled_smaller(parade):
    za, zb = parade.zones
    keys, i = [], 0
    while len(keys) < N:
        if parade.shard_of("default", f"big{i}") == 0:
            keys.append(f"big{i}")
        i += 1
    with za.db(0) as c:
        with c.transaction():
            for n, k in enumerate(keys):
                c.execute("select kv.put('default', %s, to_jsonb(repeat(%s, %s)))", (k, chr(ord("a") + n % 26), SIZE))
    pulled = f"select count(*) from kv.data where key ^@ 'big' and octet_length(value #>> '{{}}') = {SIZE}"
    wait_until(lambda: zb.sql(0, pulled)[0][0] == N, 60 * SLOW, interval=0.5, what="zone b pulled the values")
    assert "canceling statement due to statement timeout" in zb.tusk.log_text()
    parade.converge()
