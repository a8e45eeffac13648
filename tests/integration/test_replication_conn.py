"""Replication connections through tusk (docs/pooling.md, "Replication connections"): a client
whose startup packet says replication=true (pg_basebackup, pg_receivewal, a standby's
walreceiver) or replication=database (pg_recvlogical, a subscription) gets a server connection
of its own, and the replication protocol passes both ways. Driven by PostgreSQL's own tools and,
for what they never send, by the raw protocol, compared step by step with PostgreSQL direct.

One PostgreSQL of this module's own: wal_level logical and a pg_hba.conf that takes replication
connections (the session's does not)."""

import os
import signal
import socket
import struct
import subprocess
import time

import pytest

from conftest import (IS_ROOT, PG_BIN, SLOW, TEST_DB, PgServer, _atexit_servers, as_postgres, console_show,
                      run, wait_until)
from pgwire import Closed, RawClient, message, parse_error_fields, query_message, startup_packet

POOLS = [{"database": "*", "user": "*", "service": "main", "mode": "transaction", "size": 4}]
ADMIN = {"users": ["postgres"], "client_auth": "trust"}


@pytest.fixture(scope="module")
def rpg(workdir):
    s = PgServer(workdir / "pg-replication", with_bench=False)
    _atexit_servers.append(s)
    s.init()
    with open(s.data / "postgresql.conf", "a") as f:
        f.write("wal_level = logical\nmax_wal_senders = 20\nmax_replication_slots = 10\n"
                "wal_sender_timeout = 60s\n")
    hba = s.data / "pg_hba.conf"
    hba.write_text("host replication tusk_solo 127.0.0.1/32 trust\n"
                   "host replication tusk_trust 127.0.0.1/32 trust\n"
                   "host replication postgres 127.0.0.1/32 trust\n"
                   "host replication rep_scram 127.0.0.1/32 scram-sha-256\n"
                   "host all rep_scram 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
    s.stop("fast")
    s.start()
    s.execute("alter role tusk_solo replication")
    s.execute("set password_encryption = 'scram-sha-256'; create role rep_scram login replication password 'rep-pw'")
    s.execute("create table events (id int primary key, what text)", dbname=TEST_DB)
    s.execute("grant all on events to public", dbname=TEST_DB)
    yield s
    s.destroy()


def lsn_of(text):
    hi, lo = text.split("/")
    return int(hi, 16) << 32 | int(lo, 16)


def raw_startup(port, user, database, **params):
    """A raw connection through its startup: (client, messages up to ReadyForQuery)."""
    c = RawClient("127.0.0.1", port, timeout=10 * SLOW)
    c.send(startup_packet({"user": user, "database": database, **params}))
    return c, c.read_until_ready()


def walsenders(pg):
    return pg.execute("select count(*) from pg_stat_replication")[0][0]


# ---- PostgreSQL's tools -------------------------------------------------------------------------


def test_pg_basebackup_through_tusk_and_a_standby_that_streams_through_it(rpg, tusk, workdir):
    """pg_basebackup -X stream (two replication connections at once: the backup and the WAL
    stream) makes a standby through tusk, and -R points the standby's walreceiver at tusk:
    it streams through tusk, and a row committed on the primary reaches it."""
    t = tusk(pg_server=rpg, pools=POOLS, admin=ADMIN)
    base = workdir / "standby-via-tusk"
    base.mkdir()
    (base / "sock").mkdir()
    if IS_ROOT:
        for d in (base, base / "sock"):
            os.chown(d, *_pg_ids())
    data = base / "data"
    rpg.execute("insert into events values (1, 'before the backup')", dbname=TEST_DB)
    run(as_postgres([str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(t.port), "-U", "tusk_solo",
                     "-D", str(data), "-R", "-X", "stream", "-c", "fast", "--no-sync"]), timeout=120 * SLOW)
    assert (data / "standby.signal").exists()
    auto = (data / "postgresql.auto.conf").read_text()
    assert f"port={t.port}" in auto, auto  # -R: the standby's primary_conninfo is tusk
    standby = PgServer(base, with_bench=False)
    _atexit_servers.append(standby)
    try:
        with open(data / "postgresql.conf", "a") as f:
            f.write(f"\nport = {standby.port}\nunix_socket_directories = '{standby.sockdir}'\n"
                    "cluster_name = 'via_tusk'\n")  # the walreceiver's application_name
        standby.start()
        assert standby.execute("select what from events where id = 1", dbname=TEST_DB) == [("before the backup",)]
        rpg.execute("insert into events values (2, 'streamed through tusk')", dbname=TEST_DB)
        wait_until(lambda: standby.execute("select count(*) from events where id = 2", dbname=TEST_DB)[0][0] == 1,
                   30 * SLOW, what="the row on the standby")
        rows = rpg.execute("select application_name, usename, state from pg_stat_replication")
        assert ("via_tusk", "tusk_solo", "streaming") in rows, rows
        # tusk's admin console lists the client
        clients = [r for r in console_show(t, "show clients") if r["user"] == "tusk_solo"]
        assert [(r["replication"], r["state"], r["database"]) for r in clients] == [
            ("physical", "active", "replication")], clients
        servers = [r for r in console_show(t, "show servers") if r["user"] == "tusk_solo"]
        assert [(r["replication"], r["state"], r["link"]) for r in servers] == [
            ("physical", "active", clients[0]["id"])], servers
        assert clients[0]["link"] == servers[0]["id"], (clients, servers)
    finally:
        standby.destroy()
    # the standby gone, its walsender goes too
    wait_until(lambda: walsenders(rpg) == 0, 20 * SLOW, what="no walsender left")
    rpg.execute("delete from events", dbname=TEST_DB)


def _pg_ids():
    import pwd
    p = pwd.getpwnam("postgres")
    return p.pw_uid, p.pw_gid


def test_pg_recvlogical_through_tusk(rpg, tusk, workdir):
    """pg_recvlogical (replication=database) creates a slot, streams the decoded changes of a
    transaction committed meanwhile, stops at SIGINT, and drops its slot, all through tusk."""
    t = tusk(pg_server=rpg, pools=POOLS, admin=ADMIN)
    out = workdir / "recvlogical.out"
    common = [str(PG_BIN / "pg_recvlogical"), "-h", "127.0.0.1", "-p", str(t.port), "-U", "postgres",
              "-d", TEST_DB, "--slot", "via_tusk"]
    run(as_postgres(common + ["--create-slot", "-P", "test_decoding"]), timeout=30 * SLOW)
    # not under runuser, which keeps SIGINT from its child
    proc = subprocess.Popen(common + ["--start", "-f", str(out), "-F", "1", "-s", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: walsenders(rpg) == 1, 10 * SLOW, what="pg_recvlogical streaming")
        assert [(r["replication"], r["database"]) for r in console_show(t, "show clients")
                if r["user"] == "postgres" and r["database"] == TEST_DB] == [("logical", TEST_DB)]
        rpg.execute("insert into events values (10, 'ten'), (11, 'eleven')", dbname=TEST_DB)
        wait_until(lambda: out.exists() and "COMMIT" in out.read_text(), 20 * SLOW, what="the decoded commit")
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20 * SLOW)
    assert proc.returncode == 0, err
    lines = [ln for ln in out.read_text().splitlines() if ln]
    assert [ln.split(" ")[0] for ln in lines] == ["BEGIN", "table", "table", "COMMIT"], lines
    assert "table public.events: INSERT: id[integer]:10 what[text]:'ten'" in lines[1]
    assert "id[integer]:11" in lines[2]
    run(as_postgres(common + ["--drop-slot"]), timeout=30 * SLOW)
    assert rpg.execute("select count(*) from pg_replication_slots")[0][0] == 0
    wait_until(lambda: walsenders(rpg) == 0, 10 * SLOW, what="no walsender left")
    rpg.execute("delete from events", dbname=TEST_DB)


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_pg_receivewal_through_tusk_writes_the_same_wal_as_direct(rpg, tusk, workdir, tmp_path_factory, tls):
    """pg_receivewal through tusk (and, tls, with TLS between it and tusk) and directly, at
    once, up to one end position: the WAL they wrote is the same bytes (~8 MB of it)."""
    listen = None
    if tls:
        from tls_util import Certs
        certs = Certs(tmp_path_factory.mktemp("certs"))
        listen = {"tls": "require", "tls_cert_file": certs.server_crt, "tls_key_file": certs.server_key}
    t = tusk(pg_server=rpg, pools=POOLS, listen_opts=listen)
    rpg.execute("select pg_switch_wal()")  # both start at the beginning of the segment after
    rpg.execute("insert into events select g, repeat('w', 200) from generate_series(100, 30099) g", dbname=TEST_DB)
    end = rpg.execute("select pg_current_wal_insert_lsn()::text")[0][0]
    # WAL past the end, flushed, so that both stop there at once
    rpg.execute("insert into events values (99, 'past the end'); select pg_sleep(0.3)", dbname=TEST_DB)
    dirs = {}
    procs = []
    for name, port in (("direct", rpg.port), ("tusk", t.port)):
        d = workdir / f"receivewal-{name}-{'tls' if tls else 'plain'}"
        d.mkdir()
        if IS_ROOT:
            os.chown(d, *_pg_ids())
        dirs[name] = d
        ssl = "require" if tls and name == "tusk" else "disable"
        procs.append(subprocess.Popen(as_postgres([
            str(PG_BIN / "pg_receivewal"), "-d", f"host=127.0.0.1 port={port} user=tusk_solo sslmode={ssl}",
            "-D", str(d), "-E", end, "-s", "1", "--no-loop", "--no-sync"]), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True))
    for p in procs:
        _, err = p.communicate(timeout=60 * SLOW)
        assert p.returncode == 0, err
    names = {k: sorted(f.name for f in d.iterdir()) for k, d in dirs.items()}
    assert names["direct"] == names["tusk"] and names["direct"], names
    seg = 16 << 20
    upto = lsn_of(end) % seg  # the bytes of the last segment up to the end position
    for i, f in enumerate(names["direct"]):
        a = (dirs["direct"] / f).read_bytes()
        b = (dirs["tusk"] / f).read_bytes()
        if i == len(names["direct"]) - 1:
            a, b = a[:upto], b[:upto]
        assert a == b, f"{f} differs"
    rpg.execute("delete from events", dbname=TEST_DB)


# ---- the protocol, step by step, direct and through tusk ---------------------------------------


def read_copy_both(c, until, timeout):
    """CopyData messages of a START_REPLICATION stream until until(texts) holds: the decoded
    texts of XLogData ('w'), keepalives ('k') skipped."""
    texts = []
    deadline = time.monotonic() + timeout
    while not until(texts):
        kind, body = c.read_message(max(0.01, deadline - time.monotonic()))
        assert kind == b"d", (kind, body[:200])
        if body[:1] == b"w":
            texts.append(body[25:].decode())
        else:
            assert body[:1] == b"k", body[:40]
    return texts


def transcript(msgs):
    """Messages as (type, what matters): an error's SQLSTATE and message, a row's values, a
    command tag; parameter statuses and the cancel key (tusk's own) left out."""
    out = []
    for kind, body in msgs:
        if kind in (b"S", b"K", b"N"):
            continue
        if kind == b"E":
            f = parse_error_fields(body)
            out.append(("E", f.get("C"), f.get("M")))
        elif kind == b"D":
            out.append(("D", body))
        else:
            out.append((kind.decode(), body))
    return out


def steps(port, slot):
    """A logical replication connection's commands, as a driver or a subscriber sends them;
    their answers as transcripts. The slot is created and streamed from; the stream is
    returned to its caller open (the client and its decoded texts so far)."""
    c, msgs = raw_startup(port, "postgres", TEST_DB, replication="database")
    got = [transcript(msgs)]
    for sql in ("SELECT 1 AS one, 'x'::text AS two", "SHOW wal_level", "NO_SUCH_COMMAND",
                "SELECT * FROM no_such_table", "TIMELINE_HISTORY 1"):
        c.send(query_message(sql))
        got.append((sql, transcript(c.read_until_ready())))
    # the extended protocol: PostgreSQL refuses it in a replication connection
    c.send(message(b"P", b"\0SELECT 1\0\0\0") + message(b"S"))
    got.append(("Parse", transcript(c.read_until_ready())))
    c.send(query_message("IDENTIFY_SYSTEM"))
    ident = c.read_until_ready()
    got.append(("IDENTIFY_SYSTEM", [k for k, _ in ident]))
    c.send(query_message(f"CREATE_REPLICATION_SLOT {slot} TEMPORARY LOGICAL test_decoding"))
    created = transcript(c.read_until_ready())
    got.append(("CREATE", [m[0] for m in created]))
    c.send(query_message(f"START_REPLICATION SLOT {slot} LOGICAL 0/0"))
    kind, _ = c.read_message()
    got.append(("START", kind))
    return c, got


def end_stream(c):
    """CopyDone from the client: the server ends its stream (its CopyDone, the command's
    completion, ReadyForQuery)."""
    c.send(message(b"c"))
    out = []
    while True:
        kind, body = c.read_message()
        if kind == b"d":
            continue  # data sent before it saw the CopyDone
        out.append((kind, body))
        if kind == b"Z":
            return transcript(out)


def test_logical_replication_protocol_same_as_direct(rpg, tusk):
    """The same commands on a logical replication connection, directly and through tusk, at
    once: SQL, replication commands, errors, the extended protocol's refusal, a slot, and a
    stream of one transaction decoded, ended by the client's CopyDone: the same answers."""
    t = tusk(pg_server=rpg, pools=POOLS)
    direct, got_direct = steps(rpg.port, "diff_direct")
    through, got_tusk = steps(t.port, "diff_tusk")
    try:
        assert got_tusk == got_direct
        rpg.execute("insert into events values (20, 'streamed'), (21, 'twice')", dbname=TEST_DB)
        texts_direct = read_copy_both(direct, committed, 20 * SLOW)
        texts_tusk = read_copy_both(through, committed, 20 * SLOW)
        assert texts_tusk == texts_direct and len(texts_tusk) == 4, (texts_direct, texts_tusk)
        assert end_stream(through) == end_stream(direct)
        for c in (direct, through):  # the connection goes on after the stream
            c.send(query_message("SELECT 2"))
        assert transcript(through.read_until_ready()) == transcript(direct.read_until_ready())
    finally:
        direct.close()
        through.close()
    wait_until(lambda: walsenders(rpg) == 0, 10 * SLOW, what="no walsender left")
    rpg.execute("delete from events", dbname=TEST_DB)


def first_error(port, user, database, **params):
    """The error that ends a login (PostgreSQL checks the REPLICATION attribute after its
    AuthenticationOk)."""
    c = RawClient("127.0.0.1", port, timeout=10 * SLOW)
    try:
        c.send(startup_packet({"user": user, "database": database, **params}))
        while True:
            kind, body = c.read_message()
            if kind == b"E":
                return parse_error_fields(body)
            assert kind in (b"R", b"S", b"K", b"N"), (kind, body)
    finally:
        c.close()


def test_refusals_as_from_postgresql(rpg, tusk):
    """What PostgreSQL refuses, it refuses through tusk in its own words: a physical
    replication connection of a role without REPLICATION, a value of "replication" that is
    none. tusk's own: a replication connection to its admin console."""
    t = tusk(pg_server=rpg, pools=POOLS, admin=ADMIN)
    for params in ({"replication": "true"}, {"replication": "database"}):
        want = first_error(rpg.port, "tusk_trust", TEST_DB, **params)
        got = first_error(t.port, "tusk_trust", TEST_DB, **params)
        assert (got["C"], got["M"]) == (want["C"], want["M"]) == ("42501", want["M"]), (want, got)
    want = first_error(rpg.port, "tusk_solo", TEST_DB, replication="maybe")
    got = first_error(t.port, "tusk_solo", TEST_DB, replication="maybe")
    assert got["C"] == want["C"] == "22023", (want, got)
    got = first_error(t.port, "postgres", "tusk", replication="true")
    assert got["C"] == "08P01" and "replication" in got["M"], got
    # the values PostgreSQL reads as a boolean
    for value in ("on", "1", "yes", "TRUE", "t"):
        c, _ = raw_startup(t.port, "tusk_solo", "replication", replication=value)
        c.send(query_message("IDENTIFY_SYSTEM"))
        assert [k for k, _ in c.read_until_ready()] == [b"T", b"D", b"C", b"Z"], value
        c.close()
    for value in ("off", "0", "no", "false"):  # an ordinary connection
        c, _ = raw_startup(t.port, "tusk_solo", TEST_DB, replication=value)
        rows, errors = c.simple_query("select count(*) from pg_stat_replication where pid = pg_backend_pid()")
        assert rows == [["0"]] and not errors, value
        c.close()
    # the parameter twice: the last counts, as in PostgreSQL
    for last, want in (("false", [["0"]]), ("database", [["1"]])):
        for port in (rpg.port, t.port):
            body = struct.pack("!I", 196608) + b"".join(
                k.encode() + b"\0" + v.encode() + b"\0" for k, v in (
                    ("user", "tusk_solo"), ("database", TEST_DB), ("replication", "true"), ("replication", last)))
            c = RawClient("127.0.0.1", port, timeout=10 * SLOW)
            c.send(struct.pack("!I", len(body) + 5) + body + b"\0")
            c.read_until_ready()
            rows, errors = c.simple_query("select count(*) from pg_stat_replication where pid = pg_backend_pid()")
            assert rows == want and not errors, (port, last, rows, errors)
            c.close()


def test_hba_file_replication_keyword(rpg, tusk, tmp_path):
    """tusk's hba_file reads the keyword replication as PostgreSQL does: a physical replication
    connection matches only lines that name it, and "all" does not; a logical one matches its
    database's lines. And a server_password login (SCRAM to PostgreSQL) on a replication
    connection."""
    hba = tmp_path / "hba.conf"
    hba.write_text("host replication tusk_solo 127.0.0.1/32 trust\n"
                   "host replication rep_scram 127.0.0.1/32 trust\n"
                   "host all all 127.0.0.1/32 trust\n")
    pools = [{"database": "*", "user": "rep_scram", "service": "main", "mode": "session", "size": 2,
              "server_password": "rep-pw"}] + POOLS
    t = tusk(pg_server=rpg, pools=pools, hba_file=str(hba))
    got = first_error(t.port, "postgres", "replication", replication="true")
    assert got["C"] == "28000" and "replication connection" in got["M"], got
    for user in ("tusk_solo", "rep_scram"):
        c, _ = raw_startup(t.port, user, "replication", replication="true")
        c.send(query_message("IDENTIFY_SYSTEM"))
        assert [k for k, _ in c.read_until_ready()] == [b"T", b"D", b"C", b"Z"], user
        c.close()
    c, _ = raw_startup(t.port, "postgres", TEST_DB, replication="database")
    rows, errors = c.simple_query("select current_database()")
    assert rows == [[TEST_DB]] and not errors
    c.close()


# ---- faults ---------------------------------------------------------------------------------------


def start_physical(port):
    """A raw physical replication stream from the current WAL position: the client, after the
    CopyBothResponse."""
    c, _ = raw_startup(port, "tusk_solo", "replication", replication="true")
    rows, errors = c.simple_query("IDENTIFY_SYSTEM")
    assert not errors, errors
    tli, pos = rows[0][1], rows[0][2]
    c.send(query_message(f"START_REPLICATION PHYSICAL {pos} TIMELINE {tli}"))
    kind, _ = c.read_message()
    assert kind == b"W", kind
    return c


def start_logical(port, slot):
    """A raw logical replication stream of test_decoding from a temporary slot: the client,
    after the CopyBothResponse."""
    c, _ = raw_startup(port, "postgres", TEST_DB, replication="database")
    c.send(query_message(f"CREATE_REPLICATION_SLOT {slot} TEMPORARY LOGICAL test_decoding"))
    c.read_until_ready()
    c.send(query_message(f"START_REPLICATION SLOT {slot} LOGICAL 0/0"))
    assert c.read_message()[0] == b"W"
    return c


def committed(texts):
    """read_copy_both's until: a transaction's COMMIT decoded."""
    return any(x.startswith("COMMIT") for x in texts)


def walsender_pids(pg):
    return [r[0] for r in pg.execute("select pid from pg_stat_replication")]


def test_client_gone_mid_stream_ends_the_walsender(rpg, tusk):
    """A streaming client that vanishes (RST) takes its walsender with it."""
    t = tusk(pg_server=rpg, pools=POOLS)
    c = start_physical(t.port)
    rpg.execute("insert into events values (30, 'x')", dbname=TEST_DB)
    c.read_message()  # something streamed
    assert walsenders(rpg) == 1
    c.close(reset=True)
    wait_until(lambda: walsenders(rpg) == 0, 10 * SLOW, what="the walsender gone")
    t.wait_log("replication/tusk_solo")
    rpg.execute("delete from events", dbname=TEST_DB)


def test_walsender_terminated_reaches_the_client_as_from_postgresql(rpg, tusk):
    """pg_terminate_backend of a streaming walsender: the client sees what it sees directly
    (PostgreSQL 15 sends no error in the middle of the stream: the connection just ends)."""
    t = tusk(pg_server=rpg, pools=POOLS)
    seen = {}
    for name, port in (("direct", rpg.port), ("tusk", t.port)):
        c = start_physical(port)
        [pid] = walsender_pids(rpg)
        rpg.execute("select pg_terminate_backend(%s)", [pid])
        errors = []
        try:
            while True:
                kind, body = c.read_message()
                if kind == b"E":
                    errors.append(parse_error_fields(body))
        except Closed:
            pass
        c.close()
        seen[name] = [(e["S"], e["C"]) for e in errors]
        wait_until(lambda: walsenders(rpg) == 0, 10 * SLOW, what="the walsender gone")
    assert seen["tusk"] == seen["direct"], seen


def test_cancel_on_a_replication_connection(rpg, tusk):
    """A CancelRequest with the key tusk gave a logical replication client cancels the query
    its server runs (57014), and the connection goes on."""
    t = tusk(pg_server=rpg, pools=POOLS)
    c, msgs = raw_startup(t.port, "postgres", TEST_DB, replication="database")
    key = [b for k, b in msgs if k == b"K"][0]
    c.send(query_message("SELECT pg_sleep(60)"))
    time.sleep(0.3)
    with socket.create_connection(("127.0.0.1", t.port), timeout=10) as cs:
        cs.sendall(struct.pack("!II", 16, 80877102) + key)
    started = time.monotonic()
    msgs = c.read_until_ready(timeout=20 * SLOW)
    assert time.monotonic() - started < 10 * SLOW
    assert [parse_error_fields(b)["C"] for k, b in msgs if k == b"E"] == ["57014"], msgs
    rows, errors = c.simple_query("SELECT 3")
    assert rows == [["3"]] and not errors
    c.close()


def test_a_slow_reader_is_paced_not_buffered(rpg, tusk):
    """A logical stream whose client stops reading while 20,000 rows are decoded: tusk's memory
    stays bounded (it stops reading the server), and when the client reads again every change
    arrives, in order."""
    t = tusk(pg_server=rpg, pools=POOLS)
    c = start_logical(t.port, "slow")
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    rss0 = t.status("VmRSS")
    n = 20000
    rpg.execute(f"insert into events select g, repeat('p', 500) from generate_series(1000, {999 + n}) g",
                dbname=TEST_DB)
    time.sleep(2 * SLOW)  # the walsender decodes and sends; nobody reads
    grown = t.status("VmRSS") - rss0
    assert grown < 8 * 1024, f"tusk grew {grown} kB while its client did not read"
    texts = read_copy_both(c, committed, 60 * SLOW)
    ids = [int(s.split("id[integer]:")[1].split(" ")[0]) for s in texts if "INSERT" in s]
    assert ids == list(range(1000, 1000 + n))
    c.close()
    wait_until(lambda: walsenders(rpg) == 0, 10 * SLOW, what="no walsender left")
    rpg.execute("delete from events", dbname=TEST_DB)


def test_shutdown_with_a_stream_running(rpg, tusk):
    """SIGTERM while a replication client streams: the client hears 57P01 from tusk (or the
    end), tusk exits 0 by itself, and the walsender goes."""
    from lifecycle_util import finished
    t = tusk(pg_server=rpg, pools=POOLS)
    c = start_physical(t.port)
    t.proc.send_signal(signal.SIGTERM)
    got = None
    try:
        while True:
            kind, body = c.read_message(timeout=20 * SLOW)
            if kind == b"E":
                got = parse_error_fields(body)
    except Closed:
        pass
    assert got is None or got["C"] == "57P01", got
    c.close()
    # waited for here: the fixture's stop would take an exit it did not ask for as a death
    assert finished(t, 20 * SLOW) == 0
    wait_until(lambda: walsenders(rpg) == 0, 10 * SLOW, what="no walsender left")


def test_a_standby_through_tusk_follows_a_failover_under_load(workdir, tusk):
    """A standby made and streaming through tusk (S2) while writers insert through tusk's pool:
    the primary is shut down and the other standby (S1) promoted. S2's walreceiver reconnects
    through tusk, which finds the old primary down and the promoted one a primary, and S2
    follows the new timeline: every row a writer had acknowledged, before and after the
    failover, is on S2, which holds exactly what the new primary holds."""
    import threading

    from failover_util import Writer
    from repl_util import make_cluster

    c = make_cluster(workdir / "cluster-replication-failover", standbys=1)
    s2 = None
    stop = threading.Event()
    writers = []
    try:
        p, s1 = c.primary, c.standbys[0]
        p.execute("create table fo (id bigint primary key, writer int, at float8); grant all on fo to public",
                  dbname=TEST_DB)
        t = tusk(pg_server=p, services={"main": {"hosts": [f"127.0.0.1:{p.port}", f"127.0.0.1:{s1.port}"]}},
                 pools=[{"database": "*", "user": "*", "service": "main", "mode": "transaction", "size": 8,
                         "target_session_attrs": "primary"}],
                 pool_wait_timeout="10s", server_connect_timeout="2s")
        base = workdir / "cluster-replication-failover" / "s2"
        base.mkdir()
        (base / "sock").mkdir()
        if IS_ROOT:
            for d in (base, base / "sock"):
                os.chown(d, *_pg_ids())
        run(as_postgres([str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(t.port), "-U", "postgres",
                         "-D", str(base / "data"), "-R", "-X", "stream", "-c", "fast", "--no-sync"]),
            timeout=120 * SLOW)
        s2 = PgServer(base, with_bench=False)
        _atexit_servers.append(s2)
        with open(s2.data / "postgresql.conf", "a") as f:
            f.write(f"\nport = {s2.port}\nunix_socket_directories = '{s2.sockdir}'\n"
                    "cluster_name = 's2_via_tusk'\nwal_retrieve_retry_interval = 500ms\n")
        s2.start()
        wait_until(lambda: ("s2_via_tusk",) in p.execute("select application_name from pg_stat_replication"),
                   30 * SLOW, what="S2 streaming from the primary through tusk")
        writers = [Writer(t.port, w, stop, w * 1_000_000) for w in range(4)]
        for w in writers:
            w.start()
        wait_until(lambda: all(len(w.acked) >= 20 for w in writers), 30 * SLOW, what="writes before the failover")
        p.stop("fast")  # a switchover: every standby receives all the old primary wrote
        c.promote(s1)
        wait_until(lambda: all(any(at > time.monotonic() - 1 for _, at in w.acked[-3:]) for w in writers),
                   60 * SLOW, interval=0.2, what="writes again, on the new primary")
        time.sleep(1)
        stop.set()
        for w in writers:
            w.join(timeout=30)
        lsn = c.current_lsn(s1)
        wait_until(lambda: c.replayed(s2, lsn), 60 * SLOW, what="S2 replays the new primary's writes")
        on_new = {r[0] for r in s1.execute("select id from fo", dbname=TEST_DB)}
        on_s2 = {r[0] for r in s2.execute("select id from fo", dbname=TEST_DB)}
        acked = {i for w in writers for i, _ in w.acked}
        assert on_s2 == on_new
        assert acked <= on_s2, f"{len(acked - on_s2)} acknowledged rows missing on S2"
        assert s2.execute("select received_tli from pg_stat_wal_receiver")[0][0] == 2
        assert ("s2_via_tusk",) in s1.execute("select application_name from pg_stat_replication")
        log = t.log_text()
        assert "replication connection to 127.0.0.1:%d failed" % p.port in log, t.log_tail(30)
    finally:
        stop.set()
        for w in writers:
            w.join(timeout=30)
        if s2 is not None:
            s2.destroy()
        c.destroy()


def test_target_standby_takes_a_standby_cascading(pg_cluster, tusk):
    """A rule whose target_session_attrs is standby sends a physical replication connection to
    a standby (cascading replication), one of primary (the default) to the primary: the
    walsender runs where the rule says."""
    c = pg_cluster
    nodes = c.nodes
    pools = [{"database": "cascade", "user": "postgres", "service": "main", "mode": "session", "size": 2,
              "target_session_attrs": "standby"},
             {"database": "*", "user": "*", "service": "main", "mode": "session", "size": 2}]
    t = tusk(pg_server=c.primary, services={"main": {"hosts": [f"127.0.0.1:{n.port}" for n in nodes]}}, pools=pools)

    def senders(node, user):
        return node.execute("select count(*) from pg_stat_replication where usename = %s and "
                            "application_name = 'via_tusk'", [user])[0][0]

    # a physical connection's database names the rule only: PostgreSQL ignores it
    for database, user, want in (("cascade", "postgres", c.standbys), ("replication", "postgres", [c.primary])):
        cl, _ = raw_startup(t.port, user, database, replication="true", application_name="via_tusk")
        rows, errors = cl.simple_query("IDENTIFY_SYSTEM")
        assert not errors, errors
        cl.send(query_message(f"START_REPLICATION PHYSICAL {rows[0][2]} TIMELINE {rows[0][1]}"))
        assert cl.read_message()[0] == b"W"
        wait_until(lambda: sum(senders(n, user) for n in want) == 1, 10 * SLOW, what=f"{user}'s walsender")
        assert sum(senders(n, user) for n in nodes) == 1
        cl.close()
        wait_until(lambda: sum(senders(n, user) for n in nodes) == 0, 10 * SLOW, what="walsender gone")


def test_a_subscription_through_tusk(rpg, tusk, workdir):
    """A logical replication subscription whose connection string names tusk: the table's
    initial copy (a tablesync worker's replication connection, with SQL and COPY in it) and
    then the changes streamed by pgoutput (inserts, an update, a delete) reach the
    subscriber, and dropping the subscription drops its slot through tusk."""
    t = tusk(pg_server=rpg, pools=POOLS)
    sub = PgServer(workdir / "pg-subscriber", with_bench=False)
    _atexit_servers.append(sub)
    sub.init()
    try:
        rpg.execute("insert into events select g, 'initial ' || g from generate_series(1, 500) g", dbname=TEST_DB)
        rpg.execute("create publication pub_events for table events", dbname=TEST_DB)
        sub.execute("create table events (id int primary key, what text)", dbname=TEST_DB)
        sub.execute(f"create subscription sub_events connection 'host=127.0.0.1 port={t.port} user=postgres "
                    f"dbname={TEST_DB} application_name=sub_events' publication pub_events", dbname=TEST_DB)
        count = lambda: sub.execute("select count(*) from events", dbname=TEST_DB)[0][0]  # noqa: E731
        wait_until(lambda: count() == 500, 60 * SLOW, what="the initial copy")
        rpg.execute("insert into events values (501, 'streamed'); update events set what = 'changed' where id = 1;"
                    " delete from events where id = 2", dbname=TEST_DB)
        want = rpg.execute("select id, what from events order by id", dbname=TEST_DB)
        wait_until(lambda: sub.execute("select id, what from events order by id", dbname=TEST_DB) == want,
                   30 * SLOW, what="the changes on the subscriber")
        assert rpg.execute("select count(*) from pg_stat_replication where application_name = 'sub_events'")[0][0] == 1
        sub.execute("drop subscription sub_events", dbname=TEST_DB)
        assert rpg.execute("select count(*) from pg_replication_slots")[0][0] == 0
    finally:
        sub.destroy()
        rpg.execute("drop publication if exists pub_events", dbname=TEST_DB)
        rpg.execute("delete from events", dbname=TEST_DB)


class SlowProxy:
    """A TCP proxy in front of PostgreSQL that holds each new connection's first bytes for
    delay seconds, then relays both ways: a server login that takes that long."""

    def __init__(self, target_port, delay):
        import threading
        self.target, self.delay = target_port, delay
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading
        while not self.closed:
            try:
                a, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(a,), daemon=True).start()

    def _serve(self, a):
        import threading
        time.sleep(self.delay)
        try:
            b = socket.create_connection(("127.0.0.1", self.target))
        except OSError:
            a.close()
            return

        def pipe(x, y):
            try:
                while True:
                    d = x.recv(65536)
                    if not d:
                        break
                    y.sendall(d)
            except OSError:
                pass
            for s in (x, y):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        threading.Thread(target=pipe, args=(b, a), daemon=True).start()
        pipe(a, b)

    def close(self):
        self.closed = True
        self.sock.close()


