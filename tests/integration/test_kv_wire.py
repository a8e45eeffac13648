"""The kv database's side of the wire, spoken raw: the extended protocol's Describe, Close and
Execute of what is and is not there, skipping until Sync after an error, a request longer than
the client's read buffer, and requests the kv database does not serve (frontend/vdb.c with
kv/front.c)."""

import struct
import sys

import psycopg
import pytest
from psycopg.types.json import Jsonb

import pgwire
from conftest import REPO, SLOW
from kv_util import Parade

sys.path.insert(0, str(REPO / "tests" / "drivers"))
import harness  # noqa: E402

pytestmark = pytest.mark.tusk_only

TEXT, JSONB = 25, 3802


@pytest.fixture(scope="module")
def zone(workdir):
    p = Parade(workdir / "kv-wire", ["w1"])
    p.setup()
    z = p.zones[0]
    z.start_tusk()
    yield z
    p.destroy()


def raw(zone):
    c = pgwire.RawClient("127.0.0.1", zone.tusk.port)
    c.startup("postgres", "kv")
    return c


def parse(name, sql, oids=()):
    return pgwire.message(b"P", name + b"\0" + sql + b"\0" + struct.pack(f"!H{len(oids)}I", len(oids), *oids))


bind = pgwire.bind_message


def describe(kind, name):
    return pgwire.message(b"D", kind + name + b"\0")


execute = pgwire.execute_message


def close(kind, name):
    return pgwire.message(b"C", kind + name + b"\0")


SYNC = pgwire.message(b"S")


def columns(body, formats=False):
    """RowDescription body -> [(name, type oid)] (formats: [(name, type oid, format code)])."""
    (n,) = struct.unpack("!H", body[:2])
    off, out = 2, []
    for _ in range(n):
        end = body.index(b"\0", off)
        name = body[off:end].decode()
        oid = struct.unpack("!I", body[end + 7 : end + 11])[0]
        fmt = struct.unpack("!H", body[end + 17 : end + 19])[0]
        out.append((name, oid, fmt) if formats else (name, oid))
        off = end + 19
    return out


def kinds(msgs):
    return [k for k, _ in msgs]


def error_of(msgs):
    errors = [pgwire.parse_error_fields(b) for k, b in msgs if k == b"E"]
    assert len(errors) == 1, msgs
    return errors[0]


def test_describe_execute_and_close_of_a_named_statement(zone):
    zone.put("wire-1", {"n": 1})
    c = raw(zone)
    try:
        c.send(parse(b"s1", b"select kv.get($1, $2) as v") + describe(b"S", b"s1") + SYNC)
        msgs = c.read_until_ready()
        assert kinds(msgs) == [b"1", b"t", b"T", b"Z"], msgs
        assert msgs[1][1] == struct.pack("!HII", 2, TEXT, TEXT)
        assert columns(msgs[2][1]) == [("v", JSONB)]

        c.send(bind(b"", b"s1", [b"default", b"wire-1"]) + describe(b"P", b"") + execute() + SYNC)
        msgs = c.read_until_ready()
        assert kinds(msgs) == [b"2", b"T", b"D", b"C", b"Z"], msgs
        assert columns(msgs[1][1]) == [("v", JSONB)]
        assert msgs[2][1].endswith(b'{"n": 1}') and msgs[3][1] == b"SELECT 1\0"

        # A portal runs once; after Close the statement is gone too.
        c.send(execute() + SYNC)
        fields = error_of(msgs := c.read_until_ready())
        assert kinds(msgs) == [b"E", b"Z"] and fields["C"] == "34000", msgs
        assert fields["M"].startswith("tusk ") and 'portal "" does not exist' in fields["M"], fields
        c.send(close(b"S", b"s1") + close(b"S", b"never-was") + close(b"P", b"") + SYNC)
        assert kinds(c.read_until_ready()) == [b"3", b"3", b"3", b"Z"]
        c.send(describe(b"S", b"s1") + SYNC)
        fields = error_of(msgs := c.read_until_ready())
        assert fields["C"] == "26000" and 'prepared statement "s1" does not exist' in fields["M"], fields
    finally:
        c.close()


