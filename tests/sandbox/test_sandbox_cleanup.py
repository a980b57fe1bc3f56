"""SIGTERM (how Prefect cancels a flow run and an operator stops a worker) and SIGKILL of
the process using the sandbox end every process it started, and remove its cgroups."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(),
                                reason="needs Linux /proc")

REPO = Path(__file__).resolve().parents[2]

# a harness whose items fork a grandchild, make one executor call, then compute (sleep)
SCRIPT = r'''
import sys, time
from w4s.protocols import Completion
from w4s.sandbox import Harness, SandboxSettings
from w4s.benchmarks.base import Item

class Hang:
    model_id = "hang"
    def complete(self, messages, **kw):
        sys.stdout.write("STARTED\n")  # one write: two items' calls never interleave
        sys.stdout.flush()
        return Completion(texts=("x",), prompt_tokens=1, completion_tokens=1, model="hang")

CODE = """
import os, time
def solver(agent, task):
    if os.fork() == 0:
        os.setsid()
        time.sleep(300)
        os._exit(0)
    agent.llm("started")
    time.sleep(300)
    return {"answer": "late"}
"""
h = Harness(Hang(), settings=SandboxSettings(item_timeout_s=300, concurrency=2))
h.evaluate_many([CODE, CODE], [Item(id="a", question="q", gold="g")], None)
'''


def _processes_of(owner: int) -> list[str]:
    marker = re.compile(rb'"owner": %d\b' % owner)
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if marker.search(cmd):
                found.append(f"{d.name}: {cmd[:80]!r}")
    return found


def _cgroups_of(owner: int) -> list[str]:
    return [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/w4s/{owner}-*")] + [
        str(p) for p in Path("/sys/fs/cgroup").glob(f"w4s/{owner}-*")]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_signal_mid_item_leaves_no_process_and_no_cgroup(sig):
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().strip() == "STARTED"
        time.sleep(0.5)  # both items are running; each forked a daemon
        assert len(_processes_of(proc.pid)) >= 4, "expected zygotes and jobs to be running"
        proc.send_signal(sig)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while (_processes_of(proc.pid) or _cgroups_of(proc.pid)) and \
                time.monotonic() < deadline:
            time.sleep(0.1)
        assert _processes_of(proc.pid) == [], "processes left after the signal"
        assert _cgroups_of(proc.pid) == [], "cgroups left after the signal"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
