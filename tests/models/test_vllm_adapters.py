"""A LoRA adapter on `kind: openai` pointed at a vLLM server, against a local fake of vLLM's
`/v1/load_lora_adapter`, and the in-process engine's import guard."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from adapter_folders import make_adapter_folder
from fake_openai import FakeOpenAIEndpoint, chat_completion

from w4s.config import BackendConfig
from w4s.errors import BackendError, ConfigError
from w4s.models.factory import build_chat_model
from w4s.models.lora_gguf import adapter_digest

BASE = "Qwen/Qwen2.5-7B-Instruct"
ASK = [{"role": "user", "content": "hi"}]


class VLLMFake:
    """vLLM's answers: the load endpoint (plain-text success, 400 once a name is loaded) and
    chat completions; `load` replaces the load endpoint's answer."""

    def __init__(self) -> None:
        self.loaded: set[str] = set()
        self.load = None
        self.endpoint = FakeOpenAIEndpoint(self._reply)

    def _reply(self, body: dict):
        if "lora_name" in body:  # the fake's reply sees bodies only; paths are checked after
            if self.load is not None:
                return self.load
            if body["lora_name"] in self.loaded:
                return 400, {"object": "error", "type": "BadRequestError", "code": 400,
                             "message": f"The lora adapter '{body['lora_name']}' has "
                                        "already been loaded."}
            self.loaded.add(body["lora_name"])
            return 200, f"Success: LoRA adapter '{body['lora_name']}' added successfully."
        return 200, chat_completion(body)


@pytest.fixture
def vllm():
    fake = VLLMFake()
    yield fake
    fake.endpoint.stop()


@pytest.fixture
def adapter(tmp_path: Path) -> Path:
    return make_adapter_folder(tmp_path / "adapter")


def _cfg(url: str, adapter: Path | str | None, transport: str = "http") -> BackendConfig:
    return BackendConfig(kind="openai", base_url=url, model=BASE, transport=transport,
                         max_retries=0, adapter=None if adapter is None else str(adapter))


@pytest.mark.parametrize("transport", ["http", "openai"])
def test_adapter_is_loaded_then_selected_by_name(vllm: VLLMFake, adapter: Path,
                                                 transport: str) -> None:
    model = build_chat_model(_cfg(vllm.endpoint.url, adapter, transport), role="meta_agent")
    name = f"w4s-lora-{adapter_digest(adapter)[:10]}"
    assert vllm.endpoint.paths == ["/v1/load_lora_adapter"]
    assert vllm.endpoint.requests == [{"lora_name": name, "lora_path": str(adapter.resolve())}]

    out = model.complete(ASK, n=2)
    assert vllm.endpoint.paths[1:] == ["/v1/chat/completions"]
    assert vllm.endpoint.requests[1]["model"] == name
    assert out.texts == ("reply 0", "reply 1")
    # caches and outcome records key on model_id: it names the adapter, not just the base
    assert model.model_id == f"{BASE}+lora-{adapter_digest(adapter)[:10]}"
    assert model.model_id != BASE and out.model == model.model_id


def test_executor_from_the_same_base_uses_the_base_model(vllm: VLLMFake, adapter: Path) -> None:
    meta = build_chat_model(_cfg(vllm.endpoint.url, adapter), role="meta_agent")
    executor = build_chat_model(_cfg(vllm.endpoint.url, None), role="executor")
    assert executor is not meta and executor.model_id == BASE
    executor.complete(ASK)
    assert vllm.endpoint.requests[-1]["model"] == BASE
    meta.complete(ASK)
    assert vllm.endpoint.requests[-1]["model"].startswith("w4s-lora-")
    assert vllm.endpoint.paths.count("/v1/load_lora_adapter") == 1


def test_an_adapter_already_loaded_is_fine(vllm: VLLMFake, adapter: Path) -> None:
    first = build_chat_model(_cfg(vllm.endpoint.url, adapter), cache=False)
    second = build_chat_model(_cfg(vllm.endpoint.url, adapter), cache=False)  # 400 "already"
    assert vllm.endpoint.paths == ["/v1/load_lora_adapter"] * 2
    assert first.model_id == second.model_id
    second.complete(ASK)
    assert vllm.endpoint.requests[-1]["model"] == vllm.endpoint.requests[0]["lora_name"]


def test_the_name_follows_the_adapters_content(vllm: VLLMFake, tmp_path: Path) -> None:
    a = build_chat_model(_cfg(vllm.endpoint.url, make_adapter_folder(tmp_path / "a")))
    same = build_chat_model(_cfg(vllm.endpoint.url, make_adapter_folder(tmp_path / "b")))
    other = build_chat_model(_cfg(vllm.endpoint.url,
                                  make_adapter_folder(tmp_path / "c", rank=8)))
    assert a.model_id == same.model_id != other.model_id


@pytest.mark.parametrize("answer", [
    (404, {"detail": "Not Found"}),  # no runtime loading: the route does not exist
    (400, {"object": "error", "message": "LoRA is not enabled. Use --enable-lora to enable "
                                         "LoRA.", "type": "BadRequestError", "code": 400}),
])
@pytest.mark.parametrize("transport", ["http", "openai"])
def test_a_server_without_lora_is_one_line(vllm: VLLMFake, adapter: Path, answer,
                                           transport: str) -> None:
    vllm.load = answer
    with pytest.raises(BackendError) as err:
        build_chat_model(_cfg(vllm.endpoint.url, adapter, transport), role="meta_agent")
    assert str(err.value) == (
        f"`meta_agent.adapter`: the server at {vllm.endpoint.url} does not serve LoRA "
        "adapters (start vLLM with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)")
    assert err.value.infrastructure
    assert vllm.endpoint.paths == ["/v1/load_lora_adapter"]  # no chat request was tried


def test_a_path_the_server_cannot_read_says_so(vllm: VLLMFake, adapter: Path) -> None:
    vllm.load = (404, {"object": "error", "type": "NotFoundError", "code": 404,
                       "message": f"No adapter found for {adapter.resolve()}"})
    with pytest.raises(BackendError, match="cannot read the adapter .* readable by the server"
                       ) as err:
        build_chat_model(_cfg(vllm.endpoint.url, adapter), role="meta_agent")
    assert "\n" not in str(err.value)


def test_a_missing_adapter_folder_names_the_field(vllm: VLLMFake, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^`meta_agent\.adapter`: adapter folder .* does not "
                                          r"exist$") as err:
        build_chat_model(_cfg(vllm.endpoint.url, tmp_path / "nope"), role="meta_agent")
    assert "\n" not in str(err.value)
    assert vllm.endpoint.paths == []


def test_an_unreachable_server_is_the_usual_error(vllm: VLLMFake, adapter: Path) -> None:
    vllm.endpoint.stop()
    with pytest.raises(BackendError, match="unreachable at .* after 1 attempts") as err:
        build_chat_model(_cfg(vllm.endpoint.url, adapter), role="meta_agent")
    assert err.value.infrastructure and "\n" not in str(err.value)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_the_in_process_engine_without_vllm_is_one_line(adapter: Path) -> None:
    from w4s.models.vllm_engine import VLLMChatModel

    with pytest.raises(ConfigError) as err:
        VLLMChatModel(model=BASE, adapter=str(adapter))
    assert str(err.value) == "`kind: vllm` needs `pip install 'w4s[vllm]'` (a GPU machine)"
