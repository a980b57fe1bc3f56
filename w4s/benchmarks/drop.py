"""DROP (dev, the ADAS/W4S prompt format): reading comprehension with discrete reasoning.

Scored by the DROP F1 as the DROP paper defines it, written from that definition: answers are
lower-cased, split on spaces and hyphens, stripped of punctuation (except inside numbers) and
articles, numbers canonicalised ("2.0" == "2"); F1 is over the bags of tokens, and is 0 when
the gold mentions numbers and the answer shares none of them. Multi-span answers (lists) are
aligned span to span; the score is the best over the `|`-separated reference answers.
"""

from __future__ import annotations

import itertools
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

from w4s.benchmarks.base import Item, register
from w4s.benchmarks.loading import DatasetBenchmark
from w4s.benchmarks.seeds import QA_SEEDS

_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_PUNCT = set(string.punctuation)


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _normalize_token(token: str) -> str:
    token = token.lower()
    if not _is_number(token):
        token = "".join(ch for ch in token if ch not in _PUNCT)
    if _is_number(token):
        token = str(float(token))
    return " ".join(_ARTICLES.sub(" ", token).split())


def normalize_answer(text: str) -> str:
    tokens = (_normalize_token(t) for t in re.split(r" |-", text))
    return " ".join(t for t in tokens if t)


def _bag(span: str) -> set[str]:
    return set(normalize_answer(span).split())


def _numbers(bag: set[str]) -> set[str]:
    return {t for t in bag if _is_number(t)}


def _span_f1(predicted: set[str], gold: set[str]) -> float:
    gold_numbers = _numbers(gold)
    if gold_numbers and not gold_numbers & _numbers(predicted):
        return 0.0
    overlap = len(predicted & gold)
    if overlap == 0:
        return 1.0 if not predicted and not gold else 0.0
    precision, recall = overlap / len(predicted), overlap / len(gold)
    return 2 * precision * recall / (precision + recall)


def _spans(answer: str | Sequence[str]) -> list[str]:
    return [answer] if isinstance(answer, str) else [str(a) for a in answer]


def _aligned_f1(predicted: list[set[str]], gold: list[set[str]]) -> float:
    """Best one-to-one matching of spans (exhaustive: DROP answers have few spans)."""
    small, large = (predicted, gold) if len(predicted) <= len(gold) else (gold, predicted)
    if len(large) > 7:  # a greedy match keeps pathological inputs fast
        return sum(max(_span_f1(p, g) for g in gold) for p in predicted) / max(
            len(predicted), len(gold)
        )
    best = 0.0
    for perm in itertools.permutations(range(len(large)), len(small)):
        pairs = zip(small, (large[i] for i in perm), strict=True)
        if small is predicted:
            total = sum(_span_f1(p, g) for p, g in pairs)
        else:
            total = sum(_span_f1(p, g) for g, p in pairs)
        best = max(best, total)
    return best / max(len(predicted), len(gold))


def drop_f1(answer: str | Sequence[str], reference: str | Sequence[str]) -> float:
    """DROP F1 of one answer (a string or a list of spans) against one reference answer."""
    predicted = [_bag(s) for s in _spans(answer)]
    gold = [_bag(s) for s in _spans(reference)]
    return round(_aligned_f1(predicted, gold), 2)


def best_f1(answer: Any, references: Sequence[str]) -> float:
    """The max F1 over alternative references; None or empty answers score 0."""
    if answer is None:
        return 0.0
    if not isinstance(answer, (str, list, tuple)):
        answer = str(answer)
    return max((drop_f1(answer, ref) for ref in references), default=0.0)


@register("drop")
class DROP(DatasetBenchmark):
    name = "drop"
    title = "DROP"
    kind = "qa"
    default_file = "drop_v0_dev.jsonl.gz"
    description = (
        "Answer a question about a passage; it often needs counting, sorting or arithmetic "
        "over facts in the passage (the task text may start with solved examples). The answer "
        "is short: a number, a date, or a span copied from the passage; scored by DROP F1."
    )

    def make_item(self, index: int, row: Mapping[str, Any]) -> Item:
        refs = [r.strip() for r in str(row["ref_text"]).split("|")]
        return Item(id=f"drop-{index}", question=str(row["context"]), gold=refs)

    def score(self, item: Item, answer: Any) -> float:
        return best_f1(answer, item.gold)

    def seed_workflows(self) -> dict[str, str]:
        return dict(QA_SEEDS)
