"""src/resolve/ alone (tests/tools/resolve_probe) against the suite's DNS server: A/AAAA, SRV
order, TTL re-resolution and its bounds, TTL 0, a server down at start and later, flapping
answers (a backend leaves only after two answers without it), keeping the last good set.
Resolution is not yet wired into the pools (docs/backends.md), so these drive the module alone."""

import time

import pytest

from conftest import TUSK_BIN, to_yaml
from dns_util import ResolveProbe

PROBE = TUSK_BIN.parent / "resolve_probe"


@pytest.fixture
def probe(dns, tmp_path):
    """probe(service_dict) -> running ResolveProbe on a config with that one service."""
    started = []

    def start(service, name="svc"):
        cfg = {"services": {name: service}, "pools": [{"service": name}]}
        path = tmp_path / f"resolve{len(started)}.yaml"
        path.write_text(to_yaml(cfg))
        p = ResolveProbe(PROBE, path, name, tmp_path / f"resolve{len(started)}.log")
        started.append(p)
        return p

    yield start
    for p in started:
        assert p.close() == 0, "resolve_probe did not exit cleanly"


def backends(update):
    return [tuple(b) for b in update["backends"]]


def test_a_and_aaaa_every_address_is_a_backend(dns, probe):
    dns.set_a("db.test", ["10.0.0.2", "10.0.0.1"], ttl=60)
    dns.set_aaaa("db.test", ["fd00::7"], ttl=60)
    p = probe({"dns": "db.test", "port": 6543, "nameservers": [dns.nameserver]})
    u = p.wait_update(1, 10)
    assert sorted(backends(u)) == [("10.0.0.1", 6543, 1, 0), ("10.0.0.2", 6543, 1, 0), ("fd00::7", 6543, 1, 0)]
    st = p.state()
    assert st["kind"] == "dns" and st["nbackends"] == 3 and st["answered"] and st["error"] == ""
    assert st["ttl_ms"] == 60000


def test_srv_priority_then_weight_each_target_resolved(dns, probe):
    dns.set_srv("_postgresql._tcp.db.test", [(20, 1, 5435, "c.db.test"), (10, 5, 5433, "a.db.test"),
                                             (10, 50, 5434, "b.db.test")], ttl=60)
    dns.set_a("a.db.test", ["10.0.1.1"])
    dns.set_a("b.db.test", ["10.0.1.2", "10.0.1.3"])
    dns.set_aaaa("c.db.test", ["fd00::c"])
    p = probe({"srv": "_postgresql._tcp.db.test", "nameservers": [dns.nameserver]})
    u = p.wait_update(1, 10)
    assert backends(u) == [("10.0.1.2", 5434, 50, 10), ("10.0.1.3", 5434, 50, 10), ("10.0.1.1", 5433, 5, 10),
                           ("fd00::c", 5435, 1, 20)]


def test_static_hosts_resolved_too_with_weights(dns, probe):
    dns.set_a("h1.db.test", ["10.0.2.1"])
    p = probe({"hosts": [{"host": "h1.db.test", "port": 5433, "weight": 3}, "127.0.0.9:5434"],
               "nameservers": [dns.nameserver]})
    u = p.wait_update(1, 10)
    assert backends(u) == [("10.0.2.1", 5433, 3, 0), ("127.0.0.9", 5434, 1, 0)]


def test_ttl_drives_re_resolution_within_bounds(dns, probe):
    # TTL 1 s, floor 300 ms, ceiling 2 s: re-asked about every second, a change seen then.
    dns.set_a("ttl.test", ["10.0.3.1"], ttl=1)
    p = probe({"dns": "ttl.test", "nameservers": [dns.nameserver], "dns_min_ttl": "300ms", "dns_max_ttl": "2s"})
    p.wait_update(1, 10)
    assert p.state()["ttl_ms"] == 1000
    dns.set_a("ttl.test", ["10.0.3.1", "10.0.3.2"], ttl=1)
    t0 = time.monotonic()
    u = p.wait_update(2, 5)
    assert sorted(backends(u)) == [("10.0.3.1", 5432, 1, 0), ("10.0.3.2", 5432, 1, 0)]
    assert time.monotonic() - t0 < 2.5
    # A TTL above the ceiling is cut to it.
    dns.set_a("ttl.test", ["10.0.3.1", "10.0.3.2"], ttl=3600)
    time.sleep(1.5)
    assert p.state()["ttl_ms"] == 2000


