"""Every backend says whose fault a BackendError is: `infrastructure` True when nothing the
caller sent explains it (down, timed out, 5xx, 429 after retries, a malformed reply, the
key/model/URL), False when the request itself was rejected (400, a prompt too long)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from fake_openai import FakeOpenAIEndpoint

from w4s.errors import BackendError, one_line
from w4s.models.openai_compat import OpenAICompatChatModel
from w4s.models.scripted import ScriptedChatModel

ASK = [{"role": "user", "content": "What is 2+3?"}]


class StatusServer(FakeOpenAIEndpoint):
    """Answers every POST with `status` and `body` (sent as it is when a str)."""

    def __init__(self) -> None:
        self.status, self.body = 200, {}
        super().__init__(lambda request: (self.status, self.body))

    def model(self, transport: str, url: str | None = None) -> OpenAICompatChatModel:
        return OpenAICompatChatModel(model="m", base_url=url or self.url, api_key="sk-test",
                                     max_retries=1, timeout_s=5.0, backoff_s=0.001,
                                     max_backoff_s=0.002, transport=transport)


@pytest.fixture(params=["http", "openai"])
def transport(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def server() -> Iterator[StatusServer]:
    s = StatusServer()
    yield s
    s.stop()


@pytest.mark.parametrize(("status", "infra"), [
    (400, False), (413, False), (422, False),  # the request: repeating it fails the same way
    (401, True), (403, True), (404, True),  # the key, the model, the URL: the run's config
    (408, True), (429, True), (500, True), (503, True),  # after the retries
])
def test_openai_compat_status(server, transport, status, infra):
    server.status, server.body = status, {"error": {"message": "nope"}}
    with pytest.raises(BackendError) as info:
        server.model(transport).complete(ASK)
    assert info.value.infrastructure is infra, str(info.value)


def test_openai_compat_unreachable_and_malformed(server, transport):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    with pytest.raises(BackendError, match="unreachable") as info:
        server.model(transport, dead).complete(ASK)
    assert info.value.infrastructure is True
    for body in ("not json", {"choices": []}, {"nothing": 1}):
        server.status, server.body = 200, body
        with pytest.raises(BackendError) as info:
            server.model(transport).complete(ASK)
        assert info.value.infrastructure is True, body


class _Server:
    """Stands in for xllamacpp.Server: returns or raises what the test says."""

    def __init__(self, outcome) -> None:
        self.outcome = outcome

    def handle_chat_completions(self, request):
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


@pytest.mark.parametrize(("outcome", "infra"), [
    ({"error": {"code": 400, "message": "request (631 tokens) exceeds the available context "
                "size (256 tokens)", "type": "exceed_context_size_error"}}, False),
    ({"error": {"code": 500, "message": "slot failed"}}, True),
    ({"error": "something"}, True),
    (ValueError('response_format type must be one of "text" or "json_object"'), False),
    (RuntimeError("decode failed"), True),
])
def test_llamacpp_errors(outcome, infra):
    from w4s.models.llamacpp import LlamaCppChatModel, _SharedOrAlone

    model = LlamaCppChatModel.__new__(LlamaCppChatModel)  # no GGUF needed for the mapping
    model.model_id, model.max_new_tokens, model._server = "llama", 16, _Server(outcome)
    model._kv, model.n_parallel = _SharedOrAlone(), 8
    with pytest.raises(BackendError) as info:
        model.complete(ASK)
    assert info.value.infrastructure is infra
    assert "\n" not in str(info.value)


def test_llamacpp_short_of_choices_is_infrastructure():
    from w4s.models.llamacpp import LlamaCppChatModel, _SharedOrAlone

    one = {"choices": [{"index": 0, "message": {"content": "hi"}, "logprobs": {"content": [{}]}}],
           "usage": {"prompt_tokens": 5, "completion_tokens": 1}}
    model = LlamaCppChatModel.__new__(LlamaCppChatModel)
    model.model_id, model.max_new_tokens, model._server = "llama", 16, _Server(one)
    model._kv, model.n_parallel = _SharedOrAlone(), 8
    assert model.complete(ASK).texts == ("hi",)
    with pytest.raises(BackendError, match=r"returned 1 choice\(s\) for n=2$") as info:
        model.complete(ASK, n=2)
    assert info.value.infrastructure is True


def test_transformers_prompt_too_long_is_the_requests_fault(tiny_model_dir):
    from w4s.models.transformers_local import TransformersChatModel

    model = TransformersChatModel.from_path(tiny_model_dir, max_new_tokens=4)
    with pytest.raises(BackendError, match="fills the") as info:
        model.complete([{"role": "user", "content": "fox " * 600}])
    assert info.value.infrastructure is False


def test_transformers_generation_failure_is_infrastructure(tiny_model_dir, monkeypatch):
    from w4s.models.transformers_local import TransformersChatModel

    model = TransformersChatModel.from_path(tiny_model_dir, max_new_tokens=4)

    def broken(batch):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(model, "_generate", broken)
    with pytest.raises(BackendError, match="generation failed") as info:
        model.complete(ASK)
    assert info.value.infrastructure is True


def test_scripted_exhausted_is_not_the_workflows_fault():
    model = ScriptedChatModel(["one"])
    model.complete(ASK)
    with pytest.raises(BackendError, match="exhausted") as info:
        model.complete(ASK)
    assert info.value.infrastructure is True


def test_one_line_is_shared_by_the_backends():
    from w4s.models import embedded as models_embedded
    from w4s.models import openai_compat as models_openai_compat
    from w4s.models import transformers_local as models_transformers_local

    assert one_line(ValueError("a\n  b\tc")) == "a b c"
    assert one_line("x" * 300) == "x" * 197 + "..." and len(one_line("y" * 50, 10)) == 10
    for module in (models_embedded, models_openai_compat, models_transformers_local):
        assert not hasattr(module, "_one_line"), module.__name__
