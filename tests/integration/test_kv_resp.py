"""The kv's Redis listener (docs/kv.md, "The Redis protocol"): a listen entry with
`protocol: redis` answers RESP2 clients (python3-redis, redis-cli, a raw socket) with the kv
calls of the kv database: GET/SET (EX, PX, NX, XX)/DEL/EXISTS, MGET/MSET, EXPIRE/PEXPIRE,
TTL/PTTL, INCRBY/DECRBY on the converging counter, SCAN MATCH prefix* COUNT, DBSIZE, PING,
AUTH against tusk's users. Every test fails on a tusk without the listener (nothing listens,
or the config key `protocol` is refused)."""

import json
import socket
import subprocess
import time

import pytest
import redis
import yaml

from auth_util import scram_verifier, write_auth_file
from conftest import SLOW, Tusk, free_port, to_yaml, wait_until
from kv_util import Parade

pytestmark = pytest.mark.tusk_only

PASSWORD = "s3cret-default"
ALICE = "alice-pw"


@pytest.fixture(scope="module")
def zone(workdir):
    p = Parade(workdir / "kv-resp", ["r1"])
    p.setup()
    z = p.zones[0]
    z.tusk = Tusk(z.cfg_dir, z.pg.port, services={"local": {"hosts": [f"127.0.0.1:{z.pg.port}"]}},
                  pools=[
                      # Redis's user "default" (a connection before AUTH) needs its password.
                      {"database": "kv", "user": "default", "service": "local", "client_auth": "password"},
                      {"database": "kv", "user": "alice", "service": "local", "client_auth": "scram-sha-256"},
                      {"database": "kv", "user": "mallory", "service": "local", "blocked": True},
                      {"database": "*", "user": "*", "service": "local", "mode": "transaction"},
                  ],
                  workers=2, kv={"zone": z.name, "service": "local"},
                  auth_file=write_auth_file(z.cfg_dir / "users.txt",
                                            {"default": PASSWORD, "alice": scram_verifier(ALICE)}))
    cfg = yaml.safe_load(z.tusk.cfg_path.read_text())
    z.redis_port = free_port()
    cfg["listen"].append({"host": "127.0.0.1", "port": z.redis_port, "protocol": "redis"})
    z.tusk.cfg_path.write_text(to_yaml(cfg) + "\n")
    try:
        z.tusk.start()

        def routing():  # the redis listener opens just after the first, the router after both
            try:
                client(z).get("warm-up")
                return True
            except (redis.ResponseError, redis.ConnectionError):
                return False
        wait_until(routing, 15 * SLOW, what="kv routing")
        yield z
    finally:
        p.destroy()


def client(zone, password=PASSWORD, **kw):
    return redis.Redis(host="127.0.0.1", port=zone.redis_port, password=password, socket_timeout=30 * SLOW, **kw)


def test_redis_get_set_del_exists_ping_through_the_kv(zone):
    r = client(zone)
    assert r.ping() is True
    assert r.set("user:1", "hello wörld\n\"q\"") is True
    assert r.get("user:1") == "hello wörld\n\"q\"".encode()
    # Stored in the kv as a JSON string, on the key's shard: the SQL side reads the same value.
    assert zone.get("user:1") == "hello wörld\n\"q\""
    # A value written through SQL reads as its JSON text.
    zone.put("doc:1", {"n": 1})
    assert json.loads(r.get("doc:1")) == {"n": 1}
    assert r.get("missing") is None
    assert r.exists("user:1", "doc:1", "missing", "user:1") == 3
    assert r.delete("user:1", "missing", "doc:1") == 2
    assert r.get("user:1") is None and zone.get("doc:1") is None
    assert r.delete("user:1") == 0
    assert r.echo("x y") == b"x y"


def test_redis_auth_against_tusk_users(zone):
    s = redis.Redis(host="127.0.0.1", port=zone.redis_port, socket_timeout=30 * SLOW)
    with pytest.raises(redis.RedisError, match="Authentication required"):  # NOAUTH: "default" is not trusted
        s.get("k")
    with pytest.raises(redis.RedisError, match="WRONGPASS|invalid username"):
        client(zone, password="wrong").ping()
    assert client(zone, username="alice", password=ALICE).ping() is True  # a SCRAM secret
    with pytest.raises(redis.RedisError, match="WRONGPASS|invalid username"):
        client(zone, username="alice", password=PASSWORD).ping()
    with pytest.raises(redis.RedisError, match="WRONGPASS|invalid username"):
        client(zone, username="mallory", password="x").ping()  # blocked rule
    assert client(zone, username="someone", password="anything").ping() is True  # kv's * rule trusts


