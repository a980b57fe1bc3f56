"""A benchmark from any local file: `get_benchmark("file:data.jsonl", question_field="q",
answer_field="a", scorer="numeric")`. Scorers: numeric, exact, f1, choice, math, or
`python:module:function` (called as `function(answer, gold)`, returning a bool or a float).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from w4s.benchmarks.base import Item, register_prefix
from w4s.benchmarks.choice import LETTERS, extract_choice, format_options
from w4s.benchmarks.drop import best_f1
from w4s.benchmarks.loading import DatasetBenchmark, FieldError
from w4s.benchmarks.numeric import final_answer_text, numbers_match, parse_gold
from w4s.benchmarks.seeds import SEEDS_BY_KIND
from w4s.errors import BenchmarkError

FILE_PREFIX = "file:"
SCORERS = ("numeric", "exact", "f1", "choice", "math")
KIND_OF_SCORER = {"numeric": "math", "math": "math", "exact": "qa", "f1": "qa", "choice": "choice"}
_ANSWER_FORMAT = {
    "numeric": "The answer is a single number.",
    "math": "The answer is a LaTeX expression, put in \\boxed{}.",
    "exact": "The answer is a short text that must match the reference exactly.",
    "f1": "The answer is a short text, scored by word overlap (F1) with the reference.",
    "choice": "The answer is the letter of the correct option, e.g. 'The answer is (B)'.",
}


def normalize_text(text: Any) -> str:
    return " ".join(str(text).casefold().split()).strip(" .")


def exact_match(answer: Any, gold: Any) -> bool:
    """Equal after case and space folding, as given or as the final answer in longer text."""
    if answer is None:
        return False
    target = normalize_text(gold)
    final, _ = final_answer_text(str(answer))
    return target in (normalize_text(answer), normalize_text(final))


def _python_scorer(spec: str) -> Callable[[Any, Any], Any]:
    parts = spec.split(":")
    if len(parts) != 3 or not all(parts[1:]):
        raise BenchmarkError(f"`scorer` {spec!r} must look like 'python:module:function'")
    try:
        function = getattr(importlib.import_module(parts[1]), parts[2])
    except (ImportError, AttributeError) as e:
        raise BenchmarkError(f"`scorer` {spec!r}: cannot import it: {e}") from e
    if not callable(function):
        raise BenchmarkError(f"`scorer` {spec!r} is not a function")
    return function


def benchmark_options_from_cli(
    question_field: str | None = None, answer_field: str | None = None, scorer: str | None = None
) -> dict[str, str]:
    """`get_benchmark` options from CLI flags, leaving out the ones not given."""
    given = {"question_field": question_field, "answer_field": answer_field, "scorer": scorer}
    return {key: value for key, value in given.items() if value is not None}


class CustomBenchmark(DatasetBenchmark):
    """Items from a user file; `options_field` (a list) turns questions into lettered choices."""

    name = "custom"

    def __init__(
        self,
        *,
        path: str | Path,
        question_field: str = "question",
        answer_field: str = "answer",
        scorer: str = "exact",
        id_field: str | None = None,
        options_field: str | None = None,
        description: str | None = None,
        kind: str | None = None,
        tolerance: float = 1e-6,
        **options: Any,
    ) -> None:
        if scorer not in SCORERS and not scorer.startswith("python:"):
            raise BenchmarkError(
                f"`scorer` must be one of {', '.join(SCORERS)} or 'python:module:function', "
                f"but received {scorer!r}"
            )
        super().__init__(path=path, **options)
        self.name = f"{FILE_PREFIX}{Path(path).name}"
        self.title = self.name
        self.fields = (question_field, answer_field, id_field, options_field)
        self.scorer = scorer
        self._function = _python_scorer(scorer) if scorer.startswith("python:") else None
        self.kind = kind or KIND_OF_SCORER.get(scorer, "qa")
        if self.kind not in SEEDS_BY_KIND:
            raise BenchmarkError(
                f"`kind` must be one of {', '.join(SEEDS_BY_KIND)}, but received {kind!r}"
            )
        self.tolerance = tolerance
        self.description = description or (
            f"Answer the question (custom benchmark from {Path(path).name}). "
            + _ANSWER_FORMAT.get(scorer, "The answer is scored by a custom function.")
        )

    def make_item(self, index: int, row: Mapping[str, Any]) -> Item:
        question_field, answer_field, id_field, options_field = self.fields
        question, gold = str(row[question_field]), row[answer_field]
        meta: dict[str, Any] = {}
        if options_field:
            options = row[options_field]
            if not isinstance(options, list) or not options:
                raise FieldError(options_field, "must be a non-empty list of options")
            meta["options"] = [str(o) for o in options]
            question = f"{question}\n\nOptions:\n{format_options(meta['options'])}"
        if self.scorer == "numeric":
            try:
                parse_gold(gold)
            except ValueError as e:
                raise FieldError(answer_field, str(e)) from e
        if self.scorer == "choice":
            gold = self._gold_letter(gold, meta.get("options", []), answer_field)
        item_id = str(row[id_field]) if id_field else f"{self.name}-{index}"
        return Item(id=item_id, question=question, gold=gold, metadata=meta)

    @staticmethod
    def _gold_letter(gold: Any, options: list[str], field: str) -> str:
        if isinstance(gold, int) and not isinstance(gold, bool) and 0 <= gold < len(options):
            return LETTERS[gold]  # a 0-based option index
        letter = str(gold).strip().strip("()").upper()
        if re.fullmatch(r"[A-P]", letter):
            return letter
        if str(gold) in options:
            return LETTERS[options.index(str(gold))]
        raise FieldError(field, f"{gold!r} is not an option letter, index or option text")

    def score(self, item: Item, answer: Any) -> float:
        if self._function is not None:
            value = float(self._function(answer, item.gold))
            return min(1.0, max(0.0, value))
        if self.scorer == "numeric":
            return float(numbers_match(answer, item.gold, tolerance=self.tolerance))
        if self.scorer == "f1":
            gold = item.gold
            refs = [str(g) for g in gold] if isinstance(gold, list) else str(gold).split("|")
            return best_f1(answer, refs)
        if self.scorer == "choice":
            options = item.metadata.get("options", [])
            return float(extract_choice(answer, len(options) or len(LETTERS), options) == item.gold)
        if self.scorer == "math":
            from w4s.benchmarks.math import math_equal

            return float(math_equal(answer, str(item.gold)))
        return float(exact_match(answer, item.gold))

    def seed_workflows(self) -> dict[str, str]:
        return dict(SEEDS_BY_KIND[self.kind])


@register_prefix(FILE_PREFIX)
def _file_benchmark(path: str, **options: Any) -> CustomBenchmark:
    """`file:PATH` names a custom benchmark over that file."""
    return CustomBenchmark(path=path, **options)
