"""Seed workflows run against a scripted agent and produce answers the scorers accept."""

from __future__ import annotations

import subprocess
import sys

import pytest

from w4s.benchmarks import get_benchmark
from w4s.benchmarks.base import Item
from w4s.benchmarks.seeds import SEEDS_BY_KIND


class ScriptedAgent:
    """Replies from a list (cycled); `execute_code` runs trusted test code in a subprocess."""

    def __init__(self, replies: list[str]) -> None:
        self.replies, self.prompts, self.executed = replies, [], []

    def llm(self, prompt, temperature=0.0, system=None, max_tokens=None):
        self.prompts.append(prompt)
        return self.replies[(len(self.prompts) - 1) % len(self.replies)]

    def sample(self, prompt, n, temperature=0.8):
        return [self.llm(prompt) for _ in range(n)]

    def execute_code(self, code: str) -> str:
        self.executed.append(code)
        if "def solution(" in code:
            code += "\nprint(solution())\n"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=10)
        if proc.returncode:
            return "Error: " + (proc.stderr.strip().splitlines() or ["failed"])[-1]
        return proc.stdout.strip()


def run_seed(source: str, agent: ScriptedAgent, task: str) -> dict:
    namespace: dict = {}
    exec(compile(source, "<seed>", "exec"), namespace)  # our own seed source, in a test
    return namespace["solver"](agent, task)


def test_every_seed_compiles():
    for seeds in SEEDS_BY_KIND.values():
        for name, source in seeds.items():
            compile(source, name, "exec")


@pytest.mark.parametrize("seed", ["cot", "cot_sc"])
def test_math_seeds_extract_the_boxed_answer(seed):
    agent = ScriptedAgent(["Work... so \\boxed{\\frac{1}{2}}.", "\\boxed{0.5}", "\\boxed{1/2}"])
    result = run_seed(SEEDS_BY_KIND["math"][seed], agent, "Half of one?")
    bench = get_benchmark("math500", path="unused.jsonl")
    assert bench.score(Item("m", "q", "\\frac{1}{2}"), result["answer"]) == 1.0


def test_math_cot_sc_votes_for_the_majority():
    agent = ScriptedAgent(["\\boxed{1,000}", "\\boxed{7}", "\\boxed{1000}"])
    result = run_seed(SEEDS_BY_KIND["math"]["cot_sc"], agent, "q")
    assert result["answer"] in ("1,000", "1000")


def test_math_code_seed_runs_the_code():
    agent = ScriptedAgent(["```python\ndef solution():\n    return 6 * 7\n```"])
    assert run_seed(SEEDS_BY_KIND["math"]["code"], agent, "q")["answer"] == "42"


def test_choice_seeds():
    agent = ScriptedAgent(["Thinking... The answer is (C).", "The answer is (C)", "(B)"])
    assert run_seed(SEEDS_BY_KIND["choice"]["cot"], agent, "q")["answer"] == "C"
    assert run_seed(SEEDS_BY_KIND["choice"]["cot_sc"], agent, "q")["answer"] == "C"


def test_qa_seed_takes_the_final_answer_line():
    agent = ScriptedAgent(["The passage says... \nFinal answer: 1999."])
    assert run_seed(SEEDS_BY_KIND["qa"]["cot"], agent, "q")["answer"] == "1999"


def test_generate_repair_fixes_code_that_fails_the_docstring_example():
    task = 'def add(a, b):\n    """Add.\n    >>> add(1, 2)\n    3\n    """\n'
    wrong = "```python\ndef add(a, b):\n    return a - b\n```"
    right = "```python\ndef add(a, b):\n    return a + b\n```"
    agent = ScriptedAgent([wrong, right])
    result = run_seed(SEEDS_BY_KIND["code"]["generate_repair"], agent, task)
    assert "a + b" in result["answer"]
    assert "FAILED" in agent.prompts[1] or "fails these tests" in agent.prompts[1]
    assert len(agent.executed) == 2  # the failing check, then the passing one


def test_generate_repair_uses_mbpp_asserts_in_the_task():
    task = "Write add.\n\nYour code should pass this test:\nassert add(1, 2) == 3"
    agent = ScriptedAgent(["```python\ndef add(a, b):\n    return a + b\n```"])
    result = run_seed(SEEDS_BY_KIND["code"]["generate_repair"], agent, task)
    assert "assert add(1, 2) == 3" in agent.executed[0]
    assert result["answer"].startswith("def add")
