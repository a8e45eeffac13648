"""LISTEN/NOTIFY through transaction pooling without pinning (issue 24, docs/pooling.md
"LISTEN/NOTIFY"): tusk answers LISTEN/UNLISTEN itself, one listener connection per pool
LISTENs to the union of the channels and fans each notification out to the subscribed
clients. Every test fails on a tusk that pins a listening client to its server (pool size 2:
the third listening client waits pool_wait_timeout and fails, or the server count exceeds
pool size + 1)."""
import select
import struct
import sys
import time

import psycopg
import pytest

import pgwire
from conftest import connect, console_show, REPO, SLOW, TEST_DB, Tusk, wait_until

sys.path.insert(0, str(REPO / "tests" / "drivers"))
import harness  # noqa: E402

POOL_SIZE = 2


@pytest.fixture(scope="module")
def lt(tmp_path_factory, pg):
    t = Tusk(tmp_path_factory.mktemp("tusk-listen"), pg.port, workers=2, pool_wait_timeout="3s",
             pools=[{"database": "*", "user": "*", "service": "main", "mode": "transaction",
                     "size": POOL_SIZE}],
             admin={"users": ["postgres"], "client_auth": "trust"})
    t.start()
    yield t
    problems = t.stop()
    if problems:
        pytest.fail("\n".join(problems) + "\n" + t.log_tail(), pytrace=False)


@pytest.fixture(scope="module")
def direct(pg):
    c = connect(pg.port, application_name="lnt_direct")
    yield c
    c.close()


def servers(direct):
    """Backends of the test database other than this module's direct connections."""
    return direct.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend' "
        "AND coalesce(application_name, '') <> 'lnt_direct'", (TEST_DB,)).fetchone()[0]


def show_listeners(t):
    return console_show(t, "SHOW LISTENERS")


def lconnect(t):
    """A client of t whose notifications psycopg reads during a query are kept for drain()."""
    c = t.connect()
    c.lnt_seen = []
    c.add_notify_handler(lambda n: c.lnt_seen.append((n.channel, n.payload, n.pid)))
    return c


def drain(conn, want=None, timeout=5.0):
    """Notifications conn receives within timeout (stops early once it has `want`), with
    those psycopg took in while running a query."""
    got = getattr(conn, "lnt_seen", [])[:]
    if hasattr(conn, "lnt_seen"):
        conn.lnt_seen.clear()
    pgc = conn.pgconn
    deadline = time.monotonic() + timeout * SLOW
    while True:
        n = pgc.notifies()
        while n:
            got.append((n.relname.decode(), n.extra.decode(), n.be_pid))
            n = pgc.notifies()
        if want is not None and len(got) >= want:
            return got
        left = deadline - time.monotonic()
        if left <= 0:
            return got
        r, _, _ = select.select([conn.fileno()], [], [], min(left, 0.2))
        if r:
            pgc.consume_input()


def drain_exactly(conn, want):
    """drain() up to want notifications, and whatever follows within 0.1 s (nothing, if right)."""
    return drain(conn, want=want) + drain(conn, timeout=0.1)


def payloads(got):
    return sorted((ch, p) for ch, p, _ in got)


def test_listen_fanout_without_pinning(lt, direct):
    clients = [lconnect(lt) for _ in range(50)]
    try:
        for i, c in enumerate(clients):
            c.execute(f"LISTEN ch{i % 5}")
        # 50 listening clients hold no server: the pool's 2 at most, and one listener
        assert servers(direct) <= POOL_SIZE + 1
        sender = lconnect(lt)
        for k in range(5):
            sender.execute(f"NOTIFY ch{k}, 'tusk-{k}'")
            direct.execute("SELECT pg_notify(%s, %s)", (f"ch{k}", f"direct-{k}"))
        for i, c in enumerate(clients):
            k = i % 5
            got = drain_exactly(c, 2)
            assert payloads(got) == [(f"ch{k}", f"direct-{k}"), (f"ch{k}", f"tusk-{k}")], f"client {i}"
        assert servers(direct) <= POOL_SIZE + 1
        # SHOW LISTENERS: the pool's one listener, its 5 channels and 50 clients, the 10 relayed
        rows = [r for r in show_listeners(lt) if r["database"] == TEST_DB]
        assert len(rows) == 1, rows
        r = rows[0]
        assert (r["channels"], r["clients"], r["state"]) == (5, 50, "connected"), r
        assert r["notifications"] >= 10, r
        sender.close()
    finally:
        for c in clients:
            c.close()


