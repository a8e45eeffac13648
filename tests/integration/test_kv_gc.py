"""The purge of tombstones, expired rows and expired counters (docs/kv.md, "Purge"): only below
the horizon every current instance acknowledged, and past the grace; not while a peer lags; a
removed peer stops counting; a purged key is not resurrected by a late write. Three zones,
gc_grace 2 s. Also kv.pull_interval (g2's is 500 ms), which this parade's config shares, and
what idle links write."""

import re
import time

import pytest

from conftest import SLOW, wait_until
from kv_util import NSHARDS, running_parade, show_kv

pytestmark = pytest.mark.tusk_only

GRACE = 2.0
PULL = 0.5


@pytest.fixture(scope="module")
def parade(workdir):
    # Small batches, so a purge of a few rows takes several throttled statements. g2 pulls
    # every PULL seconds while a peer writes (test_pull_interval_spaces_a_links_passes).
    yield from running_parade(workdir / "kv-gc", ["g1", "g2", "g3"], lambda z: dict(
        gc_grace=f"{int(GRACE)}s", gc_interval="200ms", gc_batch=2, gc_pause="20ms",
        pull_interval=f"{int(PULL * 1000)}ms" if z.name == "g2" else None))


def rows(zone, key):
    return zone.sql(zone.parade.shard_of("default", key),
                    "select value, ver_ts, origin from kv.data where ns = 'default' and key = %s", (key,))


def wait_rows(zones, key, pred, what, timeout=30):
    for z in zones:
        wait_until(lambda: pred(rows(z, key)), timeout * SLOW, interval=0.1, what=f"{what} on {z.name}")


def test_tombstones_are_kept_through_the_grace_then_purged_everywhere(parade):
    z1, z2, z3 = parade.zones
    keys = parade.keys_on(0, 5, "tomb-")
    for k in keys:
        z1.put(k, "doomed")
    for k in keys:
        wait_rows(parade.zones, k, lambda r: len(r) == 1 and r[0][0] == "doomed", "the put")
    t0 = time.monotonic()
    for k in keys:
        z2.delete(k)
    for k in keys:
        wait_rows(parade.zones, k, lambda r: len(r) == 1 and r[0][0] is None, "the tombstone", timeout=10)
    if time.monotonic() - t0 < GRACE * 0.8:
        # Inside the grace the tombstones are all still there, everywhere.
        assert all(len(rows(z, k)) == 1 for z in parade.zones for k in keys)
    for k in keys:
        wait_rows(parade.zones, k, lambda r: r == [], "the purge", timeout=30)
    assert time.monotonic() - t0 >= GRACE
    for z in parade.zones:
        assert all(z.get(k) is None for k in keys)
        # 5 rows in batches of 2: more than one statement, each logged round sums them.
        def purged(z=z):
            return sum(int(n) for n in re.findall(r"kv gc kv_shard_0 \(instance \d+\): purged (\d+)", z.tusk.log_text()))
        # (the logger thread writes a round's line after the round)
        try:
            wait_until(lambda: purged() >= 5, 5 * SLOW, what="the purge's log lines")
        except TimeoutError:
            raise AssertionError((purged(), z.tusk.log_tail())) from None


def test_gc_waits_for_a_lagging_peer(parade):
    z1, z2, z3 = parade.zones
    k = parade.key_on(1, "lag-")
    z1.put(k, "v")
    wait_rows(parade.zones, k, lambda r: len(r) == 1, "the put")
    assert z3.stop_tusk() == []  # z3 stops pulling: it never acknowledges the delete
    try:
        z1.delete(k)
        wait_rows([z1, z2], k, lambda r: len(r) == 1 and r[0][0] is None, "the tombstone")
        time.sleep(3 * GRACE * SLOW)
        for z in (z1, z2):
            assert len(rows(z, k)) == 1, f"{z.name} purged a tombstone g3 has not seen"
        assert rows(z3, k)[0][0] == "v"  # g3 still holds the live value
    finally:
        z3.start_tusk()
    wait_rows(parade.zones, k, lambda r: r == [], "the purge once g3 caught up", timeout=40)


