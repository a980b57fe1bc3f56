"""GSM-Plus: GSM8K questions under 8 perturbations; "critical thinking" items have no answer.

Gold answers are strings; "None" marks a question that lacks the information to answer it,
where the right reply says so. Numeric golds written with decimals ("4.33") were rounded by
the authors, so an answer that rounds to the gold at that precision also counts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from w4s.benchmarks.base import Item, register
from w4s.benchmarks.numeric import (
    NUMBER_ANSWER,
    NumericBenchmark,
    decimals,
    extract_number,
    final_answer_text,
    gold_number,
    plain,
)

NO_ANSWER = "None"
_NO_ANSWER = re.compile(
    r"\bnone\b|no (?:valid |numerical |definitive )?answer|cannot be (?:determined|answered|"
    r"calculated|found)|can(?:'|no)t be (?:determined|answered|calculated)|not (?:enough|"
    r"sufficient) information|insufficient (?:information|data)|(?:not possible|impossible) to "
    r"(?:determine|answer|calculate)|unanswerable|undeterminable|indeterminate|missing information",
    re.IGNORECASE,
)


def says_no_answer(answer: Any) -> bool:
    """True when the final answer states that the question cannot be answered."""
    if answer is None:
        return True
    span, _ = final_answer_text(str(answer))
    return bool(_NO_ANSWER.search(span)) or span.strip().lower() in {"n/a", "null", "nan"}


@register("gsm_plus")
class GSMPlus(NumericBenchmark):
    name = "gsm_plus"
    title = "GSM-Plus"
    default_file = "gsmplus_testmini.jsonl.gz"
    hub_id, hub_config, hub_split = "qintongli/GSM-Plus", None, "testmini"
    description = (
        "Solve a grade-school math word problem (some are perturbed). "
        + NUMBER_ANSWER
        + " If the problem lacks the information needed to answer it, the answer is None."
    )

    def make_item(self, index: int, row: Mapping[str, Any]) -> Item:
        raw = str(row["answer"]).strip()
        meta = {"perturbation_type": row.get("perturbation_type")}
        if raw == NO_ANSWER:
            gold: Any = NO_ANSWER
        else:
            gold = plain(gold_number(row, "answer"))
            meta["decimals"] = decimals(raw)
        return Item(id=f"gsm_plus-{index}", question=str(row["question"]), gold=gold,
                    metadata=meta)

    def score(self, item: Item, answer: Any) -> float:
        if item.gold == NO_ANSWER:
            return 1.0 if says_no_answer(answer) else 0.0
        if super().score(item, answer):
            return 1.0
        value, places = extract_number(answer), item.metadata.get("decimals", 0)
        if value is None or not places:
            return 0.0
        return 1.0 if math.isclose(round(value, places), float(item.gold)) else 0.0
