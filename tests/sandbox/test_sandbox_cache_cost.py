"""Executor-call cache, cost accounting, budgets, and parallel == sequential."""

from __future__ import annotations

import subprocess
import sys

import pytest

from w4s.cost import Meter, PriceTable, Spend
from w4s.errors import BudgetExceeded, ConfigError
from w4s.sandbox import CallCache, Harness, MemoryCallCache, SandboxSettings, call_key
from w4s.storage.call_cache import SQLiteCallCache, default_cache_path, open_call_cache

SAMPLING = """
def solver(agent, task):
    a = agent.sample("vote " + task, n=3, temperature=0.9)
    b = agent.llm("vote " + task, temperature=0.9)
    c = agent.llm("ECHO: " + task)
    return {"answer": c if len(set(a + [b])) == 4 else "dup"}
"""


def test_call_key_is_content_addressed():
    base = dict(model="m", messages=[{"role": "user", "content": "x"}], temperature=0.0,
                max_tokens=None, json_mode=False)
    assert call_key(**base, sample_index=0) == call_key(**dict(base), sample_index=0)
    assert call_key(**base, sample_index=0) != call_key(**base, sample_index=1)
    assert call_key(**base, sample_index=0) != call_key(**{**base, "model": "n"}, sample_index=0)
    assert len(call_key(**base, sample_index=0)) == 64


@pytest.mark.parametrize("reuse", [True, False], ids=["recorded-outcomes", "replayed-calls"])
def test_rerun_makes_zero_executor_calls(fake, make_bench, tmp_path, reuse):
    bench = make_bench(5)
    cache = SQLiteCallCache(tmp_path / "c.sqlite")
    settings = SandboxSettings(reuse_outcomes=reuse)
    with Harness(fake, cache=cache, settings=settings) as h:
        first = h.evaluate(SAMPLING, bench.load(), bench)
    calls_after_first = fake.calls
    assert first.accuracy == 1.0, [o.error for o in first.outcomes]
    assert first.cache_hits == 0 and first.cache_misses == 5 * 5
    assert first.executor_calls == 5 * 3 == calls_after_first
    cache.close()
    again = SQLiteCallCache(tmp_path / "c.sqlite")  # persistent across processes/runs
    with Harness(fake, cache=again, settings=settings) as h:
        second = h.evaluate(SAMPLING, bench.load(), bench)
    assert fake.calls == calls_after_first, "a rerun must not call the executor"
    assert second.executor_calls == 0 and second.cache_misses == 0
    assert second.cache_hits == 25
    assert second.prompt_tokens == 0 and second.cost_usd == 0.0
    assert [o.answer for o in second.outcomes] == [o.answer for o in first.outcomes]
    assert second.accuracy == 1.0 and second.reused == (5 if reuse else 0)
    assert first.reused == 0


def test_the_backends_token_cap_is_part_of_the_key(fake_cls, make_bench):
    """Replies cut at 64 new tokens must not answer a rerun allowed 512."""
    bench = make_bench(2)
    cache = MemoryCallCache()
    results = []
    for cap in (64, 64, 512):
        executor = fake_cls()
        executor.max_new_tokens = cap
        with Harness(executor, cache=cache, settings=SandboxSettings(reuse_outcomes=False)) as h:
            results.append(h.evaluate(SAMPLING, bench.load(), bench))
    assert [r.cache_misses for r in results] == [10, 0, 10]


def test_partial_hits_fetch_only_missing_samples(fake, make_bench):
    bench = make_bench(1)
    cache = MemoryCallCache()
    code3 = "def solver(agent, task):\n    return {'answer': agent.sample('s', n=3)}\n"
    code5 = "def solver(agent, task):\n    return {'answer': agent.sample('s', n=5)}\n"
    with Harness(fake, cache=cache) as h:
        r3 = h.evaluate(code3, bench.load(), bench)
        samples_before = fake.samples
        r5 = h.evaluate(code5, bench.load(), bench)
    assert fake.samples - samples_before == 2
    assert r5.cache_hits == 3 and r5.cache_misses == 2
    assert bench.scored[1][:3] == bench.scored[0]  # the cached samples come back first
    assert r3.cache_misses == 3


def test_bypassed_cache_reads_nothing_but_records(tmp_path):
    path = tmp_path / "c.sqlite"
    c = SQLiteCallCache(path)
    c.put("k", {"text": "a"})
    bypass = open_call_cache(path, bypass=True)
    assert bypass.get("k") is None and bypass.misses == 1
    bypass.put("k2", {"text": "b"})
    assert c.get("k2") == {"text": "b"} and c.hits == 1
    assert isinstance(c, CallCache)


