"""LISTEN/NOTIFY through transaction pooling under load, and its observability and resilience
(issue 24, docs/pooling.md "LISTEN/NOTIFY"): 200 listening clients on 20 channels with psycopg
and node-postgres (on two workers, pool size 2: the servers stay at pool size + 1 listener),
the listener killed mid-stream, a client that never reads 10,000 notifications, 100 clients
churning LISTEN/UNLISTEN, SHOW CLIENTS' channels, the /metrics series, RELOAD / SIGHUP /
RECONNECT, and online restart. The helpers and the `direct` fixture are test_listen_notify's."""
import json
import os
import sys
import random
import signal
import subprocess
import threading
import time

import psycopg
import pytest

from conftest import REPO, SLOW, TEST_DB, TUSK_BIN, Tusk, console_show, free_port, wait_until
from lifecycle_util import finished, rule
from test_listen_notify import direct, drain, lconnect, payloads, servers  # noqa: F401
from test_metrics import scrape, value

sys.path.insert(0, str(REPO / "tests" / "drivers"))
import harness  # noqa: E402

pytestmark = [pytest.mark.tusk_only, pytest.mark.exclusive]  # exclusive: conftest.py

POOL_SIZE = 2
CLIENTS = 200
CHANNELS = 20
SENDERS = 4
ROUNDS = 5  # each sender notifies every channel ROUNDS times


@pytest.fixture(scope="module")
def lt(tmp_path_factory, pg):
    # worker_balance off: the clients stay where SO_REUSEPORT put them, on both workers (a light
    # load would otherwise gather them on worker 0 before they LISTEN)
    http = free_port()
    t = Tusk(tmp_path_factory.mktemp("tusk-listen-load"), pg.port, workers=2, pool_wait_timeout="10s",
             worker_balance=False,
             pools=[{"database": "*", "user": "*", "service": "main", "mode": "transaction",
                     "size": POOL_SIZE}],
             admin={"users": ["postgres"], "client_auth": "trust", "http": f"127.0.0.1:{http}"})
    t.http_port = http
    t.start()
    yield t
    problems = t.stop()
    if problems:
        pytest.fail("\n".join(problems) + "\n" + t.log_tail(), pytrace=False)


def listener_pid(t, direct):
    """The pid of t's listener connection: a client LISTENs to a channel nobody else uses, and
    the backend whose last statement names it (its LISTEN, or the UNLISTEN once the client
    left) is the listener. None while there is none."""
    mark = f"mark{random.getrandbits(48):x}"
    with t.connect() as c:
        c.execute(f"LISTEN {mark}")
    rows = direct.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND query LIKE %s",
                          (TEST_DB, f'%"{mark}"%')).fetchall()
    return rows[0][0] if len(rows) == 1 else None


def new_listener(t, direct, old):
    """Waits for a listener connection other than old (a pid)."""
    pid = [None]

    def found():
        pid[0] = listener_pid(t, direct)
        return pid[0] is not None and pid[0] != old

    wait_until(found, 15 * SLOW, interval=0.2, what="a new listener connection")
    return pid[0]


def admin(t, sql):
    with psycopg.connect(host="127.0.0.1", port=t.port, user="postgres", dbname="tusk", autocommit=True,
                         connect_timeout=int(10 * SLOW)) as c:
        c.execute(sql)


def listeners(t):
    return [r for r in console_show(t, "SHOW LISTENERS") if r["database"] == TEST_DB]


def metric(t, family, **labels):
    return value(scrape(t.http_port), family, **labels)


def send_all(t, direct):
    """SENDERS clients of t notify every channel ROUNDS times each, at once; payload
    's<sender>-<seq>' (seq counts per sender and channel). Returns the most server connections
    seen meanwhile."""
    errors = []

    def sender(k):
        try:
            with t.connect() as c:
                for seq in range(ROUNDS):
                    for ch in range(CHANNELS):
                        if ch % 2:
                            c.execute(f"NOTIFY ch{ch}, 's{k}-{seq}'")
                        else:
                            c.execute("SELECT pg_notify(%s, %s)", (f"ch{ch}", f"s{k}-{seq}"))
        except Exception as e:  # noqa: BLE001 - reported by the test
            errors.append(repr(e))

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(SENDERS)]
    for th in threads:
        th.start()
    peak = 0  # server connections of the test database while they send
    while any(th.is_alive() for th in threads):
        peak = max(peak, servers(direct))
        time.sleep(0.05)
    assert errors == []
    return peak


