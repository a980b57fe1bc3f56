"""A synthetic arithmetic benchmark generated from a seed: offline, and within reach of the
embedded executor only when the workflow computes with code (see docs/learning-signal.md)."""

from __future__ import annotations

import random
from typing import Any

from w4s.benchmarks.base import Benchmark, Item, register
from w4s.benchmarks.numeric import numbers_match
from w4s.benchmarks.seeds import MATH_COT, MATH_COT_SC

DIRECT = '''\
def solver(agent, task: str) -> dict:
    reply = agent.llm(task + "\\nReply with only the final number.", temperature=0.0)
    return {"answer": reply.strip()}
'''

CODE = '''\
def solver(agent, task: str) -> dict:
    code = agent.llm("Write one line of Python that prints the value of the expression.\\n"
                     + task + "\\nReply with only the code.", temperature=0.0)
    return {"answer": agent.execute_code(code)}
'''


@register("arithmetic")
class Arithmetic(Benchmark):
    """Expressions like `37*9+52`, seeded, with exact integer answers."""

    name = "arithmetic"
    title = "Arithmetic"
    kind = "math"
    synthetic = True
    description = (
        "Evaluate an integer arithmetic expression (synthetic benchmark). "
        "The answer is a single integer."
    )

    def __init__(self, *, size: int = 200, seed: int = 0) -> None:
        self.size = size
        self.seed = seed

    def load(self) -> list[Item]:
        rng = random.Random(self.seed)
        items = []
        for i in range(self.size):
            a, b, c = rng.randint(2, 99), rng.randint(2, 20), rng.randint(1, 99)
            op1, op2 = rng.choice("*+-"), rng.choice("+-")
            expr = f"{a}{op1}{b}{op2}{c}"
            gold = eval(expr, {"__builtins__": {}})  # noqa: S307 - our own digits and operators
            items.append(Item(id=f"arith-{self.seed}-{i}", question=f"What is {expr}?", gold=gold))
        return items

    def score(self, item: Item, answer: Any) -> float:
        return 1.0 if numbers_match(answer, item.gold) else 0.0

    def seed_workflows(self) -> dict[str, str]:
        # measured with the embedded executor on llama.cpp (benchmarks/learning_signal.py,
        # 2026-12-04, items 0-19 of seed 0): `code` 8/20 (8/20 on seed 1 too), `direct`,
        # `cot` and `cot_sc` 0/20; a workflow that extracts the expression and runs it with
        # `agent.execute_code` scores 20/20
        return {"direct": DIRECT, "cot": MATH_COT, "cot_sc": MATH_COT_SC, "code": CODE}
