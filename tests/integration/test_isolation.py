"""Two-client isolation (issue 9, items 3-5): whatever client A does to its session, in any
way PostgreSQL allows, no other client ever sees it, on any server of the pool, whether A
stays connected or leaves; and A itself sees what a session of its own would, where tusk
promises that.

Each case: ten "old" clients connect and use the pool, A connects (maybe with startup
parameters) and changes its session, then twenty clients (the old ones and ten new ones)
run transactions all at once, round after round, until every server of the pool served one
of them, each checking that its session is exactly what a session straight to PostgreSQL
with its own startup parameters would be (settings, what they do, ParameterStatus,
current_user, temp tables, advisory locks, prepared statements). A looks at its own session
between the rounds. Then A leaves and twenty clients (the old ones and ten fresh ones) do it
again. Where A may be pinned and the pool has one server, the old clients instead queue
behind A while it goes on working, and are served (and checked) once it has left. The
reference for every view is a session straight to PostgreSQL, so with TUSK_TEST_DIRECT=1
(every client its own session) the whole suite passes: that is how the tests themselves are
checked. Nothing here is marked tusk_only: every assertion is about what clients see; only
the check that the crowd covered every server of the pool (and that the pool opened all
`size` of them) is skipped straight to PostgreSQL, where each client is its own server.

Pools: transaction and statement mode, size 1 and 4, one tusk each shared by the module (and
restarted after a failed test, so one leak is not blamed on the next case). Protocols: simple
(Query messages) and extended (unnamed and named Parse/Bind/Execute)."""

import time
from dataclasses import dataclass, field

import pytest

from conftest import DIRECT, SLOW, TEST_DB, Tusk, connect
from iso_util import (LOCK_KEY, REPORTED_SETTABLE, SETTINGS, UNREPORTED, Crowd, diff, executor, look,
                      reference, run_sql, run_steps, told, wait_lock_released, without_pid)
from txn_util import txn_pool

POOLS = [("transaction", 1), ("transaction", 4), ("statement", 1), ("statement", 4)]
PROTOCOLS = ["simple", "extended"]
LIMITED = "limited"

# What A changes every setting to; each differs from the database default and from every
# crowd client's own startup value.
A_VALUE = {
    "application_name": "iso-a",
    "client_encoding": "LATIN1",
    "DateStyle": "SQL, DMY",
    "IntervalStyle": "iso_8601",
    "TimeZone": "Asia/Tokyo",
    "standard_conforming_strings": "off",
    "default_transaction_read_only": "on",
    "search_path": "iso_evil, public",
    "work_mem": "17MB",
    "statement_timeout": "4321ms",
    "myapp.x": "a-secret",
}
# The same through the startup packet (no spaces: options split on them).
A_STARTUP_ALL = {
    "application_name": "iso-a",
    "client_encoding": "LATIN1",
    "options": "-c DateStyle=SQL,DMY -c IntervalStyle=iso_8601 -c TimeZone=Asia/Tokyo "
               "-c standard_conforming_strings=off -c default_transaction_read_only=on "
               "-c search_path=iso_evil,public -c work_mem=17MB -c statement_timeout=4321ms "
               "-c myapp.x=a-secret",
}
# A's own startup values in the RESET cases: RESET goes back to these, not to the server's.
A_STARTUP_OWN = {
    "application_name": "iso-a0",
    "options": "-c TimeZone=Europe/Oslo -c search_path=iso_own -c myapp.x=a-start -c work_mem=3MB "
               "-c DateStyle=Postgres,YMD",
}

# Crowd clients come in four kinds of startup parameters.
KINDS = {
    0: {},
    1: {"application_name": "crowd-app"},
    2: {"options": "-c TimeZone=America/Lima -c work_mem=9MB -c myapp.x=crowd -c statement_timeout=37s"},
    3: {"client_encoding": "LATIN2",
        "options": "-c search_path=iso_own,public -c IntervalStyle=postgres_verbose -c DateStyle=German"},
}
# The cases' crowds leave out a startup application_name: clients that differ only in it are
# test_clients_start_from_defaults_plus_their_own_startup's business (A's own startup
# application_name is the "startup" case's), so that one leak does not hide all the others.
CASE_KINDS = (0, 2, 3)
OLD, NEW = 10, 10
MIN_ROUNDS, MAX_ROUNDS = 2, 10


