"""The stages of one optimization run as plain functions over a run folder.

Each stage reads its inputs from the run folder, does one step, writes its outputs back,
and returns ids or numbers. A stage whose outputs already exist returns them without
redoing the work, so a rerun of a failed run picks up where it stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from storage.run_store import RunStore
from tasks import runtime
from w4s.benchmarks import Item
from w4s.config import OptimizeConfig
from w4s.errors import BudgetExceeded, W4SError
from w4s.mdp import (
    Candidate,
    State,
    assign_rewards,
    failure_cases,
    now,
    sample_candidates,
    self_check_with_repairs,
)
from w4s.prompts import clip
from w4s.sandbox import EvalResult, check_workflow_source

log = logging.getLogger("w4s")


def prepare_run(config: OptimizeConfig, runs_dir: Path, run_id: str | None = None) -> str:
    """Create (or reopen) the run folder and fix its validation/test split."""
    _seeds(config)  # a wrong seed name fails here, before any stage runs
    store = RunStore.create(runs_dir, config, run_id)
    try:
        store.split_ids()
    except FileNotFoundError:
        split = runtime.benchmark(config).split(
            seed=config.split_seed, val_size=config.val_size, test_size=config.test_size
        )
        store.save_split([i.id for i in split.validation], [i.id for i in split.test])
    return str(store.root)


def _items(store: RunStore, cfg: OptimizeConfig, which: str) -> list[Item]:
    by_id = runtime.items_by_id(cfg)
    return [by_id[i] for i in store.split_ids()[which]]


def _failures(result: EvalResult, items: Sequence[Item], k: int) -> list[dict[str, Any]]:
    questions = {it.id: it for it in items}
    out = []
    for o in result.failures[:k]:
        item = questions[o.item_id]
        out.append({
            "question": clip(item.question, 1500), "answer": o.answer,
            "expected": clip(str(item.gold), 600), "error": o.error,
        })
    return out


def _record(cand: Candidate, result: EvalResult, items: Sequence[Item], k: int) -> None:
    cand.accuracy = result.accuracy
    cand.failures = _failures(result, items, k)
    cand.executor_calls = result.executor_calls
    cand.executor_prompt_tokens = result.prompt_tokens
    cand.executor_completion_tokens = result.completion_tokens
    cand.cost_usd = result.cost_usd
    cand.cache_hits = result.cache_hits
    cand.finished_at = now()


def _evaluate(store: RunStore, cfg: OptimizeConfig, cands: list[Candidate]) -> None:
    """Run the candidates on the validation items concurrently; save each as it finishes."""
    if not cands:
        return
    items = _items(store, cfg, "validation")
    results = runtime.harness(cfg).evaluate_many([c.code for c in cands], items,
                                                 runtime.benchmark(cfg))
    for cand, result in zip(cands, results, strict=True):
        _record(cand, result, items, cfg.max_failures_shown)
        store.save_candidate(cand)
    if any(r.budget_exceeded for r in results):
        raise BudgetExceeded("the run's executor budget is spent; results so far are saved")


def _seeds(cfg: OptimizeConfig) -> dict[str, str]:
    """The seed workflow(s) a run starts from: the named one, or all of the benchmark's."""
    bench = runtime.benchmark(cfg)
    seeds = bench.seed_workflows()
    if cfg.seed_workflow is None:
        return seeds
    if cfg.seed_workflow not in seeds:
        raise W4SError(
            f"`seed_workflow` {cfg.seed_workflow!r} is not a seed of {bench.name}; "
            f"choose from: {', '.join(seeds)}"
        )
    return {cfg.seed_workflow: seeds[cfg.seed_workflow]}


def seed_state(run_dir: str) -> float:
    """Iteration 0: evaluate the seed workflow(s); the best one is the initial state."""
    store = RunStore(run_dir)
    cfg = store.config()
    if store.has_state(0):
        return store.load_state(0).last_accuracy
    bench = runtime.benchmark(cfg)
    seeds = _seeds(cfg)
    cands = store.candidates(0)
    if not cands:
        cands = []
        for j, (name, code) in enumerate(seeds.items()):
            c = Candidate(run_id=store.run_id, iteration=0, index=j, kind="seed", prompt=[],
                          reply=code, seed_name=name, code=code, status="ok")
            store.save_candidate(c)
            cands.append(c)
    _evaluate(store, cfg, [c for c in cands if c.accuracy is None])
    best = max(cands, key=lambda c: (c.accuracy or 0.0, -c.index))
    best.chosen = True
    store.save_candidate(best)
    val = _items(store, cfg, "validation")
    example = val[0]
    state = State(task_description=bench.description, example_question=example.question,
                  example_answer=str(example.gold))
    state = state.advance(0, best.accuracy or 0.0, best.code or "",
                          failure_cases(best.failures))
    store.save_state(0, state)
    return best.accuracy or 0.0


def generate(run_dir: str, iteration: int) -> list[int]:
    """Sample m candidate actions for the state after `iteration - 1`."""
    store = RunStore(run_dir)
    existing = store.candidates(iteration)
    if existing:
        return [c.index for c in existing]
    cfg = store.config()
    cands = sample_candidates(
        runtime.meta_agent(cfg), store.load_state(iteration - 1), run_id=store.run_id,
        iteration=iteration, m=cfg.candidates, temperature=cfg.meta_temperature,
        max_tokens=cfg.meta_agent.max_new_tokens,
    )
    for c in cands:
        store.save_candidate(c)
    return [c.index for c in cands]


