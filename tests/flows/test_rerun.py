"""A nightly chain killed with SIGKILL while its fit stage runs, then rerun with the same
id: the data stays consistent (no duplicate trajectory rows, one dataset matching its card,
one registered adapter, a complete adapter folder) and the chain completes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from nightly_support import build_tiny_base, nightly_data

from w4s.storage.dataset import card_path_for


@pytest.mark.slow
def test_a_chain_killed_in_its_fit_stage_reruns_to_consistent_data(tmp_path):
    from prefect.settings import PREFECT_API_URL

    base = build_tiny_base(tmp_path / "tiny")
    config = tmp_path / "nightly.yaml"
    config.write_text(yaml.safe_dump(nightly_data(tmp_path, base)))
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(),  # the session's server
           "PREFECT_HOME": str(tmp_path / "prefect"), "W4S_HOME": str(tmp_path / "home")}
    cmd = [str(Path(sys.executable).with_name("w4s")), "nightly", "--config", str(config),
           "--nightly-id", "k1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    seen: list[str] = []
    fit_started = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            seen.append(line)
            if "Beginning subflow run 'fit k1'" in line:
                fit_started.set()

    threading.Thread(target=read, daemon=True).start()
    assert fit_started.wait(300), "".join(seen)[-3000:]
    time.sleep(0.5)  # inside the fit: loading the base, fitting, writing the adapter
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    runs = tmp_path / "runs"
    assert not (runs / "k1.nightly.json").exists()
    assert not (tmp_path / "adapters" / "k1" / "metrics.json").exists()  # killed mid-fit

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((runs / "k1.nightly.json").read_text())

    rows = [r for f in sorted(runs.glob("k1-*/trajectories/*.parquet"))
            for r in pq.read_table(f).to_pylist()]
    keys = [(r["run_id"], r["iteration"], r["candidate"]) for r in rows]
    assert len(keys) == len(set(keys))
    dataset = Path(result["dataset"])
    card = json.loads(card_path_for(dataset).read_text())
    assert pq.read_table(dataset).num_rows == card["counts"]["included"] == result["dataset_rows"]
    assert hashlib.sha256(dataset.read_bytes()).hexdigest() == card["sha256"]
    records = [json.loads(p.read_text()) for p in (tmp_path / "home" / "adapters").glob("*.json")]
    assert [r["path"] for r in records] == [result["adapter"]]  # registered once
    adapter = Path(result["adapter"])
    assert {"adapter_config.json", "adapter_model.safetensors", "metrics.json"} <= {
        p.name for p in adapter.iterdir()}
    assert not [p for p in adapter.rglob("*") if ".tmp" in p.name]
    assert json.loads((adapter / "metrics.json").read_text())["steps"] == 1


def _optimize_config(tmp_path: Path):
    from configs import run_config
    from nightly_support import EXECUTOR, GOOD, NO_CODE

    return run_config(tmp_path, [GOOD, NO_CODE], iterations=1, candidates=2, val_size=2,
                      test_size=2, max_repairs=0, use_cache=False, reuse_outcomes=False,
                      executor=EXECUTOR)


def test_cached_stages_never_stand_in_for_files_that_are_gone(tmp_path, monkeypatch):
    """A finished run's stages come from the cache; a deleted trajectory file is written
    again, and a deleted run folder is rebuilt from scratch (not "served" from the cache)."""
    from w4s.flows.optimize import optimize
    from w4s.models.factory import clear_model_cache
    from w4s.tasks import stages

    monkeypatch.setenv("W4S_HOME", str(tmp_path / "home"))
    cfg = _optimize_config(tmp_path)
    ran: list[str] = []

    def counted(name: str, real):
        def stage(*args, **kwargs):
            ran.append(name)
            return real(*args, **kwargs)
        return stage

    for name in ("seed", "generate", "execute", "log_trajectory", "evaluate_test"):
        monkeypatch.setattr(stages, name, counted(name, getattr(stages, name)))
    run = tmp_path / "runs" / "c1"
    first = optimize(cfg, run_id="c1")
    assert set(ran) == {"seed", "generate", "execute", "log_trajectory", "evaluate_test"}

    ran.clear()
    assert optimize(cfg, run_id="c1")["test_accuracy"] == first["test_accuracy"]
    assert ran == []  # every stage Cached: not even its on-disk check ran

    (run / "trajectories" / "iter-0001.parquet").unlink()
    optimize(cfg, run_id="c1")
    assert ran == ["log_trajectory"] and (run / "trajectories" / "iter-0001.parquet").is_file()

    ran.clear()
    shutil.rmtree(run)
    clear_model_cache()  # the scripted meta-agent starts its replies again
    again = optimize(cfg, run_id="c1")
    assert {"seed", "generate", "execute", "evaluate_test"} <= set(ran)
    assert again["best_val_accuracy"] == first["best_val_accuracy"]
    assert (run / "summary.json").is_file() and (run / "workflows" / "best.py").is_file()
