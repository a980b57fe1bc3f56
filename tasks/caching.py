"""Prefect cache policies keyed on a stage's real inputs, so a rerun skips finished work.

Prefect's default key (INPUTS + TASK_SOURCE + RUN_ID) includes the flow-run id: a new run
of the same parameters would recompute everything. The keys here are the task's inputs
(INPUTS) plus what those inputs stand for: the run folder's config (its hash, and the
config file's identity, so a deleted and recreated folder never meets old results), the
data snapshot a stage starts from (the state file, the trajectory files, the dataset's
sha256), and a hash of the w4s code. Results are persisted (`persist_result=True`) in
Prefect's result storage (`PREFECT_LOCAL_STORAGE_PATH`, or the block named by
`PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK`), so another process, or a later flow run, finds them.

A stage that writes files it is asked for (a dataset, an adapter folder, a report) names
them (`outputs`): when a cached result exists but those files are gone, the stage runs again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from prefect.cache_policies import INPUTS, CachePolicy
from prefect.utilities.hashing import hash_objects

from w4s.errors import ConfigError
from w4s.hashing import stream_sha256

ROOT = Path(__file__).resolve().parents[1]
CODE_PACKAGES = ("w4s", "models", "storage", "tasks", "flows")
MISSING = "missing"


@lru_cache(maxsize=1)
def code_hash() -> str:
    """sha256 over the w4s sources: a code change invalidates every cached stage."""
    digest = hashlib.sha256()
    for package in CODE_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _fs_path(path: str | os.PathLike[str]) -> tuple[Any, str]:
    """(fsspec filesystem, path) for a local path or any fsspec URL."""
    import fsspec.core

    text = str(path)
    if "://" not in text:
        from fsspec.implementations.local import LocalFileSystem

        return LocalFileSystem(), str(Path(text).expanduser())
    return fsspec.core.url_to_fs(text)


def file_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes; `missing` when it does not exist."""
    fs, p = _fs_path(path)
    try:
        with fs.open(p, "rb") as f:
            return stream_sha256(f).hexdigest()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return MISSING


def file_identity(path: str | os.PathLike[str]) -> str:
    """A file's content and modification time: equal content written anew differs."""
    fs, p = _fs_path(path)
    try:
        info = fs.info(p)
    except FileNotFoundError:
        return MISSING
    stamp = info.get("mtime") or info.get("LastModified") or info.get("created") or ""
    return f"{file_digest(path)}@{stamp}"


def exists(path: str | os.PathLike[str]) -> bool:
    fs, p = _fs_path(path)
    return bool(fs.exists(p))


@dataclass
class RealInputs(CachePolicy):
    """INPUTS + `extra(inputs)` (the data behind the inputs) + the task's name + the code hash.

    `extra` returns a JSON-able mapping, or None to run without caching (e.g. an input
    file is unreadable); `outputs(inputs)` names the files a cached result stands for.
    """

    extra: Callable[[dict[str, Any]], dict[str, Any] | None] = field(default=lambda _: {})
    outputs: Callable[[dict[str, Any]], Iterable[str]] | None = None

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        extra = self.extra(inputs)
        if extra is None:
            return None
        key = hash_objects(
            task_ctx.task.name, code_hash(), extra,
            INPUTS.compute_key(task_ctx, inputs, flow_parameters, **kwargs),
            raise_on_failure=True,
        )
        if self.outputs is not None and not all(exists(p) for p in self.outputs(inputs)):
            store = getattr(task_ctx, "result_store", None)
            if store is not None and store.exists(key):
                return None  # the cached result names files that are gone: run again
        return key


# ------------------------------------------------------------------ optimize-stage keys


def _state_file(run_dir: str, iteration: int) -> str:
    return f"{run_dir.rstrip('/')}/state/iter-{iteration:04d}.json"


def run_snapshot(run_dir: str, iteration: int | None) -> dict[str, Any]:
    """What an optimize stage of `iteration` starts from: the run folder's config (content
    and identity) and the state before the iteration (the split for the seed stage)."""
    root = run_dir.rstrip("/")
    start = (f"{root}/split.json" if iteration is None or iteration < 1
             else _state_file(run_dir, iteration - 1))
    return {"config": file_identity(f"{root}/config.json"), "start": file_digest(start)}


def _stage_extra(inputs: dict[str, Any]) -> dict[str, Any]:
    iteration = inputs.get("iteration", inputs.get("iterations_done"))
    snap = run_snapshot(str(inputs["run_dir"]), iteration)
    if "iterations_done" in inputs:  # the test evaluation starts from the last state
        snap["start"] = file_digest(_state_file(str(inputs["run_dir"]),
                                                int(inputs["iterations_done"])))
    return snap


def _iteration_done(inputs: dict[str, Any]) -> list[str]:
    """An iteration's stages are served from the cache only once its state is saved: after
    a crash inside an iteration they run again (and skip, on disk, what they had finished)."""
    return [_state_file(str(inputs["run_dir"]), int(inputs.get("iteration", 0)))]


def _trajectory_written(inputs: dict[str, Any]) -> list[str]:
    root = str(inputs["run_dir"]).rstrip("/")
    return [f"{root}/trajectories/iter-{int(inputs['iteration']):04d}.parquet"]


def _summary_written(inputs: dict[str, Any]) -> list[str]:
    return [f"{str(inputs['run_dir']).rstrip('/')}/summary.json"]


# tasks over (run_dir, iteration[, index]) in tasks/execute.py, generate.py, self_check.py,
# reward.py; seed is iteration 0
RUN_STAGE = RealInputs(extra=_stage_extra, outputs=_iteration_done)
TRAJECTORY_STAGE = RealInputs(extra=_stage_extra, outputs=_trajectory_written)
TEST_STAGE = RealInputs(extra=_stage_extra, outputs=_summary_written)


def stage_timeout(stage: str, default: float | None = None) -> float | None:
    """`W4S_TIMEOUT_<STAGE>_S` (seconds), else `W4S_STAGE_TIMEOUT_S`, else `default`.

    Read when the task module is imported: set it in the worker's environment."""
    for name in (f"W4S_TIMEOUT_{stage.upper()}_S", "W4S_STAGE_TIMEOUT_S"):
        value = os.environ.get(name, "").strip()
        if value:
            try:
                seconds = float(value)
            except ValueError:
                raise ConfigError(f"`{name}` must be a number of seconds, but is {value!r}") \
                    from None
            return seconds if seconds > 0 else None
    return default
