"""Fixtures for tusk's integration suite: a throwaway PostgreSQL 15 per session, tusk instances
per test, and helpers to connect through them.

Environment:
  TUSK_BIN            the binary under test (default: <repo>/build/tusk)
  TUSK_TEST_DIRECT=1  point clients straight at PostgreSQL, no tusk: checks the harness and the
                      tests themselves; tests of tusk-only behaviour are skipped
  PG_BIN              PostgreSQL 15 binaries (default /usr/lib/postgresql/15/bin)
  TUSK_IT_KEEP=1      keep the temporary directory (data, logs) even when everything passed
"""

import atexit
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import psycopg.waiting
import pytest

# psycopg 3.1 waits on a connection with select(), which fails ("filedescriptor out of range")
# once the test process holds descriptors past 1023, as the 1,000-client tests do; epoll has
# no such limit. waiting.wait is looked up at each call, so this reaches every connection.
psycopg.waiting.wait = psycopg.waiting.wait_epoll

REPO = Path(__file__).resolve().parents[2]
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
TUSK_BIN = Path(os.environ.get("TUSK_BIN") or REPO / "build" / "tusk").resolve()
DIRECT = os.environ.get("TUSK_TEST_DIRECT") == "1"
IS_ROOT = os.geteuid() == 0

TEST_DB = "tusk_test"
BENCH_DB = "tusk_bench"
PASSWORDS = {"pw_clear": "clear-secret", "pw_md5": "md5-secret", "pw_scram": "scram-secret"}

# An id tusk puts in every ErrorResponse it writes itself: "tusk c7f3a91e2: ...".
TUSK_ERROR_RE = re.compile(r"tusk [cs][0-9a-f]{8}")
SANITIZER_RE = re.compile(
    r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|SUMMARY: \w+Sanitizer|WARNING: ThreadSanitizer"
)


def _binary_is_sanitized(path):
    try:
        data = Path(path).read_bytes()
    except OSError:
        return False
    return b"__asan_init" in data or b"__ubsan_handle" in data



SANITIZED = _binary_is_sanitized(TUSK_BIN)
# Sanitized binaries are slower; every deadline scales with this.
SLOW = 3.0 if SANITIZED else 1.0


def pytest_configure(config):
    config.addinivalue_line("markers", "tusk_only: needs tusk itself; skipped with TUSK_TEST_DIRECT=1")
    config.addinivalue_line("markers", "exclusive: runs with no other test beside it (load, memory, timing)")
    if not os.environ.get("PYTEST_XDIST_WORKER") and getattr(config.option, "numprocesses", None):
        config._tusk_lock_dir = tempfile.mkdtemp(prefix="tusk-it-locks-")
        os.environ["TUSK_IT_LOCK_DIR"] = config._tusk_lock_dir


def pytest_collection_modifyitems(config, items):
    if not DIRECT:
        return
    skip = pytest.mark.skip(reason="TUSK_TEST_DIRECT=1: tests tusk-only behaviour")
    for item in items:
        if "tusk_only" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config):
    if DIRECT:
        return "tusk: DIRECT mode, clients talk straight to PostgreSQL"
    return f"tusk: {TUSK_BIN}{' (sanitized)' if SANITIZED else ''}"


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


# Ports for tests come from below the kernel's ephemeral range (32768-60999 here, read from
# /proc when it says otherwise): a port handed out from that range (bind(0), then closed, then
# bound again by the tusk or PostgreSQL it was for) may meanwhile become the local port of any
# outgoing connection on the machine, and tusk makes many. Under pytest-xdist (make test runs the
# suite in parallel processes) each process hands out only its own share, so two processes never
# hand out one port. Each process walks its share in a random order and hands a port out again
# only after the rest of its share: a port a test has just left may still be in TIME_WAIT.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
_WORKER = int((os.environ.get("PYTEST_XDIST_WORKER") or "gw0")[2:])


def _port_range():
    low = 32768
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return 10000, max(12000, min(low, 32768))


_share = [p for p in range(*_port_range()) if p % _WORKERS == _WORKER]
_walk = []