def check_exact(i, got):
    """Client i got exactly its channel's notifications, each sender's in order."""
    ch = f"ch{i % CHANNELS}"
    assert all(c == ch for c, _ in got), f"client {i} got another channel: {[c for c, _ in got if c != ch][:3]}"
    want = sorted(f"s{k}-{seq}" for k in range(SENDERS) for seq in range(ROUNDS))
    assert sorted(p for _, p in got) == want, f"client {i}: {got}"
    for k in range(SENDERS):
        seqs = [int(p.split("-")[1]) for _, p in got if p.startswith(f"s{k}-")]
        assert seqs == sorted(seqs), f"client {i}, sender {k} out of order: {seqs}"


def test_psycopg_200_clients_20_channels(lt, direct):
    """psycopg 3's documented style: conn.notifies(), one reading thread per connection."""
    want = SENDERS * ROUNDS
    clients = [lt.connect() for _ in range(CLIENTS)]
    got = [[] for _ in range(CLIENTS)]
    try:
        for i, c in enumerate(clients):
            c.execute(f"LISTEN ch{i % CHANNELS}")
        assert servers(direct) <= POOL_SIZE + 1

        # SHOW CLIENTS: each listening client's channel, and the clients are on both workers
        rows = [r for r in console_show(lt, "SHOW CLIENTS") if r["database"] == TEST_DB and r["channels"]]
        assert len(rows) == CLIENTS, len(rows)
        assert sorted(r["channels"] for r in rows) == sorted(f"ch{i % CHANNELS}" for i in range(CLIENTS))
        assert {r["worker"] for r in rows} == {0, 1}, "the listening clients are not spread over both workers"
        # /metrics: the listener's gauges
        fams = scrape(lt.http_port)
        assert value(fams, "tusk_notify_listener_channels", database=TEST_DB) == CHANNELS
        assert value(fams, "tusk_notify_listener_clients", database=TEST_DB) == CLIENTS
        assert value(fams, "tusk_notify_listener_connected", database=TEST_DB) == 1
        relayed0 = value(fams, "tusk_notify_notifications_total", database=TEST_DB)

        def reader(i):
            gen = clients[i].notifies()
            for n in gen:
                got[i].append((n.channel, n.payload))
                if len(got[i]) == want:
                    break
            gen.close()

        readers = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(CLIENTS)]
        for th in readers:
            th.start()
        peak = send_all(lt, direct)
        deadline = time.monotonic() + 30 * SLOW
        for th in readers:
            th.join(max(0.1, deadline - time.monotonic()))
        late = [i for i, th in enumerate(readers) if th.is_alive()]
        assert late == [], f"{len(late)} clients still wait, e.g. {late[0]} has {got[late[0]]}"
        assert peak <= POOL_SIZE + 1, f"{peak} server connections (pool size {POOL_SIZE} + 1 listener)"
        for i, c in enumerate(clients):
            got[i] += [(ch, p) for ch, p, _ in drain(c, timeout=0.01)]  # nothing more
        time.sleep(0.3)
        for i, c in enumerate(clients):
            got[i] += [(ch, p) for ch, p, _ in drain(c, timeout=0.01)]
            check_exact(i, got[i])
        relayed = metric(lt, "tusk_notify_notifications_total", database=TEST_DB)
        assert relayed - relayed0 == SENDERS * ROUNDS * CHANNELS
    finally:
        for c in clients:
            c.close()
    wait_until(lambda: listeners(lt)[0]["clients"] == 0, 10 * SLOW, what="the clients unsubscribed")