def test_expired_row_is_purged_and_a_late_write_does_not_resurrect_it(parade):
    z1, z2, z3 = parade.zones
    k = parade.key_on(0, "exp-")
    z1.put(k, "old, no ttl")
    wait_rows(parade.zones, k, lambda r: len(r) == 1, "the first put")
    z2.put(k, "short-lived", ttl="1 second")
    wait_rows(parade.zones, k, lambda r: len(r) == 1 and r[0][0] == "short-lived", "the ttl put", timeout=10)
    ver = rows(z2, k)[0][1]
    # Hidden at once when it expires, before any purge.
    wait_until(lambda: all(z.get(k) is None for z in parade.zones), 10 * SLOW, what="expiry hides the row")
    wait_rows(parade.zones, k, lambda r: r == [], "the purge of the expired row", timeout=30)
    # A late write of g1, older than the purged version, written behind the API as a stranded
    # or replayed row would arrive: it must not bring the key back on g2 and g3.
    z1.sql(0, "insert into kv.data (ns, key, value, ver_ts, origin) values ('default', %s, '\"late\"', %s, %s)",
           (k, ver - 1, z1.id))
    for z in (z2, z3):
        wait_until(lambda: z.sql(0, "select count(*) from kv.quarantine where key = %s and reason like %s",
                                 (k, "%GC horizon%"))[0][0] == 1,
                   20 * SLOW, what=f"the late write quarantined on {z.name}")
        assert rows(z, k) == [] and z.get(k) is None
    # A write made now is newer than the horizon and flows as usual.
    z1.sql(0, "delete from kv.data where key = %s", (k,))
    z3.put(k, "new life")
    wait_rows(parade.zones, k, lambda r: len(r) == 1 and r[0][0] == "new life", "a new write")


def test_an_expired_counter_is_purged_everywhere_and_a_new_one_starts_at_the_delta(parade):
    """A counter whose expiry fired and that nobody incremented since counts 0 for good: its
    rows (parts, the expiry rows) are purged in every zone once past the grace, and an INCR
    afterwards starts a new counter at its delta in every zone."""
    z1, z2, z3 = parade.zones
    key = parade.key_on(1, "ctr-")
    s = parade.shard_of("default", key)

    def counter_rows(z):
        return z.sql(s, "select key from kv.data where ns = 'default' and key > %s and key < %s",
                     (key + "\x1f", key + "\x20"))

    def call(z, sql, *args):
        with z.db(s) as c:
            return c.execute(sql, (key, *args)).fetchone()[0]

    call(z1, "select kv.incr('default', %s, 3)")
    call(z2, "select kv.incr('default', %s, 4)")
    call(z1, "select kv.touch('default', %s, '1 second'::interval)")
    for z in parade.zones:
        wait_until(lambda: len(counter_rows(z)) == 3, 20 * SLOW, interval=0.1, what=f"parts and expiry on {z.name}")
    wait_until(lambda: all(call(z, "select kv.counter('default', %s)") == 0 for z in parade.zones), 10 * SLOW,
               interval=0.1, what="the expiry fired")
    t0 = time.monotonic()
    for z in parade.zones:
        wait_until(lambda: counter_rows(z) == [], 60 * SLOW, interval=0.2, what=f"the counter purged on {z.name}")
    assert time.monotonic() - t0 >= GRACE - 1.2  # not before the grace (its expiry fired ~1 s after it was set)
    assert call(z3, "select kv.incr('default', %s, 2)") == 2
    for z in parade.zones:
        wait_until(lambda: call(z, "select kv.counter('default', %s)") == 2, 20 * SLOW, what=f"2 on {z.name}")
    assert all(z.sql(s, "select count(*) from kv.quarantine") == [(0,)] for z in parade.zones)



def test_live_counters_with_a_reset_part_are_kept_and_purged_after_their_reset(parade):
    """A counter one of whose parts was reset (a DEL's baseline: a marker row the purge visits)
    while another zone's part has none is live: the purge keeps its rows however old they are,
    at 4 and at 0 too (Redis's INCR then DECR leaves "0": it exists; the purge once took such a
    part without a baseline for one that counts 0, and purged a counter at 4). A DEL makes it
    absent; then its rows are purged in every zone after the grace."""
    z1, z2, z3 = parade.zones
    keys = {0: parade.key_on(0, "zero-"), 4: parade.key_on(1, "four-")}

    def counter_rows(z, key):
        return z.sql(parade.shard_of("default", key), "select key from kv.data where ns = 'default' and key > %s "
                     "and key < %s", (key + "\x1f", key + "\x20"))

    def call(z, sql, key):
        with z.db(parade.shard_of("default", key)) as c:
            return c.execute(sql, (key,)).fetchone()[0]

    for n, key in keys.items():
        call(z1, "select kv.incr('default', %s, 5)", key)
        call(z1, "select kv.delete('default', %s)", key)  # a baseline of z1's part: a marker row
        call(z2, "select kv.incr('default', %s, 2)", key)
        call(z2, f"select kv.incr('default', %s, {n - 2})", key)
    for n, key in keys.items():
        for z in parade.zones:
            # the rows come with the first writes; z2's second increment may replicate later
            wait_until(lambda: len(counter_rows(z, key)) == 3 and call(z, "select kv.read('default', %s)", key) == n,
                       20 * SLOW, interval=0.1, what=f"parts and baseline of {key} on {z.name}, counting {n}")
    time.sleep(3 * GRACE)  # past the grace: purge rounds (every 200 ms) visit them
    for n, key in keys.items():
        for z in parade.zones:
            assert len(counter_rows(z, key)) == 3, (key, z.name)
            assert call(z, "select kv.read('default', %s)", key) == n
            assert call(z, "select kv.read_meta('default', %s)", key) == {"counter": n, "expires_at": None}
        call(z3, "select kv.delete('default', %s)", key)
    for key in keys.values():
        for z in parade.zones:
            wait_until(lambda: call(z, "select kv.read('default', %s)", key) is None, 20 * SLOW, interval=0.1,
                       what=f"the reset of {key} on {z.name}")
        for z in parade.zones:
            wait_until(lambda: counter_rows(z, key) == [], 60 * SLOW, interval=0.2,
                       what=f"{key} purged on {z.name}")
    for key in keys.values():
        assert all(z.sql(parade.shard_of("default", key), "select count(*) from kv.quarantine where key like %s",
                         (key + "%",)) == [(0,)] for z in parade.zones)



