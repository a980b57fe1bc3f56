"""The nightly RLAO chain as one Prefect parent flow:
collect -> dataset -> fit -> gate -> optimize (the meta-agent with the champion) -> evaluate.

The fit skips when the dataset (tonight's collection, or the last `dataset.window_nights`
nights') holds no positive reward; the gate promotes the new adapter only when it is not
worse than the champion (flows/gate.py); optimize then runs with the champion, which is the
base model until an adapter has been promoted.

Stages hand each other paths and ids only (a collection id, a dataset file, an adapter
folder, a run folder, a workflow file), so each can run on another host. `routing: local`
(the default) runs every stage in this process as a subflow; `routing: deployments` runs
them as subflow runs of their deployments (`run_deployment`): fit, and collect/optimize
whose meta-agent runs in-process on a GPU, on the `gpu` pool; the rest on `cpu`. A
meta-agent served by vLLM (`kind: openai`) keeps every sampling stage on `cpu`.

Every stage's id derives from the nightly id (by default the scheduled date and the config
hash), so rerunning the same parameters, or `prefect flow-run retry`, finds each stage's
run folder and cached task results and redoes only what had not finished.
"""

from __future__ import annotations

import json
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger, task
from prefect.cache_policies import INPUTS
from pydantic import BaseModel

from w4s.config import CollectConfig, build_config
from w4s.errors import W4SError
from w4s.flows import nightly_report, ui
from w4s.flows.collect import collect
from w4s.flows.gate import GATE_FILE, gate
from w4s.flows.nightly_checks import check_config, require_pool, stage_pool
from w4s.flows.optimize import optimize
from w4s.flows.prefect_setup import route_w4s_logs
from w4s.flows.stage_flows import (
    GPU_LIMIT,
    dataset,
    evaluate,
    fit,
    gpu_slot,
)
from w4s.paths import runs_dir as default_runs_dir
from w4s.stage_config import STAGES, NightlyConfig
from w4s.storage.run_store import atomic_write
from w4s.tasks.caching import RealInputs


def default_nightly_id(config: NightlyConfig) -> str:
    """`nightly-<scheduled date>-<config hash>`: one chain per night and config, the same
    for a retry of the flow run (its scheduled time does not change)."""
    from prefect.runtime import flow_run

    start = flow_run.scheduled_start_time
    day = datetime.fromtimestamp(start.timestamp(), ZoneInfo(config.timezone))
    return f"nightly-{day:%Y%m%d}-{config.config_hash()[:6]}"


@task(name="resolve_adapter", task_run_name="resolve adapter {spec}", cache_policy=INPUTS,
      persist_result=True)
def resolve_adapter(spec: str, nightly_id: str) -> str | None:
    """`latest`, `champion` (or an id) -> the adapter folder, fixed once per night: a rerun
    after this night's fit registered a newer adapter still collects with the same one.
    None: the champion is the base model."""
    from w4s.storage.adapters import resolve_spec

    record = resolve_spec(spec)
    return None if record is None else record.path


# ----------------------------------------------------------------------------- routing


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v
            for k, v in params.items()}


