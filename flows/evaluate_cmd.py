"""`w4s evaluate`: score one workflow file on a benchmark split in the sandbox (no Prefect)."""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from w4s.config import BackendConfig
from w4s.cost import PriceTable
from w4s.errors import BenchmarkError, ConfigError, InfrastructureError
from w4s.sandbox import EvalResult, Harness, SandboxSettings, check_workflow_source
from w4s.sandbox.pool import isolation_report

EXIT_OK, EXIT_INVALID_WORKFLOW, EXIT_BUDGET = 0, 1, 3
SPLITS = ("validation", "test", "all")
FILE_PREFIX = "file:"


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


def evaluate_file(workflow: Path, benchmark: str, split: str | None = None, *,
                  json_out: bool = False, progress: bool | None = None,
                  **options: Any) -> int:
    """Print accuracy, spend and per-item outcomes; return the process exit code.

    `split`: "validation" or "test" (the seeded split `val_size`/`test_size`/`split_seed`
    draw), or "all" (every item, in file order); None is "all" for a `file:` benchmark and
    "validation" for a named one. `progress`: a progress bar on stderr; None shows it when
    stderr is a terminal and the output is not JSON. `options`: those of `run_evaluation`.

    0: evaluated; 1: the workflow is invalid (nothing ran); 3: the budget ran out. Items
    lost to infrastructure (the executor down, a 401...) raise InfrastructureError: the CLI
    prints its one line and exits 2, as `optimize` does, rather than an accuracy that says
    nothing about the workflow (the items that did run are cached for the rerun).
    """
    if progress is None:
        progress = not json_out and sys.stderr.isatty()
    ev = run_evaluation(workflow, benchmark, split, progress=progress, **options)
    if ev.result is not None and ev.result.infra_errors:
        lost = next(o.infra_error for o in ev.result.outcomes if o.infra_error is not None)
        raise InfrastructureError(
            f"{ev.result.infra_errors} of {len(ev.result.outcomes)} items lost to "
            f"infrastructure, no accuracy reported; first: {lost}")
    if ev.error is not None:
        _emit_invalid(ev.header, ev.error, json_out)
    elif json_out:
        print(json.dumps(ev.document(), indent=2))
    else:
        _print_table(ev.header, ev.result, ev.level)
    return ev.exit_code


def run_evaluation(
    workflow: Path,
    benchmark: str,
    split: str | None = None,
    *,
    executor_cfg: BackendConfig,
    val_size: int | None = 10,
    test_size: int | None = None,
    split_seed: int = 0,
    concurrency: int = 4,
    use_cache: bool = True,
    reuse_outcomes: bool = True,
    benchmark_options: dict[str, Any] | None = None,
    item_timeout_s: float = 60.0,
    code_timeout_s: float = 5.0,
    budget_usd: float | None = None,
    budget_tokens: int | None = None,
    progress: bool = False,
) -> Evaluation:
    """Score a workflow file on a benchmark split; nothing is printed (a flow stores the
    document, the CLI prints it). `split` as in `evaluate_file`; `progress`: a rich bar on
    stderr. An invalid workflow runs nothing: its Evaluation has `error` and no result."""
    from w4s.benchmarks import get_benchmark
    from w4s.models.factory import build_chat_model

    if split is None:
        split = "all" if benchmark.startswith(FILE_PREFIX) else "validation"
    if split not in SPLITS:
        raise ConfigError(f"`split` must be one of {', '.join(SPLITS)}, but received {split!r}")
    try:
        code = Path(workflow).read_text()
    except OSError as e:
        raise ConfigError(f"`workflow`: cannot read {str(workflow)!r}: {e.strerror}") from e
    bench = get_benchmark(benchmark, **(benchmark_options or {}))
    if split == "all":
        items = bench.load()
    else:
        try:
            parts = bench.split(seed=split_seed, val_size=val_size, test_size=test_size)
        except BenchmarkError as e:
            raise BenchmarkError(f"{e}; `--split all` scores every item") from e
        items = parts.validation if split == "validation" else parts.test
    header = {
        "workflow": str(workflow), "benchmark": bench.display_name, "split": split,
        "items": len(items), "executor": executor_cfg.label,
    }
    static = check_workflow_source(code)
    if static is not None:
        return Evaluation(header, error=static)
    cache = None
    if use_cache:
        from w4s.storage.call_cache import open_call_cache

        cache = open_call_cache()
    settings = SandboxSettings(item_timeout_s=item_timeout_s, code_timeout_s=code_timeout_s,
                               concurrency=concurrency, reuse_outcomes=reuse_outcomes)
    executor = build_chat_model(executor_cfg, role="executor")
    prices = PriceTable.for_executor(executor_cfg.kind, executor.model_id)
    try:
        with Harness(executor, settings=settings, cache=cache, prices=prices,
                     budget_usd=budget_usd, budget_tokens=budget_tokens) as harness:
            if progress:
                result = _evaluate_with_progress(harness, code, items, bench,
                                                 f"{bench.display_name} ({split})")
            else:
                result = harness.evaluate(code, items, bench)
        level = isolation_report()["level"]
    finally:
        if cache is not None:
            cache.close()
    return Evaluation(header, result, level)


def _evaluate_with_progress(harness: Harness, code: str, items: list, bench: Any,
                            label: str) -> EvalResult:
    """`harness.evaluate` under a rich progress bar on stderr, fed item by item."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    done = {"n": 0, "score": 0.0, "errors": 0}
    lock = threading.Lock()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("accuracy {task.fields[accuracy]}  errors {task.fields[errors]}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(file=sys.stderr), transient=False) as bar:
        task = bar.add_task(label, total=len(items), accuracy="-", errors=0)

        def on_item(_code_index: int, outcome: Any) -> None:
            with lock:  # items finish on several threads
                done["n"] += 1
                done["score"] += outcome.score
                done["errors"] += outcome.error is not None
                bar.update(task, advance=1, accuracy=f"{done['score'] / done['n']:.2f}",
                           errors=done["errors"])

        return harness.evaluate(code, items, bench, on_item=on_item)


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


def _emit_invalid(header: dict, error: str, json_out: bool) -> None:
    if json_out:
        print(json.dumps(Evaluation(header, error=error).document(), indent=2))
    else:
        print(f"workflow {header['workflow']} is invalid: {error}")


def _answer_text(outcome: Any) -> str:
    """One line per item: an error's last line (a traceback's names the exception), an
    answer with its whitespace folded; the table cuts it to width. LOST: infrastructure
    failed the item (not the workflow's fault)."""
    for tag, text in (("LOST", outcome.infra_error), ("ERROR", outcome.error)):
        if text:
            lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
            return f"{tag} {lines[-1] if lines else ''}"
    return " ".join(str(outcome.answer or "").split())


def _print_table(header: dict, result: EvalResult, level: str) -> None:
    from w4s.flows.cli import print_table

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
    if result.infra_errors:
        print(f"lost:       {result.infra_errors} items to the executor or the sandbox, scored 0 "
              "(the accuracy understates the workflow)")
    print()
    cols = ["item", "score", "calls", "tokens", "secs", "answer / error"]
    rows = [(o.item_id, o.score, o.executor_calls, o.prompt_tokens + o.completion_tokens,
             o.seconds, _answer_text(o)) for o in result.outcomes]
    print_table(cols, rows, wide={"answer / error": 60})
