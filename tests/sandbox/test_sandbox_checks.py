"""Static checks in the parent and one-item self-checks in the sandbox."""

from __future__ import annotations

import pytest

from w4s.sandbox import check_workflow_source


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("def solver(agent, task):\n    return {'answer': 1}\n", None),
        ("def solver(agent, task, hint=None):\n    return {}\n", None),
        ("def solver(*args):\n    return {}\n", None),
        ("solver = lambda agent, task: {'answer': 1}\n", None),
        ("def solver(agent, task)\n    return {}\n", "SyntaxError at line 1"),
        ("def helper(agent, task):\n    return {}\n", "workflow defines no top-level `solver`"),
        ("def solver(agent):\n    return {}\n", "`solver(agent)` must take 2 positional"),
        ("def solver(a, b, c):\n    return {}\n", "`solver(a, b, c)` must take exactly 2"),
        ("async def solver(agent, task):\n    return {}\n", "`solver` must be a plain `def`"),
        ("def solver(agent, task, *, k):\n    return {}\n", "`solver` has required keyword-only"),
        ("", "workflow is empty"),
        ("class X:\n    def solver(self, task):\n        pass\n", "workflow defines no top-level"),
    ],
)
def test_check_workflow_source(code, expected):
    got = check_workflow_source(code)
    if expected is None:
        assert got is None
    else:
        assert got is not None and got.startswith(expected), got
        assert "\n" not in got


def test_static_check_never_executes_code(tmp_path):
    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'w').close()\ndef solver(agent, task):\n    return {{}}\n"
    assert check_workflow_source(code) is None
    assert not marker.exists()


CASES = [
    ("def solver(agent, task):\n    return {'answer': agent.llm('ECHO: hi')}\n", None),
    ("def solver(agent, task)\n    return 1\n", "SyntaxError at line 1"),
    ("def other(agent, task):\n    return 1\n", "workflow defines no top-level `solver`"),
    ("def solver(agent):\n    return 1\n", "`solver(agent)` must take 2 positional"),
    ("def solver(agent, task):\n    x = [1]\n    return x[5]\n", "Traceback"),
    ("def solver(agent, task):\n    return 42\n", "solver returned int, not dict"),
    ("def solver(agent, task):\n    return {'result': 1}\n", "solver's dict has no 'answer' key"),
    ("def solver(agent, task):\n    while True:\n        pass\n", "timeout after 4s"),
]


@pytest.mark.parametrize(("code", "expected"), CASES)
def test_self_check(quick_harness, make_bench, code, expected):
    bench = make_bench(1)
    got = quick_harness.self_check(code, bench.load()[0])
    if expected is None:
        assert got is None
    else:
        assert got is not None and got.startswith(expected), got


def test_self_check_error_shows_the_failing_workflow_line(quick_harness, make_bench):
    bench = make_bench(1)
    code = "def solver(agent, task):\n    x = [1]\n    y = x[5]\n    return {'answer': y}\n"
    err = quick_harness.self_check(code, bench.load()[0])
    assert 'File "<workflow>", line 3, in solver' in err
    assert "y = x[5]" in err
    assert err.rstrip().endswith("IndexError: list index out of range")
    assert "sandbox/worker" not in err  # our own frames are not shown


def test_self_check_ignores_the_score(quick_harness, make_bench):
    bench = make_bench(1)
    assert quick_harness.self_check("def solver(a, t):\n    return {'answer': 'wrong'}\n",
                                    bench.load()[0]) is None
