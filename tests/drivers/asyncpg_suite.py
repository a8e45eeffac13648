#!/usr/bin/python3
"""asyncpg (Debian's python3-asyncpg) the way applications use it, against one target
(PostgreSQL direct, tusk, or PgBouncer). Run by tests/integration/test_drivers.py (direct and
through tusk, outputs compared) and bench/drivers.sh.

  asyncpg_suite.py PORT [CASE ...]          the cases (no case: all); one JSON line per case:
                                            {"case": NAME, "out": WHAT IT SAW}
  asyncpg_suite.py PORT --load CONNS OPS    CONNS connections x OPS checked operations each;
                                            prints "RESULT ok=N bad=N ..." and the first errors;
                                            a stall is reported and the run goes on (below)
Env: PGHOST (127.0.0.1), PGUSER (tusk_trust), PGDATABASE (tusk_test), TAG (prefix of the tables
and types this run makes), POOL_MAX (asyncpg.Pool size, 12: larger than the pooler's size),
ONE_DATABASE (a name the pooler serves from one server; default PGDATABASE), TLS_ALL=1 with
TLS_CA (every connection to the target over TLS, its certificate checked against TLS_CA).
"out" holds only what a correct server answers the same way every run (no pids, no timings).
Exit 0 whatever the cases saw; 3 when the watchdog fired: a connection made no progress for 10 s
(it prints which one and what it was doing)."""

import asyncio
import datetime
import hashlib
import io
import json
import os
import sys
import time

import asyncpg

PORT = int(sys.argv[1])
DSN = dict(host=os.environ.get("PGHOST", "127.0.0.1"), port=PORT, user=os.environ.get("PGUSER", "tusk_trust"),
           database=os.environ.get("PGDATABASE", "tusk_test"))
if os.environ.get("TLS_ALL"):
    import ssl
    DSN["ssl"] = ssl.create_default_context(cafile=os.environ["TLS_CA"])
TAG = os.environ.get("TAG", "ap")
POOL_MAX = int(os.environ.get("POOL_MAX", "12"))
# A database name the pooler serves from a pool of ONE server (tusk_test there): clients of it
# share that server.
ONE_DB = os.environ.get("ONE_DATABASE", DSN["database"])
STALL_S = 10.0

# ---- watchdog: every connection says what it is doing; none may sit still for 10 s ------------
doing = {}


def step(label, what):
    doing[label] = (what, time.monotonic())


def done(label):
    doing.pop(label, None)


# --load: a stall is reported (with what PostgreSQL's backends are doing, when PG_DIRECT_PORT
# says where PostgreSQL is) and counted, and the run goes on: a connection that recovers says
# after how long; one stalled for HANG_S ends the run. The cases stop at the first stall.
LOAD = len(sys.argv) > 2 and sys.argv[2] == "--load"
HANG_S = 120.0
stalls = {}  # label -> what, while stalled


async def backends():
    if not os.environ.get("PG_DIRECT_PORT"):
        return None
    try:
        c = await asyncio.wait_for(asyncpg.connect(**{**DSN, "port": int(os.environ["PG_DIRECT_PORT"]), "database": "postgres", "ssl": False,
                                                      "user": "postgres"}), 5)
        rows = await c.fetch("SELECT state, wait_event_type, wait_event, (now() - xact_start)::text AS xact_age, "
                             "left(query, 80) AS query FROM pg_stat_activity WHERE backend_type = 'client backend' "
                             "AND pid <> pg_backend_pid() AND state <> 'idle' ORDER BY xact_start")
        await c.close()
        return [dict(r) for r in rows]
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {e}"


async def watchdog():
    while True:
        await asyncio.sleep(0.5)
        now = time.monotonic()
        for label, (what, since) in list(doing.items()):
            if now - since > STALL_S and stalls.get(label) != (what, since):
                stalls[label] = (what, since)
                print(json.dumps({"stall": label, "doing": what, "seconds": round(now - since),
                                  "backends": await backends() if LOAD else None}, default=str), flush=True)
                if not LOAD:
                    os._exit(3)
            if now - since > HANG_S:
                print(json.dumps({"hung": label, "doing": what, "seconds": round(now - since)}), flush=True)
                os._exit(3)
        for label, (what, since) in list(stalls.items()):
            if doing.get(label) != (what, since):
                print(json.dumps({"recovered": label, "doing": what, "after_seconds": round(now - since)}),
                      flush=True)
                del stalls[label]


