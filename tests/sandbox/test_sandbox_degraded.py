"""Without namespaces, cgroups, Landlock or a uid to drop to (non-root, macOS), the sandbox
still runs workflows in separate processes with rlimits and hard timeouts."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from w4s.sandbox import Harness, SandboxSettings, pool
from w4s.sandbox.pool import level_of

BASIC = {"host_root": os.geteuid() == 0, "namespaces": "none", "unshare_prefix": [],
         "cgroup_base": None, "uid": None, "landlock_abi": 0}


@pytest.fixture
def basic_harness(monkeypatch, fake):
    monkeypatch.setattr(pool, "detect_isolation", lambda: dict(BASIC))
    settings = SandboxSettings(item_timeout_s=2.0, concurrency=2)
    with Harness(fake, settings=settings) as h:
        yield h


def test_basic_level_runs_and_reports(basic_harness, make_bench):
    bench = make_bench(3)
    code = "def solver(agent, task):\n    return {'answer': agent.llm('ECHO: ' + task)}\n"
    result = basic_harness.evaluate(code, bench.load(), bench)
    assert result.accuracy == 1.0, [o.error for o in result.outcomes]
    with basic_harness._pool.worker() as w:
        report = dict(w.isolation)
    assert report["namespaces"] == "none" and report["landlock_abi"] == 0
    assert not report["uid_drop"] and not report["cgroup_pids"]
    assert level_of(report) == "basic"


def test_basic_timeout_kills_the_jobs_descendants(basic_harness, make_bench, tmp_path):
    pid_file = tmp_path / "sleeper.pid"
    code = f"""
import os, time
def solver(agent, task):
    pid = os.fork()
    if pid == 0:
        time.sleep(600)
        os._exit(0)
    with open({str(pid_file)!r}, "w") as f:
        f.write(str(pid))
    while True:
        pass
"""
    bench = make_bench(1)
    out = basic_harness.evaluate(code, bench.load(), bench).outcomes[0]
    assert out.error == "timeout after 2s"
    sleeper = int(pid_file.read_text())
    for _ in range(100):
        status = Path(f"/proc/{sleeper}/status")
        if not status.exists() or "State:\tZ" in status.read_text():
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the workflow's forked process {sleeper} survived the timeout")


def test_basic_level_forks_nothing_ahead(basic_harness, make_bench):
    """Jobs here keep the zygote's uid, so a process forked ahead could be stopped by the job
    beside it: each job forks its own, and nothing waits between jobs."""
    bench = make_bench(2)
    slow = "import time\ndef solver(agent, t):\n    time.sleep(0.2)\n    return {'answer': t}\n"
    assert basic_harness.evaluate(slow, bench.load(), bench).accuracy == 1.0
    time.sleep(0.3)  # the zygote reaps the last job after the harness has its result
    for w in basic_harness._pool._all:
        children = Path(f"/proc/{w.proc.pid}/task/{w.proc.pid}/children")
        if children.exists():
            assert children.read_text().split() == []
