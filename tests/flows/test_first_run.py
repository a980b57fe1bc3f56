"""A new user's first command: a real `w4s` process, a fresh PREFECT_HOME, no test harness.

Prefect creates and migrates its database on the first start of a new home, which took
longer here than Prefect's default 20 s wait for its ephemeral server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from replies import GOOD


@pytest.mark.slow
def test_first_command_on_a_fresh_prefect_home_completes(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "benchmark": "arithmetic", "seed_workflow": "direct", "iterations": 1,
        "candidates": 1, "val_size": 3, "test_size": 3, "runs_dir": str(tmp_path / "runs"),
        "meta_agent": {"kind": "scripted", "replies": [GOOD]},
        "executor": {"kind": "scripted", "replies": ["7"]},
    }))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), W4S_HOME=str(tmp_path / "w4s-home"))
    w4s = Path(sys.executable).with_name("w4s")
    done = subprocess.run(
        [str(w4s), "optimize", "--config", str(config), "--run-id", "first"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "prefect-home" / "prefect.db").is_file()
    summary = json.loads((tmp_path / "runs" / "first" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["test_accuracy"] == 1.0


def test_w4s_info_messages_are_shown_after_any_command(tmp_path: Path, caplog) -> None:
    import logging

    from w4s.flows.cli import main

    assert main(["runs", "--runs-dir", str(tmp_path)]) == 0
    logging.getLogger("w4s.models.embedded").info("dequantizing the embedded model once")
    assert "dequantizing the embedded model once" in caplog.text  # INFO, not only WARNING