def test_listen_rolled_back_gets_nothing(lt, direct):
    watcher = lconnect(lt)
    watcher.execute("LISTEN rb")
    clients = [lconnect(lt) for _ in range(3)]
    try:
        for c in clients:  # three would hold three servers if LISTEN pinned them
            c.execute("BEGIN")
            c.execute("LISTEN rb")
            c.execute("ROLLBACK")
        direct.execute("SELECT pg_notify('rb', 'x')")
        assert payloads(drain(watcher, want=1)) == [("rb", "x")]
        for c in clients:
            assert drain(c, timeout=0.3) == []
        assert servers(direct) <= POOL_SIZE + 1
    finally:
        for c in clients + [watcher]:
            c.close()


def test_listen_committed_gets_notifications_after_commit(lt, direct):
    clients = [lconnect(lt) for _ in range(3)]
    try:
        for i, c in enumerate(clients):  # one after the other: pool size 2
            c.execute("BEGIN")
            c.execute("LISTEN cm")
            c.execute("SELECT 1")
            direct.execute("SELECT pg_notify('cm', %s)", (f"before-{i}",))  # before its LISTEN committed
            c.execute("COMMIT")
            if i == 0:
                assert drain(c, timeout=0.3) == []
        direct.execute("SELECT pg_notify('cm', 'after')")
        for i, c in enumerate(clients):
            # what was sent after its own commit: the later clients' "before" and "after"
            want = sorted([("cm", f"before-{j}") for j in range(i + 1, 3)] + [("cm", "after")])
            got = drain_exactly(c, len(want))
            assert payloads(got) == want, f"client {i}"
        # a listening client in a transaction gets its notification when the transaction ends
        c = clients[0]
        c.execute("BEGIN")
        c.execute("SELECT 1")
        direct.execute("SELECT pg_notify('cm', 'during')")
        assert drain(c, timeout=0.5) == []
        c.execute("COMMIT")
        assert payloads(drain(c, want=1)) == [("cm", "during")]
    finally:
        for c in clients:
            c.close()


def test_unlisten_stops_notifications(lt, direct):
    clients = [lconnect(lt) for _ in range(3)]
    try:
        for c in clients:
            c.execute("LISTEN u1")
            c.execute('LISTEN "U 2"')
        direct.execute("SELECT pg_notify('u1', 'a'), pg_notify('U 2', 'b')")
        for c in clients:
            assert payloads(drain(c, want=2)) == [("U 2", "b"), ("u1", "a")]
            c.execute("UNLISTEN u1")
        direct.execute("SELECT pg_notify('u1', 'c'), pg_notify('U 2', 'd')")
        for c in clients:
            got = drain_exactly(c, 1)
            assert payloads(got) == [("U 2", "d")]
            c.execute("UNLISTEN *")
        direct.execute("SELECT pg_notify('u1', 'e'), pg_notify('U 2', 'f')")
        for c in clients:
            assert drain(c, timeout=0.3) == []
    finally:
        for c in clients:
            c.close()


def listener_pid(direct, exclude=None):
    rows = direct.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND query LIKE 'LISTEN %%' "
        "AND coalesce(application_name, '') <> 'lnt_direct'", (TEST_DB,)).fetchall()
    pids = [r[0] for r in rows if r[0] != exclude]
    return pids[0] if len(pids) == 1 else None


