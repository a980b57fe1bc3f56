"""MATH (Hendrycks, 5000 test problems) and MATH-500, scored by answer equivalence.

Equivalence comes from `math-verify` (symbolic and numeric comparison of parsed LaTeX); when
it cannot parse an answer, a normalized string comparison decides. `math-verify` bounds its
work with SIGALRM, which only exists on the main thread, so other threads run without it;
answers longer than a few hundred characters are compared as strings only, which keeps
pathological inputs from stalling a worker thread.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Mapping
from typing import Any

from w4s.benchmarks.base import Item, register
from w4s.benchmarks.loading import DatasetBenchmark, FieldError
from w4s.benchmarks.numeric import final_answer_text, last_boxed
from w4s.benchmarks.seeds import MATH_SEEDS
from w4s.errors import BenchmarkError

_MAX_CHARS = 400
_TEXT_CMD = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}")
_STRIP = ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\displaystyle", "^\\circ",
          "^{\\circ}", "\\%", "%", "\\$", "$", " ", "\n")


def normalize_latex(text: str) -> str:
    """A canonical string for answers math-verify cannot parse (text answers, intervals)."""
    text = _TEXT_CMD.sub(r"\1", text.strip())
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    for token in _STRIP:
        text = text.replace(token, "")
    return text.rstrip(".").lower()


def _timeout() -> int | None:
    return 5 if threading.current_thread() is threading.main_thread() else None


def _verifier() -> tuple[Any, Any]:
    try:
        from math_verify import parse, verify
    except ImportError as e:
        raise BenchmarkError(
            "scoring MATH/AIME answers needs `math-verify`: pip install 'math-verify>=0.7'"
        ) from e
    return parse, verify


@functools.lru_cache(maxsize=20000)
def _parse_gold(gold: str) -> Any:
    parse, _ = _verifier()
    return parse("\\boxed{" + gold + "}", parsing_timeout=_timeout())


def candidate_text(answer: Any) -> str:
    """The final answer the model gave: its last \\boxed{} content, else the text after its last
    answer marker ("the answer is ..."), else the whole text."""
    span, _ = final_answer_text(str(answer).strip())
    return span.strip().rstrip(".").strip()


def math_equal(answer: Any, gold: str) -> bool:
    """True when the answer is mathematically equal to the LaTeX gold."""
    if answer is None:
        return False
    candidate = candidate_text(answer)
    if not candidate:
        return False
    if normalize_latex(candidate) == normalize_latex(gold):
        return True
    if len(candidate) > _MAX_CHARS:  # a whole derivation, not an answer: too slow to parse
        return False
    parse, verify = _verifier()
    gold_parsed = _parse_gold(gold)
    if not gold_parsed:
        return False
    source = candidate if "$" in candidate else "\\boxed{" + candidate + "}"
    parsed = parse(source, parsing_timeout=_timeout())
    return bool(parsed) and verify(gold_parsed, parsed, timeout_seconds=_timeout())


class _MathBase(DatasetBenchmark):
    kind = "math"
    description = (
        "Solve a competition mathematics problem. The answer is the final result as a LaTeX "
        "expression (a number, fraction, expression, interval, ...), put in \\boxed{}."
    )

    def make_item(self, index: int, row: Mapping[str, Any]) -> Item:
        if "answer" in row:
            gold = str(row["answer"])
        else:
            gold = last_boxed(str(row["solution"])) or ""
            if not gold:
                raise FieldError("solution", "has no \\boxed{} final answer")
        item_id = row.get("unique_id") or f"{self.name}-{row.get('idx', index)}"
        meta = {k: row[k] for k in ("level", "type", "subject") if k in row}
        return Item(id=str(item_id), question=str(row["problem"]), gold=gold, metadata=meta)

    def score(self, item: Item, answer: Any) -> float:
        return 1.0 if math_equal(answer, item.gold) else 0.0

    def seed_workflows(self) -> dict[str, str]:
        return dict(MATH_SEEDS)


@register("math")
class MATH(_MathBase):
    name = "math"
    title = "MATH"
    default_file = "math_test.jsonl.gz"


@register("math500")
class MATH500(_MathBase):
    name = "math500"
    title = "MATH-500"
    default_file = "math500_test.jsonl"
    hub_id = "HuggingFaceH4/MATH-500"