def _lit(name, value):
    # search_path is a list: quoted, it would be one schema named "iso_evil, public".
    return value if name == "search_path" else "'" + value + "'"


def sets(names, local=False):
    return [f"set {'local ' if local else ''}{n} = {_lit(n, A_VALUE[n])}" for n in names]


def set_config(names, is_local):
    calls = ", ".join(f"set_config('{n}', '{A_VALUE[n]}', {str(is_local).lower()})" for n in names)
    return f"select {calls}"


SET_ALL_BODY = """
    perform set_config('application_name', 'iso-a', false);
    perform set_config('client_encoding', 'LATIN1', false);
    set datestyle = 'SQL, DMY';
    set intervalstyle = 'iso_8601';
    perform set_config('TimeZone', 'Asia/Tokyo', false);
    set standard_conforming_strings = off;
    perform set_config('default_transaction_read_only', 'on', false);
    set search_path = iso_evil, public;
    perform set_config('work_mem', '17MB', false);
    set statement_timeout = '4321ms';
    perform set_config('myapp.x', 'a-secret', false);
"""


@dataclass
class Case:
    steps: list
    startup: dict = field(default_factory=dict)
    txn_only: bool = False   # uses a transaction block: statement mode refuses those
    a_defined: bool = True   # A's own view afterwards is defined (else only the others are checked)
    a_pins: bool = False     # A may keep its server (pinned) while connected
    lock_held: bool = False  # A holds LOCK_KEY exclusively while connected
    lock_maybe: bool = False  # A may or may not still hold it (a DO block took it; tusk may reset)


ALL = SETTINGS
SETTING_CASES = {
    "set": Case(sets(ALL)),
    "set_local": Case(["begin"] + sets(ALL, local=True) + ["CHECK", "commit"], txn_only=True),
    # RESET goes back to the server's default in tusk, not to A's own startup value (a known
    # limit, docs/pooling.md): what A sees afterwards is test_reset_returns_to_the_startup_value's
    # business (an expected failure); here only the others are checked.
    "reset": Case(sets(ALL) + [f"reset {n}" for n in ALL], startup=A_STARTUP_OWN, a_defined=False),
    "reset_all": Case(sets(ALL) + ["reset all"], startup=A_STARTUP_OWN, a_defined=False),
    "set_config_reported": Case([set_config(REPORTED_SETTABLE, False)]),
    # An unreported setting changed by set_config is invisible in the protocol: A is pinned.
    "set_config_unreported": Case([set_config(UNREPORTED, False)], a_pins=True),
    # Outside a transaction block, set_config(..., true) ends with its own statement.
    "set_config_local": Case([set_config(ALL, True)]),
    "set_config_local_in_txn": Case(["begin", set_config(ALL, True), "CHECK", "commit"], txn_only=True),
    "startup": Case([], startup=A_STARTUP_ALL),
    "committed_txn": Case(["begin"] + sets(ALL) + ["commit"], txn_only=True),
    "committed_txn_set_config": Case(["begin", set_config(REPORTED_SETTABLE, False), "commit"],
                                     txn_only=True),
    "rolled_back_txn": Case(["begin"] + sets(ALL) + [set_config(REPORTED_SETTABLE, False), "CHECK",
                                                     "rollback"], txn_only=True),
    "failed_txn": Case(["begin"] + sets(ALL) + [("ERROR", "select 1/0"), "rollback"], txn_only=True),
    # tusk cannot see into these: it asks the server after the transaction and resets the
    # settings (RESET ALL) before anyone else uses it, or pins A (a setting that changes how
    # SQL is read); A may lose what they did, so only the others are checked.
    "function": Case(["select iso_set_all()"], a_defined=False, a_pins=True),
    "do_block": Case(["do $$ begin" + SET_ALL_BODY + "end $$"], a_defined=False, a_pins=True),
}

