"""Calls through tusk's virtual kv database: routed to the shard of the key on the local zone's
instance, over the simple and the extended protocol, get_many split and merged, bad input and a
shard instance that is down (docs/kv.md, "Routing")."""

import datetime
import json
import subprocess
import threading

import psycopg
import pytest
from psycopg.types.json import Jsonb

from conftest import SLOW, wait_until
from kv_util import NSHARDS, Parade
from relay_util import Relay

pytestmark = pytest.mark.tusk_only


@pytest.fixture(scope="module")
def zone(workdir):
    p = Parade(workdir / "kv-route", ["r1"])
    p.setup(namespaces=(("default", None), ("short", "short"), ("flushme", None)))
    z = p.zones[0]
    z.start_tusk()
    yield z
    p.destroy()


def kv_conn(zone, **kw):
    return psycopg.connect(host="127.0.0.1", port=zone.tusk.port, user="postgres", dbname="kv",
                           autocommit=True, connect_timeout=10, **kw)


def psql(zone, sql):
    """Simple protocol, as an operator would type it."""
    return subprocess.run(["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p",
                           str(zone.tusk.port), "-U", "postgres", "-d", "kv", "-c", sql],
                          capture_output=True, text=True, timeout=30 * SLOW)


def stored(zone, key, ns="default"):
    """Which shard databases hold the key (read directly, not through tusk)."""
    return [s for s in range(NSHARDS)
            if zone.sql(s, "select 1 from kv.data where ns = %s and key = %s", (ns, key))]


def test_calls_over_the_simple_protocol_land_on_the_key_shard(zone):
    keys = [f"simple-{i}" for i in range(12)]
    for i, k in enumerate(keys):
        p = psql(zone, f"select kv.put('default', '{k}', '{{\"n\": {i}}}')")
        assert p.returncode == 0, p.stderr
        assert int(p.stdout.strip()) > 0  # the new version
    # Each key is in exactly the shard the hash names, and nowhere else.
    for k in keys:
        assert stored(zone, k) == [zone.parade.shard_of("default", k)], k
    assert set(zone.parade.shards_of("default", keys)) == set(range(NSHARDS))
    p = psql(zone, "select kv.get('default', 'simple-3')")
    assert p.returncode == 0 and json.loads(p.stdout) == {"n": 3}, p
    p = psql(zone, "select kv.patch('default', 'simple-3', '{\"n\": 4, \"m\": true}') as merged")
    assert p.returncode == 0 and json.loads(p.stdout) == {"n": 7, "m": True}, p
    p = psql(zone, "select kv.delete('default', 'simple-3')")
    assert p.returncode == 0, p.stderr
    p = psql(zone, "select kv.get('default', 'simple-3')")
    assert p.returncode == 0 and p.stdout.strip() == "", p


def test_extended_protocol_with_bound_parameters_text_and_binary(zone):
    with kv_conn(zone) as c:
        # %s: psycopg picks the format; %t text; %b binary (jsonb with its version byte, interval).
        v1 = c.execute("select kv.put(%s, %s, %s)", ("default", "ext-1", Jsonb({"a": [1, 2]}))).fetchone()[0]
        v2 = c.execute("select kv.put(%t, %t, %t)", ("default", "ext-2", Jsonb({"b": "x"}))).fetchone()[0]
        v3 = c.execute("select kv.put(%b, %b, %b, %b)",
                       ("default", "ext-3", Jsonb({"c": None}), datetime.timedelta(hours=1))).fetchone()[0]
        assert min(v1, v2, v3) > 0
        cur = c.execute("select kv.get(%s, %s) as v", ("default", "ext-1"))
        assert cur.description[0].name == "v" and cur.fetchone()[0] == {"a": [1, 2]}
        assert c.execute("select kv.get(%b, %b)", ("default", "ext-2")).fetchone()[0] == {"b": "x"}
        # A named prepared statement (prepare=True), reused as drivers do.
        for i in range(4):
            assert c.execute("select kv.patch(%s, %s, %s)", ("default", "ext-2", Jsonb({"n": 1})),
                             prepare=True).fetchone()[0] == {"b": "x", "n": 1 + i}
    # The ttl was bound in binary: the row expires about an hour from now.
    s = zone.parade.shard_of("default", "ext-3")
    left = zone.sql(s, "select extract(epoch from expires_at - now()) from kv.data where key = 'ext-3'")[0][0]
    assert 3500 < float(left) <= 3600


