"""`w4s nightly`: the nightly chain once, now, here; or a run of its deployment on the server
with some fields changed (Prefect and the flows load only when it runs)."""

from __future__ import annotations

from typing import Any

DEPLOYMENT = "nightly/nightly"


def add_parser(subparsers: Any) -> None:
    """The `nightly` subcommand: the whole chain once, now, in this process (or routed)."""
    p = subparsers.add_parser(
        "nightly", help="RLAO chain: collect -> dataset -> fit -> gate -> optimize -> evaluate",
        description="Runs the chain once; rerun with the same --nightly-id to resume. With "
                    "--deployment, triggers a run of the deployed chain on the Prefect "
                    "server (its parameters, changed by --set) and returns.")
    p.add_argument("--config", help="YAML or TOML file of NightlyConfig fields (with "
                                    "--deployment: replaces the deployment's config)")
    p.add_argument("--deployment", nargs="?", const=DEPLOYMENT, metavar="FLOW/NAME",
                   help=f"trigger a run of this deployment (default {DEPLOYMENT}) on the "
                        "server (PREFECT_API_URL) instead of running here")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="change one config field, dotted, the value as YAML, e.g. "
                        "--set collect.episodes=2 (repeatable)")
    p.add_argument("--nightly-id", help="resume this chain (default: nightly-<date>-<hash>)")
    p.set_defaults(func=cmd_nightly)


def _config_data(args: Any, base: dict[str, Any]) -> dict[str, Any]:
    """The config as a dict: `base` (the file's, or the deployment's), then --set."""
    from w4s.config import deep_merge
    from w4s.flows.cli_common import _overrides
    from w4s.stage_config import NightlyConfig

    return deep_merge(base, _overrides(args, NightlyConfig))


def _read_file(path: str) -> dict[str, Any]:
    from w4s.config import read_config_data

    return read_config_data(path)


def trigger(name: str, data: dict[str, Any] | None, args: Any) -> list[str]:
    """Validate the deployment's config with the changes, then create one flow run."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    from w4s.config import build_config
    from w4s.errors import ConfigError
    from w4s.flows.nightly_checks import config_problems
    from w4s.stage_config import NightlyConfig

    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(name)
        except ObjectNotFound:
            raise ConfigError(f"`--deployment`: {name} is not on the server; run "
                              "`w4s deploy`") from None
    config = _config_data(args, data if data is not None else
                          dict(deployment.parameters.get("config") or {}))
    cfg = build_config(config, NightlyConfig)  # type: ignore[arg-type]
    problems = config_problems(cfg)  # type: ignore[arg-type]
    if problems:
        raise ConfigError(f"{name}: " + "; ".join(problems))
    params: dict[str, Any] = {"config": config}
    if args.nightly_id:
        params["nightly_id"] = args.nightly_id
    run = run_deployment(name, parameters=params, timeout=0)
    return [f"triggered {name}: flow run {run.name} ({run.id})",
            f"follow it: prefect flow-run logs {run.id}  (or the UI)"]


def cmd_nightly(args: Any) -> int:
    from w4s.config import build_config
    from w4s.errors import ConfigError
    from w4s.flows.nightly import nightly
    from w4s.stage_config import NightlyConfig

    if args.deployment:
        data = _read_file(args.config) if args.config else None
        for line in trigger(args.deployment, data, args):
            print(line)
        return 0
    if not args.config:
        raise ConfigError("`--config` is required to run the chain here (or pass "
                          "--deployment to trigger the deployed one)")
    cfg = build_config(_config_data(args, _read_file(args.config)), NightlyConfig)
    result = nightly(cfg, nightly_id=args.nightly_id)
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
