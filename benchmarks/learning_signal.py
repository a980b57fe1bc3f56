"""Does RLAO learn anything here? Headroom, collection, RWR and SFT fits, paired evaluation.

On the CPU, with the embedded SmolLM2-135M-Instruct as meta-agent and executor (both on
llama.cpp), on the synthetic arithmetic benchmark:

1. headroom: the executor's accuracy under each seed workflow and under EXTRACT (a workflow
   that pulls the expression out of the question and runs it with `agent.execute_code`), on
   the first `--headroom-items` items; then direct, code and EXTRACT on every item of the
   collection pool (item seed 0) and of the evaluation pool (item seed 1);
2. states: the paper's initial state (the `code` seed with its accuracy beside the current
   `direct` workflow). A state is kept only when a better workflow is within reach: `code`,
   in view, scores above the current `direct` on that state's validation items (so copying
   or adapting it earns a positive reward), and EXTRACT scores above both. Collection states
   come from the item-seed-0 pool, evaluation states from the item-seed-1 pool (fresh items
   and splits, never in a collection); every kept state is written to `states.json` once;
3. collection (round 1): `--states` x m candidates from the base policy, 0 repairs, the
   executor at temperature 0 through the shared call cache (the seeds call it at 0);
4. fits: RWR (exp(r / 0.4)) and SFT (weight 1) on the same rows, identical steps, two seeds;
5. evaluation: base, SFT and RWR each sample m candidates from every evaluation state (a
   two-seed policy: m/2 from each seed's adapter), states in chunks so that a run stopped by
   `--deadline` still holds paired results;
6. offline margins of round 1's policies;
7. round 2: collect again with the RWR adapters, refit RWR and SFT (its control, unless
   `--no-refit-sft`) on both rounds' rows, identical steps, evaluate, and their margins.

PRIMARY metric (named here, before any run): mean reward per sampled candidate over all
candidates of a policy on the evaluation states; an invalid candidate (unparsed, or failing
its self-check) gets the reward the environment gives it (-0.1). Secondary: the valid-action
rate, the share of all candidates whose valid workflow calls `execute_code`, the mean
validation accuracy over all candidates (0 for invalid ones), the positive-reward share.
Offline: the held-out log-likelihood margin of positive over non-positive candidates (the
base policy's candidates on the evaluation states), forward passes only
(`models/policy_eval.py`). Intervals: 95% cluster bootstrap over states; RWR - base,
SFT - base and RWR - SFT are paired differences on the same states (`w4s/stats.py`).
Candidates lost to infrastructure (reward None) are never measured; they are counted.
Audit: for each positive candidate, whether its code hard-codes a gold its state showed
(the example's, or a failure case's "expected"); the example is an item outside the split
(tasks/stages.py), so only the failure cases' golds can pay. Per-stage times of the states
(thread seconds: two states overlap) are in `state_stage_seconds`.

Everything lives under `--work`; a rerun with the same folder resumes (finished states,
datasets and complete adapters are kept). Results are rewritten after every stage, so a
stopped run leaves what finished in `--json`.

    .venv/bin/python benchmarks/learning_signal.py --work DIR --json out.json [--smoke]
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from w4s import stats  # noqa: E402
from w4s.embedded_model import EMBEDDED_MODEL_ID  # noqa: E402

LLAMACPP = {"kind": "llamacpp", "model": EMBEDDED_MODEL_ID}
START = time.monotonic()
PRIMARY = "reward"
PRIMARY_TEXT = ("mean reward per sampled candidate, every candidate counted (invalid ones "
                "get the environment's reward, -0.1)")
SECONDARY = ("valid", "execute_code", "val_accuracy", "positive")

EXPRESSION = re.compile(r"\d[\d+*\- ]*\d")
EXTRACT = '''\
import re


def solver(agent, task: str) -> dict:
    expr = re.search(r"\\d[\\d+*\\- ]*\\d", task).group(0)
    return {"answer": agent.execute_code("print(" + expr + ")")}
'''


def say(msg: str) -> None:
    print(f"[learning-signal {time.monotonic() - START:7.1f}s] {msg}", file=sys.stderr,
          flush=True)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def calls_execute_code(code: str | None) -> bool:
    """True when the workflow's code has a call `<something>.execute_code(...)`."""
    try:
        tree = ast.parse(code or "")
    except SyntaxError:
        return False
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
               and n.func.attr == "execute_code" for n in ast.walk(tree))


# ------------------------------------------------------------------------- measures