STATE_CASES = {
    "advisory_lock": Case([f"select pg_advisory_lock({LOCK_KEY})"], a_pins=True, lock_held=True),
    "try_advisory_lock": Case([f"select pg_try_advisory_lock({LOCK_KEY})"], a_pins=True, lock_held=True),
    # Inside a DO block or a function tusk does not see it; the check after the transaction
    # does, and pins A with its state (issue 27, item 7).
    "advisory_lock_in_do": Case([f"do $$ begin perform pg_advisory_lock({LOCK_KEY}); end $$"],
                                a_pins=True, lock_held=True),
    "temp_table": Case(["create temp table iso_tmp (v int)", "insert into iso_tmp values (1)"], a_pins=True),
    "temp_table_in_do": Case(["do $$ begin create temp table iso_tmp (v int); end $$"], a_pins=True),
    "prepare": Case(["prepare iso_q as select 42"], a_pins=True),
    "prepare_in_do": Case(["do $$ begin execute 'prepare iso_p as select 1'; end $$"], a_pins=True),
    "set_role": Case([f"set role {LIMITED}"], a_pins=True),
    "set_role_set_config": Case([f"select set_config('role', '{LIMITED}', false)"], a_pins=True),
    "set_role_in_do": Case([f"do $$ begin set role {LIMITED}; end $$"], a_pins=True),
    "set_role_in_function": Case(["select iso_become_limited()"], a_pins=True),
}

PAD = 70 * 1024
# Past buffer_size (64 kB): tusk may carry these or pin A, so the phase with A connected runs
# only where the pool has another server.
LARGE_CASES = {
    "set_role_comment_before": Case(["/*" + "x" * PAD + "*/ " + f"set role {LIMITED}"], a_pins=True),
    "set_role_whitespace_after": Case([f"set role {LIMITED}" + " " * PAD], a_pins=True),
    "search_path_comment_before": Case(["/*" + "x" * PAD + "*/ set search_path = iso_evil"], a_pins=True),
    "search_path_whitespace_after": Case(["set search_path = iso_evil" + " " * PAD], a_pins=True),
}

POOL_USERS = {p: f"iso_{p[0][0]}{p[1]}" for p in POOLS}


@pytest.fixture(scope="module")
def iso_db(pg):
    """Roles (one per pool, so each pool's servers can be told apart in pg_stat_activity;
    `limited` for SET ROLE), schemas and functions the cases use."""
    users = list(POOL_USERS.values())
    with pg.admin(TEST_DB) as c:
        for u in users + [LIMITED]:
            c.execute(f"drop role if exists {u}")
        for u in users:
            c.execute(f"create role {u} login")
        c.execute(f"create role {LIMITED} nologin")
        c.execute(f"grant {LIMITED} to {', '.join(users)}")
        for s in ("iso_evil", "iso_own"):
            c.execute(f"drop schema if exists {s} cascade")
            c.execute(f"create schema {s}")
            c.execute(f"grant usage on schema {s} to public")
        c.execute("create or replace function public.iso_set_all() returns void language plpgsql "
                  "security invoker as $$ begin" + SET_ALL_BODY + "end $$")
        c.execute("create or replace function public.iso_become_limited() returns void language plpgsql "
                  f"security invoker as $$ begin set role {LIMITED}; end $$")
    yield
    with pg.admin(TEST_DB) as c:
        c.execute("drop function if exists public.iso_set_all(), public.iso_become_limited()")
        for s in ("iso_evil", "iso_own"):
            c.execute(f"drop schema if exists {s} cascade")
        for u in users + [LIMITED]:
            c.execute(f"drop role if exists {u}")


