"""The kv store on one zone: tusk kv init / push, the SQL API, bad input, expiry, roles and the
shard hash. Replication between zones is in test_kv_replication.py."""

import json
import subprocess
import time

import psycopg
import pytest

from conftest import TUSK_BIN, run
from kv_util import NSHARDS, Parade

pytestmark = pytest.mark.tusk_only


@pytest.fixture(scope="module")
def zone(workdir):
    p = Parade(workdir / "kv-one", ["z1"])
    p.setup()
    yield p.zones[0]
    p.destroy()


def test_init_and_push_are_idempotent(zone):
    before = zone.sql(0, "select count(*) from pg_proc p join pg_namespace n on n.oid = p.pronamespace "
                         "where nspname = 'kv'")
    out = zone.kv("init").stdout
    assert "catalog version 1 and 2 shard databases ready" in out
    assert zone.sql(0, "select count(*) from pg_proc p join pg_namespace n on n.oid = p.pronamespace "
                       "where nspname = 'kv'") == before
    out = zone.kv("push").stdout
    assert "applied by 0 databases, 3 already had it" in out, out


def test_push_applies_newer_and_ignores_older(zone):
    with zone.pg.admin("kv_catalog") as c:
        c.execute("insert into kv_catalog.namespaces values ('late', null)")
        v = c.execute("select kv_catalog.bump()").fetchone()[0]
        old = c.execute("select kv_catalog.export()").fetchone()[0]
    out = zone.kv("push").stdout
    # The shard databases take it; the catalog it came from already has it.
    assert f"version {v} applied by 2 databases, 1 already had it" in out, out
    with zone.db(0) as c:
        c.execute("select kv.put('late', %s, '1')", (zone.parade.key_on(0, "k", ns="late"),))
    # An older version sent again (a delayed push) changes nothing anywhere.
    old["version"] = v - 1
    old["namespaces"] = []
    with zone.pg.admin("kv_catalog") as c:
        assert c.execute("select kv_catalog.import(%s::jsonb)", (json.dumps(old),)).fetchone()[0] is False
        assert c.execute("select version from kv_catalog.meta").fetchone()[0] == v
    for s in range(NSHARDS):
        assert zone.sql(s, "select kv.import_catalog(%s::jsonb)", (json.dumps(old),)) == [(False,)]
        assert ("late",) in zone.sql(s, "select ns from kv.namespaces")


def test_put_get_delete_patch_get_many(zone):
    k = zone.parade.key_on(1, "rt")
    with zone.db(1) as c:
        v1 = c.execute("select kv.put('default', %s, '{\"n\": 1, \"s\": \"x\"}')", (k,)).fetchone()[0]
        assert c.execute("select kv.get('default', %s)", (k,)).fetchone()[0] == {"n": 1, "s": "x"}
        assert c.execute("select kv.patch('default', %s, '{\"n\": 2.5, \"s\": null, \"t\": true}')",
                         (k,)).fetchone()[0] == {"n": 3.5, "t": True}
        v3 = c.execute("select kv.delete('default', %s)", (k,)).fetchone()[0]
        assert v3 > v1
        assert c.execute("select kv.get('default', %s)", (k,)).fetchone()[0] is None
        # A patch on a deleted key starts from nothing.
        assert c.execute("select kv.patch('default', %s, '{\"n\": 4, \"z\": null}')", (k,)).fetchone()[0] == {"n": 4}
        k2, k3 = zone.parade.key_on(1, "rt2-"), zone.parade.key_on(1, "rt3-")
        c.execute("select kv.put('default', %s, '[1, 2]')", (k2,))
        c.execute("select kv.put('default', %s, 'null')", (k3,))  # JSON null is a value
        rows = c.execute("select key, value from kv.get_many('default', %s)", ([k, k2, k3, zone.parade.key_on(1, "absent")],)).fetchall()
        assert sorted(rows) == sorted([(k, {"n": 4}), (k2, [1, 2]), (k3, None)])


