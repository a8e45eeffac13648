"""A PostgreSQL 15 primary with streaming standbys, for the backend tests (docs/backends.md):
each standby made with `pg_basebackup -R` from the primary, all on free loopback ports, run as
the postgres user like conftest.PgServer (which each node is). Helpers promote a standby,
delay a standby's replay (recovery_min_apply_delay), stop and start nodes, and wait for a
standby to replay a primary's position."""

import shutil
import time

from conftest import IS_ROOT, PG_BIN, PgServer, _atexit_servers, as_postgres, run, wait_until


class Cluster:
    def __init__(self, base, standbys=2):
        self.base = base
        self.primary = PgServer(base / "primary", with_bench=False)
        self.all = [self.primary]  # every node ever made, promoted or not: destroy() takes them all
        _atexit_servers.append(self.primary)
        self.primary.init()
        self._allow_replication(self.primary)
        self.standbys = [self._make_standby(i) for i in range(standbys)]
        self.wait_streaming()

    @property
    def nodes(self):
        return [self.primary, *self.standbys]

    @staticmethod
    def _allow_replication(node):
        hba = node.data / "pg_hba.conf"
        hba.write_text("host replication all 127.0.0.1/32 trust\n" + hba.read_text())
        node.execute("select pg_reload_conf()")

    def _make_standby(self, i):
        s = PgServer(self.base / f"standby{i}", with_bench=False)
        self.all.append(s)
        _atexit_servers.append(s)
        s.base.mkdir(parents=True, exist_ok=True)
        s.sockdir.mkdir(exist_ok=True)
        if IS_ROOT:
            shutil.chown(s.base, "postgres", "postgres")
            shutil.chown(s.sockdir, "postgres", "postgres")
        # -R writes primary_conninfo and standby.signal; -X stream: no WAL gap while copying.
        run(as_postgres([str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.primary.port),
                         "-U", "postgres", "-D", str(s.data), "-R", "-X", "stream", "-c", "fast",
                         "--no-sync"]), timeout=120)
        with open(s.data / "postgresql.conf", "a") as f:
            # The copy carries the primary's settings: the last line of a setting wins.
            f.write(f"\n# standby {i}\nport = {s.port}\nunix_socket_directories = '{s.sockdir}'\n"
                    f"application_name = 'standby{i}'\n")
        s.start()
        return s

    # ---- state ---------------------------------------------------------------------------

    @staticmethod
    def in_recovery(node):
        return node.execute("select pg_is_in_recovery()")[0][0]

    def wait_streaming(self, timeout=30):
        """Every standby streams from the primary."""
        want = len(self.standbys)
        wait_until(lambda: self.primary.execute(
            "select count(*) from pg_stat_replication where state = 'streaming'")[0][0] >= want,
            timeout, what=f"{want} standbys streaming")

    def current_lsn(self, node=None):
        """The end of the WAL inserted so far: covers every commit made before the call.
        Not pg_current_wal_lsn(): that is the position written out, which with asynchronous
        commit (these clusters run synchronous_commit = off) can lag behind the last commit
        record, so a standby would look caught up before it has the commit."""
        return (node or self.primary).execute("select pg_current_wal_insert_lsn()::text")[0][0]

    @staticmethod
    def replayed(node, lsn):
        """Whether node (a standby) has replayed lsn."""
        return node.execute("select pg_last_wal_replay_lsn() >= %s::pg_lsn", [lsn])[0][0]

    def wait_replayed(self, node, lsn=None, timeout=30):
        lsn = lsn or self.current_lsn()
        wait_until(lambda: self.replayed(node, lsn), timeout, what=f"replay of {lsn}")

    # ---- faults --------------------------------------------------------------------------

    @staticmethod
    def delay_replay(node, ms):
        """A standby applies WAL only ms after its commit (0: no delay). It still receives it."""
        node.execute(f"alter system set recovery_min_apply_delay = '{int(ms)}ms'")
        node.execute("select pg_reload_conf()")
        # The reload is a signal: wait until a new session sees the value, then give the
        # startup process (woken by the same signal) a moment to take it too.
        wait_until(lambda: node.execute("select setting::int from pg_settings "
                                        "where name = 'recovery_min_apply_delay'")[0][0] == int(ms),
                   10, what=f"recovery_min_apply_delay {ms}ms")
        time.sleep(0.3)

    def promote(self, node, timeout=30):
        """pg_promote() on a standby; it becomes self.primary (the old one stays in the list of
        nodes the caller handles: stopped, or left as a split-brain on purpose)."""
        assert node.execute("select pg_promote(true, %s)", [int(timeout)])[0][0]
        wait_until(lambda: not self.in_recovery(node), timeout, what="promotion")
        self.standbys.remove(node)
        old, self.primary = self.primary, node
        return old

    def restore(self):
        """Undo what a test may leave behind on a shared cluster: stopped nodes, delayed replay.
        A promotion cannot be undone: such tests use a cluster of their own."""
        for n in self.nodes:
            if not n.running:
                n.start()
        for s in self.standbys:
            if s.execute("select setting::int from pg_settings where name = 'recovery_min_apply_delay'")[0][0]:
                self.delay_replay(s, 0)
        self.wait_streaming()

    def destroy(self):
        for n in self.all:
            n.destroy()


def make_cluster(base, standbys=2):
    t0 = time.monotonic()
    c = Cluster(base, standbys)
    c.setup_seconds = time.monotonic() - t0
    return c
