"""Code benchmarks: pass@1 by running the official tests on the answer in the sandbox.

The answer and the tests never share a process (`w4s.sandbox.run_tests`): the answer runs
alone, jailed; the tests run in a process the answer's code never ran in, calling it across
a socket and comparing values rebuilt there as plain data. A pass means the official
asserts ran to their end on values the answer computed; nothing the answer does (an
always-equal object, an early exit, a trace function, reading the test program, a trailing
decorator) can change the tests' text, their parse or their verdict.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from w4s.benchmarks.base import Item, Split
from w4s.benchmarks.loading import DatasetBenchmark, Row, read_rows
from w4s.benchmarks.seeds import CODE_SEEDS
from w4s.errors import BenchmarkError

if TYPE_CHECKING:
    from w4s.sandbox.programs import CodeTest

_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def defines(code: str, function: str) -> bool:
    return re.search(rf"^\s*def\s+{re.escape(function)}\s*\(", code, re.MULTILINE) is not None


def extract_code(answer: Any, entry_point: str = "") -> str:
    """The code in an answer: the fenced block defining `entry_point`, else the longest block,
    else the whole text (an unfenced answer is taken as code)."""
    text = "" if answer is None else str(answer)
    blocks = _FENCE.findall(text)
    if not blocks:
        return text
    if entry_point:
        defining = [b for b in blocks if defines(b, entry_point)]
        if defining:
            return defining[-1]
    return max(blocks, key=len)


class CodeBenchmark(DatasetBenchmark):
    """Subclasses build the test program for one answer; scoring runs them in one batch.

    `split_files=(validation_file, test_file)` loads a fixed split (the W4S split files) and
    makes `split()` return exactly those files, ignoring the seed; sizes truncate them.
    """

    kind = "code"

    def __init__(
        self,
        *,
        timeout_s: float = 10.0,
        split_files: tuple[str | Path, str | Path] | None = None,
        **options: Any,
    ) -> None:
        if timeout_s <= 0:
            raise BenchmarkError(f"`timeout_s` must be positive, but received {timeout_s!r}")
        if split_files is not None and len(split_files) != 2:
            raise BenchmarkError(
                f"`split_files` must be (validation_file, test_file), but received {split_files!r}"
            )
        super().__init__(**options)
        self.timeout_s = timeout_s
        self.split_files = tuple(Path(p).expanduser() for p in split_files or ())
        self._n_validation = 0

    def rows(self) -> Iterator[Row]:
        if not self.split_files:
            yield from super().rows()
            return
        validation, test = (read_rows(p) for p in self.split_files)
        self._n_validation = len(validation)
        yield from [*validation, *test]

    def split(
        self, *, seed: int, val_size: int | None = None, test_size: int | None = None
    ) -> Split:
        if not self.split_files:
            return super().split(seed=seed, val_size=val_size, test_size=test_size)
        items = self.load()
        validation, test = items[: self._n_validation], items[self._n_validation :]
        return Split(validation=validation[:val_size], test=test[:test_size])

    @abstractmethod
    def code_test(self, item: Item, answer: Any) -> CodeTest:
        """The answer's code and the item's official tests, kept apart (see `run_tests`)."""

    def score(self, item: Item, answer: Any) -> float:
        return self.score_many([item], [answer])[0]

    def score_many(self, items: Sequence[Item], answers: Sequence[Any]) -> list[float]:
        if len(items) != len(answers):
            raise ValueError(f"`answers` has {len(answers)} entries for {len(items)} items")
        if not items:
            return []
        try:
            from w4s.sandbox import run_tests
        except ImportError as e:
            raise BenchmarkError(
                f"`{self.name}`: scoring code needs the sandbox (w4s.sandbox.run_tests): {e}"
            ) from e
        tests = [self.code_test(item, answer) for item, answer in zip(items, answers,
                                                                       strict=True)]
        results = run_tests(tests, timeout_s=self.timeout_s)
        return [1.0 if r.ok else 0.0 for r in results]

    def seed_workflows(self) -> dict[str, str]:
        return dict(CODE_SEEDS)
