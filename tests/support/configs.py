"""The one builder of run configs for tests: an arithmetic run with scripted models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from w4s.config import OptimizeConfig


def run_config(tmp_path: Path, meta_replies: list[str] | tuple[str, ...] = ("x",),
               executor_reply: str = "maybe 7", *,
               config_type: type[OptimizeConfig] = OptimizeConfig, **fields: Any) -> Any:
    """`config_type` (OptimizeConfig, CollectConfig) for arithmetic from the `direct` seed,
    runs under `tmp_path/runs`, the meta-agent replying `meta_replies` in turn and the
    executor always `executor_reply`; `fields` set or override anything else."""
    data: dict[str, Any] = {
        "benchmark": "arithmetic", "seed_workflow": "direct", "val_size": 3, "test_size": 3,
        "runs_dir": str(tmp_path / "runs"),
        "meta_agent": {"kind": "scripted", "replies": list(meta_replies)},
        "executor": {"kind": "scripted", "replies": [executor_reply]},
    }
    data.update(fields)
    return config_type.model_validate(data)
