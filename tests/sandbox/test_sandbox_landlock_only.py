"""Landlock without namespaces or a uid drop (e.g. an unprivileged container): a partial
level, yet writes and reads are still confined and workflows still run."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from w4s.sandbox import Harness, SandboxSettings, pool
from w4s.sandbox.pool import level_of
from w4s.sandbox.worker import landlock_abi


@pytest.fixture
def landlock_harness(monkeypatch, fake):
    if landlock_abi() == 0:
        pytest.skip("no Landlock here")
    only = {"host_root": os.geteuid() == 0, "namespaces": "none", "unshare_prefix": [],
            "cgroup_base": None, "uid": None, "landlock_abi": landlock_abi()}
    monkeypatch.setattr(pool, "detect_isolation", lambda: dict(only))
    with Harness(fake, settings=SandboxSettings(item_timeout_s=5.0, concurrency=1)) as h:
        yield h


def test_landlock_only_confines_reads_and_runs_workflows(landlock_harness, make_bench):
    secret = f"sk-canary-{secrets.token_hex(8)}"
    canary = Path("/var/tmp") / f"w4s-canary-{secret}.txt"
    canary.write_text(secret)
    canary.chmod(0o644)
    code = f"""
def solver(agent, task):
    try:
        stolen = open({str(canary)!r}).read()
    except OSError as e:
        stolen = type(e).__name__
    return {{"answer": agent.llm("ECHO: " + stolen) + " " + agent.execute_code("print(2 + 2)")}}
"""
    try:
        bench = make_bench(1)
        out = landlock_harness.evaluate(code, bench.load(), bench).outcomes[0]
    finally:
        canary.unlink()
    assert out.error is None, out.error
    assert out.answer == "PermissionError 4"
    with landlock_harness._pool.worker() as w:
        report = dict(w.isolation)
    assert report["reads_confined"] and "/proc" not in report["readable"]
    assert level_of(report) == "partial"
