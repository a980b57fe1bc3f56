"""Does RLAO learn anything here? Collect, fit (RWR and SFT), compare with the base policy.

On the CPU, with the embedded SmolLM2-135M-Instruct as meta-agent and executor (both on
llama.cpp), on the synthetic arithmetic benchmark, where a workflow that computes with
`agent.execute_code` scores far above one that asks for the number:

1. collect: episodes of one turn from the paper's kind of initial state, the seeds in view
   with their validation accuracies: the `code` seed beside the current `direct` one, so the
   better action, adapting `code`, is one the base model can sample (with all four seeds in
   view, the prompt is longer and none of 11 sampled candidates passed its self-check);
   each episode has its own split;
2. dataset: reward-weighted (exp(r / 0.4)) and the SFT variant (every weight 1), same rows;
3. fit: one LoRA adapter on each;
4. evaluate: the base, RWR and SFT meta-agents, each from the same fresh states over fresh
   items (another item seed, other splits), one turn of m candidates per state.

Measures per policy, each with n and a 95% bootstrap interval: the valid-action rate (parsed
and self-check passed, repairs allowed), the share of valid candidates whose workflow calls
`execute_code`, their mean validation accuracy, and the mean reward of all rewarded ones.
Everything lives under `--work`; a rerun with the same folder resumes (collections by id,
fits whose adapter is complete are kept).

    .venv/bin/python benchmarks/learning_signal.py [--work DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LLAMACPP = {"kind": "llamacpp", "model": "smollm2-135m-instruct"}
START = time.monotonic()


def say(msg: str) -> None:
    print(f"[learning-signal {time.monotonic() - START:7.1f}s] {msg}", file=sys.stderr, flush=True)


def calls_execute_code(code: str | None) -> bool:
    """True when the workflow's code has a call `<something>.execute_code(...)`."""
    try:
        tree = ast.parse(code or "")
    except SyntaxError:
        return False
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
               and n.func.attr == "execute_code" for n in ast.walk(tree))


def bootstrap(values: Sequence[float], *, resamples: int = 2000, seed: int = 0) -> dict:
    """Mean with a 95% percentile-bootstrap interval; n = 0 gives None everywhere."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return {"n": 0, "mean": None, "ci95": None}
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"n": int(x.size), "mean": round(float(x.mean()), 4),
            "ci95": [round(float(lo), 4), round(float(hi), 4)]}


def measures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The experiment's measures over one policy's candidate rows (turn >= 1)."""
    rewarded = [r for r in rows if r["reward"] is not None]
    valid = [r for r in rewarded if r["status"] == "ok"]
    scored = [r for r in valid if r["accuracy"] is not None]
    return {
        "candidates": len(rows),
        "valid_rate": bootstrap([r["status"] == "ok" for r in rewarded]),
        "valid_first_try_rate": bootstrap([r["status"] == "ok" and r["repairs"] == 0
                                           for r in rewarded]),
        "execute_code_share": bootstrap([calls_execute_code(r["code"]) for r in valid]),
        "val_accuracy": bootstrap([r["accuracy"] for r in scored]),
        "reward": bootstrap([r["reward"] for r in rewarded]),
        "positive_share": bootstrap([r["reward"] > 0 for r in rewarded]),
        "lost": len(rows) - len(rewarded),  # budget or infrastructure: never measured
    }


def action_rows(runs_dir: Path) -> list[dict[str, Any]]:
    from storage.query import query

    files = sorted(str(p) for p in runs_dir.glob("*/trajectories/*.parquet"))
    if not files:
        return []
    cols, rows = query("SELECT status, code, val_accuracy AS accuracy, reward, repairs "
                       "FROM read_parquet(?, union_by_name = true) WHERE kind = 'action'",
                       [files])
    return [dict(zip(cols, r, strict=True)) for r in rows]


def collect_config(args: argparse.Namespace, runs_dir: Path, *, item_seed: int,
                   split_seed: int, episodes: int, temperatures: tuple[float, float],
                   adapter: str | None = None) -> Any:
    from w4s.config import CollectConfig

    return CollectConfig.model_validate({
        "benchmark": "arithmetic", "benchmark_options": {"seed": item_seed},
        "seeds": ["direct", "code"], "seed_workflow": "direct", "initial_state": "all_seeds",
        "iterations": 1, "candidates": args.candidates, "episodes": episodes,
        "split_per_episode": True, "split_seed": split_seed,
        "val_size": args.val_size, "test_size": 1, "max_repairs": args.max_repairs,
        "min_temperature": temperatures[0], "max_temperature": temperatures[1],
        "meta_agent": {**LLAMACPP, "max_new_tokens": args.meta_tokens, "adapter": adapter},
        "executor": {**LLAMACPP, "max_new_tokens": 64},
        "runs_dir": str(runs_dir),
    })


