"""Helpers shared by the lifecycle tests (reload, shutdown, online restart, logs)."""

import os
import signal
import time

from conftest import SANITIZER_RE, SLOW, to_yaml, wait_until


def rule(user="*", database="*", mode="session", size=20, **kw):
    r = {"database": database, "user": user, "service": "main", "mode": mode, "size": size}
    r.update(kw)
    return r


def write_config(t, pg, pools, listen=None, **extra):
    """Rewrite t's configuration file (for a reload or a second process)."""
    cfg = {
        "listen": listen or [{"host": "127.0.0.1", "port": t.port}],
        "workers": 2,
        "log": {"level": "info", "format": "text", "target": "stderr"},
        "services": {"main": {"hosts": [f"127.0.0.1:{pg.port}"]}},
        "pools": pools,
    }
    cfg.update(extra)
    t.cfg_path.write_text(to_yaml(cfg) + "\n")


def reload(t, expect_ok=True):
    """SIGHUP and wait for the outcome line in the log."""
    ok_before = t.log_text().count("reloaded ")
    bad_before = t.log_text().count("the running configuration stays")
    os.kill(t.pid, signal.SIGHUP)
    if expect_ok:
        wait_until(lambda: t.log_text().count("reloaded ") > ok_before, 10 * SLOW, what="reload done")
    else:
        wait_until(lambda: t.log_text().count("the running configuration stays") > bad_before, 10 * SLOW, what="reload refused")
    time.sleep(0.1)  # workers pick up listener messages asynchronously


def finished(t, timeout):
    """t's process exited by itself within timeout: returns its exit code and detaches it from
    the fixture (which would otherwise report it as died)."""
    rc = t.proc.wait(timeout=timeout)
    t.logf.close()
    assert not SANITIZER_RE.search(t.log_text()), t.log_tail()
    t.proc = None
    return rc
