"""`w4s deploy`: set up a Prefect server for w4s in one command.

Creates the work pools the deployments name (`gpu`, `cpu`; process type unless told
otherwise), the global concurrency limit that keeps two GPU stages off one GPU, and applies
`deployments/prefect.yaml` (`prefect deploy --all`, with the nightly schedule's cron and
timezone overridable). It needs a server that outlives it (`PREFECT_API_URL`): deploying
to the throwaway server a bare Prefect process starts would vanish with the process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import yaml
from cyclopts import Parameter

from w4s.errors import ConfigError, W4SError, one_line

ROOT = Path(__file__).resolve().parents[1]
GPU_LIMIT = "w4s-gpu"  # flows.stage_flows.GPU_LIMIT (not imported: `w4s --help` stays fast)
PREFECT_FILE = ROOT / "deployments" / "prefect.yaml"


def command(
    *,
    api_url: Annotated[str | None, Parameter(
        help="the Prefect API, e.g. http://127.0.0.1:4200/api (default: PREFECT_API_URL)")]
        = None,
    prefect_file: Annotated[str, Parameter(
        help="the deployments file (default: deployments/prefect.yaml)",
        show_default=False)] = str(PREFECT_FILE),
    timezone: Annotated[str | None, Parameter(
        help="the nightly schedule's timezone, e.g. Europe/Berlin (default: the file's, "
             "UTC)")] = None,
    cron: Annotated[str | None, Parameter(
        help="the nightly schedule (default: the file's, '0 2 * * *')")] = None,
    pool_type: Annotated[str, Parameter(
        help="type of the pools created (existing pools are left as they are)")] = "process",
    gpu_slots: Annotated[int, Parameter(
        help=f"slots of the `{GPU_LIMIT}` limit: GPU stages at once")] = 1,
    paused: Annotated[bool, Parameter(
        negative="", help="create the schedules paused (resume: `prefect deployment "
        "schedule resume nightly/nightly SCHEDULE_ID`, or the UI's toggle)")] = False,
    check_only: Annotated[bool, Parameter(
        name="--check", negative="", help="apply nothing: check the deployed parameters on "
        "the server (config fields, adapter ids, benchmark data, pools and their workers); "
        "exit 1 on any problem")] = False,
) -> int:
    """Create the work pools, the GPU concurrency limit and the deployments on the Prefect
    server (PREFECT_API_URL)."""
    if check_only:
        lines, ok = check(api_url=api_url, prefect_file=prefect_file)
        for line in lines:
            print(line, flush=True)
        return 0 if ok else 1
    for line in deploy(api_url=api_url, prefect_file=prefect_file, timezone=timezone,
                       cron=cron, pool_type=pool_type, gpu_slots=gpu_slots, paused=paused):
        print(line, flush=True)
    return 0


CONFIG_MODELS = {"nightly": "w4s.stage_config:NightlyConfig",
                 "optimize": "w4s.config:OptimizeConfig",
                 "collect": "w4s.config:CollectConfig"}


def _config_problems(flow: str, config: Any) -> list[str]:
    """What would fail a run of `flow` with this `config` parameter (nothing for flows
    without one)."""
    import importlib

    from w4s.config import build_config

    if flow not in CONFIG_MODELS or config is None:
        return []
    module, name = CONFIG_MODELS[flow].split(":")
    try:
        cfg = build_config(config, getattr(importlib.import_module(module), name))
    except ConfigError as e:
        return [str(e)]
    if flow != "nightly":
        return []
    from w4s.flows.nightly_checks import config_problems

    return config_problems(cfg)  # type: ignore[arg-type]


def check(*, api_url: str | None = None,
          prefect_file: str | Path = PREFECT_FILE) -> tuple[list[str], bool]:
    """Each deployment of the file, as the server holds it: `ok` or its problems, one line."""
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    spec = load_spec(prefect_file)
    url = _api_url(api_url)
    lines, ok = [f"server: {url}"], True
    with temporary_settings({PREFECT_API_URL: url}):
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            error = client.api_healthcheck()
            if error is not None:
                raise W4SError(f"no Prefect server reachable at {url}: {one_line(error, 200)}")
            for dep in spec["deployments"]:
                flow = dep["entrypoint"].rsplit(":", 1)[1]
                name = f"{flow}/{dep['name']}"
                try:
                    found = client.read_deployment_by_name(name)
                except ObjectNotFound:
                    lines.append(f"{name}: not deployed (run `w4s deploy`)")
                    ok = False
                    continue
                problems = _config_problems(flow, (found.parameters or {}).get("config"))
                if found.work_pool_name:  # the deployment's own pool
                    from w4s.flows.nightly_checks import pool_problem

                    problem = pool_problem(client, found.work_pool_name)
                    if problem and problem not in problems:
                        problems.append(problem)
                ok = ok and not problems
                lines.append(f"{name}: " + ("; ".join(problems) if problems else "ok"))
    return lines, ok


def load_spec(prefect_file: str | Path, timezone: str | None = None,
              cron: str | None = None, *, paused: bool = False) -> dict[str, Any]:
    """The deployments file, with every schedule's timezone/cron replaced when given (and
    every schedule inactive when `paused`)."""
    path = Path(prefect_file)
    try:
        spec = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"`--prefect-file`: cannot read {str(path)!r}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"`--prefect-file`: {path} is not valid YAML: {one_line(e)}") from e
    if not isinstance(spec, dict) or not spec.get("deployments"):
        raise ConfigError(f"`--prefect-file`: {path} has no `deployments:` list")
    if timezone is not None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"`--timezone` {timezone!r} is not an IANA timezone such as "
                              "Europe/Berlin") from None
    if cron is not None and len(cron.split()) != 5:
        raise ConfigError(f"`--cron` {cron!r} is not a five-field cron expression")
    for dep in spec["deployments"]:
        for schedule in dep.get("schedules") or []:
            if timezone is not None:
                schedule["timezone"] = timezone
            if cron is not None and "cron" in schedule:
                schedule["cron"] = cron
            if paused:
                schedule["active"] = False
    return spec


def _api_url(api_url: str | None) -> str:
    from prefect.settings import PREFECT_API_URL

    url = api_url or PREFECT_API_URL.value()
    if not url:
        raise ConfigError("no Prefect server configured: set PREFECT_API_URL (e.g. "
                          "http://127.0.0.1:4200/api after `prefect server start`) or pass "
                          "--api-url")
    return url.rstrip("/")


def deploy(*, api_url: str | None = None, prefect_file: str | Path = PREFECT_FILE,
           timezone: str | None = None, cron: str | None = None, pool_type: str = "process",
           gpu_slots: int = 1, paused: bool = False) -> list[str]:
    """Pools, the GPU limit, the deployments; returns what it did, one line each."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if gpu_slots < 1:
        raise ConfigError(f"`--gpu-slots` must be at least 1, but received {gpu_slots}")
    spec = load_spec(prefect_file, timezone, cron, paused=paused)
    url = _api_url(api_url)
    done = []
    with temporary_settings({PREFECT_API_URL: url}):
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            error = client.api_healthcheck()
            if error is not None:
                raise W4SError(f"no Prefect server reachable at {url}: {one_line(error, 200)}")
            done.append(f"server: {url}")
            pools = sorted({d["work_pool"]["name"] for d in spec["deployments"]
                            if d.get("work_pool", {}).get("name")})
            done += [_ensure_pool(client, name, pool_type) for name in pools]
            done.append(_ensure_limit(client, GPU_LIMIT, gpu_slots))
        done += _apply(spec, url, Path(prefect_file))
    done.append(f"flow code: {os.environ.get('W4S_REPO') or ROOT} on every worker host (W4S_REPO)")
    done.append("next: start one worker per pool, e.g. `prefect worker start --pool gpu "
                "--limit 1` on the GPU host and `prefect worker start --pool cpu`")
    return done