def test_get_many_is_split_by_shard_and_merged_in_key_order(zone):
    keys = [f"many-{i:02d}" for i in range(20)]
    with kv_conn(zone) as c:
        for k in keys:
            c.execute("select kv.put(%s, %s, %s)", ("default", k, Jsonb({"k": k})))
        assert set(zone.parade.shards_of("default", keys)) == set(range(NSHARDS))
        ask = list(reversed(keys)) + ["many-missing", keys[0]]
        for fmt in ("%s", "%t", "%b"):
            rows = c.execute(f"select * from kv.get_many(%s, {fmt})", ("default", ask)).fetchall()
            assert rows == [(k, {"k": k}) for k in keys], fmt
        cur = c.execute("select * from kv.get_many('default', ARRAY['many-05', 'many-01', 'nope'])")
        assert [d.name for d in cur.description] == ["key", "value"]
        assert cur.fetchall() == [("many-01", {"k": "many-01"}), ("many-05", {"k": "many-05"})]
        assert c.execute("select * from kv.get_many('default', '{many-07,\"many-02\"}')").fetchall() == [
            ("many-02", {"k": "many-02"}), ("many-07", {"k": "many-07"})]
        assert c.execute("select * from kv.get_many('default', '{}')").fetchall() == []
    p = psql(zone, "select * from kv.get_many('default', ARRAY['many-10','many-03'])")
    assert p.returncode == 0 and p.stdout.splitlines() == ['many-03|{"k": "many-03"}', 'many-10|{"k": "many-10"}'], p


@pytest.mark.parametrize("sql,params,sqlstate,text", [
    ("select now()", None, "0A000", "only calls of the kv API"),
    ("select kv.get('default', 'a'); select 1.5", None, "0A000", "only calls of the kv API"),
    ("savepoint a", None, "25P01", "SAVEPOINT can only be used in transaction blocks"),
    ("select kv.get('default')", None, "42883", "kv.get takes 2"),
    ("select kv.nope('default', 'a')", None, "42883", "no function kv.nope"),
    ("select kv.get('default', 'a') where true", None, "0A000", "only calls of the kv API"),
    ("select kv.get(key, 'a') from t", None, "0A000", "only calls of the kv API"),
    ("select kv.get('default', lower('A'))", None, "0A000", "constants or parameters"),
    ("select kv.get_many('default', ARRAY['a'])", None, "0A000", "SELECT * FROM kv.get_many"),
    ("selec kv.get('default', 'a')", None, "42601", "syntax error"),
    ("select kv.get(%s, %s)", ("nosuchns", "a"), "22023", 'unknown namespace "nosuchns"'),
    ("select kv.get(%s, %s)", ("default", "k" * 1025), "22001", "key too long"),
    ("select kv.put(%s, %s, %s)", ("default", "a", "{not json"), "22P02", "invalid input syntax for type json"),
    ("select kv.get(%s, %s)", (None, "a"), "22004", "must not be NULL"),
    ("select * from kv.get_many(%s, %s)", ("default", ["a", None]), "22004", "must not be NULL"),
    ("select kv.put(%s, %s, %s, %s)", ("default", "a", "1", "-1 hour"), "22023", "ttl must be positive"),
])
def test_bad_input_gets_a_clear_error_and_the_session_goes_on(zone, sql, params, sqlstate, text):
    with kv_conn(zone) as c:
        with pytest.raises(psycopg.Error) as e:
            c.execute(sql, params)
        assert e.value.sqlstate == sqlstate, e.value
        assert text in str(e.value), e.value
        # The session is still usable.
        c.execute("select kv.put('default', 'after-error', '1')")
        assert c.execute("select kv.get('default', 'after-error')").fetchone()[0] == 1