def test_a_client_keeps_256_named_statements_and_a_closed_one_makes_room(zone):
    """As many as pgjdbc's statement cache holds by default (node-postgres never closes its
    named statements): each answers its own call; the 257th is refused with 53400 and the
    session goes on; a Close makes room for a new name."""
    zone.put("wire-many", {"n": 7})
    c = raw(zone)
    try:
        c.send(b"".join(parse(b"s%d" % i, b"select kv.get($1, $2) as c%d" % i) for i in range(256)) + SYNC)
        assert kinds(c.read_until_ready()) == [b"1"] * 256 + [b"Z"]
        c.send(parse(b"s256", b"select kv.get($1, $2)") + SYNC)
        fields = error_of(msgs := c.read_until_ready())
        assert kinds(msgs) == [b"E", b"Z"] and fields["C"] == "53400", msgs
        assert "too many prepared statements (a kv client keeps 256)" in fields["M"], fields
        for i in (0, 127, 255):
            c.send(bind(b"", b"s%d" % i, [b"default", b"wire-many"]) + describe(b"P", b"") + execute() + SYNC)
            msgs = c.read_until_ready()
            assert kinds(msgs) == [b"2", b"T", b"D", b"C", b"Z"], msgs
            assert columns(msgs[1][1]) == [(f"c{i}", JSONB)] and msgs[2][1].endswith(b'{"n": 7}'), msgs
        c.send(close(b"S", b"s127") + parse(b"s256", b"select kv.get($1, $2) as c256") +
               bind(b"", b"s256", [b"default", b"wire-many"]) + describe(b"P", b"") + execute() + SYNC)
        msgs = c.read_until_ready()
        assert kinds(msgs) == [b"3", b"1", b"2", b"T", b"D", b"C", b"Z"], msgs
        assert columns(msgs[3][1]) == [("c256", JSONB)] and msgs[4][1].endswith(b'{"n": 7}'), msgs
    finally:
        c.close()


def test_row_description_and_command_tag_bytes_of_a_many_row_answer(zone):
    """vdb writes RowDescription in one piece and the tag without printf (issue 25): the bytes
    PostgreSQL would send (table 0, column 0, typlen -1, typmod -1, text), a tag of two digits."""
    keys = [f"wire-tag-{i:02d}" for i in range(12)]
    for k in keys:
        zone.put(k, {"k": k})
    c = raw(zone)
    try:
        arr = ("{" + ",".join(keys) + "}").encode()
        c.send(parse(b"", b"select * from kv.get_many($1, $2)") + bind(b"", b"", [b"default", arr]) +
               describe(b"P", b"") + execute() + SYNC)
        msgs = c.read_until_ready()
        assert kinds(msgs) == [b"1", b"2", b"T"] + [b"D"] * 12 + [b"C", b"Z"], msgs
        col = lambda name, oid: name + b"\0" + struct.pack("!IHIhiH", 0, 0, oid, -1, -1, 0)  # noqa: E731
        assert msgs[2][1] == struct.pack("!H", 2) + col(b"key", TEXT) + col(b"value", JSONB)
        assert msgs[-2][1] == b"SELECT 12\0"
    finally:
        c.close()


def test_after_an_error_the_extended_protocol_skips_until_sync(zone):
    c = raw(zone)
    try:
        # The Bind fails (no such statement): the Describe and Execute after it are not
        # answered, the Sync is, and the session goes on.
        c.send(bind(b"", b"nope", []) + describe(b"P", b"") + execute() + SYNC)
        msgs = c.read_until_ready()
        assert kinds(msgs) == [b"E", b"Z"], msgs
        assert error_of(msgs)["C"] == "26000"
        c.send(describe(b"X", b"") + SYNC)
        fields = error_of(msgs := c.read_until_ready())
        assert kinds(msgs) == [b"E", b"Z"] and fields["C"] == "08P01", msgs
        assert "malformed Describe message" in fields["M"]
        rows, errors = c.simple_query("select kv.get('default', 'wire-none')")
        assert errors == [] and rows == [[None]], (rows, errors)
    finally:
        c.close()


def test_a_statement_name_past_63_bytes_is_cut_as_postgresql_cuts_it(zone):
    """PostgreSQL keeps a statement name's first 63 bytes: a longer one works, and two that
    share those are one statement."""
    long_a, long_b = b"n" * 63 + b"a" * 100, b"n" * 63 + b"b" * 100
    c = raw(zone)
    try:
        c.send(parse(long_a, b"select kv.get($1, $2)") + bind(b"", long_b, [b"default", b"wire-none"])
               + execute() + SYNC)
        msgs = c.read_until_ready()
        assert kinds(msgs) == [b"1", b"2", b"D", b"C", b"Z"], msgs
        c.send(describe(b"S", b"n" * 63) + SYNC)
        assert kinds(c.read_until_ready()) == [b"t", b"T", b"Z"]
        c.send(pgwire.message(b"C", b"S" + long_b + b"\0") + describe(b"S", long_a) + SYNC)
        fields = error_of(msgs := c.read_until_ready())
        assert kinds(msgs) == [b"3", b"E", b"Z"] and fields["C"] == "26000", msgs
    finally:
        c.close()


