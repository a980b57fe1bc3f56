"""deployments/prefect.yaml points at real flows with parameters the flow accepts."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

from w4s.config import OptimizeConfig

ROOT = Path(__file__).resolve().parents[2]


def test_every_deployment_resolves_to_a_flow_with_valid_parameters():
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    assert spec["deployments"]
    for dep in spec["deployments"]:
        module, name = dep["entrypoint"].split(":")
        flow = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), name)
        assert flow.name == "optimize", dep["name"]
        OptimizeConfig.model_validate(dep["parameters"]["config"])
        assert dep["work_pool"]["name"] in ("cpu", "gpu")
        for schedule in dep.get("schedules", []):
            assert len(schedule["cron"].split()) == 5
