"""`kind: vllm`: the in-process engine, with a fake `vllm` package at the model boundary
(vLLM needs a GPU): m samples in one SamplingParams(n=m) request, the adapter as a
LoRARequest on every request, and an engine sized for the adapter's rank."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
from adapter_folders import make_adapter_folder

from w4s.config import BackendConfig
from w4s.errors import ConfigError
from w4s.models.factory import build_chat_model

ASK = [{"role": "user", "content": "hi"}]


class _Output:
    def __init__(self, text: str) -> None:
        self.text, self.token_ids, self.finish_reason = text, [1] * len(text.split()), "stop"


class FakeLLM:
    made: list[FakeLLM] = []

    def __init__(self, *, model: str, enable_lora: bool, **engine_args) -> None:
        self.model, self.enable_lora, self.engine_args = model, enable_lora, engine_args
        self.calls: list[tuple] = []
        FakeLLM.made.append(self)

    def chat(self, chat, params, *, lora_request=None, use_tqdm=True):
        self.calls.append((chat, params, lora_request))
        outputs = [_Output(f"reply {k} of {params.n}") for k in range(params.n)]
        return [types.SimpleNamespace(outputs=outputs, prompt_token_ids=[0, 1, 2])]


class FakeSamplingParams:
    def __init__(self, **kw) -> None:
        self.__dict__.update(kw)


class FakeLoRARequest:
    def __init__(self, name: str, int_id: int, path: str) -> None:
        self.name, self.int_id, self.path = name, int_id, path


@pytest.fixture
def fake_vllm(monkeypatch):
    FakeLLM.made.clear()
    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = FakeLLM, FakeSamplingParams
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = FakeLoRARequest
    for name, module in (("vllm", vllm), ("vllm.lora", lora), ("vllm.lora.request", request)):
        monkeypatch.setitem(sys.modules, name, module)


def test_m_samples_come_from_one_request_with_the_adapter(fake_vllm, tmp_path: Path) -> None:
    adapter = make_adapter_folder(tmp_path / "adapter", rank=24)
    model = build_chat_model(BackendConfig(kind="vllm", model="/models/qwen",
                                           adapter=str(adapter), max_new_tokens=100),
                             role="meta_agent")
    done = model.complete(ASK, n=5, temperature=0.7, max_tokens=300)
    (llm,) = FakeLLM.made
    assert llm.enable_lora and llm.engine_args == {"max_lora_rank": 32}  # 24 fits in 32
    ((chat, params, lora),) = llm.calls
    assert params.n == 5 and params.temperature == 0.7 and params.max_tokens == 100
    assert lora.path == str(adapter.resolve()) and lora.int_id >= 1
    assert len(done.texts) == 5 and done.prompt_tokens == 3
    assert done.model != "/models/qwen"  # the adapted model's id: caches key on it


def test_without_an_adapter_no_lora(fake_vllm) -> None:
    model = build_chat_model(BackendConfig(kind="vllm", model="/models/qwen"), role="executor")
    model.complete(ASK, n=2)
    (llm,) = FakeLLM.made
    assert not llm.enable_lora and llm.calls[0][2] is None and model.model_id == "/models/qwen"


def test_vllm_needs_a_model_and_a_missing_adapter_is_one_line(fake_vllm, tmp_path) -> None:
    with pytest.raises(ValueError, match="`model` is required for kind 'vllm'"):
        BackendConfig(kind="vllm")
    with pytest.raises(ConfigError, match=r"^`meta_agent\.adapter`: ") as err:
        build_chat_model(BackendConfig(kind="vllm", model="m", adapter=str(tmp_path / "no")),
                         role="meta_agent")
    assert "\n" not in str(err.value) and FakeLLM.made == []