class IsoPool:
    """One tusk with one pool rule (mode, size), shared by the module's cases."""

    def __init__(self, pg, tmp_factory, mode, size):
        self.pg, self.tmp_factory, self.mode, self.size = pg, tmp_factory, mode, size
        self.user = POOL_USERS[(mode, size)]
        self.t = None
        self.problems = []
        self.admin = None
        self.olds = []  # clients connected before any case, shared by the module's cases
        self._refs = None
        self.start()

    def start(self):
        self.t = Tusk(self.tmp_factory.mktemp(f"iso-{self.mode}{self.size}"), self.pg.port,
                      pools=[txn_pool(self.size, mode=self.mode)], pool_wait_timeout=f"{int(20 * SLOW)}s")
        self.t.start()

    def servers(self):
        """Backend pids of this pool's servers (its user is the pool's own)."""
        if self.admin is None or self.admin.closed:
            self.admin = self.pg.admin(TEST_DB)
        rows = self.admin.execute("select pid from pg_stat_activity where backend_type = 'client backend' "
                                  "and usename = %s", (self.user,)).fetchall()
        return {r[0] for r in rows}

    def old_clients(self, ex):
        """OLD clients connected once per tusk (and again after a restart): every case's
        clients connected before A."""
        if not self.olds:
            crowd = Crowd(self.port, self.user, "simple", False, 0.0, ex)
            problems = crowd.add([(f"old{i}", CASE_KINDS[i % len(CASE_KINDS)], KINDS[CASE_KINDS[i % len(CASE_KINDS)]])
                                  for i in range(OLD)], self.refs(), "connecting the old clients", shared=True)
            self.olds = crowd.clients
            assert not problems, "\n".join(problems[:30])
        return self.olds

    def stop(self):
        for c in self.olds:
            c.close()
        self.olds = []
        if self.admin is not None:
            self.admin.close()
            self.admin = None
        self.olds = []  # clients connected before any case, shared by the module's cases
        for p in self.t.stop():
            self.problems.append(f"{p}\n--- {self.t.log_path}\n{self.t.log_tail()}")

    def restart(self, why):
        """After a failed case: a fresh tusk, so the next case starts from clean servers."""
        print(f"--- tusk log {self.t.log_path} (tail, {why})\n{self.t.log_tail()}")
        self.stop()
        self.start()

    @property
    def port(self):
        return self.t.port

    def refs(self):
        """kind -> (view, ParameterStatus) of a session straight to PostgreSQL."""
        if self._refs is None:
            self._refs = {}
            for kind, startup in KINDS.items():
                _, view, ps = reference(self.pg.port, self.user, startup, "simple")
                self._refs[kind] = (view, ps)
        return self._refs


@pytest.fixture(scope="module", params=POOLS, ids=[f"{m}{s}" for m, s in POOLS])
def iso_pool(request, pg, iso_db, tmp_path_factory):
    mode, size = request.param
    p = IsoPool(pg, tmp_path_factory, mode, size)
    yield p
    p.stop()
    if p.problems:
        pytest.fail("\n".join(p.problems), pytrace=False)


@pytest.fixture
def iso(request, iso_pool):
    if not DIRECT and iso_pool.t.proc.poll() is not None:
        iso_pool.problems.append(f"tusk exited with {iso_pool.t.proc.returncode} before {request.node.name}")
        iso_pool.restart("it had died")
    yield iso_pool
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        iso_pool.restart(f"after {request.node.name}")


def _lock_want(case, a_connected):
    if not a_connected:
        return "true"
    if case.lock_held:
        return "false"
    return None if case.lock_maybe else "true"


def _rounds(iso, crowd, a, a_want, a_told, proto, exclude, phase):
    """Rounds until every server of the pool (but `exclude`) served the crowd, and the pool
    has all `size` servers (twenty clients at once need them all); A (when connected) looks
    at its own session between rounds."""
    problems = []
    crowd.visited = set()
    for rnd in range(MAX_ROUNDS):
        problems += crowd.round(rnd, phase)
        if a is not None:
            view = without_pid(look(a, proto, named=rnd % 2 == 1))
            if a_want is not None:
                problems += diff(view, a_want, f"{phase}: A itself, round {rnd}:")
                problems += diff(told(a), a_told, f"{phase}: A itself, round {rnd}: ParameterStatus")
        if problems:
            return problems
        if rnd + 1 >= MIN_ROUNDS:
            # Straight to PostgreSQL every client is its own server: nothing to cover.
            if DIRECT:
                return problems
            all_servers = iso.servers()
            servers = all_servers - exclude
            if len(all_servers) == iso.size and servers and servers <= crowd.visited:
                return problems
    problems.append(f"{phase}: the pool's servers {sorted(all_servers)} (size {iso.size}, A's pinned one "
                    f"excluded: {sorted(exclude)}) were not all opened and used by the crowd in {MAX_ROUNDS} "
                    f"rounds (visited {sorted(crowd.visited)})")
    return problems


