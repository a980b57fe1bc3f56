"""ScriptedChatModel: the deterministic double that most rollout tests run through."""

from __future__ import annotations

import threading

import pytest

from w4s.config import BackendConfig
from w4s.errors import BackendError, ConfigError
from w4s.models.factory import build_chat_model
from w4s.models.scripted import ScriptedChatModel
from w4s.protocols import ChatModel

MESSAGES = [{"role": "user", "content": "two words"}]


def test_replies_in_order_then_exhausted() -> None:
    model = ScriptedChatModel(["a b c", "d", "e"])
    assert isinstance(model, ChatModel)
    first = model.complete(MESSAGES, temperature=0.7, max_tokens=9, json_mode=True, seed=3)
    assert first.texts == ("a b c",)
    assert (first.prompt_tokens, first.completion_tokens) == (2, 3)
    assert model.complete(MESSAGES, n=2).texts == ("d", "e")
    assert model.remaining == 0
    with pytest.raises(BackendError, match=r"^\[scripted\] scripted replies exhausted after 3"):
        model.complete(MESSAGES)
    call = model.calls[0]
    assert (call.n, call.temperature, call.max_tokens, call.json_mode, call.seed) == (
        1,
        0.7,
        9,
        True,
        3,
    )
    assert call.messages == tuple(MESSAGES)


def test_cycle_and_callable_scripts() -> None:
    cycling = ScriptedChatModel(["x", "y"], cycle=True)
    assert cycling.complete(MESSAGES, n=5).texts == ("x", "y", "x", "y", "x")
    echo = ScriptedChatModel(lambda msgs: msgs[-1]["content"].upper(), model_id="echo")
    out = echo.complete(MESSAGES, n=2)
    assert out.texts == ("TWO WORDS", "TWO WORDS") and out.model == "echo"


def test_bad_scripts_are_rejected() -> None:
    with pytest.raises(TypeError, match="not a single string"):
        ScriptedChatModel("abc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one reply"):
        ScriptedChatModel([])
    with pytest.raises(ValueError, match="`n` must be at least 1"):
        ScriptedChatModel(["a"]).complete(MESSAGES, n=0)


def test_threads_each_get_a_distinct_reply() -> None:
    replies = [str(i) for i in range(64)]
    model = ScriptedChatModel(replies)
    got: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(8):
            text = model.complete(MESSAGES).text
            with lock:
                got.append(text)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got, key=int) == replies
    assert len(model.calls) == 64


def test_factory_scripted_kind_cycles_and_is_cached() -> None:
    cfg = BackendConfig(kind="scripted", replies=["one", "two"])
    model = build_chat_model(cfg, role="meta_agent")
    assert build_chat_model(cfg) is model
    assert model.complete(MESSAGES, n=3).texts == ("one", "two", "one")
    assert build_chat_model(cfg, cache=False) is not model
    with pytest.raises(ConfigError, match=r"^`meta_agent.replies` must hold at least one reply"):
        build_chat_model(BackendConfig(kind="scripted"), role="meta_agent")
