"""Time a full scoring pass (no model) over every benchmark file, with answers shaped like
model replies: reasoning text ending in the final answer (or the canonical code).

    python benchmarks/bench_scoring.py [DATASETS_DIR] [--skip-code]

Target: the whole pass in under 5 minutes on a 2-core machine. Code files need the sandbox.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from oracle_check import CHECKS, DEFAULT_DIR, Check

from w4s.benchmarks import Item

REASONING = "Let's think step by step. First 3 + 4 = 7, then 7 * 2 = 14 apples, minus 1,000. "


def chatty(check: Check, item: Item) -> str:
    """A reply as a model would write it; code answers stay the canonical solution."""
    if check.is_code:
        return item.gold
    if check.benchmark in ("math", "math500"):
        return f"{REASONING}Therefore the answer is $\\boxed{{{item.gold}}}$."
    if check.benchmark == "mmlu_pro":
        return f"{REASONING}Option (A) does not fit. The answer is ({item.gold})."
    if check.benchmark == "drop":
        return f"{REASONING}Final answer: {item.gold[0]}"
    return f"{REASONING}The answer is {item.gold}."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="?", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--skip-code", action="store_true")
    args = parser.parse_args(argv)
    root = args.datasets.resolve()
    if not root.is_dir():
        print(f"skipped: datasets folder {root} not found")
        return 0
    print(f"{'file':<28} {'items':>6} {'mean':>7} {'load s':>7} {'score s':>8} {'items/s':>8}")
    total, count = time.perf_counter(), 0
    for check in CHECKS:
        if (args.skip_code and check.is_code) or not (root / check.file).is_file():
            continue
        start = time.perf_counter()
        bench = check.build(root)
        items = bench.load()
        loaded = time.perf_counter()
        scores = bench.score_many(items, [chatty(check, i) for i in items])
        done = time.perf_counter()
        count += len(items)
        print(
            f"{check.file:<28} {len(items):>6} {sum(scores) / len(items):>7.4f} "
            f"{loaded - start:>7.2f} {done - loaded:>8.2f} {len(items) / (done - loaded):>8.0f}"
        )
    print(f"full scoring pass: {count} items in {time.perf_counter() - total:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
