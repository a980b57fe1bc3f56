"""The optimization turn, written once: seed, then per turn generate -> self_check (per
candidate) -> execute -> reward -> log_trajectory, over one run or many side by side.

`optimize` runs it over one run folder, `collect` over every live episode of a collection.
How a stage call runs is the caller's `submit(stage, args) -> future`: the flows submit
their Prefect tasks (names, caching and retries stay theirs); `plain_submit` calls the
plain stages of tasks/stages.py in threads, so the sequence runs and is tested without
Prefect.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from w4s.errors import BudgetExceeded, one_line
from w4s.storage.run_store import RunStore
from w4s.tasks import stages

STAGES = ("seed", "generate", "self_check", "execute", "reward", "log_trajectory")


class Future(Protocol):
    def result(self) -> Any: ...


Submit = Callable[[str, tuple], Future]
Calls = Callable[[str], list[tuple]]  # a run folder -> the stage's argument tuples for it


class Episodes:
    """The live runs of a turn sequence. A stage is submitted for every live run, every
    call ends before any error is raised (so each is saved), and a budget stop ends all
    (one shared budget). With `isolate`, a run whose stage fails drops out with its reason
    (a collection's episode); without, the first failure is raised (a single run)."""

    def __init__(self, run_dirs: list[str], submit: Submit, *, isolate: bool = False,
                 on_stage: Callable[[], None] | None = None) -> None:
        self.live = list(run_dirs)
        self.failed: dict[str, str] = {}
        self.submit, self.isolate, self.on_stage = submit, isolate, on_stage
        self.budget_stop: BudgetExceeded | None = None  # set when a budget stop ended them

    def stage(self, name: str, calls: Calls, *, counted: bool = True) -> dict[str, list[Any]]:
        futures = {d: [self.submit(name, args) for args in calls(d)] for d in self.live}
        results: dict[str, list[Any]] = {}
        budget: BudgetExceeded | None = None
        first: Exception | None = None
        for d, fs in futures.items():
            values, error = [], None
            for f in fs:  # collect every result (each waits) before raising anything
                try:
                    values.append(f.result())
                except BudgetExceeded as e:
                    budget = budget or e
                    error = error or e
                except Exception as e:  # noqa: BLE001 - one run's failure is that run's
                    error = error or e
            if error is None:
                results[d] = values
            elif not isinstance(error, BudgetExceeded):  # a budget stop is no run's failure
                first = first or error
                self.failed[Path(d).name] = f"{type(error).__name__}: {one_line(error, 300)}"
        self.live = [d for d in self.live if Path(d).name not in self.failed]
        if budget is not None:
            raise budget
        if first is not None and not self.isolate:
            raise first
        if counted and self.on_stage is not None:
            self.on_stage()
        return results


def start(episodes: Episodes) -> None:
    """Iteration 0: evaluate the seeds, log them."""
    episodes.stage("seed", lambda d: [(d,)])
    episodes.stage("log_trajectory", lambda d: [(d, 0)])


def turn(episodes: Episodes, t: int) -> None:
    """One turn of every live run: sample, self-check each candidate, evaluate, reward, log."""
    indices = episodes.stage("generate", lambda d: [(d, t)])
    episodes.stage("self_check", lambda d: [(d, t, j) for j in indices[d][0]])
    episodes.stage("execute", lambda d: [(d, t)])
    episodes.stage("reward", lambda d: [(d, t)])
    episodes.stage("log_trajectory", lambda d: [(d, t)])


STAGES_PER_TURN, STAGES_TO_START = 5, 2  # for progress bars counting stages


def run_turns(episodes: Episodes, iterations: int,
              before_turn: Callable[[int], None] | None = None,
              after_turn: Callable[[int], None] | None = None) -> tuple[str, int]:
    """Seed and run `iterations` turns; returns (status, turns done). A budget stop ends
    the sequence and keeps what the interrupted turn produced (its candidates go to
    Parquet too); any other failure raises, or with `isolate` drops its run."""
    done = 0
    try:
        start(episodes)
        if after_turn is not None:
            after_turn(0)
        for t in range(1, iterations + 1):
            if before_turn is not None:
                before_turn(t)
            turn(episodes, t)
            if after_turn is not None:
                after_turn(t)
            done = t
    except BudgetExceeded as e:
        episodes.budget_stop = e
        log_partial(episodes, done + 1)
        return "budget exceeded", done
    return "completed", done


def unlogged(run_dir: str, last: int) -> list[int]:
    """Iterations up to `last` with candidates but no trajectory file yet."""
    store = RunStore(run_dir)
    return [it for it in range(last + 1)
            if store.candidates(it) and not store.trajectory_path(it).exists()]


def log_partial(episodes: Episodes, last: int) -> None:
    """Write the trajectories of iterations a budget stop interrupted."""
    episodes.stage("log_trajectory", lambda d: [(d, it) for it in unlogged(d, last)],
                   counted=False)


@contextmanager
def plain_submit(workers: int = 8) -> Iterator[Submit]:
    """Run the plain stages in a thread pool (each call in a copy of the caller's context,
    so a progress hook set by the caller still reports)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        def submit(name: str, args: tuple) -> Future:
            if name not in STAGES:
                raise ValueError(f"unknown stage {name!r}")
            return pool.submit(contextvars.copy_context().run, getattr(stages, name), *args)
        yield submit
