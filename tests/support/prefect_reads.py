"""Reading back what a flow published to the Prefect server (artifacts, events)."""

from __future__ import annotations

import time
from typing import Any


def stored_events(name: str, resource_id: str, wait_s: float = 30) -> list[dict[str, Any]]:
    """The events the server stored under `name` for `resource_id` (it stores them
    asynchronously: poll until one shows up or `wait_s` passes)."""
    from prefect import get_client

    body = {"filter": {"event": {"name": [name]}, "any_resource": {"id": [resource_id]}},
            "limit": 10}
    deadline = time.monotonic() + wait_s
    with get_client(sync_client=True) as client:
        while True:
            found = client.request("POST", "/events/filter", json=body).json()["events"]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.5)


def flow_run_artifacts(flow_run_id: Any) -> list[Any]:
    """Every artifact a flow run (and its task runs) created."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