async def w(label, what, aw):
    """Await aw, watched as connection `label` doing `what`."""
    step(label, what)
    try:
        return await aw
    finally:
        done(label)


async def connect(label, **kw):
    return await w(label, "connect", asyncpg.connect(**{**DSN, **kw}))


def err(e):
    return {"error": getattr(e, "sqlstate", None) or type(e).__name__}


async def admin(sql):
    c = await connect("admin", statement_cache_size=0)
    try:
        await w("admin", sql, c.execute(sql))
    finally:
        await c.close()


# ---- the checked operations of one connection (the cases and the load share them) ------------

class Worker:
    def __init__(self, n, conn):
        self.n, self.c, self.label = n, conn, f"conn{n}"
        self.ok = self.bad = 0
        self.errors = []

    def check(self, cond, what):
        if not cond:
            raise AssertionError(f"mismatch: {what}")

    async def op(self, i):
        kind = i % 5
        c, t, lab = self.c, self.n, self.label
        step(lab, f"op {i} kind {kind}")
        try:
            if kind == 0:  # cached prepared statement, autocommit
                r = await c.fetchrow("SELECT $1::int + $2::int AS s, $3::text AS t", i, t, f"x{t}_{i}")
                self.check(r["s"] == i + t and r["t"] == f"x{t}_{i}", f"select {dict(r)}")
            elif kind == 1:  # executemany (a batch) in a transaction, then read back
                async with c.transaction():
                    await c.executemany(f"INSERT INTO {TAG}_items(conn, op, k) VALUES ($1, 1, $2)",
                                        [(t, i * 100 + j) for j in range(10)])
                    n = await c.fetchval(f"SELECT count(*) FROM {TAG}_items WHERE conn = $1 AND op = 1 AND k BETWEEN $2 AND $3",
                                         t, i * 100, i * 100 + 99)
                    self.check(n == 10, f"batch rows {n}")
            elif kind == 2:  # a cursor with a prefetch inside a transaction, a query in the middle
                async with c.transaction():
                    n = s = 0
                    async for r in c.cursor("SELECT g FROM generate_series(1, $1::int) g ORDER BY g", 100 + t,
                                            prefetch=7):
                        n += 1
                        s += r["g"]
                        self.check(r["g"] == n, "order")
                        if n == 50:
                            self.check(await c.fetchval("SELECT 42") == 42, "interleaved")
                    N = 100 + t
                    self.check(n == N and s == N * (N + 1) // 2, f"cursor {n} {s}")
            elif kind == 3:  # rolled back: leaves nothing
                tr = c.transaction()
                await tr.start()
                await c.fetchval(f"INSERT INTO {TAG}_items(conn, op, k) VALUES ($1, 3, $2) RETURNING id", t, i)
                await tr.rollback()
                n = await c.fetchval(f"SELECT count(*) FROM {TAG}_items WHERE conn = $1 AND op = 3", t)
                self.check(n == 0, f"rolled back rows visible: {n}")
            else:  # read-modify-write with FOR UPDATE
                async with c.transaction():
                    v = await c.fetchval(f"SELECT n FROM {TAG}_counter WHERE conn = $1 FOR UPDATE", t)
                    await c.execute(f"UPDATE {TAG}_counter SET n = $2 WHERE conn = $1", t, v + 1)
                    self.check(await c.fetchval(f"SELECT n FROM {TAG}_counter WHERE conn = $1", t) == v + 1, "counter")
                self.counted += 1
            self.ok += 1
        except Exception as e:  # noqa: BLE001 -- every failure is counted and shown
            self.bad += 1
            if len(self.errors) < 3:
                self.errors.append(f"conn {t} op {i} kind {kind}: {type(e).__name__}: {e}"[:300])
        finally:
            done(lab)


async def setup_load_tables(nconns):
    await admin(f"DROP TABLE IF EXISTS {TAG}_items; DROP TABLE IF EXISTS {TAG}_counter; "
                f"CREATE TABLE {TAG}_items(id bigserial PRIMARY KEY, conn int, op int, k int); "
                f"CREATE INDEX ON {TAG}_items(conn, op, k); "
                f"CREATE TABLE {TAG}_counter(conn int PRIMARY KEY, n bigint NOT NULL); "
                f"INSERT INTO {TAG}_counter SELECT g, 0 FROM generate_series(0, {nconns - 1}) g")


async def run_load(nconns, ops):
    """nconns connections (default statement cache) x ops operations; every result checked,
    then the committed state."""
    await setup_load_tables(nconns)

    async def one(n):
        c = await connect(f"conn{n}")
        wk = Worker(n, c)
        wk.counted = 0
        for i in range(ops):
            await wk.op(i)
        await c.close()
        return wk

    workers = await asyncio.gather(*(one(n) for n in range(nconns)))
    final_bad = []
    c = await connect("verify", statement_cache_size=0)
    for wk in workers:
        n = await c.fetchval(f"SELECT n FROM {TAG}_counter WHERE conn = $1", wk.n)
        if n != wk.counted:
            final_bad.append(f"conn {wk.n}: counter {n}, committed increments {wk.counted}")
    rb = await c.fetchval(f"SELECT count(*) FROM {TAG}_items WHERE op = 3")
    if rb:
        final_bad.append(f"{rb} rolled-back rows visible")
    await c.execute(f"DROP TABLE {TAG}_items; DROP TABLE {TAG}_counter")
    await c.close()
    return {"ok": sum(wk.ok for wk in workers), "bad": sum(wk.bad for wk in workers),
            "final_bad": final_bad, "errors": [e for wk in workers for e in wk.errors][:10]}


# ---- the cases -------------------------------------------------------------------------------

CASES = {}


def case(f):
    CASES[f.__name__] = f
    return f


@case
async def concurrent_statement_cache():
    """10 connections (more than the pooler's servers) with asyncpg's statement cache, 100 checked
    operations each: prepared selects, executemany, cursors with prefetch, rollbacks, FOR UPDATE."""
    r = await run_load(10, 100)
    return {"ok": r["ok"], "bad": r["bad"], "final_bad": r["final_bad"], "errors": r["errors"]}


SCHEMA_CHANGES = [
    ("add_column", "CREATE TABLE %T(id int, a int); INSERT INTO %T VALUES (1, 10)",
     "ALTER TABLE %T ADD COLUMN c text DEFAULT 'new'"),
    ("int_to_bigint", "CREATE TABLE %T(id int, a int); INSERT INTO %T VALUES (1, 10)",
     "ALTER TABLE %T ALTER COLUMN a TYPE bigint"),
    ("int_to_text", "CREATE TABLE %T(id int, a int); INSERT INTO %T VALUES (1, 10)",
     "ALTER TABLE %T ALTER COLUMN a TYPE text"),
    ("drop_column", "CREATE TABLE %T(id int, a int, b text); INSERT INTO %T VALUES (1, 10, 'bee')",
     "ALTER TABLE %T DROP COLUMN a"),
    ("bigint_to_int", "CREATE TABLE %T(id int, a bigint); INSERT INTO %T VALUES (1, 10)",
     "ALTER TABLE %T ALTER COLUMN a TYPE int"),
]


async def fetch_or_error(label, c, q, *args):
    try:
        r = await w(label, q, c.fetch(q, *args))
        return [dict(x) for x in r]
    except Exception as e:  # noqa: BLE001
        return err(e)


@case
async def schema_change_statement_cache():
    """A cached statement across a schema change made by another connection: PostgreSQL answers
    0A000 and asyncpg re-prepares, or asyncpg re-prepares on its own; never a wrong row."""
    out = {}
    for name, setup, alter in SCHEMA_CHANGES:
        t = f"{TAG}_sc_{name}"
        await admin(f"DROP TABLE IF EXISTS {t}; " + setup.replace("%T", t))
        c = await connect("sc")
        q = f"SELECT * FROM {t} WHERE id = $1"
        before = [await fetch_or_error("sc", c, q, 1) for _ in range(2)]
        await admin(alter.replace("%T", t))
        after = [await fetch_or_error("sc", c, q, 1) for _ in range(3)]
        out[name] = {"before": before, "after": after}
        await c.close()
        await admin(f"DROP TABLE {t}")
    return out


@case
async def schema_change_in_transaction():
    """The same inside a transaction block, where nothing can be retried behind the client."""
    t = f"{TAG}_sct"
    await admin(f"DROP TABLE IF EXISTS {t}; CREATE TABLE {t}(id int, a int); INSERT INTO {t} VALUES (1, 10)")
    c = await connect("sct")
    q = f"SELECT * FROM {t} WHERE id = $1"
    out = {"before": await fetch_or_error("sct", c, q, 1)}
    await admin(f"ALTER TABLE {t} ALTER COLUMN a TYPE bigint")
    tr = c.transaction()
    await tr.start()
    out["in_tx"] = await fetch_or_error("sct", c, q, 1)
    await tr.rollback()
    out["after"] = await fetch_or_error("sct", c, q, 1)
    await c.close()
    await admin(f"DROP TABLE {t}")
    return out


async def fetch_on_new_connection(label, q, times):
    """A new connection (statement cache on) runs q (with 1) `times` times; its answers."""
    c = await connect(label)
    out = [await fetch_or_error(label, c, q, 1) for _ in range(times)]
    await c.close()
    return out


@case
async def fresh_prepare_after_schema_change():
    """A new connection's first prepare of a text another client prepared before a schema change."""
    t = f"{TAG}_fp"
    q = f"SELECT * FROM {t} WHERE id = $1"
    await admin(f"DROP TABLE IF EXISTS {t}; CREATE TABLE {t}(id int, a int); INSERT INTO {t} VALUES (1, 10)")
    out = {"a": await fetch_on_new_connection("fp-a", q, 1)}
    await admin(f"ALTER TABLE {t} ADD COLUMN c text DEFAULT 'new'")
    out["b"] = await fetch_on_new_connection("fp-b", q, 2)
    await admin(f"DROP TABLE {t}; CREATE TABLE {t}(id int, z text); INSERT INTO {t} VALUES (1, 'zz')")
    out["c_after_drop_create"] = await fetch_on_new_connection("fp-c", q, 2)
    await admin(f"DROP TABLE {t}")
    return out


@case
async def type_dropped_and_recreated():
    """Statements prepared before DROP TYPE + CREATE TYPE of the same name (their parameters and
    results are text; the type is used inside): fetch, executemany, and inside a savepoint."""
    ty, t = f"{TAG}_mood", f"{TAG}_moods"
    await admin(f"DROP TABLE IF EXISTS {t}; DROP TYPE IF EXISTS {ty}; CREATE TYPE {ty} AS ENUM ('calm', 'cross'); "
                f"CREATE TABLE {t}(m text)")
    q = f"SELECT $1::text::{ty}::text AS m"
    ins = f"INSERT INTO {t} VALUES ($1::text::{ty}::text)"
    recreate = f"DROP TYPE {ty}; CREATE TYPE {ty} AS ENUM ('calm', 'cross')"
    out = {}

    async def rounds(lab, c, key):
        """Run, re-create the type, run again (fetch, executemany, in a savepoint)."""
        out[key + "before"] = await fetch_or_error(lab, c, q, "cross")
        await w(lab, "executemany", c.executemany(ins, [("calm",)]))
        await admin(recreate)
        out[key + "fetch"] = [await fetch_or_error(lab, c, q, "calm") for _ in range(2)]
        await admin(recreate)
        try:
            await admin(f"TRUNCATE {t}")
            await w(lab, "executemany", c.executemany(ins, [("calm",), ("cross",)]))
            out[key + "executemany"] = await w(lab, "count", c.fetchval(f"SELECT count(*) FROM {t}"))
        except Exception as e:  # noqa: BLE001
            out[key + "executemany"] = err(e)
        await admin(recreate)
        try:
            async with c.transaction():
                try:
                    async with c.transaction():  # a savepoint
                        out[key + "savepoint"] = await fetch_or_error(lab, c, q, "cross")
                except Exception as e:  # noqa: BLE001
                    out[key + "savepoint"] = err(e)
                out[key + "after_savepoint"] = await fetch_or_error(lab, c, "SELECT 1 AS v")
        except Exception as e:  # noqa: BLE001
            out[key + "tx"] = err(e)
        await c.close()

    await rounds("ty", await connect("ty"), "")
    # without asyncpg's statement cache each query is prepared again (unnamed): PostgreSQL recovers
    await rounds("ty-nc", await connect("ty-nc", statement_cache_size=0), "nocache_")
    await admin(f"DROP TABLE {t}; DROP TYPE {ty}")
    return out


@case
async def pool_larger_than_size():
    """asyncpg.Pool of POOL_MAX connections (more than the pooler's servers): every connection is
    held at once, released (asyncpg's reset: unlock all, CLOSE ALL, UNLISTEN *, RESET ALL), then
    300 jobs through the pool, each checked."""
    pool = await w("pool", "create_pool", asyncpg.create_pool(**DSN, min_size=POOL_MAX, max_size=POOL_MAX,
                                                              timeout=30))
    held = [await w("pool", f"acquire {i}", pool.acquire()) for i in range(POOL_MAX)]
    released = 0
    for i, c in enumerate(held):
        await w(f"pool-release{i}", "release (reset query)", pool.release(c))
        released += 1

    async def job(i):
        lab = f"pool-job{i}"
        try:
            async with pool.acquire() as c:
                v = await w(lab, f"fetchval {i}", c.fetchval("SELECT $1::int * 3", i))
                return v == 3 * i
        except Exception as e:  # noqa: BLE001
            return f"{type(e).__name__}: {getattr(e, 'sqlstate', '')}"

    res = await asyncio.gather(*(job(i) for i in range(300)))
    await w("pool", "close", pool.close())
    return {"released": released, "ok": sum(1 for r in res if r is True),
            "failures": sorted(set(r for r in res if r is not True))}


@case
async def lock_taken_in_function():
    """A transaction calls a function that takes an advisory lock: the lock stays the client's
    while it is connected (a stranger cannot take it), and goes when it leaves."""
    fn = f"{TAG}_lock81"
    await admin(f"CREATE OR REPLACE FUNCTION {fn}() RETURNS void LANGUAGE sql AS "
                "$$ SELECT pg_advisory_lock(81) $$")
    c = await connect("fn")
    await w("fn", "call", c.execute(f"SELECT {fn}()"))
    out = {}
    s = await connect("fn-stranger", statement_cache_size=0)
    out["stranger_while_held"] = await w("fn-stranger", "try lock", s.fetchval("SELECT pg_try_advisory_lock(81)"))
    out["holder_still_has_it"] = await w("fn", "unlock", c.fetchval("SELECT pg_advisory_unlock(81)"))
    await c.close()
    out["stranger_after"] = await w("fn-stranger", "try lock", s.fetchval("SELECT pg_try_advisory_lock(81)"))
    await s.execute("SELECT pg_advisory_unlock_all()")
    await s.close()
    await admin(f"DROP FUNCTION {fn}()")
    return out


@case
async def prepared_statements_view():
    """pg_prepared_statements shows a client what it prepared, not other clients' statements
    (the two clients share the pooler's one server)."""
    a = await connect("ps-a", database=ONE_DB)
    b = await connect("ps-b", database=ONE_DB)
    held = []
    # asyncpg's prepare() ends with Flush, not Sync: the server stays the client's (inside the
    # implicit transaction Parse began) until its next request's Sync, so each runs at once.
    for lab, c, sql in (("ps-a", a, "SELECT 1001::int AS v"), ("ps-a", a, "SELECT 1002::int AS v"),
                        ("ps-b", b, "SELECT 2001::int AS v")):
        st = await w(lab, "prepare", c.prepare(sql))
        await w(lab, "fetch", st.fetchval())
        held.append(st)
    seen = {}
    for lab, c in (("a", a), ("b", b)):
        rows = await w("ps-" + lab, "view", c.fetch(
            "SELECT statement FROM pg_prepared_statements WHERE statement LIKE 'SELECT _00_::int AS v' ORDER BY 1"))
        seen[lab] = [r[0] for r in rows]
    await a.close()
    await b.close()
    return seen



# ---- what applications do with asyncpg beyond queries ------------------------------------------

@case
async def binary_copy():
    """copy_records_to_table (COPY ... FROM STDIN, binary), copy_from_query and copy_from_table
    (TO STDOUT), a failing COPY and a COPY in a rolled-back transaction."""
    t = f"{TAG}_copy"
    await admin(f"DROP TABLE IF EXISTS {t}; CREATE TABLE {t}(id int primary key, t text, n numeric, ts timestamptz)")
    c = await connect("copy")
    out = {}
    recs = [(i, f"row {i}", i * 1.5, datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(hours=i))
            for i in range(1, 3001)]
    out["in"] = await w("copy", "copy in", c.copy_records_to_table(t, records=recs))
    buf = io.BytesIO()
    out["out_query"] = await w("copy", "copy out", c.copy_from_query(f"SELECT id, t FROM {t} WHERE id <= $1 ORDER BY id", 500,
                                                                      output=buf, format="csv"))
    out["out_md5"] = hashlib.md5(buf.getvalue()).hexdigest()
    buf = io.BytesIO()
    out["out_table"] = await w("copy", "copy table", c.copy_from_table(t, output=buf, columns=["id", "n"], format="text"))
    out["out_table_lines"] = buf.getvalue().count(b"\n")
    try:
        await w("copy", "bad copy", c.copy_records_to_table(t, records=[(5001, "x", 1, None), (1, "dup", 1, None)]))
        out["duplicate"] = "no error"
    except Exception as e:  # noqa: BLE001
        out["duplicate"] = err(e)
    tr = c.transaction()
    await tr.start()
    await w("copy", "copy in tx", c.copy_records_to_table(t, records=[(7001, "a", 1, None)]))
    out["in_tx"] = await c.fetchval(f"SELECT count(*) FROM {t}")
    await tr.rollback()
    out["after"] = await c.fetchval(f"SELECT count(*) FROM {t}")
    await c.close()
    await admin(f"DROP TABLE {t}")
    return out


@case
async def executemany_and_cursors():
    """executemany (one Sync for the batch; an error mid-batch rolls it all back), a cursor
    iterated with prefetch and a cursor object's fetch/forward inside a transaction."""
    t = f"{TAG}_em"
    await admin(f"DROP TABLE IF EXISTS {t}; CREATE TABLE {t}(id int primary key, v text)")
    c = await connect("em")
    out = {}
    await w("em", "executemany", c.executemany(f"INSERT INTO {t} VALUES ($1, $2)", [(i, f"v{i}") for i in range(1, 401)]))
    try:
        await w("em", "executemany dup", c.executemany(f"INSERT INTO {t} VALUES ($1, $2)",
                                                        [(i, "d") for i in (1001, 1002, 5, 1003)]))
        out["dup"] = "no error"
    except Exception as e:  # noqa: BLE001
        out["dup"] = err(e)
    out["count"] = await c.fetchval(f"SELECT count(*) FROM {t}")
    async with c.transaction():
        total = n = 0
        async for r in c.cursor(f"SELECT id FROM {t} ORDER BY id", prefetch=37):
            total += r["id"]
            n += 1
        out["iter"] = [n, total]
        cur = await c.cursor(f"SELECT id, v FROM {t} WHERE id > $1 ORDER BY id", 100)
        first = await cur.fetch(5)
        await cur.forward(200)
        after = await cur.fetchrow()
        out["cursor"] = [[dict(r) for r in first], dict(after)]
    await c.close()
    await admin(f"DROP TABLE {t}")
    return out


@case
async def types_and_codecs():
    """Composite, enum, domain, array of composite and range types (asyncpg introspects each
    once per connection), a custom json codec, and binary numerics and timestamps."""
    ty = f"{TAG}_pt"
    en = f"{TAG}_mood"
    await admin(f"DROP TYPE IF EXISTS {ty}; DROP TYPE IF EXISTS {en}; DROP DOMAIN IF EXISTS {TAG}_pos; "
                f"CREATE TYPE {ty} AS (x int, label text); CREATE TYPE {en} AS ENUM ('sad', 'ok', 'happy'); "
                f"CREATE DOMAIN {TAG}_pos AS int CHECK (VALUE > 0)")
    out = {}
    for k in range(2):
        c = await connect(f"ty{k}")
        await c.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
        r = await w(f"ty{k}", "types", c.fetchrow(
            f"SELECT ROW(1, 'one')::{ty} AS p, ARRAY[ROW(2, 'two')::{ty}, ROW(3, NULL)::{ty}] AS ps, "
            f"'happy'::{en} AS mood, 5::{TAG}_pos AS pos, int4range(1, 10) AS r, '{{\"a\": [1, 2]}}'::json AS j, "
            f"123456789012345678901234.5678::numeric AS n, timestamptz '2024-05-06 07:08:09.123456+03' AS ts, "
            f"interval '1 year 2 days 03:04:05' AS iv, '\\x00ff'::bytea AS b"))
        out[f"conn{k}"] = {"p": list(r["p"]), "ps": [list(x) for x in r["ps"]], "mood": r["mood"], "pos": r["pos"],
                           "r": [r["r"].lower, r["r"].upper], "j": r["j"], "n": str(r["n"]), "ts": r["ts"].isoformat(),
                           "iv": str(r["iv"]), "b": r["b"].hex()}
        out[f"conn{k}_bad_domain"] = await fetch_or_error(f"ty{k}", c, f"SELECT $1::{TAG}_pos AS v", -1)
        await c.close()
    await admin(f"DROP TYPE {ty}; DROP TYPE {en}; DROP DOMAIN {TAG}_pos")
    return out


@case
async def transactions_and_savepoints():
    """transaction(isolation, readonly, deferrable), nested transactions (savepoints) rolled back
    and released, and an error inside a savepoint that the outer transaction survives."""
    t = f"{TAG}_tx"
    await admin(f"DROP TABLE IF EXISTS {t}; CREATE TABLE {t}(id int primary key)")
    c = await connect("tx")
    out = {}
    async with c.transaction(isolation="serializable", readonly=True, deferrable=True):
        out["ser_ro"] = [await c.fetchval("SELECT current_setting('transaction_isolation')"),
                         await c.fetchval("SELECT current_setting('transaction_read_only')")]
        try:
            await c.execute(f"INSERT INTO {t} VALUES (0)")
            out["ro_write"] = "no error"
        except Exception as e:  # noqa: BLE001
            out["ro_write"] = err(e)
    async with c.transaction(isolation="repeatable_read"):
        await c.execute(f"INSERT INTO {t} VALUES (1)")
        try:
            async with c.transaction():
                await c.execute(f"INSERT INTO {t} VALUES (2)")
                await c.execute(f"INSERT INTO {t} VALUES (1)")
        except Exception as e:  # noqa: BLE001
            out["inner"] = err(e)
        async with c.transaction():
            await c.execute(f"INSERT INTO {t} VALUES (3)")
        out["iso"] = await c.fetchval("SELECT current_setting('transaction_isolation')")
    out["rows"] = [r[0] for r in await c.fetch(f"SELECT id FROM {t} ORDER BY id")]
    out["after_iso"] = await c.fetchval("SELECT current_setting('transaction_isolation')")
    await c.close()
    await admin(f"DROP TABLE {t}")
    return out


@case
async def notices_listeners_and_timeouts():
    """A log listener gets RAISE NOTICE/WARNING; add_listener gets NOTIFY (one committed, one
    rolled back); a query timeout (asyncpg cancels) leaves the connection usable, its next
    statements not cancelled."""
    c = await connect("nl")
    n = await connect("nl-notifier", statement_cache_size=0)
    out = {}
    logs, notes = [], []
    c.add_log_listener(lambda conn, m: logs.append([m.severity, m.message]))
    await w("nl", "notice", c.execute("DO $$ BEGIN RAISE NOTICE 'hello %', 1; RAISE WARNING 'careful'; END $$"))
    ch = f"{TAG}_ch"
    got = asyncio.Event()
    await c.add_listener(ch, lambda conn, pid, channel, payload: (notes.append(payload), got.set()))
    await n.execute(f"NOTIFY {ch}, 'one'")
    tr = n.transaction()
    await tr.start()
    await n.execute(f"NOTIFY {ch}, 'rolled back'")
    await tr.rollback()
    await n.execute(f"SELECT pg_notify('{ch}', 'two')")
    for _ in range(50):
        if len(notes) >= 2:
            break
        await asyncio.sleep(0.1)
    out["notes"] = notes
    await c.remove_listener(ch, lambda *a: None)
    out["logs"] = logs
    try:
        await w("nl", "timeout", c.fetchval("SELECT pg_sleep(3)", timeout=0.5))
        out["timeout"] = "no timeout"
    except Exception as e:  # noqa: BLE001
        out["timeout"] = type(e).__name__
    out["next"] = [await w("nl", f"after timeout {k}", c.fetchval("SELECT $1::int * 2", k)) for k in range(5)]
    await c.close()
    await n.close()
    return out


@case
async def server_settings_at_startup():
    """connect(server_settings=...): search_path, DateStyle, TimeZone, statement_timeout and an
    application setting in the startup packet, four connections at once over fewer servers."""
    sch = [f"{TAG}_ss{i}" for i in range(4)]
    await admin("; ".join(f"DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s}; CREATE TABLE {s}.marker AS SELECT {i} AS v"
                          for i, s in enumerate(sch)))
    conns = [await connect(f"ss{i}", server_settings={
        "search_path": sch[i], "DateStyle": ["SQL, DMY", "German", "ISO, YMD", "Postgres"][i],
        "TimeZone": ["UTC", "Asia/Tokyo", "America/Lima", "Europe/Oslo"][i], "statement_timeout": f"{5 + i}s",
        "myapp.tenant": f"t{i}"}) for i in range(4)]
    out = {}
    for rnd in range(3):
        for i, c in enumerate(conns):
            r = await w(f"ss{i}", f"round {rnd}", c.fetchrow(
                "SELECT v, current_setting('DateStyle') AS ds, current_setting('TimeZone') AS tz, "
                "current_setting('statement_timeout') AS st, current_setting('myapp.tenant') AS tenant, "
                "(timestamptz '2024-03-05 12:00:00+00')::text AS shown FROM marker"))
            out[f"r{rnd}c{i}"] = dict(r)
    for c in conns:
        await c.close()
    await admin("; ".join(f"DROP SCHEMA {s} CASCADE" for s in sch))
    return out


async def main():
    wd = asyncio.ensure_future(watchdog())
    if len(sys.argv) > 2 and sys.argv[2] == "--list":
        print(" ".join(CASES))
    elif len(sys.argv) > 2 and sys.argv[2] == "--load":
        t0 = time.monotonic()
        r = await run_load(int(sys.argv[3]), int(sys.argv[4]))
        print(f"RESULT ok={r['ok']} bad={r['bad']} final_bad={len(r['final_bad'])} "
              f"seconds={time.monotonic() - t0:.1f}", flush=True)
        for e in r["errors"] + r["final_bad"]:
            print("  " + e)
    else:
        for name in sys.argv[2:] or list(CASES):
            try:
                out = await CASES[name]()
            except Exception as e:  # noqa: BLE001
                out = {"exception": f"{type(e).__name__}: {getattr(e, 'sqlstate', None) or e}"}
            print(json.dumps({"case": name, "out": out}, default=str), flush=True)
    wd.cancel()


asyncio.run(main())
