"""MBPP (sanitized, 427 tasks as split by W4S into 86 validation / 341 test), pass@1.

Reads the W4S files (prompt with the signature, `test` defining `check()`), the original
sanitized file (`prompt`, `test_list`) or the original full file (`text`, `test_list`). The
first official assert is shown in the task as the public test, as in the MBPP paper's prompt.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from w4s.benchmarks.base import Item, register
from w4s.benchmarks.code import CodeBenchmark, defines, extract_code
from w4s.benchmarks.loading import FieldError, Row, read_rows

if TYPE_CHECKING:
    from w4s.sandbox.programs import CodeTest

W4S_FILES = ("mbpp_validate.jsonl", "mbpp_test.jsonl")
_SIGNATURE = re.compile(r"^def\s+\w+\s*\(.*$", re.MULTILINE)


def _entry_point(row: Mapping[str, Any], tests: list[str]) -> str:
    if "entry_point" in row:
        return str(row["entry_point"])
    for name in re.findall(r"^def\s+(\w+)", str(row["code"]), re.MULTILINE):
        if re.search(rf"\b{name}\s*\(", tests[0]):
            return name
    raise FieldError("code", "defines no function that the first test calls")


@register("mbpp")
class MBPP(CodeBenchmark):
    name = "mbpp"
    title = "MBPP"
    default_file = " + ".join(W4S_FILES)
    hub_id, hub_config = "google-research-datasets/mbpp", "sanitized"
    default_val_size = 86
    description = (
        "Write a Python function for a short task description; the task shows its name and "
        "one example test. The answer is the complete Python function (with any imports it "
        "needs); it is run against hidden unit tests."
    )

    def rows(self) -> Iterator[Row]:
        if self.path is not None or self.hub or self.split_files:
            yield from super().rows()
            return
        root = self.resolve(None, self.default_file).parent  # raises when no data dir is set
        for name in W4S_FILES:
            yield from read_rows(root / name)

    def make_item(self, index: int, row: Mapping[str, Any]) -> Item:
        tests = [str(t) for t in row["test_list"]]
        if not tests:
            raise FieldError("test_list", "is empty")
        entry = _entry_point(row, tests)
        test = str(row["test"]) if "test" in row else (
            "def check():\n" + "".join(f"    {t}\n" for t in tests)
        )
        imports = [str(i) for i in row.get("test_imports") or []]
        if row.get("test_setup_code"):
            imports.append(str(row["test_setup_code"]))
        prompt = str(row["prompt"] if "prompt" in row or "text" not in row else row["text"])
        question = f"{prompt.rstrip()}\n\nYour code should pass this test:\n{tests[0]}"
        signature = _SIGNATURE.findall(prompt)
        return Item(
            id=f"mbpp-{row.get('task_id', index)}",
            question=question,
            gold=str(row["code"]),
            metadata={
                "entry_point": entry,
                "test": test,
                "imports": "\n".join(imports),
                "signature": signature[-1].rstrip() if signature else "",
                "public_tests": tests[:1],
            },
        )

    def code_test(self, item: Item, answer: Any) -> CodeTest:
        """The test imports and setup code run on both sides (a solution may rely on
        them, as in the original harness); the asserts call the solution's functions."""
        from w4s.sandbox.programs import CodeTest

        entry, meta = item.metadata["entry_point"], item.metadata
        code = extract_code(answer, entry)
        if not defines(code, entry) and meta["signature"]:  # a body completing the signature
            code = f"{meta['signature']}\n{code}"
        return CodeTest(solution=f"{meta['imports']}\n{code}\n", test=meta["test"],
                        entry_point=entry, setup=meta["imports"], check_arg=False)
