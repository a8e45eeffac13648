"""Replication of the kv store between three zones, each a PostgreSQL 15 with its own tusk
running the replication links: convergence, ties, clock skew, long transactions, poison rows,
replay from W = 0 and expiry. Each test ends with the zones converged (identical dumps)."""

import json
import random
import re
import threading
import time
import urllib.request
from decimal import Decimal

import pytest

from conftest import SLOW, wait_until
from kv_util import NSHARDS, running_parade, show_kv

pytestmark = pytest.mark.tusk_only


@pytest.fixture(scope="module")
def parade(workdir):
    yield from running_parade(workdir / "kv-three", ["z1", "z2", "z3"])


def wait_value(parade, key, value, ns="default", timeout=20, zones=None):
    for z in zones or parade.zones:
        wait_until(lambda: z.get(key, ns) == value, timeout * SLOW, interval=0.1, what=f"{key} = {value!r} on {z.name}")


def test_links_start_from_the_catalog(parade):
    for z in parade.zones:
        wait_until(lambda: "replication links" in z.tusk.log_text(), 10 * SLOW, what="links started")
        # 2 shards x 2 peers per zone.
        z.tusk.wait_log(f"kv: zone {z.name}, catalog version 1: 4 replication links")


def test_random_concurrent_writes_from_three_zones_converge(parade):
    keys = [f"conv{i}" for i in range(30)]
    errors = []

    def writer(z, seed):
        rnd = random.Random(seed)
        conns = {s: z.db(s) for s in range(NSHARDS)}
        try:
            for i in range(150):
                k = rnd.choice(keys)
                c = conns[parade.shard_of("default", k)]
                op = rnd.random()
                if op < 0.6:
                    c.execute("select kv.put('default', %s, %s::jsonb)", (k, json.dumps({"z": z.name, "i": i})))
                elif op < 0.8:
                    c.execute("select kv.delete('default', %s)", (k,))
                else:
                    c.execute("select kv.patch('default', %s, '{\"n\": 1}')", (k,))
        except Exception as e:  # reported below: a thread's exception is otherwise lost
            errors.append(e)
        finally:
            for c in conns.values():
                c.close()

    ts = [threading.Thread(target=writer, args=(z, n)) for n, z in enumerate(parade.zones)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert not errors
    dump = parade.converge()
    assert {r[1] for r in dump} >= set(keys)
    # Reads agree too, not just the raw rows.
    for k in keys[:10]:
        assert len({json.dumps(z.get(k)) for z in parade.zones}) == 1


def test_keys_and_values_that_need_escaping_replicate_byte_for_byte(parade):
    """A page is JSON text built on the peer and parsed twice here (kv_page_decode, then
    kv.apply_batch's jsonb): keys and values with quotes, backslashes, control characters,
    non-ASCII, numbers past a double's precision, deep nesting and a TTL arrive as written.
    A value nested 10,000 deep (PostgreSQL stores ~15,000 at its default max_stack_depth)
    used to stop its link for good: the page check refused more than 64 levels."""
    z1, z2, z3 = parade.zones
    deep = "x"
    for _ in range(40):
        deep = {"d": [deep]}
    levels = 10000
    deepest = "".join('{"a": ' if i % 2 else "[" for i in range(levels)) + "1" + \
        "".join("}" if i % 2 else "]" for i in reversed(range(levels)))
    with z3.db(parade.shard_of("default", "deepest")) as c:
        c.execute("select kv.put('default', 'deepest', %s::jsonb)", (deepest,))
    cases = {
        'esc"quote\\back\tslash\nline': {"s": 'a"b\\c\u0001\u001f\u007f', "t": "\t\r\n"},
        "ünï-ключ-鍵-🔑": {"ü": "é ∑ 🐘", "k\u2028": ["\u2029"]},
        "nums": {"big": 12345678901234567890123456789, "exp": 1.5e300, "neg": -0.000000000000000000001,
                 "prec": 3.141592653589793238462643383279},
        "deep": deep,
        "scalars": [None, True, False, "", 0, [], {}],
    }
    for i, (k, v) in enumerate(cases.items()):
        if i % 2:
            z1.put(k, v, ttl="1 hour")
        else:
            z2.put(k, v)
    dump = parade.converge()
    assert [r[2] for r in dump if r[1] == "deepest"] == [deepest]
    rows = {r[1]: r for r in dump if r[1] in cases}
    assert sorted(rows) == sorted(cases)
    # Numbers as decimals: jsonb prints 1.5e300 as its 301 digits.
    exact = lambda text: json.loads(text, parse_float=Decimal)  # noqa: E731
    for k, v in cases.items():
        assert exact(rows[k][2]) == exact(json.dumps(v)), k
        for z in parade.zones:
            assert exact(json.dumps(z.get(k))) == exact(json.dumps(v)), (z.name, k)
    assert all((rows[k][5] is not None) == (i % 2 == 1) for i, k in enumerate(cases))


def test_forced_tie_resolves_the_same_way_everywhere(parade):
    """Equal ver_ts from two origins: the pair (ver_ts, origin) decides, so origin 2 wins on
    every zone (the original took the other side's value on each side and diverged)."""
    k = "tie"
    s = parade.shard_of("default", k)
    t = int(time.time() * 1e6) + 1_000_000
    for z in parade.zones[:2]:
        z.sql(s, "select count(*) from kv._upsert(array[row('default', %s, %s::jsonb, %s, %s, null)::kv.row_t], "
                 "false, null)", (k, json.dumps(f"from {z.name}"), t, z.id))
    wait_value(parade, k, "from z2")
    dump = parade.converge()
    assert [r for r in dump if r[1] == k] == [("default", k, '"from z2"', t, 2, None)]


def test_clock_skew_of_ten_seconds_keeps_causal_order(parade):
    """z1 runs 10 s fast, z2 10 s slow. A write on z2 made after it saw z1's write still wins:
    local ver_ts = greatest(clock, stored + 1)."""
    k = "skewed"
    s = parade.shard_of("default", k)
    z1, z2, z3 = parade.zones
    for sh in range(NSHARDS):
        z1.sql(sh, "update kv.identity set clock_offset_us = 10000000")
        z2.sql(sh, "update kv.identity set clock_offset_us = -10000000")
    try:
        v1 = z1.put(k, "fast clock")
        wait_value(parade, k, "fast clock")
        v2 = z2.put(k, "slow clock, later")
        assert v2 == v1 + 1
        wait_value(parade, k, "slow clock, later")
        # And a write from z3 (true clock) after seeing both wins as well.
        wait_until(lambda: z3.sql(s, "select ver_ts from kv.data where key = %s", (k,)) == [(v2,)], 10 * SLOW)
        z3.put(k, "z3 last")
        wait_value(parade, k, "z3 last")
    finally:
        for sh in range(NSHARDS):
            z1.sql(sh, "update kv.identity set clock_offset_us = 0")
            z2.sql(sh, "update kv.identity set clock_offset_us = 0")
    parade.converge()


def test_five_second_transaction_is_not_stranded(parade):
    """The original pulled by timestamp with a 1 s settle time: a transaction longer than that
    committed its rows behind the horizon and they never replicated."""
    z1, z2, z3 = parade.zones
    s = 0
    long_key = parade.key_on(s, "long-txn-")
    with z1.db(s) as c:
        c.autocommit = False
        c.execute("select kv.put('default', %s, '\"written in a long transaction\"')", (long_key,))
        xid = int(c.execute("select pg_current_xact_id()::text").fetchone()[0])
        t0 = time.monotonic()
        # Meanwhile z1 commits other writes, and z2 and z3 keep writing and replicating.
        others = parade.keys_on(s, 3, "during-long-")
        z1.put(others[0], "z1 during")
        z2.put(others[1], "z2 during")
        wait_value(parade, others[1], "z2 during")
        # No link from z1 moved its watermark past the open transaction.
        for z in (z2, z3):
            w = z.sql(s, "select w::text from kv.links where peer = %s", (z1.id,))
            assert w and int(w[0][0]) <= xid, (z.name, w, xid)
        time.sleep(max(0.0, 5.0 - (time.monotonic() - t0)))
        c.commit()
    wait_value(parade, long_key, "written in a long transaction")
    wait_value(parade, others[0], "z1 during")
    parade.converge()


def test_poison_row_is_quarantined_and_the_link_keeps_flowing(parade):
    z1, z2, z3 = parade.zones
    s = 1
    bad = "p" * 2000  # longer than any key the API accepts
    # Written behind the API's back, as a damaged origin might.
    z1.sql(s, "insert into kv.data (ns, key, value, ver_ts, origin) values ('default', %s, '1', 1, %s)",
           (bad, z1.id))
    after = parade.key_on(s, "after-poison-")
    z1.put(after, "still flowing")
    wait_value(parade, after, "still flowing")
    for z in (z2, z3):
        rows = z.sql(s, "select peer, length(key), reason from kv.quarantine where peer = %s", (z1.id,))
        assert rows == [(z1.id, 1024, "kv: key too long (2000 bytes, the limit is 1024)")], rows
        assert z.sql(s, "select count(*) from kv.data where key = %s", (bad,)) == [(0,)]
        assert z.sql(s, "select quarantined from kv.links where peer = %s", (z1.id,)) == [(1,)]
    z1.sql(s, "delete from kv.data where key = %s", (bad,))  # the rest of the module compares dumps
    parade.converge()


def test_a_link_whose_prepared_statement_the_schema_changed_reconnects(parade):
    """A link prepares its statements once per connection. When the schema changes what one of
    them returns (here the type of kv.links.cur_ns, which the link reads at every pass), the
    server refuses the prepared statement ("cached plan must not change result type") at every
    run: the link opens a new connection instead of failing every pass from then on."""
    z1, z2, z3 = parade.zones
    s = 0
    before = parade.key_on(s, "before-retype-")
    z1.put(before, "first")
    wait_value(parade, before, "first")  # every link of shard 0 has run its statements
    z2.sql(s, 'alter table kv.links alter column cur_ns type varchar collate "C"')
    try:
        after = parade.key_on(s, "after-retype-")
        z1.put(after, "still flowing")
        z3.put(after + "-z3", "from z3")
        wait_value(parade, after, "still flowing", zones=[z2])
        wait_value(parade, after + "-z3", "from z3", zones=[z2])
    finally:
        z2.sql(s, 'alter table kv.links alter column cur_ns type text collate "C"')
    again = parade.key_on(s, "after-retype-back-")
    z1.put(again, "and back")
    wait_value(parade, again, "and back", zones=[z2])
    z2.tusk.wait_log("cached plan must not change result type")
    parade.converge()


def test_replay_from_w_zero_changes_nothing(parade):
    z1, z2, z3 = parade.zones
    before = parade.converge()
    applied = z3.sql(0, "select sum(applied) from kv.links")[0][0] + z3.sql(1, "select sum(applied) from kv.links")[0][0]
    for s in range(NSHARDS):
        z3.sql(s, "update kv.links set w = '0', cur_ns = null, cur_key = null")
    # Wait until every link of z3 pulled everything again (W back above 0).
    wait_until(lambda: all(z3.sql(s, "select bool_and(w > '0'::xid8) from kv.links")[0][0] for s in range(NSHARDS)),
               20 * SLOW, what="z3 replayed from W = 0")
    assert z3.dump() == before
    after = z3.sql(0, "select sum(applied) from kv.links")[0][0] + z3.sql(1, "select sum(applied) from kv.links")[0][0]
    assert after == applied, "a replay re-applied rows"
    parade.converge()


def test_idle_links_commit_one_transaction_a_second(parade):
    """With nothing written anywhere, a link's once-a-second bookkeeping (W moved to the
    peer's xmin, caught_up, the peer's acknowledgements) is one local transaction: one xid and
    one commit (a WAL flush) a second per link, not one per statement. The purge (every 10 s
    here) may add one per shard. Counted by the instance's next xid, which reading does not
    consume."""
    parade.converge()

    def next_xid(z):
        return int(z.sql(0, "select pg_snapshot_xmax(pg_current_snapshot())::text")[0][0])

    window = 6.0
    time.sleep(1.5)  # the converge's own reads are not bookkeeping
    before = {z.name: next_xid(z) for z in parade.zones}
    t0 = time.monotonic()
    time.sleep(window)
    for z in parade.zones:
        elapsed = time.monotonic() - t0
        links = sum(z.sql(s, "select count(*) from kv.links")[0][0] for s in range(NSHARDS))
        xids = next_xid(z) - before[z.name]
        rate = (xids - NSHARDS) / links / elapsed
        assert 0 < rate <= 1.4, (z.name, xids, links, elapsed)


def test_expiry_is_hidden_everywhere_and_not_resurrected(parade):
    z1, z2, z3 = parade.zones
    k = "expiring"
    z2.put(k, "old, no ttl", ns="short")
    wait_value(parade, k, "old, no ttl", ns="short")
    z1.put(k, "new, short ttl", ns="short", ttl="2 seconds")
    wait_value(parade, k, "new, short ttl", ns="short")
    time.sleep(2.2)
    for z in parade.zones:
        assert z.get(k, ns="short") is None, z.name
    # A replay brings back nothing: the expired version is newer than the old one everywhere.
    s = parade.shard_of("short", k)
    z2.sql(s, "update kv.links set w = '0', cur_ns = null, cur_key = null")
    wait_until(lambda: z2.sql(s, "select bool_and(w > '0'::xid8) from kv.links")[0][0], 20 * SLOW)
    for z in parade.zones:
        assert z.get(k, ns="short") is None, z.name
    parade.converge()


def test_an_instance_down_delays_only_its_own_links_and_catches_up(parade):
    """Partition and heal, the crude way: z3's PostgreSQL stops. z1 and z2 keep replicating
    between themselves; when z3 is back, its links reconnect and it catches up, both ways."""
    z1, z2, z3 = parade.zones
    z3.pg.stop()
    try:
        z1.put("while-z3-down-1", "from z1")
        z2.put("while-z3-down-2", "from z2")
        wait_value(parade, "while-z3-down-1", "from z1", zones=[z2])
        wait_value(parade, "while-z3-down-2", "from z2", zones=[z1])
        wait_until(lambda: "(instance 1 <- 3)" in z1.tusk.log_text(), 20 * SLOW, what="z1 reports its links to z3")
    finally:
        z3.pg.start()
    z3.put("after-heal", "from z3")
    wait_value(parade, "while-z3-down-1", "from z1", zones=[z3], timeout=30)
    wait_value(parade, "while-z3-down-2", "from z2", zones=[z3], timeout=30)
    wait_value(parade, "after-heal", "from z3", timeout=30)
    parade.converge()


def metrics(zone):
    with urllib.request.urlopen(f"http://127.0.0.1:{zone.http_port}/metrics", timeout=10 * SLOW) as r:
        return r.read().decode()


def test_show_kv_and_metrics_report_every_link(parade):
    z1, z2, z3 = parade.zones
    key = parade.key_on(0, "shown-")
    z1.put(key, "counted")
    wait_value(parade, key, "counted")
    # Caught up: every link of z2 has pulled, with a small lag, and its last pass began with
    # nothing left (lag_rows is counted when a pass begins: the pass that pulled the key began
    # with it, and the next one comes kv.pull_interval, 50 ms, after it).
    wait_until(lambda: all(r["lag_seconds"] is not None and float(r["lag_seconds"]) < 2 * SLOW
                           and r["lag_rows"] == 0 for r in show_kv(z2)), 20 * SLOW,
               what="every link of z2 caught up recently")
    rows = show_kv(z2)
    assert sorted((r["shard"], r["local"], r["peer"]) for r in rows) == sorted(
        (s, z2.id, p.id) for s in range(NSHARDS) for p in (z1, z3))
    for r in rows:
        assert r["connected"] == 1 and r["last_error"] is None and r["lag_rows"] == 0, r
        assert r["passes"] > 0 and r["batch_size"] > 0, r
    by = {(r["shard"], r["peer"]): r for r in rows}
    assert by[(0, z1.id)]["applied"] > 0
    assert by[(1, z1.id)]["quarantined"] == 1  # the poison row of the test above
    assert sum(r["quarantined"] for r in rows) == 1
    text = metrics(z2)
    for s in range(NSHARDS):
        for p in (z1, z3):
            labels = f'{{shard="{s}",local="{z2.id}",peer="{p.id}"}}'
            assert f"tusk_kv_link_connected{labels} 1\n" in text, text
            assert f"tusk_kv_link_failing{labels} 0\n" in text
            q = 1 if (s, p.id) == (1, z1.id) else 0
            assert f"tusk_kv_link_quarantined_rows_total{labels} {q}\n" in text
    applied = re.search(rf'tusk_kv_link_applied_rows_total{{shard="0",local="{z2.id}",peer="{z1.id}"}} (\d+)', text)
    assert applied and int(applied.group(1)) >= by[(0, z1.id)]["applied"] > 0  # read after SHOW KV


def test_show_kv_names_the_error_of_a_link_whose_peer_is_down(parade):
    z1, z2, z3 = parade.zones
    z3.pg.stop()
    try:
        wait_until(lambda: all(r["last_error"] and r["connected"] == 0 for r in show_kv(z1) if r["peer"] == z3.id),
                   30 * SLOW, what="z1's links from z3 to report the error")
        assert all(r["last_error"] is None for r in show_kv(z1) if r["peer"] == z2.id)
        text = metrics(z1)
        assert f'tusk_kv_link_failing{{shard="0",local="{z1.id}",peer="{z3.id}"}} 1\n' in text
    finally:
        z3.pg.start()
    wait_until(lambda: all(r["last_error"] is None for r in show_kv(z1)), 30 * SLOW, what="recovery")


def test_link_counters_reach_the_log_at_stop(parade):
    """Per-link counters live in memory (SHOW KV, /metrics); at stop they are logged too.
    Runs last: it restarts z2's tusk."""
    z1, z2, z3 = parade.zones
    assert z2.stop_tusk() == []
    log = z2.tusk.log_text()
    line = [l for l in log.splitlines() if "kv link kv_shard_1 (instance 2 <- 1) stopped" in l]
    assert len(line) == 1, log[-3000:]
    m = re.search(r"applied (\d+), skipped (\d+), quarantined (\d+), batches (\d+), passes (\d+), "
                  r"lag ([-\d.]+) s / (\d+) rows", line[0])
    applied, skipped, quarantined, batches, passes, lag, lag_rows = m.groups()
    assert int(applied) > 0 and int(skipped) >= 0
    assert int(quarantined) == 1                  # the poison row
    assert int(passes) >= int(batches) > 0
    assert 0 <= float(lag) < 5 * SLOW and int(lag_rows) == 0
    assert len([l for l in log.splitlines() if "kv link" in l and "stopped:" in l]) == 4
    z2.start_tusk()
    z1.put("after-restart", "z2 pulls again")
    wait_value(parade, "after-restart", "z2 pulls again")
