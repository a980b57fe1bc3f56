"""Tokens/s of the local backends on the embedded SmolLM2, in one process so ratios are fair.

    python benchmarks/bench_backends.py [--concurrency 8] [--max-tokens 64] [--skip-llamacpp]

For each backend: load time, greedy decode speed of one request at a time, and total speed
when `concurrency` threads call `complete` at once (the sandbox harness's pattern). The
numbers depend on what else the machine runs; compare ratios from the same run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import time
from collections.abc import Callable

from w4s.embedded_model import EMBEDDED_MODEL_ID, embedded_gguf_path
from w4s.protocols import ChatModel

TOPICS = ["a cat", "the sea", "a robot", "a library", "winter", "a train", "a garden", "stars"]


def _ask(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Write a long story about {TOPICS[i % len(TOPICS)]}."}]


def _single(model: ChatModel, requests: int, max_tokens: int) -> float:
    tokens, start = 0, time.perf_counter()
    for i in range(requests):
        tokens += model.complete(_ask(i), max_tokens=max_tokens).completion_tokens
    return tokens / (time.perf_counter() - start)


def _concurrent(model: ChatModel, threads: int, max_tokens: int) -> float:
    counts = [0] * threads
    barrier = threading.Barrier(threads)

    def worker(i: int) -> None:
        barrier.wait()
        counts[i] = model.complete(_ask(i), max_tokens=max_tokens).completion_tokens

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


def _measure(name: str, load: Callable[[], ChatModel], args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    model = load()
    load_s = time.perf_counter() - start
    model.complete(_ask(0), max_tokens=4)  # warm up kernels and caches
    single = _single(model, args.requests, args.max_tokens)
    batched = _concurrent(model, args.concurrency, args.max_tokens)
    row = {
        "backend": name,
        "load_s": round(load_s, 2),
        "single_tok_s": round(single, 1),
        f"concurrent{args.concurrency}_tok_s": round(batched, 1),
        "batching_speedup": round(batched / single, 2),
    }
    stats = getattr(model, "stats", None)
    if stats is not None:
        row["largest_batch"] = stats.largest_batch
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--requests", type=int, default=3, help="sequential requests timed")
    parser.add_argument("--skip-llamacpp", action="store_true")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="compute threads of both backends (default: all cpus); 1 wins on a busy machine",
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(f"# {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}, {args}", flush=True)

    def load_transformers() -> ChatModel:
        import torch

        from w4s.models.embedded import load_embedded_chat_model

        if args.threads:
            torch.set_num_threads(args.threads)

        return load_embedded_chat_model(max_new_tokens=args.max_tokens)

    rows = [_measure("transformers", load_transformers, args)]
    if not args.skip_llamacpp:
        from w4s.models.llamacpp import LlamaCppChatModel

        def load_llamacpp() -> ChatModel:
            return LlamaCppChatModel(
                embedded_gguf_path(),
                model_id=EMBEDDED_MODEL_ID,
                max_new_tokens=args.max_tokens,
                n_threads=args.threads,
            )

        rows.append(_measure("llamacpp", load_llamacpp, args))
        (hf, cpp), key = rows, f"concurrent{args.concurrency}_tok_s"
        single, together = cpp["single_tok_s"] / hf["single_tok_s"], cpp[key] / hf[key]
        print(f"# llamacpp / transformers: single {single:.1f}x, concurrent {together:.1f}x")
    print(f"# load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
