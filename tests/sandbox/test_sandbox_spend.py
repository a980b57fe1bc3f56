"""A budget is a cap, bad calls are the workflow's, spend is counted where it is spent, and
the cache knows which endpoint answered (issue 14, items 5, 6 and 11).

The endpoints here are real HTTP servers on 127.0.0.1 that bill like real ones (usage that
grows with n, up to max_tokens per choice), reached through the real OpenAI-compatible
backend, so what is asserted is what a server would have billed.
"""

from __future__ import annotations

import json
import math
import random
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fake_openai import FakeOpenAIEndpoint, chat_completion

from w4s.cost import Meter, Spend
from w4s.errors import BudgetExceeded
from w4s.models.openai_compat import OpenAICompatChatModel
from w4s.sandbox import Harness, MemoryCallCache, SandboxSettings
from w4s.sandbox.proxy import MAX_PROMPT_CHARS, prompt_tokens_bound


class BillingEndpoint:
    """Bills like a real endpoint: prompt tokens from the prompt's length, each choice up
    to max_tokens, usage summed over the n choices; `latency_s` per request. `billed` is
    what it charged in all."""

    def __init__(self, latency_s: float = 0.2, seed: int = 0) -> None:
        self.latency_s = latency_s
        self.billed = Spend()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.server = FakeOpenAIEndpoint(self._reply)

    def _reply(self, body: dict) -> tuple[int, object]:
        time.sleep(self.latency_s)
        n, cap = body.get("n", 1), body["max_tokens"]
        prompt = sum(math.ceil(len(m["content"]) / 4) + 4 for m in body["messages"])
        with self._lock:
            lengths = [self._rng.randint(1, cap) for _ in range(n)]
            self.billed = self.billed + Spend(1, prompt, sum(lengths))
        texts = [" ".join(["tok"] * k) for k in lengths]
        usage = {"prompt_tokens": prompt, "completion_tokens": sum(lengths)}
        return 200, chat_completion(body, texts, usage)

    def model(self, name: str = "gpt-4o-mini", **options) -> OpenAICompatChatModel:
        return OpenAICompatChatModel(model=name, base_url=self.server.url, api_key="k",
                                     max_retries=0, timeout_s=30, **options)


@pytest.fixture
def billing():
    endpoint = BillingEndpoint()
    yield endpoint
    endpoint.server.stop()


FLOOD = """
import threading
def solver(agent, task):
    out = []
    def call(i):
        try:
            agent.sample(f"Write a short story number {i}.", n=64, max_tokens=16)
            out.append("ok")
        except Exception as e:
            out.append(str(e))
    threads = [threading.Thread(target=call, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"answer": sorted(set(out))}
"""


def test_a_budget_is_a_cap_under_64_threads_sampling_n64(billing, make_bench):
    budget = 5_000
    messages = [{"role": "user", "content": "Write a short story number 10."}]
    one_reservation = (prompt_tokens_bound(messages) + 16) * 64
    bench = make_bench(1)
    settings = SandboxSettings(item_timeout_s=60)
    with Harness(billing.model(), settings=settings, budget_tokens=budget) as h:
        out = h.evaluate(FLOOD, bench.load(), bench).outcomes[0]
        meter = h.meter.totals
    assert billing.billed.executor_calls >= 2  # it spent, and
    assert billing.billed.tokens <= budget + one_reservation  # at most one call crossed
    assert out.error == "budget exceeded"
    # every token billed was counted, on the meter and on the item
    assert (meter.prompt_tokens, meter.completion_tokens) == (
        billing.billed.prompt_tokens, billing.billed.completion_tokens)
    assert out.executor_calls == billing.billed.executor_calls


def test_a_usd_budget_is_a_cap_too(billing, make_bench):
    budget_usd = 0.002  # gpt-4o-mini: 0.15 / 0.60 USD per 1M tokens
    bench = make_bench(1)
    with Harness(billing.model(), budget_usd=budget_usd) as h:
        h.evaluate(FLOOD, bench.load(), bench)
    billed = (billing.billed.prompt_tokens * 0.15 + billing.billed.completion_tokens * 0.6) / 1e6
    one_reservation = ((prompt_tokens_bound([{"role": "user", "content": "x" * 30}]) * 0.15
                        + 16 * 0.6) * 64 / 1e6)
    assert 0 < billed <= budget_usd + one_reservation


