"""The nightly chain collect -> dataset -> fit -> optimize (with the new adapter) -> evaluate,
in-process and routed to deployments, and its rerun after a last-stage failure: nothing
that finished runs again (no executor call, no meta-agent generation, no fit)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from nightly_support import EXECUTOR, build_tiny_base, nightly_data

from w4s.errors import InfrastructureError
from w4s.flows import stage_flows
from w4s.flows.nightly import NightlyConfig, nightly
from w4s.models.factory import clear_model_cache
from w4s.tasks import runtime


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    return build_tiny_base(tmp_path_factory.mktemp("tiny-llama"))


pytestmark = pytest.mark.usefixtures("nightly_home")


def nightly_config(tmp_path: Path, base: Path, **extra) -> NightlyConfig:
    return NightlyConfig.model_validate(nightly_data(tmp_path, base, **extra))


class _Counting:
    """A chat model that counts its `complete` calls into a shared tally."""

    def __init__(self, inner, tally: dict, key: str) -> None:
        self._inner, self._tally, self._key = inner, tally, key

    def complete(self, *args, **kwargs):
        self._tally[self._key] += 1
        return self._inner.complete(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def _count_model_calls(monkeypatch) -> dict:
    tally = {"meta_agent": 0, "executor": 0, "fit": 0, "dataset": 0}
    meta, executor = runtime.meta_agent, runtime.executor
    monkeypatch.setattr(runtime, "meta_agent", lambda cfg: _Counting(meta(cfg), tally,
                                                                     "meta_agent"))
    monkeypatch.setattr(runtime, "executor", lambda cfg: _Counting(executor(cfg), tally,
                                                                   "executor"))
    from w4s.storage import dataset as storage_dataset
    from w4s.tasks import fit as flows_fit

    fit_stage, build = flows_fit.fit_stage, storage_dataset.build_dataset

    def counted_fit(*a, **k):
        tally["fit"] += 1
        return fit_stage(*a, **k)

    def counted_build(*a, **k):
        tally["dataset"] += 1
        return build(*a, **k)

    monkeypatch.setattr(flows_fit, "fit_stage", counted_fit)
    monkeypatch.setattr(storage_dataset, "build_dataset", counted_build)
    return tally


def _files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file of the runs folder and the adapters with its size and mtime."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _task_runs(nightly_id: str, since: float) -> dict[str, str]:
    """name -> state of the task runs about this chain created after `since`, once the
    server has recorded their final states (Prefect records task states asynchronously)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    deadline = time.monotonic() + 30
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=nightly_id)),
                limit=200)
        states = {r.name: r.state_name for r in runs if r.created.timestamp() >= since}
        if time.monotonic() > deadline or not any(
                s in ("Pending", "Running", "Scheduled") for s in states.values()):
            return states
        time.sleep(0.5)


