"""`w4s dataset`: build an RLAO training set from run trajectories (no Prefect, no model);
its flags come from DatasetConfig, the older singular spellings (`--run`, `--benchmark`,
`--status`) kept."""

from __future__ import annotations

from w4s.flows.config_cli import Given, config_command, option
from w4s.stage_config import DatasetConfig


def _dataset(given: Given, *, out: str, runs_dir: str | None = None,
             last_nights: int | None = None) -> int:
    """Build the dataset; print one summary line and the card's path. Errors: W4SError."""
    from w4s.errors import ConfigError
    from w4s.paths import runs_dir as default_runs_dir
    from w4s.storage.collections import last_nights as nights_window
    from w4s.storage.dataset import build_dataset

    root, window, extra = default_runs_dir(runs_dir), None, None
    if last_nights is not None:
        if given.overrides.get("runs"):
            raise ConfigError("`--last-nights` and `--run` both choose the runs; give one")
        if last_nights < 1:
            raise ConfigError(f"`--last-nights` must be >= 1, but received {last_nights}")
        window = nights_window(root, last_nights)
        extra = {"runs": window["runs"]}
    result = build_dataset(root, out, given.load(DatasetConfig, extra), window=window)
    if window is not None:
        print(f"window: {len(window['collections'])} collection(s) of the last "
              f"{window['nights']} night(s): "
              f"{', '.join(c['collection_id'] for c in window['collections'])}")
    print(result.summary_line())
    print(f"card: {result.card_path}")
    return 0


dataset = config_command(
    DatasetConfig, _dataset, skip=("window_nights",),
    names={"runs": {"name": ("--runs", "--run")},
           "benchmarks": {"name": ("--benchmarks", "--benchmark")},
           "statuses": {"name": ("--statuses", "--status")}},
    help="Trajectory rows -> a reward-weighted Parquet dataset (TRL layout): DuckDB selects "
         "meta-agent actions from runs' trajectories and writes prompt/completion/weight "
         "Parquet plus a JSON card beside it. budget_exceeded and infra_error rows are never "
         "included.",
    options=[
        option("out", str, "the dataset file, e.g. data/rlao.parquet", required=True),
        option("runs_dir", str | None, "the runs folder (default: $W4S_HOME/runs)"),
        option("last_nights", int | None, "only the runs of the last N nights' nightly "
               "collections (the card lists them); not with --run"),
    ])
