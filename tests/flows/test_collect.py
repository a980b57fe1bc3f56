"""RLAO collection: episodes side by side, one trajectory row per candidate with its
provenance, no held-out test evaluation, and resumable without duplicate rows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from configs import run_config
from replies import GOOD, NO_CODE

from w4s.config import CollectConfig
from w4s.flows.collect import collect, episode_ids
from w4s.models.factory import clear_model_cache
from w4s.storage.dataset import build_dataset


def _config(tmp_path: Path, **extra) -> CollectConfig:
    return run_config(tmp_path, [GOOD, NO_CODE], config_type=CollectConfig, **{
        "episodes": 2, "iterations": 2, "candidates": 2, "val_size": 4, "test_size": 4,
        "max_repairs": 0, **extra})


def _rows(tmp_path: Path) -> list[dict]:
    files = sorted((tmp_path / "runs").glob("*/trajectories/*.parquet"))
    return [r for f in files for r in pq.read_table(f).to_pylist()]


def test_collection_logs_every_candidate_of_every_episode_and_never_tests(tmp_path):
    cfg = _config(tmp_path)
    summary = collect(cfg, collection_id="c1")
    assert summary["status"] == "completed" and not summary["failed"]
    assert summary["episodes"] == ["c1-arithmetic-e000", "c1-arithmetic-e001"]
    rows = _rows(tmp_path)
    actions = [r for r in rows if r["kind"] == "action"]
    assert len(actions) == summary["rows"] == 2 * 2 * 2  # episodes x turns x m
    assert {r["run_id"] for r in actions} == set(summary["episodes"])
    # temperatures spread over the episodes; every row says what sampled it
    assert {r["run_id"]: r["meta_temperature"] for r in actions} == {
        "c1-arithmetic-e000": 0.5, "c1-arithmetic-e001": 1.0}
    assert all(r["prompt_version"] and r["conversation_json"] for r in actions)
    assert summary["reward_histogram"] and summary["positive_share"] > 0
    for eid in summary["episodes"]:  # held-out items are never used in a collection
        assert not (tmp_path / "runs" / eid / "summary.json").exists()
    saved = json.loads((tmp_path / "runs" / "c1.collection.json").read_text())
    assert saved["rows"] == summary["rows"]
    # the rows feed the dataset builder directly
    out = build_dataset(tmp_path / "runs", tmp_path / "d.parquet")
    assert out.rows == sum(1 for r in actions if r["status"] == "ok")

    clear_model_cache()
    again = collect(cfg, collection_id="c1")  # a rerun: nothing redone, nothing added
    assert again["rows"] == summary["rows"] and len(_rows(tmp_path)) == len(rows)


def test_episode_ids_are_stable_and_per_benchmark(tmp_path):
    cfg = _config(tmp_path, benchmark=["arithmetic", "gsm8k"], episodes=2)
    assert episode_ids("c", cfg) == ["c-arithmetic-e000", "c-arithmetic-e001",
                                     "c-gsm8k-e000", "c-gsm8k-e001"]


@pytest.mark.slow
def test_a_collection_killed_with_sigkill_resumes_without_duplicate_rows(tmp_path):
    config = tmp_path / "collect.yaml"
    slow_executor = {"kind": "scripted", "replies": ["maybe 7"]}
    config.write_text(yaml.safe_dump({
        **_config(tmp_path, episodes=3, iterations=3).model_dump(mode="json"),
        "executor": slow_executor,
    }))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), W4S_HOME=str(tmp_path / "home"))
    w4s = str(Path(sys.executable).with_name("w4s"))
    cmd = [w4s, "collect", "--config", str(config), "--collection-id", "k"]
    # its own process group: the SIGKILL reaches Prefect's temporary server (a child that
    # would otherwise outlive the test) as well as `w4s`
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list((tmp_path / "runs").glob("*/trajectories/iter-0001.parquet")):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    killed = len(_rows(tmp_path))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = _rows(tmp_path)
    keys = [(r["run_id"], r["iteration"], r["candidate"]) for r in rows]
    assert len(keys) == len(set(keys)) and len(rows) > killed
    assert sum(r["kind"] == "action" for r in rows) == 3 * 3 * 2
