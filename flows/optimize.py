"""The W4S optimization loop as a Prefect flow: seed, then per iteration
generate -> self_check (per candidate) -> execute -> reward -> log_trajectory; then test once."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.futures import wait

from w4s.config import OptimizeConfig
from w4s.errors import BudgetExceeded, one_line
from w4s.flows import report, ui
from w4s.flows.prefect_setup import route_w4s_logs
from w4s.flows.progress import stage_progress
from w4s.paths import runs_dir as default_runs_dir
from w4s.storage.run_store import RunStore, group_run_ids, new_run_id
from w4s.tasks import runtime
from w4s.tasks.execute import evaluate_test, execute, seed
from w4s.tasks.generate import generate
from w4s.tasks.log_trajectory import log_trajectory
from w4s.tasks.reward import reward
from w4s.tasks.self_check import self_check
from w4s.tasks.stages import prepare_run


@flow(name="optimize", log_prints=True, flow_run_name=ui.optimize_run_name)
def optimize(config: OptimizeConfig, run_id: str | None = None,
             budget_group: list[str] | None = None) -> dict:
    """One W4S run; rerunning with the same run_id skips the stages already finished.

    A config listing several benchmarks runs one optimization per benchmark (subflows, ids
    `{run_id}-{benchmark}`) under one budget, returning {"runs": [summary, ...]}.
    """
    route_w4s_logs()
    if not isinstance(config.benchmark, str):
        singles = config.per_benchmark()
        group = run_id or new_run_id(config)
        ui.label_flow_run(f"optimize {ui.benchmarks_label(config)} {group}", ui.run_tags(config))
        ids = group_run_ids(group, [s.benchmark for s in singles])
        return {"runs": [optimize(single, run_id=one, budget_group=ids)
                         for single, one in zip(singles, ids, strict=True)]}
    logger = get_run_logger()
    run_dir = prepare_run(config, default_runs_dir(config.runs_dir), run_id, budget_group)
    logger.info("run folder: %s", run_dir)
    report.preload()
    ui.label_flow_run(f"optimize {config.benchmark} {Path(run_dir).name}", ui.run_tags(config))
    store = RunStore(run_dir)
    store.clear_failure()
    try:
        with stage_progress():  # the evaluations show progress bars
            summary = _iterate(config, run_dir)
    except Exception as e:
        store.save_failure(f"{type(e).__name__}: {one_line(e, 300)}")
        raise
    ui.publish_run(run_dir, summary)
    return summary


def _iterate(config: OptimizeConfig, run_dir: str) -> dict:
    """Seed, the iterations, the test evaluation; a budget stop still tests the best."""
    logger = get_run_logger()
    status, done = "completed", 0
    try:
        seed(run_dir)
        best = ui.track_best(run_dir, 0, None)
        log_trajectory(run_dir, 0)
        for it in range(1, config.iterations + 1):
            logger.info("iteration %d/%d", it, config.iterations)
            indices = generate(run_dir, it)
            checks = [self_check.submit(run_dir, it, j) for j in indices]
            wait(checks)  # every candidate's check ends (and is saved) before any error
            for fut in checks:
                fut.result()
            execute(run_dir, it)
            reward(run_dir, it)
            best = ui.track_best(run_dir, it, best)
            log_trajectory(run_dir, it)
            done = it
    except BudgetExceeded as e:
        logger.warning("%s", e)
        status = "budget exceeded"
        log_partial(run_dir, done + 1)
    except KeyboardInterrupt:
        # the process is going down: stop the sandbox workers now, or Prefect's task runner
        # waits for the stages still running (up to an item's timeout) before it exits
        runtime.stop_all()
        raise
    return evaluate_test(run_dir, done, status)


def log_partial(run_dir: str, last: int) -> None:
    """Keep what interrupted iterations produced: their candidates go to Parquet too."""
    store = RunStore(run_dir)
    for it in range(last + 1):
        if store.candidates(it) and not store.trajectory_path(it).exists():
            log_trajectory(run_dir, it)

