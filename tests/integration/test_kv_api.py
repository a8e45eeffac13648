"""The kv API beyond put/get (docs/kv.md): the shard function at C speed and the same on every
path, conditional writes (KV001), get_meta, touch, put_many / delete_many, scan and count, and
counters that converge across zones. Two zones, each with its tusk; calls both on the shard
databases and through tusk's kv database."""

import json
import random
import threading
import time

import psycopg
import pytest
from psycopg.types.json import Jsonb

from conftest import SLOW, TUSK_BIN, run, wait_until
from kv_util import NSHARDS, running_parade

pytestmark = pytest.mark.tusk_only


@pytest.fixture(scope="module")
def parade(workdir):
    yield from running_parade(workdir / "kv-api", ["a", "b"])


def kv_conn(zone):
    return psycopg.connect(host="127.0.0.1", port=zone.tusk.port, user="postgres", dbname="kv",
                           autocommit=True, connect_timeout=10)


def one(zone, sql, params=None):
    with kv_conn(zone) as c:
        return c.execute(sql, params).fetchone()[0]


def holders(zone, key, ns="default"):
    return [s for s in range(NSHARDS) if zone.sql(s, "select 1 from kv.data where ns = %s and key = %s", (ns, key))]


def placement(zone, keys, ns="default"):
    """{key: [shards holding it]} for keys, one query per shard."""
    out = {k: [] for k in keys}
    for s in range(NSHARDS):
        for (k,) in zone.sql(s, "select key from kv.data where ns = %s and key = any(%s)", (ns, keys)):
            out[k].append(s)
    return out


# ---- 1. the shard function ----

def test_shard_check_is_a_builtin_not_plpgsql_hash(parade):
    """The issue's 12 puts/s: every call ran XXH32 in PL/pgSQL (kv._check -> kv.shard_of ->
    kv.hash). Now kv.hash is SQL over the built-in hashtextextended: 50,000 shard checks take
    well under a second (the PL/pgSQL hash took ~1-2 ms each)."""
    z = parade.zones[0]
    assert z.sql(0, "select l.lanname from pg_proc p join pg_language l on l.oid = p.prolang "
                    "join pg_namespace n on n.oid = p.pronamespace where nspname = 'kv' and proname in "
                    "('hash', 'shard_of') order by proname") == [("sql",), ("sql",)]
    t0 = time.monotonic()
    n = z.sql(0, "select count(*) from generate_series(1, 50000) g where kv.shard_of('default', 'k' || g, 2) = 0")
    took = time.monotonic() - t0
    assert 20000 < n[0][0] < 30000
    assert took < 5 * SLOW, f"50,000 shard checks took {took:.1f} s"


def sample_keys():
    rnd = random.Random(25)
    keys = [f"k{i}" for i in range(40)] + ["", "a:b", ":", "ключ-ü-€", "x" * 1024, "tab\tnew\nline", "quote\"'\\"]
    # Every tail length of lookup3's 12-byte blocks, and random code points.
    keys += ["y" * n for n in range(1, 30)]
    keys += ["".join(chr(rnd.choice([rnd.randint(32, 126), rnd.randint(0xa0, 0x7ff), rnd.randint(0x800, 0xd7ff),
                                     rnd.randint(0x10000, 0x10ffff)])) for _ in range(rnd.randint(1, 40)))
             for _ in range(80)]
    return [k for k in keys if k]


def test_hash_of_tusk_equals_the_shard_databases(parade):
    """tusk's C hash and the shard databases' SQL one agree on every sample key (tails of every
    length, multibyte UTF-8, the separator inside the key)."""
    z = parade.zones[0]
    keys = sample_keys()[::4]
    for ns in ("default", "short"):
        sql = dict(z.sql(0, "select k, kv.hash(%s, k) from unnest(%s::text[]) k", (ns, keys)))
        lines = run([str(TUSK_BIN), "kv", "shard", "7", ns, *keys]).stdout.splitlines()  # a line a key
        assert len(lines) == len(keys)
        for k, line in zip(keys, lines):
            shard, h = line.split()
            assert int(h) == sql[k], (ns, k)
            assert int(h) == z.sql(0, "select hashtextextended(%s || ':' || %s, 0)", (ns, k))[0][0]


