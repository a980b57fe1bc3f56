"""A run folder at an fsspec URL gets the same report: its PNGs are written there."""

from __future__ import annotations

import uuid
from pathlib import Path

import fsspec
from configs import run_config
from prefect_reads import flow_run_artifacts
from replies import GOOD

from w4s.flows.optimize import optimize
from w4s.flows.report import PNG_SIGNATURE


def test_a_run_at_a_url_publishes_its_report_and_plots_there():
    root = f"memory://w4s-ui-{uuid.uuid4().hex[:8]}"
    cfg = run_config(Path(), [GOOD], iterations=1, candidates=1, max_repairs=0, runs_dir=root)
    state = optimize(cfg, run_id="remote-a", return_state=True)
    assert state.result()["best_val_accuracy"] == 1.0
    fs = fsspec.filesystem("memory")
    png = fs.cat_file(f"{root.removeprefix('memory://')}/remote-a/report/accuracy.png")
    assert png.startswith(PNG_SIGNATURE)
    arts = {a.key: a for a in flow_run_artifacts(state.state_details.flow_run_id) if a.key}
    assert "data:image/png;base64," in arts["w4s-run-remote-a"].data
    best = arts["w4s-run-remote-a-best-workflow"].data
    assert f"`{root}/remote-a/workflows/best.py` (storage URL" in best
    assert "```python\n" in best and "def solver" in best  # the code itself, inline
