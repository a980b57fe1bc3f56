"""Prefect's overhead on `w4s demo`: the same run with and without orchestration, one process.

Runs the demo config (llama.cpp in both roles, executor cache off, fresh run ids) twice:
once by calling the plain stage functions of tasks/stages.py in the flow's order (the
self-checks concurrently, as the flow submits them), once through the `optimize` flow. The
meta-agent samples, so the two runs' work differs a little (repairs, skipped candidates);
hence a second, noise-free figure from inside the flow run: every stage body's interval is
recorded, and the flow's wall time outside their union is orchestration (task runs, state
changes, result persistence, logs, artifacts, report plots, events). Also counts the flow's
task runs, to show there is no task per item or per token.

    .venv/bin/python benchmarks/bench_prefect_overhead.py                       # demo size
    .venv/bin/python benchmarks/bench_prefect_overhead.py --iterations 1 --candidates 2 \\
        --json overhead.json

Measured 2026-12-02 on the shared 2-core machine (load average 5-7 from other jobs),
`--iterations 1 --candidates 2` (9 task runs): plain 79.9 s, flow 91.3 s (the meta-agent
sampled 6636 tokens in the flow run vs 4789 in the plain one, same executor calls); inside
the flow run 1.58 s (1.7 %) was outside stage bodies, 0.50 s of it the report and plots,
1.19 s the flow's end (heartbeat join, final state). Prefect's ephemeral server start, once
per process, took 13.3 s under that load. Before tags moved off the task runs (each tagged
task run acquires tag concurrency slots from the server) the in-run figure was 5.4 s (5.9 %).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STAGES = ("seed", "generate", "self_check", "execute", "reward", "log_trajectory",
          "evaluate_test")


class Intervals:
    """(start, end) of every stage body, from any thread."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float, str]] = []
        self._lock = threading.Lock()

    def wrap(self, fn: Any, name: str) -> Any:
        @functools.wraps(fn)
        def timed(*args: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                with self._lock:
                    self.spans.append((t0, time.perf_counter(), name))
        return timed

    def gaps(self, start: float, end: float, top: int = 5) -> list[tuple[float, str]]:
        """The largest stretches with no stage body running, named by the stage after."""
        out, covered = [], start
        for s, e, name in sorted(x for x in self.spans if start <= x[0] < end):
            if s > covered:
                out.append((round(s - covered, 3), name))
            covered = max(covered, e)
        out.append((round(end - covered, 3), "(flow end)"))
        return sorted(out, reverse=True)[:top]

    def union_s(self, start: float, end: float) -> float:
        """Seconds within [start, end] covered by at least one stage body."""
        total, cur_s, cur_e = 0.0, None, None
        for s, e in sorted((max(s, start), min(e, end)) for s, e, _ in self.spans
                           if e > start and s < end):
            if cur_e is None or s > cur_e:
                total += 0.0 if cur_e is None else cur_e - cur_s
                cur_s, cur_e = s, e
            else:
                cur_e = max(cur_e, e)
        return total + (0.0 if cur_e is None else cur_e - cur_s)


def plain_run(cfg: Any, runs_dir: Path) -> dict[str, Any]:
    """The flow's turn sequence (tasks/turn.py) over the plain stages, without Prefect."""
    from w4s.storage.run_store import new_run_id
    from w4s.tasks import stages
    from w4s.tasks.turn import Episodes, plain_submit, run_turns

    run_dir = stages.prepare_run(cfg, runs_dir, new_run_id(cfg))
    with plain_submit(max(cfg.candidates, 1)) as submit:
        status, done = run_turns(Episodes([run_dir], submit), cfg.iterations)
    return stages.evaluate_test(run_dir, done, status)


def work(summary: dict[str, Any]) -> dict[str, Any]:
    """What a run did, to compare the two runs' work."""
    from w4s.storage.query import iteration_table

    cols, rows = iteration_table(Path(summary["run_dir"]))
    table = [dict(zip(cols, r, strict=True)) for r in rows]
    return {"executor_calls": summary["executor_calls"],
            "executor_tokens": summary["executor_tokens"],
            "meta_agent_tokens": summary["meta_agent_tokens"],
            "repairs": sum(r["repairs"] or 0 for r in table),
            "skipped": sum(r["skipped"] for r in table)}


def task_run_count(flow_run_id: Any) -> int:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return len(client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])), limit=200))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--benchmark", default="arithmetic", choices=("arithmetic", "humaneval"))
    p.add_argument("--iterations", type=int, default=None, help="default: the demo's")
    p.add_argument("--candidates", type=int, default=None, help="default: the demo's")
    p.add_argument("--val-size", type=int, default=None, help="default: the demo's")
    p.add_argument("--test-size", type=int, default=None, help="default: the demo's")
    p.add_argument("--prefect-first", action="store_true",
                   help="run the flow before the plain stages (default: after)")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = p.parse_args()

    home = Path(tempfile.mkdtemp(prefix="w4s-overhead-"))
    os.environ.setdefault("W4S_HOME", str(home / "w4s"))
    from w4s.flows.prefect_setup import set_environment_defaults

    set_environment_defaults()
    from w4s.config import build_config
    from w4s.flows.optimize_cmd import DEMO

    data = {**DEMO[args.benchmark], "use_cache": False, "runs_dir": str(home / "runs")}
    for name in ("iterations", "candidates", "val_size", "test_size"):
        if getattr(args, name) is not None:
            data[name] = getattr(args, name)
    cfg = build_config(data)

    from prefect import flow

    from w4s.flows import ui
    from w4s.flows.optimize import optimize
    from w4s.storage.run_store import new_run_id
    from w4s.tasks import runtime, stages

    t0 = time.perf_counter()
    runtime.meta_agent(cfg), runtime.executor(cfg), runtime.harness(cfg)  # both runs warm
    load_s = time.perf_counter() - t0

    @flow(name="bench-warmup")
    def warmup() -> None:
        """Starts Prefect's server (ephemeral unless PREFECT_API_URL is set) before timing."""

    t0 = time.perf_counter()
    warmup()
    startup_s = time.perf_counter() - t0

    spans = Intervals()
    for name in STAGES:
        setattr(stages, name, spans.wrap(getattr(stages, name), name))
    publish = ui.publish_run
    report_s = [0.0]

    def timed_publish(*a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return publish(*a, **kw)
        finally:
            report_s[0] += time.perf_counter() - t
    ui.publish_run = timed_publish

    def run_prefect() -> dict[str, Any]:
        t = time.perf_counter()
        state = optimize(cfg, run_id=new_run_id(cfg), return_state=True)
        end = time.perf_counter()
        summary = state.result()
        inside = spans.union_s(t, end)
        return {"wall_s": end - t, "stage_s": inside, "overhead_s": end - t - inside,
                "report_s": report_s[0], "largest_gaps": spans.gaps(t, end),
                "task_runs": task_run_count(state.state_details.flow_run_id),
                "work": work(summary)}

    def run_plain() -> dict[str, Any]:
        t = time.perf_counter()
        summary = plain_run(cfg, home / "runs")
        end = time.perf_counter()
        return {"wall_s": end - t, "stage_s": spans.union_s(t, end), "work": work(summary)}

    order = [("prefect", run_prefect), ("plain", run_plain)]
    results = dict((name, fn()) for name, fn in (order if args.prefect_first else order[::-1]))
    pre, plain = results["prefect"], results["plain"]
    out = {
        "config": {k: data[k] for k in ("benchmark", "iterations", "candidates", "val_size",
                                        "test_size")},
        "model_load_s": load_s, "prefect_startup_s": startup_s,
        "plain": plain, "prefect": pre,
        "wall_ratio": pre["wall_s"] / plain["wall_s"],
        "overhead_share": pre["overhead_s"] / pre["wall_s"],
        "overhead_share_with_startup": (pre["overhead_s"] + startup_s)
        / (pre["wall_s"] + startup_s),
        "load_avg_1m": os.getloadavg()[0],
    }
    print(f"config {out['config']}")
    print(f"plain stages   {plain['wall_s']:7.1f} s  work {plain['work']}")
    print(f"prefect flow   {pre['wall_s']:7.1f} s  work {pre['work']}  "
          f"({pre['task_runs']} task runs)")
    print(f"wall ratio     {out['wall_ratio']:.3f} (prefect / plain; sampling makes the work "
          "differ)")
    print(f"in-run overhead {pre['overhead_s']:.2f} s = {100 * out['overhead_share']:.1f}% of "
          f"the flow's wall time (report and plots {pre['report_s']:.2f} s of it)")
    print(f"largest gaps   {pre['largest_gaps']}")
    print(f"Prefect start  {startup_s:.1f} s once per process; with it "
          f"{100 * out['overhead_share_with_startup']:.1f}%")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
