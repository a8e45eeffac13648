"""A put's fast path (docs/kv.md, "Speed", ninth step): with kv.router_password, tusk's shard
connections log in as kv_router and a put through the kv database (or the Redis listener's SET)
is one top-level INSERT ... ON CONFLICT of kv.data, checked by tusk's catalog (namespace, policy)
and in its WHERE (catalog version, shard, key, value, ttl); when it writes nothing (no row),
tusk runs kv.put as a second statement, which raises kv.put's error or writes. Zone f1's tusk has the role, zone f2's does not (today's path, as kv_client)."""

import datetime
import json

import psycopg
import pytest

from conftest import SLOW, wait_until
from kv_util import NSHARDS, ROUTER_PASSWORD, Parade, shard_statements

pytestmark = pytest.mark.tusk_only

FAST = "INSERT INTO kv.data"
KV_PUT = "SELECT kv.put($1, $2, $3::jsonb, $4::interval)"  # the second statement


@pytest.fixture(scope="module")
def parade(workdir):
    p = Parade(workdir / "kv-fast", ["f1", "f2"])
    try:
        p.setup()
        p.zones[1].write_config(router_password=None)  # f2: no kv_router, kv_client as before
        p.start()
        yield p
    finally:
        p.destroy()


class KvDb:
    """The kv database of a zone's tusk, one connection."""

    def __init__(self, zone):
        self.c = psycopg.connect(host="127.0.0.1", port=zone.tusk.port, user="postgres", dbname="kv",
                                 autocommit=True, connect_timeout=10)

    def put(self, ns, key, value, ttl=None):
        return self.c.execute("SELECT kv.put(%s, %s, %s, %s::interval)", (ns, key, value, ttl)).fetchone()[0]

    def get(self, key, ns="default"):
        return self.c.execute("SELECT kv.get(%s, %s)", (ns, key)).fetchone()[0]

    def close(self):
        self.c.close()


def row(zone, ns, key):
    s = zone.parade.shard_of(ns, key)
    rows = zone.sql(s, "select value::text, ver_ts, origin, expires_at, chg_xid::text::bigint, "
                       "(select origin from kv.identity) from kv.data where ns = %s and key = %s", (ns, key))
    return rows[0] if rows else None


def router_db(zone, shard):
    return psycopg.connect(host="127.0.0.1", port=zone.pg.port, user="kv_router", password=ROUTER_PASSWORD,
                           dbname=f"kv_shard_{shard}", autocommit=True, connect_timeout=10)


def error_of(fn):
    try:
        fn()
    except psycopg.Error as e:
        return e.sqlstate, e.diag.message_primary, e.diag.message_hint
    raise AssertionError("no error")


def test_put_through_tusk_is_one_fast_statement(parade):
    """Each put through f1's kv database is one statement on the key's shard: the INSERT (not a
    call of kv.put), logged by PostgreSQL; f2's (no kv_router) is SELECT kv.put as before."""
    a, b = parade.zones
    for z, want in ((a, FAST), (b, KV_PUT)):
        db = KvDb(z)
        try:
            keys = [f"fast:{z.name}:{i}" for i in range(20)]
            with shard_statements(z, db) as calls:
                for i, k in enumerate(keys):
                    assert isinstance(db.put("default", k, json.dumps({"i": i})), int)
            by_key = {}
            for stmt, key in calls:
                by_key.setdefault(key, []).append(stmt)
            for k in keys:
                assert len(by_key.get(k, [])) == 1, (k, by_key.get(k))
                assert by_key[k][0].startswith(want), by_key[k]
            assert set(parade.shards_of("default", keys)) == set(range(NSHARDS))
            for i, k in enumerate(keys):
                assert db.get(k) == {"i": i}
        finally:
            db.close()
    # Who tusk's shard connections are.
    for z, role in ((a, "kv_router"), (b, "kv_client")):
        users = {r[0] for r in z.sql(0, "select usename from pg_stat_activity "
                                        "where application_name in ('tusk kv worker', 'tusk kv router') "
                                        "and datname like 'kv_shard_%%'")}
        assert users == {role}, (z.name, users)