def test_listener_killed_reconnects_and_warns(lt, direct):
    c = lconnect(lt)
    notices = []
    c.add_notice_handler(lambda d: notices.append(d.message_primary))
    try:
        c.execute("LISTEN k")
        direct.execute("SELECT pg_notify('k', 'one')")
        assert payloads(drain(c, want=1)) == [("k", "one")]
        old = listener_pid(direct)
        assert old is not None
        direct.execute("SELECT pg_terminate_backend(%s)", (old,))
        wait_until(lambda: listener_pid(direct, exclude=old) is not None, 10 * SLOW, what="a new listener")
        drain(c, timeout=0.5)  # the notice arrives once the channels are LISTENed again
        direct.execute("SELECT pg_notify('k', 'two')")
        assert payloads(drain(c, want=1)) == [("k", "two")]
        assert any("may have been missed" in (n or "") for n in notices), notices
        c.execute("SELECT 1")  # the session still works
    finally:
        c.close()


def test_client_that_never_reads_is_closed_others_served(lt, direct):
    slow = lconnect(lt)
    fast = lconnect(lt)
    try:
        slow.execute("LISTEN flood")
        fast.execute("LISTEN flood")
        n = 1500  # ~12 MB: more than the socket buffers and tusk's 1 MB bound per client
        direct.execute("SELECT pg_notify('flood', i::text || repeat('x', 7900)) FROM generate_series(1, %s) i",
                       (n,))
        got = drain(fast, want=n, timeout=20)
        assert len(got) == n
        assert [int(p[:len(p) - 7900]) for _, p, _ in got] == list(range(1, n + 1))  # in order
        wait_until(lambda: "none read for" in lt.log_text(), 10 * SLOW,
                   what="the slow client closed")
        with pytest.raises(psycopg.OperationalError):
            for _ in range(100000):  # its socket: notifications, then the error
                slow.execute("SELECT 1")
        fast.execute("SELECT 1")
    finally:
        slow.close()
        fast.close()


def ext(conn, sql):
    """sql through the extended protocol (libpq's PQexecParams: Parse, Bind, Describe, Execute,
    Sync; unnamed statement, no parameters): (status, command tag, SQLSTATE)."""
    r = conn.pgconn.exec_params(sql.encode(), None)
    state = r.error_field(psycopg.pq.DiagnosticField.SQLSTATE)
    return (r.status, (r.command_status or b"").decode(), state.decode() if state else None)


def test_extended_protocol_listen_without_pinning(lt, direct):
    """pgjdbc and libpq's PQexecParams send LISTEN as Parse/Bind/Describe/Execute/Sync: tusk
    answers it as it does a simple Query (three clients, pool size 2: a pin would make the
    third wait and fail)."""
    ok = psycopg.pq.ExecStatus.COMMAND_OK
    clients = [lconnect(lt) for _ in range(3)]
    try:
        for c in clients:
            assert ext(c, "LISTEN ex1") == (ok, "LISTEN", None)
        for c in clients:  # in a transaction: applies at COMMIT, dropped by ROLLBACK
            c.execute("BEGIN")
            assert ext(c, 'LISTEN "Ex 2"') == (ok, "LISTEN", None)
            assert ext(c, "LISTEN ex3") == (ok, "LISTEN", None)
            c.execute("COMMIT")
            c.execute("BEGIN")
            assert ext(c, "UNLISTEN ex3") == (ok, "UNLISTEN", None)
            c.execute("ROLLBACK")
        assert servers(direct) <= POOL_SIZE + 1
        direct.execute("SELECT pg_notify('ex1', 'a'), pg_notify('Ex 2', 'b'), pg_notify('ex3', 'c')")
        for c in clients:
            got = drain(c, want=3)
            assert payloads(got) == [("Ex 2", "b"), ("ex1", "a"), ("ex3", "c")]
        # a named statement prepared alone (answered by tusk), then bound and executed
        pgc = clients[0].pgconn
        assert pgc.prepare(b"unl", b"UNLISTEN ex1").status == ok
        r = pgc.exec_prepared(b"unl", None)
        assert (r.status, r.command_status) == (ok, b"UNLISTEN")
        # in a failed transaction: 25P02, as PostgreSQL
        c = clients[1]
        c.execute("BEGIN")
        with pytest.raises(psycopg.errors.DivisionByZero):
            c.execute("SELECT 1/0")
        assert ext(c, "UNLISTEN *")[2] == "25P02"
        c.execute("ROLLBACK")
        assert servers(direct) <= POOL_SIZE + 1
        direct.execute("SELECT pg_notify('ex1', 'd')")
        assert drain(clients[0], timeout=0.3) == []
        for c in clients[1:]:
            assert payloads(drain(c, want=1)) == [("ex1", "d")]
    finally:
        for c in clients:
            c.close()