def test_default_cache_path_follows_w4s_home(tmp_path, monkeypatch):
    monkeypatch.setenv("W4S_HOME", str(tmp_path))
    assert default_cache_path() == tmp_path / "cache" / "executor.sqlite"


WRITER = """
import sys
from w4s.storage.call_cache import SQLiteCallCache
path, worker, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cache = SQLiteCallCache(path, busy_timeout_s=60)
for i in range(n):
    cache.put(f"shared-{i}", {"text": f"from-{worker}"})
    cache.put(f"own-{worker}-{i}", {"text": str(i)})
    assert cache.get(f"own-{worker}-{i}") == {"text": str(i)}
"""


def test_concurrent_writers_from_several_processes(tmp_path):
    path = str(tmp_path / "c.sqlite")
    SQLiteCallCache(path).close()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, path, str(w), "150"])
             for w in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    cache = SQLiteCallCache(path)
    assert len(cache) == 150 + 4 * 150
    firsts = {cache.get(f"shared-{i}")["text"] for i in range(150)}
    assert firsts <= {f"from-{w}" for w in range(4)}  # first writer wins, never a mix


def test_price_table_lookup_and_unknown_models():
    prices = PriceTable({"my-model": (1.0, 2.0)})
    assert prices.cost("my-model", 1_000_000, 500_000) == pytest.approx(2.0)
    assert prices.price("gpt-4o-mini-2024-07-18") == prices.price("gpt-4o-mini")
    assert prices.price("gpt-4o-2024-08-06") == (2.50, 10.00)  # longest prefix, not gpt-4o-mini
    assert prices.cost("mystery-llm", 10, 10) is None
    assert prices.cost("smollm2-135m-instruct", 10**6, 10**6) == 0.0
    with pytest.raises(ValueError, match="prices"):
        PriceTable({"bad": (-1.0, 0.0)})


def test_local_backends_are_priced_zero_explicitly():
    assert PriceTable.for_executor("transformers", "my-finetune").cost("my-finetune", 9, 9) == 0.0
    assert PriceTable.for_executor("openai", "my-finetune").cost("my-finetune", 9, 9) is None
    assert PriceTable.for_executor("embedded", "smollm2-135m-instruct-llamacpp").price(
        "smollm2-135m-instruct-llamacpp") == (0.0, 0.0)


def test_unknown_price_makes_cost_none(make_bench, fake_cls):
    bench = make_bench(2)
    code = "def solver(agent, task):\n    return {'answer': agent.llm('ECHO: ' + task)}\n"
    with Harness(fake_cls(model_id="mystery-llm")) as h:
        result = h.evaluate(code, bench.load(), bench)
    assert result.accuracy == 1.0
    assert result.cost_usd is None and all(o.cost_usd is None for o in result.outcomes)
    assert result.prompt_tokens > 0 and h.meter.cost_usd is None


def test_cost_is_priced_per_item_and_summed(make_bench, fake_cls):
    bench = make_bench(3)
    code = "def solver(agent, task):\n    return {'answer': agent.llm('ECHO: ' + task)}\n"
    prices = PriceTable({"priced": (1_000_000.0, 0.0)})  # $1 per prompt token
    with Harness(fake_cls(model_id="priced"), prices=prices) as h:
        result = h.evaluate(code, bench.load(), bench)
    assert result.cost_usd == pytest.approx(result.prompt_tokens)
    assert result.cost_usd == pytest.approx(sum(o.cost_usd for o in result.outcomes))
    assert h.meter.totals.cost_usd == pytest.approx(result.cost_usd)


def test_budget_stops_the_run_cleanly(make_bench, fake_cls):
    bench = make_bench(12)
    code = "def solver(agent, task):\n    return {'answer': agent.llm('ECHO: ' + task)}\n"
    settings = SandboxSettings(concurrency=1)
    with Harness(fake_cls(), settings=settings, budget_tokens=4) as h:
        result = h.evaluate(code, bench.load(), bench)
        assert result.budget_exceeded
        done = [o for o in result.outcomes if o.error is None]
        skipped = [o for o in result.outcomes if o.error == "budget exceeded"]
        assert len(done) >= 1 and len(skipped) >= 1
        assert len(done) + len(skipped) == 12
        assert all(o.score == 1.0 for o in done)  # results so far are kept
        assert h.evaluate(code, bench.load(), bench).budget_exceeded  # and stays stopped