def _b_takes_lock(crowd, proto):
    """One other client tries to take A's lock itself (exclusive, for its transaction)."""
    b = crowd.clients[0]
    return run_sql(b.conn, proto, f"select pg_try_advisory_xact_lock({LOCK_KEY})").fetchone()[0]


def run_case(iso, proto, case, kinds=CASE_KINDS):
    if iso.mode == "statement" and case.txn_only:
        pytest.skip("statement mode refuses transaction blocks (BEGIN) by design")
    refs = iso.refs()
    a_ref = reference(iso.pg.port, iso.user, case.startup, proto, case.steps) if case.a_defined else None
    # Clients running at once must hold their servers long enough to need all of them.
    sleep = 0.0 if DIRECT or iso.size == 1 else 0.005
    problems = []
    a = None
    with executor() as ex:
        crowd = Crowd(iso.port, iso.user, proto, transactions=iso.mode == "transaction", sleep=sleep, pool=ex)
        try:
            def crowd_of(prefix, n, shift):
                return [(f"{prefix}{i}", kinds[(i + shift) % len(kinds)], KINDS[kinds[(i + shift) % len(kinds)]])
                        for i in range(n)]
            crowd.join(iso.old_clients(ex), refs)
            problems += crowd.round(0, "before A")  # the old clients have used the pool's servers before A
            assert not problems, "before A did anything:\n" + "\n".join(problems[:30])

            a = connect(iso.port, user=iso.user, dbname=TEST_DB, **case.startup)
            a_views = run_steps(a, proto, case.steps)
            a_want = a_told = None
            if a_ref is not None:
                ref_views, a_want, a_told = a_ref
                for i, (got, want) in enumerate(zip(a_views, ref_views)):
                    problems += diff(got, want, f"A itself inside its transaction (check {i}):")
                problems += diff(without_pid(look(a, proto)), a_want, "A itself right after:")
                problems += diff(told(a), a_told, "A itself right after: ParameterStatus")
            a_pid = int(look(a, proto)["pid"])

            # Phase 1, A still connected.
            if case.a_pins and iso.size == 1:
                # A pinned to the only server leaves none for the others: they queue now
                # while A goes on using its server (still seeing its own session, the server
                # never handed to them between A's transactions), and are served once A has
                # left; what they find then is checked again in phase 2.
                for c in crowd.clients:
                    c.want["lock_free"] = None
                waiting = ex.submit(crowd.round, 0, "waiting for A's server")
                for rnd in range(MIN_ROUNDS):
                    time.sleep(0.05 * SLOW)
                    view = without_pid(look(a, proto, named=rnd % 2 == 1))
                    if a_want is not None:
                        problems += diff(view, a_want, f"A connected, others waiting: A itself, round {rnd}:")
                        problems += diff(told(a), a_told, f"A connected, others waiting: A itself, round {rnd}: "
                                                         "ParameterStatus")
                a.close()
                a = None
                problems += waiting.result(timeout=60 * SLOW)
            else:
                lock = _lock_want(case, True)
                for c in crowd.clients:
                    c.want["lock_free"] = lock
                news = crowd_of("new", NEW, 1)
                added = crowd.add(news, {k: ({**v, "lock_free": lock}, ps) for k, (v, ps) in refs.items()},
                                  "A connected")
                problems += added
                if not added:
                    problems += _rounds(iso, crowd, a, a_want, a_told, proto,
                                        {a_pid} if case.a_pins else set(), "A connected")
                if case.lock_held and not problems and _b_takes_lock(crowd, proto) is not False:
                    problems.append("A connected: another client took A's advisory lock")
                a.close()
                a = None

            # Phase 2, A gone: the old clients and ten that never met A.
            if not problems:
                if (case.lock_held or case.lock_maybe) and not wait_lock_released(iso.pg, LOCK_KEY, 5 * SLOW):
                    problems.append("A's session advisory lock is still held after A left")
                crowd.close([c for c in crowd.clients if c.name.startswith("new")])
                for c in crowd.clients:
                    c.want["lock_free"] = "true"
                fresh = crowd_of("fresh", NEW, 2)
                added = crowd.add(fresh, refs, "A gone")
                problems += added
                if not added:
                    problems += _rounds(iso, crowd, None, None, None, proto, set(), "A gone")
                if (case.lock_held or case.lock_maybe) and not problems and _b_takes_lock(crowd, proto) is not True:
                    problems.append("A gone: another client cannot take the advisory lock A held")
        finally:
            if a is not None:
                a.close()
            crowd.close()
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems[:30])


