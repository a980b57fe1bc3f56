"""m candidate actions from one state on the in-process llama.cpp backend: one request with
llama.cpp's own `n` (what `LlamaCppChatModel.complete(n=m)` sends: the prompt is read once)
against m concurrent single requests (what it sent before 2026-12-04: each reads the prompt).

    .venv/bin/python benchmarks/bench_meta_sampling.py [--m 8] [--max-tokens 256] [--repeat 2]

The state is the arithmetic benchmark's initial state with both seeds in view (about 900
prompt tokens on SmolLM2), its first line changed per call so no prompt is served from
llama.cpp's cache. Both ways run in this process, alternated; compare the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from w4s.benchmarks import get_benchmark
from w4s.config import BackendConfig
from w4s.embedded_model import EMBEDDED_MODEL_ID
from w4s.mdp import State
from w4s.models.llamacpp import LlamaCppChatModel
from w4s.prompts import FailureCase, HistoryEntry


def initial_state(nonce: str = "") -> list[dict[str, str]]:
    """The state's messages; `nonce` goes first, so llama.cpp's prompt cache (which reuses
    a common prefix) cannot serve one timed call from an earlier one."""
    bench = get_benchmark("arithmetic", seed=0, size=20)
    items, seeds = bench.load(), bench.seed_workflows()
    fails = tuple(FailureCase(question=i.question, answer="0", expected=str(i.gold))
                  for i in items[1:4])
    state = State(task_description=bench.description, example_question=items[0].question,
                  example_answer=str(items[0].gold),
                  history=(HistoryEntry(0, 0.2, seeds["code"], fails[:1]),
                           HistoryEntry(0, 0.0, seeds["direct"], fails)))
    messages = state.messages()
    return [{**messages[0], "content": nonce + messages[0]["content"]}, *messages[1:]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--m", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--temperature", type=float, default=0.7)
    args = p.parse_args()
    print(f"# {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}, {args}", flush=True)
    model = LlamaCppChatModel.from_config(BackendConfig(
        kind="llamacpp", model=EMBEDDED_MODEL_ID, max_new_tokens=args.max_tokens))
    model.complete(initial_state(), max_tokens=1)  # load the kernels

    def one_request(prompt: list[dict[str, str]]) -> tuple[int, int]:
        out = model.complete(prompt, n=args.m, temperature=args.temperature,
                             max_tokens=args.max_tokens)
        return out.prompt_tokens, out.completion_tokens

    def single_requests(prompt: list[dict[str, str]]) -> tuple[int, int]:
        with ThreadPoolExecutor(args.m) as pool:
            outs = list(pool.map(lambda _: model.complete(
                prompt, temperature=args.temperature, max_tokens=args.max_tokens),
                range(args.m)))
        return sum(o.prompt_tokens for o in outs), sum(o.completion_tokens for o in outs)

    times: dict[str, list[float]] = {"n": [], "single": []}
    for r in range(args.repeat):
        for name, run in (("n", one_request), ("single", single_requests)):
            prompt = initial_state(f"[{name} {r}] ")  # read afresh by both ways
            t0 = time.perf_counter()
            prompt_tokens, completion_tokens = run(prompt)
            dt = time.perf_counter() - t0
            times[name].append(dt)
            print(json.dumps({"way": name, "repeat": r, "seconds": round(dt, 2),
                              "prompt_tokens": prompt_tokens,
                              "completion_tokens": completion_tokens,
                              "completion_tok_s": round(completion_tokens / dt, 1)}), flush=True)
    ratio = statistics.median(times["single"]) / statistics.median(times["n"])
    print(f"# one n={args.m} request is {ratio:.2f}x faster than {args.m} single requests "
          f"(medians); load average after {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