def test_rename_put_if_value_flush_msetnx_and_random_key_through_the_kv_database(zone):
    """The calls the Redis listener's RENAME, INCRBYFLOAT, FLUSHDB and MSETNX use are the kv
    database's too (they were refused with 42883): kv.rename by its first key's shard (a second
    key of another shard is the shard's own error, nothing written), kv.put_if_value, kv.flush
    asked of every shard, the counts summed, kv.msetnx by the first key of its object, and
    kv.random_key asked of every shard, one of their keys picked.
    Booleans bound in text and in binary."""
    p = zone.parade
    a, b = p.keys_on(0, 2, "rn-")
    far = p.key_on(1, "rn-")
    with kv_conn(zone) as c:
        c.execute("select kv.put('default', %s, '{\"v\": 1}')", (a,))
        assert c.execute("select kv.rename(%s, %s, %s)", ("default", a, b)).fetchone()[0] == 1
        assert c.execute("select kv.get('default', %s)", (a,)).fetchone()[0] is None
        assert c.execute("select kv.get('default', %s)", (b,)).fetchone()[0] == {"v": 1}
        c.execute("select kv.put('default', %s, '2')", (a,))
        for fmt in ("%t", "%b"):  # nx: b exists, nothing written
            assert c.execute(f"select kv.rename(%s, %s, %s, {fmt})", ("default", a, b, True)).fetchone()[0] == 0
        assert c.execute("select kv.get('default', %s)", (b,)).fetchone()[0] == {"v": 1}
        assert c.execute("select kv.rename('default', %s, %s, false) as n", (a, b)).fetchone()[0] == 1
        assert c.execute("select kv.get('default', %s)", (b,)).fetchone()[0] == 2
        with pytest.raises(psycopg.Error) as e:
            c.execute("select kv.rename('default', %s, %s)", (b, far))
        assert e.value.sqlstate == "22023" and f'key "{far}" belongs to shard 1' in str(e.value), e.value
        assert c.execute("select kv.get('default', %s)", (b,)).fetchone()[0] == 2
        with pytest.raises(psycopg.Error) as e:
            c.execute("select kv.rename('default', %s, %s)", ("rn-absent", b))
        assert "no such key" in str(e.value), e.value

        cur = c.execute("select kv.put_if_value(%s, %s, %s, %s)", ("default", b, "2", Jsonb(3)))
        assert cur.fetchone()[0] is True
        assert c.execute("select kv.put_if_value(%b, %b, %b, %b)",
                         ("default", b, Jsonb(2), Jsonb(4))).fetchone()[0] is False  # it reads 3
        assert c.execute("select kv.get('default', %s)", (b,)).fetchone()[0] == 3
        assert c.execute("select kv.put_if_value('default', 'piv-new', NULL, '5')").fetchone()[0] is True

        keys = [f"fl-{i}" for i in range(12)]
        assert set(p.shards_of("flushme", keys)) == set(range(NSHARDS))
        assert c.execute("select kv.put_many('flushme', %s, %s)", (keys, ["1"] * 12)).fetchone()[0] == 12
        # random_key: every shard asked, one key of theirs picked (both shards' keys come up)
        picked = {c.execute("select kv.random_key('flushme') as k").fetchone()[0] for _ in range(40)}
        assert picked <= set(keys) and len(set(p.shards_of("flushme", list(picked)))) == NSHARDS, picked
        cur = c.execute("select kv.flush('flushme') as gone")
        assert cur.description[0].name == "gone" and cur.fetchone()[0] == 12
        assert c.execute("select kv.count('flushme', '')").fetchone()[0] == 0
        assert c.execute("select kv.flush(%b)", ("flushme",)).fetchone()[0] == 0
        assert c.execute("select kv.random_key(%s)", ("flushme",)).fetchone()[0] is None
        assert c.execute("select kv.get('default', %s)", (b,)).fetchone()[0] == 3  # another namespace: kept

        # msetnx: routed by its object's first key (escaped here: the route decodes it)
        m1, m2 = p.keys_on(1, 2, 'ms"\\')
        pairs = {m1: 1, m2: {"x": [1]}}
        for fmt in ("%s", "%b"):
            assert c.execute(f"select kv.msetnx('default', {fmt})", (Jsonb(pairs),)).fetchone()[0] is (fmt == "%s")
        assert c.execute("select * from kv.get_many('default', %s)", ([m1, m2],)).fetchall() == sorted(
            [(m1, 1), (m2, {"x": [1]})])
        for sh in range(NSHARDS):  # each shard's keys land there (hashing the JSON text would miss)
            for i in range(3):
                ks = p.keys_on(sh, 2, f"ms{sh}.{i}-")
                assert c.execute("select kv.msetnx('default', %s)", (Jsonb({k: i for k in ks}),)).fetchone()[0]
                assert stored(zone, ks[1]) == [sh]
        m0 = p.key_on(0, "ms-")
        with pytest.raises(psycopg.Error) as e:  # keys of two shards: the shard's error, nothing written
            c.execute("select kv.msetnx('default', %s)", (Jsonb({m0: 1, "ms-new": 2, m1: 3}),))
        assert e.value.sqlstate == "22023" and "belongs to shard" in str(e.value), e.value
        assert c.execute("select kv.get('default', %s)", (m0,)).fetchone()[0] is None
        for bad, state in ((" {}", "22023"), ("[1]", "22023"), ('{"a": ', "22P02")):  # any shard's answer
            with pytest.raises(psycopg.Error) as e:
                c.execute("select kv.msetnx('default', %s)", (bad,))
            assert e.value.sqlstate == state, (bad, e.value)
    out = psql(zone, f"select kv.rename('default', '{b}', '{a}', true)")
    assert out.returncode == 0 and out.stdout.strip() == "1", out