def test_node_200_clients_20_channels(lt, direct):
    """node-postgres' style: client.on('notification'), LISTEN by client.query."""
    why = harness.available("node")
    if why:
        pytest.fail(why)
    harness.install_node_modules()
    env = dict(os.environ, PGHOST="127.0.0.1", PGPORT=str(lt.port), PGUSER="tusk_trust", PGDATABASE=TEST_DB,
               CLIENTS=str(CLIENTS), CHANNELS=str(CHANNELS), EXPECT=str(SENDERS * ROUNDS),
               TIMEOUT_MS=str(int(30000 * SLOW)))
    p = subprocess.Popen(["node", str(REPO / "tests" / "drivers" / "node" / "notify_load.js")], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = json.loads(p.stdout.readline() or "{}")
        assert first.get("ready"), (first, p.stderr.read() if p.poll() is not None else "")
        assert servers(direct) <= POOL_SIZE + 1
        assert listeners(lt)[0]["clients"] == CLIENTS
        peak = send_all(lt, direct)
        out, err = p.communicate(timeout=60 * SLOW)
        res = json.loads(out.strip().splitlines()[-1])
        assert "got" in res, (res, err[-2000:])
        assert res["errors"] == [None] * CLIENTS
        for i, got in enumerate(res["got"]):
            check_exact(i, [tuple(x) for x in got])
        assert peak <= POOL_SIZE + 1, f"{peak} server connections"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_listener_killed_mid_stream(lt, direct):
    clients = [lconnect(lt) for _ in range(10)]
    notices = [[] for _ in clients]
    for i, c in enumerate(clients):
        c.add_notice_handler(lambda d, i=i: notices[i].append(d.message_primary))
        c.execute("LISTEN stream")
    reconnects0 = metric(lt, "tusk_notify_listener_reconnects_total", database=TEST_DB)
    stop = threading.Event()
    sent = []
    with psycopg.connect(host="127.0.0.1", port=direct.info.port, user=direct.info.user, dbname=TEST_DB,
                         autocommit=True, application_name="lnt_direct") as snd:
        def sender():
            seq = 0
            while not stop.is_set():
                snd.execute("SELECT pg_notify('stream', %s)", (str(seq),))
                sent.append(seq)
                seq += 1
                time.sleep(0.002)

        th = threading.Thread(target=sender)
        th.start()
        try:
            time.sleep(0.5)
            old = listener_pid(lt, direct)
            assert old is not None
            direct.execute("SELECT pg_terminate_backend(%s)", (old,))
            new_listener(lt, direct, old)
            time.sleep(1.0)
        finally:
            stop.set()
            th.join()
    last = sent[-1]
    for i, c in enumerate(clients):
        got = []
        deadline = time.monotonic() + 10 * SLOW
        while time.monotonic() < deadline and not (got and int(got[-1][1]) == last):
            got += drain(c, timeout=0.2)
        seqs = [int(p) for _, p, _ in got]
        assert seqs == sorted(set(seqs)), f"client {i}: out of order or repeated"
        assert seqs and seqs[-1] == last, f"client {i}: the last notification ({last}) did not arrive: {seqs[-5:]}"
        # after the resume nothing is missing: the tail is contiguous up to the last
        gaps = [b for a, b in zip(seqs, seqs[1:]) if b != a + 1]
        assert len(gaps) <= 1, f"client {i}: gaps at {gaps}"
        assert any("may have been missed" in (n or "") for n in notices[i]), f"client {i}: {notices[i]}"
    assert metric(lt, "tusk_notify_listener_reconnects_total", database=TEST_DB) >= reconnects0 + 1
    for c in clients:
        c.close()


def test_client_that_never_reads_10000(lt, direct):
    n = 10000
    slow = lconnect(lt)
    fast = [lconnect(lt) for _ in range(3)]
    closed0 = metric(lt, "tusk_notify_clients_closed_unread_total")
    try:
        for c in [slow] + fast:
            c.execute("LISTEN flood10k")
        # ~20 MB: more than the slow client's socket buffers and tusk's 1 MB bound
        for lo in range(0, n, 2000):
            direct.execute("SELECT pg_notify('flood10k', i::text || ':' || repeat('x', 2000)) "
                           "FROM generate_series(%s::int, %s::int) i", (lo + 1, lo + 2000))
        for i, c in enumerate(fast):
            got = drain(c, want=n, timeout=60)
            assert len(got) == n, f"fast client {i}: {len(got)} of {n}"
            assert [int(p.split(":")[0]) for _, p, _ in got] == list(range(1, n + 1)), f"fast client {i} order"
        wait_until(lambda: metric(lt, "tusk_notify_clients_closed_unread_total") >= closed0 + 1, 15 * SLOW,
                   what="the slow client closed")
        lt.wait_log("none read for")
        err = None
        try:
            for _ in range(100000):  # its socket: notifications, then the error
                slow.execute("SELECT 1")
        except psycopg.OperationalError as e:
            err = e
        assert err is not None
        if err.sqlstate:
            assert err.sqlstate == "53400", err
        for c in fast:
            c.execute("SELECT 1")
    finally:
        for c in [slow] + fast:
            c.close()


def test_listen_unlisten_churn(lt, direct):
    """100 clients connect, LISTEN to random channels (alone and in transactions), UNLISTEN,
    leave (some still listening), over and over, while notifications flow; at the end the
    listener's channel set is empty. Under ASan, tusk's exit checks for leaks."""
    stop = threading.Event()
    errors = []
    rounds = [0]
    seconds = 10 * min(SLOW, 2)

    def churn(k):
        rnd = random.Random(k)
        while not stop.is_set():
            try:
                with lt.connect() as c:
                    chans = rnd.sample(range(30), rnd.randint(1, 4))
                    for ch in chans:
                        if rnd.random() < 0.2:
                            c.execute("BEGIN")
                            c.execute(f"LISTEN churn{ch}")
                            c.execute("COMMIT" if rnd.random() < 0.7 else "ROLLBACK")
                        else:
                            c.execute(f"LISTEN churn{ch}")
                    c.execute("SELECT 1")
                    r = rnd.random()
                    if r < 0.4:
                        c.execute("UNLISTEN *")
                    elif r < 0.8:
                        for ch in chans:
                            c.execute(f"UNLISTEN churn{ch}")
                    # else: leave listening
                    drain(c, timeout=0.01)
                rounds[0] += 1
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))
                return

    def sender():
        rnd = random.Random(7)
        with psycopg.connect(host="127.0.0.1", port=direct.info.port, user=direct.info.user, dbname=TEST_DB,
                             autocommit=True, application_name="lnt_direct") as s:
            while not stop.is_set():
                s.execute("SELECT pg_notify(%s, 'x')", (f"churn{rnd.randrange(30)}",))
                time.sleep(0.005)

    threads = [threading.Thread(target=churn, args=(k,)) for k in range(100)] + [threading.Thread(target=sender)]
    for th in threads:
        th.start()
    time.sleep(seconds)
    stop.set()
    for th in threads:
        th.join(60 * SLOW)
    assert errors == [], errors[:3]
    assert rounds[0] >= 100, rounds[0]

    def settled():
        r = listeners(lt)[0]
        return r["channels"] == 0 and r["clients"] == 0

    wait_until(settled, 10 * SLOW, what="no channel left")
    assert lt.proc.poll() is None
    assert servers(direct) <= POOL_SIZE + 1
    # the listener itself UNLISTENed them (it is idle on its last UNLISTEN or LISTEN)
    with lt.connect() as c:
        c.execute("SELECT 1")