def test_concurrent_patches_on_one_node_all_count(zone):
    k = zone.parade.key_on(0, "ctr")
    import threading

    def bump():
        with zone.db(0) as c:
            for _ in range(50):
                c.execute("select kv.patch('default', %s, '{\"n\": 1}')", (k,))

    ts = [threading.Thread(target=bump) for _ in range(4)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    with zone.db(0) as c:
        assert c.execute("select kv.get('default', %s)", (k,)).fetchone()[0] == {"n": 200}


@pytest.mark.parametrize("call, params, sqlstate, message", [
    ("kv.put('default', %s, '1')", ["x" * 1025], "22001", "key too long (1025 bytes, the limit is 1024)"),
    ("kv.put('nosuch', %s, '1')", ["k"], "22023", 'unknown namespace "nosuch"'),
    ("kv.put('default', %s, 'not json')", ["k"], "22P02", "invalid input syntax for type json"),
    ("kv.put('default', %s, NULL)", ["k"], "22004", "value must not be NULL"),
    ("kv.put('default', %s, '1', '2 days')", ["k"], None, None),  # default has no max_ttl: fine
    ("kv.put('short', %s, '1', '2 days')", ["k"], "22023", "exceeds the namespace's max_ttl"),
    ("kv.put('short', %s, '1', '-1 second')", ["k"], "22023", "ttl must be positive"),
    ("kv.patch('default', %s, '[1]')", ["k"], "22023", "patch delta must be a JSON object"),
    ("kv.get('default', %s)", [""], "22023", "key must not be empty"),
])
def test_bad_input_gets_a_clear_error(zone, call, params, sqlstate, message):
    # Keys of shard 0 only, so the shard check does not answer first.
    if params == ["k"]:
        params = [zone.parade.key_on(0, "bad", ns=call.split("'")[1])]
    with zone.db(0) as c:
        if sqlstate is None:
            c.execute(f"select {call}", params)
            return
        with pytest.raises(psycopg.Error) as ei:
            c.execute(f"select {call}", params)
    assert ei.value.sqlstate == sqlstate
    assert message in str(ei.value)


def test_key_of_another_shard_is_refused(zone):
    k = zone.parade.key_on(1, "other")
    with zone.db(0) as c, pytest.raises(psycopg.Error) as ei:
        c.execute("select kv.put('default', %s, '1')", (k,))
    assert f'belongs to shard 1, this database is shard 0' in str(ei.value)


def test_expired_rows_are_hidden_at_once(zone):
    k = zone.parade.key_on(0, "exp", ns="short")
    with zone.db(0) as c:
        c.execute("select kv.put('short', %s, '\"soon gone\"', '0.5 seconds')", (k,))
        assert c.execute("select kv.get('short', %s)", (k,)).fetchone()[0] == "soon gone"
        time.sleep(0.6)
        # No purge job has run: the row is still there, and reads hide it anyway.
        assert c.execute("select kv.get('short', %s)", (k,)).fetchone()[0] is None
        assert c.execute("select * from kv.get_many('short', %s)", ([k],)).fetchall() == []
        # A patch of an expired key starts from nothing, it does not revive the old fields.
        c.execute("select kv.put('short', %s, '{\"a\": 1}', '0.3 seconds')", (k,))
        time.sleep(0.4)
        assert c.execute("select kv.patch('short', %s, '{\"b\": 1}')", (k,)).fetchone()[0] == {"b": 1}
    rows = zone.sql(0, "select expires_at > now() + interval '50 minutes' from kv.data where ns = 'short' and key = %s",
                    (k,))
    assert rows == [(True,)], "the patch took the namespace's default_ttl (1 hour)"


def test_kv_client_cannot_write_the_table(zone):
    with zone.db(0) as c:
        for stmt in ["insert into kv.data (ns, key, value, ver_ts, origin) values ('default', 'x', '1', 1, 1)",
                     "update kv.data set value = '1'", "delete from kv.data", "select * from kv.data",
                     "select * from kv.apply_batch(2, '[]', '0', null, null)",
                     "select kv.import_catalog('{\"version\": 99}')",
                     "select kv._upsert(array[]::kv.row_t[], true, null)",
                     "update kv.identity set clock_offset_us = 1000000000"]:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(stmt)
    with zone.db(0, user="kv_replicator") as c:
        assert c.execute("select count(*) >= 0 from kv.data").fetchone()[0]
        for stmt in ["insert into kv.data (ns, key, value, ver_ts, origin) values ('default', 'x', '1', 1, 1)",
                     "update kv.data set value = '1'", "select kv.put('default', 'x', '1')"]:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(stmt)


def test_no_superuser_anywhere(zone):
    rows = zone.sql(0, "select rolname, rolsuper, rolcreaterole, rolcreatedb from pg_roles "
                       "where rolname in ('kv_owner', 'kv_client', 'kv_replicator') order by 1")
    assert rows == [("kv_client", False, False, False), ("kv_owner", False, False, False),
                    ("kv_replicator", False, False, False)]
    owners = zone.sql(0, "select distinct pg_get_userbyid(proowner) from pg_proc p join pg_namespace n "
                         "on n.oid = p.pronamespace where nspname = 'kv'")
    assert owners == [("kv_owner",)]
    # Every SECURITY DEFINER function pins its search_path.
    loose = zone.sql(0, "select proname from pg_proc p join pg_namespace n on n.oid = p.pronamespace "
                        "where nspname = 'kv' and prosecdef and not coalesce(proconfig::text ~ 'search_path', false)")
    assert loose == []



def test_a_clients_search_path_cannot_hijack_the_security_definer_functions(zone):
    # A deployment may let kv_client create objects somewhere (here: a schema of its own). Its
    # functions and operator, named like the built-ins kv.put and kv.get use and first on its
    # search_path, must never run inside them (they run as kv_owner): each pins search_path =
    # pg_catalog, pg_temp (measured in docs/kv.md, "Speed": the SET costs ~1.5 us a call; kept).
    k = zone.parade.key_on(0, "hijack")
    zone.sql(0, "create schema evil authorization kv_client")
    try:
        with zone.db(0) as c:
            c.execute("create table evil.calls (fn text, by_user name)")
            # Usage for all, or kv_owner would not even see its functions (a schema without USAGE
            # drops out of the search_path): without the pinned search_path, evil.strpos then runs
            # as kv_owner (tried on kv.put without its SET clause).
            c.execute("grant usage on schema evil to public")
            c.execute("grant insert on evil.calls to public")
            for fn, args, ret, body in [("now", "", "timestamptz", "'2100-01-01'"),
                                        ("clock_timestamp", "", "timestamptz", "'2100-01-01'"),
                                        ("strpos", "text, text", "int", "0"), ("octet_length", "text", "int", "1"),
                                        ("pg_column_size", "jsonb", "int", "1"), ("chr", "int", "text", "'x'"),
                                        ("pg_current_xact_id", "", "xid8", "'1'"),
                                        ("texteq", "text, text", "bool", "true")]:
                c.execute(f"create function evil.{fn}({args}) returns {ret} language plpgsql as "
                          f"$$ begin insert into evil.calls values ('{fn}', current_user); return {body}; end $$")
            c.execute("create operator evil.= (leftarg = text, rightarg = text, function = evil.texteq)")
            c.execute("set search_path = evil, pg_catalog")
            ver = c.execute("select kv.put('default', %s, '1')", (k,)).fetchone()[0]
            assert c.execute("select kv.get('default', %s)", (k,)).fetchone()[0] == 1
            assert c.execute("select kv.get('default', %s)", (k + "-absent",)).fetchone()[0] is None
            with pytest.raises(psycopg.Error) as ei:
                c.execute("select kv.put('default', %s, '1')", (k + "\x1f" + "1",))
            assert "0x1F" in str(ei.value)
            calls = c.execute("select * from evil.calls").fetchall()
        assert calls == []
        assert abs(ver - time.time() * 1e6) < 600e6, ver  # the real clock, not evil.clock_timestamp
    finally:
        zone.sql(0, "drop schema evil cascade")

def test_local_write_beats_what_it_overwrites_under_a_slow_clock(zone):
    k = zone.parade.key_on(0, "skew")
    with zone.db(0) as c:
        v1 = c.execute("select kv.put('default', %s, '1')", (k,)).fetchone()[0]
    zone.sql(0, "update kv.identity set clock_offset_us = -10000000")
    try:
        with zone.db(0) as c:
            v2 = c.execute("select kv.put('default', %s, '2')", (k,)).fetchone()[0]
            assert v2 == v1 + 1
            assert c.execute("select kv.get('default', %s)", (k,)).fetchone()[0] == 2
    finally:
        zone.sql(0, "update kv.identity set clock_offset_us = 0")


@pytest.mark.parametrize("ns, key", [("default", "hello"), ("", ""), ("n", "ключ-ü-€"),
                                     ("default", "a key long enough for the 16-byte stripes of xxh32 ....."),
                                     ("ns", "x" * 37)])
def test_sql_hash_matches_tusk(zone, ns, key):
    shard, h = run([str(TUSK_BIN), "kv", "shard", "7", ns, key]).stdout.split()
    assert zone.sql(0, "select kv.hash(%s, %s), kv.shard_of(%s, %s, 7)", (ns, key, ns, key)) == [(int(h), int(shard))]
    with zone.pg.admin("kv_catalog") as c:
        assert c.execute("select kv.hash(%s, %s)", (ns, key)).fetchone()[0] == int(h)


def test_a_transient_failure_is_not_quarantined(zone):
    """A lock timeout (or deadlock) while applying a pulled page is not the row's fault: the
    call fails and the link retries the page; only rows that fail on their own are poison."""
    k = zone.parade.key_on(0, "locked")
    with zone.db(0) as c:
        c.execute("select kv.put('default', %s, '1')", (k,))
    row = json.dumps([{"ns": "default", "key": k, "value": 2, "ver_ts": 2 ** 60, "origin": 9}])
    with zone.pg.admin("kv_shard_0") as holder:
        holder.execute("begin")
        holder.execute("select 1 from kv.data where key = %s for update", (k,))
        with zone.db(0, user="kv_replicator") as r:
            r.execute("set lock_timeout = '200ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                r.execute("select * from kv.apply_batch(9, %s::jsonb, '5', null, null)", (row,))
        holder.execute("rollback")
    assert zone.sql(0, "select count(*) from kv.quarantine where peer = 9") == [(0,)]
    with zone.db(0, user="kv_replicator") as r:
        assert r.execute("select * from kv.apply_batch(9, %s::jsonb, '5', null, null)", (row,)).fetchone() == (1, 0, 0)
        # The same page again (a replay): skipped, not applied twice.
        assert r.execute("select * from kv.apply_batch(9, %s::jsonb, '5', null, null)", (row,)).fetchone() == (0, 1, 0)
    with zone.db(0) as c:
        assert c.execute("select kv.get('default', %s)", (k,)).fetchone()[0] == 2


def test_kv_shard_takes_many_keys_a_line_each():
    keys = ["hello", "", "ключ", "hello", "x" * 37]
    one = [run([str(TUSK_BIN), "kv", "shard", "7", "ns", k]).stdout for k in keys]
    many = run([str(TUSK_BIN), "kv", "shard", "7", "ns", *keys]).stdout
    assert many == "".join(one) and len(many.splitlines()) == len(keys)


def test_kv_command_line_errors(tmp_path):
    def tusk_kv(*args):
        return run([str(TUSK_BIN), "kv", *args], check=False)

    p = tusk_kv("shard", "0", "default", "k")
    assert p.returncode == 2 and "NSHARDS must be 1..4096" in p.stderr
    p = tusk_kv("shard", "4", "default")  # no key
    assert p.returncode == 2 and "tusk kv shard NSHARDS NAMESPACE KEY..." in p.stderr
    p = tusk_kv("frobnicate")
    assert p.returncode == 2 and 'unknown command "frobnicate"' in p.stderr
    cfg = tmp_path / "tusk.yaml"
    cfg.write_text('services:\n  s: {hosts: ["127.0.0.1:1"]}\npools:\n  - {database: "*", user: "*", service: s}\n')
    p = tusk_kv("init", "-c", str(cfg))
    assert p.returncode == 1 and "no kv section with a zone" in p.stderr
    # The catalog's instance is down: said plainly, exit 1.
    cfg.write_text(cfg.read_text() + "kv: {zone: z1, service: s}\n")
    p = tusk_kv("push", "-c", str(cfg))
    assert p.returncode == 1 and "kv push: 127.0.0.1:1/kv_catalog as postgres:" in p.stderr, p.stderr


def test_push_reports_an_instance_that_is_down_and_serves_the_others(zone):
    with zone.pg.admin("kv_catalog") as c:
        c.execute("insert into kv_catalog.zones values ('gone')")
        c.execute("insert into kv_catalog.instances values (99, 'gone', '127.0.0.1', 1)")
        v = c.execute("select kv_catalog.bump()").fetchone()[0]
    try:
        p = zone.kv("push", check=False)
        assert p.returncode == 1
        assert "kv push: instance 99 (zone gone) kv_catalog: 127.0.0.1:1/kv_catalog" in p.stderr, p.stderr
        assert f"instance 1 (zone z1, 127.0.0.1:{zone.pg.port}): version {v} applied by 2 databases" in p.stdout
        assert "instance 99" not in p.stdout, p.stdout
    finally:
        with zone.pg.admin("kv_catalog") as c:
            c.execute("delete from kv_catalog.instances where id = 99")
            c.execute("delete from kv_catalog.zones where name = 'gone'")
            c.execute("select kv_catalog.bump()")
        zone.kv("push")


def test_a_kv_service_found_by_dns_is_refused_with_a_clear_error(tmp_path):
    """The catalog is read before any resolver runs: its service must list hosts. The error
    says so instead of claiming no such service exists."""
    from conftest import Tusk
    t = Tusk(tmp_path / "t", 5432, services={"local": {"dns": "db.example.test", "port": 5432}},
             pools=[{"database": "*", "user": "*", "service": "local", "mode": "transaction"}],
             workers=1, kv={"zone": "z1", "service": "local"})
    p = subprocess.run([str(TUSK_BIN), "kv", "init", "-c", str(t.cfg_path)], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode != 0
    err = p.stdout + p.stderr
    assert 'kv.service "local" must list hosts' in err, err
    assert "no service named" not in err, err