def test_ttl_zero_uses_the_floor(dns, probe):
    dns.set_a("zero.test", ["10.0.4.1"], ttl=0)
    p = probe({"dns": "zero.test", "nameservers": [dns.nameserver], "dns_min_ttl": "200ms", "dns_max_ttl": "1m"})
    p.wait_update(1, 10)
    before = dns.queries
    time.sleep(1.2)
    st = p.state()
    assert st["ttl_ms"] == 200
    # About 6 rounds of A + AAAA in 1.2 s at a 200 ms floor; far more would mean TTL 0 = spin.
    asked = dns.queries - before
    assert 6 <= asked <= 20, asked
    assert st["rounds"] >= 4


def test_server_down_at_start_then_answers(dns, probe):
    dns.mode = "silent"
    dns.set_a("late.test", ["10.0.5.1"])
    p = probe({"dns": "late.test", "nameservers": [dns.nameserver], "dns_min_ttl": "1s"})
    time.sleep(4)  # 2 tries x 1 s, then the first retry
    st = p.state()
    assert p.updates() == []
    assert st["failures"] >= 1 and not st["answered"] and st["nbackends"] == 0
    assert "timeout" in st["error"].lower(), st
    dns.mode = "ok"
    u = p.wait_update(1, 10)  # retries back off from 0.5 s: seen within a few seconds
    assert backends(u) == [("10.0.5.1", 5432, 1, 0)]
    assert p.state()["consecutive_failures"] == 0


def test_dns_nxdomain_ttl_bounds_the_retry_of_a_failed_name(dns, probe):
    """dns_nxdomain_ttl (PgBouncer's): how long a failed name (NXDOMAIN) waits at most before it
    is asked again. Without it the retries back off up to dns_max_ttl (here 1 m): after a few
    seconds they are seconds apart; with 400 ms they stay that close."""
    rates = {}
    for cap in ("400ms", None):
        svc = {"dns": f"gone-{cap or 'none'}.test", "nameservers": [dns.nameserver], "dns_min_ttl": "200ms",
               "dns_max_ttl": "1m"}
        if cap:
            svc["dns_nxdomain_ttl"] = cap
        p = probe(svc, name=f"svc{len(rates)}")
        time.sleep(3)  # the backoff grows past 400 ms meanwhile
        before = dns.queries
        time.sleep(3)
        rates[cap] = dns.queries - before
        st = p.state()
        assert st["failures"] >= 1 and st["nbackends"] == 0, st
        p.close()
    # 3 s at <= 400 ms: at least 7 rounds of A and AAAA; without: 2 s then 4 s steps, 2 rounds at most
    assert rates["400ms"] >= 14 and rates[None] <= 4, rates


def test_server_down_later_keeps_last_good_set(dns, probe):
    dns.set_a("keep.test", ["10.0.6.1", "10.0.6.2"], ttl=1)
    p = probe({"dns": "keep.test", "nameservers": [dns.nameserver], "dns_min_ttl": "500ms", "dns_max_ttl": "1s"})
    p.wait_update(1, 10)
    for mode in ("servfail", "silent"):
        dns.mode = mode
        failures = p.state()["failures"]
        wait_s = 2.5 if mode == "servfail" else 4.5
        time.sleep(wait_s)
        st = p.state()
        assert st["failures"] > failures, (mode, st)
        assert st["nbackends"] == 2 and st["error"], st
        dns.mode = "ok"
        time.sleep(2)
    # Never an update to an empty set, and nothing changed: still just the first update.
    assert len(p.updates()) == 1
    # An empty answer (the name now has no address) is a failure too, not "no backends".
    dns.remove("keep.test")
    dns.set_srv("keep.test", [(0, 0, 1, "x.test")])  # the name exists, with no A/AAAA
    failures = p.state()["failures"]
    time.sleep(2.5)
    st = p.state()
    assert st["failures"] > failures and st["nbackends"] == 2, st
    assert len(p.updates()) == 1