def test_reload_and_sighup_keep_subscriptions(lt, direct):
    c = lconnect(lt)
    try:
        c.execute("LISTEN rl")
        for how in ("console", "sighup"):
            before = lt.log_text().count("reload")
            if how == "console":
                admin(lt, "RELOAD")
            else:
                os.kill(lt.pid, signal.SIGHUP)
            wait_until(lambda: lt.log_text().count("reload") > before, 10 * SLOW, what="the reload")
            direct.execute("SELECT pg_notify('rl', %s)", (how,))
            assert payloads(drain(c, want=1)) == [("rl", how)], how
            row = [r for r in console_show(lt, "SHOW CLIENTS") if r["channels"] == "rl"]
            assert len(row) == 1
        c.execute("SELECT 1")
    finally:
        c.close()


def test_reconnect_makes_the_listener_again(lt, direct):
    c = lconnect(lt)
    notices = []
    c.add_notice_handler(lambda d: notices.append(d.message_primary))
    try:
        c.execute("LISTEN rc")
        direct.execute("SELECT pg_notify('rc', 'one')")
        assert payloads(drain(c, want=1)) == [("rc", "one")]
        old = listener_pid(lt, direct)
        assert old is not None
        reconnects0 = metric(lt, "tusk_notify_listener_reconnects_total", database=TEST_DB)
        admin(lt, "RECONNECT tusk_bench")  # another database: this listener stays
        time.sleep(0.5)
        assert listener_pid(lt, direct) == old
        admin(lt, "RECONNECT")
        new_listener(lt, direct, old)
        wait_until(lambda: any("may have been missed" in (n or "") for n in notices) or
                   bool(drain(c, timeout=0.1)), 10 * SLOW, what="the notice")
        assert any("may have been missed" in (n or "") for n in notices), notices
        direct.execute("SELECT pg_notify('rc', 'two')")
        assert payloads(drain(c, want=1)) == [("rc", "two")]
        assert metric(lt, "tusk_notify_listener_reconnects_total", database=TEST_DB) == reconnects0 + 1
        lt.wait_log("RECONNECT from the admin console")
    finally:
        c.close()


