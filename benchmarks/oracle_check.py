"""Oracle check: on the real benchmark files, the gold answer (in the form a model would give it)
scores 1.0 on every item, the canonical code solutions pass, and a wrong answer scores 0.

    python benchmarks/oracle_check.py [DATASETS_DIR] [--skip-code] [--limit N]

DATASETS_DIR defaults to ../shared/datasets next to the repository root; when it is absent the
check is skipped. Code files need the sandbox (`w4s.sandbox.run_tests`). Prints a table per
file and the total time of the scoring pass; exits 1 when any oracle expectation fails.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from w4s.benchmarks import Benchmark, Item, get_benchmark
from w4s.benchmarks.choice import LETTERS
from w4s.benchmarks.loading import read_rows
from w4s.benchmarks.mgsm import LANGUAGES
from w4s.benchmarks.numeric import extract_number
from w4s.errors import W4SError

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = ROOT / ".." / "shared" / "datasets"
# Canonical solutions that are broken in the source file itself, reported but not failing.
KNOWN_BAD = {
    "mbpp-630": "the W4S file rewrote the signature to adjac(test_tup) but the body still "
    "uses the original parameters `ele` and `sub` (NameError)",
}
FAR_OFF = "\\boxed{\\frac{7919}{104729}}"  # equals no gold in the files


def _number_text(item: Item) -> str:
    return str(item.gold)


def _number_wrong(item: Item) -> str:
    return str(extract_number(item.gold) + 1)


def _plus_wrong(item: Item) -> str:
    return "42" if item.gold == "None" else str(extract_number(item.gold) + 1)


def _math_wrong(item: Item) -> str:
    value = extract_number(item.gold)
    if value is not None and item.gold.strip().lstrip("-").replace(".", "").isdigit():
        return f"\\boxed{{{value + 1:g}}}"
    return FAR_OFF


def _letter_wrong(item: Item) -> str:
    n = len(item.metadata["options"])
    return LETTERS[(LETTERS.index(item.gold) + 1) % n]


def _stub(item: Item) -> str:
    return f"def {item.metadata['entry_point']}(*args, **kwargs):\n    raise NotImplementedError\n"


def _fenced_full_function(item: Item) -> str:
    return f"Here is the function:\n```python\n{item.question}{item.gold}```\n"


@dataclass
class Check:
    """One data file: how to build its benchmark and the right and wrong answers to feed."""

    file: str
    benchmark: str
    right: Callable[[Item], Any]
    wrong: Callable[[Item], Any]
    options: dict[str, Any] = field(default_factory=dict)
    also_right: Callable[[Item], Any] | None = None  # a second right form (full function)
    raw_right: str | None = None  # a field holding a worked solution that must also score 1

    @property
    def is_code(self) -> bool:
        return self.benchmark in ("humaneval", "mbpp")

    def build(self, root: Path) -> Benchmark:
        return get_benchmark(self.benchmark, path=root / self.file, **self.options)


CHECKS: list[Check] = [
    Check("gsm8k_test.jsonl", "gsm8k", _number_text, _number_wrong, raw_right="answer"),
    Check("gsmhardv2.jsonl", "gsm_hard", _number_text, _number_wrong),
    Check("gsmplus_testmini.jsonl.gz", "gsm_plus", _number_text, _plus_wrong, raw_right="solution"),
    Check("svamp.json", "svamp", _number_text, _number_wrong),
    *(
        Check(f"mgsm/mgsm_{lang}.tsv", "mgsm", _number_text, _number_wrong, {"language": lang})
        for lang in LANGUAGES
    ),
    Check(
        "math500_test.jsonl", "math500", lambda i: f"\\boxed{{{i.gold}}}", _math_wrong,
        raw_right="solution",
    ),
    Check("math_test.jsonl.gz", "math", lambda i: f"\\boxed{{{i.gold}}}", _math_wrong),
    Check("aime24_test.jsonl", "aime", lambda i: str(i.gold), _number_wrong),
    Check("drop_v0_dev.jsonl.gz", "drop", lambda i: i.gold[0], lambda i: "xylophone"),
    Check(
        "mmlu_pro_validation.jsonl", "mmlu_pro", lambda i: i.gold, _letter_wrong,
        raw_right="cot_content",
    ),
    Check("mmlu_pro_test.jsonl.gz", "mmlu_pro", lambda i: i.gold, _letter_wrong),
    Check("HumanEval.jsonl.gz", "humaneval", lambda i: i.gold, _stub, {}, _fenced_full_function),
    Check("humaneval_validate.jsonl", "humaneval", lambda i: i.gold, _stub),
    Check("humaneval_test.jsonl", "humaneval", lambda i: i.gold, _stub),
    Check("mbpp_validate.jsonl", "mbpp", lambda i: i.gold, _stub),
    Check("mbpp_test.jsonl", "mbpp", lambda i: i.gold, _stub),
]


@dataclass
class Outcome:
    file: str
    benchmark: str
    items: int
    right: float
    wrong: float
    seconds: float
    failures: list[str]  # ids whose right answer did not score 1 (or wrong did not score 0)

    @property
    def ok(self) -> bool:
        return not self.failures


def run_check(check: Check, root: Path, limit: int | None) -> Outcome:
    start = time.perf_counter()
    bench = check.build(root)
    items = bench.load()[:limit] if limit else bench.load()
    right = bench.score_many(items, [check.right(i) for i in items])
    wrong = bench.score_many(items, [check.wrong(i) for i in items])
    failures = [
        f"{i.id}: right={r}"
        for i, r in zip(items, right, strict=True)
        if r != 1.0 and i.id not in KNOWN_BAD
    ]
    failures += [f"{i.id}: wrong={w}" for i, w in zip(items, wrong, strict=True) if w != 0.0]
    if check.also_right is not None:
        full = bench.score_many(items, [check.also_right(i) for i in items])
        failures += [f"{i.id}: full={s}" for i, s in zip(items, full, strict=True) if s != 1.0]
    if check.raw_right is not None:  # the file's own worked solution, as a model would write it
        rows = read_rows(root / check.file)[: len(items)]
        worked = bench.score_many(items, [row.data[check.raw_right] for row in rows])
        failures += [
            f"{i.id}: {check.raw_right}={s}" for i, s in zip(items, worked, strict=True) if s != 1.0
        ]
    n = max(1, len(items))
    return Outcome(
        check.file, bench.name, len(items), sum(right) / n, sum(wrong) / n,
        time.perf_counter() - start, failures,
    )


def _ids(check: Check, root: Path, limit: int | None) -> list[str]:
    items = check.build(root).load()
    return [i.id for i in (items[:limit] if limit else items)]


def explain(bench_file: str, root: Path, item_id: str) -> str:
    """Why a canonical code solution fails: the sandbox's error for that item."""
    from w4s.sandbox import run_tests

    check = next(c for c in CHECKS if c.file == bench_file)
    bench = check.build(root)
    item = next(i for i in bench.load() if i.id == item_id)
    result = run_tests([bench.code_test(item, item.gold)], timeout_s=bench.timeout_s)[0]
    return (result.error or "no error: it passes").splitlines()[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="?", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--skip-code", action="store_true", help="skip HumanEval/MBPP")
    parser.add_argument("--limit", type=int, default=None, help="items per file (quick runs)")
    args = parser.parse_args(argv)
    root = args.datasets.resolve()
    if not root.is_dir():
        print(f"skipped: datasets folder {root} not found")
        return 0
    checks = [c for c in CHECKS if not (args.skip_code and c.is_code)]
    print(f"{'file':<28} {'benchmark':<10} {'items':>6} {'gold':>7} {'wrong':>7} {'sec':>7}")
    outcomes, total = [], time.perf_counter()
    for check in checks:
        if not (root / check.file).is_file():
            print(f"{check.file:<28} missing, skipped")
            continue
        try:
            outcome = run_check(check, root, args.limit)
        except W4SError as e:
            print(f"{check.file:<28} {check.benchmark:<10} error: {e}")
            outcomes.append(Outcome(check.file, check.benchmark, 0, 0, 0, 0, [str(e)]))
            continue
        outcomes.append(outcome)
        print(
            f"{outcome.file:<28} {outcome.benchmark:<10} {outcome.items:>6} "
            f"{outcome.right:>7.4f} {outcome.wrong:>7.4f} {outcome.seconds:>7.1f}"
        )
        for item_id in KNOWN_BAD.keys() & set(_ids(check, root, args.limit)):
            print(f"    known data defect: {item_id}: {KNOWN_BAD[item_id]}")
        for failure in outcome.failures[:10]:
            item_id = failure.split(":")[0]
            why = explain(check.file, root, item_id) if check.is_code else ""
            print(f"    not as expected: {failure} {why}".rstrip())
        if len(outcome.failures) > 10:
            print(f"    ... and {len(outcome.failures) - 10} more")
    elapsed = time.perf_counter() - total
    bad = [o for o in outcomes if not o.ok]
    print(f"scored {sum(o.items for o in outcomes)} items in {len(outcomes)} files in "
          f"{elapsed:.1f}s; {len(bad)} file(s) with unexpected scores")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