def _run_deployed(name: str, params: dict[str, Any], run_name: str,
                  timeout: float | None) -> Any:
    """Run a deployment as a subflow run and wait; one line when it does not complete."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.states import Cancelled

    run = run_deployment(name, parameters=_jsonable(params), flow_run_name=run_name,
                         as_subflow=True, timeout=timeout)
    state = run.state
    if state is None or not state.is_final():
        with get_client(sync_client=True) as client:  # past the timeout: stop it
            client.set_flow_run_state(run.id, Cancelled(message="nightly stage timeout"),
                                      force=True)
        raise W4SError(f"deployment {name} (flow run {run.name}) did not finish within "
                       f"{timeout:.0f} s; cancelled")
    if not state.is_completed():
        raise W4SError(f"deployment {name} (flow run {run.name}) ended {state.name}: "
                       f"{state.message or 'see its logs'}")
    return run


def _host_of(run: Any) -> str:
    """The host a deployment run ran on: its `host:` tag (each w4s flow tags itself)."""
    tags = getattr(run, "tags", None) or []
    return next((t.removeprefix("host:") for t in tags if t.startswith("host:")), "unknown")


STAGE_FLOWS: dict[str, Any] = {"collect": collect, "dataset": dataset, "fit": fit,
                               "gate": gate, "optimize": optimize, "evaluate": evaluate}
# a finished stage is served from the cache while the files it wrote are there: a retried
# chain shows it Cached and does not run it (nor republish its artifacts) again
STAGE_CACHE = RealInputs(outputs=lambda inputs: inputs["outputs"])


@task(name="stage", task_run_name="{stage} {nightly_id}", cache_policy=STAGE_CACHE,
      persist_result=True)
def run_stage(stage: str, nightly_id: str, params: dict[str, Any], outputs: list[str],
              routing: str, pool: str, timeout: float | None) -> dict[str, Any]:
    """One stage, in-process or as a deployment run; collect and optimize whose models sit
    on a GPU hold a GPU slot (fit and evaluate take theirs themselves). Returns the stage's
    result and where and how long it ran."""
    logger = get_run_logger()
    flow_fn = STAGE_FLOWS[stage]
    started = time.perf_counter()
    here = routing == "local" or stage == "dataset"
    host = socket.gethostname()
    with gpu_slot(pool == "gpu" and stage in ("collect", "optimize"), GPU_LIMIT):
        if here:
            fn = flow_fn.with_options(timeout_seconds=timeout) if timeout else flow_fn
            result = fn.with_options(flow_run_name=f"{stage} {nightly_id}")(**params)
        else:
            name = f"{flow_fn.name}/{pool}"
            require_pool(pool)  # the worker may have gone since the chain started
            logger.info("%s: deployment %s", stage, name)
            run = _run_deployed(name, params, f"{stage} {nightly_id}", timeout)
            host = _host_of(run)
            result = _read_back(stage, params, outputs)
    seconds = time.perf_counter() - started
    where = "in process" if here else f"pool {pool}"
    logger.info("%s done in %.1f s (%s)", stage, seconds, where)
    return {"result": result, "timing": {"stage": stage, "seconds": round(seconds, 1),
                                         "pool": "in process" if here else pool,
                                         "host": host}}


def _stage(stage: str, params: dict[str, Any], outputs: list[str], config: NightlyConfig,
           nightly_id: str, stages: list[dict[str, Any]]) -> Any:
    """Run (or serve from the cache) one stage; its timing goes to `stages`."""
    pool = "cpu" if stage == "dataset" else stage_pool(stage, config)
    state = run_stage(stage, nightly_id, _jsonable(params), [str(p) for p in outputs],
                      config.routing, pool, config.timeouts.get(stage), return_state=True)
    out = state.result()
    cached = state.name == "Cached"
    stages.append(out["timing"] | {"state": "cached" if cached else "ran"})
    return out["result"]


# ----------------------------------------------------------------------------- read back
# A deployment run returns no Python object to the parent: its outputs are read from the
# files it wrote (shared storage when stages run on several hosts).


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise W4SError(f"stage output {str(path)!r} is missing or unreadable: {e}") from e


def _fit_read_back(out: Path) -> dict[str, Any]:
    from w4s.flows.stage_flows import SKIPPED_FILE
    from w4s.storage.adapters import resolve

    if not (out / "metrics.json").is_file() and (out / SKIPPED_FILE).is_file():
        return _read_json(out / SKIPPED_FILE)
    metrics = _read_json(out / "metrics.json")
    curve = metrics["loss_curve"]
    return {"adapter_id": resolve(str(out)).id, "path": str(out.resolve()),
            "steps": metrics["steps"], "final_loss": curve[-1]["loss"] if curve else None,
            "dataset_sha256": metrics["dataset_sha256"], "base_model": metrics["base_model"]}


def _read_back(stage: str, params: dict[str, Any], outputs: list[str]) -> dict[str, Any]:
    if stage == "fit":
        return _fit_read_back(Path(params["out"]))
    if stage == "evaluate":
        return _evaluated(params["report"], params["workflow"])
    return _read_json(Path(outputs[0]))  # collect, gate, optimize: their summary file


# ----------------------------------------------------------------------------- the chain


def as_config(config: NightlyConfig | dict[str, Any]) -> NightlyConfig:
    """The flow's `config` parameter (a dict from a deployment) -> NightlyConfig, or one
    ConfigError line naming the first bad field."""
    return config if isinstance(config, NightlyConfig) else build_config(  # type: ignore
        config, NightlyConfig)  # type: ignore[arg-type]


def nightly_run_name() -> str:
    """`flow_run_name` of the nightly: its nightly id, also when a schedule starts it."""
    from prefect.runtime import flow_run

    params = flow_run.parameters
    if params.get("nightly_id"):
        return str(params["nightly_id"])
    try:
        return default_nightly_id(as_config(params["config"]))
    except Exception:  # noqa: BLE001 - a name must never fail the run; the flow reports
        return "nightly (invalid config)"  # the bad config itself, in one line


@flow(name="nightly", log_prints=True, flow_run_name=nightly_run_name,
      validate_parameters=False)
def nightly(config: NightlyConfig, nightly_id: str | None = None) -> dict[str, Any]:
    """collect -> dataset -> fit -> optimize with the new adapter -> evaluate the best
    workflow. Rerun with the same parameters (or the same `nightly_id`) to resume."""
    from w4s.flows.cli_common import with_resolved_adapter

    route_w4s_logs()
    logger = get_run_logger()
    config = as_config(config)  # parameters are validated here: one line, not a traceback
    nid = nightly_id or default_nightly_id(config)
    check_config(config)  # every stage's inputs and pools, before anything runs
    root = Path(default_runs_dir(config.collect.runs_dir))
    adapters = Path(config.adapters_dir) if config.adapters_dir else root.parent / "adapters"
    logger.info("nightly %s: runs under %s, routing %s", nid, root, config.routing)
    stages: list[dict[str, Any]] = []

    collect_cfg = config.collect
    if collect_cfg.meta_agent.adapter is not None:  # iterated RLAO: last night's adapter
        path = resolve_adapter(collect_cfg.meta_agent.adapter, nid)
        collect_cfg = collect_cfg if path is None else with_resolved_adapter(
            collect_cfg.model_copy(update={
            "meta_agent": collect_cfg.meta_agent.model_copy(update={"adapter": path})}))
    cid = f"{nid}-collect"
    collected = _stage("collect", {"config": collect_cfg, "collection_id": cid},
                       [root / f"{cid}.collection.json"], config, nid, stages)
    if not collected["rows"]:
        raise W4SError(f"collection {cid} produced no trajectory rows; nothing to fit")

    from w4s.storage.collections import last_nights

    window = last_nights(root, config.dataset.window_nights, through=cid)
    data_out = root.parent / "datasets" / f"{nid}.parquet"
    data = _stage("dataset", {
        "runs_dir": str(root), "out": str(data_out),
        "runs": window["runs"], "options": config.dataset, "window": window,
    }, [data_out], config, nid, stages)

    out = adapters / nid
    adapter = _stage("fit", {"dataset": data["path"], "out": str(out), "options": config.fit},
                     [out / "adapter_config.json", out / "metrics.json"], config, nid, stages)
    verdict = _gate_stage(config, nid, root, adapter, out, stages)
    use = _optimize_adapter(adapter, verdict)
    logger.info("optimize with %s", use or "the base model (no adapter)")
    opt_cfg = with_resolved_adapter(config.optimize.model_copy(update={
        "meta_agent": config.optimize.meta_agent.model_copy(update={"adapter": use})}))
    run_id = f"{nid}-optimize"
    summary = _stage("optimize", {"config": opt_cfg, "run_id": run_id},
                     [root / run_id / "summary.json"], config, nid, stages)
    if not summary.get("best_workflow"):
        raise W4SError(f"optimize run {run_id} has no best workflow ({summary['status']})")

    report = str(root / run_id / "evaluation.json")
    scored = _stage("evaluate", {"workflow": summary["best_workflow"],
                                 "options": config.evaluate_config(), "report": report},
                    [report], config, nid, stages)

    finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
    story = nightly_report.build(
        nightly_id=nid, root=root, stages=stages, collected=collected, data=data,
        adapter=adapter, summary=summary, scored=scored, finished_at=finished, gate=verdict)
    result = {
        "nightly_id": nid, "collection_id": cid, "rows": collected["rows"],
        "dataset": data["path"], "dataset_rows": data["rows"],
        "adapter_id": adapter["adapter_id"], "adapter": adapter["path"],
        "fit_steps": adapter["steps"], "final_loss": adapter["final_loss"],
        "fit_skipped": adapter.get("skipped"), "gate": verdict,
        "optimize_adapter": use, "dataset_collections": data.get("collections"),
        "run_id": run_id, "best_workflow": summary["best_workflow"],
        "best_val_accuracy": summary["best_val_accuracy"],
        "test_accuracy": summary["test_accuracy"],
        "evaluation": {k: scored[k] for k in ("benchmark", "split", "items", "accuracy")},
        "evaluation_report": report,
    } | story
    previous = nightly_report.previous_night(root, nid)
    atomic_write(root / f"{nid}.nightly.json", json.dumps(result, indent=1))
    ui.publish_nightly(nid, nightly_report.markdown(story, previous))
    for warning in story["warnings"]:
        logger.warning("nightly %s: %s", nid, warning)
    logger.info("nightly %s: adapter %s, best workflow %s, %s %s accuracy %.4f", nid,
                result["adapter_id"], result["best_workflow"], scored["benchmark"],
                scored["split"], scored["accuracy"])
    return result


def _gate_stage(config: NightlyConfig, nid: str, root: Path, adapter: dict[str, Any],
                out: Path, stages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The gate on tonight's adapter (None: no adapter, or the gate is off). Its sample
    runs in `<storage>/gates/`, apart from the runs a dataset reads."""
    if adapter.get("skipped") or not config.gate.enabled:
        return None
    env = CollectConfig.model_validate({
        **config.collect.model_dump(mode="json"),
        "meta_agent": config.optimize.meta_agent.model_dump(mode="json")})
    return _stage("gate", {"challenger": adapter["adapter_id"], "environment": env,
                           "options": config.gate, "runs_dir": str(root.parent / "gates"),
                           "base": config.fit.base},
                  [out / GATE_FILE], config, nid, stages)


