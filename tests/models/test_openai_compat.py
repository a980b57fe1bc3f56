"""OpenAICompatChatModel against a scripted HTTP server on 127.0.0.1 (no network).

Every server test runs on both transports: `http` (http.client) and `openai` (the client).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from fake_openai import FakeOpenAIEndpoint, chat_completion

from w4s.config import BackendConfig
from w4s.errors import BackendError, ConfigError
from w4s.models.factory import build_chat_model
from w4s.models.openai_compat import OpenAICompatChatModel

MESSAGES = [{"role": "user", "content": "What is 2+3?"}]


class FakeServer(FakeOpenAIEndpoint):
    """Answers each POST with the next scripted (status, body-or-callable), then with a
    chat_completion for the request."""

    def __init__(self, transport: str = "http") -> None:
        self.transport = transport
        self.script: list[tuple[int, object]] = []
        super().__init__(self._next)

    def _next(self, request: dict) -> tuple[int, object]:
        status, reply = self.script.pop(0) if self.script else (200, chat_completion)
        return status, reply(request) if callable(reply) else reply

    def model(self, **kwargs: object) -> OpenAICompatChatModel:
        options = {"max_retries": 3, "timeout_s": 5.0, "backoff_s": 0.001, "max_backoff_s": 0.01,
                   "transport": self.transport}
        options.update(kwargs)
        return OpenAICompatChatModel(
            model="m", base_url=self.url, api_key="sk-test", api_key_env="TEST_KEY", **options
        )


@pytest.fixture(params=["http", "openai"])
def server(request: pytest.FixtureRequest) -> Iterator[FakeServer]:
    fake = FakeServer(request.param)
    yield fake
    fake.stop()


def error(status: int, message: str) -> tuple[int, dict]:
    return status, {"error": {"message": message, "type": "x", "code": status}}


def test_success_reports_usage_and_sends_the_request(server: FakeServer) -> None:
    out = server.model(max_new_tokens=100).complete(MESSAGES, max_tokens=500, temperature=0.3)
    assert out.texts == ("reply 0",)
    assert (out.prompt_tokens, out.completion_tokens) == (11, 3)
    assert out.model == "m" and out.extra["retries"] == 0
    sent = server.requests[0]
    assert sent["messages"] == MESSAGES and sent["model"] == "m"
    assert sent["max_tokens"] == 100, "max_tokens was not capped at max_new_tokens"
    assert sent["temperature"] == 0.3
    assert "response_format" not in sent and "n" not in sent
    assert server.headers[0]["authorization"] == "Bearer sk-test"


def test_n_in_one_call_and_json_mode_and_seed(server: FakeServer) -> None:
    out = server.model().complete(MESSAGES, n=3, json_mode=True, seed=5)
    assert out.texts == ("reply 0", "reply 1", "reply 2")
    assert out.completion_tokens == 9 and len(server.requests) == 1
    assert server.requests[0]["n"] == 3
    assert server.requests[0]["response_format"] == {"type": "json_object"}
    assert server.requests[0]["seed"] == 5


def test_n_falls_back_to_single_calls_when_rejected(server: FakeServer) -> None:
    server.script = [error(400, "n must be 1")]
    model = server.model()
    out = model.complete(MESSAGES, n=3, seed=10)
    assert len(out.texts) == 3
    assert [r.get("n") for r in server.requests] == [3, None, None, None]
    assert [r["seed"] for r in server.requests[1:]] == [10, 11, 12]
    model.complete(MESSAGES, n=2)
    assert "n" not in server.requests[-1], "n>1 was tried again after the server rejected it"


def test_server_that_ignores_n_is_topped_up(server: FakeServer) -> None:
    server.script = [(200, lambda req: chat_completion(req, ["only one"]))]
    out = server.model().complete(MESSAGES, n=2)
    assert out.texts == ("only one", "reply 0")
    assert out.prompt_tokens == 22 and out.extra["calls"] == 2


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"id": "x"}, "malformed chat completion"),
        ({"choices": []}, "no choices returned"),
        ({"choices": [{"message": {"content": ["a", "list"]}}]}, "non-text message content"),
        ([1, 2], "malformed chat completion"),
    ],
)
def test_malformed_200_reply_is_a_one_line_backend_error(
    server: FakeServer, body: object, problem: str
) -> None:
    server.script = [(200, body)]
    with pytest.raises(BackendError, match=problem) as info:
        server.model().complete(MESSAGES)
    assert "\n" not in str(info.value) and server.url in str(info.value)


def test_missing_usage_and_null_content_count_as_zero_and_empty(server: FakeServer) -> None:
    choice = {"message": {"content": None}, "finish_reason": "length"}
    server.script = [(200, {"choices": [choice]})]
    out = server.model().complete(MESSAGES)
    assert out.texts == ("",) and (out.prompt_tokens, out.completion_tokens) == (0, 0)
    assert out.extra["finish_reasons"] == ["length"]


def test_429_is_retried_and_counted(server: FakeServer) -> None:
    server.script = [error(429, "slow down"), error(503, "busy")]
    out = server.model().complete(MESSAGES)
    assert out.text == "reply 0" and out.extra["retries"] == 2
    assert len(server.requests) == 3


def test_500_forever_gives_up_after_max_retries(server: FakeServer) -> None:
    server.script = [error(500, "boom")] * 10
    with pytest.raises(BackendError, match=r"^\[m\] HTTP 500 at .* after 3 attempts") as info:
        server.model(max_retries=2).complete(MESSAGES)
    assert len(server.requests) == 3
    assert "\n" not in str(info.value)


def test_401_fails_at_once_with_one_line(server: FakeServer) -> None:
    server.script = [error(401, "bad key")]
    with pytest.raises(BackendError) as info:
        server.model().complete(MESSAGES)
    assert str(info.value) == (f"[m] authentication failed (401) at {server.url}/: check TEST_KEY")
    assert len(server.requests) == 1


def test_404_names_model_and_base_url(server: FakeServer) -> None:
    server.script = [error(404, "no such model")]
    with pytest.raises(BackendError, match=r"not found \(404\).*`model` 'm' and `base_url`"):
        server.model().complete(MESSAGES)
    assert len(server.requests) == 1


def test_timeout_is_retried_then_reported(server: FakeServer) -> None:
    def slow(request: dict) -> dict:
        time.sleep(0.6)
        return chat_completion(request)

    server.script = [(200, slow), (200, slow)]
    with pytest.raises(BackendError, match=r"^\[m\] timed out at .* after 2 attempts"):
        server.model(timeout_s=0.2, max_retries=1).complete(MESSAGES)
    assert len(server.requests) == 2


@pytest.mark.parametrize("transport", ["http", "openai"])
def test_server_down_is_a_backend_error(transport: str) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    model = OpenAICompatChatModel(
        model="m",
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key="k",
        max_retries=1,
        backoff_s=0.001,
        timeout_s=2.0,
        transport=transport,
    )
    with pytest.raises(BackendError, match=r"^\[m\] unreachable at .* after 2 attempts"):
        model.complete(MESSAGES)


def test_factory_names_the_missing_key_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("W4S_TEST_MISSING_KEY", raising=False)
    cfg = BackendConfig(kind="openai", model="gpt-4o-mini", api_key_env="W4S_TEST_MISSING_KEY")
    with pytest.raises(
        ConfigError,
        match=r"^`executor.api_key_env`: environment variable 'W4S_TEST_MISSING_KEY' is not set",
    ):
        build_chat_model(cfg, role="executor")


def test_factory_builds_a_keyless_local_server_client(server: FakeServer) -> None:
    cfg = BackendConfig(kind="openai", model="m", base_url=server.url, api_key_env=None)
    model = build_chat_model(cfg, role="executor")
    assert model.complete(MESSAGES).text == "reply 0"
    assert server.headers[0]["authorization"] == "Bearer EMPTY"
    assert build_chat_model(cfg) is model


def test_kept_alive_connection_closed_by_the_server_is_reopened() -> None:
    """HTTP/1.1 keep-alive: the server drops the idle connection; the next call reconnects."""
    accepted: list[int] = []

    def serve(listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(1)
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(body) < length:
                    body += conn.recv(65536)
                reply = json.dumps(chat_completion(json.loads(body))).encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(reply), reply))
            # closed without "Connection: close": the client finds out on its next request

    listener = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=serve, args=(listener,), daemon=True).start()
    try:
        model = OpenAICompatChatModel(model="m", base_url=f"http://127.0.0.1:"
                                      f"{listener.getsockname()[1]}/v1", api_key="k",
                                      max_retries=0)
        for _ in range(3):
            out = model.complete(MESSAGES)
            assert out.text == "reply 0" and out.extra["retries"] == 0
        assert len(accepted) == 3
    finally:
        listener.close()


def test_transport_and_base_url_are_checked() -> None:
    with pytest.raises(ConfigError, match="`transport` must be one of"):
        OpenAICompatChatModel(model="m", base_url="http://x/v1", api_key="k", transport="grpc")
    with pytest.raises(ConfigError, match="`base_url` must be an http"):
        OpenAICompatChatModel(model="m", base_url="localhost:8000/v1", api_key="k")


def test_http_proxy_from_the_environment_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY (with credentials) carries the request; the proxy sees the absolute URL."""
    proxy = FakeOpenAIEndpoint(lambda request: (200, chat_completion(request)))
    try:
        monkeypatch.setenv("HTTP_PROXY", f"http://bob:s%3Acret@127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        model = OpenAICompatChatModel(model="m", base_url="http://vllm.internal:8000/v1",
                                      api_key="k", max_retries=0)
        assert model.complete(MESSAGES).text == "reply 0"
        seen = [(p, h.get("proxy-authorization"))
                for p, h in zip(proxy.paths, proxy.headers, strict=True)]
        assert seen == [("http://vllm.internal:8000/v1/chat/completions",
                         "Basic Ym9iOnM6Y3JldA==")]  # bob:s:cret
        local = OpenAICompatChatModel(model="m", base_url="http://127.0.0.1:9/v1", api_key="k",
                                      max_retries=0)
        with pytest.raises(BackendError, match="unreachable"):  # straight to port 9, no proxy
            local.complete(MESSAGES)
        assert len(proxy.requests) == 1
    finally:
        proxy.stop()
