"""admin.http: /metrics in the Prometheus text format (parsed strictly here), /health, 404s.

The parser below is deliberately strict: every line must be a HELP or TYPE comment or a sample
`name{labels} value`; names, label names and escapes are validated; every sample belongs to a
family declared by TYPE before it; no series appears twice; histogram buckets are cumulative,
ordered by le, end with +Inf, and +Inf equals _count.
"""

import math
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import psycopg
import pytest

from conftest import BENCH_DB, SLOW, TUSK_BIN, Tusk, free_port
from test_load import pgbench, wait_until_no_backends

pytestmark = pytest.mark.tusk_only

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


class ExpositionError(AssertionError):
    pass


def _parse_value(text, where):
    if text in ("+Inf", "Inf"):
        return math.inf
    if text == "-Inf":
        return -math.inf
    if text == "NaN":
        return math.nan
    if not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", text):
        raise ExpositionError(f"{where}: bad value {text!r}")
    return float(text)


def _parse_labels(s, i, where):
    """s[i] is '{'. Returns (labels, index after '}')."""
    labels = {}
    i += 1
    while True:
        if s[i] == "}":
            return labels, i + 1
        m = LABEL_NAME.match(s, i)
        if not m:
            raise ExpositionError(f"{where}: bad label name at {s[i:]!r}")
        name = m.group(0)
        if name.startswith("__"):
            raise ExpositionError(f"{where}: reserved label name {name}")
        if name in labels:
            raise ExpositionError(f"{where}: label {name} twice")
        i = m.end()
        if s[i:i + 2] != '="':
            raise ExpositionError(f"{where}: expected =\" after {name}")
        i += 2
        value = []
        while True:
            if i >= len(s):
                raise ExpositionError(f"{where}: unterminated label value")
            ch = s[i]
            if ch == "\\":
                nxt = s[i + 1:i + 2]
                if nxt == "\\":
                    value.append("\\")
                elif nxt == '"':
                    value.append('"')
                elif nxt == "n":
                    value.append("\n")
                else:
                    raise ExpositionError(f"{where}: bad escape \\{nxt}")
                i += 2
            elif ch == '"':
                i += 1
                break
            elif ch == "\n":
                raise ExpositionError(f"{where}: raw newline in label value")
            else:
                value.append(ch)
                i += 1
        labels[name] = "".join(value)
        if s[i] == ",":
            i += 1
            if s[i] == "}":  # a trailing comma is allowed by the format
                return labels, i + 1
        elif s[i] != "}":
            raise ExpositionError(f"{where}: expected , or }} at {s[i:]!r}")


def _family_of(name, families):
    """The declared family a sample name belongs to, or None."""
    if name in families and families[name]["type"] != "histogram":
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            if base in families and families[base]["type"] in ("histogram", "summary"):
                return base
    return None


