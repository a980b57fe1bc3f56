from __future__ import annotations

import json
import sys

import pytest

from w4s.benchmarks import benchmark_options_from_cli, get_benchmark
from w4s.errors import BenchmarkError


def write(tmp_path, rows, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_numeric_custom_file(tmp_path):
    path = write(tmp_path, [{"q": "2+2?", "a": "4"}, {"q": "3*3?", "a": 9}])
    bench = get_benchmark(f"file:{path}", **benchmark_options_from_cli("q", "a", "numeric"))
    items = bench.load()
    assert [i.question for i in items] == ["2+2?", "3*3?"]
    assert bench.score(items[0], "The answer is 4.") == 1.0
    assert bench.score(items[1], "8") == 0.0
    assert bench.kind == "math" and "cot_sc" in bench.seed_workflows()
    assert bench.name == "file:data.jsonl" and "number" in bench.description


def test_exact_f1_choice_math_scorers(tmp_path):
    path = write(tmp_path, [{"question": "Capital of France?", "answer": "Paris"}])
    exact = get_benchmark(f"file:{path}", scorer="exact")
    item = exact.load()[0]
    assert exact.score(item, " paris. ") == 1.0
    assert exact.score(item, "I think the answer is Paris") == 1.0
    assert exact.score(item, "Lyon") == 0.0
    f1 = get_benchmark(f"file:{path}", scorer="f1")
    assert f1.score(f1.load()[0], "Paris, France") == pytest.approx(0.67)
    rows = [{"question": "Pick", "options": ["x", "y"], "answer": 1}]
    choice = get_benchmark(f"file:{write(tmp_path, rows, 'c.jsonl')}", scorer="choice",
                           options_field="options")
    item = choice.load()[0]
    assert item.gold == "B" and choice.score(item, "The answer is (B)") == 1.0
    assert choice.kind == "choice"
    math = get_benchmark(f"file:{write(tmp_path, [{'question': 'h', 'answer': '1/2'}], 'm.jsonl')}",
                         scorer="math")
    assert math.score(math.load()[0], "\\boxed{0.5}") == 1.0


def test_python_scorer(tmp_path, monkeypatch):
    (tmp_path / "my_scorer.py").write_text(
        "def score(answer, gold):\n    return 2.0 if str(answer).upper() == gold else -1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write(tmp_path, [{"question": "q", "answer": "YES"}])
    bench = get_benchmark(f"file:{path}", scorer="python:my_scorer:score")
    item = bench.load()[0]
    assert bench.score(item, "yes") == 1.0  # clamped into [0, 1]
    assert bench.score(item, "no") == 0.0
    sys.modules.pop("my_scorer", None)


def test_custom_errors_are_one_line(tmp_path):
    path = write(tmp_path, [{"question": "q", "answer": "x"}])
    with pytest.raises(BenchmarkError, match="`scorer`"):
        get_benchmark(f"file:{path}", scorer="fuzzy")
    with pytest.raises(BenchmarkError, match="cannot import"):
        get_benchmark(f"file:{path}", scorer="python:no_such_module_w4s:f")
    with pytest.raises(BenchmarkError) as e:
        get_benchmark(f"file:{path}", question_field="prompt").load()
    assert "data.jsonl" in str(e.value) and "'prompt'" in str(e.value)
    with pytest.raises(BenchmarkError, match="'answer'.*not a number"):
        get_benchmark(f"file:{path}", scorer="numeric").load()


def test_cli_helper_drops_unset_flags():
    assert benchmark_options_from_cli(None, "a", None) == {"answer_field": "a"}