def _ensure_pool(client: Any, name: str, pool_type: str) -> str:
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    try:
        pool = client.read_work_pool(name)
        return f"work pool {name}: exists ({pool.type})"
    except ObjectNotFound:
        pass
    from prefect.utilities.asyncutils import run_coro_as_sync
    from prefect.workers.utilities import get_default_base_job_template_for_infrastructure_type

    template = run_coro_as_sync(get_default_base_job_template_for_infrastructure_type(pool_type))
    if template is None:
        raise ConfigError(f"`--pool-type` {pool_type!r} is not a Prefect worker type this "
                          "installation knows (process, or install its integration)")
    client.create_work_pool(WorkPoolCreate(name=name, type=pool_type,
                                           base_job_template=template))
    return f"work pool {name}: created ({pool_type})"


def _ensure_limit(client: Any, name: str, slots: int) -> str:
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectNotFound

    try:
        limit = client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=name, limit=slots, active=True))
        return f"concurrency limit {name}: created ({slots} slot{'s' * (slots > 1)})"
    if limit.limit == slots:
        return f"concurrency limit {name}: exists ({slots} slot{'s' * (slots > 1)})"
    client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=slots))
    return f"concurrency limit {name}: {limit.limit} -> {slots} slots"


def _apply(spec: dict[str, Any], url: str, source: Path) -> list[str]:
    """`prefect --no-prompt deploy --all` over the (overridden) spec, from the repo root, so
    entrypoints resolve as in the file."""
    env = {**os.environ, "PREFECT_API_URL": url}
    env.setdefault("W4S_REPO", str(ROOT))
    prefect = Path(sys.executable).with_name("prefect")
    cmd = [str(prefect) if prefect.exists() else "prefect", "--no-prompt", "deploy", "--all"]
    with tempfile.TemporaryDirectory(prefix="w4s-deploy-") as tmp:
        rendered = Path(tmp) / "prefect.yaml"
        rendered.write_text(yaml.safe_dump(spec, sort_keys=False))
        try:
            proc = subprocess.run([*cmd, "--prefect-file", str(rendered)], cwd=ROOT, env=env,
                                  capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise W4SError(f"`prefect deploy` did not run: {one_line(e, 200)}") from e
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
        raise W4SError(f"`prefect deploy` failed: {lines[-1] if lines else proc.returncode}")
    out = [f"deployments: applied {len(spec['deployments'])} from {source}"]
    for dep in spec["deployments"]:
        flow = dep["entrypoint"].rsplit(":", 1)[1]
        when = ", ".join(f"{s['cron']} ({s.get('timezone', 'UTC')})"
                         + ("" if s.get("active", True) else " inactive")
                         for s in dep.get("schedules") or []) or "no schedule"
        out.append(f"  {flow}/{dep['name']}  pool {dep['work_pool']['name']}  {when}")
    for dep in spec["deployments"]:
        for s in dep.get("schedules") or []:
            out.append(_schedule_line(dep, s))
    return out


def _schedule_line(dep: dict[str, Any], schedule: dict[str, Any]) -> str:
    """What a schedule will run and when it fires next (or that it is paused)."""
    from prefect.server.schemas.schedules import CronSchedule
    from prefect.utilities.asyncutils import run_coro_as_sync

    name = f"{dep['entrypoint'].rsplit(':', 1)[1]}/{dep['name']}"
    what = _describe(dep.get("parameters") or {})
    if not schedule.get("active", True):
        return (f"schedule {name}: paused; it would run {what}; resume it in the UI or "
                f"`prefect deployment schedule resume {name} <schedule-id>`")
    cron = CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone", "UTC"))
    (first,) = run_coro_as_sync(cron.get_dates(n=1))
    return f"schedule {name}: next run {first:%Y-%m-%d %H:%M %Z}; it runs {what}"


def _describe(parameters: dict[str, Any]) -> str:
    """One line on a nightly config: its sizes, models and routing."""
    cfg = parameters.get("config") or {}
    c, o, f = cfg.get("collect") or {}, cfg.get("optimize") or {}, cfg.get("fit") or {}
    if not c:
        return "its flow with its parameters"

    def model(section: dict[str, Any], role: str) -> str:
        m = section.get(role) or {}
        return f"{m.get('kind', '?')}:{m.get('model') or 'default'}"

    steps = f"{f['max_steps']} steps" if f.get("max_steps") else f"{f.get('epochs', 1)} epoch(s)"
    return (f"collect {c.get('episodes', '?')} episodes x {c.get('iterations', '?')} turns x "
            f"{c.get('candidates', '?')} candidates on {c.get('benchmark', '?')}, fit {steps} "
            f"on {f.get('base', 'embedded')}, optimize {o.get('iterations', '?')} x "
            f"{o.get('candidates', '?')} on {o.get('benchmark', '?')}; meta-agent "
            f"{model(o, 'meta_agent')}, executor {model(o, 'executor')}; routing "
            f"{cfg.get('routing', 'local')}")
