#!/usr/bin/python3
"""psycopg 3 (Debian's python3-psycopg) the way applications use it beyond plain queries, against
one target (PostgreSQL direct or tusk). Run by tests/integration/test_drivers.py (direct and
through tusk, outputs compared).

  psycopg_suite.py PORT [CASE ...]    the cases (no case: all); one JSON line per case:
                                      {"case": NAME, "out": WHAT IT SAW}
  psycopg_suite.py PORT --list        the cases' names
Env: PGHOST (127.0.0.1), PGUSER (tusk_trust), PGDATABASE (tusk_test), TAG (prefix of the tables
this run makes), TLS_ALL=1 with TLS_CA (every connection over TLS, checked against TLS_CA).
"out" holds only what a correct server answers the same way every run. Exit 0 whatever the
cases saw; 3 when the watchdog fired: a connection made no progress for 10 s (it prints which
one and what it was doing)."""

import json
import os
import sys
import threading
import time

import psycopg

PORT = int(sys.argv[1])
TAG = os.environ.get("TAG", "pp")
CONNINFO = dict(host=os.environ.get("PGHOST", "127.0.0.1"), port=PORT, user=os.environ.get("PGUSER", "tusk_trust"),
                dbname=os.environ.get("PGDATABASE", "tusk_test"), connect_timeout=30)
if os.environ.get("TLS_ALL"):
    CONNINFO.update(sslmode="verify-ca", sslrootcert=os.environ["TLS_CA"])
else:
    CONNINFO.update(sslmode="disable")
STALL_S = 10.0

# ---- watchdog: every connection says what it is doing; none may sit still for 10 s ------------
doing = {}
lock = threading.Lock()


def step(label, what):
    with lock:
        doing[label] = (what, time.monotonic())


def done(label):
    with lock:
        doing.pop(label, None)


def watchdog():
    while True:
        time.sleep(0.5)
        now = time.monotonic()
        with lock:
            items = list(doing.items())
        for label, (what, since) in items:
            if now - since > STALL_S:
                print(json.dumps({"stall": label, "doing": what, "seconds": round(now - since)}), flush=True)
                os._exit(3)


def connect(label, autocommit=True, **kw):
    step(label, "connect")
    c = psycopg.connect(**CONNINFO, autocommit=autocommit, **kw)
    done(label)
    return c


def run(label, c, sql, params=None, **kw):
    step(label, sql if isinstance(sql, str) else "statement")
    try:
        return c.execute(sql, params, **kw)
    finally:
        done(label)


def err(e):
    return {"error": getattr(e, "sqlstate", None) or type(e).__name__}


def admin(sql):
    with connect("admin") as c:
        run("admin", c, sql)


CASES = {}


def case(f):
    CASES[f.__name__] = f
    return f


@case
def pipeline_mode():
    """Pipeline mode: statements sent without waiting, a Sync now and then; an error in the
    middle aborts the rest up to the next Sync; a pipeline inside a transaction block."""
    t = f"{TAG}_pl"
    admin(f"DROP TABLE IF EXISTS {t}; CREATE TABLE {t}(id int primary key, v text)")
    out = []
    with connect("pl") as c:
        try:
            with c.pipeline() as p:
                run("pl", c, f"INSERT INTO {t} VALUES (%s, %s)", (1, "a"))
                cnt = run("pl", c, f"SELECT count(*) FROM {t}")
                p.sync()
                out.append(cnt.fetchone())
                run("pl", c, f"INSERT INTO {t} VALUES (%s, %s)", (1, "dup"))
                run("pl", c, "SELECT 42")
                p.sync()
        except psycopg.Error as e:
            out.append(err(e))
        out.append(run("pl", c, f"SELECT count(*) FROM {t}").fetchone())
        with c.transaction():
            with c.pipeline():
                for i in range(2, 60):
                    run("pl", c, f"INSERT INTO {t} VALUES (%s, %s)", (i, f"v{i}"))
                total = run("pl", c, f"SELECT sum(id) FROM {t}")
        out.append(total.fetchone())
        with c.pipeline():
            curs = [run("pl", c, "SELECT %s::int * 3", (i,)) for i in range(40)]
        out.append(sum(x.fetchone()[0] for x in curs))
    admin(f"DROP TABLE {t}")
    return out


@case
def prepared_across_schema_change():
    """psycopg prepares a statement after prepare_threshold runs (2 here), then another
    connection changes the table under it."""
    t = f"{TAG}_ps"
    admin(f"DROP TABLE IF EXISTS {t}; CREATE TABLE {t}(id int primary key, a int); INSERT INTO {t} VALUES (1, 10)")
    with connect("ps", prepare_threshold=2) as c:
        s = sum(run("ps", c, "SELECT %s::int * 2", (i,)).fetchone()[0] for i in range(20))
        before = [run("ps", c, f"SELECT * FROM {t} WHERE id = %s", (1,)).fetchone() for _ in range(3)]
        admin(f"ALTER TABLE {t} ADD COLUMN extra int DEFAULT 7")
        after = []
        for _ in range(4):
            try:
                after.append(run("ps", c, f"SELECT * FROM {t} WHERE id = %s", (1,)).fetchone())
            except psycopg.Error as e:
                after.append(err(e))
    admin(f"DROP TABLE {t}")
    return {"sum": s, "before": before, "after": after}


