"""The `w4s` command line: demo, optimize, evaluate, runs, query, show; and RLAO: collect,
dataset, fit, adapters."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from w4s.errors import W4SError
from w4s.flows.cli_common import (
    _add_config_flags,
    _custom_benchmark_options,
    _field_help,
    _overrides,
    print_run,
    print_table,
    with_resolved_adapter,
)

# Both roles on llama.cpp, which serves the embedded GGUF several times faster on a CPU than
# transformers (docs/configuration.md, benchmarks/bench_backends.py) and batches concurrent
# calls, such as
# the candidates' repairs. `kind: embedded` (transformers) is the meta-agent RLAO fits.
_EMBEDDED_LLAMACPP = {"kind": "llamacpp", "model": "smollm2-135m-instruct"}
DEMO = {
    "arithmetic": {"benchmark": "arithmetic", "seed_workflow": "direct", "val_size": 10,
                   "test_size": 20, "iterations": 2, "candidates": 3,
                   "meta_agent": {**_EMBEDDED_LLAMACPP, "max_new_tokens": 256},
                   "executor": {**_EMBEDDED_LLAMACPP, "max_new_tokens": 64}},
    "humaneval": {"benchmark": "humaneval", "seed_workflow": "generate", "val_size": 5,
                  "test_size": 10, "iterations": 1, "candidates": 3,
                  "meta_agent": {**_EMBEDDED_LLAMACPP, "max_new_tokens": 256},
                  "executor": {**_EMBEDDED_LLAMACPP, "max_new_tokens": 256}},
}


# -------------------------------------------------------------- commands


def _run_optimize(config_data: dict[str, Any], config_file: str | None,
                  run_id: str | None, task_runner: str | None = None) -> int:

    from w4s.config import OptimizeConfig
    from w4s.flows.optimize import optimize
    from w4s.storage.run_store import new_run_id

    cfg = _load(config_data, config_file, OptimizeConfig)
    # drawn here as RunStore.create would, not in the flow, so Ctrl-C can name it; with several
    # benchmarks this top-level id resumes every one's subflow
    run_id = run_id or new_run_id(cfg)
    flow = optimize
    if task_runner:  # submitted tasks (the self-checks) on threads or a Dask cluster
        from w4s.flows.runners import task_runner as make_runner

        flow = optimize.with_options(task_runner=make_runner(task_runner))
    summary = _until_interrupted(lambda: flow(cfg, run_id=run_id), f"--run-id {run_id}")
    if summary is None:
        return 130
    for one in summary.get("runs", [summary]):
        print()
        print_run(Path(one["run_dir"]), one["run_id"], one)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if args.benchmark not in DEMO:
        raise W4SError(f"`--benchmark` {args.benchmark!r} has no demo; choose from: "
                       f"{', '.join(DEMO)}")
    data = dict(DEMO[args.benchmark])
    for field in ("iterations", "candidates", "runs_dir"):
        if getattr(args, field) is not None:
            data[field] = getattr(args, field)
    print(f"w4s demo: {args.benchmark}, embedded SmolLM2-135M-Instruct as meta-agent and "
          f"executor, {data['iterations']} iteration(s) x {data['candidates']} candidates")
    return _run_optimize(data, None, None)


def _load(data: dict[str, Any], config_file: str | None, model: type) -> Any:
    """The config from the file (if any) with `data` merged over it, its adapter resolved."""
    from w4s.config import build_config, load_config_file

    return with_resolved_adapter(load_config_file(config_file, data, model) if config_file
                                 else build_config(data, model))


def _until_interrupted(run: Any, resume_flag: str) -> Any:
    """run(); on Ctrl-C say how to resume and return None (exit code 130)."""
    try:
        return run()
    except KeyboardInterrupt:
        print(f"w4s: interrupted; rerun with {resume_flag} to resume (same config)",
              file=sys.stderr)
        return None


def _adapter_override(data: dict[str, Any], adapter: str | None) -> dict[str, Any]:
    from w4s.config import deep_merge

    return data if adapter is None else deep_merge(data, {"meta_agent": {"adapter": adapter}})


def cmd_optimize(args: argparse.Namespace) -> int:
    return _run_optimize(_adapter_override(_overrides(args), args.adapter), args.config,
                         args.run_id, args.task_runner)


def cmd_collect(args: argparse.Namespace) -> int:
    from w4s.config import CollectConfig
    from w4s.flows.collect import collect
    from w4s.storage.run_store import new_run_id

    cfg = _load(_adapter_override(_overrides(args, CollectConfig), args.adapter), args.config,
                CollectConfig)
    cid = args.collection_id or new_run_id(cfg)  # named now, so Ctrl-C can say it
    summary = _until_interrupted(lambda: collect(cfg, collection_id=cid),
                                 f"--collection-id {cid}")
    if summary is None:
        return 130
    hist = ", ".join(f"{r}: {n}" for r, n in summary["reward_histogram"].items()) or "none"
    print(f"collection {cid} ({summary['status']}): {len(summary['completed'])} episodes, "
          f"{summary['rows']} candidate rows, rewards {hist}, positive share "
          f"{summary['positive_share']}")
    print(f"next: w4s dataset --runs-dir {summary['runs_dir']} "
          + " ".join(f"--run {e}" for e in summary["episodes"]) + " --out DATASET.parquet")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from w4s.paths import runs_dir
    from w4s.storage.query import list_runs

    root = runs_dir(args.runs_dir)
    runs = list_runs(root)
    if not runs:
        print(f"no runs under {root}")
        return 0
    cols = list(runs[0])
    print_table(cols, [[r[c] for c in cols] for r in runs])
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from w4s.paths import location, runs_dir
    from w4s.storage.run_store import RunStore

    path = location(args.run)  # a folder, a URL, or a run id under --runs-dir
    if not (path / "config.json").is_file():
        path = runs_dir(args.runs_dir) / args.run
    store = RunStore(path)
    store.config()  # one clear line if it is not a run
    print_run(path, store.run_id, store.summary())
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from w4s.paths import runs_dir
    from w4s.storage.query import query_runs

    cols, rows = query_runs(runs_dir(args.runs_dir), args.sql)
    print_table(cols, rows)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from w4s.config import BackendConfig, format_validation_error
    from w4s.flows.evaluate_cmd import evaluate_file

    try:
        executor = BackendConfig.model_validate(yaml.safe_load(args.executor or "{}") or {})
    except ValidationError as e:
        raise W4SError("executor " + format_validation_error(e)) from e
    except yaml.YAMLError as e:
        raise W4SError(f"`--executor` is not valid YAML/JSON: {args.executor!r}") from e
    return evaluate_file(
        Path(args.workflow), args.benchmark, args.split, executor_cfg=executor,
        val_size=args.val_size, test_size=args.test_size, split_seed=args.split_seed,
        json_out=args.json, concurrency=args.concurrency, use_cache=not args.no_cache,
        reuse_outcomes=not args.rerun, benchmark_options=_custom_benchmark_options(args),
    )


def _add_benchmark_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--question-field", help="custom file: benchmark, field holding the question")
    p.add_argument("--answer-field", help="custom file: benchmark, field holding the answer")
    p.add_argument("--scorer", help="custom benchmark scorer: numeric|exact|f1|choice|math|"
                                    "python:module:function")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="w4s", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="a small run on the embedded model, offline")
    p.add_argument("--benchmark", default="arithmetic", help="arithmetic (default) or humaneval")
    p.add_argument("--iterations", type=int, help=_field_help("iterations", default=False))
    p.add_argument("--candidates", type=int, help=_field_help("candidates", default=False))
    p.add_argument("--runs-dir", help=_field_help("runs_dir"))
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "optimize", help="an optimization run from a config file and options",
        description="Every scalar config field is a flag below; nested ones (executor, "
                    "meta_agent, benchmark_options, prices) are set with --set a.b=VALUE, "
                    "merged into the --config file's blocks key by key.")
    p.add_argument("--config", help="YAML or TOML file of OptimizeConfig fields")
    p.add_argument("--run-id", help="resume this run: finished stages are skipped")
    p.add_argument("--adapter", help="the meta-agent's LoRA adapter: latest, champion (the "
                                     "last promoted; base if none), an id from "
                                     "`w4s adapters`, or a folder")
    p.add_argument("--task-runner", help="where submitted tasks run: threads[:N] (default), "
                                         "dask[:N] or dask:tcp://HOST:PORT (w4s[dask])")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="any config field, dotted for nested ones, the value as YAML, e.g. "
                        "--set executor.kind=openai")
    _add_config_flags(p)
    _add_benchmark_options(p)
    p.set_defaults(func=cmd_optimize)

    p = sub.add_parser("collect", help="RLAO: collect trajectories from many episodes at once",
                       description="Episodes (optimization runs without a test evaluation) "
                       "side by side; nested fields through --set a.b=VALUE.")
    p.add_argument("--config", help="YAML or TOML file of CollectConfig fields")
    p.add_argument("--collection-id", help="resume this collection: finished stages are skipped")
    p.add_argument("--adapter", help="the meta-agent's LoRA adapter: latest, champion (the "
                                     "last promoted; base if none), an id from "
                                     "`w4s adapters`, or a folder (iterated RLAO)")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="any config field, e.g. --set meta_agent.kind=llamacpp")
    from w4s.config import CollectConfig

    _add_config_flags(p, CollectConfig)
    _add_benchmark_options(p)
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("evaluate", help="score a workflow file in the sandbox")
    p.add_argument("--workflow", required=True, help="a Python file defining solver(agent, task)")
    p.add_argument("--benchmark", required=True, help="a name or file:PATH")
    p.add_argument("--split", choices=["validation", "test", "all"], default=None,
                   help="the items to score: `all` scores every item of the benchmark "
                        "(default for file: benchmarks), else the seeded validation split "
                        "(default) or the test split")
    p.add_argument("--val-size", type=int, default=10,
                   help="items of the seeded validation split (default: 10)")
    p.add_argument("--test-size", type=int,
                   help="items of the test split (default: every item not in validation)")
    p.add_argument("--split-seed", type=int, default=0, help=_field_help("split_seed"))
    p.add_argument("--concurrency", type=int, default=4, help=_field_help("concurrency"))
    p.add_argument("--executor", help="executor BackendConfig as YAML/JSON, "
                                      "e.g. '{kind: openai, model: gpt-4o-mini}'")
    p.add_argument("--no-cache", action="store_true", help="bypass the executor-call cache")
    p.add_argument("--rerun", action="store_true",
                   help="run every item in the sandbox, even one already run by identical code "
                        "(executor calls still come from the cache)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document (and no progress bar)")
    _add_benchmark_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("runs", help="list runs")
    p.add_argument("--runs-dir")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("query", help="SQL over every run's candidates (a DuckDB view)")
    p.add_argument("sql", help="e.g. \"SELECT run_id, max(val_accuracy) FROM candidates "
                               "GROUP BY run_id\"")
    p.add_argument("--runs-dir")
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("show", help="per-iteration table of one run")
    p.add_argument("run", help="run id or run folder")
    p.add_argument("--runs-dir")
    p.set_defaults(func=cmd_show)

    from w4s.flows import dataset_cmd, deploy_cmd, fit_cmd, nightly_cmd

    dataset_cmd.add_parser(sub)  # RLAO: trajectory rows -> a reward-weighted dataset
    fit_cmd.add_parser(sub)  # RLAO: dataset -> a LoRA adapter (`fit`), the registry (`adapters`)
    nightly_cmd.add_parser(sub)  # the chain collect -> dataset -> fit -> optimize -> evaluate
    deploy_cmd.add_parser(sub)  # pools, the GPU limit and the deployments on a server
    return parser


def main(argv: list[str] | None = None) -> int:
    from w4s.flows.prefect_setup import (
        ensure_prefect_home,
        route_w4s_logs,
        set_environment_defaults,
    )

    set_environment_defaults()  # before Prefect is imported
    try:
        ensure_prefect_home()  # Prefect cannot create a home whose parent is missing
    except W4SError as e:
        print(f"w4s: error: {e}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    route_w4s_logs()
    _terminate_like_ctrl_c()
    try:
        return args.func(args)
    except W4SError as e:
        print(f"w4s: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("w4s: interrupted; rerun with --run-id to resume", file=sys.stderr)
        return 130


def _terminate_like_ctrl_c() -> None:
    """SIGTERM (an operator's stop, a cancelled flow run) unwinds like Ctrl-C: context
    managers and atexit hooks close sandbox workers and Prefect's temporary server."""
    import signal
    import threading

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, interrupt)


if __name__ == "__main__":
    sys.exit(main())
