"""GSM8K (grade-school math, test split): the gold is the number after `#### `."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from w4s.benchmarks.base import Item, register
from w4s.benchmarks.loading import DatasetBenchmark, FieldError
from w4s.benchmarks.numeric import numbers_match, parse_gold
from w4s.benchmarks.seeds import MATH_SEEDS

NUMBER_ANSWER = "The answer is a single number (no units); put it in \\boxed{} or return it alone."


class NumericBenchmark(DatasetBenchmark):
    """Shared scorer and seeds for the benchmarks whose gold is one number."""

    kind = "math"
    tolerance: float = 1e-6

    def score(self, item: Item, answer: Any) -> float:
        return 1.0 if numbers_match(answer, item.gold, tolerance=self.tolerance) else 0.0

    def seed_workflows(self) -> dict[str, str]:
        return dict(MATH_SEEDS)


def gold_number(row: Mapping[str, Any], field: str) -> float:
    """The row's gold as a float; FieldError (naming the field) when it is not a number."""
    try:
        return parse_gold(row[field])
    except ValueError as e:
        raise FieldError(field, str(e)) from e


def plain(value: float) -> int | float:
    """Integers stay integers in JSON and in feedback (18, not 18.0)."""
    return int(value) if value.is_integer() else value


@register("gsm8k")
class GSM8K(NumericBenchmark):
    name = "gsm8k"
    title = "GSM8K"
    default_file = "gsm8k_test.jsonl"
    hub_id, hub_config = "openai/gsm8k", "main"
    description = "Solve a grade-school math word problem. " + NUMBER_ANSWER

    def make_item(self, index: int, row: Mapping[str, Any]) -> Item:
        solution = str(row["answer"])
        if "####" not in solution:
            raise FieldError("answer", "has no '#### <number>' final answer")
        gold = gold_number({"answer": solution.rsplit("####", 1)[1]}, "answer")
        return Item(id=f"gsm8k-{index}", question=str(row["question"]), gold=plain(gold))
