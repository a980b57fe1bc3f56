"""The learning-signal experiment's measures (benchmarks/learning_signal.py) on known rows."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "learning_signal.py"


@pytest.fixture(scope="module")
def ls():
    spec = importlib.util.spec_from_file_location("learning_signal", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_execute_code_means_a_call_not_a_mention(ls):
    assert ls.calls_execute_code("def solver(agent, task):\n"
                                 "    return {'answer': agent.execute_code('print(1)')}")
    assert not ls.calls_execute_code("def solver(agent, task):\n"
                                     "    return {'answer': 'agent.execute_code'}")
    assert not ls.calls_execute_code("def solver(:")
    assert not ls.calls_execute_code(None)


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_n(ls):
    small = ls.bootstrap([0, 1] * 5)
    large = ls.bootstrap([0, 1] * 200)
    assert small["n"] == 10 and small["mean"] == 0.5 == large["mean"]
    assert small["ci95"][0] <= 0.5 <= small["ci95"][1]
    assert large["ci95"][1] - large["ci95"][0] < small["ci95"][1] - small["ci95"][0]
    assert ls.bootstrap([]) == {"n": 0, "mean": None, "ci95": None}
    assert ls.bootstrap([1, 1, 1])["ci95"] == [1.0, 1.0]


def test_measures_count_valid_code_calls_and_leave_lost_rows_out(ls):
    code = "def solver(agent, task):\n    return {'answer': agent.execute_code('print(2)')}"
    rows = [
        {"status": "ok", "code": code, "accuracy": 0.5, "reward": 0.5, "repairs": 0},
        {"status": "ok", "code": "def solver(agent, task):\n    return {}", "accuracy": 0.0,
         "reward": -0.1, "repairs": 1},
        {"status": "skipped", "code": None, "accuracy": None, "reward": -0.1, "repairs": 1},
        {"status": "infra_error", "code": code, "accuracy": None, "reward": None, "repairs": 0},
    ]
    m = ls.measures(rows)
    assert m["candidates"] == 4 and m["lost"] == 1
    assert m["valid_rate"]["n"] == 3 and m["valid_rate"]["mean"] == pytest.approx(2 / 3, 1e-3)
    assert m["valid_first_try_rate"]["mean"] == pytest.approx(1 / 3, 1e-3)
    assert m["execute_code_share"] == {**m["execute_code_share"], "n": 2, "mean": 0.5}
    assert m["val_accuracy"]["mean"] == 0.25
    assert m["reward"]["mean"] == pytest.approx(0.1, 1e-3)
    assert m["positive_share"]["mean"] == pytest.approx(1 / 3, 1e-3)