def parse_exposition(text):
    """Strictly parse Prometheus text format 0.0.4. Returns {family: {type, help, samples}},
    samples being [(sample name, labels dict, value)]."""
    if not text.endswith("\n"):
        raise ExpositionError("exposition does not end with a newline")
    families = {}
    seen = set()
    for n, line in enumerate(text[:-1].split("\n"), 1):
        where = f"line {n} {line!r}"
        if line.startswith("#"):
            m = re.fullmatch(r"# (HELP|TYPE) (\S+) (.*)", line)
            if not m:
                raise ExpositionError(f"{where}: a comment that is not HELP or TYPE")
            kind, name, rest = m.groups()
            if not METRIC_NAME.fullmatch(name):
                raise ExpositionError(f"{where}: bad metric name")
            fam = families.setdefault(name, {"type": None, "help": None, "samples": []})
            if kind == "TYPE":
                if rest not in TYPES:
                    raise ExpositionError(f"{where}: unknown type {rest!r}")
                if fam["type"] is not None:
                    raise ExpositionError(f"{where}: second TYPE for {name}")
                if fam["samples"]:
                    raise ExpositionError(f"{where}: TYPE after samples of {name}")
                fam["type"] = rest
            else:
                if fam["help"] is not None:
                    raise ExpositionError(f"{where}: second HELP for {name}")
                if not rest:
                    raise ExpositionError(f"{where}: empty HELP")
                fam["help"] = rest
            continue
        m = METRIC_NAME.match(line)
        if not m:
            raise ExpositionError(f"{where}: not a sample")
        name = m.group(0)
        i = m.end()
        labels = {}
        if i < len(line) and line[i] == "{":
            labels, i = _parse_labels(line, i, where)
        if line[i:i + 1] != " ":
            raise ExpositionError(f"{where}: expected one space before the value")
        parts = line[i + 1:].split(" ")
        if len(parts) not in (1, 2) or (len(parts) == 2 and not re.fullmatch(r"-?\d+", parts[1])):
            raise ExpositionError(f"{where}: expected a value and an optional integer timestamp")
        value = _parse_value(parts[0], where)
        fam = _family_of(name, families)
        if fam is None or families[fam]["type"] is None:
            raise ExpositionError(f"{where}: sample of a family without TYPE")
        key = (name, tuple(sorted(labels.items())))
        if key in seen:
            raise ExpositionError(f"{where}: duplicate series")
        seen.add(key)
        ftype = families[fam]["type"]
        if ftype == "counter" and not name.endswith("_total"):
            raise ExpositionError(f"{where}: counter sample not ending in _total")
        if ftype == "counter" and not value >= 0:
            raise ExpositionError(f"{where}: negative counter")
        if ftype == "histogram" and name.endswith("_bucket") and "le" not in labels:
            raise ExpositionError(f"{where}: bucket without le")
        families[fam]["samples"].append((name, labels, value))
    for name, fam in families.items():
        if fam["type"] is None:
            raise ExpositionError(f"family {name} has HELP but no TYPE")
        if fam["type"] == "histogram":
            _check_histogram(name, fam["samples"])
    return families


def _check_histogram(name, samples):
    groups = {}
    for sname, labels, value in samples:
        rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        g = groups.setdefault(rest, {"buckets": [], "sum": None, "count": None})
        if sname == name + "_bucket":
            g["buckets"].append((_parse_value(labels["le"], f"{name} le"), value))
        elif sname == name + "_sum":
            g["sum"] = value
        elif sname == name + "_count":
            g["count"] = value
    for rest, g in groups.items():
        where = f"histogram {name}{dict(rest)}"
        if g["sum"] is None or g["count"] is None or not g["buckets"]:
            raise ExpositionError(f"{where}: needs buckets, _sum and _count")
        les = [le for le, _ in g["buckets"]]
        if les != sorted(les) or len(set(les)) != len(les):
            raise ExpositionError(f"{where}: buckets not in ascending le order")
        if les[-1] != math.inf:
            raise ExpositionError(f"{where}: last bucket is not +Inf")
        counts = [c for _, c in g["buckets"]]
        if any(b < a for a, b in zip(counts, counts[1:])):
            raise ExpositionError(f"{where}: bucket counts not cumulative: {counts}")
        if counts[-1] != g["count"]:
            raise ExpositionError(f"{where}: +Inf bucket {counts[-1]} != _count {g['count']}")


def value(families, family, sample=None, **labels):
    """Sum of the samples of a family (or of one sample name) whose labels include labels."""
    total = 0.0
    for name, lab, v in families[family]["samples"]:
        if sample is not None and name != sample:
            continue
        if all(lab.get(k) == want for k, want in labels.items()):
            total += v
    return total