def test_a_key_lands_on_one_shard_whichever_path_wrote_it(parade):
    """Keys written through tusk's kv database (zone a), directly on the shard a client computed
    with SQL (zone a), and through zone b (arriving in zone a by replication): in both zones each
    key is on exactly the shard tusk computes, and a write to another shard is refused."""
    a, b = parade.zones
    keys = sample_keys()
    via_tusk, direct, via_b = keys[0::3], keys[1::3], keys[2::3]
    with kv_conn(a) as c:
        for k in via_tusk:
            c.execute("select kv.put('default', %s, %s)", (k, Jsonb({"p": "tusk"})))
    conns = {s: a.db(s) for s in range(NSHARDS)}
    with a.pg.admin("kv_catalog") as cat:
        for k in direct:
            s = cat.execute("select kv.shard_of('default', %s, %s)", (k, NSHARDS)).fetchone()[0]
            conns[s].execute("select kv.put('default', %s, %s)", (k, Jsonb({"p": "direct"})))
            with pytest.raises(psycopg.Error) as e:
                conns[1 - s].execute("select kv.put('default', %s, '1')", (k,))
            assert e.value.sqlstate == "22023" and "belongs to shard" in str(e.value)
    for c in conns.values():
        c.close()
    with kv_conn(b) as c:
        for k in via_b:
            c.execute("select kv.put('default', %s, %s)", (k, Jsonb({"p": "b"})))
    want = {k: [s] for k, s in zip(keys, parade.shards_of("default", keys))}
    assert set(s for (s,) in want.values()) == set(range(NSHARDS))
    for z in parade.zones:
        wait_until(lambda: all(placement(z, keys).values()), 20 * SLOW, what=f"every key in zone {z.name}")
        assert placement(z, keys) == want, z.name


# ---- 2. optimistic concurrency ----

def test_conditional_put_and_delete_by_version(parade):
    a = parade.zones[0]
    with kv_conn(a) as c:
        v1 = c.execute("select kv.put_if_absent('default', 'cas-1', %s)", (Jsonb({"n": 1}),)).fetchone()[0]
        with pytest.raises(psycopg.Error) as e:
            c.execute("select kv.put_if_absent('default', 'cas-1', '2')")
        assert e.value.sqlstate == "KV001" and f"current version {v1}" in e.value.diag.message_detail
        meta = c.execute("select kv.get_meta('default', 'cas-1')").fetchone()[0]
        assert meta["value"] == {"n": 1} and meta["version"] == v1 and meta["origin"] == a.id
        assert meta["expires_at"] is None
        v2 = c.execute("select kv.put_if_version('default', 'cas-1', %s, %s)", (Jsonb({"n": 2}), v1)).fetchone()[0]
        assert v2 > v1
        with pytest.raises(psycopg.Error) as e:  # the old version lost
            c.execute("select kv.put_if_version('default', 'cas-1', '3', %s)", (v1,))
        assert e.value.sqlstate == "KV001"
        with pytest.raises(psycopg.Error) as e:
            c.execute("select kv.delete_if_version('default', 'cas-1', %s)", (v1,))
        assert e.value.sqlstate == "KV001"
        assert c.execute("select kv.get('default', 'cas-1')").fetchone()[0] == {"n": 2}
        v3 = c.execute("select kv.delete_if_version('default', 'cas-1', %s)", (v2,)).fetchone()[0]
        assert v3 > v2 and c.execute("select kv.get_meta('default', 'cas-1')").fetchone()[0] is None
        with pytest.raises(psycopg.Error) as e:  # absent: no version matches
            c.execute("select kv.put_if_version('default', 'cas-1', '3', %s)", (v3,))
        assert e.value.sqlstate == "KV001" and "absent" in e.value.diag.message_detail
        # A deleted key is absent: put_if_absent takes it again.
        assert c.execute("select kv.put_if_absent('default', 'cas-1', '4', '1 hour'::interval)").fetchone()[0] > v3
        meta = c.execute("select kv.get_meta('default', 'cas-1')").fetchone()[0]
        assert meta["value"] == 4 and meta["expires_at"] is not None