def test_meter_reservations_wait_then_go_alone_and_refuse_once_spent():
    m = Meter(budget_tokens=100)
    m.reserve(60, None)
    gone = threading.Event()

    def second() -> None:
        m.reserve(60, None)  # would cross beside the first: waits for it to settle
        gone.set()

    t = threading.Thread(target=second)
    t.start()
    assert not gone.wait(0.3)
    m.settle(60, None, Spend(executor_calls=1, prompt_tokens=10, completion_tokens=20))
    assert gone.wait(5)  # alone now: may cross (by at most its own reservation)
    t.join()
    m.settle(60, None, Spend(executor_calls=1, prompt_tokens=10, completion_tokens=60))
    assert m.exceeded and m.totals.tokens == 100
    with pytest.raises(BudgetExceeded):
        m.reserve(1, None)


# Non-finite numbers (NaN, Infinity, 1e400) never reach the proxy: they make the frame
# malformed, which ends the item at once (test_sandbox_neighbours).
BAD_CALLS = {
    "negative max_tokens": {"max_tokens": -5},
    "float max_tokens": {"max_tokens": 3.5},
    "huge max_tokens": {"max_tokens": 10**9},
    "n zero": {"n": 0},
    "n as text": {"n": "2"},
    "tool role": {"messages": [{"role": "tool", "content": "hi"}]},
    "function role": {"messages": [{"role": "function", "content": "hi"}]},
    "list content": {"messages": [{"role": "user", "content": ["hi"]}]},
    "lone surrogate": {"messages": [{"role": "user", "content": "\ud800"}]},
    "extra message key": {"messages": [{"role": "user", "content": "hi", "name": "x"}]},
    "too many messages": {"messages": [{"role": "user", "content": "hi"}] * 65},
    "huge prompt": {"messages": "HUGE"},  # built in the worker: MAX_PROMPT_CHARS + 1
    "unknown key": {"logit_bias": {"1": 100}},
    "json_mode as text": {"json_mode": "yes"},
}

RAW_CALLS = """
import json
CASES = json.loads(%r)
def solver(agent, task):
    out = {}
    for name, patch in CASES.items():
        frame = {"op": "call", "messages": [{"role": "user", "content": "hi"}], "n": 1,
                 "temperature": 0.0, "max_tokens": 8, "json_mode": False}
        frame.update(patch)
        if frame["messages"] == "HUGE":
            frame["messages"] = [{"role": "user", "content": "x" * (%d + 1)}]
        reply = agent._channel.request(frame)
        out[name] = reply.get("error", "SENT")
    return {"answer": out}
"""


def test_calls_beyond_the_documented_caps_are_the_workflows_error(billing, make_bench):
    cases = json.dumps(BAD_CALLS, allow_nan=True)
    bench = make_bench(1)
    with Harness(billing.model()) as h:
        out = h.evaluate(RAW_CALLS % (cases, MAX_PROMPT_CHARS), bench.load(), bench).outcomes[0]
    assert out.infra_error is None and out.error is None, out.error
    errors = bench.scored[-1]
    assert set(errors) == set(BAD_CALLS)
    sent = [name for name, error in errors.items() if not error.startswith("bad executor")]
    assert sent == [], errors
    assert billing.server.requests == []  # nothing reached the endpoint


