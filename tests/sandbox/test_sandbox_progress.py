"""`on_item` progress callbacks, and the self-check's contract (no benchmark, infra raises)."""

from __future__ import annotations

import logging
import pickle
import threading

import pytest

from w4s.errors import BackendError
from w4s.sandbox import Harness, SandboxSettings

ECHO = "def solver(agent, task):\n    return {'answer': agent.llm('ECHO: ' + task)}\n"
BROKEN = "def solver(agent, task)\n"


def test_on_item_is_called_once_per_finished_item(fake, make_bench):
    bench = make_bench(5)
    seen: list[tuple[int, str, float]] = []
    lock = threading.Lock()
    threads: set[str] = set()

    def on_item(ci, outcome):
        with lock:
            seen.append((ci, outcome.item_id, outcome.score))
            threads.add(threading.current_thread().name)

    with Harness(fake, settings=SandboxSettings(concurrency=3)) as h:
        results = h.evaluate_many([ECHO, BROKEN], bench.load(), bench, on_item=on_item)
        assert len(seen) == 10, "every item is reported before evaluate_many returns"
        one = h.evaluate(ECHO, bench.load(), bench, on_item)  # positional, as documented
    expected = {(ci, o.item_id, o.score) for ci, r in enumerate(results) for o in r.outcomes}
    assert set(seen[:10]) == expected and len(set(seen[:10])) == 10
    assert {ci for ci, _, _ in seen[:10]} == {0, 1}
    assert len(seen) == 15 and {ci for ci, _, _ in seen[10:]} == {0}
    assert one.accuracy == 1.0
    assert any(name.startswith("w4s-item") for name in threads)


def test_a_failing_on_item_is_logged_and_ignored(fake, make_bench, caplog):
    bench = make_bench(3)

    def on_item(ci, outcome):
        raise RuntimeError("progress bar broke")

    with caplog.at_level(logging.ERROR, logger="w4s.sandbox"), Harness(fake) as h:
        result = h.evaluate(ECHO, bench.load(), bench, on_item=on_item)
        assert h.evaluate_many([BROKEN], bench.load(), bench, on_item=on_item)[0].errors == 3
    assert result.accuracy == 1.0
    assert sum("on_item callback failed" in r.getMessage() for r in caplog.records) == 6


# ------------------------------------------------------------------ self-check


class Rejecting:
    """Wraps the fake executor; "REJECT" is refused as the request's own fault (a 400)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.model_id = inner.model_id

    def complete(self, messages, **kwargs):
        if messages[-1]["content"].startswith("REJECT"):
            raise BackendError("request rejected (400): prompt is too long",
                               model=self.model_id, infrastructure=False)
        return self.inner.complete(messages, **kwargs)


SWALLOWS = """
def solver(agent, task):
    try:
        agent.llm("{prompt}")
    except Exception:
        pass
    return {{"answer": "fine"}}
"""


def test_self_check_takes_no_benchmark(quick_harness, make_bench):
    item = make_bench(1).load()[0]
    assert quick_harness.self_check(ECHO, item) is None
    assert quick_harness.self_check("def solver(a, t):\n    return 1\n", item) == (
        "solver returned int, not dict")
    with pytest.raises(TypeError):
        quick_harness.self_check(ECHO, item, make_bench(1))  # it never scored


def test_self_check_lost_to_infrastructure_raises(fake, make_bench):
    item = make_bench(1).load()[0]
    with Harness(Rejecting(fake), settings=SandboxSettings(concurrency=1)) as h:
        # the executor is down ("FAIL" raises an infrastructure BackendError), even though
        # the workflow swallowed it: nothing was learnt about the workflow, retry later
        with pytest.raises(BackendError, match="lost to infrastructure") as info:
            h.self_check(SWALLOWS.format(prompt="FAIL"), item)
        assert info.value.infrastructure is True
        with pytest.raises(BackendError):
            h.self_check("def solver(agent, task):\n    return {'answer': agent.llm('FAIL')}\n",
                         item)
        # a request the executor rejects is the workflow's to repair: its error comes back
        err = h.self_check("def solver(agent, task):\n    return {'answer': agent.llm('REJECT')}\n",
                           item)
        assert err is not None and "prompt is too long" in err
        assert h.self_check(SWALLOWS.format(prompt="REJECT"), item) is None


def test_backend_error_keeps_its_attributes_when_pickled():
    e = BackendError("request rejected (400)", model="m", infrastructure=False)
    back = pickle.loads(pickle.dumps(e))
    assert (str(back), back.model, back.infrastructure) == (str(e), "m", False)
    assert BackendError("down").infrastructure is True  # unless a backend says otherwise
