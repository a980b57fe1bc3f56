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
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from w4s.config import CollectConfig
from w4s.errors import W4SError
from w4s.flows import progress, report, ui
from w4s.flows.optimize import submit_stage
from w4s.flows.prefect_setup import route_w4s_logs
from w4s.paths import runs_dir as default_runs_dir
from w4s.storage.query import query
from w4s.storage.run_store import atomic_write, benchmark_slug, new_run_id
from w4s.tasks.stages import prepare_run
from w4s.tasks.turn import STAGES_PER_TURN, STAGES_TO_START, Episodes, run_turns


def episode_ids(collection_id: str, config: CollectConfig) -> list[str]:
    """Stable ids (a rerun with the same collection id finds the same folders)."""
    counts: dict[str, int] = {}
    ids = []
    for episode in config.episode_configs():
        slug = benchmark_slug(episode.benchmark)
        k = counts[slug] = counts.get(slug, -1) + 1
        ids.append(f"{collection_id}-{slug}-e{k:03d}")
    return ids


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
    # one step per stage of the collection (the seeds', then each turn's)
    bar = progress.start(STAGES_TO_START + STAGES_PER_TURN * config.iterations,
                         f"collection {cid}: stages done")
    episodes = Episodes(run_dirs, submit_stage, isolate=True,
                        on_stage=bar.advance if bar is not None else None)
    with progress.stage_progress():
        status, _ = run_turns(episodes, config.iterations, before_turn=lambda t: logger.info(
            "turn %d/%d: %d episodes", t, config.iterations, len(episodes.live)))
    if episodes.budget_stop is not None:
        logger.warning("%s", episodes.budget_stop)
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


def _summary(cid: str, root: Path, ids: list[str], episodes: Episodes,
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

