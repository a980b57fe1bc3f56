"""The `w4s` command line: demo, optimize, evaluate, runs, query, show; and RLAO: collect,
dataset, fit, adapters."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from w4s.errors import W4SError

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


# -------------------------------------------------------------- config flags from the model

_CUSTOM_BENCHMARK_FLAGS = ("question_field", "answer_field", "scorer")  # -> benchmark_options
_NONE_WORDS = ("none", "null")


def _dest(name: str) -> str:
    return f"cfg_{name}"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _scalar_parser(annotation: Any) -> tuple[Any, str] | None:
    """(converter, metavar) for a field settable from one flag; None for nested fields, which
    stay reachable through `--set a.b=v`. `Optional` fields also take `none`."""
    import types
    from typing import Literal, Union, get_args, get_origin

    members = (get_args(annotation) if get_origin(annotation) in (Union, types.UnionType)
               else (annotation,))
    optional = type(None) in members
    members = tuple(m for m in members if m is not type(None))
    convert: Any
    if str in members and any(get_origin(m) is list for m in members) and len(members) == 2:
        def convert(text: str) -> str | list[str]:  # "a,b" -> a list, as `benchmark` takes
            parts = [p.strip() for p in text.split(",") if p.strip()]
            return parts if "," in text else text
        metavar = "NAME[,NAME...]"
    elif len(members) != 1:
        return None
    elif members[0] == list[str]:
        def convert(text: str) -> list[str]:  # "a,b" -> ["a", "b"], as `seeds` takes
            return [p.strip() for p in text.split(",") if p.strip()]
        metavar = "NAME[,NAME...]"
    elif get_origin(members[0]) is Literal:
        choices = [str(c) for c in get_args(members[0])]

        def convert(text: str) -> str:
            if text not in choices:
                raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}")
            return text
        metavar = "{" + ",".join(choices) + "}"
    elif members[0] in (int, float, str, bool):
        convert, metavar = members[0], members[0].__name__.upper()
    else:
        return None
    if not optional:
        return convert, metavar
    base = convert

    def convert_optional(text: str) -> Any:
        return None if text.strip().lower() in _NONE_WORDS else base(text)

    convert_optional.__name__ = getattr(base, "__name__", "value")  # argparse's error names it
    return convert_optional, metavar


def config_flags() -> dict[str, argparse.Action | None]:
    """Every OptimizeConfig field and its flag (None: set it with `--set`); for the tests."""
    parser = argparse.ArgumentParser(add_help=False)
    _add_config_flags(parser)
    by_dest: dict[str, argparse.Action] = {}
    for action in parser._actions:
        by_dest.setdefault(action.dest, action)  # the generated flag, not an alias after it
    from w4s.config import OptimizeConfig

    return {name: by_dest.get(_dest(name)) for name in OptimizeConfig.model_fields}


def _field_help(name: str, model: type | None = None, *, default: bool = True) -> str:
    from pydantic_core import PydanticUndefined

    from w4s.config import OptimizeConfig

    info = (model or OptimizeConfig).model_fields[name]
    text = info.description or name.replace("_", " ")
    if default and info.default not in (PydanticUndefined, None):
        text += f" (default: {info.default})"
    return text.replace("%", "%%")


def _add_config_flags(p: argparse.ArgumentParser, model: type | None = None) -> None:
    """One flag per scalar field of `model` (OptimizeConfig), named, typed and described by
    the model."""
    from w4s.config import OptimizeConfig

    model = model or OptimizeConfig
    for name, info in model.model_fields.items():
        parsed = _scalar_parser(info.annotation)
        if parsed is None:
            continue
        convert, metavar = parsed
        if info.annotation is bool:
            p.add_argument(_flag(name), dest=_dest(name), action=argparse.BooleanOptionalAction,
                           default=argparse.SUPPRESS, help=_field_help(name, model))
        else:  # not given: no attribute at all, so `--test-size none` can set None
            p.add_argument(_flag(name), dest=_dest(name), type=convert, metavar=metavar,
                           default=argparse.SUPPRESS, help=_field_help(name, model))
    # the older spelling of --no-use-cache
    p.add_argument("--no-cache", dest=_dest("use_cache"), action="store_false",
                   default=argparse.SUPPRESS,
                   help="bypass the executor-call cache (same as --no-use-cache)")


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    keys = dotted.split(".")
    if not all(keys):
        raise W4SError(f"`--set` expects FIELD=VALUE with a dotted FIELD, but received {dotted!r}")
    out: dict[str, Any] = {keys[-1]: value}
    for key in reversed(keys[:-1]):
        out = {key: out}
    return out


def _overrides(args: argparse.Namespace, model: type | None = None) -> dict[str, Any]:
    """The config fields given on the command line; `--set` items last, merged deeply."""
    from w4s.config import OptimizeConfig, deep_merge

    given = vars(args)
    data = {name: given[_dest(name)] for name in (model or OptimizeConfig).model_fields
            if _dest(name) in given}
    opts = _custom_benchmark_options(args)
    if opts:
        data = deep_merge(data, {"benchmark_options": opts})
    for item in getattr(args, "set", None) or []:
        if "=" not in item:
            raise W4SError(f"`--set` expects FIELD=VALUE, but received {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise W4SError(f"`--set {key.strip()}`: not valid YAML/JSON: {raw!r}") from e
        data = deep_merge(data, _nested(key.strip(), value))
    return data


def _custom_benchmark_options(args: argparse.Namespace) -> dict[str, Any]:
    return {field: getattr(args, field) for field in _CUSTOM_BENCHMARK_FLAGS
            if getattr(args, field, None) is not None}


# -------------------------------------------------------------- output


def stdout_console(file: Any = None) -> Any:
    """A rich console on stdout; piped (not a terminal): no colour, no width limit, so
    tables keep one line per row."""
    from rich.console import Console

    out = file if file is not None else sys.stdout
    console = Console(file=out, highlight=False)
    if console.is_terminal:
        return console
    return Console(file=out, highlight=False, color_system=None, width=100_000)


def _head_rule() -> Any:
    from rich.box import Box

    # rich's SIMPLE_HEAD in ASCII: a rule under the header, nothing else
    return Box("    \n    \n -- \n    \n    \n    \n    \n    \n", ascii=True)


def _score(v: float | None) -> str:
    """An accuracy to 2 places; None (never scored, e.g. a budget spent first) as `-`."""
    return "-" if v is None else f"{v:.2f}"


def _cell(v: Any) -> str:
    return "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)


def table(cols: list[str], rows: list[tuple | list], *, title: str | None = None,
          wide: dict[str, int] | None = None) -> Any:
    """A rich table: numbers right-aligned, None as `-`, floats to 2 places; `wide` caps
    the named text columns to a width, cut with an ellipsis."""
    from rich.table import Table

    t = Table(box=_head_rule(), title=title, title_justify="left", header_style="bold",
              show_edge=False, pad_edge=False)
    for i, col in enumerate(cols):
        numeric = all(isinstance(r[i], int | float) or r[i] is None for r in rows)
        width = (wide or {}).get(col)
        t.add_column(col, justify="right" if numeric else "left", no_wrap=True,
                     max_width=width, overflow="ellipsis" if width else "fold")
    for r in rows:
        t.add_row(*(_cell(v) for v in r))
    return t


def print_table(cols: list[str], rows: list[tuple | list], **kw: Any) -> None:
    console = stdout_console()
    if console.is_terminal:
        console.print(table(cols, rows, **kw))
        return
    with console.capture() as captured:  # piped: the same text, without trailing padding
        console.print(table(cols, rows, **kw))
    lines = captured.get().splitlines()
    console.file.write("".join(line.rstrip() + "\n" for line in lines))


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
        _print_result(one)
    return 0


def _print_result(summary: dict[str, Any]) -> None:
    from w4s.storage.query import iteration_table

    run_dir = Path(summary["run_dir"])
    cols, rows = iteration_table(run_dir)
    print()
    print(f"run {summary['run_id']}  ({summary['benchmark']}, status: {summary['status']})")
    print_table(cols, rows)
    print()
    print(f"best workflow:      {summary['best_workflow']}  (iteration {summary['best_iteration']},"
          f" validation {_score(summary['best_val_accuracy'])})")
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


def with_resolved_adapter(cfg: Any) -> Any:
    """`meta_agent.adapter: latest|champion|ID|PATH` -> the adapter's folder, checked against
    the meta-agent's base, so the run's config records the adapter it really used.
    `champion` with none promoted serves the base model (adapter None)."""
    spec = cfg.meta_agent.adapter
    if spec is None:
        return cfg
    from w4s.storage.adapters import check_base, local_folder, resolve_spec

    record = resolve_spec(spec)
    meta = cfg.meta_agent
    if record is None:
        return cfg.model_copy(update={"meta_agent": meta.model_copy(update={"adapter": None})})
    base = (str(Path(meta.model).expanduser().resolve()) if meta.kind == "transformers"
            else meta.model or "smollm2-135m-instruct")
    if meta.kind in ("embedded", "llamacpp", "transformers", "vllm"):
        check_base(record, base)
    # a registry at a URL: the adapter is downloaded once into this host's cache
    folder = str(local_folder(record))
    return cfg.model_copy(update={"meta_agent": meta.model_copy(update={"adapter": folder})})


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
    from w4s.storage.query import iteration_table
    from w4s.storage.run_store import RunStore

    path = location(args.run)  # a folder, a URL, or a run id under --runs-dir
    if not (path / "config.json").is_file():
        path = runs_dir(args.runs_dir) / args.run
    store = RunStore(path)
    store.config()  # one clear line if it is not a run
    cols, rows = iteration_table(path)
    print(f"run {store.run_id}")
    print_table(cols, rows)
    summary = store.summary()
    if summary:
        test = summary["test_accuracy"]
        print(f"\nbest workflow: {summary['best_workflow']}  validation "
              f"{_score(summary['best_val_accuracy'])}, test "
              f"{'not evaluated' if test is None else f'{test:.2f}'}  ({summary['status']})")
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

    from w4s.flows import dataset_cmd, deploy_cmd, fit, nightly_cmd

    dataset_cmd.add_parser(sub)  # RLAO: trajectory rows -> a reward-weighted dataset
    fit.add_parser(sub)  # RLAO: dataset -> a LoRA adapter (`fit`), and the registry (`adapters`)
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