def test_calls_of_several_shards_run_on_the_workers(zone):
    """get_many, put_many, delete_many, scan and count run on the client's worker, on its shard
    connections, as one-key calls do: no router thread opens a shard connection for them (only
    a call made before the catalog was read runs on one)."""
    keys = [f"several-{i}" for i in range(40)]
    with kv_conn(zone) as c:
        assert c.execute("select kv.put_many('default', %s, %s)", (keys, [str(i) for i in range(40)])).fetchone()[0] == 40
        rows = c.execute("select * from kv.get_many('default', %s)", (keys[::-1] + ["nope"],)).fetchall()
        assert rows == sorted((k, int(k.split("-")[1])) for k in keys), rows  # in key order
        page = c.execute("select * from kv.scan('default', 'several-', 'several-1', 5)").fetchall()
        assert [k for k, _ in page] == sorted(keys)[sorted(keys).index("several-1") + 1:][:5], page
        assert c.execute("select kv.count('default', 'several-')").fetchone()[0] == 40
        assert c.execute("select kv.delete_many('default', %s)", (keys[:10] + ["nope"],)).fetchone()[0] == 10
        assert c.execute("select kv.count('default', 'several-')").fetchone()[0] == 30
    assert len(kv_backends(zone, "tusk kv router")) <= 1


def test_tusk_own_errors_name_the_client(zone):
    with kv_conn(zone) as c:
        with pytest.raises(psycopg.Error) as e:
            c.execute("select now()")
        assert str(e.value).startswith("tusk c"), e.value


def test_a_shard_that_is_down_gets_08006_naming_it_and_nothing_half_written(zone):
    down = 1
    k_up = next(f"d{i}" for i in range(1000) if zone.parade.shard_of("default", f"d{i}") != down)
    k_down = next(f"d{i}" for i in range(1000) if zone.parade.shard_of("default", f"d{i}") == down)
    with kv_conn(zone) as c:
        c.execute("select kv.put('default', %s, '1')", (k_up,))
        with zone.pg.admin() as a:
            a.execute(f"alter database kv_shard_{down} allow_connections false")
            a.execute("select pg_terminate_backend(pid) from pg_stat_activity where datname = %s",
                      (f"kv_shard_{down}",))
        try:
            with pytest.raises(psycopg.Error) as e:
                c.execute("select kv.put('default', %s, '2')", (k_down,))
            assert e.value.sqlstate == "08006", e.value
            assert f"kv_shard_{down}" in str(e.value) and "instance 1" in str(e.value), e.value
            # get_many over both shards fails whole: no partial answer.
            with pytest.raises(psycopg.Error) as e:
                c.execute("select * from kv.get_many('default', %s)", ([k_up, k_down],))
            assert e.value.sqlstate == "08006", e.value
            # The other shard still answers.
            assert c.execute("select kv.get('default', %s)", (k_up,)).fetchone()[0] == 1
            # A batch over both: the shard that answers is written, and the error says so.
            with pytest.raises(psycopg.Error) as e:
                c.execute("select kv.put_many('default', %s, %s)", ([k_up, k_down], ["7", "8"]))
            assert e.value.sqlstate == "08006", e.value
            assert "already written the keys of 1 other shard" in (e.value.diag.message_detail or ""), e.value
            assert c.execute("select kv.get('default', %s)", (k_up,)).fetchone()[0] == 7
        finally:
            with zone.pg.admin() as a:
                a.execute(f"alter database kv_shard_{down} allow_connections true")
        assert c.execute("select kv.get('default', %s)", (k_down,)).fetchone()[0] is None
        assert stored(zone, k_down) == []
        c.execute("select kv.put('default', %s, '3')", (k_down,))
        assert c.execute("select kv.get('default', %s)", (k_down,)).fetchone()[0] == 3


