"""The `w4s` command line: demo, optimize, evaluate, runs, show."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from w4s.errors import W4SError

# The meta-agent runs on transformers (the model RLAO will fit); the executor on llama.cpp,
# which serves the same GGUF several times faster on CPU (README, benchmarks/bench_backends.py).
_EMBEDDED_EXECUTOR = {"kind": "llamacpp", "model": "smollm2-135m-instruct"}
DEMO = {
    "arithmetic": {"benchmark": "arithmetic", "seed_workflow": "direct", "val_size": 10,
                   "test_size": 20, "iterations": 2, "candidates": 3,
                   "meta_agent": {"kind": "embedded", "max_new_tokens": 256},
                   "executor": {**_EMBEDDED_EXECUTOR, "max_new_tokens": 64}},
    "humaneval": {"benchmark": "humaneval", "seed_workflow": "generate", "val_size": 5,
                  "test_size": 10, "iterations": 1, "candidates": 3,
                  "meta_agent": {"kind": "embedded", "max_new_tokens": 256},
                  "executor": {**_EMBEDDED_EXECUTOR, "max_new_tokens": 256}},
}


def format_table(cols: list[str], rows: list[tuple | list]) -> str:
    def cell(v: Any) -> str:
        return "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)

    cells = [[cell(v) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]
    line = "  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True))
    out = [line, "-" * len(line)]
    out += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(out)


def _set_path(data: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        data = data.setdefault(p, {})
    data[leaf] = value


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for field in ("benchmark", "iterations", "candidates", "val_size", "test_size",
                  "seed_workflow", "concurrency", "runs_dir", "budget_usd", "budget_tokens"):
        value = getattr(args, field, None)
        if value is not None:
            data[field] = value
    if isinstance(data.get("benchmark"), str) and "," in data["benchmark"]:
        data["benchmark"] = [b.strip() for b in data["benchmark"].split(",") if b.strip()]
    if getattr(args, "no_cache", False):
        data["use_cache"] = False
    opts = _custom_benchmark_options(args)
    if opts:
        data["benchmark_options"] = opts
    for item in getattr(args, "set", None) or []:
        if "=" not in item:
            raise W4SError(f"`--set` expects FIELD=VALUE, but received {item!r}")
        key, raw = item.split("=", 1)
        _set_path(data, key.strip(), yaml.safe_load(raw))
    return data


def _custom_benchmark_options(args: argparse.Namespace) -> dict[str, Any]:
    opts = {}
    for field in ("question_field", "answer_field", "scorer"):
        value = getattr(args, field, None)
        if value is not None:
            opts[field] = value
    return opts


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _run_optimize(config_data: dict[str, Any], config_file: str | None,
                  run_id: str | None) -> int:
    from w4s.config import build_config, load_config_file

    cfg = (load_config_file(config_file, config_data) if config_file
           else build_config(config_data))
    from flows.optimize import optimize

    summary = optimize(cfg, run_id=run_id)
    for one in summary.get("runs", [summary]):
        _print_result(one)
    return 0


def _print_result(summary: dict[str, Any]) -> None:
    from storage.query import iteration_table

    run_dir = Path(summary["best_workflow"]).parent.parent
    cols, rows = iteration_table(run_dir)
    print()
    print(f"run {summary['run_id']}  ({summary['benchmark']}, status: {summary['status']})")
    print(format_table(cols, rows))
    print()
    print(f"best workflow:      {summary['best_workflow']}  (iteration {summary['best_iteration']},"
          f" validation {summary['best_val_accuracy']:.2f})")
    test = summary["test_accuracy"]
    if test is None:
        print("test accuracy:      not evaluated (the budget ran out first)")
    else:
        print(f"test accuracy:      {test:.2f} on {summary['test_items']} "
              "held-out items (never shown to the meta-agent)")
    print(f"executor tokens:    {summary['executor_tokens']} in {summary['executor_calls']} calls")
    print(f"meta-agent tokens:  {summary['meta_agent_tokens']}")
    cost = summary.get("cost_usd")
    print(f"cost:               {'unknown' if cost is None else f'${cost:.4f}'}")
    print(f"trajectories:       {run_dir / 'trajectories'}")


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


def cmd_optimize(args: argparse.Namespace) -> int:
    return _run_optimize(_overrides(args), args.config, args.run_id)


def cmd_runs(args: argparse.Namespace) -> int:
    from storage.query import list_runs
    from w4s.paths import runs_dir

    root = runs_dir(args.runs_dir)
    runs = list_runs(root)
    if not runs:
        print(f"no runs under {root}")
        return 0
    cols = list(runs[0])
    print(format_table(cols, [[r[c] for c in cols] for r in runs]))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from storage.query import iteration_table
    from storage.run_store import RunStore
    from w4s.paths import runs_dir

    path = Path(args.run)
    if not (path / "config.json").is_file():
        path = runs_dir(args.runs_dir) / args.run
    store = RunStore(path)
    store.config()  # one clear line if it is not a run
    cols, rows = iteration_table(path)
    print(f"run {store.run_id}")
    print(format_table(cols, rows))
    summary = store.summary()
    if summary:
        test = summary["test_accuracy"]
        print(f"\nbest workflow: {summary['best_workflow']}  validation "
              f"{summary['best_val_accuracy']:.2f}, test "
              f"{'not evaluated' if test is None else f'{test:.2f}'}  ({summary['status']})")
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from storage.query import query_runs
    from w4s.paths import runs_dir

    cols, rows = query_runs(runs_dir(args.runs_dir), args.sql)
    print(format_table(cols, rows))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from flows.evaluate_cmd import evaluate_file
    from w4s.config import BackendConfig, format_validation_error

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
    p.add_argument("--scorer", help="custom benchmark scorer: numeric|exact|f1|choice|"
                                    "python:module:function")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="w4s", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="a small run on the embedded model, offline")
    p.add_argument("--benchmark", default="arithmetic", help="arithmetic (default) or humaneval")
    p.add_argument("--iterations", type=int)
    p.add_argument("--candidates", type=int)
    p.add_argument("--runs-dir")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("optimize", help="an optimization run from a config file and options")
    p.add_argument("--config", help="YAML or TOML file of OptimizeConfig fields")
    p.add_argument("--benchmark", help="a name, file:PATH, or a comma-separated list "
                                        "(one run per benchmark)")
    p.add_argument("--iterations", type=int)
    p.add_argument("--candidates", type=int)
    p.add_argument("--val-size", type=int)
    p.add_argument("--test-size", type=int)
    p.add_argument("--seed-workflow")
    p.add_argument("--concurrency", type=int)
    p.add_argument("--budget-usd", type=float)
    p.add_argument("--budget-tokens", type=int)
    p.add_argument("--no-cache", action="store_true", help="bypass the executor-call cache")
    p.add_argument("--runs-dir")
    p.add_argument("--run-id", help="resume this run: finished stages are skipped")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="any config field, e.g. --set executor.kind=openai")
    _add_benchmark_options(p)
    p.set_defaults(func=cmd_optimize)

    p = sub.add_parser("evaluate", help="score a workflow file in the sandbox")
    p.add_argument("--workflow", required=True)
    p.add_argument("--benchmark", required=True)
    p.add_argument("--split", choices=["validation", "test"], default="validation")
    p.add_argument("--val-size", type=int, default=10)
    p.add_argument("--test-size", type=int)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--executor", help="executor BackendConfig as YAML/JSON, "
                                      "e.g. '{kind: openai, model: gpt-4o-mini}'")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--rerun", action="store_true",
                   help="run every item in the sandbox, even one already run by identical code "
                        "(executor calls still come from the cache)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    from flows.prefect_setup import route_w4s_logs, set_environment_defaults

    set_environment_defaults()  # before Prefect is imported
    args = build_parser().parse_args(argv)
    route_w4s_logs()
    try:
        return args.func(args)
    except W4SError as e:
        print(f"w4s: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("w4s: interrupted; rerun with --run-id to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
