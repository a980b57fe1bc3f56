"""AIME (2024 by default): 30 problems whose answers are integers 0-999, matched exactly."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from w4s.benchmarks.base import Item, register
from w4s.benchmarks.loading import FieldError
from w4s.benchmarks.numeric import NumericBenchmark, gold_number


@register("aime")
class AIME(NumericBenchmark):
    name = "aime"
    title = "AIME 2024"
    default_file = "aime24_test.jsonl"
    hub_id, hub_split = "HuggingFaceH4/aime_2024", "train"
    default_val_size = 10
    description = (
        "Solve an AIME competition problem. The answer is an integer from 0 to 999; "
        "put it in \\boxed{}."
    )

    def make_item(self, index: int, row: Mapping[str, Any]) -> Item:
        gold = gold_number(row, "answer")
        if not gold.is_integer():
            raise FieldError("answer", f"AIME answers are integers, got {row['answer']!r}")
        has_question = "problem" not in row and "question" in row
        question = row["question"] if has_question else row["problem"]
        return Item(id=f"aime-{row.get('id', index)}", question=str(question), gold=int(gold))