@pytest.mark.parametrize("kind,sqlstate,text", [
    (b"F", "0A000", "function calls (fast path) are not supported by the kv database"),
    (b"y", "08P01", "unexpected message type 121 ('y') on the kv database"),
])
def test_requests_it_does_not_serve_get_an_error_and_the_session_goes_on(zone, kind, sqlstate, text):
    c = raw(zone)
    try:
        c.send(pgwire.message(kind, b"\0\0\0\0"))
        fields = error_of(msgs := c.read_until_ready())
        assert kinds(msgs) == [b"E", b"Z"] and fields["C"] == sqlstate, msgs
        assert text in fields["M"], fields
        rows, errors = c.simple_query("select kv.get('default', 'wire-none')")
        assert errors == [] and rows == [[None]], (rows, errors)
    finally:
        c.close()


def test_a_get_many_longer_than_the_read_buffer(zone):
    """buffer_size is 64kB: this Bind of about 200 kB is collected and answered whole."""
    real = [f"wire-many-{i}" for i in range(3)]
    ask = real + [f"wire-absent-{i:05d}-{'x' * 24}" for i in range(5000)]
    with psycopg.connect(host="127.0.0.1", port=zone.tusk.port, user="postgres", dbname="kv",
                         autocommit=True, connect_timeout=10) as c:
        for k in real:
            c.execute("select kv.put(%s, %s, %s)", ("default", k, Jsonb({"k": k})))
        for fmt in ("%t", "%b"):
            rows = c.execute(f"select * from kv.get_many(%s, {fmt})", ("default", ask)).fetchall()
            assert rows == [(k, {"k": k}) for k in real], fmt


def test_a_message_over_max_message_size_names_the_limit(zone):
    c = raw(zone)
    try:
        c.send(b"Q" + struct.pack("!I", (64 << 20) + 100) + b"select")
        kind, fields = c.expect_error_or_close()
        assert kind == "error", fields
        assert fields["C"] == "54000", fields
        assert f"message of {(64 << 20) + 101} bytes exceeds max_message_size ({64 << 20})" in fields["M"], fields
    finally:
        c.close()


def test_requests_sent_before_the_password_are_not_answered(zone, tmp_path):
    """A client that sends a kv request right behind its startup packet, before the password
    tusk asks for, gets no answer to it. The kv session exists from startup on, so its "flush
    output, then read what is buffered" path must not run while the client authenticates."""
    from auth_util import write_auth_file
    from conftest import Tusk

    auth = write_auth_file(tmp_path / "userlist.txt", {"kv_pw": "secret"})
    t = Tusk(tmp_path / "tusk-md5", zone.pg.port, services={"local": {"hosts": [f"127.0.0.1:{zone.pg.port}"]}},
             pools=[{"database": "*", "user": "*", "service": "local", "mode": "transaction",
                     "client_auth": "md5"}],
             workers=1, kv={"zone": zone.name, "service": "local"}, auth_file=auth)
    t.start()
    try:
        for _ in range(20):  # the write event races the read: try it many times
            c = pgwire.RawClient("127.0.0.1", t.port)
            try:
                c.send(pgwire.startup_packet({"user": "kv_pw", "database": "kv"}) +
                       pgwire.query_message("select kv.get('default', 'wire-none')"))
                kind, body = c.read_message()
                assert kind == b"R" and struct.unpack("!I", body[:4])[0] == 5, (kind, body)  # md5 asked
                # An error, a close, or silence (tusk waits for the password until
                # client_login_timeout): never the request's answer.
                try:
                    got, fields = c.expect_error_or_close(timeout=0.5)
                except TimeoutError:
                    continue
                if got == "error":
                    assert fields.get("C") in ("08P01", "28P01"), fields
            finally:
                c.close()
    finally:
        problems = t.stop()
    assert not problems, problems


