"""A kv parade for the tests: one throwaway PostgreSQL 15 per zone, each with its tusk, set up
the way an operator would (tusk kv init, fill the catalog, kv_catalog.bump(), tusk kv push)."""

import contextlib
import json
import os
import re
import subprocess
import time

import psycopg

from conftest import PgServer, Tusk, TUSK_BIN, SLOW, _atexit_servers, free_port, run, wait_until

NSHARDS = 2
# kv.router_password: tusk's shard connections log in as kv_router and puts take the fast path
# (docs/kv.md, "Ninth step"). Every zone has it unless built with router_password=None, or
# the binary predates the key (bench/kv_speed.py's before runs).
ROUTER_PASSWORD = "router-pw"
_ROUTER_DEFAULT = ROUTER_PASSWORD if b"router_password" in TUSK_BIN.read_bytes() else None


class Zone:
    def __init__(self, parade, name, inst_id, pg):
        self.parade = parade
        self.name = name
        self.id = inst_id
        self.pg = pg
        self.tusk = None
        self.cfg_dir = parade.base / f"tusk-{name}"
        self.settings = {}  # more of tusk's top-level settings (idle_transaction_timeout)
        self.write_config()

    def write_config(self, **kv_extra):
        self.kv_extra = kv_extra
        kv = {"zone": self.name, "service": "local", "router_password": _ROUTER_DEFAULT}
        kv.update(kv_extra)
        kv = {k: v for k, v in kv.items() if v is not None}
        # Constructing Tusk writes tusk.yaml; it is only started when replication is wanted.
        # The admin console (SHOW KV) and /metrics are open to postgres without a password.
        self.http_port = free_port()
        self.tusk = Tusk(self.cfg_dir, self.pg.port, services={"local": {"hosts": [f"127.0.0.1:{self.pg.port}"]}},
                         pools=[{"database": "*", "user": "*", "service": "local", "mode": "transaction"}],
                         workers=1, kv=kv, admin={"users": ["postgres"], "client_auth": "trust",
                                                  "http": f"127.0.0.1:{self.http_port}"}, **self.settings)

    def kv(self, *args, check=True):
        p = subprocess.run([str(TUSK_BIN), "kv", *args, "-c", str(self.tusk.cfg_path)], capture_output=True,
                           text=True, timeout=120 * SLOW)
        if check and p.returncode != 0:
            raise AssertionError(f"tusk kv {' '.join(args)} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
        return p

    def db(self, shard, user="kv_client"):
        return psycopg.connect(host="127.0.0.1", port=self.pg.port, user=user, dbname=f"kv_shard_{shard}",
                               autocommit=True, connect_timeout=10)

    def sql(self, shard, query, params=None, user="postgres"):
        with self.db(shard, user) as c:
            cur = c.execute(query, params)
            return cur.fetchall() if cur.description else None

    def put(self, key, value, ns="default", ttl=None):
        with self.db(self.parade.shard_of(ns, key)) as c:
            if ttl is None:
                return c.execute("select kv.put(%s, %s, %s::jsonb)", (ns, key, json.dumps(value))).fetchone()[0]
            return c.execute("select kv.put(%s, %s, %s::jsonb, %s::interval)",
                             (ns, key, json.dumps(value), ttl)).fetchone()[0]

    def get(self, key, ns="default"):
        with self.db(self.parade.shard_of(ns, key)) as c:
            return c.execute("select kv.get(%s, %s)", (ns, key)).fetchone()[0]

    def delete(self, key, ns="default"):
        with self.db(self.parade.shard_of(ns, key)) as c:
            return c.execute("select kv.delete(%s, %s)", (ns, key)).fetchone()[0]

    def dump(self):
        """Every row of every shard, versions included: identical dumps = converged zones. (Not
        the rows of version 0: kv.incr's local tombstones, never replicated.)"""
        rows = []
        for s in range(NSHARDS):
            rows += self.sql(s, "select ns, key, value::text, ver_ts, origin, expires_at from kv.data where ver_ts > 0 "
                                "order by ns, key")
        return rows

    def start_tusk(self):
        # Ports picked now, not when the parade was built: a port chosen long before it is
        # bound is more likely to be taken meanwhile by another test on this machine.
        self.write_config(**self.kv_extra)
        self.tusk.start()
        return self

    def stop_tusk(self):
        """SIGTERM; the problems (unclean exit, sanitizer report in the log), if any."""
        if not self.tusk or not self.tusk.proc:
            return []
        return [f"{self.name}: {p}" for p in self.tusk.stop()]


class Parade:
    def __init__(self, base, zones):
        self.base = base
        self.zones = []
        self._shards = {}
        for i, name in enumerate(zones, start=1):
            pg = PgServer(base / f"pg-{name}", with_bench=False)
            _atexit_servers.append(pg)
            pg.init()
            self.zones.append(Zone(self, name, i, pg))

    def add_zone(self, name):
        """One more zone, its PostgreSQL initialised with kv init (roles and an empty catalog
        database): not in the catalog yet, its tusk not started."""
        pg = PgServer(self.base / f"pg-{name}", with_bench=False)
        _atexit_servers.append(pg)
        pg.init()
        z = Zone(self, name, len(self.zones) + 1, pg)
        self.zones.append(z)
        out = z.kv("init").stdout
        assert "is ready and empty" in out, out
        return z

    def shard_of(self, ns, key):
        return self.shards_of(ns, [key])[0]

    def keys_on(self, shard, n, prefix, ns="default"):
        """The first n keys prefix0, prefix1, ... of namespace ns that live on shard (asked of
        tusk 4n names at a time)."""
        out, i = [], 0
        while len(out) < n:
            names = [f"{prefix}{j}" for j in range(i, i + 4 * n)]
            out += [k for k, s in zip(names, self.shards_of(ns, names)) if s == shard]
            i += 4 * n
        return out[:n]

    def key_on(self, shard, prefix, ns="default"):
        """The first key prefix0, prefix1, ... of namespace ns that lives on shard."""
        return self.keys_on(shard, 1, prefix, ns)[0]

    def shards_of(self, ns, keys):
        """The shards of keys by tusk's own hash (`tusk kv shard`, one run for those not known
        yet: a sanitized binary takes a tenth of a second to start)."""
        new = list(dict.fromkeys(k for k in keys if (ns, k) not in self._shards))
        if new:
            lines = run([str(TUSK_BIN), "kv", "shard", str(NSHARDS), ns, *new]).stdout.splitlines()
            assert len(lines) == len(new), lines
            for k, line in zip(new, lines):
                self._shards[(ns, k)] = int(line.split()[0])
        return [self._shards[(ns, k)] for k in keys]

    def setup(self, namespaces=(("default", None), ("short", "short"))):
        for z in self.zones:
            out = z.kv("init").stdout
            assert "is ready and empty" in out, out
        first = self.zones[0]
        with first.pg.admin("kv_catalog") as c:
            for z in self.zones:
                c.execute("insert into kv_catalog.zones values (%s)", (z.name,))
                c.execute("insert into kv_catalog.instances values (%s, %s, '127.0.0.1', %s)",
                          (z.id, z.name, z.pg.port))
            c.execute("insert into kv_catalog.expiry_policies values ('short', '1 hour', '1 day')")
            for ns, pol in namespaces:
                c.execute("insert into kv_catalog.namespaces values (%s, %s)", (ns, pol))
            c.execute("update kv_catalog.meta set nshards = %s", (NSHARDS,))
            assert c.execute("select kv_catalog.bump()").fetchone()[0] == 1
        out = first.kv("push").stdout
        assert out.count("version 1 applied") == len(self.zones), out
        for z in self.zones:
            out = z.kv("init").stdout
            assert f"instance {z.id} (zone {z.name}" in out and f"{NSHARDS} shard databases ready" in out, out

    def start(self):
        for z in self.zones:
            z.start_tusk()

    def stop(self):
        problems = []
        for z in self.zones:
            problems += z.stop_tusk()
        return problems

    def destroy(self):
        """Stops everything; raises if a tusk did not exit cleanly."""
        problems = self.stop()
        for z in self.zones:
            z.pg.destroy()
        assert not problems, problems

    def converge(self, timeout=30):
        """Wait until every zone holds the same rows, versions included; returns the dump."""
        last = None

        def same():
            nonlocal last
            dumps = [z.dump() for z in self.zones]
            last = dumps
            return all(d == dumps[0] for d in dumps)

        try:
            wait_until(same, timeout * SLOW, interval=0.2, what="convergence")
        except TimeoutError:
            diffs = [sorted(set(map(tuple, d)) ^ set(map(tuple, last[0])))[:5] for d in last[1:]]
            raise AssertionError(f"zones did not converge: first differences {diffs}") from None
        return last[0]


def show_kv(zone):
    """SHOW KV on zone's tusk (its admin console): a dict per replication link."""
    with psycopg.connect(host="127.0.0.1", port=zone.tusk.port, user="postgres", dbname="tusk",
                         autocommit=True, connect_timeout=10) as c:
        cur = c.execute("SHOW KV")
        cols = [d.name for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]


def running_parade(base, zones, config=None):
    """A module fixture's body: the parade set up and its tusks started, destroyed after.
    config(zone), if given: the kv settings that zone's tusk starts with (write_config's)."""
    p = Parade(base, zones)
    try:
        p.setup()
        for z in p.zones if config else ():
            z.write_config(**config(z))
        p.start()
        yield p
    finally:
        p.destroy()


@contextlib.contextmanager
def shard_statements(zone, r):
    """Yields a list that, after the block, holds (statement, its key: $2) of every statement
    tusk ran on the shards meanwhile, from PostgreSQL's log (log_statement = all for the
    block). r: anything with get(key) that reads through tusk (a redis client, KvDb). A
    backend takes a reloaded setting only at its next command: before the block, a get of a
    marker key of each shard is repeated until PostgreSQL logs it (looked for only past the
    log's end at entry: an earlier block logged the same markers)."""
    calls = []
    start = zone.pg.log.stat().st_size
    with zone.pg.admin() as c:
        c.execute("alter system set log_statement = 'all'")
        c.execute("select pg_reload_conf()")
    try:
        names = [f"marker:{i}" for i in range(64)]
        markers = dict(zip(zone.parade.shards_of("default", names), names))
        assert len(markers) == NSHARDS, markers

        def logged():
            for m in markers.values():
                r.get(m)
            text = zone.pg.log.read_bytes()[start:].decode(errors="replace")
            return all(f"$2 = '{m}'" in text for m in markers.values())

        wait_until(logged, 20 * SLOW, what="log_statement = all in tusk's shard connections")
        since = zone.pg.log.stat().st_size
        yield calls
        time.sleep(0.2)  # PostgreSQL writes the log through its collector or stderr: not at once
        text = zone.pg.log.read_bytes()[since:].decode(errors="replace")
        name = None
        for line in text.splitlines():
            m = re.search(r"LOG:  execute (\S+): (.*)$", line)
            if m:
                name = m.group(2)
                continue
            m = re.search(r"DETAIL:  parameters: \$1 = '[^']*', \$2 = '([^']*)'", line)
            if m and name:
                calls.append((name, m.group(1)))
            name = None
    finally:
        with zone.pg.admin() as c:
            c.execute("alter system reset log_statement")
            c.execute("select pg_reload_conf()")


@contextlib.contextmanager
def environ(env):
    """os.environ with env set for the block (a tusk started in it takes them), then as before."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v
