"""Code scoring runs the answers against their official tests in one sandbox batch
(`w4s.sandbox.run_tests`); a stub, an early exit or a wrong answer fails. The attacks on
scoring are in tests/sandbox/test_scoring_integrity.py."""

from __future__ import annotations

import json

import pytest

from w4s.benchmarks import get_benchmark
from w4s.errors import BenchmarkError


@pytest.fixture
def humaneval(tmp_path, write_jsonl, he_row):
    bench = get_benchmark("humaneval", path=write_jsonl(tmp_path / "h.jsonl", [he_row]))
    return bench, bench.load()[0]


@pytest.fixture
def mbpp(tmp_path, write_jsonl, mbpp_row):
    bench = get_benchmark("mbpp", path=write_jsonl(tmp_path / "m.jsonl", [mbpp_row]))
    return bench, bench.load()[0]


@pytest.fixture
def batches(monkeypatch):
    """Counts the sandbox calls (each one batch of answers)."""
    import w4s.sandbox

    calls: list[int] = []
    real = w4s.sandbox.run_tests

    def run_tests(tests, **kw):
        calls.append(len(tests))
        return real(tests, **kw)

    monkeypatch.setattr(w4s.sandbox, "run_tests", run_tests)
    return calls


def test_humaneval_body_full_function_and_fenced_answers_pass(humaneval, batches):
    bench, item = humaneval
    answers = [
        "    return a + b\n",
        "def add(a, b):\n    return a + b\n",
        "Sure!\n```python\ndef add(a, b):\n    return b + a\n```\nDone.",
    ]
    assert bench.score_many([item] * 3, answers) == [1.0, 1.0, 1.0]
    assert batches == [3]  # one sandbox call for the whole batch


@pytest.mark.parametrize(
    "answer",
    [
        "    return a - b\n",
        "def add(a, b):\n    raise NotImplementedError\n",
        "import sys\nsys.exit(0)\n",  # exits 'normally' before the tests ran
        "import os\nos._exit(0)\n",
        "    return a +\n",  # syntax error
        "",
        None,
    ],
)
def test_humaneval_wrong_answers_fail(humaneval, answer):
    bench, item = humaneval
    assert bench.score(item, answer) == 0.0


def test_a_chatty_solution_still_passes(humaneval):
    bench, item = humaneval
    assert bench.score(item, "    print('x' * 100000)\n    return a + b\n") == 1.0


def test_mbpp_full_function_and_body_pass(mbpp):
    bench, item = mbpp
    assert bench.score(item, item.gold) == 1.0
    assert bench.score(item, "    return a + b") == 1.0  # completes the prompt's signature
    assert bench.score(item, "def add(a, b):\n    return a * b") == 0.0


def test_mbpp_test_imports_are_available(tmp_path, write_jsonl, mbpp_row):
    row = dict(mbpp_row, test_imports=["import math"],
               test="def check():\n    assert add(math.floor(1.5), 2) == 3\n")
    bench = get_benchmark("mbpp", path=write_jsonl(tmp_path / "m.jsonl", [row]))
    assert bench.score(bench.load()[0], mbpp_row["code"]) == 1.0


def test_mbpp_split_files_give_the_fixed_split(tmp_path, write_jsonl, mbpp_row):
    rows = [dict(mbpp_row, task_id=k) for k in range(5)]
    val = write_jsonl(tmp_path / "v.jsonl", rows[:2])
    test = write_jsonl(tmp_path / "t.jsonl", rows[2:])
    split = get_benchmark("mbpp", split_files=(val, test)).split(seed=123)
    assert [i.id for i in split.validation] == ["mbpp-0", "mbpp-1"]
    assert [i.id for i in split.test] == ["mbpp-2", "mbpp-3", "mbpp-4"]


def test_missing_sandbox_is_a_one_line_error(humaneval, monkeypatch):
    import w4s.sandbox

    monkeypatch.delattr(w4s.sandbox, "run_tests", raising=False)
    bench, item = humaneval
    with pytest.raises(BenchmarkError, match="sandbox"):
        bench.score(item, "    return a + b\n")


def test_item_metadata_is_json_serializable(humaneval, mbpp):
    for _, item in (humaneval, mbpp):
        json.dumps(item.metadata)


def test_mbpp_test_may_use_a_module_only_the_solution_imports(tmp_path, write_jsonl,
                                                                mbpp_row):
    """As MBPP 596: `sys.getsizeof` in the asserts, `import sys` only in the solution."""
    row = dict(mbpp_row, code="import sys\ndef add(a, b):\n    return sys.getsizeof(a + b)",
               test="def check():\n    assert add(1, 2) == sys.getsizeof(3)\n")
    bench = get_benchmark("mbpp", path=write_jsonl(tmp_path / "m.jsonl", [row]))
    assert bench.score(bench.load()[0], row["code"]) == 1.0