def self_check(run_dir: str, iteration: int, index: int) -> str:
    """Run the candidate on one validation sample; repair up to `max_repairs` times."""
    store = RunStore(run_dir)
    cand = store.load_candidate(iteration, index)
    if cand.status != "pending":
        return cand.status
    cfg = store.config()
    bench = runtime.benchmark(cfg)
    sample = _items(store, cfg, "validation")[0]
    harness = runtime.harness(cfg)
    meta = runtime.meta_agent(cfg)

    def check(code: str) -> str | None:
        return check_workflow_source(code) or harness.self_check(code, sample, bench)

    def repair(messages):
        return meta.complete(messages, n=1, temperature=cfg.meta_temperature,
                             max_tokens=cfg.meta_agent.max_new_tokens)

    cand = self_check_with_repairs(cand, check=check, repair=repair,
                                   max_repairs=cfg.max_repairs)
    store.save_candidate(cand)
    return cand.status


def execute(run_dir: str, iteration: int) -> list[float | None]:
    """Validation accuracy of every candidate that passed its self-check."""
    store = RunStore(run_dir)
    cfg = store.config()
    cands = store.candidates(iteration)
    _evaluate(store, cfg, [c for c in cands if c.status == "ok" and c.accuracy is None])
    return [c.accuracy for c in store.candidates(iteration)]


def reward(run_dir: str, iteration: int) -> int | None:
    """Reward all candidates; the best one advances the state. Returns the chosen index."""
    store = RunStore(run_dir)
    prev = store.load_state(iteration - 1)
    cands = store.candidates(iteration)
    if store.has_state(iteration):
        return next((c.index for c in cands if c.chosen), None)
    chosen = assign_rewards(cands, prev)
    for c in cands:
        store.save_candidate(c)
    state = prev if chosen is None else prev.advance(
        iteration, chosen.accuracy or 0.0, chosen.code or "", failure_cases(chosen.failures)
    )
    store.save_state(iteration, state)
    return None if chosen is None else chosen.index


def log_trajectory(run_dir: str, iteration: int) -> str:
    """Append the iteration's candidates, with their full state, as one Parquet file."""
    store = RunStore(run_dir)
    path = store.trajectory_path(iteration)
    if path.is_file():
        return str(path)
    cfg = store.config()
    return str(store.write_trajectory(
        iteration, store.candidates(iteration), benchmark=runtime.benchmark(cfg).display_name,
        meta_model=cfg.meta_agent.label, executor_model=cfg.executor.label,
    ))


def best_candidate(cands: Sequence[Candidate]) -> Candidate:
    """The best by validation accuracy; ties go to the earliest (the simpler history)."""
    scored = [c for c in cands if c.status == "ok" and c.accuracy is not None]
    if not scored:
        raise W4SError("no workflow of this run finished a validation evaluation")
    return max(scored, key=lambda c: (c.accuracy, -c.iteration, -c.index))


def finalize(run_dir: str, iterations_done: int, status: str = "completed") -> dict[str, Any]:
    """Evaluate the best workflow (by validation accuracy) once on the held-out test split."""
    store = RunStore(run_dir)
    cfg = store.config()
    cands = [c for i in range(iterations_done + 1) for c in store.candidates(i)]
    best = best_candidate(cands)
    path = store.save_workflow("best", best.code or "")
    test_items = _items(store, cfg, "test")
    harness = runtime.harness(cfg)
    test = None
    if not harness.meter.exceeded:
        test = harness.evaluate(best.code or "", test_items, runtime.benchmark(cfg))
    if test is None or test.budget_exceeded:
        status = "budget exceeded"
    summary = {
        "run_id": store.run_id,
        "status": status,
        "benchmark": runtime.benchmark(cfg).display_name,
        "iterations_done": iterations_done,
        "best_iteration": best.iteration,
        "best_candidate": best.index,
        "best_seed_name": best.seed_name,
        "best_val_accuracy": best.accuracy,
        # a budget stop leaves the test split unevaluated rather than scored as failures
        "test_accuracy": None if status == "budget exceeded" or test is None else test.accuracy,
        "test_items": len(test_items),
        "best_workflow": str(path),
        "executor_calls": sum(c.executor_calls for c in cands)
        + (test.executor_calls if test else 0),
        "executor_tokens": sum(c.executor_prompt_tokens + c.executor_completion_tokens
                               for c in cands)
        + (test.prompt_tokens + test.completion_tokens if test else 0),
        "meta_agent_tokens": sum(c.meta_prompt_tokens + c.meta_completion_tokens for c in cands),
        "cost_usd": _sum_cost([c.cost_usd for c in cands if c.accuracy is not None]
                              + ([test.cost_usd] if test else [])),
        "meta_agent": cfg.meta_agent.label,
        "executor": cfg.executor.label,
        "finished_at": now(),
    }
    store.save_summary(summary)
    return summary


def _sum_cost(costs: list[float | None]) -> float | None:
    """Unknown (None) if any part is unknown: never a silent 0."""
    return None if any(c is None for c in costs) else round(sum(costs), 6)