def test_several_listens_in_one_query(lt, direct):
    clients = [lconnect(lt) for _ in range(3)]
    try:
        for c in clients:
            cur = c.execute("LISTEN m1; LISTEN m2; listen m3")
            assert cur.statusmessage == "LISTEN"
            c.execute("BEGIN")
            c.execute("UNLISTEN m1; UNLISTEN m3")
            c.execute("COMMIT")
            c.execute("BEGIN")
            c.execute("UNLISTEN m2; UNLISTEN *")
            c.execute("ROLLBACK")
        assert servers(direct) <= POOL_SIZE + 1
        direct.execute("SELECT pg_notify('m1', 'a'), pg_notify('m2', 'b'), pg_notify('m3', 'c')")
        for c in clients:
            got = drain_exactly(c, 1)
            assert payloads(got) == [("m2", "b")]
        # every CommandComplete, as PostgreSQL sends them
        pgc = clients[0].pgconn
        pgc.send_query(b"LISTEN m4; UNLISTEN m4; UNLISTEN *")
        tags = []
        while (r := pgc.get_result()) is not None:
            tags.append(r.command_status)
        assert tags == [b"LISTEN", b"UNLISTEN", b"UNLISTEN"]
    finally:
        for c in clients:
            c.close()


CHANNEL_STEPS = [
    "?SELECT pg_listening_channels()",  # never listened (the server answers; others listen)
    "LISTEN a1",
    'LISTEN "B 2"',
    "LISTEN a1",
    "BEGIN",
    "LISTEN c3",
    "?SELECT pg_listening_channels()",  # a LISTEN counts from its commit on
    "COMMIT",
    "?select  *  from  PG_LISTENING_CHANNELS ( ) ;",
    "BEGIN",
    "SAVEPOINT s1",
    "LISTEN d4",
    "UNLISTEN a1",
    "SAVEPOINT s2",
    "LISTEN e5",
    "ROLLBACK TO SAVEPOINT s1",  # drops d4, the UNLISTEN a1 and e5
    "LISTEN f6",
    "SAVEPOINT s3",
    "LISTEN g7",
    "RELEASE SAVEPOINT s3",  # g7 stays
    "COMMIT",
    "?SELECT pg_catalog.pg_listening_channels()",
    "UNLISTEN a1",
    "?SELECT * FROM pg_listening_channels()",
    "?SELECT pg_listening_channels() AS Mine",
    '?select\tpg_listening_channels()as "My Col";',
    "?SELECT*FROM pg_catalog.pg_listening_channels()",
    "BEGIN",
    "LISTEN h8",
    "ROLLBACK",
    "UNLISTEN *",
    "?SELECT pg_listening_channels()",
    "BEGIN",
    "SAVEPOINT e1",
    "!SELECT 1/0",
    "ROLLBACK TO e1",  # the transaction goes on, healthy
    "LISTEN i9",
    "COMMIT",
    "?SELECT pg_listening_channels()",
]


def channel_answers(conn):
    """CHANNEL_STEPS on conn: per query step ('?'), its column name, type OID and rows (a set)."""
    out = []
    for step in CHANNEL_STEPS:
        if step.startswith("?"):
            cur = conn.execute(step[1:])
            d = cur.description[0]
            out.append((step, d.name, d.type_code, sorted(r[0] for r in cur.fetchall())))
        elif step.startswith("!"):
            with pytest.raises(psycopg.errors.DivisionByZero):
                conn.execute(step[1:])
        else:
            conn.execute(step)
    return out


