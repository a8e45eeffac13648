"""The result cache's L2 on a TLS-only Redis (redis.tls, src/net/tunnel.c, docs/cache.md): a
redis-server started here with --port 0 --tls-port P and certificates made here (tls_util);
hiredis 0.14 has no TLS, so each tusk runs a tunnel thread its workers reach over a private unix
socket. What PostgreSQL ran is counted with pg_stat_statements (test_cache's server)."""

import os
import subprocess
import time

import pytest

from conftest import TUSK_BIN, free_port, port_open, run, wait_until
from test_cache import cache_pool, calls, cpg, reset_stats, rows_of, wire  # noqa: F401 (cpg: fixture)
from test_cache_l2 import REDIS, Redis, l2tables, metric  # noqa: F401 (l2tables: fixture)
from tls_util import Certs

pytestmark = pytest.mark.skipif(not os.path.exists(REDIS), reason="redis-server is not installed")


class TlsRedis(Redis):
    """Plaintext off (--port 0); TLS only, on self.port."""

    def __init__(self, port, certs):
        super().__init__(port)
        self.certs = certs

    def start(self, *extra, auth_clients="no"):
        c = self.certs
        self.proc = subprocess.Popen(
            [REDIS, "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--tls-cert-file", c.server_crt, "--tls-key-file", c.server_key,
             "--tls-ca-cert-file", c.ca, "--tls-auth-clients", auth_clients, *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: port_open(self.port), 10, what="redis-server listening on its TLS port")
        return self

    def cli(self, *args, cert=None):
        c = self.certs
        tls = ["--tls", "--cacert", c.ca]
        if cert:
            tls += ["--cert", cert[0], "--key", cert[1]]
        return run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *tls, *args])


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certs(tmp_path_factory.mktemp("redis-tls"))


@pytest.fixture
def tredis(certs):
    r = TlsRedis(free_port(), certs)
    yield r
    r.kill()


def tls_tusks(tusk, cpg, r, n=2, workers=2, tusk_opts=None, **redis):
    ts = []
    opts = {"host": "127.0.0.1", "port": r.port, "timeout": "1s", "prefix": "t:", "tls": "verify-full",
            "tls_ca_file": r.certs.ca, **redis}
    for _ in range(n):
        http = f"127.0.0.1:{free_port()}"
        kw = dict(tusk_opts or {})
        kw["admin"] = {"http": http, **kw.get("admin", {})}
        t = tusk(pg_server=cpg, pools=[cache_pool("on")], cache_ttl="60s", workers=workers, redis=opts, **kw)
        t.http = http
        ts.append(t)
    return ts


def wait_shared(cpg, readers, q, want, what):
    """readers: (client, tusk) pairs. A read through the first may fill Redis; each other one
    must then be an L2 hit, and PostgreSQL must have run q at most once. Repeated until that
    holds (each worker's connection is made again with backoff after a failure)."""
    def attempt():
        reset_stats(cpg)
        hit = True
        for i, (c, t) in enumerate(readers):
            before = metric(t, "l2_hits")
            assert rows_of(c, q) == want
            if i == 0:
                time.sleep(0.2)  # the fill is fire-and-forget
            else:
                hit = hit and metric(t, "l2_hits") == before + 1
        return hit and calls(cpg, q[:24]) <= 1
    wait_until(attempt, 30, what=what)


def test_check_validates_redis_tls(tmp_path, certs):
    base = "services:\n  db:\n    hosts: ['127.0.0.1:5432']\npools:\n  - {service: db}\n"
    crt, key = certs.client("tusk")
    cases = {
        f"redis:\n  host: 127.0.0.1\n  tls: verify-full\n  tls_ca_file: {certs.ca}\n": None,
        f"redis:\n  host: h\n  tls: on\n  tls_ca_file: {certs.ca}\n  tls_cert_file: {crt}\n  tls_key_file: {key}\n": None,
        "redis:\n  host: h\n  tls: require\n": None,
        "redis:\n  host: h\n  tls: off\n": None,
        "redis:\n  unix: /tmp/r.sock\n  tls: require\n": "not to a unix socket",
        "redis:\n  host: h\n  tls: prefer\n": "redis.tls",
        f"redis:\n  host: h\n  tls_ca_file: {certs.ca}\n": "without tls",
        f"redis:\n  host: h\n  tls: require\n  tls_cert_file: {crt}\n": "go together",
        f"redis:\n  host: h\n  tls: verify-ca\n  tls_ca_file: {tmp_path}/missing.crt\n": "missing.crt",
        f"redis:\n  host: h\n  tls: require\n  tls_cert_file: {key}\n  tls_key_file: {key}\n": "redis:",
    }
    for extra, want in cases.items():
        f = tmp_path / "t.yaml"
        f.write_text(base + extra)
        p = run([str(TUSK_BIN), "-c", str(f), "--check"], check=False)
        if want is None:
            assert p.returncode == 0, (extra, p.stdout, p.stderr)
        else:
            assert p.returncode != 0 and want in p.stdout + p.stderr, (extra, p.stdout, p.stderr)