def test_fast_put_writes_what_kv_put_writes(parade):
    """The row a fast put writes is kv.put's: the version returned is the row's ver_ts, origin
    the shard's, expires_at now() + ttl (or the policy's default_ttl, or NULL), chg_xid the
    writing transaction's; an overwrite takes greatest(now, old version + 1) and replaces the
    expiry. Compared with kv.put on the shard (as kv_client) for the same cases."""
    a = parade.zones[0]
    db = KvDb(a)
    try:
        cases = [("default", None), ("default", "10 minutes"), ("short", None), ("short", "5 minutes")]
        for n, (ns, ttl) in enumerate(cases):
            kf, ks = f"same:fast:{n}", f"same:direct:{n}"
            vf = db.put(ns, kf, '{"a": [1, 2]}', ttl)
            with a.db(parade.shard_of(ns, ks)) as c:
                vs = c.execute("select kv.put(%s, %s, %s::jsonb, %s::interval)",
                               (ns, ks, '{"a": [1, 2]}', ttl)).fetchone()[0]
            rf, rs = row(a, ns, kf), row(a, ns, ks)
            assert rf[1] == vf and rs[1] == vs
            assert rf[0] == rs[0] == '{"a": [1, 2]}'
            assert rf[2] == rf[5] == a.id and rs[2] == a.id
            assert (rf[3] is None) == (rs[3] is None) == (ns == "default" and ttl is None)
            if rf[3] is not None:
                want = datetime.timedelta(minutes=int(ttl.split()[0])) if ttl else datetime.timedelta(hours=1)
                for r in (rf, rs):
                    written = datetime.datetime.fromtimestamp(r[1] / 1e6, datetime.timezone.utc)
                    assert abs((r[3] - written) - want) < datetime.timedelta(seconds=2), (r, want)
        # An overwrite: the version passes the stored one even when that is ahead of the clock,
        # the expiry is replaced, chg_xid moves (the replication's watermark sees the write).
        ns, k = "short", "same:future"
        db.put(ns, k, "1", "1 minute")
        s = parade.shard_of(ns, k)
        ahead = a.sql(s, "update kv.data set ver_ts = ver_ts + 3600000000 where ns = %s and key = %s "
                         "returning ver_ts", (ns, k))[0][0]
        before = row(a, ns, k)
        v = db.put(ns, k, "2")
        after = row(a, ns, k)
        assert v == ahead + 1 == after[1] and after[0] == "2"
        assert after[4] > before[4]
        assert after[3] is not None and after[3] > before[3]  # the policy's default_ttl, 1 hour
        with a.db(s) as c:
            assert c.execute("select kv.get_meta(%s, %s)", (ns, k)).fetchone()[0]["version"] == v
    finally:
        db.close()


BAD = [
    ("nope", "k", "1", None),                       # unknown namespace
    ("default", "", "1", None),                     # empty key
    ("default", "x" * 1025, "1", None),             # key too long
    ("default", "a\x1fb", "1", None),               # 0x1F in the key
    ("default", "k", None, None),                   # NULL value
    ("default", "k", "{not json", None),            # not JSON
    ("default", "k", json.dumps("x" * 1100000), None),  # value above 1 MB
    ("default", "k", "1", "-1 second"),             # ttl not positive
    ("default", "k", "1", "0"),
    ("short", "k", "1", "2 days"),                  # above the policy's max_ttl (1 day)
    ("default", "k", "1", "not an interval"),
]


