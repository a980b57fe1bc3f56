"""GSM-Hard (PAL, v2): GSM8K questions with larger numbers; float targets from the PAL program.

Scored with an absolute tolerance of 0.01 (the answer is right to the cent): PAL's own check
uses 1e-3, which fails answers rounded to two decimals, and the W4S code uses 0.1, which
accepts answers off in the first decimal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from w4s.benchmarks.base import Item, register
from w4s.benchmarks.numeric import NUMBER_ANSWER, NumericBenchmark, gold_number, plain


@register("gsm_hard")
class GSMHard(NumericBenchmark):
    name = "gsm_hard"
    title = "GSM-Hard"
    default_file = "gsmhardv2.jsonl"
    hub_id, hub_split = "reasoning-machines/gsm-hard", "train"
    tolerance = 0.01
    description = (
        "Solve a math word problem with large or unusual numbers. "
        + NUMBER_ANSWER
        + " Non-integer answers need at least two decimals."
    )

    def make_item(self, index: int, row: Mapping[str, Any]) -> Item:
        gold = plain(gold_number(row, "target"))
        return Item(id=f"gsm_hard-{index}", question=str(row["input"]), gold=gold)
