"""GPQA: graduate-level four-option science questions. No data ships with w4s: its authors ask
that it not be redistributed in plain text, so load the CSV you downloaded (`path=`) or the
gated Hub dataset (`hub=True`). The correct answer is listed first in the source, so options
are shuffled per item with a fixed seed (`choice_seed`) and the gold is the resulting letter.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from typing import Any

from w4s.benchmarks.base import Item, register
from w4s.benchmarks.choice import LETTERS, ChoiceBenchmark, format_options

INCORRECT = ("Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")


@register("gpqa")
class GPQA(ChoiceBenchmark):
    name = "gpqa"
    title = "GPQA"
    default_file = "gpqa_diamond.csv"
    hub_id, hub_config, hub_split = "Idavidrein/gpqa", "gpqa_diamond", "train"
    default_val_size = 40
    description = (
        "Answer a graduate-level multiple-choice science question (options A-D). "
        "The answer is the letter of the correct option, e.g. 'The answer is (B)'."
    )

    def __init__(self, *, choice_seed: int = 0, **options: Any) -> None:
        super().__init__(**options)
        self.choice_seed = choice_seed

    def make_item(self, index: int, row: Mapping[str, Any]) -> Item:
        item_id = str(row.get("Record ID") or f"gpqa-{index}")
        correct = str(row["Correct Answer"]).strip()
        options = [correct] + [str(row[field]).strip() for field in INCORRECT]
        digest = hashlib.sha256(f"{self.choice_seed}:{item_id}".encode()).digest()
        random.Random(digest).shuffle(options)
        question = f"{str(row['Question']).strip()}\n\nOptions:\n{format_options(options)}"
        return Item(
            id=item_id,
            question=question,
            gold=LETTERS[options.index(correct)],
            metadata={"options": options, "domain": row.get("High-level domain")},
        )
