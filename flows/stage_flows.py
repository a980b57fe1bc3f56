"""The nightly chain's own stages as Prefect flows: `dataset`, `fit` and `evaluate`.

Each is a flow so it can be a deployment of its own (`fit` on the `gpu` pool, `evaluate`
on `cpu`) and a subflow of `nightly`; each takes its stage's config (w4s.stage_config) as
`options`, so the Prefect UI's form is the config's schema, and returns plain values
(paths, ids, numbers). The work is the stage functions of tasks/ (`w4s.tasks.dataset.build`,
`w4s.tasks.fit.fit_stage`, `w4s.tasks.evaluate.evaluate_workflow`), callable without
Prefect; the task wrappers here add retries, caching, names and the UI (flows/ui.py).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from w4s.flows.prefect_setup import route_w4s_logs
from w4s.stage_config import DatasetConfig, EvaluateConfig, FitConfig, on_gpu
from w4s.tasks import evaluate as evaluate_work
from w4s.tasks import fit as fit_work
from w4s.tasks.caching import RealInputs, file_digest, stage_timeout
from w4s.tasks.dataset import dataset as dataset_task
from w4s.tasks.retry import backoff, retry_unless_final

GPU_LIMIT = "w4s-gpu"  # the global concurrency limit `w4s deploy` creates (deploy_cmd)


@contextlib.contextmanager
def gpu_slot(needed: bool, limit: str = GPU_LIMIT) -> Iterator[None]:
    """Hold one slot of the global GPU limit while a GPU stage runs, so two never share
    one GPU. Without the limit (not deployed: `w4s deploy` creates it) nothing waits."""
    if not needed:
        yield
        return
    from prefect.concurrency.sync import concurrency

    get_run_logger().info("waiting for a slot of concurrency limit %r", limit)
    with concurrency(limit, occupy=1):
        yield


# ----------------------------------------------------------------------------- dataset


@flow(name="dataset", log_prints=True)
def dataset(runs_dir: str, out: str, runs: list[str], options: DatasetConfig | None = None,
            window: dict[str, Any] | None = None) -> dict[str, Any]:
    """Trajectory rows of `runs` (ids under `runs_dir`) -> an RLAO dataset at `out`;
    `window`: the collections they came from, for the card."""
    route_w4s_logs()
    options = (options or DatasetConfig()).model_dump(mode="json")
    return dataset_task(runs_dir, out, runs, options, window)


# ----------------------------------------------------------------------------- fit


def _fit_inputs(inputs: dict[str, Any]) -> dict[str, Any]:
    base = inputs["options"].get("base", "embedded")
    base_files = file_digest(Path(base) / "config.json") if base != "embedded" else base
    return {"dataset": file_digest(inputs["dataset"]), "base": base_files}


def _fit_outputs(inputs: dict[str, Any]) -> list[str]:
    return [str(Path(inputs["out"]) / "adapter_config.json"),
            str(Path(inputs["out"]) / "metrics.json")]


SKIPPED_FILE = "skipped.json"
FIT_STAGE = RealInputs(extra=_fit_inputs, outputs=_fit_outputs)


@task(name="fit_adapter", task_run_name="fit {out}", retries=1,
      retry_delay_seconds=backoff(30), retry_condition_fn=retry_unless_final,
      cache_policy=FIT_STAGE, persist_result=True, timeout_seconds=stage_timeout("fit"))
def fit_task(dataset: str, out: str, options: dict[str, Any]) -> dict[str, Any]:
    """Fit and register a LoRA adapter; a rerun with the same `out` resumes its checkpoint.
    Nothing to learn (no positive reward, not forced): {"skipped": why}, also in
    `<out>/skipped.json` for a parent that reads the stage's files."""
    from w4s.errors import NothingToLearn
    from w4s.flows import progress, ui
    from w4s.storage.files import atomic_write

    logger = get_run_logger()

    def on_step(step: int, total: int, loss: float, tokens_per_s: float) -> None:
        logger.info("fit step %d/%d: loss %.4f, %.0f tok/s", step, total, loss, tokens_per_s)

    on_step = progress.fit_on_step(f"fit {Path(out).name}: optimizer steps", on_step)
    try:
        result = fit_work.fit_stage(dataset, out, FitConfig.model_validate(options),
                                     on_step=on_step)
    except NothingToLearn as e:
        logger.warning("%s", e)
        skipped = {"skipped": str(e), "adapter_id": None, "path": None, "steps": 0,
                   "final_loss": None}
        atomic_write(Path(out) / SKIPPED_FILE, json.dumps(skipped))
        return skipped
    ui.publish_fit(result.out, result.adapter_id, result.metrics)  # report PNGs, UI, event
    curve = result.metrics["loss_curve"]
    return {"adapter_id": result.adapter_id, "path": str(Path(result.out).resolve()),
            "steps": result.metrics["steps"], "final_loss": curve[-1]["loss"] if curve else None,
            "dataset_sha256": result.metrics["dataset_sha256"],
            "base_model": result.metrics["base_model"], "device": result.metrics.get("device")}


@flow(name="fit", log_prints=True)
def fit(dataset: str, out: str, options: FitConfig | None = None) -> dict[str, Any]:
    """Fit the meta-agent's LoRA adapter on an RLAO dataset; holds a GPU slot on a GPU."""
    route_w4s_logs()
    from w4s.flows import ui
    from w4s.models.rlao import pick_device

    ui.tag_host()
    with gpu_slot(pick_device()[0] != "cpu"):
        result = fit_task(dataset, out, (options or FitConfig()).model_dump(mode="json"))
    if result.get("skipped"):
        return result
    get_run_logger().info("adapter %s: %s steps on %s, final loss %s -> %s",
                          result["adapter_id"], result["steps"], result.get("device"),
                          result["final_loss"], result["path"])
    return result


# ----------------------------------------------------------------------------- evaluate


def _evaluate_inputs(inputs: dict[str, Any]) -> dict[str, Any]:
    bench = str(inputs["options"]["benchmark"])
    data = file_digest(bench.removeprefix("file:")) if bench.startswith("file:") else bench
    return {"workflow": file_digest(inputs["workflow"]), "data": data}


EVALUATE_STAGE = RealInputs(extra=_evaluate_inputs, outputs=lambda inputs: [inputs["report"]])


@task(name="evaluate_workflow", task_run_name="evaluate {workflow}", retries=2,
      retry_delay_seconds=backoff(10), retry_condition_fn=retry_unless_final,
      cache_policy=EVALUATE_STAGE, persist_result=True, timeout_seconds=stage_timeout("evaluate"))
def evaluate_task(workflow: str, report: str, options: dict[str, Any]) -> dict[str, Any]:
    """Score a workflow file on a benchmark split in the sandbox."""
    result = evaluate_work.evaluate_workflow(workflow, report,
                                             EvaluateConfig.model_validate(options))
    get_run_logger().info("evaluate %s on %s (%s, %d items): accuracy %.4f", workflow,
                          result["benchmark"], result["split"], result["items"],
                          result["accuracy"])
    return result


@flow(name="evaluate", log_prints=True)
def evaluate(workflow: str, options: EvaluateConfig, report: str | None = None) -> dict[str, Any]:
    """Score a workflow file; the JSON report goes to `report` (default: beside the file)."""
    from w4s.flows import ui

    route_w4s_logs()
    ui.tag_host()
    report = report or str(Path(workflow).with_suffix(".evaluation.json"))
    with gpu_slot(on_gpu(options.executor)):
        result = evaluate_task(workflow, report, options.model_dump(mode="json"))
    ui.publish_evaluation(result)
    return result
