"""Transaction and statement pooling end to end against PostgreSQL: many clients over few
servers, pipelines, pgbench, prepared statements moving between servers, statement mode,
and the pool limits (pool_wait_timeout, min_size, idle_transaction_timeout, server_lifetime,
server_idle_timeout). Session state is in test_txn_state.py, faults in test_txn_faults.py."""

import subprocess
import threading
import time

import psycopg
import pytest

import pgwire
from conftest import BENCH_DB, SLOW, TEST_DB, TUSK_ERROR_RE, assert_tusk_error, wait_until
from txn_util import (PeakWatcher, WireClient, backend_pid, bind_msg, close_msg, count_backends,
                      describe_msg, execute_msg, parse_msg, pgbench, pgbench_counts, run_threads,
                      sync_msg, txn_pool, wait_no_backends)

pytestmark = pytest.mark.tusk_only


# --- many clients, few servers ------------------------------------------------------------------

@pytest.mark.exclusive  # load: runs alone (conftest.py)
def test_1000_clients_over_10_servers(tusk, pg):
    """1,000 clients connected at once (a barrier holds each until all have logged in), each
    running five short transactions, reads, writes and a rollback, over a pool of 10. Every
    answer is checked, and PostgreSQL never sees more than 10 backends. (waves/per_wave can
    split them should a slower machine need it.)"""
    size, waves, per_wave = 10, 1, 1000
    pg.execute("drop table if exists txn_load", dbname=TEST_DB)
    pg.execute("create table txn_load (client int primary key, n int not null, note text not null)",
               dbname=TEST_DB)
    pg.execute("grant all on txn_load to public", dbname=TEST_DB)
    wait_no_backends(pg)
    t = tusk(pools=[txn_pool(size)], pool_wait_timeout="60s")

    def client(i, barrier):
        with t.connect(autocommit=False) as c:
            barrier.wait(timeout=90 * SLOW)
            with c.transaction():
                c.execute("insert into txn_load values (%s, 1, %s)", (i, f"c{i}"))
            with c.transaction():
                got = c.execute("update txn_load set n = n + %s where client = %s returning n",
                                (i % 7, i)).fetchone()
                assert got == (1 + i % 7,), f"client {i}: update returned {got}"
            with c.transaction():
                assert c.execute("select n, note from txn_load where client = %s", (i,)).fetchone() == \
                    (1 + i % 7, f"c{i}")
                k = i % 1000 + 1
                assert c.execute("select sum(id) from items where id <= %s", (k,)).fetchone() == \
                    (k * (k + 1) // 2,)
            c.execute("update txn_load set n = -1, note = 'lost' where client = %s", (i,))
            c.rollback()
            assert c.execute("select n, note from txn_load where client = %s", (i,)).fetchone() == \
                (1 + i % 7, f"c{i}"), f"client {i}: a rolled-back update is visible"
            c.commit()

    started = time.monotonic()
    with PeakWatcher(pg) as w:
        for wave in range(waves):
            barrier = threading.Barrier(per_wave)
            ids = range(wave * per_wave, (wave + 1) * per_wave)
            errors, hung = run_threads(client, [(i, barrier) for i in ids], timeout=90)
            assert hung == 0, f"wave {wave}: {hung} clients still running after the deadline"
            assert errors == [], f"wave {wave}: {len(errors)} clients failed, first: {errors[:5]}"
    took = time.monotonic() - started
    assert w.error is None, w.error
    total = waves * per_wave
    assert pg.execute("select count(*), sum(n) from txn_load", dbname=TEST_DB)[0] == \
        (total, sum(1 + i % 7 for i in range(total)))
    assert w.samples > 10, "the watcher barely sampled"
    assert 0 < w.peak <= size, f"PostgreSQL saw {w.peak} backends of a transaction pool of size {size}"
    print(f"1000 clients in {took:.1f}s, peak {w.peak} backends over {w.samples} samples")


# --- pipelines and pgbench ----------------------------------------------------------------------

def test_psycopg_pipeline_mode(tusk):
    """Pipelines of prepared and unprepared statements, in autocommit and in explicit
    transactions, from several clients at once over two servers."""
    t = tusk(pools=[txn_pool(2)])

    def client(i):
        with t.connect() as c:
            for rnd in range(5):
                with c.pipeline() as p:
                    curs = []
                    for j in range(40):
                        n = i * 10000 + rnd * 100 + j
                        curs.append(c.execute("select %s::int * 3, %s::text", (n, f"r{j}"), prepare=(j % 2 == 0)))
                        if j % 10 == 9:
                            p.sync()
                    for j, cur in enumerate(curs):
                        n = i * 10000 + rnd * 100 + j
                        assert cur.fetchone() == (n * 3, f"r{j}"), f"client {i} round {rnd} stmt {j}"
                # a transaction inside a pipeline: written and read back before commit
                key = f"pipe-{i}-{rnd}"
                with c.pipeline():
                    with c.transaction():
                        c.execute("insert into kv values (%s, %s)", (key, str(rnd)), prepare=True)
                        cur = c.execute("select v from kv where k = %s", (key,), prepare=True)
                        c.execute("delete from kv where k = %s", (key,))
                    assert cur.fetchone() == (str(rnd),)
            # an error inside a pipeline aborts what follows up to the sync; the client goes on
            for rnd in range(10):
                with pytest.raises(psycopg.errors.DivisionByZero):
                    with c.pipeline():
                        c.execute("select 1", prepare=True)
                        c.execute("select 1 / 0")
                        c.execute("select 2", prepare=True)
                assert c.execute("select %s::int", (rnd,), prepare=True).fetchone() == (rnd,)
                assert c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE

    errors, hung = run_threads(client, [(i,) for i in range(6)], timeout=60)
    assert hung == 0 and errors == [], f"hung {hung}, errors {errors[:5]}"


PIPE_OK = [parse_msg("b1", "select 1"), bind_msg("b1"), describe_msg(b"P", ""), execute_msg()]
PIPE_ERR = [parse_msg("", "select 1 / 0"), bind_msg(""), describe_msg(b"P", ""), execute_msg()]
PIPE_OK2 = [parse_msg("b2", "select 2"), bind_msg("b2"), describe_msg(b"P", ""), execute_msg()]


@pytest.mark.parametrize("msgs, want", [
    pytest.param(PIPE_OK + PIPE_OK2, b"12TDC12TDCZ", id="named-named"),
    pytest.param(PIPE_ERR + PIPE_OK2, b"1EZ", id="error-named"),
    pytest.param(PIPE_OK + PIPE_ERR, b"12TDC1EZ", id="named-error"),
    pytest.param(PIPE_OK + PIPE_ERR + PIPE_OK2, b"12TDC1EZ", id="named-error-named"),
])
@pytest.mark.parametrize("arrival", ["one_write", "message_by_message"])
def test_pipeline_with_error_on_the_wire(tusk, msgs, want, arrival):
    """What libpq's pipeline mode sends (named and unnamed Parse/Bind/Describe/Execute, one Sync),
    with an error in the middle: the replies must be exactly PostgreSQL's (checked against it
    directly), whether the messages reach tusk in one write or one by one as libpq flushes them,
    and the next Parse+Sync must get its ParseComplete."""
    t = tusk(pools=[txn_pool(1)])
    w = WireClient(t.port)
    step = "pipeline"
    try:
        if arrival == "one_write":
            w.send(b"".join(msgs + [sync_msg()]))
        else:
            for m in msgs + [sync_msg()]:
                w.send(m)
                time.sleep(0.005)
        r = w.exchange()
        assert b"".join(r["kinds"]) == want, r
        step = "Parse+Sync after the pipeline"
        r = w.exchange(parse_msg("b3", "select 3"), sync_msg())
        assert b"".join(r["kinds"]) == b"1Z", r
        step = "Bind+Execute+Sync of that statement"
        r = w.exchange(bind_msg("b3"), execute_msg(), sync_msg())
        assert r["rows"] == [["3"]] and r["errors"] == [], r
    except pgwire.Closed as e:
        pytest.fail(f"tusk closed the connection ({e}) at the {step} step, without an ErrorResponse")
    finally:
        w.close()


def test_pgbench_extended_in_transaction_mode(tusk, pg):
    """The TPC-B-like default script (BEGIN, updates, insert, END) with the extended protocol."""
    wait_no_backends(pg, dbname=BENCH_DB)
    t = tusk(pools=[txn_pool(4)])
    with PeakWatcher(pg, dbname=BENCH_DB) as w:
        rc, out = pgbench(t.port, "-n", "-M", "extended", "-c", "16", "-j", "2", "-t", "40")
    assert rc == 0, f"pgbench exited {rc}:\n{out}"
    assert pgbench_counts(out) == (640, 0), out
    assert w.error is None and 0 < w.peak <= 4, f"peak {w.peak} backends for size 4 ({w.error})"


def test_pgbench_prepared_64_clients_over_8_servers(tusk, pg):
    """pgbench -M prepared: 64 clients, every one preparing the same statement names, share 8
    servers; each statement must be prepared on whichever server a transaction lands on."""
    wait_no_backends(pg, dbname=BENCH_DB)
    # pgbench prepares each command with a blocking PQprepare (Parse, Sync) the first time it
    # sends it; with 32 clients per thread, a thread blocked there cannot move its other clients,
    # which may hold every server inside their transactions. A server-less answer to that Parse
    # is the way out; a short pool_wait_timeout and deadline keep a regression from hanging here.
    t = tusk(pools=[txn_pool(8)], pool_wait_timeout="2s")
    with PeakWatcher(pg, dbname=BENCH_DB) as w:
        try:
            rc, out = pgbench(t.port, "-n", "-M", "prepared", "-c", "64", "-j", "2", "-t", "20", timeout=20)
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace")
            errs = [line for line in out.splitlines() if "error" in line][:3]
            pytest.fail(f"pgbench -M prepared -c 64 -j 2 did not finish within 20 s; first errors: {errs}")
    assert rc == 0, f"pgbench exited {rc}:\n{out}"
    assert pgbench_counts(out) == (1280, 0), out
    assert w.error is None and 0 < w.peak <= 8, f"peak {w.peak} backends for size 8 ({w.error})"
    # the servers hold tusk's names, never pgbench's own P0_n
    with t.connect(dbname=BENCH_DB) as c:
        names = [r[0] for r in c.execute("select name from pg_prepared_statements", prepare=False)]
        assert all(n.startswith("tusk_") for n in names), names


@pytest.mark.parametrize("args", [
    pytest.param(["-c", "8", "-j", "8"], id="tpcb-thread-per-client"),
    pytest.param(["-S", "-c", "16", "-j", "2"], id="select-only-16-clients"),
])
def test_pgbench_prepared_over_fewer_servers(tusk, pg, args):
    """pgbench -M prepared where its blocking PQprepare cannot starve its own clients (one
    client per thread, or single-statement transactions): its statements must still be prepared
    on whichever of the 4 servers each transaction lands on."""
    wait_no_backends(pg, dbname=BENCH_DB)
    t = tusk(pools=[txn_pool(4)], pool_wait_timeout="5s")
    with PeakWatcher(pg, dbname=BENCH_DB) as w:
        rc, out = pgbench(t.port, "-n", "-M", "prepared", *args, "-t", "50", timeout=60)
    assert rc == 0, f"pgbench exited {rc}:\n{out}"
    nclients = int(args[args.index("-c") + 1])
    assert pgbench_counts(out) == (nclients * 50, 0), out
    assert w.error is None and 0 < w.peak <= 4, f"peak {w.peak} backends for size 4 ({w.error})"


def test_pgbench_select_only_prepared_in_statement_mode(tusk):
    t = tusk(pools=[txn_pool(3, mode="statement")])
    rc, out = pgbench(t.port, "-n", "-S", "-M", "prepared", "-c", "8", "-j", "2", "-t", "100")
    assert rc == 0, f"pgbench exited {rc}:\n{out}"
    assert pgbench_counts(out) == (800, 0), out


# --- prepared statements ------------------------------------------------------------------------

def test_prepared_statements_follow_clients_across_servers(tusk):
    """Six clients, three servers: each client's prepared statement runs on several servers
    (the statement reports the backend it ran on), always with the right answer."""
    t = tusk(pools=[txn_pool(3)])
    pids_seen, lock = set(), threading.Lock()

    def client(i):
        mine = set()
        with t.connect() as c:
            for k in range(40):
                got = c.execute("select pg_backend_pid(), %s::int * 7, %s::text from pg_sleep(0.002)",
                                (i * 1000 + k, f"c{i}"), prepare=True).fetchone()
                assert got[1:] == ((i * 1000 + k) * 7, f"c{i}"), f"client {i} round {k}: {got}"
                mine.add(got[0])
        with lock:
            pids_seen.update(mine)

    errors, hung = run_threads(client, [(i,) for i in range(6)], timeout=60)
    assert hung == 0 and errors == [], f"hung {hung}, errors {errors[:5]}"
    assert 2 <= len(pids_seen) <= 3, f"prepared statements ran on backends {pids_seen}"
    # three clients inside transactions hold the three servers: each server that ran the
    # statement holds it under a tusk_ name, prepared once, never under psycopg's _pg3_ names
    holders = [t.connect(autocommit=False) for _ in range(3)]
    try:
        having = {}
        for h in holders:
            pid = backend_pid(h)
            having[pid] = h.execute("select array_agg(name) from pg_prepared_statements "
                                    "where statement like 'select pg_backend_pid(), $1::int * 7%'",
                                    prepare=False).fetchone()[0] or []
        assert len(having) == 3
        for pid in pids_seen:
            names = having[pid]
            assert len(names) == 1 and names[0].startswith("tusk_"), f"backend {pid}: {names}"
    finally:
        for h in holders:
            h.close()


def test_max_prepared_statements_evicts_and_reprepares(tusk):
    """max_prepared_statements: 2 while each client uses 5 statements round robin: tusk closes
    the least recently used and prepares again on demand; answers stay right and no server
    holds more than 2."""
    t = tusk(pools=[txn_pool(2)], max_prepared_statements=2)
    queries = [f"select %s::int + {k}, '{k}'::text as q{k}" for k in range(5)]

    def client(i):
        with t.connect() as c:
            for rnd in range(12):
                for k, q in enumerate(queries):
                    n = i * 1000 + rnd
                    assert c.execute(q, (n,), prepare=True).fetchone() == (n + k, str(k)), (i, rnd, k)
                held = c.execute("select count(*) from pg_prepared_statements", prepare=False).fetchone()[0]
                assert held <= 2, f"a server holds {held} prepared statements, max_prepared_statements is 2"

    errors, hung = run_threads(client, [(i,) for i in range(3)], timeout=60)
    assert hung == 0 and errors == [], f"hung {hung}, errors {errors[:5]}"


def test_close_then_parse_same_name_with_new_sql(tusk):
    t = tusk(pools=[txn_pool(1)])
    w = WireClient(t.port)
    try:
        r = w.exchange(parse_msg("s1", "select 'first'::text"), bind_msg("s1"), execute_msg(), sync_msg())
        assert r["errors"] == [] and r["rows"] == [["first"]], r
        r = w.exchange(close_msg(b"S", "s1"), sync_msg())
        assert r["errors"] == [] and r["kinds"] == [b"3", b"Z"], r  # CloseComplete
        r = w.exchange(parse_msg("s1", "select 'second'::text, $1::int"), bind_msg("s1", [5]), execute_msg(),
                       sync_msg())
        assert r["errors"] == [] and r["rows"] == [["second", "5"]], r
        # and again in a later transaction
        r = w.exchange(bind_msg("s1", [6]), execute_msg(), sync_msg())
        assert r["errors"] == [] and r["rows"] == [["second", "6"]], r
        # a closed statement is gone for the client, as in PostgreSQL
        r = w.exchange(close_msg(b"S", "s1"), sync_msg())
        assert r["errors"] == []
        r = w.exchange(bind_msg("s1", [7]), execute_msg(), sync_msg())
        assert [e["C"] for e in r["errors"]] == ["26000"], r
        assert r["status"] == b"I"
    finally:
        w.terminate()


def test_describe_prepares_on_a_server_that_lacks_the_statement(tusk):
    """A client parses s1 on server A; another client then holds A, so the first one's next
    transaction, starting with a Describe of s1, lands on a fresh server B."""
    t = tusk(pools=[txn_pool(2)], pool_wait_timeout="5s")
    w = WireClient(t.port)
    other = t.connect(autocommit=False)
    try:
        r = w.exchange(parse_msg("s1", "select pg_backend_pid(), $1::int * 2 as twice"), sync_msg())
        assert r["errors"] == [] and r["kinds"] == [b"1", b"Z"], r
        r = w.exchange(bind_msg("s1", [1]), execute_msg(), sync_msg())
        first_pid = int(r["rows"][0][0])
        assert backend_pid(other) == first_pid, "the other client should get the only idle server"
        r = w.exchange(describe_msg(b"S", "s1"), sync_msg())
        assert r["errors"] == [], r
        assert r["kinds"] == [b"t", b"T", b"Z"], r  # ParameterDescription, RowDescription
        r = w.exchange(bind_msg("s1", [21]), execute_msg(), sync_msg())
        assert r["errors"] == [], r
        pid, twice = map(int, r["rows"][0])
        assert twice == 42
        assert pid != first_pid, "server A was held by another client"
    finally:
        other.close()
        w.terminate()


def test_psycopg_evicting_its_own_prepared_statements(tusk):
    """psycopg keeps at most prepared_max statements and, past that, sends SQL `DEALLOCATE
    _pg3_N` for the oldest (psycopg 3.1 with libpq < 17 has no protocol Close). In transaction
    mode that name exists only as tusk's mapping, so tusk must honour it: the client must see
    no error, and keep getting right answers."""
    t = tusk(pools=[txn_pool(2)])
    with t.connect() as c:
        c.prepared_max = 2
        for rnd in range(4):
            for k in range(5):
                assert c.execute(f"select %s::int + {k}", (rnd,), prepare=True).fetchone() == (rnd + k,)


def test_sql_discard_all_and_deallocate_all(tusk):
    """DEALLOCATE ALL and DISCARD ALL sent as SQL forget the client's protocol-level statements
    (as PostgreSQL does), a name can be parsed again afterwards, DISCARD ALL resets settings,
    and unnamed statements keep working throughout. Raw protocol: psycopg does not notice a
    DEALLOCATE ALL it did not send itself."""
    t = tusk(pools=[txn_pool(1)])
    w = WireClient(t.port)
    try:
        r = w.exchange(parse_msg("s1", "select 'one'::text"), sync_msg())
        assert r["errors"] == [], r
        assert w.simple_query("deallocate all") == ([], [])
        r = w.exchange(bind_msg("s1"), execute_msg(), sync_msg())
        assert [e["C"] for e in r["errors"]] == ["26000"], r
        r = w.exchange(parse_msg("s1", "select 'again'::text"), bind_msg("s1"), execute_msg(), sync_msg())
        assert r["errors"] == [] and r["rows"] == [["again"]], r
        r = w.exchange(parse_msg("", "select $1::int + 1"), bind_msg("", [41]), execute_msg(), sync_msg())
        assert r["errors"] == [] and r["rows"] == [["42"]], r

        assert w.simple_query("set work_mem = '21MB'") == ([], [])
        assert w.simple_query("discard all") == ([], [])
        assert w.simple_query("show work_mem") == ([["4MB"]], [])
        r = w.exchange(bind_msg("s1"), execute_msg(), sync_msg())
        assert [e["C"] for e in r["errors"]] == ["26000"], r
        r = w.exchange(parse_msg("s1", "select 'third'::text"), bind_msg("s1"), execute_msg(), sync_msg())
        assert r["errors"] == [] and r["rows"] == [["third"]], r
    finally:
        w.terminate()
    # the next client on the same server is not disturbed by the first one's statements
    with t.connect() as d:
        assert d.execute("select %s::int * 2", (4,), prepare=True).fetchone() == (8,)
        assert d.execute("show work_mem").fetchone() == ("4MB",)


def test_statement_names_before_the_first_parse(tusk):
    """A client's statement map is made on its first named Parse (an idle client holds none,
    issue 10). Before it, every message that looks a name up finds none, as PostgreSQL would:
    Bind, Describe and SQL DEALLOCATE of an unknown name fail with 26000, Close of one is
    fine, DEALLOCATE ALL and DISCARD ALL succeed; after it, the name works across
    transactions."""
    t = tusk(pools=[txn_pool(1)])
    w = WireClient(t.port)
    try:
        r = w.exchange(bind_msg("s1"), execute_msg(), sync_msg())
        assert [e["C"] for e in r["errors"]] == ["26000"] and r["status"] == b"I", r
        r = w.exchange(describe_msg(b"S", "s1"), sync_msg())
        assert [e["C"] for e in r["errors"]] == ["26000"] and r["status"] == b"I", r
        r = w.exchange(close_msg(b"S", "s1"), sync_msg())
        assert r["errors"] == [] and r["kinds"] == [b"3", b"Z"], r
        errors = w.simple_query("deallocate s1")[1]
        assert [e["C"] for e in errors] == ["26000"], errors
        assert w.simple_query("deallocate all") == ([], [])
        assert w.simple_query("discard all") == ([], [])
        r = w.exchange(parse_msg("s1", "select $1::int * 3"), bind_msg("s1", [14]), execute_msg(), sync_msg())
        assert r["errors"] == [] and r["rows"] == [["42"]], r
        r = w.exchange(bind_msg("s1", [5]), execute_msg(), sync_msg())
        assert r["errors"] == [] and r["rows"] == [["15"]], r
    finally:
        w.terminate()


def test_first_parse_after_a_datestyle_change_keeps_its_own_statement(tusk):
    """The map made at the first named Parse takes the session's parse context as it is then:
    a client that changed DateStyle before preparing anything must not share the server copy
    of the same text parsed by a client under the default DateStyle (the date constant is
    read at parse time), on the one server both use."""
    t = tusk(pools=[txn_pool(1)])
    a, b = WireClient(t.port), WireClient(t.port)
    sql = "select '01/02/2003'::date::text"
    try:
        assert a.simple_query("set datestyle = 'ISO, DMY'") == ([], [])
        r = b.exchange(parse_msg("d", sql), bind_msg("d"), execute_msg(), sync_msg())
        assert r["errors"] == [] and r["rows"] == [["2003-01-02"]], r
        r = a.exchange(parse_msg("d", sql), bind_msg("d"), execute_msg(), sync_msg())
        assert r["errors"] == [] and r["rows"] == [["2003-02-01"]], r
        r = b.exchange(bind_msg("d"), execute_msg(), sync_msg())
        assert r["errors"] == [] and r["rows"] == [["2003-01-02"]], r
    finally:
        a.terminate()
        b.terminate()


# --- statement mode -----------------------------------------------------------------------------

def test_statement_mode_runs_single_statements(tusk):
    t = tusk(pools=[txn_pool(2, mode="statement")])
    with t.connect() as c, t.connect() as d:
        for k in range(20):
            assert c.execute("select %s::int + 1", (k,)).fetchone() == (k + 1,)
            assert d.execute("select %s::int * 2", (k,), prepare=True).fetchone() == (2 * k,)
        c.execute("insert into kv values ('stmt-mode', '1')")
        assert d.execute("select v from kv where k = 'stmt-mode'").fetchone() == ("1",)
        c.execute("delete from kv where k = 'stmt-mode'")


@pytest.mark.parametrize("how", ["simple_begin", "extended_begin", "psycopg_implicit_begin"])
def test_statement_mode_refuses_begin_with_a_clear_error(tusk, how):
    """A transaction block cannot be pooled per statement: the client must be told why (an
    ErrorResponse naming statement pooling, from tusk), not just see its connection drop."""
    t = tusk(pools=[txn_pool(2, mode="statement")])
    if how == "psycopg_implicit_begin":
        c = t.connect(autocommit=False)
        try:
            with pytest.raises(psycopg.Error) as ei:
                c.execute("select 1")
                c.execute("select 2")
            msg = str(ei.value)
            assert "transaction blocks are not allowed in statement pooling mode" in msg, msg
            assert_tusk_error(msg)
        finally:
            c.close()
    else:
        w = WireClient(t.port)
        try:
            if how == "simple_begin":
                w.send(pgwire.query_message("begin"))
            else:
                w.send(parse_msg("", "begin") + bind_msg("") + execute_msg() + sync_msg())
            kind, fields = w.expect_error_or_close(timeout=5 * SLOW)
            assert kind == "error", f"tusk closed the connection without an ErrorResponse ({fields})"
            assert "transaction blocks are not allowed in statement pooling mode" in fields["M"], fields
            assert TUSK_ERROR_RE.search(fields["M"]), fields
        finally:
            w.close()
    with t.connect() as c:  # the pool is fine afterwards
        assert c.execute("select 1").fetchone() == (1,)
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


# --- limits ------------------------------------------------------------------------------------

def test_exhausted_pool_errors_after_pool_wait_timeout(tusk):
    t = tusk(pools=[txn_pool(1)], pool_wait_timeout="1s")
    holder = t.connect(autocommit=False)
    try:
        holder.execute("select 1")  # holds the only server: its transaction is open
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as ei:
            with t.connect() as c:
                c.execute("select 1")
        took = time.monotonic() - started
        assert 0.9 <= took <= 4 * SLOW, f"error after {took:.2f}s, pool_wait_timeout is 1s"
        msg = str(ei.value)
        assert_tusk_error(msg)
        assert TUSK_ERROR_RE.search(msg).group(0).startswith("tusk c"), msg
        if ei.value.sqlstate is not None:
            assert ei.value.sqlstate == "53300", msg
        assert "waiting for a server connection" in msg, msg
        assert holder.execute("select 'still here'").fetchone() == ("still here",)
        holder.commit()
        with t.connect() as c:  # the server is free again
            assert c.execute("select 2").fetchone() == (2,)
    finally:
        holder.close()


def test_exhausted_pool_error_sqlstate_on_the_wire(tusk):
    """The same through a raw client, which sees the SQLSTATE whether the error comes at login
    or at the first query."""
    t = tusk(pools=[txn_pool(1)], pool_wait_timeout="1s")
    holder = t.connect(autocommit=False)
    holder.execute("select 1")
    try:
        raw = pgwire.RawClient("127.0.0.1", t.port, timeout=10 * SLOW)
        try:
            raw.send(pgwire.startup_packet({"user": "tusk_trust", "database": TEST_DB}))
            err = None
            while err is None:  # up to ReadyForQuery, or the error that ends the login
                kind, body = raw.read_message()
                if kind == b"E":
                    err = pgwire.parse_error_fields(body)
                elif kind == b"Z":
                    break
            if err is None:
                raw.send(pgwire.query_message("select 1"))
                kind, fields = raw.expect_error_or_close(timeout=10 * SLOW)
                assert kind == "error", fields
                err = fields
            assert err["C"] == "53300", err
            assert TUSK_ERROR_RE.search(err["M"]), err
        except pgwire.Closed:
            pytest.fail("tusk closed without an ErrorResponse")
        finally:
            raw.close()
    finally:
        holder.close()


def test_min_size_keeps_servers_connected(tusk, pg):
    wait_no_backends(pg, user="tusk_solo")
    t = tusk(pools=[txn_pool(5, user="tusk_solo", min_size=3), txn_pool(5)], server_idle_timeout="1s")
    with t.connect(user="tusk_solo") as c:  # the pool exists once someone has used it
        assert c.execute("select 1").fetchone() == (1,)
    wait_until(lambda: count_backends(pg, "tusk_solo") == 3, 10 * SLOW, what="3 servers for min_size 3")
    time.sleep(2.5)  # beyond server_idle_timeout: min_size wins
    assert count_backends(pg, "tusk_solo") == 3
    # servers PostgreSQL closes while they sit idle are noticed and replaced
    pg.execute("select pg_terminate_backend(pid) from pg_stat_activity where usename = 'tusk_solo'")
    wait_until(lambda: count_backends(pg, "tusk_solo") == 3, 6 * SLOW,
               what="min_size 3 restored after PostgreSQL closed the idle servers")
    with t.connect(user="tusk_solo") as c:
        assert c.execute("select current_user").fetchone() == ("tusk_solo",)


def test_idle_transaction_timeout_disconnects_and_frees_the_server(tusk, pg):
    t = tusk(pools=[txn_pool(1)], idle_transaction_timeout="500ms", pool_wait_timeout="5s")
    c = t.connect(autocommit=False)
    try:
        pid = c.execute("select pg_backend_pid() from items where id = 3 for update").fetchone()[0]
        time.sleep(1.2)
        with pytest.raises(psycopg.OperationalError) as ei:
            c.execute("select 1")
        msg = str(ei.value)
        assert "idle-in-transaction timeout" in msg or ei.value.sqlstate == "25P03", msg
        assert_tusk_error(msg)
    finally:
        c.close()
    # rolled back and given to the next client: the same server, lock free, no transaction
    with t.connect() as d:
        assert backend_pid(d) == pid
        assert d.execute("select id from items where id = 3 for update nowait").fetchone() == (3,)
    state = pg.execute("select state from pg_stat_activity where pid = %s", (pid,))
    assert state and state[0][0] == "idle", state


def test_idle_transaction_timeout_sqlstate_on_the_wire(tusk):
    t = tusk(pools=[txn_pool(1)], idle_transaction_timeout="300ms")
    raw = WireClient(t.port)
    try:
        rows, errors = raw.simple_query("begin; select 1")
        assert errors == [] and rows == [["1"]]
        kind, fields = raw.expect_error_or_close(timeout=5 * SLOW)
        assert kind == "error", fields
        assert fields["C"] == "25P03", fields
        assert TUSK_ERROR_RE.search(fields["M"]), fields
    finally:
        raw.close()
    # a client that is merely idle outside a transaction is left alone
    raw = WireClient(t.port)
    try:
        assert raw.simple_query("select 1") == ([["1"]], [])
        time.sleep(0.8)
        assert raw.simple_query("select 2") == ([["2"]], [])
    finally:
        raw.close()


def test_server_lifetime_replaces_servers(tusk, pg):
    wait_no_backends(pg, user="tusk_solo")
    t = tusk(pools=[txn_pool(1, user="tusk_solo"), txn_pool(5)], server_lifetime="1s")
    pids = []
    with t.connect(user="tusk_solo") as c:
        deadline = time.monotonic() + 8 * SLOW
        while time.monotonic() < deadline:
            pids.append(backend_pid(c))
            assert count_backends(pg, "tusk_solo") <= 1
            if len(set(pids)) >= 3:
                break
            time.sleep(0.1)
    assert len(set(pids)) >= 3, f"server_lifetime 1s, but over {len(pids)} transactions saw pids {set(pids)}"
    # no server was replaced early: each pid lasted at least ~0.9 s of 0.1 s steps
    runs = [sum(1 for p in pids if p == q) for q in dict.fromkeys(pids)][1:-1]
    assert all(r >= 5 for r in runs), f"servers replaced too early: {runs}"


def pids_over(c, seconds):
    """The backend pids c's transactions see, one every 0.1 s for seconds."""
    pids, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        pids.append(backend_pid(c))
        time.sleep(0.1)
    return set(pids)


@pytest.mark.tusk_only
def test_a_rules_idle_transaction_timeout_and_server_lifetime(tusk, pg):
    """A rule's own idle_transaction_timeout and server_lifetime (PgBouncer 1.25's per-user
    and per-database ones) win over the top level's; absent, the rule has the top level's; a
    rule's 0 turns it off."""
    wait_no_backends(pg, user="tusk_solo")
    t = tusk(pools=[txn_pool(1, user="tusk_solo", idle_transaction_timeout="300ms", server_lifetime="1s"),
                    txn_pool(1)])
    solo, other = WireClient(t.port, user="tusk_solo"), WireClient(t.port)
    try:
        for c in (solo, other):
            assert c.simple_query("begin; select 1") == ([["1"]], [])
        kind, fields = solo.expect_error_or_close(timeout=5 * SLOW)
        assert kind == "error" and fields["C"] == "25P03", fields
        time.sleep(0.8)
        assert other.simple_query("select 2; commit") == ([["2"]], [])  # the top level's: off
    finally:
        solo.close()
        other.close()
    with t.connect(user="tusk_solo") as c, t.connect() as d:
        assert len(pids_over(c, 3.5 * SLOW)) >= 3  # the rule's 1s
        assert len(pids_over(d, 1.5 * SLOW)) == 1  # the top level's 1h

    t = tusk(pools=[txn_pool(1, user="tusk_solo", idle_transaction_timeout="0s", server_lifetime="0s"), txn_pool(1)],
             idle_transaction_timeout="300ms", server_lifetime="1s")
    solo, other = WireClient(t.port, user="tusk_solo"), WireClient(t.port)
    try:
        for c in (solo, other):
            assert c.simple_query("begin; select 1") == ([["1"]], [])
        kind, fields = other.expect_error_or_close(timeout=5 * SLOW)
        assert kind == "error" and fields["C"] == "25P03", fields
        assert solo.simple_query("select 2; commit") == ([["2"]], [])  # the rule's 0: off
    finally:
        solo.close()
        other.close()
    with t.connect(user="tusk_solo") as c, t.connect() as d:
        assert len(pids_over(d, 3.5 * SLOW)) >= 3  # the top level's 1s
        assert len(pids_over(c, 1.5 * SLOW)) == 1  # the rule's 0: never for age


def test_server_idle_timeout_in_transaction_mode(tusk, pg):
    wait_no_backends(pg, user="tusk_solo")
    t = tusk(pools=[txn_pool(4, user="tusk_solo"), txn_pool(5)], server_idle_timeout="1s")
    conns = [t.connect(user="tusk_solo", autocommit=False) for _ in range(3)]
    try:
        for c in conns:
            c.execute("select 1")  # three open transactions: three servers
        for c in conns:
            c.commit()
        assert count_backends(pg, "tusk_solo") == 3
        # the clients stay connected but idle: they hold no server, so all three close
        wait_until(lambda: count_backends(pg, "tusk_solo") == 0, 10 * SLOW, what="idle servers closed")
        for c in conns:
            assert c.execute("select current_user").fetchone() == ("tusk_solo",)
            c.commit()
    finally:
        for c in conns:
            c.close()
