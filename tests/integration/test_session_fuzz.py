"""Random sequences of what clients do to their session settings, run straight on PostgreSQL and
through tusk, the two compared step by step (differential; any difference fails). Three
clients, two with startup settings (options, application_name), interleaved at random over a
pool of fewer servers than clients: SET, RESET, RESET ALL and SET ... TO DEFAULT through a
Query, an unnamed Parse/Bind/Execute and a named statement run again and again (psycopg's
prepare=True), transactions that commit or roll back (or fail, and are healed by a rollback to a
savepoint), a savepoint rolled back to, top-level
set_config(), temporary tables and session advisory locks (which pin), psycopg's pipeline mode (several statements, one Sync), and clients leaving
and coming back. After each step a client may look at its
session: the settings, the application_name, DateStyle and standard_conforming_strings it was
last told (ParameterStatus), whether it
has the temporary table and how many advisory locks it holds.

Looks happen between transactions and between the statements of a transaction block (not
inside a Query or a pipeline: there a RESET of a startup setting shows the server's default
to the statements after it until the commit, docs/pooling.md, "RESET"). What a function does
to settings (docs/pooling.md) is not generated. Seeds are fixed: a failure names
its seed and the steps up to the first difference, and runs again the same way."""

import os
import random

import psycopg
import pytest

from conftest import DIRECT, SLOW, TEST_DB, Tusk, connect, wait_until
from txn_util import txn_pool

USER = "tusk_trust"
SEEDS = range(int(os.environ.get("TUSK_FUZZ_SEEDS", "60")))
STEPS = 40
SHOW = ("select current_setting('work_mem'), current_setting('search_path'), "
        "current_setting('statement_timeout'), current_setting('application_name'), current_setting('DateStyle'), "
        "current_setting('standard_conforming_strings'), to_regclass('pg_temp.sf_t') is not null, "
        "(select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid())")
VALUES = {
    "work_mem": ["'5MB'", "'6MB'", "'7MB'"],
    "search_path": ["sf_x, public", "public", "sf_y"],
    "statement_timeout": ["'1234ms'", "'2345ms'"],
    "application_name": ["'sf-p'", "'sf-q'"],
    "DateStyle": ["'SQL, DMY'", "'German'"],
    "standard_conforming_strings": ["off", "on"],
}
STARTUP = [
    {"application_name": "sf-a0", "options": "-c work_mem=3MB -c search_path=sf_x,public"},
    {},
    {"options": "-c statement_timeout=7777ms -c DateStyle=Postgres,MDY"},
]
# A client pinned to its server keeps it: a pool of one server serves the others only when
# nothing pins (a top-level set_config() of a setting the server does not report does).
# (mode, servers, pins, extra pool keys, environment, id)
POOLS = [("transaction", 1, False, {}, {}, "transaction1"),
         ("transaction", 3, True, {}, {}, "transaction3"),
         ("transaction", 3, True, {"cache": "on"}, {}, "transaction3-cache"),
         ("statement", 2, False, {}, {}, "statement2"),
         ("session", 3, True, {}, {"TUSK_TEST_BALANCE": "pingpong"}, "session3-moving")]


def told(c):
    """The reported settings the client was last told (ParameterStatus) that steps change."""
    return tuple(c.info.parameter_status(n) for n in ("application_name", "DateStyle", "standard_conforming_strings"))


def statement(rng, lex=True):
    """One SET/RESET statement's text (lex=False: none that changes how SQL is read, which
    pins a client whose pipeline goes on behind it)."""
    name = rng.choice([n for n in sorted(VALUES) if lex or n != "standard_conforming_strings"])
    k = rng.random()
    if k < 0.5:
        return f"set {name} = {rng.choice(VALUES[name])}"
    if k < 0.55:
        return f"set local {name} = {rng.choice(VALUES[name])}"
    if k < 0.78:
        return f"reset {name}"
    if k < 0.88:
        return "reset all" if lex else f"reset {name}"
    return f"set {name} to default"


def some(rng):
    """One statement and the protocol it goes by; in a Query, sometimes two statements."""
    proto = rng.choice(["simple", "unnamed", "named"])
    if proto == "simple" and rng.random() < 0.25:
        return f"{statement(rng)}; {statement(rng)}", proto
    return statement(rng), proto


def in_transaction(rng):
    """Statements inside a transaction block: changes, savepoints (nested, released, rolled
    back to), and a set_config() now and then."""
    out, savepoints = [], []
    for _ in range(rng.randint(1, 5)):
        k = rng.random()
        if k < 0.55:
            out.append(some(rng))
        elif k < 0.7:
            name = rng.choice(["s", "t"])
            savepoints.append(name)
            out.append((f"savepoint {name}", "simple"))
        elif k < 0.82 and savepoints:
            out.append((f"rollback to savepoint {rng.choice(savepoints)}", rng.choice(["simple", "unnamed"])))
        elif k < 0.9 and savepoints:
            name = savepoints.pop()
            out.append((f"release savepoint {name}", "simple"))
            savepoints = [p for p in savepoints if p != name]
        elif k < 0.95:
            out.append(("select set_config('application_name', 'sf-r', false)", "simple"))
        else:  # an error: the rest fails (25P02) until a ROLLBACK TO heals the transaction
            out.append(("select 1/0", rng.choice(["simple", "unnamed"])))
        if rng.random() < 0.35:
            out.append(("look", None))  # what the transaction's next statement sees
    return out


