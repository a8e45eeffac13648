"""Hostile input after login and before it (issue 9, items 1, 2, 8-11): each is answered the way
PostgreSQL would answer it, by tusk itself and with the limit or the type byte named, and never
takes tusk down: after every case a well-behaved client still gets served."""

import struct
import time

import pytest

from conftest import SLOW, TEST_DB, assert_tusk_error
from auth_util import md5_secret, raw_login, scram_verifier, write_auth_file
import pgwire

pytestmark = pytest.mark.tusk_only

MODES = ["session", "transaction", "statement"]


def pool(mode, size=4):
    return {"database": "*", "user": "*", "service": "main", "mode": mode, "size": size}


def raw(t):
    return pgwire.RawClient("127.0.0.1", t.port, timeout=10 * SLOW)


def fatal_then_closed(c):
    """The one ErrorResponse tusk sends before it closes, then EOF. -> its fields."""
    outcome, fields = c.expect_error_or_close(timeout=10 * SLOW)
    assert outcome == "error", fields
    assert_tusk_error(fields["M"])
    assert fields["S"] == "FATAL", fields
    with pytest.raises(pgwire.Closed):
        c.read_message(timeout=10 * SLOW)
    return fields


def still_serves(t, **kw):
    with t.connect(**kw) as conn:
        assert conn.execute("select 41 + 1").fetchone() == (42,)


def logged_in(t):
    c = raw(t)
    c.startup("tusk_trust", TEST_DB)
    rows, errors = c.simple_query("select 'warm'")
    assert rows == [["warm"]] and not errors
    return c


# ---- item 1: Query and Parse text without its terminator ----

