"""GSM8K (grade-school math, test split): the gold is the number after `#### `."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from w4s.benchmarks.base import Item, register
from w4s.benchmarks.loading import FieldError
from w4s.benchmarks.numeric import NUMBER_ANSWER, NumericBenchmark, gold_number, plain


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