def test_an_item_whose_call_the_budget_refused_is_not_scored_even_if_it_answers(
        make_bench, fake_cls):
    bench = make_bench(8)
    # the first call spends the budget, the second is refused: the workflow swallows that
    # and answers (correctly) anyway
    code = ("def solver(agent, task):\n    try:\n        agent.llm('ECHO: ' + task)\n"
            "        agent.llm('ECHO: again ' + task)\n    except Exception:\n        pass\n"
            "    return {'answer': task}\n")
    with Harness(fake_cls(), settings=SandboxSettings(concurrency=1), budget_tokens=4) as h:
        result = h.evaluate(code, bench.load(), bench)
    # the first item's second call was refused, every later item never started
    assert result.budget_exceeded
    assert [o.error for o in result.outcomes] == ["budget exceeded"] * 8
    assert all(o.score == 0.0 for o in result.outcomes)


def test_budget_usd_needs_a_known_price(fake_cls):
    with pytest.raises(ConfigError, match="budget_usd"):
        Harness(fake_cls(model_id="mystery-llm"), budget_usd=1.0)


def test_meter_budget():
    m = Meter(budget_tokens=10)
    m.add(Spend(executor_calls=1, prompt_tokens=6, completion_tokens=3, cost_usd=0.0))
    m.check()
    m.add(Spend(prompt_tokens=1))
    with pytest.raises(BudgetExceeded):
        m.check()
    unknown = Spend(cost_usd=None) + Spend(cost_usd=1.0)
    assert unknown.cost_usd is None


def test_parallel_results_equal_sequential(make_bench, fake_cls):
    bench = make_bench(12)
    results = []
    for concurrency in (1, 6):
        with Harness(fake_cls(), settings=SandboxSettings(concurrency=concurrency)) as h:
            results.append(h.evaluate(SAMPLING, bench.load(), bench))
    seq, par = results
    strip = [(o.item_id, o.answer, o.score, o.error, o.executor_calls, o.prompt_tokens)
             for o in seq.outcomes]
    assert strip == [(o.item_id, o.answer, o.score, o.error, o.executor_calls, o.prompt_tokens)
                     for o in par.outcomes]
    assert seq.accuracy == par.accuracy == 1.0


def test_evaluate_many_matches_separate_evaluations(make_bench, fake_cls):
    bench = make_bench(4)
    codes = [
        "def solver(agent, task):\n    return {'answer': agent.llm('ECHO: ' + task)}\n",
        "def solver(agent, task):\n    return {'answer': agent.llm('UPPER: ' + task)}\n",
        "def solver(agent, task)\n",
    ]
    with Harness(fake_cls(), settings=SandboxSettings(concurrency=4)) as h:
        together = h.evaluate_many(codes, bench.load(), bench)
        apart = [h.evaluate(c, bench.load(), bench) for c in codes]
    assert [r.accuracy for r in together] == [r.accuracy for r in apart] == [1.0, 0.0, 0.0]
    assert [[o.answer for o in r.outcomes] for r in together] == [
        [o.answer for o in r.outcomes] for r in apart]
    assert together[2].outcomes[0].error.startswith("SyntaxError")


def test_failures_property(make_bench, fake_cls):
    bench = make_bench(2)
    code = "def solver(agent, task):\n    return {'answer': 'q0' if task.endswith('0') else task}\n"
    with Harness(fake_cls()) as h:
        result = h.evaluate(code, bench.load(), bench)
    assert [o.item_id for o in result.failures] == ["q0"]


def test_random_is_seeded_per_item_so_reruns_agree(make_bench, fake_cls):
    bench = make_bench(4)
    code = ("import random\ndef solver(agent, task):\n"
            "    return {'answer': agent.llm('ECHO: ' + str(random.random()))}\n")
    with Harness(fake_cls(), settings=SandboxSettings(concurrency=4)) as h:
        first = [o.answer for o in h.evaluate(code, bench.load(), bench).outcomes]
        again = [o.answer for o in h.evaluate(code, bench.load(), bench).outcomes]
    assert first == again and len(set(first)) == 4  # same per item, different across items


# ------------------------------------------------------------------ recorded outcomes

ECHO = """
def solver(agent, task):
    return {"answer": agent.llm("ECHO: " + task)}
"""
AS_DICT = """
def solver(agent, task):
    return {"answer": {"text": agent.llm("ECHO: " + task), "n": [1, 2]}}
"""