def run_collection(name: str, cfg: Any) -> dict[str, Any]:
    from flows.collect import collect

    t0 = time.monotonic()
    summary = collect(cfg, collection_id=name)
    say(f"collection {name}: {summary['rows']} candidates, rewards "
        f"{summary['reward_histogram']}, {time.monotonic() - t0:.0f}s")
    return {**summary, "seconds": round(time.monotonic() - t0, 1)}


def fit(dataset: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    from flows.fit import fit_adapter

    if (out / "metrics.json").is_file() and (out / "adapter_config.json").is_file():
        say(f"fit {out.name}: kept from an earlier run")
        return json.loads((out / "metrics.json").read_text())
    t0 = time.monotonic()
    last = [0.0]

    def progress(step: int, total: int, loss: float, tokens_per_s: float) -> None:
        if time.monotonic() - last[0] > 20 or step == total:
            last[0] = time.monotonic()
            say(f"fit {out.name}: step {step}/{total}, loss {loss:.4f}, {tokens_per_s:.0f} tok/s")

    result = fit_adapter(dataset, "embedded", out, epochs=args.epochs, lr=args.lr,
                         lora_r=args.lora_r, lora_alpha=2 * args.lora_r, seed=0,
                         register=False, on_step=progress)
    say(f"fit {out.name}: {time.monotonic() - t0:.0f}s")
    return result.metrics


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", help="working folder (default: a new temporary one); reuse "
                   "it to resume")
    p.add_argument("--episodes", type=int, default=6, help="training episodes (states)")
    p.add_argument("--eval-episodes", type=int, default=4, help="fresh states per policy")
    p.add_argument("--candidates", type=int, default=5, help="m per state")
    p.add_argument("--val-size", type=int, default=6)
    p.add_argument("--meta-tokens", type=int, default=384, help="meta-agent max new tokens")
    p.add_argument("--max-repairs", type=int, default=1,
                   help="self-check repairs per candidate (the paper: 3; each costs a "
                   "meta-agent generation)")
    p.add_argument("--eval-temperature", type=float, default=0.7)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--json", help="write the figures to this file")
    args = p.parse_args(argv)

    work = Path(args.work or tempfile.mkdtemp(prefix="w4s-learning-signal-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ["W4S_HOME"] = str(work / "home")  # its own caches, registry and runs
    from flows.prefect_setup import set_environment_defaults

    set_environment_defaults()
    say(f"working folder {work}")
    out: dict[str, Any] = {"settings": {k: v for k, v in vars(args).items() if k != "json"},
                           "work": str(work)}
    train_dir = work / "train"
    out["collection"] = run_collection("train", collect_config(
        args, train_dir, item_seed=0, split_seed=0, episodes=args.episodes,
        temperatures=(0.5, 1.0)))
    out["behaviour"] = measures(action_rows(train_dir))

    from storage.dataset import DatasetQuery, build_dataset
    from w4s.errors import W4SError

    adapters, fits = {}, {}
    out["datasets"] = {}
    for variant, sft in (("rwr", False), ("sft", True)):
        try:
            data = build_dataset(train_dir, work / f"{variant}.parquet", DatasetQuery(sft=sft))
        except W4SError as e:  # e.g. no candidate passed its self-check: nothing to fit
            say(f"dataset {variant}: {e}")
            out["datasets"][variant] = {"rows": 0, "error": str(e)}
            continue
        say(f"dataset {variant}: {data.summary_line()}")
        out["datasets"][variant] = {"rows": data.rows, "weights": data.card["weights"],
                                    "reward_histogram": data.card.get("reward_histogram")}
        fits[variant] = fit(data.path, work / "adapters" / variant, args)
        adapters[variant] = str(work / "adapters" / variant)
    out["fits"] = {v: {**{k: m.get(k) for k in ("samples", "tokens_total", "steps",
                                                "seconds", "tokens_per_s")},
                       "first_loss": m["loss_curve"][0]["loss"] if m["loss_curve"] else None,
                       "final_loss": m["loss_curve"][-1]["loss"] if m["loss_curve"] else None}
                   for v, m in fits.items()}

    t = (args.eval_temperature, args.eval_temperature)
    policies: dict[str, Callable[[], Any]] = {
        name: (lambda a=adapter, n=name: collect_config(
            args, work / f"eval-{n}", item_seed=1, split_seed=100,
            episodes=args.eval_episodes, temperatures=t, adapter=a))
        for name, adapter in (("base", None), *adapters.items())
    }
    out["evaluation"] = {}
    for name, make in policies.items():
        summary = run_collection(f"eval-{name}", make())
        out["evaluation"][name] = {**measures(action_rows(work / f"eval-{name}")),
                                   "seconds": summary["seconds"]}
    out["seconds"] = round(time.monotonic() - START, 1)
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