def test_every_error_is_the_same_through_both_paths(parade):
    """Each bad put raises the same SQLSTATE, message and hint through f1 (fast path), f2 (kv.put
    as kv_client) and kv.put directly on the shard, and writes nothing."""
    a, b = parade.zones
    fa, fb = KvDb(a), KvDb(b)
    try:
        direct = []
        for ns, key, value, ttl in BAD:
            s = parade.shard_of(ns, key) if key else 0
            with a.db(s) as c:
                direct.append(error_of(lambda: c.execute("select kv.put(%s, %s, %s::jsonb, %s::interval)",
                                                         (ns, key, value, ttl))))
        with shard_statements(a, fa) as calls:
            got_a = [error_of(lambda: fa.put(ns, key, value, ttl)) for ns, key, value, ttl in BAD]
        for (ns, key, value, ttl), ga, d in zip(BAD, got_a, direct):
            gb = error_of(lambda: fb.put(ns, key, value, ttl))
            assert ga == gb == d, (ns, key[:20], ttl, ga, gb, d)
            assert d[0] in ("22023", "22001", "22004", "22P02", "54000", "22007"), d
        assert a.sql(0, "select count(*) from kv.data where key = 'k'")[0][0] == 0
        assert a.sql(1, "select count(*) from kv.data where key = 'k'")[0][0] == 0
        # Through f1, each bad put that ran on its shard was the fast INSERT, which wrote nothing
        # (no row), then kv.put of the same key, which raised (a bad JSON value or interval fails
        # the INSERT's own Bind, before it runs).
        # (the other statements logged meanwhile are the replication's)
        kinds = [("fast" if st.startswith(FAST) else "slow", k) for st, k in calls
                 if st.startswith(FAST) or st.startswith(KV_PUT)]
        for i, (kind, k) in enumerate(kinds):
            if kind == "fast":
                assert i + 1 < len(kinds) and kinds[i + 1] == ("slow", k), (i, kinds)
            else:
                assert i > 0 and kinds[i - 1] == ("fast", k), (i, kinds)
        assert sum(kind == "slow" for kind, _ in kinds) >= 7, kinds
    finally:
        fa.close()
        fb.close()


def fast_sql(zone):
    """The fast statement's text, as PostgreSQL logged it for a put through tusk."""
    db = KvDb(zone)
    try:
        with shard_statements(zone, db) as calls:
            db.put("default", "text:probe", "1")
    finally:
        db.close()
    stmts = [st for st, key in calls if key == "text:probe"]
    assert len(stmts) == 1 and stmts[0].startswith(FAST), stmts
    return stmts[0]


def run_fast(c, sql, *params):
    """The fast statement on connection c (as tusk prepares it: untyped parameters, cast inside),
    then, when it wrote nothing (no row), kv.put with the first four, as tusk's second statement:
    the new version."""
    c.execute("deallocate all")
    c.execute(f"prepare fast_put (text, text, text, text, text, text, text) as {sql}")
    cur = psycopg.ClientCursor(c)  # EXECUTE takes no server-side parameters: literals
    r = cur.execute("execute fast_put (%s, %s, %s, %s, %s, %s, %s)", params).fetchone()
    if r is not None:
        return r[0]
    return c.execute(KV_PUT.replace("$1, $2, $3", "%s, %s, %s").replace("$4", "%s"), params[:4]).fetchone()[0]