def candidate_values(row: dict[str, Any]) -> dict[str, float]:
    """One candidate's values of every measure; the row must have a reward (not lost)."""
    valid = row["status"] == "ok"
    return {
        "reward": float(row["reward"]),
        "valid": float(valid),
        "execute_code": float(valid and calls_execute_code(row["code"])),
        "val_accuracy": float(row["accuracy"] or 0.0) if valid else 0.0,
        "positive": float(row["reward"] > 0),
    }


def by_state(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """measure -> state -> the values of that state's rewarded candidates."""
    out: dict[str, dict[str, list[float]]] = {k: {} for k in (PRIMARY, *SECONDARY)}
    for r in rows:
        if r["reward"] is None:
            continue
        for k, v in candidate_values(r).items():
            out[k].setdefault(r["state"], []).append(v)
    return out


def measures(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Every measure over one policy's candidates, 95% cluster-bootstrap intervals."""
    clusters = by_state(rows)
    return {"candidates": len(rows), "lost": sum(r["reward"] is None for r in rows),
            **{k: stats.cluster_bootstrap(v) for k, v in clusters.items()}}


def paired(a_rows: Sequence[dict], b_rows: Sequence[dict]) -> dict[str, Any]:
    """a - b for every measure, paired on the states both sampled from."""
    a, b = by_state(a_rows), by_state(b_rows)
    out = {}
    for k in a:
        try:
            out[k] = stats.paired_difference(a[k], b[k])
        except ValueError as e:
            out[k] = {"error": str(e)}
    return out


# ------------------------------------------------------------------------- audit


def shown_items(state: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(source, question, gold) of every item whose gold the state shows the meta-agent:
    the example, and the failure cases' "expected" (validation items)."""
    out = [("example", state["example_question"], str(state["example_answer"]))]
    for h in state.get("history", []):
        out += [("failure_case", f["question"], str(f["expected"]))
                for f in h.get("failures") or []]
    return out


def _squash(text: str) -> str:
    return "".join(text.split())


def hard_coded(code: str | None, shown: Sequence[tuple[str, str, str]]) -> list[str]:
    """The sources ("example", "failure_case") of shown items that the code hard-codes: the
    gold as a literal of its own (two characters or more), or the question's expression."""
    code = code or ""
    flat = _squash(code)
    found = []
    for source, question, gold in shown:
        gold = gold.strip()  # one-digit golds turn up anywhere (range(4)): not counted
        literal = len(gold) >= 2 and re.search(rf"(?<![\w.]){re.escape(gold)}(?![\w.])", code)
        expr = EXPRESSION.search(question)
        if literal or (expr and len(_squash(expr.group(0))) >= 3
                       and _squash(expr.group(0)) in flat):
            found.append(source)
    return sorted(set(found))


def audit(rows: Sequence[dict[str, Any]], states: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """For each positive candidate: does its code hard-code a gold its state showed?
    `states`: run id -> the state (JSON) the candidate was sampled from."""
    pos = [r for r in rows if r["reward"] is not None and r["reward"] > 0]
    hits = [hard_coded(r["code"], shown_items(states[r["run_id"]])) for r in pos]
    return {"positive": len(pos), "hard_code_example": sum("example" in h for h in hits),
            "hard_code_failure_case": sum("failure_case" in h for h in hits),
            "hard_code_any": sum(bool(h) for h in hits),
            "flagged": [{"run_id": r["run_id"], "reward": r["reward"], "shown": h}
                        for r, h in zip(pos, hits, strict=True) if h]}


def run_states_json(root: Path, rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {rid: json.loads((root / rid / "state" / "iter-0000.json").read_text())
            for rid in {r["run_id"] for r in rows}}


# ------------------------------------------------------------------------- environment


def make_config(args: argparse.Namespace, root: Path, *, item_seed: int, split_seed: int,
                temperature: float, candidates: int, adapter: str | None = None) -> Any:
    from w4s.config import OptimizeConfig

    return OptimizeConfig.model_validate({
        "benchmark": "arithmetic",
        "benchmark_options": {"seed": item_seed, "size": args.pool},
        "seeds": ["direct", "code"], "seed_workflow": "direct", "initial_state": "all_seeds",
        "split_seed": split_seed,  # missing before 2026-12-04 15:50: every state was split 0
        "iterations": 1, "candidates": candidates, "meta_temperature": temperature,
        "val_size": args.val_size, "test_size": 1, "max_repairs": args.max_repairs,
        "item_timeout_s": args.item_timeout, "concurrency": args.concurrency,
        "meta_agent": {**LLAMACPP, "max_new_tokens": args.meta_tokens, "adapter": adapter},
        "executor": {**LLAMACPP, "max_new_tokens": 64, "timeout_s": args.item_timeout},
        "runs_dir": str(root),
    })


def score_pool(args: argparse.Namespace, work: Path, item_seed: int,
               workflows: dict[str, str], items_limit: int | None = None) -> dict[str, Any]:
    """Per workflow: accuracy and the ids of the items it gets right (cached on disk)."""
    from w4s.tasks import runtime

    cache = work / f"scores-{item_seed}-{items_limit or args.pool}-{len(workflows)}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    cfg = make_config(args, work / "scratch", item_seed=item_seed, split_seed=0,
                      temperature=0.7, candidates=1)
    bench = runtime.benchmark(cfg)
    items = bench.load()[: items_limit or args.pool]
    t0 = time.monotonic()
    results = runtime.harness(cfg).evaluate_many(list(workflows.values()), items, bench)
    out = {}
    for name, res in zip(workflows, results, strict=True):
        if res.infra_errors:
            why = next(o.infra_error for o in res.outcomes if o.infra_error)
            raise RuntimeError(f"{name}: {res.infra_errors} item(s) lost to infrastructure "
                               f"({why}); rerun to resume")
        out[name] = {"accuracy": round(res.accuracy, 4), "items": len(items),
                     "correct": [o.item_id for o in res.outcomes if o.score >= 1]}
    say(f"item seed {item_seed}: {len(items)} items x {len(workflows)} workflows in "
        f"{time.monotonic() - t0:.0f}s: " + ", ".join(f"{k} {v['accuracy']:.2f}"
                                                       for k, v in out.items()))
    cache.write_text(json.dumps(out))
    return out


def pick_states(args: argparse.Namespace, scores: dict[str, Any], item_seed: int, n: int,
                first_split: int) -> list[dict[str, Any]]:
    """The first n split seeds from `first_split` on whose validation items `code` beats
    `direct` and EXTRACT beats both: a better workflow is in view, a better one still exists."""
    from w4s.benchmarks import get_benchmark
    from w4s.benchmarks.base import split_items

    items = get_benchmark("arithmetic", seed=item_seed, size=args.pool).load()
    right = {k: set(v["correct"]) for k, v in scores.items()}
    states, seen = [], set()
    for split_seed in range(first_split, first_split + 100_000):
        val = split_items(items, seed=split_seed, val_size=args.val_size,
                          test_size=1).validation
        ids = tuple(sorted(i.id for i in val))
        acc = {k: sum(i in right[k] for i in ids) / len(ids) for k in right}
        if acc["code"] > acc["direct"] and acc["extract"] > acc["code"] and ids not in seen:
            seen.add(ids)
            states.append({"split_seed": split_seed, "item_seed": item_seed,
                           "validation": list(ids), "accuracy": acc})
            if len(states) == n:
                return states
    raise RuntimeError(f"only {len(states)} of {n} states with headroom in item seed "
                       f"{item_seed}'s pool: raise --pool")


STAGE_SECONDS: dict[str, float] = {}


@contextmanager
def timed(stage: str) -> Iterator[None]:
    """Adds the block's wall time to STAGE_SECONDS[stage] (states overlap: thread time)."""
    t0 = time.monotonic()
    try:
        yield
    finally:
        STAGE_SECONDS[stage] = round(STAGE_SECONDS.get(stage, 0.0) + time.monotonic() - t0, 2)


def run_states(name: str, root: Path, configs: Sequence[tuple[str, Any]],
               workers: int = 2, stop: Callable[[], bool] = lambda: False) -> dict[str, str]:
    """Run each state's one turn (seed, generate, self-check, validate, reward, log) through
    the stage functions the collect flow runs; finished work is skipped, and no state starts
    once `stop()` is true. Returns the states that failed or were not started, with the
    reason (rerun to resume)."""
    from w4s.tasks import stages

    def one(run_id: str, cfg: Any) -> None:
        if stop():
            raise TimeoutError("not started: the deadline was reached")
        with timed("prepare"):
            run_dir = stages.prepare_run(cfg, root, run_id)
        with timed("seed"):
            stages.seed(run_dir)
            stages.log_trajectory(run_dir, 0)
        with timed("generate"):
            indices = stages.generate(run_dir, 1)
        with timed("self_check"):
            for j in indices:
                stages.self_check(run_dir, 1, j)
        with timed("validate"):
            stages.execute(run_dir, 1)
        with timed("reward_log"):
            stages.reward(run_dir, 1)
            stages.log_trajectory(run_dir, 1)

    failed: dict[str, str] = {}
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(one, rid, cfg): rid for rid, cfg in configs}
        for done, fut in enumerate(futures, 1):
            rid = futures[fut]
            try:
                fut.result()
            except Exception as e:  # noqa: BLE001 - one state's loss is reported, not fatal
                failed[rid] = f"{type(e).__name__}: {str(e)[:300]}"
            say(f"{name}: {done}/{len(configs)} states, {time.monotonic() - t0:.0f}s"
                + (f" ({rid} failed: {failed[rid]})" if rid in failed else ""))
    return failed


def action_rows(root: Path, prefix: str = "") -> list[dict[str, Any]]:
    """Candidate rows (turn 1) of the runs under root whose id starts with prefix; `state`
    is the state id (the run id's last part), shared by every policy."""
    from w4s.storage.query import query

    files = sorted(str(p) for p in root.glob(f"{prefix}*/trajectories/*.parquet"))
    if not files:
        return []
    cols, rows = query(
        "SELECT run_id, status, code, val_accuracy AS accuracy, reward, prompt_json, reply "
        "FROM read_parquet(?, union_by_name = true) WHERE kind = 'action' ORDER BY run_id, "
        "candidate", [files])
    out = [dict(zip(cols, r, strict=True)) for r in rows]
    for r in out:
        r["state"] = r["run_id"].rsplit("-", 1)[1]
    return out


def prompt_hashes(rows: Sequence[dict[str, Any]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for r in rows:
        out.setdefault(r["state"], set()).add(hashlib.sha256(
            r["prompt_json"].encode()).hexdigest()[:16])
    return out


# ------------------------------------------------------------------------- fits


def build(runs_dir: Path, out: Path, runs: Sequence[str], sft: bool) -> dict[str, Any]:
    from w4s.stage_config import DatasetConfig
    from w4s.storage.dataset import build_dataset

    data = build_dataset(runs_dir, out, DatasetConfig(runs=tuple(runs), sft=sft))
    say(f"dataset {out.name}: {data.summary_line()}")
    return {"path": str(data.path), "rows": data.rows, "weights": data.card["weights"],
            "reward_histogram": data.card.get("reward_histogram")}


def fit(dataset: str, out: Path, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    from w4s.tasks.fit import fit_adapter

    if (out / "metrics.json").is_file() and (out / "adapter_config.json").is_file():
        say(f"fit {out.name}: kept from an earlier run")
        m = json.loads((out / "metrics.json").read_text())
    else:
        t0 = time.monotonic()
        last = [0.0]

        def progress(step: int, total: int, loss: float, tokens_per_s: float) -> None:
            if time.monotonic() - last[0] > 30 or step == total:
                last[0] = time.monotonic()
                say(f"fit {out.name}: step {step}/{total}, loss {loss:.4f}, "
                    f"{tokens_per_s:.0f} tok/s")

        m = fit_adapter(dataset, "embedded", out, epochs=args.epochs, max_steps=args.max_steps,
                        lr=args.lr, lora_r=args.lora_r, lora_alpha=2 * args.lora_r, seed=seed,
                        register=False, on_step=progress,
                        force=args.smoke).metrics  # a smoke run's rows may earn nothing
        say(f"fit {out.name}: {time.monotonic() - t0:.0f}s")
    curve = m.get("loss_curve") or []
    keep = ("samples", "tokens_total", "steps", "seconds", "tokens_per_s", "estimator",
            "max_grad_norm", "samples_dropped", "step_samples")
    return {**{k: m.get(k) for k in keep if k in m},
            "first_loss": curve[0]["loss"] if curve else None,
            "final_loss": curve[-1]["loss"] if curve else None}


# ------------------------------------------------------------------------- main


class Experiment:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.deadline = (time.time() + args.deadline_min * 60) if args.deadline_min else None
        self.out: dict[str, Any] = {
            "primary_metric": PRIMARY_TEXT,
            "settings": {k: v for k, v in vars(args).items() if k != "json"},
            "load_start": load(), "finished": [], "stopped": None,
        }
        self.margin_results: dict[str, Any] = {}

    def save(self) -> None:
        self.out["seconds"] = round(time.monotonic() - START, 1)
        self.out["state_stage_seconds"] = dict(STAGE_SECONDS)
        self.out["load_now"] = load()
        text = json.dumps(self.out, indent=1, default=sorted)
        (self.work / "results.json").write_text(text + "\n")
        if self.args.json:
            Path(self.args.json).write_text(text + "\n")

    def time_left(self, stage: str) -> bool:
        if self.deadline is not None and time.time() > self.deadline:
            if self.out["stopped"] is None:
                self.out["stopped"] = f"deadline reached before {stage}"
                say(f"deadline reached: {stage} and later stages not started")
            return False
        return True

    def done(self, stage: str, t0: float) -> None:
        self.out["finished"].append({"stage": stage, "seconds": round(time.monotonic() - t0, 1),
                                     "load": load()})
        self.save()

    # -- stages

    def headroom(self) -> None:
        from w4s.tasks import runtime

        t0 = time.monotonic()
        a = self.args
        cfg = make_config(a, self.work / "scratch", item_seed=0, split_seed=0, temperature=0.7,
                          candidates=1)
        seeds = runtime.benchmark(cfg).seed_workflows()
        head = score_pool(a, self.work, 0, {**seeds, "extract": EXTRACT}, a.headroom_items)
        self.out["headroom"] = {"items": a.headroom_items,
                                **{k: v["accuracy"] for k, v in head.items()}}
        say("headroom on " + f"{a.headroom_items} items: " +
            ", ".join(f"{k} {v:.2f}" for k, v in self.out["headroom"].items() if k != "items"))
        three = {"direct": seeds["direct"], "code": seeds["code"], "extract": EXTRACT}
        self.pools = {s: score_pool(a, self.work, s, three) for s in (0, 1)}
        self.out["pools"] = {s: {k: v["accuracy"] for k, v in p.items()}
                             for s, p in self.pools.items()}
        states_file = self.work / "states.json"
        if states_file.is_file():
            self.states = json.loads(states_file.read_text())
        else:
            self.states = {
                "collect": pick_states(a, self.pools[0], 0, a.states, 0),
                "collect2": pick_states(a, self.pools[0], 0, a.states, 50_000),
                "eval": pick_states(a, self.pools[1], 1, a.eval_states, 0),
            }
            states_file.write_text(json.dumps(self.states, indent=1))
        self.out["states"] = {k: {"n": len(v), "mean_accuracy": {
            w: round(sum(s["accuracy"][w] for s in v) / len(v), 4)
            for w in ("direct", "code", "extract")}} for k, v in self.states.items()}
        say("states (mean accuracy of direct / code / extract on their validation items): "
            + "; ".join(f"{k} {v['n']}: " + " / ".join(f"{x:.2f}" for x in v['mean_accuracy']
                                                          .values())
                        for k, v in self.out["states"].items()))
        self.done("headroom", t0)

    def collect(self, name: str, states_key: str, policy: dict[str, str | None]) -> None:
        """m candidates per state from `policy` (adapters split m between them)."""
        t0 = time.monotonic()
        if not policy:
            self.skip(f"collect {name}", "the policy has no fitted adapter", t0)
            return
        a = self.args
        temps = a.collect_temperatures
        configs = []
        share = a.candidates // len(policy)
        states = self.states[states_key][: a.states]  # a resume may ask for fewer
        for k, st in enumerate(states):
            for tag, adapter in policy.items():
                configs.append((f"{name}{tag}-{k:03d}", make_config(
                    a, self.work / "train", item_seed=0, split_seed=st["split_seed"],
                    temperature=temps[k % len(temps)], candidates=share, adapter=adapter)))
        failed = run_states(name, self.work / "train", configs,
                            stop=lambda: not self.time_left(f"the rest of collection {name}"))
        rows = action_rows(self.work / "train", name)
        m = measures(rows)
        aud = audit(rows, run_states_json(self.work / "train", rows))
        self.out.setdefault("collections", {})[name] = {
            "states": len(states), "failed": failed, **m,
            "reward_histogram": histogram(rows), "audit": aud}
        say(f"collection {name}: {len(rows)} candidates, positive share "
            f"{m['positive']['mean']}, rewards {histogram(rows)}; positive ones hard-coding "
            f"a shown gold: example {aud['hard_code_example']}, failure case "
            f"{aud['hard_code_failure_case']} of {aud['positive']}")
        self.done(f"collect {name}", t0)

    def fits(self, tag: str, runs_prefixes: Sequence[str], variants: Sequence[str],
             seeds: int | None = None) -> None:
        t0 = time.monotonic()
        root = self.work / "train"
        runs = sorted(p.name for p in root.iterdir() if p.is_dir()
                      and any(p.name.startswith(x) for x in runs_prefixes))
        self.out.setdefault("datasets", {})
        self.out.setdefault("fits", {})
        stage = f"fits {tag or 'round 1'}"
        if not any(r["status"] == "ok" for x in runs_prefixes for r in action_rows(root, x)):
            self.skip(stage, "no valid candidate was collected", t0)
            return
        paths = {}
        for variant in variants:
            ds = build(root, self.work / f"{variant}{tag}.parquet", runs, sft=variant == "sft")
            self.out["datasets"][f"{variant}{tag}"] = {k: v for k, v in ds.items() if k != "path"}
            paths[variant] = ds["path"]
        from w4s.errors import NothingToLearn

        for seed in range(seeds or self.args.fit_seeds):  # seed 0 of every variant first
            for variant in variants:
                if not self.time_left(f"fit {variant}{tag} seed {seed}"):
                    return
                name = f"{variant}{tag}-s{seed}"
                try:
                    self.out["fits"][name] = fit(paths[variant], self.work / "adapters" / name,
                                                 self.args, seed)
                except NothingToLearn as e:  # no positive row (a smoke run forces its fits)
                    self.skip(stage, str(e), t0)
                    return
                self.save()
        self.done(stage, t0)

    def skip(self, stage: str, why: str, t0: float) -> None:
        say(f"{stage} skipped: {why}")
        self.out.setdefault("skipped", {})[stage] = why
        self.done(f"{stage} (skipped)", t0)

    def adapters(self, variant: str) -> dict[str, str | None]:
        """The variant's complete adapters on disk, by seed tag ("-s0", ...): round 2 may
        have fitted another number of seeds than round 1."""
        found = (self.work / "adapters").glob(f"{variant}-s*/adapter_config.json")
        done = sorted((p.parent for p in found if p.parent.name[len(variant) + 2:].isdigit()),
                      key=lambda d: int(d.name[len(variant) + 2:]))
        return {d.name[len(variant):]: str(d) for d in done}

    def evaluate(self, policies: Sequence[str]) -> None:
        """Every policy on every evaluation state, state chunk by chunk."""
        t0 = time.monotonic()
        a = self.args
        states = self.states["eval"][: a.eval_states]
        for lo in range(0, len(states), a.chunk):
            for policy in policies:
                if not self.time_left(f"evaluation of {policy}, states {lo}+"):
                    self.summarise(policies)
                    return
                tags = {"": None} if policy == "base" else self.adapters(policy)
                if not tags:
                    continue
                share = a.candidates // len(tags)
                configs = [(f"eval-{policy}{tag}-{k:03d}", make_config(
                    a, self.work / "eval", item_seed=1, split_seed=st["split_seed"],
                    temperature=a.eval_temperature, candidates=share, adapter=adapter))
                    for k, st in enumerate(states[lo: lo + a.chunk], lo)
                    for tag, adapter in tags.items()]
                run_states(f"eval {policy} states {lo}-{lo + len(configs) // len(tags) - 1}",
                           self.work / "eval", configs,
                           stop=lambda: not self.time_left("the rest of the evaluation"))
            self.summarise(policies)
        self.done(f"evaluate {', '.join(policies)}", t0)

    def summarise(self, policies: Sequence[str]) -> None:
        rows = {p: action_rows(self.work / "eval", f"eval-{p}-") for p in policies}
        rows = {p: r for p, r in rows.items() if r}
        ev = self.out["evaluation"] = {p: measures(r) for p, r in rows.items()}
        for p, r in rows.items():
            ev[p]["audit"] = audit(r, run_states_json(self.work / "eval", r))
        for p, r in rows.items():
            seeds = sorted({x["run_id"].rsplit("-", 2)[1] for x in r}) if p != "base" else []
            if len(seeds) > 1:
                ev[p]["per_seed"] = {s: measures([x for x in r if f"-{s}-" in x["run_id"]])
                                     for s in seeds}
        hashes: dict[str, set[str]] = {}
        for r in rows.values():
            for k, v in prompt_hashes(r).items():
                hashes.setdefault(k, set()).update(v)
        self.out["eval_states_identical_across_policies"] = all(len(v) == 1
                                                                for v in hashes.values())
        self.out["paired"] = {f"{x} - {y}": paired(rows[x], rows[y]) for x, y in PAIRS
                              if x in rows and y in rows}
        self.save()

    def margins(self, policies: Sequence[str]) -> None:
        """Offline margin of every fitted policy on the base policy's evaluation candidates
        of the states that hold both positive and other candidates."""
        import gc

        from w4s.models.policy_eval import Candidate, compare_margins, load_policy, offline_margin

        t0 = time.monotonic()
        base_rows = [r for r in action_rows(self.work / "eval", "eval-base-")
                     if r["reward"] is not None and r["reply"]]
        kinds: dict[str, set[bool]] = {}
        for r in base_rows:
            kinds.setdefault(r["state"], set()).add(r["reward"] > 0)
        cands = [Candidate(json.loads(r["prompt_json"]), r["reply"], r["reward"] > 0,
                           r["state"]) for r in base_rows if len(kinds[r["state"]]) == 2]
        out = self.out.setdefault("offline_margin", {"policies": {}})
        out["candidates"] = len(cands)
        if not cands:
            say("offline margin: no evaluation state has both positive and other candidates")
            self.done("margins", t0)
            return
        results = self.margin_results  # a second call (round 2) measures only what is new
        paths: dict[str, str | None] = {"base": None}
        for p in policies:
            if p != "base":
                paths.update({f"{p}{tag}": path for tag, path in self.adapters(p).items()})
        for name, adapter in paths.items():
            if name in results:
                continue
            if not self.time_left(f"offline margin of {name}"):
                break
            model, tok = load_policy("embedded", adapter)
            results[name] = offline_margin(model, tok, cands)
            del model
            gc.collect()
            out["policies"][name] = {k: v for k, v in results[name].items()
                                     if k in ("states", "margin", "ci95")}
            if name != "base":
                out["policies"][name]["minus_base"] = compare_margins(results[name],
                                                                      results["base"])
            say(f"offline margin {name}: {out['policies'][name]}")
            self.save()
        self.done("margins", t0)


PAIRS = [("rwr", "base"), ("sft", "base"), ("rwr", "sft"), ("rwr2", "base"), ("rwr2", "rwr"),
         ("sft2", "base"), ("sft2", "sft"), ("rwr2", "sft2")]


def pooled(works: Sequence[Path]) -> dict[str, Any]:
    """Independent runs (their own collections and fits) on the same evaluation states, as
    one sample: each state holds every run's candidates of a policy, so the paired
    differences weigh the runs as replications."""
    seeds = {str(w): [st["split_seed"] for st in
                      json.loads((w / "states.json").read_text())["eval"]] for w in works}
    if len({tuple(v) for v in seeds.values()}) != 1:
        raise SystemExit(f"--pool-runs: the runs' evaluation states differ: {seeds}")
    rows: dict[str, list[dict[str, Any]]] = {}
    for w in works:
        for policy in ("base", "rwr", "sft", "rwr2", "sft2"):
            rows.setdefault(policy, []).extend(action_rows(w / "eval", f"eval-{policy}-"))
    rows = {p: r for p, r in rows.items() if r}
    return {"runs": [str(w) for w in works],
            "evaluation": {p: measures(r) for p, r in rows.items()},
            "paired": {f"{x} - {y}": paired(rows[x], rows[y]) for x, y in PAIRS
                       if x in rows and y in rows}}


def fmt(m: dict[str, Any] | None, key: str = "mean") -> str:
    if not m or m.get(key) is None:
        return "-"
    lo, hi = m["ci95"]
    return f"{m[key]:+.3f} [{lo:+.3f}, {hi:+.3f}]" if key == "diff" else \
        f"{m[key]:.3f} [{lo:.3f}, {hi:.3f}]"


def table(out: dict[str, Any]) -> str:
    """Markdown tables of the collections, the policies and the paired differences."""
    cols = (PRIMARY, *SECONDARY)
    head = ("| | candidates (lost) | reward (PRIMARY) | valid | valid and calls execute_code "
            "| val. accuracy | positive |\n|---|---|---|---|---|---|---|")
    lines = [head]
    for name, m in {**{f"collection {k}": v for k, v in out.get("collections", {}).items()},
                    **out.get("evaluation", {})}.items():
        lines.append(f"| {name} | {m['candidates']} ({m['lost']}) | "
                     + " | ".join(fmt(m.get(c)) for c in cols) + " |")
    if out.get("paired"):
        lines += ["", "| paired, on the same states | states | " + " | ".join(cols)
                  + " |", "|---|---|" + "---|" * len(cols)]
        for name, d in out["paired"].items():
            lines.append(f"| {name} | {d[PRIMARY].get('clusters', '-')} | "
                         + " | ".join(fmt(d[c], "diff") for c in cols) + " |")
    return "\n".join(lines)


def histogram(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    h: dict[str, int] = {}
    for r in rows:
        key = "lost" if r["reward"] is None else f"{r['reward']:g}"
        h[key] = h.get(key, 0) + 1
    return dict(sorted(h.items()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", help="working folder (default: a new temporary one); reuse it "
                   "to resume")
    p.add_argument("--json", help="write the figures to this file (after every stage)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: every stage runs once")
    p.add_argument("--states", type=int, default=20, help="collection states per round")
    p.add_argument("--eval-states", type=int, default=16, help="fresh evaluation states")
    p.add_argument("--candidates", type=int, default=8, help="m per state and policy")
    p.add_argument("--pool", type=int, default=20,
                   help="items per pool (item seed 0: headroom and collection; 1: evaluation)")
    p.add_argument("--headroom-items", type=int, default=20)
    p.add_argument("--val-size", type=int, default=5)
    p.add_argument("--item-timeout", type=float, default=600.0,
                   help="seconds per item and per executor call (a loaded 2-core machine "
                   "needs far more than the default 60)")
    p.add_argument("--concurrency", type=int, default=4, help="validation items at once")
    p.add_argument("--meta-tokens", type=int, default=256, help="meta-agent reply cap")
    p.add_argument("--max-repairs", type=int, default=0)
    p.add_argument("--collect-temperatures", type=float, nargs="+", default=[0.5, 0.7, 0.9])
    p.add_argument("--eval-temperature", type=float, default=0.7)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--fit-seeds", type=int, default=2)
    p.add_argument("--refit-seeds", type=int, default=None,
                   help="seeds of round 2's refits (default: --fit-seeds)")
    p.add_argument("--refit-sft", action=argparse.BooleanOptionalAction, default=True,
                   help="round 2 also refits SFT on both rounds' rows (RWR2's control)")
    p.add_argument("--chunk", type=int, default=4, help="evaluation states per chunk")
    p.add_argument("--rounds", type=int, choices=(1, 2), default=2)
    p.add_argument("--only", choices=("collect", "all"), default="all",
                   help="`collect`: stop after round 1's collection (no fit)")
    p.add_argument("--deadline-min", type=float, default=None,
                   help="start no stage after this many minutes; results so far are kept")
    p.add_argument("--table", metavar="JSON", help="only print the tables of a results file")
    p.add_argument("--pool-runs", metavar="WORK", nargs="+", help="only pool the evaluations of "
                   "finished runs' --work folders (same evaluation states) into one table")
    args = p.parse_args(argv)
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return 0
    if args.pool_runs:
        out = pooled([Path(w).resolve() for w in args.pool_runs])
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
        print(table(out))
        return 0
    if args.smoke:
        args.states, args.eval_states, args.candidates, args.pool = 2, 2, 2, 12
        args.headroom_items, args.fit_seeds, args.max_steps, args.chunk = 4, 1, 1, 2
        args.val_size = 3
    if args.candidates % 2:
        p.error(f"--candidates must be even (two adapters share a state), got {args.candidates}")

    work = Path(args.work or tempfile.mkdtemp(prefix="w4s-learning-signal-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ["W4S_HOME"] = str(work / "home")  # its own caches, registry and runs
    from w4s.flows.prefect_setup import set_environment_defaults

    set_environment_defaults()
    say(f"working folder {work}; load {load()}")
    say(f"PRIMARY metric: {PRIMARY_TEXT}")
    ex = Experiment(args, work)
    ex.save()
    ex.headroom()
    base = {"": None}
    steps: list[tuple[str, Callable[[], None]]] = [
        ("collect r1", lambda: ex.collect("r1", "collect", base)),
    ]
    refits = ["rwr", "sft"] if args.refit_sft else ["rwr"]  # SFT2: the control of RWR2
    round2 = [f"{v}2" for v in refits]
    if args.only == "all":
        # round 1 is whole (evaluation and margins) before round 2 starts
        steps += [("fits r1", lambda: ex.fits("", ["r1"], ["rwr", "sft"])),
                  ("evaluate", lambda: ex.evaluate(["base", "rwr", "sft"])),
                  ("margins", lambda: ex.margins(["rwr", "sft"]))]
        if args.rounds == 2:
            steps += [("collect r2", lambda: ex.collect("r2", "collect2", ex.adapters("rwr"))),
                      ("fits r2", lambda: ex.fits("2", ["r1", "r2"], refits,
                                                  args.refit_seeds)),
                      ("evaluate r2", lambda: ex.evaluate(["base", "rwr", "sft", *round2])),
                      ("margins r2", lambda: ex.margins(["rwr", "sft", *round2]))]
    for stage, run in steps:
        if not ex.time_left(stage):
            break
        run()
    ex.out["load_end"] = load()
    ex.save()
    print(json.dumps(ex.out, indent=1, default=sorted))
    print(table(ex.out))
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except BaseException:  # noqa: BLE001 - printed; llama.cpp's threads would keep us alive
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
