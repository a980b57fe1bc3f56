"""`w4s nightly`: the nightly chain once, now, here; or a run of its deployment on the server
with some fields changed (Prefect and the flows load only when it runs)."""

from __future__ import annotations

from typing import Any

from w4s.flows.config_cli import Given, config_command, option
from w4s.stage_config import NightlyConfig

DEPLOYMENT = "nightly/nightly"


def trigger(name: str, given: Given, nightly_id: str | None = None) -> list[str]:
    """Validate the deployment's config (or the `--config` file, which replaces it) with the
    changes, then create one flow run."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    from w4s.config import build_config, deep_merge, read_config_data
    from w4s.errors import ConfigError
    from w4s.flows.nightly_checks import config_problems

    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(name)
        except ObjectNotFound:
            raise ConfigError(f"`--deployment`: {name} is not on the server; run "
                              "`w4s deploy`") from None
    base = (read_config_data(given.config_file) if given.config_file
            else dict(deployment.parameters.get("config") or {}))
    config = deep_merge(base, given.overrides)
    cfg = build_config(config, NightlyConfig)  # type: ignore[arg-type]
    problems = config_problems(cfg)  # type: ignore[arg-type]
    if problems:
        raise ConfigError(f"{name}: " + "; ".join(problems))
    params: dict[str, Any] = {"config": config}
    if nightly_id:
        params["nightly_id"] = nightly_id
    run = run_deployment(name, parameters=params, timeout=0)
    return [f"triggered {name}: flow run {run.name} ({run.id})",
            f"follow it: prefect flow-run logs {run.id}  (or the UI)"]


def _nightly(given: Given, *, deployment: bool | str | None = None,
             nightly_id: str | None = None) -> int:
    from w4s.errors import ConfigError
    from w4s.flows.nightly import nightly

    if deployment:
        name = DEPLOYMENT if deployment is True else str(deployment)
        for line in trigger(name, given, nightly_id):
            print(line)
        return 0
    if not given.config_file:
        raise ConfigError("`--config` is required to run the chain here (or pass "
                          "--deployment to trigger the deployed one)")
    cfg = given.load(NightlyConfig)
    result = nightly(cfg, nightly_id=nightly_id)
    ev = result["evaluation"]
    print(f"nightly {result['nightly_id']}: {result['rows']} rows -> {result['dataset_rows']}"
          f" samples -> adapter {result['adapter_id']} ({result['fit_steps']} steps)")
    print(f"best workflow:  {result['best_workflow']}")
    print(f"evaluation:     {ev['accuracy']:.4f} on {ev['items']} items of {ev['benchmark']} "
          f"({ev['split']}); report {result['evaluation_report']}")
    print(f"adapter:        {result['adapter']}")
    if result.get("fit_skipped"):
        print(f"fit:            {result['fit_skipped']}")
    gate = result.get("gate")
    if gate:
        print(f"gate:           {gate['verdict']} ({gate['challenger']} vs {gate['champion']}: "
              f"{'; '.join(gate['reasons'])})")
    print(f"optimized with: {result.get('optimize_adapter') or 'the base model'}")
    for warning in result.get("warnings", []):
        print(f"warning:        {warning}")
    return 0


nightly = config_command(
    NightlyConfig, _nightly,
    help="RLAO chain: collect -> dataset -> fit -> gate -> optimize -> evaluate, once; rerun "
         "with the same --nightly-id to resume. With --deployment, triggers a run of the "
         "deployed chain on the Prefect server (its parameters, changed by --set or replaced "
         "by --config) and returns. One nested field: --set collect.episodes=2.",
    options=[
        option("deployment", bool | str | None, "trigger a run of this deployment (FLOW/NAME, "
               f"default {DEPLOYMENT}) on the server (PREFECT_API_URL) instead of running "
               "here", negative=""),
        option("nightly_id", str | None, "resume this chain (default: nightly-<date>-<hash>)"),
    ])