def test_the_statement_guards_shard_and_catalog_version_on_the_shard(parade):
    """Run directly as kv_router, the fast statement refuses what tusk would never send but a
    stale or wrong tusk could: a key of the other shard (no row, nothing written; kv.put, tusk's
    second statement, raises its error), and a catalog version that is not the shard's (no row;
    the write goes through kv.put, which applies the shard's own policy: a ttl the stale policy
    allowed is refused)."""
    a = parade.zones[0]
    sql = fast_sql(a)
    version = str(a.sql(0, "select catalog_version from kv.identity")[0][0])
    key = next(f"wrong:{i}" for i in range(64) if parade.shard_of("default", f"wrong:{i}") == 1)
    with router_db(a, 0) as c:
        c.execute(f"prepare fast_only (text, text, text, text, text, text, text) as {sql}")
        cur = psycopg.ClientCursor(c)
        assert cur.execute("execute fast_only (%s, %s, %s, %s, %s, %s, %s)",
                           ("default", key, "1", None, None, None, version)).fetchone() is None
        assert a.sql(0, "select count(*) from kv.data where key = %s", (key,))[0][0] == 0
        e = error_of(lambda: run_fast(c, sql, "default", key, "1", None, None, None, version))
        assert e[0] == "22023" and "belongs to shard 1, this database is shard 0" in e[1], e
    assert a.sql(0, "select count(*) from kv.data where key = %s", (key,))[0][0] == 0
    # A stale tusk's policy for "short" (max_ttl 1 day) against a shard whose catalog says
    # max_ttl 1 hour: the statement writes nothing itself, kv.put refuses.
    key = next(f"stale:{i}" for i in range(64) if parade.shard_of("short", f"stale:{i}") == 0)
    a.sql(0, "update kv.expiry_policies set max_ttl = '1 hour' where name = 'short'")
    a.sql(0, "update kv.identity set catalog_version = catalog_version + 100")
    try:
        with router_db(a, 0) as c:
            c.execute(f"prepare fast_only (text, text, text, text, text, text, text) as {sql}")
            cur = psycopg.ClientCursor(c)
            assert cur.execute("execute fast_only (%s, %s, %s, %s, %s, %s, %s)",
                               ("short", key, "1", "30 minutes", "1 hour", "1 day", version)).fetchone() is None
            assert row(a, "short", key) is None
            e = error_of(lambda: run_fast(c, sql, "short", key, "1", "2 hours", "1 hour", "1 day", version))
            assert e[0] == "22023" and "exceeds the namespace's max_ttl 01:00:00" in e[1], e
            assert row(a, "short", key) is None
            # Within the shard's policy, the fallback writes it, as kv.put does.
            v = run_fast(c, sql, "short", key, "1", "30 minutes", "1 hour", "1 day", version)
            assert row(a, "short", key)[1] == v
            # At the shard's version, the statement itself writes (the same row kv.put would).
            cur = str(int(version) + 100)
            v2 = run_fast(c, sql, "short", key, "2", "30 minutes", "1 hour", "1 hour", cur)
            assert v2 > v and row(a, "short", key)[:3] == ("2", v2, a.id)
    finally:
        a.sql(0, "update kv.identity set catalog_version = catalog_version - 100")
        a.sql(0, "update kv.expiry_policies set max_ttl = '1 day' where name = 'short'")


def test_fast_puts_land_on_kv_shard_of_and_replicate(parade):
    """Keys put through the fast path sit on the shard kv.shard_of names, in both zones, with
    identical rows once replicated (ver_ts, origin, expires_at)."""
    a, b = parade.zones
    db = KvDb(a)
    try:
        keys = [f"land:{i}" for i in range(40)] + ["ключ:ü", "日本", "x" * 1024]
        for i, k in enumerate(keys):
            db.put("default" if i % 2 else "short", k, json.dumps(i), "1 hour" if i % 3 == 0 else None)
    finally:
        db.close()
    for i, k in enumerate(keys):
        ns = "default" if i % 2 else "short"
        with a.db(0) as c:
            want = c.execute("select kv.shard_of(%s, %s, %s)", (ns, k, NSHARDS)).fetchone()[0]
        for z in (a, b):
            def there(z=z):
                return [s for s in range(NSHARDS)
                        if z.sql(s, "select 1 from kv.data where ns = %s and key = %s", (ns, k))]
            wait_until(lambda: there() != [], 30 * SLOW, what=f"{k[:20]} in zone {z.name}")
            assert there() == [want], (z.name, k[:20], there(), want)
    rows_a = {k: row(a, "default" if i % 2 else "short", k)[:4] for i, k in enumerate(keys)}
    wait_until(lambda: all(row(b, "default" if i % 2 else "short", k)[:4] == rows_a[k] for i, k in enumerate(keys)),
               30 * SLOW, what="identical rows in zone f2")


