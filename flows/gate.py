"""The `gate` flow: the stage function `w4s.tasks.gate.run_gate` with its collections run
as `collect` subflows, a GPU slot held, and the verdict published as a Prefect artifact."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from w4s.config import CollectConfig
from w4s.flows.prefect_setup import route_w4s_logs
from w4s.paths import location
from w4s.stage_config import GateConfig
from w4s.storage import adapters
from w4s.tasks import gate as gate_stage
from w4s.tasks.gate import GATE_FILE, champion_folder, default_logliks, gate_markdown


def collect_subflow(config: CollectConfig, collection_id: str, name: str) -> dict[str, Any]:
    """One of the gate's collections, as a `collect` subflow run named `name`."""
    from w4s.flows.collect import collect

    return collect.with_options(flow_run_name=name)(config, collection_id=collection_id)


def run_gate(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """`w4s.tasks.gate.run_gate` with its collections as `collect` subflows."""
    return gate_stage.run_gate(*args, collect=collect_subflow, **kwargs)


@flow(name="gate", log_prints=True)
def gate(challenger: str, environment: CollectConfig, options: GateConfig | None = None,
         runs_dir: str | None = None, base: str = "embedded") -> dict[str, Any]:
    """Compare the adapter `challenger` (id or folder) with the champion on fresh states of
    `environment` (a collection config: benchmark, executor, meta-agent without adapter);
    promote it when not worse. Returns gate.json's document."""
    from w4s.flows.stage_flows import gpu_slot
    from w4s.flows.ui import _safe, artifact_key, in_prefect_run
    from w4s.models.rlao import pick_device

    route_w4s_logs()
    logger = get_run_logger()
    options = options or GateConfig()
    record = adapters.resolve(challenger)
    if runs_dir is None:
        runs_dir = str(location(adapters.adapters_dir()).parent / "gates")
    with gpu_slot(pick_device()[0] != "cpu"):
        doc = run_gate(record, environment, options, runs_dir, logliks=default_logliks(base))
    logger.info("gate %s vs %s: %s (%s)", doc["challenger"], doc["champion"], doc["verdict"],
                "; ".join(doc["reasons"]))
    if in_prefect_run():
        from prefect.artifacts import create_markdown_artifact

        _safe("gate report", create_markdown_artifact, gate_markdown(doc),
              key=artifact_key("gate", doc["challenger"]),
              description=f"w4s gate: {doc['challenger']} vs {doc['champion']}")
    return doc


__all__ = ["GATE_FILE", "GateConfig", "champion_folder", "gate", "gate_markdown", "run_gate"]
