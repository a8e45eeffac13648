"""A Parse of a statement name the client uses already, straight to PostgreSQL and through tusk
in every pooling mode (differential: any difference fails). PostgreSQL answers 42P05, keeps
the statement it has, and skips to the Sync, rolling back what the implicit transaction did
before; in a failed transaction block it answers 25P02. Through a transaction or statement
pool the server holds tusk's names (tusk_<hash>), not the client's, so tusk must answer as
PostgreSQL would: before, it replaced the statement (docs/pooling.md)."""

import struct

import pytest

import pgwire
from conftest import SLOW, TEST_DB

SYNC = pgwire.message(b"S")
TABLE = "prepared_names_t"


def parse(name, sql):
    return pgwire.message(b"P", name + b"\0" + sql + b"\0\0\0")


def bind(stmt, portal=b""):
    return pgwire.message(b"B", portal + b"\0" + stmt + b"\0" + struct.pack("!HHH", 0, 0, 0))


def execute(portal=b""):
    return pgwire.message(b"E", portal + b"\0\0\0\0\0")


def run(stmt):
    return bind(stmt) + execute()


def close(stmt):
    return pgwire.message(b"C", b"S" + stmt + b"\0")


def q(sql):
    return pgwire.message(b"Q", sql + b"\0")


STEPS = [
    parse(b"s1", b"select 1") + SYNC,
    parse(b"s1", b"select 2") + SYNC,                              # 42P05, s1 stays "select 1"
    parse(b"s1", b"select 1") + run(b"s1") + SYNC,                 # the same text: 42P05 too
    run(b"s1") + SYNC,                                             # still 1
    # earlier work of the implicit transaction rolls back with it
    parse(b"", f"insert into {TABLE} values (1)".encode()) + run(b"") + parse(b"s1", b"select 3") + run(b"s1") + SYNC,
    q(f"select count(*) from {TABLE}".encode()),
    # a name parsed twice in one pipeline: the second fails, the first stays
    parse(b"s2", b"select 20") + parse(b"s2", b"select 21") + SYNC,
    run(b"s2") + SYNC,
    # several Parses and a Sync, prepared ahead (tusk answers these without a server when it may)
    parse(b"s3", b"select 30") + parse(b"s4", b"select 40") + parse(b"s3", b"select 31") + SYNC,
    run(b"s3") + run(b"s4") + SYNC,
    parse(b"s5", b"select 50") + parse(b"s1", b"select 51") + SYNC,
    run(b"s5") + SYNC,
    # closed, the name is free again
    pgwire.message(b"C", b"Ss1\0") + parse(b"s1", b"select 7") + run(b"s1") + SYNC,
    # a Close behind an error in the same pipeline is skipped with the rest: the statement stays
    parse(b"s2", b"select 22") + close(b"s2") + SYNC,
    run(b"s2") + SYNC,
    parse(b"", b"select 1/0") + run(b"") + close(b"s4") + SYNC,
    run(b"s4") + SYNC,
    parse(b"", b"select 1/0") + run(b"") + close(b"s5") + parse(b"s5", b"select 55") + SYNC,
    run(b"s5") + SYNC,
    # a Parse that fails, or that the server skips after an error, makes no statement: the name
    # is free for the next one (node-postgres parses a failed name again at its next use)
    # (with a Bind behind: a Parse and a Sync alone tusk answers without a server, docs/pooling.md)
    parse(b"s7", b"select * from prepared_names_missing") + run(b"s7") + SYNC,
    parse(b"s7", b"select 70") + run(b"s7") + SYNC,
    parse(b"s8", b"select * from prepared_names_missing") + parse(b"s9", b"select 9") + run(b"s9") + SYNC,
    parse(b"s9", b"select 90") + parse(b"s8", b"select 80") + run(b"s9") + run(b"s8") + SYNC,
]
# Inside a transaction block (not in statement pooling, which refuses one): 42P05 fails the
# block, then a Parse gets 25P02 whatever its name.
IN_BLOCK = [
    q(b"begin"),
    parse(b"s1", b"select 4") + SYNC,
    parse(b"s1", b"select 5") + SYNC,
    parse(b"s6", b"select 6") + SYNC,
    q(b"rollback"),
    run(b"s1") + SYNC,
]


def steps(port, block):
    """Each step's replies: kinds, an error's SQLSTATE and message, other messages whole."""
    c = pgwire.RawClient("127.0.0.1", port, timeout=10 * SLOW)
    c.startup("tusk_trust", TEST_DB)
    out = []
    try:
        for step in STEPS + (IN_BLOCK if block else []):
            c.send(step)
            got = []
            for k, v in c.read_until_ready():
                if k == b"E":
                    f = pgwire.parse_error_fields(v)
                    v = (f["C"], f["M"])
                got.append((k, v))
            out.append(got)
    finally:
        c.close()
    return out


@pytest.fixture
def table(pg):
    with pg.admin(TEST_DB) as c:
        c.execute(f"drop table if exists {TABLE}")
        c.execute(f"create table {TABLE} (i int)")
        c.execute(f"grant all on {TABLE} to public")
    yield
    with pg.admin(TEST_DB) as c:
        c.execute(f"drop table {TABLE}")


@pytest.mark.parametrize("mode,extra", [("transaction", {}), ("statement", {}), ("session", {}),
                                        ("transaction", {"cache": "on"})],
                         ids=["transaction", "statement", "session", "transaction-cache"])
def test_parse_of_a_name_in_use_answers_as_postgresql(tusk, pg, table, mode, extra):
    block = mode != "statement"
    direct = steps(pg.port, block)
    assert direct[1] == [(b"E", ("42P05", 'prepared statement "s1" already exists')), (b"Z", b"I")], direct
    assert direct[3][1] == (b"D", b"\0\1\0\0\0\0011") and direct[5][1] == (b"D", b"\0\1\0\0\0\0010"), direct
    if block:
        assert [k for k, _ in direct[-3]] == [b"E", b"Z"] and direct[-3][0][1][0] == "25P02", direct
    t = tusk(pools=[{"database": "*", "user": "*", "service": "main", "mode": mode, "size": 2, **extra}])
    via = steps(t.port, block)
    for i, (want, got) in enumerate(zip(direct, via)):
        assert got == want, (i, (STEPS + IN_BLOCK)[i], got, want)
    assert len(via) == len(direct)
