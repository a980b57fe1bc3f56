"""The RLAO dataset stage as a Prefect task over `w4s.storage.dataset.build_dataset`.

Keyed on the data it reads (the sha256 of every trajectory file of the chosen runs) and the
query, so a rerun after a later stage failed does not rebuild it, while new trajectory
rows do.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

from w4s.tasks.caching import RealInputs, file_digest
from w4s.tasks.retry import backoff, retry_unless_final


def _snapshot(inputs: dict[str, Any]) -> dict[str, Any] | None:
    from w4s.errors import W4SError
    from w4s.storage.dataset import trajectory_files

    try:
        files = trajectory_files(inputs["runs_dir"], tuple(inputs.get("runs") or ()))
    except W4SError:
        return None  # no data: the stage itself says so in one line
    return {"trajectories": {str(f): file_digest(f) for f in files}}


DATASET_STAGE = RealInputs(extra=_snapshot, outputs=lambda inputs: [inputs["out"]])


def build(runs_dir: str, out: str, runs: list[str], options: dict[str, Any],
          window: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build the dataset; returns its path, card, row count and sha256 (plain values).
    `window` (the collections `runs` came from) goes into the card."""
    from w4s.config import build_config
    from w4s.stage_config import DatasetConfig
    from w4s.storage.dataset import build_dataset

    # the runs are the caller's choice (the nightly's window), not the config's
    config = build_config({**options, "runs": list(runs)}, DatasetConfig)
    result = build_dataset(runs_dir, out, config, window=window)
    positive = sum(n for r, n in result.card["reward_histogram"].items() if float(r) > 0)
    return {"path": str(result.path), "card": str(result.card_path), "rows": result.rows,
            "positive_rows": positive,
            "collections": [c["collection_id"] for c in (window or {}).get("collections", [])],
            "sha256": file_digest(result.path), "summary": result.summary_line()}


@task(name="dataset", task_run_name="dataset {out}", retries=1, retry_delay_seconds=backoff(5),
      retry_condition_fn=retry_unless_final, cache_policy=DATASET_STAGE, persist_result=True)
def dataset(runs_dir: str, out: str, runs: list[str], options: dict[str, Any],
            window: dict[str, Any] | None = None) -> dict[str, Any]:
    """Trajectory rows of `runs` -> a reward-weighted Parquet dataset at `out`."""
    result = build(runs_dir, out, runs, options, window)
    get_run_logger().info("dataset: %s", result["summary"])
    return result
