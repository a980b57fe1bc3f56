"""The nightly chain's own stages as Prefect flows: `dataset`, `fit` and `evaluate`.

Each is a flow so it can be a deployment of its own (`fit` on the `gpu` pool, `evaluate`
on `cpu`) and a subflow of `nightly`; each takes pydantic-typed parameters, so the Prefect
UI shows a form, and returns plain values (paths, ids, numbers). The task wrappers for fit
and evaluate live here rather than in tasks/ because their plain functions
(`w4s.flows.fit.fit_adapter`, `w4s.flows.evaluate_cmd.evaluate_file`) live in flows/, and tasks/ may
not import flows/.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from pydantic import BaseModel, ConfigDict, Field

from w4s.config import BackendConfig
from w4s.errors import InfrastructureError, W4SError
from w4s.flows.prefect_setup import route_w4s_logs
from w4s.reward import TAU
from w4s.tasks.caching import RealInputs, file_digest, stage_timeout
from w4s.tasks.dataset import dataset as dataset_task
from w4s.tasks.retry import backoff, retry_unless_final

GPU_LIMIT = "w4s-gpu"  # the global concurrency limit `w4s deploy` creates (deploy_cmd)
LOCAL_KINDS = ("embedded", "transformers", "llamacpp", "vllm")  # served in this process


class _Options(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DatasetOptions(_Options):
    """Which trajectory rows become RLAO samples (see `w4s dataset --help`)."""

    benchmarks: list[str] = Field(default_factory=list, description="only these benchmarks")
    min_reward: float | None = Field(None, description="reward >= this")
    max_reward: float | None = Field(None, description="reward <= this")
    include_skipped: bool = Field(False, description="also candidates that failed self-check")
    tau: float = Field(TAU, gt=0, description="weight = exp(reward / tau)")
    sft: bool = Field(False, description="every weight 1.0 (the SFT ablation)")
    repaired: Literal["conversation", "drop", "state"] = Field(
        "conversation", description="a repaired candidate's prompt: the conversation its "
        "reply was sampled from, left out, or the original state")
    window_nights: int = Field(1, ge=1, description="the nightly: learn from the last N "
                               "nights' collections (tonight's included)")


class FitOptions(_Options):
    """A LoRA fit of the meta-agent (see `w4s fit --help`)."""

    base: str = Field("embedded", description="`embedded` or a local Hugging Face folder")
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1, description="optimizer steps (overrides epochs)")
    lr: float = Field(1e-4, gt=0)
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"])
    batch_tokens: int = Field(4096, ge=1)
    row_tokens: int | None = Field(None, ge=1)
    step_samples: int = Field(16, ge=1, description="samples per optimizer step")
    max_seq_len: int | None = Field(
        None, ge=16, description="default: the base model's context; longer samples are "
        "dropped and counted, never cut")
    max_grad_norm: float | None = Field(1.0, ge=0, description="gradient clipping; None = off")
    estimator: Literal["self_normalized", "mean"] = Field(
        "self_normalized", description="step loss: sum w*loss / sum w, or / n (the paper's)")
    gradient_checkpointing: bool | None = Field(None, description="default: on on a GPU")
    seed: int = 0
    checkpoint_every: int = Field(50, ge=0)
    keep_checkpoints: int = Field(1, ge=1, description="checkpoints left after the fit")
    force: bool = Field(False, description="fit even when no row has a positive reward "
                                           "(the stage skips otherwise)")


class EvaluateOptions(_Options):
    """Where the best workflow is scored: a benchmark's held-out split or a file."""

    benchmark: str = Field(..., description="a benchmark name or file:PATH")
    benchmark_options: dict[str, Any] = Field(default_factory=dict)
    split: Literal["validation", "test", "all"] | None = Field(
        None, description="default: all for a file: benchmark, else test")
    val_size: int | None = Field(10, ge=1)
    test_size: int | None = Field(None, ge=1)
    split_seed: int = 0
    executor: BackendConfig = Field(default_factory=BackendConfig)
    concurrency: int = Field(4, ge=1, le=512)
    use_cache: bool = True
    item_timeout_s: float = Field(60.0, gt=0)
    code_timeout_s: float = Field(5.0, gt=0)
    budget_usd: float | None = Field(None, gt=0)
    budget_tokens: int | None = Field(None, ge=1)


def on_gpu(*backends: BackendConfig) -> bool:
    """Whether a stage with these models needs a GPU host: a model served in-process on a
    GPU. A model behind an OpenAI-compatible server (vLLM) runs wherever that server is."""
    return any(b.kind == "vllm" or (b.kind in LOCAL_KINDS and b.device != "cpu")
               for b in backends)


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
def dataset(runs_dir: str, out: str, runs: list[str], options: DatasetOptions | None = None,
            window: dict[str, Any] | None = None) -> dict[str, Any]:
    """Trajectory rows of `runs` (ids under `runs_dir`) -> an RLAO dataset at `out`;
    `window`: the collections they came from, for the card."""
    route_w4s_logs()
    return dataset_task(runs_dir, out, runs, (options or DatasetOptions()).model_dump(), window)


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


