"""A run folder at an fsspec URL gets the same report: its PNGs are written there."""

from __future__ import annotations

import uuid

import fsspec
import pytest
from prefect_reads import flow_run_artifacts
from replies import GOOD

from w4s.config import build_config
from w4s.flows.optimize import optimize
from w4s.flows.report import PNG_SIGNATURE
from w4s.models.factory import clear_model_cache


@pytest.fixture(autouse=True)
def _fresh_models():
    clear_model_cache()
    yield
    clear_model_cache()


def test_a_run_at_a_url_publishes_its_report_and_plots_there():
    root = f"memory://w4s-ui-{uuid.uuid4().hex[:8]}"
    cfg = build_config({
        "benchmark": "arithmetic", "seed_workflow": "direct", "iterations": 1, "candidates": 1,
        "val_size": 3, "test_size": 3, "max_repairs": 0, "runs_dir": root,
        "meta_agent": {"kind": "scripted", "replies": [GOOD]},
        "executor": {"kind": "scripted", "replies": ["maybe 7"]},
    })
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
