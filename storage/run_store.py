"""A run folder: config, fixed split, per-iteration state, candidates, trajectories, results.

Stages exchange only the run folder path (or URL) and ids; each reads what it needs from
here. The folder is local or any fsspec URL (`w4s.paths.location`). Every file is written
whole (`w4s.storage.files`): a crash leaves the old file or the new one, never half of one, and
a rerun overwrites a file rather than appending to it.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from w4s.config import OptimizeConfig
from w4s.cost import Spend
from w4s.errors import W4SError
from w4s.mdp import Candidate, State, hash_code
from w4s.paths import location
from w4s.prompts import PROMPT_VERSION
from w4s.storage.files import atomic_write, write_parquet
from w4s.storage.schema import TRAJECTORY_SCHEMA

CONFIG, SPLIT, SUMMARY = "config.json", "split.json", "summary.json"
FAILED = "failed.json"
SPEND_DIR, BUDGET_GROUP = "spend", "budget_group.json"

__all__ = ["RunStore", "atomic_write", "benchmark_slug", "group_run_ids", "new_run_id"]


def _write_json(path: Any, value: Any) -> None:
    atomic_write(path, json.dumps(value, indent=1, ensure_ascii=False, default=str))


def benchmark_slug(benchmark: str) -> str:
    """A benchmark's name as a run-id part: `file:PATH` by its file's stem."""
    if benchmark.startswith("file:"):
        benchmark = "file_" + Path(benchmark[5:]).name.split(".")[0]
    return "".join(ch if ch.isalnum() else "_" for ch in benchmark)[:24]


def new_run_id(config: OptimizeConfig) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    names = [config.benchmark] if isinstance(config.benchmark, str) else config.benchmark
    bench = "+".join(benchmark_slug(n) for n in names)[:48]
    return f"{stamp}-{bench}-{secrets.token_hex(2)}"


def group_run_ids(group_id: str, benchmarks: list[str]) -> list[str]:
    """The run id of each benchmark of a multi-benchmark run (unique even for equal slugs)."""
    slugs = [benchmark_slug(b) for b in benchmarks]
    if len(set(slugs)) < len(slugs):
        slugs = [f"{j}_{s}" for j, s in enumerate(slugs)]
    return [f"{group_id}-{s}" for s in slugs]


class RunStore:
    def __init__(self, root: str | Path) -> None:
        self.root = location(root)  # a pathlib.Path, or a upath.UPath for a URL

    @classmethod
    def create(cls, runs_dir: str | Path, config: OptimizeConfig,
               run_id: str | None = None) -> RunStore:
        run_id = run_id or new_run_id(config)
        store = cls(location(runs_dir) / run_id)
        if (store.root / CONFIG).exists():
            existing = store.config()
            if existing.config_hash() != config.config_hash():
                raise W4SError(
                    f"`run_id` {run_id!r} exists with a different config; pick a new run id"
                )
            return store
        _write_json(store.root / CONFIG, {
            "run_id": run_id, "config_hash": config.config_hash(),
            "config": config.model_dump(mode="json"),
        })
        return store

    @property
    def run_id(self) -> str:
        return self.root.name

    def exists(self) -> bool:
        return (self.root / CONFIG).is_file()

    def config(self) -> OptimizeConfig:
        path = self.root / CONFIG
        if not path.is_file():
            raise W4SError(f"`run` {str(self.root)!r} is not a w4s run folder (no {CONFIG})")
        return OptimizeConfig.model_validate(json.loads(path.read_text())["config"])

    # -- split: item ids only; items are rebuilt from the benchmark, the test ids stay private
    def save_split(self, validation: list[str], test: list[str],
                   example: str | None = None) -> None:
        """`example`: the item the states show as a worked example (in neither split)."""
        doc: dict[str, Any] = {"validation": validation, "test": test}
        if example is not None:
            doc["example"] = example
        _write_json(self.root / SPLIT, doc)

    def split_ids(self) -> dict[str, list[str]]:
        return json.loads((self.root / SPLIT).read_text())

    # -- state after each iteration (0 = after the seed workflows)
    def _state_path(self, iteration: int) -> Path:
        return self.root / "state" / f"iter-{iteration:04d}.json"

    def save_state(self, iteration: int, state: State) -> None:
        _write_json(self._state_path(iteration), state.to_json())

    def load_state(self, iteration: int) -> State:
        return State.from_json(json.loads(self._state_path(iteration).read_text()))

    def has_state(self, iteration: int) -> bool:
        return self._state_path(iteration).is_file()

    # -- candidates, updated stage by stage
    def _cand_path(self, iteration: int, index: int) -> Path:
        return self.root / "candidates" / f"{iteration:04d}-{index:02d}.json"

    def save_candidate(self, cand: Candidate) -> str:
        _write_json(self._cand_path(cand.iteration, cand.index), cand.to_json())
        return cand.id

    def load_candidate(self, iteration: int, index: int) -> Candidate:
        return Candidate.from_json(json.loads(self._cand_path(iteration, index).read_text()))

    def candidates(self, iteration: int) -> list[Candidate]:
        paths = sorted((self.root / "candidates").glob(f"{iteration:04d}-*.json"))
        return [Candidate.from_json(json.loads(p.read_text())) for p in paths]

    # -- trajectories: one Parquet file per iteration, written once
    def trajectory_path(self, iteration: int) -> Any:
        return self.root / "trajectories" / f"iter-{iteration:04d}.parquet"

    def write_trajectory(
        self, iteration: int, cands: list[Candidate], *, benchmark: str,
        meta_model: str, executor_model: str,
    ) -> Any:
        cfg = self.config()
        run = {"benchmark": benchmark, "meta_model": meta_model,
               "executor_model": executor_model, "config_hash": cfg.config_hash(),
               "meta_temperature": cfg.meta_temperature,
               "meta_adapter": getattr(cfg.meta_agent, "adapter", None),
               "prompt_version": PROMPT_VERSION}
        rows = [_row(c, run) for c in cands]
        table = pa.Table.from_pylist(rows, schema=TRAJECTORY_SCHEMA)
        path = self.trajectory_path(iteration)
        write_parquet(table, path)  # the iteration's whole file, replaced: never appended
        return path

    # -- executor spend, persisted so a resumed run counts it against its budget. Each
    # process writes only its own file (`spend/<writer>.json`), so processes that run stages
    # of one run at once (Dask workers, several hosts) never overwrite each other's totals.
    def save_spend(self, spend: Spend, writer: str) -> None:
        _write_json(self.root / SPEND_DIR / f"{writer}.json", asdict(spend))

    def spend(self, exclude: str | None = None) -> Spend:
        """The run's spend over every process (but `exclude`, a writer's own file)."""
        total = Spend()
        folder = self.root / SPEND_DIR
        if folder.is_dir():
            for path in sorted(folder.glob("*.json")):
                if path.stem != exclude:
                    total = total + Spend(**json.loads(path.read_text()))
        return total

    # -- runs sharing one budget (the benchmarks of one multi-benchmark run)
    def save_budget_group(self, run_ids: list[str]) -> None:
        _write_json(self.root / BUDGET_GROUP, run_ids)

    def budget_group(self) -> list[str]:
        path = self.root / BUDGET_GROUP
        return json.loads(path.read_text()) if path.is_file() else [self.run_id]

    # -- results
    def save_workflow(self, name: str, code: str) -> Any:
        path = self.root / "workflows" / f"{name}.py"
        atomic_write(path, code)
        return path

    def save_summary(self, summary: dict[str, Any]) -> None:
        _write_json(self.root / SUMMARY, summary)

    def summary(self) -> dict[str, Any] | None:
        path = self.root / SUMMARY
        return json.loads(path.read_text()) if path.is_file() else None

    # -- a failed attempt: `w4s runs` shows it failed, not "running or interrupted"
    def save_failure(self, error: str) -> None:
        _write_json(self.root / FAILED, {"status": "failed", "error": error,
                                         "at": datetime.now(timezone.utc).isoformat()})

    def clear_failure(self) -> None:
        path = self.root / FAILED
        if path.is_file():
            path.unlink()

    def failure(self) -> dict[str, Any] | None:
        path = self.root / FAILED
        return json.loads(path.read_text()) if path.is_file() else None


def _row(c: Candidate, run: dict[str, Any]) -> dict[str, Any]:
    """One trajectory row: the candidate, plus `run`'s fields shared by every row."""
    return {
        **run,
        "run_id": c.run_id, "iteration": c.iteration, "candidate": c.index, "kind": c.kind,
        "seed_name": c.seed_name, "prompt_hash": c.prompt_hash,
        "prompt_json": json.dumps(c.prompt, ensure_ascii=False), "reply": c.reply,
        "analysis": c.analysis, "code": c.code, "code_hash": hash_code(c.code),
        "status": c.status, "error": c.error, "repairs": c.repairs,
        "repair_log_json": json.dumps(c.repair_log, ensure_ascii=False),
        "val_accuracy": c.accuracy, "failures_json": json.dumps(c.failures, ensure_ascii=False),
        "reward": c.reward, "chosen": c.chosen, "best_so_far": c.best_so_far,
        "last_accuracy": c.last_accuracy, "meta_prompt_tokens": c.meta_prompt_tokens,
        "meta_completion_tokens": c.meta_completion_tokens, "executor_calls": c.executor_calls,
        "executor_prompt_tokens": c.executor_prompt_tokens,
        "executor_completion_tokens": c.executor_completion_tokens, "cost_usd": c.cost_usd,
        "cache_hits": c.cache_hits, "created_at": c.created_at, "finished_at": c.finished_at,
        "conversation_json": json.dumps(c.conversation or c.prompt, ensure_ascii=False),
    }