@pytest.mark.parametrize("proto", PROTOCOLS)
@pytest.mark.parametrize("way", list(SETTING_CASES))
def test_settings_stay_with_their_client(iso, proto, way):
    """Reported and unreported settings, changed in every way PostgreSQL allows (item 3)."""
    run_case(iso, proto, SETTING_CASES[way])


@pytest.mark.parametrize("proto", PROTOCOLS)
@pytest.mark.parametrize("what", list(STATE_CASES))
def test_unreportable_state_stays_with_its_client(iso, proto, what):
    """Advisory locks, temp tables, PREPARE and SET ROLE, also inside DO blocks and functions
    (item 5)."""
    run_case(iso, proto, STATE_CASES[what])


@pytest.mark.parametrize("proto", PROTOCOLS)
@pytest.mark.parametrize("what", list(LARGE_CASES))
def test_large_session_statement_stays_with_its_client(iso, proto, what):
    """SET ROLE / SET search_path padded past buffer_size, as a Query and as
    Parse/Bind/Execute (item 4)."""
    run_case(iso, proto, LARGE_CASES[what])


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_clients_start_from_defaults_plus_their_own_startup(iso, proto):
    """No A at all: clients with different startup parameters (application_name,
    client_encoding, options=-c ...) share the servers; each is told, and runs with, the
    database's defaults plus its own startup parameters, never another's (item 3)."""
    run_case(iso, proto, Case([]), kinds=tuple(KINDS))


@pytest.mark.parametrize("how", ["reset", "reset_all"])
def test_reset_returns_to_the_startup_value(iso, how):
    """What a real session does: RESET (ALL) goes back to the value the client gave at startup
    (options=-c work_mem=3MB, carried; application_name, reported), on whichever server the
    next statement runs (it went to the server's default, as in PgBouncer, before)."""
    steps = ["set work_mem = '17MB'", "set application_name = 'changed'",
             "reset all" if how == "reset_all" else "reset work_mem", "reset application_name"]
    with connect(iso.port, user=iso.user, dbname=TEST_DB,
                 application_name="iso-a0", options="-c work_mem=3MB") as a:
        for sql in steps:
            a.execute(sql)
        got = a.execute("select current_setting('work_mem'), current_setting('application_name')").fetchone()
        told = a.info.parameter_status("application_name")
        # the next client (a pool of 1: the same server) starts from the defaults, not from A's
        with connect(iso.port, user=iso.user, dbname=TEST_DB) as b:
            b_got = b.execute("select setting = reset_val, current_setting('application_name') "
                              "from pg_settings where name = 'work_mem'").fetchone()
    assert got == ("3MB", "iso-a0")
    assert told == "iso-a0"  # what the client was last told (ParameterStatus)
    assert b_got == (True, "")


def test_reset_then_a_pin_keeps_the_startup_values_on_the_kept_server(iso):
    """RESET ALL in the transaction whose function leaves a session advisory lock: the client
    is pinned to that server (the lock is its own), which RESET sent to the server's defaults;
    tusk makes that server the client's session again before its next statement, so the
    client has its startup values there, as on PostgreSQL direct, and still holds its lock."""
    with connect(iso.port, user=iso.user, dbname=TEST_DB,
                 application_name="iso-a0", options="-c work_mem=3MB") as a:
        a.execute("set work_mem = '17MB'")
        a.execute("set application_name = 'changed'")
        a.execute(f"reset all; do $$ begin perform pg_advisory_lock({LOCK_KEY}); end $$")
        got = a.execute("select current_setting('work_mem'), current_setting('application_name'), "
                        "(select count(*) from pg_locks where locktype = 'advisory' "
                        "and pid = pg_backend_pid() and granted)").fetchone()
        told = a.info.parameter_status("application_name")
        a.execute(f"select pg_advisory_unlock({LOCK_KEY})")
    assert got == ("3MB", "iso-a0", 1)
    assert told == "iso-a0"
