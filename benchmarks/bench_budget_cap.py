"""A budget is a cap: a workflow sampling n=64 from 64 threads against an endpoint that bills
like a real one (usage grows with n; each choice up to max_tokens), on loopback only.

Prints what the endpoint billed against `budget_tokens`, the largest single reservation
(the most one call may cross the budget by), and the tokens the meter counted (it must equal
what was billed). The guarantee: billed <= budget + one reservation.
Run: .venv/bin/python benchmarks/bench_budget_cap.py [--budget 5000 --max-tokens 16]
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WORKFLOW = """
import threading
def solver(agent, task):
    def call(i):
        try:
            agent.sample(f"Write a short story number {{i}}.", n=64, max_tokens={max_tokens})
        except Exception:
            pass
    threads = [threading.Thread(target=call, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {{"answer": "done"}}
"""


class Billing:
    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s
        self.calls = self.prompt = self.completion = 0
        self.rng = random.Random(0)
        self.lock = threading.Lock()

    def reply(self, body: dict) -> dict:
        time.sleep(self.latency_s)
        n, cap = body.get("n", 1), body["max_tokens"]
        prompt = sum(len(m["content"]) // 4 + 4 for m in body["messages"])
        with self.lock:
            lengths = [self.rng.randint(1, cap) for _ in range(n)]
            self.calls += 1
            self.prompt += prompt
            self.completion += sum(lengths)
        choices = [{"index": i, "message": {"role": "assistant", "content": "tok " * k},
                    "finish_reason": "stop"} for i, k in enumerate(lengths)]
        return {"choices": choices, "model": body["model"],
                "usage": {"prompt_tokens": prompt, "completion_tokens": sum(lengths)}}


def serve(billing: Billing) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            data = json.dumps(billing.reply(body)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True).start()
    return httpd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget", type=int, default=5000)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args()

    from w4s.benchmarks.base import Benchmark, Item
    from w4s.models.openai_compat import OpenAICompatChatModel
    from w4s.sandbox import Harness
    from w4s.sandbox.proxy import prompt_tokens_bound

    class One(Benchmark):
        name = "one"

        def load(self) -> list[Item]:
            return [Item(id="q0", question="go", gold="done")]

        def score(self, item: Item, answer: object) -> float:
            return float(answer == item.gold)

        def seed_workflows(self) -> dict[str, str]:
            return {}

    billing = Billing(args.latency)
    httpd = serve(billing)
    model = OpenAICompatChatModel(model="gpt-4o-mini", api_key="k", max_retries=0,
                                  base_url=f"http://127.0.0.1:{httpd.server_address[1]}/v1")
    bench = One()
    start = time.perf_counter()
    with Harness(model, budget_tokens=args.budget) as h:
        h.evaluate(WORKFLOW.format(max_tokens=args.max_tokens), bench.load(), bench)
        counted = h.meter.totals
    seconds = time.perf_counter() - start
    httpd.shutdown()
    reservation = 64 * (prompt_tokens_bound(
        [{"role": "user", "content": "Write a short story number 63."}]) + args.max_tokens)
    billed = billing.prompt + billing.completion
    print(json.dumps({
        "budget_tokens": args.budget, "one_reservation": reservation,
        "billed_calls": billing.calls, "billed_tokens": billed,
        "counted_tokens": counted.tokens, "counted_calls": counted.executor_calls,
        "within_cap": billed <= args.budget + reservation, "seconds": round(seconds, 2),
    }, indent=2))


if __name__ == "__main__":
    main()
