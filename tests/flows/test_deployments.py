"""deployments/prefect.yaml points at real flows with parameters they accept, and `w4s deploy`
applies it (pools, the GPU limit, the deployments) against a live Prefect server."""

from __future__ import annotations

import importlib
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import TypeAdapter

from w4s.errors import ConfigError, W4SError
from w4s.flows.deploy_cmd import GPU_LIMIT, deploy, load_spec

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "deployments" / "prefect.yaml"


def _flow(entrypoint: str):
    module, name = entrypoint.split(":")
    # flows/x.py installs as w4s.flows.x (pyproject maps the folders into one namespace)
    return getattr(importlib.import_module("w4s." + module.removesuffix(".py").replace("/", ".")),
                   name)


def test_every_deployment_resolves_to_a_flow_with_valid_parameters():
    from prefect.utilities.callables import parameter_schema

    spec = yaml.safe_load(SPEC.read_text())
    flows = {}
    for dep in spec["deployments"]:
        flow = _flow(dep["entrypoint"])
        flows.setdefault(flow.name, set()).add(dep["work_pool"]["name"])
        hints = typing.get_type_hints(flow.fn)
        for name, value in (dep.get("parameters") or {}).items():
            TypeAdapter(hints[name]).validate_python(value)  # raises on a bad value
        # a pydantic model per structured parameter: the UI renders a form from it
        assert parameter_schema(flow.fn).definitions, dep["entrypoint"]
        for schedule in dep.get("schedules", []):
            assert len(schedule["cron"].split()) == 5
    assert flows == {"nightly": {"cpu"}, "collect": {"cpu", "gpu"}, "fit": {"gpu"},
                     "gate": {"gpu"}, "optimize": {"cpu", "gpu"}, "evaluate": {"cpu", "gpu"}}
    # the parent routes `<flow>/<pool>`: every such name exists (optimize-demo aside)
    for dep in spec["deployments"]:
        if dep["name"] not in ("nightly", "optimize-demo"):
            assert dep["name"] == dep["work_pool"]["name"]
    nightly = next(d for d in spec["deployments"] if d["name"] == "nightly")
    assert nightly["schedules"] == [{"cron": "0 2 * * *", "timezone": "UTC", "active": True}]


def test_schedule_overrides_and_bad_ones_are_one_line_errors():
    spec = load_spec(SPEC, timezone="Europe/Berlin", cron="30 3 * * 1-5")
    nightly = next(d for d in spec["deployments"] if d["name"] == "nightly")
    assert nightly["schedules"][0] | {} == {"cron": "30 3 * * 1-5",
                                            "timezone": "Europe/Berlin", "active": True}
    with pytest.raises(ConfigError, match="IANA"):
        load_spec(SPEC, timezone="Mars/Olympus")
    with pytest.raises(ConfigError, match="five-field"):
        load_spec(SPEC, cron="every night")


def test_deploy_without_a_server_is_a_one_line_error(monkeypatch):
    with pytest.raises(W4SError, match="no Prefect server reachable at http://127.0.0.1:9/api"):
        deploy(api_url="http://127.0.0.1:9/api")


def test_deploy_creates_pools_limit_and_deployments_on_the_server(tmp_path, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))  # the `prefect deploy` child
    url = PREFECT_API_URL.value()
    assert url, "the session harness serves an API"
    lines = deploy(api_url=url, timezone="Europe/Berlin")
    text = "\n".join(lines)
    assert "work pool cpu: created (process)" in text
    assert "work pool gpu: created (process)" in text
    assert f"concurrency limit {GPU_LIMIT}: created (1 slot)" in text
    assert "nightly/nightly  pool cpu  0 2 * * * (Europe/Berlin)" in text
    with get_client(sync_client=True) as client:
        assert client.read_work_pool("gpu").type == "process"
        assert client.read_global_concurrency_limit_by_name(GPU_LIMIT).limit == 1
        nightly = client.read_deployment_by_name("nightly/nightly")
        (schedule,) = nightly.schedules
        assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 2 * * *",
                                                                        "Europe/Berlin")
        assert "NightlyConfig" in str(nightly.parameter_openapi_schema)
        assert client.read_deployment_by_name("fit/gpu").work_pool_name == "gpu"
        assert client.read_deployment_by_name("collect/cpu").work_pool_name == "cpu"
        # W4S_REPO is read when deploying: the checkout's path on the workers (default: here)
        assert nightly.pull_steps[0]["prefect.deployments.steps.set_working_directory"] == {
            "directory": str(ROOT)}
    again = "\n".join(deploy(api_url=url, gpu_slots=2))  # idempotent; the limit follows
    assert "work pool cpu: exists (process)" in again
    assert f"concurrency limit {GPU_LIMIT}: 1 -> 2 slots" in again


def test_deploy_paused_then_check_then_trigger_with_one_field_changed(tmp_path, monkeypatch):
    """`w4s deploy --paused` says what the schedule would run; `--check` names the pools no
    worker polls, then passes once workers poll them; `w4s nightly --deployment --set`
    triggers the deployed config with one field changed, and refuses a bad one in a line."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    from w4s.flows.config_cli import Given, set_item
    from w4s.flows.deploy_cmd import check
    from w4s.flows.nightly_cmd import trigger

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.setenv("W4S_HOME", str(tmp_path / "home"))
    url = PREFECT_API_URL.value()
    text = "\n".join(deploy(api_url=url, paused=True))
    assert "schedule nightly/nightly: paused; it would run collect 2 episodes x 2 turns" in text
    with get_client(sync_client=True) as client:
        (schedule,) = client.read_deployment_by_name("nightly/nightly").schedules
        assert schedule.active is False

    lines, ok = check(api_url=url)
    assert not ok
    nightly_line = next(x for x in lines if x.startswith("nightly/nightly: "))
    assert "no worker polls work pool 'cpu': start one with `prefect worker start --pool cpu`" \
        in nightly_line and "gpu" in nightly_line
    with get_client(sync_client=True) as client:  # workers come up (their heartbeats)
        client.send_worker_heartbeat("cpu", "cpu-worker")
        client.send_worker_heartbeat("gpu", "gpu-worker")
    lines, ok = check(api_url=url)
    assert ok, lines
    assert "nightly/nightly: ok" in lines and "fit/gpu: ok" in lines

    out = trigger("nightly/nightly", Given(overrides=set_item("collect.episodes=3")))
    assert out[0].startswith("triggered nightly/nightly: flow run ")
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(out[0].rsplit("(", 1)[1].rstrip(")"))
    assert run.parameters["config"]["collect"]["episodes"] == 3
    assert run.parameters["config"]["collect"]["iterations"] == 2  # the rest as deployed
    with pytest.raises(ConfigError, match=r"^`timezone`: Value error, unknown timezone"):
        trigger("nightly/nightly", Given(overrides=set_item("timezone=Mars/Olympus")))
    with get_client(sync_client=True) as client:  # leave nothing queued for other tests
        client.delete_flow_run(run.id)
        for pool in ("cpu", "gpu"):  # nor a worker that seems alive (no one would run it)
            client.request("DELETE", "/work_pools/{work_pool_name}/workers/{name}",
                           path_params={"work_pool_name": pool, "name": f"{pool}-worker"})


@pytest.mark.parametrize("name", ["nightly-smoke.yaml", "nightly-full.yaml"])
def test_the_shipped_nightly_sizes_are_valid_configs(name):
    from w4s.flows.nightly import load_nightly_config

    cfg = load_nightly_config(str(ROOT / "deployments" / name))
    assert cfg.collect.episodes >= 1 and cfg.fit.max_steps