def test_pull_interval_spaces_a_links_passes(parade):
    """kv.pull_interval: while g1 writes steadily, g2 (PULL) passes on each link from g1 at most
    about once per PULL, g3 (the default, 50 ms) more often; every write reaches both."""
    z1, z2, z3 = parade.zones

    def passes(z):
        return sum(r["passes"] for r in show_kv(z) if r["peer"] == z1.id)

    keys = [parade.key_on(s, "paced-") for s in range(NSHARDS)]
    p2, p3 = passes(z2), passes(z3)
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < 3:
        z1.put(keys[n % NSHARDS], n)
        n += 1
        time.sleep(0.02)
    d2, d3 = passes(z2) - p2, passes(z3) - p3
    elapsed = time.monotonic() - t0
    # Each pass of g2 waits PULL after it (a pass that found nothing waits as long or longer).
    assert d2 <= NSHARDS * (elapsed / PULL + 2), (d2, d3, elapsed)
    assert d3 > d2, (d2, d3)
    for i, k in enumerate(keys):
        last = max(j for j in range(n) if j % NSHARDS == i)
        wait_rows([z2, z3], k, lambda r, last=last: len(r) == 1 and r[0][0] == last, f"the last write of {k}")


def test_idle_links_write_twice_a_second_not_at_every_pass(parade):
    """With no writes anywhere, a link passes every 250 ms but writes its kv.links row only
    with the acknowledgements (W moved to xmin, then caught_up): about twice a second. It used
    to move W at every pass whose xmin had moved, and each such write moved the xmin its peers
    saw (so did this parade's purge, every 200 ms): five writes a second, forever."""
    z1, z2, z3 = parade.zones
    parade.converge()

    def updates(z):
        return sum(z.sql(s, "select n_tup_upd from pg_stat_user_tables where relid = 'kv.links'::regclass")[0][0]
                   for s in range(NSHARDS))

    # Statistics reach pg_stat_user_tables within a second of a transaction's end (PostgreSQL
    # 15): a window of 6 s holds 5-7 s of writes.
    window = 6.0
    before = {z.name: updates(z) for z in (z1, z3)}
    time.sleep(window)
    for z in (z1, z3):
        links = sum(z.sql(s, "select count(*) from kv.links")[0][0] for s in range(NSHARDS))
        rate = (updates(z) - before[z.name]) / links / window
        assert 0 < rate <= 3.2, (z.name, rate, links)


def test_a_removed_peer_does_not_block_gc(parade):
    """Runs last: g3 leaves the parade for good."""
    z1, z2, z3 = parade.zones
    k = parade.key_on(1, "removed-")
    z1.put(k, "v")
    wait_rows(parade.zones, k, lambda r: len(r) == 1, "the put")
    assert z3.stop_tusk() == []
    z3.pg.stop()
    z1.delete(k)
    wait_rows([z1, z2], k, lambda r: len(r) == 1 and r[0][0] is None, "the tombstone")
    time.sleep(2 * GRACE * SLOW)
    assert len(rows(z1, k)) == 1  # g3 still counts: nothing purged
    with z1.pg.admin("kv_catalog") as c:
        c.execute("delete from kv_catalog.instances where id = %s", (z3.id,))
        c.execute("delete from kv_catalog.zones where name = %s", (z3.name,))
        c.execute("select kv_catalog.bump()")
    out = z1.kv("push", check=False).stdout
    assert out.count("applied") >= 2, out
    # The catalog is read at start (reload is not built yet): restart the two tusks left.
    for z in (z1, z2):
        assert z.stop_tusk() == []
        z.start_tusk()
    for z in (z1, z2):
        wait_until(lambda: "2 replication links" in z.tusk.log_text(), 20 * SLOW, what="links without g3")
    wait_rows([z1, z2], k, lambda r: r == [], "the purge without g3", timeout=40)
