"""On the real benchmark files (skipped when /work/shared/datasets is absent): row counts and
a small oracle pass per file. The full pass is benchmarks/oracle_check.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import oracle_check  # noqa: E402

COUNTS = {
    "gsm8k_test.jsonl": 1319, "gsmhardv2.jsonl": 1319, "gsmplus_testmini.jsonl.gz": 2400,
    "svamp.json": 1000, "mgsm/mgsm_ja.tsv": 250, "math500_test.jsonl": 500,
    "math_test.jsonl.gz": 5000, "aime24_test.jsonl": 30, "drop_v0_dev.jsonl.gz": 9536,
    "mmlu_pro_validation.jsonl": 70, "mmlu_pro_test.jsonl.gz": 12032,
    "HumanEval.jsonl.gz": 164, "humaneval_validate.jsonl": 33, "humaneval_test.jsonl": 131,
    "mbpp_validate.jsonl": 86, "mbpp_test.jsonl": 341,
}


@pytest.mark.parametrize("check", oracle_check.CHECKS, ids=lambda c: c.file)
def test_small_oracle_pass(check, datasets):
    outcome = oracle_check.run_check(check, datasets, limit=3 if check.is_code else 40)
    assert outcome.failures == []
    assert outcome.right == 1.0 and outcome.wrong == 0.0


@pytest.mark.parametrize(("file", "rows"), COUNTS.items())
def test_row_counts(file, rows, datasets):
    check = next(c for c in oracle_check.CHECKS if c.file == file)
    assert len(check.build(datasets).load()) == rows


def test_mgsm_all_languages_from_the_folder(datasets):
    from w4s.benchmarks import get_benchmark

    items = get_benchmark("mgsm", path=datasets / "mgsm").load()
    assert len(items) == 11 * 250 and len({i.id for i in items}) == len(items)


def test_w4s_humaneval_split_files(datasets):
    from w4s.benchmarks import get_benchmark

    files = (datasets / "humaneval_validate.jsonl", datasets / "humaneval_test.jsonl")
    split = get_benchmark("humaneval", split_files=files).split(seed=0)
    assert (len(split.validation), len(split.test)) == (33, 131)
