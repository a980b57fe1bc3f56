"""Task run names that say what a stage run is: `self_check it2 c3 · <run id>`.

Prefect's default (`self_check-9a3`) says nothing in the UI; a collection runs many
episodes at once, so the run folder's name (the episode or run id) is part of the name.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePosixPath


def stage_run_name(stage: str) -> Callable[[], str]:
    """A `task_run_name` callable: the stage, `it<i>` and `c<j>` when given, the run id."""

    def name() -> str:
        from prefect.runtime import task_run

        params = task_run.parameters or {}
        parts = [stage]
        iteration = params.get("iteration", params.get("iterations_done"))
        if iteration is not None:
            parts.append(f"it{iteration}")
        if params.get("index") is not None:
            parts.append(f"c{params['index']}")
        run_dir = params.get("run_dir")
        if run_dir:
            parts.append(f"· {PurePosixPath(str(run_dir).rstrip('/')).name}")
        return " ".join(parts)

    name.__name__ = f"{stage}_run_name"
    return name