# The calls of the binary-format tests: each answers the same whenever it is asked (reads, and
# writes that change nothing), one of each result type: jsonb, int8, int4, bool, and text with
# jsonb. {k}: a key written first.
BINARY_CALLS = [
    (b"select kv.get($1, $2)", [b"default", b"{k}"]),
    (b"select kv.get($1, $2)", [b"default", b"never-written"]),  # NULL
    (b"select kv.get_meta($1, $2)", [b"default", b"{k}"]),
    (b"select kv.counter($1, $2)", [b"default", b"{k}-n"]),
    (b"select kv.rename($1, $2, $2)", [b"default", b"{k}"]),  # to itself: 1, nothing written
    (b"select kv.put_if_value($1, $2, '[1]', '[2]')", [b"default", b"{k}"]),  # not [1]: false
    (b"select * from kv.get_many($1, ARRAY[$2, $3])", [b"default", b"{k}", b"never-written"]),
]


def test_binary_results_are_postgresqls_send_form(zone):
    """A Bind that asks for binary results (asyncpg always does, pgjdbc for its binary types once
    a statement is prepared) gets each column in PostgreSQL's send form: the same calls bound
    alike on the key's shard directly and through tusk's kv database answer the same DataRow
    bytes, for one code for all columns, one per column (text then binary), and none (text); a
    Describe of the portal says each column's format. Before, any binary result format was
    refused (0A000 "kv calls answer in text format only"). Result format counts that match
    neither one nor the columns, and codes other than 0 and 1, are PostgreSQL's errors."""
    k = "wire-bin"
    zone.put(k, {"n": [1, "x"], "s": "\u00e9"})
    shard = zone.parade.shard_of("default", k)
    with zone.db(shard) as c:
        c.execute("select kv.incr('default', %s, 41)", (k + "-n",))
    ours = raw(zone)
    direct = pgwire.RawClient("127.0.0.1", zone.pg.port)
    direct.startup("kv_client", f"kv_shard_{shard}")
    try:
        for sql, values in BINARY_CALLS:
            values = [v.replace(b"{k}", k.encode()) for v in values]
            ncols = 2 if b"get_many" in sql else 1
            for results in ((1,), (0, 1) if ncols == 2 else (1,), ()):
                answers = []
                for c in (direct, ours):
                    c.send(parse(b"", sql) + bind(b"", b"", values, results) + describe(b"P", b"") + execute() + SYNC)
                    msgs = c.read_until_ready()
                    assert kinds(msgs)[:2] == [b"1", b"2"] and kinds(msgs)[-2:] == [b"C", b"Z"], (sql, msgs)
                    answers.append(([b for kd, b in msgs if kd == b"D"], [f for _, _, f in columns(msgs[2][1], True)]))
                assert answers[0] == answers[1], (sql, results, answers)
                want = [1] * ncols if results == (1,) else list(results) or [0] * ncols
                assert answers[1][1] == want, (sql, results, answers)
        for results, state in (((1, 1), "08P01"), ((2,), "22023")):
            ours.send(parse(b"", b"select kv.get($1, $2)") + bind(b"", b"", [b"default", b"x"], results) + execute() + SYNC)
            fields = error_of(msgs := ours.read_until_ready())
            assert fields["C"] == state, (results, fields)
    finally:
        ours.close()
        direct.close()


def test_asyncpg_through_the_kv_database(zone):
    """asyncpg (which prepares every statement and asks for binary results of every type it
    knows) puts, reads and counts through the kv database, with its own codecs: jsonb as text,
    bigint, boolean, and get_many's rows."""
    import asyncio

    import asyncpg

    async def run():
        c = await asyncpg.connect(host="127.0.0.1", port=zone.tusk.port, user="postgres", database="kv")
        try:
            version = await c.fetchval("select kv.put($1, $2, $3::jsonb)", "default", "apg-1", '{"n": 1}')
            assert isinstance(version, int) and version > 0
            assert await c.fetchval("select kv.get($1, $2)", "default", "apg-1") == '{"n": 1}'
            assert await c.fetchval("select kv.get($1, $2)", "default", "apg-none") is None
            assert await c.fetchval("select kv.incr($1, $2, $3)", "default", "apg-n", 5) == 5
            assert await c.fetchval("select kv.put_if_value($1, $2, $3::jsonb, $4::jsonb)", "default", "apg-1",
                                    '{"n": 1}', '{"n": 2}') is True
            rows = await c.fetch("select * from kv.get_many($1, $2)", "default", ["apg-1", "apg-none"])
            assert [(r["key"], r["value"]) for r in rows] == [("apg-1", '{"n": 2}')], rows
            st = await c.prepare("select kv.get($1, $2)")
            assert [await st.fetchval("default", "apg-1") for _ in range(3)] == ['{"n": 2}'] * 3
        finally:
            await c.close()

    asyncio.run(run())