def test_pg_listening_channels_and_savepoints_as_postgres(lt, pg):
    """Differential: the same steps direct to PostgreSQL and through tusk give the same
    pg_listening_channels() (column name, type, rows); a ROLLBACK TO a savepoint drops the
    LISTEN/UNLISTENs made after it; nothing pins (three clients, pool size 2)."""
    d = connect(pg.port)
    clients = [lconnect(lt) for _ in range(3)]
    try:
        want = channel_answers(d)
        assert want[-1][1:] == ("pg_listening_channels", 25, ["i9"])  # the steps mean something
        assert want[0][3] == [] and want[3][3] == ["B 2", "a1", "c3", "f6", "g7"]
        for c in clients:
            c.autocommit = True
            assert channel_answers(c) == want
        d.execute("SELECT pg_notify('i9', 'x'), pg_notify('a1', 'y')")
        for c in clients:
            got = drain_exactly(c, 1)
            assert payloads(got) == [("i9", "x")]
    finally:
        d.close()
        for c in clients:
            c.close()


def own_pids(conns, sends, channel):
    """Each conn LISTENs to channel and sends its NOTIFYs (sends(i): SQL texts, run in order);
    per conn: (own, others), its notifications carrying its own BackendKeyData pid and not."""
    for c in conns:
        c.execute(f"LISTEN {channel}")
    n = 0
    for i, c in enumerate(conns):
        for sql in sends(i):
            c.execute(*sql) if isinstance(sql, tuple) else c.execute(sql)
        n += 1
    out = []
    for c in conns:
        got = drain_exactly(c, n)
        mine = c.info.backend_pid
        got = [(p, pid) for ch, p, pid in got if ch == channel]
        out.append((sorted(p for p, pid in got if pid == mine), sorted(p for p, pid in got if pid != mine)))
    return out


def own_pids_n(conns, sends, channel, per):
    """own_pids for sends(i) of (sql, params, prepare), per notifications from each conn."""
    for c in conns:
        c.execute(f"LISTEN {channel}")
    for i, c in enumerate(conns):
        for sql, params, prepare in sends(i):
            c.execute(sql, params, prepare=prepare)
    out = []
    for c in conns:
        got = drain_exactly(c, per * len(conns))
        mine = c.info.backend_pid
        got = [(p, pid) for ch, p, pid in got if ch == channel]
        out.append((sorted(p for p, pid in got if pid == mine), sorted(p for p, pid in got if pid != mine)))
    return out


def test_own_notify_carries_the_senders_backend_pid(lt, pg):
    """Drivers skip their own notifications by comparing the sender pid with BackendKeyData's
    (psycopg's conn.info.backend_pid here): through tusk, as direct, each client sees its own
    NOTIFY as its own and the others' as not (three senders, pool size 2: servers are shared)."""
    def sends(i):
        if i == 0:
            return [f"NOTIFY own, 'from-{i}'"]
        if i == 1:  # twice in one transaction: PostgreSQL folds them into one
            return ["BEGIN", f"SELECT pg_notify('own', 'from-{i}')", f"select PG_NOTIFY ( 'own' , 'from-{i}' ) ;",
                    "COMMIT"]
        return ["BEGIN", "NOTIFY own, 'rolled-back'", "ROLLBACK", f'notify "own" ,\'from-{i}\'']

    want = [(["from-0"], ["from-1", "from-2"]), (["from-1"], ["from-0", "from-2"]), (["from-2"], ["from-0", "from-1"])]
    direct = [connect(pg.port) for _ in range(3)]
    clients = [lconnect(lt) for _ in range(3)]
    try:
        for c in direct:
            c.lnt_seen = []
            c.add_notify_handler(lambda n, c=c: c.lnt_seen.append((n.channel, n.payload, n.pid)))
        assert own_pids(direct, sends, "own") == want
        assert own_pids(clients, sends, "own") == want
        # the same channel and payload from several clients: each sees one as its own
        out = own_pids(clients, lambda i: ["NOTIFY same, 'x'"], "same")
        assert out == [(["x"], ["x", "x"])] * 3, out
        # pg_notify() with parameters (psycopg: an unnamed statement, then a named one from
        # its sixth run on; Bind values in text and in binary)
        def with_params(i):
            return [("SELECT pg_notify(%s, %s)", ("prm", f"{i}-{k}"), False) for k in range(3)] + \
                [("SELECT pg_notify(%b, %b)", ("prm", f"{i}-{k}"), True) for k in range(3, 7)]
        for c in direct + clients:
            c.prepare_threshold = 5
        want = [(sorted(f"{i}-{k}" for k in range(7)), sorted(f"{j}-{k}" for j in range(3) if j != i for k in range(7)))
                for i in range(3)]
        assert own_pids_n(direct, with_params, "prm", 7) == want
        assert own_pids_n(clients, with_params, "prm", 7) == want
        # not a client's NOTIFY (another program's, a trigger's): the pid PostgreSQL reports
        d = direct[0]
        d.execute("SELECT pg_notify('own', 'outside')")
        for c in clients:
            assert drain(c, want=1) == [("own", "outside", d.info.backend_pid)]
    finally:
        for c in direct + clients:
            c.close()