def test_kv_router_may_do_no_more_than_the_fast_path(parade):
    """kv_router writes kv.data's columns of a put and reads kv.identity's it checks; it cannot
    delete or truncate kv.data, read its other columns, or write kv.identity or any other table.
    (It reads a row's value and expiry: the fast put writes only over a live value, and what
    that leaks, kv_client's functions and the view kv.live read anyway.)"""
    a = parade.zones[0]
    with router_db(a, 0) as c:
        for q in ["delete from kv.data",
                  "truncate kv.data",
                  "select chg_xid from kv.data limit 1",
                  "update kv.identity set clock_offset_us = 1000000000",
                  "insert into kv.namespaces values ('evil', null)",
                  "update kv.namespaces set policy = null",
                  "select * from kv.links",
                  "update kv.data set chg_xid = chg_xid where false and chg_xid is null"]:
            e = error_of(lambda: c.execute(q))
            assert e[0] == "42501", (q, e)
        # What kv_client may do, it may (the API), and a get through the view.
        assert c.execute("select kv.put('default', %s, '1')", (next(
            f"ok:{i}" for i in range(64) if parade.shard_of("default", f"ok:{i}") == 0),)).fetchone()[0] > 0
    attrs = a.sql(0, "select rolsuper, rolcreaterole, rolcreatedb, rolbypassrls from pg_roles "
                     "where rolname = 'kv_router'")
    assert attrs == [(False, False, False, False)]
    # kv_client gained nothing.
    with a.db(0) as c:
        e = error_of(lambda: c.execute("insert into kv.data (ns, key, value, ver_ts, origin) "
                                       "values ('default', 'x', '1', 1, 1)"))
        assert e[0] == "42501", e


def test_a_tusk_without_kv_router_still_puts(parade):
    """f2's tusk (no kv.router_password) puts, overwrites, reads and refuses as before, as
    kv_client (Redis's SET through the fast path: test_kv_resp.py)."""
    b = parade.zones[1]
    db = KvDb(b)
    try:
        v1 = db.put("default", "plain:1", "1")
        v2 = db.put("default", "plain:1", "2")
        assert v2 > v1 and db.get("plain:1") == 2
        assert error_of(lambda: db.put("nope", "k", "1"))[0] == "22023"
    finally:
        db.close()


FAST_MANY = "WITH w AS (INSERT INTO kv.data"
KV_PUT_MANY = "SELECT kv.put_many($1, $2::text[], $3::text[], $4::interval)"


def put_many(db, ns, keys, values, ttl=None):
    return db.c.execute("SELECT kv.put_many(%s, %s::text[], %s::text[], %s::interval)",
                        (ns, keys, values, ttl)).fetchone()[0]


def keys_of_shard(parade, ns, prefix, shard, n):
    out = []
    for i in range(100 * n):
        if parade.shard_of(ns, f"{prefix}:{i}") == shard:
            out.append(f"{prefix}:{i}")
            if len(out) == n:
                return out
    raise AssertionError("too few keys")


