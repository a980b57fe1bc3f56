"""`w4s runs`, `w4s show` and `w4s query`: read what runs left, no Prefect."""

from __future__ import annotations

from typing import Annotated

from cyclopts import Parameter

from w4s.flows.cli_common import print_run, print_table

RunsDir = Annotated[str | None, Parameter(help="the runs folder (default: $W4S_HOME/runs)")]


def runs(*, runs_dir: RunsDir = None) -> int:
    """List runs."""
    from w4s.paths import runs_dir as default_runs_dir
    from w4s.storage.query import list_runs

    root = default_runs_dir(runs_dir)
    found = list_runs(root)
    if not found:
        print(f"no runs under {root}")
        return 0
    cols = list(found[0])
    print_table(cols, [[r[c] for c in cols] for r in found])
    return 0


def show(run: Annotated[str, Parameter(help="run id or run folder")], *,
         runs_dir: RunsDir = None) -> int:
    """Per-iteration table of one run."""
    from w4s.paths import location
    from w4s.paths import runs_dir as default_runs_dir
    from w4s.storage.run_store import RunStore

    path = location(run)  # a folder, a URL, or a run id under --runs-dir
    if not (path / "config.json").is_file():
        path = default_runs_dir(runs_dir) / run
    store = RunStore(path)
    store.config()  # one clear line if it is not a run
    print_run(path, store.run_id, store.summary())
    return 0


def query(sql: Annotated[str, Parameter(help='e.g. "SELECT run_id, max(val_accuracy) FROM '
                                             'candidates GROUP BY run_id"')], *,
          runs_dir: RunsDir = None) -> int:
    """SQL over every run's candidates (a DuckDB view)."""
    from w4s.paths import runs_dir as default_runs_dir
    from w4s.storage.query import query_runs

    cols, rows = query_runs(default_runs_dir(runs_dir), sql)
    print_table(cols, rows)
    return 0
