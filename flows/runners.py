"""Task runners by name: where a flow's submitted task runs (`.submit` / `.map`) execute.

`task_runner("threads:8")` keeps them in the flow's process (Prefect's default);
`task_runner("dask:4")` starts a local Dask cluster of 4 single-threaded worker processes;
`task_runner("dask:tcp://scheduler:8786")` sends them to an existing Dask cluster, whose
workers may sit on other hosts. Use it as

    optimize.with_options(task_runner=task_runner("dask:2"))(config)

Tasks only exchange run folder paths or URLs, so a worker on another host needs the run
folders at a shared `W4S_STORAGE_URL` (see deployments/README.md, Scale-out).
"""

from __future__ import annotations

from typing import Any

from w4s.errors import ConfigError

SPECS = "threads[:N], dask[:N] or dask:tcp://HOST:PORT"


def _count(spec: str, text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"`task_runner` {spec!r}: the worker count must be a positive "
                          f"integer; use {SPECS}")
    return n


def task_runner(spec: str) -> Any:
    """A Prefect task runner for `spec` (see the module docstring); a one-line ConfigError
    for anything else, or when prefect-dask is not installed."""
    kind, _, arg = spec.strip().partition(":")
    if kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=_count(spec, arg) if arg else None)
    if kind == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise ConfigError(f"`task_runner` {spec!r} needs prefect-dask: "
                              "pip install 'w4s[dask]'") from None
        if "://" in arg:
            return DaskTaskRunner(address=arg)
        # processes, one thread each: stages hold the GIL in places (tokenizing, Parquet)
        return DaskTaskRunner(cluster_kwargs={
            "n_workers": _count(spec, arg) if arg else 2, "processes": True,
            "threads_per_worker": 1, "dashboard_address": None,
        })
    raise ConfigError(f"`task_runner` {spec!r} is unknown; use {SPECS}")