def test_redis_set_options_and_expiry(zone):
    r = client(zone)
    assert r.set("nx", "1", nx=True) is True
    assert r.set("nx", "2", nx=True) is None  # kv.put_if_absent's KV001
    assert r.get("nx") == b"1"
    assert r.set("xx-missing", "1", xx=True) is None
    assert r.get("xx-missing") is None
    assert r.set("nx", "3", xx=True) is True  # get_meta, then put_if_version
    assert r.get("nx") == b"3"
    assert r.ttl("nx") == -1 and r.ttl("absent") == -2
    assert r.set("ex", "v", ex=100) is True
    assert 95 <= r.ttl("ex") <= 100
    assert r.set("px", "v", px=50000) is True
    assert 40000 <= r.pttl("px") <= 50000
    assert r.expire("nx", 30) is True and 25 <= r.ttl("nx") <= 30
    assert r.pexpire("absent", 1000) is False
    assert r.set("short", "v", px=300) is True
    time.sleep(0.6)
    assert r.get("short") is None  # hidden at once once expired
    assert r.expire("ex", -1) is True and r.get("ex") is None  # Redis: deletes
    with pytest.raises(redis.ResponseError, match="invalid expire time"):
        r.set("bad", "v", ex=0)


def test_redis_mget_mset_counters_scan(zone):
    r = client(zone)
    assert r.mset({f"m:{i}": f"v{i}" for i in range(30)}) is True
    assert r.mget(["m:3", "nope", "m:0", "m:3"]) == [b"v3", None, b"v0", b"v3"]
    assert r.execute_command("MSET", "dup", "a", "dup", "b") is True  # the last one wins
    assert r.get("dup") == b"b"
    assert r.incrby("ctr", 5) == 5
    assert r.decrby("ctr", 7) == -2
    assert r.incr("ctr") == -1
    assert zone.sql(zone.parade.shard_of("default", "ctr"), "select kv.counter('default', 'ctr')") == [(-1,)]
    got = sorted(k.decode() for k in r.scan_iter(match="m:*", count=7))
    assert got == sorted(f"m:{i}" for i in range(30))
    cur, page = r.scan(0, match="m:1*", count=100)
    assert cur == 0 and sorted(page) == sorted([b"m:1"] + [f"m:1{i}".encode() for i in range(10)])
    with pytest.raises(redis.ResponseError, match="prefix"):
        r.scan(0, match="m:*:x")
    assert r.dbsize() >= 30


def recv_until(s, n_lines, timeout=20):
    buf = b""
    s.settimeout(timeout * SLOW)
    while buf.count(b"\r\n") < n_lines:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def test_redis_pipelining_inline_and_protocol_errors(zone):
    with socket.create_connection(("127.0.0.1", zone.redis_port), timeout=10 * SLOW) as s:
        req = f"AUTH {PASSWORD}\r\n".encode()
        req += b"".join(f"*3\r\n$3\r\nSET\r\n$4\r\np:{i:02d}\r\n$1\r\n{i % 10}\r\n".encode() for i in range(50))
        req += b"".join(f"*2\r\n$3\r\nGET\r\n$4\r\np:{i:02d}\r\n".encode() for i in range(50))
        req += b"PING\r\nFLUSHALL\r\n"
        s.sendall(req)  # all at once: the replies come in order
        want = b"+OK\r\n" * 51 + b"".join(f"$1\r\n{i % 10}\r\n".encode() for i in range(50)) + b"+PONG\r\n"
        got = recv_until(s, 51 + 100 + 2)
        assert got.startswith(want), got[:200]
        assert got[len(want):].startswith(b"-ERR unknown command 'FLUSHALL'"), got[len(want):]
    with socket.create_connection(("127.0.0.1", zone.redis_port), timeout=10 * SLOW) as s:
        s.sendall(b"*1\r\n$99999999999\r\n")  # hostile bulk length: an error, then closed
        got = recv_until(s, 1)
        assert got.startswith(b"-ERR Protocol error"), got
        assert s.recv(100) == b""


def test_redis_cli_talks_to_the_kv(zone):
    cli = ["redis-cli", "-h", "127.0.0.1", "-p", str(zone.redis_port), "--no-auth-warning", "-a", PASSWORD]
    p = subprocess.run(cli + ["SET", "cli:k", "from redis-cli"], capture_output=True, text=True, timeout=30 * SLOW)
    assert p.stdout.strip() == "OK", p
    p = subprocess.run(cli + ["GET", "cli:k"], capture_output=True, text=True, timeout=30 * SLOW)
    assert p.stdout.strip() == "from redis-cli", p
    assert zone.get("cli:k") == "from redis-cli"


def test_redis_hostile_values_and_keys_get_errors_not_crashes(zone):
    r = client(zone)
    with pytest.raises(redis.ResponseError, match="22021"):
        r.set("bin", b"\xff\xfe")  # not UTF-8: PostgreSQL's jsonb refuses it
    with pytest.raises(redis.ResponseError, match="NUL"):
        r.set("bin", b"a\x00b")
    with pytest.raises(redis.ResponseError, match="22001"):
        r.set("k" * 1025, "v")  # the kv's key bound
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        r.execute_command("GET")
    with pytest.raises(redis.ResponseError, match="syntax error"):
        r.execute_command("SET", "k", "v", "EX")
    assert r.set("after", "ok") is True and r.get("after") == b"ok"  # the connection goes on
    with socket.create_connection(("127.0.0.1", zone.redis_port), timeout=10 * SLOW) as s:
        s.sendall(b"x" * (70 << 10))  # an inline line past 64 kB, never ended
        got = recv_until(s, 1)
        assert got.startswith(b"-ERR Protocol error: too big inline request"), got
