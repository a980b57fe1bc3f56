"""The stages of one optimization run as plain functions over a run folder.

Each stage reads its inputs from the run folder, does one step, writes its outputs back,
and returns ids or numbers. A stage whose outputs already exist returns them without
redoing the work, so a rerun of a failed run picks up where it stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from w4s.benchmarks import Item, Split, pick_example
from w4s.config import OptimizeConfig
from w4s.errors import BenchmarkError, BudgetExceeded, InfrastructureError, W4SError
from w4s.mdp import (
    Candidate,
    State,
    assign_rewards,
    failure_cases,
    now,
    sample_candidates,
    self_check_with_repairs,
)
from w4s.paths import location
from w4s.prompts import HistoryEntry, clip
from w4s.sandbox import EvalResult, check_workflow_source
from w4s.sandbox.harness import BUDGET_ERROR
from w4s.storage.run_store import RunStore
from w4s.tasks import runtime

log = logging.getLogger("w4s")

# Long stages report items as they finish through this hook, set by the orchestration layer
# (flows/progress.py: a Prefect progress artifact); unset, stages report nothing. Called as
# hook(stage, run_dir, total_items) -> on_item(code_index, outcome) or None.
OnItem = Callable[[int, Any], None]
progress_hook: ContextVar[Callable[[str, str, int], OnItem | None] | None] = ContextVar(
    "w4s_progress_hook", default=None)


def prepare_run(config: OptimizeConfig, runs_dir: Path, run_id: str | None = None,
                budget_group: list[str] | None = None) -> str:
    """Create (or reopen) the run folder and fix its validation/test split.

    `budget_group`: the ids of the runs (this one included) that share one budget.
    """
    _seeds(config)  # a wrong seed name fails here, before any stage runs
    fresh = run_id is None or not RunStore(location(runs_dir) / run_id).exists()
    # a new run draws its split before its folder exists: a benchmark whose data is missing
    # fails here and leaves no empty folder that `w4s runs` would list as interrupted
    split = _split(config) if fresh else None
    store = RunStore.create(runs_dir, config, run_id)
    if budget_group:
        store.save_budget_group(budget_group)
    try:
        store.split_ids()
    except FileNotFoundError:
        split = split or _split(config)
        store.save_split([i.id for i in split.validation], [i.id for i in split.test],
                         example=split.example.id)
    return str(store.root)


@dataclass(frozen=True)
class _RunSplit:
    validation: list[Item]
    test: list[Item]
    example: Item


def _split(config: OptimizeConfig) -> _RunSplit:
    """The run's validation/test split and the example its states show, drawn from neither
    (the example's gold in view must not be worth any validation accuracy). When validation
    and test take every item (`test_size: None` is "all the rest"), the example is drawn
    from the test items and leaves them, one fewer; with one test item that is an error."""
    bench = runtime.benchmark(config)
    split = bench.split(seed=config.split_seed, val_size=config.val_size,
                        test_size=config.test_size)
    items = bench.load()
    test = list(split.test)
    if len(items) > len(split.validation) + len(test) or len(test) < 2:
        example = pick_example(items, split, seed=config.split_seed)
    else:
        example = pick_example(test, Split(validation=[], test=[]), seed=config.split_seed)
        test = [i for i in test if i.id != example.id]
        if config.test_size is not None:
            log.warning("%s: validation (%d) and test (%d) take all %d items; the example "
                        "shown to the meta-agent is taken out of the test items",
                        bench.name, len(split.validation), len(split.test), len(items))
    return _RunSplit(list(split.validation), test, example)


def _example(store: RunStore, cfg: OptimizeConfig) -> Item:
    """The example item of the run's states. A run saved before the split held one gets
    one outside its saved validation and test items (saved, so a resume shows the same);
    if none is left, its first validation item as it was then, with a warning."""
    ids = store.split_ids()
    by_id = runtime.items_by_id(cfg)
    if ids.get("example") is not None:
        return by_id[ids["example"]]
    used = Split(validation=[by_id[i] for i in ids["validation"]],
                 test=[by_id[i] for i in ids["test"]])
    try:
        example = pick_example(list(by_id.values()), used, seed=cfg.split_seed)
    except BenchmarkError:
        log.warning("run %s: no item outside its saved validation and test split; its "
                    "example stays the first validation item", store.run_id)
        return used.validation[0]
    store.save_split(ids["validation"], ids["test"], example=example.id)
    return example


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
    """Run the candidates on the validation items concurrently and save each one.

    Only a complete, clean evaluation gives a candidate an accuracy. A candidate with items
    refused by the budget is `budget_exceeded`; one with items lost to the executor or the
    sandbox is `infra_error`: neither is scored, rewarded or trained on. A budget stop raises
    BudgetExceeded; more lost items than `max_infra_errors` raise InfrastructureError, so
    the stage's retry (or a resume) evaluates those candidates again.
    """
    if not cands:
        return
    items = _items(store, cfg, "validation")
    hook = progress_hook.get()
    on_item = hook("validation", str(store.root), len(cands) * len(items)) if hook else None
    with runtime.run_meter(store.root) as meter:
        results = runtime.harness(cfg).evaluate_many(
            [c.code for c in cands], items, runtime.benchmark(cfg), on_item=on_item,
            meter=meter)
    lost, first_loss = 0, ""
    for cand, result in zip(cands, results, strict=True):
        _record(cand, result, items, cfg.max_failures_shown)
        stopped = sum(1 for o in result.outcomes if o.error == BUDGET_ERROR)
        reasons = [o.infra_error for o in result.outcomes if o.infra_error]
        if stopped:
            cand.status, cand.accuracy = "budget_exceeded", None
            cand.error = f"{stopped} of {len(items)} items not run: budget exceeded"
        elif reasons:
            cand.status, cand.accuracy = "infra_error", None
            cand.error = f"{len(reasons)} of {len(items)} items lost: {reasons[0]}"
            lost += len(reasons)
            first_loss = first_loss or f"candidate {cand.id}: {cand.error}"
        else:
            cand.status, cand.error = "ok", None
        store.save_candidate(cand)
    _raise_if_budget_stopped(cands)
    if lost > cfg.max_infra_errors:
        raise InfrastructureError(
            f"{lost} validation item(s) lost to infrastructure, more than `max_infra_errors` "
            f"({cfg.max_infra_errors}) allows; {first_loss}"
        )


def _raise_if_budget_stopped(cands: Sequence[Candidate]) -> None:
    """A budget stop is final for the run, also when a stage runs again (retry, resume)."""
    if any(c.status == "budget_exceeded" for c in cands):
        raise BudgetExceeded("the run's executor budget is spent; results so far are saved")


def _to_evaluate(cands: Sequence[Candidate]) -> list[Candidate]:
    """Checked candidates not yet scored, and those whose items infrastructure lost."""
    return [c for c in cands if c.status in ("ok", "infra_error") and c.accuracy is None]


def _seeds(cfg: OptimizeConfig) -> dict[str, str]:
    """The seed workflows a run evaluates: the named one alone, or all of the benchmark's."""
    bench = runtime.benchmark(cfg)
    seeds = bench.seed_workflows()
    for name in cfg.seeds or ():
        if name not in seeds:
            raise W4SError(f"`seeds`: {name!r} is not a seed of {bench.name}; choose from: "
                           f"{', '.join(seeds)}")
    if cfg.seeds:
        seeds = {name: seeds[name] for name in cfg.seeds}
    if cfg.seed_workflow is not None and cfg.seed_workflow not in seeds:
        raise W4SError(
            f"`seed_workflow` {cfg.seed_workflow!r} is not among the seeds of {bench.name} "
            f"evaluated; choose from: {', '.join(seeds)}"
        )
    if cfg.seed_workflow is None or cfg.initial_state == "all_seeds":
        return seeds
    return {cfg.seed_workflow: seeds[cfg.seed_workflow]}


def initial_state(bench_description: str, example: Item, seeds: Sequence[Candidate],
                  start: Candidate, *, all_seeds: bool) -> State:
    """The state before iteration 1: `start` is the current workflow with its feedback; with
    `all_seeds` the other scored seeds come first with their accuracies, and the reward's
    reference (best so far) is the best of them all, as in the paper's initial state."""
    shown = [c for c in seeds if c is not start and c.accuracy is not None] if all_seeds else []
    history = tuple(HistoryEntry(0, c.accuracy or 0.0, c.code or "") for c in shown)
    history += (HistoryEntry(0, start.accuracy or 0.0, start.code or "",
                             tuple(failure_cases(start.failures))),)
    return State(task_description=bench_description, example_question=example.question,
                 example_answer=str(example.gold), history=history,
                 best_accuracy=max(h.accuracy for h in history))


def seed(run_dir: str) -> float:
    """Iteration 0: evaluate the seed workflow(s); the best one is the initial state."""
    store = RunStore(run_dir)
    cfg = store.config()
    if store.has_state(0):
        return store.load_state(0).last_accuracy
    bench = runtime.benchmark(cfg)
    saved = {c.index: c for c in store.candidates(0)}
    cands = []
    for j, (name, code) in enumerate(_seeds(cfg).items()):
        if j not in saved:  # also the seeds a killed earlier attempt did not get to save
            saved[j] = Candidate(run_id=store.run_id, iteration=0, index=j, kind="seed",
                                 prompt=[], reply=code, seed_name=name, code=code, status="ok")
            store.save_candidate(saved[j])
        cands.append(saved[j])
    _evaluate(store, cfg, _to_evaluate(cands))
    scored = [c for c in cands if c.accuracy is not None]
    if not scored:
        raise W4SError("no seed workflow finished a validation evaluation")
    start = max(scored, key=lambda c: (c.accuracy, -c.index))
    if cfg.seed_workflow is not None:
        start = next(c for c in cands if c.seed_name == cfg.seed_workflow)
        if start.accuracy is None:
            raise W4SError(f"the starting seed {cfg.seed_workflow!r} did not finish a "
                           "validation evaluation")
    start.chosen = True
    store.save_candidate(start)
    example = _example(store, cfg)
    state = initial_state(bench.description, example, cands, start,
                          all_seeds=cfg.initial_state == "all_seeds")
    store.save_state(0, state)
    return start.accuracy


def generate(run_dir: str, iteration: int) -> list[int]:
    """Sample m candidate actions for the state after `iteration - 1`.

    A rerun samples only the candidates missing, e.g. after a crash between two saves, so
    an iteration always goes on with all m.
    """
    store = RunStore(run_dir)
    cfg = store.config()
    have = {c.index for c in store.candidates(iteration)}
    missing = [j for j in range(cfg.candidates) if j not in have]
    if missing:
        cands = sample_candidates(
            runtime.meta_agent(cfg), store.load_state(iteration - 1), run_id=store.run_id,
            iteration=iteration, m=len(missing), temperature=cfg.meta_temperature,
            max_tokens=cfg.meta_agent.max_new_tokens,
        )
        for j, c in zip(missing, cands, strict=True):
            c.index = j
            store.save_candidate(c)
    return sorted(have.union(missing))


def self_check(run_dir: str, iteration: int, index: int) -> str:
    """Run the candidate on one validation sample; repair up to `max_repairs` times.

    The executor or sandbox failing is not the workflow's fault: it raises (BackendError,
    so the task's retry fires) and asks for no repair; the candidate stays pending. A
    budget stop marks the candidate `budget_exceeded` and raises BudgetExceeded.
    """
    store = RunStore(run_dir)
    cand = store.load_candidate(iteration, index)
    _raise_if_budget_stopped([cand])
    if cand.status != "pending":
        return cand.status
    cfg = store.config()
    sample = _items(store, cfg, "validation")[0]
    harness = runtime.harness(cfg)
    meta = runtime.meta_agent(cfg)

    def check(code: str) -> str | None:
        static = check_workflow_source(code)
        if static is not None:
            return static
        with runtime.run_meter(store.root) as meter:
            error = harness.self_check(code, sample, meter=meter)
        if error == BUDGET_ERROR:
            raise BudgetExceeded("the run's executor budget is spent")
        return error

    def repair(messages):
        return meta.complete(messages, n=1, temperature=cfg.meta_temperature,
                             max_tokens=cfg.meta_agent.max_new_tokens)

    try:
        cand = self_check_with_repairs(cand, check=check, repair=repair,
                                       max_repairs=cfg.max_repairs)
    except BudgetExceeded:
        cand.status, cand.error = "budget_exceeded", "self-check not run: budget exceeded"
        store.save_candidate(cand)
        raise
    store.save_candidate(cand)
    return cand.status


def execute(run_dir: str, iteration: int) -> list[float | None]:
    """Validation accuracy of every candidate that passed its self-check."""
    store = RunStore(run_dir)
    cfg = store.config()
    cands = store.candidates(iteration)
    _raise_if_budget_stopped(cands)
    _evaluate(store, cfg, _to_evaluate(cands))
    return [c.accuracy for c in store.candidates(iteration)]


def reward(run_dir: str, iteration: int) -> int | None:
    """Reward the candidates; the best one advances the state. Returns the chosen index."""
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


def best_candidate(cands: Sequence[Candidate]) -> Candidate | None:
    """The best by validation accuracy; ties go to the earliest (the simpler history)."""
    scored = [c for c in cands if c.status == "ok" and c.accuracy is not None]
    return max(scored, key=lambda c: (c.accuracy, -c.iteration, -c.index)) if scored else None


def evaluate_test(run_dir: str, iterations_done: int,
                  status: str = "completed") -> dict[str, Any]:
    """Evaluate the best workflow (by validation accuracy) once on the held-out test split.

    The test score is reported, so it must be whole: an item lost to infrastructure raises
    InfrastructureError (the task retries) rather than counting as wrong. A budget stop
    leaves the test split unevaluated rather than scored as failures.
    """
    store = RunStore(run_dir)
    cfg = store.config()
    cands = [c for i in range(iterations_done + 1) for c in store.candidates(i)]
    best = best_candidate(cands)
    if best is None and status != "budget exceeded":
        raise W4SError("no workflow of this run finished a validation evaluation")
    path = store.save_workflow("best", best.code or "") if best else None
    test_items = _items(store, cfg, "test")
    test = None
    with runtime.run_meter(store.root) as meter:
        if best is not None and not meter.exceeded:
            test = runtime.harness(cfg).evaluate(best.code or "", test_items,
                                                 runtime.benchmark(cfg), meter=meter)
    if test is not None and test.infra_errors and not test.budget_exceeded:
        reason = next(o.infra_error for o in test.outcomes if o.infra_error)
        raise InfrastructureError(
            f"{test.infra_errors} of {len(test_items)} test items lost to infrastructure: "
            f"{reason}"
        )
    if test is None or test.budget_exceeded:
        status = "budget exceeded"
    spend = runtime.run_spend(store.root)  # every call of the run, lost and stopped ones too
    summary = {
        "run_id": store.run_id,
        "run_dir": str(store.root),
        "status": status,
        "benchmark": runtime.benchmark(cfg).display_name,
        "iterations_done": iterations_done,
        "best_iteration": best.iteration if best else None,
        "best_candidate": best.index if best else None,
        "best_seed_name": best.seed_name if best else None,
        "best_val_accuracy": best.accuracy if best else None,
        "test_accuracy": None if status == "budget exceeded" else test.accuracy,
        "test_items": len(test_items),
        "best_workflow": str(path) if path else None,
        "executor_calls": spend.executor_calls,
        "executor_tokens": spend.tokens,
        "meta_agent_tokens": sum(c.meta_prompt_tokens + c.meta_completion_tokens for c in cands),
        "cost_usd": None if spend.cost_usd is None else round(spend.cost_usd, 6),
        "meta_agent": cfg.meta_agent.label,
        "executor": cfg.executor.label,
        "finished_at": now(),
    }
    store.save_summary(summary)
    return summary


def describe_result(summary: dict[str, Any]) -> str:
    """One line on a finished run's best workflow and its test score."""
    test = summary["test_accuracy"]
    tested = "not evaluated" if test is None else f"{test:.2f}"
    if summary["best_val_accuracy"] is None:
        best = "no workflow finished a validation evaluation"
    else:
        best = (f"best workflow (iteration {summary['best_iteration']}): validation "
                f"{summary['best_val_accuracy']:.2f}")
    return f"{best}, test {tested} on {summary['test_items']} items ({summary['status']})"
