"""Real drivers through tusk in transaction mode, the way applications use them (issue 27):
node-postgres from npm at pinned versions (pg, pg-pool, pg-cursor, pg-query-stream), pgjdbc
(Debian's libpostgresql-jdbc-java), asyncpg (Debian's python3-asyncpg) and psycopg 3 beyond
plain queries (pipeline mode, server-side cursors, COPY, two-phase commit; Debian's
python3-psycopg).

Each suite (tests/drivers/) runs once against PostgreSQL direct and once through one tusk of
this module (transaction pooling, 3 servers, fewer than the drivers' pools and threads; database
tusk_test_one is served by a pool of one server, so what a client leaves on its server the next
one meets). Every case checks every result it gets; the test of a case then compares tusk's
answer with PostgreSQL's (harness.judge: equal, or, where the driver was told nothing that stopped
being true, the right answer). A watchdog in each suite fails a case whose connection made no
progress for 10 s and says which connection and what it was doing.
What cannot pass through a transaction pooler by design is not tested here: docs/pooling.md,
"What cannot work through a transaction pooler, by design".

Each suite runs through tusk twice: with the pools' active_limit off (the default) and adaptive
(active_limit_min 1, so the bound can hold fewer servers in use than the drivers' connections
and a server whose client idles in a transaction rests): what the bound and its resting do to
a session must not show to a driver. And a third time through session pools, with every client
moving to the other worker, its server with it, at every transaction boundary
(TUSK_TEST_BALANCE=pingpong, docs/ARCHITECTURE.md "Workers"): a session pool hides nothing of
PostgreSQL's, so there every case must answer as direct does, the pool-of-one database included
(the suites' one_db cases then run on the main database: a session pool of one server would make
their second connection wait for the first to close). And a fourth time through transaction
pools with the result cache on (`cache: on`, docs/cache.md): every read a driver makes may be
coalesced, kept and served again, and every answer must still be PostgreSQL's; and a fifth time
through session pools with the cache on, clients moving as above (the cache's session-pooling
path, docs/cache.md "Session pooling"). PostgreSQL direct runs once.

Through the adaptive and the session tusks every connection of every suite is TLS (the drivers'
own TLS, the server's certificate checked; their listener refuses anything else): the relay's
TLS reads and writes under each driver's pipelining, and a TLS client moving between workers
with its session; the other three tusks keep the plain relay.

And a sixth time through read-write-split pools over the shared primary and two standbys
(`pg_cluster_shared`), whose commits of the suites' role wait until both standbys applied them
(remote_apply): every read a driver makes may run on a standby, and every answer must still be
PostgreSQL's.

The cache tusk also churns: its servers live 150 ms (server_lifetime; closed when next idle),
every idle server is checked before it is handed out (server_check_delay 0: a query of tusk's
own between two clients' transactions), idle ones close after 100 ms, and the configuration
is reloaded (SIGHUP) every 250 ms while the suites run; none of it may show to a driver (a
statement prepared again on a new server, a cached result across a reload)."""

import signal
import sys
import threading

import pytest

from conftest import DIRECT, REPO, TEST_DB, Tusk
from tls_util import Certs
from txn_util import txn_pool

sys.path.insert(0, str(REPO / "tests" / "drivers"))
import harness  # noqa: E402

USER = "tusk_trust"
ONE_DB = "tusk_test_one"
SIZE = 3
# The tusks whose listener requires TLS, so every connection of every suite is TLS (module doc).
TLS_ALL = ("adaptive", "session")


@pytest.fixture(scope="module", params=["off", "adaptive", "session", "cache", "session-cache", "split"])
def drivers_tusk(request, pg, tmp_path_factory):
    """One tusk per active_limit: transaction pooling of SIZE servers, TLS allowed on its listener
    (required on two: TLS_ALL); or session pooling with clients moving between workers at every
    boundary; or transaction pooling with the result cache on and its servers churning; or both,
    session pooling and the cache."""
    certs = Certs(tmp_path_factory.mktemp("drivers-certs"))
    env, churn, services, cluster = {}, {}, None, None
    if request.param in ("session", "session-cache"):
        pools = [txn_pool(40, mode="session", **({"cache": "on"} if request.param == "session-cache" else {}))]
        env = {"TUSK_TEST_BALANCE": "pingpong"}
    elif request.param == "cache":
        pools = [txn_pool(1, database=ONE_DB, server_database=TEST_DB, cache="on"), txn_pool(SIZE, cache="on")]
        churn = {"server_lifetime": "150ms", "server_check_delay": "0", "server_idle_timeout": "100ms"}
    elif request.param == "split":
        cluster = request.getfixturevalue("pg_cluster_shared")
        services = {"main": {"hosts": [f"127.0.0.1:{n.port}" for n in cluster.nodes]}}
        split = {"target_session_attrs": "read-write-split"}
        pools = [txn_pool(1, database=ONE_DB, server_database=TEST_DB, **split), txn_pool(SIZE, **split)]
        remote_apply(cluster, True)
    else:
        bound = {} if request.param == "off" else {"active_limit": "adaptive", "active_limit_min": 1}
        pools = [txn_pool(1, database=ONE_DB, server_database=TEST_DB, **bound), txn_pool(SIZE, **bound)]
    t = Tusk(tmp_path_factory.mktemp("drivers-tusk"), pg.port, pools=pools, env=env, services=services,
             listen_opts={"tls": "require" if request.param in TLS_ALL else "allow",
                          "tls_cert_file": certs.server_crt, "tls_key_file": certs.server_key},
             pool_wait_timeout="30s", **churn)
    t.start()
    stop, sent = threading.Event(), []
    if churn:
        def reload_often():
            while not stop.wait(0.25):
                t.proc.send_signal(signal.SIGHUP)
                sent.append(1)
        threading.Thread(target=reload_often, daemon=True).start()
    t.certs = certs
    # where the suites look for a query they wait to see run (harness.environment)
    t.watch_ports = [n.port for n in cluster.nodes] if cluster else None
    t.tag = {"off": "t", "adaptive": "a", "session": "s", "cache": "c", "session-cache": "sc", "split": "x"}[request.param]
    t.session = request.param.startswith("session")
    t.tls_all = request.param in TLS_ALL
    yield t
    stop.set()
    problems = t.stop()
    if cluster:
        remote_apply(cluster, False)
    assert not problems, "\n".join(problems) + "\n" + t.log_tail()
    if churn:
        # The churn happened: reloads taken (two signals during one reload make one), servers
        # replaced for age (a whole run has ~60-80 of each; a -k run may end before one ages).
        log = t.log_text()
        assert log.count("reloading ") >= len(sent) // 2, (len(sent), t.log_tail())
        assert len(sent) < 20 or log.count("server_lifetime reached") >= 1, t.log_tail()