def free_port():
    """A loopback port below the ephemeral range that nobody holds right now (a bind without
    SO_REUSEADDR succeeds, so not even a TIME_WAIT is left on it), in this process's share, not
    handed out again before the rest of the share. Racy by nature against other processes of
    the machine, good enough for tests."""
    for _ in range(2 * len(_share)):
        if not _walk:
            _walk.extend(_share)
            random.shuffle(_walk)
        port = _walk.pop()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free loopback port left below the ephemeral range")


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def as_postgres(cmd):
    """PostgreSQL (and PgBouncer) refuse to run as root."""
    return ["runuser", "-u", "postgres", "--", *cmd] if IS_ROOT else list(cmd)


def run(cmd, timeout=60, check=True, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{cmd} exited {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}")
    return p


def connect(port, user="tusk_trust", dbname=TEST_DB, **kw):
    kw.setdefault("connect_timeout", int(30 * SLOW))
    kw.setdefault("autocommit", True)
    return psycopg.connect(host="127.0.0.1", port=port, user=user, dbname=dbname, **kw)


def console_show(t, sql, user="postgres"):
    """Rows (dicts by column) of an admin console SHOW through t (admin users: [postgres], trust)."""
    with psycopg.connect(host="127.0.0.1", port=t.port, user=user, dbname="tusk", autocommit=True,
                         connect_timeout=int(10 * SLOW)) as c:
        cur = c.execute(sql)
        cols = [d.name for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]


def wait_until(pred, timeout, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout:.1f}s")


class PgServer:
    """A throwaway PostgreSQL 15 cluster in its own directory on a free loopback port."""

    def __init__(self, base, with_bench=True):
        self.with_bench = with_bench
        self.base = Path(base)
        self.data = self.base / "data"
        self.sockdir = self.base / "sock"
        self.log = self.base / "postgres.log"
        self.port = free_port()
        self.running = False

    def _pg(self, tool, *args, timeout=120):
        return run(as_postgres([str(PG_BIN / tool), *args]), timeout=timeout)

    def init(self):
        """A fresh cluster: a copy of the session's template (initdb, roles, databases and,
        with_bench, pgbench's tables, made once), with this server's own port and sockets.
        initdb and the set-up cost about 2 s a server; the copy a tenth of that, and the suite
        makes dozens (kv zones, clusters, private servers) in each of CI's two runs."""
        self.base.mkdir(parents=True, exist_ok=True)
        self.sockdir.mkdir(exist_ok=True)
        if IS_ROOT:
            shutil.chown(self.base, "postgres", "postgres")
            shutil.chown(self.sockdir, "postgres", "postgres")
        template = _template(self.with_bench)
        run(as_postgres(["cp", "-a", str(template), str(self.data)]), timeout=120)
        with open(self.data / "postgresql.conf", "a") as f:
            # The template's own port and sockets come earlier in the file: the last line wins.
            f.write(f"port = {self.port}\nunix_socket_directories = '{self.sockdir}'\n")
        self.start()

    def _init_template(self):
        """initdb and the roles and databases every test expects, then a clean stop."""
        self.base.mkdir(parents=True, exist_ok=True)
        self.sockdir.mkdir(exist_ok=True)
        if IS_ROOT:
            shutil.chown(self.base, "postgres", "postgres")
            shutil.chown(self.sockdir, "postgres", "postgres")
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                 "--locale=C", "-N")
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(
                f"""
# tusk integration tests
listen_addresses = '127.0.0.1'
max_connections = 200
max_prepared_transactions = 10
superuser_reserved_connections = 3
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 64MB
log_min_messages = warning
log_connections = off
port = {self.port}
unix_socket_directories = '{self.sockdir}'
"""
            )
        # pw_* lines come first: pg_hba.conf is first match.
        (self.data / "pg_hba.conf").write_text(
            """local all all trust
host all pw_clear 127.0.0.1/32 password
host all pw_md5 127.0.0.1/32 md5
host all pw_scram 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 trust
"""
        )
        self.start()
        try:
            self.setup_roles_and_db()
        finally:
            self.stop("fast")
        # A copy starts with empty statistics, as a fresh cluster does.
        for f in (self.data / "pg_stat").iterdir():
            f.unlink()

    def start(self):
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                 "-o", f"-p {self.port}", "start")
        self.running = True
        # Remembered so the postmaster can be stopped even if pg_ctl can't (data dir gone).
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self, mode="fast"):
        if not self.running:
            return
        try:
            self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
        except Exception:
            self._kill_postmaster(signal.SIGINT if mode == "fast" else signal.SIGQUIT)
            raise
        finally:
            self.running = False

    def _kill_postmaster(self, sig):
        try:
            os.kill(self.pid, sig)
            for _ in range(100):
                os.kill(self.pid, 0)
                time.sleep(0.1)
            os.kill(self.pid, signal.SIGKILL)
        except (ProcessLookupError, AttributeError):
            pass

    def admin(self, dbname="postgres"):
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=dbname,
                               autocommit=True, connect_timeout=10)

    def execute(self, sql, params=None, dbname="postgres"):
        with self.admin(dbname) as c:
            cur = c.execute(sql, params)
            return cur.fetchall() if cur.description else None

    def setup_roles_and_db(self):
        with self.admin() as c:
            c.execute("create role tusk_trust login")
            c.execute("create role tusk_solo login")
            c.execute("set password_encryption = 'md5'")
            c.execute(f"create role pw_md5 login password '{PASSWORDS['pw_md5']}'")
            c.execute("set password_encryption = 'scram-sha-256'")
            c.execute(f"create role pw_clear login password '{PASSWORDS['pw_clear']}'")
            c.execute(f"create role pw_scram login password '{PASSWORDS['pw_scram']}'")
            c.execute(f"create database {TEST_DB} owner tusk_trust")
            c.execute(f"create database {BENCH_DB} owner tusk_trust")
        with psycopg.connect(host="127.0.0.1", port=self.port, user="tusk_trust", dbname=TEST_DB,
                             autocommit=True) as c:
            c.execute("create table items (id int primary key, name text not null)")
            c.execute("insert into items select g, 'item ' || g from generate_series(1, 1000) g")
            c.execute("create table kv (k text primary key, v text)")
            c.execute("grant select on items to public")
        if not self.with_bench:
            return
        run(as_postgres([str(PG_BIN / "pgbench"), "-i", "-q", "-s", "1", "-h", "127.0.0.1",
                         "-p", str(self.port), "-U", "tusk_trust", BENCH_DB]), timeout=120)

    def backends(self, user=None, dbname=TEST_DB):
        """Client backends connected to dbname (optionally as user), excluding our own."""
        sql = ("select count(*) from pg_stat_activity where backend_type = 'client backend' "
               "and datname = %s and pid <> pg_backend_pid()")
        params = [dbname]
        if user:
            sql += " and usename = %s"
            params.append(user)
        return self.execute(sql, params)[0][0]

    def destroy(self):
        try:
            self.stop("immediate")
        except Exception:
            pass
        shutil.rmtree(self.data, ignore_errors=True)