@task(name="fit", task_run_name="fit {out}", retries=1, retry_delay_seconds=backoff(30),
      retry_condition_fn=retry_unless_final, cache_policy=FIT_STAGE, persist_result=True,
      timeout_seconds=stage_timeout("fit"))
def fit_task(dataset: str, out: str, options: dict[str, Any]) -> dict[str, Any]:
    """Fit and register a LoRA adapter; a rerun with the same `out` resumes its checkpoint.
    Nothing to learn (no positive reward, not forced): {"skipped": why}, also in
    `<out>/skipped.json` for a parent that reads the stage's files."""
    from w4s.errors import NothingToLearn
    from w4s.flows.fit import fit_adapter
    from w4s.storage.files import atomic_write

    logger = get_run_logger()

    def on_step(step: int, total: int, loss: float, tokens_per_s: float) -> None:
        logger.info("fit step %d/%d: loss %.4f, %.0f tok/s", step, total, loss, tokens_per_s)

    opts = dict(options)
    base = opts.pop("base", "embedded")
    try:
        result = fit_adapter(dataset, base, out, on_step=on_step, **opts)
    except NothingToLearn as e:
        logger.warning("%s", e)
        skipped = {"skipped": str(e), "adapter_id": None, "path": None, "steps": 0,
                   "final_loss": None}
        atomic_write(Path(out) / SKIPPED_FILE, json.dumps(skipped))
        return skipped
    curve = result.metrics["loss_curve"]
    return {"adapter_id": result.adapter_id, "path": str(Path(result.out).resolve()),
            "steps": result.metrics["steps"], "final_loss": curve[-1]["loss"] if curve else None,
            "dataset_sha256": result.metrics["dataset_sha256"],
            "base_model": result.metrics["base_model"], "device": result.metrics.get("device")}


@flow(name="fit", log_prints=True)
def fit(dataset: str, out: str, options: FitOptions | None = None) -> dict[str, Any]:
    """Fit the meta-agent's LoRA adapter on an RLAO dataset; holds a GPU slot on a GPU."""
    route_w4s_logs()
    from w4s.flows import ui
    from w4s.models.rlao import pick_device

    ui.tag_host()
    with gpu_slot(pick_device()[0] != "cpu"):
        result = fit_task(dataset, out, (options or FitOptions()).model_dump())
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


def evaluate_workflow(workflow: str, report: str, options: dict[str, Any]) -> dict[str, Any]:
    """Score the workflow with `run_evaluation` (the `w4s evaluate` code), save its JSON
    document at `report`, return the headline numbers. Items lost to infrastructure raise
    (the task retries) instead of being scored as wrong answers."""
    from w4s.flows.evaluate_cmd import run_evaluation
    from w4s.storage.run_store import atomic_write

    opts = EvaluateOptions.model_validate(options)
    ev = run_evaluation(
        Path(workflow), opts.benchmark, opts.split or (
            "all" if opts.benchmark.startswith("file:") else "test"),
        executor_cfg=opts.executor, val_size=opts.val_size, test_size=opts.test_size,
        split_seed=opts.split_seed, concurrency=opts.concurrency,
        use_cache=opts.use_cache, benchmark_options=opts.benchmark_options,
        item_timeout_s=opts.item_timeout_s, code_timeout_s=opts.code_timeout_s,
        budget_usd=opts.budget_usd, budget_tokens=opts.budget_tokens)
    if ev.error is not None:
        raise W4SError(f"workflow {workflow} is invalid: {ev.error}")
    doc = ev.document()
    if doc["infra_errors"] and not doc["budget_exceeded"]:
        reason = next(o["infra_error"] for o in doc["outcomes"] if o.get("infra_error"))
        raise InfrastructureError(f"{doc['infra_errors']} of {doc['items']} items lost to "
                                  f"infrastructure: {reason}")
    atomic_write(Path(report), json.dumps(doc, indent=1))
    return {key: doc[key] for key in ("benchmark", "split", "items", "accuracy",
                                      "executor_calls", "cost_usd", "budget_exceeded")} | {
        "report": str(report), "workflow": str(workflow)}


@task(name="evaluate", task_run_name="evaluate {workflow}", retries=2,
      retry_delay_seconds=backoff(10), retry_condition_fn=retry_unless_final,
      cache_policy=EVALUATE_STAGE, persist_result=True, timeout_seconds=stage_timeout("evaluate"))
def evaluate_task(workflow: str, report: str, options: dict[str, Any]) -> dict[str, Any]:
    """Score a workflow file on a benchmark split in the sandbox."""
    result = evaluate_workflow(workflow, report, options)
    get_run_logger().info("evaluate %s on %s (%s, %d items): accuracy %.4f", workflow,
                          result["benchmark"], result["split"], result["items"],
                          result["accuracy"])
    return result


@flow(name="evaluate", log_prints=True)
def evaluate(workflow: str, options: EvaluateOptions, report: str | None = None) -> dict[str, Any]:
    """Score a workflow file; the JSON report goes to `report` (default: beside the file)."""
    from w4s.flows import ui

    route_w4s_logs()
    ui.tag_host()
    report = report or str(Path(workflow).with_suffix(".evaluation.json"))
    with gpu_slot(on_gpu(options.executor)):
        result = evaluate_task(workflow, report, options.model_dump(mode="json"))
    ui.publish_evaluation(result)
    return result
