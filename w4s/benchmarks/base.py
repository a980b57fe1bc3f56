"""The benchmark protocol: items, a task description, a scorer, seed workflows, splits."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from w4s.errors import BenchmarkError


@dataclass(frozen=True, slots=True)
class Item:
    """One benchmark question. `gold` is JSON-serializable; `metadata` holds e.g. tests."""

    id: str
    question: str
    gold: Any
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Split:
    validation: list[Item]
    test: list[Item]


class Benchmark(ABC):
    """A family of items with a scorer. Scores are in [0, 1]; accuracy is their mean."""

    name: str = ""
    kind: str = "math"  # "math" | "code" | "qa" | "choice"
    description: str = ""
    synthetic: bool = False  # labelled in every output when True

    @abstractmethod
    def load(self) -> list[Item]:
        """All items, in a stable order (splits shuffle them with a seed)."""

    @abstractmethod
    def score(self, item: Item, answer: Any) -> float:
        """Score one workflow answer against the item's gold, in [0, 1]."""

    @abstractmethod
    def seed_workflows(self) -> dict[str, str]:
        """Named starting workflows (source code defining `solver`)."""

    @property
    def display_name(self) -> str:
        return f"{self.name} (synthetic)" if self.synthetic else self.name

    def split(self, *, seed: int, val_size: int, test_size: int | None = None) -> Split:
        return split_items(self.load(), seed=seed, val_size=val_size, test_size=test_size)


def split_items(
    items: Sequence[Item], *, seed: int, val_size: int, test_size: int | None = None
) -> Split:
    """Seeded, disjoint validation/test split, fixed for a run (never redrawn per call)."""
    if val_size < 1:
        raise BenchmarkError(f"`val_size` must be at least 1, but received {val_size!r}")
    if val_size >= len(items):
        raise BenchmarkError(
            f"`val_size` {val_size} leaves no test items: the benchmark has {len(items)}"
        )
    order = list(items)
    random.Random(seed).shuffle(order)
    validation = order[:val_size]
    rest = order[val_size:]
    test = rest if test_size is None else rest[:test_size]
    return Split(validation=validation, test=test)


_REGISTRY: dict[str, Callable[..., Benchmark]] = {}


def register(name: str) -> Callable[[Callable[..., Benchmark]], Callable[..., Benchmark]]:
    def deco(factory: Callable[..., Benchmark]) -> Callable[..., Benchmark]:
        _REGISTRY[name] = factory
        return factory

    return deco


def benchmark_names() -> list[str]:
    return sorted(_REGISTRY)


def get_benchmark(name: str, **options: Any) -> Benchmark:
    """Build a benchmark by name; unknown names get one line listing the known ones."""
    if name not in _REGISTRY:
        raise BenchmarkError(
            f"unknown benchmark {name!r}; choose from: {', '.join(benchmark_names())}"
        )
    return _REGISTRY[name](**options)
