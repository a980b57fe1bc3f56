"""SVAMP: one-step and two-step word problems; the question is `Body + " " + Question`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from w4s.benchmarks.base import Item, register
from w4s.benchmarks.numeric import NUMBER_ANSWER, NumericBenchmark, gold_number, plain


@register("svamp")
class SVAMP(NumericBenchmark):
    name = "svamp"
    title = "SVAMP"
    default_file = "svamp.json"
    hub_id, hub_split = "ChilleD/SVAMP", "test"
    description = "Solve a short math word problem. " + NUMBER_ANSWER

    def make_item(self, index: int, row: Mapping[str, Any]) -> Item:
        body, question = str(row["Body"]).strip(), str(row["Question"]).strip()
        return Item(
            id=str(row.get("ID", f"svamp-{index}")),
            question=f"{body} {question}",
            gold=plain(gold_number(row, "Answer")),
            metadata={"type": row.get("Type")},
        )
