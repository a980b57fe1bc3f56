"""MMLU-Pro: 12,032 ten-option questions across 14 subjects; the gold is a letter A-J."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from w4s.benchmarks.base import Item, register
from w4s.benchmarks.choice import LETTERS, ChoiceBenchmark, format_options
from w4s.benchmarks.loading import FieldError


@register("mmlu_pro")
class MMLUPro(ChoiceBenchmark):
    name = "mmlu_pro"
    title = "MMLU-Pro"
    default_file = "mmlu_pro_test.jsonl.gz"
    hub_id = "TIGER-Lab/MMLU-Pro"
    description = (
        "Answer a multiple-choice question (up to 10 options, A-J) from one of 14 subjects. "
        "The answer is the letter of the correct option, e.g. 'The answer is (C)'."
    )

    def make_item(self, index: int, row: Mapping[str, Any]) -> Item:
        options = [str(o) for o in row["options"]]
        gold = str(row["answer"]).strip()
        if gold not in LETTERS[: len(options)]:
            raise FieldError("answer", f"{gold!r} is not one of the {len(options)} option letters")
        question = f"{row['question']}\n\nOptions:\n{format_options(options)}"
        return Item(
            id=f"mmlu_pro-{row.get('question_id', index)}",
            question=question,
            gold=gold,
            metadata={"options": options, "category": row.get("category")},
        )
