"""What the nightly checks before any stage runs, so a mistake fails in seconds, in one line.

A config can be valid JSON and still fail hours later: an adapter id nobody registered, a
benchmark file that is not there, a pool no worker polls (Prefect would queue the stage
until its timeout). `config_problems` finds these at the start of the chain, and
`w4s deploy --check` finds them on the server's deployments before the schedule fires.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from w4s.errors import ConfigError, one_line

if TYPE_CHECKING:
    from w4s.stage_config import NightlyConfig

from w4s.stage_config import STAGES, on_gpu

WORKER_STALE_S = 90.0  # Prefect marks a worker offline after 3 missed 30 s heartbeats


def worker_command(pool: str) -> str:
    return f"`prefect worker start --pool {pool}`"


def pool_problem(client: Any, pool: str) -> str | None:
    """Why a stage sent to `pool` would wait for nothing (None: a worker polls it)."""
    from prefect.exceptions import ObjectNotFound

    try:
        found = client.read_work_pool(pool)
    except ObjectNotFound:
        return (f"work pool {pool!r} does not exist (`w4s deploy` creates it); then start a "
                f"worker: {worker_command(pool)}")
    if found.is_paused:
        return f"work pool {pool!r} is paused: `prefect work-pool resume {pool}`"
    now = datetime.now(timezone.utc)
    alive = [w for w in client.read_workers_for_work_pool(pool)
             if w.last_heartbeat_time is not None
             and (now - w.last_heartbeat_time).total_seconds() < WORKER_STALE_S]
    if not alive:
        return f"no worker polls work pool {pool!r}: start one with {worker_command(pool)}"
    return None


def require_pool(pool: str) -> None:
    """Raise one line when no worker polls `pool` (checked again right before a stage)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        problem = pool_problem(client, pool)
    if problem:
        raise ConfigError(problem)


def _benchmark_problem(name: str, options: dict[str, Any]) -> str | None:
    from w4s.benchmarks import get_benchmark

    if name.startswith("file:"):
        path = Path(name.removeprefix("file:")).expanduser()
        return None if path.is_file() else f"file {str(path)!r} not found"
    try:
        get_benchmark(name, **options).load()
    except Exception as e:  # noqa: BLE001 - any loader failure is the config's problem here
        return one_line(e, 200)
    return None


def _benchmarks(config: NightlyConfig) -> list[tuple[str, str, dict[str, Any]]]:
    """(config field, benchmark, options) of every stage, without repeats."""
    out = [(f"collect.benchmark{'_options.path' if 'path' in e.benchmark_options else ''}",
            str(e.benchmark), e.benchmark_options) for e in config.collect.per_benchmark()]
    o = config.optimize
    out.append((f"optimize.benchmark{'_options.path' if 'path' in o.benchmark_options else ''}",
                str(o.benchmark), o.benchmark_options))
    if config.evaluate is not None:
        ev = config.evaluate
        field = "evaluate.benchmark" + ("_options.path" if "path" in ev.benchmark_options
                                        else "")
        out.append((field, ev.benchmark, ev.benchmark_options))
    seen, unique = set(), []
    for field, name, options in out:
        key = (name, repr(sorted(options.items())))
        if key not in seen:
            seen.add(key)
            unique.append((field, name, options))
    return unique


def config_problems(config: NightlyConfig, *, check_pools: bool = True) -> list[str]:
    """Everything about `config` that would fail a stage later, one short line each."""
    from w4s.storage.adapters import resolve_spec

    problems = []
    adapter = config.collect.meta_agent.adapter
    if adapter:
        try:
            resolve_spec(adapter)  # `champion` with none promoted is the base model
        except Exception as e:  # noqa: BLE001 - AdapterError, or an unreadable registry
            problems.append(f"`collect.meta_agent.adapter`: {one_line(e, 200)}")
    if config.fit.base != "embedded" and not (
            Path(config.fit.base).expanduser() / "config.json").is_file():
        problems.append(f"`fit.base`: {config.fit.base!r} is not a model folder (no "
                        "config.json)")
    for field, name, options in _benchmarks(config):
        why = _benchmark_problem(name, options)
        if why:
            problems.append(f"`{field}`: {why}")
    if check_pools and config.routing == "deployments":
        problems += deployment_problems(routed_pools(config))
    return problems


def deployment_problems(routes: dict[str, str]) -> list[str]:
    """stage flow -> pool: the deployments `<flow>/<pool>` exist and a worker polls each pool."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    out = []
    with get_client(sync_client=True) as client:
        for flow_name, pool in sorted(routes.items()):
            try:
                client.read_deployment_by_name(f"{flow_name}/{pool}")
            except ObjectNotFound:
                out.append(f"deployment {flow_name}/{pool} does not exist: run `w4s deploy`")
        for pool in sorted(set(routes.values())):
            problem = pool_problem(client, pool)
            if problem:
                out.append(problem)
    return out


def check_config(config: NightlyConfig) -> None:
    """The chain's first step: one ConfigError line listing every problem, or nothing."""
    problems = config_problems(config)
    if problems:
        raise ConfigError("nightly config: " + "; ".join(problems))


__all__ = ["check_config", "config_problems", "pool_problem", "require_pool",
           "worker_command"]


def stage_pool(stage: str, config: NightlyConfig) -> str:
    if stage in ("fit", "gate"):  # the gate scores completions with the base model too
        return "gpu"
    if stage in ("collect", "optimize"):
        cfg = config.collect if stage == "collect" else config.optimize
        return "gpu" if on_gpu(cfg.meta_agent, cfg.executor) else "cpu"
    if stage == "evaluate":
        return "gpu" if on_gpu(config.evaluate_config().executor) else "cpu"
    return "cpu"


def routed_pools(config: NightlyConfig) -> dict[str, str]:
    """stage flow -> the pool its deployment runs on, for `routing: deployments` (the dataset
    stage runs inside the parent)."""
    return {s: stage_pool(s, config) for s in STAGES if s != "dataset"}
