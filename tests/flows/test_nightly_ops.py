"""The operator's side of the nightly: its run name under a deployment, mistakes that fail
in seconds with one line (before any stage or folder), the summary page's figures and
warnings, and `w4s runs` telling episodes and failed runs apart."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from nightly_support import nightly_data

from w4s.errors import ConfigError
from w4s.flows import nightly_checks, nightly_report
from w4s.flows.nightly import NightlyConfig, nightly


@pytest.fixture
def base(tmp_path) -> Path:
    """A folder that passes for a model base (the checks read only its config.json)."""
    folder = tmp_path / "base"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("W4S_HOME", str(tmp_path / "home"))


def _routed(tmp_path: Path, base: Path, **extra) -> dict:
    return nightly_data(tmp_path, base, routing="deployments", **extra)


def test_the_nightly_run_under_a_deployment_is_named_after_its_nightly_id_and_fails_fast_without_a_worker(  # noqa: E501
        tmp_path, base):
    """A deployment run (what a schedule creates) gets the nightly id as its name, and with
    no worker polling the pools it fails in its first step, in one line naming the pool and
    the command that starts a worker, before any stage or run folder."""
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow

    data = _routed(tmp_path, base)
    cfg = NightlyConfig.model_validate(data)
    deployment_id = nightly.to_deployment(name="ops-test").apply()
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(deployment_id,
                                                     parameters={"config": data})
    started = time.monotonic()
    state = run_flow(nightly, flow_run=run, parameters={"config": data}, return_type="state")
    took = time.monotonic() - started
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run.id)
    day = datetime.now(timezone.utc)
    assert run.name == f"nightly-{day:%Y%m%d}-{cfg.config_hash()[:6]}"
    assert state.is_failed()
    assert "no worker polls work pool 'cpu'" in state.message or \
        "work pool 'cpu' does not exist" in state.message, state.message
    assert "`prefect worker start --pool cpu`" in state.message
    assert "\n" not in state.message.strip()
    assert not (tmp_path / "runs").exists()  # nothing ran, no empty folder
    print(f"failed in {took:.1f} s: {state.message}")


def test_a_pool_without_a_live_worker_is_named_with_its_start_command(base, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="ops-idle", type="process"))
        client.create_work_pool(WorkPoolCreate(name="ops-live", type="process"))
        client.send_worker_heartbeat("ops-live", "worker-1")
        assert nightly_checks.pool_problem(client, "ops-live") is None
        assert nightly_checks.pool_problem(client, "ops-idle") == (
            "no worker polls work pool 'ops-idle': start one with "
            "`prefect worker start --pool ops-idle`")
        assert "work pool 'gpus' does not exist" in nightly_checks.pool_problem(client, "gpus")
    with pytest.raises(ConfigError, match="ops-idle"):
        nightly_checks.require_pool("ops-idle")
    nightly_checks.require_pool("ops-live")  # a worker polls it: no error


@pytest.mark.parametrize(("change", "expected"), [
    ({"collect": {"meta_agent": {"kind": "transformers", "model": "BASE",
                                 "adapter": "no-such-adapter"}}},
     "`collect.meta_agent.adapter`"),
    ({"optimize": {"benchmark": "gsm8k", "seed_workflow": "cot",
                   "benchmark_options": {"path": "/nope/gsm8k.jsonl"}}},
     "`optimize.benchmark_options.path`: `/nope/gsm8k.jsonl`: file not found"),
    ({"collect": {"benchmark": "gsm8k", "seed_workflow": "cot",
                  "benchmark_options": {"path": "/nope/c.jsonl"}}},
     "`collect.benchmark_options.path`: `/nope/c.jsonl`: file not found"),
    ({"evaluate": {"benchmark": "file:/nope/held-out.jsonl"}},
     "`evaluate.benchmark`: file '/nope/held-out.jsonl' not found"),
])
def test_each_bad_input_fails_the_chain_before_its_first_stage(tmp_path, base, change,
                                                               expected):
    from w4s.config import deep_merge

    change = json.loads(json.dumps(change).replace('"BASE"', json.dumps(str(base))))
    data = deep_merge(nightly_data(tmp_path, base), change)
    with pytest.raises(ConfigError) as err:
        nightly(NightlyConfig.model_validate(data), nightly_id="bad")
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "runs").exists()


def test_a_bad_field_is_one_line_from_the_flow_itself(tmp_path, base):
    """What a deployment passes (a dict) is validated in the flow: one line, not a
    traceback, and no folder."""
    data = nightly_data(tmp_path, base, timezone="Mars/Olympus")
    with pytest.raises(ConfigError, match=r"^`timezone`: Value error, unknown timezone"):
        nightly(data, nightly_id="bad")
    gone = nightly_data(tmp_path, tmp_path / "no-base")
    gone["optimize"]["meta_agent"]["model"] = str(tmp_path / "no-base")
    with pytest.raises(ConfigError, match="`fit.base`: .* is not a model folder"):
        nightly(gone, nightly_id="bad")
    assert not (tmp_path / "runs").exists()


def test_a_new_run_whose_benchmark_data_is_missing_leaves_no_folder(tmp_path):
    from w4s.config import OptimizeConfig
    from w4s.tasks.stages import prepare_run

    cfg = OptimizeConfig.model_validate({"benchmark": "gsm8k", "benchmark_options": {
        "path": str(tmp_path / "missing.jsonl")}, "seed_workflow": "cot"})
    with pytest.raises(Exception, match="file not found"):
        prepare_run(cfg, tmp_path / "runs", "r1")
    assert not (tmp_path / "runs" / "r1").exists()


# ----------------------------------------------------------------------- the summary page


def _doc(nid: str, *, rewards: dict, curve: list, stages: list, finished: str) -> dict:
    return {"nightly_id": nid, "finished_at": finished, "stages": stages,
            "spend_total": nightly_report.add_spend(*(s["spend"] for s in stages)),
            "figures": {"collection_rows": 8, "positive_share": 0.0, "dataset_rows": 8,
                        "fit_steps": 3, "first_loss": curve[0]["loss"],
                        "final_loss": curve[-1]["loss"], "gate": "no gate",
                        "best_val_accuracy": 0.5, "test_accuracy": 0.25,
                        "evaluation_accuracy": 0.3, "seconds": 12.0, "cost_usd": 0.0125},
            "reward_histogram": rewards, "fit_device": "cpu", "gate": None,
            "evaluation": {"benchmark": "arithmetic", "split": "test", "items": 4,
                           "accuracy": 0.3},
            "best_workflow": "/runs/x/workflows/best.py",
            "best_workflow_code": "def solver(agent, task):\n    return agent(task)\n",
            "warnings": nightly_report._warnings(0.0, rewards, curve)}


def test_the_summary_page_puts_last_night_beside_tonight_and_warns(tmp_path):
    spend = {"executor_calls": 3, "executor_tokens": 100, "meta_agent_tokens": 50,
             "cost_usd": 0.0125}
    stages = [{"stage": s, "state": "ran", "seconds": 2.4, "pool": "cpu", "host": "box",
               "spend": spend if s in ("collect", "evaluate") else dict(nightly_report.NO_SPEND)}
              for s in ("collect", "dataset", "fit", "optimize", "evaluate")]
    last = _doc("nightly-20261203-aaaaaa", rewards={"0.5": 2}, stages=stages,
                curve=[{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}],
                finished="2026-12-03T02:40:00+00:00")
    last["figures"]["final_loss"] = 1.0
    (tmp_path / "nightly-20261203-aaaaaa.nightly.json").write_text(json.dumps(last))
    tonight = _doc("nightly-20261204-aaaaaa", rewards={"-0.5": 6, "0.0": 2}, stages=stages,
                   curve=[{"step": 1, "loss": 1.0}, {"step": 2, "loss": 1.5}],
                   finished="2026-12-04T02:40:00+00:00")
    (tmp_path / "nightly-20261204-aaaaaa.nightly.json").write_text(json.dumps(tonight))

    previous = nightly_report.previous_night(tmp_path, tonight["nightly_id"])
    assert previous["nightly_id"] == "nightly-20261203-aaaaaa"
    assert tonight["spend_total"] == {"executor_calls": 6, "executor_tokens": 200,
                                      "meta_agent_tokens": 100, "cost_usd": 0.025}
    page = nightly_report.markdown(tonight, previous)
    assert "**warning:** the fit learned from nothing" in page
    assert "**warning:** the fit's loss rose: 1.0000 -> 1.5000" in page
    assert "| final loss | 1.5 | 1 |" in page  # tonight beside last night
    assert "last night (nightly-20261203-aaaaaa)" in page
    assert "| **total** | | 12.0 | | | 6 | 200 | 100 | 0.025 |" in page
    assert "```python\ndef solver(agent, task):" in page
    assert "| -0.5 | 6 |" in page
    assert nightly_report._warnings(0.5, {"1.0": 3}, [{"loss": 2.0}, {"loss": 1.0}]) == []


def test_unknown_prices_stay_unknown_in_the_total():
    known = {"executor_calls": 1, "executor_tokens": 10, "meta_agent_tokens": 0,
             "cost_usd": 0.5}
    unknown = known | {"cost_usd": None}
    assert nightly_report.add_spend(known, unknown)["cost_usd"] is None


# ----------------------------------------------------------------------- w4s runs


def test_w4s_runs_shows_collection_episodes_and_failed_runs(tmp_path, monkeypatch):
    """An episode has no summary of its own: its collection says how it ended. A run
    whose flow failed says failed and why, not "running or interrupted"."""
    from w4s.config import OptimizeConfig
    from w4s.errors import InfrastructureError
    from w4s.flows.optimize import optimize
    from w4s.storage.query import list_runs

    runs = tmp_path / "runs"
    cfg = {"benchmark": "arithmetic", "seed_workflow": "direct", "val_size": 2,
           "test_size": 2, "runs_dir": str(runs), "executor": {"kind": "scripted",
                                                                "replies": ["7"]}}

    def down(*_a, **_k):
        raise InfrastructureError("executor endpoint down")

    from w4s.flows import optimize as flows_optimize

    monkeypatch.setattr(flows_optimize, "seed", down)
    with pytest.raises(InfrastructureError):
        optimize(OptimizeConfig.model_validate(cfg), run_id="broken")
    from w4s.storage.run_store import RunStore
    from w4s.tasks.stages import prepare_run

    for eid in ("c1-arithmetic-e000", "c1-arithmetic-e001", "c1-arithmetic-e002"):
        prepare_run(OptimizeConfig.model_validate(cfg), runs, eid)
    (runs / "c1.collection.json").write_text(json.dumps({
        "collection_id": "c1", "status": "completed",
        "completed": ["c1-arithmetic-e000"],
        "failed": {"c1-arithmetic-e001": "W4SError: no candidate"}}))
    status = {r["run_id"]: r["status"] for r in list_runs(runs)}
    assert status["broken"] == "failed: InfrastructureError: executor endpoint down"
    assert status["c1-arithmetic-e000"] == "collected (c1, completed)"
    assert status["c1-arithmetic-e001"] == "failed (c1): W4SError: no candidate"
    assert status["c1-arithmetic-e002"] == "running or interrupted"
    assert RunStore(runs / "broken").failure()["status"] == "failed"
