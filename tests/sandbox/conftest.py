"""A deterministic fake executor, a tiny exact-match benchmark, and harness fixtures."""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

import pytest

from w4s.benchmarks.base import Benchmark, Item
from w4s.protocols import Completion
from w4s.sandbox import Harness, MemoryCallCache, SandboxSettings


class FakeExecutor:
    """Replies are a pure function of (messages, temperature, sample position).

    "ECHO: x" -> "x"; "UPPER: x" -> "X"; "HANG" sleeps `hang_s`; "FAIL" raises BackendError;
    "JSON" replies with prose around a JSON object. Anything else: a short digest, so
    temperature > 0 samples differ by position and the cache can be checked exactly.
    """

    def __init__(self, model_id: str = "fake", *, latency_s: float = 0.0,
                 hang_s: float = 30.0) -> None:
        self.model_id = model_id
        self.latency_s = latency_s
        self.hang_s = hang_s
        self.calls = 0
        self.samples = 0
        self._lock = threading.Lock()

    def complete(self, messages, *, n=1, temperature=0.0, max_tokens=512, json_mode=False,
                 seed=None) -> Completion:
        from w4s.errors import BackendError

        with self._lock:
            self.calls += 1
            base = self.samples
            self.samples += n
        if self.latency_s:
            time.sleep(self.latency_s)
        text = messages[-1]["content"]
        if text.startswith("HANG"):
            time.sleep(self.hang_s)
        if text.startswith("FAIL"):
            raise BackendError("endpoint down", model=self.model_id)
        replies = []
        for i in range(n):
            if text.startswith("ECHO: "):
                replies.append(text[6:])
            elif text.startswith("UPPER: "):
                replies.append(text[7:].upper())
            elif text.startswith("JSON"):
                replies.append('Sure! Here it is: {"thought": "easy", "answer": "42"} Done.')
            else:
                salt = f"{base + i}" if temperature > 0 else ""
                digest = hashlib.sha256((repr(messages) + salt).encode()).hexdigest()[:8]
                replies.append(f"reply-{digest}")
        words = sum(len(m["content"].split()) for m in messages)
        return Completion(texts=tuple(replies), prompt_tokens=words,
                          completion_tokens=2 * n, model=self.model_id)


class ExactBench(Benchmark):
    """Score 1 when str(answer) equals the gold string."""

    name = "exact"

    def __init__(self, items: list[Item]) -> None:
        self._items = items
        self.scored: list[Any] = []

    def load(self) -> list[Item]:
        return list(self._items)

    def score(self, item: Item, answer: Any) -> float:
        self.scored.append(answer)
        return 1.0 if str(answer) == str(item.gold) else 0.0

    def seed_workflows(self) -> dict[str, str]:
        return {"echo": ECHO_WORKFLOW}


ECHO_WORKFLOW = '''
def solver(agent, task):
    return {"answer": agent.llm("ECHO: " + task)}
'''


def make_items(n: int) -> list[Item]:
    return [Item(id=f"q{i}", question=f"answer-{i}", gold=f"answer-{i}") for i in range(n)]




@pytest.fixture
def fake() -> FakeExecutor:
    return FakeExecutor()


@pytest.fixture
def bench() -> ExactBench:
    return ExactBench(make_items(6))


@pytest.fixture(scope="module")
def hostile_harness():
    """Short timeouts; shared by a module so workers stay warm between tests."""
    settings = SandboxSettings(item_timeout_s=5.0, code_timeout_s=1.0, concurrency=2,
                               memory_mb=1024)
    h = Harness(FakeExecutor(hang_s=60.0), settings=settings, cache=MemoryCallCache())
    yield h
    h.close()


@pytest.fixture
def make_bench():
    """make_bench(n) -> an ExactBench over n items whose gold answers equal the questions."""
    return lambda n: ExactBench(make_items(n))


@pytest.fixture(scope="module")
def quick_harness():
    """A 4-second item timeout (room for a 1-second nested code timeout under load)."""
    settings = SandboxSettings(item_timeout_s=4.0, code_timeout_s=1.0, concurrency=2)
    h = Harness(FakeExecutor(), settings=settings, cache=MemoryCallCache())
    yield h
    h.close()


@pytest.fixture
def fake_cls() -> type[FakeExecutor]:
    """The fake executor class, for tests that need one with another model id."""
    return FakeExecutor
