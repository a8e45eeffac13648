"""Anti-entropy by bucketed digests (docs/kv.md, "Anti-entropy"): an instance that lost its data
is repaired from its peers, and a new instance joins live (by push, no restart) and gets every
row, also those whose origin has left the catalog and so can never be pulled."""

import pytest

from conftest import SLOW, wait_until
from kv_util import NSHARDS, Parade

pytestmark = pytest.mark.tusk_only


@pytest.fixture(scope="module")
def parade(workdir):
    p = Parade(workdir / "kv-repair", ["a1", "a2", "a3"])
    try:
        p.setup()
        for z in p.zones:
            z.write_config(anti_entropy_interval="1s")
        p.start()
        yield p
    finally:
        p.destroy()


def same_dumps(zones, timeout=60):
    last = []

    def same():
        last[:] = [z.dump() for z in zones]
        return all(d == last[0] for d in last)

    try:
        wait_until(same, timeout * SLOW, interval=0.3, what="identical dumps")
    except TimeoutError:
        raise AssertionError(f"dumps differ: {[len(d) for d in last]} rows") from None
    return last[0]


def test_an_instance_that_lost_its_data_is_repaired(parade):
    a1, a2, a3 = parade.zones
    for i in range(12):
        parade.zones[i % 3].put(f"lost-{i}", {"i": i})
    a1.delete("lost-0")
    before = same_dumps(parade.zones)
    assert len(before) >= 12
    # a3 loses every row of every shard (its own writes included), behind the API's back. Its
    # watermarks say it has pulled everything: only the digests can tell.
    for s in range(NSHARDS):
        a3.sql(s, "delete from kv.data")
    after = same_dumps(parade.zones)
    assert after == before  # versions and tombstones included
    assert a3.get("lost-1") == {"i": 1} and a3.get("lost-0") is None
    log = a3.tusk.wait_log("rows repaired")  # the logger thread writes after the repair
    assert "kv anti-entropy kv_shard_" in log, log[-3000:]


# Three PostgreSQL set up in the fixture plus one more here: slow under ASan on a busy machine.
@pytest.mark.timeout(600)
def test_a_new_instance_is_bootstrapped_live_with_rows_of_a_removed_origin(parade):
    a1, a2, a3 = parade.zones
    for i in range(8):
        a3.put(f"from-a3-{i}", i)  # their origin, a3, is about to leave
    same_dumps(parade.zones)
    with a1.pg.admin("kv_catalog") as c:
        c.execute("delete from kv_catalog.instances where id = %s", (a3.id,))
        c.execute("delete from kv_catalog.zones where name = %s", (a3.name,))
        c.execute("select kv_catalog.bump()")
    a1.kv("push", check=False)  # a3 gets it too; it leaves right after
    assert a3.stop_tusk() == []
    a3.pg.stop()
    a4 = parade.add_zone("a4")
    a4.write_config(anti_entropy_interval="1s")
    with a1.pg.admin("kv_catalog") as c:
        c.execute("insert into kv_catalog.zones values ('a4')")
        c.execute("insert into kv_catalog.instances values (%s, 'a4', '127.0.0.1', %s)", (a4.id, a4.pg.port))
        c.execute("select kv_catalog.bump()")
    a1.kv("push")
    a4.kv("init")
    a4.start_tusk()
    # a1 and a2 follow the push without a restart; a4 pulls a1 and a2 from W = 0, and the rows
    # whose latest version came from a3 can only come by anti-entropy.
    for z in (a1, a2):
        wait_until(lambda: "catalog version 3: 4 replication links (2 kept, 2 started, 0 stopped)" in z.tusk.log_text(), 20 * SLOW,
                   what=f"{z.name} following the catalog with a4")
    dump = same_dumps([a1, a2, a4])
    assert sum(1 for r in dump if r[1].startswith("from-a3-") and r[4] == a3.id) == 8
    assert a4.get("from-a3-5") == 5