def remote_apply(cluster, on):
    """The split tusk's cluster acknowledges a commit of the suites' role only once both
    standbys applied it: another connection's table, type or row is then on the standby a read
    goes to, and any difference from PostgreSQL direct is the split's own (its read-your-writes
    covers only a client's own writes). Other tests on the shared cluster see no change."""
    p = cluster.primary
    if on:
        p.execute("alter system set synchronous_standby_names = 'ANY 2 (*)'")
        p.execute(f"alter role {USER} set synchronous_commit = 'remote_apply'")
    else:
        p.execute(f"alter role {USER} reset synchronous_commit")
        p.execute("alter system reset synchronous_standby_names")
    p.execute("select pg_reload_conf()")


# PostgreSQL direct's answers, per suite: the same for every tusk, so run once.
DIRECT_CACHE = {}


class Results:
    """Each suite's answers, per target, computed once per tusk (direct once for the module,
    on the pg fixture: the split tusk's cluster runs the same PostgreSQL, set up alike)."""

    def __init__(self, pg, tusk):
        self.pg, self.tusk, self.cache = pg, tusk, {}

    def get(self, suite, target):
        key = (suite, target)
        cache = DIRECT_CACHE if target == "direct" else self.cache
        if key not in cache:
            why = harness.available(suite)
            if why:
                pytest.fail(why)
            if suite == "node":
                harness.install_node_modules()
            if target == "direct":
                cache[key] = harness.run_reference(suite, "127.0.0.1", self.pg.port, TEST_DB, USER, tag=f"{suite}_d")
            else:
                # TUSK_TEST_DIRECT=1: the stand-in is PostgreSQL, which has neither.
                cache[key] = harness.run_suite(suite, "127.0.0.1", self.tusk.port, TEST_DB, USER,
                                                    tag=f"{suite}_{self.tusk.tag}",
                                                    one_db=None if DIRECT or self.tusk.session else ONE_DB,
                                                    tls_port=None if DIRECT else self.tusk.port,
                                                    tls_ca=self.tusk.certs.ca,
                                                    tls_all=self.tusk.tls_all and not DIRECT,
                                                    watch_ports=None if DIRECT else self.tusk.watch_ports)
        return cache[key]


@pytest.fixture(scope="module")
def results(pg, drivers_tusk):
    return Results(pg, drivers_tusk)


def check_case(results, suite, case):
    direct = results.get(suite, "direct")[case]
    problem = harness.direct_problem(suite, case, direct)
    assert problem is None, problem
    through = results.get(suite, "tusk")[case]
    why = harness.judge(suite, case, direct, through)
    assert why is None, f"{suite}/{case} through tusk differs from PostgreSQL direct:\n  {why}"


@pytest.mark.parametrize("case", harness.CASES["node"])
@pytest.mark.timeout(600)  # the first case of a suite runs it on both targets
def test_node_postgres(results, case):
    check_case(results, "node", case)


@pytest.mark.parametrize("case", harness.CASES["jdbc"])
@pytest.mark.timeout(600)  # the first case of a suite runs it on both targets
def test_pgjdbc(results, case):
    check_case(results, "jdbc", case)


# Issue 27 item 8, not fixed: pg_prepared_statements on a pooled server lists every client's
# statements (docs/pooling.md, "pg_prepared_statements"). Strict: a fix makes this case fail
# until the mark is removed.
KNOWN_DIFFERENT = {
    "prepared_statements_view": "pg_prepared_statements shows the server's statements, not the client's "
                                "(docs/pooling.md)",
}


@pytest.mark.parametrize("case", harness.CASES["asyncpg"])
@pytest.mark.timeout(600)  # the first case of a suite runs it on both targets
def test_asyncpg(results, case):
    if case in KNOWN_DIFFERENT and not results.tusk.session:
        # Strict: a fix makes this fail until the case leaves KNOWN_DIFFERENT.
        with pytest.raises(AssertionError):
            check_case(results, "asyncpg", case)
        pytest.xfail(KNOWN_DIFFERENT[case])
    check_case(results, "asyncpg", case)


@pytest.mark.parametrize("case", harness.CASES["psycopg"])
@pytest.mark.timeout(600)  # the first case of a suite runs it on both targets
def test_psycopg(results, case):
    check_case(results, "psycopg", case)


def test_driver_case_lists_match_the_suites():
    """harness.CASES (what this file tests) names every case each suite has, in its order."""
    for suite in harness.CASES:
        if harness.available(suite) is None:
            if suite == "node":
                harness.install_node_modules()
            assert harness.list_cases(suite) == harness.CASES[suite], suite
