"""The Kubernetes GPU work-pool template: the server accepts it as a pool's base job template,
and rendered the way a worker renders it (Prefect's own templating) it is a GPU Job manifest
that passes prefect-kubernetes' manifest checks. No cluster is needed (or here)."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from pathlib import Path
from typing import Any

import jsonpatch
import jsonschema
import pytest
from prefect.utilities.templating import find_placeholders
from prefect.workers.base import BaseJobConfiguration

TEMPLATE = Path(__file__).resolve().parents[2] / "deployments" / "k8s" / "gpu-job-template.json"

# What prefect-kubernetes' job configuration requires of every manifest
# (prefect_kubernetes.worker._get_base_job_manifest): missing paths or other values fail.
REQUIRED = {
    "apiVersion": "batch/v1", "kind": "Job", "metadata": {"labels": {}},
    "spec": {"template": {"spec": {"parallelism": 1, "completions": 1,
                                   "restartPolicy": "Never",
                                   "containers": [{"name": "prefect-job"}]}}},
}


class _K8sJobConfiguration(BaseJobConfiguration):
    """The fields of prefect-kubernetes' KubernetesWorkerJobConfiguration that templating fills
    (prefect-kubernetes itself is not installed here)."""

    namespace: str = "default"
    job_manifest: dict[str, Any]
    cluster_config: Any = None
    job_watch_timeout_seconds: int | None = None
    pod_watch_timeout_seconds: int = 60
    stream_output: bool = True


def _template() -> dict[str, Any]:
    return json.loads(TEMPLATE.read_text())


def _render(job_variables: dict[str, Any]) -> _K8sJobConfiguration:
    """What a worker does with the pool's template and a deployment's job variables."""
    return asyncio.run(_K8sJobConfiguration.from_template_and_values(_template(), job_variables))


def _container(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["template"]["spec"]["containers"][0]


def test_every_placeholder_is_a_declared_variable_with_valid_defaults():
    template = _template()
    assert set(template) == {"job_configuration", "variables"}
    declared = set(template["variables"]["properties"])
    used = {p.name for p in find_placeholders(template["job_configuration"])}
    assert used <= declared and {"gpu_count", "image", "command"} <= used
    schema = template["variables"]
    jsonschema.Draft202012Validator.check_schema(schema)
    defaults = {k: v["default"] for k, v in schema["properties"].items()
                if v.get("default") is not None}
    jsonschema.validate(defaults, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**defaults, "gpu_count": 0}, schema)


def test_rendered_with_defaults_it_is_a_gpu_job_prefect_kubernetes_accepts():
    config = _render({})
    manifest = config.job_manifest
    assert manifest["apiVersion"] == "batch/v1" and manifest["kind"] == "Job"
    assert "{{" not in json.dumps(manifest)  # nothing left unrendered
    container = _container(manifest)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert container["image"] == "w4s-gpu:latest"
    # the worker writes the command into args and the job's env into the container's env
    assert "args" not in container and config.env == {"W4S_HOME": "/var/lib/w4s"}
    pod = manifest["spec"]["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in \
        pod["tolerations"]
    assert "serviceAccountName" not in pod  # None defaults are dropped, not sent as null
    assert manifest["metadata"]["namespace"] == config.namespace == "default"
    assert config.pod_watch_timeout_seconds == 600

    patch = jsonpatch.make_patch(manifest, REQUIRED)  # what prefect-kubernetes checks
    assert [op["path"] for op in patch if op["op"] in ("add", "replace")] == []


def test_a_deployment_overrides_gpus_namespace_and_env():
    config = _render({"gpu_count": 2, "namespace": "w4s", "memory_limit": "64Gi",
                      "env": {"W4S_STORAGE_URL": "s3://bucket/w4s"},
                      "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}})
    manifest = config.job_manifest
    container = _container(manifest)
    assert container["resources"]["limits"] == {"memory": "64Gi", "nvidia.com/gpu": 2}
    assert config.env == {"W4S_HOME": "/var/lib/w4s", "W4S_STORAGE_URL": "s3://bucket/w4s"}
    assert manifest["metadata"]["namespace"] == "w4s"
    assert manifest["spec"]["template"]["spec"]["nodeSelector"] == {
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}


def test_the_server_takes_it_as_a_kubernetes_pool_and_refuses_a_broken_one():
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import PrefectHTTPStatusError

    name = f"gpu-k8s-{uuid.uuid4().hex[:6]}"
    broken = copy.deepcopy(_template())
    del broken["variables"]["properties"]["gpu_count"]

    async def go():
        async with get_client() as client:
            pool = await client.create_work_pool(WorkPoolCreate(
                name=name, type="kubernetes", base_job_template=_template()))
            try:
                assert pool.type == "kubernetes"
                assert pool.base_job_template["job_configuration"] == \
                    _template()["job_configuration"]
            finally:
                await client.delete_work_pool(name)
            with pytest.raises(PrefectHTTPStatusError, match="gpu_count"):
                await client.create_work_pool(WorkPoolCreate(
                    name=name + "-broken", type="kubernetes", base_job_template=broken))

    asyncio.run(go())