def jdbc_listen_notify(port):
    """tests/integration/jdbc/ListenNotify.java against port: its sorted output lines."""
    return harness.jdbc_program(REPO / "tests" / "integration" / "jdbc" / "ListenNotify.java", "127.0.0.1", port,
                                TEST_DB, "tusk_trust", timeout=120 * SLOW)


def test_pgjdbc_listen_and_own_notify_as_postgres(lt, pg, direct):
    """pgjdbc: LISTEN through the extended protocol (Statement: unnamed; PreparedStatement:
    named past prepareThreshold), UNLISTEN inside a transaction, and each connection's own
    NOTIFY and pg_notify(?, ?) told by getBackendPID(): the same through tusk as direct, three connections on a
    pool of 2 (a pin would make the third wait past pool_wait_timeout and fail)."""
    want = jdbc_listen_notify(pg.port)
    assert want == sorted(f"{i} jdbc_b {p} {'own' if i == k else 'other'}" for i in range(3) for k in range(3)
                          for p in [f"b{k}"] + [f"c{k}-{j}" for j in range(3)])
    assert jdbc_listen_notify(lt.port) == want
    assert servers(direct) <= POOL_SIZE + 1


class Raw(pgwire.RawClient):
    """A protocol-level session (trust login): send messages, read replies up to ReadyForQuery."""

    def __init__(self, port):
        super().__init__("127.0.0.1", port, timeout=20 * SLOW)
        self.startup("tusk_trust", TEST_DB)

    msg = staticmethod(pgwire.message)

    def ask(self, *msgs):
        """Messages up to ReadyForQuery: (type, body), the body reduced to what must be equal
        (an error's SQLSTATE; none of ParameterStatus, NoticeResponse)."""
        self.sock.sendall(b"".join(msgs))
        out = []
        for t, body in self.read_until_ready():
            if t == b"E":
                body = pgwire.parse_error_fields(body)["C"].encode()
            if t not in (b"S", b"N"):
                out.append((t.decode(), body))
        return out

    def close(self):
        self.sock.sendall(pgwire.terminate_message())
        super().close()


def P(name, sql):
    return Raw.msg(b"P", name.encode() + b"\0" + sql.encode() + b"\0" + struct.pack("!h", 0))


def B(stmt, portal=""):
    return Raw.msg(b"B", portal.encode() + b"\0" + stmt.encode() + b"\0" + struct.pack("!hhh", 0, 0, 0))


def D(kind, name=""):
    return Raw.msg(b"D", kind + name.encode() + b"\0")


def E(portal=""):
    return Raw.msg(b"E", portal.encode() + b"\0" + struct.pack("!i", 0))


SYNC = Raw.msg(b"S")


Q = pgwire.query_message