def test_put_many_is_one_fast_statement_per_shard_writing_what_kv_put_many_writes(parade):
    """A put_many through f1 is one statement per shard it touches, kv.put_many's write as one
    INSERT (kv.put_many through f2); its rows are kv.put_many's (compared with kv.put_many run on
    the shard: value, origin, the expiry from the ttl or the policy's default_ttl); an overwrite
    replaces the values, passes a stored version ahead of the clock and moves chg_xid."""
    a, b = parade.zones
    for z, want in ((a, FAST_MANY), (b, KV_PUT_MANY)):
        db = KvDb(z)
        try:
            keys = [f"many:{z.name}:{i}" for i in range(30)]
            vals = [json.dumps({"i": i, "s": "x'\"\\y"}) for i in range(30)]
            with shard_statements(z, db) as calls:
                assert put_many(db, "default", keys, vals) == 30
            mine = [st for st, k in calls if st.startswith(want)]
            assert len(mine) == NSHARDS, calls
            assert not [st for st, k in calls if st.startswith(KV_PUT_MANY if want == FAST_MANY else FAST_MANY)]
            for i, k in enumerate(keys):
                assert db.get(k) == {"i": i, "s": "x'\"\\y"}
        finally:
            db.close()
    db = KvDb(a)
    try:
        for n, (ns, ttl) in enumerate([("default", None), ("default", "10 minutes"), ("short", None),
                                       ("short", "5 minutes")]):
            kf = [f"same-many:fast:{n}:{i}" for i in range(6)]
            assert put_many(db, ns, kf, ['{"a": [1, 2]}'] * 6, ttl) == 6
            for s in range(NSHARDS):
                ks = keys_of_shard(parade, ns, f"same-many:direct:{n}:{s}", s, 3)
                with a.db(s) as c:
                    assert c.execute("select kv.put_many(%s, %s::text[], %s::text[], %s::interval)",
                                     (ns, ks, ['{"a": [1, 2]}'] * 3, ttl)).fetchone()[0] == 3
                for k in ks + kf:
                    r = row(a, ns, k)
                    if r is None:
                        continue
                    assert r[0] == '{"a": [1, 2]}' and r[2] == r[5] == a.id, (k, r)
                    assert (r[3] is None) == (ns == "default" and ttl is None), (k, r)
                    if r[3] is not None:
                        want = datetime.timedelta(minutes=int(ttl.split()[0])) if ttl else datetime.timedelta(hours=1)
                        written = datetime.datetime.fromtimestamp(r[1] / 1e6, datetime.timezone.utc)
                        assert abs((r[3] - written) - want) < datetime.timedelta(seconds=2), (k, r, want)
            assert all(row(a, ns, k) is not None for k in kf)
        # An overwrite of keys of both shards, one stored ahead of the clock.
        keys = [f"many:{a.name}:{i}" for i in range(30)]
        before = {k: row(a, "default", k) for k in keys}
        s = parade.shard_of("default", keys[0])
        ahead = a.sql(s, "update kv.data set ver_ts = ver_ts + 3600000000 where ns = 'default' and key = %s "
                         "returning ver_ts", (keys[0],))[0][0]
        assert put_many(db, "default", keys, [str(100 + i) for i in range(30)], "1 hour") == 30
        for i, k in enumerate(keys):
            r = row(a, "default", k)
            assert r[0] == str(100 + i) and r[4] > before[k][4] and r[3] is not None, (k, r)
            assert r[1] == ahead + 1 if i == 0 else r[1] > before[k][1], (k, r)
    finally:
        db.close()


BAD_MANY = [
    # (namespace, keys, values, ttl), the keys of one shard but the odd one
    ("default", ["k0", "k0"], ["1", "2"], None),          # a key twice
    ("nope", ["k0", "k1"], ["1", "2"], None),             # unknown namespace
    ("default", ["k0", ""], ["1", "2"], None),            # empty key
    ("default", ["k0", "x" * 1025], ["1", "2"], None),    # key too long
    ("default", ["k0", "a\x1fb"], ["1", "2"], None),      # 0x1F in a key
    ("default", ["k0", "k1"], ["1", "{not json"], None),  # not JSON
    ("default", ["k0", "k1"], ["1", json.dumps("x" * 1100000)], None),  # a value above 1 MB
    ("default", ["k0", "k1"], ["1", "2"], "-1 second"),   # ttl not positive
    ("short", ["k0", "k1"], ["1", "2"], "2 days"),        # above the policy's max_ttl (1 day)
]


