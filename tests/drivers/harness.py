"""Runs the driver suites (node-postgres: node/suite.js, pgjdbc: jdbc/DriverSuite.java, asyncpg:
asyncpg_suite.py) against one target and judges a target's answers against PostgreSQL's own.
Used by tests/integration/test_drivers.py and bench/drivers.sh (bench/drivers_pass.py).

A suite prints one JSON line per case, {"case": NAME, "out": ...}. When its watchdog finds a
connection stalled for 10 s it prints {"stall": CONNECTION, "doing": WHAT, ...} and exits 3: the
case in progress gets that as its answer and the suite is run again for the cases after it."""

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "node"
JDBC_JAR = os.environ.get("PGJDBC_JAR", "/usr/share/java/postgresql.jar")
PYTHON = "/usr/bin/python3"

# The cases of each suite, in the order the suite runs them (test_drivers checks this against
# each suite's --list).
CASES = {
    "node": ["named_prepared", "long_names", "named_after_failure", "unnamed_prepared", "pool_larger_than_size", "cursor_in_transaction",
             "cursor_autocommit", "query_stream", "disconnect_mid_cursor", "error_mid_query", "cancel",
             "connect_end", "tls", "named_schema_change", "multi_statement", "notices_and_notifications",
             "types_and_sizes", "startup_settings", "named_set_and_savepoints", "savepoints"],
    "jdbc": ["concurrent_threshold_1_and_5", "schema_change_threshold_1", "schema_change_threshold_5",
             "fresh_prepare_after_schema_change", "schema_change_in_transaction", "large_object", "copy_manager",
             "batch", "autosave", "fetch_size", "callable", "startup_options", "read_only_and_timeout",
             "listen_notify", "prepared_set_and_reset", "generated_keys_and_types"],
    "asyncpg": ["concurrent_statement_cache", "schema_change_statement_cache", "schema_change_in_transaction",
                "fresh_prepare_after_schema_change", "type_dropped_and_recreated", "pool_larger_than_size",
                "lock_taken_in_function", "prepared_statements_view", "binary_copy", "executemany_and_cursors",
                "types_and_codecs", "transactions_and_savepoints", "notices_listeners_and_timeouts",
                "server_settings_at_startup"],
    "psycopg": ["pipeline_mode", "prepared_across_schema_change", "named_cursors", "copy_rows", "two_phase_commit",
                "binary_types_notices_notifies"],
}


