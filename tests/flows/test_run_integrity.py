"""What a run writes must be true: budget stops, executor outages and crashes between saves
never turn into scored, rewarded or missing candidates (issue 8, items 4-6 and 10)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pyarrow.parquet as pq
import pytest
from configs import run_config
from fake_openai import FakeOpenAIEndpoint, chat_completion
from replies import GOOD

from w4s.flows.optimize import optimize
from w4s.models.factory import build_chat_model, clear_model_cache
from w4s.storage.query import iteration_table
from w4s.storage.run_store import RunStore
from w4s.tasks import execute as execute_tasks
from w4s.tasks import self_check as self_check_tasks
from w4s.tasks import stages

# Asks the executor, swallows its failure, then computes the answer itself: an outage must
# still not pass for a clean, scored run.
ASKS_THEN_COMPUTES = '''Ask, then check with code.
```python
def solver(agent, task: str) -> dict:
    try:
        agent.llm(task)
    except Exception:
        pass
    expr = task.split("What is ")[1].rstrip("?")
    return {"answer": agent.execute_code("print(" + expr + ")")}
```'''


@pytest.fixture
def no_retry_delay(monkeypatch):
    for task in (execute_tasks.execute, execute_tasks.seed, execute_tasks.evaluate_test,
                 self_check_tasks.self_check):
        monkeypatch.setattr(task, "retry_delay_seconds", 0)


def _config(tmp_path, meta_replies, **extra):
    return run_config(tmp_path, meta_replies, "I am not sure, maybe 7.", **{
        "iterations": 2, "candidates": 3, "val_size": 6, "test_size": 8, "max_repairs": 1,
        **extra})


def _rows(store: RunStore, iteration: int) -> list[dict]:
    return pq.read_table(store.trajectory_path(iteration)).to_pylist()


# ------------------------------------------------------------------ budget


def test_budget_stop_inside_execute_ends_the_run_and_no_row_is_rewarded(tmp_path):
    # scripted tokens are words: the seed's 6 items cost about 90, iteration 1's self-checks
    # about 45; iteration 1's execute crosses 160 and must stop the run there
    cfg = _config(tmp_path, [ASKS_THEN_COMPUTES], budget_tokens=160, use_cache=False)
    meta = build_chat_model(cfg.meta_agent, role="meta_agent")
    summary = optimize(cfg, run_id="budget")
    store = RunStore(tmp_path / "runs" / "budget")
    assert summary["status"] == "budget exceeded" and summary["test_accuracy"] is None
    assert len(meta.calls) == 1  # iteration 2 never asked the meta-agent (retry swallowed it)
    rows = _rows(store, 1)
    stopped = [r for r in rows if r["status"] == "budget_exceeded"]
    assert stopped and all(r["reward"] is None and r["val_accuracy"] is None for r in stopped)
    assert not store.has_state(1) and not store.trajectory_path(2).exists()
    cols, table = iteration_table(store.root)  # what `w4s show` and the UI artifact print
    assert dict(zip(cols, table[1], strict=True))["stopped"] == len(stopped)
    # spend is kept with the run: a resume makes no new executor call and stops again
    spent = store.spend()
    assert spent.tokens >= 160
    clear_model_cache()
    again = optimize(cfg, run_id="budget")
    assert again["status"] == "budget exceeded" and store.spend() == spent


def test_benchmarks_of_one_run_share_its_budget(tmp_path):
    for name in ("a", "b"):
        rows = [{"q": f"What is {i}+{i + 1}?", "a": 2 * i + 1} for i in range(12)]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = _config(
        tmp_path, [ASKS_THEN_COMPUTES], benchmark=[f"file:{tmp_path / n}.jsonl" for n in "ab"],
        benchmark_options={"question_field": "q", "answer_field": "a", "scorer": "numeric"},
        seed_workflow="cot", iterations=1, use_cache=False, budget_tokens=500,
    )
    out = optimize(cfg, run_id="group")
    first, second = out["runs"]
    stores = [RunStore(tmp_path / "runs" / s["run_id"]) for s in (first, second)]
    assert [s.run_id for s in stores] == ["group-file_a", "group-file_b"]
    assert first["status"] == "completed" and second["status"] == "budget exceeded"
    total = sum(s.spend().tokens for s in stores)
    # alone each benchmark spends 369 tokens (33 calls): the second stops soon after 500,
    # with at most the calls already in flight (4 items at once, about 12 tokens a call)
    assert 500 <= total < 500 + 4 * 15


# ------------------------------------------------------------------ executor outage


class _Executor(FakeOpenAIEndpoint):
    """An OpenAI-compatible endpoint that answers `up_for` requests, then 503s until revived."""

    def __init__(self, up_for: int) -> None:
        self.up_for, self.served, self.lock = up_for, 0, threading.Lock()
        self.fail_next = 0  # 503 the next requests, then serve again
        super().__init__(self._answer)

    def _answer(self, body: dict) -> tuple[int, dict]:
        with self.lock:
            up = self.served < self.up_for and self.fail_next <= 0
            self.fail_next -= 1
            self.served += up
        if up:
            return 200, chat_completion(body, ["7"], usage={"prompt_tokens": 3,
                                                            "completion_tokens": 1})
        return 503, {"error": {"message": "overloaded"}}


@pytest.fixture
def endpoint() -> Iterator[_Executor]:
    server = _Executor(up_for=0)
    yield server
    server.stop()


def test_outage_mid_execute_fails_the_stage_and_a_resume_scores_it(
        tmp_path, endpoint, no_retry_delay):
    cfg = _config(tmp_path, [ASKS_THEN_COMPUTES], iterations=1, use_cache=False, executor={
        "kind": "openai", "model": "gpt-4o-mini", "base_url": endpoint.url,
        "api_key_env": None, "max_retries": 0, "timeout_s": 5})
    endpoint.up_for = 6 + 3  # the seed's 6 items and the 3 self-checks, then down
    state = optimize(cfg, run_id="outage", return_state=True)
    assert state.is_failed()
    assert "lost to infrastructure" in state.message or "lost to infrastructure" in str(
        state.result(raise_on_failure=False))
    store = RunStore(tmp_path / "runs" / "outage")
    cands = store.candidates(1)
    assert [c.status for c in cands] == ["infra_error"] * 3
    assert all(c.accuracy is None and c.reward is None for c in cands)
    assert "HTTP 503" in cands[0].error
    assert not store.has_state(1)  # nothing rewarded, nothing advanced

    endpoint.up_for = 10**6  # back up: the resume evaluates the lost candidates again
    clear_model_cache()
    summary = optimize(cfg, run_id="outage")
    assert summary["status"] == "completed"
    rows = _rows(store, 1)
    assert [r["status"] for r in rows] == ["ok"] * 3
    assert all(r["val_accuracy"] == 1.0 and r["reward"] == 1.0 for r in rows)


def test_executor_retry_warnings_reach_the_runs_prefect_logs(tmp_path, endpoint):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    cfg = _config(tmp_path, [GOOD], iterations=1, candidates=1, use_cache=False, executor={
        "kind": "openai", "model": "gpt-4o-mini", "base_url": endpoint.url,
        "api_key_env": None, "max_retries": 2, "timeout_s": 5})
    endpoint.up_for, endpoint.fail_next = 10**6, 1  # one 503, retried by the backend
    state = optimize(cfg, run_id="logs", return_state=True)
    assert state.is_completed()
    APILogWorker.drain_all()
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    retries = [lg for lg in logs if "HTTP 503" in lg.message and "retry 1/2" in lg.message]
    assert retries and retries[0].name.startswith("w4s.models.")
    # logged from a harness thread serving the seed's executor call, inside the seed task
    assert retries[0].task_run_id is not None


def test_executor_down_from_the_start_fails_the_run_with_the_reason(tmp_path, no_retry_delay):
    cfg = _config(tmp_path, [GOOD], iterations=1, executor={
        "kind": "openai", "model": "gpt-4o-mini", "base_url": "http://127.0.0.1:9/v1",
        "api_key_env": None, "max_retries": 0, "timeout_s": 2})
    state = optimize(cfg, run_id="down", return_state=True)
    assert state.is_failed()
    seed = RunStore(tmp_path / "runs" / "down").load_candidate(0, 0)
    assert seed.status == "infra_error" and seed.accuracy is None
    assert "127.0.0.1:9" in seed.error and not seed.failures


# ------------------------------------------------------------------ crash between saves


def test_generate_resumed_after_a_crash_between_saves_samples_the_missing(tmp_path,
                                                                         monkeypatch):
    cfg = _config(tmp_path, [GOOD, GOOD, GOOD, GOOD])
    run_dir = stages.prepare_run(cfg, tmp_path / "runs", "crash")
    stages.seed(run_dir)
    real_save, saved = RunStore.save_candidate, []

    def dying_save(self, cand):
        if cand.iteration == 1 and len(saved) == 1:
            raise KeyboardInterrupt  # the process dies after the first candidate's save
        saved.append(cand.index)
        return real_save(self, cand)

    monkeypatch.setattr(RunStore, "save_candidate", dying_save)
    with pytest.raises(KeyboardInterrupt):
        stages.generate(run_dir, 1)
    monkeypatch.setattr(RunStore, "save_candidate", real_save)
    assert [c.index for c in RunStore(run_dir).candidates(1)] == [0]
    assert stages.generate(run_dir, 1) == [0, 1, 2]
    assert [c.index for c in RunStore(run_dir).candidates(1)] == [0, 1, 2]


def test_seed_resumed_after_a_crash_between_saves_evaluates_every_seed(tmp_path, monkeypatch):
    cfg = _config(tmp_path, [GOOD], seed_workflow=None)
    run_dir = stages.prepare_run(cfg, tmp_path / "runs", "crash-seed")
    real_save = RunStore.save_candidate

    def dying_save(self, cand):
        if cand.index == 1:
            raise KeyboardInterrupt
        return real_save(self, cand)

    monkeypatch.setattr(RunStore, "save_candidate", dying_save)
    with pytest.raises(KeyboardInterrupt):
        stages.seed(run_dir)
    monkeypatch.setattr(RunStore, "save_candidate", real_save)
    stages.seed(run_dir)
    seeds = RunStore(run_dir).candidates(0)
    assert len(seeds) == 4 and all(c.accuracy is not None for c in seeds)


# ------------------------------------------------------------------ runs side by side


def test_two_runs_at_once_in_one_process_keep_their_own_spend(tmp_path):
    results: dict[str, dict] = {}
    # no cache: each run pays for its own calls
    tight = _config(tmp_path, [GOOD], iterations=1, budget_tokens=40, use_cache=False)
    loose = _config(tmp_path, [GOOD], iterations=1, budget_tokens=10_000, use_cache=False)

    def run(name, cfg):
        results[name] = optimize(cfg, run_id=name)

    threads = [threading.Thread(target=run, args=(n, c))
               for n, c in (("tight", tight), ("loose", loose))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert results["tight"]["status"] == "budget exceeded"
    # the other run neither shared the tight budget nor lost its harness when that one ended
    assert results["loose"]["status"] == "completed"
    assert results["loose"]["test_accuracy"] == 1.0
    loose_spend = RunStore(tmp_path / "runs" / "loose").spend().tokens
    tight_spend = RunStore(tmp_path / "runs" / "tight").spend().tokens
    assert loose_spend > 40 and tight_spend < loose_spend