def test_pgjdbc_through_the_kv_database(zone):
    """pgjdbc (tests/integration/jdbc/KvCalls.java): it sends SET extra_float_digits and SET
    application_name after the startup, through the extended protocol, and from a statement's
    second execution on (prepareThreshold=2) asks for bigint, int and boolean results in
    binary. The two SETs are answered SET (no kv call depends on them) and the calls answer as
    through psql. Before, the connection failed at its first SET (0A000 "only calls of the kv
    API are served here")."""
    lines = harness.jdbc_program(REPO / "tests" / "integration" / "jdbc" / "KvCalls.java", "127.0.0.1",
                                 zone.tusk.port, "postgres", 4, timeout=120 * SLOW)
    want = []
    for i in range(4):
        want += ["put true", f'get {{"i": {i}}}', f"incr {2 * (i + 1)}", "rename 1", "put_if_value false",
                 f'get_many jdbc-{i} {{"i": {i}}}']
    assert lines == want, lines


def test_driver_sets_at_connect_are_answered_and_others_refused(zone):
    """The kv database answers SET of extra_float_digits and application_name (what drivers send
    as they connect) with SET, by simple query and by Parse/Bind/Describe/Execute (NoData);
    any other SET is still refused (0A000), a malformed one is a syntax error (42601). (RESET ALL
    is answered: asyncpg's pool sends it, test_kv_txn.py.)"""
    c = raw(zone)
    try:
        for sql in (b"SET extra_float_digits = 3", b"set application_name to 'it''s me';",
                    b"SET SESSION extra_float_digits TO -1"):
            c.send(pgwire.message(b"Q", sql + b"\0"))
            msgs = c.read_until_ready()
            assert msgs[0] == (b"C", b"SET\0") and kinds(msgs) == [b"C", b"Z"], (sql, msgs)
        c.send(parse(b"s", b"SET application_name = 'PostgreSQL JDBC Driver'") + describe(b"S", b"s")
               + bind(b"", b"s", []) + describe(b"P", b"") + execute() + SYNC)
        msgs = c.read_until_ready()
        assert kinds(msgs) == [b"1", b"t", b"n", b"2", b"n", b"C", b"Z"] and msgs[5][1] == b"SET\0", msgs
        for sql, state in ((b"SET search_path = x", "0A000"), (b"SET application_name = 'open", "42601"),
                           (b"SET extra_float_digits", "42601"), (b"SET extra_float_digits = 3; SELECT now()", "0A000"),
                           (b"RESET search_path", "0A000")):
            c.send(pgwire.message(b"Q", sql + b"\0"))
            fields = error_of(c.read_until_ready())
            assert fields["C"] == state, (sql, fields)
    finally:
        c.close()


def test_named_portals_are_found_by_name(zone):
    """A named portal is bound, described and executed by its name (pgjdbc's fetch size inside a
    transaction); outside a transaction it is gone after the Sync; a Bind of another leaves it
    (PostgreSQL keeps both until the Sync; a Bind replaced it before portals were put aside);
    Close of a portal that is not there is CloseComplete, as PostgreSQL answers it."""
    zone.put("wire-portal", {"p": 1})
    c = raw(zone)
    try:
        c.send(parse(b"s", b"select kv.get($1, $2)") + bind(b"C_1", b"s", [b"default", b"wire-portal"])
               + describe(b"P", b"C_1") + execute(b"C_1") + SYNC)
        msgs = c.read_until_ready()
        assert kinds(msgs) == [b"1", b"2", b"T", b"D", b"C", b"Z"], msgs
        assert msgs[3][1].endswith(b'{"p": 1}'), msgs
        c.send(execute(b"C_1") + SYNC)
        fields = error_of(msgs := c.read_until_ready())
        assert fields["C"] == "34000" and kinds(msgs) == [b"E", b"Z"], msgs
        c.send(bind(b"C_1", b"s", [b"default", b"wire-portal"]) + bind(b"C_2", b"s", [b"default", b"none"])
               + execute(b"C_1") + SYNC)
        msgs = c.read_until_ready()
        assert kinds(msgs) == [b"2", b"2", b"D", b"C", b"Z"] and msgs[2][1].endswith(b'{"p": 1}'), msgs
        c.send(bind(b"C_1", b"s", [b"default", b"wire-portal"]) + close(b"P", b"C_9") + execute(b"C_1")
               + close(b"P", b"C_1") + SYNC)
        msgs = c.read_until_ready()
        assert kinds(msgs) == [b"2", b"3", b"D", b"C", b"3", b"Z"], msgs
    finally:
        c.close()