def test_killed_while_its_server_logs_in(rpg, tusk):
    """KILL_CLIENT of a replication client whose server is still logging in: the client hears
    57P01, and the server, once logged in, is closed instead of greeting anyone; tusk goes on."""
    proxy = SlowProxy(rpg.port, 1.5)
    try:
        t = tusk(pg_server=rpg, services={"main": {"hosts": [f"127.0.0.1:{proxy.port}"]}}, pools=POOLS,
                 admin=ADMIN, server_connect_timeout="10s")
        c = RawClient("127.0.0.1", t.port, timeout=10 * SLOW)
        c.send(startup_packet({"user": "tusk_solo", "database": "replication", "replication": "true"}))
        wait_until(lambda: [r for r in console_show(t, "show clients") if r["user"] == "tusk_solo"], 5 * SLOW,
                   what="the client listed")
        [row] = [r for r in console_show(t, "show clients") if r["user"] == "tusk_solo"]
        assert row["state"] == "waiting", row
        import psycopg
        with psycopg.connect(host="127.0.0.1", port=t.port, user="postgres", dbname="tusk", autocommit=True) as a:
            a.execute(f"KILL_CLIENT {row['id']}")
        kind, f = c.expect_error_or_close(timeout=10 * SLOW)
        assert kind == "error" and f["C"] == "57P01", f
        # kept open: tusk's side lingers while the server's login ends
        t.wait_log("its replication client is closing", timeout=10)
        c.close()
        # tusk goes on: a replication connection through it works
        c2, _ = raw_startup(t.port, "tusk_solo", "replication", replication="true")
        c2.send(query_message("IDENTIFY_SYSTEM"))
        assert [k for k, _ in c2.read_until_ready()] == [b"T", b"D", b"C", b"Z"]
        c2.close()
    finally:
        proxy.close()
    wait_until(lambda: walsenders(rpg) == 0, 10 * SLOW, what="no walsender left")