def _latest_artifact(key: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert found, f"no artifact {key}"
    return max(found, key=lambda a: a.created).data


def _artifacts_since(since: float) -> list:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return [a for a in client.read_artifacts(limit=200)
                if a.created.timestamp() >= since]


@pytest.mark.slow
def test_a_rerun_after_the_last_stage_failed_redoes_only_that_stage(tmp_path, tiny_base,
                                                                    monkeypatch):
    cfg = nightly_config(tmp_path, tiny_base)
    tally = _count_model_calls(monkeypatch)
    from w4s.tasks import evaluate as evaluate_work

    real_task, real_evaluate = stage_flows.evaluate_task, evaluate_work.evaluate_workflow

    def lost(*_a, **_k):
        raise InfrastructureError("injected: the evaluation host went away")

    # the last stage fails (and is not retried within the run: retries off for the test)
    monkeypatch.setattr(evaluate_work, "evaluate_workflow", lost)
    monkeypatch.setattr(stage_flows, "evaluate_task", real_task.with_options(retries=0))
    with pytest.raises(InfrastructureError, match="injected"):
        nightly(cfg, nightly_id="n1")
    first = dict(tally)
    print(f"first run: {first}")
    assert first["meta_agent"] > 0 and first["executor"] > 0
    assert first["fit"] == first["dataset"] == 1
    runs = tmp_path / "runs"
    assert not (runs / "n1.nightly.json").exists()
    assert (runs / "n1-optimize" / "summary.json").is_file()  # optimize had finished
    before = _files(tmp_path)

    # the stage works again; count afresh
    monkeypatch.setattr(evaluate_work, "evaluate_workflow", real_evaluate)
    monkeypatch.setattr(stage_flows, "evaluate_task", real_task)
    tally.update(dict.fromkeys(tally, 0))
    clear_model_cache()
    since = time.time()
    result = nightly(cfg, nightly_id="n1")
    print(f"rerun after the last stage failed: {tally}, {time.time() - since:.1f} s")

    # nothing that finished ran again: no model call, no dataset build, no fit
    assert tally == {"meta_agent": 0, "executor": 0, "fit": 0, "dataset": 0}
    changed = {k for k, v in _files(tmp_path).items() if before.get(k) != v}
    # only the evaluation's report and the chain's summary are new (plus the collection's
    # and optimize's summaries, rewritten with the same content)
    assert {k for k in changed if k.startswith("runs/n1-") and "/candidates/" in k} == set()
    assert not any(k.endswith(".parquet") for k in changed)
    assert not any(k.startswith("home/adapters") for k in changed)
    assert "runs/n1-optimize/evaluation.json" in changed and "runs/n1.nightly.json" in changed
    states = _task_runs("n1", since)
    evaluated = [n for n in states if n.startswith("evaluate ")]
    assert evaluated and all(states[n] == "Completed" for n in evaluated), states
    # each finished stage shows as one Cached run, not a second set of runs of its tasks
    others = {n: s for n, s in states.items() if not n.startswith("evaluate ")}
    assert others == {"collect n1": "Cached", "dataset n1": "Cached", "fit n1": "Cached",
                      "gate n1": "Cached", "optimize n1": "Cached"}, others
    # and only the nightly and its evaluate stage published artifacts again
    keys = {a.key for a in _artifacts_since(since)} - {None}  # None: progress bars
    assert keys == {"w4s-nightly-n1", "w4s-evaluation-runs-n1-optimize-evaluation"}, keys

    # the run completes: the adapter it fitted sampled the optimize run's candidates
    assert result["nightly_id"] == "n1" and result["fit_steps"] == 1
    assert Path(result["adapter"], "adapter_config.json").is_file()
    rows = pq.read_table(runs / "n1-optimize" / "trajectories" / "iter-0001.parquet").to_pylist()
    assert {r["meta_adapter"] for r in rows} == {result["adapter"]}
    report = json.loads((runs / "n1-optimize" / "evaluation.json").read_text())
    assert report["split"] == "test" and report["items"] == 2
    assert result["evaluation"]["accuracy"] == report["accuracy"]
    saved = json.loads((runs / "n1.nightly.json").read_text())
    assert saved["adapter_id"] == result["adapter_id"]

    # the night's story: every stage with its time, pool, host and spend; the total is
    # their sum, collect and evaluate included
    assert [(s["stage"], s["state"]) for s in saved["stages"]] == [
        ("collect", "cached"), ("dataset", "cached"), ("fit", "cached"), ("gate", "cached"),
        ("optimize", "cached"), ("evaluate", "ran")]
    assert all(s["pool"] == "in process" and s["host"] == socket.gethostname()
               and s["seconds"] >= 0 for s in saved["stages"])
    spend = {s["stage"]: s["spend"] for s in saved["stages"]}
    optimized = json.loads((runs / "n1-optimize" / "summary.json").read_text())
    assert spend["collect"]["executor_calls"] > 0
    assert spend["optimize"]["executor_calls"] == optimized["executor_calls"]
    assert spend["evaluate"]["executor_calls"] == report["executor_calls"] > 0
    assert spend["fit"]["executor_calls"] == spend["dataset"]["executor_calls"] == 0
    for key in ("executor_calls", "executor_tokens", "meta_agent_tokens"):
        assert saved["spend_total"][key] == sum(s[key] for s in spend.values())
    assert saved["spend_total"]["cost_usd"] == 0.0  # local and scripted models: priced 0.0
    assert saved["figures"]["gate"] == result["gate"]["verdict"] and saved["fit_device"] == "cpu"
    assert spend["gate"]["meta_agent_tokens"] > 0  # the gate's samples are counted too
    assert saved["figures"]["collection_rows"] == result["rows"]

    # ... read back from the server: the summary page with the best workflow's code inline
    page = _latest_artifact("w4s-nightly-n1")
    code = Path(result["best_workflow"]).read_text().strip()
    assert code and code.splitlines()[0] in page
    for part in ("## Stages", "| collect | cached |", "| evaluate | ran |", "**total**",
                 "## Tonight and last night", "| positive share |", "| dataset rows |",
                 "| fit steps |", f"gate: **{result['gate']['verdict']}**",
                 "| evaluation accuracy |"):
        assert part in page, part
    evaluation_page = _latest_artifact("w4s-evaluation-runs-n1-optimize-evaluation")
    assert "accuracy" in evaluation_page and code.splitlines()[0] in evaluation_page


def test_config_errors_are_one_line_before_anything_runs(tmp_path, tiny_base):
    from pydantic import ValidationError

    good = nightly_config(tmp_path, tiny_base).model_dump(mode="json")
    bad_meta = {**good, "optimize": {**good["optimize"], "meta_agent": EXECUTOR}}
    with pytest.raises(ValidationError, match="cannot load an adapter fitted on"):
        NightlyConfig.model_validate(bad_meta)
    with pytest.raises(ValidationError, match="unknown timezone"):
        NightlyConfig.model_validate({**good, "timezone": "Mars/Olympus"})
    with pytest.raises(ValidationError, match="positive seconds"):
        NightlyConfig.model_validate({**good, "timeouts": {"fit": 0}})
    with pytest.raises(ValidationError, match="set by the chain"):
        NightlyConfig.model_validate({**good, "optimize": {**good["optimize"], "meta_agent": {
            **good["optimize"]["meta_agent"], "adapter": "latest"}}})


@pytest.mark.slow
def test_routed_to_deployments_each_stage_runs_as_flow_slash_pool(tmp_path, tiny_base,
                                                                   monkeypatch):
    """`routing: deployments`: collect, fit, optimize and evaluate go through run_deployment
    with JSON parameters only, to `<flow>/<pool>`; their outputs are read back from files.
    (Here the fake `run_deployment` runs the flow in this process, as a worker would.)"""
    import uuid
    from types import SimpleNamespace

    import prefect.deployments
    from prefect.states import Completed

    from w4s.flows.collect import collect
    from w4s.flows.gate import gate
    from w4s.flows.optimize import optimize

    flows = {"collect": collect, "fit": stage_flows.fit, "gate": gate, "optimize": optimize,
             "evaluate": stage_flows.evaluate}
    calls = []

    def run_deployment(name, parameters, flow_run_name, as_subflow, timeout):
        calls.append((name, flow_run_name, timeout))
        params = json.loads(json.dumps(parameters))  # what crosses to another host
        flows[name.split("/")[0]].with_options(flow_run_name=flow_run_name)(**params)
        return SimpleNamespace(id=uuid.uuid4(), name=flow_run_name, state=Completed())

    monkeypatch.setattr(prefect.deployments, "run_deployment", run_deployment)
    # no workers here: the pools and deployments checks pass (tests/flows/test_nightly_ops.py
    # shows them failing)
    from w4s.flows import nightly as chain
    from w4s.flows import nightly_checks

    monkeypatch.setattr(nightly_checks, "deployment_problems", lambda routes: [])
    monkeypatch.setattr(chain, "require_pool", lambda pool: None)
    cfg = nightly_config(tmp_path, tiny_base, routing="deployments", timeouts={"fit": 600})
    result = nightly(cfg, nightly_id="r1")
    assert [(n, r) for n, r, _ in calls] == [
        ("collect/cpu", "collect r1"), ("fit/gpu", "fit r1"), ("gate/gpu", "gate r1"),
        ("optimize/cpu", "optimize r1"), ("evaluate/cpu", "evaluate r1")]
    assert dict((n, t) for n, _, t in calls)["fit/gpu"] == 600
    assert result["fit_steps"] == 1 and result["adapter_id"]
    assert result["gate"]["challenger"] == result["adapter_id"]  # read back from gate.json
    assert result["evaluation"]["items"] == 2
    assert Path(result["best_workflow"]).is_file()


def test_a_gpu_stage_holds_a_slot_of_the_global_limit_while_it_runs():
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name="w4s-test-gpu", limit=1))

    def active() -> int:
        with get_client(sync_client=True) as client:
            return client.read_global_concurrency_limit_by_name("w4s-test-gpu").active_slots

    @flow
    def stage(needed: bool) -> int:
        with stage_flows.gpu_slot(needed, "w4s-test-gpu"):
            return active()

    assert stage(True) == 1 and active() == 0  # held while it ran, released after
    assert stage(False) == 0  # a CPU stage takes none