def test_concurrent_conditional_puts_exactly_one_wins(parade):
    """8 clients read the same version and each tries put_if_version: exactly one succeeds, the
    others get KV001; repeated 10 times."""
    a = parade.zones[0]
    one(a, "select kv.put('default', 'cas-race', '0')")
    for rnd in range(10):
        version = one(a, "select kv.get_meta('default', 'cas-race')")["version"]
        barrier = threading.Barrier(8)
        results = []

        def client(i):
            with kv_conn(a) as c:
                barrier.wait()
                try:
                    c.execute("select kv.put_if_version('default', 'cas-race', %s, %s)", (Jsonb(i), version))
                    results.append("won")
                except psycopg.Error as e:
                    results.append(e.sqlstate)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == ["KV001"] * 7 + ["won"], (rnd, results)


def test_touch_refreshes_the_ttl_and_replicates(parade):
    a, b = parade.zones
    with kv_conn(a) as c:
        c.execute("select kv.put('default', 'touch-1', '1', '2 seconds'::interval)")
        v = c.execute("select kv.touch('default', 'touch-1', '1 hour'::interval)").fetchone()[0]
        assert v > 0
        assert c.execute("select kv.touch('default', 'touch-absent', '1 hour'::interval)").fetchone()[0] is None
    time.sleep(2.5)
    assert one(a, "select kv.get('default', 'touch-1')") == 1
    wait_until(lambda: (one(b, "select kv.get_meta('default', 'touch-1')") or {}).get("version") == v,
               20 * SLOW, what="touch replicated")
    assert one(b, "select kv.get('default', 'touch-1')") == 1
    # kv.expire: kv.touch under a condition on the expiry the key has (Redis's EXPIRE ... GT)
    with kv_conn(a) as c:
        ex = "select kv.expire('default', %s, %s::interval, %s)"
        assert c.execute(ex, ("touch-1", "10 minutes", "gt")).fetchone()[0] is None  # below 1 hour
        assert c.execute(ex, ("touch-1", "10 minutes", "nx")).fetchone()[0] is None  # it has one
        assert c.execute(ex, ("touch-absent", "10 minutes", "lt")).fetchone()[0] is None
        v2 = c.execute(ex, ("touch-1", "2 hours", "xx")).fetchone()[0]
        assert v2 > v
        with pytest.raises(psycopg.Error) as e:
            c.execute(ex, ("touch-1", "2 hours", "ge"))
        assert e.value.sqlstate == "22023"
    wait_until(lambda: (one(b, "select kv.get_meta('default', 'touch-1')") or {}).get("version") == v2,
               20 * SLOW, what="expire replicated")


# ---- 3. batches ----

def test_put_many_and_delete_many_split_by_shard(parade):
    a, b = parade.zones
    keys = [f"batch-{i}" for i in range(50)]
    vals = [json.dumps({"i": i}) for i in range(50)]
    assert set(parade.shards_of("default", keys)) == set(range(NSHARDS))
    with kv_conn(a) as c:
        assert c.execute("select kv.put_many('default', %s, %s)", (keys, vals)).fetchone()[0] == 50
        assert c.execute("select kv.put_many('default', %s::text[], %s::text[], '1 hour'::interval)",
                         (keys[:2], vals[:2])).fetchone()[0] == 2
        rows = c.execute("select * from kv.get_many('default', %s)", (keys,)).fetchall()
        assert rows == sorted((k, {"i": int(k.split("-")[1])}) for k in keys)
        with pytest.raises(psycopg.Error) as e:
            c.execute("select kv.put_many('default', %s, %s)", (keys[:3], vals[:2]))
        assert e.value.sqlstate == "22023"
        assert c.execute("select kv.delete_many('default', %s)", (keys[10:],)).fetchone()[0] == 40
    assert placement(a, keys) == {k: [s] for k, s in zip(keys, parade.shards_of("default", keys))}
    wait_until(lambda: len(b.sql(0, "select 1") or []) and
               sum(len(b.sql(s, "select key from kv.data where key like 'batch-%%' and value is not null"))
                   for s in range(NSHARDS)) == 10, 20 * SLOW, what="batches replicated")


# ---- 4. scan and count ----

