"""The evaluate stage without Prefect: one workflow file scored in the sandbox on a
benchmark's split, as an `EvaluateConfig` says. `w4s evaluate` prints it; the `evaluate`
flow (and the nightly) stores its JSON document."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from w4s.errors import BenchmarkError, ConfigError, InfrastructureError, W4SError
from w4s.sandbox import EvalResult, Harness, SandboxSettings, check_workflow_source
from w4s.sandbox.pool import isolation_report
from w4s.stage_config import EvaluateConfig
from w4s.storage.files import atomic_write
from w4s.tasks.runtime import new_harness

EXIT_OK, EXIT_INVALID_WORKFLOW, EXIT_BUDGET = 0, 1, 3
SPLITS = ("validation", "test", "all")
RunItems = Callable[[Harness, str, list, Any, str], EvalResult]


@dataclass
class Evaluation:
    """One scored workflow: the header (what was run), the result, the isolation level;
    or, for a workflow that failed its static check, the error and nothing run."""

    header: dict[str, Any]
    result: EvalResult | None = None
    level: str | None = None
    error: str | None = None

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return EXIT_INVALID_WORKFLOW
        return EXIT_BUDGET if self.result.budget_exceeded else EXIT_OK

    def document(self) -> dict[str, Any]:
        """The JSON document `w4s evaluate --json` prints."""
        if self.error is not None:
            return {**self.header, "error": self.error}
        return _document(self.header, self.result, self.level)


def run_evaluation(workflow: str | Path, config: EvaluateConfig, *,
                   default_split: str = "validation",
                   run_items: RunItems | None = None) -> Evaluation:
    """Score a workflow file as `config` says; nothing is printed (the flow stores the
    document, the CLI prints it). `split` None: `all` for a `file:` benchmark, else
    `default_split`. `run_items(harness, code, items, benchmark, label)` runs the items
    (default: `harness.evaluate`; the CLI's shows a progress bar). An invalid workflow runs
    nothing: its Evaluation has `error` and no result."""
    from w4s.benchmarks import get_benchmark
    from w4s.models.factory import build_chat_model

    split = config.resolved_split(default_split)
    if split not in SPLITS:
        raise ConfigError(f"`split` must be one of {', '.join(SPLITS)}, but received {split!r}")
    try:
        code = Path(workflow).read_text()
    except OSError as e:
        raise ConfigError(f"`workflow`: cannot read {str(workflow)!r}: {e.strerror}") from e
    bench = get_benchmark(config.benchmark, **config.benchmark_options)
    if split == "all":
        items = bench.load()
    else:
        try:
            parts = bench.split(seed=config.split_seed, val_size=config.val_size,
                                test_size=config.test_size)
        except BenchmarkError as e:
            raise BenchmarkError(f"{e}; `--split all` scores every item") from e
        items = parts.validation if split == "validation" else parts.test
    header = {
        "workflow": str(workflow), "benchmark": bench.display_name, "split": split,
        "items": len(items), "executor": config.executor.label,
    }
    static = check_workflow_source(code)
    if static is not None:
        return Evaluation(header, error=static)
    cache = None
    if config.use_cache:
        from w4s.storage.call_cache import open_call_cache

        cache = open_call_cache()
    settings = SandboxSettings(item_timeout_s=config.item_timeout_s,
                               code_timeout_s=config.code_timeout_s,
                               concurrency=config.concurrency,
                               reuse_outcomes=config.reuse_outcomes)
    executor = build_chat_model(config.executor, role="executor")
    try:
        with new_harness(executor, config.executor.kind, settings, cache=cache,
                         budget_usd=config.budget_usd,
                         budget_tokens=config.budget_tokens) as harness:
            if run_items is not None:
                result = run_items(harness, code, items, bench,
                                   f"{bench.display_name} ({split})")
            else:
                result = harness.evaluate(code, items, bench)
        level = isolation_report()["level"]
    finally:
        if cache is not None:
            cache.close()
    return Evaluation(header, result, level)


def evaluate_workflow(workflow: str, report: str, config: EvaluateConfig) -> dict[str, Any]:
    """The evaluate stage: score the workflow (split default: test), save the JSON document
    at `report`, return the headline numbers. Items lost to infrastructure raise (a task
    retries) instead of being scored as wrong answers."""
    ev = run_evaluation(workflow, config, default_split="test")
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


def _document(header: dict, result: EvalResult, level: str) -> dict:
    return {
        **header, "isolation": level, "accuracy": result.accuracy,
        "executor_calls": result.executor_calls, "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens, "cost_usd": result.cost_usd,
        "cache_hits": result.cache_hits, "cache_misses": result.cache_misses,
        "reused_outcomes": result.reused, "budget_exceeded": result.budget_exceeded,
        "infra_errors": result.infra_errors,
        "outcomes": [asdict(o) for o in result.outcomes],
    }


