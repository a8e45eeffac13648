"""Weights in the spread of servers over a service's backends (docs/backends.md, "Spreading"):
new connects go to the backend whose servers / weight is least, so transactions follow."""

import collections
import threading

from conftest import free_port


def held_by_port(conns):
    """Each client opens a transaction, one after another (each holds a server of its own), then
    all commit: how many servers each backend (by port) took."""
    held = collections.Counter()
    for c in conns:
        c.execute("begin")
        held[c.execute("select current_setting('port')::int").fetchone()[0]] += 1
    for c in conns:
        c.execute("commit")
    return held


def test_weights_1_and_3_share_200_transactions(pg_cluster, tusk):
    light, heavy = pg_cluster.standbys
    t = tusk(services={"main": {"hosts": [{"host": "127.0.0.1", "port": light.port, "weight": 1},
                                          {"host": "127.0.0.1", "port": heavy.port, "weight": 3}]}},
             pools=[{"database": "*", "user": "*", "service": "main", "mode": "transaction", "size": 8}])
    # Eight clients open a transaction one after another: eight servers, spread 2 : 6.
    conns = [t.connect() for _ in range(8)]
    held = held_by_port(conns)
    assert held == {light.port: 2, heavy.port: 6}, held

    # 200 transactions from the eight clients at once.
    ran = collections.Counter()
    lock = threading.Lock()

    def work(c):
        for _ in range(25):
            c.execute("begin")
            port = c.execute("select current_setting('port')::int").fetchone()[0]
            c.execute("commit")
            with lock:
                ran[port] += 1

    threads = [threading.Thread(target=work, args=(c,)) for c in conns]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    for c in conns:
        c.close()
    assert sum(ran.values()) == 200, ran
    share = ran[heavy.port] / 200
    print(f"weights 1:3, 200 transactions: heavy {share:.0%} {dict(ran)}")
    assert 0.60 <= share <= 0.90, (share, ran)


def test_load_balance_hosts_disable_takes_the_hosts_in_order(pg_cluster, tusk):
    """load_balance_hosts: disable (PgBouncer's and libpq's): every server goes to the first host
    of the list while it is up, and to the next only while the ones before it are down."""
    first, second = pg_cluster.standbys
    closed = free_port()
    for hosts, want in (([first.port, second.port], first.port), ([closed, second.port], second.port)):
        t = tusk(services={"main": {"hosts": [{"host": "127.0.0.1", "port": p} for p in hosts],
                                    "load_balance_hosts": "disable"}},
                 pools=[{"database": "*", "user": "*", "service": "main", "mode": "transaction", "size": 6}])
        conns = [t.connect() for _ in range(6)]
        held = held_by_port(conns)
        for c in conns:
            c.close()
        assert held == {want: 6}, (hosts, held)
