"""A service of many backends, wired into the pools (docs/backends.md): every host of a service
gets servers, a DNS answer change drains one backend and adds another under load, claims made
before any backend exists wait for the first answer, a black-holed host does not hold up claims
on the others, a service with no usable backend fails claims fast naming each backend's last
error, and SHOW SERVICES shows it all."""

import re
import socket
import subprocess
import threading
import time

import psycopg
import pytest

from conftest import assert_tusk_error, BENCH_DB, console_show, free_port, PG_BIN, SLOW, TEST_DB, wait_until

ADMIN = {"users": ["postgres"], "client_auth": "trust"}


def show_services(t):
    return console_show(t, "SHOW SERVICES")


def tusk_backends(node, dbname=TEST_DB):
    """Connections tusk holds on node (application_name is not set by tusk: count by db)."""
    return node.execute("select count(*) from pg_stat_activity where backend_type = 'client backend' "
                        "and datname = %s and pid <> pg_backend_pid()", [dbname])[0][0]


def hold_transactions(t, n):
    """n clients, each inside a transaction (so each holds its own server)."""
    conns = []
    for _ in range(n):
        c = t.connect()
        c.execute("begin")
        c.execute("select 1")
        conns.append(c)
    return conns


def test_two_hosts_both_get_connections(pg_cluster, tusk):
    a, b = pg_cluster.standbys
    t = tusk(services={"main": {"hosts": [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]}},
             pools=[{"database": "*", "user": "*", "service": "main", "mode": "transaction", "size": 4}],
             admin=ADMIN)
    conns = hold_transactions(t, 4)
    try:
        na, nb = tusk_backends(a), tusk_backends(b)
        assert na + nb == 4
        assert na >= 1 and nb >= 1, (na, nb)
        rows = [r for r in show_services(t) if r["pool"] == f"{TEST_DB}/tusk_trust"]
        assert {r["backend"] for r in rows} == {f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"}
        assert all(r["state"] == "up" for r in rows), rows
        assert sum(int(r["connections"]) for r in rows) == 4
        assert all(r["resolver"].startswith("hosts") for r in rows)
    finally:
        for c in conns:
            c.close()


def test_size_is_the_hard_max_across_hosts_and_max_per_host(pg_cluster, tusk):
    """size 3 over three hosts with max_per_host 1: one server each, a fourth claim waits."""
    nodes = pg_cluster.nodes
    t = tusk(services={"main": {"hosts": [f"127.0.0.1:{n.port}" for n in nodes], "max_per_host": 1}},
             pools=[{"database": "*", "user": "*", "service": "main", "mode": "transaction", "size": 3}],
             pool_wait_timeout="1s")
    conns = hold_transactions(t, 3)
    try:
        assert [tusk_backends(n) for n in nodes] == [1, 1, 1]
        # The fourth waits (at login or at its first query) and times out: no fourth server.
        with pytest.raises(psycopg.Error) as e:
            with t.connect() as c:
                c.execute("select 1")
        assert "timed out after 1.0s waiting for a server connection" in str(e.value), e.value
        assert [tusk_backends(n) for n in nodes] == [1, 1, 1]
    finally:
        for c in conns:
            c.close()


def test_claims_before_any_backend_exists_wait_for_the_first_answer(pg, dns, tusk):
    t = tusk(services={"main": {"dns": "db.test", "port": pg.port, "nameservers": [dns.nameserver],
                                "dns_min_ttl": "100ms", "dns_max_ttl": "1s"}},
             pools=[{"database": "*", "user": "*", "service": "main", "mode": "transaction", "size": 2}],
             pool_wait_timeout="10s")
    out = {}

    def client():
        try:
            with t.connect() as c:
                out["v"] = c.execute("select 42").fetchone()[0]
        except Exception as e:  # noqa: BLE001 (reported below)
            out["err"] = e

    th = threading.Thread(target=client)
    th.start()
    time.sleep(1.0)
    assert th.is_alive(), out  # it waits: no backend yet
    dns.set_a("db.test", ["127.0.0.1"], ttl=1)
    th.join(15 * SLOW)
    assert out.get("v") == 42, out


def black_hole():
    """A listener that accepts (the kernel does) and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    return s


def test_black_holed_host_does_not_delay_claims_on_the_others(pg, tusk):
    hole = black_hole()
    try:
        t = tusk(services={"main": {"hosts": [f"127.0.0.1:{hole.getsockname()[1]}", f"127.0.0.1:{pg.port}"]}},
                 pools=[{"database": "*", "user": "*", "service": "main", "mode": "transaction", "size": 8}],
                 server_connect_timeout="3s", pool_wait_timeout="20s")
        results = [None] * 6

        def client(i):
            t0 = time.monotonic()
            with t.connect() as c:
                c.execute("begin")
                c.execute("select pg_sleep(0.2)")
                c.execute("commit")
            results[i] = time.monotonic() - t0

        ths = [threading.Thread(target=client, args=(i,)) for i in range(6)]
        for th in ths:
            th.start()
        for th in ths:
            th.join(30 * SLOW)
        assert all(r is not None for r in results), results
        # At most one claim had its connect opened to the black hole: it waited for the
        # connect timeout and was then served by the other host. The others did not wait.
        slow = [r for r in results if r > 2.0 * SLOW]
        assert len(slow) <= 1, results
        assert all(r < 6.0 * SLOW for r in results), results
    finally:
        hole.close()


def test_no_usable_backend_fails_fast_naming_each(tusk):
    p1, p2 = free_port(), free_port()
    t = tusk(services={"main": {"hosts": [f"127.0.0.1:{p1}", f"127.0.0.1:{p2}"]}},
             pools=[{"database": "*", "user": "*", "service": "main", "mode": "transaction", "size": 4}],
             pool_wait_timeout="20s")
    t0 = time.monotonic()
    with pytest.raises(psycopg.OperationalError) as e:
        with t.connect() as c:
            c.execute("select 1")
    took = time.monotonic() - t0
    msg = str(e.value)
    assert took < 3.0 * SLOW, took
    assert_tusk_error(msg)
    assert "service main" in msg, msg
    assert f"127.0.0.1:{p1}" in msg and f"127.0.0.1:{p2}" in msg, msg
    assert msg.count("refused") >= 2, msg


def pgbench(port, *args, timeout=120):
    cmd = [str(PG_BIN / "pgbench"), "-h", "127.0.0.1", "-p", str(port), "-U", "tusk_trust", *args, BENCH_DB]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout * SLOW)


@pytest.mark.exclusive  # load: runs alone (conftest.py)
def test_dns_answer_change_drains_one_and_adds_another_under_load(pg_cluster, dns, tusk):
    c = pg_cluster
    p = pgbench(c.primary.port, "-i", "-q", "-s", "1")
    assert p.returncode == 0, p.stderr
    lsn = c.current_lsn()
    old, new = c.standbys
    for s in c.standbys:
        c.wait_replayed(s, lsn, timeout=30)
    name = "_postgresql._tcp.db.test"
    dns.set_a("a.db.test", ["127.0.0.1"], ttl=1)
    dns.set_a("b.db.test", ["127.0.0.1"], ttl=1)
    dns.set_srv(name, [(0, 1, old.port, "a.db.test")], ttl=1)
    t = tusk(services={"main": {"srv": name, "nameservers": [dns.nameserver], "dns_min_ttl": "200ms",
                                "dns_max_ttl": "1s"}},
             pools=[{"database": "*", "user": "*", "service": "main", "mode": "transaction", "size": 4}],
             admin=ADMIN)
    bench = subprocess.Popen([str(PG_BIN / "pgbench"), "-h", "127.0.0.1", "-p", str(t.port), "-U", "tusk_trust",
                              "-S", "-n", "-c", "4", "-j", "2", "-T", "8", BENCH_DB],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.5)
    assert tusk_backends(old, BENCH_DB) >= 1
    dns.set_srv(name, [(0, 1, new.port, "b.db.test")], ttl=1)
    # Two answers without the old backend drain it: its servers close as they are released,
    # and the new one takes the load.
    wait_until(lambda: tusk_backends(new, BENCH_DB) >= 1, 10 * SLOW, what="servers on the new backend")
    wait_until(lambda: tusk_backends(old, BENCH_DB) == 0, 10 * SLOW, what="the old backend drained")
    out, err = bench.communicate(timeout=60 * SLOW)
    assert bench.returncode == 0, (out, err)
    m = re.search(r"number of transactions actually processed: (\d+)", out)
    assert m and int(m.group(1)) > 100, out
    failed = re.search(r"number of failed transactions: (\d+)", out)
    assert failed is None or int(failed.group(1)) == 0, out
    rows = show_services(t)
    states = {r["backend"]: r["state"] for r in rows if r["pool"] == f"{BENCH_DB}/tusk_trust"}
    assert states.get(f"127.0.0.1:{new.port}") == "up", rows
    assert states.get(f"127.0.0.1:{old.port}") in (None, "draining"), rows
    assert all(r["resolver"].startswith("srv: ok") for r in rows), rows


# ---- roles: target_session_attrs (docs/backends.md, "Routing") ---------------------------------

TARGETS = ["primary", "read-write", "standby", "read-only", "prefer-standby", "any"]


def role_pools(targets=TARGETS, mode="transaction", size=4):
    """One pool per target, reached as database "t_<target>" (server_database tusk_test)."""
    return [{"database": "t_" + tg.replace("-", "_"), "user": "*", "service": "main", "mode": mode, "size": size,
             "server_database": TEST_DB, "target_session_attrs": tg} for tg in targets]


def cluster_service(c):
    return {"main": {"hosts": [f"127.0.0.1:{n.port}" for n in c.nodes]}}


def in_recovery_through(t, target, n=4):
    """pg_is_in_recovery() from n clients each holding its own server at once."""
    conns = [t.connect(dbname="t_" + target.replace("-", "_")) for _ in range(n)]
    try:
        out = []
        for c in conns:
            c.execute("begin")
            out.append(c.execute("select pg_is_in_recovery()").fetchone()[0])
        return out
    finally:
        for c in conns:
            c.close()


def test_target_session_attrs_picks_backends_by_role(pg_cluster, tusk):
    t = tusk(services=cluster_service(pg_cluster), pools=role_pools(), admin=ADMIN)
    assert in_recovery_through(t, "primary") == [False] * 4
    assert in_recovery_through(t, "read-write") == [False] * 4
    assert in_recovery_through(t, "standby") == [True] * 4
    assert in_recovery_through(t, "read-only") == [True] * 4
    assert in_recovery_through(t, "prefer-standby") == [True] * 4
    assert set(in_recovery_through(t, "any")) <= {True, False}
    roles = {r["backend"]: r["role"] for r in show_services(t) if r["role"] != "unknown"}
    c = pg_cluster
    assert roles.get(f"127.0.0.1:{c.primary.port}") == "primary", roles
    assert {roles.get(f"127.0.0.1:{s.port}") for s in c.standbys} == {"standby"}, roles


def test_prefer_standby_never_takes_the_primary_offered_for_its_role_recheck(pg_cluster, tusk):
    """Every second a known role is due for a re-check and its backend is offered to every pool
    again, the primary to standby pools too; the login that finds it a primary must not serve a
    prefer-standby client while a standby is known. Short server lifetimes make logins happen
    all along, after re-checks."""
    t = tusk(services=cluster_service(pg_cluster), pools=role_pools(["prefer-standby", "primary", "standby"]),
             server_lifetime="200ms", admin=ADMIN)
    # Every role known first: before any is, prefer-standby may take whichever backend it
    # reaches (a standby is preferred among those known), which is not what is tested here.
    assert in_recovery_through(t, "primary", n=1) == [False]
    assert in_recovery_through(t, "standby", n=4) == [True] * 4
    wait_until(lambda: len({r["backend"] for r in show_services(t) if r["role"] == "standby"}) == 2,
               10 * SLOW, what="both standbys known")
    seen = []
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        seen += in_recovery_through(t, "prefer-standby")
        time.sleep(0.25)
    assert len(seen) >= 16 and all(seen), seen


def test_primary_pool_over_standbys_only_waits_then_says_why(pg_cluster, tusk):
    """A primary pool whose only host is a standby: a client waits pool_wait_timeout (a
    switchover's new primary could appear meanwhile), then is told what every connect found,
    with its id; the standby is never backed off for it."""
    c = pg_cluster
    sb = c.standbys[0]
    t = tusk(services={"main": {"hosts": [f"127.0.0.1:{sb.port}"]}}, pools=role_pools(["primary"]),
             pool_wait_timeout="1500ms", admin=ADMIN)
    t0 = time.monotonic()
    with pytest.raises(psycopg.OperationalError) as e:
        with t.connect(dbname="t_primary") as w:
            w.execute("select 1")
    took = time.monotonic() - t0
    msg = str(e.value)
    assert_tusk_error(msg)
    assert "timed out after 1.5s waiting for a server connection: none could be made" in msg, msg
    assert f"127.0.0.1:{sb.port} is a standby (target_session_attrs primary)" in msg, msg
    assert 1.4 < took < 6 * SLOW, took
    # Retried while waiting, a few times a second at most (backoff_first), not in a loop.
    tries = t.log_text().count("is a standby (target_session_attrs primary)")
    assert 2 <= tries <= 15, tries


def test_prefer_standby_falls_back_to_the_primary(pg_cluster, tusk):
    c = pg_cluster
    for s in c.standbys:
        s.stop("immediate")
    t = tusk(services=cluster_service(c), pools=role_pools(["prefer-standby", "standby"]),
             pool_wait_timeout="5s")
    assert in_recovery_through(t, "prefer-standby", n=2) == [False, False]
    with pytest.raises(psycopg.OperationalError) as e:
        in_recovery_through(t, "standby", n=1)
    assert_tusk_error(str(e.value))
    assert "service main" in str(e.value), e.value


# ---- failover: kill the primary, promote a standby, no tusk restart -------------------------------

def test_failover(private_cluster, tusk):
    c = private_cluster
    t = tusk(services=cluster_service(c), pools=role_pools(["primary"], size=4), pool_wait_timeout="10s")
    db = "t_primary"
    setup = t.connect(dbname=db, autocommit=True)
    setup.execute("create table fo (id serial primary key, at float8)")
    setup.close()
    lsn = c.current_lsn()
    for s in c.standbys:  # asynchronous commit: the table must reach the standby before the kill
        c.wait_replayed(s, lsn, timeout=30)
    idle = t.connect(dbname=db, autocommit=True)  # idle between transactions: holds no server
    idle.execute("select 1")
    in_tx = t.connect(dbname=db, autocommit=True)
    in_tx.execute("begin")
    in_tx.execute("insert into fo (at) values (0)")  # a transaction open on the primary
    old = c.primary
    old.stop("immediate")
    with pytest.raises(psycopg.OperationalError) as e:
        in_tx.execute("select 1")
    assert_tusk_error(str(e.value))
    # libpq reports the FATAL as a broken connection (no sqlstate); tusk's text says it.
    assert e.value.sqlstate in ("08006", None) and "closed the connection unexpectedly" in str(e.value), e.value
    in_tx.close()
    new = c.standbys[0]
    t0 = time.monotonic()
    c.promote(new)
    # Counted from pg_promote()'s return too: PostgreSQL's own time to promote is not tusk's
    # (on a loaded machine, a standby whose walreceiver had just lost its primary took 5 s).
    promoted = time.monotonic() - t0
    took, last = None, None
    while time.monotonic() - t0 < 15 * SLOW:
        try:
            with t.connect(dbname=db, autocommit=True) as w:
                w.execute("insert into fo (at) values (%s)", [time.monotonic() - t0])
            took = time.monotonic() - t0
            break
        except psycopg.Error as e:
            last = e
            time.sleep(0.05)
    assert took is not None and took - promoted < 5.0 * SLOW, (took, promoted, last)
    print(f"failover: first committed write through tusk {took:.2f}s after pg_promote() was called, "
          f"{took - promoted:.2f}s after it returned")
    # The idle client never reconnected: its next transaction runs on the new primary.
    idle.execute("insert into fo (at) values (-1)")
    assert new.execute("select count(*) from fo where at = -1", dbname=TEST_DB)[0][0] == 1
    idle.close()


def test_old_primary_back_as_standby(private_cluster, tusk):
    """Switchover: the primary stops cleanly (its standbys get all its WAL), a standby is
    promoted, and the old primary comes back following the new one. tusk, never restarted,
    sends writes to the new primary and standby-only clients to the old one among the others."""
    c = private_cluster
    t = tusk(services=cluster_service(c), pools=role_pools(["primary", "standby"], size=6),
             pool_wait_timeout="10s", admin=ADMIN)
    assert in_recovery_through(t, "primary", n=2) == [False, False]
    old, new = c.primary, c.standbys[0]
    old.stop("fast")  # a clean stop: the walsenders send everything first, no rewind needed
    c.promote(new)
    (old.data / "standby.signal").write_text("")
    with open(old.data / "postgresql.conf", "a") as f:
        f.write(f"\nprimary_conninfo = 'host=127.0.0.1 port={new.port} user=postgres'\n")
    old.start()
    wait_until(lambda: c.in_recovery(old) and new.execute(
        "select count(*) from pg_stat_replication where state = 'streaming'")[0][0] >= 1, 30 * SLOW,
        what="the old primary streaming from the new one")
    c.standbys.append(old)

    # The first client of the primary pool finds the old primary a standby now: it waits
    # (within pool_wait_timeout) while the new primary's verdict is offered again (each
    # second), rather than being refused; its write lands on the new primary.
    t0 = time.monotonic()
    with t.connect(dbname="t_primary") as w:
        w.execute("create table if not exists switched (id int)")
        w.execute("insert into switched values (1)")
        port = w.execute("select inet_server_port()").fetchone()[0]
    took = time.monotonic() - t0
    assert port == new.port, port
    assert took < 5 * SLOW, took
    assert in_recovery_through(t, "primary", n=3) == [False] * 3
    # Every standby-only client is on a standby; the old primary is one of them now (a role
    # is learnt at a login: the verdicts offered again each second bring it to the pools).
    ports = set()
    deadline = time.monotonic() + 15 * SLOW
    while time.monotonic() < deadline:
        conns = [t.connect(dbname="t_standby") for _ in range(6)]
        for cn in conns:
            cn.execute("begin")
            row = cn.execute("select pg_is_in_recovery(), inet_server_port()").fetchone()
            assert row[0] is True, row
            ports.add(row[1])
        for cn in conns:
            cn.close()
        if old.port in ports:
            break
        time.sleep(0.3)
    assert old.port in ports, ports
    def roles():
        return {r["backend"]: r["role"] for r in show_services(t)}
    wait_until(lambda: roles().get(f"127.0.0.1:{old.port}") == "standby" and
               roles().get(f"127.0.0.1:{new.port}") == "primary", 15 * SLOW, what="roles seen")
