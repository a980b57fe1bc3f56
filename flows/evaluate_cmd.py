"""`w4s evaluate`: score one workflow file on a benchmark split in the sandbox (no Prefect);
the stage itself is `w4s.tasks.evaluate`, this module prints it."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

from w4s.config import BackendConfig, build_config, deep_merge
from w4s.errors import InfrastructureError, W4SError
from w4s.flows.config_cli import Given, config_command, option
from w4s.sandbox import EvalResult, Harness
from w4s.stage_config import EvaluateConfig
from w4s.tasks.evaluate import Evaluation, run_evaluation


def evaluate_file(workflow: Path, benchmark: str, split: str | None = None, *,
                  json_out: bool = False, progress: bool | None = None,
                  executor_cfg: BackendConfig | None = None, **options: Any) -> int:
    """Print accuracy, spend and per-item outcomes; return the process exit code.

    `split`: "validation" or "test" (the seeded split `val_size`/`test_size`/`split_seed`
    draw), or "all" (every item, in file order); None is "all" for a `file:` benchmark and
    "validation" for a named one. `progress`: a progress bar on stderr; None shows it when
    stderr is a terminal and the output is not JSON. `options`: EvaluateConfig's fields.

    0: evaluated; 1: the workflow is invalid (nothing ran); 3: the budget ran out. Items
    lost to infrastructure (the executor down, a 401...) raise InfrastructureError: the CLI
    prints its one line and exits 2, as `optimize` does, rather than an accuracy that says
    nothing about the workflow (the items that did run are cached for the rerun).
    """
    config = build_config({**options, "benchmark": benchmark, "split": split,
                           "executor": executor_cfg or BackendConfig()}, EvaluateConfig)
    return evaluate_config(workflow, config, json_out=json_out, progress=progress)


def evaluate_config(workflow: Path, config: EvaluateConfig, *, json_out: bool = False,
                    progress: bool | None = None) -> int:
    """`evaluate_file` for a built config: print, return the exit code."""
    if progress is None:
        progress = not json_out and sys.stderr.isatty()
    ev = run_evaluation(workflow, config,
                        run_items=_evaluate_with_progress if progress else None)
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
    from w4s.flows.cli_common import print_table

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


def _evaluate(given: Given, *, workflow: str, executor: str | None = None,
              json_out: bool = False) -> int:
    import yaml

    base: dict[str, Any] = {}
    if executor is not None:  # the whole executor as YAML/JSON; --set executor.x=... over it
        try:
            base = {"executor": yaml.safe_load(executor) or {}}
        except yaml.YAMLError as e:
            raise W4SError(f"`--executor` is not valid YAML/JSON: {executor!r}") from e
    given = Given(given.config_file, deep_merge(base, given.overrides))
    return evaluate_config(Path(workflow), given.load(EvaluateConfig), json_out=json_out)


evaluate = config_command(
    EvaluateConfig, _evaluate, benchmark_flags=True,
    names={"use_cache": {"negative": ("--no-use-cache", "--no-cache")},
           "reuse_outcomes": {"negative": ("--no-reuse-outcomes", "--rerun")}},
    help="Score a workflow file in the sandbox. --rerun runs every item, even one already "
         "run by identical code (executor calls still come from the cache).",
    options=[
        option("workflow", str, "a Python file defining solver(agent, task)", required=True),
        option("executor", str | None, "executor BackendConfig as YAML/JSON, e.g. "
               "'{kind: openai, model: gpt-4o-mini}'"),
        option("json_out", bool, "print one JSON document (and no progress bar)",
               default=False, name="--json", negative=""),
    ])
