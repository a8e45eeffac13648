"""TCP keepalive of client and server sockets (tcp_keepalive, tcp_keepidle, tcp_keepintvl,
tcp_keepcnt, tcp_user_timeout: PgBouncer's keys; docs/operations.md). Read from the kernel with
ss: the keepalive timer of an idle socket counts down from its idle time."""

import re
import subprocess
import time

from conftest import TEST_DB, connect

SESSION = [{"database": "*", "user": "*", "service": "main", "mode": "session", "size": 2}]


def keepalive_timers(filter_expr):
    """Seconds left on the keepalive timer of each established socket ss's filter matches;
    None for one without keepalive. A socket that has just sent shows its acknowledgement's
    timer instead: the sockets are let settle a moment first."""
    time.sleep(0.3)
    out = subprocess.run(["ss", "-tnoH", "state", "established", filter_expr], capture_output=True, text=True,
                         check=True).stdout
    timers = []
    for line in out.splitlines():
        # ss writes 6.8 s as 6.800ms, 7 s as 7sec, 0.8 s as 800ms, 100 s as 1min40sec
        m = re.search(r"timer:\(keepalive,(?:(\d+)min)?(?:(\d+)(?:sec|\.))?(?:(\d+)ms)?,", line)
        timers.append(None if not m else
                      int(m.group(1) or 0) * 60 + int(m.group(2) or 0) + int(m.group(3) or 0) / 1000)
    return timers


def test_keepalive_settings_reach_both_sides(tusk, pg):
    t = tusk(pools=SESSION, tcp_keepidle="7s", tcp_keepintvl="3s", tcp_keepcnt=4, tcp_user_timeout="12s")
    with connect(t.port, dbname=TEST_DB, autocommit=True) as c:
        c.execute("select 1")
        # the accepted client socket (tusk's side: source port = tusk's) and tusk's server socket
        client = keepalive_timers(f"( sport = :{t.port} )")
        server = keepalive_timers(f"( dport = :{pg.port} and sport != :{t.port} )")
        assert client and all(x is not None and 0 < x <= 7 for x in client), client
        assert any(x is not None and 0 < x <= 7 for x in server), server


def test_keepalive_off_and_the_defaults(tusk, pg):
    off = tusk(pools=SESSION, tcp_keepalive=False)
    default = tusk(pools=SESSION)
    with connect(off.port, dbname=TEST_DB, autocommit=True) as a, \
            connect(default.port, dbname=TEST_DB, autocommit=True) as b:
        a.execute("select 1")
        b.execute("select 1")
        assert keepalive_timers(f"( sport = :{off.port} )") == [None]
        # by default: the system's idle time on client sockets (Linux: 2 hours) ...
        [x] = keepalive_timers(f"( sport = :{default.port} )")
        assert x is not None and x > 600, x
    # ... and tusk's 30 s on its server sockets (checked through a session that keeps one)
    t = tusk(pools=SESSION)
    with connect(t.port, dbname=TEST_DB, autocommit=True) as c:
        pid = c.execute("select pg_backend_pid()").fetchone()[0]
        port = pg.execute("select client_port from pg_stat_activity where pid = %s", [pid])[0][0]
        [x] = keepalive_timers(f"( sport = :{port} and dport = :{pg.port} )")
        assert x is not None and 0 < x <= 30, x
