"""A process worker on a cpu pool picks up a scheduled run of a deployment (the evaluate
flow, from this checkout) and completes it, in under a minute."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from w4s.benchmarks import get_benchmark

ROOT = Path(__file__).resolve().parents[2]
POOL = "w4s-test-cpu"  # not `cpu`: the deploy test's nightly schedule targets that one


@pytest.mark.slow
def test_a_process_worker_runs_a_scheduled_deployment_run(tmp_path):
    from prefect import Flow
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    from w4s.flows.deploy_cmd import _ensure_pool

    workflow = tmp_path / "direct.py"
    workflow.write_text(get_benchmark("arithmetic").seed_workflows()["direct"])
    report = tmp_path / "report.json"
    with get_client(sync_client=True) as client:
        assert _ensure_pool(client, POOL, "process") == f"work pool {POOL}: created (process)"
    flow = Flow.from_source(str(ROOT), "flows/stage_flows.py:evaluate")
    deployment_id = flow.deploy(
        name="worker-test", work_pool_name=POOL, print_next_steps=False, ignore_warnings=True,
        parameters={"workflow": str(workflow), "report": str(report), "options": {
            "benchmark": "arithmetic", "split": "validation", "val_size": 2, "test_size": 2,
            "concurrency": 1, "use_cache": False,
            "executor": {"kind": "scripted", "replies": ["7"]}}})
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(deployment_id)  # scheduled for now
        assert run.state.is_scheduled()
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(),
           "PREFECT_HOME": str(tmp_path / "prefect"), "W4S_HOME": str(tmp_path / "home"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
           "PREFECT_WORKER_QUERY_SECONDS": "1"}
    prefect = str(Path(sys.executable).with_name("prefect"))
    started = time.monotonic()
    worker = subprocess.run([prefect, "worker", "start", "--pool", POOL, "--run-once"],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run.id).state
    assert state.is_completed(), (state, worker.stdout[-2000:], worker.stderr[-2000:])
    assert elapsed < 60, f"picked up and completed in {elapsed:.1f} s"
    doc = json.loads(report.read_text())
    assert doc["items"] == 2 and doc["split"] == "validation"
    print(f"worker: scheduled run picked up and completed in {elapsed:.1f} s")