def test_a_timed_out_items_calls_are_cancelled_and_their_spend_counted(make_bench):
    """The endpoint never answers; the item times out: its calls are closed (the server
    sees the client go) and each is charged its reservation, not 0."""
    server = HangingEndpoint()
    model = OpenAICompatChatModel(model="gpt-4o-mini", base_url=server.url, api_key="k",
                                  max_retries=0, timeout_s=60)
    code = """
import threading
def solver(agent, task):
    threads = [threading.Thread(target=agent.llm, args=(f"hello {i}",),
                                kwargs={"max_tokens": 50}) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"answer": "never"}
"""
    bench = make_bench(1)
    settings = SandboxSettings(item_timeout_s=2.0)
    try:
        with Harness(model, settings=settings) as h:
            started = time.monotonic()
            out = h.evaluate(code, bench.load(), bench).outcomes[0]
            ended = time.monotonic()
            assert out.error.startswith("timeout")
            assert out.executor_calls == 3
            assert out.completion_tokens == 3 * 50  # each charged its reservation
            assert out.prompt_tokens == 3 * prompt_tokens_bound(
                [{"role": "user", "content": "hello 0"}])
            assert h.meter.totals.executor_calls == 3
        assert len(server.requests) == 3
        # every request was closed by the client within a few seconds of the timeout,
        # long before the backend's own 60 s timeout
        assert server.disconnected.wait(10) and len(server.gone) == 3
        assert max(server.gone) - started < 10 and ended - started < 10
    finally:
        server.stop()


class HangingEndpoint:
    """Reads a request, never answers, and notes when the client closes the connection."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.gone: list[float] = []
        self.disconnected = threading.Event()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests.append(body)
                sock: socket.socket = self.connection
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    ready, _, _ = select.select([sock], [], [], 0.05)
                    if ready and not sock.recv(1, socket.MSG_PEEK):
                        endpoint.gone.append(time.monotonic())
                        if len(endpoint.gone) == len(endpoint.requests):
                            endpoint.disconnected.set()
                        break
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.handle_error = lambda *args: None
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True).start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


ASK = """
def solver(agent, task):
    return {"answer": agent.llm("ECHO " + task)}
"""


def test_the_same_model_name_at_another_base_url_reuses_no_call_or_outcome(make_bench):
    """A dead or different server behind the same name must not answer from the cache."""
    first, second = BillingEndpoint(0.0), BillingEndpoint(0.0)
    cache = MemoryCallCache()
    bench = make_bench(3)
    try:
        with Harness(first.model("gpt-4o-mini"), cache=cache) as h:
            h.evaluate(ASK, bench.load(), bench)
        with Harness(first.model("gpt-4o-mini"), cache=cache) as h:  # same endpoint: reused
            again = h.evaluate(ASK, bench.load(), bench)
        assert again.reused == 3 and len(first.server.requests) == 3
        with Harness(second.model("gpt-4o-mini"), cache=cache) as h:
            other = h.evaluate(ASK, bench.load(), bench)
        assert other.reused == 0 and other.cache_hits == 0
        assert len(second.server.requests) == 3
        second.server.stop()  # a dead endpoint under the same name: lost, never "answered"
        with Harness(OpenAICompatChatModel(model="gpt-4o-mini", base_url="http://127.0.0.1:9/v1",
                                           api_key="k", max_retries=0), cache=cache) as h:
            dead = h.evaluate(ASK, bench.load(), bench)
        assert dead.reused == 0 and dead.infra_errors == 3
    finally:
        first.server.stop()
        second.server.stop()


def test_a_call_that_cannot_be_cancelled_is_charged_once_when_its_item_ends(fake_cls,
                                                                            make_bench):
    """A backend with no way to abort (an in-process model) keeps generating: the ended
    item is charged the call's reservation, and its late reply adds nothing more."""
    from w4s.sandbox.proxy import DEFAULT_MAX_TOKENS

    executor = fake_cls(hang_s=2.5)
    code = "def solver(agent, task):\n    return {'answer': agent.llm('HANG ' + task)}\n"
    bench = make_bench(1)
    with Harness(executor, settings=SandboxSettings(item_timeout_s=1.0)) as h:
        out = h.evaluate(code, bench.load(), bench).outcomes[0]
        assert out.error.startswith("timeout")
        bound = prompt_tokens_bound([{"role": "user", "content": "HANG answer-0"}])
        assert (out.executor_calls, out.prompt_tokens, out.completion_tokens) == (
            1, bound, DEFAULT_MAX_TOKENS)
        time.sleep(3.0)  # the call returns on its own meanwhile
        assert executor.calls == 1
        assert h.meter.totals.tokens == bound + DEFAULT_MAX_TOKENS  # not counted twice
        assert h.meter.totals.executor_calls == 1