def test_recorded_outcome_comes_back_raw_and_rescored(fake, make_bench):
    bench = make_bench(3)
    items = bench.load()
    gold = {it.id: it.gold for it in items}
    scored: list = []

    def score(item, answer):  # the raw answer: a dict whose text must equal the gold
        scored.append(answer)
        return 1.0 if isinstance(answer, dict) and answer.get("text") == gold[item.id] else 0.0

    bench.score = score
    with Harness(fake, cache=MemoryCallCache()) as h:
        first = h.evaluate(AS_DICT, items, bench)
        assert first.accuracy == 1.0 and first.reused == 0
        gold["q1"] = "changed"  # the scorer is asked again, so the new gold counts
        second = h.evaluate(AS_DICT, items, bench)
    assert second.reused == 3 and second.executor_calls == 0 and second.cache_hits == 3
    assert [o.score for o in second.outcomes] == [1.0, 0.0, 1.0]
    assert scored[-3] == {"text": "answer-0", "n": [1, 2]}, "the raw answer was not kept"
    assert [o.answer for o in second.outcomes] == [o.answer for o in first.outcomes]


def test_outcomes_are_not_reused_across_code_items_limits_or_models(fake, fake_cls, make_bench):
    bench = make_bench(2)
    items = bench.load()
    cache = MemoryCallCache()
    with Harness(fake, cache=cache) as h:
        h.evaluate(ECHO, items, bench)
        assert h.evaluate(ECHO + "# edited\n", items, bench).reused == 0
        asked = [type(it)(id=it.id, question=it.question + "!", gold=it.gold) for it in items]
        assert h.evaluate(ECHO, asked, bench).reused == 0
        assert h.evaluate(ECHO, items, bench).reused == 2
    with Harness(fake, cache=cache, settings=SandboxSettings(code_timeout_s=2.0)) as h:
        assert h.evaluate(ECHO, items, bench).reused == 0
    with Harness(fake_cls("other-model"), cache=cache) as h:
        assert h.evaluate(ECHO, items, bench).reused == 0
    with Harness(fake, cache=None) as h:  # no cache: nothing recorded, nothing reused
        assert h.evaluate(ECHO, items, bench).reused == 0


def test_workflow_errors_are_reused_but_failures_outside_it_are_retried(fake, make_bench):
    bench = make_bench(1)
    items = bench.load()
    raising = "def solver(agent, task):\n    raise ValueError('no idea')\n"
    failing = "def solver(agent, task):\n    return {'answer': agent.llm('FAIL now')}\n"
    slow = "import time\ndef solver(agent, task):\n    time.sleep(30)\n"
    settings = SandboxSettings(item_timeout_s=1.0)
    with Harness(fake, cache=MemoryCallCache(), settings=settings) as h:
        for code, reused, error in ((raising, 1, "ValueError: no idea"),
                                    (failing, 0, "BackendError"), (slow, 0, "timeout after 1s")):
            first = h.evaluate(code, items, bench)
            again = h.evaluate(code, items, bench)
            assert again.reused == reused, code
            for result in (first, again):
                assert error in result.outcomes[0].error, result.outcomes[0].error


def test_budget_stopped_items_are_not_recorded(fake, make_bench):
    bench = make_bench(4)
    cache = MemoryCallCache()
    with Harness(fake, cache=cache, budget_tokens=1,
                 settings=SandboxSettings(concurrency=1)) as h:
        stopped = h.evaluate(ECHO, bench.load(), bench)
    assert stopped.budget_exceeded and stopped.errors >= 3
    with Harness(fake, cache=cache, settings=SandboxSettings(concurrency=1)) as h:
        again = h.evaluate(ECHO, bench.load(), bench)
    assert again.accuracy == 1.0, [o.error for o in again.outcomes]
    assert again.reused <= 1 and again.reused == stopped.accuracy * 4


def test_a_callers_meter_counts_its_spend_and_its_budget(fake, make_bench):
    """Runs sharing one harness each bring a meter: their spend and budgets stay apart."""
    bench = make_bench(4)
    run_a, run_b = Meter(), Meter(budget_tokens=4)
    with Harness(fake, settings=SandboxSettings(concurrency=1)) as h:
        a = h.evaluate(ECHO, bench.load(), bench, meter=run_a)
        b = h.evaluate(ECHO + "# b\n", bench.load(), bench, meter=run_b)
        assert run_a.totals.tokens == a.prompt_tokens + a.completion_tokens > 0
        assert run_b.totals.tokens == b.prompt_tokens + b.completion_tokens > 0
        assert h.meter.totals.tokens == run_a.totals.tokens + run_b.totals.tokens
        assert h.self_check(ECHO, bench.load()[0], meter=run_b) == "budget exceeded"
        assert h.self_check(ECHO, bench.load()[0], meter=run_a) is None
        again = h.evaluate(ECHO, bench.load(), bench, meter=run_a)
    assert a.accuracy == 1.0 and not a.budget_exceeded
    assert b.budget_exceeded and any(o.error == "budget exceeded" for o in b.outcomes)
    assert not again.budget_exceeded and again.accuracy == 1.0  # run b's stop is b's alone
