"""The W4S optimization loop as a Prefect flow: seed, then per iteration
generate -> self_check (per candidate) -> execute -> reward -> log_trajectory; then test once."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from storage.query import iteration_table
from storage.run_store import RunStore
from tasks import runtime
from tasks.execute import evaluate_test, execute, seed
from tasks.generate import generate
from tasks.log_trajectory import log_trajectory
from tasks.reward import reward
from tasks.self_check import self_check
from tasks.stages import prepare_run
from w4s.config import OptimizeConfig
from w4s.errors import BudgetExceeded
from w4s.paths import runs_dir as default_runs_dir


@flow(name="optimize", log_prints=True)
def optimize(config: OptimizeConfig, run_id: str | None = None) -> dict:
    """One W4S run; rerunning with the same run_id skips the stages already finished.

    A config listing several benchmarks runs one optimization per benchmark (subflows),
    returning {"runs": [summary, ...]}.
    """
    if not isinstance(config.benchmark, str):
        return {"runs": [
            optimize(single, run_id=f"{run_id}-{single.benchmark}" if run_id else None)
            for single in config.per_benchmark()
        ]}
    logger = get_run_logger()
    run_dir = prepare_run(config, default_runs_dir(config.runs_dir), run_id)
    logger.info("run folder: %s", run_dir)
    status, done = "completed", 0
    try:
        seed(run_dir)
        log_trajectory(run_dir, 0)
        for it in range(1, config.iterations + 1):
            logger.info("iteration %d/%d", it, config.iterations)
            indices = generate(run_dir, it)
            checks = [self_check.submit(run_dir, it, j) for j in indices]
            for fut in checks:
                fut.result()
            execute(run_dir, it)
            reward(run_dir, it)
            log_trajectory(run_dir, it)
            done = it
    except BudgetExceeded as e:
        logger.warning("%s", e)
        status = "budget exceeded"
        _log_partial(run_dir, done + 1)
    summary = evaluate_test(run_dir, done, status)
    _publish(run_dir, summary)
    runtime.close_all()
    return summary


def _log_partial(run_dir: str, last: int) -> None:
    """Keep what interrupted iterations produced: their candidates go to Parquet too."""
    store = RunStore(run_dir)
    for it in range(last + 1):
        if store.candidates(it) and not store.trajectory_path(it).exists():
            log_trajectory(run_dir, it)


def _publish(run_dir: str, summary: dict) -> None:
    """The per-iteration table and the result as a Prefect artifact for the UI."""
    cols, rows = iteration_table(Path(run_dir))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in r) + " |" for r in rows]
    test = summary["test_accuracy"]
    text = (
        f"# w4s run {summary['run_id']}\n\n"
        f"best validation {summary['best_val_accuracy']:.2f}, "
        f"test {'not evaluated' if test is None else f'{test:.2f}'} on "
        f"{summary['test_items']} held-out items ({summary['benchmark']}), "
        f"status: {summary['status']}\n\n" + "\n".join(lines)
    )
    create_markdown_artifact(text, key="w4s-run-summary", description="w4s optimization run")
