"""Numeric answer extraction and matching, and the base class of the benchmarks whose gold
is one number (GSM8K, GSM-Hard, GSM-Plus, SVAMP, MGSM, AIME).

Models answer in many shapes ("$1,234.50", "\\boxed{\\frac{1}{2}}", "The answer is 12 apples.",
"25%"); the final answer is taken from the last `\\boxed{}`, else the text after the last
answer marker ("the answer is", "answer:", "####"), else the last number in the text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from w4s.benchmarks.base import Item
from w4s.benchmarks.loading import DatasetBenchmark, FieldError
from w4s.benchmarks.seeds import MATH_SEEDS

# A number: thousands groups ("1,234") or plain digits, optional decimals or a leading ".5".
# The minus sign may be ASCII or U+2212, and is not taken after a digit or letter ("3-5").
_NUM = r"(?:(?<![\w)])[-\u2212])?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?"
_NUMBER = re.compile(rf"{_NUM}|(?:(?<![\w)])[-\u2212])?\.\d+")
_FRACTION = re.compile(rf"({_NUM})\s*/\s*({_NUM})")
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*([^{}]+?)\s*\}\s*\{\s*([^{}]+?)\s*\}")
_LATEX_FRAC_SHORT = re.compile(r"\\[dt]?frac\s*(\d)\s*(\d)")  # \frac12
_MARKER = re.compile(
    r"(?:final answer(?:\s*is)?|the answer is|answer\s*:|####)\s*:?", re.IGNORECASE
)


def last_boxed(text: str) -> str | None:
    r"""Content of the last `\boxed{...}` (or `\fbox{...}`), braces matched; None if absent."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    rest = text[start:]
    brace = rest.find("{")
    if brace < 0:
        return None
    space = rest[len("\\boxed") : brace] if rest.startswith("\\boxed") else rest[5:brace]
    if space.strip():  # "\boxed 5" form: the token after the command
        return space.strip().split()[0] or None
    depth = 0
    for i in range(brace, len(rest)):
        if rest[i] == "{":
            depth += 1
        elif rest[i] == "}":
            depth -= 1
            if depth == 0:
                return rest[brace + 1 : i]
    return None


def final_answer_text(text: str) -> tuple[str, bool]:
    """The span holding the final answer, and whether it was marked (boxed or after a marker)."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed, True
    markers = list(_MARKER.finditer(text))
    if markers:
        tail = text[markers[-1].end() :].strip()
        if tail:
            return tail, True
    return text, False


def _to_float(token: str) -> float | None:
    try:
        return float(token.replace(",", "").replace("\u2212", "-"))
    except ValueError:
        return None


def _numbers(text: str) -> list[float]:
    """Numbers in reading order, with fractions (1/2, \\frac{1}{2}) evaluated."""
    text = _LATEX_FRAC_SHORT.sub(r"\1/\2", _LATEX_FRAC.sub(r"\1/\2", text))
    text = text.replace("{,}", ",").replace("\\!", "").replace("\\,", "")
    found: list[tuple[int, float]] = []
    covered: list[tuple[int, int]] = []
    for m in _FRACTION.finditer(text):
        num, den = _to_float(m.group(1)), _to_float(m.group(2))
        if num is not None and den:
            found.append((m.start(), num / den))
            covered.append(m.span())
    for m in _NUMBER.finditer(text):
        if any(a <= m.start() < b for a, b in covered):
            continue
        value = _to_float(m.group(0))
        if value is not None:
            found.append((m.start(), value))
    return [v for _, v in sorted(found)]


def extract_number(answer: Any) -> float | None:
    """The final numeric answer in an int, float or text answer; None if there is none."""
    if isinstance(answer, bool) or answer is None:
        return None
    if isinstance(answer, (int, float)):
        return float(answer) if math.isfinite(answer) else None
    span, marked = final_answer_text(str(answer))
    numbers = _numbers(span)
    if not numbers and marked:  # "the answer is below ... 42": fall back to the whole text
        numbers = _numbers(str(answer))
        return numbers[-1] if numbers else None
    if not numbers:
        return None
    value = numbers[0] if marked else numbers[-1]
    return value if math.isfinite(value) else None


def parse_gold(gold: Any) -> float:
    """A gold number given as int, float or text such as "1,234" or "3/4"; ValueError if none."""
    value = extract_number(gold)
    if value is None:
        raise ValueError(f"gold answer {gold!r} is not a number")
    return value


def numbers_match(answer: Any, gold: Any, *, tolerance: float = 1e-6) -> bool:
    """Numeric equality up to an absolute `tolerance` (1e-6: exact for integer golds); the tiny
    relative slack only absorbs float rounding of huge values, never an off-by-one."""
    value = extract_number(answer)
    if value is None:
        return False
    return math.isclose(value, parse_gold(gold), rel_tol=1e-13, abs_tol=tolerance)


def decimals(text: str) -> int:
    """Decimal places written in a number string ("4.33" -> 2, "12" -> 0)."""
    match = re.search(r"\.(\d+)\s*$", text.strip())
    return len(match.group(1)) if match else 0


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