def test_scan_with_limit_and_continuation_merges_shards_in_key_order(parade):
    a = parade.zones[0]
    keys = [f"scan/{i:03d}" for i in range(37)]
    with kv_conn(a) as c:
        c.execute("select kv.put_many('default', %s, %s)", (keys, [str(i) for i in range(37)]))
        c.execute("select kv.put('default', 'scan0', '1')")  # not in the prefix
        c.execute("select kv.delete('default', 'scan/005')")
        # A counter is listed under its own key (as Redis's SCAN lists INCR's keys), with its
        # value; its parts' keys (key 0x1F origin) are not. 'scan/counter' sorts before
        # 'scan/counter\x01x', though its parts' keys sort after it: the merge is by base key.
        c.execute("select kv.incr('default', 'scan/counter', 1)")
        c.execute("select kv.put('default', %s, '2')", ("scan/counter\x01x",))
        c.execute("select kv.incr('default', 'scan/both', 5)")  # the put below replaces the counter
        c.execute("select kv.put('default', 'scan/both', '\"v\"')")
        c.execute("select kv.incr('default', 'scan/zero', 3)")
        c.execute("select kv.incr('default', 'scan/zero', -3)")  # at 0: it exists
        c.execute("select kv.incr('default', 'scan/gone', 1)")
        c.execute("select kv.delete('default', 'scan/gone')")  # reset: absent
        seen, after = [], None
        while True:
            rows = c.execute("select * from kv.scan('default', 'scan/', %s, 10)", (after,)).fetchall()
            seen += rows
            if len(rows) < 10:
                break
            after = rows[-1][0]
        want = sorted([k for k in keys if k != "scan/005"] + ["scan/counter", "scan/counter\x01x", "scan/both",
                                                              "scan/zero"])
        assert [k for k, _ in seen] == want
        assert seen[0][1] == 0
        got = dict(seen)
        assert (got["scan/counter"], got["scan/counter\x01x"], got["scan/both"], got["scan/zero"]) == (1, 2, "v", 0)
        assert c.execute("select kv.count('default', 'scan/')").fetchone()[0] == 40
        assert c.execute("select kv.count('default', 'scan/c')").fetchone()[0] == 2
        # A page boundary between a counter and the next key: continued from the counter's key.
        assert c.execute("select * from kv.scan('default', 'scan/', 'scan/both', 2)").fetchall() == \
            [("scan/counter", 1), ("scan/counter\x01x", 2)]
        assert c.execute("select kv.count('default', '')").fetchone()[0] >= 37
    # Both shards held part of the page: the merge, not one shard, ordered it.
    assert set(parade.shards_of("default", want[:10])) == set(range(NSHARDS))


# ---- 5. counters ----

def shard_calls(parade, key):
    """call(zone, sql, *args) with key as the first parameter, and counter(zone), on the key's
    shard as kv_client (the zones may be cut apart)."""
    s = parade.shard_of("default", key)

    def call(z, sql, *args):
        with z.db(s) as c:
            return c.execute(sql, (key, *args)).fetchone()[0]

    def counter(z):
        return call(z, "select kv.counter('default', %s)")

    return call, counter


def test_counters_converge_across_zones_during_a_partition(parade):
    """The issue's lost increments: 2 zones x 4 writers x N increments while the zones cannot
    pull from each other (both tusks stopped: no replication), all acknowledged, then healed:
    both zones read exactly 2 x 4 x N (last-writer-wins on one row kept only one zone's)."""
    n = 100
    for z in parade.zones:
        assert z.stop_tusk() == []
    errors = []

    def writer(z, j):
        try:
            with z.db(parade.shard_of("default", "hits")) as c:
                for i in range(n):
                    c.execute("select kv.incr('default', 'hits', %s)", (1 if (i + j) % 5 else 3,))
                    c.execute("select kv.incr('default', 'hits', -2)") if (i + j) % 5 == 0 else None
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(z, j)) for z in parade.zones for j in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for z in parade.zones:
        assert z.sql(parade.shard_of("default", "hits"), "select kv.counter('default', 'hits')")[0][0] == 4 * n
    parade.start()
    for z in parade.zones:
        wait_until(lambda: one(z, "select kv.counter('default', 'hits')") == 2 * 4 * n, 30 * SLOW,
                   what=f"counter converged in zone {z.name}")
    with kv_conn(parade.zones[0]) as c:
        assert c.execute("select kv.incr('default', 'hits', %s)", (5,)).fetchone()[0] == 2 * 4 * n + 5
    wait_until(lambda: one(parade.zones[1], "select kv.counter('default', 'hits')") == 2 * 4 * n + 5, 20 * SLOW,
               what="increment replicated")
    parade.converge()


