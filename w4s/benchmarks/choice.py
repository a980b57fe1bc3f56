"""Multiple-choice questions: option formatting and robust extraction of the chosen letter."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from w4s.benchmarks.base import Item
from w4s.benchmarks.loading import DatasetBenchmark
from w4s.benchmarks.seeds import CHOICE_SEEDS

LETTERS = "ABCDEFGHIJKLMNOP"
_MARKDOWN = re.compile(r"[*_`]")
_ALONE = re.compile(r"^\(?\[?([A-P])\]?\)?[.:)]?(?:\s|$)")  # "C", "(C)", "C.", "C) text"
_ANSWER_IS = re.compile(
    r"(?i:answer|option|choice)\s*(?:is|:|=)?\s*(?i:option\s*)?[(\[]?([A-P])[)\]]?(?![\w'])"
)
_BOXED = re.compile(r"\\boxed\{\s*(?:\\text\{)?\s*\(?([A-P])\)?\s*\}?\s*\}")
_PARENS = re.compile(r"\(([A-P])\)")


def format_options(options: Sequence[str]) -> str:
    return "\n".join(f"({LETTERS[i]}) {option}" for i, option in enumerate(options))


def extract_choice(answer: Any, n_options: int, options: Sequence[str] = ()) -> str | None:
    """The letter the answer picks, or None.

    Tried in order: a bare letter ("C", "(C)"), the last "answer is (C)" / "Answer: C", the
    last \\boxed{C}, a leading "C." or "C)", an answer equal to an option's text, the last
    "(C)". Bare capitals inside prose are never taken ("A" is also an article, and "A:" opens
    many replies).
    """
    if answer is None:
        return None
    valid = LETTERS[:n_options]
    text = _MARKDOWN.sub("", str(answer)).strip()
    alone = _ALONE.match(text)
    found: list[str] = [alone.group(1)] if alone and len(text) <= 3 else []
    for pattern in (_ANSWER_IS, _BOXED):
        if not found:
            found = pattern.findall(text)
    if not found and alone and alone.group(0).rstrip()[-1:] in ".)":
        found = [alone.group(1)]
    if not found and options:
        normal = text.lower().rstrip(".")
        found = [LETTERS[i] for i, o in enumerate(options) if str(o).strip().lower() == normal]
    if not found:
        found = _PARENS.findall(text)
    found = [letter for letter in found if letter in valid]
    return found[-1] if found else None


class ChoiceBenchmark(DatasetBenchmark):
    """Gold is the correct letter; items keep their options in metadata for extraction."""

    kind = "choice"

    def score(self, item: Item, answer: Any) -> float:
        options = item.metadata.get("options", ())
        return 1.0 if extract_choice(answer, len(options), options) == item.gold else 0.0

    def seed_workflows(self) -> dict[str, str]:
        return dict(CHOICE_SEEDS)
