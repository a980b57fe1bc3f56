"""DuckDB reads over run folders; a fresh connection per call (connections are not
thread-safe), and Parquet files are only ever read here.

Run folders are local paths or fsspec URLs (`w4s.paths.location`): a local read hands DuckDB
a glob, a remote one the listed files over the registered fsspec filesystem.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb

from w4s.errors import W4SError
from w4s.paths import location
from w4s.storage.files import connect, is_local

ITERATION_TABLE = """
SELECT iteration,
       count(*) AS candidates,
       count(*) FILTER (WHERE status = 'ok') AS ran,
       count(*) FILTER (WHERE status = 'skipped') AS skipped,
       count(*) FILTER (WHERE status = 'infra_error') AS lost,
       count(*) FILTER (WHERE status = 'budget_exceeded') AS stopped,
       sum(repairs) AS repairs,
       max(val_accuracy) AS best_val,
       max(val_accuracy) FILTER (WHERE chosen) AS chosen_val,
       round(avg(reward), 3) AS mean_reward,
       sum(meta_completion_tokens) AS meta_tokens,
       sum(executor_prompt_tokens + executor_completion_tokens) AS executor_tokens
FROM read_parquet(?)
GROUP BY iteration ORDER BY iteration
"""


def _parquet_source(root: Any, pattern: str) -> str | list[str]:
    """What DuckDB reads: the glob when local (DuckDB expands it), else the listed files."""
    if is_local(root):
        return str(root / pattern)
    return sorted(str(p) for p in root.glob(pattern))


def _has_parquet(run_dir: Any) -> bool:
    return any((run_dir / "trajectories").glob("*.parquet"))


def query(sql: str, params: list[Any] | None = None, *,
          on: Any = None) -> tuple[list[str], list[tuple]]:
    """`sql` on a fresh connection; `on`: a location whose filesystem DuckDB must read."""
    with connect([on] if on is not None else []) as con:
        cur = con.execute(sql, params or [])
        return [d[0] for d in cur.description], cur.fetchall()


def iteration_table(run_dir: str | Path) -> tuple[list[str], list[tuple]]:
    """Per-iteration summary of a run, straight from its Parquet rows."""
    run_dir = location(run_dir)
    if not _has_parquet(run_dir):
        raise W4SError(f"`run` {run_dir.name!r} has no trajectory rows yet")
    return query(ITERATION_TABLE, [_parquet_source(run_dir, "trajectories/*.parquet")],
                 on=run_dir)


def candidates_view(con: duckdb.DuckDBPyConnection, runs_dir: str | Path) -> None:
    """A `candidates` view over every run's trajectories, for ad-hoc SQL (a remote
    `runs_dir` needs its filesystem registered on `con`: `w4s.storage.files.connect`)."""
    source = _parquet_source(location(runs_dir), "*/trajectories/*.parquet")
    files = [source] if isinstance(source, str) else source
    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    con.execute(
        f"CREATE OR REPLACE VIEW candidates AS SELECT * FROM read_parquet([{listed}], "
        "union_by_name = true)"
    )


def query_runs(runs_dir: str | Path, sql: str) -> tuple[list[str], list[tuple]]:
    """Run ad-hoc SQL with a `candidates` view over every run's trajectory rows."""
    runs_dir = location(runs_dir)
    if not any(runs_dir.glob("*/trajectories/*.parquet")):
        raise W4SError(f"`runs_dir` {str(runs_dir)!r} holds no trajectory rows yet")
    with connect([runs_dir]) as con:
        candidates_view(con, runs_dir)
        try:
            cur = con.execute(sql)
        except duckdb.Error as e:
            raise W4SError(f"`sql`: {str(e).splitlines()[0]}") from e
        return [d[0] for d in cur.description], cur.fetchall()


def _episode_statuses(runs_dir: Any) -> dict[str, str]:
    """episode run id -> its status in the collection that ran it (an episode has no test
    evaluation, hence no summary of its own)."""
    out: dict[str, str] = {}
    for path in sorted(runs_dir.glob("*.collection.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        cid = doc.get("collection_id", path.name.removesuffix(".collection.json"))
        for e in doc.get("completed", []):
            out[e] = f"collected ({cid}, {doc.get('status', 'completed')})"
        for e, why in (doc.get("failed") or {}).items():
            out[e] = f"failed ({cid}): {why}"
    return out


def _status(d: Any, summary: dict[str, Any], episodes: dict[str, str]) -> str:
    if summary:
        return summary.get("status", "completed")
    if d.name in episodes:
        return episodes[d.name]
    failed = d / "failed.json"
    if failed.is_file():
        return f"failed: {json.loads(failed.read_text()).get('error', '')}"
    return "running or interrupted"


def list_runs(runs_dir: str | Path) -> list[dict[str, Any]]:
    """Every run folder, newest first, with its summary when finished, a collection
    episode's status in its collection, a failed run's error."""
    out: list[dict[str, Any]] = []
    runs_dir = location(runs_dir)
    if not runs_dir.is_dir():
        return out
    episodes = _episode_statuses(runs_dir)
    for d in sorted((p for p in runs_dir.iterdir() if (p / "config.json").is_file()),
                    key=lambda p: p.name, reverse=True):
        cfg = json.loads((d / "config.json").read_text())["config"]
        summary_path = d / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        rows = 0
        if _has_parquet(d):
            rows = query("SELECT count(*) FROM read_parquet(?)",
                         [_parquet_source(d, "trajectories/*.parquet")], on=d)[1][0][0]
        out.append({
            "run_id": d.name,
            "benchmark": cfg["benchmark"],
            "status": _status(d, summary, episodes),
            "iterations": cfg["iterations"],
            "rows": rows,
            "best_val": summary.get("best_val_accuracy"),
            "test": summary.get("test_accuracy"),
        })
    return out