def test_every_put_many_error_is_the_same_through_both_paths(parade):
    """Each bad batch of one shard's keys raises the same SQLSTATE, message and hint through f1
    (the fast statement, then kv.put_many), f2 and kv.put_many on the shard, and writes nothing,
    not even its good keys."""
    a, b = parade.zones
    fa, fb = KvDb(a), KvDb(b)
    cases = []
    for n, (ns, keys, vals, ttl) in enumerate(BAD_MANY):
        good = keys_of_shard(parade, ns if ns != "nope" else "default", f"badmany:{n}", 0, 2)
        ks = [good[0] if k == "k0" else good[1] if k == "k1" else k for k in keys]
        if parade.shard_of(ns, ks[-1]) != 0:  # the odd key's shard decides: keep the batch on one
            ks[0] = keys_of_shard(parade, ns if ns != "nope" else "default", f"badmany:{n}", 1, 1)[0]
            if keys[1] == "k0":
                ks[1] = ks[0]
        cases.append((ns, ks, vals, ttl))
    try:
        with shard_statements(a, fa) as calls:
            got_a = [error_of(lambda: put_many(fa, *c)) for c in cases]
        for c, ga in zip(cases, got_a):
            ns, ks, vals, ttl = c
            gb = error_of(lambda: put_many(fb, *c))
            with a.db(parade.shard_of(ns, ks[-1])) as conn:
                d = error_of(lambda: conn.execute("select kv.put_many(%s, %s::text[], %s::text[], %s::interval)",
                                                  (ns, ks, vals, ttl)))
            assert ga == gb == d, (ns, [k[:20] for k in ks], ttl, ga, gb, d)
            for k in ks:
                for s in range(NSHARDS):
                    assert a.sql(s, "select count(*) from kv.data where key = %s", (k,))[0][0] == 0, k
        # Each that ran on a shard: the fast statement wrote nothing, then kv.put_many raised
        # (a value that is not JSON fails the fast statement's Bind, before it runs).
        kinds = [("fast" if st.startswith(FAST_MANY) else "slow", k) for st, k in calls
                 if st.startswith(FAST_MANY) or st.startswith(KV_PUT_MANY)]
        for i, (kind, k) in enumerate(kinds):
            if kind == "fast":
                assert i + 1 < len(kinds) and kinds[i + 1] == ("slow", k), (i, kinds)
        assert sum(kind == "slow" for kind, _ in kinds) >= 6, kinds
    finally:
        fa.close()
        fb.close()


def test_a_large_put_many_calls_kv_put_many_and_small_ones_stay_fast(parade):
    """A shard's part of more than 1,000 keys (KV_PUT_MANY_FAST_MAX: above it the fast statement
    gains nothing over kv.put_many) calls kv.put_many at once; a small batch after it, on the same connections, is the fast
    statement again: the two are prepared under names of their own."""
    a = parade.zones[0]
    db = KvDb(a)
    try:
        big = [f"big:{i}" for i in range(2600)]
        small = [f"small:{i}" for i in range(10)]
        with shard_statements(a, db) as calls:
            assert put_many(db, "default", big, [str(i) for i in range(2600)]) == 2600
            assert put_many(db, "default", small, [str(i) for i in range(10)]) == 10
            assert put_many(db, "default", big[:5], ["7"] * 5) == 5
        kinds = [st[:len(FAST_MANY)] for st, k in calls if st.startswith(FAST_MANY) or st.startswith(KV_PUT_MANY)]
        assert kinds == [KV_PUT_MANY[:len(FAST_MANY)]] * NSHARDS + [FAST_MANY] * (2 * NSHARDS), kinds
        got = dict(db.c.execute("SELECT * FROM kv.get_many('default', %s::text[])", (big + small,)).fetchall())
        assert got == {**{k: (7 if i < 5 else i) for i, k in enumerate(big)}, **{k: i for i, k in enumerate(small)}}
    finally:
        db.close()


