"""Items lost to infrastructure (the executor down, a failed worker, a harness bug) are marked
`infra_error`, score 0, are not failures shown to the meta-agent and are never reused;
a request the executor rejects as the workflow's fault stays an ordinary workflow error.

The executor here is the real OpenAI-compatible backend against a local HTTP server."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from fake_openai import FakeOpenAIEndpoint, chat_completion

from w4s.models.openai_compat import OpenAICompatChatModel
from w4s.sandbox import Harness, MemoryCallCache, SandboxSettings

PLAIN = "def solver(agent, task):\n    return {'answer': agent.llm('ECHO: ' + task)}\n"
CATCHING = """
def solver(agent, task):
    try:
        return {"answer": agent.llm("ECHO: " + task)}
    except Exception:  # the workflow swallows the executor's failure and answers anyway
        return {"answer": "gave up"}
"""
SETTINGS = SandboxSettings(concurrency=2, item_timeout_s=10.0)


class ChatServer(FakeOpenAIEndpoint):
    """/v1/chat/completions on 127.0.0.1, one connection per request (no keep-alive).

    mode "ok": echoes what follows "ECHO: "; after `stop_after` answers it stops listening
    (the request that finds it stopping gets its connection dropped). "status": answers
    every request with `status`. "hang": never answers until the test ends.
    """

    def __init__(self, mode: str = "ok", *, stop_after: int | None = None,
                 status: int = 200, port: int = 0) -> None:
        self.mode, self.stop_after, self.status = mode, stop_after, status
        self.answered = 0
        self.release = threading.Event()
        self._lock = threading.Lock()
        super().__init__(self.serve, port=port)

    def serve(self, body: dict) -> tuple[int, dict] | None:
        with self._lock:
            stopping = self.stop_after is not None and self.answered >= self.stop_after
            if not stopping and self.mode == "ok":
                self.answered += 1
        if stopping:
            threading.Thread(target=self.stop, daemon=True).start()
            return None  # dropped without a reply, as a server going down does
        if self.mode == "hang":
            self.release.wait(30)
            return None
        if self.mode == "status":
            return self.status, {"error": {"message": "prompt is too long"}}
        text = body["messages"][-1]["content"].removeprefix("ECHO: ")
        return 200, chat_completion(body, [text], usage={"prompt_tokens": 3,
                                                         "completion_tokens": 1})

    def executor(self, **options: object) -> OpenAICompatChatModel:
        kwargs = {"max_retries": 1, "timeout_s": 30.0, "backoff_s": 0.01, "max_backoff_s": 0.02}
        kwargs.update(options)
        return OpenAICompatChatModel(model="local-model", base_url=self.url, api_key="sk-test",
                                     **kwargs)


@pytest.fixture
def servers() -> Iterator[list[ChatServer]]:
    made: list[ChatServer] = []
    yield made
    for s in made:
        s.release.set()
        s.stop()


def start(servers: list[ChatServer], *args: object, **kwargs: object) -> ChatServer:
    server = ChatServer(*args, **kwargs)
    servers.append(server)
    return server


@pytest.mark.parametrize("code", [PLAIN, CATCHING], ids=["plain", "catching"])
def test_executor_stopped_mid_evaluation(servers, make_bench, code):
    bench = make_bench(8)
    server = start(servers, "ok", stop_after=3)
    cache = MemoryCallCache()
    with Harness(server.executor(), settings=SETTINGS, cache=cache) as h:
        result = h.evaluate(code, bench.load(), bench)
    ok = [o for o in result.outcomes if o.infra_error is None]
    lost = [o for o in result.outcomes if o.infra_error is not None]
    assert len(ok) == 3 and all(o.score == 1.0 and o.error is None for o in ok), ok
    assert len(lost) == 5 and result.infra_errors == 5
    for o in lost:
        assert o.score == 0.0
        assert o.infra_error.startswith("executor unavailable: "), o.infra_error
        assert "\n" not in o.infra_error
        assert o.error is not None  # the workflow's error, or the reason when it had none
    if code == CATCHING:  # the workflow answered anyway; the item is still lost, not wrong
        assert all(o.answer == "gave up" for o in lost)
    assert result.failures == [], "items lost to the executor are not the workflow's failures"
    assert result.accuracy == pytest.approx(3 / 8)  # the mean over all items, as before

    # nothing lost was recorded: with the executor back (at the same address: the cache
    # keys on the endpoint), those items run again
    server.stop()
    back = start(servers, "ok", port=server.port)
    with Harness(back.executor(), settings=SETTINGS, cache=cache) as h:
        again = h.evaluate(code, bench.load(), bench)
    assert again.accuracy == 1.0 and again.infra_errors == 0
    assert sorted(o.item_id for o in again.outcomes if not o.reused) == sorted(
        o.item_id for o in lost)
    assert back.answered == 5


@pytest.mark.parametrize(("status", "infra"), [(400, False), (413, False), (503, True),
                                               (429, True), (401, True)])
def test_status_codes_split_workflow_errors_from_lost_items(servers, make_bench, status, infra):
    bench = make_bench(2)
    server = start(servers, "status", status=status)
    with Harness(server.executor(), settings=SETTINGS, cache=MemoryCallCache()) as h:
        plain, catching = h.evaluate_many([PLAIN, CATCHING], bench.load(), bench)
    assert all(f"({status})" in o.error or f"HTTP {status}" in o.error for o in plain.outcomes)
    assert [o.answer for o in catching.outcomes] == ["gave up", "gave up"]
    for result in (plain, catching):
        assert result.accuracy == 0.0
        if infra:
            assert result.infra_errors == 2 and result.failures == []
        else:  # the request's own fault (e.g. a prompt too long): an ordinary wrong answer
            assert result.infra_errors == 0 and len(result.failures) == 2
            assert all(o.infra_error is None for o in result.outcomes)
    if not infra:
        assert catching.outcomes[0].error is None


def test_a_call_left_unanswered_until_the_item_times_out(servers, make_bench):
    bench = make_bench(1)
    server = start(servers, "hang")
    settings = SandboxSettings(concurrency=1, item_timeout_s=2.0)
    with Harness(server.executor(), settings=settings, cache=MemoryCallCache()) as h:
        out = h.evaluate(PLAIN, bench.load(), bench).outcomes[0]
    assert out.error == "timeout after 2s"
    assert out.infra_error is not None and "unanswered" in out.infra_error, out.infra_error


def test_a_slow_workflow_timing_out_is_its_own_fault(make_bench, fake):
    bench = make_bench(1)
    slow = "import time\ndef solver(agent, task):\n    agent.llm('ECHO: x')\n    time.sleep(30)\n"
    with Harness(fake, settings=SandboxSettings(item_timeout_s=1.0)) as h:
        result = h.evaluate(slow, bench.load(), bench)
    assert result.outcomes[0].error == "timeout after 1s"
    assert result.infra_errors == 0 and len(result.failures) == 1


def test_a_harness_bug_and_a_failed_worker_are_infrastructure(fake, make_bench, monkeypatch):
    from w4s.sandbox.pool import WorkerDied, WorkerPool

    bench = make_bench(2)
    cache = MemoryCallCache()
    with Harness(fake, cache=cache) as h:
        monkeypatch.setattr(h, "_execute", lambda *a: 1 / 0)
        bug = h.evaluate(PLAIN, bench.load(), bench)
        monkeypatch.undo()

        class Dead:
            def __enter__(self):
                raise WorkerDied("zygote gone")

            def __exit__(self, *exc):
                return False

        monkeypatch.setattr(WorkerPool, "worker", lambda self: Dead())
        died = h.evaluate(PLAIN, bench.load(), bench)
        monkeypatch.undo()
        fine = h.evaluate(PLAIN, bench.load(), bench)
    assert bug.infra_errors == 2 and bug.failures == []
    assert bug.outcomes[0].infra_error.startswith("internal harness error: ZeroDivisionError")
    assert died.infra_errors == 2
    assert died.outcomes[0].infra_error == "sandbox worker failed: zygote gone"
    assert fine.accuracy == 1.0 and fine.reused == 0  # neither was recorded
