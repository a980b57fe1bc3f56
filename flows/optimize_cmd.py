"""`w4s demo`, `w4s optimize` and `w4s collect`: their flags come from OptimizeConfig and
CollectConfig (flows/config_cli.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from w4s.config import CollectConfig, OptimizeConfig
from w4s.embedded_model import EMBEDDED_MODEL_ID
from w4s.errors import W4SError
from w4s.flows.cli_common import print_run, with_resolved_adapter
from w4s.flows.config_cli import Given, config_command, option

# Both roles on llama.cpp, which serves the embedded GGUF several times faster on a CPU than
# transformers (docs/configuration.md, benchmarks/bench_backends.py) and batches concurrent
# calls, such as the candidates' repairs. `kind: embedded` (transformers) is the meta-agent
# RLAO fits.
_EMBEDDED_LLAMACPP = {"kind": "llamacpp", "model": EMBEDDED_MODEL_ID}
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
ADAPTER_HELP = ("the meta-agent's LoRA adapter: latest, champion (the last promoted; base if "
                "none), an id from `w4s adapters`, or a folder")


def load_with_adapter(given: Given, model: type, adapter: str | None = None) -> Any:
    """The config (`--adapter` over `meta_agent.adapter`), its adapter resolved to a folder."""
    extra = None if adapter is None else {"meta_agent": {"adapter": adapter}}
    return with_resolved_adapter(given.load(model, extra))


def until_interrupted(run: Any, resume_flag: str) -> Any:
    """run(); on Ctrl-C say how to resume and return None (exit code 130)."""
    try:
        return run()
    except KeyboardInterrupt:
        print(f"w4s: interrupted; rerun with {resume_flag} to resume (same config)",
              file=sys.stderr)
        return None


def run_optimize(cfg: OptimizeConfig, run_id: str | None = None,
                 task_runner: str | None = None) -> int:
    from w4s.flows.optimize import optimize
    from w4s.storage.run_store import new_run_id

    # drawn here as RunStore.create would, not in the flow, so Ctrl-C can name it; with several
    # benchmarks this top-level id resumes every one's subflow
    run_id = run_id or new_run_id(cfg)
    flow = optimize
    if task_runner:  # submitted tasks (the self-checks) on threads or a Dask cluster
        from w4s.flows.runners import task_runner as make_runner

        flow = optimize.with_options(task_runner=make_runner(task_runner))
    summary = until_interrupted(lambda: flow(cfg, run_id=run_id), f"--run-id {run_id}")
    if summary is None:
        return 130
    for one in summary.get("runs", [summary]):
        print()
        print_run(Path(one["run_dir"]), one["run_id"], one)
    return 0


def demo(*, benchmark: str = "arithmetic", iterations: int | None = None,
         candidates: int | None = None, runs_dir: str | None = None) -> int:
    """A small run on the embedded model, offline.

    Parameters
    ----------
    benchmark
        arithmetic (default) or humaneval
    iterations
        optimization iterations
    candidates
        m actions sampled per iteration
    runs_dir
        default: $W4S_HOME/runs or the user data dir
    """
    if benchmark not in DEMO:
        raise W4SError(f"`--benchmark` {benchmark!r} has no demo; choose from: "
                       f"{', '.join(DEMO)}")
    given = {"iterations": iterations, "candidates": candidates, "runs_dir": runs_dir}
    data = {**DEMO[benchmark], **{k: v for k, v in given.items() if v is not None}}
    print(f"w4s demo: {benchmark}, embedded SmolLM2-135M-Instruct as meta-agent and "
          f"executor, {data['iterations']} iteration(s) x {data['candidates']} candidates")
    return run_optimize(Given(overrides=data).load(OptimizeConfig))


def _optimize(given: Given, *, run_id: str | None = None, adapter: str | None = None,
              task_runner: str | None = None) -> int:
    return run_optimize(load_with_adapter(given, OptimizeConfig, adapter), run_id, task_runner)


def _collect(given: Given, *, collection_id: str | None = None,
             adapter: str | None = None) -> int:
    from w4s.flows.collect import collect
    from w4s.storage.run_store import new_run_id

    cfg = load_with_adapter(given, CollectConfig, adapter)
    cid = collection_id or new_run_id(cfg)  # named now, so Ctrl-C can say it
    summary = until_interrupted(lambda: collect(cfg, collection_id=cid),
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


# the older spelling of --no-use-cache stays
_NAMES = {"use_cache": {"negative": ("--no-use-cache", "--no-cache")}}

optimize = config_command(
    OptimizeConfig, _optimize, benchmark_flags=True, names=_NAMES,
    help="An optimization run from a config file and options. Every scalar config field is "
         "a flag; nested ones (executor, meta_agent, benchmark_options, prices) are set with "
         "--set a.b=VALUE, merged into the --config file's blocks key by key.",
    options=[
        option("run_id", str | None, "resume this run: finished stages are skipped"),
        option("adapter", str | None, ADAPTER_HELP),
        option("task_runner", str | None, "where submitted tasks run: threads[:N] (default), "
               "dask[:N] or dask:tcp://HOST:PORT (w4s[dask])"),
    ])

collect = config_command(
    CollectConfig, _collect, benchmark_flags=True, names=_NAMES,
    help="RLAO: collect trajectories from many episodes at once (optimization runs without "
         "a test evaluation, side by side); nested fields through --set a.b=VALUE.",
    options=[
        option("collection_id", str | None, "resume this collection: finished stages are "
               "skipped"),
        option("adapter", str | None, ADAPTER_HELP + " (iterated RLAO)"),
    ])

