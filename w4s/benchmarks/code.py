"""Code benchmarks: pass@1 by running the official tests on the answer in the sandbox.

A program passes when it exits normally *and* prints a per-call random marker after the tests,
so a solution that calls `sys.exit(0)` or `os._exit(0)` before the tests cannot pass. The
answer's own output is discarded, so a chatty solution cannot push the marker past the
sandbox's output cap.
"""

from __future__ import annotations

import re
import secrets
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from w4s.benchmarks.base import Item, Split
from w4s.benchmarks.loading import DatasetBenchmark, Row, read_rows
from w4s.benchmarks.seeds import CODE_SEEDS
from w4s.errors import BenchmarkError

_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)

_QUIET = (
    "import os as _w4s_os, sys as _w4s_sys\n"
    "_w4s_out, _w4s_sys.stdout = _w4s_sys.stdout, open(_w4s_os.devnull, 'w')"
)
_LOUD = "_w4s_sys.stdout = _w4s_out\n"


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
    def program(self, item: Item, answer: Any) -> str:
        """The source that runs the answer against the item's tests and raises on failure."""

    def score(self, item: Item, answer: Any) -> float:
        return self.score_many([item], [answer])[0]

    def score_many(self, items: Sequence[Item], answers: Sequence[Any]) -> list[float]:
        if len(items) != len(answers):
            raise ValueError(f"`answers` has {len(answers)} entries for {len(items)} items")
        if not items:
            return []
        try:
            from w4s.sandbox import run_programs
        except ImportError as e:
            raise BenchmarkError(
                f"`{self.name}`: scoring code needs the sandbox (w4s.sandbox.run_programs): {e}"
            ) from e
        marker = f"W4S-TESTS-PASSED-{secrets.token_hex(8)}"
        sources = [
            f"{_QUIET}\n{self.program(item, answer)}\n\n{_LOUD}print({marker!r})\n"
            for item, answer in zip(items, answers, strict=True)
        ]
        results = run_programs(sources, timeout_s=self.timeout_s)
        return [1.0 if r.ok and marker in (r.stdout or "") else 0.0 for r in results]

    def seed_workflows(self) -> dict[str, str]:
        return dict(CODE_SEEDS)
