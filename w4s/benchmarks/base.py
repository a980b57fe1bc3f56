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
    title: str = ""  # human-readable name, e.g. "GSM8K"; falls back to `name`
    kind: str = "math"  # "math" | "code" | "qa" | "choice"
    description: str = ""
    synthetic: bool = False  # labelled in every output when True
    default_val_size: int = 128  # the paper's validation size unless a family says otherwise

    @abstractmethod
    def load(self) -> list[Item]:
        """All items, in a stable order (splits shuffle them with a seed)."""

    @abstractmethod
    def score(self, item: Item, answer: Any) -> float:
        """Score one workflow answer against the item's gold, in [0, 1]."""

    @abstractmethod
    def seed_workflows(self) -> dict[str, str]:
        """Named starting workflows (source code defining `solver`)."""

    def score_many(self, items: Sequence[Item], answers: Sequence[Any]) -> list[float]:
        """Batch scoring; code benchmarks override it to run all programs in one sandbox call."""
        if len(items) != len(answers):
            raise ValueError(f"`answers` has {len(answers)} entries for {len(items)} items")
        return [self.score(item, answer) for item, answer in zip(items, answers, strict=True)]

    @property
    def display_name(self) -> str:
        label = self.title or self.name
        return f"{label} (synthetic)" if self.synthetic else label

    def split(
        self, *, seed: int, val_size: int | None = None, test_size: int | None = None
    ) -> Split:
        """`val_size=None` takes the family's `default_val_size` (capped to leave a test set)."""
        items = self.load()
        if val_size is None:
            val_size = min(self.default_val_size, max(1, len(items) // 2))
        return split_items(items, seed=seed, val_size=val_size, test_size=test_size)


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
    if test_size is not None and test_size < 1:
        raise BenchmarkError(f"`test_size` must be at least 1 or None, but received {test_size!r}")
    order = list(items)
    random.Random(seed).shuffle(order)
    validation = order[:val_size]
    rest = order[val_size:]
    test = rest if test_size is None else rest[:test_size]
    return Split(validation=validation, test=test)


def pick_example(items: Sequence[Item], split: Split, *, seed: int) -> Item:
    """The worked example shown to the meta-agent: an item outside validation and test,
    drawn with the split's seed, so no workflow gains accuracy by returning its gold."""
    used = {i.id for i in split.validation} | {i.id for i in split.test}
    pool = [i for i in items if i.id not in used]
    if not pool:
        raise BenchmarkError(
            f"no item is left for the example shown to the meta-agent: the benchmark has "
            f"{len(items)} items, validation takes {len(split.validation)} and test "
            f"{len(split.test)}; lower `val_size` or `test_size`")
    return random.Random(f"example-{seed}").choice(pool)


_REGISTRY: dict[str, Callable[..., Benchmark]] = {}
# `PREFIX + rest` names are built by a handler taking (rest, **options), e.g. "file:" + PATH.
# Modules register their own prefixes, so this protocol module imports none of them.
_PREFIXES: dict[str, Callable[..., Benchmark]] = {}


def register(name: str) -> Callable[[Callable[..., Benchmark]], Callable[..., Benchmark]]:
    def deco(factory: Callable[..., Benchmark]) -> Callable[..., Benchmark]:
        _REGISTRY[name] = factory
        return factory

    return deco


def register_prefix(
    prefix: str,
) -> Callable[[Callable[..., Benchmark]], Callable[..., Benchmark]]:
    """Route every name starting with `prefix` to `handler(name[len(prefix):], **options)`."""

    def deco(handler: Callable[..., Benchmark]) -> Callable[..., Benchmark]:
        _PREFIXES[prefix] = handler
        return handler

    return deco


def benchmark_names() -> list[str]:
    return sorted(_REGISTRY)


def benchmark_prefixes() -> list[str]:
    return sorted(_PREFIXES)


def get_benchmark(name: str, **options: Any) -> Benchmark:
    """Build a benchmark by name, or by a registered prefix (e.g. `file:PATH`); unknown names
    get one line."""
    for prefix, handler in _PREFIXES.items():
        if name.startswith(prefix):
            return handler(name[len(prefix) :], **options)
    if name not in _REGISTRY:
        prefixes = "".join(f", or {p}PATH" for p in benchmark_prefixes())
        raise BenchmarkError(
            f"unknown benchmark {name!r}; choose from: {', '.join(benchmark_names())}{prefixes}"
        )
    try:
        return _REGISTRY[name](**options)
    except TypeError as e:  # an option the family does not take
        raise BenchmarkError(f"`{name}`: {e}") from e


def get_benchmarks(names: Sequence[str], **options: Any) -> list[Benchmark]:
    """Several benchmarks for transfer evaluation; `options` go to each (use for shared ones)."""
    return [get_benchmark(name, **options) for name in names]