_atexit_servers = []

# The template data directories of this process, by with_bench; made on first use.
_templates = {}
_templates_dir = None


def _template(with_bench):
    global _templates_dir
    if with_bench not in _templates:
        if _templates_dir is None:
            _templates_dir = Path(tempfile.mkdtemp(prefix="tusk-pg-template-"))
            if IS_ROOT:
                shutil.chown(_templates_dir, "postgres", "postgres")
        t = PgServer(_templates_dir / ("bench" if with_bench else "plain"), with_bench)
        t._init_template()
        _templates[with_bench] = t.data
    return _templates[with_bench]


@atexit.register
def _stop_leftovers():
    for s in _atexit_servers:
        if s.running:
            try:
                s.stop("immediate")
            except Exception:
                pass
    if _templates_dir is not None:
        shutil.rmtree(_templates_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def workdir(request):
    d = Path(tempfile.mkdtemp(prefix="tusk-it-"))
    if IS_ROOT:
        shutil.chown(d, "postgres", "postgres")
    yield d
    if request.session.testsfailed or os.environ.get("TUSK_IT_KEEP") == "1":
        print(f"\nintegration logs kept in {d}")
    else:
        shutil.rmtree(d, ignore_errors=True)


def _make_pg(base, with_bench=True):
    s = PgServer(base, with_bench)
    _atexit_servers.append(s)
    s.init()
    return s


@pytest.fixture(scope="session")
def pg(workdir):
    """The session's PostgreSQL. A test may pg.stop()/pg.start() it; it is restarted if left down."""
    s = _make_pg(workdir / "pg")
    yield s
    s.stop("fast")
    shutil.rmtree(s.data, ignore_errors=True)


# ---- running in parallel ---------------------------------------------------------------------
# make test runs the suite in three processes (pytest-xdist, -n 3 --dist loadfile: TEST_JOBS). A test marked
# `exclusive` (load, memory, timing measured against a deadline) runs alone: it holds a file lock
# exclusively, every other test holds it shared. A turnstile lock in front keeps a waiting
# exclusive test from being starved by the other processes' stream of shared holders.
# The lock files live in a directory the controlling process makes before it starts the
# workers (they inherit TUSK_IT_LOCK_DIR) and removes after them.
_LOCK_DIR = os.environ.get("TUSK_IT_LOCK_DIR") if os.environ.get("PYTEST_XDIST_WORKER") else None


@pytest.fixture(autouse=True)
def _exclusive_or_shared(request):
    if not _LOCK_DIR:
        yield
        return
    import fcntl

    exclusive = request.node.get_closest_marker("exclusive") is not None
    with open(Path(_LOCK_DIR) / "turnstile", "a") as turnstile, open(Path(_LOCK_DIR) / "lock", "a") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        finally:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def pytest_unconfigure(config):
    d = getattr(config, "_tusk_lock_dir", None)
    if d:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(autouse=True)
def _pg_left_running(request):
    yield
    if "pg" in request.fixturenames:
        s = request.getfixturevalue("pg")
        if not s.running:
            s.start()


@pytest.fixture
def private_pg(workdir, request):
    """A PostgreSQL of this test's own, for tests that shut it down under load."""
    s = _make_pg(workdir / f"pg-{request.node.name}"[:100], with_bench=False)
    yield s
    s.destroy()


def _yaml_scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    s = str(v)
    if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_./-]*", s) and s.lower() not in (
            "true", "false", "yes", "no", "on", "off", "null", "y", "n"):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_yaml(obj, indent=0):
    """Block-style YAML for dicts, lists and scalars: what a person would write."""
    pad = "  " * indent
    lines = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{k}:")
                lines.append(to_yaml(v, indent + 1))
            elif isinstance(v, list):
                lines.append(f"{pad}{k}: []")
            else:
                lines.append(f"{pad}{k}: {_yaml_scalar(v)}")
    elif isinstance(obj, list):
        for v in obj:
            if isinstance(v, dict):
                sub = to_yaml(v, indent + 1).split("\n")
                lines.append(f"{pad}- {sub[0].lstrip()}")
                lines.extend(sub[1:])
            else:
                lines.append(f"{pad}- {_yaml_scalar(v)}")
    return "\n".join(lines)