def test_two_tusks_share_and_invalidate_over_tls(tusk, l2tables, tredis):
    cpg = l2tables
    tredis.start()
    a, b = tls_tusks(tusk, cpg, tredis)
    ca, cb = wire(a), wire(b)
    q = "SELECT id, v FROM l2t WHERE id <= 3 ORDER BY id"
    want = [["1", "v1"], ["2", "v2"], ["3", "v3"]]
    wait_shared(cpg, [(ca, a), (cb, b)], q, want, "a read through A served to B from Redis over TLS")
    reset_stats(cpg)
    hits = metric(b, "l2_hits")
    for _ in range(3):
        assert rows_of(cb, q) == want
    assert calls(cpg, q[:24]) == 0  # all three from Redis
    assert metric(b, "l2_hits") == hits + 3
    assert metric(a, "l2_errors") == 0 and metric(b, "l2_errors") == 0
    # The entries and counters really are in the TLS-only Redis.
    assert tredis.cli("--scan", "--pattern", "t:e1:*").stdout.split()
    # A write through B: A's next read (A filled the entry) sees it, over TLS.
    rows_of(cb, "UPDATE l2t SET v = 'changed' WHERE id = 2")
    want2 = [["1", "v1"], ["2", "changed"], ["3", "v3"]]
    assert rows_of(ca, q) == want2
    assert rows_of(cb, q) == want2
    rows_of(ca, "UPDATE l2t SET v = 'v2' WHERE id = 2")
    assert rows_of(cb, q) == want
    a.wait_log("TLS tunnel to 127.0.0.1:%d on " % tredis.port)


def test_wrong_ca_is_a_counted_miss(tusk, l2tables, tredis, certs, tmp_path):
    """A certificate tusk cannot verify: the handshake fails in the tunnel, hiredis sees the
    connection closed; every read is a miss, counted (SHOW CACHE) and logged, and right."""
    from auth_util import write_auth_file
    from test_console import ADMIN, ADMIN_PW, psql_rows
    cpg = l2tables
    tredis.start()
    auth = write_auth_file(tmp_path / "userlist.txt", {ADMIN: ADMIN_PW})
    (a,) = tls_tusks(tusk, cpg, tredis, n=1, workers=1, tls_ca_file=certs.rogue_ca,
                     tusk_opts={"auth_file": auth, "admin": {"users": [ADMIN]}})
    c = wire(a)
    q = "SELECT v FROM l2t WHERE id = 6"
    wait_until(lambda: "TLS handshake failed" in a.log_text(), 15, what="the failed handshake logged")
    reset_stats(cpg)
    for _ in range(4):
        assert rows_of(c, q) == [["v6"]]
        time.sleep(0.1)
    assert calls(cpg, q[:24]) == 4
    assert metric(a, "l2_errors") >= 1 and metric(a, "l2_hits") == 0
    a.wait_log("certificate verify failed")
    assert not tredis.cli("--scan", "--pattern", "t:*").stdout.split()  # nothing got through
    _, rows = psql_rows(a, "SHOW CACHE")
    got = {(r["name"], r["reason"]): int(r["value"]) for r in rows}
    assert got[("l2_errors", "")] >= 1 and got[("l2_hits", "")] == 0, got