def test_calls_recover_after_the_instance_restarts(zone):
    with kv_conn(zone) as c:
        c.execute("select kv.put('default', 'restart', '1')")
        zone.pg.stop()
        try:
            with pytest.raises(psycopg.Error) as e:
                c.execute("select kv.get('default', 'restart')")
            assert e.value.sqlstate == "08006" and "is down" in str(e.value), e.value
        finally:
            zone.pg.start()
        # The router's connections from before the restart are dead; the next call reconnects.
        assert c.execute("select kv.get('default', 'restart')").fetchone()[0] == 1
        c.execute("select kv.put('default', 'restart', '2')")
        assert c.execute("select kv.get('default', 'restart')").fetchone()[0] == 2


def test_a_client_that_leaves_mid_call_does_not_upset_tusk(zone):
    for _ in range(20):
        c = kv_conn(zone)
        c.pgconn.send_query_params(b"select kv.put('default', 'leaver', '1')", None)
        c.pgconn.flush()
        c.close()
    with kv_conn(zone) as c:
        assert c.execute("select kv.get('default', 'leaver')").fetchone()[0] == 1
    assert zone.tusk.proc.poll() is None


def move_instance(zone, port):
    """The zone's instance at a new port in the catalog; kv_catalog.bump() NOTIFYs the tusks."""
    with zone.pg.admin("kv_catalog") as c:
        c.execute("update kv_catalog.instances set port = %s where id = %s", (port, zone.id))
        version = c.execute("select kv_catalog.bump()").fetchone()[0]
    # (the version in it: the line at start names the same address as the move back)
    zone.tusk.wait_log(f"catalog version {version}: routing calls to instance {zone.id} (127.0.0.1:{port})",
                       timeout=20)


def kv_backends(zone, app):
    return [r[0] for r in zone.sql(0, "select client_port from pg_stat_activity where application_name = %s",
                                   (app,))]


# Last in the module: it leaves the zone's instance where it found it, but restarts nothing.
@pytest.mark.exclusive  # load: runs alone (conftest.py)
@pytest.mark.timeout(300)
def test_a_catalog_that_moves_the_instance_moves_the_calls_under_load(zone):
    """A newer catalog gives the zone's instance a new address (a relay in front of the same
    PostgreSQL): tusk's kv calls follow it without a restart, the clients calling all along
    see no error, the connections to the old address close, and the new address is the one
    used (closing it fails the calls, moving back heals them)."""
    relay = Relay(zone.pg.port)
    stop, errors, done = threading.Event(), [], [0] * 4

    def load(i):
        try:
            with kv_conn(zone) as c:
                n = 0
                while not stop.is_set():
                    key = f"move-{i}-{n % 40}"
                    c.execute("select kv.put('default', %s, %s::jsonb)", (key, str(n)))
                    got = c.execute("select kv.get('default', %s)", (key,)).fetchone()[0]
                    assert got == n, (key, got, n)
                    n += 1
                    done[i] = n
        except Exception as e:  # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: min(done) > 20, 20 * SLOW, what="the load under way")
        move_instance(zone, relay.port)
        before = list(done)
        # Every worker connection to a shard is now one through the relay: the old ones
        # closed once they had answered their calls.
        wait_until(lambda: set(kv_backends(zone, "tusk kv worker")) <= relay.upstream_ports
                   and kv_backends(zone, "tusk kv worker"), 20 * SLOW, what="worker connections through the relay")
        wait_until(lambda: all(d > b + 20 for d, b in zip(done, before)), 20 * SLOW,
                   what="every client calling on after the move")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    with kv_conn(zone) as c:
        # A call of several shards goes through the relay too; and the router's threads (they
        # ran the first call, before the catalog was read) closed their idle connections.
        keys = [f"move-{i}-{k}" for i in range(4) for k in range(5)]
        rows = c.execute("select * from kv.get_many('default', %s)", (keys,)).fetchall()
        assert len(rows) == len(keys), rows
        wait_until(lambda: set(kv_backends(zone, "tusk kv router")) <= relay.upstream_ports, 10 * SLOW,
                   what="the router threads' connections to the old address closed")
        relay.close()
        with pytest.raises(psycopg.Error) as e:
            for k in range(NSHARDS * 8):  # a key on every shard: each worker connection finds the relay gone
                c.execute("select kv.get('default', %s)", (f"gone-{k}",))
        assert e.value.sqlstate == "08006" and f"127.0.0.1:{relay.port}" in str(e.value), e.value
    move_instance(zone, zone.pg.port)
    with kv_conn(zone) as c:
        c.execute("select kv.put('default', 'moved-back', '1')")
        assert c.execute("select kv.get('default', 'moved-back')").fetchone()[0] == 1
    assert zone.tusk.proc.poll() is None
