"""build_chat_model: one instance per config per process, built once even under a race."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from w4s.config import BackendConfig
from w4s.models import factory
from w4s.models.scripted import ScriptedChatModel


def test_importing_models_loads_nothing_heavy() -> None:
    code = (
        "import sys, w4s.models, w4s.models.factory, w4s.models.transformers_local, "
        "w4s.models.embedded, w4s.models.openai_compat, w4s.models.llamacpp; "
        "print(sorted(m for m in ('torch', 'transformers', 'xllamacpp') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.strip() == "[]"


def test_concurrent_builds_of_one_config_build_once(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[BackendConfig] = []

    def slow_build(cfg: BackendConfig, role: str | None) -> ScriptedChatModel:
        built.append(cfg)
        time.sleep(0.05)
        return ScriptedChatModel(["x"])

    monkeypatch.setattr(factory, "_build", slow_build)
    cfg = BackendConfig(kind="scripted", replies=["x"])
    got: list[object] = []
    threads = [
        threading.Thread(target=lambda: got.append(factory.build_chat_model(cfg))) for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1 and len({id(m) for m in got}) == 1
    other = factory.build_chat_model(BackendConfig(kind="scripted", replies=["y"]))
    assert other is not got[0] and len(built) == 2
    factory.clear_model_cache()
    assert factory.build_chat_model(cfg) is not got[0]