def test_reload_keeps_a_stream(rpg, tusk):
    """SIGHUP (a reload that changes the pool rules) while a logical stream runs: the stream
    goes on, and a change committed after the reload arrives."""
    t = tusk(pg_server=rpg, pools=POOLS)
    c = start_logical(t.port, "reload")
    text = t.cfg_path.read_text().replace("size: 4", "size: 5")
    assert text != t.cfg_path.read_text()
    t.cfg_path.write_text(text)
    t.proc.send_signal(signal.SIGHUP)
    t.wait_log("reloaded", timeout=10)
    rpg.execute("insert into events values (40, 'after the reload')", dbname=TEST_DB)
    texts = read_copy_both(c, committed, 20 * SLOW)
    assert any("'after the reload'" in s for s in texts), texts
    c.close()
    wait_until(lambda: walsenders(rpg) == 0, 10 * SLOW, what="no walsender left")
    rpg.execute("delete from events", dbname=TEST_DB)


def test_no_connect_query_nor_rule_settings_on_a_replication_connection(rpg, tusk):
    """A rule's connect_query and timezone are its pool's: the replication connection, a
    server of its own outside the pool, gets neither (a physical walsender would refuse the
    query); the pool's clients get both."""
    pools = [{**POOLS[0], "connect_query": "set tusk_test.cq = 'yes'", "timezone": "Asia/Tokyo"}]
    t = tusk(pg_server=rpg, pools=pools)
    ask = "select coalesce(current_setting('tusk_test.cq', true), ''), current_setting('timezone')"
    default_tz = rpg.execute("select setting from pg_settings where name = 'TimeZone'")[0][0]
    c, _ = raw_startup(t.port, "tusk_solo", TEST_DB, replication="database")
    try:
        assert c.simple_query(ask) == ([["", default_tz]], [])
    finally:
        c.close()
    c, _ = raw_startup(t.port, "tusk_solo", TEST_DB, replication="true")
    try:
        rows, errors = c.simple_query("IDENTIFY_SYSTEM")
        assert errors == [] and len(rows) == 1
    finally:
        c.close()
    c, _ = raw_startup(t.port, "tusk_solo", TEST_DB)
    try:
        assert c.simple_query(ask) == ([["yes", "Asia/Tokyo"]], [])
    finally:
        c.close()