def script(seed, pins=True, blocks=True):
    """[(client, [(sql, protocol)...], look)]: the steps of one sequence (blocks=False: no
    transaction blocks, which statement pooling refuses)."""
    rng = random.Random(seed)
    steps = []
    for _ in range(STEPS):
        who = rng.randrange(len(STARTUP))
        k = rng.random()
        if k < 0.45:
            body = [some(rng)]
        elif k < 0.68 and not blocks:
            body = [some(rng)]
        elif k < 0.68:
            body = [("begin", "simple"), *in_transaction(rng), (rng.choice(["commit", "rollback"]), "simple")]
        elif k < 0.75:
            # psycopg's pipeline mode: the statements go out together, one Sync at the end
            body = [("pipeline", None), *[(statement(rng, pins), rng.choice(["unnamed", "named"]))
                                          for _ in range(rng.randint(2, 4))], ("sync", None)]
        elif k < 0.78:
            body = [(rng.choice(["discard all", "deallocate all"]), "simple")]
        elif k < 0.81 and pins:
            # state that lives in the server process: pins (no other client may see it)
            body = [(rng.choice(["create temp table if not exists sf_t (a int)",
                                 f"select pg_try_advisory_lock({rng.randint(1, 2)})",
                                 "select pg_advisory_unlock_all()"]), rng.choice(["simple", "unnamed"]))]
        elif k < 0.84:
            name = rng.choice(["work_mem", "application_name"] if pins else ["application_name"])
            value = rng.choice(VALUES[name]).strip("'")
            body = [(f"select set_config('{name}', '{value}', false)", rng.choice(["simple", "unnamed"]))]
        elif k < 0.9:
            body = [("reconnect", None)]
        else:
            body = []
        steps.append((who, body, rng.random() < 0.6))
    return steps


def run(port, seed, pins=True, blocks=True):
    """What the clients saw, step by step."""
    conns = [None] * len(STARTUP)

    def conn(i):
        if conns[i] is None:
            conns[i] = connect(port, user=USER, prepare_threshold=None, **STARTUP[i])
        return conns[i]

    seen = []
    try:
        for who, body, look in script(seed, pins, blocks):
            c = conn(who)
            out, pipe = [], None
            for sql, proto in body:
                if sql == "reconnect":
                    c.close()
                    conns[who] = None
                    c = conn(who)
                    continue
                if sql == "look":
                    try:
                        out.append((c.execute(SHOW, prepare=False).fetchone(), told(c)))
                    except psycopg.Error as e:
                        out.append(e.sqlstate or type(e).__name__)
                    continue
                if sql == "pipeline":
                    pipe = c.pipeline()
                    pipe.__enter__()
                    continue
                try:
                    if sql == "sync":
                        pipe, p = None, pipe
                        p.__exit__(None, None, None)
                    elif proto == "simple":
                        cur = c.execute(sql, prepare=False)
                    elif proto == "unnamed":
                        cur = c.execute(sql, binary=True, prepare=False)
                    else:
                        cur = c.execute(sql, prepare=True)
                    out.append(cur.fetchone() if sql.startswith("select pg_try") else None)
                except psycopg.Error as e:
                    out.append(e.sqlstate or type(e).__name__)
            if pipe is None and c.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
                c.execute("rollback", prepare=False)
            if look:
                out.append(c.execute(SHOW, prepare=False).fetchone())
                out.append(told(c))
            seen.append((who, body, out))
    finally:
        for c in conns:
            if c is not None:
                c.close()
    return seen


@pytest.fixture(scope="module")
def sf_db(pg):
    with pg.admin(TEST_DB) as c:
        for s in ("sf_x", "sf_y"):
            c.execute(f"create schema if not exists {s}")
    yield
    with pg.admin(TEST_DB) as c:
        c.execute("drop schema if exists sf_x, sf_y")


@pytest.fixture(scope="module")
def direct_runs(pg, sf_db):
    out = {}
    for seed in SEEDS:
        for pins, blocks in ((False, True), (True, True), (False, False)):
            out[seed, pins, blocks] = run(pg.port, seed, pins, blocks)
            locks_gone(pg)
    return out


def locks_gone(pg):
    """A sequence's clients have left: their advisory locks go with their sessions, which a
    pooler gives up after the client left (the server's reset), a backend as it exits. The
    next sequence starts once they are gone, or its first try_lock may still meet them."""
    with pg.admin(TEST_DB) as a:
        wait_until(lambda: a.execute(
            "select count(*) from pg_locks l join pg_database d on d.oid = l.database "
            "where locktype = 'advisory' and d.datname = current_database() and classid = 0 and objid in (1, 2) "
            "and objsubid = 1").fetchone()[0] == 0, 10 * SLOW, what="the last sequence's advisory locks to go")


@pytest.mark.parametrize("mode,size,pins,extra,env", [p[:5] for p in POOLS], ids=[p[5] for p in POOLS])
def test_random_session_steps_match_postgresql(pg, sf_db, direct_runs, tmp_path, mode, size, pins, extra, env):
    if DIRECT:
        pytest.skip("the reference itself")
    blocks = mode != "statement"
    t = Tusk(tmp_path, pg.port, pools=[txn_pool(size, mode=mode, **extra)], env=env)
    t.start()
    try:
        for seed in SEEDS:
            want, got = direct_runs[seed, pins, blocks], run(t.port, seed, pins, blocks)
            locks_gone(pg)
            for k, (w, g) in enumerate(zip(want, got)):
                assert g == w, (f"seed {seed}, step {k}: through tusk {g[2]}, direct {w[2]}; steps so far:\n"
                                + "\n".join(f"  {i}: client {s[0]}: {s[1]} -> {s[2]}" for i, s in enumerate(want[:k + 1])))
    finally:
        problems = t.stop()
    assert not problems, problems