def test_online_restart_listening_clients(tusk, pg, tmp_path, direct):
    """Online restart hands over the listening sockets, not the clients: a listening client of
    the old process is closed with 57P01 when it drains (idle, outside a transaction), as every
    idle client is; the driver connects again (to the new process, on the same port) and
    LISTENs again; notifications reach it there. docs/operations.md, "Online restart"."""
    sock = tmp_path / "takeover.sock"
    t = tusk(pools=[rule(mode="transaction", size=POOL_SIZE)], takeover_socket=str(sock), shutdown_timeout="20s")
    c = lconnect(t)
    c.execute("LISTEN takeover")
    direct.execute("SELECT pg_notify('takeover', 'old')")
    assert payloads(drain(c, want=1)) == [("takeover", "old")]
    new_log = tmp_path / "new.log"
    logf = open(new_log, "ab")
    new = subprocess.Popen([str(TUSK_BIN), "-c", str(t.cfg_path), "--takeover"], stdin=subprocess.DEVNULL,
                           stdout=logf, stderr=subprocess.STDOUT, cwd=t.dir)
    try:
        wait_until(lambda: "this process serves" in new_log.read_text(errors="replace"), 15 * SLOW,
                   what="new process serving")
        with pytest.raises(psycopg.OperationalError) as e:
            for _ in range(200):
                c.execute("SELECT 1")
                time.sleep(0.05)
        assert e.value.sqlstate in (None, "57P01"), e.value
        assert finished(t, 10 * SLOW) == 0
        c2 = lconnect(t)  # the new process
        c2.execute("LISTEN takeover")
        direct.execute("SELECT pg_notify('takeover', 'new')")
        assert payloads(drain(c2, want=1)) == [("takeover", "new")]
        c2.close()
    finally:
        c.close()
        if new.poll() is None:
            new.send_signal(signal.SIGTERM)
        rc = new.wait(15 * SLOW)
        logf.close()
    assert rc == 0


def test_show_clients_channels_cut_short(lt):
    """100 channels of 60 characters: the column is cut at 1 kB with "...", whole names only."""
    names = [f"c{i:03d}_" + "x" * 55 for i in range(100)]
    with lt.connect() as c:
        for n in names:
            c.execute(f"LISTEN {n}")
        rows = [r for r in console_show(lt, "SHOW CLIENTS") if (r["channels"] or "").startswith("c000_")]
        assert len(rows) == 1, rows
        col = rows[0]["channels"]
        assert len(col) < 1024 and col.endswith(",..."), col
        assert col[:-4].split(",") == names[:len(col[:-4].split(","))]