def test_a_delete_resets_a_counter_and_keeps_increments_it_did_not_see(parade):
    """kv.delete resets the key's counter in its zone at once, and everywhere once replicated;
    an increment another zone made meanwhile (not seen by the reset: a partition) survives it,
    and resets in both zones, each having seen a different part, converge to what both saw."""
    a, b = parade.zones
    key = "resettable"
    call, counter = shard_calls(parade, key)

    call(a, "select kv.incr('default', %s, %s)", 3)
    call(b, "select kv.incr('default', %s, %s)", 4)
    for z in (a, b):
        wait_until(lambda: counter(z) == 7, 20 * SLOW, what=f"7 in zone {z.name}")
    for z in parade.zones:  # the partition: no replication
        assert z.stop_tusk() == []
    try:
        assert call(a, "select kv.delete_many('default', ARRAY[%s, 'never-written'])") == 1  # existed: a counter
        assert call(b, "select kv.incr('default', %s, %s)", 10) == 17
        assert counter(a) == 0 and counter(b) == 17
    finally:
        parade.start()
    # a's reset removed the 7 it had seen; b's 10, made meanwhile, stays.
    for z in (a, b):
        wait_until(lambda: counter(z) == 10, 30 * SLOW, what=f"10 in zone {z.name}")
    for z in parade.zones:
        assert z.stop_tusk() == []
    try:
        assert call(a, "select kv.incr('default', %s, %s)", 5) == 15
        call(b, "select kv.delete('default', %s)")  # b has not seen a's 5
        call(a, "select kv.delete('default', %s)")  # a has
        assert counter(a) == 0 and counter(b) == 0
    finally:
        parade.start()
    for z in (a, b):
        wait_until(lambda: counter(z) == 0, 30 * SLOW, what=f"0 in zone {z.name}")
    parade.converge()  # identical rows, baselines and versions included
    with kv_conn(a) as c:
        assert c.execute("select kv.incr('default', %s, 2)", (key,)).fetchone()[0] == 2
        assert c.execute("select kv.get('default', %s)", (key,)).fetchone()[0] is None
        assert c.execute("select kv.read('default', %s)", (key,)).fetchone()[0] == 2  # Redis's GET: the counter
    wait_until(lambda: counter(b) == 2, 20 * SLOW, what="the increment after the resets replicated")


def test_an_expired_counter_converges_and_keeps_the_increments_made_after_its_expiry(parade):
    """INCR + EXPIRE across zones: the expiry (set in zone a, replicated) fires in both zones
    during a partition; each zone's increments after it count from 0 (its part restarts), those
    before it are gone; after healing both zones read exactly the increments made after the
    expiry, and hold identical rows."""
    a, b = parade.zones
    key = "window"
    call, counter = shard_calls(parade, key)

    assert call(a, "select kv.incr('default', %s, %s)", 3) == 3
    call(b, "select kv.incr('default', %s, %s)", 4)
    for z in (a, b):
        wait_until(lambda: counter(z) == 7, 20 * SLOW, what=f"7 in zone {z.name}")
    assert call(a, "select kv.touch('default', %s, %s::interval)", "2 seconds") is not None
    wait_until(lambda: (call(b, "select kv.read_meta('default', %s)") or {}).get("expires_at"), 20 * SLOW,
               what="the expiry replicated to zone b")
    for z in parade.zones:  # the partition: no replication
        assert z.stop_tusk() == []
    try:
        wait_until(lambda: counter(a) == 0 and counter(b) == 0, 10 * SLOW, interval=0.1,
                   what="the expiry fired in both zones")
        assert call(a, "select kv.read('default', %s)") is None and call(b, "select kv.read_meta('default', %s)") is None
        assert call(a, "select kv.incr('default', %s, %s)", 2) == 2  # a's part restarts
        assert call(b, "select kv.incr('default', %s, %s)", 5) == 5
        assert call(b, "select kv.incr('default', %s, %s)", 1) == 6
    finally:
        parade.start()
    for z in (a, b):
        wait_until(lambda: counter(z) == 8, 30 * SLOW, what=f"8 in zone {z.name}")
    parade.converge()
    assert (call(a, "select kv.read_meta('default', %s)") or {}).get("expires_at") is None  # a new counter: no expiry


