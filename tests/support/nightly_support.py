"""A tiny nightly chain for tests: scripted collection, a fit on a 2-layer random Llama,
optimize with that model plus the fitted adapter as the meta-agent, a scripted executor."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from replies import GOOD, NO_CODE

ROOT = Path(__file__).resolve().parents[2]
EXECUTOR = {"kind": "scripted", "replies": ["maybe 7"]}


def build_tiny_base(folder: Path) -> Path:
    """tests/models' tiny random Llama (about a second, offline), with a context long enough
    for an optimize prompt (RoPE: only the config's limit changes)."""
    spec = importlib.util.spec_from_file_location("tiny_llama",
                                                  ROOT / "tests" / "models" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build_tiny_model(folder)
    config = json.loads((folder / "config.json").read_text())
    config["max_position_embeddings"] = 8192
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def nightly_data(tmp_path: Path, base: Path, **extra: Any) -> dict[str, Any]:
    """NightlyConfig fields; no executor-call cache nor reused outcomes, so a stage that ran
    again would call the executor again (and be counted)."""
    common = {"benchmark": "arithmetic", "seed_workflow": "direct", "val_size": 2,
              "test_size": 2, "max_repairs": 0, "runs_dir": str(tmp_path / "runs"),
              "use_cache": False, "reuse_outcomes": False, "executor": EXECUTOR}
    return {
        "collect": {**common, "episodes": 1, "iterations": 1, "candidates": 2,
                    "meta_agent": {"kind": "scripted", "replies": [GOOD, NO_CODE]}},
        "dataset": {"include_skipped": True},
        "fit": {"base": str(base), "max_steps": 1, "batch_tokens": 512,
                "checkpoint_every": 0},
        "optimize": {**common, "iterations": 1, "candidates": 1,
                     "meta_agent": {"kind": "transformers", "model": str(base),
                                    "max_new_tokens": 8}},
        **extra,
    }
