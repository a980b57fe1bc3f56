"""Stages of one run in several processes at once (a Dask cluster, several hosts): each
process saves only its own spend, so no process's totals overwrite another's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from configs import run_config

from w4s.cost import Spend
from w4s.storage.run_store import RunStore
from w4s.tasks import runtime, stages

ROOT = Path(__file__).resolve().parents[2]
WORKER = """
import sys, time
from w4s.tasks import runtime
from w4s.cost import Spend
with runtime.run_meter(sys.argv[1]) as meter:
    meter.add(Spend(executor_calls=3, prompt_tokens=10, completion_tokens=5))
    time.sleep(1.5)  # both processes hold their meters at once
print(runtime.run_spend(sys.argv[1]).executor_calls)
"""


def test_concurrent_processes_add_up_and_a_later_stage_counts_them(tmp_path):
    cfg = run_config(tmp_path, executor_reply="1", val_size=2, test_size=2, budget_tokens=40)
    run_dir = stages.prepare_run(cfg, tmp_path / "runs", "spread")
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, run_dir], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    total = RunStore(run_dir).spend()
    assert (total.executor_calls, total.tokens) == (6, 30)  # not 3: nothing was overwritten
    assert len(list((Path(run_dir) / "spend").glob("*.json"))) == 2
    # this process's next stage starts from both, so its budget (40 tokens) is nearly spent
    with runtime.run_meter(run_dir) as meter:
        assert meter.spent_before.tokens == 30
        meter.add(Spend(executor_calls=1, prompt_tokens=8, completion_tokens=4))
        assert meter.exceeded
    assert runtime.run_spend(run_dir).executor_calls == 7