BAD_TEXT = [
    pytest.param(b"Q", b"", "invalid string in message", id="query-empty-body"),
    pytest.param(b"Q", b"select 1", "invalid string in message", id="query-unterminated"),
    pytest.param(b"Q", b"select 1\0junk", "invalid message format", id="query-bytes-after-text"),
    pytest.param(b"P", b"", "invalid Parse message", id="parse-empty-body"),
    pytest.param(b"P", b"\0select 1", "invalid Parse message", id="parse-unterminated-query"),
    pytest.param(b"P", b"s1", "invalid Parse message", id="parse-unterminated-name"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind,body,text", BAD_TEXT)
def test_message_text_without_terminator_is_a_protocol_violation(tusk, mode, kind, body, text):
    t = tusk(pools=[pool(mode)])
    for first in (True, False):  # as the first request (no server yet), and after one
        if first:
            c = raw(t)
            c.startup("tusk_trust", TEST_DB)
        else:
            c = logged_in(t)
        try:
            c.send(pgwire.message(kind, body))
            fields = fatal_then_closed(c)
            assert fields["C"] == "08P01", fields
            assert text in fields["M"], fields
        finally:
            c.close()
        still_serves(t)


# ---- item 2: the admin console and users absent from auth_file ----

ADMIN_PW = "admin-secret"


@pytest.mark.parametrize("method", ["trust", "password", "md5", "scram-sha-256", "reject"])
@pytest.mark.parametrize("secret_kind", ["plain", "md5", "scram"])
def test_console_login_with_known_and_unknown_users(tusk, tmp_path, method, secret_kind):
    secret = {"plain": ADMIN_PW, "md5": md5_secret("admin", ADMIN_PW), "scram": scram_verifier(ADMIN_PW)}[secret_kind]
    auth = write_auth_file(tmp_path / "userlist.txt", {"admin": secret})
    # auth_user set: a pool client absent from auth_file would be looked up with auth_query;
    # a console client has no pool and must not be.
    t = tusk(pools=[pool("transaction")], auth_file=auth, auth_user="tusk_trust",
             admin={"users": ["admin"], "client_auth": method})
    for dbname in ("tusk", "pgbouncer"):
        known = raw_login(t.port, "admin", ADMIN_PW, dbname=dbname)
        unknown = raw_login(t.port, "nobody", ADMIN_PW, dbname=dbname)
        if method == "reject":
            assert known.outcome == "error" and known.error["C"] == "28000", known
            assert unknown.outcome == "error" and unknown.error["C"] == "28000", unknown
        elif method == "trust":
            assert known.outcome == "ok", known
            # let in by the method, then refused by the console's user lists
            assert unknown.outcome == "error" and unknown.error["C"] == "28000", unknown
            assert "admin.users" in unknown.error["M"], unknown
        else:
            # md5 with a SCRAM secret asks for SCRAM instead, as PostgreSQL does; a stored md5
            # hash cannot answer SCRAM at all
            if method == "scram-sha-256" and secret_kind == "md5":
                assert known.outcome == "error" and known.error["C"] == "28P01", known
            else:
                assert known.outcome == "ok", (method, secret_kind, known)
            assert unknown.outcome == "error" and unknown.error["C"] == "28P01", unknown
        still_serves(t)


@pytest.mark.parametrize("dbname", ["tusk", "pgbouncer"])
def test_console_unknown_user_with_default_config(tusk, dbname):
    """No auth_file, no admin section: the crash of issue 9 item 2."""
    t = tusk(pools=[pool("transaction")])
    for user in ("nobody", "tusk_trust"):
        r = raw_login(t.port, user, "whatever", dbname=dbname)
        assert r.outcome == "error" and r.error["C"] in ("28P01", "28000"), r
        assert_tusk_error(r.error["M"])
        still_serves(t)


# ---- item 8: protocol 3.2 and protocol options ----

def startup_v(t, version, params):
    c = raw(t)
    c.send(pgwire.startup_packet(params, version=version))
    return c


@pytest.mark.parametrize("mode", ["session", "transaction"])
@pytest.mark.parametrize("minor,options", [(2, []), (0, ["_pq_.test_option"]), (2, ["_pq_.a", "_pq_.b"])])
def test_newer_minor_or_protocol_options_get_negotiate_protocol_version(tusk, mode, minor, options):
    t = tusk(pools=[pool(mode)])
    params = {"user": "tusk_trust", "database": TEST_DB}
    params.update({o: "on" for o in options})
    c = startup_v(t, (3 << 16) | minor, params)
    try:
        kind, body = c.read_message()
        assert kind == b"v", (kind, body)
        newest, n = struct.unpack("!II", body[:8])
        assert newest == 0 and n == len(options), body
        assert [x.decode() for x in body[8:].split(b"\0")[:n]] == options
        msgs = c.read_until_ready()
        kinds = [k for k, _ in msgs]
        assert kinds[0] == b"R" and b"E" not in kinds, msgs
        rows, errors = c.simple_query("select 'on 3.0'")
        assert rows == [["on 3.0"]] and not errors
    finally:
        c.close()


def test_protocol_3_0_without_options_gets_no_negotiation(tusk):
    t = tusk(pools=[pool("transaction")])
    c = startup_v(t, 3 << 16, {"user": "tusk_trust", "database": TEST_DB})
    try:
        kind, _ = c.read_message()
        assert kind == b"R"
    finally:
        c.close()


def test_protocol_major_4_is_refused(tusk):
    t = tusk(pools=[pool("transaction")])
    c = startup_v(t, 4 << 16, {"user": "tusk_trust", "database": TEST_DB})
    try:
        fields = fatal_then_closed(c)
        assert fields["C"] == "08P01", fields
    finally:
        c.close()
    still_serves(t)


# ---- item 9: limits named in the error ----

@pytest.mark.parametrize("mode", MODES)
def test_message_over_max_message_size_names_the_limit(tusk, mode):
    t = tusk(pools=[pool(mode)], max_message_size="8kB")
    c = logged_in(t)
    try:
        sql = b"select '" + b"x" * 9000 + b"'\0"
        c.send(b"Q" + struct.pack("!I", 4 + len(sql)) + sql[:100])
        fields = fatal_then_closed(c)
        assert fields["C"] == "54000", fields
        assert f"message of {len(sql) + 5} bytes exceeds max_message_size (8192)" in fields["M"], fields
    finally:
        c.close()
    still_serves(t)


LONG = b"n" * 1025  # past RELAY_NAME_MAX (src/frontend/relay.c): longer names are cut to 63 bytes


def bind(portal, stmt):
    return pgwire.message(b"B", portal + b"\0" + stmt + b"\0" + struct.pack("!HHH", 0, 0, 0))


NAME_CASES = [
    pytest.param(pgwire.message(b"P", LONG + b"\0select 1\0\0\0"), "prepared statement", id="parse"),
    pytest.param(bind(b"", LONG), "prepared statement", id="bind-statement"),
    pytest.param(bind(LONG, b""), "portal", id="bind-portal"),
    pytest.param(pgwire.message(b"D", b"S" + LONG + b"\0"), "prepared statement", id="describe-statement"),
    pytest.param(pgwire.message(b"C", b"P" + LONG * 5 + b"\0"), "portal", id="close-portal-over-5kb"),
]


@pytest.mark.parametrize("msg,what", NAME_CASES)
def test_statement_or_portal_name_over_1024_bytes_names_the_limit(tusk, msg, what):
    t = tusk(pools=[pool("transaction")])
    c = logged_in(t)
    try:
        c.send(msg + pgwire.message(b"S"))
        fields = fatal_then_closed(c)
        assert fields["C"] == "42622", fields
        assert f'{what} name "nnnn' in fields["M"] and "is too long (at most 1024 bytes)" in fields["M"], fields
    finally:
        c.close()
    still_serves(t)


def long_names_steps(port, chunked=False):
    """Statement and portal names past 63 bytes, as a driver that names its statements
    after their purpose sends them: PostgreSQL keeps their first 63 bytes, so two names that
    share those are one. -> each step's replies: message kinds, an error's SQLSTATE, else
    the message's bytes."""
    a = b"fetch_user_profile_with_all_related_settings_and_permissions_by_" + b"A" * 40
    b = a[:63] + b"B" * 40
    pa, pb = b"p" * 70 + b"x", b"p" * 70 + b"y"
    steps = [
        pgwire.message(b"P", a + b"\0select $1::int + 1\0\0\0") + pgwire.message(b"S"),
        # bound and described under the other name, run under the other portal name
        pgwire.message(b"B", pa + b"\0" + b + b"\0\0\0\0\1\0\0\0\0016\0\0")
        + pgwire.message(b"D", b"P" + pb + b"\0") + pgwire.message(b"E", pb + b"\0\0\0\0\0")
        + pgwire.message(b"S"),
        pgwire.message(b"D", b"S" + b + b"\0") + pgwire.message(b"S"),
        # closed under one name, gone under both
        pgwire.message(b"C", b"S" + b + b"\0") + pgwire.message(b"D", b"S" + a + b"\0") + pgwire.message(b"S"),
        pgwire.message(b"P", b + b"\0select 'again'\0\0\0") + bind(b"", a)
        + pgwire.message(b"E", b"\0\0\0\0\0") + pgwire.message(b"S"),
    ]
    c = pgwire.RawClient("127.0.0.1", port, timeout=10 * SLOW)
    c.startup("tusk_trust", TEST_DB)
    out = []
    try:
        for step in steps:
            if chunked:
                # a long name split across writes: its end arrives later
                for i in range(0, len(step), 37):
                    c.send(step[i:i + 37])
                    time.sleep(0.002)
            else:
                c.send(step)
            out.append([(k, pgwire.parse_error_fields(v)["C"] if k == b"E" else v) for k, v in c.read_until_ready()])
    finally:
        c.close()
    return out


@pytest.mark.parametrize("mode", MODES)
def test_long_statement_and_portal_names_behave_as_in_postgresql(tusk, pg, mode):
    """Differential: the same steps straight to PostgreSQL and through tusk give the same
    replies (an error's message quotes the name as the server kept it: not compared)."""
    direct = long_names_steps(pg.port)
    assert direct[1][-2:] == [(b"C", b"SELECT 1\0"), (b"Z", b"I")] and direct[3][-2][1] == "26000", direct
    t = tusk(pools=[pool(mode)])
    assert long_names_steps(t.port) == direct
    assert long_names_steps(t.port, chunked=True) == direct
    still_serves(t)


# ---- item 10: unknown message types are refused by tusk, never forwarded ----

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", [b"?", b"p", b"\x00", b"\xff"])
def test_unknown_message_type_is_refused_and_never_forwarded(tusk, pg, mode, kind):
    t = tusk(pools=[pool(mode, size=1)])
    c = logged_in(t)
    try:
        rows, _ = c.simple_query("select pg_backend_pid()")
        pid = int(rows[0][0])
        c.send(pgwire.message(kind, b"junk"))
        fields = fatal_then_closed(c)
        assert fields["C"] == "08P01", fields
        assert f"invalid frontend message type {kind[0]}" in fields["M"], fields
    finally:
        c.close()
    # Forwarded, PostgreSQL would have ended that backend with a FATAL of its own: the only
    # server of the pool is still the same process.
    with t.connect() as conn:
        assert conn.execute("select pg_backend_pid()").fetchone() == (pid,)


# ---- item 11: the console answers FunctionCall and unknown types and goes on ----

@pytest.mark.parametrize("msg,sqlstate", [
    (pgwire.message(b"F", struct.pack("!IHHH", 1234, 0, 0, 0)), "0A000"),
    (pgwire.message(b"?", b"junk"), "08P01"),
    (pgwire.message(b"p", b"secret\0"), "08P01"),
])
def test_console_answers_unsupported_requests_and_goes_on(tusk, msg, sqlstate):
    t = tusk(pools=[pool("transaction")], admin={"users": ["tusk_trust"], "client_auth": "trust"})
    c = raw(t)
    try:
        c.startup("tusk_trust", "tusk")
        for _ in range(2):
            c.send(msg)
            msgs = c.read_until_ready()
            assert [k for k, _ in msgs] == [b"E", b"Z"], msgs
            fields = pgwire.parse_error_fields(msgs[0][1])
            assert fields["C"] == sqlstate and fields["S"] == "ERROR", fields
            rows, errors = c.simple_query("SHOW VERSION")
            assert not errors and rows[0][0].startswith("tusk "), (rows, errors)
        # and a Query without its terminator is an error too, answered in order
        c.send(pgwire.message(b"Q", b"SHOW VERSION"))
        msgs = c.read_until_ready()
        assert [k for k, _ in msgs] == [b"E", b"Z"], msgs
    finally:
        c.close()


def test_console_message_over_max_message_size_names_the_limit(tusk):
    t = tusk(pools=[pool("transaction")], max_message_size="8kB",
             admin={"users": ["tusk_trust"], "client_auth": "trust"})
    c = raw(t)
    try:
        c.startup("tusk_trust", "tusk")
        c.send(b"Q" + struct.pack("!I", 100000) + b"SHOW")
        fields = fatal_then_closed(c)
        assert fields["C"] == "54000", fields
        assert "message of 100001 bytes exceeds max_message_size (8192)" in fields["M"], fields
    finally:
        c.close()


def test_console_statement_name_past_63_bytes_is_cut_as_postgresql_cuts_it(tusk):
    """As PostgreSQL (and a pooled connection): a name's first 63 bytes are kept, so a longer
    one works and two that share those are one statement."""
    t = tusk(pools=[pool("transaction")], admin={"users": ["tusk_trust"], "client_auth": "trust"})
    c = raw(t)
    try:
        c.startup("tusk_trust", "tusk")
        c.send(pgwire.message(b"P", b"n" * 63 + b"a" * 100 + b"\0SHOW VERSION\0\0\0")
               + bind(b"", b"n" * 63 + b"b") + pgwire.message(b"E", b"\0\0\0\0\0") + pgwire.message(b"S"))
        msgs = c.read_until_ready()
        assert [k for k, _ in msgs] == [b"1", b"2", b"D", b"C", b"Z"], msgs
        assert msgs[2][1].decode(errors="replace").find("tusk ") >= 0, msgs
        c.send(pgwire.message(b"C", b"S" + b"n" * 64 + b"\0") + pgwire.message(b"D", b"S" + b"n" * 63 + b"\0")
               + pgwire.message(b"S"))
        msgs = c.read_until_ready()
        assert [k for k, _ in msgs] == [b"3", b"E", b"Z"], msgs
        assert pgwire.parse_error_fields(msgs[1][1])["C"] == "26000", msgs
    finally:
        c.close()