def http_get(port, path, timeout=10):
    """(status, content type, body) of GET http://127.0.0.1:port/path."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout * SLOW) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode()


def scrape(port):
    status, ctype, body = http_get(port, "/metrics")
    assert status == 200, body
    assert ctype.startswith("text/plain; version=0.0.4"), ctype
    return parse_exposition(body)


def start_with_http(tusk, **kw):
    port = free_port()
    t = tusk(admin={"http": f"127.0.0.1:{port}"}, **kw)
    t.http_port = port
    return t


# ---- the parser itself must reject what Prometheus would reject ----

@pytest.mark.parametrize("bad", [
    "x 1",                                          # no newline at the end
    "x 1\n",                                        # no TYPE
    "# TYPE x gauge\nx{a=\"b} 1\n",                 # unterminated label value
    "# TYPE x gauge\nx{a=\"\\t\"} 1\n",             # bad escape
    "# TYPE x gauge\nx{1a=\"b\"} 1\n",              # bad label name
    "# TYPE x gauge\nx  1\n",                       # two spaces
    "# TYPE x gauge\nx 1\nx 2\n",                   # duplicate series
    "# TYPE x gauge\n# a free comment\nx 1\n",      # comment that is not HELP/TYPE
    "# TYPE x counter\nx 1\n",                      # counter without _total
    "# TYPE x_total counter\nx_total -1\n",         # negative counter
    "# TYPE x gauge\nx one\n",                      # not a number
    "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
    "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",          # no +Inf
    "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",     # +Inf != count
    "x 1\n# TYPE x gauge\n",                        # TYPE after the sample
])
def test_strict_parser_rejects(bad):
    with pytest.raises(ExpositionError):
        parse_exposition(bad)


def test_strict_parser_accepts_escapes():
    f = parse_exposition('# HELP x h\n# TYPE x gauge\nx{a="q\\"b\\\\s\\nn",b="2"} 1.5e3\n')
    assert f["x"]["samples"] == [("x", {"a": 'q"b\\s\nn', "b": "2"}, 1500.0)]


# ---- tusk ----

def test_metrics_move_during_pgbench(tusk, pg):
    """Scrapes during a pgbench run parse strictly; counters move at least as pgbench says."""
    t = start_with_http(tusk, pools=[{"database": "*", "user": "*", "service": "main", "mode": "transaction",
                                      "size": 4}])
    wait_until_no_backends(pg)
    before = scrape(t.http_port)
    # No pool yet: the families are declared, with no per-pool samples.
    for fam in ("tusk_up", "tusk_build_info", "tusk_clients", "tusk_servers", "tusk_transactions_total",
                "tusk_queries_total", "tusk_received_bytes_total", "tusk_sent_bytes_total",
                "tusk_wait_seconds", "tusk_query_seconds", "tusk_errors_total"):
        assert fam in before, f"{fam} missing"
    assert value(before, "tusk_up") == 1
    # the allocator's counters: what it handed out is part of what it got
    assert before["tusk_heap_bytes"]["type"] == "gauge"
    assert 0 < value(before, "tusk_heap_bytes", kind="used") <= value(before, "tusk_heap_bytes", kind="total")
    assert before["tusk_wait_seconds"]["type"] == "histogram"
    assert before["tusk_transactions_total"]["type"] == "counter"

    scrapes, errors, stop = [], [], threading.Event()

    def scraper():
        while not stop.is_set():
            try:
                scrapes.append(scrape(t.http_port))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))
            time.sleep(0.2)

    th = threading.Thread(target=scraper, daemon=True)
    th.start()
    p = pgbench(t.port, "-S", "-n", "-M", "extended", "-c", "6", "-j", "2", "-T", "3")
    stop.set()
    th.join(30)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert errors == [], errors[:3]
    assert len(scrapes) >= 5, f"only {len(scrapes)} scrapes during a 3 s run"
    m = re.search(r"number of transactions actually processed: (\d+)", out)
    ntx = int(m.group(1))
    assert ntx > 0, out

    # Mid-run, the clients were seen connected and servers in use.
    seen_clients = max(value(s, "tusk_clients", state="active") + value(s, "tusk_clients", state="idle") +
                       value(s, "tusk_clients", state="waiting") for s in scrapes)
    assert seen_clients >= 1
    seen_servers = max(value(s, "tusk_servers", database=BENCH_DB) for s in scrapes)
    assert 1 <= seen_servers <= 4, seen_servers
    # Counters never go backwards between scrapes.
    series = [value(s, "tusk_queries_total", database=BENCH_DB) for s in scrapes]
    assert series == sorted(series), series

    after = scrape(t.http_port)
    lab = {"database": BENCH_DB, "user": "tusk_trust"}
    xacts = value(after, "tusk_transactions_total", **lab)
    assert xacts >= ntx, f"tusk counted {xacts} transactions, pgbench {ntx}"
    assert value(after, "tusk_queries_total", **lab) >= ntx
    # Every -S transaction sends a query and reads a row back.
    assert value(after, "tusk_received_bytes_total", **lab) >= ntx * 20
    assert value(after, "tusk_sent_bytes_total", **lab) >= ntx * 20
    # Transaction pooling: every transaction waited (however briefly) for a server.
    assert value(after, "tusk_wait_seconds", "tusk_wait_seconds_count", **lab) >= ntx
    qcount = value(after, "tusk_query_seconds", "tusk_query_seconds_count", **lab)
    assert qcount >= ntx
    qsum = value(after, "tusk_query_seconds", "tusk_query_seconds_sum", **lab)
    assert 0 < qsum < 3 * 6 * SLOW + 5, qsum  # at most 6 clients busy for the 3 s run
    assert value(after, "tusk_transaction_seconds_total", **lab) > 0
    # Idle now: nothing waits, no client left (pgbench has exited).
    deadline = time.monotonic() + 5 * SLOW
    while time.monotonic() < deadline:
        after = scrape(t.http_port)
        if value(after, "tusk_clients") == 0:
            break
        time.sleep(0.1)
    assert value(after, "tusk_clients") == 0, after["tusk_clients"]["samples"]
    assert value(after, "tusk_pool_waiting_clients", **lab) == 0
    assert value(after, "tusk_servers", state="active", **lab) == 0
    assert value(after, "tusk_servers", state="idle", **lab) >= 1


def test_queries_and_transactions_counted_exactly(tusk):
    """Simple and extended queries, an explicit transaction, a failed one, and a slow query
    landing in its histogram bucket: exact deltas, from one client in session mode."""
    t = start_with_http(tusk)
    lab = {"database": "tusk_test", "user": "tusk_trust"}

    def snap():
        f = scrape(t.http_port)
        return {
            "q": value(f, "tusk_queries_total", **lab),
            "x": value(f, "tusk_transactions_total", **lab),
            "xs": value(f, "tusk_transaction_seconds_total", **lab),
            "le025": value(f, "tusk_query_seconds", "tusk_query_seconds_bucket", le="0.25", **lab),
            "le05": value(f, "tusk_query_seconds", "tusk_query_seconds_bucket", le="0.5", **lab),
            "rx": value(f, "tusk_received_bytes_total", **lab),
            "tx": value(f, "tusk_sent_bytes_total", **lab),
        }

    with t.connect() as c:
        c.execute("select 1")  # the pool exists from here
        b = snap()
        for i in range(10):
            # extended protocol, unnamed statement: Parse/Bind/Describe/Execute/Sync = 1 query
            assert c.execute("select %s::int", (i,), prepare=False).fetchone()[0] == i
        with psycopg.ClientCursor(c) as cur:  # simple protocol: one Query message each
            for _ in range(3):
                cur.execute("select 'simple'")
        with c.transaction():  # BEGIN, 2 queries, COMMIT
            c.execute("select 1")
            c.execute("select 2")
        with pytest.raises(psycopg.errors.UndefinedTable):
            with c.transaction():  # BEGIN, failing query, ROLLBACK
                c.execute("select * from no_such_table_here")
        c.execute("select pg_sleep(0.3)")
        a = snap()
    assert a["q"] - b["q"] == 10 + 3 + 4 + 3 + 1
    assert a["x"] - b["x"] == 10 + 3 + 1 + 1 + 1
    # The slow query is in (0.25, 0.5]; everything else here is far below 0.25 s.
    assert a["le05"] - a["le025"] - (b["le05"] - b["le025"]) == 1
    assert a["xs"] - b["xs"] >= 0.3
    assert a["rx"] > b["rx"] and a["tx"] > b["tx"]


def test_errors_total_counts_sqlstate_class(tusk):
    t = start_with_http(tusk)
    before = scrape(t.http_port)
    with t.connect() as c:
        for _ in range(2):
            with pytest.raises(psycopg.errors.UndefinedTable):
                c.execute("select * from no_such_table_here")
        with pytest.raises(psycopg.errors.SyntaxError):
            c.execute("selec 1")
        with pytest.raises(psycopg.errors.DivisionByZero):
            c.execute("select 1/0")
        assert c.execute("select 1").fetchone()[0] == 1
    after = scrape(t.http_port)
    assert value(after, "tusk_errors_total", **{"class": "42"}) - value(before, "tusk_errors_total", **{"class": "42"}) == 3
    assert value(after, "tusk_errors_total", **{"class": "22"}) - value(before, "tusk_errors_total", **{"class": "22"}) == 1


def test_label_values_are_escaped(tusk):
    """A database name with a quote, a backslash and a newline reaches the labels escaped and
    parses back to itself (the server refuses the database, the pool exists all the same)."""
    t = start_with_http(tusk)
    weird = 'we"ird\\db\nx'
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(host="127.0.0.1", port=t.port, user="tusk_trust", dbname=weird, connect_timeout=10)
    assert "does not exist" in str(e.value)
    f = scrape(t.http_port)
    dbs = {lab.get("database") for _, lab, _ in f["tusk_servers"]["samples"]}
    assert weird in dbs, dbs
    assert value(f, "tusk_errors_total", **{"class": "3D"}) == 1


def test_health_ok_with_postgres_up(tusk):
    t = start_with_http(tusk)
    status, ctype, body = http_get(t.http_port, "/health")
    assert (status, body) == (200, "ok\n")
    assert ctype.startswith("text/plain")


def test_health_503_when_backend_port_is_dead(tusk):
    dead = free_port()
    t = start_with_http(tusk, services={"main": {"hosts": [f"127.0.0.1:{dead}"]}})
    started = time.monotonic()
    status, _, body = http_get(t.http_port, "/health")
    assert status == 503, body
    assert "service main" in body and str(dead) in body, body
    assert time.monotonic() - started < 3 * SLOW
    # A client of the dead backend gets tusk's own 08006, counted in class 08.
    with pytest.raises(psycopg.OperationalError):
        t.connect(connect_timeout=10)
    f = scrape(t.http_port)
    assert value(f, "tusk_errors_total", **{"class": "08"}) >= 1
    assert value(f, "tusk_up") == 1


def test_unknown_paths_and_methods(tusk):
    t = start_with_http(tusk)
    for path in ("/", "/metric", "/metrics/x", "/healthz"):
        status, _, _ = http_get(t.http_port, path)
        assert status == 404, path
    req = urllib.request.Request(f"http://127.0.0.1:{t.http_port}/metrics", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code in (400, 405)


def test_no_http_without_admin_http(tusk):
    """admin.http absent: no listener anywhere but the pooler's own port."""
    t = tusk()
    with t.connect() as c:
        assert c.execute("select 1").fetchone()[0] == 1
    assert "serving /metrics" not in t.log_text()


def test_http_port_in_use_fails_start(tmp_path):
    """tusk refuses to start rather than run without the endpoint it was told to serve."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        t = Tusk(tmp_path / "t", 5432, admin={"http": f"127.0.0.1:{port}"})
        p = subprocess.run([str(TUSK_BIN), "-c", str(t.cfg_path)], capture_output=True, text=True,
                           timeout=30 * SLOW)
        assert p.returncode != 0
        assert "admin.http" in p.stdout + p.stderr, p.stdout + p.stderr
