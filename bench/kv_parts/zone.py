from pathlib import Path
import os
import sys
import time

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "integration"))
os.environ.setdefault("TUSK_BIN", str(Path(__file__).resolve().parents[2] / "build" / "tusk"))
from kv_util import Parade
base = Path("/tmp/kv-parts/parade"); base.mkdir(parents=True, exist_ok=True)
p = Parade(base, ["a"])
p.setup()
z = p.zones[0]
print("PORT", z.pg.port, flush=True)
with z.pg.admin("kv_shard_0") as c:
    c.execute("create table if not exists public.plain (k text primary key, v jsonb)")
    c.execute("grant all on public.plain to kv_client")
print("shard of k0:", p.shard_of("default","k0"), "k1", p.shard_of("default","k1"), flush=True)
pass
while True: time.sleep(3600)
