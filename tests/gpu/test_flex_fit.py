"""On a GPU, the fit's prefix-shared rows under flex attention train exactly as under sdpa's
dense mask and as unshared rows. Skipped without CUDA; on the GPU machine (no pytest there)
run it as a script: `python tests/gpu/test_flex_fit.py`."""

from __future__ import annotations

import importlib
import random
import sys
import tempfile
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _modules():
    """w4s.models.rlao and packing without models/__init__ (its backends need more)."""
    sys.path.insert(0, str(ROOT))
    if "w4s.models" not in sys.modules:
        pkg = types.ModuleType("w4s.models")
        pkg.__path__ = [str(ROOT / "models")]
        sys.modules["w4s.models"] = pkg
    return importlib.import_module("w4s.models.rlao")


def _model(rlao, attn: str, share: bool):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, vocab_size=512,
                      max_position_embeddings=4096)
    model = Qwen2ForCausalLM(cfg).to("cuda", torch.float32)
    config = rlao.TrainerConfig(share_prefix=share, max_steps=3, step_samples=8, lr=1e-3,
                             batch_tokens=4096, row_tokens=4096, max_seq_len=4096,
                             lora_dropout=0.0)
    model.set_attn_implementation("sdpa")
    if attn == "flex":
        assert rlao.use_flex_attention(model, config, "cuda")
    model = rlao.add_lora(model, config)
    rlao.enable_gradient_checkpointing(model)
    return model, config


def _samples(rlao):
    rng = random.Random(0)
    out = []
    for _ in range(2):  # two states of 4 candidates each, a 600-token prompt
        prompt = [rng.randrange(512) for _ in range(600)]
        for _ in range(4):
            completion = [rng.randrange(512) for _ in range(rng.randrange(30, 90))]
            out.append(rlao.Sample(prompt + completion,
                                   [rlao.IGNORE] * len(prompt) + completion,
                                   rng.choice([0.78, 1.0, 3.49, 12.18])))
    return out


def losses(attn: str, share: bool) -> list[float]:
    rlao = _modules()
    model, config = _model(rlao, attn, share)
    with tempfile.TemporaryDirectory() as out:
        state, _ = rlao.train(model, _samples(rlao), config, Path(out))
    return state.losses


def test_flex_shared_rows_train_like_sdpa_and_unshared():
    import pytest

    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("flex attention's backward needs a GPU")
    check()


def check() -> dict[str, list[float]]:
    got = {"unshared": losses("sdpa", False), "shared_sdpa": losses("sdpa", True),
           "shared_flex": losses("flex", True)}
    for name, curve in got.items():
        for a, b in zip(curve, got["unshared"], strict=True):
            assert abs(a - b) <= 1e-3 * max(1.0, abs(b)), (name, curve, got["unshared"])
    return got


if __name__ == "__main__":
    print(check())
    print("ok: flex, sdpa shared and unshared fits agree")