def install_node_modules():
    """npm ci into tests/drivers/node when node_modules is missing or older than the lock file."""
    p = subprocess.run([str(NODE_DIR / "install.sh")], capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise RuntimeError(f"tests/drivers/node/install.sh exited {p.returncode}: {p.stderr[-2000:]}")


def jdbc_classes(src=HERE / "jdbc" / "DriverSuite.java"):
    """A Java source (DriverSuite.java unless told) compiled once (java would compile the source
    again on every run, seconds each on a busy machine): a directory of classes named by the
    source's hash."""
    d = Path(tempfile.gettempdir()) / f"tusk-drivers-jdbc-{hashlib.sha1(src.read_bytes()).hexdigest()[:16]}"
    if not (d / f"{src.stem}.class").exists():
        tmp = Path(tempfile.mkdtemp(prefix="tusk-drivers-jdbc-"))
        subprocess.run(["javac", "-nowarn", "-cp", JDBC_JAR, "-d", str(tmp), str(src)], check=True, capture_output=True,
                       text=True, timeout=300)
        try:
            tmp.rename(d)
        except OSError:  # another run made it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
    return d


def jdbc_program(src, *args, timeout=120):
    """A one-class Java program (tests/integration/jdbc/) run with pgjdbc: its output lines.
    Fails (AssertionError, with the end of its stderr) when it cannot run or exits non-zero."""
    why = available("jdbc")
    assert not why, why
    p = subprocess.run(["java", "-cp", f"{JDBC_JAR}:{jdbc_classes(src)}", src.stem, *map(str, args)],
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout.split("\n")[:-1]


def command(suite, host, port, db, user, extra=()):
    if suite == "node":
        return ["node", str(NODE_DIR / "suite.js"), *extra]
    if suite == "jdbc":
        return ["java", "-cp", f"{JDBC_JAR}:{jdbc_classes()}", "DriverSuite", host, str(port), db, user, *extra]
    if suite == "asyncpg":
        return [PYTHON, str(HERE / "asyncpg_suite.py"), str(port), *extra]
    if suite == "psycopg":
        return [PYTHON, str(HERE / "psycopg_suite.py"), str(port), *extra]
    raise ValueError(suite)


def environment(host, port, db, user, tag, one_db=None, tls_port=None, tls_ca=None, tls_all=False, watch_ports=None):
    """tls_all: every connection of the suite to its target over TLS, checked against tls_ca.
    watch_ports: the servers behind a target that may run a query on any of them (a
    read-write-split pool), on 127.0.0.1: where a suite looks for a query it waits to see run."""
    env = dict(os.environ, PGHOST=host, PGPORT=str(port), PGUSER=user, PGDATABASE=db, TAG=tag,
               PGSSLMODE="disable", ONE_DATABASE=one_db or db)
    env.pop("TLS_PORT", None)
    env.pop("TLS_ALL", None)
    env.pop("WATCH_PORTS", None)
    if watch_ports:
        env.update(WATCH_PORTS=",".join(str(p) for p in watch_ports))
    if tls_port:
        env.update(TLS_PORT=str(tls_port), TLS_CA=str(tls_ca))
    if tls_all:
        env.update(TLS_ALL="1", TLS_CA=str(tls_ca))
    return env


def list_cases(suite):
    p = subprocess.run(command(suite, "127.0.0.1", 1, "x", "x", ["--list"]), capture_output=True, text=True,
                       timeout=120, check=True)
    return p.stdout.split()


def run_suite(suite, host, port, db, user, tag, cases=None, one_db=None, tls_port=None, tls_ca=None,
              timeout=600, tls_all=False, watch_ports=None):
    """{case: out} for every case (a stalled case's out is the watchdog's report; a case the suite
    never answered gets {"no answer": ...})."""
    todo = list(cases or CASES[suite])
    env = environment(host, port, db, user, tag, one_db, tls_port, tls_ca, tls_all, watch_ports)
    results = {}
    while todo:
        p = subprocess.run(command(suite, host, port, db, user, todo), env=env, capture_output=True, text=True,
                           timeout=timeout)
        stall = None
        for line in p.stdout.splitlines():
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if "case" in d:
                results[d["case"]] = d["out"]
            elif "stall" in d:
                stall = d
        left = [c for c in todo if c not in results]
        if not left:
            break
        results[left[0]] = {"stall": stall} if stall else {
            "no answer": f"exit {p.returncode}; stderr: {p.stderr[-2000:]}"}
        todo = left[1:]
    return results


# ---- judging -----------------------------------------------------------------------------------

def _rows_ok(out):
    return isinstance(out, dict) and out.get("bad") in (0, []) and not out.get("final_bad") and \
        not out.get("failures") and "stall" not in out


# What PostgreSQL gives, checked where a case's own answer can be judged without a second target.
def direct_problem(suite, case, out):
    """Why PostgreSQL's own answer to a case is not what the suite expects (the suite is wrong,
    not the pooler), or None."""
    if isinstance(out, dict) and ("stall" in out or "exception" in out or "no answer" in out):
        return f"{suite}/{case} failed against PostgreSQL itself: {out}"
    if case in ("named_prepared", "unnamed_prepared", "cursor_in_transaction", "concurrent_statement_cache",
                "concurrent_threshold_1_and_5") and not _rows_ok(out):
        return f"{suite}/{case}: wrong results against PostgreSQL itself: {out}"
    return None


def run_reference(suite, host, port, db, user, tag):
    """run_suite against PostgreSQL itself, the reference every target is judged by: {case: out},
    run again (up to three runs in all) while a case fails there (direct_problem).
    node-postgres's cancel does not wait for its cancel connection to close, and PostgreSQL's
    postmaster signals the backend twice (its process, then its process group): on a loaded
    machine (the ASan pass) the late second signal has cancelled the statement after the
    pg_sleep, against PostgreSQL itself, once in a run and in two runs in a row in one CI pass
    (test_drivers_latin1.py, session-node). The suite now leaves the backend 200 ms idle after
    each cancel (an idle backend ignores the signal). A case that fails three times stays
    failed: the caller asserts on it."""
    for _ in range(3):
        out = run_suite(suite, host, port, db, user, tag=tag)
        if not any(direct_problem(suite, c, o) for c, o in out.items()):
            break
    return out


# Cases where a pooler may do better than PostgreSQL: the driver was told (result columns and
# types, parameter types) nothing that stopped being true, the pooler prepared the statement again
# and the answer is the right one. For these a target's answer at each key passes when it equals
# PostgreSQL's or the right answer (never any other row).
HEALABLE = {
    # node-postgres describes the portal on every execution, so it decodes what it is sent.
    ("node", "named_schema_change"): {
        "add_column": [[{"id": 1, "a": 10, "c": "new"}]] * 2,
        "int_to_bigint": [[{"id": 1, "a": "10", "c": "new"}]] * 2,
    },
    # parameters and result are text; the re-created type is used only inside the statement.
    ("asyncpg", "type_dropped_and_recreated"): {
        "fetch": [[{"m": "calm"}]] * 2,
        "executemany": 2,
        "savepoint": [{"m": "cross"}],
        "after_savepoint": [{"v": 1}],
    },
}


def judge(suite, case, direct, target):
    """None when target's answer passes against PostgreSQL's (direct), else why not."""
    if case == "tls" and direct == "not configured":
        want = {"encrypted": True, "sum": 190, "big": 160000}
        return None if target in (want, "not configured") else f"tls: {target}, want {want}"
    heal = HEALABLE.get((suite, case))
    if heal and isinstance(direct, dict) and isinstance(target, dict) and set(direct) == set(target):
        bad = []
        for k in direct:
            if target[k] == direct[k]:
                continue
            right = heal.get(k)
            if isinstance(right, list) and isinstance(target[k], list) and len(right) == len(target[k]) \
                    and all(t in (r, d) for t, r, d in zip(target[k], right, direct[k])):
                continue
            if right is not None and target[k] == right:
                continue
            bad.append(f"{k}: {target[k]} (PostgreSQL: {direct[k]}; right answer: {right})")
        return "; ".join(bad) or None
    if target == direct:
        return None
    return f"through the pooler: {json.dumps(target)}\n  PostgreSQL direct: {json.dumps(direct)}"


def available(suite):
    """Why a suite cannot run on this machine, or None."""
    if suite == "node" and not shutil.which("node"):
        return "node is not installed (scripts/install-deps.sh)"
    if suite == "jdbc" and not (shutil.which("java") and shutil.which("javac") and Path(JDBC_JAR).exists()):
        return f"java, javac or {JDBC_JAR} missing (scripts/install-deps.sh)"
    return None