@case
def named_cursors():
    """Server-side cursors: DECLARE and FETCH itersize rows at a time inside a transaction, and
    one WITH HOLD read after its transaction committed."""
    out = []
    with connect("nc", autocommit=False) as c:
        with c.cursor(name="nc1") as cur:
            cur.itersize = 7
            step("nc", "fetch nc1")
            cur.execute("SELECT g FROM generate_series(1, 100) g")
            out.append(sum(x[0] for x in cur))
            done("nc")
        c.commit()
        with c.cursor(name="nc2", withhold=True) as cur:
            step("nc", "fetch nc2")
            cur.execute("SELECT g FROM generate_series(1, 30) g")
            c.commit()
            out.append(sum(x[0] for x in cur.fetchmany(10)))
            out.append(len(cur.fetchall()))
            done("nc")
        c.commit()
    return out


@case
def copy_rows():
    """COPY FROM STDIN with write_row, COPY TO STDOUT read row by row, a failing COPY."""
    t = f"{TAG}_cp"
    admin(f"DROP TABLE IF EXISTS {t}; CREATE TABLE {t}(id int primary key, v text)")
    out = {}
    with connect("cp") as c, c.cursor() as cur:
        step("cp", "copy in")
        with cur.copy(f"COPY {t} (id, v) FROM STDIN") as cp:
            for i in range(1, 2001):
                cp.write_row((i, f"c{i}"))
        step("cp", "copy out")
        rows = []
        with cur.copy(f"COPY (SELECT id, v FROM {t} ORDER BY id) TO STDOUT") as cp:
            rows.extend(cp.rows())
        out["out"] = [len(rows), rows[0], rows[-1]]
        step("cp", "bad copy")
        try:
            with cur.copy(f"COPY {t} (id, v) FROM STDIN") as cp:
                cp.write_row((5000, "x"))
                cp.write_row((1, "dup"))
            out["dup"] = "no error"
        except psycopg.Error as e:
            out["dup"] = err(e)
        done("cp")
        out["after"] = run("cp", c, f"SELECT count(*) FROM {t}").fetchone()[0]
    admin(f"DROP TABLE {t}")
    return out


@case
def two_phase_commit():
    """tpc_begin / tpc_prepare (PREPARE TRANSACTION) / tpc_commit, and a prepared transaction
    another connection finishes (tpc_recover, tpc_rollback)."""
    t = f"{TAG}_tpc"
    admin(f"DROP TABLE IF EXISTS {t}; CREATE TABLE {t}(id int primary key)")
    out = {}
    c = connect("tpc", autocommit=False)
    with connect("tpc-look") as look:
        c.tpc_begin(c.xid(1, f"{TAG}-g1", "b"))
        run("tpc", c, f"INSERT INTO {t} VALUES (1)")
        step("tpc", "prepare")
        c.tpc_prepare()
        out["visible_prepared"] = run("tpc-look", look, f"SELECT count(*) FROM {t}").fetchone()[0]
        c.tpc_commit()
        done("tpc")
        out["visible_committed"] = run("tpc-look", look, f"SELECT count(*) FROM {t}").fetchone()[0]
        c.tpc_begin(c.xid(1, f"{TAG}-g2", "b"))
        run("tpc", c, f"INSERT INTO {t} VALUES (2)")
        c.tpc_prepare()
    c.close()  # left prepared: another connection finishes it
    with connect("tpc-other", autocommit=False) as o:
        mine = [x for x in o.tpc_recover() if x.gtrid == f"{TAG}-g2"]
        out["recovered"] = len(mine)
        for x in mine:
            o.tpc_rollback(x)
    with connect("tpc-look") as look:
        out["rows"] = [r[0] for r in run("tpc-look", look, f"SELECT id FROM {t} ORDER BY id").fetchall()]
    admin(f"DROP TABLE {t}")
    return out


@case
def binary_types_notices_notifies():
    """Binary results, a notice handler (RAISE NOTICE), LISTEN and a NOTIFY from another
    connection read with notifies()."""
    out = {}
    with connect("bn") as c:
        r = run("bn", c, "SELECT %s::numeric, %s::timestamptz, %s::jsonb, %s::bytea, ARRAY[1, 2], %s::interval",
                ("1.5", "2024-01-01 00:00+00", '{"a": 1}', b"\x00\x01", "1 day 02:00"), binary=True).fetchone()
        out["binary"] = [str(x) for x in r]
        notices = []
        c.add_notice_handler(lambda d: notices.append([d.severity, d.message_primary]))
        run("bn", c, "DO $$ BEGIN RAISE NOTICE 'hi %', 2; RAISE WARNING 'careful'; END $$")
        out["notices"] = notices
        run("bn", c, f"LISTEN {TAG}_ch")
        with connect("bn-notifier") as n:
            run("bn-notifier", n, f"NOTIFY {TAG}_ch, 'x'")
        step("bn", "notifies")
        got = []
        for note in c.notifies():
            got.append([note.channel.replace(TAG, "T"), note.payload])
            break
        done("bn")
        out["notifies"] = got
    return out


def main():
    threading.Thread(target=watchdog, daemon=True).start()
    if len(sys.argv) > 2 and sys.argv[2] == "--list":
        print(" ".join(CASES))
        return
    for name in sys.argv[2:] or list(CASES):
        try:
            out = CASES[name]()
        except Exception as e:  # noqa: BLE001
            out = {"exception": f"{type(e).__name__}: {getattr(e, 'sqlstate', None) or e}"}
        print(json.dumps({"case": name, "out": out}, default=str), flush=True)


main()
