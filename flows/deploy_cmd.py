"""`w4s deploy`: set up a Prefect server for w4s in one command.

Creates the work pools the deployments name (`gpu`, `cpu`; process type unless told
otherwise), the global concurrency limit that keeps two GPU stages off one GPU, and applies
`deployments/prefect.yaml` (`prefect deploy --all`, with the nightly schedule's cron and
timezone overridable). It needs a server that outlives it (`PREFECT_API_URL`): deploying
to the throwaway server a bare Prefect process starts would vanish with the process.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from w4s.errors import ConfigError, W4SError, one_line

ROOT = Path(__file__).resolve().parents[1]
GPU_LIMIT = "w4s-gpu"  # flows.stage_flows.GPU_LIMIT (not imported: `w4s --help` stays fast)
PREFECT_FILE = ROOT / "deployments" / "prefect.yaml"


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "deploy", help="create the work pools, the GPU concurrency limit and the deployments "
                       "on the Prefect server (PREFECT_API_URL)")
    p.add_argument("--api-url", help="the Prefect API, e.g. http://127.0.0.1:4200/api "
                                     "(default: PREFECT_API_URL)")
    p.add_argument("--prefect-file", default=str(PREFECT_FILE),
                   help="the deployments file (default: deployments/prefect.yaml)")
    p.add_argument("--timezone", help="the nightly schedule's timezone, e.g. Europe/Berlin "
                                      "(default: the file's, UTC)")
    p.add_argument("--cron", help="the nightly schedule (default: the file's, '0 2 * * *')")
    p.add_argument("--pool-type", default="process",
                   help="type of the pools created (default: process; existing pools are "
                        "left as they are)")
    p.add_argument("--gpu-slots", type=int, default=1,
                   help=f"slots of the `{GPU_LIMIT}` limit: GPU stages at once (default: 1)")
    p.set_defaults(func=cmd_deploy)


def cmd_deploy(args: argparse.Namespace) -> int:
    for line in deploy(api_url=args.api_url, prefect_file=args.prefect_file,
                       timezone=args.timezone, cron=args.cron, pool_type=args.pool_type,
                       gpu_slots=args.gpu_slots):
        print(line, flush=True)
    return 0


def load_spec(prefect_file: str | Path, timezone: str | None = None,
              cron: str | None = None) -> dict[str, Any]:
    """The deployments file, with every schedule's timezone/cron replaced when given."""
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
           gpu_slots: int = 1) -> list[str]:
    """Pools, the GPU limit, the deployments; returns what it did, one line each."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if gpu_slots < 1:
        raise ConfigError(f"`--gpu-slots` must be at least 1, but received {gpu_slots}")
    spec = load_spec(prefect_file, timezone, cron)
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
    return out
