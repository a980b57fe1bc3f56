"""`w4s evaluate`: score one workflow file on a benchmark split in the sandbox (no Prefect)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from w4s.config import BackendConfig
from w4s.cost import PriceTable
from w4s.errors import ConfigError
from w4s.sandbox import EvalResult, Harness, SandboxSettings, check_workflow_source
from w4s.sandbox.pool import isolation_report

EXIT_OK, EXIT_INVALID_WORKFLOW, EXIT_BUDGET = 0, 1, 3


def evaluate_file(
    workflow: Path,
    benchmark: str,
    split: str = "validation",
    *,
    executor_cfg: BackendConfig,
    val_size: int | None = 10,
    test_size: int | None = None,
    split_seed: int = 0,
    json_out: bool = False,
    concurrency: int = 4,
    use_cache: bool = True,
    reuse_outcomes: bool = True,
    benchmark_options: dict[str, Any] | None = None,
    item_timeout_s: float = 60.0,
    code_timeout_s: float = 5.0,
    budget_usd: float | None = None,
    budget_tokens: int | None = None,
) -> int:
    """Print accuracy, spend and per-item outcomes; return the process exit code.

    0: evaluated; 1: the workflow is invalid (nothing ran); 3: the budget ran out.
    """
    from models.factory import build_chat_model
    from w4s.benchmarks import get_benchmark

    if split not in ("validation", "test"):
        raise ConfigError(f"`split` must be 'validation' or 'test', but received {split!r}")
    try:
        code = Path(workflow).read_text()
    except OSError as e:
        raise ConfigError(f"`workflow`: cannot read {str(workflow)!r}: {e.strerror}") from e
    bench = get_benchmark(benchmark, **(benchmark_options or {}))
    parts = bench.split(seed=split_seed, val_size=val_size, test_size=test_size)
    items = parts.validation if split == "validation" else parts.test
    header = {
        "workflow": str(workflow), "benchmark": bench.display_name, "split": split,
        "items": len(items), "executor": executor_cfg.label,
    }
    static = check_workflow_source(code)
    if static is not None:
        _emit_invalid(header, static, json_out)
        return EXIT_INVALID_WORKFLOW
    cache = None
    if use_cache:
        from storage.call_cache import open_call_cache

        cache = open_call_cache()
    settings = SandboxSettings(item_timeout_s=item_timeout_s, code_timeout_s=code_timeout_s,
                               concurrency=concurrency, reuse_outcomes=reuse_outcomes)
    executor = build_chat_model(executor_cfg, role="executor")
    prices = PriceTable.for_executor(executor_cfg.kind, executor.model_id)
    try:
        with Harness(executor, settings=settings, cache=cache, prices=prices,
                     budget_usd=budget_usd, budget_tokens=budget_tokens) as harness:
            result = harness.evaluate(code, items, bench)
        level = isolation_report()["level"]
    finally:
        if cache is not None:
            cache.close()
    if json_out:
        print(json.dumps(_document(header, result, level), indent=2))
    else:
        _print_table(header, result, level)
    return EXIT_BUDGET if result.budget_exceeded else EXIT_OK


def _document(header: dict, result: EvalResult, level: str) -> dict:
    return {
        **header, "isolation": level, "accuracy": result.accuracy,
        "executor_calls": result.executor_calls, "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens, "cost_usd": result.cost_usd,
        "cache_hits": result.cache_hits, "cache_misses": result.cache_misses,
        "reused_outcomes": result.reused, "budget_exceeded": result.budget_exceeded,
        "outcomes": [asdict(o) for o in result.outcomes],
    }


def _emit_invalid(header: dict, error: str, json_out: bool) -> None:
    if json_out:
        print(json.dumps({**header, "error": error}, indent=2))
    else:
        print(f"workflow {header['workflow']} is invalid: {error}")


def _one_line(text: str | None, width: int) -> str:
    if not text:
        return ""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    line = lines[-1] if lines else ""  # a traceback's last line names the exception
    return line if len(line) <= width else line[: width - 3] + "..."


def _print_table(header: dict, result: EvalResult, level: str) -> None:
    cost = "unknown" if result.cost_usd is None else f"${result.cost_usd:.4f}"
    print(f"benchmark:  {header['benchmark']} ({header['split']}, {header['items']} items)")
    print(f"executor:   {header['executor']}    sandbox isolation: {level}")
    print(f"accuracy:   {result.accuracy:.4f}")
    print(f"executor:   {result.executor_calls} calls, {result.prompt_tokens} prompt + "
          f"{result.completion_tokens} completion tokens, cost {cost}")
    reused = f"; {result.reused} items reused from identical earlier runs" if result.reused else ""
    print(f"cache:      {result.cache_hits} hits, {result.cache_misses} misses{reused}")
    if result.budget_exceeded:
        print("budget:     exceeded; items not started were skipped")
    print()
    width = max([4] + [len(o.item_id) for o in result.outcomes])
    print(f"{'item':<{width}}  score  calls  tokens   secs  answer / error")
    for o in result.outcomes:
        text = f"ERROR {_one_line(o.error, 60)}" if o.error else _one_line(o.answer, 60)
        print(f"{o.item_id:<{width}}  {o.score:5.2f}  {o.executor_calls:5d}  "
              f"{o.prompt_tokens + o.completion_tokens:6d}  {o.seconds:5.2f}  {text}")
