"""RLAO collection as a Prefect flow: many episodes, turn by turn side by side.

An episode is one optimization run (its own run folder, so `w4s show`, `w4s query` and
`w4s dataset` read it like any run) without the test evaluation: held-out items are never
used. All episodes take each stage together (every episode's `generate`, then every
candidate's `self_check`, ...), so the meta-agent's and the executor's calls batch across
episodes. Every stage skips finished work, so a collection killed at any point and rerun
with the same id continues without duplicate or partial rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture, wait

from w4s.config import CollectConfig
from w4s.errors import BudgetExceeded, W4SError, one_line
from w4s.flows import progress, report, ui
from w4s.flows.optimize import log_partial
from w4s.flows.prefect_setup import route_w4s_logs
from w4s.paths import runs_dir as default_runs_dir
from w4s.storage.query import query
from w4s.storage.run_store import atomic_write, benchmark_slug, new_run_id
from w4s.tasks.execute import execute, seed
from w4s.tasks.generate import generate
from w4s.tasks.log_trajectory import log_trajectory
from w4s.tasks.reward import reward
from w4s.tasks.self_check import self_check
from w4s.tasks.stages import prepare_run


def episode_ids(collection_id: str, config: CollectConfig) -> list[str]:
    """Stable ids (a rerun with the same collection id finds the same folders)."""
    counts: dict[str, int] = {}
    ids = []
    for episode in config.episode_configs():
        slug = benchmark_slug(episode.benchmark)
        k = counts[slug] = counts.get(slug, -1) + 1
        ids.append(f"{collection_id}-{slug}-e{k:03d}")
    return ids


class _Episodes:
    """The live episodes of a collection; one whose stage fails drops out with its reason."""

    def __init__(self, run_dirs: list[str]) -> None:
        self.live = list(run_dirs)
        self.failed: dict[str, str] = {}

    def each(self, submit: Callable[[str], PrefectFuture | list[PrefectFuture]]) -> dict:
        """Submit one stage for every live episode, wait for all, keep the results of those
        that succeeded. A budget stop ends the whole collection (one shared budget)."""
        futures = {d: submit(d) for d in self.live}
        flat = [f for fs in futures.values() for f in (fs if isinstance(fs, list) else [fs])]
        wait(flat)
        results, budget = {}, None
        for d, fs in futures.items():
            try:
                results[d] = ([f.result() for f in fs] if isinstance(fs, list)
                              else fs.result())
            except BudgetExceeded as e:
                budget = e
            except Exception as e:  # noqa: BLE001 - one episode's failure is that episode's
                self.failed[Path(d).name] = f"{type(e).__name__}: {one_line(e, 300)}"
        self.live = [d for d in self.live if d in results]
        if budget is not None:
            raise budget
        return results


@flow(name="collect", log_prints=True, flow_run_name=ui.collect_run_name)
def collect(config: CollectConfig, collection_id: str | None = None) -> dict[str, Any]:
    """Collect RLAO trajectories; returns the collection's summary (also saved beside the
    episodes as `<id>.collection.json`). Fails, after saving, if any episode failed."""
    route_w4s_logs()
    logger = get_run_logger()
    cid = collection_id or new_run_id(config)
    root = default_runs_dir(config.runs_dir)
    ids = episode_ids(cid, config)
    # one budget for the whole collection: every episode counts the others' spend
    run_dirs = [prepare_run(cfg, root, eid, ids)
                for eid, cfg in zip(ids, config.episode_configs(), strict=True)]
    logger.info("collection %s: %d episodes x %d turns x %d candidates under %s",
                cid, len(ids), config.iterations, config.candidates, root)
    report.preload()
    ui.label_flow_run(f"collect {ui.benchmarks_label(config)} {cid}", ui.run_tags(config))
    episodes, status = _Episodes(run_dirs), "completed"
    # one step per stage of the collection (2 for the seeds, 5 per turn)
    bar = progress.start(2 + 5 * config.iterations, f"collection {cid}: stages done")

    def each(submit: Callable[[str], PrefectFuture | list[PrefectFuture]]) -> dict:
        results = episodes.each(submit)
        if bar is not None:
            bar.advance()
        return results

    try:
        with progress.stage_progress():
            each(seed.submit)
            each(lambda d: log_trajectory.submit(d, 0))
            for turn in range(1, config.iterations + 1):
                logger.info("turn %d/%d: %d episodes", turn, config.iterations,
                            len(episodes.live))
                indices = each(lambda d, t=turn: generate.submit(d, t))
                each(lambda d, t=turn, ix=indices: [self_check.submit(d, t, j)
                                                    for j in ix[d]])
                each(lambda d, t=turn: execute.submit(d, t))
                each(lambda d, t=turn: reward.submit(d, t))
                each(lambda d, t=turn: log_trajectory.submit(d, t))
    except BudgetExceeded as e:
        logger.warning("%s", e)
        status = "budget exceeded"
        for d in episodes.live:
            log_partial(d, config.iterations)
    summary = _summary(cid, root, ids, episodes, status)
    atomic_write(root / f"{cid}.collection.json", json.dumps(summary, indent=1))
    ui.publish_collection(summary)
    logger.info("collection %s: %d rows, %d of %d episodes done (%s)", cid, summary["rows"],
                len(summary["completed"]), len(ids), status)
    if episodes.failed:
        first = next(iter(episodes.failed.items()))
        raise W4SError(f"{len(episodes.failed)} of {len(ids)} episodes failed ({first[0]}: "
                       f"{first[1]}); rerun with collection id {cid} to resume them")
    return summary


def _summary(cid: str, root: Path, ids: list[str], episodes: _Episodes,
             status: str) -> dict[str, Any]:
    files = [str(p) for eid in ids for p in sorted((root / eid / "trajectories").glob("*.parquet"))]
    rewards: dict[str, int] = {}
    rows = 0
    if files:
        _, counts = query("SELECT reward, count(*) FROM read_parquet(?, union_by_name = true) "
                          "WHERE kind = 'action' GROUP BY reward ORDER BY reward", [files])
        rewards = {"null" if r is None else f"{r:g}": n for r, n in counts}
        rows = sum(rewards.values())
    positive = sum(n for r, n in rewards.items() if r != "null" and float(r) > 0)
    return {
        "collection_id": cid, "status": status, "runs_dir": str(root), "episodes": ids,
        "completed": [Path(d).name for d in episodes.live], "failed": episodes.failed,
        "rows": rows, "reward_histogram": rewards,
        "positive_share": round(positive / rows, 4) if rows else None,
    }