def test_tls_redis_killed_and_restarted(tusk, l2tables, tredis):
    cpg = l2tables
    tredis.start()
    a, b = tls_tusks(tusk, cpg, tredis, workers=1)
    ca, cb = wire(a), wire(b)
    q = "SELECT id, v FROM l2t WHERE id BETWEEN 10 AND 12 ORDER BY id"
    want = [["10", "v10"], ["11", "v11"], ["12", "v12"]]
    wait_shared(cpg, [(ca, a), (cb, b)], q, want, "shared over TLS before the kill")
    errors = metric(a, "l2_errors") + metric(b, "l2_errors")
    tredis.kill()
    reset_stats(cpg)
    for _ in range(3):
        assert rows_of(ca, "SELECT v FROM l2t WHERE id = 13") == [["v13"]]
        assert rows_of(cb, "SELECT v FROM l2t WHERE id = 13") == [["v13"]]
    assert calls(cpg, "SELECT v FROM l2t WHERE id =") == 6  # Redis away: every read runs
    assert metric(a, "l2_errors") + metric(b, "l2_errors") > errors
    tredis.start()
    q2 = "SELECT v FROM l2t WHERE id BETWEEN 14 AND 15 ORDER BY id"
    wait_shared(cpg, [(ca, a), (cb, b)], q2, [["v14"], ["v15"]], "shared over TLS again after the restart")
    # And a write still invalidates across the two. The writer's INCR reaches Redis
    # asynchronously (through the tunnel's thread here): a read through the other tusk within
    # that window may still get the old result (docs/cache.md, "Limits of L2"; seen on a loaded
    # machine). Well inside cache_ttl (60 s), it must see the new one.
    rows_of(ca, "UPDATE l2t SET v = 'r15' WHERE id = 15")
    wait_until(lambda: rows_of(cb, q2) == [["v14"], ["r15"]], 5, what="the write seen through the other tusk")
    rows_of(ca, "UPDATE l2t SET v = 'v15' WHERE id = 15")


def test_client_certificate(tusk, l2tables, tredis, certs):
    """--tls-auth-clients yes: a tusk with tls_cert_file/tls_key_file gets in; one without is
    refused (an L2 error, a miss) and its clients are still answered."""
    cpg = l2tables
    tredis.start(auth_clients="yes")
    crt, key = certs.client("tusk")
    (good,) = tls_tusks(tusk, cpg, tredis, n=1, workers=1, tls_cert_file=crt, tls_key_file=key)
    (bad,) = tls_tusks(tusk, cpg, tredis, n=1, workers=1)
    cg, cb = wire(good), wire(bad)
    q = "SELECT v FROM l2t WHERE id = 8"
    wait_shared(cpg, [(cg, good), (cg, good)], q, [["v8"]], "the tusk with a certificate served from Redis")
    assert metric(good, "l2_hits") >= 1
    reset_stats(cpg)
    for _ in range(3):
        assert rows_of(cb, q) == [["v8"]]
        time.sleep(0.1)
    assert calls(cpg, q[:24]) == 3
    assert metric(bad, "l2_hits") == 0 and metric(bad, "l2_errors") >= 1


def test_large_result_through_the_tunnel(tusk, l2tables, tredis):
    """A result several times the tunnel's 32 kB buffers, both ways (SET in, GET out): it
    crosses whole and byte for byte, under both directions' back-pressure."""
    cpg = l2tables
    tredis.start()
    a, b = tls_tusks(tusk, cpg, tredis)
    ca, cb = wire(a), wire(b)
    q = "SELECT id, repeat(v, 40000) FROM l2t WHERE id <= 4 ORDER BY id"
    want = [[str(i), ("v%d" % i) * 40000] for i in range(1, 5)]  # ~320 kB of rows
    wait_shared(cpg, [(ca, a), (cb, b)], q, want, "a large result served to B from Redis over TLS")
    reset_stats(cpg)
    for c in (ca, cb, ca, cb):
        assert rows_of(c, q) == want
    assert calls(cpg, q[:24]) == 0
    assert metric(a, "l2_errors") == 0 and metric(b, "l2_errors") == 0


def test_silent_server_is_a_handshake_timeout(tusk, l2tables, tmp_path):
    """A port that accepts TCP and never speaks TLS (a stalled or wrong service): the tunnel
    gives up after redis.timeout, which reads to L2 as a failed connect; clients get their rows
    from PostgreSQL, bounded in time."""
    import socket
    cpg = l2tables
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # the kernel completes connects; nobody ever reads or writes
    try:
        port = silent.getsockname()[1]
        http = f"127.0.0.1:{free_port()}"
        t = tusk(pg_server=cpg, pools=[cache_pool("on")], cache_ttl="60s", workers=1, admin={"http": http},
                 redis={"host": "127.0.0.1", "port": port, "timeout": "300ms", "tls": "require"})
        t.http = http
        c = wire(t)
        wait_until(lambda: "TLS handshake timed out" in t.log_text(), 15, what="the handshake timeout logged")
        reset_stats(cpg)
        q = "SELECT v FROM l2t WHERE id = 9"
        for _ in range(3):
            t0 = time.monotonic()
            assert rows_of(c, q) == [["v9"]]
            assert time.monotonic() - t0 < 2.0
        assert calls(cpg, q[:24]) == 3
        assert metric(t, "l2_errors") >= 1 and metric(t, "l2_hits") == 0
    finally:
        silent.close()