class Tusk:
    """One running tusk (or, with TUSK_TEST_DIRECT=1, a stand-in that points at PostgreSQL)."""

    def __init__(self, dirpath, pg_port, pools=None, services=None, workers=2, log_level="info",
                 listen_opts=None, env=None, **settings):
        self.dir = Path(dirpath)
        self.env = env or {}  # added to tusk's environment (test seams: TUSK_TEST_BALANCE)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.cfg_path = self.dir / "tusk.yaml"
        self.log_path = self.dir / "tusk.log"
        self.proc = None
        services = services or {"main": {"hosts": [f"127.0.0.1:{pg_port}"]}}
        pools = pools or [{"database": "*", "user": "*", "service": "main", "mode": "session", "size": 20}]
        cfg = {
            "listen": [{"host": "127.0.0.1", "port": self.port, **(listen_opts or {})}],
            "workers": workers,
            "log": settings.pop("log", {"level": log_level, "format": "text", "target": "stderr"}),
            "services": services,
            "pools": pools,
        }
        cfg.update(settings)
        self.cfg_path.write_text(to_yaml(cfg) + "\n")
        # tusk opens admin.http after the pooler's listeners: start() waits for both.
        http = (cfg.get("admin") or {}).get("http")
        self.http_addr = http.rsplit(":", 1) if isinstance(http, str) and ":" in http else None
        if DIRECT:
            self.port = pg_port

    def start(self, timeout=None):
        if DIRECT:
            return self
        timeout = timeout or 15 * SLOW
        if not TUSK_BIN.exists():
            pytest.fail(f"tusk binary {TUSK_BIN} does not exist (make build)")
        env = dict(os.environ, **self.env)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:halt_on_error=1:abort_on_error=0")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(TUSK_BIN), "-c", str(self.cfg_path)], stdin=subprocess.DEVNULL,
                                     stdout=self.logf, stderr=subprocess.STDOUT, cwd=self.dir, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"tusk exited with {self.proc.returncode} before listening on {self.port}\n"
                            f"--- config\n{self.cfg_path.read_text()}--- log\n{self.log_tail()}")
            if port_open(self.port) and (not self.http_addr or
                                         port_open(int(self.http_addr[1]), self.http_addr[0].strip("[]"))):
                return self
            time.sleep(0.05)
        pytest.fail(f"tusk did not listen on {self.port} within {timeout}s\n{self.log_tail()}")

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, text, timeout=5):
        """The log once it holds text: tusk's logger thread writes lines after the fact (a
        loaded machine delays it), so a line is waited for before it is asserted on."""
        wait_until(lambda: text in self.log_text(), timeout * SLOW, what=f"{text!r} in tusk's log")
        return self.log_text()

    def log_tail(self, n=60):
        return "\n".join(self.log_text().splitlines()[-n:])

    def status(self, field):
        """A /proc/PID/status field in kB (VmRSS, VmHWM)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def connect(self, user="tusk_trust", dbname=TEST_DB, **kw):
        return connect(self.port, user=user, dbname=dbname, **kw)

    def stop(self):
        """SIGTERM and wait; returns a list of problems (empty when the exit was clean)."""
        problems = []
        if not self.proc:
            return problems
        if self.proc.poll() is not None:
            problems.append(f"tusk died during the test with exit code {self.proc.returncode}")
        else:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=15 * SLOW)
                if rc != 0:
                    problems.append(f"tusk exited with {rc} after SIGTERM (want 0)")
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                problems.append("tusk did not exit within the deadline after SIGTERM; killed")
        self.logf.close()
        if SANITIZER_RE.search(self.log_text()):
            problems.append("sanitizer report in tusk's log")
        self.proc = None
        return problems


@pytest.fixture
def tusk(request, tmp_path_factory, pg):
    """Factory: tusk(pools=..., services=..., pool_wait_timeout='1s', ...) -> running Tusk.
    Teardown stops every instance with SIGTERM and fails the test unless each exited 0 with no
    sanitizer report in its log."""
    started = []

    def start(pg_server=None, **kw):
        server = pg_server or pg
        t = Tusk(tmp_path_factory.mktemp("tusk"), server.port, **kw)
        started.append(t)
        return t.start()

    yield start
    problems = []
    for t in started:
        for p in t.stop():
            problems.append(f"{p}\n--- {t.log_path}\n{t.log_tail()}")
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        for t in started:
            print(f"--- tusk log {t.log_path} (tail)\n{t.log_tail()}")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def assert_tusk_error(msg):
    assert TUSK_ERROR_RE.search(msg), f"error from tusk lacks 'tusk <id>': {msg!r}"


# ---- backends: the DNS server and the replicated cluster (docs/backends.md) ------------------

@pytest.fixture(scope="session")
def dns_server():
    """The session's authoritative DNS server (dns_util.DnsServer); use the `dns` fixture,
    which empties it for each test."""
    from dns_util import DnsServer

    s = DnsServer()
    yield s
    s.close()


@pytest.fixture
def dns(dns_server):
    dns_server.reset()
    yield dns_server
    dns_server.reset()


@pytest.fixture(scope="session")
def pg_cluster_shared(workdir):
    from repl_util import make_cluster

    c = make_cluster(workdir / "cluster")
    yield c
    c.destroy()


@pytest.fixture
def pg_cluster(pg_cluster_shared):
    """The session's primary + two streaming standbys (repl_util.Cluster), restored after each
    test (nodes started, replay delays off). Never promote it: use private_cluster."""
    yield pg_cluster_shared
    pg_cluster_shared.restore()


@pytest.fixture
def private_cluster(workdir, request):
    """A primary + two standbys of this test's own, for promotion and failover."""
    from repl_util import make_cluster

    c = make_cluster(workdir / f"cluster-{request.node.name}"[:100])
    yield c
    c.destroy()