RAW_STEPS = [
    (P("", "LISTEN raw1"), D(b"S"), B(""), E(), SYNC),
    (P("", "unlisten RAW1"), B(""), D(b"P"), E(), SYNC),
    (P("raw_st", 'LISTEN "Raw 2"'), B("raw_st"), E(), SYNC),  # a named statement, parsed with its run
    (B("raw_st"), D(b"P"), E(), SYNC),  # run again
    (Q("LISTEN r3; UNLISTEN r3; LISTEN r4"),),
    (Q("BEGIN"),),
    (P("", "LISTEN r5"), B(""), D(b"P"), E(), SYNC),
    (Q("SELECT * FROM pg_listening_channels()"),),  # r5 not yet
    (Q("COMMIT"),),
    (Q("select pg_listening_channels();"),),
    (Q("BEGIN"),),
    (Q("SELECT 1/0"),),
    (P("", "LISTEN r6"), B(""), E(), SYNC),  # 25P02
    (Q("LISTEN r6; LISTEN r7"),),  # 25P02
    (Q("ROLLBACK"),),
    (Q("SELECT pg_listening_channels()"),),
]


def test_protocol_answers_as_postgres(lt, pg, direct):
    """Differential at the protocol level: tusk's own answers to extended-protocol LISTEN
    batches, several LISTENs in one Query and pg_listening_channels() are PostgreSQL's message
    for message (ParseComplete, ParameterDescription, NoData, BindComplete, CommandComplete,
    RowDescription, DataRow, ReadyForQuery status, 25P02), three sessions on a pool of 2."""
    d = Raw(pg.port)
    want = [d.ask(*step) for step in RAW_STEPS]
    d.close()
    assert [t for t, _ in want[0]] == ["1", "t", "n", "2", "C", "Z"]  # the steps mean something
    assert want[-1] == [("T", want[-1][0][1])] + [("D", struct.pack("!hi", 1, len(ch)) + ch)
                                                  for ch in (b"Raw 2", b"r4", b"r5")] + [("C", b"SELECT 3\0"), ("Z", b"I")]
    sessions = [Raw(lt.port) for _ in range(3)]
    try:
        for r in sessions:
            got = [r.ask(*step) for step in RAW_STEPS]
            for step, g, w in zip(RAW_STEPS, got, want):
                assert g == w, step
        assert servers(direct) <= POOL_SIZE + 1
        # a batch that arrives in two reads, outside a transaction: waited for, then answered
        for r in sessions:
            r.sock.sendall(P("", "LISTEN split") + B(""))
            time.sleep(0.2)
            assert r.ask(E(), SYNC) == [("1", b""), ("2", b""), ("C", b"LISTEN\0"), ("Z", b"I")]
        assert servers(direct) <= POOL_SIZE + 1
    finally:
        for r in sessions:
            r.close()


def test_rollback_to_savepoint_drops_later_listens(lt, direct):
    """As PostgreSQL: a LISTEN after a savepoint that is rolled back to is dropped at COMMIT,
    one before it (or after a RELEASE) is kept, and a ROLLBACK TO that heals a failed
    transaction lets its later LISTEN commit."""
    clients = [lconnect(lt) for _ in range(3)]
    try:
        for c in clients:
            c.execute("BEGIN")
            c.execute("LISTEN sp_before")
            c.execute("SAVEPOINT s")
            c.execute("LISTEN sp_dropped")
            c.execute("ROLLBACK TO SAVEPOINT s")
            c.execute("SAVEPOINT t")
            c.execute("LISTEN sp_released")
            c.execute("RELEASE t")
            c.execute("COMMIT")
            c.execute("BEGIN")
            c.execute("SAVEPOINT e")
            with pytest.raises(psycopg.errors.DivisionByZero):
                c.execute("SELECT 1/0")
            c.execute("ROLLBACK TO e")
            c.execute("LISTEN sp_healed")
            c.execute("COMMIT")
        assert servers(direct) <= POOL_SIZE + 1
        direct.execute("SELECT pg_notify('sp_before', '1'), pg_notify('sp_dropped', '2'), "
                       "pg_notify('sp_released', '3'), pg_notify('sp_healed', '4')")
        for c in clients:
            got = drain_exactly(c, 3)
            assert payloads(got) == [("sp_before", "1"), ("sp_healed", "4"), ("sp_released", "3")]
    finally:
        for c in clients:
            c.close()