def kv_put_calls(zone):
    """kv.put's calls on the zone's shards (track_functions), as far as the backends flushed."""
    return sum(zone.sql(s, "select coalesce(sum(calls), 0)::int from pg_stat_user_functions "
                           "where schemaname = 'kv' and funcname = 'put'")[0][0] for s in range(NSHARDS))


def test_tusk_follows_a_pushed_catalog_and_keeps_the_fast_path(parade):
    """The fast statement writes without calling kv.put (counted by track_functions, which
    counts a direct call of kv.put). After a push that changes a policy (a newer catalog version on the shards), a
    put whose ttl only the new policy allows is accepted, and once tusk has followed the
    catalog, puts write without kv.put again. Last in the module: it changes the catalog."""
    a = parade.zones[0]
    with a.pg.admin() as c:
        c.execute("alter system set track_functions = 'pl'")
        c.execute("select pg_reload_conf()")
    db = KvDb(a)
    try:
        keys = [f"follow:{i}" for i in range(16)]

        def settled():
            """kv.put's count once the backends flushed (idle for a second): twice the same."""
            seen = []

            def same():
                seen.append(kv_put_calls(a))
                return len(seen) > 1 and seen[-1] == seen[-2]
            wait_until(same, 20 * SLOW, interval=1.2, what="function statistics flushed")
            return seen[-1]

        for k in keys:  # the backends take the setting at their next command
            db.put("short", k, "0", "1 hour")
        before = settled()
        for k in keys:
            db.put("short", k, "1", "1 hour")
        assert settled() == before
        a.put(keys[0], 5, ns="short")  # kv.put itself, on the shard: counted (a raising call is not)
        wait_until(lambda: kv_put_calls(a) == before + 1, 20 * SLOW, interval=0.5, what="kv.put's call counted")

        with a.pg.admin("kv_catalog") as c:
            c.execute("update kv_catalog.expiry_policies set max_ttl = '3 days' where name = 'short'")
            v = c.execute("select kv_catalog.bump()").fetchone()[0]
        out = a.kv("push").stdout
        assert out.count(f"version {v} applied") == len(parade.zones), out
        assert db.put("short", keys[0], "2", "60 hours") > 0  # allowed by the new policy only

        def fast_again():
            n = settled()
            for k in keys:
                db.put("short", k, "3", "50 hours")
            return settled() == n
        wait_until(fast_again, 60 * SLOW, interval=0.5, what="tusk following the catalog's new version")
        assert error_of(lambda: db.put("short", keys[0], "4", "4 days"))[1].startswith(
            "kv: ttl 4 days exceeds the namespace's max_ttl 3 days")
        assert db.get(keys[0], "short") == 3
    finally:
        db.close()
        with a.pg.admin() as c:
            c.execute("alter system reset track_functions")
            c.execute("select pg_reload_conf()")


def test_the_first_calls_on_the_router_threads_take_both_statements(parade):
    """Until tusk has read the catalog, calls run on the router's threads (blocking libpq): there
    too a put that the fast statement does not write (an unknown namespace, before the catalog
    is known the namespace's policy too) gets kv.put's error, and a good put its version."""
    a = parade.zones[0]
    assert a.stop_tusk() == []
    a.start_tusk()
    db = KvDb(a)
    try:
        with a.db(0) as c:
            want = error_of(lambda: c.execute("select kv.put('nope', 'k', '1'::jsonb)"))
        assert error_of(lambda: db.put("nope", "k", "1")) == want
        # it ran on a router thread's connection to the shard
        assert a.sql(0, "select count(*) from pg_stat_activity where application_name = 'tusk kv router' "
                        "and usename = 'kv_router' and datname like 'kv_shard_%%'")[0][0] >= 1
        v = db.put("default", "first:good", "1")
        assert row(a, "default", "first:good")[1] == v
    finally:
        db.close()
