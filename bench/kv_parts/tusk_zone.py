"""tusk's own kv path, against its plain pool (docs/kv.md, "Speed", fourth step; issue 25).

/usr/bin/python3 bench/kv_parts/tusk_zone.py [BASE] &   (default BASE /tmp/kv-tusk)

Sets up a one-zone Parade (tests/integration/kv_util.py: a PostgreSQL 15, `tusk kv init`, the
catalog, 2 shards), a database `plain` with `plain (k text primary key, v jsonb)` (keys 0..3999)
beside it, and writes BASE/t1/tusk.yaml and BASE/t2/tusk.yaml: one worker, the `kv` database,
the plain pool in transaction mode, listening on 25001 and 25002 (fixed, below the ephemeral range 32768-60999; HTTP on 25011 and 25012). It starts no tusk: run the
binaries to compare yourself (e.g. `tusk -c BASE/t1/tusk.yaml`, or callgrind.sh on t2). Prints
the PostgreSQL port and its data directory; SIGINT or SIGTERM stops PostgreSQL."""
from pathlib import Path
import os
import shutil
import signal
import sys
import time

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
os.environ.setdefault("TUSK_BIN", str(ROOT / "build" / "tusk"))
from kv_util import Parade  # noqa: E402

base = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/kv-tusk")
shutil.rmtree(base / "parade", ignore_errors=True)
(base / "parade").mkdir(parents=True)
p = Parade(base / "parade", ["a"])
p.setup()
z = p.zones[0]
with z.pg.admin("postgres") as c:
    c.execute("create database plain")
with z.pg.admin("plain") as c:
    c.execute("create table plain (k text primary key, v jsonb)")
    c.execute("insert into plain select g::text, '{\"n\": 1}' from generate_series(0, 3999) g")
cfg = z.tusk.cfg_path.read_text()
for n in (1, 2):
    (base / f"t{n}").mkdir(exist_ok=True)
    (base / f"t{n}" / "tusk.yaml").write_text(
        cfg.replace(f"port: {z.tusk.port}", f"port: 2500{n}").replace(f"127.0.0.1:{z.tusk.http_addr[1]}",
                                                                      f"127.0.0.1:2501{n}"))
print("PGPORT", z.pg.port, "DATA", z.pg.data, flush=True)
for sig in (signal.SIGINT, signal.SIGTERM):  # exit through atexit, which stops PostgreSQL
    signal.signal(sig, lambda *_: sys.exit(0))
while True:
    time.sleep(3600)
