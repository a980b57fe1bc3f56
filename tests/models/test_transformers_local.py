"""TransformersChatModel on a tiny random Llama: sampling, counts, limits and batching."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from w4s.config import BackendConfig
from w4s.errors import BackendError, ConfigError
from w4s.models.factory import build_chat_model
from w4s.models.transformers_local import TransformersChatModel

PROMPTS = [
    "What is 2+3?",
    "Write Python code that prints the value.",
    "the quick brown fox",
    "def solver(question):",
    "You are a helpful assistant.",
    "0123456789",
    "jumps over the lazy dog",
    "The answer is",
]


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


@pytest.fixture()
def tiny(tiny_model_dir: Path) -> TransformersChatModel:
    return TransformersChatModel.from_path(tiny_model_dir, model_id="tiny", max_new_tokens=64)


def test_greedy_is_deterministic_and_counts_tokens(tiny: TransformersChatModel) -> None:
    first = tiny.complete(ask("What is 2+3?"), max_tokens=12)
    second = tiny.complete(ask("What is 2+3?"), max_tokens=12)
    assert first.texts == second.texts and first.text
    prompt = tiny.tokenizer.apply_chat_template(
        ask("What is 2+3?"), add_generation_prompt=True, tokenize=False
    )
    assert first.prompt_tokens == len(tiny.tokenizer(prompt, add_special_tokens=False).input_ids)
    # a random model rarely picks EOS, so greedy runs to the cap
    assert first.completion_tokens == 12
    assert first.model == "tiny"


def test_max_tokens_is_capped_by_max_new_tokens(tiny_model_dir: Path) -> None:
    model = TransformersChatModel.from_path(tiny_model_dir, model_id="tiny", max_new_tokens=5)
    out = model.complete(ask("hello"), max_tokens=50)
    assert out.completion_tokens == 5
    assert len(model.tokenizer(out.text, add_special_tokens=False).input_ids) <= 5


def test_n_samples_come_from_one_generate(tiny: TransformersChatModel) -> None:
    out = tiny.complete(ask("the quick"), n=4, temperature=1.5, max_tokens=8, seed=1)
    assert len(out.texts) == 4
    assert len(set(out.texts)) > 1, "four samples at T=1.5 from a random model all equal"
    assert out.completion_tokens == 4 * 8
    assert tiny.stats.generate_calls == 1 and tiny.stats.rows == 4


def test_seeded_sampling_is_reproducible_and_greedy_n_copies(tiny: TransformersChatModel) -> None:
    a = tiny.complete(ask("fox"), n=3, temperature=1.0, max_tokens=8, seed=7)
    b = tiny.complete(ask("fox"), n=3, temperature=1.0, max_tokens=8, seed=7)
    c = tiny.complete(ask("fox"), n=3, temperature=1.0, max_tokens=8, seed=8)
    assert a.texts == b.texts
    assert a.texts != c.texts
    greedy = tiny.complete(ask("fox"), n=3, max_tokens=8)
    assert len(set(greedy.texts)) == 1 and len(greedy.texts) == 3
    assert greedy.completion_tokens == 3 * 8


def test_stops_at_eos_and_counts_it(tiny: TransformersChatModel) -> None:
    tokens = tiny.tokenizer(
        tiny.complete(ask("dog"), max_tokens=10).text, add_special_tokens=False
    ).input_ids
    stop = tokens[3]  # make an ordinary token the EOS: greedy must stop at its first use
    tiny.model.generation_config.eos_token_id = stop
    stopping = TransformersChatModel(tiny.model, tiny.tokenizer, model_id="tiny")
    out = stopping.complete(ask("dog"), max_tokens=10)
    cut = tokens.index(stop)
    assert out.completion_tokens == cut + 1
    assert out.text == tiny.tokenizer.decode(tokens[:cut], skip_special_tokens=True)


def test_concurrent_calls_are_batched_and_match_sequential(tiny: TransformersChatModel) -> None:
    expected = {p: tiny.complete(ask(p), max_tokens=10) for p in PROMPTS}
    calls_before = tiny.stats.generate_calls
    results: dict[str, object] = {}
    barrier = threading.Barrier(len(PROMPTS))

    def worker(prompt: str) -> None:
        barrier.wait()
        results[prompt] = tiny.complete(ask(prompt), max_tokens=10)

    threads = [threading.Thread(target=worker, args=(p,)) for p in PROMPTS]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    calls = tiny.stats.generate_calls - calls_before
    assert len(results) == len(PROMPTS)
    assert calls < len(PROMPTS), f"{len(PROMPTS)} concurrent requests took {calls} generates"
    assert tiny.stats.largest_batch > 1
    for prompt in PROMPTS:
        got, want = results[prompt], expected[prompt]
        assert got.texts == want.texts, prompt
        assert (got.prompt_tokens, got.completion_tokens) == (
            want.prompt_tokens,
            want.completion_tokens,
        )


def test_mixed_caps_and_temperatures_share_a_batch(tiny: TransformersChatModel) -> None:
    barrier = threading.Barrier(3)
    out: dict[int, object] = {}
    jobs = {
        0: {"max_tokens": 3},
        1: {"max_tokens": 9, "temperature": 1.0, "n": 2, "seed": 3},
        2: {"max_tokens": 6},
    }

    def worker(i: int) -> None:
        barrier.wait()
        out[i] = tiny.complete(ask(PROMPTS[i]), **jobs[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [out[i].completion_tokens for i in range(3)] == [3, 18, 6]
    alone = tiny.complete(ask(PROMPTS[1]), **jobs[1])
    assert alone.texts == out[1].texts, "a seeded sample changed when batched with others"


def test_factory_builds_and_caches_transformers_kind(tiny_model_dir: Path) -> None:
    cfg = BackendConfig(kind="transformers", model=str(tiny_model_dir), max_new_tokens=4)
    model = build_chat_model(cfg, role="executor")
    assert build_chat_model(cfg, role="meta_agent") is model
    assert model.complete(ask("hi")).completion_tokens == 4


def test_factory_names_a_missing_folder(tmp_path: Path) -> None:
    cfg = BackendConfig(kind="transformers", model=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match=r"^`executor.model`: folder .*nope' does not exist$"):
        build_chat_model(cfg, role="executor")


def test_generate_failure_reaches_every_waiting_caller(
    tiny: TransformersChatModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(**kwargs: object) -> None:
        raise RuntimeError("out of memory\nsecond line")

    monkeypatch.setattr(tiny.model, "generate", boom)
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        barrier.wait()
        try:
            tiny.complete(ask("hi"), max_tokens=3)
        except BackendError as e:
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(errors) == 4
    assert all(str(e) == "[tiny] generation failed: out of memory second line" for e in errors)
    assert len({id(e) for e in errors}) == 4
    monkeypatch.undo()
    assert tiny.complete(ask("hi"), max_tokens=3).completion_tokens == 3, "model stuck busy"