def test_a_counter_part_of_another_origin_is_refused(parade):
    """Only its origin writes a counter's part: a client cannot write the 0x1F keys, and a pulled
    part whose suffix is not its origin is poison."""
    a = parade.zones[0]
    with kv_conn(a) as c, pytest.raises(psycopg.Error) as e:
        c.execute("select kv.put('default', %s, '1')", ("hits\x1f2",))
    assert e.value.sqlstate == "22023"
    s = parade.shard_of("default", "hits")
    with pytest.raises(psycopg.Error) as e:
        a.sql(s, "select kv._check_pulled(%s::jsonb, 2)",
              (json.dumps({"ns": "default", "key": "hits\x1f1", "value": 5, "ver_ts": 1, "origin": 2}),))
    assert "does not belong to origin" in str(e.value)
    # A reset's baseline (key 0x1F part's origin 0x1F r) comes from any origin, but only as a number.
    base = {"ns": "default", "key": "hits\x1f1\x1fr", "ver_ts": 1, "origin": 2}
    assert a.sql(s, "select (kv._check_pulled(%s::jsonb, 2)).key", (json.dumps({**base, "value": 5}),)) \
        == [("hits\x1f1\x1fr",)]
    for bad in ({**base, "value": "5"}, {**base, "key": "hits\x1fx\x1fr", "value": 5}):
        with pytest.raises(psycopg.Error):
            a.sql(s, "select kv._check_pulled(%s::jsonb, 2)", (json.dumps(bad),))


def test_kv_calls_stay_index_lookups_on_a_large_analyzed_shard(parade):
    """The kv functions run on generic plans (docs/kv.md, "Speed", fifteenth step), chosen once
    against the table's statistics. A DEL's counter reset joined the keys with their parts' key
    ranges, and once kv.data held tens of thousands of analyzed rows that plan was a scan of the
    whole namespace at every DEL once most rows were tombstones (deletes keep them until the
    purge): 7.5 ms at 690,000 rows, 0.1 ms before. On a shard given 60,000 more rows, nine in ten
    tombstones, and analyzed, in a transaction rolled back at the end, no kv call reads kv.data
    sequentially: each is index lookups whatever the table's size."""
    z = parade.zones[0]
    s = 0
    keys = parade.keys_on(s, 4, "big")
    a, b, c, d = keys
    calls = [("select kv.put('default', %s, '1')", (a,)), ("select kv.get('default', %s)", (a,)),
             ("select kv.put_many('default', %s, array['1', '{\"n\": 2}'])", ([a, b],)),
             ("select kv.patch('default', %s, '{\"m\": 1}')", (b,)),
             ("select kv.touch('default', %s, '1 hour')", (a,)),
             ("select kv.incr('default', %s, 2)", (c,)), ("select kv.counter('default', %s)", (c,)),
             ("select kv.read('default', %s)", (d,)), ("select count(*) from kv.read_many('default', %s)", ([a, c, d],)),
             ("select count(*) from kv.get_many('default', %s)", ([a, b, d],)),
             ("select kv.delete('default', %s)", (c,)), ("select kv.incr('default', %s, 1)", (c,)),
             ("select kv.delete_many('default', %s)", ([a, b, d],)),
             ("select kv.delete_many('default', %s)", ([a, b, c, d],))]
    with psycopg.connect(host="127.0.0.1", port=z.pg.port, user="postgres", dbname=f"kv_shard_{s}",
                         connect_timeout=10) as conn, conn.transaction(force_rollback=True):
        conn.execute("insert into kv.data (ns, key, value, ver_ts, origin) select 'default', 'bulk' || g, "
                     "case when g %% 10 = 0 then '1'::jsonb end, 1, %s from generate_series(1, 60000) g", (z.id,))
        conn.execute("analyze kv.data")
        before = conn.execute("select seq_scan, idx_scan from pg_stat_xact_user_tables "
                              "where relid = 'kv.data'::regclass").fetchone()
        for _ in range(3):
            for sql, params in calls:
                conn.execute(sql, params).fetchall()
        seq, idx = conn.execute("select seq_scan, idx_scan from pg_stat_xact_user_tables "
                                "where relid = 'kv.data'::regclass").fetchone()
    assert (seq - before[0], idx - before[1] > 0) == (0, True)
