"""The W4S optimization loop as a Prefect flow: the turn sequence of tasks/turn.py (seed,
then per iteration generate -> self_check -> execute -> reward -> log_trajectory) over the
stage tasks, then the test evaluation once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import Task, flow, get_run_logger
from prefect.futures import PrefectFuture

from w4s.config import OptimizeConfig
from w4s.errors import one_line
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
from w4s.tasks.turn import Episodes, run_turns


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
    episodes = Episodes([run_dir], submit_in_flow)
    best: float | None = None

    def after(it: int) -> None:
        nonlocal best
        best = ui.track_best(run_dir, it, best)

    try:
        status, done = run_turns(
            episodes, config.iterations, after_turn=after,
            before_turn=lambda it: logger.info("iteration %d/%d", it, config.iterations))
    except KeyboardInterrupt:
        # the process is going down: stop the sandbox workers now, or Prefect's task runner
        # waits for the stages still running (up to an item's timeout) before it exits
        runtime.stop_all()
        raise
    if episodes.budget_stop is not None:
        logger.warning("%s", episodes.budget_stop)
    return evaluate_test(run_dir, done, status)


def stage_task(name: str) -> Task:
    """The Prefect task of a stage of the turn (looked up when called: tests replace one)."""
    return {"seed": seed, "generate": generate, "self_check": self_check, "execute": execute,
            "reward": reward, "log_trajectory": log_trajectory}[name]


def submit_stage(name: str, args: tuple) -> PrefectFuture:
    """A stage of the turn as its Prefect task, on the flow's task runner."""
    return stage_task(name).submit(*args)


class _Ran:
    """A stage task called in the flow's own thread, shaped like a future."""

    def __init__(self, fn: Any, args: tuple) -> None:
        self.error: Exception | None = None
        try:
            self.value = fn(*args)
        except Exception as e:  # noqa: BLE001 - raised again by result(), after the others
            self.error = e

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


def submit_in_flow(name: str, args: tuple) -> PrefectFuture | _Ran:
    """A single run: candidates' self-checks go to the task runner side by side (on Dask,
    its workers); every other stage runs in the flow, where its models are loaded."""
    if name == "self_check":
        return submit_stage(name, args)
    return _Ran(stage_task(name), args)
