"""Numeric answer extraction and matching shared by the math benchmarks."""

from __future__ import annotations

import math
import re
from typing import Any

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|-?\.\d+")


def extract_number(answer: Any) -> float | None:
    """The last number in an answer (ints, floats, or text such as 'The answer is 1,234.')."""
    if isinstance(answer, bool) or answer is None:
        return None
    if isinstance(answer, (int, float)):
        return float(answer) if math.isfinite(answer) else None
    matches = _NUMBER.findall(str(answer))
    if not matches:
        return None
    try:
        return float(matches[-1].replace(",", ""))
    except ValueError:
        return None


def numbers_match(answer: Any, gold: float, *, tolerance: float = 1e-6) -> bool:
    value = extract_number(answer)
    return value is not None and abs(value - float(gold)) <= tolerance