def test_stage_timeouts_come_from_the_environment(monkeypatch):
    from w4s.errors import ConfigError
    from w4s.tasks.caching import stage_timeout

    monkeypatch.delenv("W4S_STAGE_TIMEOUT_S", raising=False)
    monkeypatch.delenv("W4S_TIMEOUT_FIT_S", raising=False)
    assert stage_timeout("fit") is None
    monkeypatch.setenv("W4S_STAGE_TIMEOUT_S", "600")
    monkeypatch.setenv("W4S_TIMEOUT_FIT_S", "7200")
    assert (stage_timeout("fit"), stage_timeout("execute")) == (7200.0, 600.0)
    monkeypatch.setenv("W4S_TIMEOUT_FIT_S", "two hours")
    with pytest.raises(ConfigError, match="`W4S_TIMEOUT_FIT_S` must be a number of seconds"):
        stage_timeout("fit")


@pytest.mark.parametrize("timezone", ["UTC", "Pacific/Kiritimati"])
def test_the_default_nightly_id_is_the_scheduled_date_and_the_config(tmp_path, tiny_base,
                                                                     timezone):
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from prefect import flow

    from w4s.flows.nightly import default_nightly_id

    cfg = nightly_config(tmp_path, tiny_base, timezone=timezone)

    @flow
    def which() -> str:
        return default_nightly_id(cfg)

    day = datetime.now(ZoneInfo(timezone))
    assert which() == f"nightly-{day:%Y%m%d}-{cfg.config_hash()[:6]}"
    other = nightly_config(tmp_path, tiny_base, timezone=timezone, fit={"base": str(tiny_base)})
    assert other.config_hash() != cfg.config_hash()  # another config, another chain
