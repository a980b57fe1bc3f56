"""CPU per executor call of the two `kind: openai` transports, under concurrent callers.

The harness serves every workflow's executor calls from one process, so the client's CPU per
call (GIL-bound) queues the other calls. 32 threads each make sequential calls to the fake
server of `bench_harness.py` (fixed latency, loopback); the figure is this process's CPU
time divided by the calls. Run: .venv/bin/python benchmarks/bench_http_transport.py
"""

from __future__ import annotations

import argparse
import threading
import time

from bench_harness import start_server


def cpu_per_call(model, threads: int, calls: int) -> tuple[float, float]:
    """(ms of CPU per call, wall seconds) for `threads` callers making `calls` calls each."""

    def caller(i: int) -> None:
        for k in range(calls):
            model.complete([{"role": "user", "content": f"question {i} {k} " * 20}],
                           max_tokens=16)

    warm = [threading.Thread(target=caller, args=(i,)) for i in range(threads)]
    for t in warm:  # opens the connections and imports lazily loaded code
        t.start()
    for t in warm:
        t.join()
    workers = [threading.Thread(target=caller, args=(i,)) for i in range(threads)]
    cpu, wall = time.process_time(), time.perf_counter()
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return 1000 * (time.process_time() - cpu) / (threads * calls), time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--calls", type=int, default=6)
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args()

    from w4s.models.openai_compat import OpenAICompatChatModel

    proc, port = start_server(args.latency)
    try:
        results = {}
        for transport in ("http", "openai"):
            model = OpenAICompatChatModel(model="bench-model", api_key="sk-bench-not-a-key",
                                          base_url=f"http://127.0.0.1:{port}/v1",
                                          max_retries=0, transport=transport)
            results[transport], wall = cpu_per_call(model, args.threads, args.calls)
            ideal = args.calls * args.latency
            print(f"transport {transport:6s}: {results[transport]:.2f} ms CPU per call; "
                  f"{args.threads} x {args.calls} calls took {wall:.2f}s vs {ideal:.2f}s ideal")
        print(f"openai / http CPU per call: {results['openai'] / results['http']:.1f}x")
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main()
