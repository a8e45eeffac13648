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
        assert clients, console_show(t, "show clients")
    finally:
        standby.destroy()
    # the standby gone, its walsender goes too
    wait_until(lambda: walsenders(rpg) == 0, 20 * SLOW, what="no walsender left")
    rpg.execute("delete from events", dbname=TEST_DB)


def _pg_ids():
    import pwd
    p = pwd.getpwnam("postgres")
    return p.pw_uid, p.pw_gid
