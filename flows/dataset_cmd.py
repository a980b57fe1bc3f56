"""`w4s dataset`: build an RLAO training set from run trajectories (no Prefect, no model)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `dataset` subcommand."""
    p = subparsers.add_parser(
        "dataset", help="trajectory rows -> a reward-weighted Parquet dataset (TRL layout)",
        description="Select meta-agent actions from runs' trajectories with DuckDB and write "
                    "prompt/completion/weight Parquet plus a JSON card beside it. "
                    "budget_exceeded and infra_error rows are never included.")
    p.add_argument("--runs-dir", help="the runs folder (default: $W4S_HOME/runs)")
    p.add_argument("--out", required=True, help="the dataset file, e.g. data/rlao.parquet")
    p.add_argument("--run", action="append", default=[], metavar="RUN_ID",
                   help="only this run (repeatable; default: every run)")
    p.add_argument("--last-nights", type=int, metavar="N",
                   help="only the runs of the last N nights' nightly collections (the card "
                        "lists them); not with --run")
    p.add_argument("--benchmark", action="append", default=[],
                   help="only this benchmark, as stored, with or without ' (synthetic)' "
                        "(repeatable)")
    p.add_argument("--since", help="created_at >= this ISO date/time (UTC if no offset)")
    p.add_argument("--until", help="created_at < this ISO date/time (UTC if no offset)")
    p.add_argument("--min-reward", type=float, help="reward >= this")
    p.add_argument("--max-reward", type=float, help="reward <= this")
    p.add_argument("--status", action="append", default=[], metavar="STATUS",
                   help="only this status: ok, or skipped with --include-skipped (repeatable)")
    p.add_argument("--include-skipped", action="store_true",
                   help="also candidates that failed their self-check after the repairs")
    p.add_argument("--sft", action="store_true", help="every weight 1.0 (the SFT ablation)")
    p.add_argument("--tau", type=float, default=argparse.SUPPRESS,
                   help=_help("tau"))
    p.add_argument("--repaired", choices=("conversation", "drop", "state"),
                   default=None,
                   help="a repaired candidate's prompt: the conversation its reply was sampled "
                        "from (default), none (drop the row), or its original state")
    p.set_defaults(func=cmd_dataset)
    return p


def _help(name: str) -> str:
    from w4s.stage_config import DatasetConfig

    info = DatasetConfig.model_fields[name]
    return f"{info.description} (default: {info.default})"


def cmd_dataset(args: argparse.Namespace) -> int:
    """Build the dataset; print one summary line and the card's path. Errors: W4SError."""
    from w4s.config import build_config
    from w4s.errors import ConfigError
    from w4s.paths import runs_dir
    from w4s.stage_config import DatasetConfig
    from w4s.storage.collections import last_nights
    from w4s.storage.dataset import build_dataset

    root, window, runs = runs_dir(args.runs_dir), None, tuple(args.run)
    if args.last_nights is not None:
        if runs:
            raise ConfigError("`--last-nights` and `--run` both choose the runs; give one")
        if args.last_nights < 1:
            raise ConfigError(f"`--last-nights` must be >= 1, but received {args.last_nights}")
        window = last_nights(root, args.last_nights)
        runs = tuple(window["runs"])
    given = {"runs": runs, "benchmarks": tuple(args.benchmark), "since": args.since,
             "until": args.until, "min_reward": args.min_reward, "max_reward": args.max_reward,
             "statuses": tuple(args.status), "include_skipped": args.include_skipped,
             "sft": args.sft, "repaired": args.repaired, "tau": getattr(args, "tau", None)}
    config = build_config({k: v for k, v in given.items() if v is not None}, DatasetConfig)
    result = build_dataset(root, args.out, config, window=window)
    if window is not None:
        print(f"window: {len(window['collections'])} collection(s) of the last "
              f"{window['nights']} night(s): "
              f"{', '.join(c['collection_id'] for c in window['collections'])}")
    print(result.summary_line())
    print(f"card: {result.card_path}")
    return 0