def test_flapping_answer_removes_only_after_two_misses(dns, probe):
    dns.set_a("flap.test", ["10.0.7.1", "10.0.7.2"], ttl=3600)
    p = probe({"dns": "flap.test", "nameservers": [dns.nameserver], "dns_min_ttl": "1m", "dns_max_ttl": "1h"})
    p.wait_update(1, 10)
    # One answer without .2: still in the set (no update at all).
    dns.set_a("flap.test", ["10.0.7.1"], ttl=3600)
    rounds = p.state()["rounds"]
    p.refresh()
    wait_rounds(p, rounds + 1)
    assert len(p.updates()) == 1 and p.state()["nbackends"] == 2
    # It comes back: the miss is forgotten; one more miss still keeps it.
    dns.set_a("flap.test", ["10.0.7.1", "10.0.7.2"], ttl=3600)
    p.refresh()
    wait_rounds(p, rounds + 2)
    dns.set_a("flap.test", ["10.0.7.1"], ttl=3600)
    p.refresh()
    wait_rounds(p, rounds + 3)
    assert len(p.updates()) == 1 and p.state()["nbackends"] == 2
    # The second answer in a row without it removes it.
    p.refresh()
    wait_rounds(p, rounds + 4)
    u = p.wait_update(2, 5)
    assert backends(u) == [("10.0.7.1", 5432, 1, 0)]
    # An address change = the new one at once, the old one after two answers.
    dns.set_a("flap.test", ["10.0.7.9"], ttl=3600)
    p.refresh()
    u = p.wait_update(3, 5)
    assert sorted(backends(u)) == [("10.0.7.1", 5432, 1, 0), ("10.0.7.9", 5432, 1, 0)]
    p.refresh()
    u = p.wait_update(4, 5)
    assert backends(u) == [("10.0.7.9", 5432, 1, 0)]


def test_srv_target_that_fails_keeps_its_backends(dns, probe):
    dns.set_srv("_postgresql._tcp.part.test", [(0, 1, 5432, "p1.test"), (0, 1, 5432, "p2.test")], ttl=3600)
    dns.set_a("p1.test", ["10.0.8.1"])
    dns.set_a("p2.test", ["10.0.8.2"])
    p = probe({"srv": "_postgresql._tcp.part.test", "nameservers": [dns.nameserver], "dns_min_ttl": "1m"})
    p.wait_update(1, 10)
    dns.remove("p2.test")  # NXDOMAIN for one target: a failed name, not an answer without it
    for i in range(3):
        rounds = p.state()["rounds"]
        p.refresh()
        wait_rounds(p, rounds + 1)
    st = p.state()
    assert st["nbackends"] == 2 and st["partial"] >= 3 and "p2.test" in st["error"], st
    assert len(p.updates()) == 1


def wait_rounds(p, n, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.state()["rounds"] >= n:
            return
        time.sleep(0.05)
    raise TimeoutError(f"round {n} not reached: {p.state()}")


def test_thousand_srv_records_all_resolved_in_order(dns, probe):
    # Over TCP (the answer does not fit in UDP), then 2,000 address queries, at most 64 in flight.
    n = 1000
    dns.set_srv("_postgresql._tcp.many.test",
                [(i % 3, 1 + i % 7, 5432, f"h{i:04d}.many.test") for i in range(n)], ttl=3600)
    for i in range(n):
        dns.set_a(f"h{i:04d}.many.test", [f"10.9.{i // 256}.{i % 256}"], ttl=3600)
    p = probe({"srv": "_postgresql._tcp.many.test", "nameservers": [dns.nameserver], "dns_min_ttl": "1h",
               "dns_max_ttl": "1h"})
    u = p.wait_update(1, 60)
    got = backends(u)
    assert len(got) == n and len({b[0] for b in got}) == n
    keys = [(b[3], -b[2]) for b in got]
    assert keys == sorted(keys), "not in priority-then-weight order"
    assert dns.tcp_queries >= 1
    st = p.state()
    assert st["error"] == "" and st["partial"] == 0, st
    print(f"1,000 SRV records resolved in {u['t'] * 1000:.0f} ms")


def test_stop_while_queries_are_in_flight(dns, probe):
    # resolve_stop with lookups queued and in flight: c-ares cancels them, nothing is
    # published, nothing leaks (the ASan build's probe exits non-zero on a leak).
    dns.mode = "silent"
    dns.set_srv("_postgresql._tcp.stop.test", [(0, 1, 5432, f"s{i}.test") for i in range(200)])
    p = probe({"srv": "_postgresql._tcp.stop.test", "nameservers": [dns.nameserver]})
    time.sleep(0.3)
    assert dns.queries >= 1 and p.updates() == []