def _optimize_adapter(adapter: dict[str, Any], verdict: dict[str, Any] | None) -> str | None:
    """The adapter optimize runs with: the champion after the gate (the challenger when
    promoted), tonight's adapter when the gate is off, the champion when nothing was fitted."""
    from w4s.storage.adapters import BASE, resolve

    if verdict is None and not adapter.get("skipped"):
        return adapter["path"]
    if verdict is None:
        from w4s.flows.gate import champion_folder

        return champion_folder()
    keep = verdict["challenger"] if verdict["verdict"] == "promoted" else verdict["champion"]
    return None if keep == BASE else resolve(keep).path


def _evaluated(report: str, workflow: str) -> dict[str, Any]:
    doc = _read_json(Path(report))
    return {k: doc[k] for k in ("benchmark", "split", "items", "accuracy", "executor_calls",
                                "cost_usd", "budget_exceeded")} | {"report": report,
                                                                   "workflow": workflow}


def load_nightly_config(path: str) -> NightlyConfig:
    """A YAML/TOML file of NightlyConfig fields -> the config, or a one-line ConfigError."""
    from w4s.config import load_config_file

    return load_config_file(path, None, NightlyConfig)  # type: ignore[arg-type]


__all__ = ["STAGES", "NightlyConfig", "default_nightly_id", "load_nightly_config", "nightly"]
