"""pg_dump and pg_restore through a transaction pool, as operators run them through the pooler
their applications use: the dump is PostgreSQL's own, byte for byte (but for the random
\\restrict key of 15.14+), and a restore through tusk gives a database whose dump is the source's.
The database holds what a dump walks in its own ways: an enum, a view, a materialized view, a
function, a partitioned table, row security, a GIN index, a sequence's position, large objects
(pg_restore writes them with the fastpath function calls). Parallel dump (-j: an exported
snapshot that the workers SET TRANSACTION SNAPSHOT to) and parallel and single-transaction
restores, each through a pool of fewer servers than the dump has connections."""

import subprocess

import pytest

from conftest import PG_BIN, SLOW
from txn_util import txn_pool

SRC = "dr_src"
OBJECTS = """
create schema app;
create type app.mood as enum ('sad', 'ok');
create table app.t (id serial primary key, m app.mood, j jsonb, b bytea, arr int[], ts timestamptz);
insert into app.t (m, j, b, arr, ts)
  select case when g % 2 = 0 then 'sad' else 'ok' end::app.mood, jsonb_build_object('g', g),
         decode(md5(g::text), 'hex'), array[g, g + 1], timestamptz '2024-01-01 00:00+00' + g * interval '1 hour'
  from generate_series(1, 3000) g;
create view app.v as select m, count(*) from app.t group by m;
create materialized view app.mv as select * from app.v;
create function app.f(x int) returns int language plpgsql as $$ begin return x * 2; end $$;
create table app.parent (id int, k text) partition by list (k);
create table app.p1 partition of app.parent for values in ('a');
create table app.p2 partition of app.parent for values in ('b');
insert into app.parent select g, case when g % 2 = 0 then 'a' else 'b' end from generate_series(1, 1000) g;
alter table app.t enable row level security;
create policy p on app.t using (m = 'ok');
create index on app.t using gin (j);
create sequence app.s start 42;
select setval('app.s', 100);
select lo_from_bytea(0, decode(repeat('ab', 40000), 'hex'));
select lo_from_bytea(0, 'hello'::bytea);
comment on table app.t is 'the table';
"""


def tool(name, *args):
    p = subprocess.run([str(PG_BIN / name), *args], capture_output=True, text=True, timeout=120 * SLOW)
    assert p.returncode == 0, f"{name} {' '.join(args)}: exit {p.returncode}\n{p.stderr[-2000:]}"
    return p


def dump_sql(port, db, path):
    """The plain SQL of db's dump, without the \\restrict lines (a random key per dump)."""
    tool("pg_dump", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", db, "-f", str(path))
    return "\n".join(l for l in path.read_text().splitlines() if "restrict " not in l)


@pytest.fixture(scope="module")
def src_db(pg):
    pg.execute(f"drop database if exists {SRC}")
    pg.execute(f"create database {SRC}")
    with pg.admin(SRC) as c:
        c.execute(OBJECTS)
    yield SRC
    pg.execute(f"drop database if exists {SRC}")


def test_dump_and_restore_through_a_transaction_pool(pg, tusk, src_db, tmp_path):
    t = tusk(pools=[txn_pool(3)], pool_wait_timeout=f"{int(60 * SLOW)}s")
    want = dump_sql(pg.port, src_db, tmp_path / "direct.sql")
    assert "app.parent" in want and "lo_create" in want.replace("pg_catalog.", "")

    # A plain dump through tusk, and a parallel one (leader + 2 workers on 3 servers).
    assert dump_sql(t.port, src_db, tmp_path / "tusk.sql") == want
    tool("pg_dump", "-h", "127.0.0.1", "-p", str(t.port), "-U", "postgres", "-d", src_db, "-Fd", "-j", "2",
         "-f", str(tmp_path / "par"))
    tool("pg_restore", "-f", str(tmp_path / "par.sql"), str(tmp_path / "par"))
    got = "\n".join(l for l in (tmp_path / "par.sql").read_text().splitlines() if "restrict " not in l)
    assert got == want, "a parallel dump through tusk differs from PostgreSQL's"

    # Restores through tusk from a custom-format dump, then dumped straight from PostgreSQL.
    tool("pg_dump", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-d", src_db, "-Fc",
         "-f", str(tmp_path / "src.fc"))
    targets = {"dr_single": ["--single-transaction"], "dr_plain": [], "dr_par": ["-j", "2"]}
    problems = []
    try:
        for db, how in targets.items():
            pg.execute(f"drop database if exists {db}")
            pg.execute(f"create database {db}")
            tool("pg_restore", "-h", "127.0.0.1", "-p", str(t.port), "-U", "postgres", "-d", db, *how,
                 str(tmp_path / "src.fc"))
            assert dump_sql(pg.port, db, tmp_path / f"{db}.sql") == want, f"pg_restore {how} through tusk"
    finally:
        problems = t.stop()  # its servers hold the databases
        for db in targets:
            pg.execute(f"drop database if exists {db}")
    assert not problems, problems
